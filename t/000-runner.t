# Self-test of t/lib/Test/Nginx/Socket.pm, our work-alike of the CPAN
# module Test::Nginx::Socket: every section it supports, on stock nginx
# only, so this file passes under upstream's module as well.
#
#   prove -It/lib t/000-runner.t

use Test::Nginx::Socket;

$ENV{TEST_NGINX_HTML_DIR} ||= html_dir();

repeat_each(2);
no_shuffle();
no_long_string();
env_to_nginx('RUNNER_SELF_TEST=1');

# Blocks without a config section get this one.
add_block_preprocessor(sub {
    my ($block) = @_;
    $block->set_value(config => <<'_EOC_') unless defined $block->config;
    location = /t {
        return 200 "default config\n";
    }
_EOC_
});

# "--- tcp_listen: mock.sock" is a unix socket in the html directory, where
# the config finds it as $TEST_NGINX_HTML_DIR/mock.sock.
add_block_preprocessor(sub {
    my ($block) = @_;
    $block->set_value(tcp_listen => html_dir() . '/mock.sock')
        if ($block->tcp_listen // '') eq 'mock.sock';
});

# Two subtests in every block (a status code and one more), plus the extra
# ones: 5 in TEST 3, 6 in TEST 6, 1 in TEST 19, and 2 each in TESTs 5, 8,
# 9, 11, 12, 13, 14 and 22, and 1 each in TESTs 21 and 23 (tcp_query).
plan tests => repeat_each() * (blocks() * 2 + 30);

run_tests();

__DATA__

=== TEST 1: return 200 with a body
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
GET /t
--- error_code: 200
--- response_body
hello



=== TEST 2: more_headers are sent
--- config
    location = /t {
        return 200 "foo=$http_x_foo bar=$http_x_bar\n";
    }
--- more_headers
X-Foo: one
X-Bar:two
--- request
GET /t
--- response_body
foo=one bar=two



=== TEST 3: response_headers, present and absent
--- config
    location = /t {
        add_header X-Test yes;
        add_header X-Twice a;
        add_header X-Twice b;
        return 200 "ok\n";
    }
--- request
GET /t
--- response_headers
X-Test: yes
X-Twice: a, b
Content-Type: text/plain
Content-Length: 3
!X-Missing
--- response_body
ok



=== TEST 4: error_code and response_body_like
--- config
    location = /t {
        return 404;
    }
--- request
GET /t
--- error_code: 404
--- response_body_like: <title>404 Not Found</title>



=== TEST 5: request eval: one connection per request
--- config
    location = /a {
        return 200 "a $connection_requests\n";
    }
    location = /b {
        return 201 "b $connection_requests\n";
    }
--- request eval
["GET /a", "GET /b"]
--- error_code eval
[200, 201]
--- response_body eval
["a 1\n", "b 1\n"]



=== TEST 6: pipelined_requests share one keep-alive connection
The chunked response in the middle must be split off correctly.
--- config
    location = /t {
        return 200 "request $connection_requests\n";
    }
    location = /chunked {
        default_type text/html;
        sub_filter world nginx;
        return 200 "hello world\n";
    }
--- pipelined_requests eval
["GET /t", "GET /chunked", "GET /t"]
--- response_headers eval
["", "Transfer-Encoding: chunked\n!Content-Length", ""]
--- response_body eval
["request 1\n", "hello nginx\n", "request 3\n"]



=== TEST 7: a POST body gets its Content-Length
--- config
    location = /post {
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/sink;
        proxy_set_header X-Body $request_body;
    }
    location = /sink {
        return 200 "body=[$http_x_body] length=$http_content_length\n";
    }
--- request
POST /post
hello world
--- response_body
body=[hello world] length=11



=== TEST 8: http_config
--- http_config
    map $arg_x $mapped {
        default none;
        a       alpha;
    }
--- config
    location = /t {
        return 200 "$mapped\n";
    }
--- request eval
["GET /t?x=a", "GET /t?x=zz"]
--- response_body eval
["alpha\n", "none\n"]



=== TEST 9: main_config goes to the main context
"env" is only allowed there: anywhere else nginx would not start.
--- main_config
    env RUNNER_MAIN_CONFIG=1;
--- config
    location = /t {
        deny all;
    }
--- request
GET /t
--- error_code: 403
--- error_log
access forbidden by rule
--- no_error_log
[alert]
[crit]



=== TEST 10: add_block_preprocessor supplies a missing config
--- request
GET /t
--- response_body
default config



=== TEST 11: error_log and no_error_log with eval
--- config
    location = /t {
        deny all;
    }
--- request
GET /t
--- error_code: 403
--- error_log eval
[qr/\[error\] \d+#\d+: \*\d+ access forbidden by rule/, "client: 127.0.0.1"]
--- no_error_log eval
qr/\[emerg\]/



=== TEST 12: grep_error_log with a string, several requests
--- config
    location = /t {
        deny all;
    }
--- request eval
["GET /t", "GET /t?again"]
--- error_code eval
[403, 403]
--- grep_error_log chop
access forbidden by rule
--- grep_error_log_out
access forbidden by rule



=== TEST 13: grep_error_log with a regex, debug level, per round
--- config
    location = /t {
        return 200 "ok\n";
    }
--- request
GET /t
--- grep_error_log eval
qr/http finalize request: \d+, "\/t\?"/
--- grep_error_log_out eval
[qq{http finalize request: 0, "/t?"\n}, qq{http finalize request: 0, "/t?"\n}]
--- error_log
[debug]
--- response_body
ok



=== TEST 14: log_level per block
--- log_level: warn
--- config
    location = /t {
        deny all;
    }
--- request
GET /t
--- error_code: 403
--- error_log
access forbidden by rule
--- no_error_log
[debug]
[info]



=== TEST 15: must_die: a malformed directive is refused
--- config
    location = /t {
        no_such_directive on;
    }
--- must_die
--- error_log
unknown directive "no_such_directive"



=== TEST 16: must_die: a directive in the wrong context
--- config
    worker_processes 2;
--- must_die
--- error_log eval
qr/\[emerg\] .*"worker_processes" directive is not allowed here/



=== TEST 17: user_files, served by the default root location
--- config
--- user_files
>>> sub/hello.txt
hello from a user file
--- request
GET /sub/hello.txt
--- response_body
hello from a user file



=== TEST 18: raw_request
--- config
    location = /t {
        return 200 "raw $server_protocol\n";
    }
--- raw_request eval
"GET /t HTTP/1.0\r\nHost: localhost\r\n\r\n"
--- response_body
raw HTTP/1.0



=== TEST 19: HEAD request after a comment line, timeout and wait
--- config
    location = /t {
        return 200 "hello\n";
    }
--- request
# the runner skips comment lines before the request line
HEAD /t
--- timeout: 5s
--- wait: 0.1
--- response_headers
Content-Length: 6
--- response_body



=== TEST 20: SKIP leaves a block out
--- SKIP
--- config
    location = /t {
        return 500;
    }
--- request
GET /t
--- response_body
never compared



=== TEST 21: tcp_listen: the mock backend gets exactly what nginx sends
--- config
    location = /t {
        proxy_pass http://127.0.0.1:12345/backend?x=1;
        proxy_set_header Host backend;
        proxy_set_header X-Mock "yes, $request_method";
    }
--- request
GET /t
--- tcp_listen: 12345
--- tcp_query eval
"GET /backend?x=1 HTTP/1.0\r
Host: backend\r
X-Mock: yes, GET\r
Connection: close\r
\r
"
--- tcp_reply eval
"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nmock!\n"
--- response_body
mock!



=== TEST 22: tcp_query_len, a request body, a delayed reply in chunks
The mock backend reads the whole body before it answers.
--- config
    location = /t {
        proxy_pass http://127.0.0.1:12345;
        proxy_set_header Host backend;
    }
--- request
POST /t
hello world
--- tcp_listen: 12345
--- tcp_query eval
"POST /t HTTP/1.0\r
Host: backend\r
Connection: close\r
Content-Length: 11\r
\r
hello world"
--- tcp_query_len: 85
--- tcp_reply_delay: 100ms
--- tcp_reply eval
["HTTP/1.0 201 Created\r\n", "Content-Length: 9\r\n\r\n", "got it\n", "\n\n"]
--- error_code: 201
--- response_body eval
"got it\n\n\n"



=== TEST 23: a unix socket backend that keeps the connection open
nginx has the whole response once it has Content-Length bytes.
--- config
    location = /t {
        proxy_pass http://unix:$TEST_NGINX_HTML_DIR/mock.sock:/u;
        proxy_http_version 1.1;
        proxy_set_header Host backend;
        proxy_set_header Connection "";
    }
--- request
GET /t
--- tcp_listen: mock.sock
--- tcp_no_close
--- tcp_query eval
"GET /u HTTP/1.1\r\nHost: backend\r\n\r\n"
--- tcp_reply eval
"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nunix\n"
--- response_body
unix



=== TEST 24: response_body_filters: the body is filtered before it is compared
--- config
    location = /t {
        return 200 "Filtered\n";
    }
--- request
GET /t
--- response_body_filters eval
sub { uc $_[0] }
--- response_body
FILTERED



=== TEST 25: skip_eval: a true expression skips the block without running nginx
--- skip_eval: 2: 1 + 1 == 2
--- config
    location = /t {
        this is not valid nginx configuration;
    }
--- request
GET /t
--- response_body
never
