//! OTLP requests as rows of the sink's tables ([`super::schema`]), in ClickHouse's
//! RowBinary format. Pure: a request in, bytes out.
//!
//! Values are written as the Collector's exporter writes them: ids as lowercase hex (empty
//! for an all-absent id), span kinds and status codes as words (`Server`, `Error`),
//! attribute values and log bodies as text (arrays and maps as JSON, bytes as base64),
//! integer metric values as Float64, absent `min`/`max` as 0, a service's name from its
//! resource's `service.name`. A log record without a timestamp takes its observed one.

use std::fmt::Write as _;

use ue_proto::common::v1::{InstrumentationScope, KeyValue};
use ue_proto::logs::v1::LogRecord;
use ue_proto::metrics::v1::{
    Exemplar, Metric, NumberDataPoint, exemplar, metric::Data, number_data_point,
};
use ue_proto::resource::v1::Resource;
use ue_proto::trace::v1::{Span, span::SpanKind, status::StatusCode};

use super::schema::{TABLES, TableId};
use crate::decode::Request;
use crate::sink::prometheus::attribute_text;

/// One request's rows, per table: the RowBinary bytes and how many rows they hold.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    tables: [(Vec<u8>, u64); TABLES.len()],
}

impl Rows {
    /// The rows of every data point, span or log record of `request`.
    pub(crate) fn of(request: &Request) -> Self {
        let mut rows = Self::default();
        match request {
            Request::Traces(r) => {
                for rs in &r.resource_spans {
                    let resource = Context::resource(rs.resource.as_ref(), &rs.schema_url);
                    for ss in &rs.scope_spans {
                        let scope = resource.scope(ss.scope.as_ref(), &ss.schema_url);
                        for span in &ss.spans {
                            rows.span(&scope, span);
                        }
                    }
                }
            }
            Request::Logs(r) => {
                for rl in &r.resource_logs {
                    let resource = Context::resource(rl.resource.as_ref(), &rl.schema_url);
                    for sl in &rl.scope_logs {
                        let scope = resource.scope(sl.scope.as_ref(), &sl.schema_url);
                        for record in &sl.log_records {
                            rows.log(&scope, record);
                        }
                    }
                }
            }
            Request::Metrics(r) => {
                for rm in &r.resource_metrics {
                    let resource = Context::resource(rm.resource.as_ref(), &rm.schema_url);
                    for sm in &rm.scope_metrics {
                        let scope = resource.scope(sm.scope.as_ref(), &sm.schema_url);
                        for metric in &sm.metrics {
                            rows.metric(&scope, metric);
                        }
                    }
                }
            }
        }
        rows
    }

    /// The tables with rows: each one's id, bytes and row count.
    pub(crate) fn tables(&self) -> impl Iterator<Item = (TableId, &[u8], u64)> {
        TableId::ALL
            .into_iter()
            .zip(&self.tables)
            .filter(|(_, (_, n))| *n > 0)
            .map(|(id, (bytes, n))| (id, bytes.as_slice(), *n))
    }

