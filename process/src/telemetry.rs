//! Traces (DESIGN §12, ADR 49): with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans go to that collector over OTLP/HTTP
//! protobuf, batched, beside the logs; without it nothing is traced and the spans that only
//! exist for traces are not even made ([`exported`]). The W3C trace context propagator is
//! installed either way, so a `traceparent` passes through a process that does not export.
//!
//! The standard variables apply: `OTEL_SERVICE_NAME` (else the name the process gives),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
//! `OTEL_SDK_DISABLED`.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

static EXPORTED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: code that makes spans only for traces asks first.
pub fn exported() -> bool {
    EXPORTED.load(Ordering::Relaxed)
}

/// Why traces cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP trace exporter")]
pub struct TelemetryError(#[source] opentelemetry_otlp::ExporterBuildError);

/// The trace pipeline of a process, flushed by [`Telemetry::shutdown`] (or on drop).
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the environment asks for traces to be exported.
pub fn requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The tracer provider exporting to the configured collector as `service`, if asked for.
pub(crate) fn provider(service: &str) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if !requested() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(TelemetryError)?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    EXPORTED.store(true, Ordering::Relaxed);
    Ok(Some(provider))
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
pub(crate) fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("dreampipe"))
}

impl Telemetry {
    pub(crate) fn new(provider: Option<SdkTracerProvider>) -> Self {
        Telemetry { provider }
    }
}
