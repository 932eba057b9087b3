//! Concurrency stress through the C ABI, bounded in time: readers, a publisher,
//! a remover, an evictor, sink register/unregister churn (per-cache and global,
//! including sinks that unregister themselves and sinks that look up the same
//! cache) and both kinds of stats pollers, all on one cache.
//!
//! Every 8 bytes of a row hold `tag(id) | version`, so a torn row (words of two
//! versions) or a misplaced one (another id's tag) is caught. Each id has one
//! writer whose versions only grow, so a reader also checks that it never sees
//! an id's version go back. The writers own disjoint id ranges and stamp them so
//! that each can predict its own range exactly:
//!
//! - the publisher republishes its range, whole, with high timestamps: its ids
//!   never leave the cache once the first round is done;
//! - the remover publishes and removes subsets of its range (high timestamps)
//!   and checks every removal count;
//! - the evictor publishes subsets of its range with low, rising timestamps and
//!   evicts below a threshold under every other writer's timestamps, checking
//!   every eviction count.
//!
//! At the end: the contents and row count equal the writers' models (then again
//! after a final known publish + evict); cumulative counters == the sum of the
//! batch stats returned to every lookup == what sinks registered for the whole
//! run saw; the windows of `get_read_hit_rate_stats` add up to the cumulative
//! counts; no churned sink was called after its unregister returned; no torn,
//! misplaced or stale row was seen. Failures are collected and printed together.
//!
//! Runs about 20 s; `KVZCH_STRESS_SECONDS=N` runs the concurrent phase N seconds.
//! `cargo test --release --test stress -- --nocapture` shows the summary.

#![allow(unused_unsafe)]

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use kvzch::ffi::*;

mod common;
use common::{splitmix, Rng};
#[path = "common/ffi.rs"]
mod ffi_calls;
use ffi_calls::{batch_set, created, last_error, options};

const ROW_BYTES: usize = 200;
const WORDS: usize = ROW_BYTES / 8;
const VERSION_BITS: u32 = 28;
const VERSION_MASK: u64 = (1 << VERSION_BITS) - 1;
/// The version of a row that a later occurrence of its id in the same batch
/// replaces: no writer counts this far.
const DECOY_VERSION: u64 = VERSION_MASK;

/// Key ranges (indices into `Keys::ids`), each owned by one writer.
const PUBLISHED: std::ops::Range<usize> = 0..6000;
const REMOVED: std::ops::Range<usize> = 6000..8000;
const EVICTED: std::ops::Range<usize> = 8000..10_000;
/// Ids never stored: every lookup of them must miss.
const NEVER: std::ops::Range<usize> = 10_000..10_500;
const KEYS: usize = 10_500;

/// Timestamps of the publisher and the remover; the evictor's are all below.
const HIGH_TS: u32 = 1 << 31;
const TABLE: &str = "stress_table";

// ------------------------------------------------------------ helpers

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn in_range(&mut self, range: std::ops::Range<usize>) -> usize {
        range.start + self.below(range.len())
    }
}

/// The ids: the extremes first, then full-range scrambled values (half negative).
fn make_ids() -> Vec<i64> {
    let mut ids = vec![i64::MIN, i64::MAX, 0, -1, 1];
    let mut k = 0u64;
    while ids.len() < KEYS {
        ids.push(splitmix(k ^ 0x5EED) as i64);
        k += 1;
    }
    ids
}

fn tag(id: i64) -> u64 {
    splitmix(id as u64 ^ 0x7A6) & !VERSION_MASK
}

fn encoded_row(id: i64, version: u64) -> [u8; ROW_BYTES] {
    assert!(version > 0 && version <= VERSION_MASK);
    let word = (tag(id) | version).to_le_bytes();
    let mut row = [0; ROW_BYTES];
    for chunk in row.chunks_mut(8) {
        chunk.copy_from_slice(&word);
    }
    row
}

/// The version a row holds for `id`, or why it is not a row of `id`.
fn decode(id: i64, row: &[u8]) -> Result<u64, String> {
    let first = u64::from_le_bytes(row[..8].try_into().unwrap());
    for w in 1..WORDS {
        let word = u64::from_le_bytes(row[w * 8..][..8].try_into().unwrap());
        if word != first {
            return Err(format!(
                "torn row: word 0 = {first:#018x}, word {w} = {word:#018x}"
            ));
        }
    }
    if first & !VERSION_MASK != tag(id) {
        return Err(format!(
            "misplaced row: holds {first:#018x}, tag of id is {:#018x}",
            tag(id)
        ));
    }
    match first & VERSION_MASK {
        DECOY_VERSION => Err("the row of an earlier duplicate in its batch".to_string()),
        version => Ok(version),
    }
}

fn rows_for(ids: &[i64], versions: &[u64]) -> Vec<u8> {
    ids.iter()
        .zip(versions)
        .flat_map(|(&id, &v)| encoded_row(id, v))
        .collect()
}

