//! The `sluice` binary: wiring only, see [`sluice::cli`].

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
