//! The nginx configuration parser of `sluice import nginx` (issue 19) on arbitrary text: never
//! panics, and every error names a line of the text; what parses is translated, never panics,
//! and comes out as TOML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::import::parse::parse_str;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // An `include` looks under this (absent) directory and finds nothing.
    match parse_str(text, std::path::Path::new("/nonexistent/sluice-fuzz/nginx.conf")) {
        Ok(d) => {
            let i = sluice::import::nginx::translate(&d, std::path::Path::new("/nonexistent"));
            if let Err(e) = toml::from_str::<toml::Value>(&i.toml) {
                panic!("not TOML: {e}\n{}", i.toml);
            }
        }
        Err(e) => assert!(e.line <= text.lines().count() + 1, "{e}"),
    }
});
