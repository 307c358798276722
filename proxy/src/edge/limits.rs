//! The rate-limit step of `request_filter`: identify, check, and answer 401/429/503 when the
//! request must not go on. Response headers for allowed requests are added in `response_filter`.

use std::borrow::Cow;

use bytes::Bytes;
use http::StatusCode;
use pingora::prelude::*;
use tracing::debug;

use super::{respond, RequestCtx};
use crate::config::{LimitMode, LimitPolicy, RouteLimit};
use crate::metrics::LimitResult;
use crate::ratelimit::{self, headers, identify, Decision, RateLimiter, Reject, Source};
use crate::router::prefix_matches;
use crate::snapshot::Snapshot;

/// What was decided for this request, for the response headers.
pub struct RateInfo {
    /// The decision.
    pub decision: Decision,
    /// The limit that applied.
    pub policy: LimitPolicy,
    /// Tier name, or `route` for a route's own limit.
    pub name: Cow<'static, str>,
}

/// Apply rate limiting; `Ok(true)` when the request was answered here.
pub async fn apply(
    limiter: &RateLimiter,
    snapshot: &Snapshot,
    route: usize,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(rl) = &snapshot.rate_limit else {
        return Ok(false);
    };
    let rule = snapshot.routes[route].rate_limit;
    let req = session.req_header();
    if matches!(rule, RouteLimit::Off)
        || rl
            .spec
            .exempt_paths
            .iter()
            .any(|p| prefix_matches(p, req.uri.path()))
    {
        return Ok(false);
    }
    let identity = match identify(
        &rl.spec,
        rl.jwt.as_ref(),
        req,
        ctx.client_ip,
        limiter.redis(),
    )
    .await
    {
        Ok(i) => i,
        Err(reject) => {
            let (status, body, reason) = match &reject {
                Reject::UnknownApiKey => (
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":"unauthorized","reason":"unknown API key"}"#,
                    "unknown API key".to_owned(),
                ),
                Reject::BadToken(why) => (
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":"unauthorized","reason":"invalid bearer token"}"#,
                    why.clone(),
                ),
                Reject::KeyLookupFailed => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"error":"unavailable","reason":"cannot check the API key now"}"#,
                    "key lookup failed".to_owned(),
                ),
            };
            debug!(reason = %reason, "request rejected before rate limiting");
            let mut extra: Vec<(&'static str, String)> = Vec::new();
            if matches!(reject, Reject::BadToken(_)) {
                extra.push((
                    "www-authenticate",
                    "Bearer error=\"invalid_token\"".to_owned(),
                ));
            }
            Box::pin(respond(
                session,
                ctx,
                status,
                Bytes::from_static(body.as_bytes()),
                "application/json",
                &extra,
            ))
            .await?;
            return Ok(true);
        }
    };
    let (policy, route_part) = match rule {
        RouteLimit::Policy(p) => (p, Some(route)),
        _ => match rl.spec.tiers.get(identity.tier.as_ref()) {
            Some(p) => (*p, None),
            None => return Ok(false),
        },
    };
    let key = ratelimit::key(&rl.spec.key_prefix, &identity, &policy, route_part);
    let name = match route_part {
        Some(_) => Cow::Borrowed("route"),
        None => identity.tier,
    };
    let (decision, source) = limiter.check(&key, &policy, &rl.spec).await;
    let enforce = rl.spec.mode == LimitMode::Enforce;
    if source != Source::FailClosed {
        let result = match (decision.allowed, enforce) {
            (true, _) => LimitResult::Allowed,
            (false, true) => LimitResult::Limited,
            (false, false) => LimitResult::ShadowLimited,
        };
        let near = decision.allowed && decision.remaining.saturating_mul(10) < decision.limit;
        if let Some(m) = rl.tier_metrics.get(name.as_ref()) {
            m.record(result, near);
        }
        ctx.limits.result = Some(result);
    }
    if !decision.allowed && source == Source::FailClosed {
        let body = r#"{"error":"unavailable","reason":"rate limits cannot be checked now"}"#;
        let extra = [("retry-after", "1".to_owned())];
        Box::pin(respond(
            session,
            ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(body.as_bytes()),
            "application/json",
            &extra,
        ))
        .await?;
        return Ok(true);
    }
    if !decision.allowed && enforce {
        let retry = ratelimit::ceil_secs(decision.retry_after_ms).max(1);
        // Built by serde_json: a tier name is the operator's text and is escaped like any.
        let body = serde_json::json!({
            "error": "rate_limited",
            "policy": name,
            "limit": policy.limit,
            "window_seconds": ratelimit::ceil_secs(policy.window_ms),
            "retry_after_seconds": retry,
        })
        .to_string();
        let mut extra = headers(&decision, &policy, &name).unwrap_or_default();
        extra.push(("retry-after", retry.to_string()));
        Box::pin(respond(
            session,
            ctx,
            StatusCode::TOO_MANY_REQUESTS,
            Bytes::from(body),
            "application/json",
            &extra,
        ))
        .await?;
        return Ok(true);
    }
    ctx.limits.rate = Some(RateInfo {
        decision,
        policy,
        name,
    });
    Ok(false)
}
