//! The engine's behaviour through its Rust API: contents, miss policies,
//! capacity, eviction and accounting.

use kvzch::{Cache, CacheConfig, ErrorKind, EvictionPolicy, MissPolicy, TableName};

fn config(row_bytes: usize) -> CacheConfig {
    CacheConfig {
        num_shards: 4,
        ..CacheConfig::new(row_bytes)
    }
}

/// A row that encodes its version in every byte and every byte of its id in
/// each 8 bytes: ids that differ only in their high bits (`i64::MIN` and 0)
/// get different rows.
fn row_of(id: i64, version: u8, row_bytes: usize) -> Vec<u8> {
    (0..row_bytes)
        .map(|i| id.to_le_bytes()[i % 8] ^ (i as u8).wrapping_mul(31) ^ version)
        .collect()
}

fn rows_of(ids: &[i64], version: u8, row_bytes: usize) -> Vec<u8> {
    ids.iter()
        .flat_map(|&id| row_of(id, version, row_bytes))
        .collect()
}

fn get(cache: &Cache, ids: &[i64]) -> (Vec<u8>, Vec<u8>, kvzch::BatchStats) {
    let mut out = vec![0xAB; ids.len() * cache.row_bytes()];
    let mut mask = vec![7; ids.len()];
    let stats = cache.batch_get(ids, &mut out, Some(&mut mask)).unwrap();
    (out, mask, stats)
}

#[test]
fn set_then_get_returns_every_row_and_counts_hits() {
    let cache = Cache::new(config(13)).unwrap();
    let ids: Vec<i64> = (-500..500)
        .map(|i| i * 1_000_003)
        .chain([i64::MIN, i64::MAX, -1])
        .collect();
    cache.batch_set(&ids, &rows_of(&ids, 1, 13), 10).unwrap();
    assert_eq!(cache.info().rows, ids.len() as u64);
    let (out, mask, stats) = get(&cache, &ids);
    assert_eq!(out, rows_of(&ids, 1, 13));
    assert!(mask.iter().all(|&m| m == 1));
    assert_eq!(
        (stats.hits, stats.misses, stats.total),
        (ids.len() as u64, 0, ids.len() as u64)
    );
}

#[test]
fn lookups_span_several_windows() {
    let cache = Cache::new(config(8)).unwrap();
    let ids: Vec<i64> = (0..10_000).collect();
    cache.batch_set(&ids, &rows_of(&ids, 3, 8), 1).unwrap();
    let wanted: Vec<i64> = (0..12_000).rev().collect();
    let (out, mask, stats) = get(&cache, &wanted);
    for (i, &id) in wanted.iter().enumerate() {
        let row = &out[i * 8..][..8];
        if id < 10_000 {
            assert_eq!(row, row_of(id, 3, 8), "id {id}");
            assert_eq!(mask[i], 1);
        } else {
            assert_eq!(row, [0; 8], "id {id}");
            assert_eq!(mask[i], 0);
        }
    }
    assert_eq!((stats.hits, stats.misses), (10_000, 2_000));
}

#[test]
fn a_cache_answers_the_name_it_was_given() {
    let named = Cache::new(CacheConfig {
        name: TableName::new("user_emb.v2").unwrap(),
        ..config(4)
    })
    .unwrap();
    assert_eq!(named.name().as_str(), "user_emb.v2");
    assert_eq!(Cache::new(config(4)).unwrap().name().as_str(), "default");
}

#[test]
fn misses_are_zero_filled_or_left_untouched() {
    let zero = Cache::new(config(4)).unwrap();
    let leave = Cache::new(CacheConfig {
        miss_policy: MissPolicy::LeaveUntouched,
        ..config(4)
    })
    .unwrap();
    assert_eq!(zero.miss_policy(), MissPolicy::ZeroFill);
    assert_eq!(leave.miss_policy(), MissPolicy::LeaveUntouched);
    for cache in [&zero, &leave] {
        cache.batch_set(&[1], &[1, 2, 3, 4], 0).unwrap();
    }
    let (out, mask, _) = get(&zero, &[5, 1]);
    assert_eq!(out, [0, 0, 0, 0, 1, 2, 3, 4]);
    assert_eq!(mask, [0, 1]);
    let (out, mask, _) = get(&leave, &[5, 1]);
    assert_eq!(out, [0xAB, 0xAB, 0xAB, 0xAB, 1, 2, 3, 4]);
    assert_eq!(mask, [0, 1]);
}