    /// A new row of `table`.
    fn row(&mut self, table: TableId) -> Writer<'_> {
        let (bytes, n) = &mut self.tables[table as usize];
        *n += 1;
        Writer(bytes)
    }

    fn span(&mut self, scope: &Context<'_>, span: &Span) {
        let mut w = self.row(TableId::Traces);
        w.time(span.start_time_unix_nano);
        w.id(&span.trace_id);
        w.id(&span.span_id);
        w.id(&span.parent_span_id);
        w.string(&span.trace_state);
        w.string(&span.name);
        w.string(span_kind(span.kind));
        w.string(scope.service);
        w.attributes(scope.resource_attributes);
        w.string(scope.scope_name);
        w.string(scope.scope_version);
        w.attributes(&span.attributes);
        w.u64(
            span.end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano),
        );
        let status = span.status.as_ref();
        w.string(status_code(status.map_or(0, |s| s.code)));
        w.string(status.map_or("", |s| &s.message));
        let events = &span.events;
        w.array(events, |w, e| w.datetime(e.time_unix_nano));
        w.array(events, |w, e| w.u64(e.time_unix_nano));
        w.array(events, |w, e| w.string(&e.name));
        w.array(events, |w, e| {
            w.array(&e.attributes, |w, kv| w.string(&kv.key))
        });
        w.array(events, |w, e| w.array(&e.attributes, |w, kv| w.value(kv)));
        let links = &span.links;
        w.array(links, |w, l| w.id(&l.trace_id));
        w.array(links, |w, l| w.id(&l.span_id));
        w.array(links, |w, l| w.string(&l.trace_state));
        w.array(links, |w, l| {
            w.array(&l.attributes, |w, kv| w.string(&kv.key))
        });
        w.array(links, |w, l| w.array(&l.attributes, |w, kv| w.value(kv)));
    }

    fn log(&mut self, scope: &Context<'_>, record: &LogRecord) {
        let mut w = self.row(TableId::Logs);
        let time = if record.time_unix_nano != 0 {
            record.time_unix_nano
        } else {
            record.observed_time_unix_nano
        };
        w.time(time);
        w.id(&record.trace_id);
        w.id(&record.span_id);
        w.u8(record.flags as u8);
        w.string(&record.severity_text);
        w.u8(record.severity_number.clamp(0, 255) as u8);
        w.string(scope.service);
        w.string(&record.body.as_ref().map(attribute_text).unwrap_or_default());
        w.string(scope.resource_schema_url);
        w.attributes(scope.resource_attributes);
        w.string(scope.scope_schema_url);
        w.string(scope.scope_name);
        w.string(scope.scope_version);
        w.attributes(scope.scope_attributes);
        w.attributes(&record.attributes);
    }

    fn metric(&mut self, scope: &Context<'_>, metric: &Metric) {
        match &metric.data {
            Some(Data::Gauge(g)) => {
                for p in &g.data_points {
                    let mut w = self.row(TableId::Gauge);
                    w.metric_head(
                        scope,
                        metric,
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                    );
                    w.number(p);
                }
            }
            Some(Data::Sum(s)) => {
                for p in &s.data_points {
                    let mut w = self.row(TableId::Sum);
                    w.metric_head(
                        scope,
                        metric,
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                    );
                    w.number(p);
                    w.i32(s.aggregation_temporality);
                    w.u8(u8::from(s.is_monotonic));
                }
            }
            Some(Data::Histogram(h)) => {
                for p in &h.data_points {
                    let mut w = self.row(TableId::Histogram);
                    w.metric_head(
                        scope,
                        metric,
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                    );
                    w.u64(p.count);
                    w.f64(p.sum.unwrap_or(0.0));
                    w.array(&p.bucket_counts, |w, n| w.u64(*n));
                    w.array(&p.explicit_bounds, |w, b| w.f64(*b));
                    w.exemplars(&p.exemplars);
                    w.u32(p.flags);
                    w.f64(p.min.unwrap_or(0.0));
                    w.f64(p.max.unwrap_or(0.0));
                    w.i32(h.aggregation_temporality);
                }
            }
            Some(Data::ExponentialHistogram(h)) => {
                for p in &h.data_points {
                    let mut w = self.row(TableId::ExponentialHistogram);
                    w.metric_head(
                        scope,
                        metric,
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                    );
                    w.u64(p.count);
                    w.f64(p.sum.unwrap_or(0.0));
                    w.i32(p.scale);
                    w.u64(p.zero_count);
                    for buckets in [&p.positive, &p.negative] {
                        let (offset, counts) = buckets
                            .as_ref()
                            .map_or((0, &[][..]), |b| (b.offset, &b.bucket_counts[..]));
                        w.i32(offset);
                        w.array(counts, |w, n| w.u64(*n));
                    }
                    w.exemplars(&p.exemplars);
                    w.u32(p.flags);
                    w.f64(p.min.unwrap_or(0.0));
                    w.f64(p.max.unwrap_or(0.0));
                    w.i32(h.aggregation_temporality);
                }
            }
            Some(Data::Summary(s)) => {
                for p in &s.data_points {
                    let mut w = self.row(TableId::Summary);
                    w.metric_head(
                        scope,
                        metric,
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                    );
                    w.u64(p.count);
                    w.f64(p.sum);
                    w.array(&p.quantile_values, |w, q| w.f64(q.quantile));
                    w.array(&p.quantile_values, |w, q| w.f64(q.value));
                    w.u32(p.flags);
                }
            }
            None => {}
        }
    }
}

