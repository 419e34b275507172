# Helpers of the tests that drive tests/vpc/vpc.sh: commands in a CVM's
# namespace, its VPN address, waiting for a condition.  The namespaces and
# interfaces follow DV_PREFIX as vpc.sh names them.
package VpcTest;

use strict;
use warnings;

use Exporter 'import';

use lib 'tests/lib';
use DstackTest qw(eventually slurp);

our @EXPORT_OK = qw(out in vpn_address eventually wg_if public_key peers
                    handshake_with pid_of slurp);

my $vpc = 'tests/vpc/vpc.sh';

# what CMD prints (stdout and stderr) in CVM's namespace
sub out {
    my ($cvm, $cmd) = @_;
    return scalar qx{bash $vpc exec $cvm $cmd 2>&1};
}

# whether CMD succeeds in CVM's namespace
sub in {
    my ($cvm, $cmd) = @_;
    return system("bash $vpc exec $cvm $cmd >/dev/null 2>&1") == 0;
}

sub wg_prefix {
    my $p = $ENV{DV_PREFIX} // 'dv';
    return $p eq 'dv' ? ($ENV{DV_WG} // 'wg') : ($ENV{DV_WG} // "${p}wg");
}

# a CVM's WireGuard interface, as vpc.sh names it
sub wg_if { wg_prefix() . "-$_[0]" }

sub vpn_address {
    my ($cvm) = @_;
    my $text = out($cvm, 'ip -4 -o addr show dev ' . wg_if($cvm));
    return $text =~ /inet (100\.[\d.]+)\// ? $1 : '';
}

sub public_key {
    my ($cvm) = @_;
    my $key = out($cvm, 'wg show ' . wg_if($cvm) . ' public-key');
    chomp $key;
    return $key;
}

# public key => allowed IPs, from "wg show dump"
sub peers {
    my ($cvm) = @_;
    my @lines = split /\n/, out($cvm, 'wg show ' . wg_if($cvm) . ' dump');
    shift @lines;
    return { map { my @f = split /\t/; ($f[0] => $f[3]) } @lines };
}

# the latest handshake of CVM's interface (or IF) with PEER, 0 for none
sub handshake_with {
    my ($cvm, $peer, $if) = @_;
    for (split /\n/, out($cvm, 'wg show ' . ($if // wg_if($cvm)) . ' latest-handshakes')) {
        my ($key, $when) = split /\s+/;
        return $when if $key eq $peer && $when;
    }
    return 0;
}

# the pid vpc.sh recorded for a CVM's WHAT (default: its dstack-ctld), or 0
sub pid_of {
    my ($cvm, $what) = @_;
    my $pid = slurp("$ENV{DV_DIR}/$cvm/" . ($what // 'ctld') . '.pid');
    chomp $pid;
    return $pid || 0;
}

1;
