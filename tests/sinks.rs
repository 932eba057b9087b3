//! Stat sinks: who sees which batch, reentrancy, and the unregister guarantee.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use kvzch::{
    register_global_sink, unregister_global_sink, Cache, CacheConfig, ErrorKind, SinkId, TableName,
};

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
fn a_sink_may_look_up_the_same_cache_and_unregister_itself() {
    let cache = Arc::new(named("reentrant"));
    cache.batch_set(&[5], &[5; 4], 0).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let own_id = Arc::new(Mutex::new(None::<SinkId>));
    let id = {
        let (weak, calls, own_id) = (
            Arc::downgrade(&cache),
            Arc::clone(&calls),
            Arc::clone(&own_id),
        );
        cache.register_stat_sink(Box::new(move |_| {
            let nested = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let cache = weak.upgrade().unwrap();
            if nested {
                // Inside the sink: a lookup on the same cache (whose batch calls
                // this sink again, one level down), then unregistering itself.
                let mut out = [0u8; 4];
                cache.batch_get(&[5], &mut out, None).unwrap();
                assert_eq!(out, [5; 4]);
                let id = own_id.lock().unwrap().expect("registered");
                cache.unregister_stat_sink(id).unwrap();
            }
        }))
    };
    *own_id.lock().unwrap() = Some(id);
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
    for _ in 0..200 {
        // `freed` stands for the host freeing user_data once unregister returns.
        let freed = Arc::new(AtomicBool::new(false));
        let id = {
            let (freed, late_calls) = (Arc::clone(&freed), Arc::clone(&late_calls));
            cache.register_stat_sink(Box::new(move |_| {
                for _ in 0..200 {
                    std::hint::spin_loop();
                }
                if freed.load(Ordering::SeqCst) {
                    late_calls.fetch_add(1, Ordering::SeqCst);
                }
            }))
        };
        thread::sleep(Duration::from_micros(200));
        cache.unregister_stat_sink(id).unwrap();
        freed.store(true, Ordering::SeqCst);
    }
    stop.store(true, Ordering::Relaxed);
    for lookup in lookups {
        lookup.join().unwrap();
    }
    assert_eq!(late_calls.load(Ordering::SeqCst), 0);
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
    let counters = cache.cumulative_read_stats();
    assert_eq!(counters.hits, hits.load(Ordering::Relaxed));
    assert_eq!(counters.misses, misses.load(Ordering::Relaxed));
    assert_eq!(counters.total, 60_000);
}
