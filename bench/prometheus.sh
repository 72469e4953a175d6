#!/usr/bin/env bash
# looker-push into a real Prometheus remote-write receiver as fast as it
# goes: push entries/s, push CPU per million samples, and Prometheus's own
# CPU over the same interval (from /proc), whose ratio is the cost of the
# load generator relative to the store (target: push CPU <= 10% of it).
# Then looker-verify against Prometheus's query API (best of 3).
# The same into VictoriaMetrics unless VM=0.
#
# Also the floor under push CPU, from benches/encode.rs: what building the
# same requests costs from samples already in memory, as a share of the
# store's CPU.
#
#   bench/prometheus.sh [SAMPLES]    (default 2,000,000 = 2000 series x 1000)
#   SERIES=N        series (default 2000)
#   GEN_FLAGS=...   more looker-gen flags, e.g. "--label job=node --label ..."
#   LINES=N         input as series lines of up to N samples each
#                   (looker-gen --entries-per-line N) instead of one record
#                   per sample
#
# Samples are 1 s apart (less when there are more than 1800 per series)
# starting 30 min ago, so they all fall inside Prometheus's accepted window.
# Each store is fresh and pushed into once (a second push would be
# duplicates), so push figures are a single run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

n=${1:-2000000}
series=${SERIES:-2000}
per=$((n / series))
n=$((per * series))
inc_ms=$((1800000 / per))
((inc_ms > 1000)) && inc_ms=1000
((inc_ms >= 1)) || die "too many samples per series for a 30 min window"
cargo build --release --quiet --bin looker-gen --bin looker-push --bin looker-verify

start=$(date -u -d '-30 min' +%Y-%m-%dT%H:%M:%SZ)
"$R/looker-gen" --metrics --seed 1 --start-time "$start" --time-increment "${inc_ms}ms" \
  --n-series "$series" --count "$per" --entries-per-line "${LINES:-1}" ${GEN_FLAGS:-} >"$tmp/in.ndjson"
form="one record per sample"
[ "${LINES:-1}" = 1 ] || form="series lines of up to $LINES samples"
echo "input: $(num $n) samples, $series series x $per, ${inc_ms} ms apart from $start, $(($(stat -c %s "$tmp/in.ndjson") / 1000000)) MB, $form"

# Baseline in the same run: the pipeline alone (parse, batch, encode as
# remote write, no network), best of 3 by CPU.
null_cpu=""
for _ in 1 2 3; do
  timed "$tmp/null" "$R/looker-push" "$tmp/in.ndjson" -q --null || die "push --null failed"
  if [ -z "$null_cpu" ] || (($(echo "$CPU < $null_cpu" | bc -l))); then
    null_cpu=$CPU null_wall=$WALL null_rss=$RSS_MB
  fi
done
echo
printf '%-34s %7.2fs wall %7.2fs cpu %12s samples/s %7.1f MB RSS   %.3f cpu-s per million samples\n' \
  "looker-push --null (baseline)" "$null_wall" "$null_cpu" "$(num "$(calc "$n / $null_wall")")" "$null_rss" \
  "$(calc "$null_cpu * 1000000 / $n")"

# The floor under push CPU: building the same requests from samples
# already in memory (benches/encode.rs), without reading any input.
cargo bench --quiet --bench encode -- "$series" "$per" "${LINES:-1}" >"$tmp/floor" 2>"$tmp/floor.err" ||
  die "cargo bench --bench encode failed: $(tail -n 5 "$tmp/floor.err")"
floor_encode=$(awk '$1 == "encode" {print $2}' "$tmp/floor")
floor_batch=$(awk '$1 == "batch+encode" {print $2}' "$tmp/floor")
printf '%-34s %7.3f cpu-s per million samples (protobuf + snappy only), %.3f with batching and digests\n' \
  "requests from memory (floor)" "$floor_encode" "$floor_batch"

