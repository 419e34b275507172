# Log levels: a refusal the client caused (401, 403 and 421 from mesh_auth,
# 400 for a malformed target) is logged at "info", as nginx logs client
# certificate errors, so a scanning client cannot flood the error log;
# "error_log ... info" shows them.
#
# The inbound blocks use a CVM server on a unix socket (--- cvm is its body
# after the TLS files) called by the test server with app-a's certificate,
# or none with "--- caller: none".

use Test::Nginx::Socket 'no_plan';

# the sections this file's block preprocessors read
our @BlockSections = qw(cvm caller);

$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();

add_block_preprocessor(sub {
    my $block = shift;

    return unless defined $block->cvm;

    $block->set_value('http_config', <<"CONF");
    server {
        listen unix:\$TEST_NGINX_HTML_DIR/cvm.sock ssl;
        ssl_certificate \$TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key \$TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate \$TEST_NGINX_CERT_DIR/ca.crt;
@{[ $block->cvm ]}
        location / {
            root \$TEST_NGINX_HTML_DIR;
        }
    }
CONF

    my $cert = ($block->caller // '') eq 'none' ? '' : <<'CONF';
        proxy_ssl_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
        proxy_ssl_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
CONF

    $block->set_value('config', <<"CONF");
    location /t/ {
        proxy_pass https://unix:\$TEST_NGINX_HTML_DIR/cvm.sock:/;
$cert    }
CONF
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: no client certificate: 401, logged at info
--- cvm
        ssl_verify_client optional;
        mesh_auth on;
--- caller: none
--- request
GET /t/
--- error_code: 401
--- error_log eval
qr/\[info\] .*mesh: caller not authenticated: no client certificate/
--- no_error_log
[error]



=== TEST 2: an app outside the allowlist: 403, logged at info
--- cvm
        ssl_verify_client on;
        mesh_auth on;
        mesh_allow_apps bbbb000000000000000000000000000000000002;
--- request
GET /t/
--- error_code: 403
--- error_log eval
qr/\[info\] .*mesh: app "aaaa000000000000000000000000000000000001" is not allowed/
--- no_error_log
[error]



=== TEST 3: a malformed target: 400, logged at info
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location /t {
        mesh_target $http_x_dstack_target_app port=$http_x_dstack_target_port;
    }
--- request
GET /t
--- more_headers
X-Dstack-Target-App: bbbb000000000000000000000000000000000002
X-Dstack-Target-Port: 80x
--- error_code: 400
--- error_log eval
qr/\[info\] .*mesh: bad target: target port must be a number from 1 to 65535/
--- no_error_log
[error]



=== TEST 4: a path that names no guest agent method: 400, logged at info
--- config
    mesh_gateway gw.test address=127.0.0.1:1;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    mesh_agent_socket $TEST_NGINX_HTML_DIR/agent.sock;

    location /prpc/ {
        mesh_target $http_x_dstack_target_app;
    }
--- request
GET /prpc/
--- error_code: 400
--- error_log eval
qr/\[info\] .*mesh: "\/prpc\/" names no guest agent method/
--- no_error_log
[error]



=== TEST 5: the logged path is the client's, escaped: no forged log line
--- config
    mesh_gateway gw.test address=127.0.0.1:1;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    mesh_agent_socket $TEST_NGINX_HTML_DIR/agent.sock;

    location /prpc/ {
        mesh_target $http_x_dstack_target_app;
    }
--- request
GET /prpc/x%0aFORGED/
--- error_code: 400
--- error_log
"/prpc/x%0aFORGED/" names no guest agent method
--- no_error_log eval
qr/^FORGED\/" names no guest agent method/
