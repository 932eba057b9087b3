//! An open-addressing table from id to dense row number in kvzch's index
//! layout before two-choice buckets (`two_choice`): 64-byte buckets of five
//! (id, row + 1) pairs, linear probing, on transparent huge pages.
//! `benches/index_layouts.rs` weighs it at several fills against other
//! layouts. Also the bucket and table types that `two_choice` shares.

use crate::huge_map::HugeMap;
use crate::indexed_limit::Profile;

pub const BUCKET_WIDTH: usize = 5;
/// A position whose row is this holds no id.
const EMPTY: u32 = 0;

/// All zeros is the empty bucket, as a fresh mapping is.
#[repr(C, align(64))]
pub struct Bucket {
    ids: [i64; BUCKET_WIDTH],
    /// Each id's row number plus one, or `EMPTY`.
    rows: [u32; BUCKET_WIDTH],
    _pad: u32,
}

impl Bucket {
    /// The position holding `id`, compared over all five without a branch.
    fn position_of(&self, id: i64) -> Option<usize> {
        let matches = self.matches(id);
        (matches != 0).then(|| matches.trailing_zeros() as usize)
    }

    /// Bit `i` set where position `i` holds `id`.
    #[inline(always)]
    pub fn matches(&self, id: i64) -> u32 {
        let mut matches = 0u32;
        for (i, (&k, &row)) in self.ids.iter().zip(&self.rows).enumerate() {
            matches |= u32::from(k == id && row != EMPTY) << i;
        }
        matches
    }

    /// The row number at the taken position `i`.
    #[inline(always)]
    pub fn row(&self, i: usize) -> u32 {
        self.rows[i] - 1
    }

    /// The id at position `i`.
    pub fn id(&self, i: usize) -> i64 {
        self.ids[i]
    }

    pub fn free_position(&self) -> Option<usize> {
        self.rows.iter().position(|&r| r == EMPTY)
    }

    /// How many positions are free.
    pub fn room(&self) -> usize {
        self.rows.iter().filter(|&&r| r == EMPTY).count()
    }

    fn has_room(&self) -> bool {
        self.rows.contains(&EMPTY)
    }

    /// Stores `(id, row + 1)` at the free position `i`.
    pub fn set(&mut self, i: usize, (id, stored_row): (i64, u32)) {
        self.ids[i] = id;
        self.rows[i] = stored_row;
    }

    /// Stores `(id, row + 1)` at the taken position `i`; returns what it held.
    pub fn replace(&mut self, i: usize, entry: (i64, u32)) -> (i64, u32) {
        let held = (self.ids[i], self.rows[i]);
        self.set(i, entry);
        held
    }
}