declare -A sum
# bench_store NAME PID WRITE_URL VERIFY_FLAG VERIFY_URL [verify flags...]
bench_store() {
  local name=$1 pid=$2 write=$3 vflag=$4 vurl=$5
  shift 5
  local s0 s1 s2 sidle store store5 i bw="" bc="" br=""
  sleep 1 # let the store settle after start-up
  sidle=$(cpu_s "$pid")
  sleep 3 # idle CPU over 3 s, to subtract from the after-push window
  s0=$(cpu_s "$pid")
  timed "$tmp/push.$name" "$R/looker-push" "$tmp/in.ndjson" -q --remote-write "$write" \
    --manifest "$tmp/$name.manifest" --report "$tmp/$name.report.json" ||
    die "push into $name failed: $(tail -n 5 "$tmp/push.$name.err")"
  s1=$(cpu_s "$pid")
  store=$(calc "$s1 - $s0" 2)
  # Work a store defers (WAL, flushes) shows up after the push returns.
  sleep 3
  s2=$(cpu_s "$pid")
  store5=$(calc "$s2 - $s0 - ($s0 - $sidle)" 2)
  local r=$tmp/$name.report.json
  [ "$(json "$r" entries_acked)" = "$n" ] ||
    die "$name acked $(json "$r" entries_acked) of $n (rejected $(json "$r" entries_rejected), failed $(json "$r" entries_failed)): $(jq -c .rejected_reasons "$r")"
  local eps push_cpu=$CPU push_wall=$WALL push_rss=$RSS_MB
  eps=$(json "$r" entries_per_s)
  if [ "$name" = victoriametrics ]; then
    curl -fs "$VM_URL/internal/force_flush" >/dev/null || true
  fi
  for i in 1 2 3; do
    timed "$tmp/verify.$name" "$R/looker-verify" --quiet --manifest "$tmp/$name.manifest" "$vflag" "$vurl" "$@" ||
      die "verify against $name: exit $?: $(tail -n 5 "$tmp/verify.$name.err")"
    if [ -z "$bw" ] || (($(echo "$WALL < $bw" | bc -l))); then bw=$WALL bc=$CPU br=$RSS_MB; fi
  done
  local rr=""
  if [ "$name" = prometheus ]; then
    # Remote read takes many series per request.
    for i in 1 2 3; do
      timed "$tmp/verify.rr" "$R/looker-verify" --quiet --manifest "$tmp/$name.manifest" --prometheus "$vurl" --read-api remote-read ||
        die "verify (remote read) against $name: exit $?: $(tail -n 5 "$tmp/verify.rr.err")"
      if [ -z "$rr" ] || (($(echo "$WALL < $rr" | bc -l))); then rr=$WALL; fi
    done
  fi
  echo
  echo "== $name"
  printf '%-34s %7.2fs wall %7.2fs cpu %12s samples/s %7.1f MB RSS   p99 %s ms, %s requests\n' "looker-push --remote-write" \
    "$push_wall" "$push_cpu" "$(num "$eps")" "$push_rss" "$(json "$r" latency_ms.p99)" "$(json "$r" requests)"
  printf '%-34s %7.2fs cpu over the push, %.2fs incl. the 3 s after it (idle CPU subtracted)\n' "$name" "$store" "$store5"
  printf '%-34s %7.3f cpu-s per million samples\n' "push CPU" "$(calc "$push_cpu * 1000000 / $n")"
  printf '%-34s %7.3f cpu-s per million samples\n' "$name CPU" "$(calc "$store * 1000000 / $n")"
  printf '%-34s %7.1f%%  (target <= 10%%; %.1f%% counting the 3 s after)\n' "push CPU / $name CPU" \
    "$(calc "100 * $push_cpu / $store")" "$(calc "100 * $push_cpu / $store5")"
  printf '%-34s %7.1f%%  protobuf + snappy only; %.1f%% with batching and digests\n' "floor / $name CPU" \
    "$(calc "100 * $floor_encode * $n / 1000000 / $store")" "$(calc "100 * $floor_batch * $n / 1000000 / $store")"
  # How far push is above what building the requests alone costs.
  printf '%-34s %7.2fx\n' "push CPU / floor with digests" \
    "$(calc "$push_cpu * 1000000 / $n / $floor_batch")"
  printf '%-34s %7.2fs wall %7.2fs cpu %12s samples/s %7.1f MB RSS   (best of 3, verdict ok)\n' "looker-verify" \
    "$bw" "$bc" "$(num "$(calc "$n / $bw")")" "$br"
  if [ -n "$rr" ]; then
    printf '%-34s %7.2fs wall %24s samples/s   (best of 3, verdict ok)\n' "looker-verify --read-api remote-read" \
      "$rr" "$(num "$(calc "$n / $rr")")"
  fi
  sum[$name]="$name: push $(num "$eps") samples/s, push/store CPU $(printf %.1f "$(calc "100 * $push_cpu / $store")")%, verify $(num "$(calc "$n / $bw")") samples/s"
}

start_prometheus
bench_store prometheus "$PROM_PID" "$PROM_URL/api/v1/write" --prometheus "$PROM_URL"
stop_pid "$PROM_PID"
line="${sum[prometheus]}"
if [ "${VM:-1}" != 0 ]; then
  start_vm
  bench_store victoriametrics "$VM_PID" "$VM_URL/api/v1/write" --victoriametrics "$VM_URL" --wait 30s
  stop_pid "$VM_PID"
  line="$line; ${sum[victoriametrics]}"
fi
echo
echo "summary: $(num $n) samples in $(num $series) series, $form; $line"
