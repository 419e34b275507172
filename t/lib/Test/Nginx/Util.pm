package Test::Nginx::Util;

# The server half of our Test::Nginx::Socket work-alike (see Socket.pm):
# the knobs a test file sets, the server root, nginx.conf, and starting and
# stopping nginx.  Names, defaults and the generated configuration follow
# upstream's Test::Nginx::Util.

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Spec;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

# Helpers for test files, with upstream's names and prototypes.
our @EXPORT = qw(
    repeat_each no_shuffle log_level master_on master_off workers timeout
    no_long_string no_root_location env_to_nginx add_block_preprocessor
    server_port server_root html_dir
);

# What Socket.pm needs to run a block.
our @EXPORT_OK = qw(
    $RepeatEach $NoShuffle $NoLongString @BlockPreprocessors
    prepare_server_root write_user_files write_config
    run_nginx start_nginx stop_nginx new_log_lines parse_time
);

our $RepeatEach   = 1;
our $NoShuffle    = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $NoLongString = 0;
our @BlockPreprocessors;

my $LogLevel     = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
my $Timeout      = $ENV{TEST_NGINX_TIMEOUT} || 3;
my $Master       = 'off';
my $Workers      = 1;
my $RootLocation = 1;
my @EnvToNginx;

# nginx's own start-up can take a while: it retries a busy port for 2.5 s.
use constant START_TIMEOUT => 10;

my $Port      = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
my $ServRoot  = File::Spec->rel2abs($ENV{TEST_NGINX_SERVROOT} || 't/servroot');
my $HtmlDir   = "$ServRoot/html";
my $LogDir    = "$ServRoot/logs";
my $ConfFile  = "$ServRoot/conf/nginx.conf";
my $PidFile   = "$LogDir/nginx.pid";
my $ErrorLog  = "$LogDir/error.log";

# Debian's nginx is built with --error-log-path=stderr, so what it logs
# before it has read our error_log directive (a malformed directive, say)
# goes to stderr.  We keep that in a file and read it as part of the error
# log, which is where an upstream-built nginx would have put it.
my $StderrLog = "$LogDir/stderr.log";

# Config sections may use these as $TEST_NGINX_*, as with upstream.  Like
# upstream, we leave TEST_NGINX_HTML_DIR to the test files, which set it
# from html_dir() when they use it.
$ENV{TEST_NGINX_SERVER_PORT} ||= $Port;
$ENV{TEST_NGINX_SERVER_ROOT} = $ENV{TEST_NGINX_SERVROOT} = $ServRoot;

sub repeat_each (@)      { $RepeatEach = shift if @_; $RepeatEach }
sub log_level (@)        { $LogLevel = shift if @_; $LogLevel }
sub workers (@)          { $Workers = shift if @_; $Workers }
sub timeout (@)          { $Timeout = shift if @_; $Timeout }
sub no_shuffle ()        { $NoShuffle = 1 }
sub no_long_string ()    { $NoLongString = 1 }
sub master_on ()         { $Master = 'on' }
sub master_off ()        { $Master = 'off' }
sub no_root_location ()  { $RootLocation = 0 }
sub env_to_nginx (@)     { push @EnvToNginx, @_ }
sub server_port ()       { $Port }
sub server_root ()       { $ServRoot }
sub html_dir ()          { $HtmlDir }

# As upstream, the preprocessor added last runs first.
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }

# "2", "1.5s" or "500ms" in seconds, as upstream's --- timeout accepts.
sub parse_time {
    my ($t) = @_;
    return undef unless defined $t;
    $t =~ /^\s*(\d*\.?\d+)\s*(ms|s)?\s*$/ or die "bad time value \"$t\"\n";
    return ($2 // '') eq 'ms' ? $1 / 1000 : $1;
}

# Every $TEST_NGINX_FOO becomes that environment variable, as upstream does;
# an unset one is a mistake in the test file.
sub expand_env {
    my ($text, $name) = @_;
    return '' unless defined $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        $ENV{$1} // die "$name - environment variable $1 is not set\n"
    }ge;
    return $text;
}

my %LogOffset;

# Fresh conf/, html/ and logs/ for every block, so that each block's error
# log starts empty.  Only what we create is removed, in case
# TEST_NGINX_SERVROOT points to a directory that holds other things.
sub prepare_server_root {
    remove_tree("$ServRoot/conf", $HtmlDir, $LogDir, glob("$ServRoot/*_temp"));
    make_path("$ServRoot/conf", $HtmlDir, $LogDir);
    write_file("$HtmlDir/index.html", "<html><body>It works!</body></html>");
    %LogOffset = ();
}

# "--- user_files": ">>> path" lines, each followed by the file's content
# (with eval: an array of [path, content]).  Relative paths are under html/.
sub write_user_files {
    my ($block) = @_;
    my $spec = $block->user_files // return;
    my @files = ref $spec ? @$spec
              : map { [ /\A(\S+)[^\n]*\n?(.*)\z/s ] }
                grep { length } split /^>>> /m, $spec;
    for my $file (@files) {
        my ($path, $body) = @$file;
        $path = "$HtmlDir/$path" unless $path =~ m{^/};
        make_path(dirname($path));
        write_file($path, expand_env($body, $block->name));
    }
}

