package Ctld;

# Helpers of the dstack-ctld comparisons (bench/cases/4*): a server on
# 127.0.0.1 pinned to the server core, ctldload runs pinned to the client
# core, nodes made in bulk (register + join), /metrics, RSS and CPU time
# from /proc.  See bench/README.md.

use strict;
use warnings;

use Exporter 'import';
use HTTP::Tiny;
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

use Bench qw(setting workdir spawn wait_ready);

our @EXPORT_OK = qw(ctld_server ctld_get metric_value wait_metric cpu_ns
                    rss_kib ctldload run_json write_lines read_lines wg_pub
                    make_nodes alternate knob http_once);

# DSTACK_BIN: the directory of dstack-ctld (as in the tests), so a build
# from elsewhere can be measured while the tree does not build
our $BIN = ($ENV{DSTACK_BIN} // "$Bench::ROOT/build/bin") . '/dstack-ctld';
our $LOAD = "$Bench::BIN/ctldload";
our $APP = 'be0c000000000000000000000000000000000001';

my $json = JSON::PP->new->canonical;

# ctld_server(name => N, port => P, args => [...]): a server with its own
# data dir in the work dir, listening on 127.0.0.1:P, pinned to the server
# core; { pid, port, addr, data, http }
sub ctld_server {
    my (%a) = @_;
    die "$BIN is missing: make ctld (or set DSTACK_BIN)\n" unless -x $BIN;
    my $data = workdir() . "/$a{name}.data";
    my $addr = "127.0.0.1:$a{port}";
    # one app makes every node of a case: quotas above the largest case
    my $pid = spawn($a{name}, $Bench::SERVER_CPU, $BIN, 'server',
                    '--listen', $addr, '--data-dir', $data,
                    '--log-level', 'warn', '--server-app-id', $APP,
                    '--max-keys-per-app', 1000000,
                    '--max-nodes-per-app', 1000000,
                    '--max-records-per-app', 1000000, @{ $a{args} // [] });
    wait_ready($a{name}, $pid, $addr);
    return { pid => $pid, port => $a{port}, addr => $addr, data => $data,
             name => $a{name},
             http => HTTP::Tiny->new(keep_alive => 1, timeout => 60) };
}

# ctld_get(SRV, PATH, HEADERS...): the HTTP::Tiny answer; dies unless 200
sub ctld_get {
    my ($srv, $path, %h) = @_;
    my $res = $srv->{http}->get("http://$srv->{addr}$path", { headers => \%h });
    die "GET $path: $res->{status} $res->{content}\n" unless $res->{status} == 200;
    return $res;
}

# http_once(SRV, METHOD, PATH, BODY, HEADERS...): (status, body) over a new
# connection, the request in one write with TCP_NODELAY (HTTP::Tiny writes
# head and body apart, and Nagle with delayed ACKs then adds 40 ms)
sub http_once {
    my ($srv, $method, $path, $body, %h) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => $srv->{addr}, Timeout => 10)
        or die "connect $srv->{addr}: $!\n";
    setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
    $body //= '';
    my $req = "$method $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . join('', map { "$_: $h{$_}\r\n" } sort keys %h)
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    defined(syswrite($s, $req)) or die "write: $!\n";
    my $answer = '';
    while (1) {
        my $n = sysread($s, my $buf, 65536);
        die "read: $!\n" unless defined $n;
        last if $n == 0;
        $answer .= $buf;
        if ($answer =~ /\r\n\r\n/ && $answer =~ /^content-length:\s*(\d+)/mi) {
            my $len = $1;
            last if length($answer) - index($answer, "\r\n\r\n") - 4 >= $len;
        }
    }
    close($s);
    my ($status) = $answer =~ m{^HTTP/1\.\d (\d{3})};
    my ($content) = $answer =~ /\r\n\r\n(.*)\z/s;
    return ($status // 0, $content // '');
}

# a number from /metrics (0 when missing)
sub metric_value {
    my ($srv, $name) = @_;
    my $text = ctld_get($srv, '/metrics')->{content};
    return $text =~ /^\Q$name\E (\S+)$/m ? $1 : 0;
}

# wait_metric(SRV, NAME, VALUE, SECONDS): until NAME >= VALUE
sub wait_metric {
    my ($srv, $name, $want, $secs) = @_;
    my $deadline = time() + $secs;
    my $v;
    while (($v = metric_value($srv, $name)) < $want) {
        die "$srv->{name}: $name is $v, not $want, after $secs s\n"
            if time() > $deadline;
        sleep(0.01);
    }
    return $v;
}

# run time of every thread of PID, in ns (utime + stime without 10 ms ticks)
sub cpu_ns {
    my ($pid) = @_;
    my $sum = 0;
    for my $f (glob("/proc/$pid/task/*/schedstat")) {
        open(my $fh, '<', $f) or next;
        my ($ns) = split ' ', scalar(<$fh>) // '';
        $sum += $ns // 0;
    }
    return $sum;
}

sub rss_kib {
    my ($pid) = @_;
    open(my $fh, '<', "/proc/$pid/status") or die "/proc/$pid/status: $!\n";
    while (<$fh>) {
        return $1 if /^VmRSS:\s+(\d+)/;
    }
    die "no VmRSS for $pid\n";
}

# knob(NAME, DEFAULT): BENCH_<NAME>, a positive number
sub knob {
    my ($name, $default) = @_;
    my $v = $ENV{'BENCH_' . uc $name} // $default;
    die "BENCH_\U$name\E: not a positive number: $v\n"
        unless $v =~ /^[0-9]+(\.[0-9]+)?$/ && $v > 0;
    return $v;
}

# run_json(COMMAND...): runs it, decodes the JSON it prints
sub run_json {
    my @cmd = @_;
    open(my $fh, '-|', @cmd) or die "$cmd[0]: $!\n";
    my $out = do { local $/; <$fh> };
    close($fh);
    my $r = eval { decode_json($out) }
        or die "@cmd[0 .. ($#cmd > 4 ? 4 : $#cmd)] failed (status $?)\n";
    return $r;
}

# ctldload(ARGS...): one run pinned to the client core, its JSON decoded
sub ctldload {
    return run_json('taskset', '-c', $Bench::CLIENT_CPU, $LOAD, @_);
}

sub write_lines {
    my ($path, @lines) = @_;
    open(my $fh, '>', $path) or die "$path: $!\n";
    print $fh map { "$_\n" } @lines;
    close($fh) or die "$path: $!\n";
}

sub read_lines {
    my ($path) = @_;
    open(my $fh, '<', $path) or die "$path: $!\n";
    chomp(my @l = <$fh>);
    return @l;
}

# a random X25519 public key as the server checks it: 32 bytes, base64
sub wg_pub {
    return encode_base64(join('', map { chr(int(rand(256))) } 1 .. 32), '');
}

# make_nodes(SRV, N, PREFIX): registers N instances, then joins them (64
# connections each, both durable writes).  { tokens => FILE, version => V,
# register => ctldload result, join => ..., batches => write batches of
# the joins }
sub make_nodes {
    my ($srv, $n, $prefix, %o) = @_;
    my $d = workdir();
    my $c = $o{concurrency} // 64;
    my $f = "$d/$srv->{name}.$prefix";
    my @hdr = ('--header', "x-dstack-app-id: $APP", '--watch', $srv->{pid});

    write_lines("$f.register",
        map { "GET /api/register?instance_id=$prefix$_&node_name=$prefix$_" } 1 .. $n);
    my $reg = ctldload('requests', '--addr', $srv->{addr}, '--concurrency', $c,
                       '--input', "$f.register", '--output', "$f.keys", @hdr);

    my @keys = map { decode_json($_)->{pre_auth_key} } read_lines("$f.keys");
    write_lines("$f.join", map {
        'POST /api/v1/join ' . $json->encode({
            pre_auth_key => $keys[$_], public_key => wg_pub(),
            endpoint => '192.0.2.' . ($_ % 250 + 1) . ':51820',
            with_peers => JSON::PP::false })
    } 0 .. $#keys);
    my $b0 = metric_value($srv, 'dstack_ctld_write_batches_total');
    my $join = ctldload('requests', '--addr', $srv->{addr}, '--concurrency', $c,
                        '--input', "$f.join", '--output', "$f.joined", @hdr);
    my $b1 = metric_value($srv, 'dstack_ctld_write_batches_total');

    my ($version, @tokens) = (0);
    for (read_lines("$f.joined")) {
        my $j = decode_json($_);
        push @tokens, $j->{node_token};
        $version = $j->{version} if $j->{version} > $version;
    }
    write_lines("$f.tokens", @tokens);
    return { tokens => "$f.tokens", version => $version, register => $reg,
             join => $join, batches => $b1 - $b0 };
}

# alternate([VARIANT...], sub { my ($variant, $round) = @_ }): every variant
# once per round, the order reversed every other round; BENCH_ROUNDS rounds
sub alternate {
    my ($variants, $run) = @_;
    my $n = setting('rounds');
    for my $round (1 .. $n) {
        for my $v ($round % 2 ? @$variants : reverse @$variants) {
            $run->($v, $round);
        }
    }
}

1;
