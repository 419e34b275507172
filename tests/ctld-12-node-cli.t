# What the node role needs of the server, and its command line: the hub's
# admin-token peer poll (every node and the hub's own entry), `node --help`
# covering every option, usage errors, the example config and the
# original's environment.  No root needed.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(sleep time);

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return undef;
    local $/;
    return scalar <$fh>;
}

sub spit {
    my ($path, $text) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print $fh $text;
    close $fh;
}

my $BIN = ctld_bin();
my $APP = 'e0e0000000000000000000000000000000000005';
my $srv = start_server(args => ['--wg-endpoint', '192.0.2.1:51820', '--server-app-id', $APP]);
my $admin = slurp("$srv->{data}/admin.token") =~ s/\s+//r;

# --- the hub's view: GET /api/v1/peers with the admin token ------------------

my $a = join_node($srv, $APP, 'i-a', 'a', endpoint => '198.51.100.1:51820')->{json};
my $b = join_node($srv, $APP, 'i-b', 'b')->{json};

my $snap = req($srv, 'GET', '/api/v1/peers?since=0', token => $admin);
is($snap->{status}, 200, 'admin token: the peer set');
my %by = map { ($_->{name} => $_) } @{ $snap->{json}{peers} };
is_deeply([sort keys %by], [qw(a b vpc-server)], '  every node and the hub itself');
ok($by{'vpc-server'}{hub} && $by{'vpc-server'}{id} == 0, '  the hub as id 0');
is_deeply($by{'vpc-server'}{allowed_ips}, ['100.128.0.0/10'],
          '  whose allowed_ips tell the pool');
is($by{'vpc-server'}{address}, '100.128.0.1', '  and its own address');
is($by{a}{endpoint}, '198.51.100.1:51820', '  a node with its endpoint');

my $node_view = req($srv, 'GET', '/api/v1/peers?since=0', token => $a->{node_token});
ok(!grep({ $_->{name} eq 'a' } @{ $node_view->{json}{peers} }),
   'a node token still leaves the node itself out');

# a parked admin poll wakes on a join
{
    my $v = $snap->{json}{version};
    my $pid = fork // die;
    if ($pid == 0) {
        my $r = req($srv, 'GET', "/api/v1/peers?since=$v&wait=20&epoch=$snap->{json}{epoch}",
                    token => $admin, http => HTTP::Tiny->new(timeout => 30));
        spit("$srv->{dir}/poll", $r->{content});
        POSIX::_exit(0);
    }
    sleep 0.5;
    join_node($srv, $APP, 'i-c', 'c');
    waitpid $pid, 0;
    my $d = decode_json(slurp("$srv->{dir}/poll"));
    is_deeply([map { $_->{name} } @{ $d->{added} }], ['c'],
              'a parked admin poll answers the join as a delta');
}

my $bad = req($srv, 'GET', '/api/v1/peers?since=0', token => 'f' x 64);
is($bad->{status}, 401, 'an unknown token: 401');

# --- the command line ---------------------------------------------------------

sub run {
    my (%o) = @_;
    local %ENV = (%ENV, %{ $o{env} // {} });
    my $out = qx{$o{cmd} 2>&1};
    return ($? >> 8, $out);
}

my ($code, $help) = run(cmd => "$BIN node --help");
is($code, 0, 'node --help: exit 0');
for my $opt (qw(server-url server-app-id server-port agent-socket name node-type
                endpoint state-dir interface backend listen-port mtu keepalive
                hosts-file names dns-listen resolv-conf poll-wait retry-max hub
                data-dir log-level log-format config)) {
    like($help, qr/^  --\Q$opt\E\b/m, "  documents --$opt");
}
my ($c2, $top) = run(cmd => "$BIN --help");
like($top, qr/^  node\s/m, 'dstack-ctld --help lists node');

my $TMP = tempdir(CLEANUP => 1);
my @usage = (
    ['', qr/server-app-id is required/],
    ['--server-app-id xyz!', qr/not an app id/],
    ['--server-app-id none --backend frob', qr/not auto, kernel or uapi/],
    ['--server-app-id none --endpoint nowhere', qr/endpoint: "nowhere" is not HOST:PORT/],
    ['--server-app-id none --server-url ftp://x', qr/server-url: .* is not http/],
    ['--server-app-id none --server-url http://h:1/api', qr/server-url/],
    ['--server-app-id none --name Not_A_Label', qr/not a DNS label/],
    ['--server-app-id none --node-type "a b"', qr/node-type/],
    ['--server-app-id none --listen-port 0', qr/listen-port/],
    ['--server-app-id none --mtu 576', qr/mtu must be at least 1280/],
    ['--server-app-id none --frobnicate', qr/unknown option --frobnicate/],
    ['--hub --endpoint 192.0.2.1:51820', qr/the hub's endpoint is the server's/],
    ['--server-app-id none extra', qr/unexpected argument "extra"/],
    ['--server-app-id none --names magic', qr/names: "magic" is not dns, hosts or both/],
    ['--server-app-id none --dns-listen ::1', qr/dns-listen: "::1" is not A.B.C.D/],
    ['--server-app-id none --dns-listen 0.0.0.0', qr/dns-listen: "0.0.0.0" is not a loopback address/],
    ['--server-app-id none --dns-listen 10.1.2.3:53', qr/is not a loopback address/],
    ['--server-app-id none --dns-listen 127.0.0.153:5353',
     qr/resolv.conf can only name port 53/],
);
for my $case (@usage) {
    my ($args, $msg) = @$case;
    my ($c, $out) = run(cmd => "$BIN node $args --state-dir $TMP/s");
    is($c, 2, "node $args: exit 2");
    like($out, $msg, '  says why') or diag($out);
}

# the example config and the environment are accepted: the node starts and
# waits for its (missing) guest agent
sub starts {
    my ($cmd, $env) = @_;
    my $log = "$TMP/start.log";
    unlink $log;
    my $pid = fork // die;
    if ($pid == 0) {
        %ENV = (%ENV, %{ $env // {} });
        open STDOUT, '>', $log;
        open STDERR, '>&', \*STDOUT;
        exec("$cmd --state-dir $TMP/s --agent-socket $TMP/none.sock"
             . " --names hosts --hosts-file none --retry-max 1s") or POSIX::_exit(127);
    }
    my $ok = 0;
    for (1 .. 50) {
        last if waitpid($pid, WNOHANG) == $pid;
        if ((slurp($log) // '') =~ /guest agent/) {
            $ok = 1;
            last;
        }
        sleep 0.1;
    }
    kill 'TERM', $pid;
    waitpid $pid, 0;
    return ($ok, $? >> 8, slurp($log));
}

my ($ok, $st, $out) = starts("$BIN node --config conf/dstack-ctld-node.conf");
ok($ok, 'conf/dstack-ctld-node.conf is accepted') or diag($out);
is($st, 0, '  and SIGTERM while it waits: exit 0');
($ok, undef, $out) = starts("$BIN node", { VPC_SERVER_APP_ID => 'self',
                                           VPC_NODE_NAME => 'db-1',
                                           VPC_NODE_TYPE => 'mongodb' });
ok($ok, 'VPC_SERVER_APP_ID, VPC_NODE_NAME, VPC_NODE_TYPE from the environment')
    or diag($out);
($code, $out) = run(cmd => "$BIN node --state-dir $TMP/s",
                    env => { VPC_NODE_NAME => 'Bad Name', VPC_SERVER_APP_ID => 'none' });
is($code, 2, 'a bad VPC_NODE_NAME: exit 2');
like($out, qr/name: "bad name" is not a DNS label|not a DNS label/, '  says why');

done_testing();
