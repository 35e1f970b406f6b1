#!/usr/bin/env bash
# Installs moto's S3-compatible server (PyPI `moto[server]`) when it is missing, and prints
# the path of the Python that has it: the archive sink's test (tests/tests/archive.rs) runs
# `PYTHON -m moto.server -H 127.0.0.1 -p PORT` itself, so the test works on a fresh machine;
# scripts/test.sh runs this before the suite.
set -euo pipefail

die() { echo "install-moto.sh: $*" >&2; exit 1; }

python=$(command -v python3 || command -v python || true)
[[ -n $python ]] || die "python3 is missing: apt-get install python3 python3-pip"

has_moto() { "$python" -c 'import moto.server, flask' >/dev/null 2>&1; }

if ! has_moto; then
    echo "install-moto.sh: installing moto[server] with pip" >&2
    # Debian's own Python refuses pip installs into the system without this flag.
    if ! "$python" -m pip install -q 'moto[server]' >/dev/null 2>&1; then
        "$python" -m pip install -q --break-system-packages 'moto[server]' >/dev/null ||
            die "pip install 'moto[server]' failed"
    fi
    has_moto || die "moto installed but not importable by $python"
fi

command -v "$python"
