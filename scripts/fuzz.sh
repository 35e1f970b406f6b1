#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each (default 60),
# starting from the seeds in fuzz/seeds (made from the committed fixtures) and the
# committed crash inputs in fuzz/regressions, plus whatever earlier runs added to
# fuzz/corpus. Installs a nightly toolchain and cargo-fuzz (pinned) if they are missing.
# Fails on the first crash; the crashing input is left in fuzz/artifacts/TARGET/ (commit
# it under fuzz/regressions/TARGET/, which tests/tests/fuzz_replay.rs replays on stable).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# The targets are built once, optimised and with debug assertions (-O -a), so an integer
# overflow is a crash here even though release builds would wrap. Each run is bounded in
# memory (-rss_limit_mb, -malloc_limit_mb: the decoder's stated bound is 128 MiB,
# libFuzzer's own bookkeeping comes on top) and per input (-timeout). The last line per
# target says how long it ran and how many inputs it tried.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(perf_data event_fields otlp_buffer ring batch eventheader)

cargo_fuzz_version=0.13.2
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$cargo_fuzz_version" ]; then
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

cd fuzz
echo "== building ${targets[*]} (cargo fuzz build -O -a)"
build_start=$(date +%s)
for target in "${targets[@]}"; do
    CARGO_INCREMENTAL=0 cargo +nightly fuzz build -O -a "$target"
done
echo "built in $(( $(date +%s) - build_start ))s"
bin_dir=target/x86_64-unknown-linux-gnu/release

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    inputs=("corpus/$target" "seeds/$target")
    [ -d "regressions/$target" ] && inputs+=("regressions/$target")
    echo "== $target: ${seconds}s"
    start=$(date +%s)
    "$bin_dir/$target" "${inputs[@]}" \
        -artifact_prefix="artifacts/$target/" -max_total_time="$seconds" \
        -rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=10 -max_len=262144 \
        -print_final_stats=1 2>"artifacts/$target/log" || {
        tail -n 60 "artifacts/$target/log" >&2
        echo "fuzz.sh: $target crashed; input in fuzz/artifacts/$target/" >&2
        exit 1
    }
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "artifacts/$target/log" | grep -Eo '[0-9]+$' || echo '?')
    echo "$target: $(( $(date +%s) - start ))s, $execs inputs, 0 crashes"
done
