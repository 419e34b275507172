# Inbound identity for HTTP/2 clients: several streams on one TLS connection
# share the one parse of the client certificate.  curl is the client because
# nginx cannot proxy HTTP/2 upstream, which rules out the Test::Nginx pattern.

use strict;
use warnings;

use File::Temp qw(tempdir);
use IO::Socket::INET;
use Test::More;

my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $modules = $ENV{TEST_NGINX_LOAD_MODULES}
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES is not set';
my $load_modules = join '', map { "load_module $_;\n" } split ' ', $modules;
my $certs = $ENV{TEST_NGINX_CERT_DIR}
    or plan skip_all => 'TEST_NGINX_CERT_DIR is not set';

my $app_a = 'aaaa000000000000000000000000000000000001';
my $dir = tempdir(CLEANUP => 1);
my $port = free_port();

write_file("$dir/nginx.conf", <<"CONF");
${load_modules}daemon on;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log debug;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $dir;
    proxy_temp_path $dir;
    fastcgi_temp_path $dir;
    uwsgi_temp_path $dir;
    scgi_temp_path $dir;

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
}
CONF

system($nginx, '-p', $dir, '-c', "$dir/nginx.conf") == 0
    or BAIL_OUT("nginx did not start");
wait_for_port($port);

my @urls = map { "https://localhost:$port/$_" } qw(one two three);

my $out = curl('--cert', "$certs/app-a.crt", '--key', "$certs/app-a.key",
               '-H', 'x-dstack-app-id: forged', @urls);
is($out, "HTTP/2.0 $app_a [$app_a]\n" x 3,
   'three HTTP/2 streams see the verified app_id, not the forged header');

my @parsed = grep { /mesh: parsed peer certificate/ } read_lines("$dir/error.log");
is(scalar @parsed, 1, 'certificate parsed once for the whole connection');

$out = curl('-o', '/dev/null', '-w', '%{http_code}', $urls[0]);
is($out, '401', 'HTTP/2 client without a certificate: 401');

ok((grep { /mesh: caller not authenticated: no client certificate/ }
        read_lines("$dir/error.log")),
   'refusal logged');

kill 'QUIT', read_file("$dir/nginx.pid");

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

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, ReuseAddr => 1)
        or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub wait_for_port {
    my ($p) = @_;
    for (1 .. 50) {
        return if IO::Socket::INET->new(PeerAddr => "127.0.0.1:$p");
        select undef, undef, undef, 0.1;
    }
    BAIL_OUT("nginx is not listening on $p");
}

sub write_file {
    my ($path, $text) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print $fh $text;
    close $fh;
}

sub read_file {
    my ($path) = @_;
    open my $fh, '<', $path or die "$path: $!";
    local $/;
    my $text = <$fh>;
    chomp $text;
    return $text;
}

sub read_lines {
    my ($path) = @_;
    open my $fh, '<', $path or die "$path: $!";
    return <$fh>;
}
