//! Least privilege through the real kernel: the `ue-decoder` binary that drops to `nobody`
//! once open, and the one started as `nobody` with nothing but the documented capabilities,
//! both still forward the events written afterwards, and neither keeps any capability.

use std::process::Command;
use std::time::Duration;

use prost::Message as _;
use tests::kernel::{self, DecoderProcess, RawWriter};
use tests::otlp;
use tests::receiver::Receiver;
use ue_decoder::Signal;

/// nobody, on every Debian system.
const NOBODY: u32 = 65534;

/// The daemon, started with `prefix` (e.g. setpriv and its options) before its own
/// arguments, once it says it reads.
fn start(prefix: &[&str], tracepoint: &str, endpoint: &str, extra: &[&str]) -> DecoderProcess {
    let decoder = tests::built("ue-decoder");
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(&decoder);
            command
        }
        None => Command::new(&decoder),
    };
    command
        .args([
            "run",
            "--endpoint",
            endpoint,
            "--signals",
            "metrics",
            "--metrics-tracepoint",
            tracepoint,
            "--batch-delay-ms",
            "50",
            "--compression",
            "none",
        ])
        .args(extra);
    DecoderProcess::start(command)
}

/// `Name:\tvalue` from `/proc/<pid>/task/<tid>/status`, for every thread of `pid`.
fn status_of_threads(pid: u32, field: &str) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|t| {
            let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")))
                .unwrap_or_else(|| panic!("{field} in {status}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Asserts that every thread of `pid` runs as nobody, in `groups` only, with no capability
/// at all and no way to gain one.
fn assert_unprivileged(pid: u32, groups: &str) {
    let ids = format!("{NOBODY} {NOBODY} {NOBODY} {NOBODY}");
    for (field, want) in [
        ("Uid", ids.as_str()),
        ("Gid", ids.as_str()),
        ("CapEff", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("CapInh", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "1"),
    ] {
        let got = status_of_threads(pid, field);
        assert!(got.len() >= 2, "the daemon's threads are running: {got:?}");
        assert!(
            got.iter().all(|g| g == want),
            "{field} of every thread: {got:?}, want {want}"
        );
    }
    let got = status_of_threads(pid, "Groups");
    assert!(
        got.iter().all(|g| g == groups),
        "Groups: {got:?}, want {groups:?}"
    );
}

/// Writes `events` requests of `points` data points to `tracepoint` after the drop, and
/// checks that all of them arrive; then stops the daemon and checks it exits cleanly.
fn forwards_after_the_drop(
    rt: &tokio::runtime::Runtime,
    receiver: &Receiver,
    tracepoint: &str,
    decoder: DecoderProcess,
) {
    let writer = RawWriter::register(tracepoint);
    assert!(
        writer.enabled(),
        "the dropped daemon's perf events still listen"
    );
    let (events, points) = (20, 5);
    for i in 0..events {
        let request = otlp::metrics_request(&format!("after-drop-{i}"), points);
        assert_eq!(writer.write(&request.encode_to_vec()), 0);
    }
    let want = (events * points) as u64;
    let arrived = rt.block_on(receiver.wait_until(Duration::from_secs(60), |r| {
        r.iter()
            .filter(|x| x.signal() == Signal::Metrics && x.accepted())
            .map(|x| x.items())
            .sum::<u64>()
            >= want
    }));
    let (status, log) = decoder.stop();
    assert!(
        arrived,
        "every data point written after the drop arrives: {log:#?}"
    );
    assert_eq!(receiver.accepted_items(Signal::Metrics), want);
    assert!(status.success(), "{status}: {log:#?}");
}

#[test]
fn the_daemon_dropped_to_nobody_with_user_still_forwards_and_keeps_no_capability() {
    kernel::require();
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let tracepoint = "ue_k_priv_user";
    let decoder = start(
        &[],
        tracepoint,
        &receiver.http_endpoint(),
        &["--user", "nobody"],
    );
    assert_unprivileged(decoder.id(), &NOBODY.to_string());
    forwards_after_the_drop(&rt, &receiver, tracepoint, decoder);
}

/// The daemon as nobody with `caps` (setpriv's syntax) in its ambient set, and
/// `setpriv_groups` (e.g. `--clear-groups`).
fn start_as_nobody(
    caps: &str,
    setpriv_groups: &[&str],
    tracepoint: &str,
    endpoint: &str,
) -> DecoderProcess {
    let id = NOBODY.to_string();
    let mut prefix = vec!["setpriv", "--reuid", &id, "--regid", &id];
    prefix.extend_from_slice(setpriv_groups);
    prefix.extend(["--inh-caps", caps, "--ambient-caps", caps, "--"]);
    start(&prefix, tracepoint, endpoint, &[])
}

#[test]
fn nobody_with_cap_perfmon_and_cap_dac_override_runs_the_daemon() {
    kernel::require();
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let tracepoint = "ue_k_priv_caps";
    // What README's "Running without root" documents and deploy/ue-decoder.service grants:
    // tracefs's root is mode 0700 and user_events_data 0640, both root's.
    let decoder = start_as_nobody(
        "+perfmon,+dac_override",
        &["--clear-groups"],
        tracepoint,
        &receiver.http_endpoint(),
    );
    // Cleared once open, though it started with them.
    assert_unprivileged(decoder.id(), "");
    forwards_after_the_drop(&rt, &receiver, tracepoint, decoder);
}

/// Opens tracefs to a group for the life of the value: the mount's group, the root's
/// search bit and user_events_data's group write bit; then back to the kernel's defaults.
struct TracefsGroup(&'static str);

impl TracefsGroup {
    fn grant(gid: u32) -> Self {
        let root = "/sys/kernel/tracing";
        let run = |program: &str, args: &[&str]| {
            let out = Command::new(program).args(args).output().unwrap();
            assert!(out.status.success(), "{program} {args:?}: {out:?}");
        };
        run("mount", &["-o", &format!("remount,gid={gid}"), root]);
        run("chmod", &["g+rx", root]);
        run("chmod", &["g+w", &format!("{root}/user_events_data")]);
        Self(root)
    }
}

impl Drop for TracefsGroup {
    fn drop(&mut self) {
        let root = self.0;
        let _ = Command::new("chmod")
            .args(["640", &format!("{root}/user_events_data")])
            .status();
        let _ = Command::new("chmod").args(["700", root]).status();
        let _ = Command::new("mount")
            .args(["-o", "remount,gid=0", root])
            .status();
    }
}

#[test]
fn nobody_with_only_cap_perfmon_runs_the_daemon_on_a_tracefs_opened_to_its_group() {
    kernel::require();
    let rt = tests::runtime();
    let receiver = rt.block_on(Receiver::start()).unwrap();
    let tracepoint = "ue_k_priv_perfmon";
    let _tracefs = TracefsGroup::grant(NOBODY);
    let decoder = start_as_nobody(
        "+perfmon",
        &["--groups", &NOBODY.to_string()],
        tracepoint,
        &receiver.http_endpoint(),
    );
    assert_unprivileged(decoder.id(), &NOBODY.to_string());
    forwards_after_the_drop(&rt, &receiver, tracepoint, decoder);
}

#[test]
fn nobody_without_capabilities_is_told_what_is_missing() {
    kernel::require();
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(tests::built("ue-decoder"))
        .args(["run", "--stdout", "--signals", "metrics"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("permission denied on /sys/kernel/tracing")
            && stderr.contains("CAP_PERFMON")
            && stderr.contains("CAP_DAC_OVERRIDE"),
        "says tracefs is closed and what opens it: {stderr}"
    );
}
