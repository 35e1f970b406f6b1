#!/usr/bin/env bash
# Tell whether THIS machine (as the current user) can run the real user_events path:
# a kernel with user_events, tracefs mounted, user_events_data writable, and perf
# allowed to read raw tracepoint samples.
#
# Usage: scripts/check-kernel.sh
#   Prints one line per check: "ok      <what>" or "MISSING <what> -- fix: <how>".
#   Exits 0 when every check passes, 1 otherwise.
#
# If the host cannot be fixed (typically: its kernel lacks CONFIG_USER_EVENTS), run
# the tests in the project's VM instead: scripts/vm.sh -- CMD (this script passes there:
# scripts/vm.sh -- scripts/check-kernel.sh).
#
# Needs nothing beyond coreutils/grep/awk; safe to run as any user (it only opens
# user_events_data, which registers nothing).
set -euo pipefail

failed=0
ok() { printf 'ok      %s\n' "$1"; }
missing() {
    printf 'MISSING %s -- fix: %s\n' "$1" "$2"
    failed=1
}
vm_hint="or run the tests in the project VM: scripts/vm.sh -- CMD"

# --- 1. Kernel version: the user_events ABI (DIAG_IOCSREG) is in 6.4 and later. -----
release=$(uname -r)
IFS=.- read -r major minor _ <<<"$release"
if ((major > 6 || (major == 6 && minor >= 4))); then
    ok "kernel $release (user_events needs >= 6.4)"
else
    missing "kernel $release is older than 6.4 (no user_events ABI)" \
        "boot a kernel >= 6.4 with CONFIG_USER_EVENTS=y, $vm_hint"
fi

# --- 2. tracefs: where is it mounted? -----------------------------------------------
tracefs=
while read -r _ mnt fstype _; do
    if [[ "$fstype" == tracefs ]]; then tracefs=$mnt; break; fi
done </proc/mounts
if [[ -z "$tracefs" ]]; then
    # Old layout: tracefs reachable through debugfs.
    while read -r _ mnt fstype _; do
        if [[ "$fstype" == debugfs && -d "$mnt/tracing" ]]; then tracefs=$mnt/tracing; break; fi
    done </proc/mounts
fi
if [[ -n "$tracefs" ]]; then
    if [[ -r "$tracefs" && -x "$tracefs" ]]; then
        ok "tracefs mounted at $tracefs"
    else
        missing "tracefs mounted at $tracefs but not readable by $(id -un)" \
            "run as root, or mount it with a group/mode for this user (mount -o remount,mode=755 $tracefs)"
    fi
elif [[ -d /sys/kernel/tracing ]]; then
    missing "tracefs not mounted (/sys/kernel/tracing exists)" \
        "mount -t tracefs nodev /sys/kernel/tracing"
elif [[ -d /sys/kernel/debug/tracing ]]; then
    missing "tracefs not mounted (/sys/kernel/debug/tracing exists)" \
        "mount -t tracefs nodev /sys/kernel/debug/tracing"
else
    missing "tracefs not available (no /sys/kernel/tracing)" \
        "use a kernel with CONFIG_TRACING (and CONFIG_USER_EVENTS), $vm_hint"
fi

# --- 3. CONFIG_USER_EVENTS in the running kernel's config. --------------------------
config_src='' config_line=''
if [[ -r /proc/config.gz ]]; then
    config_src=/proc/config.gz
    config_line=$(zcat /proc/config.gz 2>/dev/null | grep -E '^(# )?CONFIG_USER_EVENTS[= ]' || true)
elif [[ -r "/boot/config-$release" ]]; then
    config_src=/boot/config-$release
    config_line=$(grep -E '^(# )?CONFIG_USER_EVENTS[= ]' "$config_src" || true)
fi
ued=${tracefs:+$tracefs/user_events_data}
if [[ "$config_line" == CONFIG_USER_EVENTS=y ]]; then
    ok "CONFIG_USER_EVENTS=y (from $config_src)"
elif [[ -n "$config_src" ]]; then
    missing "CONFIG_USER_EVENTS not set in $config_src" \
        "kernel built without CONFIG_USER_EVENTS: use a kernel with it, $vm_hint"
elif [[ -n "$ued" && -e "$ued" ]]; then
    ok "CONFIG_USER_EVENTS (no config file readable; $ued exists)"
else
    missing "CONFIG_USER_EVENTS: no kernel config readable and no user_events_data" \
        "kernel built without CONFIG_USER_EVENTS: use a kernel with it, $vm_hint"
fi

# --- 4. user_events_data: present, and can we open it for writing? ------------------
if [[ -z "$ued" ]]; then
    missing "user_events_data (tracefs not mounted)" "mount tracefs first (see above)"
elif [[ ! -e "$ued" ]]; then
    missing "$ued does not exist" \
        "kernel built without CONFIG_USER_EVENTS: use a kernel with it, $vm_hint"
else
    perms=$(stat -c '%A %U:%G' "$ued")
    # Really open it (an open registers nothing; the registration is an ioctl).
    if (exec 3>>"$ued") 2>/dev/null; then
        ok "$ued ($perms) opens for writing as $(id -un)"
    else
        missing "$ued ($perms) cannot be opened for writing by $(id -un)" \
            "run as root, or chgrp/chmod g+rw $ued for a group this user is in"
    fi
fi

# --- 5. perf: may this user read raw tracepoint samples? ----------------------------
# Raw tracepoint data needs CAP_PERFMON (or CAP_SYS_ADMIN, or root) unless
# perf_event_paranoid is -1.
paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?')
capeff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
has_cap() { (((16#$capeff >> $1) & 1)); }
who=
if (($(id -u) == 0)); then
    who=root
elif has_cap 38; then
    who=CAP_PERFMON
elif has_cap 21; then
    who=CAP_SYS_ADMIN
fi
if [[ "$paranoid" == '?' ]]; then
    missing "perf_event_paranoid unreadable (no /proc/sys/kernel/perf_event_paranoid: no perf events?)" \
        "use a kernel with CONFIG_PERF_EVENTS (and CONFIG_PROC_SYSCTL), $vm_hint"
elif [[ -n "$who" ]]; then
    ok "perf_event_paranoid=$paranoid; raw tracepoint samples allowed ($who)"
elif ((paranoid <= -1)); then
    ok "perf_event_paranoid=$paranoid; raw tracepoint samples allowed for every user"
else
    missing "perf_event_paranoid=$paranoid: $(id -un) may not read raw tracepoint samples" \
        "sysctl kernel.perf_event_paranoid=-1 or grant CAP_PERFMON (setcap cap_perfmon+ep BINARY), or run as root"
fi

exit "$failed"
