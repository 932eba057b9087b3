//! The 1.1, 1.2 and 1.3 additions through the C ABI, and that structs and tables
//! sized by older hosts keep working.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use kvzch::ffi::*;

#[path = "common/ffi.rs"]
mod ffi_calls;
use ffi_calls::{batch_get, batch_set, create, info, last_error, options};

const OPTIONS_1_0: usize = 40;
const INFO_1_0: usize = 32;

/// Bytes aligned for any of the ABI's structs, as a host's struct would be.
#[repr(C, align(8))]
struct Aligned<const N: usize>([u8; N]);

impl<const N: usize> Aligned<N> {
    fn filled(byte: u8) -> Self {
        Aligned([byte; N])
    }

    fn as_mut_ptr<T>(&mut self) -> *mut T {
        self.0.as_mut_ptr().cast()
    }

    /// Asserts that a call filled exactly `size` bytes of a struct that had
    /// been filled with 0xEE: its leading `struct_size` says `size`, and no
    /// byte past it was written.
    fn assert_filled_exactly(&self, size: usize, what: &str) {
        assert_eq!(
            u32::from_ne_bytes(self.0[..4].try_into().unwrap()) as usize,
            size,
            "{what}: struct_size"
        );
        assert!(
            self.0[size..].iter().all(|&b| b == 0xEE),
            "{what}: wrote past {size} bytes"
        );
    }
}

#[test]
fn options_init_writes_only_the_1_0_fields() {
    let mut bytes = Aligned::<64>::filled(0xEE);
    kvzch_options_init(bytes.as_mut_ptr());
    bytes.assert_filled_exactly(OPTIONS_1_0, "kvzch_options_init");

    let mut bytes = Aligned::<64>::filled(0xEE);
    let status = kvzch_options_init_sized(bytes.as_mut_ptr(), 48);
    assert_eq!(status, kvzch_status::KVZCH_STATUS_OK);
    assert_eq!(u32::from_ne_bytes(bytes.0[..4].try_into().unwrap()), 48);
    assert!(
        bytes.0[40..48].iter().all(|&b| b == 0),
        "1.1 fields default to 0"
    );
    assert!(bytes.0[48..].iter().all(|&b| b == 0xEE));
    assert_eq!(
        kvzch_options_init_sized(bytes.as_mut_ptr(), 39),
        kvzch_status::KVZCH_STATUS_INVALID_ARGUMENT
    );
}

#[test]
fn a_1_0_sized_options_struct_creates_a_cache_without_a_policy() {
    let mut options = options(8);
    options.struct_size = OPTIONS_1_0 as u32;
    options.max_rows = 1;
    // Bytes past a 1.0 host's struct are not its own: never read.
    options.eviction_policy = 99;
    let cache = create(&options).unwrap();
    // Without a policy (the default), a full cache refuses a new id rather
    // than evicting for it.
    let row = [1u8; 8];
    for (id, expected) in [
        (1i64, kvzch_status::KVZCH_STATUS_OK),
        (2, kvzch_status::KVZCH_STATUS_CAPACITY_EXCEEDED),
    ] {
        assert_eq!(
            kvzch_cache_batch_set(cache, &id, 1, row.as_ptr().cast(), row.len(), 1),
            expected,
            "id {id}"
        );
    }
    kvzch_cache_destroy(cache);
}

#[test]
fn bad_1_1_options_are_rejected() {
    let mut bad_policy = options(8);
    bad_policy.eviction_policy = 3;
    assert_eq!(
        create(&bad_policy).unwrap_err(),
        kvzch_status::KVZCH_STATUS_INVALID_ARGUMENT
    );
    let mut reserved = options(8);
    reserved.reserved1 = 1;
    assert_eq!(
        create(&reserved).unwrap_err(),
        kvzch_status::KVZCH_STATUS_UNSUPPORTED
    );
}

