package Bench;

# Helpers shared by the comparisons in bench/cases/: a private temp dir,
# processes pinned to a CPU and stopped on exit, nginx instances, loadgen
# runs, rounds that alternate the variants, and the metric lines every case
# prints (the format is described in bench/README.md).

use strict;
use warnings;

use Exporter 'import';
use File::Temp qw(tempdir);
use IO::Socket::INET;
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(WNOHANG _exit);
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(setting workdir spawn stop nginx wait_ready loadgen
                    rounds metric compare_runs);

our $ROOT = do {
    require Cwd;
    require File::Basename;
    Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..');
};
our $BIN       = "$ROOT/build/bench";
our $CERTS     = $ENV{BENCH_CERT_DIR} // "$ROOT/build/test-certs";
our $NGINX     = $ENV{BENCH_NGINX} // '/usr/sbin/nginx';
our $MODULE    = "$ROOT/build/nginx/ngx_http_dstack_mesh_module.so";
our $STREAM    = '/usr/lib/nginx/modules/ngx_stream_module.so';

# The server under test gets one core, the load generator the other.
our $SERVER_CPU = $ENV{BENCH_SERVER_CPU} // 1;
our $CLIENT_CPU = $ENV{BENCH_CLIENT_CPU} // 0;

my %defaults = (rounds => 7, seconds => 5, warmup => 1, concurrency => 16,
                port => 28100);

# BENCH_ROUNDS, BENCH_SECONDS, BENCH_WARMUP, BENCH_CONCURRENCY, BENCH_PORT
sub setting {
    my ($name) = @_;
    my $v = $ENV{'BENCH_' . uc $name} // $defaults{$name};
    die "BENCH_\U$name\E: not a positive number: $v\n"
        unless $v =~ /^[0-9]+(\.[0-9]+)?$/ && $v > 0;
    return $v;
}

my @procs;      # { pid, name } of everything spawned, stopped in END
my $loadgen_pid;    # the load generator while it runs
my $dir;

# unix socket paths must stay short: a private directory under /tmp
sub workdir {
    $dir //= tempdir('/tmp/dstack-bench.XXXXXX', CLEANUP => !$ENV{BENCH_KEEP});
    return $dir;
}

# spawn(NAME, CPU, COMMAND...): runs COMMAND pinned to CPU, output in NAME.log
sub spawn {
    my ($name, $cpu, @cmd) = @_;
    my $log = workdir() . "/$name.log";

    my $pid = fork() // die "fork: $!\n";
    if ($pid == 0) {
        # the child must not run the parent's END blocks, whatever happens
        open(STDIN, '<', '/dev/null') && open(STDOUT, '>>', $log)
            && open(STDERR, '>&', \*STDOUT)
            && exec('taskset', '-c', $cpu, @cmd);
        print STDERR "$name: cannot start $cmd[0]: $!\n";
        _exit(127);
    }
    push @procs, { pid => $pid, name => $name };
    return $pid;
}

# stop(PID): SIGTERM to a process spawn() started, SIGKILL after 10 s
sub stop {
    my ($pid) = @_;
    kill('TERM', $pid);
    my $deadline = time() + 10;
    while (waitpid($pid, WNOHANG) == 0) {
        if (time() > $deadline) {
            kill('KILL', $pid);
            waitpid($pid, 0);
            last;
        }
        sleep(0.02);
    }
    @procs = grep { $_->{pid} != $pid } @procs;
}

sub log_tail {
    my ($name) = @_;
    my $log = "$dir/$name.log";
    open(my $fh, '<', $log) or return "(no $log)";
    my @lines = <$fh>;
    return join('', @lines > 20 ? @lines[-20 .. -1] : @lines);
}

