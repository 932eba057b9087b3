//! Stat sinks: C callbacks registered per cache or process-wide.

use std::ffi::c_void;

use super::guard::{boundary, live_cache, required_mut, FfiError};
use super::types::*;
use crate::stats::{
    register_global_sink_with_id, unregister_global_sink, BatchEvent, Sink, SinkId,
};

/// A C sink and its `user_data`, called with each batch's event. Dropped
/// when the registry lets go of the sink: once it will never be called again
/// and no call of it runs, which is when the host's `release` may free
/// `user_data`.
struct CSink {
    callback: unsafe extern "C" fn(*mut c_void, *const kvzch_batch_event),
    user_data: *mut c_void,
    release: kvzch_sink_release_fn,
}

// SAFETY: the ABI makes the host responsible for its sink: it runs on whatever
// thread calls batch_get, with the `user_data` it was registered with, so the
// host has promised that both may be used from any thread.
unsafe impl Send for CSink {}
// SAFETY: as for Send; the library itself never touches `user_data`.
unsafe impl Sync for CSink {}

impl CSink {
    fn call(&self, event: &BatchEvent<'_>) {
        let event = kvzch_batch_event {
            struct_size: size_of::<kvzch_batch_event>() as u32,
            reserved: 0,
            table: event.table.as_c_str().as_ptr(),
            stats: event.stats.into(),
        };
        // SAFETY: the host registered a non-NULL function taking these
        // arguments; `event` and the table name outlive the call.
        unsafe { (self.callback)(self.user_data, &event) }
    }

    /// The sink to register, made once its id is known: the id goes to
    /// `out_id` first, before any batch can call the sink.
    fn into_sink_writing_id(self, out_id: &mut u64) -> impl FnOnce(SinkId) -> Sink + '_ {
        move |id| {
            *out_id = id.0;
            Box::new(move |event: &BatchEvent<'_>| self.call(event))
        }
    }
}

impl Drop for CSink {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: the host gave `release` with this `user_data` for this
            // one call, made once the sink is done with: the registry drops a
            // sink only after its last call has returned and never calls it
            // after, and a `CSink` exists only for a registration that was
            // made (see `checked_sink`).
            unsafe { release(self.user_data) }
        }
    }
}

/// Checks a registration's arguments and makes its sink. A refused
/// registration makes no `CSink`, so it never calls `release`.
///
/// # Safety
/// `out_id` is NULL or a writable `uint64_t`, for as long as the returned
/// reference is used (the registration writes the id and lets go of it).
unsafe fn checked_sink<'a>(
    callback: kvzch_stat_sink_fn,
    user_data: *mut c_void,
    release: kvzch_sink_release_fn,
    out_id: *mut u64,
) -> Result<(CSink, &'a mut u64), FfiError> {
    let callback = callback.ok_or_else(|| FfiError::null("fn"))?;
    // SAFETY: the caller's promise.
    let out_id = unsafe { required_mut(out_id, "out_id") }?;
    let sink = CSink {
        callback,
        user_data,
        release,
    };
    Ok((sink, out_id))
}

/// The body of both exported registrations of a cache's sink.
///
/// # Safety
/// `cache` is NULL or a live handle; `out_id` is NULL or a writable
/// `uint64_t`.
unsafe fn register_c_cache_sink(
    function: &str,
    cache: *mut kvzch_cache,
    callback: kvzch_stat_sink_fn,
    user_data: *mut c_void,
    release: kvzch_sink_release_fn,
    out_id: *mut u64,
) -> kvzch_status {
    boundary(function, || {
        // SAFETY: the caller's promise: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        // SAFETY: the caller's promise for `out_id`.
        let (sink, out_id) = unsafe { checked_sink(callback, user_data, release, out_id) }?;
        cache.register_stat_sink_with_id(sink.into_sink_writing_id(out_id));
        Ok(())
    })
}

/// The body of both exported registrations of a global sink.
///
/// # Safety
/// `out_id` is NULL or a writable `uint64_t`.
unsafe fn register_c_global_sink(
    function: &str,
    callback: kvzch_stat_sink_fn,
    user_data: *mut c_void,
    release: kvzch_sink_release_fn,
    out_id: *mut u64,
) -> kvzch_status {
    boundary(function, || {
        // SAFETY: the caller's promise for `out_id`.
        let (sink, out_id) = unsafe { checked_sink(callback, user_data, release, out_id) }?;
        register_global_sink_with_id(sink.into_sink_writing_id(out_id));
        Ok(())
    })
}

/// Registers `callback` to be called with `user_data` once per non-empty
/// `batch_get` on this cache; `*out_id` gets its id for unregistering, before
/// any batch can call the sink, so a sink may read its own id from there.
#[no_mangle]
pub extern "C" fn kvzch_cache_register_stat_sink(
    cache: *mut kvzch_cache,
    callback: kvzch_stat_sink_fn,
    user_data: *mut c_void,
    out_id: *mut u64,
) -> kvzch_status {
    // SAFETY: the ABI's contract: `cache` is NULL or a live handle, `out_id`
    // NULL or a writable uint64_t.
    unsafe {
        register_c_cache_sink(
            "kvzch_cache_register_stat_sink",
            cache,
            callback,
            user_data,
            None,
            out_id,
        )
    }
}

