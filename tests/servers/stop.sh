#!/usr/bin/env bash
# Stops the servers tests/servers/start.sh started and deletes their data.
set -euo pipefail

state_dir=${LOOKER_SERVERS_DIR:-${TMPDIR:-/tmp}/looker-servers-$(id -u)}
state=$state_dir/state

say() { printf 'stop.sh: %s\n' "$*" >&2; }

if [ ! -f "$state" ]; then
    say "nothing to stop ($state not found)"
    exit 0
fi

# Only signal a pid that still runs the binary we started: after a reboot
# or a crash the number may belong to something else.
ours() {
    local pid=$1 name=$2
    [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name"
}

while read -r name pid dir; do
    [ -n "${pid:-}" ] || continue
    if ours "$pid" "$dir"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        say "stopped $name (pid $pid)"
    fi
    case "$dir" in
        "$state_dir"/*) rm -rf "$dir" ;;
    esac
done <"$state"

rm -f "$state" "$state_dir/prometheus.yml"
rmdir "$state_dir" 2>/dev/null || true