#[derive(Clone, Copy)]
struct Handle(*mut kvzch_cache);
// SAFETY: the ABI makes every function but destroy safe to call from any
// thread; destroy is called after every thread is joined.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

static STOP: AtomicBool = AtomicBool::new(false);
static FAILURE_COUNT: AtomicU64 = AtomicU64::new(0);
static FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records a broken invariant and stops the run.
fn fail(message: String) {
    FAILURE_COUNT.fetch_add(1, Ordering::Relaxed);
    let mut failures = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
    if failures.len() < 40 {
        failures.push(message);
    }
    STOP.store(true, Ordering::Relaxed);
}

fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

fn check(status: kvzch_status, what: &str) -> bool {
    if status != kvzch_status::KVZCH_STATUS_OK {
        fail(format!("{what}: {status:?}: {}", last_error()));
        return false;
    }
    true
}

/// Publishes `version`'s rows of `ids` at `timestamp`; false (with the
/// failure reported) when the call fails.
fn publish(cache: *mut kvzch_cache, ids: &[i64], version: u64, timestamp: u32, what: &str) -> bool {
    let rows = rows_for(ids, &vec![version; ids.len()]);
    check(batch_set(cache, ids, &rows, timestamp), what)
}

// ------------------------------------------------------------ sinks

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Tally {
    fn add(&self, hits: u64, misses: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
    }
    fn get(&self) -> (u64, u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

static WHOLE_RUN_CACHE_SINK: Tally = Tally {
    calls: AtomicU64::new(0),
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
};
static WHOLE_RUN_GLOBAL_SINK: Tally = Tally {
    calls: AtomicU64::new(0),
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
};
/// Lookups made by sinks from inside a batch (they count like any other).
static NESTED: Tally = Tally {
    calls: AtomicU64::new(0),
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
};

/// Checks an event and returns its counts if it is of our table.
fn our_event(event: *const kvzch_batch_event, who: &str) -> Option<(u64, u64)> {
    let event = unsafe { &*event };
    let table = unsafe { CStr::from_ptr(event.table) };
    if table.to_bytes() != TABLE.as_bytes() {
        if !who.starts_with("global") {
            fail(format!("{who} saw a batch of table {table:?}"));
        }
        return None;
    }
    let stats = event.stats;
    if event.struct_size as usize != size_of::<kvzch_batch_event>()
        || stats.hits + stats.misses != stats.total
        || stats.total == 0
    {
        fail(format!(
            "{who} got a bad event: struct_size {}, {stats:?}",
            event.struct_size
        ));
    }
    Some((stats.hits, stats.misses))
}

unsafe extern "C" fn whole_run_sink(user_data: *mut c_void, event: *const kvzch_batch_event) {
    let tally = unsafe { &*(user_data as *const Tally) };
    let who = if std::ptr::eq(tally, &WHOLE_RUN_GLOBAL_SINK) {
        "global whole-run sink"
    } else {
        "cache whole-run sink"
    };
    if let Some((hits, misses)) = our_event(event, who) {
        tally.add(hits, misses);
    }
}

/// Churned sinks carry `token << 3 | kind` as `user_data`: no memory to free,
/// and a call with a token below `RETIRED_BELOW` came after its unregister.
#[allow(dead_code)] // kind 0: a plain per-cache sink
const KIND_CACHE: u64 = 0;
const KIND_GLOBAL: u64 = 1;
const KIND_CACHE_SELF: u64 = 2;
const KIND_GLOBAL_SELF: u64 = 3;
const KIND_CACHE_REENTRANT: u64 = 4;
const KINDS: u64 = 5;

static RETIRED_BELOW: AtomicU64 = AtomicU64::new(0);
static LATE_CALLS: AtomicU64 = AtomicU64::new(0);
static CHURN_CALLS: AtomicU64 = AtomicU64::new(0);
/// The id of the self-unregistering sink being churned (0: none yet).
static SELF_ID: AtomicU64 = AtomicU64::new(0);
static SELF_DONE: AtomicBool = AtomicBool::new(false);
static SELF_UNREGISTERS: AtomicU64 = AtomicU64::new(0);
static CACHE: AtomicPtr<kvzch_cache> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    static IN_NESTED_LOOKUP: Cell<bool> = const { Cell::new(false) };
}

unsafe extern "C" fn churn_sink(user_data: *mut c_void, event: *const kvzch_batch_event) {
    let word = user_data as u64;
    let (token, kind) = (word >> 3, word & 7);
    // Also for a sink that unregistered itself: the churner's second
    // unregister answers NOT_FOUND only once no call of it is left.
    if token < RETIRED_BELOW.load(Ordering::SeqCst) {
        LATE_CALLS.fetch_add(1, Ordering::Relaxed);
        fail(format!(
            "churned sink {token} (kind {kind}) called after its unregister returned"
        ));
    }
    let who = if kind == KIND_GLOBAL || kind == KIND_GLOBAL_SELF {
        "global churned sink"
    } else {
        "cache churned sink"
    };
    if our_event(event, who).is_none() {
        return;
    }
    CHURN_CALLS.fetch_add(1, Ordering::Relaxed);
    let cache = CACHE.load(Ordering::Relaxed);
    match kind {
        KIND_CACHE_SELF | KIND_GLOBAL_SELF => {
            let id = SELF_ID.load(Ordering::SeqCst);
            if id != 0
                && SELF_ID
                    .compare_exchange(id, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                let status = if kind == KIND_CACHE_SELF {
                    unsafe { kvzch_cache_unregister_stat_sink(cache, id) }
                } else {
                    unsafe { kvzch_unregister_global_stat_sink(id) }
                };
                check(status, "a sink unregistering itself");
                SELF_UNREGISTERS.fetch_add(1, Ordering::Relaxed);
                SELF_DONE.store(true, Ordering::SeqCst);
            }
        }
        KIND_CACHE_REENTRANT if !IN_NESTED_LOOKUP.get() => {
            IN_NESTED_LOOKUP.set(true);
            let keys = Keys::get();
            let ids = [
                keys.ids[7],
                keys.ids[NEVER.start],
                keys.ids[7],
                keys.ids[EVICTED.start],
            ];
            let mut out = [0u8; 4 * ROW_BYTES];
            let mut hit = [0u8; 4];
            let mut stats = kvzch_batch_stats::default();
            // Read before the lookup: once set, the published id must hit.
            let published_ready = PUBLISHED_READY.load(Ordering::SeqCst);
            let status = unsafe {
                kvzch_cache_batch_get(
                    cache,
                    ids.as_ptr(),
                    4,
                    out.as_mut_ptr().cast(),
                    out.len(),
                    hit.as_mut_ptr(),
                    &mut stats,
                )
            };
            if check(status, "a lookup from inside a sink") {
                NESTED.add(stats.hits, stats.misses);
                let hits = hit.iter().filter(|&&h| h != 0).count() as u64;
                if stats.total != 4 || stats.hits + stats.misses != 4 || stats.hits != hits {
                    fail(format!("nested lookup stats {stats:?}, hit mask {hit:?}"));
                }
                if published_ready && (hit[0] == 0 || hit[2] == 0) {
                    fail(format!("nested lookup missed published id {}", ids[0]));
                }
                if hit[1] != 0 {
                    fail(format!(
                        "nested lookup found id {}, never published",
                        ids[1]
                    ));
                }
                for (i, &id) in ids.iter().enumerate() {
                    if hit[i] != 0 {
                        if let Err(why) = decode(id, &out[i * ROW_BYTES..][..ROW_BYTES]) {
                            fail(format!("nested lookup of id {id}: {why}"));
                        }
                    }
                }
            }
            IN_NESTED_LOOKUP.set(false);
        }
        _ => {
            // Widen the window in which an unregister races a running call.
            for _ in 0..100 {
                std::hint::spin_loop();
            }
        }
    }
}

// ------------------------------------------------------------ the threads

struct Keys {
    ids: Vec<i64>,
}

static KEYS_CELL: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();

impl Keys {
    fn get() -> &'static Keys {
        KEYS_CELL.get_or_init(|| Keys { ids: make_ids() })
    }
}

