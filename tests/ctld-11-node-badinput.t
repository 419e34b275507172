# The node role against a fake server that says what the test wants: what
# the node sends (mesh headers, or our own app id without the mesh; the
# join; the discovery report), and what it does with malformed answers:
# each one is refused with a log line, and nothing of it ever reaches the
# interface or the hosts file, also not the valid half of a delta whose
# other half is bad.  The hosts block is replaced in place in a file with
# lines around it and no final newline.
#
# Run as root from the repository root: prove tests/ctld-11-node-badinput.t

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use NodeTest;
use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
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
my $APP = 'c0c0000000000000000000000000000000000003';
my $SERVER_APP = 'dead000000000000000000000000000000000001';
my $EPOCH = '0123456789abcdef';
my $POOL = '100.128.0.0/10';
my $w = ns_add('bad', 2);
my $agent = start_agent($DIR, 'bad', $APP);
my @fakes;
END {
    local $?;
    kill 'KILL', @fakes;
    waitpid $_, 0 for @fakes;
    system("umount $DIR/hosts-bm 2>/dev/null") if -e "$DIR/hosts-bm";
}

# --- the fake server ---------------------------------------------------------

# serves HTTP on a unix socket; $handler->(method, path, headers, body)
# gives (status, body); every request is logged as one JSON line
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
            print $log $JSON->encode({ method => $method, path => $path,
                                       headers => \%h, body => $body }), "\n";
            my ($st, $out) = $handler->($method, $path, \%h, $body);
            print $c "HTTP/1.1 $st X\r\nContent-Type: application/json\r\n"
                . "Content-Length: " . length($out) . "\r\nConnection: close\r\n\r\n$out";
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

# --- what the node sends -------------------------------------------------------

# the fake servers have no hub to shake hands with: on --transport auto the
# node would move the hub's endpoint to the relay, which is not under test
sub node_args {
    my ($sock, @more) = @_;
    return ('--server-url', "unix:$sock", '--agent-socket', $agent,
            '--state-dir', "$DIR/state", '--retry-max', '1s',
            '--transport', 'udp', @more);
}

# mesh: the server's app in x-dstack-target-app, and no identity of ours
for my $case ([$SERVER_APP, $SERVER_APP], ['self', $APP]) {
    my ($arg, $want) = @$case;
    my $sock = "$DIR/mesh-$arg.sock";
    fake_server($sock, sub { (403, '{"error":"Forbidden"}') });
    my $node = start_node($DIR, $w, node_args($sock, '--server-app-id', $arg,
                                               '--hosts-file', 'none'));
    ok(wait_until(10, sub { requests($sock) >= 2 }),
       "--server-app-id $arg: the node retries a refused register");
    my ($r) = requests($sock);
    is($r->{path}, "/api/register?instance_id=" . instance_id() . '',
       '  GET /api/register with its instance id');
    is($r->{headers}{'x-dstack-target-app'}, $want, "  x-dstack-target-app: $want");
    is($r->{headers}{'x-dstack-target-port'}, '443', '  x-dstack-target-port: 443');
    ok(!exists $r->{headers}{'x-dstack-app-id'}, '  no x-dstack-app-id of its own');
    like($node->log_text, qr{/api/register: 403 Forbidden}, '  the refusal logged');
    is($node->stop, 0, '  SIGTERM while retrying: exit status 0');
}

sub instance_id {
    my ($st, $out) = (0, `curl -s --unix-socket $agent http://x/Info`);
    return decode_json($out)->{instance_id};
}

# --- a node that joins, then gets bad answers ------------------------------

my $HUB = wg_key();
my $P1 = wg_key();
my $P2 = wg_key();
my $SELF_ADDR = '100.128.0.2';
my $NET = $w->{ip} =~ s/\.\d+$//r;

