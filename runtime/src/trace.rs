//! One trace from the external record to the view row (DESIGN §12, ADR 49): the W3C trace
//! context travels in a `traceparent` header from the adapter's request to the receiver,
//! is stored as a header of the event's NATS message by the append, and is the parent of the
//! projector's commit of that event. The spans made here exist only while traces are
//! exported ([`process::telemetry::exported`]); otherwise [`span!`] is `Span::none()` and
//! nothing is injected.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C trace context header, in HTTP requests and on stored events.
pub const TRACEPARENT: &str = "traceparent";

/// Whether traces are exported, so spans and trace headers are worth making.
pub fn enabled() -> bool {
    process::telemetry::exported()
}

/// An `info` span when traces are exported, else `Span::none()` (nothing is recorded).
#[macro_export]
macro_rules! span {
    ($($field:tt)*) => {
        if $crate::trace::enabled() {
            tracing::info_span!($($field)*)
        } else {
            tracing::Span::none()
        }
    };
}

/// Makes `span` a child of the trace context an HTTP request carries, if it carries one.
pub fn continue_from_http(span: &Span, headers: &axum::http::HeaderMap) {
    if span.is_none() || !headers.contains_key(TRACEPARENT) {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only for a span that has no OpenTelemetry counterpart: then there is no trace.
    let _ = span.set_parent(parent);
}

/// Makes `span` a child of a stored `traceparent` value.
pub fn continue_from(span: &Span, traceparent: &str) {
    if span.is_none() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// Adds the trace context of `span` to an HTTP request's headers.
pub fn inject_http(span: &Span, headers: &mut axum::http::HeaderMap) {
    if span.is_none() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// The `traceparent` of `span`, to store with an event; `None` when nothing is traced.
pub fn traceparent(span: &Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Middleware (`axum::middleware::from_fn`, as a route layer so the route is known): each
/// request in a server span named `<METHOD> <route>`, continuing the caller's trace.
pub async fn server_spans(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument as _;
    if !enabled() {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || request.uri().path().to_owned(),
            |path| path.as_str().to_owned(),
        );
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    continue_from_http(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
