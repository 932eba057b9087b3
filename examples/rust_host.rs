//! The Rust side of the same engine: publish a table, look it up, and read the
//! hit rate from a sink and from the counters.
//!
//! `cargo run --release --example rust_host`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kvzch::{Cache, CacheConfig, TableName};

fn main() -> Result<(), kvzch::Error> {
    const ROW_BYTES: usize = 64;
    let cache = Cache::new(CacheConfig {
        name: TableName::new("item_embeddings")?,
        ..CacheConfig::new(ROW_BYTES)
    })?;

    let ids: Vec<i64> = (0..100_000).collect();
    let rows: Vec<u8> = ids.iter().flat_map(|&id| [id as u8; ROW_BYTES]).collect();
    cache.batch_set(&ids, &rows, 1)?;

    let sink_hits = Arc::new(AtomicU64::new(0));
    let sink = {
        let sink_hits = Arc::clone(&sink_hits);
        cache.register_stat_sink(Box::new(move |event| {
            sink_hits.fetch_add(event.stats.hits, Ordering::Relaxed);
        }))
    };

    // Every tenth lookup asks for an id that was never published.
    let wanted: Vec<i64> = (0..4096)
        .map(|i| if i % 10 == 0 { -i - 1 } else { i * 7 })
        .collect();
    let mut out = vec![0u8; wanted.len() * ROW_BYTES];
    let batch = cache.batch_get(&wanted, &mut out, None)?;
    cache.unregister_stat_sink(sink)?;

    let window = cache.take_read_hit_rate_stats();
    // 410 of the 4096 ids were never published; the sink and the window saw
    // this one batch. (CI runs this example: the checks make it a test too.)
    assert_eq!((batch.hits, batch.misses), (3686, 410));
    assert_eq!(sink_hits.load(Ordering::Relaxed), batch.hits);
    assert_eq!((window.hits, window.total), (batch.hits, batch.total));
    println!(
        "batch: {} hits, {} misses in {} us; window hit rate {:.1}%; the sink saw {} hits",
        batch.hits,
        batch.misses,
        batch.duration_ns / 1000,
        100.0 * window.hits as f64 / window.total as f64,
        sink_hits.load(Ordering::Relaxed),
    );
    let info = cache.info();
    println!(
        "{} rows in {} shards, {} bytes held",
        info.rows, info.num_shards, info.memory_bytes
    );
    assert_eq!(info.rows, ids.len() as u64);
    Ok(())
}
