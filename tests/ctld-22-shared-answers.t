# Shared answers: one snapshot per version and one delta per (since,
# version) serve every poller, each without its own entry; discovery and
# the node list are built once per change; a join may ask for no snapshot.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use HTTP::Tiny;
use Test::More;

my $APP = 'feed22';
my $srv = start_server(args => ['--tombstone-ttl', '1h', '--server-app-id', $APP]);
my $admin = do { local (@ARGV, $/) = "$srv->{data}/admin.token"; <> };
chomp $admin;

sub builds {
    my ($kind) = @_;
    my $text = req($srv, 'GET', '/metrics')->{content};
    return $text =~ /^dstack_ctld_answer_builds_total\{answer="\Q$kind\E"\} (\d+)$/m
           ? $1 : die "no build counter for $kind";
}

sub poll {
    my ($token, $since, %o) = @_;
    my $q = "/api/v1/peers?since=$since" . (defined $o{wait} ? "&wait=$o{wait}" : '');
    my $res = req($srv, 'GET', $q, token => $token, http => HTTP::Tiny->new(timeout => 60));
    die "poll: $res->{status} $res->{content}" unless $res->{status} == 200 && $res->{json};
    return $res->{json};
}

# a parked poll in a child; poll_result() gives its answer
sub poll_async {
    my ($token, $since, $wait) = @_;
    return in_child(sub {
        req($srv, 'GET', "/api/v1/peers?since=$since&wait=$wait",
            token => $token, http => HTTP::Tiny->new(timeout => 60))->{json};
    });
}

sub poll_result { child_result($_[0]) }

sub ids { [map { $_->{id} } @{ $_[0] }] }

sub waiting {
    my $text = req($srv, 'GET', '/metrics')->{content};
    return $text =~ /^dstack_ctld_longpolls_waiting (\d+)$/m ? $1 : -1;
}

# --- a snapshot per version, each poller without itself ---
my @n = map { join_node($srv, $APP, "i$_", "n$_")->{json} } 1 .. 5;
my %tok = map { $_->{node_id} => $_->{node_token} } @n;
my @all = sort { $a <=> $b } map { $_->{node_id} } @n;
ok((grep { !$_ } map { $_->{node_token} } @n) == 0, 'five nodes joined');

# the first join's answer left nobody out but itself
is_deeply(ids($n[4]{peers}), [0, @all[0 .. 3]], 'join answer: hub and the others, not itself');
is_deeply(ids($n[0]{peers}), [0], 'first join: the hub only');

my $v = $n[4]{version};
my $before = builds('snapshot');
for my $id (@all) {
    my $s = poll($tok{$id}, 0);
    is($s->{version}, $v, "node $id: snapshot at the current version");
    is_deeply(ids($s->{peers}), [0, grep { $_ != $id } @all],
              "node $id: every peer but itself (first, middle and last cut alike)");
}
my $hub = poll($admin, 0);
is_deeply(ids($hub->{peers}), [0, @all], "the hub's view keeps every entry");
is(builds('snapshot') - $before, 0,
   'the snapshot the last join built serves five pollers and the hub');

# a new version: one build for everyone
my $n6 = join_node($srv, $APP, 'i6', 'n6', with_peers => JSON::PP::false)->{json};
$before = builds('snapshot');
poll($tok{$_}, 0) for @all;
is(builds('snapshot') - $before, 1, 'a new version: one snapshot build for five pollers');

# --- one delta per (since, version), shared by parked pollers ---
my $v6 = $n6->{version};
my @parked = map { poll_async($tok{$_}, $v6, 30) } @all;
for (1 .. 100) { last if waiting() >= 5; select undef, undef, undef, 0.05 }
is(waiting(), 5, 'five polls parked');
$before = builds('delta');
my $n7 = join_node($srv, $APP, 'i7', 'n7', with_peers => JSON::PP::false)->{json};
for my $i (0 .. $#all) {
    my $d = poll_result($parked[$i]);
    is($d->{version}, $n7->{version}, "node $all[$i]: woken with the new version");
    is_deeply([map { $_->{name} } @{ $d->{added} }], ['n7'], "node $all[$i]: n7 added");
}
is(builds('delta') - $before, 1, 'five woken pollers: one delta build');

# --- pollers at different versions get different, correct deltas ---
my $old = poll($tok{$all[0]}, $v, wait => 0);
my $new = poll($tok{$all[1]}, $v6, wait => 0);
is_deeply([map { $_->{name} } @{ $old->{added} }], ['n6', 'n7'], 'from the older version: n6 and n7');
is_deeply([map { $_->{name} } @{ $new->{added} }], ['n7'], 'from the newer version: n7 only');
is($old->{version}, $new->{version}, 'both up to the current version');