#[test]
fn duplicate_ids_keep_the_last_row_and_exactly_one_entry() {
    let cache = Cache::new(config(2)).unwrap();
    cache
        .batch_set(&[9, 4, 9, 9], &[1, 1, 2, 2, 3, 3, 4, 4], 5)
        .unwrap();
    assert_eq!(cache.info().rows, 2);
    let (out, _, _) = get(&cache, &[9, 4, 9]);
    assert_eq!(out, [4, 4, 2, 2, 4, 4]);
    assert_eq!(cache.batch_remove(&[9]).unwrap(), 1);
    let (_, mask, _) = get(&cache, &[9]);
    assert_eq!(
        mask,
        [0],
        "a removed duplicate leaves no second copy behind"
    );
}

#[test]
fn remove_counts_only_stored_ids() {
    let cache = Cache::new(config(1)).unwrap();
    cache.batch_set(&[1, 2, 3], &[1, 2, 3], 0).unwrap();
    assert_eq!(cache.batch_remove(&[2, 2, 7]).unwrap(), 1);
    assert_eq!(cache.batch_remove(&[]).unwrap(), 0);
    assert_eq!(cache.info().rows, 2);
    let (out, mask, _) = get(&cache, &[1, 2, 3]);
    assert_eq!((out, mask), (vec![1, 0, 3], vec![1, 0, 1]));
}

#[test]
fn evict_older_than_removes_exactly_the_stale_rows() {
    let cache = Cache::new(config(4)).unwrap();
    let old: Vec<i64> = (0..3000).collect();
    let new: Vec<i64> = (1500..5000).collect();
    cache.batch_set(&old, &rows_of(&old, 1, 4), 100).unwrap();
    cache.batch_set(&new, &rows_of(&new, 2, 4), 200).unwrap();
    assert_eq!(cache.evict_older_than(100), 0, "the threshold is exclusive");
    assert_eq!(cache.evict_older_than(200), 1500);
    assert_eq!(cache.info().rows, 3500);
    let all: Vec<i64> = (0..5000).collect();
    let (out, mask, _) = get(&cache, &all);
    for &id in &all {
        let i = id as usize;
        assert_eq!(mask[i] == 1, id >= 1500, "id {id}");
        if id >= 1500 {
            assert_eq!(&out[i * 4..][..4], row_of(id, 2, 4));
        }
    }
    // Freed slots are reused: republishing the evicted ids does not grow memory.
    let before = cache.info().memory_bytes;
    let evicted: Vec<i64> = (0..1500).collect();
    cache
        .batch_set(&evicted, &rows_of(&evicted, 3, 4), 300)
        .unwrap();
    assert_eq!(cache.info().memory_bytes, before);
}

#[test]
fn bad_buffers_are_rejected_and_change_nothing() {
    let cache = Cache::new(config(4)).unwrap();
    cache.batch_set(&[1], &[1, 1, 1, 1], 0).unwrap();
    let error = cache.batch_set(&[2, 3], &[0; 7], 0).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    assert!(error.message().contains("rows holds 7 bytes"), "{error}");
    let mut out = [0u8; 4];
    let error = cache.batch_get(&[1, 2], &mut out, None).unwrap_err();
    assert!(error.message().contains("out holds 4 bytes"), "{error}");
    let mut out = [0u8; 8];
    let error = cache
        .batch_get(&[1, 2], &mut out, Some(&mut [0u8; 1]))
        .unwrap_err();
    assert!(error.message().contains("hit_mask"), "{error}");
    assert_eq!(cache.info().rows, 1);
    assert_eq!(
        cache.cumulative_read_stats().total,
        0,
        "failed lookups are not counted"
    );
}

