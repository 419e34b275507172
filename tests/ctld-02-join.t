# Joining with one-time keys, re-joining, removal (API and CLI), listing,
# the hub identity, listen address rules.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use Test::More;
use Time::HiRes qw(sleep);

my $APP = 'aa11';
my $srv = start_server(args => ['--wg-endpoint', 'vpc.example:51820',
                                '--allowed-apps', 'aa11,bb22,cc33']);

sub state_counts {
    my ($db) = @_;
    my ($nodes) = sqlite_rows($db, 'SELECT count(*) FROM nodes');
    my ($used) = sqlite_rows($db, 'SELECT count(*) FROM preauth_keys WHERE used_at IS NOT NULL');
    my ($version) = sqlite_rows($db, "SELECT value FROM meta WHERE key = 'version'");
    return "$nodes/$used/$version";
}

# --- the join flow ---
my $key = register($srv, $APP, 'inst-1', 'web-1');
my $pub = wg_key();
my $j = req($srv, 'POST', '/api/v1/join', app => $APP,
            body => { pre_auth_key => $key, public_key => $pub, endpoint => '192.0.2.10:51820' });
is($j->{status}, 200, 'join answers 200') or diag $j->{content};
my $n = $j->{json};
is($n->{name}, 'web-1', 'name from register');
is($n->{dns_name}, 'web-1.dstack.internal', 'DNS name');
is($n->{address}, '100.128.0.2', 'first node address (hub has .1)');
is($n->{prefix}, '100.128.0.0/10', 'prefix');
like($n->{node_token}, qr/^[0-9a-f]{64}$/, 'node token');
like($n->{epoch}, qr/^[0-9a-f]{16}$/, 'epoch');
ok($n->{version} >= 2, 'version');
is($n->{snapshot}, JSON::PP::true, 'peer set is a snapshot');
is(scalar @{ $n->{peers} }, 1, 'alone with the hub');
my $hub = $n->{peers}[0];
is($hub->{hub}, JSON::PP::true, 'hub flagged');
is($hub->{address}, '100.128.0.1', 'hub address');
is_deeply($hub->{allowed_ips}, ['100.128.0.0/10'], 'hub routes the whole pool');
is($hub->{endpoint}, 'vpc.example:51820', 'hub endpoint');
is($hub->{dns_name}, 'vpc-server.dstack.internal', 'hub DNS name');
like($hub->{public_key}, qr{^[A-Za-z0-9+/]{43}=$}, 'hub public key');
is((stat "$srv->{data}/wg.key")[2] & 0777, 0600, 'hub key file 0600');
chomp(my $derived = `wg pubkey < $srv->{data}/wg.key`);
is($derived, $hub->{public_key}, 'hub key readable by wg(8), public key matches');
is((stat "$srv->{data}/ctld.db")[2] & 0777, 0600, 'database 0600');

# a second node sees the first one
my $j2 = join_node($srv, $APP, 'inst-2', 'web-2');
is($j2->{status}, 200, 'second join');
my ($peer1) = grep { $_->{id} == $n->{node_id} } @{ $j2->{json}{peers} };
ok($peer1, 'second node gets the first as a peer');
is_deeply($peer1->{allowed_ips}, ['100.128.0.2/32'], 'node peer allowed IPs /32');
is($peer1->{public_key}, $pub, 'node peer public key');
is($peer1->{endpoint}, '192.0.2.10:51820', 'node peer endpoint');
ok(!(grep { $_->{id} == $j2->{json}{node_id} } @{ $j2->{json}{peers} }), 'a node is not its own peer');
is((grep { !$_->{hub} } @{ $j2->{json}{peers} })[0]{hub}, JSON::PP::false, 'nodes flagged hub=false');

# --- refused keys write nothing ---
my $before = state_counts($srv->db);
my $r = req($srv, 'POST', '/api/v1/join', app => $APP,
            body => { pre_auth_key => $key, public_key => wg_key() });
is($r->{status}, 401, 'reused key: 401');
is($r->{json}{error}, 'invalid pre-auth key', 'reused key: error');

my $other = register($srv, 'bb22', 'inst-x', 'x-1');
$r = req($srv, 'POST', '/api/v1/join', app => $APP,
         body => { pre_auth_key => $other, public_key => wg_key() });
is($r->{status}, 403, 'key of another app: 403');
$r = req($srv, 'POST', '/api/v1/join', app => $APP,
         body => { pre_auth_key => 'f' x 64, public_key => wg_key() });
is($r->{status}, 401, 'unknown key: 401');
$r = req($srv, 'POST', '/api/v1/join', app => $APP,
         body => { pre_auth_key => 'short', public_key => wg_key() });
