//! The `sluice` binary: wiring only, see [`sluice::cli`].

/// mimalloc instead of glibc malloc: the proxy path allocates and frees buffers and headers per
/// request, and glibc's malloc/free/consolidate was the largest user-space cost in profiles
/// (docs/benchmarks.md). Called directly, see `sluice::util::alloc`.
#[global_allocator]
static GLOBAL: sluice::util::alloc::MiMalloc = sluice::util::alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pingora::protocols::http::v1::server::set_keepalive_release_hook(collect_after_release);
    sluice::cli::main()
}

/// Called when a keep-alive connection has been idle for a second and freed its request state
/// (vendored pingora-core, README section 14). mimalloc returns freed pages to the system only
/// from later allocator calls on the same thread, and a worker thread whose connections are all
/// idle makes none: without this, 1000 idle connections kept 16 KiB of RSS each instead of 4.7
/// (`benches/connections.sh`). A forced collect runs 200 ms after the first release, at most one
/// per thread per 200 ms; nothing runs per request.
fn collect_after_release() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    thread_local! {
        static PENDING: Arc<AtomicBool> = Arc::new(AtomicBool::new(false));
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Some(pending) = PENDING.with(|p| (!p.swap(true, Ordering::Relaxed)).then(|| p.clone()))
    else {
        return;
    };
    runtime.spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any time;
        // it only returns free memory to the system.
        #[allow(unsafe_code)]
        unsafe {
            mi_collect(true)
        };
        pending.store(false, Ordering::Relaxed);
    });
}

#[allow(unsafe_code)]
unsafe extern "C" {
    /// mimalloc's `mi_collect` (linked through `libmimalloc-sys`; no safe crate has it): with
    /// `util/alloc.rs`, the only unsafe code in the workspace.
    fn mi_collect(force: bool);
}