#[test]
fn max_rows_rejects_a_publish_that_does_not_fit_and_stores_nothing() {
    let cache = Cache::new(CacheConfig {
        max_rows: Some(100),
        ..config(8)
    })
    .unwrap();
    let first: Vec<i64> = (0..90).collect();
    cache.batch_set(&first, &rows_of(&first, 1, 8), 1).unwrap();
    // 10 old ids and 11 new ones (one of them twice): 101 rows would not fit.
    let mut too_many: Vec<i64> = (80..101).collect();
    too_many.push(100);
    let error = cache
        .batch_set(&too_many, &rows_of(&too_many, 2, 8), 2)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CapacityExceeded);
    assert!(error.message().contains("max_rows 100"), "{error}");
    assert_eq!(cache.info().rows, 90);
    let (out, _, _) = get(&cache, &first);
    assert_eq!(out, rows_of(&first, 1, 8), "old rows were not overwritten");
    // Nor restamped: all of them still carry timestamp 1. Stored again after.
    assert_eq!(cache.evict_older_than(2), 90, "old rows were restamped");
    cache.batch_set(&first, &rows_of(&first, 1, 8), 1).unwrap();
    // Exactly full is fine, and overwrites need no room.
    let fits: Vec<i64> = (80..100).chain([99]).collect();
    cache.batch_set(&fits, &rows_of(&fits, 2, 8), 2).unwrap();
    assert_eq!(cache.info().rows, 100);
    cache.batch_set(&first, &rows_of(&first, 3, 8), 3).unwrap();
    assert_eq!(cache.info().rows, 100);
    let (out, _, _) = get(&cache, &first);
    assert_eq!(out, rows_of(&first, 3, 8), "the overwrites of a full cache");
}

#[test]
fn max_memory_bytes_is_never_exceeded() {
    let empty = Cache::new(config(64)).unwrap().info().memory_bytes;
    let limit = empty + 64 * 1024;
    let cache = Cache::new(CacheConfig {
        max_memory_bytes: Some(limit),
        ..config(64)
    })
    .unwrap();
    let mut stored = 0u64;
    let mut next = 0i64;
    loop {
        let ids: Vec<i64> = (next..next + 50).collect();
        match cache.batch_set(&ids, &rows_of(&ids, 1, 64), 1) {
            Ok(()) => {
                stored += 50;
                next += 50;
            }
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::CapacityExceeded, "{error}");
                break;
            }
        }
        assert!(cache.info().memory_bytes <= limit);
    }
    assert!(stored > 0);
    assert_eq!(cache.info().rows, stored);
    // The refused new ids again, with overwrites of stored rows and one id
    // twice: refused as a whole, nothing overwritten, restamped, counted or
    // grown.
    let before = cache.info();
    let overwritten: Vec<i64> = (next - 10..next).collect();
    let mixed: Vec<i64> = overwritten
        .iter()
        .copied()
        .chain(next..next + 50)
        .chain([next])
        .collect();
    let error = cache
        .batch_set(&mixed, &rows_of(&mixed, 2, 64), 2)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CapacityExceeded, "{error}");
    assert_eq!(cache.info(), before);
    let (out, _, _) = get(&cache, &overwritten);
    assert_eq!(
        out,
        rows_of(&overwritten, 1, 64),
        "stored rows were overwritten"
    );
    assert_eq!(
        cache.evict_older_than(2),
        stored,
        "stored rows were restamped"
    );
    let error = Cache::new(CacheConfig {
        max_memory_bytes: Some(10),
        ..config(64)
    })
    .err()
    .unwrap();
    assert!(error.message().contains("max_memory_bytes 10"), "{error}");
}

