//! A read-prefetch hint, the one `unsafe` operation the engine needs.
//!
//! A lookup batch is bound by memory latency, not bandwidth; asking for the
//! index bucket and the row of later ids while earlier ones are copied keeps
//! many misses in flight. Kept apart from the engine so that `cache/` and
//! `stats.rs` can forbid `unsafe` outright.

const CACHE_LINE: usize = 64;
/// Lines of a row worth prefetching; the hardware streams the rest of a wide row.
const MAX_ROW_LINES: usize = 8;

/// Asks for the cache line holding `value` in the L1 cache: for what the
/// thread reads next, like an index bucket it is about to probe.
#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(value: &T) {
    prefetch_line::<true>((value as *const T).cast());
}

/// Asks for the first lines of `row` in the L2 cache. A lookup copies each
/// row once, a few ids later; asking for the rows in the L1 cache held its
/// fill buffers (one per line, a handful per row) until the lines arrived, and
/// a lookup window's prefetches stalled on them: at 4M rows of 256 bytes,
/// asking for the L2 cache made lookups 1.10-1.17x faster.
#[inline(always)]
pub(crate) fn prefetch_row(row: &[u8]) {
    for line in row.chunks(CACHE_LINE).take(row_lines(row.len())) {
        prefetch_line::<false>(line.as_ptr().cast());
    }
}

/// Lines [`prefetch_row`] asks for in a row of `row_bytes`.
#[inline]
pub(crate) fn row_lines(row_bytes: usize) -> usize {
    row_bytes.div_ceil(CACHE_LINE).min(MAX_ROW_LINES)
}

#[inline(always)]
fn prefetch_line<const INTO_L1: bool>(address: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` and `prefetcht1` are hints that never fault and
    // write nothing, whatever the address (ours come from live references
    // anyway); SSE is in the x86_64 baseline, so the instructions always exist.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        if INTO_L1 {
            _mm_prefetch::<_MM_HINT_T0>(address);
        } else {
            _mm_prefetch::<_MM_HINT_T1>(address);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
