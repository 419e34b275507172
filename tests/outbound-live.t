# Outbound mesh behaviour that the Test::Nginx format of t/002-outbound.t
# cannot express: a 64 MiB upload streamed through the mesh (and what it
# costs in memory), client_max_body_size before anything leaves, WebSocket
# frames through the mesh, per-target DNS resolution through nginx's
# resolver, and the connect timeout against a gateway that never answers.
#
# One nginx (a single process) plays t/002-outbound.t's world:
#   - the calling CVM, app A, once per mesh_gateway setting:
#       caller   gateway at unix:gw.sock (address=)
#       resolver gw.test names resolved by the DNS responder below
#       nx       nowhere.test names, which the DNS responder refuses
#       timeout  gateway address whose accept queue is full
#   - the dstack gateway: stream + ssl_preread on gw.sock and on a TCP port,
#     routing B's name to CVM B;
#   - CVM B: mesh_auth on, in front of an echo backend, the sink and the
#     WebSocket server.
# The test forks the rest: an HTTP sink that counts body bytes, a WebSocket
# echo server and a UDP DNS responder.

use strict;
use warnings;

use lib 'tests/lib';

use DstackTest qw(free_port wait_for_port write_file read_lines start_nginx
                  stop_nginx error_log);
use Digest::SHA qw(sha1);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use MIME::Base64 qw(encode_base64);
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep time);

$ENV{TEST_NGINX_LOAD_MODULES}
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES is not set';
my $certs = $ENV{TEST_NGINX_CERT_DIR}
    or plan skip_all => 'TEST_NGINX_CERT_DIR is not set';

my $A = 'aaaa000000000000000000000000000000000001';
my $B = 'bbbb000000000000000000000000000000000002';
my $MiB = 1 << 20;
my $WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';    # RFC 6455

my $dir = tempdir(CLEANUP => 1);
my ($ngx, @children);

# a test interrupted by a signal cleans up too
$SIG{$_} = sub { exit 1 } for qw(INT TERM HUP);

END {
    local $?;    # keep the test's exit status through waitpid
    stop_nginx($ngx) if $ngx;
    kill 'TERM', @children;
    waitpid $_, 0 for @children;
}

my %port = map { $_ => free_port() } qw(caller resolver nx timeout gateway);

my $dns = IO::Socket::INET->new(Proto => 'udp', LocalAddr => '127.0.0.1',
                                LocalPort => 0) or die "dns socket: $!";
$port{dns} = $dns->sockport;
spawn(sub { serve_dns($_[0], "$dir/dns.log") }, $dns);
spawn(sub { serve_sink($_[0]) }, unix_listener("$dir/sink.sock"));
spawn(sub { serve_websocket($_[0]) }, unix_listener("$dir/ws.sock"));

my $blackhole = full_listener();
$port{blackhole} = $blackhole->{port};

$ngx = start_nginx($dir, world(), main => gateway(), log_level => 'info');
for my $name (qw(caller resolver nx timeout gateway)) {
    wait_for_port($port{$name}) or BAIL_OUT("nginx is not on $name port");
}

my $small = "$dir/4k";
write_file($small, 'x' x 4096);

subtest 'client_max_body_size refuses before anything is sent' => sub {
    for my $how (['Content-Length'], ['chunked', '-H', 'Transfer-Encoding: chunked']) {
        my ($label, @extra) = @$how;
        my $gw_before = gateway_connections();
        my $b_before = cvm_b_requests();

        my ($status) = request($port{caller}, '/small', @extra,
                               '--data-binary', "\@$small");
        is($status, 413, "$label: 4 KiB body over a 1k limit: 413");
        sleep 0.3;    # a connection made anyway could be logged after the 413
        is(gateway_connections(), $gw_before, "$label: no gateway connection");
        is(cvm_b_requests(), $b_before, "$label: CVM B saw no request");
    }
};

subtest '64 MiB upload streams through the mesh' => sub {
    my $body = "$dir/64m";
    write_upload($body, 64);

    # a first upload sets up the TLS connection and buffers, so the peak
    # measured next is what the body itself costs
    my ($status, $answer) = request($port{caller}, '/upload',
                                    '--data-binary', "\@$small");
    is("$status $answer", "200 received 4096\n", 'small upload reaches the sink');

    my $before = peak_rss_kib();
    ($status, $answer) = request($port{caller}, '/upload',
                                 '--data-binary', "\@$body");
    my $after = peak_rss_kib();
    my $growth = $after - $before;

    is($status, 200, '64 MiB upload: 200');
    is($answer, 'received ' . 64 * $MiB . "\n", 'the sink read every byte');
    diag("nginx peak RSS (VmHWM) grew by $growth KiB for a 64 MiB upload"
         . " ($before -> $after KiB)");
    cmp_ok($growth, '<', 16 * 1024, 'peak RSS grew by less than 16 MiB');
    ok(!(grep { /buffered to a temporary file/ } error_log($ngx)),
       'nothing was spooled to disk instead');
};

