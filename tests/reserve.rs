//! `Cache::reserve` (ABI 1.2): the room it makes, what it leaves alone, and the
//! limits it respects.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kvzch::{Cache, CacheConfig, ErrorKind, EvictionPolicy};

fn ids(n: i64) -> Vec<i64> {
    (0..n).map(|i| i * 104_729 + 11).collect()
}

fn publish(cache: &Cache, ids: &[i64], timestamp: u32) {
    let rows: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    for (ids, rows) in ids.chunks(4096).zip(rows.chunks(4096 * 8)) {
        cache.batch_set(ids, rows, timestamp).unwrap();
    }
}

fn all_present(cache: &Cache, ids: &[i64]) -> bool {
    let mut out = vec![0u8; ids.len() * 8];
    let hits = cache.batch_get(ids, &mut out, None).unwrap().hits;
    let rows: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    hits == ids.len() as u64 && out == rows
}

#[test]
fn reserving_adds_index_memory_only_and_compaction_gives_back_the_unused() {
    let cache = Cache::new(CacheConfig::new(8)).unwrap();
    let stored = ids(10_000);
    publish(&cache, &stored, 1);
    let before = cache.info();

    cache.reserve(0).unwrap();
    assert_eq!(cache.info(), before);

    cache.reserve(1_000_000).unwrap();
    let reserved = cache.info();
    // About 14.5 bytes of index per reserved row, none of rows or stamps.
    let added = reserved.memory_bytes - before.memory_bytes;
    assert!((12_000_000..17_000_000).contains(&added), "{added}");
    assert_eq!(
        (reserved.rows, reserved.inserts, reserved.updates),
        (before.rows, before.inserts, before.updates)
    );
    assert!(all_present(&cache, &stored));

    // A second reservation the room already covers changes nothing.
    cache.reserve(500_000).unwrap();
    assert_eq!(cache.info(), reserved);

    cache.compact().unwrap();
    assert!(cache.info().memory_bytes <= before.memory_bytes);
    assert!(all_present(&cache, &stored));
}

#[test]
fn a_reservation_past_max_rows_fails_and_changes_nothing() {
    for policy in [
        EvictionPolicy::None,
        EvictionPolicy::OldestTimestamp,
        EvictionPolicy::LruApprox,
    ] {
        let cache = Cache::new(CacheConfig {
            max_rows: Some(10_000),
            eviction_policy: policy,
            ..CacheConfig::new(8)
        })
        .unwrap();
        let stored = ids(4_000);
        publish(&cache, &stored, 1);
        let before = cache.info();
        let error = cache.reserve(6_001).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::CapacityExceeded, "{policy:?}");
        assert!(error.to_string().contains("max_rows 10000"), "{error}");
        assert_eq!(cache.info(), before, "{policy:?}");

        cache.reserve(6_000).unwrap();
        publish(&cache, &ids(10_000), 2);
        assert!(cache.info().rows <= 10_000, "{policy:?}");
    }
}

#[test]
fn a_reservation_past_max_memory_bytes_fails_and_changes_nothing() {
    let cache = Cache::new(CacheConfig {
        max_memory_bytes: Some(4 << 20),
        ..CacheConfig::new(8)
    })
    .unwrap();
    publish(&cache, &ids(1_000), 1);
    let before = cache.info();
    let error = cache.reserve(1_000_000).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CapacityExceeded);
    assert!(error.to_string().contains("max_memory_bytes"), "{error}");
    assert_eq!(cache.info(), before);
}

#[test]
fn under_a_policy_the_room_stops_at_the_capacity() {
    let max_memory_bytes = 8 << 20;
    let cache = Cache::new(CacheConfig {
        max_memory_bytes: Some(max_memory_bytes),
        eviction_policy: EvictionPolicy::LruApprox,
        ..CacheConfig::new(8)
    })
    .unwrap();
    // More rows than fit: the shards' shares bound the room.
    let rows = 500_000;
    cache.reserve(rows).unwrap();
    assert!(cache.info().memory_bytes <= max_memory_bytes);
    publish(&cache, &ids(rows as i64), 1);
    let info = cache.info();
    assert!(info.memory_bytes <= max_memory_bytes, "{info:?}");
    assert!(info.capacity_evictions > 0);
}

#[test]
fn more_rows_than_the_shards_can_address_is_an_invalid_argument() {
    let cache = Cache::new(CacheConfig::new(8)).unwrap();
    let before = cache.info();
    let error = cache.reserve(u64::MAX).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    assert!(
        error
            .to_string()
            .contains("additional_rows 18446744073709551615"),
        "{error}"
    );
    assert_eq!(cache.info(), before);
}

#[test]
fn readers_see_every_row_while_the_index_grows_for_a_reservation() {
    let cache = Cache::new(CacheConfig::new(8)).unwrap();
    let stored = ids(50_000);
    publish(&cache, &stored, 1);
    let done = AtomicBool::new(false);
    let batches = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                assert!(all_present(&cache, &stored[..4096]));
                batches.fetch_add(1, Ordering::Relaxed);
            }
        });
        // The reader is reading before the first reservation starts.
        while batches.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        let memory_before = cache.info().memory_bytes;
        let batches_before = batches.load(Ordering::Relaxed);
        for step in 1..=20u64 {
            cache.reserve(step * 20_000).unwrap();
            // Waits (up to 100 ms) for a batch of the reader's, so that it
            // reads beside the next rebuild: on a busy machine the rebuilds
            // (a few ms each) could otherwise all run while it waits for a
            // core.
            let seen = batches.load(Ordering::Relaxed);
            let give_up = Instant::now() + Duration::from_millis(100);
            while batches.load(Ordering::Relaxed) == seen && Instant::now() < give_up {
                std::thread::yield_now();
            }
        }
        let batches_during = batches.load(Ordering::Relaxed) - batches_before;
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        // The reservations did grow the index, and the reader read meanwhile.
        assert!(cache.info().memory_bytes > memory_before);
        assert!(
            batches_during >= 2,
            "{batches_during} batches during 20 reservations"
        );
    });
    assert!(all_present(&cache, &stored));
}
