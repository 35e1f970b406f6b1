//! `SpanData` from the SDK straight into `ExportTraceServiceRequest` events. Field numbers
//! are those of `opentelemetry/proto/trace/v1/trace.proto`; values map as
//! opentelemetry-proto's transform maps them (the tests hold the two byte for byte).

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{Link, SpanId, SpanKind, Status, TraceState};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

use super::common::{attributes, nanos, resource, scope};
use super::{Oversize, level};
use crate::pack::Packer;
use crate::protobuf::{bytes, concat, fixed32, fixed64, message, varint};

/// Nesting levels of a traces event: the request, ResourceSpans, ScopeSpans.
pub(crate) const LEVELS: usize = 3;

/// Field number of the spans in `ScopeSpans`.
const SPANS: u32 = 2;

/// Opens the resource level for the spans that follow.
pub(crate) fn begin_resource(packer: &mut Packer<LEVELS>, res: &Resource) {
    let shell = packer.begin(level::RESOURCE, 1);
    message(&mut shell.prefix, 1, |b| resource(b, res));
    bytes(
        &mut shell.suffix,
        3,
        res.schema_url().unwrap_or_default().as_bytes(),
    );
}

/// Opens the scope level for the spans that follow.
pub(crate) fn begin_scope(packer: &mut Packer<LEVELS>, sc: &InstrumentationScope) {
    let shell = packer.begin(level::SCOPE, 2);
    message(&mut shell.prefix, 1, |b| scope(b, sc));
    bytes(
        &mut shell.suffix,
        3,
        sc.schema_url().unwrap_or_default().as_bytes(),
    );
}

/// Adds one span under the open resource and scope, flushing full events to `emit`.
#[inline]
pub(crate) fn add_span(
    packer: &mut Packer<LEVELS>,
    span: &SpanData,
    emit: &mut dyn FnMut(&[u8], usize),
    oversize: &mut Oversize,
) {
    if packer
        .item(SPANS, true, |b| span_body(b, span), emit)
        .is_err()
    {
        oversize.add(&span.name);
    }
}

/// Whether two scopes are equal, first by identity: spans of one tracer carry clones of its
/// scope, whose static name and version are the same pointers, so the common case costs a
/// few compares instead of comparing strings.
#[inline]
pub(crate) fn same_scope(a: &InstrumentationScope, b: &InstrumentationScope) -> bool {
    let same_str = |x: Option<&str>, y: Option<&str>| match (x, y) {
        (Some(x), Some(y)) => std::ptr::eq(x, y),
        (None, None) => true,
        _ => false,
    };
    let identical = std::ptr::eq(a.name(), b.name())
        && same_str(a.version(), b.version())
        && same_str(a.schema_url(), b.schema_url())
        && a.attributes().next().is_none()
        && b.attributes().next().is_none();
    identical || a == b
}

/// Packs `spans`, grouped by instrumentation scope in the order each scope first appears, into
/// events of at most the packer's limit, handing each to `emit`.
pub(crate) fn pack(
    packer: &mut Packer<LEVELS>,
    res: &Resource,
    spans: &[SpanData],
    emit: &mut dyn FnMut(&[u8], usize),
) -> Oversize {
    let mut oversize = Oversize::default();
    begin_resource(packer, res);
    // Batches hold few scopes, most often one: a scan per scope beats hashing every span's
    // scope. A scope never equal to itself (a NaN attribute) gets a group of its own per span,
    // as in the OTLP transform's grouping.
    let same =
        |a: &SpanData, b: &SpanData| same_scope(&a.instrumentation_scope, &b.instrumentation_scope);
    match spans.first() {
        None => {}
        Some(first) if spans.iter().all(|s| same(s, first)) => {
            begin_scope(packer, &first.instrumentation_scope);
            for span in spans {
                add_span(packer, span, emit, &mut oversize);
            }
        }
        Some(_) => {
            let mut done = vec![false; spans.len()];
            for (i, lead) in spans.iter().enumerate() {
                if done[i] {
                    continue;
                }
                begin_scope(packer, &lead.instrumentation_scope);
                add_span(packer, lead, emit, &mut oversize);
                for (j, span) in spans.iter().enumerate().skip(i + 1) {
                    if !done[j] && same(span, lead) {
                        add_span(packer, span, emit, &mut oversize);
                        done[j] = true;
                    }
                }
            }
        }
    }
    packer.flush(emit);
    oversize
}

