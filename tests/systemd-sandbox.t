# The packaged node and hub units (systemd/), run with the sandbox their
# unit files ask for: the capability bounding set (setpriv) and
# ProtectSystem=strict with its ReadWritePaths (a mount namespace in which
# /etc is read-only, with writable copies of /etc/hosts and
# /etc/resolv.conf bound over the originals, as under `ip netns exec`,
# and left writable only where ReadWritePaths names them).  With the
# shipped configuration (names = dns) each daemon must bind its DNS server
# on 127.0.0.153:53 and point resolv.conf at it, then put it back on stop.
#
# systemd-analyze verify (tests/image/deb.t) checks the units' syntax; this
# checks that what they allow is what the daemon needs.
#
# Run as root: prove tests/systemd-sandbox.t

use strict;
use warnings;

use File::Temp qw(tempdir);
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep);

use lib 'tests/lib';
use DstackTest qw(eventually slurp write_file);

plan skip_all => 'needs root' if $>;
for my $tool (qw(unshare setpriv dig)) {
    plan skip_all => "needs $tool (make deps)" if system("command -v $tool >/dev/null");
}
my $bin = $ENV{DSTACK_BIN} // 'build/bin';

# a unit's sandbox: capabilities (setpriv's form) and writable paths
sub sandbox_of {
    my ($unit) = @_;
    my $text = slurp($unit) or BAIL_OUT("$unit: $!");
    my ($caps) = $text =~ /^CapabilityBoundingSet=(.*)$/m;
    my ($rw) = $text =~ /^ReadWritePaths=(.*)$/m;
    like($text, qr/^ProtectSystem=strict$/m, "$unit: ProtectSystem=strict");
    return (join(',', '-all', map { '+' . lc(s/^CAP_//r) } split ' ', $caps // ''),
            [map { s/^-//r } split ' ', $rw // '']);
}

for my $role (qw(node hub)) {
    my $unit = "systemd/dstack-ctld-$role.service";
    my ($caps, $rw) = sandbox_of($unit);
    my $T = tempdir("sandbox-$role-XXXXXX", TMPDIR => 1, CLEANUP => 1);
    my $resolv = "nameserver 192.0.2.53\n";
    write_file("$T/resolv.conf", $resolv);
    write_file("$T/hosts", "127.0.0.1 localhost\n");
    mkdir "$T/state";

    # the files under /etc that the daemon writes, read-only unless the
    # unit's ReadWritePaths names them
    my $binds = '';
    for my $f (qw(resolv.conf hosts)) {
        my $ro = (grep { $_ eq "/etc/$f" } @$rw) ? '' : "mount -o remount,bind,ro /etc/$f\n";
        $binds .= "mount --bind $T/$f /etc/$f\n$ro";
    }
    my $conf = $role eq 'hub' ? 'conf/dstack-ctld.conf' : 'conf/dstack-ctld-node.conf';
    my @args = $role eq 'hub'
        ? ('--hub', '--data-dir', "$T/state")
        : ('--state-dir', "$T/state", '--agent-socket', "$T/none.sock");
    my $script = <<"SH";
set -e
ip link set lo up
mount --make-rprivate /
mount --bind /etc /etc
mount -o remount,bind,ro /etc
$binds
exec setpriv --bounding-set $caps --inh-caps -all -- \\
    $bin/dstack-ctld node --config $conf @args \\
    --server-url http://127.0.0.1:9 --interface sbx-$role --log-level debug
SH
    write_file("$T/run.sh", $script);

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', "$T/log" or die;
        open STDERR, '>&', \*STDOUT or die;
        exec('unshare', '--mount', '--net', 'bash', "$T/run.sh") or exit 127;
    }
    my $alive = sub { waitpid($pid, WNOHANG) == 0 };
    ok(eventually(sub { slurp("$T/resolv.conf") =~ /^nameserver 127\.0\.0\.153$/m }, 10)
       && $alive->(),
       "$role under its unit's sandbox ($caps): resolv.conf points at its DNS server")
        or diag(slurp("$T/log"));
    my $ns = "/proc/$pid/ns/net";
    my $dig = qx{nsenter --net=$ns dig +time=2 +tries=1 \@127.0.0.153 n1.dstack.internal 2>&1};
    like($dig, qr/status: (?:SERVFAIL|NXDOMAIN|NOERROR)/,
         "  and it answers on 127.0.0.153:53") or diag($dig);
    ok($alive->(), '  the daemon runs on') or diag(slurp("$T/log"));
    kill 'TERM', $pid;
    waitpid $pid, 0;
    is($? >> 8, 0, '  SIGTERM: exit 0');
    is(slurp("$T/resolv.conf"), $resolv, '  resolv.conf put back') or diag(slurp("$T/log"));
    system("ip link del sbx-$role 2>/dev/null");
}

done_testing();
