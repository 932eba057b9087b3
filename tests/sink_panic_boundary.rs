//! A Rust global sink that panics, in a process that also calls the C ABI: the
//! C call returns `KVZCH_STATUS_INTERNAL` with the panic's message instead of
//! unwinding into its caller, and the library stays usable. The steps before
//! the sinks (ABI.md's order for `batch_get`: the counters, then `*stats`, then
//! the sinks) are done by then, so the batch is counted and `stats` written.
//! A test binary of its own, because a global sink sees every batch of the
//! process.

use kvzch::ffi::*;

#[path = "common/ffi.rs"]
mod ffi_calls;
use ffi_calls::{batch_get, batch_set, created, last_error, options};
#[path = "common/panic_payload.rs"]
mod panic_payload;
use panic_payload::PanicsAsItDrops;

#[test]
fn a_panicking_rust_sink_makes_the_c_call_internal() {
    let cache = created(&options(8));
    assert_eq!(
        batch_set(cache, &[1, 2], &[7u8; 16], 1),
        kvzch_status::KVZCH_STATUS_OK
    );

    let sink = kvzch::register_global_sink(Box::new(|_| panic!("the global sink panicked")));
    let mut stats = kvzch_batch_stats::default();
    let mut out = [0u8; 24];
    let status = batch_get(cache, &[1, 2, 3], &mut out, Some(&mut stats));
    assert_eq!(status, kvzch_status::KVZCH_STATUS_INTERNAL);
    let message = last_error();
    assert!(message.contains("the global sink panicked"), "{message}");
    assert_eq!((stats.hits, stats.misses, stats.total), (2, 1, 3));
    assert_eq!(
        out,
        [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    let mut counts = kvzch_read_stats::default();
    assert_eq!(
        kvzch_cache_get_cumulative_read_stats(cache, &mut counts),
        kvzch_status::KVZCH_STATUS_OK
    );
    assert_eq!((counts.hits, counts.misses), (2, 1));

    kvzch::unregister_global_sink(sink).unwrap();
    stats = kvzch_batch_stats::default();
    let status = batch_get(cache, &[2, 3], &mut out[..16], Some(&mut stats));
    assert_eq!(status, kvzch_status::KVZCH_STATUS_OK, "{}", last_error());
    assert_eq!((stats.hits, stats.misses, stats.total), (1, 1, 2));

    // A panic with a value whose drop panics in turn: the boundary lets go of
    // it under a catch, where that drop's panic would leave through C.
    let sink = kvzch::register_global_sink(Box::new(|_| PanicsAsItDrops::panic("global")));
    let status = batch_get(cache, &[2], &mut out[..8], None);
    assert_eq!(status, kvzch_status::KVZCH_STATUS_INTERNAL);
    let message = last_error();
    assert!(message.contains("a panic without a message"), "{message}");
    kvzch::unregister_global_sink(sink).unwrap();
    kvzch_cache_destroy(cache);
}
