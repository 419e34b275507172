# WireGuard through the relay (tests/vpc/vpc.sh, two nodes): the nodes start
# on UDP (--transport auto, endpoints advertised), then all UDP between the
# CVMs is dropped inside their namespaces and only the gateway's TCP path
# is left.  Without a restart the nodes move to the relay stream through
# the mesh, withdraw their endpoints (so neither peers directly), and
# everything goes on: names both ways, a 50 MB TCP transfer intact while
# the gateway is restarted under it, the server and the hub restarted.
# Then the relay endpoint's refusals: no token, another app's token, a
# second stream replacing the first, a handshake with another node's key.
#
# Run as root (network namespaces, nftables, wireguard-go).

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);

use lib 'tests/lib';
use VpcTest qw(out in vpn_address eventually wg_if public_key peers
               handshake_with pid_of slurp);

plan skip_all => 'needs root' if $>;
plan skip_all => 'needs /dev/net/tun' unless -c '/dev/net/tun';

my $vpc = 'tests/vpc/vpc.sh';
my $SRV = '5e7e000000000000000000000000000000000001';
my $D = '/tmp/rl-test';
$ENV{DV_DIR} = $D;
$ENV{DV_PREFIX} = 'rl';
$ENV{NODES} = 'n1 n2';
$ENV{NODE_ENDPOINTS} = 'n1 n2';
$ENV{NODE_KEEPALIVE} = 2;
$ENV{NODE_POLL_WAIT} = '3s';
my $bin = $ENV{DSTACK_BIN} // 'build/bin';

END { system "bash $vpc down >/dev/null 2>&1" }

system("bash $vpc up") == 0 or BAIL_OUT('the VPC did not come up');
my %addr = map { $_ => vpn_address($_) } qw(n1 n2);
my %key = map { $_ => public_key($_) } qw(n1 n2 srv);

# --- auto with UDP open: UDP

ok(eventually(sub { hub_endpoint('n1') eq '10.99.0.10:51820' && handshake_with('n1', $key{srv}) }),
   'auto with UDP open: n1 reaches the hub over UDP (' . hub_endpoint('n1') . ')');
ok(eventually(sub { exists peers('n1')->{$key{n2}} }), 'and peers with n2 directly');

# --- a node started while UDP is cut waits for its first answer over UDP
# as long as a handshake may take (12 s), not two keepalive intervals (2 s
# each here), and stays on UDP when it comes

is(system("bash $vpc node-stop n1"), 0, 'n1 stopped');
system("bash $vpc udp-block n1") == 0 or BAIL_OUT('udp-block');
system("bash $vpc node-start n1") == 0 or BAIL_OUT('n1 did not restart');
sleep 6;
is(hub_endpoint('n1'), '10.99.0.10:51820',
   'n1 started with UDP cut: still on UDP after three keepalive intervals');
system("bash $vpc udp-unblock n1") == 0 or BAIL_OUT('udp-unblock');
ok(eventually(sub { in('n1', 'ping -c 1 -W 1 vpc-server.dstack.internal') }, 15),
   '  UDP back: n1 reaches the hub');
is(hub_endpoint('n1'), '10.99.0.10:51820', '  over UDP');

# --- all UDP between CVMs dropped: the relay, without a restart

my $pid1 = pid_of('n1');
system("bash $vpc udp-block srv n1 n2") == 0 or BAIL_OUT('udp-block');
my $t0 = time;
ok(eventually(sub { hub_endpoint('n1') =~ /^127\.0\.0\.1:\d+$/ && hub_endpoint('n2') =~ /^127\./ }, 30),
   sprintf('UDP blocked: both nodes move to the relay (%.1f s)', time - $t0));
is(pid_of('n1'), $pid1, 'n1 runs the same daemon');
like(slurp("$D/n1/ctld.log"), qr/the path to the hub: the relay through the mesh/,
     'n1 says so');
ok(eventually(sub { !exists peers('n1')->{$key{n2}} && !exists peers('n2')->{$key{n1}} }, 30),
   'endpoints withdrawn: n1 and n2 no longer peer directly, on either side');

my $st = status('n1');
is($st->{hub}{transport}, 'relay', 'dstack-ctld status on n1: the hub over the relay');
is(path_of($st, 'n2'), 'via_hub', 'and n2 via the hub');

