//! WebSocket through Sluice: echo of every frame kind, ip_hash affinity across reconnects and
//! failover, the idle limit replacing read timeouts, and least_conn counting open sockets.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<tokio::net::TcpStream>;

/// Open `ws://{sluice}/ws` from source address `from`; returns the socket and the backend named
/// in the first message.
async fn connect(sluice: SocketAddr, from: Option<IpAddr>) -> (Ws, String) {
    connect_path(sluice, from, "/ws").await
}

async fn connect_path(sluice: SocketAddr, from: Option<IpAddr>, path: &str) -> (Ws, String) {
    let socket = match from {
        Some(IpAddr::V4(_)) | None => tokio::net::TcpSocket::new_v4().unwrap(),
        Some(IpAddr::V6(_)) => tokio::net::TcpSocket::new_v6().unwrap(),
    };
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    let stream = socket.connect(sluice).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{sluice}{path}"), stream)
        .await
        .expect("websocket handshake through sluice");
    assert_eq!(resp.status(), 101);
    let hello = next_text(&mut ws).await;
    let id = hello
        .strip_prefix("hello from ")
        .expect("greeting")
        .to_owned();
    (ws, id)
}

async fn next_msg(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no message within 10 s")
        .expect("stream ended")
        .expect("websocket error")
}

