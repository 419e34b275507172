# Membership and ownership: who may join, whose names and records are
# whose, who may replace a node's key, who may open the server's socket.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use File::Temp qw(tempdir);
use Test::More;

my $SRV = '5e7e000000000000000000000000000000000001';
my $A = 'aaaa000000000000000000000000000000000001';
my $B = 'bbbb000000000000000000000000000000000002';

# register without a name, join with one: the join's own check
sub join_as {
    my ($srv, $app, $instance, $name) = @_;
    my $key = register($srv, $app, $instance);
    return req($srv, 'POST', '/api/v1/join', app => $app,
               body => { pre_auth_key => $key, public_key => wg_key(), name => $name });
}

sub error_is {
    my ($res, $status, $error, $name) = @_;
    is($res->{status}, $status, "$name: $status");
    is($res->{json}{error}, $error, "$name: the reason") if defined $error;
}

# --- closed by default -------------------------------------------------

my ($rc, $out) = server_refused();
is($rc, 2, 'no --allowed-apps and no --server-app-id: the server does not start');
like($out, qr/allowed-apps: neither --allowed-apps nor --server-app-id/,
     '  and says which settings are missing');

my $own = start_server(args => ['--server-app-id', uc $SRV]);
is(req($own, 'GET', '/api/register?instance_id=s1', app => $SRV)->{status}, 200,
   'default: the server\'s own app may register');
error_is(req($own, 'GET', '/api/register?instance_id=x1', app => $A), 403, 'Forbidden',
         'default: another app may not');
error_is(req($own, 'GET', '/api/discover/db', app => $A), 403, 'Forbidden',
         'default: nor read discovery');
