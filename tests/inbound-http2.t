# Inbound identity for HTTP/2 clients: several streams on one TLS connection
# share the one parse of the client certificate.  curl is the client because
# nginx cannot proxy HTTP/2 upstream, which rules out the Test::Nginx pattern.

use strict;
use warnings;

use lib 'tests/lib';

use DstackTest qw(free_port wait_for_port start_nginx stop_nginx error_log);
use File::Temp qw(tempdir);
use Test::More;

$ENV{TEST_NGINX_LOAD_MODULES}
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES is not set';
my $certs = $ENV{TEST_NGINX_CERT_DIR}
    or plan skip_all => 'TEST_NGINX_CERT_DIR is not set';

my $app_a = 'aaaa000000000000000000000000000000000001';
my $dir = tempdir(CLEANUP => 1);
my $port = free_port();

my $ngx = eval { start_nginx($dir, <<"HTTP") } or BAIL_OUT($@);
    access_log off;

    server {
        listen 127.0.0.1:$port ssl http2;
        ssl_certificate $certs/app-b.crt;
        ssl_certificate_key $certs/app-b.key;
        ssl_client_certificate $certs/ca.crt;
        ssl_verify_client optional;

        mesh_auth on;

        location / {
            proxy_pass http://unix:$dir/backend.sock;
            proxy_set_header X-Protocol \$server_protocol;
            proxy_set_header X-Mesh-App-Id \$mesh_app_id;
        }
    }

    server {
        listen unix:$dir/backend.sock;

        location / {
            return 200 "\$http_x_protocol \$http_x_mesh_app_id [\$http_x_dstack_app_id]\\n";
        }
    }
HTTP
END { stop_nginx($ngx) if $ngx }

wait_for_port($port) or BAIL_OUT("nginx is not listening on $port");

my @urls = map { "https://localhost:$port/$_" } qw(one two three);

my $out = curl('--cert', "$certs/app-a.crt", '--key', "$certs/app-a.key",
               '-H', 'x-dstack-app-id: forged', @urls);
is($out, "HTTP/2.0 $app_a [$app_a]\n" x 3,
   'three HTTP/2 streams see the verified app_id, not the forged header');

my @parsed = grep { /mesh: parsed peer certificate/ } error_log($ngx);
is(scalar @parsed, 1, 'certificate parsed once for the whole connection');

$out = curl('-o', '/dev/null', '-w', '%{http_code}', $urls[0]);
is($out, '401', 'HTTP/2 client without a certificate: 401');

ok((grep { /mesh: caller not authenticated: no client certificate/ }
        error_log($ngx)),
   'refusal logged');

done_testing();


sub curl {
    my @args = @_;

    open my $fh, '-|', 'curl', '-sS', '--http2', '--cacert', "$certs/ca.crt",
        '--resolve', "localhost:$port:127.0.0.1", '--max-time', '10', @args
        or die "curl: $!";
    local $/;
    my $out = <$fh>;
    close $fh;
    return $out // '';
}
