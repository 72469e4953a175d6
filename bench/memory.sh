#!/usr/bin/env bash
# Memory of looker-push and looker-verify on large inputs.
#
# 1. Streams GB gigabytes of generated log records through
#    looker-gen | looker-push --null and samples looker-push's RSS every
#    second (VmRSS), with the bytes it has read so far (rchar from
#    /proc/PID/io). Target: peak RSS < 100 MB and flat (not growing with
#    the input).
# 2. looker-verify --file over a manifest of many small fragments
#    (--fragment-size 100) and, as the baseline in the same run, over the
#    same data with 10x larger fragments (--fragment-size 1000), so the
#    per-fragment cost of verify's memory shows.
#
#   bench/memory.sh [GB] [VERIFY_ENTRIES]     (defaults 4 and 5,000,000)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

gb=${1:-4}
ventries=${2:-5000000}
series=100
line_bytes=${LINE_BYTES:-100}
cargo build --release --quiet --bin looker-gen --bin looker-push --bin looker-verify

gen_flags=(--seed 1 --start-time 2024-01-01T00:00:00Z --format looker --line-bytes "$line_bytes"
  --n-series "$series")
"$R/looker-gen" "${gen_flags[@]}" --count 1000 >"$tmp/sample"
bpr=$(calc "$(stat -c %s "$tmp/sample") / ($series * 1000)" 2)
target_bytes=$(calc "$gb * 1000000000" 0)
count=$(calc "$target_bytes / $bpr / $series" 0)
rm -f "$tmp/sample"

# watch PID: "elapsed_s bytes_read rss_kb" every second until PID exits.
watch_rss() {
  local pid=$1 t0 r io
  t0=$(date +%s%N)
  while :; do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || break
    io=$(awk '/^rchar:/ {print $2}' "/proc/$pid/io" 2>/dev/null) || break
    [ -n "$r" ] && [ -n "$io" ] || break
    echo "$(calc "($(date +%s%N) - $t0) / 1000000000" 1) $io $r"
    sleep 1
  done
}

# child_of PID: the process PID started (the tool under /usr/bin/time).
child_of() {
  local c
  for _ in $(seq 1 200); do
    c=$(pgrep -P "$1" | head -n 1) && [ -n "$c" ] && { echo "$c"; return; }
    sleep 0.01
  done
  die "no child of $1"
}

# table SAMPLES: prints at most ~25 rows (every k-th sample and the last);
# sets PEAK_SAMPLED_MB, EARLY_MB (max RSS over the first 25% of samples
# after the first), LATE_MB (max RSS over the last 25%).
table() {
  local f=$1 rows k
  rows=$(wc -l <"$f")
  k=$(((rows + 24) / 25))
  ((k >= 1)) || k=1
  printf '   %8s %12s %10s\n' "time s" "read MB" "RSS MB"
  awk -v k="$k" -v rows="$rows" '(NR - 1) % k == 0 || NR == rows {
    printf "   %8.1f %12.0f %10.1f\n", $1, $2 / 1e6, $3 / 1024 }' "$f"
  read -r PEAK_SAMPLED_MB EARLY_MB LATE_MB < <(awk -v rows="$rows" '
    { r[NR] = $3; if ($3 > p) p = $3 }
    END {
      q = int(rows / 4); if (q < 1) q = 1
      s = rows > 1 ? 2 : 1
      for (i = s; i < s + q && i <= rows; i++) if (r[i] > e) e = r[i]
      for (i = rows - q + 1; i <= rows; i++) if (i >= 1 && r[i] > l) l = r[i]
      printf "%.1f %.1f %.1f\n", p / 1024, e / 1024, l / 1024 }' "$f")
}

