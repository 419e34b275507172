#!/usr/bin/perl
# A relay stream opened by hand through a CVM's mesh entry point, for the
# relay test's refusals (run inside the CVM's namespace):
#   relay-probe.pl SERVER_APP TOKEN|- [LOCAL_UDP_PORT WG_PORT]
# prints the answer's status code; after a 101 it carries datagrams between
# 127.0.0.1:LOCAL_UDP_PORT (from WG_PORT) and the stream, as the node does,
# and prints "closed" when the server ends the stream.
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;

$| = 1;
my ($app, $token, $uport, $wgport) = @ARGV;
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => 80) or die "$!";
print $s "GET /api/v1/relay HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
    . "Upgrade: dstack-wg-relay/1\r\nx-dstack-target-app: $app\r\n"
    . "x-dstack-target-port: 443\r\n"
    . ($token eq '-' ? '' : "Authorization: Bearer $token\r\n") . "\r\n";
my $head = '';
while ($head !~ /\r\n\r\n/) {
    sysread($s, $head, 4096, length $head) or last;
}
my ($code) = $head =~ m{^HTTP/1\.1 (\d+)};
print(($code // 0) . "\n");
exit 0 unless ($code // 0) == 101;
my $in = substr($head, index($head, "\r\n\r\n") + 4);
my $u;
if ($uport) {
    $u = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1',
                               LocalPort => $uport, PeerAddr => '127.0.0.1',
                               PeerPort => $wgport) or die "udp: $!";
}
my $sel = IO::Select->new($s, $u ? $u : ());
while (1) {
    for my $fh ($sel->can_read(1)) {
        if ($fh == $s) {
            my $k = sysread($s, $in, 65536, length $in);
            if (!$k) { print "closed\n"; exit 0 }
            while (length $in >= 4) {
                my $len = unpack 'N', $in;
                last if length $in < 4 + $len;
                my $d = substr($in, 4, $len);
                $in = substr($in, 4 + $len);
                $u->send($d) if $u && $len;
            }
        } else {
            $u->recv(my $d, 65535);
            syswrite($s, pack('N', length $d) . $d);
        }
    }
}
