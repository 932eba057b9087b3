//! Memory that really runs out: a publish too large for the memory left
//! returns `KVZCH_STATUS_OUT_OF_MEMORY` and stores nothing, where growing its
//! scratch with an infallible allocation aborted the host process. The test
//! runs itself again in a child process, whose address space it caps
//! (`RLIMIT_AS`) a little above what the child holds once its buffers are
//! allocated; the parent checks that the child exited cleanly, not by a
//! signal. (The engine's unit tests fail each allocation in turn through a
//! test-only hook; this one takes no hook.)
#![cfg(target_os = "linux")]

use std::process::Command;

use kvzch::ffi::*;

#[path = "common/ffi.rs"]
mod ffi_calls;
use ffi_calls::{batch_get, batch_set, info, last_error};
#[path = "common/memory.rs"]
mod memory;
use memory::mapped_bytes;

/// Set in the child's environment.
const CHILD: &str = "KVZCH_OUT_OF_MEMORY_CHILD";
/// What the child may map beyond what it holds when capped: far less than
/// the publish's scratch (28 bytes an id), far more than a lookup's.
const HEADROOM_BYTES: u64 = 32 << 20;
/// Ids in the publish that cannot have its scratch.
const PUBLISH_IDS: usize = 8 << 20;
const ROW_BYTES: usize = 4;

#[test]
fn a_publish_larger_than_the_memory_left_is_out_of_memory_not_an_abort() {
    if std::env::var_os(CHILD).is_some() {
        publish_under_a_capped_address_space();
        return;
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_publish_larger_than_the_memory_left_is_out_of_memory_not_an_abort",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && stdout.contains("1 passed"),
        "the child ended with {}\nstdout:\n{stdout}\nstderr:\n{}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
}

fn publish_under_a_capped_address_space() {
    // SAFETY: `kvzch_options` is integers and a pointer, all valid as zero.
    let mut options: kvzch_options = unsafe { std::mem::zeroed() };
    kvzch_options_init(&mut options);
    options.row_bytes = ROW_BYTES as u32;
    options.num_shards = 8;
    let mut cache = std::ptr::null_mut();
    assert_eq!(
        kvzch_cache_create(&options, &mut cache),
        kvzch_status::KVZCH_STATUS_OK
    );
    let publish = |ids: &[i64], rows: &[u8]| batch_set(cache, ids, rows, 1);
    let stored: Vec<i64> = (0..1000).collect();
    assert_eq!(
        publish(&stored, &rows_of(&stored)),
        kvzch_status::KVZCH_STATUS_OK
    );
    let large: Vec<i64> = (1000..1000 + PUBLISH_IDS as i64).collect();
    let large_rows = rows_of(&large);

    let uncapped = cap_address_space(mapped_bytes() + HEADROOM_BYTES);
    let status = publish(&large, &large_rows);
    let message = last_error();
    // Lookups still work while memory is short.
    assert_eq!(hits(cache, &stored), stored.len());
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
    assert_eq!(hits(cache, &large[..4096]), 4096);
    kvzch_cache_destroy(cache);
}

/// Rows of `ROW_BYTES` bytes, each its id's low bytes.
fn rows_of(ids: &[i64]) -> Vec<u8> {
    ids.iter()
        .flat_map(|id| id.to_le_bytes()[..ROW_BYTES].to_vec())
        .collect()
}

fn hits(cache: *mut kvzch_cache, ids: &[i64]) -> usize {
    let mut out = vec![0u8; ids.len() * ROW_BYTES];
    let mut stats = kvzch_batch_stats::default();
    assert_eq!(
        batch_get(cache, ids, &mut out, Some(&mut stats)),
        kvzch_status::KVZCH_STATUS_OK
    );
    assert_eq!(out, rows_of(ids));
    stats.hits as usize
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
