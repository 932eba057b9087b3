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

    /// What the contender's index holds and costs a lookup, when it is one of
    /// the benches' own (see `indexed_limit`).
    fn index_profile(&self) -> Option<String> {
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
