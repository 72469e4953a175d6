#!/usr/bin/env bash
# Throughput of looker-gen through a pipe, against cat moving the same bytes
# through the same kind of pipe. Target: looker-gen >= 0.5x cat.
#
# Usage: bench/gen.sh [ENTRIES] [extra looker-gen flags...]
set -euo pipefail

cd "$(dirname "$0")/.."
entries=${1:-5000000}
shift || true
series=100
count=$((entries / series))
flags=(--format looker --line-bytes 100 --n-series "$series" --count "$count"
       --seed 1 --start-time 2026-01-01T00:00:00Z "$@")

cargo build --release --quiet --bin looker-gen
bin=target/release/looker-gen

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" "${flags[@]}" >"$tmp/records"
bytes=$(stat -c %s "$tmp/records")

# Best of 3 wall-clock seconds for a shell snippet.
best() {
    local best_s=""
    for _ in 1 2 3; do
        local t0 t1 s
        t0=$(date +%s.%N)
        bash -c "$1"
        t1=$(date +%s.%N)
        s=$(echo "$t1 - $t0" | bc -l)
        if [[ -z $best_s ]] || (( $(echo "$s < $best_s" | bc -l) )); then
            best_s=$s
        fi
    done
    echo "$best_s"
}

cat_s=$(best "cat '$tmp/records' | cat >/dev/null")
gen_s=$(best "'$bin' ${flags[*]} | cat >/dev/null")

mbps() { echo "scale=1; $bytes / $1 / 1000000" | bc -l; }
echo "records: $entries entries, $bytes bytes ($(echo "scale=1; $bytes / $entries" | bc -l) B/record)"
echo "cat file | cat:       $(mbps "$cat_s") MB/s (${cat_s}s)"
echo "looker-gen | cat:     $(mbps "$gen_s") MB/s (${gen_s}s)"
echo "ratio looker-gen/cat: $(echo "scale=2; $cat_s / $gen_s" | bc -l)"
