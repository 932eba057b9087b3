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
//! resumes where it stopped. It visits the buckets in a scattered order, a
//! fixed stride coprime with the bucket count, so each revolution still passes
//! every position once: a hand walking buckets in address order empties the
//! region behind it while new keys land everywhere, which leaves the region
//! ahead of it packed solid, and in a linear-probing table a miss there reads
//! thousands of buckets (measured before this order: 3,500 on average).
//!
//! Under `LruApprox` an entry whose referenced bit is set gets a second chance
//! (the bit is cleared) and one whose bit is clear is evicted. Readers let in
//! between a publish's stretches may set the bits again behind the hand, so a
//! whole revolution without an eviction ends the second chances for the rest
//! of that publish's search: it then takes the rows in the hand's order. Under
//! `OldestTimestamp` the hand evicts entries stamped at or before a threshold
//! that a per-timestamp row count sets: the newest stamp whose rows and those
//! before it are all needed, or else the oldest, rising as evictions empty the
//! oldest stamps. The rows a publish overwrites are protected, so a revolution
//! may find only protected rows at or before the threshold; the next one then
//! collects the oldest stamps of the unprotected rows above it, and the
//! threshold moves to the newest of as many as are still needed. So a search
//! ends within a few revolutions however many stamps it passes. (Stepping to
//! the next stamp after each revolution took one revolution per stamp: 49 s
//! for a publish of the 40,000 ids of a full shard, each stamped apart, and one
//! new id.)

use std::collections::BinaryHeap;

use crate::prefetch::prefetch;

use super::config::EvictionPolicy;
use super::fallible::reserve_to;
use super::hash::IdHasher;
use super::index::{Growth, Index, ShardBits, Sizing, SlotSelector, BUCKET_WIDTH};
use super::rows::RowArena;
use super::stamps::StampCounts;
use super::Error;

pub(crate) struct Shard {
    index: Index,
    rows: RowArena,
    policy: EvictionPolicy,
    /// The position where the clock hand resumes.
    hand: usize,
    /// Rows per timestamp, kept under `OldestTimestamp` only.
    stamp_counts: StampCounts,
}

/// One publish's search for victims in a shard, carried across the stretches
/// between which readers are let in.
pub(crate) struct Sweep {
    /// `OldestTimestamp`: rows stamped at or before this are victims.
    threshold: Option<u32>,
    /// `OldestTimestamp`, when the collected stamps set the threshold: how
    /// many rows stamped exactly the threshold are still to go. More rows may
    /// share it than are needed, and those stamped before it go first.
    at_threshold: Option<usize>,
    /// Positions passed since the last eviction or threshold move.
    idle_steps: usize,
    /// `LruApprox`: a round passed without an eviction, so the sweep now takes
    /// rows whatever their referenced bits (see `evict_for_room`).
    ignore_references: bool,
    /// `OldestTimestamp`: a round found only protected rows at or before the
    /// threshold, so this one collects the oldest stamps of the unprotected
    /// rows above it in `later`, as many as are still needed.
    collecting: bool,
    later: BinaryHeap<u32>,
    /// No unprotected row is left to take.
    pub(crate) exhausted: bool,
}

impl Sweep {
    /// A search for up to `rows` victims under `policy`, holding the room it
    /// may need, so that nothing is allocated once evictions begin.
    pub(crate) fn new(policy: EvictionPolicy, rows: usize) -> Result<Sweep, Error> {
        let mut sweep = Sweep {
            threshold: None,
            at_threshold: None,
            idle_steps: 0,
            ignore_references: false,
            collecting: false,
            later: BinaryHeap::new(),
            exhausted: false,
        };
        if policy == EvictionPolicy::OldestTimestamp && rows > 0 {
            reserve_to(&mut sweep.later, rows, || {
                format!("the stamps of {rows} rows to evict")
            })?;
        }
        Ok(sweep)
    }

    /// Under `OldestTimestamp`, outside the threshold: keeps `stamp` among
    /// the oldest `needed` collected, if it is one and `unprotected` says so
    /// (asked last, as it costs a division and a lookup).
    fn collect(&mut self, stamp: u32, needed: usize, unprotected: impl FnOnce() -> bool) {
        if self.later.len() < needed {
            if unprotected() {
                debug_assert!(self.later.len() < self.later.capacity());
                self.later.push(stamp);
            }
        } else if let Some(mut newest) = self.later.peek_mut() {
            if stamp < *newest && unprotected() {
                *newest = stamp;
            }
        }
    }
}

