# Hostile input: malformed queries and JSON, wrong types, big bodies, SQL
# metacharacters, unknown paths and methods.  Every refusal is a clear
# status with a JSON error, and the daemon keeps serving.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use JSON::PP;
use Test::More;

my $APP = 'bad0';
my $srv = start_server(args => ['--server-app-id', $APP]);
my $me = join_node($srv, $APP, 'me', 'me')->{json};
my $key = register($srv, $APP, 'k1', 'k-1');

sub json_error {
    my ($res, $status, $name) = @_;
    is($res->{status}, $status, "$name: $status");
    like($res->{headers}{'content-type'} // '', qr{^application/json}, "$name: JSON");
    ok(defined $res->{json} && !ref($res->{json}{error}) && length($res->{json}{error} // ''),
       "$name: error text") or diag $res->{content};
}

# --- JSON bodies ---
my @bodies = (
    ['no body', undef],
    ['empty body', ''],
    ['not JSON', 'pre_auth_key=x'],
    ['truncated', '{"pre_auth_key": "'],
    ['array', '[1,2,3]'],
    ['string', '"x"'],
    ['trailing garbage', '{"pre_auth_key":"a"} x'],
    ['duplicate keys', qq({"pre_auth_key":"$key","pre_auth_key":"$key","public_key":"x"})],
    ['key wrong type', { pre_auth_key => 42, public_key => wg_key() }],
    ['key missing', { public_key => wg_key() }],
    ['public key missing', { pre_auth_key => $key }],
    ['public key wrong type', { pre_auth_key => $key, public_key => [1] }],
    ['public key not base64', { pre_auth_key => $key, public_key => '!' x 44 }],
    ['public key 31 bytes', { pre_auth_key => $key, public_key => 'A' x 40 . 'AA==' }],
    ['public key 33 bytes', { pre_auth_key => $key, public_key => 'A' x 44 . 'AA==' }],
    ['public key non-canonical', { pre_auth_key => $key, public_key => 'A' x 42 . 'B=' }],
    ['endpoint no port', { pre_auth_key => $key, public_key => wg_key(), endpoint => '1.2.3.4' }],
    ['endpoint port 0', { pre_auth_key => $key, public_key => wg_key(), endpoint => '1.2.3.4:0' }],
    ['endpoint port 70000', { pre_auth_key => $key, public_key => wg_key(), endpoint => '1.2.3.4:70000' }],
    ['endpoint junk host', { pre_auth_key => $key, public_key => wg_key(), endpoint => 'a b:1' }],
    ['endpoint bad v6', { pre_auth_key => $key, public_key => wg_key(), endpoint => '[zz::1]:1' }],
    ['endpoint wrong type', { pre_auth_key => $key, public_key => wg_key(), endpoint => { a => 1 } }],
    ['name not a label', { pre_auth_key => $key, public_key => wg_key(), name => 'a.b' }],
    ['name too long', { pre_auth_key => $key, public_key => wg_key(), name => 'a' x 64 }],
    ['name leading dash', { pre_auth_key => $key, public_key => wg_key(), name => '-a' }],
    ['name with NUL', qq({"pre_auth_key":"$key","public_key":"@{[wg_key()]}","name":"a\\u0000b"})],
    ['name wrong type', { pre_auth_key => $key, public_key => wg_key(), name => JSON::PP::true }],
    ['with_peers wrong type', { pre_auth_key => $key, public_key => wg_key(), with_peers => 'yes' }],
    ['deep nesting', '{"a":' x 5000 . '1' . '}' x 5000],
);
for my $b (@bodies) {
    my ($name, $body) = @$b;
    my $res = req($srv, 'POST', '/api/v1/join', app => $APP, defined $body ? (body => $body) : ());
    json_error($res, $res->{status} == 413 ? 413 : 400, "join, $name");
}
# none of that spent the key
my $ok = req($srv, 'POST', '/api/v1/join', app => $APP,
             body => { pre_auth_key => $key, public_key => wg_key(), endpoint => '[2001:db8::1]:51820' });
is($ok->{status}, 200, 'the key survived all the bad bodies');
is($ok->{json}{peers}[1]{endpoint} // '', '', 'self not in its own peers');
my $good = join_node($srv, $APP, 'k2', 'k-2', endpoint => '198.51.100.7:51820');
is($good->{status}, 200, 'a unicast endpoint');

# --- big bodies ---
my $mb = 'x' x (1024 * 1024);
my $res = req($srv, 'POST', '/api/v1/join', app => $APP, body => $mb);
json_error($res, 413, '1 MB body');
$res = req($srv, 'POST', '/api/nodes/update?uuid=big', app => $APP, body => $mb);
json_error($res, 413, '1 MB body on a legacy call');
my ($status, $body) = raw_http($srv->{port},
    "POST /api/v1/join HTTP/1.1\r\nHost: x\r\nx-dstack-app-id: $APP\r\n"
    . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    . join('', map { sprintf("%x\r\n%s\r\n", 65536, 'y' x 65536) } 1 .. 4) . "0\r\n\r\n");
is($status, 413, 'chunked body over the limit: 413');
ok(CtldTest::json_of($body)->{error}, 'with a JSON error');

# --- query strings ---
my @queries = (
    ['/api/v1/peers?since=abc', 400],
    ['/api/v1/peers?since=-1', 400],
    ['/api/v1/peers?since=1.5', 400],
    ['/api/v1/peers?since=99999999999999999999999', 400],
    ['/api/v1/peers?since=1&wait=x', 400],
    ['/api/v1/peers?since=1&wait=-3', 400],
    ['/api/v1/peers?since=1%00', 400],
    ['/api/v1/peers?since=0&epoch=xyz', 400],
    ['/api/v1/peers?since=0&epoch=%27%3B--', 400],
);
for my $q (@queries) {
    json_error(req($srv, 'GET', $q->[0], token => $me->{node_token}), $q->[1], "GET $q->[0]");
}
my @legacy = (
    ['/api/register?instance_id=a%00b', 400],
    ['/api/register?instance_id=' . ('i' x 200), 400],
    ['/api/register?instance_id=a%20b', 400],
    ['/api/register?instance_id=ok&node_name=not%20a%20label', 400],
    ['/api/register?instance_id=ok&node_name=' . ('n' x 64), 400],
    ['/api/discover/a%00b', 400],
    ['/api/discover/%27%3B%20DROP%20TABLE%20nodes', 400],
);
for my $q (@legacy) {
    json_error(req($srv, 'GET', $q->[0], app => $APP), $q->[1], "GET $q->[0]");
}
my @updates = (
    ['uuid=a%00b', 'NUL in uuid'],
    ['uuid=u&tailscale_ip=999.1.1.1', 'bad IP'],
    ['uuid=u&tailscale_ip=1.2.3.4%0a', 'IP with newline'],
    ['uuid=u&node_type=a%20b', 'bad node type'],
    ['uuid=u&hostname=a%0d%0ab', 'CR LF in hostname'],
    ['uuid=%ff%fe', 'invalid UTF-8 in uuid'],
    ['uuid=' . ('u' x 300), 'long uuid'],
);
for my $u (@updates) {
    json_error(req($srv, 'POST', "/api/nodes/update?$u->[0]", app => $APP), 400, "update, $u->[1]");
}
# odd but legal query syntax
$res = req($srv, 'GET', '/api/register?instance_id&node_name', app => $APP);
json_error($res, 400, 'keys without values');
$res = req($srv, 'GET', '/api/register?&&instance_id=q1&&', app => $APP);
is($res->{status}, 200, 'empty pairs ignored');
$res = req($srv, 'GET', '/api/register?instance_id=q%2', app => $APP);
ok($res->{status} == 400 || $res->{status} == 200, 'dangling percent: clear answer');

# --- SQL metacharacters are stored literally ---
my $evil = q{x'); DROP TABLE legacy_nodes; --"};
my $enc = $evil =~ s/([^A-Za-z0-9])/sprintf('%%%02X', ord $1)/ger;
$res = req($srv, 'POST', "/api/nodes/update?uuid=$enc&node_type=app&hostname=h%27%22%3B", app => $APP);
is($res->{status}, 200, 'update with SQL metacharacters');
is($res->{json}{node}{uuid}, $evil, 'uuid stored literally');
$res = req($srv, 'GET', '/api/discover/app', app => $APP);
is($res->{json}{nodes}[0]{hostname}, q{h'";}, 'hostname stored literally');
is($res->{json}{nodes}[0]{uuid}, $evil, 'and read back literally');
my ($tables) = sqlite_rows($srv->db, "SELECT count(*) FROM sqlite_master WHERE name = 'legacy_nodes'");
is($tables, 1, 'table still there');
$res = req($srv, 'POST', "/api/nodes/update?uuid=%E2%9C%93-%C3%A9", app => $APP);
is($res->{json}{node}{uuid}, "\x{2713}-\x{e9}", 'UTF-8 kept');

# --- identity header junk ---
for my $h ("a b", "x" x 200, "app\x01", "app\x7f", "caf\xc3\xa9", "a/b") {
    my ($st, $b) = raw_http($srv->{port}, "GET /api/nodes HTTP/1.1\r\nHost: x\r\n"
                            . "x-dstack-app-id: $h\r\nConnection: close\r\n\r\n");
    is($st, 401, 'junk app id: 401');
    is($b, '{"error":"Unauthorized"}', 'junk app id: JSON error');
}
($status, $body) = raw_http($srv->{port},
    "GET /api/nodes HTTP/1.1\r\nHost: x\r\nx-dstack-app-id:\r\nConnection: close\r\n\r\n");
is($status, 401, 'empty app id header: 401');

# --- tokens ---
for my $t ('', 'Bearer', 'Bearer ' . ('g' x 64), 'Bearer ' . ('a' x 63), 'Basic abc',
           'Bearer ' . uc $me->{node_token}) {
    my $r = req($srv, 'GET', '/api/v1/peers?since=0', headers => { authorization => $t });
    json_error($r, 401, "authorization '" . substr($t, 0, 12) . "'");
    is($r->{headers}{'www-authenticate'}, 'Bearer', 'names the scheme');
}

# --- unknown paths and methods ---
my @routes = (
    [GET => '/nope', undef, 404],
    [GET => '/', undef, 404],
    [GET => '/api/v1/nope', $APP, 404],
    [GET => '/api/discover/', $APP, 404],
    [GET => '/api/discover/a/b', $APP, 404],
    [GET => '/health/', undef, 404],
    [POST => '/health', undef, 405],
    [DELETE => '/api/ping', undef, 405],
    [POST => '/api/register', $APP, 405],
    [GET => '/api/nodes/update', $APP, 405],
    [PUT => '/api/v1/join', $APP, 405],
    [GET => '/api/v1/join', $APP, 405],
    [POST => '/api/v1/peers', undef, 405],
    [PATCH => '/api/v1/nodes/1', undef, 405],
    [DELETE => '/api/v1/nodes/' . ('a' x 70), undef, 401],
    [POST => '/metrics', undef, 405],
);
for my $r (@routes) {
    my ($m, $p, $app, $st) = @$r;
    my $res = req($srv, $m, $p, defined $app ? (app => $app) : ());
    json_error($res, $st, "$m $p");
    like($res->{headers}{allow} // '', qr/\b(GET|POST|DELETE)\b/, "$m $p: Allow header") if $st == 405;
}

# malformed HTTP never reaches a handler; the daemon survives it
for my $junk ("GARBAGE\r\n\r\n", "GET /health HTTP/9.9\r\n\r\n", "\x00\x01\x02\r\n\r\n",
              "GET /health HTTP/1.1\r\n" . ("X: " . 'y' x 9000 . "\r\n") x 10 . "\r\n") {
    raw_http($srv->{port}, $junk);
}
is(req($srv, 'GET', '/health')->{status}, 200, 'still serving after junk');
my $log = $srv->log_text;
unlike($log, qr/\r|[\x00-\x08]/, 'no control characters reached the log');
like($log, qr/400 GET \/api\/discover\/'; DROP TABLE nodes app=bad0: invalid node type/,
     'one log line per refusal');

done_testing;
