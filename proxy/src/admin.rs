//! The admin API on its own listener (default `127.0.0.1:9901`): liveness, readiness, status,
//! the effective config (secrets redacted), Prometheus metrics and live reload.
//!
//! Authorization: a bearer token (`[admin] token` or `token_env`) is required for every
//! mutating call, and for every call when the listener is not on loopback, except the probes
//! (`GET /healthz`, `GET /readyz`: they reveal nothing and a kubelet cannot send a token) and,
//! with `[admin] public_metrics`, `GET /metrics`. Without a token, mutating calls are refused
//! (403); the config loader refuses a non-loopback listener without one, so a token-less admin
//! API is never reachable off the machine.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::cache::PurgeKind;
use crate::process::App;
use crate::reload::ReloadError;

/// The admin API application.
pub struct AdminApi {
    app: Arc<App>,
}

impl AdminApi {
    /// The admin API over `app`.
    pub fn new(app: Arc<App>) -> Self {
        AdminApi { app }
    }

    /// `Err(response)` when the call is not allowed.
    fn authorize(
        &self,
        session: &ServerSession,
        mutating: bool,
    ) -> Result<(), Box<Response<Vec<u8>>>> {
        let config = self.app.config.load();
        let loopback = config.admin.listen.is_none_or(|a| a.ip().is_loopback());
        if !mutating {
            let path = session.req_header().uri.path();
            let public = loopback
                || matches!(path, "/healthz" | "/readyz")
                || (path == "/metrics" && config.admin.public_metrics);
            if public {
                return Ok(());
            }
        }
        let Some(token) = &config.admin.token else {
            return Err(Box::new(json_response(
                StatusCode::FORBIDDEN,
                &json!({"error": "forbidden", "reason": "mutating admin calls need a token: set [admin] token or token_env"}),
            )));
        };
        let given = session
            .req_header()
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            let mut r = json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "unauthorized", "reason": "missing or wrong bearer token"}),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
            Err(Box::new(r))
        }
    }

    fn readiness(&self) -> Response<Vec<u8>> {
        let draining = self.app.draining.load(Relaxed);
        let listening = self.app.listening.load(Relaxed);
        let health = self.app.health_checked();
        let warmed = self.app.warmed_generation.load(Relaxed) >= 1;
        let ready = !draining && listening && health && warmed;
        let body = json!({
            "ready": ready,
            "config_loaded": true,
            "listening": listening,
            "health_checked": health,
            "warmed": warmed,
            "draining": draining,
            "generation": self.app.snapshot.load().generation,
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &body)
    }

    async fn status(&self) -> Response<Vec<u8>> {
        let snapshot = self.app.snapshot.load_full();
        let config = self.app.config.load_full();
        let now = crate::util::clock::now_ns();
        let redis = match self.app.limiter.redis() {
            None => json!({"configured": false}),
            Some(r) => match r.ping().await {
                Ok(rtt) => json!({
                    "configured": true,
                    "reachable": true,
                    "latency_ms": rtt.as_secs_f64() * 1000.0,
                }),
                Err(e) => json!({"configured": true, "reachable": false, "error": e}),
            },
        };
        let pools: Vec<Value> = snapshot
            .pools
            .iter()
            .zip(&config.upstreams)
            .map(|(pool, spec)| {
                let backends: Vec<Value> = pool
                    .balancer
                    .slots()
                    .iter()
                    .enumerate()
                    .map(|(i, slot)| {
                        let s = &slot.state;
                        let c = s.counters();
                        json!({
                            "backend": pool.names[i],
                            "weight": slot.weight,
                            "backup": slot.backup,
                            "healthy": s.probe_up(),
                            "ejected": s.ejected(now),
                            "available": s.available(now),
                            "in_flight": s.inflight(),
                            "selections": c.selections,
                            "failures": c.failures,
                            "ejections": c.ejections,
                            "retries": c.retries,
                        })
                    })
                    .collect();
                json!({
                    "name": pool.name,
                    "strategy": spec.strategy.name(),
                    "active_health_checks": pool.health.is_some(),
                    "backends": backends,
                })
            })
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "generation": snapshot.generation,
                "draining": self.app.draining.load(Relaxed),
                "in_flight": self.app.metrics.in_flight(),
                "websockets": self.app.metrics.websockets(),
                "redis": redis,
                "pools": pools,
            }),
        )
    }

    async fn reload(&self) -> Response<Vec<u8>> {
        let app = Arc::clone(&self.app);
        let result = tokio::task::spawn_blocking(move || app.reload("admin")).await;
        match result {
            Ok(Ok(r)) => json_response(
                StatusCode::OK,
                &json!({"reloaded": true, "generation": r.generation}),
            ),
            Ok(Err(ReloadError::Invalid(e))) => {
                let problems: Vec<Value> = e
                    .problems
                    .iter()
                    .map(|p| {
                        json!({
                            "file": e.file.display().to_string(),
                            "key": p.path,
                            "line": p.location.map(|l| l.0),
                            "column": p.location.map(|l| l.1),
                            "message": p.message,
                        })
                    })
                    .collect();
                json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"reloaded": false, "error": "invalid_config", "problems": problems}),
                )
            }
            Ok(Err(ReloadError::RestartRequired(keys))) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({
                    "reloaded": false,
                    "error": "restart_required",
                    "keys": keys,
                    "message": "these settings only change with a restart (or --upgrade); nothing was reloaded",
                }),
            ),
            Err(_) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"reloaded": false, "error": "reload task failed"}),
            ),
        }
    }
}

