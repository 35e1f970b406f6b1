//! Opening perf events on tracepoints: one per online CPU and tracepoint, all of a CPU's
//! events writing into one ring buffer.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};

use perf_event_open_sys::bindings::{PERF_TYPE_TRACEPOINT, perf_event_attr};

use crate::kernel::ReaderError;
use crate::kernel::ring::Ring;
use crate::kernel::sample::{CGROUP, SAMPLE_TYPE};
use crate::kernel::sys::{self, RingMemory};

/// The file listing the online CPUs.
const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";
/// The sysctl that decides who may use perf.
const PARANOID: &str = "/proc/sys/kernel/perf_event_paranoid";

/// A tracepoint to open: its name and tracefs id.
#[derive(Clone, Debug)]
pub(crate) struct Tracepoint {
    pub(crate) name: String,
    pub(crate) id: u64,
    /// An EventHeader tracepoint rather than one carrying OTLP.
    pub(crate) eventheader: bool,
}

/// One CPU's perf events and the ring they share.
#[derive(Debug)]
pub(crate) struct CpuEvents {
    pub(crate) cpu: u32,
    pub(crate) ring: Ring,
    /// `(sample id, index of the tracepoint)` for each event.
    pub(crate) ids: Vec<(u64, usize)>,
    /// The events, the one owning the ring first.
    pub(crate) fds: Vec<OwnedFd>,
}

/// The perf_event_attr for tracepoint `id`: every event sampled with [`SAMPLE_TYPE`] (and
/// [`CGROUP`] if `cgroup`), timestamps on CLOCK_MONOTONIC, disabled until enabled explicitly, waking a reader once
/// more than `wakeup_bytes` are in the ring (0: the kernel's default, half the ring).
///
/// With `sample_period` 1 the kernel never throttles a tracepoint (`perf_swevent_event`
/// overflows once per event with throttling off), so events are only dropped when the
/// ring is full, and those drops come back as `PERF_RECORD_LOST`.
pub(crate) fn attr(id: u64, wakeup_bytes: u32, cgroup: bool) -> perf_event_attr {
    let mut attr = perf_event_attr {
        type_: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<perf_event_attr>() as u32,
        config: id,
        sample_type: if cgroup {
            SAMPLE_TYPE | CGROUP
        } else {
            SAMPLE_TYPE
        },
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_period = 1;
    attr.__bindgen_anon_2.wakeup_watermark = wakeup_bytes;
    attr.set_watermark(1);
    attr.set_disabled(1);
    attr.set_use_clockid(1);
    attr.clockid = libc::CLOCK_MONOTONIC;
    attr
}

/// Opens `tracepoints` on `cpu`: the first with a ring of `data_pages` pages, the others
/// redirected into it, sampling the writer's cgroup if `cgroup`. The events start disabled.
pub(crate) fn open_cpu(
    cpu: u32,
    tracepoints: &[Tracepoint],
    data_pages: usize,
    wakeup_bytes: u32,
    cgroup: bool,
) -> Result<CpuEvents, ReaderError> {
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(tracepoints.len());
    let mut ids = Vec::with_capacity(tracepoints.len());
    let mut ring = None;
    for (index, tp) in tracepoints.iter().enumerate() {
        let fd = sys::perf_event_open(&attr(tp.id, wakeup_bytes, cgroup), cpu)
            .map_err(|source| open_error(tp, cpu, source))?;
        match fds.first() {
            None => {
                let memory = RingMemory::map(fd.as_fd(), data_pages).map_err(|source| {
                    ReaderError::Mmap {
                        cpu,
                        kib: data_pages * sys::page_size() / 1024,
                        source,
                    }
                })?;
                ring = Some(Ring::new(memory));
            }
            Some(first) => sys::perf_set_output(fd.as_fd(), first.as_fd()).map_err(|source| {
                ReaderError::Syscall {
                    call: "ioctl(PERF_EVENT_IOC_SET_OUTPUT) to share a CPU's ring",
                    source,
                }
            })?,
        }
        let id = sys::perf_event_id(fd.as_fd()).map_err(|source| ReaderError::Syscall {
            call: "ioctl(PERF_EVENT_IOC_ID)",
            source,
        })?;
        ids.push((id, index));
        fds.push(fd);
    }
    let ring = ring.ok_or_else(|| ReaderError::Config {
        problem: "no tracepoints to read".to_owned(),
    })?;
    Ok(CpuEvents {
        cpu,
        ring,
        ids,
        fds,
    })
}

impl CpuEvents {
    /// Enables every event of this CPU.
    pub(crate) fn enable(&self) -> Result<(), ReaderError> {
        for fd in &self.fds {
            sys::perf_enable(fd.as_fd()).map_err(|source| ReaderError::Syscall {
                call: "ioctl(PERF_EVENT_IOC_ENABLE)",
                source,
            })?;
        }
        Ok(())
    }
}

fn open_error(tp: &Tracepoint, cpu: u32, source: std::io::Error) -> ReaderError {
    match source.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => ReaderError::PerfPermission {
            tracepoint: tp.name.clone(),
            cpu,
            paranoid: fs::read_to_string(PARANOID)
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            source,
        },
        _ => ReaderError::PerfOpen {
            tracepoint: tp.name.clone(),
            id: tp.id,
            cpu,
            source,
        },
    }
}

