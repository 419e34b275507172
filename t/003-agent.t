# Requests without a target app go to the local guest agent (a simulator
# here), with the original client proxy's path mapping, limited to the
# methods of mesh_agent_methods; GET /gateway answers the gateway domain and
# GET /health that the entry point is up.
#
# The simulator is started by this file: $DSTACK_BIN/dstack-agent-sim, on a
# socket under /tmp, with the test CA from $TEST_NGINX_CERT_DIR/ca.  A block
# with "--- agent: echo" talks instead to an nginx server on a socket next to
# it that answers the request line it received, to show the exact path.
# "--- agent_methods" sets mesh_agent_methods.

use JSON::PP ();
use Test::Nginx::Socket 'no_plan';

# the sections this file's block preprocessors read
our @BlockSections = qw(agent agent_methods);

use File::Temp qw(tempdir);
use POSIX ();

my $bin = $ENV{DSTACK_BIN} || 'build/bin';
my $dir = tempdir('dstack-agent-XXXXXX', TMPDIR => 1, CLEANUP => 1);

$ENV{TEST_NGINX_AGENT_SOCKET} = "$dir/dstack.sock";
$ENV{TEST_NGINX_ECHO_SOCKET} = "$dir/echo.sock";

my $agent = fork // die "fork: $!";
if ($agent == 0) {
    open STDERR, '>', "$dir/agent.log";
    exec "$bin/dstack-agent-sim", '--socket', "$dir/dstack.sock",
         '--ca-dir', "$ENV{TEST_NGINX_CERT_DIR}/ca",
         '--app-id', 'aaaa000000000000000000000000000000000001',
         '--instance-id', '1111000000000000000000000000000000000001',
         '--app-name', 'app-a'
        or POSIX::_exit(127);
}

for (1 .. 100) {
    last if -S "$dir/dstack.sock";
    select undef, undef, undef, 0.05;
}
-S "$dir/dstack.sock" or die "the guest-agent simulator did not start\n";

END {
    if ($agent) {
        kill 'TERM', $agent;
        waitpid $agent, 0;
    }
}

