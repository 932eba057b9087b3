//! One shard: an index and the rows it points to, guarded together by the
//! shard's lock in `Cache`, and the shard's part of capacity eviction.
//!
//! Capacity eviction is local to a shard: each shard holds at most its share
//! of the cache's capacity and picks victims among its own rows. Ids are
//! hashed uniformly over shards, so the shards fill evenly and a local choice
//! approximates the global one (a shard of `c` rows deviates from the mean by
//! about `sqrt(c)` rows, 0.2% at 250,000).
//!
//! Victims are found by a clock hand that walks the index positions and
//! resumes where it stopped. Under `LruApprox` an entry whose referenced bit
//! is set gets a second chance (the bit is cleared) and one whose bit is clear
//! is evicted; under `OldestTimestamp` the hand evicts entries stamped with the
//! shard's oldest timestamp, known from a per-timestamp row count.

use std::collections::BTreeMap;

use super::config::EvictionPolicy;
use super::index::Index;
use super::rows::RowArena;
use super::Error;

pub(crate) struct Shard {
    index: Index,
    rows: RowArena,
    policy: EvictionPolicy,
    /// Where the clock hand resumes.
    hand: usize,
    /// Rows per timestamp, kept under `OldestTimestamp` only.
    stamp_counts: BTreeMap<u32, usize>,
}

/// One publish's search for victims in a shard, carried across the stretches
/// between which readers are let in.
#[derive(Default)]
pub(crate) struct Sweep {
    /// `OldestTimestamp`: rows stamped at or before this are victims.
    threshold: Option<u32>,
    /// Positions passed since the last eviction or threshold move.
    idle_steps: usize,
    /// No unprotected row is left to take.
    pub(crate) exhausted: bool,
}

