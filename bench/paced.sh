#!/usr/bin/env bash
# A paced run, as load tests are run: many series, each sending a sample
# every second or so, at a fixed --rate into a real Prometheus. Fragments
# then hold one to three samples (--linger flushes them), so what each
# fragment costs (its manifest line, its place in a request) decides push
# CPU and manifest size, not what each sample costs.
#
# Prints push CPU against Prometheus' CPU over the same interval, the
# manifest's size against the input's, and looker-verify's time and peak
# RSS over that manifest.
#
#   bench/paced.sh [RATE] [SECONDS]   (defaults 40000 samples/s for 5 s)
#   SERIES=N        series (default 20000: each gets RATE/SERIES samples/s)
#   PUSH_FLAGS=...  more looker-push flags, e.g. "--fragments-per-message 20"
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rate=${1:-40000}
secs=${2:-5}
series=${SERIES:-20000}
n=$((rate * secs))
per=$((n / series))
((per >= 1)) || die "fewer samples than series"
n=$((per * series))
cargo build --release --quiet --bin looker-gen --bin looker-push --bin looker-verify

# Timestamps are shifted to now by --retime; 1 s apart in each series.
"$R/looker-gen" --metrics --seed 1 --start-time 2024-01-01T00:00:00Z --time-increment 1s \
  --n-series "$series" --count "$per" >"$tmp/in.ndjson"
in_bytes=$(stat -c %s "$tmp/in.ndjson")
echo "input: $(num $n) samples, $(num "$series") series x $per, $((in_bytes / 1000000)) MB, pushed at $(num "$rate")/s"

start_prometheus
sleep 1
s0=$(cpu_s "$PROM_PID")
timed "$tmp/push" "$R/looker-push" "$tmp/in.ndjson" -q --retime --rate "$rate" \
  --remote-write "$PROM_URL/api/v1/write" --manifest "$tmp/m.ndjson" --report "$tmp/r.json" \
  ${PUSH_FLAGS:-} || die "push failed: $(tail -n 5 "$tmp/push.err")"
s1=$(cpu_s "$PROM_PID")
push_cpu=$CPU push_wall=$WALL
[ "$(json "$tmp/r.json" entries_acked)" = "$n" ] ||
  die "acked $(json "$tmp/r.json" entries_acked) of $n"
store=$(calc "$s1 - $s0" 2)
man_bytes=$(stat -c %s "$tmp/m.ndjson")
frags=$(jq -r '.fragments.ok' <(tail -n 1 "$tmp/m.ndjson"))

timed "$tmp/verify" "$R/looker-verify" --quiet --manifest "$tmp/m.ndjson" --prometheus "$PROM_URL" ||
  die "verify: exit $?: $(tail -n 5 "$tmp/verify.err")"

echo
printf '%-28s %7.2fs wall %6.2fs cpu   %d requests, %s fragments (%.1f samples each)\n' "looker-push --rate $rate" \
  "$push_wall" "$push_cpu" "$(json "$tmp/r.json" requests)" "$(num "$frags")" "$(calc "$n / $frags" 2)"
printf '%-28s %7s       %6.2fs cpu over the push\n' "prometheus" "" "$store"
printf '%-28s %7.1f%%\n' "push CPU / prometheus CPU" "$(calc "100 * $push_cpu / $store")"
printf '%-28s %7.2f bytes per input byte (%s MB), %.0f bytes per sample\n' "manifest" \
  "$(calc "$man_bytes / $in_bytes" 3)" "$((man_bytes / 1000000))" "$(calc "$man_bytes / $n" 1)"
printf '%-28s %7.2fs wall %6.2fs cpu %7.1f MB peak RSS   (verdict ok)\n' "looker-verify" \
  "$WALL" "$CPU" "$RSS_MB"
echo
echo "summary: push $(printf %.2f "$push_cpu") cpu-s vs prometheus $(printf %.2f "$store") ($(printf %.0f "$(calc "100 * $push_cpu / $store")")%), manifest $(printf %.2f "$(calc "$man_bytes / $in_bytes" 3)")x input, verify $(printf %.2f "$WALL") s / $(printf %.0f "$RSS_MB") MB"
