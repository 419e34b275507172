# Outbound pinning: what an idle connection or TLS session may be reused
# for, the TLS version of mesh links, renegotiation, the reserved upstream,
# pool limits, and the identity files nginx -t accepts.
#
# As in 002-outbound.t, nginx plays every part: the calling CVM (the
# block's --- config), the gateway (stream + ssl_preread, routing by SNI)
# and the callees, each answering with what it saw of the caller:
#
#   SNI                        callee
#   bbbb..0002-443s.gw.test    cvm-b       app B, keepalive
#   bbbb..0002-444s.gw.test    cvm-b-once  app B, one request per connection
#   bbbb..0002-1443s.gw.test   cvm-b12     app B, TLS 1.2 only
#   aaaa..0001-443s.gw.test    impostor    app A's id under another CA
#   aaaa..0001-444s.gw.test    impostor-once   the same, one request each
#   bbbb..0002-443.gw.test     gateway-tls     the gateway terminating TLS
#   bbbb..0002-1443.gw.test    gateway-tls11   the same, TLS 1.1 only
#   bbbb..0002-444.gw.test     a TLS 1.2 gateway (Perl, below) that asks
#                              for a renegotiation on each later request
#
# The gateway also listens on 127.0.0.1:$TEST_NGINX_GW_PORT, where a DNS
# responder (Perl, below) on $TEST_NGINX_DNS_PORT sends every *.gw.test.
# Callees, the renegotiating gateway and the DNS responder write lines into
# the error log, so tests can tell what reached whom.

use Test::Nginx::Socket 'no_plan';

# the sections this file's block preprocessors read
our @BlockSections = qw(http_extra);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use Net::SSLeay;
use POSIX ();

our $A = 'aaaa000000000000000000000000000000000001';
our $B = 'bbbb000000000000000000000000000000000002';
our $C = 'cccc000000000000000000000000000000000003';

$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();

# unix socket paths must stay short
my $dir = tempdir('dstack-t005.XXXXXX', TMPDIR => 1, CLEANUP => 1);
$ENV{TEST_NGINX_PEER_DIR} = $dir;
$ENV{TEST_NGINX_GW_PORT} = free_port('tcp');

my @children;
END {
    local $?;    # the children's status is not the test's
    kill 'TERM', @children;
    waitpid $_, 0 for @children;
}

spawn(\&serve_renegotiating,
      IO::Socket::UNIX->new(Local => "$dir/reneg.sock", Listen => 16)
          // die "reneg.sock: $!");

my $dns = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1',
                                LocalPort => 0) // die "dns socket: $!";
$ENV{TEST_NGINX_DNS_PORT} = $dns->sockport;
spawn(\&serve_dns, $dns);

sub callee {
    my ($name, $crt, $protocols, $extra) = @_;
    return <<"CONF";
    server {
        listen unix:\$TEST_NGINX_HTML_DIR/$name.sock ssl;
        server_name $name;
        ssl_certificate \$TEST_NGINX_CERT_DIR/$crt.crt;
        ssl_certificate_key \$TEST_NGINX_CERT_DIR/$crt.key;
        ssl_client_certificate \$TEST_NGINX_CERT_DIR/ca.crt;
        ssl_verify_client on;
        ssl_protocols $protocols;
        access_log \$TEST_NGINX_HTML_DIR/../logs/error.log callee;
        mesh_auth on;
$extra
        location / {
            return 200 "\$server_name from=\$mesh_app_id \$ssl_protocol reused=\$ssl_session_reused requests=\$connection_requests sni=[\$ssl_server_name]\\n";
        }

        location ~ /cipher\$ {
            return 200 "\$ssl_cipher\\n";
        }
    }
CONF
}

my $world = <<'CONF'
    log_format callee '$server_name received $request from $mesh_app_id';

    server {
        listen unix:$TEST_NGINX_HTML_DIR/gateway-tls.sock ssl;
        server_name gateway-tls;
        ssl_certificate $TEST_NGINX_CERT_DIR/gateway.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/gateway.key;
        ssl_protocols TLSv1.2 TLSv1.3;

        location / {
            return 200 "$server_name $ssl_protocol\n";
        }
    }

    server {
        listen unix:$TEST_NGINX_HTML_DIR/gateway-tls11.sock ssl;
        server_name gateway-tls11;
        ssl_certificate $TEST_NGINX_CERT_DIR/gateway.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/gateway.key;
        ssl_protocols TLSv1.1;
        ssl_ciphers DEFAULT:@SECLEVEL=0;

        location / {
            return 200 "$server_name $ssl_protocol\n";
        }
    }
