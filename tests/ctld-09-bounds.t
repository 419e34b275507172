# The server's bounds: a removed node's token answers 410 Gone; per-app
# quotas (unused keys, nodes, original-API records) answer 429 and count
# in /metrics; records expire unless they are a live node's; parked polls
# are limited per token and released when their client hangs up; no start
# with too few file descriptors; endpoints are unicast addresses, names
# resolved by the server.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(sleep time);

my $APP = 'b0b0';
my $OTHER = 'c0c0';

sub metric {
    my ($srv, $name) = @_;
    my $text = req($srv, 'GET', '/metrics')->{content};
    return $text =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

sub wait_for {
    my ($cond) = @_;
    my $deadline = time + 10;
    sleep 0.1 while !$cond->() && time < $deadline;
    return $cond->();
}

sub poll_req {
    my ($srv, $token, $since, $wait) = @_;
    return req($srv, 'GET', "/api/v1/peers?since=$since&wait=$wait", token => $token,
               http => HTTP::Tiny->new(timeout => 90));
}

# a poll in a child process; poll_end() gives its answer
sub poll_async {
    my ($srv, $token, $since, $wait) = @_;
    return in_child(sub {
        my $res = poll_req($srv, $token, $since, $wait);
        return { status => $res->{status}, json => $res->{json} };
    });
}

sub poll_end { child_result($_[0]) }

# --- 410 Gone for a removed node; 401 stays for tokens never issued ----------

{
    my $srv = start_server(args => ['--server-app-id', $APP]);
    my $a = join_node($srv, $APP, 'gone-1', 'gone-1')->{json};
    my $b = join_node($srv, $APP, 'gone-2', 'gone-2')->{json};
    my ($rc) = $srv->cli('nodes', 'remove', 'gone-1');
    is($rc, 0, 'the admin removes gone-1');
    my $r = poll_req($srv, $a->{node_token}, 0, 0);
    is($r->{status}, 410, 'its token: 410 Gone');
    is_deeply($r->{json}, { error => 'node removed from the VPC',
                            reason => 'removed by the admin', node_id => $a->{node_id} },
              '  with a JSON reason');
    $r = req($srv, 'DELETE', '/api/v1/nodes/gone-2', token => $b->{node_token});
    is($r->{status}, 200, 'gone-2 removes itself');
    $r = poll_req($srv, $b->{node_token}, 0, 0);
    is($r->{status}, 410, '  its token: 410');
    is($r->{json}{reason}, 'removed by itself', '  saying so');
    $r = poll_req($srv, 'ab' x 32, 0, 0);
    is($r->{status}, 401, 'a token never issued: 401');
    is($r->{headers}{'www-authenticate'}, 'Bearer', '  with WWW-Authenticate');
    $srv->restart;
    is(poll_req($srv, $a->{node_token}, 0, 0)->{status}, 410,
       'still 410 after a restart (durable)');
    unlike($srv->log_text, qr/$a->{node_token}/, 'the token is not logged');
}

# --- quotas -------------------------------------------------------------------

{
    my $srv = start_server(args => ['--allowed-apps', "$APP,$OTHER", '--max-keys-per-app', 2, '--max-nodes-per-app', 2,
                                    '--max-records-per-app', 2]);
    my $k1 = register($srv, $APP, 'q-1', 'q-1');
    my $k2 = register($srv, $APP, 'q-2', 'q-2');
    my $r = req($srv, 'GET', '/api/register?instance_id=q-3&node_name=q-3', app => $APP);
    is($r->{status}, 429, 'a third unused key: 429');
    is_deeply($r->{json}, { error => 'too many unused pre-auth keys for this app' },
              '  with a JSON reason');
    is(req($srv, 'GET', '/api/register?instance_id=o-1', app => $OTHER)->{status}, 200,
       '  another app is not affected');
    my %pub = (q1 => wg_key(), q2 => wg_key());
    for my $k ([$k1, 'q1'], [$k2, 'q2']) {
        is(req($srv, 'POST', '/api/v1/join', app => $APP,
               body => { pre_auth_key => $k->[0], public_key => $pub{ $k->[1] } })->{status},
           200, 'a join spends a key');
    }
    my $k3 = register($srv, $APP, 'q-3', 'q-3');
    ok($k3, 'spent keys do not count: a new key');
    $r = req($srv, 'POST', '/api/v1/join', app => $APP,
             body => { pre_auth_key => $k3, public_key => wg_key() });
    is($r->{status}, 429, 'a third node: 429');
    is($r->{json}{error}, 'node quota of this app reached', '  saying why');
    my $again = register($srv, $APP, 'q-1', 'q-1');
    # the same key: a new one would need the node's token (ownership)
    is(req($srv, 'POST', '/api/v1/join', app => $APP,
           body => { pre_auth_key => $again, public_key => $pub{q1} })->{status}, 200,
       '  a re-join of a node already there is not a new node');
    $srv->cli('nodes', 'remove', 'q-2');
    is(req($srv, 'POST', '/api/v1/join', app => $APP,
           body => { pre_auth_key => $k3, public_key => wg_key() })->{status}, 200,
       '  the refused key was not spent: it joins once a node is removed');

    for my $u (qw(r-1 r-2)) {
        is(req($srv, 'POST', "/api/nodes/update?uuid=$u&node_type=t", app => $APP)->{status},
           200, "record $u");
    }
    $r = req($srv, 'POST', '/api/nodes/update?uuid=r-3&node_type=t', app => $APP);
    is($r->{status}, 429, 'a third record: 429');
    is($r->{json}{error}, 'record quota of this app reached', '  saying why');
    is(req($srv, 'POST', '/api/nodes/update?uuid=r-1&hostname=h1', app => $APP)->{status},
       200, '  updating a record is fine');
    is(metric($srv, 'dstack_ctld_quota_refusals_total{quota="keys"}'), 1, 'metric: keys');
    is(metric($srv, 'dstack_ctld_quota_refusals_total{quota="nodes"}'), 1, 'metric: nodes');
    is(metric($srv, 'dstack_ctld_quota_refusals_total{quota="records"}'), 1, 'metric: records');
}

# --- records expire unless they are a live node's -----------------------------

{
    my $srv = start_server(args => ['--server-app-id', $APP, '--record-ttl', '2s', '--tombstone-ttl', '2s']);
    my $n = join_node($srv, $APP, 'live-1', 'live-1')->{json};
    req($srv, 'POST', "/api/nodes/update?uuid=live-1&node_type=w", app => $APP);
    req($srv, 'POST', "/api/nodes/update?uuid=orphan&node_type=w", app => $APP);
    sub uuids { sort map { $_->{uuid} } @{ req($_[0], 'GET', '/api/nodes', app => $APP)->{json}{nodes} } }
    is_deeply([uuids($srv)], ['live-1', 'orphan'], 'two records');
    ok(wait_for(sub { !grep { $_ eq 'orphan' } uuids($srv) }),
       'a record not updated for --record-ttl goes');
    is_deeply([uuids($srv)], ['live-1'], 'a live node\'s record stays');
    like($srv->log_text, qr/1 node records expired/, 'logged');
}

# --- long polls: a few per token; a hang-up is noticed ------------------------

{
    my $srv = start_server(args => ['--server-app-id', $APP, '--max-polls-per-token', 2]);
    my $n = join_node($srv, $APP, 'lp-1', 'lp-1')->{json};
    my $m = join_node($srv, $APP, 'lp-2', 'lp-2')->{json};
    my $v = poll_req($srv, $n->{node_token}, 0, 0)->{json}{version};
    my @p;
    for my $i (1 .. 3) {
        push @p, poll_async($srv, $n->{node_token}, $v, 60);
        my $want = $i < 3 ? $i : 2;
        ok(wait_for(sub { (metric($srv, 'dstack_ctld_longpolls_waiting') // 0) == $want
                          && ($i < 3 || metric($srv, 'dstack_ctld_longpolls_ended_total{reason="superseded"}')) }),
           "poll $i of one token parked");
    }
    my $first = poll_end($p[0]);
    is($first->{status}, 200, 'a third poll of one token ends the first');
    is($first->{json}{version}, $v, '  with an empty answer at the same version');
    is_deeply([@{ $first->{json}{added} }, @{ $first->{json}{changed} }], [], '  nothing in it');
    is(metric($srv, 'dstack_ctld_longpolls_ended_total{reason="superseded"}'), 1,
       '  counted');
    my $other = poll_async($srv, $m->{node_token}, $v, 60);
    ok(wait_for(sub { metric($srv, 'dstack_ctld_longpolls_waiting') == 3 }),
       'another token parks next to them');

    # a client that hangs up while parked
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port})
        or die "connect: $!";
    print $s "GET /api/v1/peers?since=$v&wait=300 HTTP/1.1\r\nHost: x\r\n"
           . "Authorization: Bearer $m->{node_token}\r\n\r\n";
    ok(wait_for(sub { metric($srv, 'dstack_ctld_longpolls_waiting') == 4 }), 'a raw poll parked');
    close $s;
    ok(wait_for(sub { metric($srv, 'dstack_ctld_longpolls_waiting') == 3 }),
       'its client hung up: released within seconds, not after its wait');
    is(metric($srv, 'dstack_ctld_longpolls_ended_total{reason="hung_up"}'), 1, '  counted');

    join_node($srv, $APP, 'lp-3', 'lp-3');
    for my $q ($p[1], $p[2], $other) {
        my $got = poll_end($q);
        is_deeply([map { $_->{name} } @{ $got->{json}{added} }], ['lp-3'],
                  'the polls still parked all see the change');
    }
    is(metric($srv, 'dstack_ctld_longpolls_waiting'), 0, 'none parked');
}

