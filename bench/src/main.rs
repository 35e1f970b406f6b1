//! `ue-bench`: runs every (workload, variant) as its own `ue-bench-worker` process,
//! variants alternated within each repetition, and prints medians, own shares, ratios and
//! the targets of issue 9. `scripts/bench.sh` builds everything and runs it.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use ue_bench::{
    Driver, Kind, Measurement, PRELOAD, Plan, Report, VARIANTS, Workload, find_variant, jobs,
    thousands,
};

/// Whole-process CPU benchmarks of the exporters, one exporter per process.
#[derive(Parser, Debug)]
#[command(name = "ue-bench")]
struct Args {
    /// A short run to try things: 3 repetitions, 10,000 series, 5,000 spans per round,
    /// fewer rounds. Explicit options still apply on top.
    #[arg(long)]
    quick: bool,
    /// Processes per (workload, variant); medians over them.
    #[arg(long)]
    reps: Option<usize>,
    /// Workloads, comma-separated: counter, histogram, spans.
    #[arg(long, value_delimiter = ',', default_value = "counter,histogram,spans")]
    workloads: Vec<String>,
    /// Series per metric instrument, comma-separated.
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Spans per round.
    #[arg(long)]
    spans: Option<usize>,
    /// Measured span rounds per process.
    #[arg(long)]
    span_rounds: Option<usize>,
    /// Data points to measure per metrics process: rounds = this / series, at least 3.
    #[arg(long)]
    points: Option<usize>,
    /// Variants, comma-separated (default: all; baselines are added as needed).
    #[arg(long, value_delimiter = ',')]
    variants: Option<Vec<String>>,
    /// Skip the "nobody listening" runs (UE_PRELOAD_LISTEN=0).
    #[arg(long)]
    no_idle: bool,
    /// Run without the LD_PRELOAD stand-in (on a kernel with user_events and a listener).
    #[arg(long)]
    no_preload: bool,
    /// Append every run's JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    results: Option<PathBuf>,
    /// Print the tables of earlier results (a --results file) instead of running.
    #[arg(long, value_name = "FILE", conflicts_with = "results")]
    from: Option<PathBuf>,
    /// The worker program (default: ue-bench-worker next to this program).
    #[arg(long)]
    worker: Option<PathBuf>,
    /// The OTLP receiver (default: otlp-receiver next to this program).
    #[arg(long)]
    receiver: Option<PathBuf>,
    /// List the variants and exit.
    #[arg(long)]
    list: bool,
    /// Print the path of the LD_PRELOAD stand-in and exit.
    #[arg(long)]
    print_preload: bool,
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("this program's path")?;
    Ok(exe.with_file_name(name))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.print_preload {
        println!("{PRELOAD}");
        return Ok(());
    }
    if args.list {
        for v in VARIANTS {
            println!("{:<16}{}", v.name, v.about);
        }
        return Ok(());
    }
    let results = match &args.from {
        Some(path) => read_results(path)?,
        None => run(&args)?,
    };
    let report = Report::new(&results);
    print!("{}", report.details());
    print!("{}", report.summary());
    if report.any_failed_check() {
        bail!("some runs did not export exactly what they recorded (see FAILED above)");
    }
    Ok(())
}

fn run(args: &Args) -> Result<Vec<Measurement>> {
    let quick = args.quick;
    let reps = args.reps.unwrap_or(if quick { 3 } else { 5 });
    let sizes = args.sizes.clone().unwrap_or(if quick {
        vec![10_000]
    } else {
        vec![1_000, 10_000, 100_000]
    });
    let spans = args.spans.unwrap_or(if quick { 5_000 } else { 10_000 });
    let span_rounds = args.span_rounds.unwrap_or(if quick { 3 } else { 5 });
    let points = args.points.unwrap_or(if quick { 50_000 } else { 200_000 });
    let selected: Vec<String> = match &args.variants {
        Some(v) => v.clone(),
        None => VARIANTS.iter().map(|v| v.name.to_owned()).collect(),
    };
    for name in &selected {
        find_variant(name)?;
    }
    let selected: Vec<&str> = selected.iter().map(String::as_str).collect();

    let mut all_jobs = Vec::new();
    for name in &args.workloads {
        let kind = Kind::parse(name)?;
        if kind == Kind::Spans {
            let plan = Plan {
                warmup_rounds: 1,
                rounds: span_rounds,
            };
            let workload = Workload { kind, size: spans };
            all_jobs.push(jobs(workload, &selected, !args.no_idle, plan));
        } else {
            for &size in &sizes {
                let plan = Plan {
                    warmup_rounds: 1,
                    rounds: (points / size.max(1)).clamp(3, 200),
                };
                let workload = Workload { kind, size };
                all_jobs.push(jobs(workload, &selected, !args.no_idle, plan));
            }
        }
    }
    all_jobs.retain(|j| !j.is_empty());

    let preload = if args.no_preload {
        None
    } else {
        if PRELOAD.is_empty() || !std::path::Path::new(PRELOAD).exists() {
            bail!("the LD_PRELOAD stand-in was not built (expected at {PRELOAD:?})");
        }
        Some(PathBuf::from(PRELOAD))
    };
    let driver = Driver {
        worker: args
            .worker
            .clone()
            .map_or_else(|| sibling("ue-bench-worker"), Ok)?,
        receiver: args
            .receiver
            .clone()
            .map_or_else(|| sibling("otlp-receiver"), Ok)?,
        preload,
        reps,
        results: args.results.clone(),
    };
    eprintln!(
        "ue-bench: {} processes ({reps} repetitions); metrics: {} points measured per process \
         after 1 warm-up round; spans: {} rounds of {} after 1 warm-up round; listener: {}",
        all_jobs.iter().map(Vec::len).sum::<usize>() * reps,
        thousands(points),
        span_rounds,
        thousands(spans),
        if driver.preload.is_some() {
            "LD_PRELOAD stand-in"
        } else {
            "the kernel's"
        }
    );
    driver.run(&all_jobs)
}

fn read_results(path: &PathBuf) -> Result<Vec<Measurement>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a result: {l:?}")))
        .collect()
}
