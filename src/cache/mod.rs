//! The engine: a sharded cache of fixed-width rows keyed by `i64` ids.
//!
//! # Concurrency protocol
//!
//! Each shard (an `index` and a `rows` arena) sits behind its own
//! reader-writer lock, padded to a cache line of its own. A batch is grouped by
//! shard (`batch`) and takes each shard's lock once, so lock traffic is one
//! acquisition per touched shard per batch, never per id, and a reader writes
//! no shared memory per id. A reader holding a shard's read lock sees every row
//! of that shard whole: old or new, never torn. A lookup takes a batch in
//! windows of `LOOKUP_WINDOW` ids. A cache of at most `SPAN_SHARDS` shards
//! takes a window in runs of `ORDERED_RUN` ids in the batch's own order: it
//! read-locks every shard a run touches at once and runs one prefetching
//! pipeline over the run, which writes the output in order. From the first run
//! that finds one of its shards write-locked on, the window is grouped, as
//! every window of a cache of more shards is: the lookup read-locks
//! consecutive shards together, up to `SPAN_IDS` ids or `SPAN_SHARDS` shards,
//! and runs one pipeline over all their ids (`Span`), so a small batch, a few
//! ids a shard, keeps as many misses in flight as a large one. A lookup takes
//! its locks with `try_read` only, and waits for a lock holding no other.
//!
//! Calls that change the contents (`batch_set`, `batch_remove`,
//! `evict_older_than`) are serialized by one writer mutex per cache, which
//! readers never take. That lets a publish plan its growth and capacity check
//! against contents nobody else changes, allocate everything it needs first and
//! only then write, so a failure leaves the cache unchanged. Writers hold a
//! shard's write lock only for a bounded stretch (`WRITE_STRETCH` rows or
//! `EVICT_STRETCH` buckets) and then let waiting readers in, so a large publish
//! or an eviction pass delays a lookup by one stretch at most. A publish
//! that holds an id twice in a shard's group longer than one stretch writes
//! only its last occurrence, so a reader let in between stretches finds the
//! old row or the new one (a shorter group is written in one stretch, where
//! no reader sees an earlier occurrence). A lookup that
//! finds a shard write-locked reads the batch's other shards first and comes
//! back to it, so the wait overlaps useful work.
//!
//! Hits and misses are counted per batch into [`crate::stats`] counters, and
//! sinks are called after the lookup, outside every lock.

#![forbid(unsafe_code)]

mod batch;
mod config;
mod error;
mod fallible;
mod hash;
pub(crate) mod index;
mod rows;
mod shard;
mod stamps;

use std::ops::Range;
use std::time::Instant;

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use config::{CacheConfig, EvictionPolicy, MissPolicy, TableName, MAX_ROW_BYTES, MAX_SHARDS};
pub use error::{Error, ErrorKind};

use crate::prefetch::{prefetch, prefetch_row, row_lines};
use crate::stats::{
    self, BatchEvent, BatchStats, ReadCounters, ReadStats, Sink, SinkId, SinkRegistry,
};
use batch::{with_scratch, Grouping, HashedId, SUPERSEDED};
use fallible::reserve_to;
use hash::IdHasher;
use index::{FirstProbe, Growth, ShardBits, Sizing};
use shard::{Shard, Sweep};

/// Lookups are taken in windows of this many ids, which bounds the per-thread
/// scratch, keeps a window's prefetched rows in the L2 cache, and bounds how
/// long a grouped lookup holds a shard's read lock, for which a publish waits:
/// about 256 ids per shard at the 8 shards a 2-core machine gets by default.
const LOOKUP_WINDOW: usize = 2048;
/// A cache of at most `SPAN_SHARDS` shards takes a window in runs of this many
/// ids in the batch's order, each under the read locks of all the shards it
/// touches, so that the rows are written out in order, where a grouped window
/// writes each shard's rows scattered over the whole window: at 4M rows of 256
/// bytes and 8 shards, runs of 512 measured 1.14x and 1.18x the grouped windows
/// on 1 and 2 threads (runs of the whole window 1.06x-1.19x and 1.11x-1.16x, of
/// 1024 ids 1.14x and 1.17x, of 256 1.11x and 1.09x). A run holds each shard
/// it touches for all its ids, twice as long as a grouped window held each of
/// 8 shards. The first run that meets a shard a writer holds has the rest of
/// its window grouped, so a lookup under a writer meets the writer's shard
/// once per window, as a grouped one does.
const ORDERED_RUN: usize = 512;
/// Row lines a lookup keeps asked for ahead of the row it copies: it resolves
/// this many lines' worth of ids ahead, between 4 and `MAX_IDS_AHEAD` ids, and
/// asks for their buckets twice as far ahead. More lines in flight than the
/// core can track stall the prefetches (see `prefetch_row`); at 4M rows,
/// against 16 ids ahead for every width, lookups measured 1.07-1.10x faster at
/// 128 bytes, 1.10-1.17x at 256, 1.16x at 512 and 1.04-1.11x at 1024 (64
/// bytes: 1.02-1.04x).
const LINES_AHEAD: usize = 32;
/// The most ids a lookup resolves ahead of the one it copies: the size of the
/// ring that holds their rows.
const MAX_IDS_AHEAD: usize = 16;
/// The most shards a lookup holds read-locked at once to take their ids in one
/// pipeline (see `Span`). At 128 shards, the default on 32 cores, 32 measured
/// 1.21x and 1.12x the lookups without spans at batches of 1024 and 4096 ids,
/// 16 1.16x and 1.03x.
const SPAN_SHARDS: usize = 32;
// A run in order names the shards it touches in a `u64`.
const _: () = assert!(SPAN_SHARDS <= 64);
/// A lookup adds shards to a span until it holds this many ids: enough that
/// the pipeline's start, where ids wait alone, costs little (at batches of 256
/// over 8 shards, spans of 128 ids measured 0.93-0.98x the lookups without
/// spans, of 256 1.07x), and few enough that a publish waiting for one of the
/// span's shards waits behind a few hundred ids at most. A shard with this
/// many ids in the window is a span of its own.
const SPAN_IDS: usize = 256;
/// Under a capacity policy, the fewest rows of the capacity a shard holds
/// when the library picks the shard count, or all of them in one shard. Each
/// shard evicts within its share, so a publish that fits the cache can still
/// pass one shard's share and lose rows there: a shard's part of a batch
/// deviates from its share by about `sqrt(share)` rows, 0.8% here. A capacity
/// under twice this is one shard, whose eviction is exact.
const MIN_SHARE_ROWS: usize = 16_384;
/// Ids of a publish or a removal whose buckets are asked for ahead of the one
/// it writes, or, while a publish counts its new ids, ahead of the one it
/// probes.
const WRITE_DISTANCE: usize = 16;
/// Rows a publish writes, or ids a removal removes, before letting waiting
/// readers into the shard. Each costs a few cache misses (index, row, stamp),
/// more while readers share the memory bus: at 512 a waiting reader measured
/// 300-500 us behind a stretch.
const WRITE_STRETCH: usize = 128;
/// Index buckets `evict_older_than` scans, or index positions (a fifth of
/// that in buckets, each a cache miss on the clock's scattered walk) capacity
/// eviction passes, before letting waiting readers in.
const EVICT_STRETCH: usize = 1024;

/// An empty set with room for `ids` ids.
fn id_set(ids: usize) -> Result<ahash::HashSet<i64>, Error> {
    let mut set = ahash::HashSet::default();
    reserve_to(&mut set, ids, || format!("a set of {ids} ids"))?;
    Ok(set)
}

/// The most rows a shard can hold in `bytes` under a capacity policy. It
/// holds no more than it can address, and searching no further keeps the
/// sizes computed within `usize` however large `bytes` is (a host may say "no
/// limit" with `UINT64_MAX`).
fn rows_within(row_bytes: usize, bytes: usize) -> usize {
    let addressable = Shard::addressable_rows(row_bytes);
    let (mut fits, mut too_many) = (0, (bytes / row_bytes).min(addressable) + 1);
    while too_many - fits > 1 {
        let middle = fits + (too_many - fits) / 2;
        if Shard::memory_bytes_at_most(row_bytes, middle) <= bytes {
            fits = middle;
        } else {
            too_many = middle;
        }
    }
    fits
}

/// Consecutive shards' parts of a lookup window, read-locked together so that
/// one pipeline takes all their ids. A batch spread thinly over the shards (64
/// ids over 16 shards is 4 a shard) would otherwise restart the pipeline at
/// every shard, where each id waits for its bucket and then its row with
/// nothing to overlap them.
struct Span<'a> {
    guards: [Option<RwLockReadGuard<'a, Shard>>; SPAN_SHARDS],
    /// Where each locked shard's ids end, counted from `start`.
    ends: [usize; SPAN_SHARDS],
    locked: usize,
    /// Where the span's ids start in the window's grouped order.
    start: usize,
}

impl<'a> Span<'a> {
    fn starting_at(start: usize) -> Span<'a> {
        Span {
            guards: std::array::from_fn(|_| None),
            ends: [0; SPAN_SHARDS],
            locked: 0,
            start,
        }
    }

    fn len(&self) -> usize {
        self.locked.checked_sub(1).map_or(0, |last| self.ends[last])
    }

    fn is_empty(&self) -> bool {
        self.locked == 0
    }

    /// Adds the next shard, read-locked, with its `ids` ids in the window.
    fn add(&mut self, guard: RwLockReadGuard<'a, Shard>, ids: usize) {
        self.ends[self.locked] = self.len() + ids;
        self.guards[self.locked] = Some(guard);
        self.locked += 1;
    }

    /// Whether the span holds enough ids to keep a pipeline busy, or as many
    /// locks as a span may hold.
    fn is_full(&self) -> bool {
        self.locked == SPAN_SHARDS || self.len() >= SPAN_IDS
    }

    /// Where the span's ids lie in the window's grouped order.
    fn range(&self) -> Range<usize> {
        self.start..self.start + self.len()
    }

    /// The span's shards met in order, by one stage of a pipeline.
    fn walk(&self) -> ShardWalk<'_> {
        ShardWalk {
            span: self,
            place: 0,
            end: self.ends[0],
            shard: self.guards[0].as_deref().expect("a span holds a shard"),
        }
    }
}

/// Where one stage of a lookup pipeline is among a span's shards: it meets
/// the span's ids in order, so finding an id's shard is one comparison with
/// the current shard's end.
struct ShardWalk<'s> {
    span: &'s Span<'s>,
    place: usize,
    end: usize,
    shard: &'s Shard,
}

impl<'s> ShardWalk<'s> {
    /// The shard of the span's `k`th id, `k` at least the previous call's.
    #[inline(always)]
    fn shard(&mut self, k: usize) -> &'s Shard {
        if k >= self.end {
            self.move_to(k);
        }
        self.shard
    }

    #[cold]
    fn move_to(&mut self, k: usize) {
        while k >= self.span.ends[self.place] {
            self.place += 1;
        }
        self.end = self.span.ends[self.place];
        self.shard = self.span.guards[self.place]
            .as_deref()
            .expect("a span's ids are all in shards it holds");
    }
}

