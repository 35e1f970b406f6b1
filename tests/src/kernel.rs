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

/// The id the kernel samples as this process's cgroup (`PERF_SAMPLE_CGROUP`): that of its
/// cgroup in the hierarchy the perf_event controller is bound to (a v1 hierarchy of its
/// own, or else cgroup2, listed as `0::` only once mounted), 1 for the root of either.
pub fn own_cgroup_id() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let v1 = cgroups.lines().find_map(|l| {
        let mut fields = l.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "perf_event")
            .then_some(path)
    });
    let path = match v1 {
        Some(path) => {
            assert_eq!(
                path, "/",
                "this process is in a perf_event (v1) cgroup: {cgroups}"
            );
            path
        }
        None => cgroups
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/"),
    };
    if path == "/" {
        return 1;
    }
    std::fs::metadata(format!("/sys/fs/cgroup{path}"))
        .expect("stat this process's cgroup")
        .ino()
}

/// Checks that every resource of `request` ends with the writer attributes the decoder
/// stamps for a writer `pid` in cgroup `cgroup_id` (`process.pid`, as the tests' writers
/// set none, then `user_events.writer.pid` and `user_events.writer.cgroup_id`), and removes
/// them: what is left is the request as the writer wrote it.
pub fn strip_writer(request: &mut ue_decoder::Request, pid: u32, cgroup_id: u64) {
    use ue_decoder::Request;
    use ue_decoder::proto::resource::v1::Resource;
    let resources: Vec<&mut Option<Resource>> = match request {
        Request::Metrics(r) => r
            .resource_metrics
            .iter_mut()
            .map(|r| &mut r.resource)
            .collect(),
        Request::Traces(r) => r
            .resource_spans
            .iter_mut()
            .map(|r| &mut r.resource)
            .collect(),
        Request::Logs(r) => r
            .resource_logs
            .iter_mut()
            .map(|r| &mut r.resource)
            .collect(),
    };
    for resource in resources {
        let attributes = &mut resource.as_mut().expect("a stamped resource").attributes;
        let writer = attributes.split_off(attributes.len().saturating_sub(3));
        let pid = i64::from(pid);
        assert_eq!(
            writer,
            [
                crate::otlp::int("process.pid", pid),
                crate::otlp::int(ue_decoder::WRITER_PID, pid),
                crate::otlp::int(ue_decoder::WRITER_CGROUP_ID, cgroup_id as i64),
            ],
            "the writer as the kernel saw it"
        );
        if attributes.is_empty() {
            *resource = None;
        }
    }
}

/// The `ue-decoder` binary (or a command that runs it, such as `setpriv ... ue-decoder`),
/// started and attached: [`start`](Self::start) returns once it says it reads, keeping
/// what it logged so far, and its later stderr is collected until it exits.
pub struct DecoderProcess {
    child: std::process::Child,
    /// What it logged up to and including its "reading" line.
    pub attached: Vec<String>,
    rest: std::thread::JoinHandle<Vec<String>>,
}

impl DecoderProcess {
    /// `ue-decoder ARGS`, as built next to the test.
    pub fn command(args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(crate::built("ue-decoder"));
        command.args(args);
        command
    }

    /// Spawns `command` with stderr piped and waits until the decoder says it reads;
    /// fails the test with what it logged if it exits first.
    pub fn start(mut command: std::process::Command) -> Self {
        use std::io::{BufRead as _, BufReader};
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the decoder");
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let mut attached = Vec::new();
        let ready = stderr.by_ref().map_while(Result::ok).any(|l| {
            attached.push(l.clone());
            l.contains("ue-decoder: reading")
        });
        assert!(ready, "the decoder says when it is attached: {attached:#?}");
        let rest = std::thread::spawn(move || stderr.map_while(Result::ok).collect());
        Self {
            child,
            attached,
            rest,
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM, as systemd does; its exit status and everything it logged.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        // SAFETY: kill has no memory preconditions; the pid is our child's, not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to the decoder");
        let status = self.child.wait().expect("wait for the decoder");
        let mut log = self.attached;
        log.extend(self.rest.join().expect("the stderr reader does not panic"));
        (status, log)
    }
}
