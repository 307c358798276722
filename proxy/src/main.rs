//! The `sluice` binary: wiring only, see [`sluice::cli`].

/// mimalloc instead of glibc malloc: the proxy path allocates and frees buffers and headers per
/// request, and glibc's malloc/free/consolidate was the largest user-space cost in profiles
/// (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
