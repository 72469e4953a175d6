#!/usr/bin/env bash
# Starts Prometheus (remote-write receiver on) and VictoriaMetrics on free
# loopback ports with throwaway data dirs, for running the tools by hand:
#
#   eval "$(tests/servers/start.sh)"
#   cargo run --bin looker-push -- ... "$LOOKER_PROMETHEUS_URL/api/v1/write"
#   tests/servers/stop.sh
#
# Prints `export LOOKER_PROMETHEUS_URL=...` and `export LOOKER_VM_URL=...`
# on stdout (everything else goes to stderr). The integration tests do not
# use these servers; they start their own per test.
#
# State (pids, logs, data) lives in $LOOKER_SERVERS_DIR, default
# ${TMPDIR:-/tmp}/looker-servers-$UID.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state_dir=${LOOKER_SERVERS_DIR:-${TMPDIR:-/tmp}/looker-servers-$(id -u)}
state=$state_dir/state

say() { printf 'start.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if [ -f "$state" ]; then
    die "servers already started (see $state); run tests/servers/stop.sh first"
fi

bash "$here/install.sh" >&2

prometheus=${LOOKER_PROMETHEUS_BIN:-$(command -v prometheus)}
vm=${LOOKER_VM_BIN:-$(command -v victoria-metrics || command -v victoria-metrics-prod)}

mkdir -p "$state_dir"

# A random port in the ephemeral-free range that nothing answers on yet.
# The server may still lose a race for it; the caller retries.
pick_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# HTTP status of GET http://127.0.0.1:$1$2, using only bash (no curl on a
# fresh machine); empty if nothing answers.
http_status() {
    local line
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 0
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    IFS= read -r -t 5 line <&3 || true
    exec 3<&-
    line=${line#* }
    echo "${line%% *}"
}

# start NAME READY_PATH CMD... (the literal PORT and DIR in CMD are replaced)
# Prints the port once the server answers READY_PATH with 200.
start_server() {
    local name=$1 ready=$2
    shift 2
    local attempt port dir pid args a deadline
    for attempt in 1 2 3 4 5; do
        port=$(pick_port)
        dir=$(mktemp -d "$state_dir/$name.XXXXXX")
        args=()
        for a in "$@"; do
            a=${a//PORT/$port}
            args+=("${a//DIR/$dir}")
        done
        nohup "${args[@]}" >"$dir/server.log" 2>&1 </dev/null &
        pid=$!
        echo "$name $pid $dir" >>"$state"
        deadline=$((SECONDS + 30))
        while [ "$SECONDS" -lt "$deadline" ]; do
            if ! kill -0 "$pid" 2>/dev/null; then
                if grep -q "address already in use" "$dir/server.log"; then
                    say "$name: port $port taken, retrying ($attempt)"
                    continue 2
                fi
                tail -n 20 "$dir/server.log" >&2
                die "$name exited before it was ready (log: $dir/server.log)"
            fi
            if [ "$(http_status "$port" "$ready")" = 200 ]; then
                say "$name ready on 127.0.0.1:$port (pid $pid, log $dir/server.log)"
                echo "$port"
                return
            fi
            sleep 0.2
        done
        tail -n 20 "$dir/server.log" >&2
        die "$name not ready after 30s (log: $dir/server.log)"
    done
    die "$name: could not bind a port"
}

: >"$state"
# Leave nothing behind if either server fails to come up.
trap 'bash "$here/stop.sh" >/dev/null 2>&1 || true' ERR

printf 'global:\n  scrape_interval: 1m\n' >"$state_dir/prometheus.yml"
prom_port=$(start_server prometheus /-/ready "$prometheus" \
    --config.file "$state_dir/prometheus.yml" \
    --storage.tsdb.path DIR/data \
    --storage.tsdb.retention.time=100y \
    --web.listen-address 127.0.0.1:PORT \
    --web.enable-remote-write-receiver \
    --web.enable-admin-api)
vm_port=$(start_server victoria-metrics /health "$vm" \
    -httpListenAddr=127.0.0.1:PORT \
    -storageDataPath=DIR/data \
    -retentionPeriod=100y \
    -search.disableCache \
    -search.latencyOffset=0s)

trap - ERR
echo "export LOOKER_PROMETHEUS_URL=http://127.0.0.1:$prom_port"
echo "export LOOKER_VM_URL=http://127.0.0.1:$vm_port"
