#!/usr/bin/env bash
# Installs the Prometheus and VictoriaMetrics servers the integration tests
# start (tests/support/servers.rs), from the Debian 12 packages:
#   prometheus        2.42  -> /usr/bin/prometheus
#   victoria-metrics  1.79  -> /usr/bin/victoria-metrics
# Idempotent: does nothing when both binaries are already there (or when
# LOOKER_PROMETHEUS_BIN / LOOKER_VM_BIN point at existing binaries).
# Runs unattended as root (CI); as another user it uses sudo if available.
set -euo pipefail

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Prints the binary the tests will use, or fails.
prometheus_bin() {
    if [ -n "${LOOKER_PROMETHEUS_BIN:-}" ]; then
        [ -x "$LOOKER_PROMETHEUS_BIN" ] && echo "$LOOKER_PROMETHEUS_BIN"
        return
    fi
    command -v prometheus 2>/dev/null
}

vm_bin() {
    if [ -n "${LOOKER_VM_BIN:-}" ]; then
        [ -x "$LOOKER_VM_BIN" ] && echo "$LOOKER_VM_BIN"
        return
    fi
    command -v victoria-metrics 2>/dev/null || command -v victoria-metrics-prod 2>/dev/null
}

have_prometheus() { prometheus_bin >/dev/null; }
have_vm() { vm_bin >/dev/null; }

if have_prometheus && have_vm; then
    say "prometheus and victoria-metrics already installed"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || die "apt-get not found: install Prometheus >= 2.33 and VictoriaMetrics 1.79 by hand and set LOOKER_PROMETHEUS_BIN / LOOKER_VM_BIN"

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo not found: run as root"
    sudo=(sudo -n)
fi

# The packages ship init scripts; the tests start their own servers on
# random ports, so keep the package scripts from starting system services
# (a no-op in containers that already have a deny-all policy-rc.d).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Temporary: set by tests/servers/install.sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" = 1 ]; then "${sudo[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
say "apt-get update"
"${sudo[@]}" apt-get update -q || die "apt-get update failed"
say "apt-get install prometheus victoria-metrics"
"${sudo[@]}" apt-get install -y -q --no-install-recommends prometheus victoria-metrics \
    || die "apt-get install prometheus victoria-metrics failed (these are Debian 12 packages)"

have_prometheus || die "prometheus still missing after install"
have_vm || die "victoria-metrics still missing after install"
say "installed: $("$(prometheus_bin)" --version 2>&1 | head -n1)"
say "installed: victoria-metrics $("$(vm_bin)" -version 2>&1 | head -n1)"
