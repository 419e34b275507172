# The server's relay endpoint (GET /api/v1/relay, an HTTP/1.1 upgrade) on
# its own, without nginx or WireGuard: a UDP socket of the test stands in
# for the hub's WireGuard port (--wg-port).  Who may open a stream, what
# goes through it, one stream per node, and the framing bounds; a flood,
# a closed hub port, and a stream that outlives its node's key or removal.
#
# Run from the repository root: prove tests/ctld-19-relay-endpoint.t

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Socket qw(SOL_SOCKET SO_LINGER);
use Test::More;
use Time::HiRes qw(sleep time);

my $A = 'a0a0000000000000000000000000000000000001';
my $B = 'b0b0000000000000000000000000000000000002';

my $hub = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1', LocalPort => 0)
    or die "udp: $!";
my $srv = start_server(args => ['--allowed-apps', "$A,$B", '--wg-port', $hub->sockport]);

my $ja = join_node($srv, $A, 'inst-a', 'alpha');
my $jb = join_node($srv, $B, 'inst-b', 'beta');
is($ja->{status}, 200, 'alpha joined');
is($jb->{status}, 200, 'beta joined');
my %token = (alpha => $ja->{json}{node_token}, beta => $jb->{json}{node_token});

# opens a stream: (status, socket, bytes after the answer)
sub relay {
    my (%o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port})
        or die "connect: $!";
    my $req = "GET /api/v1/relay HTTP/1.1\r\nHost: localhost\r\n";
    $req .= "Connection: Upgrade\r\nUpgrade: " . ($o{upgrade} // 'dstack-wg-relay/1') . "\r\n"
        unless defined $o{upgrade} && $o{upgrade} eq '';
    $req .= "x-dstack-app-id: $o{app}\r\n" if $o{app};
    $req .= "Authorization: Bearer $o{token}\r\n" if $o{token};
    print $s "$req\r\n";
    my $head = '';
    while ($head !~ /\r\n\r\n/) {
        my $k = sysread($s, $head, 4096, length $head);
        last unless $k;
    }
    my ($code) = $head =~ m{^HTTP/1\.1 (\d+)};
    return ($code // 0, $s);
}

sub frame { pack('N', length $_[0]) . $_[0] }

# what reaches the hub within a second: (datagram, from port) or ()
sub at_hub {
    return () unless IO::Select->new($hub)->can_read(1);
    my $from = $hub->recv(my $d, 65535);
    my ($port) = unpack_sockaddr_in($from);
    return ($d, $port, $from);
}

# whether the stream is closed by the server within a few seconds
sub closed {
    my ($s) = @_;
    return 0 unless IO::Select->new($s)->can_read(5);
    my $k = sysread($s, my $buf, 65536);
    return !$k;
}

my $log_lines = sub { my ($re) = @_; scalar(() = $srv->log_text =~ /$re/g) };

# --- who may open one

is((relay(app => $A, token => $token{alpha}, upgrade => ''))[0], 400,
   'without Upgrade: dstack-wg-relay/1: 400');
is((relay(app => $A))[0], 401, 'without a node token: 401');
is((relay(app => $A, token => 'f' x 64))[0], 401, 'an unknown token: 401');
is((relay(app => $B, token => $token{alpha}))[0], 403,
   "alpha's token with beta's app: 403");
is((relay(token => $token{alpha}))[0], 401, 'no x-dstack-app-id (not through mesh_auth): 401');

# --- what goes through

my ($code, $sa) = relay(app => $A, token => $token{alpha});
is($code, 101, "alpha's token with its own app: 101 Switching Protocols");
my $data = "\x04\0\0\0" . ("d" x 60);
syswrite($sa, frame($data));
my ($got, $port_a, $from_a) = at_hub();
is($got, $data, 'a WireGuard data message reaches the hub port');
$hub->send("\x04\0\0\0" . ('r' x 40), 0, $from_a);
ok(IO::Select->new($sa)->can_read(2), 'the answer comes back');
sysread($sa, my $back, 65536);
is($back, frame("\x04\0\0\0" . ('r' x 40)), 'framed, whole');

syswrite($sa, frame("\x09\0\0\0" . ('x' x 60)) . frame("\x02\0\0\0" . ('x' x 10)));
ok(!(at_hub())[0], 'no other message type, nor a wrong size, goes through');
syswrite($sa, frame("\x01\0\0\0" . ("\0" x 144)));
ok(!(at_hub())[0], 'a handshake initiation that is not alpha\'s key reaches nothing');
like($srv->log_text, qr/node \d+ \(alpha\) sent a handshake that is not its key's: dropped/,
     'one log line says so');

my ($cb, $sb) = relay(app => $B, token => $token{beta});
is($cb, 101, 'beta opens its own stream');
syswrite($sb, frame($data));
my (undef, $port_b) = at_hub();
ok($port_b && $port_b != $port_a, "each node has its own socket toward the hub ($port_a, $port_b)");

# --- one stream per node

my ($c2, $sa2) = relay(app => $A, token => $token{alpha});
is($c2, 101, 'a second stream for alpha');
ok(closed($sa), 'ends the first');
like($srv->log_text, qr/\(alpha\): stream ended: replaced by a new stream/, 'logged');
syswrite($sb, frame($data));
ok((at_hub())[0], "beta's stream is untouched");

# --- framing bounds

syswrite($sa2, pack('N', 65536) . ('z' x 100));
ok(closed($sa2), 'a frame over 65535 bytes closes the stream');
is($log_lines->(qr/\(alpha\): stream ended: a frame over 65535 bytes/), 1, 'with one log line');

my ($c3, $sa3) = relay(app => $A, token => $token{alpha});
syswrite($sa3, frame('') . frame($data));
is((at_hub())[0], $data, 'a keepalive frame (length 0) is skipped');
syswrite($sa3, pack('N', 100) . 'short');
close $sa3;
ok(eventually(sub { $srv->log_text =~ /\(alpha\): stream ended: closed/ }),
   'a stream cut mid-frame ends with a log line');

# --- a node that floods handshakes: past WireGuard's own rate they are
# dropped before the key check (an X25519 each), and the stream's thread
# still hears a replacement

my ($c4, $sa4) = relay(app => $A, token => $token{alpha});
is($c4, 101, 'alpha opens a stream');
my $flood = fork // die "fork: $!";
if ($flood == 0) {
    $SIG{PIPE} = 'IGNORE';
    my $burst = frame("\x01\0\0\0" . ("\0" x 144)) x 400;
    my $until = time + 6;
    while (time < $until) { syswrite($sa4, $burst) or last }
    POSIX::_exit(0);
}
ok(eventually(sub { $srv->log_text =~ /\(alpha\) sends handshakes faster than WireGuard does: the excess dropped/ }),
   'a flood of handshakes: the excess dropped, one log line');
my $replaced = $log_lines->(qr/\(alpha\): stream ended: replaced by a new stream/);
my ($c5, $sa5) = relay(app => $A, token => $token{alpha});
is($c5, 101, 'a new stream for alpha while the old one floods');
ok(eventually(sub { $log_lines->(qr/\(alpha\): stream ended: replaced by a new stream/) > $replaced }),
   '  ends the flooding one');
kill 'KILL', $flood;
waitpid $flood, 0;
close $sa4;

# clients that go away before the upgrade's answer: nothing held for them
for (1 .. 20) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port}) or die;
    print $s "GET /api/v1/relay HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
           . "Upgrade: dstack-wg-relay/1\r\nx-dstack-app-id: $A\r\n"
           . "Authorization: Bearer $token{alpha}\r\n\r\n";
    setsockopt($s, SOL_SOCKET, SO_LINGER, pack('II', 1, 0));    # a reset
    close $s;
}
ok(eventually(sub { $srv->healthy }), 'the server answers after 20 upgrades cut short');

