package Test::Nginx::Socket;

# A small work-alike of the CPAN module Test::Nginx::Socket, which Debian 12
# does not package.  Test files are written for upstream and run unchanged
# under either:
#
#     use Test::Nginx::Socket 'no_plan';
#     run_tests();
#
#     __DATA__
#
#     === TEST 1: hello
#     --- config
#         location = /t { return 200 "hello\n"; }
#     --- request
#     GET /t
#     --- response_body
#     hello
#
# Blocks are parsed by Test::Base, as upstream's are, so its filters
# (eval, chomp, ...) and --- ONLY / --- SKIP / --- LAST behave the same.
# For each block run_tests() writes t/servroot/conf/nginx.conf, restarts
# nginx, sends the requests, compares the responses and checks the lines
# the error log gained meanwhile.  Test names follow upstream's.
#
# Sections: main_config, http_config, config, request, pipelined_requests,
# raw_request, more_headers, error_code, response_headers, response_body,
# response_body_like, response_body_filters, skip_eval, error_log,
# no_error_log, grep_error_log,
# grep_error_log_out, timeout, wait, user_files, log_level, must_die,
# and the mock TCP backend's: tcp_listen, tcp_reply, tcp_query,
# tcp_query_len, tcp_no_close, tcp_reply_delay, tcp_shutdown,
# tcp_shutdown_delay (see start_tcp_server below).
# Upstream sections missing here make the test file die (@UNSUPPORTED).
#
# Known differences from upstream:
#  - --- config is required (upstream reuses the previous block's nginx
#    without one); load_module lines come first in nginx.conf.
#  - --- timeout bounds a whole connection, not each wait for data.
#  - no_error_log reports one failure per pattern, not one per line, and
#    also covers what nginx logs after the last response, up to its exit.
#  - [alert], [crit] and [emerg] lines fail the block unless its
#    --- error_log expects them (upstream warns).
#  - Unknown sections fail the block (see @SUPPORTED below).
#  - "!Name" in response_headers ignores the case of the header name.
#  - Requests given as arrays of packets, and the mtime that user_files
#    may give after a path, are not supported.
#  - nginx's stderr counts as part of the error log (see Util.pm), and a
#    block whose nginx fails to start fails instead of bailing out.
#  - The mock TCP backend accepts one connection per request (upstream:
#    one per repeat_each() round, whatever the number of requests), and
#    tcp_query / tcp_query_len are checked after each request (upstream:
#    once per round); with eval they may be arrays, one value per request.
#    It stops reading at a complete HTTP request rather than at the length
#    of --- tcp_query.  A tcp_* section without --- tcp_listen is refused.

use strict;
use warnings;

use Test::Base;    # block parser and filters; also Test::More's functions
use parent 'Exporter';
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use List::Util qw(max min shuffle);
use POSIX ();
use Scalar::Util qw(looks_like_number);
use Socket qw(SOCK_STREAM SHUT_WR);
use Time::HiRes qw(sleep time);

use Test::Nginx::Util qw(
    :DEFAULT $RepeatEach $NoShuffle $NoLongString @BlockPreprocessors
    prepare_server_root write_user_files write_config
    run_nginx start_nginx stop_nginx new_log_lines parse_time
);

our @EXPORT = (@Test::Nginx::Util::EXPORT, 'run_tests',
               grep { !/^\$/ } @Test::Base::EXPORT);

# Longer strings are compared by is_str() without printing them whole.
use constant LONG_STRING => 512;

# The mock TCP backend answers once a request has been quiet this long
# (seconds), and gives its port this long to become free.
use constant TCP_IDLE => 1;
use constant TCP_BIND_TIMEOUT => 3;

# Better to refuse a test than to pass it without checking what it asks.
my @UNSUPPORTED = qw(
    response_body_unlike response_headers_like
    raw_response_headers_like raw_response_headers_unlike error_code_like
    access_log no_access_log shutdown_error_log no_shutdown_error_log
    post_main_config server_name server_addr_for_client http2 http3 curl
    abort ignore_response shutdown raw_request_middle_delay error_log_file
    skip_nginx skip_nginx2 skip_openssl todo
    udp_listen udp_reply stap
);

