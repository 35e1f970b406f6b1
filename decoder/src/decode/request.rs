//! One decoded OTLP export request, of any signal.

use prost::Message;
use ue_proto::collector::logs::v1::ExportLogsServiceRequest;
use ue_proto::collector::metrics::v1::ExportMetricsServiceRequest;
use ue_proto::collector::trace::v1::ExportTraceServiceRequest;

pub use ue_wire::{Signal, TracepointNames};

/// One OTLP export request of any signal.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// A metrics request.
    Metrics(ExportMetricsServiceRequest),
    /// A traces request.
    Traces(ExportTraceServiceRequest),
    /// A logs request.
    Logs(ExportLogsServiceRequest),
}

impl Request {
    /// The request's signal.
    pub fn signal(&self) -> Signal {
        match self {
            Self::Metrics(_) => Signal::Metrics,
            Self::Traces(_) => Signal::Traces,
            Self::Logs(_) => Signal::Logs,
        }
    }

    /// Decodes `bytes` as the request type of `signal`.
    pub fn decode(signal: Signal, bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Ok(match signal {
            Signal::Metrics => Self::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
            Signal::Traces => Self::Traces(ExportTraceServiceRequest::decode(bytes)?),
            Signal::Logs => Self::Logs(ExportLogsServiceRequest::decode(bytes)?),
        })
    }

    /// The protobuf encoding.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            Self::Metrics(r) => r.encode_to_vec(),
            Self::Traces(r) => r.encode_to_vec(),
            Self::Logs(r) => r.encode_to_vec(),
        }
    }

    /// The protobuf encoding's length.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Metrics(r) => r.encoded_len(),
            Self::Traces(r) => r.encoded_len(),
            Self::Logs(r) => r.encoded_len(),
        }
    }

    /// Data points (metrics), spans (traces) or log records (logs) in the request.
    pub fn items(&self) -> u64 {
        match self {
            Self::Metrics(r) => metrics_items(r),
            Self::Traces(r) => traces_items(r),
            Self::Logs(r) => logs_items(r),
        }
    }
}

/// Data points in a metrics request.
pub(crate) fn metrics_items(r: &ExportMetricsServiceRequest) -> u64 {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| m.point_count() as u64)
        .sum()
}

/// Spans in a traces request.
pub(crate) fn traces_items(r: &ExportTraceServiceRequest) -> u64 {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}

/// Log records in a logs request.
pub(crate) fn logs_items(r: &ExportLogsServiceRequest) -> u64 {
    r.resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len() as u64)
        .sum()
}
