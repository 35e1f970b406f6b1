//! Whole-process CPU benchmarks of the `otlp-user-events` exporters against the real
//! upstream crates (`opentelemetry-user-events-metrics` 0.14, `opentelemetry-user-events-trace`
//! 0.6), `opentelemetry-otlp` over HTTP/protobuf, and the SDK alone.
//!
//! One process runs one variant on one workload and prints one JSON line
//! ([`Measurement`]): `ue-bench-worker`. The driver, `ue-bench` (run by `scripts/bench.sh`),
//! runs every (workload, variant) as separate processes, alternating the variants within each
//! repetition, and prints medians, each exporter's own share (minus the SDK alone), the
//! ratios and the targets of issue 9.
//!
//! Hosts without user_events get a listener through an LD_PRELOAD stand-in
//! (`preload/ue_preload.c`, built by `build.rs`, path in [`PRELOAD`]): registration succeeds
//! and sets the enable bit, and each event is a real `writev` to /dev/null.
//!
//! ```no_run
//! use ue_bench::{Kind, Plan, Workload, measure, variant};
//!
//! let ours = variant("ours").unwrap();
//! let workload = Workload { kind: Kind::Counter, size: 1000 };
//! let plan = Plan { warmup_rounds: 1, rounds: 10 };
//! let m = measure(ours, workload, plan, None)?;
//! println!("{:.0} ns per point", m.cpu_ns_per_item);
//! # Ok::<(), anyhow::Error>(())
//! ```

mod driver;
mod report;
mod sys;
mod variant;
mod workload;

pub use driver::{Driver, Job, Totals, find_variant, jobs, label};
pub use report::{Ratio, Report, Share, median, quantile};
pub use sys::{Preload, PreloadStats, Usage, thread_cpu, usage};
pub use variant::{
    MetricsPipeline, Probe, Setup, SpanPipeline, UPSTREAM_METRICS_TRACEPOINT,
    UPSTREAM_TRACE_PROVIDER, UPSTREAM_TRACE_TRACEPOINT, VARIANTS, Variant, Written, variant,
    variant_names,
};
pub use workload::{Kind, Measurement, Plan, Workload, measure, span_round, thousands};

/// Path of the LD_PRELOAD stand-in this build made (empty off Linux).
pub const PRELOAD: &str = env!("UE_BENCH_PRELOAD");
