#!/usr/bin/env bash
# Runs every benchmark in sequence and prints each one's table, then every
# script's summary line. Sizes (defaults: each script's own; about 3 minutes
# on 2 cores) can be overridden, e.g. for a quick run:
#
#   bench/all.sh
#   GEN=1000000 PUSH=500000 VERIFY=200000 PROM=500000 MEM_GB=1 MEM_VERIFY=1000000 bench/all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bins --example loki-test-server

summaries=()
run() { # script args...
  local t0=$SECONDS out
  echo
  echo "######## bench/$*"
  out=$(mktemp)
  if bash "bench/$1" "${@:2}" 2>&1 | tee "$out"; then
    # A script's `summary:` line, or its last line if it has none.
    local line
    line=$(grep '^summary: ' "$out" | tail -n 1 | cut -c10-) || true
    [ -n "$line" ] || line=$(grep -v '^$' "$out" | tail -n 1)
    summaries+=("$1: $line [$((SECONDS - t0)) s]")
  else
    summaries+=("$1: FAILED [$((SECONDS - t0)) s]")
  fi
  rm -f "$out"
}

run gen.sh "${GEN:-5000000}"
run push.sh "${PUSH:-2000000}"
run rate.sh "${RATE:-20000}"
run verify.sh "${VERIFY:-1000000}"
run prometheus.sh "${PROM:-2000000}"
# The same samples as series lines (VictoriaMetrics' JSON line format).
LINES=100 VM=0 run prometheus.sh "${PROM:-2000000}"
# The shape remote-write traffic has: many series, few samples each.
SERIES=100000 VM=0 run prometheus.sh "${PROM:-2000000}"
SERIES=100000 LINES=20 VM=0 run prometheus.sh "${PROM:-2000000}"
# A paced run: fragments of one to three samples.
run paced.sh "${PACED_RATE:-40000}" "${PACED_SECS:-5}"
run memory.sh "${MEM_GB:-4}" "${MEM_VERIFY:-5000000}"

echo
echo "######## summaries"
printf '%s\n' "${summaries[@]}"