subtest 'WebSocket through the mesh' => sub {
    my $key = encode_base64(join('', map { chr rand 256 } 1 .. 16), '');
    my $ws = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port{caller}",
                                   Timeout => 5) or die "connect: $!";
    syswrite $ws, "GET /ws HTTP/1.1\r\nHost: localhost\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n"
        . "X-Dstack-Target-App: $B\r\n\r\n";

    my $buf = '';
    my $head = read_head($ws, \$buf) // '';
    like($head, qr{\AHTTP/1\.1 101 }, 'upgrade accepted: 101');
    like($head, qr/^Sec-WebSocket-Accept: \Q${\ ws_accept($key)}\E\r$/mi,
         'the echo server answered this handshake');

    my $text = 'hello through the mesh';
    syswrite $ws, ws_frame(1, $text, pack 'N', rand 2**32);
    is_deeply([ws_read_frame($ws, \$buf)], [1, $text], 'text frame echoed');

    syswrite $ws, ws_frame(8, pack('n', 1000), pack 'N', rand 2**32);
    is_deeply([ws_read_frame($ws, \$buf)], [8, pack('n', 1000)],
              'close frame answered');
};

subtest 'without address=, each target name goes through the resolver' => sub {
    my ($status, $answer) = request($port{resolver}, '/r',
                                    '-H', "X-Dstack-Target-App: $B");
    is($status, 200, 'resolved target: 200');
    is($answer, "b /r caller=$A host=$B-443s.gw.test\n",
       "B's backend sees caller A");
    ok((grep { $_ eq "$B-443s.gw.test\n" } read_lines("$dir/dns.log")),
       "B's name was asked of the resolver");

    ($status) = request($port{nx}, '/r');
    is($status, 502, 'NXDOMAIN: 502');
    ok((grep { $_ eq "$B-443s.nowhere.test\n" } read_lines("$dir/dns.log")),
       'the unknown name was asked of the resolver too');
    ok((grep { /mesh: \Q$B\E-443s\.nowhere\.test could not be resolved/ }
            error_log($ngx)),
       'the failure is logged');
};

subtest 'a gateway that never completes the handshake: connect timeout' => sub {
    my ($status, undef, $seconds) = request($port{timeout}, '/t');
    ok($status == 504 || $status == 502, "504 or 502 (got $status)");
    cmp_ok($seconds, '>=', 0.9, sprintf 'after proxy_connect_timeout (%.2f s)', $seconds);
    cmp_ok($seconds, '<', 3, 'and not much later');
};

done_testing();


# nginx's http {} body: the caller servers, CVM B and its echo backend.
sub world {
    return subst(<<'HTTP');
    access_log off;
    log_format cvm '$request from $mesh_app_id $status';

    # app A's identity, inherited by every caller server
    mesh_certificate @CERTS@/app-a.crt;
    mesh_certificate_key @CERTS@/app-a.key;
    mesh_trusted_certificate @CERTS@/ca.crt;

    server {
        listen 127.0.0.1:@PORT_CALLER@;
        mesh_gateway gw.test address=unix:@DIR@/gw.sock;

        location /upload {
            mesh_target @B@;
            client_max_body_size 100m;
            proxy_request_buffering off;
        }

        location /small {
            mesh_target @B@;
            client_max_body_size 1k;
        }

        location / {
            mesh_target $http_x_dstack_target_app;
        }
    }

    server {
        listen 127.0.0.1:@PORT_RESOLVER@;
        mesh_gateway gw.test:@PORT_GATEWAY@;
        resolver 127.0.0.1:@PORT_DNS@ ipv6=off valid=5s;
        resolver_timeout 3s;

        location / {
            mesh_target $http_x_dstack_target_app;
        }
    }

    server {
        listen 127.0.0.1:@PORT_NX@;
        mesh_gateway nowhere.test:@PORT_GATEWAY@;
        resolver 127.0.0.1:@PORT_DNS@ ipv6=off valid=5s;
        resolver_timeout 3s;

        location / {
            mesh_target @B@;
        }
    }

    server {
        listen 127.0.0.1:@PORT_TIMEOUT@;
        mesh_gateway gw.test address=127.0.0.1:@PORT_BLACKHOLE@;
        proxy_connect_timeout 1s;

        location / {
            mesh_target @B@;
        }
    }

    server {
        listen unix:@DIR@/cvm-b.sock ssl;
        server_name cvm-b;
        ssl_certificate @CERTS@/app-b.crt;
        ssl_certificate_key @CERTS@/app-b.key;
        ssl_client_certificate @CERTS@/ca.crt;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        access_log @DIR@/cvm-b.log cvm;

        mesh_auth on;

        location / {
            proxy_pass http://unix:@DIR@/backend.sock;
            proxy_set_header Host $http_host;
        }

        location /upload {
            client_max_body_size 100m;
            proxy_request_buffering off;
            proxy_http_version 1.1;
            proxy_pass http://unix:@DIR@/sink.sock;
        }

        location /ws {
            proxy_pass http://unix:@DIR@/ws.sock;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection upgrade;
        }
    }

    server {
        listen unix:@DIR@/backend.sock;

        location / {
            return 200 "b $request_uri caller=$http_x_dstack_app_id host=$http_host\n";
        }
    }
HTTP
}

