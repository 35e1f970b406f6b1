#!/usr/bin/env bash
# Regenerate the perf.data fixtures of the hermetic `perf_data` test:
#
#   tests/fixtures/examples.perf.data     what `perf record` captured while the exporter
#                                         examples ran (metrics 3 10, spans 5)
#   tests/fixtures/examples.z.perf.data   the same events, captured at the same time by a
#                                         second `perf record -z` (zstd-compressed records)
#   tests/fixtures/examples.expected.txt  the stats line each example printed: what it wrote
#   tests/fixtures/examples.json          the golden OTLP/JSON lines the capture decodes to
#                                         (cargo run -p tests --bin bless-golden examples logs)
#   tests/fixtures/lossy.perf.data        metrics 2 300 and spans 5 captured with a 4 KiB
#   tests/fixtures/lossy.expected.txt     ring: the spans arrive, every metrics event is
#                                         lost, and the file's loss records say so
#   tests/fixtures/logs.perf.data         what `perf record -e user_events:otlp_logs`
#   tests/fixtures/logs.expected.txt      captured while the logs example ran (logs 12),
#                                         and the stats line it printed
#   tests/fixtures/logs.json              its golden OTLP/JSON lines (bless-golden, as above)
#   tests/fixtures/eventheader.perf.data  what `perf record` captured of the upstream
#   tests/fixtures/eventheader.expected.txt  EventHeader crates' events (eh-writer: fixed
#                                         content, tests/src/eventheader.rs), and the line
#                                         it printed
#
# Usage: scripts/make-fixture.sh
#
# The host kernel has no user_events, so the captures run in the project VM
# (scripts/vm.sh, with tests/fixtures shared writable); this script re-runs itself there
# with --in-vm. In the guest, for each capture:
#   1. Both examples start with UE_WAIT_FOR_LISTENER_SECS: they register their tracepoint,
#      then wait for a listener before writing anything.
#   2. Once both have registered, `perf record` starts (an event must exist when perf
#      opens it). The examples see their enable bit turn on and wait 1 s more, because
#      the bit turns on when perf opens the event, before perf enables it (KERNEL.md).
#   3. perf's workload waits until both examples have exited, so the capture holds every
#      event they wrote and nothing after.
# The VM has one CPU (smaller files, one sample stream); perf records without build-ids
# (-B: tracepoint samples need none) and without records of the processes that ran
# before it (--synth=no).
#
# Ids and timestamps differ on every run, so the golden file is regenerated with the
# captures, then the perf_data test checks them against what the examples printed. A
# capture that missed an event (the race above, under emulation) fails it and is made
# again, up to 3 times.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
fixtures=$root/tests/fixtures
me=make-fixture.sh
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# capture NAME METRICS_ARGS SPANS_ARGS VARIANT...: runs both examples once while one
# perf record per VARIANT ("SUFFIX:PERF OPTIONS") captures them into
# tests/fixtures/NAME<SUFFIX>.perf.data; writes tests/fixtures/NAME.expected.txt.
capture() {
    local name=$1 metrics_args=$2 spans_args=$3 work=/tmp/make-fixture/$1
    shift 3
    mkdir -p "$work"
    # shellcheck disable=SC2086  # the examples' arguments are words
    UE_WAIT_FOR_LISTENER_SECS=120 target/debug/examples/metrics $metrics_args \
        >"$work/metrics.out" 2>"$work/metrics.err" &
    local metrics_pid=$!
    # shellcheck disable=SC2086
    UE_WAIT_FOR_LISTENER_SECS=120 target/debug/examples/spans $spans_args \
        >"$work/spans.out" 2>"$work/spans.err" &
    local spans_pid=$!

    # Each example prints its registration right after registering. (The tracefs
    # directories alone could be the previous capture's, not yet removed.)
    local i tracing=/sys/kernel/tracing/events/user_events
    for ((i = 0; i < 600; i++)); do
        [[ -s $work/metrics.err && -s $work/spans.err &&
            -e $tracing/otlp_metrics && -e $tracing/otlp_traces ]] && break
        sleep 0.1
    done
    ((i < 600)) || die "the examples did not register otlp_metrics and otlp_traces within 60 s"
    for i in metrics spans; do
        grep -q ': registered$' "$work/$i.err" || die "$i example: $(cat "$work/$i.err")"
    done

    # perf's workload ends when both examples are done: it blocks reading a FIFO this
    # script writes to after waiting for them (they are not its children). A FIFO, not a
    # polling loop, so that the capture holds no fork/exec/mmap records of sleep(1).
    # --synth=no: no records of the processes that ran before perf started (the samples
    # are all this fixture is for; perf's side-band records would make it 4x larger).
    local variant suffix extra perf_pids=()
    for variant in "$@"; do
        suffix=${variant%%:*}
        read -ra extra <<<"${variant#*:}"
        rm -f "$work/done$suffix"
        mkfifo "$work/done$suffix"
        perf record -q -B -N --synth=no -a "${extra[@]}" \
            -e user_events:otlp_metrics -e user_events:otlp_traces \
            -o "$work/$name$suffix.perf.data" \
            -- sh -c "read -r _ <$work/done$suffix; true" 2>"$work/perf$suffix.err" &
        perf_pids+=($!)
    done

    local status=0
    wait "$metrics_pid" || status=$?
    wait "$spans_pid" || status=$?
    for variant in "$@"; do
        echo >"$work/done${variant%%:*}"
    done
    for i in "${!perf_pids[@]}"; do
        wait "${perf_pids[$i]}" || die "perf record ($1) failed: $(cat "$work"/perf*.err)"
    done
    if ((status)); then
        cat "$work"/*.err >&2
        die "an example failed (status $status)"
    fi

    # perf writes 0600; the fixtures are committed and read by unprivileged test runs.
    install -m 0644 "$work"/*.perf.data "$fixtures/"
    {
        echo "# Written by scripts/make-fixture.sh: what each example wrote while perf recorded."
        echo "metrics $metrics_args: $(tail -n1 "$work/metrics.out")"
        echo "spans $spans_args: $(tail -n1 "$work/spans.out")"
    } >"$fixtures/$name.expected.txt"
    chmod 0644 "$fixtures/$name.expected.txt"
    log "$name: $(grep -v '^#' "$fixtures/$name.expected.txt" | tr '\n' ' ')"
    # Without the known complaint of a kernel without kallsyms, perf's stderr is news.
    grep -hv -e 'kernel reference relocation symbol' -e 'Symbol resolution may be skewed' \
        -e '/proc/kallsyms permission' "$work"/perf*.err >&2 || true
}

# capture_logs: the logs example's events alone, the same way as capture() (wait for the
# registration, then perf, then the example writes once it sees its reader).
capture_logs() {
    local work=/tmp/make-fixture/logs i tracing=/sys/kernel/tracing/events/user_events
    mkdir -p "$work"
    UE_WAIT_FOR_LISTENER_SECS=120 target/debug/examples/logs 12 \
        >"$work/logs.out" 2>"$work/logs.err" &
    local logs_pid=$!
    for ((i = 0; i < 600; i++)); do
        [[ -s $work/logs.err && -e $tracing/otlp_logs ]] && break
        sleep 0.1
    done
    ((i < 600)) || die "the logs example did not register otlp_logs within 60 s"
    grep -q ': registered$' "$work/logs.err" || die "logs example: $(cat "$work/logs.err")"
    rm -f "$work/done"
    mkfifo "$work/done"
    perf record -q -B -N --synth=no -a -e user_events:otlp_logs -o "$work/logs.perf.data" \
        -- sh -c "read -r _ <$work/done; true" 2>"$work/perf.err" &
    local perf_pid=$!
    local status=0
    wait "$logs_pid" || status=$?
    echo >"$work/done"
    wait "$perf_pid" || die "perf record (logs) failed: $(cat "$work/perf.err")"
    ((status == 0)) || die "the logs example failed: $(cat "$work/logs.err")"
    install -m 0644 "$work/logs.perf.data" "$fixtures/"
    {
        echo "# Written by scripts/make-fixture.sh: what the logs example wrote while perf recorded."
        echo "logs 12: $(tail -n1 "$work/logs.out")"
    } >"$fixtures/logs.expected.txt"
    chmod 0644 "$fixtures/logs.expected.txt"
    log "logs: $(grep -v '^#' "$fixtures/logs.expected.txt")"
}

# capture_eventheader: the upstream EventHeader crates' events, written by eh-writer, the
# same way as capture_logs().
capture_eventheader() {
    local work=/tmp/make-fixture/eventheader i tracing=/sys/kernel/tracing/events/user_events
    mkdir -p "$work"
    UE_WAIT_FOR_LISTENER_SECS=120 target/debug/eh-writer >"$work/eh.out" 2>"$work/eh.err" &
    local eh_pid=$!
    for ((i = 0; i < 600; i++)); do
        [[ -s $work/eh.err && -e $tracing/ue_eh_logs_L5K1 && -e $tracing/ue_eh_traces_L4K1 ]] && break
        sleep 0.1
    done
    ((i < 600)) || die "eh-writer did not register its tracepoints within 60 s: $(cat "$work/eh.err")"
    local events=() level
    for level in 1 2 3 4 5; do
        events+=(-e "user_events:ue_eh_logs_L${level}K1")
    done
    events+=(-e user_events:ue_eh_traces_L4K1)
    rm -f "$work/done"
    mkfifo "$work/done"
    perf record -q -B -N --synth=no -a "${events[@]}" -o "$work/eventheader.perf.data" \
        -- sh -c "read -r _ <$work/done; true" 2>"$work/perf.err" &
    local perf_pid=$!
    local status=0
    wait "$eh_pid" || status=$?
    echo >"$work/done"
    wait "$perf_pid" || die "perf record (eventheader) failed: $(cat "$work/perf.err")"
    ((status == 0)) || die "eh-writer failed: $(cat "$work/eh.err")"
    install -m 0644 "$work/eventheader.perf.data" "$fixtures/"
    {
        echo "# Written by scripts/make-fixture.sh: what eh-writer wrote while perf recorded."
        echo "eventheader: $(tail -n1 "$work/eh.out")"
    } >"$fixtures/eventheader.expected.txt"
    chmod 0644 "$fixtures/eventheader.expected.txt"
    log "eventheader: $(grep -v '^#' "$fixtures/eventheader.expected.txt")"
}

in_vm() {
    cd "$root"
    for ex in metrics spans logs; do
        [[ -x target/debug/examples/$ex ]] || die "target/debug/examples/$ex missing"
    done
    # The main fixture, plain and zstd-compressed (-z), captured at the same time.
    capture examples "3 10" "5" ":" ".z:-z"
    # A capture that loses events: a 1-page (4 KiB) ring cannot hold the metrics
    # example's events of 300 series (each over 4 KiB), so the kernel drops every one
    # and says so in PERF_RECORD_LOST; the spans event (2 KiB) fits.
    capture lossy "2 300" "5" ":-m 1"
    # The log records, in a capture of their own.
    capture_logs
    # The upstream EventHeader crates' events.
    capture_eventheader
}

if [[ ${1:-} == --in-vm-logs ]]; then
    # Only the logs capture (the others untouched): scripts/vm.sh --cpus 1 --rw tests/fixtures
    # -- scripts/make-fixture.sh --in-vm-logs
    [[ ${UE_VM:-} == 1 ]] || die "--in-vm-logs is for the guest of scripts/vm.sh"
    cd "$root"
    capture_logs
    exit
fi

if [[ ${1:-} == --in-vm-eventheader ]]; then
    # Only the EventHeader capture: scripts/vm.sh --cpus 1 --rw tests/fixtures --
    # scripts/make-fixture.sh --in-vm-eventheader
    [[ ${UE_VM:-} == 1 ]] || die "--in-vm-eventheader is for the guest of scripts/vm.sh"
    cd "$root"
    capture_eventheader
    exit
fi

if [[ ${1:-} == --in-vm ]]; then
    [[ ${UE_VM:-} == 1 ]] || die "--in-vm is for the guest of scripts/vm.sh"
    in_vm
    exit
fi
(($# == 0)) || die "usage: scripts/make-fixture.sh (no arguments)"

cd "$root"
mkdir -p "$fixtures"
log "building the examples"
cargo build -q -p otlp-user-events --examples
cargo build -q -p tests --bin eh-writer
cargo test -q -p tests --test perf_data --test eventheader --no-run
check_log=$(mktemp)
trap 'rm -f "$check_log"' EXIT
for attempt in 1 2 3; do
    log "capturing in the VM (attempt $attempt)"
    "$here/vm.sh" --cpus 1 --rw "$fixtures" -- "$here/make-fixture.sh" --in-vm
    log "regenerating the golden file, checking the capture"
    cargo run -q -p tests --bin bless-golden examples logs
    # The EventHeader golden file depends only on eh-writer's fixed content: not blessed
    # here, so a recapture is checked against it.
    if cargo test -q -p tests --test perf_data --test eventheader >"$check_log" 2>&1; then
        for f in examples.perf.data examples.z.perf.data examples.json examples.expected.txt \
            lossy.perf.data lossy.expected.txt logs.perf.data logs.expected.txt \
            eventheader.perf.data eventheader.expected.txt; do
            log "wrote $(stat -c '%n (%s bytes)' "$fixtures/$f")"
        done
        exit 0
    fi
    log "the capture failed the perf_data test:"
    grep -E 'panicked|left|right|FAILED' "$check_log" | head -20 >&2 || true
done
die "no complete capture in 3 attempts"