/// Unregisters a sink of this cache. When this returns (called from anywhere
/// but inside that same sink), the sink is not running on any thread and will
/// never be called again, so its `user_data` may be freed. Unknown id:
/// `KVZCH_STATUS_NOT_FOUND`, returned only once no call of that sink is left
/// on another thread, even while another unregister of it is still waiting
/// for them. Called from inside that same sink, waits for nothing: the sink
/// is never called again, but its calls on other threads may still run (and,
/// when it runs nested in a call of itself, that call on this thread).
/// Called from inside another sink where the wait could never end (that sink
/// runs, on this thread, under a call of the sink unregistered; or two sinks
/// unregister each other from inside themselves on two threads):
/// `KVZCH_STATUS_WOULD_DEADLOCK`, changing nothing: the sink stays registered
/// unless another unregister had removed it already.
#[no_mangle]
pub extern "C" fn kvzch_cache_unregister_stat_sink(
    cache: *mut kvzch_cache,
    id: u64,
) -> kvzch_status {
    boundary("kvzch_cache_unregister_stat_sink", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        cache.unregister_stat_sink(SinkId(id))?;
        Ok(())
    })
}

/// Registers `callback` to be called with `user_data` once per non-empty
/// `batch_get` on every cache of the process; `*out_id` gets its id, before
/// any batch can call the sink.
#[no_mangle]
pub extern "C" fn kvzch_register_global_stat_sink(
    callback: kvzch_stat_sink_fn,
    user_data: *mut c_void,
    out_id: *mut u64,
) -> kvzch_status {
    // SAFETY: the ABI's contract: `out_id` is NULL or a writable uint64_t.
    unsafe {
        register_c_global_sink(
            "kvzch_register_global_stat_sink",
            callback,
            user_data,
            None,
            out_id,
        )
    }
}

/// Unregisters a global sink, with the same guarantee as
/// `kvzch_cache_unregister_stat_sink`. Unknown id: `KVZCH_STATUS_NOT_FOUND`.
#[no_mangle]
pub extern "C" fn kvzch_unregister_global_stat_sink(id: u64) -> kvzch_status {
    boundary("kvzch_unregister_global_stat_sink", || {
        unregister_global_sink(SinkId(id))?;
        Ok(())
    })
}

/// 1.3: registers a sink of this cache as `kvzch_cache_register_stat_sink`
/// does, and takes `release` (may be NULL: then nothing is called), which the
/// library calls once with `user_data` when it lets go of the sink: after the
/// sink's last call has returned, when it will never be called again. That
/// is inside whichever call on the same registry (this cache's, or the
/// global one) lets go of the sink last, on its thread: the unregister that
/// removed it, another unregister, or a `batch_get` (one that had begun
/// before, or, for a sink that unregistered itself, the one whose call of it
/// returned last); for a sink still registered when its cache is destroyed,
/// inside `kvzch_cache_destroy`. So an unregister may return before the
/// release has run. A host may free `user_data`
/// there, and a sink may end its own registration without waiting for its
/// other calls. `release` may call any `kvzch_` function except destroying
/// a cache whose `batch_get` or `kvzch_cache_destroy` it may run inside; it
/// must not unwind. Any status but `KVZCH_STATUS_OK`: nothing was registered
/// and `release` is not called.
#[no_mangle]
pub extern "C" fn kvzch_cache_register_stat_sink_with_release(
    cache: *mut kvzch_cache,
    callback: kvzch_stat_sink_fn,
    user_data: *mut c_void,
    release: kvzch_sink_release_fn,
    out_id: *mut u64,
) -> kvzch_status {
    // SAFETY: the ABI's contract: `cache` is NULL or a live handle, `out_id`
    // NULL or a writable uint64_t.
    unsafe {
        register_c_cache_sink(
            "kvzch_cache_register_stat_sink_with_release",
            cache,
            callback,
            user_data,
            release,
            out_id,
        )
    }
}

/// 1.3: registers a global sink as `kvzch_register_global_stat_sink` does,
/// with a `release` called as for
/// `kvzch_cache_register_stat_sink_with_release` (a global sink still
/// registered when the process exits is not released).
#[no_mangle]
pub extern "C" fn kvzch_register_global_stat_sink_with_release(
    callback: kvzch_stat_sink_fn,
    user_data: *mut c_void,
    release: kvzch_sink_release_fn,
    out_id: *mut u64,
) -> kvzch_status {
    // SAFETY: the ABI's contract: `out_id` is NULL or a writable uint64_t.
    unsafe {
        register_c_global_sink(
            "kvzch_register_global_stat_sink_with_release",
            callback,
            user_data,
            release,
            out_id,
        )
    }
}
