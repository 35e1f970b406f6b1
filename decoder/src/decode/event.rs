//! From an event's fields to an OTLP request: pure, and every failure has a reason label.

use ue_wire::layout;

use crate::decode::validate::{Invalid, validate_request};
use crate::decode::{Request, Signal};

/// Why an event was skipped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The fields do not have the exporters' layout (bad rel_loc, truncated, unknown
    /// protocol or version).
    #[error(transparent)]
    Layout(#[from] layout::LayoutError),
    /// The buffer is not a valid OTLP request of the tracepoint's signal.
    #[error("buffer of {len} bytes is not a valid OTLP {signal} request: {source}")]
    Protobuf {
        /// The tracepoint's signal.
        signal: Signal,
        /// Buffer length.
        len: usize,
        /// What prost said.
        #[source]
        source: prost::DecodeError,
    },
    /// The buffer is not a well-formed OTLP request of the tracepoint's signal (found
    /// without decoding it, see [`check_event`]).
    #[error("buffer of {len} bytes is not a valid OTLP {signal} request: {source}")]
    Otlp {
        /// The tracepoint's signal.
        signal: Signal,
        /// Buffer length.
        len: usize,
        /// What is wrong with it.
        #[source]
        source: Invalid,
    },
    /// A valid request that carries no data point or span.
    #[error("OTLP {0} request with no data points or spans")]
    Empty(Signal),
}

impl Malformed {
    /// A short, stable label for counting skips by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Layout(e) => e.reason(),
            Self::Protobuf { .. } | Self::Otlp { .. } => "invalid_otlp",
            Self::Empty(_) => "empty",
        }
    }
}

/// Decodes an event's fields (the bytes after `trace_entry`, possibly padded) into the
/// request its buffer carries.
pub fn decode_event(signal: Signal, fields: &[u8]) -> Result<Request, Malformed> {
    let payload = layout::decode(fields)?;
    let request =
        Request::decode(signal, payload.buffer).map_err(|source| Malformed::Protobuf {
            signal,
            len: payload.buffer.len(),
            source,
        })?;
    if request.items() == 0 {
        return Err(Malformed::Empty(signal));
    }
    Ok(request)
}

/// Checks an event's fields as [`decode_event`] would decode them, without decoding the
/// request: returns the request's protobuf bytes and how many items they hold.
pub fn check_event(signal: Signal, fields: &[u8]) -> Result<(&[u8], u64), Malformed> {
    let payload = layout::decode(fields)?;
    let items = validate_request(signal, payload.buffer).map_err(|source| Malformed::Otlp {
        signal,
        len: payload.buffer.len(),
        source,
    })?;
    if items == 0 {
        return Err(Malformed::Empty(signal));
    }
    Ok((payload.buffer, items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn fields(buffer: &[u8]) -> Vec<u8> {
        let mut f = layout::header(buffer.len()).to_vec();
        f.extend_from_slice(buffer);
        f.extend_from_slice(&[0; 4]); // perf's padding
        f
    }

    #[test]
    fn a_valid_event_decodes_and_bad_ones_are_labelled() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let good = decode_event(Signal::Traces, &fields(&req.encode_to_vec())).unwrap();
        assert_eq!(good.items(), 1);

        let reason = |f: &[u8], s| decode_event(s, f).unwrap_err().reason();
        assert_eq!(
            reason(&fields(&[0xFF, 0xFF, 0xFF]), Signal::Traces),
            "invalid_otlp"
        );
        assert_eq!(reason(&fields(&[]), Signal::Metrics), "empty");
        assert_eq!(reason(&[1, 2, 3], Signal::Metrics), "truncated");
        let mut bad = fields(b"x");
        bad[layout::REL_LOC_OFFSET + 2] = 0xFF; // length far past the end
        assert_eq!(reason(&bad, Signal::Metrics), "bad_rel_loc");
    }
}
