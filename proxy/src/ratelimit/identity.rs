//! Who a request counts against: an API key (config or Redis hash), a verified JWT `sub`, or the
//! client IP (through `X-Forwarded-For` only from trusted proxies). A bad key or token is a
//! rejection, never an anonymous pass.

use std::borrow::Cow;
use std::net::IpAddr;

use jsonwebtoken::{decode, DecodingKey, Validation};
use pingora::http::RequestHeader;

use super::redis::RedisStore;
use crate::config::{
    JwtKey, JwtSpec, RateLimitSpec, TIER_ANONYMOUS, TIER_AUTHENTICATED, TIER_PREMIUM,
};
use crate::util::ip::ip_text;

/// The counted identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `ip:…`, `user:…` or `key:…`: the part of the Redis key naming the client.
    pub key: String,
    /// Tier whose limit applies (borrowed for the built-in tiers: no allocation per request).
    pub tier: Cow<'static, str>,
}

/// Why a request is refused before counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// 401: unknown API key.
    UnknownApiKey,
    /// 401: invalid, expired or badly signed token (the reason is for logs only).
    BadToken(String),
    /// 503: the API key could not be looked up (Redis down) under `on_redis_error = closed`.
    KeyLookupFailed,
}

/// A JWT verifier built once per config.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    tier_claim: String,
}

impl JwtVerifier {
    /// Build from a validated spec (the PEM was checked at load).
    pub fn new(spec: &JwtSpec) -> Option<Self> {
        let (key, alg) = match &spec.key {
            JwtKey::Hs256(s) => (DecodingKey::from_secret(s), jsonwebtoken::Algorithm::HS256),
            JwtKey::Rs256(p) => (
                DecodingKey::from_rsa_pem(p).ok()?,
                jsonwebtoken::Algorithm::RS256,
            ),
            JwtKey::Es256(p) => (
                DecodingKey::from_ec_pem(p).ok()?,
                jsonwebtoken::Algorithm::ES256,
            ),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = spec.leeway_seconds;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Some(JwtVerifier {
            key,
            validation,
            tier_claim: spec.tier_claim.clone(),
        })
    }

    /// `(sub, tier)` of a valid token.
    fn verify(&self, token: &str) -> Result<(String, Option<String>), String> {
        let data = decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &self.key,
            &self.validation,
        )
        .map_err(|e| e.to_string())?;
        let sub = data
            .claims
            .get("sub")
            .and_then(|v| v.as_str())
            .ok_or("no string `sub` claim")?
            .to_owned();
        let tier = data
            .claims
            .get(&self.tier_claim)
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok((sub, tier))
    }
}

/// The client's IP: the TCP peer, or, when the peer is a trusted proxy, the right-most address in
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(
    peer: Option<IpAddr>,
    req: &RequestHeader,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut candidate = peer;
    let values: Vec<&str> = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for part in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) => {
                candidate = ip;
                if !is_trusted(&ip) {
                    return Some(ip);
                }
            }
            // A malformed hop: stop at the last address we could trust.
            Err(_) => break,
        }
    }
    Some(candidate)
}

/// Identify the request. `redis` is used for API keys kept in a Redis hash.
pub async fn identify(
    spec: &RateLimitSpec,
    jwt: Option<&JwtVerifier>,
    req: &RequestHeader,
    peer: Option<IpAddr>,
    redis: Option<&RedisStore>,
) -> Result<Identity, Reject> {
    let tier_or = |t: Option<String>, default: &'static str| match t {
        Some(t) if spec.tiers.contains_key(&t) => Cow::Owned(t),
        _ => Cow::Borrowed(default),
    };
    if let Some(key) = req
        .headers
        .get(&spec.api_key_header)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(owner) = spec.api_keys.get(key) {
            return Ok(Identity {
                key: format!("key:{}", owner.client),
                tier: Cow::Owned(owner.tier.clone()),
            });
        }
        if let (Some(hash), Some(redis)) = (&spec.api_keys_redis_hash, redis) {
            // Boxed: only API keys kept in Redis take this path, and inline its 312-byte future
            // made `edge::limits::apply`'s (moved into a box on every limited request) 712
            // bytes instead of 432.
            match Box::pin(redis.hget(hash, key)).await {
                Ok(Some(v)) => {
                    let (client, tier) = v.split_once(':').unwrap_or((&v, TIER_PREMIUM));
                    return Ok(Identity {
                        key: format!("key:{client}"),
                        tier: tier_or(Some(tier.to_owned()), TIER_PREMIUM),
                    });
                }
                Ok(None) => return Err(Reject::UnknownApiKey),
                Err(_) => return Err(Reject::KeyLookupFailed),
            }
        }
        return Err(Reject::UnknownApiKey);
    }
    if let Some(auth) = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(token) = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
        {
            let Some(jwt) = jwt else {
                return Err(Reject::BadToken(
                    "bearer tokens are not accepted here".into(),
                ));
            };
            let (sub, tier) = jwt.verify(token.trim()).map_err(Reject::BadToken)?;
            return Ok(Identity {
                key: format!("user:{sub}"),
                tier: tier_or(tier, TIER_AUTHENTICATED),
            });
        }
    }
    let mut key = String::with_capacity(3 + 45);
    key.push_str("ip:");
    match client_ip(peer, req, &spec.trusted_proxies) {
        // `util::ip` writes an IPv4 address without the formatter: `IpAddr`'s `Display` and a
        // `format!` were 1,850 of a leased check's instructions (`benches/callgrind.sh --redis`).
        Some(ip) => {
            let mut buf = [0u8; 45];
            // ASCII digits, dots, colons and hex: always UTF-8.
            key.push_str(std::str::from_utf8(ip_text(ip, &mut buf)).unwrap_or("unknown"));
        }
        None => key.push_str("unknown"),
    }
    Ok(Identity {
        key,
        tier: Cow::Borrowed(TIER_ANONYMOUS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(xff: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for v in xff {
            r.append_header("x-forwarded-for", *v).unwrap();
        }
        r
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let spoof = req(&["6.6.6.6"]);
        let untrusted_peer = Some("203.0.113.5".parse().unwrap());
        assert_eq!(client_ip(untrusted_peer, &spoof, &trusted), untrusted_peer);
        let via_proxy = req(&["6.6.6.6, 198.51.100.7", "10.1.1.1"]);
        assert_eq!(
            client_ip(Some("10.0.0.2".parse().unwrap()), &via_proxy, &trusted),
            Some("198.51.100.7".parse().unwrap()),
            "right-most untrusted hop, not the client-written left-most"
        );
        assert_eq!(
            client_ip(
                Some("10.0.0.2".parse().unwrap()),
                &req(&["garbage"]),
                &trusted
            ),
            Some("10.0.0.2".parse().unwrap())
        );
    }
}
