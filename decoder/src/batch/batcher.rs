//! Gathers requests into batches per signal, like the Collector's batch processor: a batch
//! is sent when it reaches a size or when its oldest item has waited long enough.
//!
//! By default a batch is the requests' own bytes, appended: the concatenation of encoded
//! requests of one signal is itself an encoded request holding all of them, so forwarding
//! costs a copy, and nothing is decoded or re-encoded. With [`BatchConfig::merge`] the
//! requests are decoded and merged instead (same resource and scope, and metrics with the
//! same identity, share one entry), which makes the batch smaller before compression at
//! the price of decoding and re-encoding everything.
//!
//! Pure: time comes in as an argument.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::mem;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use ue_proto::collector::logs::v1::ExportLogsServiceRequest;
use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_proto::collector::trace::v1::ExportTraceServiceRequest;

use crate::decode::{Request, Signal, logs_items, metrics_items, traces_items};

/// A batch ready for the sinks: one request of one signal, as the protobuf bytes the OTLP
/// sinks send, compressed once per algorithm however many sinks send it, and decoded on
/// first need (text output).
#[derive(Clone, Debug)]
pub struct Batch {
    signal: Signal,
    /// Shared, not copied, by every sink and attempt that sends it uncompressed.
    protobuf: Bytes,
    decoded: OnceLock<Result<Request, prost::DecodeError>>,
    /// The gzip and the zstd encodings of `protobuf`, made on first need.
    compressed: [OnceLock<Result<Bytes, String>>; 2],
    /// Data points, spans or log records in it.
    pub items: u64,
    /// Its protobuf encoding's length, what queues are bounded by.
    pub bytes: usize,
}

impl Batch {
    /// Wraps a request, counting its items and encoding it.
    pub fn new(request: Request) -> Self {
        let items = request.items();
        let protobuf = Bytes::from(request.encode_to_vec());
        Self {
            signal: request.signal(),
            bytes: protobuf.len(),
            protobuf,
            decoded: OnceLock::from(Ok(request)),
            compressed: Default::default(),
            items,
        }
    }

    /// A request of `signal` as its protobuf encoding, which holds `items` items (checked
    /// by [`validate_request`](crate::validate_request) or known from its encoder).
    pub fn from_protobuf(signal: Signal, protobuf: impl Into<Bytes>, items: u64) -> Self {
        let protobuf = protobuf.into();
        Self {
            signal,
            bytes: protobuf.len(),
            protobuf,
            decoded: OnceLock::new(),
            compressed: Default::default(),
            items,
        }
    }

    /// The batch's signal.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The request's protobuf encoding.
    pub fn protobuf(&self) -> &[u8] {
        &self.protobuf
    }

    /// The request's protobuf encoding, shared.
    pub(crate) fn protobuf_bytes(&self) -> Bytes {
        self.protobuf.clone()
    }

    /// The encoding compressed by `compress`, as algorithm `slot` (0 gzip, 1 zstd): made by
    /// the first caller, which the others wait for, and shared after.
    pub(crate) fn compressed(
        &self,
        slot: usize,
        compress: impl FnOnce(&[u8]) -> Result<Bytes, String>,
    ) -> Result<Bytes, String> {
        self.compressed[slot]
            .get_or_init(|| compress(&self.protobuf))
            .clone()
    }

