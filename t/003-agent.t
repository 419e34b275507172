# Requests without a target app go to the local guest agent (a simulator
# here), with the original client proxy's path mapping; GET /gateway answers
# the gateway domain.
#
# The simulator is started by this file: $DSTACK_BIN/dstack-agent-sim, on a
# socket under /tmp, with the test CA from $TEST_NGINX_CERT_DIR/ca.

use Test::Nginx::Socket 'no_plan';

use File::Temp qw(tempdir);
use POSIX ();

my $bin = $ENV{DSTACK_BIN} || 'build/bin';
my $dir = tempdir('dstack-agent-XXXXXX', TMPDIR => 1, CLEANUP => 1);

$ENV{TEST_NGINX_AGENT_SOCKET} = "$dir/dstack.sock";

my $agent = fork // die "fork: $!";
if ($agent == 0) {
    open STDERR, '>', "$dir/agent.log";
    exec "$bin/dstack-agent-sim", '--socket', "$dir/dstack.sock",
         '--ca-dir', "$ENV{TEST_NGINX_CERT_DIR}/ca",
         '--app-id', 'aaaa000000000000000000000000000000000001',
         '--instance-id', '1111000000000000000000000000000000000001',
         '--app-name', 'app-a'
        or POSIX::_exit(127);
}

for (1 .. 100) {
    last if -S "$dir/dstack.sock";
    select undef, undef, undef, 0.05;
}
-S "$dir/dstack.sock" or die "the guest-agent simulator did not start\n";

END {
    if ($agent) {
        kill 'TERM', $agent;
        waitpid $agent, 0;
    }
}

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('config', <<'CONF') unless defined $block->config;
    mesh_gateway gw.example.com address=127.0.0.1:1;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    mesh_agent_socket $TEST_NGINX_AGENT_SOCKET;

    location / {
        mesh_target $http_x_dstack_target_app
                    port=$http_x_dstack_target_port;
    }
CONF
});

no_shuffle();
no_root_location();
run_tests();

__DATA__

=== TEST 1: /info is the agent's /Info
--- request
GET /info
--- response_body_like chomp
"app_id"\s*:\s*"aaaa000000000000000000000000000000000001".*"instance_id"\s*:\s*"1111000000000000000000000000000000000001"
--- response_headers
Content-Type: application/json



=== TEST 2: /prefix/get-tls-key is /GetTlsKey, query string kept
--- request
GET /prefix/get-tls-key?subject=demo&usage_client_auth=true
--- response_body_like chomp
"certificate_chain"\s*:\s*\[\s*"-----BEGIN CERTIFICATE-----



=== TEST 3: POST bodies pass through to the agent
--- request
POST /get_tls_key
{"subject": "demo", "alt_names": ["demo.local"], "usage_server_auth": true}
--- more_headers
Content-Type: application/json
--- response_body_like chomp
"key"\s*:\s*"-----BEGIN PRIVATE KEY-----



=== TEST 4: /gateway answers the gateway domain without asking the agent
--- request
GET /gateway
--- response_body chomp
{"gateway_domain":"gw.example.com"}
--- response_headers
Content-Type: application/json



=== TEST 5: a path that names no agent method: 400
--- request eval
["GET /", "GET /get.tls.key", "GET /" . ("a" x 65)]
--- error_code eval
[400, 400, 400]
--- response_body eval
[('{"error":"the path does not name a guest agent method"}') x 3]



=== TEST 6: no agent socket configured: 400
--- config
    mesh_gateway gw.example.com address=127.0.0.1:1;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target $http_x_dstack_target_app;
    }
--- request
GET /info
--- error_code: 400
--- response_body chomp
{"error":"no target app, and no guest agent socket is configured"}
--- error_log
mesh: no target app and no mesh_agent_socket
