//! `otlp-receiver`: a real OTLP receiver (gRPC and HTTP/protobuf) for the demo and the VM
//! end-to-end test. Prints one line per request, then totals on SIGINT/SIGTERM or once
//! `--exit-after-items` data points and spans have arrived, and can dump everything it
//! accepted as OTLP/JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tests::receiver::{Received, Receiver};
use tokio::signal::unix::{SignalKind, signal};
use ue_decoder::Signal;

/// A real OTLP receiver that prints what it gets.
#[derive(Parser, Debug)]
#[command(name = "otlp-receiver", version)]
struct Args {
    /// Address for OTLP/HTTP (protobuf, gzip or not), or `off`.
    #[arg(long, default_value = "127.0.0.1:4318")]
    http: String,
    /// Address for OTLP/gRPC, or `off`.
    #[arg(long, default_value = "127.0.0.1:4317")]
    grpc: String,
    /// Exit once at least this many data points, spans and log records, in all, have been
    /// accepted.
    #[arg(long, value_name = "N")]
    exit_after_items: Option<u64>,
    /// On exit, write every accepted request to FILE as OTLP/JSON:
    /// `{"metrics": [...], "traces": [...], "logs": [...]}`.
    #[arg(long, value_name = "FILE")]
    dump: Option<PathBuf>,
    /// Keep no request once its line is printed (memory stays flat on long, heavy runs);
    /// the totals then count nothing, and --dump writes nothing.
    #[arg(long)]
    forget: bool,
}

fn address(flag: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value == "off" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .with_context(|| format!("--{flag} {value:?}: not an address like 127.0.0.1:4318"))
}

fn summary(r: &Received) -> String {
    format!(
        "{} {} items={} service.name={} answer={}",
        r.protocol.as_str(),
        r.signal(),
        r.items(),
        r.service_name().as_deref().unwrap_or("-"),
        if r.accepted() { "ok" } else { "error" },
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = address("http", &args.http)?;
    let grpc = address("grpc", &args.grpc)?;
    anyhow::ensure!(
        http.is_some() || grpc.is_some(),
        "both --http and --grpc are off"
    );

    // Handlers first, so a script that saw the "listening" line may signal at once.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut receiver = Receiver::builder()
        .http(http)
        .grpc(grpc)
        .on_request(|r| println!("{}", summary(r)))
        .keep(!args.forget)
        .start()
        .await
        .context("cannot listen")?;
    // The bound addresses, which differ from the flags' for port 0.
    let off = || "off".to_owned();
    println!(
        "listening http={} grpc={}",
        http.map_or_else(off, |_| receiver.http_addr().to_string()),
        grpc.map_or_else(off, |_| receiver.grpc_addr().to_string()),
    );

    let enough = async {
        match args.exit_after_items {
            Some(n) => loop {
                let items = |r: &[Received]| {
                    r.iter()
                        .filter(|r| r.accepted())
                        .map(Received::items)
                        .sum::<u64>()
                };
                if receiver
                    .wait_until(Duration::from_secs(3600), |r| items(r) >= n)
                    .await
                {
                    break;
                }
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sigint.recv() => {}
        _ = sigterm.recv() => {}
        () = enough => {}
    }

    // Nothing is recorded or printed after this, so the totals come last and add up.
    receiver.stop().await;
    let received = receiver.received();
    println!(
        "totals requests={} accepted={} data_points={} spans={} log_records={}",
        received.len(),
        received.iter().filter(|r| r.accepted()).count(),
        receiver.accepted_items(Signal::Metrics),
        receiver.accepted_items(Signal::Traces),
        receiver.accepted_items(Signal::Logs),
    );
    if let Some(path) = &args.dump {
        let json = serde_json::to_vec_pretty(&receiver.dump_json())?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
