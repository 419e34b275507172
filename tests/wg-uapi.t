#!/usr/bin/perl
#
# dstack-ctld's WireGuard layer through its UAPI backend, driven by wg-apply:
# two network namespaces joined by a veth pair, a wireguard-go in each
# (started by wg-apply), checked with wg(8) inside each namespace: device
# key and port, single-peer deltas that touch nothing else, a snapshot that
# keeps the sessions of the peers it keeps, ping through the tunnel, 1000
# peers in one snapshot, input refused before anything is applied, and
# malformed UAPI replies from a fake implementation.
#
# Run as root from the repository root: prove tests/wg-uapi.t

use strict;
use warnings;

use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use MIME::Base64 qw(encode_base64);
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep);

use lib 'tests/lib';
use DstackTest qw(slurp);

my $APPLY = ($ENV{DSTACK_BIN} ? "$ENV{DSTACK_BIN}/../tests" : 'build/tests')
            . '/wg-apply';

plan skip_all => 'needs root (network namespaces)' if $> != 0;
plan skip_all => '/dev/net/tun is missing' unless -c '/dev/net/tun';

BAIL_OUT("$APPLY is missing: run make first") unless -x $APPLY;
for my $tool (qw(ip wg wireguard-go ping)) {
    BAIL_OUT("$tool is missing: run make deps")
        if system("command -v $tool >/dev/null");
}

my $TAG = $$ % 100000;
my %NS = (a => "dvwa$TAG", b => "dvwb$TAG");
my %IF = (a => "wgua$TAG", b => "wgub$TAG");
my %UNDER = (a => '192.168.237.1', b => '192.168.237.2');
my %VPN = (a => '100.128.0.1', b => '100.128.0.2');
my %PORT = (a => 51820, b => 51821);
my $FAKE_IF = "wguf$TAG";
my $FAKE_SOCK = "/var/run/wireguard/$FAKE_IF.sock";
my $DIR = tempdir(CLEANUP => 1);
my @fake_servers;

# Everything goes, also after a failure or an interrupt: what runs in our
# namespaces, then the namespaces (and with them the veth pair), then the
# fake socket.
$SIG{INT} = $SIG{TERM} = sub { exit 1 };
END {
    my $status = $?;
    for my $ns (values %NS) {
        my @pids = split ' ', `ip netns pids $ns 2>/dev/null`;
        kill 'TERM', @pids if @pids;
        for (1 .. 20) {
            last unless grep { kill 0, $_ } @pids;
            sleep 0.1;
        }
        kill 'KILL', grep { kill 0, $_ } @pids;
        system("ip netns del $ns 2>/dev/null");
    }
    for my $pid (@fake_servers) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    unlink $FAKE_SOCK, map { "/var/run/wireguard/$_.sock" } values %IF;
    $? = $status;
}

sub write_file {
    my ($path, $data) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print $fh $data;
    close $fh or die "$path: $!";
}


