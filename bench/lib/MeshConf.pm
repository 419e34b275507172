package MeshConf;

# nginx configuration of the mesh comparisons (bench/cases/mesh-*): the
# inbound CVM server in its variants, and the outbound world of
# t/002-outbound.t (gateway emulated with stream + ssl_preread, target CVM).

use strict;
use warnings;

use Exporter 'import';

use Bench ();

our @EXPORT_OK = qw($APP_B inbound_server outbound_world outbound_caller);

our $APP_A = 'aaaa000000000000000000000000000000000001';
our $APP_B = 'bbbb000000000000000000000000000000000002';
our $APP_C = 'cccc000000000000000000000000000000000003';

# app B on port 443 through the gateway: the SNI both outbound variants send
our $TARGET_HOST = "$APP_B-443s.gw.test";

# inbound_server(VARIANT, PORT, AUTH_SOCKET): app B's server on 127.0.0.1:PORT
# answering a small response (empty_gif: from memory, in the content phase,
# so the access phase where mesh_auth and auth_request run is reached).
#   plain    ssl_verify_client on, no identity check
#   mesh     the same plus mesh_auth with an allowlist
#   authreq  the same as plain plus auth_request to the original design's
#            auth service (authsvc) on AUTH_SOCKET, kept alive
sub inbound_server {
    my ($variant, $port, $auth_socket) = @_;
    my $c = $Bench::CERTS;
    my %location = (
        plain => <<'CONF',
        location / {
            empty_gif;
        }
CONF
        mesh => <<"CONF",
        mesh_auth on;
        mesh_allow_apps $APP_A $APP_C;

        location / {
            empty_gif;
        }
CONF
        metrics => <<"CONF",
        mesh_auth on;
        mesh_allow_apps $APP_A $APP_C;

        location / {
            empty_gif;
        }
CONF
        authreq => <<'CONF',
        location / {
            auth_request /_auth;
            auth_request_set $caller_app $upstream_http_x_dstack_app_id;
            empty_gif;
        }

        location = /_auth {
            internal;
            proxy_pass http://authsvc;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Client-Cert $ssl_client_escaped_cert;
        }
CONF
    );
    # the same mesh_auth, counting in a shared zone
    my $zone = $variant ne 'metrics' ? '' : "    mesh_metrics_zone mesh 1m;\n";
    my $upstream = $variant ne 'authreq' ? '' : <<"CONF";
    upstream authsvc {
        server unix:$auth_socket;
        keepalive 32;
        keepalive_requests 1000000;
    }
CONF

    return <<"CONF";
$zone$upstream
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $c/app-b.crt;
        ssl_certificate_key $c/app-b.key;
        ssl_client_certificate $c/ca.crt;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;

$location{$variant}
    }
CONF
}

# outbound_world(DIR): the other side of the outbound comparison, as in
# t/002-outbound.t: the gateway (stream, ssl_preread, routing by SNI) on
# DIR/gw.sock and app B's CVM behind it on DIR/target.sock.  The target
# logs $connection_requests of every request to DIR/target-requests.log:
# a 1 is a new connection, that is a TLS handshake.
#   returns (stream block body, http block body)
sub outbound_world {
    my ($dir) = @_;
    my $c = $Bench::CERTS;

    my $stream = <<"CONF";
    map_hash_bucket_size 128;

    map \$ssl_preread_server_name \$cvm {
        $TARGET_HOST  unix:$dir/target.sock;
        default  unix:$dir/nowhere.sock;
    }

    server {
        listen unix:$dir/gw.sock;
        ssl_preread on;
        proxy_pass \$cvm;
    }
CONF

    my $http = <<"CONF";
    log_format requests '\$connection_requests';

    server {
        listen unix:$dir/target.sock ssl;
        ssl_certificate $c/app-b.crt;
        ssl_certificate_key $c/app-b.key;
        ssl_client_certificate $c/ca.crt;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        access_log $dir/target-requests.log requests;

        location / {
            return 200 "ok\\n";
        }
    }
CONF
    return ($stream, $http);
}

# outbound_caller(VARIANT, PORT, DIR): app A's entry point on 127.0.0.1:PORT,
# plain HTTP from the local app, mutual TLS through the gateway to app B.
#   mesh    mesh_target from the x-dstack-target-* headers (the original
#           client proxy), app_id pinned, the module's connection pool
#   fixed   mesh_target naming app B in the configuration, like the
#           baseline: no per-request routing work
#   direct  stock proxy_pass https:// to the same gateway and SNI, with an
#           upstream keepalive pool and no identity check; it removes the
#           target headers too, so both send the target the same request
sub outbound_caller {
    my ($variant, $port, $dir) = @_;
    my $c = $Bench::CERTS;

    my %target = (
        mesh => 'mesh_target $http_x_dstack_target_app
                        port=$http_x_dstack_target_port
                        instance=$http_x_dstack_target_instance
                        tls=$http_x_dstack_target_use_tls;',
        fixed => "mesh_target $APP_B;",
    );

    if ($target{$variant}) {
        return <<"CONF";
    server {
        listen 127.0.0.1:$port;

        mesh_gateway gw.test address=unix:$dir/gw.sock;
        mesh_certificate $c/app-a.crt;
        mesh_certificate_key $c/app-a.key;
        mesh_trusted_certificate $c/ca.crt;

        location / {
            $target{$variant}
        }
    }
CONF
    }

    return <<"CONF";
    upstream direct {
        server unix:$dir/gw.sock;
        keepalive 32;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }

    server {
        listen 127.0.0.1:$port;

        location / {
            proxy_pass https://direct;
            proxy_http_version 1.1;
            proxy_set_header Host $TARGET_HOST;
            proxy_set_header Connection "";
            proxy_set_header X-Dstack-Target-App "";
            proxy_set_header X-Dstack-Target-Port "";
            proxy_ssl_server_name on;
            proxy_ssl_name $TARGET_HOST;
            proxy_ssl_certificate $c/app-a.crt;
            proxy_ssl_certificate_key $c/app-a.key;
        }
    }
CONF
}

1;
