# Certificate rotation under load: two CVMs, each an nginx with the module
# (a master and two workers: the inbound mesh with mesh_auth and the
# outbound entry point), each with its guest-agent simulator issuing leaves
# that live 30 s, and `dstack-tls-key watch` beside it as the container
# runs it (renew at two thirds of the lifetime, then `nginx -s reload`).
#
#   client --> A's entry --mutual RA-TLS--> B's inbound: "caller=A serial=..."
#   client --> B's entry --mutual RA-TLS--> A's inbound: "caller=B serial=..."
#
# Four clients call without pause, in both directions, over keepalive
# connections and over a new connection per request, across two rotations
# of each CVM: not one request fails, and each callee sees each new
# certificate (the caller's serial, $ssl_client_serial).  Then A's agent
# goes away while A's certificate is due: the renewal fails and is retried,
# A's files stay, nginx keeps serving, and once the agent is back the next
# attempt renews.

use strict;
use warnings;

use lib 'tests/lib';

use DstackTest qw(free_port wait_for_port wait_for_socket write_file read_file
                  load_modules);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep time);

$ENV{TEST_NGINX_LOAD_MODULES}
    or plan skip_all => 'TEST_NGINX_LOAD_MODULES is not set';

my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $bin = $ENV{DSTACK_BIN} // 'build/bin';
my $tls_key = 'tools/dstack-tls-key';
my $LIFETIME = 30;

my %app = (a => 'aaaa000000000000000000000000000000000031',
           b => 'bbbb000000000000000000000000000000000032');
my $dir = tempdir(CLEANUP => !$ENV{KEEP});
my (%sim, %watch, @clients, %ngx);

$SIG{$_} = sub { exit 1 } for qw(INT TERM HUP);

END {
    local $?;
    kill 'TERM', grep { $_ } @clients, values %watch, values %sim;
    for my $cvm (keys %ngx) {
        system("$nginx -p $dir/$cvm -c $dir/$cvm/nginx.conf -s stop 2>/dev/null");
    }
    waitpid $_, 0 for grep { $_ } @clients, values %watch, values %sim;
}

my %port = map { $_ => free_port() } qw(a_in a_out b_in b_out);

# --- the agents and the first certificates

sub start_sim {
    my ($cvm) = @_;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>>', "$dir/$cvm/sim.log" or die;
        exec "$bin/dstack-agent-sim", '--socket', "$dir/$cvm/dstack.sock",
             '--ca-dir', "$dir/ca", '--app-id', $app{$cvm},
             '--validity', $LIFETIME;
        warn "exec: $!";
        POSIX::_exit(1);
    }
    $sim{$cvm} = $pid;
    wait_for_socket("$dir/$cvm/dstack.sock") or BAIL_OUT("the $cvm simulator did not start");
}

sub stop_sim {
    my ($cvm) = @_;
    kill 'TERM', $sim{$cvm};
    waitpid $sim{$cvm}, 0;
    delete $sim{$cvm};
}

for my $cvm (qw(a b)) {
    mkdir "$dir/$cvm" or die;
    start_sim($cvm);
    system($tls_key, "$dir/$cvm/dstack.sock", "$dir/$cvm/tls", 'localhost') == 0
        or BAIL_OUT("$cvm: dstack-tls-key failed");
}

sub serial {
    my ($cvm) = @_;
    my $out = `openssl x509 -in $dir/$cvm/tls/cert.pem -noout -serial`;
    return $out =~ /^serial=([0-9A-F]+)$/m ? $1 : '';
}

