#!/usr/bin/env bash
# Installs Debian's Prometheus server (package `prometheus`) when it is missing, and prints
# the path of its binary. The Prometheus sink's test (tests/tests/prometheus.rs) runs it, so
# the test works on a fresh machine; scripts/test.sh runs it before the suite.
#
# Only the server is installed (--no-install-recommends: no node exporter). On a host run
# by systemd, the package also enables its own service on :9090; the test runs its own
# server on a free port and does not use it.
set -euo pipefail

die() { echo "install-prometheus.sh: $*" >&2; exit 1; }

if ! command -v prometheus >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "prometheus is missing and installing it needs root: apt-get install prometheus"
    echo "install-prometheus.sh: installing prometheus" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
            die "apt-get install prometheus failed"
    fi
fi
command -v prometheus
