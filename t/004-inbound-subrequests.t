# Inbound identity beyond a plain main request: subrequests (SSI, auth_request,
# mirror), error_page and named locations, "satisfy any", the server whose CA
# verified the certificate, $http_x_dstack_app_id read before mesh_auth ran,
# and header names spelled with punctuation.
#
# As in 001-inbound.t, the test client talks plain HTTP to the caller (the
# block's --- config, by default "location /t/" below), which calls the CVM
# server over mutual TLS on a unix socket, presenting the certificate named
# by --- caller (default app-a; "none" presents none).  The CVM server is
# app-b's; --- cvm is its body after the TLS files.  The backend answers
# "backend saw <x-dstack-app-id><x-extra>".  A block's own --- http_config
# goes before these servers; "--- tcp_listen: mock.sock" is a mock backend
# on a unix socket in the html directory.
#
# Certificates in $TEST_NGINX_CERT_DIR, from t/certs.sh:
#   app-a  aaaa000000000000000000000000000000000001
#   other  app-a's id, issued by another CA (other-ca.crt)

use Test::Nginx::Socket 'no_plan';

# the sections this file's block preprocessors read
our @BlockSections = qw(cvm caller);

$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value(tcp_listen => html_dir() . '/mock.sock')
        if ($block->tcp_listen // '') =~ /^\s*mock\.sock\s*$/;

    my $http = $block->http_config // '';

    $http .= <<"CONF" if defined $block->cvm;
    server {
        listen unix:\$TEST_NGINX_HTML_DIR/cvm.sock ssl;
        ssl_certificate \$TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key \$TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate \$TEST_NGINX_CERT_DIR/ca.crt;
@{[ $block->cvm ]}
    }
CONF

    $block->set_value('http_config', $http . <<'CONF');
    server {
        listen unix:$TEST_NGINX_HTML_DIR/backend.sock;

        location / {
            return 200 "backend saw $http_x_dstack_app_id$http_x_extra\n";
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
    ignore_invalid_headers off;

    location /t/ {
        proxy_pass https://unix:\$TEST_NGINX_HTML_DIR/cvm.sock:/;
$cert    }
CONF
});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: SSI include into a mesh_auth location: the backend sees the verified app id, not the client's
--- cvm
        ssl_verify_client on;

        location = /page {
            ssi on;
            default_type text/html;
            alias $TEST_NGINX_HTML_DIR/page.html;
        }

        location /api/ {
            mesh_auth on;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- user_files
>>> page.html
<!--# include virtual="/api/x" -->
--- request
GET /t/page
--- more_headers
X-Dstack-App-Id: bbbb000000000000000000000000000000000002
--- response_body eval
"backend saw aaaa000000000000000000000000000000000001\n\n"
--- no_error_log
[error]



=== TEST 2: SSI include into a mesh_auth location without a client certificate: the subrequest is refused
--- cvm
        ssl_verify_client optional;

        location = /page {
            ssi on;
            default_type text/html;
            alias $TEST_NGINX_HTML_DIR/page.html;
        }

        location /api/ {
            mesh_auth on;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- user_files
>>> page.html
[<!--# include virtual="/api/x" -->]
--- caller: none
--- request
GET /t/page
--- more_headers
X-Dstack-App-Id: aaaa000000000000000000000000000000000001
--- response_body_like
\A(?!.*backend saw)\[<html>.*401 Authorization Required.*\]$
--- error_log
mesh: caller not authenticated: no client certificate



=== TEST 3: SSI include into a location with a stricter allowlist than the page's: 403 for the subrequest
--- cvm
        ssl_verify_client on;
        mesh_auth on;

        location = /page {
            ssi on;
            default_type text/html;
            alias $TEST_NGINX_HTML_DIR/page.html;
        }

        location /strict/ {
            mesh_allow_apps bbbb000000000000000000000000000000000002;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- user_files
>>> page.html
[<!--# include virtual="/strict/x" -->]
--- request
GET /t/page
--- response_body_like
\A(?!.*backend saw)\[<html>.*403 Forbidden.*\]$
--- error_log
mesh: app "aaaa000000000000000000000000000000000001" is not allowed



=== TEST 4: auth_request into a mesh_auth location without a client certificate: 401, the service never asked
--- http_config
    log_format authsvc 'authsvc asked for [$http_x_dstack_app_id]';

    server {
        listen unix:$TEST_NGINX_HTML_DIR/authsvc.sock;
        access_log $TEST_NGINX_HTML_DIR/../logs/error.log authsvc;

        location / {
            if ($http_x_dstack_app_id = "aaaa000000000000000000000000000000000001") {
                return 204;
            }
            return 403;
        }
    }
--- cvm
        ssl_verify_client optional;

        location /api/ {
            auth_request /auth;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }

        location = /auth {
            internal;
            mesh_auth on;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/authsvc.sock;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
--- caller: none
--- request
GET /t/api/x
--- more_headers
X-Dstack-App-Id: aaaa000000000000000000000000000000000001
--- error_code: 401
--- error_log
mesh: caller not authenticated: no client certificate
--- no_error_log
authsvc asked



=== TEST 5: auth_request into a mesh_auth location: the service decides on the verified app id
--- http_config
    server {
        listen unix:$TEST_NGINX_HTML_DIR/authsvc.sock;

        location / {
            if ($http_x_dstack_app_id = "aaaa000000000000000000000000000000000001") {
                return 204;
            }
            return 403;
        }
    }
--- cvm
        ssl_verify_client on;

        location /api/ {
            auth_request /auth;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Dstack-App-Id "";
            proxy_set_header X-Extra "[main]";
        }

        location = /auth {
            internal;
            mesh_auth on;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/authsvc.sock;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
--- request
GET /t/api/x
--- more_headers
X-Dstack-App-Id: bbbb000000000000000000000000000000000002
--- response_body
backend saw [main]



=== TEST 6: mirror into a mesh_auth location: the mirrored request carries the verified app id
The page's response has no length (SSI), so it ends when the CVM closes the
connection, which waits for the mirror subrequest: its log line is written
by then.
--- http_config
    log_format mirror 'mirror saw [$http_x_dstack_app_id]';

    server {
        listen unix:$TEST_NGINX_HTML_DIR/mirror.sock;
        access_log $TEST_NGINX_HTML_DIR/../logs/error.log mirror;

        location / {
            return 204;
        }
    }
--- cvm
        ssl_verify_client on;

        location /api/ {
            mirror /mirror;
            ssi on;
            ssi_types text/plain;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Dstack-App-Id "";
            proxy_set_header X-Extra "[main]";
        }

        location = /mirror {
            internal;
            mesh_auth on;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/mirror.sock;
        }
--- request
GET /t/api/x
--- more_headers
X-Dstack-App-Id: bbbb000000000000000000000000000000000002
--- response_body
backend saw [main]
--- error_log
mirror saw [aaaa000000000000000000000000000000000001]
--- no_error_log
mirror saw [bbbb



=== TEST 7: error_page 403 = @named: the refused app's id is not forwarded, nor the client's
--- cvm
        ssl_verify_client on;

        location /api/ {
            mesh_auth on;
            mesh_allow_apps bbbb000000000000000000000000000000000002;
            error_page 403 = @fallback;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }

        location @fallback {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Extra "fallback";
        }
--- request
GET /t/api/x
--- more_headers
X-Dstack-App-Id: bbbb000000000000000000000000000000000002
--- response_body
backend saw fallback
--- error_log
mesh: app "aaaa000000000000000000000000000000000001" is not allowed



=== TEST 8: "satisfy any" with "allow": the refused app's id is not forwarded, nor the client's
--- cvm
        ssl_verify_client on;
        mesh_auth on;
        mesh_allow_apps bbbb000000000000000000000000000000000002;
        satisfy any;
        allow unix:;
        deny all;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Extra "[admitted by address]";
        }
--- request
GET /t/api
--- more_headers
X-Dstack-App-Id: bbbb000000000000000000000000000000000002
--- response_body
backend saw [admitted by address]



=== TEST 9: try_files into a named mesh_auth location checks the allowlist there
--- cvm
        ssl_verify_client on;

        location /api/ {
            try_files /nonexistent @guarded;
        }

        location @guarded {
            mesh_auth on;
            mesh_allow_apps bbbb000000000000000000000000000000000002;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
--- request
GET /t/api/x
--- error_code: 403
--- error_log
mesh: app "aaaa000000000000000000000000000000000001" is not allowed



=== TEST 10: nginx -t refuses mesh_auth in a server without ssl_verify_client
--- http_config
    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm.sock ssl;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;

        location / {
            mesh_auth on;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
    }
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"mesh_auth" needs "ssl_verify_client" in its server \(the server in \S+nginx\.conf:\d+\)/



=== TEST 11: nginx -t refuses mesh_auth inherited from the http level by a server without ssl_verify_client
--- http_config
    mesh_auth on;
--- config
--- must_die
--- error_log
"mesh_auth" needs "ssl_verify_client" in its server



=== TEST 12: no SNI, so the default server's CA verified the certificate; Host names the mesh_auth server: 421
The default server on the socket trusts another CA, which issued "other"
with app-a's id; nginx itself compares SNI with Host only when there is SNI.
--- http_config
    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm.sock ssl default_server;
        server_name other;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/other-ca.crt;
        ssl_verify_client on;

        location / {
            return 200 "other server\n";
        }
    }

    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm.sock ssl;
        server_name mesh;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        ssl_verify_client on;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Extra ",mesh_app_id=$mesh_app_id";
        }
    }
--- config
    location /t/ {
        proxy_pass https://unix:$TEST_NGINX_HTML_DIR/cvm.sock:/;
        proxy_set_header Host mesh;
        proxy_ssl_server_name off;
        proxy_ssl_certificate $TEST_NGINX_CERT_DIR/other.crt;
        proxy_ssl_certificate_key $TEST_NGINX_CERT_DIR/other.key;
    }
--- request
GET /t/api
--- error_code: 421
--- error_log
mesh: caller not authenticated: the certificate was verified by another server (the TLS server name and Host pick different servers)



=== TEST 13: SNI names the other server, Host the mesh_auth server: 421
--- http_config
    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm.sock ssl default_server;
        server_name other;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/other-ca.crt;
        ssl_verify_client on;

        location / {
            return 200 "other server\n";
        }
    }

    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm.sock ssl;
        server_name mesh;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        ssl_verify_client on;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
        }
    }
--- config
    location /t/ {
        proxy_pass https://unix:$TEST_NGINX_HTML_DIR/cvm.sock:/;
        proxy_set_header Host mesh;
        proxy_ssl_server_name on;
        proxy_ssl_name other;
        proxy_ssl_certificate $TEST_NGINX_CERT_DIR/other.crt;
        proxy_ssl_certificate_key $TEST_NGINX_CERT_DIR/other.key;
    }
--- request
GET /t/api
--- error_code: 421



=== TEST 14: SNI and Host both name the mesh_auth server, which is not the default: admitted
--- http_config
    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm.sock ssl default_server;
        server_name other;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/other-ca.crt;
        ssl_verify_client on;

        location / {
            return 200 "other server\n";
        }
    }

    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm.sock ssl;
        server_name mesh;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        ssl_verify_client on;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Extra ",mesh_app_id=$mesh_app_id";
        }
    }
