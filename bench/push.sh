#!/usr/bin/env bash
# Pipeline throughput of looker-push --null (parse, batch, encode protobuf +
# snappy, count) on generated log records, per CPU second, with peak RSS;
# the same entries as stream lines; and the record input through `cat` as
# the baseline of reading it.
#
#   bench/push.sh [ENTRIES]     (default 2,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000000}
cargo build --release --quiet --bin looker-gen --bin looker-push
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
series=100
./target/release/looker-gen --seed 1 --start-time 2024-01-01T00:00:00Z --format looker \
  --line-bytes 100 --n-series $series --count $((n / series)) >"$tmp/in.ndjson"
# The same entries as stream lines of 100 (Loki's streams).
./target/release/looker-gen --seed 1 --start-time 2024-01-01T00:00:00Z --format looker \
  --line-bytes 100 --n-series $series --count $((n / series)) --entries-per-line 100 >"$tmp/streams.ndjson"
bytes=$(stat -c %s "$tmp/in.ndjson")
echo "input: $n entries, $((bytes / 1000000)) MB"

measure() { # label, command...
  local label=$1; shift
  local best=""
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %U %S %M" -o "$tmp/t" "$@" >/dev/null 2>"$tmp/err" || { cat "$tmp/err"; exit 1; }
    read -r wall user sys rss <"$tmp/t"
    cpu=$(echo "$user + $sys" | bc -l)
    if [ -z "$best" ] || (( $(echo "$cpu < $best_cpu" | bc -l) )); then
      best="$wall $cpu $rss"; best_cpu=$cpu
    fi
  done
  read -r wall cpu rss <<<"$best"
  printf '%-34s wall %6.2fs  cpu %6.2fs  %10.0f entries/s wall  %10.0f entries/cpu-s  peak RSS %6.1f MB\n' \
    "$label" "$wall" "$cpu" "$(echo "$n / $wall" | bc -l)" "$(echo "$n / $cpu" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}

measure "cat (baseline read)" cat "$tmp/in.ndjson"
measure "push --null (loki protobuf)" ./target/release/looker-push "$tmp/in.ndjson" --null -q
measure "push --null, stream lines of 100" ./target/release/looker-push "$tmp/streams.ndjson" --null -q
measure "push --null --encoding json" ./target/release/looker-push "$tmp/in.ndjson" --null -q --encoding json
measure "push --file (ndjson sink)" ./target/release/looker-push "$tmp/in.ndjson" -q --file "$tmp/out.ndjson"