sub write_config {
    my ($block) = @_;
    my $name   = $block->name;
    my $main   = expand_env(scalar $block->main_config, $name);
    my $http   = expand_env(scalar $block->http_config, $name);
    my $server = expand_env(scalar $block->config, $name);
    my $level  = $block->log_level || $LogLevel;

    my $modules = join '', map { "load_module $_;\n" }
                           split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
    my $env = join '', map { /\s/ ? "env '$_';\n" : "env $_;\n" } @EnvToNginx;

    # As root, keep workers (with master_on) able to use the server root.
    my $user = $> == 0 ? "user root;\n" : '';

    # Debian's compiled-in temp paths under /var/lib/nginx may not exist.
    my $temp = join '', map { "    ${_}_temp_path $ServRoot/${_}_temp;\n" }
                        qw(client_body proxy fastcgi uwsgi scgi);

    my $root = !$RootLocation ? '' : <<"_EOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_

    write_file($ConfFile, <<"_EOC_");
${modules}worker_processes $Workers;
daemon on;
master_process $Master;
error_log $ErrorLog $level;
pid $PidFile;
$user$env
$main

http {
    access_log $LogDir/access.log;
    default_type text/plain;
    keepalive_timeout 68;
$temp
$http

    server {
        listen $Port;
        server_name localhost;
        client_max_body_size 30M;

$server

$root    }
}

events {
    accept_mutex off;
    worker_connections 64;
}
_EOC_
}

# Runs nginx on our configuration and returns its wait status.  nginx
# daemonizes once its listening sockets are open; on success we also wait
# for the daemon's pid file, through which stop_nginx() finds it.
sub run_nginx {
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        my $bin = nginx_binary();
        open STDOUT, '>', '/dev/null';
        open STDERR, '>>', $StderrLog;
        exec($bin, '-p', "$ServRoot/", '-c', $ConfFile) or do {
            print STDERR "cannot run $bin: $!\n";
            POSIX::_exit(127);    # not exit(): no END blocks in this copy
        };
    }
    my $deadline = time + START_TIMEOUT;
    while (waitpid($pid, WNOHANG) == 0) {
        if (time > $deadline) {
            kill 'KILL', $pid;
            waitpid $pid, 0;
            last;
        }
        sleep 0.01;
    }
    my $status = $?;
    wait_until(sub { -s $PidFile }) if $status == 0;
    return $status;
}

# Returns 1 once nginx accepts connections, else (0, why not).
sub start_nginx {
    my $status = run_nginx();
    if ($status != 0) {
        return (0, sprintf "nginx failed (exit code %d, signal %d):\n%s",
                           $status >> 8, $status & 127, slurp($StderrLog));
    }
    return (0, "nginx did not write $PidFile") unless -s $PidFile;
    wait_until(sub {
        IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $Port)
    }) or return (0, "nginx does not accept connections on port $Port");
    return 1;
}

# Stops the nginx of our server root, possibly one left over from an
# interrupted run.  QUIT lets it finish writing its logs; if it hangs, KILL
# its process group (the daemon leads its own session, workers included).
sub stop_nginx {
    my $pid = read_pid() // return;
    return unless is_our_nginx($pid);
    kill 'QUIT', $pid;
    return if wait_until(sub { !alive($pid) });
    kill 'KILL', -$pid, $pid;
    wait_until(sub { !alive($pid) });
}

# The error-log lines written since the previous call (within this block).
# $settle: give nginx time to finish logging the request first, as it logs
# the log phase (and debug lines) after sending the response.
sub new_log_lines {
    my ($settle) = @_;
    sleep 0.05 if $settle;
    my @lines;
    for my $file ($ErrorLog, $StderrLog) {
        open my $fh, '<', $file or next;
        seek $fh, $LogOffset{$file} // 0, 0;
        push @lines, <$fh>;
        $LogOffset{$file} = tell $fh;
    }
    return \@lines;
}

sub nginx_binary {
    return $ENV{TEST_NGINX_BINARY} if $ENV{TEST_NGINX_BINARY};
    for my $dir (File::Spec->path, '/usr/sbin') {
        return "$dir/nginx" if -x "$dir/nginx";
    }
    die "nginx is neither in PATH nor in /usr/sbin: set TEST_NGINX_BINARY\n";
}

sub read_pid {
    open my $fh, '<', $PidFile or return undef;
    my $line = <$fh> // '';
    return $line =~ /^(\d+)/ ? $1 : undef;
}

# A stale pid file must not make us signal an unrelated process: the pid
# must be an nginx started on our server root.
sub is_our_nginx {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/cmdline" or return 0;
    my $cmdline = do { local $/; <$fh> } // '';
    return alive($pid) && index($cmdline, "$ServRoot/") >= 0;
}

# kill(0) also succeeds on a zombie, and the daemon's reaper is whatever
# runs as PID 1, which in a container may never reap it.
sub alive {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$fh> // return 0;
    return $stat !~ /^\d+ \(.*\) [ZX] /s;
}

# Polls $cond until it holds (returns true) or the timeout passes.
sub wait_until {
    my ($cond) = @_;
    my $deadline = time + $Timeout;
    until ($cond->()) {
        return 0 if time > $deadline;
        sleep 0.01;
    }
    return 1;
}

sub write_file {
    my ($path, $text) = @_;
    open my $fh, '>:raw', $path or die "cannot write $path: $!\n";
    print $fh $text;
    close $fh or die "cannot write $path: $!\n";
}

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return <$fh> // '';
}

# Never leave nginx running, also when a test file dies.  A signal would
# skip END blocks, so INT and TERM become an exit.
$SIG{$_} //= sub { exit 1 } for qw(INT TERM);
END {
    local $?;
    stop_nginx();
}

1;
