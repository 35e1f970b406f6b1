//! The OTLP protobuf messages of metrics, traces and logs, as [prost] generates them from the
//! OpenTelemetry proto definitions, for the readers of `otlp-user-events` tracepoints.
//!
//! The types are those of the `opentelemetry-proto` crate (its generated files, vendored
//! unchanged in `src/vendor/`), byte for byte the same on the wire and in OTLP/JSON, but
//! without its conversions from the OpenTelemetry SDK, so a reader of OTLP does not depend
//! on the SDK. Features: `with-serde` (the OTLP/JSON mapping), `gen-tonic` (gRPC clients and
//! servers of the three services).
//!
//! [`Metric`](metrics::v1::Metric) gains the one place that knows the five kinds of metric
//! data: [`point_count`](metrics::v1::Metric::point_count),
//! [`take_points`](metrics::v1::Metric::take_points) and
//! [`append_points`](metrics::v1::Metric::append_points) work whatever the kind.
//!
//! ```
//! use prost::Message as _;
//! use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
//!
//! let request = ExportMetricsServiceRequest::decode(&b""[..])?;
//! assert!(request.resource_metrics.is_empty());
//! # Ok::<(), prost::DecodeError>(())
//! ```

// Generated code: neither formatted nor linted here; see src/vendor/mod.rs.
#[rustfmt::skip]
#[allow(warnings, missing_docs, clippy::all, clippy::pedantic)]
#[path = "vendor/mod.rs"]
mod proto;

mod points;

// The vendored serde helpers refer to `crate::tonic`.
use proto::tonic;

pub use points::Points;
pub use tonic::{collector, common, logs, metrics, resource, trace};