CONF
    . callee('cvm-b', 'app-b', 'TLSv1.2 TLSv1.3', '')
    . callee('cvm-b-once', 'app-b', 'TLSv1.2 TLSv1.3',
             '        keepalive_timeout 0;')
    . callee('cvm-b12', 'app-b', 'TLSv1.2', '')
    . callee('impostor', 'other', 'TLSv1.2 TLSv1.3', '')
    . callee('impostor-once', 'other', 'TLSv1.2 TLSv1.3',
             '        keepalive_timeout 0;');

my $gateway = <<'CONF';
    stream {
        log_format gateway 'gateway routed $ssl_preread_server_name';
        map_hash_bucket_size 128;

        map $ssl_preread_server_name $callee {
            bbbb000000000000000000000000000000000002-443s.gw.test
                unix:$TEST_NGINX_HTML_DIR/cvm-b.sock;
            bbbb000000000000000000000000000000000002-444s.gw.test
                unix:$TEST_NGINX_HTML_DIR/cvm-b-once.sock;
            bbbb000000000000000000000000000000000002-1443s.gw.test
                unix:$TEST_NGINX_HTML_DIR/cvm-b12.sock;
            aaaa000000000000000000000000000000000001-443s.gw.test
                unix:$TEST_NGINX_HTML_DIR/impostor.sock;
            aaaa000000000000000000000000000000000001-444s.gw.test
                unix:$TEST_NGINX_HTML_DIR/impostor-once.sock;
            bbbb000000000000000000000000000000000002-443.gw.test
                unix:$TEST_NGINX_HTML_DIR/gateway-tls.sock;
            bbbb000000000000000000000000000000000002-1443.gw.test
                unix:$TEST_NGINX_HTML_DIR/gateway-tls11.sock;
            bbbb000000000000000000000000000000000002-444.gw.test
                unix:$TEST_NGINX_PEER_DIR/reneg.sock;
            default
                unix:$TEST_NGINX_HTML_DIR/nowhere.sock;
        }

        server {
            listen unix:$TEST_NGINX_HTML_DIR/gw.sock;
            listen 127.0.0.1:$TEST_NGINX_GW_PORT;
            ssl_preread on;
            proxy_pass $callee;
            access_log $TEST_NGINX_HTML_DIR/../logs/error.log gateway;
        }
    }
CONF

