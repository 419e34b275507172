# Peer updates: long polls, deltas, snapshots, versions across restarts.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use HTTP::Tiny;
use Test::More;
use List::Util ();
use Time::HiRes qw(sleep time);
use POSIX qw(:sys_wait_h);

my $APP = 'feed01';
my $srv = start_server(args => ['--tombstone-ttl', '1h', '--server-app-id', $APP]);

my $me = join_node($srv, $APP, 'watcher', 'watcher')->{json};
my $tok = $me->{node_token};

sub poll {
    my ($since, $wait, %o) = @_;
    my $q = "/api/v1/peers?since=$since" . (defined $wait ? "&wait=$wait" : '')
            . ($o{epoch} ? "&epoch=$o{epoch}" : '');
    my $t0 = time;
    my $res = req($srv, 'GET', $q, token => $o{token} // $tok,
                  http => HTTP::Tiny->new(timeout => 60));
    $res->{done} = time;
    $res->{elapsed} = $res->{done} - $t0;
    return $res;
}

# a poll in a child process; poll_result() gives its answer
sub poll_async {
    my ($since, $wait, $token) = @_;
    return in_child(sub {
        my $res = poll($since, $wait, token => $token);
        return { status => $res->{status}, elapsed => $res->{elapsed},
                 done => $res->{done}, json => $res->{json} };
    });
}

sub poll_result { child_result($_[0]) }

