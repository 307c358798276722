//! Path normalisation on arbitrary paths: never panics, and its output is a fixed point that
//! starts with `/` and holds no dot segment, no empty segment and no backslash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::pathnorm::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    // What reaches the normaliser is a parsed URI's path.
    let Ok(uri) = path.parse::<http::Uri>() else {
        return;
    };
    let path = uri.path();
    if let Ok(out) = normalize(path) {
        let n = out.as_deref().unwrap_or(path);
        if path.starts_with('/') {
            assert!(n.starts_with('/'), "{path:?} -> {n:?}");
            assert!(!n.contains("//"), "{path:?} -> {n:?}");
            assert!(!n.contains('\\'), "{path:?} -> {n:?}");
            for seg in n.split('/') {
                assert!(seg != "." && seg != "..", "{path:?} -> {n:?}");
            }
            assert_eq!(normalize(n), Ok(None), "not a fixed point: {path:?} -> {n:?}");
            // The result is still a valid request target.
            assert!(n.parse::<http::Uri>().is_ok(), "{path:?} -> {n:?}");
        }
    }
});
