//! Lays the release binary's code out by the request path's call graph.
//!
//! `link-order.txt` (made by `benches/link_order.sh` from callgrind runs) lists which function
//! calls which how often per request; lld places functions that call each other often side by
//! side (`--call-graph-ordering-file`, its C3 sort), so a request's code spans fewer
//! instruction-cache lines and pages. Measured (docs/benchmarks.md, session 23): the same
//! instruction count, 2.3% fewer first-level instruction-cache misses under callgrind and about
//! 5% less user CPU per request pinned. A function the file names that the binary no longer
//! has is skipped, so a stale file costs only its effect.
//!
//! On by default only where the flag is known to reach lld: a release build for
//! x86_64-unknown-linux-gnu with Rust 1.90 or later (where rustc links with its own lld) and no
//! linker or linker flags of the user's. `SLUICE_LINK_ORDER=0` turns it off, `=1` on.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=SLUICE_LINK_ORDER");
    let on = match env::var("SLUICE_LINK_ORDER").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => by_default(),
    };
    if !on {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let file = Path::new(&dir).join("link-order.txt");
    if file.exists() {
        println!(
            "cargo:rustc-link-arg-bin=sluice=-Wl,--call-graph-ordering-file={}",
            file.display()
        );
    }
}

/// A release build linked by rustc's own lld, with nothing of the user's in the way.
fn by_default() -> bool {
    let var = |k: &str| env::var(k).unwrap_or_default();
    var("PROFILE") == "release"
        && var("TARGET") == "x86_64-unknown-linux-gnu"
        && env::var_os("RUSTC_LINKER").is_none()
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("link")
        && rustc_minor().is_some_and(|m| m >= 90)
}

/// The minor version of the rustc building this (`rustc 1.95.0 (...)` -> 95).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some("1"), Some(minor)) => minor.parse().ok(),
        _ => None,
    }
}
