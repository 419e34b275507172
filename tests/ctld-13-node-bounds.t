# The node role when the server is away or refuses it: only the server's
# 410 Gone ends a node; a 401 (nginx refusing, a server whose database was
# replaced) is retried and, when it lasts, answered by joining again; a
# node rebooted while the server is down comes up with its last peer set;
# a node of a large VPC spreads its retries over a wider window.
#
# A fake server (a unix socket answering what the test wants) for what the
# real one cannot be made to say, the real server, its hub and two nodes in
# network namespaces with wireguard-go for the rest.
#
# Run as root from the repository root: prove tests/ctld-13-node-bounds.t

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use NodeTest;
use File::Temp qw(tempdir);
use IO::Socket::UNIX;
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
my $JSON = JSON::PP->new->canonical;
my $APP = 'd0d0000000000000000000000000000000000004';
my $EPOCH = '0123456789abcdef';
my $POOL = '100.128.0.0/10';
my @fakes;
END {
    local $?;
    kill 'KILL', @fakes;
    waitpid $_, 0 for @fakes;
}

# --- a fake server: $handler->(method, path) gives (status, body) -------------

sub fake_server {
    my ($sock, $handler) = @_;
    my $listen = IO::Socket::UNIX->new(Local => $sock, Listen => 16)
        or die "$sock: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $SIG{TERM} = 'DEFAULT';
        open my $log, '>>', "$sock.log" or die;
        $log->autoflush(1);
        while (my $c = $listen->accept) {
            my $line = <$c> // next;
            my ($method, $path) = $line =~ m{^(\S+) (\S+) HTTP/1\.1\r\n\z} or next;
            my %h;
            while (defined(my $l = <$c>)) {
                last if $l eq "\r\n";
                $h{lc $1} = $2 if $l =~ /^([^:]+):\s*(.*?)\r\n\z/;
            }
            my $body = '';
            read($c, $body, $h{'content-length'}) if $h{'content-length'};
            print $log $JSON->encode({ method => $method, path => $path }), "\n";
            my ($st, $out, $type) = $handler->($method, $path);
            print $c "HTTP/1.1 $st X\r\nContent-Type: " . ($type // 'application/json')
                . "\r\nContent-Length: " . length($out) . "\r\nConnection: close\r\n\r\n$out";
            close $c;
        }
        POSIX::_exit(0);
    }
    close $listen;
    push @fakes, $pid;
    return $pid;
}

sub requests {
    my ($sock) = @_;
    return map { decode_json($_) } grep { /\S/ } split /\n/, read_text("$sock.log") // '';
}

sub peer {
    my ($id, $name, $key, $addr, $ep) = @_;
    return { id => $id, name => $name, dns_name => "$name.dstack.internal",
             public_key => $key, address => $addr,
             allowed_ips => [$id == 0 ? $POOL : "$addr/32"], endpoint => $ep,
             hub => $id == 0 ? JSON::PP::true : JSON::PP::false };
}

sub join_answer {
    my (@peers) = @_;
    return $JSON->encode({ node_id => 1, name => 'fake', dns_name => 'fake.dstack.internal',
        address => '100.128.0.2', prefix => $POOL, node_token => 'cd' x 32,
        epoch => $EPOCH, version => 5, snapshot => JSON::PP::true, peers => [@peers] });
}

my $HUB = peer(0, 'vpc-server', wg_key(), '100.128.0.1', '10.99.0.1:51820');
my $SNAP = $JSON->encode({ epoch => $EPOCH, version => 5, snapshot => JSON::PP::true,
                           peers => [$HUB] });
my $NGINX_401 = "<html><head><title>401 Authorization Required</title></head></html>";

# --- 401 is retried, three in a row mean joining again; 410 ends the node ----

