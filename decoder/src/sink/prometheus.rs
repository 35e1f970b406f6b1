//! The Prometheus sink (`--prometheus-addr`): the applications' metrics, as they arrive,
//! kept as the series a Prometheus server would scrape from the applications themselves,
//! and served on `http://ADDR/metrics` in the text exposition format (0.0.4).
//!
//! The mapping is the OpenTelemetry specification's "Prometheus and OpenMetrics
//! Compatibility" (OTLP to Prometheus), as the Collector's `prometheus` exporter and its
//! translator implement it:
//!
//! - Names: every run of characters other than `[a-zA-Z0-9]` becomes one `_`; the unit,
//!   in words (`s` → `seconds`, `By` → `bytes`, `ms` → `milliseconds`, `foo/s` →
//!   `foo_per_second`, `{packet}` dropped), is appended unless the name already has it;
//!   monotonic sums end in `_total`; gauges of unit `1` in `_ratio`; a leading digit gets
//!   a `_`.
//! - Labels: the point's attributes, names sanitised the same way (a leading digit or `_`
//!   gets `key`/`key_`), values as text (arrays and maps as JSON, bytes as base64);
//!   attributes that end up with the same name have their values joined with `;` in the
//!   order of their original names. Then the scope: `otel_scope_name`,
//!   `otel_scope_version`, `otel_scope_schema_url`, and each scope attribute as
//!   `otel_scope_<name>`. Then the resource: `job` is `service.namespace/service.name`
//!   (or `service.name`), `instance` is `service.instance.id`; the resource's other
//!   attributes go on one `target_info` gauge (value 1) per job and instance. Later ones
//!   win over a point attribute of the same name.
//! - Types: monotonic sums are counters (delta ones accumulated per series); cumulative
//!   non-monotonic sums and gauges are gauges; histograms are `_bucket{le}`, `_sum` (when
//!   the point has one) and `_count` (delta ones accumulated); summaries are
//!   `{quantile}`, `_sum`, `_count`.
//! - Exponential histograms become classic histograms with the buckets their own bounds
//!   imply: `le` is each positive bucket's upper bound `base^(index+1)`, the zero bucket's
//!   threshold, each negative bucket's upper bound `-base^index`. The text format has no
//!   native histograms (they exist only in Prometheus's protobuf exposition), and these
//!   bounds lose nothing: every observation stays in exactly the bucket it was counted in.
//!   Delta points are accumulated at the coarser of the two scales, and a series is
//!   downscaled whenever it would need more than [`MAX_EXP_BUCKETS`] buckets on either side.
//!
//! Delta, resets and order, per series (same name and labels):
//! - A cumulative point replaces what the series holds, unless it is older than it; a
//!   reset (a new start time, a lower value) passes through as Prometheus expects of a
//!   counter.
//! - A delta point is added when its interval starts at or after the end of the last one
//!   added, so a gap (a quiet interval the SDK did not export, or a restarted process) keeps
//!   the total; an overlapping or older one is dropped (`out_of_order`). Unlike the
//!   Collector, which restarts the series on a gap, the total never goes back.
//! - A point of the other temporality, or a histogram with other bounds than the series'
//!   delta total, restarts the series from that point (a counter reset for Prometheus).
//! - Delta non-monotonic sums are dropped (`delta_updown`), as the specification says: their
//!   running total is only right if every delta since the process started was seen.
//! - A point flagged "no recorded value" removes its series.
//!
//! Memory stays bounded: a series not updated for the staleness window is removed, and a
//! new series beyond the limit is dropped (`series_limit`). Dropped points are counted in
//! the sink's `dropped_items` by reason, next to the other sinks' drops.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{Method, StatusCode};
use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_proto::common::v1::{AnyValue, KeyValue, any_value};
use ue_proto::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint, exponential_histogram_data_point::Buckets, metric::Data,
    number_data_point,
};

use super::{Outcome, SinkError};
use crate::batch::Batch;
use crate::decode::Request;
use crate::exposition::{self, format_float, write_header, write_labels};

/// Where the Prometheus sink listens and how much it keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// The address to serve `/metrics` on, e.g. `0.0.0.0:9465`.
    pub addr: SocketAddr,
    /// A series not updated for this long is removed.
    pub staleness: Duration,
    /// The most series kept (a histogram is one series whatever its buckets; each
    /// `target_info` is one); points of new series beyond it are dropped.
    pub max_series: usize,
}

impl PrometheusConfig {
    /// Serving on `addr`, with a 5-minute staleness window and at most 100,000 series.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            staleness: Duration::from_secs(300),
            max_series: 100_000,
        }
    }
}

/// Why points were dropped: keys of the sink's `dropped_items`.
pub(crate) mod reason {
    /// A new series beyond `max_series`.
    pub(crate) const SERIES_LIMIT: &str = "series_limit";
    /// A family of that name already has another type.
    pub(crate) const TYPE_CONFLICT: &str = "type_conflict";
    /// Older than what the series holds, or (delta) overlapping what it added.
    pub(crate) const OUT_OF_ORDER: &str = "out_of_order";
    /// A delta non-monotonic sum.
    pub(crate) const DELTA_UPDOWN: &str = "delta_updown";
    /// Not a usable point: no name, no temporality, bucket counts that do not match the
    /// bounds, bounds not increasing, a scale out of range.
    pub(crate) const INVALID: &str = "invalid";
}

/// The most buckets an accumulated exponential histogram keeps on each side of zero (the
/// SDK's default maximum size).
pub(crate) const MAX_EXP_BUCKETS: i64 = 160;

/// How often ingesting sweeps stale series (a scrape always does).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The running sink: the series, and the task serving them.
pub(crate) struct PrometheusSink {
    state: Arc<Mutex<Exposition>>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PrometheusSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSink").finish_non_exhaustive()
    }
}

impl Drop for PrometheusSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock(state: &Mutex<Exposition>) -> MutexGuard<'_, Exposition> {
    // Every update leaves the series consistent; a panic while holding the lock could only
    // lose the point being applied.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl PrometheusSink {
    /// Binds `config.addr` now, so a taken address fails the start, and serves it on the
    /// current tokio runtime until the sink is dropped.
    pub(crate) fn start(config: &PrometheusConfig) -> Result<Self, SinkError> {
        let listen = |source| SinkError::Listen {
            addr: config.addr,
            source,
        };
        let listener = std::net::TcpListener::bind(config.addr).map_err(listen)?;
        listener.set_nonblocking(true).map_err(listen)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(listen)?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("prometheus sink on http://{addr}/metrics");
        }
        let state = Arc::new(Mutex::new(Exposition::new(
            config.staleness,
            config.max_series,
        )));
        let served = Arc::clone(&state);
        let server = tokio::spawn(exposition::serve(listener, "prometheus sink", move |req| {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return exposition::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
            }
            match req.uri().path() {
                "/metrics" => exposition::metrics(lock(&served).render(Instant::now())),
                _ => exposition::text(StatusCode::NOT_FOUND, "not found: /metrics\n".into()),
            }
        }));
        Ok(Self { state, server })
    }

    /// Takes a batch's points into the series. Only metrics are expected; anything else is
    /// taken without effect.
    pub(crate) fn send(&self, batch: &Batch) -> Outcome {
        match batch.request() {
            Ok(Request::Metrics(request)) => Outcome::Taken {
                dropped: lock(&self.state).ingest(request, Instant::now()),
            },
            Ok(_) => Outcome::Taken {
                dropped: BTreeMap::new(),
            },
            Err(e) => Outcome::Permanent(format!("decode: {e}")),
        }
    }
}