/// How a stage of the lookup pipeline finds the shard of its `k`th id, `k` at
/// least the previous call's.
trait ShardOf<'s> {
    fn shard(&mut self, k: usize, key: &HashedId) -> &'s Shard;
}

impl<'s> ShardOf<'s> for ShardWalk<'s> {
    #[inline(always)]
    fn shard(&mut self, k: usize, _key: &HashedId) -> &'s Shard {
        ShardWalk::shard(self, k)
    }
}

/// The shards a run in the batch's order holds read-locked, by shard number:
/// an id's shard is picked by its hash.
#[derive(Clone, Copy)]
struct ByHash<'s> {
    shards: &'s [&'s Shard; SPAN_SHARDS],
    cache: &'s Cache,
}

impl<'s> ShardOf<'s> for ByHash<'s> {
    #[inline(always)]
    fn shard(&mut self, _k: usize, key: &HashedId) -> &'s Shard {
        self.shards[self.cache.shard_of(key.hash)]
    }
}

/// Where the row of the pipeline's `j`th id goes, counted in rows from the
/// start of the output it writes.
trait Places {
    fn place(&self, j: usize) -> usize;
}

/// A grouped window: the ids' batch positions in the grouping's order.
impl Places for &[u32] {
    #[inline(always)]
    fn place(&self, j: usize) -> usize {
        self[j] as usize
    }
}

/// A run in the batch's order.
struct InOrder;

impl Places for InOrder {
    #[inline(always)]
    fn place(&self, j: usize) -> usize {
        j
    }
}

/// Asks for the bucket `key`'s lookup in `shard` reads first, which nearly
/// always answers.
#[inline(always)]
fn prefetch_bucket(shard: &Shard, key: &HashedId) {
    prefetch(shard.index().first_line(key.hash));
}

/// Asks for the bucket of the key `WRITE_DISTANCE` after `at` in `keys`, a
/// shard's group: a publish's or a removal's probes are each a cache miss of
/// their own (the key's first bucket, which nearly always answers), and asking
/// for later ones' while one is probed overlaps them.
#[inline(always)]
fn prefetch_bucket_ahead(shard: &Shard, keys: &[HashedId], at: usize) {
    if let Some(ahead) = keys.get(at + WRITE_DISTANCE) {
        prefetch_bucket(shard, ahead);
    }
}

/// What a lookup's first bucket told the pipeline.
#[derive(Clone, Copy)]
enum Resolved<'s> {
    /// The id's row, whose first lines are asked for.
    Row(&'s [u8]),
    Miss,
    /// Its second bucket asked for, and looked up half a distance later.
    Elsewhere,
}

/// The row of `slot` in `shard`, whose first lines it asks for.
#[inline(always)]
fn prefetched_row<const WIDTH: usize>(shard: &Shard, slot: u32) -> &[u8] {
    let row = shard.rows().row(slot);
    let row = if WIDTH == 0 { row } else { &row[..WIDTH] };
    prefetch_row(row);
    row
}

/// What `key`'s first bucket in `shard` says.
#[inline(always)]
fn resolve<const WIDTH: usize, const TOUCH: bool>(shard: &Shard, key: HashedId) -> Resolved<'_> {
    match shard.index().probe_first::<TOUCH>(key.hash) {
        FirstProbe::Found(slot) => Resolved::Row(prefetched_row::<WIDTH>(shard, slot)),
        FirstProbe::Absent => Resolved::Miss,
        FirstProbe::Elsewhere => {
            prefetch(shard.index().second_line(key.hash));
            Resolved::Elsewhere
        }
    }
}

/// The ids of a pipeline whose first buckets did not answer, in order: their
/// places in its run and their shards. At most the ids between two stages of
/// the pipeline wait at once.
struct Waiting<'s> {
    ids: [(usize, Option<&'s Shard>); MAX_IDS_AHEAD],
    first: usize,
    len: usize,
}

impl<'s> Waiting<'s> {
    fn new() -> Waiting<'s> {
        Waiting {
            ids: [(0, None); MAX_IDS_AHEAD],
            first: 0,
            len: 0,
        }
    }

    fn push(&mut self, k: usize, shard: &'s Shard) {
        self.ids[(self.first + self.len) % MAX_IDS_AHEAD] = (k, Some(shard));
        self.len += 1;
    }

    /// The first waiting id, when it is `k` or earlier.
    #[inline(always)]
    fn pop_until(&mut self, k: usize) -> Option<(usize, &'s Shard)> {
        match self.ids[self.first] {
            (waiting, Some(shard)) if self.len > 0 && waiting <= k => {
                self.first = (self.first + 1) % MAX_IDS_AHEAD;
                self.len -= 1;
                Some((waiting, shard))
            }
            _ => None,
        }
    }
}

/// What a cache holds now: one snapshot of its counts (see [`Cache::info`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheInfo {
    pub row_bytes: usize,
    pub num_shards: usize,
    pub rows: u64,
    /// Everything the cache holds: rows, timestamps, index, free space, and the
    /// cache's own structures.
    pub memory_bytes: u64,
    /// New ids stored since creation.
    pub inserts: u64,
    /// Stored ids overwritten since creation.
    pub updates: u64,
    /// Rows removed by `batch_remove`.
    pub removals: u64,
    /// Rows removed by `evict_older_than`.
    pub expirations: u64,
    /// Rows dropped to stay within `max_rows` / `max_memory_bytes`: stored
    /// rows evicted, and new rows of a publish that its shard's share could
    /// not keep, which `inserts` does not count. So `rows == inserts -
    /// removals - expirations - capacity_evictions` only while no publish
    /// dropped rows of its own.
    pub capacity_evictions: u64,
}

/// The counts behind [`CacheInfo`]. Writers change them under one lock, each
/// change whole (rows stored with the inserts that added them, say), and
/// `info` copies them under it: a snapshot, never a mix of before and after.
#[derive(Clone, Copy)]
struct Counts {
    rows: u64,
    memory_bytes: u64,
    inserts: u64,
    updates: u64,
    removals: u64,
    expirations: u64,
    capacity_evictions: u64,
}

/// How many rows each shard may hold under a capacity eviction policy.
#[derive(Clone, Copy)]
struct ShardCapacity {
    /// `max_rows` split over the shards: `base` each, one more for the first
    /// `remainder`, so the shares add up to `max_rows` exactly.
    base: usize,
    remainder: usize,
    /// Rows a shard can hold: what it can address, and within its share of
    /// `max_memory_bytes`.
    at_most: usize,
}

impl ShardCapacity {
    fn of(self, shard: usize) -> usize {
        (self.base + usize::from(shard < self.remainder)).min(self.at_most)
    }
}

pub struct Cache {
    row_bytes: usize,
    miss_policy: MissPolicy,
    max_rows: Option<u64>,
    max_memory_bytes: Option<u64>,
    eviction_policy: EvictionPolicy,
    /// Set when a policy evicts to stay within the limits.
    capacity: Option<ShardCapacity>,
    name: TableName,
    hasher: IdHasher,
    shard_mask: u64,
    shards: Box<[CachePadded<RwLock<Shard>>]>,
    writer: Mutex<()>,
    counts: Mutex<Counts>,
    counters: ReadCounters,
    sinks: SinkRegistry,
}

impl Cache {
    pub fn new(config: CacheConfig) -> Result<Cache, Error> {
        let mut num_shards = config.validated_shard_count()?;
        let evicts = config.eviction_policy != EvictionPolicy::None;
        if evicts {
            // A count the host chose is kept down to shares of one row.
            let fewest_share_rows = match config.num_shards {
                0 => MIN_SHARE_ROWS,
                _ => 1,
            };
            let limit =
                |value: Option<u64>| value.map(|v| usize::try_from(v).unwrap_or(usize::MAX));
            let by_rows = limit(config.max_rows).unwrap_or(usize::MAX);
            let by_memory = limit(config.max_memory_bytes)
                .map_or(usize::MAX, |bytes| rows_within(config.row_bytes, bytes));
            let shares = (by_rows.min(by_memory) / fewest_share_rows).max(1);
            num_shards = num_shards.min(1 << shares.ilog2());
        }
        let hasher = IdHasher::new();
        // A cache that caps its memory plans its capacity from exact table
        // sizes; any other staggers its shards' growth (see `Growth`).
        let growth_of = |shard: usize| match config.max_memory_bytes {
            Some(_) => Growth::Exact,
            None => Growth::Staggered {
                phase: shard as f64 / num_shards as f64,
            },
        };
        let mut shards = Vec::new();
        reserve_to(&mut shards, num_shards, || format!("{num_shards} shards"))?;
        for shard in 0..num_shards {
            shards.push(CachePadded::new(RwLock::new(Shard::new(
                config.row_bytes,
                hasher,
                config.eviction_policy,
                growth_of(shard),
                ShardBits {
                    number: shard as u64,
                    bits: num_shards.ilog2(),
                },
            )?)));
        }
        let shards = shards.into_boxed_slice();
        let empty_shard_bytes = shards[0].read().memory_bytes();
        let footprint = std::mem::size_of::<Cache>()
            + num_shards * (std::mem::size_of::<CachePadded<RwLock<Shard>>>() + empty_shard_bytes);
        if let Some(max) = config.max_memory_bytes {
            if max < footprint as u64 {
                return Err(Error::invalid_argument(format!(
                    "max_memory_bytes {max} < {footprint}, what an empty cache of {num_shards} shards holds"
                )));
            }
        }
        let capacity = match (evicts, config.max_rows, config.max_memory_bytes) {
            (false, ..) | (true, None, None) => None,
            (true, max_rows, max_memory_bytes) => {
                let max_rows = max_rows.map_or(usize::MAX, |rows| {
                    usize::try_from(rows).unwrap_or(usize::MAX)
                });
                let at_most = match max_memory_bytes {
                    None => Shard::addressable_rows(config.row_bytes),
                    Some(max) => {
                        let fixed = footprint - num_shards * empty_shard_bytes;
                        let share =
                            (usize::try_from(max).unwrap_or(usize::MAX) - fixed) / num_shards;
                        let rows = rows_within(config.row_bytes, share);
                        if rows == 0 {
                            return Err(Error::invalid_argument(format!(
                                "max_memory_bytes {max} leaves no room for a row in each of {num_shards} shards"
                            )));
                        }
                        rows
                    }
                };
                Some(ShardCapacity {
                    base: max_rows / num_shards,
                    remainder: max_rows % num_shards,
                    at_most,
                })
            }
        };
        Ok(Cache {
            row_bytes: config.row_bytes,
            miss_policy: config.miss_policy,
            max_rows: config.max_rows,
            max_memory_bytes: config.max_memory_bytes,
            eviction_policy: config.eviction_policy,
            capacity,
            name: config.name,
            hasher,
            shard_mask: num_shards as u64 - 1,
            shards,
            writer: Mutex::new(()),
            counts: Mutex::new(Counts {
                rows: 0,
                memory_bytes: footprint as u64,
                inserts: 0,
                updates: 0,
                removals: 0,
                expirations: 0,
                capacity_evictions: 0,
            }),
            counters: ReadCounters::new(),
            sinks: SinkRegistry::new(),
        })
    }

    pub fn name(&self) -> &TableName {
        &self.name
    }

    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    pub fn miss_policy(&self) -> MissPolicy {
        self.miss_policy
    }

