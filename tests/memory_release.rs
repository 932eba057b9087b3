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

    let cache = Cache::new(CacheConfig::new(ROW_BYTES)).unwrap();
    publish(&cache, &ids, 1);
    let filled = mapped_bytes() - before;
    let account = cache.info().memory_bytes;
    eprintln!(
        "filled: {} MiB mapped, {} MiB accounted",
        filled / MIB,
        account / MIB
    );
    let payload = (ROWS * ROW_BYTES) as u64;
    assert!(
        filled >= payload,
        "{filled} bytes mapped for {payload} of rows"
    );
    // Each shard's index and rows grew many times on the way, each index into
    // a new table: a table or a part of a mapping left mapped would show here
    // (17 to 117 MB more in each such mutation tried).
    assert!(
        filled <= account + 4 * MIB,
        "{filled} bytes mapped, {account} accounted"
    );

    // A tenth published again, the rest evicted and compacted away.
    publish(&cache, &ids[..ROWS / 10], 2);
    assert_eq!(cache.evict_older_than(2), (ROWS - ROWS / 10) as u64);
    cache.compact().unwrap();
    let compacted = mapped_bytes() - before;
    let account = cache.info().memory_bytes;
    eprintln!(
        "compacted: {} MiB mapped, {} MiB accounted",
        compacted / MIB,
        account / MIB
    );
    assert!(
        compacted <= account + 4 * MIB,
        "{compacted} bytes mapped, {account} accounted"
    );
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