for my $p (['n1', 'n2.dstack.internal'], ['n2', 'n1.dstack.internal'],
           ['n1', 'vpc-server.dstack.internal'], ['srv', 'n1.dstack.internal'],
           ['srv', 'n2.dstack.internal'])
{
    ok(eventually(sub { in($p->[0], "ping -c 1 -W 2 $p->[1]") }, 30),
       "over the relay: $p->[0] pings $p->[1]");
}

# --- 50 MB over TCP inside the VPN, the gateway restarted in the middle

system("head -c 50000000 /dev/urandom > $D/blob") == 0 or BAIL_OUT('blob');
my ($want) = split ' ', qx{sha256sum $D/blob};
my $recv = "bash $vpc exec n2 perl tests/vpc/xfer.pl recv $addr{n2} 7000";
open my $rx, '-|', $recv or BAIL_OUT("recv: $!");
sleep 0.5;
my $sender = fork // BAIL_OUT("fork: $!");
if (!$sender) {
    exec "bash $vpc exec n1 perl tests/vpc/xfer.pl send $addr{n2} 7000 $D/blob 8";
}
sleep 2;
my $streams = () = slurp("$D/srv/ctld.log") =~ /stream open/g;
my $cut = time;
is(system("bash $vpc gw-restart"), 0, 'the gateway restarted mid-transfer');
# nginx returns once it listens again: the path is back
my $back = time;
waitpid $sender, 0;
is($?, 0, 'the sender finished');
my ($n, $got, $gap, $gap_end, @gaps) = split ' ', scalar <$rx> // '';
close $rx;
is($n, 50000000, '50 MB arrived');
is($got, $want, 'intact (sha256)');
# the first bytes after the gateway is back end the stall it was in
my $resumed = 0;
while (my ($from, $to) = splice @gaps, 0, 2) {
    $resumed = $to - $back if $from <= $back && $to > $back;
}
ok($resumed < 3, 'traffic resumed within 3 s of the gateway being back')
    or diag(explain_stall());
