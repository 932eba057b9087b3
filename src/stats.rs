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
//! unregistering sets `RETIRED`, then waits until the calls in progress are only
//! those the unregistering thread itself is inside of (a sink unregistering
//! itself must not wait for itself). All operations on the word are totally
//! ordered, so a call that starts after `RETIRED` is set sees it and does nothing,
//! and a call that started before is waited for: when unregister returns, the
//! sink is not running anywhere and never will be again.

#![forbid(unsafe_code)]

use std::ffi::CStr;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;

use crate::cache::{Error, TableName};
use crate::sync::{back_off, Arc, AtomicU128, AtomicU64, AtomicUsize, Mutex, RwLock};

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
    }
}
use running::RUNNING_SINKS;

const RETIRED: u64 = 1 << 63;

struct SinkEntry {
    id: u64,
    sink: Sink,
    /// `RETIRED` | calls in progress.
    state: AtomicU64,
}

/// Leaves the running-sink bookkeeping consistent even if the sink panics.
struct CallInProgress<'a>(&'a SinkEntry);

impl Drop for CallInProgress<'_> {
    fn drop(&mut self) {
        RUNNING_SINKS.with(|running| running.borrow_mut().pop());
        self.0.state.fetch_sub(1, Ordering::Release);
    }
}

impl SinkEntry {
    fn call(&self, event: &BatchEvent<'_>) {
        let before = self.state.fetch_add(1, Ordering::Acquire);
        if before & RETIRED != 0 {
            self.state.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        RUNNING_SINKS.with(|running| running.borrow_mut().push(self.id));
        let _in_progress = CallInProgress(self);
        (self.sink)(event);
    }

    fn retire(&self) {
        self.state.fetch_or(RETIRED, Ordering::AcqRel);
        let own_calls = RUNNING_SINKS
            .with(|running| running.borrow().iter().filter(|&&id| id == self.id).count() as u64);
        let mut attempt = 0u32;
        while self.state.load(Ordering::Acquire) & !RETIRED > own_calls {
            back_off(attempt);
            attempt = attempt.saturating_add(1);
        }
    }
}

/// A set of sinks, per cache or process-wide.
pub(crate) struct SinkRegistry {
    sinks: RwLock<Arc<Vec<Arc<SinkEntry>>>>,
    /// Lets a batch skip the registry's lock when nothing is registered.
    count: AtomicUsize,
}

impl SinkRegistry {
    pub(crate) fn new() -> SinkRegistry {
        SinkRegistry {
            sinks: RwLock::new(Arc::new(Vec::new())),
            count: AtomicUsize::new(0),
        }
    }

    pub(crate) fn register(&self, sink: Sink) -> SinkId {
        let id = NEXT_SINK_ID.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(SinkEntry {
            id,
            sink,
            state: AtomicU64::new(0),
        });
        let mut sinks = self.sinks.write();
        let mut updated: Vec<Arc<SinkEntry>> = sinks.to_vec();
        updated.push(entry);
        *sinks = Arc::new(updated);
        self.count.store(sinks.len(), Ordering::Release);
        SinkId(id)
    }

    pub(crate) fn unregister(&self, id: SinkId) -> Result<(), Error> {
        let removed = {
            let mut sinks = self.sinks.write();
            let position = sinks
                .iter()
                .position(|entry| entry.id == id.0)
                .ok_or_else(|| {
                    Error::not_found(format!("sink id {} is not registered here", id.0))
                })?;
            let mut updated: Vec<Arc<SinkEntry>> = sinks.to_vec();
            let removed = updated.remove(position);
            *sinks = Arc::new(updated);
            self.count.store(sinks.len(), Ordering::Release);
            removed
        };
        removed.retire();
        Ok(())
    }

    pub(crate) fn notify(&self, event: &BatchEvent<'_>) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let sinks = Arc::clone(&self.sinks.read());
        for entry in sinks.iter() {
            entry.call(event);
        }
    }
}

static GLOBAL_SINKS: LazyLock<SinkRegistry> = LazyLock::new(SinkRegistry::new);

/// Registers a sink that sees the batches of every cache in the process.
pub fn register_global_sink(sink: Sink) -> SinkId {
    GLOBAL_SINKS.register(sink)
}

/// Unregisters a global sink. When this returns, the sink is not running on any
/// thread (other than inside itself on this one) and will not be called again.
pub fn unregister_global_sink(id: SinkId) -> Result<(), Error> {
    GLOBAL_SINKS.unregister(id)
}

pub(crate) fn notify_global_sinks(event: &BatchEvent<'_>) {
    GLOBAL_SINKS.notify(event);
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
        let counters = Arc::new(ReadCounters::new());
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let counters = Arc::clone(&counters);
                std::thread::spawn(move || {
                    for _ in 0..200_000 {
                        counters.record(3, 1);
                    }
                })
            })
            .collect();
        let poller = {
            let counters = Arc::clone(&counters);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut seen = 0;
                while !done.load(Ordering::Acquire) {
                    let window = counters.take_window();
                    assert_eq!(window.hits, 3 * window.misses, "{window:?}");
                    let cumulative = counters.cumulative();
                    assert_eq!(cumulative.hits, 3 * cumulative.misses, "{cumulative:?}");
                    seen += window.total;
                }
                seen + counters.take_window().total
            })
        };
        for writer in writers {
            writer.join().unwrap();
        }
        done.store(true, Ordering::Release);
        assert_eq!(poller.join().unwrap(), 2 * 200_000 * 4);
    }
}

/// loom models: every interleaving of the two protocols, with the assertions
/// the module docs promise.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::atomic::AtomicBool;

    #[test]
    fn loom_snapshots_hold_whole_batches_and_windows_tile_the_history() {
        loom::model(|| {
            let counters = Arc::new(ReadCounters::new());
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    let counters = Arc::clone(&counters);
                    loom::thread::spawn(move || counters.record(3, 1))
                })
                .collect();
            let first = counters.take_window();
            let cumulative = counters.cumulative();
            for writer in writers {
                writer.join().unwrap();
            }
            let second = counters.take_window();
            for snapshot in [first, second, cumulative] {
                assert_eq!(snapshot.hits, 3 * snapshot.misses, "{snapshot:?}");
            }
            assert_eq!(first.total + second.total, 8);
            assert!(cumulative.total >= first.total);
        });
    }

    #[test]
    fn loom_no_sink_call_after_unregister_returns() {
        loom::model(|| {
            let registry = Arc::new(SinkRegistry::new());
            let freed = Arc::new(AtomicBool::new(false));
            let id = {
                let freed = Arc::clone(&freed);
                registry.register(Box::new(move |_| {
                    assert!(
                        !freed.load(Ordering::SeqCst),
                        "a sink ran after unregister returned"
                    );
                }))
            };
            let batch = {
                let registry = Arc::clone(&registry);
                loom::thread::spawn(move || {
                    let table = TableName::default();
                    let event = BatchEvent {
                        table: &table,
                        stats: BatchStats::default(),
                    };
                    registry.notify(&event);
                })
            };
            registry.unregister(id).unwrap();
            // The host frees user_data here.
            freed.store(true, Ordering::SeqCst);
            batch.join().unwrap();
        });
    }
}
