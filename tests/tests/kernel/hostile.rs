//! Writers the decoder cannot trust, through the real kernel: any local process may
//! register and write the decoder's tracepoints. What a payload says about its writer is
//! replaced by what the kernel recorded (pid, cgroup), and malformed events, floods and
//! other layouts next to well-behaved applications cost those applications nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tests::kernel;
use tests::receiver::Receiver;
use ue_decoder::proto::common::v1::any_value::Value;
use ue_decoder::proto::trace::v1::ResourceSpans;
use ue_decoder::{
    Compression, OtlpConfig, PerfSource, ReaderConfig, ReaderError, Request, Signal, SinkConfig,
    TracepointNames, WRITER_CGROUP_ID, WRITER_PID,
};

use crate::pipeline::{Decoder, retry};

fn names(prefix: &str) -> TracepointNames {
    TracepointNames {
        metrics: format!("{prefix}_metrics"),
        traces: format!("{prefix}_traces"),
        logs: format!("{prefix}_logs"),
    }
}

fn sink(receiver: &Receiver) -> Vec<SinkConfig> {
    vec![SinkConfig::Otlp(OtlpConfig {
        endpoint: receiver.http_endpoint(),
        compression: Compression::None,
        retry: retry(),
        ..OtlpConfig::default()
    })]
}

/// `raw-writer` on `tracepoint` with `args`, started.
fn writer(tracepoint: &str, args: &[&str]) -> Child {
    Command::new(tests::built("raw-writer"))
        .args(["--tracepoint", tracepoint])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start raw-writer")
}

/// Waits for a writer; returns its pid, how many events it wrote and how many writes the
/// kernel refused.
fn finished_with_refusals(child: Child) -> (u32, u64, u64) {
    let out: Output = child.wait_with_output().expect("wait for raw-writer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "raw-writer failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in {stdout:?}"))
    };
    (field("pid=") as u32, field("written="), field("failed="))
}

/// [`finished_with_refusals`] for a writer whose every write the kernel takes.
fn finished(child: Child) -> (u32, u64) {
    let (pid, written, failed) = finished_with_refusals(child);
    assert_eq!(failed, 0, "writes refused");
    (pid, written)
}

/// A cgroup hierarchy of the perf_event controller alone (cgroup v1), mounted for the
/// test: the cgroup `PERF_SAMPLE_CGROUP` reports is the writer's cgroup in the hierarchy
/// perf_event is bound to. On cgroup2 that is the writer's own cgroup only once some
/// controller has been enabled at the root (as systemd does at boot): until then children
/// get no perf_event state and every task samples as the root cgroup, id 1 (seen in the
/// project's VM, whose kernel has no controller but perf_event to enable). A perf_event
/// hierarchy of its own gives each cgroup its state at once.
struct PerfCgroups {
    root: PathBuf,
}

impl PerfCgroups {
    fn mount() -> Self {
        let root = std::env::temp_dir().join(format!("ue-perf-cgroup-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("mkdir the mount point");
        let status = Command::new("mount")
            .args(["-t", "cgroup", "-o", "perf_event", "none"])
            .arg(&root)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount the perf_event cgroup hierarchy");
        Self { root }
    }
}

impl Drop for PerfCgroups {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = Command::new("umount").arg(&self.root).status();
    }
}

/// A fresh cgroup `name`; returns its directory and id (its inode number, which is what
/// the kernel reports as the cgroup id).
fn cgroup(root: &Path, name: &str) -> (PathBuf, u64) {
    let dir = root.join(name);
    if !dir.exists() {
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    let id = std::fs::metadata(&dir).expect("stat the cgroup").ino();
    (dir, id)
}

fn int_attr(rs: &ResourceSpans, key: &str) -> Vec<i64> {
    rs.resource
        .iter()
        .flat_map(|r| &r.attributes)
        .filter(|a| a.key == key)
        .map(|a| match a.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::IntValue(v)) => *v,
            other => panic!("{key} is not an integer: {other:?}"),
        })
        .collect()
}

