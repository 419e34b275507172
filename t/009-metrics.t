# Metrics: mesh_metrics_zone and mesh_metrics.
#
# nginx plays every part, as in 002-outbound.t (see the preprocessor):
#   - the caller, app A: the --- config below (unless a block gives its
#     own), on the test port.  /as/NAME/ calls the CVM with NAME's
#     certificate, /none/ with none, /unknown/N/ with the N-th of 50
#     certificates of apps nobody allows; /call/* are mesh_target
#     locations; /metrics is the page;
#   - the gateway (stream + ssl_preread on gw.sock), routing by SNI:
#       bbbb..0002-443s.gw.test   -> cvm       (app B, keepalive)
#       bbbb..0002-444s.gw.test   -> cvm-once  (app B, one request each)
#       cccc..0003-443s.gw.test   -> cvm       (app B where C is pinned)
#       eeee..0005-443s.gw.test   -> a peer that never answers
#       anything else             -> 127.0.0.1:1 (refused)
#   - the CVMs: "ssl_verify_client optional_no_ca", mesh_auth on, only app
#     A allowed, in front of a backend; beside cvm, on cvm-alt.sock, the
#     default server "decoy", whose other CA verifies the certificate that
#     /misdirected/ then sends to cvm (no SNI, Host cvm).
# Every block has a fresh nginx, so its counters start at 0.  The page is
# checked by prometheus_text() below, a strict parser of the text format,
# which answers with the number of series of each family and every sample
# that is not 0.
#
# Before the blocks, with an nginx of its own (the runner restarts nginx
# between blocks, so a block cannot reload one): counters survive
# "nginx -s reload", a resized zone starts again from 0, and nginx -t
# refuses a zone too small for the configuration's apps.

use Test::Nginx::Socket 'no_plan';

# the sections this file's block preprocessors read
our @BlockSections = qw(zone);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX ();
use Time::HiRes qw(sleep);

our $A = 'aaaa000000000000000000000000000000000001';
our $B = 'bbbb000000000000000000000000000000000002';
our $C = 'cccc000000000000000000000000000000000003';
our $D = 'dddd000000000000000000000000000000000004';
our $E = 'eeee000000000000000000000000000000000005';
our $F = 'ffff000000000000000000000000000000000006';

$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();

my $dir = tempdir('dstack-t009.XXXXXX', TMPDIR => 1, CLEANUP => 1);
$ENV{TEST_NGINX_UNKNOWN_DIR} = $dir;

unknown_callers($dir, 50);
reload_checks("$dir/reload");

# a peer that accepts connections and never answers
my @children;
END {
    local $?;    # the children's status is not the test's
    kill 'TERM', @children;
    waitpid $_, 0 for @children;
}

my $silent = IO::Socket::UNIX->new(Local => "$dir/silent.sock", Listen => 16)
    // die "silent.sock: $!";
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    $SIG{TERM} = 'DEFAULT';
    my @held;
    while (my $c = $silent->accept) {
        push @held, $c;
    }
    POSIX::_exit(0);
}
push @children, $pid;
close $silent;

abort_checks("$dir/abort", "$dir/silent.sock");

sub callee {
    my ($name, $extra) = @_;
    return <<"CONF";
    server {
        listen unix:\$TEST_NGINX_HTML_DIR/$name.sock ssl;
        server_name $name;
        ssl_certificate \$TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key \$TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate \$TEST_NGINX_CERT_DIR/ca.crt;
        ssl_verify_client optional_no_ca;
        ssl_protocols TLSv1.2 TLSv1.3;
$extra
        mesh_auth on;
        mesh_allow_apps $A;

        location / {
            proxy_pass http://unix:\$TEST_NGINX_HTML_DIR/backend.sock;
        }

        # checked again in \@backend, after the internal redirect
        location ~ /twice/ {
            try_files /nonexistent \@backend;
        }

        location \@backend {
            proxy_pass http://unix:\$TEST_NGINX_HTML_DIR/backend.sock;
        }
    }
CONF
}

