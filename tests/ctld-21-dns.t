# Names by DNS (tests/vpc/vpc.sh, its own namespaces): each node's daemon
# answers dstack.internal from its peer set on 127.0.0.153:53 and points
# the namespace's resolv.conf (a bind mount of /etc/netns/<ns>/resolv.conf)
# at itself.  Checked with glibc (getent) and dig: the names, a node that
# joins, re-joins and is removed, NXDOMAIN, other names forwarded to a
# real resolver (dnsmasq, on the gateway's namespace), a truncated answer
# fetched again over TCP, malformed queries, TCP clients that trickle
# bytes, a resolver's answer with another question dropped, each forwarded
# query from its own port, resolv.conf restored on stop, and --names hosts.
#
#   flock /tmp/dstack-ns.lock prove tests/ctld-21-dns.t

use strict;
use warnings;

use Test::More;

use lib 'tests/lib';
use DstackTest qw(write_file);
use VpcTest qw(out in vpn_address eventually pid_of slurp);

plan skip_all => 'needs root' if $>;
plan skip_all => 'needs /dev/net/tun' unless -c '/dev/net/tun';
for my $tool (qw(dig dnsmasq)) {
    plan skip_all => "needs $tool (make deps)" if system("command -v $tool >/dev/null");
}

my $vpc = 'tests/vpc/vpc.sh';
my $DIR = '/tmp/dv-dns';
$ENV{DV_DIR} = $DIR;
$ENV{DV_PREFIX} = 'dd';
$ENV{NODES} = 'n1 n2';
delete $ENV{VPC_NAMES};
my $bin = $ENV{DSTACK_BIN} // 'build/bin';
my $DNS = '127.0.0.153';
my $RESOLV = '/etc/netns/dd-n1/resolv.conf';
my ($dnsmasq_pid, $liar_pid);

END {
    local $?;
    kill "TERM", $liar_pid if $liar_pid;
    if ($dnsmasq_pid) {
        kill 'TERM', $dnsmasq_pid;
        waitpid $dnsmasq_pid, 0;
    }
    system "bash $vpc down >/dev/null 2>&1";
}

system("bash $vpc up") == 0 or BAIL_OUT('the VPC did not come up');
my %addr = map { $_ => vpn_address($_) } qw(n1 n2);

# --- the CVM's resolver points at the daemon