sub metric {
    my ($name) = @_;
    my $text = req($srv, 'GET', '/metrics')->{content};
    return $text =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

# --- snapshots and immediate answers ---
my $snap = poll(0);
is($snap->{status}, 200, 'snapshot from 0');
is($snap->{json}{snapshot}, JSON::PP::true, 'flagged as snapshot');
is($snap->{json}{version}, $me->{version}, 'at the current version');
is($snap->{json}{epoch}, $me->{epoch}, 'epoch');

my $v = $snap->{json}{version};
my $a = join_node($srv, $APP, 'a', 'node-a')->{json};
my $res = poll($v, 30);
ok($res->{elapsed} < 1, 'changes pending: answered at once');
is($res->{json}{snapshot}, JSON::PP::false, 'a delta');
is($res->{json}{version}, $a->{version}, 'delta up to the new version');
is_deeply([map { $_->{name} } @{ $res->{json}{added} }], ['node-a'], 'added: node-a');
is_deeply($res->{json}{changed}, [], 'nothing changed');
is_deeply($res->{json}{removed}, [], 'nothing removed');

# --- idle polls wait for `wait` seconds ---
$v = $res->{json}{version};
$res = poll($v, 2);
ok($res->{elapsed} >= 1.9 && $res->{elapsed} < 3.5, sprintf('idle poll returned after wait (%.2fs)', $res->{elapsed}));
is($res->{json}{version}, $v, 'idle poll: same version');
is_deeply([@{ $res->{json}{added} }, @{ $res->{json}{changed} }, @{ $res->{json}{removed} }], [],
          'idle poll: empty delta');
$res = poll($v, 0);
ok($res->{elapsed} < 0.5, 'wait=0 answers at once');
$res = poll($v);
ok($res->{elapsed} < 0.5, 'no wait answers at once');

# --- a parked poll wakes when another node joins ---
my @waiting = map { poll_async($v, 60) } 1 .. 3;
my $deadline = time + 5;
sleep 0.05 while (metric('dstack_ctld_longpolls_waiting') // 0) < 3 && time < $deadline;
is(metric('dstack_ctld_longpolls_waiting'), 3, 'three polls parked (metric)');
# wake-ups are timed from the event they follow: the join's answer (the
# join itself, a durable commit, is not part of it)
my $b = join_node($srv, $APP, 'b', 'node-b')->{json};
my $joined = time;
my @done;
for my $p (@waiting) {
    my $got = poll_result($p);
    push @done, $got->{done};
    ok($got->{done} - $joined < 1,
       sprintf('parked poll woke promptly after the join (%.2fs)', $got->{done} - $joined));
    is_deeply([map { $_->{name} } @{ $got->{json}{added} }], ['node-b'], 'with node-b added');
}
my ($first, $last) = (List::Util::min(@done), List::Util::max(@done));
ok($last - $first < 1, sprintf('all woke together (%.2fs apart)', $last - $first));
is(metric('dstack_ctld_longpolls_waiting'), 0, 'none parked now');

# --- removal wakes pollers; the removed node's own poll gets 410 ---
$v = $b->{version};
my $watch = poll_async($v, 60);
my $victim = poll_async($v, 60, $b->{node_token});
sleep 0.3;
my ($rc, $out) = $srv->cli('nodes', 'remove', 'node-b');
my $removed = time;
is($rc, 0, 'CLI removal');
my $got = poll_result($watch);
ok($got->{done} - $removed < 1, 'removal reached the poller promptly');
is_deeply($got->{json}{removed}, [{ id => $b->{node_id}, public_key => $got->{json}{removed}[0]{public_key} }],
          'removed: node-b');
like($got->{json}{removed}[0]{public_key}, qr/^.{43}=$/, 'removal names the public key');
my $vic = poll_result($victim);
is($vic->{status}, 410, 'the removed node\'s poll ends with 410 Gone');
ok($vic->{done} - $removed < 1, 'promptly');

# --- deltas over a sequence reconstruct the server's peer set ---
my %mirror = map { $_->{id} => $_ } @{ poll(0)->{json}{peers} };
$v = poll(0)->{json}{version};
my @names;
my $step = 0;
my %tokens;
for my $round (1 .. 6) {
    # joins
    for my $i (1 .. 3) {
        my $name = "r$round-n$i";
        my $j = join_node($srv, $APP, "inst-$name", $name,
                          endpoint => "198.51.100.$i:5182$round")->{json};
        $tokens{$name} = $j;
        push @names, $name;
    }
    # a re-join with a new key and endpoint (a change)
    my $rj = $names[int rand @names];
    my $k = register($srv, $APP, "inst-$rj", $rj);
    req($srv, 'POST', '/api/v1/join', app => $APP,
        body => { pre_auth_key => $k, public_key => wg_key(), endpoint => "203.0.113.$round:1" });
    # a removal
    my $gone = splice @names, int rand @names, 1;
    $srv->cli('nodes', 'remove', $gone);

    # apply the delta since our last version
    my $d = poll($v)->{json};
    if ($d->{snapshot}) {
        %mirror = map { $_->{id} => $_ } @{ $d->{peers} };
    } else {
        $mirror{ $_->{id} } = $_ for @{ $d->{added} }, @{ $d->{changed} };
        delete $mirror{ $_->{id} } for @{ $d->{removed} };
    }
    ok($d->{version} > $v, "round $round: version advanced");
    $v = $d->{version};
    my $truth = poll(0)->{json};
    is($truth->{version}, $v, "round $round: same version as a snapshot");
    is_deeply(\%mirror, { map { $_->{id} => $_ } @{ $truth->{peers} } },
              "round $round: deltas reconstruct the peer set");
}

# --- versions keep increasing across restarts; stale epochs get snapshots ---
my $before = poll(0)->{json}{version};
$srv->restart;
$res = poll($before);
is($res->{status}, 200, 'token valid after restart');
is($res->{json}{snapshot}, JSON::PP::false, 'diffable across a restart');
is($res->{json}{version}, $before, 'version kept');
my $c = join_node($srv, $APP, 'c', 'node-c')->{json};
ok($c->{version} > $before, 'versions keep increasing after a restart');
$srv->kill9;
$srv->start;
is(poll(0)->{json}{version}, $c->{version}, 'version durable across kill -9');

$res = poll($c->{version}, undef, epoch => '0000000000000000');
is($res->{json}{snapshot}, JSON::PP::true, 'other epoch: snapshot');
$res = poll($c->{version} + 1000);
is($res->{json}{snapshot}, JSON::PP::true, 'version from the future: snapshot');
$res = poll($c->{version}, undef, epoch => $me->{epoch});
is($res->{json}{snapshot}, JSON::PP::false, 'same epoch: delta');

# a hub identity change is a peer-set change
$srv->stop;
$srv->{args} = ['--wg-endpoint', 'hub.example:51820', '--server-app-id', $APP];
$srv->start;
$res = poll($c->{version});
is(scalar @{ $res->{json}{changed} }, 1, 'hub change reported');
is($res->{json}{changed}[0]{endpoint}, 'hub.example:51820', 'with its new endpoint');

# --- tombstones pruned: a poller from before the floor gets a snapshot ---
my $ttl = start_server(args => ['--tombstone-ttl', '1s', '--server-app-id', $APP]);
my $w = join_node($ttl, $APP, 'w', 'w')->{json};
my $x = join_node($ttl, $APP, 'x', 'x')->{json};
my $old = $x->{version};
$ttl->cli('nodes', 'remove', 'x');
my $y = join_node($ttl, $APP, 'y', 'y')->{json};
$deadline = time + 10;
my ($floor) = (0);
while (time < $deadline) {
    ($floor) = sqlite_rows($ttl->db, "SELECT value FROM meta WHERE key = 'tombstone_floor'");
    last if $floor > 0;
    sleep 0.2;
}
ok($floor > $old, "tombstones pruned (floor $floor)");
$res = req($ttl, 'GET', "/api/v1/peers?since=$old", token => $w->{node_token});
is($res->{json}{snapshot}, JSON::PP::true, 'too old to diff: snapshot');
is_deeply([sort map { $_->{name} } @{ $res->{json}{peers} }], ['vpc-server', 'y'], 'snapshot content');
$res = req($ttl, 'GET', "/api/v1/peers?since=$y->{version}", token => $w->{node_token});
is($res->{json}{snapshot}, JSON::PP::false, 'recent enough: delta');

# --- wait is bounded ---
my $bounded = start_server(args => ['--max-wait', '1s', '--server-app-id', $APP]);
my $z = join_node($bounded, $APP, 'z', 'z')->{json};
my $t0 = time;
$res = req($bounded, 'GET', "/api/v1/peers?since=$z->{version}&wait=100000", token => $z->{node_token});
ok(time - $t0 < 2.5, 'wait clamped to --max-wait');
is($res->{status}, 200, 'clamped poll answers 200');

# a stop while polls are parked is orderly
my $now = poll(0)->{json}{version};
my @parked = map { poll_async($now, 60) } 1 .. 2;
$deadline = time + 5;
sleep 0.05 while (metric('dstack_ctld_longpolls_waiting') // 0) < 2 && time < $deadline;
is(metric('dstack_ctld_longpolls_waiting'), 2, 'two polls parked before the stop');
my $status = $srv->stop;
is($status, 0, 'clean exit with parked polls');
for my $p (@parked) {
    my $got = poll_result($p);
    ok($got->{elapsed} < 5, 'parked poll released by the stop');
}

done_testing;
