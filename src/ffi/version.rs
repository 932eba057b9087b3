//! What the loaded library is and has: versions, features, names, last error.

use std::ffi::{c_char, CStr};

use super::guard::{boundary_or, bounded_c_str, copy_last_error, slice_mut};
use super::types::*;

/// The features of ABI 1.0, then those 1.1, 1.2 and 1.3 added; names are never
/// removed.
const FEATURES: &[&str] = &[
    "read_hit_rate_stats",
    "cumulative_read_stats",
    "stat_sink",
    "global_stat_sink",
    "evict_older_than",
    "batch_remove",
    "plugin_api_v1",
    "capacity_eviction",
    "compact",
    "cache_info_counters",
    "options_init_sized",
    "reserve",
    "stat_sink_release",
];
const LONGEST_FEATURE: usize = 64;

/// The value of a string of decimal digits, at compile time.
const fn decimal(digits: &str) -> u32 {
    let digits = digits.as_bytes();
    let mut value = 0;
    let mut at = 0;
    while at < digits.len() {
        value = value * 10 + (digits[at] - b'0') as u32;
        at += 1;
    }
    value
}

// The package version is the ABI's major and minor and a patch of its own
// (docs/ABI_POLICY.md), so that `find_package(kvzch 1.2)`, `kvzch >= 1.2` in
// pkg-config and the installed `libkvzch.so.1.2.<patch>` name the ABI they
// hold. An ABI bump without the version's fails the build here.
const _: () = assert!(
    decimal(env!("CARGO_PKG_VERSION_MAJOR")) == KVZCH_ABI_MAJOR
        && decimal(env!("CARGO_PKG_VERSION_MINOR")) == KVZCH_ABI_MINOR,
    "Cargo.toml's version must be <KVZCH_ABI_MAJOR>.<KVZCH_ABI_MINOR>.<patch>"
);

/// `(KVZCH_ABI_MAJOR << 16) | KVZCH_ABI_MINOR` of the loaded library, which may
/// be newer than the header the host was compiled with.
#[no_mangle]
pub extern "C" fn kvzch_abi_version() -> u32 {
    boundary_or("kvzch_abi_version", 0, || {
        KVZCH_ABI_MAJOR << 16 | KVZCH_ABI_MINOR
    })
}

/// The library's semantic version, e.g. "1.2.0": the ABI's major and minor,
/// then a patch number. Static.
#[no_mangle]
pub extern "C" fn kvzch_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(version) => version,
            Err(_) => panic!("the crate version has no NUL"),
        };
    VERSION.as_ptr()
}

/// True when the loaded library has the named feature (see the ABI's list).
/// NULL or an unknown name: false.
#[no_mangle]
pub extern "C" fn kvzch_has_feature(name: *const c_char) -> bool {
    boundary_or("kvzch_has_feature", false, || {
        if name.is_null() {
            return false;
        }
        // SAFETY: a non-NULL name is NUL-terminated by the ABI.
        match unsafe { bounded_c_str(name, LONGEST_FEATURE, "name") } {
            Ok(bytes) => FEATURES.iter().any(|feature| feature.as_bytes() == bytes),
            Err(_) => false,
        }
    })
}

/// "OK", "NULL_ARGUMENT", ...: the status's name without the prefix. Static.
/// An unknown value: "UNKNOWN".
#[no_mangle]
pub extern "C" fn kvzch_status_name(status: StatusCode) -> *const c_char {
    boundary_or("kvzch_status_name", c"UNKNOWN".as_ptr(), || {
        status_name(status).as_ptr()
    })
}

fn status_name(status: StatusCode) -> &'static CStr {
    match status.0 {
        0 => c"OK",
        1 => c"NULL_ARGUMENT",
        2 => c"INVALID_ARGUMENT",
        3 => c"OUT_OF_MEMORY",
        4 => c"CAPACITY_EXCEEDED",
        5 => c"NOT_FOUND",
        6 => c"UNSUPPORTED",
        7 => c"WOULD_DEADLOCK",
        8 => c"INTERNAL",
        _ => c"UNKNOWN",
    }
}

/// Copies the calling thread's last error message into `buf` (NUL-terminated,
/// truncated to `len - 1` bytes) and returns its full length without the NUL;
/// 0 if this thread has had no error. `buf` may be NULL when `len` is 0. A
/// successful call does not clear the message.
#[no_mangle]
pub extern "C" fn kvzch_last_error_message(buf: *mut c_char, len: usize) -> usize {
    boundary_or("kvzch_last_error_message", 0, || {
        // SAFETY: the contract: `buf` holds `len` writable bytes (or len is 0).
        match unsafe { slice_mut(buf.cast::<u8>(), len, "buf") } {
            Ok(buf) => copy_last_error(buf),
            Err(_) => copy_last_error(&mut []),
        }
    })
}

/// The canonical counter name of a `KVZCH_STAT_*` number
/// ("kvzch.inference.read_hit_count", ...). Static. Unknown: NULL.
#[no_mangle]
pub extern "C" fn kvzch_stat_name(stat: u32) -> *const c_char {
    boundary_or("kvzch_stat_name", std::ptr::null(), || {
        crate::stats::stat_name(stat).map_or(std::ptr::null(), CStr::as_ptr)
    })
}
