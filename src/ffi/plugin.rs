//! The plugin entry: one `dlsym("kvzch_get_api")` gives a host the whole table,
//! sized by what the host knows and what the loaded library has.

use std::ffi::{c_char, c_void};

use super::cache::*;
use super::guard::{boundary, FfiError, MAX_HOST_STRUCT_SIZE};
use super::stats::*;
use super::types::*;
use super::version::*;

/// Every function of the ABI, for hosts that `dlopen` the library. Later minor
/// versions append entries, never elsewhere; an entry the loaded library lacks
/// is NULL, so a host checks an entry before calling it.
#[repr(C)]
pub struct kvzch_api_v1 {
    /// Bytes the library filled.
    pub struct_size: u32,
    /// `kvzch_abi_version()` of the library that filled the table.
    pub abi_version: u32,
    pub abi_version_fn: Option<extern "C" fn() -> u32>,
    pub version: Option<extern "C" fn() -> *const c_char>,
    pub has_feature: Option<extern "C" fn(*const c_char) -> bool>,
    pub status_name: Option<extern "C" fn(StatusCode) -> *const c_char>,
    pub last_error_message: Option<extern "C" fn(*mut c_char, usize) -> usize>,
    pub stat_name: Option<extern "C" fn(u32) -> *const c_char>,
    pub options_init: Option<extern "C" fn(*mut kvzch_options)>,
    pub cache_create:
        Option<extern "C" fn(*const kvzch_options, *mut *mut kvzch_cache) -> kvzch_status>,
    pub cache_destroy: Option<extern "C" fn(*mut kvzch_cache)>,
    pub cache_batch_set: Option<
        extern "C" fn(
            *mut kvzch_cache,
            *const i64,
            usize,
            *const c_void,
            usize,
            u32,
        ) -> kvzch_status,
    >,
    pub cache_batch_get: Option<
        extern "C" fn(
            *mut kvzch_cache,
            *const i64,
            usize,
            *mut c_void,
            usize,
            *mut u8,
            *mut kvzch_batch_stats,
        ) -> kvzch_status,
    >,
    pub cache_batch_remove:
        Option<extern "C" fn(*mut kvzch_cache, *const i64, usize, *mut u64) -> kvzch_status>,
    pub cache_evict_older_than:
        Option<extern "C" fn(*mut kvzch_cache, u32, *mut u64) -> kvzch_status>,
    pub cache_get_info:
        Option<extern "C" fn(*const kvzch_cache, *mut kvzch_cache_info) -> kvzch_status>,
    pub cache_get_read_hit_rate_stats:
        Option<extern "C" fn(*mut kvzch_cache, *mut kvzch_read_stats) -> kvzch_status>,
    pub cache_get_cumulative_read_stats:
        Option<extern "C" fn(*const kvzch_cache, *mut kvzch_read_stats) -> kvzch_status>,
    pub cache_register_stat_sink: Option<
        extern "C" fn(*mut kvzch_cache, kvzch_stat_sink_fn, *mut c_void, *mut u64) -> kvzch_status,
    >,
    pub cache_unregister_stat_sink: Option<extern "C" fn(*mut kvzch_cache, u64) -> kvzch_status>,
    pub register_global_stat_sink:
        Option<extern "C" fn(kvzch_stat_sink_fn, *mut c_void, *mut u64) -> kvzch_status>,
    pub unregister_global_stat_sink: Option<extern "C" fn(u64) -> kvzch_status>,
    /// 1.1.
    pub cache_compact: Option<extern "C" fn(*mut kvzch_cache) -> kvzch_status>,
    /// 1.1.
    pub options_init_sized: Option<extern "C" fn(*mut kvzch_options, usize) -> kvzch_status>,
    /// 1.2.
    pub cache_reserve: Option<extern "C" fn(*mut kvzch_cache, u64) -> kvzch_status>,
    /// 1.3.
    pub cache_register_stat_sink_with_release: Option<
        extern "C" fn(
            *mut kvzch_cache,
            kvzch_stat_sink_fn,
            *mut c_void,
            kvzch_sink_release_fn,
            *mut u64,
        ) -> kvzch_status,
    >,
    /// 1.3.
    pub register_global_stat_sink_with_release: Option<
        extern "C" fn(
            kvzch_stat_sink_fn,
            *mut c_void,
            kvzch_sink_release_fn,
            *mut u64,
        ) -> kvzch_status,
    >,
}

/// Bytes of the 1.0 table, the smallest a host may pass.
const API_V1_0_SIZE: usize = 8 + 20 * size_of::<usize>();

