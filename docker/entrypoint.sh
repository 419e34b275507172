#!/bin/bash
#
# entrypoint.sh: the dstack-vpc container.  The role comes from the same
# environment variables as the original dstack-vpc image:
#
#   VPC_SERVER_ENABLED=true   the VPC server: nginx (inbound mutual RA-TLS on
#                             443 with mesh_auth, in front of `dstack-ctld
#                             server` on MESH_BACKEND, a unix socket only
#                             nginx's group can open) and the WireGuard hub
#   otherwise                 a node: nginx (the outbound mesh entry point on
#                             127.0.0.1:80, inbound 443 when MESH_BACKEND is
#                             set) and `dstack-ctld node`
#
# Both roles: the RA-TLS key and chain from the guest agent (dstack-tls-key),
# renewed before they expire by `dstack-tls-key watch` (nginx reloaded),
# nginx.conf rendered into $DSTACK_VPC_CONFIG_DIR, every process supervised
# (restarted when it dies, at most RESTART_MAX times in RESTART_WINDOW
# seconds, then the container exits 1), SIGTERM/SIGINT passed on (exit 0).
# A misconfiguration stops it at once with status 1 and a message naming the
# variable.  Variables: README.md, "Deployment".

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

log() { printf 'dstack-vpc: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_true() {
    case ${1,,} in
        1|true|yes|on) return 0 ;;
        ''|0|false|no|off) return 1 ;;
        *) die "$2: \"$1\" is not a boolean (true or false)" ;;
    esac
}

