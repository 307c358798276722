//! RFC 9111 §4.2 arithmetic for a response about to be stored: which `Cache-Control` speaks
//! (a targeted field such as `CDN-Cache-Control` first, RFC 9213), the explicit freshness
//! lifetime (`s-maxage`, `max-age`, `Expires` minus `Date`; an invalid value means stale), the
//! heuristic lifetime (§4.2.2), and the corrected initial age from `Age` and `Date` (§4.2.3,
//! §5.1). Pure functions of the response header and a clock reading.

use std::time::{Duration, SystemTime};

use http::header;
use pingora::cache::cache_control::{CacheControl, DirectiveKey, InterpretCacheControl};
use pingora::http::ResponseHeader;

/// The targeted field that applies to Sluice (RFC 9213): the configured Sluice-specific one,
/// then `CDN-Cache-Control`. When one is present, it replaces `Cache-Control` and `Expires`
/// for Sluice's caching decisions (both are still forwarded to the client untouched).
/// A targeted field that is not a valid Structured Field dictionary (RFC 8941), or whose
/// `max-age` / `s-maxage` is not an integer, is ignored as a whole (RFC 9213 §2.1).
pub fn targeted(resp: &ResponseHeader, own: Option<&str>) -> Option<CacheControl> {
    own.into_iter()
        .chain(std::iter::once("cdn-cache-control"))
        .filter(|name| {
            let mut values = resp.headers.get_all(*name).iter().peekable();
            values.peek().is_some()
                && values.all(|v| v.to_str().is_ok_and(valid_targeted_dictionary))
        })
        .find_map(|name| CacheControl::from_resp_headers_named(name, resp))
}

/// Whether `value` is a Structured Field dictionary (RFC 8941 §3.2) as far as cache
/// directives go: members `key` or `key=item` (an integer, decimal, token, string or boolean,
/// parameters allowed), and `max-age` / `s-maxage` integers.
fn valid_targeted_dictionary(value: &str) -> bool {
    fn key(k: &str) -> bool {
        let mut b = k.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'*')
            && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c))
    }
    fn integer(v: &str) -> bool {
        let digits = v.strip_prefix('-').unwrap_or(v);
        !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|c| c.is_ascii_digit())
    }
    fn item(v: &str) -> bool {
        let bare = v.split(';').next().unwrap_or("").trim();
        integer(bare)
            || bare.parse::<f64>().is_ok() && !bare.contains(['e', 'E', '+'])
            || (bare.len() >= 2 && bare.starts_with('"') && bare.ends_with('"'))
            || bare == "?0"
            || bare == "?1"
            || bare
                .bytes()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'*')
    }
    value.split(',').map(str::trim).all(|member| {
        let (k, v) = match member.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (member.split(';').next().unwrap_or(""), None),
        };
        key(k)
            && match (k, v) {
                ("max-age" | "s-maxage", Some(v)) => integer(v.split(';').next().unwrap_or("")),
                (_, Some(v)) => item(v),
                (_, None) => true,
            }
    })
}

