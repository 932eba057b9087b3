//! A stable random-call harness over the C ABI: seeded random sequences of
//! every exported function with hostile arguments (NULL pointers, zero and huge
//! `n`, short buffers, `n * row_bytes` overflow, overlapping and misaligned
//! buffers, bad enum values and names, wrong `struct_size`s with zero and
//! non-zero tails, unknown / removed / foreign sink ids, `kvzch_get_api` with
//! other majors and sizes), checked after every call against the ABI's rules
//! and a model of every cache:
//!
//! - the status is one the arguments allow (an error exactly when some argument
//!   is bad, and then one of the statuses those bad arguments call for);
//! - on error, every out-param (pre-filled with a sentinel) is untouched, the
//!   last-error message is non-empty and names the offending argument, and the
//!   cache's contents, counters and sinks are unchanged;
//! - on success, the contents, hit masks, batch stats, counter windows,
//!   cumulative counts, row counts, sink tallies and info counters are what the
//!   model says; bytes past what a call may write are untouched;
//! - no sink is called after its unregister returned (or its cache was
//!   destroyed, or its registration failed); a sink registered with a release
//!   callback (1.3) is released exactly once, when it is unregistered or its
//!   cache destroyed, and never called after; a failed registration never is.
//!
//! It never passes a pointer that is invalid in a way the library cannot
//! detect: every buffer really has the length its length parameter claims.
//!
//! 200 seeds × 2000 calls by default; `KVZCH_FUZZ_SEEDS=N` runs N seeds,
//! `KVZCH_FUZZ_CALLS=N` N calls per seed, `KVZCH_FUZZ_SEED=S` only seed S.
//! `cargo test --release --test abi_fuzz -- --nocapture` prints a summary.

#![allow(unused_unsafe)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kvzch::ffi::*;

mod common;
use common::{splitmix, Rng};

type Status = kvzch_status;
const OK: Status = Status::KVZCH_STATUS_OK;
const NULL: Status = Status::KVZCH_STATUS_NULL_ARGUMENT;
const INVALID: Status = Status::KVZCH_STATUS_INVALID_ARGUMENT;
const CAPACITY: Status = Status::KVZCH_STATUS_CAPACITY_EXCEEDED;
const NOT_FOUND: Status = Status::KVZCH_STATUS_NOT_FOUND;
const UNSUPPORTED: Status = Status::KVZCH_STATUS_UNSUPPORTED;

const OPTIONS_1_0: usize = 40;
const INFO_1_0: usize = 32;
const API_1_0: usize = 8 + 20 * size_of::<usize>();
const MAX_CACHES: usize = 4;
const MAX_SINKS: usize = 3;

/// The feature names of ABI 1.0 and 1.1 (this library is 1.1 or later).
const FEATURES: &[&str] = &[
    "read_hit_rate_stats",
    "cumulative_read_stats",
    "stat_sink",
    "global_stat_sink",
    "evict_older_than",
    "batch_remove",
    "plugin_api_v1",
    "capacity_eviction",
    "compact",
    "cache_info_counters",
];

// ------------------------------------------------------------ randomness

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn id(&mut self) -> i64 {
        match self.below(30) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => self.next() as i64,
            _ => self.below(40) as i64 - 20,
        }
    }
    fn ids(&mut self) -> Vec<i64> {
        let n = match self.below(20) {
            0 => 0,
            1 => 100 + self.below(500),
            _ => 1 + self.below(12),
        };
        (0..n).map(|_| self.id()).collect()
    }
    fn time(&mut self) -> u32 {
        match self.below(12) {
            0 => 0,
            1 => u32::MAX,
            2 => self.next() as u32,
            _ => self.below(8) as u32,
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let base = self.next();
        (0..n as u64)
            .map(|i| (base.wrapping_add(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect()
    }
}

/// Bytes aligned for any of the ABI's types; pointers into it at an offset
/// make misaligned or overlapping arguments out of real memory.
struct Buf(Vec<u64>);

impl Buf {
    fn new(bytes: usize, fill: u8) -> Buf {
        let mut buf = Buf(vec![0; bytes.div_ceil(8).max(1)]);
        buf.bytes_mut().fill(fill);
        buf
    }
    fn ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: a Vec<u64> viewed as its bytes.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 8) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * 8) }
    }
}

// ------------------------------------------------------------ sinks

struct SinkState {
    /// Set once unregister returned, its cache was destroyed, or registering
    /// it failed: any call from then on is a violation.
    retired: AtomicBool,
    calls: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    late: AtomicU64,
    bad: AtomicU64,
    /// The table a per-cache sink must only ever see.
    table: Option<CString>,
    /// Registered (or attempted) with `fuzz_release` as its release.
    with_release: bool,
    releases: AtomicU64,
}

