#!/usr/bin/env bash
# Run one command as root inside a small QEMU VM whose kernel has user_events, and
# exit with the command's exit status.
#
# Why: the host kernels we run on lack CONFIG_USER_EVENTS, so the tests of the real
# kernel path (register, write, read back with perf) run in a VM booted from the kernel
# scripts/kernel.sh builds. See /work/shared/KERNEL.md.
#
# Usage: scripts/vm.sh [options] [--] CMD [ARGS...]
#   -v, --verbose      stream the kernel console (boot chatter) to stderr, print timings
#   --timeout SECS     kill a guest that has not finished SECS after QEMU started
#                      (boot included; default 600, env UE_VM_TIMEOUT); exit 124
#   --rw DIR           mount host DIR writable at the same path in the guest
#                      (repeatable), e.g. to regenerate tests/fixtures from inside
#   -e, --env NAME[=VALUE]  pass one more environment variable (repeatable)
#   --cpus N           guest CPUs (default 2, env UE_VM_CPUS; the kernel allows 8)
#   --mem SIZE         guest memory, QEMU syntax (default 1G, env UE_VM_MEM)
#   --keep             keep the per-run directory (its path is printed to stderr)
#   -h, --help
#   UE_VM_ROOT_CACHE   9p cache mode of the guest's root: loose (default; faster, the
#                      guest may miss host changes made while it runs) or none
#
# The guest:
#   - sees the host's root filesystem read-only over 9p, with a tmpfs overlay on top, so
#     every path (cargo's target/, /usr/bin/perf, $HOME...) is there and writable, but
#     writes are thrown away when the VM ends. Only --rw dirs and the per-run dir
#     ($UE_VM_RUNDIR in the guest, same path on the host) write through to the host.
#   - has proc, sysfs, devtmpfs, tracefs (/sys/kernel/tracing), a fresh /run, /dev/shm,
#     the loopback interface up, the clock set from the host's, and the caller's cwd.
#   - gets PATH, HOME, LANG/LC_ALL/TZ, RUST_BACKTRACE, RUST_LOG and every UE_*, CARGO_*,
#     NEXTEST_* and RUST_* variable of the caller, plus UE_VM=1 and any -e variables.
#   - runs CMD as root with stdin from /dev/null; its stdout and stderr go to two
#     serial ports that vm.sh copies to its own stdout and stderr. The kernel's console
#     is a third port, kept in a log (shown with -v, or when the guest dies).
#     In the guest stdout/stderr are ttys; TERM is the caller's TERM when vm.sh's stdout
#     is a terminal, else "dumb" (so tools do not colour output that goes to a file).
#   - Boots under TCG (software emulation): KVM hangs on our hosts. Expect the guest to
#     be 10-100x slower per instruction than the host; don't measure CPU cost in it.
#
# Exit status: CMD's, read back from the per-run share; 124 when --timeout killed the
# guest; 125 when the guest ended without reporting a status (panic, crash) or vm.sh
# itself failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
me=vm.sh
log() { printf '%s: %s\n' "$me" "$*" >&2; }
die() { log "error: $*"; exit 125; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; }

verbose=0
timeout_s=${UE_VM_TIMEOUT:-600}
cpus=${UE_VM_CPUS:-2}
mem=${UE_VM_MEM:-1G}
keep=0
rw_dirs=()
extra_env=()
while (($#)); do
    case $1 in
        -v | --verbose) verbose=1 ;;
        --timeout) timeout_s=${2:?--timeout needs SECS}; shift ;;
        --timeout=*) timeout_s=${1#*=} ;;
        --rw) rw_dirs+=("${2:?--rw needs DIR}"); shift ;;
        --rw=*) rw_dirs+=("${1#*=}") ;;
        -e | --env) extra_env+=("${2:?--env needs NAME[=VALUE]}"); shift ;;
        --env=*) extra_env+=("${1#*=}") ;;
        --cpus) cpus=${2:?--cpus needs N}; shift ;;
        --mem) mem=${2:?--mem needs SIZE}; shift ;;
        --keep) keep=1 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) break ;;
    esac
    shift
