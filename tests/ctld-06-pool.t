# The address pool: reserved addresses, exhaustion as a clean 503, reuse
# after removal, uniqueness in the database.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use Test::More;

my $APP = 'f001';

# /29 = 8 addresses: network .0, broadcast .7 and the server's .1 are
# reserved, so 5 are left for nodes: .2 .. .6
my $srv = start_server(args => ['--pool', '10.99.0.0/29', '--server-app-id', $APP]);
my (@addrs, %token);
for my $i (1 .. 5) {
    my $r = join_node($srv, $APP, "i$i", "n$i");
    is($r->{status}, 200, "join $i of 5");
    push @addrs, $r->{json}{address};
    $token{"i$i"} = $r->{json}{node_token};
}
is_deeply([sort @addrs], [map { "10.99.0.$_" } 2 .. 6], 'the five host addresses, none reserved');
my ($hub) = grep { $_->{hub} } @{ join_node($srv, $APP, 'i1', 'n1', node_token => $token{i1})->{json}{peers} };
is($hub->{address}, '10.99.0.1', 'the server keeps the first host address');

my $key = register($srv, $APP, 'i6', 'n6');
my $r = req($srv, 'POST', '/api/v1/join', app => $APP,
            body => { pre_auth_key => $key, public_key => wg_key() });
is($r->{status}, 503, 'the 6th join: 503');
is($r->{json}{error}, 'address pool exhausted', 'with a JSON error');
like(req($srv, 'GET', '/metrics')->{content}, qr/^dstack_ctld_pool_exhausted_total 1$/m, 'counted');

# the daemon keeps serving, and re-joins still work on a full pool
is(req($srv, 'GET', '/health')->{status}, 200, 'still healthy');
is(req($srv, 'GET', '/api/nodes', app => $APP)->{status}, 200, 'still serving the API');
my $again = join_node($srv, $APP, 'i3', 'n3', node_token => $token{i3});
is($again->{status}, 200, 're-join on a full pool');
is($again->{json}{address}, $addrs[2], 'keeps its address');

# the refused key was not spent: after a removal it gets the freed address
my ($rc) = $srv->cli('nodes', 'remove', 'n4');
is($rc, 0, 'removed n4');
$r = req($srv, 'POST', '/api/v1/join', app => $APP,
         body => { pre_auth_key => $key, public_key => wg_key() });
is($r->{status}, 200, 'the 6th node joins after a removal, same key');
is($r->{json}{address}, $addrs[3], 'into the freed address');

# state after a restart: the pool is rebuilt from the database
$srv->restart;
$r = join_node($srv, $APP, 'i7', 'n7');
is($r->{status}, 503, 'still full after a restart');

# the database itself refuses a duplicate address
my @dup = sqlite_rows($srv->db, "PRAGMA index_list('nodes')");
ok((grep { /\|1\|u\|/ } @dup) >= 3, 'UNIQUE indexes on nodes (address, name, key, token)');
my $err = `sqlite3 $srv->{data}/ctld.db "UPDATE nodes SET address = (SELECT min(address) FROM nodes) WHERE id = (SELECT max(id) FROM nodes)" 2>&1`;
like($err, qr/UNIQUE constraint failed: nodes\.address/, 'duplicate address refused by SQLite');

# a pool whose server address is set explicitly
my $s2 = start_server(args => ['--pool', '10.98.0.0/30', '--server-address', '10.98.0.2',
                               '--server-app-id', $APP]);
$r = join_node($s2, $APP, 'a', 'a');
is($r->{json}{address}, '10.98.0.1', '/30: the one address left for a node');
is(join_node($s2, $APP, 'b', 'b')->{status}, 503, '/30: then full');

# bad pools are refused at start
for my $bad (['10.0.0.1/24', 'host bits set'], ['10.0.0.0/31', 'too small'],
             ['10.0.0.0/7', 'too large'], ['nonsense', 'not a prefix']) {
    my $st = system(ctld_bin() . " server --listen 127.0.0.1:1 --data-dir /nonexistent --server-app-id $APP"
                    . " --pool $bad->[0] >/dev/null 2>&1");
    is($st >> 8, 2, "pool $bad->[0] refused ($bad->[1])");
}
my $st = system(ctld_bin() . " server --listen 127.0.0.1:1 --data-dir /nonexistent --server-app-id $APP"
                . " --pool 10.0.0.0/24 --server-address 10.0.0.255 >/dev/null 2>&1");
is($st >> 8, 2, 'server address on the broadcast refused');

# the default pool is 100.128.0.0/10 with the hub on .1
my $d = start_server(args => ['--server-app-id', $APP]);
$r = join_node($d, $APP, 'x', 'x');
is($r->{json}{prefix}, '100.128.0.0/10', 'default pool');
is($r->{json}{address}, '100.128.0.2', 'first node address');

done_testing;
