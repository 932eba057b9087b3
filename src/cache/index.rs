//! The per-shard index: an open-addressing table from id to row slot.
//!
//! A bucket is one 64-byte cache line holding five `(id, slot)` pairs, and probing
//! walks buckets linearly, so a lookup usually costs a single cache miss and the
//! slot it yields sits next to the key it matched (no second hop through a
//! control array, as a Swiss table would need).
//!
//! Every entry sits in its home bucket or past it behind full buckets only, so
//! a lookup stops at the first bucket with an empty position. Removal keeps that
//! true without tombstones: it moves later entries of the run back into the
//! hole (backward-shift deletion), so the table is only as full as its live
//! entries make it and churn never needs a rebuild to clear it (tombstones
//! counted toward the fill and lengthened every miss until the next rebuild).
//! A scan that removes re-examines the position it emptied, since a later entry
//! may have moved into it; entries only move backwards, so a scan skips none.
//!
//! A large table lives in a mapping of its own, on transparent huge pages as
//! far as it spans whole ones (see `huge_pages`): a probe into those pages
//! rarely misses the TLB as well as the cache. Rounding tables up to whole huge
//! pages made lookups about 5% faster still at 4M rows, but cost 2 B/row there,
//! so tables keep the size their fill asks for.
//!
//! The bucket's last four bytes hold a "referenced" bit per entry for the
//! approximate-LRU policy: a lookup sets it in the cache line it has already
//! loaded, and only when it is clear, so a hot row costs no write at all.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Error;
use crate::huge_pages::HugePageArray;

pub(crate) const BUCKET_WIDTH: usize = 5;
/// A position holds its row's slot plus one, and this marks a free position:
/// a fresh mapping, all zeros, is then an empty table that nobody writes
/// before its entries (writing `u32::MAX` into every position of every table
/// a fill grows cost about 4% of the fill).
const EMPTY: u32 = 0;
/// Slots are strictly below this value, so that a slot plus one fits.
pub(crate) const SLOT_LIMIT: u32 = u32::MAX;

/// Entries may fill at most this share of the table, which keeps every probe
/// sequence short and guarantees an empty position.
const MAX_FILL: f64 = 0.92;
/// An exact rebuild sizes the table so that live entries fill this share of
/// it, so it grows again after 15% more.
const REBUILT_FILL: f64 = 0.8;
/// Consecutive sizes of a staggered table differ by this factor.
const STAGGERED_STEP: f64 = 1.3;
/// A reservation sizes the table so that the reserved entries fill this share
/// of it: the rest is room for the shards' uneven shares of them.
const RESERVED_FILL: f64 = 0.88;

/// How a shard's table grows for the keys publishes add.
///
/// Every rebuild moves every key, so the larger the steps, the fewer the
/// moves and the more empty positions a table just grown holds. Staggered
/// tables take their sizes from a ladder of 1.3x steps, each shard's ladder
/// offset by a fraction of a step: the shards fill at the same rate, so on a
/// common ladder they would all grow at the same row counts and the cache's
/// memory per row would swing by the whole step; offset, their fills spread
/// over the step at any row count. The index then holds about 15.9 bytes per
/// row at any count (15% steps: 14.9 on average, 13.9-16.0 in a shard), and a
/// key moves 4.3 times on the way to a large table instead of 7.7.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Growth {
    /// Sized for the keys at `REBUILT_FILL`: a cache that caps its memory
    /// plans how many rows fit from that size (see `memory_bytes_for`).
    Exact,
    /// The smallest size on the ladder `STAGGERED_STEP^(k + phase)`, `k` a
    /// whole number and `phase` in `[0, 1)`, that the keys fill at most as
    /// far as an exact rebuild would.
    Staggered { phase: f64 },
}

/// How much room a grown table leaves beyond the keys it is grown for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sizing {
    /// A publish's growth: as the table's `Growth` says.
    Publish,
    /// A host's reservation of the rows to come, which says how many there
    /// will be: the keys fill `RESERVED_FILL`, so a table filled as reserved
    /// holds about 14.5 bytes per row instead of 16.
    Reservation,
}

impl Sizing {
    fn fill(self) -> f64 {
        match self {
            Sizing::Publish => REBUILT_FILL,
            Sizing::Reservation => RESERVED_FILL,
        }
    }
}

/// All zeros is the empty bucket, and tables start as zero pages: its fields
/// must stay valid as zero bytes (see `huge_pages::Zeroable`).
#[repr(C, align(64))]
pub(crate) struct Bucket {
    keys: [i64; BUCKET_WIDTH],
    /// Each entry's slot plus one, or `EMPTY`.
    slots: [u32; BUCKET_WIDTH],
    /// Bit `i`: entry `i` was read since the clock hand last passed it.
    referenced: AtomicU32,
}