/// Set by the publisher once its whole range is stored: from then on every
/// lookup of that range must hit.
static PUBLISHED_READY: AtomicBool = AtomicBool::new(false);

/// Returns the version of each key of its range.
fn publisher(cache: Handle, seed: u64) -> (HashMap<usize, u64>, u64) {
    let keys = Keys::get();
    let mut rng = Rng(seed);
    let mut version = 0u64;
    let mut rounds = 0u64;
    loop {
        version += 1;
        let mut start = PUBLISHED.start;
        while start < PUBLISHED.end {
            // Mostly chunks of a few hundred to a few thousand rows; sometimes the
            // whole range in one batch.
            let len = if rng.chance(10) {
                PUBLISHED.len()
            } else {
                rng.in_range(200..2500)
            };
            let end = (start + len).min(PUBLISHED.end);
            let mut batch: Vec<i64> = keys.ids[start..end].to_vec();
            for _ in 0..rng.below(8) {
                let k = rng.in_range(start..end);
                let at = rng.below(batch.len() + 1);
                batch.insert(at, keys.ids[k]);
            }
            // An id's earlier occurrences carry a decoy: readers must never
            // find one, as only the last occurrence is written.
            let mut passed = std::collections::HashSet::new();
            let mut versions: Vec<u64> = batch
                .iter()
                .rev()
                .map(|id| {
                    if passed.insert(id) {
                        version
                    } else {
                        DECOY_VERSION
                    }
                })
                .collect();
            versions.reverse();
            let timestamp = HIGH_TS + version as u32;
            let rows = rows_for(&batch, &versions);
            if !check(
                batch_set(cache.0, &batch, &rows, timestamp),
                "publisher batch_set",
            ) {
                return (HashMap::new(), rounds);
            }
            start = end;
        }
        rounds += 1;
        PUBLISHED_READY.store(true, Ordering::SeqCst);
        if stopped() {
            break;
        }
    }
    (PUBLISHED.map(|k| (k, version)).collect(), rounds)
}