# runs @cmd with $in on stdin: (exit status, stdout, stderr)
sub run {
    my ($in, @cmd) = @_;
    write_file("$DIR/stdin", $in // '');
    my $pid = open(my $out, '-|') // die "fork: $!";
    if ($pid == 0) {
        # _exit: a child must not run the END block below
        open STDIN, '<', "$DIR/stdin" or POSIX::_exit(127);
        open STDERR, '>', "$DIR/stderr" or POSIX::_exit(127);
        exec @cmd or POSIX::_exit(127);
    }
    local $/;
    my $stdout = <$out> // '';
    close $out;
    return ($?, $stdout, slurp("$DIR/stderr"));
}

sub in_ns {
    my ($side, @cmd) = @_;
    return run(undef, 'ip', 'netns', 'exec', $NS{$side}, @cmd);
}

sub sh {
    my ($cmd) = @_;
    system($cmd) == 0 or die "failed: $cmd\n";
}

# wg-apply in a namespace: (exit status, stdout, stderr)
sub apply {
    my ($side, $in, @opts) = @_;
    return run($in, 'ip', 'netns', 'exec', $NS{$side}, $APPLY,
               '--if', $IF{$side}, @opts);
}

sub key_pair {
    my ($name) = @_;
    my $priv = `wg genkey`;
    chomp $priv;
    write_file("$DIR/$name.key", "$priv\n");
    my $pub = `echo '$priv' | wg pubkey`;
    chomp $pub;
    return ($priv, $pub);
}

sub random_key {
    return encode_base64(join('', map { chr int rand 256 } 1 .. 32), '');
}

# `wg show IF dump` in a namespace, as a hash
sub wg_show {
    my ($side) = @_;
    my ($st, $out) = in_ns($side, 'wg', 'show', $IF{$side}, 'dump');
    return undef if $st != 0;
    my ($dev, @peers) = split /\n/, $out;
    my %w;
    @w{qw(private_key public_key port fwmark)} = split /\t/, $dev;
    for (@peers) {
        my %p;
        @p{qw(key psk endpoint allowed handshake rx tx keepalive)} = split /\t/;
        $p{allowed} = join ',', sort split /,/, $p{allowed};
        $w{peers}{$p{key}} = \%p;
    }
    $w{peers} //= {};
    return \%w;
}

# what a peer is configured to be, without its counters
sub config_of {
    my ($p) = @_;
    return undef unless $p;
    return "$p->{endpoint} $p->{allowed} $p->{keepalive}";
}

# the whole device's configuration, without counters
sub device_config {
    my ($w) = @_;
    return join "\n", "$w->{private_key} $w->{port}",
        map { "$_ " . config_of($w->{peers}{$_}) } sort keys %{$w->{peers}};
}

sub ping_ok {
    my ($from, $to) = @_;
    for (1 .. 5) {
        my ($st) = in_ns($from, 'ping', '-c', '1', '-W', '2', $to);
        return 1 if $st == 0;
    }
    return 0;
}

# two namespaces, a veth pair between them
for my $ns (values %NS) {
    if (system("ip netns add $ns 2>/dev/null") != 0) {
        plan skip_all => 'cannot create network namespaces';
    }
}
sh("ip link add dvva$TAG netns $NS{a} type veth peer name dvvb$TAG netns $NS{b}");
for my $side (qw(a b)) {
    my $ns = $NS{$side};
    sh("ip -n $ns link set lo up");
    sh("ip -n $ns address add $UNDER{$side}/24 dev dvv$side$TAG");
    sh("ip -n $ns link set dvv$side$TAG up");
}

# on a kernel with WireGuard, auto would rightly pick it: stay on uapi then
my $kernel_wg = system("ip -n $NS{a} link add dvwprobe type wireguard"
                       . " 2>/dev/null") == 0;
system("ip -n $NS{a} link del dvwprobe 2>/dev/null") if $kernel_wg;
my %BACKEND = (a => 'uapi', b => $kernel_wg ? 'uapi' : 'auto');

my %KEY;
my %PUB;
for my $side (qw(a b)) {
    ($KEY{$side}, $PUB{$side}) = key_pair($side);
}

# --- the device: key, port, address, route, MTU --------------------------

for my $side (qw(a b)) {
    my ($st, $out, $err) = apply($side, "dump\n",
        '--backend', $BACKEND{$side}, '--start-userspace',
        '--private-key-file', "$DIR/$side.key", '--port', $PORT{$side},
        '--address', "$VPN{$side}/10");
    is($st, 0, "$side: wg-apply --backend $BACKEND{$side} brings up $IF{$side}")
        or diag($err);
    like($out, qr/^interface \Q$IF{$side}\E backend uapi$/m,
         "$side: $BACKEND{$side} runs on the uapi backend");
    like($out, qr/^peers 0$/m, "$side: no peers yet");

    my $w = wg_show($side);
    is($w->{private_key}, $KEY{$side}, "$side: wg show has the private key");
    is($w->{public_key}, $PUB{$side}, "$side: ... and so its public key");
    is($w->{port}, $PORT{$side}, "$side: ... and the listen port");

    my (undef, $addr) = in_ns($side, 'ip', '-o', 'address', 'show', $IF{$side});
    like($addr, qr{inet \Q$VPN{$side}\E/10 }, "$side: address $VPN{$side}/10");
    my (undef, $route) = in_ns($side, 'ip', 'route', 'show', '100.128.0.0/10');
    like($route, qr{dev \Q$IF{$side}\E proto kernel .*src \Q$VPN{$side}\E},
         "$side: the kernel's prefix route for 100.128.0.0/10");
    my (undef, $link) = in_ns($side, 'ip', '-o', 'link', 'show', $IF{$side});
    like($link, qr/\bmtu 1420\b.*\bUP\b|\bUP\b.*\bmtu 1420\b/,
         "$side: up with MTU 1420");
}

# running it again changes nothing and starts nothing
{
    my ($st, undef, $err) = apply('a', '', '--backend', 'uapi',
        '--start-userspace', '--private-key-file', "$DIR/a.key",
        '--port', $PORT{a}, '--address', "$VPN{a}/10");
    is($st, 0, 'a: applying the same device settings again is fine')
        or diag($err);
    my @go = grep { m{wireguard-go \Q$IF{a}\E$} }
             split /\n/, `ps -eo args`;
    is(scalar @go, 1, 'a: still one wireguard-go');
}

# --- single-peer deltas --------------------------------------------------

my ($p1, $p2, $p3) = (random_key(), random_key(), random_key());
{
    my ($st, $out, $err) = apply('a', <<"EOF");
peer $PUB{b} endpoint=$UNDER{b}:$PORT{b} allowed=$VPN{b}/32
peer $p1 endpoint=192.168.237.50:51820 allowed=100.128.1.1/32 keepalive=25
peer $p2 allowed=100.128.1.2/32,fd00:1::/64
EOF
    is($st, 0, 'a: three peers added') or diag($err);
    is(() = $out =~ /^applied peer in [\d.]+ ms$/mg, 3, 'a: one line each');
    ($st, undef, $err) = apply('b', <<"EOF");
peer $PUB{a} endpoint=$UNDER{a}:$PORT{a} allowed=$VPN{a}/32
EOF
    is($st, 0, 'b: peer a added') or diag($err);
}

my $w = wg_show('a');
is(scalar keys %{$w->{peers}}, 3, 'a: wg show lists three peers');
is(config_of($w->{peers}{$PUB{b}}), "$UNDER{b}:$PORT{b} $VPN{b}/32 off",
   'a: peer b with its endpoint and allowed IP');
is(config_of($w->{peers}{$p1}), '192.168.237.50:51820 100.128.1.1/32 25',
   'a: peer 1 with endpoint, allowed IP and keepalive');
is(config_of($w->{peers}{$p2}), '(none) 100.128.1.2/32,fd00:1::/64 off',
   'a: peer 2 without endpoint, with two allowed IPs');

ok(ping_ok('a', $VPN{b}), "ping $VPN{a} -> $VPN{b} through the tunnel");
ok(ping_ok('b', $VPN{a}), "ping $VPN{b} -> $VPN{a} through the tunnel");
my $hs_a = wg_show('a')->{peers}{$PUB{b}}{handshake};
my $hs_b = wg_show('b')->{peers}{$PUB{a}}{handshake};
ok($hs_a > 0 && $hs_b > 0, 'a handshake shows on both sides')
    or diag("handshakes: a=$hs_a b=$hs_b");

{
    my $before = wg_show('a');
    my ($st, undef, $err) = apply('a', <<"EOF");
peer $p1 endpoint=192.168.237.51:51822 allowed=100.128.1.11/32,100.128.2.0/24
EOF
    is($st, 0, 'a: peer 1 updated') or diag($err);
    my $after = wg_show('a');
    is(config_of($after->{peers}{$p1}),
       '192.168.237.51:51822 100.128.1.11/32,100.128.2.0/24 off',
       'a: peer 1 has the new endpoint and exactly the new allowed IPs');
    for ([$PUB{b}, 'peer b'], [$p2, 'peer 2']) {
        is(config_of($after->{peers}{$_->[0]}),
           config_of($before->{peers}{$_->[0]}), "a: $_->[1] untouched");
    }
    is($after->{peers}{$PUB{b}}{handshake}, $hs_a,
       'a: peer b keeps its session');

    ($st, undef, $err) = apply('a', "remove $p2\n");
    is($st, 0, 'a: peer 2 removed') or diag($err);
    my $removed = wg_show('a');
    ok(!$removed->{peers}{$p2}, 'a: peer 2 is gone');
    is(scalar keys %{$removed->{peers}}, 2, 'a: two peers left');
    for ([$PUB{b}, 'peer b'], [$p1, 'peer 1']) {
        is(config_of($removed->{peers}{$_->[0]}),
           config_of($after->{peers}{$_->[0]}), "a: $_->[1] untouched");
    }

    ($st, undef, $err) = apply('a', "remove $p2\n");
    is($st, 0, 'a: removing a peer that is not there is fine') or diag($err);
}

# --- snapshots -----------------------------------------------------------

{
    my ($st, $out, $err) = apply('a', <<"EOF");
snapshot
peer $PUB{b} endpoint=$UNDER{b}:$PORT{b} allowed=$VPN{b}/32
peer $p3 allowed=100.128.1.3/32
end
EOF
    is($st, 0, 'a: snapshot of two peers') or diag($err);
    like($out, qr/^applied snapshot of 2 peers in [\d.]+ ms$/m, 'a: timed');
    my $snap = wg_show('a');
    is_deeply([sort keys %{$snap->{peers}}], [sort $PUB{b}, $p3],
              'a: exactly the snapshot\'s peers');
    is(config_of($snap->{peers}{$p3}), '(none) 100.128.1.3/32 off',
       'a: the new peer as given');
    is($snap->{peers}{$PUB{b}}{handshake}, $hs_a,
       'a: peer b, kept by the snapshot, keeps its session');
    ok(ping_ok('a', $VPN{b}), 'ping still goes through');
}

my ($t1000, $tdelta);
{
    my @peers = ("peer $PUB{b} endpoint=$UNDER{b}:$PORT{b} allowed=$VPN{b}/32");
    my %want = ($PUB{b} => "$UNDER{b}:$PORT{b} $VPN{b}/32 off");
    for my $i (1 .. 999) {
        my $k = random_key();
        my $ip = sprintf '100.129.%d.%d/32', $i >> 8, $i & 255;
        my $ep = sprintf '192.168.237.%d:%d', 100 + $i % 100, 40000 + $i;
        push @peers, "peer $k endpoint=$ep allowed=$ip keepalive=0";
        $want{$k} = "$ep $ip off";
    }
    my ($st, $out, $err) = apply('a', join("\n", 'snapshot', @peers, 'end',
                                           'dump', ''));
    is($st, 0, 'a: snapshot of 1000 peers') or diag($err);
    ($t1000) = $out =~ /^applied snapshot of 1000 peers in ([\d.]+) ms$/m;
    ok(defined $t1000, 'a: timed');
    note("uapi: 1000-peer snapshot applied in $t1000 ms") if defined $t1000;
    like($out, qr/^peers 1000$/m, 'a: wg-apply reads back 1000 peers');

    my $big = wg_show('a');
    is(scalar keys %{$big->{peers}}, 1000, 'a: wg show lists 1000 peers');
    my @wrong = grep { config_of($big->{peers}{$_}) ne $want{$_} } keys %want;
    is(scalar @wrong, 0, 'a: each with its endpoint and allowed IP');
    is($big->{peers}{$PUB{b}}{handshake}, $hs_a, 'a: peer b kept its session');

    my $k = random_key();
    ($st, $out, $err) = apply('a', "peer $k allowed=100.130.0.1/32\n");
    is($st, 0, 'a: one more peer among 1000') or diag($err);
    ($tdelta) = $out =~ /^applied peer in ([\d.]+) ms$/m;
    note("uapi: one delta among 1000 peers applied in $tdelta ms")
        if defined $tdelta;
    is(scalar keys %{wg_show('a')->{peers}}, 1001, 'a: 1001 peers');
    ok(ping_ok('a', $VPN{b}), 'ping still goes through');
}

# --- input refused before anything is applied ----------------------------

{
    my $before = wg_show('a');
    my (undef, $addr_before) = in_ns('a', 'ip', '-o', 'address', 'show',
                                     $IF{a});
    my $new = random_key();
    my $ok_line = "peer $new allowed=100.131.0.1/32";
    my @bad = (
        ["$ok_line\npeer notbase64 allowed=100.128.3.1/32\n",
         qr/line 2: bad base64 public key/, 'a bad base64 key'],
        ["$ok_line\npeer " . substr($new, 0, 43) . " allowed=100.128.3.1/32\n",
         qr/bad base64 public key/, 'a key one character short'],
        ["$ok_line\npeer " . substr($new, 0, 42) . "B= allowed=10.0.0.0/8\n",
         qr/bad base64 public key/, 'a key with stray bits'],
        ["$ok_line\npeer $p3 allowed=100.128.3.0/33\n",
         qr/bad CIDR '100.128.3.0\/33'/, 'a /33'],
        ["$ok_line\npeer $p3 allowed=100.128.3/24\n",
         qr/bad CIDR/, 'a short address'],
        ["$ok_line\npeer $p3 allowed=100.128.3.1/24\n",
         qr/'100\.128\.3\.1\/24' has host bits set/, 'host bits set'],
        ["$ok_line\npeer $p3 allowed=100.128.3.1/+8\n",
         qr/bad CIDR/, 'a signed prefix length'],
        ["$ok_line\npeer $p3 endpoint=192.168.237.2 allowed=100.128.3.1/32\n",
         qr/bad endpoint/, 'an endpoint without port'],
        ["$ok_line\npeer $p3 endpoint=192.168.237.2:0\n",
         qr/bad endpoint/, 'port 0'],
        ["$ok_line\npeer $p3 keepalive=65536\n", qr/bad keepalive/,
         'a keepalive too large'],
        ["$ok_line\npeer $p3 colour=blue\n", qr/unexpected 'colour=blue'/,
         'an unknown option'],
        ["$ok_line\nfrobnicate\n", qr/unknown command 'frobnicate'/,
         'an unknown command'],
        ["$ok_line\nsnapshot\npeer $p3\n", qr/snapshot without "end"/,
         'a snapshot without end'],
        ["$ok_line\n" . ('x' x 5000) . "\n", qr/line 2: too long/,
         'a line too long'],
    );
    for my $case (@bad) {
        my ($in, $msg, $name) = @$case;
        my ($st, $out, $err) = apply('a', $in);
        is($st >> 8, 2, "refused: $name");
        like($err, qr/$msg.*\(nothing applied\)/, "  with a message")
            or diag($err);
        is($out, '', '  before opening anything');
    }
    my @bad_opts = (
        ['0.0.0.0/10', qr/is in 0\.0\.0\.0\/8/],
        ['127.0.0.1/8', qr/loopback/],
        ['224.0.0.1/10', qr/multicast/],
        ['255.255.255.255/32', qr/multicast, reserved or broadcast/],
        ['169.254.0.9/16', qr/link-local/],
        ['100.128.0.0/10', qr/network address/],
        ['100.191.255.255/10', qr/broadcast address/],
        ['100.128.0.9/0', qr/is a \/0/],
        ['100.128.0.9', qr/want ip\/prefix/],
        ['ff02::1/64', qr/multicast/],
        ['fe80::1/64', qr/link-local/],
    );
    for my $case (@bad_opts) {
        my ($addr, $msg) = @$case;
        my ($st, undef, $err) = apply('a', "$ok_line\n",
                                      '--address', $addr);
        is($st >> 8, 2, "refused: --address $addr");
        like($err, qr/$msg.*\(nothing applied\)/, '  with a message')
            or diag($err);
    }
    my ($st, undef, $err) = apply('a', "$ok_line\n", '--port', '65536');
    is($st >> 8, 2, 'refused: --port 65536');
    ($st, undef, $err) = apply('a', "$ok_line\n",
                               '--private-key-file', "$DIR/stdin");
    is($st >> 8, 2, 'refused: a private key file without a key');
    like($err, qr/not a base64 WireGuard key/, '  with a message');
    unlike($err, qr/\Q$ok_line\E/, '  that does not echo the file');

    is(device_config(wg_show('a')), device_config($before),
       'a: nothing changed on the device');
    my (undef, $addr_after) = in_ns('a', 'ip', '-o', 'address', 'show',
                                    $IF{a});
    is($addr_after, $addr_before, 'a: nor on its address');
}

# --- malformed replies from a UAPI implementation -------------------------

# a fake implementation on $FAKE_SOCK: answers one get with $reply
sub fake_uapi {
    my ($reply) = @_;
    unlink $FAKE_SOCK;
    my $srv = IO::Socket::UNIX->new(Local => $FAKE_SOCK, Listen => 5)
        or die "$FAKE_SOCK: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        # wg-apply first checks that something answers, then asks
        while (my $c = $srv->accept) {
            my $req = '';
            while (defined(my $l = <$c>)) {
                $req .= $l;
                last if $l eq "\n";
            }
            next unless $req =~ /^get=1\n/;
            print $c $reply;
            close $c;
            POSIX::_exit(0);
        }
        POSIX::_exit(1);
    }
    close $srv;
    push @fake_servers, $pid;
    return $pid;
}

