//! `eh-writer`: writes known log records and spans through the real upstream EventHeader
//! crates (`opentelemetry-user-events-logs`, provider `ue_eh_logs`, and
//! `opentelemetry-user-events-trace`, provider `ue_eh_traces`), for the EventHeader
//! fixture (`scripts/make-fixture.sh`) and kernel tests.
//!
//! Everything it writes is fixed, ids and timestamps included (a counting id generator,
//! explicit times), so a test can hold every decoded field to an exact value
//! ([`tests::eventheader`] describes the content). `--repeat N` writes the whole set N
//! times.
//!
//! With `UE_WAIT_FOR_LISTENER_SECS`, it waits that long for a listener on every logs
//! tracepoint (`ue_eh_logs_L1K1` to `_L5K1`) and then 1 s more (the enable bit turns on
//! when perf opens an event, before perf enables it). The spans' tracepoint
//! (`ue_eh_traces_L4K1`) is opened by the same reader at the same time.

use std::time::{Duration, Instant};

use clap::Parser;
use opentelemetry::logs::{Logger as _, LoggerProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tests::eventheader as content;

/// Writes the EventHeader test content through the upstream crates.
#[derive(Parser, Debug)]
#[command(name = "eh-writer")]
struct Args {
    /// How many times to write the whole set of records and spans.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let logs = opentelemetry_user_events_logs::Processor::builder(content::LOGS_PROVIDER)
        .build()
        .map_err(|e| anyhow::anyhow!("logs processor: {e}"))?;
    let spans = opentelemetry_user_events_trace::Processor::builder(content::TRACES_PROVIDER)
        .build()
        .map_err(|e| anyhow::anyhow!("trace processor: {e}"))?;
    let loggers = SdkLoggerProvider::builder()
        .with_resource(content::resource())
        .with_log_processor(logs)
        .build();
    let tracers = SdkTracerProvider::builder()
        .with_resource(content::resource())
        .with_id_generator(content::CountingIds::default())
        .with_span_processor(spans)
        .build();
    let logger = loggers.logger("eh-writer");
    eprintln!("eh-writer: registered");

    if let Some(secs) = std::env::var("UE_WAIT_FOR_LISTENER_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let all_enabled = || {
            content::LOG_SEVERITIES
                .iter()
                .all(|s| logger.event_enabled(*s, "eh-writer", None))
        };
        while !all_enabled() {
            anyhow::ensure!(Instant::now() < deadline, "no listener within {secs} s");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    let tracer = tracers.tracer("eh-writer");
    for _ in 0..args.repeat {
        for log in content::logs() {
            let mut record = logger.create_log_record();
            log.fill(&mut record);
            logger.emit(record);
        }
        content::write_spans(&tracer);
    }
    loggers.shutdown()?;
    tracers.shutdown()?;
    println!(
        "eh-writer: wrote {} log records and {} spans",
        u64::from(args.repeat) * content::logs().len() as u64,
        u64::from(args.repeat) * content::SPANS as u64
    );
    Ok(())
}