is_hex_id() { [[ $1 =~ ^[0-9a-fA-F]{2,128}$ ]] && (( ${#1} % 2 == 0 )); }

# --- settings -------------------------------------------------------------

AGENT_SOCKET=${DSTACK_AGENT_SOCKET:-/var/run/dstack.sock}
CONFIG_DIR=${DSTACK_VPC_CONFIG_DIR:-/etc/dstack-vpc}
DATA_DIR=${DSTACK_VPC_DATA_DIR:-/var/lib/dstack-vpc}
NGINX=${NGINX:-/usr/sbin/nginx}
NGINX_USER=${NGINX_USER:-www-data}
NGX_MODULES=${NGX_MODULES:-/usr/lib/nginx/modules/ngx_http_dstack_mesh_module.so}
CTLD=${DSTACK_CTLD:-dstack-ctld}
TLS_KEY=${DSTACK_TLS_KEY:-}
if [ -z "$TLS_KEY" ]; then
    if command -v dstack-tls-key >/dev/null; then TLS_KEY=dstack-tls-key
    else TLS_KEY=$here/../tools/dstack-tls-key; fi
fi

MESH_LISTEN=${MESH_LISTEN:-443}
MESH_ENTRY=${MESH_ENTRY:-127.0.0.1:80}
MESH_METRICS_LISTEN=${MESH_METRICS_LISTEN-127.0.0.1:9113}
WG_INTERFACE=${VPC_WG_INTERFACE:-wg-dstack}
WG_BACKEND=${VPC_WG_BACKEND:-auto}
WG_PORT=${VPC_WG_PORT:-51820}
WG_ENDPOINT=${VPC_WG_ENDPOINT:-}
WG_TRANSPORT=${VPC_WG_TRANSPORT:-auto}
HOSTS_FILE=${VPC_HOSTS_FILE:-/etc/hosts}
LOG_LEVEL=${VPC_LOG_LEVEL:-info}
RESTART_MAX=${RESTART_MAX:-5}
RESTART_WINDOW=${RESTART_WINDOW:-60}

SERVER=false
is_true "${VPC_SERVER_ENABLED:-false}" VPC_SERVER_ENABLED && SERVER=true

if ! [[ $WG_PORT =~ ^[0-9]+$ ]] || (( WG_PORT < 1 || WG_PORT > 65535 )); then
    die "VPC_WG_PORT: \"$WG_PORT\" is not a port number"
fi
case $WG_TRANSPORT in
    auto|udp|relay) ;;
    *) die "VPC_WG_TRANSPORT: \"$WG_TRANSPORT\" is not auto, udp or relay" ;;
esac
[[ $RESTART_MAX =~ ^[0-9]+$ && $RESTART_WINDOW =~ ^[0-9]+$ ]] ||
    die "RESTART_MAX and RESTART_WINDOW must be whole numbers"

if $SERVER; then
    ROLE=server
    MESH_BACKEND=${MESH_BACKEND:-unix:/run/dstack-vpc/ctld.sock}
    # empty: this server's own app alone, once the guest agent has told it
    ALLOWED_APPS=${VPC_ALLOWED_APPS:-${ALLOWED_APPS:-}}
    [ -n "$WG_ENDPOINT" ] || log "no VPC_WG_ENDPOINT: every node reaches the hub" \
        "through the relay over the gateway (set it to the host:port forwarded" \
        "to this CVM's WireGuard port $WG_PORT for direct UDP)"
    case $MESH_BACKEND in
        unix:/*)
            # a directory of its own: its group and mode are set below
            sock_dir=$(dirname "${MESH_BACKEND#unix:}")
            if [ -d "$sock_dir" ] && [ -n "$(find "$sock_dir" -maxdepth 0 -perm -o+w)" ]; then
                die "MESH_BACKEND: $sock_dir is writable by everyone; give the socket a directory of its own"
            fi ;;
        unix:*) die "MESH_BACKEND: \"$MESH_BACKEND\" is not unix:/absolute/path nor host:port" ;;
        *) log "warning: MESH_BACKEND $MESH_BACKEND is TCP: every process of this" \
               "CVM can reach dstack-ctld there and claim any app id" ;;
    esac
    if [ "${ALLOWED_APPS,,}" != any ]; then
        for app in ${ALLOWED_APPS//,/ }; do
            is_hex_id "$app" || die "VPC_ALLOWED_APPS: \"$app\" is not an app id (hex) nor \"any\""
        done
    fi
    # the VPC's size sizes what fronts the server: every node parks a peer
    # poll, which is a client and an upstream connection in nginx and a
    # connection of dstack-ctld (plus room for joins, discovery, the hub)
    MAX_NODES=${VPC_MAX_NODES:-1000}
    if ! [[ $MAX_NODES =~ ^[0-9]{1,7}$ ]] || (( MAX_NODES < 1 || MAX_NODES > 1000000 )); then
        die "VPC_MAX_NODES: \"$MAX_NODES\" is not a number of nodes (1 to 1000000)"
    fi
    CTLD_CONNECTIONS=$(( MAX_NODES + 1024 > 16384 ? MAX_NODES + 1024 : 16384 ))
    NGX_CONNECTIONS=$(( 2 * (MAX_NODES + 1024) > 4096 ? 2 * (MAX_NODES + 1024) : 4096 ))
    NGX_NOFILE=$(( NGX_CONNECTIONS + 1024 ))
    KEEPALIVE=$(( MAX_NODES > 1024 ? MAX_NODES : 1024 ))
    need=$(( NGX_NOFILE > CTLD_CONNECTIONS + 64 ? NGX_NOFILE : CTLD_CONNECTIONS + 64 ))
    nofile=$(ulimit -Hn)
    if [ "$nofile" != unlimited ] && (( nofile < need )); then
        die "VPC_MAX_NODES=$MAX_NODES needs $need open files per process;" \
            "the hard limit here is $nofile: raise it (docker run --ulimit" \
            "nofile=$need:$need, or ulimits: nofile: in compose)"
    fi
else
    ROLE=node
    MESH_BACKEND=${MESH_BACKEND:-}
    SERVER_APP_ID=${VPC_SERVER_APP_ID:-}
    # the original nodes knew the server by its gateway URL:
    # https://<app_id>-<port>s.<gateway domain>
    if [ -z "$SERVER_APP_ID" ] &&
       [[ ${VPC_SERVER_URL:-} =~ ^https?://([0-9a-fA-F]+)-[0-9]+s?\. ]]; then
        SERVER_APP_ID=${BASH_REMATCH[1]}
    fi
    SERVER_APP_ID=${SERVER_APP_ID:-self}
    case $SERVER_APP_ID in
        self) ;;
        *) is_hex_id "$SERVER_APP_ID" ||
               die "VPC_SERVER_APP_ID: \"$SERVER_APP_ID\" is not an app id (hex) nor \"self\"" ;;
    esac
    if [ -n "${VPC_NODE_NAME:-}" ]; then
        [[ ${VPC_NODE_NAME,,} =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] ||
            die "VPC_NODE_NAME: \"$VPC_NODE_NAME\" is not a DNS label"
    fi
fi

# --- the guest agent ------------------------------------------------------

[ -S "$AGENT_SOCKET" ] || die "DSTACK_AGENT_SOCKET: $AGENT_SOCKET is not a socket:" \
    "no dstack guest agent (mount /var/run/dstack.sock into the container)"

agent_info=$(curl -sS --fail --max-time 10 --unix-socket "$AGENT_SOCKET" \
                  http://dstack/Info 2>&1) ||
    die "DSTACK_AGENT_SOCKET: the guest agent on $AGENT_SOCKET does not answer: $agent_info"

json_field() {
    perl -MJSON::PP -e '
        my $v = eval { decode_json(do { local $/; <STDIN> }) } or exit 1;
        for my $k (split /\./, $ARGV[0]) {
            ref $v eq "HASH" or exit 1;
            $v = $v->{$k};
            $v = eval { decode_json($v) } // $v if !ref $v && defined $v && $v =~ /^\{/;
        }
        defined $v && !ref $v or exit 1;
        print $v' "$1"
}

APP_ID=$(json_field app_id <<< "$agent_info") ||
    die "the guest agent's /Info has no app_id"
INSTANCE_ID=$(json_field instance_id <<< "$agent_info" || true)

if [ "$ROLE" = server ]; then
    if [ -z "$ALLOWED_APPS" ]; then
        is_hex_id "$APP_ID" || die "the guest agent's app_id \"$APP_ID\" is not an app id"
        ALLOWED_APPS=$APP_ID
        log "apps allowed: $APP_ID (this server's own app; set VPC_ALLOWED_APPS for others)"
    elif [ "${ALLOWED_APPS,,}" = any ]; then
        log "warning: VPC_ALLOWED_APPS=any: every app the KMS certifies can join the VPC"
    else
        log "apps allowed: $ALLOWED_APPS"
    fi
fi

# the gateway domain: given, or from the agent when it says (a field of
# /Info, or of its vm_config)
GATEWAY_DOMAIN=${DSTACK_GATEWAY_DOMAIN:-}
if [ -z "$GATEWAY_DOMAIN" ]; then
    GATEWAY_DOMAIN=$(json_field gateway_domain <<< "$agent_info" ||
                     json_field vm_config.gateway_domain <<< "$agent_info" || true)
    [ -n "$GATEWAY_DOMAIN" ] ||
        die "DSTACK_GATEWAY_DOMAIN is required: the dstack gateway's domain" \
            "(the guest agent does not tell it), e.g. DSTACK_GATEWAY_DOMAIN=gw.example.com"
    log "gateway domain from the guest agent: $GATEWAY_DOMAIN"
fi
[[ $GATEWAY_DOMAIN =~ ^[A-Za-z0-9.-]+(:[0-9]+)?$ ]] ||
    die "DSTACK_GATEWAY_DOMAIN: \"$GATEWAY_DOMAIN\" is not a domain name"
GATEWAY_ADDRESS=${DSTACK_GATEWAY_ADDRESS:-}

resolver_line() {
    local servers=${DNS_RESOLVER:-} s out=""
    if [ -z "$servers" ]; then
        servers=$(awk '$1 == "nameserver" { print $2 }' /etc/resolv.conf 2>/dev/null |
                  tr '\n' ' ')
    fi
    [ -n "${servers// /}" ] || die "no DNS resolver for the gateway names: set" \
        "DSTACK_GATEWAY_ADDRESS (host:port of the gateway) or DNS_RESOLVER"
    for s in $servers; do
        case $s in *:*) [[ $s == \[* ]] || s="[$s]" ;; esac
        out+=" $s"
    done
    echo "resolver$out valid=30s ipv6=off;"
}

# --- configuration --------------------------------------------------------

TLS_DIR=$CONFIG_DIR/tls
NGX_DIR=$CONFIG_DIR/nginx
mkdir -p "$CONFIG_DIR" "$NGX_DIR" "$DATA_DIR"

# the server trusts x-dstack-app-id, so only nginx may reach it: its socket
# (dstack-ctld makes it 0660) in a directory of nginx's group, 0750; the
# set-group-id bit gives the socket that group
if [ -n "${sock_dir:-}" ]; then
    mkdir -p "$sock_dir"
    if (( EUID == 0 )); then
        nginx_group=$(id -gn "$NGINX_USER") ||
            die "NGINX_USER: \"$NGINX_USER\" is not a user"
        chown "root:$nginx_group" "$sock_dir"
        chmod 2750 "$sock_dir"
    else
        chmod 0750 "$sock_dir"
    fi
fi

alt_names=()
[ "$ROLE" = node ] && [ -n "${VPC_NODE_NAME:-}" ] && alt_names+=("$VPC_NODE_NAME")
"$TLS_KEY" "$AGENT_SOCKET" "$TLS_DIR" "${alt_names[@]}" ||
    die "could not get the RA-TLS key and chain from the guest agent ($AGENT_SOCKET)"

render_nginx() {
    local m gateway resolver="" allow backend trusted=""
    if [ -n "$GATEWAY_ADDRESS" ]; then
        gateway="$GATEWAY_DOMAIN address=$GATEWAY_ADDRESS"
    else
        gateway=$GATEWAY_DOMAIN
        resolver=$(resolver_line)
    fi
    [ -r /etc/ssl/certs/ca-certificates.crt ] &&
        trusted="mesh_gateway_trusted_certificate /etc/ssl/certs/ca-certificates.crt;"
    allow=${ALLOWED_APPS:-any}
    allow=${allow//,/ }
    backend=http://$MESH_BACKEND
    if [[ $MESH_BACKEND == unix:* ]]; then backend="http://$MESH_BACKEND:"; fi

    for m in $NGX_MODULES; do
        echo "load_module $m;"
    done
    # workers in the group of the server's socket (a master run as root
    # would otherwise give them nobody's)
    if [ "$ROLE" = server ] && (( EUID == 0 )); then echo "user $NGINX_USER;"; fi
    # the server: sized for VPC_MAX_NODES, each worker for all of them (the
    # kernel does not spread connections evenly between workers)
    if [ "$ROLE" = server ]; then
        echo "worker_rlimit_nofile $NGX_NOFILE;"
        events="worker_connections $NGX_CONNECTIONS;"
    else
        events="worker_connections 4096;"
    fi
    cat <<EOF
pid $NGX_DIR/nginx.pid;
error_log stderr warn;
worker_processes auto;
events { $events }

http {
    log_format mesh '\$remote_addr app=\$mesh_app_id "\$request" \$status '
                    '\$body_bytes_sent \$request_time';
    access_log off;
    client_body_temp_path $NGX_DIR/client_body;
    proxy_temp_path $NGX_DIR/proxy;
    fastcgi_temp_path $NGX_DIR/fastcgi;
    uwsgi_temp_path $NGX_DIR/uwsgi;
    scgi_temp_path $NGX_DIR/scgi;

    mesh_certificate          $TLS_DIR/cert.pem;
    mesh_certificate_key      $TLS_DIR/key.pem;
    mesh_trusted_certificate  $TLS_DIR/ca.pem;
EOF
    if [ "$ROLE" = server ]; then
        # connections to dstack-ctld kept open: a node's next poll reuses
        # the one its last poll used instead of connecting again
        cat <<EOF

    upstream dstack_ctld {
        server $MESH_BACKEND;
        keepalive $KEEPALIVE;
        keepalive_requests 1000000;
        keepalive_timeout 600s;
    }
EOF
        backend=http://dstack_ctld
    fi
    if [ -n "$MESH_BACKEND" ]; then
        cat <<EOF

    # inbound: mutual RA-TLS, the caller's app_id checked here
    server {
        listen $MESH_LISTEN ssl http2;
        ssl_certificate         $TLS_DIR/cert.pem;
        ssl_certificate_key     $TLS_DIR/key.pem;
        ssl_client_certificate  $TLS_DIR/ca.pem;
        ssl_verify_client       on;
        ssl_protocols           TLSv1.2 TLSv1.3;
        ssl_verify_depth        2;

        mesh_auth on;
        mesh_allow_apps $allow;

        location / {
            proxy_pass $backend;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            # keepalive to the backend, and upgrades (the VPC relay)
            proxy_set_header Connection \$mesh_connection;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_read_timeout 330s;
            proxy_buffering off;
        }
    }
EOF
    fi
    cat <<EOF

    # outbound: plain HTTP from this CVM, mutual RA-TLS through the gateway
    server {
        listen $MESH_ENTRY;
        mesh_gateway $gateway;
        $resolver
        $trusted
        mesh_agent_socket $AGENT_SOCKET;
        client_max_body_size 100m;

        location / {
            mesh_target \$http_x_dstack_target_app
                        port=\$http_x_dstack_target_port
                        instance=\$http_x_dstack_target_instance
                        tls=\$http_x_dstack_target_use_tls;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 330s;
        }
    }
EOF
    if [ -n "$MESH_METRICS_LISTEN" ]; then
        cat <<EOF

    # the mesh counters in Prometheus text, on this CVM's loopback
    mesh_metrics_zone mesh_metrics 1m;

    server {
        listen $MESH_METRICS_LISTEN;

        location = /metrics {
            mesh_metrics;
        }
    }
EOF
    fi
    echo "}"
}

render_nginx > "$NGX_DIR/nginx.conf.tmp"
mv "$NGX_DIR/nginx.conf.tmp" "$NGX_DIR/nginx.conf"
nginx_cmd=("$NGINX" -p "$NGX_DIR" -c "$NGX_DIR/nginx.conf")
if ! out=$("${nginx_cmd[@]}" -t 2>&1); then
    printf '%s\n' "$out" >&2
    die "the rendered nginx configuration ($NGX_DIR/nginx.conf) is refused"
fi

if [ "$ROLE" = server ]; then
    server_cmd=("$CTLD" server --listen "$MESH_BACKEND" --data-dir "$DATA_DIR"
                --max-connections "$CTLD_CONNECTIONS"
                --allowed-apps "$ALLOWED_APPS" --wg-port "$WG_PORT"
                --server-app-id "$APP_ID" --gateway-domain "${GATEWAY_DOMAIN%:*}"
                --log-level "$LOG_LEVEL")
    [ -n "$WG_ENDPOINT" ] && server_cmd+=(--wg-endpoint "$WG_ENDPOINT")
    hub_url=http://$MESH_BACKEND
    if [[ $MESH_BACKEND == unix:* ]]; then hub_url=$MESH_BACKEND; fi
    hub_cmd=("$CTLD" node --hub --data-dir "$DATA_DIR"
             --server-url "$hub_url" --interface "$WG_INTERFACE"
             --backend "$WG_BACKEND" --listen-port "$WG_PORT"
             --hosts-file "$HOSTS_FILE" --log-level "$LOG_LEVEL")
    CHILDREN=(nginx server hub tls)
else
    node_cmd=("$CTLD" node --agent-socket "$AGENT_SOCKET"
              --server-url "${DSTACK_MESH_URL:-http://$MESH_ENTRY}"
              --server-app-id "$SERVER_APP_ID"
              --interface "$WG_INTERFACE" --backend "$WG_BACKEND"
              --listen-port "$WG_PORT" --state-dir "$DATA_DIR"
              --hosts-file "$HOSTS_FILE" --log-level "$LOG_LEVEL"
              --transport "$WG_TRANSPORT")
    [ -n "${VPC_NODE_NAME:-}" ] && node_cmd+=(--name "$VPC_NODE_NAME")
    [ -n "${VPC_NODE_TYPE:-}" ] && node_cmd+=(--node-type "$VPC_NODE_TYPE")
    [ -n "$WG_ENDPOINT" ] && node_cmd+=(--endpoint "$WG_ENDPOINT")
    CHILDREN=(nginx node tls)
fi

# --- supervision ----------------------------------------------------------

declare -A PID=() STARTS=()

run_nginx()  { exec "${nginx_cmd[@]}" -g 'daemon off;'; }
run_server() { exec "${server_cmd[@]}"; }
run_hub()    { exec "${hub_cmd[@]}"; }
run_node()   { exec "${node_cmd[@]}"; }
# renews the key and chain before they expire, then reloads nginx
run_tls()    {
    DSTACK_TLS_RELOAD=${DSTACK_TLS_RELOAD:-$(printf '%q ' "${nginx_cmd[@]}" -s reload)} \
        exec "$TLS_KEY" watch "$AGENT_SOCKET" "$TLS_DIR" "${alt_names[@]}"
}

start() {
    local name=$1
    "run_$name" &
    PID[$name]=$!
    STARTS[$name]="${STARTS[$name]:-} $SECONDS"
}

stop_all() {
    local name pid sig i
    for name in "${!PID[@]}"; do
        pid=${PID[$name]}
        sig=TERM
        [ "$name" = nginx ] && sig=QUIT
        kill "-$sig" "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < 100; i++)); do
        for name in "${!PID[@]}"; do
            kill -0 "${PID[$name]}" 2>/dev/null || unset "PID[$name]"
        done
        [ ${#PID[@]} = 0 ] && return 0
        sleep 0.1
    done
    for name in "${!PID[@]}"; do
        log "$name does not stop: SIGKILL"
        kill -KILL "${PID[$name]}" 2>/dev/null || true
    done
}

on_signal() {
    trap '' TERM INT
    log "$1: stopping ${!PID[*]}"
    stop_all
    wait 2>/dev/null || true
    exit 0
}
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGINT' INT

# restarts within the window, this one included
recent_starts() {
    local t n=0
    for t in ${STARTS[$1]}; do
        (( SECONDS - t < RESTART_WINDOW )) && n=$((n + 1))
    done
    echo "$n"
}

log "role $ROLE, app $APP_ID${INSTANCE_ID:+, instance $INSTANCE_ID}, gateway $GATEWAY_DOMAIN${GATEWAY_ADDRESS:+ at $GATEWAY_ADDRESS}"
for name in "${CHILDREN[@]}"; do
    start "$name"
done

while :; do
    done_pid=
    status=0
    wait -n -p done_pid || status=$?
    [ -n "$done_pid" ] || continue
    for name in "${!PID[@]}"; do
        [ "${PID[$name]}" = "$done_pid" ] || continue
        unset "PID[$name]"
        if (( $(recent_starts "$name") > RESTART_MAX )); then
            log "$name exited (status $status) and was restarted $RESTART_MAX times" \
                "in ${RESTART_WINDOW}s: giving up"
            stop_all
            exit 1
        fi
        log "$name exited (status $status): restarting it"
        sleep 1
        start "$name"
    done
done
