//! Memory that really runs out: a publish too large for the memory left
//! returns `KVZCH_STATUS_OUT_OF_MEMORY` and stores nothing, where growing its
//! scratch with an infallible allocation aborted the host process, and a
//! shard's rows that cannot have a larger mapping keep the rows they held.
//! Each test runs itself again in a child process, whose address space it
//! caps (`RLIMIT_AS`) a little above what the child holds once its buffers
//! are allocated; the parent checks that the child exited cleanly, not by a
//! signal. (The engine's unit tests fail each allocation in turn through a
//! test-only hook; these take no hook.)
#![cfg(target_os = "linux")]

use kvzch::ffi::*;

#[path = "common/ffi.rs"]
mod ffi_calls;
use ffi_calls::{batch_get, batch_set, created, info, last_error, options};
#[path = "common/child.rs"]
mod child;
use child::in_a_child;
#[path = "common/memory.rs"]
mod memory;
use memory::mapped_bytes;

/// What the child may map beyond what it holds when capped: far less than
/// the publish's scratch (28 bytes an id), far more than a lookup's.
const HEADROOM_BYTES: u64 = 32 << 20;
/// Ids in the publish that cannot have its scratch.
const PUBLISH_IDS: usize = 8 << 20;
const ROW_BYTES: usize = 4;
/// Rows of a page, a shard of which passes a huge page in a few hundred.
const WIDE_ROW_BYTES: usize = 4096;

#[test]
fn a_publish_larger_than_the_memory_left_is_out_of_memory_not_an_abort() {
    in_a_child(
        "a_publish_larger_than_the_memory_left_is_out_of_memory_not_an_abort",
        publish_under_a_capped_address_space,
    );
}

#[test]
fn rows_that_cannot_have_a_larger_mapping_keep_the_rows_they_held() {
    in_a_child(
        "rows_that_cannot_have_a_larger_mapping_keep_the_rows_they_held",
        grow_rows_under_a_capped_address_space,
    );
}

fn publish_under_a_capped_address_space() {
    let cache = cache_of_8_shards(ROW_BYTES);
    let publish = |ids: &[i64], rows: &[u8]| batch_set(cache, ids, rows, 1);
    let stored: Vec<i64> = (0..1000).collect();
    assert_eq!(
        publish(&stored, &rows_of(&stored, ROW_BYTES)),
        kvzch_status::KVZCH_STATUS_OK
    );
    let large: Vec<i64> = (1000..1000 + PUBLISH_IDS as i64).collect();
    let large_rows = rows_of(&large, ROW_BYTES);

    let uncapped = cap_address_space(mapped_bytes() + HEADROOM_BYTES);
    let status = publish(&large, &large_rows);
    let message = last_error();
    // Lookups still work while memory is short.
    assert_eq!(hits(cache, &stored, ROW_BYTES), stored.len());
    restore_address_space(uncapped);

    assert_eq!(
        status,
        kvzch_status::KVZCH_STATUS_OUT_OF_MEMORY,
        "{message}"
    );
    assert_eq!(
        message,
        format!(
            "kvzch_cache_batch_set: could not allocate scratch for a batch of {PUBLISH_IDS} ids"
        )
    );
    assert_eq!(info(cache).rows, 1000);
    // With the memory back, the same publish stores every row.
    assert_eq!(publish(&large, &large_rows), kvzch_status::KVZCH_STATUS_OK);
    assert_eq!(info(cache).rows, 1000 + PUBLISH_IDS as u64);
    assert_eq!(hits(cache, &large[..4096], ROW_BYTES), 4096);
    kvzch_cache_destroy(cache);
}

