#!/bin/bash
#
# vpc.sh up|down|exec: a whole dstack VPC on one machine, for the end-to-end
# test and the demo.  Each CVM is a network namespace with what a real CVM
# runs: the guest agent (dstack-agent-sim, all sharing one test KMS CA),
# nginx with the mesh module (inbound mutual TLS on 443, the outbound entry
# point on 127.0.0.1:80) and dstack-ctld; a gateway namespace plays the
# dstack gateway (nginx stream, TLS passthrough by SNI).
#
#   namespace  address      role
#   dv-gw      10.99.0.2    gateway: <app>-443s.gw.dstack.test -> that CVM:443
#   dv-srv     10.99.0.10   VPC server (dstack-ctld server + hub), app $SRV_APP
#   dv-n1..3   10.99.0.11.. nodes, apps $N1_APP.., WireGuard on udp 51820
#
# WireGuard is wireguard-go, whose control sockets all live in the one
# /var/run/wireguard the namespaces share, so each CVM names its interface
# after itself: wg-srv (the hub), wg-n1, wg-n2...
# The namespaces hang off a bridge in a namespace of their own (dv-lan), so
# nothing is added to the host's network.  Node endpoints: NODE_ENDPOINTS
# lists the nodes that advertise "<address>:51820" (default n1 n2: they talk
# directly; n3 goes through the hub, as a CVM without a mapped UDP port).
#
# Environment: DV_DIR (state, default /tmp/dv), DSTACK_BIN (build/bin),
# NGINX (/usr/sbin/nginx), NGX_MODULES (the two .so files), NODES (n1 n2 n3),
# DV_PREFIX (namespace names, default dv: dv-gw, dv-srv...) and DV_WG (the
# WireGuard interfaces' prefix: wg for dv, else <DV_PREFIX>wg), so that two
# VPCs (the test and the demo) can run side by side with their own DV_DIR.
#
#   vpc.sh up                  start everything, wait until every node joined
#   vpc.sh base-up             only the namespaces, the agents and the gateway
#                              (for tests that bring their own CVM software)
#   vpc.sh down                stop and remove everything (also after a failure)
#   vpc.sh exec CVM CMD...     run CMD inside CVM's namespace
#   vpc.sh node-start NAME     (re)start one node's dstack-ctld
#   vpc.sh node-stop NAME      stop it (SIGTERM; its WireGuard stays)
#   vpc.sh server-kill         SIGKILL the server's dstack-ctld
#   vpc.sh server-start        start it again
#   vpc.sh gw-restart          restart the gateway (cuts every mesh connection)
#   vpc.sh hub-restart         restart the hub's dstack-ctld
#   vpc.sh udp-block CVM...    drop all UDP between CVMs in their namespaces
#                              (nftables); the gateway's TCP path stays
#   vpc.sh udp-unblock CVM...  let it through again
#
# VPC_UDP=off blocks UDP in every CVM before anything starts, so WireGuard
# can only go through the relay (the mesh, over the gateway).  Nodes take
# VPC_WG_TRANSPORT (--transport, default auto) and NODE_KEEPALIVE and
# NODE_POLL_WAIT (--keepalive, --poll-wait) from the environment.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

DV_DIR=${DV_DIR:-/tmp/dv}
DSTACK_BIN=${DSTACK_BIN:-$root/build/bin}
NGINX=${NGINX:-/usr/sbin/nginx}
NGX_MODULES=${NGX_MODULES:-/usr/lib/nginx/modules/ngx_stream_module.so $root/build/nginx/ngx_http_dstack_mesh_module.so}
NODES=${NODES:-n1 n2 n3}
NODE_ENDPOINTS=${NODE_ENDPOINTS:-n1 n2}
P=${DV_PREFIX:-dv}
if [ "$P" = dv ]; then WGP=${DV_WG:-wg}; else WGP=${DV_WG:-${P}wg}; fi

DOMAIN=gw.dstack.test
LAN=10.99.0
SRV_APP=5e7e000000000000000000000000000000000001

declare -A IP=([gw]=$LAN.2 [srv]=$LAN.10 [n1]=$LAN.11 [n2]=$LAN.12 [n3]=$LAN.13
               [n4]=$LAN.14)
