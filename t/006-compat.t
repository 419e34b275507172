# mesh_target next to ordinary proxy configuration: proxy settings inherited
# from enclosing levels do not break it, and the settings it makes do not
# leak into other locations.
#
# nginx plays every part: app A (the block's --- config, on the test port),
# a gateway (stream + ssl_preread on gw.sock) routing
#     bbbb..0002-443s.gw.test   -> CVM B
#     bbbb..0002-8443s.gw.test  -> CVM C   (a gateway that lies)
# CVMs B and C (mesh_auth on) and a backend that echoes what it received.
# A block's --- http_extra is added to the http level.

use Test::Nginx::Socket 'no_plan';

# the sections this file's block preprocessors read
our @BlockSections = qw(http_extra);

$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();

our $A = 'aaaa000000000000000000000000000000000001';
our $B = 'bbbb000000000000000000000000000000000002';

my $world = <<'CONF';
    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm-b.sock ssl;
        server_name cvm-b;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_verify_client on;

        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header Host $http_host;
            proxy_set_header X-Via cvm-b;
        }
    }

    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm-c.sock ssl;
        server_name cvm-c;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-c.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-c.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_verify_client on;

        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header Host $http_host;
            proxy_set_header X-Via cvm-c;
        }
    }

    server {
        listen unix:$TEST_NGINX_HTML_DIR/backend.sock;

        location / {
            return 200 "via=$http_x_via $request_uri caller=$http_x_dstack_app_id host=$http_host level=$http_x_level upgrade=$http_upgrade\n";
        }
    }
CONF

my $gateway = <<'CONF';
    stream {
        log_format gateway 'gateway routed $ssl_preread_server_name';
        map_hash_bucket_size 128;

        map $ssl_preread_server_name $cvm {
            bbbb000000000000000000000000000000000002-443s.gw.test
                unix:$TEST_NGINX_HTML_DIR/cvm-b.sock;
            bbbb000000000000000000000000000000000002-8443s.gw.test
                unix:$TEST_NGINX_HTML_DIR/cvm-c.sock;
            default
                unix:$TEST_NGINX_HTML_DIR/nowhere.sock;
        }

        server {
            listen unix:$TEST_NGINX_HTML_DIR/gw.sock;
            ssl_preread on;
            proxy_pass $cvm;
            access_log $TEST_NGINX_HTML_DIR/../logs/error.log gateway;
        }
    }
CONF

# nginx's own upstream certificate check, switched on for the whole http
# level, with a CA and a name no mesh peer matches
our $verify = <<'CONF';
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    proxy_ssl_server_name on;
    proxy_ssl_name not-a-mesh-peer.example;
CONF

my $identity = <<'CONF';
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
CONF

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('main_config', $gateway);
    $block->set_value('http_config', $world . ($block->http_extra // ''));
    $block->set_value('config', $identity . $block->config);
});

no_shuffle();
no_root_location();
run_tests();

__DATA__

=== TEST 1: an inherited proxy_ssl_verify on does not refuse mesh peers
--- http_extra eval: $::verify
--- config
    location / {
        mesh_target $http_x_dstack_target_app port=$http_x_dstack_target_port;
    }
--- request
GET /api
--- more_headers
X-Dstack-Target-App: bbbb000000000000000000000000000000000002
--- response_body
via=cvm-b /api caller=aaaa000000000000000000000000000000000001 host=bbbb000000000000000000000000000000000002-443s.gw.test level= upgrade=
--- no_error_log
[error]



=== TEST 2: with it, the module still refuses a peer that is not the target
--- http_extra eval: $::verify
--- config
    location / {
        mesh_target $http_x_dstack_target_app port=$http_x_dstack_target_port;
    }
--- request
GET /secret
--- more_headers
X-Dstack-Target-App: bbbb000000000000000000000000000000000002
X-Dstack-Target-Port: 8443
--- error_code: 502
--- error_log
mesh: peer "bbbb000000000000000000000000000000000002-8443s.gw.test" refused: expected bbbb000000000000000000000000000000000002, got cccc000000000000000000000000000000000003 (another app)
certificate verify failed) while SSL handshaking to upstream
--- no_error_log
upstream SSL certificate does not match



=== TEST 3: proxy_ssl_verify on in the mesh_target location itself: the same
--- config
    location / {
        mesh_target bbbb000000000000000000000000000000000002;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    }
--- request
GET /here
--- response_body
via=cvm-b /here caller=aaaa000000000000000000000000000000000001 host=bbbb000000000000000000000000000000000002-443s.gw.test level= upgrade=



=== TEST 4: a server-level mesh_target leaves the server's locations alone
--- http_extra
    proxy_set_header X-Level http;
--- config
    mesh_target bbbb000000000000000000000000000000000002;

    location /plain/ {
        proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
    }
--- request eval
["GET /plain/x", "GET /mesh/x"]
--- more_headers
Upgrade: websocket
--- response_body eval
["via= /plain/x caller= host=localhost level=http upgrade=\n",
 "via=cvm-b /mesh/x caller=$::A host=$::B-443s.gw.test level= upgrade=\n"]



=== TEST 5: a server-level mesh_target does not turn off the locations' verification
--- http_extra eval: $::verify
--- config
    mesh_target bbbb000000000000000000000000000000000002;

    location /plain/ {
        proxy_pass https://unix:$TEST_NGINX_HTML_DIR/cvm-b.sock;
    }
--- request
GET /plain/x
--- error_code: 502
--- error_log
upstream SSL certificate does not match "not-a-mesh-peer.example"



=== TEST 6: a location nested in a mesh_target one proxies with the proxy's Host
--- config
    location /mesh/ {
        mesh_target bbbb000000000000000000000000000000000002;

        location /mesh/plain/ {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
    }
--- request eval
["GET /mesh/plain/x", "GET /mesh/x"]
--- response_body eval
["via= /mesh/plain/x caller= host=localhost level= upgrade=\n",
 "via=cvm-b /mesh/x caller=$::A host=$::B-443s.gw.test level= upgrade=\n"]



=== TEST 7: an "if" block inside a mesh_target location routes to the target
The block inherits the target: pinned, as its location (no worker crash).
--- config
    location / {
        mesh_target $http_x_dstack_target_app;

        if ($arg_via_if) {
            set $unused 1;
        }
    }
--- request
GET /api?via_if=1
--- more_headers
X-Dstack-Target-App: bbbb000000000000000000000000000000000002
--- response_body
via=cvm-b /api?via_if=1 caller=aaaa000000000000000000000000000000000001 host=bbbb000000000000000000000000000000000002-443s.gw.test level= upgrade=
--- no_error_log
[error]
exited on signal



=== TEST 8: "limit_except" inside a mesh_target location: allowed methods reach the target
--- config
    location / {
        mesh_target $http_x_dstack_target_app;

        limit_except GET {
            allow all;
        }
    }
--- request
POST /api
hello
--- more_headers
X-Dstack-Target-App: bbbb000000000000000000000000000000000002
--- response_body
via=cvm-b /api caller=aaaa000000000000000000000000000000000001 host=bbbb000000000000000000000000000000000002-443s.gw.test level= upgrade=
--- no_error_log
[error]
[alert]



=== TEST 9: $mesh_target_host without any mesh_target is empty
--- config
    location = /t {
        set $before $http_authorization;
        return 200 "host=[$mesh_target_host]\n";
    }
--- request
GET /t
--- more_headers
Authorization: secret-of-the-client
--- response_body
host=[]
