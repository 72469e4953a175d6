#!/usr/bin/env bash
# Read-back speed and memory of looker-verify, against the file sink and the
# Loki-compatible test server; plus looker-push into that server, with the
# push's CPU set against the server's CPU over the same interval.
#
# Baseline for the file case: `cat` of the sink file (just reading it).
# Push into the server is done 3 times, each into a fresh server (best push
# CPU wins); verify runs are best of 3 (lowest wall).
#
#   bench/verify.sh [ENTRIES]     (default 1,000,000; 100 series)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

n=${1:-1000000}
series=100
n=$((n / series * series))
cargo build --release --quiet --bin looker-gen --bin looker-push --bin looker-verify \
  --example loki-test-server

# An hour ago, 1 ms apart: inside the server's accepted window, in order.
start=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)
"$R/looker-gen" --seed 1 --start-time "$start" --format looker --line-bytes 100 \
  --n-series $series --count $((n / series)) >"$tmp/in.ndjson"
echo "input: $(num $n) entries, $series series, $(($(stat -c %s "$tmp/in.ndjson") / 1000000)) MB"

row() { # label wall cpu rss [bytes]
  local mbps="       -"
  [ -n "${5:-}" ] && mbps=$(printf '%8.0f' "$(calc "$5 / $2 / 1000000")")
  printf '%-38s %7.2fs wall %7.2fs cpu %12s entries/s %s MB/s %8.1f MB RSS\n' \
    "$1" "$2" "$3" "$(num "$(calc "$n / $2")")" "$mbps" "$4"
}

# --- push ---------------------------------------------------------------
"$R/looker-push" "$tmp/in.ndjson" -q --file "$tmp/sink.ndjson" --manifest "$tmp/file.manifest" \
  --report "$tmp/file.report.json"
[ "$(json "$tmp/file.report.json" entries_acked)" = "$n" ] || die "file push acked $(json "$tmp/file.report.json" entries_acked) of $n"

best_cpu=""
for round in 1 2 3; do
  [ -n "${LOKI_PID:-}" ] && stop_pid "$LOKI_PID"
  start_loki
  rm -f "$tmp/loki.manifest.$round"
  s0=$(cpu_s "$LOKI_PID")
  timed "$tmp/push.$round" "$R/looker-push" "$tmp/in.ndjson" -q --loki "$LOKI_URL" \
    --manifest "$tmp/loki.manifest.$round" --report "$tmp/loki.report.$round.json" ||
    die "push into the test server failed: $(cat "$tmp/push.$round.err")"
  s1=$(cpu_s "$LOKI_PID")
  acked=$(json "$tmp/loki.report.$round.json" entries_acked)
  [ "$acked" = "$n" ] || die "push into the test server acked $acked of $n"
  if [ -z "$best_cpu" ] || (($(echo "$CPU < $best_cpu" | bc -l))); then
    best_cpu=$CPU
    p_wall=$WALL p_cpu=$CPU p_rss=$RSS_MB p_store=$(calc "$s1 - $s0" 2)
    p_eps=$(json "$tmp/loki.report.$round.json" entries_per_s)
    p_p99=$(json "$tmp/loki.report.$round.json" latency_ms.p99)
  fi
done
# The last server holds the last round's data, which is what gets verified.
cp "$tmp/loki.manifest.3" "$tmp/loki.manifest"

echo
echo "== looker-push into loki-test-server (best of 3 by push CPU, fresh server each)"
printf '%-38s %7.2fs wall %7.2fs cpu %12s entries/s %8.1f MB RSS\n' "push --loki (entries/s from report)" \
  "$p_wall" "$p_cpu" "$(num "$p_eps")" "$p_rss"
printf '%-38s %7.2fs cpu over the push\n' "loki-test-server" "$p_store"
printf '%-38s %7.2f cpu-s per million entries\n' "push CPU" "$(calc "$p_cpu * 1000000 / $n")"
printf '%-38s %7.2f cpu-s per million entries\n' "test-server CPU" "$(calc "$p_store * 1000000 / $n")"
printf '%-38s %7.1f%%   (p99 request latency %s ms)\n' "ratio push CPU / store CPU" \
  "$(calc "100 * $p_cpu / $p_store")" "$p_p99"

# --- verify -------------------------------------------------------------
best() { # label bytes command... ; best (lowest wall) of 3; checks verdict ok
  local label=$1 bytes=$2; shift 2
  local bw="" bc="" br="" i
  for i in 1 2 3; do
    timed "$tmp/v" "$@" || die "$label failed (exit $?): $(tail -n 5 "$tmp/v.err")"
    if [ -z "$bw" ] || (($(echo "$WALL < $bw" | bc -l))); then bw=$WALL bc=$CPU br=$RSS_MB; fi
  done
  BW=$bw
  row "$label" "$bw" "$bc" "$br" "$bytes"
}

echo
echo "== looker-verify (best of 3 by wall; verdict must be ok)"
sink_bytes=$(stat -c %s "$tmp/sink.ndjson")
best "cat sink file (baseline read)" "$sink_bytes" cat "$tmp/sink.ndjson"
cat_w=$BW
best "wc -l sink file (baseline scan)" "$sink_bytes" wc -l "$tmp/sink.ndjson"
wc_w=$BW
best "verify --file" "$sink_bytes" "$R/looker-verify" --quiet --manifest "$tmp/file.manifest" --file "$tmp/sink.ndjson"
vf_w=$BW
s0=$(cpu_s "$LOKI_PID")
best "verify --loki (test server)" "" "$R/looker-verify" --quiet --manifest "$tmp/loki.manifest" --loki "$LOKI_URL"
s1=$(cpu_s "$LOKI_PID")
vl_w=$BW
printf '%-38s %7.2fs cpu over the 3 verify runs\n' "loki-test-server" "$(calc "$s1 - $s0" 2)"
echo
printf 'summary: %s entries; verify --file %s entries/s (%.2fx cat, %.2fx wc -l), verify --loki %s entries/s; push --loki %s entries/s, %.2f push cpu-s/M entries, push/store CPU %.1f%%\n' \
  "$(num $n)" "$(num "$(calc "$n / $vf_w")")" "$(calc "$cat_w / $vf_w")" "$(calc "$wc_w / $vf_w")" "$(num "$(calc "$n / $vl_w")")" \
  "$(num "$p_eps")" "$(calc "$p_cpu * 1000000 / $n")" "$(calc "100 * $p_cpu / $p_store")"