    /// The request, decoded the first time it is asked for. Fails only if the bytes the
    /// batch was made from were never checked.
    pub fn request(&self) -> Result<&Request, prost::DecodeError> {
        self.decoded
            .get_or_init(|| Request::decode(self.signal, &self.protobuf))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// What the batcher takes in: one event's request, as checked protobuf bytes (the events of
/// the project's own tracepoints) or decoded (everything else).
#[derive(Clone, Debug)]
pub enum Incoming {
    /// A request's protobuf encoding, checked, with its item count.
    Protobuf {
        /// Its signal.
        signal: Signal,
        /// The encoding.
        bytes: Vec<u8>,
        /// Items in it.
        items: u64,
    },
    /// A decoded request.
    Decoded(Request),
}

impl Incoming {
    /// The request's signal.
    pub fn signal(&self) -> Signal {
        match self {
            Self::Protobuf { signal, .. } => *signal,
            Self::Decoded(r) => r.signal(),
        }
    }

    /// Items in the request.
    pub fn items(&self) -> u64 {
        match self {
            Self::Protobuf { items, .. } => *items,
            Self::Decoded(r) => r.items(),
        }
    }
}

impl From<Request> for Incoming {
    fn from(request: Request) -> Self {
        Self::Decoded(request)
    }
}

/// When a batch is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Send once this many data points, spans or log records are pending (the Collector's
    /// `send_batch_size`, 8,192).
    pub max_items: u64,
    /// Send once the pending requests' encoded size reaches this many bytes (default 4 MiB,
    /// the usual gRPC message limit, checked before adding a request).
    pub max_bytes: usize,
    /// Send at the latest this long after the first pending item arrived (the Collector's
    /// `timeout`, 200 ms).
    pub max_delay: Duration,
    /// Decode the requests and merge those with the same resource and scope (and metrics
    /// with the same identity) instead of appending their bytes: a smaller batch before
    /// compression, for the CPU of decoding and re-encoding it all (default off).
    pub merge: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_items: 8192,
            max_bytes: 4 << 20,
            max_delay: Duration::from_millis(200),
            merge: false,
        }
    }
}

/// Pending batches of every signal.
#[derive(Debug)]
pub(crate) struct Batcher {
    config: BatchConfig,
    metrics: Pending<MetricsMerge>,
    traces: Pending<TracesMerge>,
    logs: Pending<LogsMerge>,
    /// Appended requests per signal, in [`Signal::ALL`]'s order (without `merge`).
    appended: [Appended; 3],
}

impl Batcher {
    /// An empty batcher.
    pub(crate) fn new(config: BatchConfig) -> Self {
        Self {
            config,
            metrics: Pending::default(),
            traces: Pending::default(),
            logs: Pending::default(),
            appended: Default::default(),
        }
    }

    /// Adds a request; returns the batches that became due (at most two: the one the request
    /// did not fit in, and the one it filled).
    pub(crate) fn push(&mut self, incoming: impl Into<Incoming>, now: Instant) -> Vec<Batch> {
        let c = self.config;
        let incoming = incoming.into();
        if !c.merge {
            let signal = incoming.signal();
            let items = incoming.items();
            let bytes = match incoming {
                Incoming::Protobuf { bytes, .. } => bytes,
                Incoming::Decoded(r) => r.encode_to_vec(),
            };
            return self.appended[index(signal)].push(signal, &bytes, items, now, &c);
        }
        let request = match incoming {
            Incoming::Decoded(r) => r,
            Incoming::Protobuf { signal, bytes, .. } => match Request::decode(signal, &bytes) {
                Ok(r) => r,
                Err(e) => {
                    // Checked bytes decode (tests/tests/validate.rs holds the check to
                    // prost); were one not to, it is dropped here rather than sent.
                    tracing::error!("a checked request did not decode, dropped: {e}");
                    return Vec::new();
                }
            },
        };
        match request {
            Request::Metrics(r) => self.metrics.push(r, now, &c),
            Request::Traces(r) => self.traces.push(r, now, &c),
            Request::Logs(r) => self.logs.push(r, now, &c),
        }
    }

    /// Adds a request's checked protobuf encoding, appending it to its signal's pending
    /// bytes without an intermediate copy (or decoding it, with `merge`); returns the
    /// batches that became due, as [`push`](Self::push) does.
    pub(crate) fn push_protobuf(
        &mut self,
        signal: Signal,
        request: &[u8],
        items: u64,
        now: Instant,
    ) -> Vec<Batch> {
        if self.config.merge {
            return self.push(
                Incoming::Protobuf {
                    signal,
                    bytes: request.to_vec(),
                    items,
                },
                now,
            );
        }
        let c = self.config;
        self.appended[index(signal)].push(signal, request, items, now, &c)
    }