add_block_preprocessor(sub {
    my $block = shift;

    $block->set_value('main_config', $gateway) unless defined $block->main_config;
    $block->set_value('http_config', $world . ($block->http_extra // ''))
        unless defined $block->http_config;
});

# An SSI page that requests each URI in turn, so one client request can
# show a sequence in its body and in one error log check.
sub page {
    return ">>> page.html\n"
           . join('', map { qq{<!--# include virtual="$_" wait="yes" -->} } @_);
}

no_shuffle();
no_root_location();
run_tests();


# A free port, for listeners nginx opens (a short race, acceptable here).
sub free_port {
    my $s = IO::Socket::INET->new(Proto => shift, LocalAddr => '127.0.0.1',
                                  LocalPort => 0) // die "free port: $!";
    return $s->sockport;
}

# Runs $serve->($socket) in a child that the END block stops.
sub spawn {
    my ($serve, $socket) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $SIG{TERM} = 'DEFAULT';
        eval { $serve->($socket) };
        POSIX::_exit(0);
    }
    push @children, $pid;
    close $socket;
}

sub log_line {
    open my $fh, '>>', server_root() . '/logs/error.log' or return;
    print $fh "@_\n";
    close $fh;
}

# A gateway terminating TLS 1.2 that, from the second request on a
# connection, sends HelloRequest before answering and waits for the client
# to renegotiate or refuse.
sub serve_renegotiating {
    my ($listener) = @_;
    my $certs = $ENV{TEST_NGINX_CERT_DIR};

    Net::SSLeay::initialize();
    my $ctx = Net::SSLeay::CTX_new() or die "CTX_new";
    Net::SSLeay::CTX_set_max_proto_version($ctx, Net::SSLeay::TLS1_2_VERSION());
    # a full handshake, so the client verifies the certificate again
    Net::SSLeay::CTX_set_options($ctx,
        Net::SSLeay::OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION());
    Net::SSLeay::CTX_use_certificate_chain_file($ctx, "$certs/gateway.crt")
        or die "gateway.crt";
    Net::SSLeay::CTX_use_PrivateKey_file($ctx, "$certs/gateway.key",
                                         Net::SSLeay::FILETYPE_PEM())
        or die "gateway.key";

    $SIG{CHLD} = 'IGNORE';
    while (my $c = $listener->accept) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            eval { renegotiating_connection($ctx, $c) };
            POSIX::_exit(0);
        }
        close $c;
    }
}

sub renegotiating_connection {
    my ($ctx, $c) = @_;
    my $ssl = Net::SSLeay::new($ctx);
    Net::SSLeay::set_fd($ssl, fileno $c);
    Net::SSLeay::accept($ssl) == 1 or return;

    my $handshakes = 0;
    Net::SSLeay::set_info_callback($ssl, sub {
        $handshakes++ if $_[1] & Net::SSLeay::CB_HANDSHAKE_DONE();
    });

    my $buf = '';
    for (my $n = 1; ; $n++) {
        while ($buf !~ /\r\n\r\n/) {
            my $got = Net::SSLeay::read($ssl);
            return unless defined $got && length $got;
            $buf .= $got;
        }
        $buf =~ s/\A.*?\r\n\r\n//s;

        my $state = 'none';
        if ($n > 1) {
            Net::SSLeay::renegotiate($ssl);
            Net::SSLeay::do_handshake($ssl);    # sends HelloRequest
            my $before = $handshakes;
            $c->blocking(0);
            while ($handshakes == $before) {
                IO::Select->new($c)->can_read(10) or last;
                my ($got, $rv) = Net::SSLeay::read($ssl);
                next if defined $got && length $got;
                my $err = Net::SSLeay::get_error($ssl, $rv);
                next if $err == Net::SSLeay::ERROR_WANT_READ();
                my $why = Net::SSLeay::ERR_error_string(Net::SSLeay::ERR_get_error());
                $state = $why =~ /no renegotiation/ ? 'refused' : "failed ($why)";
                last;
            }
            $c->blocking(1);
            $state = 'renegotiated' if $handshakes > $before;
            log_line("renegotiating gateway: request $n: $state");
            return if $state ne 'renegotiated';
        }

        my $body = "renegotiating gateway: request $n: $state\n";
        Net::SSLeay::write($ssl, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 . "Content-Length: " . length($body)
                                 . "\r\n\r\n$body");
    }
}

# Answers every A query for *.gw.test with 127.0.0.1, logging the name.
sub serve_dns {
    my ($sock) = @_;
    while (defined(my $peer = recv $sock, my $query, 512, 0)) {
        my ($pos, @labels) = (12);
        while ($pos < length $query) {
            my $len = ord substr $query, $pos, 1;
            last if $len == 0;
            push @labels, substr $query, $pos + 1, $len;
            $pos += 1 + $len;
        }
        next if $pos + 5 > length $query;

        my $name = lc join '.', @labels;
        my $found = $name =~ /\.gw\.test\z/;
        log_line("dns query $name");

        my $header = pack 'n6', unpack('n', $query), 0x8180 | ($found ? 0 : 3),
                          1, $found ? 1 : 0, 0, 0;
        my $answer = $found ? pack('n n n N n C4', 0xc00c, 1, 1, 300, 4,
                                   127, 0, 0, 1)
                            : '';
        send $sock, $header . substr($query, 12, $pos + 5 - 12) . $answer, 0,
             $peer;
    }
}

__DATA__

=== TEST 1: pinned links are TLS 1.3, whatever proxy_ssl_protocols says
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location /default {
        mesh_target bbbb000000000000000000000000000000000002;
    }

    location /tls12 {
        mesh_target bbbb000000000000000000000000000000000002;
        proxy_ssl_protocols TLSv1.2;
    }
--- request eval
["GET /default", "GET /tls12"]
--- response_body eval
["cvm-b from=$::A TLSv1.3 reused=. requests=1 sni=[$::B-443s.gw.test]\n",
 "cvm-b from=$::A TLSv1.3 reused=. requests=1 sni=[$::B-443s.gw.test]\n"]



=== TEST 2: a callee that speaks only TLS 1.2 is refused before any request byte
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002 port=1443;
    }
--- request
GET /t
--- error_code: 502
--- error_log
alert protocol version
--- no_error_log
cvm-b12 received



=== TEST 3: tls=off: the gateway's TLS is 1.3 when it offers 1.3
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    mesh_gateway_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002 tls=off;
    }
