//! The decoder's own counters: what it read, decoded, skipped and batched, and what the
//! kernel dropped. Sinks keep theirs ([`SinkSnapshot`]); a [`Snapshot`] shows both.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use ue_proto::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data, number_data_point,
};
use ue_proto::resource::v1::Resource;

use crate::decode::Signal;
use crate::sink::{DiskSnapshot, SinkSnapshot};

/// One counter per signal, indexed by [`idx`].
type PerSignal = [AtomicU64; Signal::ALL.len()];

/// Counters shared by the reader thread and the batching task.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    events: PerSignal,
    bytes: PerSignal,
    items: PerSignal,
    batches: PerSignal,
    batched_items: PerSignal,
    eventheader_unmapped: AtomicU64,
    forged_writer_attributes: AtomicU64,
    // Rare and keyed by label or CPU: maps behind a mutex.
    malformed: Mutex<BTreeMap<&'static str, u64>>,
    reader: Mutex<ReaderCounts>,
}

/// The reader's running totals: kernel-dropped records per CPU, corrupt records by reason.
type ReaderCounts = (BTreeMap<u32, u64>, BTreeMap<&'static str, u64>);

fn idx(s: Signal) -> usize {
    match s {
        Signal::Metrics => 0,
        Signal::Traces => 1,
        Signal::Logs => 2,
    }
}

impl Stats {
    /// An event of `bytes` OTLP bytes was read and decoded into `items` items.
    pub(crate) fn decoded(&self, signal: Signal, bytes: usize, items: u64) {
        let i = idx(signal);
        self.events[i].fetch_add(1, Ordering::Relaxed);
        self.bytes[i].fetch_add(bytes as u64, Ordering::Relaxed);
        self.items[i].fetch_add(items, Ordering::Relaxed);
    }

    /// A decoded EventHeader event had `n` fields that no OTLP field fits (kept as
    /// attributes).
    pub(crate) fn eventheader_unmapped(&self, n: u64) {
        self.eventheader_unmapped.fetch_add(n, Ordering::Relaxed);
    }

    /// An event's payload carried `n` attributes under the decoder's reserved
    /// `user_events.writer.` prefix, removed before the writer's own were added.
    pub(crate) fn forged_writer_attributes(&self, n: u64) {
        self.forged_writer_attributes
            .fetch_add(n, Ordering::Relaxed);
    }

    /// An event was skipped for `reason`.
    pub(crate) fn malformed(&self, reason: &'static str) {
        *self
            .malformed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// The reader's running totals: records the kernel dropped per CPU, and corrupt ring
    /// records by reason.
    pub(crate) fn set_reader_counts(
        &self,
        lost: impl IntoIterator<Item = (u32, u64)>,
        corrupt: &BTreeMap<&'static str, u64>,
    ) {
        let mut r = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        r.0 = lost.into_iter().collect();
        r.1.clone_from(corrupt);
    }

    /// A batch of `items` items went to the sinks.
    pub(crate) fn batched(&self, signal: Signal, items: u64) {
        let i = idx(signal);
        self.batches[i].fetch_add(1, Ordering::Relaxed);
        self.batched_items[i].fetch_add(items, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub(crate) fn snapshot(&self, sinks: Vec<SinkSnapshot>) -> Snapshot {
        let per = |a: &PerSignal| {
            Signal::ALL
                .map(|s| (s, a[idx(s)].load(Ordering::Relaxed)))
                .into_iter()
                .collect()
        };
        // Each lock in its own statement: a guard inside the struct expression below would
        // live to its end, and a second lock of the same mutex there would deadlock.
        let (kernel_lost, corrupt_records) = self
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let malformed = self
            .malformed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Snapshot {
            events: per(&self.events),
            bytes: per(&self.bytes),
            items: per(&self.items),
            batches: per(&self.batches),
            batched_items: per(&self.batched_items),
            eventheader_unmapped: self.eventheader_unmapped.load(Ordering::Relaxed),
            forged_writer_attributes: self.forged_writer_attributes.load(Ordering::Relaxed),
            malformed,
            kernel_lost,
            corrupt_records,
            sinks,
        }
    }
}

/// A point-in-time copy of the decoder's and its sinks' counters.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Snapshot {
    /// Events decoded, per signal.
    pub events: BTreeMap<Signal, u64>,
    /// OTLP bytes in those events.
    pub bytes: BTreeMap<Signal, u64>,
    /// Data points, spans and log records in those events.
    pub items: BTreeMap<Signal, u64>,
    /// Batches handed to the sinks.
    pub batches: BTreeMap<Signal, u64>,
    /// Items in those batches.
    pub batched_items: BTreeMap<Signal, u64>,
    /// Fields of EventHeader events that no OTLP field fits, kept as attributes.
    pub eventheader_unmapped: u64,
    /// Attributes under the reserved `user_events.writer.` prefix that payloads carried,
    /// removed (the decoder writes those from the kernel's sample).
    pub forged_writer_attributes: u64,
    /// Events skipped, by reason.
    pub malformed: BTreeMap<&'static str, u64>,
    /// Records the kernel dropped because a ring was full, per CPU.
    pub kernel_lost: BTreeMap<u32, u64>,
    /// Ring records the reader could not parse, by reason (the ring is resynchronised).
    pub corrupt_records: BTreeMap<&'static str, u64>,
    /// Each sink's counters.
    pub sinks: Vec<SinkSnapshot>,
}

impl Snapshot {
    /// Records the kernel dropped, all CPUs.
    pub fn kernel_lost_total(&self) -> u64 {
        // Saturating: a sum that wrapped would report a small loss as if nothing happened.
        self.kernel_lost
            .values()
            .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    /// The counters as OTLP cumulative sums about the decoder itself.
    pub fn to_otlp(&self, start: SystemTime, now: SystemTime) -> ExportMetricsServiceRequest {
        let nanos = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        };
        let (start, now) = (nanos(start), nanos(now));
        let attr = |k: &str, v: String| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v)),
            }),
            key_strindex: 0,
        };
        let point = |attributes: Vec<KeyValue>, v: u64| NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsInt(v as i64)),
            ..Default::default()
        };
        let sum =
            |name: &str, unit: &str, description: &str, points: Vec<NumberDataPoint>| Metric {
                name: name.into(),
                description: description.into(),
                unit: unit.into(),
                metadata: vec![],
                data: Some(Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
            };
        let by_signal = |m: &BTreeMap<Signal, u64>| {
            m.iter()
                .map(|(s, v)| point(vec![attr("signal", s.to_string())], *v))
                .collect()
        };
        let mut metrics = vec![
            sum(
                "ue_decoder.events",
                "{event}",
                "Events read and decoded",
                by_signal(&self.events),
            ),
            sum(
                "ue_decoder.items",
                "{item}",
                "Data points, spans and log records decoded",
                by_signal(&self.items),
            ),
            sum(
                "ue_decoder.bytes",
                "By",
                "OTLP bytes read",
                by_signal(&self.bytes),
            ),
            sum(
                "ue_decoder.malformed",
                "{event}",
                "Events skipped as malformed",
                self.malformed
                    .iter()
                    .map(|(r, v)| point(vec![attr("reason", (*r).into())], *v))
                    .collect(),
            ),
            sum(
                "ue_decoder.forged_writer_attributes",
                "{attribute}",
                "Attributes under the reserved user_events.writer. prefix that payloads carried, removed",
                if self.forged_writer_attributes > 0 {
                    vec![point(vec![], self.forged_writer_attributes)]
                } else {
                    vec![]
                },
            ),
            sum(
                "ue_decoder.kernel_lost",
                "{record}",
                "Records the kernel dropped because a perf ring was full",
                self.kernel_lost
                    .iter()
                    .map(|(c, v)| point(vec![attr("cpu", c.to_string())], *v))
                    .collect(),
            ),
        ];
        let mut sent = Vec::new();
        let mut filtered = Vec::new();
        let mut dropped = Vec::new();
        for s in &self.sinks {
            sent.push(point(vec![attr("sink", s.name.clone())], s.items_sent));
            filtered.push(point(vec![attr("sink", s.name.clone())], s.filtered_items));
            for (reason, n) in &s.dropped_items {
                dropped.push(point(
                    vec![
                        attr("sink", s.name.clone()),
                        attr("reason", (*reason).into()),
                    ],
                    *n,
                ));
            }
        }
        metrics.push(sum(
            "ue_decoder.sink.items_sent",
            "{item}",
            "Items the sinks delivered",
            sent,
        ));
        metrics.push(sum(
            "ue_decoder.sink.items_filtered",
            "{item}",
            "Items the sinks' filters left out",
            filtered,
        ));
        metrics.push(sum(
            "ue_decoder.sink.items_dropped",
            "{item}",
            "Items the sinks dropped",
            dropped,
        ));
        let archives: Vec<_> = self
            .sinks
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.archive.as_ref()?)))
            .collect();
        metrics.push(sum(
            "ue_decoder.archive.objects",
            "{object}",
            "Objects the archive sinks wrote",
            archives
                .iter()
                .map(|(name, a)| point(vec![attr("sink", name.clone())], a.objects))
                .collect(),
        ));
        metrics.push(sum(
            "ue_decoder.archive.object_bytes",
            "By",
            "Bytes of the objects the archive sinks wrote, compressed",
            archives
                .iter()
                .map(|(name, a)| point(vec![attr("sink", name.clone())], a.object_bytes))
                .collect(),
        ));
        metrics.push(sum(
            "ue_decoder.archive.traces_flushed",
            "{trace}",
            "Traces the archive sinks wrote, by why",
            archives
                .iter()
                .flat_map(|(name, a)| {
                    a.traces_flushed.iter().map(|(r, v)| {
                        point(
                            vec![attr("sink", name.clone()), attr("reason", (*r).into())],
                            *v,
                        )
                    })
                })
                .collect(),
        ));
        // The on-disk queues (`--queue-dir`), for the sinks that have one: the same
        // counters as the admin endpoint's `ue_decoder_sink_disk_*` families.
        let per_disk = |f: &dyn Fn(&DiskSnapshot) -> u64| {
            self.sinks
                .iter()
                .filter_map(|k| {
                    Some(point(
                        vec![attr("sink", k.name.clone())],
                        f(k.disk.as_ref()?),
                    ))
                })
                .collect::<Vec<_>>()
        };
        metrics.push(Metric {
            name: "ue_decoder.sink.disk.bytes".into(),
            description: "Bytes of each sink's queue files (what --queue-max-bytes bounds)".into(),
            unit: "By".into(),
            metadata: vec![],
            data: Some(Data::Gauge(Gauge {
                data_points: per_disk(&|d| d.file_bytes),
            })),
        });
        metrics.push(sum(
            "ue_decoder.sink.disk.replayed_items",
            "{item}",
            "Items found in each sink's queue files at start and sent on",
            per_disk(&|d| d.replayed_items),
        ));
        metrics.push(sum(
            "ue_decoder.sink.disk.possible_duplicate_items",
            "{item}",
            "Items in flight when the decoder last stopped, sent again",
            per_disk(&|d| d.possible_duplicate_items),
        ));
        metrics.push(sum(
            "ue_decoder.sink.disk.corrupt_records",
            "{record}",
            "Corrupt stretches skipped in each sink's queue files (their items unknown)",
            per_disk(&|d| d.corrupt_records),
        ));
        metrics.push(sum(
            "ue_decoder.sink.disk.corrupt_bytes",
            "By",
            "Bytes of those stretches, of unreadable segment files, and of torn records cut off",
            per_disk(&|d| d.corrupt_bytes.saturating_add(d.truncated_bytes)),
        ));
        metrics.retain(|m| match &m.data {
            Some(Data::Sum(s)) => !s.data_points.is_empty(),
            Some(Data::Gauge(g)) => !g.data_points.is_empty(),
            _ => false,
        });
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![attr("service.name", "ue-decoder".into())],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "ue-decoder".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in Signal::ALL {
            let g = |m: &BTreeMap<Signal, u64>| m.get(&s).copied().unwrap_or(0);
            writeln!(
                f,
                "{s:<8} events {} ({} bytes), items {}, batches {} ({} items)",
                g(&self.events),
                g(&self.bytes),
                g(&self.items),
                g(&self.batches),
                g(&self.batched_items)
            )?;
        }
        writeln!(
            f,
            "malformed events {:?}, corrupt ring records {:?}",
            self.malformed, self.corrupt_records
        )?;
        if self.eventheader_unmapped > 0 {
            writeln!(
                f,
                "EventHeader fields kept as attributes (no OTLP field) {}",
                self.eventheader_unmapped
            )?;
        }
        if self.forged_writer_attributes > 0 {
            writeln!(
                f,
                "forged user_events.writer.* attributes removed {}",
                self.forged_writer_attributes
            )?;
        }
        writeln!(
            f,
            "kernel lost {} {:?}",
            self.kernel_lost_total(),
            self.kernel_lost
        )?;
        for s in &self.sinks {
            writeln!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmapped_eventheader_fields_are_counted_and_shown() {
        let stats = Stats::default();
        assert!(
            !stats
                .snapshot(Vec::new())
                .to_string()
                .contains("EventHeader")
        );
        stats.eventheader_unmapped(2);
        stats.eventheader_unmapped(1);
        let snapshot = stats.snapshot(Vec::new());
        assert_eq!(snapshot.eventheader_unmapped, 3);
        assert!(
            snapshot
                .to_string()
                .contains("EventHeader fields kept as attributes (no OTLP field) 3"),
            "{snapshot}"
        );
    }

    #[test]
    fn a_snapshot_reads_every_counter() {
        let stats = Stats::default();
        stats.decoded(Signal::Metrics, 100, 7);
        stats.decoded(Signal::Traces, 50, 2);
        stats.decoded(Signal::Logs, 30, 4);
        stats.malformed("bad_rel_loc");
        stats.batched(Signal::Metrics, 7);
        stats.batched(Signal::Logs, 4);
        let corrupt = BTreeMap::from([("zero_size", 1)]);
        stats.set_reader_counts([(0, 3), (1, 0)], &corrupt);
        let s = stats.snapshot(vec![]);
        assert_eq!(s.items[&Signal::Metrics], 7);
        assert_eq!(s.bytes[&Signal::Traces], 50);
        assert_eq!(s.items[&Signal::Logs], 4);
        assert_eq!(s.batched_items[&Signal::Logs], 4);
        assert!(
            s.to_string().contains("logs events 1 (30 bytes), items 4"),
            "{s}"
        );
        assert_eq!(s.malformed["bad_rel_loc"], 1);
        assert_eq!(s.kernel_lost_total(), 3);
        stats.set_reader_counts([(0, u64::MAX), (1, 1)], &corrupt);
        assert_eq!(stats.snapshot(vec![]).kernel_lost_total(), u64::MAX);
        assert_eq!(s.corrupt_records, corrupt);
        let otlp = s.to_otlp(SystemTime::UNIX_EPOCH, SystemTime::now());
        let names: Vec<&str> = otlp.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert!(
            names.contains(&"ue_decoder.kernel_lost") && names.contains(&"ue_decoder.malformed"),
            "{names:?}"
        );
        let items = &otlp.resource_metrics[0].scope_metrics[0].metrics[1];
        let Some(Data::Sum(items)) = &items.data else {
            panic!("ue_decoder.items is a sum")
        };
        assert_eq!(items.data_points.len(), 3, "one point per signal");
        assert!(
            !names.iter().any(|n| n.starts_with("ue_decoder.sink.disk")),
            "no disk queue, no disk metrics: {names:?}"
        );
    }

    #[test]
    fn the_disk_queues_counters_are_self_metrics() {
        let disk = DiskSnapshot {
            file_bytes: 4096,
            replayed_items: 12,
            possible_duplicate_items: 3,
            corrupt_records: 2,
            corrupt_bytes: 100,
            truncated_bytes: 7,
            ..Default::default()
        };
        let sinks = vec![
            SinkSnapshot {
                name: "otlp-http a".into(),
                disk: Some(disk),
                ..Default::default()
            },
            SinkSnapshot {
                name: "stdout".into(),
                ..Default::default()
            },
        ];
        let otlp = Stats::default()
            .snapshot(sinks)
            .to_otlp(SystemTime::UNIX_EPOCH, SystemTime::now());
        let metrics = &otlp.resource_metrics[0].scope_metrics[0].metrics;
        let points = |name: &str| {
            let m = metrics
                .iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            let points = match &m.data {
                Some(Data::Sum(s)) => {
                    assert!(s.is_monotonic, "{name}");
                    &s.data_points
                }
                Some(Data::Gauge(g)) => &g.data_points,
                other => panic!("{name}: {other:?}"),
            };
            points
                .iter()
                .map(|p| {
                    let sink = match &p.attributes[0].value.as_ref().unwrap().value {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        v => panic!("{v:?}"),
                    };
                    let Some(number_data_point::Value::AsInt(v)) = p.value else {
                        panic!("{name}: not an integer")
                    };
                    (sink, v)
                })
                .collect::<Vec<_>>()
        };
        let one = |v| vec![("otlp-http a".to_owned(), v)];
        assert_eq!(points("ue_decoder.sink.disk.bytes"), one(4096));
        assert_eq!(points("ue_decoder.sink.disk.replayed_items"), one(12));
        assert_eq!(
            points("ue_decoder.sink.disk.possible_duplicate_items"),
            one(3)
        );
        assert_eq!(points("ue_decoder.sink.disk.corrupt_records"), one(2));
        assert_eq!(points("ue_decoder.sink.disk.corrupt_bytes"), one(107));
        assert!(matches!(
            metrics
                .iter()
                .find(|m| m.name == "ue_decoder.sink.disk.bytes")
                .unwrap()
                .data,
            Some(Data::Gauge(_))
        ));
    }
}