declare -A APP=([srv]=$SRV_APP
                [n1]=aaaa000000000000000000000000000000000011
                [n2]=aaaa000000000000000000000000000000000012
                [n3]=aaaa000000000000000000000000000000000013
                [n4]=aaaa000000000000000000000000000000000014)
declare -A TYPE=([n1]=worker [n2]=worker [n3]=db [n4]=worker)


log() { printf '%s\n' "$*" >&2; }
die() { log "vpc.sh: $*"; exit 1; }

ns() { local cvm=$1; shift; ip netns exec "$P-$cvm" "$@"; }

# starts a daemon in a CVM's namespace, in the background, and records its
# own pid: "ip netns exec" execs the command, so $! is the daemon itself
# (a backgrounded shell function would give the pid of a wrapper subshell)
spawn() {
    local pidfile=$1 log=$2 cvm=$3 pid
    shift 3
    ip netns exec "$P-$cvm" "$@" 2>>"$log" &
    pid=$!
    echo "$pid" > "$pidfile"
    wait_for "[ \"\$(readlink /proc/$pid/exe)\" = \"$(readlink -f "$1")\" ]" 5
}

# waits up to $2 seconds (default 20) for command $1 to succeed
wait_for() {
    local what=$1 seconds=${2:-20} i
    for ((i = 0; i < seconds * 10; i++)); do
        eval "$what" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "timed out waiting for: $what"
}


net_up() {
    local cvm
    ip netns add "$P-lan"
    ip -n "$P-lan" link add br0 type bridge
    ip -n "$P-lan" link set br0 up
    ip -n "$P-lan" link set lo up

    for cvm in gw srv $NODES; do
        cvm_net "$cvm"
    done
}

cvm_net() {
    local cvm=$1
    ip netns add "$P-$cvm"
    ip link add "$P-$cvm" netns "$P-lan" type veth peer name eth0 netns "$P-$cvm"
    ip -n "$P-lan" link set "$P-$cvm" master br0 up
    ip -n "$P-$cvm" addr add "${IP[$cvm]}/24" dev eth0
    ip -n "$P-$cvm" link set eth0 up
    ip -n "$P-$cvm" link set lo up
    # "ip netns exec" shows each process of the namespace these files as
    # /etc/hosts and /etc/resolv.conf (bind mounts): names under
    # dstack.internal come from the node's DNS server, which points
    # resolv.conf at itself (or, with VPC_NAMES=hosts, from its hosts block)
    mkdir -p "/etc/netns/$P-$cvm"
    printf '127.0.0.1 localhost\n%s %s\n' "${IP[$cvm]}" "$cvm" \
        > "/etc/netns/$P-$cvm/hosts"
    printf '# no resolver outside the VPC is reachable from %s\n' "$cvm" \
        > "/etc/netns/$P-$cvm/resolv.conf"
}


# the guest agent of one CVM, and its RA-TLS key and chain
agent_up() {
    local cvm=$1 dir=$DV_DIR/$1
    mkdir -p "$dir"
    spawn "$dir/agent.pid" "$dir/agent.log" "$cvm" \
        "$DSTACK_BIN/dstack-agent-sim" --socket "$dir/dstack.sock" \
        --ca-dir "$DV_DIR/kms-ca" --app-id "${APP[$cvm]}" --app-name "$cvm"
    wait_for "[ -S $dir/dstack.sock ]"
    "$root/tools/dstack-tls-key" "$dir/dstack.sock" "$dir/tls" "$cvm"
}


gateway_up() {
    local dir=$DV_DIR/gw cvm map=""
    mkdir -p "$dir"
    for cvm in srv $NODES; do
        map+="        ${APP[$cvm]}-443s.$DOMAIN ${IP[$cvm]}:443;"$'\n'
    done

    cat > "$dir/nginx.conf" <<EOF
$(load_modules)
pid $dir/nginx.pid;
error_log $dir/error.log info;
events {}
stream {
    map_hash_bucket_size 128;
    map \$ssl_preread_server_name \$cvm {
$map        default 127.0.0.1:1;
    }
    server {
        listen ${IP[gw]}:443;
        ssl_preread on;
        proxy_pass \$cvm;
    }
}
EOF
    ns gw "$NGINX" -p "$dir" -c "$dir/nginx.conf"
}


