//! Per-thread scratch for grouping a batch by shard.
//!
//! A batch is taken shard by shard so that each shard's lock is taken once per
//! batch, not once per id. The grouping is a counting sort of positions by
//! shard; it is stable, so within a shard the ids keep their batch order. A
//! publish then marks the earlier occurrences of a duplicate id
//! (`mark_superseded`) and writes only the last: it lets readers into a shard
//! between stretches of its group, and one let in between two occurrences
//! would otherwise find the earlier one's row, neither the old row nor the
//! new. A lookup window that holds all its shards at once keeps the batch's
//! order and only hashes its ids here (`hash_in_order`).
//!
//! Each id is copied next to its position, with its hash: a lookup then reads a
//! shard's ids in sequence, where gathering them by position missed the L1
//! cache on most ids and held the fill buffers the row prefetches need
//! (lookups measured 5% faster over a whole 4M-row table for the copy, 11-14%
//! when the rows read fit in the L3 cache).
//!
//! The buffers live in a thread-local and are reused, so a batch allocates
//! nothing once a thread has seen a batch of that size. A call reserves them
//! for its batch first (`reserve`), so that memory it cannot have fails the
//! call before it changes anything.

use std::cell::RefCell;

use super::fallible::reserve_to;
use super::Error;

/// Scratch kept per thread beyond this many ids is released after the batch,
/// so one huge publish does not pin memory in every thread that made one.
const RETAINED_IDS: usize = 1 << 16;

/// `order[k]` of a key whose id occurs again later in its shard's group: a
/// publish writes the later occurrence only. A batch holds at most `u32::MAX`
/// ids, so every batch position is below it.
pub(crate) const SUPERSEDED: u32 = u32::MAX;

/// An id of the batch with its hash.
#[derive(Clone, Copy, Default)]
pub(crate) struct HashedId {
    pub(crate) id: i64,
    pub(crate) hash: u64,
}

#[derive(Default)]
pub(crate) struct Grouping {
    /// The ids' hashes by batch position, while grouping.
    hashes: Vec<u64>,
    /// Batch positions, grouped by shard.
    pub(crate) order: Vec<u32>,
    /// `keys[k]` is the id at batch position `order[k]`, with its hash: a
    /// shard's ids are then read in sequence, not gathered by position. After
    /// `hash_in_order`, the id at position `k`.
    pub(crate) keys: Vec<HashedId>,
    /// `order[starts[s]..starts[s + 1]]` are the positions of shard `s`.
    starts: Vec<u32>,
    /// Per-shard scratch of the caller (a publish's new rows by shard).
    pub(crate) shard_counts: Vec<u32>,
    /// Shards a lookup found write-locked and comes back to.
    pub(crate) busy_shards: Vec<usize>,
    /// The ids of one group that `mark_superseded` has passed, an
    /// open-addressing set of key numbers plus one (0: an empty slot).
    passed: Vec<u32>,
}

impl Grouping {
    /// Makes room to group, or hash in order, batches of up to `ids` ids over
    /// `shards` shards without allocating.
    pub(crate) fn reserve(&mut self, ids: usize, shards: usize) -> Result<(), Error> {
        let what = || format!("scratch for a batch of {ids} ids");
        reserve_to(&mut self.hashes, ids, what)?;
        reserve_to(&mut self.order, ids, what)?;
        reserve_to(&mut self.keys, ids, what)?;
        reserve_to(&mut self.starts, shards + 1, what)?;
        reserve_to(&mut self.shard_counts, shards, what)?;
        reserve_to(&mut self.busy_shards, shards, what)
    }

    /// Whether `reserve` made room for `ids` ids over `shards` shards.
    fn has_room_for(&self, ids: usize, shards: usize) -> bool {
        let per_id = self
            .hashes
            .capacity()
            .min(self.order.capacity())
            .min(self.keys.capacity());
        per_id >= ids
            && self.starts.capacity() > shards
            && self.shard_counts.capacity() >= shards
            && self.busy_shards.capacity() >= shards
    }