# Every section this runner reads; any other name in a block is refused
# (a misspelled expectation would otherwise be ignored and pass), unless
# the test file declares it for its own block preprocessors with
#   our @BlockSections = qw(name ...);
# which upstream's module, that ignores unknown sections, never reads.
my @SUPPORTED = qw(
    main_config http_config config request pipelined_requests raw_request
    more_headers error_code response_headers response_body
    response_body_like response_body_filters skip_eval error_log
    no_error_log grep_error_log grep_error_log_out timeout wait user_files
    log_level must_die tcp_listen tcp_reply tcp_query tcp_query_len
    tcp_no_close tcp_reply_delay tcp_shutdown tcp_shutdown_delay
    ONLY SKIP LAST
);

# Sections that need --- tcp_listen.
my @TCP_SECTIONS = qw(
    tcp_reply tcp_query tcp_query_len tcp_no_close tcp_reply_delay
    tcp_shutdown tcp_shutdown_delay
);

# "use Test::Nginx::Socket 'no_plan';" or "... tests => N": the arguments
# go to plan().  Like upstream's (via Test::Base), test files also get
# strict and warnings.
sub import {
    my ($class, @plan) = @_;
    strict->import;
    warnings->import;
    $class->export_to_level(1, $class);
    plan(@plan) if @plan;
}

sub run_tests () {
    for my $block ($NoShuffle ? blocks() : shuffle(blocks())) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        run_block($block);
    }
    stop_nginx();
}

sub run_block {
    my ($block) = @_;
    my $name = $block->name;

    check_sections($block);
    return if skipped($block);
    stop_nginx();
    prepare_server_root();
    write_user_files($block);
    write_config($block);
    return run_must_die($block) if defined $block->must_die;

    my $conns = connections($block);
    my ($started, $why) = start_nginx();
    if (!$started) {
        fail("$name - nginx started");
        diag($why);
        return;
    }
    run_requests($block, $conns, $_) for 0 .. $RepeatEach - 1;

    # What nginx logs after the last response (closing connections and
    # upstreams, its own shutdown) is checked too: stop it, read the rest.
    stop_nginx();
    check_late_lines($block, new_log_lines(0));
}

# "--- skip_eval: N: EXPR", as upstream: when the Perl expression is true,
# the block's N tests (per repeat_each round) are skipped, nginx not run.
sub skipped {
    my ($block) = @_;
    my $spec = $block->skip_eval;
    return 0 unless defined $spec;
    my ($count, $expr) = $spec =~ /^\s*(\d+)\s*:\s*(.+?)\s*$/s
        or die $block->name . " - --- skip_eval wants \"N: EXPR\"\n";
    my $skip = eval $expr;
    die $block->name . " - --- skip_eval: $@" if $@;
    return 0 unless $skip;
    SKIP: { skip($block->name . " - skip_eval: $expr", $count * $RepeatEach) }
    return 1;
}

