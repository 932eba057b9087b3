//! kvzch itself, through its Rust API and through its C ABI (the `extern "C"`
//! functions of the rlib, exactly what a C or C++ host calls).

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kvzch::ffi::{
    kvzch_batch_event, kvzch_batch_stats, kvzch_cache, kvzch_cache_batch_get,
    kvzch_cache_batch_set, kvzch_cache_create, kvzch_cache_destroy, kvzch_cache_evict_older_than,
    kvzch_cache_get_cumulative_read_stats, kvzch_cache_get_info, kvzch_cache_info,
    kvzch_cache_register_stat_sink, kvzch_cache_reserve, kvzch_cache_unregister_stat_sink,
    kvzch_options, kvzch_options_init_sized, kvzch_read_stats, kvzch_status,
};
use kvzch::{Cache, CacheConfig, SinkId};

use crate::contender::Contender;

pub struct KvzchRust {
    cache: Cache,
    sink: Mutex<Option<SinkId>>,
}

impl KvzchRust {
    pub fn new(row_bytes: usize) -> KvzchRust {
        KvzchRust {
            cache: Cache::new(CacheConfig::new(row_bytes)).expect("kvzch cache"),
            sink: Mutex::new(None),
        }
    }

    pub fn shards(&self) -> usize {
        self.cache.info().num_shards
    }
}

impl Contender for KvzchRust {
    fn name(&self) -> &'static str {
        "kvzch"
    }

    fn reserve(&mut self, rows: usize) {
        self.cache.reserve(rows as u64).expect("kvzch reserve");
    }

    fn publish(&self, ids: &[i64], rows: &[u8], timestamp: u32) {
        self.cache
            .batch_set(ids, rows, timestamp)
            .expect("kvzch batch_set");
    }

    fn evict_older_than(&self, threshold: u32) -> u64 {
        self.cache.evict_older_than(threshold)
    }

    fn get(&self, ids: &[i64], _slots: &[u32], out: &mut [u8]) -> u64 {
        self.cache
            .batch_get(ids, out, None)
            .expect("kvzch batch_get")
            .hits
    }

    fn read_counters(&self) -> Option<(u64, u64)> {
        let stats = self.cache.cumulative_read_stats();
        Some((stats.hits, stats.misses))
    }

    fn accounted_bytes(&self) -> Option<u64> {
        Some(self.cache.info().memory_bytes)
    }

    fn set_counting_sink(&self, counter: Option<Arc<AtomicU64>>) -> bool {
        let mut sink = self.sink.lock().expect("sink slot");
        if let Some(id) = sink.take() {
            self.cache
                .unregister_stat_sink(id)
                .expect("unregister kvzch sink");
        }
        if let Some(counter) = counter {
            *sink = Some(self.cache.register_stat_sink(Box::new(move |event| {
                counter.fetch_add(event.stats.total, Ordering::Relaxed);
            })));
        }
        true
    }
}

fn check(status: kvzch_status, what: &str) {
    assert_eq!(status, kvzch_status::KVZCH_STATUS_OK, "{what}");
}

pub struct KvzchC {
    cache: *mut kvzch_cache,
    sink: Mutex<Option<(u64, Arc<AtomicU64>)>>,
}

// SAFETY: the header allows every function on a cache to be called from any
// thread concurrently, except `kvzch_cache_destroy`, which only `Drop` calls.
unsafe impl Send for KvzchC {}
// SAFETY: as above.
unsafe impl Sync for KvzchC {}

impl KvzchC {
    pub fn new(row_bytes: usize) -> KvzchC {
        let mut options = std::mem::MaybeUninit::<kvzch_options>::uninit();
        check(
            kvzch_options_init_sized(options.as_mut_ptr(), size_of::<kvzch_options>()),
            "kvzch_options_init_sized",
        );
        // SAFETY: `kvzch_options_init_sized` filled every field of a struct of
        // its own size (the 1.0 `kvzch_options_init` fills only the first 40
        // bytes).
        let mut options = unsafe { options.assume_init() };
        options.row_bytes = row_bytes as u32;
        let mut cache = std::ptr::null_mut();
        check(
            kvzch_cache_create(&options, &mut cache),
            "kvzch_cache_create",
        );
        KvzchC {
            cache,
            sink: Mutex::new(None),
        }
    }