# The gateway: TLS passthrough by SNI, reachable by unix socket (address=)
# and on a TCP port (the resolver's answers).
sub gateway {
    return subst(<<'STREAM');
stream {
    map_hash_bucket_size 128;

    map $ssl_preread_server_name $cvm {
        @B@-443s.gw.test unix:@DIR@/cvm-b.sock;
        default unix:@DIR@/nowhere.sock;
    }

    server {
        listen unix:@DIR@/gw.sock;
        listen 127.0.0.1:@PORT_GATEWAY@;
        ssl_preread on;
        proxy_pass $cvm;
    }
}
STREAM
}

# Fills @NAME@ placeholders, which keeps nginx's own $variables readable.
sub subst {
    my ($text) = @_;
    my %value = (DIR => $dir, CERTS => $certs, B => $B,
                 map { ('PORT_' . uc, $port{$_}) } keys %port);
    $text =~ s/@(\w+)@/$value{$1} \/\/ die "no value for $1"/ge;
    return $text;
}

# curl against 127.0.0.1:$port; returns (status, body, seconds taken).
sub request {
    my ($port, $path, @args) = @_;
    my $start = time;
    open my $fh, '-|', 'curl', '-sS', '--max-time', '60',
        '-w', '\n%{http_code}', @args, "http://127.0.0.1:$port$path"
        or die "curl: $!";
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    my ($body, $status) = $out =~ /\A(.*)\n(\d{3})\z/s or die "curl said: $out";
    return ($status, $body, time - $start);
}

# Stream connections the gateway accepted on gw.sock, as logged at "info".
sub gateway_connections {
    return scalar grep { /connected to unix:\Q$dir\E\/gw\.sock/ } error_log($ngx);
}

sub cvm_b_requests {
    return 0 unless -e "$dir/cvm-b.log";
    return scalar(my @lines = read_lines("$dir/cvm-b.log"));
}

# nginx's peak resident memory (VmHWM); one process holds every part.
sub peak_rss_kib {
    my ($line) = grep { /^VmHWM:/ } read_lines("/proc/$ngx->{pid}/status");
    return $line =~ /(\d+)/ ? $1 : die "no VmHWM for $ngx->{pid}";
}

sub write_upload {
    my ($path, $mib) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print $fh 'u' x $MiB for 1 .. $mib;
    close $fh or die "$path: $!";
}

sub unix_listener {
    my ($path) = @_;
    my $l = IO::Socket::UNIX->new(Local => $path, Listen => 16)
        or die "$path: $!";
    return $l;
}

# A listener nobody accepts on, backlog 0: Linux queues one connection, so
# after two unaccepted ones every further SYN is dropped and a connect()
# waits for its timeout.  The queued connections are kept in the result.
sub full_listener {
    my $l = IO::Socket::INET->new(Proto => 'tcp', LocalAddr => '127.0.0.1',
                                  LocalPort => 0) or die "listener: $!";
    $l->listen(0) or die "listen: $!";
    my $port = $l->sockport;
    my @queued = (
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 2),
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Blocking => 0),
    );
    grep { !$_ } @queued and die "cannot fill the accept queue: $!";
    return { port => $port, listener => $l, queued => \@queued };
}

# Runs $serve($socket) in a child that the END block stops; the parent
# closes its copy of the socket.  The child dies of TERM and leaves by
# _exit, so it never runs the END blocks (nor removes the scratch dir).
sub spawn {
    my ($serve, $socket) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
        eval { $serve->($socket) };
        POSIX::_exit(0);
    }
    push @children, $pid;
    close $socket;
}

# Appends what $sock sends to $$buf until $done->($$buf) holds; false on
# EOF or after $timeout seconds.
sub read_until {
    my ($sock, $buf, $done, $timeout) = @_;
    my $deadline = time + $timeout;
    my $select = IO::Select->new($sock);
    until ($done->($$buf)) {
        my $left = $deadline - time;
        return 0 if $left <= 0 || !$select->can_read($left);
        sysread($sock, $$buf, 65536, length $$buf) or return 0;
    }
    return 1;
}