/// A 64-bit mix of the id (MurmurHash3's finalizer, as kvzch's hash).
pub fn hash(id: i64) -> u64 {
    let mut h = id as u64 ^ 0x6b76_7a63_6c69_6d74;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A bucket type whose every field is a plain integer, so any bytes (a fresh
/// mapping's zeros among them) are a valid bucket.
///
/// # Safety
///
/// Implement only for `#[repr(C)]` types of integers, aligned to at most
/// 64 bytes.
pub unsafe trait PlainBucket {}

// SAFETY: `Bucket` is `#[repr(C, align(64))]` and holds integers only.
unsafe impl PlainBucket for Bucket {}

/// A table of buckets of type `B` on transparent huge pages, probed linearly
/// from the bucket a hash picks.
pub struct BucketTable<B> {
    map: HugeMap,
    count: usize,
    bucket: std::marker::PhantomData<B>,
}

impl<B: PlainBucket> BucketTable<B> {
    /// Room for `entries` entries at `fill` (their share of its positions),
    /// `width` entries to a bucket; all buckets empty (zeros).
    pub fn new(entries: usize, width: usize, fill: f64) -> BucketTable<B> {
        let count = ((entries as f64 / (width as f64 * fill)).ceil() as usize).max(1);
        BucketTable {
            map: HugeMap::new(count * std::mem::size_of::<B>()),
            count,
            bucket: std::marker::PhantomData,
        }
    }

    pub fn bytes(&self) -> usize {
        self.count * std::mem::size_of::<B>()
    }

    pub fn buckets(&self) -> &[B] {
        let bytes = self.map.bytes();
        // SAFETY: the mapping starts on a 2 MiB boundary, so it is aligned for
        // `B` (at most 64), and holds at least `count` of them; `B` is plain
        // integers (`PlainBucket`), valid for any bytes; the slice borrows
        // `self`.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), self.count) }
    }

    pub fn buckets_mut(&mut self) -> &mut [B] {
        let count = self.count;
        let bytes = self.map.bytes_mut();
        // SAFETY: as in `buckets`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), count) }
    }

    /// The bucket a lookup of `hash` reads first (from the hash's high bits).
    pub fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.count as u128) >> 64) as usize
    }

    /// The bucket a probe reads after `bucket`, wrapping around.
    pub fn next(&self, bucket: usize) -> usize {
        (bucket + 1) % self.count
    }

    /// The bucket a lookup of `hash` reads first, to prefetch.
    pub fn home_bucket(&self, hash: u64) -> &B {
        &self.buckets()[self.home(hash)]
    }

    /// Offers `hash`'s home bucket and the ones after it to `place` until it
    /// stores its entry in one; returns how many it was offered.
    pub fn place_from_home(&mut self, hash: u64, mut place: impl FnMut(&mut B) -> bool) -> usize {
        let mut at = self.home(hash);
        let mut offered = 1;
        while !place(&mut self.buckets_mut()[at]) {
            at = self.next(at);
            offered += 1;
        }
        offered
    }
}

pub struct KeyBuckets {
    table: BucketTable<Bucket>,
    /// What the ids stored so far cost their lookups.
    profile: Profile,
}

impl KeyBuckets {
    /// An empty table with room for `ids` ids at `fill` (their share of its
    /// positions).
    pub fn new(ids: usize, fill: f64) -> KeyBuckets {
        let table = BucketTable::new(ids, BUCKET_WIDTH, fill);
        let profile = Profile::new(table.bytes());
        KeyBuckets { table, profile }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The bucket a lookup of `hash` reads first, to prefetch.
    pub fn home_bucket(&self, hash: u64) -> &Bucket {
        self.table.home_bucket(hash)
    }

    /// The row of `id`, looked for in at most `MAX_BUCKETS` buckets: a lookup
    /// that stops short of where an id sits misses it.
    #[inline(always)]
    pub fn find<const MAX_BUCKETS: usize>(&self, id: i64, hash: u64) -> Option<u32> {
        let buckets = self.table.buckets();
        let mut at = self.table.home(hash);
        let mut read = 1;
        loop {
            let bucket = &buckets[at];
            if let Some(i) = bucket.position_of(id) {
                return Some(bucket.rows[i] - 1);
            }
            if bucket.has_room() || read == MAX_BUCKETS {
                return None;
            }
            at = self.table.next(at);
            read += 1;
        }
    }

    /// Stores `row` for `id` (whose hash is `hash`), or replaces the row it had.
    pub fn insert(&mut self, id: i64, hash: u64, row: u32) {
        let mut at = self.table.home(hash);
        let mut lines = 1;
        loop {
            let next = self.table.next(at);
            let bucket = &mut self.table.buckets_mut()[at];
            let stored = bucket.position_of(id);
            let free = bucket.rows.iter().position(|&r| r == EMPTY);
            if let Some(i) = stored.or(free) {
                bucket.ids[i] = id;
                bucket.rows[i] = row + 1;
                if stored.is_none() {
                    // Entries never move once stored, so a lookup of `id`
                    // reads as many buckets as this insert did.
                    self.profile.add(lines);
                }
                return;
            }
            at = next;
            lines += 1;
        }
    }
}
