# tls=off: the gateway terminates TLS itself ("ID-P.D"), so no app_id can be
# pinned, but the gateway's own certificate must chain to
# mesh_gateway_trusted_certificate and name the host asked for.
#
# Each block's --- gateway_cert picks the certificate a TLS-terminating
# gateway (a server on gw.sock, in front of a backend that echoes what it
# got) presents; the caller reaches it with mesh_gateway ... address=.

use Test::Nginx::Socket 'no_plan';

# the sections this file's block preprocessors read
our @BlockSections = qw(gateway_cert gateway_trust);

$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();

our $B = 'bbbb000000000000000000000000000000000002';

add_block_preprocessor(sub {
    my $block = shift;
    my $cert = $block->gateway_cert // 'gateway';

    $block->set_value('http_config', <<"CONF");
    server {
        listen unix:\$TEST_NGINX_HTML_DIR/gw.sock ssl;
        ssl_certificate \$TEST_NGINX_CERT_DIR/$cert.crt;
        ssl_certificate_key \$TEST_NGINX_CERT_DIR/$cert.key;

        location / {
            return 200 "gateway served \$ssl_server_name \$request_uri\\n";
        }
    }
CONF

    my $trust = ($block->gateway_trust // 'ca') eq 'none' ? ''
        : "mesh_gateway_trusted_certificate \$TEST_NGINX_CERT_DIR/"
          . ($block->gateway_trust // 'ca') . ".crt;";

    $block->set_value('config', <<"CONF") unless defined $block->config;
    mesh_gateway gw.test address=unix:\$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate \$TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key \$TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate \$TEST_NGINX_CERT_DIR/ca.crt;
    $trust

    location / {
        mesh_target \$http_x_dstack_target_app
                    tls=\$http_x_dstack_target_use_tls;
    }
CONF

    $block->set_value('more_headers', "X-Dstack-Target-App: $B\n"
                                      . "X-Dstack-Target-Use-Tls: off\n")
        unless defined $block->more_headers;
});

no_shuffle();
no_root_location();
run_tests();

__DATA__

=== TEST 1: a gateway certificate from the trusted CA for the name asked: 200
--- request
GET /plain
--- response_body
gateway served bbbb000000000000000000000000000000000002-443.gw.test /plain



=== TEST 2: a gateway certificate from another CA: 502, nothing served
--- gateway_cert: gateway-other-ca
--- request
GET /plain
--- error_code: 502
--- error_log
certificate verify failed
--- no_error_log
gateway served



=== TEST 3: a gateway certificate of the trusted CA for other names: 502
--- gateway_cert: gateway-wrong-name
--- request
GET /plain
--- error_code: 502
--- error_log eval
qr/certificate (?:verify failed|does not match)|does not match "bbbb000000000000000000000000000000000002-443\.gw\.test"/
--- no_error_log
gateway served



=== TEST 4: tls=off without mesh_gateway_trusted_certificate: 400, nothing sent
--- gateway_trust: none
--- request
GET /plain
--- error_code: 400
--- response_body chomp
{"error":"tls=off needs mesh_gateway_trusted_certificate"}
--- no_error_log
gateway served



=== TEST 5: the trust for tls=off is the gateway's CA, not the mesh's: the
other CA's gateway is served when that CA is the one configured
--- gateway_cert: gateway-other-ca
--- gateway_trust: other-ca
--- request
GET /plain
--- response_body
gateway served bbbb000000000000000000000000000000000002-443.gw.test /plain