add_block_preprocessor(sub {
    my $block = shift;

    my $socket = ($block->agent // '') eq 'echo' ? '$TEST_NGINX_ECHO_SOCKET'
                                                 : '$TEST_NGINX_AGENT_SOCKET';
    my $methods = defined $block->agent_methods
                  ? "mesh_agent_methods " . $block->agent_methods . ";"
                  : '';

    $block->set_value('http_config', <<'CONF') unless defined $block->http_config;
    server {
        listen unix:$TEST_NGINX_ECHO_SOCKET;

        location / {
            return 200 "$request_method $request_uri host=$http_host\n";
        }
    }
CONF

    $block->set_value('config', <<"CONF") unless defined $block->config;
    mesh_gateway gw.example.com address=127.0.0.1:1;
    mesh_certificate \$TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key \$TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate \$TEST_NGINX_CERT_DIR/ca.crt;
    mesh_agent_socket $socket;
    $methods

    location / {
        mesh_target \$http_x_dstack_target_app
                    port=\$http_x_dstack_target_port;
    }
CONF
});

no_shuffle();
no_root_location();
run_tests();


# A GetTlsKey answer as what its leaf certificate says: the subject's CN,
# the DNS names, the extended key usage, and whether a private key came.
sub issued {
    my ($body) = @_;
    my $doc = eval { JSON::PP::decode_json($body) } or return "not JSON: $body";
    my $pem = $doc->{certificate_chain}[0] // return "no certificate";
    my $dir = tempdir(CLEANUP => 1);
    open my $fh, '>', "$dir/leaf.pem" or die;
    print $fh $pem;
    close $fh;
    my $text = `openssl x509 -in $dir/leaf.pem -noout -text`;
    my @out;
    push @out, "CN=$1" if $text =~ /Subject:.*?CN\s*=\s*([^,\n]+)/;
    push @out, $1 if $text =~ /Subject Alternative Name:[^\n]*\n\s*(DNS:[^,\n]+)/;
    push @out, "usage: $1" if $text =~ /Extended Key Usage:[^\n]*\n\s*([^\n]+)/;
    push @out, 'key: ' . (($doc->{key} // '') =~ /^-----BEGIN PRIVATE KEY-----/ ? 'yes' : 'no');
    return join("\n", @out) . "\n";
}

__DATA__

=== TEST 1: /info is the agent's /Info
--- request
GET /info
--- response_body_like chomp
"app_id"\s*:\s*"aaaa000000000000000000000000000000000001".*"instance_id"\s*:\s*"1111000000000000000000000000000000000001"
--- response_headers
Content-Type: application/json



=== TEST 2: /prefix/get-tls-key is /prefix/GetTlsKey, query string kept
--- agent: echo
--- agent_methods: Info GetTlsKey
--- request
GET /prefix/get-tls-key?subject=demo&usage_client_auth=true
--- response_body
GET /prefix/GetTlsKey?subject=demo&usage_client_auth=true host=localhost



=== TEST 3: an allowed GetTlsKey reaches the agent with its query string
The issued certificate says what the query asked for.
--- agent_methods: Info GetTlsKey
--- request
GET /get-tls-key?subject=demo-query&usage_client_auth=true
--- response_body_filters eval
\&main::issued
--- response_body
CN=demo-query
usage: TLS Web Client Authentication
key: yes



=== TEST 4: POST bodies pass through to the agent
The issued certificate carries the subject, name and usage the body asked for.
--- agent_methods: Info GetTlsKey
--- request
POST /get_tls_key
{"subject": "demo-post", "alt_names": ["demo.local"], "usage_server_auth": true}
--- more_headers
Content-Type: application/json
--- response_body_filters eval
\&main::issued
--- response_body
CN=demo-post
DNS:demo.local
usage: TLS Web Server Authentication
key: yes



=== TEST 5: /gateway answers the gateway domain without asking the agent
--- request
GET /gateway
--- response_body chomp
{"gateway_domain":"gw.example.com"}
--- response_headers
Content-Type: application/json



=== TEST 6: a path that names no agent method: 400
--- request eval
["GET /", "GET /get.tls.key", "GET /" . ("a" x 65)]
--- error_code eval
[400, 400, 400]
--- response_body eval
[('{"error":"the path does not name a guest agent method"}') x 3]



=== TEST 7: no agent socket configured: 400
--- config
    mesh_gateway gw.example.com address=127.0.0.1:1;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target $http_x_dstack_target_app;
    }
--- request
GET /info
--- error_code: 400
--- response_body chomp
{"error":"no target app, and no guest agent socket is configured"}
--- error_log
mesh: no target app and no mesh_agent_socket



=== TEST 8: the method name is converted as the original proxy did
--- agent: echo
--- agent_methods: Info GetTlsKey GetQuote Get2faCode AbcDef
--- request eval
["GET /GET_TLS_KEY", "GET /getTLSKey", "GET /get-tls-key", "GET /get_tls_key",
 "GET /GetTlsKey", "GET /--get--tls--key--", "GET /Info", "GET /INFO",
 "GET /get2fa-code", "GET /ABCDef"]
--- response_body eval
[("GET /GetTlsKey host=localhost\n") x 6,
 ("GET /Info host=localhost\n") x 2,
 "GET /Get2faCode host=localhost\n",
 "GET /AbcDef host=localhost\n"]



=== TEST 9: the path prefix is kept, only the last segment is converted
--- agent: echo
--- request eval
["GET /prpc/get-quote?report_data=00ff", "POST /prpc/info\n{}",
 "GET /a/b-c/info"]
--- response_body eval
["GET /prpc/GetQuote?report_data=00ff host=localhost\n",
 "POST /prpc/Info host=localhost\n",
 "GET /a/b-c/Info host=localhost\n"]



=== TEST 10: by default the agent's key is not handed out, however spelt
--- agent: echo
--- request eval
["GET /get-tls-key", "POST /prpc/GET_TLS_KEY\n{}", "GET /getTLSKey",
 "GET /get-key", "POST /emit-event\n{}"]
--- error_code eval
[403, 403, 403, 403, 403]
--- response_body eval
[('{"error":"guest agent method \"GetTlsKey\" is not allowed"}') x 3,
 '{"error":"guest agent method \"GetKey\" is not allowed"}',
 '{"error":"guest agent method \"EmitEvent\" is not allowed"}']
--- error_log eval
qr/\[info\] .*mesh: guest agent method "\w+" is not allowed by mesh_agent_methods/
--- no_error_log
[error]



=== TEST 11: the default allows Info and GetQuote, however spelt
--- agent: echo
--- request eval
["GET /info", "POST /get-quote\n{}", "GET /GET_QUOTE", "GET /INFO"]
--- response_body eval
["GET /Info host=localhost\n", "POST /GetQuote host=localhost\n",
 "GET /GetQuote host=localhost\n", "GET /Info host=localhost\n"]



=== TEST 12: mesh_agent_methods replaces the default
--- agent: echo
--- agent_methods: Info
--- request eval
["GET /info", "GET /get-quote"]
--- error_code eval
[200, 403]
--- response_body eval
["GET /Info host=localhost\n",
 '{"error":"guest agent method \"GetQuote\" is not allowed"}']



=== TEST 13: nginx -t refuses a method name no request converts to
--- agent_methods: Info getTLSKey
--- must_die
--- error_log
"getTLSKey" is not in PascalCase as requests are converted: "GetTlsKey"



=== TEST 14: nginx -t refuses a method name with other characters
--- agent_methods: Tappd.Info
--- must_die
--- error_log
"Tappd.Info" is not a guest agent method name



=== TEST 15: GET /health answers that the entry point is up
--- request eval
["GET /health", "HEAD /health"]
--- response_body eval
['{"status":"ok"}', ""]
--- response_headers eval
[("Content-Type: application/json") x 2]



=== TEST 16: GET /health needs no guest agent
--- config
    mesh_gateway gw.example.com address=127.0.0.1:1;
    mesh_certificate $TEST_NGINX_CERT_DIR/app-a.crt;
    mesh_certificate_key $TEST_NGINX_CERT_DIR/app-a.key;
    mesh_trusted_certificate $TEST_NGINX_CERT_DIR/ca.crt;

    location / {
        mesh_target $http_x_dstack_target_app;
    }
--- request
GET /health
--- response_body chomp
{"status":"ok"}



=== TEST 17: /health of a named target is the target's, not answered here
--- request
GET /health
--- more_headers
X-Dstack-Target-App: bbbb000000000000000000000000000000000002
--- error_code: 502
--- error_log
connect() failed