impl SinkState {
    fn new(table: Option<CString>, with_release: bool) -> Box<SinkState> {
        Box::new(SinkState {
            retired: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            late: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            table,
            with_release,
            releases: AtomicU64::new(0),
        })
    }
    fn user_data(&self) -> *mut c_void {
        self as *const SinkState as *mut c_void
    }
    fn tally(&self) -> (u64, u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

unsafe extern "C" fn fuzz_sink(user_data: *mut c_void, event: *const kvzch_batch_event) {
    let state = unsafe { &*(user_data as *const SinkState) };
    if state.retired.load(Ordering::SeqCst) || state.releases.load(Ordering::SeqCst) != 0 {
        state.late.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let event = unsafe { &*event };
    let table = unsafe { CStr::from_ptr(event.table) };
    let stats = event.stats;
    if event.struct_size as usize != size_of::<kvzch_batch_event>()
        || stats.hits + stats.misses != stats.total
        || stats.total == 0
        || state.table.as_deref().is_some_and(|t| t != table)
    {
        state.bad.fetch_add(1, Ordering::SeqCst);
    }
    state.calls.fetch_add(1, Ordering::Relaxed);
    state.hits.fetch_add(stats.hits, Ordering::Relaxed);
    state.misses.fetch_add(stats.misses, Ordering::Relaxed);
}

unsafe extern "C" fn fuzz_release(user_data: *mut c_void) {
    let state = unsafe { &*(user_data as *const SinkState) };
    state.releases.fetch_add(1, Ordering::SeqCst);
}

struct SinkRec {
    id: u64,
    state: Box<SinkState>,
    expected: (u64, u64, u64),
}

// ------------------------------------------------------------ the model

struct CacheModel {
    handle: *mut kvzch_cache,
    name: CString,
    row_bytes: usize,
    num_shards: u32,
    leave_untouched: bool,
    max_rows: Option<u64>,
    max_memory: Option<u64>,
    /// A capacity policy evicts: contents are then re-read after each publish.
    evicts: bool,
    rows: HashMap<i64, (Vec<u8>, u32)>,
    hits: u64,
    misses: u64,
    window: (u64, u64),
    inserts: u64,
    updates: u64,
    removals: u64,
    expirations: u64,
    capacity_evictions: u64,
    sinks: Vec<SinkRec>,
}

/// What a call may return: errors it must return one of (when some argument
/// is bad), and errors it may return even when all are fine (capacity).
#[derive(Default)]
struct Expect {
    /// (status, a word the message must contain)
    errors: Vec<(Status, String)>,
    maybe: Vec<(Status, String)>,
}

impl Expect {
    fn error(&mut self, status: Status, word: impl Into<String>) {
        self.errors.push((status, word.into()));
    }
    fn maybe(&mut self, status: Status, word: impl Into<String>) {
        self.maybe.push((status, word.into()));
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum CacheArg {
    Null,
    Live(usize),
}

struct Fuzz {
    rng: Rng,
    seed: u64,
    step: usize,
    caches: Vec<CacheModel>,
    globals: Vec<SinkRec>,
    /// Sink ids that were registered and are not any more.
    removed_ids: Vec<u64>,
    /// Boxed: each one's address is a registered sink's `user_data`.
    #[allow(clippy::vec_box)]
    retired: Vec<Box<SinkState>>,
    /// This thread's last error, as the library reported it.
    last_error: Option<String>,
    log: Vec<String>,
    names: u64,
    calls: BTreeMap<&'static str, u64>,
    statuses: BTreeMap<String, u64>,
}

impl Fuzz {
    fn fail(&self, message: String) -> ! {
        panic!(
            "seed {} step {}: {message}\nlast calls (oldest first):\n  {}\nrerun: KVZCH_FUZZ_SEED={} cargo test --release --test abi_fuzz",
            self.seed,
            self.step,
            self.log.join("\n  "),
            self.seed
        );
    }

    fn note(&mut self, function: &'static str, what: String) {
        *self.calls.entry(function).or_default() += 1;
        if self.log.len() == 16 {
            self.log.remove(0);
        }
        self.log.push(format!("[{}] {function}({what})", self.step));
        PROGRESS.fetch_add(1, Ordering::Relaxed);
        if TRACE.load(Ordering::Relaxed) {
            eprintln!("seed {} {}", self.seed, self.log.last().unwrap());
        }
        if let Ok(mut current) = CURRENT.try_lock() {
            current.clear();
            current.push_str(&format!("seed {} step {}: ", self.seed, self.step));
            current.push_str(&self.log.join("\n  "));
        }
    }

    fn read_last_error(&self) -> String {
        let mut buf = vec![0u8; 4096];
        let len = unsafe { kvzch_last_error_message(buf.as_mut_ptr().cast(), buf.len()) };
        let message = CStr::from_bytes_until_nul(&buf)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if len != message.len() {
            self.fail(format!(
                "kvzch_last_error_message returned {len} for {message:?}"
            ));
        }
        message
    }

    /// Checks a status against what the arguments allow; on an error, checks
    /// and records the message. Returns true on success.
    fn outcome(&mut self, function: &str, status: Status, expect: &Expect) -> bool {
        let code = status as u32;
        if code > 8 {
            self.fail(format!("{function} returned the unknown status {code}"));
        }
        let short = format!("{status:?}").replace("KVZCH_STATUS_", "");
        if TRACE.load(Ordering::Relaxed) {
            eprintln!("    -> {short}");
        }
        *self
            .statuses
            .entry(format!("{function} {short}"))
            .or_default() += 1;
        if status == OK {
            if !expect.errors.is_empty() {
                self.fail(format!(
                    "{function} returned OK, expected one of {:?}",
                    expect.errors
                ));
            }
            return true;
        }
        let allowed = if expect.errors.is_empty() {
            &expect.maybe
        } else {
            &expect.errors
        };
        let words: Vec<&String> = allowed
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, w)| w)
            .collect();
        let message = self.read_last_error();
        if words.is_empty() {
            self.fail(format!(
                "{function} returned {status:?} ({message:?}), expected {}",
                if expect.errors.is_empty() {
                    format!("OK or one of {:?}", expect.maybe)
                } else {
                    format!("one of {:?}", expect.errors)
                }
            ));
        }
        if message.is_empty() || !words.iter().any(|w| message.contains(w.as_str())) {
            self.fail(format!(
                "{function} returned {status:?} with the message {message:?}, which names none of {words:?}"
            ));
        }
        if !message.contains(function) {
            self.fail(format!(
                "the message {message:?} does not say it came from {function}"
            ));
        }
        self.last_error = Some(message);
        false
    }

    fn cache_arg(&mut self) -> CacheArg {
        if self.caches.is_empty() || self.rng.chance(6) {
            CacheArg::Null
        } else {
            CacheArg::Live(self.rng.below(self.caches.len() as u64) as usize)
        }
    }

    fn handle(&self, cache: CacheArg) -> *mut kvzch_cache {
        match cache {
            CacheArg::Null => std::ptr::null_mut(),
            CacheArg::Live(c) => self.caches[c].handle,
        }
    }

    fn expect_cache(&self, cache: CacheArg, expect: &mut Expect) {
        if cache == CacheArg::Null {
            expect.error(NULL, "cache");
        }
    }

    // -------------------------------------------------------- model checks

    fn info_of(&self, handle: *mut kvzch_cache) -> kvzch_cache_info {
        let mut info = kvzch_cache_info {
            struct_size: size_of::<kvzch_cache_info>() as u32,
            ..kvzch_cache_info::default()
        };
        let status = unsafe { kvzch_cache_get_info(handle, &mut info) };
        if status != OK {
            self.fail(format!("get_info of a live cache: {status:?}"));
        }
        info
    }

    /// The checks that change nothing: info, cumulative counts, sinks.
    fn check_quiet(&mut self, c: usize) {
        let model = &self.caches[c];
        let info = self.info_of(model.handle);
        let mut cumulative = kvzch_read_stats::default();
        let status =
            unsafe { kvzch_cache_get_cumulative_read_stats(model.handle, &mut cumulative) };
        if status != OK {
            self.fail(format!("cumulative of a live cache: {status:?}"));
        }
        let expected = (model.hits, model.misses, model.hits + model.misses);
        if (cumulative.hits, cumulative.misses, cumulative.total) != expected {
            self.fail(format!(
                "cache {c}: cumulative {cumulative:?}, the model says {expected:?}"
            ));
        }
        if info.rows != model.rows.len() as u64 {
            self.fail(format!(
                "cache {c}: {} rows, the model says {}",
                info.rows,
                model.rows.len()
            ));
        }
        if info.row_bytes as usize != model.row_bytes || info.num_shards != model.num_shards {
            self.fail(format!(
                "cache {c}: info {info:?} for row_bytes {}",
                model.row_bytes
            ));
        }
        if model.max_rows.is_some_and(|max| info.rows > max)
            || model.max_memory.is_some_and(|max| info.memory_bytes > max)
        {
            self.fail(format!(
                "cache {c}: info {info:?} beyond max_rows {:?} / max_memory_bytes {:?}",
                model.max_rows, model.max_memory
            ));
        }
        let counters = (
            info.inserts,
            info.updates,
            info.removals,
            info.expirations,
            info.capacity_evictions,
        );
        let expected = (
            model.inserts,
            model.updates,
            model.removals,
            model.expirations,
            model.capacity_evictions,
        );
        if counters != expected {
            self.fail(format!(
                "cache {c}: (inserts, updates, removals, expirations, capacity_evictions) = {counters:?}, the model says {expected:?}"
            ));
        }
        self.check_sinks();
    }

    fn check_sinks(&self) {
        let live = self
            .caches
            .iter()
            .flat_map(|c| &c.sinks)
            .chain(&self.globals);
        for sink in live {
            if sink.state.releases.load(Ordering::SeqCst) != 0 {
                self.fail(format!("sink {} was released while registered", sink.id));
            }
            if sink.state.tally() != sink.expected {
                self.fail(format!(
                    "sink {}: (calls, hits, misses) = {:?}, the model says {:?}",
                    sink.id,
                    sink.state.tally(),
                    sink.expected
                ));
            }
        }
        for state in self
            .caches
            .iter()
            .flat_map(|c| &c.sinks)
            .map(|s| &s.state)
            .chain(self.globals.iter().map(|s| &s.state))
            .chain(&self.retired)
        {
            if state.bad.load(Ordering::SeqCst) != 0 {
                self.fail("a sink got a malformed event or another cache's".to_string());
            }
            if state.late.load(Ordering::SeqCst) != 0 {
                self.fail("a sink was called after its unregister returned, its cache was destroyed, or its registration failed".to_string());
            }
        }
    }

    /// Counts a successful lookup of cache `c` in the model and its sinks.
    fn count_lookup(&mut self, c: usize, n: u64, hits: u64) {
        if n == 0 {
            return;
        }
        let model = &mut self.caches[c];
        model.hits += hits;
        model.misses += n - hits;
        for sink in model.sinks.iter_mut().chain(self.globals.iter_mut()) {
            sink.expected.0 += 1;
            sink.expected.1 += hits;
            sink.expected.2 += n - hits;
        }
    }

    /// Reads back every id the model holds and a few it does not; no row may
    /// have gone (only a publish evicts).
    fn verify_contents(&mut self, c: usize) {
        let gone = self.read_back(c);
        if !gone.is_empty() {
            self.fail(format!("cache {c}: ids {gone:?} went missing"));
        }
        self.check_quiet(c);
    }

    /// Reads back every id the model holds and a few it does not, counting
    /// the lookup. The ids that went missing leave the model and are returned.
    fn read_back(&mut self, c: usize) -> Vec<i64> {
        let model = &self.caches[c];
        let mut ids: Vec<i64> = model.rows.keys().copied().collect();
        ids.sort_unstable();
        ids.extend([-21, 20, i64::MIN, i64::MAX, 0]);
        let width = model.row_bytes;
        let mut out = vec![0x77u8; ids.len() * width];
        let mut mask = vec![9u8; ids.len()];
        let mut stats = kvzch_batch_stats::default();
        let status = unsafe {
            kvzch_cache_batch_get(
                model.handle,
                ids.as_ptr(),
                ids.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                mask.as_mut_ptr(),
                &mut stats,
            )
        };
        if status != OK {
            self.fail(format!(
                "verifying lookup: {status:?} {}",
                self.read_last_error()
            ));
        }
        let mut gone = Vec::new();
        let mut hits = 0;
        for (i, id) in ids.iter().enumerate() {
            let row = &out[i * width..][..width];
            match (model.rows.get(id), mask[i]) {
                (Some((want, _)), 1) => {
                    hits += 1;
                    if row != want.as_slice() {
                        self.fail(format!(
                            "cache {c}: id {id} holds {row:?}, the model says {want:?}"
                        ));
                    }
                }
                (Some(_), 0) => gone.push(*id),
                (None, 0) => {
                    let fill = if model.leave_untouched { 0x77 } else { 0 };
                    if row.iter().any(|&b| b != fill) {
                        self.fail(format!("cache {c}: the miss of id {id} wrote {row:?}"));
                    }
                }
                (want, m) => self.fail(format!(
                    "cache {c}: id {id}: hit_mask {m}, the model {}",
                    if want.is_some() {
                        "holds it"
                    } else {
                        "does not hold it"
                    }
                )),
            }
        }
        if (stats.hits, stats.total) != (hits, ids.len() as u64) {
            self.fail(format!(
                "cache {c}: verifying lookup stats {stats:?}, {hits} hits of {}",
                ids.len()
            ));
        }
        let model = &mut self.caches[c];
        for id in &gone {
            model.rows.remove(id);
        }
        self.count_lookup(c, ids.len() as u64, hits);
        gone
    }

    /// Marks a sink that must never be called again; one that was
    /// registered with a release must have been released once by now (a
    /// global one perhaps by another test's batch, which may let go of it
    /// just after its unregister returned), and any other never.
    fn retire(&mut self, state: Box<SinkState>, was_registered: bool) {
        state.retired.store(true, Ordering::SeqCst);
        let expected = u64::from(was_registered && state.with_release);
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.releases.load(Ordering::SeqCst) < expected && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let releases = state.releases.load(Ordering::SeqCst);
        if releases != expected {
            self.fail(format!(
                "a retired sink was released {releases} times, not {expected}"
            ));
        }
        self.retired.push(state);
    }

    // -------------------------------------------------------- the calls

    fn step_once(&mut self) {
        // Most calls are worth more on a live cache: keep one around.
        if self.caches.is_empty() && self.rng.chance(80) {
            return self.create();
        }
        let choice = self.rng.below(100);
        match choice {
            0 => self.abi_version(),
            1 => self.version(),
            2..=3 => self.has_feature(),
            4 => self.status_name(),
            5..=6 => self.last_error_message(),
            7 => self.stat_name(),
            8 => self.options_init(),
            9 => self.options_init_sized(),
            10..=14 => self.create(),
            15..=16 => self.destroy(),
            17..=32 => self.batch_set(),
            33..=50 => self.batch_get(),
            51..=57 => self.batch_remove(),
            58..=62 => self.evict(),
            63 => self.compact(),
            64..=68 => self.get_info(),
            69..=73 => self.read_stats(true),
            74..=78 => self.read_stats(false),
            79..=82 => self.register_sink(false),
            83..=86 => self.unregister_sink(false),
            87..=88 => self.register_sink(true),
            89..=90 => self.unregister_sink(true),
            91..=93 => self.get_api(),
            94 => self.reserve(),
            _ => {
                // A lookup of everything, so that every cache is read back often.
                if !self.caches.is_empty() {
                    let c = self.rng.below(self.caches.len() as u64) as usize;
                    self.note("verify", format!("cache {c}"));
                    self.verify_contents(c);
                }
            }
        }
        self.check_sinks();
    }

    fn abi_version(&mut self) {
        self.note("kvzch_abi_version", String::new());
        let version = unsafe { kvzch_abi_version() };
        if version >> 16 != 1
            || version != (KVZCH_ABI_MAJOR << 16 | KVZCH_ABI_MINOR)
            || version & 0xFFFF < 1
        {
            self.fail(format!("kvzch_abi_version {version:#x}"));
        }
    }

    fn version(&mut self) {
        self.note("kvzch_version", String::new());
        let version = unsafe { CStr::from_ptr(kvzch_version()) };
        if version.to_str() != Ok(env!("CARGO_PKG_VERSION")) {
            self.fail(format!("kvzch_version {version:?}"));
        }
    }

    fn has_feature(&mut self) {
        let (name, expected): (Option<Vec<u8>>, bool) = match self.rng.below(10) {
            0 => (None, false),
            1..=4 => (Some(self.rng.pick(FEATURES).as_bytes().to_vec()), true),
            5 => (Some(b"".to_vec()), false),
            6 => {
                let mut near = self.rng.pick(FEATURES).as_bytes().to_vec();
                match self.rng.below(3) {
                    0 => near.push(b' '),
                    1 => {
                        near.pop();
                    }
                    _ => near.make_ascii_uppercase(),
                }
                (Some(near), false)
            }
            7 => (Some(vec![b'x'; 64 + self.rng.below(200) as usize]), false),
            8 => (Some(vec![0xFF, 0xFE, b'a']), false),
            _ => (
                Some(format!("feature_{}", self.rng.next()).into_bytes()),
                false,
            ),
        };
        self.note(
            "kvzch_has_feature",
            format!(
                "{:?}",
                name.as_ref()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
            ),
        );
        let c_name = name.map(|n| CString::new(n).unwrap());
        let got =
            unsafe { kvzch_has_feature(c_name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr())) };
        if got != expected {
            self.fail(format!("kvzch_has_feature({c_name:?}) = {got}"));
        }
    }

    fn status_name(&mut self) {
        let code = match self.rng.below(3) {
            0 => self.rng.next() as u32,
            _ => self.rng.below(12) as u32,
        };
        self.note("kvzch_status_name", format!("{code}"));
        let name = unsafe { CStr::from_ptr(kvzch_status_name(StatusCode(code))) };
        let expected = [
            "OK",
            "NULL_ARGUMENT",
            "INVALID_ARGUMENT",
            "OUT_OF_MEMORY",
            "CAPACITY_EXCEEDED",
            "NOT_FOUND",
            "UNSUPPORTED",
            "WOULD_DEADLOCK",
            "INTERNAL",
        ]
        .get(code as usize)
        .copied()
        .unwrap_or("UNKNOWN");
        if name.to_str() != Ok(expected) {
            self.fail(format!("kvzch_status_name({code}) = {name:?}"));
        }
    }

    fn stat_name(&mut self) {
        let stat = match self.rng.below(3) {
            0 => self.rng.next() as u32,
            _ => self.rng.below(5) as u32,
        };
        self.note("kvzch_stat_name", format!("{stat}"));
        let name = unsafe { kvzch_stat_name(stat) };
        let expected = [
            "kvzch.inference.read_hit_count",
            "kvzch.inference.read_miss_count",
            "kvzch.inference.read_total_count",
        ]
        .get(stat as usize);
        let got = (!name.is_null()).then(|| {
            unsafe { CStr::from_ptr(name) }
                .to_str()
                .unwrap()
                .to_string()
        });
        if got.as_deref() != expected.copied() {
            self.fail(format!("kvzch_stat_name({stat}) = {got:?}"));
        }
    }

    fn last_error_message(&mut self) {
        let len = match self.rng.below(6) {
            0 => 0,
            1 => 1,
            2 => 2 + self.rng.below(10) as usize,
            _ => self.rng.below(400) as usize,
        };
        let null = len == 0 && self.rng.chance(50);
        self.note(
            "kvzch_last_error_message",
            format!("len {len}, buf {}", if null { "NULL" } else { "given" }),
        );
        let mut buf = vec![0xCCu8; len + 16];
        let ptr = if null {
            std::ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast::<c_char>()
        };
        let full = unsafe { kvzch_last_error_message(ptr, len) };
        let expected = self.last_error.clone().unwrap_or_default();
        if full != expected.len() {
            self.fail(format!(
                "kvzch_last_error_message returned {full}, the last error is {expected:?}"
            ));
        }
        let mut want = vec![0xCCu8; len + 16];
        if len > 0 {
            let copied = (len - 1).min(expected.len());
            want[..copied].copy_from_slice(&expected.as_bytes()[..copied]);
            want[copied] = 0;
        }
        if buf != want {
            self.fail(format!(
                "kvzch_last_error_message(len {len}) wrote {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
    }

    fn options_init(&mut self) {
        let null = self.rng.chance(20);
        self.note(
            "kvzch_options_init",
            if null { "NULL".into() } else { "buffer".into() },
        );
        if null {
            unsafe { kvzch_options_init(std::ptr::null_mut()) };
            return;
        }
        let mut buf = Buf::new(128, 0xCC);
        unsafe { kvzch_options_init(buf.ptr().cast()) };
        let bytes = buf.bytes();
        // A 1.0 host's struct is 40 bytes: nothing past it may be written.
        let mut want = [0u8; OPTIONS_1_0];
        want[..4].copy_from_slice(&(OPTIONS_1_0 as u32).to_ne_bytes());
        if bytes[..OPTIONS_1_0] != want[..] || bytes[OPTIONS_1_0..].iter().any(|&b| b != 0xCC) {
            self.fail(format!("kvzch_options_init wrote {bytes:?}"));
        }
    }

    fn options_init_sized(&mut self) {
        let null = self.rng.chance(10);
        let size = match self.rng.below(5) {
            0 => self.rng.below(OPTIONS_1_0 as u64) as usize,
            1 => OPTIONS_1_0,
            2 => size_of::<kvzch_options>(),
            _ => OPTIONS_1_0 + self.rng.below(128 - OPTIONS_1_0 as u64 + 1) as usize,
        };
        self.note(
            "kvzch_options_init_sized",
            format!("{}, size {size}", if null { "NULL" } else { "buffer" }),
        );
        let mut buf = Buf::new(128, 0xCC);
        let ptr = if null {
            std::ptr::null_mut()
        } else {
            buf.ptr().cast()
        };
        let status = unsafe { kvzch_options_init_sized(ptr, size) };
        let mut expect = Expect::default();
        if null {
            expect.error(NULL, "opts");
        }
        if size < OPTIONS_1_0 {
            expect.error(INVALID, "size");
        }
        let ok = self.outcome("kvzch_options_init_sized", status, &expect);
        let bytes = buf.bytes();
        if !ok {
            if bytes.iter().any(|&b| b != 0xCC) {
                self.fail("kvzch_options_init_sized wrote on error".into());
            }
            return;
        }
        let filled = size.min(size_of::<kvzch_options>());
        let mut want = vec![0u8; filled];
        want[..4].copy_from_slice(&(filled as u32).to_ne_bytes());
        if bytes[..filled] != want[..] || bytes[filled..].iter().any(|&b| b != 0xCC) {
            self.fail(format!("kvzch_options_init_sized({size}) wrote {bytes:?}"));
        }
    }

    fn create(&mut self) {
        if self.caches.len() >= MAX_CACHES {
            return self.destroy();
        }
        let rng = &mut self.rng;
        let mut expect = Expect::default();
        // The fields.
        let row_bytes: u32 = match rng.below(20) {
            0 => 0,
            1 => 65_537,
            2 => u32::MAX,
            3 => 65_536,
            _ => rng.pick(&[1, 2, 3, 7, 8, 13, 64, 100]),
        };
        if row_bytes == 0 || row_bytes > 65_536 {
            expect.error(INVALID, "row_bytes");
        }
        let num_shards: u32 = match rng.below(150) {
            0 => 65_537,
            1 => u32::MAX,
            2 => 65_536,
            _ => rng.pick(&[0, 0, 1, 2, 3, 4, 16]),
        };
        if num_shards > 65_536 {
            expect.error(INVALID, "num_shards");
        }
        let miss_policy: u32 = match rng.below(20) {
            0 => 2,
            1 => u32::MAX,
            _ => rng.below(2) as u32,
        };
        if miss_policy > 1 {
            expect.error(INVALID, "miss_policy");
        }
        let max_rows: u64 = if rng.chance(25) { 1 + rng.below(40) } else { 0 };
        let max_memory: u64 = match rng.below(12) {
            0 => 1 + rng.below(4000),
            1 => 1 + rng.below(4 << 20),
            _ => 0,
        };
        let name_kind = rng.below(12);
        self.names += 1;
        let name: Option<Vec<u8>> = match name_kind {
            0 => None,
            1 => Some(Vec::new()),
            2 => Some(b"has space".to_vec()),
            3 => Some(vec![b'n'; 65]),
            4 => Some(vec![b'n'; 1000]),
            5 => Some(vec![0xC3, 0x28]),
            6 => Some(vec![b'n'; 64]),
            _ => Some(format!("fuzz_{}.{}-x", self.seed, self.names).into_bytes()),
        };
        if (1..=5).contains(&name_kind) {
            expect.error(INVALID, "name");
        }
        let rng = &mut self.rng;
        let eviction_policy: u32 = match rng.below(20) {
            0 => 3,
            1 => u32::MAX,
            2..=5 => 1,
            6..=9 => 2,
            _ => 0,
        };
        let reserved1: u32 = if rng.chance(5) {
            1 + rng.below(100) as u32
        } else {
            0
        };
        // The struct as the host lays it out, with its struct_size.
        let ours = size_of::<kvzch_options>();
        let (struct_size, tail): (u32, &str) = match rng.below(20) {
            0 => (rng.below(OPTIONS_1_0 as u64) as u32, "short"),
            1..=4 => (OPTIONS_1_0 as u32, "1.0 host, garbage after"),
            5 => ((ours + 1 + rng.below(64) as usize) as u32, "zero tail"),
            6 => ((ours + 1 + rng.below(64) as usize) as u32, "non-zero tail"),
            _ => (ours as u32, "ours"),
        };
        let null_opts = rng.chance(4);
        let null_out = rng.chance(4);
        let misaligned = rng.chance(2);
        let c_name = name.clone().map(|n| CString::new(n).unwrap());
        let mut options: kvzch_options = unsafe { std::mem::zeroed() };
        options.struct_size = struct_size;
        options.row_bytes = row_bytes;
        options.num_shards = num_shards;
        options.miss_policy = miss_policy;
        options.max_rows = max_rows;
        options.max_memory_bytes = max_memory;
        options.name = c_name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr());
        options.eviction_policy = eviction_policy;
        options.reserved1 = reserved1;
        let mut buf = Buf::new(256, 0);
        let offset = if misaligned { 4 } else { 0 };
        // SAFETY: plain bytes of a repr(C) struct.
        let raw = unsafe { std::slice::from_raw_parts((&raw const options).cast::<u8>(), ours) };
        buf.bytes_mut()[offset..offset + ours].copy_from_slice(raw);
        let size = struct_size as usize;
        let reads_policy = size >= ours;
        match tail {
            "1.0 host, garbage after" => {
                // Bytes past the host's 40 are not the host's: the library must
                // not read them (a 1.0 host gets the 1.1 defaults).
                let garbage = self.rng.bytes(ours - OPTIONS_1_0);
                buf.bytes_mut()[offset + OPTIONS_1_0..offset + ours].copy_from_slice(&garbage);
            }
            "non-zero tail" => {
                let at = offset + ours + self.rng.below((size - ours) as u64) as usize;
                buf.bytes_mut()[at] = 1 + self.rng.below(255) as u8;
                expect.error(UNSUPPORTED, "past");
            }
            _ => {}
        }
        if size < OPTIONS_1_0 {
            expect.error(INVALID, "struct_size");
        }
        if reads_policy {
            if eviction_policy > 2 {
                expect.error(INVALID, "eviction_policy");
            }
            if reserved1 != 0 {
                expect.error(UNSUPPORTED, "reserved1");
            }
        }
        let policy = if reads_policy && eviction_policy <= 2 {
            eviction_policy
        } else {
            0
        };
        if max_memory != 0 {
            // Too small for an empty cache (or, under a policy, for a row per shard).
            expect.maybe(INVALID, "max_memory_bytes");
        }
        if null_opts {
            expect = Expect::default();
            expect.error(NULL, "opts");
        } else if misaligned {
            expect = Expect::default();
            expect.error(INVALID, "opts");
        }
        if null_out {
            expect.error(NULL, "out");
        }
        let sentinel = 0xDEAD_BEE8usize as *mut kvzch_cache;
        let mut out = sentinel;
        self.note(
            "kvzch_cache_create",
            format!(
                "struct_size {struct_size} ({tail}), row_bytes {row_bytes}, num_shards {num_shards}, miss {miss_policy}, \
                 max_rows {max_rows}, max_memory {max_memory}, name {:?}, policy {eviction_policy}, reserved1 {reserved1}, \
                 opts {}, out {}",
                name.as_ref().map(|n| String::from_utf8_lossy(&n[..n.len().min(20)]).into_owned()),
                if null_opts { "NULL" } else if misaligned { "misaligned" } else { "ok" },
                if null_out { "NULL" } else { "ok" }
            ),
        );
        let opts_ptr = if null_opts {
            std::ptr::null()
        } else {
            unsafe { buf.ptr().add(offset) }
                .cast::<kvzch_options>()
                .cast_const()
        };
        let out_ptr = if null_out {
            std::ptr::null_mut()
        } else {
            &mut out as *mut *mut kvzch_cache
        };
        let status = unsafe { kvzch_cache_create(opts_ptr, out_ptr) };
        if !self.outcome("kvzch_cache_create", status, &expect) {
            if out != sentinel {
                self.fail("kvzch_cache_create wrote *out on error".into());
            }
            return;
        }
        let name = c_name.unwrap_or_else(|| CString::new("default").unwrap());
        let info = self.info_of(out);
        let evicts = policy != 0 && (max_rows != 0 || max_memory != 0);
        let mut shards_ok = info.num_shards.is_power_of_two();
        if !evicts {
            shards_ok &= match num_shards {
                0 => (8..=128).contains(&info.num_shards),
                n => info.num_shards == n.next_power_of_two(),
            };
        }
        if !shards_ok || info.rows != 0 || info.row_bytes != row_bytes {
            self.fail(format!(
                "a new cache's info {info:?} (num_shards {num_shards})"
            ));
        }
        self.caches.push(CacheModel {
            handle: out,
            name,
            row_bytes: row_bytes as usize,
            num_shards: info.num_shards,
            leave_untouched: miss_policy == 1,
            max_rows: (max_rows != 0).then_some(max_rows),
            max_memory: (max_memory != 0).then_some(max_memory),
            evicts,
            rows: HashMap::new(),
            hits: 0,
            misses: 0,
            window: (0, 0),
            inserts: 0,
            updates: 0,
            removals: 0,
            expirations: 0,
            capacity_evictions: 0,
            sinks: Vec::new(),
        });
        let c = self.caches.len() - 1;
        self.check_quiet(c);
    }

    fn destroy(&mut self) {
        if self.caches.is_empty()
            || self
                .rng
                .chance(if self.caches.len() == 1 { 60 } else { 10 })
        {
            self.note("kvzch_cache_destroy", "NULL".into());
            unsafe { kvzch_cache_destroy(std::ptr::null_mut()) };
            return;
        }
        let c = self.rng.below(self.caches.len() as u64) as usize;
        self.note("kvzch_cache_destroy", format!("cache {c}"));
        let model = self.caches.remove(c);
        unsafe { kvzch_cache_destroy(model.handle) };
        for sink in model.sinks {
            self.removed_ids.push(sink.id);
            self.retire(sink.state, true);
        }
    }

    /// `n`, the ids buffer and the bad-argument cases shared by set and get.
    /// Returns (ids storage, n, ids pointer, description).
    fn ids_arg(
        &mut self,
        row_bytes: usize,
        expect: &mut Expect,
        length_word: &str,
    ) -> (Buf, usize, *const i64, Vec<i64>, String) {
        let mut ids = self.rng.ids();
        if row_bytes > 1024 {
            ids.truncate(8);
        }
        let mut storage = Buf::new(ids.len() * 8 + 8, 0);
        for (i, id) in ids.iter().enumerate() {
            storage.0[i] = *id as u64;
        }
        let mut n = ids.len();
        let mut what = format!("n {n}");
        match self.rng.below(40) {
            // n * row_bytes overflows size_t.
            0 if row_bytes > 1 => {
                n = usize::MAX / row_bytes + 1 + self.rng.below(1000) as usize;
                expect.error(INVALID, "overflow");
                what = format!("n {n} (overflows)");
            }
            // Huge but no overflow: the length parameter says the buffer is short.
            1 => {
                n = usize::MAX / row_bytes.max(1) - self.rng.below(1000) as usize;
                expect.error(INVALID, length_word);
                what = format!("n {n} (huge)");
            }
            _ => {}
        }
        let ptr = match self.rng.below(40) {
            0 => {
                what += ", ids NULL";
                if n > 0 {
                    expect.error(NULL, "ids");
                }
                std::ptr::null()
            }
            1 if n > 0 => {
                what += ", ids misaligned";
                expect.error(INVALID, "ids");
                unsafe { storage.ptr().add(4) }.cast::<i64>().cast_const()
            }
            _ => storage.ptr().cast::<i64>().cast_const(),
        };
        (storage, n, ptr, ids, what)
    }

    fn batch_set(&mut self) {
        let cache = self.cache_arg();
        let mut expect = Expect::default();
        self.expect_cache(cache, &mut expect);
        let row_bytes = match cache {
            CacheArg::Live(c) => self.caches[c].row_bytes,
            CacheArg::Null => 8,
        };
        let (_ids_storage, n, ids_ptr, ids, mut what) =
            self.ids_arg(row_bytes, &mut expect, "rows_len");
        let needed = ids.len() * row_bytes;
        let huge = n != ids.len();
        let rows = self.rng.bytes(needed);
        let mut rows_buf = Buf::new(needed + 64, 0xAB);
        rows_buf.bytes_mut()[..needed].copy_from_slice(&rows);
        let mut rows_len = needed;
        let rows_ptr = match self.rng.below(30) {
            0 => {
                what += ", rows NULL";
                if n > 0 {
                    expect.error(NULL, "rows");
                }
                std::ptr::null()
            }
            _ => rows_buf.ptr().cast::<c_void>().cast_const(),
        };
        match self.rng.below(20) {
            0 if needed > 0 => {
                rows_len = self.rng.below(needed as u64) as usize;
                if !huge {
                    expect.error(INVALID, "rows_len");
                }
                what += &format!(", rows_len {rows_len} (short)");
            }
            1 => {
                rows_len = needed + self.rng.below(64) as usize;
                what += &format!(", rows_len {rows_len} (longer)");
            }
            _ => {}
        }
        if huge {
            // The real buffers are short; the library must see it from rows_len.
            rows_len = rows_len.min(needed);
        }
        let ts = self.rng.time();
        let new_ids: HashSet<i64> = match cache {
            CacheArg::Live(c) => ids
                .iter()
                .copied()
                .filter(|id| !self.caches[c].rows.contains_key(id))
                .collect(),
            CacheArg::Null => HashSet::new(),
        };
        if let CacheArg::Live(c) = cache {
            let model = &self.caches[c];
            if !model.evicts {
                if let Some(max) = model.max_rows {
                    if model.rows.len() + new_ids.len() > max as usize {
                        expect.error(CAPACITY, "max_rows");
                        if model.max_memory.is_some() {
                            expect.error(CAPACITY, "max_memory_bytes");
                        }
                    }
                }
                if model.max_memory.is_some() && !new_ids.is_empty() {
                    expect.maybe(CAPACITY, "max_memory_bytes");
                }
            }
        }
        self.note(
            "kvzch_cache_batch_set",
            format!("{cache:?}, {what}, ts {ts}"),
        );
        let handle = self.handle(cache);
        let status = unsafe { kvzch_cache_batch_set(handle, ids_ptr, n, rows_ptr, rows_len, ts) };
        let ok = self.outcome("kvzch_cache_batch_set", status, &expect);
        let CacheArg::Live(c) = cache else { return };
        if !ok {
            return self.verify_contents(c);
        }
        let model = &mut self.caches[c];
        for (i, id) in ids.iter().enumerate() {
            model
                .rows
                .insert(*id, (rows[i * row_bytes..][..row_bytes].to_vec(), ts));
        }
        if !model.evicts {
            self.count_publish(c, &ids, &new_ids, &HashSet::new());
            return self.verify_contents(c);
        }
        let gone: HashSet<i64> = self.read_back(c).into_iter().collect();
        if let Some(id) = ids
            .iter()
            .find(|&id| gone.contains(id) && !new_ids.contains(id))
        {
            self.fail(format!(
                "cache {c}: a publish under a capacity policy evicted stored id {id}, which it wrote"
            ));
        }
        if !ids.is_empty() && ids.iter().all(|id| gone.contains(id)) {
            self.fail(format!(
                "cache {c}: a publish under a capacity policy kept none of its {} ids",
                ids.len()
            ));
        }
        self.count_publish(c, &ids, &new_ids, &gone);
        self.check_quiet(c);
    }

    /// Counts a publish of `ids` (`new_ids` of them not stored before) that
    /// evicted the stored rows and dropped the new ids in `gone`, each once,
    /// as docs/ABI_POLICY.md says: an id given twice counts its earlier
    /// occurrence as an update, unless the publish dropped it.
    fn count_publish(
        &mut self,
        c: usize,
        ids: &[i64],
        new_ids: &HashSet<i64>,
        gone: &HashSet<i64>,
    ) {
        let model = &mut self.caches[c];
        let mut passed = HashSet::new();
        for id in ids.iter().rev() {
            let last = passed.insert(*id);
            if gone.contains(id) {
                continue;
            }
            if last && new_ids.contains(id) {
                model.inserts += 1;
            } else {
                model.updates += 1;
            }
        }
        model.capacity_evictions += gone.len() as u64;
    }

    fn batch_get(&mut self) {
        let cache = self.cache_arg();
        let mut expect = Expect::default();
        self.expect_cache(cache, &mut expect);
        let (row_bytes, leave) = match cache {
            CacheArg::Live(c) => (self.caches[c].row_bytes, self.caches[c].leave_untouched),
            CacheArg::Null => (8, false),
        };
        let (_ids_storage, n, mut ids_ptr, ids, mut what) =
            self.ids_arg(row_bytes, &mut expect, "out_len");
        let huge = n != ids.len();
        let needed = ids.len() * row_bytes;
        let extra = 16;
        let fill = 0x5Au8;
        // Room for the overlap cases below: ids or a hit mask placed inside `out`.
        let mut out = Buf::new(2 * needed.max(ids.len() * 8) + extra + 64, fill);
        let mut out_len = needed;
        let mut out_ptr = out.ptr().cast::<c_void>();
        let mut mask = vec![0xEEu8; ids.len() + extra];
        let mut mask_ptr = std::ptr::null_mut();
        let sentinel = kvzch_batch_stats {
            hits: 0xA5A5,
            misses: 0xA5A5,
            total: 0xA5A5,
            duration_ns: 0xA5A5,
        };
        let mut stats_buf = Buf::new(64, 0);
        let mut stats_ptr: *mut kvzch_batch_stats = std::ptr::null_mut();
        if self.rng.chance(70) {
            mask_ptr = mask.as_mut_ptr();
            what += ", hit_mask";
        }
        match self.rng.below(10) {
            0..=6 => {
                stats_ptr = stats_buf.ptr().cast();
                what += ", stats";
            }
            7 => {
                stats_ptr = unsafe { stats_buf.ptr().add(4) }.cast();
                what += ", stats misaligned";
                expect.error(INVALID, "stats");
            }
            _ => {}
        }
        if !stats_ptr.is_null() {
            unsafe { stats_ptr.write_unaligned(sentinel) };
        }
        match self.rng.below(30) {
            0 => {
                what += ", out NULL";
                out_ptr = std::ptr::null_mut();
                if n > 0 {
                    expect.error(NULL, "out");
                }
            }
            1 if needed > 0 => {
                out_len = self.rng.below(needed as u64) as usize;
                what += &format!(", out_len {out_len} (short)");
                if !huge {
                    expect.error(INVALID, "out_len");
                }
            }
            2 => {
                out_len = needed + self.rng.below(extra as u64) as usize;
                what += &format!(", out_len {out_len} (longer)");
            }
            // Overlaps: the library must refuse instead of aliasing.
            3 if needed >= 8 && n > 0 && !huge && !ids_ptr.is_null() && ids_ptr.is_aligned() => {
                what += ", ids inside out";
                ids_ptr = out.ptr().cast::<i64>();
                for (i, id) in ids.iter().enumerate() {
                    out.0[i] = *id as u64;
                }
                expect.error(INVALID, "overlap");
            }
            4 if needed >= 1 && n > 0 && !huge && !mask_ptr.is_null() => {
                what += ", hit_mask inside out";
                mask_ptr = unsafe { out.ptr().add(self.rng.below(needed as u64) as usize) };
                expect.error(INVALID, "overlap");
            }
            5 if needed >= size_of::<kvzch_batch_stats>()
                && n > 0
                && !huge
                && !stats_ptr.is_null()
                && stats_ptr.is_aligned() =>
            {
                what += ", stats inside out";
                stats_ptr = out.ptr().cast();
                expect.error(INVALID, "overlap");
            }
            6 if n > 0 && !huge && !ids_ptr.is_null() && !mask_ptr.is_null() => {
                what += ", hit_mask over ids";
                mask_ptr = ids_ptr.cast_mut().cast();
                expect.error(INVALID, "overlap");
            }
            // The ids hold the whole stats struct, and `stats_buf` the whole hit
            // mask (from `stats`'s offset of 0 or 4), so a library that wrote
            // through the overlap would corrupt only this test's buffers, which
            // the checks below then catch.
            7 if n * 8 >= size_of::<kvzch_batch_stats>()
                && !huge
                && !ids_ptr.is_null()
                && ids_ptr.is_aligned()
                && !stats_ptr.is_null() =>
            {
                what += ", stats over ids";
                stats_ptr = ids_ptr.cast_mut().cast();
                expect.error(INVALID, "overlap");
            }
            8 if n > 0
                && n + 4 <= stats_buf.bytes().len()
                && !huge
                && !mask_ptr.is_null()
                && !stats_ptr.is_null() =>
            {
                what += ", hit_mask over stats";
                mask_ptr = stats_ptr.cast();
                expect.error(INVALID, "overlap");
            }
            _ => {}
        }
        if huge {
            out_len = out_len.min(needed);
        }
        let out_before = out.bytes().to_vec();
        let mask_before = mask.clone();
        let stats_before = stats_buf.bytes().to_vec();
        self.note("kvzch_cache_batch_get", format!("{cache:?}, {what}"));
        let handle = self.handle(cache);
        let started = Instant::now();
        let status = unsafe {
            kvzch_cache_batch_get(handle, ids_ptr, n, out_ptr, out_len, mask_ptr, stats_ptr)
        };
        let wall_ns = started.elapsed().as_nanos();
        let ok = self.outcome("kvzch_cache_batch_get", status, &expect);
        if !ok {
            if out.bytes() != out_before || mask != mask_before || stats_buf.bytes() != stats_before
            {
                self.fail("batch_get wrote to out, hit_mask or stats on error".into());
            }
            if let CacheArg::Live(c) = cache {
                self.check_quiet(c);
            }
            return;
        }
        let CacheArg::Live(c) = cache else { return };
        let model = &self.caches[c];
        let mut hits = 0u64;
        for (i, id) in ids.iter().enumerate() {
            let row = &out.bytes()[i * row_bytes..][..row_bytes];
            let hit = match model.rows.get(id) {
                Some((want, _)) => {
                    if row != want.as_slice() {
                        self.fail(format!("cache {c}: batch_get of id {id} (position {i}) gave {row:?}, the model says {want:?}"));
                    }
                    true
                }
                None => {
                    let want = if leave { fill } else { 0 };
                    if row.iter().any(|&b| b != want) {
                        self.fail(format!(
                            "cache {c}: the miss of id {id} (position {i}) gave {row:?}"
                        ));
                    }
                    false
                }
            };
            hits += u64::from(hit);
            if !mask_ptr.is_null() && mask[i] != u8::from(hit) {
                self.fail(format!(
                    "cache {c}: hit_mask[{i}] = {} for id {id}",
                    mask[i]
                ));
            }
        }
        if out.bytes()[needed..] != out_before[needed..] {
            self.fail(format!(
                "cache {c}: batch_get wrote past n * row_bytes = {needed}"
            ));
        }
        if mask[ids.len()..] != mask_before[ids.len()..]
            || (mask_ptr.is_null() && mask != mask_before)
        {
            self.fail(format!(
                "cache {c}: batch_get wrote hit_mask bytes it was not given"
            ));
        }
        if !stats_ptr.is_null() {
            let stats = unsafe { stats_ptr.read_unaligned() };
            let expected = (hits, ids.len() as u64 - hits, ids.len() as u64);
            let empty_untouched = ids.is_empty() && stats == sentinel;
            if (stats.hits, stats.misses, stats.total) != expected && !empty_untouched {
                self.fail(format!(
                    "cache {c}: batch stats {stats:?}, the model says {expected:?}"
                ));
            }
            // The lookup's own wall time: some, within the call's.
            if !ids.is_empty()
                && (stats.duration_ns == 0 || u128::from(stats.duration_ns) > wall_ns)
            {
                self.fail(format!(
                    "cache {c}: batch duration_ns {} for a call of {wall_ns} ns",
                    stats.duration_ns
                ));
            }
        } else if stats_buf.bytes() != stats_before {
            self.fail("batch_get wrote stats it was not given".into());
        }
        self.count_lookup(c, ids.len() as u64, hits);
        self.check_quiet(c);
    }

    fn batch_remove(&mut self) {
        let cache = self.cache_arg();
        let mut expect = Expect::default();
        self.expect_cache(cache, &mut expect);
        let ids = self.rng.ids();
        let mut storage = Buf::new(ids.len() * 8 + 8, 0);
        for (i, id) in ids.iter().enumerate() {
            storage.0[i] = *id as u64;
        }
        let mut n = ids.len();
        let mut what = format!("n {n}");
        let mut ids_ptr = storage.ptr().cast::<i64>().cast_const();
        match self.rng.below(40) {
            0 => {
                // More ids than the address space holds, in bytes past
                // `isize::MAX` or past `usize::MAX`: detectable from n alone,
                // and refused before a slice of them is made (the engine's
                // own limit on a batch would come too late).
                let past = if self.rng.chance(50) {
                    isize::MAX as usize
                } else {
                    usize::MAX
                };
                n = past / 8 + 1 + self.rng.below(1 << 20) as usize;
                expect.error(INVALID, "ids of");
                what = format!("n {n} (beyond the address space)");
            }
            1 => {
                ids_ptr = std::ptr::null();
                what += ", ids NULL";
                if n > 0 {
                    expect.error(NULL, "ids");
                }
            }
            2 if n > 0 => {
                ids_ptr = unsafe { storage.ptr().add(4) }.cast::<i64>();
                what += ", ids misaligned";
                expect.error(INVALID, "ids");
            }
            _ => {}
        }
        let mut out_buf = Buf::new(16, 0xCC);
        let out_ptr: *mut u64 = match self.rng.below(10) {
            0..=1 => std::ptr::null_mut(),
            2 => {
                expect.error(INVALID, "out_removed");
                what += ", out_removed misaligned";
                unsafe { out_buf.ptr().add(3) }.cast()
            }
            3 if n > 0 && !ids_ptr.is_null() && ids_ptr.is_aligned() && n == ids.len() => {
                expect.error(INVALID, "overlap");
                what += ", out_removed over an id";
                let at = self.rng.below(n as u64) as usize;
                unsafe { ids_ptr.add(at) }.cast_mut().cast()
            }
            _ => out_buf.ptr().cast(),
        };
        let before = out_buf.bytes().to_vec();
        self.note(
            "kvzch_cache_batch_remove",
            format!("{cache:?}, {what}, ids {:?}", &ids[..ids.len().min(12)]),
        );
        let status = unsafe { kvzch_cache_batch_remove(self.handle(cache), ids_ptr, n, out_ptr) };
        let ok = self.outcome("kvzch_cache_batch_remove", status, &expect);
        let CacheArg::Live(c) = cache else {
            return;
        };
        if ok {
            let model = &mut self.caches[c];
            let removed = ids
                .iter()
                .filter(|id| model.rows.remove(id).is_some())
                .count() as u64;
            model.removals += removed;
            if !out_ptr.is_null() && unsafe { out_ptr.read() } != removed {
                self.fail(format!(
                    "cache {c}: batch_remove reported {}, the model says {removed}",
                    unsafe { out_ptr.read() }
                ));
            }
            if out_ptr.is_null() && out_buf.bytes() != before {
                self.fail("batch_remove wrote an out_removed it was not given".into());
            }
        } else if out_buf.bytes() != before {
            self.fail("batch_remove wrote out_removed on error".into());
        }
        self.verify_contents(c);
    }

    fn evict(&mut self) {
        let cache = self.cache_arg();
        let mut expect = Expect::default();
        self.expect_cache(cache, &mut expect);
        let threshold = self.rng.time();
        let mut out_buf = Buf::new(16, 0xCC);
        let (out_ptr, what): (*mut u64, &str) = match self.rng.below(10) {
            0..=1 => (std::ptr::null_mut(), "NULL"),
            2 => {
                expect.error(INVALID, "out_evicted");
                (unsafe { out_buf.ptr().add(5) }.cast(), "misaligned")
            }
            _ => (out_buf.ptr().cast(), "given"),
        };
        let before = out_buf.bytes().to_vec();
        self.note(
            "kvzch_cache_evict_older_than",
            format!("{cache:?}, {threshold}, out_evicted {what}"),
        );
        let status =
            unsafe { kvzch_cache_evict_older_than(self.handle(cache), threshold, out_ptr) };
        let ok = self.outcome("kvzch_cache_evict_older_than", status, &expect);
        let CacheArg::Live(c) = cache else {
            return;
        };
        if ok {
            let model = &mut self.caches[c];
            let count = model.rows.len();
            model.rows.retain(|_, (_, ts)| *ts >= threshold);
            let evicted = (count - model.rows.len()) as u64;
            model.expirations += evicted;
            if !out_ptr.is_null() && unsafe { out_ptr.read() } != evicted {
                self.fail(format!("cache {c}: evict_older_than({threshold}) reported {}, the model says {evicted}", unsafe { out_ptr.read() }));
            }
        } else if out_buf.bytes() != before {
            self.fail("evict_older_than wrote out_evicted on error".into());
        }
        self.verify_contents(c);
    }

    fn compact(&mut self) {
        let cache = self.cache_arg();
        let mut expect = Expect::default();
        self.expect_cache(cache, &mut expect);
        self.note("kvzch_cache_compact", format!("{cache:?}"));
        let status = unsafe { kvzch_cache_compact(self.handle(cache)) };
        self.outcome("kvzch_cache_compact", status, &expect);
        if let CacheArg::Live(c) = cache {
            self.verify_contents(c);
        }
    }

    fn reserve(&mut self) {
        let cache = self.cache_arg();
        let additional: u64 = match self.rng.below(10) {
            0 => 0,
            1 => u64::MAX - self.rng.below(1000),
            _ => 1 + self.rng.below(5000),
        };
        let mut expect = Expect::default();
        self.expect_cache(cache, &mut expect);
        if let CacheArg::Live(c) = cache {
            let model = &self.caches[c];
            if additional.div_ceil(u64::from(model.num_shards)) >= u64::from(u32::MAX) {
                expect.error(INVALID, "additional_rows");
            } else if model
                .max_rows
                .is_some_and(|max| model.rows.len() as u64 + additional > max)
            {
                expect.error(CAPACITY, "max_rows");
            } else if model.max_memory.is_some() {
                expect.maybe(CAPACITY, "max_memory_bytes");
            }
        }
        self.note("kvzch_cache_reserve", format!("{cache:?}, {additional}"));
        let status = kvzch_cache_reserve(self.handle(cache), additional);
        self.outcome("kvzch_cache_reserve", status, &expect);
        if let CacheArg::Live(c) = cache {
            self.check_quiet(c);
            self.verify_contents(c);
        }
    }

    fn get_info(&mut self) {
        let cache = self.cache_arg();
        let mut expect = Expect::default();
        self.expect_cache(cache, &mut expect);
        let ours = size_of::<kvzch_cache_info>();
        let struct_size = match self.rng.below(8) {
            0 => self.rng.below(INFO_1_0 as u64) as usize,
            1 => INFO_1_0,
            2 => INFO_1_0 + self.rng.below((ours - INFO_1_0) as u64) as usize,
            3 => ours + 1 + self.rng.below(64) as usize,
            _ => ours,
        };
        let mut buf = Buf::new(160, 0xCC);
        buf.bytes_mut()[..4].copy_from_slice(&(struct_size as u32).to_ne_bytes());
        let (ptr, what): (*mut kvzch_cache_info, &str) = match self.rng.below(20) {
            0 => {
                expect.error(NULL, "out");
                (std::ptr::null_mut(), "NULL")
            }
            1 => {
                // Misaligned: struct_size is then at the offset too.
                let bytes = buf.bytes_mut();
                bytes.copy_within(0..4, 4);
                expect.error(INVALID, "out");
                (unsafe { buf.ptr().add(4) }.cast(), "misaligned")
            }
            _ => (buf.ptr().cast(), "given"),
        };
        if !ptr.is_null() && ptr.is_aligned() && struct_size < INFO_1_0 {
            expect.error(INVALID, "struct_size");
        }
        let before = buf.bytes().to_vec();
        self.note(
            "kvzch_cache_get_info",
            format!("{cache:?}, out {what}, struct_size {struct_size}"),
        );
        let status = unsafe { kvzch_cache_get_info(self.handle(cache), ptr) };
        if !self.outcome("kvzch_cache_get_info", status, &expect) {
            if buf.bytes() != before {
                self.fail("get_info wrote *out on error".into());
            }
            return;
        }
        let CacheArg::Live(c) = cache else { return };
        let filled = struct_size.min(ours);
        let bytes = buf.bytes();
        if bytes[filled..] != before[filled..] {
            self.fail(format!(
                "get_info with struct_size {struct_size} wrote past byte {filled}"
            ));
        }
        let reported = u32::from_ne_bytes(bytes[..4].try_into().unwrap()) as usize;
        if reported != filled {
            self.fail(format!(
                "get_info set struct_size {reported}, filled should be {filled}"
            ));
        }
        // The fields the host's struct has, against the full info.
        let full = self.info_of(self.caches[c].handle);
        let mut full_bytes = vec![0u8; ours];
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const full).cast::<u8>(),
                full_bytes.as_mut_ptr(),
                ours,
            )
        };
        if bytes[4..filled] != full_bytes[4..filled] {
            self.fail(format!(
                "get_info with struct_size {struct_size}: {:?}, the full info is {full:?}",
                &bytes[..filled]
            ));
        }
        self.check_quiet(c);
    }

    fn read_stats(&mut self, window: bool) {
        let function = if window {
            "kvzch_cache_get_read_hit_rate_stats"
        } else {
            "kvzch_cache_get_cumulative_read_stats"
        };
        let cache = self.cache_arg();
        let mut expect = Expect::default();
        self.expect_cache(cache, &mut expect);
        let mut buf = Buf::new(48, 0xCC);
        let (ptr, what): (*mut kvzch_read_stats, &str) = match self.rng.below(12) {
            0 => {
                expect.error(NULL, "out");
                (std::ptr::null_mut(), "NULL")
            }
            1 => {
                expect.error(INVALID, "out");
                (unsafe { buf.ptr().add(4) }.cast(), "misaligned")
            }
            _ => (buf.ptr().cast(), "given"),
        };
        let before = buf.bytes().to_vec();
        self.note(function, format!("{cache:?}, out {what}"));
        let handle = self.handle(cache);
        let status = unsafe {
            if window {
                kvzch_cache_get_read_hit_rate_stats(handle, ptr)
            } else {
                kvzch_cache_get_cumulative_read_stats(handle, ptr)
            }
        };
        if !self.outcome(function, status, &expect) {
            if buf.bytes() != before {
                self.fail(format!("{function} wrote *out on error"));
            }
            return;
        }
        let CacheArg::Live(c) = cache else { return };
        let got = unsafe { ptr.read() };
        let model = &mut self.caches[c];
        let expected = if window {
            let w = (model.hits - model.window.0, model.misses - model.window.1);
            model.window = (model.hits, model.misses);
            w
        } else {
            (model.hits, model.misses)
        };
        if (got.hits, got.misses, got.total) != (expected.0, expected.1, expected.0 + expected.1) {
            self.fail(format!(
                "cache {c}: {function} = {got:?}, the model says {expected:?}"
            ));
        }
        if buf.bytes()[size_of::<kvzch_read_stats>()..] != before[size_of::<kvzch_read_stats>()..] {
            self.fail(format!("{function} wrote past *out"));
        }
        self.check_quiet(c);
    }

    fn register_sink(&mut self, global: bool) {
        let with_release = self.rng.chance(50);
        let function = match (global, with_release) {
            (true, false) => "kvzch_register_global_stat_sink",
            (true, true) => "kvzch_register_global_stat_sink_with_release",
            (false, false) => "kvzch_cache_register_stat_sink",
            (false, true) => "kvzch_cache_register_stat_sink_with_release",
        };
        let cache = if global {
            CacheArg::Null
        } else {
            self.cache_arg()
        };
        let live = if global {
            self.globals.len()
        } else if let CacheArg::Live(c) = cache {
            self.caches[c].sinks.len()
        } else {
            0
        };
        if live >= MAX_SINKS {
            return self.unregister_sink(global);
        }
        let mut expect = Expect::default();
        if !global {
            self.expect_cache(cache, &mut expect);
        }
        let null_fn = self.rng.chance(8);
        let null_out = self.rng.chance(8);
        if null_fn {
            expect.error(NULL, "fn");
        }
        let mut out_buf = Buf::new(16, 0xCC);
        let out_ptr: *mut u64 = if null_out {
            expect.error(NULL, "out_id");
            std::ptr::null_mut()
        } else if self.rng.chance(4) {
            expect.error(INVALID, "out_id");
            unsafe { out_buf.ptr().add(1) }.cast()
        } else {
            out_buf.ptr().cast()
        };
        let table = match cache {
            CacheArg::Live(c) if !global => Some(self.caches[c].name.clone()),
            _ => None,
        };
        let state = SinkState::new(table, with_release);
        let callback: kvzch_stat_sink_fn = if null_fn { None } else { Some(fuzz_sink) };
        self.note(
            function,
            format!(
                "{cache:?}, fn {}, out_id {}",
                if null_fn { "NULL" } else { "given" },
                if null_out { "NULL" } else { "given" }
            ),
        );
        let before = out_buf.bytes().to_vec();
        let user_data = state.user_data();
        let release: kvzch_sink_release_fn = Some(fuzz_release);
        let status = unsafe {
            match (global, with_release) {
                (true, false) => kvzch_register_global_stat_sink(callback, user_data, out_ptr),
                (true, true) => kvzch_register_global_stat_sink_with_release(
                    callback, user_data, release, out_ptr,
                ),
                (false, false) => {
                    kvzch_cache_register_stat_sink(self.handle(cache), callback, user_data, out_ptr)
                }
                (false, true) => kvzch_cache_register_stat_sink_with_release(
                    self.handle(cache),
                    callback,
                    user_data,
                    release,
                    out_ptr,
                ),
            }
        };
        if !self.outcome(function, status, &expect) {
            if out_buf.bytes() != before {
                self.fail(format!("{function} wrote *out_id on error"));
            }
            // Not registered: it must never be called, nor released.
            self.retire(state, false);
            return;
        }
        let id = unsafe { out_ptr.read() };
        let rec = SinkRec {
            id,
            state,
            expected: (0, 0, 0),
        };
        let known = self
            .caches
            .iter()
            .flat_map(|c| &c.sinks)
            .chain(&self.globals)
            .any(|s| s.id == id)
            || self.removed_ids.contains(&id);
        if known {
            self.fail(format!("{function} returned the id {id}, already used"));
        }
        match cache {
            CacheArg::Live(c) if !global => self.caches[c].sinks.push(rec),
            _ => self.globals.push(rec),
        }
    }

    fn unregister_sink(&mut self, global: bool) {
        let function = if global {
            "kvzch_unregister_global_stat_sink"
        } else {
            "kvzch_cache_unregister_stat_sink"
        };
        let cache = if global {
            CacheArg::Null
        } else {
            self.cache_arg()
        };
        let mut expect = Expect::default();
        if !global {
            self.expect_cache(cache, &mut expect);
        }
        // Which id: one of this registry's, another registry's, a removed one, or any.
        let own: Vec<u64> = match cache {
            _ if global => self.globals.iter().map(|s| s.id).collect(),
            CacheArg::Live(c) => self.caches[c].sinks.iter().map(|s| s.id).collect(),
            CacheArg::Null => Vec::new(),
        };
        let others: Vec<u64> = self
            .caches
            .iter()
            .enumerate()
            .filter(|(i, _)| global || cache != CacheArg::Live(*i))
            .flat_map(|(_, c)| c.sinks.iter().map(|s| s.id))
            .chain(if global {
                Vec::new()
            } else {
                self.globals.iter().map(|s| s.id).collect()
            })
            .collect();
        let (id, kind) = match self.rng.below(10) {
            0..=5 if !own.is_empty() => (self.rng.pick(&own), "registered here"),
            6 if !others.is_empty() => (self.rng.pick(&others), "of another registry"),
            7 if !self.removed_ids.is_empty() => (self.rng.pick(&self.removed_ids), "removed"),
            8 => (self.rng.pick(&[0, u64::MAX, 1 << 63]), "edge"),
            _ => (self.rng.next(), "random"),
        };
        let registered_here = own.contains(&id);
        if !registered_here {
            expect.error(NOT_FOUND, format!("{id}"));
        }
        self.note(function, format!("{cache:?}, id {id} ({kind})"));
        let status = unsafe {
            if global {
                kvzch_unregister_global_stat_sink(id)
            } else {
                kvzch_cache_unregister_stat_sink(self.handle(cache), id)
            }
        };
        if !self.outcome(function, status, &expect) {
            return;
        }
        let list = match cache {
            CacheArg::Live(c) if !global => &mut self.caches[c].sinks,
            _ => &mut self.globals,
        };
        let at = list.iter().position(|s| s.id == id).unwrap();
        let rec = list.remove(at);
        self.removed_ids.push(id);
        self.retire(rec.state, true);
    }

    fn get_api(&mut self) {
        let major = match self.rng.below(8) {
            0 => 0,
            1 => 2,
            2 => self.rng.next() as u32,
            _ => 1,
        };
        let ours = size_of::<kvzch_api_v1>();
        let size = match self.rng.below(8) {
            0 => self.rng.below(API_1_0 as u64) as usize,
            1 => API_1_0,
            2 => API_1_0 + self.rng.below((ours - API_1_0) as u64 + 1) as usize,
            3 => ours + 1 + self.rng.below(100) as usize,
            _ => ours,
        };
        let mut buf = Buf::new(320, 0xCC);
        let mut expect = Expect::default();
        if major != 1 {
            expect.error(UNSUPPORTED, "abi_major");
        }
        let (ptr, what): (*mut kvzch_api_v1, &str) = match self.rng.below(12) {
            0 => {
                expect.error(NULL, "table");
                (std::ptr::null_mut(), "NULL")
            }
            1 => {
                expect.error(INVALID, "table");
                (unsafe { buf.ptr().add(4) }.cast(), "misaligned")
            }
            _ => (buf.ptr().cast(), "given"),
        };
        if size < API_1_0 {
            expect.error(INVALID, "table_size");
        }
        let before = buf.bytes().to_vec();
        self.note(
            "kvzch_get_api",
            format!("major {major}, table {what}, table_size {size}"),
        );
        let status = unsafe { kvzch_get_api(major, ptr, size) };
        if !self.outcome("kvzch_get_api", status, &expect) {
            if buf.bytes() != before {
                self.fail("kvzch_get_api wrote the table on error".into());
            }
            return;
        }
        let bytes = buf.bytes();
        let filled = size.min(ours);
        let word = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
        let struct_size = u32::from_ne_bytes(bytes[..4].try_into().unwrap()) as usize;
        let abi = u32::from_ne_bytes(bytes[4..8].try_into().unwrap());
        if struct_size != filled || abi != unsafe { kvzch_abi_version() } {
            self.fail(format!(
                "kvzch_get_api(table_size {size}): struct_size {struct_size}, abi_version {abi:#x}"
            ));
        }
        let entries = (filled - 8) / 8;
        if (0..entries).any(|e| word(8 + 8 * e) == 0) {
            self.fail(format!(
                "kvzch_get_api(table_size {size}) left an entry of its {entries} NULL"
            ));
        }
        if bytes[filled..size].iter().any(|&b| b != 0) || bytes[size..] != before[size..] {
            self.fail(format!("kvzch_get_api(table_size {size}): bytes past {filled} not zeroed up to {size}, or written past it"));
        }
        // The first entry works.
        let abi_version_fn: extern "C" fn() -> u32 =
            unsafe { std::mem::transmute(word(8) as usize) };
        if abi_version_fn() != abi {
            self.fail("the table's abi_version_fn disagrees".into());
        }
    }

    fn teardown(&mut self) {
        for sink in std::mem::take(&mut self.globals) {
            let status = unsafe { kvzch_unregister_global_stat_sink(sink.id) };
            if status != OK {
                self.fail(format!("unregistering global sink {}: {status:?}", sink.id));
            }
            self.retire(sink.state, true);
        }
        for model in std::mem::take(&mut self.caches) {
            unsafe { kvzch_cache_destroy(model.handle) };
            for sink in model.sinks {
                self.retire(sink.state, true);
            }
        }
        self.check_sinks();
    }
}

/// Calls made so far, and the latest ones, for the watchdog.
static PROGRESS: AtomicU64 = AtomicU64::new(0);
/// `KVZCH_FUZZ_TRACE=1`: print every call as it is made.
static TRACE: AtomicBool = AtomicBool::new(false);
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// A call that never returns (a hang or a livelock in the library) would stall
/// the run silently: after `KVZCH_FUZZ_STALL_SECONDS` (30) without a new call,
/// print the call in progress and end the process.
fn start_watchdog() {
    let limit = Duration::from_secs(env("KVZCH_FUZZ_STALL_SECONDS", 30));
    std::thread::spawn(move || {
        let mut seen = PROGRESS.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = PROGRESS.load(Ordering::Relaxed);
            if now != seen {
                (seen, since) = (now, Instant::now());
            } else if since.elapsed() > limit {
                let current = CURRENT.lock().map(|c| c.clone()).unwrap_or_default();
                eprintln!(
                    "abi_fuzz: no call returned for {} s; the last calls (the last one never returned):\n  {current}",
                    limit.as_secs()
                );
                std::process::exit(101);
            }
        }
    });
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_abi_call_sequences_keep_every_rule() {
    let seeds: Vec<u64> = match std::env::var("KVZCH_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (0..env("KVZCH_FUZZ_SEEDS", 200)).collect(),
    };
    let calls = env("KVZCH_FUZZ_CALLS", 2000) as usize;
    let started = Instant::now();
    start_watchdog();
    TRACE.store(env("KVZCH_FUZZ_TRACE", 0) != 0, Ordering::Relaxed);
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut retired = Vec::new();
    let mut last_error = None;
    for &seed in &seeds {
        let mut fuzz = Fuzz {
            rng: Rng(splitmix(seed ^ 0xF022)),
            seed,
            step: 0,
            caches: Vec::new(),
            globals: Vec::new(),
            removed_ids: Vec::new(),
            retired: Vec::new(),
            last_error: last_error.take(),
            log: Vec::new(),
            names: 0,
            calls: BTreeMap::new(),
            statuses: BTreeMap::new(),
        };
        for step in 0..calls {
            fuzz.step = step;
            fuzz.step_once();
        }
        fuzz.teardown();
        for (k, v) in &fuzz.calls {
            *totals.entry(k).or_default() += v;
        }
        for (k, v) in &fuzz.statuses {
            *statuses.entry(k.clone()).or_default() += v;
        }
        last_error = fuzz.last_error.take();
        // Kept until the end: a late sink call must find its state alive.
        retired.append(&mut fuzz.retired);
    }
    println!(
        "abi_fuzz: {} seeds x {calls} calls in {:.1} s; {} sinks retired, none called late",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        retired.len()
    );
    println!("  calls: {totals:?}");
    for (key, count) in &statuses {
        println!("  {key}: {count}");
    }
}

/// Runs `f` on its own thread; a call that does not finish within `seconds`
/// fails the test instead of hanging it (the stuck thread is left behind).
fn finishes_within<T: Send + 'static>(
    seconds: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match result.recv_timeout(Duration::from_secs(seconds)) {
        Ok(value) => value,
        Err(_) => panic!("{what} did not return within {seconds} s"),
    }
}

