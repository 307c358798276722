//! `[redis]`: the shared store (one node or a Cluster), its timeout and circuit breaker. The file structs (serde, `deny_unknown_fields`) and their validation into
//! the model.

use serde::Deserialize;

use super::*;

/// `[redis]`: the shared store for rate limits (and later the cache).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedis {
    /// A single node, `redis://host:port/db`.
    pub url: Option<String>,
    /// Redis Cluster seed nodes.
    pub cluster: Option<Vec<String>>,
    /// Bound on each Redis call.
    pub command_timeout_ms: Option<i64>,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: Option<i64>,
    /// How long an open breaker skips Redis before probing it again.
    pub breaker_cooldown_ms: Option<i64>,
}

impl Validator {
    pub(super) fn redis(&mut self, r: FileRedis) -> Option<RedisSpec> {
        let FileRedis {
            url,
            cluster,
            command_timeout_ms,
            breaker_failures,
            breaker_cooldown_ms,
        } = r;
        let target = match (url, cluster) {
            (Some(u), None) => self.redis_url("redis.url", &u).map(RedisTarget::Single),
            (None, Some(nodes)) if !nodes.is_empty() => {
                let before = self.problems.len();
                for (i, n) in nodes.iter().enumerate() {
                    self.redis_url(&format!("redis.cluster[{i}]"), n);
                }
                (self.problems.len() == before).then_some(RedisTarget::Cluster(nodes))
            }
            (Some(_), Some(_)) => {
                self.problem(
                    "redis",
                    "give either `url` (one node) or `cluster` (seed nodes), not both",
                );
                None
            }
            _ => {
                self.problem(
                    "redis",
                    "give `url = \"redis://127.0.0.1:6379/\"` or `cluster = [\"redis://…\", …]`",
                );
                None
            }
        };
        let timeout = self.ms(
            "redis.command_timeout_ms",
            command_timeout_ms,
            DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
        );
        let failures = self.int_in(
            "redis.breaker_failures",
            breaker_failures,
            DEFAULT_BREAKER_FAILURES as i64,
            1,
            1_000_000,
        );
        let cooldown = self.ms(
            "redis.breaker_cooldown_ms",
            breaker_cooldown_ms,
            DEFAULT_BREAKER_COOLDOWN_MS,
        );
        Some(RedisSpec {
            target: target?,
            command_timeout: timeout?,
            breaker_failures: failures? as u32,
            breaker_cooldown: cooldown?,
        })
    }

    pub(super) fn redis_url(&mut self, path: &str, url: &str) -> Option<String> {
        match ::redis::Client::open(url) {
            Ok(_) => Some(url.to_owned()),
            Err(e) => {
                self.problem(
                    path,
                    format!("`{url}` is not a Redis URL ({e}): expected redis://host:port/"),
                );
                None
            }
        }
    }
}
