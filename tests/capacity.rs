//! Capacity eviction (ABI 1.1): limits always hold, the policies pick the
//! right victims, a publish never evicts the rows it writes, the info counters
//! are exact, and compaction gives memory back.

use kvzch::{Cache, CacheConfig, EvictionPolicy};

fn config(
    policy: EvictionPolicy,
    max_rows: Option<u64>,
    max_memory_bytes: Option<u64>,
) -> CacheConfig {
    CacheConfig {
        num_shards: 4,
        max_rows,
        max_memory_bytes,
        eviction_policy: policy,
        ..CacheConfig::new(16)
    }
}

fn cache(policy: EvictionPolicy, max_rows: Option<u64>, max_memory_bytes: Option<u64>) -> Cache {
    Cache::new(config(policy, max_rows, max_memory_bytes)).unwrap()
}

/// A cache of one shard. Each shard holds its share of `max_rows`, and the
/// hash key, random per cache, decides how many of a batch's ids each shard
/// gets: with several shards, which rows a policy evicts depends on that.
fn one_shard_cache(policy: EvictionPolicy, max_rows: u64) -> Cache {
    Cache::new(CacheConfig {
        num_shards: 1,
        ..config(policy, Some(max_rows), None)
    })
    .unwrap()
}

/// A row of `width` bytes holding `id`'s bytes over and over: a row that came
/// back for another id shows.
fn row(id: i64, width: usize) -> Vec<u8> {
    id.to_le_bytes().into_iter().cycle().take(width).collect()
}

fn publish(cache: &Cache, ids: &[i64], timestamp: u32) {
    let rows: Vec<u8> = ids.iter().flat_map(|&id| row(id, 16)).collect();
    cache.batch_set(ids, &rows, timestamp).unwrap();
}

fn present(cache: &Cache, ids: &[i64]) -> Vec<bool> {
    let mut out = vec![0; ids.len() * 16];
    let mut mask = vec![0; ids.len()];
    cache.batch_get(ids, &mut out, Some(&mut mask)).unwrap();
    for (i, &id) in ids.iter().enumerate() {
        if mask[i] == 1 {
            assert_eq!(
                out[i * 16..][..16],
                row(id, 16),
                "id {id} came back with another row"
            );
        }
    }
    mask.iter().map(|&m| m == 1).collect()
}

fn present_count(cache: &Cache, ids: &[i64]) -> usize {
    present(cache, ids).iter().filter(|&&p| p).count()
}

#[test]
fn a_policy_keeps_every_publish_within_max_rows() {
    for policy in [EvictionPolicy::OldestTimestamp, EvictionPolicy::LruApprox] {
        let cache = cache(policy, Some(1000), None);
        assert_eq!(cache.eviction_policy(), policy);
        for round in 0..20i64 {
            let ids: Vec<i64> = (round * 300..round * 300 + 300).collect();
            publish(&cache, &ids, round as u32);
            let info = cache.info();
            assert!(info.rows <= 1000, "{policy:?}: {} rows", info.rows);
            assert!(
                present(&cache, &ids).iter().all(|&p| p),
                "{policy:?}: the latest publish was evicted"
            );
        }
        let info = cache.info();
        assert_eq!(info.inserts, 6000);
        assert_eq!(
            info.inserts - info.capacity_evictions,
            info.rows,
            "{policy:?}: {info:?}"
        );
    }
}

#[test]
fn oldest_timestamp_evicts_the_oldest_publish_first() {
    // With four shards of 100 rows, the first 300 ids all fit only when no
    // shard gets more than 100 of them (a CI run failed so).
    let cache = one_shard_cache(EvictionPolicy::OldestTimestamp, 400);
    let old: Vec<i64> = (0..200).collect();
    let middle: Vec<i64> = (200..300).collect();
    let newest: Vec<i64> = (300..500).collect();
    publish(&cache, &middle, 20);
    publish(&cache, &old, 10);
    assert_eq!(cache.info().rows, 300);
    publish(&cache, &newest, 40);
    // 100 rows must go, and every one of them from the oldest publish.
    assert!(present(&cache, &middle).iter().all(|&p| p));
    assert!(present(&cache, &newest).iter().all(|&p| p));
    let old_left = present_count(&cache, &old);
    let info = cache.info();
    assert_eq!(old_left, 100);
    assert_eq!(info.rows, 400);
    assert_eq!(info.capacity_evictions, 100);
}