fn random_subset(rng: &mut Rng, range: std::ops::Range<usize>, max: usize) -> Vec<usize> {
    let len = 1 + rng.below(max);
    (0..len).map(|_| rng.in_range(range.clone())).collect()
}

/// Returns the version of each key of its range that is stored.
fn remover(cache: Handle, seed: u64) -> (HashMap<usize, u64>, u64) {
    let keys = Keys::get();
    let mut rng = Rng(seed);
    let mut model: HashMap<usize, u64> = HashMap::new();
    let mut version = 0u64;
    let mut removals = 0u64;
    while !stopped() {
        version += 1;
        let set = random_subset(&mut rng, REMOVED, 300);
        let ids: Vec<i64> = set.iter().map(|&k| keys.ids[k]).collect();
        if !publish(cache.0, &ids, version, HIGH_TS + 7, "remover batch_set") {
            break;
        }
        for &k in &set {
            model.insert(k, version);
        }
        // Remove some of its range, with duplicates, and some never-stored ids.
        let mut gone = random_subset(&mut rng, REMOVED, 300);
        gone.extend(random_subset(&mut rng, NEVER, 5));
        let ids: Vec<i64> = gone.iter().map(|&k| keys.ids[k]).collect();
        let mut removed = u64::MAX;
        let status =
            unsafe { kvzch_cache_batch_remove(cache.0, ids.as_ptr(), ids.len(), &mut removed) };
        if !check(status, "remover batch_remove") {
            break;
        }
        let expected = gone.iter().filter(|k| model.remove(k).is_some()).count() as u64;
        if removed != expected {
            fail(format!(
                "batch_remove of {} ids reported {removed} removed, the model says {expected}",
                ids.len()
            ));
        }
        removals += 1;
    }
    (model, removals)
}

/// Returns the version and timestamp of each key of its range that is stored.
fn evictor(cache: Handle, seed: u64) -> (HashMap<usize, (u64, u32)>, u64) {
    let keys = Keys::get();
    let mut rng = Rng(seed);
    let mut model: HashMap<usize, (u64, u32)> = HashMap::new();
    let mut clock = 1u32;
    let mut evictions = 0u64;
    while !stopped() {
        clock += 1;
        assert!(clock < HIGH_TS);
        let set = random_subset(&mut rng, EVICTED, 400);
        let ids: Vec<i64> = set.iter().map(|&k| keys.ids[k]).collect();
        let version = u64::from(clock);
        if !publish(cache.0, &ids, version, clock, "evictor batch_set") {
            break;
        }
        for &k in &set {
            model.insert(k, (version, clock));
        }
        if rng.chance(50) {
            let threshold = match rng.below(10) {
                0 => 0,
                1 => clock + 1,
                _ => clock.saturating_sub(rng.below(6) as u32),
            };
            let mut evicted = u64::MAX;
            let status = unsafe { kvzch_cache_evict_older_than(cache.0, threshold, &mut evicted) };
            if !check(status, "evict_older_than") {
                break;
            }
            let before = model.len();
            model.retain(|_, (_, ts)| *ts >= threshold);
            let expected = (before - model.len()) as u64;
            if evicted != expected {
                fail(format!(
                    "evict_older_than({threshold}) reported {evicted} evicted, the model says {expected} \
                     (only the evictor's rows are stamped below {HIGH_TS})"
                ));
            }
            evictions += 1;
        }
    }
    (model, evictions)
}

#[derive(Default, Debug, Clone, Copy)]
struct ReaderTotals {
    batches: u64,
    empty_batches: u64,
    hits: u64,
    misses: u64,
    rows_checked: u64,
}

