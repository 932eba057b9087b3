//! A panic inside the library reaches a C host as `KVZCH_STATUS_INTERNAL` with
//! the panic's message, unwinds nothing into the caller, and leaves the cache
//! usable: no lock stays held, nothing was counted, no sink was called.
//!
//! `cargo test --release --features fault-injection --test panic_boundary`

#![cfg(feature = "fault-injection")]

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use kvzch::cache::fault_injection::{PANICKING_ID, PANICKING_TABLE};
use kvzch::ffi::*;

#[path = "common/ffi.rs"]
mod ffi_calls;
use ffi_calls::{batch_get, batch_set, created, last_error, options};

static SINK_CALLS: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn count_calls(_: *mut c_void, _: *const kvzch_batch_event) {
    SINK_CALLS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn a_panic_is_internal_and_the_cache_stays_usable() {
    let name = std::ffi::CString::new(PANICKING_TABLE).unwrap();
    let cache = created(&kvzch_options {
        num_shards: 1,
        name: name.as_ptr(),
        ..options(8)
    });
    let ids = [1i64, 2, 3];
    let rows = [7u8; 24];
    assert_eq!(
        batch_set(cache, &ids, &rows, 1),
        kvzch_status::KVZCH_STATUS_OK
    );
    let mut sink_id = 0;
    assert_eq!(
        kvzch_cache_register_stat_sink(cache, Some(count_calls), ptr::null_mut(), &mut sink_id),
        kvzch_status::KVZCH_STATUS_OK
    );

    let mut out = [0u8; 32];
    for _ in 0..3 {
        let status = batch_get(cache, &[1, PANICKING_ID, 2, 3], &mut out, None);
        assert_eq!(status, kvzch_status::KVZCH_STATUS_INTERNAL);
        let message = last_error();
        assert!(
            message.starts_with("kvzch_cache_batch_get: internal error: injected panic"),
            "{message}"
        );
    }
    let mut counts = kvzch_read_stats::default();
    assert_eq!(
        kvzch_cache_get_cumulative_read_stats(cache, &mut counts),
        kvzch_status::KVZCH_STATUS_OK
    );
    assert_eq!(
        counts,
        kvzch_read_stats::default(),
        "a failed batch counted"
    );
    assert_eq!(
        SINK_CALLS.load(Ordering::SeqCst),
        0,
        "a failed batch called a sink"
    );

    // The shard's read lock was released during unwinding: a writer gets it.
    assert_eq!(
        batch_set(cache, &[4], &[9; 8], 2),
        kvzch_status::KVZCH_STATUS_OK
    );
    assert_eq!(
        batch_get(cache, &[1, 2, 3, 4], &mut out, None),
        kvzch_status::KVZCH_STATUS_OK
    );
    assert_eq!(out[..24], [7u8; 24]);
    assert_eq!(out[24..], [9u8; 8]);
    assert_eq!(SINK_CALLS.load(Ordering::SeqCst), 1);
    kvzch_cache_destroy(cache);
}
