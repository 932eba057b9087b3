//! A read-prefetch hint, the one `unsafe` operation the engine needs.
//!
//! A lookup batch is bound by memory latency, not bandwidth; asking for the
//! index bucket and the row of later ids while earlier ones are copied keeps
//! many misses in flight. Kept apart from the engine so that `cache/` and
//! `stats.rs` can forbid `unsafe` outright.

const CACHE_LINE: usize = 64;
/// Lines of a row worth prefetching; the hardware streams the rest of a wide row.
const MAX_ROW_LINES: usize = 8;

#[inline(always)]
pub(crate) fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is a hint that never faults and writes nothing, and
    // the address comes from a live reference anyway; SSE is in the x86_64
    // baseline, so the instruction always exists.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[inline(always)]
pub(crate) fn prefetch_row(row: &[u8]) {
    for line in row.chunks(CACHE_LINE).take(MAX_ROW_LINES) {
        prefetch(&line[0]);
    }
}
