# The original dstack-vpc API, answer by answer: status, body and JSON shape.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use Digest::SHA ();
use Test::More;

my $APP = 'a1b2c3d4e5f60718293a4b5c6d7e8f9012345678';
my $srv = start_server(args => ['--allowed-apps', "$APP,BEEF01",
                                '--server-url', 'https://vpc.example:443']);

# [method, path, app header, status, body check]
#   body check: text to compare, or a hash of key => expected value/qr//
#   with '_keys' => [exact key list in order]
my @table = (
    [GET  => '/health', undef, 200, 'OK'],
    [HEAD => '/health', undef, 200, ''],
    [GET  => '/api/ping', undef, 200, 'pong'],
    [GET  => '/api/ping', 'whoever', 200, 'pong'],
    [GET  => '/api/nodes', undef, 401, { _keys => ['error'], error => 'Unauthorized' }],
    [GET  => '/api/register?instance_id=x', undef, 401, { error => 'Unauthorized' }],
    [POST => '/api/nodes/update?uuid=u', undef, 401, { error => 'Unauthorized' }],
    [GET  => '/api/discover/app', undef, 401, { error => 'Unauthorized' }],
    [GET  => '/api/nodes', 'deadbeef', 403, { _keys => ['error'], error => 'Forbidden' }],
    [GET  => '/api/register?instance_id=x', 'deadbeef', 403, { error => 'Forbidden' }],
    [GET  => '/api/no-such-call', undef, 401, { error => 'Unauthorized' }],
    [GET  => '/api/no-such-call', $APP, 404, { error => 'Not found' }],
    [GET  => '/api/register', $APP, 400, { error => 'Missing required parameters' }],
    [GET  => '/api/register?instance_id=', $APP, 400, { error => 'Missing required parameters' }],
    [GET  => '/api/register?node_name=n', $APP, 400, { error => 'Missing required parameters' }],
    [GET  => '/api/register?instance_id=i-1&node_name=web-1', $APP, 200,
        { _keys => [qw(pre_auth_key shared_key server_url)],
          pre_auth_key => qr/^[0-9a-f]{64}$/,
          shared_key => qr{^[A-Za-z0-9+/]{86}==$},
          server_url => 'https://vpc.example:443' }],
    # allowlist entries compare case-insensitively
    [GET  => '/api/register?instance_id=i-2', 'beef01', 200, { pre_auth_key => qr/^[0-9a-f]{64}$/ }],
    [GET  => '/api/register?instance_id=i-3', uc $APP, 200, { pre_auth_key => qr/^[0-9a-f]{64}$/ }],
    [POST => '/api/nodes/update', $APP, 400, { error => 'uuid parameter is required' }],
    [POST => '/api/nodes/update?uuid=', $APP, 400, { error => 'uuid parameter is required' }],
    [GET  => '/api/nodes', $APP, 200, { _keys => [qw(count nodes)], count => 0, nodes => [] }],
    [GET  => '/api/discover/app', $APP, 404, { error => 'No app nodes found' }],
    [POST => '/api/nodes/update?uuid=n-1&node_type=app&tailscale_ip=100.128.0.2&hostname=web-1',
        $APP, 200, { _keys => [qw(message node status)], status => 'created',
                     message => 'Node created',
                     node => { uuid => 'n-1', name => 'n-1', node_type => 'app',
                               tailscale_ip => '100.128.0.2', actual_hostname => 'web-1' } }],
    # empty parameters leave fields unchanged
    [POST => '/api/nodes/update?uuid=n-1&node_type=&tailscale_ip=&hostname=', $APP, 200,
        { status => 'updated',
          node => { uuid => 'n-1', name => 'n-1', node_type => 'app',
                    tailscale_ip => '100.128.0.2', actual_hostname => 'web-1' } }],
    # a node without hostname is not discoverable
    [POST => '/api/nodes/update?uuid=n-2&node_type=app', $APP, 200, { status => 'created' }],
    [GET  => '/api/discover/app', $APP, 200,
        { _keys => [qw(count node_type nodes)], count => 1, node_type => 'app',
          nodes => [{ hostname => 'web-1', tailscale_ip => '100.128.0.2', uuid => 'n-1' }] }],
    [GET  => '/api/nodes', $APP, 200,
        { count => 2,
          nodes => [{ uuid => 'n-1', name => 'n-1', node_type => 'app',
                      tailscale_ip => '100.128.0.2', actual_hostname => 'web-1' },
                    { uuid => 'n-2', name => 'n-2', node_type => 'app',
                      tailscale_ip => undef, actual_hostname => undef }] }],
    # legacy etcd case: only the newest etcd node stays; port 2379 added
    [POST => '/api/nodes/update?uuid=e-1&node_type=etcd&hostname=etcd-1', $APP, 200, { status => 'created' }],
    [POST => '/api/nodes/update?uuid=e-2&node_type=etcd&hostname=etcd-2&tailscale_ip=100.128.0.9',
        $APP, 200, { status => 'created' }],
    [GET  => '/api/discover/etcd', $APP, 200,
        { count => 1, node_type => 'etcd',
          nodes => [{ hostname => 'etcd-2', hostname_with_port => 'etcd-2:2379',
                      tailscale_ip => '100.128.0.9', uuid => 'e-2' }] }],
    # an app cannot rewrite another app's record
    [POST => '/api/nodes/update?uuid=n-1&hostname=evil', 'beef01', 403,
        { error => 'uuid belongs to another app' }],
    [GET  => '/api/register?instance_id=i-1', $APP, 200, {}],
);

