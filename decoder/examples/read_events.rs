//! Reads `otlp_metrics` and `otlp_traces` for a while and prints every event.
//!
//! ```text
//! cargo run -p ue-decoder --example read_events -- [SECONDS]   (default 10)
//! ```
//!
//! Needs a kernel with user_events, tracefs, and root or CAP_PERFMON; without them it
//! prints what is missing and exits with status 1.

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ue_decoder::{Event, ReaderConfig, Request, Signal, TracepointReader};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("read_events: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("SECONDS must be a whole number, got {arg:?}"))?,
        None => 10,
    };
    let mut reader = TracepointReader::open(&ReaderConfig::default())?;
    let tracepoints: Vec<_> = reader.tracepoints().map(|(n, _)| n.to_owned()).collect();
    // Tests wait for this line: from here on, events are captured.
    println!(
        "ready: reading {} on CPUs {:?} for {seconds}s",
        tracepoints.join(", "),
        reader.cpus()
    );

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut events = 0;
    loop {
        let now = Instant::now();
        events += reader.drain(print_event);
        if now >= deadline {
            break;
        }
        reader.wait((deadline - now).min(Duration::from_millis(200)))?;
    }

    println!("events: {events}");
    println!("lost: {} {:?}", reader.lost_total(), reader.lost_by_cpu());
    println!("malformed: {:?}", reader.malformed_records());
    Ok(())
}

fn print_event(event: Event<'_>) {
    let head = format!(
        "cpu={} time={} pid={} tid={} tracepoint={}",
        event.cpu, event.time_ns, event.pid, event.tid, event.tracepoint
    );
    let payload = match event.payload() {
        Ok(p) => p,
        Err(e) => {
            println!("{head} undecodable: {e}");
            return;
        }
    };
    // The default configuration reads each signal's default tracepoint, in Signal::ALL order.
    let signal = Signal::ALL[event.index];
    let what = Request::decode(signal, payload.buffer).map(|r| {
        let unit = match signal {
            Signal::Metrics => "data_points",
            Signal::Traces => "spans",
            Signal::Logs => "log_records",
        };
        format!("{unit}={}", r.items())
    });
    match what {
        Ok(what) => println!("{head} buffer={}B {what}", payload.buffer.len()),
        Err(e) => println!("{head} buffer={}B not OTLP: {e}", payload.buffer.len()),
    }
}