impl Shard {
    pub(crate) fn new(row_bytes: usize, policy: EvictionPolicy) -> Shard {
        Shard {
            index: Index::new(),
            rows: RowArena::new(row_bytes),
            policy,
            hand: 0,
            stamp_counts: BTreeMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The most a shard holding at most `rows` rows ever holds in memory under
    /// a capacity policy: the index never grows past the size a rebuild picks
    /// for that many keys, and the arena never past the chunks that hold them.
    pub(crate) fn memory_bytes_at_most(row_bytes: usize, rows: usize) -> usize {
        Index::memory_bytes_for(rows) + RowArena::new(row_bytes).memory_bytes_after_reserve(rows)
    }

    fn count_stamp(&mut self, stamp: u32) {
        if self.policy == EvictionPolicy::OldestTimestamp {
            *self.stamp_counts.entry(stamp).or_default() += 1;
        }
    }

    fn uncount_stamp(&mut self, stamp: u32) {
        if self.policy == EvictionPolicy::OldestTimestamp {
            if let std::collections::btree_map::Entry::Occupied(mut count) =
                self.stamp_counts.entry(stamp)
            {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.index.memory_bytes() + self.rows.memory_bytes()
    }

    #[inline]
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    #[inline]
    pub(crate) fn rows(&self) -> &RowArena {
        &self.rows
    }

    pub(crate) fn contains(&self, key: i64, hash: u64) -> bool {
        self.index.get(key, hash).is_some()
    }

    /// Bytes the shard would add to hold `new_rows` more rows.
    pub(crate) fn growth_for(&self, new_rows: usize) -> usize {
        let after = self.index.memory_bytes_after_reserve(new_rows)
            + self.rows.memory_bytes_after_reserve(new_rows);
        after - self.memory_bytes()
    }

    /// The index that makes room for `new_rows` more keys, when the current
    /// one has too little; built under the read lock (see `Index::grown_for`).
    pub(crate) fn grown_index(
        &self,
        new_rows: usize,
        hash_of: impl Fn(i64) -> u64,
    ) -> Result<Option<Index>, Error> {
        self.index.grown_for(new_rows, hash_of)
    }

    /// Allocates the rows `new_rows` insertions need and installs the index
    /// `grown_index` built for them, so that `upsert` cannot fail. On failure
    /// the shard is unchanged.
    pub(crate) fn reserve(
        &mut self,
        new_rows: usize,
        grown_index: Option<Index>,
    ) -> Result<(), Error> {
        self.rows.reserve(new_rows)?;
        if let Some(index) = grown_index {
            self.index = index;
        }
        Ok(())
    }

    /// Stores `row` for `key`; true when the key is new. Room was reserved.
    pub(crate) fn upsert(&mut self, key: i64, hash: u64, row: &[u8], timestamp: u32) -> bool {
        let rows = &mut self.rows;
        let (slot, inserted) = self.index.get_or_insert(key, hash, || rows.allocate());
        if !inserted {
            let old = self.rows.stamp(slot);
            self.uncount_stamp(old);
        }
        self.rows.row_mut(slot).copy_from_slice(row);
        *self.rows.stamp_mut(slot) = timestamp;
        self.count_stamp(timestamp);
        inserted
    }

    fn release(&mut self, slot: u32) {
        let stamp = self.rows.stamp(slot);
        self.uncount_stamp(stamp);
        self.rows.release(slot);
    }

    pub(crate) fn remove(&mut self, key: i64, hash: u64) -> bool {
        match self.index.remove(key, hash) {
            Some(slot) => {
                self.release(slot);
                true
            }
            None => false,
        }
    }

    /// Evicts up to `count` rows by the shard's policy, never one whose id
    /// `protected` holds (the ids a publish is about to overwrite), moving the
    /// hand at most `max_steps` positions so that the caller can let readers in
    /// between stretches; `sweep` carries the search across stretches. Returns
    /// how many rows it evicted.
    pub(crate) fn evict_for_room(
        &mut self,
        sweep: &mut Sweep,
        count: usize,
        max_steps: usize,
        protected: impl Fn(i64) -> bool,
    ) -> usize {
        let positions = self.index.positions();
        self.hand %= positions;
        let mut evicted = 0;
        for _ in 0..max_steps {
            if evicted == count || sweep.exhausted {
                break;
            }
            // Evictions may have emptied the oldest class meanwhile.
            sweep.threshold = sweep
                .threshold
                .max(self.stamp_counts.keys().next().copied());
            if sweep.idle_steps >= positions {
                // No timestamp follows u32::MAX: the classes are exhausted.
                let next = sweep
                    .threshold
                    .and_then(|t| t.checked_add(1))
                    .and_then(|after| {
                        self.stamp_counts
                            .range(after..)
                            .next()
                            .map(|(&next, _)| next)
                    });
                match self.policy {
                    // A round found only protected rows in the oldest class.
                    EvictionPolicy::OldestTimestamp if next.is_some() => {
                        sweep.threshold = next;
                        sweep.idle_steps = 0;
                    }
                    // One round cleared every referenced bit; a second one
                    // without an eviction means only protected rows are left.
                    EvictionPolicy::LruApprox if sweep.idle_steps < 2 * positions => {}
                    _ => {
                        sweep.exhausted = true;
                        break;
                    }
                }
            }
            let at = self.hand;
            self.hand = if at + 1 == positions { 0 } else { at + 1 };
            sweep.idle_steps += 1;
            let Some(entry) = self.index.entry_at(at) else {
                continue;
            };
            if protected(entry.key) {
                continue;
            }
            let victim = match self.policy {
                EvictionPolicy::LruApprox => {
                    if entry.referenced {
                        self.index.clear_reference(at);
                    }
                    !entry.referenced
                }
                EvictionPolicy::OldestTimestamp => sweep
                    .threshold
                    .is_some_and(|t| self.rows.stamp(entry.slot) <= t),
                EvictionPolicy::None => true,
            };
            if victim {
                self.index.remove_at(at);
                self.release(entry.slot);
                evicted += 1;
                sweep.idle_steps = 0;
            }
        }
        evicted
    }

    /// Packs the rows into as few chunks as they need and rebuilds the index for
    /// them. On failure (an allocation) the shard is unchanged.
    pub(crate) fn compact(
        &mut self,
        row_bytes: usize,
        hash_of: impl Fn(i64) -> u64,
    ) -> Result<(), Error> {
        let mut packed = RowArena::new(row_bytes);
        packed.reserve(self.index.len())?;
        let Shard { index, rows, .. } = self;
        index.compact(hash_of, |slot| {
            let moved = packed.allocate();
            packed.row_mut(moved).copy_from_slice(rows.row(slot));
            *packed.stamp_mut(moved) = rows.stamp(slot);
            moved
        })?;
        self.rows = packed;
        self.hand = 0;
        Ok(())
    }

    pub(crate) fn bucket_count(&self) -> usize {
        self.index.bucket_count()
    }

    /// Removes the rows stamped before `threshold` among the index buckets `from..to`.
    pub(crate) fn evict_older_than(
        &mut self,
        threshold: u32,
        buckets: std::ops::Range<usize>,
    ) -> usize {
        let Shard { index, rows, .. } = self;
        let expired = index.remove_where(buckets, |slot| {
            let expired = rows.stamp(slot) < threshold;
            if expired {
                rows.release(slot);
            }
            expired
        });
        // The caller sweeps every range before anything else changes the
        // shard, so every row stamped before the threshold is gone by then.
        self.stamp_counts.retain(|&stamp, _| stamp >= threshold);
        expired
    }
}