sub check_sections {
    my ($block) = @_;
    my $name = $block->name;
    # Without it upstream reuses the previous block's server.
    die "$name - no --- config section (it may be empty)\n"
        unless defined $block->config;
    my @unsupported = grep { defined $block->$_ } @UNSUPPORTED;
    die "$name - sections not supported by this runner: @unsupported\n"
        if @unsupported;
    no warnings 'once';
    my %known = map { $_ => 1 } @SUPPORTED, @main::BlockSections;
    my @unknown = grep { !$known{$_} } @{ $block->{_section_order}[0] // [] };
    die "$name - unknown sections (misspelled? declare a file's own in"
        . " our \@BlockSections): @unknown\n" if @unknown;
    die "$name - --- grep_error_log and --- grep_error_log_out go together\n"
        if defined($block->grep_error_log)
           != defined($block->grep_error_log_out);

    if (!defined $block->tcp_listen) {
        my @orphans = grep { defined $block->$_ } @TCP_SECTIONS;
        die "$name - sections without --- tcp_listen: @orphans\n" if @orphans;
        return;
    }
    die "$name - no --- tcp_reply specified but --- tcp_listen is specified\n"
        unless defined $block->tcp_reply || defined $block->tcp_shutdown;
    die "$name - --- tcp_shutdown must be 0, 1 or 2\n"
        if defined $block->tcp_shutdown && $block->tcp_shutdown !~ /^\s*[012]\s*$/;
    parse_time(scalar $block->$_) for qw(tcp_reply_delay tcp_shutdown_delay);
}

# "--- must_die": nginx must refuse the configuration.  As upstream, that
# is tried once per repeat_each() round, each followed by the log checks.
sub run_must_die {
    my ($block) = @_;
    my $name = $block->name;
    my $want = $block->must_die;
    for my $round (0 .. $RepeatEach - 1) {
        my $status = run_nginx();
        if (looks_like_number($want)) {
            is($status >> 8, $want, "$name - die with the expected exit code");
        } else {
            isnt($status, 0, "$name - die as expected");
        }
        check_error_log($block, $round);
        stop_nginx() if $status == 0;
    }
}

# Each response is checked, then the error log, as upstream does; so every
# request of a block counts its own set of subtests.
sub run_requests {
    my ($block, $conns, $round) = @_;
    my $timeout = parse_time(scalar $block->timeout) // timeout();
    my $wait = parse_time(scalar $block->wait);
    my $several = defined $block->pipelined_requests || @$conns > 1;
    my $idx = 0;
    for my $conn (@$conns) {
        my $mock = start_tcp_server($block, scalar @{ $conn->{heads} }, $idx,
                                    $timeout);
        my @responses = exchange($block->name, $conn, $timeout);
        for my $k (0 .. $#responses) {
            check_response($block, $responses[$k], $idx, $round, $several);
            sleep $wait if $wait;
            check_error_log($block, $round);
            check_tcp_query($block, $k, $idx) if $mock;
            $idx++;
        }
        stop_tcp_server($mock) if $mock;
    }
}

# The request sections as connections: { data => the bytes to send,
# heads => [per expected response, whether it answers a HEAD] }.
sub connections {
    my ($block) = @_;
    my $name = $block->name;

    if (defined(my $raw = $block->raw_request)) {
        $raw = join '', @$raw if ref $raw eq 'ARRAY';
        return [{ data => $raw, heads => [is_head($raw)] }];
    }

    if (defined(my $reqs = $block->pipelined_requests)) {
        ref $reqs eq 'ARRAY'
            or die "$name - --- pipelined_requests needs an array (use eval)\n";
        my @data = map {
            build_request($block, $reqs->[$_], $_,
                          $_ < $#$reqs ? 'keep-alive' : 'close')
        } 0 .. $#$reqs;
        return [{ data => join('', @data),
                  heads => [map { is_head($_) } @data] }];
    }

    my $req = $block->request // die "$name - no --- request, --- raw_request"
                                   . " or --- pipelined_requests\n";
    my @reqs = ref $req eq 'ARRAY' ? @$req : ($req);
    return [ map {
        my $data = build_request($block, $reqs[$_], $_, 'close');
        +{ data => $data, heads => [is_head($data)] }
    } 0 .. $#reqs ];
}

sub is_head { $_[0] =~ /\A\s*HEAD\s/ ? 1 : 0 }

# "METHOD [URI [PROTOCOL]]" and an optional body on the following lines,
# completed as upstream does: Host and Connection unless more_headers has
# them, then more_headers, then Content-Length for a non-empty body (which
# then loses its surrounding white space).
sub build_request {
    my ($block, $text, $idx, $connection) = @_;
    my $more = $block->more_headers // '';
    $more = $more->[$idx] // '' if ref $more eq 'ARRAY';

    $text =~ s/\A(?:\s*#[^\n]*\n|\s+)+//;    # leading blank and comment lines
    my ($line, $body) = split /\n/, $text, 2;
    my ($method, $uri, $proto) = split ' ', $line // '';
    defined $method or die $block->name . " - empty request line\n";
    $body //= '';

    my @headers = map { my ($k, $v) = split /:\s*/, $_, 2; "$k: " . ($v // '') }
                  grep { /\S/ && !/^\s*#/ } split /\n/, $more;
    my $has = sub { my ($h) = @_; grep { /^\Q$h\E\s*:/i } @headers };
    unshift @headers, "Connection: $connection" unless $has->('Connection');
    unshift @headers, 'Host: localhost' unless $has->('Host');
    if (length $body && !$has->('Content-Length')
        && !grep { /^Transfer-Encoding:\s*chunked/i } @headers)
    {
        $body =~ s/^\s+|\s+$//g;
        push @headers, 'Content-Length: ' . length $body;
    }
    return join "\r\n", join(' ', $method, $uri // '/', $proto // 'HTTP/1.1'),
                        @headers, '', $body;
}

# Sends a connection's requests and returns one response (or undef) per
# expected response.  Reading stops once they are all complete, at EOF, or
# at the timeout, which fails the test as upstream does.
sub exchange {
    my ($name, $conn, $timeout) = @_;
    my @heads = @{ $conn->{heads} };
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => server_port(),
                                     Timeout => $timeout);
    if (!$sock) {
        fail("$name - connect to port " . server_port() . ": $@");
        return (undef) x @heads;
    }
    local $SIG{PIPE} = 'IGNORE';    # nginx may answer before reading it all
    $sock->blocking(0);
    my $select = IO::Select->new($sock);
    my ($out, $sent, $in, $eof, @responses) = ($conn->{data}, 0, '', 0);
    my $deadline = time + $timeout;

    while (1) {
        while (@responses < @heads) {
            my $res = take_response(\$in, $heads[@responses], $eof) or last;
            push @responses, $res;
        }
        last if @responses == @heads || $eof;

        my $left = $deadline - time;
        if ($left <= 0) {
            fail("ERROR: client socket timed out - $name");
            $eof = 1;    # still check what did arrive
            next;
        }
        my ($readable, $writable) = IO::Select->select(
            $select, $sent < length $out ? $select : undef, undef, $left);
        if ($writable && @$writable) {
            my $n = syswrite $sock, $out, length($out) - $sent, $sent;
            # on an error (nginx closed early), stop sending and read
            $sent = defined $n ? $sent + $n : $!{EAGAIN} ? $sent : length $out;
        }
        if ($readable && @$readable) {
            my $n = sysread $sock, $in, 65536, length $in;
            $eof = 1 if defined $n ? $n == 0 : !$!{EAGAIN};
        }
    }
    return @responses, (undef) x (@heads - @responses);
}

# Removes one response from the front of $$buf and returns it as
# { status, headers => { lowercase name => value }, body }, or nothing if
# more bytes are needed.  After EOF, it returns whatever is there.  This
# runs after every read, so it works on offsets and copies the body once.
sub take_response {
    my ($buf, $is_head, $eof) = @_;
    my $end = index $$buf, "\r\n\r\n";
    if ($end < 0) {
        return unless $eof && length $$buf;
        $end = length $$buf;
    }
    my ($status_line, @lines) = split /\r\n/, substr($$buf, 0, $end);
    my %res = (status => $status_line =~ m{^HTTP/\d\.\d (\d{3})} ? $1 : '',
               headers => {});
    for (@lines) {
        my ($key, $value) = /^([^:]+):\s*(.*?)\s*$/ or next;
        my $h = \$res{headers}{lc $key};
        $$h = defined $$h ? "$$h, $value" : $value;
    }

    my $start = min($end + 4, length $$buf);
    my $avail = length($$buf) - $start;
    my $len = $res{headers}{'content-length'};
    my $stop;    # offset just past this response
    if ($is_head || $res{status} =~ /^(?:1..|204|304)$/) {
        ($res{body}, $stop) = ('', $start);
    } elsif (($res{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
        ($res{body}, $stop) = dechunk($buf, $start);
    } elsif (defined $len && $avail >= $len) {
        ($res{body}, $stop) = (substr($$buf, $start, $len), $start + $len);
    }
    if (!defined $stop) {
        return unless $eof;    # a truncated or close-delimited body
        ($res{body}, $stop) = (substr($$buf, $start), length $$buf);
    }
    substr($$buf, 0, $stop) = '';
    return \%res;
}

# Decodes the chunked body starting at offset $pos of $$buf.  Returns the
# body and the offset just past it, or nothing while the last chunk is
# missing.  No regex runs on $$buf itself: a capture would make Perl keep a
# copy of the buffer, and the next read would then copy all of it.
sub dechunk {
    my ($buf, $pos) = @_;
    my @chunks;    # [offset, size] of each chunk's data
    while (1) {
        my $eol = index $$buf, "\r\n", $pos;
        return if $eol < 0;
        substr($$buf, $pos, $eol - $pos) =~ /^([0-9a-fA-F]+)/ or return;
        my ($size, $at) = (hex $1, $eol + 2);
        if ($size == 0) {    # then optional trailer lines and an empty line
            my $stop = substr($$buf, $at, 2) eq "\r\n" ? $at + 2
                     : index($$buf, "\r\n\r\n", $at) + 4;
            return if $stop < 4;
            my $body = join '', map { substr $$buf, $_->[0], $_->[1] } @chunks;
            return ($body, $stop);
        }
        return if length $$buf < $at + $size + 2;
        push @chunks, [$at, $size];
        $pos = $at + $size + 2;
    }
}

# The mock TCP backend of "--- tcp_listen: PORT" (on 127.0.0.1) or
# "--- tcp_listen: /path/to/x.sock" (a unix socket), as upstream's.  For each
# client connection a forked child listens, then accepts one connection per
# request the client connection carries.  On each it reads what nginx sends
# (see request_complete), writes "--- tcp_reply" (a string, or with eval an
# array of chunks) after "--- tcp_reply_delay", and closes, unless
# "--- tcp_no_close".  "--- tcp_shutdown: 0|1|2" shuts the accepted socket
# down first (after "--- tcp_shutdown_delay"); 0 and 2 skip the reading, 1
# and 2 the reply.  What each connection brought lands in a file, which
# check_tcp_query() compares with "--- tcp_query" and "--- tcp_query_len".
# The child exits by itself after a while, should the runner die.

my $MockPid;    # the child running now, if any
my $MockDir;    # where its files go

sub start_tcp_server {
    my ($block, $count, $first, $timeout) = @_;
    my $target = $block->tcp_listen // return;
    my $name = $block->name;
    $target =~ s/^\s+|\s+$//g;
    $MockDir //= tempdir('test-nginx-tcp-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    unlink glob "$MockDir/*";
    my $listener = tcp_listener($name, $target);

    my $pid = fork // die "$name - fork: $!\n";
    if (!$pid) {
        # Neither Util.pm's handlers (they exit, which runs END blocks that
        # stop nginx) nor Test::Builder's ending may run in this copy.
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP ALRM);
        $SIG{PIPE} = 'IGNORE';
        alarm(int($timeout) + 10);
        eval { serve_tcp($block, $listener, $count, $first, $timeout); 1 }
            or warn "$name - mock TCP server: $@";
        POSIX::_exit(0);
    }
    close $listener;
    $MockPid = $pid;
    return { pid => $pid, path => $target =~ /^\d+$/ ? undef : $target };
}

sub stop_tcp_server {
    my ($mock) = @_;
    kill 'KILL', $mock->{pid};
    waitpid $mock->{pid}, 0;
    undef $MockPid;
    unlink $mock->{path} if defined $mock->{path};
}

# Like upstream, a busy port is retried for a while (a previous test's
# backend may still hold it).
sub tcp_listener {
    my ($name, $target) = @_;
    my $deadline = time + TCP_BIND_TIMEOUT;
    while (1) {
        my $sock;
        if ($target =~ /^\d+$/) {
            $sock = IO::Socket::INET->new(
                LocalAddr => '127.0.0.1', LocalPort => $target,
                Proto => 'tcp', ReuseAddr => 1, Listen => 16);
        } elsif ($target =~ /\S\.sock$/) {
            unlink $target;
            $sock = IO::Socket::UNIX->new(
                Local => $target, Type => SOCK_STREAM, Listen => 16);
        } else {
            die "$name - bad tcp_listen target: $target"
                . " (a port number or a path ending in .sock)\n";
        }
        return $sock if $sock;
        my ($err, $busy) = ($!, $!{EADDRINUSE});
        die "$name - failed to create the tcp listening socket on $target:"
            . " $err\n" unless $busy && time < $deadline;
        sleep 0.1;
    }
}

sub serve_tcp {
    my ($block, $listener, $count, $first, $timeout) = @_;
    my $deadline = time + $timeout;
    my @kept;
    my $ready = IO::Select->new($listener);
    for my $k (0 .. $count - 1) {
        $ready->can_read(max(0, $deadline - time)) or last;
        my $client = $listener->accept or last;
        serve_connection($block, $client, "$MockDir/$k", $first + $k,
                         $deadline);
        push @kept, $client if defined $block->tcp_no_close;
    }
    close $listener;    # later connections are refused, not left hanging
    sleep 1 while @kept;    # until the runner (or the alarm) kills us
}

sub serve_connection {
    my ($block, $client, $file, $idx, $deadline) = @_;
    my ($no_read, $no_write);
    if (defined(my $how = $block->tcp_shutdown)) {
        $how =~ s/\s+//g;
        my $delay = parse_time(scalar $block->tcp_shutdown_delay);
        sleep $delay if $delay;
        shutdown $client, $how;
        ($no_read, $no_write) = ($how != 1, $how != 0);
    }

    open my $out, '>:raw', $file or die "cannot write $file: $!\n";
    $out->autoflush(1);
    my $buf = '';
    my $select = IO::Select->new($client);
    until ($no_read || request_complete($block, $buf, $idx)) {
        my $wait = min(TCP_IDLE, $deadline - time);
        last if $wait <= 0 || !$select->can_read($wait);
        my $n = sysread $client, $buf, 65536, length $buf;
        last unless $n;    # EOF or error
        print $out substr($buf, -$n);
    }
    close $out;

    my $delay = parse_time(scalar $block->tcp_reply_delay);
    sleep $delay if $delay;
    my $reply = $block->tcp_reply;
    if (defined $reply && !$no_write) {
        for my $chunk (ref $reply eq 'ARRAY' ? @$reply : $reply) {
            write_all($client, $chunk) or last;
        }
    }
    return if defined $block->tcp_no_close;

    # Send a FIN, then read what nginx may still send: closing a socket
    # with unread data resets the connection, which can lose the reply.
    shutdown $client, SHUT_WR;
    my $until = time + 0.5;
    while ((my $left = $until - time) > 0) {
        $select->can_read($left) or last;
        sysread($client, my $junk, 65536) or last;
    }
    close $client;
}

# Whether the mock backend has read enough: "--- tcp_query_len" bytes if
# given; else a whole HTTP request (headers, then a Content-Length or
# chunked body) if that is what arrives; else the length of the expected
# "--- tcp_query" if any; else any data at all, as upstream does.
sub request_complete {
    my ($block, $buf, $idx) = @_;
    return 0 unless length $buf;
    my $want = per_request($block, 'tcp_query_len', $idx);
    return length($buf) >= $want if defined $want;
    if ($buf =~ /\A[A-Z]+(?: |\z)/) {
        my $end = index $buf, "\r\n\r\n";
        return 0 if $end < 0;
        my $head = substr $buf, 0, $end;
        if ($head =~ /^Transfer-Encoding:[^\r\n]*chunked/mi) {
            my (undef, $stop) = dechunk(\$buf, $end + 4);
            return defined $stop;
        }
        my $len = $head =~ /^Content-Length:[ \t]*(\d+)/mi ? $1 : 0;
        return length($buf) >= $end + 4 + $len;
    }
    my $expected = per_request($block, 'tcp_query', $idx);
    return length($buf) >= length $expected if defined $expected;
    return 1;
}

sub write_all {
    my ($sock, $data) = @_;
    utf8::encode($data) if utf8::is_utf8($data);
    my $off = 0;
    while ($off < length $data) {
        my $n = syswrite $sock, $data, length($data) - $off, $off;
        return 0 unless defined $n;    # nginx closed the connection
        $off += $n;
    }
    return 1;
}

# After request $idx, the k-th mock connection of its client connection
# must have brought "--- tcp_query" (undef: no connection came).
sub check_tcp_query {
    my ($block, $k, $idx) = @_;
    my $name = $block->name;
    my $got;
    if (open my $fh, '<:raw', "$MockDir/$k") {
        local $/;
        $got = <$fh> // '';
    }
    if (defined $block->tcp_query) {
        is_str($got, per_request($block, 'tcp_query', $idx),
               "$name - tcp_query ok");
    }
    if (defined $block->tcp_query_len) {
        is(length($got // ''), per_request($block, 'tcp_query_len', $idx),
           "$name - TCP query length ok");
    }
}

# A section's value for request $idx: with eval, an array holds one value
# per request; anything else holds for every request.
sub per_request {
    my ($block, $section, $idx) = @_;
    my $value = $block->$section;
    $value = $value->[$idx] if ref $value eq 'ARRAY';
    $value =~ s/^\s+|\s+$//g if defined $value && $section eq 'tcp_query_len';
    return $value;
}

# Never leave a mock backend behind, also when a test file dies.
END {
    local $?;
    if ($MockPid) {
        kill 'KILL', $MockPid;
        waitpid $MockPid, 0;
    }
}

sub check_response {
    my ($block, $res, $idx, $round, $several) = @_;
    my $name = $block->name;
    $res //= { status => '', headers => {}, body => undef };

    my $code = defined $block->error_code
             ? expected($block, 'error_code', $idx, $several) : 200;
    is($res->{status}, $code, "$name - status code ok");

    if (defined $block->response_headers) {
        check_headers($block, $res,
                      expected($block, 'response_headers', $idx, $several));
    }

    $res->{body} = filter_body($block, $res->{body});

    my $when = "(repeated req $round, req $idx)";
    if (defined $block->response_body) {
        my $want = expected($block, 'response_body', $idx, $several);
        if (ref $want eq 'Regexp') {
            like($res->{body} // '', $want,
                 "$name - response_body - like $when");
        } else {
            is_str($res->{body}, $want,
                   "$name - response_body - response is expected $when");
        }
    } elsif (defined $block->response_body_like) {
        my $pat = expected($block, 'response_body_like', $idx, $several);
        (my $summary = $res->{body} // '') =~ s/\s+/ /g;
        $summary =~ s/^ | $//g;
        $summary = substr($summary, 0, 60) . '...' if length $summary > 60;
        like($res->{body} // '', qr/$pat/s,
             "$name - response_body_like - response is expected ($summary)");
    }
}

# "--- response_body_filters": as upstream, filter names ("uc", "lc") or,
# with eval, a code ref or an array of them, applied in order to the body
# before response_body / response_body_like compare it.
my %BODY_FILTERS = (uc => sub { uc $_[0] }, lc => sub { lc $_[0] });

sub filter_body {
    my ($block, $body) = @_;
    my $filters = $block->response_body_filters;
    return $body unless defined $filters && defined $body;
    my @f = ref $filters eq 'ARRAY' ? @$filters
          : ref $filters ? ($filters)
          : split ' ', $filters;
    for my $f (@f) {
        my $code = ref $f eq 'CODE' ? $f : $BODY_FILTERS{$f}
            // die $block->name . " - unknown response_body_filters \"$f\"\n";
        $body = $code->($body);
    }
    return $body;
}


# Like upstream's Test::LongString comparison (unless no_long_string() was
# called), a long mismatch shows where the strings part, not all of them.
sub is_str {
    my ($got, $want, $test) = @_;
    return is($got, $want, $test)
        if $NoLongString || !defined $got || !defined $want
           || length($got) + length($want) <= 2 * LONG_STRING;
    return 1 if ok($got eq $want, $test);
    my ($same) = ($got ^ $want) =~ /^(\0*)/;    # xor is 0 where they agree
    my $at = length $same;
    my $excerpt = sub {
        my $s = substr $_[0], max(0, $at - 20), 80;
        $s =~ s/([^ -~])/sprintf '\x%02x', ord $1/ge;
        return $s;
    };
    diag(sprintf "strings differ at offset %d (lengths: got %d, expected %d)\n"
                 . "     got: ...%s\nexpected: ...%s",
         $at, length $got, length $want, $excerpt->($got), $excerpt->($want));
    return 0;
}

# "Name: value" lines compare with the header's value (repeated headers
# joined by ", "); "!Name" requires the header to be absent.
sub check_headers {
    my ($block, $res, $spec) = @_;
    my $name = $block->name;
    for my $line (split /\n/, $spec) {
        $line =~ s/^\s+|\s+$//g;
        next unless length $line;
        if ($line =~ /^!\s*(.+)/) {
            ok(!exists $res->{headers}{lc $1},
               "$name - header $1 not present in the raw headers");
        } else {
            my ($key, $value) = split /\s*:\s*/, $line, 2;
            is($res->{headers}{lc $key} // '', $value // '',
               "$name - header $key ok");
        }
    }
}

# With several requests an expectation needs one value per request (an
# array, through eval), as upstream insists; else it is a single value.
sub expected {
    my ($block, $section, $idx, $several) = @_;
    my $value = $block->$section;
    return $value->[$idx] if ref $value eq 'ARRAY';
    die $block->name . " - with several requests, --- $section needs"
                     . " an array (use eval)\n" if $several;
    return $value;
}

sub check_error_log {
    my ($block, $round) = @_;
    my $name = $block->name;
    my @wanted = patterns(scalar $block->error_log);
    my @unwanted = patterns(scalar $block->no_error_log);
    my $lines = new_log_lines(@wanted || @unwanted
                              || defined $block->grep_error_log);

    check_grep($block, $lines, $round) if defined $block->grep_error_log;

    for my $pat (@wanted) {
        my $hit = grep { matches($_, $pat) } @$lines;
        ok($hit, qq{$name - pattern "$pat" }
                 . ($hit ? 'matches' : 'should match')
                 . qq{ a line in error.log (req $round)});
    }
    for my $pat (@unwanted) {
        my ($line) = grep { matches($_, $pat) } @$lines;
        chomp $line if defined $line;
        ok(!defined $line, defined $line
            ? qq{$name - pattern "$pat" should not match any line in error.log }
              . qq{but matches line "$line" (req $round)}
            : qq{$name - pattern "$pat" does not match a line in error.log}
              . qq{ (req $round)});
    }

    unexpected_alerts($block, $lines, "req $round");
}

# [alert], [crit] and [emerg] lines reveal bugs even when every test passes
# (upstream only warns of them): each fails the block unless one of its
# --- error_log patterns expects it.
sub unexpected_alerts {
    my ($block, $lines, $when) = @_;
    my @wanted = patterns(scalar $block->error_log);
    for my $line (grep { /\[(?:alert|crit|emerg)\]/ } @$lines) {
        next if grep { matches($line, $_) } @wanted;
        chomp(my $l = $line);
        fail($block->name . " - no unexpected [alert], [crit] or [emerg]"
             . " line in error.log ($when): \"$l\"");
    }
}

# The lines logged after the block's last check: a --- no_error_log
# pattern that matches one of them fails the block, and so does an
# unexpected alert.  Passing adds no test, so plans stay as upstream's.
sub check_late_lines {
    my ($block, $lines) = @_;
    for my $pat (patterns(scalar $block->no_error_log)) {
        my ($line) = grep { matches($_, $pat) } @$lines;
        next unless defined $line;
        chomp $line;
        fail($block->name . qq{ - pattern "$pat" should not match any line}
             . qq{ in error.log but matches line "$line" (after the last}
             . qq{ response)});
    }
    unexpected_alerts($block, $lines, 'after the last response');
}

# "--- grep_error_log": the part of each new log line that matches it (a
# substring, or with eval a qr//), one per line, must equal (or, if a qr//,
# match) "--- grep_error_log_out".  Arrays of either are indexed by round.
sub check_grep {
    my ($block, $lines, $round) = @_;
    my ($pat, $want) = map { ref $_ eq 'ARRAY' ? $_->[$round] : $_ }
                       scalar $block->grep_error_log,
                       scalar $block->grep_error_log_out;
    my $got = '';
    for my $line (@$lines) {
        if (ref $pat) {
            $got .= "$&\n" if $line =~ $pat && $& !~ /\n/;
        } elsif (index($line, $pat) >= 0) {
            $got .= "$pat\n";
        }
    }
    my $test = $block->name . " - grep_error_log_out (req $round)";
    return ref $want eq 'Regexp' ? like($got, $want, $test)
                                 : is_str($got, $want, $test);
}

# error_log / no_error_log: lines of substrings, or with eval a qr// or an
# array of strings and qr//s.
sub patterns {
    my ($value) = @_;
    return () unless defined $value;
    return @$value if ref $value eq 'ARRAY';
    return $value if ref $value;
    return grep { length } split /\n+/, $value;
}

sub matches {
    my ($line, $pat) = @_;
    return ref $pat ? $line =~ $pat : index($line, $pat) >= 0;
}

1;
