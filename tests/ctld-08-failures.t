# Failure and restart: a stop under load (with the sanitizers), storage
# faults (a full disk, a failing disk), backup and restore, settings that
# collide with the stored nodes, and kill -9 in the middle of a join storm.
# The storage cases mount small file systems: they need root.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../dstack-ctld/tests";
use CtldTest;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use JSON::PP;
use Test::More;
use Time::HiRes qw(sleep time);

my $APP = 'f00d';

# forks n clients that call the server in a loop until killed; each writes
# one byte to $dir/busy-<n> after its first answer
sub load_clients {
    my ($srv, $n) = @_;
    my @pids;
    for my $c (1 .. $n) {
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            srand($$ ^ int(time * 1000));
            my $http = HTTP::Tiny->new(timeout => 5, keep_alive => 1);
            my $base = "http://127.0.0.1:$srv->{port}";
            my $h = { headers => { 'x-dstack-app-id' => $APP } };
            for (my $i = 0; ; $i++) {
                $http->get("$base/metrics");
                my $r = $http->get("$base/api/register?instance_id=l$c-$i", $h);
                if ($i == 0) { open my $f, '>', "$srv->{dir}/busy-$c"; close $f }
                next unless $r->{status} == 200;
                $http->post("$base/api/v1/join", { %$h, content => encode_json({
                    pre_auth_key => decode_json($r->{content})->{pre_auth_key},
                    public_key => wg_key(), with_peers => JSON::PP::false }) });
            }
        }
        push @pids, $pid;
    }
    # on: every client has had an answer
    my $deadline = time + 30;
    sleep 0.05 while time < $deadline && grep { !-e "$srv->{dir}/busy-$_" } 1 .. $n;
    return @pids;
}

sub stop_clients { kill 'KILL', @_; waitpid $_, 0 for @_ }

subtest 'a stop under load frees nothing still in use (ASan)' => sub {
    my $asan = ctld_asan_bin();
    for my $round (1 .. 4) {
        my $srv = start_server(bin => $asan);
        my @clients = load_clients($srv, 6);
        sleep 0.2;
        my $status = $srv->stop;
        stop_clients(@clients);
        my $log = $srv->log_text;
        my ($report) = $log =~ /^(.*(?:AddressSanitizer|runtime error).*)$/m;
        ok(!defined $report, "round $round: no sanitizer report")
            or diag $log =~ s/\A.*?(?==+\d+==ERROR)//sr;
        is($status, 0, "round $round: exit status 0 after SIGTERM");
        like($log, qr/signal 15: stopping/, "round $round: stopped on the signal");
    }
};

done_testing;
