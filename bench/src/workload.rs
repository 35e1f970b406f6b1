//! The workloads, and measuring one of them in this process.

use std::fmt;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use opentelemetry::trace::noop::NoopTracer;
use opentelemetry::trace::{Span as _, SpanKind, Tracer, TracerProvider as _};
use opentelemetry::{KeyValue, metrics::MeterProvider as _};
use serde::{Deserialize, Serialize};

use crate::sys::{self, Preload, PreloadStats};
use otlp_user_events::ListenerAwareTracer;

use crate::variant::{Setup, TracerKind, Variant, Written};

/// What the application does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A u64 counter: `size` series of 3 attributes, one `add` per series per round.
    Counter,
    /// An f64 histogram with the SDK's default buckets: `size` series of 3 attributes,
    /// one `record` per series per round.
    Histogram,
    /// Spans with 6 attributes and 1 event: `size` spans created and ended per round.
    Spans,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Counter, Kind::Histogram, Kind::Spans];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            Kind::Spans => "spans",
        }
    }

    /// The kind called `name`.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .with_context(|| format!("unknown workload {name:?}: counter, histogram or spans"))
    }

    /// Whether it is a metrics workload.
    pub fn is_metrics(self) -> bool {
        self != Kind::Spans
    }

    /// What one item is.
    pub fn item(self) -> &'static str {
        if self.is_metrics() { "point" } else { "span" }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One workload at one size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Workload {
    /// What is recorded.
    pub kind: Kind,
    /// Series (metrics) or spans per round.
    pub size: usize,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Counter => write!(f, "counter, {} series x 3 attributes", thousands(self.size)),
            Kind::Histogram => write!(
                f,
                "histogram, {} series x 3 attributes",
                thousands(self.size)
            ),
            Kind::Spans => write!(
                f,
                "spans, 6 attributes + 1 event, {} per round",
                thousands(self.size)
            ),
        }
    }
}

/// `12345` as `12,345`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How long to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Rounds before measuring (caches, lazy registration, allocator warm).
    pub warmup_rounds: usize,
    /// Rounds measured.
    pub rounds: usize,
}

/// One process's result: one JSON line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The workload.
    pub workload: Workload,
    /// The variant's name.
    pub variant: String,
    /// `Some(listening)` under the LD_PRELOAD stand-in (`UE_PRELOAD_LISTEN=0` means nobody
    /// listens); `None` without it (a real kernel decides).
    pub preload_listening: Option<bool>,
    /// Rounds measured, after `warmup_rounds`.
    pub rounds: usize,
    /// Rounds before measuring.
    pub warmup_rounds: usize,
    /// Items (data points or spans) recorded in the measured rounds.
    pub items: u64,
    /// Items recorded in all rounds, warm-up included.
    pub items_total: u64,
    /// Process CPU time (all threads, user + system) of the measured rounds.
    pub cpu_ns: u64,
    /// `cpu_ns / items`.
    pub cpu_ns_per_item: f64,
    /// Wall time of the measured rounds.
    pub wall_ns: u64,
    /// Items the exporter wrote in the measured rounds, by its own account or the
    /// stand-in's (`None` where the process cannot know, e.g. OTLP/HTTP).
    pub exported: Option<u64>,
    /// Items the exporter wrote in all rounds; for OTLP/HTTP the driver fills it in from
    /// the receiver's totals.
    pub exported_total: Option<u64>,
    /// Events (tracepoint writes) or exporter calls in the measured rounds.
    pub events: Option<u64>,
    /// The stand-in's counters over the measured rounds.
    pub preload: Option<PreloadStats>,
    /// Peak RSS of the process, KiB.
    pub max_rss_kib: u64,
    /// The driver's repetition this run belongs to (1-based), so that runs of the same
    /// repetition, which ran next to each other, can be compared pairwise.
    #[serde(default)]
    pub rep: Option<usize>,
}