my $ours = slurp($RESOLV);
like($ours, qr/^# dstack-ctld:/, "n1's resolv.conf is the daemon's");
like($ours, qr/^nameserver \Q$DNS\E$/m, '  naming only its DNS server');
is(() = $ours =~ /^nameserver/mg, 1, '  and no other resolver');
like(slurp("$DIR/n1/ctld.log"), qr/cannot be renamed over \(Device or resource busy\): rewriting it in place/,
     '  rewritten in place: under ip netns exec it is a bind mount');

like(out('n1', 'getent hosts n2.dstack.internal'),
     qr/^\Q$addr{n2}\E\s+n2\.dstack\.internal$/m,
     'getent hosts n2.dstack.internal on n1: by the daemon');
like(out('n1', 'getent hosts n1.dstack.internal'), qr/^\Q$addr{n1}\E\s/m,
     '  the node itself');
like(out('n1', 'getent hosts vpc-server.dstack.internal'), qr/^100\.128\.0\.1\s/m,
     '  the hub');
like(out('srv', 'getent hosts n1.dstack.internal'), qr/^\Q$addr{n1}\E\s/m,
     'the hub answers names too');

is(dig('n1', 'n2.dstack.internal'), $addr{n2}, "dig \@$DNS n2.dstack.internal");
is(dig('n1', 'N2.Dstack.Internal'), $addr{n2}, '  any case');
is(dig('n1', '+tcp n2.dstack.internal'), $addr{n2}, '  over TCP');
my $full = out('n1', "dig \@$DNS n2.dstack.internal A");
like($full, qr/flags: qr aa rd ra;/, '  an authoritative answer');
like($full, qr/ANSWER: 1,/, '  one record');

my $aaaa = out('n1', "dig \@$DNS n2.dstack.internal AAAA");
like($aaaa, qr/status: NOERROR.*ANSWER: 0, AUTHORITY: 1/s,
     'AAAA of a known name: NOERROR, no data');
like($aaaa, qr/^dstack\.internal\.\s+\d+\s+IN\s+SOA\s/m, '  with the SOA');
my $nx = out('n1', "dig \@$DNS nope.dstack.internal");
like($nx, qr/status: NXDOMAIN.*AUTHORITY: 1/s, 'an unknown name: NXDOMAIN');
like($nx, qr/^dstack\.internal\.\s+\d+\s+IN\s+SOA\s/m, '  with the SOA');
like(out('n1', "dig \@$DNS a.n2.dstack.internal"), qr/status: NXDOMAIN/,
     'a name below a node: NXDOMAIN');
like(out('n1', "dig \@$DNS n2.dstack.internal ANY"), qr/ANSWER: 1,.*\sIN\s+A\s+\Q$addr{n2}\E/s,
     'ANY: the one A record, nothing more');
like(out('n1', "dig \@$DNS n2.dstack.internal CH TXT"), qr/status: REFUSED/,
     'another class: REFUSED');
like(out('n1', "dig \@$DNS example.test"), qr/status: SERVFAIL/,
     'other names, with no resolver in the original resolv.conf: SERVFAIL');

# --- other names go to the resolvers of the original resolv.conf

my $big = join(',', map { $_ x 200 } qw(a b c d));
$dnsmasq_pid = fork // die;
if ($dnsmasq_pid == 0) {
    exec('ip', 'netns', 'exec', 'dd-gw', 'dnsmasq', '--keep-in-foreground',
         '--no-resolv', '--no-hosts', '--listen-address=10.99.0.2',
         '--local=/example.test/',
         '--bind-interfaces', '--port=53', "--pid-file=$DIR/gw/dnsmasq.pid",
         '--host-record=outside.example.test,192.0.2.77',
         "--txt-record=big.example.test,$big",
         '--log-facility=-', '--log-queries') or exit 127;
}
ok(eventually(sub { system("ip netns exec dd-gw dig +short +time=1 +tries=1"
                           . " \@10.99.0.2 outside.example.test >/dev/null") == 0 }),
   'dnsmasq answers on the gateway namespace');

my $orig = "nameserver 10.99.0.2\nsearch example.test\noptions ndots:1\n";
is(system("bash $vpc node-stop n1"), 0, 'n1 stopped');
is(slurp($RESOLV), "# no resolver outside the VPC is reachable from n1\n",
   '  its resolv.conf is the original again');
ok(!-e "$DIR/n1/state/resolv.conf.orig", '  and the saved copy is gone');
write_file($RESOLV, $orig);
system("bash $vpc node-start n1") == 0 or BAIL_OUT('n1 did not restart');
is(slurp("$DIR/n1/state/resolv.conf.orig"), $orig, 'the original is saved');
$ours = slurp($RESOLV);
like($ours, qr/^search example\.test$/m, "  its search line kept in ours");
like($ours, qr/^options ndots:1$/m, '  and its options');
unlike($ours, qr/10\.99\.0\.2/, '  not its resolver');

like(out('n1', 'getent hosts outside.example.test'), qr/^192\.0\.2\.77\s/m,
     'getent hosts outside.example.test: forwarded to dnsmasq');
is(dig('n1', 'outside.example.test'), '192.0.2.77', '  and by dig');
like(out('n1', 'getent hosts outside'), qr/^192\.0\.2\.77\s/m,
     '  the search line works');
is(dig('n1', '+tcp outside.example.test'), '192.0.2.77', '  and over TCP');
my $tc = out('n1', "dig \@$DNS +noedns +ignore big.example.test TXT");
like($tc, qr/flags: qr[a-z ]* tc/, 'a long answer over UDP: truncated, as dnsmasq sent it');
my $txt = out('n1', "dig \@$DNS +noedns big.example.test TXT");
like($txt, qr/ANSWER: 1,.*"a{200}" "b{200}" "c{200}" "d{200}"/s,
     '  and whole when dig asks again over TCP');
like(out('n1', "dig \@$DNS missing.example.test"), qr/status: NXDOMAIN/,
     'an NXDOMAIN from the resolver comes back as it is');

# --- a node that joins, re-joins and is removed

system("bash $vpc node-add n3") == 0 or BAIL_OUT('n3 did not join');
my $n3 = vpn_address('n3');
ok(eventually(sub { dig('n1', 'n3.dstack.internal') eq $n3 }),
   "a new node: n3.dstack.internal appears on n1 ($n3)");
ok(eventually(sub { out('n1', 'getent hosts n3.dstack.internal') =~ /^\Q$n3\E\s/m }),
   '  for getent too');

my $remove = "$bin/dstack-ctld nodes remove n3 --data-dir $DIR/srv/data"
           . ' --listen 127.0.0.1:8000';
ok(in('srv', $remove), 'n3 removed with the CLI');
ok(eventually(sub { out('n1', "dig \@$DNS n3.dstack.internal") =~ /status: NXDOMAIN/ }),
   '  n3.dstack.internal is gone on n1: NXDOMAIN');
ok(eventually(sub { !in('n1', 'getent hosts n3.dstack.internal') }),
   '  and for getent');
my $n3_pid = pid_of('n3');
ok(eventually(sub { !kill(0, $n3_pid) }), "  n3's daemon ($n3_pid) exited");

# n3 joins again: a new join, whose address the server may move
system("bash $vpc node-start n3") == 0 or BAIL_OUT('n3 did not rejoin');
my $n3b = vpn_address('n3');
ok(eventually(sub { dig('n1', 'n3.dstack.internal') eq $n3b }),
   "n3 joined again: n1 follows its address ($n3 -> $n3b)");

# the name table: the daemon of n2 answers the same
is(dig('n2', 'n3.dstack.internal'), $n3b, 'and so does n2');

# --- hostile queries: FORMERR or nothing, and the daemon goes on

my $probe = "$DIR/probe.pl";
write_file($probe, <<'PERL');
use strict; use warnings; use IO::Socket::INET;
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.153:53', Proto => 'udp') or die $!;
my $hdr = sub { pack('nnnnnn', 0x4242, @_) };
my $q = pack('n2', 1, 1);
my %cases = (
    short      => "\x42\x42\x01",
    header     => $hdr->(0x0100, 1, 0, 0, 0),
    qdcount0   => $hdr->(0x0100, 0, 0, 0, 0),
    qdcount2   => $hdr->(0x0100, 2, 0, 0, 0) . "\x02n2\0$q\x02n2\0$q",
    badlabel   => $hdr->(0x0100, 1, 0, 0, 0) . "\x3fn2\0$q",
    loop       => $hdr->(0x0100, 1, 0, 0, 0) . "\xc0\x0c$q",
    selfptr    => $hdr->(0x0100, 1, 0, 0, 0) . "\x02n2\xc0\x0e$q",
    toolong    => $hdr->(0x0100, 1, 0, 0, 0) . ("\x3f" . ('x' x 63)) x 5 . "\0$q",
    huge       => $hdr->(0x0100, 1, 0, 0, 0) . ("\xff" x 8000),
    answer     => $hdr->(0x8180, 1, 0, 0, 0) . "\x02n2\x06dstack\x08internal\0$q",
    notify     => $hdr->(0x2000, 1, 0, 0, 0) . "\x02n2\x06dstack\x08internal\0$q",
    # records a query does not carry (compression pointers in them cost
    # the parser, not the sender): refused before they are read
    ancount    => $hdr->(0x0100, 1, 1, 0, 0) . "\x02n2\x06dstack\x08internal\0$q"
                  . "\xc0\x0c" . pack('nnNn', 1, 1, 60, 4) . "\x01\x02\x03\x04",
    arcount2   => $hdr->(0x0100, 1, 0, 0, 2) . "\x02n2\x06dstack\x08internal\0$q"
                  . ("\0" . pack('nnNn', 41, 512, 0, 0)) x 2,
);
for my $name (sort keys %cases) {
    $s->send($cases{$name});
    my $got = '';
    my $rin = ''; vec($rin, fileno($s), 1) = 1;
    if (select(my $r = $rin, undef, undef, 0.5)) {
        $s->recv($got, 65535);
    }
    my $what = length($got) < 12 ? 'none'
             : ('rcode' . (unpack('n', substr($got, 2, 2)) & 15)
                . (unpack('n', substr($got, 0, 2)) == 0x4242 ? '' : ' badid'));
    print "$name $what\n";
}
PERL
my %got = map { split ' ', $_, 2 } split /\n/, out('n1', "perl $probe");
is($got{short}, 'none', 'a datagram shorter than a header: dropped');
is($got{answer}, 'none', 'an answer (QR set): dropped, no reflection');
is($got{$_}, 'rcode1', "$_: FORMERR")
    for qw(header qdcount0 qdcount2 badlabel loop selfptr toolong huge ancount arcount2);
is($got{notify}, 'rcode4', 'another opcode: NOTIMP');
my $pid = pid_of('n1');
ok(kill(0, $pid), "n1's daemon ($pid) still runs");
is(dig('n1', 'n2.dstack.internal'), $addr{n2}, '  and still answers');

# slowloris: every TCP slot taken by a client that sends a byte a second
# (each within any per-call timeout); the daemon ends them at its
# deadline, and TCP answers again while they still trickle
my $slow = "$DIR/slow.pl";
write_file($slow, <<'PERL');
use strict; use warnings; use IO::Socket::INET;
$SIG{PIPE} = 'IGNORE';
my @s = map { IO::Socket::INET->new(PeerAddr => '127.0.0.153:53', Proto => 'tcp')
              or die "connect: $!" } 1 .. 16;
exit 0 if fork;
close STDOUT; close STDERR;
syswrite($_, "\x01\x00") for @s;      # a 256-byte query, never whole
for (1 .. 40) { sleep 1; syswrite($_, 'x') for @s; }
PERL
is(out('n1', "perl $slow"), '', '16 TCP clients trickle a byte a second');
ok(eventually(sub { dig('n1', '+tcp n2.dstack.internal') eq $addr{n2} }),
   '  TCP answers again while they still trickle');

# --- forged answers: a resolver's answer must match the query ---------------
#
# A resolver on 10.99.0.53 (the gateway's namespace) that answers every
# query twice from its own address and port: first with the query's id and
# another question (what a forger who guessed the port and id would send),
# then truly.  It writes down each query's source port.

my $liar = "$DIR/liar.pl";
my $ports = "$DIR/liar.ports";
write_file($liar, <<'PERL');
use strict; use warnings; use IO::Socket::INET; use Socket;
my $s = IO::Socket::INET->new(LocalAddr => '10.99.0.53:53', Proto => 'udp') or die $!;
open my $log, '>>', $ARGV[0] or die $!;
$log->autoflush(1);
print "ready\n";
STDOUT->flush;
while (1) {
    my $from = $s->recv(my $q, 65535) // next;
    next if length($q) < 17;
    my ($port) = sockaddr_in($from);
    print $log "$port\n";
    my $end = 12;
    $end += ord(substr($q, $end, 1)) + 1 while $end < length($q) && ord(substr($q, $end, 1));
    my $question = substr($q, 12, $end + 5 - 12);
    (my $other = $question) =~ s/spoof/sp00f/i;
    my $answer = sub {
        my ($qs, $ip) = @_;
        return substr($q, 0, 2) . pack('nnnnn', 0x8180, 1, 1, 0, 0) . $qs
             . pack('nnnNn', 0xc00c, 1, 1, 60, 4) . inet_aton($ip);
    };
    $s->send($answer->($other, '192.0.2.66'), 0, $from);
    $s->send($answer->($question, '192.0.2.55'), 0, $from);
}
PERL
system('ip -n dd-gw addr add 10.99.0.53/24 dev eth0') == 0
    or BAIL_OUT('cannot add 10.99.0.53 to the gateway namespace');
$liar_pid = open(my $liar_out, '-|', 'ip', 'netns', 'exec', 'dd-gw', 'perl', $liar, $ports)
    // die "liar: $!";
is(scalar <$liar_out>, "ready\n", 'a lying resolver on 10.99.0.53');
is(system("bash $vpc node-stop n1"), 0, 'n1 stopped');
write_file($RESOLV, "nameserver 10.99.0.53\n");
system("bash $vpc node-start n1") == 0 or BAIL_OUT('n1 did not restart');
is(dig('n1', 'spoof.example.test'), '192.0.2.55',
   'an answer with the id but another question is dropped; the true one comes back');
is(dig('n1', 'spoof.example.test'), '192.0.2.55', '  again');
like(out('n1', 'getent hosts spoof.example.test'), qr/^192\.0\.2\.55\s/m, '  and to glibc');
my @ports = split /\n/, slurp($ports);
my %distinct = map { $_ => 1 } @ports;
ok(@ports >= 3 && keys %distinct == @ports,
   "each forwarded query from a port of its own (@ports)");
kill 'TERM', $liar_pid;
close $liar_out;
is(system("bash $vpc node-stop n1"), 0, 'n1 stopped, to go back to dnsmasq');
write_file($RESOLV, $orig);
system("bash $vpc node-start n1") == 0 or BAIL_OUT('n1 did not restart');

# --- stop: the original comes back; --names hosts: today's hosts block

is(system("bash $vpc node-stop n1"), 0, 'n1 stopped');
is(slurp($RESOLV), $orig, 'resolv.conf restored after stop');
{
    local $ENV{VPC_NAMES} = 'hosts';
    system("bash $vpc node-start n1") == 0 or BAIL_OUT('n1 did not restart');
}
is(slurp($RESOLV), $orig, 'VPC_NAMES=hosts: resolv.conf left alone');
ok(eventually(sub { slurp('/etc/netns/dd-n1/hosts')
                    =~ /^\Q$addr{n2}\E n2\.dstack\.internal$/m }),
   '  the hosts block names n2');
like(out('n1', 'getent hosts n2.dstack.internal'), qr/^\Q$addr{n2}\E\s/m,
     '  and getent finds it there');
ok(!in('n1', "dig +time=1 +tries=1 \@$DNS n2.dstack.internal"), '  no DNS server runs');

done_testing();


# the A record dig gets from the daemon, or ""
sub dig {
    my ($cvm, $args) = @_;
    my $a = out($cvm, "dig +short +time=2 +tries=1 \@$DNS $args");
    chomp $a;
    return $a;
}


