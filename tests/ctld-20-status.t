# `dstack-ctld status` against running nodes and the hub: a server (unix
# socket), its hub and three nodes in network namespaces with wireguard-go
# (--server-app-id none, as tests/ctld-10-node-vpc.t).  alpha and beta
# advertise endpoints (a direct pair), gamma does not (reached through the
# hub).  What status shows after traffic (path, handshake, counters, the
# transport to the hub), its JSON, the hub's view, the socket's mode, no
# daemon, and hostile clients on the socket while the node applies a delta.
#
# Run as root from the repository root: prove tests/ctld-20-status.t

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use NodeTest;
use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use JSON::PP;
use POSIX ();
use Socket qw(SOCK_STREAM);
use Test::More;
use Time::HiRes qw(sleep time);

my $why = node_world();
plan skip_all => $why if $why;
for my $bin (ctld_bin(), agent_bin()) {
    BAIL_OUT("$bin is missing: run make first") unless -x $bin;
}
$SIG{INT} = $SIG{TERM} = sub { exit 1 };

my $DIR = tempdir('ctld-status-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{KEEP});
my $APP = 'a0a0000000000000000000000000000000000021';
my $BIN = ctld_bin();

my $hubns = ns_add('hub', 1);
my %N;
for (['alpha', 11, 1], ['beta', 12, 1], ['gamma', 13, 0], ['delta', 14, 1]) {
    my ($name, $host, $ep) = @$_;
    my $w = ns_add(substr($name, 0, 3), $host);
    $w->{name} = $name;
    $w->{endpoint} = $ep ? "$w->{ip}:51820" : undef;
    $w->{agent} = start_agent($DIR, $name, $APP);
    $w->{state} = "$DIR/state-$name";
    $N{$name} = $w;
}

# the command in the root namespace: it only needs the socket's path
sub status {
    my (@args) = @_;
    my $pid = open(my $out, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', "$DIR/status.err" or POSIX::_exit(127);
        exec $BIN, 'status', @args or POSIX::_exit(127);
    }
    local $/;
    my $text = <$out> // '';
    close $out;
    return ($? >> 8, $text, read_text("$DIR/status.err") // '');
}

sub status_json {
    my (@args) = @_;
    my ($code, $out) = status('--json', @args);
    return undef if $code != 0;
    return eval { decode_json($out) };
}

sub start {
    my ($name) = @_;
    my $w = $N{$name};
    $w->{node} = start_node($DIR, $w, '--server-url', "unix:$DIR/ctld.sock",
        '--server-app-id', 'none', '--agent-socket', $w->{agent},
        '--state-dir', $w->{state}, '--hosts-file', 'none',
        '--name', $name, '--retry-max', '2s', '--poll-wait', '20s',
        $w->{endpoint} ? ('--endpoint', $w->{endpoint}) : ());
}

sub ping_ok {
    my ($from, $to) = @_;
    for (1 .. 5) {
        my ($st) = in_ns($from->{ns}, 'ping', '-c', '2', '-i', '0.2', '-W', '2', $to);
        return 1 if $st == 0;
    }
    return 0;
}

sub by_name { return { map { $_->{name} => $_ } @{ $_[0]{peers} // [] } } }

# --- no daemon --------------------------------------------------------------

{
    mkdir $N{alpha}{state};
    my ($code, $out, $err) = status('--state-dir', $N{alpha}{state});
    is($code, 1, 'no daemon: status exits 1');
    is($out, '', '  prints nothing on stdout');
    like($err, qr{\Adstack-ctld status: no daemon answers on \Q$N{alpha}{state}\E/node\.sock: [^\n]+\n\z},
         '  one line on stderr naming the socket') or diag($err);
    ($code, undef, $err) = status('--hub', '--data-dir', "$DIR/nowhere", '--json');
    is($code, 1, 'no hub: status --hub exits 1 too');
    ($code) = status('--state-dir', $N{alpha}{state}, '--bogus');
    is($code, 2, 'an unknown option: exit 2');
}

# --- a VPC ------------------------------------------------------------------

my $srv = start_server(unix => "$DIR/ctld.sock", dir => $DIR,
                       args => ['--wg-endpoint', "$hubns->{ip}:51820",
                                '--allowed-apps', $APP]);
my $hub = start_node($DIR, $hubns, '--hub', '--data-dir', $srv->{data},
                     '--server-url', "unix:$DIR/ctld.sock", '--hosts-file',
                     'none', '--retry-max', '2s');
start($_) for qw(alpha beta gamma);

sub nodes {
    my ($code, $out) = $srv->cli('nodes', 'list', '--json');
    die "nodes list: $out" if $code;
    return { map { $_->{name} => $_ } @{ decode_json($out)->{nodes} } };
}

ok(wait_until(20, sub { keys %{ nodes() } == 3 }), 'alpha, beta, gamma joined')
    or diag($N{alpha}{node}->log_text);
my $list = nodes();
ok(wait_until(15, sub {
    my $s = status_json('--state-dir', $N{alpha}{state});
    $s && $s->{interface_up} && @{ $s->{peers} } == 2 }), 'alpha: status answers with both peers')
    or diag($N{alpha}{node}->log_text);
ok(ping_ok($N{alpha}, $list->{beta}{address}), 'ping alpha -> beta (direct)');
ok(ping_ok($N{alpha}, $list->{gamma}{address}), 'ping alpha -> gamma (through the hub)');

# --- alpha: text ---------------------------------------------------------------

{
    my ($code, $out, $err) = status('--state-dir', $N{alpha}{state});
    is($code, 0, 'alpha: status exits 0') or diag($err);
    note($out);
    like($out, qr{\Aalpha\.dstack\.internal \Q$list->{alpha}{address}\E \(node, \Q$N{alpha}{ifname}\E up\)\n},
         '  first line: name, address, role, interface') or diag($out);
    like($out, qr{^hub vpc-server 100\.128\.0\.1 transport udp since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\S+\) endpoint \Q$hubns->{ip}\E:51820 handshake \S+ ago rx [1-9]\d* tx [1-9]\d*$}m,
         '  the hub line: transport udp and since when, endpoint, handshake, counters') or diag($out);
    like($out, qr{^NAME\s+ADDRESS\s+PATH\s+ENDPOINT\s+HANDSHAKE\s+RX\s+TX$}m, '  a table header');
    like($out, qr{^beta\s+\Q$list->{beta}{address}\E\s+direct\s+\Q$N{beta}{endpoint}\E\s+\d+[smhd]\S* ago\s+[1-9]\d*\s+[1-9]\d*$}m,
         '  beta: direct, its endpoint, a handshake age, bytes both ways') or diag($out);
    like($out, qr{^gamma\s+\Q$list->{gamma}{address}\E\s+via hub\s+-\s+-\s+-\s+-$}m,
         '  gamma: via hub') or diag($out);
}

# --- alpha: JSON ---------------------------------------------------------------

my $hub_key;
{
    my $s = status_json('--state-dir', $N{alpha}{state});
    ok($s, 'alpha: --json parses');
    is($s->{role}, 'node', '  role node');
    is($s->{name}, 'alpha', '  name');
    is($s->{dns_name}, 'alpha.dstack.internal', '  dns_name');
    is($s->{address}, $list->{alpha}{address}, '  address as the server has it');
    is($s->{public_key}, $list->{alpha}{public_key}, '  public_key as the server has it');
    is($s->{interface}, $N{alpha}{ifname}, '  interface');
    ok($s->{interface_up}, '  interface_up');
    is($s->{backend}, 'uapi', '  backend');
    is($s->{listen_port}, 51820, '  listen_port');
    is($s->{endpoint}, $N{alpha}{endpoint}, '  its own endpoint');
    ok($s->{peer_set_version} > 0 && length $s->{epoch} == 16, '  peer_set_version and epoch');
    ok(abs($s->{time} - time) < 5, '  time is now');
    my $h = $s->{hub};
    is($h->{name}, 'vpc-server', '  hub: name');
    is($h->{address}, '100.128.0.1', '  hub: address');
    is($h->{transport}, 'udp', '  hub: transport udp');
    ok($h->{transport_since} > 0 && $h->{transport_since} <= $s->{time}, '  hub: transport_since');
    is($h->{endpoint}, "$hubns->{ip}:51820", '  hub: endpoint');
    ok(defined $h->{handshake_age} && $h->{rx_bytes} > 0 && $h->{tx_bytes} > 0,
       '  hub: handshake and counters');
    $hub_key = $h->{public_key};
    my $p = by_name($s);
    is_deeply([sort keys %$p], [qw(beta gamma)], '  peers: beta and gamma');
    is($p->{beta}{path}, 'direct', '  beta: path direct');
    is($p->{beta}{address}, $list->{beta}{address}, '  beta: address');
    is($p->{beta}{public_key}, $list->{beta}{public_key}, '  beta: public_key');
    is($p->{beta}{dns_name}, 'beta.dstack.internal', '  beta: dns_name');
    is($p->{beta}{endpoint}, $N{beta}{endpoint}, '  beta: endpoint');
    ok(defined $p->{beta}{handshake_age} && $p->{beta}{handshake_age} < 60
       && $p->{beta}{latest_handshake} > 0, '  beta: a recent handshake');
    ok($p->{beta}{rx_bytes} > 0 && $p->{beta}{tx_bytes} > 0, '  beta: rx_bytes, tx_bytes');
    is($p->{gamma}{path}, 'via_hub', '  gamma: path via_hub');
    is($p->{gamma}{address}, $list->{gamma}{address}, '  gamma: address');
    ok(!defined $p->{gamma}{endpoint} && !defined $p->{gamma}{handshake_age}
       && !defined $p->{gamma}{rx_bytes}, '  gamma: no endpoint, handshake or counters of its own');

    # the counters are read at the request: traffic moves them
    my $before = $p->{beta}{tx_bytes};
    ping_ok($N{alpha}, $list->{beta}{address});
    my $after = by_name(status_json('--state-dir', $N{alpha}{state}))->{beta}{tx_bytes};
    ok($after > $before, "  beta: tx_bytes grows with traffic ($before -> $after)");
}

# --- gamma: no endpoint, everything through the hub ----------------------------

{
    my $s = status_json('--state-dir', $N{gamma}{state});
    my $p = by_name($s);
    is($s->{name}, 'gamma', 'gamma: status names it');
    is($s->{endpoint}, undef, '  no endpoint of its own');
    is($p->{alpha}{path}, 'via_hub', '  alpha: via_hub');
    is($p->{beta}{path}, 'via_hub', '  beta: via_hub');
    is($s->{hub}{transport}, 'udp', '  hub: transport udp');
    ok($s->{hub}{rx_bytes} > 0, '  hub: traffic received (alpha\'s ping came through it)');
}

# --- the hub --------------------------------------------------------------------

{
    my $s = status_json('--hub', '--data-dir', $srv->{data});
    ok($s, 'hub: status --hub --json parses') or diag($hub->log_text);
    is($s->{role}, 'hub', '  role hub');
    is($s->{name}, 'vpc-server', '  name');
    is($s->{address}, '100.128.0.1', '  address');
    is($s->{public_key}, $hub_key, '  public_key as the nodes have it');
    is($s->{hub}, undef, '  no hub of its own');
    my $p = by_name($s);
    is_deeply([sort keys %$p], [qw(alpha beta gamma)], '  every node');
    is_deeply([map { $p->{$_}{path} } qw(alpha beta gamma)], [('direct') x 3],
              '  each one direct');
    is($p->{alpha}{endpoint}, $N{alpha}{endpoint}, '  alpha: the endpoint it advertises');
    like($p->{gamma}{endpoint} // '', qr/^\Q$N{gamma}{ip}\E:\d+$/,
         '  gamma: the endpoint learned from its packets');
    ok($p->{gamma}{rx_bytes} > 0 && $p->{alpha}{rx_bytes} > 0,
       '  counters of the relayed ping');
    my ($code, $out) = status('--hub', '--data-dir', $srv->{data});
    note($out);
    like($out, qr{\Avpc-server\.dstack\.internal 100\.128\.0\.1 \(hub, \Q$hubns->{ifname}\E up\)\n}, '  text: first line')
        or diag($out);
    unlike($out, qr/^hub /m, '  text: no hub line');
    like($out, qr{^gamma\s+\Q$list->{gamma}{address}\E\s+direct\s+}m, '  text: gamma direct');
}

# --- the socket -------------------------------------------------------------------

{
    my @st = stat("$N{alpha}{state}/node.sock");
    ok(@st && -S _, 'alpha: node.sock is a socket');
    is($st[2] & 07777, 0600, '  mode 0600');
    @st = stat("$srv->{data}/hub.sock");
    is($st[2] & 07777, 0600, 'hub: hub.sock, mode 0600');
}

# --- hostile clients while the node applies a delta --------------------------------

{
    my $sock = "$N{alpha}{state}/node.sock";
    my @hold;
    for (1 .. 20) {             # connect and never read
        push @hold, IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock)
            or die "connect: $!";
    }
    for (1 .. 5) {              # garbage, and keep the connection open
        my $c = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock) or die;
        syswrite($c, "\x00\xff" . ('GET / HTTP/1.1\r\n' x 100));
        push @hold, $c;
    }
    ok(scalar(@hold) == 25, '25 hostile clients connected, none reading');

    start('delta');
    ok(wait_until(20, sub { nodes()->{delta} }), 'delta joined meanwhile');
    my $dkey = nodes()->{delta}{public_key};
    ok(wait_until(15, sub {
        my $d = wg_dump($N{alpha}{ns}, $N{alpha}{ifname});
        $d && $d->{peers}{$dkey} }), 'alpha applied the delta: delta is its direct peer')
        or diag($N{alpha}{node}->log_text);
    my $t0 = time;
    my $s = status_json('--state-dir', $N{alpha}{state});
    ok($s && by_name($s)->{delta} && by_name($s)->{delta}{path} eq 'direct',
       'alpha: status shows delta, direct, with the hostile clients still connected');
    ok(time - $t0 < 5, sprintf('  answered in %.1f s', time - $t0));
    close $_ for @hold;
    ok($N{alpha}{node}->running, 'alpha still runs');
}

# --- a daemon that stopped -----------------------------------------------------------

{
    is($N{alpha}{node}->stop, 0, 'alpha: SIGTERM, exit 0');
    ok(!-e "$N{alpha}{state}/node.sock", '  its socket is gone');
    my ($code, $out, $err) = status('--state-dir', $N{alpha}{state});
    is($code, 1, '  status exits 1');
    like($err, qr{\Adstack-ctld status: no daemon answers on [^\n]+\n\z}, '  with one line');

    $N{beta}{node}->kill9;
    ok(-S "$N{beta}{state}/node.sock", 'beta: killed, its socket left behind');
    ($code, $out, $err) = status('--state-dir', $N{beta}{state});
    is($code, 1, '  status exits 1');
    like($err, qr{\Adstack-ctld status: no daemon answers on \S+: Connection refused\n\z},
         '  Connection refused, one line') or diag($err);
    start('beta');
    ok(wait_until(15, sub { status_json('--state-dir', $N{beta}{state}) }),
       'beta: started again, the stale socket replaced')
        or diag($N{beta}{node}->log_text);
}

done_testing();
