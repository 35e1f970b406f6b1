//! `ue-bench-worker`: measures one variant on one workload in this process and prints one
//! JSON line. The driver (`ue-bench`) starts one per run; run it by hand to look closer:
//!
//! ```sh
//! LD_PRELOAD=$(ue-bench --print-preload) ue-bench-worker --workload counter --size 10000 --variant ours
//! ```

use anyhow::Result;
use clap::Parser;
use ue_bench::{Kind, Plan, Workload, find_variant, measure};

/// Measures one variant on one workload; prints a JSON line.
#[derive(Parser, Debug)]
#[command(name = "ue-bench-worker")]
struct Args {
    /// counter, histogram or spans.
    #[arg(long)]
    workload: String,
    /// Series (counter, histogram) or spans per round.
    #[arg(long)]
    size: usize,
    /// Which exporter (see `ue-bench --list`).
    #[arg(long)]
    variant: String,
    /// Measured rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Rounds before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Base URL of an OTLP/HTTP receiver (variant otlp-http).
    #[arg(long)]
    endpoint: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let workload = Workload {
        kind: Kind::parse(&args.workload)?,
        size: args.size,
    };
    let plan = Plan {
        warmup_rounds: args.warmup,
        rounds: args.rounds,
    };
    let m = measure(find_variant(&args.variant)?, workload, plan, args.endpoint)?;
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}