/// A series' labels, sorted by name, each name once.
type Labels = Vec<(String, String)>;

/// The Prometheus type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
        }
    }
}

/// Every series of one metric name: one `# TYPE`, one `# HELP`.
#[derive(Debug)]
struct Family {
    kind: Kind,
    help: String,
    series: BTreeMap<Labels, Series>,
}

#[derive(Debug)]
struct Series {
    /// When it was last updated, for the staleness sweep.
    seen: Instant,
    /// Delta points accumulated (true) or cumulative points and gauges passed through.
    delta: bool,
    /// The end of the last point taken (ns since the epoch; 0: unknown).
    time: u64,
    value: Value,
}

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Number(f64),
    Histogram(Explicit),
    Exponential(Exponential),
    Summary {
        quantiles: Vec<(f64, f64)>,
        sum: f64,
        count: u64,
    },
}

/// A histogram with explicit bounds: `counts[i]` observations in `(bounds[i-1], bounds[i]]`,
/// the last one above every bound.
#[derive(Clone, Debug, PartialEq)]
struct Explicit {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    count: u64,
    sum: Option<f64>,
}

/// An exponential histogram: bucket `offset + i` of a side counts the observations of
/// magnitude in `(base^(offset+i), base^(offset+i+1)]`, `base = 2^(2^-scale)`.
#[derive(Clone, Debug, PartialEq)]
struct Exponential {
    scale: i32,
    zero_threshold: f64,
    zero_count: u64,
    positive: Side,
    negative: Side,
    count: u64,
    sum: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Side {
    offset: i64,
    counts: Vec<u64>,
}

/// A `target_info` series: one per job and instance.
#[derive(Debug)]
struct Target {
    labels: Labels,
    seen: Instant,
}

/// The series the sink serves. Pure: time comes in as an argument.
#[derive(Debug)]
pub(crate) struct Exposition {
    staleness: Duration,
    max_series: usize,
    families: BTreeMap<String, Family>,
    /// Keyed by the `job` and `instance` labels.
    targets: BTreeMap<Labels, Target>,
    /// Series in `families` and `targets`.
    series: usize,
    next_sweep: Option<Instant>,
}

/// What identifies the series a point goes to.
struct SeriesId<'a> {
    name: &'a str,
    kind: Kind,
    help: &'a str,
    labels: Labels,
}

/// One point, converted.
struct Point {
    start: u64,
    time: u64,
    value: Value,
}

/// `metric.data` temporality.
fn temporality(t: i32) -> Option<bool> {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Delta) => Some(true),
        Ok(AggregationTemporality::Cumulative) => Some(false),
        _ => None,
    }
}

/// The data point flag "no recorded value": the Prometheus staleness marker.
const NO_RECORDED_VALUE: u32 = 1;

impl Exposition {
    pub(crate) fn new(staleness: Duration, max_series: usize) -> Self {
        Self {
            staleness,
            max_series,
            families: BTreeMap::new(),
            targets: BTreeMap::new(),
            series: 0,
            next_sweep: None,
        }
    }

