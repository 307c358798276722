//! Small shared helpers with no Sluice dependencies of their own: the allocator, the clock, the
//! hash, globs, IP text, the request path's random ids, raw HTTP/1 field lines and field
//! lookups in small header maps. Every module
//! may import them; they import nothing of Sluice.

pub mod alloc;
pub mod clock;
pub mod glob;
pub mod hash;
pub mod ip;
pub mod rng;

/// Up to this many field names, [`field`], [`has_field`] and [`field_values`] compare names
/// instead of hashing the one looked up.
pub const SCAN_FIELDS: usize = 16;

/// The first value of `name` in `map`. Most lookups on the request path are for fields a
/// message rarely has (a client's `X-Request-Id`, `Upgrade` or `traceparent`, a backend's
/// `X-Request-Id`, what a rule removes), and a hashed lookup costs about 110 to 200
/// instructions (callgrind) whether it finds the field or not: over a few fields comparing the
/// names is cheaper, and a request from a typical client has fewer than 16.
pub fn field<'a>(
    map: &'a http::HeaderMap,
    name: &http::HeaderName,
) -> Option<&'a http::HeaderValue> {
    if map.keys_len() <= SCAN_FIELDS {
        map.iter().find_map(|(k, v)| (k == name).then_some(v))
    } else {
        map.get(name)
    }
}

/// Whether `map` has a field `name` ([`field`]).
pub fn has_field(map: &http::HeaderMap, name: &http::HeaderName) -> bool {
    if map.keys_len() <= SCAN_FIELDS {
        map.keys().any(|k| k == name)
    } else {
        map.contains_key(name)
    }
}

/// Every value of `name` in `map`, in order ([`field`]; `HeaderMap::get_all`).
pub fn field_values<'a>(map: &'a http::HeaderMap, name: &'a http::HeaderName) -> FieldValues<'a> {
    if map.keys_len() <= SCAN_FIELDS {
        FieldValues::Scan(map.iter(), name)
    } else {
        FieldValues::Hashed(map.get_all(name).iter())
    }
}

/// The values [`field_values`] finds. Its own type rather than a chain of two flattened options:
/// callgrind counted about 95 instructions for that chain's one `traceparent` lookup.
pub enum FieldValues<'a> {
    /// A small map, scanned by name.
    Scan(
        http::header::Iter<'a, http::HeaderValue>,
        &'a http::HeaderName,
    ),
    /// A large map, hashed.
    Hashed(http::header::ValueIter<'a, http::HeaderValue>),
}

impl<'a> Iterator for FieldValues<'a> {
    type Item = &'a http::HeaderValue;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Scan(it, name) => it.find_map(|(k, v)| (k == *name).then_some(v)),
            Self::Hashed(it) => it.next(),
        }
    }
}

/// Whether a message of `version` takes fields as raw HTTP/1 lines ([`push_raw_field`]). An
/// HTTP/2 one does not: its server, or Pingora's HTTP/2 upstream request, folds the lines back
/// into the header map, parsing each name (callgrind over HTTP/2: about 1,800 instructions a
/// line against 600 for an insert under a prepared name).
pub fn takes_raw_lines(version: http::Version) -> bool {
    version != http::Version::HTTP_2
}

/// Append one `name: value\r\n` line, the value given in pieces, to a header's raw HTTP/1
/// fields (vendored pingora-http `raw_h1_fields_mut`, on requests and responses). The caller
/// guarantees a valid field name and value.
pub fn push_raw_field(raw: &mut Vec<u8>, name: &[u8], value: &[&[u8]]) {
    raw.extend_from_slice(name);
    raw.extend_from_slice(b": ");
    for p in value {
        raw.extend_from_slice(p);
    }
    raw.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    #[test]
    fn fields_are_found_alike_in_small_and_large_maps() {
        // Up to SCAN_FIELDS names are compared one by one, beyond that looked up by hash: both
        // find the first value, every value in order, whatever the case it was added in, and
        // nothing else.
        for extra in [0, 1, SCAN_FIELDS - 3, SCAN_FIELDS - 2, SCAN_FIELDS + 4] {
            let mut map = HeaderMap::new();
            for i in 0..extra {
                map.append(
                    HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
                    HeaderValue::from_static("f"),
                );
            }
            map.append(
                HeaderName::from_static("x-request-id"),
                HeaderValue::from_static("a"),
            );
            map.append(http::header::UPGRADE, HeaderValue::from_static("websocket"));
            map.append(
                HeaderName::from_bytes(b"X-Request-Id").unwrap(),
                HeaderValue::from_static("b"),
            );
            let id = HeaderName::from_static("x-request-id");
            let absent = HeaderName::from_static("traceparent");
            assert_eq!(field(&map, &id).unwrap(), "a", "{extra}");
            assert_eq!(
                field(&map, &http::header::UPGRADE).unwrap(),
                "websocket",
                "{extra}"
            );
            assert!(field(&map, &absent).is_none(), "{extra}");
            assert!(
                has_field(&map, &id) && has_field(&map, &http::header::UPGRADE),
                "{extra}"
            );
            assert!(
                !has_field(&map, &absent) && !has_field(&map, &http::header::HOST),
                "{extra}"
            );
            let all: Vec<_> = field_values(&map, &id).collect();
            assert_eq!(all, ["a", "b"], "{extra}");
            assert_eq!(field_values(&map, &absent).count(), 0, "{extra}");
        }
    }
}
