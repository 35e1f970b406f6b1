//! `ResourceMetrics` from the SDK straight into `ExportMetricsServiceRequest` events.
//! Field numbers are those of `opentelemetry/proto/metrics/v1/metrics.proto`; values map as
//! opentelemetry-proto's transform maps them (the tests hold the two byte for byte).

use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, Exemplar, ExponentialBucket, ExponentialHistogramDataPoint,
    HistogramDataPoint, MetricData, ResourceMetrics,
};

use super::common::{attributes, nanos, resource, scope};
use super::{Oversize, level};
use crate::pack::Packer;
use crate::protobuf::{
    bytes, double, double_always, fixed64, fixed64_run, message, packed_fixed64, packed_varint,
    prefetch, sint32, varint,
};

/// Nesting levels of a metrics event: the request, ResourceMetrics, ScopeMetrics, Metric, and
/// the data body (Sum, Gauge, ...) that holds the points.
pub(crate) const LEVELS: usize = 5;

/// Field numbers of the data bodies in `Metric`, and of the points in each.
const GAUGE: u32 = 5;
const SUM: u32 = 7;
const HISTOGRAM: u32 = 9;
const EXPONENTIAL_HISTOGRAM: u32 = 10;
const DATA_POINTS: u32 = 1;

/// A number type the SDK aggregates, as OTLP carries it.
trait Number: Copy {
    /// The `as_double` (field `double_field`) or `as_int` member of a point's or exemplar's
    /// value oneof that carries the value, and its 8 bytes.
    fn value(self, double_field: u32, int_field: u32) -> (u32, u64);
    fn into_f64(self) -> f64;
}

impl Number for f64 {
    #[inline]
    fn value(self, double_field: u32, _: u32) -> (u32, u64) {
        (double_field, self.to_bits())
    }
    fn into_f64(self) -> f64 {
        self
    }
}

impl Number for i64 {
    #[inline]
    fn value(self, _: u32, int_field: u32) -> (u32, u64) {
        (int_field, self as u64)
    }
    fn into_f64(self) -> f64 {
        self as f64
    }
}

impl Number for u64 {
    #[inline]
    fn value(self, _: u32, int_field: u32) -> (u32, u64) {
        // As the OTLP transform does: a u64 beyond i64::MAX has no int64 form and becomes 0.
        (int_field, i64::try_from(self).unwrap_or_default() as u64)
    }
    fn into_f64(self) -> f64 {
        self as f64
    }
}

/// Packs every data point of `metrics` into events of at most the packer's limit, handing
/// each to `emit`; points keep their order, and a metric's points may be split over several
/// events, each carrying the full resource, scope and metric metadata.
pub(crate) fn pack(
    packer: &mut Packer<LEVELS>,
    metrics: &ResourceMetrics,
    emit: &mut dyn FnMut(&[u8], usize),
) -> Oversize {
    let mut oversize = Oversize::default();
    let res = metrics.resource();
    let shell = packer.begin(level::RESOURCE, 1);
    message(&mut shell.prefix, 1, |b| resource(b, res));
    bytes(
        &mut shell.suffix,
        3,
        res.schema_url().unwrap_or_default().as_bytes(),
    );
    for sm in metrics.scope_metrics() {
        let shell = packer.begin(level::SCOPE, 2);
        message(&mut shell.prefix, 1, |b| scope(b, sm.scope()));
        let schema_url = sm.scope().schema_url().unwrap_or_default();
        bytes(&mut shell.suffix, 3, schema_url.as_bytes());
        for metric in sm.metrics() {
            let shell = packer.begin(level::METRIC, 2);
            bytes(&mut shell.prefix, 1, metric.name().as_bytes());
            bytes(&mut shell.prefix, 2, metric.description().as_bytes());
            bytes(&mut shell.prefix, 3, metric.unit().as_bytes());
            let mut points = Points {
                packer: &mut *packer,
                emit: &mut *emit,
                name: metric.name(),
                oversize: &mut oversize,
            };
            match metric.data() {
                AggregatedMetrics::F64(data) => points.data(data),
                AggregatedMetrics::U64(data) => points.data(data),
                AggregatedMetrics::I64(data) => points.data(data),
            }
        }
    }
    packer.flush(emit);
    oversize
}

/// Packs the points of one metric.
struct Points<'a> {
    packer: &'a mut Packer<LEVELS>,
    emit: &'a mut dyn FnMut(&[u8], usize),
    name: &'a str,
    oversize: &'a mut Oversize,
}