/// Each policy value reaches the engine as that policy. Hot rows, stamped
/// oldest and read before every publish of new ids, are what `LRU_APPROX`
/// keeps and what `OLDEST_TIMESTAMP` takes first.
#[test]
fn each_eviction_policy_value_selects_its_policy() {
    for (policy, hot_rows_kept) in [
        (KVZCH_EVICT_LRU_APPROX, 500),
        (KVZCH_EVICT_OLDEST_TIMESTAMP, 0),
    ] {
        let mut options = options(8);
        options.num_shards = 1;
        options.max_rows = 1200;
        options.eviction_policy = policy;
        let cache = create(&options).unwrap();
        let publish = |ids: &[i64], timestamp: u32| {
            let rows = vec![1u8; ids.len() * 8];
            let status = batch_set(cache, ids, &rows, timestamp);
            assert_eq!(status, kvzch_status::KVZCH_STATUS_OK, "{}", last_error());
        };
        let hits = |ids: &[i64]| {
            let mut out = vec![0u8; ids.len() * 8];
            let mut stats = kvzch_batch_stats::default();
            let status = batch_get(cache, ids, &mut out, Some(&mut stats));
            assert_eq!(status, kvzch_status::KVZCH_STATUS_OK, "{}", last_error());
            stats.hits
        };
        let hot: Vec<i64> = (0..500).collect();
        let cold: Vec<i64> = (500..1000).collect();
        publish(&hot, 1);
        publish(&cold, 2);
        for round in 0..10 {
            hits(&hot);
            let fresh: Vec<i64> = (10_000 + round * 100..10_100 + round * 100).collect();
            publish(&fresh, 3 + round as u32);
        }
        assert_eq!(
            (hits(&hot), info(cache).capacity_evictions),
            (hot_rows_kept, 800),
            "policy {policy}"
        );
        kvzch_cache_destroy(cache);
    }
}

#[test]
fn a_policy_evicts_and_info_counts_it_in_both_struct_sizes() {
    let mut options = options(8);
    options.max_rows = 16;
    options.eviction_policy = KVZCH_EVICT_LRU_APPROX;
    let cache = create(&options).unwrap();
    let ids: Vec<i64> = (0..100).collect();
    let rows = vec![1u8; 800];
    let status = kvzch_cache_batch_set(cache, ids.as_ptr(), 100, rows.as_ptr().cast(), 800, 1);
    assert_eq!(status, kvzch_status::KVZCH_STATUS_OK);

    // SAFETY: all-zero is a valid kvzch_cache_info.
    let mut info: kvzch_cache_info = unsafe { std::mem::zeroed() };
    info.struct_size = size_of::<kvzch_cache_info>() as u32;
    assert_eq!(
        kvzch_cache_get_info(cache, &mut info),
        kvzch_status::KVZCH_STATUS_OK
    );
    assert_eq!(info.struct_size as usize, size_of::<kvzch_cache_info>());
    // One shard holds all 16 (the default shard count keeps shares large).
    assert_eq!(info.rows, 16);
    assert_eq!(info.inserts, 16);
    assert_eq!(info.capacity_evictions, 84);

    let mut old = Aligned::<72>::filled(0xEE);
    old.0[..4].copy_from_slice(&(INFO_1_0 as u32).to_ne_bytes());
    assert_eq!(
        kvzch_cache_get_info(cache, old.as_mut_ptr()),
        kvzch_status::KVZCH_STATUS_OK
    );
    old.assert_filled_exactly(INFO_1_0, "a 1.0 host's kvzch_cache_info");

    assert_eq!(kvzch_cache_compact(cache), kvzch_status::KVZCH_STATUS_OK);
    assert_eq!(
        kvzch_cache_compact(ptr::null_mut()),
        kvzch_status::KVZCH_STATUS_NULL_ARGUMENT
    );
    kvzch_cache_destroy(cache);
}

