//! An open-addressing table from id to dense row number in kvzch's index
//! layout: 64-byte buckets of five (id, row + 1) pairs, linear probing, on
//! transparent huge pages. The lookup suite's `indexed_limit` finds the
//! limit's rows through one at kvzch's fill; `benches/index_layouts.rs`
//! weighs it at other fills against other layouts.

use crate::huge_map::HugeMap;
use crate::indexed_limit::Profile;

const BUCKET_WIDTH: usize = 5;
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
        let mut matches = 0u32;
        for (i, (&k, &row)) in self.ids.iter().zip(&self.rows).enumerate() {
            matches |= u32::from(k == id && row != EMPTY) << i;
        }
        (matches != 0).then(|| matches.trailing_zeros() as usize)
    }

    fn has_room(&self) -> bool {
        self.rows.contains(&EMPTY)
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

pub struct KeyBuckets {
    buckets: HugeMap,
    bucket_count: usize,
    /// What the ids stored so far cost their lookups.
    profile: Profile,
}

impl KeyBuckets {
    /// An empty table with room for `ids` ids at `fill` (their share of its
    /// positions).
    pub fn new(ids: usize, fill: f64) -> KeyBuckets {
        let bucket_count = ((ids as f64 / (BUCKET_WIDTH as f64 * fill)).ceil() as usize).max(1);
        let bytes = bucket_count * std::mem::size_of::<Bucket>();
        KeyBuckets {
            buckets: HugeMap::new(bytes),
            bucket_count,
            profile: Profile::new(bytes),
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn buckets(&self) -> &[Bucket] {
        let bytes = self.buckets.bytes();
        // SAFETY: the mapping starts on a 2 MiB boundary, so it is aligned for
        // `Bucket`, and holds at least `bucket_count` of them; `Bucket` is
        // plain integers, valid for any bytes; the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), self.bucket_count) }
    }

    fn buckets_mut(&mut self) -> &mut [Bucket] {
        let count = self.bucket_count;
        let bytes = self.buckets.bytes_mut();
        // SAFETY: as in `buckets`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), count) }
    }

    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.bucket_count as u128) >> 64) as usize
    }

    fn next(&self, bucket: usize) -> usize {
        (bucket + 1) % self.bucket_count
    }

    /// The bucket a lookup of `hash` reads first, to prefetch.
    pub fn home_bucket(&self, hash: u64) -> &Bucket {
        &self.buckets()[self.home(hash)]
    }

    /// The row of `id`, looked for in at most `MAX_BUCKETS` buckets: a lookup
    /// that stops short of where an id sits misses it.
    #[inline(always)]
    pub fn find<const MAX_BUCKETS: usize>(&self, id: i64, hash: u64) -> Option<u32> {
        let buckets = self.buckets();
        let mut at = self.home(hash);
        let mut read = 1;
        loop {
            let bucket = &buckets[at];
            if let Some(i) = bucket.position_of(id) {
                return Some(bucket.rows[i] - 1);
            }
            if bucket.has_room() || read == MAX_BUCKETS {
                return None;
            }
            at = self.next(at);
            read += 1;
        }
    }

    /// Stores `row` for `id`, or replaces the row it had.
    pub fn insert(&mut self, id: i64, row: u32) {
        let mut at = self.home(hash(id));
        let mut lines = 1;
        loop {
            let next = self.next(at);
            let bucket = &mut self.buckets_mut()[at];
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
