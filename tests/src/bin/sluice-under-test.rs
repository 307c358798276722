//! The `sluice` binary as the integration tests run it: the same entry point as
//! `proxy/src/main.rs`.

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
