#!/usr/bin/env bash
# The project's one test command: the hermetic suite on this host, then the kernel suite
# against a real user_events kernel — natively when this host has user_events and we are
# root, otherwise inside the project's VM (scripts/vm.sh, which builds its kernel once).
#
# Prints a summary of both and ends with "N passed, M failed". Fails if either suite
# fails, or if the kernel suite did not run every one of its tests.
#
#   scripts/test.sh              hermetic + kernel
#   UE_TEST_KERNEL=native|vm     force where the kernel suite runs (default: auto)
set -euo pipefail
cd "$(dirname "$0")/.."

logdir=$(mktemp -d /tmp/ue-test.XXXXXX)
trap 'rm -rf "$logdir"' EXIT

# Sums "test result: ok. N passed; M failed; K ignored" lines of a cargo test log.
count() { # LOG FIELD
    grep -Eo "[0-9]+ $2" "$1" | awk '{s += $1} END {print s + 0}'
}

echo "== hermetic suite (host)"
# The Prometheus sink's test scrapes through a real Prometheus server, the ClickHouse sink's
# inserts into a real ClickHouse server (Debian's packages).
scripts/install-prometheus.sh >/dev/null
scripts/install-clickhouse.sh >/dev/null
# The archive sink's test writes to moto's S3-compatible server (PyPI's moto[server]).
scripts/install-moto.sh >/dev/null
hermetic_rc=0
cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$logdir/hermetic.log" || hermetic_rc=$?
# Doc tests are not part of --all-targets.
cargo test --workspace --doc --no-fail-fast 2>&1 | tee -a "$logdir/hermetic.log" || hermetic_rc=$?
h_pass=$(count "$logdir/hermetic.log" passed)
h_fail=$(count "$logdir/hermetic.log" failed)

echo "== kernel suite"
kernel_rc=0
# Build the kernel test binary and everything it runs (examples, the decoder) on the host.
cargo build --workspace --examples --bins
bin=$(cargo test -p tests --features kernel --test kernel --no-run --message-format=json 2>/dev/null |
    python3 -c 'import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "kernel":
        print(m["executable"])')
[ -x "$bin" ] || { echo "test.sh: kernel test binary not found" >&2; exit 1; }
expected=$("$bin" --list 2>/dev/null | grep -c ': test$')

where=${UE_TEST_KERNEL:-auto}
if [ "$where" = auto ]; then
    if [ "$(id -u)" = 0 ] && scripts/check-kernel.sh >/dev/null 2>&1; then where=native; else where=vm; fi
fi
echo "running $expected kernel tests ($where)"
if [ "$where" = native ]; then
    "$bin" --test-threads=1 2>&1 | tee "$logdir/kernel.log" || kernel_rc=$?
else
    scripts/vm.sh --timeout "${UE_VM_TIMEOUT:-1200}" -- "$bin" --test-threads=1 2>&1 | tee "$logdir/kernel.log" || kernel_rc=$?
fi
k_pass=$(count "$logdir/kernel.log" passed)
k_fail=$(count "$logdir/kernel.log" failed)
if grep -q '^SKIPPED' "$logdir/kernel.log"; then
    echo "test.sh: kernel tests were skipped; they must run here" >&2
    kernel_rc=1
fi
if [ "$k_pass" -ne "$expected" ]; then
    echo "test.sh: $k_pass of $expected kernel tests passed" >&2
    kernel_rc=1
fi

echo
echo "hermetic: $h_pass passed, $h_fail failed (exit $hermetic_rc)"
echo "kernel ($where): $k_pass passed, $k_fail failed of $expected (exit $kernel_rc)"
echo "$((h_pass + k_pass)) passed, $((h_fail + k_fail)) failed"
[ "$hermetic_rc" -eq 0 ] && [ "$kernel_rc" -eq 0 ]
