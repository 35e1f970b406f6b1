//! A tracer that skips the SDK altogether while nobody listens.
//!
//! [`ListenerAwareSampler`](crate::ListenerAwareSampler) makes the SDK drop spans, but the
//! SDK still runs for each of them: a trace and span id from its random generator, the
//! sampler call, a span object. [`ListenerAwareTracerProvider`] checks the enable bit first
//! and, while it is clear, hands out what the API's no-op tracer does: a span that records
//! nothing and carries its parent's context.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{self, SpanBuilder, SpanContext, Status, TraceContextExt};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::core::Listener;

/// Wraps an [`SdkTracerProvider`] so that its tracers cost next to nothing while nobody
/// listens to the traces tracepoint: each span start asks the enable bit (one atomic load)
/// and, while it is clear, returns a non-recording span without calling into the SDK.
///
/// Trade-offs, while nobody listens, beyond those of
/// [`ListenerAwareSampler`](crate::ListenerAwareSampler):
/// - spans get no ids of their own: the context a new span carries, and that propagators
///   inject downstream, is its parent's (none for a root span), as with the API's no-op
///   tracer, so downstream services start traces of their own;
/// - no span processor of the provider sees these spans, including processors other than
///   this crate's: use it where user_events is the provider's only destination;
/// - integrations that need the SDK's own tracer type (`tracing-opentelemetry` asks for
///   `PreSampledTracer`) cannot take it; use the sampler there.
///
/// ```
/// use opentelemetry::global;
/// use opentelemetry::trace::Tracer as _;
/// use opentelemetry_sdk::trace::SdkTracerProvider;
/// use otlp_user_events::{ListenerAwareTracerProvider, UserEventsSpanProcessor};
///
/// let processor = UserEventsSpanProcessor::builder().build()?;
/// let listener = processor.listener();
/// let sdk = SdkTracerProvider::builder().with_span_processor(processor).build();
/// global::set_tracer_provider(ListenerAwareTracerProvider::new(sdk.clone(), listener));
/// global::tracer("checkout").in_span("place-order", |_cx| {});
/// # sdk.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct ListenerAwareTracerProvider {
    inner: SdkTracerProvider,
    listener: Listener,
}

impl ListenerAwareTracerProvider {
    /// Wraps `inner`, consulting `listener` (from
    /// [`UserEventsSpanProcessor::listener`](crate::UserEventsSpanProcessor::listener) or
    /// [`SpanExporter::listener`](crate::SpanExporter::listener)) for every new span.
    pub fn new(inner: SdkTracerProvider, listener: Listener) -> Self {
        Self { inner, listener }
    }

    /// The wrapped provider, for `force_flush` and `shutdown`.
    pub fn sdk(&self) -> &SdkTracerProvider {
        &self.inner
    }
}

impl trace::TracerProvider for ListenerAwareTracerProvider {
    type Tracer = ListenerAwareTracer;

    fn tracer_with_scope(&self, scope: InstrumentationScope) -> Self::Tracer {
        ListenerAwareTracer {
            inner: self.inner.tracer_with_scope(scope),
            listener: self.listener.clone(),
        }
    }
}

/// The tracer of a [`ListenerAwareTracerProvider`].
#[derive(Clone, Debug)]
pub struct ListenerAwareTracer {
    inner: SdkTracer,
    listener: Listener,
}

impl ListenerAwareTracer {
    /// Wraps one SDK tracer, consulting `listener` for every new span.
    pub fn new(inner: SdkTracer, listener: Listener) -> Self {
        Self { inner, listener }
    }
}

impl trace::Tracer for ListenerAwareTracer {
    type Span = ListenerAwareSpan;

    #[inline]
    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        if self.listener.listening() {
            ListenerAwareSpan(Inner::Sdk(
                self.inner.build_with_context(builder, parent_cx),
            ))
        } else {
            ListenerAwareSpan(Inner::Off(parent_cx.span().span_context().clone()))
        }
    }
}

/// A span of a [`ListenerAwareTracer`]: the SDK's, or, started while nobody listened, one
/// that records nothing.
#[derive(Debug)]
pub struct ListenerAwareSpan(Inner);

// Unboxed: boxing the SDK's span would cost an allocation for every recorded span, to save
// moving 288 bytes once when it starts.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Inner {
    Sdk(opentelemetry_sdk::trace::Span),
    /// Not recording; the parent's span context.
    Off(SpanContext),
}

/// The methods that take the time themselves are delegated rather than left to the trait's
/// defaults, so that a span nobody records never reads the clock.
impl trace::Span for ListenerAwareSpan {
    fn add_event<T>(&mut self, name: T, attributes: Vec<KeyValue>)
    where
        T: Into<Cow<'static, str>>,
    {
        if let Inner::Sdk(span) = &mut self.0 {
            span.add_event(name, attributes);
        }
    }

    fn record_error(&mut self, err: &dyn std::error::Error) {
        if let Inner::Sdk(span) = &mut self.0 {
            span.record_error(err);
        }
    }

    fn set_attributes(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Inner::Sdk(span) = &mut self.0 {
            span.set_attributes(attributes);
        }
    }

    fn end(&mut self) {
        if let Inner::Sdk(span) = &mut self.0 {
            span.end();
        }
    }

    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        if let Inner::Sdk(span) = &mut self.0 {
            span.add_event_with_timestamp(name, timestamp, attributes);
        }
    }

    fn span_context(&self) -> &SpanContext {
        match &self.0 {
            Inner::Sdk(span) => span.span_context(),
            Inner::Off(cx) => cx,
        }
    }

    fn is_recording(&self) -> bool {
        match &self.0 {
            Inner::Sdk(span) => span.is_recording(),
            Inner::Off(_) => false,
        }
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        if let Inner::Sdk(span) = &mut self.0 {
            span.set_attribute(attribute);
        }
    }

    fn set_status(&mut self, status: Status) {
        if let Inner::Sdk(span) = &mut self.0 {
            span.set_status(status);
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if let Inner::Sdk(span) = &mut self.0 {
            span.update_name(new_name);
        }
    }

    fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        if let Inner::Sdk(span) = &mut self.0 {
            span.add_link(span_context, attributes);
        }
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        if let Inner::Sdk(span) = &mut self.0 {
            span.end_with_timestamp(timestamp);
        }
    }
}
