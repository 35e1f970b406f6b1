#!/usr/bin/env bash
# The decoder's forwarding cost (issue 12): items per second of decoder CPU and peak RSS,
# for each signal, over OTLP/HTTP and OTLP/gRPC, uncompressed, gzip and zstd, forwarding the
# events' own bytes (the default) and decoding and merging them (`--merge`, the path before).
# Events come from the project's own exporters (bench/src/bin/ue-decoder-bench.rs says how);
# the receiver is the tests' otlp-receiver on 127.0.0.1, in its own process.
#
# Usage: scripts/bench-decoder.sh [ITEMS]   (default 400,000 items per run)
set -euo pipefail
cd "$(dirname "$0")/.."
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
