#!/usr/bin/env bash
# Installs Debian's ClickHouse server (package `clickhouse-server`, 18.16 on bookworm) when
# it is missing, and prints the path of its binary. The ClickHouse sink's test
# (tests/tests/clickhouse.rs) runs it, so the test works on a fresh machine;
# scripts/test.sh runs it before the suite.
#
# The test runs its own server, as an ordinary process with its own configuration and
# data directory on a free port; on a host run by systemd, the package also enables its
# own service on :8123 and :9000, which the test does not use.
set -euo pipefail

die() { echo "install-clickhouse.sh: $*" >&2; exit 1; }

server=/usr/sbin/clickhouse-server
if [[ ! -x $server ]]; then
    [[ $(id -u) -eq 0 ]] || die "clickhouse-server is missing and installing it needs root: apt-get install clickhouse-server"
    echo "install-clickhouse.sh: installing clickhouse-server" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends clickhouse-server >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends clickhouse-server >/dev/null ||
            die "apt-get install clickhouse-server failed"
    fi
    [[ -x $server ]] || die "apt-get installed clickhouse-server but $server is missing"
fi
echo "$server"