    pub fn eviction_policy(&self) -> EvictionPolicy {
        self.eviction_policy
    }

    /// The cache's size and counts, as one snapshot: taken between two of a
    /// writer's changes to them, never amid one.
    pub fn info(&self) -> CacheInfo {
        let counts = *self.counts.lock();
        CacheInfo {
            row_bytes: self.row_bytes,
            num_shards: self.shards.len(),
            rows: counts.rows,
            memory_bytes: counts.memory_bytes,
            inserts: counts.inserts,
            updates: counts.updates,
            removals: counts.removals,
            expirations: counts.expirations,
            capacity_evictions: counts.capacity_evictions,
        }
    }

    /// Makes one whole change to the counts.
    fn count(&self, change: impl FnOnce(&mut Counts)) {
        change(&mut self.counts.lock());
    }

    /// Applies a change of a shard's memory to the cache's total.
    fn account_memory(&self, before: usize, after: usize) {
        self.count(|counts| {
            counts.memory_bytes = counts.memory_bytes + after as u64 - before as u64
        });
    }

    #[inline]
    fn hash(&self, id: i64) -> u64 {
        self.hasher.hash(id)
    }

    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        (hash & self.shard_mask) as usize
    }

    /// Groups a whole batch by shard, once its scratch is reserved.
    fn reserve_and_group(&self, grouping: &mut Grouping, ids: &[i64]) -> Result<(), Error> {
        grouping.reserve(ids.len(), self.shards.len())?;
        self.group(grouping, ids);
        Ok(())
    }

    fn group(&self, grouping: &mut Grouping, ids: &[i64]) {
        grouping.group(
            ids,
            self.shards.len(),
            |id| self.hash(id),
            |h| self.shard_of(h),
        );
    }

    fn expect_bytes(&self, what: &str, len: usize, ids: usize) -> Result<(), Error> {
        match ids.checked_mul(self.row_bytes) {
            Some(expected) if expected == len => Ok(()),
            expected => Err(Error::invalid_argument(format!(
                "{what} holds {len} bytes, n * row_bytes = {n} * {rb} = {expected}",
                n = ids,
                rb = self.row_bytes,
                expected = expected.map_or("overflow".to_string(), |e| e.to_string()),
            ))),
        }
    }

    /// Stores `rows` (row `i` is `rows[i * row_bytes..][..row_bytes]`) for `ids`,
    /// stamped with `timestamp`. The last occurrence of a duplicate id wins: a
    /// concurrent reader finds the id's old row or that one, never an earlier
    /// occurrence's. (Each earlier occurrence still counts as an update, as if
    /// it had been written and then overwritten; unless the publish, under a
    /// capacity policy, could not keep the id, which then counts once, as a
    /// capacity eviction.) On error nothing is stored;
    /// after `OutOfMemory`, room grown before the failure (in the shards before
    /// it, and the failing shard's room for timestamps) stays for the next
    /// publish.
    pub fn batch_set(&self, ids: &[i64], rows: &[u8], timestamp: u32) -> Result<(), Error> {
        self.expect_bytes("rows", rows.len(), ids.len())?;
        if ids.is_empty() {
            return Ok(());
        }
        if u32::try_from(ids.len()).is_err() {
            return Err(Error::invalid_argument(format!(
                "n {} > {} ids in one batch",
                ids.len(),
                u32::MAX
            )));
        }
        let _writer = self.writer.lock();
        with_scratch(|grouping| {
            self.reserve_and_group(grouping, ids)?;
            // A group written in one stretch is never seen half written.
            grouping.mark_superseded(WRITE_STRETCH)?;
            let reserved = match self.capacity {
                Some(capacity) => self.make_room(grouping, capacity),
                None => self
                    .reserve_for_publish(grouping)
                    .map(|()| ahash::HashSet::default()),
            };
            let dropped = reserved.inspect_err(|_| {
                // Shards reserved before the failure keep the room they grew,
                // which `memory_bytes` counts; the overflow room it does not
                // count goes, as a write would have freed it.
                for (shard, _) in grouping.shard_groups() {
                    self.shards[shard].write().release_overflow_room();
                }
            })?;
            let (mut inserted, mut updated) = (0u64, 0u64);
            for (shard, range) in grouping.shard_groups() {
                let positions = &grouping.order[range.clone()];
                self.write_each(shard, &grouping.keys[range], |guard, written, key| {
                    if !dropped.is_empty() && dropped.contains(&key.id) {
                        return;
                    }
                    let position = positions[written];
                    if position == SUPERSEDED {
                        updated += 1;
                        return;
                    }
                    let row = &rows[position as usize * self.row_bytes..][..self.row_bytes];
                    if guard.upsert(key.hash, row, timestamp) {
                        inserted += 1;
                    } else {
                        updated += 1;
                    }
                });
            }
            self.count(|counts| {
                counts.rows += inserted;
                counts.inserts += inserted;
                counts.updates += updated;
            });
            Ok(())
        })
    }

    /// Makes room in the index for `additional_rows` rows beyond those
    /// stored, so that publishing them rebuilds nothing: what a host that knows
    /// the size of the table it is about to load calls first. Without it a
    /// fill rebuilds each shard's index every time it grows by 50% (26% in a
    /// cache that caps its memory), steps that keep memory within 24 bytes per
    /// row, and moves each id at most three times on the way (up to five in
    /// 26% steps).
    /// Row memory is still allocated as rows arrive, a huge page's worth at a
    /// time.
    ///
    /// The room is split evenly over the shards, as ids are. It counts in
    /// `memory_bytes` from now on, and `compact` gives back what is unused.
    /// Fails with `CapacityExceeded`, changing nothing, when the rows would
    /// pass `max_rows` or their room would take `memory_bytes` past
    /// `max_memory_bytes`, whatever the eviction policy: reserving never
    /// evicts. Under a policy a shard's room stops at its share of the
    /// capacity.
    pub fn reserve(&self, additional_rows: u64) -> Result<(), Error> {
        let shard_count = self.shards.len() as u64;
        let per_shard = additional_rows.div_ceil(shard_count);
        let addressable = Shard::addressable_rows(self.row_bytes) as u64;
        if per_shard > addressable {
            return Err(Error::invalid_argument(format!(
                "additional_rows {additional_rows} > {} rows, what {shard_count} shards can address",
                addressable * shard_count
            )));
        }
        let _writer = self.writer.lock();
        let mut rooms = Vec::new();
        reserve_to(&mut rooms, self.shards.len(), || {
            "a room per shard".to_string()
        })?;
        let mut added_bytes = 0u64;
        for (shard, lock) in self.shards.iter().enumerate() {
            let guard = lock.read();
            let room = match self.capacity {
                Some(capacity) => {
                    (per_shard as usize).min(capacity.of(shard).saturating_sub(guard.len()))
                }
                None => per_shard as usize,
            };
            guard.check_addressable(room)?;
            added_bytes += guard.reservation_growth_for(room) as u64;
            rooms.push(room);
        }
        self.check_capacity(additional_rows, added_bytes)?;
        for (shard, room) in rooms.into_iter().enumerate() {
            self.reserve_in(shard, 0, room, 0, Sizing::Reservation)?;
        }
        Ok(())
    }

    /// Under a capacity policy: makes room for the publish's new rows, shard
    /// by shard, evicting what they need beyond the shard's share. The ids the
    /// publish overwrites are never evicted. A publish with more new rows than
    /// a shard can hold keeps its latest ones; the ids it drops are returned.
    /// Every shard's allocation comes before the first eviction, so a failed
    /// one leaves the cache unchanged.
    fn make_room(
        &self,
        grouping: &Grouping,
        capacity: ShardCapacity,
    ) -> Result<ahash::HashSet<i64>, Error> {
        // Per shard the batch touches: the batch's ids in it, and those it
        // does not hold yet, from the batch's last to its first.
        let mut plans = Vec::new();
        reserve_to(&mut plans, self.shards.len(), || {
            "a plan per shard".to_string()
        })?;
        // The most ids the publish can drop: the new ids beyond each shard's
        // growth (eviction may make room for some of them).
        let mut most_dropped = 0;
        for (shard, range) in grouping.shard_groups() {
            let keys = &grouping.keys[range];
            let mut in_batch = id_set(keys.len())?;
            let mut new_ids = Vec::new();
            reserve_to(&mut new_ids, keys.len(), || {
                format!("a list of {} ids", keys.len())
            })?;
            // Which ids are new is read under the read lock: only writers,
            // serialized by the writer mutex, change the shard's keys.
            let guard = self.shards[shard].read();
            for key in keys.iter().rev() {
                if in_batch.insert(key.id) && !guard.contains(key.hash) {
                    new_ids.push(key.id);
                }
            }
            // Evicted rows leave their slots and index positions to new ones,
            // so the shard grows only by the new rows that fit in its share.
            let growth = new_ids.len().min(capacity.of(shard) - guard.len());
            drop(guard);
            self.reserve_in(shard, growth, growth, new_ids.len(), Sizing::Publish)?;
            most_dropped += new_ids.len() - growth;
            let sweep = Sweep::new(self.eviction_policy, new_ids.len() - growth)?;
            plans.push((shard, in_batch, new_ids, sweep));
        }
        let mut dropped = id_set(most_dropped)?;
        for (shard, in_batch, new_ids, mut sweep) in plans {
            let mut guard = self.shards[shard].write();
            let mut room = capacity.of(shard) - guard.len();
            while new_ids.len() > room && !sweep.exhausted {
                let evicted =
                    guard.evict_for_room(&mut sweep, new_ids.len() - room, EVICT_STRETCH, |id| {
                        in_batch.contains(&id)
                    });
                room += evicted;
                self.count(|counts| {
                    counts.rows -= evicted as u64;
                    counts.capacity_evictions += evicted as u64;
                });
                RwLockWriteGuard::bump(&mut guard);
            }
            let kept = new_ids.len().min(room);
            dropped.extend(&new_ids[kept..]);
            self.count(|counts| counts.capacity_evictions += (new_ids.len() - kept) as u64);
        }
        Ok(dropped)
    }

    /// Makes room in a shard's row arena for `new_rows` rows, in its index for
    /// `index_room` keys, a table grown as `sizing` says, and for `insertions`
    /// insertions (see `Shard::reserve`). A grown index is built under the
    /// read lock, so readers of the shard wait only for the swap. Runs under
    /// the writer mutex, which keeps the shard's keys as they were when the
    /// index was built.
    fn reserve_in(
        &self,
        shard: usize,
        new_rows: usize,
        index_room: usize,
        insertions: usize,
        sizing: Sizing,
    ) -> Result<(), Error> {
        let grown_index = self.shards[shard].read().grown_index(index_room, sizing)?;
        let mut guard = self.shards[shard].write();
        let before = guard.memory_bytes();
        let reserved = guard.reserve(new_rows, insertions, grown_index);
        self.account_memory(before, guard.memory_bytes());
        reserved
    }

    /// Allocates, shard by shard, what the grouped publish needs, after checking
    /// it fits within `max_rows` and `max_memory_bytes`. Runs under the writer
    /// mutex, so the plan stays valid until the rows are written.
    fn reserve_for_publish(&self, grouping: &mut Grouping) -> Result<(), Error> {
        let bounded = self.max_rows.is_some() || self.max_memory_bytes.is_some();
        // Unbounded caches reserve for every id being new, which is cheaper
        // than looking each up twice, as long as the shard has room for that
        // many. When it has not, the new ids are counted: a publish that mostly
        // overwrites, a republish say, must not grow a shard that holds its ids
        // already (a republish of a reserved table grew every index by 15%).
        let new_rows_of = |shard: &Shard, keys: &[HashedId]| -> Result<usize, Error> {
            if !bounded && shard.has_room_for(keys.len()) {
                return Ok(keys.len());
            }
            let mut new_ids = id_set(keys.len())?;
            for (at, key) in keys.iter().enumerate() {
                prefetch_bucket_ahead(shard, keys, at);
                if !shard.contains(key.hash) {
                    new_ids.insert(key.id);
                }
            }
            Ok(new_ids.len())
        };
        let mut needs = std::mem::take(&mut grouping.shard_counts);
        let plan = |needs: &mut Vec<u32>| {
            needs.clear();
            needs.resize(self.shards.len(), 0);
            let mut new_rows = 0u64;
            let mut added_bytes = 0u64;
            for (shard, range) in grouping.shard_groups() {
                let guard = self.shards[shard].read();
                let need = new_rows_of(&guard, &grouping.keys[range])?;
                // Before any shard grows: a shard that cannot take its rows
                // fails the publish whole.
                guard.check_addressable(need)?;
                needs[shard] = need as u32;
                new_rows += need as u64;
                if bounded {
                    added_bytes += guard.growth_for(need) as u64;
                }
            }
            self.check_capacity(new_rows, added_bytes)?;
            for (shard, _) in grouping.shard_groups() {
                let need = needs[shard] as usize;
                self.reserve_in(shard, need, need, need, Sizing::Publish)?;
            }
            Ok(())
        };
        let result = plan(&mut needs);
        grouping.shard_counts = needs;
        result
    }

    fn check_capacity(&self, new_rows: u64, added_bytes: u64) -> Result<(), Error> {
        let info = self.info();
        if let Some(max_rows) = self.max_rows {
            if info.rows + new_rows > max_rows {
                return Err(Error::capacity_exceeded(format!(
                    "{} rows + {new_rows} new > max_rows {max_rows}",
                    info.rows
                )));
            }
        }
        if let Some(max_bytes) = self.max_memory_bytes {
            if info.memory_bytes + added_bytes > max_bytes {
                return Err(Error::capacity_exceeded(format!(
                    "memory_bytes {} + {added_bytes} to store the new rows > max_memory_bytes {max_bytes}",
                    info.memory_bytes
                )));
            }
        }
        Ok(())
    }

    /// Looks up `ids`, copying each hit into `out[i * row_bytes..]` and applying
    /// the miss policy to each miss; `hit_mask[i]` is set to 1 or 0 when given.
    /// Counts the batch and calls the sinks. Fails with `OutOfMemory`, having
    /// written, counted and called nothing, when its scratch cannot be had.
    /// A sink that panics has its panic resumed here once every other sink has
    /// had its call (unless the thread unwinds already, which goes on alone);
    /// the batch stays counted.
    pub fn batch_get(
        &self,
        ids: &[i64],
        out: &mut [u8],
        hit_mask: Option<&mut [u8]>,
    ) -> Result<BatchStats, Error> {
        let stats = self.look_up(ids, out, hit_mask)?;
        self.notify_sinks(&stats);
        Ok(stats)
    }

    /// [`batch_get`](Self::batch_get) up to its sinks: looks the batch up and
    /// counts it. The caller then calls [`notify_sinks`](Self::notify_sinks),
    /// once it no longer borrows the batch's buffers: a C host's sink may pass
    /// them to a lookup of its own, which must not alias a live borrow.
    pub(crate) fn look_up(
        &self,
        ids: &[i64],
        out: &mut [u8],
        mut hit_mask: Option<&mut [u8]>,
    ) -> Result<BatchStats, Error> {
        self.expect_bytes("out", out.len(), ids.len())?;
        if let Some(mask) = &hit_mask {
            if mask.len() != ids.len() {
                return Err(Error::invalid_argument(format!(
                    "hit_mask holds {} bytes, n = {}",
                    mask.len(),
                    ids.len()
                )));
            }
        }
        if ids.is_empty() {
            // Nothing to count, but the caller still learns the (empty)
            // batch's counts.
            return Ok(BatchStats::default());
        }
        let started = Instant::now();
        let mut hits = 0u64;
        with_scratch(|grouping| {
            grouping.reserve(ids.len().min(LOOKUP_WINDOW), self.shards.len())?;
            let window_bytes = LOOKUP_WINDOW * self.row_bytes;
            for (window, (ids, out)) in ids
                .chunks(LOOKUP_WINDOW)
                .zip(out.chunks_mut(window_bytes))
                .enumerate()
            {
                let mask = hit_mask
                    .as_deref_mut()
                    .map(|mask| &mut mask[window * LOOKUP_WINDOW..][..ids.len()]);
                hits += self.lookup_window(grouping, ids, out, mask);
            }
            Ok::<_, Error>(())
        })?;
        let stats = BatchStats {
            hits,
            misses: ids.len() as u64 - hits,
            total: ids.len() as u64,
            duration_ns: started.elapsed().as_nanos() as u64,
        };
        self.counters.record(stats.hits, stats.misses);
        Ok(stats)
    }

    /// Calls the cache's sinks, then the global ones, with a looked-up batch's
    /// counts; none for an empty batch. A sink that panics is let go on with
    /// its panic once every other sink has had its call (unless the thread
    /// unwinds already: `resume_kept_panic`).
    pub(crate) fn notify_sinks(&self, stats: &BatchStats) {
        if stats.total == 0 {
            return;
        }
        let event = BatchEvent {
            table: &self.name,
            stats: *stats,
        };
        let mut panicked = None;
        self.sinks.notify(&event, &mut panicked);
        stats::notify_global_sinks(&event, &mut panicked);
        stats::resume_kept_panic(panicked);
    }

    /// Looks up a window: in runs in the batch's order while the shards they
    /// touch are free (in a cache of at most `SPAN_SHARDS` shards), the rest
    /// of it grouped by shard.
    fn lookup_window(
        &self,
        grouping: &mut Grouping,
        ids: &[i64],
        out: &mut [u8],
        mut hit_mask: Option<&mut [u8]>,
    ) -> u64 {
        let mut hits = 0;
        // Ids looked up in runs in order, before the first run that met a
        // write-locked shard.
        let mut done = 0;
        if self.shards.len() <= SPAN_SHARDS {
            while done < ids.len() {
                let end = (done + ORDERED_RUN).min(ids.len());
                let run_out = &mut out[done * self.row_bytes..end * self.row_bytes];
                let mask = hit_mask.as_deref_mut().map(|mask| &mut mask[done..end]);
                match self.lookup_in_order(grouping, &ids[done..end], run_out, mask) {
                    Some(found) => hits += found,
                    None => break,
                }
                done = end;
            }
        }
        if done < ids.len() {
            let mask = hit_mask.map(|mask| &mut mask[done..]);
            hits += self.lookup_grouped(
                grouping,
                &ids[done..],
                &mut out[done * self.row_bytes..],
                mask,
            );
        }
        hits
    }

    /// Looks up a window (or the rest of one) grouped by shard, in spans of
    /// consecutive shards; a shard that a writer holds is read last.
    fn lookup_grouped(
        &self,
        grouping: &mut Grouping,
        ids: &[i64],
        out: &mut [u8],
        mut hit_mask: Option<&mut [u8]>,
    ) -> u64 {
        self.group(grouping, ids);
        let mut busy = std::mem::take(&mut grouping.busy_shards);
        busy.clear();
        let mut hits = 0;
        let grouped = &*grouping;
        let mut lookup = |span: &Span<'_>| {
            if span.is_empty() {
                return;
            }
            let range = span.range();
            #[cfg(feature = "fault-injection")]
            fault_injection::panic_if_asked(&self.name, &grouped.keys[range.clone()]);
            let keys = &grouped.keys[range.clone()];
            let positions = &grouped.order[range];
            let stages = (span.walk(), span.walk());
            hits += self.lookup_run(stages, keys, positions, out, hit_mask.as_deref_mut());
        };
        // A shard that a writer holds is read last: the other shards' lookups
        // overlap the writer's stretch instead of waiting behind it. Only
        // `try_read` is called while a span holds locks, so a reader never
        // waits holding one.
        let mut span = Span::starting_at(0);
        for (shard, range) in grouped.shard_groups() {
            let locked = self.shards[shard].try_read();
            let is_busy = locked.is_none();
            match locked {
                Some(guard) => span.add(guard, range.len()),
                None => busy.push(shard),
            }
            if is_busy || span.is_full() {
                lookup(&span);
                span = Span::starting_at(range.end);
            }
        }
        lookup(&span);
        drop(span);
        for &shard in &busy {
            let range = grouped.range_of(shard);
            let mut span = Span::starting_at(range.start);
            span.add(self.shards[shard].read(), range.len());
            lookup(&span);
        }
        grouping.busy_shards = busy;
        hits
    }

    /// Looks a run of a window up in the batch's order, every shard it
    /// touches read-locked at once, unless one of them is write-locked: then
    /// it returns `None` having done nothing.
    fn lookup_in_order(
        &self,
        grouping: &mut Grouping,
        ids: &[i64],
        out: &mut [u8],
        hit_mask: Option<&mut [u8]>,
    ) -> Option<u64> {
        let touched = grouping.hash_in_order(ids, |id| self.hash(id), |h| self.shard_of(h));
        let mut guards: [Option<RwLockReadGuard<'_, Shard>>; SPAN_SHARDS] =
            std::array::from_fn(|_| None);
        for (shard, guard) in guards.iter_mut().enumerate() {
            if touched >> shard & 1 == 1 {
                *guard = Some(self.shards[shard].try_read()?);
            }
        }
        let any = guards.iter().find_map(Option::as_deref)?;
        // No id's hash picks an untouched shard, so another stands in for it.
        let shards: [&Shard; SPAN_SHARDS] =
            std::array::from_fn(|shard| guards[shard].as_deref().unwrap_or(any));
        #[cfg(feature = "fault-injection")]
        fault_injection::panic_if_asked(&self.name, &grouping.keys);
        let by_hash = ByHash {
            shards: &shards,
            cache: self,
        };
        Some(self.lookup_run((by_hash, by_hash), &grouping.keys, InOrder, out, hit_mask))
    }

    /// [`lookup_run_of_width`](Self::lookup_run_of_width) with recency
    /// tracking chosen once per run of ids, not tested per id.
    fn lookup_run<'s>(
        &self,
        stages: (impl ShardOf<'s>, impl ShardOf<'s>),
        keys: &[HashedId],
        places: impl Places,
        out: &mut [u8],
        hit_mask: Option<&mut [u8]>,
    ) -> u64 {
        if self.eviction_policy == EvictionPolicy::LruApprox {
            self.lookup_run_of_width::<true>(stages, keys, places, out, hit_mask)
        } else {
            self.lookup_run_of_width::<false>(stages, keys, places, out, hit_mask)
        }
    }

    /// [`lookup_pipeline`](Self::lookup_pipeline) for the cache's row width. For the
    /// common widths the row's offsets and the lines to prefetch are constants.
    /// (The copy is a memcpy call either way: LLVM merges an unrolled copy of
    /// known length into one, and explicit 16-byte vector moves measured no
    /// faster.)
    fn lookup_run_of_width<'s, const TOUCH: bool>(
        &self,
        stages: (impl ShardOf<'s>, impl ShardOf<'s>),
        keys: &[HashedId],
        places: impl Places,
        out: &mut [u8],
        mask: Option<&mut [u8]>,
    ) -> u64 {
        match self.row_bytes {
            64 => self.lookup_pipeline::<64, TOUCH>(stages, keys, places, out, mask),
            128 => self.lookup_pipeline::<128, TOUCH>(stages, keys, places, out, mask),
            256 => self.lookup_pipeline::<256, TOUCH>(stages, keys, places, out, mask),
            512 => self.lookup_pipeline::<512, TOUCH>(stages, keys, places, out, mask),
            1024 => self.lookup_pipeline::<1024, TOUCH>(stages, keys, places, out, mask),
            _ => self.lookup_pipeline::<0, TOUCH>(stages, keys, places, out, mask),
        }
    }

    /// Looks up a run of a window's ids (`keys`, whose rows go to the window's
    /// row `places.place(j)`) with a three-stage software pipeline: while id
    /// `j` is copied (its row has arrived), id `j + d` is resolved and its row
    /// prefetched (its bucket has arrived), and the buckets of id `j + 2d` are
    /// prefetched. Each id's two dependent cache misses thus overlap with
    /// other ids' work. The rows resolved ahead wait in a ring on the stack, so
    /// the copy neither locates a row a second time nor reads a slot back from
    /// scratch memory (1.02-1.09x faster than a slot per id). `WIDTH` is the
    /// row width when known at compile time, 0 otherwise; `TOUCH` marks each
    /// hit read for the clock.
    fn lookup_pipeline<'s, const WIDTH: usize, const TOUCH: bool>(
        &self,
        stages: (impl ShardOf<'s>, impl ShardOf<'s>),
        keys: &[HashedId],
        places: impl Places,
        out: &mut [u8],
        mut hit_mask: Option<&mut [u8]>,
    ) -> u64 {
        let width = if WIDTH == 0 { self.row_bytes } else { WIDTH };
        let d = (LINES_AHEAD / row_lines(width)).clamp(4, MAX_IDS_AHEAD);
        let n = keys.len();
        // Each stage finds its ids' shards on its own. (The stages are written
        // out, not closures: those were compiled as a call per id.)
        let (mut bucket_stage, mut resolve_stage) = stages;
        for (k, key) in keys.iter().enumerate().take(2 * d) {
            prefetch_bucket(bucket_stage.shard(k, key), key);
        }
        // What the first bucket of id k said, at k modulo the ring's size:
        // ids j..j + d while j is copied. An id it sent elsewhere waits, its
        // second bucket asked for, until it is `half` ids ahead, and then has
        // its row asked for.
        let half = d / 2;
        let mut resolved = [Resolved::Miss; MAX_IDS_AHEAD];
        let mut waiting = Waiting::new();
        for (k, at) in resolved.iter_mut().enumerate().take(n.min(d)) {
            let shard = resolve_stage.shard(k, &keys[k]);
            *at = resolve::<WIDTH, TOUCH>(shard, keys[k]);
            if let Resolved::Elsewhere = *at {
                waiting.push(k, shard);
            }
        }
        let mut hits = 0;
        for j in 0..n {
            if let Some(key) = keys.get(j + 2 * d) {
                prefetch_bucket(bucket_stage.shard(j + 2 * d, key), key);
            }
            while let Some((k, shard)) = waiting.pop_until(j + half) {
                resolved[k % MAX_IDS_AHEAD] = match shard.index().probe_rest::<TOUCH>(keys[k].hash)
                {
                    Some(slot) => Resolved::Row(prefetched_row::<WIDTH>(shard, slot)),
                    None => Resolved::Miss,
                };
            }
            let row = match resolved[j % MAX_IDS_AHEAD] {
                Resolved::Row(row) => Some(row),
                Resolved::Miss => None,
                Resolved::Elsewhere => {
                    unreachable!("looked up at the latest half a distance ahead")
                }
            };
            if let Some(&key) = keys.get(j + d) {
                let shard = resolve_stage.shard(j + d, &key);
                let at = resolve::<WIDTH, TOUCH>(shard, key);
                if let Resolved::Elsewhere = at {
                    waiting.push(j + d, shard);
                }
                resolved[(j + d) % MAX_IDS_AHEAD] = at;
            }
            let place = places.place(j);
            let target = &mut out[place * width..][..width];
            if let Some(row) = row {
                target.copy_from_slice(&row[..width]);
                hits += 1;
            } else if self.miss_policy == MissPolicy::ZeroFill {
                target.fill(0);
            }
            if let Some(mask) = hit_mask.as_deref_mut() {
                mask[place] = u8::from(row.is_some());
            }
        }
        hits
    }

    /// Removes `ids`; returns how many were stored. On error nothing is
    /// removed.
    pub fn batch_remove(&self, ids: &[i64]) -> Result<u64, Error> {
        if u32::try_from(ids.len()).is_err() {
            return Err(Error::invalid_argument(format!(
                "n {} > {} ids in one batch",
                ids.len(),
                u32::MAX
            )));
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let _writer = self.writer.lock();
        let removed = with_scratch(|grouping| {
            self.reserve_and_group(grouping, ids)?;
            let mut removed = 0u64;
            for (shard, range) in grouping.shard_groups() {
                self.write_each(shard, &grouping.keys[range], |guard, _, key| {
                    removed += u64::from(guard.remove(key.hash));
                });
            }
            Ok::<_, Error>(removed)
        })?;
        self.count(|counts| {
            counts.rows -= removed;
            counts.removals += removed;
        });
        Ok(removed)
    }

    /// Calls `write` with each of `keys` (a shard's group of a batch) and its
    /// place in the group, in order, under the shard's write lock, which it
    /// lets waiting readers take every `WRITE_STRETCH` keys. Then frees the
    /// shard's overflow room if its list is empty (see `Shard::reserve`).
    fn write_each(
        &self,
        shard: usize,
        keys: &[HashedId],
        mut write: impl FnMut(&mut Shard, usize, &HashedId),
    ) {
        let mut guard = self.shards[shard].write();
        for (written, key) in keys.iter().enumerate() {
            if written > 0 && written % WRITE_STRETCH == 0 {
                RwLockWriteGuard::bump(&mut guard);
            }
            prefetch_bucket_ahead(&guard, keys, written);
            write(&mut guard, written, key);
        }
        guard.release_overflow_room();
    }

    /// Removes every row stamped before `threshold`; returns how many.
    pub fn evict_older_than(&self, threshold: u32) -> u64 {
        let _writer = self.writer.lock();
        let mut evicted = 0u64;
        for shard in self.shards.iter() {
            let mut guard = shard.write();
            let buckets = guard.bucket_count();
            let mut start = 0;
            while start < buckets {
                let end = (start + EVICT_STRETCH).min(buckets);
                evicted += guard.evict_older_than(threshold, start..end) as u64;
                RwLockWriteGuard::bump(&mut guard);
                start = end;
            }
        }
        self.count(|counts| {
            counts.rows -= evicted;
            counts.expirations += evicted;
        });
        evicted
    }

    /// Returns free memory to the operating system: each shard's rows are
    /// packed into an arena no larger than they need and its index is rebuilt
    /// for the rows it holds. A shard is write-locked while it is
    /// packed, so its readers wait for that shard only. `OutOfMemory` when a
    /// shard's packed copy cannot be allocated: every row stays, and the
    /// shards packed before it stay packed.
    pub fn compact(&self) -> Result<(), Error> {
        let _writer = self.writer.lock();
        for shard in self.shards.iter() {
            let mut guard = shard.write();
            let before = guard.memory_bytes();
            let compacted = guard.compact(self.row_bytes);
            self.account_memory(before, guard.memory_bytes());
            compacted?;
        }
        Ok(())
    }

    /// Hit and miss counts since the previous call (or creation), then starts a
    /// new window. Every batch is counted in exactly one window.
    pub fn take_read_hit_rate_stats(&self) -> ReadStats {
        self.counters.take_window()
    }

    /// Hit and miss counts since creation; resets nothing.
    pub fn cumulative_read_stats(&self) -> ReadStats {
        self.counters.cumulative()
    }

    /// Registers a sink called once per non-empty lookup batch of this cache.
    pub fn register_stat_sink(&self, sink: Sink) -> SinkId {
        self.sinks.register(|_| sink)
    }

    /// Registers the sink `make` returns, handing `make` the sink's id before
    /// any batch can call it: a sink that unregisters itself finds its id
    /// wherever `make` put it.
    pub fn register_stat_sink_with_id(&self, make: impl FnOnce(SinkId) -> Sink) -> SinkId {
        self.sinks.register(make)
    }

    /// When this returns, the sink will never be called again and, unless
    /// called from inside a call of that sink, is not running on any thread.
    /// From inside it, waits for nothing (its calls elsewhere may still run).
    /// From inside another sink that runs, on this thread, under a call of
    /// sink `id`, or where waits would close a cycle: `WouldDeadlock`,
    /// changing nothing. The sink (its closure and what that holds) is
    /// dropped once no call of it runs and no batch holds it: by this call,
    /// or, from inside the sink, by the batch whose call of it returns last,
    /// unless a batch that took the list of sinks before holds it longer.
    /// What the closure holds may panic as it drops: that panic goes on out
    /// of this call, once every sink due to be dropped here is, unless the
    /// thread unwinds already.
    pub fn unregister_stat_sink(&self, id: SinkId) -> Result<(), Error> {
        self.sinks.unregister(id)
    }
}