/// Found by the fuzz: under `KVZCH_EVICT_OLDEST_TIMESTAMP`, a publish into a
/// full shard whose only rows are the publish's own ids (which may not be
/// evicted), stamped `UINT32_MAX`, never returned.
#[test]
fn a_publish_under_a_capacity_policy_returns_when_only_its_own_rows_are_stamped_u32_max() {
    let status = finishes_within(10, "kvzch_cache_batch_set", || {
        let mut opts: kvzch_options = unsafe { std::mem::zeroed() };
        unsafe { kvzch_options_init_sized(&mut opts, size_of::<kvzch_options>()) };
        opts.row_bytes = 8;
        opts.num_shards = 1;
        opts.max_rows = 1;
        opts.eviction_policy = KVZCH_EVICT_OLDEST_TIMESTAMP;
        let mut cache = std::ptr::null_mut();
        assert_eq!(unsafe { kvzch_cache_create(&opts, &mut cache) }, OK);
        let row = [1u8; 16];
        assert_eq!(
            unsafe {
                kvzch_cache_batch_set(cache, [1i64].as_ptr(), 1, row.as_ptr().cast(), 8, u32::MAX)
            },
            OK
        );
        // Id 1 is overwritten (so protected), id 2 is new and needs room.
        let status = unsafe {
            kvzch_cache_batch_set(cache, [1i64, 2].as_ptr(), 2, row.as_ptr().cast(), 16, 7)
        };
        let rows = {
            let mut info = kvzch_cache_info {
                struct_size: size_of::<kvzch_cache_info>() as u32,
                ..Default::default()
            };
            unsafe { kvzch_cache_get_info(cache, &mut info) };
            info.rows
        };
        unsafe { kvzch_cache_destroy(cache) };
        (status, rows)
    });
    assert_eq!(status, (OK, 1), "(status, rows) of the second publish");
}
