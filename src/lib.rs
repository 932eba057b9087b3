//! kvzch: a DRAM key-value embedding cache for ML inference.
//!
//! Hosts publish fixed-width embedding rows keyed by `i64` ids
//! ([`Cache::batch_set`]), look them up in large batches from many threads
//! ([`Cache::batch_get`]), evict stale rows after a republish
//! ([`Cache::evict_older_than`]), and measure the read-time hit rate: counters
//! that are consistent snapshots ([`Cache::take_read_hit_rate_stats`],
//! [`Cache::cumulative_read_stats`]) and sinks called with every batch's counts.
//!
//! The same engine is exported to C and C++ through the `kvzch_*` functions of
//! `include/kvzch.h` (see `ffi`).

// Bucket counts up to 2^32 and row arrays past 4 GiB are usize arithmetic.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("kvzch builds for 64-bit targets only");

#[cfg(test)]
mod allocation_failure;
pub mod cache;
pub mod ffi;
mod huge_pages;
mod prefetch;
pub mod stats;
#[cfg(all(test, loom))]
mod stats_loom;
mod sync;
#[cfg(all(test, target_os = "linux"))]
#[path = "../tests/common/child.rs"]
mod test_child;
mod word_match;

pub use cache::{
    Cache, CacheConfig, CacheInfo, Error, ErrorKind, EvictionPolicy, MissPolicy, TableName,
};
pub use stats::{
    register_global_sink, register_global_sink_with_id, unregister_global_sink, BatchEvent,
    BatchStats, ReadStats, Sink, SinkId,
};
