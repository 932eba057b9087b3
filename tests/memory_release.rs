//! What a cache frees goes back to the operating system: the index tables a
//! fill outgrows, the rows `compact` packs away, and the whole cache when it
//! is dropped. The cache's own account (`memory_bytes`) is computed from
//! lengths, so only the process's address space shows a mapping left behind.
//! One test in its own process, so that no other test maps memory meanwhile.
#![cfg(target_os = "linux")]

use kvzch::{Cache, CacheConfig};

#[path = "common/memory.rs"]
mod memory;
use memory::mapped_bytes;

const ROW_BYTES: usize = 256;
const ROWS: usize = 400_000;
const BATCH: usize = 4096;
const MIB: u64 = 1 << 20;

#[test]
fn a_cache_unmaps_what_it_outgrows_compacts_away_and_drops() {
    // The test's own buffers, allocated before the first measurement.
    let ids: Vec<i64> = (0..ROWS as i64).collect();
    let rows = vec![7u8; BATCH * ROW_BYTES];
    let publish = |cache: &Cache, ids: &[i64], timestamp| {
        for batch in ids.chunks(BATCH) {
            let bytes = &rows[..batch.len() * ROW_BYTES];
            cache.batch_set(batch, bytes, timestamp).unwrap();
        }
    };
    let before = mapped_bytes();
    // What the cache added to the address space, which must stay within a
    // little of its own account: a table or a part of a mapping left mapped
    // would show (17 to 120 MB more in each such mutation tried).
    let mapped_as_accounted = |cache: &Cache, after: &str| {
        let mapped = mapped_bytes() - before;
        let account = cache.info().memory_bytes;
        eprintln!(
            "{after}: {} MiB mapped, {} MiB accounted",
            mapped / MIB,
            account / MIB
        );
        assert!(
            mapped <= account + 4 * MIB,
            "{after}: {mapped} bytes mapped, {account} accounted"
        );
        mapped
    };

    let cache = Cache::new(CacheConfig::new(ROW_BYTES)).unwrap();
    publish(&cache, &ids, 1);
    // Each shard's index and rows grew many times on the way.
    let filled = mapped_as_accounted(&cache, "filled");
    let payload = (ROWS * ROW_BYTES) as u64;
    assert!(
        filled >= payload,
        "{filled} bytes mapped for {payload} of rows"
    );

    // A tenth published again, the rest evicted and compacted away.
    publish(&cache, &ids[..ROWS / 10], 2);
    assert_eq!(cache.evict_older_than(2), (ROWS - ROWS / 10) as u64);
    cache.compact().unwrap();
    let compacted = mapped_as_accounted(&cache, "compacted");
    assert!(
        filled - compacted >= payload * 8 / 10,
        "compacting unmapped {} bytes",
        filled - compacted
    );

    drop(cache);
    let dropped = mapped_bytes().saturating_sub(before);
    eprintln!("dropped: {} MiB mapped", dropped / MIB);
    assert!(
        dropped <= 8 * MIB,
        "{dropped} bytes still mapped after the cache was dropped"
    );
}
