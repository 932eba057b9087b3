//! Read-time hit-rate accounting: the per-cache counters and the stat sinks.
//!
//! # Counters
//!
//! A cache keeps one 128-bit atomic holding `hits << 64 | misses` since creation.
//! A lookup batch adds both of its counts with a single `fetch_add`, so every
//! load of that word sees each batch wholly or not at all. Misses never reach
//! 2^64, so the addition never carries into the hit half.
//!
//! The resetting read ("since the previous call") is derived instead of reset:
//! it loads the cumulative word and subtracts what the previous resetting read
//! loaded, under a mutex that only resetting readers take. Consecutive windows
//! therefore tile the cumulative history exactly: every batch lands in exactly
//! one window, the hot path performs one atomic add per batch, and any number of
//! cumulative pollers read without disturbing the resetting one. (Upstream kept
//! two counters and reset each with its own `exchange(0)`, which could split a
//! batch between two windows.)
//!
//! # Sinks
//!
//! A registry holds an immutable list of sinks behind a lock; a batch clones the
//! list's `Arc` and releases the lock before calling anything, so sinks run
//! outside every lock of the library and may call back into it, including
//! unregistering themselves.
//!
//! Each sink has one atomic word: a `RETIRED` bit and the number of calls in
//! progress. A call increments the word and runs only if `RETIRED` was clear;
//! unregistering sets `RETIRED`, then waits until no call is in progress. All
//! operations on the word are totally ordered, so a call that starts after
//! `RETIRED` is set sees it and does nothing, and a call that started before is
//! waited for: when unregister returns, the sink is not running anywhere and
//! never will be again.
//!
//! A sink that unregisters itself (from inside a call of it on this thread)
//! waits for nothing: the ABI promises nothing about its calls on other
//! threads, and waiting for them would deadlock a sink that unregisters
//! itself holding a lock that its other calls wait for, or two threads in
//! one sink both unregistering it. No call starts after it returns. Each
//! thread keeps the sinks it is inside of, innermost last, to tell.
//! Nobody waits to drop such a sink, so the call that leaves its word at
//! `RETIRED` alone tells its batch, which lets go of it once done with its
//! list of sinks, outside every lock. The sink (its closure and what that
//! holds) is dropped with its last reference: there, or in a batch that
//! still holds an older list. A batch made from inside another sink may be
//! that place, and what a capture's `Drop` does there is done from inside
//! that sink.
//!
//! A retired sink stays findable until its last call returns, so an unregister
//! of it that comes meanwhile (a second one, or one after the sink unregistered
//! itself) waits too before it answers `NOT_FOUND`: whatever an unregister
//! made from outside the sink answers, the host may then free the sink's data.
//!
//! Waiting can only deadlock if the waiting thread is itself inside a sink that
//! a waiting thread waits for: sinks A and B, each unregistering the other from
//! inside itself on two threads; or sink B unregistering A while it runs under
//! a call of A on its own thread. Every unregister made from inside a sink
//! records its wait in one process-wide list before it changes anything, and if
//! that wait would close a cycle of waits, it answers `WOULD_DEADLOCK` and
//! leaves the sink registered instead.

#![forbid(unsafe_code)]

use std::any::Any;
use std::cell::Cell;
use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::LazyLock;

use crate::cache::{Error, TableName};
use crate::sync::{
    arc_into_inner, back_off, Arc, AtomicU128, AtomicU64, AtomicUsize, Mutex, RwLock, ShortMutex,
};

/// The counts of one lookup batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub hits: u64,
    pub misses: u64,
    /// `hits + misses`, the number of ids looked up.
    pub total: u64,
    /// Wall time of the lookup itself, without the sinks.
    pub duration_ns: u64,
}

/// Read-time hit and miss counts over some window; `hits + misses == total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub hits: u64,
    pub misses: u64,
    pub total: u64,
}

