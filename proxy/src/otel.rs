//! Optional OTLP/HTTP export of one span per request (`[tracing] otlp_endpoint`), on the
//! OpenTelemetry SDK: its batch processor queues finished spans (bounded, 2048; a full queue
//! drops, never blocks) and exports them from a thread of its own with a blocking HTTP client.
//! Off by default; when off the request path pays one `Option` test. Only sampled requests are
//! exported, with the trace and span ids Sluice sent to the backend, so the backend's spans hang
//! under Sluice's in the collector.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::tracectx::TraceContext;

/// The exporter could not be built (a bad endpoint, no HTTP client).
#[derive(Debug, thiserror::Error)]
#[error("tracing.otlp_endpoint: {0}")]
pub struct ExportError(String);

/// The span exporter of a process.
pub struct SpanExport {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// One finished request, as exported.
pub struct RequestSpan<'a> {
    /// The trace and Sluice's span.
    pub trace: &'a TraceContext,
    /// When the request began and ended.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Request method.
    pub method: &'a str,
    /// Path (no query: it may hold secrets).
    pub path: &'a str,
    /// `Host`.
    pub host: &'a str,
    /// Status sent (0: none).
    pub status: u16,
    /// Client address.
    pub client: Option<IpAddr>,
    /// Route name.
    pub route: Option<&'a str>,
    /// Pool name.
    pub upstream: Option<&'a str>,
    /// Backend address tried last.
    pub backend: Option<&'a str>,
    /// HTTP version as the access log writes it (`HTTP/1.1`, `HTTP/2`).
    pub protocol: &'a str,
}

impl SpanExport {
    /// Build the exporter for `endpoint` (the full OTLP/HTTP traces URL). Must run outside any
    /// async runtime: the blocking HTTP client starts its own.
    pub fn start(endpoint: &str, service: &str, timeout: Duration) -> Result<Self, ExportError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build()
            .map_err(|e| ExportError(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // Sluice decides sampling itself (the trace flags it sends to the backend).
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(
                Resource::builder_empty()
                    .with_service_name(service.to_owned())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("sluice");
        Ok(SpanExport { provider, tracer })
    }

    /// Queue `s` for export, when its trace is sampled.
    pub fn record(&self, s: &RequestSpan<'_>) {
        if !s.trace.sampled() {
            return;
        }
        let parent = match s.trace.parent_id {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(s.trace.trace_id),
                SpanId::from_bytes(p),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let mut attributes = Vec::with_capacity(10);
        attributes.push(KeyValue::new("http.request.method", s.method.to_owned()));
        attributes.push(KeyValue::new("url.path", s.path.to_owned()));
        attributes.push(KeyValue::new("server.address", s.host.to_owned()));
        attributes.push(KeyValue::new(
            "network.protocol.version",
            s.protocol.trim_start_matches("HTTP/").to_owned(),
        ));
        if s.status != 0 {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(s.status),
            ));
        }
        if let Some(ip) = s.client {
            attributes.push(KeyValue::new("client.address", ip.to_string()));
        }
        if let Some(r) = s.route {
            attributes.push(KeyValue::new("http.route", r.to_owned()));
        }
        if let Some(u) = s.upstream {
            attributes.push(KeyValue::new("sluice.upstream", u.to_owned()));
        }
        if let Some(b) = s.backend {
            attributes.push(KeyValue::new("network.peer.address", b.to_owned()));
        }
        let mut span = self
            .tracer
            .span_builder(s.method.to_owned())
            .with_trace_id(TraceId::from_bytes(s.trace.trace_id))
            .with_span_id(SpanId::from_bytes(s.trace.span_id))
            .with_kind(SpanKind::Server)
            .with_start_time(s.start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        // OpenTelemetry's HTTP conventions: a server span is an error on 5xx (and when no
        // response was sent), not on 4xx.
        if s.status == 0 || s.status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end_with_timestamp(s.end);
    }

    /// Export what is queued and stop (before the process exits), within `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "spans not exported at exit");
        }
    }
}