my $world = callee('cvm', '        listen unix:$TEST_NGINX_HTML_DIR/cvm-alt.sock ssl;')
    . callee('cvm-once', '        keepalive_timeout 0;')
    . <<'CONF';
    # without SNI, the default server verifies with another CA what the cvm
    # server then gets (nginx itself answers 421 when SNI names it)
    server {
        listen unix:$TEST_NGINX_HTML_DIR/cvm-alt.sock ssl default_server;
        server_name decoy;
        ssl_certificate $TEST_NGINX_CERT_DIR/app-b.crt;
        ssl_certificate_key $TEST_NGINX_CERT_DIR/app-b.key;
        ssl_client_certificate $TEST_NGINX_CERT_DIR/other-ca.crt;
        ssl_verify_client on;
    }

    server {
        listen unix:$TEST_NGINX_HTML_DIR/backend.sock;

        location / {
            return 200 "backend saw $http_x_dstack_app_id\n";
        }
    }
CONF

my $gateway = <<"CONF";
    stream {
        map_hash_bucket_size 128;

        map \$ssl_preread_server_name \$callee {
            $B-443s.gw.test  unix:\$TEST_NGINX_HTML_DIR/cvm.sock;
            $B-444s.gw.test  unix:\$TEST_NGINX_HTML_DIR/cvm-once.sock;
            $C-443s.gw.test  unix:\$TEST_NGINX_HTML_DIR/cvm.sock;
            $E-443s.gw.test  unix:\$TEST_NGINX_UNKNOWN_DIR/silent.sock;
            default          127.0.0.1:1;
        }

        server {
            listen unix:\$TEST_NGINX_HTML_DIR/gw.sock;
            ssl_preread on;
            proxy_pass \$callee;
        }
    }
CONF

my $caller = <<"CONF";
    mesh_gateway gw.test address=unix:\$TEST_NGINX_HTML_DIR/gw.sock;
    mesh_certificate \$TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key \$TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate \$TEST_NGINX_CERT_DIR/ca.crt;

    location = /metrics {
        mesh_metrics;
    }

    # one request, several calls in turn (the error log is checked once)
    location = /page {
        ssi on;
        default_type text/html;
        alias \$TEST_NGINX_HTML_DIR/page.html;
    }

    error_page 502 504 /failed;

    location = /failed {
        return 200 "failed\n";
    }

    location ~ ^/as/(app-a|app-c|other|noext)/ {
        proxy_pass https://unix:\$TEST_NGINX_HTML_DIR/cvm.sock;
        proxy_ssl_certificate \$TEST_NGINX_CERT_DIR/\$1.crt;
        proxy_ssl_certificate_key \$TEST_NGINX_CERT_DIR/\$1.key;
        proxy_ssl_session_reuse off;
    }

    location ~ ^/unknown/(\\d+)/ {
        proxy_pass https://unix:\$TEST_NGINX_HTML_DIR/cvm.sock;
        proxy_ssl_certificate \$TEST_NGINX_UNKNOWN_DIR/u\$1.crt;
        proxy_ssl_certificate_key \$TEST_NGINX_UNKNOWN_DIR/u.key;
        proxy_ssl_session_reuse off;
    }

    location /misdirected/ {
        proxy_pass https://unix:\$TEST_NGINX_HTML_DIR/cvm-alt.sock;
        proxy_set_header Host cvm;
        proxy_ssl_certificate \$TEST_NGINX_CERT_DIR/other.crt;
        proxy_ssl_certificate_key \$TEST_NGINX_CERT_DIR/other.key;
        proxy_ssl_session_reuse off;
    }

    location /none/ {
        proxy_pass https://unix:\$TEST_NGINX_HTML_DIR/cvm.sock;
    }

    location /call/b {
        mesh_target $B;
    }

    location /call/once {
        mesh_target $B port=444;
    }

    location /call/c {
        mesh_target $C;
    }

    location /call/d {
        mesh_target $D;
    }

    location /call/e {
        mesh_target $E;
        proxy_connect_timeout 1s;
    }

    location /call/dyn {
        mesh_target \$http_x_target;
    }

    # a client that goes away long before this handshake could time out
    location /call/abort {
        mesh_target $E;
        proxy_connect_timeout 30s;
    }