#[test]
fn the_plugin_table_and_features_include_1_1() {
    assert_eq!(kvzch_abi_version(), 1 << 16 | 3);
    for feature in [
        c"capacity_eviction",
        c"compact",
        c"cache_info_counters",
        c"options_init_sized",
    ] {
        assert!(kvzch_has_feature(feature.as_ptr()), "{feature:?}");
    }
    // SAFETY: all-zero is a valid table (every entry NULL).
    let mut table: kvzch_api_v1 = unsafe { std::mem::zeroed() };
    let size = size_of::<kvzch_api_v1>();
    assert_eq!(
        kvzch_get_api(1, &mut table, size),
        kvzch_status::KVZCH_STATUS_OK
    );
    assert_eq!(table.struct_size as usize, size);
    assert!(table.cache_compact.is_some() && table.options_init_sized.is_some());
    // A 1.0 host's table ends where 1.1 began, a 1.1 host's where 1.2 began,
    // a 1.2 host's where 1.3 began: each gets only what it knows.
    for older in [
        std::mem::offset_of!(kvzch_api_v1, cache_compact),
        std::mem::offset_of!(kvzch_api_v1, cache_reserve),
        std::mem::offset_of!(kvzch_api_v1, cache_register_stat_sink_with_release),
    ] {
        let mut short = Aligned::<256>::filled(0xEE);
        let status = kvzch_get_api(1, short.as_mut_ptr(), older);
        assert_eq!(status, kvzch_status::KVZCH_STATUS_OK);
        short.assert_filled_exactly(older, "an older host's kvzch_api_v1");
    }
}

#[test]
fn reserve_is_in_the_plugin_table_and_features_of_1_2() {
    assert!(kvzch_has_feature(c"reserve".as_ptr()));
    // SAFETY: all-zero is a valid table (every entry NULL).
    let mut table: kvzch_api_v1 = unsafe { std::mem::zeroed() };
    assert_eq!(
        kvzch_get_api(1, &mut table, size_of::<kvzch_api_v1>()),
        kvzch_status::KVZCH_STATUS_OK
    );
    let reserve = table.cache_reserve.expect("the 1.2 entry");
    assert_eq!(
        reserve(ptr::null_mut(), 1),
        kvzch_status::KVZCH_STATUS_NULL_ARGUMENT
    );
    assert!(last_error().starts_with("kvzch_cache_reserve"));
}

#[test]
fn reserve_grows_the_index_and_refuses_what_cannot_fit() {
    let mut options = options(8);
    options.max_rows = 1_000;
    let cache = create(&options).unwrap();
    let before = info(cache);
    assert_eq!(
        kvzch_cache_reserve(cache, 1_000),
        kvzch_status::KVZCH_STATUS_OK
    );
    let reserved = info(cache);
    assert!(reserved.memory_bytes > before.memory_bytes);
    assert_eq!(reserved.rows, 0);

    assert_eq!(
        kvzch_cache_reserve(cache, 1_001),
        kvzch_status::KVZCH_STATUS_CAPACITY_EXCEEDED
    );
    assert!(
        last_error().starts_with("kvzch_cache_reserve") && last_error().contains("max_rows 1000"),
        "{}",
        last_error()
    );
    assert_eq!(
        kvzch_cache_reserve(cache, u64::MAX),
        kvzch_status::KVZCH_STATUS_INVALID_ARGUMENT
    );
    assert!(last_error().contains("additional_rows"), "{}", last_error());
    assert_eq!(info(cache).memory_bytes, reserved.memory_bytes);
    assert_eq!(
        kvzch_cache_reserve(ptr::null_mut(), 1),
        kvzch_status::KVZCH_STATUS_NULL_ARGUMENT
    );
    kvzch_cache_destroy(cache);
}

/// What a sink registered with a release callback sees, as its `user_data`.
#[derive(Default)]
struct Released {
    calls: AtomicU64,
    calls_running: AtomicU64,
    releases: AtomicU64,
    /// A call that began after the release, or a release during a call.
    out_of_order: AtomicBool,
    /// Set: the sink unregisters itself from this cache in its first call.
    unregister_from: AtomicPtr<kvzch_cache>,
    /// The sink's id, written by the registration.
    id: AtomicU64,
}

impl Released {
    fn user_data(&self) -> *mut c_void {
        ptr::from_ref(self).cast_mut().cast()
    }

    fn releases(&self) -> u64 {
        self.releases.load(Ordering::SeqCst)
    }

    fn calls_and_releases(&self) -> (u64, u64) {
        (self.calls.load(Ordering::SeqCst), self.releases())
    }
}

