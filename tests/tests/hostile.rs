//! Hostile perf.data captures (`tests/fixtures/hostile/`, written by its `make.py`; the
//! fuzz targets' crashes go there too): `ue-decoder decode` ends with an error or a
//! truthful result, never a signal or a panic, and its peak memory stays under
//! [`MAX_RSS_KIB`] whatever the input.
//!
//! Each capture crashed or ballooned the decoder before its guards: a 4 TiB AUXTRACE
//! record (SIGABRT, failed allocation inside linux-perf-data), loss counts that overflowed
//! (a panic in debug builds, "lost 0" in release builds), a 44 KB compressed record
//! expanding to 1.4 GB (1.4 GB of memory), and (found by fuzzing) an attr size that made
//! linux-perf-data allocate 1 GiB for a name.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use ue_decoder::{PerfDataReader, TracepointNames, decode_perf_data};

/// The stated bound on `ue-decoder decode`'s peak resident memory for any input, of any
/// size (the records it holds to sort a round are bounded at 32 MiB, and forwarding
/// waits for the receiver rather than holding the file).
const MAX_RSS_KIB: i64 = 64 * 1024;
/// The address space the child may map (`ulimit -v`): an allocation driven by an
/// unchecked field fails here even when its pages would never be touched (a zeroed
/// gigabyte costs no RSS, but it is still a crash waiting for a smaller machine).
const MAX_VIRTUAL_KIB: u64 = 256 * 1024;

fn hostile(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hostile")
        .join(name)
}

/// What a run of `ue-decoder decode FILE` did.
struct Run {
    status: ExitStatus,
    stderr: String,
    /// The child's peak resident set size (getrusage's `ru_maxrss`), KiB.
    max_rss_kib: i64,
}

/// Runs `ue-decoder decode FILE` (JSON lines to a discarded stdout) with at most
/// [`MAX_VIRTUAL_KIB`] of address space, and measures its peak RSS with `wait4`, which
/// reports the resources of exactly that child. At `exec` the
/// kernel carries the spawning process's own high-water mark into the child's
/// `ru_maxrss`, so the figure is an upper bound; this test process stays small (nothing
/// large is decoded in it) to keep the bound tight.
fn decode(file: &Path) -> Run {
    decode_with(file, &[], MAX_VIRTUAL_KIB)
}

/// [`decode`] with more arguments and another address-space limit.
fn decode_with(file: &Path, args: &[&str], max_virtual_kib: u64) -> Run {
    // Unique per run: the tests run in parallel, some on the same file.
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let stderr_path = std::env::temp_dir().join(format!(
        "ue-hostile-{}-{}.stderr",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    // Reaped by wait4 below, which `Child::wait` cannot replace: it drops the rusage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {max_virtual_kib} && exec \"$0\" decode \"$@\""
        ))
        .arg(tests::built("ue-decoder"))
        .arg(file)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; an all-zero value is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for (we never call `child.wait`), and
    // both pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let stderr = fs::read_to_string(&stderr_path).unwrap();
    let _ = fs::remove_file(&stderr_path);
    Run {
        status: ExitStatus::from_raw(status),
        stderr,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// Checks what every hostile input must get: an exit, not a signal or a panic, within
/// the memory bound.
fn decode_survives(name: &str) -> Run {
    let run = decode(&hostile(name));
    assert_eq!(
        run.status.signal(),
        None,
        "{name}: killed by a signal\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "{name}: panicked\n{}",
        run.stderr
    );
    assert!(
        run.max_rss_kib < MAX_RSS_KIB,
        "{name}: peak RSS {} KiB, over the bound of {MAX_RSS_KIB} KiB",
        run.max_rss_kib
    );
    run
}

#[test]
fn a_huge_auxtrace_record_is_refused_without_allocating_it() {
    let run = decode_survives("auxtrace-4tib.perf.data");
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("AUXTRACE record of 4398046511104 bytes"),
        "{}",
        run.stderr
    );
}

#[test]
fn loss_counts_that_overflow_saturate_instead_of_wrapping() {
    let run = decode_survives("lost-2x2pow63.perf.data");
    assert!(run.status.success(), "{}", run.stderr);
    // 2^63 + 2^63 + the file's own 6: at least u64::MAX, never "lost 0".
    assert!(
        run.stderr
            .contains(&format!("perf lost {} records", u64::MAX)),
        "{}",
        run.stderr
    );

    let mut reader = PerfDataReader::open(
        &hostile("lost-2x2pow63.perf.data"),
        &TracepointNames::default(),
    )
    .unwrap();
    while reader.next_event().unwrap().is_some() {}
    assert_eq!(reader.stats().lost, u64::MAX);
    assert_eq!(reader.stats().lost_total(), u64::MAX);
}

#[test]
fn a_decompression_bomb_stops_at_the_cap() {
    let run = decode_survives("zstd-bomb.perf.data");
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("expands past 33554432 bytes"),
        "{}",
        run.stderr
    );
}