# --- the hub's port closed (the hub restarting): a refused datagram
# leaves an error on the stream's socket, which must not spin its thread

{
    my $gone = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1', LocalPort => 0)
        or die "udp: $!";
    my $closed_port = $gone->sockport;
    close $gone;
    my $srv2 = start_server(args => ['--allowed-apps', $A, '--wg-port', $closed_port]);
    my $j = join_node($srv2, $A, 'inst-c', 'gamma');
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv2->{port}) or die;
    print $s "GET /api/v1/relay HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
           . "Upgrade: dstack-wg-relay/1\r\nx-dstack-app-id: $A\r\n"
           . "Authorization: Bearer $j->{json}{node_token}\r\n\r\n";
    my $head = '';
    sysread($s, $head, 4096, length $head) while $head !~ /\r\n\r\n/ && IO::Select->new($s)->can_read(5);
    like($head, qr{^HTTP/1\.1 101 }, 'a stream toward a closed hub port');
    syswrite($s, frame($data));
    sleep 0.5;
    my $cpu = sub {
        open my $fh, '<', "/proc/$srv2->{pid}/stat" or return 0;
        my @f = split ' ', scalar <$fh>;
        return ($f[13] + $f[14]) / POSIX::sysconf(POSIX::_SC_CLK_TCK());
    };
    my $before = $cpu->();
    sleep 2;
    my $used = $cpu->() - $before;
    cmp_ok($used, '<', 1, sprintf('the refusal does not spin the stream (%.2f s of CPU in 2 s)', $used));
    close $s;
    $srv2->stop;
}

# --- a stream is bound to its node's token and key: it ends when the node
# joins again with another key, or is removed

my ($c6, $sa6) = relay(app => $A, token => $token{alpha});
is($c6, 101, 'alpha opens a stream');
my $rekey = join_node($srv, $A, 'inst-a', 'alpha', node_token => $token{alpha});
is($rekey->{status}, 200, 'alpha joins again with another key');
ok(closed($sa6), '  its stream ends');
like($srv->log_text, qr/\(alpha\): stream ended: the node joined again with another key/, '  logged');

my $admin = do { local (@ARGV, $/) = "$srv->{data}/admin.token"; <> };
chomp $admin;
is(req($srv, 'DELETE', '/api/v1/nodes/beta', token => $admin)->{status}, 200,
   'the admin removes beta');
ok(closed($sb), "  beta's open stream ends");
like($srv->log_text, qr/\(beta\): stream ended: the node was removed/, '  logged');

# --- the server stops with streams open

my ($c7, $sa7) = relay(app => $A, token => $rekey->{json}{node_token});
is($c7, 101, "alpha's new token opens a stream");
$srv->stop;
ok(closed($sa7), 'a stopping server ends the streams');
unlike($srv->log_text, qr/streams did not end/, 'and waits for them');

done_testing();

sub eventually {
    my ($check) = @_;
    for (1 .. 50) {
        return 1 if $check->();
        sleep 0.1;
    }
    return 0;
}
