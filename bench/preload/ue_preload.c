// LD_PRELOAD stand-in for Linux user_events registration, for benchmarks on kernels built
// without CONFIG_USER_EVENTS (and without tracefs mounted).
//
// What it fakes, and only that:
//   - open/open64/openat/openat64 (and glibc's fortified __open*_2) of any path ending in
//     "user_events_data" succeed: they return a real fd of /dev/null, opened write-only, and
//     remember it. Every writer we measure (this project's `tracepoint` 0.5, and the upstream
//     crates through `eventheader` 0.5 -> `tracepoint` 0.5) first opens the fixed path
//     /sys/kernel/tracing/user_events_data and parses /proc/mounts only if that fails, so
//     this catches them all without faking /proc/mounts.
//   - ioctl(fd, DIAG_IOCSREG, struct user_reg *) on that fd fills write_index and sets bit
//     enable_bit of the 32- or 64-bit word at enable_addr (per enable_size), as the kernel
//     does while a reader listens; with UE_PRELOAD_LISTEN=0 it registers but leaves the bit
//     clear ("nobody listening"). DIAG_IOCSUNREG clears the bit; DIAG_IOCSDEL succeeds.
//   - writev on that fd is counted, then goes to the real writev: a real syscall on a real
//     fd. /dev/null takes the bytes without copying them, where the kernel would copy them
//     into each listener's perf ring: a real write costs more per byte than this one.
//   - close of that fd forgets it.
// Everything else passes straight through to libc.
//
// ue_preload_stats() and ue_preload_writes_of() let the benchmark check, from inside the
// process, that the exporter really wrote (found with dlsym; absent without the preload).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

// From <linux/user_events.h> (kernel 6.4+), spelled out so that old headers do.
struct user_reg {
    uint32_t size;
    uint8_t enable_bit;
    uint8_t enable_size;
    uint16_t flags;
    uint64_t enable_addr;
    uint64_t name_args;
    uint32_t write_index;
} __attribute__((__packed__));

struct user_unreg {
    uint32_t size;
    uint8_t disable_bit;
    uint8_t reserved;
    uint16_t reserved2;
    uint64_t disable_addr;
} __attribute__((__packed__));

#define DIAG_IOC_MAGIC '*'
#define DIAG_IOCSREG _IOWR(DIAG_IOC_MAGIC, 0, struct user_reg *)
#define DIAG_IOCSDEL _IOW(DIAG_IOC_MAGIC, 1, char *)
#define DIAG_IOCSUNREG _IOW(DIAG_IOC_MAGIC, 2, struct user_unreg *)

#define MAX_FDS 16
#define MAX_REGS 256
#define NAME_LEN 64

// The fds handed out for user_events_data; -1 = free slot. Read on every writev.
static int tracked_fds[MAX_FDS] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                   -1, -1, -1, -1, -1, -1, -1, -1};

struct reg {
    uint64_t addr;
    uint8_t bit;
    uint8_t size;
    int live;
    char name[NAME_LEN];
    uint64_t writes; // updated atomically
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct reg regs[MAX_REGS];
static uint32_t reg_count;

// Counters, updated atomically: opens, registrations, unregistrations, writes, bytes,
// writes whose write_index was unknown.
enum { S_OPENS, S_REGS, S_UNREGS, S_WRITES, S_BYTES, S_BAD_WRITES, S_COUNT };
static uint64_t stats[S_COUNT];

static void count(int which, uint64_t n) { __atomic_fetch_add(&stats[which], n, __ATOMIC_RELAXED); }

static void *real(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        fprintf(stderr, "ue_preload: dlsym(%s) failed\n", name);
        abort();
    }
    return f;
}