/// The clock hand's order: all positions of a bucket, then the bucket
/// `stride` further on, modulo the bucket count.
struct HandWalk {
    buckets: usize,
    stride: usize,
}

impl HandWalk {
    fn over(buckets: usize) -> HandWalk {
        fn gcd(a: usize, b: usize) -> usize {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        // A stride near the golden section of the table keeps consecutive
        // buckets of the walk far apart; coprime, it reaches every bucket.
        let mut stride = ((buckets as f64 * 0.618) as usize).max(1);
        while gcd(stride, buckets) != 1 {
            stride += 1;
        }
        HandWalk { buckets, stride }
    }

    fn after(&self, position: usize) -> usize {
        if position % BUCKET_WIDTH + 1 < BUCKET_WIDTH {
            position + 1
        } else {
            self.bucket_ahead(position, 1) * BUCKET_WIDTH
        }
    }

    /// The bucket `steps` buckets after `position`'s on the walk.
    fn bucket_ahead(&self, position: usize, steps: usize) -> usize {
        (position / BUCKET_WIDTH + steps * self.stride) % self.buckets
    }
}

impl Shard {
    pub(crate) fn new(
        row_bytes: usize,
        hasher: IdHasher,
        policy: EvictionPolicy,
        growth: Growth,
        bits: ShardBits,
    ) -> Result<Shard, Error> {
        Ok(Shard {
            index: Index::new(growth, bits, hasher)?,
            rows: RowArena::new(row_bytes),
            policy,
            hand: 0,
            stamp_counts: StampCounts::default(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The most rows a shard of `row_bytes`-byte rows can address.
    pub(crate) fn addressable_rows(row_bytes: usize) -> usize {
        RowArena::new(row_bytes).max_rows()
    }

    /// The most a shard holding at most `rows` rows ever holds in memory under
    /// a capacity policy: the index never grows past the size a rebuild picks
    /// for that many keys, and the arena never past the capacity that holds
    /// them.
    pub(crate) fn memory_bytes_at_most(row_bytes: usize, rows: usize) -> usize {
        Index::memory_bytes_for(rows) + RowArena::new(row_bytes).memory_bytes_after_reserve(rows)
    }

    fn count_stamp(&mut self, stamp: u32) {
        if self.policy == EvictionPolicy::OldestTimestamp {
            self.stamp_counts.add(stamp);
        }
    }

    fn uncount_stamp(&mut self, stamp: u32) {
        if self.policy == EvictionPolicy::OldestTimestamp {
            self.stamp_counts.remove(stamp);
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

    pub(crate) fn contains(&self, hash: u64) -> bool {
        self.index.get(hash).is_some()
    }

    /// Whether `new_rows` more rows fit in the index and the arena as they are.
    pub(crate) fn has_room_for(&self, new_rows: usize) -> bool {
        self.index.has_room_for(new_rows) && self.rows.has_room_for(new_rows)
    }

    /// Bytes the shard would add to hold `new_rows` more rows.
    pub(crate) fn growth_for(&self, new_rows: usize) -> usize {
        let after = self
            .index
            .memory_bytes_after_reserve(new_rows, Sizing::Publish)
            + self.rows.memory_bytes_after_reserve(new_rows);
        after - self.memory_bytes()
    }

    /// Bytes the shard's index would add for a reservation of `new_rows`.
    pub(crate) fn reservation_growth_for(&self, new_rows: usize) -> usize {
        self.index
            .memory_bytes_after_reserve(new_rows, Sizing::Reservation)
            - self.index.memory_bytes()
    }

    /// Fails, as `reserve` would, when `new_rows` more rows would pass what
    /// the shard can address.
    pub(crate) fn check_addressable(&self, new_rows: usize) -> Result<(), Error> {
        self.rows.check_addressable(new_rows)
    }

    /// The index that makes room for `new_rows` more keys, when the current
    /// one has too little; built under the read lock (see `Index::grown_for`).
    pub(crate) fn grown_index(
        &self,
        new_rows: usize,
        sizing: Sizing,
    ) -> Result<Option<Index>, Error> {
        self.index.grown_for(new_rows, sizing)
    }

    /// Allocates room for `new_rows` new rows, the room to count their
    /// timestamp and the index's overflow room for `insertions` insertions
    /// (more than `new_rows` when evictions free slots for some), and
    /// installs the index `grown_index` built (for them, or for a
    /// reservation), so that the `upsert`s of one publish allocate nothing.
    /// On failure the shard holds the same rows and index; the rooms reserved
    /// before the failing allocation stay (the caller frees the overflow
    /// room: see `release_overflow_room`).
    pub(crate) fn reserve(
        &mut self,
        new_rows: usize,
        insertions: usize,
        mut grown_index: Option<Index>,
    ) -> Result<(), Error> {
        // First the rooms not counted in `memory_bytes`, so that having them
        // when the rows' allocation fails changes nothing a host sees.
        if self.policy == EvictionPolicy::OldestTimestamp {
            self.stamp_counts.reserve_one()?;
        }
        grown_index
            .as_mut()
            .unwrap_or(&mut self.index)
            .reserve_overflow(insertions)?;
        self.rows.reserve(new_rows)?;
        if let Some(index) = grown_index {
            debug_assert_eq!(index.len(), self.index.len());
            self.index = index;
        }
        Ok(())
    }

    /// Frees the overflow room `reserve` made when the list holds no key, as
    /// it does but for ids that defeat the hash.
    pub(crate) fn release_overflow_room(&mut self) {
        self.index.release_overflow_room();
    }

    /// Stores `row` for the id of `hash`; true when the id is new. Room was
    /// reserved.
    pub(crate) fn upsert(&mut self, hash: u64, row: &[u8], timestamp: u32) -> bool {
        let rows = &mut self.rows;
        let (slot, inserted) = self.index.get_or_insert(hash, || rows.allocate());
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

    pub(crate) fn remove(&mut self, hash: u64) -> bool {
        match self.index.remove(hash) {
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
        let walk = HandWalk::over(self.index.bucket_count());
        let mut evicted = 0;
        for _ in 0..max_steps {
            if evicted == count || sweep.exhausted {
                break;
            }
            if self.policy == EvictionPolicy::OldestTimestamp {
                let threshold = match sweep.threshold {
                    None => self.stamp_counts.newest_wholly_needed(count - evicted),
                    // Evictions may have emptied the oldest stamps meanwhile.
                    threshold => threshold.max(self.stamp_counts.oldest()),
                };
                if threshold != sweep.threshold {
                    sweep.threshold = threshold;
                    sweep.at_threshold = None;
                }
            }
            if sweep.idle_steps >= positions {
                match self.policy {
                    // A round found only protected rows at or before the
                    // threshold: collect where it goes next.
                    EvictionPolicy::OldestTimestamp if !sweep.collecting => {
                        sweep.collecting = true;
                        sweep.idle_steps = 0;
                    }
                    // The collecting round: on to the newest of the oldest
                    // unprotected stamps still needed, if any.
                    EvictionPolicy::OldestTimestamp if !sweep.later.is_empty() => {
                        let newest = sweep.later.peek().copied();
                        let at_newest = sweep.later.iter().filter(|&&s| Some(s) == newest);
                        sweep.at_threshold = Some(at_newest.count());
                        sweep.threshold = newest;
                        sweep.later.clear();
                        sweep.collecting = false;
                        sweep.idle_steps = 0;
                    }
                    // A round without an eviction cleared every referenced
                    // bit it met, but readers let in between stretches may
                    // have set them again as fast: from here on the sweep
                    // takes the rows the hand meets, read or not, and a
                    // round after that without an eviction means only
                    // protected rows are left.
                    EvictionPolicy::LruApprox if !sweep.ignore_references => {
                        sweep.ignore_references = true;
                        sweep.idle_steps = 0;
                    }
                    _ => {
                        sweep.exhausted = true;
                        break;
                    }
                }
            }
            let at = self.hand;
            self.hand = walk.after(at);
            if self.hand % BUCKET_WIDTH == 0 {
                // Each bucket on the walk is a cache miss; ask for a later one.
                prefetch(self.index.bucket_line(walk.bucket_ahead(self.hand, 4)));
            }
            sweep.idle_steps += 1;
            let Some(entry) = self.index.entry_at(at) else {
                continue;
            };
            let victim = match self.policy {
                EvictionPolicy::LruApprox => {
                    if entry.referenced {
                        self.index.clear_reference(at);
                    }
                    !entry.referenced || sweep.ignore_references
                }
                EvictionPolicy::OldestTimestamp => {
                    let stamp = self.rows.stamp(entry.slot);
                    let within = match sweep.threshold {
                        Some(t) if stamp < t => true,
                        Some(t) if stamp == t => sweep.at_threshold != Some(0),
                        _ => false,
                    };
                    if !within && sweep.collecting {
                        let index = &mut self.index;
                        sweep.collect(stamp, count - evicted, || !protected(index.id_at(at)));
                    }
                    within
                }
                EvictionPolicy::None => true,
            };
            // Asked last: an entry's id takes a division to get back.
            if victim && !protected(self.index.id_at(at)) {
                if let (Some(left), Some(threshold)) = (&mut sweep.at_threshold, sweep.threshold) {
                    if self.rows.stamp(entry.slot) == threshold {
                        *left -= 1;
                    }
                }
                self.index.remove_at(at);
                self.release(entry.slot);
                evicted += 1;
                sweep.idle_steps = 0;
            }
        }
        evicted
    }

    /// Packs the rows into an arena no larger than they need and rebuilds the
    /// index for them. On failure (an allocation) the shard is unchanged.
    pub(crate) fn compact(&mut self, row_bytes: usize) -> Result<(), Error> {
        let mut packed = RowArena::new(row_bytes);
        packed.reserve(self.index.len())?;
        let Shard { index, rows, .. } = self;
        index.compact(|slot| {
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
        let expired = index.remove_where(buckets, &mut Expired { rows, threshold });
        // The caller sweeps every range before anything else changes the
        // shard, so every row stamped before the threshold is gone by then.
        self.stamp_counts.forget_before(threshold);
        expired
    }
}

/// The rows stamped before `threshold`: what `evict_older_than` sweeps away.
struct Expired<'a> {
    rows: &'a mut RowArena,
    threshold: u32,
}

impl SlotSelector for Expired<'_> {
    fn coming(&self, slot: u32) {
        self.rows.prefetch_stamp(slot);
    }

    fn take(&mut self, slot: u32) -> bool {
        let expired = self.rows.stamp(slot) < self.threshold;
        if expired {
            self.rows.release(slot);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reserves what publishing `new_keys` new keys into `shard` needs.
    fn reserve_for(shard: &mut Shard, new_keys: usize) {
        let grown = shard.grown_index(new_keys, Sizing::Publish).unwrap();
        shard.reserve(new_keys, new_keys, grown).unwrap();
    }

    /// An empty shard of 8-byte rows, the only one of its cache.
    fn empty_shard(hasher: IdHasher, policy: EvictionPolicy) -> Shard {
        let bits = ShardBits { number: 0, bits: 0 };
        Shard::new(8, hasher, policy, Growth::Exact, bits).unwrap()
    }

    /// Capacity eviction's steady state: a full shard takes new keys, the
    /// clock evicting as many old ones, while reads mark every `read_every`th
    /// row recent. Misses must stay as cheap as in a table filled at random.
    fn continuous_eviction_keeps_misses_short(read_every: Option<usize>) {
        let hasher = IdHasher::new();
        let mut shard = empty_shard(hasher, EvictionPolicy::LruApprox);
        let rows = 50_000;
        let publish = |shard: &mut Shard, keys: std::ops::Range<i64>| {
            reserve_for(shard, keys.clone().count());
            for key in keys {
                shard.upsert(hasher.hash(key), &key.to_le_bytes(), 1);
            }
        };
        publish(&mut shard, 0..rows);
        let mut next = rows;
        for round in 0..200 {
            if let Some(every) = read_every {
                for key in (next - rows..next).step_by(every).skip(round % every) {
                    shard.index().lookup::<true>(hasher.hash(key));
                }
            }
            let mut sweep = Sweep::new(EvictionPolicy::LruApprox, 500).unwrap();
            let evicted = shard.evict_for_room(&mut sweep, 500, usize::MAX, |_| false);
            assert_eq!(evicted, 500);
            publish(&mut shard, next..next + 500);
            next += 500;
        }
        assert_eq!(shard.len(), rows as usize);
        let mut fresh = empty_shard(hasher, EvictionPolicy::LruApprox);
        publish(&mut fresh, next - rows..next);
        assert_eq!(fresh.bucket_count(), shard.bucket_count());
        let mean_miss = |shard: &Shard| {
            let probes: usize = (1..=10_000)
                .map(|key: i64| shard.index().probe_buckets(hasher.hash(-key)))
                .sum();
            probes as f64 / 10_000.0
        };
        let (churned, random) = (mean_miss(&shard), mean_miss(&fresh));
        assert!(
            churned < 1.5 * random,
            "a miss reads {churned:.2} buckets on average, {random:.2} in a table filled at random"
        );
    }

    #[test]
    fn first_in_first_out_eviction_keeps_misses_short() {
        // Unread rows leave in the order they came: the case where a hand
        // walking buckets in address order made misses read 3,500 buckets.
        continuous_eviction_keeps_misses_short(None);
    }

    #[test]
    fn second_chance_eviction_keeps_misses_short() {
        continuous_eviction_keeps_misses_short(Some(3));
    }

    /// A shard of `rows` rows under `OldestTimestamp`, row `key` stamped
    /// `key + 1`, each stamp apart.
    fn stamped_apart(rows: i64) -> (Shard, IdHasher) {
        let hasher = IdHasher::new();
        let mut shard = empty_shard(hasher, EvictionPolicy::OldestTimestamp);
        for key in 0..rows {
            reserve_for(&mut shard, 1);
            shard.upsert(hasher.hash(key), &key.to_le_bytes(), key as u32 + 1);
        }
        (shard, hasher)
    }

    #[test]
    fn the_hand_strides_near_the_golden_section_over_every_bucket() {
        for buckets in [1, 2, 3, 4, 10, 1_000, 1 << 16, 65_537, 3 * 5 * 7 * 11 * 13] {
            let walk = HandWalk::over(buckets);
            let golden = ((buckets as f64 * 0.618) as usize).max(1);
            assert!(
                (golden..golden + 64).contains(&walk.stride),
                "stride {} over {buckets} buckets",
                walk.stride
            );
            // Coprime to the count: every bucket once before the first again.
            let mut seen = vec![false; buckets];
            let mut bucket = 0;
            for _ in 0..buckets {
                assert!(!seen[bucket], "bucket {bucket} of {buckets} twice");
                seen[bucket] = true;
                bucket = walk.bucket_ahead(bucket * BUCKET_WIDTH, 1);
            }
            assert_eq!(bucket, 0);
        }
    }

    #[test]
    fn stamps_are_counted_under_oldest_timestamp_only() {
        // OLDEST_TIMESTAMP's search starts from the counts, which must follow
        // every publish, overwrite and removal; the other policies keep none.
        let (mut shard, hasher) = stamped_apart(100);
        assert_eq!(shard.stamp_counts.oldest(), Some(1));
        assert_eq!(shard.stamp_counts.newest_wholly_needed(10), Some(10));
        assert!(shard.remove(hasher.hash(0)));
        assert_eq!(shard.stamp_counts.oldest(), Some(2));
        reserve_for(&mut shard, 1);
        assert!(!shard.upsert(hasher.hash(1), &1_i64.to_le_bytes(), 200));
        assert_eq!(shard.stamp_counts.oldest(), Some(3));
        // Stamps 3 to 100 and the overwrite's 200: 99 rows.
        assert_eq!(shard.stamp_counts.newest_wholly_needed(98), Some(100));
        assert_eq!(shard.stamp_counts.newest_wholly_needed(99), Some(200));
        for policy in [EvictionPolicy::None, EvictionPolicy::LruApprox] {
            let mut other = empty_shard(hasher, policy);
            reserve_for(&mut other, 1);
            other.upsert(hasher.hash(5), &5_i64.to_le_bytes(), 7);
            assert_eq!(other.stamp_counts.oldest(), None, "{policy:?}");
        }
    }

    /// Searches `shard` for `count` victims a position at a time, as a
    /// publish does in stretches; returns how many it evicted and the
    /// positions the hand passed, in revolutions.
    fn search(shard: &mut Shard, count: usize, protected: impl Fn(i64) -> bool) -> (usize, f64) {
        let mut sweep = Sweep::new(shard.policy, count).unwrap();
        let (mut evicted, mut steps) = (0, 0);
        while evicted < count && !sweep.exhausted {
            evicted += shard.evict_for_room(&mut sweep, count - evicted, 1, &protected);
            steps += 1;
        }
        (evicted, steps as f64 / shard.index().positions() as f64)
    }

    #[test]
    fn a_search_past_many_stamps_of_protected_rows_ends_within_a_few_revolutions() {
        // Every row protected, each stamped apart: a search that steps to
        // the next stamp after each revolution takes one per stamp to give up.
        let (mut shard, _) = stamped_apart(2_000);
        let (evicted, revolutions) = search(&mut shard, 1, |_| true);
        assert_eq!(evicted, 0);
        assert!(revolutions <= 3.0, "{revolutions} revolutions");
        // The oldest unprotected rows, behind protected ones of every age.
        let protected = |key: i64| key % 2 == 1;
        let (evicted, revolutions) = search(&mut shard, 300, protected);
        assert_eq!(evicted, 300);
        assert!(revolutions <= 5.0, "{revolutions} revolutions");
        let (mut shard, hasher) = stamped_apart(2_000);
        search(&mut shard, 300, protected);
        for key in 0..2_000 {
            let evicted = !protected(key) && key < 600;
            assert_eq!(shard.contains(hasher.hash(key)), !evicted, "row {key}");
        }
    }

    #[test]
    fn rows_older_than_the_collected_threshold_go_before_those_that_share_it() {
        // 200 protected rows stamped 1, 100 stamped 2 and 1,000 stamped 3:
        // room for 150 takes the 100 stamped 2 and 50 of those stamped 3.
        // The collected threshold is 3; taking rows at or before it in the
        // hand's order took mostly rows stamped 3 and kept rows stamped 2.
        let hasher = IdHasher::new();
        let mut shard = empty_shard(hasher, EvictionPolicy::OldestTimestamp);
        let stamp_of = |key: i64| match key {
            0..200 => 1,
            200..300 => 2,
            _ => 3,
        };
        for keys in [0..200, 200..300, 300..1_300] {
            reserve_for(&mut shard, keys.clone().count());
            for key in keys {
                shard.upsert(hasher.hash(key), &key.to_le_bytes(), stamp_of(key));
            }
        }
        let (evicted, _) = search(&mut shard, 150, |key| key < 200);
        assert_eq!(evicted, 150);
        let left_at = |stamp: u32| {
            (0..1_300)
                .filter(|&key| stamp_of(key) == stamp && shard.contains(hasher.hash(key)))
                .count()
        };
        assert_eq!([left_at(1), left_at(2), left_at(3)], [200, 0, 950]);
    }

    /// Readers let in between a publish's stretches may read every row again
    /// before the hand comes back to it: the sweep must still make room, not
    /// give up with unprotected rows left.
    #[test]
    fn rows_read_again_between_stretches_are_still_evicted() {
        let hasher = IdHasher::new();
        let mut shard = empty_shard(hasher, EvictionPolicy::LruApprox);
        let keys = 0..2_000_i64;
        reserve_for(&mut shard, keys.clone().count());
        for key in keys.clone() {
            shard.upsert(hasher.hash(key), &key.to_le_bytes(), 1);
        }
        let read_all = |shard: &Shard| {
            for key in keys.clone() {
                shard.index().lookup::<true>(hasher.hash(key));
            }
        };
        // Every row but the first ten is protected; the hand must find those.
        let protected = |id: i64| id >= 10;
        let mut sweep = Sweep::new(EvictionPolicy::LruApprox, 10).unwrap();
        let mut evicted = 0;
        while evicted < 10 && !sweep.exhausted {
            read_all(&shard);
            evicted += shard.evict_for_room(&mut sweep, 10 - evicted, 64, protected);
        }
        assert_eq!(evicted, 10, "the sweep gave up with unprotected rows left");
        assert_eq!(shard.len(), 1_990);
        for key in keys.clone() {
            assert_eq!(
                shard.index().get(hasher.hash(key)).is_some(),
                protected(key)
            );
        }
        // With only protected rows left, the next search ends empty-handed.
        let mut sweep = Sweep::new(EvictionPolicy::LruApprox, 1).unwrap();
        while !sweep.exhausted {
            read_all(&shard);
            assert_eq!(shard.evict_for_room(&mut sweep, 1, 64, protected), 0);
        }
    }
}