    fn info(&self) -> kvzch_cache_info {
        let mut info = kvzch_cache_info {
            struct_size: size_of::<kvzch_cache_info>() as u32,
            ..Default::default()
        };
        check(
            kvzch_cache_get_info(self.cache, &mut info),
            "kvzch_cache_get_info",
        );
        info
    }
}

impl Drop for KvzchC {
    fn drop(&mut self) {
        if let Some((id, _counter)) = self.sink.get_mut().expect("sink slot").take() {
            check(
                kvzch_cache_unregister_stat_sink(self.cache, id),
                "kvzch_cache_unregister_stat_sink",
            );
        }
        kvzch_cache_destroy(self.cache);
    }
}

/// The C sink: `user_data` is the `AtomicU64` the registration keeps alive.
unsafe extern "C" fn count_ids(user_data: *mut c_void, event: *const kvzch_batch_event) {
    // SAFETY: `user_data` points to the counter, which outlives the
    // registration; `event` is valid for the duration of the call.
    unsafe {
        let counter = &*user_data.cast::<AtomicU64>();
        counter.fetch_add((*event).stats.total, Ordering::Relaxed);
    }
}

impl Contender for KvzchC {
    fn name(&self) -> &'static str {
        "kvzch_c"
    }

    fn reserve(&mut self, rows: usize) {
        check(
            kvzch_cache_reserve(self.cache, rows as u64),
            "kvzch_cache_reserve",
        );
    }

    fn publish(&self, ids: &[i64], rows: &[u8], timestamp: u32) {
        check(
            kvzch_cache_batch_set(
                self.cache,
                ids.as_ptr(),
                ids.len(),
                rows.as_ptr().cast(),
                rows.len(),
                timestamp,
            ),
            "kvzch_cache_batch_set",
        );
    }

    fn evict_older_than(&self, threshold: u32) -> u64 {
        let mut evicted = 0;
        check(
            kvzch_cache_evict_older_than(self.cache, threshold, &mut evicted),
            "kvzch_cache_evict_older_than",
        );
        evicted
    }

    fn get(&self, ids: &[i64], _slots: &[u32], out: &mut [u8]) -> u64 {
        let mut stats = kvzch_batch_stats::default();
        check(
            kvzch_cache_batch_get(
                self.cache,
                ids.as_ptr(),
                ids.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                std::ptr::null_mut(),
                &mut stats,
            ),
            "kvzch_cache_batch_get",
        );
        stats.hits
    }

    fn read_counters(&self) -> Option<(u64, u64)> {
        let mut stats = kvzch_read_stats::default();
        check(
            kvzch_cache_get_cumulative_read_stats(self.cache, &mut stats),
            "kvzch_cache_get_cumulative_read_stats",
        );
        Some((stats.hits, stats.misses))
    }

    fn accounted_bytes(&self) -> Option<u64> {
        Some(self.info().memory_bytes)
    }

    fn set_counting_sink(&self, counter: Option<Arc<AtomicU64>>) -> bool {
        let mut sink = self.sink.lock().expect("sink slot");
        if let Some((id, _counter)) = sink.take() {
            check(
                kvzch_cache_unregister_stat_sink(self.cache, id),
                "kvzch_cache_unregister_stat_sink",
            );
        }
        if let Some(counter) = counter {
            let mut id = 0;
            check(
                kvzch_cache_register_stat_sink(
                    self.cache,
                    Some(count_ids),
                    Arc::as_ptr(&counter).cast_mut().cast(),
                    &mut id,
                ),
                "kvzch_cache_register_stat_sink",
            );
            *sink = Some((id, counter));
        }
        true
    }
}