/// What a position holds for `slot`.
#[inline(always)]
fn stored(slot: u32) -> u32 {
    debug_assert!(slot < SLOT_LIMIT);
    slot + 1
}

/// The slot a taken position holds: the inverse of [`stored`].
#[inline(always)]
fn slot_in(position: u32) -> u32 {
    debug_assert!(position != EMPTY);
    position - 1
}

impl Bucket {
    /// Where `key` is in the bucket, if it is. All five positions are compared
    /// without an early exit: where in the bucket a key sits is random, and a
    /// branch on it would mispredict on most lookups.
    #[inline(always)]
    fn position_of(&self, key: i64) -> Option<usize> {
        let mut matches = 0u32;
        for (i, (&k, &slot)) in self.keys.iter().zip(&self.slots).enumerate() {
            matches |= u32::from(k == key && slot != EMPTY) << i;
        }
        (matches != 0).then(|| matches.trailing_zeros() as usize)
    }

    /// The slot at `entry`, if the position is taken.
    #[inline(always)]
    fn slot(&self, entry: usize) -> Option<u32> {
        let position = self.slots[entry];
        (position != EMPTY).then(|| slot_in(position))
    }

    /// The slot at the taken position `entry`; with `TOUCH`, also marks the
    /// entry as read.
    #[inline(always)]
    fn read<const TOUCH: bool>(&self, entry: usize) -> u32 {
        if TOUCH {
            let referenced = self.referenced.load(Ordering::Relaxed);
            if referenced & (1 << entry) == 0 {
                // A plain store, not `fetch_or`: a locked read-modify-write is a
                // full barrier on x86 and stalls the batch's prefetch pipeline.
                // Two readers racing on one bucket may lose one's bit, which
                // only costs that row its second chance.
                self.referenced
                    .store(referenced | 1 << entry, Ordering::Relaxed);
            }
        }
        slot_in(self.slots[entry])
    }
}

/// An entry's place: bucket and position in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    bucket: usize,
    entry: usize,
}

/// What a clock sweep finds at a position.
pub(crate) struct Entry {
    pub(crate) key: i64,
    pub(crate) slot: u32,
    pub(crate) referenced: bool,
}

pub(crate) struct Index {
    buckets: HugePageArray<Bucket>,
    live: usize,
    growth: Growth,
}

/// Maps a hash onto `0..len` using its high bits; the shard is chosen from the
/// low bits, so the two choices stay independent.
#[inline]
fn home_bucket(hash: u64, len: usize) -> usize {
    ((u128::from(hash) * len as u128) >> 64) as usize
}

/// The bucket a probe reads after `at`, wrapping around the table's end.
#[inline(always)]
fn next_bucket(at: usize, len: usize) -> usize {
    if at + 1 == len {
        0
    } else {
        at + 1
    }
}

/// Bytes of a table of `buckets` buckets.
fn table_bytes(buckets: usize) -> usize {
    buckets * std::mem::size_of::<Bucket>()
}

/// Buckets that `entries` keys fill to `fill`, however small.
fn buckets_at_fill(entries: usize, fill: f64) -> f64 {
    entries as f64 / (BUCKET_WIDTH as f64 * fill)
}

impl Growth {
    fn bucket_count_for(self, entries: usize, sizing: Sizing) -> usize {
        let buckets = buckets_at_fill(entries, sizing.fill());
        match (self, sizing) {
            (Growth::Staggered { phase }, Sizing::Publish) => staggered_size(buckets, phase),
            _ => (buckets.ceil() as usize).max(1),
        }
    }
}

/// The smallest bucket count of at least `buckets` on the ladder of `phase`.
fn staggered_size(buckets: f64, phase: f64) -> usize {
    // A rung's size is its power rounded up, so the rung below the one whose
    // power reaches `buckets` may hold them already: a table filled to the
    // brim of its size then keeps that size. Float rounding may also leave a
    // rung's size a hair below `buckets`; the loop climbs past either.
    let mut rung = (buckets.ln() / STAGGERED_STEP.ln() - phase - 1.0)
        .ceil()
        .max(0.0);
    loop {
        let size = STAGGERED_STEP.powf(rung + phase).ceil();
        if size >= buckets {
            return size as usize;
        }
        rung += 1.0;
    }
}

fn max_live(bucket_count: usize) -> usize {
    (bucket_count as f64 * BUCKET_WIDTH as f64 * MAX_FILL) as usize
}