    /// Batches whose delay ran out by `now`.
    pub(crate) fn poll(&mut self, now: Instant) -> Vec<Batch> {
        let delay = self.config.max_delay;
        let mut out = Vec::new();
        out.extend(self.metrics.due(now, delay));
        out.extend(self.traces.due(now, delay));
        out.extend(self.logs.due(now, delay));
        for (a, signal) in self.appended.iter_mut().zip(Signal::ALL) {
            if a.since.is_some_and(|t| now >= t + delay) {
                out.extend(a.take(signal));
            }
        }
        out
    }

    /// When the next batch falls due, if any is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let d = self.config.max_delay;
        [self.metrics.since, self.traces.since, self.logs.since]
            .into_iter()
            .chain(self.appended.iter().map(|a| a.since))
            .flatten()
            .map(|t| t + d)
            .min()
    }

    /// Everything pending, now.
    pub(crate) fn flush(&mut self) -> Vec<Batch> {
        let mut out: Vec<Batch> = [self.metrics.take(), self.traces.take(), self.logs.take()]
            .into_iter()
            .flatten()
            .collect();
        for (a, signal) in self.appended.iter_mut().zip(Signal::ALL) {
            out.extend(a.take(signal));
        }
        out
    }

    /// Items waiting per signal.
    #[cfg(test)]
    pub(crate) fn pending_items(&self, signal: Signal) -> u64 {
        self.appended[index(signal)].items
            + match signal {
                Signal::Metrics => self.metrics.items,
                Signal::Traces => self.traces.items,
                Signal::Logs => self.logs.items,
            }
    }
}

fn index(signal: Signal) -> usize {
    Signal::ALL
        .iter()
        .position(|s| *s == signal)
        .expect("every signal is in ALL")
}

/// One signal's requests, appended as bytes.
#[derive(Debug, Default)]
struct Appended {
    bytes: Vec<u8>,
    items: u64,
    since: Option<Instant>,
}

impl Appended {
    fn push(
        &mut self,
        signal: Signal,
        request: &[u8],
        items: u64,
        now: Instant,
        c: &BatchConfig,
    ) -> Vec<Batch> {
        let mut out = Vec::new();
        if self.items > 0
            && (self.items + items > c.max_items || self.bytes.len() + request.len() > c.max_bytes)
        {
            out.extend(self.take(signal));
        }
        self.bytes.extend_from_slice(request);
        self.items += items;
        self.since.get_or_insert(now);
        if self.items >= c.max_items || self.bytes.len() >= c.max_bytes {
            out.extend(self.take(signal));
        }
        out
    }

    fn take(&mut self, signal: Signal) -> Option<Batch> {
        if self.items == 0 {
            return None;
        }
        // The next batch will likely be as large as this one.
        let next = Vec::with_capacity(self.bytes.len());
        let bytes = mem::replace(&mut self.bytes, next);
        let batch = Batch::from_protobuf(signal, bytes, self.items);
        self.items = 0;
        self.since = None;
        Some(batch)
    }
}

/// How one signal's requests merge.
trait Merge: Default {
    type Req: Message + Default;
    fn add(&mut self, req: Self::Req);
    fn take(&mut self) -> Request;
    fn items(req: &Self::Req) -> u64;
}

#[derive(Debug, Default)]
struct Pending<M> {
    merged: M,
    items: u64,
    bytes: usize,
    since: Option<Instant>,
}

impl<M: Merge> Pending<M> {
    fn push(&mut self, req: M::Req, now: Instant, c: &BatchConfig) -> Vec<Batch> {
        let items = M::items(&req);
        let bytes = req.encoded_len();
        let mut out = Vec::new();
        if self.items > 0 && (self.items + items > c.max_items || self.bytes + bytes > c.max_bytes)
        {
            out.extend(self.take());
        }
        self.merged.add(req);
        self.items += items;
        self.bytes += bytes;
        self.since.get_or_insert(now);
        if self.items >= c.max_items || self.bytes >= c.max_bytes {
            out.extend(self.take());
        }
        out
    }

    fn due(&mut self, now: Instant, delay: Duration) -> Option<Batch> {
        match self.since {
            Some(t) if now >= t + delay => self.take(),
            _ => None,
        }
    }

    fn take(&mut self) -> Option<Batch> {
        if self.items == 0 {
            return None;
        }
        self.items = 0;
        self.bytes = 0;
        self.since = None;
        Some(Batch::new(self.merged.take()))
    }
}