# wait_ready(NAME, PID, ADDRESS...): until every "host:port" or "unix:path" accepts
sub wait_ready {
    my ($name, $pid, @addrs) = @_;

    for (1 .. 100) {
        if (waitpid($pid, WNOHANG) == $pid) {
            @procs = grep { $_->{pid} != $pid } @procs;
            die "$name exited (status $?):\n" . log_tail($name);
        }
        my $up = grep {
            my $s = /^unix:(.*)/
                ? IO::Socket::UNIX->new(Peer => $1)
                : IO::Socket::INET->new(PeerAddr => $_, Timeout => 1);
            $s && close($s);
        } @addrs;
        return if $up == @addrs;
        sleep(0.05);
    }
    die "$name: not listening on @addrs after 5 s:\n" . log_tail($name);
}

# nginx(name => N, cpu => C, http => TEXT, stream => TEXT, ready => [ADDR...])
# One nginx process (no master, one worker) with the mesh module, its own
# config, logs and temp paths in the work dir.  Returns the worker's pid.
sub nginx {
    my (%a) = @_;
    my $d = workdir();
    my $name = $a{name};
    my $load_stream = defined $a{stream} ? "load_module $STREAM;" : '';
    my $stream_block = defined $a{stream} ? "stream {\n$a{stream}\n}\n" : '';

    mkdir("$d/$name") or die "mkdir $d/$name: $!\n";
    my $conf = "$d/$name.conf";
    open(my $fh, '>', $conf) or die "$conf: $!\n";
    print $fh <<"CONF";
load_module $MODULE;
$load_stream
# one process: the pid we start is the worker whose CPU time is measured
daemon off;
master_process off;
worker_processes 1;
pid $d/$name/nginx.pid;
error_log $d/$name.log error;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $d/$name/client_body;
    proxy_temp_path $d/$name/proxy;
    fastcgi_temp_path $d/$name/fastcgi;
    uwsgi_temp_path $d/$name/uwsgi;
    scgi_temp_path $d/$name/scgi;

    # the load generator's connections live for the whole run
    keepalive_requests 1000000;
    keepalive_timeout 300s;

$a{http}
}
$stream_block
CONF
    close($fh) or die "$conf: $!\n";

    my $pid = spawn($name, $a{cpu}, $NGINX, '-p', "$d/$name/", '-e',
                    "$d/$name.log", '-c', $conf);
    wait_ready($name, $pid, @{ $a{ready} });
    return $pid;
}

