//! The boundary every exported function goes through: panic catching, the
//! thread's last error, and the checks that turn raw pointers into references.

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::types::{kvzch_cache, kvzch_status, LIVE_CACHE};
use crate::stats::discard_panic;
use crate::{Cache, ErrorKind};

/// The largest size a host may give for a struct the library reads or fills
/// (`opts->struct_size`, `kvzch_get_api`'s `table_size`): a page, far more than
/// any minor version's struct will take. Past it, the size is taken for what
/// it most likely is, one the host never set, and refused rather than used to
/// read or zero that many bytes (up to 4 GiB) of the host's memory.
pub(crate) const MAX_HOST_STRUCT_SIZE: usize = 4096;

/// Why a call failed, before it is recorded as the thread's last error.
pub(crate) struct FfiError {
    pub(crate) status: kvzch_status,
    pub(crate) message: String,
}

impl FfiError {
    pub(crate) fn new(status: kvzch_status, message: String) -> FfiError {
        FfiError { status, message }
    }

    pub(crate) fn invalid(message: String) -> FfiError {
        FfiError::new(kvzch_status::KVZCH_STATUS_INVALID_ARGUMENT, message)
    }

    /// Names where an engine message's argument came from, e.g. `opts->`.
    pub(crate) fn prefixed(self, prefix: &str) -> FfiError {
        FfiError::new(self.status, format!("{prefix}{}", self.message))
    }

    pub(crate) fn null(what: &str) -> FfiError {
        FfiError::new(
            kvzch_status::KVZCH_STATUS_NULL_ARGUMENT,
            format!("{what} is NULL"),
        )
    }
}

impl From<crate::Error> for FfiError {
    fn from(error: crate::Error) -> FfiError {
        let status = match error.kind() {
            ErrorKind::InvalidArgument => kvzch_status::KVZCH_STATUS_INVALID_ARGUMENT,
            ErrorKind::OutOfMemory => kvzch_status::KVZCH_STATUS_OUT_OF_MEMORY,
            ErrorKind::CapacityExceeded => kvzch_status::KVZCH_STATUS_CAPACITY_EXCEEDED,
            ErrorKind::NotFound => kvzch_status::KVZCH_STATUS_NOT_FOUND,
            ErrorKind::WouldDeadlock => kvzch_status::KVZCH_STATUS_WOULD_DEADLOCK,
        };
        FfiError::new(status, error.message().to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn record_last_error(message: String) {
    // A thread being torn down has no last error to keep.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = message);
}

/// Copies this thread's last error into `buf` as `kvzch_last_error_message` does.
pub(crate) fn copy_last_error(buf: &mut [u8]) -> usize {
    LAST_ERROR
        .try_with(|last| {
            let last = last.borrow();
            if let Some(room) = buf.len().checked_sub(1) {
                let copied = room.min(last.len());
                buf[..copied].copy_from_slice(&last.as_bytes()[..copied]);
                buf[copied] = 0;
            }
            last.len()
        })
        .unwrap_or(0)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// Runs the body of `function`, turning its error or panic into a status and
/// the thread's last error.
pub(crate) fn boundary(
    function: &str,
    body: impl FnOnce() -> Result<(), FfiError>,
) -> kvzch_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => kvzch_status::KVZCH_STATUS_OK,
        Ok(Err(error)) => {
            record_last_error(format!("{function}: {}", error.message));
            error.status
        }
        Err(payload) => {
            record_last_error(format!(
                "{function}: internal error: {}",
                panic_message(&*payload)
            ));
            discard_panic(payload);
            kvzch_status::KVZCH_STATUS_INTERNAL
        }
    }
}

/// For the functions that return a value instead of a status: a panic yields
/// `fallback` and is recorded as the last error.
pub(crate) fn boundary_or<T>(function: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        record_last_error(format!(
            "{function}: internal error: {}",
            panic_message(&*payload)
        ));
        discard_panic(payload);
        fallback
    })
}

/// # Safety
/// `ptr` is NULL or points to a `T` valid for reads during `'a`.
pub(crate) unsafe fn required<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, FfiError> {
    if !ptr.is_aligned() {
        return Err(FfiError::invalid(format!(
            "{what} {ptr:p} is not aligned for its type"
        )));
    }
    // SAFETY: non-NULL and aligned were checked (`as_ref` handles NULL), and the
    // caller vouches for validity.
    unsafe { ptr.as_ref() }.ok_or_else(|| FfiError::null(what))
}