/// 1,000 rows of 4 KiB a shard, past a huge page, so that each grows by
/// moving its pages into a larger mapping; then 4,096 more a shard, 16 MiB
/// each, under a cap that leaves room for about one shard's new mapping at
/// most: a shard cannot map its rows (here, already the first: its mapping
/// moves into a larger one), and the publish stores nothing. The index's room is reserved beforehand, so what the
/// publish lacks is the rows' memory (`HugePageVec`'s mapping), not an index
/// or scratch.
fn grow_rows_under_a_capped_address_space() {
    let cache = cache_of_8_shards(WIDE_ROW_BYTES);
    let stored: Vec<i64> = (0..8000).collect();
    let stored_rows = rows_of(&stored, WIDE_ROW_BYTES);
    assert_eq!(
        batch_set(cache, &stored, &stored_rows, 1),
        kvzch_status::KVZCH_STATUS_OK
    );
    let more: Vec<i64> = (8000..8000 + 32_768).collect();
    let more_rows = rows_of(&more, WIDE_ROW_BYTES);
    assert_eq!(
        kvzch_cache_reserve(cache, more.len() as u64),
        kvzch_status::KVZCH_STATUS_OK
    );

    let memory_before = info(cache).memory_bytes;
    let uncapped = cap_address_space(mapped_bytes() + HEADROOM_BYTES);
    let status = batch_set(cache, &more, &more_rows, 2);
    let message = last_error();
    restore_address_space(uncapped);

    assert_eq!(
        status,
        kvzch_status::KVZCH_STATUS_OUT_OF_MEMORY,
        "{message}"
    );
    // Room grown before the failure stays, and is counted, so that a bound on
    // memory_bytes sees it: at least the failing shard's room for its new
    // rows' timestamps (its share of the 32,768, about 4,096), grown before
    // their rows. (14,336 and 16,384 bytes in two runs.)
    let grown = info(cache).memory_bytes - memory_before;
    assert!(grown > 0, "memory_bytes did not count the room kept");
    let rows_message = message
        .strip_prefix("kvzch_cache_batch_set: could not allocate memory for ")
        .and_then(|rest| rest.strip_suffix(" rows"));
    assert!(rows_message.is_some(), "{message}");
    assert_eq!(info(cache).rows, stored.len() as u64);
    assert_eq!(hits(cache, &stored, WIDE_ROW_BYTES), stored.len());
    assert_eq!(hits(cache, &more[..4096], WIDE_ROW_BYTES), 0);
    // With the memory back, the same publish stores every row.
    assert_eq!(
        batch_set(cache, &more, &more_rows, 2),
        kvzch_status::KVZCH_STATUS_OK
    );
    assert_eq!(info(cache).rows, (stored.len() + more.len()) as u64);
    assert_eq!(hits(cache, &more, WIDE_ROW_BYTES), more.len());
    assert_eq!(hits(cache, &stored, WIDE_ROW_BYTES), stored.len());
    kvzch_cache_destroy(cache);
}

/// Rows of `row_bytes` bytes, each its id's bytes over and over.
fn rows_of(ids: &[i64], row_bytes: usize) -> Vec<u8> {
    ids.iter()
        .flat_map(|id| id.to_le_bytes().into_iter().cycle().take(row_bytes))
        .collect()
}

/// How many of `ids` a lookup of them finds; when it finds them all, checks
/// that each came with its own row.
fn hits(cache: *mut kvzch_cache, ids: &[i64], row_bytes: usize) -> usize {
    let mut out = vec![0u8; ids.len() * row_bytes];
    let mut stats = kvzch_batch_stats::default();
    assert_eq!(
        batch_get(cache, ids, &mut out, Some(&mut stats)),
        kvzch_status::KVZCH_STATUS_OK
    );
    if stats.hits as usize == ids.len() {
        // Not assert_eq!, which would print megabytes of rows.
        assert!(out == rows_of(ids, row_bytes), "a row came back changed");
    }
    stats.hits as usize
}

/// A cache of `row_bytes`-byte rows in 8 shards.
fn cache_of_8_shards(row_bytes: usize) -> *mut kvzch_cache {
    created(&kvzch_options {
        num_shards: 8,
        ..options(row_bytes as u32)
    })
}

/// Caps the process's address space at `bytes`; returns the limit it had.
fn cap_address_space(bytes: u64) -> libc::rlimit {
    let mut before = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `before` is a valid `rlimit` for getrlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut before) }, 0);
    let capped = libc::rlimit {
        rlim_cur: bytes.min(before.rlim_max),
        rlim_max: before.rlim_max,
    };
    // SAFETY: `capped` is a valid `rlimit`; lowering the soft limit needs no
    // privilege.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &capped) }, 0);
    before
}

fn restore_address_space(limit: libc::rlimit) {
    // SAFETY: `limit` is the soft and hard limit the process had, which it may
    // raise its soft limit back to.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}
