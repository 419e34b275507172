# Helpers for the node-role tests (tests/ctld-1*-node*.t): network
# namespaces on one bridge, guest-agent simulators, `dstack-ctld node`
# processes in those namespaces, and `wg show` read back as data.
#
# Everything made here is removed at exit, also after a failure: the
# processes started in our namespaces, the namespaces (and with them the
# veth pairs, the bridge and the WireGuard interfaces), the UAPI sockets.

package NodeTest;

use strict;
use warnings;

use Exporter 'import';
use File::Temp qw(tempdir);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

our @EXPORT = qw(node_world ns_add in_ns wg_dump wait_until start_agent
                 start_node read_text write_text agent_bin);

my $TAG = $$ % 100000;
my (@namespaces, @interfaces, @children);
my $bridge_ns;

# the 10.x subnet of the bridge, private to our namespaces
my $NET = sprintf '10.%d.%d', 200 + $TAG % 50, int($TAG / 50) % 250;

sub agent_bin {
    my $dir = $ENV{DSTACK_BIN} // 'build/bin';
    return "$dir/dstack-agent-sim";
}

sub read_text {
    my ($path) = @_;
    open my $fh, '<', $path or return undef;
    local $/;
    return scalar <$fh>;
}

sub write_text {
    my ($path, $text) = @_;
    open my $fh, '>', $path or die "$path: $!";
    print $fh $text;
    close $fh or die "$path: $!";
}

sub sh {
    my ($cmd) = @_;
    system($cmd) == 0 or die "failed: $cmd\n";
}

# the bridge; or why the test cannot run here (no root, TUN or tools)
sub node_world {
    return 'needs root (network namespaces)' if $> != 0;
    return '/dev/net/tun is missing' unless -c '/dev/net/tun';
    for my $tool (qw(ip wg wireguard-go ping)) {
        return "$tool is missing (make deps)"
            if system("command -v $tool >/dev/null") != 0;
    }
    $bridge_ns = "dvbr$TAG";
    return 'cannot create network namespaces'
        if system("ip netns add $bridge_ns 2>/dev/null") != 0;
    push @namespaces, $bridge_ns;
    sh("ip -n $bridge_ns link add br0 type bridge");
    sh("ip -n $bridge_ns link set br0 up");
    return undef;
}

# a namespace on the bridge with address $NET.$host/24; returns
# { ns, ip, ifname (for WireGuard, unique across namespaces) }
sub ns_add {
    my ($name, $host) = @_;
    my $ns = "dvn$name$TAG";
    sh("ip netns add $ns");
    push @namespaces, $ns;
    sh("ip link add dvv$name$TAG netns $ns type veth peer name p$name"
       . " netns $bridge_ns");
    sh("ip -n $bridge_ns link set p$name master br0 up");
    sh("ip -n $ns link set lo up");
    sh("ip -n $ns address add $NET.$host/24 dev dvv$name$TAG");
    sh("ip -n $ns link set dvv$name$TAG up");
    my $if = "wn$name$TAG";
    push @interfaces, $if;
    return { ns => $ns, ip => "$NET.$host", ifname => $if, name => $name };
}

# runs a command in a namespace: (exit status, stdout+stderr)
sub in_ns {
    my ($ns, @cmd) = @_;
    my $pid = open(my $out, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        exec 'ip', 'netns', 'exec', $ns, @cmd or POSIX::_exit(127);
    }
    local $/;
    my $text = <$out> // '';
    close $out;
    return ($?, $text);
}

# `wg show IF dump` as { public_key, port, peers => { key => {...} } }
sub wg_dump {
    my ($ns, $if) = @_;
    my ($st, $out) = in_ns($ns, 'wg', 'show', $if, 'dump');
    return undef if $st != 0;
    my ($dev, @peers) = split /\n/, $out;
    my %w;
    @w{qw(private_key public_key port fwmark)} = split /\t/, $dev;
    delete $w{private_key};
    $w{peers} = {};
    for (@peers) {
        my %p;
        @p{qw(key psk endpoint allowed handshake rx tx keepalive)} = split /\t/;
        delete $p{psk};
        $w{peers}{$p{key}} = \%p;
    }
    return \%w;
}