/// The stamps counted for `OLDEST_TIMESTAMP` lose only the rows that
/// `evict_older_than` removed: the rows stamped at its threshold stay, and
/// are the oldest left.
#[test]
fn oldest_timestamp_evicts_the_oldest_publish_an_expiry_left() {
    let cache = one_shard_cache(EvictionPolicy::OldestTimestamp, 400);
    let expired: Vec<i64> = (0..100).collect();
    let at_threshold: Vec<i64> = (100..200).collect();
    let newer: Vec<i64> = (200..400).collect();
    publish(&cache, &expired, 1);
    publish(&cache, &at_threshold, 2);
    publish(&cache, &newer, 3);
    assert_eq!(cache.evict_older_than(2), 100);
    // 300 rows and 150 new ids: 50 must go, all stamped 2.
    let fresh: Vec<i64> = (1_000..1_150).collect();
    publish(&cache, &fresh, 4);
    assert!(present(&cache, &newer).iter().all(|&p| p));
    let left = present_count(&cache, &at_threshold);
    assert_eq!(left, 50);
}

#[test]
fn lru_approx_keeps_rows_that_are_read() {
    let cache = one_shard_cache(EvictionPolicy::LruApprox, 1200);
    let hot: Vec<i64> = (0..500).collect();
    let cold: Vec<i64> = (500..1000).collect();
    publish(&cache, &hot, 1);
    publish(&cache, &cold, 1);
    assert_eq!(cache.info().rows, 1000);
    for round in 0..10i64 {
        assert!(
            present(&cache, &hot).iter().all(|&p| p),
            "round {round}: a hot row was evicted"
        );
        let fresh: Vec<i64> = (10_000 + round * 100..10_100 + round * 100).collect();
        publish(&cache, &fresh, 2);
    }
    assert!(present(&cache, &hot).iter().all(|&p| p));
    let cold_left = present_count(&cache, &cold);
    assert!(
        cold_left < 250,
        "{cold_left} cold rows survived 1000 newer ones"
    );
}

/// Recency comes from reads alone: a publish looks up every id it writes (to
/// tell new ids from stored ones) without marking them read, so rows it only
/// rewrote are evicted before rows that were read.
#[test]
fn lru_approx_does_not_count_a_republish_as_a_read() {
    let cache = one_shard_cache(EvictionPolicy::LruApprox, 1000);
    let read: Vec<i64> = (0..500).collect();
    let rewritten: Vec<i64> = (500..1000).collect();
    publish(&cache, &read, 1);
    publish(&cache, &rewritten, 1);
    assert!(present(&cache, &read).iter().all(|&p| p));
    publish(&cache, &rewritten, 2);
    let fresh: Vec<i64> = (10_000..10_250).collect();
    publish(&cache, &fresh, 3);
    assert!(
        present(&cache, &read).iter().all(|&p| p),
        "a row that was read was evicted before the rewritten ones"
    );
    let rewritten_left = present_count(&cache, &rewritten);
    assert_eq!(rewritten_left, 250);
}

#[test]
fn a_publish_larger_than_the_capacity_keeps_its_latest_rows() {
    let cache = cache(EvictionPolicy::LruApprox, Some(64), None);
    let ids: Vec<i64> = (0..1000).collect();
    publish(&cache, &ids, 1);
    let info = cache.info();
    assert_eq!(info.rows, 64, "every shard's share is filled");
    assert_eq!((info.inserts, info.capacity_evictions), (64, 936));
    let kept = present(&cache, &ids);
    let first_kept = kept.iter().position(|&p| p).unwrap();
    assert!(
        first_kept >= 700,
        "the earliest ids should make way, yet id {first_kept} is kept"
    );
}

