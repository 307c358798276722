//! Sluice's integration tests live in `tests/`; the shared harness is `tests/support/mod.rs`.
//! This library is empty: the crate exists for its test binaries (see Cargo.toml).
