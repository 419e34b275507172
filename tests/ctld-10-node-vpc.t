# The node role against the real server, without nginx: a server (unix
# socket), its hub (`node --hub`) and nodes, each in its own network
# namespace on one bridge, with wireguard-go, talking to the server
# directly (--server-app-id none).
#
# alpha, beta and delta advertise endpoints, gamma and epsilon do not:
# endpoint pairs peer directly, everything else goes through the hub.
# Joining, addresses, the peer sets of the reachability rule, hosts
# blocks, ping directly and through the hub, nodes joining and leaving,
# the server killed and restarted under running nodes, a node restarted,
# a node started while the server is down.
#
# Run as root from the repository root: prove tests/ctld-10-node-vpc.t

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use NodeTest;
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;
use Time::HiRes qw(sleep time);

my $why = node_world();
plan skip_all => $why if $why;
for my $bin (ctld_bin(), agent_bin()) {
    BAIL_OUT("$bin is missing: run make first") unless -x $bin;
}
$SIG{INT} = $SIG{TERM} = sub { exit 1 };

my $DIR = tempdir('ctld-node-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{KEEP});
my $POOL = '100.128.0.0/10';
my %APP = (one => 'a0a0000000000000000000000000000000000001',
           two => 'b0b0000000000000000000000000000000000002');

my $hubns = ns_add('hub', 1);
my %N;
for (['alpha', 11, 'one', 1], ['beta', 12, 'one', 1], ['gamma', 13, 'one', 0],
     ['delta', 14, 'two', 1], ['epsilon', 15, 'two', 0], ['zeta', 16, 'two', 0])
{
    my ($name, $host, $app, $ep) = @$_;
    my $w = ns_add(substr($name, 0, 3), $host);
    $w->{name} = $name;
    $w->{endpoint} = $ep ? "$w->{ip}:51820" : undef;
    $w->{agent} = start_agent($DIR, $name, $APP{$app});
    $w->{hosts} = "$DIR/hosts-$name";
    $w->{state} = "$DIR/state-$name";
    $N{$name} = $w;
}

# a hosts file with lines around an old block: they must stay as they are
my $BEFORE = "127.0.0.1\tlocalhost\n# the operator's line\n";
my $AFTER = "10.9.9.9 after.example\n";
write_text($N{alpha}{hosts}, $BEFORE . "# BEGIN dstack-ctld\n"
           . "100.64.0.9 stale.dstack.internal\n# END dstack-ctld\n" . $AFTER);

my $sock = "$DIR/ctld.sock";
my $srv = start_server(unix => $sock, dir => $DIR,
                       args => ['--wg-endpoint', "$hubns->{ip}:51820",
                                '--allowed-apps', join(',', values %APP)]);

my $hub = start_node($DIR, $hubns, '--hub', '--data-dir', $srv->{data},
                     '--server-url', "unix:$sock", '--hosts-file',
                     "$DIR/hosts-hub", '--retry-max', '2s');

sub start {
    my ($name, @extra) = @_;
    my $w = $N{$name};
    $w->{node} = start_node($DIR, $w, '--server-url', "unix:$sock",
        '--server-app-id', 'none', '--agent-socket', $w->{agent},
        '--state-dir', $w->{state}, '--hosts-file', $w->{hosts},
        '--name', $name, '--retry-max', '2s', '--poll-wait', '20s',
        $w->{endpoint} ? ('--endpoint', $w->{endpoint}) : (), @extra);
    return $w->{node};
}

sub nodes {
    my ($code, $out) = $srv->cli('nodes', 'list', '--json');
    die "nodes list: $out" if $code;
    return { map { $_->{name} => $_ } @{ decode_json($out)->{nodes} } };
}

sub dump_of { my ($w) = @_; wg_dump($w->{ns}, $w->{ifname}) }

# the peers of a node as "allowed endpoint keepalive" by key
sub peers_of {
    my ($w) = @_;
    my $d = dump_of($w) or return {};
    return { map { my $p = $d->{peers}{$_};
                   ($_ => "$p->{allowed} $p->{endpoint} $p->{keepalive}") }
             keys %{ $d->{peers} } };
}

# what the reachability rule says $name should have, from the server's list
sub expected_peers {
    my ($name, $list, $hub_key) = @_;
    my $me = $N{$name};
    my %want;
    $want{$hub_key} = "$POOL $hubns->{ip}:51820 "
                      . ($me->{endpoint} ? 'off' : '25');
    if ($me->{endpoint}) {
        for my $other (values %$list) {
            next if $other->{name} eq $name || !$other->{endpoint};
            $want{ $other->{public_key} } =
                "$other->{address}/32 $other->{endpoint} off";
        }
    }
    return \%want;
}

sub hosts_block {
    my ($path) = @_;
    my $text = read_text($path) // '';
    my ($block) = $text =~ /^# BEGIN dstack-ctld\n(.*?)^# END dstack-ctld\n/ms;
    return { map { reverse split ' ' } split /\n/, $block // '' };
}

sub want_hosts {
    my ($list, @names) = @_;
    my %h = ('vpc-server.dstack.internal' => '100.128.0.1');
    $h{"$_.dstack.internal"} = $list->{$_}{address} for @names;
    return \%h;
}

sub ping_ok {
    my ($from, $to) = @_;
    for (1 .. 5) {
        my ($st) = in_ns($from->{ns}, 'ping', '-c', '1', '-W', '2', $to);
        return 1 if $st == 0;
    }
    return 0;
}

# --- joining --------------------------------------------------------------

start($_) for qw(alpha beta);
{
    # the original's variable for the node type, rather than --node-type
    local $ENV{VPC_NODE_TYPE} = 'mongodb';
    start('gamma');
}
ok(wait_until(20, sub { keys %{ nodes() } == 3 }), 'alpha, beta, gamma joined')
    or diag($N{alpha}{node}->log_text);
my $found;
ok(wait_until(20, sub {
    $found = decode_json(qx{curl -sS --unix-socket $sock -H 'x-dstack-app-id: $APP{one}' http://ctld/api/discover/mongodb} || '{}');
    ($found->{count} // 0) == 1 }), 'VPC_NODE_TYPE reaches the server: discover/mongodb')
    or diag(explain($found));
is($found->{nodes}[0]{hostname}, 'gamma.dstack.internal', '  lists gamma');
my $list = nodes();
my $HUB_KEY;
ok(wait_until(10, sub {
    my $d = wg_dump($hubns->{ns}, $hubns->{ifname});
    $HUB_KEY = $d->{public_key} if $d;
    $d && keys %{ $d->{peers} } == 3 }), 'the hub has the three nodes')
    or diag($hub->log_text);

for my $name (qw(alpha beta gamma)) {
    my $w = $N{$name};
    my (undef, $addr) = in_ns($w->{ns}, 'ip', '-o', '-4', 'address', 'show',
                              $w->{ifname});
    like($addr, qr{inet \Q$list->{$name}{address}\E/10 },
         "$name: the interface has its address $list->{$name}{address}/10");
    my $want = expected_peers($name, $list, $HUB_KEY);
    ok(wait_until(10, sub { is_deeply_quiet(peers_of($w), $want) }),
       "$name: peers as the reachability rule says ("
       . join(', ', map { $_ eq $HUB_KEY ? 'hub' : 'direct' } sort keys %$want)
       . ')') or diag(explain(peers_of($w)), explain($want));
    is(dump_of($w)->{public_key}, $list->{$name}{public_key},
       "$name: the interface's key is the one the server has");
    ok(wait_until(5, sub { is_deeply_quiet(hosts_block($w->{hosts}),
                                           want_hosts($list, qw(alpha beta gamma))) }),
       "$name: hosts block with every name and self")
        or diag(read_text($w->{hosts}));
}
{
    my $d = wg_dump($hubns->{ns}, $hubns->{ifname});
    my %got = map { ($_ => $d->{peers}{$_}{allowed}) } keys %{ $d->{peers} };
    my %want = map { ($list->{$_}{public_key} => "$list->{$_}{address}/32") }
               qw(alpha beta gamma);
    is_deeply(\%got, \%want, 'hub: every node as a /32');
    is($d->{peers}{ $list->{alpha}{public_key} }{endpoint}, $N{alpha}{endpoint},
       'hub: with the endpoint a node advertises');
    my (undef, $fwd) = in_ns($hubns->{ns}, 'cat', '/proc/sys/net/ipv4/ip_forward');
    is($fwd, "1\n", 'hub: forwarding on in its namespace');
}
{
    my $text = read_text($N{alpha}{hosts});
    like($text, qr/\A\Q$BEFORE\E# BEGIN dstack-ctld\n/,
         'alpha: lines before the block untouched');
    like($text, qr/# END dstack-ctld\n\Q$AFTER\E\z/,
         'alpha: lines after the block untouched');
    unlike($text, qr/stale/, 'alpha: the old block replaced');
}

# --- traffic ---------------------------------------------------------------

ok(ping_ok($N{alpha}, $list->{beta}{address}), 'ping alpha -> beta (direct)');
my $ab = sub { dump_of($N{alpha})->{peers}{ $list->{beta}{public_key} }{handshake} };
ok($ab->() > 0, 'alpha: a handshake with beta itself');
ok(ping_ok($N{gamma}, $list->{alpha}{address}),
   'ping gamma -> alpha (gamma has no endpoint: through the hub)');
is(scalar keys %{ dump_of($N{gamma})->{peers} }, 1, 'gamma: its only peer is the hub');

# --- more nodes -------------------------------------------------------------

start($_) for qw(delta epsilon);
ok(wait_until(15, sub { keys %{ nodes() } == 5 }), 'delta and epsilon joined');
$list = nodes();
for my $name (qw(alpha beta gamma delta epsilon)) {
    my $want = expected_peers($name, $list, $HUB_KEY);
    ok(wait_until(10, sub { is_deeply_quiet(peers_of($N{$name}), $want) }),
       "$name: peers per the rule with five nodes (" . (keys %$want) . ')')
        or diag(explain(peers_of($N{$name})), explain($want));
    ok(wait_until(10, sub { is_deeply_quiet(hosts_block($N{$name}{hosts}),
                                            want_hosts($list, keys %$list)) }),
       "$name: hosts has all five") or diag(read_text($N{$name}{hosts}));
}
ok(wait_until(10, sub { keys %{ wg_dump($hubns->{ns}, $hubns->{ifname})->{peers} } == 5 }),
   'hub: five peers');
ok(ping_ok($N{gamma}, $list->{epsilon}{address}),
   'ping gamma -> epsilon: neither has an endpoint, through the hub');
ok(ping_ok($N{epsilon}, $list->{gamma}{address}), 'and back');
ok(ping_ok($N{alpha}, $list->{delta}{address}), 'ping alpha -> delta (direct)');
ok(dump_of($N{alpha})->{peers}{ $list->{delta}{public_key} }{handshake} > 0,
   'alpha: a handshake with delta itself');

# --- removal ---------------------------------------------------------------

{
    my ($code, $out) = $srv->cli('nodes', 'remove', 'delta');
    is($code, 0, 'nodes remove delta') or diag($out);
    my $dkey = $list->{delta}{public_key};
    for my $name (qw(alpha beta)) {
        ok(wait_until(5, sub { !exists peers_of($N{$name})->{$dkey} }),
           "$name: delta's peer is gone");
    }
    ok(wait_until(5, sub { !exists wg_dump($hubns->{ns}, $hubns->{ifname})->{peers}{$dkey} }),
       'hub: delta is gone');
    for my $name (qw(alpha beta gamma epsilon)) {
        ok(wait_until(5, sub { !exists hosts_block($N{$name}{hosts})->{'delta.dstack.internal'} }),
           "$name: delta.dstack.internal is gone from hosts");
    }
    is($N{delta}{node}->wait_exit(5), 3, 'delta: the removed node exits with status 3');
    like($N{delta}{node}->log_text, qr/removed from the VPC/, '  saying why');
    ok(!-e "$N{delta}{state}/node.state", '  and forgets its token');
    delete $list->{delta};
}

# --- the server killed and restarted under running nodes --------------------

{
    my $before = dump_of($N{alpha});
    my $hs = $before->{peers}{ $list->{beta}{public_key} }{handshake};
    $srv->kill9;
    sleep 1;
    ok(ping_ok($N{alpha}, $list->{beta}{address}), 'server down: alpha -> beta still works');
    ok(ping_ok($N{gamma}, $list->{epsilon}{address}),
       'server down: gamma -> epsilon through the hub still works');
    $hs = dump_of($N{alpha})->{peers}{ $list->{beta}{public_key} }{handshake};
    $srv->start;

    my ($code, $out) = $srv->cli('nodes', 'remove', 'epsilon');
    is($code, 0, 'after the restart: nodes remove epsilon') or diag($out);
    my $ekey = $list->{epsilon}{public_key};
    ok(wait_until(15, sub { !exists wg_dump($hubns->{ns}, $hubns->{ifname})->{peers}{$ekey} }),
       'hub picked up the change after the restart') or diag($hub->log_text);
    for my $name (qw(alpha beta gamma)) {
        ok(wait_until(10, sub { !exists hosts_block($N{$name}{hosts})->{'epsilon.dstack.internal'} }),
           "$name picked up the change after the restart");
    }
    delete $list->{epsilon};
    my $after = dump_of($N{alpha});
    is($after->{peers}{ $list->{beta}{public_key} }{handshake}, $hs,
       'alpha: its session with beta untouched by the server restart');
    is(join(' ', map { "$_=" . peers_of($N{alpha})->{$_} } sort keys %{ $after->{peers} }),
       join(' ', map { my $p = $before->{peers}{$_};
                       "$_=$p->{allowed} $p->{endpoint} $p->{keepalive}" }
                 sort keys %{ $before->{peers} }),
       'alpha: the same peers as before');
    $N{epsilon}{node}->wait_exit(5);
}

# --- a node restarted --------------------------------------------------------

{
    my $akey = $list->{alpha}{public_key};
    my $hub_hs = wg_dump($hubns->{ns}, $hubns->{ifname})->{peers}{$akey}{handshake};
    my $beta_hs = dump_of($N{beta})->{peers}{$akey}{handshake};
    my $own = dump_of($N{alpha});
    is($N{alpha}{node}->stop, 0, 'alpha: SIGTERM, exit status 0');
    like($N{alpha}{node}->log_text, qr/stays as it is/, '  leaving the interface');
    is_deeply(sessions(dump_of($N{alpha})), sessions($own), '  configured as it was');

    my $joins = () = $srv->log_text =~ /joined at/g;
    start('alpha');
    ok(wait_until(10, sub { $N{alpha}{node}->log_text =~ /resuming as alpha/ }),
       'alpha: restarted, resumes with its saved token');
    ok(wait_until(10, sub { $N{alpha}{node}->log_text =~ /snapshot\)/ }),
       'alpha: and its peers from a snapshot');
    sleep 1;
    is(() = $srv->log_text =~ /joined at/g, $joins, '  without joining again');
    is(nodes()->{alpha}{address}, $list->{alpha}{address}, '  same address');
    is(dump_of($N{alpha})->{public_key}, $akey, '  same key');
    is(wg_dump($hubns->{ns}, $hubns->{ifname})->{peers}{$akey}{handshake}, $hub_hs,
       'hub: alpha\'s session untouched');
    is(dump_of($N{beta})->{peers}{$akey}{handshake}, $beta_hs,
       'beta: alpha\'s session untouched');
    is_deeply(sessions(dump_of($N{alpha})), sessions($own),
              'alpha: every peer as it was, handshakes included');
}

# --- a node with a new key: its token proves it is the same node -------------

{
    my $old = nodes()->{gamma};
    is($N{gamma}{node}->stop, 0, 'gamma: stopped');
    unlink "$N{gamma}{state}/node.key" or die "node.key: $!";
    start('gamma');
    ok(wait_until(15, sub { my $now = nodes()->{gamma};
                            $now && $now->{public_key} ne $old->{public_key} }),
       'gamma: a new key, joined again with its node token')
        or diag($N{gamma}{node}->log_text);
    is(nodes()->{gamma}{id}, $old->{id}, '  the same node');
    is(nodes()->{gamma}{address}, $old->{address}, '  at the same address');
}

# --- a node started while the server is down ---------------------------------

{
    $srv->kill9;
    start('zeta');
    ok(wait_until(10, sub { () = $N{zeta}{node}->log_text =~ m{/api/register}g >= 2 }),
       'zeta: retries while the server is down')
        or diag($N{zeta}{node}->log_text);
    sleep 2;
    ok($N{zeta}{node}->running, '  and keeps running');
    $srv->start;
    ok(wait_until(15, sub { nodes()->{zeta} }), 'zeta: joined once the server is up')
        or diag($N{zeta}{node}->log_text);
    my $zkey = nodes()->{zeta}{public_key};
    ok(wait_until(10, sub { exists wg_dump($hubns->{ns}, $hubns->{ifname})->{peers}{$zkey} }),
       'hub: zeta is a peer');
    ok(ping_ok($N{zeta}, $list->{beta}{address}), 'ping zeta -> beta through the hub');
}

for my $name (qw(alpha beta gamma zeta)) {
    is($N{$name}{node}->stop, 0, "$name: stops with status 0");
}
is($hub->stop, 0, 'hub: stops with status 0');
for my $w (values %N) {
    unlike($w->{node}->log_text, qr/[0-9a-f]{64}/, "$w->{name}: no token in the log");
}

done_testing();


# a device's configuration and sessions, without the traffic counters
sub sessions {
    my ($d) = @_;
    return { key => $d->{public_key}, port => $d->{port},
             map { my $p = $d->{peers}{$_};
                   ($_ => "$p->{allowed} $p->{endpoint} $p->{keepalive} $p->{handshake}") }
             keys %{ $d->{peers} } };
}

sub is_deeply_quiet {
    my ($got, $want) = @_;
    return 0 unless ref $got eq 'HASH' && keys %$got == keys %$want;
    for (keys %$want) {
        return 0 unless defined $got->{$_} && $got->{$_} eq $want->{$_};
    }
    return 1;
}