impl AdminApi {
    fn cache_store_name(&self) -> &'static str {
        if self.app.cache.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    async fn cache_stats(&self) -> Response<Vec<u8>> {
        let cache = self.app.cache;
        let config = self.app.config.load_full();
        let mut tiers = serde_json::Map::new();
        let (mut hits, mut lookups, mut stale) = (0u64, 0u64, 0u64);
        for (i, tier) in crate::config::CacheTier::ALL.iter().enumerate() {
            let results = cache.stats.results(*tier);
            let mut r = serde_json::Map::new();
            for (label, n) in results {
                r.insert(label.to_ascii_lowercase(), json!(n));
                match label {
                    "HIT" | "STALE" | "REVALIDATED" => {
                        hits += n;
                        lookups += n;
                    }
                    "MISS" | "EXPIRED" => lookups += n,
                    _ => {}
                }
                if label == "STALE" {
                    stale += n;
                }
            }
            let routes: Vec<&str> = config
                .routes
                .iter()
                .filter(|rt| rt.cache.tier == Some(*tier))
                .map(|rt| rt.name.as_str())
                .collect();
            tiers.insert(
                tier.name().to_owned(),
                json!({"ttl_seconds": config.cache.ttl_seconds[i], "routes": routes, "results": r}),
            );
        }
        let (stored, stored_bytes) = cache.stats.stored_totals();
        let (entries, bytes) = match (cache.memory, cache.redis) {
            (Some(m), _) => {
                let (e, b) = m.usage();
                (json!(e), json!(b))
            }
            (None, Some(r)) => (
                r.count_entries().await.map_or(Value::Null, |n| json!(n)),
                Value::Null,
            ),
            _ => (Value::Null, Value::Null),
        };
        let purged: serde_json::Map<String, Value> = cache
            .stats
            .purges()
            .iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "store": self.cache_store_name(),
                "hits": hits,
                "misses": lookups - hits,
                "hit_ratio": if lookups == 0 { 0.0 } else { hits as f64 / lookups as f64 },
                "stale_served": stale,
                "entries": entries,
                "bytes": bytes,
                "stored_by_this_instance": stored,
                "stored_bytes_by_this_instance": stored_bytes,
                "purged": purged,
                "tiers": tiers,
            }),
        )
    }

    async fn cache_health(&self) -> Response<Vec<u8>> {
        match self.app.cache.redis {
            None => json_response(StatusCode::OK, &json!({"store": "memory", "healthy": true})),
            Some(r) => match r.ping().await {
                Ok(rtt) => json_response(
                    StatusCode::OK,
                    &json!({"store": "redis", "healthy": true, "latency_ms": rtt.as_secs_f64() * 1000.0, "breaker_open": r.breaker_open()}),
                ),
                Err(e) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"store": "redis", "healthy": false, "error": e, "breaker_open": r.breaker_open()}),
                ),
            },
        }
    }

    async fn cache_delete(&self, query: &str) -> Response<Vec<u8>> {
        let url = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "url")
            .map(|(_, v)| v.into_owned());
        let Some(url) = url.filter(|u| !u.is_empty()) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "give the URL: DELETE /cache?url=http://host/path?query"}),
            );
        };
        let url = self.app.cache.key_rules.url(&url);
        let key = pingora::cache::CacheKey::new(url.clone(), "");
        let removed = self.app.cache.invalidate(&[key], PurgeKind::Url).await;
        json_response(StatusCode::OK, &json!({"url": url, "removed": removed}))
    }

    async fn cache_purge(&self, body: &[u8]) -> Response<Vec<u8>> {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("expected a JSON body like {{\"pattern\": \"http://host/api/*\"}}: {e}")}),
                )
            }
        };
        if let Some(tags) = v.get("tags") {
            let Some(tags) = tags
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|t| t.as_str().map(str::to_owned))
                        .collect::<Option<Vec<String>>>()
                })
                .filter(|t| !t.is_empty())
            else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "`tags` must be a non-empty array of strings"}),
                );
            };
            let removed = match (self.app.cache.memory, self.app.cache.redis) {
                (Some(m), _) => Ok(m.purge_tags(&tags)),
                (None, Some(r)) => r.purge_tags(&tags).await.map_err(|e| e.to_string()),
                _ => Ok(0),
            };
            return match removed {
                Ok(n) => {
                    self.app.cache.stats.purged(PurgeKind::Tag, n);
                    json_response(StatusCode::OK, &json!({"tags": tags, "removed": n}))
                }
                Err(e) => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": e})),
            };
        }
        let Some(pattern) = v.get("pattern").and_then(Value::as_str) else {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "give `pattern`: a glob over URLs (scheme://host/path?query), e.g. \"http://example.com/api/*\""}),
            );
        };
        let glob = match crate::util::glob::matcher(pattern) {
            Ok(g) => g,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("`pattern`: {e}")}),
                )
            }
        };
        let removed = match (self.app.cache.memory, self.app.cache.redis) {
            (Some(m), _) => Ok(m.purge_matching(&glob)),
            (None, Some(r)) => r.purge_scan(Some(&glob)).await.map_err(|e| e.to_string()),
            _ => Ok(0),
        };
        match removed {
            Ok(n) => {
                self.app.cache.stats.purged(PurgeKind::Pattern, n);
                json_response(StatusCode::OK, &json!({"pattern": pattern, "removed": n}))
            }
            Err(e) => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": e})),
        }
    }

    async fn cache_flush(&self) -> Response<Vec<u8>> {
        let removed = match (self.app.cache.memory, self.app.cache.redis) {
            (Some(m), _) => Ok(m.clear()),
            (None, Some(r)) => r.purge_scan(None).await.map_err(|e| e.to_string()),
            _ => Ok(0),
        };
        match removed {
            Ok(n) => {
                self.app.cache.stats.purged(PurgeKind::Flush, n);
                json_response(StatusCode::OK, &json!({"flushed": true, "removed": n}))
            }
            Err(e) => json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": e})),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        let mutating = !matches!(method, Method::GET | Method::HEAD);
        if let Err(r) = self.authorize(session, mutating) {
            return *r;
        }
        // Read the (small) request body; the connection can then be reused.
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = session.read_request_body().await {
            if body.len() + chunk.len() > 64 * 1024 {
                return json_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &json!({"error": "admin request bodies are limited to 64 KiB"}),
                );
            }
            body.extend_from_slice(&chunk);
        }
        let query = session.req_header().uri.query().unwrap_or("").to_owned();
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"alive": true})),
            (Method::GET, "/readyz") => self.readiness(),
            (Method::GET, "/status") => self.status().await,
            (Method::GET, "/config") => {
                let config = self.app.config.load_full();
                match serde_json::to_value(&*config) {
                    Ok(v) => json_response(StatusCode::OK, &v),
                    Err(e) => json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &json!({"error": e.to_string()}),
                    ),
                }
            }
            (Method::GET, "/metrics") => {
                let body = self.app.metrics.render();
                response(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body.into_bytes(),
                )
            }
            (Method::POST, "/reload") => self.reload().await,
            (Method::GET, "/cache/stats") => self.cache_stats().await,
            (Method::GET, "/cache/health") => self.cache_health().await,
            (Method::DELETE, "/cache") => self.cache_delete(&query).await,
            (Method::POST, "/cache/purge") => self.cache_purge(&body).await,
            (Method::POST, "/cache/flush") => self.cache_flush().await,
            (
                _,
                "/healthz" | "/readyz" | "/status" | "/config" | "/metrics" | "/reload"
                | "/cache/stats" | "/cache/health" | "/cache" | "/cache/purge" | "/cache/flush",
            ) => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method not allowed"}),
            ),
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "not found", "endpoints": ["GET /healthz", "GET /readyz", "GET /status", "GET /config", "GET /metrics", "POST /reload", "GET /cache/stats", "GET /cache/health", "DELETE /cache?url=URL", "POST /cache/purge", "POST /cache/flush"]}),
            ),
        }
    }
}

fn response(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let len = r.body().len();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type.parse().expect("static"));
    h.insert(header::CONTENT_LENGTH, len.into());
    h.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    response(status, "application/json", body)
}

/// Compare secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    // `subtle` compares in time that depends only on the lengths.
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