--- request
GET /t
--- response_body
gateway-tls TLSv1.3



=== TEST 4: tls=off: a gateway below TLS 1.2 is refused, whatever proxy_ssl_protocols says
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    mesh_gateway_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002 port=1443 tls=off;
        proxy_ssl_protocols TLSv1.1 TLSv1.2;
        proxy_ssl_ciphers DEFAULT:@SECLEVEL=0;
    }
--- request
GET /t
--- error_code: 502
--- error_log
SSL_do_handshake() failed



=== TEST 5: a connection verified against a rogue CA never serves a location that trusts only the real one
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    error_page 502 /failed;

    location = /page {
        ssi on;
        default_type text/html;
        alias $TEST_NGINX_HTML_DIR/page.html;
    }

    location = /failed {
        return 200 "502\n";
    }

    location /rogue {
        mesh_trusted_certificate $TEST_NGINX_CERT_DIR/other-ca.crt;
        mesh_target aaaa000000000000000000000000000000000001;
    }

    location /real {
        mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        mesh_target aaaa000000000000000000000000000000000001;
    }
--- user_files eval
::page('/rogue', '/real')
--- request
GET /page
--- response_body eval
"impostor from=$::A TLSv1.3 reused=. requests=1 sni=[$::A-443s.gw.test]
502
"
--- grep_error_log eval
qr/impostor received GET \/\w+|expected \w+, got \w+ \([^)]+\)/
--- grep_error_log_out eval
"impostor received GET /rogue
expected $::A, got $::A (self-signed certificate in certificate chain)
"
--- error_log
certificate verify failed) while SSL handshaking to upstream



=== TEST 6: nor does a TLS session made with the rogue CA's peer
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    error_page 502 /failed;

    location = /page {
        ssi on;
        default_type text/html;
        alias $TEST_NGINX_HTML_DIR/page.html;
    }

    location = /failed {
        return 200 "502\n";
    }

    location /rogue {
        mesh_trusted_certificate $TEST_NGINX_CERT_DIR/other-ca.crt;
        mesh_target aaaa000000000000000000000000000000000001 port=444;
    }

    location /real {
        mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        mesh_target aaaa000000000000000000000000000000000001 port=444;
    }
--- user_files eval
::page('/rogue', '/rogue', '/real')
--- request
GET /page
--- response_body eval
"impostor-once from=$::A TLSv1.3 reused=. requests=1 sni=[$::A-444s.gw.test]
impostor-once from=$::A TLSv1.3 reused=r requests=1 sni=[$::A-444s.gw.test]
502
"
--- grep_error_log eval
qr/impostor-once received GET \/\w+|expected \w+, got \w+ \([^)]+\)/
--- grep_error_log_out eval
"impostor-once received GET /rogue
impostor-once received GET /rogue
expected $::A, got $::A (self-signed certificate in certificate chain)
"
--- error_log
certificate verify failed) while SSL handshaking to upstream



=== TEST 7: a location with identity C never reaches the peer as app A, over a connection or a session
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location = /page {
        ssi on;
        default_type text/html;
        alias $TEST_NGINX_HTML_DIR/page.html;
    }

    location /as-a/ {
        mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
        mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
        mesh_target bbbb000000000000000000000000000000000002 port=$arg_port;
    }

    location /as-c/ {
        mesh_certificate $TEST_NGINX_CERT_DIR/app-c.crt;
        mesh_certificate_key $TEST_NGINX_CERT_DIR/app-c.key;
        mesh_target bbbb000000000000000000000000000000000002 port=$arg_port;
    }
--- user_files eval
::page('/as-a/?port=443', '/as-c/?port=443',
       '/as-a/?port=444', '/as-c/?port=444', '/as-c/?port=444')
