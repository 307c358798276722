//! The `backend-sample` binary as the integration tests run it: the same entry point as
//! `backend-sample/src/main.rs`.

fn main() -> std::process::ExitCode {
    backend_sample::cli::main()
}
