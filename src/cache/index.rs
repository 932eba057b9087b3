//! The per-shard index: a table from id to row slot.
//!
//! A bucket is one 64-byte cache line holding five `(id, slot)` pairs. Every
//! id has two buckets, picked by independent bits of its hash, and sits in one
//! of them (bucketized cuckoo hashing), so a lookup asks for both lines at
//! once and never reads a third: two independent cache misses, where linear
//! probing made the 13% of ids that had left their home bucket at 80% fill
//! read one, two or more buckets in line, each waiting for the one before. In
//! the layout study (`benches/index_layouts.rs`, 4M rows) lookups through this
//! layout ran at 0.46x-0.50x of the dense limit at 80% and at 90% fill, against
//! 0.35x-0.38x for linear probing at 80%. The slot a lookup yields sits next to the
//! key it matched (no second hop through a control array, as a Swiss table
//! would need).
//!
//! An insertion takes the emptier of the id's two buckets; when both are full
//! it moves an entry of one to that entry's other bucket, and so on along a
//! random walk (cuckoo displacement). The table is at most `MAX_FILL` full,
//! where such walks are short; a walk that still finds no room within
//! `MAX_DISPLACEMENTS` places the entry it holds past its second bucket, in the
//! first bucket with room, and marks every bucket it passed (`PASSED`), which
//! sends the lookups that end at such a bucket on along the marks. Removal
//! just empties a position: nothing moves, so no tombstones are needed, and
//! churn never needs a rebuild to clear them.
//!
//! A large table lives in a mapping of its own, on transparent huge pages as
//! far as it spans whole ones (see `huge_pages`): a probe into those pages
//! rarely misses the TLB as well as the cache. Rounding tables up to whole huge
//! pages made lookups about 5% faster still at 4M rows, but cost 2 B/row there,
//! so tables keep the size their fill asks for.
//!
//! The bucket's last four bytes hold a "referenced" bit per entry for the
//! approximate-LRU policy: a lookup sets it in the cache line it has already
//! loaded, and only when it is clear, so a hot row costs no write at all. The
//! same word holds the bucket's `PASSED` mark.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Error;
use crate::huge_pages::HugePageArray;
use crate::prefetch::prefetch;

pub(crate) const BUCKET_WIDTH: usize = 5;
/// A position holds its row's slot plus one, and this marks a free position:
/// a fresh mapping, all zeros, is then an empty table that nobody writes
/// before its entries (writing `u32::MAX` into every position of every table
/// a fill grows cost about 4% of the fill).
const EMPTY: u32 = 0;
/// Slots are strictly below this value, so that a slot plus one fits.
pub(crate) const SLOT_LIMIT: u32 = u32::MAX;

