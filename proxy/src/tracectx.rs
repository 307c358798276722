//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): parse an incoming `traceparent`,
//! continue its trace with a span of Sluice's own, or start a new trace; render the
//! `traceparent` sent to the backend. Pure and fuzzed (`proxy/fuzz`, target `traceparent`).
//!
//! Version `00` is parsed strictly; a higher version is parsed by its first four fields, as the
//! specification asks of a version-00 reader. Anything invalid (wrong length, upper-case or
//! non-hex digits, an all-zero id, version `ff`) starts a new trace, and the caller then drops
//! `tracestate` (it belongs to the trace that was not continued).

/// Length of a rendered version-00 `traceparent`.
pub const LEN: usize = 55;

/// Length of the `traceparent: ...\r\n` field line.
pub const LINE_LEN: usize = 13 + LEN + 2;

/// The trace a request belongs to and Sluice's span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// Sluice's span for this request (the backend's parent).
    pub span_id: [u8; 8],
    /// The caller's span, when the trace came in with the request.
    pub parent_id: Option<[u8; 8]>,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// An incoming `traceparent`'s fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The caller's span id.
    pub parent_id: [u8; 8],
    /// Trace flags.
    pub flags: u8,
}

/// Parse a `traceparent` value; `None` when it is not valid.
pub fn parse(v: &[u8]) -> Option<Parent> {
    // A value with optional surrounding whitespace (OWS) is still valid.
    let v = v.trim_ascii();
    if v.len() < LEN {
        return None;
    }
    let version = hex::<1>(&v[0..2])?[0];
    if version == 0xff {
        return None;
    }
    // Version 00 is exactly 55 characters; a later version may append `-...` fields.
    if (version == 0 && v.len() != LEN) || (v.len() > LEN && v[LEN] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = hex::<16>(&v[3..35])?;
    let parent_id = hex::<8>(&v[36..52])?;
    let flags = hex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        parent_id,
        flags,
    })
}

/// Lower-case hex digits into `N` bytes; upper case is invalid (the specification says so).
fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

impl TraceContext {
    /// Continue `parent`'s trace (when there is one) with a new span `span_id`; otherwise
    /// start trace `new_trace` with `flags`. The random ids come from the caller.
    pub fn new(
        parent: Option<Parent>,
        span_id: [u8; 8],
        new_trace: [u8; 16],
        flags: u8,
    ) -> TraceContext {
        // An all-zero id is invalid; a random one is all zero once in 2^64 requests.
        let span_id = if span_id == [0; 8] { [1; 8] } else { span_id };
        match parent {
            Some(p) => TraceContext {
                trace_id: p.trace_id,
                span_id,
                parent_id: Some(p.parent_id),
                // Only the sampled bit is defined; the others are not passed on (version 00).
                flags: p.flags & 1,
            },
            None => TraceContext {
                trace_id: if new_trace == [0; 16] {
                    [1; 16]
                } else {
                    new_trace
                },
                span_id,
                parent_id: None,
                flags,
            },
        }
    }

    /// The `traceparent` for the backend: version 00, this trace, Sluice's span.
    pub fn traceparent(&self) -> [u8; LEN] {
        let mut out = [b'-'; LEN];
        self.write_traceparent(&mut out);
        out
    }

    /// The whole HTTP/1 field line, `traceparent: 00-...-...-..\r\n`, built in place so that
    /// it is appended to the request head in one copy.
    pub fn traceparent_line(&self) -> [u8; LINE_LEN] {
        let mut out = [b'-'; LINE_LEN];
        out[..13].copy_from_slice(b"traceparent: ");
        self.write_traceparent((&mut out[13..13 + LEN]).try_into().unwrap_or(&mut [0; LEN]));
        out[LINE_LEN - 2..].copy_from_slice(b"\r\n");
        out
    }

    fn write_traceparent(&self, out: &mut [u8; LEN]) {
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        write_hex(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        write_hex(&self.span_id, &mut out[36..52]);
        out[52] = b'-';
        write_hex(&[self.flags], &mut out[53..55]);
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        write_hex(&self.trace_id, &mut out);
        out
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Two lower-case hex digits per byte, from a 512-byte table (one load per byte).
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    t
};

fn write_hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_is_continued_with_a_new_span() {
        let p = parse(EXAMPLE).unwrap();
        let t = TraceContext::new(Some(p), [0xab; 8], [0x11; 16], 0);
        assert_eq!(
            &t.traceparent(),
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-abababababababab-01"
        );
        assert_eq!(&t.trace_id_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            &t.traceparent_line(),
            b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-abababababababab-01\r\n"
        );
        assert_eq!(t.parent_id, Some(p.parent_id));
        assert!(t.sampled());
    }

    #[test]
    fn invalid_values_start_a_new_trace() {
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let t = TraceContext::new(None, [2; 8], [3; 16], 1);
        assert_eq!(
            &t.traceparent(),
            b"00-03030303030303030303030303030303-0202020202020202-01"
        );
        assert_eq!(t.parent_id, None);
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let p =
            parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-comes").unwrap();
        let t = TraceContext::new(Some(p), [5; 8], [0; 16], 0);
        // Sent on as version 00 with only the flag version 00 defines.
        assert!(t
            .traceparent()
            .starts_with(b"00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(t.traceparent().ends_with(b"-01"));
        assert_eq!(
            parse(b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ").map(|p| p.flags),
            Some(1)
        );
    }
}