diag(sprintf 'gateway down %.3f s; longest stall of the transfer %.3f s; traffic back'
             . ' %.3f s after the gateway', $back - $cut, $gap // -1, $resumed);
my $after = () = slurp("$D/srv/ctld.log") =~ /stream open/g;
cmp_ok($after, '>=', $streams + 2, 'both nodes opened new streams after the cut');

# --- the relay endpoint survives a restart of the server and of the hub

is(system("bash $vpc server-kill"), 0, 'server killed');
system("bash $vpc server-start") == 0 or BAIL_OUT('server did not restart');
ok(eventually(sub { in('n1', 'ping -c 1 -W 1 n2.dstack.internal') }, 30),
   'after a server restart, n1 pings n2 through the relay again');
is(system("bash $vpc hub-restart"), 0, 'hub restarted');
ok(eventually(sub { in('n2', 'ping -c 1 -W 1 n1.dstack.internal') }, 30),
   'after a hub restart, n2 pings n1 through the relay again');

# --- refusals at the relay endpoint

my %token = map { $_ => token_of($_) } qw(n1 n2);
is(probe('n1', '-'), "401\n", 'no node token: 401');
is(probe('n1', $token{n2}), "403\n", "n2's token from n1 (another app): 403");
like(slurp("$D/srv/ctld.log"), qr/node token belongs to another app/, 'logged');

# a second stream for n1 replaces n1's own; n1 then takes it back
open my $pr, '-|', "bash $vpc exec n1 timeout 20 perl tests/vpc/relay-probe.pl $SRV $token{n1}"
    or BAIL_OUT("probe: $!");
is(scalar <$pr>, "101\n", "a second stream with n1's token is accepted");
is(scalar <$pr>, "closed\n", 'and ended when n1 opens its own again');
close $pr;
like(slurp("$D/srv/ctld.log"), qr/\(n1\): stream ended: replaced by a new stream/,
     'the server ends the replaced stream');
ok(eventually(sub { in('n1', 'ping -c 1 -W 1 n2.dstack.internal') }, 20),
   'n1 is back on its own stream');

# a WireGuard interface with n2's key, relayed on a stream of n1's token
# (n1's daemon stopped, so that its own stream does not replace this one):
# its handshakes reach nothing
is(system("bash $vpc node-stop n1"), 0, "n1's daemon stopped");
my $n2key = slurp("$D/n2/state/node.key");
chomp $n2key;
open my $kf, '>', "$D/n2.key" or die;
print $kf "$n2key\n";
close $kf;
chmod 0600, "$D/n2.key";
ok(in('n1', "sh -c 'wireguard-go rlwg-x && wg set rlwg-x private-key $D/n2.key listen-port 51999"
          . " peer $key{srv} endpoint 127.0.0.1:52999 allowed-ips 100.128.0.1/32"
          . " persistent-keepalive 1 && ip link set rlwg-x up'"),
   "an interface with n2's key in n1's CVM");
open my $px, '-|', "bash $vpc exec n1 timeout 12 perl tests/vpc/relay-probe.pl $SRV $token{n1} 52999 51999"
    or BAIL_OUT("probe: $!");
is(scalar <$px>, "101\n", "relayed on a stream of n1's token");
close $px;
is(handshake_with('n1', $key{srv}, 'rlwg-x'), 0, 'its handshakes with the hub never complete');
like(slurp("$D/srv/ctld.log"), qr/\(n1\) sent a handshake that is not its key's: dropped/,
     'the server drops them, and says so');
in('n1', 'ip link del rlwg-x');
system("bash $vpc node-start n1") == 0 or BAIL_OUT('n1 did not restart');
ok(eventually(sub { in('n2', 'ping -c 1 -W 1 n1.dstack.internal') }, 20),
   'n1 and n2 still reach each other');

# UDP open again and n1 restarted with --transport udp: status says so
system("bash $vpc udp-unblock srv n1 n2") == 0 or BAIL_OUT('udp-unblock');
is(system("bash $vpc node-stop n1"), 0, "n1's daemon stopped");
{
    local $ENV{VPC_WG_TRANSPORT} = 'udp';
    system("bash $vpc node-start n1") == 0 or BAIL_OUT('n1 did not restart');
}
ok(eventually(sub { (status('n1')->{hub}{transport} // '') eq 'udp'
                    && hub_endpoint('n1') eq '10.99.0.10:51820' }, 20),
   'dstack-ctld status on n1 with --transport udp: the hub over UDP');
ok(eventually(sub { in('n1', 'ping -c 1 -W 1 vpc-server.dstack.internal') }, 20),
   'and n1 reaches the hub over UDP');

done_testing();


# what the daemons and nginx said around the gateway restart
sub explain_stall {
    my $text = '';
    for my $cvm (qw(n1 n2 srv)) {
        $text .= "$cvm: " . join('', grep { /stream|path to the hub/ } split /^/,
                                 slurp("$D/$cvm/ctld.log"));
    }
    for my $f ("$D/n1/error.log", "$D/gw/error.log") {
        my @l = split /^/, slurp($f);
        $text .= "$f:\n" . join('', @l[($#l > 15 ? $#l - 15 : 0) .. $#l]);
    }
    return $text;
}

# dstack-ctld status --json of a node, decoded ({} when it does not answer)
sub status {
    my ($cvm) = @_;
    my $text = qx{bash $vpc exec $cvm $bin/dstack-ctld status --json --state-dir $D/$cvm/state};
    return eval { JSON::PP->new->decode($text) } // {};
}

sub path_of {
    my ($st, $name) = @_;
    for (@{ $st->{peers} // [] }) {
        return $_->{path} if ($_->{name} // '') eq $name;
    }
    return '';
}

sub token_of {
    my ($cvm) = @_;
    return slurp("$D/$cvm/state/node.state") =~ /"node_token"\s*:\s*"([0-9a-f]+)"/ ? $1 : '';
}

sub probe {
    my ($cvm, $token) = @_;
    return scalar qx{bash $vpc exec $cvm timeout 20 perl tests/vpc/relay-probe.pl $SRV $token 2>&1};
}

# the endpoint a node's WireGuard has for the hub
sub hub_endpoint {
    my ($cvm) = @_;
    my @lines = split /\n/, out($cvm, 'wg show ' . wg_if($cvm) . ' dump');
    shift @lines;
    for (@lines) {
        my @f = split /\t/;
        return $f[2] if $f[0] eq $key{srv};
    }
    return '';
}