async fn next_text(ws: &mut Ws) -> String {
    match next_msg(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// A pool `ws` of `addrs`; `extra` keys go in `[upstreams.ws]`, `tables` after it.
fn ws_pool_with(strategy: &str, extra: &str, addrs: &[SocketAddr], tables: &str) -> String {
    let members: Vec<_> = addrs.iter().map(|a| (*a, None)).collect();
    format!(
        "[upstreams.ws]\nstrategy = \"{strategy}\"\n{extra}\n{}\n{tables}\n[[routes]]\nupstream = \"ws\"\n",
        backends_toml(&members)
    )
}

fn ws_pool(strategy: &str, extra: &str, addrs: &[SocketAddr]) -> String {
    ws_pool_with(strategy, extra, addrs, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_kind_passes_intact() {
    let bs = backends(1).await;
    let sluice = Sluice::start(ws_pool("round_robin", "", &[bs[0].addr])).await;
    let (mut ws, id) = connect(sluice.addr, None).await;
    assert_eq!(id, "b1");

    ws.send(Message::Text("hello through sluice".into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, "hello through sluice");

    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    match next_msg(&mut ws).await {
        Message::Binary(b) => assert!(b[..] == big[..], "1 MiB binary message changed"),
        other => panic!("expected binary, got {other:?}"),
    }

    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match next_msg(&mut ws).await {
        Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected pong, got {other:?}"),
    }

    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Library(4000),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    match next_msg(&mut ws).await {
        Message::Close(Some(f)) => {
            assert_eq!(f.code, CloseCode::Library(4000));
            assert_eq!(f.reason, "bye");
        }
        other => panic!("expected close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_keeps_each_client_on_one_backend_and_fails_over_stickily() {
    let mut bs = Vec::new();
    for id in ["b1", "b2", "b3"] {
        bs.push(BackendProc::start(id).await);
    }
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let sluice = Sluice::start(ws_pool_with(
        "ip_hash",
        "connect_timeout_ms = 500",
        &addrs,
        "[upstreams.ws.health]\ninterval_ms = 100\ntimeout_ms = 200\nfall = 1\nrise = 1",
    ))
    .await;
    let sources: Vec<IpAddr> = (2..10).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    let mut home = Vec::new();
    for ip in &sources {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (ws, id) = connect(sluice.addr, Some(*ip)).await;
            drop(ws);
            seen.push(id);
        }
        seen.dedup();
        assert_eq!(seen.len(), 1, "{ip} moved across reconnects: {seen:?}");
        home.push(seen.pop().unwrap());
    }
    // Kill the backend that most clients use.
    let victim = ["b1", "b2", "b3"]
        .into_iter()
        .max_by_key(|b| home.iter().filter(|h| h == b).count())
        .unwrap();
    let vi = bs.iter().position(|b| b.id == victim).unwrap();
    bs[vi].kill();
    for (ip, h) in sources.iter().zip(&home) {
        let addr = sluice.addr;
        let (_, first) = match tokio::spawn(connect(addr, Some(*ip))).await {
            Ok(v) => v,
            Err(e) => panic!("{e}\nsluice log:\n{}", sluice.log()),
        };
        let (_, second) = match tokio::spawn(connect(addr, Some(*ip))).await {
            Ok(v) => v,
            Err(e) => panic!("{e}\nsluice log:\n{}", sluice.log()),
        };
        if h == victim {
            assert_ne!(first, victim);
        } else {
            assert_eq!(&first, h, "{ip} moved although its backend is fine");
        }
        assert_eq!(first, second, "{ip} is not sticky after failover");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_idle_limit_replaces_read_timeouts_both_ways() {
    let bs = backends(1).await;
    // The pool's read timeout (300 ms) would cut an idle socket; the WebSocket limit replaces it.
    let sluice = Sluice::start(ws_pool(
        "round_robin",
        "read_timeout_ms = 300\nwebsocket_idle_timeout_ms = 1500",
        &[bs[0].addr],
    ))
    .await;
    let (mut ws, _) = connect(sluice.addr, None).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    ws.send(Message::Text("still here".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still here");

    // Idle past the limit: Sluice closes the connection.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let t = Instant::now();
    let _ = ws.send(Message::Text("too late".into())).await;
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("not closed");
    assert!(
        matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "got {end:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_counts_for_least_conn_until_it_closes() {
    let bs = backends(2).await;
    let sluice = Sluice::start(ws_pool("least_conn", "", &[bs[0].addr, bs[1].addr])).await;
    let (mut ws, busy) = match tokio::spawn(connect(sluice.addr, None)).await {
        Ok(v) => v,
        Err(e) => panic!("{e}\nsluice log:\n{}", sluice.log()),
    };
    let c = client(None);
    for i in 0..6 {
        let r = c.get(sluice.url("/lc")).send().await.unwrap();
        if backend_of(&r) == busy {
            // Seen once in CI (2026-12-03, not reproduced in 49 runs here): say enough to tell
            // an ejected or retried backend from a WebSocket whose count was released early.
            let (_, status) = sluice.admin_get("/status").await;
            let (_, metrics) = sluice.admin_get("/metrics").await;
            panic!(
                "least_conn sent request {i} to {busy}, the backend holding the socket; \
                 response headers {:?}\nstatus: {status}\nmetrics:\n{metrics}\nlog:\n{}",
                r.headers(),
                sluice.log()
            );
        }
    }
    ws.close(None).await.unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    // Released on close: the backend takes requests again.
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let r = c.get(sluice.url("/lc")).send().await.unwrap();
        if backend_of(&r) == busy {
            break;
        }
        assert!(Instant::now() < end, "the closed socket still counts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_clients_on_every_backend_through_redis() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let mut bs = Vec::new();
    for id in ["b1", "b2", "b3"] {
        bs.push(BackendProc::start_with(id, &["--redis", &url]).await);
    }
    let addrs: Vec<_> = bs.iter().map(|b| b.addr).collect();
    let sluice = Sluice::start(ws_pool("round_robin", "", &addrs)).await;
    // Round-robin puts one client on each backend.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect_path(sluice.addr, None, "/ws/broadcast").await);
    }
    let mut on: Vec<_> = clients.iter().map(|(_, id)| id.clone()).collect();
    on.sort();
    assert_eq!(on, ["b1", "b2", "b3"]);
    for round in 0..3 {
        let text = format!("message {round} from the client on {}", clients[round].1);
        clients[round]
            .0
            .send(Message::Text(text.clone().into()))
            .await
            .unwrap();
        for (ws, id) in &mut clients {
            assert_eq!(next_text(ws).await, text, "client on {id}");
        }
    }
}

/// Regression test for cloudflare/pingora#946 (patched in vendor/pingora-proxy): under load, the
/// upstream's 101 can be read before the upgrade request's empty body is handled, which tore the
/// tunnel down and lost the backend's first message (~1% of handshakes on 2 loaded cores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_websocket_handshakes_under_load_all_survive() {
    let bs = backends(1).await;
    let sluice = Sluice::start(ws_pool("round_robin", "", &[bs[0].addr])).await;
    let addr = sluice.addr;
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(tokio::spawn(async move {
            let mut lost = 0;
            for _ in 0..200 {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (mut ws, _) =
                    tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
                        .await
                        .unwrap();
                if !matches!(ws.next().await, Some(Ok(Message::Text(_)))) {
                    lost += 1;
                }
            }
            lost
        }));
    }
    let mut lost = 0;
    for w in workers {
        lost += w.await.unwrap();
    }
    assert_eq!(
        lost, 0,
        "{lost} of 800 upgraded connections lost the first message"
    );
}

/// An open WebSocket runs in a tunnel of its own after the request that upgraded it (vendored
/// pingora-proxy README section 12), and it still counts as what it is: a client connection
/// under `max_connections` until it closes, and a request whose access-log line (status 101,
/// its whole duration) is written when it ends, not at the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_keeps_its_connection_slot_and_logs_when_it_closes() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let sluice = Sluice::with_config(format!(
        "[logging]\naccess_log_path = \"{}\"\naccess_log_format = '$status $duration_ms'\n{}",
        log.display(),
        ws_pool("round_robin", "", &[bs[0].addr])
    ))
    .server_extra("max_connections = 2")
    .start()
    .await;
    let read_log = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let opened = Instant::now();
    let (mut first, _) = connect(sluice.addr, None).await;
    let (mut second, _) = connect(sluice.addr, None).await;
    // Both sockets still echo: the tunnels carry data both ways.
    for ws in [&mut first, &mut second] {
        ws.send(Message::text("ping")).await.unwrap();
        assert_eq!(next_text(ws).await, "ping");
    }
    // A third client waits while both sockets are open...
    let addr = sluice.addr;
    let waiting = tokio::spawn(async move {
        let r = client(None)
            .get(format!("http://{addr}/ping"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        r.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served while two WebSockets held max_connections = 2\n{}",
        sluice.log()
    );
    assert_eq!(
        read_log(),
        Vec::<String>::new(),
        "a line before any socket closed"
    );
    // ...and is served once one closes, whose line then says 101 and how long it was open.
    first.close(None).await.unwrap();
    while let Some(Ok(m)) = first.next().await {
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    assert_eq!(waiting.await.unwrap(), Ok(200));
    let held = opened.elapsed().as_millis();
    let lines = eventually(Duration::from_secs(5), "the closed socket's line", || {
        let l = read_log();
        l.iter().any(|l| l.starts_with("101 ")).then_some(l)
    })
    .await;
    let line = lines.iter().find(|l| l.starts_with("101 ")).unwrap();
    let ms: f64 = line[4..]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{line:?}"));
    assert!(
        ms >= 700.0 && ms <= held as f64,
        "the socket was open {held} ms at most and 700 at least; its line says {line:?}"
    );
    // The other socket still works.
    second.send(Message::text("still")).await.unwrap();
    assert_eq!(next_text(&mut second).await, "still");
}

/// Regression: `max_body_bytes` counted a WebSocket's messages as request body, so a socket on
/// a route with a body limit was cut (and its client got nothing more) once its messages added
/// up to the limit. After the 101 they are the WebSocket's, not a request body's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_body_bytes_does_not_cut_a_websocket() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "{}max_body_bytes = 1024\n",
        ws_pool("round_robin", "", &[bs[0].addr])
    ))
    .await;
    let (mut ws, _) = connect(sluice.addr, None).await;
    let message = "x".repeat(600);
    for i in 0..8 {
        ws.send(Message::text(message.clone())).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => assert_eq!(t.len(), 600, "message {i}"),
            other => panic!(
                "message {i} ({} bytes sent so far) was not echoed: {other:?}\n{}",
                600 * (i + 1),
                sluice.log()
            ),
        }
    }
    // The limit still holds for a request body on the same route.
    let r = client(None)
        .post(sluice.url("/echo"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

/// A client that vanishes mid-WebSocket (its socket reset, no close frame) and a backend that
/// dies under an open one each end their tunnel (vendored pingora-proxy README section 12): the
/// socket stops counting (`sluice_websockets_open`, released when the tunnel's `logging` runs),
/// the client of the dead backend is told, and the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_or_backend_ends_the_websocket_on_both_sides() {
    let mut bs = [
        BackendProc::start("b1").await,
        BackendProc::start("b2").await,
    ];
    let sluice = Sluice::start(ws_pool("least_conn", "", &[bs[0].addr, bs[1].addr])).await;

    // The client resets its connection.
    let (ws, _) = connect(sluice.addr, None).await;
    assert_eq!(sluice.metric("sluice_websockets_open").await, 1.0);
    let tcp = ws.into_inner();
    tcp.set_zero_linger().unwrap();
    drop(tcp);
    let mut open = 1.0;
    let end = Instant::now() + Duration::from_secs(5);
    while open != 0.0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
        open = sluice.metric("sluice_websockets_open").await;
    }
    assert_eq!(
        open,
        0.0,
        "a reset client's socket still counts\n{}",
        sluice.log()
    );

    // The backend dies under an open socket: the client sees the end, the gauge drops.
    let (mut ws, id) = connect(sluice.addr, None).await;
    let i = if id == "b1" { 0 } else { 1 };
    bs[i].kill();
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {}
        other => panic!("the client was not told its backend died: {other:?}"),
    }
    let end = Instant::now() + Duration::from_secs(5);
    while sluice.metric("sluice_websockets_open").await != 0.0 {
        assert!(Instant::now() < end, "a dead backend's socket still counts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the proxy serves on.
    let (mut ws, _) = connect(sluice.addr, None).await;
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "after");
}