/// The canonical names of the read counters, as upstream's predictor exported them.
pub const READ_HIT_COUNT: &str = "kvzch.inference.read_hit_count";
pub const READ_MISS_COUNT: &str = "kvzch.inference.read_miss_count";
pub const READ_TOTAL_COUNT: &str = "kvzch.inference.read_total_count";

fn pack(hits: u64, misses: u64) -> u128 {
    u128::from(hits) << 64 | u128::from(misses)
}

fn unpack(counts: u128) -> ReadStats {
    let hits = (counts >> 64) as u64;
    let misses = counts as u64;
    ReadStats {
        hits,
        misses,
        total: hits.wrapping_add(misses),
    }
}

pub(crate) struct ReadCounters {
    since_creation: AtomicU128,
    /// What the previous resetting read returned up to.
    window_start: Mutex<u128>,
}

impl ReadCounters {
    pub(crate) fn new() -> ReadCounters {
        ReadCounters {
            since_creation: AtomicU128::new(0),
            window_start: Mutex::new(0),
        }
    }

    pub(crate) fn record(&self, hits: u64, misses: u64) {
        self.since_creation
            .fetch_add(pack(hits, misses), Ordering::Relaxed);
    }

    pub(crate) fn cumulative(&self) -> ReadStats {
        unpack(self.since_creation.load(Ordering::Relaxed))
    }

    pub(crate) fn take_window(&self) -> ReadStats {
        let mut window_start = self.window_start.lock();
        let now = self.since_creation.load(Ordering::Relaxed);
        // Each half only grows, so the subtraction borrows across halves only
        // when a half wrapped past 2^64, which the wrapping difference absorbs.
        let hits = ((now >> 64) as u64).wrapping_sub((*window_start >> 64) as u64);
        let misses = (now as u64).wrapping_sub(*window_start as u64);
        *window_start = now;
        unpack(pack(hits, misses))
    }
}

/// What a sink receives once per lookup batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchEvent<'a> {
    pub table: &'a TableName,
    pub stats: BatchStats,
}

