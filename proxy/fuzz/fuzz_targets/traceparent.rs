//! W3C `traceparent` parsing on arbitrary bytes (issue 17): never panics; whatever parses is
//! continued into a `traceparent` that parses again to the same trace, with version 00 and
//! only the sampled flag.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::tracectx::{parse, TraceContext};

fuzz_target!(|data: &[u8]| {
    let parent = parse(data);
    let t = TraceContext::new(parent, [7; 8], [9; 16], 1);
    let out = t.traceparent();
    let again = parse(&out).expect("what Sluice sends parses");
    assert_eq!(again.trace_id, t.trace_id);
    assert_eq!(again.parent_id, t.span_id);
    assert!(again.flags <= 1);
    if let Some(p) = parent {
        assert_eq!(t.trace_id, p.trace_id);
    }
});