#define REAL(ret, name, ...)                                                      \
    static ret (*real_##name)(__VA_ARGS__);                                      \
    if (!__atomic_load_n(&real_##name, __ATOMIC_ACQUIRE))                          \
        __atomic_store_n(&real_##name, (ret(*)(__VA_ARGS__))real(#name), __ATOMIC_RELEASE)

static int is_tracked(int fd) {
    if (fd < 0) return 0;
    for (int i = 0; i < MAX_FDS; i++)
        if (__atomic_load_n(&tracked_fds[i], __ATOMIC_RELAXED) == fd) return 1;
    return 0;
}

static int ends_with_user_events_data(const char *path) {
    static const char suffix[] = "user_events_data";
    size_t n = path ? strlen(path) : 0, s = sizeof(suffix) - 1;
    return n >= s && memcmp(path + n - s, suffix, s) == 0;
}

static int verbose(void) {
    const char *v = getenv("UE_PRELOAD_VERBOSE");
    return v && *v && strcmp(v, "0") != 0;
}

static int listening(void) {
    const char *v = getenv("UE_PRELOAD_LISTEN");
    return !(v && strcmp(v, "0") == 0);
}

// Opens /dev/null in place of user_events_data and remembers the fd.
static int fake_open(const char *path) {
    REAL(int, open, const char *, int, ...);
    int fd = real_open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return fd;
    pthread_mutex_lock(&lock);
    int slot = -1;
    for (int i = 0; i < MAX_FDS; i++)
        if (tracked_fds[i] == -1) { slot = i; break; }
    if (slot >= 0) __atomic_store_n(&tracked_fds[slot], fd, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&lock);
    if (slot < 0) {
        REAL(int, close, int);
        real_close(fd);
        errno = EMFILE;
        return -1;
    }
    count(S_OPENS, 1);
    if (verbose())
        fprintf(stderr, "ue_preload: %s -> /dev/null fd %d (listening: %s)\n", path, fd,
                listening() ? "yes" : "no");
    return fd;
}

static int has_mode(int flags) { return (flags & O_CREAT) || ((flags & O_TMPFILE) == O_TMPFILE); }

int open(const char *path, int flags, ...) {
    if (ends_with_user_events_data(path)) return fake_open(path);
    mode_t mode = 0;
    if (has_mode(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    REAL(int, open, const char *, int, ...);
    return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    if (ends_with_user_events_data(path)) return fake_open(path);
    mode_t mode = 0;
    if (has_mode(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    REAL(int, open64, const char *, int, ...);
    return real_open64(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
    if (ends_with_user_events_data(path)) return fake_open(path);
    mode_t mode = 0;
    if (has_mode(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    REAL(int, openat, int, const char *, int, ...);
    return real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    if (ends_with_user_events_data(path)) return fake_open(path);
    mode_t mode = 0;
    if (has_mode(flags)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    REAL(int, openat64, int, const char *, int, ...);
    return real_openat64(dirfd, path, flags, mode);
}

// glibc's _FORTIFY_SOURCE entry points (C callers compiled with fortification).
int __open_2(const char *path, int flags) {
    if (ends_with_user_events_data(path)) return fake_open(path);
    REAL(int, __open_2, const char *, int);
    return real___open_2(path, flags);
}

int __open64_2(const char *path, int flags) {
    if (ends_with_user_events_data(path)) return fake_open(path);
    REAL(int, __open64_2, const char *, int);
    return real___open64_2(path, flags);
}

int __openat_2(int dirfd, const char *path, int flags) {
    if (ends_with_user_events_data(path)) return fake_open(path);
    REAL(int, __openat_2, int, const char *, int);
    return real___openat_2(dirfd, path, flags);
}

static void set_bit(uint64_t addr, uint8_t bit, uint8_t size, int on) {
    if (size == 8) {
        uint64_t mask = (uint64_t)1 << bit;
        if (on) __atomic_fetch_or((uint64_t *)(uintptr_t)addr, mask, __ATOMIC_SEQ_CST);
        else __atomic_fetch_and((uint64_t *)(uintptr_t)addr, ~mask, __ATOMIC_SEQ_CST);
    } else {
        uint32_t mask = (uint32_t)1 << bit;
        if (on) __atomic_fetch_or((uint32_t *)(uintptr_t)addr, mask, __ATOMIC_SEQ_CST);
        else __atomic_fetch_and((uint32_t *)(uintptr_t)addr, ~mask, __ATOMIC_SEQ_CST);
    }
}

static int do_register(struct user_reg *reg) {
    // The kernel's checks that matter to a well-behaved writer.
    if (reg->size < sizeof(struct user_reg) || !(reg->enable_size == 4 || reg->enable_size == 8) ||
        reg->enable_bit >= reg->enable_size * 8 || reg->enable_addr % reg->enable_size != 0 ||
        !reg->name_args) {
        errno = EINVAL;
        return -1;
    }
    const char *name_args = (const char *)(uintptr_t)reg->name_args;
    pthread_mutex_lock(&lock);
    if (reg_count == MAX_REGS) {
        pthread_mutex_unlock(&lock);
        errno = ENOMEM;
        return -1;
    }
    uint32_t index = reg_count;
    struct reg *r = &regs[index];
    r->addr = reg->enable_addr;
    r->bit = reg->enable_bit;
    r->size = reg->enable_size;
    r->live = 1;
    size_t n = strcspn(name_args, " ");
    if (n >= NAME_LEN) n = NAME_LEN - 1;
    memcpy(r->name, name_args, n);
    r->name[n] = 0;
    // Published last: writev reads regs[index] without the lock once index < reg_count.
    __atomic_store_n(&reg_count, index + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&lock);
    reg->write_index = index;
    if (listening()) set_bit(reg->enable_addr, reg->enable_bit, reg->enable_size, 1);
    count(S_REGS, 1);
    if (verbose()) fprintf(stderr, "ue_preload: registered [%u] %s\n", index, name_args);
    return 0;
}

static int do_unregister(const struct user_unreg *unreg) {
    if (unreg->size < sizeof(struct user_unreg)) {
        errno = EINVAL;
        return -1;
    }
    int found = 0;
    pthread_mutex_lock(&lock);
    for (uint32_t i = 0; i < reg_count; i++) {
        struct reg *r = &regs[i];
        if (r->live && r->addr == unreg->disable_addr && r->bit == unreg->disable_bit) {
            set_bit(r->addr, r->bit, r->size, 0);
            r->live = 0;
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
    if (!found) {
        errno = ENOENT;
        return -1;
    }
    count(S_UNREGS, 1);
    return 0;
}

int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (is_tracked(fd)) {
        switch (request) {
        case DIAG_IOCSREG: return do_register(arg);
        case DIAG_IOCSUNREG: return do_unregister(arg);
        case DIAG_IOCSDEL: return 0;
        default: errno = ENOTTY; return -1;
        }
    }
    REAL(int, ioctl, int, unsigned long, ...);
    return real_ioctl(fd, request, arg);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt) {
    REAL(ssize_t, writev, int, const struct iovec *, int);
    if (is_tracked(fd)) {
        uint64_t bytes = 0;
        for (int i = 0; i < iovcnt; i++) bytes += iov[i].iov_len;
        uint32_t index = UINT32_MAX;
        if (iovcnt > 0 && iov[0].iov_len >= 4) memcpy(&index, iov[0].iov_base, 4);
        if (index < __atomic_load_n(&reg_count, __ATOMIC_ACQUIRE)) {
            __atomic_fetch_add(&regs[index].writes, 1, __ATOMIC_RELAXED);
            count(S_WRITES, 1);
            count(S_BYTES, bytes);
        } else {
            count(S_BAD_WRITES, 1);
        }
    }
    return real_writev(fd, iov, iovcnt);
}

int close(int fd) {
    if (is_tracked(fd)) {
        pthread_mutex_lock(&lock);
        for (int i = 0; i < MAX_FDS; i++)
            if (tracked_fds[i] == fd) __atomic_store_n(&tracked_fds[i], -1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&lock);
    }
    REAL(int, close, int);
    return real_close(fd);
}

// Fills out[0..6]: opens, registrations, unregistrations, writes, bytes written (write
// index included), writes with an unknown write index. Returns how many it filled.
int ue_preload_stats(uint64_t *out, int n) {
    if (n > S_COUNT) n = S_COUNT;
    for (int i = 0; i < n; i++) out[i] = __atomic_load_n(&stats[i], __ATOMIC_RELAXED);
    return n;
}

// Writes to every registration of the tracepoint `name` so far.
uint64_t ue_preload_writes_of(const char *name) {
    uint64_t total = 0;
    pthread_mutex_lock(&lock);
    for (uint32_t i = 0; i < reg_count; i++)
        if (strcmp(regs[i].name, name) == 0)
            total += __atomic_load_n(&regs[i].writes, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&lock);
    return total;
}
