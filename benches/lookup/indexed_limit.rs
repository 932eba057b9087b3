//! The limit behind a two-choice index: the limit's dense rows, found through
//! a table from id to row number in the layout kvzch's index had until it took
//! hash remainders (see `two_choice`), looked up with kvzch's pipeline. What a
//! lookup costs when finding a row takes that index and nothing else (no
//! shards, no locks, no grouping, no counters). Every lookup reads an id's two
//! buckets side by side; kvzch's index now reads one line for nearly every id.
//! `benches/index_layouts.rs` weighs that layout against others, linear
//! probing (`key_buckets`, kvzch's layout before) among them.
//!
//! The lookup hashes the batch first, asks for each id's buckets in the L1
//! cache twice the row distance ahead, and resolves each id and asks for its
//! row in the L2 cache the limit's row distance ahead. Against the limit, this
//! measures the two-choice layout; against this, kvzch's own index and
//! structure (shards, locks, grouping, chunked rows, counters).

use std::cell::RefCell;

use crate::contender::Contender;
use crate::key_buckets::{hash, KeyBuckets};
use crate::limit::{rows_ahead, Limit};
use crate::prefetch::prefetch_row;

/// The two-choice index's fill after a rebuild: the suite's `indexed_limit`
/// builds its index to it.
pub const TWO_CHOICE_FILL: f64 = 0.8;
/// The ring of rows resolved ahead: at least `rows_ahead` of any width.
const RING: usize = 16;