sub current { readlink "$dir/$_[0]/tls/current" // '' }

my %first = map { $_ => serial($_) } qw(a b);
ok($first{a} && $first{b}, "first certificates: A $first{a}, B $first{b}");

# not due yet: renew does nothing and says nothing
{
    my $before = current('a');
    my $out = `DSTACK_TLS_RELOAD=false $tls_key renew $dir/a/dstack.sock $dir/a/tls 2>&1`;
    is($? >> 8, 0, 'renew of a fresh certificate: exit 0');
    is($out, '', '  silently');
    is(current('a'), $before, '  and the files stay');
}

# --- the two nginx

sub conf {
    my ($me, $peer) = @_;
    my $tls = "$dir/$me/tls";
    return load_modules() . <<"CONF";
master_process on;
worker_processes 2;
pid $dir/$me/nginx.pid;
error_log $dir/$me/error.log info;
events { worker_connections 256; }

http {
    client_body_temp_path $dir/$me;
    proxy_temp_path $dir/$me;
    fastcgi_temp_path $dir/$me;
    uwsgi_temp_path $dir/$me;
    scgi_temp_path $dir/$me;
    access_log off;

    mesh_certificate          $tls/cert.pem;
    mesh_certificate_key      $tls/key.pem;
    mesh_trusted_certificate  $tls/ca.pem;

    server {
        listen 127.0.0.1:$port{"${me}_in"} ssl;
        ssl_certificate         $tls/cert.pem;
        ssl_certificate_key     $tls/key.pem;
        ssl_client_certificate  $tls/ca.pem;
        ssl_verify_client       on;
        ssl_verify_depth        2;
        ssl_protocols           TLSv1.2 TLSv1.3;

        mesh_auth on;

        location / {
            return 200 "callee=$me caller=\$mesh_app_id serial=\$ssl_client_serial\\n";
        }
    }

    server {
        listen 127.0.0.1:$port{"${me}_out"};
        mesh_gateway gw.test address=127.0.0.1:$port{"${peer}_in"};

        location / {
            mesh_target $app{$peer};
        }
    }
}
CONF
}

for my $pair (['a', 'b'], ['b', 'a']) {
    my ($me, $peer) = @$pair;
    write_file("$dir/$me/nginx.conf", conf($me, $peer));
    # its warnings (the certificate expires soon) go to a file
    system("$nginx -p $dir/$me -c $dir/$me/nginx.conf 2>>$dir/$me/start.log") == 0
        or BAIL_OUT("$me: nginx did not start: " . read_file("$dir/$me/start.log"));
    $ngx{$me} = 1;
}
for my $p (values %port) {
    wait_for_port($p) or BAIL_OUT("nginx is not on port $p");
}

# --- the renewal loops, as the entrypoint runs them

for my $cvm (qw(a b)) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>>', "$dir/$cvm/watch.log" or die;
        $ENV{DSTACK_TLS_RELOAD} = "$nginx -p $dir/$cvm -c $dir/$cvm/nginx.conf -s reload";
        # A checks every second (--check); B every tenth of the lifetime
        exec $tls_key, 'watch', ($cvm eq 'a' ? ('--check', '1') : ()),
             "$dir/$cvm/dstack.sock", "$dir/$cvm/tls";
        warn "exec: $!";
        POSIX::_exit(1);
    }
    $watch{$cvm} = $pid;
}

# --- the clients: curl, 50 requests a run, each outcome a line in its log;
# "keepalive" reuses one connection per run (curl, as every HTTP client,
# resends a request that a reused connection lost before any answer), "new"
# opens one per request

sub client {
    my ($name, $entry, $keepalive) = @_;
    my $pid = fork // die "fork: $!";
    return $pid if $pid;
    open my $log, '>>', "$dir/$name.log" or die;
    $log->autoflush(1);
    my @urls = ("http://127.0.0.1:$entry/call") x 50;
    while (!-e "$dir/stop") {
        open my $curl, '-|', 'curl', '-sS', '--max-time', '20', '--rate', '50/s',
            ($keepalive ? () : ('-H', 'Connection: close')),
            '-w', '%{time_total} %{http_code} %{num_connects}\n', @urls
            or die "curl: $!";
        while (my $line = <$curl>) {
            chomp $line;
            if ($line =~ /^callee=\w+ caller=(\w+) serial=([0-9A-F]+)$/) {
                my $answer = "$1 $2";
                my $status = <$curl> // '';
                if ($status =~ / 200 \d+$/) {
                    printf $log "%.3f ok %s\n", time, $answer;
                    next;
                }
                $line .= " $status";
            }
            printf $log "%.3f fail %s\n", time, substr($line, 0, 200);
        }
        close $curl;
        printf $log "%.3f fail curl exit %d\n", time, $? >> 8 if $?;
    }
    POSIX::_exit(0);    # not exit: the END block is the parent's
}

push @clients, client('a-to-b-keepalive', $port{a_out}, 1),
               client('a-to-b-new', $port{a_out}, 0),
               client('b-to-a-keepalive', $port{b_out}, 1),
               client('b-to-a-new', $port{b_out}, 0);

sub lines { -e $_[0] ? split /\n/, read_file($_[0]) : () }