unsafe extern "C" fn counting_sink(user_data: *mut c_void, _event: *const kvzch_batch_event) {
    // SAFETY: every registration below passes a `Released` that outlives it.
    let seen = unsafe { &*user_data.cast::<Released>() };
    seen.calls_running.fetch_add(1, Ordering::SeqCst);
    if seen.releases() != 0 {
        seen.out_of_order.store(true, Ordering::SeqCst);
    }
    seen.calls.fetch_add(1, Ordering::SeqCst);
    let cache = seen.unregister_from.swap(ptr::null_mut(), Ordering::SeqCst);
    if !cache.is_null() {
        let id = seen.id.load(Ordering::SeqCst);
        assert_eq!(
            kvzch_cache_unregister_stat_sink(cache, id),
            kvzch_status::KVZCH_STATUS_OK
        );
        // Unregistered, but this call still runs: not released yet.
        if seen.releases() != 0 {
            seen.out_of_order.store(true, Ordering::SeqCst);
        }
    }
    seen.calls_running.fetch_sub(1, Ordering::SeqCst);
}

unsafe extern "C" fn counting_release(user_data: *mut c_void) {
    // SAFETY: as for `counting_sink`.
    let seen = unsafe { &*user_data.cast::<Released>() };
    if seen.calls_running.load(Ordering::SeqCst) != 0 {
        seen.out_of_order.store(true, Ordering::SeqCst);
    }
    seen.releases.fetch_add(1, Ordering::SeqCst);
}

/// Registers `counting_sink` with `counting_release` on `cache`.
fn register_released(cache: *mut kvzch_cache, seen: &Released) {
    assert_eq!(
        kvzch_cache_register_stat_sink_with_release(
            cache,
            Some(counting_sink),
            seen.user_data(),
            Some(counting_release),
            seen.id.as_ptr(),
        ),
        kvzch_status::KVZCH_STATUS_OK,
        "{}",
        last_error()
    );
}

fn one_row_cache() -> *mut kvzch_cache {
    let cache = create(&options(4)).unwrap();
    assert_eq!(
        batch_set(cache, &[1], &[1; 4], 0),
        kvzch_status::KVZCH_STATUS_OK
    );
    cache
}

fn look_up(cache: *mut kvzch_cache) {
    let mut out = [0u8; 4];
    assert_eq!(
        batch_get(cache, &[1], &mut out, None),
        kvzch_status::KVZCH_STATUS_OK
    );
}

#[test]
fn release_is_in_the_plugin_table_and_features_of_1_3() {
    assert!(kvzch_has_feature(c"stat_sink_release".as_ptr()));
    // SAFETY: all-zero is a valid table (every entry NULL).
    let mut table: kvzch_api_v1 = unsafe { std::mem::zeroed() };
    assert_eq!(
        kvzch_get_api(1, &mut table, size_of::<kvzch_api_v1>()),
        kvzch_status::KVZCH_STATUS_OK
    );
    let seen = Released::default();
    let register = table
        .cache_register_stat_sink_with_release
        .expect("the 1.3 cache entry");
    let cache = one_row_cache();
    assert_eq!(
        register(
            cache,
            Some(counting_sink),
            seen.user_data(),
            Some(counting_release),
            seen.id.as_ptr()
        ),
        kvzch_status::KVZCH_STATUS_OK
    );
    kvzch_cache_destroy(cache);
    assert_eq!(seen.releases(), 1);
    let register_global = table
        .register_global_stat_sink_with_release
        .expect("the 1.3 global entry");
    assert_eq!(
        register_global(
            None,
            seen.user_data(),
            Some(counting_release),
            seen.id.as_ptr()
        ),
        kvzch_status::KVZCH_STATUS_NULL_ARGUMENT
    );
    assert!(last_error().starts_with("kvzch_register_global_stat_sink_with_release"));
}

#[test]
fn an_unregistered_sink_is_released_once_after_its_last_call() {
    let cache = one_row_cache();
    let seen = Released::default();
    register_released(cache, &seen);
    look_up(cache);
    look_up(cache);
    assert_eq!(seen.calls_and_releases(), (2, 0));
    let id = seen.id.load(Ordering::SeqCst);
    assert_eq!(
        kvzch_cache_unregister_stat_sink(cache, id),
        kvzch_status::KVZCH_STATUS_OK
    );
    // No batch ran beside it, so the unregister let go of the sink itself.
    assert_eq!(seen.releases(), 1);
    assert_eq!(
        kvzch_cache_unregister_stat_sink(cache, id),
        kvzch_status::KVZCH_STATUS_NOT_FOUND
    );
    look_up(cache);
    kvzch_cache_destroy(cache);
    assert_eq!(seen.calls_and_releases(), (2, 1));
    assert!(!seen.out_of_order.load(Ordering::SeqCst));
}

