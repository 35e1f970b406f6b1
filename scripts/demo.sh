#!/usr/bin/env bash
# The whole pipeline, end to end: an OTLP receiver (standing in for a collector), the
# decoder reading the user_events tracepoints, and the example applications exporting
# metrics, spans and logs through the kernel. Shows what arrived and the decoder's counters.
#
# Runs natively on a host with user_events (as root); otherwise inside the project's VM
# (scripts/vm.sh builds its kernel on first use: about 5-15 minutes, then cached).
#
#   scripts/demo.sh [ROUNDS] [SERIES] [TRACES] [LOGS]
#                   defaults: 5 rounds x 20 series, 10 traces, 20 log records per log example
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5} series=${2:-20} traces=${3:-10} logs=${4:-20}

if [ -z "${UE_DEMO_INSIDE:-}" ]; then
    echo "== building (cargo)"
    cargo build --quiet --workspace --bins --examples
    if [ "$(id -u)" = 0 ] && scripts/check-kernel.sh >/dev/null 2>&1; then
        echo "== this host has user_events: running natively"
    else
        echo "== this host has no usable user_events (scripts/check-kernel.sh says why): running in the project VM"
        exec scripts/vm.sh --timeout 900 -e UE_DEMO_INSIDE=1 -- scripts/demo.sh "$rounds" "$series" "$traces" "$logs"
    fi
fi

bin=target/debug
work=$(mktemp -d /tmp/ue-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Waits until FILE has a line matching PATTERN (or the process PID died).
wait_for() { # FILE PATTERN PID WHAT
    for _ in $(seq 600); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { echo "demo: $4 exited early:"; cat "$1"; exit 1; }
        sleep 0.1
    done
    echo "demo: $4 did not start:"; cat "$1"; exit 1
}

echo "== starting the OTLP receiver on 127.0.0.1:4318 (HTTP) and :4317 (gRPC)"
"$bin/otlp-receiver" --http 127.0.0.1:4318 --grpc 127.0.0.1:4317 --dump "$work/received.json" >"$work/receiver.log" 2>&1 &
receiver=$!; pids+=("$receiver")
wait_for "$work/receiver.log" listening "$receiver" "the receiver"

echo "== starting ue-decoder run --endpoint http://127.0.0.1:4318"
"$bin/ue-decoder" run --endpoint http://127.0.0.1:4318 --stats-secs 2 >"$work/decoder.out" 2>"$work/decoder.log" &
decoder=$!; pids+=("$decoder")
wait_for "$work/decoder.log" "ue-decoder: reading" "$decoder" "the decoder"
grep "ue-decoder: reading" "$work/decoder.log"

echo "== running the example applications"
"$bin/examples/metrics" "$rounds" "$series"
"$bin/examples/spans" "$traces"
"$bin/examples/logs" "$logs"
"$bin/examples/tracing_logs" "$logs"

# Let the last batch go out (200 ms batching delay), then stop the decoder as a service
# manager would: it drains the rings, flushes and prints its counters.
sleep 1
kill -TERM "$decoder"
wait "$decoder"
kill -TERM "$receiver"
wait "$receiver" || true

echo
echo "== what the collector received (one line per request)"
cat "$work/receiver.log"
echo
echo "== the decoder's final counters"
sed -n '/final counters/,$p' "$work/decoder.log"
echo
want_points=$((rounds * series + 2 * rounds)) want_spans=$((traces * 3))
echo "the examples wrote $want_points data points, $want_spans spans and $((2 * logs)) log records"