# Reads an HTTP head (through the blank line) off the front of $$buf,
# leaving what followed it there; undef on EOF or timeout.
sub read_head {
    my ($sock, $buf) = @_;
    read_until($sock, $buf, sub { $_[0] =~ /\r\n\r\n/ }, 10) or return;
    $$buf =~ s/\A(.*?\r\n)\r\n//s;
    return $1;
}

# The sink: one request per connection; counts the Content-Length body
# without keeping it and answers with the count.
sub serve_sink {
    my ($listener) = @_;
    while (my $c = $listener->accept) {
        my $buf = '';
        my $head = read_head($c, \$buf) // next;
        my ($want) = $head =~ /^Content-Length:\s*(\d+)/mi;
        my $got = length $buf;    # the body's first bytes came with the head
        while ($got < ($want // 0)) {
            my $n = sysread $c, my $chunk, 1 << 16 or last;
            $got += $n;
        }
        my $answer = "received $got\n";
        syswrite $c, "HTTP/1.1 200 OK\r\nContent-Length: " . length($answer)
            . "\r\nConnection: close\r\n\r\n$answer";
    }
}

# The WebSocket echo server: RFC 6455 handshake, then every frame back
# (unmasked) until the client's close frame.
sub serve_websocket {
    my ($listener) = @_;
    while (my $c = $listener->accept) {
        my $buf = '';
        my $head = read_head($c, \$buf) // next;
        my ($key) = $head =~ /^Sec-WebSocket-Key:\s*(\S+)/mi or next;
        syswrite $c, "HTTP/1.1 101 Switching Protocols\r\n"
            . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            . 'Sec-WebSocket-Accept: ' . ws_accept($key) . "\r\n\r\n";
        while (my ($opcode, $payload) = ws_read_frame($c, \$buf)) {
            syswrite $c, ws_frame($opcode, $payload);
            last if $opcode == 8;
        }
    }
}

sub ws_accept {
    my ($key) = @_;
    return encode_base64(sha1($key . $WS_GUID), '');
}

# One frame with a payload under 126 bytes (all this test sends), masked
# when a 4-byte $mask is given, as a client must.
sub ws_frame {
    my ($opcode, $payload, $mask) = @_;
    my $len = length $payload;
    return pack('CC', 0x80 | $opcode, $len) . $payload unless defined $mask;
    return pack('CC', 0x80 | $opcode, 0x80 | $len) . $mask
        . ($payload ^ substr($mask x ($len / 4 + 1), 0, $len));
}

# Reads one short frame from $sock (leftovers in $$buf); returns
# (opcode, unmasked payload), or nothing on EOF or timeout.
sub ws_read_frame {
    my ($sock, $buf) = @_;
    read_until($sock, $buf, sub { length $_[0] >= 2 }, 10) or return;
    my ($b0, $b1) = unpack 'CC', $$buf;
    my ($masked, $len) = ($b1 & 0x80, $b1 & 0x7f);
    my $size = 2 + ($masked ? 4 : 0) + $len;
    read_until($sock, $buf, sub { length $_[0] >= $size }, 10) or return;
    my $frame = substr $$buf, 0, $size, '';
    my $payload = substr $frame, $size - $len;
    $payload ^= substr(substr($frame, 2, 4) x ($len / 4 + 1), 0, $len) if $masked;
    return ($b0 & 0x0f, $payload);
}

# The DNS responder: logs every queried name, answers A 127.0.0.1 for
# names under gw.test and NXDOMAIN for anything else.
sub serve_dns {
    my ($sock, $log) = @_;
    while (defined(my $peer = recv $sock, my $query, 512, 0)) {
        my ($name, $reply) = dns_reply($query) or next;
        open my $fh, '>>', $log or die "$log: $!";
        print $fh "$name\n";
        close $fh;
        send $sock, $reply, 0, $peer;
    }
}

# (name, reply) for a one-question query, or nothing for junk.
sub dns_reply {
    my ($query) = @_;
    my ($pos, @labels) = (12);
    while ($pos < length $query) {
        my $len = ord substr $query, $pos, 1;
        last if $len == 0;
        push @labels, substr $query, $pos + 1, $len;
        $pos += 1 + $len;
    }
    return if $pos + 5 > length $query;    # the name's root label, QTYPE, QCLASS

    my $name = lc join '.', @labels;
    my $found = $name =~ /\.gw\.test\z/;
    my $id = unpack 'n', $query;
    # QR, RD, RA, and rcode 3 (NXDOMAIN) when not found
    my $header = pack 'n6', $id, 0x8180 | ($found ? 0 : 3), 1, $found ? 1 : 0, 0, 0;
    my $question = substr $query, 12, $pos + 5 - 12;
    my $answer = $found ? pack('n n n N n C4', 0xc00c, 1, 1, 5, 4, 127, 0, 0, 1) : '';
    return ($name, $header . $question . $answer);
}