fn api_table() -> kvzch_api_v1 {
    kvzch_api_v1 {
        struct_size: size_of::<kvzch_api_v1>() as u32,
        abi_version: kvzch_abi_version(),
        abi_version_fn: Some(kvzch_abi_version),
        version: Some(kvzch_version),
        has_feature: Some(kvzch_has_feature),
        status_name: Some(kvzch_status_name),
        last_error_message: Some(kvzch_last_error_message),
        stat_name: Some(kvzch_stat_name),
        options_init: Some(kvzch_options_init),
        cache_create: Some(kvzch_cache_create),
        cache_destroy: Some(kvzch_cache_destroy),
        cache_batch_set: Some(kvzch_cache_batch_set),
        cache_batch_get: Some(kvzch_cache_batch_get),
        cache_batch_remove: Some(kvzch_cache_batch_remove),
        cache_evict_older_than: Some(kvzch_cache_evict_older_than),
        cache_get_info: Some(kvzch_cache_get_info),
        cache_get_read_hit_rate_stats: Some(kvzch_cache_get_read_hit_rate_stats),
        cache_get_cumulative_read_stats: Some(kvzch_cache_get_cumulative_read_stats),
        cache_register_stat_sink: Some(kvzch_cache_register_stat_sink),
        cache_unregister_stat_sink: Some(kvzch_cache_unregister_stat_sink),
        register_global_stat_sink: Some(kvzch_register_global_stat_sink),
        unregister_global_stat_sink: Some(kvzch_unregister_global_stat_sink),
        cache_compact: Some(kvzch_cache_compact),
        options_init_sized: Some(kvzch_options_init_sized),
        cache_reserve: Some(kvzch_cache_reserve),
        cache_register_stat_sink_with_release: Some(kvzch_cache_register_stat_sink_with_release),
        register_global_stat_sink_with_release: Some(kvzch_register_global_stat_sink_with_release),
    }
}

/// Fills the host's function table. `abi_major` other than 1:
/// `KVZCH_STATUS_UNSUPPORTED`; `table_size` smaller than the 1.0 table, or
/// past 4096 bytes (a size never set: no table takes a page):
/// `KVZCH_STATUS_INVALID_ARGUMENT`. Otherwise fills
/// `min(table_size, sizeof(its table))` bytes, zeroes the entries of a larger
/// host table that this library lacks, and sets `struct_size` to the bytes it
/// filled.
#[no_mangle]
pub extern "C" fn kvzch_get_api(
    abi_major: u32,
    table: *mut kvzch_api_v1,
    table_size: usize,
) -> kvzch_status {
    boundary("kvzch_get_api", || {
        if abi_major != KVZCH_ABI_MAJOR {
            return Err(FfiError::new(
                kvzch_status::KVZCH_STATUS_UNSUPPORTED,
                format!("abi_major {abi_major}: this library has ABI {KVZCH_ABI_MAJOR}.{KVZCH_ABI_MINOR}"),
            ));
        }
        if table.is_null() {
            return Err(FfiError::null("table"));
        }
        if !table.is_aligned() {
            return Err(FfiError::invalid(format!(
                "table {table:p} is not aligned for kvzch_api_v1"
            )));
        }
        if table_size < API_V1_0_SIZE {
            return Err(FfiError::invalid(format!(
                "table_size {table_size} < {API_V1_0_SIZE}, the size of the 1.0 kvzch_api_v1"
            )));
        }
        if table_size > MAX_HOST_STRUCT_SIZE {
            return Err(FfiError::invalid(format!(
                "table_size {table_size} > {MAX_HOST_STRUCT_SIZE}, more than any kvzch_api_v1 holds: pass sizeof(kvzch_api_v1)"
            )));
        }
        let filled = table_size.min(size_of::<kvzch_api_v1>());
        let mut ours = api_table();
        ours.struct_size = filled as u32;
        // SAFETY: the host's table holds `table_size` writable bytes (checked
        // non-NULL and aligned above); `ours` holds at least `filled` bytes, and
        // the zeroed tail lies within the host's `table_size`. A NULL function
        // pointer is what a zero entry means in C.
        unsafe {
            let host = table.cast::<u8>();
            std::ptr::copy_nonoverlapping((&raw const ours).cast::<u8>(), host, filled);
            std::ptr::write_bytes(host.add(filled), 0, table_size - filled);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_up_to_a_page_are_filled_and_past_it_refused() {
        const UNTOUCHED: u64 = u64::MAX;
        let page_words = MAX_HOST_STRUCT_SIZE / 8;
        // A page and a word past it, 8-aligned as the table is.
        let mut page = vec![UNTOUCHED; page_words + 1];
        let table = page.as_mut_ptr().cast::<kvzch_api_v1>();
        assert_eq!(
            kvzch_get_api(1, table, MAX_HOST_STRUCT_SIZE + 1),
            kvzch_status::KVZCH_STATUS_INVALID_ARGUMENT
        );
        assert!(page.iter().all(|&word| word == UNTOUCHED));

        assert_eq!(
            kvzch_get_api(1, table, MAX_HOST_STRUCT_SIZE),
            kvzch_status::KVZCH_STATUS_OK
        );
        // SAFETY: the call above filled a whole `kvzch_api_v1` at `table`.
        let filled = unsafe { (*table).struct_size } as usize;
        assert_eq!(filled, size_of::<kvzch_api_v1>());
        // Entries this library lacks are zero up to the page, and not past it.
        assert!(page[filled / 8..page_words].iter().all(|&word| word == 0));
        assert_eq!(page[page_words], UNTOUCHED);
    }

    #[test]
    fn the_1_1_1_2_and_1_3_tables_append_two_entries_one_and_two() {
        let word = size_of::<usize>();
        assert_eq!(
            API_V1_0_SIZE + 2 * word,
            std::mem::offset_of!(kvzch_api_v1, cache_reserve)
        );
        assert_eq!(
            API_V1_0_SIZE + 3 * word,
            std::mem::offset_of!(kvzch_api_v1, cache_register_stat_sink_with_release)
        );
        assert_eq!(API_V1_0_SIZE + 5 * word, size_of::<kvzch_api_v1>());
    }
}
