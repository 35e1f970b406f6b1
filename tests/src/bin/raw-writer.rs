//! `raw-writer`: a local process writing to a user_events tracepoint, well or badly, for
//! the kernel tests of what the decoder takes from writers it cannot trust
//! (`tests/tests/kernel/hostile.rs`).
//!
//! It registers `--tracepoint` (with the exporters' layout, or `--definition` as given),
//! optionally moves itself into the cgroup directory `--cgroup` first, waits for a
//! listener (and 1 s more: the enable bit turns on when perf opens an event, before it is
//! enabled), writes `--count` events of `--mode`, and prints `pid=<pid> written=<n>
//! failed=<n>` on stdout.
//!
//! Modes (the `valid` and `forged` spans are named `<service>-<i>`):
//! - `valid`: traces requests of one span each, resource `service.name=<service>`;
//! - `forged`: the same, with the resource also claiming `user_events.writer.pid=1` and
//!   `user_events.writer.cgroup_id=1`, the names only the decoder may write;
//! - `garbage`: the layout's header right, the buffer bytes that are not OTLP;
//! - `truncated`: fewer bytes than the layout's header;
//! - `bad-rel-loc`: a rel_loc whose length points past the event;
//! - `bad-version`: an unknown version string;
//! - `empty`: a well-formed request with no span;
//! - `oversized`: a valid request too large for perf (which drops it without a word);
//! - `raw`: `--count` events of 24 bytes of pseudo-random data (for another layout).

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use prost::Message;
use tests::otlp::{int, string, traces_request};
use ue_wire::{Tracepoint, layout};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Valid,
    Forged,
    Garbage,
    Truncated,
    BadRelLoc,
    BadVersion,
    Empty,
    Oversized,
    Raw,
}

/// Writes events to a user_events tracepoint, well or badly.
#[derive(Parser, Debug)]
#[command(name = "raw-writer")]
struct Args {
    /// The tracepoint to register and write.
    #[arg(long)]
    tracepoint: String,
    /// Register this definition (`name fields...`) instead of the exporters' layout.
    #[arg(long)]
    definition: Option<String>,
    /// Move into this cgroup directory before registering.
    #[arg(long)]
    cgroup: Option<std::path::PathBuf>,
    /// What to write.
    #[arg(long, value_enum)]
    mode: Mode,
    /// How many events.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// The service name valid events claim.
    #[arg(long, default_value = "payments")]
    service: String,
    /// How long to wait for a listener.
    #[arg(long, default_value_t = 60)]
    wait_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.cgroup {
        // "0" moves the writing process.
        std::fs::write(dir.join("cgroup.procs"), "0")
            .map_err(|e| anyhow::anyhow!("moving into {}: {e}", dir.display()))?;
    }
    let definition = args
        .definition
        .clone()
        .unwrap_or_else(|| layout::definition(&args.tracepoint));
    let tp = Tracepoint::register_definition(&definition)
        .map_err(|errno| anyhow::anyhow!("registering {definition:?}: errno {errno}"))?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    while !tp.enabled() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no listener on {}",
            args.tracepoint
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));

    let (mut written, mut failed) = (0u64, 0u64);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    for i in 0..args.count {
        let span = || {
            let mut req = traces_request(&format!("{}-{i}", args.service), 1);
            req.resource_spans[0].resource = tests::otlp::resource(&args.service);
            req.resource_spans[0].scope_spans[0].spans[0].name = format!("{}-{i}", args.service);
            req
        };
        let result = match args.mode {
            Mode::Valid => tp.write(&span().encode_to_vec()),
            Mode::Forged => {
                let mut req = span();
                let resource = req.resource_spans[0].resource.as_mut().expect("a resource");
                resource
                    .attributes
                    .insert(0, int("user_events.writer.pid", 1));
                resource
                    .attributes
                    .push(string("user_events.writer.cgroup_id", "1"));
                tp.write(&req.encode_to_vec())
            }
            Mode::Garbage => tp.write(&[0xff; 40]),
            Mode::Truncated => tp.write_fields(&[0, 0, 0, 0, b'v', b'0']),
            Mode::BadRelLoc => {
                let mut fields = layout::header(4000).to_vec();
                fields.extend_from_slice(&[0x0a; 16]);
                tp.write_fields(&fields)
            }
            Mode::BadVersion => {
                let otlp = span().encode_to_vec();
                let mut fields = layout::header(otlp.len()).to_vec();
                fields[layout::VERSION_OFFSET..layout::VERSION_OFFSET + 8]
                    .copy_from_slice(b"v9.99.99");
                fields.extend_from_slice(&otlp);
                tp.write_fields(&fields)
            }
            Mode::Empty => tp.write(&[]),
            Mode::Oversized => {
                let mut req = span();
                req.resource_spans[0].scope_spans[0].spans[0]
                    .attributes
                    .push(string(
                        "padding",
                        &"x".repeat(layout::PERF_MAX_BUFFER + 100),
                    ));
                tp.write(&req.encode_to_vec())
            }
            Mode::Raw => {
                let mut fields = [0u8; 24];
                for chunk in fields.chunks_mut(8) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    chunk.copy_from_slice(&rng.to_ne_bytes());
                }
                tp.write_fields(&fields)
            }
        };
        match result {
            Ok(()) => written += 1,
            Err(_) => failed += 1,
        }
    }
    println!(
        "pid={} written={written} failed={failed}",
        std::process::id()
    );
    Ok(())
}