/// Found by the perf_data fuzz target: a callchain of 2^61 + 1 frames, which
/// linux-perf-event-reader multiplies by 8 unchecked (a panic in debug builds, a misread in
/// release). The sample is refused as malformed; every other sample decodes as in the
/// capture it was made from (`make.py`: the examples capture, recorded with callchains).
#[test]
fn a_callchain_longer_than_its_sample_is_refused_and_the_rest_decodes() {
    let run = decode_survives("callchain-2pow61.perf.data");
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains(r#"malformed {"bad_sample": 1}"#),
        "{}",
        run.stderr
    );

    let requests = |path: &Path| {
        let decoded = decode_perf_data(path, &TracepointNames::default()).unwrap();
        let out: Vec<_> = decoded
            .events
            .into_iter()
            .map(|e| (e.tracepoint, e.request))
            .collect();
        (out, decoded.stats)
    };
    let (got, stats) = requests(&hostile("callchain-2pow61.perf.data"));
    let (all, _) = requests(&hostile("../examples.perf.data"));
    // The first sample of the capture (a span) is the one with the crafted callchain.
    assert_eq!(got, all[1..]);
    assert_eq!(stats.malformed.get("bad_sample"), Some(&1));
    assert_eq!(stats.events.values().sum::<u64>(), all.len() as u64);
}

/// Found by the perf_data fuzz target: an attr whose size field (123) lies between two
/// `perf_event_attr` versions made linux-perf-data read the next event's name length from
/// the wrong place and allocate 1 GiB for it (SIGABRT under the address-space limit).
#[test]
fn an_attr_size_linux_perf_data_misreads_is_refused() {
    let run = decode_survives("fuzz-attr-size-1gib-name.perf.data");
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("event 2 has an attr of 123 bytes in slots of 128"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_round_too_large_to_hold_is_sorted_in_parts() {
    let run = decode_survives("sorter-flood.perf.data");
    assert!(run.status.success(), "{}", run.stderr);
    // The capture's own 4 events decode; the 1.26 million samples cut short are counted;
    // 1.26 million records of 32 + 128 bytes each (their body, and what holding one
    // costs) went out in parts of at most 32 MiB.
    for expected in [
        "\"user_events:otlp_traces\": 1258292",
        "items {Metrics: 36, Traces: 15}",
        "malformed {\"bad_sample\": 1258291}",
        "6 rounds too large to sort whole",
    ] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
}

/// Every committed hostile input, including the fuzzers' finds added later, stays inside
/// the bound; and so do the good captures.
#[test]
fn every_capture_decodes_within_the_memory_bound() {
    let mut files: Vec<_> = fs::read_dir(hostile(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .collect();
    files.extend(
        [
            "examples.perf.data",
            "examples.z.perf.data",
            "lossy.perf.data",
        ]
        .map(|f| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures")
                .join(f)
        }),
    );
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let run = decode(&file);
        eprintln!("{name}: {:?}, peak RSS {} KiB", run.status, run.max_rss_kib);
        assert_eq!(run.status.signal(), None, "{name}\n{}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{name}\n{}", run.stderr);
        assert!(
            run.max_rss_kib < MAX_RSS_KIB,
            "{name}: {} KiB",
            run.max_rss_kib
        );
    }
}

/// Writes to `path` `examples.perf.data` with its samples repeated until the capture
/// holds `min_bytes`, a finished-round record after each copy, as `perf record` writes
/// rounds; returns how many copies of the samples it holds. Written as it goes: this
/// process's own peak RSS is carried into the children it starts.
fn write_large_capture(path: &Path, min_bytes: usize) -> u64 {
    use std::io::Write as _;
    const SAMPLE: u32 = 9;
    const FINISHED_ROUND: u32 = 68;
    let b = fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/examples.perf.data"))
        .unwrap();
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let (offset, size) = (u64_at(40) as usize, u64_at(48) as usize);
    let data = &b[offset..offset + size];
    let mut samples = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let kind = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap());
        let len = usize::from(u16::from_le_bytes(
            data[pos + 6..pos + 8].try_into().unwrap(),
        ));
        if kind == SAMPLE {
            samples.extend_from_slice(&data[pos..pos + len]);
        }
        pos += len;
    }
    assert!(!samples.is_empty());
    let mut round = FINISHED_ROUND.to_le_bytes().to_vec();
    round.extend_from_slice(&0u16.to_le_bytes());
    round.extend_from_slice(&8u16.to_le_bytes());
    let extra = (samples.len() + round.len()) as u64;
    let added = (min_bytes.saturating_sub(size) as u64).div_ceil(extra);
    let delta = added * extra;
    // The feature sections after the data section move by the growth.
    let features: u32 = (0..4).map(|i| u64_at(72 + 8 * i).count_ones()).sum();
    let table_at = offset + size;
    let mut table = b[table_at..table_at + 16 * features as usize].to_vec();
    for entry in table.chunks_mut(16) {
        let at = u64::from_le_bytes(entry[..8].try_into().unwrap());
        entry[..8].copy_from_slice(&(at + delta).to_le_bytes());
    }
    let mut header = b[..offset].to_vec();
    header[48..56].copy_from_slice(&(size as u64 + delta).to_le_bytes());
    let mut out = std::io::BufWriter::new(fs::File::create(path).unwrap());
    out.write_all(&header).unwrap();
    out.write_all(data).unwrap();
    for _ in 0..added {
        out.write_all(&samples).unwrap();
        out.write_all(&round).unwrap();
    }
    out.write_all(&table).unwrap();
    out.write_all(&b[table_at + table.len()..]).unwrap();
    out.flush().unwrap();
    added + 1
}