# polls $cond every 0.1 s for up to $timeout seconds
sub wait_until {
    my ($timeout, $cond) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        return 1 if $cond->();
        sleep 0.1;
    }
    return $cond->() ? 1 : 0;
}

sub spawn {
    my ($log, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    push @children, $pid;
    return $pid;
}

# a guest-agent simulator on $sock for app $app (in the root namespace: a
# unix socket is reachable from every network namespace)
sub start_agent {
    my ($dir, $name, $app) = @_;
    my $sock = "$dir/agent-$name.sock";
    spawn("$dir/agent-$name.log", agent_bin(), '--socket', $sock,
          '--ca-dir', "$dir/ca", '--app-id', $app, '--app-name', "app-$name");
    wait_until(10, sub { -S $sock }) or die "agent simulator $name did not start";
    return $sock;
}

# `dstack-ctld node` in namespace $where->{ns}; the handle stops it.  Names
# go to the hosts block (--names hosts) unless @args say otherwise: these
# namespaces have no resolv.conf of their own, and a DNS-mode node would
# point the host's /etc/resolv.conf at itself
sub start_node {
    my ($dir, $where, @args) = @_;
    my $bin = ($ENV{DSTACK_BIN} // 'build/bin') . '/dstack-ctld';
    my $log = "$dir/node-$where->{name}.log";
    my $self = bless { log => $log, where => $where }, 'NodeTest::Node';
    $self->{pid} = spawn($log, 'ip', 'netns', 'exec', $where->{ns}, $bin, 'node',
                         '--interface', $where->{ifname}, '--backend', 'uapi',
                         '--names', 'hosts', @args);
    return $self;
}

package NodeTest::Node;

use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

sub log_text { NodeTest::read_text($_[0]{log}) // '' }

sub running {
    my ($self) = @_;
    return 0 unless $self->{pid};
    if (waitpid($self->{pid}, WNOHANG) == $self->{pid}) {
        $self->{status} = $?;
        delete $self->{pid};
        return 0;
    }
    return 1;
}

# waits up to $timeout s for the process to end; its exit code, or undef
sub wait_exit {
    my ($self, $timeout) = @_;
    NodeTest::wait_until($timeout, sub { !$self->running });
    return defined $self->{status} && !$self->{pid} ? $self->{status} >> 8 : undef;
}

# SIGTERM and wait: the exit code, or undef when it did not stop in 10 s
sub stop {
    my ($self) = @_;
    return $self->{status} >> 8 unless $self->{pid};
    kill 'TERM', $self->{pid};
    my $code = $self->wait_exit(10);
    $self->kill9 unless defined $code;
    return $code;
}

sub kill9 {
    my ($self) = @_;
    return unless $self->{pid};
    kill 'KILL', $self->{pid};
    waitpid $self->{pid}, 0;
    delete $self->{pid};
}

package NodeTest;

END {
    my $status = $?;
    # our children first (nodes, agents), then whatever runs in our
    # namespaces (wireguard-go daemonizes), then the namespaces
    kill 'TERM', @children;
    for my $ns (@namespaces) {
        my @pids = split ' ', `ip netns pids $ns 2>/dev/null`;
        kill 'TERM', @pids if @pids;
    }
    sleep 0.3;
    for my $ns (@namespaces) {
        my @pids = split ' ', `ip netns pids $ns 2>/dev/null`;
        kill 'KILL', @pids if @pids;
    }
    kill 'KILL', @children;
    waitpid $_, 0 for @children;
    system("ip netns del $_ 2>/dev/null") for reverse @namespaces;
    unlink map { "/var/run/wireguard/$_.sock" } @interfaces;
    $? = $status;
}

1;
