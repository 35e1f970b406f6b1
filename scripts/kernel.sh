#!/usr/bin/env bash
# Build (once) and print the path of the project's test kernel: an x86_64 bzImage with
# user_events, perf events, tracefs and virtio 9p, made from Debian's linux-source-6.12
# with scripts/kernel-fragment.config on top of `make tinyconfig`.
#
# Why: the host kernels we run on are built without CONFIG_USER_EVENTS, so the tests of
# the real kernel path boot this kernel under QEMU (scripts/vm.sh). See
# /work/shared/KERNEL.md for the verified recipe.
#
# Usage: scripts/kernel.sh            -> prints the bzImage path (only stdout line)
#
# Environment:
#   UE_KERNEL=PATH       use this bzImage, build nothing (the path is checked and printed)
#   UE_KERNEL_CACHE=DIR  cache directory (default /var/cache/ue-kernel when writable,
#                        else ${XDG_CACHE_HOME:-~/.cache}/ue-kernel)
#   UE_KERNEL_JOBS=N     make -j value (default: nproc)
#   UE_KERNEL_KEEP_BUILD=1  keep the unpacked build tree after a successful build
#
# The image is cached as <cache>/bzImage-<first 16 hex of sha256(fragment)>, so editing
# the fragment builds a new kernel and an unchanged one is reused (a warm call only
# hashes the fragment and stats a file). Builds take a lock, so concurrent callers wait
# for one build instead of each building, and the image appears atomically (mv).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment="$here/kernel-fragment.config"
src_tarball=/usr/src/linux-source-6.12.tar.xz

log() { printf 'kernel.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- An explicitly given kernel wins. ----------------------------------------------
if [[ -n "${UE_KERNEL:-}" ]]; then
    [[ -f "$UE_KERNEL" ]] || die "UE_KERNEL=$UE_KERNEL is not a file"
    printf '%s\n' "$(realpath "$UE_KERNEL")"
    exit 0
fi

[[ -f "$fragment" ]] || die "missing kconfig fragment $fragment"

# --- Cache location and key. -------------------------------------------------------
if [[ -n "${UE_KERNEL_CACHE:-}" ]]; then
    cache=$UE_KERNEL_CACHE
elif mkdir -p /var/cache/ue-kernel 2>/dev/null && [[ -w /var/cache/ue-kernel ]]; then
    cache=/var/cache/ue-kernel
else
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/ue-kernel
fi
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

hash=$(sha256sum "$fragment" | cut -c1-16)
image="$cache/bzImage-$hash"

# Warm path: nothing to install, nothing to build.
if [[ -s "$image" ]]; then
    printf '%s\n' "$image"
    exit 0
fi

# --- Build dependencies (installed only when missing). -----------------------------
# qemu-system-x86, linux-perf and busybox-static are not needed to build, but every
# user of the kernel needs them (scripts/vm.sh), so a first call prepares everything.
packages=(linux-source-6.12 bc bison flex libelf-dev libssl-dev build-essential xz-utils
    cpio qemu-system-x86 linux-perf busybox-static)
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
    # Try with the current package lists first; refresh them only if that fails.
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed"
    fi
}

# --- Build, under a lock. ----------------------------------------------------------
exec 9>"$cache/.lock-$hash"
if ! flock -n 9; then
    log "another kernel.sh is building $image; waiting for it"
    flock 9
fi
# The other holder may have finished the image while we waited.
if [[ -s "$image" ]]; then
    printf '%s\n' "$image"
    exit 0
fi

ensure_packages "${packages[@]}"
[[ -f "$src_tarball" ]] || die "$src_tarball not found (package linux-source-6.12)"

build="$cache/build-$hash"
buildlog="$cache/build-$hash.log"
: >"$buildlog"
log "building the test kernel in $build (log: $buildlog); takes ~4-6 min on 2 cores"
start=$SECONDS

fail() {
    log "error: $*"
    log "last lines of $buildlog:"
    tail -n 40 "$buildlog" >&2 || true
    exit 1
}

# Always start from a fresh tree: a half-finished earlier attempt may be inconsistent.
rm -rf "$build"
mkdir -p "$build"
log "unpacking $src_tarball"
tar -xJf "$src_tarball" -C "$build" --strip-components=1 >>"$buildlog" 2>&1 ||
    fail "unpacking $src_tarball failed"

jobs=${UE_KERNEL_JOBS:-$(nproc)}
# nice: this machine is shared with cargo builds; the kernel build can wait its turn.
kmake() { nice -n 10 make -C "$build" ARCH=x86_64 "$@" >>"$buildlog" 2>&1; }

log "configuring (tinyconfig + fragment)"
kmake tinyconfig || fail "make tinyconfig failed"
(cd "$build" && ARCH=x86_64 ./scripts/kconfig/merge_config.sh -m .config "$fragment") \
    >>"$buildlog" 2>&1 || fail "merge_config.sh failed"
kmake olddefconfig || fail "make olddefconfig failed"

# merge_config.sh / olddefconfig silently drop options whose dependencies are unmet:
# check that every requested option really is in the final .config.
missing=()
while IFS= read -r line; do
    [[ "$line" =~ ^CONFIG_[A-Za-z0-9_]+= ]] || continue
    grep -qxF "$line" "$build/.config" || missing+=("$line")
done <"$fragment"
if ((${#missing[@]})); then
    die "these fragment options did not survive olddefconfig (unmet dependencies?): ${missing[*]}
  (see $build/.config; fix $fragment)"
fi

log "compiling bzImage with -j$jobs"
kmake -j"$jobs" bzImage || fail "make bzImage failed"

tmp=$(mktemp "$cache/.bzImage-$hash.XXXXXX")
cp "$build/arch/x86/boot/bzImage" "$tmp"
chmod 644 "$tmp"
cp "$build/.config" "$image.config"
mv -f "$tmp" "$image"
if [[ "${UE_KERNEL_KEEP_BUILD:-0}" != 1 ]]; then
    rm -rf "$build"
fi
log "built $image in $((SECONDS - start)) s"
printf '%s\n' "$image"
