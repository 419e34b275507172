# Inbound identity: mesh_auth, mesh_allow_apps, x-dstack-app-id, $mesh_app_id.
#
# Each request goes from the test client to the caller (the block's
# --- config, by default "location /t/" below), which calls the CVM server
# over mutual TLS on a unix socket, presenting the certificate named by
# --- caller (default app-a; "none" presents none).  The CVM server is
# app-b's; --- cvm is its body after the TLS files (default: verification
# on, mesh_auth on, everything proxied to the backend).  The backend
# answers "backend saw <x-dstack-app-id><x-extra>".  A block's own
# --- http_config goes before these servers.
#
# Certificates in $TEST_NGINX_CERT_DIR, from t/certs.sh:
#   app-a  aaaa000000000000000000000000000000000001
#   app-b  bbbb000000000000000000000000000000000002
#   other  app-a's id, issued by another CA
#   noext  issued by the test CA, without the app_id extension
#   badext issued by the test CA, app_id not an OCTET STRING inside

use Test::Nginx::Socket 'no_plan';

# the sections this file's block preprocessors read
our @BlockSections = qw(cvm caller);

$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();

my $default_cvm = <<'CONF';
        ssl_verify_client on;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
CONF

add_block_preprocessor(sub {
    my $block = shift;

    return if defined $block->config && !defined $block->cvm;

    my $cvm = $block->cvm // $default_cvm;

    $block->set_value('http_config', ($block->http_config // '') . <<"CONF");
    server {
        listen unix:\$TEST_NGINX_HTML_DIR/cvm.sock ssl;
        ssl_certificate \$TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key \$TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate \$TEST_NGINX_CERT_DIR/ca.crt;
$cvm
    }

    server {
        listen unix:\$TEST_NGINX_HTML_DIR/backend.sock;

        location / {
            return 200 "backend saw \$http_x_dstack_app_id\$http_x_extra\\n";
        }
    }
CONF

    return if defined $block->config;

    my $caller = $block->caller // 'app-a';
    my $cert = $caller eq 'none' ? '' : <<"CONF";
        proxy_ssl_certificate \$TEST_NGINX_CERT_DIR/$caller.crt;
        proxy_ssl_certificate_key \$TEST_NGINX_CERT_DIR/$caller.key;
CONF

    $block->set_value('config', <<"CONF");
    underscores_in_headers on;

    location /t/ {
        proxy_pass https://unix:\$TEST_NGINX_HTML_DIR/cvm.sock:/;
$cert    }
CONF
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: allowed app reaches the backend with exactly its verified app_id
--- cvm
        ssl_verify_client on;
        mesh_auth on;
        mesh_allow_apps aaaa000000000000000000000000000000000001;

        location / {
            proxy_pass http://127.0.0.1:12345;
            # said here, so the request line and Connection do not depend
            # on the nginx version's defaults (1.29.7 keeps upstreams alive)
            proxy_http_version 1.0;
            proxy_set_header Host backend;
            proxy_set_header Connection close;
        }
--- request
GET /t/api
--- tcp_listen: 12345
--- tcp_query eval
"GET /api HTTP/1.0\r
Host: backend\r
Connection: close\r
X-Dstack-App-Id: aaaa000000000000000000000000000000000001\r
\r
"
--- tcp_reply eval
"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nhi\n"
--- response_body
hi
--- no_error_log
[error]



=== TEST 2: client-sent x-dstack-app-id, twice, in other case and spelling, never reaches the backend
--- cvm
        underscores_in_headers on;
        ssl_verify_client on;
        mesh_auth on;

        location / {
            proxy_pass http://127.0.0.1:12345;
            # said here, so the request line and Connection do not depend
            # on the nginx version's defaults (1.29.7 keeps upstreams alive)
            proxy_http_version 1.0;
            proxy_set_header Host backend;
            proxy_set_header Connection close;
        }
--- request
GET /t/api
--- more_headers
X-Dstack-App-Id: bbbb000000000000000000000000000000000002
x-dstack-app-id: cccc000000000000000000000000000000000003
X-DSTACK-APP-ID: dddd
X_Dstack_App_Id: eeee
X-Other: kept
--- tcp_listen: 12345
--- tcp_query eval
"GET /api HTTP/1.0\r
Host: backend\r
Connection: close\r
X-Other: kept\r
X-Dstack-App-Id: aaaa000000000000000000000000000000000001\r
\r
"
--- tcp_reply eval
"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nhi\n"
--- response_body
hi



=== TEST 3: optional verification and no certificate: 401, one log line
--- cvm
        ssl_verify_client optional;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- caller: none
--- request
GET /t/api
--- error_code: 401
--- grep_error_log eval
qr/mesh: caller not authenticated: [^,]*/
--- grep_error_log_out
mesh: caller not authenticated: no client certificate



=== TEST 4: certificate from another CA: nginx refuses it under "optional"
--- cvm
        ssl_verify_client optional;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- caller: other
--- request
GET /t/api
--- error_code: 400
--- error_log
client SSL certificate verify error



=== TEST 5: certificate from another CA under "optional_no_ca": 401 from mesh_auth
--- cvm
        ssl_verify_client optional_no_ca;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- caller: other
--- request
GET /t/api
--- error_code: 401
--- error_log eval
qr/mesh: caller not authenticated: (unable to get local issuer certificate|self[- ]signed certificate in certificate chain|unable to verify the first certificate)/



=== TEST 6: certificate without the app_id extension: 401
--- caller: noext
--- request
GET /t/api
--- error_code: 401
--- error_log
mesh: caller not authenticated: extension absent



=== TEST 7: certificate with a malformed app_id extension: 401
--- caller: badext
--- request
GET /t/api
--- error_code: 401
--- error_log
mesh: caller not authenticated: extension value is not one OCTET STRING
--- no_error_log
[alert]



=== TEST 8: app outside the allowlist: 403 naming the app
--- cvm
        ssl_verify_client on;
        mesh_auth on;
        mesh_allow_apps bbbb000000000000000000000000000000000002
                        CCCC000000000000000000000000000000000003;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- request
GET /t/api
--- error_code: 403
--- error_log
mesh: app "aaaa000000000000000000000000000000000001" is not allowed



=== TEST 9: location-level mesh_allow_apps overrides the server's; ids compare case-insensitively
--- cvm
        ssl_verify_client on;
        mesh_auth on;
        mesh_allow_apps bbbb000000000000000000000000000000000002;

        location /open {
            mesh_allow_apps AAAA000000000000000000000000000000000001;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }

        location /closed {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- request eval
["GET /t/open", "GET /t/closed"]
--- error_code eval
[200, 403]
--- response_body_like eval
["^backend saw aaaa000000000000000000000000000000000001\$", "403 Forbidden"]



=== TEST 10: mesh_auth off in a location: no check, headers untouched
--- cvm
        ssl_verify_client optional;
        mesh_auth on;

        location /health {
            mesh_auth off;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- caller: none
--- request
GET /t/health
--- more_headers
X-Dstack-App-Id: client-said
--- response_body
backend saw client-said
--- no_error_log
mesh:



=== TEST 11: 100 requests on one keepalive TLS connection parse the certificate once
The parse is told by a debug-level line: an nginx built without --with-debug
skips this block.  The page includes /one a hundred times, one after another (wait="yes"), so a
single client request drives 100 upstream requests over one kept-alive
mTLS connection, and its error log covers all of them.
--- http_config
    upstream cvm {
        server unix:$TEST_NGINX_HTML_DIR/cvm.sock;
        keepalive 1;
    }
--- cvm
        ssl_verify_client on;
        keepalive_requests 1000;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Extra ",requests=$connection_requests";
        }
--- config
    location = /t {
        ssi on;
        default_type text/html;
        alias $TEST_NGINX_HTML_DIR/hundred.html;
    }

    location = /one {
        proxy_pass https://cvm/;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_ssl_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
        proxy_ssl_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    }
--- user_files eval
">>> hundred.html\n" . qq{<!--# include virtual="/one" wait="yes" -->} x 100
--- request
GET /t
--- response_body eval
my $body = "";
$body .= "backend saw aaaa000000000000000000000000000000000001,requests=$_\n"
    for 1 .. 100;
$body
--- skip_eval: 3: `@{[ $ENV{TEST_NGINX_BINARY} || 'nginx' ]} -V 2>&1` !~ /--with-debug/
--- grep_error_log eval
qr/mesh: parsed peer certificate: status:\d+/
--- grep_error_log_out
mesh: parsed peer certificate: status:4



=== TEST 12: $mesh_app_id in map and log_format
--- http_config
    map $mesh_app_id $caller {
        aaaa000000000000000000000000000000000001  app-a;
        default                                   unknown;
    }

    log_format mesh 'mesh-access caller=$caller app=$mesh_app_id status=$status';
--- cvm
        ssl_verify_client optional;
        access_log $TEST_NGINX_HTML_DIR/../logs/error.log mesh;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Extra ",caller=$caller";
        }
--- request
GET /t/
--- response_body
backend saw aaaa000000000000000000000000000000000001,caller=app-a
--- error_log
mesh-access caller=app-a app=aaaa000000000000000000000000000000000001 status=200



=== TEST 13: $mesh_app_id is empty for a caller without a certificate
--- http_config
    map $mesh_app_id $caller {
        aaaa000000000000000000000000000000000001  app-a;
        default                                   unknown;
    }

    log_format mesh 'mesh-access caller=$caller app=$mesh_app_id status=$status';
--- cvm
        ssl_verify_client optional;
        access_log $TEST_NGINX_HTML_DIR/../logs/error.log mesh;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- caller: none
--- request
GET /t/
--- error_code: 401
--- error_log
mesh-access caller=unknown app=- status=401



=== TEST 14: nginx -t names a malformed app id
--- config
    location /t {
        mesh_auth on;
        mesh_allow_apps aaaa00000000000000000000000000000000000g;
    }
--- must_die
--- error_log
invalid app id "aaaa00000000000000000000000000000000000g" in "mesh_allow_apps"



=== TEST 15: "any" does not mix with app ids
--- config
    location /t {
        mesh_allow_apps any aaaa000000000000000000000000000000000001;
    }
--- must_die
--- error_log
"any" cannot be combined with app ids



=== TEST 16: an over-long app id is refused at configuration time
--- config
    location /t {
        mesh_allow_apps aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;
    }
--- must_die
--- error_log
invalid app id



=== TEST 17: plain HTTP (no TLS) with mesh_auth: 401
--- cvm
        ssl_verify_client on;
--- config
    ssl_verify_client on;

    location /t {
        mesh_auth on;
        proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
    }
--- request
GET /t
--- more_headers
X-Dstack-App-Id: aaaa000000000000000000000000000000000001
--- error_code: 401
--- error_log
mesh: caller not authenticated: not a TLS connection



=== TEST 18: "return" runs before the access phase, so mesh_auth cannot guard it
--- config
    ssl_verify_client on;

    location /t {
        mesh_auth on;
        return 200 "unguarded\n";
    }
--- request
GET /t
--- response_body
unguarded
--- no_error_log
mesh:
