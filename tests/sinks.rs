//! Stat sinks: who sees which batch, reentrancy, and the unregister guarantee.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex, Weak};
use std::thread;
use std::time::Duration;

use kvzch::{
    register_global_sink, unregister_global_sink, Cache, CacheConfig, ErrorKind, SinkId, TableName,
};

#[path = "common/panic_payload.rs"]
mod panic_payload;
use panic_payload::PanicsAsItDrops;

/// Calls its closure as it drops: a host's guard.
struct CallsOnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for CallsOnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn named(name: &str) -> Cache {
    Cache::new(CacheConfig {
        name: TableName::new(name).unwrap(),
        ..CacheConfig::new(4)
    })
    .unwrap()
}

#[test]
fn cache_sinks_see_their_cache_and_global_sinks_see_all() {
    let (a, b) = (named("sinks_table_a"), named("sinks_table_b"));
    a.batch_set(&[1], &[1; 4], 0).unwrap();
    let seen_by_a = Arc::new(Mutex::new(Vec::new()));
    let seen_globally = Arc::new(Mutex::new(Vec::new()));
    let sink_a = {
        let seen = Arc::clone(&seen_by_a);
        a.register_stat_sink(Box::new(move |event| {
            seen.lock().unwrap().push((
                event.table.to_string(),
                event.stats.hits,
                event.stats.misses,
            ))
        }))
    };
    let global = {
        let seen = Arc::clone(&seen_globally);
        register_global_sink(Box::new(move |event| {
            // Other tests of this binary run concurrently; keep only ours.
            if event.table.as_str().starts_with("sinks_table_") {
                seen.lock().unwrap().push(event.table.to_string());
            }
        }))
    };
    let mut out = [0u8; 8];
    a.batch_get(&[1, 2], &mut out, None).unwrap();
    b.batch_get(&[1, 2], &mut out, None).unwrap();
    b.batch_get(&[], &mut [], None).unwrap();
    assert_eq!(
        *seen_by_a.lock().unwrap(),
        [("sinks_table_a".to_string(), 1, 1)]
    );
    assert_eq!(
        *seen_globally.lock().unwrap(),
        ["sinks_table_a", "sinks_table_b"]
    );
    a.unregister_stat_sink(sink_a).unwrap();
    unregister_global_sink(global).unwrap();
    assert_eq!(
        a.unregister_stat_sink(sink_a).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        b.unregister_stat_sink(SinkId(u64::MAX)).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    a.batch_get(&[1], &mut out[..4], None).unwrap();
    assert_eq!(seen_by_a.lock().unwrap().len(), 1);
}

#[test]
fn a_sink_sees_the_stats_its_batch_returns_with_the_lookups_wall_time() {
    let cache = named("sinks_duration");
    let ids: Vec<i64> = (0..4096).collect();
    cache
        .batch_set(&ids[..2048], &vec![1; 2048 * 4], 1)
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let seen = Arc::clone(&seen);
        cache.register_stat_sink(Box::new(move |event| {
            seen.lock().unwrap().push(event.stats)
        }))
    };
    let mut out = vec![0u8; ids.len() * 4];
    let started = std::time::Instant::now();
    let stats = cache.batch_get(&ids, &mut out, None).unwrap();
    let wall_ns = started.elapsed().as_nanos();
    cache.unregister_stat_sink(sink).unwrap();
    assert_eq!((stats.hits, stats.misses, stats.total), (2048, 2048, 4096));
    assert!(
        stats.duration_ns > 0 && u128::from(stats.duration_ns) <= wall_ns,
        "duration_ns {} for a call of {wall_ns} ns",
        stats.duration_ns
    );
    assert_eq!(*seen.lock().unwrap(), vec![stats]);
}

#[test]
fn a_sink_may_look_up_the_same_cache_and_unregister_itself() {
    let cache = Arc::new(named("reentrant"));
    cache.batch_set(&[5], &[5; 4], 0).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let given_id = Arc::new(Mutex::new(None::<SinkId>));
    let id = {
        let (weak, calls, given_id) = (
            Arc::downgrade(&cache),
            Arc::clone(&calls),
            Arc::clone(&given_id),
        );
        // The sink learns its id as it is made, before any batch can call it.
        cache.register_stat_sink_with_id(move |own_id| {
            *given_id.lock().unwrap() = Some(own_id);
            Box::new(move |_| {
                let nested = calls.fetch_add(1, Ordering::SeqCst) == 0;
                let cache = weak.upgrade().unwrap();
                if nested {
                    // Inside the sink: a lookup on the same cache (whose batch
                    // calls this sink again, one level down), then
                    // unregistering itself.
                    let mut out = [0u8; 4];
                    cache.batch_get(&[5], &mut out, None).unwrap();
                    assert_eq!(out, [5; 4]);
                    cache.unregister_stat_sink(own_id).unwrap();
                }
            })
        })
    };
    assert_eq!(*given_id.lock().unwrap(), Some(id));
    let mut out = [0u8; 4];
    cache.batch_get(&[5], &mut out, None).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    cache.batch_get(&[5], &mut out, None).unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "no call after unregistering"
    );
    assert_eq!(cache.cumulative_read_stats().total, 3);
}

#[test]
fn a_sink_under_a_call_of_another_cannot_unregister_that_one() {
    // A call of `outer`'s sink looks up `inner`, whose sink unregisters
    // `outer`'s. Waiting for `outer`'s calls would wait for the one this
    // thread runs beneath; not waiting would let a host free its user data
    // while calls on other threads still run. So: WouldDeadlock, changing
    // nothing.
    let outer = Arc::new(named("nested_outer"));
    let inner = Arc::new(named("nested_inner"));
    let outer_id = Arc::new(Mutex::new(None::<SinkId>));
    let answer = Arc::new(Mutex::new(None));
    let inner_id = {
        let (weak, outer_id, answer) = (
            Arc::downgrade(&outer),
            Arc::clone(&outer_id),
            Arc::clone(&answer),
        );
        inner.register_stat_sink(Box::new(move |_| {
            let id = outer_id.lock().unwrap().expect("registered");
            let unregistered = weak.upgrade().unwrap().unregister_stat_sink(id);
            *answer.lock().unwrap() = Some(unregistered.map_err(|e| e.kind()));
        }))
    };
    let (id, calls, _, _) = {
        let inner = Arc::downgrade(&inner);
        sink_with_first_call(&outer, move || {
            let inner = inner.upgrade().unwrap();
            inner.batch_get(&[1], &mut [0u8; 4], None).unwrap();
        })
    };
    *outer_id.lock().unwrap() = Some(id);
    outer.batch_get(&[1], &mut [0u8; 4], None).unwrap();
    assert_eq!(*answer.lock().unwrap(), Some(Err(ErrorKind::WouldDeadlock)));
    // Still registered: called again, and unregistered from outside.
    outer.batch_get(&[1], &mut [0u8; 4], None).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    outer.unregister_stat_sink(id).unwrap();
    inner.unregister_stat_sink(inner_id).unwrap();
}

#[test]
fn after_unregister_returns_the_sink_is_never_running() {
    let cache = Arc::new(named("unregister_race"));
    cache.batch_set(&[1], &[1; 4], 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let lookups: Vec<_> = (0..2)
        .map(|_| {
            let (cache, stop) = (Arc::clone(&cache), Arc::clone(&stop));
            thread::spawn(move || {
                let mut out = [0u8; 4];
                while !stop.load(Ordering::Relaxed) {
                    cache.batch_get(&[1], &mut out, None).unwrap();
                }
            })
        })
        .collect();
    let late_calls = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    // Unregisters made while a call of their sink was running: those that had
    // something to wait for.
    let mut made_during_a_call = 0;
    for _ in 0..200 {
        // `freed` stands for the host freeing user_data once unregister returns.
        let freed = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicU64::new(0));
        let id = {
            let (freed, late_calls) = (Arc::clone(&freed), Arc::clone(&late_calls));
            let (calls, running) = (Arc::clone(&calls), Arc::clone(&running));
            cache.register_stat_sink(Box::new(move |_| {
                running.fetch_add(1, Ordering::SeqCst);
                calls.fetch_add(1, Ordering::SeqCst);
                for _ in 0..200 {
                    std::hint::spin_loop();
                }
                if freed.load(Ordering::SeqCst) {
                    late_calls.fetch_add(1, Ordering::SeqCst);
                }
                running.fetch_sub(1, Ordering::SeqCst);
            }))
        };
        thread::sleep(Duration::from_micros(200));
        if running.load(Ordering::SeqCst) > 0 {
            made_during_a_call += 1;
        }
        cache.unregister_stat_sink(id).unwrap();
        assert_eq!(
            running.load(Ordering::SeqCst),
            0,
            "unregister returned while its sink ran"
        );
        freed.store(true, Ordering::SeqCst);
    }
    stop.store(true, Ordering::Relaxed);
    for lookup in lookups {
        lookup.join().unwrap();
    }
    assert_eq!(late_calls.load(Ordering::SeqCst), 0);
    assert!(calls.load(Ordering::SeqCst) > 0, "no sink was ever called");
    assert!(
        made_during_a_call > 0,
        "no unregister came while its sink ran: the test proved nothing"
    );
}

#[test]
fn counters_equal_the_sum_of_what_sinks_received() {
    let cache = Arc::new(named("sink_totals"));
    cache.batch_set(&[1, 2], &[0; 8], 0).unwrap();
    let (hits, misses) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let id = {
        let (hits, misses) = (Arc::clone(&hits), Arc::clone(&misses));
        cache.register_stat_sink(Box::new(move |event| {
            hits.fetch_add(event.stats.hits, Ordering::Relaxed);
            misses.fetch_add(event.stats.misses, Ordering::Relaxed);
        }))
    };
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                let mut out = [0u8; 12];
                for i in 0..10_000i64 {
                    cache.batch_get(&[1, i % 4 + t, 2], &mut out, None).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    cache.unregister_stat_sink(id).unwrap();
    // Ids 1 and 2 are stored: every batch hits them, and the middle id hits
    // in half of each thread's batches.
    assert_eq!(hits.load(Ordering::Relaxed), 50_000);
    assert_eq!(misses.load(Ordering::Relaxed), 10_000);
    let counters = cache.cumulative_read_stats();
    assert_eq!(counters.hits, hits.load(Ordering::Relaxed));
    assert_eq!(counters.misses, misses.load(Ordering::Relaxed));
    assert_eq!(counters.total, 60_000);
}

/// A sink on `cache` that, on its first call only, signals `entered`, then runs
/// `first_call` and marks `finished`; later calls only count themselves.
fn sink_with_first_call(
    cache: &Cache,
    first_call: impl Fn() + Send + Sync + 'static,
) -> (SinkId, Arc<AtomicU64>, mpsc::Receiver<()>, Arc<AtomicBool>) {
    let calls = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered) = mpsc::channel();
    let entered_tx = Mutex::new(entered_tx);
    let id = {
        let (calls, finished) = (Arc::clone(&calls), Arc::clone(&finished));
        cache.register_stat_sink(Box::new(move |_| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                let _ = entered_tx.lock().unwrap().send(());
                first_call();
                finished.store(true, Ordering::SeqCst);
            }
        }))
    };
    (id, calls, entered, finished)
}

/// [`sink_with_first_call`] whose first call blocks until the sender returned
/// last sends.
fn sink_blocked_in_first_call(
    cache: &Cache,
) -> (
    SinkId,
    Arc<AtomicU64>,
    mpsc::Receiver<()>,
    Arc<AtomicBool>,
    mpsc::Sender<()>,
) {
    let (release_tx, release) = mpsc::channel::<()>();
    let release = Mutex::new(release);
    let (id, calls, entered, finished) = sink_with_first_call(cache, move || {
        release.lock().unwrap().recv().unwrap();
    });
    (id, calls, entered, finished, release_tx)
}

/// Looks up one id on `cache` from a thread of its own, which runs its sinks.
fn look_up_in_background(cache: &Arc<Cache>) -> thread::JoinHandle<()> {
    let cache = Arc::clone(cache);
    thread::spawn(move || {
        cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
    })
}

#[test]
fn a_sink_unregistered_before_a_running_batch_reaches_it_is_skipped() {
    // A batch calls the sinks of the list it took at its start. One
    // unregistered while the batch runs an earlier sink has no call to wait
    // for, so its unregister returns at once: the batch must then skip it,
    // or it runs after its unregister returned.
    let cache = Arc::new(named("skipped_once_retired"));
    let (earlier, _, entered, finished, release_tx) = sink_blocked_in_first_call(&cache);
    let later_calls = Arc::new(AtomicU64::new(0));
    let later = {
        let calls = Arc::clone(&later_calls);
        cache.register_stat_sink(Box::new(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
        }))
    };
    let lookup = look_up_in_background(&cache);
    entered.recv().unwrap();
    cache.unregister_stat_sink(later).unwrap();
    release_tx.send(()).unwrap();
    lookup.join().unwrap();
    assert!(finished.load(Ordering::SeqCst));
    assert_eq!(
        later_calls.load(Ordering::SeqCst),
        0,
        "the sink ran after its unregister returned"
    );
    cache.unregister_stat_sink(earlier).unwrap();
}

/// Unregisters `id`, already unregistered but blocked in a call until
/// `release` is sent, from another thread: the answer must be `NotFound`, and
/// come only once the call has `finished`.
fn answers_not_found_only_once_the_sink_returned(
    cache: &Arc<Cache>,
    id: SinkId,
    finished: &Arc<AtomicBool>,
    release: mpsc::Sender<()>,
) {
    let answer = unregister_from_another_thread_waits(cache, id, finished, release);
    assert_eq!(answer, Err(ErrorKind::NotFound));
}

/// Unregisters sink `id`, whose call is blocked until `release` sends and
/// then sets `finished`, from a thread of its own, and checks that the
/// unregister waits for that call: it has not returned 100 ms after it began,
/// and once it has, the call had returned. Answers the unregister's answer.
fn unregister_from_another_thread_waits(
    cache: &Arc<Cache>,
    id: SinkId,
    finished: &Arc<AtomicBool>,
    release: mpsc::Sender<()>,
) -> Result<(), ErrorKind> {
    let (calling_tx, calling) = mpsc::channel();
    let unregister = {
        let (cache, finished) = (Arc::clone(cache), Arc::clone(finished));
        thread::spawn(move || {
            calling_tx.send(()).unwrap();
            let answer = cache.unregister_stat_sink(id).map_err(|e| e.kind());
            (answer, finished.load(Ordering::SeqCst))
        })
    };
    signalled(&calling);
    thread::sleep(Duration::from_millis(100));
    let returned_early = unregister.is_finished();
    release.send(()).unwrap();
    let (answer, sink_had_returned) = unregister.join().unwrap();
    assert!(
        !returned_early && sink_had_returned,
        "the unregister answered {answer:?} while the sink was still running, so its data \
         could be freed under it"
    );
    answer
}

#[test]
fn a_second_unregister_answers_only_once_the_sink_has_returned() {
    let cache = Arc::new(named("second_unregister"));
    let (id, calls, entered, finished, release_tx) = sink_blocked_in_first_call(&cache);
    let lookup = look_up_in_background(&cache);
    entered.recv().unwrap();
    let first = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || cache.unregister_stat_sink(id))
    };
    // Once a lookup here no longer calls the sink, the first unregister has
    // taken it out and is waiting for the blocked call.
    let mut out = [0u8; 4];
    loop {
        let before = calls.load(Ordering::SeqCst);
        cache.batch_get(&[1], &mut out, None).unwrap();
        if calls.load(Ordering::SeqCst) == before {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    answers_not_found_only_once_the_sink_returned(&cache, id, &finished, release_tx);
    first.join().unwrap().unwrap();
    lookup.join().unwrap();
}

#[test]
fn an_unregister_after_a_sink_unregistered_itself_waits_for_that_call() {
    // In between, a register or an unregister of another sink, each of which
    // drops the retired sinks whose calls have returned, must keep this one.
    for call_in_between in [None, Some("register"), Some("unregister")] {
        let cache = Arc::new(named("self_then_other"));
        let other = cache.register_stat_sink(Box::new(|_| {}));
        let own_id = Arc::new(Mutex::new(None::<SinkId>));
        let (release_tx, release) = mpsc::channel::<()>();
        let release = Mutex::new(release);
        // The sink says so once it has unregistered itself: `entered` comes
        // before that, and an unregister from here started on `entered` alone
        // could win the race (it did, under AddressSanitizer's slowdown).
        let (unregistered_tx, unregistered) = mpsc::channel::<()>();
        let unregistered_tx = Mutex::new(unregistered_tx);
        let (id, _, entered, finished) = {
            let (weak, own_id) = (Arc::downgrade(&cache), Arc::clone(&own_id));
            sink_with_first_call(&cache, move || {
                let id = own_id.lock().unwrap().expect("registered");
                weak.upgrade().unwrap().unregister_stat_sink(id).unwrap();
                unregistered_tx.lock().unwrap().send(()).unwrap();
                release.lock().unwrap().recv().unwrap();
            })
        };
        *own_id.lock().unwrap() = Some(id);
        let lookup = look_up_in_background(&cache);
        entered.recv().unwrap();
        unregistered.recv().unwrap();
        match call_in_between {
            Some("register") => {
                cache.register_stat_sink(Box::new(|_| {}));
            }
            Some(_) => cache.unregister_stat_sink(other).unwrap(),
            None => {}
        }
        answers_not_found_only_once_the_sink_returned(&cache, id, &finished, release_tx);
        lookup.join().unwrap();
    }
}

/// Nobody waits to drop a sink that unregistered itself: the batch whose
/// call of it returns last drops it, and what its closure holds with it, so
/// sinks that come and go leave nothing behind. That is the unregistering
/// call's own batch, or, when another call of the sink still runs, that one's.
#[test]
fn a_sink_that_unregistered_itself_is_dropped_by_its_last_call() {
    for another_call_runs in [false, true] {
        let cache = Arc::new(named("self_unregister_dropped"));
        cache.batch_set(&[1], &[1; 4], 0).unwrap();
        let held = Arc::new(());
        let own_id = Arc::new(Mutex::new(None::<SinkId>));
        let (entered_tx, entered) = mpsc::channel::<()>();
        let (release_tx, release) = mpsc::channel::<()>();
        let id = {
            let (weak, held, own_id) = (
                Arc::downgrade(&cache),
                Arc::clone(&held),
                Arc::clone(&own_id),
            );
            let (entered_tx, release) = (Mutex::new(entered_tx), Mutex::new(release));
            let calls = AtomicU64::new(0);
            cache.register_stat_sink(Box::new(move |_| {
                let _holds = &held;
                if another_call_runs && calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    entered_tx.lock().unwrap().send(()).unwrap();
                    release.lock().unwrap().recv().unwrap();
                } else {
                    let id = own_id.lock().unwrap().expect("registered");
                    weak.upgrade().unwrap().unregister_stat_sink(id).unwrap();
                }
            }))
        };
        *own_id.lock().unwrap() = Some(id);
        let another_call = another_call_runs.then(|| {
            let lookup = look_up_in_background(&cache);
            entered.recv().unwrap();
            lookup
        });
        cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
        if let Some(another_call) = another_call {
            // The sink cannot be dropped yet: the other call borrows it.
            release_tx.send(()).unwrap();
            another_call.join().unwrap();
        }
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "the sink is dropped by the batch whose call of it returned last"
        );
    }
}

/// What a sink's closure holds is dropped with the sink, outside the
/// registry's locks: a capture may register or unregister sinks on the same
/// cache as it drops, as a sink that owns a companion sink's registration
/// does, whether the unregister that retired it drops it or (it unregistered
/// itself) its batch does.
#[test]
fn a_sinks_captures_may_unregister_sinks_as_they_drop() {
    /// Unregisters the companion sink `id` when dropped, and sends the answer.
    struct UnregistersOnDrop {
        cache: Weak<Cache>,
        id: SinkId,
        answer: mpsc::Sender<Result<(), ErrorKind>>,
    }
    impl Drop for UnregistersOnDrop {
        fn drop(&mut self) {
            // Gone only when a failed test unwinds: the cache drops its sinks.
            if let Some(cache) = self.cache.upgrade() {
                let answer = cache.unregister_stat_sink(self.id);
                let _ = self.answer.send(answer.map_err(|e| e.kind()));
            }
        }
    }

    for dropped_by in ["an unregister", "its batch"] {
        let cache = Arc::new(named("captures_drop_outside_locks"));
        cache.batch_set(&[1], &[1; 4], 0).unwrap();
        let (companion, companion_calls, _, _) = sink_with_first_call(&cache, || {});
        let (answer_tx, answer) = mpsc::channel();
        let own_id = Arc::new(Mutex::new(None::<SinkId>));
        let id = {
            let weak = Arc::downgrade(&cache);
            let owned = UnregistersOnDrop {
                cache: Weak::clone(&weak),
                id: companion,
                answer: answer_tx,
            };
            let own_id = Arc::clone(&own_id);
            cache.register_stat_sink(Box::new(move |_| {
                let _owns = &owned;
                if let Some(id) = own_id.lock().unwrap().take() {
                    weak.upgrade().unwrap().unregister_stat_sink(id).unwrap();
                }
            }))
        };
        let dropping = {
            let cache = Arc::clone(&cache);
            if dropped_by == "its batch" {
                *own_id.lock().unwrap() = Some(id);
                thread::spawn(move || {
                    cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
                })
            } else {
                thread::spawn(move || cache.unregister_stat_sink(id).unwrap())
            }
        };
        let dropped = answer
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{dropped_by} drops the sink without a deadlock"));
        assert_eq!(dropped, Ok(()), "the companion was unregistered");
        dropping.join().unwrap();
        let calls_before = companion_calls.load(Ordering::SeqCst);
        cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
        assert_eq!(companion_calls.load(Ordering::SeqCst), calls_before);
    }
}

/// A sink's capture that panics as it drops, unless a failed test is
/// unwinding already (a second panic would abort the test binary).
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("a capture's drop");
        }
    }
}

/// A capture that panics as a batch drops its sink (which unregistered
/// itself) is that sink's panic: the global sinks still get their call, then
/// the panic goes on out of `batch_get`, and the cache carries on.
#[test]
fn a_capture_panicking_as_its_batch_drops_it_leaves_the_global_sinks_their_call() {
    let cache = Arc::new(named("capture_panics_on_drop"));
    cache.batch_set(&[1], &[1; 4], 0).unwrap();
    let global_calls = Arc::new(AtomicU64::new(0));
    let global = {
        let calls = Arc::clone(&global_calls);
        register_global_sink(Box::new(move |event| {
            // Other tests of this binary run concurrently; count only ours.
            if event.table.as_str() == "capture_panics_on_drop" {
                calls.fetch_add(1, Ordering::SeqCst);
            }
        }))
    };
    let own_id = Arc::new(Mutex::new(None::<SinkId>));
    let id = {
        let (weak, own_id) = (Arc::downgrade(&cache), Arc::clone(&own_id));
        let owned = PanicsOnDrop;
        cache.register_stat_sink(Box::new(move |_| {
            let _owns = &owned;
            if let Some(id) = own_id.lock().unwrap().take() {
                weak.upgrade().unwrap().unregister_stat_sink(id).unwrap();
            }
        }))
    };
    *own_id.lock().unwrap() = Some(id);
    let mut out = [0u8; 4];
    let lookup = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.batch_get(&[1], &mut out, None)
    }));
    let payload = lookup.expect_err("the capture's panic goes on out of batch_get");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"a capture's drop"));
    assert_eq!(global_calls.load(Ordering::SeqCst), 1, "the global sink");
    assert_eq!(
        cache.unregister_stat_sink(id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    cache.batch_get(&[1], &mut out, None).unwrap();
    assert_eq!(global_calls.load(Ordering::SeqCst), 2);
    unregister_global_sink(global).unwrap();
}

/// A batch's list may hold the last reference to a sink unregistered from
/// outside while the batch ran. A capture of that sink panicking as the list
/// lets go of it must not keep the batch from dropping a sink that
/// unregistered itself in the same batch.
#[test]
fn a_panic_as_a_batch_lets_go_of_its_list_leaves_its_sweep_done() {
    let cache = Arc::new(named("list_drop_panics"));
    cache.batch_set(&[1], &[1; 4], 0).unwrap();
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release_tx, release) = mpsc::channel::<()>();
    let panicking = {
        let owned = PanicsOnDrop;
        let (entered_tx, release) = (Mutex::new(entered_tx), Mutex::new(release));
        cache.register_stat_sink(Box::new(move |_| {
            let _owns = &owned;
            entered_tx.lock().unwrap().send(()).unwrap();
            release.lock().unwrap().recv().unwrap();
        }))
    };
    // Called after the first: unregisters itself, then holds the batch until
    // the first sink's unregister has returned, so that the batch's list has
    // that sink's last reference.
    let held = Arc::new(());
    let own_id = Arc::new(Mutex::new(None::<SinkId>));
    let (first_gone_tx, first_gone) = mpsc::channel::<()>();
    let self_unregistering = {
        let (weak, own_id, held) = (
            Arc::downgrade(&cache),
            Arc::clone(&own_id),
            Arc::clone(&held),
        );
        let first_gone = Mutex::new(first_gone);
        cache.register_stat_sink(Box::new(move |_| {
            let _holds = &held;
            let id = own_id.lock().unwrap().take().expect("one call");
            weak.upgrade().unwrap().unregister_stat_sink(id).unwrap();
            first_gone.lock().unwrap().recv().unwrap();
        }))
    };
    *own_id.lock().unwrap() = Some(self_unregistering);
    let batch = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            let lookup = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                cache.batch_get(&[1], &mut [0u8; 4], None)
            }));
            let payload = lookup.expect_err("the capture's panic goes on out of batch_get");
            payload.downcast_ref::<&str>().copied()
        })
    };
    entered.recv().unwrap();
    let unregister = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || cache.unregister_stat_sink(panicking).unwrap())
    };
    release_tx.send(()).unwrap();
    unregister.join().unwrap();
    first_gone_tx.send(()).unwrap();
    assert_eq!(batch.join().unwrap(), Some("a capture's drop"));
    assert_eq!(
        Arc::strong_count(&held),
        1,
        "the batch dropped the sink that unregistered itself"
    );
}

/// Counts its drop, then panics even while another panic unwinds, as a
/// host's capture may: two of them dropped in one unwind abort the process.
struct CountsAndPanicsOnDrop(Arc<AtomicU64>);

impl Drop for CountsAndPanicsOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a capture's drop");
    }
}

/// Waits for a signal from a blocked batch, failing the test where a
/// regression keeps it from coming instead of hanging.
fn signalled(receiver: &mpsc::Receiver<()>) {
    receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("signalled within 10 s");
}

/// Runs `f`, answering what it panicked with.
fn panic_of(f: impl FnOnce()) -> Option<&'static str> {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("the capture's panic goes on");
    payload.downcast_ref::<&str>().copied()
}

/// A batch's list may hold the last reference to several sinks unregistered
/// while it ran: each is dropped under its own catch, the first panic goes on
/// out of `batch_get`, and the process carries on.
#[test]
fn captures_panicking_as_a_batch_lets_go_of_its_list_are_each_dropped() {
    let cache = Arc::new(named("list_drops_two_panics"));
    cache.batch_set(&[1], &[1; 4], 0).unwrap();
    let (blocking, _, entered, _, release_tx) = sink_blocked_in_first_call(&cache);
    let drops = Arc::new(AtomicU64::new(0));
    let panicking: Vec<SinkId> = (0..2)
        .map(|_| {
            let owned = CountsAndPanicsOnDrop(Arc::clone(&drops));
            cache.register_stat_sink(Box::new(move |_| {
                let _owns = &owned;
            }))
        })
        .collect();
    let batch = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            panic_of(|| {
                let _ = cache.batch_get(&[1], &mut [0u8; 4], None);
            })
        })
    };
    signalled(&entered);
    // Neither is running, so each unregister returns at once and leaves the
    // batch's list the sink's last reference.
    for id in panicking {
        cache.unregister_stat_sink(id).unwrap();
    }
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    release_tx.send(()).unwrap();
    assert_eq!(batch.join().unwrap(), Some("a capture's drop"));
    assert_eq!(drops.load(Ordering::SeqCst), 2, "each capture was dropped");
    cache.unregister_stat_sink(blocking).unwrap();
    cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
}

/// An unregister drops the last references to the sink it unregistered and,
/// in its sweep, to other retirees: here one that unregistered itself in a
/// batch still letting go of its list. Both captures are dropped, the first
/// panic goes on out of the unregister, and it is done.
#[test]
fn an_unregister_dropping_two_panicking_captures_drops_both() {
    /// Holds the batch in the drop of its list until released.
    struct BlocksOnDrop {
        dropping: mpsc::Sender<()>,
        release: Mutex<mpsc::Receiver<()>>,
    }
    impl Drop for BlocksOnDrop {
        fn drop(&mut self) {
            self.dropping.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
    }

    let cache = Arc::new(named("unregister_drops_two_panics"));
    cache.batch_set(&[1], &[1; 4], 0).unwrap();
    let drops = Arc::new(AtomicU64::new(0));
    // Called first: unregisters itself, then holds the batch until released.
    let own_id = Arc::new(Mutex::new(None::<SinkId>));
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (release_tx, release) = mpsc::channel::<()>();
    let self_unregistering = {
        let (weak, own_id) = (Arc::downgrade(&cache), Arc::clone(&own_id));
        let owned = CountsAndPanicsOnDrop(Arc::clone(&drops));
        let (entered_tx, release) = (Mutex::new(entered_tx), Mutex::new(release));
        cache.register_stat_sink(Box::new(move |_| {
            let _owns = &owned;
            let id = own_id.lock().unwrap().take().expect("one call");
            weak.upgrade().unwrap().unregister_stat_sink(id).unwrap();
            entered_tx.lock().unwrap().send(()).unwrap();
            release.lock().unwrap().recv().unwrap();
        }))
    };
    *own_id.lock().unwrap() = Some(self_unregistering);
    let (dropping_tx, dropping) = mpsc::channel::<()>();
    let (let_go_tx, let_go) = mpsc::channel::<()>();
    let blocks_on_drop = {
        let owned = BlocksOnDrop {
            dropping: dropping_tx,
            release: Mutex::new(let_go),
        };
        cache.register_stat_sink(Box::new(move |_| {
            let _owns = &owned;
        }))
    };
    let batch = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || cache.batch_get(&[1], &mut [0u8; 4], None).map(drop))
    };
    signalled(&entered);
    // Not running: the batch's list is left its last reference.
    cache.unregister_stat_sink(blocks_on_drop).unwrap();
    // Registered after the batch took its list, so only the registry and
    // then its unregister hold it.
    let later = {
        let owned = CountsAndPanicsOnDrop(Arc::clone(&drops));
        cache.register_stat_sink(Box::new(move |_| {
            let _owns = &owned;
        }))
    };
    release_tx.send(()).unwrap();
    // The batch lets go of the first sink, and now holds in the second's
    // drop: the first is a retiree that only the registry holds.
    signalled(&dropping);
    assert_eq!(
        panic_of(|| {
            let _ = cache.unregister_stat_sink(later);
        }),
        Some("a capture's drop")
    );
    assert_eq!(
        drops.load(Ordering::SeqCst),
        2,
        "both captures were dropped"
    );
    assert_eq!(
        cache.unregister_stat_sink(later).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let_go_tx.send(()).unwrap();
    batch.join().unwrap().unwrap();
}

/// Registers two sinks on a new cache whose captures count their drops in
/// `drops` and panic.
fn with_panicking_captures(name: &str, drops: &Arc<AtomicU64>) -> Cache {
    let cache = named(name);
    for _ in 0..2 {
        let owned = CountsAndPanicsOnDrop(Arc::clone(drops));
        cache.register_stat_sink(Box::new(move |_| {
            let _owns = &owned;
        }));
    }
    cache
}

/// A cache's sinks go with it, each dropped under its own catch: the first
/// capture's panic goes on out of the drop, or, where the cache is dropped
/// as another panic unwinds, that one goes on alone.
#[test]
fn a_cache_dropped_with_panicking_captures_drops_each() {
    let drops = Arc::new(AtomicU64::new(0));
    let cache = with_panicking_captures("dropped_with_panicking_captures", &drops);
    assert_eq!(panic_of(|| drop(cache)), Some("a capture's drop"));
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    let cache = with_panicking_captures("dropped_as_a_panic_unwinds", &drops);
    assert_eq!(
        panic_of(|| {
            let _cache = cache;
            panic!("the host's");
        }),
        Some("the host's")
    );
    assert_eq!(drops.load(Ordering::SeqCst), 4);
}

/// A host's guard may unregister a sink, or look up, in its drop while a
/// panic unwinds: a sink's panic then, or its capture's, cannot go on (a
/// second panic would abort the process), so the host's goes on alone.
#[test]
fn calls_from_a_drop_as_a_panic_unwinds_let_that_panic_go_on() {
    let drops = Arc::new(AtomicU64::new(0));
    let cache = Arc::new(named("called_as_a_panic_unwinds"));
    cache.batch_set(&[1], &[1; 4], 0).unwrap();
    let panicking_capture = {
        let owned = CountsAndPanicsOnDrop(Arc::clone(&drops));
        cache.register_stat_sink(Box::new(move |_| {
            let _owns = &owned;
        }))
    };
    let unregister = || {
        let _guard = CallsOnDrop(|| {
            cache.unregister_stat_sink(panicking_capture).unwrap();
        });
        panic!("the host's");
    };
    assert_eq!(panic_of(unregister), Some("the host's"));
    assert_eq!(drops.load(Ordering::SeqCst), 1, "the capture was dropped");

    let panicking_sink = cache.register_stat_sink(Box::new(|_| panic!("a sink's")));
    let look_up = || {
        let _guard = CallsOnDrop(|| {
            cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
        });
        panic!("the host's");
    };
    assert_eq!(panic_of(look_up), Some("the host's"));
    cache.unregister_stat_sink(panicking_sink).unwrap();
    assert_eq!(
        cache.cumulative_read_stats().hits,
        1,
        "the batch was counted"
    );
}

/// A sink may panic with any value, one whose drop panics as well: the values
/// the library does not resume, a second sink's and one met as a panic
/// unwinds, it lets go of under a catch, so the later sinks still have their
/// call and no panic leaves where none may.
#[test]
fn panics_with_values_whose_drop_panics_reach_no_further() {
    let cache = named("payloads_that_panic_as_they_drop");
    cache.batch_set(&[1], &[1; 4], 0).unwrap();
    let first = cache.register_stat_sink(Box::new(|_| PanicsAsItDrops::panic("first")));
    cache.register_stat_sink(Box::new(|_| PanicsAsItDrops::panic("second")));
    let calls = Arc::new(AtomicU64::new(0));
    {
        let calls = Arc::clone(&calls);
        cache.register_stat_sink(Box::new(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let look_up = || {
        cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
    };
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(look_up))
        .expect_err("the first sink's panic goes on");
    let mut payload = payload
        .downcast::<PanicsAsItDrops>()
        .expect("what the first sink panicked with");
    payload.armed = false;
    assert_eq!(payload.sink, "first");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the third sink's call");

    cache.unregister_stat_sink(first).unwrap();
    let look_up_as_a_panic_unwinds = || {
        let _guard = CallsOnDrop(look_up);
        panic!("the host's");
    };
    assert_eq!(panic_of(look_up_as_a_panic_unwinds), Some("the host's"));
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the third sink's call");
}

#[test]
fn two_sinks_unregistering_each_other_do_not_deadlock() {
    let (a, b) = (
        Arc::new(named("mutual_unregister_a")),
        Arc::new(named("mutual_unregister_b")),
    );
    let both_inside = Arc::new(Barrier::new(2));
    let ids = Arc::new(Mutex::new((None::<SinkId>, None::<SinkId>)));
    let (answers_tx, answers) = mpsc::channel();
    // The sink of `a`, on its first call, unregisters the sink of `b` once a
    // call of that one has started too, and the other way round.
    let mutual = |own: &Arc<Cache>, other: &Arc<Cache>, other_is_a: bool| {
        let (other, both_inside, ids) = (
            Arc::downgrade(other),
            Arc::clone(&both_inside),
            Arc::clone(&ids),
        );
        let answers_tx = Mutex::new(answers_tx.clone());
        sink_with_first_call(own, move || {
            both_inside.wait();
            let (id_a, id_b) = *ids.lock().unwrap();
            let other_id = if other_is_a { id_a } else { id_b }.expect("registered");
            let answer = other.upgrade().unwrap().unregister_stat_sink(other_id);
            answers_tx
                .lock()
                .unwrap()
                .send((other_is_a, answer.map_err(|e| e.kind())))
                .unwrap();
        })
    };
    let (id_a, calls_a, _, _) = mutual(&a, &b, false);
    let (id_b, calls_b, _, _) = mutual(&b, &a, true);
    *ids.lock().unwrap() = (Some(id_a), Some(id_b));
    let lookups = [look_up_in_background(&a), look_up_in_background(&b)];
    let mut outcome = Vec::new();
    for _ in 0..2 {
        outcome.push(
            answers
                .recv_timeout(Duration::from_secs(10))
                .expect("both unregisters answer: no deadlock"),
        );
    }
    for lookup in lookups {
        lookup.join().unwrap();
    }
    let refused: Vec<bool> = outcome
        .iter()
        .filter(|(_, answer)| *answer == Err(ErrorKind::WouldDeadlock))
        .map(|&(other_is_a, _)| other_is_a)
        .collect();
    assert_eq!(refused.len(), 1, "{outcome:?}");
    assert!(
        outcome.iter().any(|(_, answer)| answer.is_ok()),
        "{outcome:?}"
    );
    // The refused unregister changed nothing: that sink is still called, and
    // the other one is gone.
    let (kept, kept_calls, gone, gone_calls) = if refused[0] {
        (&a, &calls_a, &b, &calls_b)
    } else {
        (&b, &calls_b, &a, &calls_a)
    };
    let (kept_before, gone_before) = (
        kept_calls.load(Ordering::SeqCst),
        gone_calls.load(Ordering::SeqCst),
    );
    let mut out = [0u8; 4];
    kept.batch_get(&[1], &mut out, None).unwrap();
    gone.batch_get(&[1], &mut out, None).unwrap();
    assert_eq!(kept_calls.load(Ordering::SeqCst), kept_before + 1);
    assert_eq!(gone_calls.load(Ordering::SeqCst), gone_before);
}

/// Runs one batch on each of two threads of a sink that calls `inside` with
/// the order in which the two calls came in and `both_inside`, which returns
/// once both calls are inside the sink. `inside` may unregister the sink (its
/// id is given) and return its answer. Fails if a call has not returned
/// after ten seconds (a deadlock); returns the answers, in order.
fn two_calls_inside_one_sink(
    name: &str,
    inside: impl Fn(usize, &dyn Fn(), &Cache, SinkId) -> Option<Result<(), ErrorKind>>
        + Send
        + Sync
        + 'static,
) -> Vec<Option<Result<(), ErrorKind>>> {
    let cache = Arc::new(named(name));
    cache.batch_set(&[1], &[1; 4], 0).unwrap();
    let entered = Arc::new(AtomicU64::new(0));
    let own_id = Arc::new(AtomicU64::new(0));
    let (answers_tx, answers) = mpsc::channel();
    let id = {
        let (weak, entered, own_id) = (
            Arc::downgrade(&cache),
            Arc::clone(&entered),
            Arc::clone(&own_id),
        );
        let answers_tx = Mutex::new(answers_tx);
        cache.register_stat_sink(Box::new(move |_| {
            let order = entered.fetch_add(1, Ordering::SeqCst) as usize;
            let both_inside = || {
                while entered.load(Ordering::SeqCst) < 2 {
                    thread::yield_now();
                }
            };
            let cache = weak.upgrade().unwrap();
            let answer = inside(
                order,
                &both_inside,
                &cache,
                SinkId(own_id.load(Ordering::SeqCst)),
            );
            answers_tx.lock().unwrap().send((order, answer)).unwrap();
        }))
    };
    own_id.store(id.0, Ordering::SeqCst);
    let batches: Vec<_> = (0..2).map(|_| look_up_in_background(&cache)).collect();
    let mut received: Vec<_> = (0..2)
        .map(|_| {
            answers
                .recv_timeout(Duration::from_secs(10))
                .expect("a call of the sink never returned: a deadlock")
        })
        .collect();
    for batch in batches {
        batch.join().unwrap();
    }
    // Unregistered by now, whatever `inside` did: no further call.
    let _ = cache.unregister_stat_sink(id);
    cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
    assert_eq!(
        entered.load(Ordering::SeqCst),
        2,
        "a call after unregistering"
    );
    received.sort_by_key(|&(order, _)| order);
    received.into_iter().map(|(_, answer)| answer).collect()
}

#[test]
fn a_sink_unregistering_itself_holding_its_lock_does_not_wait_for_its_other_call() {
    // A sink that serializes its calls with its own lock unregisters itself
    // holding it, while its other call waits for that lock: waiting for that
    // call would never end, and the ABI promises nothing about the sink's
    // calls elsewhere to an unregister made from inside it.
    let lock = Mutex::new(());
    let first_holds_it = AtomicBool::new(false);
    let answers = two_calls_inside_one_sink(
        "self_unregister_holding_lock",
        move |order, both_inside, cache, id| {
            if order == 0 {
                let _held = lock.lock().unwrap();
                first_holds_it.store(true, Ordering::SeqCst);
                both_inside();
                Some(cache.unregister_stat_sink(id).map_err(|e| e.kind()))
            } else {
                // The other call must not have the lock first, or it would
                // return before the unregister and there would be nothing
                // for that to wait for.
                while !first_holds_it.load(Ordering::SeqCst) {
                    thread::yield_now();
                }
                let _held = lock.lock().unwrap();
                None
            }
        },
    );
    assert_eq!(answers, [Some(Ok(())), None]);
}

#[test]
fn two_calls_of_a_sink_may_both_unregister_it() {
    // Neither waits for the other: one unregisters it, the other finds it
    // gone, and no `WouldDeadlock` comes of it.
    let answers =
        two_calls_inside_one_sink("both_unregister_the_sink", |_, both_inside, cache, id| {
            both_inside();
            Some(cache.unregister_stat_sink(id).map_err(|e| e.kind()))
        });
    assert!(
        answers.contains(&Some(Ok(()))) && answers.contains(&Some(Err(ErrorKind::NotFound))),
        "{answers:?}"
    );
}

#[test]
fn sinks_still_work_while_a_threads_thread_locals_are_destroyed() {
    // Thread-local destructors run in the reverse order of their first use,
    // so this one runs after the library's own thread-locals are gone, as a
    // host's static or thread-local destructor can.
    struct AtThreadExit {
        cache: Arc<Cache>,
        id: SinkId,
        /// What the sink that unregisters itself in the lookup holds.
        one_shot_held: Weak<()>,
        answers: mpsc::Sender<TeardownAnswers>,
    }
    struct TeardownAnswers {
        unregister: Result<(), String>,
        lookup: Result<u64, String>,
        /// How many still held `one_shot_held` once the lookup returned.
        one_shot_holders: usize,
    }
    /// What `call` returned, its error's kind, or that it panicked.
    fn outcome<T>(call: impl FnOnce() -> Result<T, kvzch::Error>) -> Result<T, String> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
            Ok(answer) => answer.map_err(|e| format!("{:?}: {e}", e.kind())),
            Err(_) => Err("panicked".into()),
        }
    }
    impl Drop for AtThreadExit {
        fn drop(&mut self) {
            let lookup = outcome(|| {
                let mut out = [0u8; 4];
                self.cache
                    .batch_get(&[1], &mut out, None)
                    .map(|stats| stats.total)
            });
            let one_shot_holders = self.one_shot_held.strong_count();
            let unregister = outcome(|| self.cache.unregister_stat_sink(self.id));
            let _ = self.answers.send(TeardownAnswers {
                unregister,
                lookup,
                one_shot_holders,
            });
        }
    }
    thread_local! {
        static AT_EXIT: std::cell::RefCell<Option<AtThreadExit>> =
            const { std::cell::RefCell::new(None) };
    }
    let cache = Arc::new(named("thread_teardown"));
    let calls = Arc::new(AtomicU64::new(0));
    let id = {
        let calls = Arc::clone(&calls);
        cache.register_stat_sink(Box::new(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
        }))
    };
    // A second sink unregisters itself from inside the teardown's lookup: it
    // must find that call its own, not wait for it to return, and that
    // lookup drops it.
    let (own_answer_tx, own_answer) = mpsc::channel();
    let one_shot_id = Arc::new(AtomicU64::new(0));
    let one_shot_calls = Arc::new(AtomicU64::new(0));
    let one_shot_held = Arc::new(());
    let one_shot = {
        let (weak, own_id, calls, held) = (
            Arc::downgrade(&cache),
            Arc::clone(&one_shot_id),
            Arc::clone(&one_shot_calls),
            Arc::clone(&one_shot_held),
        );
        cache.register_stat_sink(Box::new(move |_| {
            let _holds = &held;
            if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                let cache = weak.upgrade().unwrap();
                let id = SinkId(own_id.load(Ordering::SeqCst));
                let _ = own_answer_tx.send(outcome(|| cache.unregister_stat_sink(id)));
            }
        }))
    };
    one_shot_id.store(one_shot.0, Ordering::SeqCst);
    let (answers_tx, answers) = mpsc::channel();
    let exiting = {
        let cache = Arc::clone(&cache);
        let one_shot_held = Arc::downgrade(&one_shot_held);
        thread::spawn(move || {
            AT_EXIT.with(|at_exit| {
                *at_exit.borrow_mut() = Some(AtThreadExit {
                    cache: Arc::clone(&cache),
                    id,
                    one_shot_held,
                    answers: answers_tx,
                })
            });
            // Runs the sinks on this thread, after `AT_EXIT` was first used.
            cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
        })
    };
    let waited = Duration::from_secs(10);
    let one_shot_answer = own_answer
        .recv_timeout(waited)
        .expect("a sink unregistering itself during teardown never returned");
    let TeardownAnswers {
        unregister,
        lookup,
        one_shot_holders,
    } = answers.recv_timeout(waited).unwrap();
    exiting.join().unwrap();
    assert_eq!(lookup, Ok(1), "a lookup during teardown");
    assert_eq!(unregister, Ok(()), "an unregister during teardown");
    assert_eq!(
        one_shot_answer,
        Ok(()),
        "a sink unregistering itself during teardown"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the sink saw both lookups");
    assert_eq!(
        one_shot_holders, 1,
        "the teardown's lookup dropped the sink that unregistered itself"
    );
    cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
    assert_eq!(one_shot_calls.load(Ordering::SeqCst), 2, "no call after");
}

#[test]
fn an_unregister_waits_for_a_call_made_as_another_threads_thread_locals_are_destroyed() {
    // A call made while its thread's thread-locals are destroyed is recorded
    // by thread, process-wide: an unregister from another thread must see it
    // as that thread's call, and wait for it.
    type AtExit = CallsOnDrop<Box<dyn FnMut()>>;
    thread_local! {
        static LOOK_UP_AT_EXIT: std::cell::RefCell<Option<AtExit>> =
            const { std::cell::RefCell::new(None) };
    }
    let cache = Arc::new(named("teardown_wait"));
    let warm_up = cache.register_stat_sink(Box::new(|_| {}));
    let (warmed_tx, warmed) = mpsc::channel();
    let (exit_tx, exit) = mpsc::channel::<()>();
    let exiting = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            let at_exit = Arc::clone(&cache);
            LOOK_UP_AT_EXIT.with(|look_up| {
                *look_up.borrow_mut() = Some(CallsOnDrop(Box::new(move || {
                    at_exit.batch_get(&[1], &mut [0u8; 4], None).unwrap();
                })))
            });
            // Runs a sink on this thread after `LOOK_UP_AT_EXIT` was first
            // used, so the library's thread-locals are destroyed before it.
            cache.batch_get(&[1], &mut [0u8; 4], None).unwrap();
            warmed_tx.send(()).unwrap();
            signalled(&exit);
        })
    };
    signalled(&warmed);
    cache.unregister_stat_sink(warm_up).unwrap();
    let (id, calls, entered, finished, release) = sink_blocked_in_first_call(&cache);
    exit_tx.send(()).unwrap();
    signalled(&entered);
    let answer = unregister_from_another_thread_waits(&cache, id, &finished, release);
    exiting.join().unwrap();
    assert_eq!(answer, Ok(()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panicking_sink_leaves_the_other_sinks_their_call() {
    let cache = named("panicking_sink");
    let calls = Arc::new(AtomicU64::new(0));
    let global_calls = Arc::new(AtomicU64::new(0));
    let panicking = cache.register_stat_sink(Box::new(|_| panic!("a host sink's bug")));
    let after = {
        let calls = Arc::clone(&calls);
        cache.register_stat_sink(Box::new(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
        }))
    };
    let global = {
        let calls = Arc::clone(&global_calls);
        register_global_sink(Box::new(move |event| {
            // Other tests of this binary run concurrently; count only ours.
            if event.table.as_str() == "panicking_sink" {
                calls.fetch_add(1, Ordering::SeqCst);
            }
        }))
    };
    let mut out = [0u8; 4];
    let lookup = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache.batch_get(&[1], &mut out, None)
    }));
    let payload = lookup.expect_err("the sink's panic goes on out of batch_get");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"a host sink's bug"));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the cache's next sink");
    assert_eq!(global_calls.load(Ordering::SeqCst), 1, "the global sink");
    assert_eq!(cache.cumulative_read_stats().total, 1);
    // The panic left every sink's bookkeeping whole.
    cache.unregister_stat_sink(panicking).unwrap();
    cache.batch_get(&[1], &mut out, None).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    cache.unregister_stat_sink(after).unwrap();
    unregister_global_sink(global).unwrap();
}
