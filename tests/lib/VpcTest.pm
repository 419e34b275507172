# Helpers of the tests that drive tests/vpc/vpc.sh: commands in a CVM's
# namespace, its VPN address, waiting for a condition.  The namespaces and
# interfaces follow DV_PREFIX as vpc.sh names them.
package VpcTest;

use strict;
use warnings;

use Exporter 'import';

our @EXPORT_OK = qw(out in vpn_address eventually);

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

sub vpn_address {
    my ($cvm) = @_;
    my $text = out($cvm, 'ip -4 -o addr show dev ' . wg_prefix() . "-$cvm");
    return $text =~ /inet (100\.[\d.]+)\// ? $1 : '';
}

# CHECK returns true within SECONDS (10 by default)
sub eventually {
    my ($check, $seconds) = @_;
    for (1 .. ($seconds // 10) * 5) {
        return 1 if $check->();
        select undef, undef, undef, 0.2;
    }
    return 0;
}

1;
