# The Debian packages of `make deb` (build/deb): lintian finds no error, and
# in a fresh Debian 12 (the debootstrap base of make image, as a podman
# container, with nginx and systemd from the archive) `dpkg -i` installs
# them, the module is enabled the way Debian's nginx modules are,
# `nginx -t` passes with a mesh directive in use (and fails once the module
# is disabled), and `systemd-analyze verify` accepts every unit.
#
#   make test-image

use strict;
use warnings;

use Test::More;
use Cwd qw(getcwd);

my $podman = $ENV{PODMAN} // 'podman';
my $base = $ENV{IMAGE_BASE} // 'localhost/dstack-vpc-base:12';
my $debs = getcwd() . '/build/deb';

plan skip_all => 'no podman' unless grep { -x "$_/podman" } split /:/, $ENV{PATH};
plan skip_all => 'needs root' if $>;

my @debs = map { glob "$debs/${_}_*.deb" } qw(libnginx-mod-http-dstack-mesh dstack-ctld);
is(scalar @debs, 2, 'make deb built both packages') or BAIL_OUT('no packages: make deb');

my $lint = qx{lintian --fail-on error @debs 2>&1};
is($?, 0, 'lintian: no error');
unlike($lint, qr/^E: /m, '  and no E: line') or diag($lint);

my $c = 'di-deb';
END { system "$podman rm -f -t 0 $c >/dev/null 2>&1" }
system "$podman rm -f -t 0 $c >/dev/null 2>&1";
is(system("$podman run -d --name $c --network host -v $debs:/debs:ro $base sleep infinity"
          . ' >/dev/null'), 0, "a fresh container of $base");

# nginx and systemd from the archive, then what the packages depend on
my $deps = join ', ', map { my $d = qx{dpkg-deb -f $_ Depends}; chomp $d; $d } @debs;
$deps = join ', ', grep { !/^nginx-abi-/ } split /,\s*/, $deps;
my $out = in("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q"
             . " --no-install-recommends nginx systemd >/dev/null"
             . " && DEBIAN_FRONTEND=noninteractive apt-get satisfy -y -q --no-install-recommends"
             . " '$deps' >/dev/null; echo status \$?");
like($out, qr/status 0$/, 'nginx, systemd and the dependencies from the archive') or diag($out);

$out = in('dpkg -i /debs/' . join(' /debs/', map { s{.*/}{}r } @debs) . '; echo status $?');
like($out, qr/status 0$/, 'dpkg -i installs both packages') or diag($out);
like(in("dpkg-query -W -f '\${db:Status-Abbrev}\n' libnginx-mod-http-dstack-mesh dstack-ctld"),
     qr/\Aii \nii \n\z/, '  both installed and configured');

# --- the module, enabled as Debian's nginx modules are

is(in('readlink /etc/nginx/modules-enabled/50-mod-http-dstack-mesh.conf'),
   "/usr/share/nginx/modules-available/mod-http-dstack-mesh.conf\n",
   'modules-enabled/50-mod-http-dstack-mesh.conf links to modules-available');
is(in('cat /usr/share/nginx/modules-available/mod-http-dstack-mesh.conf'),
   "load_module modules/ngx_http_dstack_mesh_module.so;\n", '  which loads the module');
like(in('dpkg-deb -f /debs/' . ($debs[0] =~ s{.*/}{}r) . ' Depends'),
     qr/^nginx-abi-[\d.]+-\d+\b/, '  the package depends on the nginx ABI it was built for');
like(in("dpkg-query -W -f '\${Provides}' nginx"), qr/\Q@{[ abi($debs[0]) ]}\E/,
     '  which the archive\'s nginx provides');

in(q{printf 'server { listen 127.0.0.1:8081; location / { mesh_auth off; return 204; } }\n'}
   . ' > /etc/nginx/conf.d/mesh-test.conf');
like(in('nginx -t 2>&1; echo status $?'), qr/test is successful\nstatus 0$/,
     'nginx -t passes with mesh_auth in a location');
in('mv /etc/nginx/modules-enabled/50-mod-http-dstack-mesh.conf /root/');
like(in('nginx -t 2>&1; echo status $?'), qr/unknown directive "mesh_auth".*status 1$/s,
     '  and fails with the module disabled');
in('mv /root/50-mod-http-dstack-mesh.conf /etc/nginx/modules-enabled/');

# --- dstack-ctld: the binary, the configuration, the units

like(in('dstack-ctld --help 2>&1'), qr/dstack-ctld/, '/usr/bin/dstack-ctld runs');
is(in('ls /etc/dstack-ctld'), "dstack-ctld-node.conf\ndstack-ctld.conf\n",
   '/etc/dstack-ctld holds the example configuration');
my @units = qw(dstack-ctld-server.service dstack-ctld-node.service dstack-ctld-hub.service
               dstack-tls-renew.service dstack-tls-renew.timer);
my $verify = in('cd /lib/systemd/system && systemd-analyze verify ' . join(' ', @units)
                . ' 2>&1; echo status $?');
is($verify, "status 0\n", 'systemd-analyze verify accepts every unit, silently');
for my $unit (qw(dstack-ctld-server dstack-ctld-hub dstack-ctld-node)) {
    like(in("systemd-analyze security --offline=true --threshold=30 --no-pager $unit.service"
            . ' 2>&1; echo status $?'), qr/Overall exposure level for $unit\.service: [0-2]\.\d .*status 0$/s,
         "$unit: systemd-analyze security rates its exposure below 3.0");
}
my $security = in('grep -h -E "^(NoNewPrivileges|CapabilityBoundingSet|ProtectSystem|StateDirectory)="'
                  . ' /lib/systemd/system/dstack-ctld-node.service');
is($security, "StateDirectory=dstack-ctld\nNoNewPrivileges=yes\n"
              . "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE\n"
              . "ProtectSystem=strict\n",
   '  the node: sandboxed, CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (port 53) alone');
is(in('systemctl is-enabled dstack-ctld-server.service dstack-ctld-node.service 2>&1'),
   "disabled\ndisabled\n", '  no role runs until enabled');

done_testing();


# runs a shell command in the container, returns its output
sub in {
    my ($cmd) = @_;
    $cmd =~ s/'/'\\''/g;
    return scalar qx{$podman exec $c sh -c '$cmd' 2>&1};
}

sub abi {
    my ($deb) = @_;
    my ($abi) = qx{dpkg-deb -f $deb Depends} =~ /(nginx-abi-[\w.-]+)/;
    return $abi // 'none';
}