fn allocate_buckets(count: usize) -> Result<HugePageArray<Bucket>, Error> {
    HugePageArray::zeroed(count)
        .ok_or_else(|| Error::out_of_memory(format!("index of {count} buckets")))
}

impl Index {
    pub(crate) fn new(growth: Growth) -> Index {
        Index {
            buckets: allocate_buckets(1).expect("memory for one bucket"),
            live: 0,
            growth,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        table_bytes(self.buckets.len())
    }

    /// The size an exactly grown table holding `keys` keys has at most when it
    /// only grows as far as a rebuild for that many keys takes it.
    pub(crate) fn memory_bytes_for(keys: usize) -> usize {
        table_bytes(Growth::Exact.bucket_count_for(keys, Sizing::Publish))
    }

    /// The first cache line a lookup of `hash` touches, for prefetching.
    #[inline]
    pub(crate) fn probe_start(&self, hash: u64) -> &impl Sized {
        &self.buckets[home_bucket(hash, self.buckets.len())]
    }

    /// The cache line a probe of `hash` reads next when the first is full.
    #[inline]
    pub(crate) fn probe_second(&self, hash: u64) -> &impl Sized {
        let len = self.buckets.len();
        let home = home_bucket(hash, len);
        &self.buckets[next_bucket(home, len)]
    }

    /// The bucket holding `key` and the entry's position in it.
    #[inline(always)]
    fn find(&self, key: i64, hash: u64) -> Option<(&Bucket, usize)> {
        let len = self.buckets.len();
        let mut at = home_bucket(hash, len);
        loop {
            let bucket = &self.buckets[at];
            if let Some(entry) = bucket.position_of(key) {
                return Some((bucket, entry));
            }
            if bucket.slots.contains(&EMPTY) {
                return None;
            }
            at = next_bucket(at, len);
        }
    }

    #[inline(always)]
    pub(crate) fn get(&self, key: i64, hash: u64) -> Option<u32> {
        self.lookup::<false>(key, hash)
    }

    /// [`get`](Self::get); with `TOUCH`, also marks the entry as read for the
    /// clock.
    #[inline(always)]
    pub(crate) fn lookup<const TOUCH: bool>(&self, key: i64, hash: u64) -> Option<u32> {
        self.find(key, hash)
            .map(|(bucket, entry)| bucket.read::<TOUCH>(entry))
    }

    /// Whether `additional` more keys fit without a rebuild.
    pub(crate) fn has_room_for(&self, additional: usize) -> bool {
        self.live + additional <= max_live(self.buckets.len())
    }

    /// Bytes the table would hold after making room for `additional` more keys.
    pub(crate) fn memory_bytes_after_reserve(&self, additional: usize, sizing: Sizing) -> usize {
        if self.has_room_for(additional) {
            self.memory_bytes()
        } else {
            table_bytes(self.growth.bucket_count_for(self.live + additional, sizing))
        }
    }

    /// The table that makes room for `additional` new keys, when this one has
    /// too little: built from a shared reference, so that readers keep going
    /// while it is built and the writer only swaps it in. The caller must keep
    /// the keys unchanged until then (the cache's writer mutex does); reads
    /// made meanwhile may lose their referenced bits, which only costs those
    /// entries their second chance.
    pub(crate) fn grown_for(
        &self,
        additional: usize,
        sizing: Sizing,
        hash_of: impl Fn(i64) -> u64,
    ) -> Result<Option<Index>, Error> {
        if self.has_room_for(additional) {
            return Ok(None);
        }
        let mut rebuilt = Rebuilding::new(
            self.growth.bucket_count_for(self.live + additional, sizing),
            self.growth,
        )?;
        for bucket in self.buckets.iter() {
            let referenced = bucket.referenced.load(Ordering::Relaxed);
            rebuilt.take_entries(bucket, referenced, &hash_of, |slot| slot);
        }
        Ok(Some(rebuilt.index))
    }

    /// Rebuilds the table for its live keys alone, moving each key's row to the
    /// slot `move_slot` returns: what compaction does. The table takes the
    /// smallest size its growth allows that holds them, which no table holding
    /// them undercuts: a single bucket when they fit one, as in a new table;
    /// else for an exact table the size they fill to `MAX_FILL`, for a
    /// staggered one the smallest such size on its ladder. It keeps its size
    /// when that is smaller (a reservation's size is on no ladder).
    pub(crate) fn compact(
        &mut self,
        hash_of: impl Fn(i64) -> u64,
        move_slot: impl FnMut(u32) -> u32,
    ) -> Result<(), Error> {
        let buckets = buckets_at_fill(self.live, MAX_FILL);
        let fitted = match self.growth {
            _ if self.live <= max_live(1) => 1,
            Growth::Exact => buckets.ceil() as usize,
            Growth::Staggered { phase } => staggered_size(buckets, phase),
        };
        self.rebuild(fitted.min(self.buckets.len()), hash_of, move_slot)
    }

    /// Moves every live entry into a new table of `bucket_count` buckets,
    /// keeping its referenced bit. Allocates before it moves anything, so on
    /// failure nothing has changed and `move_slot` was never called.
    fn rebuild(
        &mut self,
        bucket_count: usize,
        hash_of: impl Fn(i64) -> u64,
        mut move_slot: impl FnMut(u32) -> u32,
    ) -> Result<(), Error> {
        let mut rebuilt = Rebuilding::new(bucket_count, self.growth)?;
        for bucket in self.buckets.iter_mut() {
            let referenced = *bucket.referenced.get_mut();
            rebuilt.take_entries(bucket, referenced, &hash_of, &mut move_slot);
        }
        *self = rebuilt.index;
        Ok(())
    }

    /// Returns the slot stored for `key`, or stores `new_slot()` for it.
    /// The caller has reserved room for the insertion.
    pub(crate) fn get_or_insert(
        &mut self,
        key: i64,
        hash: u64,
        new_slot: impl FnOnce() -> u32,
    ) -> (u32, bool) {
        let (_, slot, inserted) = self.find_or_insert(key, hash, new_slot);
        (slot, inserted)
    }

    /// [`get_or_insert`](Self::get_or_insert), also saying where the entry is.
    fn find_or_insert(
        &mut self,
        key: i64,
        hash: u64,
        new_slot: impl FnOnce() -> u32,
    ) -> (Position, u32, bool) {
        let len = self.buckets.len();
        let mut at = home_bucket(hash, len);
        let i = loop {
            let bucket = &self.buckets[at];
            let mut empty = None;
            for (entry, (&k, &slot)) in bucket.keys.iter().zip(&bucket.slots).enumerate() {
                if slot == EMPTY {
                    empty = empty.or(Some(entry));
                } else if k == key {
                    return (Position { bucket: at, entry }, slot_in(slot), false);
                }
            }
            if let Some(entry) = empty {
                break entry;
            }
            at = next_bucket(at, len);
        };
        debug_assert!(self.live < max_live(len), "insertion without a reservation");
        let position = Position {
            bucket: at,
            entry: i,
        };
        let bucket = &mut self.buckets[at];
        let slot = new_slot();
        bucket.keys[i] = key;
        bucket.slots[i] = stored(slot);
        // A new entry has not been read yet, whatever the position held before.
        *bucket.referenced.get_mut() &= !(1 << i);
        self.live += 1;
        (position, slot, true)
    }

    /// Bucket `bucket`'s cache line, for prefetching.
    pub(crate) fn bucket_line(&self, bucket: usize) -> &impl Sized {
        &self.buckets[bucket]
    }

    /// Buckets a lookup of `hash` reads before it can answer.
    #[cfg(test)]
    pub(crate) fn probe_buckets(&self, hash: u64) -> usize {
        let len = self.buckets.len();
        let mut at = home_bucket(hash, len);
        let mut read = 1;
        while !self.buckets[at].slots.contains(&EMPTY) {
            at = next_bucket(at, len);
            read += 1;
        }
        read
    }

    /// Positions a clock hand walks through: `0..positions()`.
    pub(crate) fn positions(&self) -> usize {
        self.buckets.len() * BUCKET_WIDTH
    }

    fn position(index: usize) -> Position {
        Position {
            bucket: index / BUCKET_WIDTH,
            entry: index % BUCKET_WIDTH,
        }
    }

    /// The live entry at position `index`, if any.
    pub(crate) fn entry_at(&mut self, index: usize) -> Option<Entry> {
        let Position { bucket, entry } = Index::position(index);
        let bucket = &mut self.buckets[bucket];
        let slot = bucket.slot(entry)?;
        Some(Entry {
            key: bucket.keys[entry],
            slot,
            referenced: *bucket.referenced.get_mut() & (1 << entry) != 0,
        })
    }

    /// Gives the entry at `index` a second chance: the clock passed it.
    pub(crate) fn clear_reference(&mut self, index: usize) {
        let Position { bucket, entry } = Index::position(index);
        *self.buckets[bucket].referenced.get_mut() &= !(1 << entry);
    }

    /// Removes the live entry at `index`; a later entry may move into it.
    pub(crate) fn remove_at(&mut self, index: usize, hash_of: impl Fn(i64) -> u64) {
        debug_assert!(self.entry_at(index).is_some());
        self.vacate(Index::position(index), hash_of);
    }

    pub(crate) fn remove(
        &mut self,
        key: i64,
        hash: u64,
        hash_of: impl Fn(i64) -> u64,
    ) -> Option<u32> {
        let len = self.buckets.len();
        let mut at = home_bucket(hash, len);
        loop {
            let bucket = &self.buckets[at];
            if let Some(entry) = bucket.position_of(key) {
                let slot = slot_in(bucket.slots[entry]);
                self.vacate(Position { bucket: at, entry }, hash_of);
                return Some(slot);
            }
            if bucket.slots.contains(&EMPTY) {
                return None;
            }
            at = next_bucket(at, len);
        }
    }

    /// Empties the live position `hole`, then walks the run after it and moves
    /// back an entry whose probe path passes the hole, which opens a hole where
    /// that entry was; repeats until a bucket that had an empty position, past
    /// which no entry's path reaches back.
    fn vacate(&mut self, mut hole: Position, hash_of: impl Fn(i64) -> u64) {
        let len = self.buckets.len();
        self.buckets[hole.bucket].slots[hole.entry] = EMPTY;
        *self.buckets[hole.bucket].referenced.get_mut() &= !(1 << hole.entry);
        self.live -= 1;
        let mut at = next_bucket(hole.bucket, len);
        while at != hole.bucket {
            let bucket = &self.buckets[at];
            let had_empty = bucket.slots.contains(&EMPTY);
            // Buckets from an entry's home to the one before it are full; the
            // hole may take it when the hole lies on that stretch.
            let to_hole = (at + len - hole.bucket) % len;
            let movable = (0..BUCKET_WIDTH).find(|&entry| {
                bucket.slots[entry] != EMPTY && {
                    let home = home_bucket(hash_of(bucket.keys[entry]), len);
                    (at + len - home) % len >= to_hole
                }
            });
            if let Some(entry) = movable {
                let from = Position { bucket: at, entry };
                self.move_entry(from, hole);
                hole = from;
            }
            if had_empty {
                return;
            }
            at = next_bucket(at, len);
        }
    }

    /// Moves the entry at `from` into the empty position `to`, with its
    /// referenced bit.
    fn move_entry(&mut self, from: Position, to: Position) {
        let source = &mut self.buckets[from.bucket];
        let (key, slot) = (source.keys[from.entry], source.slots[from.entry]);
        source.slots[from.entry] = EMPTY;
        let referenced = source.referenced.get_mut();
        let bit = (*referenced >> from.entry) & 1;
        *referenced &= !(1 << from.entry);
        let target = &mut self.buckets[to.bucket];
        target.keys[to.entry] = key;
        target.slots[to.entry] = slot;
        *target.referenced.get_mut() |= bit << to.entry;
    }

    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Removes, within `buckets`, every entry whose slot `take` accepts; `take`
    /// owns each slot it accepts. An entry that a removal moves into the
    /// position being examined is examined next, whether it came from past the
    /// range or (wrapping around) from the table's start.
    pub(crate) fn remove_where(
        &mut self,
        buckets: Range<usize>,
        hash_of: impl Fn(i64) -> u64,
        mut take: impl FnMut(u32) -> bool,
    ) -> usize {
        let mut removed = 0;
        for bucket in buckets {
            for entry in 0..BUCKET_WIDTH {
                while let Some(slot) = self.buckets[bucket].slot(entry) {
                    if !take(slot) {
                        break;
                    }
                    self.vacate(Position { bucket, entry }, &hash_of);
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// A new table being filled with another's entries. A rebuild makes no
/// removals, so each bucket fills from its first position on and its first
/// empty position is its count of taken ones, kept here apart from the table:
/// the entries come nearly in home order, so consecutive insertions mostly
/// land in one bucket, and reading the bucket's slots right after writing one
/// of them would stall on the store (a wide load cannot be forwarded from a
/// narrower store), which made a rebuild twice as slow.
struct Rebuilding {
    index: Index,
    taken: Vec<u8>,
}

impl Rebuilding {
    fn new(bucket_count: usize, growth: Growth) -> Result<Rebuilding, Error> {
        let mut taken = Vec::new();
        taken
            .try_reserve_exact(bucket_count)
            .map_err(|_| Error::out_of_memory(format!("fill counts of {bucket_count} buckets")))?;
        taken.resize(bucket_count, 0);
        Ok(Rebuilding {
            index: Index {
                buckets: allocate_buckets(bucket_count)?,
                live: 0,
                growth,
            },
            taken,
        })
    }

    /// Inserts the live entries of another table's bucket, keeping their
    /// referenced bits, at the slots `move_slot` gives them.
    fn take_entries(
        &mut self,
        bucket: &Bucket,
        referenced: u32,
        hash_of: &impl Fn(i64) -> u64,
        mut move_slot: impl FnMut(u32) -> u32,
    ) {
        for (i, &key) in bucket.keys.iter().enumerate() {
            if let Some(slot) = bucket.slot(i) {
                let at = self.insert_new(key, hash_of(key), move_slot(slot));
                *self.index.buckets[at.bucket].referenced.get_mut() |=
                    (referenced >> i & 1) << at.entry;
            }
        }
    }

    /// Inserts a key known to be absent at the first empty position from its
    /// home, and says where it went.
    fn insert_new(&mut self, key: i64, hash: u64, slot: u32) -> Position {
        debug_assert!(
            self.index.get(key, hash).is_none(),
            "rebuild met a key twice"
        );
        let len = self.taken.len();
        let mut at = home_bucket(hash, len);
        while usize::from(self.taken[at]) == BUCKET_WIDTH {
            at = next_bucket(at, len);
        }
        let entry = usize::from(self.taken[at]);
        self.taken[at] += 1;
        let bucket = &mut self.index.buckets[at];
        bucket.keys[entry] = key;
        bucket.slots[entry] = stored(slot);
        self.index.live += 1;
        Position { bucket: at, entry }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(key: i64) -> u64 {
        ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(key)
    }

    fn reserve(index: &mut Index, additional: usize) {
        if let Some(grown) = index.grown_for(additional, Sizing::Publish, hash).unwrap() {
            *index = grown;
        }
    }

    /// Splitmix64: a seeded, repeatable stream of test choices.
    struct Choices(u64);

    impl Choices {
        fn below(&mut self, bound: usize) -> usize {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) % bound as u64) as usize
        }
    }

    /// Inserts, removes by key, by position and by range at random against a
    /// model, compacting now and then, then checks every key of the model is
    /// found with its slot and that no other is; for either kind of growth.
    fn churn_against_model(hash_of: fn(i64) -> u64, seed: u64) {
        for growth in [Growth::Exact, Growth::Staggered { phase: 0.6 }] {
            churn_with_growth(growth, hash_of, seed);
        }
    }

    fn churn_with_growth(growth: Growth, hash_of: fn(i64) -> u64, seed: u64) {
        let mut choices = Choices(seed);
        let mut index = Index::new(growth);
        let mut model = std::collections::HashMap::new();
        let key_space = 3_000;
        for step in 0..30_000u32 {
            let key = choices.below(key_space) as i64;
            match choices.below(10) {
                0..=4 => {
                    if let Some(grown) = index.grown_for(1, Sizing::Publish, hash_of).unwrap() {
                        index = grown;
                    }
                    let (slot, inserted) = index.get_or_insert(key, hash_of(key), || step);
                    assert_eq!(inserted, !model.contains_key(&key));
                    model.entry(key).or_insert(step);
                    assert_eq!(slot, model[&key]);
                }
                5..=6 => {
                    assert_eq!(index.remove(key, hash_of(key), hash_of), model.remove(&key));
                }
                7..=8 => {
                    let at = choices.below(index.positions());
                    if let Some(entry) = index.entry_at(at) {
                        index.remove_at(at, hash_of);
                        assert_eq!(model.remove(&entry.key), Some(entry.slot));
                    }
                }
                _ => {
                    let from = choices.below(index.bucket_count());
                    let to = (from + choices.below(4)).min(index.bucket_count());
                    let mut taken = Vec::new();
                    let removed = index.remove_where(from..to, hash_of, |slot| {
                        let take = slot % 3 == 0;
                        if take {
                            taken.push(slot);
                        }
                        take
                    });
                    assert_eq!(removed, taken.len());
                    model.retain(|_, slot| !taken.contains(slot));
                }
            }
            if step % 4_999 == 0 {
                index.compact(hash_of, |slot| slot).unwrap();
            }
            assert_eq!(index.len(), model.len());
        }
        for key in 0..key_space as i64 {
            assert_eq!(
                index.get(key, hash_of(key)),
                model.get(&key).copied(),
                "key {key}"
            );
        }
    }

    #[test]
    fn removal_keeps_every_key_findable_under_random_churn() {
        churn_against_model(hash, 1);
    }

    #[test]
    fn removal_keeps_every_key_findable_in_long_runs_that_wrap_around() {
        // Half the keys share the last bucket as their home, so runs of full
        // buckets are long and wrap around the table's end; the rest collide
        // in a handful of home buckets.
        fn clustered(key: i64) -> u64 {
            if key % 2 == 0 {
                u64::MAX
            } else {
                (key as u64 % 7) << 61
            }
        }
        churn_against_model(clustered, 2);
    }

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn insert_get_remove_reinsert_across_growth() {
        let mut index = Index::new(Growth::Exact);
        let keys: Vec<i64> = (0..10_000).map(|k| k * 7919 - 5_000_000).collect();
        for (slot, &key) in keys.iter().enumerate() {
            reserve(&mut index, 1);
            assert_eq!(
                index.get_or_insert(key, hash(key), || slot as u32),
                (slot as u32, true)
            );
        }
        assert_eq!(index.len(), keys.len());
        for (slot, &key) in keys.iter().enumerate() {
            assert_eq!(index.get(key, hash(key)), Some(slot as u32));
            assert_eq!(
                index.get_or_insert(key, hash(key), || unreachable!()),
                (slot as u32, false)
            );
        }
        for &key in keys.iter().step_by(2) {
            assert!(index.remove(key, hash(key), hash).is_some());
            assert!(index.remove(key, hash(key), hash).is_none());
            assert_eq!(index.get(key, hash(key)), None);
        }
        assert_eq!(index.len(), keys.len() / 2);
        for (slot, &key) in keys.iter().enumerate().skip(1).step_by(2) {
            assert_eq!(index.get(key, hash(key)), Some(slot as u32));
        }
        // Removal frees its position, so churn does not grow the table.
        let buckets = index.bucket_count();
        for round in 0..20 {
            for &key in keys.iter().step_by(2) {
                reserve(&mut index, 1);
                index.get_or_insert(key, hash(key), || round);
            }
            for &key in keys.iter().step_by(2) {
                index.remove(key, hash(key), hash).unwrap();
            }
        }
        assert!(
            index.bucket_count() <= buckets * 2,
            "{} vs {buckets}",
            index.bucket_count()
        );
    }

    /// The keys whose entries carry the referenced bit, and every key's slot.
    fn referenced_keys_and_slots(index: &mut Index) -> (Vec<i64>, Vec<(i64, u32)>) {
        let (mut referenced, mut slots) = (Vec::new(), Vec::new());
        for at in 0..index.positions() {
            if let Some(entry) = index.entry_at(at) {
                if entry.referenced {
                    referenced.push(entry.key);
                }
                slots.push((entry.key, entry.slot));
            }
        }
        referenced.sort_unstable();
        slots.sort_unstable();
        (referenced, slots)
    }

    #[test]
    fn growth_and_compaction_keep_slots_and_referenced_bits() {
        let mut index = Index::new(Growth::Exact);
        reserve(&mut index, 3_000);
        for key in 0..3_000i64 {
            index.get_or_insert(key, hash(key), || key as u32 * 2);
        }
        let read: Vec<i64> = (0..3_000).filter(|key| key % 7 == 3).collect();
        for &key in &read {
            assert!(index.lookup::<true>(key, hash(key)).is_some());
        }
        let all: Vec<(i64, u32)> = (0..3_000).map(|key| (key, key as u32 * 2)).collect();
        assert_eq!(
            referenced_keys_and_slots(&mut index),
            (read.clone(), all.clone())
        );

        let buckets = index.bucket_count();
        reserve(&mut index, 5_000);
        assert!(index.bucket_count() > buckets);
        assert_eq!(referenced_keys_and_slots(&mut index), (read.clone(), all));

        index.compact(hash, |slot| slot / 2).unwrap();
        let moved: Vec<(i64, u32)> = (0..3_000).map(|key| (key, key as u32)).collect();
        assert_eq!(referenced_keys_and_slots(&mut index), (read, moved));
        for key in 0..3_000i64 {
            assert_eq!(index.get(key, hash(key)), Some(key as u32));
        }
    }

    #[test]
    fn staggered_sizes_are_the_next_rung_of_their_ladder() {
        for phase in [0.0, 0.25, 0.5, 0.99] {
            let mut previous = 1;
            for buckets in (1..300_000).step_by(97) {
                let size = staggered_size(buckets as f64, phase);
                assert!(size >= buckets && size >= previous, "{buckets} -> {size}");
                assert!(size as f64 <= STAGGERED_STEP * buckets as f64 + 1.0);
                if size > 1_000 {
                    let rung = (size as f64).ln() / STAGGERED_STEP.ln() - phase;
                    assert!((rung - rung.round()).abs() < 0.01, "{size} off the ladder");
                }
                previous = size;
            }
        }
    }

    /// How many times a fill of `keys` keys in batches of 256 moves each one.
    fn moves_per_key(growth: Growth, keys: i64) -> f64 {
        let mut index = Index::new(growth);
        let mut moved = 0;
        for start in (0..keys).step_by(256) {
            if let Some(grown) = index.grown_for(256, Sizing::Publish, hash).unwrap() {
                moved += index.len();
                index = grown;
            }
            for key in start..start + 256 {
                index.get_or_insert(key, hash(key), || key as u32);
            }
        }
        moved as f64 / keys as f64
    }

    #[test]
    fn a_staggered_table_moves_each_key_about_half_as_often_as_an_exact_one() {
        let staggered = moves_per_key(Growth::Staggered { phase: 0.3 }, 300_000);
        let exact = moves_per_key(Growth::Exact, 300_000);
        assert!(
            staggered < 4.5 && staggered < 0.6 * exact,
            "{staggered:.2} moves per key, {exact:.2} in 15% steps"
        );
    }

    #[test]
    fn a_size_on_the_ladder_is_its_own_staggered_size() {
        // A ladder size is its rung rounded up, so a table filled to the brim
        // of that size asks for that size again, not for the next rung.
        for phase in [0.0, 0.25, 0.5, 0.99] {
            for rung in 0..60 {
                let exact = STAGGERED_STEP.powf(rung as f64 + phase);
                let size = staggered_size(exact, phase);
                for buckets in [exact, (exact + size as f64) / 2.0, size as f64] {
                    assert_eq!(
                        staggered_size(buckets, phase),
                        size,
                        "{buckets}, phase {phase}"
                    );
                }
            }
        }
    }

    #[test]
    fn compacting_never_grows_a_table_nor_keeps_a_reservation() {
        let growths = [
            Growth::Exact,
            Growth::Staggered { phase: 0.0 },
            Growth::Staggered { phase: 0.4 },
            Growth::Staggered { phase: 0.8 },
        ];
        for growth in growths {
            let mut index = Index::new(growth);
            for key in 0..20_000i64 {
                reserve(&mut index, 1);
                index.get_or_insert(key, hash(key), || key as u32);
                // A full table is the edge: its size must hold its keys.
                if key % 331 == 0 || !index.has_room_for(1) {
                    let before = index.bucket_count();
                    let reserved = index.grown_for(50_000, Sizing::Reservation, hash).unwrap();
                    index = reserved.unwrap();
                    index.compact(hash, |slot| slot).unwrap();
                    assert!(index.bucket_count() <= before, "{key} keys, {growth:?}");
                    assert_eq!(index.get(key, hash(key)), Some(key as u32));
                }
            }
        }
    }

    #[test]
    fn a_zeroed_table_is_empty() {
        // On the heap and in a mapping of its own.
        for buckets in [1, 3, 5_000] {
            let mut index = Index {
                buckets: allocate_buckets(buckets).unwrap(),
                live: 0,
                growth: Growth::Exact,
            };
            assert!((0..index.positions()).all(|at| index.entry_at(at).is_none()));
            assert!((0..1_000).all(|key| index.get(key, hash(key)).is_none()));
            assert_eq!(index.get_or_insert(7, hash(7), || 0), (0, true));
            assert_eq!(index.get(7, hash(7)), Some(0));
        }
    }

    #[test]
    fn lookups_of_absent_keys_terminate_on_a_full_table() {
        let mut index = Index::new(Growth::Exact);
        let mut key = 0;
        while index.len() < 4 {
            index.get_or_insert(key, hash(key), || key as u32);
            key += 1;
        }
        for absent in 100..200 {
            assert_eq!(index.get(absent, hash(absent)), None);
        }
    }

    #[test]
    fn remove_where_takes_only_selected_entries() {
        let mut index = Index::new(Growth::Exact);
        reserve(&mut index, 100);
        for key in 0..100 {
            index.get_or_insert(key, hash(key), || key as u32);
        }
        let mut taken = Vec::new();
        let removed = index.remove_where(0..index.bucket_count(), hash, |slot| {
            let take = slot % 3 == 0;
            if take {
                taken.push(slot);
            }
            take
        });
        assert_eq!(removed, 34);
        taken.sort_unstable();
        assert_eq!(taken, (0..100).step_by(3).collect::<Vec<u32>>());
        for key in 0..100i64 {
            assert_eq!(index.get(key, hash(key)).is_some(), key % 3 != 0);
        }
    }
}
