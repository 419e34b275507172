# A whole VPC in network namespaces (tests/vpc/vpc.sh): the server CVM, three
# node CVMs and the gateway, each CVM with its guest agent, nginx with the
# mesh module and dstack-ctld, WireGuard by wireguard-go.  n1 and n2
# advertise endpoints and talk directly; n3 has none and is reached through
# the hub on the server CVM.

use strict;
use warnings;

use Test::More;

use lib 'tests/lib';
use VpcTest qw(out in vpn_address eventually public_key peers handshake_with
               pid_of);

plan skip_all => 'needs root' if $>;
plan skip_all => 'needs /dev/net/tun' unless -c '/dev/net/tun';

my $vpc = 'tests/vpc/vpc.sh';
my $SRV = '5e7e000000000000000000000000000000000001';
my %APP = (n1 => 'aaaa000000000000000000000000000000000011',
           n2 => 'aaaa000000000000000000000000000000000012',
           n3 => 'aaaa000000000000000000000000000000000013',
           n4 => 'aaaa000000000000000000000000000000000014');

$ENV{DV_DIR} = '/tmp/dv-test';
my $bin = $ENV{DSTACK_BIN} // 'build/bin';

END { system "bash $vpc down >/dev/null 2>&1" }

system("bash $vpc up") == 0 or BAIL_OUT('the VPC did not come up');

my %addr = map { $_ => vpn_address($_) } qw(n1 n2 n3);
like($addr{$_}, qr/^100\.(?:12[89]|1[3-8][0-9]|19[01])\.\d+\.\d+$/,
     "$_ joined with $addr{$_}") for sort keys %addr;

# --- the peer sets follow the reachability rule

my %key = map { $_ => public_key($_) } qw(n1 n2 n3);

for my $pair (['n1', 'n2'], ['n2', 'n1']) {
    my ($from, $to) = @$pair;
    my $peers = peers($from);
    is($peers->{$key{$to}}, "$addr{$to}/32",
       "$from peers directly with $to (both have endpoints)");
    ok(!exists $peers->{$key{n3}}, "$from has no direct peer for n3");
    ok((grep { $_ eq '100.128.0.0/10' } values %$peers), "$from peers with the hub");
}

is(scalar keys %{ peers('n3') }, 1, 'n3 (no endpoint) peers with the hub only');

# --- traffic over WireGuard between every pair, by name

for my $from (qw(n1 n2 n3)) {
    for my $to (grep { $_ ne $from } qw(n1 n2 n3)) {
        ok(in($from, "ping -c 1 -W 5 $to.dstack.internal"),
           "$from pings $to.dstack.internal");
        like(out($from, "curl -sS --max-time 10 http://$addr{$to}:8080/vpn"),
             qr/^$to answers \/vpn for \Q$addr{$from}\E$/m,
             "$from reaches ${to}'s HTTP over the VPN");
    }
}

like(out('n1', 'getent hosts n2.dstack.internal'), qr/^\Q$addr{n2}\E\s+n2\.dstack\.internal/,
     'getent resolves n2.dstack.internal on n1');

ok(handshake_with('n1', $key{n2}), 'n1 has a handshake with n2 itself');

# --- the mesh and the original API, as a node's app uses them

like(mesh('n1', $APP{n2}, '/hello'), qr/^n2 answers \/hello for $APP{n1}/,
     'mesh call n1 -> n2: the backend sees the verified caller');
like(mesh('n1', $SRV, '/api/discover/worker'),
     qr/"count":2.*"node_type":"worker"/s, 'discover/worker lists n1 and n2');
like(mesh('n3', $SRV, '/api/discover/db'), qr/"count":1.*n3\.dstack\.internal/s,
     'discover/db lists n3');

# --- membership changes reach every node within seconds

system("bash $vpc node-add n4") == 0 or BAIL_OUT('n4 did not join');
my $n4 = vpn_address('n4');
ok(eventually(sub { in('n1', "getent hosts n4.dstack.internal") }),
   'a new node appears in the others\' names');
ok(eventually(sub { in('n3', "ping -c 1 -W 2 $n4") }), 'and is reachable');

ok(in('srv', "$bin/dstack-ctld nodes remove n4 --data-dir /tmp/dv-test/srv/data --listen 127.0.0.1:8000"),
   'n4 removed with the CLI');
ok(eventually(sub { !in('n1', "getent hosts n4.dstack.internal") }),
   'n4 leaves the others\' names');
my $key4 = public_key('n4');
ok(eventually(sub { !exists peers('n2')->{$key4} && !exists peers('srv')->{$key4} }),
   'and their WireGuard peers');
system("bash $vpc node-stop n4");

# --- the data plane does not depend on the control plane

my $server_pid = pid_of('srv', 'ctld');
is(system("bash $vpc server-kill"), 0, 'server-kill');
ok(!kill(0, $server_pid), "the server daemon ($server_pid) is gone");
ok(!in('srv', 'curl -sf -m 2 http://127.0.0.1:8000/health'),
   'and nothing answers on its port');
ok(in('n1', "ping -c 3 -i 0.2 -W 5 $addr{n3}"),
   'with the server daemon killed, n1 still reaches n3 through the hub');
ok(in('n1', "ping -c 3 -i 0.2 -W 5 $addr{n2}"), 'and n2 directly');
system("bash $vpc server-start") == 0 or BAIL_OUT('server did not restart');

# a node restart keeps its key and address and rebuilds no tunnel
my $before = handshake_with('n1', $key{n2});
my $n1_pid = pid_of('n1', 'ctld');
is(system("bash $vpc node-stop n1"), 0, 'node-stop n1');
ok(!kill(0, $n1_pid), "n1's daemon ($n1_pid) is gone");
is(system('flock -n /tmp/dv-test/n1/state/node.lock true'), 0,
   "and nothing holds n1's node lock");
system("bash $vpc node-start n1") == 0 or BAIL_OUT('n1 did not restart');
isnt(pid_of('n1', 'ctld'), $n1_pid, 'n1 runs a new daemon');
is(public_key('n1'), $key{n1}, 'n1 keeps its key across a restart');
is(vpn_address('n1'), $addr{n1}, 'and its address');
is(handshake_with('n1', $key{n2}), $before, 'and its session with n2');

# nodes picked up the restarted server: a change after it reaches them
system("bash $vpc node-start n4") == 0 or BAIL_OUT('n4 did not rejoin');
# n2's polls failed while the server was down: its next one comes within
# the node's retry backoff, whose window doubles up to --retry-max (60 s)
ok(eventually(sub { in('n2', "getent hosts n4.dstack.internal") }, 60),
   'after the server restart, nodes still follow changes');

done_testing();


sub mesh {
    my ($cvm, $app, $path) = @_;
    return out($cvm, "curl -sS --max-time 20 -H 'x-dstack-target-app: $app' http://127.0.0.1$path");
}
