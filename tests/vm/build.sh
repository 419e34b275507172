#!/bin/bash
#
# Builds the kernel WireGuard test VM into OUT (default build/vm):
#   OUT/vmlinuz    Debian's cloud kernel (linux-image-cloud-amd64's image,
#                  fetched with apt-get download and unpacked, never
#                  installed; cached, so reruns are fast and offline)
#   OUT/initrd.gz  busybox, wg, ip, wg-apply (and wg-apply-split beside it),
#                  dstack-ctld and dstack-agent-sim, with their libraries,
#                  the modules WireGuard and veth need, tests/vm/init as
#                  /init and the peers it applies
#
#   tests/vm/build.sh [OUT [WG_APPLY [BIN]]]     (BIN: default build/bin)
#
# Boot it by hand with:
#   qemu-system-x86_64 -m 512 -nographic -no-reboot -kernel OUT/vmlinuz \
#       -initrd OUT/initrd.gz -append 'console=ttyS0 panic=-1 quiet'

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m "${1:-build/vm}")
WG_APPLY=${2:-build/tests/wg-apply}
BIN=${3:-build/bin}
KDIR=$OUT/kernel
ROOT=$OUT/root

die() { echo "build.sh: $*" >&2; exit 1; }

for bin in "$WG_APPLY" "$WG_APPLY-split" "$BIN/dstack-ctld" "$BIN/dstack-agent-sim"; do
    [ -x "$bin" ] || die "$bin is missing: run make first"
done
for tool in busybox wg ip cpio gzip depmod modprobe dpkg-deb apt-get perl; do
    command -v "$tool" >/dev/null || die "$tool is missing: run make deps"
done

# --- the kernel, unpacked once --------------------------------------------

if [ ! -s "$KDIR/version" ]; then
    image() {
        apt-cache depends linux-image-cloud-amd64 2>/dev/null \
            | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
    }
    pkg=$(image)
    if [ -z "$pkg" ]; then
        apt-get update -q >/dev/null || die "apt-get update failed"
        pkg=$(image)
    fi
    [ -n "$pkg" ] || die "no linux-image-cloud-amd64 in the package lists"

    rm -rf "$KDIR.tmp"
    mkdir -p "$KDIR.tmp/deb"
    # apt's sandbox user cannot write here; the download is a plain file
    (cd "$KDIR.tmp/deb" && apt-get download -q \
        -o APT::Sandbox::User=root "$pkg" >/dev/null) \
        || die "apt-get download $pkg failed"
    dpkg-deb -x "$KDIR.tmp/deb/"*.deb "$KDIR.tmp/tree"
    ver=$(ls "$KDIR.tmp/tree/lib/modules")
    depmod -b "$KDIR.tmp/tree" "$ver"
    cp "$KDIR.tmp/tree/boot/vmlinuz-$ver" "$KDIR.tmp/vmlinuz"
    rm -rf "$KDIR.tmp/deb"
    echo "$ver" > "$KDIR.tmp/version"
    rm -rf "$KDIR"
    mv "$KDIR.tmp" "$KDIR"
fi
ver=$(cat "$KDIR/version")
ln -sf kernel/vmlinuz "$OUT/vmlinuz"

# --- the initramfs --------------------------------------------------------

rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,usr/bin,lib/modules,etc,data,dev,proc,sys,run,tmp,var}
ln -s ../run "$ROOT/var/run"

# a binary and every library ldd names, at the same paths
copy_bin() {
    local bin=$1 dest=$2 lib
    cp -L "$bin" "$ROOT$dest"
    for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
        mkdir -p "$ROOT$(dirname "$lib")"
        cp -Ln "$lib" "$ROOT$lib"
    done
}

copy_bin "$(command -v busybox)" /bin/busybox
copy_bin "$(command -v wg)" /usr/bin/wg
copy_bin "$(command -v ip)" /usr/bin/ip        # busybox ip has no netns
copy_bin "$WG_APPLY" /usr/bin/wg-apply
copy_bin "$WG_APPLY-split" /usr/bin/wg-apply-split
copy_bin "$BIN/dstack-ctld" /usr/bin/dstack-ctld
copy_bin "$BIN/dstack-agent-sim" /usr/bin/dstack-agent-sim

# modules in the order modprobe would load them
: > "$ROOT/etc/modules"
for mod in wireguard veth; do
    modprobe -d "$KDIR/tree" -S "$ver" --show-depends "$mod" \
        | awk '$1 == "insmod" { print $2 }' \
        | while read -r ko; do
              name=$(basename "$ko")
              grep -qx "$name" "$ROOT/etc/modules" && continue
              cp "$ko" "$ROOT/lib/modules/$name"
              echo "$name" >> "$ROOT/etc/modules"
          done
done
grep -qx wireguard.ko "$ROOT/etc/modules" || die "no wireguard.ko in $ver"

cp "$HERE/init" "$ROOT/init"
chmod 755 "$ROOT/init"

# peers with random keys: 999 with two allowed IPs each, for the 1000-peer
# snapshot; 50 with 16 each, which wg-apply-split sends in pieces
perl -MMIME::Base64 -e '
    open my $r, "<", "/dev/urandom" or die;
    sub key { read $r, my $k, 32; return encode_base64($k, "") }
    open my $f, ">", "$ARGV[0]/peers999" or die;
    for my $i (1 .. 999) {
        printf $f "peer %s endpoint=192.168.77.%d:%d allowed=100.129.%d.%d/32,"
            . "fd00:77::%x/128\n", key(), 100 + $i % 100, 40000 + $i,
            $i >> 8, $i & 255, $i;
    }
    open $f, ">", "$ARGV[0]/peers50x16" or die;
    for my $i (1 .. 50) {
        printf $f "peer %s allowed=%s\n", key(), join ",",
            (map { "100.130.$i.$_/32" } 1 .. 8),
            (map { sprintf "fd00:130:%x::%x/128", $i, $_ } 1 .. 8);
    }
    open $f, ">", "$ARGV[0]/ips16" or die;
    print $f join(",", map { "100.131.0.$_/32" } 1 .. 16), "\n";
' "$ROOT/data"

(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/initrd.gz"
echo "$OUT/vmlinuz ($ver), $OUT/initrd.gz ($(du -k "$OUT/initrd.gz" | cut -f1) KiB)"