/// An OTLP/HTTP endpoint that reads each request whole and answers 200, keeping nothing.
fn discarding_receiver() -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    use http_body_util::{BodyExt as _, Full};
    use hyper::service::service_fn;
    let rt = tests::runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    req.into_body().collect().await?;
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(bytes::Bytes::new())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rt)
}

/// A capture larger than the memory bound goes to the endpoint whole, within the bound:
/// `decode FILE --endpoint` reads, checks and sends as it goes.
#[test]
fn a_capture_larger_than_the_bound_is_forwarded_in_bounded_memory() {
    let path = std::env::temp_dir().join(format!("ue-large-{}.perf.data", std::process::id()));
    let copies = write_large_capture(&path, 96 << 20);
    assert!(fs::metadata(&path).unwrap().len() > 96 << 20);
    let mut reader = PerfDataReader::open(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/examples.perf.data"),
        &TracepointNames::default(),
    )
    .unwrap();
    while reader.next_event().unwrap().is_some() {}
    let items: u64 = reader.stats().items.values().sum::<u64>() * copies;
    let (addr, _rt) = discarding_receiver();
    let endpoint = format!("http://{addr}");
    let run = decode_with(
        &path,
        &["--endpoint", &endpoint, "--compression", "none"],
        // Address space is not what this test bounds: threads and allocator arenas
        // reserve more than they touch.
        4 << 20,
    );
    let _ = fs::remove_file(&path);
    eprintln!("peak RSS {} KiB\n{}", run.max_rss_kib, run.stderr);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(" {items} items")),
        "all {items} items sent: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("too large to sort whole"),
        "perf's rounds are read as rounds: {}",
        run.stderr
    );
    // The test suite runs the debug build, which peaks at 66 to 72 MiB here against 13 MiB
    // for the release build: the bound for this run is 96 MiB, still far below the file.
    let bound = MAX_RSS_KIB * 3 / 2;
    assert!(
        run.max_rss_kib < bound,
        "peak RSS {} KiB, over the bound of {bound} KiB",
        run.max_rss_kib
    );
}
