#!/usr/bin/perl
# A TCP transfer for the relay test, run inside a CVM namespace:
#   xfer.pl recv ADDR PORT         accepts one connection, reads to the end,
#                                  prints "bytes SHA256 max-gap-seconds
#                                  gap-end" (the end of the longest gap
#                                  between two reads, epoch seconds), then
#                                  every gap over 0.2 s as "start end"
#   xfer.pl send ADDR PORT FILE MBPS   sends FILE at about MBPS megabytes/s
use strict;
use warnings;
use Digest::SHA;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

my ($mode, $addr, $port, $file, $rate) = @ARGV;
if ($mode eq 'recv') {
    my $l = IO::Socket::INET->new(LocalAddr => $addr, LocalPort => $port,
                                  Listen => 1, ReuseAddr => 1) or die "listen: $!";
    my $c = $l->accept or die "accept: $!";
    my $sha = Digest::SHA->new(256);
    my ($n, $gap, $last, $end) = (0, 0, undef, 0);
    my @gaps;
    while (1) {
        my $k = sysread($c, my $buf, 65536);
        die "read: $!" unless defined $k;
        last if $k == 0;
        my $now = time;
        ($gap, $end) = ($now - $last, $now) if defined $last && $now - $last > $gap;
        push @gaps, sprintf('%.3f %.3f', $last, $now) if defined $last && $now - $last > 0.2;
        $last = $now;
        $n += $k;
        $sha->add($buf);
    }
    printf "%d %s %.3f %.3f %s\n", $n, $sha->hexdigest, $gap, $end, join(' ', @gaps);
} else {
    my $c = IO::Socket::INET->new(PeerAddr => $addr, PeerPort => $port)
        or die "connect: $!";
    open my $fh, '<:raw', $file or die "$file: $!";
    my $chunk = 65536;
    my $start = time;
    my $sent = 0;
    while ((my $k = read($fh, my $buf, $chunk)) > 0) {
        my $off = 0;
        while ($off < $k) {
            my $w = syswrite($c, $buf, $k - $off, $off);
            die "write: $!" unless defined $w;
            $off += $w;
        }
        $sent += $k;
        my $ahead = $sent / ($rate * 1e6) - (time - $start);
        sleep $ahead if $ahead > 0;
    }
    close $c or die "close: $!";
}
