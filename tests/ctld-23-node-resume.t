# A node resumes, it does not restart: after a restart it puts its saved
# peer set (node.peers) in place and polls from its version, so what
# changed while it was down comes as a delta, not a snapshot; a corrupted
# or truncated node.peers is refused in one line and the node polls from 0;
# a restored backup (a new epoch) makes it take a snapshot and converge;
# a node removed by the admin while it was stopped joins afresh when it
# starts again (its saved token answers 410) instead of exiting.
#
# The real server behind a real nginx whose access log shows each poll's
# since=; the node in a network namespace with wireguard-go (uapi).
#
# Run as root from the repository root: prove tests/ctld-23-node-resume.t

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use NodeTest;
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;
use Time::HiRes qw(sleep time);

my $why = node_world();
plan skip_all => $why if $why;
for my $bin (ctld_bin(), agent_bin()) {
    BAIL_OUT("$bin is missing: run make first") unless -x $bin;
}
my $NGINX = $ENV{TEST_NGINX_BINARY} // '/usr/sbin/nginx';
plan skip_all => "$NGINX is missing" unless -x $NGINX;
$SIG{INT} = $SIG{TERM} = sub { exit 1 };

my $DIR = tempdir('ctld-resume-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{KEEP});
my $APP = 'd0d0000000000000000000000000000000000023';
my $srv = start_server(dir => $DIR, args => ['--wg-endpoint', '10.99.0.1:51820',
                                             '--server-app-id', $APP]);

# nginx in front of the server: the node's calls, one access-log line each
my $front = "$DIR/front.sock";
my $access = "$DIR/access.log";
write_text("$DIR/nginx.conf", <<"CONF");
daemon off;
master_process off;
pid $DIR/nginx.pid;
error_log $DIR/nginx-error.log;
events { worker_connections 64; }
http {
    log_format polls '\$request_uri';
    access_log $access polls;
    client_body_temp_path $DIR/nginx-body;
    proxy_temp_path $DIR/nginx-proxy;
    server {
        listen unix:$front;
        location / {
            proxy_pass http://127.0.0.1:$srv->{port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 120s;
        }
    }
}
CONF
my $nginx = fork // die "fork: $!";
if ($nginx == 0) {
    open STDOUT, '>>', "$DIR/nginx-error.log";
    open STDERR, '>&', \*STDOUT;
    exec $NGINX, '-p', $DIR, '-c', "$DIR/nginx.conf" or POSIX::_exit(127);
}
END { kill 'TERM', $nginx if $nginx; waitpid $nginx, 0 if $nginx; }
ok(wait_until(10, sub { -S $front }), 'nginx in front of the server');

my $w = ns_add('rs', 21);
my $agent = start_agent($DIR, 'rs', $APP);
my $state = "$DIR/state";
my $node;

sub start {
    $node = start_node($DIR, $w, '--server-url', "unix:$front", '--server-app-id', 'none',
        '--agent-socket', $agent, '--state-dir', $state, '--hosts-file', 'none',
        '--name', 'alpha', '--endpoint', "$w->{ip}:51820", '--poll-wait', '20s',
        '--retry-max', '2s', '--log-level', 'debug');
}

# the polls' since= (and epoch=) from line $from of the access log on
sub polls {
    my ($from) = @_;
    my @lines = split /\n/, read_text($access) // '';
    return grep { defined } map { m{^/api/v1/peers\?since=(\d+)} ? $1 : undef }
        @lines[$from .. $#lines];
}
sub access_lines { scalar(() = (read_text($access) // '') =~ /\n/g) }
sub joins_since { my ($from) = @_; my @l = split /\n/, read_text($access) // '';
                  scalar grep { m{^/api/v1/join} } @l[$from .. $#l] }

sub saved {
    my $t = read_text("$state/node.peers") // return undef;
    my $doc = eval { decode_json($t) } or return undef;
    return $doc->{answer};
}

sub peer_keys {
    my $d = wg_dump($w->{ns}, $w->{ifname}) or return {};
    return $d->{peers};
}

my @others;
sub another {
    my ($name) = @_;
    my $key = wg_key();
    my $r = req($srv, 'POST', '/api/v1/join', app => $APP,
                body => { pre_auth_key => register($srv, $APP, "inst-$name", $name),
                          public_key => $key,
                          endpoint => '10.99.0.' . (30 + @others) . ':51820' });
    die "join $name: $r->{status} $r->{content}" unless $r->{status} == 200;
    push @others, $r->{json};
    return { %{ $r->{json} }, public_key => $key };
}

# --- first start: a snapshot, then deltas; saved on stop ---------------------

my $beta = another('beta');
start();
ok(wait_until(20, sub { peer_keys()->{ $beta->{public_key} // '' } }),
   'alpha joined and has beta as a direct peer') or diag($node->log_text);
my $gamma = another('gamma');
ok(wait_until(20, sub { peer_keys()->{ $gamma->{public_key} // '' } }),
   'gamma joins: alpha has it (a delta)');
like($node->log_text, qr/1 WireGuard peers set, 0 removed/, '  one WireGuard peer set');
is($node->stop, 0, 'alpha stops');
my $s = saved();
ok($s && $s->{version} > 0, "node.peers holds version $s->{version}");
is((stat "$state/node.peers")[2] & 0777, 0600, 'node.peers is 0600');
ok((grep { $_->{public_key} eq $gamma->{public_key} } @{ $s->{peers} }),
   '  with the last change in it (saved when stopping)');

# --- a restart: resumed from the saved version, what changed comes as a delta -

my $delta = another('delta');
my $mark = access_lines();
start();
ok(wait_until(20, sub { peer_keys()->{ $delta->{public_key} // '' } }),
   'restarted: delta, which joined while alpha was down, is there')
    or diag($node->log_text);
my @since = polls($mark);
is($since[0], $s->{version}, "the first poll is since=$s->{version}, the saved version")
    or diag(explain(\@since));
ok(!grep({ $_ == 0 } @since), '  and no poll is since=0');
is(joins_since($mark), 0, '  no join either');
like($node->log_text, qr/saved peer set \(version $s->{version}, \d+ members\) in place/,
     '  the saved set in place');
like($node->log_text, qr/peer set version \d+ \(delta\)/, '  the change as a delta');
my $after = substr($node->log_text, index($node->log_text, 'saved peer set'));
unlike($after, qr/peer set version \d+ \(snapshot\)/, '  no snapshot from the server');
is($node->stop, 0, 'alpha stops');

# --- a corrupted node.peers: refused in one line, a snapshot instead ----------

for my $case (['truncated', sub { substr($_[0], 0, length($_[0]) / 2) }],
              ['corrupted', sub { my $t = $_[0]; $t =~ s/"public_key":"[^"]+"/"public_key":"!!"/; $t }])
{
    my ($what, $mangle) = @$case;
    my $text = read_text("$state/node.peers");
    write_text("$state/node.peers", $mangle->($text));
    chmod 0600, "$state/node.peers";
    $mark = access_lines();
    my $logmark = length($node->log_text);
    start();
    ok(wait_until(20, sub { my @p = polls($mark); @p && $p[0] == 0 }),
       "$what node.peers: the node polls from 0") or diag($node->log_text);
    ok(wait_until(20, sub { keys %{ peer_keys() } == 4 }), '  and converges (hub, beta, gamma, delta)');
    my $log = substr($node->log_text, $logmark);
    my @refusals = $log =~ /^.*(?:node\.peers is malformed|refused the saved).*$/mg;
    is(scalar @refusals, 1, '  one log line says why') or diag(explain(\@refusals));
    is(joins_since($mark), 0, '  no join');
    is($node->stop, 0, '  alpha stops');
}

# --- a restored backup: a new epoch, a snapshot, convergence -----------------

my $backup = "$DIR/backup.db";
my ($rc, $out) = $srv->cli('backup', $backup);
is($rc, 0, 'a backup of the server') or diag($out);
start();
ok(wait_until(20, sub { keys %{ peer_keys() } == 4 }), 'alpha runs');
my $eps = another('epsilon');
ok(wait_until(20, sub { peer_keys()->{ $eps->{public_key} } }), 'epsilon joins after the backup');
my $old = saved();
$srv->stop;
($rc, $out) = $srv->cli('restore', $backup);
is($rc, 0, 'the backup restored (a new epoch)') or diag($out);
$mark = access_lines();
$srv->start;
ok(wait_until(40, sub { !peer_keys()->{ $eps->{public_key} } && keys %{ peer_keys() } == 4 }),
   'alpha converges to the restored set: epsilon gone') or diag($node->log_text);
ok(wait_until(10, sub { my $n = saved(); $n && $n->{epoch} ne $old->{epoch} }),
   'its saved set is of the new epoch');
my @p = polls($mark);
is($p[0], $old->{version}, "the first poll after the restore is from the saved version"
   . " $old->{version} of the old epoch") or diag(explain(\@p));
my $new = saved()->{epoch};
like($node->log_text, qr/peer set version \d+ \(snapshot\)[^\n]*\n(?:.*\n)*?.*polling from version \d+ of epoch $new/,
     '  answered with a snapshot; the polls after it are of the new epoch');
is($node->stop, 0, 'alpha stops');

# --- removed while stopped: starting again joins afresh ----------------------

my $old_id = saved_state()->{node_id};
($rc, $out) = $srv->cli('nodes', 'remove', 'alpha');
is($rc, 0, 'the admin removes alpha while it is stopped') or diag($out);
$mark = access_lines();
my $logmark = length($node->log_text);
start();
ok(wait_until(20, sub { my $st = saved_state(); $st && $st->{node_id} != $old_id }),
   'alpha starts and joins again, as a new node') or diag(substr($node->log_text, $logmark));
is(joins_since($mark), 1, '  with one join');
ok(wait_until(20, sub { keys %{ peer_keys() } == 4 }), '  and converges (hub, beta, gamma, delta)');
ok($node->running, '  the daemon runs on');
like(substr($node->log_text, $logmark), qr/removed from the VPC while it was stopped: joining afresh/,
     '  one log line says why');
is($node->stop, 0, 'alpha stops');
unlike($node->log_text, qr/[0-9a-f]{64}/, 'no token in the log');

sub saved_state {
    my $t = read_text("$state/node.state") // return undef;
    return eval { decode_json($t) };
}

done_testing();
