# Helpers for the dstack-ctld tests (tests/ctld-*.t): start the real daemon
# on a temporary data directory and a free loopback port, talk to it with
# HTTP::Tiny, look into its SQLite file with the sqlite3 CLI.

package CtldTest;

use strict;
use warnings;

use Exporter 'import';
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

our @EXPORT = qw(ctld_bin ctld_asan_bin start_server free_port req register
                 join_node wg_key sqlite_rows json_of raw_http server_refused
                 in_child child_result);

my $JSON = JSON::PP->new->utf8->canonical;

# a server that refuses a request may close before we finish writing it
$SIG{PIPE} = "IGNORE";

sub ctld_bin {
    my $dir = $ENV{DSTACK_BIN} // 'build/bin';
    return "$dir/dstack-ctld";
}

# the daemon built with ASan and UBSan (made on first use, `make ctld-asan`)
sub ctld_asan_bin {
    my $build = ctld_bin() =~ s{/bin/dstack-ctld\z}{}r;
    system('make', '-s', "BUILD=$build", 'ctld-asan') == 0
        or die "make ctld-asan failed";
    return "$build/asan/dstack-ctld";
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# a random 32-byte WireGuard public key, base64: from the kernel, not
# rand(), whose seeds forked clients may share
sub wg_key {
    open my $fh, '<:raw', '/dev/urandom' or die "/dev/urandom: $!";
    read($fh, my $raw, 32) == 32 or die "/dev/urandom: short read";
    return encode_base64($raw, '');
}

# start_server(args => [...], dir => existing data dir, port => N,
#              bin => another dstack-ctld, data => data dir elsewhere,
#              wrap => [command the server is started under])
sub start_server {
    my (%o) = @_;
    my $srv = bless {
        dir  => $o{dir} // tempdir('ctld-XXXXXX', TMPDIR => 1, CLEANUP => 1),
        port => $o{port} // free_port(),
        args => $o{args} // [],
        unix => $o{unix},
        bin  => $o{bin} // ctld_bin(),
        wrap => $o{wrap} // [],
    }, 'CtldTest::Server';
    $srv->{data} = $o{data} // "$srv->{dir}/data";
    $srv->{log} = "$srv->{dir}/server.log";
    $srv->{listen} = $srv->{unix} ? "unix:$srv->{unix}" : "127.0.0.1:$srv->{port}";
    $srv->{http} = HTTP::Tiny->new(timeout => 30, keep_alive => 1);
    $srv->start;
    return $srv;
}

sub json_of {
    my ($text) = @_;
    my $v = eval { $JSON->decode($text // '') };
    return $v;
}

# req($srv, METHOD, PATH, app => ID, headers => {...}, body => STR|REF)
sub req {
    my ($srv, $method, $path, %o) = @_;
    my %h = %{ $o{headers} // {} };
    $h{'x-dstack-app-id'} = $o{app} if defined $o{app};
    $h{'authorization'} = "Bearer $o{token}" if defined $o{token};
    my $body = $o{body};
    $body = $JSON->encode($body) if ref $body;
    my $http = $o{http} // $srv->{http};
    my $res = $http->request($method, "http://127.0.0.1:$srv->{port}$path",
                             { headers => \%h, defined $body ? (content => $body) : () });
    $res->{json} = json_of($res->{content});
    return $res;
}

# a pre-auth key for (app, instance, name)
sub register {
    my ($srv, $app, $instance, $name) = @_;
    my $q = "instance_id=$instance" . (defined $name ? "&node_name=$name" : '');
    my $res = req($srv, 'GET', "/api/register?$q", app => $app);
    die "register: $res->{status} $res->{content}" unless $res->{status} == 200;
    return $res->{json}{pre_auth_key};
}

# in_child(CODE): runs CODE in a child process (a long poll that parks);
# child_result() waits for it and gives the value CODE returned (JSON)
sub in_child {
    my ($code) = @_;
    pipe(my $r, my $w) or die;
    my $pid = fork // die;
    if ($pid == 0) {
        close $r;
        print $w $JSON->encode([$code->()]);
        close $w;
        POSIX::_exit(0);
    }
    close $w;
    return { pid => $pid, fh => $r };
}

sub child_result {
    my ($c) = @_;
    local $/;
    my $fh = $c->{fh};
    my $text = <$fh>;
    waitpid $c->{pid}, 0;
    my $v = json_of($text);
    return $v ? $v->[0] : undef;
}

# register + join in one go; returns the join response
sub join_node {
    my ($srv, $app, $instance, $name, %extra) = @_;
    my $key = register($srv, $app, $instance, $name);
    return req($srv, 'POST', '/api/v1/join', app => $app,
               body => { pre_auth_key => $key, public_key => wg_key(), %extra });
}

# a server that must refuse to start: (exit status, what it printed); one
# that starts anyway is stopped after a while (status 124)
sub server_refused {
    my (@args) = @_;
    my $dir = tempdir('ctld-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $cmd = join ' ', map { "'$_'" } 'timeout', '5', ctld_bin(), 'server', '--listen',
        '127.0.0.1:' . free_port(), '--data-dir', "$dir/data", @args;
    my $out = `$cmd 2>&1 </dev/null`;
    return ($? >> 8, $out);
}

sub sqlite_rows {
    my ($db, $sql) = @_;
    open my $fh, '-|', 'sqlite3', '-separator', '|', $db, $sql
        or die "sqlite3: $!";
    chomp(my @rows = <$fh>);
    close $fh;
    return @rows;
}

# sends raw bytes, returns (status, body) of the answer
sub raw_http {
    my ($port, $bytes) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 10) or die "connect: $!";
    # a server refusing junk may stop reading it: never wait on it for long
    my $answer = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 5;
        print $s $bytes;
        shutdown $s, 1;
        local $/;
        $answer = <$s> // '';
        alarm 0;
    };
    alarm 0;
    close $s;
    my ($status) = $answer =~ m{^HTTP/1\.\d (\d{3})};
    my ($body) = $answer =~ /\r\n\r\n(.*)\z/s;
    return ($status // 0, $body // '', $answer);
}

package CtldTest::Server;

use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

sub start {
    my ($self) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', $self->{log} or die;
        open STDERR, '>>', $self->{log} or die;
        exec @{ $self->{wrap} }, $self->{bin}, 'server', '--listen', $self->{listen},
             '--data-dir', $self->{data}, @{ $self->{args} }
            or die "exec: $!";
    }
    $self->{pid} = $pid;
    my $deadline = time + 15;
    while (time < $deadline) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pid};
            die "dstack-ctld exited at start:\n" . $self->log_text;
        }
        return $self if $self->healthy;
        sleep 0.02;
    }
    die "dstack-ctld did not come up:\n" . $self->log_text;
}