my $fw = ns_add('fk', 2);
my $agent = start_agent($DIR, 'fk', $APP);
{
    my $sock = "$DIR/fake.sock";
    # poll answers in order; then 410 for ever
    my @script = ([200, $SNAP], [401, $NGINX_401, 'text/html'], [401, $NGINX_401, 'text/html'],
                  [200, $SNAP], [401, '{"error":"unknown node token"}'],
                  [401, '{"error":"unknown node token"}'], [401, '{"error":"unknown node token"}'],
                  [200, $SNAP]);
    my $polls = 0;
    fake_server($sock, sub {
        my ($method, $path) = @_;
        return (200, $JSON->encode({ pre_auth_key => 'ab' x 32 })) if $path =~ m{^/api/register};
        return (200, join_answer($HUB)) if $path eq '/api/v1/join';
        return (200, '{"status":"created"}') if $path =~ m{^/api/nodes/update};
        my $i = $polls++;
        return @{ $script[$i] } if $i < @script;
        return (410, '{"error":"node removed from the VPC","reason":"removed by the admin","node_id":1}');
    });
    my $node = start_node($DIR, $fw, '--server-url', "unix:$sock", '--server-app-id', 'none',
        '--agent-socket', $agent, '--state-dir', "$DIR/state-fk", '--hosts-file', 'none',
        '--retry-max', '1s');
    ok(wait_until(60, sub { !$node->running }), 'the node ends in the end')
        or diag($node->log_text);
    my @req = requests($sock);
    my @paths = map { $_->{path} =~ m{^/api/v1/(join|peers)} ? $1 : () } @req;
    is_deeply([@paths[0 .. 9]],
              ['join', ('peers') x 7, 'join', 'peers'],
              'through nginx\'s 401s and the server\'s, it keeps polling; after three'
              . ' in a row it joins again') or diag(explain(\@paths));
    my $log = $node->log_text;
    like($log, qr{/api/v1/peers: 401 -}, 'nginx\'s 401 (no JSON) logged');
    like($log, qr/the node token was refused \(1 in a row\); trying again/, '  retried');
    like($log, qr/refused 3 times in a row: joining again/, 'three in a row: joining again');
    is($node->wait_exit(5), 3, 'only the 410 ends it, with status 3');
    like($log, qr/410 node removed from the VPC \(removed by the admin\)/,
         '  logged with the server\'s reason');
    ok(!-e "$DIR/state-fk/node.state" && !-e "$DIR/state-fk/node.peers",
       '  its state and saved peers forgotten');
}

# --- a large VPC: the first retry's window grows with it ----------------------

{
    my $sock = "$DIR/big.sock";
    my @peers = ($HUB, map { peer($_, "n$_", wg_key(), sprintf('100.128.%d.%d', $_ >> 8, $_ & 255),
                                    undef) } 3 .. 3002);
    my $polls = 0;
    fake_server($sock, sub {
        my ($method, $path) = @_;
        return (200, $JSON->encode({ pre_auth_key => 'ab' x 32 })) if $path =~ m{^/api/register};
        return (200, join_answer(@peers)) if $path eq '/api/v1/join';
        return (200, '{"status":"created"}') if $path =~ m{^/api/nodes/update};
        return (503, '{"error":"server is shutting down"}');
    });
    my $node = start_node($DIR, $fw, '--server-url', "unix:$sock", '--server-app-id', 'none',
        '--agent-socket', $agent, '--state-dir', "$DIR/state-big", '--hosts-file', 'none',
        '--log-level', 'debug', '--retry-max', '60s');
    ok(wait_until(20, sub { $node->log_text =~ /retrying in \d+ ms/ }),
       'the server fails: the node retries') or diag($node->log_text);
    like($node->log_text, qr/retrying in \d+ ms \(window 30010 ms\)/,
         'a VPC of 3001 members: the first retry within 30 s, not 1 s');
    is($node->stop, 0, 'SIGTERM: exit status 0');
}

# --- the real server: rebooted while the server is down; a replaced database --

my $hubns = ns_add('hb', 1);
my %N;
for (['alpha', 11], ['beta', 12]) {
    my ($name, $host) = @$_;
    my $w = ns_add(substr($name, 0, 3), $host);
    $w->{name} = $name;
    $w->{endpoint} = "$w->{ip}:51820";
    $w->{agent} = start_agent($DIR, $name, $APP);
    $w->{state} = "$DIR/state-$name";
    $w->{hosts} = "$DIR/hosts-$name";
    $N{$name} = $w;
}
my $usock = "$DIR/ctld.sock";
my $srv = start_server(unix => $usock, dir => $DIR,
                       args => ['--wg-endpoint', "$hubns->{ip}:51820",
                                '--server-app-id', $APP]);
my $hub = start_node($DIR, $hubns, '--hub', '--data-dir', $srv->{data},
                     '--server-url', "unix:$usock", '--hosts-file', 'none',
                     '--retry-max', '2s');

sub start {
    my ($name) = @_;
    my $w = $N{$name};
    $w->{node} = start_node($DIR, $w, '--server-url', "unix:$usock",
        '--server-app-id', 'none', '--agent-socket', $w->{agent},
        '--state-dir', $w->{state}, '--hosts-file', $w->{hosts}, '--name', $name,
        '--retry-max', '2s', '--poll-wait', '20s', '--endpoint', $w->{endpoint});
    return $w->{node};
}

sub nodes {
    my ($code, $out) = $srv->cli('nodes', 'list', '--json');
    return {} if $code;
    return { map { $_->{name} => $_ } @{ decode_json($out)->{nodes} } };
}

sub peer_keys {
    my ($w) = @_;
    my $d = wg_dump($w->{ns}, $w->{ifname}) or return '';
    return join ' ', sort keys %{ $d->{peers} };
}