/// A new id that its publish cannot keep counts once, as a capacity eviction,
/// however often the publish gives it: none of its occurrences was written.
/// A kept id given twice counts its earlier occurrence as an update. Both in
/// short publishes, which write each occurrence, and in long ones, which
/// write only an id's last.
#[test]
fn a_dropped_id_counts_once_however_often_its_publish_gives_it() {
    for last in [2, 200] {
        let cache = one_shard_cache(EvictionPolicy::LruApprox, 1);
        let counts = || {
            let info = cache.info();
            (
                info.rows,
                info.inserts,
                info.updates,
                info.capacity_evictions,
            )
        };
        // Only the latest new id is kept: `last`.
        let first: Vec<i64> = [1].into_iter().chain(1..=last).collect();
        publish(&cache, &first, 1);
        assert_eq!(present(&cache, &[1, last]), [false, true]);
        assert_eq!(counts(), (1, 1, 0, last as u64 - 1), "{last}");
        // `last` evicted, every new id dropped but the one given twice.
        let twice = 1_000 + last;
        let second: Vec<i64> = [twice].into_iter().chain(1_000..=twice).collect();
        publish(&cache, &second, 2);
        assert_eq!(present(&cache, &[last, 1_000, twice]), [false, false, true]);
        assert_eq!(counts(), (1, 2, 1, 2 * last as u64), "{last}");
    }
}

#[test]
fn max_memory_bytes_holds_under_a_policy() {
    let limit = 2 << 20;
    for policy in [EvictionPolicy::OldestTimestamp, EvictionPolicy::LruApprox] {
        let cache = cache(policy, None, Some(limit));
        for round in 0..40i64 {
            let ids: Vec<i64> = (round * 2000..round * 2000 + 2000).collect();
            publish(&cache, &ids, round as u32);
            assert!(
                cache.info().memory_bytes <= limit,
                "{policy:?}: {:?}",
                cache.info()
            );
        }
        let info = cache.info();
        assert!(
            info.rows > 20_000,
            "{policy:?}: only {} rows fit in {limit} bytes",
            info.rows
        );
        assert!(info.capacity_evictions > 0);
    }
}

#[test]
fn without_a_policy_a_full_cache_refuses_and_changes_nothing() {
    let cache = cache(EvictionPolicy::None, Some(100), None);
    publish(&cache, &(0..100).collect::<Vec<_>>(), 1);
    let rows = vec![0u8; 16];
    let error = cache.batch_set(&[1000], &rows, 2).unwrap_err();
    assert_eq!(error.kind(), kvzch::ErrorKind::CapacityExceeded);
    let info = cache.info();
    assert_eq!(
        (info.rows, info.inserts, info.capacity_evictions),
        (100, 100, 0)
    );
}

#[test]
fn info_counters_are_exact() {
    let cache = cache(EvictionPolicy::None, None, None);
    publish(&cache, &[1, 2, 3, 3], 1);
    publish(&cache, &[3, 4], 2);
    assert_eq!(cache.batch_remove(&[1, 9]).unwrap(), 1);
    assert_eq!(cache.evict_older_than(2), 1);
    let info = cache.info();
    assert_eq!(
        (
            info.inserts,
            info.updates,
            info.removals,
            info.expirations,
            info.capacity_evictions,
            info.rows
        ),
        (4, 2, 1, 1, 0, 2)
    );
}

