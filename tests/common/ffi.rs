//! Calls through the C ABI that the integration tests make again and again,
//! with the status left to the caller to check. A test includes this file as
//! a module of its own (`#[path = "common/ffi.rs"]`), so that only the tests
//! that call the C ABI compile it; each calls only some of them.
#![allow(dead_code)]

use std::ffi::CStr;

use kvzch::ffi::*;

/// `kvzch_options_init_sized`'s defaults with `row_bytes` set.
pub fn options(row_bytes: u32) -> kvzch_options {
    // SAFETY: kvzch_options is plain integers and a pointer; all-zero is valid.
    let mut options: kvzch_options = unsafe { std::mem::zeroed() };
    assert_eq!(
        kvzch_options_init_sized(&mut options, size_of::<kvzch_options>()),
        kvzch_status::KVZCH_STATUS_OK
    );
    options.row_bytes = row_bytes;
    options
}

/// `kvzch_cache_create` of `options`: the cache, or the status it failed with.
pub fn create(options: &kvzch_options) -> Result<*mut kvzch_cache, kvzch_status> {
    let mut cache = std::ptr::null_mut();
    match kvzch_cache_create(options, &mut cache) {
        kvzch_status::KVZCH_STATUS_OK => Ok(cache),
        status => Err(status),
    }
}

/// The cache `options` create; the test fails, with the library's message,
/// when it cannot be created.
pub fn created(options: &kvzch_options) -> *mut kvzch_cache {
    create(options).unwrap_or_else(|status| panic!("{status:?}: {}", last_error()))
}

/// This thread's last error message (up to 511 bytes).
pub fn last_error() -> String {
    let mut buf = [0u8; 512];
    kvzch_last_error_message(buf.as_mut_ptr().cast(), buf.len());
    CStr::from_bytes_until_nul(&buf)
        .expect("the message is NUL-terminated")
        .to_string_lossy()
        .into_owned()
}

/// The cache's info, every field this build has.
pub fn info(cache: *const kvzch_cache) -> kvzch_cache_info {
    let mut info = kvzch_cache_info {
        struct_size: size_of::<kvzch_cache_info>() as u32,
        ..kvzch_cache_info::default()
    };
    assert_eq!(
        kvzch_cache_get_info(cache, &mut info),
        kvzch_status::KVZCH_STATUS_OK,
        "{}",
        last_error()
    );
    info
}

/// `kvzch_cache_batch_set` of `ids` with `rows`, `rows.len()` as its length.
pub fn batch_set(
    cache: *mut kvzch_cache,
    ids: &[i64],
    rows: &[u8],
    timestamp: u32,
) -> kvzch_status {
    kvzch_cache_batch_set(
        cache,
        ids.as_ptr(),
        ids.len(),
        rows.as_ptr().cast(),
        rows.len(),
        timestamp,
    )
}

/// `kvzch_cache_batch_get` of `ids` into `out`, with no hit mask; `stats`
/// when given.
pub fn batch_get(
    cache: *mut kvzch_cache,
    ids: &[i64],
    out: &mut [u8],
    stats: Option<&mut kvzch_batch_stats>,
) -> kvzch_status {
    kvzch_cache_batch_get(
        cache,
        ids.as_ptr(),
        ids.len(),
        out.as_mut_ptr().cast(),
        out.len(),
        std::ptr::null_mut(),
        stats.map_or(std::ptr::null_mut(), |stats| stats as *mut _),
    )
}