sub peer {
    my ($id, $name, $key, $addr, $ep, %o) = @_;
    return { id => $id, name => $name, dns_name => "$name.dstack.internal",
             public_key => $key, address => $addr,
             allowed_ips => [$o{allowed} // "$addr/32"],
             endpoint => $ep, hub => $id == 0 ? JSON::PP::true : JSON::PP::false,
             %{ $o{extra} // {} } };
}
sub hub_peer { peer(0, 'vpc-server', $HUB, '100.128.0.1', "$NET.1:51820",
                    allowed => $_[0] // $POOL) }
my $p1 = peer(2, 'one', $P1, '100.128.0.3', "$NET.3:51820");

sub snapshot { $JSON->encode({ epoch => $EPOCH, version => 5,
                               snapshot => JSON::PP::true, peers => [@_] }) }
sub delta {
    my (%d) = @_;
    return $JSON->encode({ epoch => $d{epoch} // $EPOCH, version => $d{version} // 6,
                           snapshot => JSON::PP::false, added => $d{added} // [],
                           changed => $d{changed} // [], removed => $d{removed} // [] });
}
my $GOOD = snapshot(hub_peer(), $p1);

# [status, body, what the log must say]; each is answered to a node that
# just applied $GOOD, and followed by $GOOD again
my $p3 = peer(3, 'three', wg_key(), '100.128.0.4', "$NET.4:51820");
my @bad = (
    [200, '{"epoch": ', qr/not a JSON object/, 'truncated JSON'],
    [200, qq({"epoch":"$EPOCH","epoch":"$EPOCH","version":5,"snapshot":true,"peers":[]}),
     qr/not a JSON object/, 'a member twice'],
    [200, '[]', qr/not a JSON object/, 'an array'],
    [500, '{"error":"boom"}', qr/peers: 500 boom/, 'a 500'],
    [200, $JSON->encode({ version => 5, snapshot => JSON::PP::true, peers => [] }),
     qr/no valid epoch/, 'no epoch'],
    [200, $JSON->encode({ epoch => $EPOCH, version => 5, snapshot => 'yes', peers => [] }),
     qr/no valid epoch, version and snapshot flag/, 'a snapshot flag that is a string'],
    [200, snapshot($p1), qr/the hub is missing/, 'no hub'],
    [200, snapshot(hub_peer(), peer(2, 'one', 'not-a-key', '100.128.0.3', undef)),
     qr/public key is not a WireGuard key/, 'a bad key'],
    [200, snapshot(hub_peer(), peer(2, 'one', encode_base64('x' x 31, ''), '100.128.0.3', undef)),
     qr/public key is not a WireGuard key/, 'a key of 31 bytes'],
    [200, snapshot(hub_peer(), $p1, peer(4, 'four', wg_key(), '10.1.2.3', undef)),
     qr/an address outside the pool/, 'an address outside the pool'],
    [200, snapshot(hub_peer(), $p1, peer(4, 'four', wg_key(), '100.128.0.0', undef)),
     qr/an address outside the pool/, 'the pool\'s network address'],
    [200, snapshot(hub_peer(), $p1, peer(4, 'four', wg_key(), '100.128.0.5', undef,
                                         allowed => '0.0.0.0/0')),
     qr{allowed_ips is not its address/32}, 'a node claiming 0.0.0.0/0'],
    [200, snapshot(hub_peer('10.0.0.0/8'), $p1),
     qr/not the one this node joined/, 'a hub with another pool'],
    [200, snapshot(hub_peer(), $p1, peer(4, 'four', $P1, '100.128.0.5', undef)),
     qr/a public key appears twice/, 'a key twice'],
    [200, snapshot(hub_peer(), $p1, peer(4, 'four', wg_key(), '100.128.0.3', undef)),
     qr/an address appears twice/, 'an address twice'],
    [200, snapshot(hub_peer(), $p1, peer(2, 'four', wg_key(), '100.128.0.5', undef)),
     qr/a peer id appears twice/, 'an id twice'],
    [200, snapshot(hub_peer(), $p1, peer(4, 'four', 'SELF', '100.128.0.5', undef)),
     qr/this node's own key/, 'our own key'],
    [200, snapshot(hub_peer(), $p1, peer(4, 'four', wg_key(), $SELF_ADDR, undef)),
     qr/this node's own address/, 'our own address'],
    [200, snapshot(hub_peer(), $p1, peer(4, "evil\n1.2.3.4 bank", wg_key(), '100.128.0.5', undef)),
     qr/name is not a DNS label/, 'a name with a newline (hosts injection)'],
    [200, snapshot(hub_peer(), $p1, peer(4, 'four', wg_key(), '100.128.0.5', '1.2.3.4')),
     qr/endpoint is not HOST:PORT/, 'an endpoint without port'],
    [200, snapshot(hub_peer(), $p1, { %{ peer(4, 'four', wg_key(), '100.128.0.5', undef) },
                                       hub => JSON::PP::true }),
     qr/hub flag does not match/, 'a second hub'],
    [200, $JSON->encode({ epoch => $EPOCH, version => 5, snapshot => JSON::PP::true,
                          peers => [(0) x ((1 << 20) + 1)] }),
     qr/more peers than WireGuard takes/, '2^20+1 peers'],
    [200, delta(added => [$p3, peer(4, 'four', 'bad', '100.128.0.5', undef)]),
     qr/public key is not a WireGuard key/, 'a delta with one good and one bad peer'],
    [200, delta(added => [$p3], epoch => 'fedcba9876543210'),
     qr/does not follow/, 'a delta of another epoch'],
    [200, delta(added => [$p3], version => 4), qr/does not follow/,
     'a delta older than asked'],
    [200, delta(added => [$p3], removed => [{ id => 3, public_key => $p3->{public_key} }]),
     qr/both sets and removes/, 'a delta setting and removing one peer'],
    [200, delta(changed => [$p1, $p1]), qr/names a peer twice/, 'a delta naming a peer twice'],
    [200, delta(removed => [{ id => 'two' }]), qr/a removal is not/, 'a malformed removal'],
    [200, delta(added => [peer(4, 'four', $P1, '100.128.0.5', undef)]),
     qr/a public key appears twice/, 'a delta adding a key that is there'],
    [200, delta(changed => [peer(2, 'one', $P1, '100.128.0.9', "$NET.3:51820",
                                 allowed => '100.128.0.0/10')]),
     qr{allowed_ips is not its address/32}, 'a delta widening a peer'],
);
my $p5 = peer(5, 'five', wg_key(), '100.128.0.6', undef);
my $p2 = peer(4, 'two', $P2, '100.128.0.5', "$NET.5:51821");
my $FINAL = delta(added => [$p2, $p5]);

my $sock = "$DIR/fake.sock";
my $probe = "$DIR/probes";
my $calls = 0;
my $self = '';          # the node's public key, as it joins
fake_server($sock, sub {
    my ($method, $path, $h, $body) = @_;
    if ($path =~ m{^/api/register}) {
        return (200, $JSON->encode({ pre_auth_key => 'ab' x 32, shared_key => 'x',
                                     server_url => '' }));
    }
    if ($path eq '/api/v1/join') {
        $self = decode_json($body)->{public_key};
        return (200, $JSON->encode({
            node_id => 1, name => 'bad', dns_name => 'bad.dstack.internal',
            address => $SELF_ADDR, prefix => $POOL, node_token => 'cd' x 32,
            epoch => $EPOCH, version => 5, snapshot => JSON::PP::true,
            peers => [hub_peer(), $p1] }));
    }
    if ($path =~ m{^/api/nodes/update}) {
        return (200, '{"status":"created"}');
    }
    return (404, '{"error":"Not found"}') unless $path =~ m{^/api/v1/peers};

    # what the device and hosts file hold now: the node has dealt with the
    # previous answer, and asks again
    my $d = wg_dump($w->{ns}, $w->{ifname});
    open my $fh, '>>', $probe or die;
    print $fh $JSON->encode({ call => $calls, path => $path,
        peers => { map { ($_ => "$d->{peers}{$_}{allowed} $d->{peers}{$_}{endpoint}") }
                   keys %{ $d->{peers} } },
        hosts => read_text("$DIR/hosts") }), "\n";
    close $fh;

    my $i = $calls++;
    if ($i < 2 * @bad) {
        return (200, $GOOD) if $i % 2;
        my ($st, $out) = @{ $bad[$i / 2] };
        $out =~ s/"SELF"/"$self"/;
        return ($st, $out);
    }
    return (200, $FINAL) if $i == 2 * @bad;
    sleep 1;
    return (200, delta(version => 6));
});

my $HOSTS_HEAD = "127.0.0.1 localhost\n# BEGIN dstack-ctld\nold stale\n# END dstack-ctld\n";
my $HOSTS_TAIL = "10.0.0.7 tail.example";        # no final newline
write_text("$DIR/hosts", $HOSTS_HEAD . $HOSTS_TAIL);

my $node = start_node($DIR, $w, node_args($sock, '--server-app-id', 'none',
    '--hosts-file', "$DIR/hosts", '--endpoint', "$w->{ip}:51820",
    '--name', 'bad', '--node-type', 'worker'));

ok(wait_until(120, sub { my $seen = () = (read_text($probe) // '') =~ /\n/g;
                         $seen > 2 * @bad + 1 }),
   'the node went through every answer') or diag($node->log_text);
ok($node->running, 'and is still running');

my @req = requests($sock);
my ($reg) = grep { $_->{path} =~ m{^/api/register} } @req;
is($reg->{headers}{'x-dstack-app-id'}, $APP,
   'no mesh: the node sends its own app id, as nginx would');
ok(!exists $reg->{headers}{'x-dstack-target-app'}, '  and no target app');
is($reg->{path}, '/api/register?instance_id=' . instance_id() . '&node_name=bad',
   '  register with instance id and name');
my ($join) = grep { $_->{path} eq '/api/v1/join' } @req;
my $self_key = eval { decode_json($join->{body})->{public_key} } // '';
is_deeply(decode_json($join->{body}),
          { pre_auth_key => 'ab' x 32, public_key => $self_key, name => 'bad',
            endpoint => "$w->{ip}:51820", with_peers => JSON::PP::true },
          'join: key, public key, name, endpoint');
is(wg_dump($w->{ns}, $w->{ifname})->{public_key}, $self_key,
   '  the public key of the interface');
my ($report) = grep { $_->{path} =~ m{^/api/nodes/update} } @req;
is($report->{method} . ' ' . $report->{path},
   'POST /api/nodes/update?uuid=' . instance_id()
   . "&tailscale_ip=$SELF_ADDR&hostname=bad.dstack.internal&node_type=worker",
   'report: uuid, VPN IP, hostname and type for discover');
my ($poll) = grep { $_->{path} =~ m{^/api/v1/peers} } @req;
is($poll->{headers}{authorization}, 'Bearer ' . ('cd' x 32), 'polls with the node token');

my @probes = map { decode_json($_) } split /\n/, read_text($probe);
my %base = ($HUB => "$POOL $NET.1:51820", $P1 => "100.128.0.3/32 $NET.3:51820");
my $BASE_HOSTS = "127.0.0.1 localhost\n# BEGIN dstack-ctld\n"
    . "100.128.0.2 bad.dstack.internal\n100.128.0.1 vpc-server.dstack.internal\n"
    . "100.128.0.3 one.dstack.internal\n# END dstack-ctld\n$HOSTS_TAIL";
my $log = $node->log_text;
for my $k (0 .. $#bad) {
    my ($st, undef, $msg, $name) = @{ $bad[$k] };
    my $after = $probes[2 * $k + 1];
    is_deeply($after->{peers}, \%base, "$name: the interface unchanged");
    is($after->{hosts}, $BASE_HOSTS, '  hosts unchanged');
    # a refused peer set is asked for afresh; a failed call is repeated;
    # another pool means joining again, which brings a new snapshot
    if ($msg =~ /JSON|500|joined/) {
        like($after->{path}, qr{since=5&}, '  then the node asks again');
    } else {
        like($after->{path}, qr{since=0&}, '  then the node asks for a snapshot');
    }
}
for my $k (0 .. $#bad) {
    my (undef, undef, $msg, $name) = @{ $bad[$k] };
    like($log, $msg, "logged: $name");
}
is(() = $log =~ /nothing applied/g, scalar(grep { $_->[2] !~ /JSON|500/ } @bad),
   'one "nothing applied" line per refused answer');
like($log, qr/pool changed: joining again/, 'another pool: the node joins again');
unlike($log, qr/bank/, 'the hostile name is not logged raw');

my $final = wg_dump($w->{ns}, $w->{ifname});
is_deeply({ map { ($_ => "$final->{peers}{$_}{allowed} $final->{peers}{$_}{endpoint}") }
            keys %{ $final->{peers} } },
          { %base, $P2 => "100.128.0.5/32 $NET.5:51821" },
          'a good delta after all that: applied (five has no endpoint: no peer)');
my $hosts = read_text("$DIR/hosts");
is($hosts, "127.0.0.1 localhost\n# BEGIN dstack-ctld\n"
           . "100.128.0.2 bad.dstack.internal\n100.128.0.1 vpc-server.dstack.internal\n"
           . "100.128.0.3 one.dstack.internal\n100.128.0.5 two.dstack.internal\n"
           . "100.128.0.6 five.dstack.internal\n# END dstack-ctld\n$HOSTS_TAIL",
   'hosts: the block in place, every name, the lines around it as they were');
my @st = stat "$DIR/hosts";
is($st[2] & 0777, 0644, 'hosts: mode 0644 kept');
my @key = stat "$DIR/state/node.key";
is($key[2] & 0777, 0600, 'node.key: mode 0600');
my @state = stat "$DIR/state/node.state";
is($state[2] & 0777, 0600, 'node.state: mode 0600');
unlike($log, qr/(ab){32}|(cd){32}/, 'neither the pre-auth key nor the token in the log');

is($node->stop, 0, 'SIGTERM: exit status 0');

# another namespace, the same interface name: wireguard-go's UAPI socket
# is a path shared by both, and must not be taken for this namespace's
{
    my $other = ns_add('oth', 3);
    $other->{ifname} = $w->{ifname};
    my $sock2 = "$DIR/fake2.sock";
    fake_server($sock2, sub {
        my ($method, $path) = @_;
        return (200, $JSON->encode({ pre_auth_key => 'ab' x 32 }))
            if $path =~ m{^/api/register};
        return (200, $JSON->encode({
            node_id => 9, name => 'oth', address => '100.128.0.9', prefix => $POOL,
            node_token => 'ef' x 32, epoch => $EPOCH, version => 5,
            snapshot => JSON::PP::true, peers => [hub_peer()] }))
            if $path eq '/api/v1/join';
        sleep 0.2;
        return (200, $GOOD) if $path =~ m{^/api/v1/peers};
        return (200, '{"status":"created"}');
    });
    my $before = wg_dump($w->{ns}, $w->{ifname});
    my $intruder = start_node($DIR, $other, node_args($sock2, '--server-app-id', 'none',
        '--state-dir', "$DIR/state2", '--hosts-file', 'none'));
    ok(wait_until(10, sub { $intruder->log_text =~ /no such interface in this network namespace/ }),
       'same --interface in another namespace: refused, with a hint')
        or diag($intruder->log_text);
    is_deeply(wg_dump($w->{ns}, $w->{ifname}), $before,
              '  the first namespace\'s interface untouched');
    is($intruder->stop, 0, '  SIGTERM: exit status 0');

    # a hosts file that is a bind mount, as Docker gives containers: it
    # cannot be renamed over, so it is rewritten in place
    my $bm = ns_add('bm', 4);
    write_text("$DIR/hosts-src", "127.0.0.1 localhost\n");
    write_text("$DIR/hosts-bm", '');
    system('mount', '--bind', "$DIR/hosts-src", "$DIR/hosts-bm") == 0
        or die "mount --bind failed";
    my $n3 = start_node($DIR, $bm, node_args($sock2, '--server-app-id', 'none',
        '--state-dir', "$DIR/state3", '--hosts-file', "$DIR/hosts-bm"));
    ok(wait_until(10, sub { (read_text("$DIR/hosts-src") // '') =~ /oth\.dstack\.internal/ }),
       'a bind-mounted hosts file gets the block') or diag($n3->log_text);
    like($n3->log_text, qr/cannot be renamed over \(Device or resource busy\): rewriting it in place/, '  in place, with a warning');
    like(read_text("$DIR/hosts-src"), qr/\A127\.0\.0\.1 localhost\n# BEGIN dstack-ctld\n/,
         '  after the lines that were there');
    is($n3->stop, 0, '  SIGTERM: exit status 0');
    system('umount', "$DIR/hosts-bm");

    # the one writable file of a read-only directory, as systemd's
    # ProtectSystem=strict with ReadWritePaths=/etc/hosts leaves /etc
    mkdir "$DIR/etc-ro";
    write_text("$DIR/etc-ro/hosts", "127.0.0.1 localhost\n");
    system("mount --bind $DIR/etc-ro $DIR/etc-ro && mount -o remount,bind,ro $DIR/etc-ro"
           . " && mount --bind $DIR/etc-ro/hosts $DIR/etc-ro/hosts"
           . " && mount -o remount,bind,rw $DIR/etc-ro/hosts") == 0
        or die "read-only mounts failed";
    my $ro = ns_add('ro', 5);
    my $n4 = start_node($DIR, $ro, node_args($sock2, '--server-app-id', 'none',
        '--state-dir', "$DIR/state4", '--hosts-file', "$DIR/etc-ro/hosts"));
    ok(wait_until(10, sub { (read_text("$DIR/etc-ro/hosts") // '') =~ /oth\.dstack\.internal/ }),
       'a writable hosts file in a read-only directory gets the block') or diag($n4->log_text);
    is($n4->stop, 0, '  SIGTERM: exit status 0');
    system("umount $DIR/etc-ro/hosts; umount $DIR/etc-ro");
}

done_testing();
