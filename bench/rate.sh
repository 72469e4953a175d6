#!/usr/bin/env bash
# Pacing accuracy of looker-push: feeds exactly RATE x 10 s worth of entries
# with --rate RATE into --null and compares the achieved mean rate (entries /
# duration from the JSON report, and entries / process wall time) with the
# target. Target: within 3%. A low and a high rate are checked as well.
# Then a steps schedule {"update_interval":2,"schedule":[5000,20000]} for 8 s
# (exactly 100,000 entries) with --report-csv at 1 s intervals, printing the
# achieved rate per interval against the scheduled one.
#
#   bench/rate.sh [RATE]     (default 20000)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

rate=${1:-20000}
secs=10
cargo build --release --quiet --bin looker-gen --bin looker-push

gen() { # entries -> file
  "$R/looker-gen" --seed 1 --start-time 2024-01-01T00:00:00Z --line-bytes 100 --n-series 100 \
    --count $(($1 / 100)) >"$2"
}

echo "== --rate: exact entry counts into --null"
printf '%-10s %-14s %10s %10s %12s %9s %12s %9s %8s\n' target flags entries "report s" "achieved/s" "error" "wall-based/s" "error" "cpu s"
worst=0
check() { # rate seconds [extra push flags...]
  local r=$1 s=$2 n eps err werr
  shift 2
  n=$((r * s))
  gen "$n" "$tmp/in.$r"
  timed "$tmp/rate.$r" "$R/looker-push" "$tmp/in.$r" --null -q --rate "$r" "$@" --report "$tmp/rate.$r.json" ||
    die "push --rate $r failed: $(cat "$tmp/rate.$r.err")"
  [ "$(json "$tmp/rate.$r.json" entries_acked)" = "$n" ] || die "acked $(json "$tmp/rate.$r.json" entries_acked) of $n"
  local d
  d=$(json "$tmp/rate.$r.json" duration_s)
  eps=$(calc "$n / $d" 2)
  err=$(calc "100 * ($eps - $r) / $r" 3)
  werr=$(calc "100 * ($n / $WALL - $r) / $r" 3)
  printf '%-10s %-14s %10s %10.3f %12s %+8.2f%% %12s %+8.2f%% %8.2f\n' "$(num "$r")" "${*:--}" "$(num "$n")" "$d" "$(num "$eps")" "$err" \
    "$(num "$(calc "$n / $WALL")")" "$werr" "$CPU"
  [ $# -gt 0 ] && return
  if [ "$r" = "$rate" ]; then main_eps=$eps main_err=$err; fi
  local a=${err#-}
  if (($(echo "$a > $worst" | bc -l))); then worst=$a; fi
  rm -f "$tmp/in.$r"
}
check "$rate" "$secs"
check 2000 5
check 100000 5
# Diagnostic: the default burst is one pacing chunk (1 ms of entries); a
# 10 ms burst lets a late wake-up catch up.
check "$rate" "$secs" --burst $((rate / 100))

echo
echo '== --schedule {"update_interval":2,"schedule":[5000,20000]}: 100,000 entries (8 s), --linger 100ms, CSV every 1 s'
echo '{"update_interval":2,"schedule":[5000,20000]}' >"$tmp/schedule.json"
gen 100000 "$tmp/in.sched"
timed "$tmp/sched" "$R/looker-push" "$tmp/in.sched" --null -q --schedule "$tmp/schedule.json" \
  --linger 100ms --progress-interval 1s --report-csv "$tmp/sched.csv" --report "$tmp/sched.json" ||
  die "push --schedule failed: $(cat "$tmp/sched.err")"
# Columns: elapsed_s,entries_per_s,...,target_rate. The scheduled rate of
# interval (t-1, t] is the step its middle falls in.
printf '   %9s %12s %12s %10s %12s\n' "elapsed s" "achieved/s" "scheduled/s" "error" "target col"
awk -F, 'NR > 1 {
    mid = $1 - 0.5; if (mid < 0) mid = $1 / 2
    sched = (int(mid / 2) % 2 == 0) ? 5000 : 20000
    printf "   %9.3f %12.0f %12d %+9.1f%% %12s\n", $1, $2, sched, 100 * ($2 - sched) / sched, $NF }' "$tmp/sched.csv"
d=$(json "$tmp/sched.json" duration_s)
printf '   total: %s entries in %.3f s (schedule: 8.000 s, %+.2f%%)\n' "$(num "$(json "$tmp/sched.json" entries_acked)")" "$d" \
  "$(calc "100 * ($d - 8) / 8" 3)"

echo
printf 'summary: --rate %s achieved %s entries/s (%+.2f%%, target within 3%%); worst of 3 rates %.2f%%; schedule 8 s took %.3f s\n' \
  "$(num "$rate")" "$(num "$main_eps")" "$main_err" "$worst" "$d"