/// Checks that a pointer to a host struct that carries its own `struct_size`
/// is non-NULL and aligned, without making a reference: the host's struct may
/// be shorter than ours (an older header), so a `&T` over it would claim bytes
/// the host does not have.
pub(crate) fn sized_struct<T>(ptr: *const T, what: &str) -> Result<(), FfiError> {
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    if !ptr.is_aligned() {
        return Err(FfiError::invalid(format!(
            "{what} {ptr:p} is not aligned for its type"
        )));
    }
    Ok(())
}

/// # Safety
/// `ptr` is NULL or points to a `T` valid for writes during `'a`, not aliased.
pub(crate) unsafe fn required_mut<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T, FfiError> {
    if !ptr.is_aligned() {
        return Err(FfiError::invalid(format!(
            "{what} {ptr:p} is not aligned for its type"
        )));
    }
    // SAFETY: as in `required`, plus the caller vouches for exclusivity.
    unsafe { ptr.as_mut() }.ok_or_else(|| FfiError::null(what))
}

fn check_slice<T>(ptr: *const T, len: usize, what: &str) -> Result<(), FfiError> {
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    if !ptr.is_aligned() {
        return Err(FfiError::invalid(format!(
            "{what} {ptr:p} is not aligned for its type"
        )));
    }
    if len
        .checked_mul(size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return Err(FfiError::invalid(format!(
            "{what} of {len} elements exceeds the address space"
        )));
    }
    Ok(())
}

/// A slice of `len` elements at `ptr`; `ptr` may be NULL when `len` is 0.
///
/// # Safety
/// When `len > 0` and `ptr` is not NULL, `ptr` points to `len` initialized
/// `T`s valid for reads during `'a`.
pub(crate) unsafe fn slice<'a, T>(
    ptr: *const T,
    len: usize,
    what: &str,
) -> Result<&'a [T], FfiError> {
    if len == 0 {
        return Ok(&[]);
    }
    check_slice(ptr, len, what)?;
    // SAFETY: non-NULL, aligned and within isize::MAX bytes were checked; the
    // caller vouches that the elements are readable.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// The mutable counterpart of [`slice()`].
///
/// # Safety
/// When `len > 0` and `ptr` is not NULL, `ptr` points to `len` `T`s valid for
/// writes during `'a` that nothing else references.
pub(crate) unsafe fn slice_mut<'a, T>(
    ptr: *mut T,
    len: usize,
    what: &str,
) -> Result<&'a mut [T], FfiError> {
    if len == 0 {
        return Ok(&mut []);
    }
    check_slice(ptr, len, what)?;
    // SAFETY: as in `slice`, plus the caller vouches for exclusivity.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// The cache behind a handle.
///
/// # Safety
/// `ptr` is NULL or a pointer returned by `kvzch_cache_create`; if it was
/// destroyed, the memory is still mapped (the magic check then catches most
/// such use, but cannot make it safe in general).
pub(crate) unsafe fn live_cache<'a>(ptr: *const kvzch_cache) -> Result<&'a Cache, FfiError> {
    // SAFETY: forwarded from this function's contract.
    let handle = unsafe { required(ptr, "cache") }?;
    if handle.magic != LIVE_CACHE {
        return Err(FfiError::invalid(format!(
            "cache {ptr:p} is not a live kvzch_cache"
        )));
    }
    Ok(&handle.cache)
}

/// The bytes of a NUL-terminated string of at most `max_len` bytes, without the NUL.
///
/// # Safety
/// `ptr` is non-NULL and points to a NUL-terminated string.
pub(crate) unsafe fn bounded_c_str<'a>(
    ptr: *const c_char,
    max_len: usize,
    what: &str,
) -> Result<&'a [u8], FfiError> {
    let mut len = 0;
    // Reading stops at the NUL or after `max_len + 1` bytes, all of which lie
    // before the NUL of a well-formed string, so no byte past it is read.
    // SAFETY: see above; `len <= max_len` keeps each read inside the string.
    while len <= max_len && unsafe { *ptr.add(len) } != 0 {
        len += 1;
    }
    if len > max_len {
        return Err(FfiError::invalid(format!(
            "{what} is longer than {max_len} bytes"
        )));
    }
    // SAFETY: the `len` bytes before the NUL were just read.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// True when `a_len` elements at `a` and `b_len` elements at `b` share a byte.
/// Checked before the slices are made: Rust may not hold a mutable and another
/// reference to the same bytes, so a host that passes overlapping buffers gets
/// an error instead of undefined behaviour.
pub(crate) fn overlap<A, B>(a: *const A, a_len: usize, b: *const B, b_len: usize) -> bool {
    let a_start = a.addr();
    let b_start = b.addr();
    let a_end = a_start.saturating_add(a_len.saturating_mul(size_of::<A>()));
    let b_end = b_start.saturating_add(b_len.saturating_mul(size_of::<B>()));
    a_start < a_end && b_start < b_end && a_start < b_end && b_start < a_end
}
