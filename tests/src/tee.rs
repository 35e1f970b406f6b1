//! Exporters that pass one SDK export on to several exporters and keep the reference OTLP
//! conversion (opentelemetry-proto's) of what the SDK handed over.

use std::future::{Future, ready};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as SdkSpanExporter};
use otlp_user_events::{MetricsExporter, SpanExporter};

use crate::block_on;

/// What a tee saw: the reference requests and each inner exporter's results, as text.
#[derive(Debug, Default)]
pub struct Seen<R> {
    /// The reference conversion of every export.
    pub reference: Vec<R>,
    /// `results[i]` lists inner exporter `i`'s export results (`Ok` or the error's text).
    pub results: Vec<Vec<Result<(), String>>>,
}

fn record<R>(seen: &Mutex<Seen<R>>, reference: R, results: Vec<OTelSdkResult>) {
    let mut seen = seen.lock().unwrap();
    seen.reference.push(reference);
    seen.results.resize_with(results.len(), Vec::new);
    for (i, r) in results.into_iter().enumerate() {
        seen.results[i].push(r.map_err(|e| e.to_string()));
    }
}

/// Hands each metrics export to every inner exporter in turn.
#[derive(Debug)]
pub struct TeeMetrics {
    inner: Vec<MetricsExporter>,
    seen: Arc<Mutex<Seen<ExportMetricsServiceRequest>>>,
}

impl TeeMetrics {
    /// A tee over `inner` (which must agree on temporality) and the handle to what it saw.
    pub fn new(
        inner: Vec<MetricsExporter>,
    ) -> (Self, Arc<Mutex<Seen<ExportMetricsServiceRequest>>>) {
        let seen = Arc::default();
        (
            Self {
                inner,
                seen: Arc::clone(&seen),
            },
            seen,
        )
    }
}

impl PushMetricExporter for TeeMetrics {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        let results = self
            .inner
            .iter()
            .map(|e| block_on(e.export(metrics)))
            .collect();
        record(
            &self.seen,
            ExportMetricsServiceRequest::from(metrics),
            results,
        );
        ready(Ok(()))
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner
            .iter()
            .try_for_each(|e| e.shutdown_with_timeout(timeout))
    }

    fn temporality(&self) -> Temporality {
        self.inner[0].temporality()
    }
}

/// Hands each span batch to every inner exporter in turn.
#[derive(Debug)]
pub struct TeeSpans {
    inner: Vec<SpanExporter>,
    resource: ResourceAttributesWithSchema,
    seen: Arc<Mutex<Seen<ExportTraceServiceRequest>>>,
}

impl TeeSpans {
    /// A tee over `inner` and the handle to what it saw.
    pub fn new(inner: Vec<SpanExporter>) -> (Self, Arc<Mutex<Seen<ExportTraceServiceRequest>>>) {
        let seen = Arc::default();
        let tee = Self {
            inner,
            resource: ResourceAttributesWithSchema::default(),
            seen: Arc::clone(&seen),
        };
        (tee, seen)
    }
}

impl SdkSpanExporter for TeeSpans {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let reference = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch.clone(), &self.resource),
        };
        let results = self
            .inner
            .iter()
            .map(|e| block_on(e.export(batch.clone())))
            .collect();
        record(&self.seen, reference, results);
        ready(Ok(()))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner
            .iter()
            .try_for_each(|e| e.shutdown_with_timeout(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
        self.inner.iter_mut().for_each(|e| e.set_resource(resource));
    }
}
