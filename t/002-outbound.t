# Outbound mesh: mesh_target through a gateway, with the app_id pinned.
#
# Unless a block says otherwise, nginx plays every part (see the
# preprocessor below):
#   - the calling CVM, app A: the block's --- config, on the test port;
#   - the dstack gateway (stream + ssl_preread on gw.sock), routing by SNI:
#       bbbb..0002-443s.gw.test   -> CVM B         (TLS passthrough)
#       cccc..0003-443s.gw.test   -> CVM C         (TLS passthrough)
#       bbbb..0002-8443s.gw.test  -> CVM C         (a gateway that lies)
#       bbbb..0002-443.gw.test    -> its own TLS   (gateway terminates TLS)
#   - CVMs B (also on 127.0.0.1:19443) and C: mesh_auth on, in front of a backend that echoes what it
#     received.
# A block's --- http_extra is added to the http level of that world.
# The gateway, CVMs and backend write "gateway routed", "cvm-b received" and
# "cvm-c received" lines into the error log, so tests can tell what reached
# whom.

use Test::Nginx::Socket 'no_plan';

# the sections this file's block preprocessors read
our @BlockSections = qw(http_extra);

$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();

our $A = 'aaaa000000000000000000000000000000000001';
our $B = 'bbbb000000000000000000000000000000000002';
our $C = 'cccc000000000000000000000000000000000003';

my $world = <<'CONF';
    log_format mesh_cvm '$server_name received $request from $mesh_app_id '
                        'reused=$ssl_session_reused';

    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm-b.sock ssl;
        listen 127.0.0.1:19443 ssl;
        server_name cvm-b;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000;
        access_log $TEST_NGINX_HTML_DIR/../logs/error.log mesh_cvm;

        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header Host $http_host;
            proxy_set_header X-Cvm b;
            proxy_set_header X-Requests $connection_requests;
        }
    }

    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm-c.sock ssl;
        server_name cvm-c;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-c.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-c.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000;
        access_log $TEST_NGINX_HTML_DIR/../logs/error.log mesh_cvm;

        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header Host $http_host;
            proxy_set_header X-Cvm c;
            proxy_set_header X-Requests $connection_requests;
        }
    }

    # the gateway terminating TLS for "ID-P.gw.test" names
    server {
        listen unix:$TEST_NGINX_HTML_DIR/gw-tls.sock ssl;
        server_name gateway-tls;
        ssl_certificate $TEST_NGINX_CERT_DIR/gateway.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/gateway.key;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header Host $http_host;
            proxy_set_header X-Cvm b-via-gateway-tls;
            proxy_set_header X-Requests $connection_requests;
        }
    }

    server {
        listen unix:$TEST_NGINX_HTML_DIR/backend.sock;

        location / {
            return 200 "$http_x_cvm $request_uri caller=$http_x_dstack_app_id host=$http_host requests=$http_x_requests target=[$http_x_dstack_target_app$http_x_dstack_target_port]\n";
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
            cccc000000000000000000000000000000000003-443s.gw.test
                unix:$TEST_NGINX_HTML_DIR/cvm-c.sock;
            bbbb000000000000000000000000000000000002-8443s.gw.test
                unix:$TEST_NGINX_HTML_DIR/cvm-c.sock;
            bbbb000000000000000000000000000000000002-443.gw.test
                unix:$TEST_NGINX_HTML_DIR/gw-tls.sock;
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

my $caller = <<'CONF';
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    mesh_gateway_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target $http_x_dstack_target_app
                    port=$http_x_dstack_target_port
                    instance=$http_x_dstack_target_instance
                    tls=$http_x_dstack_target_use_tls;
    }
CONF

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('main_config', $gateway) unless defined $block->main_config;
    $block->set_value('http_config', $world . ($block->http_extra // ''))
        unless defined $block->http_config;
    $block->set_value('config', $caller) unless defined $block->config;
});

no_shuffle();
no_root_location();
run_tests();

__DATA__

=== TEST 1: app A calls app B through the gateway; B's backend sees A
--- request
GET /api/items?x=1
--- more_headers
X-Dstack-Target-App: bbbb000000000000000000000000000000000002
X-Dstack-Target-Port: 443
--- response_body
b /api/items?x=1 caller=aaaa000000000000000000000000000000000001 host=bbbb000000000000000000000000000000000002-443s.gw.test requests=1 target=[]
--- error_log
cvm-b received GET /api/items?x=1 HTTP/1.1 from aaaa000000000000000000000000000000000001
--- no_error_log
[error]



=== TEST 2: the caller cannot forge x-dstack-app-id toward the target
--- request
GET /t
--- more_headers
X-Dstack-Target-App: BBBB000000000000000000000000000000000002
X-Dstack-App-Id: cccc000000000000000000000000000000000003
--- response_body
b /t caller=aaaa000000000000000000000000000000000001 host=bbbb000000000000000000000000000000000002-443s.gw.test requests=1 target=[]



=== TEST 3: the gateway routes B's name to C: 502, nothing reaches C
--- request
GET /secret
--- more_headers
X-Dstack-Target-App: bbbb000000000000000000000000000000000002
X-Dstack-Target-Port: 8443
--- error_code: 502
--- error_log
gateway routed bbbb000000000000000000000000000000000002-8443s.gw.test
mesh: peer "bbbb000000000000000000000000000000000002-8443s.gw.test" refused: expected bbbb000000000000000000000000000000000002, got cccc000000000000000000000000000000000003 (another app)
certificate verify failed) while SSL handshaking to upstream
--- no_error_log
cvm-c received
cvm-b received



