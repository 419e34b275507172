# `make demo` (tests/vpc/demo.sh): ONCE=1 tells the whole story and exits 0
# only if every step worked; the running mode stops and cleans up on SIGINT.
# Its own namespaces (dt-*) and state directory, so it can run next to
# tests/vpc.t and a user's `make demo`.

use strict;
use warnings;

use Test::More;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);

use lib 'tests/lib';
use DstackTest qw(slurp);

plan skip_all => 'needs root' if $>;
plan skip_all => 'needs /dev/net/tun' unless -c '/dev/net/tun';

$ENV{DV_PREFIX} = 'dt';
$ENV{DV_DIR} = '/tmp/dv-demo-test';
$ENV{DSTACK_BIN} //= 'build/bin';
my $demo = 'tests/vpc/demo.sh';

END { system 'DV_PREFIX=dt DV_DIR=/tmp/dv-demo-test bash tests/vpc/vpc.sh down >/dev/null 2>&1' }

sub leftovers { return grep { /^dt-/ } map { (split)[0] // () } qx{ip netns list} }

# --- ONCE=1

my $t0 = time;
my $out = qx{ONCE=1 bash $demo 2>&1};
my $status = $? >> 8;
my $took = time - $t0;
is($status, 0, sprintf('ONCE=1 exits 0 (%.0f s)', $took)) or diag($out);
cmp_ok($took, '<', 120, 'in under two minutes');
for my $re (qr/==> 2\. Node registration.*^\s+\d+\s+n1\s+100\./ms,
            qr/==> 3\. Addresses.*^\s+n2\s+dtwg-n2\s+100\.\d+\.\d+\.\d+\/10$/ms,
            qr/==> 4\. WireGuard.*interface: dtwg-n1.*allowed ips: 100\.128\.0\.0\/10/ms,
            qr/==> 5\. Discovery.*"count" : 2/ms,
            qr/^\s+n2 answers \/hello for aaaa000000000000000000000000000000000011/m,
            qr/==> 7\. Traffic over WireGuard.*3 received, 0% packet loss/ms,
            qr/^Every step worked/m) {
    like($out, $re, "the story shows $re");
}
is(() = $out =~ /^\s+ok  /mg, 7, 'seven steps, each ok');
unlike($out, qr/FAILED/, 'none failed');
is_deeply([leftovers()], [], 'the namespaces are gone');
ok(!-e '/tmp/dv-demo-test', 'and the state directory');

# --- ONCE=1 VPC_UDP=off: the same story with WireGuard over the relay

$out = qx{ONCE=1 VPC_UDP=off bash $demo 2>&1};
is($? >> 8, 0, 'ONCE=1 VPC_UDP=off exits 0') or diag($out);
like($out, qr/all UDP between the CVMs dropped/, 'UDP between the CVMs is dropped');
like($out, qr/ok  n1 and n2 reach the hub through the relay/, 'the nodes use the relay');
like($out, qr/dstack-ctld status .*transport relay/s, "the story shows n1's status: transport relay");
like($out, qr/3 received, 0% packet loss.*through the relay/s, 'the relay carries the ping');
is_deeply([leftovers()], [], 'the namespaces are gone');

# --- running until Ctrl-C

my $log = '/tmp/dv-demo-test.log';
my $pid = fork // die "fork: $!";
if (!$pid) {
    open STDOUT, '>', $log or die;
    open STDERR, '>&', \*STDOUT or die;
    exec 'bash', $demo;
}
my $ready = 0;
for (1 .. 600) {
    $ready = 1, last if slurp($log) =~ /Ctrl-C stops/;
    last if waitpid($pid, WNOHANG) == $pid;
    sleep 0.2;
}
ok($ready, 'without ONCE, the VPC stays up after the story') or diag(slurp($log));
ok(scalar(leftovers()), 'its namespaces are there');
kill 'INT', $pid;
my $st = 'timeout';
for (1 .. 300) {
    if (waitpid($pid, WNOHANG) == $pid) { $st = $? >> 8; last }
    sleep 0.2;
}
is($st, 0, 'Ctrl-C (SIGINT): exit 0');
is_deeply([leftovers()], [], 'and everything is torn down');
unlink $log;

done_testing();
