# The built image (make image) run as the README's "Deployment" shows it:
# a VPC server and two nodes, each container in one CVM network namespace of
# tests/vpc/vpc.sh (base-up: the namespaces, a guest-agent simulator per CVM
# and the gateway).  The two `docker run` blocks are read from README.md and
# run as they are, with podman in place of docker and these runtime flags
# changed: the container's network is the CVM's namespace (where -p and
# --network host point), the agent socket and the volume are the CVM's own,
# and DSTACK_GATEWAY_ADDRESS names the gateway (the test has no DNS).
# Shows: both nodes registered, a mesh call n1 -> n2 whose backend sees
# n1's verified app id, n1 pinging n2 by name over WireGuard.
#
#   make test-image    (PODMAN: podman with the repository's settings)

use strict;
use warnings;

use Test::More;
use Cwd qw(getcwd);
use FindBin;
use Time::HiRes qw(sleep);
use lib "$FindBin::Bin/../lib";
use DstackTest qw(write_file eventually);

my $podman = $ENV{PODMAN} // 'podman';
my $image = $ENV{IMAGE} // 'localhost/dstack-vpc:latest';

plan skip_all => 'no podman' unless grep { -x "$_/podman" } split /:/, $ENV{PATH};
plan skip_all => 'needs root' if $>;
plan skip_all => 'needs /dev/net/tun' unless -c '/dev/net/tun';

my $root = getcwd();
my $vpc = "$root/tests/vpc/vpc.sh";
my $dir = '/tmp/di-test';
my $SRV = '5e7e000000000000000000000000000000000001';
my %APP = (n1 => 'aaaa000000000000000000000000000000000011',
           n2 => 'aaaa000000000000000000000000000000000012');
my %IP = (srv => '10.99.0.10', n1 => '10.99.0.11', n2 => '10.99.0.12');

is(system("$podman image exists $image"), 0, "the image $image is built");

# --- the README's two docker run lines

my ($server_run, $node_run) = readme_runs();
like($server_run, qr/VPC_SERVER_ENABLED=true/, 'README: the server\'s docker run');
like($node_run, qr/VPC_SERVER_APP_ID=/, 'README: the node\'s docker run');

$ENV{DV_PREFIX} = 'di';
$ENV{DV_DIR} = $dir;
$ENV{NODES} = 'n1 n2';
$ENV{NGX_MODULES} = '/usr/lib/nginx/modules/ngx_stream_module.so';   # the gateway's
my @containers = map { "di-$_" } qw(srv n1 n2);
END {
    if ($ENV{DV_PREFIX}) {
        system "$podman rm -f -t 2 @containers >/dev/null 2>&1";
        system "$podman volume rm -f @containers >/dev/null 2>&1";
        system "ip netns exec di-n2 /usr/sbin/nginx -p $dir/app -c $dir/app/nginx.conf"
             . " -s stop >/dev/null 2>&1";
        system "bash $vpc down >/dev/null 2>&1";
    }
}
system "$podman rm -f -t 2 @containers >/dev/null 2>&1";
system "$podman volume rm -f @containers >/dev/null 2>&1";
system("bash $vpc base-up") == 0 or BAIL_OUT('namespaces did not come up');

# n2's app behind its inbound mesh: says who called
mkdir "$dir/app";
write_file("$dir/app/nginx.conf", <<"EOF");
pid $dir/app/nginx.pid;
error_log $dir/app/error.log;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:8080;
        location / { return 200 "n2 answers \$request_uri for \$http_x_dstack_app_id\\n"; }
    }
}
EOF
is(system("ip netns exec di-n2 /usr/sbin/nginx -p $dir/app -c $dir/app/nginx.conf"), 0,
   "n2's app listens on 127.0.0.1:8080");

my %vars = (NODE_APPS => "$APP{n1},$APP{n2}", SERVER_WG_ENDPOINT => "$IP{srv}:51820",
            GATEWAY_DOMAIN => 'gw.dstack.test', SERVER_APP_ID => $SRV);
is(run_readme('srv', $server_run, %vars), 0, 'the server container starts');
for my $n (qw(n1 n2)) {
    is(run_readme($n, $node_run, %vars, NODE_NAME => $n, NODE_WG_ENDPOINT => "$IP{$n}:51820"),
       0, "the $n container starts");
}

# --- registration

