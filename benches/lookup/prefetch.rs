//! Prefetch hints for the benches' gathers, as kvzch asks for its buckets and rows.

const CACHE_LINE: usize = 64;
/// Lines of a row worth prefetching; the hardware streams the rest of a wide row.
const MAX_ROW_LINES: usize = 8;

/// Lines [`prefetch_row`] asks for in a row of `row_bytes`.
pub fn row_lines(row_bytes: usize) -> usize {
    row_bytes.div_ceil(CACHE_LINE).min(MAX_ROW_LINES)
}

/// Asks for the first lines of `row` in the L2 cache, as kvzch does: asked for
/// in the L1 cache, a gather's rows held the fill buffers and the prefetches
/// stalled (the limit gathered 1.05-1.07x faster at 256 bytes).
#[inline(always)]
pub fn prefetch_row(row: &[u8]) {
    for line in row.chunks(CACHE_LINE).take(row_lines(row.len())) {
        prefetch_line::<false>(line.as_ptr().cast());
    }
}

/// Asks for the line holding `value` in the L1 cache, as kvzch asks for an
/// index bucket it is about to probe.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    prefetch_line::<true>((value as *const T).cast());
}

#[inline(always)]
fn prefetch_line<const INTO_L1: bool>(address: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and writes nothing,
    // whatever the address (ours come from live references anyway).
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
