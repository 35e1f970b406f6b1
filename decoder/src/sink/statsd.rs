//! The DogStatsD sink: application metrics as DogStatsD lines over UDP or a Unix datagram
//! socket, packed into datagrams of at most a configured size.
//!
//! The mapping follows the Datadog exporter's for OTLP metrics:
//! - monotonic sums become counts (`|c`): a delta sum's value as it is, a cumulative sum's
//!   increase since its previous point (the first point of a series only sets the baseline;
//!   a value below the previous one is a reset, and the new value is the increase);
//! - gauges and non-monotonic sums become gauges (`|g`);
//! - histograms become `<name>.count` and `<name>.sum` counts, `<name>.min` and `<name>.max`
//!   gauges when the point has them, and one `<name>.bucket` count per bucket tagged
//!   `lower_bound` and `upper_bound` (the exporter's `counters` mode: a distribution, `|d`,
//!   needs the raw values, which a histogram no longer has); cumulative ones as increases;
//! - exponential histograms become `.count`, `.sum`, `.min` and `.max` only.
//!
//! Tags are the point's attributes (`key:value`), plus `service`, `env`, `version` and
//! `host` from the resource's `service.name`, `deployment.environment(.name)`,
//! `service.version` and `host.name` (Datadog's unified service tagging). Characters the
//! protocol reserves (`|`, `,`, `#`, newlines) become `_`. A value that is not finite
//! cannot be written: the point is counted as rejected.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ue_proto::common::v1::{AnyValue, KeyValue, any_value};
use ue_proto::metrics::v1::{
    AggregationTemporality, Metric, metric::Data, number_data_point::Value,
};

use super::{Outcome, SinkError};
use crate::batch::Batch;
use crate::decode::Request;

/// Where DogStatsD lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatsdTarget {
    /// A DogStatsD server on UDP, e.g. the Datadog agent on `127.0.0.1:8125`.
    Udp(SocketAddr),
    /// A Unix datagram socket, e.g. `/var/run/datadog/dsd.socket`.
    Unix(PathBuf),
}

/// The DogStatsD sink's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsdConfig {
    /// Where to send.
    pub target: StatsdTarget,
    /// The largest datagram, lines packed up to it: 1,432 bytes for UDP (an Ethernet MTU's
    /// payload, as the Datadog clients use), 8,192 for a Unix socket.
    pub max_datagram: usize,
}

impl StatsdConfig {
    /// `target` with the Datadog clients' datagram size for its kind.
    pub fn new(target: StatsdTarget) -> Self {
        let max_datagram = match target {
            StatsdTarget::Udp(_) => 1432,
            StatsdTarget::Unix(_) => 8192,
        };
        Self {
            target,
            max_datagram,
        }
    }

    pub(crate) fn name(&self) -> String {
        match &self.target {
            StatsdTarget::Udp(addr) => format!("dogstatsd udp {addr}"),
            StatsdTarget::Unix(path) => format!("dogstatsd unix {}", path.display()),
        }
    }
}

/// A series not seen for this long is forgotten (its next cumulative point is a baseline).
const STALE: Duration = Duration::from_secs(600);

enum Socket {
    Udp(tokio::net::UdpSocket),
    Unix(tokio::net::UnixDatagram),
}

/// The sink: a connected datagram socket and the last value of each cumulative series.
pub(crate) struct StatsdSink {
    socket: Socket,
    max_datagram: usize,
    state: Mutex<Cumulative>,
}

impl std::fmt::Debug for StatsdSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsdSink")
            .field("max_datagram", &self.max_datagram)
            .finish_non_exhaustive()
    }
}

impl StatsdSink {
    /// Opens the socket; needs a tokio runtime.
    pub(crate) fn new(config: &StatsdConfig) -> Result<Self, SinkError> {
        let fail = |source: std::io::Error| SinkError::Statsd {
            target: config.name(),
            source,
        };
        let socket = match &config.target {
            StatsdTarget::Udp(addr) => {
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let std = std::net::UdpSocket::bind(local).map_err(fail)?;
                std.connect(addr).map_err(fail)?;
                std.set_nonblocking(true).map_err(fail)?;
                Socket::Udp(tokio::net::UdpSocket::from_std(std).map_err(fail)?)
            }
            StatsdTarget::Unix(path) => {
                let socket = tokio::net::UnixDatagram::unbound().map_err(fail)?;
                socket.connect(path).map_err(fail)?;
                Socket::Unix(socket)
            }
        };
        Ok(Self {
            socket,
            max_datagram: config.max_datagram.max(64),
            state: Mutex::new(Cumulative::default()),
        })
    }