    /// Takes every point of `request` in; returns the points dropped, by reason.
    pub(crate) fn ingest(
        &mut self,
        request: &ExportMetricsServiceRequest,
        now: Instant,
    ) -> BTreeMap<&'static str, u64> {
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.sweep(now);
        }
        let mut dropped = BTreeMap::new();
        for rm in &request.resource_metrics {
            let attributes = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes);
            let (target, info) = resource_labels(attributes);
            if !info.is_empty() {
                self.target(target.clone(), info, now);
            }
            for sm in &rm.scope_metrics {
                let mut scope: Vec<(String, String)> = Vec::new();
                if let Some(s) = &sm.scope {
                    for (k, v) in attribute_labels(&s.attributes) {
                        scope.push((format!("otel_scope_{k}"), v));
                    }
                    push_nonempty(&mut scope, "otel_scope_name", &s.name);
                    push_nonempty(&mut scope, "otel_scope_version", &s.version);
                }
                push_nonempty(&mut scope, "otel_scope_schema_url", &sm.schema_url);
                let common: Vec<_> = scope.into_iter().chain(target.iter().cloned()).collect();
                for metric in &sm.metrics {
                    self.metric(metric, &common, now, &mut dropped);
                }
            }
        }
        dropped
    }

    fn metric(
        &mut self,
        metric: &Metric,
        common: &[(String, String)],
        now: Instant,
        dropped: &mut BTreeMap<&'static str, u64>,
    ) {
        let mut drop_all = |reason: &'static str| {
            *dropped.entry(reason).or_default() += metric.point_count() as u64;
        };
        let Some(data) = &metric.data else {
            return;
        };
        let (kind, delta) = match data {
            Data::Gauge(_) => (Kind::Gauge, false),
            Data::Sum(s) => match (temporality(s.aggregation_temporality), s.is_monotonic) {
                (Some(delta), true) => (Kind::Counter, delta),
                (Some(false), false) => (Kind::Gauge, false),
                (Some(true), false) => return drop_all(reason::DELTA_UPDOWN),
                (None, _) => return drop_all(reason::INVALID),
            },
            Data::Histogram(h) => match temporality(h.aggregation_temporality) {
                Some(delta) => (Kind::Histogram, delta),
                None => return drop_all(reason::INVALID),
            },
            Data::ExponentialHistogram(h) => match temporality(h.aggregation_temporality) {
                Some(delta) => (Kind::Histogram, delta),
                None => return drop_all(reason::INVALID),
            },
            Data::Summary(_) => (Kind::Summary, false),
        };
        let name = metric_name(&metric.name, &metric.unit, kind);
        if name.is_empty() {
            return drop_all(reason::INVALID);
        }
        if name == "target_info" {
            return drop_all(reason::TYPE_CONFLICT);
        }
        // `le` and `quantile` are the exposition's own: a point attribute of that name is
        // renamed as Prometheus renames clashing target labels.
        let reserved = match kind {
            Kind::Histogram => "le",
            Kind::Summary => "quantile",
            Kind::Counter | Kind::Gauge => "",
        };
        let mut apply = |attributes: &[KeyValue], flags: u32, point: Result<Point, ()>| {
            let mut labels = attribute_labels(attributes);
            if let Some(l) = labels.iter_mut().find(|(k, _)| k == reserved) {
                l.0 = format!("exported_{reserved}");
            }
            let labels = merge_labels(labels, common);
            let id = SeriesId {
                name: &name,
                kind,
                help: &metric.description,
                labels,
            };
            let result = if flags & NO_RECORDED_VALUE != 0 {
                self.remove(&id);
                Ok(())
            } else {
                match point {
                    Ok(point) => self.apply(id, point, delta, now),
                    Err(()) => Err(reason::INVALID),
                }
            };
            if let Err(reason) = result {
                *dropped.entry(reason).or_default() += 1;
            }
        };
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    apply(&p.attributes, p.flags, Ok(number(p)));
                }
            }
            Data::Sum(s) => {
                for p in &s.data_points {
                    apply(&p.attributes, p.flags, Ok(number(p)));
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    apply(&p.attributes, p.flags, explicit(p));
                }
            }
            Data::ExponentialHistogram(h) => {
                for p in &h.data_points {
                    apply(&p.attributes, p.flags, exponential(p));
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    apply(&p.attributes, p.flags, Ok(summary(p)));
                }
            }
        }
    }

    /// Applies `point` to its series, creating it if there is room.
    fn apply(
        &mut self,
        id: SeriesId<'_>,
        point: Point,
        delta: bool,
        now: Instant,
    ) -> Result<(), &'static str> {
        let full = self.series >= self.max_series;
        let family = self
            .families
            .entry(id.name.to_owned())
            .or_insert_with(|| Family {
                kind: id.kind,
                help: String::new(),
                series: BTreeMap::new(),
            });
        if family.kind != id.kind {
            return Err(reason::TYPE_CONFLICT);
        }
        if let Some(series) = family.series.get_mut(&id.labels) {
            series.update(point, delta)?;
            series.seen = now;
        } else if full {
            if family.series.is_empty() {
                self.families.remove(id.name);
            }
            return Err(reason::SERIES_LIMIT);
        } else {
            family.series.insert(
                id.labels,
                Series {
                    seen: now,
                    delta,
                    time: point.time,
                    value: point.value,
                },
            );
            self.series += 1;
        }
        // The first description seen names the family; later different ones are ignored
        // rather than repeated (one HELP per family).
        if family.help.is_empty() && !id.help.is_empty() {
            family.help = id.help.to_owned();
        }
        Ok(())
    }

    fn remove(&mut self, id: &SeriesId<'_>) {
        if let Some(family) = self.families.get_mut(id.name)
            && family.kind == id.kind
            && family.series.remove(&id.labels).is_some()
        {
            self.series -= 1;
            if family.series.is_empty() {
                self.families.remove(id.name);
            }
        }
    }

    /// Keeps (or refreshes) the `target_info` of a job and instance.
    fn target(&mut self, key: Labels, info: Labels, now: Instant) {
        let labels = merge_labels(info, &key);
        if let Some(t) = self.targets.get_mut(&key) {
            t.labels = labels;
            t.seen = now;
        } else if self.series < self.max_series {
            self.targets.insert(key, Target { labels, seen: now });
            self.series += 1;
        } else {
            tracing::debug!("prometheus sink: no room for another target_info");
        }
    }

    /// Removes every series not updated within the staleness window.
    pub(crate) fn sweep(&mut self, now: Instant) {
        let window = self.staleness;
        let fresh = |seen: Instant| now.saturating_duration_since(seen) <= window;
        for family in self.families.values_mut() {
            family.series.retain(|_, s| fresh(s.seen));
        }
        self.families.retain(|_, f| !f.series.is_empty());
        self.targets.retain(|_, t| fresh(t.seen));
        self.series = self.targets.len()
            + self
                .families
                .values()
                .map(|f| f.series.len())
                .sum::<usize>();
        self.next_sweep = Some(now + SWEEP_EVERY);
    }

    /// Series kept now (a histogram counts once; `target_info` ones included).
    #[cfg(test)]
    pub(crate) fn series(&self) -> usize {
        self.series
    }

    /// Every series in the text format, after sweeping the stale ones.
    pub(crate) fn render(&mut self, now: Instant) -> String {
        self.sweep(now);
        let mut out = String::new();
        for (name, family) in &self.families {
            write_header(&mut out, name, family.kind.as_str(), &family.help);
            for (labels, series) in &family.series {
                series.value.render(&mut out, name, labels);
            }
        }
        if !self.targets.is_empty() {
            write_header(&mut out, "target_info", "gauge", "Target metadata");
            for target in self.targets.values() {
                sample(&mut out, "target_info", &target.labels, None, 1.0);
            }
        }
        out
    }
}

impl Series {
    fn update(&mut self, point: Point, delta: bool) -> Result<(), &'static str> {
        let same_kind = std::mem::discriminant(&self.value) == std::mem::discriminant(&point.value);
        if self.delta != delta || !same_kind {
            return self.restart(point, delta);
        }
        if !delta {
            if point.time != 0 && point.time < self.time {
                return Err(reason::OUT_OF_ORDER);
            }
            self.time = point.time;
            self.value = point.value;
            return Ok(());
        }
        // A delta point's interval must start at or after the end of the last one added.
        let overlaps = if point.start != 0 {
            point.start < self.time
        } else {
            point.time != 0 && point.time <= self.time
        };
        if overlaps {
            return Err(reason::OUT_OF_ORDER);
        }
        let time = point.time;
        match (&mut self.value, point.value) {
            (Value::Number(total), Value::Number(v)) => *total += v,
            (Value::Histogram(total), Value::Histogram(h)) => {
                if total.bounds != h.bounds {
                    return self.restart(
                        Point {
                            start: point.start,
                            time,
                            value: Value::Histogram(h),
                        },
                        delta,
                    );
                }
                for (t, c) in total.counts.iter_mut().zip(&h.counts) {
                    *t += c;
                }
                total.count += h.count;
                total.sum = total.sum.zip(h.sum).map(|(a, b)| a + b);
            }
            (Value::Exponential(total), Value::Exponential(e)) => total.add(&e),
            // Summaries are cumulative only; kinds differ is handled above.
            (_, value) => self.value = value,
        }
        self.time = time;
        Ok(())
    }

    fn restart(&mut self, point: Point, delta: bool) -> Result<(), &'static str> {
        self.delta = delta;
        self.time = point.time;
        self.value = point.value;
        Ok(())
    }
}

fn number(p: &NumberDataPoint) -> Point {
    let value = match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => 0.0,
    };
    Point {
        start: p.start_time_unix_nano,
        time: p.time_unix_nano,
        value: Value::Number(value),
    }
}

