//! `SpanData` from the SDK straight into `ExportTraceServiceRequest` events. Field numbers
//! are those of `opentelemetry/proto/trace/v1/trace.proto`; values map as
//! opentelemetry-proto's transform maps them (the tests hold the two byte for byte).

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{Link, SpanId, SpanKind, Status};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

use super::common::{attributes, nanos, resource, scope};
use super::{Oversize, level};
use crate::pack::Packer;
use crate::protobuf::{bytes, fixed32, fixed64, message, varint};

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
    let same = |a: &SpanData, b: &SpanData| a.instrumentation_scope == b.instrumentation_scope;
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

fn link_body(buf: &mut Vec<u8>, link: &Link) {
    let cx = &link.span_context;
    bytes(buf, 1, &cx.trace_id().to_bytes());
    bytes(buf, 2, &cx.span_id().to_bytes());
    trace_state(buf, 3, cx.trace_state());
    attributes(buf, 4, &link.attributes);
    varint(buf, 5, u64::from(link.dropped_attributes_count));
    fixed32(buf, 6, flags(cx.is_remote(), cx.trace_flags().to_u8()));
}

fn trace_state(buf: &mut Vec<u8>, field: u32, state: &opentelemetry::trace::TraceState) {
    // The W3C header form, built only when there is state (rare); no allocation otherwise.
    if *state != opentelemetry::trace::TraceState::NONE {
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
