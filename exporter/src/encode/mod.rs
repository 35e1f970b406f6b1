//! SDK data straight into OTLP protobuf events: pure functions from the SDK's types to
//! encoded buffers, no I/O and no intermediate OTLP messages.
//!
//! Each item (a data point, a span or a log record) is encoded once, directly into the event that will
//! carry it; the resource, each scope and each metric's metadata are encoded once per export
//! and copied into each event that needs them; sizes are exact before anything is written,
//! so no event exceeds the limit (see [`crate::pack`]).

mod common;
pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod trace;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::LogBatch;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::trace::SpanData;

use crate::pack::Packer;

/// The nesting levels of an event that enclose its items, as [`Packer::begin`] numbers them
/// (level 0 is the request itself).
pub(crate) mod level {
    /// `ResourceMetrics` / `ResourceSpans` / `ResourceLogs`.
    pub(crate) const RESOURCE: usize = 1;
    /// `ScopeMetrics` / `ScopeSpans` / `ScopeLogs`.
    pub(crate) const SCOPE: usize = 2;
    /// `Metric`.
    pub(crate) const METRIC: usize = 3;
    /// The metric's data body: `Sum`, `Gauge`, `Histogram`, `ExponentialHistogram`.
    pub(crate) const DATA: usize = 4;
}

/// Items that could not be packed because even alone they exceed the limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Oversize {
    /// `(metric name, span name, or log record event name or scope, items dropped)`, in the
    /// order first seen.
    pub dropped: Vec<(String, usize)>,
}

impl Oversize {
    pub(crate) fn add(&mut self, name: &str) {
        match self.dropped.last_mut() {
            Some((n, count)) if n == name => *count += 1,
            _ => self.dropped.push((name.to_owned(), 1)),
        }
    }

    /// How many items were dropped in all.
    pub fn total(&self) -> usize {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

/// Packs the data points of `metrics` into as few `ExportMetricsServiceRequest`s of at most
/// `limit` bytes as possible, calling `emit(bytes, points)` for each. Points keep their
/// order; a metric's points may be split over several requests, each carrying the full
/// resource, scope and metric metadata.
///
/// This is what [`MetricsExporter`](crate::MetricsExporter) does with each export (reusing
/// its buffers across exports); it is public for benchmarks and for tools that write OTLP
/// from the SDK's data elsewhere.
pub fn pack_metrics(
    metrics: &ResourceMetrics,
    limit: usize,
    mut emit: impl FnMut(&[u8], usize),
) -> Oversize {
    metrics::pack(
        &mut Packer::new(limit),
        metrics,
        &mut emit as &mut dyn FnMut(&[u8], usize),
    )
}

/// Packs `spans` under `resource`, grouped by instrumentation scope, into as few
/// `ExportTraceServiceRequest`s of at most `limit` bytes as possible, calling
/// `emit(bytes, spans)` for each; see [`pack_metrics`].
pub fn pack_spans(
    spans: &[SpanData],
    resource: &Resource,
    limit: usize,
    mut emit: impl FnMut(&[u8], usize),
) -> Oversize {
    trace::pack(
        &mut Packer::new(limit),
        resource,
        spans,
        &mut emit as &mut dyn FnMut(&[u8], usize),
    )
}

/// Packs the log records of `batch` under `resource`, grouped by the scope they are exported
/// under (a record's target, else its logger's scope), into as few `ExportLogsServiceRequest`s
/// of at most `limit` bytes as possible, calling `emit(bytes, records)` for each; see
/// [`pack_metrics`].
pub fn pack_logs(
    batch: &LogBatch<'_>,
    resource: &Resource,
    limit: usize,
    mut emit: impl FnMut(&[u8], usize),
) -> Oversize {
    logs::pack(
        &mut Packer::new(limit),
        resource,
        batch,
        &mut emit as &mut dyn FnMut(&[u8], usize),
    )
}