fn string_attr(rs: &ResourceSpans, key: &str) -> Option<String> {
    rs.resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

/// Every accepted ResourceSpans the receiver holds.
fn resource_spans(receiver: &Receiver) -> Vec<ResourceSpans> {
    receiver
        .accepted(Signal::Traces)
        .into_iter()
        .flat_map(|r| match r.request {
            Request::Traces(t) => t.resource_spans,
            _ => vec![],
        })
        .collect()
}

fn span_names(receiver: &Receiver) -> Vec<String> {
    let mut names: Vec<String> = resource_spans(receiver)
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    names
}

fn wait_for_spans(receiver: &Receiver, want: u64, patience: Duration) {
    let deadline = Instant::now() + patience;
    while receiver.accepted_items(Signal::Traces) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_writer_is_named_by_the_kernel_not_by_its_payload() {
    kernel::require();
    let cgroups = PerfCgroups::mount();
    let root = cgroups.root.clone();
    let (dir_a, id_a) = cgroup(&root, "ue-writer-a");
    let (dir_b, id_b) = cgroup(&root, "ue-writer-b");
    let (dir_c, id_c) = cgroup(&root, "ue-writer-c");
    assert!(id_a != id_b && id_b != id_c && id_a != id_c);

    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let names = names("ue_k_id");
    let decoder = Decoder::start(&rt, &names, &[Signal::Traces], sink(&receiver));
    const N: u64 = 5;
    let count = N.to_string();
    let cg = |d: &Path| d.to_str().unwrap().to_owned();
    // Two honest writers claiming the same service, in two cgroups, and a third claiming
    // it too and forging the reserved attributes.
    let a = writer(
        &names.traces,
        &[
            "--mode",
            "valid",
            "--count",
            &count,
            "--cgroup",
            &cg(&dir_a),
        ],
    );
    let b = writer(
        &names.traces,
        &[
            "--mode",
            "valid",
            "--count",
            &count,
            "--cgroup",
            &cg(&dir_b),
        ],
    );
    let c = writer(
        &names.traces,
        &[
            "--mode",
            "forged",
            "--count",
            &count,
            "--cgroup",
            &cg(&dir_c),
        ],
    );
    let (pid_a, _) = finished(a);
    let (pid_b, _) = finished(b);
    let (pid_c, _) = finished(c);
    wait_for_spans(&receiver, 3 * N, Duration::from_secs(60));
    let snapshot = decoder.stop(&rt);

    let mut by_writer: BTreeMap<(i64, i64), u64> = BTreeMap::new();
    for rs in resource_spans(&receiver) {
        assert_eq!(
            string_attr(&rs, "service.name").as_deref(),
            Some("payments"),
            "the payload's own attributes are kept"
        );
        let pid = int_attr(&rs, WRITER_PID);
        let cgroup = int_attr(&rs, WRITER_CGROUP_ID);
        assert_eq!(pid.len(), 1, "one writer pid, the kernel's: {rs:?}");
        assert_eq!(cgroup.len(), 1, "one cgroup id, the kernel's: {rs:?}");
        assert_eq!(int_attr(&rs, "process.pid"), pid, "process.pid filled in");
        let spans: u64 = rs.scope_spans.iter().map(|s| s.spans.len() as u64).sum();
        *by_writer.entry((pid[0], cgroup[0])).or_default() += spans;
    }
    let want = BTreeMap::from([
        ((i64::from(pid_a), id_a as i64), N),
        ((i64::from(pid_b), id_b as i64), N),
        ((i64::from(pid_c), id_c as i64), N),
    ]);
    assert_eq!(by_writer, want, "(writer pid, cgroup id) -> spans");
    // Two forged attributes in each of the forger's events, removed and counted.
    assert_eq!(snapshot.forged_writer_attributes, 2 * N);
    assert_eq!(snapshot.kernel_lost_total(), 0);
}

#[test]
fn hostile_writers_next_to_valid_ones_cost_them_nothing() {
    kernel::require();
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let names = names("ue_k_hostile");
    let tp = names.traces.clone();
    let decoder = Decoder::start(&rt, &names, &[Signal::Traces], sink(&receiver));

    // Registering the decoder's tracepoint with another layout: the kernel refuses it
    // (EADDRINUSE) while the decoder holds its registration, so hostile writers can only
    // write garbage in the right layout (another layout is tested below, on a name the
    // decoder did not register first).
    let other = writer(
        &tp,
        &[
            "--mode",
            "raw",
            "--definition",
            &format!("{tp} u64 a;u64 b;u64 c"),
            "--wait-secs",
            "5",
        ],
    )
    .wait_with_output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success(), "another layout was registered");
    assert!(stderr.contains("errno 98"), "not EADDRINUSE: {stderr}");

    const VALID: u64 = 300;
    const BAD: u64 = 40;
    const FLOOD: u64 = 20_000;
    let valid = VALID.to_string();
    let bad = BAD.to_string();
    let flood = FLOOD.to_string();
    let hostile = [
        ("garbage", &bad),
        ("truncated", &bad),
        ("bad-rel-loc", &bad),
        ("bad-version", &bad),
        ("empty", &bad),
        ("oversized", &bad),
        // The flood: garbage as fast as one process writes it.
        ("garbage", &flood),
    ];
    let honest: Vec<Child> = ["checkout", "billing"]
        .iter()
        .map(|service| {
            writer(
                &tp,
                &["--mode", "valid", "--count", &valid, "--service", service],
            )
        })
        .collect();
    let hostile_children: Vec<Child> = hostile
        .iter()
        .map(|(mode, count)| writer(&tp, &["--mode", mode, "--count", count]))
        .collect();
    for child in honest {
        assert_eq!(finished(child).1, VALID);
    }
    let written: Vec<(u64, u64)> = hostile_children
        .into_iter()
        .map(|c| {
            let (_, written, failed) = finished_with_refusals(c);
            (written, failed)
        })
        .collect();
    // The kernel itself refuses events shorter than the layout (EINVAL) and rel_locs
    // pointing past the event (EFAULT, its __rel_loc validator): those never reach a
    // reader of this layout. Everything else is written.
    assert_eq!(
        written,
        [
            (BAD, 0),
            (0, BAD),
            (0, BAD),
            (BAD, 0),
            (BAD, 0),
            (BAD, 0),
            (FLOOD, 0)
        ]
    );
    wait_for_spans(&receiver, 2 * VALID, Duration::from_secs(120));

    // Not stalled: valid writers after the flood still get through, promptly. One on each
    // CPU: the kernel reports a ring's lost records (PERF_RECORD_LOST) only with the next
    // record it writes to that ring, so a ring the flood overflowed says how much it lost
    // only once something else is written to it.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let afters: Vec<String> = (0..cpus).map(|cpu| format!("after{cpu}")).collect();
    for (cpu, service) in afters.iter().enumerate() {
        let after = Command::new("taskset")
            .args(["-c", &cpu.to_string()])
            .arg(tests::built("raw-writer"))
            .args(["--tracepoint", &tp])
            .args(["--mode", "valid", "--count", "3", "--service", service])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start raw-writer under taskset");
        finished(after);
    }
    wait_for_spans(
        &receiver,
        2 * VALID + 3 * cpus as u64,
        Duration::from_secs(30),
    );
    let snapshot = decoder.stop(&rt);

    // Every valid span exactly once, nothing else.
    let mut want: Vec<String> = ["checkout", "billing"]
        .iter()
        .flat_map(|s| (0..VALID).map(move |i| format!("{s}-{i}")))
        .chain(
            afters
                .iter()
                .flat_map(|s| (0..3).map(move |i| format!("{s}-{i}"))),
        )
        .collect();
    want.sort();
    let got = span_names(&receiver);
    let lost = snapshot.kernel_lost_total();
    assert_eq!(
        got.len(),
        want.len(),
        "spans received (kernel lost {lost} records)"
    );
    assert_eq!(got, want);

    // The malformed ones, counted by reason. The flood's events either reached the
    // decoder (invalid_otlp) or were dropped by the kernel from a full ring (counted as
    // lost); the oversized ones perf drops without a trace (KERNEL.md), so they are
    // nowhere, and no valid event is missing above.
    let m = |reason: &str| snapshot.malformed.get(reason).copied().unwrap_or(0);
    assert_eq!(m("truncated"), 0, "{:?}", snapshot.malformed);
    assert_eq!(m("bad_rel_loc"), 0, "{:?}", snapshot.malformed);
    assert_eq!(m("unknown_version"), BAD, "{:?}", snapshot.malformed);
    assert_eq!(m("empty"), BAD, "{:?}", snapshot.malformed);
    assert_eq!(
        m("invalid_otlp") + lost,
        BAD + FLOOD,
        "garbage and the flood: decoded as invalid or lost in the kernel ({:?}, lost {lost})",
        snapshot.malformed
    );
    assert_eq!(snapshot.corrupt_records.values().sum::<u64>(), 0);
    eprintln!(
        "flood of {FLOOD}: {} reached the decoder, {lost} lost in the kernel",
        m("invalid_otlp") - BAD
    );
}

#[test]
fn a_tracepoint_of_another_layout_is_refused_not_misread() {
    kernel::require();
    // A hostile program registered this name first, with other fields.
    let name = "ue_k_other_layout";
    let _squatter = kernel::RawWriter::register_raw(&format!("{name} u64 a;u32 b;u32 c"));
    let names = TracepointNames {
        traces: name.into(),
        ..names("ue_k_other")
    };
    for register in [false, true] {
        let config = ReaderConfig {
            register,
            ..ReaderConfig::default()
        };
        match PerfSource::open(config, &names, &[Signal::Traces]) {
            Err(ReaderError::LayoutMismatch { tracepoint, .. }) => assert_eq!(tracepoint, name),
            Err(ReaderError::Register { errno, .. }) => {
                assert!(register, "registration failed without registering");
                assert_eq!(errno, libc::EADDRINUSE);
            }
            Err(e) => panic!("another error than the layout's: {e}"),
            Ok(_) => panic!("opened {name} despite its layout (register: {register})"),
        }
    }
}
