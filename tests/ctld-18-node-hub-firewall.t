# The hub forwards within the VPC only: members without endpoints reach
# each other through it, but a member cannot route through it into a
# network the server's CVM reaches, nor that network into the VPC.
#
# Namespaces: the hub (server and `node --hub`), two members alpha and
# beta (no endpoints, so all their traffic goes through the hub), and
# "behind", a network of the server's CVM outside the pool, on a veth
# pair with the hub.  alpha plays the attacker: it adds that network to
# its hub peer's allowed IPs and routes it into the tunnel.  With the
# hub's nftables table removed by hand, the same packets pass, which
# shows the setup itself would carry them.
#
# Run as root from the repository root:
#   flock /tmp/dstack-ns.lock prove tests/ctld-18-node-hub-firewall.t

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use NodeTest;
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

my $why = node_world();
plan skip_all => $why if $why;
plan skip_all => 'nft is missing (make deps)'
    if system('command -v nft >/dev/null') != 0;
for my $bin (ctld_bin(), agent_bin()) {
    BAIL_OUT("$bin is missing: run make first") unless -x $bin;
}
$SIG{INT} = $SIG{TERM} = sub { exit 1 };

my $DIR = tempdir('ctld-fw-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{KEEP});
my $APP = 'a0a0000000000000000000000000000000000001';
my $BEHIND = '192.0.2';         # TEST-NET-1: outside the pool
my $TABLE = 'inet dstack_ctld_hub';

my $hubns = ns_add('fwh', 1);
my $behind = ns_add('fwb', 2);
my %N;
for (['alpha', 11], ['beta', 12]) {
    my ($name, $host) = @$_;
    my $w = ns_add('f' . substr($name, 0, 2), $host);
    $w->{name} = $name;
    $w->{agent} = start_agent($DIR, $name, $APP);
    $N{$name} = $w;
}

# the network behind the hub: a veth pair hub <-> behind, routes both ways
my $veth = "fwv$$";
sh_ok("ip -n $hubns->{ns} link add $veth type veth peer name ${veth}b"
      . " netns $behind->{ns}");
sh_ok("ip -n $hubns->{ns} address add $BEHIND.1/24 dev $veth");
sh_ok("ip -n $hubns->{ns} link set $veth up");
sh_ok("ip -n $behind->{ns} address add $BEHIND.2/24 dev ${veth}b");
sh_ok("ip -n $behind->{ns} link set ${veth}b up");
sh_ok("ip -n $behind->{ns} route add 100.128.0.0/10 via $BEHIND.1");

my $sock = "$DIR/ctld.sock";
my $srv = start_server(unix => $sock, dir => $DIR,
                       args => ['--wg-endpoint', "$hubns->{ip}:51820",
                                '--server-app-id', $APP]);
my $hub = start_node($DIR, $hubns, '--hub', '--data-dir', $srv->{data},
                     '--server-url', "unix:$sock", '--hosts-file', 'none',
                     '--retry-max', '2s');
for my $w (values %N) {
    $w->{node} = start_node($DIR, $w, '--server-url', "unix:$sock",
        '--server-app-id', 'none', '--agent-socket', $w->{agent},
        '--state-dir', "$DIR/state-$w->{name}", '--hosts-file', 'none',
        '--name', $w->{name}, '--retry-max', '2s');
}

sub nodes {
    my ($code, $out) = $srv->cli('nodes', 'list', '--json');
    die "nodes list: $out" if $code;
    return { map { $_->{name} => $_ } @{ decode_json($out)->{nodes} } };
}

sub ping {
    my ($from, $to, $tries) = @_;
    for (1 .. $tries) {
        my ($st) = in_ns($from->{ns}, 'ping', '-c', '1', '-W', '1', $to);
        return 1 if $st == 0;
    }
    return 0;
}

sub hub_table {
    my ($st) = in_ns($hubns->{ns}, 'nft', 'list', 'table', split(' ', $TABLE));
    return $st == 0;
}

ok(wait_until(20, sub { keys %{ nodes() } == 2 }), 'alpha and beta joined')
    or diag($hub->log_text);
my $list = nodes();
ok(wait_until(10, sub {
    my $d = wg_dump($hubns->{ns}, $hubns->{ifname});
    $d && keys %{ $d->{peers} } == 2 }), 'the hub has both')
    or diag($hub->log_text);
my $HUB_KEY = wg_dump($hubns->{ns}, $hubns->{ifname})->{public_key};
my ($a_addr, $b_addr) = map { $list->{$_}{address} } qw(alpha beta);
# without endpoints, the hub learns where a member is from its handshake
ok(wait_until(40, sub {
    my $d = wg_dump($hubns->{ns}, $hubns->{ifname});
    2 == grep { $_->{handshake} > 0 } values %{ $d->{peers} } }),
   'both members have a session with the hub');

# --- inside the VPC ----------------------------------------------------------

ok(hub_table(), "the hub installed its nftables table $TABLE")
    or diag($hub->log_text);
ok(ping($N{alpha}, $b_addr, 5), 'alpha -> beta through the hub');
ok(ping($N{beta}, $a_addr, 5), 'beta -> alpha through the hub');
my (undef, $fwd) = in_ns($hubns->{ns}, 'cat', '/proc/sys/net/ipv4/ip_forward');
is($fwd, "1\n", 'the hub forwards');
ok(ping($hubns, $a_addr, 5), 'the hub itself reaches alpha');
ok(ping($behind, $BEHIND.'.1', 1), 'behind reaches the hub on its own network');

# --- alpha routes the network behind the hub into its tunnel -----------------

# the node would undo the change on its next snapshot: it stops first,
# and leaves the interface as it is
is($N{alpha}{node}->stop, 0, 'alpha: its node stopped');
sh_ok("ip netns exec $N{alpha}{ns} wg set $N{alpha}{ifname} peer $HUB_KEY"
      . " allowed-ips 100.128.0.0/10,$BEHIND.0/24");
sh_ok("ip -n $N{alpha}{ns} route add $BEHIND.0/24 dev $N{alpha}{ifname}"
      . " src $a_addr");

ok(!ping($N{alpha}, "$BEHIND.2", 3),
   'alpha cannot reach the network behind the hub');
ok(!ping($behind, $a_addr, 3),
   'the network behind the hub cannot reach alpha through it');
ok(ping($N{beta}, $a_addr, 3), 'beta still reaches alpha');

# without the filter the very same packets pass: the test can fail
in_ns($hubns->{ns}, 'nft', 'delete', 'table', split(' ', $TABLE));
ok(!hub_table(), 'table removed by hand');
ok(ping($N{alpha}, "$BEHIND.2", 5),
   'then alpha reaches the network behind the hub (what the filter stops)');

# --- the hub puts it back, and takes it away when it stops -------------------

$hub->stop;
ok(!hub_table(), 'a stopped hub leaves no table');
(undef, $fwd) = in_ns($hubns->{ns}, 'cat', '/proc/sys/net/ipv4/ip_forward');
is($fwd, "0\n", 'and turns forwarding off again (it turned it on)');
ok(!ping($N{alpha}, "$BEHIND.2", 2), 'so nothing is forwarded');

$hub = start_node($DIR, $hubns, '--hub', '--data-dir', $srv->{data},
                  '--server-url', "unix:$sock", '--hosts-file', 'none',
                  '--retry-max', '2s');
ok(wait_until(10, sub { hub_table() }), 'a new hub installs it again')
    or diag($hub->log_text);
ok(ping($N{beta}, $a_addr, 5), 'beta reaches alpha through the new hub');
ok(!ping($N{alpha}, "$BEHIND.2", 3), 'alpha does not reach behind it');

# --- a hub that dies leaves the filter; the next one cleans up after it ------

# the hubs share one log file: count what the next one adds to it
my $installs = () = $hub->log_text =~ /forwards only/g;
$hub->kill9;
ok(hub_table(), 'a hub killed with SIGKILL leaves its table');
ok(!ping($N{alpha}, "$BEHIND.2", 2), 'so alpha still does not reach behind it');
$hub = start_node($DIR, $hubns, '--hub', '--data-dir', $srv->{data},
                  '--server-url', "unix:$sock", '--hosts-file', 'none',
                  '--retry-max', '2s');
ok(wait_until(10, sub { (() = $hub->log_text =~ /forwards only/g) > $installs }),
   'the next hub replaces the table') or diag($hub->log_text);
ok(ping($N{beta}, $a_addr, 5), 'beta reaches alpha through it');
is($hub->stop, 0, 'hub: stops with status 0');
ok(!hub_table(), 'and removes the table');
(undef, $fwd) = in_ns($hubns->{ns}, 'cat', '/proc/sys/net/ipv4/ip_forward');
is($fwd, "0\n", 'and turns forwarding off (the hub that died turned it on)');
like($hub->log_text, qr/forwards only 100\.128\.0\.0\/10 to 100\.128\.0\.0\/10/,
     'hub: logs what it forwards');

done_testing();


sub sh_ok {
    my ($cmd) = @_;
    system($cmd) == 0 or BAIL_OUT("failed: $cmd");
}