done
(($#)) || die "no command given (usage: scripts/vm.sh [options] -- CMD [ARGS...])"
[[ "$timeout_s" =~ ^[0-9]+$ ]] || die "--timeout wants whole seconds, got '$timeout_s'"
[[ "$cpus" =~ ^[1-8]$ ]] || die "--cpus/UE_VM_CPUS must be 1..8 (kernel NR_CPUS=8), got '$cpus'"

# --- Runtime packages (installed only when missing). -------------------------------
# qemu-system-x86: the VM; busybox-static: mount/ip/stty/reboot in the guest (static, so
# they do not depend on anything else of the host); linux-perf: perf inside the guest.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    [[ $(id -u) -eq 0 ]] || die "missing packages (need root to install): ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed"
    fi
}
ensure_packages qemu-system-x86 busybox-static linux-perf

t0=$(date +%s.%N)
kernel=$("$here/kernel.sh") || die "scripts/kernel.sh failed"
t_kernel=$(date +%s.%N)

# --- Per-run directory: guest init, command, env, results. -------------------------
run=$(mktemp -d "${TMPDIR:-/tmp}/ue-vm.XXXXXX")
run=$(realpath "$run")
chmod 755 "$run"
qemu_pid=
cat_pids=()
# shellcheck disable=SC2317  # invoked through the EXIT trap
cleanup() {
    if [[ -n "$qemu_pid" ]]; then kill -TERM "$qemu_pid" 2>/dev/null || true; fi
    if ((${#cat_pids[@]})); then kill "${cat_pids[@]}" 2>/dev/null || true; fi
    if ((keep)); then log "kept the run directory $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

for d in "${rw_dirs[@]}"; do
    [[ -d "$d" ]] || die "--rw $d: not a directory"
done

# Environment for the command, quoted safely (printf %q; read back by bash).
{
    while IFS= read -r name; do
        case $name in
            UE_* | CARGO* | NEXTEST* | RUST_* | RUSTFLAGS | RUSTDOCFLAGS | \
                PATH | HOME | LANG | LC_ALL | TZ)
                printf 'export %s=%q\n' "$name" "${!name}" ;;
        esac
    done < <(compgen -e)
    if [[ -t 1 && -n "${TERM:-}" ]]; then
        printf 'export TERM=%q\n' "$TERM"
    else
        printf 'export TERM=dumb\n'
    fi
    printf 'export UE_VM=1 UE_VM_RUNDIR=%q\n' "$run"
    for kv in "${extra_env[@]}"; do
        name=${kv%%=*}
        [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "-e $kv: bad variable name"
        if [[ "$kv" == *=* ]]; then value=${kv#*=}; else value=${!name-}; fi
        printf 'export %s=%q\n' "$name" "$value"
    done
} >"$run/env"

# Settings for the guest scripts.
{
    printf 'UE_VM_VERBOSE=%q\n' "$verbose"
    printf 'UE_VM_CWD=%q\n' "$PWD"
    printf 'UE_VM_RW_DIRS=('
    for d in "${rw_dirs[@]}"; do printf '%q ' "$(realpath "$d")"; done
    printf ')\n'
    printf 'UE_VM_CMD=('
    printf '%q ' "$@"
    printf ')\n'
} >"$run/vars"

# Stage 1, the guest's PID 1 (runs from the read-only 9p root): mount what the command
# needs, build the overlay root and chroot into it for stage 2. Its own messages go
# to the kernel console (console.log on the host).
cat >"$run/init" <<'EOF'
#!/bin/bash
# Generated by scripts/vm.sh: the guest's init, stage 1.
set -u
run=${0%/*}
bb=/bin/busybox
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# shellcheck source=/dev/null
. "$run/vars"
say() { if [[ $UE_VM_VERBOSE == 1 ]]; then echo "ue-vm init: $*"; fi; }
fatal() {
    echo "ue-vm init: FATAL: $*"
    echo "ue-vm init: FATAL: $*" >/dev/ttyS2
    $bb reboot -f
}
mnt() { $bb mount "$@" || fatal "mount $*"; }

mnt -t proc proc /proc
# (the kernel mounts devtmpfs on /dev itself with DEVTMPFS_MOUNT; make sure.)
$bb mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
# Staging tmpfs: holds the overlay's upper layer (all writes in the guest).
mnt -t tmpfs -o mode=0755 tmpfs /run
$bb mkdir -p /run/ovl/upper /run/ovl/work /run/root
if $bb mount -t overlay overlay \
    -o lowerdir=/,upperdir=/run/ovl/upper,workdir=/run/ovl/work /run/root; then
    root=/run/root
else
    # Kernel without overlayfs: stay on the read-only root with tmpfs where programs
    # usually write.
    echo "ue-vm init: overlayfs failed; only /tmp /var/tmp /run and --rw dirs are writable" >/dev/ttyS2
    root=
    mnt -t tmpfs -o mode=1777 tmpfs /tmp
    mnt -t tmpfs -o mode=1777 tmpfs /var/tmp
fi
[[ -n $root ]] && mnt -t proc proc "$root/proc"
mnt -t sysfs sysfs "$root/sys"
[[ -n $root ]] && mnt -t devtmpfs devtmpfs "$root/dev"
mnt -t tracefs nodev "$root/sys/kernel/tracing"
$bb mkdir -p "$root/dev/shm"
mnt -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
# A fresh /run (the host's has its daemons' pid files and sockets).
[[ -n $root ]] && mnt -t tmpfs -o mode=0755 tmpfs "$root/run"
# The per-run share (writable), at the same path as on the host.
$bb mkdir -p "$root$run"
mnt -t 9p -o trans=virtio,version=9p2000.L,msize=512000 uevmrun "$root$run"
i=0
for d in "${UE_VM_RW_DIRS[@]}"; do
    $bb mkdir -p "$root$d"
    mnt -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "uevmrw$i" "$root$d"
    i=$((i + 1))
done
$bb ip link set lo up 2>/dev/null || $bb ifconfig lo 127.0.0.1 up || fatal "cannot bring lo up"
$bb hostname ue-vm
# No RTC in the kernel: take the host's clock (written just before QEMU started) plus
# the guest's uptime. Accurate to about the firmware's boot time (< 1 s).
read -r up _ </proc/uptime
read -r host_epoch <"$run/epoch"
$bb date -s "@$($bb awk "BEGIN { printf \"%d\", $host_epoch + $up }")" >/dev/null
say "stage 1 done at uptime $up s, root=${root:-/}"
if [[ -n $root ]]; then
    exec $bb chroot "$root" /bin/bash "$run/stage2"
else
    exec /bin/bash "$run/stage2"
fi
EOF

# Stage 2 (still PID 1, in the final root): run the command, record its status, reboot.
cat >"$run/stage2" <<'EOF'
#!/bin/bash
# Generated by scripts/vm.sh: the guest's init, stage 2.
set -u
run=${0%/*}
bb=/bin/busybox
# shellcheck source=/dev/null
. "$run/vars"
# shellcheck source=/dev/null
. "$run/env"
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
# ttyS1 -> vm.sh's stdout, ttyS2 -> its stderr. raw: no \n -> \r\n translation.
exec 3>/dev/ttyS1 4>/dev/ttyS2
$bb stty -F /dev/ttyS1 raw -echo
$bb stty -F /dev/ttyS2 raw -echo
cd "$UE_VM_CWD" 2>/dev/null || { echo "vm.sh (guest): cannot cd to $UE_VM_CWD, running in /" >&4; cd /; }
read -r t_start _ </proc/uptime
"${UE_VM_CMD[@]}" </dev/null >&3 2>&4 3>&- 4>&-
rc=$?
read -r t_end _ </proc/uptime
echo "$t_start $t_end" >"$run/timing"
echo "$rc" >"$run/status.tmp" && $bb mv "$run/status.tmp" "$run/status"
# The last close of a serial port waits until its output has been sent: do it before
# the reboot, or the end of the command's output could be lost.
exec 3>&- 4>&-
$bb sync
exec $bb reboot -f
EOF
chmod 755 "$run/init" "$run/stage2"

# --- Console plumbing: three serial ports, each into a FIFO read by cat. -----------
# Using FIFOs (not QEMU's stdio) keeps vm.sh's own stdout/stderr file descriptors as
# they are (pipes, files opened without O_APPEND, terminals) and separates the streams.
mkfifo "$run/out.fifo" "$run/err.fifo"
cat "$run/out.fifo" &
cat_pids+=($!)
cat "$run/err.fifo" >&2 &
cat_pids+=($!)
if ((verbose)); then
    mkfifo "$run/console.fifo"
    tee "$run/console.log" <"$run/console.fifo" | sed -u 's/\r$//; s/^/[console] /' >&2 &
    cat_pids+=($!)
    console_path=$run/console.fifo
else
    console_path=$run/console.log
fi

# cache=loose on the read-only root: the guest keeps what it read (bash, busybox, libc,
# the test binary) in its page cache instead of asking the host again at every exec;
# that halves the time to the command (about 3 s instead of 5.5 s of guest uptime). The
# VM is fresh each run, so the only risk is a host file that changes while the guest
# runs (the guest may see the old content): UE_VM_ROOT_CACHE=none turns it off. The
# writable shares (run dir, --rw) always use 9p's default, uncached mode.
cmdline="console=ttyS0 root=/dev/root rootfstype=9p"
cmdline+=" rootflags=trans=virtio,version=9p2000.L,msize=512000,cache=${UE_VM_ROOT_CACHE:-loose}"
cmdline+=" ro init=$run/init panic=-1"
# tsc=reliable: under TCG the guest's TSC is the host's (constant rate, in sync across
# vCPUs); without it the clocksource watchdog may call it unstable when the host is busy
# and drop to a coarser clock.
cmdline+=" tsc=reliable"
if ((verbose)); then cmdline+=" loglevel=7"; else cmdline+=" quiet"; fi

# shellcheck disable=SC2054  # the commas belong to QEMU option values
qemu=(qemu-system-x86_64
    # TCG: KVM hangs on our hosts. -cpu max: the most instruction-set extensions TCG
    # has, so host-built binaries find what they expect.
    # One CPU per socket: the kernel has no ACPI, so it counts CPUs from SeaBIOS's MP
    # table, which lists one entry per socket (with -smp 2 as 2 cores the guest sees 1).
    -accel tcg -cpu max -smp "$cpus,sockets=$cpus,cores=1,threads=1" -m "$mem"
    # No default devices, no monitor, no display: the three serial ports are all.
    -nodefaults -no-user-config -display none -no-reboot
    -kernel "$kernel" -append "$cmdline"
    -chardev "file,id=con,path=$console_path" -serial chardev:con
    -chardev "file,id=out,path=$run/out.fifo" -serial chardev:out
    -chardev "file,id=err,path=$run/err.fifo" -serial chardev:err
    # Host root, read-only (KERNEL.md); multidevs=remap: it spans several filesystems.
    -fsdev local,id=root,path=/,security_model=none,readonly=on,multidevs=remap
    -device virtio-9p-pci,fsdev=root,mount_tag=/dev/root
    -fsdev "local,id=run,path=$run,security_model=none,multidevs=remap"
    -device virtio-9p-pci,fsdev=run,mount_tag=uevmrun
)
i=0
for d in "${rw_dirs[@]}"; do
    qemu+=(-fsdev "local,id=rw$i,path=$(realpath "$d"),security_model=none,multidevs=remap"
        -device "virtio-9p-pci,fsdev=rw$i,mount_tag=uevmrw$i")
    i=$((i + 1))
done

date +%s.%N >"$run/epoch"
t_qemu=$(date +%s.%N)
# timeout: TERM after --timeout seconds (QEMU exits on it), KILL 5 s later if need be.
timeout -k 5 "$timeout_s" "${qemu[@]}" </dev/null >"$run/qemu.log" 2>&1 &
qemu_pid=$!
set +e
wait "$qemu_pid"
qemu_rc=$?
set -e
qemu_pid=
t_end=$(date +%s.%N)

# Let the readers drain what QEMU wrote. A reader whose FIFO QEMU never opened (QEMU
# failed early) would wait forever in open(): give it a writer that closes at once.
for f in "$run"/*.fifo; do
    exec {fd}<>"$f"
    exec {fd}>&-
done
wait "${cat_pids[@]}" 2>/dev/null || true
cat_pids=()

if ((verbose)); then
    read -r g_start g_end <"$run/timing" 2>/dev/null || true
    log "$(awk -v a="$t0" -v b="$t_kernel" -v q0="$t_qemu" -v q1="$t_end" \
        -v g0="${g_start:-0}" -v g1="${g_end:-0}" 'BEGIN {
            printf "kernel.sh %.2fs; QEMU ran %.2fs; command started at guest uptime %.2fs and ran %.2fs (guest clock)",
                b - a, q1 - q0, g0, g1 - g0 }')"
fi

elapsed=$(awk -v a="$t_qemu" -v b="$t_end" 'BEGIN { printf "%d", b - a }')
if ((qemu_rc == 124 || (qemu_rc == 137 && elapsed >= timeout_s))); then
    log "guest did not finish within $timeout_s s, killed"
    exit 124
fi
if [[ ! -f "$run/status" ]]; then
    log "the guest ended without reporting the command's exit status (kernel panic, init failure or QEMU error; QEMU exit code $qemu_rc)"
    if [[ -s "$run/qemu.log" ]]; then
        log "QEMU said:"
        tail -n 20 "$run/qemu.log" >&2
    fi
    if ((!verbose)) && [[ -s "$run/console.log" ]]; then
        log "last lines of the guest console:"
        tail -n 30 "$run/console.log" | tr -d '\r' >&2
    fi
    exit 125
fi
rc=$(<"$run/status")
exit "$rc"