# serials each CVM's watch loop renewed to, in order
sub renewed {
    my ($cvm) = @_;
    return map { /renewed .*: ([0-9A-F]+), valid until/ ? $1 : () }
           lines("$dir/$cvm/watch.log");
}

sub wait_until {
    my ($what, $limit, $cond) = @_;
    my $t0 = time;
    until ($cond->()) {
        if (time - $t0 > $limit) {
            diag("timed out waiting for $what");
            return 0;
        }
        sleep 0.2;
    }
    return 1;
}

# --- two rotations of each

ok(wait_until('two rotations of each CVM', 3 * $LIFETIME,
              sub { renewed('a') >= 2 && renewed('b') >= 2 }),
   'each CVM renewed twice');

# requests after a rotation carry the new certificate: give the clients a
# moment past the last reload
sleep 2;

for my $pair (['a', 'b'], ['b', 'a']) {
    my ($caller, $callee) = @$pair;
    my @seen = map { /ok \w+ ([0-9A-F]+)$/ ? $1 : () }
               map { lines("$dir/$caller-to-$callee-$_.log") } qw(keepalive new);
    my %seen = map { $_ => 1 } @seen;
    my @renewed = (renewed($caller))[0, 1];
    ok($seen{$first{$caller}}, uc($callee) . " saw " . uc($caller) . "'s first certificate");
    for my $i (0, 1) {
        ok($seen{$renewed[$i]},
           uc($callee) . " saw " . uc($caller) . "'s certificate of rotation "
           . ($i + 1) . " ($renewed[$i])");
    }
}

# --- A's agent fails while A's certificate is due

my $after2 = current('a');
my $fails_before = () = grep { /the current files stay/ } lines("$dir/a/watch.log");
stop_sim('a');
my $outage_start = time;
ok(wait_until('two failed renewals of A', 2 * $LIFETIME,
              sub { (() = grep { /the current files stay/ } lines("$dir/a/watch.log"))
                    >= $fails_before + 2 }),
   'A: renewal fails while the agent is gone, and is retried');
my ($failure) = grep { /the current files stay/ } lines("$dir/a/watch.log");
like($failure // '', qr{^dstack-tls-key: \S*/a/dstack\.sock: no guest agent socket; the current files stay$},
     '  one line says why');
is(current('a'), $after2, '  A\'s files stay as they were');
my $served = grep { /^(\d+\.\d+) ok/ && $1 > $outage_start }
             map { lines("$dir/$_.log") } qw(a-to-b-keepalive a-to-b-new b-to-a-keepalive b-to-a-new);
ok($served > 0, "nginx keeps serving meanwhile ($served requests while the agent was gone)");

start_sim('a');
ok(wait_until('a third renewal of A', $LIFETIME, sub { renewed('a') >= 3 }),
   'with the agent back, the next attempt renews A');
isnt(current('a'), $after2, '  A\'s files are a new set');
my $third = (renewed('a'))[2] // '';
ok(wait_until('B to see the third certificate', 10,
              sub { grep { / ok \w+ \Q$third\E$/ }
                    map { lines("$dir/a-to-b-$_.log") } qw(keepalive new) }),
   "B sees A's new certificate ($third)");

# --- every request of every client succeeded

write_file("$dir/stop", '');
waitpid $_, 0 for @clients;
@clients = ();
for my $name (qw(a-to-b-keepalive a-to-b-new b-to-a-keepalive b-to-a-new)) {
    my @all = lines("$dir/$name.log");
    my @failed = grep { / fail / } @all;
    is(scalar @failed, 0, "$name: 0 failed of " . scalar(@all) . ' requests')
        or diag(join "\n", @failed[0 .. ($#failed < 9 ? $#failed : 9)]);
}

# the key files nginx reads are the current set's, and match
for my $cvm (qw(a b)) {
    my $leaf = `openssl x509 -in $dir/$cvm/tls/cert.pem -noout -pubkey`;
    my $key = `openssl pkey -in $dir/$cvm/tls/key.pem -pubout`;
    ok($leaf && $leaf eq $key, uc($cvm) . ': key.pem is cert.pem\'s key');
    my @sets = glob "$dir/$cvm/tls/set.*";
    ok(@sets <= 2, uc($cvm) . ': the current set and the one before are kept ('
       . scalar(@sets) . ')');
}

done_testing();