# nginx of one CVM: the inbound mesh in front of $2 (the local service), the
# outbound entry point on 127.0.0.1:80, and a backend on :8080 that says who
# called (reachable over WireGuard too)
cvm_nginx_up() {
    local cvm=$1 service=$2 dir=$DV_DIR/$1
    cat > "$dir/nginx.conf" <<EOF
$(load_modules)
pid $dir/nginx.pid;
error_log $dir/error.log info;
events {}
http {
    access_log $dir/access.log;
    client_body_temp_path $dir;
    proxy_temp_path $dir;
    fastcgi_temp_path $dir;
    uwsgi_temp_path $dir;
    scgi_temp_path $dir;

    mesh_certificate         $dir/tls/cert.pem;
    mesh_certificate_key     $dir/tls/key.pem;
    mesh_trusted_certificate $dir/tls/ca.pem;

    server {
        listen ${IP[$cvm]}:443 ssl;
        ssl_certificate        $dir/tls/cert.pem;
        ssl_certificate_key    $dir/tls/key.pem;
        ssl_client_certificate $dir/tls/ca.pem;
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        mesh_auth on;

        location / {
            proxy_pass http://$service;
            # the relay stream is an HTTP/1.1 upgrade
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$mesh_connection;
        }
    }

    server {
        listen 127.0.0.1:80;
        mesh_gateway $DOMAIN address=${IP[gw]}:443;
        mesh_agent_socket $dir/dstack.sock;

        location / {
            mesh_target \$http_x_dstack_target_app
                        port=\$http_x_dstack_target_port
                        instance=\$http_x_dstack_target_instance
                        tls=\$http_x_dstack_target_use_tls;
            proxy_read_timeout 330s;
        }
    }

    server {
        listen 8080;

        location / {
            return 200 "$cvm answers \$request_uri for \${http_x_dstack_app_id}\${remote_addr}\n";
        }
    }
}
EOF
    ns "$cvm" "$NGINX" -p "$dir" -c "$dir/nginx.conf"
}

load_modules() {
    local m
    for m in $NGX_MODULES; do
        echo "load_module $m;"
    done
}


server_start() {
    local dir=$DV_DIR/srv
    local apps=${APP[*]}
    spawn "$dir/ctld.pid" "$dir/ctld.log" srv \
        "$DSTACK_BIN/dstack-ctld" server --listen 127.0.0.1:8000 \
        --data-dir "$dir/data" --wg-endpoint "${IP[srv]}:51820" \
        --server-app-id "$SRV_APP" --gateway-domain "$DOMAIN" \
        --allowed-apps "${apps// /,}"
    wait_for "ns srv curl -sf http://127.0.0.1:8000/health"
}

hub_start() {
    local dir=$DV_DIR/srv
    spawn "$dir/hub.pid" "$dir/hub.log" srv \
        "$DSTACK_BIN/dstack-ctld" node --hub --data-dir "$dir/data" \
        --server-url http://127.0.0.1:8000 --interface "$WGP-srv" \
        --backend uapi --listen-port 51820
}

node_start() {
    local cvm=$1 dir=$DV_DIR/$1 endpoint=() extra=()
    [ -n "${NODE_KEEPALIVE:-}" ] && extra+=(--keepalive "$NODE_KEEPALIVE")
    [ -n "${NODE_POLL_WAIT:-}" ] && extra+=(--poll-wait "$NODE_POLL_WAIT")
    case " $NODE_ENDPOINTS " in
        *" $cvm "*) endpoint=(--endpoint "${IP[$cvm]}:51820") ;;
    esac
    # what this daemon logs starts here: node-start waits for its own lines
    stat -c %s "$dir/ctld.log" > "$dir/ctld.log.start" 2>/dev/null \
        || echo 0 > "$dir/ctld.log.start"
    spawn "$dir/ctld.pid" "$dir/ctld.log" "$cvm" \
        "$DSTACK_BIN/dstack-ctld" node \
        --agent-socket "$dir/dstack.sock" \
        --server-url http://127.0.0.1:80 --server-app-id "$SRV_APP" \
        --name "$cvm" --node-type "${TYPE[$cvm]}" \
        --interface "$WGP-$cvm" --backend uapi --listen-port 51820 \
        "${endpoint[@]}" "${extra[@]}" --state-dir "$dir/state" \
        --transport "${VPC_WG_TRANSPORT:-auto}" \
        --hosts-file "/etc/netns/$P-$cvm/hosts"
}