/// Reads the online CPUs.
pub(crate) fn online_cpus() -> Result<Vec<u32>, ReaderError> {
    let text = fs::read_to_string(ONLINE_CPUS).map_err(|source| ReaderError::Io {
        what: "read the online CPUs",
        path: ONLINE_CPUS.into(),
        source,
    })?;
    parse_cpu_list(&text).ok_or_else(|| ReaderError::Io {
        what: "parse the online CPUs",
        path: ONLINE_CPUS.into(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a CPU list: {:?}", text.trim()),
        ),
    })
}

/// Parses a kernel CPU list such as `0-3,5,7-8`; `None` if it is malformed or empty.
pub(crate) fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',') {
        let (first, last): (u32, u32) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let n = part.parse().ok()?;
                (n, n)
            }
        };
        if first > last {
            return None;
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Pages for a ring of at least `ring_kib` KiB of data: a power of two, as perf requires.
pub(crate) fn ring_pages(ring_kib: usize, page_size: usize) -> Result<usize, ReaderError> {
    let problem = |p: String| ReaderError::Config { problem: p };
    if ring_kib == 0 {
        return Err(problem("ring_kib must be at least 1".to_owned()));
    }
    ring_kib
        .checked_mul(1024)
        .map(|bytes| bytes.div_ceil(page_size))
        .and_then(usize::checked_next_power_of_two)
        .filter(|pages| pages.checked_mul(page_size).is_some_and(|b| b <= 1 << 40))
        .ok_or_else(|| problem(format!("ring_kib {ring_kib} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-3,5\n"), Some(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_cpu_list("0-1,8-9"), Some(vec![0, 1, 8, 9]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0,,1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn ring_sizes_round_up_to_a_power_of_two_of_pages() {
        assert_eq!(ring_pages(1, 4096).unwrap(), 1);
        assert_eq!(ring_pages(4, 4096).unwrap(), 1);
        assert_eq!(ring_pages(5, 4096).unwrap(), 2);
        assert_eq!(ring_pages(256, 4096).unwrap(), 64);
        assert_eq!(ring_pages(300, 4096).unwrap(), 128);
        assert_eq!(ring_pages(64, 65536).unwrap(), 1);
        assert!(ring_pages(0, 4096).is_err());
        assert!(ring_pages(usize::MAX / 1024, 4096).is_err());
    }

    #[test]
    fn attr_asks_for_what_the_parsers_expect() {
        let a = attr(1520, 4096, false);
        assert_eq!(attr(1520, 4096, true).sample_type, SAMPLE_TYPE | CGROUP);
        assert_eq!(a.type_, PERF_TYPE_TRACEPOINT);
        assert_eq!(a.config, 1520);
        assert_eq!(a.sample_type, SAMPLE_TYPE);
        assert_eq!(a.disabled(), 1);
        assert_eq!(a.watermark(), 1);
        assert_eq!(a.use_clockid(), 1);
        assert_eq!(a.clockid, libc::CLOCK_MONOTONIC);
        // Nothing that would add fields to the records the parsers read.
        assert_eq!(a.sample_id_all(), 0);
        assert_eq!(a.read_format, 0);
    }
}