/// A stat sink: any thread-safe callable.
pub type Sink = Box<dyn Fn(&BatchEvent<'_>) + Send + Sync>;

/// Identifies a registered sink; unique across all registries of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SinkId(pub u64);

/// Ids only need to be unique, not ordered with anything: a plain std atomic
/// (also under loom, whose atomics cannot be statics).
static NEXT_SINK_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

// Not a `const` initializer: loom's thread_local! does not take one.
#[allow(clippy::missing_const_for_thread_local)]
mod running {
    use std::cell::RefCell;

    crate::sync::protocol_thread_local! {
        /// The sinks this thread is running, innermost last.
        pub(super) static RUNNING_SINKS: RefCell<Vec<u64>> = RefCell::new(Vec::new());
        /// Has no destructor, so it lasts as long as its thread: its address
        /// names the thread while `RUNNING_SINKS` is being destroyed.
        pub(super) static THREAD_MARK: u8 = 0;
    }
}
use running::{RUNNING_SINKS, THREAD_MARK};

/// Sink calls made while their thread's `RUNNING_SINKS` is destroyed (a batch
/// from a thread-local or static destructor), by thread mark: rare, so a
/// list under a lock.
static CALLS_IN_TEARDOWN: ShortMutex<Vec<(usize, u64)>> = ShortMutex::new(Vec::new());

/// This thread's mark: unique among running threads.
fn thread_mark() -> usize {
    THREAD_MARK.with(|mark| std::ptr::from_ref(mark).addr())
}

/// Where a sink call is recorded as running on its thread.
enum RunningRecord {
    ThreadLocal,
    Teardown(usize),
}

fn record_running(id: u64) -> RunningRecord {
    match RUNNING_SINKS.try_with(|running| running.borrow_mut().push(id)) {
        Ok(()) => RunningRecord::ThreadLocal,
        Err(_) => {
            let mark = thread_mark();
            CALLS_IN_TEARDOWN.lock().push((mark, id));
            RunningRecord::Teardown(mark)
        }
    }
}

fn forget_running(record: &RunningRecord, id: u64) {
    match *record {
        // Alive when the call was recorded, so alive until it returns.
        RunningRecord::ThreadLocal => {
            let _ = RUNNING_SINKS.try_with(|running| running.borrow_mut().pop());
        }
        RunningRecord::Teardown(mark) => {
            let mut calls = CALLS_IN_TEARDOWN.lock();
            if let Some(at) = calls.iter().rposition(|&call| call == (mark, id)) {
                calls.remove(at);
            }
        }
    }
}

/// The sinks this thread is inside of.
fn sinks_this_thread_runs() -> Vec<u64> {
    let mut inside = RUNNING_SINKS
        .try_with(|running| running.borrow().clone())
        .unwrap_or_default();
    let in_teardown = CALLS_IN_TEARDOWN.lock();
    if !in_teardown.is_empty() {
        let mark = thread_mark();
        inside.extend(
            in_teardown
                .iter()
                .filter(|&&(thread, _)| thread == mark)
                .map(|&(_, id)| id),
        );
    }
    inside
}

/// An unregister, made from inside sinks, that waits for another sink's calls.
#[derive(Clone, PartialEq, Eq)]
struct Wait {
    /// The sink whose calls on other threads are waited for.
    for_sink: u64,
    /// The sinks the waiting thread is inside of: whoever waits for one of
    /// them waits for this thread.
    inside: Vec<u64>,
}

/// The waits in progress, process-wide as sink ids are. An unregister made
/// from outside every sink is not recorded: nobody can be waiting for its
/// thread, so it closes no cycle.
static WAITS: ShortMutex<Vec<Wait>> = ShortMutex::new(Vec::new());

/// Records `wait` unless it would close a cycle: a chain of waiting threads,
/// each inside a sink that the one before waits for, back to this thread.
/// Since every recorded wait was checked, a cycle could only pass through the
/// new one.
fn record_wait(wait: &Wait) -> Result<(), Error> {
    // The shortest cycle: this thread runs a call of the sink it waits for,
    // under the sink it unregisters that one from.
    if wait.inside.contains(&wait.for_sink) {
        return Err(Error::would_deadlock(format!(
            "unregistering sink {} from inside sink(s) {:?} would wait forever: this thread \
             runs a call of it, under the sink that unregisters it",
            wait.for_sink, wait.inside
        )));
    }
    let mut waits = WAITS.lock();
    let mut reached = vec![false; waits.len()];
    let mut frontier = vec![wait.for_sink];
    while let Some(sink) = frontier.pop() {
        for (other, was_reached) in waits.iter().zip(&mut reached) {
            if !*was_reached && other.inside.contains(&sink) {
                if wait.inside.contains(&other.for_sink) {
                    return Err(Error::would_deadlock(format!(
                        "unregistering sink {} from inside sink(s) {:?} would wait forever: a \
                         call of it waits, through other sinks' unregisters, for this thread",
                        wait.for_sink, wait.inside
                    )));
                }
                *was_reached = true;
                frontier.push(other.for_sink);
            }
        }
    }
    waits.push(wait.clone());
    Ok(())
}

fn forget_wait(wait: &Wait) {
    let mut waits = WAITS.lock();
    if let Some(position) = waits.iter().position(|w| w == wait) {
        waits.swap_remove(position);
    }
}

const RETIRED: u64 = 1 << 63;

struct SinkEntry {
    id: u64,
    sink: Sink,
    /// `RETIRED` | calls in progress.
    state: AtomicU64,
}

/// Leaves the running-sink bookkeeping consistent even if the sink panics.
struct CallInProgress<'a> {
    entry: &'a SinkEntry,
    record: RunningRecord,
    last_of_retired: &'a Cell<bool>,
}

