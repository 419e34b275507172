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
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
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
        my $srv = start_server(bin => $asan, args => ['--server-app-id', $APP]);
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

# --- storage faults ---

my @cleanups;
my $parent = $$;
END {
    local $?;
    if ($$ == $parent) { $_->() for reverse @cleanups }
}

# a tmpfs of $size, unmounted at the end
sub small_tmpfs {
    my ($size) = @_;
    my $dir = tempdir('ctld-fs-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    system('mount', '-t', 'tmpfs', '-o', "size=$size,mode=0700", 'tmpfs', $dir) == 0
        or die "mount tmpfs: $?";
    push @cleanups, sub { system('umount', '-l', $dir) };
    return $dir;
}

# an ext4 file system on a loop device that turns read-only on its first
# error (errors=remount-ro, as a root file system usually is)
sub ext4_loop {
    my $dir = tempdir('ctld-ext4-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $fs = { img => "$dir/img", mnt => "$dir/mnt" };
    mkdir $fs->{mnt};
    system("truncate -s 32M $fs->{img} && mkfs.ext4 -q $fs->{img}") == 0 or die "mkfs";
    push @cleanups, sub { system('umount', '-l', $fs->{mnt}); system('losetup', '-d', $fs->{loop}) };
    ext4_mount($fs);
    return $fs;
}

# on a loop device of its own: a new mount never shares the kernel's state
# of a file system that failed
sub ext4_mount {
    my ($fs) = @_;
    chomp($fs->{loop} = `losetup -f --show $fs->{img}`);
    die "losetup" unless $fs->{loop} =~ m{^/dev/loop\d+$};
    system('blockdev', '--setrw', $fs->{loop});
    system('mount', '-o', 'errors=remount-ro', $fs->{loop}, $fs->{mnt}) == 0 or die "mount ext4";
}

# unmounted and mounted again, as after a repair (the kernel may still be
# finishing the error's remount: a busy unmount is tried again)
sub ext4_remount {
    my ($fs) = @_;
    for my $try (1 .. 100) {
        last if system('umount', $fs->{mnt}) == 0;
        die "cannot unmount $fs->{mnt}" if $try == 100;
        sleep 0.1;
    }
    system('losetup', '-d', $fs->{loop});
    ext4_mount($fs);
}

# what ext4 does when it meets an error: the kernel remounts it read-only,
# with the database open (a plain `mount -o remount,ro` is refused while a
# file is open for writing)
sub ext4_fail {
    my ($fs) = @_;
    my $dev = $fs->{loop} =~ s{^/dev/}{}r;
    open my $f, '>', "/sys/fs/ext4/$dev/trigger_fs_error" or die "trigger_fs_error: $!";
    print $f "test\n";
    close $f;
    open my $m, '<', '/proc/mounts' or die;
    return scalar grep { (split)[1] eq $fs->{mnt} && (split)[3] =~ /(?:^|,)ro(?:,|$)|emergency_ro/ } <$m>;
}

sub join_with {
    my ($srv, $key) = @_;
    return req($srv, 'POST', '/api/v1/join', app => $APP,
               body => { pre_auth_key => $key, public_key => wg_key(), with_peers => JSON::PP::false });
}

sub nodes_ok {
    my ($srv, $what) = @_;
    is_deeply([sqlite_rows($srv->db, 'SELECT address FROM nodes GROUP BY address HAVING count(*) > 1')],
              [], "$what: no address given twice");
    is_deeply([sqlite_rows($srv->db, 'SELECT count(*) FROM preauth_keys k WHERE used_at IS NOT NULL'
              . ' AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.app_id = k.app_id AND n.instance_id = k.instance_id)')],
              ['0'], "$what: no key spent without its node");
}

subtest 'a full disk: writes answer 503 and spend nothing, then resume' => sub {
    my $mnt = small_tmpfs('2m');
    my $srv = start_server(data => "$mnt/data", args => ['--server-app-id', $APP]);
    is(join_node($srv, $APP, "before-$_", "before-$_")->{status}, 200, "join before-$_")
        for 1 .. 3;
    my @keys = map { register($srv, $APP, "during-$_", "during-$_") } 1 .. 4;

    # fill the file system to the last byte
    system("dd if=/dev/zero of=$mnt/filler bs=64k 2>/dev/null");
    for my $i (0 .. $#keys) {
        my $r = join_with($srv, $keys[$i]);
        is($r->{status}, 503, "join on a full disk: 503") or diag $r->{content};
        is($r->{json}{error}, 'storage full', 'saying why');
    }
    my $r = req($srv, 'GET', '/api/register?instance_id=x', app => $APP);
    is($r->{status}, 503, 'register on a full disk: 503');
    is(req($srv, 'GET', '/api/nodes', app => $APP)->{status}, 200, 'reads still served');

    unlink "$mnt/filler";
    my %addr;
    for my $i (0 .. $#keys) {
        my $j = join_with($srv, $keys[$i]);
        is($j->{status}, 200, "the same key joins once there is room") or diag $j->{content};
        $addr{$j->{json}{address} // ''}++;
    }
    is(scalar(keys %addr), scalar @keys, 'each at its own address');
    like($srv->log_text, qr/database or disk is full/, 'the log says the disk is full');
    $srv->stop;
    nodes_ok($srv, 'after a full disk');
};

subtest 'the disk fails (read-only remount): the writer stops, the server exits for its supervisor' => sub {
    my $fs = ext4_loop();
    my $srv = start_server(data => "$fs->{mnt}/data", args => ['--server-app-id', $APP]);
    my %acked;
    for (1 .. 3) {
        my $j = join_node($srv, $APP, "ok-$_", "ok-$_");
        $acked{"ok-$_"} = $j->{json}{address} if $j->{status} == 200;
    }
    is(scalar keys %acked, 3, 'three joins before the fault');
    my $key = register($srv, $APP, 'lost', 'lost');

    ok(ext4_fail($fs), 'the file system is now read-only');
    my $r = join_with($srv, $key);
    isnt($r->{status}, 200, "a join after the fault fails ($r->{status})");

    # the server stops by itself (bounded wait: it would hang here for ever otherwise)
    my $pid = $srv->{pid};
    my $status = eval {
        local $SIG{ALRM} = sub { die "still running\n" };
        alarm 30;
        waitpid $pid, 0;
        alarm 0;
        $?;
    };
    alarm 0;
    ok(defined $status, 'the server exits after an I/O error at commit') or diag $@;
    defined $status ? delete $srv->{pid} : $srv->kill9;
    is(($status // 0) >> 8, 1, 'with status 1, for its supervisor to restart it');
    like($srv->log_text, qr/the disk failed at commit/, 'and says why');

    # the supervisor restarts it once the disk is back
    ext4_remount($fs);
    $srv->start;
    my %stored = map { split /\|/ } sqlite_rows($srv->db, "SELECT instance_id, address FROM nodes");
    is(join(',', map { join '.', unpack 'C4', pack 'N', $stored{$_} // 0 } sort keys %acked),
       join(',', map { $acked{$_} } sort keys %acked), 'every acknowledged join is there');
    ok(!exists $stored{lost}, 'the failed join is not');
    is(join_with($srv, $key)->{status}, 200, 'and its key was not spent');
    $srv->stop;
    nodes_ok($srv, 'after a disk failure');
};

# --- restores, history, settings that collide with the nodes ---

sub epoch_of { (sqlite_rows($_[0]->db, "SELECT value FROM meta WHERE key = 'epoch'"))[0] }
sub version_of { (sqlite_rows($_[0]->db, "SELECT value FROM meta WHERE key = 'version'"))[0] }

# the peer set as node $token sees it, asked from (version, epoch)
sub poll_from {
    my ($srv, $token, $version, $epoch) = @_;
    return req($srv, 'GET', "/api/v1/peers?since=$version&epoch=$epoch",
               app => $APP, token => $token);
}

subtest 'backup and restore: the restored history gets a new epoch' => sub {
    my $srv = start_server(args => ['--server-app-id', $APP]);
    my $b = join_node($srv, $APP, 'r-b', 'r-b');
    is($b->{status}, 200, 'a node joins');
    my $file = "$srv->{dir}/ctld-backup.db";
    my ($rc, $out) = $srv->cli('backup', $file);
    is($rc, 0, 'backup of a running server') or diag $out;
    like($out, qr/backed up .* peer version \d+/, 'says what it copied');
    is((stat $file)[2] & 0777, 0600, 'the backup is 0600');
    ok(!-e "$file-wal", 'one self-contained file');

    # the history moves on after the backup
    my $c;
    $c = join_node($srv, $APP, "r-c$_", "r-c$_") for 1 .. 3;
    my ($epoch, $seen) = ($c->{json}{epoch}, $c->{json}{version});

    ($rc, $out) = $srv->cli('restore', $file);
    is($rc, 1, 'restore is refused while the server runs');
    like($out, qr/stop the server/, 'saying so');

    $srv->stop;
    ($rc, $out) = $srv->cli('restore', $file);
    is($rc, 0, 'restore with the server stopped') or diag $out;
    like($out, qr/new epoch [0-9a-f]{16} \(was $epoch\)/, 'with a new epoch');
    $srv->start;
    is_deeply([sqlite_rows($srv->db, 'SELECT name FROM nodes')], ['r-b'], 'the backup is what is served');
    isnt(epoch_of($srv), $epoch, 'under a new epoch');

    # the restored history reaches the versions nodes saw in the old one
    join_node($srv, $APP, "r-d$_", "r-d$_") for 1 .. 4;
    cmp_ok(version_of($srv), '>=', $seen, "the version passed $seen again");
    my $p = poll_from($srv, $b->{json}{node_token}, $seen, $epoch);
    is($p->{status}, 200, 'a node polls from the old history');
    ok($p->{json}{snapshot}, 'and gets a snapshot, not a delta from another history');
    is($p->{json}{epoch}, epoch_of($srv), 'of the new epoch');

    # no needless snapshots: restarts keep the epoch, a crash too
    my $now = epoch_of($srv);
    $srv->restart;
    is(epoch_of($srv), $now, 'a restart keeps the epoch');
    $srv->kill9;
    $srv->start;
    is(epoch_of($srv), $now, 'so does a restart after kill -9');
    unlike($srv->log_text, qr/cannot be proven continuous/, 'no rotation at those starts');
    $srv->stop;

    ($rc, $out) = $srv->cli('restore', "$srv->{dir}/server.log");
    is($rc, 1, 'restore refuses a file that is no database');
};

subtest 'a database copied back by hand gets a new epoch' => sub {
    my $srv = start_server(args => ['--server-app-id', $APP]);
    my $a = join_node($srv, $APP, 'h-a', 'h-a');
    $srv->stop;
    system('cp', $srv->db, "$srv->{dir}/old.db") == 0 or die;

    $srv->start;
    my $j;
    $j = join_node($srv, $APP, "h-b$_", "h-b$_") for 1 .. 3;
    my ($epoch, $seen) = ($j->{json}{epoch}, $j->{json}{version});
    $srv->kill9;

    # the old copy put back by hand, while the server was down
    unlink $srv->db . '-wal', $srv->db . '-shm';
    system('cp', "$srv->{dir}/old.db", $srv->db) == 0 or die;
    $srv->start;
    like($srv->log_text, qr/history cannot be proven continuous \(the database's version \d+ is below the $seen already handed out\): new epoch/,
         'the start notices the history went back');
    isnt(epoch_of($srv), $epoch, 'and gives the database a new epoch');
    join_node($srv, $APP, "h-c$_", "h-c$_") for 1 .. 4;
    my $p = poll_from($srv, $a->{json}{node_token}, $seen, $epoch);
    ok($p->{json}{snapshot}, 'a node of the old history gets a snapshot');
    $srv->stop;

    # a database from elsewhere with the same history file
    my $other = start_server(args => ['--server-app-id', $APP]);
    join_node($other, $APP, 'o-1', 'o-1');
    $other->stop;
    unlink $srv->db . '-wal', $srv->db . '-shm';
    system('cp', $other->db, $srv->db) == 0 or die;
    my $foreign = epoch_of($srv);
    $srv->start;
    isnt(epoch_of($srv), $foreign, "another server's database gets a new epoch too");
};

subtest 'a pool or server address that collides with nodes is refused, naming them' => sub {
    my $srv = start_server(args => ['--server-app-id', $APP]);
    my %addr = map { $_ => join_node($srv, $APP, $_, $_)->{json}{address} } qw(p-one p-two);
    is_deeply(\%addr, { 'p-one' => '100.128.0.2', 'p-two' => '100.128.0.3' }, 'two nodes');
    $srv->stop;

    $srv->{args} = ['--server-app-id', $APP, '--server-address', '100.128.0.3'];
    ok(!eval { $srv->start; 1 }, 'a server address on a node: refused');
    like($@, qr/leaves 1 nodes without a valid address: p-two \(id \d+, 100\.128\.0\.3\)/,
         'naming the node');

    $srv->{args} = ['--server-app-id', $APP, '--pool', '10.9.0.0/24'];
    ok(!eval { $srv->start; 1 }, 'a pool without the nodes: refused');
    like($@, qr/leaves 2 nodes without a valid address: p-one \(id \d+, 100\.128\.0\.2\), p-two/,
         'naming them');

    $srv->{args} = ['--server-app-id', $APP, '--pool', '100.128.0.0/24'];
    ok(eval { $srv->start; 1 }, 'a smaller pool that still holds them: served') or diag $@;
    $srv->stop;
};

# --- kill -9 in the middle of a storm of concurrent joins ---

# child: sends one join on each of its own connections at once, then
# records every answer ("instance|status|address|id", one write per line);
# with $kill, SIGKILLs the server the moment a first join is acknowledged
sub storm_child {
    my ($srv, $joins, $record, $kill) = @_;
    my $sel = IO::Select->new;
    my %inst;
    for my $j (@$joins) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port},
                                      Proto => 'tcp') or next;
        my $body = encode_json({ pre_auth_key => $j->{key}, public_key => wg_key(),
                                 with_peers => JSON::PP::false });
        syswrite $s, "POST /api/v1/join HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   . "x-dstack-app-id: $APP\r\nContent-Type: application/json\r\n"
                   . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
        $inst{fileno $s} = [$j->{inst}, ''];
        $sel->add($s);
    }
    open my $rec, '>>', $record or die;
    while ($sel->count) {
        for my $s ($sel->can_read(30)) {
            my $st = $inst{fileno $s};
            my $n = sysread $s, my $buf, 65536;
            if ($n) {
                kill 'KILL', $srv->{pid} if $kill && $buf =~ m{^HTTP/1\.1 200 };
                $st->[1] .= $buf;
                next;
            }
            $sel->remove($s);
            close $s;
            next unless $st->[1] =~ m{^HTTP/1\.1 (\d+) .*?\r\n\r\n(.*)\z}s;
            my ($status, $a) = ($1, eval { decode_json($2) } // {});
            syswrite $rec, join('|', $st->[0], $status, $a->{address} // '', $a->{node_id} // '') . "\n";
        }
    }
    POSIX::_exit(0);
}

# the joins spread over $procs children, started at once
sub storm {
    my ($srv, $joins, $name, $procs, $kill) = @_;
    my @kids;
    for my $p (0 .. $procs - 1) {
        my @mine = @$joins[grep { $_ % $procs == $p } 0 .. $#$joins];
        my $pid = fork // die "fork: $!";
        storm_child($srv, \@mine, "$srv->{dir}/$name-$p", $kill) if $pid == 0;
        push @kids, $pid;
    }
    return @kids;
}

sub storm_answers {
    my ($dir, $name, $procs) = @_;
    my @answers;
    for my $p (0 .. $procs - 1) {
        open my $in, '<', "$dir/$name-$p" or next;
        push @answers, map { chomp; [split /\|/, $_, -1] } <$in>;
    }
    return @answers;
}

subtest 'kill -9 during 1000 concurrent joins: every answered join survives' => sub {
    my $N = 1000;
    my $PROCS = 4;
    my $srv = start_server(args => ['--server-app-id', $APP]);
    my $dir = $srv->{dir};

    # the keys first, from a few clients at once
    my @reg;
    for my $p (0 .. 9) {
        my $pid = fork // die;
        if ($pid == 0) {
            open my $out, '>', "$dir/keys-$p" or die;
            for (my $i = $p; $i < $N; $i += 10) {
                my $k = register($srv, $APP, "s$i", "s$i");
                print $out "s$i $k\n";
            }
            close $out;
            POSIX::_exit(0);
        }
        push @reg, $pid;
    }
    waitpid $_, 0 for @reg;
    my @joins;
    for my $p (0 .. 9) {
        open my $in, '<', "$dir/keys-$p" or die;
        push @joins, map { chomp; my ($i, $k) = split; +{ inst => $i, key => $k } } <$in>;
    }
    is(scalar @joins, $N, "$N pre-auth keys");

    # the storm, and kill -9 as soon as a first join is answered
    waitpid $_, 0 for storm($srv, \@joins, 'acked', $PROCS, 'kill');
    $srv->kill9;
    my %acked = map { $_->[0] => "$_->[2]|$_->[3]" } grep { $_->[1] == 200 }
                storm_answers($dir, 'acked', $PROCS);
    my $n = keys %acked;
    ok($n > 0, "$n joins answered before the kill");
    diag "the storm was over before the kill" if $n == $N;

    $srv->start;
    my $db = $srv->db;
    my %stored = map { my ($i, $a, $id) = split /\|/; ($i => join('.', unpack 'C4', pack 'N', $a) . "|$id") }
                 sqlite_rows($db, "SELECT instance_id, address, id FROM nodes WHERE app_id = '$APP'");
    my @lost = grep { ($stored{$_} // '') ne $acked{$_} } sort keys %acked;
    is(scalar @lost, 0, 'every answered join is stored, at the address and id answered')
        or diag "lost or moved: @lost[0 .. ($#lost < 9 ? $#lost : 9)]";
    nodes_ok($srv, 'after the kill');

    # the clients whose answer was lost try again with the same key, all at
    # once: a key already spent has its node, the others join now
    my @retry = grep { !$acked{$_->{inst}} } @joins;
    waitpid $_, 0 for storm($srv, \@retry, 'retried', $PROCS);
    my @bad = map { "$_->[0]: $_->[1]" }
              grep { !($_->[1] == 200 || ($_->[1] == 401 && $stored{$_->[0]})) }
              storm_answers($dir, 'retried', $PROCS);
    is(scalar @bad, 0, scalar(@retry) . ' unanswered joins retried: joined, or already there')
        or diag "@bad[0 .. ($#bad < 9 ? $#bad : 9)]";
    is((sqlite_rows($db, "SELECT count(*) FROM nodes WHERE app_id = '$APP'"))[0], $N,
       "all $N nodes are there in the end");
    nodes_ok($srv, 'after the retries');
    $srv->stop;
};

done_testing;
