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

use std::ops::Range;

use super::Error;

const BUCKET_WIDTH: usize = 5;
const NEVER_USED: u32 = u32::MAX;
const TOMBSTONE: u32 = u32::MAX - 1;
/// Slots are strictly below this value; the two above it mark free positions.
pub(crate) const SLOT_LIMIT: u32 = TOMBSTONE;

/// Used positions (live + tombstones) may fill at most this share of the table,
/// which keeps every probe sequence short and guarantees a never-used position.
const MAX_FILL: f64 = 0.9;
/// A rebuild sizes the table so that live entries fill this share of it.
const REBUILT_FILL: f64 = 0.7;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    keys: [i64; BUCKET_WIDTH],
    slots: [u32; BUCKET_WIDTH],
}

const EMPTY_BUCKET: Bucket = Bucket {
    keys: [0; BUCKET_WIDTH],
    slots: [NEVER_USED; BUCKET_WIDTH],
};

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
    buckets.resize(count, EMPTY_BUCKET);
    Ok(buckets)
}

impl Index {
    pub(crate) fn new() -> Index {
        Index {
            buckets: vec![EMPTY_BUCKET],
            live: 0,
            tombstones: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
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

    /// Bytes the table would hold after `reserve(additional)`.
    pub(crate) fn memory_bytes_after_reserve(&self, additional: usize) -> usize {
        if self.live + self.tombstones + additional <= max_used(self.buckets.len()) {
            self.memory_bytes()
        } else {
            bucket_count_for(self.live + additional) * std::mem::size_of::<Bucket>()
        }
    }

    /// Makes room so that `additional` new keys can be inserted without
    /// allocating; on failure the index is unchanged.
    pub(crate) fn reserve(
        &mut self,
        additional: usize,
        hash_of: impl Fn(i64) -> u64,
    ) -> Result<(), Error> {
        if self.live + self.tombstones + additional <= max_used(self.buckets.len()) {
            return Ok(());
        }
        let mut rebuilt = Index {
            buckets: allocate_buckets(bucket_count_for(self.live + additional))?,
            live: 0,
            tombstones: 0,
        };
        for bucket in &self.buckets {
            for (&key, &slot) in bucket.keys.iter().zip(&bucket.slots) {
                if slot < SLOT_LIMIT {
                    rebuilt.insert_new(key, hash_of(key), slot);
                }
            }
        }
        *self = rebuilt;
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
        let len = self.buckets.len();
        let mut at = home_bucket(hash, len);
        let mut free: Option<(usize, usize)> = None;
        loop {
            let bucket = &self.buckets[at];
            for (i, (&k, &slot)) in bucket.keys.iter().zip(&bucket.slots).enumerate() {
                if slot < SLOT_LIMIT {
                    if k == key {
                        return (slot, false);
                    }
                } else if free.is_none() {
                    free = Some((at, i));
                }
            }
            if bucket.slots.contains(&NEVER_USED) {
                break;
            }
            at = if at + 1 == len { 0 } else { at + 1 };
        }
        let (at, i) = free.expect("a probe that meets a never-used position has found a free one");
        let bucket = &mut self.buckets[at];
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
        self.live += 1;
        (slot, true)
    }

    fn insert_new(&mut self, key: i64, hash: u64, slot: u32) {
        let (stored, inserted) = self.get_or_insert(key, hash, || slot);
        debug_assert!(inserted && stored == slot, "rebuild met a key twice");
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

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn insert_get_remove_reinsert_across_growth() {
        let mut index = Index::new();
        let keys: Vec<i64> = (0..10_000).map(|k| k * 7919 - 5_000_000).collect();
        for (slot, &key) in keys.iter().enumerate() {
            index.reserve(1, hash).unwrap();
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
                index.reserve(1, hash).unwrap();
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
        index.reserve(100, hash).unwrap();
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