thread_local! {
    /// A batch's hashes, reused across batches.
    static HASHES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// What an index holds, and how many of its lines a lookup of a stored id
/// reads, counted as ids are stored.
pub struct Profile {
    bytes: usize,
    ids: usize,
    /// Ids beyond the first line their lookup reads.
    away: usize,
    /// Lines the lookups of all stored ids read.
    lines: usize,
}

impl Profile {
    pub fn new(bytes: usize) -> Profile {
        Profile {
            bytes,
            ids: 0,
            away: 0,
            lines: 0,
        }
    }

    /// Counts an id whose lookup reads `lines` lines of the index.
    pub fn add(&mut self, lines: usize) {
        self.ids += 1;
        self.away += usize::from(lines > 1);
        self.lines += lines;
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids = self.ids.max(1) as f64;
        write!(
            f,
            "{:.1} B/row, {:.1}% of ids beyond their first line, {:.2} lines per hit",
            self.bytes as f64 / ids,
            100.0 * self.away as f64 / ids,
            self.lines as f64 / ids
        )
    }
}

/// A map from id to the limit's row numbers, looked up in three steps by the
/// pipeline below. `slot` is the id's precomputed row number, which only a
/// bound that is not a map (`benches/index_layouts.rs`) may read.
pub trait RowIndex: Send + Sync {
    /// Whether the index reads `slot`: the pipeline passes 0 otherwise, so a
    /// map's lookup reads nothing a real one could not.
    const READS_SLOTS: bool = false;

    /// Stores `row` for `id`.
    fn insert(&mut self, id: i64, hash: u64, slot: u32, row: u32);
    /// Asks for the line a lookup of `id` reads first.
    fn prefetch_first(&self, id: i64, hash: u64, slot: u32);
    /// The row of `id`, as far as the index alone tells: asks for whatever
    /// line `confirm` reads.
    fn locate(&self, id: i64, hash: u64, slot: u32) -> Option<u32>;
    /// The row of `id` given what `locate` said, once that row was asked for:
    /// an index that keeps no ids checks its answer here.
    fn confirm(&self, id: i64, hash: u64, located: u32) -> Option<u32> {
        let _ = (id, hash);
        Some(located)
    }
    fn profile(&self) -> &Profile;
}

impl RowIndex for KeyBuckets {
    fn insert(&mut self, id: i64, hash: u64, _slot: u32, row: u32) {
        KeyBuckets::insert(self, id, hash, row);
    }

    #[inline(always)]
    fn prefetch_first(&self, _id: i64, hash: u64, _slot: u32) {
        crate::prefetch::prefetch(self.home_bucket(hash));
    }

    #[inline(always)]
    fn locate(&self, id: i64, hash: u64, _slot: u32) -> Option<u32> {
        self.find::<{ usize::MAX }>(id, hash)
    }

    fn profile(&self) -> &Profile {
        KeyBuckets::profile(self)
    }
}

pub struct IndexedLimit<I: RowIndex> {
    rows: Limit,
    /// Whether `rows` are a filled limit's (`over`): a fill builds the index
    /// only.
    shares_rows: bool,
    index: I,
}

impl<I: RowIndex> IndexedLimit<I> {
    /// The limit's `rows` rows of `row_bytes`, found through the empty `index`.
    // The lookup suite's; the layout study builds its layouts `over` one limit.
    #[allow(dead_code)]
    pub fn with_index(rows: usize, row_bytes: usize, index: I) -> IndexedLimit<I> {
        IndexedLimit {
            rows: Limit::new(rows, row_bytes),
            shares_rows: false,
            index,
        }
    }

    /// The rows of `filled`, a limit filled already, found through the empty
    /// `index`.
    // The layout study's, which holds its rows once for all its layouts.
    #[allow(dead_code)]
    pub fn over(filled: &Limit, index: I) -> IndexedLimit<I> {
        IndexedLimit {
            rows: filled.share(),
            shares_rows: true,
            index,
        }
    }

    /// The row of `id` as far as the index tells, whose first lines it asks
    /// for: its number and its bytes.
    #[inline(always)]
    fn resolve(&self, id: i64, hash: u64, slot: u32) -> Option<(u32, &[u8])> {
        let row = self.index.locate(id, hash, slot)?;
        let bytes = self.rows.row(row);
        prefetch_row(bytes);
        Some((row, bytes))
    }
}

impl<I: RowIndex> Contender for IndexedLimit<I> {
    fn name(&self) -> &'static str {
        "indexed_limit"
    }

    fn fill(&mut self, ids: &[i64], slots: &[u32], rows: &[u8], timestamp: u32) {
        if !self.shares_rows {
            self.rows.fill(ids, slots, rows, timestamp);
        }
        for (&id, &slot) in ids.iter().zip(slots) {
            self.index.insert(id, hash(id), slot, slot);
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

    fn index_profile(&self) -> Option<String> {
        Some(self.index.profile().to_string())
    }

    fn get(&self, ids: &[i64], slots: &[u32], out: &mut [u8]) -> u64 {
        HASHES.with_borrow_mut(|hashes| {
            hashes.clear();
            hashes.extend(ids.iter().map(|&id| hash(id)));
            let d = rows_ahead(self.rows.row_bytes());
            let n = ids.len();
            let slot = |k: usize| if I::READS_SLOTS { slots[k] } else { 0 };
            let prefetch_first = |k: usize| self.index.prefetch_first(ids[k], hashes[k], slot(k));
            (0..n.min(2 * d)).for_each(prefetch_first);
            let mut resolved: [Option<(u32, &[u8])>; RING] = [None; RING];
            for (k, row) in resolved.iter_mut().enumerate().take(n.min(d)) {
                *row = self.resolve(ids[k], hashes[k], slot(k));
            }
            let mut hits = 0;
            for (j, target) in out.chunks_exact_mut(self.rows.row_bytes()).enumerate() {
                if j + 2 * d < n {
                    prefetch_first(j + 2 * d);
                }
                let located = resolved[j % RING];
                if j + d < n {
                    resolved[(j + d) % RING] = self.resolve(ids[j + d], hashes[j + d], slot(j + d));
                }
                let row = located.and_then(|(row, bytes)| {
                    match self.index.confirm(ids[j], hashes[j], row)? {
                        confirmed if confirmed == row => Some(bytes),
                        other => Some(self.rows.row(other)),
                    }
                });
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
