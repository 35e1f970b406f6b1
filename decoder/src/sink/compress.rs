//! A batch's body as the OTLP sinks send it: the protobuf bytes, gzip'd or zstd'd, made
//! once per batch and algorithm and shared by every sink and attempt.
//!
//! Both transports compress the same way at the same level (gRPC framing is added by the
//! gRPC sink around the compressed bytes): zstd level -2 and gzip level 1, which
//! `scripts/bench-decoder.sh` measured (zstd several times cheaper than gzip for a smaller
//! result).

use std::io::Write as _;

use bytes::Bytes;
use flate2::write::GzEncoder;

use super::Compression;
use crate::batch::Batch;

/// zstd's level: the second of its fast levels. On 6.5 MB of the span exporter's events
/// (`zstd -b`), level 1 made them 8.18 times smaller at 478 MB/s, -1 8.26 times at 777 MB/s,
/// -2 8.24 times at 943 MB/s and -3 only 7.54 times: -2 halves the decoder's largest cost
/// after the OTLP check for the same size on the wire.
const ZSTD_LEVEL: i32 = -2;

/// The body of `batch` under `compression`.
pub(crate) fn body(batch: &Batch, compression: Compression) -> Result<Bytes, String> {
    match compression {
        Compression::Gzip => batch.compressed(0, gzip),
        Compression::Zstd => batch.compressed(1, zstd),
        _ => Ok(batch.protobuf_bytes()),
    }
}

fn gzip(body: &[u8]) -> Result<Bytes, String> {
    let mut gz = GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    gz.write_all(body)
        .and_then(|()| gz.finish())
        .map(Bytes::from)
        .map_err(|e| format!("gzip: {e}"))
}

fn zstd(body: &[u8]) -> Result<Bytes, String> {
    zstd::bulk::compress(body, ZSTD_LEVEL)
        .map(Bytes::from)
        .map_err(|e| format!("zstd: {e}"))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use ue_proto::collector::trace::v1::ExportTraceServiceRequest;
    use ue_proto::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::decode::Request;

    #[test]
    fn bodies_decompress_to_the_protobuf_and_are_made_once() {
        let batch = Batch::new(Request::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default(); 100],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }));
        let gz = body(&batch, Compression::Gzip).unwrap();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, batch.protobuf());
        let zs = body(&batch, Compression::Zstd).unwrap();
        assert_eq!(zstd::decode_all(&zs[..]).unwrap(), batch.protobuf());
        assert!(zs.len() < batch.bytes);
        // The second sink asking gets the same buffer, not a second compression.
        assert_eq!(
            body(&batch, Compression::Zstd).unwrap().as_ptr(),
            zs.as_ptr()
        );
        let plain = body(&batch, Compression::None).unwrap();
        assert_eq!(
            plain.as_ptr(),
            batch.protobuf().as_ptr(),
            "shared, not copied"
        );
    }
}