#[test]
fn a_sink_that_unregisters_itself_is_released_as_its_call_returns() {
    let cache = one_row_cache();
    let seen = Released::default();
    register_released(cache, &seen);
    seen.unregister_from.store(cache, Ordering::SeqCst);
    look_up(cache);
    // Released inside that batch_get, once the call had returned.
    assert_eq!(seen.releases(), 1);
    look_up(cache);
    kvzch_cache_destroy(cache);
    assert_eq!(seen.calls_and_releases(), (1, 1));
    assert!(!seen.out_of_order.load(Ordering::SeqCst));
}

#[test]
fn destroying_a_cache_releases_its_sinks_and_a_null_release_is_none() {
    let cache = one_row_cache();
    let (first, second) = (Released::default(), Released::default());
    register_released(cache, &first);
    register_released(cache, &second);
    let unreleased = Released::default();
    assert_eq!(
        kvzch_cache_register_stat_sink_with_release(
            cache,
            Some(counting_sink),
            unreleased.user_data(),
            None,
            unreleased.id.as_ptr(),
        ),
        kvzch_status::KVZCH_STATUS_OK
    );
    look_up(cache);
    kvzch_cache_destroy(cache);
    for seen in [&first, &second] {
        assert_eq!(seen.calls_and_releases(), (1, 1));
    }
    assert_eq!(unreleased.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_refused_registration_is_never_released() {
    let cache = one_row_cache();
    let seen = Released::default();
    let release = Some(counting_release as unsafe extern "C" fn(*mut c_void));
    let sink = Some(counting_sink as unsafe extern "C" fn(*mut c_void, *const kvzch_batch_event));
    let id = seen.id.as_ptr();
    let refusals = [
        kvzch_cache_register_stat_sink_with_release(
            ptr::null_mut(),
            sink,
            seen.user_data(),
            release,
            id,
        ),
        kvzch_cache_register_stat_sink_with_release(cache, None, seen.user_data(), release, id),
        kvzch_cache_register_stat_sink_with_release(
            cache,
            sink,
            seen.user_data(),
            release,
            ptr::null_mut(),
        ),
        kvzch_register_global_stat_sink_with_release(None, seen.user_data(), release, id),
        kvzch_register_global_stat_sink_with_release(
            sink,
            seen.user_data(),
            release,
            ptr::null_mut(),
        ),
    ];
    assert!(refusals
        .iter()
        .all(|&status| status == kvzch_status::KVZCH_STATUS_NULL_ARGUMENT));
    look_up(cache);
    kvzch_cache_destroy(cache);
    assert_eq!(seen.calls_and_releases(), (0, 0));
}

/// Sets its flag as it drops, so a failed assertion stops the lookups
/// instead of leaving the test waiting for them.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Yields until `done` or 10 s have passed.
fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() && Instant::now() < deadline {
        thread::yield_now();
    }
}

#[test]
fn a_global_sink_is_released_by_its_unregister_never_during_a_call() {
    let cache = AtomicPtr::new(one_row_cache());
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                look_up(cache.load(Ordering::Relaxed));
            }
        });
        let _stop_lookups = SetOnDrop(&stop);
        for _ in 0..200 {
            let seen = Released::default();
            assert_eq!(
                kvzch_register_global_stat_sink_with_release(
                    Some(counting_sink),
                    seen.user_data(),
                    Some(counting_release),
                    seen.id.as_ptr(),
                ),
                kvzch_status::KVZCH_STATUS_OK
            );
            wait_until(|| seen.calls.load(Ordering::SeqCst) != 0);
            assert_eq!(
                kvzch_unregister_global_stat_sink(seen.id.load(Ordering::SeqCst)),
                kvzch_status::KVZCH_STATUS_OK
            );
            // Released by now or by the batch that still held it; `seen`
            // outlives both, since that batch returns before the next one.
            wait_until(|| seen.releases() != 0);
            assert_eq!(seen.releases(), 1);
            assert!(!seen.out_of_order.load(Ordering::SeqCst));
        }
    });
    kvzch_cache_destroy(cache.into_inner());
}