fn reader(cache: Handle, seed: u64) -> ReaderTotals {
    let keys = Keys::get();
    let mut rng = Rng(seed);
    let mut totals = ReaderTotals::default();
    let mut last_seen = vec![0u64; KEYS];
    let mut out = Vec::new();
    let mut mask = Vec::new();
    while !stopped() {
        let n = match rng.below(100) {
            0 => 0,
            1..=5 => rng.in_range(4097..6000),
            6..=30 => rng.in_range(256..2048),
            _ => rng.in_range(1..256),
        };
        let wanted: Vec<usize> = (0..n).map(|_| rng.below(KEYS)).collect();
        let ids: Vec<i64> = wanted.iter().map(|&k| keys.ids[k]).collect();
        out.clear();
        out.resize(n * ROW_BYTES, 0xEE);
        mask.clear();
        mask.resize(n, 0xEE);
        let sentinel = kvzch_batch_stats {
            hits: 1 << 60,
            misses: 1 << 60,
            total: 1 << 60,
            duration_ns: 0,
        };
        let mut stats = sentinel;
        let published_ready = PUBLISHED_READY.load(Ordering::SeqCst);
        let status = if n == 0 {
            unsafe {
                kvzch_cache_batch_get(
                    cache.0,
                    std::ptr::null(),
                    0,
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            }
        } else {
            unsafe {
                kvzch_cache_batch_get(
                    cache.0,
                    ids.as_ptr(),
                    n,
                    out.as_mut_ptr().cast(),
                    out.len(),
                    mask.as_mut_ptr(),
                    &mut stats,
                )
            }
        };
        if !check(status, "reader batch_get") {
            break;
        }
        if n == 0 {
            totals.empty_batches += 1;
            continue;
        }
        totals.batches += 1;
        totals.hits += stats.hits;
        totals.misses += stats.misses;
        let mask_hits = mask.iter().filter(|&&m| m == 1).count() as u64;
        if stats.total != n as u64
            || stats.hits + stats.misses != stats.total
            || stats.hits != mask_hits
        {
            fail(format!(
                "batch of {n}: stats {stats:?}, {mask_hits} hits in the mask"
            ));
        }
        for (i, (&k, &id)) in wanted.iter().zip(&ids).enumerate() {
            let row = &out[i * ROW_BYTES..][..ROW_BYTES];
            match mask[i] {
                0 => {
                    if row.iter().any(|&b| b != 0) {
                        fail(format!("a miss of id {id} (key {k}) was not zero-filled"));
                    }
                    if published_ready && PUBLISHED.contains(&k) {
                        fail(format!(
                            "id {id} (key {k}) of the always-published range missed"
                        ));
                    }
                }
                1 => {
                    if NEVER.contains(&k) {
                        fail(format!("id {id} (key {k}) was never stored but hit"));
                    }
                    match decode(id, row) {
                        Err(why) => fail(format!(
                            "lookup of id {id} (key {k}), position {i} of {n}: {why}"
                        )),
                        Ok(version) => {
                            if version < last_seen[k] {
                                fail(format!(
                                    "id {id} (key {k}) went back from version {} to {version}",
                                    last_seen[k]
                                ));
                            }
                            last_seen[k] = version;
                        }
                    }
                }
                other => fail(format!("hit_mask[{i}] = {other}")),
            }
        }
        totals.rows_checked += n as u64;
        if stopped() {
            break;
        }
    }
    totals
}

/// Registers and unregisters sinks until stopped; returns how many.
fn churner(cache: Handle, seed: u64) -> u64 {
    let mut rng = Rng(seed);
    let mut token = 0u64;
    while !stopped() {
        token += 1;
        let kind = rng.next() % KINDS;
        let user_data = (token << 3 | kind) as *mut c_void;
        let global = kind == KIND_GLOBAL || kind == KIND_GLOBAL_SELF;
        let self_unregistering = kind == KIND_CACHE_SELF || kind == KIND_GLOBAL_SELF;
        let mut id = 0u64;
        SELF_DONE.store(false, Ordering::SeqCst);
        let status = if global {
            unsafe { kvzch_register_global_stat_sink(Some(churn_sink), user_data, &mut id) }
        } else {
            unsafe { kvzch_cache_register_stat_sink(cache.0, Some(churn_sink), user_data, &mut id) }
        };
        if !check(status, "register a churned sink") {
            break;
        }
        if self_unregistering {
            SELF_ID.store(id, Ordering::SeqCst);
            // Give the sink a few milliseconds to unregister itself.
            let started = Instant::now();
            while !SELF_DONE.load(Ordering::SeqCst) && started.elapsed() < Duration::from_millis(5)
            {
                thread::yield_now();
            }
            if SELF_ID
                .compare_exchange(id, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                // The sink took it: wait until its unregister has returned.
                while !SELF_DONE.load(Ordering::SeqCst) {
                    thread::yield_now();
                }
                let again = if global {
                    unsafe { kvzch_unregister_global_stat_sink(id) }
                } else {
                    unsafe { kvzch_cache_unregister_stat_sink(cache.0, id) }
                };
                if again != kvzch_status::KVZCH_STATUS_NOT_FOUND {
                    fail(format!(
                        "unregistering a sink that unregistered itself: {again:?}"
                    ));
                }
                RETIRED_BELOW.store(token + 1, Ordering::SeqCst);
                continue;
            }
        } else if rng.chance(50) {
            thread::sleep(Duration::from_micros(rng.below(300) as u64));
        } else {
            thread::yield_now();
        }
        let status = if global {
            unsafe { kvzch_unregister_global_stat_sink(id) }
        } else {
            unsafe { kvzch_cache_unregister_stat_sink(cache.0, id) }
        };
        // The host may free user_data from here on: mark it.
        RETIRED_BELOW.store(token + 1, Ordering::SeqCst);
        if !check(status, "unregister a churned sink") {
            break;
        }
        // Unknown and already-removed ids, on both registries.
        if rng.chance(5) {
            let wrong = [
                unsafe { kvzch_cache_unregister_stat_sink(cache.0, id) },
                unsafe { kvzch_unregister_global_stat_sink(id) },
            ];
            if wrong
                .iter()
                .any(|&s| s != kvzch_status::KVZCH_STATUS_NOT_FOUND)
            {
                fail(format!("unregistering a removed sink id again: {wrong:?}"));
            }
        }
    }
    token
}

/// Sums the windows until stopped.
fn window_poller(cache: Handle) -> (u64, u64, u64) {
    let (mut hits, mut misses, mut polls) = (0u64, 0u64, 0u64);
    while !stopped() {
        let mut window = kvzch_read_stats::default();
        if !check(
            unsafe { kvzch_cache_get_read_hit_rate_stats(cache.0, &mut window) },
            "window",
        ) {
            break;
        }
        if window.hits + window.misses != window.total {
            fail(format!("window {window:?}: hits + misses != total"));
        }
        hits += window.hits;
        misses += window.misses;
        polls += 1;
        thread::sleep(Duration::from_micros(200));
    }
    (hits, misses, polls)
}

/// Checks that the cumulative counts only grow, and the info's bounds.
fn cumulative_poller(cache: Handle) -> u64 {
    let mut last = kvzch_read_stats::default();
    let mut polls = 0;
    let most_rows = (PUBLISHED.len() + REMOVED.len() + EVICTED.len()) as u64;
    while !stopped() {
        let mut now = kvzch_read_stats::default();
        if !check(
            unsafe { kvzch_cache_get_cumulative_read_stats(cache.0, &mut now) },
            "cumulative",
        ) {
            break;
        }
        if now.hits + now.misses != now.total || now.hits < last.hits || now.misses < last.misses {
            fail(format!("cumulative went from {last:?} to {now:?}"));
        }
        last = now;
        let mut info = kvzch_cache_info {
            struct_size: size_of::<kvzch_cache_info>() as u32,
            ..kvzch_cache_info::default()
        };
        if !check(
            unsafe { kvzch_cache_get_info(cache.0, &mut info) },
            "get_info",
        ) {
            break;
        }
        if info.rows > most_rows
            || info.memory_bytes < info.rows * ROW_BYTES as u64
            || info.row_bytes as usize != ROW_BYTES
        {
            fail(format!(
                "info {info:?} (at most {most_rows} rows of {ROW_BYTES} bytes)"
            ));
        }
        polls += 1;
        thread::sleep(Duration::from_micros(100));
    }
    polls
}

// ------------------------------------------------------------ the test

/// The roles whose thread has not returned yet, for the watchdog.
static RUNNING: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
static FINISHED: AtomicBool = AtomicBool::new(false);

fn spawn_role<T: Send + 'static>(
    role: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    RUNNING.lock().unwrap().push(role);
    thread::spawn(move || {
        let result = f();
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = running.iter().position(|&r| r == role) {
            running.remove(at);
        }
        result
    })
}