fn explicit(p: &HistogramDataPoint) -> Result<Point, ()> {
    let increasing = p.explicit_bounds.windows(2).all(|w| w[0] < w[1]);
    let finite = p.explicit_bounds.iter().all(|b| b.is_finite());
    // No buckets at all is allowed (count and sum only).
    let matching =
        p.bucket_counts.is_empty() || p.bucket_counts.len() == p.explicit_bounds.len() + 1;
    if !(increasing && finite && matching) {
        return Err(());
    }
    let (bounds, counts) = if p.bucket_counts.is_empty() {
        (Vec::new(), vec![p.count])
    } else {
        (p.explicit_bounds.clone(), p.bucket_counts.clone())
    };
    Ok(Point {
        start: p.start_time_unix_nano,
        time: p.time_unix_nano,
        value: Value::Histogram(Explicit {
            bounds,
            counts,
            count: p.count,
            sum: p.sum,
        }),
    })
}

/// The scales OTLP allows.
const SCALES: std::ops::RangeInclusive<i32> = -10..=20;

fn exponential(p: &ExponentialHistogramDataPoint) -> Result<Point, ()> {
    let usable =
        SCALES.contains(&p.scale) && p.zero_threshold >= 0.0 && p.zero_threshold.is_finite();
    if !usable {
        return Err(());
    }
    let side = |b: &Option<Buckets>| {
        b.as_ref().map_or_else(Side::default, |b| Side {
            offset: i64::from(b.offset),
            counts: b.bucket_counts.clone(),
        })
    };
    let mut e = Exponential {
        scale: p.scale,
        zero_threshold: p.zero_threshold,
        zero_count: p.zero_count,
        positive: side(&p.positive),
        negative: side(&p.negative),
        count: p.count,
        sum: p.sum,
    };
    e.fit();
    Ok(Point {
        start: p.start_time_unix_nano,
        time: p.time_unix_nano,
        value: Value::Exponential(e),
    })
}

fn summary(p: &SummaryDataPoint) -> Point {
    let mut quantiles: Vec<(f64, f64)> = p
        .quantile_values
        .iter()
        .map(|q| (q.quantile, q.value))
        .collect();
    quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
    quantiles.dedup_by(|a, b| a.0 == b.0);
    Point {
        start: p.start_time_unix_nano,
        time: p.time_unix_nano,
        value: Value::Summary {
            quantiles,
            sum: p.sum,
            count: p.count,
        },
    }
}

impl Side {
    /// The lowest and highest index holding a bucket, if any.
    fn range(&self) -> Option<(i64, i64)> {
        (!self.counts.is_empty()).then(|| (self.offset, self.offset + self.counts.len() as i64 - 1))
    }

    /// The same counts at a scale `by` lower: `2^by` buckets become one.
    fn downscale(&mut self, by: u32) {
        if by == 0 || self.counts.is_empty() {
            return;
        }
        let offset = self.offset >> by;
        let last = (self.offset + self.counts.len() as i64 - 1) >> by;
        let mut counts = vec![0; (last - offset + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            counts[(((self.offset + i as i64) >> by) - offset) as usize] += c;
        }
        self.offset = offset;
        self.counts = counts;
    }

    /// Adds `other`'s counts, at the same scale, to these.
    fn add(&mut self, other: &Side) {
        let Some((lo, hi)) = other.range() else {
            return;
        };
        let Some((my_lo, my_hi)) = self.range() else {
            *self = other.clone();
            return;
        };
        let (lo, hi) = (lo.min(my_lo), hi.max(my_hi));
        let mut counts = vec![0; (hi - lo + 1) as usize];
        for side in [&*self, other] {
            for (i, c) in side.counts.iter().enumerate() {
                counts[(side.offset + i as i64 - lo) as usize] += c;
            }
        }
        self.offset = lo;
        self.counts = counts;
    }
}

/// How many scale steps down make buckets `lo..=hi` fit in [`MAX_EXP_BUCKETS`].
fn steps_to_fit(range: Option<(i64, i64)>) -> u32 {
    let Some((mut lo, mut hi)) = range else {
        return 0;
    };
    let mut steps = 0;
    while hi - lo + 1 > MAX_EXP_BUCKETS {
        lo >>= 1;
        hi >>= 1;
        steps += 1;
    }
    steps
}

fn union(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (x, None) | (None, x) => x,
    }
}

impl Exponential {
    /// Lowers the scale by `by`.
    fn downscale(&mut self, by: u32) {
        self.positive.downscale(by);
        self.negative.downscale(by);
        self.scale -= by as i32;
    }

    /// Downscales until each side fits in [`MAX_EXP_BUCKETS`] buckets, before allocating:
    /// offsets come from the application and may be far apart.
    fn fit(&mut self) {
        let by = steps_to_fit(self.positive.range()).max(steps_to_fit(self.negative.range()));
        self.downscale(by);
    }

    /// Adds a delta point at the coarser of the two scales.
    fn add(&mut self, other: &Exponential) {
        let mut other = other.clone();
        let scale = self.scale.min(other.scale);
        self.downscale((self.scale - scale) as u32);
        other.downscale((other.scale - scale) as u32);
        // Downscale both first if their union would not fit.
        let fit = |a: &Side, b: &Side| steps_to_fit(union(a.range(), b.range()));
        let by = fit(&self.positive, &other.positive).max(fit(&self.negative, &other.negative));
        self.downscale(by);
        other.downscale(by);
        self.positive.add(&other.positive);
        self.negative.add(&other.negative);
        self.zero_count += other.zero_count;
        self.zero_threshold = self.zero_threshold.max(other.zero_threshold);
        self.count += other.count;
        self.sum = self.sum.zip(other.sum).map(|(a, b)| a + b);
    }

    /// `base^index`, the lower bound of bucket `index` (in magnitude).
    fn bound(&self, index: i64) -> f64 {
        if self.scale <= 0 {
            // Exact: a power of two.
            let exp = index.saturating_mul(1i64 << -self.scale);
            2f64.powi(exp.clamp(-2000, 2000) as i32)
        } else {
            2f64.powf(index as f64 / f64::from(1 << self.scale))
        }
    }

    /// The explicit buckets its own bounds imply, from the most negative up: `(le, count)`.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let mut out =
            Vec::with_capacity(self.negative.counts.len() + self.positive.counts.len() + 1);
        for (i, c) in self.negative.counts.iter().enumerate().rev() {
            out.push((-self.bound(self.negative.offset + i as i64), *c));
        }
        out.push((self.zero_threshold, self.zero_count));
        for (i, c) in self.positive.counts.iter().enumerate() {
            out.push((self.bound(self.positive.offset + i as i64 + 1), *c));
        }
        out
    }
}

