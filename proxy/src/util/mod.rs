//! Small shared helpers with no Sluice dependencies of their own: the allocator, the clock, the
//! hash, globs, IP text, the request path's random ids and raw HTTP/1 field lines. Every module
//! may import them; they import nothing of Sluice.

pub mod alloc;
pub mod clock;
pub mod glob;
pub mod hash;
pub mod ip;
pub mod rng;

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
    use http::{HeaderMap, HeaderName, HeaderValue};

    #[test]
    fn header_lookups_scan_and_hash_alike() {
        // The vendored http compares names in maps of up to 16 names (`SCAN_ENTRIES`,
        // vendor/http/README.md) and hashes above. Lookups must find the same in both: the
        // first value, every value in order, under any key type and case, and nothing else.
        for extra in [0, 1, 13, 14, 15, 20] {
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
            assert_eq!(map.get(&id).unwrap(), "a", "{extra}");
            assert_eq!(map.get("X-REQUEST-ID").unwrap(), "a", "{extra}");
            assert_eq!(map.get(String::from("upgrade")).unwrap(), "websocket");
            assert_eq!(map.get(http::header::UPGRADE).unwrap(), "websocket");
            assert!(map.get(&absent).is_none() && map.get("x-filler-99").is_none());
            // Keys that are no field name at all find nothing and do not panic.
            for bad in ["", "x request id", "x-request-id\r\n", "\u{7f}"] {
                assert!(map.get(bad).is_none() && !map.contains_key(bad), "{bad:?}");
                assert_eq!(map.get_all(bad).iter().count(), 0, "{bad:?}");
            }
            // A custom name as long as a standard one (`upgrade`) is not mistaken for it.
            assert!(!map.contains_key("upgradx") && map.get("x-request-ie").is_none());
            assert!(
                map.contains_key(&id) && map.contains_key("Upgrade"),
                "{extra}"
            );
            assert!(!map.contains_key(&absent) && !map.contains_key(http::header::HOST));
            let all: Vec<_> = map.get_all("x-request-id").iter().collect();
            assert_eq!(all, ["a", "b"], "{extra}");
            assert_eq!(map.get_all(&absent).iter().count(), 0, "{extra}");
            if extra > 0 {
                assert_eq!(map.get("x-filler-0").unwrap(), "f");
                *map.get_mut("x-filler-0").unwrap() = HeaderValue::from_static("g");
                assert_eq!(map.get(format!("x-filler-{}", 0)).unwrap(), "g");
            }
            // Removing a name (which hashes) leaves lookups of the others intact.
            assert_eq!(map.remove(&id).unwrap(), "a");
            assert!(map.get(&id).is_none() && map.get_all(&id).iter().next().is_none());
            assert_eq!(map.get(http::header::UPGRADE).unwrap(), "websocket");
        }
    }
}
