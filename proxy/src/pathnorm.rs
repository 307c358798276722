//! Request path normalisation (`[server] normalize_path`): one canonical form for every path
//! before routing, rate-limit exemptions, the cache key and forwarding, so that no spelling of a
//! path (`/health/../login`, `/health/%2e%2e/login`, `//login`) matches one rule here and means
//! another thing to the backend.
//!
//! The form: percent-encoded unreserved characters decoded (RFC 3986 §2.3), other
//! percent-encodings kept with upper-case hex (§6.2.2.1), dot segments removed (§5.2.4), empty
//! segments merged (`//` → `/`, as nginx's `merge_slashes`). Refused (400): a malformed `%`
//! escape, `%00`, a raw backslash, a `..` above the root, and an encoded separator (`%2F`,
//! `%5C`) that would form a dot segment once a backend decodes it (`/a/..%2Flogin`). Other
//! encoded separators are kept encoded, for APIs that put them in names.

use std::fmt;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%` not followed by two hex digits, or `%00`.
    BadEscape,
    /// A raw `\`, which some backends take as a separator.
    Backslash,
    /// `..` would climb above the root.
    AboveRoot,
    /// `%2F` or `%5C` next to a dot segment: ambiguous once decoded.
    EncodedDotSegment,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "malformed percent-encoding in the path",
            PathError::Backslash => "backslash in the path",
            PathError::AboveRoot => "the path climbs above the root",
            PathError::EncodedDotSegment => "encoded slash next to a dot segment",
        })
    }
}

/// The normal form of `path` (an origin-form path, without the query), or `None` when `path`
/// already is in normal form (the common case, found without allocating). Paths that do not
/// start with `/` (`*`) are left alone.
pub fn normalize(path: &str) -> Result<Option<String>, PathError> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || is_normal(b) {
        return Ok(None);
    }
    let decoded = decode_unreserved(b)?;
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in decoded.split('/').skip(1) {
        trailing = false;
        match seg {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
                trailing = true;
            }
            s => {
                if has_encoded_dot_segment(s) {
                    return Err(PathError::EncodedDotSegment);
                }
                out.push(s);
            }
        }
    }
    let mut n = String::with_capacity(decoded.len());
    for s in &out {
        n.push('/');
        n.push_str(s);
    }
    if trailing || out.is_empty() {
        n.push('/');
    }
    Ok(if n == path { None } else { Some(n) })
}

/// Whether `b` needs no work: no `%`, no `\`, no empty segment and no segment starting with
/// `.` (a superset of dot segments, kept cheap). One pass, no allocation.
fn is_normal(b: &[u8]) -> bool {
    let mut prev = 0u8;
    for &c in b {
        match c {
            b'%' | b'\\' => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/' => return false,
            _ => {}
        }
        prev = c;
    }
    true
}

/// Decode `%XX` of unreserved characters; upper-case the hex of the others.
fn decode_unreserved(b: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let v = (hex_val(hex[0]).ok_or(PathError::BadEscape)? << 4)
                    | hex_val(hex[1]).ok_or(PathError::BadEscape)?;
                if v == 0 {
                    return Err(PathError::BadEscape);
                }
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v as char);
                } else {
                    out.push('%');
                    out.push(hex[0].to_ascii_uppercase() as char);
                    out.push(hex[1].to_ascii_uppercase() as char);
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ => {
                // The path came from a parsed `http::Uri`, so this is ASCII (or UTF-8 the
                // parser let through); copy the run up to the next escape as is.
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'%' || c == b'\\')
                    .map_or(b.len(), |p| i + p);
                out.push_str(&String::from_utf8_lossy(&b[i..end]));
                i = end;
            }
        }
    }
    Ok(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Whether a segment split at its encoded separators (`%2F`, `%5C`, upper case after
/// [`decode_unreserved`]) has a `.` or `..` piece.
fn has_encoded_dot_segment(seg: &str) -> bool {
    if !seg.contains("%2F") && !seg.contains("%5C") {
        return false;
    }
    seg.split("%2F")
        .flat_map(|p| p.split("%5C"))
        .any(|p| p == "." || p == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(|o| o.unwrap_or_else(|| p.to_owned()))
    }

    #[test]
    fn normal_paths_are_left_alone() {
        for p in [
            "/",
            "/login",
            "/api/v1/users/",
            "/a.b/c..d/.e",
            "*",
            "/files/a%2Fb",
        ] {
            assert_eq!(normalize(p), Ok(None), "{p}");
        }
    }

    #[test]
    fn the_issue_12_dodges_all_become_login_or_are_refused() {
        assert_eq!(n("/health/../login"), Ok("/login".into()));
        assert_eq!(n("/health/%2e%2e/login"), Ok("/login".into()));
        assert_eq!(n("/health/%2E%2E/login"), Ok("/login".into()));
        assert_eq!(n("/health/.%2e/login"), Ok("/login".into()));
        assert_eq!(n("/health/..%2Flogin"), Err(PathError::EncodedDotSegment));
        assert_eq!(n("/health/..%2flogin"), Err(PathError::EncodedDotSegment));
        assert_eq!(n("/health/..%5Clogin"), Err(PathError::EncodedDotSegment));
        assert_eq!(n("/health/..\\login"), Err(PathError::Backslash));
    }

    #[test]
    fn dot_segments_slashes_and_escapes() {
        assert_eq!(n("//login"), Ok("/login".into()));
        assert_eq!(n("/a//b///c"), Ok("/a/b/c".into()));
        assert_eq!(n("/a/./b/."), Ok("/a/b/".into()));
        assert_eq!(n("/a/b/.."), Ok("/a/".into()));
        assert_eq!(n("/a/b/../"), Ok("/a/".into()));
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/a/../.."), Err(PathError::AboveRoot));
        assert_eq!(n("/%7euser/%41"), Ok("/~user/A".into()));
        assert_eq!(
            n("/a%2fb"),
            Ok("/a%2Fb".into()),
            "hex upper-cased, kept encoded"
        );
        assert_eq!(n("/a%20b"), Ok("/a%20b".into()));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%00"), Err(PathError::BadEscape));
        assert_eq!(n("/."), Ok("/".into()));
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for p in [
            "/a/../b/./c//d/",
            "/%2e%2E/x",
            "/x/%2e/y%7e",
            "/a%2fb/c",
            "/.hidden/../x",
        ] {
            if let Ok(once) = n(p) {
                assert_eq!(normalize(&once), Ok(None), "{p} -> {once}");
            }
        }
    }
}
