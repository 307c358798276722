//! The `backend-sample` binary: `backend-sample --listen 127.0.0.1:9001 --id b1`.

fn main() -> std::process::ExitCode {
    backend_sample::cli::main()
}