# --- no start with fewer file descriptors than --max-connections -------------

{
    my $dir = tempdir('ctld-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $port = free_port();
    my $bin = ctld_bin();
    my $run = sub {
        my ($max) = @_;
        system('timeout', '10', 'sh', '-c', "ulimit -n 256 && exec $bin server"
               . " --listen 127.0.0.1:$port --data-dir $dir/data --max-connections $max"
               . " --server-app-id $APP"
               . " >>$dir/log 2>&1 & pid=\$!; sleep 3; kill \$pid 2>/dev/null;"
               . " wait \$pid");
        return $? >> 8;
    };
    isnt($run->(1000), 0, 'max-connections 1000 with 256 descriptors: no start');
    like(CtldTest::Server::log_text({ log => "$dir/log" }),
         qr/open file limit \(256\) is below max-connections \+ 64 \(1064\)/,
         '  saying why');
    is($run->(100), 0, 'max-connections 100: it starts, and stops at SIGTERM');
    like(CtldTest::Server::log_text({ log => "$dir/log" }), qr/server listening on/,
         '  after listening');
}

# --- endpoints: unicast addresses; names resolved by the server --------------

{
    my $srv = start_server(args => ['--server-app-id', $APP]);
    my $key = register($srv, $APP, 'ep-1', 'ep-1');
    for my $ep ('127.0.0.1:51820', '0.0.0.0:51820', '224.0.0.1:51820',
                '169.254.1.1:51820', '255.255.255.255:51820', '[::1]:51820',
                '[::]:51820', '[ff02::1]:51820', '[fe80::1]:51820',
                '[::ffff:127.0.0.1]:51820', 'localhost:51820')
    {
        my $r = req($srv, 'POST', '/api/v1/join', app => $APP,
                    body => { pre_auth_key => $key, public_key => wg_key(), endpoint => $ep });
        is($r->{status}, 400, "endpoint $ep: 400");
    }
    like(req($srv, 'POST', '/api/v1/join', app => $APP,
             body => { pre_auth_key => $key, public_key => wg_key(),
                       endpoint => 'localhost:51820' })->{json}{error},
         qr/resolves to no unicast address/, 'a name of the loopback: refused after resolving');
    my $r = req($srv, 'POST', '/api/v1/join', app => $APP,
                body => { pre_auth_key => $key, public_key => wg_key(),
                          endpoint => '[2001:db8::7]:51820' });
    is($r->{status}, 200, 'none of that spent the key; an IPv6 unicast endpoint joins');

    SKIP: {
        skip 'needs root for a private /etc/hosts', 3 if $> != 0;
        my $dir = tempdir('ctld-XXXXXX', TMPDIR => 1, CLEANUP => 1);
        open my $fh, '>', "$dir/hosts" or die;
        print $fh "127.0.0.1 localhost\n203.0.113.9 wg.vpc.test\n";
        close $fh;
        my $named = start_server(args => ['--server-app-id', $APP],
                                 wrap => ['unshare', '--mount', 'sh', '-c',
            "mount --bind $dir/hosts /etc/hosts && exec \"\$@\"", 'sh']);
        my $j = join_node($named, $APP, 'dns-1', 'dns-1', endpoint => 'wg.vpc.test:51820');
        is($j->{status}, 200, 'an endpoint given as a DNS name joins');
        my $list = decode_json(($named->cli('nodes', 'list', '--json'))[1]);
        is($list->{nodes}[0]{endpoint}, '203.0.113.9:51820',
           '  the server stored the address it resolved');
        my $other = join_node($named, $APP, 'dns-2', 'dns-2')->{json};
        my ($peer) = grep { $_->{name} eq 'dns-1' }
                     @{ poll_req($named, $other->{node_token}, 0, 0)->{json}{peers} };
        is($peer->{endpoint}, '203.0.113.9:51820', '  and the peer set carries it');
    }
}

done_testing();
