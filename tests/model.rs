//! Model-based property tests: random sequences of every data and counter call,
//! checked against a `HashMap` model of the contents and plain integers for the
//! counters. Ids come mostly from a small range (plus the extremes), so
//! duplicates within a batch and collisions across calls are the rule.
//!
//! Two properties: one drives the Rust engine (`kvzch::Cache`), the other the
//! same kind of sequence through the C ABI (`kvzch::ffi`) with raw pointers,
//! optional out-params, and a per-cache and a global sink checked against the
//! model too.
//!
//! Cases: 1024 per property by default; `PROPTEST_CASES=N` runs N instead.
//! `cargo test --release --test model`.

#![allow(unused_unsafe)]

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_void, CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};

use kvzch::ffi::*;
use kvzch::{Cache, CacheConfig, MissPolicy, TableName};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

// ---------------------------------------------------------------- generators

/// An id: mostly from -20..20, sometimes an extreme or anything at all.
fn id() -> impl Strategy<Value = i64> {
    prop_oneof![
        24 => -20i64..20,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN + 1),
        1 => any::<i64>(),
    ]
}

fn ids() -> impl Strategy<Value = Vec<i64>> {
    prop_oneof![
        1 => Just(Vec::new()),
        12 => prop::collection::vec(id(), 1..12),
        2 => prop::collection::vec(id(), 12..64),
    ]
}

/// A timestamp (or eviction threshold): mostly small so that they collide, and
/// the edges of `u32`.
fn time() -> impl Strategy<Value = u32> {
    prop_oneof![
        12 => 0u32..8,
        1 => Just(0u32),
        1 => Just(u32::MAX),
        1 => Just(u32::MAX - 1),
        1 => any::<u32>(),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Set {
        ids: Vec<i64>,
        ts: u32,
        salt: u8,
    },
    Get {
        ids: Vec<i64>,
        mask: bool,
        stats: bool,
        prefill: u8,
    },
    Remove {
        ids: Vec<i64>,
        out: bool,
    },
    Evict {
        threshold: u32,
        out: bool,
    },
    Window,
    Cumulative,
    Info,
    /// A publish of 400..1300 ids from -3000..3000: more than one write
    /// stretch per shard and a table of several buckets.
    BigSet {
        seed: u64,
        len: usize,
        ts: u32,
    },
    /// A lookup of 4000..9000 ids: several lookup windows.
    BigGet {
        seed: u64,
        len: usize,
        mask: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (ids(), time(), any::<u8>()).prop_map(|(ids, ts, salt)| Op::Set { ids, ts, salt }),
        10 => (ids(), any::<bool>(), any::<bool>(), any::<u8>())
            .prop_map(|(ids, mask, stats, prefill)| Op::Get { ids, mask, stats, prefill }),
        4 => (ids(), any::<bool>()).prop_map(|(ids, out)| Op::Remove { ids, out }),
        3 => (time(), any::<bool>()).prop_map(|(threshold, out)| Op::Evict { threshold, out }),
        2 => Just(Op::Window),
        2 => Just(Op::Cumulative),
        2 => Just(Op::Info),
        1 => (any::<u64>(), 400usize..1300, time()).prop_map(|(seed, len, ts)| Op::BigSet { seed, len, ts }),
        1 => (any::<u64>(), 4000usize..9000, any::<bool>())
            .prop_map(|(seed, len, mask)| Op::BigGet { seed, len, mask }),
    ]
}

#[derive(Clone, Copy, Debug)]
struct Setup {
    row_bytes: usize,
    /// 0 = the library default.
    num_shards: usize,
    leave_untouched: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::sample::select(vec![1usize, 2, 3, 7, 8, 13, 17, 64, 100, 128]),
        // 64: more shards than a lookup read-locks at once (`SPAN_SHARDS`),
        // which the default count reaches only on more than 8 cores.
        prop::sample::select(vec![0usize, 1, 2, 3, 64]),
        any::<bool>(),
    )
        .prop_map(|(row_bytes, num_shards, leave_untouched)| Setup {
            row_bytes,
            num_shards,
            leave_untouched,
        })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..60)
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(1024);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------- the model

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The row published for `id` at batch position `position`: differs by id,
/// salt and position, so the last duplicate winning is visible.
fn row(id: i64, salt: u8, position: usize, width: usize) -> Vec<u8> {
    let base = splitmix(id as u64 ^ u64::from(salt) << 56 ^ (position as u64) << 40);
    (0..width)
        .map(|i| (splitmix(base ^ i as u64) >> 24) as u8)
        .collect()
}

