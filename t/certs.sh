#!/bin/bash
#
# t/certs.sh OUTDIR: the certificates of the nginx test suite, issued the way
# CVMs get theirs, by guest-agent simulators (dstack-agent-sim).
#
#   OUTDIR/ca/                 test KMS CA directory (kept across runs)
#   OUTDIR/ca.crt              its certificate, what peers trust
#   OUTDIR/app-{a,b,c}.key     leaf keys of three apps, PKCS#8 P-256
#   OUTDIR/app-{a,b,c}.crt     leaf followed by the CA (ssl_certificate)
#   OUTDIR/other-ca/, other-ca.crt, other.{key,crt}
#                              app-a's app id under a second, untrusted CA
#   OUTDIR/noext.{key,crt}     signed by the test CA, no app_id extension
#   OUTDIR/badext.{key,crt}    signed by the test CA, malformed app_id
#   OUTDIR/gateway.{key,crt}   signed by the test CA for *.gw.test, no app_id
#   OUTDIR/gateway-other-ca.{key,crt}    the same names, signed by the other CA
#   OUTDIR/gateway-wrong-name.{key,crt}  the test CA, for *.elsewhere.test
#   OUTDIR/corrupt-chain.crt   app-a's chain with a damaged certificate inside
#   OUTDIR/expired.{key,crt}, expiring.{key,crt}
#                              signed by the test CA, no app_id, valid until
#                              yesterday / for three more days
#
# Every leaf: alt name localhost, serverAuth and clientAuth, fetched with
# tools/dstack-tls-key as a CVM fetches its own.  Re-running
# reissues every leaf and keeps the CAs.  The simulator is looked for in
# $DSTACK_BIN (default build/bin next to this script).

set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

out=$1
bin=${DSTACK_BIN:-$(dirname "$0")/../build/bin}
sim=$bin/dstack-agent-sim
tls_key=$(dirname "$0")/../tools/dstack-tls-key

[ -x "$sim" ] || { echo "$0: $sim not found: run make first" >&2; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)

# unix socket paths must stay short: a private directory under /tmp
work=$(mktemp -d /tmp/dstack-certs.XXXXXX)
pids=()

cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# start NAME APP_ID CA_DIR: one simulated CVM, logging to $work/NAME.log
start() {
    "$sim" --socket "$work/$1.sock" --ca-dir "$3" --app-id "$2" \
        --app-name "$1" 2>>"$work/$1.log" &
    pids+=($!)
}

# the socket appears once the simulator accepts connections
wait_ready() {
    local i
    for i in $(seq 100); do
        [ -S "$work/$1.sock" ] && return 0
        sleep 0.05
    done
    echo "$0: simulator $1 did not start:" >&2
    cat "$work/$1.log" >&2
    return 1
}

# fetch NAME FILE_PREFIX: GetTlsKey from simulator NAME, the way a CVM gets
# its key, into FILE_PREFIX.key and FILE_PREFIX.crt (leaf, then CA)
fetch() {
    "$tls_key" "$work/$1.sock" "$work/$1.tls" localhost
    cp -L "$work/$1.tls/key.pem" "$2.key"
    cp -L "$work/$1.tls/cert.pem" "$2.crt"
}

# simulators for one CA directory start together, as CVMs booting at once
start app-a aaaa000000000000000000000000000000000001 "$out/ca"
start app-b bbbb000000000000000000000000000000000002 "$out/ca"
start app-c cccc000000000000000000000000000000000003 "$out/ca"
start other aaaa000000000000000000000000000000000001 "$out/other-ca"

for name in app-a app-b app-c other; do
    wait_ready "$name"
done

for name in app-a app-b app-c; do
    fetch "$name" "$out/$name"
done
fetch other "$out/other"

cp "$out/ca/ca.crt" "$out/ca.crt"
cp "$out/other-ca/ca.crt" "$out/other-ca.crt"

# The simulator always writes a well-formed app_id extension; these come
# from the openssl CLI with the test CA's key.
# openssl_leaf NAME [EXTENSION_LINE...]: OUTDIR/NAME.{key,crt}, signed by
# the CA in $ca (default: the test CA)
openssl_leaf() {
    local name=$1 ca=${ca:-$out/ca}
    shift
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
        -subj "/CN=$name" -keyout "$out/$name.key" -out "$work/$name.csr" \
        2>"$work/openssl.log"
    openssl x509 -req -in "$work/$name.csr" -days 365 \
        -CA "$ca/ca.crt" -CAkey "$ca/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" \
        -extfile <(printf '%s\n' \
            'basicConstraints = critical, CA:FALSE' \
            'keyUsage = critical, digitalSignature' \
            'extendedKeyUsage = serverAuth, clientAuth' \
            'subjectAltName = DNS:localhost' "$@") \
        -out "$work/$name.leaf.crt" 2>>"$work/openssl.log"
    cat "$work/$name.leaf.crt" "$ca/ca.crt" > "$out/$name.crt"
}

app_id_oid=1.3.6.1.4.1.62397.1.3

openssl_leaf noext
# a gateway that terminates TLS itself (tls=off targets) for *.gw.test
openssl_leaf gateway "subjectAltName = DNS:*.gw.test"
# gateways that must not be trusted: the right names from another CA, and
# the test CA's certificate for other names
ca=$out/other-ca openssl_leaf gateway-other-ca "subjectAltName = DNS:*.gw.test"
openssl_leaf gateway-wrong-name "subjectAltName = DNS:*.elsewhere.test"
# the inner value is a UTF8String where an OCTET STRING belongs
openssl_leaf badext "$app_id_oid = DER:0C:02:AA:AA"

for name in app-a app-b app-c noext badext gateway; do
    openssl verify -CAfile "$out/ca.crt" "$out/$name.crt" >/dev/null
done
openssl verify -CAfile "$out/other-ca.crt" "$out/other.crt" >/dev/null

# Identities that mesh_certificate refuses or warns about: app-a's chain
# with a damaged certificate between leaf and CA; leaves (no app_id
# needed) that expired yesterday or expire in three days.
{
    openssl x509 -in "$out/app-a.crt"
    printf '%s\n' '-----BEGIN CERTIFICATE-----' 'MIIBdamaged!!' \
        '-----END CERTIFICATE-----'
    cat "$out/ca.crt"
} > "$out/corrupt-chain.crt"

for spec in expired:-1 expiring:3; do
    name=${spec%%:*}
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
        -subj "/CN=$name" -keyout "$out/$name.key" -out "$work/$name.csr" \
        2>"$work/openssl.log"
    openssl x509 -req -in "$work/$name.csr" -days "${spec#*:}" \
        -CA "$out/ca/ca.crt" -CAkey "$out/ca/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" \
        -out "$work/$name.leaf.crt" 2>>"$work/openssl.log"
    cat "$work/$name.leaf.crt" "$out/ca.crt" > "$out/$name.crt"
done

echo "certificates in $out"