impl Drop for CallInProgress<'_> {
    fn drop(&mut self) {
        forget_running(&self.record, self.entry.id);
        self.entry.leave(self.last_of_retired);
    }
}

impl SinkEntry {
    /// Calls the sink unless it is retired, and sets `last_of_retired` if
    /// this was the last call in progress of a retired sink.
    fn call(&self, event: &BatchEvent<'_>, last_of_retired: &Cell<bool>) {
        let before = self.state.fetch_add(1, Ordering::Acquire);
        if before & RETIRED != 0 {
            self.leave(last_of_retired);
            return;
        }
        let _in_progress = CallInProgress {
            entry: self,
            record: record_running(self.id),
            last_of_retired,
        };
        (self.sink)(event);
    }

    /// Ends a call, or a call that found the sink retired.
    fn leave(&self, last_of_retired: &Cell<bool>) {
        if self.state.fetch_sub(1, Ordering::Release) == RETIRED | 1 {
            last_of_retired.set(true);
        }
    }

    fn calls_in_progress(&self) -> u64 {
        self.state.load(Ordering::Acquire) & !RETIRED
    }

    /// Waits until no call of the sink is in progress.
    fn wait_for_calls(&self) {
        let mut attempt = 0u32;
        while self.calls_in_progress() > 0 {
            back_off(attempt);
            attempt = attempt.saturating_add(1);
        }
    }
}

/// A set of sinks, per cache or process-wide.
pub(crate) struct SinkRegistry {
    sinks: RwLock<Arc<Vec<Arc<SinkEntry>>>>,
    /// Unregistered sinks that may still be running: an unregister of one of
    /// them waits for its calls too. The unregister that retired a sink drops
    /// it once it has waited; the batch whose call of a sink that
    /// unregistered itself returned last lets go of that one.
    retiring: Mutex<Vec<Arc<SinkEntry>>>,
    /// Lets a batch skip the registry's lock when nothing is registered.
    count: AtomicUsize,
}

impl SinkRegistry {
    pub(crate) fn new() -> SinkRegistry {
        SinkRegistry {
            sinks: RwLock::new(Arc::new(Vec::new())),
            retiring: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
        }
    }

    /// Registers the sink `make` returns, given the new sink's id before
    /// any batch can call it: whatever `make` writes the id to, a call of
    /// the sink finds it there.
    pub(crate) fn register(&self, make: impl FnOnce(SinkId) -> Sink) -> SinkId {
        let id = NEXT_SINK_ID.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(SinkEntry {
            id,
            sink: make(SinkId(id)),
            state: AtomicU64::new(0),
        });
        {
            let mut sinks = self.sinks.write();
            let mut updated: Vec<Arc<SinkEntry>> = sinks.to_vec();
            updated.push(entry);
            *sinks = Arc::new(updated);
            self.count.store(sinks.len(), Ordering::Release);
        }
        SinkId(id)
    }

    /// Drops the retired sinks whose calls have all returned, and sink
    /// `done_with`, whose calls the caller has waited for. Outside the
    /// registry's locks: the last reference to a sink drops its closure, and
    /// what that holds may register or unregister sinks here as it drops, or
    /// panic: each is dropped all the same, and the first panic is kept in
    /// `panicked` for the caller to resume.
    fn drop_returned_retirees(&self, done_with: Option<u64>, panicked: &mut Option<SinkPanic>) {
        let returned: Vec<Arc<SinkEntry>> = {
            let mut retiring = self.retiring.lock();
            let (running, returned) =
                std::mem::take(&mut *retiring)
                    .into_iter()
                    .partition(|retired| {
                        Some(retired.id) != done_with && retired.calls_in_progress() > 0
                    });
            *retiring = running;
            returned
        };
        drop_each(returned, panicked);
    }

