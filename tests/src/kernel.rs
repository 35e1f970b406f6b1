//! Support for the tests that need a kernel with user_events (feature `kernel`): the check
//! that one is there, a raw tracepoint writer, and reading events back.
//!
//! On a host without user_events these tests fail and say to use `scripts/vm.sh` (which
//! `scripts/test.sh` does by itself); they never skip.

use std::time::{Duration, Instant};

use ue_decoder::{ReaderConfig, Tracefs, TracepointReader};
use ue_wire::{Tracepoint, layout};

/// Checks that this kernel has user_events, the one thing every kernel test needs; without
/// it, panics with what to do. There is no way to skip: CI runs these tests in the VM, and
/// `scripts/test.sh` fails unless every one of them ran.
pub fn require() {
    // The decoder's own logs, when asked for (UE_LOG=debug), to see inside a run in the VM.
    if let Ok(filter) = std::env::var("UE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    if let Err(missing) = Tracefs::locate(None).and_then(|t| t.require_user_events().map(|_| t)) {
        panic!(
            "this test needs a kernel with user_events: {missing}\n\
             Run the kernel tests in the project's VM with `scripts/test.sh` (or \
             `scripts/vm.sh -- <test binary>`)."
        );
    }
}

/// A reader of `names` with a ring of `ring_kib` per CPU.
pub fn reader(names: &[&str], ring_kib: usize) -> TracepointReader {
    let config = ReaderConfig {
        tracepoints: names.iter().map(|n| n.to_string()).collect(),
        ring_kib,
        ..ReaderConfig::default()
    };
    TracepointReader::open(&config).expect("open a perf reader on the tracepoints")
}

/// An event as read, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// Tracepoint name.
    pub tracepoint: String,
    /// CPU the event was written on.
    pub cpu: u32,
    /// CLOCK_MONOTONIC time of the write.
    pub time_ns: u64,
    /// Writer's process id.
    pub pid: u32,
    /// Writer's thread id.
    pub tid: u32,
    /// The event's fields up to the end of its buffer (header + OTLP): exactly what the
    /// exporter's capture seam records for the same event.
    pub fields: Vec<u8>,
    /// The OTLP bytes alone.
    pub otlp: Vec<u8>,
}

/// Drains until `want` events arrived or `patience` passed; then once more after a short
/// pause, so that extra events are seen too. Events come back in write order (by time).
pub fn read(reader: &mut TracepointReader, want: usize, patience: Duration) -> Vec<Got> {
    let mut got = Vec::new();
    let deadline = Instant::now() + patience;
    let collect = |reader: &mut TracepointReader, got: &mut Vec<Got>| {
        reader.drain(|e| {
            let payload = e
                .payload()
                .expect("event fields decode with the shared layout");
            let len = layout::HEADER_LEN + payload.buffer.len();
            got.push(Got {
                tracepoint: e.tracepoint.to_owned(),
                cpu: e.cpu,
                time_ns: e.time_ns,
                pid: e.pid,
                tid: e.tid,
                fields: e.fields[..len].to_vec(),
                otlp: payload.buffer.to_vec(),
            })
        });
    };
    while got.len() < want && Instant::now() < deadline {
        reader
            .wait(Duration::from_millis(100))
            .expect("wait on the perf rings");
        collect(reader, &mut got);
    }
    std::thread::sleep(Duration::from_millis(200));
    collect(reader, &mut got);
    got.sort_by_key(|g| g.time_ns);
    got
}

/// A tracepoint registered with the exporters' layout (or any definition), written raw, to
/// control event sizes exactly.
pub struct RawWriter(Tracepoint);

impl RawWriter {
    /// Registers `name` with the exporters' layout.
    pub fn register(name: &str) -> Self {
        Self::register_raw(&layout::definition(name))
    }

    /// Registers `definition` (`name fields...`) as given.
    pub fn register_raw(definition: &str) -> Self {
        match Tracepoint::register_definition(definition) {
            Ok(t) => Self(t),
            Err(errno) => panic!("registering {definition}: errno {errno}"),
        }
    }

    /// The kernel's enable bit for this registration.
    pub fn enabled(&self) -> bool {
        self.0.enabled()
    }

    /// Writes one event carrying `otlp`; returns the errno (0 on success).
    pub fn write(&self, otlp: &[u8]) -> i32 {
        self.0.write(otlp).err().unwrap_or(0)
    }
}

/// Pins the calling thread to `cpu`, so every event it writes lands in one ring.
pub fn pin_to_cpu(cpu: u32) {
    // SAFETY: cpu_set_t is plain data for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t; CPU_SET bounds-checks against CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is valid for reads of its size.
    let ret = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(ret, 0, "sched_setaffinity to CPU {cpu}");
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}
