# Helpers shared by the bench scripts (sourced, not run).
#
# After sourcing: $R is the release binary dir, $tmp a scratch dir that is
# removed on exit together with every server started through start_*.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
R=target/release
TCK=$(getconf CLK_TCK)
tmp=$(mktemp -d)
_pids=()
_cleanup() {
  local p
  for p in "${_pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${_pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# Floating-point arithmetic: calc EXPR [SCALE]
calc() { echo "scale=${2:-6}; $1" | bc -l; }
# Rounded to an integer, with thousands separators.
num() { printf '%.0f' "$1" | rev | sed 's/[0-9]\{3\}/&,/g; s/,$//; s/,-$/-/' | rev; }

# CPU seconds (user+sys) a process has used so far, from /proc/PID/stat.
cpu_s() {
  local rest
  rest=$(cat "/proc/$1/stat") || return 1
  rest=${rest##*) }                    # fields from 3 (state) on
  # utime and stime are fields 14 and 15, i.e. 12 and 13 after the name.
  awk -v t="$TCK" '{ printf "%.2f\n", ($12 + $13) / t }' <<<"$rest"
}

# RSS and peak RSS (KB) of a running process: "VmRSS VmHWM".
rss_kb() { awk '/^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} END {print r+0, h+0}' "/proc/$1/status" 2>/dev/null; }

# timed OUT CMD...: runs CMD (stdout to /dev/null, stderr kept in OUT.err)
# under /usr/bin/time; sets WALL (from the clock, ns resolution, as
# /usr/bin/time has only 10 ms) USER SYS CPU RSS_MB; returns CMD's status.
timed() {
  local out=$1; shift
  local rc=0 t0 t1
  t0=$(date +%s%N)
  /usr/bin/time -f "%e %U %S %M" -o "$out.time" "$@" >/dev/null 2>"$out.err" || rc=$?
  t1=$(date +%s%N)
  read -r WALL USER SYS RSS_KB < <(tail -n 1 "$out.time")
  WALL=$(calc "($t1 - $t0) / 1000000000" 4)
  CPU=$(calc "$USER + $SYS" 2)
  RSS_MB=$(calc "$RSS_KB / 1024" 1)
  return $rc
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready PID URL: until URL answers 200, or fail if PID dies / 60 s.
wait_ready() {
  local pid=$1 url=$2 deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || return 1
    curl -fs -o /dev/null "$url" && return 0
    sleep 0.2
  done
  return 1
}

# start_loki [server flags...]: sets LOKI_URL, LOKI_PID.
start_loki() {
  local log=$tmp/loki.$RANDOM.log
  "$R/examples/loki-test-server" --addr 127.0.0.1:0 "$@" >"$log" 2>&1 &
  LOKI_PID=$!
  _pids+=("$LOKI_PID")
  local i
  for i in $(seq 1 100); do
    [ -s "$log" ] && break
    sleep 0.05
  done
  LOKI_URL="http://$(head -n 1 "$log")"
  wait_ready "$LOKI_PID" "$LOKI_URL/ready" ||
    die "loki-test-server did not start: $(cat "$log")"
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# start_prometheus: a fresh Prometheus with the remote-write receiver;
# sets PROM_URL, PROM_PID.
start_prometheus() {
  local dir port attempt
  for attempt in 1 2 3; do
    dir=$(mktemp -d "$tmp/prom.XXXX")
    port=$(free_port)
    printf 'global:\n  scrape_interval: 1m\n' >"$dir/prometheus.yml"
    prometheus --config.file "$dir/prometheus.yml" --storage.tsdb.path "$dir/data" \
      --storage.tsdb.retention.time=100y --web.listen-address "127.0.0.1:$port" \
      --web.enable-remote-write-receiver >"$dir/log" 2>&1 &
    PROM_PID=$!
    _pids+=("$PROM_PID")
    PROM_URL=http://127.0.0.1:$port
    wait_ready "$PROM_PID" "$PROM_URL/-/ready" && return 0
    stop_pid "$PROM_PID"
  done
  die "prometheus did not start: $(tail -n 5 "$dir/log")"
}

# start_vm: a fresh VictoriaMetrics; sets VM_URL, VM_PID.
start_vm() {
  local dir port attempt
  for attempt in 1 2 3; do
    dir=$(mktemp -d "$tmp/vm.XXXX")
    port=$(free_port)
    victoria-metrics -httpListenAddr="127.0.0.1:$port" -storageDataPath="$dir/data" \
      -retentionPeriod=100y -search.disableCache -search.latencyOffset=0s >"$dir/log" 2>&1 &
    VM_PID=$!
    _pids+=("$VM_PID")
    VM_URL=http://127.0.0.1:$port
    wait_ready "$VM_PID" "$VM_URL/health" && return 0
    stop_pid "$VM_PID"
  done
  die "victoria-metrics did not start: $(tail -n 5 "$dir/log")"
}

# json FILE KEY: a top-level number from a JSON report.
json() { jq -r ".$2" "$1"; }