    /// What [`send`](Self::send) sends for `batch`: the count of points that could not be
    /// written (8 bytes, little-endian), then the lines packed into datagrams, each
    /// followed by a NUL byte (which no line contains) to split them again.
    pub(crate) fn encode(&self, batch: &Batch) -> Result<Bytes, String> {
        let request = batch.request().map_err(|e| e.to_string())?;
        let Request::Metrics(request) = request else {
            return Ok(Bytes::from_static(&[0; 8]));
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = Lines::default();
        for rm in &request.resource_metrics {
            let resource_tags = rm
                .resource
                .as_ref()
                .map(|r| resource_tags(&r.attributes))
                .unwrap_or_default();
            for sm in &rm.scope_metrics {
                for metric in &sm.metrics {
                    write_metric(&mut lines, &mut state, metric, &resource_tags);
                }
            }
        }
        state.sweep();
        let mut payload = lines.rejected.to_le_bytes().to_vec();
        payload.extend_from_slice(&pack(&lines.out, self.max_datagram));
        Ok(Bytes::from(payload))
    }

    /// Sends each datagram of `payload`. A datagram socket either takes a datagram whole or
    /// fails: a failure drops the rest of the batch.
    pub(crate) async fn send(&self, payload: &Bytes) -> Outcome {
        let Some((rejected, datagrams)) = payload.split_first_chunk::<8>() else {
            return Outcome::Permanent("no payload".into());
        };
        let rejected = u64::from_le_bytes(*rejected);
        for datagram in datagrams.split(|b| *b == 0).filter(|d| !d.is_empty()) {
            let sent = match &self.socket {
                Socket::Udp(s) => s.send(datagram).await,
                Socket::Unix(s) => s.send(datagram).await,
            };
            if let Err(e) = sent {
                return Outcome::Permanent(format!("send: {e}"));
            }
        }
        let message = if rejected > 0 {
            format!("{rejected} points with values DogStatsD cannot carry (NaN or infinite)")
        } else {
            String::new()
        };
        Outcome::Sent { rejected, message }
    }
}

/// The lines of one batch.
#[derive(Default)]
struct Lines {
    out: Vec<String>,
    rejected: u64,
}

impl Lines {
    /// `name:value|kind|#tags`; false (and nothing written) for a value that is not finite.
    fn line(&mut self, name: &str, value: f64, kind: &str, tags: &[String]) -> bool {
        if !value.is_finite() {
            return false;
        }
        let mut line = String::with_capacity(name.len() + 24);
        line.push_str(name);
        let _ = write!(line, ":{value}|{kind}");
        for (i, tag) in tags.iter().enumerate() {
            line.push_str(if i == 0 { "|#" } else { "," });
            line.push_str(tag);
        }
        self.out.push(line);
        true
    }
}

/// The previous value of each cumulative series, by its line prefix and tags.
#[derive(Default)]
struct Cumulative {
    last: HashMap<String, (f64, Instant)>,
    swept: Option<Instant>,
}

impl Cumulative {
    /// The increase of the series `key` to `value`; `None` for its first point.
    fn increase(&mut self, key: String, value: f64) -> Option<f64> {
        let now = Instant::now();
        match self.last.insert(key, (value, now)) {
            None => None,
            // A reset: the series started again from zero.
            Some((prev, _)) if value < prev => Some(value),
            Some((prev, _)) => Some(value - prev),
        }
    }