    /// Groups `ids` (at most `u32::MAX` of them, room reserved) by the shard
    /// `shard_of` picks from the hash.
    pub(crate) fn group(
        &mut self,
        ids: &[i64],
        shards: usize,
        hash: impl Fn(i64) -> u64,
        shard_of: impl Fn(u64) -> usize,
    ) {
        debug_assert!(u32::try_from(ids.len()).is_ok());
        debug_assert!(self.has_room_for(ids.len(), shards));
        self.hashes.clear();
        self.hashes.extend(ids.iter().map(|&id| hash(id)));
        self.starts.clear();
        self.starts.resize(shards + 1, 0);
        for &h in &self.hashes {
            self.starts[shard_of(h) + 1] += 1;
        }
        for s in 0..shards {
            self.starts[s + 1] += self.starts[s];
        }
        self.order.clear();
        self.order.resize(ids.len(), 0);
        self.keys.clear();
        self.keys.resize(ids.len(), HashedId::default());
        // `starts[s]` serves as shard s's cursor and ends at the start of s + 1;
        // shifting back afterwards restores the starts.
        for (position, &h) in self.hashes.iter().enumerate() {
            let cursor = &mut self.starts[shard_of(h)];
            self.order[*cursor as usize] = position as u32;
            self.keys[*cursor as usize] = HashedId {
                id: ids[position],
                hash: h,
            };
            *cursor += 1;
        }
        self.starts.copy_within(0..shards, 1);
        self.starts[0] = 0;
    }

    /// Copies `ids` (room reserved) with their hashes into `keys`, in batch
    /// order: a lookup that holds every shard it reads at once takes them so.
    /// Returns the shards they touch, bit `s` for shard `s` (`shard_of` picks
    /// below 64).
    pub(crate) fn hash_in_order(
        &mut self,
        ids: &[i64],
        hash: impl Fn(i64) -> u64,
        shard_of: impl Fn(u64) -> usize,
    ) -> u64 {
        debug_assert!(self.keys.capacity() >= ids.len());
        self.keys.clear();
        let mut touched = 0u64;
        self.keys.extend(ids.iter().map(|&id| {
            let hash = hash(id);
            touched |= 1 << shard_of(hash);
            HashedId { id, hash }
        }));
        touched
    }

    /// In each shard's group of more than `longer_than` keys, sets `order` to
    /// `SUPERSEDED` at every key whose id occurs again later in the group.
    /// Fails, having changed nothing but this scratch, when the room to find
    /// them cannot be had.
    pub(crate) fn mark_superseded(&mut self, longer_than: usize) -> Result<(), Error> {
        let Some(longest) = self
            .shard_groups()
            .map(|(_, range)| range.len())
            .filter(|&len| len > longer_than)
            .max()
        else {
            return Ok(());
        };
        reserve_to(&mut self.passed, slots_for(longest), || {
            format!("a set of {longest} ids to find duplicates among")
        })?;
        for shard in 0..self.starts.len() - 1 {
            let range = self.range_of(shard);
            if range.len() > longer_than {
                self.mark_superseded_in(range);
            }
        }
        Ok(())
    }

    /// Walks the group at `range` from its last key to its first, marking the
    /// keys whose id it has passed already.
    fn mark_superseded_in(&mut self, range: std::ops::Range<usize>) {
        let slots = slots_for(range.len());
        self.passed.clear();
        self.passed.resize(slots, 0);
        // A group shares the shard's low hash bits; the high bits are uniform.
        let shift = u64::BITS - slots.ilog2();
        for k in range.rev() {
            let key = self.keys[k];
            let mut slot = (key.hash >> shift) as usize;
            loop {
                match self.passed[slot] {
                    0 => {
                        // k < the batch's length <= u32::MAX.
                        self.passed[slot] = k as u32 + 1;
                        break;
                    }
                    seen if self.keys[seen as usize - 1].id == key.id => {
                        self.order[k] = SUPERSEDED;
                        break;
                    }
                    _ => slot = (slot + 1) & (slots - 1),
                }
            }
        }
    }

    /// The shards the batch touches, in ascending order, with their positions.
    pub(crate) fn shard_groups(
        &self,
    ) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
        (0..self.starts.len().saturating_sub(1))
            .map(|shard| (shard, self.range_of(shard)))
            .filter(|(_, range)| !range.is_empty())
    }

    /// The positions of shard `shard`'s ids in `order`.
    pub(crate) fn range_of(&self, shard: usize) -> std::ops::Range<usize> {
        self.starts[shard] as usize..self.starts[shard + 1] as usize
    }

    fn trim(&mut self) {
        if self.hashes.capacity() > RETAINED_IDS {
            *self = Grouping::default();
        }
    }
}

