//! What the harness asks of every contender.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// A store of fixed-width rows keyed by `i64` ids, driven the way a predictor
/// drives an embedding cache. Misses are zero-filled by every contender, so all
/// of them do the same work per id.
pub trait Contender: Send + Sync {
    fn name(&self) -> &'static str;

    /// Stores `rows` (row `i` is `rows[i * row_bytes..]`) for `ids`, stamped with
    /// `timestamp`, before any reader runs. `slots` are the ids' dense row
    /// numbers, which only the limit uses.
    fn fill(&mut self, ids: &[i64], slots: &[u32], rows: &[u8], timestamp: u32) {
        let _ = slots;
        self.publish(ids, rows, timestamp);
    }

    /// Makes room for `rows` rows in the empty contender before its fill, as a
    /// host that knows the table's size would; a contender without such a
    /// call (or sized at construction) keeps this default, which does nothing.
    fn reserve(&mut self, rows: usize) {
        let _ = rows;
    }

    /// Whether `publish` and `evict_older_than` may run while readers do.
    fn live_publish(&self) -> bool {
        true
    }

    /// Inserts or overwrites rows while readers may be running.
    fn publish(&self, ids: &[i64], rows: &[u8], timestamp: u32);

    /// Removes every row stamped before `threshold`; returns how many.
    fn evict_older_than(&self, threshold: u32) -> u64;

    /// Looks up `ids`, writing each row to `out` (zeros for a miss); returns the
    /// number of hits.
    fn get(&self, ids: &[i64], slots: &[u32], out: &mut [u8]) -> u64;

    /// The contender's own cumulative (hits, misses) read counters, if it has any.
    fn read_counters(&self) -> Option<(u64, u64)> {
        None
    }

    /// Bytes the contender reports holding, when it keeps that account.
    fn accounted_bytes(&self) -> Option<u64> {
        None
    }

    /// Registers (`Some`) or unregisters (`None`) a stat sink adding each
    /// batch's id count to `counter`; false when the contender has no sinks.
    fn set_counting_sink(&self, counter: Option<Arc<AtomicU64>>) -> bool {
        let _ = counter;
        false
    }
}

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
