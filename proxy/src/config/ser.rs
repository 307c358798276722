//! Generic helpers for how the effective config is shown by the admin API's `GET /config`:
//! durations in milliseconds, secrets redacted. How each model type is shown lives beside it in
//! `model.rs` (this module knows no model type).

use serde::ser::{SerializeSeq, Serializer};

/// What a secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// A duration as whole milliseconds.
pub fn ms<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// An optional duration as whole milliseconds.
pub fn opt_ms<S: Serializer>(d: &Option<std::time::Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ms(d, s),
        None => s.serialize_none(),
    }
}

/// A secret: shown as set or not, never its value.
pub fn secret<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

/// A value by its `Display` form.
pub fn display<S: Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

/// Values by their `Display` form.
pub fn display_list<S: Serializer, T: std::fmt::Display>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(&x.to_string())?;
    }
    seq.end()
}

/// A Redis URL with every credential replaced: the password (or a lone user name, which some
/// write for a password), and any query parameter that may carry one (`redis+unix://...?pass=`,
/// `password=`, `auth=`, `token=`, `secret=`). A URL that does not parse is hidden whole.
pub fn redact_url(raw: &str) -> String {
    const MARK: &str = "__SLUICE_REDACTED__";
    let Ok(mut u) = url::Url::parse(raw) else {
        return REDACTED.to_owned();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some(MARK));
    } else if !u.username().is_empty() {
        let _ = u.set_username(MARK);
    }
    if u.query().is_some() {
        let secret = |k: &str| {
            let k = k.to_ascii_lowercase();
            ["pass", "pwd", "auth", "token", "secret", "key"]
                .iter()
                .any(|s| k.contains(s))
        };
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    MARK.to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string().replace(MARK, REDACTED)
}

/// An optional URL with its credentials redacted ([`redact_url`]).
pub fn redact_url_opt<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(u) => s.serialize_some(&redact_url(u)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redis_passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://u:hunter2@h:6379/0"),
            "redis://u:<redacted>@h:6379/0"
        );
        assert_eq!(redact_url("redis://:hunter2@h/"), "redis://:<redacted>@h/");
        assert_eq!(redact_url("redis://h:6379/"), "redis://h:6379/");
    }

    /// Regression (issue 12, defect 7): `redis+unix://...?pass=SECRET` was shown verbatim and a
    /// password containing `@` partly shown.
    #[test]
    fn every_url_form_hides_its_credentials() {
        for (url, secret) in [
            ("redis://u:p@ss@h:6379/0", "ss"),
            ("redis://u:p%40ss@h:6379/0", "p%40ss"),
            ("rediss://:hunter2@h:6380", "hunter2"),
            ("redis://hunter2@h", "hunter2"),
            ("redis+unix:///run/redis.sock?pass=SECRET&db=1", "SECRET"),
            (
                "redis+unix:///run/redis.sock?db=1&password=SECRET",
                "SECRET",
            ),
            ("unix:///run/redis.sock?user=u&pass=SECRET", "SECRET"),
            ("redis://h/?auth=SECRET", "SECRET"),
            ("not a url :SECRET@", "SECRET"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
        }
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?pass=SECRET&db=1"),
            "redis+unix:///run/redis.sock?pass=<redacted>&db=1"
        );
        assert_eq!(
            redact_url("redis://u:x@h:1/2"),
            "redis://u:<redacted>@h:1/2"
        );
    }
}