is($r->{status}, 401, 'malformed key: 401');
$r = req($srv, 'POST', '/api/v1/join',
         body => { pre_auth_key => $other, public_key => wg_key() });
is($r->{status}, 401, 'join without identity: 401');
is(state_counts($srv->db), $before, 'refused joins wrote nothing');
unlike($srv->log_text, qr/$key|$other/, 'keys never logged');
like($srv->log_text, qr/invalid pre-auth key \(key already used\)/, 'reason logged');

# the other app's key still works for its owner: a refusal did not spend it
$r = req($srv, 'POST', '/api/v1/join', app => 'bb22',
         body => { pre_auth_key => $other, public_key => wg_key() });
is($r->{status}, 200, 'owner can still use its key');

# expired keys, with a short lifetime
my $short = start_server(args => ['--key-lifetime', '1s', '--server-app-id', $APP]);
my $k = register($short, $APP, 'inst-e', 'e-1');
sleep 2.1;
$before = state_counts($short->db);
$r = req($short, 'POST', '/api/v1/join', app => $APP,
         body => { pre_auth_key => $k, public_key => wg_key() });
is($r->{status}, 401, 'expired key: 401');
is(state_counts($short->db), $before, 'expired key wrote nothing');
like($short->log_text, qr/key expired/, 'expiry logged');

# --- re-join keeps the address, takes the new key and token ---
my $k3 = register($srv, $APP, 'inst-1', 'web-1');
my $newpub = wg_key();
$r = req($srv, 'POST', '/api/v1/join', app => $APP,
         body => { pre_auth_key => $k3, public_key => $newpub, name => 'web-1b',
                   node_token => $n->{node_token} });
is($r->{status}, 200, 're-join');
is($r->{json}{address}, $n->{address}, 're-join keeps the address');
is($r->{json}{node_id}, $n->{node_id}, 're-join keeps the node id');
is($r->{json}{name}, 'web-1b', 're-join may rename');
isnt($r->{json}{node_token}, $n->{node_token}, 'new token');
is(req($srv, 'GET', '/api/v1/peers?since=0', token => $n->{node_token})->{status}, 401,
   'old token is void');
my $tok1 = $r->{json}{node_token};
is(req($srv, 'GET', '/api/v1/peers?since=0', token => $tok1)->{status}, 200, 'new token works');

# the same token through nginx for another app is refused
is(req($srv, 'GET', '/api/v1/peers?since=0', token => $tok1, app => 'cc33')->{status}, 403,
   'token bound to its app');

# --- conflicts ---
$r = join_node($srv, $APP, 'inst-3', 'web-2');
is($r->{status}, 409, 'name taken: 409');
$r = join_node($srv, $APP, 'inst-3', 'vpc-server');
is($r->{status}, 409, 'hub name taken: 409');
my $k4 = register($srv, $APP, 'inst-4', 'web-4');
$r = req($srv, 'POST', '/api/v1/join', app => $APP,
         body => { pre_auth_key => $k4, public_key => $newpub });
is($r->{status}, 409, 'public key taken: 409');
$r = req($srv, 'POST', '/api/v1/join', app => $APP,
         body => { pre_auth_key => $k4, public_key => wg_key(), name => 'Web-4' });
is($r->{status}, 200, 'key still good after the conflict');
is($r->{json}{name}, 'web-4', 'names are lowercased');

# register without node_name: the original's default node-<instance_id>
$r = join_node($srv, $APP, 'abc123', undef);
is($r->{json}{name}, 'node-abc123', 'default name');

# --- listing and removal ---
my ($rc, $out) = $srv->cli('nodes', 'list');
is($rc, 0, 'nodes list');
like($out, qr/web-1b\s+100\.128\.0\.2\s/, 'list shows a node');
like($out, qr/(\d+) nodes, peer version/, 'list summary');
($rc, $out) = $srv->cli('nodes', 'list', '--json');
my $list = CtldTest::json_of($out);
is($list->{count}, 5, 'list --json count');
my %by_name = map { $_->{name} => $_ } @{ $list->{nodes} };
is($by_name{'web-1b'}{app_id}, $APP, 'list has app_id');
is($by_name{'web-1b'}{instance_id}, 'inst-1', 'list has instance_id');

is(req($srv, 'GET', '/api/v1/nodes')->{status}, 401, 'listing needs the admin token');
is(req($srv, 'GET', '/api/v1/nodes', token => $tok1)->{status}, 401, 'a node token is not admin');