/// A thread stuck inside the library (a deadlock, a livelock, a sink that is
/// never released) would hang the test silently: 60 s after the deadline, say
/// which threads have not returned and what broke so far, and end the process.
fn start_watchdog(seconds: f64) {
    thread::spawn(move || {
        thread::sleep(Duration::from_secs_f64(seconds + 60.0));
        if FINISHED.load(Ordering::SeqCst) {
            return;
        }
        let running = RUNNING.lock().map(|r| r.clone()).unwrap_or_default();
        let failures = FAILURES.lock().map(|f| f.clone()).unwrap_or_default();
        eprintln!(
            "stress: still running 60 s after the deadline; threads that have not returned: {running:?} \
             (none listed: the final checks on the main thread hang)\nbroken so far:\n  {}",
            failures.join("\n  ")
        );
        std::process::exit(101);
    });
}

/// Looks up every key from the main thread and compares with `expected`
/// (key -> version; absent: a miss). Returns (hits, misses).
fn verify_contents(cache: Handle, expected: &HashMap<usize, u64>, stage: &str) -> (u64, u64) {
    let keys = Keys::get();
    let n = KEYS;
    let mut out = vec![0xEEu8; n * ROW_BYTES];
    let mut mask = vec![0xEEu8; n];
    let mut stats = kvzch_batch_stats::default();
    let status = unsafe {
        kvzch_cache_batch_get(
            cache.0,
            keys.ids.as_ptr(),
            n,
            out.as_mut_ptr().cast(),
            out.len(),
            mask.as_mut_ptr(),
            &mut stats,
        )
    };
    if !check(status, stage) {
        return (0, 0);
    }
    let mut wrong = 0;
    for k in 0..n {
        let id = keys.ids[k];
        let row = &out[k * ROW_BYTES..][..ROW_BYTES];
        let got = match mask[k] {
            1 => decode(id, row).map(Some),
            _ => Ok(None),
        };
        let want = expected.get(&k).copied();
        if got != Ok(want) {
            wrong += 1;
            if wrong <= 10 {
                fail(format!(
                    "{stage}: key {k} (id {id}): expected version {want:?}, the cache has {got:?}"
                ));
            }
        }
    }
    if wrong > 10 {
        fail(format!("{stage}: {wrong} keys wrong in all"));
    }
    if stats.hits != expected.len() as u64 || stats.total != n as u64 {
        fail(format!(
            "{stage}: stats {stats:?}, expected {} hits of {n}",
            expected.len()
        ));
    }
    (stats.hits, stats.misses)
}

