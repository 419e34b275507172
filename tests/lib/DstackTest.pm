# Helpers shared by the tests in tests/ that run nginx themselves: each test
# gets one nginx process (master_process off, daemonized) whose whole state
# lives in a scratch directory, so tests can run side by side.

package DstackTest;

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET;
use IO::Socket::UNIX;
use Time::HiRes qw(sleep);

our @EXPORT_OK = qw(free_port wait_for_port wait_for_socket read_file slurp
                    write_file read_lines load_modules nginx_conf
                    start_nginx stop_nginx error_log eventually);

# Waits are polled this often, for at most this many rounds (5 s).
my $POLL = 0.1;
my $ROUNDS = 50;

# A TCP port nothing listens on right now; the caller binds it soon after.
sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, ReuseAddr => 1)
        or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

# True once something accepts connections on 127.0.0.1:$port.
sub wait_for_port {
    my ($port) = @_;
    return poll(sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") });
}

# True once something accepts connections on the unix socket $path.
sub wait_for_socket {
    my ($path) = @_;
    return poll(sub { IO::Socket::UNIX->new(Peer => $path) });
}

sub poll {
    my ($ready) = @_;
    for (1 .. $ROUNDS) {
        return 1 if $ready->();
        sleep $POLL;
    }
    return 0;
}

# true once $check is, tried every 0.2 s for $seconds (default 10)
sub eventually {
    my ($check, $seconds) = @_;
    for (1 .. ($seconds // 10) * 5) {
        return 1 if $check->();
        sleep 0.2;
    }
    return 0;
}

sub write_file {
    my ($path, $text) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print $fh $text;
    close $fh or die "$path: $!";
}

sub read_file {
    my ($path) = @_;
    open my $fh, '<', $path or die "$path: $!";
    local $/;
    return scalar <$fh>;
}

# a file's text, '' when it cannot be read (yet)
sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar <$fh>;
}

sub read_lines {
    my ($path) = @_;
    open my $fh, '<', $path or die "$path: $!";
    return <$fh>;
}

# "load_module" lines for every module in TEST_NGINX_LOAD_MODULES.
sub load_modules {
    return join '', map { "load_module $_;\n" }
                    split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
}

# A complete nginx.conf around an http {} body, with the pid, logs and
# temporary files in $dir.  Options: main (text before http {}, such as a
# stream {} block) and log_level (of error.log; debug unless given).
sub nginx_conf {
    my ($dir, $http, %opt) = @_;
    my $main = $opt{main} // '';
    my $level = $opt{log_level} // 'debug';

    return load_modules() . <<"CONF";
daemon on;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log $level;
events { worker_connections 64; }
$main
http {
    client_body_temp_path $dir;
    proxy_temp_path $dir;
    fastcgi_temp_path $dir;
    uwsgi_temp_path $dir;
    scgi_temp_path $dir;

$http
}
CONF
}

# Starts nginx with nginx_conf($dir, $http, %opt) and returns a handle for
# stop_nginx and error_log.  Dies if nginx refuses the configuration.
sub start_nginx {
    my ($dir, $http, %opt) = @_;
    my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';

    write_file("$dir/nginx.conf", nginx_conf($dir, $http, %opt));
    system($nginx, '-p', $dir, '-c', "$dir/nginx.conf") == 0
        or die "nginx did not start\n";

    # the daemonized process writes its pid file after the launcher exits
    poll(sub { -s "$dir/nginx.pid" }) or die "nginx wrote no pid file\n";
    my ($pid) = read_file("$dir/nginx.pid") =~ /(\d+)/;
    return { dir => $dir, pid => $pid };
}

# Stops nginx at once and waits (bounded) until the process is gone.
sub stop_nginx {
    my ($ngx) = @_;
    kill 'TERM', $ngx->{pid} or return;
    poll(sub { !running($ngx->{pid}) }) or kill 'KILL', $ngx->{pid};
}

# The daemon is not our child: once it exits it may linger as a zombie
# until whoever adopted it reaps it, and that counts as gone.
sub running {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$fh> // '';
    return $stat !~ /^\d+ \(.*\) Z/s;
}

sub error_log {
    my ($ngx) = @_;
    return read_lines("$ngx->{dir}/error.log");
}

1;
