#!/usr/bin/env bash
# The exporters' cost, measured the way issue 9 asks: whole-process CPU time (all threads),
# one exporter per process, processes alternated within each repetition, medians of 5.
#
# Compares, on the same OpenTelemetry SDK 0.33 workloads (counters and histograms at 1,000 /
# 10,000 / 100,000 series of 3 attributes, spans with 6 attributes and 1 event):
#   ours           otlp-user-events (this project)
#   upstream       the real opentelemetry-user-events-metrics 0.14 / -trace 0.6 crates
#   otlp-http      the real opentelemetry-otlp 0.33, HTTP/protobuf, to otlp-receiver on 127.0.0.1
#   sdk-only(-sync) the SDK alone with an exporter/processor that drops everything, so that
#                  each exporter's own share = its total minus that
# with a listener present through an LD_PRELOAD stand-in for user_events registration
# (bench/preload/ue_preload.c: registration succeeds and sets the enable bit, events are
# real writev calls to /dev/null), and with nobody listening (UE_PRELOAD_LISTEN=0).
# Then the encoder's criterion micro-benches (exporter/benches/encode.rs).
#
# Usage: scripts/bench.sh [--quick] [--no-criterion] [ue-bench options]
#   --quick            3 repetitions, 10,000 series, 5,000 spans per round (a try, not a result)
#   --no-criterion     skip the criterion micro-benches
#   --reps N, --workloads counter,histogram,spans, --sizes 1000,10000, --variants ours,upstream,
#   --spans N, --span-rounds N, --points N, --no-idle ...: see target/release/ue-bench --help
#
# Each run's JSON line goes to target/bench/results-<time>.jsonl and the tables to
# target/bench/table-<time>.txt; `target/release/ue-bench --from FILE` prints the tables again.
set -euo pipefail
cd "$(dirname "$0")/.."

criterion=1
quick=0
args=()
for a in "$@"; do
    case $a in
        --no-criterion) criterion=0 ;;
        --quick) quick=1; args+=("$a") ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) args+=("$a") ;;
    esac
done

cargo build --release -p ue-bench -p tests --bin ue-bench --bin ue-bench-worker --bin otlp-receiver

target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target/bench"
stamp=$(date +%Y%m%d-%H%M%S)
results=$target/bench/results-$stamp.jsonl
table=$target/bench/table-$stamp.txt
{
    echo "command: scripts/bench.sh $*"
    echo "host: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), kernel $(uname -r), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rustc: $(rustc --version)"
} | tee "$table"
"$target/release/ue-bench" --results "$results" "${args[@]}" | tee -a "$table"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$table"
echo "results: $results; tables: $table"

if [ "$criterion" = 1 ]; then
    echo
    echo "== encoder micro-benches (criterion): cargo bench -p otlp-user-events --bench encode"
    crit_args=()
    [ "$quick" = 1 ] && crit_args+=(--quick)
    cargo bench -p otlp-user-events --bench encode -- "${crit_args[@]}"
fi