--- request
GET /page
--- response_body eval
"cvm-b from=$::A TLSv1.3 reused=. requests=1 sni=[$::B-443s.gw.test]
cvm-b from=$::C TLSv1.3 reused=. requests=1 sni=[$::B-443s.gw.test]
cvm-b-once from=$::A TLSv1.3 reused=. requests=1 sni=[$::B-444s.gw.test]
cvm-b-once from=$::C TLSv1.3 reused=. requests=1 sni=[$::B-444s.gw.test]
cvm-b-once from=$::C TLSv1.3 reused=r requests=1 sni=[$::B-444s.gw.test]
"



=== TEST 8: locations with different proxy_ssl_* settings do not share connections
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

    location /aes/ {
        mesh_target bbbb000000000000000000000000000000000002;
        proxy_ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    }

    location /chacha/ {
        mesh_target bbbb000000000000000000000000000000000002;
        proxy_ssl_conf_command Ciphersuites TLS_CHACHA20_POLY1305_SHA256;
    }
--- user_files eval
::page('/aes/cipher', '/chacha/cipher', '/aes/cipher')
--- request
GET /page
--- response_body
TLS_AES_128_GCM_SHA256
TLS_CHACHA20_POLY1305_SHA256
TLS_AES_128_GCM_SHA256



=== TEST 9: a gateway asking to renegotiate a reused connection is refused
The first request opens the connection, the second reuses it; the
gateway's HelloRequest is answered with a no_renegotiation alert, so the
verification callback never runs again on it.  The gateway gives up the
connection, and nginx, as for any failed cached connection, tries once more
on a new one.
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;
    mesh_gateway_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location = /page {
        ssi on;
        default_type text/html;
        alias $TEST_NGINX_HTML_DIR/page.html;
    }

    location / {
        mesh_target bbbb000000000000000000000000000000000002 port=444 tls=off;
    }
--- user_files eval
::page('/one', '/two')
--- request
GET /page
--- response_body
renegotiating gateway: request 1: none
renegotiating gateway: request 1: none
--- error_log
renegotiating gateway: request 2: refused
--- no_error_log
renegotiated



=== TEST 10: an upstream block named dstack_mesh_gateway after a mesh_target is refused
--- http_extra
    server {
        listen unix:$TEST_NGINX_HTML_DIR/caller.sock;
        mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
        mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
        mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
        mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

        location / {
            mesh_target bbbb000000000000000000000000000000000002;
        }
    }

    upstream dstack_mesh_gateway {
        server 127.0.0.1:1;
        keepalive 8;
    }
--- config
--- must_die
--- error_log
the upstream name "dstack_mesh_gateway" is reserved by mesh_target



=== TEST 11: so is one with another balancer, without any mesh_target
--- http_extra
    upstream dstack_mesh_gateway {
        least_conn;
        server 127.0.0.1:1;
    }
--- config
--- must_die
--- error_log
the upstream name "dstack_mesh_gateway" is reserved by mesh_target



=== TEST 12: mesh_keepalive_requests closes a connection after that many requests
--- http_extra
    mesh_keepalive_requests 3;
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
    }
--- request eval
[map { "GET /n$_" } 1 .. 5]
--- response_body_like eval
[map { qr/ requests=$_ / } 1, 2, 3, 1, 2]



=== TEST 13: mesh_keepalive_time: an older connection is not reused
Each response is followed by a pause far longer than the 1 ms limit.
--- http_extra
    mesh_keepalive_time 1ms;
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
    }
--- request eval
["GET /1", "GET /2", "GET /3"]
--- wait: 0.1
--- response_body_like eval
[qr/ requests=1 /, qr/ requests=1 /, qr/ requests=1 /]



=== TEST 14: TLS sessions have their own size: resumed without idle connections
--- http_extra
    mesh_keepalive 0;
    mesh_ssl_session_cache_size 4;
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
    }
--- request eval
["GET /1", "GET /2"]
--- response_body eval
["cvm-b from=$::A TLSv1.3 reused=. requests=1 sni=[$::B-443s.gw.test]\n",
 "cvm-b from=$::A TLSv1.3 reused=r requests=1 sni=[$::B-443s.gw.test]\n"]



=== TEST 15: mesh_ssl_session_cache_size 0: no session is kept
--- http_extra
    mesh_ssl_session_cache_size 0;
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb000000000000000000000000000000000002 port=444;
    }
--- request eval
["GET /1", "GET /2"]
--- response_body eval
["cvm-b-once from=$::A TLSv1.3 reused=. requests=1 sni=[$::B-444s.gw.test]\n",
 "cvm-b-once from=$::A TLSv1.3 reused=. requests=1 sni=[$::B-444s.gw.test]\n"]