like($own->log_text, qr/only the server's own app $SRV may join/, '  the log says so');

my $any = start_server(args => ['--allowed-apps', 'any']);
is(req($any, 'GET', '/api/register?instance_id=x1', app => $A)->{status}, 200,
   'allowed-apps any: every app');
$any->restart;
my @warnings = $any->log_text =~ /warn.*allowed-apps is "any"/g;
is(scalar @warnings, 2, 'allowed-apps any: a warning at every start');

($rc, $out) = server_refused('--server-app-id', 'xyz');
is($rc, 2, 'a server-app-id that is no app id is refused');

# --- names and records belong to their app -----------------------------

my $dir = tempdir('ctld-own-XXXXXX', TMPDIR => 1, CLEANUP => 1);
open my $fh, '>', "$dir/ctld.conf" or die;
print $fh "[server]\nreserve-name = cache-1=$A\nreserve-name = queue-1=$A\n";
close $fh;
my $srv = start_server(args => ['--config', "$dir/ctld.conf", '--server-app-id', $SRV,
                                '--allowed-apps', "$A,$B", '--reserve-name', "db-1=$A"]);

# a name the operator reserved for A
error_is(join_as($srv, $B, 'b-1', 'db-1'), 409, 'name is reserved for another app',
         'B joins as db-1, reserved for A');
error_is(req($srv, 'GET', '/api/register?instance_id=b-1&node_name=db-1', app => $B),
         409, 'name is reserved for another app', 'B registers the name db-1');
error_is(join_as($srv, $B, 'b-1', 'cache-1'), 409, 'name is reserved for another app',
         'B joins as cache-1, reserved in the config file');
error_is(join_as($srv, $B, 'b-1', 'queue-1'), 409, 'name is reserved for another app',
         '  (every reserve-name line counts)');
my $db1 = join_node($srv, $A, 'a-1', 'db-1');
is($db1->{status}, 200, 'A joins as db-1');

# a name a node of A holds
is(join_node($srv, $A, 'a-2', 'web-a')->{status}, 200, 'A joins as web-a');
error_is(join_as($srv, $B, 'b-2', 'web-a'), 409, 'name is held by a node of another app',
         'B joins as web-a');
error_is(req($srv, 'GET', '/api/register?instance_id=b-2&node_name=web-a', app => $B),
         409, 'name is held by a node of another app', 'B registers the name web-a');
error_is(join_as($srv, $A, 'a-3', 'web-a'), 409, 'name is taken by another node',
         'another node of A joins as web-a');

# discovery stays readable across apps
is(req($srv, 'POST', "/api/nodes/update?uuid=a-1&node_type=db&hostname=db-1.dstack.internal",
       app => $A)->{status}, 200, 'A reports its node a-1');
my $disc = req($srv, 'GET', '/api/discover/db', app => $B);
is($disc->{status}, 200, 'B discovers A\'s db nodes');
is($disc->{json}{nodes}[0]{hostname}, 'db-1.dstack.internal', '  and sees db-1');

# a legacy record of another app
req($srv, 'POST', '/api/nodes/update?uuid=u-a&node_type=app&hostname=a-host', app => $A);
error_is(req($srv, 'POST', '/api/nodes/update?uuid=u-a&hostname=b-host', app => $B),
         403, 'uuid belongs to another app', 'B updates A\'s record');

# the instance id of A's node is A's uuid, even before A reports it
error_is(req($srv, 'POST', '/api/nodes/update?uuid=a-2&node_type=web&hostname=evil', app => $B),
         403, 'uuid is the instance id of a node of another app',
         'B writes the uuid of A\'s node a-2 first');
# a record B wrote before A's node joined does not keep A out
is(req($srv, 'POST', '/api/nodes/update?uuid=a-4&node_type=web&hostname=evil', app => $B)->{status},
   200, 'B writes uuid a-4 before any node has it');
is(join_node($srv, $A, 'a-4', 'web-a4')->{status}, 200, 'then A\'s node a-4 joins');
my $upd = req($srv, 'POST', '/api/nodes/update?uuid=a-4&node_type=web&hostname=web-a4',
              app => $A);
is($upd->{status}, 200, 'A\'s node reports itself under its instance id');
is($upd->{json}{node}{actual_hostname}, 'web-a4', '  with its own hostname');
error_is(req($srv, 'POST', '/api/nodes/update?uuid=a-4&hostname=evil', app => $B),
         403, 'uuid belongs to another app', 'B cannot take it back');

# etcd: an app's etcd update replaces only that app's etcd records
req($srv, 'POST', '/api/nodes/update?uuid=ea&node_type=etcd&hostname=etcd-a', app => $A);
req($srv, 'POST', '/api/nodes/update?uuid=eb&node_type=etcd&hostname=etcd-b', app => $B);
my $etcd = req($srv, 'GET', '/api/discover/etcd', app => $A)->{json};
is_deeply([sort map { $_->{hostname} } @{ $etcd->{nodes} }], ['etcd-a', 'etcd-b'],
          'B\'s etcd record leaves A\'s in place');
req($srv, 'POST', '/api/nodes/update?uuid=ea2&node_type=etcd&hostname=etcd-a2', app => $A);
$etcd = req($srv, 'GET', '/api/discover/etcd', app => $A)->{json};
is_deeply([sort map { $_->{hostname} } @{ $etcd->{nodes} }], ['etcd-a2', 'etcd-b'],
          'A\'s newer etcd record replaces A\'s older one only');

($rc, $out) = server_refused('--server-app-id', $SRV, '--reserve-name', 'db-1');
is($rc, 2, 'a reserve-name without an app is refused');
like($out, qr/reserve-name: "db-1" is not NAME=APP_ID/, '  naming it');
($rc, $out) = server_refused('--server-app-id', $SRV, '--reserve-name', "db-1=$A",
                             '--reserve-name', "DB-1=$B");
is($rc, 2, 'one name reserved for two apps is refused');

# --- no takeover of an instance ----------------------------------------

my $key1 = wg_key();
my $k = register($srv, $A, 'victim', 'victim');
my $victim = req($srv, 'POST', '/api/v1/join', app => $A,
                 body => { pre_auth_key => $k, public_key => $key1 })->{json};
ok($victim->{node_token}, 'the victim joins');

$k = register($srv, $A, 'victim', 'thief');
my $thief = req($srv, 'POST', '/api/v1/join', app => $A,
                body => { pre_auth_key => $k, public_key => wg_key() });
error_is($thief, 409, 'instance is joined with another public key: a new key needs'
         . ' the node\'s node_token', 'another CVM of the app joins as the victim\'s instance');
is(req($srv, 'GET', '/api/v1/peers?since=0', token => $victim->{node_token})->{status}, 200,
   '  the victim\'s token still works');
my ($row) = sqlite_rows($srv->db, "SELECT name || ' ' || public_key FROM nodes"
                                  . " WHERE instance_id = 'victim'");
is($row, "victim $key1", '  and its name and key are unchanged');

$thief = req($srv, 'POST', '/api/v1/join', app => $A,
             body => { pre_auth_key => $k, public_key => wg_key(),
                       node_token => $db1->{json}{node_token} });
is($thief->{status}, 409, 'another node\'s token does not do');
$thief = req($srv, 'POST', '/api/v1/join', app => $A,
             body => { pre_auth_key => $k, public_key => wg_key(), node_token => 'x' });
error_is($thief, 400, 'node_token must be a node token', 'a malformed node_token');

# the node itself, with its token
my $key2 = wg_key();
my $moved = req($srv, 'POST', '/api/v1/join', app => $A,
                body => { pre_auth_key => $k, public_key => $key2,
                          node_token => $victim->{node_token} });
is($moved->{status}, 200, 'the node changes its key with its token');
is($moved->{json}{node_id}, $victim->{node_id}, '  and stays the same node');

# the same key without a token: a node that lost its state
$k = register($srv, $A, 'victim', 'victim');
is(req($srv, 'POST', '/api/v1/join', app => $A,
       body => { pre_auth_key => $k, public_key => $key2 })->{status}, 200,
   'a re-join with the same key needs no token');

# the admin: removes the node, then any key may join for the instance
($rc, $out) = $srv->cli('nodes', 'remove', 'victim');
is($rc, 0, 'the admin removes the node');
is(join_node($srv, $A, 'victim', 'victim')->{status}, 200, 'then a new key joins');

# --- the socket --------------------------------------------------------

for my $mode (qw(0666 0662 0604 0777)) {
    ($rc, $out) = server_refused('--server-app-id', $SRV, '--socket-mode', $mode);
    is($rc, 2, "socket-mode $mode is refused");
    like($out, qr/socket-mode: $mode lets every local user claim any app id/,
         '  with the reason');
}
my $sock = "$dir/ctld.sock";
my $u = start_server(unix => $sock, args => ['--server-app-id', $SRV, '--socket-mode', '0600']);
is((stat $sock)[2] & 0777, 0600, 'socket-mode 0600 is taken');

done_testing;