/// Keys messages by their encoding: OTLP messages implement neither Hash nor Eq.
fn key<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

#[derive(Debug, Default)]
struct MetricsMerge {
    out: ExportMetricsServiceRequest,
    /// (resource, schema) -> index in `out.resource_metrics`
    resources: HashMap<Vec<u8>, usize>,
    /// (resource index, scope, schema) -> index in its scope_metrics
    scopes: HashMap<(usize, Vec<u8>), usize>,
    /// (resource index, scope index, metric identity) -> index in its metrics
    metrics: HashMap<(usize, usize, Vec<u8>), usize>,
}

impl Merge for MetricsMerge {
    type Req = ExportMetricsServiceRequest;

    fn add(&mut self, req: ExportMetricsServiceRequest) {
        for mut rm in req.resource_metrics {
            let scopes = mem::take(&mut rm.scope_metrics);
            let ri = *self.resources.entry(key(&rm)).or_insert_with(|| {
                self.out.resource_metrics.push(rm);
                self.out.resource_metrics.len() - 1
            });
            for mut sm in scopes {
                let metrics = mem::take(&mut sm.metrics);
                let scope_list = &mut self.out.resource_metrics[ri].scope_metrics;
                let si = *self.scopes.entry((ri, key(&sm))).or_insert_with(|| {
                    scope_list.push(sm);
                    scope_list.len() - 1
                });
                for mut metric in metrics {
                    // Without its points, a metric's encoding is its identity: name,
                    // description, unit, metadata, kind, temporality and monotonicity.
                    // Metrics with the same identity share one list of points.
                    let points = metric.take_points();
                    let identity = metric.encode_to_vec();
                    let list = &mut self.out.resource_metrics[ri].scope_metrics[si].metrics;
                    let into = match self.metrics.entry((ri, si, identity)) {
                        Entry::Occupied(e) => &mut list[*e.get()],
                        Entry::Vacant(e) => {
                            e.insert(list.len());
                            list.push(metric);
                            list.last_mut().expect("just pushed")
                        }
                    };
                    if let Some(points) = points {
                        into.append_points(points)
                            .expect("the same identity implies the same kind");
                    }
                }
            }
        }
    }

    fn take(&mut self) -> Request {
        let out = mem::take(&mut self.out);
        *self = Self::default();
        Request::Metrics(out)
    }

    fn items(req: &ExportMetricsServiceRequest) -> u64 {
        metrics_items(req)
    }
}

#[derive(Debug, Default)]
struct TracesMerge {
    out: ExportTraceServiceRequest,
    resources: HashMap<Vec<u8>, usize>,
    scopes: HashMap<(usize, Vec<u8>), usize>,
}

impl Merge for TracesMerge {
    type Req = ExportTraceServiceRequest;

    fn add(&mut self, req: ExportTraceServiceRequest) {
        for mut rs in req.resource_spans {
            let scopes = mem::take(&mut rs.scope_spans);
            let ri = *self.resources.entry(key(&rs)).or_insert_with(|| {
                self.out.resource_spans.push(rs);
                self.out.resource_spans.len() - 1
            });
            for mut ss in scopes {
                let spans = mem::take(&mut ss.spans);
                let list = &mut self.out.resource_spans[ri].scope_spans;
                let si = *self.scopes.entry((ri, key(&ss))).or_insert_with(|| {
                    list.push(ss);
                    list.len() - 1
                });
                list[si].spans.extend(spans);
            }
        }
    }

    fn take(&mut self) -> Request {
        let out = mem::take(&mut self.out);
        *self = Self::default();
        Request::Traces(out)
    }

    fn items(req: &ExportTraceServiceRequest) -> u64 {
        traces_items(req)
    }
}

#[derive(Debug, Default)]
struct LogsMerge {
    out: ExportLogsServiceRequest,
    resources: HashMap<Vec<u8>, usize>,
    scopes: HashMap<(usize, Vec<u8>), usize>,
}

impl Merge for LogsMerge {
    type Req = ExportLogsServiceRequest;

