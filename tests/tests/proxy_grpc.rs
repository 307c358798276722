//! Issue 16 (gRPC): real gRPC calls (tonic's client, the standard `grpc.health.v1.Health`
//! service served by backend-sample) through Sluice, over an h2c client listener to an h2c pool
//! and over a TLS listener to a TLS `h2` pool: unary `Check`, server-streaming `Watch` whose
//! next message follows a change at the backend, a non-OK `grpc-status` from the backend
//! passed through, and Sluice's own refusals (no route, no backend, rate limit) answered as gRPC
//! statuses. Also the `kind = "grpc"` active probe.

mod support;

use std::time::Duration;

use support::ca::Ca;
use support::*;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn req(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

async fn h2c_client(s: &Sluice) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", s.log()));
    HealthClient::new(channel)
}

fn pool(backend: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[upstreams.grpc]\nprotocol = \"h2c\"\nbackends = [{{ addr = \"{backend}\" }}]\n{extra}{}",
        route_all("grpc")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_pass_with_their_status_over_h2c() {
    let b = BackendProc::start("g1").await;
    let s = Sluice::with_config(pool(b.addr, ""))
        .server_extra("h2c = true\n")
        .start()
        .await;
    let mut c = h2c_client(&s).await;

    let r = c
        .check(req(""))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    assert_eq!(r.get_ref().status, ServingStatus::Serving as i32);
    // A non-OK status from the backend (in its trailers) reaches the client as it was.
    let e = c.check(req("no.such.Service")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");

    // Server streaming: the first message at once, the next when the backend's state changes.
    let mut watch = c.watch(req("")).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    b.control("health", "status=503").await;
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the streamed update arrives")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);

    // HTTP/1.1 clients still work on the same (h2c) listener.
    let r = client(None).get(s.url("/plain")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["version"], "HTTP/2.0", "the pool speaks h2c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_refusals_are_grpc_statuses() {
    let mut b = BackendProc::start("g1").await;
    // /grpc.health.v1.Health/... is routed and limited to 2 calls a minute; nothing else is.
    let body = format!(
        "[upstreams.grpc]\nprotocol = \"h2c\"\nretries = 0\nbackends = [{{ addr = \"{}\" }}]\n\
         [[routes]]\npath_prefix = \"/grpc.health.v1.Health\"\nupstream = \"grpc\"\n\
         [rate_limit]\n[rate_limit.tiers.anonymous]\nlimit = 2\nwindow_ms = 60000\n",
        b.addr
    );
    let s = Sluice::with_config(body)
        .server_extra("h2c = true\n")
        .admin_token("t0ken")
        .start()
        .await;
    let mut c = h2c_client(&s).await;
    c.check(req("")).await.unwrap();

    // The backend is gone: UNAVAILABLE, not an HTTP 502 the client cannot read.
    b.kill();
    let e = c.check(req("")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");

    // Over the limit: RESOURCE_EXHAUSTED.
    let e = c.check(req("")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");

    // No route: UNIMPLEMENTED, with Sluice's reason as the message.
    let s2 = Sluice::with_config(format!(
        "[upstreams.grpc]\nprotocol = \"h2c\"\nbackends = [{{ addr = \"{}\" }}]\n\
         [[routes]]\npath_prefix = \"/other\"\nupstream = \"grpc\"\n",
        b.addr
    ))
    .server_extra("h2c = true\n")
    .start()
    .await;
    let e = h2c_client(&s2).await.check(req("")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
    assert!(e.message().contains("no route"), "{e}");

    // The metrics count the status the refusal stands for, not the 200 it was sent as.
    let m = s
        .metrics_when(|m| {
            m.contains("method=\"POST\",route=\"*/grpc.health.v1.Health\",status_class=\"4xx\"")
        })
        .await;
    assert!(
        m.contains("method=\"POST\",route=\"*/grpc.health.v1.Health\",status_class=\"5xx\""),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_to_an_h2_tls_pool() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let ca_file = ca.write(d, "ca");
    ca.leaf(&["localhost", "127.0.0.1"], d, "leaf");
    let b = BackendProc::start_with(
        "tls",
        &[
            "--tls-cert",
            d.join("leaf.pem").to_str().unwrap(),
            "--tls-key",
            d.join("leaf.key").to_str().unwrap(),
        ],
    )
    .await;
    let s = Sluice::with_config(format!(
        "[upstreams.grpc]\nprotocol = \"h2\"\nbackends = [{{ addr = \"{}\" }}]\n[upstreams.grpc.tls]\nca = \"{}\"\n{}",
        b.addr,
        ca_file.display(),
        route_all("grpc")
    ))
    .tls()
    .start()
    .await;
    let tls_addr = s.tls_addr.unwrap();
    let demo_ca = std::fs::read(workspace_root().join("conf/tls/cert.pem")).unwrap();
    let channel = Channel::from_shared(format!("https://localhost:{}", tls_addr.port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(demo_ca))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect: {e:?}\n{}", s.log()));
    let mut c = HealthClient::new(channel);
    let r = c
        .check(req(""))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    assert_eq!(r.get_ref().status, ServingStatus::Serving as i32);
    let e = c.check(req("nope")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_probe_follows_the_backend_serving_status() {
    let b = BackendProc::start("probed").await;
    let s = Sluice::with_config(pool(
        b.addr,
        "[upstreams.grpc.health]\nkind = \"grpc\"\ninterval_ms = 50\ntimeout_ms = 1000\ninitial = \"unhealthy\"\nrise = 1\nfall = 1\n",
    ))
    .admin_token("t0ken")
    .start()
    .await;
    // Starts out, enters after a SERVING answer.
    s.status_contains("\"healthy\":true").await;
    assert_eq!(
        client(None).get(s.url("/x")).send().await.unwrap().status(),
        200
    );
    // NOT_SERVING takes it out.
    b.control("health", "status=503").await;
    s.status_contains("\"healthy\":false").await;
    assert_eq!(
        client(None).get(s.url("/x")).send().await.unwrap().status(),
        503
    );
}
