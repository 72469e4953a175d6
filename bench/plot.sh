#!/usr/bin/env bash
# Plots the per-interval CSV of `looker-push --report-csv` as a PNG with two
# panels: throughput (entries/s, and the target rate when paced) and request
# latency (p50, p90, p99) over the run's elapsed time.
#
#   bench/plot.sh REPORT.csv OUT.png
#
# Needs gnuplot (Debian/Ubuntu: gnuplot-nox); installed with apt-get when
# missing and running as root.
#
# Example (the run this script was checked with):
#   cargo build --bin looker-gen --bin looker-push
#   ./target/debug/looker-gen --count 0 --start-time 2024-01-01T00:00:00Z --n-series 20 \
#     | timeout -s INT 10 ./target/debug/looker-push --null --rate 5000 \
#         --report-csv /tmp/x.csv --progress-interval 500ms
#   bench/plot.sh /tmp/x.csv /tmp/x.png
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 REPORT.csv OUT.png" >&2
  exit 2
fi
csv=$1 out=$2
header="elapsed_s,entries_per_s,mb_per_s,requests_per_s,p50_ms,p90_ms,p99_ms,max_ms,errors_total,retries_total,target_rate"
if [ ! -r "$csv" ]; then
  echo "$0: cannot read $csv" >&2
  exit 2
fi
if [ "$(head -n 1 "$csv" | tr -d '\r')" != "$header" ]; then
  echo "$0: $csv is not a looker-push --report-csv file (expected header: $header)" >&2
  exit 2
fi
if [ "$(wc -l <"$csv")" -lt 2 ]; then
  echo "$0: $csv has no rows yet (one is written per --progress-interval)" >&2
  exit 2
fi

if ! command -v gnuplot >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$0: installing gnuplot-nox" >&2
    apt-get install -y -qq gnuplot-nox >/dev/null ||
      { apt-get update -qq && apt-get install -y -qq gnuplot-nox >/dev/null; }
  else
    echo "$0: gnuplot not found; install it, e.g. 'sudo apt-get install gnuplot-nox' (Debian/Ubuntu)," >&2
    echo "'sudo dnf install gnuplot' (Fedora) or 'brew install gnuplot' (macOS)" >&2
    exit 2
  fi
fi

# Rows as plotted: a 12th column with the mean throughput since the start,
# and without a last row whose interval is under half the usual one. Such
# a row is the final tick at exit; its few milliseconds hold the entries
# flushed at shutdown, so its rate is meaningless and would flatten the
# panel.
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
awk -F, -v OFS=, '
  NR == 1 { next }
  { t[++n] = $1; row[n] = $0; eps[n] = $2 }
  END {
    if (n >= 3) {
      typical = t[2] - t[1]
      last = t[n] - t[n - 1]
      if (last < typical / 2) {
        printf "%s: left out the last row (a %.0f ms interval at exit)\n", FILENAME, last * 1000 > "/dev/stderr"
        n--
      }
    }
    prev = 0; total = 0
    for (i = 1; i <= n; i++) {
      total += eps[i] * (t[i] - prev); prev = t[i]
      print row[i], (t[i] > 0 ? total / t[i] : 0)
    }
  }' "$csv" >"$tmp"

# pngcairo draws smoother lines; the libgd png terminal is the fallback.
term=png
if gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo; then
  term=pngcairo
fi

# Paths reach gnuplot as variables (-e), so quotes in them do no harm.
gnuplot -e "csv='${csv//\'/\'\'}'; data='$tmp'; out='${out//\'/\'\'}'; term='$term'" /dev/stdin <<'GNUPLOT'
if (term eq 'pngcairo') {
  set terminal pngcairo size 1100,800 font 'sans,10'
} else {
  set terminal png size 1100,800
}
set output out
set datafile separator ','
set grid
set key top left opaque
set xlabel 'elapsed (s)'
set lmargin 12
set multiplot layout 2,1 title sprintf('looker-push: %s', csv) noenhanced

set title 'Throughput' noenhanced
set ylabel 'entries/s'
set yrange [0:*]
# target_rate is 0 when the push is not paced: no line then.
plot data using 1:2 with linespoints lw 2 pt 7 ps 0.8 title 'entries/s acknowledged, per interval', \
     '' using 1:12 with lines lw 2 title 'mean since start', \
     '' using 1:($11 > 0 ? $11 : NaN) with lines lw 2 dt 2 lc rgb 'black' title 'target rate'

set title 'Request latency (intervals without requests left out)'
set ylabel 'ms'
set yrange [0:*]
plot data using 1:($4 > 0 ? $5 : NaN) with linespoints lw 2 pt 7 ps 0.8 title 'p50', \
     '' using 1:($4 > 0 ? $6 : NaN) with linespoints lw 2 pt 7 ps 0.8 title 'p90', \
     '' using 1:($4 > 0 ? $7 : NaN) with linespoints lw 2 pt 7 ps 0.8 title 'p99'

unset multiplot
GNUPLOT
echo "$out"