--- config
    location /t/ {
        proxy_pass https://unix:$TEST_NGINX_HTML_DIR/cvm.sock:/;
        proxy_set_header Host mesh;
        proxy_ssl_server_name on;
        proxy_ssl_name mesh;
        proxy_ssl_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
        proxy_ssl_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    }
--- request
GET /t/api
--- response_body
backend saw aaaa000000000000000000000000000000000001,mesh_app_id=aaaa000000000000000000000000000000000001



=== TEST 15: $http_x_dstack_app_id read by "set" before mesh_auth: later reads see the verified app id
--- cvm
        ssl_verify_client on;
        mesh_auth on;

        location / {
            set $early $http_x_dstack_app_id;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Extra ",late=$http_x_dstack_app_id";
        }
--- request
GET /t/api
--- more_headers
X-Dstack-App-Id: bbbb000000000000000000000000000000000002
--- response_body
backend saw aaaa000000000000000000000000000000000001,late=aaaa000000000000000000000000000000000001



=== TEST 16: limit_req keyed by a map of $http_x_dstack_app_id sees the verified app id
--- http_config
    map $http_x_dstack_app_id $app_key {
        default $http_x_dstack_app_id;
    }

    limit_req_zone $app_key zone=per_app:1m rate=100r/s;
--- cvm
        ssl_verify_client on;
        mesh_auth on;

        location / {
            limit_req zone=per_app burst=10;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Extra ",key=$app_key";
        }
