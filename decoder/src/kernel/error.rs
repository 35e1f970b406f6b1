//! The reader's error: each variant says what is missing and how to get it.

use std::io;
use std::path::PathBuf;

use crate::kernel::FormatError;

/// Why a [`TracepointReader`](crate::TracepointReader) could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReaderError {
    /// The [`ReaderConfig`](crate::ReaderConfig) cannot work.
    #[error("invalid reader configuration: {problem}")]
    Config {
        /// What is wrong.
        problem: String,
    },

    /// Neither tracefs nor debugfs is mounted.
    #[error(
        "no tracefs is mounted (none listed in /proc/mounts): mount it with \
         `mount -t tracefs nodev /sys/kernel/tracing`, or pass its mount point"
    )]
    NoTracefs,

    /// A tracefs path was given but it is not a tracefs mount.
    #[error(
        "{p} is not a tracefs mount (it has no `events` directory): mount tracefs there \
         with `mount -t tracefs nodev {p}`, or pass the right mount point",
        p = path.display()
    )]
    NotTracefs {
        /// The path given.
        path: PathBuf,
    },

    /// The kernel has no user_events.
    #[error(
        "{}/user_events_data does not exist: the running kernel is built without \
         CONFIG_USER_EVENTS, so no user_events tracepoint can exist. Run on a kernel with \
         it (Linux 6.4 or later), e.g. the project's VM: `scripts/vm.sh -- <command>`",
        tracefs.display()
    )]
    NoUserEvents {
        /// The tracefs mount point.
        tracefs: PathBuf,
    },

    /// tracefs exists but this user may not look inside it.
    #[error(
        "permission denied on {p}: tracefs lets only root in by default (its root is mode \
         0700). Run as root, with `run --user NAME` to drop to NAME once open; or, to start \
         unprivileged, grant CAP_PERFMON and CAP_DAC_OVERRIDE (CAP_DAC_READ_SEARCH is enough \
         with --no-register), e.g. systemd's AmbientCapabilities= as in \
         deploy/ue-decoder.service; or mount tracefs for a group: `mount -o remount,gid=GROUP \
         {p} && chmod g+rx {p} && chmod g+w {p}/user_events_data` and grant CAP_PERFMON only",
        p = tracefs.display()
    )]
    TracefsDenied {
        /// The tracefs mount point.
        tracefs: PathBuf,
    },

    /// The tracepoint does not exist (yet).
    #[error(
        "tracepoint user_events:{tracepoint} is not registered ({} does not exist): start \
         the application that writes it first, or let the reader register it \
         (ReaderConfig::register)",
        path.display()
    )]
    NotRegistered {
        /// The tracepoint's name.
        tracepoint: String,
        /// Its tracefs directory.
        path: PathBuf,
    },

    /// The tracepoint's format file does not parse.
    #[error("cannot parse {} of tracepoint user_events:{tracepoint}: {source}", path.display())]
    Format {
        /// The tracepoint's name.
        tracepoint: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: FormatError,
    },

    /// The tracepoint exists with a field layout other than the exporters'.
    #[error(
        "tracepoint user_events:{tracepoint} has another layout than the OTLP exporters \
         write: field `{field}` should be {expected}, but {} says {found}. Another program \
         registered this name with other fields; use another tracepoint name",
        path.display()
    )]
    LayoutMismatch {
        /// The tracepoint's name.
        tracepoint: String,
        /// The format file.
        path: PathBuf,
        /// The field that differs.
        field: &'static str,
        /// What the decoder needs.
        expected: String,
        /// What the format file says.
        found: String,
    },

    /// Registering the tracepoint with user_events failed.
    #[error(
        "registering tracepoint user_events:{tracepoint} failed ({}): {}",
        io::Error::from_raw_os_error(*errno),
        ue_wire::register_hint(*errno)
    )]
    Register {
        /// The tracepoint's name.
        tracepoint: String,
        /// The errno of the failed open or ioctl.
        errno: i32,
    },

    /// perf refused to open the event for lack of privileges.
    #[error(
        "perf_event_open for user_events:{tracepoint} on CPU {cpu} was refused ({source}): \
         raw tracepoint samples need root or CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8); \
         {}",
        paranoid_hint(*paranoid)
    )]
    PerfPermission {
        /// The tracepoint's name.
        tracepoint: String,
        /// The CPU.
        cpu: u32,
        /// `kernel.perf_event_paranoid`, if readable.
        paranoid: Option<i32>,
        /// The error.
        source: io::Error,
    },

    /// perf could not open the event.
    #[error(
        "perf_event_open for user_events:{tracepoint} (id {id}) on CPU {cpu} failed: {source}{}",
        open_hint(source)
    )]
    PerfOpen {
        /// The tracepoint's name.
        tracepoint: String,
        /// Its tracefs id.
        id: u64,
        /// The CPU.
        cpu: u32,
        /// The error.
        source: io::Error,
    },

    /// The ring buffer could not be mapped.
    #[error(
        "mapping a {kib} KiB perf ring buffer for CPU {cpu} failed: {source}{}",
        mmap_hint(source)
    )]
    Mmap {
        /// The CPU.
        cpu: u32,
        /// Size of the ring's data area in KiB.
        kib: usize,
        /// The error.
        source: io::Error,
    },

    /// A perf ioctl or epoll call failed.
    #[error("{call} failed: {source}")]
    Syscall {
        /// The call and what it was for.
        call: &'static str,
        /// The error.
        source: io::Error,
    },

    /// A file could not be read.
    #[error("cannot {what} from {}: {source}{}", path.display(), read_hint(source))]
    Io {
        /// What the read was for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn paranoid_hint(paranoid: Option<i32>) -> String {
    match paranoid {
        Some(p) => format!(
            "kernel.perf_event_paranoid is {p}; run as root, grant CAP_PERFMON \
             (`setcap cap_perfmon+ep <binary>`), or lower the sysctl"
        ),
        None => "run as root or grant CAP_PERFMON (`setcap cap_perfmon+ep <binary>`)".to_owned(),
    }
}

fn read_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::PermissionDenied => {
            "; tracefs files are readable by root (and the mount's group) only: run as root \
             (with `run --user NAME`), grant CAP_DAC_READ_SEARCH, or mount tracefs with \
             gid=GROUP for a group of this user"
        }
        _ => "",
    }
}

fn open_hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::ENOENT | libc::EINVAL) => {
            "; the tracepoint may have been unregistered since its id was read (the last \
             writer exited): register it from the reader (ReaderConfig::register) or start the \
             writer first"
        }
        Some(libc::ENODEV) => "; the CPU may have gone offline",
        Some(libc::EMFILE) => "; too many open files: raise the limit (`ulimit -n`)",
        _ => "",
    }
}

fn mmap_hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EPERM | libc::ENOMEM) => {
            "; perf rings count against kernel.perf_event_mlock_kb per user and RLIMIT_MEMLOCK: \
             use a smaller ring, raise those limits, or run with CAP_IPC_LOCK"
        }
        _ => "",
    }
}