/// Entries may fill at most this share of the table, which keeps cuckoo
/// displacement walks short and guarantees an empty position.
const MAX_FILL: f64 = 0.92;
/// The longest displacement walk an insertion makes before it places the
/// entry in hand past its second bucket. Walks are short: in a 4M-row fill
/// without a size hint, whose tables fill to `MAX_FILL` before they grow, 78%
/// of insertions found room at once, 19% after one displacement and all but
/// 0.3% within three, none went past its second bucket; this only bounds the
/// work of a pathological table (a tiny one whose ids share both buckets).
const MAX_DISPLACEMENTS: usize = 500;
/// The bit of a bucket's `marks` saying that an entry placed past its second
/// bucket went through it: a lookup that ends here without its id goes on.
const PASSED: u32 = 1 << 31;
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
    /// Bit `i`: entry `i` was read since the clock hand last passed it; and
    /// the `PASSED` mark.
    marks: AtomicU32,
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
        let matches = self.matches(key);
        (matches != 0).then(|| matches.trailing_zeros() as usize)
    }

    /// Bit `i` set where position `i` holds `key`.
    #[inline(always)]
    fn matches(&self, key: i64) -> u32 {
        let mut matches = 0u32;
        for (i, (&k, &slot)) in self.keys.iter().zip(&self.slots).enumerate() {
            matches |= u32::from(k == key && slot != EMPTY) << i;
        }
        matches
    }

    /// The first free position, if any.
    fn free_position(&self) -> Option<usize> {
        self.slots.iter().position(|&slot| slot == EMPTY)
    }

    /// How many positions are free.
    fn room(&self) -> usize {
        self.slots.iter().filter(|&&slot| slot == EMPTY).count()
    }

    fn passed(&self) -> bool {
        self.marks.load(Ordering::Relaxed) & PASSED != 0
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
            let marks = self.marks.load(Ordering::Relaxed);
            if marks & (1 << entry) == 0 {
                // A plain store, not `fetch_or`: a locked read-modify-write is a
                // full barrier on x86 and stalls the batch's prefetch pipeline.
                // Two readers racing on one bucket may lose one's bit, which
                // only costs that row its second chance. The `PASSED` mark
                // changes only under the write lock, so it is stored as read.
                self.marks.store(marks | 1 << entry, Ordering::Relaxed);
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

/// What a position holds: what a clock sweep finds there, or what an
/// insertion carries.
pub(crate) struct Entry {
    pub(crate) key: i64,
    pub(crate) slot: u32,
    pub(crate) referenced: bool,
}

pub(crate) struct Index {
    buckets: HugePageArray<Bucket>,
    live: usize,
    growth: Growth,
    /// The state of the displacement walks' choices (a splitmix64 stream).
    walk: u64,
}

/// Maps a hash onto `0..len` using its high bits.
#[inline(always)]
fn bucket_of(hash: u64, len: usize) -> usize {
    ((u128::from(hash) * len as u128) >> 64) as usize
}

/// The two buckets an id with hash `hash` may sit in: from the hash's top 32
/// bits and from its bottom 32. The shard is chosen from the lowest bits,
/// which the second bucket uses only in tables of billions of buckets.
#[inline(always)]
fn choices(hash: u64, len: usize) -> (usize, usize) {
    (bucket_of(hash, len), bucket_of(hash.rotate_left(32), len))
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
        Index::with_buckets(allocate_buckets(1).expect("memory for one bucket"), growth)
    }

    fn with_buckets(buckets: HugePageArray<Bucket>, growth: Growth) -> Index {
        Index {
            buckets,
            live: 0,
            growth,
            walk: 0x6b76_7a63_6375_636b,
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

    /// The two cache lines a lookup of `hash` reads, for prefetching.
    #[inline(always)]
    pub(crate) fn probe_lines(&self, hash: u64) -> (&impl Sized, &impl Sized) {
        let (first, second) = choices(hash, self.buckets.len());
        (&self.buckets[first], &self.buckets[second])
    }

    /// Where `key` is. Both of its buckets are compared in full and the match
    /// is chosen without a branch: which of the two holds an id is random, and
    /// a branch on it would mispredict on half the lookups.
    #[inline(always)]
    fn find(&self, key: i64, hash: u64) -> Option<Position> {
        let (first, second) = choices(hash, self.buckets.len());
        let (in_first, in_second) = (
            self.buckets[first].matches(key),
            self.buckets[second].matches(key),
        );
        // Selects the compiler makes conditional moves.
        let (bucket, matches) = if in_first != 0 {
            (first, in_first)
        } else {
            (second, in_second)
        };
        if matches != 0 {
            return Some(Position {
                bucket,
                entry: matches.trailing_zeros() as usize,
            });
        }
        if self.buckets[second].passed() {
            return self.find_past(key, second);
        }
        None
    }

    /// Looks for `key` along the buckets marked `PASSED` from `second`, its
    /// second bucket, on.
    #[cold]
    fn find_past(&self, key: i64, second: usize) -> Option<Position> {
        let len = self.buckets.len();
        let mut at = second;
        for _ in 1..len {
            if !self.buckets[at].passed() {
                return None;
            }
            at = next_bucket(at, len);
            if let Some(entry) = self.buckets[at].position_of(key) {
                return Some(Position { bucket: at, entry });
            }
        }
        None
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
            .map(|Position { bucket, entry }| self.buckets[bucket].read::<TOUCH>(entry))
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
            self.live,
        )?;
        let len = self.buckets.len();
        for (at, bucket) in self.buckets.iter().enumerate() {
            let marks = bucket.marks.load(Ordering::Relaxed);
            rebuilt.take_entries((at, len), bucket, marks, &hash_of, |slot| slot);
        }
        Ok(Some(rebuilt.finish(&hash_of)))
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
        let mut rebuilt = Rebuilding::new(bucket_count, self.growth, self.live)?;
        let len = self.buckets.len();
        for (at, bucket) in self.buckets.iter_mut().enumerate() {
            let marks = *bucket.marks.get_mut();
            rebuilt.take_entries((at, len), bucket, marks, &hash_of, &mut move_slot);
        }
        *self = rebuilt.finish(&hash_of);
        Ok(())
    }

    /// Returns the slot stored for `key`, or stores `new_slot()` for it.
    /// The caller has reserved room for the insertion.
    pub(crate) fn get_or_insert(
        &mut self,
        key: i64,
        hash: u64,
        new_slot: impl FnOnce() -> u32,
        hash_of: impl Fn(i64) -> u64,
    ) -> (u32, bool) {
        if let Some(Position { bucket, entry }) = self.find(key, hash) {
            return (slot_in(self.buckets[bucket].slots[entry]), false);
        }
        debug_assert!(
            self.live < max_live(self.buckets.len()),
            "insertion without a reservation"
        );
        let slot = new_slot();
        let entry = Entry {
            key,
            slot,
            // A new entry has not been read yet.
            referenced: false,
        };
        self.insert_new(entry, hash, hash_of);
        (slot, true)
    }

    /// Stores `entry`, whose key is absent and hashes to `hash`, in the
    /// emptier of its buckets, displacing entries along a random walk when
    /// both are full.
    fn insert_new(&mut self, mut entry: Entry, hash: u64, hash_of: impl Fn(i64) -> u64) {
        let len = self.buckets.len();
        let (first, second) = choices(hash, len);
        let mut at = if self.buckets[second].room() > self.buckets[first].room() {
            second
        } else {
            first
        };
        for _ in 0..MAX_DISPLACEMENTS {
            entry = match self.put_if_room(at, entry) {
                Ok(()) => return,
                Err(entry) => entry,
            };
            // `at` is full: the entry takes the place of one that can move to
            // its other bucket, which is carried on there.
            let Some((victim, other)) = self.displaceable(at, &hash_of) else {
                break;
            };
            let position = Position {
                bucket: at,
                entry: victim,
            };
            let displaced = self.take(position);
            self.put(position, entry);
            entry = displaced;
            at = other;
        }
        self.place_past_second(entry, &hash_of);
    }

    /// Stores `entry` at a free position of bucket `at`, or gives it back
    /// when the bucket is full.
    fn put_if_room(&mut self, at: usize, entry: Entry) -> Result<(), Entry> {
        match self.buckets[at].free_position() {
            Some(free) => {
                self.put(
                    Position {
                        bucket: at,
                        entry: free,
                    },
                    entry,
                );
                self.live += 1;
                Ok(())
            }
            None => Err(entry),
        }
    }

    /// An entry of full bucket `at` that sits in one of its own two buckets,
    /// other than `at`, and that other bucket; `None` when no entry of `at`
    /// has another bucket to go to. One whose other bucket has room comes
    /// first, which ends the walk: all five are asked for at once, so a step
    /// costs one cache miss's wait instead of one per bucket tried (a 4M-row
    /// fill without a size hint, whose tables fill to `MAX_FILL` before they
    /// grow, ran at 4.4 M rows/s against 3.0 with a random entry alone, both
    /// before rebuilds walked the new table in order).
    /// Otherwise a random one, so that walks do not cycle.
    fn displaceable(&mut self, at: usize, hash_of: &impl Fn(i64) -> u64) -> Option<(usize, usize)> {
        let len = self.buckets.len();
        let mut others = [None; BUCKET_WIDTH];
        for (entry, other) in others.iter_mut().enumerate() {
            let (first, second) = choices(hash_of(self.buckets[at].keys[entry]), len);
            *other = match (first == at, second == at) {
                (true, false) => Some(second),
                (false, true) => Some(first),
                _ => None,
            };
            if let Some(other) = *other {
                prefetch(&self.buckets[other]);
            }
        }
        let with_room = others.iter().enumerate().find_map(|(entry, &other)| {
            other
                .filter(|&other| self.buckets[other].free_position().is_some())
                .map(|other| (entry, other))
        });
        if with_room.is_some() {
            return with_room;
        }
        self.walk = self.walk.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.walk;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let start = ((z ^ (z >> 31)) % BUCKET_WIDTH as u64) as usize;
        (0..BUCKET_WIDTH)
            .map(|i| (start + i) % BUCKET_WIDTH)
            .find_map(|entry| others[entry].map(|other| (entry, other)))
    }

    /// Stores `entry` in the first bucket with room after its second one,
    /// marking the second and every full bucket between as `PASSED`.
    #[cold]
    fn place_past_second(&mut self, mut entry: Entry, hash_of: &impl Fn(i64) -> u64) {
        let len = self.buckets.len();
        let (_, mut at) = choices(hash_of(entry.key), len);
        loop {
            *self.buckets[at].marks.get_mut() |= PASSED;
            at = next_bucket(at, len);
            entry = match self.put_if_room(at, entry) {
                Ok(()) => return,
                Err(entry) => entry,
            };
        }
    }

    /// Writes `entry` at the free position `to`.
    fn put(&mut self, to: Position, entry: Entry) {
        let bucket = &mut self.buckets[to.bucket];
        bucket.keys[to.entry] = entry.key;
        bucket.slots[to.entry] = stored(entry.slot);
        let marks = bucket.marks.get_mut();
        *marks = *marks & !(1 << to.entry) | u32::from(entry.referenced) << to.entry;
    }

    /// Empties the taken position `at` and returns what it held.
    fn take(&mut self, at: Position) -> Entry {
        let bucket = &mut self.buckets[at.bucket];
        let slot = slot_in(bucket.slots[at.entry]);
        bucket.slots[at.entry] = EMPTY;
        let marks = bucket.marks.get_mut();
        let referenced = *marks & (1 << at.entry) != 0;
        *marks &= !(1 << at.entry);
        Entry {
            key: bucket.keys[at.entry],
            slot,
            referenced,
        }
    }

    /// Bucket `bucket`'s cache line, for prefetching.
    pub(crate) fn bucket_line(&self, bucket: usize) -> &impl Sized {
        &self.buckets[bucket]
    }

    /// Buckets a lookup of `hash` reads before it can answer.
    #[cfg(test)]
    pub(crate) fn probe_buckets(&self, hash: u64) -> usize {
        let len = self.buckets.len();
        let (_, mut at) = choices(hash, len);
        let mut read = 2;
        while self.buckets[at].passed() && read <= len {
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
            referenced: *bucket.marks.get_mut() & (1 << entry) != 0,
        })
    }

    /// Gives the entry at `index` a second chance: the clock passed it.
    pub(crate) fn clear_reference(&mut self, index: usize) {
        let Position { bucket, entry } = Index::position(index);
        *self.buckets[bucket].marks.get_mut() &= !(1 << entry);
    }

    /// Removes the live entry at `index`.
    pub(crate) fn remove_at(&mut self, index: usize) {
        debug_assert!(self.entry_at(index).is_some());
        self.take(Index::position(index));
        self.live -= 1;
    }

    /// Removes `key`; returns the slot it had.
    pub(crate) fn remove(&mut self, key: i64, hash: u64) -> Option<u32> {
        let at = self.find(key, hash)?;
        self.live -= 1;
        Some(self.take(at).slot)
    }

    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Removes, within `buckets`, every entry whose slot `take` accepts; `take`
    /// owns each slot it accepts.
    pub(crate) fn remove_where(
        &mut self,
        buckets: Range<usize>,
        mut take: impl FnMut(u32) -> bool,
    ) -> usize {
        let mut removed = 0;
        for bucket in buckets {
            for entry in 0..BUCKET_WIDTH {
                if self.buckets[bucket].slot(entry).is_some_and(&mut take) {
                    self.take(Position { bucket, entry });
                    removed += 1;
                }
            }
        }
        self.live -= removed;
        removed
    }
}

/// A new table being filled with another's entries, taken in the other's
/// bucket order. An entry goes to the bucket of the new table that
/// corresponds to the one it leaves (its first bucket for its first, its
/// second for its second), so the writes walk the new table in order as well
/// instead of landing at random; to its other bucket when that one is full;
/// and when both are, it waits until the others are in (`finish`).
struct Rebuilding {
    index: Index,
    /// Each bucket's count of taken positions, while no displacement has moved
    /// entries between buckets: a rebuild fills each bucket from its first
    /// position on, so that count is its first empty position. Kept apart from
    /// the table, because reading a bucket's slots right after writing one of
    /// them stalls on the store (a wide load cannot be forwarded from a
    /// narrower store), which made rebuilds twice as slow.
    taken: Vec<u8>,
    /// Entries both of whose buckets were full when they came.
    deferred: Vec<Entry>,
}

impl Rebuilding {
    /// Allocates all it needs for `entries` entries, so that filling it
    /// cannot fail.
    fn new(bucket_count: usize, growth: Growth, entries: usize) -> Result<Rebuilding, Error> {
        let mut taken = Vec::new();
        taken
            .try_reserve_exact(bucket_count)
            .map_err(|_| Error::out_of_memory(format!("fill counts of {bucket_count} buckets")))?;
        taken.resize(bucket_count, 0);
        // Few entries find both buckets full: 0.26% of the 15.1M entries the
        // rebuilds of a 4M-row fill moved. Past this room, entries are
        // displaced into place as they come.
        let room = entries / 16 + BUCKET_WIDTH;
        let mut deferred = Vec::new();
        deferred
            .try_reserve_exact(room)
            .map_err(|_| Error::out_of_memory(format!("{room} deferred entries")))?;
        Ok(Rebuilding {
            index: Index::with_buckets(allocate_buckets(bucket_count)?, growth),
            taken,
            deferred,
        })
    }

    /// Inserts the live entries of bucket `from.0` of another table of
    /// `from.1` buckets, whose marks are `marks`, keeping their referenced
    /// bits, at the slots `move_slot` gives them.
    fn take_entries(
        &mut self,
        from: (usize, usize),
        bucket: &Bucket,
        marks: u32,
        hash_of: &impl Fn(i64) -> u64,
        mut move_slot: impl FnMut(u32) -> u32,
    ) {
        let len = self.taken.len();
        for (i, &key) in bucket.keys.iter().enumerate() {
            let Some(slot) = bucket.slot(i) else {
                continue;
            };
            let hash = hash_of(key);
            debug_assert!(
                self.index.get(key, hash).is_none(),
                "rebuild met a key twice"
            );
            let entry = Entry {
                key,
                slot: move_slot(slot),
                referenced: marks >> i & 1 != 0,
            };
            if self.taken.is_empty() {
                self.index.insert_new(entry, hash, hash_of);
                continue;
            }
            let (first, second) = choices(hash, len);
            let (near, far) = if choices(hash, from.1).0 == from.0 {
                (first, second)
            } else {
                (second, first)
            };
            let at = match (self.taken[near], self.taken[far]) {
                (taken, _) if usize::from(taken) < BUCKET_WIDTH => near,
                (_, taken) if usize::from(taken) < BUCKET_WIDTH => far,
                _ if self.deferred.len() < self.deferred.capacity() => {
                    self.deferred.push(entry);
                    continue;
                }
                _ => {
                    // Out of room to defer: displace from now on, which the
                    // counts would not follow.
                    self.taken = Vec::new();
                    self.index.insert_new(entry, hash, hash_of);
                    continue;
                }
            };
            let position = Position {
                bucket: at,
                entry: usize::from(self.taken[at]),
            };
            self.taken[at] += 1;
            self.index.put(position, entry);
            self.index.live += 1;
        }
    }

    /// The table, once the deferred entries are displaced into place.
    fn finish(mut self, hash_of: &impl Fn(i64) -> u64) -> Index {
        for entry in self.deferred.drain(..) {
            let hash = hash_of(entry.key);
            self.index.insert_new(entry, hash, hash_of);
        }
        self.index
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
                    let (slot, inserted) = index.get_or_insert(key, hash_of(key), || step, hash_of);
                    assert_eq!(inserted, !model.contains_key(&key));
                    model.entry(key).or_insert(step);
                    assert_eq!(slot, model[&key]);
                }
                5..=6 => {
                    assert_eq!(index.remove(key, hash_of(key)), model.remove(&key));
                }
                7..=8 => {
                    let at = choices.below(index.positions());
                    if let Some(entry) = index.entry_at(at) {
                        index.remove_at(at);
                        assert_eq!(model.remove(&entry.key), Some(entry.slot));
                    }
                }
                _ => {
                    let from = choices.below(index.bucket_count());
                    let to = (from + choices.below(4)).min(index.bucket_count());
                    let mut taken = Vec::new();
                    let removed = index.remove_where(from..to, |slot| {
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
    fn keys_placed_past_their_buckets_stay_findable_across_the_table_end() {
        // Half the keys have the last bucket as both of their buckets, so
        // most of them are placed past it, at the table's start; the rest
        // share a handful of bucket pairs.
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
                index.get_or_insert(key, hash(key), || slot as u32, hash),
                (slot as u32, true)
            );
        }
        assert_eq!(index.len(), keys.len());
        for (slot, &key) in keys.iter().enumerate() {
            assert_eq!(index.get(key, hash(key)), Some(slot as u32));
            assert_eq!(
                index.get_or_insert(key, hash(key), || unreachable!(), hash),
                (slot as u32, false)
            );
        }
        for &key in keys.iter().step_by(2) {
            assert!(index.remove(key, hash(key)).is_some());
            assert!(index.remove(key, hash(key)).is_none());
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
                index.get_or_insert(key, hash(key), || round, hash);
            }
            for &key in keys.iter().step_by(2) {
                index.remove(key, hash(key)).unwrap();
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
            index.get_or_insert(key, hash(key), || key as u32 * 2, hash);
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
                index.get_or_insert(key, hash(key), || key as u32, hash);
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
                index.get_or_insert(key, hash(key), || key as u32, hash);
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
            let mut index = Index::with_buckets(allocate_buckets(buckets).unwrap(), Growth::Exact);
            assert!((0..index.positions()).all(|at| index.entry_at(at).is_none()));
            assert!((0..1_000).all(|key| index.get(key, hash(key)).is_none()));
            assert_eq!(index.get_or_insert(7, hash(7), || 0, hash), (0, true));
            assert_eq!(index.get(7, hash(7)), Some(0));
        }
    }

    #[test]
    fn lookups_of_absent_keys_terminate_on_a_full_table() {
        let mut index = Index::new(Growth::Exact);
        let mut key = 0;
        while index.len() < 4 {
            index.get_or_insert(key, hash(key), || key as u32, hash);
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
            index.get_or_insert(key, hash(key), || key as u32, hash);
        }
        let mut taken = Vec::new();
        let removed = index.remove_where(0..index.bucket_count(), |slot| {
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