=== TEST 16: without address=, the resolver is asked only when no idle connection exists
--- config
    mesh_gateway gw.test:$TEST_NGINX_GW_PORT;
    resolver 127.0.0.1:$TEST_NGINX_DNS_PORT ipv6=off;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location = /page {
        ssi on;
        default_type text/html;
        alias $TEST_NGINX_HTML_DIR/page.html;
    }

    location / {
        mesh_target bbbb000000000000000000000000000000000002;
    }
--- user_files eval
::page('/1', '/2', '/3')
--- request
GET /page
--- response_body eval
"cvm-b from=$::A TLSv1.3 reused=. requests=1 sni=[$::B-443s.gw.test]
cvm-b from=$::A TLSv1.3 reused=. requests=2 sni=[$::B-443s.gw.test]
cvm-b from=$::A TLSv1.3 reused=. requests=3 sni=[$::B-443s.gw.test]
"
--- grep_error_log eval
qr/resolve: "[^"]+"(?! A)|dns query \S+/
--- grep_error_log_out eval
"resolve: \"$::B-443s.gw.test\"
dns query $::B-443s.gw.test
"



=== TEST 17: a damaged certificate inside the mesh_certificate chain fails nginx -t
--- config
    mesh_certificate $TEST_NGINX_CERT_DIR/corrupt-chain.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;

    location / {
        return 204;
    }
--- must_die
--- error_log
cannot load mesh certificate



=== TEST 18: an expired mesh_certificate fails nginx -t
--- config
    mesh_certificate $TEST_NGINX_CERT_DIR/expired.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/expired.key;

    location / {
        return 204;
    }
--- must_die
--- error_log eval
qr/mesh certificate "\S+expired.crt" has expired/



=== TEST 19: one that expires within a week is loaded with a warning
--- config
    mesh_certificate $TEST_NGINX_CERT_DIR/expiring.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/expiring.key;

    location / {
        return 204;
    }
--- request
GET /t
--- error_code: 204
--- error_log eval
qr/\[warn\] .*mesh certificate "\S+expiring.crt" expires in 2 days 23 hours/



=== TEST 20: fixed/[v6]:port sends no SNI (the Host header keeps the brackets)
--- http_extra
    server {
        listen [::1]:$TEST_NGINX_SERVER_PORT ssl;
        server_name cvm-b-v6;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        mesh_auth on;

        location / {
            return 200 "$server_name from=$mesh_app_id sni=[$ssl_server_name] host=$http_host\n";
        }
    }
--- config
    mesh_gateway fixed/[::1]:$TEST_NGINX_SERVER_PORT;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target $http_x_dstack_target_app;
    }
--- request
GET /t
--- more_headers eval
"X-Dstack-Target-App: $::B"
--- response_body eval
"cvm-b-v6 from=$::A sni=[] host=[::1]\n"



=== TEST 21: fixed/[v6]:port still pins the app id
--- http_extra
    server {
        listen [::1]:$TEST_NGINX_SERVER_PORT ssl;
        server_name cvm-b-v6;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/ca.crt;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        mesh_auth on;

        location / {
            return 204;
        }
    }
--- config
    mesh_gateway fixed/[::1]:$TEST_NGINX_SERVER_PORT;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target cccc000000000000000000000000000000000003;
    }
--- request
GET /t
--- error_code: 502
--- error_log eval
[qr/mesh: peer "\[::1\]" refused: expected $::C, got $::B \(another app\)/,
 'certificate verify failed) while SSL handshaking to upstream']



=== TEST 22: mesh_target refuses an odd number of hex digits in a request
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target $http_x_dstack_target_app;
    }
--- request
GET /t
--- more_headers
X-Dstack-Target-App: bbbb00000000000000000000000000000000002
--- error_code: 400
--- response_body chomp
{"error":"target app must be an even number of 2 to 56 hex digits"}
--- no_error_log
gateway routed



=== TEST 23: a literal odd-length mesh_target fails nginx -t
--- config
    mesh_gateway gw.test address=unix:$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target bbbb00000000000000000000000000000000002;
    }
--- must_die
--- error_log
invalid mesh_target: target app must be an even number of 2 to 56 hex digits