/// A memory bound refuses only what would pass it: a cache bounded at
/// exactly the bytes an unbounded twin held after k publishes takes those k
/// and refuses the next, which grows. (One shard, so that the sizes do not
/// depend on how the cache's hash key spreads the ids; `u64::MAX` bounds the
/// twin too, so it grows in the same steps.)
#[test]
fn max_memory_bytes_takes_every_publish_that_fits() {
    let bounded = |limit: u64| {
        Cache::new(CacheConfig {
            num_shards: 1,
            max_memory_bytes: Some(limit),
            ..CacheConfig::new(8)
        })
        .unwrap()
    };
    let batch = |k: i64| -> Vec<i64> { (k * 500..(k + 1) * 500).collect() };
    let twin = bounded(u64::MAX);
    let mut after = Vec::new();
    for k in 0..40 {
        let ids = batch(k);
        twin.batch_set(&ids, &rows_of(&ids, 1, 8), 1).unwrap();
        after.push(twin.info().memory_bytes);
    }
    // The last publish before a growth, so that the next one needs more.
    let k = (1..after.len())
        .rev()
        .find(|&k| after[k] > after[k - 1])
        .expect("the index or the rows grew")
        - 1;
    let limit = after[k];
    let cache = bounded(limit);
    for j in 0..=k as i64 {
        let ids = batch(j);
        cache
            .batch_set(&ids, &rows_of(&ids, 1, 8), 1)
            .unwrap_or_else(|error| panic!("publish {j} of {k} at {limit} bytes: {error}"));
    }
    assert_eq!(cache.info().memory_bytes, limit);
    let next = batch(k as i64 + 1);
    let error = cache
        .batch_set(&next, &rows_of(&next, 1, 8), 1)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CapacityExceeded, "{error}");
    assert_eq!(cache.info().rows, 500 * (k as u64 + 1));

    // And a reservation of exactly the bytes it takes.
    let reserved = bounded(u64::MAX);
    reserved.reserve(10_000).unwrap();
    let limit = reserved.info().memory_bytes;
    bounded(limit).reserve(10_000).unwrap();
    let error = bounded(limit - 1).reserve(10_000).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CapacityExceeded, "{error}");
}

/// `max_memory_bytes` may be as low as what an empty cache of its shard
/// count holds, and under an eviction policy as what leaves each shard room
/// for a row (docs/ABI_POLICY.md); one byte less is refused, naming it.
#[test]
fn max_memory_bytes_may_be_the_floor_but_not_below() {
    let with_limit = |limit: u64, eviction_policy: EvictionPolicy| {
        Cache::new(CacheConfig {
            max_memory_bytes: Some(limit),
            eviction_policy,
            ..config(64)
        })
    };
    let refused = |limit: u64, eviction_policy: EvictionPolicy| {
        let error = with_limit(limit, eviction_policy).err().expect("refused");
        assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
        assert!(error.message().contains("max_memory_bytes"), "{error}");
    };
    let empty = Cache::new(config(64)).unwrap().info().memory_bytes;
    with_limit(empty, EvictionPolicy::None).unwrap();
    refused(empty - 1, EvictionPolicy::None);

    // Under a policy: the least limit accepted, by bisection between one
    // refused and one that surely is not.
    let policy = EvictionPolicy::OldestTimestamp;
    let (mut low, mut high) = (empty - 1, empty + (1 << 20));
    refused(low, policy);
    with_limit(high, policy).unwrap();
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if with_limit(middle, policy).is_ok() {
            high = middle;
        } else {
            low = middle;
        }
    }
    refused(high - 1, policy);
    let cache = with_limit(high, policy).unwrap();
    let ids: Vec<i64> = (0..1000).collect();
    cache.batch_set(&ids, &rows_of(&ids, 1, 64), 1).unwrap();
    // The least limit leaves each shard room for a row (for the few that
    // its rows' first allocation holds).
    let info = cache.info();
    assert!(
        info.rows >= info.num_shards as u64,
        "a row in every shard: {} rows in {} shards",
        info.rows,
        info.num_shards
    );
    assert!(info.memory_bytes <= high);
}