# removal: by a node for itself only
my $id2 = $j2->{json}{node_id};
$r = req($srv, 'DELETE', "/api/v1/nodes/$id2", token => $tok1);
is($r->{status}, 403, 'a node cannot remove another');
$r = req($srv, 'DELETE', "/api/v1/nodes/$id2", token => $j2->{json}{node_token});
is($r->{status}, 200, 'a node can remove itself');
is($r->{json}{removed}{name}, 'web-2', 'removed answer');
ok($r->{json}{version} > 0, 'removal version');

($rc, $out) = $srv->cli('nodes', 'remove', 'web-4');
is($rc, 0, 'CLI removes by name') or diag $out;
like($out, qr/removed node \d+ \(web-4, 100\.128\.0\.\d+\)/, 'CLI says what it removed');
($rc, $out) = $srv->cli('nodes', 'remove', 'web-4');
is($rc, 1, 'removing it again fails');
like($out, qr/404: no such node/, 'with a clear message');
($rc, $out) = $srv->cli('nodes', 'remove', 'bad name!');
is($rc, 2, 'bad selector refused locally');
$r = req($srv, 'DELETE', '/api/v1/nodes/99999', token => 'a' x 64);
is($r->{status}, 401, 'removal without a valid token');

my $admin = do { local (@ARGV, $/) = "$srv->{data}/admin.token"; <> };
chomp $admin;
is((stat "$srv->{data}/admin.token")[2] & 0777, 0600, 'admin token 0600');
$r = req($srv, 'DELETE', '/api/v1/nodes/99999', token => $admin);
is($r->{status}, 404, 'unknown node: 404');
is($r->{json}{error}, 'no such node', 'with a JSON error');

# removal frees the name; re-join after removal gets a fresh id
$r = join_node($srv, $APP, 'inst-2', 'web-2');
is($r->{status}, 200, 'join after removal');
isnt($r->{json}{node_id}, $id2, 'ids are never reused');

# the discovery record of a removed node goes with it
req($srv, 'POST', '/api/nodes/update?uuid=inst-9&node_type=app&hostname=h9', app => $APP);
$r = join_node($srv, $APP, 'inst-9', 'web-9');
($rc, $out) = $srv->cli('nodes', 'remove', 'web-9');
is(req($srv, 'GET', '/api/discover/app', app => $APP)->{status}, 404,
   'removal drops the node\'s discovery record');

# --- listen rules ---
my $dir = File::Temp::tempdir(CLEANUP => 1);
my $sock = "$dir/ctld.sock";
my $u = start_server(unix => $sock, args => ['--server-app-id', $APP]);
ok(-S $sock, 'unix socket created');
is((stat $sock)[2] & 0777, 0660, 'socket mode 0660');
my $health = `curl -s --unix-socket $sock http://localhost/health`;
is($health, 'OK', 'health over the unix socket');
my $reg = `curl -s --unix-socket $sock -H 'x-dstack-app-id: $APP' 'http://localhost/api/register?instance_id=u1&node_name=u1'`;
like($reg, qr/"pre_auth_key":"[0-9a-f]{64}"/, 'register over the unix socket');
($rc, $out) = $u->cli('nodes', 'list');
is($rc, 0, 'CLI over the unix socket');
$u->stop;
ok(!-e $sock, 'socket removed at exit');

my $log = "$dir/remote.log";
my $status = system(ctld_bin() . " server --listen 0.0.0.0:" . free_port()
                    . " --data-dir $dir/remote --server-app-id $APP >$log 2>&1");
isnt($status, 0, 'non-loopback listen refused');
like(do { local (@ARGV, $/) = $log; <> }, qr/--allow-remote/, 'naming --allow-remote');
{
    my $p = free_port();
    my $pid = fork;
    if ($pid == 0) {
        open STDERR, '>', "$dir/allow.log";
        exec ctld_bin(), 'server', '--listen', "0.0.0.0:$p", '--data-dir', "$dir/allow",
             '--allow-remote', '--server-app-id', $APP;
    }
    my $ok = 0;
    for (1 .. 100) {
        my $res = HTTP::Tiny->new(timeout => 1)->get("http://127.0.0.1:$p/health");
        if ($res->{status} == 200) { $ok = 1; last }
        sleep 0.05;
    }
    ok($ok, '--allow-remote binds 0.0.0.0');
    kill 'TERM', $pid;
    waitpid $pid, 0;
    like(do { local (@ARGV, $/) = "$dir/allow.log"; <> }, qr/warn .*non-loopback/, 'with a warning');
}

# a second server on the same data directory is refused
my $status2 = system(ctld_bin() . " server --listen 127.0.0.1:" . free_port()
                     . " --data-dir $srv->{data} --allowed-apps $APP >/dev/null 2>&1");
isnt($status2, 0, 'one server per data directory');

done_testing;