CONF

add_block_preprocessor(sub {
    my $block = shift;

    my $zone = $block->zone // 'mesh 64k';
    $zone = $zone eq 'none' ? '' : "    mesh_metrics_zone $zone;\n";

    $block->set_value('main_config', $gateway) unless defined $block->main_config;
    $block->set_value('http_config', $zone . $world . ($block->http_config // ''));
    $block->set_value('config', $caller) unless defined $block->config;
});

no_shuffle();
no_root_location();
run_tests();


# The page as the number of series of each family and the samples that are
# not 0, sorted; or why it is not Prometheus text (format 0.0.4).  Any other
# body is left as it is.
sub prometheus_text {
    my ($before, $body) = $_[0] =~ /\A(.*?)(# (?:HELP|TYPE) .*)\z/s
        or return $_[0];

    my $name = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
    my $value = qr/[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|Inf|NaN)/;
    my (%help, %type, %series, %count, %closed, @samples);
    my $family = '';

    return "no newline at the end\n" unless $body =~ /\n\z/;

    for my $line (split /\n/, $body) {
        if ($line =~ /\A# HELP ($name) (.*)\z/) {
            return "second HELP for $1\n" if $help{$1}++;
            return "HELP for $1 after its samples\n" if $count{$1};
        } elsif ($line =~ /\A# TYPE ($name) (counter|gauge|histogram|summary|untyped)\z/) {
            return "second TYPE for $1\n" if $type{$1}++;
            return "TYPE for $1 after its samples\n" if $count{$1};
        } elsif ($line =~ /\A($name)(?:\{(.*)\})? ($value)\z/) {
            my ($n, $labels, $v) = ($1, $2 // '', $3);
            return "sample of $n without HELP and TYPE\n"
                unless $help{$n} && $type{$n};
            if ($n ne $family) {
                return "samples of $n apart\n" if $closed{$n};
                $closed{$family} = 1;
                $family = $n;
            }
            my @pairs;
            while ($labels =~ /\G([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|\z)/gc) {
                push @pairs, "$1=\"$2\"";
                last if $3 eq '';
            }
            return "bad labels in: $line\n"
                if length $labels && (pos($labels) // 0) != length $labels;
            my $key = $n . '{' . join(',', sort @pairs) . '}';
            return "duplicate series $key\n" if $series{$key}++;
            $count{$n}++;
            push @samples, "$line\n" if $v != 0;
        } else {
            return "not a line of the format: $line\n";
        }
    }

    return $before
           . join('', map { "$_: $count{$_} series\n" } sort keys %count)
           . join('', sort @samples);
}

# What prometheus_text() makes of a page with these samples not 0, after
# BEFORE: the series of the families are those of the default
# configuration (apps other and A inbound; other, B, C, D, E outbound).
sub page_is { page_after('', @_) }

sub page_after {
    my $before = shift;
    my %series = (
        dstack_mesh_idle_cache_lookups_total => 2,
        dstack_mesh_inbound_app_requests_total => 2 * 2,
        dstack_mesh_inbound_requests_total => 7,
        dstack_mesh_outbound_requests_total => 5 * 5,
        dstack_mesh_upstream_tls_handshakes_total => 2,
    );
    my $text = $before
               . join('', map { "$_: $series{$_} series\n" } sort keys %series)
               . join('', map { "$_\n" } sort @_);
    return qr/\A\Q$text\E\z/;
}

# N certificates signed by the test CA for apps nobody allows (fffe..0001
# and on), all with one key: DIR/u.key, DIR/u1.crt ... DIR/uN.crt.
sub unknown_callers {
    my ($dir, $n) = @_;
    my $ca = "$ENV{TEST_NGINX_CERT_DIR}/ca";
    quiet('openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt',
          'ec_paramgen_curve:P-256', '-out', "$dir/u.key") == 0
        or die "openssl genpkey failed\n";
    quiet('openssl', 'req', '-new', '-key', "$dir/u.key", '-subj', '/CN=u',
          '-out', "$dir/u.csr") == 0 or die "openssl req failed\n";
    for my $i (1 .. $n) {
        my $id = sprintf 'fffe%036x', $i;
        my $der = join ':', '04:14', map { sprintf '%02X', $_ }
                                     unpack 'C*', pack 'H*', $id;
        open my $ext, '>', "$dir/u$i.ext" or die "$dir/u$i.ext: $!\n";
        print $ext "basicConstraints = critical, CA:FALSE\n",
                   "extendedKeyUsage = clientAuth\n",
                   "1.3.6.1.4.1.62397.1.3 = DER:$der\n";
        close $ext;
        quiet('openssl', 'x509', '-req', '-in', "$dir/u.csr", '-days', '2',
              '-CA', "$ca/ca.crt", '-CAkey', "$ca/ca.key", '-set_serial', $i,
              '-extfile', "$dir/u$i.ext", '-out', "$dir/u$i.crt") == 0
            or die "openssl x509 failed\n";
    }
}

# system() with its output and errors discarded (the error log has nginx's)
sub quiet {
    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        exec(@_) or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return $?;
}

# An SSI page that requests each URI in turn, as in 008-pinning.t.
sub page {
    return ">>> page.html\n"
           . join('', map { qq{<!--# include virtual="$_" wait="yes" -->} } @_);
}

# GET PATH from 127.0.0.1:PORT: the body, or undef.
sub http_get {
    my ($port, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 5)
        or return undef;
    print $s "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";
    local $/;
    my $answer = <$s> // '';
    return $answer =~ /\r\n\r\n(.*)\z/s ? $1 : undef;
}

# An nginx of our own, with a master process (which "nginx -s reload" can
# reload), in PREFIX: (port, write_conf->(HTTP), run->(ARGS)), where HTTP
# is what its http block holds besides the temporary paths.
sub own_nginx {
    my ($prefix) = @_;
    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
    my $modules = join '', map { "load_module $_;\n" }
                           split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
    my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                         LocalPort => 0, Proto => 'tcp')
        // die "free port: $!\n";
    my $port = $listener->sockport;
    close $listener;

    mkdir $_ for $prefix, "$prefix/conf", "$prefix/logs";
    my $user = $> == 0 ? "user root;\n" : '';

    my $write_conf = sub {
        my ($http) = @_;
        open my $fh, '>', "$prefix/conf/nginx.conf" or die "nginx.conf: $!\n";
        print $fh <<"CONF";
${modules}${user}daemon on;
master_process on;
worker_processes 1;
pid $prefix/logs/nginx.pid;
error_log $prefix/logs/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $prefix/client_body_temp;
    proxy_temp_path $prefix/proxy_temp;
    fastcgi_temp_path $prefix/fastcgi_temp;
    uwsgi_temp_path $prefix/uwsgi_temp;
    scgi_temp_path $prefix/scgi_temp;
$http
}
CONF
        close $fh;
    };

    my $run = sub {
        quiet($bin, '-p', "$prefix/", '-c', "$prefix/conf/nginx.conf", @_);
    };

    return ($port, $write_conf, $run);
}

# how many workers the master of PREFIX has
sub workers {
    my ($prefix) = @_;
    open my $fh, '<', "$prefix/logs/nginx.pid" or return 0;
    my $master = <$fh> // 0;
    chomp $master;
    my $n = 0;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $st, '<', $stat or next;
        my $line = <$st> // next;
        $n++ if $line =~ /\) \S+ (\d+) / && $1 == $master;
    }
    return $n;
}

sub stop_own_nginx {
    my ($prefix, $run) = @_;
    $run->('-s', 'stop');
    for (1 .. 100) {
        last unless -e "$prefix/logs/nginx.pid";
        sleep 0.1;
    }
}

# Counters across reloads: plain-HTTP requests to a mesh_auth location
# count as no_tls.
sub reload_checks {
    my ($prefix) = @_;
    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
    my ($port, $write_http, $nginx) = own_nginx($prefix);

    my $write_conf = sub {
        my ($zone, $extra, $version) = @_;
        $version //= 0;
        $write_http->(<<"CONF");
    mesh_metrics_zone metrics $zone;
    server {
        listen 127.0.0.1:$port;
        ssl_verify_client optional_no_ca;
        ssl_client_certificate $ENV{TEST_NGINX_CERT_DIR}/ca.crt;
        location / {
            mesh_auth on;
$extra
        }
        location = /metrics {
            mesh_metrics;
        }
        location = /version {
            return 200 "$version";
        }
    }
CONF
    };

    my $count = sub {
        my $page = http_get($port, '/metrics') // '';
        return $page =~ /^dstack_mesh_inbound_requests_total\{outcome="no_tls"\} (\d+)$/m
               ? $1 : "no page";
    };

    # a new configuration is in place once its own app shows on the page
    # and the old worker is gone (until it has closed its listening socket,
    # it may take the next connection)
    my $reloaded = sub {
        my ($app) = @_;
        $nginx->('-s', 'reload') == 0 or return 0;
        for (1 .. 100) {
            return 1 if (http_get($port, '/metrics') // '') =~ /app="$app"/
                        && workers($prefix) == 1;
            sleep 0.1;
        }
        return 0;
    };

    $write_conf->('32k', "            mesh_allow_apps $A;");
    is($nginx->(), 0, 'reload: nginx starts');
    http_get($port, '/') for 1 .. 3;
    is($count->(), 3, 'reload: three requests counted');

    $write_conf->('32k', "            mesh_allow_apps $A $B;");
    ok($reloaded->($B), 'reload: nginx -s reload, the same zone');
    is($count->(), 3, 'reload: the counters survive the reload');
    http_get($port, '/');
    is($count->(), 4, 'reload: and go on');

    $write_conf->('64k', "            mesh_allow_apps $A $C;");
    ok($reloaded->($C), 'reload: nginx -s reload, the zone resized');
    is($count->(), 0, 'reload: a resized zone is a new one');

    # 200 apps of 64 bytes (128 hex digits) take more than 32k
    my @many = map { sprintf '%0128x', $_ } 1 .. 200;
    $write_conf->('32k', "            mesh_allow_apps @many;");
    my $out = `$bin -t -p $prefix/ -c $prefix/conf/nginx.conf 2>&1`;
    isnt($?, 0, 'nginx -t: a zone too small for the apps is refused');
    like($out, qr/mesh_metrics_zone "metrics" is too small for the 200 apps of mesh_allow_apps and mesh_target: \d+k at least/,
         'nginx -t: says which zone, how many apps, what size');

    # a reload that brings more new apps than the zone has room for: the
    # configuration (its allowlist) applies all the same, and the apps left
    # without a record of their own are counted as "other"
    # 30 apps of 128 hex digits fit a 32k zone (nginx -t); a few sets of
    # them, one after another, fill it
    my @sets = map { my $k = $_; [map { sprintf '%0128x', $k * 1000 + $_ } 1 .. 30] } 1 .. 8;
    $write_conf->('32k', "            mesh_allow_apps @{ $sets[0] };", 1);
    ok($reloaded->($sets[0][0]), 'reload: 30 apps in a new 32k zone');
    my ($version, $log, $full_at) = ('', '', 0);
    for my $v (2 .. 8) {
        $write_conf->('32k', "            mesh_allow_apps @{ $sets[$v - 1] };", $v);
        $nginx->('-s', 'reload');
        for (1 .. 50) {
            $version = http_get($port, '/version') // '';
            last if $version eq $v;
            sleep 0.1;
        }
        open my $fh, '<', "$prefix/logs/error.log" or die "error.log: $!\n";
        $log = do { local $/; <$fh> };
        if ($log =~ /is full/) {
            $full_at = $v;
            last;
        }
    }
    like($log, qr/mesh_metrics_zone "metrics" is full: apps new to this configuration are counted as "other"/,
         'reload: more new apps than the zone holds: one warning says so');
    is($version, $full_at, 'reload: the configuration that filled the zone applies all the same, its allowlist too');
    my $page = http_get($port, '/metrics') // '';
    my $shown = () = $page =~ /^dstack_mesh_inbound_app_requests_total\{app="[0-9a-f]{128}",outcome="allowed"\}/mg;
    ok($shown < 30, "reload: $shown of its 30 apps have a record; the others are counted as \"other\"");

    stop_own_nginx($prefix, $nginx);
}

# A client that goes away while the target's handshake is under way (the
# gateway accepts and never answers): no outcome of the target counted.
sub abort_checks {
    my ($prefix, $gateway) = @_;
    my ($port, $write_http, $nginx) = own_nginx($prefix);
    my $certs = $ENV{TEST_NGINX_CERT_DIR};

    $write_http->(<<"CONF");
    mesh_metrics_zone metrics 64k;
    server {
        listen 127.0.0.1:$port;
        mesh_gateway gw.test address=unix:$gateway;
        mesh_certificate $certs/app-a.crt;
        mesh_certificate_key $certs/app-a.key;
        mesh_trusted_certificate $certs/ca.crt;
        location = /metrics {
            mesh_metrics;
        }
        location /call/ {
            mesh_target $E;
            proxy_connect_timeout 30s;
        }
    }
CONF
    is($nginx->(), 0, 'abort: nginx starts');
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") or die "connect: $!\n";
    print $s "GET /call/x HTTP/1.0\r\nHost: localhost\r\n\r\n";
    sleep 0.5;
    close $s;
    my $page = '';
    for (1 .. 50) {
        sleep 0.1;
        $page = http_get($port, '/metrics') // '';
        open my $fh, '<', "$prefix/logs/error.log" or die "error.log: $!\n";
        last if do { local $/; <$fh> } =~ /client prematurely closed|499/;
    }
    unlike($page, qr/^dstack_mesh_outbound_requests_total\{app="$E",outcome="\w+"\} [1-9]/m,
           'abort: a client gone during the handshake counts no outcome for the target');
    stop_own_nginx($prefix, $nginx);
}

__DATA__

=== TEST 1: inbound: every outcome of mesh_auth (421 too), and the caller apps
--- request eval
["GET /as/app-a/x", "GET /as/app-c/x", "GET /none/x", "GET /as/other/x",
 "GET /as/noext/x", "GET /misdirected/x", "GET /metrics"]
--- error_code eval
[200, 403, 401, 401, 401, 421, 200]
--- response_headers eval
["", "", "", "", "", "", "Content-Type: text/plain; version=0.0.4; charset=utf-8"]
--- response_body_filters eval
\&::prometheus_text
--- response_body_like eval
[qr/\Abackend saw $::A\n\z/, qr/403 Forbidden/, qr/401 Authorization/,
 qr/401 Authorization/, qr/401 Authorization/, qr/421 Misdirected/,
 ::page_is(qq{dstack_mesh_inbound_requests_total{outcome="allowed"} 1},
           qq{dstack_mesh_inbound_requests_total{outcome="misdirected"} 1},
           qq{dstack_mesh_inbound_requests_total{outcome="not_allowed"} 1},
           qq{dstack_mesh_inbound_requests_total{outcome="no_certificate"} 1},
           qq{dstack_mesh_inbound_requests_total{outcome="unverified"} 1},
           qq{dstack_mesh_inbound_requests_total{outcome="no_app_id"} 1},
           qq{dstack_mesh_inbound_app_requests_total{app="$::A",outcome="allowed"} 1},
           qq{dstack_mesh_inbound_app_requests_total{app="other",outcome="not_allowed"} 1})]



=== TEST 2: outbound: every outcome by target app, full and resumed handshakes, the idle cache
--- user_files eval
::page('/call/b', '/call/b', '/call/once', '/call/once', '/call/c', '/call/d',
       '/call/e', '/call/dyn', '/metrics')
--- more_headers
X-Target: ffff000000000000000000000000000000000006
--- request
GET /page
--- response_body_filters eval
\&::prometheus_text
--- response_body_like eval
::page_after("backend saw $::A\n" x 4 . "failed\n" x 4,
    qq{dstack_mesh_outbound_requests_total{app="$::B",outcome="ok"} 4},
    qq{dstack_mesh_outbound_requests_total{app="$::C",outcome="pin_refused"} 1},
    qq{dstack_mesh_outbound_requests_total{app="$::D",outcome="connect_failure"} 1},
    qq{dstack_mesh_outbound_requests_total{app="$::E",outcome="timeout"} 1},
    qq{dstack_mesh_outbound_requests_total{app="other",outcome="connect_failure"} 1},
    qq{dstack_mesh_upstream_tls_handshakes_total{type="full"} 2},
    qq{dstack_mesh_upstream_tls_handshakes_total{type="resumed"} 1},
    qq{dstack_mesh_idle_cache_lookups_total{result="hit"} 1},
    qq{dstack_mesh_idle_cache_lookups_total{result="miss"} 7},
    # the callees count A's four calls
    qq{dstack_mesh_inbound_requests_total{outcome="allowed"} 4},
    qq{dstack_mesh_inbound_app_requests_total{app="$::A",outcome="allowed"} 4})
--- error_log
certificate verify failed) while SSL handshaking to upstream



=== TEST 3: 50 callers of apps nobody allows are one series, app="other"
--- request eval
[(map { "GET /unknown/$_/x" } 1 .. 50), "GET /metrics"]
--- error_code eval
[(403) x 50, 200]
--- response_body_filters eval
\&::prometheus_text
--- response_body_like eval
[(qr/403 Forbidden/) x 50,
 ::page_is(qq{dstack_mesh_inbound_requests_total{outcome="not_allowed"} 50},
           qq{dstack_mesh_inbound_app_requests_total{app="other",outcome="not_allowed"} 50})]



=== TEST 4: the page answers GET and HEAD only
--- request eval
["POST /metrics", "HEAD /metrics"]
--- error_code eval
[405, 200]



=== TEST 5: mesh_metrics without a zone is refused
--- zone: none
--- must_die
--- error_log
"mesh_metrics" needs "mesh_metrics_zone" at http level, in



=== TEST 6: a zone below 8 pages is refused
--- zone: mesh 16k
--- must_die
--- error_log
zone "mesh" is too small: 32k at least



=== TEST 7: two zones are refused
--- zone: mesh 64k
--- http_config
    mesh_metrics_zone other 64k;
--- must_die
--- error_log
"mesh_metrics_zone" directive is duplicate



=== TEST 8: a request checked again after an internal redirect is counted once
--- request eval
["GET /as/app-a/twice/x", "GET /metrics"]
--- error_code eval
[200, 200]
--- response_body_filters eval
\&::prometheus_text
--- response_body_like eval
[qr/\Abackend saw $::A\n\z/,
 ::page_is(qq{dstack_mesh_inbound_requests_total{outcome="allowed"} 1},
           qq{dstack_mesh_inbound_app_requests_total{app="$::A",outcome="allowed"} 1})]