impl Value {
    fn render(&self, out: &mut String, name: &str, labels: &Labels) {
        match self {
            Self::Number(v) => sample(out, name, labels, None, *v),
            Self::Histogram(h) => {
                let buckets: Vec<(f64, u64)> = h
                    .bounds
                    .iter()
                    .copied()
                    .zip(h.counts.iter().copied())
                    .collect();
                histogram(out, name, labels, &buckets, h.count, h.sum);
            }
            Self::Exponential(e) => histogram(out, name, labels, &e.buckets(), e.count, e.sum),
            Self::Summary {
                quantiles,
                sum,
                count,
            } => {
                for (q, v) in quantiles {
                    sample(out, name, labels, Some(("quantile", *q)), *v);
                }
                sample(out, &format!("{name}_sum"), labels, None, *sum);
                sample(out, &format!("{name}_count"), labels, None, *count as f64);
            }
        }
    }
}

/// `_bucket` lines for `buckets` (`(le, count)`, increasing `le`) and `+Inf`, then `_sum`
/// and `_count`. A bound that is not finite or not above the previous one (exponential
/// bounds far out, where `f64` runs out) gets no line: its count goes to the next one.
fn histogram(
    out: &mut String,
    name: &str,
    labels: &Labels,
    buckets: &[(f64, u64)],
    count: u64,
    sum: Option<f64>,
) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    let mut previous = f64::NEG_INFINITY;
    for (le, c) in buckets {
        cumulative = cumulative.saturating_add(*c);
        if le.is_finite() && *le > previous {
            sample(out, &bucket, labels, Some(("le", *le)), cumulative as f64);
            previous = *le;
        }
    }
    sample(
        out,
        &bucket,
        labels,
        Some(("le", f64::INFINITY)),
        count as f64,
    );
    if let Some(sum) = sum {
        sample(out, &format!("{name}_sum"), labels, None, sum);
    }
    sample(out, &format!("{name}_count"), labels, None, count as f64);
}

/// One sample line; `extra` (`le` or `quantile`) goes after the series' labels.
fn sample(out: &mut String, name: &str, labels: &Labels, extra: Option<(&str, f64)>, value: f64) {
    out.push_str(name);
    let extra = extra.map(|(k, v)| (k, format_float(v)));
    write_labels(
        out,
        labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.as_ref().map(|(k, v)| (*k, v.as_str()))),
    );
    out.push(' ');
    out.push_str(&format_float(value));
    out.push('\n');
}

fn push_nonempty(labels: &mut Vec<(String, String)>, name: &str, value: &str) {
    if !value.is_empty() {
        labels.push((name.to_owned(), value.to_owned()));
    }
}

/// `labels` with `over` set on top (replacing a label of the same name), sorted by name.
fn merge_labels(labels: Labels, over: &[(String, String)]) -> Labels {
    let mut map: BTreeMap<String, String> = labels.into_iter().collect();
    for (k, v) in over {
        map.insert(k.clone(), v.clone());
    }
    map.into_iter().collect()
}

/// A resource's `job` and `instance` labels, and the labels of its `target_info` (its other
/// attributes; empty when it has none).
fn resource_labels(attributes: &[KeyValue]) -> (Labels, Labels) {
    let get = |key: &str| {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(attribute_text)
            .filter(|v| !v.is_empty())
    };
    let mut target = Vec::new();
    if let Some(name) = get("service.name") {
        let job = match get("service.namespace") {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        };
        target.push(("job".to_owned(), job));
    }
    if let Some(instance) = get("service.instance.id") {
        target.push(("instance".to_owned(), instance));
    }
    let others: Vec<KeyValue> = attributes
        .iter()
        .filter(|kv| {
            !matches!(
                kv.key.as_str(),
                "service.name" | "service.namespace" | "service.instance.id"
            )
        })
        .cloned()
        .collect();
    (target, attribute_labels(&others))
}

/// Attributes as labels: names sanitised, values as text, values of attributes whose
/// names collide joined with `;` in the order of the original names; sorted by name.
fn attribute_labels(attributes: &[KeyValue]) -> Labels {
    let mut by_name: BTreeMap<String, Vec<(&str, String)>> = BTreeMap::new();
    for kv in attributes {
        let name = label_name(&kv.key);
        if name.is_empty() {
            continue;
        }
        let value = kv.value.as_ref().map(attribute_text).unwrap_or_default();
        by_name.entry(name).or_default().push((&kv.key, value));
    }
    by_name
        .into_iter()
        .map(|(name, mut values)| {
            values.sort_by(|a, b| a.0.cmp(b.0));
            let joined: Vec<String> = values.into_iter().map(|(_, v)| v).collect();
            (name, joined.join(";"))
        })
        .collect()
}

/// Runs of characters other than `[a-zA-Z0-9]` as one `_`.
fn underscored(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

/// An attribute name as a label name (`[a-zA-Z_][a-zA-Z0-9_]*`, never the reserved `__`
/// prefix): invalid characters as `_`, runs of `_` as one, a leading digit prefixed with
/// `key_` and a leading `_` with `key`, as the Collector's translator does.
fn label_name(key: &str) -> String {
    let s = underscored(key);
    match s.chars().next() {
        Some(c) if c.is_ascii_digit() => format!("key_{s}"),
        Some('_') if s.len() > 1 => format!("key{s}"),
        Some('_') => String::new(),
        _ => s,
    }
}

/// An attribute value as label text: strings as they are, other scalars as text, arrays
/// and maps as JSON, bytes as base64 (the OpenTelemetry attribute rules).
pub(crate) fn attribute_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format_float(*d),
        Some(any_value::Value::BytesValue(b)) => {
            base64::engine::general_purpose::STANDARD.encode(b)
        }
        Some(any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)) => {
            json(v).to_string()
        }
        _ => String::new(),
    }
}

fn json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or_else(|| J::String(format_float(*d)), J::Number)
        }
        Some(any_value::Value::BytesValue(b)) => {
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(any_value::Value::ArrayValue(a)) => J::Array(a.values.iter().map(json).collect()),
        Some(any_value::Value::KvlistValue(m)) => J::Object(
            m.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(J::Null, json)))
                .collect(),
        ),
        _ => J::Null,
    }
}

