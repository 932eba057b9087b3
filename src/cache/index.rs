//! The per-shard index: an open-addressing table from id to row slot.
//!
//! A bucket is one 64-byte cache line holding five `(id, slot)` pairs, and probing
//! walks buckets linearly, so a lookup usually costs a single cache miss and the
//! slot it yields sits next to the key it matched (no second hop through a
//! control array, as a Swiss table would need). Removal leaves a tombstone, which
//! never moves another entry: an eviction scan that releases its lock between
//! stretches of buckets therefore never skips or revisits an entry.
//!
//! Lookups stop at the first bucket that has a never-used position: an entry is
//! always stored at the first free position of its probe path, and positions only
//! return to "never used" when the whole table is rebuilt.
//!
//! The bucket's last four bytes hold a "referenced" bit per entry for the
//! approximate-LRU policy: a lookup sets it in the cache line it has already
//! loaded, and only when it is clear, so a hot row costs no write at all.

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Error;

const BUCKET_WIDTH: usize = 5;
const NEVER_USED: u32 = u32::MAX;
const TOMBSTONE: u32 = u32::MAX - 1;
/// Slots are strictly below this value; the two above it mark free positions.
pub(crate) const SLOT_LIMIT: u32 = TOMBSTONE;

/// Used positions (live + tombstones) may fill at most this share of the table,
/// which keeps every probe sequence short and guarantees a never-used position.
const MAX_FILL: f64 = 0.92;
/// A rebuild sizes the table so that live entries fill this share of it.
const REBUILT_FILL: f64 = 0.8;

#[repr(C, align(64))]
struct Bucket {
    keys: [i64; BUCKET_WIDTH],
    slots: [u32; BUCKET_WIDTH],
    /// Bit `i`: entry `i` was read since the clock hand last passed it.
    referenced: AtomicU32,
}

