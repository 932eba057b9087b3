//! The limit behind an index: the limit's dense rows, found through one
//! open-addressing table from id to row number, looked up with kvzch's
//! pipeline. What a lookup costs when finding a row takes one index line and
//! nothing else (no shards, no locks, no grouping, no counters): on a table
//! far larger than the caches that line is a second random access per id,
//! which no prefetch distance hides.
//!
//! The table mirrors kvzch's index: 64-byte buckets of five (id, row + 1)
//! pairs, linear probing, on transparent huge pages, at kvzch's fill after a
//! rebuild (80%). The lookup hashes the batch first, asks for each id's bucket
//! in the L1 cache twice the row distance ahead, and resolves each id and asks
//! for its row in the L2 cache the limit's row distance ahead. Against the
//! limit, this measures the index line itself; against this, kvzch's own
//! structure (shards, locks, grouping, chunked rows, counters).

use std::cell::RefCell;

use crate::contender::{prefetch, prefetch_row, Contender};
use crate::huge_map::HugeMap;
use crate::limit::{rows_ahead, Limit};

const BUCKET_WIDTH: usize = 5;
/// kvzch's fill after a rebuild.
const FILL: f64 = 0.8;
/// A position whose row is this holds no id.
const EMPTY: u32 = 0;
/// The ring of rows resolved ahead: at least `rows_ahead` of any width.
const RING: usize = 16;

/// All zeros is the empty bucket, as a fresh mapping is.
#[repr(C, align(64))]
struct Bucket {
    ids: [i64; BUCKET_WIDTH],
    /// Each id's row number plus one, or `EMPTY`.
    rows: [u32; BUCKET_WIDTH],
    _pad: u32,
}

impl Bucket {
    /// The position holding `id`, compared over all five without a branch.
    fn position_of(&self, id: i64) -> Option<usize> {
        let mut matches = 0u32;
        for (i, (&k, &row)) in self.ids.iter().zip(&self.rows).enumerate() {
            matches |= u32::from(k == id && row != EMPTY) << i;
        }
        (matches != 0).then(|| matches.trailing_zeros() as usize)
    }

    fn has_room(&self) -> bool {
        self.rows.contains(&EMPTY)
    }
}

thread_local! {
    /// A batch's hashes, reused across batches.
    static HASHES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

pub struct IndexedLimit {
    rows: Limit,
    buckets: HugeMap,
    bucket_count: usize,
}

/// A 64-bit mix of the id (MurmurHash3's finalizer, as kvzch's hash).
fn hash(id: i64) -> u64 {
    let mut h = id as u64 ^ 0x6b76_7a63_6c69_6d74;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl IndexedLimit {
    pub fn new(rows: usize, row_bytes: usize) -> IndexedLimit {
        let bucket_count = ((rows as f64 / (BUCKET_WIDTH as f64 * FILL)).ceil() as usize).max(1);
        IndexedLimit {
            rows: Limit::new(rows, row_bytes),
            buckets: HugeMap::new(bucket_count * std::mem::size_of::<Bucket>()),
            bucket_count,
        }
    }

    fn buckets(&self) -> &[Bucket] {
        let bytes = self.buckets.bytes();
        // SAFETY: the mapping starts on a 2 MiB boundary, so it is aligned for
        // `Bucket`, and holds at least `bucket_count` of them; `Bucket` is
        // plain integers, valid for any bytes; the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), self.bucket_count) }
    }

    fn buckets_mut(&mut self) -> &mut [Bucket] {
        let count = self.bucket_count;
        let bytes = self.buckets.bytes_mut();
        // SAFETY: as in `buckets`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), count) }
    }

    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.bucket_count as u128) >> 64) as usize
    }

    fn next(&self, bucket: usize) -> usize {
        (bucket + 1) % self.bucket_count
    }

    /// The row of `id`, whose first lines it asks for.
    #[inline(always)]
    fn resolve(&self, id: i64, hash: u64) -> Option<&[u8]> {
        let buckets = self.buckets();
        let mut at = self.home(hash);
        loop {
            let bucket = &buckets[at];
            if let Some(i) = bucket.position_of(id) {
                let row = self.rows.row(bucket.rows[i] - 1);
                prefetch_row(row);
                return Some(row);
            }
            if bucket.has_room() {
                return None;
            }
            at = self.next(at);
        }
    }

    fn insert(&mut self, id: i64, slot: u32) {
        let mut at = self.home(hash(id));
        loop {
            let next = self.next(at);
            let bucket = &mut self.buckets_mut()[at];
            let free = bucket.rows.iter().position(|&row| row == EMPTY);
            if let Some(i) = bucket.position_of(id).or(free) {
                bucket.ids[i] = id;
                bucket.rows[i] = slot + 1;
                return;
            }
            at = next;
        }
    }
}

impl Contender for IndexedLimit {
    fn name(&self) -> &'static str {
        "indexed_limit"
    }

    fn fill(&mut self, ids: &[i64], slots: &[u32], rows: &[u8], timestamp: u32) {
        self.rows.fill(ids, slots, rows, timestamp);
        for (&id, &slot) in ids.iter().zip(slots) {
            self.insert(id, slot);
        }
    }

    // Plain arrays, like the limit's rows: no publishing while read.
    fn live_publish(&self) -> bool {
        self.rows.live_publish()
    }

    fn publish(&self, ids: &[i64], rows: &[u8], timestamp: u32) {
        self.rows.publish(ids, rows, timestamp);
    }

    fn evict_older_than(&self, threshold: u32) -> u64 {
        self.rows.evict_older_than(threshold)
    }

    fn get(&self, ids: &[i64], _slots: &[u32], out: &mut [u8]) -> u64 {
        HASHES.with_borrow_mut(|hashes| {
            hashes.clear();
            hashes.extend(ids.iter().map(|&id| hash(id)));
            let buckets = self.buckets();
            let d = rows_ahead(self.rows.row_bytes());
            let n = ids.len();
            let prefetch_bucket = |k: usize| prefetch(&buckets[self.home(hashes[k])]);
            (0..n.min(2 * d)).for_each(prefetch_bucket);
            let mut resolved: [Option<&[u8]>; RING] = [None; RING];
            for (k, row) in resolved.iter_mut().enumerate().take(n.min(d)) {
                *row = self.resolve(ids[k], hashes[k]);
            }
            let mut hits = 0;
            for (j, target) in out.chunks_exact_mut(self.rows.row_bytes()).enumerate() {
                if j + 2 * d < n {
                    prefetch_bucket(j + 2 * d);
                }
                let row = resolved[j % RING];
                if j + d < n {
                    resolved[(j + d) % RING] = self.resolve(ids[j + d], hashes[j + d]);
                }
                match row {
                    Some(row) => {
                        target.copy_from_slice(row);
                        hits += 1;
                    }
                    None => target.fill(0),
                }
            }
            hits
        })
    }
}