    fn add(&mut self, req: ExportLogsServiceRequest) {
        for mut rl in req.resource_logs {
            let scopes = mem::take(&mut rl.scope_logs);
            let ri = *self.resources.entry(key(&rl)).or_insert_with(|| {
                self.out.resource_logs.push(rl);
                self.out.resource_logs.len() - 1
            });
            for mut sl in scopes {
                let records = mem::take(&mut sl.log_records);
                let list = &mut self.out.resource_logs[ri].scope_logs;
                let si = *self.scopes.entry((ri, key(&sl))).or_insert_with(|| {
                    list.push(sl);
                    list.len() - 1
                });
                list[si].log_records.extend(records);
            }
        }
    }

    fn take(&mut self) -> Request {
        let out = mem::take(&mut self.out);
        *self = Self::default();
        Request::Logs(out)
    }

    fn items(req: &ExportLogsServiceRequest) -> u64 {
        logs_items(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ue_proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use ue_proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use ue_proto::metrics::v1::{
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric::Data,
        number_data_point,
    };
    use ue_proto::resource::v1::Resource;
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(service.into())),
                }),
                key_strindex: 0,
            }],
            ..Default::default()
        })
    }

    fn scope(name: &str) -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: name.into(),
            ..Default::default()
        })
    }

    /// A metrics request with `points` points (values `first..`) of one sum metric.
    fn sum(service: &str, scope_name: &str, metric: &str, first: i64, points: i64) -> Request {
        Request::Metrics(ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(service),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope(scope_name),
                    metrics: vec![Metric {
                        name: metric.into(),
                        data: Some(Data::Sum(Sum {
                            data_points: (first..first + points)
                                .map(|v| NumberDataPoint {
                                    value: Some(number_data_point::Value::AsInt(v)),
                                    ..Default::default()
                                })
                                .collect(),
                            aggregation_temporality: 1,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn spans(service: &str, scope_name: &str, names: &[&str]) -> Request {
        Request::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(service),
                scope_spans: vec![ScopeSpans {
                    scope: scope(scope_name),
                    spans: names
                        .iter()
                        .map(|n| Span {
                            name: (*n).into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn logs(service: &str, scope_name: &str, bodies: &[&str]) -> Request {
        Request::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(service),
                scope_logs: vec![ScopeLogs {
                    scope: scope(scope_name),
                    log_records: bodies
                        .iter()
                        .map(|b| LogRecord {
                            body: Some(AnyValue {
                                value: Some(any_value::Value::StringValue((*b).into())),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    fn values(batch: &Batch) -> Vec<(String, String, String, Vec<i64>)> {
        let Ok(Request::Metrics(r)) = batch.request() else {
            panic!("metrics batch")
        };
        let mut out = Vec::new();
        for rm in &r.resource_metrics {
            let svc = rm.resource.as_ref().unwrap().attributes[0]
                .value
                .clone()
                .unwrap();
            let Some(any_value::Value::StringValue(svc)) = svc.value else {
                unreachable!()
            };
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let Some(Data::Sum(s)) = &m.data else {
                        unreachable!()
                    };
                    let v = s
                        .data_points
                        .iter()
                        .map(|p| match p.value {
                            Some(number_data_point::Value::AsInt(v)) => v,
                            _ => unreachable!(),
                        })
                        .collect();
                    out.push((
                        svc.clone(),
                        sm.scope.as_ref().unwrap().name.clone(),
                        m.name.clone(),
                        v,
                    ));
                }
            }
        }
        out
    }

    /// Merging, and no batch sent for its delay during a test.
    fn long_delay() -> BatchConfig {
        BatchConfig {
            max_delay: Duration::from_secs(3600),
            merge: true,
            ..BatchConfig::default()
        }
    }

    /// `request` as the reader hands it on: its checked bytes.
    fn checked(request: &Request) -> Incoming {
        Incoming::Protobuf {
            signal: request.signal(),
            bytes: request.encode_to_vec(),
            items: request.items(),
        }
    }

    #[test]
    fn by_default_a_batch_is_the_requests_bytes_one_after_another() {
        let config = BatchConfig {
            max_delay: Duration::from_secs(3600),
            max_items: 10,
            ..BatchConfig::default()
        };
        let mut b = Batcher::new(config);
        let t = Instant::now();
        let requests: Vec<Request> = (0..7).map(|i| sum("a", "s", "m", i * 3, 3)).collect();
        let mut sent = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            // Checked bytes and decoded requests batch alike.
            let incoming = if i % 2 == 0 {
                checked(r)
            } else {
                r.clone().into()
            };
            sent.extend(b.push(incoming, t));
        }
        assert_eq!(
            b.pending_items(Signal::Metrics),
            3,
            "the last 3 points wait"
        );
        sent.extend(b.flush());
        assert_eq!(sent.iter().map(|b| b.items).collect::<Vec<_>>(), [9, 9, 3]);
        let mut expected = requests.iter().map(Request::encode_to_vec);
        for batch in &sent {
            // Each batch is exactly its requests' encodings, concatenated.
            let want: Vec<u8> = (0..batch.items / 3)
                .flat_map(|_| expected.next().unwrap())
                .collect();
            assert_eq!(batch.protobuf(), want);
            assert_eq!(batch.bytes, want.len());
            assert_eq!(batch.request().unwrap().items(), batch.items);
        }
        let points: Vec<i64> = sent
            .iter()
            .flat_map(|b| values(b).into_iter().flat_map(|v| v.3))
            .collect();
        assert_eq!(points, (0..21).collect::<Vec<_>>(), "all, once, in order");
    }

    #[test]
    fn signals_batch_apart_and_fall_due_after_the_delay() {
        let mut b = Batcher::new(BatchConfig {
            max_delay: Duration::from_millis(100),
            ..BatchConfig::default()
        });
        let t = Instant::now();
        assert!(b.push(checked(&spans("a", "s", &["1"])), t).is_empty());
        assert!(b.push(checked(&logs("a", "s", &["x", "y"])), t).is_empty());
        assert_eq!(b.next_deadline(), Some(t + Duration::from_millis(100)));
        assert!(b.poll(t + Duration::from_millis(99)).is_empty());
        let due = b.poll(t + Duration::from_millis(100));
        let got: Vec<(Signal, u64)> = due.iter().map(|b| (b.signal(), b.items)).collect();
        assert_eq!(got, [(Signal::Traces, 1), (Signal::Logs, 2)]);
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn same_resource_scope_and_metric_merge_into_one_list_of_points() {
        let mut b = Batcher::new(long_delay());
        let t = Instant::now();
        for (svc, sc, m, first) in [
            ("a", "s", "m", 0),
            ("a", "s", "m", 3),
            ("a", "s2", "m", 10),
            ("b", "s", "m", 20),
            ("a", "s", "other", 30),
            ("a", "s", "m", 6),
        ] {
            assert!(b.push(sum(svc, sc, m, first, 3), t).is_empty());
        }
        let batches = b.flush();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].items, 18);
        assert_eq!(
            values(&batches[0]),
            vec![
                (
                    "a".into(),
                    "s".into(),
                    "m".into(),
                    vec![0, 1, 2, 3, 4, 5, 6, 7, 8]
                ),
                ("a".into(), "s".into(), "other".into(), vec![30, 31, 32]),
                ("a".into(), "s2".into(), "m".into(), vec![10, 11, 12]),
                ("b".into(), "s".into(), "m".into(), vec![20, 21, 22]),
            ]
        );
        assert!(b.flush().is_empty(), "flush empties the batcher");
    }

    #[test]
    fn spans_merge_by_resource_and_scope_keeping_order() {
        let mut b = Batcher::new(long_delay());
        let t = Instant::now();
        b.push(spans("a", "http", &["1", "2"]), t);
        b.push(spans("a", "db", &["3"]), t);
        b.push(spans("a", "http", &["4"]), t);
        let batch = b.flush().pop().unwrap();
        let Ok(Request::Traces(r)) = batch.request() else {
            panic!()
        };
        assert_eq!(r.resource_spans.len(), 1);
        let names: Vec<Vec<&str>> = r.resource_spans[0]
            .scope_spans
            .iter()
            .map(|ss| ss.spans.iter().map(|s| s.name.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["1", "2", "4"], vec!["3"]]);
        assert_eq!(batch.items, 4);
        assert_eq!(batch.bytes, batch.request().unwrap().encoded_len());
    }

    #[test]
    fn log_records_merge_by_resource_and_scope_keeping_order() {
        let mut b = Batcher::new(long_delay());
        let t = Instant::now();
        b.push(logs("a", "http", &["1", "2"]), t);
        b.push(logs("b", "http", &["3"]), t);
        b.push(logs("a", "db", &["4"]), t);
        b.push(logs("a", "http", &["5"]), t);
        assert_eq!(b.pending_items(Signal::Logs), 5);
        let batch = b.flush().pop().unwrap();
        let Ok(Request::Logs(r)) = batch.request() else {
            panic!("logs batch")
        };
        let bodies: Vec<Vec<Vec<String>>> = r
            .resource_logs
            .iter()
            .map(|rl| {
                rl.scope_logs
                    .iter()
                    .map(|sl| {
                        sl.log_records
                            .iter()
                            .map(|lr| match &lr.body.as_ref().unwrap().value {
                                Some(any_value::Value::StringValue(s)) => s.clone(),
                                _ => unreachable!(),
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        assert_eq!(
            bodies,
            vec![vec![vec!["1", "2", "5"], vec!["4"]], vec![vec!["3"]]]
        );
        assert_eq!(batch.items, 5);
        assert_eq!(batch.bytes, batch.request().unwrap().encoded_len());
    }

    #[test]
    fn a_batch_is_sent_at_max_items_without_exceeding_it() {
        let mut b = Batcher::new(BatchConfig {
            max_items: 10,
            ..long_delay()
        });
        let t = Instant::now();
        let mut sent = Vec::new();
        for i in 0..7 {
            sent.extend(b.push(sum("a", "s", "m", i * 3, 3), t));
        }
        sent.extend(b.flush());
        assert!(sent.iter().all(|b| b.items <= 10));
        let all: Vec<i64> = sent
            .iter()
            .flat_map(|b| values(b).into_iter().flat_map(|v| v.3))
            .collect();
        assert_eq!(
            all,
            (0..21).collect::<Vec<_>>(),
            "nothing lost, duplicated or reordered"
        );
        assert_eq!(sent.len(), 3);
    }

    #[test]
    fn a_batch_is_sent_at_max_bytes() {
        let one = sum("a", "s", "m", 0, 50).encoded_len();
        let mut b = Batcher::new(BatchConfig {
            max_bytes: one * 2 + 1,
            ..long_delay()
        });
        let t = Instant::now();
        assert!(b.push(sum("a", "s", "m", 0, 50), t).is_empty());
        assert!(b.push(sum("a", "s", "m", 50, 50), t).is_empty());
        let sent = b.push(sum("a", "s", "m", 100, 50), t);
        assert_eq!(sent.len(), 1, "the third request does not fit");
        assert_eq!(sent[0].items, 100);
        assert_eq!(b.pending_items(Signal::Metrics), 50);
    }

    #[test]
    fn a_batch_is_sent_when_its_first_item_waited_max_delay() {
        let mut b = Batcher::new(BatchConfig {
            max_delay: Duration::from_millis(200),
            ..BatchConfig::default()
        });
        let t0 = Instant::now();
        assert_eq!(b.next_deadline(), None);
        b.push(sum("a", "s", "m", 0, 1), t0);
        b.push(spans("a", "s", &["x"]), t0 + Duration::from_millis(50));
        b.push(sum("a", "s", "m", 1, 1), t0 + Duration::from_millis(100));
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(200)));
        assert!(b.poll(t0 + Duration::from_millis(199)).is_empty());
        let due = b.poll(t0 + Duration::from_millis(200));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].signal(), due[0].items), (Signal::Metrics, 2));
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(250)));
        assert_eq!(
            b.poll(t0 + Duration::from_millis(250))[0].signal(),
            Signal::Traces
        );
        b.push(logs("a", "s", &["y"]), t0 + Duration::from_millis(300));
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(500)));
        let due = b.poll(t0 + Duration::from_millis(500));
        assert_eq!((due[0].signal(), due[0].items), (Signal::Logs, 1));
    }
}