fn rows(ids: &[i64], salt: u8, width: usize) -> Vec<u8> {
    ids.iter()
        .enumerate()
        .flat_map(|(position, &id)| row(id, salt, position, width))
        .collect()
}

fn big_ids(seed: u64, len: usize, range: i64) -> Vec<i64> {
    (0..len)
        .map(|i| (splitmix(seed ^ (i as u64) << 1) % (2 * range as u64)) as i64 - range)
        .collect()
}

#[derive(Default)]
struct Model {
    rows: HashMap<i64, (Vec<u8>, u32)>,
    hits: u64,
    misses: u64,
    window_hits: u64,
    window_misses: u64,
    inserts: u64,
    /// Stores of an id already stored, an earlier occurrence in the same
    /// batch included: each occurrence is written in turn.
    updates: u64,
    removals: u64,
    expirations: u64,
}

impl Model {
    fn set(&mut self, ids: &[i64], rows: &[u8], ts: u32, width: usize) {
        for (i, &id) in ids.iter().enumerate() {
            let row = rows[i * width..][..width].to_vec();
            if self.rows.insert(id, (row, ts)).is_none() {
                self.inserts += 1;
            } else {
                self.updates += 1;
            }
        }
    }

    /// The expected `out`, hit mask and hit count of a lookup into `out`.
    fn get(
        &mut self,
        ids: &[i64],
        out: &[u8],
        width: usize,
        leave: bool,
    ) -> (Vec<u8>, Vec<u8>, u64) {
        let mut expected = out.to_vec();
        let mut mask = vec![0u8; ids.len()];
        let mut hits = 0;
        for (i, id) in ids.iter().enumerate() {
            let target = &mut expected[i * width..][..width];
            match self.rows.get(id) {
                Some((row, _)) => {
                    target.copy_from_slice(row);
                    mask[i] = 1;
                    hits += 1;
                }
                None if !leave => target.fill(0),
                None => {}
            }
        }
        self.hits += hits;
        self.misses += ids.len() as u64 - hits;
        (expected, mask, hits)
    }

    fn remove(&mut self, ids: &[i64]) -> u64 {
        let removed = ids
            .iter()
            .filter(|id| self.rows.remove(id).is_some())
            .count() as u64;
        self.removals += removed;
        removed
    }

    fn evict(&mut self, threshold: u32) -> u64 {
        let before = self.rows.len();
        self.rows.retain(|_, (_, ts)| *ts >= threshold);
        let evicted = (before - self.rows.len()) as u64;
        self.expirations += evicted;
        evicted
    }

    fn take_window(&mut self) -> (u64, u64) {
        let window = (
            self.hits - self.window_hits,
            self.misses - self.window_misses,
        );
        (self.window_hits, self.window_misses) = (self.hits, self.misses);
        window
    }

    /// Every stored id, a few never stored, and the extremes.
    fn probe_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.rows.keys().copied().collect();
        ids.sort_unstable();
        ids.extend([-21, 20, 0, i64::MIN, i64::MAX, 4000, -4000]);
        ids
    }
}

fn expected_shards(requested: usize) -> impl Fn(usize) -> bool {
    move |actual| match requested {
        0 => actual.is_power_of_two() && (8..=128).contains(&actual),
        n => actual == n.next_power_of_two(),
    }
}

/// What a lookup returned, as the caller sees it.
struct Returned<'a> {
    out: &'a [u8],
    hit_mask: &'a [u8],
    mask_asked: bool,
    /// The batch's (hits, misses, total), when the caller asked for them.
    stats: Option<(u64, u64, u64)>,
}

/// Checks what a lookup returned against the model's rows, hit mask and hit
/// count; a hit mask that was not asked for must be left as it was (0xEE).
fn check_returned(
    step: usize,
    ids: &[i64],
    width: usize,
    returned: Returned<'_>,
    (expected, expected_mask, hits): (&[u8], &[u8], u64),
) -> Result<(), TestCaseError> {
    if let Some(stats) = returned.stats {
        prop_assert_eq!(
            stats,
            (hits, ids.len() as u64 - hits, ids.len() as u64),
            "step {}: batch stats of {:?}",
            step,
            ids
        );
    }
    for i in 0..ids.len() {
        prop_assert_eq!(
            &returned.out[i * width..][..width],
            &expected[i * width..][..width],
            "step {}: row {} (id {}) of {:?}",
            step,
            i,
            ids[i],
            ids
        );
    }
    if returned.mask_asked {
        prop_assert_eq!(
            returned.hit_mask,
            expected_mask,
            "step {}: hit mask of {:?}",
            step,
            ids
        );
    } else {
        prop_assert!(returned.hit_mask.iter().all(|&b| b == 0xEE));
    }
    Ok(())
}

