#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each (default 60),
# starting from the seeds in fuzz/seeds (made from the committed fixtures) plus whatever
# earlier runs added to fuzz/corpus. Installs a nightly toolchain and cargo-fuzz if they
# are missing. Fails on the first crash; the crashing input is left in
# fuzz/artifacts/TARGET/ (make it a regression test in tests/tests/hostile.rs).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Each run is bounded in memory (-rss_limit_mb, -malloc_limit_mb: the decoder's stated
# bound is 128 MiB, libFuzzer's own bookkeeping comes on top) and per input (-timeout).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(perf_data event_fields otlp_buffer ring batch eventheader)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cd fuzz
# The fuzz crate has its own lockfile; start from the workspace's versions.
[ -f Cargo.lock ] || cp ../Cargo.lock .
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    echo "== $target: ${seconds}s"
    start=$(date +%s)
    cargo +nightly fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=10 \
        -max_len=262144 -print_final_stats=1 2>"artifacts/$target/log" || {
        tail -n 60 "artifacts/$target/log" >&2
        echo "fuzz.sh: $target crashed; input in fuzz/artifacts/$target/" >&2
        exit 1
    }
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "artifacts/$target/log" | grep -Eo '[0-9]+$' || echo '?')
    echo "$target: $(( $(date +%s) - start ))s, $execs inputs, 0 crashes"
done