    /// Unregisters sink `id` and waits for its calls on other threads, or,
    /// when it was unregistered already but still runs, only waits and answers
    /// `NotFound`. From inside a call of that sink (the innermost this thread
    /// runs), waits for nothing. Called from inside other sinks, answers
    /// `WouldDeadlock`, changing nothing, where the wait could never end: a
    /// cycle of waits, or a call of sink `id` that this thread runs under
    /// them.
    pub(crate) fn unregister(&self, id: SinkId) -> Result<(), Error> {
        let inside = sinks_this_thread_runs();
        let from_itself = inside.last() == Some(&id.0);
        let wait = (!from_itself && !inside.is_empty()).then_some(Wait {
            for_sink: id.0,
            inside,
        });
        let (entry, was_registered) = {
            let mut sinks = self.sinks.write();
            let mut retiring = self.retiring.lock();
            let position = sinks.iter().position(|entry| entry.id == id.0);
            let entry = position
                .map(|position| &sinks[position])
                .or_else(|| retiring.iter().find(|entry| entry.id == id.0))
                .cloned()
                .ok_or_else(|| {
                    Error::not_found(format!("sink id {} is not registered here", id.0))
                })?;
            if let Some(wait) = &wait {
                record_wait(wait)?;
            }
            if let Some(position) = position {
                let mut updated: Vec<Arc<SinkEntry>> = sinks.to_vec();
                updated.remove(position);
                *sinks = Arc::new(updated);
                self.count.store(sinks.len(), Ordering::Release);
                entry.state.fetch_or(RETIRED, Ordering::AcqRel);
                retiring.push(Arc::clone(&entry));
            }
            (entry, position.is_some())
        };
        if !from_itself {
            entry.wait_for_calls();
        }
        if let Some(wait) = &wait {
            forget_wait(wait);
        }
        // Done with the sink unless this thread is still inside it: then the
        // batch whose call of it returns last drops it. (A count above zero
        // may also be a call that saw `RETIRED` and is leaving.) This thread's
        // own reference may be the sink's last, as may the retirees': each is
        // dropped under its own catch, since a second capture panicking while
        // the first one's panic unwinds would abort the process.
        let done_with = (was_registered && !from_itself).then_some(entry.id);
        let mut panicked = None;
        keeping_panic(&mut panicked, || drop(entry));
        self.drop_returned_retirees(done_with, &mut panicked);
        resume_kept_panic(panicked);
        if was_registered {
            Ok(())
        } else {
            Err(Error::not_found(format!(
                "sink id {} is not registered here: another call unregistered it \
                 (its calls on other threads have returned)",
                id.0
            )))
        }
    }

    /// Calls every sink with `event`. A sink that panics (a Rust one) does
    /// not keep the others from their call: the first panic is kept in
    /// `panicked` for the caller to resume once every sink has run.
    pub(crate) fn notify(&self, event: &BatchEvent<'_>, panicked: &mut Option<SinkPanic>) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let sinks = Arc::clone(&self.sinks.read());
        let last_of_retired = Cell::new(false);
        for entry in sinks.iter() {
            // The entry's bookkeeping is restored by `CallInProgress` as the
            // panic leaves `call`, so nothing is left half changed.
            keeping_panic(panicked, || entry.call(event, &last_of_retired));
        }
        // A retired sink's last reference may be this batch's list or, once
        // its last call returned, the registry's retirees (no unregister waits
        // to drop a sink that unregistered itself: its last call does).
        // Either drops the sink's closure, and what that holds may panic as
        // it drops: each entry the list holds last is dropped under its own
        // catch (two panicking in one drop of the list would abort), and the
        // sweep runs whatever those drops did.
        drop_each(arc_into_inner(sinks).into_iter().flatten(), panicked);
        if last_of_retired.get() {
            self.drop_returned_retirees(None, panicked);
        }
    }
}

