//! A lookup allocates nothing once its thread has looked up a batch of its
//! size (DESIGN.md: no allocation per batch; `cache/batch.rs` keeps the
//! scratch per thread). A serving thread's `batch_get` then never waits on
//! the allocator's locks nor grows the heap, whichever path the batch takes:
//! runs in the batch's order, grouped by shard (more shards than a run
//! holds), recency marks (`LRU_APPROX`), a hit mask, registered sinks, and the
//! C ABI with its `stats`. A test binary of its own: it counts this process's
//! allocations, per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kvzch::ffi::*;
use kvzch::{Cache, CacheConfig, EvictionPolicy, TableName};

mod common;
use common::Rng;
#[path = "common/ffi.rs"]
mod ffi_calls;
use ffi_calls::{batch_get, batch_set, created, last_error, options};

thread_local! {
    /// Allocations and reallocations this thread made.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: a thread's own exit frees memory after its locals are gone.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

/// The system allocator, counting.
struct Counting;

// SAFETY: every call goes to `System` with the caller's arguments unchanged,
// so `System`'s guarantees are this allocator's; the count touches no memory
// the allocator hands out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller keeps `alloc`'s contract, which `System` has too.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` came from this allocator, that is from `System`, with
        // `layout`; the caller keeps `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_by(mut work: impl FnMut()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

const ROW_BYTES: usize = 64;
const STORED: i64 = 20_000;
const BATCH: usize = 4096;

/// Batches of ids from a tenth past the stored ones, so some miss.
fn batches() -> Vec<Vec<i64>> {
    let mut rng = Rng(1);
    (0..8)
        .map(|_| {
            (0..BATCH)
                .map(|_| (rng.next() % (STORED as u64 * 11 / 10)) as i64)
                .collect()
        })
        .collect()
}

fn filled(name: &str, num_shards: usize, eviction_policy: EvictionPolicy) -> Cache {
    let cache = Cache::new(CacheConfig {
        num_shards,
        eviction_policy,
        max_rows: (eviction_policy != EvictionPolicy::None).then_some(STORED as u64 * 2),
        name: TableName::new(name).unwrap(),
        ..CacheConfig::new(ROW_BYTES)
    })
    .unwrap();
    let ids: Vec<i64> = (0..STORED).collect();
    cache
        .batch_set(&ids, &vec![7; ids.len() * ROW_BYTES], 1)
        .unwrap();
    cache
}

/// Holds off this binary's other test while one runs: the global sink the
/// first registers is called by the second's batches too, and the first call
/// of any sink on a thread allocates that thread's record of the sinks it
/// runs. Registered between the second's warm-up and its counted pass, it
/// would fail that test for the other's doing.
fn alone() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn lookups_allocate_nothing_after_their_first_batch() {
    let _alone = alone();
    let batches = batches();
    let mut out = vec![0u8; BATCH * ROW_BYTES];
    let mut hit_mask = vec![0u8; BATCH];
    let global_sink = kvzch::register_global_sink(Box::new(|_| {}));
    // 8 shards are looked up in runs in the batch's order, 64 grouped by shard.
    for (name, num_shards, policy) in [
        ("in_order", 8, EvictionPolicy::None),
        ("grouped", 64, EvictionPolicy::None),
        ("recency", 8, EvictionPolicy::LruApprox),
    ] {
        let cache = filled(name, num_shards, policy);
        cache.register_stat_sink(Box::new(|_| {}));
        let mut look_up_all = || {
            for ids in &batches {
                let stats = cache.batch_get(ids, &mut out, Some(&mut hit_mask)).unwrap();
                assert!(stats.hits > 0 && stats.misses > 0, "{stats:?}");
            }
        };
        look_up_all();
        assert_eq!(allocations_by(look_up_all), 0, "{name}");
    }
    kvzch::unregister_global_sink(global_sink).unwrap();
}

#[test]
fn c_lookups_allocate_nothing_after_their_first_batch() {
    let _alone = alone();
    let cache = created(&options(ROW_BYTES as u32));
    let ids: Vec<i64> = (0..STORED).collect();
    assert_eq!(
        batch_set(cache, &ids, &vec![7; ids.len() * ROW_BYTES], 1),
        kvzch_status::KVZCH_STATUS_OK
    );
    let batches = batches();
    let mut out = vec![0u8; BATCH * ROW_BYTES];
    let mut look_up_all = || {
        for ids in &batches {
            let mut stats = kvzch_batch_stats::default();
            let status = batch_get(cache, ids, &mut out, Some(&mut stats));
            assert_eq!(status, kvzch_status::KVZCH_STATUS_OK, "{}", last_error());
            assert!(stats.hits > 0 && stats.misses > 0);
        }
    };
    look_up_all();
    assert_eq!(allocations_by(look_up_all), 0);
    kvzch_cache_destroy(cache);
}
