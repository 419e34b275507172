#!/bin/bash
#
# demo.sh: `make demo`.  A local dstack VPC (tests/vpc/vpc.sh: the gateway,
# the server CVM and two node CVMs in network namespaces, each CVM with its
# guest agent, nginx with the mesh module and dstack-ctld), then, step by
# step: node registration, addresses, WireGuard, discovery through the mesh,
# a verified mesh call between two nodes, a ping over WireGuard by name.
#
#   demo.sh            tell the story, leave the VPC running until Ctrl-C
#   ONCE=1 demo.sh     tell the story, tear down; exit 0 only if every step worked
#   VPC_UDP=off        all UDP between the CVMs dropped (nftables in each
#                      namespace), as in a dstack deployment with the gateway
#                      alone: WireGuard goes through the relay over the mesh
#
# Environment: DV_PREFIX (namespaces, default dd: dd-srv, dd-n1...), DV_DIR
# (state, default /tmp/dv-demo), DSTACK_BIN (build/bin), as vpc.sh.  The
# VPC is always removed on exit, after a failure too.

set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
vpc=$here/vpc.sh

export DV_PREFIX=${DV_PREFIX:-dd}
export DV_DIR=${DV_DIR:-/tmp/dv-demo}
export DSTACK_BIN=${DSTACK_BIN:-$root/build/bin}
export NODES="n1 n2"
export NODE_ENDPOINTS="n1 n2"
ONCE=${ONCE:-}
[ "$ONCE" = 0 ] && ONCE=
export VPC_UDP=${VPC_UDP:-on}
# on the relay, the nodes withdraw their endpoints after their next poll
[ "$VPC_UDP" = off ] && export NODE_POLL_WAIT=${NODE_POLL_WAIT:-5s}
WGP=${DV_WG:-${DV_PREFIX}wg}
[ "$DV_PREFIX" = dv ] && WGP=${DV_WG:-wg}

failed=0
step_no=0

B='' G='' R='' N=''
if [ -t 1 ]; then B=$'\033[1m' G=$'\033[32m' R=$'\033[31m' N=$'\033[0m'; fi

step() {
    step_no=$((step_no + 1))
    printf '\n%s==> %d. %s%s\n' "$B" "$step_no" "$*" "$N"
}
show() { printf '    $ %s\n' "$*"; }
ok()   { printf '    %sok%s  %s\n' "$G" "$N" "$*"; }
bad()  { printf '    %sFAILED%s  %s\n' "$R" "$N" "$*"; failed=$((failed + 1)); }
indent() { sed 's/^/    /'; }

in_cvm() { bash "$vpc" exec "$@"; }

