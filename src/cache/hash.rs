//! The id hash shared by the shard choice, the index and its rebuilds.

use std::hash::BuildHasher;

/// Hashes ids with MurmurHash3's 64-bit finalizer over the id xor a random
/// per-cache key: two multiplies, full avalanche (every id bit flips each hash
/// bit with probability about one half), so the low bits that pick the shard
/// and the high bits that pick the bucket are both uniform even for runs of
/// consecutive ids. (A single folded multiply was measurably cheaper but, for
/// some keys, put nearly all of a run of small ids into one shard.)
#[derive(Clone, Copy)]
pub(crate) struct IdHasher {
    key: u64,
}

impl IdHasher {
    pub(crate) fn new() -> IdHasher {
        IdHasher {
            key: std::collections::hash_map::RandomState::new().hash_one(0x6b76_7a63_u32),
        }
    }

    #[inline]
    pub(crate) fn hash(self, id: i64) -> u64 {
        let mut h = id as u64 ^ self.key;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    /// The hash as a function of its own, for the index's rebuilds and
    /// removals (it owns a copy of the key, so it borrows nothing).
    pub(crate) fn as_fn(self) -> impl Fn(i64) -> u64 + Copy {
        move |id| self.hash(id)
    }
}

#[cfg(test)]
mod tests {
    use super::IdHasher;

    #[test]
    fn consecutive_ids_spread_evenly_over_shards_and_buckets_for_every_key() {
        for _ in 0..500 {
            let hasher = IdHasher::new();
            let mut shards = [0u32; 16];
            let mut halves = [0u32; 2];
            for id in 0..1600 {
                let hash = hasher.hash(id);
                shards[(hash & 15) as usize] += 1;
                halves[(hash >> 63) as usize] += 1;
            }
            // 100 ids per shard expected, standard deviation about 10: the
            // bounds are over six deviations away, so only a skewed hash fails.
            assert!(
                shards.iter().all(|&n| (35..=165).contains(&n)),
                "{shards:?}"
            );
            assert!(
                halves.iter().all(|&n| (650..=950).contains(&n)),
                "{halves:?}"
            );
        }
    }
}