=== TEST 4: interleaved requests to B and C each reach the app they name
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location /b {
        mesh_target bbbb000000000000000000000000000000000002;
    }

    location /c {
        mesh_target cccc000000000000000000000000000000000003 port=443;
    }
--- request eval
[map { $_ % 2 ? "GET /b" : "GET /c" } 1 .. 200]
--- response_body eval
[map {
    my $n = int(($_ + 1) / 2);
    $_ % 2
        ? "b /b caller=$::A host=$::B-443s.gw.test requests=$n target=[]\n"
        : "c /c caller=$::A host=$::C-443s.gw.test requests=$n target=[]\n"
} 1 .. 200]



=== TEST 5: a TLS session made with B is never offered to a connection meant for C
B and C share session ticket keys here, so C could resume B's session.  The
page asks for B twice (the second resumes B's session), then for C, which
the gateway sends to B: a resumed session would skip the pin, so none may be
offered.
--- http_config
    log_format mesh_cvm '$server_name received $request from $mesh_app_id '
                        'reused=$ssl_session_reused';

    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm-b.sock ssl;
        server_name cvm-b;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_ticket_key $TEST_NGINX_HTML_DIR/ticket.key;
        keepalive_timeout 0;
        access_log $TEST_NGINX_HTML_DIR/../logs/error.log mesh_cvm;

        mesh_auth on;

        location / {
            return 204;
        }
    }
--- main_config
    stream {
        server {
            listen unix:$TEST_NGINX_HTML_DIR/gw.sock;
            proxy_pass unix:$TEST_NGINX_HTML_DIR/cvm-b.sock;
        }
    }
--- user_files eval
">>> page.html\n"
. qq{<!--# include virtual="/b" wait="yes" -->}
. qq{<!--# include virtual="/b" wait="yes" -->}
. qq{<!--# include virtual="/c" wait="yes" -->\n}
. ">>> ticket.key\n" . ("k" x 80)
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location = /page {
        ssi on;
        default_type text/html;
        alias $TEST_NGINX_HTML_DIR/page.html;
    }

    location /b {
        mesh_target bbbb000000000000000000000000000000000002;
    }

    location /c {
        mesh_target cccc000000000000000000000000000000000003;
    }
--- request
GET /page
--- grep_error_log eval
qr/cvm-b received GET \/\w+ HTTP\/1.1 from \w+ reused=r?|expected \w+, got \w+/
--- grep_error_log_out eval
"cvm-b received GET /b HTTP/1.1 from $::A reused=
cvm-b received GET /b HTTP/1.1 from $::A reused=r
expected $::C, got $::B
"
--- error_log
certificate verify failed) while SSL handshaking to upstream



=== TEST 6: 100 sequential requests to B use one upstream TLS connection
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
    }
--- request eval
[map { "GET /n$_" } 1 .. 100]
--- response_body eval
[map { "b /n$_ caller=$::A host=$::B-443s.gw.test requests=$_ target=[]\n" } 1 .. 100]



=== TEST 7: malformed targets: 400 with a JSON error, nothing sent anywhere
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t", "GET /t", "GET /t"]
--- more_headers eval
["X-Dstack-Target-App: zz00\r\nX-Dstack-Target-Port: 443",
 "X-Dstack-Target-App: " . ("a" x 100),
 "X-Dstack-Target-App: $::B\r\nX-Dstack-Target-Port: 0",
 "X-Dstack-Target-App: $::B\r\nX-Dstack-Target-Port: 65536",
 "X-Dstack-Target-App: $::B\r\nX-Dstack-Target-Port: 80x",
 "X-Dstack-Target-App: $::B\r\nX-Dstack-Target-Use-Tls: maybe"]
--- error_code eval
[400, 400, 400, 400, 400, 400]
--- response_body eval
['{"error":"target app must be an even number of 2 to 56 hex digits"}',
 '{"error":"target app must be an even number of 2 to 56 hex digits"}',
 '{"error":"target port must be a number from 1 to 65535"}',
 '{"error":"target port must be a number from 1 to 65535"}',
 '{"error":"target port must be a number from 1 to 65535"}',
 '{"error":"target tls must be on, off, true, false, 1 or 0"}']
--- response_headers eval
[("Content-Type: application/json") x 6]
--- no_error_log
gateway routed



=== TEST 8: control and name characters nginx lets through are refused by the module
nginx itself answers 400 for a CR or NUL in a header; these values pass its
parser and must be refused by the target check: a vertical tab, DEL, a dot
that would add a label to the gateway name, a space inside the value, and
an instance id with a colon.
--- request eval
["GET /t", "GET /t", "GET /t", "GET /t", "GET /t"]
--- more_headers eval
["X-Dstack-Target-App: bbbb\x0b0000",
 "X-Dstack-Target-App: bbbb\x7f0000",
 "X-Dstack-Target-App: $::B.evil",
 "X-Dstack-Target-App: bbbb 0000",
 "X-Dstack-Target-App: $::B\r\nX-Dstack-Target-Instance: cccc:443"]
--- error_code eval
[400, 400, 400, 400, 400]
--- response_body eval
[('{"error":"target app must be an even number of 2 to 56 hex digits"}') x 4,
 '{"error":"target instance must be an even number of 2 to 56 hex digits"}']
--- response_headers eval
[("Content-Type: application/json") x 5]
--- error_log eval
qr/\[info\] .*mesh: bad target: target (?:app|instance) must be an even number/
--- no_error_log
gateway routed



=== TEST 9: gateway-terminated TLS (tls=off): no pinning, gateway certificate checked
--- request
GET /plain
--- more_headers
X-Dstack-Target-App: bbbb000000000000000000000000000000000002
X-Dstack-Target-Use-Tls: false
--- response_body
b-via-gateway-tls /plain caller= host=bbbb000000000000000000000000000000000002-443.gw.test requests=1 target=[]



=== TEST 10: fixed/ gateway: every target at one address
--- config
    mesh_gateway fixed/localhost:19443;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target $http_x_dstack_target_app;
    }