sub ping_ok {
    my ($from, $to) = @_;
    for (1 .. 5) {
        my ($st) = in_ns($from->{ns}, 'ping', '-c', '1', '-W', '2', $to);
        return 1 if $st == 0;
    }
    return 0;
}

start($_) for qw(alpha beta);
ok(wait_until(20, sub { keys %{ nodes() } == 2 }), 'alpha and beta joined');
my $list = nodes();
my $hub_key;
ok(wait_until(15, sub {
    my $d = wg_dump($hubns->{ns}, $hubns->{ifname});
    $hub_key = $d->{public_key} if $d;
    $d && keys %{ $d->{peers} } == 2 }), 'the hub has both');
my $want = join ' ', sort $hub_key, $list->{alpha}{public_key};
ok(wait_until(10, sub { peer_keys($N{beta}) eq $want }), 'beta: the hub and alpha');
ok(ping_ok($N{beta}, $list->{alpha}{address}), 'ping beta -> alpha');
my @st = stat "$N{beta}{state}/node.peers";
is($st[2] & 0777, 0600, 'beta: node.peers saved, mode 0600');

{
    # a reboot: the node and its interface (and wireguard-go with it) gone
    is($N{beta}{node}->stop, 0, 'beta stopped');
    in_ns($N{beta}{ns}, 'ip', 'link', 'del', $N{beta}{ifname});
    ok(wait_until(5, sub { !-e "/var/run/wireguard/$N{beta}{ifname}.sock" }),
       'beta: its interface is gone, as after a reboot');
    write_text($N{beta}{hosts}, "127.0.0.1 localhost\n");
    $srv->kill9;
    start('beta');
    ok(wait_until(15, sub { peer_keys($N{beta}) eq $want }),
       'the server down, beta comes up with its saved peers: the hub and alpha')
        or diag($N{beta}{node}->log_text);
    like($N{beta}{node}->log_text, qr/saved peer set \(version \d+, 2 members\) in place/,
         '  saying so');
    ok(ping_ok($N{beta}, $list->{alpha}{address}), '  ping beta -> alpha, the server down');
    ok(ping_ok($N{beta}, '100.128.0.1'), '  ping beta -> the hub');
    like(read_text($N{beta}{hosts}), qr/^\Q$list->{alpha}{address}\E alpha\.dstack\.internal$/m,
         '  and alpha in its hosts file');
}

{
    # a replaced database: the server knows neither token; the nodes join again
    rename $srv->db, "$srv->{data}/old.db" or die;
    unlink map { $srv->db . $_ } '-wal', '-shm';
    $srv->start;
    ok(wait_until(40, sub { keys %{ nodes() } == 2 }),
       'a server with a new database: both nodes join again')
        or diag($N{alpha}{node}->log_text);
    for my $name (qw(alpha beta)) {
        ok($N{$name}{node}->running, "$name: still running");
        like($N{$name}{node}->log_text, qr/token was refused \(1 in a row\)/,
             "$name: the 401 taken for a glitch first");
    }
    $list = nodes();
    $want = join ' ', sort $hub_key, $list->{alpha}{public_key};
    ok(wait_until(15, sub { peer_keys($N{beta}) eq $want }), 'beta: peers as before');
    # both moved: each must have the other at its new address before a
    # ping can come back (beta's poll may bring alpha's change a bit later)
    ok(wait_until(20, sub {
        my $d = wg_dump($N{beta}{ns}, $N{beta}{ifname});
        ($d->{peers}{ $list->{alpha}{public_key} }{allowed} // '')
            eq "$list->{alpha}{address}/32" }),
       'beta: alpha at the address it has now');
    ok(wait_until(20, sub {
        (in_ns($N{alpha}{ns}, 'ip', '-o', '-4', 'addr', 'show', $N{alpha}{ifname}))[1]
            =~ m{ \Q$list->{alpha}{address}\E/} }),
       'alpha: its interface has its new address (the old one was beta\'s)');
    # alpha's peer for beta is new (beta had left its set): alpha starts.
    # Both nodes re-join at once here, and until both have applied the
    # other's re-join a reply can take the hub's path, which the other
    # side's cryptokey routing drops: connectivity comes back, so wait.
    ok(wait_until(30, sub { ping_ok($N{alpha}, $list->{beta}{address}) }),
       'ping alpha -> beta')
        or diag(explain(peer_keys($N{alpha}), $list));
    is(wg_dump($N{alpha}{ns}, $N{alpha}{ifname})->{peers}{ $list->{beta}{public_key} }{allowed},
       "$list->{beta}{address}/32", 'alpha: beta at the address it has now');
}

for my $name (qw(alpha beta)) {
    is($N{$name}{node}->stop, 0, "$name: stops with status 0");
    unlike($N{$name}{node}->log_text, qr/[0-9a-f]{64}/, "$name: no token in the log");
}
is($hub->stop, 0, 'hub: stops with status 0');

done_testing();
