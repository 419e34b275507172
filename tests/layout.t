#!/usr/bin/perl
# dstack-ctld's folders are rooms of their own: a role (server/, node/,
# cli/) includes lib/, wg/ and common/, never another role's headers, and
# lib/ and wg/ include no role at all.  Every quoted #include is resolved
# the way the compiler does (the file's own folder, then -Idstack-ctld,
# then -Icommon) and the folder it lands in is checked.

use strict;
use warnings;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use Test::More;

my $root = abs_path(dirname(__FILE__) . '/..');
my $ctld = "$root/dstack-ctld";

# which folders each folder may include from
my %may = (
    lib    => [qw(lib common)],
    wg     => [qw(wg common)],
    server => [qw(server lib wg common)],
    node   => [qw(node lib wg common)],
    cli    => [qw(cli lib common server node)],   # the roles' settings
    ''     => [qw(lib server node cli common)],   # main.c
);

sub room {
    my ($path) = @_;
    return 'common' if index($path, "$root/common/") == 0;
    return undef unless index($path, "$ctld/") == 0;
    my $rel = substr($path, length("$ctld/"));
    return $rel =~ m{^([^/]+)/} ? $1 : '';
}

sub resolve {
    my ($file, $inc) = @_;
    for my $dir (dirname($file), $ctld, "$root/common") {
        my $p = "$dir/$inc";
        return abs_path($p) if -f $p;
    }
    return undef;
}

my @files = grep { -f } glob("$ctld/*.[ch] $ctld/*/*.[ch]");
ok(@files > 40, 'found the daemon sources (' . scalar(@files) . ')');

for my $file (@files) {
    my $from = room(abs_path($file));
    my $rel = substr($file, length("$root/"));
    open my $fh, '<', $file or die "$file: $!";
    while (my $line = <$fh>) {
        next unless $line =~ /^\s*#\s*include\s+"([^"]+)"/;
        my $inc = $1;
        my $to_path = resolve($file, $inc);
        if (!defined $to_path) {
            fail("$rel:$.: #include \"$inc\" does not resolve");
            next;
        }
        my $to = room($to_path);
        my $allowed = defined $to && grep { $_ eq $to } @{ $may{$from} };
        ok($allowed, "$rel:$.: #include \"$inc\" ("
            . ($from eq '' ? 'top' : $from) . " -> " . ($to // 'outside') . ")")
            or diag("dstack-ctld/$from may include only from: "
                    . join(', ', @{ $may{$from} }));
    }
    close $fh;
}

done_testing();