--- request
GET /t/api
--- more_headers
X-Dstack-App-Id: bbbb000000000000000000000000000000000002
--- response_body
backend saw aaaa000000000000000000000000000000000001,key=aaaa000000000000000000000000000000000001



=== TEST 17: header names compare on letters and digits: x.dstack.app.id and xdstackappid never reach the backend
--- cvm
        ssl_verify_client on;
        ignore_invalid_headers off;
        mesh_auth on;

        location / {
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/mock.sock;
            proxy_set_header Host backend;
        }
--- request
GET /t/api
--- more_headers
x.dstack.app.id: bbbb000000000000000000000000000000000002
X-Other: kept
xdstackappid: cccc000000000000000000000000000000000003
X-Dstack-App-Id.: dddd000000000000000000000000000000000004
--- tcp_listen: mock.sock
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



=== TEST 18: the app id a subrequest sets stays in the subrequest: its parent's backend does not get it
--- http_config
    server {
        listen unix:$TEST_NGINX_HTML_DIR/authsvc.sock;

        location / {
            return 204;
        }
    }
--- cvm
        ssl_verify_client on;

        location /api/ {
            auth_request /auth;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/backend.sock;
            proxy_set_header X-Extra "[main]";
        }

        location = /auth {
            internal;
            mesh_auth on;
            proxy_pass http://unix:$TEST_NGINX_HTML_DIR/authsvc.sock;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
--- request
GET /t/api/x
--- response_body
backend saw [main]