    /// Forgets series not seen for [`STALE`], at most once a minute.
    fn sweep(&mut self) {
        let now = Instant::now();
        if self
            .swept
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.swept = Some(now);
        self.last
            .retain(|_, (_, seen)| now.duration_since(*seen) < STALE);
    }
}

fn write_metric(lines: &mut Lines, state: &mut Cumulative, metric: &Metric, resource: &[String]) {
    let name = sanitize_name(&metric.name);
    let cumulative = |t: i32| t == AggregationTemporality::Cumulative as i32;
    match &metric.data {
        Some(Data::Gauge(g)) => {
            for p in &g.data_points {
                let tags = with_tags(resource, &p.attributes);
                if !lines.line(&name, number(p.value), "g", &tags) {
                    lines.rejected += 1;
                }
            }
        }
        Some(Data::Sum(s)) => {
            for p in &s.data_points {
                let tags = with_tags(resource, &p.attributes);
                let value = number(p.value);
                let ok = if !s.is_monotonic {
                    lines.line(&name, value, "g", &tags)
                } else if cumulative(s.aggregation_temporality) {
                    match state.increase(series_key(&name, &tags), value) {
                        Some(inc) => lines.line(&name, inc, "c", &tags),
                        None => value.is_finite(),
                    }
                } else {
                    lines.line(&name, value, "c", &tags)
                };
                if !ok {
                    lines.rejected += 1;
                }
            }
        }
        Some(Data::Histogram(h)) => {
            let cumulative = cumulative(h.aggregation_temporality);
            for p in &h.data_points {
                let tags = with_tags(resource, &p.attributes);
                // Every count of the point, as (suffix, extra tags, value).
                let mut counts = vec![
                    (".count", None, p.count as f64),
                    (".sum", None, p.sum.unwrap_or(0.0)),
                ];
                for (i, n) in p.bucket_counts.iter().enumerate() {
                    let lower = if i == 0 {
                        "-inf".to_owned()
                    } else {
                        p.explicit_bounds
                            .get(i - 1)
                            .map_or("-inf".into(), |b| b.to_string())
                    };
                    let upper = p
                        .explicit_bounds
                        .get(i)
                        .map_or("inf".into(), |b| b.to_string());
                    counts.push((".bucket", Some((lower, upper)), *n as f64));
                }
                let extremes = [(".min", p.min), (".max", p.max)];
                if !histogram_lines(lines, state, cumulative, &name, &tags, counts, extremes) {
                    lines.rejected += 1;
                }
            }
        }
        Some(Data::ExponentialHistogram(h)) => {
            let cumulative = cumulative(h.aggregation_temporality);
            for p in &h.data_points {
                let tags = with_tags(resource, &p.attributes);
                let counts = vec![
                    (".count", None, p.count as f64),
                    (".sum", None, p.sum.unwrap_or(0.0)),
                ];
                let extremes = [(".min", p.min), (".max", p.max)];
                if !histogram_lines(lines, state, cumulative, &name, &tags, counts, extremes) {
                    lines.rejected += 1;
                }
            }
        }
        // Summaries (never written by the OpenTelemetry SDKs) and empty metrics.
        Some(Data::Summary(_)) | None => {}
    }
}

/// A histogram count: the name's suffix, a bucket's lower and upper bounds, the value.
type Count<'a> = (&'a str, Option<(String, String)>, f64);

/// A histogram point's counts (`(suffix, bucket bounds, value)`; increases when
/// `cumulative`) and its minimum and maximum as gauges; false if a value was not finite.
fn histogram_lines(
    lines: &mut Lines,
    state: &mut Cumulative,
    cumulative: bool,
    name: &str,
    tags: &[String],
    counts: Vec<Count<'_>>,
    extremes: [(&str, Option<f64>); 2],
) -> bool {
    let mut ok = true;
    for (suffix, bounds, value) in counts {
        let mut tags = tags.to_vec();
        if let Some((lower, upper)) = bounds {
            tags.push(format!("lower_bound:{lower}"));
            tags.push(format!("upper_bound:{upper}"));
        }
        let metric_name = format!("{name}{suffix}");
        let value = if cumulative {
            match state.increase(series_key(&metric_name, &tags), value) {
                Some(inc) => inc,
                None => continue,
            }
        } else {
            value
        };
        ok &= lines.line(&metric_name, value, "c", &tags);
    }
    for (suffix, v) in extremes {
        if let Some(v) = v {
            ok &= lines.line(&format!("{name}{suffix}"), v, "g", tags);
        }
    }
    ok
}

