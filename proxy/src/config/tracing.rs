//! `[tracing]`: W3C trace context and the optional OTLP span export. The file struct (serde,
//! `deny_unknown_fields`) and its validation into the model.

use serde::Deserialize;

use super::*;

/// `[tracing]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTracing {
    /// Continue or start a trace and send `traceparent` to the backend.
    pub propagate: Option<bool>,
    /// Fraction of new traces marked sampled (and exported).
    pub sample_ratio: Option<f64>,
    /// OTLP/HTTP traces endpoint; no export without it.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: Option<String>,
    /// Per export request.
    pub otlp_timeout_ms: Option<i64>,
}

impl Validator {
    pub(super) fn tracing(&mut self, t: Option<FileTracing>) -> Option<TracingSettings> {
        let FileTracing {
            propagate,
            sample_ratio,
            otlp_endpoint,
            service_name,
            otlp_timeout_ms,
        } = t.unwrap_or_default();
        let sample_ratio = self.fraction("tracing.sample_ratio", sample_ratio);
        let timeout = self.ms("tracing.otlp_timeout_ms", otlp_timeout_ms, 10_000);
        let endpoint = match otlp_endpoint {
            None => Some(None),
            Some(e) => match url::Url::parse(&e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some(Some(e))
                }
                _ => {
                    self.problem(
                        "tracing.otlp_endpoint",
                        format!(
                            "`{e}` is not an http(s) URL; expected the collector's OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces"
                        ),
                    );
                    None
                }
            },
        };
        let service_name = service_name.unwrap_or_else(|| "sluice".to_owned());
        if service_name.is_empty() {
            self.problem("tracing.service_name", "empty: expected a service name");
        }
        Some(TracingSettings {
            propagate: propagate.unwrap_or(true),
            sample_ratio: sample_ratio?,
            otlp_endpoint: endpoint?,
            service_name,
            otlp_timeout: timeout?,
        })
    }
}
