# tools/dstack-tls-key without nginx: when `renew` is due (two thirds of
# the lifetime, --every, DSTACK_TLS_RENEW_AFTER, a missing or unreadable
# certificate), the set layout and its switch, the names kept across
# renewals, a failed reload retried by the next run, files of the older
# layout taken over, and answers of a broken guest agent (an error status,
# not JSON, a key that is not the leaf's, a chain that does not verify):
# each refused with one line, exit 1, the current files untouched.

use strict;
use warnings;

use lib 'tests/lib';

use DstackTest qw(wait_for_socket write_file read_file);
use File::Temp qw(tempdir);
use IO::Socket::UNIX;
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep);

my $bin = $ENV{DSTACK_BIN} // 'build/bin';
my $certs = $ENV{TEST_NGINX_CERT_DIR}
    or plan skip_all => 'TEST_NGINX_CERT_DIR is not set';
my $tls_key = 'tools/dstack-tls-key';
my $dir = tempdir(CLEANUP => 1);
my $A = 'aaaa000000000000000000000000000000000041';
my @pids;

END {
    local $?;
    kill 'TERM', @pids;
    waitpid $_, 0 for @pids;
}

sub spawn {
    my ($code) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $code->();
        POSIX::_exit(1);
    }
    push @pids, $pid;
    return $pid;
}

# a simulator whose leaves live 9 s
spawn(sub {
    open STDERR, '>>', "$dir/sim.log" or die;
    exec "$bin/dstack-agent-sim", '--socket', "$dir/agent.sock", '--ca-dir', "$dir/ca",
         '--app-id', $A, '--validity', '9';
});
wait_for_socket("$dir/agent.sock") or BAIL_OUT('the simulator did not start');