sleeper=
cleanup() {
    trap - EXIT INT TERM
    [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null
    printf '\n==> tearing the VPC down\n'
    # nginx's fast shutdown first: a graceful one would wait for the long polls
    for f in "$DV_DIR"/*/nginx.pid; do
        [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null
    done
    bash "$vpc" down >/dev/null 2>&1
    rm -f /var/run/wireguard/"$WGP"-*.sock
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

agent_app_id() {
    curl -sS --max-time 5 --unix-socket "$DV_DIR/$1/dstack.sock" http://dstack/Info |
        perl -MJSON::PP -e 'print decode_json(do { local $/; <STDIN> })->{app_id}'
}

[ "$(id -u)" = 0 ] || { echo "demo.sh: needs root (network namespaces)" >&2; exit 1; }
for tool in "$DSTACK_BIN/dstack-ctld" "$DSTACK_BIN/dstack-agent-sim" \
            "$root/build/nginx/ngx_http_dstack_mesh_module.so"; do
    [ -e "$tool" ] || { echo "demo.sh: $tool missing: run make first" >&2; exit 1; }
done

start=$SECONDS
udp_note=
[ "$VPC_UDP" = off ] && udp_note="; all UDP between the CVMs dropped"
step "Starting the VPC: gateway, server CVM, nodes n1 and n2 (namespaces $DV_PREFIX-*$udp_note)"
if ! bash "$vpc" up; then
    bad "the VPC did not come up; logs under $DV_DIR"
    for f in "$DV_DIR"/*/*.log; do
        [ -s "$f" ] && { echo "--- $f"; tail -5 "$f"; }
    done
    exit 1
fi
ok "up in $((SECONDS - start)) s: each CVM runs dstack-agent-sim, nginx + the mesh module, dstack-ctld"

SRV=$(agent_app_id srv)
N1=$(agent_app_id n1)
N2=$(agent_app_id n2)
printf '    app ids (from each guest agent): server %s\n' "$SRV"
printf '                                     n1     %s\n' "$N1"
printf '                                     n2     %s\n' "$N2"

step "Node registration: the server's registry"
show "dstack-ctld nodes list            (on the server CVM)"
list=$(in_cvm srv "$DSTACK_BIN/dstack-ctld" nodes list --data-dir "$DV_DIR/srv/data" \
           --listen 127.0.0.1:8000 2>&1)
indent <<< "$list"
if grep -qw n1 <<< "$list" && grep -qw n2 <<< "$list"; then
    ok "n1 and n2 registered with one-time keys and joined"
else
    bad "n1 and n2 are not both in the registry"
fi

step "Addresses on the VPN (100.128.0.0/10)"
declare -A ADDR
for cvm in srv n1 n2; do
    ADDR[$cvm]=$(in_cvm "$cvm" ip -4 -o addr show dev "$WGP-$cvm" 2>/dev/null |
                 awk '{ print $4 }')
    printf '    %-4s %-8s %s\n' "$cvm" "$WGP-$cvm" "${ADDR[$cvm]:-none}"
    [[ ${ADDR[$cvm]} == 100.* ]] || bad "$cvm has no VPN address"
done
[[ ${ADDR[n1]} == 100.* && ${ADDR[n2]} == 100.* ]] && ok "every node has its address"

# on the relay: wait until both nodes moved and withdrew their endpoints
relay_settled() {
    local cvm other ep
    for cvm in n1 n2; do
        other=n1; [ "$cvm" = n1 ] && other=n2
        ep=$(in_cvm "$cvm" wg show "$WGP-$cvm" endpoints 2>/dev/null)
        grep -q '127\.0\.0\.1:' <<< "$ep" || return 1
        in_cvm "$cvm" wg show "$WGP-$cvm" allowed-ips 2>/dev/null |
            grep -q "[[:space:]]${ADDR[$other]%/*}/32\b" && return 1
    done
    return 0
}
if [ "$VPC_UDP" = off ]; then
    for _ in $(seq 150); do relay_settled && break; sleep 0.2; done
fi

step "WireGuard (wireguard-go): each CVM's interface and peers"
for cvm in srv n1 n2; do
    show "wg show $WGP-$cvm                 (on $cvm)"
    wg_out=$(in_cvm "$cvm" wg show "$WGP-$cvm" 2>&1)
    grep -E '^(interface|peer)|endpoint|allowed ips|latest handshake' <<< "$wg_out" | indent
    grep -q '^peer' <<< "$wg_out" || bad "$cvm has no WireGuard peer"
done
# what the sentence below claims, read back from WireGuard itself
peering_ok=1
if [ "$VPC_UDP" = off ]; then
    show "dstack-ctld's log on n1: the path it chose"
    grep -E 'the path to the hub|withdrawing' "$DV_DIR/n1/ctld.log" | tail -2 | indent
    show "dstack-ctld status                 (on n1)"
    st=$(in_cvm n1 "$DSTACK_BIN/dstack-ctld" status --state-dir "$DV_DIR/n1/state" 2>&1)
    indent <<< "$st"
    grep -q 'transport relay' <<< "$st" || bad "n1's status does not say relay"
    if relay_settled; then
        ok "n1 and n2 reach the hub through the relay (their hub endpoint is the node's own loopback socket) and peer with nobody else"
    else
        bad "the nodes did not both move to the relay, or still peer directly"
    fi
    peering_ok=
fi
for pair in "n1 n2" "n2 n1"; do
    [ "$VPC_UDP" = off ] && break
    read -r cvm other <<< "$pair"
    ips=$(in_cvm "$cvm" wg show "$WGP-$cvm" allowed-ips 2>/dev/null)
    grep -q "[[:space:]]${ADDR[$other]%/*}/32\b" <<< "$ips" \
        || { bad "$cvm has no direct peer for $other (${ADDR[$other]%/*}/32)"; peering_ok=; }
    grep -q "[[:space:]]100\.128\.0\.0/10\b" <<< "$ips" \
        || { bad "$cvm has no hub peer for the pool"; peering_ok=; }
done
[ -n "$peering_ok" ] &&
    ok "n1 and n2 peer directly (both have endpoints) and with the hub (the whole pool)"

step "Discovery through the mesh (the original API: GET /api/discover/worker)"
show "curl -H 'x-dstack-target-app: $SRV' http://127.0.0.1/api/discover/worker   (on n1)"
disc=$(in_cvm n1 curl -sS --max-time 20 -H "x-dstack-target-app: $SRV" \
           http://127.0.0.1/api/discover/worker 2>&1)
perl -MJSON::PP -e 'print JSON::PP->new->pretty->canonical->encode(decode_json($ARGV[0]))' \
    "$disc" 2>/dev/null | indent || indent <<< "$disc"
if [[ $disc == *'"count":2'* ]]; then
    ok "n1's nginx reached the server through the gateway with mutual RA-TLS; 2 workers"
else
    bad "discovery did not list both workers"
fi

step "A mesh call from n1 to n2's backend: the backend sees the verified caller"
show "curl -H 'x-dstack-target-app: $N2' http://127.0.0.1/hello   (on n1)"
call=$(in_cvm n1 curl -sS --max-time 20 -H "x-dstack-target-app: $N2" \
           http://127.0.0.1/hello 2>&1)
indent <<< "$call"
if [[ $call == "n2 answers /hello for $N1"* ]]; then
    ok "n2's nginx read n1's app_id from its RA-TLS certificate: $N1"
else
    bad "the mesh call did not come back with n1's app_id"
fi

step "Traffic over WireGuard, by name"
show "ping -c 3 n2.dstack.internal      (on n1)"
if ping_out=$(in_cvm n1 ping -c 3 -i 0.3 -W 5 n2.dstack.internal 2>&1); then
    grep -E '^PING|bytes from|packet loss' <<< "$ping_out" | indent
    if [ "$VPC_UDP" = off ]; then
        ok "n1 -> n2 over the tunnel (${ADDR[n2]%/*}), through the relay and the hub: no UDP left the CVMs"
    else
        ok "n1 -> n2 over the tunnel (${ADDR[n2]%/*})"
    fi
else
    indent <<< "$ping_out"
    bad "n1 cannot ping n2.dstack.internal"
fi

printf '\n'
if [ "$failed" -gt 0 ]; then
    printf '%s%d step(s) failed%s (logs under %s)\n' "$R" "$failed" "$N" "$DV_DIR"
    exit 1
fi
printf '%sEvery step worked%s (%d s).\n' "$B" "$N" "$((SECONDS - start))"

if [ -n "$ONCE" ]; then
    exit 0
fi

cat <<EOF

The VPC keeps running; try, in another terminal:
    bash $vpc exec n2 curl -H 'x-dstack-target-app: $N1' http://127.0.0.1/hi
    bash $vpc exec n1 wg show $WGP-n1
Ctrl-C stops and removes it.
EOF
trap 'exit 0' INT TERM
sleep infinity &
sleeper=$!
wait $sleeper