#[test]
fn compact_gives_back_the_memory_of_evicted_rows_and_keeps_the_rest() {
    let cache = Cache::new(CacheConfig {
        num_shards: 4,
        ..CacheConfig::new(256)
    })
    .unwrap();
    let ids: Vec<i64> = (0..200_000).collect();
    for (round, chunk) in ids.chunks(4096).enumerate() {
        let rows: Vec<u8> = chunk.iter().flat_map(|&id| row(id, 256)).collect();
        cache.batch_set(chunk, &rows, round as u32).unwrap();
    }
    let full = cache.info().memory_bytes;
    // Keep every tenth row, evict the rest.
    let evicted: Vec<i64> = ids.iter().copied().filter(|id| id % 10 != 0).collect();
    assert_eq!(cache.batch_remove(&evicted).unwrap(), 180_000);
    assert_eq!(
        cache.info().memory_bytes,
        full,
        "removal keeps the slots for reuse"
    );
    cache.compact().unwrap();
    let compacted = cache.info().memory_bytes;
    let evicted_payload = 180_000 * 256;
    assert!(
        full - compacted >= evicted_payload / 2,
        "compact gave back {} of {evicted_payload} evicted bytes",
        full - compacted
    );
    let kept: Vec<i64> = ids.iter().copied().filter(|id| id % 10 == 0).collect();
    let mut out = vec![0; kept.len() * 256];
    let stats = cache.batch_get(&kept, &mut out, None).unwrap();
    assert_eq!(stats.hits, kept.len() as u64);
    for (i, &id) in kept.iter().enumerate() {
        assert_eq!(out[i * 256..][..256], row(id, 256), "id {id}");
    }
    // Compacting twice changes nothing more; the rows kept stay evictable.
    cache.compact().unwrap();
    assert_eq!(cache.info().memory_bytes, compacted);
    assert_eq!(cache.evict_older_than(u32::MAX), 20_000);
}

#[test]
fn a_publish_that_overwrites_every_stored_row_never_evicts_one_and_ends() {
    for policy in [EvictionPolicy::OldestTimestamp, EvictionPolicy::LruApprox] {
        let cache = cache(policy, Some(40_000), None);
        let first: Vec<i64> = (0..40_000).collect();
        publish(&cache, &first, 1);
        let stored: Vec<i64> = first
            .iter()
            .copied()
            .zip(present(&cache, &first))
            .filter(|&(_, p)| p)
            .map(|(id, _)| id)
            .collect();
        // Each shard holds its share of 40,000: nearly all of them stored.
        assert!(stored.len() > 39_000, "{policy:?}: {} stored", stored.len());
        // Every stored id is in the batch, so none may make way for its new
        // ids: each shard keeps what it has and takes new ids only up to its
        // share.
        let batch: Vec<i64> = (0..41_000).collect();
        publish(&cache, &batch, 2);
        assert!(
            present(&cache, &stored).iter().all(|&p| p),
            "{policy:?}: an overwritten row was evicted"
        );
        assert!(cache.info().rows <= 40_000, "{policy:?}");
    }
}

#[test]
fn a_publish_that_fits_a_small_capacity_keeps_every_row() {
    // Each shard evicts within its share of the capacity. With the shard
    // count left to the library, shares of a few rows each overflowed on
    // batches that fit the cache: [a, b] into max_rows 2 kept only one of
    // them in about half of the caches (the hash key, random per cache,
    // decides which shard each id lands in).
    for policy in [EvictionPolicy::OldestTimestamp, EvictionPolicy::LruApprox] {
        for (max_rows, caches) in [(2, 24), (20_000, 2)] {
            for attempt in 0..caches {
                let cache = Cache::new(CacheConfig {
                    max_rows: Some(max_rows),
                    eviction_policy: policy,
                    ..CacheConfig::new(16)
                })
                .unwrap();
                let first = attempt * max_rows as i64;
                let ids: Vec<i64> = (first..first + max_rows as i64).collect();
                publish(&cache, &ids, 1);
                let info = cache.info();
                assert_eq!(
                    (info.rows, info.capacity_evictions),
                    (max_rows, 0),
                    "{policy:?}, max_rows {max_rows}, {} shards",
                    info.num_shards
                );
                assert!(present(&cache, &ids).iter().all(|&kept| kept));
            }
        }
    }
    // A memory limit that holds few rows makes few shards as well, unless
    // the host picks the count.
    let small_memory = CacheConfig {
        max_memory_bytes: Some(256 << 10),
        eviction_policy: EvictionPolicy::LruApprox,
        ..CacheConfig::new(16)
    };
    let cache = Cache::new(small_memory.clone()).unwrap();
    assert_eq!(cache.info().num_shards, 1);
    let cache = Cache::new(CacheConfig {
        num_shards: 4,
        ..small_memory
    })
    .unwrap();
    assert_eq!(cache.info().num_shards, 4);
}

