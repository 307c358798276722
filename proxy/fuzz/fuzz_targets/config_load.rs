//! The config loader (`sluice --check`'s path) on arbitrary text: it must answer every input
//! with a config or a list of problems, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let dir = std::path::Path::new("/nonexistent-sluice-fuzz");
        match sluice::config::load_str(text, &dir.join("sluice.toml"), dir) {
            Ok(_) => {}
            Err(e) => {
                // Every problem renders (the message an operator reads).
                let _ = e.to_string();
            }
        }
    }
});