fn empty_bucket() -> Bucket {
    Bucket {
        keys: [0; BUCKET_WIDTH],
        slots: [NEVER_USED; BUCKET_WIDTH],
        referenced: AtomicU32::new(0),
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
    buckets: Vec<Bucket>,
    live: usize,
    tombstones: usize,
}

/// Maps a hash onto `0..len` using its high bits; the shard is chosen from the
/// low bits, so the two choices stay independent.
#[inline]
fn home_bucket(hash: u64, len: usize) -> usize {
    ((u128::from(hash) * len as u128) >> 64) as usize
}

fn bucket_count_for(entries: usize) -> usize {
    ((entries as f64 / (BUCKET_WIDTH as f64 * REBUILT_FILL)).ceil() as usize).max(1)
}

fn max_used(bucket_count: usize) -> usize {
    (bucket_count as f64 * BUCKET_WIDTH as f64 * MAX_FILL) as usize
}

fn allocate_buckets(count: usize) -> Result<Vec<Bucket>, Error> {
    let mut buckets = Vec::new();
    buckets
        .try_reserve_exact(count)
        .map_err(|_| Error::out_of_memory(format!("index of {count} buckets")))?;
    buckets.resize_with(count, empty_bucket);
    Ok(buckets)
}

impl Index {
    pub(crate) fn new() -> Index {
        Index {
            buckets: vec![empty_bucket()],
            live: 0,
            tombstones: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }

    /// The size a table holding `keys` keys has at most when it only grows as
    /// far as a rebuild for that many keys takes it.
    pub(crate) fn memory_bytes_for(keys: usize) -> usize {
        bucket_count_for(keys) * std::mem::size_of::<Bucket>()
    }

    /// The first cache line a lookup of `hash` touches, for prefetching.
    #[inline]
    pub(crate) fn probe_start(&self, hash: u64) -> &impl Sized {
        &self.buckets[home_bucket(hash, self.buckets.len())]
    }

    #[inline]
    pub(crate) fn get(&self, key: i64, hash: u64) -> Option<u32> {
        let len = self.buckets.len();
        let mut at = home_bucket(hash, len);
        loop {
            let bucket = &self.buckets[at];
            // All five positions are compared without an early exit: where in
            // the bucket a key sits is random, and a branch on it would
            // mispredict on most lookups.
            let mut found = NEVER_USED;
            for (&k, &slot) in bucket.keys.iter().zip(&bucket.slots) {
                if k == key && slot < SLOT_LIMIT {
                    found = slot;
                }
            }
            if found != NEVER_USED {
                return Some(found);
            }
            if bucket.slots.contains(&NEVER_USED) {
                return None;
            }
            at = if at + 1 == len { 0 } else { at + 1 };
        }
    }

    /// [`get`](Self::get), also marking the entry as read for the clock.
    #[inline]
    pub(crate) fn get_touching(&self, key: i64, hash: u64) -> Option<u32> {
        let len = self.buckets.len();
        let mut at = home_bucket(hash, len);
        loop {
            let bucket = &self.buckets[at];
            // Branch-free, as in `get`.
            let (mut found, mut bit) = (NEVER_USED, 0u32);
            for (i, (&k, &slot)) in bucket.keys.iter().zip(&bucket.slots).enumerate() {
                if k == key && slot < SLOT_LIMIT {
                    found = slot;
                    bit = 1 << i;
                }
            }
            if found != NEVER_USED {
                if bucket.referenced.load(Ordering::Relaxed) & bit == 0 {
                    bucket.referenced.fetch_or(bit, Ordering::Relaxed);
                }
                return Some(found);
            }
            if bucket.slots.contains(&NEVER_USED) {
                return None;
            }
            at = if at + 1 == len { 0 } else { at + 1 };
        }
    }

    /// The bucket count a rebuild for `additional` more keys picks: the same
    /// count when dropping the tombstones makes room, else one sized for them.
    fn rebuilt_bucket_count(&self, additional: usize) -> usize {
        let wanted = self.live + additional;
        let current = self.buckets.len();
        if wanted as f64 <= (current * BUCKET_WIDTH) as f64 * REBUILT_FILL {
            current
        } else {
            bucket_count_for(wanted)
        }
    }

    /// Bytes the table would hold after `reserve(additional)`.
    pub(crate) fn memory_bytes_after_reserve(&self, additional: usize) -> usize {
        if self.live + self.tombstones + additional <= max_used(self.buckets.len()) {
            self.memory_bytes()
        } else {
            self.rebuilt_bucket_count(additional) * std::mem::size_of::<Bucket>()
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
        hash_of: impl Fn(i64) -> u64,
    ) -> Result<Option<Index>, Error> {
        if self.live + self.tombstones + additional <= max_used(self.buckets.len()) {
            return Ok(None);
        }
        let mut rebuilt = Index {
            buckets: allocate_buckets(self.rebuilt_bucket_count(additional))?,
            live: 0,
            tombstones: 0,
        };
        for bucket in &self.buckets {
            let referenced = bucket.referenced.load(Ordering::Relaxed);
            rebuilt.take_entries(bucket, referenced, &hash_of, |slot| slot);
        }
        Ok(Some(rebuilt))
    }

    /// Rebuilds the table for its live keys alone, moving each key's row to the
    /// slot `move_slot` returns: what compaction does.
    pub(crate) fn compact(
        &mut self,
        hash_of: impl Fn(i64) -> u64,
        move_slot: impl FnMut(u32) -> u32,
    ) -> Result<(), Error> {
        self.rebuild(bucket_count_for(self.live), hash_of, move_slot)
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
        let mut rebuilt = Index {
            buckets: allocate_buckets(bucket_count)?,
            live: 0,
            tombstones: 0,
        };
        for bucket in &mut self.buckets {
            let referenced = *bucket.referenced.get_mut();
            rebuilt.take_entries(bucket, referenced, &hash_of, &mut move_slot);
        }
        *self = rebuilt;
        Ok(())
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
        for (i, (&key, &slot)) in bucket.keys.iter().zip(&bucket.slots).enumerate() {
            if slot < SLOT_LIMIT {
                let at = self.insert_new(key, hash_of(key), move_slot(slot));
                if referenced & (1 << i) != 0 {
                    *self.buckets[at.bucket].referenced.get_mut() |= 1 << at.entry;
                }
            }
        }
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
        let mut free: Option<Position> = None;
        loop {
            let bucket = &self.buckets[at];
            for (entry, (&k, &slot)) in bucket.keys.iter().zip(&bucket.slots).enumerate() {
                if slot < SLOT_LIMIT {
                    if k == key {
                        return (Position { bucket: at, entry }, slot, false);
                    }
                } else if free.is_none() {
                    free = Some(Position { bucket: at, entry });
                }
            }
            if bucket.slots.contains(&NEVER_USED) {
                break;
            }
            at = if at + 1 == len { 0 } else { at + 1 };
        }
        let position = free.expect("a probe that meets a never-used position has found a free one");
        let Position { bucket, entry: i } = position;
        let bucket = &mut self.buckets[bucket];
        if bucket.slots[i] == TOMBSTONE {
            self.tombstones -= 1;
        } else {
            debug_assert!(
                self.live + self.tombstones < max_used(len),
                "insertion without a reservation"
            );
        }
        let slot = new_slot();
        bucket.keys[i] = key;
        bucket.slots[i] = slot;
        // A new entry has not been read yet, whatever the position held before.
        *bucket.referenced.get_mut() &= !(1 << i);
        self.live += 1;
        (position, slot, true)
    }

    /// Inserts a key known to be absent (a rebuild) and says where it went.
    fn insert_new(&mut self, key: i64, hash: u64, slot: u32) -> Position {
        let (position, stored, inserted) = self.find_or_insert(key, hash, || slot);
        debug_assert!(inserted && stored == slot, "rebuild met a key twice");
        position
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
        let slot = bucket.slots[entry];
        (slot < SLOT_LIMIT).then(|| Entry {
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

    /// Removes the live entry at `index`.
    pub(crate) fn remove_at(&mut self, index: usize) {
        let Position { bucket, entry } = Index::position(index);
        let slot = &mut self.buckets[bucket].slots[entry];
        debug_assert!(*slot < SLOT_LIMIT);
        *slot = TOMBSTONE;
        self.live -= 1;
        self.tombstones += 1;
    }

    pub(crate) fn remove(&mut self, key: i64, hash: u64) -> Option<u32> {
        let len = self.buckets.len();
        let mut at = home_bucket(hash, len);
        loop {
            let bucket = &mut self.buckets[at];
            for (k, slot) in bucket.keys.iter().zip(bucket.slots.iter_mut()) {
                if *k == key && *slot < SLOT_LIMIT {
                    let removed = *slot;
                    *slot = TOMBSTONE;
                    self.live -= 1;
                    self.tombstones += 1;
                    return Some(removed);
                }
            }
            if bucket.slots.contains(&NEVER_USED) {
                return None;
            }
            at = if at + 1 == len { 0 } else { at + 1 };
        }
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
        for bucket in &mut self.buckets[buckets] {
            for slot in &mut bucket.slots {
                if *slot < SLOT_LIMIT && take(*slot) {
                    *slot = TOMBSTONE;
                    removed += 1;
                }
            }
        }
        self.live -= removed;
        self.tombstones += removed;
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(key: i64) -> u64 {
        ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(key)
    }

    fn reserve(index: &mut Index, additional: usize) {
        if let Some(grown) = index.grown_for(additional, hash).unwrap() {
            *index = grown;
        }
    }

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn insert_get_remove_reinsert_across_growth() {
        let mut index = Index::new();
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
            assert!(index.remove(key, hash(key)).is_some());
            assert!(index.remove(key, hash(key)).is_none());
            assert_eq!(index.get(key, hash(key)), None);
        }
        assert_eq!(index.len(), keys.len() / 2);
        for (slot, &key) in keys.iter().enumerate().skip(1).step_by(2) {
            assert_eq!(index.get(key, hash(key)), Some(slot as u32));
        }
        // Tombstones are reused, so churn does not grow the table.
        let buckets = index.bucket_count();
        for round in 0..20 {
            for &key in keys.iter().step_by(2) {
                reserve(&mut index, 1);
                index.get_or_insert(key, hash(key), || round);
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

    #[test]
    fn lookups_of_absent_keys_terminate_on_a_full_table() {
        let mut index = Index::new();
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
        let mut index = Index::new();
        reserve(&mut index, 100);
        for key in 0..100 {
            index.get_or_insert(key, hash(key), || key as u32);
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