impl Points<'_> {
    fn data<T: Number>(&mut self, data: &MetricData<T>) {
        match data {
            MetricData::Gauge(gauge) => {
                self.packer.begin(level::DATA, GAUGE);
                let start = gauge.start_time().map_or(0, nanos);
                let time = nanos(gauge.time());
                for dp in gauge.data_points() {
                    self.point(false, |b| {
                        number_point(b, start, time, dp.value(), dp.exemplars(), dp.attributes())
                    });
                }
            }
            MetricData::Sum(sum) => {
                let shell = self.packer.begin(level::DATA, SUM);
                varint(&mut shell.suffix, 2, temporality(sum.temporality()));
                varint(&mut shell.suffix, 3, u64::from(sum.is_monotonic()));
                let (start, time) = (nanos(sum.start_time()), nanos(sum.time()));
                for dp in sum.data_points() {
                    self.point(false, |b| {
                        number_point(b, start, time, dp.value(), dp.exemplars(), dp.attributes())
                    });
                }
            }
            MetricData::Histogram(hist) => {
                let shell = self.packer.begin(level::DATA, HISTOGRAM);
                varint(&mut shell.suffix, 2, temporality(hist.temporality()));
                let (start, time) = (nanos(hist.start_time()), nanos(hist.time()));
                // Every point of one histogram carries its stream's bucket boundaries: the
                // SDK clones the aggregation's bounds into each point (opentelemetry_sdk
                // 0.33, metrics/internal/histogram.rs), as the specification configures them
                // per stream. So they are encoded once, from the first point, and copied
                // into each: the other points' copies are never read, which saves their
                // cache misses (debug builds check that they are equal).
                let mut bounds = Vec::new();
                if let Some(first) = hist.data_points().next() {
                    packed_fixed64(&mut bounds, 7, first.bounds().map(f64::to_bits));
                }
                // The points' memory is requested a batch at a time (see `BATCH`): the
                // attributes of the batch after the one about to be encoded, then the strings
                // and arrays of the one about to be encoded, whose attributes came in while
                // the batch before was encoded.
                let mut ahead = hist.data_points();
                let mut batch = hist.data_points();
                ahead
                    .by_ref()
                    .take(BATCH)
                    .for_each(|p| fetch_attributes(p.attributes()));
                for (i, dp) in hist.data_points().enumerate() {
                    if i % BATCH == 0 {
                        ahead
                            .by_ref()
                            .take(BATCH)
                            .for_each(|p| fetch_attributes(p.attributes()));
                        batch.by_ref().take(BATCH).for_each(|p| {
                            fetch_strings(p.attributes());
                            touch(p.bucket_counts());
                        });
                    }
                    self.point(true, |b| histogram_point(b, start, time, &bounds, dp));
                }
            }
            MetricData::ExponentialHistogram(hist) => {
                let shell = self.packer.begin(level::DATA, EXPONENTIAL_HISTOGRAM);
                varint(&mut shell.suffix, 2, temporality(hist.temporality()));
                let (start, time) = (nanos(hist.start_time()), nanos(hist.time()));
                for dp in hist.data_points() {
                    self.point(true, |b| exponential_point(b, start, time, dp));
                }
            }
        }
    }

    #[inline]
    fn point(&mut self, large: bool, encode: impl FnOnce(&mut Vec<u8>)) {
        if self
            .packer
            .item(DATA_POINTS, large, encode, self.emit)
            .is_err()
        {
            self.oversize.add(self.name);
        }
    }
}

/// Histogram points whose memory is requested together, before any of them is encoded.
///
/// An export reads megabytes of points that the SDK wrote long before (10,000 series are
/// about 6 MB), each point in several heap blocks: its attributes, their strings, its bucket
/// counts and its bounds (read for the first point only). Nearly every block is a cache
/// miss, and one point at a time the encoder waits for each in turn. Requested for several points at once, the misses are
/// outstanding together and the waits overlap. Eight points' requests fit in the CPU's
/// window of outstanding work; sixteen measured no better.
const BATCH: usize = 8;

/// Starts fetching a point's attributes (its `KeyValue`s) into the cache, without waiting:
/// every line from the first attribute's start to the last one's end.
#[inline(always)]
fn fetch_attributes<'a>(mut attrs: impl Iterator<Item = &'a opentelemetry::KeyValue>) {
    // The attributes are a slice, whose exact length the iterator tells.
    let len = attrs.size_hint().0 * size_of::<opentelemetry::KeyValue>();
    let Some(first) = attrs.next() else { return };
    let start = (first as *const opentelemetry::KeyValue).cast::<u8>();
    let mut at = 0;
    while at < len {
        prefetch(start.wrapping_add(at));
        at += 64;
    }
    // The end, which may lie on the line after the last one started above.
    prefetch(start.wrapping_add(len.saturating_sub(1)));
}

