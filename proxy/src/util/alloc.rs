//! The process's allocator: mimalloc, asked the way its own `malloc` is asked.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every allocation to `mi_malloc_aligned`. In
//! mimalloc v3 that call keeps its fast path only for blocks of a power-of-two size up to 1 KiB;
//! anything else (a 48-byte box, a 4 KiB buffer, a request future) goes through
//! `mi_theap_malloc_zero_aligned_at_generic` and its over-allocating fallback. That was about
//! 700 of a proxied request's 45,000 instructions, and the whole allocator 4,300 (callgrind,
//! `benches/callgrind.sh`, docs/benchmarks.md). The same was found and fixed elsewhere (for
//! example purpleprotocol/mimalloc_rust pull request 170).
//!
//! Here a layout whose alignment plain `mi_malloc` already gives goes to `mi_malloc`,
//! `mi_zalloc` and `mi_realloc`; any other keeps the aligned calls. mimalloc's size classes
//! are whole words up to 8 words and multiples of 2 words above, and a page's first block is
//! 16-byte aligned, so a block for a size that is a multiple of an alignment up to 16 bytes is
//! aligned to it (`allocations_keep_their_alignment` checks every such size up to 64 KiB).

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The largest alignment plain `mi_malloc` gives (`MI_MAX_ALIGN_SIZE` on 64-bit targets).
const MALLOC_ALIGN: usize = 16;

/// The global allocator of the `sluice` binary and the Pingora floor.
pub struct MiMalloc;

/// Whether `mi_malloc(size)` is aligned to `align` (a power of two, as `Layout` guarantees).
#[inline(always)]
fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && size & (align - 1) == 0 && size >= align
}

// SAFETY: every method hands the layout's size and alignment to mimalloc, which returns null
// on failure as `GlobalAlloc` requires; memory from any of its calls may be freed by `mi_free`
// and resized by `mi_realloc`/`mi_realloc_aligned`.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of the calls above (the caller's contract).
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from one of the calls above; the alignment stays the layout's.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_keep_their_alignment() {
        // Every size that takes the plain calls, up to 64 KiB, several blocks each (a page's
        // later blocks too), allocated, grown and zeroed.
        for align in [1usize, 2, 4, 8, 16] {
            for size in (align..=65536).step_by(align) {
                let layout = Layout::from_size_align(size, align).unwrap();
                let mut held = Vec::new();
                for _ in 0..4 {
                    // SAFETY: a non-zero size; freed below with the same layout.
                    let p = unsafe { MiMalloc.alloc(layout) };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    held.push(p);
                }
                // SAFETY: as above.
                let z = unsafe { MiMalloc.alloc_zeroed(layout) };
                assert_eq!(z as usize % align, 0, "zeroed size {size} align {align}");
                // SAFETY: `z` is `size` bytes long.
                assert!(unsafe { std::slice::from_raw_parts(z, size) }
                    .iter()
                    .all(|b| *b == 0));
                // SAFETY: `z` came from `alloc_zeroed(layout)`.
                let r = unsafe { MiMalloc.realloc(z, layout, size + align) };
                assert_eq!(r as usize % align, 0, "realloc size {size} align {align}");
                held.push(r);
                for (i, p) in held.into_iter().enumerate() {
                    let l = if i == 4 {
                        Layout::from_size_align(size + align, align).unwrap()
                    } else {
                        layout
                    };
                    // SAFETY: each pointer came from this allocator with layout `l`.
                    unsafe { MiMalloc.dealloc(p, l) };
                }
            }
        }
        // Larger alignments and sizes that are not a multiple of theirs take the aligned calls.
        for (size, align) in [(24, 16), (8, 16), (100, 64), (5000, 4096), (1, 8)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: freed with the same layout.
            let p = unsafe { MiMalloc.alloc(layout) };
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            // SAFETY: `p` came from `alloc(layout)`.
            unsafe { MiMalloc.dealloc(p, layout) };
        }
    }
}