{
    mkdir '/var/run/wireguard';
    my $hex = unpack 'H*', join '', map { chr int rand 256 } 1 .. 32;
    my $peer = "public_key=$hex\n";
    my @replies = (
        ['', 'an empty reply'],
        ["errno=0\n", 'no blank line at the end'],
        ["listen_port=1\n\n", 'no errno'],
        ["errno=0\nlisten_port=1\n\n", 'data after errno'],
        ["errno=zero\n\n", 'a bad errno'],
        ["noequals\nerrno=0\n\n", 'a line without ='],
        ["=1\nerrno=0\n\n", 'an empty key'],
        ["public_key=" . substr($hex, 2) . "\nerrno=0\n\n", 'a short key'],
        ["public_key=" . ('g' x 64) . "\nerrno=0\n\n", 'a key not in hex'],
        ["endpoint=192.168.1.1:5\nerrno=0\n\n", 'a peer field before a peer'],
        ["${peer}listen_port=1\nerrno=0\n\n", 'a device field in a peer'],
        ["${peer}endpoint=192.168.1.1\nerrno=0\n\n", 'an endpoint without port'],
        ["${peer}endpoint=[fd00::1:5\nerrno=0\n\n", 'a broken IPv6 endpoint'],
        ["${peer}allowed_ip=10.0.0.0/33\nerrno=0\n\n", 'a bad allowed IP'],
        ["${peer}rx_bytes=18446744073709551616\nerrno=0\n\n",
         'a counter past 2^64'],
        ["${peer}rx_bytes=-1\nerrno=0\n\n", 'a negative counter'],
        ["${peer}persistent_keepalive_interval=65536\nerrno=0\n\n",
         'a keepalive past 65535'],
        ["${peer}last_handshake_time_nsec=1000000000\nerrno=0\n\n",
         'nanoseconds past a second'],
        ["${peer}" . ("allowed_ip=10.0.0.1/32\n" x 17) . "errno=0\n\n",
         'more allowed IPs than kept'],
        [('x' x 5000) . "\nerrno=0\n\n", 'a line too long'],
        ["${peer}endpoint=1.2.3.4:5\0\nerrno=0\n\n", 'a NUL in a line'],
        ["errno=5\n\n", 'an error from the implementation'],
        ["errno=-22\n\n", 'a negated error, as wireguard-go writes it'],
    );
    for my $case (@replies) {
        my ($reply, $name) = @$case;
        my $pid = fake_uapi($reply);
        my ($st, $out, $err) = run("dump\n", $APPLY, '--if', $FAKE_IF,
                                   '--backend', 'uapi');
        is($st, 1 << 8, "reply with $name: an error, not a crash")
            or diag("status $st: $err");
        like($err, qr/^wg: \Q$FAKE_IF\E: get device: /m, '  logged')
            or diag($err);
        unlike($out, qr/^peer /m, '  no peer made up');
        waitpid $pid, 0;
    }

    my $pid = fake_uapi("private_key=" . ('0' x 64) . "\nlisten_port=5\n"
        . "${peer}preshared_key=" . ('0' x 64) . "\nprotocol_version=1\n"
        . "endpoint=[fd00::1]:51820\nlast_handshake_time_sec=7\n"
        . "last_handshake_time_nsec=8\ntx_bytes=9\nrx_bytes=10\n"
        . "persistent_keepalive_interval=11\nallowed_ip=fd00::/64\n"
        . "allowed_ip=10.9.0.0/16\nsome_future_key=whatever\nerrno=0\n\n");
    my ($st, $out, $err) = run("dump\n", $APPLY, '--if', $FAKE_IF,
                               '--backend', 'uapi');
    is($st, 0, 'a well-formed reply with an unknown key is read')
        or diag($err);
    my $b64 = encode_base64(pack('H*', $hex), '');
    like($out, qr{^peer \Q$b64\E endpoint=\[fd00::1\]:51820 allowed=fd00::/64,10\.9\.0\.0/16 keepalive=11 handshake=7 rx=10 tx=9$}m,
         '  every field as sent');
    waitpid $pid, 0;

    unlink $FAKE_SOCK;
    ($st, undef, $err) = run("dump\n", $APPLY, '--if', $FAKE_IF,
                             '--backend', 'uapi');
    is($st, 1 << 8, 'uapi without a socket and without --start-userspace');
    like($err, qr/no userspace WireGuard answers on \Q$FAKE_SOCK\E/,
         '  says so');
}

