//! loom models of `stats`: every interleaving of the counter-snapshot and
//! sink-unregister protocols, with the assertions its module docs promise
//! (`RUSTFLAGS="--cfg loom" cargo test --release --lib loom`). Apart from
//! `stats.rs`, which forbids unsafe code, because the host's `user_data` is
//! modelled by a loom cell shared between threads (see `UserData`).

use std::sync::atomic::Ordering;

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;

use crate::cache::{Error, TableName};
use crate::stats::{BatchEvent, BatchStats, ReadCounters, SinkId, SinkRegistry};

/// A host's `user_data`: a sink reads it, and the host frees (writes) it once
/// an unregister returns. loom checks each access against every other for a
/// happens-before order, so a sink call that the unregister's wait does not
/// order before the free is reported as a data race, in every interleaving
/// and whatever the atomics' orderings make visible. (A flag the sink
/// checks would not see a free that is unordered but comes later.)
struct UserData(loom::cell::UnsafeCell<()>);

// SAFETY: the cell holds `()`: no access reads or writes any memory through
// it. It exists for loom to record each access, and sharing it between the
// sink's threads and the host's is what lets loom check their order.
unsafe impl Sync for UserData {}

impl UserData {
    fn new() -> Arc<UserData> {
        Arc::new(UserData(loom::cell::UnsafeCell::new(())))
    }

    fn read(&self) {
        self.0.with(|_| ());
    }

    fn free(&self) {
        self.0.with_mut(|_| ());
    }
}

/// A batch's sink calls, made on a model thread of their own.
fn notify_on_another_thread(registry: &Arc<SinkRegistry>) -> loom::thread::JoinHandle<()> {
    let registry = Arc::clone(registry);
    loom::thread::spawn(move || {
        let table = TableName::default();
        let event = BatchEvent {
            table: &table,
            stats: BatchStats::default(),
        };
        let mut panicked = None;
        registry.notify(&event, &mut panicked);
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
    })
}

/// Registers a sink that unregisters itself in each of its calls and hands
/// `then` the answer.
fn register_self_unregistering(
    registry: &Arc<SinkRegistry>,
    then: impl Fn(Result<(), Error>) + Send + Sync + 'static,
) -> SinkId {
    let registry_in_sink = Arc::clone(registry);
    registry.register(move |own_id| Box::new(move |_| then(registry_in_sink.unregister(own_id))))
}

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
        let user_data = UserData::new();
        let id = {
            let user_data = Arc::clone(&user_data);
            registry.register(|_| Box::new(move |_| user_data.read()))
        };
        let batch = notify_on_another_thread(&registry);
        registry.unregister(id).unwrap();
        user_data.free();
        batch.join().unwrap();
    });
}

#[test]
fn loom_an_unregister_after_a_sink_unregistered_itself_waits_for_that_call() {
    loom::model(|| {
        let registry = Arc::new(SinkRegistry::new());
        let user_data = UserData::new();
        let id = {
            let user_data = Arc::clone(&user_data);
            // NotFound if the other unregister came first.
            register_self_unregistering(&registry, move |_| user_data.read())
        };
        let batch = notify_on_another_thread(&registry);
        // Ok before the sink unregistered itself, NotFound after: either
        // way, the host may free user_data now.
        let _ = registry.unregister(id);
        user_data.free();
        batch.join().unwrap();
        // Whichever dropped it, the unregister or the batch, the sink is
        // gone, and with it the cycle of `Arc`s through the registry.
        assert_eq!(Arc::strong_count(&registry), 1, "the sink was dropped");
    });
}

#[test]
fn loom_two_calls_of_a_sink_that_both_unregister_it_both_return() {
    loom::model(|| {
        let registry = Arc::new(SinkRegistry::new());
        let answers = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let id = {
            let answers = Arc::clone(&answers);
            register_self_unregistering(&registry, move |answer| {
                answers.lock().unwrap().push(answer.map_err(|e| e.kind()));
            })
        };
        let batches = [
            notify_on_another_thread(&registry),
            notify_on_another_thread(&registry),
        ];
        for batch in batches {
            batch.join().unwrap();
        }
        // One call or two (the second batch may come after the first
        // unregistered it); one `Ok`, and `NotFound` for the other.
        let answers = answers.lock().unwrap();
        assert_eq!(answers.iter().filter(|answer| answer.is_ok()).count(), 1);
        assert!(answers
            .iter()
            .all(|answer| *answer != Err(crate::ErrorKind::WouldDeadlock)));
        // The batch whose call returned last dropped the retired sink, and
        // with it the cycle of `Arc`s through the registry it holds.
        assert_eq!(Arc::strong_count(&registry), 1, "the sink was dropped");
        assert_eq!(
            registry.unregister(id).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
    });
}

#[test]
fn loom_two_sinks_unregistering_each_other_end_or_one_is_refused() {
    loom::model(|| {
        let registries = [Arc::new(SinkRegistry::new()), Arc::new(SinkRegistry::new())];
        let ids = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let refused = Arc::new(AtomicU64::new(0));
        for (sink, registry) in registries.iter().enumerate() {
            let other = 1 - sink;
            let (other_registry, other_ids, refused) = (
                Arc::clone(&registries[other]),
                Arc::clone(&ids),
                Arc::clone(&refused),
            );
            let id = registry.register(|_| {
                Box::new(move |_| {
                    match other_registry.unregister(SinkId(other_ids[other].load(Ordering::SeqCst)))
                    {
                        Err(e) if e.kind() == crate::ErrorKind::WouldDeadlock => {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                })
            });
            ids[sink].store(id.0, Ordering::SeqCst);
        }
        let batches = registries.each_ref().map(notify_on_another_thread);
        for batch in batches {
            batch.join().unwrap();
        }
        assert!(refused.load(Ordering::SeqCst) <= 1);
    });
}