impl Measurement {
    /// Whether every item recorded was exported (where that is known), or, with nobody
    /// listening, nothing was. `None` when nothing can be said.
    pub fn check(&self) -> Option<Result<(), String>> {
        let exported = self.exported_total?;
        let want = if self.preload_listening == Some(false) {
            0
        } else {
            self.items_total
        };
        Some(if exported == want {
            Ok(())
        } else {
            Err(format!("exported {exported} of {want} items"))
        })
    }
}

/// Attribute sets of `n` distinct series: a unique id, one of 4 regions, one of 50 hosts.
fn series_attributes(n: usize) -> Vec<[KeyValue; 3]> {
    const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1"];
    (0..n)
        .map(|i| {
            [
                KeyValue::new("series.id", i as i64),
                KeyValue::new("cloud.region", REGIONS[i % REGIONS.len()]),
                KeyValue::new("host.name", format!("host-{:02}", i % 50)),
            ]
        })
        .collect()
}

/// Delta of two probe readings.
fn delta(before: Written, after: Written) -> Written {
    let d = |a: Option<u64>, b: Option<u64>| Some(b? - a?);
    Written {
        items: d(before.items, after.items),
        events: d(before.events, after.events),
    }
}

fn stats_delta(before: Option<PreloadStats>, after: Option<PreloadStats>) -> Option<PreloadStats> {
    let (b, a) = (before?, after?);
    Some(PreloadStats {
        opens: a.opens - b.opens,
        registrations: a.registrations - b.registrations,
        unregistrations: a.unregistrations - b.unregistrations,
        writes: a.writes - b.writes,
        bytes: a.bytes - b.bytes,
        bad_writes: a.bad_writes - b.bad_writes,
    })
}

/// One round of the span workload through `tracer`: `n` server spans of 6 attributes and
/// 1 event each (the decoder's bench makes its span events with it too).
pub fn span_round<T: Tracer + 'static>(tracer: T, n: usize) -> Box<dyn FnMut(usize)> {
    Box::new(move |_| {
        for i in 0..n {
            let mut span = tracer
                .span_builder("GET /api/users/{id}")
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("http.request.method", "GET"),
                    KeyValue::new("http.route", "/api/users/{id}"),
                    KeyValue::new("http.response.status_code", 200),
                    KeyValue::new("server.address", "api.example.com"),
                    KeyValue::new("user.id", (i % 1000) as i64),
                    KeyValue::new("cache.hit", i % 3 == 0),
                ])
                .start(&tracer);
            span.add_event(
                "db.query",
                vec![KeyValue::new(
                    "db.statement",
                    "SELECT * FROM users WHERE id = ?",
                )],
            );
            span.end();
        }
    })
}