/// The body of a `Span`.
fn span_body(buf: &mut Vec<u8>, span: &SpanData) {
    let cx = &span.span_context;
    if *cx.trace_state() == TraceState::NONE && span.name.len() < 128 {
        span_head(buf, span);
    } else {
        bytes(buf, 1, &cx.trace_id().to_bytes());
        bytes(buf, 2, &cx.span_id().to_bytes());
        trace_state(buf, 3, cx.trace_state());
        if span.parent_span_id != SpanId::INVALID {
            bytes(buf, 4, &span.parent_span_id.to_bytes());
        }
        bytes(buf, 5, span.name.as_bytes());
        varint(buf, 6, kind(&span.span_kind));
        fixed64(buf, 7, nanos(span.start_time));
        fixed64(buf, 8, nanos(span.end_time));
    }
    attributes(buf, 9, &span.attributes);
    varint(buf, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        message(buf, 11, |buf| {
            fixed64(buf, 1, nanos(event.timestamp));
            bytes(buf, 2, event.name.as_bytes());
            attributes(buf, 3, &event.attributes);
            varint(buf, 4, u64::from(event.dropped_attributes_count));
        });
    }
    varint(buf, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        message(buf, 13, |buf| link_body(buf, link));
    }
    varint(buf, 14, u64::from(span.links.dropped_count));
    message(buf, 15, |buf| match &span.status {
        Status::Error { description } => {
            bytes(buf, 2, description.as_bytes());
            varint(buf, 3, 2);
        }
        Status::Ok => varint(buf, 3, 1),
        Status::Unset => {}
    });
    fixed32(
        buf,
        16,
        flags(span.parent_span_is_remote, cx.trace_flags().to_u8()),
    );
}

/// Fields 1 to 8 of a span without trace state and with a name under 128 bytes (nearly
/// every span): ids, name, kind and times, written as [`span_body`]'s general path writes
/// them, in one [`concat`] instead of eight appends.
#[inline]
fn span_head(buf: &mut Vec<u8>, span: &SpanData) {
    let cx = &span.span_context;
    let mut ids = [0u8; 38];
    ids[..2].copy_from_slice(&[1 << 3 | 2, 16]);
    ids[2..18].copy_from_slice(&cx.trace_id().to_bytes());
    ids[18..20].copy_from_slice(&[2 << 3 | 2, 8]);
    ids[20..28].copy_from_slice(&cx.span_id().to_bytes());
    let mut ids_len = 28;
    if span.parent_span_id != SpanId::INVALID {
        ids[28..30].copy_from_slice(&[4 << 3 | 2, 8]);
        ids[30..38].copy_from_slice(&span.parent_span_id.to_bytes());
        ids_len = 38;
    }
    let name = span.name.as_bytes();
    let name_key = [5 << 3 | 2, name.len() as u8];
    let name_key = if name.is_empty() {
        &[][..]
    } else {
        &name_key[..]
    };
    let mut tail = [0u8; 20];
    tail[..2].copy_from_slice(&[6 << 3, kind(&span.span_kind) as u8]);
    let mut tail_len = 2;
    for (field, time) in [(7u8, span.start_time), (8, span.end_time)] {
        let nanos = nanos(time);
        if nanos != 0 {
            tail[tail_len] = field << 3 | 1;
            tail[tail_len + 1..tail_len + 9].copy_from_slice(&nanos.to_le_bytes());
            tail_len += 9;
        }
    }
    concat(buf, [&ids[..ids_len], name_key, name, &tail[..tail_len]]);
}

fn link_body(buf: &mut Vec<u8>, link: &Link) {
    let cx = &link.span_context;
    bytes(buf, 1, &cx.trace_id().to_bytes());
    bytes(buf, 2, &cx.span_id().to_bytes());
    trace_state(buf, 3, cx.trace_state());
    attributes(buf, 4, &link.attributes);
    varint(buf, 5, u64::from(link.dropped_attributes_count));
    fixed32(buf, 6, flags(cx.is_remote(), cx.trace_flags().to_u8()));
}

fn trace_state(buf: &mut Vec<u8>, field: u32, state: &TraceState) {
    // The W3C header form, built only when there is state (rare); no allocation otherwise.
    if *state != TraceState::NONE {
        bytes(buf, field, state.header().as_bytes());
    }
}

/// `SpanFlags`: the W3C trace flags, and whether the parent (or linked) context is remote.
fn flags(remote: bool, trace_flags: u8) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(trace_flags) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}
