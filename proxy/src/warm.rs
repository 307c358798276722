//! Cache warming: fetch `cache.warm_urls` through Sluice's own first listener (so they are
//! routed, limited and cached like any request) at start and after every reload, at most
//! `cache.warm_concurrency` at a time. `/readyz` reports ready only once the current generation's
//! warm-up finished.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::process::App;

/// How often the service looks for a new generation.
const POLL: Duration = Duration::from_millis(250);
/// Bound on one warm-up fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The background service that warms the cache.
pub struct WarmService {
    app: Arc<App>,
}

impl WarmService {
    /// Warming for `app`.
    pub fn new(app: Arc<App>) -> Self {
        WarmService { app }
    }
}

#[async_trait]
impl BackgroundService for WarmService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut done_generation = 0;
        loop {
            let generation = self.app.snapshot.load().generation;
            if generation != done_generation {
                let config = self.app.config.load_full();
                let urls = config.cache.warm_urls.clone();
                let target = config.server.listen.first().copied();
                match (urls.is_empty(), target) {
                    (true, _) => {}
                    (false, None) => {
                        warn!("cache.warm_urls needs a plain HTTP listener to fetch through")
                    }
                    (false, Some(addr)) => {
                        let (ok, failed) = warm(addr, &urls, config.cache.warm_concurrency).await;
                        info!(
                            event = "cache_warmed",
                            generation, ok, failed, "cache warm-up done"
                        );
                    }
                }
                done_generation = generation;
                self.app.warmed_generation.store(generation, Relaxed);
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// Fetch every URL through `addr`; returns (succeeded, failed).
async fn warm(addr: std::net::SocketAddr, urls: &[String], concurrency: usize) -> (usize, usize) {
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(urls.len());
    for url in urls {
        let (limit, url) = (limit.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.ok()?;
            tokio::time::timeout(FETCH_TIMEOUT, fetch(addr, &url))
                .await
                .ok()?
                .ok()
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        match t.await {
            Ok(Some(status)) if (200..400).contains(&status) => ok += 1,
            _ => failed += 1,
        }
    }
    (ok, failed)
}

/// One `GET` over HTTP/1.1 to `addr` with the URL's host; returns the status. The body is read
/// and dropped (the cache stores it on the way).
async fn fetch(addr: std::net::SocketAddr, url: &str) -> std::io::Result<u16> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let host = uri.authority().map_or("", |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    // At start the listener may open a moment after this service: retry briefly.
    let mut tries = 0;
    let mut s = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if tries >= 40 => return Err(e),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-warm\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n]);
        }
    }
    let status = std::str::from_utf8(&head)
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|c| c.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(status)
}