/// Starts fetching the string values of a point's attributes, without waiting; the
/// attributes themselves were fetched a batch earlier ([`fetch_attributes`]). Keys are left
/// out: nearly always `&'static str`s in the program's own data, read for every point.
#[inline(always)]
fn fetch_strings<'a>(attrs: impl Iterator<Item = &'a opentelemetry::KeyValue>) {
    for kv in attrs {
        if let opentelemetry::Value::String(v) = &kv.value {
            prefetch(v.as_str().as_ptr());
        }
    }
}

/// Reads the first of `values`, so that its cache line is requested with the rest of the
/// batch's. The SDK gives bucket counts only as an iterator, with no address to prefetch,
/// so this is a plain load, whose result is not used. Only the first line is read: reading
/// every line of the array (three loads) measured slower, the loads' own cost outweighing
/// what they saved.
#[inline(always)]
fn touch(mut values: impl Iterator<Item = u64>) {
    std::hint::black_box(values.next());
}

/// `AggregationTemporality` as the OTLP transform maps it.
fn temporality(t: Temporality) -> u64 {
    match t {
        Temporality::Delta => 1,
        _ => 2,
    }
}

/// The body of a `NumberDataPoint`.
#[inline]
fn number_point<'a, T: Number + 'a>(
    buf: &mut Vec<u8>,
    start: u64,
    time: u64,
    value: T,
    exemplars: impl Iterator<Item = &'a Exemplar<T>>,
    attrs: impl Iterator<Item = &'a opentelemetry::KeyValue>,
) {
    let (field, bits) = value.value(4, 6);
    fixed64_run(
        buf,
        [
            (2, start, start != 0),
            (3, time, time != 0),
            (field, bits, true),
        ],
    );
    for ex in exemplars {
        exemplar(buf, 5, ex);
    }
    attributes(buf, 7, attrs);
}

/// The body of a `HistogramDataPoint`; `bounds` is its `explicit_bounds` field, encoded
/// once for all the points of its histogram.
fn histogram_point<T: Number>(
    buf: &mut Vec<u8>,
    start: u64,
    time: u64,
    bounds: &[u8],
    dp: &HistogramDataPoint<T>,
) {
    debug_assert!(
        {
            let mut own = Vec::new();
            packed_fixed64(&mut own, 7, dp.bounds().map(f64::to_bits));
            own == bounds
        },
        "a histogram point with other bounds than its histogram's first point"
    );
    let count = dp.count();
    fixed64_run(
        buf,
        [
            (2, start, start != 0),
            (3, time, time != 0),
            (4, count, count != 0),
            (5, dp.sum().into_f64().to_bits(), true),
        ],
    );
    packed_fixed64(buf, 6, dp.bucket_counts());
    buf.extend_from_slice(bounds);
    for ex in dp.exemplars() {
        exemplar(buf, 8, ex);
    }
    attributes(buf, 9, dp.attributes());
    let (min, max) = (dp.min(), dp.max());
    fixed64_run(
        buf,
        [
            (11, min.map_or(0, |v| v.into_f64().to_bits()), min.is_some()),
            (12, max.map_or(0, |v| v.into_f64().to_bits()), max.is_some()),
        ],
    );
}

/// The body of an `ExponentialHistogramDataPoint`.
fn exponential_point<T: Number>(
    buf: &mut Vec<u8>,
    start: u64,
    time: u64,
    dp: &ExponentialHistogramDataPoint<T>,
) {
    attributes(buf, 1, dp.attributes());
    fixed64(buf, 2, start);
    fixed64(buf, 3, time);
    fixed64(buf, 4, dp.count() as u64);
    double_always(buf, 5, dp.sum().into_f64());
    sint32(buf, 6, i32::from(dp.scale()));
    fixed64(buf, 7, dp.zero_count());
    buckets(buf, 8, dp.positive_bucket());
    buckets(buf, 9, dp.negative_bucket());
    for ex in dp.exemplars() {
        exemplar(buf, 11, ex);
    }
    if let Some(min) = dp.min() {
        double_always(buf, 12, min.into_f64());
    }
    if let Some(max) = dp.max() {
        double_always(buf, 13, max.into_f64());
    }
    double(buf, 14, dp.zero_threshold());
}

fn buckets(buf: &mut Vec<u8>, field: u32, b: &ExponentialBucket) {
    message(buf, field, |buf| {
        sint32(buf, 1, b.offset());
        packed_varint(buf, 2, b.counts());
    });
}

/// An `Exemplar` as field `field`.
fn exemplar<T: Number>(buf: &mut Vec<u8>, field: u32, ex: &Exemplar<T>) {
    message(buf, field, |buf| {
        let time = nanos(ex.time());
        let (field, bits) = ex.value.value(3, 6);
        fixed64_run(buf, [(2, time, time != 0), (field, bits, true)]);
        bytes(buf, 4, ex.span_id());
        bytes(buf, 5, ex.trace_id());
        attributes(buf, 7, ex.filtered_attributes());
    });
}
