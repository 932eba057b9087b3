//! The id hash shared by the shard choice, the index and its rebuilds.
//!
//! The hash is a bijection on 64 bits, and `IdHasher::id_of` inverts it: the
//! index stores what is left of a hash once its shard and bucket are known, and
//! gets the id back from that (see `index`).

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

    /// A hasher with a fixed key, for tests that need repeatable hashes.
    #[cfg(test)]
    pub(crate) fn with_key(key: u64) -> IdHasher {
        IdHasher { key }
    }

    #[inline]
    pub(crate) fn hash(self, id: i64) -> u64 {
        let mut h = id as u64 ^ self.key;
        h ^= h >> 33;
        h = h.wrapping_mul(FIRST_MULTIPLIER);
        h ^= h >> 33;
        h = h.wrapping_mul(SECOND_MULTIPLIER);
        h ^ (h >> 33)
    }

    /// The id whose hash is `hash`: each step of [`hash`](Self::hash) undone.
    /// (A shift by 33 or more xored in is its own inverse.)
    pub(crate) fn id_of(self, hash: u64) -> i64 {
        let mut h = hash ^ (hash >> 33);
        h = h.wrapping_mul(inverse(SECOND_MULTIPLIER));
        h ^= h >> 33;
        h = h.wrapping_mul(inverse(FIRST_MULTIPLIER));
        h ^= h >> 33;
        (h ^ self.key) as i64
    }
}

const FIRST_MULTIPLIER: u64 = 0xff51_afd7_ed55_8ccd;
const SECOND_MULTIPLIER: u64 = 0xc4ce_b9fe_1a85_ec53;

/// The multiplicative inverse of the odd `a` modulo 2^64, by Newton's
/// iteration: `a` is its own inverse modulo 8, and each step doubles the bits
/// that are right (3, 6, 12, 24, 48, 96).
const fn inverse(a: u64) -> u64 {
    let mut x = a;
    let mut step = 0;
    while step < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        step += 1;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::{inverse, IdHasher, FIRST_MULTIPLIER, SECOND_MULTIPLIER};

    #[test]
    fn the_multipliers_have_inverses() {
        for a in [FIRST_MULTIPLIER, SECOND_MULTIPLIER, 1, 3, u64::MAX] {
            assert_eq!(a.wrapping_mul(inverse(a)), 1, "{a:#x}");
        }
    }

    #[test]
    fn id_of_inverts_the_hash() {
        for key in [0, 1, 0x6b76_7a63, u64::MAX] {
            let hasher = IdHasher::with_key(key);
            let ids = [0, 1, -1, i64::MIN, i64::MAX, 0x1234_5678_9abc_def0];
            for id in ids
                .into_iter()
                .chain((0..10_000).map(|i| i * 7_919 - 40_000_000))
            {
                assert_eq!(hasher.id_of(hasher.hash(id)), id, "id {id}, key {key:#x}");
            }
            for hash in [0, 1, u64::MAX, 1 << 63] {
                assert_eq!(hasher.hash(hasher.id_of(hash)), hash);
            }
        }
    }

    /// Runs of ids and ids that differ only in a few bits (a stride of 16,
    /// which a hash without its xor-shifts puts in one shard; of 2^20; in the
    /// top bits alone) spread evenly over the low bits that pick the shard and
    /// the top bits that pick the bucket.
    #[test]
    fn runs_and_strides_of_ids_spread_evenly_over_shards_and_buckets_for_every_key() {
        let id_sets: [fn(i64) -> i64; 4] = [|k| k, |k| k << 4, |k| k << 20, |k| k << 48];
        for _ in 0..500 {
            let hasher = IdHasher::new();
            for id_of_k in id_sets {
                let (mut shards, mut buckets) = ([0u32; 16], [0u32; 16]);
                for k in 0..1600 {
                    let hash = hasher.hash(id_of_k(k));
                    shards[(hash & 15) as usize] += 1;
                    buckets[(hash >> 60) as usize] += 1;
                }
                // 100 ids per part expected, standard deviation about 10: the
                // bounds are over six deviations away, so only a skewed hash
                // fails.
                for parts in [shards, buckets] {
                    assert!(
                        parts.iter().all(|&n| (35..=165).contains(&n)),
                        "{parts:?} (id 1 is {})",
                        id_of_k(1)
                    );
                }
            }
        }
    }
}