impl Drop for SinkRegistry {
    /// A cache's sinks go with it, each dropped under its own catch as a
    /// batch and an unregister drop theirs: two captures panicking in one
    /// drop of the list would abort the process. (No batch runs: one would
    /// borrow the cache.)
    fn drop(&mut self) {
        let registered = std::mem::take(&mut *self.sinks.write());
        let retiring = std::mem::take(&mut *self.retiring.lock());
        let mut panicked = None;
        let registered = arc_into_inner(registered).into_iter().flatten();
        drop_each(registered.chain(retiring), &mut panicked);
        resume_kept_panic(panicked);
    }
}

/// Drops each of `entries` under its own catch, keeping the first panic in
/// `panicked`: the last reference to a sink drops its closure, whose captures
/// may panic, and two panics in one drop would abort the process.
fn drop_each(entries: impl IntoIterator<Item = Arc<SinkEntry>>, panicked: &mut Option<SinkPanic>) {
    for entry in entries {
        keeping_panic(panicked, || drop(entry));
    }
}

/// Lets the first sink panic go on, unless this thread is unwinding already
/// (a host's drop calling in as a panic unwinds), where a second panic would
/// abort the process: that one goes on alone.
pub(crate) fn resume_kept_panic(panicked: Option<SinkPanic>) {
    if let Some(payload) = panicked {
        if std::thread::panicking() {
            discard_panic(payload);
        } else {
            std::panic::resume_unwind(payload);
        }
    }
}

/// Runs `f`, keeping its panic in `panicked` unless an earlier one is there.
fn keeping_panic(panicked: &mut Option<SinkPanic>, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        match panicked {
            Some(_) => discard_panic(payload),
            None => *panicked = Some(payload),
        }
    }
}

/// Lets go of what a panic was given. That can be any value (`panic_any`),
/// with a `Drop` that panics in turn, which would unwind out of the caller
/// where it must not (a second panic, or a C caller): each such panic is
/// caught, and what it was given let go of the same way, until a drop does
/// not panic (a panic's message, usually the next one).
pub(crate) fn discard_panic(mut payload: Box<dyn Any + Send>) {
    while let Err(nested) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        payload = nested;
    }
}

/// What a panicking sink panicked with.
pub(crate) type SinkPanic = Box<dyn Any + Send>;

static GLOBAL_SINKS: LazyLock<SinkRegistry> = LazyLock::new(SinkRegistry::new);

/// Registers a sink that sees the batches of every cache in the process.
pub fn register_global_sink(sink: Sink) -> SinkId {
    GLOBAL_SINKS.register(|_| sink)
}

/// Registers the global sink `make` returns, with the guarantee of
/// [`Cache::register_stat_sink_with_id`](crate::Cache::register_stat_sink_with_id).
pub fn register_global_sink_with_id(make: impl FnOnce(SinkId) -> Sink) -> SinkId {
    GLOBAL_SINKS.register(make)
}

/// Unregisters a global sink, with the guarantee of
/// [`Cache::unregister_stat_sink`](crate::Cache::unregister_stat_sink).
pub fn unregister_global_sink(id: SinkId) -> Result<(), Error> {
    GLOBAL_SINKS.unregister(id)
}

pub(crate) fn notify_global_sinks(event: &BatchEvent<'_>, panicked: &mut Option<SinkPanic>) {
    GLOBAL_SINKS.notify(event, panicked);
}

