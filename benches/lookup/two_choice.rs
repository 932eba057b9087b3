//! A table from id to dense row number in the layout kvzch's index had until
//! it took hash remainders (598b97e): 64-byte buckets of five (id, row + 1)
//! pairs, each id in one of two buckets (bucketized cuckoo hashing), on
//! transparent huge pages. A lookup asks for both buckets at once and
//! compares both. The lookup suite's `indexed_limit` finds the limit's rows
//! through one at that index's fill; `benches/index_layouts.rs` weighs it
//! against linear probing (`key_buckets`), kvzch's layout before it.

use crate::indexed_limit::{Profile, RowIndex};
use crate::key_buckets::{Bucket, BucketTable, BUCKET_WIDTH};
use crate::prefetch::prefetch;

pub struct TwoChoiceBuckets {
    table: BucketTable<Bucket>,
    profile: Profile,
    /// The displacement walks' choices (a splitmix64 stream).
    walk: u64,
}

impl TwoChoiceBuckets {
    /// An empty table with room for `ids` ids at `fill` (their share of its
    /// positions).
    pub fn new(ids: usize, fill: f64) -> TwoChoiceBuckets {
        let table = BucketTable::new(ids, BUCKET_WIDTH, fill);
        let profile = Profile::new(table.bytes());
        TwoChoiceBuckets {
            table,
            profile,
            walk: 0,
        }
    }

    /// The two buckets of an id: from its hash's top and bottom 32 bits, as
    /// kvzch's two-choice index took them.
    #[inline(always)]
    fn choices(&self, hash: u64) -> (usize, usize) {
        (self.table.home(hash), self.table.home(hash.rotate_left(32)))
    }

    /// An entry of full bucket `at` that can move to its other bucket, and
    /// that bucket: one whose other bucket has room if any, else a random one.
    fn displaceable(&mut self, at: usize) -> Option<(usize, usize)> {
        let others: [Option<usize>; BUCKET_WIDTH] = std::array::from_fn(|entry| {
            let (first, second) =
                self.choices(crate::key_buckets::hash(self.table.buckets()[at].id(entry)));
            match (first == at, second == at) {
                (true, false) => Some(second),
                (false, true) => Some(first),
                _ => None,
            }
        });
        let buckets = self.table.buckets();
        let with_room = (0..BUCKET_WIDTH).find_map(|entry| {
            others[entry]
                .filter(|&other| buckets[other].free_position().is_some())
                .map(|other| (entry, other))
        });
        self.walk = self.walk.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let start = (self.walk >> 40) as usize % BUCKET_WIDTH;
        with_room.or_else(|| {
            (0..BUCKET_WIDTH)
                .map(|i| (start + i) % BUCKET_WIDTH)
                .find_map(|entry| others[entry].map(|other| (entry, other)))
        })
    }
}

impl RowIndex for TwoChoiceBuckets {
    /// Into the emptier of the id's buckets, displacing entries along a walk
    /// when both are full; ids are stored once each, before any lookup.
    fn insert(&mut self, id: i64, hash: u64, _slot: u32, row: u32) {
        // Every lookup reads both lines, wherever its id sits.
        self.profile.add(2);
        let (first, second) = self.choices(hash);
        let buckets = self.table.buckets();
        let mut at = if buckets[second].room() > buckets[first].room() {
            second
        } else {
            first
        };
        let mut carried = (id, row + 1);
        loop {
            if let Some(free) = self.table.buckets()[at].free_position() {
                self.table.buckets_mut()[at].set(free, carried);
                return;
            }
            let (victim, other) = self
                .displaceable(at)
                .expect("the bench's tables hold distinct ids at 90% fill at most");
            carried = self.table.buckets_mut()[at].replace(victim, carried);
            at = other;
        }
    }

    #[inline(always)]
    fn prefetch_first(&self, _id: i64, hash: u64, _slot: u32) {
        let (first, second) = self.choices(hash);
        let buckets = self.table.buckets();
        prefetch(&buckets[first]);
        prefetch(&buckets[second]);
    }

    /// Both buckets compared, the match chosen without a branch, as kvzch's
    /// lookup does.
    #[inline(always)]
    fn locate(&self, id: i64, hash: u64, _slot: u32) -> Option<u32> {
        let (first, second) = self.choices(hash);
        let buckets = self.table.buckets();
        let (in_first, in_second) = (buckets[first].matches(id), buckets[second].matches(id));
        let (bucket, matches) = if in_first != 0 {
            (first, in_first)
        } else {
            (second, in_second)
        };
        (matches != 0).then(|| buckets[bucket].row(matches.trailing_zeros() as usize))
    }

    fn profile(&self) -> &Profile {
        &self.profile
    }
}