// ---------------------------------------------------------------- Rust API

fn run_engine(setup: Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    let width = setup.row_bytes;
    let leave = setup.leave_untouched;
    let cache = Cache::new(CacheConfig {
        num_shards: setup.num_shards,
        miss_policy: if leave {
            MissPolicy::LeaveUntouched
        } else {
            MissPolicy::ZeroFill
        },
        name: TableName::new("model_rust").unwrap(),
        ..CacheConfig::new(width)
    })
    .map_err(|e| TestCaseError::fail(format!("create: {e}")))?;
    let mut model = Model::default();

    let check_get =
        |cache: &Cache, model: &mut Model, ids: &[i64], mask: bool, prefill: u8, step: usize| {
            let mut out = vec![prefill; ids.len() * width];
            let mut hit_mask = vec![0xEEu8; ids.len()];
            let (expected, expected_mask, hits) = model.get(ids, &out, width, leave);
            let stats = cache
                .batch_get(ids, &mut out, mask.then_some(&mut hit_mask[..]))
                .map_err(|e| TestCaseError::fail(format!("step {step}: batch_get: {e}")))?;
            let returned = Returned {
                out: &out,
                hit_mask: &hit_mask,
                mask_asked: mask,
                stats: Some((stats.hits, stats.misses, stats.total)),
            };
            check_returned(
                step,
                ids,
                width,
                returned,
                (&expected, &expected_mask, hits),
            )
        };

    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Set { ids, ts, salt } => {
                let rows = rows(ids, *salt, width);
                cache
                    .batch_set(ids, &rows, *ts)
                    .map_err(|e| TestCaseError::fail(format!("step {step}: batch_set: {e}")))?;
                model.set(ids, &rows, *ts, width);
            }
            Op::BigSet { seed, len, ts } => {
                let ids = big_ids(*seed, *len, 3000);
                let rows = rows(&ids, *seed as u8, width);
                cache
                    .batch_set(&ids, &rows, *ts)
                    .map_err(|e| TestCaseError::fail(format!("step {step}: big batch_set: {e}")))?;
                model.set(&ids, &rows, *ts, width);
            }
            Op::Get {
                ids, mask, prefill, ..
            } => {
                check_get(&cache, &mut model, ids, *mask, *prefill, step)?;
            }
            Op::BigGet { seed, len, mask } => {
                let ids = big_ids(*seed, *len, 3500);
                check_get(&cache, &mut model, &ids, *mask, 0x5A, step)?;
            }
            Op::Remove { ids, .. } => {
                let removed = cache
                    .batch_remove(ids)
                    .map_err(|e| TestCaseError::fail(format!("step {step}: batch_remove: {e}")))?;
                prop_assert_eq!(
                    removed,
                    model.remove(ids),
                    "step {}: removed of {:?}",
                    step,
                    ids
                );
            }
            Op::Evict { threshold, .. } => {
                let evicted = cache.evict_older_than(*threshold);
                prop_assert_eq!(
                    evicted,
                    model.evict(*threshold),
                    "step {}: evict_older_than({})",
                    step,
                    threshold
                );
            }
            Op::Window => {
                let window = cache.take_read_hit_rate_stats();
                let (hits, misses) = model.take_window();
                prop_assert_eq!(
                    (window.hits, window.misses, window.total),
                    (hits, misses, hits + misses),
                    "step {}: window",
                    step
                );
            }
            Op::Cumulative | Op::Info => {}
        }
        // After every call: the non-mutating views agree with the model.
        let cumulative = cache.cumulative_read_stats();
        prop_assert_eq!(
            (cumulative.hits, cumulative.misses, cumulative.total),
            (model.hits, model.misses, model.hits + model.misses),
            "step {}: cumulative after {:?}",
            step,
            op
        );
        let info = cache.info();
        prop_assert_eq!(
            info.rows,
            model.rows.len() as u64,
            "step {}: rows after {:?}",
            step,
            op
        );
        prop_assert_eq!(info.row_bytes, width);
        prop_assert!(
            expected_shards(setup.num_shards)(info.num_shards),
            "num_shards {}",
            info.num_shards
        );
        prop_assert!(
            info.memory_bytes >= info.rows * width as u64,
            "memory_bytes {info:?}"
        );
        prop_assert_eq!(
            (
                info.inserts,
                info.updates,
                info.removals,
                info.expirations,
                info.capacity_evictions
            ),
            (
                model.inserts,
                model.updates,
                model.removals,
                model.expirations,
                0
            ),
            "step {}: inserts, updates, removals, expirations, capacity_evictions after {:?}",
            step,
            op
        );
    }
    // Finally every stored id, and some that are not, read back.
    let probe = model.probe_ids();
    check_get(&cache, &mut model, &probe, true, 0x33, ops.len())?;
    let window = cache.take_read_hit_rate_stats();
    let (hits, misses) = model.take_window();
    prop_assert_eq!((window.hits, window.misses), (hits, misses), "final window");
    Ok(())
}

