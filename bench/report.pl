#!/usr/bin/perl
#
# report.pl METRICS.jsonl RESULTS.md results.json
#
# Collects the metric lines the cases printed (format in README.md), prints
# the table, writes it with a description of the machine to RESULTS.md and
# the metrics to results.json.  Exits 1 when a goal is not met.

use strict;
use warnings;

use JSON::PP;
use POSIX qw(strftime);

@ARGV == 3 or die "usage: $0 METRICS.jsonl RESULTS.md results.json\n";
my ($in, $md_path, $json_path) = @ARGV;

my @metrics;
open(my $fh, '<', $in) or die "$in: $!\n";
while (my $line = <$fh>) {
    next unless $line =~ /\S/;
    my $m = eval { decode_json($line) } or die "$in:$.: not a metric line: $line";
    push @metrics, $m;
}
close($fh);

sub command {
    my $out = `@_ 2>&1`;
    chomp $out;
    return $out;
}

my ($cpu) = command('cat /proc/cpuinfo') =~ /^model name\s*:\s*(.*)$/m;
my %machine = (
    nproc   => command('nproc'),
    cpu     => $cpu // 'unknown',
    kernel  => command('uname -sr'),
    nginx   => command("$ENV{BENCH_NGINX} -v") =~ s{^nginx version: nginx/}{}r,
    openssl => command('openssl version'),
    date    => strftime('%Y-%m-%d %H:%M:%S UTC', gmtime),
);

# "met" when the goal is reached: by the ratio, or for goal_of "ours" by our value
sub verdict {
    my ($m) = @_;
    return '' unless defined $m->{goal};
    my $v = ($m->{goal_of} // 'ratio') eq 'ours' ? $m->{ours} : $m->{ratio};
    return $v >= $m->{goal} ? 'yes' : 'NO';
}

sub goal_text {
    my ($m) = @_;
    return '' unless defined $m->{goal};
    return ($m->{goal_of} // 'ratio') eq 'ours'
        ? ">= $m->{goal} $m->{unit}" : ">= $m->{goal}x";
}

my @head = ('metric', 'unit', 'baseline', 'ours', 'ratio', 'spread', 'range',
            'goal', 'met');
my @rows = map {
    [$_->{name}, $_->{unit}, $_->{baseline}, $_->{ours}, $_->{ratio},
     "$_->{spread}[0]-$_->{spread}[1]",
     $_->{range} ? "$_->{range}[0]-$_->{range}[1]" : '',
     goal_text($_), verdict($_)]
} @metrics;
my %left = map { $_ => 1 } 0, 1, 5, 6, 7;

# the plain-text table on stdout
my @width = map { my $i = $_; (sort { $b <=> $a } map { length $_->[$i] } \@head, @rows)[0] } 0 .. $#head;
for my $r (\@head, @rows) {
    print join('  ', map {
        sprintf($left{$_} ? '%-*s' : '%*s', $width[$_], $r->[$_])
    } 0 .. $#$r), "\n";
}

my @missed = map { $_->{name} } grep { verdict($_) eq 'NO' } @metrics;
my $goals = grep { defined $_->{goal} } @metrics;
printf "goals: %d of %d met%s\n", $goals - @missed, $goals,
    @missed ? '; not met: ' . join('; ', @missed) : '';

my $settings = join(', ', map { "$_=" . ($ENV{$_} // '?') }
    qw(BENCH_ROUNDS BENCH_SECONDS BENCH_WARMUP BENCH_CONCURRENCY),
    sort grep { /^BENCH_(CTLD|NODE)_/ } keys %ENV);

open(my $md, '>', $md_path) or die "$md_path: $!\n";
print $md <<"MD";
# Benchmark results

Written by `make bench` (bench/run); see bench/README.md for what each
comparison runs and how it is measured.

- date: $machine{date}
- machine: $machine{nproc} CPUs, $machine{cpu}, $machine{kernel}
- nginx $machine{nginx}; $machine{openssl}
- settings: $settings

`ratio` compares ours with the baseline so that above 1 is better for ours
(ours/baseline for throughput and reuse, baseline/ours for CPU time and
latency); it is the median of the per-round ratios, `spread` their
interquartile range and `range` their min-max.  `baseline` and `ours` are
the medians of the per-round values.  The CPU figures are utime+stime of the
server processes per request (per poller for the dstack-ctld fan-out).

| @{[ join(' | ', @head) ]} |
| @{[ join(' | ', map { $left{$_} ? '---' : '---:' } 0 .. $#head) ]} |
MD
print $md '| ', join(' | ', @$_), " |\n" for @rows;
close($md) or die "$md_path: $!\n";

open(my $js, '>', $json_path) or die "$json_path: $!\n";
print $js JSON::PP->new->canonical->pretty->encode({
    machine => \%machine,
    metrics => \@metrics,
});
close($js) or die "$json_path: $!\n";

exit(@missed ? 1 : 0);