#[test]
fn memory_accounting_covers_the_payload_with_bounded_overhead() {
    let cache = Cache::new(config(256)).unwrap();
    let ids: Vec<i64> = (0..200_000).collect();
    for chunk in ids.chunks(4096) {
        cache.batch_set(chunk, &rows_of(chunk, 0, 256), 0).unwrap();
    }
    let info = cache.info();
    let payload = 200_000 * 256;
    assert!(info.memory_bytes >= payload);
    let overhead_per_row = (info.memory_bytes - payload) as f64 / 200_000.0;
    assert!(
        overhead_per_row < 64.0,
        "{overhead_per_row} bytes per row beyond the payload"
    );
}

#[test]
fn config_errors_name_the_argument() {
    let error = Cache::new(CacheConfig::new(0)).err().unwrap();
    assert!(error.message().contains("row_bytes 0"), "{error}");
    let error = Cache::new(CacheConfig {
        num_shards: 100_000,
        ..CacheConfig::new(1)
    })
    .err()
    .unwrap();
    assert!(error.message().contains("num_shards 100000"), "{error}");
    assert!(TableName::new("no spaces").is_err());
    let info = Cache::new(CacheConfig {
        num_shards: 5,
        ..CacheConfig::new(3)
    })
    .unwrap()
    .info();
    assert_eq!((info.num_shards, info.row_bytes, info.rows), (8, 3, 0));
}

/// Looks up `wanted` and checks it got `row_of(id, version)` for the ids
/// `stored` says are there, zeros and a clear mask bit for the others.
fn assert_lookup(cache: &Cache, wanted: &[i64], stored: impl Fn(i64) -> bool, version: u8) {
    let row_bytes = cache.row_bytes();
    let (out, mask, stats) = get(cache, wanted);
    let hits = wanted.iter().filter(|&&id| stored(id)).count() as u64;
    let batch = format!("row_bytes {row_bytes}, {} ids", wanted.len());
    assert_eq!(stats.hits, hits, "{batch}");
    for (i, &id) in wanted.iter().enumerate() {
        let row = &out[i * row_bytes..][..row_bytes];
        if stored(id) {
            assert_eq!(row, row_of(id, version, row_bytes), "{batch}: id {id}");
            assert_eq!(mask[i], 1, "{batch}: id {id}");
        } else {
            assert!(row.iter().all(|&b| b == 0), "{batch}: id {id}");
            assert_eq!(mask[i], 0, "{batch}: id {id}");
        }
    }
}

#[test]
fn every_row_width_round_trips_including_the_specialized_ones() {
    for row_bytes in [1, 63, 64, 128, 192, 256, 512, 1000, 1024, 4096] {
        let cache = Cache::new(config(row_bytes)).unwrap();
        let ids: Vec<i64> = (0..300).map(|i| i * 3).collect();
        cache
            .batch_set(&ids, &rows_of(&ids, 9, row_bytes), 1)
            .unwrap();
        let wanted: Vec<i64> = (0..900).rev().collect();
        assert_lookup(&cache, &wanted, |id| id % 3 == 0, 9);
    }
}

/// A cache of `num_shards` shards holding the `count` even ids from 0, each
/// with `row_of(id, version)`.
fn cache_of_even_ids(num_shards: usize, row_bytes: usize, count: i64, version: u8) -> Cache {
    let cache = Cache::new(CacheConfig {
        num_shards,
        ..CacheConfig::new(row_bytes)
    })
    .unwrap();
    let ids: Vec<i64> = (0..count).map(|i| i * 2).collect();
    cache
        .batch_set(&ids, &rows_of(&ids, version, row_bytes), 1)
        .unwrap();
    cache
}

#[test]
fn lookups_spread_thinly_over_many_shards_read_the_right_rows() {
    // A lookup takes consecutive shards' ids in one pipeline until it holds
    // 256 ids or 32 shards. Over 256 shards these batches put a few ids in
    // each, so the shard cap splits them; over 16, the id cap does. The
    // lengths start and end spans on either side of both caps.
    for num_shards in [16, 256] {
        for row_bytes in [64, 100] {
            let cache = cache_of_even_ids(num_shards, row_bytes, 2000, 7);
            // Every id below 4000 once, in an order that scatters the shards.
            let wanted: Vec<i64> = (0..4000).map(|i| i * 7_919 % 4000).collect();
            for len in [1, 2, 31, 32, 33, 100, 255, 256, 257, 600, 4000] {
                assert_lookup(&cache, &wanted[..len], |id| id % 2 == 0, 7);
            }
        }
    }
}