# loadgen(addr => A, watch => [PID...], close => 1, cert => NAME,
#         headers => [...]): one run; the decoded JSON of loadgen
sub loadgen {
    my (%a) = @_;
    my @cmd = ('taskset', '-c', $CLIENT_CPU, "$BIN/loadgen",
               '--addr', $a{addr},
               '--concurrency', setting('concurrency'),
               '--duration', setting('seconds'),
               '--warmup', setting('warmup'));
    push @cmd, '--close' if $a{close};
    push @cmd, '--cert', "$CERTS/$a{cert}.crt", '--key', "$CERTS/$a{cert}.key"
        if $a{cert};
    push @cmd, map { ('--header', $_) } @{ $a{headers} // [] };
    push @cmd, map { ('--watch', $_) } @{ $a{watch} };

    $loadgen_pid = open(my $fh, '-|', @cmd) or die "loadgen: $!\n";
    my $out = do { local $/; <$fh> };
    close($fh);
    undef $loadgen_pid;
    my $r = eval { decode_json($out) }
        or die "loadgen against $a{addr} failed (status $?): $out\n";
    die "loadgen against $a{addr}: $r->{errors} errors, $r->{non2xx} non-2xx "
        . "responses\n" if $r->{errors} || $r->{non2xx};
    return $r;
}

# rounds([VARIANT...], sub { my ($variant, $round) = @_; ... }): runs every
# variant once per round, in reverse order every other round so no variant
# always runs first; { variant => [result of round 1, round 2, ...] }
sub rounds {
    my ($variants, $run) = @_;
    my $n = setting('rounds');
    my %res;

    for my $round (1 .. $n) {
        my @order = $round % 2 ? @$variants : reverse @$variants;
        for my $v (@order) {
            my $r = $run->($v, $round);
            push @{ $res{$v} }, $r;
            printf STDERR "  round %d/%d %-8s %8.0f req/s  %8.2f us/req  p99 %6d us\n",
                $round, $n, $v, $r->{rps}, $r->{cpu_us_per_req}, $r->{p99_us};
        }
    }
    return \%res;
}

# quantile(Q, SORTED...): linear interpolation between closest ranks
sub quantile {
    my ($q, @v) = @_;
    my $pos = $q * $#v;
    my $i = POSIX::floor($pos);
    return $i >= $#v ? $v[-1] : $v[$i] + ($pos - $i) * ($v[$i + 1] - $v[$i]);
}

sub median {
    return quantile(0.5, sort { $a <=> $b } @_);
}

# four significant digits, as a JSON number
sub sig {
    my ($x) = @_;
    return $x if $x == 0;
    my $digits = 3 - POSIX::floor(log(abs $x) / log(10));
    $digits = 0 if $digits < 0;
    return 0 + sprintf('%.*f', $digits, $x);
}

my $json = JSON::PP->new->canonical;

# metric(name, unit, baseline => [per round], ours => [per round],
#        higher_is_better => 0|1, goal => G|undef, goal_of => 'ratio'|'ours')
# Prints one metric line.  ratio > 1 means ours is better: ours/baseline
# when higher is better, baseline/ours otherwise; it is the median of the
# per-round ratios, spread their interquartile range, range their
# [min, max].  baseline and ours are the medians of the per-round values.
sub metric {
    my (%m) = @_;
    my @base = @{ $m{baseline} };
    my @ours = @{ $m{ours} };
    my @ratios = map {
        $m{higher_is_better} ? $ours[$_] / $base[$_] : $base[$_] / $ours[$_]
    } 0 .. $#base;
    my @sorted = sort { $a <=> $b } @ratios;

    print $json->encode({
        name             => $m{name},
        unit             => $m{unit},
        baseline         => sig(median(@base)),
        ours             => sig(median(@ours)),
        ratio            => sig(median(@ratios)),
        spread           => [sig(quantile(0.25, @sorted)), sig(quantile(0.75, @sorted))],
        range            => [sig($sorted[0]), sig($sorted[-1])],
        goal             => $m{goal},
        goal_of          => $m{goal_of} // 'ratio',
        higher_is_better => $m{higher_is_better} ? JSON::PP::true : JSON::PP::false,
        rounds           => scalar @ratios,
    }), "\n";
}

# compare_runs(name => PREFIX, baseline => [loadgen results], ours => [...],
#              goal => G, cpu => 'server'|'caller'): the four standard metrics
sub compare_runs {
    my (%a) = @_;
    my @rows = (
        ["$a{cpu} CPU per request", 'us/req', 'cpu_us_per_req', 0, $a{goal}],
        ['throughput',              'req/s',  'rps',            1, undef],
        ['p50 latency',             'us',     'p50_us',         0, undef],
        ['p99 latency',             'us',     'p99_us',         0, undef],
    );
    for my $row (@rows) {
        my ($what, $unit, $field, $higher, $goal) = @$row;
        metric(name => "$a{name}: $what", unit => $unit,
               baseline => [map { $_->{$field} } @{ $a{baseline} }],
               ours => [map { $_->{$field} } @{ $a{ours} }],
               higher_is_better => $higher, goal => $goal);
    }
}

# Stops everything spawned, then File::Temp removes the work dir.
END {
    my $status = $?;
    kill('TERM', $loadgen_pid) if $loadgen_pid;
    kill('TERM', map { $_->{pid} } @procs) if @procs;
    for my $p (@procs) {
        my $deadline = time() + 5;
        while (waitpid($p->{pid}, WNOHANG) == 0) {
            if (time() > $deadline) {
                kill('KILL', $p->{pid});
                waitpid($p->{pid}, 0);
                last;
            }
            sleep(0.02);
        }
    }
    $? = $status;
}

# an interrupted run still stops its servers (END runs on exit)
$SIG{INT} = $SIG{TERM} = $SIG{HUP} = sub { exit(130) };

1;
