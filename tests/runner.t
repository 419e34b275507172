#!/usr/bin/perl
# tests/run, make test's runner: its closing line counts what happened,
# skipped files are named with their reason, and under CI a skip fails.

use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

my $dir = tempdir(CLEANUP => 1);
my %file = (
    pass => "use Test::More; ok(1); ok(1, 'b # skip c'); done_testing;\n",
    skip => "use Test::More; plan skip_all => 'no qemu here';\n",
    fail => "use Test::More; ok(1); ok(0); done_testing;\n",
    die  => "use Test::More; ok(1); die 'gone';\n",
);
for (keys %file) {
    open my $fh, '>', "$dir/$_.t" or die;
    print $fh $file{$_};
}

sub run {
    my ($env, @files) = @_;
    local %ENV = (%ENV, CI => '', DSTACK_NO_SKIP => '', %$env);
    my $out = qx{tests/run @{[ map { "$dir/$_.t" } @files ]} 2>&1};
    return ($? >> 8, $out);
}

my ($rc, $out) = run({}, 'pass');
is($rc, 0, 'all passing: exit 0');
like($out, qr/^tests: 2 passed, 0 failed, 0 skipped$/m, '  closing line')
    or diag($out);

($rc, $out) = run({}, qw(pass skip));
is($rc, 0, 'a skipped file outside CI: exit 0');
like($out, qr{^  \Q$dir\E/skip\.t: no qemu here$}m, '  names the file and why');
like($out, qr/^tests: 2 passed, 0 failed, 1 skipped\n\z/m, '  and counts it last');

($rc, $out) = run({ CI => 'true' }, qw(pass skip));
is($rc, 1, 'the same under CI=true: exit 1');
like($out, qr/must run everything/, '  says why');

($rc, $out) = run({}, qw(pass fail));
is($rc, 1, 'a failing test: exit 1');
like($out, qr/^tests: 3 passed, 1 failed, 0 skipped$/m, '  counted');

($rc, $out) = run({}, 'die');
is($rc, 1, 'a file that dies after a pass: exit 1');
like($out, qr/^tests: 1 passed, 1 failed, 0 skipped$/m, '  counted as a failure');

done_testing();
