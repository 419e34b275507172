#!/usr/bin/perl
#
# dstack-ctld's WireGuard layer on kernel WireGuard, for real: a qemu VM
# booting Debian's cloud kernel with an initramfs (tests/vm/build.sh) whose
# /init (tests/vm/init) drives wg-apply --backend kernel in two network
# namespaces, then runs the node daemon itself on kernel WireGuard against
# a server in the VM, and prints one line per check on the serial console.  This
# test boots it (with KVM where it can; software emulation otherwise, and
# after a KVM internal error), turns those lines into TAP and reports the
# timings.
#
# Run from the repository root: prove tests/wg-kernel-vm.t

use strict;
use warnings;

use FindBin;
use Test::More;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

use lib "$FindBin::Bin/lib";
use DstackTest qw(slurp);

my $ROOT = "$FindBin::Bin/..";
my $APPLY = ($ENV{DSTACK_BIN} ? "$ENV{DSTACK_BIN}/../tests" : "$ROOT/build/tests")
            . '/wg-apply';
my $OUT = "$ROOT/build/vm";
my $TIMEOUT = 300;      # seconds for the whole boot; about 30 are usual

my $QEMU = 'qemu-system-x86_64';
plan skip_all => "$QEMU cannot run here (make deps installs qemu-system-x86)"
    if system("$QEMU -version >/dev/null 2>&1") != 0;
BAIL_OUT("$APPLY is missing: run make first") unless -x $APPLY;

my $BIN = $ENV{DSTACK_BIN} // "$ROOT/build/bin";
my $build = `'$ROOT/tests/vm/build.sh' '$OUT' '$APPLY' '$BIN' 2>&1`;
# a failed build (no kernel package to download, say) fails this file only
if (!is($?, 0, 'the VM builds')) {
    diag("tests/vm/build.sh failed:\n$build");
    done_testing();
    exit 1;
}
note($build);

my $log = "$OUT/console.log";
my $err = "$OUT/qemu.err";

# one boot: qemu's exit status (124: the timeout).  A KVM "internal error"
# (an instruction the host's KVM cannot emulate, seen under nested
# virtualisation) pauses the guest for good: qemu is stopped at once
sub boot {
    my (@accel) = @_;
    unlink $log, $err;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', $err or die "$err: $!";
        exec('timeout', '--kill-after=10', $TIMEOUT, $QEMU, @accel,
             '-m', '512', '-nographic', '-no-reboot', '-monitor', 'none',
             '-kernel', "$OUT/vmlinuz", '-initrd', "$OUT/initrd.gz",
             '-append', 'console=ttyS0 panic=-1 quiet',
             '-serial', "file:$log") or exit 127;
    }
    while (waitpid($pid, WNOHANG) == 0) {
        if (slurp($err) =~ /KVM internal error/) {
            kill 'TERM', $pid;          # timeout passes it on to qemu
            waitpid $pid, 0;
            return -1;
        }
        sleep 0.5;
    }
    return $? >> 8;
}

my $t0 = time;
my $status = -w '/dev/kvm' ? boot('-enable-kvm', '-cpu', 'host') : -1;
if ($status == -1) {
    note(-w '/dev/kvm' ? "KVM failed:\n" . slurp($err) . 'again in software emulation'
                       : 'no KVM: software emulation');
    $t0 = time;
    $status = boot('-accel', 'tcg', '-cpu', 'max');
}
my $boot = time - $t0;
isnt($status, 124, "the VM powers off within ${TIMEOUT}s") or diag(slurp($err));
note(sprintf 'VM ran for %.1f s', $boot);

open my $fh, '<', $log or BAIL_OUT("$log: $!");
my @lines = map { s/\r?\n\z//r } <$fh>;
close $fh;

my ($result, %time, @detail);
for (@lines) {
    # firmware escapes may precede the first line
    if (/\bVM (ok|not ok) \d+ - (.*)$/) {
        ok($1 eq 'ok', "vm: $2") or diag(join "\n", @detail);
        @detail = ();
    } elsif (/^VM #(.*)$/) {
        push @detail, $1;
        diag($1);
    } elsif (/^VM time (\w+)=([\d.]*)$/) {
        $time{$1} = $2;
    } elsif (/^VM RESULT: (.*)$/) {
        $result = $1;
    }
}
like($result // '', qr/^PASS/, 'the VM reports PASS')
    or diag("last console lines:\n" . join "\n", @lines[($#lines > 40 ? $#lines - 40 : 0) .. $#lines]);

for my $t (sort keys %time) {
    note("kernel (qemu TCG): $t $time{$t}");
}
like($time{snapshot1000_ms} // '', qr/^[0-9]+(\.[0-9]+)?$/,
     'the 1000-peer snapshot was timed')
    and cmp_ok($time{snapshot1000_ms}, '>', 0, '  in a positive time');

done_testing();
