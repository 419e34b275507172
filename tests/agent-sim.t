#!/usr/bin/perl
#
# dstack-agent-sim, the real binary: the /Info and /GetTlsKey answers, the
# certificates it issues (checked with the openssl CLI), one CA shared by
# simulators started together, the answers to bad requests, the socket's
# life cycle.  Run from the repository root: prove tests/agent-sim.t

use strict;
use warnings;

use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use JSON::PP qw(decode_json);
use POSIX qw(WNOHANG strftime);
use Test::More;
use Time::HiRes qw(sleep);

my $BIN = ($ENV{DSTACK_BIN} // 'build/bin') . '/dstack-agent-sim';
BAIL_OUT("$BIN is missing: run make first") unless -x $BIN;

for my $tool (qw(curl openssl)) {
    BAIL_OUT("$tool is missing") if system("command -v $tool >/dev/null");
}

my $DIR = tempdir(CLEANUP => 1);
my $APP_A = 'aaaa000000000000000000000000000000000001';
my $APP_B = 'bbbb000000000000000000000000000000000002';
my %running;

END {
    local $?;
    kill TERM => keys %running;
    waitpid($_, 0) for keys %running;
}


# --- helpers -------------------------------------------------------------

sub start_sim {
    my (%o) = @_;
    my $sock = $o{sock} // "$DIR/$o{name}.sock";
    my $log = "$DIR/$o{name}.log";

    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open(STDERR, '>>', $log) or die "$log: $!";
        exec($BIN, '--socket', $sock, '--ca-dir', $o{ca}, '--app-id',
             $o{app_id}, @{ $o{args} // [] }) or die "exec: $!";
    }

    $running{$pid} = 1;
    return { pid => $pid, sock => $sock, log => $log };
}

# the socket path appears only once the simulator accepts connections, but
# a stale socket may be there before: ready means connectable
sub ready {
    my ($sim) = @_;
    for (1 .. 200) {
        return 1 if IO::Socket::UNIX->new(Peer => $sim->{sock});
        return 0 if waitpid($sim->{pid}, WNOHANG) > 0;
        sleep(0.05);
    }
    return 0;
}

sub stop_sim {
    my ($sim) = @_;
    kill TERM => $sim->{pid};
    waitpid($sim->{pid}, 0);
    delete $running{ $sim->{pid} };
    return $?;
}

sub alive { waitpid($_[0]{pid}, WNOHANG) == 0 }

# (status, decoded JSON or undef, raw body)
sub call {
    my ($sim, $method, $path, %o) = @_;
    my @cmd = ('curl', '-sS', '--max-time', '10', '--unix-socket',
               $sim->{sock}, '-X', $method, '-o', '-',
               '-w', '\n%{http_code}');
    push @cmd, '--data-binary', $o{body} if defined $o{body};
    push @cmd, map { ('-H', $_) } @{ $o{headers} // [] };
    push @cmd, "http://dstack$path";

    open(my $fh, '-|', @cmd) or die "curl: $!";
    my $out = do { local $/; <$fh> };
    close($fh);

    my ($body, $code) = $out =~ /\A(.*)\n(\d{3})\z/s
        or return (0, undef, $out);
    my $json = eval { decode_json($body) };
    return ($code, $json, $body);
}

sub slurp {
    open(my $fh, '<', $_[0]) or die "$_[0]: $!";
    local $/;
    return <$fh>;
}

sub spew {
    my ($path, $data) = @_;
    open(my $fh, '>', $path) or die "$path: $!";
    print $fh $data;
    close($fh) or die "$path: $!";
    return $path;
}

# (exit status, combined output); arguments are temp paths and fixed words
sub run {
    my $out = `$_[0] 2>&1`;
    return ($? >> 8, $out);
}

my $seq = 0;

# writes the answer of GetTlsKey to files: (key, leaf, CA, x509 -text)
sub issued {
    my ($json) = @_;
    my $n = ++$seq;
    my $key = spew("$DIR/key$n.pem", $json->{key});
    my $leaf = spew("$DIR/leaf$n.pem", $json->{certificate_chain}[0]);
    my $ca = spew("$DIR/ca$n.pem", $json->{certificate_chain}[1]);
    my (undef, $text) = run("openssl x509 -in $leaf -noout -text");
    return ($key, $leaf, $ca, $text);
}

# the raw value of a dstack extension, as hex, from the DER structure
sub ext_value_hex {
    my ($leaf, $oid) = @_;
    my (undef, $asn1) = run("openssl asn1parse -in $leaf");
    $asn1 =~ /:\Q$oid\E\s*\n.*?OCTET STRING\s+\[HEX DUMP\]:([0-9A-F]+)/
        or return undef;
    # the extnValue holds a second OCTET STRING: 04, length, value
    my $der = $1;
    return lc(substr($der, 4)) if hex(substr($der, 2, 2)) * 2 == length($der) - 4;
    return "malformed:$der";
}


# --- command line ----------------------------------------------------------

my ($rc, $out) = run("$BIN --help");
is($rc, 0, '--help exits 0');
like($out, qr/--socket PATH.*--ca-dir DIR.*--app-id HEX/s, '--help shows usage');

($rc, $out) = run("$BIN --socket $DIR/x.sock --ca-dir $DIR/ca --app-id xyz");
is($rc, 2, 'a non-hex app id is a usage error');
like($out, qr/--app-id: expected/, '... and says why');

($rc, $out) = run("$BIN --socket $DIR/x.sock --ca-dir $DIR/ca --app-id abc");
is($rc, 2, 'an odd number of hex digits is refused');

($rc, $out) = run("$BIN --ca-dir $DIR/ca --app-id aa");
is($rc, 2, '--socket is required');
ok(!-e "$DIR/ca", 'usage errors create nothing');


# --- start, CA, socket -----------------------------------------------------

my $ca_dir = "$DIR/ca";
my $sim_a = start_sim(name => 'a', ca => $ca_dir, app_id => uc($APP_A),
                  args => ['--app-name', 'app-a']);
ok(ready($sim_a), 'simulator a is up') or BAIL_OUT(slurp($sim_a->{log}));

is((stat("$ca_dir/ca.key"))[2] & 07777, 0600, 'ca.key is mode 0600');
is((stat($sim_a->{sock}))[2] & 07777, 0660, 'socket is mode 0660');

my $ca_pem = slurp("$ca_dir/ca.crt");
($rc, $out) = run("openssl x509 -in $ca_dir/ca.crt -noout -text");
like($out, qr/Basic Constraints: critical\s+CA:TRUE/, 'CA: CA:TRUE, critical');
like($out, qr/Key Usage: critical\s+Certificate Sign, CRL Sign/,
     'CA: keyCertSign, cRLSign');
like($out, qr/ASN1 OID: prime256v1/, 'CA key is P-256');


# --- /Info -----------------------------------------------------------------

my ($code, $info) = call($sim_a, 'GET', '/Info');
is($code, 200, 'GET /Info');
is($info->{app_id}, $APP_A, '/Info app_id, lowercased');
is($info->{app_name}, 'app-a', '/Info app_name');
like($info->{instance_id}, qr/\A[0-9a-f]{40}\z/, '/Info instance_id, 20 bytes');
like($info->{device_id}, qr/\A[0-9a-f]{64}\z/, '/Info device_id');
like($info->{app_cert}, qr/\A-----BEGIN CERTIFICATE-----/, '/Info app_cert');
my $tcb = eval { decode_json($info->{tcb_info}) };
ok($tcb && exists $tcb->{mrtd} && ref $tcb->{event_log} eq 'ARRAY',
   '/Info tcb_info is a JSON document in a string');

my $info_post;
($code, $info_post) = call($sim_a, 'POST', '/Info', body => '{}');
is($code, 200, 'POST /Info');
is_deeply($info_post, $info, 'POST /Info answers as GET');


# --- GetTlsKey, JSON body --------------------------------------------------

my $json;
($code, $json) = call($sim_a, 'POST', '/GetTlsKey', headers =>
    ['Content-Type: application/json'], body => JSON::PP->new->encode({
        subject => 'svc.example', alt_names => ['localhost', '127.0.0.1'],
        usage_ra_tls => JSON::PP::true, usage_server_auth => JSON::PP::true,
        usage_client_auth => JSON::PP::false }));
is($code, 200, 'POST /GetTlsKey');
is(scalar @{ $json->{certificate_chain} }, 2, 'chain: leaf and CA');
is($json->{certificate_chain}[1], $ca_pem, 'chain ends with ca.crt');
like($json->{key}, qr/\A-----BEGIN PRIVATE KEY-----\n/, 'key is PKCS#8 PEM');

my ($key, $leaf, undef, $text) = issued($json);
($rc, $out) = run("openssl verify -CAfile $ca_dir/ca.crt $leaf");
is($rc, 0, 'openssl verify accepts the leaf') or diag($out);
like($text, qr/Subject: CN = svc.example\n/, 'subject CN');
like($text, qr/Basic Constraints: critical\s+CA:FALSE/, 'CA:FALSE');
like($text, qr/Key Usage: critical\s+Digital Signature\n/, 'digitalSignature');
like($text, qr/Extended Key Usage: \n\s+TLS Web Server Authentication\n/,
     'EKU serverAuth only');
like($text, qr/Alternative Name: \n\s+DNS:localhost, IP Address:127.0.0.1\n/,
     'SAN: DNS name and IP address');
like($text, qr/1\.3\.6\.1\.4\.1\.62397\.1\.3:/, 'x509 -text shows the app_id OID');
is(ext_value_hex($leaf, '1.3.6.1.4.1.62397.1.3'), $APP_A,
   'app_id extension holds the raw app id bytes');
is(ext_value_hex($leaf, '1.3.6.1.4.1.62397.1.4'), unpack('H*', 'ra-tls'),
   'usage_ra_tls: usage extension "ra-tls"');

my (undef, $key_text) = run("openssl pkey -in $key -noout -text");
like($key_text, qr/ASN1 OID: prime256v1/, 'leaf key is P-256');
my (undef, $pub_key) = run("openssl pkey -in $key -pubout");
my (undef, $pub_cert) = run("openssl x509 -in $leaf -noout -pubkey");
is($pub_key, $pub_cert, 'key matches the leaf');

my $json2;
(undef, $json2) = call($sim_a, 'POST', '/GetTlsKey', body => '{}');
isnt($json2->{key}, $json->{key}, 'every call makes a fresh key');


# --- GetTlsKey, query string -----------------------------------------------

($code, $json) = call($sim_a, 'GET', '/GetTlsKey?subject=q.example'
    . '&alt_names=a.example&alt_names=b.example,10.0.0.1,::1'
    . '&usage_client_auth=true&usage_server_auth=0'
    . '&not_before=1700000000&not_after=1800000000');
is($code, 200, 'GET /GetTlsKey with a query string');
($key, $leaf, undef, $text) = issued($json);
like($text, qr/Subject: CN = q.example\n/, 'query: subject');
like($text, qr/Alternative Name: \n\s+DNS:a.example, DNS:b.example, IP Address:10.0.0.1, IP Address:0:0:0:0:0:0:0:1\n/,
     'query: alt_names repeated and comma separated');
like($text, qr/Extended Key Usage: \n\s+TLS Web Client Authentication\n/,
     'query: EKU clientAuth only');
my $fmt = '%b %e %H:%M:%S %Y GMT';
like($text, qr/Not Before: \Q${\ strftime($fmt, gmtime(1700000000)) }\E/,
     'query: not_before');
like($text, qr/Not After : \Q${\ strftime($fmt, gmtime(1800000000)) }\E/,
     'query: not_after');
is(ext_value_hex($leaf, '1.3.6.1.4.1.62397.1.3'), $APP_A,
   'query: app_id extension always present');
is(ext_value_hex($leaf, '1.3.6.1.4.1.62397.1.4'), undef,
   'query: no usage extension without usage_ra_tls');


# --- GetTlsKey defaults ----------------------------------------------------

($code, $json) = call($sim_a, 'POST', '/GetTlsKey');
is($code, 200, 'POST /GetTlsKey without a body');
($key, $leaf, undef, $text) = issued($json);
like($text, qr/Subject: CN = app-a\n/, 'default subject: the app name');
unlike($text, qr/Extended Key Usage/, 'no usage asked: no EKU, as the real agent');
unlike($text, qr/Alternative Name/, 'no alt_names: no SAN');
($rc) = run("openssl x509 -in $leaf -noout -checkend " . (364 * 86400));
is($rc, 0, 'default lifetime: about a year');
($rc) = run("openssl x509 -in $leaf -noout -checkend " . (366 * 86400));
is($rc, 1, '... not more');


# --- bad requests ----------------------------------------------------------

my $big = spew("$DIR/big.json", '{"subject":"' . ('x' x 70000) . '"}');
my @bad = (
    ['GET', '/Nope', undef, 404],
    ['GET', '/info', undef, 404],
    ['PUT', '/Info', '{}', 405],
    ['DELETE', '/GetTlsKey', undef, 405],
    ['POST', '/GetTlsKey', '{"subject":', 400, qr/malformed JSON/],
    ['POST', '/GetTlsKey', '[1,2]', 400, qr/JSON object/],
    ['POST', '/GetTlsKey', '{"a":1,"a":2}', 400, qr/malformed JSON/],
    ['POST', '/GetTlsKey', '{"subject":5}', 400, qr/subject: expected a string/],
    ['POST', '/GetTlsKey', '{"alt_names":"x"}', 400, qr/alt_names: expected/],
    ['POST', '/GetTlsKey', '{"alt_names":[1]}', 400, qr/alt_names: expected/],
    ['POST', '/GetTlsKey', '{"alt_names":["a b"]}', 400, qr/neither a DNS name/],
    ['POST', '/GetTlsKey', '{"usage_ra_tls":"true"}', 400, qr/expected a boolean/],
    ['POST', '/GetTlsKey', '{"not_before":"1"}', 400, qr/expected an integer/],
    ['POST', '/GetTlsKey', '{"not_before":1.5}', 400, qr/expected an integer/],
    ['POST', '/GetTlsKey', '{"not_before":-1}', 400, qr/out of range/],
    ['POST', '/GetTlsKey', '{"not_after":99999999999999}', 400, qr/out of range/],
    ['POST', '/GetTlsKey', '{"not_before":200,"not_after":100}', 400, qr/later than/],
    ['POST', '/GetTlsKey', '{"subject":"' . ('x' x 65) . '"}', 400, qr/64 characters/],
    ['GET', '/GetTlsKey?usage_client_auth=yes', undef, 400, qr/true, false, 1 or 0/],
    ['GET', '/GetTlsKey?subject=a&subject=b', undef, 400, qr/more than once/],
    ['GET', '/GetTlsKey?not_after=%2B5', undef, 400, qr/expected an integer/],
    ['GET', '/GetTlsKey?subject=a%00b', undef, 400, qr/subject/],
    ['GET', '/GetTlsKey?alt_names=%FF%1B', undef, 400, qr/neither a DNS name/],
    ['POST', '/GetTlsKey', "\@$big", 413],
);

for my $case (@bad) {
    my ($method, $path, $body, $want, $error) = @$case;
    my $name = "$method $path" . (defined $body ? ' ' . substr($body, 0, 40) : '');
    my ($got, $err) = call($sim_a, $method, $path, body => $body);
    is($got, $want, "$name: $want");
    ok(ref $err eq 'HASH' && defined $err->{error}, "$name: JSON error body");
    like($err->{error} // '', $error, "$name: says why") if $error;
}

($code, $json) = call($sim_a, 'POST', '/GetTlsKey', body => "\@$big",
                      headers => ['Transfer-Encoding: chunked']);
is($code, 413, 'chunked body over the limit: 413');

($code) = call($sim_a, 'POST', '/GetTlsKey', body => '{"with_app_info":true}');
is($code, 200, 'unknown fields are ignored');

ok(alive($sim_a), 'the simulator survived every bad request');
($code) = call($sim_a, 'GET', '/Info');
is($code, 200, '... and still answers');

my $log = slurp($sim_a->{log});
like($log, qr{PUT /Info 405 method not allowed}, 'refusals are logged');
like($log, qr{ignoring unknown field "with_app_info"}, 'unknown fields are logged');
unlike($log, qr/PRIVATE KEY|MIG[HE]AgEA/, 'no private key in the log');
unlike($log, qr/\e/, 'client bytes cannot put escapes into the log');


# --- one CA for simulators started together -----------------------------

my $shared = "$DIR/shared-ca";
my @sims = map {
    start_sim(name => "s$_", ca => $shared, app_id => sprintf('%040x', $_))
} 1 .. 4;
ok(ready($_), "shared-CA simulator $_->{sock} is up") for @sims;

my %cas;
for my $sim (@sims) {
    my (undef, $j) = call($sim, 'POST', '/GetTlsKey', body => '{}');
    $cas{ $j->{certificate_chain}[1] // 'none' }++;
}
is(scalar keys %cas, 1, 'simulators started at once share one CA');
is((keys %cas)[0], slurp("$shared/ca.crt"), '... the one in the CA directory');
is(stop_sim($_), 0, "$_->{sock}: SIGTERM, exit 0") for @sims;
ok(!-e $_->{sock}, "$_->{sock} removed") for @sims;


# --- identity --------------------------------------------------------------

is(stop_sim($sim_a), 0, 'SIGTERM: exit status 0');
ok(!-e $sim_a->{sock}, 'SIGTERM: socket removed');

$sim_a = start_sim(name => 'a', ca => $ca_dir, app_id => $APP_A,
               args => ['--app-name', 'app-a']);
ok(ready($sim_a), 'restarted');
(undef, $json) = call($sim_a, 'GET', '/Info');
is($json->{instance_id}, $info->{instance_id},
   'derived instance id is stable across restarts');
is(slurp("$ca_dir/ca.crt"), $ca_pem, 'the CA is reused, not recreated');

my $sim_b = start_sim(name => 'b', ca => $ca_dir, app_id => $APP_B,
                  args => ['--instance-id', 'ABCDEF01']);
ok(ready($sim_b), 'simulator b is up');
(undef, $json) = call($sim_b, 'GET', '/Info');
is($json->{instance_id}, 'abcdef01', '--instance-id, lowercased');
is($json->{app_name}, $APP_B, 'default app name: the app id');

# --validity: short-lived leaves, from now, unless the request says
($rc, $out) = run("$BIN --socket $DIR/v.sock --ca-dir $ca_dir --app-id aa --validity 0");
is($rc, 2, '--validity 0 is refused');
like($out, qr/--validity: expected 1 to 31536000 seconds/, '... and says why');
($rc) = run("$BIN --socket $DIR/v.sock --ca-dir $ca_dir --app-id aa --validity 31536001");
is($rc, 2, '--validity above a year is refused');
my $sim_v = start_sim(name => 'v', ca => $ca_dir, app_id => $APP_A,
                      args => ['--validity', '30']);
ok(ready($sim_v), 'simulator with --validity 30 is up');
for my $case (['GET', '/GetTlsKey', 30, 'no times asked: 30 s from now'],
              ['GET', '/GetTlsKey?not_after=' . (time + 600), 600, 'not_after asked: kept']) {
    my ($method, $path, $life, $name) = @$case;
    my $t0 = time;
    (undef, $json) = call($sim_v, $method, $path);
    my $pem = $json->{certificate_chain}[0] // '';
    my ($nb, $na) = map { my $d = $_; `date -u -d '$d' +%s` + 0 }
        (`echo '$pem' | openssl x509 -noout -startdate -enddate -dateopt iso_8601`
         =~ /notBefore=(.*)\nnotAfter=(.*)/);
    ok(defined $na && abs($na - $t0 - $life) <= 2, "--validity: $name");
    ok(defined $nb && abs($nb - $t0) <= 2, '... and not backdated') if $life == 30;
}
stop_sim($sim_v);


# --- the socket path -------------------------------------------------------

my $again = start_sim(name => 'a', ca => $ca_dir, app_id => $APP_A);
waitpid($again->{pid}, 0);
delete $running{ $again->{pid} };
is($? >> 8, 1, 'a second simulator on a live socket refuses to start');
($code) = call($sim_a, 'GET', '/Info');
is($code, 200, '... and leaves the first one serving');

stop_sim($sim_a);
IO::Socket::UNIX->new(Local => $sim_a->{sock}) or die "bind: $!";
ok(-S $sim_a->{sock}, 'a stale socket is left behind');
$sim_a = start_sim(name => 'a', ca => $ca_dir, app_id => $APP_A);
ok(ready($sim_a) && (call($sim_a, 'GET', '/Info'))[0] == 200,
   'a stale socket is replaced');

spew("$DIR/plain", "keep me\n");
my $plain = start_sim(name => 'plain', sock => "$DIR/plain", ca => $ca_dir,
                      app_id => $APP_A);
waitpid($plain->{pid}, 0);
delete $running{ $plain->{pid} };
is($? >> 8, 1, 'a path that is not a socket is refused');
is(slurp("$DIR/plain"), "keep me\n", '... and left alone');

done_testing();