#[test]
fn every_batch_length_around_the_prefetch_distances_reads_the_right_rows() {
    // A lookup resolves 4 to 16 ids ahead of the row it copies, depending on
    // the row width, and asks for buckets twice as far ahead. With one shard
    // a batch is one pipeline, so these lengths start, fill and drain it at
    // every distance.
    for row_bytes in [64, 100, 256, 1024] {
        let cache = cache_of_even_ids(1, row_bytes, 40, 5);
        let wanted: Vec<i64> = (0..40).map(|i| i * 7 % 80).collect();
        for len in 0..=wanted.len() {
            assert_lookup(&cache, &wanted[..len], |id| id % 2 == 0, 5);
        }
    }
}

/// Zero pages mapped read-only and reserving nothing: room for more ids (or
/// rows) than one batch may hold, in a test that must touch none of them.
#[cfg(target_pointer_width = "64")]
struct UntouchedZeros {
    start: *mut libc::c_void,
    len: usize,
}

#[cfg(target_pointer_width = "64")]
impl UntouchedZeros {
    fn new(len: usize) -> UntouchedZeros {
        // SAFETY: a new private anonymous mapping, at an address the kernel
        // picks, aliases nothing.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(start, libc::MAP_FAILED, "mapping {len} bytes");
        UntouchedZeros { start, len }
    }

    fn ids(&self, count: usize) -> &[i64] {
        // SAFETY: zero bits are an i64 (0).
        unsafe { self.zeros(count) }
    }

    fn bytes(&self, count: usize) -> &[u8] {
        // SAFETY: zero bits are a u8 (0).
        unsafe { self.zeros(count) }
    }

    /// # Safety
    ///
    /// All-zero bits must be a valid `T`.
    unsafe fn zeros<T>(&self, count: usize) -> &[T] {
        assert!(count * size_of::<T>() <= self.len);
        // SAFETY: the mapping is readable, zero-filled (a valid `T`, as the
        // caller promises), page-aligned, at least `count` elements long, and
        // lives as long as `self`; nothing writes to it.
        unsafe { std::slice::from_raw_parts(self.start.cast::<T>(), count) }
    }
}

#[cfg(target_pointer_width = "64")]
impl Drop for UntouchedZeros {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made, which no slice
        // outlives.
        unsafe { libc::munmap(self.start, self.len) };
    }
}

/// Batch positions are 32-bit: past `u32::MAX` ids, one would wrap onto
/// another, so a publish or removal that long is refused whole and changes
/// nothing.
#[cfg(target_pointer_width = "64")]
#[test]
fn a_batch_of_more_than_u32_max_ids_is_refused_and_changes_nothing() {
    let n = u32::MAX as usize + 1;
    let ids_map = UntouchedZeros::new(n * size_of::<i64>());
    let rows_map = UntouchedZeros::new(n);
    let ids = ids_map.ids(n);
    let cache = Cache::new(config(1)).unwrap();
    cache.batch_set(&[0, 7], &[5, 7], 1).unwrap();
    let before = cache.info();
    let published = cache.batch_set(ids, rows_map.bytes(n), 2).unwrap_err();
    let removed = cache.batch_remove(ids).unwrap_err();
    for refused in [published, removed] {
        assert_eq!(refused.kind(), ErrorKind::InvalidArgument);
        assert!(
            refused.to_string().contains("4294967295 ids in one batch"),
            "{refused}"
        );
    }
    assert_eq!(cache.info(), before);
    let (out, mask, _) = get(&cache, &[0, 7]);
    assert_eq!((out, mask), (vec![5, 7], vec![1, 1]));
}