--- request
GET /f
--- more_headers
X-Dstack-Target-App: bbbb000000000000000000000000000000000002
--- response_body
b /f caller=aaaa000000000000000000000000000000000001 host=localhost requests=1 target=[]



=== TEST 11: fixed/ gateway: the app_id is still pinned
--- config
    mesh_gateway fixed/localhost:19443;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target $http_x_dstack_target_app;
    }
--- request
GET /f
--- more_headers
X-Dstack-Target-App: cccc000000000000000000000000000000000003
--- error_code: 502
--- error_log
mesh: peer "localhost" refused: expected cccc000000000000000000000000000000000003, got bbbb000000000000000000000000000000000002 (another app)
certificate verify failed) while SSL handshaking to upstream



=== TEST 12: an unreachable gateway fails within the connect timeout
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/nothing-listens-here.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    proxy_connect_timeout 1s;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
    }
--- request
GET /t
--- error_code: 502
--- error_log
failed (2: No such file or directory) while connecting to upstream



=== TEST 13: nginx -t refuses mesh_target without an identity
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
    }
--- must_die
--- error_log
"mesh_target" needs "mesh_certificate" and "mesh_certificate_key"



=== TEST 14: nginx -t refuses mesh_target without the trusted CA
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
    }
--- must_die
--- error_log
"mesh_target" needs "mesh_trusted_certificate"



=== TEST 15: nginx -t refuses mesh_target with session reuse off (no pinning hook)
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
        proxy_ssl_session_reuse off;
    }
--- must_die
--- error_log
"mesh_target" needs "proxy_ssl_session_reuse on"



=== TEST 16: the reserved upstream name cannot be used by hand
--- http_config
    upstream dstack_mesh_gateway {
        server 127.0.0.1:1;
    }
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
    }
--- must_die
--- error_log
the upstream name "dstack_mesh_gateway" is reserved by mesh_target



=== TEST 17: mesh_target at server level routes requests that match no location
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    mesh_target cccc000000000000000000000000000000000003;

    location = /local {
        return 200 "answered here\n";
    }
--- request eval
["GET /anything", "GET /local"]
--- response_body eval
["c /anything caller=$::A host=$::C-443s.gw.test requests=1 target=[]\n",
 "answered here\n"]



=== TEST 18: client_max_body_size applies before anything is sent
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
        client_max_body_size 1k;
    }
--- request eval
"POST /upload\n" . ("x" x 4096)
--- error_code: 413
--- no_error_log
cvm-b received



=== TEST 19: the identity and CA can be set once at the http level
--- http_extra
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
    }
--- request
GET /inherited
--- response_body
b /inherited caller=aaaa000000000000000000000000000000000001 host=bbbb000000000000000000000000000000000002-443s.gw.test requests=1 target=[]



=== TEST 20: mesh_certificate without its key is refused
--- http_extra
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
--- config
    location / {
        return 204;
    }
--- must_die
--- error_log
"mesh_certificate" and "mesh_certificate_key" go together