fn number(v: Option<Value>) -> f64 {
    match v {
        Some(Value::AsDouble(d)) => d,
        Some(Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

fn series_key(name: &str, tags: &[String]) -> String {
    let mut key = name.to_owned();
    for t in tags {
        key.push('|');
        key.push_str(t);
    }
    key
}

/// The resource's unified service tags.
fn resource_tags(attributes: &[KeyValue]) -> Vec<String> {
    let mut tags = Vec::new();
    for (otel, tag) in [
        ("service.name", "service"),
        ("deployment.environment.name", "env"),
        ("deployment.environment", "env"),
        ("service.version", "version"),
        ("host.name", "host"),
    ] {
        if tags
            .iter()
            .any(|t: &String| t.starts_with(&format!("{tag}:")))
        {
            continue;
        }
        if let Some(kv) = attributes.iter().find(|kv| kv.key == otel) {
            tags.push(format!(
                "{tag}:{}",
                sanitize_tag(&any_text(kv.value.as_ref()))
            ));
        }
    }
    tags
}

fn with_tags(resource: &[String], attributes: &[KeyValue]) -> Vec<String> {
    let mut tags = resource.to_vec();
    tags.extend(attributes.iter().map(|kv| {
        format!(
            "{}:{}",
            sanitize_tag(&kv.key),
            sanitize_tag(&any_text(kv.value.as_ref()))
        )
    }));
    tags
}

/// An attribute value as tag text.
fn any_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// What the protocol reserves in tags, replaced by `_`.
fn sanitize_tag(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '|' | ',' | '#' | '\n' | '\r' | '\0' => '_',
            c => c,
        })
        .collect()
}

/// A metric name as DogStatsD takes it: ASCII letters, digits, `_` and `.`.
fn sanitize_name(s: &str) -> String {
    let name: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() { "_".into() } else { name }
}

/// Lines joined by newlines into datagrams of at most `max` bytes, each ended by a NUL. A
/// line longer than `max` goes alone.
fn pack(lines: &[String], max: usize) -> Bytes {
    let mut out = Vec::new();
    let mut datagram = 0;
    for line in lines {
        if datagram > 0 && datagram + 1 + line.len() > max {
            out.push(0);
            datagram = 0;
        }
        if datagram > 0 {
            out.push(b'\n');
            datagram += 1;
        }
        out.extend_from_slice(line.as_bytes());
        datagram += line.len();
    }
    if datagram > 0 {
        out.push(0);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_pack_into_datagrams_no_larger_than_the_limit() {
        let lines: Vec<String> = (0..100).map(|i| format!("m.{i}:1|c|#k:v")).collect();
        let packed = pack(&lines, 64);
        let datagrams: Vec<&[u8]> = packed
            .split(|b| *b == 0)
            .filter(|d| !d.is_empty())
            .collect();
        assert!(datagrams.iter().all(|d| d.len() <= 64));
        let back: Vec<String> = datagrams
            .iter()
            .flat_map(|d| std::str::from_utf8(d).unwrap().split('\n'))
            .map(str::to_owned)
            .collect();
        assert_eq!(back, lines);
        assert!(datagrams.len() > 1);
    }

    #[test]
    fn cumulative_series_send_increases_and_resets_restart() {
        let mut c = Cumulative::default();
        assert_eq!(c.increase("a".into(), 5.0), None);
        assert_eq!(c.increase("a".into(), 8.0), Some(3.0));
        assert_eq!(c.increase("a".into(), 2.0), Some(2.0));
        assert_eq!(c.increase("b".into(), 1.0), None);
    }

    #[test]
    fn reserved_characters_never_reach_the_wire() {
        assert_eq!(sanitize_tag("a|b,c#d\ne"), "a_b_c_d_e");
        assert_eq!(
            sanitize_name("http.server.duration/ms"),
            "http.server.duration_ms"
        );
        let mut lines = Lines::default();
        assert!(!lines.line("x", f64::NAN, "g", &[]));
        assert!(lines.line("x", 1.5, "g", &["k:v".into(), "a:b".into()]));
        assert_eq!(lines.out, ["x:1.5|g|#k:v,a:b"]);
    }
}
