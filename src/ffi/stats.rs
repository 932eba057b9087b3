//! Stat sinks: C callbacks registered per cache or process-wide.

use std::ffi::c_void;

use super::guard::{boundary, live_cache, required_mut, FfiError};
use super::types::*;
use crate::stats::{
    register_global_sink_with_id, unregister_global_sink, BatchEvent, Sink, SinkId,
};

/// A C sink and its `user_data`, called with each batch's event.
struct CSink {
    callback: unsafe extern "C" fn(*mut c_void, *const kvzch_batch_event),
    user_data: *mut c_void,
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

fn c_sink(callback: kvzch_stat_sink_fn, user_data: *mut c_void) -> Result<CSink, FfiError> {
    let callback = callback.ok_or_else(|| FfiError::null("fn"))?;
    Ok(CSink {
        callback,
        user_data,
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
    boundary("kvzch_cache_register_stat_sink", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        let sink = c_sink(callback, user_data)?;
        // SAFETY: `out_id` is NULL or a writable uint64_t.
        let out_id = unsafe { required_mut(out_id, "out_id") }?;
        cache.register_stat_sink_with_id(sink.into_sink_writing_id(out_id));
        Ok(())
    })
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
    boundary("kvzch_register_global_stat_sink", || {
        let sink = c_sink(callback, user_data)?;
        // SAFETY: `out_id` is NULL or a writable uint64_t.
        let out_id = unsafe { required_mut(out_id, "out_id") }?;
        register_global_sink_with_id(sink.into_sink_writing_id(out_id));
        Ok(())
    })
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