/// The canonical counter name of a `KVZCH_STAT_*` number.
pub fn stat_name(stat: u32) -> Option<&'static CStr> {
    match stat {
        0 => Some(c"kvzch.inference.read_hit_count"),
        1 => Some(c"kvzch.inference.read_miss_count"),
        2 => Some(c"kvzch.inference.read_total_count"),
        _ => None,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn stat_names_match_the_rust_constants() {
        assert_eq!(stat_name(0).unwrap().to_str().unwrap(), READ_HIT_COUNT);
        assert_eq!(stat_name(1).unwrap().to_str().unwrap(), READ_MISS_COUNT);
        assert_eq!(stat_name(2).unwrap().to_str().unwrap(), READ_TOTAL_COUNT);
        assert!(stat_name(3).is_none());
    }

    /// Only a chain of waits that leads back to the waiting thread is a
    /// cycle: a thread inside a sink that another thread waits for may still
    /// wait for a sink nobody waits through, and a wait that is over leads
    /// nowhere.
    #[test]
    fn only_a_chain_of_waits_back_to_the_thread_is_a_cycle() {
        // Ids far above those `register` hands out, so that no other test's
        // waits meet them.
        let (a, b, c) = (u64::MAX - 3, u64::MAX - 2, u64::MAX - 1);
        // Another thread, inside a call of `a`, waits for the calls of `b`.
        let elsewhere = Wait {
            for_sink: b,
            inside: vec![a],
        };
        record_wait(&elsewhere).unwrap();
        // This thread runs a call of `b` and waits for `c`: no cycle.
        let unrelated = Wait {
            for_sink: c,
            inside: vec![b],
        };
        assert!(record_wait(&unrelated).is_ok());
        forget_wait(&unrelated);
        // Waiting for `a` instead closes one: `a`'s thread waits for `b`.
        let closing = Wait {
            for_sink: a,
            inside: vec![b],
        };
        let refused = record_wait(&closing).unwrap_err();
        assert_eq!(refused.kind(), crate::ErrorKind::WouldDeadlock);
        // Once the other thread's wait is over, nothing leads back.
        forget_wait(&elsewhere);
        assert!(record_wait(&closing).is_ok());
        forget_wait(&closing);
    }

    #[test]
    fn windows_tile_the_cumulative_counts() {
        let counters = ReadCounters::new();
        counters.record(3, 1);
        counters.record(6, 2);
        assert_eq!(
            counters.take_window(),
            ReadStats {
                hits: 9,
                misses: 3,
                total: 12
            }
        );
        assert_eq!(counters.take_window(), ReadStats::default());
        counters.record(1, 0);
        assert_eq!(
            counters.cumulative(),
            ReadStats {
                hits: 10,
                misses: 3,
                total: 13
            }
        );
        assert_eq!(
            counters.take_window(),
            ReadStats {
                hits: 1,
                misses: 0,
                total: 1
            }
        );
    }

    #[test]
    fn concurrent_windows_never_split_a_batch() {
        // The writers record until the poller has taken this many windows
        // that held batches, so the windows do race the records. Fewer under
        // Miri, which interprets each batch thousands of times slower and
        // checks the atomics' orderings as it goes.
        let windows_during: u64 = if cfg!(miri) { 20 } else { 2000 };
        let counters = Arc::new(ReadCounters::new());
        let (stop, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (counters, stop) = (Arc::clone(&counters), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut batches = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        counters.record(3, 1);
                        batches += 1;
                    }
                    batches
                })
            })
            .collect();
        let poller = {
            let (counters, stop, done) =
                (Arc::clone(&counters), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                // A failed assertion stops the writers too, or joining them
                // hangs.
                struct StopOnDrop(Arc<AtomicBool>);
                impl Drop for StopOnDrop {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Relaxed);
                    }
                }
                let _stop_on_exit = StopOnDrop(Arc::clone(&stop));
                let (mut seen, mut nonempty) = (0, 0);
                while !done.load(Ordering::Acquire) {
                    let window = counters.take_window();
                    assert_eq!(window.hits, 3 * window.misses, "{window:?}");
                    let cumulative = counters.cumulative();
                    assert_eq!(cumulative.hits, 3 * cumulative.misses, "{cumulative:?}");
                    seen += window.total;
                    if window.total > 0 {
                        nonempty += 1;
                        if nonempty == windows_during {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
                seen + counters.take_window().total
            })
        };
        let batches: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        done.store(true, Ordering::Release);
        assert_eq!(poller.join().unwrap(), batches * 4);
    }
}