sub check_json {
    my ($got, $want, $where) = @_;
    if (ref $want eq 'HASH') {
        return fail("$where: not an object") unless ref $got eq 'HASH';
        if (my $keys = $want->{_keys}) {
            my @got_keys = sort keys %$got;
            is_deeply(\@got_keys, [sort @$keys], "$where: keys");
        }
        for my $k (grep { $_ ne '_keys' } sort keys %$want) {
            check_json($got->{$k}, $want->{$k}, "$where.$k");
        }
    } elsif (ref $want eq 'ARRAY') {
        is(ref $got, 'ARRAY', "$where is an array") or return;
        is(scalar @$got, scalar @$want, "$where: length");
        check_json($got->[$_], $want->[$_], "$where\[$_]") for 0 .. $#$want;
    } elsif (ref $want eq 'Regexp') {
        like($got // '', $want, $where);
    } else {
        is($got, $want, $where);
    }
}

for my $row (@table) {
    my ($method, $path, $app, $status, $want) = @$row;
    my $name = "$method $path" . (defined $app ? " as $app" : '');
    my $res = req($srv, $method, $path, defined $app ? (app => $app) : ());
    is($res->{status}, $status, "$name: status $status");
    if (ref $want) {
        like($res->{headers}{'content-type'}, qr{^application/json}, "$name: JSON");
        check_json($res->{json}, $want, $name);
    } else {
        is($res->{content} // '', $want, "$name: body");
        like($res->{headers}{'content-type'}, qr{^text/plain}, "$name: text") if $method ne 'HEAD';
    }
}

# the key lines of the original's JSON, byte for byte
my $raw = req($srv, 'GET', '/api/nodes', app => 'dddd0000000000000000000000000000000000dd');
is($raw->{content}, '{"error":"Forbidden"}', '403 body byte for byte');
$raw = req($srv, 'GET', '/api/nodes');
is($raw->{content}, '{"error":"Unauthorized"}', '401 body byte for byte');

# shared_key: the same on every call and after a restart, stored 0600
my $k1 = req($srv, 'GET', '/api/register?instance_id=a', app => $APP)->{json}{shared_key};
$srv->restart;
my $k2 = req($srv, 'GET', '/api/register?instance_id=b', app => $APP)->{json}{shared_key};
is($k2, $k1, 'shared_key survives a restart');
is((stat "$srv->{data}/shared_key")[2] & 0777, 0600, 'shared_key file is 0600');
is(length(MIME::Base64::decode_base64($k1)), 64, 'shared_key is 64 bytes');

# legacy records are durable too
my $nodes = req($srv, 'GET', '/api/nodes', app => $APP)->{json};
is($nodes->{count}, 3, 'legacy records survive a restart');

# register keys are stored only as hashes, never in the log
my $key = req($srv, 'GET', '/api/register?instance_id=c', app => $APP)->{json}{pre_auth_key};
like($key, qr/^[0-9a-f]{64}$/, 'a pre-auth key was issued');
my @rows = sqlite_rows($srv->db, "SELECT lower(hex(key_hash)) FROM preauth_keys");
ok((grep { $_ eq Digest::SHA::sha256_hex($key) } @rows),
   'its SHA-256 is stored');
# the key must appear nowhere in the data directory (database, WAL, files),
# neither as text nor as the bytes it encodes
my ($clear_text, $clear_bytes) = (0, 0);
for my $f (glob("$srv->{data}/*")) {
    next unless -f $f;
    my $content = do { local $/; open my $fh, '<:raw', $f or next; <$fh> };
    $clear_text++ if index($content, $key) >= 0;
    $clear_bytes++ if index($content, pack('H*', $key)) >= 0;
}
is($clear_text, 0, 'key not stored in clear (no file holds its text)');
is($clear_bytes, 0, 'nor its raw bytes');
unlike($srv->log_text, qr/$key/, 'key never logged');

# the default allowlist is the server's own app (tests/ctld-07-ownership.t);
# the original's ALLOWED_APPS works too
{
    local $ENV{ALLOWED_APPS} = 'cafe';
    my $env = start_server();
    is(req($env, 'GET', '/api/nodes', app => 'f00d')->{status}, 403, 'ALLOWED_APPS honoured');
    is(req($env, 'GET', '/api/nodes', app => 'CAFE')->{status}, 200, 'ALLOWED_APPS case-insensitive');
}

# a config file, overridden by flags
my $dir = File::Temp::tempdir(CLEANUP => 1);
open my $fh, '>', "$dir/ctld.conf" or die;
print $fh "# test\n[node]\nwhatever = 1\n[server]\nallowed-apps = 0abc\nkey-lifetime = 2m\n"
        . "server-app-id = 0abc\ngateway-domain = gw.example.com\n";
close $fh;
my $conf = start_server(args => ['--config', "$dir/ctld.conf"]);
my $r = req($conf, 'GET', '/api/register?instance_id=q', app => '0abc');
is($r->{status}, 200, 'config file allowlist');
is($r->{json}{server_url}, 'https://0abc-443s.gw.example.com', 'default server_url from app id and gateway');
is(req($conf, 'GET', '/api/nodes', app => 'f00d')->{status}, 403, 'config file allowlist refuses');
my $conf2 = start_server(args => ['--config', "$dir/ctld.conf", '--allowed-apps', 'any']);
is(req($conf2, 'GET', '/api/nodes', app => 'f00d')->{status}, 200, 'flags override the config file');

# --help documents every option
my $help = `@{[ctld_bin()]} --help`;
my $shelp = `@{[ctld_bin()]} server --help`;
for my $opt (qw(listen data-dir allowed-apps reserve-name key-lifetime pool server-address
                server-name wg-endpoint server-url server-app-id gateway-domain
                allow-remote max-wait tombstone-ttl threads max-connections
                max-body socket-mode log-level log-format config)) {
    like($help, qr/--\Q$opt\E\b/, "--help names --$opt");
    like($shelp, qr/--\Q$opt\E\b/, "server --help names --$opt");
}
isnt(system(ctld_bin() . ' server --bogus >/dev/null 2>&1'), 0, 'unknown option refused');

done_testing;
