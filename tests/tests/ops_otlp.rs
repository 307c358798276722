//! Issue 17: the optional OTLP/HTTP span export. The test is the collector: it accepts
//! `POST /v1/traces` (protobuf) and decodes it with the OpenTelemetry project's own message
//! types. One span per sampled request, with the trace and span ids the backend saw and the
//! caller's span as parent; unsampled traces are not exported; a collector that is down costs
//! requests nothing.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::*;

/// Spans received, each with its resource's `service.name`.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

async fn collector() -> (u16, Received) {
    let received: Received = Arc::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .as_ref()
                        .and_then(|res| attr(&res.attributes, "service.name"))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            r.lock().unwrap().push((service.clone(), s));
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, received)
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match v {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

fn traceparent_of(body: &serde_json::Value) -> (String, String) {
    let tp = body["headers"]["traceparent"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_are_exported_as_server_spans_under_their_callers() {
    let (port, received) = collector().await;
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:{port}/v1/traces\"\nservice_name = \"edge-test\"\n{}",
        one_pool(&[bs[0].addr])
    ))
    .await;
    let c = client(None);

    // Continued, sampled.
    let r = c
        .get(sluice.url("/continued?secret=1"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (trace, span) = traceparent_of(&r.json().await.unwrap());
    // Continued, not sampled: not exported.
    let r = c
        .get(sluice.url("/unsampled"))
        .header(
            "traceparent",
            "00-11111111111111111111111111111111-2222222222222222-00",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Started here (sampled by default).
    let r = c.get(sluice.url("/started")).send().await.unwrap();
    let (new_trace, new_span) = traceparent_of(&r.json().await.unwrap());
    let spans = eventually(Duration::from_secs(15), "2 spans exported", || {
        let v = received.lock().unwrap().clone();
        (v.len() >= 2).then_some(v)
    })
    .await;
    let find = |path: &str| {
        spans
            .iter()
            .find(|(_, s)| attr(&s.attributes, "url.path").as_deref() == Some(path))
            .unwrap_or_else(|| panic!("no span for {path}: {spans:#?}"))
    };
    let (service, s) = find("/continued");
    assert_eq!(service, "edge-test");
    assert_eq!(hex::encode(&s.trace_id), trace);
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        hex::encode(&s.span_id),
        span,
        "the span the backend saw as its parent"
    );
    assert_eq!(hex::encode(&s.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(s.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(s.name, "GET");
    assert_eq!(
        attr(&s.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attr(&s.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attr(&s.attributes, "client.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr(&s.attributes, "network.peer.address"),
        Some(bs[0].addr.to_string())
    );
    assert!(
        !s.attributes
            .iter()
            .any(|kv| format!("{kv:?}").contains("secret")),
        "the query is not exported: {s:?}"
    );
    assert!(s.end_time_unix_nano > s.start_time_unix_nano);

    let (_, s) = find("/started");
    assert_eq!(hex::encode(&s.trace_id), new_trace);
    assert_eq!(hex::encode(&s.span_id), new_span);
    assert!(s.parent_span_id.is_empty(), "a root span");

    assert!(
        !spans
            .iter()
            .any(|(_, s)| attr(&s.attributes, "url.path").as_deref() == Some("/unsampled")),
        "an unsampled trace was exported"
    );
}

/// The collector is down (nothing listens): requests do not wait for the export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_requests_nothing() {
    let bs = backends(1).await;
    let dead = free_port();
    let sluice = Sluice::start(format!(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:{dead}/v1/traces\"\notlp_timeout_ms = 200\n{}",
        one_pool(&[bs[0].addr])
    ))
    .await;
    let c = client(None);
    let started = Instant::now();
    for _ in 0..200 {
        assert_eq!(c.get(sluice.url("/x")).send().await.unwrap().status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_bad_endpoint_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[tracing]\notlp_endpoint = \"localhost:4318\"\nsample_ratio = 2\n[upstreams.a]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n[[routes]]\nupstream = \"a\"\n",
    )
    .unwrap();
    let (st, _, err) = run_sluice(&["--check", "--config", config.to_str().unwrap()]);
    assert!(!st.success());
    assert!(err.contains("tracing.otlp_endpoint"), "{err}");
    assert!(err.contains("tracing.sample_ratio"), "{err}");
}
