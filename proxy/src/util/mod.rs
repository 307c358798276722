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