#[test]
fn under_a_policy_the_shard_count_leaves_every_share_its_rows() {
    // The library's own count (8 or more on any machine) halves until each
    // share holds 16,384 rows; a host's count, until each holds one row.
    for (num_shards, max_rows, kept) in [
        (0, 49_152, 2),
        (0, 65_536, 4),
        (0, 100_000, 4),
        (0, 32_767, 1),
        (8, 4, 4),
        (8, 3, 2),
        (8, 8, 8),
    ] {
        let cache = Cache::new(CacheConfig {
            num_shards,
            ..config(EvictionPolicy::LruApprox, Some(max_rows), None)
        })
        .unwrap();
        assert_eq!(
            cache.info().num_shards,
            kept,
            "num_shards {num_shards}, max_rows {max_rows}"
        );
    }
}

#[test]
fn oldest_timestamp_always_evicts_the_oldest_unprotected_rows() {
    // Random publishes into a full shard: ids it holds (which the publish
    // protects) and new ones, stamps that repeat over several publishes
    // (ties) and sometimes go back. Whatever the hand's order, every row a
    // publish evicts must be as old as any unprotected row it keeps, and the
    // shard must stay exactly full. Each cache's hash key is random, and so
    // the hand's order: three caches take the same publishes.
    for _ in 0..3 {
        const CAPACITY: usize = 500;
        let cache = one_shard_cache(EvictionPolicy::OldestTimestamp, CAPACITY as u64);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |below: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % below
        };
        // What the cache holds, by the stamp each row has.
        let mut stamps = std::collections::HashMap::<i64, u32>::new();
        let mut next_id = 0i64;
        for round in 0..1_000u32 {
            let timestamp = if next(10) == 0 {
                round - round.min(3)
            } else {
                round
            };
            // Oldest first: republishing old rows protects the rows the search
            // meets first, which sends it past them.
            let mut stored: Vec<i64> = stamps.keys().copied().collect();
            stored.sort_unstable_by_key(|id| (stamps[id], *id));
            let mut batch = Vec::new();
            for _ in 0..1 + next(40) {
                if !stored.is_empty() && next(100) < 60 {
                    let among = if next(2) == 0 {
                        stored.len() / 4 + 1
                    } else {
                        stored.len()
                    };
                    batch.push(stored[next(among as u64) as usize]);
                } else {
                    batch.push(next_id);
                    next_id += 1;
                }
            }
            publish(&cache, &batch, timestamp);
            let held = present(&cache, &stored);
            let in_batch: std::collections::HashSet<i64> = batch.iter().copied().collect();
            let (mut newest_gone, mut oldest_kept) = (None::<u32>, None::<u32>);
            for (&id, &kept) in stored.iter().zip(&held) {
                if in_batch.contains(&id) {
                    assert!(kept, "round {round}: id {id} of the publish was evicted");
                    continue;
                }
                let stamp = stamps[&id];
                if kept {
                    oldest_kept = oldest_kept.min(Some(stamp)).or(Some(stamp));
                } else {
                    newest_gone = newest_gone.max(Some(stamp));
                    stamps.remove(&id);
                }
            }
            if let (Some(gone), Some(kept)) = (newest_gone, oldest_kept) {
                assert!(
                    gone <= kept,
                    "round {round}: a row stamped {gone} went while one stamped {kept} stayed"
                );
            }
            for &id in &batch {
                stamps.insert(id, timestamp);
            }
            assert!(present(&cache, &batch).iter().all(|&p| p) || batch.len() > CAPACITY);
            assert_eq!(
                cache.info().rows as usize,
                stamps.len().min(CAPACITY),
                "round {round}"
            );
        }
        assert!(stamps.len() == CAPACITY, "the shard filled");
    }
}
