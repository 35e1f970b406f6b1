#!/usr/bin/env bash
# The decoder's forwarding cost (issue 12): items per second of decoder CPU and peak RSS,
# for each signal, over OTLP/HTTP and OTLP/gRPC, uncompressed, gzip and zstd, forwarding the
# events' own bytes (the default) and decoding and merging them (`--merge`, the path before).
# Events come from the project's own exporters (bench/src/bin/ue-decoder-bench.rs says how);
# the receiver is the tests' otlp-receiver on 127.0.0.1, in its own process.
#
# Usage: scripts/bench-decoder.sh [ITEMS]   (default 400,000 items per run)
#        scripts/bench-decoder.sh --queue [ITEMS]
# --queue measures the sink queue on disk instead (`run --queue-dir`): each signal over
# OTLP/HTTP uncompressed, in memory and on disk with each --queue-sync policy, alternated,
# twice; the queue lives in a directory under $TMPDIR (default /tmp), deleted after each run.
set -euo pipefail
cd "$(dirname "$0")/.."
queue=false
if [ "${1:-}" = --queue ]; then
    queue=true
    shift
fi
items=${1:-400000}
cargo build --release -p ue-bench --bin ue-decoder-bench -p tests --bin otlp-receiver
target=${CARGO_TARGET_DIR:-target}
http_port=$((20000 + RANDOM % 10000))
grpc_port=$((http_port + 1))
"$target/release/otlp-receiver" --http "127.0.0.1:$http_port" --grpc "127.0.0.1:$grpc_port" >/dev/null &
receiver=$!
trap 'kill $receiver 2>/dev/null || true' EXIT
sleep 1
echo "host: $(nproc) CPUs, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
if $queue; then
    dir=$(mktemp -d)
    trap 'kill $receiver 2>/dev/null || true; rm -rf "$dir"' EXIT
    echo "queue directory on $(df --output=source,fstype "$dir" | tail -1)"
    for round in 1 2; do
        for signal in metrics logs; do
            for sync in memory never 100 batch; do
                flags=()
                [ "$sync" != memory ] && flags=(--queue-dir "$dir/q" --queue-sync "$sync")
                "$target/release/ue-decoder-bench" --signal "$signal" --protocol http \
                    --endpoint "http://127.0.0.1:$http_port" --items "$items" "${flags[@]}" |
                    tr '\n' ' ' | sed 's/  */ /g'
                echo
                rm -rf "$dir/q"
            done
        done
    done
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
fi
for signal in metrics traces logs; do
    for protocol in http grpc; do
        port=$http_port
        [ "$protocol" = grpc ] && port=$grpc_port
        for flags in "" "--compression gzip" "--compression zstd" "--merge --compression gzip"; do
            # shellcheck disable=SC2086 # flags are words
            "$target/release/ue-decoder-bench" --signal "$signal" --protocol "$protocol" \
                --endpoint "http://127.0.0.1:$port" --items "$items" $flags |
                tr '\n' ' ' | sed 's/  */ /g'
            echo
        done
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
