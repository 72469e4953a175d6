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

# Seconds a shell snippet takes.
secs() {
    local t0 t1
    t0=$(date +%s.%N)
    bash -c "$1"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
min() { if [[ -z $1 ]] || (( $(echo "$2 < $1" | bc -l) )); then echo "$2"; else echo "$1"; fi; }

# Best of 3, alternating so both see the same background load.
cat_s="" gen_s=""
for _ in 1 2 3; do
    cat_s=$(min "$cat_s" "$(secs "cat '$tmp/records' | cat >/dev/null")")
    gen_s=$(min "$gen_s" "$(secs "'$bin' ${flags[*]} | cat >/dev/null")")
done

mbps() { echo "scale=1; $bytes / $1 / 1000000" | bc -l; }
echo "records: $entries entries, $bytes bytes ($(echo "scale=1; $bytes / $entries" | bc -l) B/record)"
echo "cat file | cat:       $(mbps "$cat_s") MB/s (${cat_s}s)"
echo "looker-gen | cat:     $(mbps "$gen_s") MB/s (${gen_s}s)"
echo "ratio looker-gen/cat: $(echo "scale=2; $cat_s / $gen_s" | bc -l)"