# --- 1. looker-push --null streaming ----------------------------------------
echo "== looker-gen | looker-push --null: ~$gb GB, $(num $((count * series))) entries (~$bpr B each), $series series"
mkfifo "$tmp/fifo"
"$R/looker-gen" "${gen_flags[@]}" --count "$count" >"$tmp/fifo" &
gpid=$!
_pids+=("$gpid")
/usr/bin/time -f "%e %U %S %M" -o "$tmp/push.time" "$R/looker-push" --null -q \
  --report "$tmp/push.json" <"$tmp/fifo" &
tpid=$!
_pids+=("$tpid")
ppid=$(child_of "$tpid")
watch_rss "$ppid" >"$tmp/push.samples"
wait "$tpid" || die "looker-push failed"
wait "$gpid" || die "looker-gen failed"
read -r wall user sys peak_kb <"$tmp/push.time"
table "$tmp/push.samples"
acked=$(json "$tmp/push.json" entries_acked)
[ "$acked" = $((count * series)) ] || die "push --null counted $acked of $((count * series))"
push_peak=$(calc "$peak_kb / 1024" 1)
push_early=$EARLY_MB push_late=$LATE_MB
printf '   %s entries (~%s MB in, %s MB out as snappy protobuf) in %.1fs (%s entries/s); peak RSS %.1f MB (VmHWM); max RSS first quarter %.1f MB, last quarter %.1f MB\n' \
  "$(num "$acked")" "$(num "$(calc "$acked * $bpr / 1000000")")" "$(num "$(calc "$(json "$tmp/push.json" bytes_acked) / 1000000")")" "$wall" \
  "$(num "$(json "$tmp/push.json" entries_per_s)")" "$push_peak" "$push_early" "$push_late"

# --- 2. looker-verify over many fragments -----------------------------------
echo
echo "== looker-verify --file: $(num "$ventries") entries, $series series"
"$R/looker-gen" "${gen_flags[@]}" --count $((ventries / series)) >"$tmp/in.ndjson"
declare -A vpeak vfrag
for fs in 1000 100; do
  "$R/looker-push" "$tmp/in.ndjson" -q --file "$tmp/sink.$fs" --fragment-size "$fs" \
    --manifest "$tmp/manifest.$fs"
  frags=$(grep -c '"kind":"fragment"' "$tmp/manifest.$fs" || true)
  mb=$(calc "$(stat -c %s "$tmp/manifest.$fs") / 1000000" 1)
  /usr/bin/time -f "%e %U %S %M" -o "$tmp/verify.time" "$R/looker-verify" --quiet \
    --manifest "$tmp/manifest.$fs" --file "$tmp/sink.$fs" &
  tpid=$!
  _pids+=("$tpid")
  watch_rss "$(child_of "$tpid")" >"$tmp/verify.samples.$fs"
  wait "$tpid" || die "verify (--fragment-size $fs) failed: exit $?"
  read -r wall user sys peak_kb <"$tmp/verify.time"
  vpeak[$fs]=$(calc "$peak_kb / 1024" 1)
  vfrag[$fs]=$frags
  echo "-- --fragment-size $fs: manifest $(num "$frags") fragment lines ($mb MB)"
  table "$tmp/verify.samples.$fs"
  printf '   verify %.2fs wall, %s entries/s, verdict ok, peak RSS %.1f MB (VmHWM)\n' "$wall" \
    "$(num "$(calc "$ventries / $wall")")" "${vpeak[$fs]}"
  rm -f "$tmp/sink.$fs"
done
per_frag=$(calc "(${vpeak[100]} - ${vpeak[1000]}) * 1048576 / (${vfrag[100]} - ${vfrag[1000]})" 0)

echo
echo "summary: push --null over $gb GB: peak RSS $push_peak MB (first quarter $push_early MB, last quarter $push_late MB; target < 100 MB); verify over $(num "${vfrag[100]}") fragments: peak RSS ${vpeak[100]} MB (${vpeak[1000]} MB with $(num "${vfrag[1000]}") fragments, ~$per_frag B per extra fragment)"
