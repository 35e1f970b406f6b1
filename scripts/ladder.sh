#!/usr/bin/env bash
# The rate ladder: at increasing rates, one writer (bench's ue-ladder-writer, through the
# project's metrics exporter) is read at the same time by `ue-decoder run` and by
# `perf record -e user_events:otlp_metrics`, each with the same ring per CPU, and the
# highest rate each holds with no event lost in the kernel is reported. Runs in the
# project VM (scripts/vm.sh), where user_events exists; the VM emulates its CPUs, so the
# absolute rates mean little: what counts is the two readers against each other.
#
# Usage: scripts/ladder.sh [RATE...]   data points per second
#                                      (default 10000 20000 50000 100000 200000 400000)
# Env: UE_LADDER_RING_KIB (per-CPU ring of both readers, default 1024, the decoder's
#      default), UE_LADDER_SECS (seconds per step, default 3), UE_LADDER_DECODER_ARGS
#      (more `ue-decoder run` flags, e.g. "--wakeup-bytes 65536")
# The decoder sends to the tests' otlp-receiver in the guest (--forget: it keeps nothing),
# over OTLP/HTTP with zstd; perf writes its perf.data to the guest's memory.
set -euo pipefail
cd "$(dirname "$0")/.."
rates=("$@")
((${#rates[@]})) || rates=(10000 20000 50000 100000 200000 400000)
ring_kib=${UE_LADDER_RING_KIB:-1024}
secs=${UE_LADDER_SECS:-3}
decoder_args=${UE_LADDER_DECODER_ARGS:-}
target=${CARGO_TARGET_DIR:-target}/release

if [ -z "${UE_LADDER_INSIDE:-}" ]; then
    cargo build --release -p ue-decoder --bin ue-decoder -p tests --bin otlp-receiver \
        -p ue-bench --bin ue-ladder-writer
    echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    exec scripts/vm.sh --timeout 1800 -e UE_LADDER_INSIDE=1 -e UE_LADDER_RING_KIB="$ring_kib" \
        -e UE_LADDER_SECS="$secs" -e UE_LADDER_DECODER_ARGS="$decoder_args" -- scripts/ladder.sh "${rates[@]}"
fi

command -v perf >/dev/null || { echo "ladder: perf is not in the guest" >&2; exit 1; }
work=$(mktemp -d /tmp/ue-ladder.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # FILE PATTERN
    for _ in $(seq 600); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "ladder: no '$2' in $1:" >&2; cat "$1" >&2; exit 1
}

"$target/otlp-receiver" --http 127.0.0.1:4318 --forget >"$work/receiver.log" 2>&1 &
pids+=($!)
wait_for "$work/receiver.log" listening
pages=$((ring_kib / 4))
echo "guest: $(nproc) CPUs; ring per CPU: ${ring_kib} KiB (perf -m $pages); ${secs} s per step; decoder flags: ${decoder_args:-none}"
printf '%10s %12s %14s %14s %16s %s\n' rate written decoder_lost perf_lost decoder_peak_rss writer
best_decoder=0 best_perf=0
for rate in "${rates[@]}"; do
    # shellcheck disable=SC2086 # the extra flags are words
    "$target/ue-decoder" run --signals metrics --ring-kib "$ring_kib" \
        --endpoint http://127.0.0.1:4318 --compression zstd --stats-secs 3600 $decoder_args \
        >"$work/decoder.out" 2>"$work/decoder.log" &
    decoder=$!
    wait_for "$work/decoder.log" "ue-decoder: reading"
    perf record -e user_events:otlp_metrics -a -m "$pages" -o "$work/perf.data" \
        -- sleep $((secs + 2)) >"$work/perf.log" 2>&1 &
    perf=$!
    sleep 1 # perf enables its events after opening them
    writer=$("$target/ue-ladder-writer" --rate "$rate" --secs "$secs")
    wait "$perf" || true
    # The decoder's peak resident memory, its perf rings included (mapped and touched).
    rss=$(sed -n 's/^VmHWM:[[:space:]]*//p' "/proc/$decoder/status")
    kill -TERM "$decoder"
    wait "$decoder" || true
    decoder_lost=$(sed -n 's/.*kernel lost \([0-9]*\).*/\1/p' "$work/decoder.log" | tail -1)
    # perf's own count of what the kernel dropped from its rings (LOST records).
    "$target/ue-decoder" decode "$work/perf.data" --endpoint http://127.0.0.1:4318 \
        --compression zstd >/dev/null 2>"$work/decode.log" || true
    perf_lost=$(sed -n 's/.*perf lost \([0-9]*\) records.*/\1/p' "$work/decode.log" | tail -1)
    perf_lost=${perf_lost:-0}
    written=$(echo "$writer" | sed -n 's/^wrote \([0-9]*\) points.*/\1/p')
    achieved=$(echo "$writer" | sed -n 's/.*(\([0-9]*\) points\/s.*/\1/p')
    printf '%10s %12s %14s %14s %16s %s points/s\n' "$rate" "$written" "${decoder_lost:-?}" "$perf_lost" "$rss" "$achieved"
    [ "${decoder_lost:-1}" = 0 ] && best_decoder=$rate
    [ "$perf_lost" = 0 ] && best_perf=$rate
    rm -f "$work/perf.data"
done
echo "highest rate with no kernel loss: ue-decoder run $best_decoder points/s, perf record $best_perf points/s"