#[test]
fn engine_matches_the_model() {
    let mut runner = TestRunner::new(config());
    let result = runner.run(&(setup(), ops()), |(setup, ops)| run_engine(setup, &ops));
    if let Err(error) = result {
        panic!("{error}");
    }
}

// ---------------------------------------------------------------- C ABI

/// What a sink has been given; `user_data` of the C sinks below.
#[derive(Default)]
struct SinkTally {
    table: &'static str,
    calls: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Events of the right table that broke a rule (struct_size, totals).
    bad: AtomicU64,
}

unsafe extern "C" fn tally_sink(user_data: *mut c_void, event: *const kvzch_batch_event) {
    let tally = unsafe { &*(user_data as *const SinkTally) };
    let event = unsafe { &*event };
    let table = unsafe { CStr::from_ptr(event.table) };
    if table.to_bytes() != tally.table.as_bytes() {
        // A global sink sees the other property's caches too.
        return;
    }
    if event.struct_size as usize != size_of::<kvzch_batch_event>()
        || event.stats.hits + event.stats.misses != event.stats.total
        || event.stats.total == 0
    {
        tally.bad.fetch_add(1, Ordering::Relaxed);
    }
    tally.calls.fetch_add(1, Ordering::Relaxed);
    tally.hits.fetch_add(event.stats.hits, Ordering::Relaxed);
    tally
        .misses
        .fetch_add(event.stats.misses, Ordering::Relaxed);
}

fn status_ok(status: kvzch_status, what: &str) -> Result<(), TestCaseError> {
    if status == kvzch_status::KVZCH_STATUS_OK {
        return Ok(());
    }
    let mut buf = [0u8; 512];
    unsafe { kvzch_last_error_message(buf.as_mut_ptr().cast(), buf.len()) };
    let message = CStr::from_bytes_until_nul(&buf)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    Err(TestCaseError::fail(format!(
        "{what}: {status:?}: {message}"
    )))
}

/// Destroys the cache and unregisters the global sink even when a case fails.
struct FfiCase {
    cache: *mut kvzch_cache,
    global: Option<u64>,
}

impl Drop for FfiCase {
    fn drop(&mut self) {
        if let Some(id) = self.global {
            unsafe { kvzch_unregister_global_stat_sink(id) };
        }
        unsafe { kvzch_cache_destroy(self.cache) };
    }
}

const FFI_TABLE: &str = "model_ffi";

