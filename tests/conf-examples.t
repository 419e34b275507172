# The nginx examples in conf/ pass `nginx -t` with the module loaded, as a
# user would install them: inside Debian's http {} block, with the TLS files
# and log paths pointed at the test fixtures and a scratch directory.

use strict;
use warnings;

use lib 'tests/lib';

use DstackTest qw(nginx_conf read_file write_file);
use File::Temp qw(tempdir);
use Test::More;

my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
$ENV{TEST_NGINX_LOAD_MODULES}
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES is not set';
my $certs = $ENV{TEST_NGINX_CERT_DIR}
    or plan skip_all => 'TEST_NGINX_CERT_DIR is not set';

my @examples = grep { is_http_snippet($_) } glob 'conf/*.conf';
plan skip_all => 'no nginx examples in conf/' unless @examples;

my %tls = (
    'cert.pem' => "$certs/app-b.crt",
    'key.pem'  => "$certs/app-b.key",
    'ca.pem'   => "$certs/ca.crt",
);

for my $example (@examples) {
    my $dir = tempdir(CLEANUP => 1);
    my $text = read_file($example);

    $text =~ s{/etc/dstack/tls/([\w.]+)}{$tls{$1} // die "$example: $1"}ge;
    $text =~ s{/var/log/nginx/}{$dir/}g;
    # the outbound entry point speaks as this app: loopback only, and
    # none of the guest agent's key-handing methods
    if ($text =~ /^\s*mesh_target\b/m) {
        my @listen = $text =~ /^\s*listen\s+(\S+)/mg;
        ok(@listen && !grep({ !/\A(?:127\.0\.0\.1|\[::1\]|unix):/ } @listen),
           "$example listens on the loopback address only")
            or diag "listen @listen";
    }
    if ($text =~ /^\s*mesh_agent_socket\b/m) {
        my ($methods) = $text =~ /^\s*mesh_agent_methods\s+([^;]*);/m;
        ok(defined $methods && $methods !~ /\b(?:GetTlsKey|GetKey)\b/,
           "$example allows no key-handing agent method")
            or diag 'mesh_agent_methods ' . ($methods // '(unset)');
    }

    $text =~ s{\blisten\s+(?:127\.0\.0\.1:)?(\d+)}{listen 127.0.0.1:1$1}g;

    write_file("$dir/nginx.conf", nginx_conf($dir, <<"HTTP", log_level => 'error'));
    access_log $dir/access.log;
$text
HTTP

    my $out = qx{$nginx -t -p $dir -c $dir/nginx.conf 2>&1};
    is($?, 0, "$example passes nginx -t") or diag $out;
}

done_testing();


# nginx snippets have a server block; the daemon's files are name = value
sub is_http_snippet {
    my ($path) = @_;
    return read_file($path) =~ /^\s*server\s*\{/m;
}