/// Measures `variant` on `workload` in this process: builds its pipeline, runs
/// `plan.warmup_rounds` rounds, then measures `plan.rounds` rounds, each followed by a
/// `force_flush` (metrics: collect and export; spans: export what is queued). Fails when the
/// variant has no pipeline for the workload's signal, or a flush fails.
pub fn measure(
    variant: &Variant,
    workload: Workload,
    plan: Plan,
    endpoint: Option<String>,
) -> Result<Measurement> {
    if plan.rounds == 0 {
        bail!("at least one measured round");
    }
    let setup = Setup {
        series: workload.size,
        spans_per_round: workload.size,
        endpoint,
    };
    let preload = Preload::get();
    let preload_listening =
        preload.map(|_| std::env::var("UE_PRELOAD_LISTEN").as_deref() != Ok("0"));

    // Each arm: (build, run one round, flush, probe, shutdown).
    let run = match workload.kind {
        Kind::Counter | Kind::Histogram => {
            let build = variant
                .metrics
                .with_context(|| format!("{} has no metrics pipeline", variant.name))?;
            let pipeline = build(&setup)?;
            let meter = pipeline.provider.meter("ue-bench");
            let attributes = series_attributes(workload.size);
            let mut round: Box<dyn FnMut(usize)> = match workload.kind {
                Kind::Counter => {
                    let counter = meter.u64_counter("ue_bench.requests").build();
                    Box::new(move |_| {
                        for a in &attributes {
                            counter.add(1, a);
                        }
                    })
                }
                _ => {
                    let histogram = meter
                        .f64_histogram("ue_bench.latency")
                        .with_unit("ms")
                        .build();
                    Box::new(move |r| {
                        for (i, a) in attributes.iter().enumerate() {
                            // Spread over the default buckets (0 .. 10,000).
                            histogram.record(((i * 37 + r * 11) % 12_000) as f64 * 0.9, a);
                        }
                    })
                }
            };
            let provider = pipeline.provider.clone();
            run_rounds(
                plan,
                &mut round,
                &|| {
                    provider
                        .force_flush()
                        .context("force_flush (collect + export)")
                },
                &pipeline.written,
            )?
            .finish(|| pipeline.provider.shutdown().context("shutdown"))?
        }
        Kind::Spans => {
            let build = variant
                .spans
                .with_context(|| format!("{} has no span pipeline", variant.name))?;
            let pipeline = build(&setup)?;
            let sdk = pipeline.provider.tracer("ue-bench");
            let n = workload.size;
            let mut round = match &pipeline.tracer {
                TracerKind::Sdk => span_round(sdk, n),
                TracerKind::ListenerAware(listener) => {
                    span_round(ListenerAwareTracer::new(sdk, listener.clone()), n)
                }
                TracerKind::Noop => span_round(NoopTracer::new(), n),
            };
            let provider = pipeline.provider.clone();
            run_rounds(
                plan,
                &mut round,
                &|| provider.force_flush().context("force_flush"),
                &pipeline.written,
            )?
            .finish(|| pipeline.provider.shutdown().context("shutdown"))?
        }
    };

    let items = workload.size as u64 * plan.rounds as u64;
    Ok(Measurement {
        workload,
        variant: variant.name.to_owned(),
        preload_listening,
        rounds: plan.rounds,
        warmup_rounds: plan.warmup_rounds,
        items,
        items_total: workload.size as u64 * (plan.rounds + plan.warmup_rounds) as u64,
        cpu_ns: run.cpu_ns,
        cpu_ns_per_item: run.cpu_ns as f64 / items as f64,
        wall_ns: run.wall_ns,
        exported: run.measured.items,
        exported_total: run.total.items,
        events: run.measured.events,
        preload: run.preload,
        max_rss_kib: sys::usage().max_rss_kib,
        rep: None,
    })
}

struct Run {
    cpu_ns: u64,
    wall_ns: u64,
    measured: Written,
    total: Written,
    preload: Option<PreloadStats>,
}

impl Run {
    /// Shuts the pipeline down after measuring (its cost is not part of the result).
    fn finish(self, shutdown: impl FnOnce() -> Result<()>) -> Result<Self> {
        shutdown()?;
        Ok(self)
    }
}

fn run_rounds(
    plan: Plan,
    round: &mut dyn FnMut(usize),
    flush: &dyn Fn() -> Result<()>,
    written: &dyn Fn() -> Written,
) -> Result<Run> {
    let preload = Preload::get();
    let start_written = written();
    for r in 0..plan.warmup_rounds {
        round(r);
        flush()?;
    }
    let before = written();
    let preload_before = preload.map(|p| p.stats());
    let cpu_before = sys::usage().cpu;
    let wall_before = Instant::now();
    for r in plan.warmup_rounds..plan.warmup_rounds + plan.rounds {
        round(r);
        flush()?;
    }
    let wall = wall_before.elapsed();
    let cpu = sys::usage().cpu - cpu_before;
    let after = written();
    let preload_after = preload.map(|p| p.stats());
    Ok(Run {
        cpu_ns: cpu.as_nanos() as u64,
        wall_ns: wall.as_nanos() as u64,
        measured: delta(before, after),
        total: delta(start_written, after),
        preload: stats_delta(preload_before, preload_after),
    })
}
