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
# response_body_like, error_log, no_error_log, grep_error_log,
# grep_error_log_out, timeout, wait, user_files, log_level, must_die.
# Upstream sections missing here make the test file die (@UNSUPPORTED).
#
# Known differences from upstream:
#  - --- config is required (upstream reuses the previous block's nginx
#    without one); load_module lines come first in nginx.conf.
#  - --- timeout bounds a whole connection, not each wait for data.
#  - no_error_log reports one failure per pattern, not one per line.
#  - "!Name" in response_headers ignores the case of the header name.
#  - Requests given as arrays of packets, and the mtime that user_files
#    may give after a path, are not supported.
#  - nginx's stderr counts as part of the error log (see Util.pm), and a
#    block whose nginx fails to start fails instead of bailing out.

use strict;
use warnings;

use Test::Base;    # block parser and filters; also Test::More's functions
use parent 'Exporter';
use IO::Select;
use IO::Socket::INET;
use List::Util qw(max min shuffle);
use Scalar::Util qw(looks_like_number);
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

# Better to refuse a test than to pass it without checking what it asks.
my @UNSUPPORTED = qw(
    response_body_unlike response_body_filters response_headers_like
    raw_response_headers_like raw_response_headers_unlike error_code_like
    access_log no_access_log shutdown_error_log no_shutdown_error_log
    post_main_config server_name server_addr_for_client http2 http3 curl
    abort ignore_response shutdown raw_request_middle_delay error_log_file
    skip_nginx skip_nginx2 skip_eval skip_openssl todo
    tcp_listen tcp_reply udp_listen udp_reply stap
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
    die "$name - --- grep_error_log and --- grep_error_log_out go together\n"
        if defined($block->grep_error_log)
           != defined($block->grep_error_log_out);
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
        for my $res (exchange($block->name, $conn, $timeout)) {
            check_response($block, $res, $idx++, $round, $several);
            sleep $wait if $wait;
            check_error_log($block, $round);
        }
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

    # Like upstream, point out [alert], [crit] and [emerg] lines no check
    # expects: they tend to reveal bugs even when every test passes.
    for my $line (grep { /\[(?:alert|crit|emerg)\]/ } @$lines) {
        diag("WARNING: $name - $line")
            unless grep { matches($line, $_) } @wanted, @unwanted;
    }
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