/// What the rows of one scope share: its resource's and its own columns.
struct Context<'a> {
    service: &'a str,
    resource_attributes: &'a [KeyValue],
    resource_schema_url: &'a str,
    scope_name: &'a str,
    scope_version: &'a str,
    scope_attributes: &'a [KeyValue],
    scope_dropped: u32,
    scope_schema_url: &'a str,
}

impl<'a> Context<'a> {
    fn resource(resource: Option<&'a Resource>, schema_url: &'a str) -> Self {
        let attributes = resource.map_or(&[][..], |r| &r.attributes[..]);
        let service = attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                ue_proto::common::v1::any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("");
        Self {
            service,
            resource_attributes: attributes,
            resource_schema_url: schema_url,
            scope_name: "",
            scope_version: "",
            scope_attributes: &[],
            scope_dropped: 0,
            scope_schema_url: "",
        }
    }

    fn scope(&self, scope: Option<&'a InstrumentationScope>, schema_url: &'a str) -> Self {
        Self {
            scope_name: scope.map_or("", |s| &s.name),
            scope_version: scope.map_or("", |s| &s.version),
            scope_attributes: scope.map_or(&[][..], |s| &s.attributes[..]),
            scope_dropped: scope.map_or(0, |s| s.dropped_attributes_count),
            scope_schema_url: schema_url,
            ..*self
        }
    }
}

/// The Collector's words for span kinds (`traceutil.SpanKindStr`).
fn span_kind(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Internal) => "Internal",
        Ok(SpanKind::Server) => "Server",
        Ok(SpanKind::Client) => "Client",
        Ok(SpanKind::Producer) => "Producer",
        Ok(SpanKind::Consumer) => "Consumer",
        _ => "Unspecified",
    }
}

/// The Collector's words for status codes (`traceutil.StatusCodeStr`).
fn status_code(code: i32) -> &'static str {
    match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => "Ok",
        Ok(StatusCode::Error) => "Error",
        _ => "Unset",
    }
}

/// Appends one row's values in RowBinary: integers and floats little-endian, strings and
/// arrays after their length as an unsigned LEB128, `DateTime` as seconds in a `UInt32`.
struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn varint(&mut self, mut n: u64) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.0.push(byte);
                return;
            }
            self.0.push(byte | 0x80);
        }
    }

    fn string(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A trace or span id as lowercase hex; an empty or all-zero id (none) as "".
    fn id(&mut self, id: &[u8]) {
        if id.iter().all(|b| *b == 0) {
            return self.string("");
        }
        let mut hex = String::with_capacity(id.len() * 2);
        for b in id {
            let _ = write!(hex, "{b:02x}");
        }
        self.string(&hex);
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A `DateTime`: whole seconds since the epoch, saturating at its end in 2106.
    fn datetime(&mut self, nanos: u64) {
        self.u32(u32::try_from(nanos / 1_000_000_000).unwrap_or(u32::MAX));
    }

    /// The two columns of a timestamp: `DateTime`, then the nanoseconds.
    fn time(&mut self, nanos: u64) {
        self.datetime(nanos);
        self.u64(nanos);
    }

    fn array<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        self.varint(items.len() as u64);
        for item in items {
            each(self, item);
        }
    }

    fn value(&mut self, kv: &KeyValue) {
        self.string(&kv.value.as_ref().map(attribute_text).unwrap_or_default());
    }

    /// A `Nested(Keys String, Values String)`: the keys, then the values.
    fn attributes(&mut self, attributes: &[KeyValue]) {
        self.array(attributes, |w, kv| w.string(&kv.key));
        self.array(attributes, Self::value);
    }

    /// The columns every metric table starts with.
    fn metric_head(
        &mut self,
        scope: &Context<'_>,
        metric: &Metric,
        attributes: &[KeyValue],
        start: u64,
        time: u64,
    ) {
        self.attributes(scope.resource_attributes);
        self.string(scope.resource_schema_url);
        self.string(scope.scope_name);
        self.string(scope.scope_version);
        self.attributes(scope.scope_attributes);
        self.u32(scope.scope_dropped);
        self.string(scope.scope_schema_url);
        self.string(scope.service);
        self.string(&metric.name);
        self.string(&metric.description);
        self.string(&metric.unit);
        self.attributes(attributes);
        self.time(start);
        self.time(time);
    }

    /// A gauge's or sum's `Value`, `Flags` and `Exemplars`.
    fn number(&mut self, p: &NumberDataPoint) {
        self.f64(match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => 0.0,
        });
        self.u32(p.flags);
        self.exemplars(&p.exemplars);
    }

    fn exemplars(&mut self, exemplars: &[Exemplar]) {
        self.array(exemplars, |w, e| {
            w.array(&e.filtered_attributes, |w, kv| w.string(&kv.key));
        });
        self.array(exemplars, |w, e| {
            w.array(&e.filtered_attributes, Self::value)
        });
        self.array(exemplars, |w, e| w.datetime(e.time_unix_nano));
        self.array(exemplars, |w, e| w.u64(e.time_unix_nano));
        self.array(exemplars, |w, e| {
            w.f64(match e.value {
                Some(exemplar::Value::AsDouble(v)) => v,
                Some(exemplar::Value::AsInt(v)) => v as f64,
                None => 0.0,
            });
        });
        self.array(exemplars, |w, e| w.id(&e.span_id));
        self.array(exemplars, |w, e| w.id(&e.trace_id));
    }
}