sub healthy {
    my ($self) = @_;
    if ($self->{unix}) {
        return -S $self->{unix} && system('curl', '-sf', '-o', '/dev/null',
            '--unix-socket', $self->{unix}, 'http://localhost/health') == 0;
    }
    my $res = HTTP::Tiny->new(timeout => 1)->get("http://127.0.0.1:$self->{port}/health");
    return $res->{status} == 200;
}

sub log_text {
    my ($self) = @_;
    open my $fh, '<', $self->{log} or return '';
    local $/;
    return <$fh>;
}

sub db { "$_[0]{data}/ctld.db" }

sub signal_and_wait {
    my ($self, $sig) = @_;
    return 0 unless $self->{pid};
    kill $sig, $self->{pid};
    waitpid $self->{pid}, 0;
    my $status = $?;
    delete $self->{pid};
    $self->{http} = HTTP::Tiny->new(timeout => 30, keep_alive => 1);
    return $status;
}

sub stop    { $_[0]->signal_and_wait('TERM') }
sub kill9   { $_[0]->signal_and_wait('KILL') }
sub restart { my ($self) = @_; $self->stop; $self->start }

sub cli {
    my ($self, @args) = @_;
    my $cmd = join ' ', map { "'$_'" } CtldTest::ctld_bin(), @args,
        '--listen', $self->{listen}, '--data-dir', $self->{data};
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

sub DESTROY {
    my ($self) = @_;
    local $?;
    $self->signal_and_wait('KILL') if $self->{pid};
}

1;