# --- a socket nobody should trust with a private key -----------------------

{
    key_pair('spy');
    for my $case (['writable by everyone', sub { chmod 0666, $FAKE_SOCK },
                   qr/refusing \Q$FAKE_SOCK\E: it is writable by group or others/],
                  ['owned by another user', sub { chown 65534, 65534, $FAKE_SOCK },
                   qr/refusing \Q$FAKE_SOCK\E: it is owned by another user/])
    {
        my ($name, $spoil, $why) = @$case;
        unlink $FAKE_SOCK, "$DIR/spied";
        my $srv = IO::Socket::UNIX->new(Local => $FAKE_SOCK, Listen => 5)
            or die "$FAKE_SOCK: $!";
        $spoil->();
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            # takes whatever is sent, says yes to everything
            $SIG{PIPE} = 'IGNORE';
            while (my $c = $srv->accept) {
                my $req = '';
                while (defined(my $l = <$c>)) {
                    $req .= $l;
                    last if $l eq "\n";
                }
                open my $fh, '>>', "$DIR/spied" or POSIX::_exit(1);
                print $fh $req;
                close $fh;
                print $c "errno=0\n\n";
                close $c;
            }
            POSIX::_exit(0);
        }
        close $srv;
        push @fake_servers, $pid;
        my ($st, undef, $err) = run("dump\n", $APPLY, '--if', $FAKE_IF,
                                    '--backend', 'uapi', '--private-key-file',
                                    "$DIR/spy.key", '--port', '5');
        isnt($st, 0, "a UAPI socket $name: refused");
        like($err, $why, '  saying why') or diag($err);
        is(slurp("$DIR/spied"), '', '  nothing sent to it, no private key above all');
    }
    unlink $FAKE_SOCK;
}

# --- the interface goes away ---------------------------------------------

{
    my ($st, $out, $err) = apply('b', "delete\n", '--backend', 'uapi');
    is($st, 0, 'b: delete') or diag($err);
    my ($gone) = in_ns('b', 'ip', 'link', 'show', $IF{b});
    isnt($gone, 0, 'b: the link is gone');
    my $sock = "/var/run/wireguard/$IF{b}.sock";
    for (1 .. 50) {
        last unless -e $sock;
        sleep 0.1;
    }
    ok(!-e $sock, 'b: wireguard-go went away with it');
}

done_testing();