#[cfg(test)]
mod tests {
    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
    use ue_proto::common::v1::{AnyValue, any_value};
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans};

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    #[test]
    fn lengths_are_leb128() {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.varint(0);
        w.varint(127);
        w.varint(128);
        w.varint(300);
        assert_eq!(out, [0, 127, 0x80, 1, 0xac, 2]);
    }

    #[test]
    fn a_span_is_one_row_in_column_order() {
        let span = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            name: "GET".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_500_000_000,
            end_time_unix_nano: 1_700_000_001_000_000_000,
            attributes: vec![kv("n", any_value::Value::IntValue(7))],
            ..Span::default()
        };
        let request = Request::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("svc".into()),
                    )],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span.clone(), span],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        });
        let rows = Rows::of(&request);
        let tables: Vec<_> = rows.tables().collect();
        assert_eq!(tables.len(), 1);
        let (id, bytes, n) = tables[0];
        assert_eq!((id, n), (TableId::Traces, 2));
        let row = &bytes[..bytes.len() / 2];
        let mut want = Vec::new();
        want.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        want.extend_from_slice(&1_700_000_000_500_000_000u64.to_le_bytes());
        want.push(32);
        want.extend_from_slice("ab".repeat(16).as_bytes());
        want.push(16);
        want.extend_from_slice(b"0102030405060708");
        want.extend_from_slice(&[0, 0]); // no parent, no trace state
        want.extend_from_slice(b"\x03GET\x06Server\x03svc");
        want.extend_from_slice(b"\x01\x0cservice.name\x01\x03svc"); // resource attributes
        want.extend_from_slice(&[0, 0]); // no scope
        want.extend_from_slice(b"\x01\x01n\x01\x017"); // span attributes
        want.extend_from_slice(&500_000_000u64.to_le_bytes());
        want.extend_from_slice(b"\x05Unset\x00");
        want.extend_from_slice(&[0; 10]); // five empty event arrays, five link arrays
        assert_eq!(row, &want[..]);
    }

    #[test]
    fn values_are_text_as_the_collector_writes_them() {
        let v = |v| AnyValue { value: Some(v) };
        assert_eq!(
            attribute_text(&v(any_value::Value::BoolValue(true))),
            "true"
        );
        assert_eq!(
            attribute_text(&v(any_value::Value::BytesValue(vec![1, 2]))),
            "AQI="
        );
        assert_eq!(span_kind(99), "Unspecified");
        assert_eq!(status_code(StatusCode::Error as i32), "Error");
    }
}
