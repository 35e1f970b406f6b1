//! Everything this crate asks of the OS: process CPU time, and the counters of the
//! LD_PRELOAD stand-in when it is loaded. All of the crate's unsafe code is here.

use std::ffi::{CStr, CString, c_char, c_int};
use std::time::Duration;

/// CPU time of the whole process (every thread, user + system) and its peak RSS.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// User plus system time of all threads, those that ended included.
    pub cpu: Duration,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
}

/// `getrusage(RUSAGE_SELF)`.
pub fn usage() -> Usage {
    // SAFETY: rusage is plain data for which all zeroes is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a live, writable rusage; RUSAGE_SELF is a valid `who`.
    let ret = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(
        ret, 0,
        "getrusage(RUSAGE_SELF) cannot fail with valid arguments"
    );
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
    }
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): for timing one call.
pub fn thread_cpu() -> Duration {
    // SAFETY: timespec is plain data for which all zeroes is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a live, writable timespec; the clock id is a valid one.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(ret, 0, "the thread CPU clock exists on Linux");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sends SIGTERM to `pid` (a child this program started).
pub fn terminate(pid: u32) -> std::io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

type StatsFn = unsafe extern "C" fn(*mut u64, c_int) -> c_int;
type WritesOfFn = unsafe extern "C" fn(*const c_char) -> u64;

/// The LD_PRELOAD stand-in, when this process runs with it (see `preload/ue_preload.c`).
#[derive(Clone, Copy, Debug)]
pub struct Preload {
    stats: StatsFn,
    writes_of: WritesOfFn,
}

/// The stand-in's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreloadStats {
    /// Opens of `user_events_data` it answered.
    pub opens: u64,
    /// DIAG_IOCSREG registrations.
    pub registrations: u64,
    /// DIAG_IOCSUNREG unregistrations.
    pub unregistrations: u64,
    /// `writev` calls on its fd with a known write index: events.
    pub writes: u64,
    /// Bytes of those calls, write index included.
    pub bytes: u64,
    /// `writev` calls with an unknown write index (a writer bug; should stay 0).
    pub bad_writes: u64,
}

impl Preload {
    /// The stand-in's entry points, if it is loaded into this process.
    pub fn get() -> Option<Self> {
        let stats = symbol(c"ue_preload_stats")?;
        let writes_of = symbol(c"ue_preload_writes_of")?;
        // SAFETY: the symbols are the stand-in's, defined in ue_preload.c with exactly these
        // signatures.
        unsafe {
            Some(Self {
                stats: std::mem::transmute::<*mut libc::c_void, StatsFn>(stats),
                writes_of: std::mem::transmute::<*mut libc::c_void, WritesOfFn>(writes_of),
            })
        }
    }

    /// Its counters now.
    pub fn stats(&self) -> PreloadStats {
        let mut out = [0u64; 6];
        // SAFETY: `out` has room for the 6 counters asked for.
        let n = unsafe { (self.stats)(out.as_mut_ptr(), out.len() as c_int) };
        assert_eq!(n, 6, "the stand-in fills 6 counters");
        let [
            opens,
            registrations,
            unregistrations,
            writes,
            bytes,
            bad_writes,
        ] = out;
        PreloadStats {
            opens,
            registrations,
            unregistrations,
            writes,
            bytes,
            bad_writes,
        }
    }

    /// Events written so far to every registration of the tracepoint `name`.
    pub fn writes_of(&self, name: &str) -> u64 {
        let name = CString::new(name).expect("tracepoint names have no NUL");
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        unsafe { (self.writes_of)(name.as_ptr()) }
    }
}

fn symbol(name: &CStr) -> Option<*mut libc::c_void> {
    // SAFETY: RTLD_DEFAULT searches the loaded objects; `name` is NUL-terminated.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}
