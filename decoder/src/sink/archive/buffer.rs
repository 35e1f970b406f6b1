//! The spans waiting to be archived, grouped per service and trace, and when each group
//! is due. Pure: the time comes in as an argument, and nothing here writes anything.
//!
//! A group is flushed when no span joined it for `idle`, when it is `max_age` old, or,
//! oldest first, as soon as the buffer holds more than `max_traces` groups or `max_bytes`
//! of spans (overflow): never dropped. A span of a group already flushed starts a new one,
//! which is written with the next sequence number; the buffer remembers the next number of
//! the last `remembered` groups flushed (the writer finds the next free one for the others).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use prost::Message as _;
use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::key::service_name;

/// The bounds of a [`TraceBuffer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// A group no span joined for this long is flushed.
    pub(crate) idle: Duration,
    /// A group this old is flushed, however busy.
    pub(crate) max_age: Duration,
    /// The most groups open at once.
    pub(crate) max_traces: usize,
    /// The most bytes of spans (protobuf) held at once.
    pub(crate) max_bytes: usize,
    /// How many flushed groups' next sequence numbers are remembered.
    pub(crate) remembered: usize,
}

/// One trace of one service: its spans are archived together.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TraceKey {
    /// The resources' `service.name` (`""` if none).
    pub(crate) service: String,
    /// The trace id; empty for every span whose id is not 16 bytes.
    pub(crate) trace_id: Vec<u8>,
}

/// Why a group was flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FlushReason {
    /// No span joined it for `idle`.
    Idle,
    /// It was `max_age` old.
    MaxAge,
    /// Early: more than `max_traces` groups were open.
    MaxTraces,
    /// Early: the buffer held more than `max_bytes`.
    MaxBytes,
    /// The sink is shutting down.
    Shutdown,
}

impl FlushReason {
    /// Every reason, in the order of [`FlushReason::index`].
    pub(crate) const ALL: [Self; 5] = [
        Self::Idle,
        Self::MaxAge,
        Self::MaxTraces,
        Self::MaxBytes,
        Self::Shutdown,
    ];

    /// The reason's label in counters.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::MaxAge => "max_age",
            Self::MaxTraces => "max_traces",
            Self::MaxBytes => "max_bytes",
            Self::Shutdown => "shutdown",
        }
    }

    /// The reason's position in [`FlushReason::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A group taken out of the buffer, to be written.
#[derive(Debug)]
pub(crate) struct Flushed {
    pub(crate) key: TraceKey,
    /// 0 for a trace's first object, then 1, 2, ... for late spans.
    pub(crate) sequence: u32,
    pub(crate) spans: u64,
    pub(crate) request: ExportTraceServiceRequest,
    pub(crate) reason: FlushReason,
}

#[derive(Debug)]
struct Open {
    /// Its place in `by_age`.
    order: u64,
    first: Instant,
    last: Instant,
    bytes: usize,
    spans: u64,
    resource_spans: Vec<ResourceSpans>,
}

/// The open groups.
#[derive(Debug)]
pub(crate) struct TraceBuffer {
    limits: Limits,
    open: HashMap<TraceKey, Open>,
    /// The open groups, oldest first.
    by_age: BTreeMap<u64, TraceKey>,
    next_order: u64,
    bytes: usize,
    spans: u64,
    /// The next sequence number of groups flushed, the oldest forgotten first.
    written: HashMap<TraceKey, u32>,
    written_order: VecDeque<TraceKey>,
}

