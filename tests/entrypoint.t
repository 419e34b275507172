# The container's entrypoint (docker/entrypoint.sh) run directly, without
# Docker: a server-role and a node-role instance, each in a network namespace
# of tests/vpc/vpc.sh (base-up: namespaces, guest-agent simulators and the
# gateway, none of the CVM software), configured by environment variables
# alone.  Then the misconfigurations that must stop it at once.

use strict;
use warnings;

use Test::More;
use Cwd qw(getcwd);
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use FindBin;
use lib "$FindBin::Bin/lib";
use DstackTest qw(eventually slurp);

my $root = getcwd();
my $bin = $ENV{DSTACK_BIN} // "$root/build/bin";
my $entry = "$root/docker/entrypoint.sh";
my $vpc = "$root/tests/vpc/vpc.sh";
my $module = "$root/build/nginx/ngx_http_dstack_mesh_module.so";
my $SRV = '5e7e000000000000000000000000000000000001';
my $N1 = 'aaaa000000000000000000000000000000000011';
my $dir = '/tmp/de-test';

# --- lint: every shell script of the deployment

SKIP: {
    skip 'no shellcheck', 1 unless -x '/usr/bin/shellcheck';
    my $out = qx{shellcheck docker/*.sh tests/vpc/*.sh tools/dstack-tls-key 2>&1};
    is($out, '', 'shellcheck finds nothing in docker/, tests/vpc/, dstack-tls-key');
}

# --- misconfigurations, no namespaces needed

my %base = (PATH => "$bin:$ENV{PATH}", DSTACK_TLS_KEY => "$root/tools/dstack-tls-key",
            NGX_MODULES => $module);

sub fails {
    my ($env, $re, $name, $nofile) = @_;
    my $t0 = time;
    # $nofile: the hard limit of open files to run under
    my $cmd = join(" ", ($nofile ? "ulimit -n $nofile &&" : ()), 'env -i',
                   map({ "$_='$env->{$_}'" } sort keys %$env),
                   "bash $entry 2>&1 </dev/null");
    my $out = qx{$cmd};
    my $status = $? >> 8;
    ok($status == 1 && time - $t0 < 10, "$name: exit 1 at once")
        or diag("status $status: $out");
    like($out, $re, "$name: the message says why");
}

fails({ %base, DSTACK_AGENT_SOCKET => "$dir-none/dstack.sock",
        DSTACK_GATEWAY_DOMAIN => 'gw.dstack.test', DSTACK_VPC_CONFIG_DIR => "$dir-none/etc" },
      qr/DSTACK_AGENT_SOCKET: \Q$dir-none\E\/dstack\.sock is not a socket/,
      'no agent socket');
fails({ %base, VPC_WG_TRANSPORT => 'tcp' },
      qr/VPC_WG_TRANSPORT: "tcp" is not auto, udp or relay/, 'a bad VPC_WG_TRANSPORT');
fails({ %base, VPC_SERVER_ENABLED => 'perhaps' },
      qr/VPC_SERVER_ENABLED: "perhaps" is not a boolean/, 'a bad VPC_SERVER_ENABLED');
fails({ %base, VPC_SERVER_APP_ID => 'xyz' },
      qr/VPC_SERVER_APP_ID: "xyz"/, 'a bad VPC_SERVER_APP_ID');
fails({ %base, VPC_SERVER_ENABLED => 'true', VPC_WG_ENDPOINT => '192.0.2.1:51820',
        MESH_BACKEND => 'unix:/tmp/ctld.sock' },
      qr{MESH_BACKEND: /tmp is writable by everyone}, 'a socket in a shared directory');
fails({ %base, VPC_SERVER_ENABLED => 'true', VPC_WG_ENDPOINT => '192.0.2.1:51820',
        VPC_MAX_NODES => 'many' },
      qr/VPC_MAX_NODES: "many" is not a number of nodes/, 'a bad VPC_MAX_NODES');
fails({ %base, VPC_SERVER_ENABLED => 'true', VPC_WG_ENDPOINT => '192.0.2.1:51820',
        VPC_MAX_NODES => '100000' },
      qr/VPC_MAX_NODES=100000 needs 203072 open files per process; the hard limit here is 8192/,
      'a VPC larger than the open file limit allows', 8192);

# --- the real thing, in namespaces

SKIP: {
    skip 'needs root', 1 if $>;
    skip 'needs /dev/net/tun', 1 unless -c '/dev/net/tun';

    $ENV{DV_PREFIX} = 'de';
    $ENV{DV_DIR} = $dir;
    $ENV{NODES} = 'n1';
    $ENV{DSTACK_BIN} = $bin;
    my %pid;
    END {
        kill 'KILL', values %pid if %pid;
        system "bash $vpc down >/dev/null 2>&1" if $ENV{DV_PREFIX};
        unlink glob '/var/run/wireguard/dewg-*.sock';
    }
    system("bash $vpc base-up") == 0 or BAIL_OUT('namespaces did not come up');

    # the agent is there, the gateway domain is not: named
    fails({ %base, DSTACK_AGENT_SOCKET => "$dir/n1/dstack.sock",
            DSTACK_VPC_CONFIG_DIR => "$dir/n1/bad" },
          qr/DSTACK_GATEWAY_DOMAIN is required/, 'no gateway domain');

    my %common = (%base, DSTACK_GATEWAY_DOMAIN => 'gw.dstack.test',
                  DSTACK_GATEWAY_ADDRESS => '10.99.0.2:443', VPC_WG_BACKEND => 'uapi');
    my $sock = "$dir/srv/run/ctld.sock";
    my %server = (%common, VPC_SERVER_ENABLED => 'true', VPC_WG_ENDPOINT => '10.99.0.10:51820',
                  VPC_WG_INTERFACE => 'dewg-srv', MESH_BACKEND => "unix:$sock");

    # the default: the server's own app alone (rendered, then stopped by a
    # refusing nginx)
    fails({ %server, NGINX => '/bin/false', DSTACK_AGENT_SOCKET => "$dir/srv/dstack.sock",
            DSTACK_VPC_CONFIG_DIR => "$dir/srv/probe" },
          qr/apps allowed: $SRV \(this server's own app/, 'default VPC_ALLOWED_APPS');
    like(slurp("$dir/srv/probe/nginx/nginx.conf"), qr/^\s*mesh_allow_apps $SRV;$/m,
         '  nginx lets the server\'s own app in, no other');
    like(slurp("$dir/srv/probe/nginx/nginx.conf"),
         qr/^\s*mesh_metrics_zone \S+ 1m;\s+server \{\s+listen 127\.0\.0\.1:9113;\s+location = \/metrics \{\s+mesh_metrics;/m,
         '  the mesh counters on 127.0.0.1:9113/metrics');
    fails({ %server, NGINX => '/bin/false', DSTACK_AGENT_SOCKET => "$dir/srv/dstack.sock",
            DSTACK_VPC_CONFIG_DIR => "$dir/srv/probe", VPC_ALLOWED_APPS => 'any' },
          qr/warning: VPC_ALLOWED_APPS=any/, 'VPC_ALLOWED_APPS=any: a warning');

    # nginx sized for the VPC the operator declares: a client and an
    # upstream connection per node, kept-alive connections to the daemon
    fails({ %server, NGINX => '/bin/false', DSTACK_AGENT_SOCKET => "$dir/srv/dstack.sock",
            DSTACK_VPC_CONFIG_DIR => "$dir/srv/sized", VPC_MAX_NODES => 5000 },
          qr/refused/, 'VPC_MAX_NODES=5000 (rendered, then stopped by a refusing nginx)');
    my $conf = slurp("$dir/srv/sized/nginx/nginx.conf");
    like($conf, qr/^worker_rlimit_nofile 13072;$/m, '  worker_rlimit_nofile: 2 x (5000 + 1024) + 1024');
    like($conf, qr/^events \{ worker_connections 12048; \}$/m, '  worker_connections: 2 x (5000 + 1024)');
    like($conf, qr/upstream dstack_ctld \{\s*server unix:\Q$sock\E;\s*keepalive 5000;/,
         '  an upstream on the daemon\'s socket, 5000 connections kept alive');
    like($conf, qr/^\s*proxy_pass http:\/\/dstack_ctld;$/m, '  the API goes through it');
    like(slurp("$dir/srv/probe/nginx/nginx.conf"), qr/^events \{ worker_connections 4096; \}$/m,
         '  the default (1000 nodes): 4096 connections');

    $pid{srv} = start('srv', { %server, VPC_ALLOWED_APPS => "$SRV,$N1" });
    $pid{n1} = start('n1', { %common, VPC_SERVER_APP_ID => $SRV, VPC_NODE_NAME => 'n1',
                             VPC_NODE_TYPE => 'worker', VPC_WG_ENDPOINT => '10.99.0.11:51820',
                             VPC_WG_INTERFACE => 'dewg-n1',
                             # the renewal loop, made quick
                             DSTACK_TLS_RENEW_AFTER => '8s', DSTACK_TLS_CHECK_EVERY => '1' });

    my $addr = '';
    eventually(sub { ($addr) = out('n1', 'ip -4 -o addr show dev dewg-n1') =~ /inet (100\.[\d.]+)\//;
                     $addr }, 40);
    like($addr, qr/^100\.(?:12[89]|1[3-8]\d|19[01])\.\d+\.\d+$/,
         "the node joined from environment variables alone: dewg-n1 has $addr");

    like(out('srv', "$bin/dstack-ctld nodes list --data-dir $dir/srv/data --listen unix:$sock"),
         qr/\bn1\b.*\Q$addr\E/, 'the server lists n1');

    # the server's socket: nginx's group only
    my @st = stat $sock;
    is(sprintf('%04o %s', $st[2] & 07777, scalar getgrgid($st[5])), '0660 www-data',
       'the server socket: 0660, group www-data');
    @st = stat "$dir/srv/run";
    is(sprintf('%04o %s', $st[2] & 07777, scalar getgrgid($st[5])), '2750 www-data',
       '  in a directory 0750 of that group (set-group-id)');
    like(slurp("$dir/srv/etc/nginx/nginx.conf"), qr/^user www-data;$/m,
         '  nginx workers run as www-data');
    my $health = "curl -sS --max-time 5 --unix-socket $sock http://x/health";
    is(out('srv', "setpriv --reuid=www-data --regid=www-data --init-groups $health"), 'OK',
       '  which can open it');
    like(out('srv', "setpriv --reuid=nobody --regid=nogroup --clear-groups $health"),
         qr/Permission denied|Couldn't connect/, '  another local user cannot');
    isnt(system("ip netns exec de-srv curl -sf --max-time 5 http://127.0.0.1:8000/health"
                . " >/dev/null 2>&1"), 0, '  and nothing listens on TCP 8000');
    like(out('n1', "curl -sS --max-time 20 -H 'x-dstack-target-app: $SRV' http://127.0.0.1/api/discover/worker"),
         qr/"count":1.*n1\.dstack\.internal/s, 'discovery through the mesh finds n1');
    ok(eventually(sub { out('n1', 'ping -c 1 -W 2 vpc-server.dstack.internal') =~ / 0% packet loss/ }),
       'n1 pings the hub by name over WireGuard');
    # the discovery call above, on both sides' pages (a target from headers
    # counts as "other"; N1 is one of the server's allowed apps)
    like(out('n1', 'curl -sS --max-time 5 http://127.0.0.1:9113/metrics'),
         qr/^dstack_mesh_outbound_requests_total\{app="other",outcome="ok"\} [1-9]/m,
         "n1's mesh counters show its calls to the server");
    like(out('srv', 'curl -sS --max-time 5 http://127.0.0.1:9113/metrics'),
         qr/^dstack_mesh_inbound_app_requests_total\{app="$N1",outcome="allowed"\} [1-9]/m,
         "the server's show n1's calls, by app");
    like(slurp("$dir/srv/entrypoint.log"), qr/role server, app $SRV/, 'the server says its role');

    # the renewal loop: a new certificate, nginx reloaded, still serving
    ok(child_pids($pid{n1}, 'dstack-tls-key'), "the node's renewal loop runs under the entrypoint");
    my @renewed;
    ok(eventually(sub { @renewed = slurp("$dir/n1/entrypoint.log")
                                   =~ /dstack-tls-key: renewed \S+: (\w+),/g; @renewed >= 2 }, 30),
       'it renews the node\'s certificate every 8 s (DSTACK_TLS_RENEW_AFTER)');
    ok(@renewed >= 2 && $renewed[0] ne $renewed[1], '  with a new serial each time');
    my $now = serial("$dir/n1/etc/tls/cert.pem");
    sleep 0.5;    # the line follows the switch
    ok($now && (grep { $_ eq $now } slurp("$dir/n1/entrypoint.log") =~ /renewed \S+: (\w+),/g),
       '  the files hold the last one');
    unlike(slurp("$dir/n1/entrypoint.log"), qr/dstack-tls-key: .*(?:failed|stay)/,
           '  nginx reloaded each time, nothing failed');
    like(out('n1', "curl -sS --max-time 20 -H 'x-dstack-target-app: $SRV' http://127.0.0.1/api/discover/worker"),
         qr/"count":1/, '  and the mesh still answers');

    # supervision: a dead dstack-ctld comes back
    my ($ctld) = child_pids($pid{n1}, 'dstack-ctld');
    ok($ctld, "the node's dstack-ctld runs under the entrypoint");
    kill 'KILL', $ctld if $ctld;
    ok(eventually(sub { my ($new) = child_pids($pid{n1}, 'dstack-ctld'); $new && $new != $ctld }),
       'killed, it is started again');
    like(slurp("$dir/n1/entrypoint.log"), qr/node exited \(status 137\): restarting it/,
         'and the log says so');

    # SIGTERM goes to every child, the entrypoint exits 0
    for my $cvm (qw(n1 srv)) {
        my @kids = child_pids($pid{$cvm});
        cmp_ok(scalar @kids, '>=', 2, "$cvm: nginx and dstack-ctld run under it");
        kill 'TERM', $pid{$cvm};
        my $status = reap($pid{$cvm}, 15);
        delete $pid{$cvm};
        is($status, 0, "$cvm: SIGTERM, exit 0");
        ok(!(grep { kill 0, $_ } @kids), "$cvm: and its children are gone");
    }
}

done_testing();


sub start {
    my ($cvm, $env) = @_;
    my %env = (%$env, DSTACK_AGENT_SOCKET => "$dir/$cvm/dstack.sock",
               DSTACK_VPC_CONFIG_DIR => "$dir/$cvm/etc", DSTACK_VPC_DATA_DIR => "$dir/$cvm/data",
               VPC_HOSTS_FILE => "/etc/netns/de-$cvm/hosts");
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDOUT, '>>', "$dir/$cvm/entrypoint.log" or die;
        open STDERR, '>&', \*STDOUT or die;
        exec 'ip', 'netns', 'exec', "de-$cvm", 'env', '-i',
             (map { "$_=$env{$_}" } sort keys %env), 'bash', $entry;
        die "exec: $!";
    }
    return $pid;
}

sub serial {
    my ($cert) = @_;
    return (qx{openssl x509 -in $cert -noout -serial 2>/dev/null} =~ /serial=(\w+)/)[0] // '';
}

sub out {
    my ($cvm, $cmd) = @_;
    return scalar qx{ip netns exec de-$cvm $cmd 2>&1};
}

sub child_pids {
    my ($pid, $name) = @_;
    my @pids = split ' ', qx{pgrep -P $pid @{[ $name ? "-x $name" : '' ]}};
    return @pids;
}

sub reap {
    my ($pid, $seconds) = @_;
    for (1 .. $seconds * 10) {
        return $? >> 8 if waitpid($pid, WNOHANG) == $pid;
        sleep 0.1;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return 'timeout';
}