# --- nobody sees another node's view of itself ---
# n1 (the lowest id: the first entry of "changed") re-joins with a new key
my $re = join_node($srv, $APP, 'i1', 'n1', node_token => $tok{$all[0]})->{json};
is($re->{node_id}, $all[0], 'n1 re-joined under its id');
$tok{$all[0]} = $re->{node_token};
my $vr = $re->{version};
my $self = poll($tok{$all[0]}, $n7->{version});
is_deeply($self->{changed}, [], 'n1 does not see its own change');
for my $id (@all[1 .. 4]) {
    my $d = poll($tok{$id}, $n7->{version});
    is_deeply(ids($d->{changed}), [$all[0]], "node $id sees n1 changed");
    is($d->{changed}[0]{name}, 'n1', "node $id: the entry is n1's");
}
my $s1 = poll($tok{$all[0]}, 0);
ok(!(grep { $_->{id} == $all[0] } @{ $s1->{peers} }), 'n1 snapshot: not itself');
is(scalar @{ $s1->{peers} }, 1 + 6, 'n1 snapshot: the hub and six others');
is($vr, $s1->{version}, 'at the re-join version');

# --- discovery and the node list: built once per change ---
for my $u (['u1', 'web', '10.0.0.1', 'h1'], ['u2', 'web', '10.0.0.2', 'h2']) {
    my $r = req($srv, 'POST', "/api/nodes/update?uuid=$u->[0]&node_type=$u->[1]"
                . "&tailscale_ip=$u->[2]&hostname=$u->[3]", app => $APP);
    is($r->{status}, 200, "record $u->[0]");
}
my ($d0, $l0) = (builds('discover'), builds('nodes'));
my @disc = map { req($srv, 'GET', '/api/discover/web', app => $APP)->{content} } 1 .. 4;
my @list = map { req($srv, 'GET', '/api/nodes', app => $APP)->{content} } 1 .. 4;
is(builds('discover') - $d0, 1, 'four discovers, one build');
is(builds('nodes') - $l0, 1, 'four node lists, one build');
is(scalar(grep { $_ eq $disc[0] } @disc), 4, 'the same discovery answer');
is(CtldTest::json_of($disc[0])->{count}, 2, 'two web records');
req($srv, 'POST', '/api/nodes/update?uuid=u3&node_type=web&tailscale_ip=10.0.0.3&hostname=h3',
    app => $APP);
my $disc = req($srv, 'GET', '/api/discover/web', app => $APP);
is($disc->{json}{count}, 3, 'a new record: the answer follows');
is(builds('discover') - $d0, 2, 'rebuilt once after the change');
is(req($srv, 'GET', '/api/nodes', app => $APP)->{json}{count}, 3, 'node list follows');
is(req($srv, 'GET', '/api/discover/none', app => $APP)->{status}, 404, 'unknown type: 404');

# --- a join that asks for no snapshot (a node resuming) ---
$before = builds('snapshot');
my $res = join_node($srv, $APP, 'i8', 'n8', snapshot => JSON::PP::false);
is($res->{status}, 200, 'join with "snapshot": false');
ok(!exists $res->{json}{peers}, 'no peers in the answer');
is($res->{json}{snapshot}, JSON::PP::false, 'flagged: no snapshot');
like($res->{json}{epoch} // '', qr/^[0-9a-f]{16}$/, 'the epoch');
ok($res->{json}{version} > $vr, 'the version');
ok($res->{json}{node_token}, 'the token');
is(builds('snapshot') - $before, 0, 'no snapshot built for it');
$res = join_node($srv, $APP, 'i9', 'n9', snapshot => JSON::PP::true);
ok(scalar @{ $res->{json}{peers} } > 1, '"snapshot": true: the snapshot');

# --- a malformed snapshot member: 400 and one log line ---
for my $bad ('"no"', '1', 'null', '[]') {
    my $key = register($srv, $APP, 'i10', 'n10');
    my $lines = () = $srv->log_text =~ /snapshot must be a boolean/g;
    my $r = req($srv, 'POST', '/api/v1/join', app => $APP,
                body => qq({"pre_auth_key":"$key","public_key":") . wg_key()
                        . qq(","snapshot":$bad}));
    is($r->{status}, 400, "snapshot $bad: 400");
    is_deeply($r->{json}, { error => 'snapshot must be a boolean' }, "snapshot $bad: the reason");
    my $after = () = $srv->log_text =~ /snapshot must be a boolean/g;
    is($after - $lines, 1, "snapshot $bad: one log line");
}

done_testing();