/// A way for tests to make a lookup panic while it holds a shard's read lock,
/// compiled only with the `fault-injection` feature: it proves that a panic
/// inside the library reaches the host as `KVZCH_STATUS_INTERNAL` and leaves the
/// cache usable (no lock held, no scratch borrowed, nothing counted).
#[cfg(feature = "fault-injection")]
pub mod fault_injection {
    use super::{HashedId, TableName};

    /// A lookup of this id in a cache of this name panics.
    pub const PANICKING_TABLE: &str = "fault-injection";
    pub const PANICKING_ID: i64 = i64::MIN + 0x6b76;

    pub(super) fn panic_if_asked(table: &TableName, keys: &[HashedId]) {
        if table.as_str() == PANICKING_TABLE && keys.iter().any(|key| key.id == PANICKING_ID) {
            panic!("injected panic while a shard is read-locked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::index::BUCKET_WIDTH;
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    fn index_sizes(cache: &Cache) -> Vec<usize> {
        cache
            .shards
            .iter()
            .map(|s| s.read().bucket_count())
            .collect()
    }

    /// A cache of 8-byte rows and `rows` ids, which it publishes (each row
    /// its id's bytes) in batches of 4096.
    struct Table {
        cache: Cache,
        ids: Vec<i64>,
        payload: Vec<u8>,
    }

    impl Table {
        fn new(config: CacheConfig, rows: usize) -> Table {
            let ids: Vec<i64> = (0..rows as i64).map(|i| i * 7_919 - 3).collect();
            let payload = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
            Table {
                cache: Cache::new(config).unwrap(),
                ids,
                payload,
            }
        }

        /// A default cache with room reserved for the ids.
        fn reserved(rows: usize) -> Table {
            let table = Table::new(CacheConfig::new(8), rows);
            table.cache.reserve(rows as u64).unwrap();
            table
        }

        /// Publishes the ids, calling `after_batch` after each batch.
        fn publish_each(&self, timestamp: u32, mut after_batch: impl FnMut()) {
            for (ids, rows) in self.ids.chunks(4096).zip(self.payload.chunks(4096 * 8)) {
                self.cache.batch_set(ids, rows, timestamp).unwrap();
                after_batch();
            }
        }

        fn publish(&self, timestamp: u32) {
            self.publish_each(timestamp, || {});
        }
    }

    #[test]
    fn a_memory_limit_past_what_a_shard_addresses_plans_the_rows_it_addresses() {
        // The search for how many rows fit computed sizes past `usize` here
        // (a panic where overflow is checked, a wrapped plan elsewhere).
        for row_bytes in [1, 16, MAX_ROW_BYTES] {
            for bytes in [usize::MAX / 2, 1 << (usize::BITS - 1), usize::MAX - 1] {
                let rows = rows_within(row_bytes, bytes);
                let addressable = Shard::addressable_rows(row_bytes);
                assert_eq!(rows, addressable, "{row_bytes} B rows in {bytes} B");
            }
        }
        // A limit that binds is planned as before: the most rows within it.
        let bytes = 1 << 30;
        let rows = rows_within(256, bytes);
        assert!(Shard::memory_bytes_at_most(256, rows) <= bytes);
        assert!(Shard::memory_bytes_at_most(256, rows + 1) > bytes);
        for shards in [1, 8] {
            let cache = Cache::new(CacheConfig {
                num_shards: shards,
                max_memory_bytes: Some(u64::MAX),
                eviction_policy: EvictionPolicy::LruApprox,
                ..CacheConfig::new(1)
            })
            .unwrap();
            cache.batch_set(&[1, 2, 3], &[7, 8, 9], 1).unwrap();
            let mut out = [0u8; 3];
            assert_eq!(cache.batch_get(&[3, 2, 1], &mut out, None).unwrap().hits, 3);
            assert_eq!(out, [9, 8, 7]);
        }
    }

    #[test]
    fn shares_and_reservations_stop_at_what_a_shard_addresses() {
        // A max_rows share past what the shard addresses made a publish
        // under a policy fail with CapacityExceeded instead of evicting, and
        // a reservation past it went on to allocate an index for it (here:
        // OutOfMemory), not the InvalidArgument its documentation gives.
        let addressable = Shard::addressable_rows(1);
        let cache = Cache::new(CacheConfig {
            num_shards: 1,
            max_rows: Some(5_000_000_000),
            eviction_policy: EvictionPolicy::LruApprox,
            ..CacheConfig::new(1)
        })
        .unwrap();
        assert_eq!(cache.capacity.unwrap().of(0), addressable);
        let refused = cache.reserve(addressable as u64 + 1).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::InvalidArgument, "{refused}");
        assert!(
            refused.message().contains(&addressable.to_string()),
            "{refused}"
        );
    }

    #[test]
    fn staggered_shards_keep_index_memory_per_row_steady() {
        let config = CacheConfig {
            num_shards: 8,
            ..CacheConfig::new(8)
        };
        let table = Table::new(config, 240_000);
        let (mut least, mut most) = (f64::MAX, 0f64);
        table.publish_each(1, || {
            let stored = table.cache.info().rows as f64;
            if stored >= 60_000.0 {
                let per_row = index_sizes(&table.cache).iter().sum::<usize>() as f64 / stored;
                least = least.min(per_row);
                most = most.max(per_row);
            }
        });
        // Shards growing in step swing by the whole 1.5x step.
        assert!(most / least < 1.1, "buckets per row {least:.4}..{most:.4}");
        // The larger steps are paid for by a fuller table: 1.5x steps up to
        // 72% full held 15.0-16.4 bytes of index per row here, up to 66% full
        // 16.6-17.6.
        let most_bytes = most * std::mem::size_of::<index::Bucket>() as f64;
        assert!(most_bytes < 16.8, "{most_bytes:.2} bytes of index per row");
    }

    #[test]
    fn a_reserved_fill_rebuilds_no_index_and_fills_it_as_reserved() {
        let table = Table::reserved(200_000);
        let sizes = index_sizes(&table.cache);
        table.publish(1);
        assert_eq!(index_sizes(&table.cache), sizes);
        // Sized for the rows that came, where a grown table leaves room for
        // 26% to 50% more.
        let buckets: usize = sizes.iter().sum();
        let fill = table.ids.len() as f64 / (buckets * BUCKET_WIDTH) as f64;
        assert!((0.61..=0.63).contains(&fill), "{fill}");
        let mut out = vec![0u8; table.payload.len()];
        let stats = table.cache.batch_get(&table.ids, &mut out, None).unwrap();
        assert_eq!(stats.hits, table.ids.len() as u64);
        assert_eq!(out, table.payload);
    }

    #[test]
    fn a_republish_grows_no_shard_that_holds_its_ids() {
        let table = Table::reserved(48_000);
        table.publish(1);
        let (sizes, memory) = (index_sizes(&table.cache), table.cache.info().memory_bytes);
        // A shard of 3,000 rows reserved at 63% has room for about 140 more,
        // fewer than a batch's share of 256: had the republish counted every
        // id as new, every shard would have grown.
        table.publish(2);
        assert_eq!(index_sizes(&table.cache), sizes);
        assert_eq!(table.cache.info().memory_bytes, memory);
        assert_eq!(table.cache.info().updates, 48_000);
    }

    /// One shard of 8-byte rows: every id in the same index.
    fn one_shard_of_8_byte_rows() -> CacheConfig {
        CacheConfig {
            num_shards: 1,
            ..CacheConfig::new(8)
        }
    }

    fn eight_shards_of_8_byte_rows() -> Cache {
        Cache::new(CacheConfig {
            num_shards: 8,
            ..CacheConfig::new(8)
        })
        .unwrap()
    }

    /// The calling thread's entry under `/proc`, for `wait_until_asleep`.
    fn this_thread() -> std::path::PathBuf {
        std::fs::read_link("/proc/thread-self").expect("Linux names each thread in /proc")
    }

    /// Waits until `thread` (from `this_thread`) sleeps, which in these tests
    /// is nearly always on the shard lock the test holds for it to meet (a
    /// brief wait elsewhere, the allocator's lock say, lets the test go on
    /// early: it then checks less, and still passes only a correct engine).
    /// A fixed pause instead let a slow machine run the test's next step
    /// before the thread got anywhere.
    fn wait_until_asleep(thread: &std::path::Path) {
        let stat = std::path::Path::new("/proc").join(thread).join("stat");
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let line = std::fs::read_to_string(&stat).expect("the thread is still running");
            // The state follows the parenthesized command name.
            let state = line[line.rfind(')').expect("stat names the command")..]
                .split_whitespace()
                .nth(1);
            if state == Some("S") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never slept",
                thread.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Whether a lookup of `sample` (ids of shard `shard`, one read lock) that
    /// queues for the shard behind `write` gets in while `write` is half done:
    /// finds some of the sample, not all. The test holds the shard's write
    /// lock while the writer and then the reader queue for it. Tries again
    /// (calling `reset` before each try) for up to ten seconds, in case a busy
    /// machine let the reader queue first.
    fn a_queued_reader_gets_in_mid_write(
        cache: &Cache,
        shard: usize,
        sample: &[i64],
        mut reset: impl FnMut(),
        write: impl Fn() + Sync,
    ) -> bool {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            reset();
            let held = cache.shards[shard].write();
            let (sender, receiver) = std::sync::mpsc::channel();
            let hits = std::thread::scope(|scope| {
                let writer = scope.spawn(|| {
                    sender.send(this_thread()).unwrap();
                    write()
                });
                wait_until_asleep(&receiver.recv().unwrap());
                let reader = scope.spawn(|| {
                    sender.send(this_thread()).unwrap();
                    let mut out = vec![0u8; sample.len() * 8];
                    cache.batch_get(sample, &mut out, None).unwrap().hits
                });
                wait_until_asleep(&receiver.recv().unwrap());
                drop(held);
                writer.join().unwrap();
                reader.join().unwrap()
            });
            if hits != 0 && hits != sample.len() as u64 {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }

    #[test]
    fn writers_let_readers_into_a_shard_between_stretches() {
        let cache = eight_shards_of_8_byte_rows();
        // Many stretches' worth of ids of one shard, and a sample of them,
        // the first id a writer takes among them, that one lookup reads under
        // one read lock (a run in order, one shard).
        let shard = 5;
        let ids: Vec<i64> = (0..)
            .filter(|&id| cache.shard_of(cache.hash(id)) == shard)
            .take(200 * WRITE_STRETCH)
            .collect();
        let sample: Vec<i64> = ids.iter().step_by(ids.len() / 500).copied().collect();
        assert!(sample.len() <= ORDERED_RUN);
        let rows: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        let publish = || cache.batch_set(&ids, &rows, 1).unwrap();
        // Publish and removal share their stretches (`write_each`).
        let remove = || assert_eq!(cache.batch_remove(&ids).unwrap(), ids.len() as u64);
        assert!(
            a_queued_reader_gets_in_mid_write(&cache, shard, &sample, publish, remove),
            "batch_remove"
        );
        let evict = || assert_eq!(cache.evict_older_than(2), ids.len() as u64);
        assert!(
            a_queued_reader_gets_in_mid_write(&cache, shard, &sample, publish, evict),
            "evict_older_than"
        );
    }

    #[test]
    fn capacity_eviction_lets_readers_into_a_shard_between_stretches() {
        // One shard's share full of old rows, and a publish of as many new
        // ids of that shard, which evicts every old row first, many stretches
        // of index positions long: a lookup of old ids that gets in between
        // them finds some; before the eviction all, after it none. A reader
        // looks them up again and again while the publish runs.
        const SHARE: usize = 40 * EVICT_STRETCH;
        let cache = Cache::new(CacheConfig {
            num_shards: 8,
            max_rows: Some(8 * SHARE as u64),
            eviction_policy: EvictionPolicy::OldestTimestamp,
            ..CacheConfig::new(8)
        })
        .unwrap();
        let shard = 5;
        let mut of_shard = (0..).filter(|&id| cache.shard_of(cache.hash(id)) == shard);
        let old: Vec<i64> = of_shard.by_ref().take(SHARE).collect();
        let new: Vec<i64> = of_shard.take(SHARE).collect();
        let sample: Vec<i64> = old.iter().step_by(SHARE / 500).copied().collect();
        assert!(sample.len() <= ORDERED_RUN);
        let rows = vec![0u8; SHARE * 8];
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            cache.batch_remove(&new).unwrap();
            cache.batch_set(&old, &rows, 1).unwrap();
            let published = AtomicBool::new(false);
            let read_mid_eviction = std::thread::scope(|scope| {
                scope.spawn(|| {
                    cache.batch_set(&new, &rows, 2).unwrap();
                    published.store(true, Ordering::Release);
                });
                let mut out = vec![0u8; sample.len() * 8];
                let mut read_mid_eviction = false;
                while !published.load(Ordering::Acquire) {
                    let hits = cache.batch_get(&sample, &mut out, None).unwrap().hits;
                    read_mid_eviction |= hits != 0 && hits != sample.len() as u64;
                }
                read_mid_eviction
            });
            assert_eq!(cache.info().rows, SHARE as u64, "every old row made way");
            if read_mid_eviction {
                break;
            }
            assert!(Instant::now() < deadline, "no lookup got in mid-eviction");
        }
    }

    #[test]
    fn a_lookup_comes_back_to_a_shard_that_a_writer_holds() {
        let cache = eight_shards_of_8_byte_rows();
        let row_of = |id: &i64| id.to_le_bytes();
        let mut ids: Vec<i64> = (0..1000).collect();
        cache
            .batch_set(&ids, &ids.iter().flat_map(row_of).collect::<Vec<_>>(), 1)
            .unwrap();
        // The hash key is random: put an id of each held shard first, so that
        // the thin batch has one.
        let held_shards = [0, 3, 7];
        for (place, shard) in held_shards.into_iter().enumerate() {
            let of_shard = ids[place..]
                .iter()
                .position(|&id| cache.shard_of(cache.hash(id)) == shard)
                .expect("1000 ids reach every one of 8 shards");
            ids.swap(place, place + of_shard);
        }
        // A window that meets the held shard is grouped: a thin batch is one
        // span over every shard, a thick one (two windows) a span per few
        // shards, and the held shard starts the batch or cuts a span short.
        for len in [40, 1000] {
            let batch = &ids[..len];
            let batch_rows: Vec<u8> = batch.iter().flat_map(row_of).collect();
            for held_shard in held_shards {
                // The batch's ids in the other shards, and new rows for them.
                let others: Vec<i64> = batch
                    .iter()
                    .copied()
                    .filter(|&id| cache.shard_of(cache.hash(id)) != held_shard)
                    .collect();
                let new_rows: Vec<u8> = others.iter().flat_map(|id| row_of(&!id)).collect();
                let held = cache.shards[held_shard].write();
                let (sender, receiver) = std::sync::mpsc::channel();
                std::thread::scope(|scope| {
                    let reader = scope.spawn(|| {
                        sender.send(this_thread()).unwrap();
                        let mut out = vec![0u8; batch_rows.len()];
                        let stats = cache.batch_get(batch, &mut out, None).unwrap();
                        (stats, out)
                    });
                    // The reader passes the other shards and then waits for
                    // this one, holding none of them.
                    wait_until_asleep(&receiver.recv().unwrap());
                    assert!(!reader.is_finished());
                    // So a publish to the other shards goes ahead now, and
                    // the reader, which copied their rows already, returns
                    // them as they were.
                    let publisher = scope.spawn(|| cache.batch_set(&others, &new_rows, 2));
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    while !publisher.is_finished() && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    let published_while_held = publisher.is_finished();
                    drop(held);
                    publisher.join().unwrap().unwrap();
                    let (stats, out) = reader.join().unwrap();
                    assert!(
                        published_while_held,
                        "the reader held other shards while it waited for shard {held_shard}"
                    );
                    assert_eq!(stats.hits, len as u64);
                    assert!(
                        out == batch_rows,
                        "the reader read other shards after waiting for shard {held_shard}"
                    );
                });
                cache.batch_set(batch, &batch_rows, 1).unwrap();
            }
        }
    }

    #[test]
    fn a_window_grouped_after_runs_in_order_puts_every_row_in_place() {
        let cache = eight_shards_of_8_byte_rows();
        let stored: Vec<i64> = (0..4000).collect();
        let stored_rows: Vec<u8> = stored.iter().flat_map(|id| id.to_le_bytes()).collect();
        cache.batch_set(&stored, &stored_rows, 1).unwrap();
        let held_shard = 6;
        let (of_held, others): (Vec<i64>, Vec<i64>) = stored
            .iter()
            .partition(|&&id| cache.shard_of(cache.hash(id)) == held_shard);
        // A first run in order that the held shard does not stop, then ids
        // of every shard and a miss: the rest of the window is grouped.
        let mut batch = others[..ORDERED_RUN].to_vec();
        for (&other, &held) in others[ORDERED_RUN..].iter().zip(&of_held).take(300) {
            batch.extend([other, held]);
        }
        batch.insert(ORDERED_RUN + 7, -1);
        assert!(batch.len() <= LOOKUP_WINDOW);
        let held = cache.shards[held_shard].write();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                sender.send(this_thread()).unwrap();
                let mut out = vec![0xee; batch.len() * 8];
                let mut mask = vec![0xee; batch.len()];
                let stats = cache.batch_get(&batch, &mut out, Some(&mut mask)).unwrap();
                (stats, out, mask)
            });
            wait_until_asleep(&receiver.recv().unwrap());
            assert!(!reader.is_finished());
            drop(held);
            let (stats, out, mask) = reader.join().unwrap();
            assert_eq!(stats.hits, batch.len() as u64 - 1);
            for (k, &id) in batch.iter().enumerate() {
                let (row, hit) = if id < 0 {
                    ([0; 8], 0)
                } else {
                    (id.to_le_bytes(), 1)
                };
                assert_eq!(
                    (&out[k * 8..][..8], mask[k]),
                    (&row[..], hit),
                    "id {id} at {k}"
                );
            }
        });
    }

    /// Rows of `width` bytes for `ids`, each filled with its id's low byte.
    fn rows_of(ids: &[i64], width: usize) -> Vec<u8> {
        ids.iter().flat_map(|&id| vec![id as u8; width]).collect()
    }

    /// Asserts that `cache` holds the rows `rows_of` gives `stored`, and none
    /// of `absent`.
    fn assert_holds(cache: &Cache, stored: &[i64], absent: &[i64]) {
        let width = cache.row_bytes;
        let mut out = vec![0; stored.len() * width];
        let mut hits = vec![0; stored.len()];
        cache.batch_get(stored, &mut out, Some(&mut hits)).unwrap();
        assert!(hits.iter().all(|&hit| hit == 1));
        assert!(out == rows_of(stored, width));
        let mut out = vec![0; absent.len() * width];
        let mut hits = vec![0; absent.len()];
        cache.batch_get(absent, &mut out, Some(&mut hits)).unwrap();
        assert!(hits.iter().all(|&hit| hit == 0));
    }

    /// Asserts that `cache`'s info is `before` but for the memory, which an
    /// operation that failed may keep allocated.
    fn assert_info_as_before(cache: &Cache, before: &CacheInfo) {
        let memory_bytes = before.memory_bytes;
        assert_eq!(
            CacheInfo {
                memory_bytes,
                ..cache.info()
            },
            *before
        );
    }

    /// Fails each of `operation`'s allocations in turn: runs it on a cache
    /// that `setup` makes, its first allocation failing, checks that the
    /// failure is `OutOfMemory` and left the rows and counts as they were
    /// (`unchanged` checks the rest), and starts over on a fresh cache, with
    /// one allocation more let through each time, until an attempt succeeds.
    /// Each attempt starts from the same state, so none skips an allocation
    /// that an earlier one made and kept. Returns how many attempts failed,
    /// and the cache the last one changed.
    fn fail_allocations_in_turn<T>(
        setup: impl Fn() -> Cache,
        operation: impl Fn(&Cache) -> Result<T, Error>,
        unchanged: impl Fn(&Cache),
    ) -> (usize, Cache) {
        for successes in 0.. {
            let cache = setup();
            let before = cache.info();
            let armed = crate::allocation_failure::arm(successes);
            let result = operation(&cache);
            drop(armed);
            match result {
                Ok(_) => return (successes, cache),
                Err(error) => {
                    assert_eq!(error.kind(), ErrorKind::OutOfMemory, "{error}");
                    assert_info_as_before(&cache, &before);
                    unchanged(&cache);
                }
            }
        }
        unreachable!("an attempt succeeds once every allocation is let through")
    }

    /// Creating a cache fails with `OutOfMemory` at each allocation it
    /// makes, the array of its shards and each shard's first bucket, instead
    /// of aborting the host.
    #[test]
    fn a_cache_that_cannot_allocate_is_not_created() {
        let mut failures = 0;
        let cache = loop {
            let armed = crate::allocation_failure::arm(failures);
            let created = Cache::new(CacheConfig {
                num_shards: 8,
                ..CacheConfig::new(8)
            });
            drop(armed);
            match created {
                Ok(cache) => break cache,
                Err(error) => assert_eq!(error.kind(), ErrorKind::OutOfMemory, "{error}"),
            }
            failures += 1;
        };
        assert_eq!(failures, 1 + 8);
        assert_eq!(cache.info().num_shards, 8);
    }

    /// Each shard's overflow keys and the room its list holds: room that
    /// `memory_bytes` does not count, so none may stay after a failure.
    fn overflow_rooms(cache: &Cache) -> Vec<(usize, usize)> {
        let shards = cache.shards.iter();
        shards.map(|s| s.read().index().overflow_room()).collect()
    }

    /// A cache of eight shards holding `rows_of(ids, 8)`.
    fn eight_shards_holding(ids: &[i64]) -> Cache {
        let cache = eight_shards_of_8_byte_rows();
        cache.batch_set(ids, &rows_of(ids, 8), 1).unwrap();
        cache
    }

    /// A lookup and a removal that cannot allocate their scratch fail before
    /// they change anything: the lookup writes no output, counts nothing and
    /// calls no sink; the removal removes nothing.
    #[test]
    fn a_lookup_or_removal_that_cannot_allocate_changes_nothing() {
        let stored: Vec<i64> = (0..10_000).collect();
        let sink_calls = std::sync::Arc::new(AtomicU64::new(0));
        let with_sink = || {
            let cache = eight_shards_holding(&stored);
            sink_calls.store(0, Ordering::Relaxed);
            let calls = sink_calls.clone();
            cache.register_stat_sink(Box::new(move |_| {
                calls.fetch_add(1, Ordering::Relaxed);
            }));
            cache
        };
        // Several windows, half of them misses.
        let lookup: Vec<i64> = (5_000..15_000).collect();
        let out = std::cell::RefCell::new(vec![0xaa; lookup.len() * 8]);
        let (failures, cache) = fail_allocations_in_turn(
            with_sink,
            |cache| cache.batch_get(&lookup, &mut out.borrow_mut(), None),
            |cache| {
                assert!(out.borrow().iter().all(|&byte| byte == 0xaa));
                assert_eq!(cache.cumulative_read_stats(), ReadStats::default());
                assert_eq!(sink_calls.load(Ordering::Relaxed), 0);
            },
        );
        assert!(failures > 0);
        assert_eq!(cache.cumulative_read_stats().hits, 5_000);
        assert_eq!(sink_calls.load(Ordering::Relaxed), 1);

        let (removed, kept) = stored.split_at(5_000);
        let (failures, cache) = fail_allocations_in_turn(
            || eight_shards_holding(&stored),
            |cache| cache.batch_remove(removed),
            |cache| assert_holds(cache, &stored, &[]),
        );
        assert!(failures > 0);
        assert_holds(&cache, kept, removed);
    }

    /// 100 ids of `cache`'s shard 0 (of one) that share two pairs of buckets,
    /// far more than four buckets hold.
    fn ids_that_defeat_the_hash(cache: &Cache) -> Vec<i64> {
        let one_shard = ShardBits { number: 0, bits: 0 };
        let mut state = 0u64;
        let mut random = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        };
        (0..100u64)
            .map(|i| {
                let hash = index::clustered(one_shard, i % 2, i % 2 + 4, &mut random);
                cache.hasher.id_of(hash)
            })
            .collect()
    }

    /// Ids that share both buckets with many others go to the index's
    /// overflow list amid a write. A publish reserves that room first (the
    /// index asserts in tests that no insertion goes without), under a
    /// capacity policy for every new id, also those that take evicted rows'
    /// places; a rebuild (here compaction's) reserves it as it goes, failing
    /// cleanly when it cannot; and a write gives back the room of a list it
    /// empties.
    #[test]
    fn ids_that_defeat_the_hash_have_their_overflow_room_reserved() {
        let unbounded = one_shard_of_8_byte_rows();
        let evicting = CacheConfig {
            max_rows: Some(150),
            eviction_policy: EvictionPolicy::OldestTimestamp,
            ..unbounded.clone()
        };
        let old: Vec<i64> = (1..=150).collect();
        for config in [unbounded, evicting] {
            // Full under the capacity policy: the new ids take evicted rows'
            // places, and the shard does not grow.
            let holding_both = || {
                let cache = Cache::new(config.clone()).unwrap();
                cache.batch_set(&old, &rows_of(&old, 8), 1).unwrap();
                let clustered = ids_that_defeat_the_hash(&cache);
                cache
                    .batch_set(&clustered, &rows_of(&clustered, 8), 2)
                    .unwrap();
                cache
            };
            let old_kept = if config.max_rows.is_some() { 50 } else { 150 };
            let holds_both = |cache: &Cache| {
                assert_holds(cache, &ids_that_defeat_the_hash(cache), &[]);
                let mut out = vec![0; old.len() * 8];
                let mut hits = vec![0; old.len()];
                cache.batch_get(&old, &mut out, Some(&mut hits)).unwrap();
                let found: Vec<usize> = (0..old.len()).filter(|&i| hits[i] == 1).collect();
                assert_eq!(found.len(), old_kept);
                for i in found {
                    assert_eq!(out[i * 8..][..8], rows_of(&old[i..=i], 8));
                }
            };
            let cache = holding_both();
            let (overflowed, _) = cache.shards[0].read().index().overflow_room();
            assert!(overflowed > 50, "{overflowed} ids overflowed");
            holds_both(&cache);

            let (failures, cache) =
                fail_allocations_in_turn(holding_both, Cache::compact, holds_both);
            assert!(failures > 0);
            holds_both(&cache);

            // A walk may leave any id it displaced in the list, an old one too.
            let every = [&ids_that_defeat_the_hash(&cache)[..], &old].concat();
            let removed = cache.batch_remove(&every).unwrap();
            assert_eq!(removed, 100 + old_kept as u64);
            assert_eq!(cache.shards[0].read().index().overflow_room(), (0, 0));
        }
    }

    /// Publishes that each add a key to a shard's overflow list grow its room
    /// in doubling steps, not by a copy per publish.
    #[test]
    fn an_overflow_list_that_keeps_keys_grows_its_room_in_steps() {
        let cache = Cache::new(one_shard_of_8_byte_rows()).unwrap();
        // No rebuild, which would start a new list.
        cache.reserve(1_000).unwrap();
        let ids = ids_that_defeat_the_hash(&cache);
        let mut rooms = Vec::new();
        for id in &ids {
            let id = std::slice::from_ref(id);
            cache.batch_set(id, &rows_of(id, 8), 1).unwrap();
            let (overflowed, room) = cache.shards[0].read().index().overflow_room();
            if overflowed > 0 && rooms.last() != Some(&room) {
                rooms.push(room);
            }
        }
        let (overflowed, _) = cache.shards[0].read().index().overflow_room();
        assert!(overflowed > 50, "{overflowed} ids overflowed");
        assert!(
            rooms.len() <= 8,
            "the room changed {} times: {rooms:?}",
            rooms.len()
        );
        assert_holds(&cache, &ids, &[]);
    }

    /// `evict_older_than` sweeps a large shard in stretches, and the overflow
    /// list only with the last: the old ids there go, the new ones stay.
    #[test]
    fn an_expiry_in_stretches_sweeps_the_overflow_list_too() {
        let cache = Cache::new(one_shard_of_8_byte_rows()).unwrap();
        let filler: Vec<i64> = (1..=20_000).collect();
        cache.batch_set(&filler, &rows_of(&filler, 8), 2).unwrap();
        let ids = ids_that_defeat_the_hash(&cache);
        let (old, new) = ids.split_at(50);
        cache.batch_set(old, &rows_of(old, 8), 1).unwrap();
        cache.batch_set(new, &rows_of(new, 8), 2).unwrap();
        let shard = || cache.shards[0].read();
        assert!(shard().bucket_count() > 2 * EVICT_STRETCH);
        let (overflowed, _) = shard().index().overflow_room();
        assert!(overflowed > 50, "{overflowed} ids overflowed");
        assert_eq!(cache.evict_older_than(2), 50);
        assert_holds(&cache, &[new, &filler[..]].concat(), old);
        assert_eq!(cache.info().rows, 20_050);
    }

    /// A capacity publish that needs both an eviction and a larger arena: while
    /// it cannot allocate, it evicts nothing (before it allocated first, it
    /// had evicted two rows).
    #[test]
    fn a_capacity_publish_that_cannot_allocate_evicts_nothing() {
        // An arena of eight 1 KiB rows, full.
        let stored: Vec<i64> = (0..8).collect();
        let full = || {
            let cache = Cache::new(CacheConfig {
                num_shards: 1,
                max_rows: Some(10),
                eviction_policy: EvictionPolicy::OldestTimestamp,
                ..CacheConfig::new(1024)
            })
            .unwrap();
            for id in &stored {
                let id = std::slice::from_ref(id);
                cache
                    .batch_set(id, &rows_of(id, 1024), id[0] as u32)
                    .unwrap();
            }
            assert!(!cache.shards[0].read().has_room_for(1));
            cache
        };
        let new_ids: Vec<i64> = (100..104).collect();
        let rows = rows_of(&new_ids, 1024);
        let (failures, cache) = fail_allocations_in_turn(
            full,
            |cache| cache.batch_set(&new_ids, &rows, 100),
            |cache| assert_holds(cache, &stored, &new_ids),
        );
        assert!(failures > 0);
        // Once it can, it evicts the two oldest rows.
        assert_holds(&cache, &[&stored[2..], &new_ids].concat(), &stored[..2]);
    }

    /// Under `OldestTimestamp` a publish counts its rows by timestamp, and the
    /// room for a stamp a shard has not counted yet is one of the allocations
    /// it makes before it writes: a republish with a new stamp makes one more
    /// per shard than under `LruApprox`, and fails at it changing nothing.
    #[test]
    fn a_publish_reserves_the_room_to_count_its_timestamp() {
        let stored: Vec<i64> = (0..4000).collect();
        let failures_under = |eviction_policy| {
            let holding = || {
                let cache = Cache::new(CacheConfig {
                    num_shards: 8,
                    max_rows: Some(8000),
                    eviction_policy,
                    ..CacheConfig::new(8)
                })
                .unwrap();
                cache.batch_set(&stored, &rows_of(&stored, 8), 1).unwrap();
                cache
            };
            let rooms_before = overflow_rooms(&holding());
            let (failures, cache) = fail_allocations_in_turn(
                holding,
                |cache| cache.batch_set(&stored, &rows_of(&stored, 8), 2),
                |cache| {
                    assert_eq!(overflow_rooms(cache), rooms_before);
                    // Still stamped 1: a sweep for older rows removes them all.
                    assert_eq!(cache.evict_older_than(2), 4000);
                },
            );
            assert_eq!(cache.evict_older_than(2), 0);
            failures
        };
        assert_eq!(
            failures_under(EvictionPolicy::OldestTimestamp),
            failures_under(EvictionPolicy::LruApprox) + 8
        );
    }

    /// A publish that grows every shard, a `reserve` and a `compact`, failing
    /// at each of their allocations in turn, some after other shards have
    /// grown or been compacted: each failure leaves every row and counter as
    /// it was. The room a failed publish grew serves the same publish made
    /// again: it then holds what it would have without the failure.
    #[test]
    fn failed_allocations_leave_every_row_as_it_was() {
        let stored: Vec<i64> = (0..1000).collect();
        let publish: Vec<i64> = (1000..50_000).collect();
        let rows = rows_of(&publish, 8);
        // Without a policy, and under one with room for every row (whose
        // publish reserves in `make_room`).
        for policy in [EvictionPolicy::None, EvictionPolicy::LruApprox] {
            // One hash key for every cache: the ids then fall into the same
            // shards, which grow to the same sizes.
            let holding_stored = || {
                let mut cache = Cache::new(CacheConfig {
                    num_shards: 8,
                    eviction_policy: policy,
                    max_rows: (policy != EvictionPolicy::None).then_some(100_000),
                    ..CacheConfig::new(8)
                })
                .unwrap();
                cache.hasher = IdHasher::with_key(0x6b76_7a63);
                cache.batch_set(&stored, &rows_of(&stored, 8), 1).unwrap();
                cache
            };
            let published = holding_stored();
            published.batch_set(&publish, &rows, 2).unwrap();
            let rooms_before = overflow_rooms(&holding_stored());
            let (failures, _) = fail_allocations_in_turn(
                holding_stored,
                |cache| cache.batch_set(&publish, &rows, 2),
                |cache| {
                    assert_holds(cache, &stored, &publish[..1000]);
                    assert_eq!(overflow_rooms(cache), rooms_before, "{policy:?}");
                    cache.batch_set(&publish, &rows, 2).unwrap();
                    assert_eq!(cache.info(), published.info());
                },
            );
            assert!(failures > 8);
        }

        let all: Vec<i64> = (0..50_000).collect();
        let (failures, _) = fail_allocations_in_turn(
            || eight_shards_holding(&all),
            |cache| cache.reserve(200_000),
            |cache| assert_holds(cache, &all, &[]),
        );
        assert!(failures > 8);

        let (removed, kept) = all.split_at(40_000);
        let sparse = || {
            let cache = eight_shards_holding(&all);
            cache.batch_remove(removed).unwrap();
            cache
        };
        let (failures, cache) = fail_allocations_in_turn(
            sparse,
            |cache| cache.compact(),
            |cache| assert_holds(cache, kept, &removed[..1000]),
        );
        assert!(failures > 8);
        assert!(cache.info().memory_bytes < sparse().info().memory_bytes);
        assert_holds(&cache, kept, &removed[..1000]);
    }
}