fn rows_now(cache: Handle) -> u64 {
    let mut info = kvzch_cache_info {
        struct_size: size_of::<kvzch_cache_info>() as u32,
        ..kvzch_cache_info::default()
    };
    check(
        unsafe { kvzch_cache_get_info(cache.0, &mut info) },
        "get_info",
    );
    info.rows
}

#[test]
fn everything_at_once_on_one_cache() {
    let seconds: f64 = std::env::var("KVZCH_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(18.0);
    let started = Instant::now();
    let keys = Keys::get();
    {
        let mut tags: Vec<u64> = keys.ids.iter().map(|&id| tag(id)).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), KEYS, "the id tags must be distinct");
    }
    let name = CString::new(TABLE).unwrap();
    let raw = created(&kvzch_options {
        num_shards: 8,
        name: name.as_ptr(),
        ..options(ROW_BYTES as u32)
    });
    let cache = Handle(raw);
    CACHE.store(raw, Ordering::SeqCst);

    let (mut cache_sink, mut global_sink) = (0u64, 0u64);
    assert!(check(
        unsafe {
            kvzch_cache_register_stat_sink(
                raw,
                Some(whole_run_sink),
                &WHOLE_RUN_CACHE_SINK as *const Tally as *mut c_void,
                &mut cache_sink,
            )
        },
        "register the whole-run sink"
    ));
    assert!(check(
        unsafe {
            kvzch_register_global_stat_sink(
                Some(whole_run_sink),
                &WHOLE_RUN_GLOBAL_SINK as *const Tally as *mut c_void,
                &mut global_sink,
            )
        },
        "register the whole-run global sink"
    ));

    let base_seed = std::env::var("KVZCH_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x57_2E55u64);
    start_watchdog(seconds);
    let publisher = spawn_role("publisher", move || publisher(cache, base_seed ^ 1));
    let remover = spawn_role("remover", move || remover(cache, base_seed ^ 2));
    let evictor = spawn_role("evictor", move || evictor(cache, base_seed ^ 3));
    let readers: Vec<_> = (0..3)
        .map(|r| spawn_role("reader", move || reader(cache, base_seed ^ (10 + r))))
        .collect();
    let churner = spawn_role("sink churner", move || churner(cache, base_seed ^ 4));
    let window_poller = spawn_role("window poller", move || window_poller(cache));
    let cumulative_poller = spawn_role("cumulative poller", move || cumulative_poller(cache));

    let deadline = Duration::from_secs_f64(seconds);
    while started.elapsed() < deadline && !stopped() {
        thread::sleep(Duration::from_millis(20));
    }
    STOP.store(true, Ordering::SeqCst);

    let (published, rounds) = publisher.join().expect("publisher panicked");
    let (removed_model, removals) = remover.join().expect("remover panicked");
    let (evicted_model, evictions) = evictor.join().expect("evictor panicked");
    let reader_totals: Vec<ReaderTotals> = readers
        .into_iter()
        .map(|r| r.join().expect("reader panicked"))
        .collect();
    let churned = churner.join().expect("churner panicked");
    let (window_hits, window_misses, window_polls) =
        window_poller.join().expect("window poller panicked");
    let cumulative_polls = cumulative_poller
        .join()
        .expect("cumulative poller panicked");
    let run_time = started.elapsed();

    // The state the writers predict.
    let mut expected: HashMap<usize, u64> = published.clone();
    expected.extend(removed_model.iter().map(|(&k, &v)| (k, v)));
    expected.extend(evicted_model.iter().map(|(&k, &(v, _))| (k, v)));
    let mut main_hits = 0u64;
    let mut main_misses = 0u64;
    let mut main_batches = 0u64;
    if FAILURE_COUNT.load(Ordering::SeqCst) == 0 {
        let rows = rows_now(cache);
        if rows != expected.len() as u64 {
            fail(format!(
                "after the run: {rows} rows, the writers' models say {} ({} published + {} of the remover + {} of the evictor)",
                expected.len(),
                published.len(),
                removed_model.len(),
                evicted_model.len()
            ));
        }
        let (h, m) = verify_contents(cache, &expected, "contents after the run");
        (main_hits, main_misses, main_batches) = (main_hits + h, main_misses + m, main_batches + 1);

        // A final known publish of the published range, then evicting what is older.
        let final_version = published.values().copied().max().unwrap_or(0) + 1;
        let ids: Vec<i64> = keys.ids[PUBLISHED].to_vec();
        publish(raw, &ids, final_version, u32::MAX, "final publish");
        let mut evicted = 0u64;
        check(
            unsafe { kvzch_cache_evict_older_than(raw, u32::MAX, &mut evicted) },
            "final evict",
        );
        let stale = (removed_model.len() + evicted_model.len()) as u64;
        if evicted != stale {
            fail(format!("final evict_older_than(u32::MAX) evicted {evicted}, expected the {stale} rows of the remover and evictor"));
        }
        let rows = rows_now(cache);
        if rows != PUBLISHED.len() as u64 {
            fail(format!(
                "after the final publish + evict: {rows} rows, expected {}",
                PUBLISHED.len()
            ));
        }
        let expected: HashMap<usize, u64> = PUBLISHED.map(|k| (k, final_version)).collect();
        let (h, m) = verify_contents(cache, &expected, "contents after the final publish + evict");
        (main_hits, main_misses, main_batches) = (main_hits + h, main_misses + m, main_batches + 1);
    }

    // Counters against the sum of every batch's stats and the sinks.
    let mut cumulative = kvzch_read_stats::default();
    check(
        unsafe { kvzch_cache_get_cumulative_read_stats(raw, &mut cumulative) },
        "cumulative",
    );
    let mut last_window = kvzch_read_stats::default();
    check(
        unsafe { kvzch_cache_get_read_hit_rate_stats(raw, &mut last_window) },
        "last window",
    );
    check(
        unsafe { kvzch_cache_unregister_stat_sink(raw, cache_sink) },
        "unregister the whole-run sink",
    );
    check(
        unsafe { kvzch_unregister_global_stat_sink(global_sink) },
        "unregister the whole-run global sink",
    );
    let readers_sum = reader_totals
        .iter()
        .fold(ReaderTotals::default(), |a, r| ReaderTotals {
            batches: a.batches + r.batches,
            empty_batches: a.empty_batches + r.empty_batches,
            hits: a.hits + r.hits,
            misses: a.misses + r.misses,
            rows_checked: a.rows_checked + r.rows_checked,
        });
    let (nested_batches, nested_hits, nested_misses) = NESTED.get();
    let batches = readers_sum.batches + nested_batches + main_batches;
    let hits = readers_sum.hits + nested_hits + main_hits;
    let misses = readers_sum.misses + nested_misses + main_misses;
    if (cumulative.hits, cumulative.misses, cumulative.total) != (hits, misses, hits + misses) {
        fail(format!(
            "cumulative {cumulative:?} != the sum of the batch stats returned: {hits} hits, {misses} misses \
             (readers {readers_sum:?}, nested {nested_hits}/{nested_misses}, final checks {main_hits}/{main_misses})"
        ));
    }
    let windows = (
        window_hits + last_window.hits,
        window_misses + last_window.misses,
    );
    if windows != (cumulative.hits, cumulative.misses) {
        fail(format!(
            "the windows add up to {windows:?} (hits, misses), cumulative is {cumulative:?}"
        ));
    }
    for (what, tally) in [
        ("cache", &WHOLE_RUN_CACHE_SINK),
        ("global", &WHOLE_RUN_GLOBAL_SINK),
    ] {
        let seen = tally.get();
        if seen != (batches, cumulative.hits, cumulative.misses) {
            fail(format!(
                "the whole-run {what} sink saw (calls, hits, misses) = {seen:?}, expected ({batches}, {}, {})",
                cumulative.hits, cumulative.misses
            ));
        }
    }
    unsafe { kvzch_cache_destroy(raw) };
    FINISHED.store(true, Ordering::SeqCst);

    let summary = format!(
        "stress: {:.1} s concurrent phase, {:.1} s in all; readers: {} batches ({} empty), {} rows checked; \
         publisher: {rounds} rounds of {} rows; remover: {removals} publish+remove; evictor: {evictions} evictions; \
         churned sinks: {churned} ({} calls, {} self-unregistered, {} nested lookups, {} late calls); \
         polls: {window_polls} windows, {cumulative_polls} cumulative; counters {cumulative:?}",
        run_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        readers_sum.batches,
        readers_sum.empty_batches,
        readers_sum.rows_checked,
        PUBLISHED.len(),
        CHURN_CALLS.load(Ordering::Relaxed),
        SELF_UNREGISTERS.load(Ordering::Relaxed),
        nested_batches,
        LATE_CALLS.load(Ordering::Relaxed),
    );
    println!("{summary}");
    let failures = FAILURES.lock().unwrap();
    let count = FAILURE_COUNT.load(Ordering::SeqCst);
    assert!(
        count == 0,
        "{count} invariant(s) broken (first {} listed):\n  {}\n{summary}",
        failures.len(),
        failures.join("\n  ")
    );
    // The run did what it is for: every path the invariants above cover ran.
    assert!(
        rounds >= 1 && removals > 0 && evictions > 0 && churned > 0,
        "{summary}"
    );
    assert!(
        CHURN_CALLS.load(Ordering::Relaxed) > 0
            && SELF_UNREGISTERS.load(Ordering::Relaxed) > 0
            && nested_batches > 0,
        "{summary}"
    );
    assert!(
        readers_sum.batches > 100 && window_polls > 0 && cumulative_polls > 0,
        "{summary}"
    );
}
