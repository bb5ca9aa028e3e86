//! Logging: one subscriber per process, text for people or JSON for collectors; with the
//! `otel` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over OTLP
//! (http/protobuf), and HTTP requests join the caller's trace.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// Keeps the span exporter running; dropping it flushes what is buffered.
#[must_use = "dropping it stops exporting spans"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("flushing the OTLP span exporter failed: {e}");
            }
        }
    }
}

/// Installs the global subscriber. A second call (tests build many applications in one
/// process) leaves the first in place.
pub fn init(service: &str, filter: &str, json: bool) -> Telemetry {
    let (env_filter, invalid) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    // Colours only for a terminal: escape codes cost formatting and clutter files and pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_ansi(ansi));
    let json = json.then(|| tracing_subscriber::fmt::layer().json().flatten_event(true));
    let registry = tracing_subscriber::registry()
        .with(env_filter)
        .with(text)
        .with(json);
    #[cfg(feature = "otel")]
    let (telemetry, installed) = {
        let (provider, failed) = match otel::provider(service) {
            Some(Ok(provider)) => (Some(provider), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        let layer = provider.as_ref().map(otel::layer);
        let installed = registry.with(layer).try_init();
        if let Some(error) = failed {
            tracing::warn!(%error, "cannot export spans over OTLP; logging only");
        }
        (Telemetry { provider }, installed)
    };
    #[cfg(not(feature = "otel"))]
    let (telemetry, installed) = {
        let _ = service;
        (Telemetry {}, registry.try_init())
    };
    if installed.is_ok() {
        if let Some(error) = invalid {
            tracing::warn!(filter, %error, "RUST_LOG is not a valid filter; logging at info");
        }
    }
    telemetry
}

/// Makes the request's span a child of the caller's trace (`traceparent`), and replaces
/// `traceparent` with the request span's own context, so the events the request writes carry
/// it on. Without the `otel` feature, or with no exporter running, it changes nothing.
pub fn join_trace(span: &tracing::Span, traceparent: &mut Option<String>) {
    #[cfg(feature = "otel")]
    otel::join_trace(span, traceparent);
    #[cfg(not(feature = "otel"))]
    let _ = (span, traceparent);
}

#[cfg(feature = "otel")]
mod otel {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::SpanExporter;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    /// A batch exporter to `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter reads that and the other
    /// standard `OTEL_EXPORTER_OTLP_*` variables itself); `None` when it is not set.
    pub fn provider(service: &str) -> Option<Result<SdkTracerProvider, String>> {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
        if endpoint.trim().is_empty() {
            return None;
        }
        let exporter = match SpanExporter::builder().with_http().build() {
            Ok(exporter) => exporter,
            Err(e) => return Some(Err(e.to_string())),
        };
        let resource = Resource::builder()
            .with_service_name(service.to_owned())
            .build();
        Some(Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build()))
    }

    pub fn layer<S>(
        provider: &SdkTracerProvider,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("service-kit"))
    }

    pub fn join_trace(span: &tracing::Span, traceparent: &mut Option<String>) {
        let propagator = TraceContextPropagator::new();
        if let Some(parent) = traceparent.as_deref() {
            let carrier = HashMap::from([("traceparent".to_owned(), parent.to_owned())]);
            let _ = span.set_parent(propagator.extract(&carrier));
        }
        let mut carrier = HashMap::new();
        propagator.inject_context(&span.context(), &mut carrier);
        if let Some(own) = carrier.remove("traceparent") {
            *traceparent = Some(own);
        }
    }
}