/// OTLP units in the words Prometheus names use (the Collector translator's table).
fn unit_word(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

/// The unit after `/`, in the singular word of `_per_<word>`.
fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// `unit` without its `{...}` annotations, trimmed.
fn without_annotations(unit: &str) -> String {
    let mut out = String::new();
    let mut depth = 0u32;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_owned()
}

/// The Prometheus name of an OTLP metric (see the module docs); empty if nothing usable is
/// left.
fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let words = |s: &str| -> Vec<String> {
        underscored(s)
            .split('_')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut tokens = words(name);
    if tokens.is_empty() {
        return String::new();
    }
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m, Some(p)),
        None => (unit, None),
    };
    let main = underscored(unit_word(&without_annotations(main)))
        .trim_matches('_')
        .to_owned();
    if !main.is_empty() && !tokens.contains(&main) {
        tokens.extend(words(&main));
    }
    if let Some(per) = per {
        let per = underscored(per_unit_word(&without_annotations(per)))
            .trim_matches('_')
            .to_owned();
        if !per.is_empty() && !tokens.contains(&per) {
            tokens.push("per".into());
            tokens.extend(words(&per));
        }
    }
    match kind {
        Kind::Counter => {
            tokens.retain(|t| t != "total");
            tokens.push("total".into());
        }
        // Only gauges: unit 1 on a counter is far more often "a count" than a ratio (the
        // Collector's translator makes the same exception).
        Kind::Gauge if unit == "1" => {
            tokens.retain(|t| t != "ratio");
            tokens.push("ratio".into());
        }
        _ => {}
    }
    let joined = tokens.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use ue_proto::common::v1::{ArrayValue, InstrumentationScope};
    use ue_proto::metrics::v1::{
        ExponentialHistogram, Gauge, Histogram, ResourceMetrics, ScopeMetrics, Sum, Summary,
        summary_data_point::ValueAtQuantile,
    };
    use ue_proto::resource::v1::Resource;

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn s(key: &str, value: &str) -> KeyValue {
        kv(key, any_value::Value::StringValue(value.into()))
    }

    /// A request of `metrics` from service `svc` instance `i1`, scope `lib` 1.0.
    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        s("service.name", "svc"),
                        s("service.instance.id", "i1"),
                        s("host.name", "h"),
                    ],
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1.0".into(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn point(start: u64, time: u64, v: i64, attrs: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(number_data_point::Value::AsInt(v)),
            ..NumberDataPoint::default()
        }
    }

    fn sum(
        name: &str,
        unit: &str,
        delta: bool,
        monotonic: bool,
        points: Vec<NumberDataPoint>,
    ) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            description: "how many".into(),
            data: Some(Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: if delta {
                    AggregationTemporality::Delta
                } else {
                    AggregationTemporality::Cumulative
                } as i32,
                is_monotonic: monotonic,
            })),
            ..Metric::default()
        }
    }

    fn gauge(name: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(Data::Gauge(Gauge {
                data_points: points,
            })),
            ..Metric::default()
        }
    }

    fn hist(name: &str, delta: bool, start: u64, time: u64, counts: Vec<u64>, sum: f64) -> Metric {
        Metric {
            name: name.into(),
            unit: "s".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count: counts.iter().sum(),
                    sum: Some(sum),
                    bucket_counts: counts,
                    explicit_bounds: vec![0.1, 1.0, 5.0],
                    ..HistogramDataPoint::default()
                }],
                aggregation_temporality: if delta {
                    AggregationTemporality::Delta
                } else {
                    AggregationTemporality::Cumulative
                } as i32,
            })),
            ..Metric::default()
        }
    }

    const LABELS: &str =
        "instance=\"i1\",job=\"svc\",otel_scope_name=\"lib\",otel_scope_version=\"1.0\"";

    fn state() -> Exposition {
        Exposition::new(Duration::from_secs(300), 1000)
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn names_follow_the_specification() {
        let cases = [
            (
                "http.server.request.duration",
                "s",
                Kind::Histogram,
                "http_server_request_duration_seconds",
            ),
            ("requests", "1", Kind::Counter, "requests_total"),
            ("requests_total", "", Kind::Counter, "requests_total"),
            ("total.requests", "", Kind::Counter, "requests_total"),
            (
                "system.memory.utilization",
                "1",
                Kind::Gauge,
                "system_memory_utilization_ratio",
            ),
            (
                "system.filesystem.usage",
                "By",
                Kind::Gauge,
                "system_filesystem_usage_bytes",
            ),
            (
                "system.network.dropped",
                "{packets}",
                Kind::Counter,
                "system_network_dropped_total",
            ),
            (
                "system.network.dropped",
                "packets",
                Kind::Gauge,
                "system_network_dropped_packets",
            ),
            (
                "throughput",
                "By/s",
                Kind::Gauge,
                "throughput_bytes_per_second",
            ),
            ("rate", "{request}/s", Kind::Gauge, "rate_per_second"),
            ("latency_seconds", "s", Kind::Histogram, "latency_seconds"),
            ("bytes.sent", "By", Kind::Counter, "bytes_sent_total"),
            ("network.io", "By", Kind::Counter, "network_io_bytes_total"),
            (
                "(lambda).function.executions(#)",
                "",
                Kind::Gauge,
                "lambda_function_executions",
            ),
            ("db.size", "MiBy", Kind::Gauge, "db_size_mebibytes"),
            ("temp", "Cel", Kind::Gauge, "temp_celsius"),
            ("2xx.responses", "", Kind::Counter, "_2xx_responses_total"),
            ("ok", "ms", Kind::Summary, "ok_milliseconds"),
            ("...", "", Kind::Gauge, ""),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                metric_name(name, unit, kind),
                want,
                "{name} {unit} {kind:?}"
            );
        }
    }

    #[test]
    fn label_names_are_sanitised_and_colliding_values_joined() {
        assert_eq!(label_name("http.request.method"), "http_request_method");
        assert_eq!(label_name("1st"), "key_1st");
        assert_eq!(label_name("_private"), "key_private");
        assert_eq!(label_name("__x"), "key_x");
        assert_eq!(label_name("a..b"), "a_b");
        assert_eq!(label_name("ünï"), "key_n_");
        let labels = attribute_labels(&[
            s("a_b", "2"),
            s("a.b", "1"),
            kv("flag", any_value::Value::BoolValue(true)),
            kv("n", any_value::Value::IntValue(-3)),
            kv("x", any_value::Value::DoubleValue(0.25)),
            kv(
                "list",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(any_value::Value::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(any_value::Value::StringValue("b".into())),
                        },
                    ],
                }),
            ),
            kv("raw", any_value::Value::BytesValue(vec![0, 1, 2])),
        ]);
        assert_eq!(
            labels,
            [
                ("a_b", "1;2"),
                ("flag", "true"),
                ("list", "[1,\"b\"]"),
                ("n", "-3"),
                ("raw", "AAEC"),
                ("x", "0.25"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn delta_sums_accumulate_into_counters_and_cumulative_ones_pass_through() {
        let mut e = state();
        let now = Instant::now();
        let a = vec![s("http.method", "GET")];
        for (start, time, v) in [(0, 10, 5), (10, 20, 3), (25, 30, 2)] {
            let m = sum(
                "requests",
                "{request}",
                true,
                true,
                vec![point(start, time, v, a.clone())],
            );
            assert!(e.ingest(&request(vec![m]), now).is_empty());
        }
        let cumulative = sum(
            "network.io",
            "By",
            false,
            true,
            vec![point(1, 10, 700, vec![])],
        );
        e.ingest(&request(vec![cumulative]), now);
        let text = e.render(now);
        assert!(
            text.contains("# HELP requests_total how many\n# TYPE requests_total counter\n"),
            "{text}"
        );
        let want = format!("requests_total{{http_method=\"GET\",{LABELS}}} 10");
        assert!(lines(&text).contains(&want.as_str()), "{text}");
        assert!(
            lines(&text).contains(&format!("network_io_bytes_total{{{LABELS}}} 700").as_str()),
            "{text}"
        );
    }

    #[test]
    fn overlapping_and_older_points_are_dropped_and_counted() {
        let mut e = state();
        let now = Instant::now();
        let d = |start, time, v| {
            request(vec![sum(
                "c",
                "",
                true,
                true,
                vec![point(start, time, v, vec![])],
            )])
        };
        assert!(e.ingest(&d(0, 10, 5), now).is_empty());
        // Overlaps [0, 10]: a duplicate, not new counts.
        assert_eq!(
            e.ingest(&d(5, 15, 1), now),
            [(reason::OUT_OF_ORDER, 1)].into()
        );
        let c = |time, v| {
            request(vec![sum(
                "g",
                "",
                false,
                true,
                vec![point(1, time, v, vec![])],
            )])
        };
        e.ingest(&c(20, 9), now);
        assert_eq!(e.ingest(&c(19, 8), now), [(reason::OUT_OF_ORDER, 1)].into());
        // A reset (new start, lower value) passes through.
        let reset = request(vec![sum(
            "g",
            "",
            false,
            true,
            vec![point(21, 22, 1, vec![])],
        )]);
        assert!(e.ingest(&reset, now).is_empty());
        let text = e.render(now);
        assert!(
            lines(&text).contains(&format!("c_total{{{LABELS}}} 5").as_str()),
            "{text}"
        );
        assert!(
            lines(&text).contains(&format!("g_total{{{LABELS}}} 1").as_str()),
            "{text}"
        );
    }

    #[test]
    fn gauges_non_monotonic_sums_and_a_change_of_temporality() {
        let mut e = state();
        let now = Instant::now();
        let m = vec![
            gauge("cpu.utilization", "1", vec![point(0, 10, 1, vec![])]),
            sum(
                "queue.size",
                "{item}",
                false,
                false,
                vec![point(1, 10, -4, vec![])],
            ),
            sum(
                "updown",
                "",
                true,
                false,
                vec![point(1, 10, 1, vec![]), point(10, 20, 1, vec![])],
            ),
        ];
        assert_eq!(
            e.ingest(&request(m), now),
            [(reason::DELTA_UPDOWN, 2)].into()
        );
        let text = e.render(now);
        assert!(
            text.contains("# TYPE cpu_utilization_ratio gauge\n"),
            "{text}"
        );
        assert!(
            lines(&text).contains(&format!("queue_size{{{LABELS}}} -4").as_str()),
            "{text}"
        );
        assert!(!text.contains("updown"), "{text}");
        // A counter switching from delta to cumulative restarts from the cumulative value.
        e.ingest(
            &request(vec![sum(
                "x",
                "",
                true,
                true,
                vec![point(0, 10, 5, vec![])],
            )]),
            now,
        );
        e.ingest(
            &request(vec![sum(
                "x",
                "",
                false,
                true,
                vec![point(0, 20, 3, vec![])],
            )]),
            now,
        );
        assert!(lines(&e.render(now)).contains(&format!("x_total{{{LABELS}}} 3").as_str()));
    }

    #[test]
    fn histograms_render_cumulative_buckets_and_delta_ones_accumulate() {
        let mut e = state();
        let now = Instant::now();
        e.ingest(
            &request(vec![hist("latency", true, 0, 10, vec![1, 2, 3, 4], 20.5)]),
            now,
        );
        e.ingest(
            &request(vec![hist("latency", true, 10, 20, vec![0, 1, 0, 1], 9.5)]),
            now,
        );
        let text = e.render(now);
        assert!(
            text.contains("# TYPE latency_seconds histogram\n"),
            "{text}"
        );
        for want in [
            format!("latency_seconds_bucket{{{LABELS},le=\"0.1\"}} 1"),
            format!("latency_seconds_bucket{{{LABELS},le=\"1\"}} 4"),
            format!("latency_seconds_bucket{{{LABELS},le=\"5\"}} 7"),
            format!("latency_seconds_bucket{{{LABELS},le=\"+Inf\"}} 12"),
            format!("latency_seconds_sum{{{LABELS}}} 30"),
            format!("latency_seconds_count{{{LABELS}}} 12"),
        ] {
            assert!(lines(&text).contains(&want.as_str()), "{want}\n{text}");
        }
        // Cumulative: the latest replaces.
        e.ingest(
            &request(vec![hist("c", false, 1, 10, vec![1, 0, 0, 0], 0.05)]),
            now,
        );
        e.ingest(
            &request(vec![hist("c", false, 1, 20, vec![2, 0, 0, 1], 7.0)]),
            now,
        );
        let text = e.render(now);
        assert!(
            lines(&text).contains(&format!("c_seconds_bucket{{{LABELS},le=\"5\"}} 2").as_str()),
            "{text}"
        );
        assert!(
            lines(&text).contains(&format!("c_seconds_count{{{LABELS}}} 3").as_str()),
            "{text}"
        );
        // Counts that do not match the bounds are invalid.
        let bad = hist("bad", false, 1, 10, vec![1, 2], 1.0);
        assert_eq!(
            e.ingest(&request(vec![bad]), now),
            [(reason::INVALID, 1)].into()
        );
    }

    fn exp_point(
        start: u64,
        time: u64,
        scale: i32,
        offset: i32,
        counts: Vec<u64>,
        zero: u64,
    ) -> ExponentialHistogramDataPoint {
        ExponentialHistogramDataPoint {
            start_time_unix_nano: start,
            time_unix_nano: time,
            count: counts.iter().sum::<u64>() + zero,
            sum: Some(1.0),
            scale,
            zero_count: zero,
            positive: Some(Buckets {
                offset,
                bucket_counts: counts,
            }),
            ..ExponentialHistogramDataPoint::default()
        }
    }

    fn exp_metric(delta: bool, points: Vec<ExponentialHistogramDataPoint>) -> Metric {
        Metric {
            name: "size".into(),
            data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: points,
                aggregation_temporality: if delta {
                    AggregationTemporality::Delta
                } else {
                    AggregationTemporality::Cumulative
                } as i32,
            })),
            ..Metric::default()
        }
    }

    #[test]
    fn exponential_histograms_become_the_buckets_their_bounds_imply() {
        let mut e = state();
        let now = Instant::now();
        // Scale 0: base 2; buckets 1..=3 are (2,4], (4,8], (8,16].
        let p = exp_point(0, 10, 0, 1, vec![1, 2, 3], 1);
        assert!(
            e.ingest(&request(vec![exp_metric(false, vec![p])]), now)
                .is_empty()
        );
        let text = e.render(now);
        for want in [
            format!("size_bucket{{{LABELS},le=\"0\"}} 1"),
            format!("size_bucket{{{LABELS},le=\"4\"}} 2"),
            format!("size_bucket{{{LABELS},le=\"8\"}} 4"),
            format!("size_bucket{{{LABELS},le=\"16\"}} 7"),
            format!("size_bucket{{{LABELS},le=\"+Inf\"}} 7"),
            format!("size_count{{{LABELS}}} 7"),
        ] {
            assert!(lines(&text).contains(&want.as_str()), "{want}\n{text}");
        }
    }

    #[test]
    fn delta_exponential_histograms_merge_at_the_coarser_scale() {
        let mut e = state();
        let now = Instant::now();
        // Scale 1: base √2; index 2 is (2, 2√2], index 3 (2√2, 4].
        let fine = exp_point(0, 10, 1, 2, vec![1, 1], 0);
        // Scale 0: index 1 is (2, 4].
        let coarse = exp_point(10, 20, 0, 1, vec![5], 0);
        e.ingest(&request(vec![exp_metric(true, vec![fine])]), now);
        e.ingest(&request(vec![exp_metric(true, vec![coarse])]), now);
        let text = e.render(now);
        assert!(
            lines(&text).contains(&format!("size_bucket{{{LABELS},le=\"4\"}} 7").as_str()),
            "{text}"
        );
        assert!(
            lines(&text).contains(&format!("size_count{{{LABELS}}} 7").as_str()),
            "{text}"
        );
        // Offsets far apart are downscaled before anything is allocated.
        let mut far = Exponential {
            scale: 20,
            zero_threshold: 0.0,
            zero_count: 0,
            positive: Side {
                offset: i64::from(i32::MIN),
                counts: vec![1],
            },
            negative: Side::default(),
            count: 2,
            sum: None,
        };
        far.add(&Exponential {
            positive: Side {
                offset: i64::from(i32::MAX),
                counts: vec![1],
            },
            ..far.clone()
        });
        assert!(
            far.positive.counts.len() as i64 <= MAX_EXP_BUCKETS,
            "{}",
            far.positive.counts.len()
        );
        assert_eq!(far.positive.counts.iter().sum::<u64>(), 2);
        assert_eq!(far.count, 4);
    }

    #[test]
    fn summaries_have_quantiles_sum_and_count() {
        let mut e = state();
        let now = Instant::now();
        let m = Metric {
            name: "rpc.duration".into(),
            unit: "ms".into(),
            data: Some(Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: 5,
                    count: 4,
                    sum: 10.0,
                    quantile_values: vec![
                        ValueAtQuantile {
                            quantile: 0.99,
                            value: 4.0,
                        },
                        ValueAtQuantile {
                            quantile: 0.5,
                            value: 2.0,
                        },
                    ],
                    ..SummaryDataPoint::default()
                }],
            })),
            ..Metric::default()
        };
        e.ingest(&request(vec![m]), now);
        let text = e.render(now);
        assert_eq!(
            lines(&text)[..4],
            [
                format!("rpc_duration_milliseconds{{{LABELS},quantile=\"0.5\"}} 2").as_str(),
                &format!("rpc_duration_milliseconds{{{LABELS},quantile=\"0.99\"}} 4"),
                &format!("rpc_duration_milliseconds_sum{{{LABELS}}} 10"),
                &format!("rpc_duration_milliseconds_count{{{LABELS}}} 4"),
            ]
        );
    }

    #[test]
    fn resources_become_job_instance_and_target_info() {
        let mut e = state();
        let now = Instant::now();
        let mut r = request(vec![gauge(
            "g",
            "",
            vec![point(0, 1, 1, vec![s("job", "mine")])],
        )]);
        let resource = r.resource_metrics[0].resource.as_mut().unwrap();
        resource.attributes.push(s("service.namespace", "shop"));
        r.resource_metrics[0].scope_metrics[0].schema_url = "https://x/1".into();
        e.ingest(&r, now);
        let text = e.render(now);
        // The resource's job wins over the point's attribute of that name.
        assert!(
            lines(&text).contains(
                &"g{instance=\"i1\",job=\"shop/svc\",otel_scope_name=\"lib\",otel_scope_schema_url=\"https://x/1\",otel_scope_version=\"1.0\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE target_info gauge\ntarget_info{host_name=\"h\",instance=\"i1\",job=\"shop/svc\"} 1\n"),
            "{text}"
        );
        assert_eq!(e.series(), 2);
    }

    #[test]
    fn stale_series_are_swept() {
        let mut e = Exposition::new(Duration::from_secs(60), 1000);
        let t0 = Instant::now();
        e.ingest(
            &request(vec![gauge("old", "", vec![point(0, 1, 1, vec![])])]),
            t0,
        );
        let t1 = t0 + Duration::from_secs(45);
        e.ingest(
            &request(vec![gauge("new", "", vec![point(0, 2, 1, vec![])])]),
            t1,
        );
        assert_eq!(e.series(), 3, "two gauges and one target_info");
        let text = e.render(t0 + Duration::from_secs(61));
        assert!(!text.contains("old{"), "{text}");
        assert!(text.contains("new{"), "{text}");
        assert!(
            text.contains("target_info{"),
            "refreshed by the second request: {text}"
        );
        assert_eq!(e.series(), 2);
        assert_eq!(e.render(t1 + Duration::from_secs(61)), "");
        assert_eq!(e.series(), 0);
    }

    #[test]
    fn series_beyond_the_limit_are_dropped_and_counted() {
        let mut e = Exposition::new(Duration::from_secs(60), 4);
        let now = Instant::now();
        let points = (0..5)
            .map(|i| point(0, 1, i, vec![s("n", &i.to_string())]))
            .collect();
        // target_info takes one of the four.
        let dropped = e.ingest(&request(vec![gauge("g", "", points)]), now);
        assert_eq!(dropped, [(reason::SERIES_LIMIT, 2)].into());
        assert_eq!(e.series(), 4);
        // Existing series still update.
        let update = e.ingest(
            &request(vec![gauge(
                "g",
                "",
                vec![point(0, 2, 9, vec![s("n", "0")])],
            )]),
            now,
        );
        assert!(update.is_empty());
        assert!(
            e.render(now)
                .contains("n=\"0\",otel_scope_name=\"lib\",otel_scope_version=\"1.0\"} 9\n")
        );
    }

    #[test]
    fn a_type_conflict_drops_the_later_metric_and_no_value_removes_a_series() {
        let mut e = state();
        let now = Instant::now();
        e.ingest(
            &request(vec![gauge("x_total", "", vec![point(0, 1, 1, vec![])])]),
            now,
        );
        let dropped = e.ingest(
            &request(vec![sum(
                "x",
                "",
                false,
                true,
                vec![point(0, 1, 1, vec![])],
            )]),
            now,
        );
        assert_eq!(dropped, [(reason::TYPE_CONFLICT, 1)].into());
        let mut gone = point(0, 2, 0, vec![]);
        gone.flags = NO_RECORDED_VALUE;
        e.ingest(&request(vec![gauge("x_total", "", vec![gone])]), now);
        assert!(!e.render(now).contains("x_total{"));
        assert_eq!(e.series(), 1, "target_info only");
    }
}