# (exit status, stderr and stdout) of dstack-tls-key
sub tk {
    my (@args) = @_;
    my $env = '';
    $env = shift(@args) . ' ' if $args[0] =~ /=/;
    my $cmd = join ' ', $env, $tls_key, map { "'$_'" } @args;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

my $out = "$dir/tls";
sub current { readlink "$out/current" // '' }
sub serial { (`openssl x509 -in $out/cert.pem -noout -serial` =~ /serial=(\w+)/)[0] // '' }

# --- usage
my ($rc, $text) = tk('renew', "$dir/agent.sock");
is($rc, 2, 'renew without OUTDIR: usage, exit 2');
($rc, $text) = tk('renew', '--every', 'soon', "$dir/agent.sock", $out);
is($rc, 1, '--every soon: exit 1');
like($text, qr/"soon" is not a duration/, '  says why');
($rc, $text) = tk('DSTACK_TLS_RENEW_AFTER=-5', 'renew', "$dir/agent.sock", $out);
like($text, qr/DSTACK_TLS_RENEW_AFTER: "-5" is not a duration/, 'a bad DSTACK_TLS_RENEW_AFTER: refused');
ok(!-e $out, 'usage errors write nothing');

# --- nothing there yet: due; the names are kept for later renewals
($rc, $text) = tk('DSTACK_TLS_RELOAD=true', 'renew', "$dir/agent.sock", $out, 'cvm-a', '127.0.0.1');
is($rc, 0, 'renew with no certificate yet: fetches');
like($text, qr/^dstack-tls-key: renewed \Q$out\E: [0-9A-F]+, valid until \S+Z$/, '  one line says so');
is(readlink("$out/$_"), "current/$_", "$_ -> current/$_") for qw(key.pem cert.pem ca.pem);
like(current(), qr/^set\.\w+$/, 'current -> a set directory');
is((stat "$out/key.pem")[2] & 0777, 0600, 'key.pem: mode 0600');
is((stat $out)[2] & 0777, 0700, 'the directory: mode 0700');
my $first = serial();

($rc, $text) = tk('DSTACK_TLS_RELOAD=false', 'renew', "$dir/agent.sock", $out);
is("$rc $text", '0 ', 'not due: exit 0, nothing said, no reload (it would fail)');
is(serial(), $first, '  the same certificate');

# --every: due once the files are that old
sleep 2.2;
($rc, $text) = tk('DSTACK_TLS_RELOAD=true', 'renew', '--every', '2s', "$dir/agent.sock", $out);
is($rc, 0, '--every 2s, 2 s later: renewed');
isnt(serial(), $first, '  a new certificate');
like(`openssl x509 -in $out/cert.pem -noout -ext subjectAltName`, qr/DNS:cvm-a, IP Address:127\.0\.0\.1/,
     '  with the names of the first fetch');
my @sets = glob "$out/set.*";
is(scalar @sets, 2, 'the set before stays');

# two thirds of 9 s: due 6 s after the fetch; a reload that fails is retried
my $second = serial();
sleep 6.2;
($rc, $text) = tk('DSTACK_TLS_RELOAD="echo nginx said no; false"', 'renew', "$dir/agent.sock", $out);
is($rc, 1, 'past two thirds: renewed, but the reload failed: exit 1');
like($text, qr/^dstack-tls-key: renewed .*\ndstack-tls-key: renewed \Q$out\E, but "echo nginx said no; false" failed: nginx said no \(retried by the next run\)$/,
     '  says so');
isnt(serial(), $second, '  the files are new');
($rc, $text) = tk("DSTACK_TLS_RELOAD='touch $dir/reloaded'", 'renew', "$dir/agent.sock", $out);
ok($rc == 0 && -e "$dir/reloaded", 'the next run, not due, reloads');
unlink "$dir/reloaded";
tk("DSTACK_TLS_RELOAD='touch $dir/reloaded'", 'renew', "$dir/agent.sock", $out);
ok(!-e "$dir/reloaded", '  once');
@sets = glob "$out/set.*";
is(scalar @sets, 2, 'older sets go');

# an unreadable certificate is due
my $set = current();
write_file("$out/current/cert.pem", "garbage\n");
($rc) = tk('DSTACK_TLS_RELOAD=true', 'renew', "$dir/agent.sock", $out);
ok($rc == 0 && current() ne $set && serial(), 'an unreadable cert.pem: renewed');

# a run killed between its two steps left current.new, a symlink to a set
# directory: the next run replaces it, rather than link inside that set
$set = current();
symlink $set, "$out/current.new" or die "current.new: $!";
write_file("$out/current/cert.pem", "garbage\n");
($rc) = tk('DSTACK_TLS_RELOAD=true', 'renew', "$dir/agent.sock", $out);
ok($rc == 0 && current() ne $set && serial(), 'a stale current.new: renewed, current is the new set');
is(scalar(() = glob("$out/$set/set.*")), 0, '  no link left inside the old set');
ok(!-l "$out/current.new", '  and no current.new');

# files of the older layout: taken over
my $old = "$dir/old";
mkdir $old;
write_file("$old/$_", read_file("$out/$_")) for qw(key.pem cert.pem ca.pem);
utime 0, 0, "$old/cert.pem";
($rc) = tk('DSTACK_TLS_RELOAD=true', 'renew', '--every', '60', "$dir/agent.sock", $old);
is($rc, 0, 'plain files of the older layout, old: renewed');
is(readlink("$old/cert.pem"), 'current/cert.pem', '  and become the symlinks');

# --- a broken agent: one line, exit 1, files untouched

sub bad_agent {
    my ($name, $answer) = @_;
    my $path = "$dir/$name.sock";
    my $srv = IO::Socket::UNIX->new(Local => $path, Listen => 5) or die "$path: $!";
    spawn(sub {
        while (my $c = $srv->accept) {
            my $req = '';
            while ($req !~ /\r\n\r\n/ || length($req) < index($req, "\r\n\r\n") + 4
                   + (($req =~ /content-length: (\d+)/i)[0] // 0)) {
                sysread($c, $req, 4096, length $req) or last;
            }
            print $c $answer;
            close $c;
        }
    });
    return $path;
}

sub http_answer {
    my ($status, $body) = @_;
    return "HTTP/1.1 $status\r\nContent-Type: application/json\r\n"
         . "Content-Length: " . length($body) . "\r\nConnection: close\r\n\r\n$body";
}

sub chain_json {
    my ($key, @certs) = @_;
    my $json = JSON::PP->new->canonical;
    return $json->encode({ key => $key, certificate_chain => \@certs });
}
use JSON::PP ();

my $ca = read_file("$certs/ca.crt");
my ($leaf_b) = read_file("$certs/app-b.crt") =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n)/s;
my ($leaf_other) = read_file("$certs/other.crt") =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n)/s;
my %bad = (
    'status 500' => [http_answer('500 Internal Server Error', '{"error":"no quote"}'),
                     qr/GetTlsKey on \S+: curl: \(22\) .*500.*: \{"error":"no quote"\}; the current files stay/],
    'not JSON' => [http_answer('200 OK', '<html>'), qr/the answer is not JSON; the current files stay/],
    'no chain' => [http_answer('200 OK', '{"key":"x"}'), qr/no key or certificate chain in the answer/],
    'key of another leaf' => [http_answer('200 OK', chain_json(read_file("$certs/app-a.key"), $leaf_b, $ca)),
                              qr/the key does not match the certificate; the current files stay/],
    'chain to another CA' => [http_answer('200 OK', chain_json(read_file("$certs/other.key"), $leaf_other, $ca)),
                              qr/the chain does not verify up to its last certificate .*; the current files stay/],
);
for my $name (sort keys %bad) {
    my ($answer, $re) = @{ $bad{$name} };
    (my $sock = $name) =~ s/\W+/-/g;
    my $path = bad_agent($sock, $answer);
    my $before = current();
    my @files_before = map { read_file("$out/$_") } qw(key.pem cert.pem ca.pem);
    # due under --every 1 whatever the clock's second: the set is older
    utime time - 10, time - 10, "$out/current/cert.pem";
    ($rc, $text) = tk('DSTACK_TLS_RELOAD=false', 'renew', '--every', '1', $path, $out);
    is($rc, 1, "$name: exit 1");
    like($text, $re, '  one line says why');
    is(scalar(() = $text =~ /\n/g), 1, '  one line only');
    is(current(), $before, '  current stays');
    is_deeply([map { read_file("$out/$_") } qw(key.pem cert.pem ca.pem)], \@files_before,
              '  and so do the files');
    is(scalar(() = glob "$out/set.*"), 2, '  no set left behind');
}

done_testing();