impl TraceBuffer {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            open: HashMap::new(),
            by_age: BTreeMap::new(),
            next_order: 0,
            bytes: 0,
            spans: 0,
            written: HashMap::new(),
            written_order: VecDeque::new(),
        }
    }

    /// Groups open.
    pub(crate) fn traces(&self) -> usize {
        self.open.len()
    }

    /// Bytes of spans held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Spans held.
    pub(crate) fn spans(&self) -> u64 {
        self.spans
    }

    /// Takes every span of `request` into its group; returns the groups flushed early to
    /// keep the buffer within its bounds, oldest first.
    pub(crate) fn add(
        &mut self,
        request: &ExportTraceServiceRequest,
        now: Instant,
    ) -> Vec<Flushed> {
        for rs in &request.resource_spans {
            let service = service_name(rs.resource.as_ref());
            for ss in &rs.scope_spans {
                // The spans of this scope, per trace, in their order.
                let mut per_trace: Vec<(&[u8], Vec<Span>)> = Vec::new();
                for span in &ss.spans {
                    let id: &[u8] = if span.trace_id.len() == 16 {
                        &span.trace_id
                    } else {
                        &[]
                    };
                    match per_trace.iter_mut().find(|(t, _)| *t == id) {
                        Some((_, spans)) => spans.push(span.clone()),
                        None => per_trace.push((id, vec![span.clone()])),
                    }
                }
                for (trace_id, spans) in per_trace {
                    let key = TraceKey {
                        service: service.to_owned(),
                        trace_id: trace_id.to_vec(),
                    };
                    self.join(key, rs, ss, spans, now);
                }
            }
        }
        let mut flushed = Vec::new();
        while self.open.len() > self.limits.max_traces {
            flushed.extend(self.take_oldest(FlushReason::MaxTraces));
        }
        while self.bytes > self.limits.max_bytes {
            flushed.extend(self.take_oldest(FlushReason::MaxBytes));
        }
        flushed
    }

    /// Adds `spans`, of the resource of `rs` and the scope of `ss`, to the group of `key`.
    fn join(
        &mut self,
        key: TraceKey,
        rs: &ResourceSpans,
        ss: &ScopeSpans,
        spans: Vec<Span>,
        now: Instant,
    ) {
        let mut bytes: usize = spans.iter().map(Span::encoded_len).sum();
        let count = spans.len() as u64;
        let open = match self.open.get_mut(&key) {
            Some(open) => open,
            None => {
                let order = self.next_order;
                self.next_order += 1;
                self.by_age.insert(order, key.clone());
                self.open.entry(key).or_insert(Open {
                    order,
                    first: now,
                    last: now,
                    bytes: 0,
                    spans: 0,
                    resource_spans: Vec::new(),
                })
            }
        };
        open.last = now;
        let resource = match open
            .resource_spans
            .iter_mut()
            .position(|r| r.resource == rs.resource && r.schema_url == rs.schema_url)
        {
            Some(i) => &mut open.resource_spans[i],
            None => {
                bytes += rs.resource.as_ref().map_or(0, |r| r.encoded_len());
                open.resource_spans.push(ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: Vec::new(),
                    schema_url: rs.schema_url.clone(),
                });
                open.resource_spans.last_mut().expect("just pushed")
            }
        };
        match resource
            .scope_spans
            .iter_mut()
            .find(|s| s.scope == ss.scope && s.schema_url == ss.schema_url)
        {
            Some(scope) => scope.spans.extend(spans),
            None => {
                bytes += ss.scope.as_ref().map_or(0, |s| s.encoded_len());
                resource.scope_spans.push(ScopeSpans {
                    scope: ss.scope.clone(),
                    spans,
                    schema_url: ss.schema_url.clone(),
                });
            }
        }
        open.bytes += bytes;
        open.spans += count;
        self.bytes += bytes;
        self.spans += count;
    }

    /// Takes up to `limit` groups that are due at `now` (idle or too old), oldest first.
    pub(crate) fn due(&mut self, now: Instant, limit: usize) -> Vec<Flushed> {
        let Limits { idle, max_age, .. } = self.limits;
        let keys: Vec<(TraceKey, FlushReason)> = self
            .by_age
            .values()
            .filter_map(|key| {
                let open = &self.open[key];
                if now.saturating_duration_since(open.first) >= max_age {
                    Some((key.clone(), FlushReason::MaxAge))
                } else if now.saturating_duration_since(open.last) >= idle {
                    Some((key.clone(), FlushReason::Idle))
                } else {
                    None
                }
            })
            .take(limit)
            .collect();
        keys.into_iter()
            .map(|(key, reason)| self.take(&key, reason))
            .collect()
    }

    /// When the next group falls due, if any is open.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.open
            .values()
            .map(|o| (o.first + self.limits.max_age).min(o.last + self.limits.idle))
            .min()
    }

    /// Takes the oldest group, due or not, at shutdown.
    pub(crate) fn take_for_shutdown(&mut self) -> Option<Flushed> {
        self.take_oldest(FlushReason::Shutdown)
    }

    /// Takes every group, oldest first, at shutdown.
    #[cfg(test)]
    pub(crate) fn drain(&mut self) -> Vec<Flushed> {
        std::iter::from_fn(|| self.take_for_shutdown()).collect()
    }

    /// Remembers that `key` was written with `sequence`, so its next late spans take the
    /// number after it (the writer may have skipped numbers already taken in the store).
    pub(crate) fn wrote(&mut self, key: &TraceKey, sequence: u32) {
        self.remember(key.clone(), sequence.saturating_add(1));
    }

    fn take_oldest(&mut self, reason: FlushReason) -> Option<Flushed> {
        let key = self.by_age.values().next()?.clone();
        Some(self.take(&key, reason))
    }

    fn take(&mut self, key: &TraceKey, reason: FlushReason) -> Flushed {
        let open = self.open.remove(key).expect("a key in by_age is open");
        self.by_age.remove(&open.order);
        self.bytes -= open.bytes;
        self.spans -= open.spans;
        let sequence = self.written.get(key).copied().unwrap_or(0);
        self.remember(key.clone(), sequence.saturating_add(1));
        Flushed {
            key: key.clone(),
            sequence,
            spans: open.spans,
            request: ExportTraceServiceRequest {
                resource_spans: open.resource_spans,
            },
            reason,
        }
    }

    fn remember(&mut self, key: TraceKey, next: u32) {
        match self.written.get_mut(&key) {
            Some(n) => *n = (*n).max(next),
            None => {
                if self.limits.remembered == 0 {
                    return;
                }
                if self.written_order.len() >= self.limits.remembered
                    && let Some(old) = self.written_order.pop_front()
                {
                    self.written.remove(&old);
                }
                self.written_order.push_back(key.clone());
                self.written.insert(key, next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ue_proto::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use ue_proto::resource::v1::Resource;

    use super::*;

    fn limits() -> Limits {
        Limits {
            idle: Duration::from_secs(5),
            max_age: Duration::from_secs(30),
            max_traces: 100,
            max_bytes: 1 << 20,
            remembered: 100,
        }
    }

    fn resource(service: &str, pid: i64) -> Resource {
        let kv = |k: &str, v| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        Resource {
            attributes: vec![
                kv(
                    "service.name",
                    any_value::Value::StringValue(service.into()),
                ),
                kv("process.pid", any_value::Value::IntValue(pid)),
            ],
            ..Default::default()
        }
    }

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("s{id}"),
            ..Default::default()
        }
    }

    /// A request of one resource and one scope.
    fn request(
        service: &str,
        pid: i64,
        scope: &str,
        spans: Vec<Span>,
    ) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource(service, pid)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: scope.into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn names(f: &Flushed) -> Vec<String> {
        let mut v: Vec<String> = f
            .request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn groups_per_service_and_trace_merging_resources_and_scopes() {
        let t0 = Instant::now();
        let mut b = TraceBuffer::new(limits());
        assert!(
            b.add(&request("a", 1, "x", vec![span(1, 1), span(2, 2)]), t0)
                .is_empty()
        );
        b.add(&request("a", 1, "x", vec![span(1, 3)]), t0);
        b.add(&request("a", 1, "y", vec![span(1, 4)]), t0);
        b.add(&request("a", 2, "x", vec![span(1, 5)]), t0);
        b.add(&request("b", 1, "x", vec![span(1, 6)]), t0);
        assert_eq!((b.traces(), b.spans()), (3, 6));
        let mut all = b.drain();
        assert_eq!(b.traces(), 0);
        assert_eq!((b.bytes(), b.spans()), (0, 0));
        all.sort_by(|x, y| {
            (&x.key.service, &x.key.trace_id).cmp(&(&y.key.service, &y.key.trace_id))
        });
        let a1 = &all[0];
        assert_eq!((a1.key.service.as_str(), a1.key.trace_id[0]), ("a", 1));
        assert_eq!(names(a1), ["s1", "s3", "s4", "s5"]);
        assert_eq!(a1.spans, 4);
        // Two resources (pid 1 and 2); pid 1 has two scopes, x holding s1 and s3.
        assert_eq!(a1.request.resource_spans.len(), 2);
        assert_eq!(a1.request.resource_spans[0].scope_spans.len(), 2);
        assert_eq!(a1.request.resource_spans[0].scope_spans[0].spans.len(), 2);
        assert_eq!(names(&all[1]), ["s2"]);
        assert_eq!(
            (all[2].key.service.as_str(), names(&all[2])),
            ("b", vec!["s6".to_owned()])
        );
        assert!(
            all.iter()
                .all(|f| f.reason == FlushReason::Shutdown && f.sequence == 0)
        );
    }

    #[test]
    fn idle_and_old_groups_fall_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = TraceBuffer::new(limits());
        b.add(&request("a", 1, "x", vec![span(1, 1)]), t0);
        b.add(&request("a", 1, "x", vec![span(2, 2)]), t0);
        assert_eq!(b.next_due(), Some(t0 + s(5)));
        assert!(b.due(t0 + s(4), 10).is_empty());
        // Trace 2 keeps getting spans: it is never idle, but reaches max_age.
        for i in 1..=7 {
            b.add(
                &request("a", 1, "x", vec![span(2, 10 + i)]),
                t0 + s(4 * u64::from(i)),
            );
            if i == 1 {
                let due = b.due(t0 + s(5), 10);
                assert_eq!(due.len(), 1);
                assert_eq!(
                    (due[0].key.trace_id[0], due[0].reason),
                    (1, FlushReason::Idle)
                );
            }
        }
        assert!(b.due(t0 + s(29), 10).is_empty());
        let due = b.due(t0 + s(30), 10);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].reason, due[0].spans), (FlushReason::MaxAge, 8));
        assert_eq!(b.next_due(), None);
    }

    #[test]
    fn due_takes_at_most_the_limit() {
        let t0 = Instant::now();
        let mut b = TraceBuffer::new(limits());
        for t in 0..5 {
            b.add(&request("a", 1, "x", vec![span(t, 1)]), t0);
        }
        let later = t0 + Duration::from_secs(10);
        let first: Vec<u8> = b.due(later, 2).iter().map(|f| f.key.trace_id[0]).collect();
        assert_eq!(first, [0, 1], "oldest first");
        assert_eq!(b.due(later, 10).len(), 3);
    }

    #[test]
    fn overflow_flushes_the_oldest_early() {
        let t0 = Instant::now();
        let mut b = TraceBuffer::new(Limits {
            max_traces: 2,
            ..limits()
        });
        assert!(
            b.add(&request("a", 1, "x", vec![span(1, 1), span(2, 2)]), t0)
                .is_empty()
        );
        let early = b.add(&request("a", 1, "x", vec![span(3, 3)]), t0);
        assert_eq!(early.len(), 1);
        assert_eq!(
            (early[0].key.trace_id[0], early[0].reason),
            (1, FlushReason::MaxTraces)
        );
        assert_eq!(b.traces(), 2);

        let one = span(9, 9).encoded_len();
        let mut b = TraceBuffer::new(Limits {
            max_bytes: 3 * one + 100,
            ..limits()
        });
        b.add(&request("a", 1, "x", vec![span(1, 1), span(1, 2)]), t0);
        let early = b.add(&request("a", 1, "x", vec![span(2, 3), span(2, 4)]), t0);
        assert_eq!(early.len(), 1);
        assert_eq!(
            (early[0].key.trace_id[0], early[0].reason),
            (1, FlushReason::MaxBytes)
        );
        assert_eq!(early[0].spans, 2);
        assert!(b.bytes() <= 3 * one + 100);
        assert_eq!(b.spans(), 2);
    }

    #[test]
    fn late_spans_take_the_next_sequence_number() {
        let t0 = Instant::now();
        let mut b = TraceBuffer::new(Limits {
            remembered: 1,
            ..limits()
        });
        b.add(&request("a", 1, "x", vec![span(1, 1)]), t0);
        assert_eq!(b.drain()[0].sequence, 0);
        b.add(&request("a", 1, "x", vec![span(1, 2)]), t0);
        let late = b.drain();
        assert_eq!(late[0].sequence, 1);
        // The writer found 1 and 2 taken in the store and wrote 3.
        b.wrote(&late[0].key, 3);
        b.add(&request("a", 1, "x", vec![span(1, 3)]), t0);
        assert_eq!(b.drain()[0].sequence, 4);
        // Only one group is remembered: trace 2 pushes trace 1 out.
        b.add(&request("a", 1, "x", vec![span(2, 4)]), t0);
        b.drain();
        b.add(&request("a", 1, "x", vec![span(1, 5)]), t0);
        assert_eq!(
            b.drain()[0].sequence,
            0,
            "forgotten: the writer finds the free number"
        );
    }

    #[test]
    fn spans_without_a_valid_trace_id_share_one_group() {
        let mut b = TraceBuffer::new(limits());
        let mut bad = span(1, 1);
        bad.trace_id = vec![1, 2, 3];
        let mut none = span(1, 2);
        none.trace_id.clear();
        b.add(&request("a", 1, "x", vec![bad, none]), Instant::now());
        let all = b.drain();
        assert_eq!(all.len(), 1);
        assert!(all[0].key.trace_id.is_empty());
        assert_eq!(all[0].spans, 2);
    }
}