my %addr;
for my $n (qw(n1 n2)) {
    eventually(sub {
        ($addr{$n}) = qx{ip -n di-$n -4 -o addr show dev wg-dstack 2>/dev/null}
            =~ /inet (100\.[\d.]+)\//;
        $addr{$n} }, 60);
    like($addr{$n} // '', qr/^100\.(?:12[89]|1[3-8]\d|19[01])\.\d+\.\d+$/,
         "$n joined: wg-dstack has " . ($addr{$n} // 'no address'))
        or diag(qx{$podman logs di-$n 2>&1 | tail -20});
}
my $nodes = 'dstack-ctld nodes list --data-dir /var/lib/dstack-vpc'
          . ' --listen unix:/run/dstack-vpc/ctld.sock';
my $list = qx{$podman exec di-srv $nodes 2>&1};
like($list, qr/\bn1\b.*\Q$addr{n1}\E/, 'the server lists n1 with its address')
    or diag($list);
like($list, qr/\bn2\b.*\Q$addr{n2}\E/, 'and n2');

# --- a mesh call with the verified caller, a ping by name

my $mesh = "curl -sS --max-time 20 -H 'x-dstack-target-app: $APP{n2}' http://127.0.0.1/hello";
my $call = qx{$podman exec di-n1 $mesh 2>&1};
like($call, qr/^n2 answers \/hello for $APP{n1}$/m,
     'mesh call n1 -> n2 through the gateway: the backend sees n1\'s verified app id')
    or diag($call, qx{$podman logs di-n2 2>&1 | tail -20});
ok(eventually(sub {
       qx{$podman exec di-n1 ping -c 1 -W 2 n2.dstack.internal 2>&1} =~ / 0% packet loss/ }, 20),
   'n1 pings n2.dstack.internal over WireGuard')
    or diag(qx{$podman exec di-n1 cat /etc/hosts 2>&1});
like(qx{$podman exec di-n1 getent hosts n2.dstack.internal 2>&1}, qr/^\Q$addr{n2}\E\s/,
     '  the name is n2\'s VPN address');

# --- a stop is clean

is(system("$podman stop -t 15 di-n1 >/dev/null 2>&1"), 0, 'podman stop n1');
is(qx{$podman inspect -f '{{.State.ExitCode}}' di-n1 2>&1}, "0\n", '  the entrypoint exits 0');

done_testing();


# the ```sh blocks of README.md holding "docker run", server's first
sub readme_runs {
    open my $fh, '<', "$root/README.md" or die "README.md: $!";
    my $text = do { local $/; <$fh> };
    my @runs = grep { /^docker run / } $text =~ /^```sh\n(.*?)^```$/msg;
    my ($server) = grep { /VPC_SERVER_ENABLED=true/ } @runs;
    my ($node) = grep { !/VPC_SERVER_ENABLED=true/ } @runs;
    return ($server // '', $node // '');
}

# runs one README block for a CVM, "docker" being podman with the CVM's
# runtime flags
sub run_readme {
    my ($cvm, $block, %vars) = @_;
    my $name = "di-$cvm";
    my $script = <<'EOF' . $block;
set -eu
docker() {
    [ "$1" = run ] || return 2
    shift
    local args=(--network "ns:/run/netns/$NAME" -e "DSTACK_GATEWAY_ADDRESS=$GATEWAY_ADDRESS")
    while [ $# -gt 0 ]; do
        case $1 in
            -p|--network|--restart) shift 2; continue ;;
            --name) args+=(--name "$NAME"); shift 2; continue ;;
            -v) case $2 in
                    /var/run/dstack.sock:*) args+=(-v "$AGENT:${2#*:}") ;;
                    dstack-vpc:*) args+=(-v "$NAME:${2#*:}") ;;
                    *) args+=(-v "$2") ;;
                esac
                shift 2; continue ;;
            dstack-vpc) args+=("$IMAGE") ;;
            *) args+=("$1") ;;
        esac
        shift
    done
    # shellcheck disable=SC2086
    $PODMAN run "${args[@]}" >/dev/null
}
EOF
    local %ENV = (%ENV, %vars, NAME => $name, AGENT => "$dir/$cvm/dstack.sock",
                  GATEWAY_ADDRESS => '10.99.0.2:443', IMAGE => $image, PODMAN => $podman);
    open my $sh, '|-', 'bash', '-s' or die "bash: $!";
    print $sh $script;
    close $sh;
    return $?;
}