/// The explicit freshness lifetime (§4.2.1): `s-maxage` (a shared cache), else `max-age`, else
/// `Expires` minus `Date` (only when `cc` is not a targeted field, which replaces `Expires`).
/// `no-cache` is a lifetime of zero (stored, revalidated before each use); so is a `max-age`
/// or `s-maxage` that does not parse, and an `Expires` that does not parse or is repeated
/// (§5.3: an invalid date is in the past). `None` when the origin gives no freshness at all.
pub fn explicit_lifetime(
    cc: Option<&CacheControl>,
    targeted: bool,
    resp: &ResponseHeader,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(cc) = cc {
        if let Some(d) = cc.fresh_duration() {
            return Some(d);
        }
        if cc.has_directive(&DirectiveKey::SMaxAge) || cc.has_directive(&DirectiveKey::MaxAge) {
            return Some(Duration::ZERO);
        }
    }
    if targeted {
        return None;
    }
    let mut expires = resp.headers.get_all(header::EXPIRES).iter();
    let first = expires.next()?;
    if expires.next().is_some() {
        return Some(Duration::ZERO);
    }
    let Some(expires) = http_date(first) else {
        return Some(Duration::ZERO);
    };
    let date = date_of(resp).unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// §4.2.2: a tenth of the time since `Last-Modified` (as of the response's `Date`, or `now`),
/// at most `cap`. `None` without a usable `Last-Modified` (absent, unparsable, or later than
/// the response's date).
pub fn heuristic(resp: &ResponseHeader, now: SystemTime, cap: Duration) -> Option<Duration> {
    let modified = http_date(resp.headers.get(header::LAST_MODIFIED)?)?;
    let as_of = date_of(resp).unwrap_or(now);
    let age = as_of.duration_since(modified).ok()?;
    Some((age / 10).min(cap))
}

/// §5.1: the `Age` value: the first member of the first `Age` field, when it is
/// delta-seconds (digits only; a value too large for 31 bits counts as 2^31 seconds).
/// Anything else (negative, fractional, not a number) is ignored.
pub fn age_value(resp: &ResponseHeader) -> Option<Duration> {
    let first = resp.headers.get(header::AGE)?.to_str().ok()?;
    let member = first.split(',').next()?.trim();
    if member.is_empty() || !member.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    const MAX: u64 = 1 << 31;
    let secs = member.parse::<u64>().unwrap_or(MAX).min(MAX);
    Some(Duration::from_secs(secs))
}

/// §4.2.3: how old the response already is when it arrives: the larger of its `Age` and the
/// time since its `Date` (the request took no measurable time: Sluice stores as the
/// response head arrives). `Date` has a resolution of one second, so a response generated
/// just before a second ticked over looks a second old on arrival: up to one second since
/// `Date` is rounding, not age, and counts as zero (otherwise a `max-age=1` response would
/// now and then arrive already stale).
pub fn initial_age(resp: &ResponseHeader, now: SystemTime) -> Duration {
    let apparent = date_of(resp)
        .and_then(|d| now.duration_since(d).ok())
        .map_or(Duration::ZERO, |d| Duration::from_secs(d.as_secs()));
    let apparent = if apparent <= Duration::from_secs(1) {
        Duration::ZERO
    } else {
        apparent
    };
    apparent.max(age_value(resp).unwrap_or(Duration::ZERO))
}

/// How long a store keeps an entry with `meta` from now: its freshness left, then as long
/// as it may still serve stale (`stale-while-revalidate`, `stale-if-error`) or, when it has a
/// validator (`ETag`, `Last-Modified`) and can be revalidated with a conditional request,
/// `stale_retention` (`[cache] stale_retention_seconds`), whichever is longer. At least a
/// second. Both stores follow it, so they keep the same entries.
pub fn retention(meta: &pingora::cache::CacheMeta, stale_retention: Duration) -> Duration {
    let fresh = meta
        .fresh_until()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let stale_windows = Duration::from_secs(u64::from(
        meta.stale_while_revalidate_sec()
            .max(meta.stale_if_error_sec()),
    ));
    let headers = meta.headers();
    let validator =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    let keep_stale = if validator {
        stale_windows.max(stale_retention)
    } else {
        stale_windows
    };
    (fresh + keep_stale).max(Duration::from_secs(1))
}

fn date_of(resp: &ResponseHeader) -> Option<SystemTime> {
    http_date(resp.headers.get(header::DATE)?)
}

fn http_date(v: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::super::tests::resp;
    use super::*;

    fn at(s: &str) -> SystemTime {
        httpdate::parse_http_date(s).unwrap()
    }

    const NOON: &str = "Wed, 02 Dec 2026 12:00:00 GMT";

    #[test]
    fn rfc9111_5_1_age_is_the_first_member_of_the_first_line_in_delta_seconds() {
        let age = |v: &[&str]| {
            let h: Vec<(&str, &str)> = v.iter().map(|x| ("age", *x)).collect();
            age_value(&resp(&h)).map(|d| d.as_secs())
        };
        assert_eq!(age(&["7200"]), Some(7200));
        assert_eq!(age(&["7200, 0"]), Some(7200));
        assert_eq!(age(&["0, 7200"]), Some(0));
        assert_eq!(age(&["7200", "0"]), Some(7200));
        assert_eq!(age(&["0", "7200"]), Some(0));
        assert_eq!(age(&["abc"]), None);
        assert_eq!(age(&["-7200"]), None);
        assert_eq!(age(&["7200.0"]), None);
        assert_eq!(age(&["2147483649"]), Some(1 << 31));
        assert_eq!(age(&["99999999999999999999999"]), Some(1 << 31));
    }

    #[test]
    fn rfc9111_4_2_3_initial_age_is_the_larger_of_age_and_time_since_date() {
        let r = resp(&[("date", NOON), ("age", "30")]);
        assert_eq!(
            initial_age(&r, at("Wed, 02 Dec 2026 12:00:10 GMT")).as_secs(),
            30
        );
        assert_eq!(
            initial_age(&r, at("Wed, 02 Dec 2026 12:01:00 GMT")).as_secs(),
            60
        );
        // A Date in the future (a fast origin clock) is no age.
        assert_eq!(
            initial_age(
                &resp(&[("date", NOON)]),
                at("Wed, 02 Dec 2026 11:00:00 GMT")
            ),
            Duration::ZERO
        );
    }

    #[test]
    fn rfc9111_4_2_1_expires_counts_from_date_and_invalid_freshness_is_stale() {
        let now = at(NOON);
        let life = |h: &[(&str, &str)]| {
            let r = resp(h);
            let cc = CacheControl::from_resp_headers(&r);
            explicit_lifetime(cc.as_ref(), false, &r, now).map(|d| d.as_secs())
        };
        // Expires 300 s after a Date 400 s ago: a lifetime of 300 s (the age is counted apart).
        assert_eq!(
            life(&[
                ("date", "Wed, 02 Dec 2026 11:53:20 GMT"),
                ("expires", "Wed, 02 Dec 2026 11:58:20 GMT")
            ]),
            Some(300)
        );
        assert_eq!(life(&[("expires", "0")]), Some(0));
        assert_eq!(life(&[("expires", NOON), ("expires", NOON)]), Some(0));
        assert_eq!(life(&[("cache-control", "max-age=-1")]), Some(0));
        assert_eq!(life(&[("cache-control", "max-age='3600'")]), Some(0));
        assert_eq!(
            life(&[("cache-control", "max-age=60, s-maxage=10")]),
            Some(10)
        );
        assert_eq!(life(&[("cache-control", "no-cache, max-age=60")]), Some(0));
        assert_eq!(life(&[("cache-control", "public")]), None);
        assert_eq!(life(&[]), None);
    }

    #[test]
    fn rfc9213_a_targeted_field_replaces_cache_control_and_expires() {
        let r = resp(&[
            ("cache-control", "no-store"),
            ("expires", "0"),
            ("cdn-cache-control", "max-age=600"),
            ("sluice-cache-control", "max-age=60"),
        ]);
        let cdn = targeted(&r, None).unwrap();
        assert_eq!(
            explicit_lifetime(Some(&cdn), true, &r, SystemTime::now()),
            Some(Duration::from_secs(600))
        );
        let own = targeted(&r, Some("sluice-cache-control")).unwrap();
        assert_eq!(
            explicit_lifetime(Some(&own), true, &r, SystemTime::now()),
            Some(Duration::from_secs(60))
        );
        assert!(targeted(&resp(&[("cache-control", "max-age=1")]), None).is_none());
    }

    #[test]
    fn rfc9213_an_invalid_targeted_field_is_ignored_as_a_whole() {
        for bad in [
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "MaX-aGe=1",
            "max-age=1.5",
        ] {
            let r = resp(&[("cache-control", "no-store"), ("cdn-cache-control", bad)]);
            assert!(targeted(&r, None).is_none(), "{bad}");
        }
        for good in [
            "max-age=60",
            "foobar, max-age=3600",
            "no-store",
            "max-age=60;x=1, private",
        ] {
            let r = resp(&[("cdn-cache-control", good)]);
            assert!(targeted(&r, None).is_some(), "{good}");
        }
    }
}