node_stop() {
    stop_pid "$DV_DIR/$1/ctld.pid" TERM
}

# a node has joined once its interface carries an address of the VPN
node_joined() {
    ns "$1" ip -4 -o addr show dev "$WGP-$1" 2>/dev/null | grep -q ' 100\.'
}

# the daemon started last has applied a peer set from the server: its own
# log lines say so (a restarted node finds its interface configured already)
node_synced() {
    local dir=$DV_DIR/$1
    tail -c "+$(($(cat "$dir/ctld.log.start") + 1))" "$dir/ctld.log" \
        | grep -q 'WireGuard peers'
}


# all UDP between CVMs dropped inside the namespace, both ways; loopback
# (the relay's sockets) and TCP (the gateway) untouched
udp_block() {
    local cvm
    for cvm in "$@"; do
        ns "$cvm" nft -f - <<EOF
table inet ${P}_noudp {
    chain in { type filter hook input priority 0; ip saddr $LAN.0/24 meta l4proto udp drop; }
    chain out { type filter hook output priority 0; ip daddr $LAN.0/24 meta l4proto udp drop; }
}
EOF
    done
}

udp_unblock() {
    local cvm
    for cvm in "$@"; do
        ns "$cvm" nft delete table inet "${P}_noudp" 2>/dev/null || true
    done
}


stop_pid() {
    local file=$1 sig=${2:-TERM} pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && die "process $pid ($file) does not stop"
    rm -f "$file"
}


base_up() {
    local cvm
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    down 2>/dev/null || true
    mkdir -p "$DV_DIR"

    net_up
    for cvm in srv $NODES; do
        agent_up "$cvm"
    done

    gateway_up
}

up() {
    local cvm
    base_up
    if [ "${VPC_UDP:-on}" = off ]; then
        # shellcheck disable=SC2086  # NODES is a list
        udp_block srv $NODES
    fi
    cvm_nginx_up srv 127.0.0.1:8000
    for cvm in $NODES; do
        cvm_nginx_up "$cvm" 127.0.0.1:8080
    done

    server_start
    hub_start
    for cvm in $NODES; do
        node_start "$cvm"
    done
    # the hub too: its interface (key, address) is what tests read first
    for cvm in srv $NODES; do
        wait_for "node_joined $cvm" 60
    done
}


down() {
    local cvm pidfile
    # nginx too gets TERM, a fast shutdown: a graceful one waits for the
    # nodes' long polls to end
    for pidfile in "$DV_DIR"/*/*.pid; do
        [ -e "$pidfile" ] || continue
        stop_pid "$pidfile" TERM
    done
    # wireguard-go exits with its TUN device, which goes with the namespace
    for cvm in gw srv n1 n2 n3 n4 lan; do
        ip netns pids "$P-$cvm" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
        ip netns del "$P-$cvm" 2>/dev/null || true
        rm -rf "/etc/netns/$P-$cvm"
    done
    rm -rf "$DV_DIR"
}


case ${1:-} in
    up)            up ;;
    base-up)       base_up ;;
    down)          down ;;
    exec)          shift; ns "$@" ;;
    node-start)    node_start "$2"; wait_for "node_joined $2 && node_synced $2" 60 ;;
    node-stop)     node_stop "$2" ;;
    node-add)      cvm_net "$2"; agent_up "$2"; cvm_nginx_up "$2" 127.0.0.1:8080
                   node_start "$2"; wait_for "node_joined $2" 60 ;;
    server-kill)   stop_pid "$DV_DIR/srv/ctld.pid" KILL ;;
    server-start)  server_start ;;
    gw-restart)    stop_pid "$DV_DIR/gw/nginx.pid" TERM; gateway_up ;;
    hub-restart)   stop_pid "$DV_DIR/srv/hub.pid" TERM; hub_start ;;
    udp-block)     shift; udp_block "$@" ;;
    udp-unblock)   shift; udp_unblock "$@" ;;
    *)             sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