fn run_ffi(setup: Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    let width = setup.row_bytes;
    let leave = setup.leave_untouched;
    let name = CString::new(FFI_TABLE).unwrap();
    let mut opts: kvzch_options = unsafe { std::mem::zeroed() };
    unsafe { kvzch_options_init(&mut opts) };
    opts.row_bytes = width as u32;
    opts.num_shards = setup.num_shards as u32;
    opts.miss_policy = if leave {
        KVZCH_MISS_LEAVE_UNTOUCHED
    } else {
        KVZCH_MISS_ZERO_FILL
    };
    opts.name = name.as_ptr();
    let mut handle: *mut kvzch_cache = std::ptr::null_mut();
    status_ok(unsafe { kvzch_cache_create(&opts, &mut handle) }, "create")?;
    // Declared before `case`, so they outlive the registrations it undoes.
    let cache_tally = Box::new(SinkTally {
        table: FFI_TABLE,
        ..SinkTally::default()
    });
    let global_tally = Box::new(SinkTally {
        table: FFI_TABLE,
        ..SinkTally::default()
    });
    let mut case = FfiCase {
        cache: handle,
        global: None,
    };
    let mut sink_id = 0u64;
    status_ok(
        unsafe {
            kvzch_cache_register_stat_sink(
                handle,
                Some(tally_sink),
                &*cache_tally as *const SinkTally as *mut c_void,
                &mut sink_id,
            )
        },
        "register sink",
    )?;
    let mut global_id = 0u64;
    status_ok(
        unsafe {
            kvzch_register_global_stat_sink(
                Some(tally_sink),
                &*global_tally as *const SinkTally as *mut c_void,
                &mut global_id,
            )
        },
        "register global sink",
    )?;
    case.global = Some(global_id);
    let mut model = Model::default();
    let batches = Cell::new(0u64);

    let check_get =
        |model: &mut Model, ids: &[i64], mask: bool, stats: bool, prefill: u8, step: usize| {
            let mut out = vec![prefill; ids.len() * width];
            let mut hit_mask = vec![0xEEu8; ids.len()];
            let sentinel = kvzch_batch_stats {
                hits: 0xA5A5,
                misses: 0xA5A5,
                total: 0xA5A5,
                duration_ns: 0xA5A5,
            };
            let mut batch = sentinel;
            let (expected, expected_mask, hits) = model.get(ids, &out, width, leave);
            status_ok(
                unsafe {
                    kvzch_cache_batch_get(
                        handle,
                        if ids.is_empty() {
                            std::ptr::null()
                        } else {
                            ids.as_ptr()
                        },
                        ids.len(),
                        if out.is_empty() {
                            std::ptr::null_mut()
                        } else {
                            out.as_mut_ptr().cast()
                        },
                        out.len(),
                        if mask {
                            hit_mask.as_mut_ptr()
                        } else {
                            std::ptr::null_mut()
                        },
                        if stats {
                            &mut batch
                        } else {
                            std::ptr::null_mut()
                        },
                    )
                },
                &format!("step {step}: batch_get"),
            )?;
            if !ids.is_empty() {
                batches.set(batches.get() + 1);
            }
            if !stats {
                prop_assert_eq!(batch, sentinel);
            }
            let returned = Returned {
                out: &out,
                hit_mask: &hit_mask,
                mask_asked: mask,
                stats: stats.then_some((batch.hits, batch.misses, batch.total)),
            };
            check_returned(
                step,
                ids,
                width,
                returned,
                (&expected, &expected_mask, hits),
            )
        };

    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Set { ids, ts, salt } => {
                let rows = rows(ids, *salt, width);
                let (ids_ptr, rows_ptr) = if ids.is_empty() {
                    (std::ptr::null(), std::ptr::null())
                } else {
                    (ids.as_ptr(), rows.as_ptr().cast::<c_void>())
                };
                status_ok(
                    unsafe {
                        kvzch_cache_batch_set(handle, ids_ptr, ids.len(), rows_ptr, rows.len(), *ts)
                    },
                    &format!("step {step}: batch_set"),
                )?;
                model.set(ids, &rows, *ts, width);
            }
            Op::BigSet { seed, len, ts } => {
                let ids = big_ids(*seed, *len, 3000);
                let rows = rows(&ids, *seed as u8, width);
                status_ok(
                    unsafe {
                        kvzch_cache_batch_set(
                            handle,
                            ids.as_ptr(),
                            ids.len(),
                            rows.as_ptr().cast(),
                            rows.len(),
                            *ts,
                        )
                    },
                    &format!("step {step}: big batch_set"),
                )?;
                model.set(&ids, &rows, *ts, width);
            }
            Op::Get {
                ids,
                mask,
                stats,
                prefill,
            } => {
                check_get(&mut model, ids, *mask, *stats, *prefill, step)?;
            }
            Op::BigGet { seed, len, mask } => {
                let ids = big_ids(*seed, *len, 3500);
                check_get(&mut model, &ids, *mask, true, 0x5A, step)?;
            }
            Op::Remove { ids, out } => {
                let mut removed = u64::MAX;
                let ids_ptr = if ids.is_empty() {
                    std::ptr::null()
                } else {
                    ids.as_ptr()
                };
                status_ok(
                    unsafe {
                        kvzch_cache_batch_remove(
                            handle,
                            ids_ptr,
                            ids.len(),
                            if *out {
                                &mut removed
                            } else {
                                std::ptr::null_mut()
                            },
                        )
                    },
                    &format!("step {step}: batch_remove"),
                )?;
                let expected = model.remove(ids);
                prop_assert_eq!(
                    removed,
                    if *out { expected } else { u64::MAX },
                    "step {}: removed of {:?}",
                    step,
                    ids
                );
            }
            Op::Evict { threshold, out } => {
                let mut evicted = u64::MAX;
                status_ok(
                    unsafe {
                        kvzch_cache_evict_older_than(
                            handle,
                            *threshold,
                            if *out {
                                &mut evicted
                            } else {
                                std::ptr::null_mut()
                            },
                        )
                    },
                    &format!("step {step}: evict_older_than"),
                )?;
                let expected = model.evict(*threshold);
                prop_assert_eq!(
                    evicted,
                    if *out { expected } else { u64::MAX },
                    "step {}: evict_older_than({})",
                    step,
                    threshold
                );
            }
            Op::Window => {
                let mut window = kvzch_read_stats::default();
                status_ok(
                    unsafe { kvzch_cache_get_read_hit_rate_stats(handle, &mut window) },
                    &format!("step {step}: window"),
                )?;
                let (hits, misses) = model.take_window();
                prop_assert_eq!(
                    (window.hits, window.misses, window.total),
                    (hits, misses, hits + misses),
                    "step {}: window",
                    step
                );
            }
            Op::Cumulative | Op::Info => {}
        }
        let mut cumulative = kvzch_read_stats::default();
        status_ok(
            unsafe { kvzch_cache_get_cumulative_read_stats(handle, &mut cumulative) },
            "cumulative",
        )?;
        prop_assert_eq!(
            (cumulative.hits, cumulative.misses, cumulative.total),
            (model.hits, model.misses, model.hits + model.misses),
            "step {}: cumulative after {:?}",
            step,
            op
        );
        let mut info = kvzch_cache_info {
            struct_size: size_of::<kvzch_cache_info>() as u32,
            ..kvzch_cache_info::default()
        };
        status_ok(unsafe { kvzch_cache_get_info(handle, &mut info) }, "info")?;
        prop_assert_eq!(
            info.rows,
            model.rows.len() as u64,
            "step {}: rows after {:?}",
            step,
            op
        );
        prop_assert_eq!(info.row_bytes as usize, width);
        prop_assert_eq!(info.struct_size as usize, size_of::<kvzch_cache_info>());
        prop_assert!(expected_shards(setup.num_shards)(info.num_shards as usize));
        // Both sinks saw exactly the non-empty lookups, with their counts.
        for (what, tally) in [("cache sink", &cache_tally), ("global sink", &global_tally)] {
            prop_assert_eq!(
                (
                    tally.calls.load(Ordering::Relaxed),
                    tally.hits.load(Ordering::Relaxed),
                    tally.misses.load(Ordering::Relaxed),
                    tally.bad.load(Ordering::Relaxed)
                ),
                (batches.get(), model.hits, model.misses, 0),
                "step {}: {} after {:?}",
                step,
                what,
                op
            );
        }
    }
    let probe = model.probe_ids();
    check_get(&mut model, &probe, true, true, 0x33, ops.len())?;
    status_ok(
        unsafe { kvzch_cache_unregister_stat_sink(handle, sink_id) },
        "unregister sink",
    )?;
    prop_assert_eq!(
        unsafe { kvzch_cache_unregister_stat_sink(handle, sink_id) },
        kvzch_status::KVZCH_STATUS_NOT_FOUND
    );
    // Dropping `case` unregisters the global sink before the tallies go away.
    drop(case);
    Ok(())
}

#[test]
fn c_abi_matches_the_model() {
    let mut runner = TestRunner::new(config());
    let result = runner.run(&(setup(), ops()), |(setup, ops)| run_ffi(setup, &ops));
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// The ids a removal reports: distinct stored ids, however often each is named.
#[test]
fn removal_counts_distinct_stored_ids() {
    let cache = Cache::new(CacheConfig::new(3)).unwrap();
    cache
        .batch_set(&[-1, -1, 2], &[1, 1, 1, 2, 2, 2, 3, 3, 3], 1)
        .unwrap();
    let stored: HashSet<i64> = [-1, 2].into();
    assert_eq!(cache.info().rows, stored.len() as u64);
    assert_eq!(cache.batch_remove(&[-1, -1, -1, 5]).unwrap(), 1);
}