/// Slots of the set that finds duplicates among `ids` ids: a power of two, at
/// least 2, that they fill to a quarter at most. (Filled up to two thirds,
/// its probes collided more: a republish of 4M rows in batches of 4096, no
/// readers, lost 5-10% of its throughput to the search, against about 4%.)
fn slots_for(ids: usize) -> usize {
    (ids * 4).next_power_of_two().max(2)
}

thread_local! {
    static SCRATCH: RefCell<Grouping> = RefCell::new(Grouping::default());
}

/// Runs `f` with this thread's scratch, or with fresh scratch when it is in use
/// (a call made from inside another) or already torn down (thread exit).
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Grouping) -> R) -> R {
    let mut f = Some(f);
    let reused = SCRATCH.try_with(|cell| {
        cell.try_borrow_mut().ok().map(|mut scratch| {
            let result = (f.take().expect("called once"))(&mut scratch);
            scratch.trim();
            result
        })
    });
    match reused {
        Ok(Some(result)) => result,
        _ => (f.take().expect("not called yet"))(&mut Grouping::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_is_a_stable_partition_by_shard() {
        let ids: Vec<i64> = (0..1000).map(|i| (i * 37) % 101).collect();
        let mut grouping = Grouping::default();
        grouping.reserve(ids.len(), 8).unwrap();
        grouping.group(&ids, 8, |id| id as u64, |h| (h % 8) as usize);
        let mut seen = vec![false; ids.len()];
        let mut last_shard = None;
        for (shard, range) in grouping.shard_groups() {
            assert!(last_shard < Some(shard));
            last_shard = Some(shard);
            let positions = &grouping.order[range.clone()];
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "stable order");
            for (&p, key) in positions.iter().zip(&grouping.keys[range]) {
                assert_eq!(
                    (key.id, key.hash),
                    (ids[p as usize], ids[p as usize] as u64)
                );
                assert_eq!(ids[p as usize] as usize % 8, shard);
                assert!(!std::mem::replace(&mut seen[p as usize], true));
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn hashing_in_order_keeps_the_batch_order_and_names_the_shards_touched() {
        let mut grouping = Grouping::default();
        grouping.reserve(50, 8).unwrap();
        // Left over from an earlier, longer batch.
        grouping.group(&[9; 50], 8, |id| id as u64, |h| (h % 8) as usize);
        let ids = [12, 5, 21, 5];
        let touched = grouping.hash_in_order(&ids, |id| id as u64 * 3, |h| (h % 8) as usize);
        let keys: Vec<(i64, u64)> = grouping.keys.iter().map(|k| (k.id, k.hash)).collect();
        assert_eq!(keys, [(12, 36), (5, 15), (21, 63), (5, 15)]);
        assert_eq!(touched, 1 << 4 | 1 << 7);
    }

    #[test]
    fn only_the_last_occurrence_of_an_id_in_a_long_group_stays_unmarked() {
        // Shard 0 gets the 11 even ids, two of them repeated; shard 1 the 3
        // odd ones, too few to search, though one is repeated too.
        let ids = [2, 4, 2, 1, 6, 3, 8, 2, 10, 1, 12, 4, 14, 16];
        let mut grouping = Grouping::default();
        grouping.reserve(ids.len(), 2).unwrap();
        let mix = |id: i64| (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | (id as u64 & 1);
        grouping.group(&ids, 2, mix, |h| (h & 1) as usize);
        grouping.mark_superseded(4).unwrap();
        let marked: Vec<(usize, i64)> = grouping
            .shard_groups()
            .flat_map(|(_, range)| range)
            .filter(|&k| grouping.order[k] == SUPERSEDED)
            .map(|k| (k, grouping.keys[k].id))
            .collect();
        // Shard 0 in batch order: 2 4 2 6 8 2 10 4 12 14 16.
        assert_eq!(marked, [(0, 2), (1, 4), (2, 2)]);
        let odd = grouping.range_of(1);
        assert_eq!(
            &grouping.order[odd],
            &[3, 5, 9],
            "a short group is left alone"
        );
    }

    #[test]
    fn nested_use_gets_its_own_scratch() {
        with_scratch(|outer| {
            outer.reserve(3, 2).unwrap();
            outer.group(&[1, 2, 3], 2, |id| id as u64, |h| (h % 2) as usize);
            with_scratch(|inner| {
                inner.reserve(1, 2).unwrap();
                inner.group(&[5], 2, |id| id as u64, |h| (h % 2) as usize);
                assert_eq!(inner.order, [0]);
            });
            assert_eq!(outer.order.len(), 3);
        });
    }
}
