//! The cache handle: lifecycle, data and counters.

use std::ffi::c_void;

use super::guard::{
    boundary, boundary_or, bounded_c_str, live_cache, overlap, required_mut, sized_struct, slice,
    slice_mut, FfiError, MAX_HOST_STRUCT_SIZE,
};
use super::types::*;
use crate::{Cache, CacheConfig, ErrorKind, EvictionPolicy, MissPolicy, TableName};

/// Where the 1.0 fields of `kvzch_options` end and the 1.1 fields start.
const OPTIONS_V1_0_FIELDS: usize = std::mem::offset_of!(kvzch_options, eviction_policy);
/// Bytes of the 1.0 `kvzch_options`, the smallest a host may pass: its fields
/// rounded up to the struct's alignment, as C sizes it. 40 on 64-bit targets;
/// 36 on 32-bit x86, where a `u64` aligns on 4 bytes; 40 on 32-bit ARM, whose
/// 1.0 struct ends in 4 bytes of padding where 1.1 put `eviction_policy`.
const OPTIONS_V1_0_SIZE: usize =
    OPTIONS_V1_0_FIELDS.next_multiple_of(std::mem::align_of::<kvzch_options>());
/// Bytes of the 1.0 `kvzch_cache_info`, the smallest a host may pass.
const CACHE_INFO_V1_0_SIZE: usize = std::mem::offset_of!(kvzch_cache_info, inserts);
const MAX_NAME_BYTES: usize = 64;

/// Fills the 1.0 fields of `opts` with the defaults and sets `struct_size` to
/// their size (40 bytes; 36 on 32-bit x86). `row_bytes` is left 0: the host
/// must set it. NULL: no-op.
///
/// A host compiled against a 1.0 header has a struct of that size, and this writes
/// no more than that whatever the library's version. In hosts compiled against
/// this header, `kvzch_options_init` is the header's own inline function (see
/// its end), which initializes every field the host knows.
#[no_mangle]
pub extern "C" fn kvzch_options_init(opts: *mut kvzch_options) {
    boundary_or("kvzch_options_init", (), || {
        // The 1.0 prefix is aligned as kvzch_options is.
        if opts.is_null() || !opts.is_aligned() {
            return;
        }
        let defaults = default_options(OPTIONS_V1_0_SIZE);
        // SAFETY: a non-NULL `opts` points to at least the 1.0 struct
        // (`OPTIONS_V1_0_SIZE` bytes), and only that many bytes are written.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const defaults).cast::<u8>(),
                opts.cast::<u8>(),
                OPTIONS_V1_0_SIZE,
            );
        }
    })
}

/// 1.1: fills the first `size` bytes of `opts` (`sizeof` the host's
/// `kvzch_options`) with the defaults, up to the fields this library has, and
/// sets `struct_size` to the bytes it filled. `size` below the 1.0 size (40;
/// 36 on 32-bit x86): `KVZCH_STATUS_INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn kvzch_options_init_sized(opts: *mut kvzch_options, size: usize) -> kvzch_status {
    boundary("kvzch_options_init_sized", || {
        sized_struct(opts, "opts")?;
        if size < OPTIONS_V1_0_SIZE {
            return Err(FfiError::invalid(format!(
                "size {size} < {OPTIONS_V1_0_SIZE}, the size of the 1.0 kvzch_options"
            )));
        }
        let filled = size.min(size_of::<kvzch_options>());
        let defaults = default_options(filled);
        // SAFETY: the host's struct holds `size >= filled` bytes (non-NULL and
        // aligned were checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const defaults).cast::<u8>(),
                opts.cast::<u8>(),
                filled,
            );
        }
        Ok(())
    })
}

fn default_options(struct_size: usize) -> kvzch_options {
    kvzch_options {
        struct_size: struct_size as u32,
        row_bytes: 0,
        num_shards: 0,
        miss_policy: KVZCH_MISS_ZERO_FILL,
        max_rows: 0,
        max_memory_bytes: 0,
        name: std::ptr::null(),
        eviction_policy: KVZCH_EVICT_NONE,
        reserved1: 0,
    }
}

/// Reads the host's options: `min(struct_size, sizeof ours)` bytes, the rest
/// defaulted. Bytes past ours must be zero: they would be options this build
/// does not have, which it must not silently ignore.
///
/// # Safety
/// `opts` is non-NULL, aligned, and valid for reads of `struct_size` bytes.
unsafe fn read_options(opts: *const kvzch_options) -> Result<kvzch_options, FfiError> {
    // SAFETY: `struct_size` is the first field, inside any struct the host has.
    let host_size = unsafe { opts.cast::<u32>().read() } as usize;
    if host_size < OPTIONS_V1_0_SIZE {
        return Err(FfiError::invalid(format!(
            "opts->struct_size {host_size} < {OPTIONS_V1_0_SIZE}, the size of the 1.0 kvzch_options"
        )));
    }
    if host_size > MAX_HOST_STRUCT_SIZE {
        return Err(FfiError::invalid(format!(
            "opts->struct_size {host_size} > {MAX_HOST_STRUCT_SIZE}, more than any kvzch_options holds: was it set (kvzch_options_init)?"
        )));
    }
    let ours = size_of::<kvzch_options>();
    // SAFETY: the host's struct holds `host_size` bytes.
    let host_bytes = unsafe { std::slice::from_raw_parts(opts.cast::<u8>(), host_size) };
    let known = known_option_bytes(host_size, OPTIONS_V1_0_FIELDS, OPTIONS_V1_0_SIZE, ours);
    if let Some(offset) = host_bytes.iter().skip(ours).position(|&b| b != 0) {
        return Err(FfiError::new(
            kvzch_status::KVZCH_STATUS_UNSUPPORTED,
            format!(
                "opts sets byte {} past the {ours} bytes of options this library (ABI {KVZCH_ABI_MAJOR}.{KVZCH_ABI_MINOR}) knows",
                ours + offset
            ),
        ));
    }
    let mut options = default_options(known);
    // SAFETY: `known <= host_size` bytes are readable, and every bit pattern of
    // them is valid for these fields (integers and a pointer); fields past
    // `known` keep their defaults.
    unsafe {
        std::ptr::copy_nonoverlapping(opts.cast::<u8>(), (&raw mut options).cast::<u8>(), known);
    }
    Ok(options)
}

/// The bytes of a host's `kvzch_options` of `host_size` bytes to read: of a
/// 1.0 struct (`v1_0_size` bytes) only its fields, since its tail padding may
/// hold anything and may lie where a later field is; of a later one, as many
/// as both it and ours (`ours` bytes) hold.
fn known_option_bytes(
    host_size: usize,
    v1_0_fields: usize,
    v1_0_size: usize,
    ours: usize,
) -> usize {
    if host_size <= v1_0_size {
        v1_0_fields
    } else {
        host_size.min(ours)
    }
}

fn config_from(options: &kvzch_options) -> Result<CacheConfig, FfiError> {
    let miss_policy = match options.miss_policy {
        KVZCH_MISS_ZERO_FILL => MissPolicy::ZeroFill,
        KVZCH_MISS_LEAVE_UNTOUCHED => MissPolicy::LeaveUntouched,
        other => {
            return Err(FfiError::invalid(format!(
                "opts->miss_policy {other} is neither KVZCH_MISS_ZERO_FILL (0) nor KVZCH_MISS_LEAVE_UNTOUCHED (1)"
            )))
        }
    };
    let name = if options.name.is_null() {
        TableName::default()
    } else {
        // SAFETY: a non-NULL name is a NUL-terminated string by the ABI.
        let bytes = unsafe { bounded_c_str(options.name, MAX_NAME_BYTES, "opts->name") }?;
        let name = std::str::from_utf8(bytes).map_err(|_| {
            FfiError::invalid(format!(
                "opts->name {:?} is not UTF-8",
                String::from_utf8_lossy(bytes)
            ))
        })?;
        TableName::new(name).map_err(|e| FfiError::from(e).prefixed("opts->"))?
    };
    let eviction_policy = match options.eviction_policy {
        KVZCH_EVICT_NONE => EvictionPolicy::None,
        KVZCH_EVICT_OLDEST_TIMESTAMP => EvictionPolicy::OldestTimestamp,
        KVZCH_EVICT_LRU_APPROX => EvictionPolicy::LruApprox,
        other => {
            return Err(FfiError::invalid(format!(
                "opts->eviction_policy {other} is not KVZCH_EVICT_NONE (0), \
                 KVZCH_EVICT_OLDEST_TIMESTAMP (1) or KVZCH_EVICT_LRU_APPROX (2)"
            )))
        }
    };
    if options.reserved1 != 0 {
        return Err(FfiError::new(
            kvzch_status::KVZCH_STATUS_UNSUPPORTED,
            format!(
                "opts->reserved1 is {}, not 0: an option this library does not have",
                options.reserved1
            ),
        ));
    }
    let nonzero = |value: u64| (value != 0).then_some(value);
    Ok(CacheConfig {
        row_bytes: options.row_bytes as usize,
        num_shards: options.num_shards as usize,
        miss_policy,
        max_rows: nonzero(options.max_rows),
        max_memory_bytes: nonzero(options.max_memory_bytes),
        eviction_policy,
        name,
    })
}

/// Creates a cache. `opts->row_bytes` is required; see `kvzch_options` for the
/// rest. On success `*out` owns the new cache. An `opts->struct_size` past
/// 4096 bytes is `INVALID_ARGUMENT`: no version's options take a page.
#[no_mangle]
pub extern "C" fn kvzch_cache_create(
    opts: *const kvzch_options,
    out: *mut *mut kvzch_cache,
) -> kvzch_status {
    boundary("kvzch_cache_create", || {
        sized_struct(opts, "opts")?;
        // SAFETY: `out` is NULL or a writable pointer.
        let out = unsafe { required_mut(out, "out") }?;
        // SAFETY: `opts` was checked non-NULL and aligned just above.
        let options = unsafe { read_options(opts) }?;
        let config = config_from(&options)?;
        // The engine's complaints about the configuration name its fields.
        let cache = Cache::new(config).map_err(|e| match e.kind() {
            ErrorKind::InvalidArgument => FfiError::from(e).prefixed("opts->"),
            _ => FfiError::from(e),
        })?;
        *out = Box::into_raw(Box::new(kvzch_cache {
            magic: LIVE_CACHE,
            cache,
        }));
        Ok(())
    })
}

/// Destroys a cache and everything it holds, sinks included. The host calls it
/// once, after every other call on the cache has returned. NULL: no-op.
#[no_mangle]
pub extern "C" fn kvzch_cache_destroy(cache: *mut kvzch_cache) {
    boundary_or("kvzch_cache_destroy", (), || {
        // SAFETY: the contract: NULL or a live handle from kvzch_cache_create.
        if unsafe { live_cache(cache) }.is_ok() {
            // SAFETY: the handle came from `Box::into_raw` in kvzch_cache_create
            // and no other call is using it; clearing the magic first lets a
            // later use of the dangling handle be caught while the memory stays
            // mapped.
            unsafe {
                (*cache).magic = 0;
                drop(Box::from_raw(cache));
            }
        }
    })
}

/// Checks that a buffer of `len` bytes holds `n` rows, and returns `n * row_bytes`.
fn rows_bytes(cache: &Cache, n: usize, len: usize, what: &str) -> Result<usize, FfiError> {
    let needed = n.checked_mul(cache.row_bytes()).ok_or_else(|| {
        FfiError::invalid(format!(
            "n {n} * row_bytes {} overflows size_t",
            cache.row_bytes()
        ))
    })?;
    if len < needed {
        return Err(FfiError::invalid(format!(
            "{what} {len} < n * row_bytes = {needed}"
        )));
    }
    Ok(needed)
}

/// Inserts or overwrites `n` rows, stamping each with `timestamp`. Row `i` is
/// `rows + i * row_bytes`; `rows_len` is the buffer's length in bytes. The last
/// occurrence of a duplicate id wins. At most `UINT32_MAX` ids a call
/// (`KVZCH_STATUS_INVALID_ARGUMENT` past it). With `max_rows` / `max_memory_bytes` set
/// and no room: `KVZCH_STATUS_CAPACITY_EXCEEDED`, and nothing is stored. When
/// memory cannot be allocated: `KVZCH_STATUS_OUT_OF_MEMORY`, and nothing is
/// stored or, under an eviction policy, evicted; room grown before the
/// failure stays (the shards grown before it, and the failing shard's room
/// for timestamps): `memory_bytes` counts it, and the next publish uses it.
/// Concurrent readers see every row whole, old or new (for an id given twice,
/// the new row is its last occurrence's: no reader sees an earlier one's).
#[no_mangle]
pub extern "C" fn kvzch_cache_batch_set(
    cache: *mut kvzch_cache,
    ids: *const i64,
    n: usize,
    rows: *const c_void,
    rows_len: usize,
    timestamp: u32,
) -> kvzch_status {
    boundary("kvzch_cache_batch_set", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        let needed = rows_bytes(cache, n, rows_len, "rows_len")?;
        // SAFETY: the ABI: `ids` holds `n` ids.
        let ids = unsafe { slice(ids, n, "ids") }?;
        // SAFETY: `rows` holds `rows_len >= needed` bytes.
        let rows = unsafe { slice(rows.cast::<u8>(), needed, "rows") }?;
        cache.batch_set(ids, rows, timestamp)?;
        Ok(())
    })
}

/// Looks up `n` ids. For each `i`, copies the row of `ids[i]` to
/// `out + i * row_bytes` on a hit; on a miss, zero-fills it
/// (`KVZCH_MISS_ZERO_FILL`) or leaves it (`KVZCH_MISS_LEAVE_UNTOUCHED`).
/// `hit_mask` (optional, `n` bytes) gets 1 per hit and 0 per miss. Then, in
/// this order: adds the batch's hits and misses to the cache's counters in one
/// indivisible step, writes `*stats` (optional), and calls every sink of the
/// cache and every global sink once (none when `n == 0`). Never changes the
/// cache's contents. `out`, `ids`, `hit_mask` and `stats` must not overlap
/// (`KVZCH_STATUS_INVALID_ARGUMENT`, with nothing written). When its
/// scratch (28 bytes an id, up to 2048 ids) cannot be allocated:
/// `KVZCH_STATUS_OUT_OF_MEMORY`, with nothing written, counted or called.
#[no_mangle]
pub extern "C" fn kvzch_cache_batch_get(
    cache: *mut kvzch_cache,
    ids: *const i64,
    n: usize,
    out: *mut c_void,
    out_len: usize,
    hit_mask: *mut u8,
    stats: *mut kvzch_batch_stats,
) -> kvzch_status {
    boundary("kvzch_cache_batch_get", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        let needed = rows_bytes(cache, n, out_len, "out_len")?;
        let out = out.cast::<u8>();
        if n > 0 && ids.is_null() {
            return Err(FfiError::null("ids"));
        }
        if n > 0 && out.is_null() {
            return Err(FfiError::null("out"));
        }
        let buffers = [
            ("ids", ids.cast::<u8>(), n.saturating_mul(size_of::<i64>())),
            ("out", out.cast_const(), needed),
            (
                "hit_mask",
                hit_mask.cast_const(),
                if hit_mask.is_null() { 0 } else { n },
            ),
            (
                "stats",
                stats.cast::<u8>().cast_const(),
                if stats.is_null() {
                    0
                } else {
                    size_of::<kvzch_batch_stats>()
                },
            ),
        ];
        for (i, &(a, a_start, a_len)) in buffers.iter().enumerate() {
            for &(b, b_start, b_len) in &buffers[i + 1..] {
                if overlap(a_start, a_len, b_start, b_len) {
                    return Err(FfiError::invalid(format!("{a} and {b} overlap")));
                }
            }
        }
        // SAFETY: the ABI: `ids` holds `n` ids; the buffers were checked disjoint.
        let ids = unsafe { slice(ids, n, "ids") }?;
        // SAFETY: `out` holds `out_len >= needed` writable bytes, disjoint from the rest.
        let out = unsafe { slice_mut(out, needed, "out") }?;
        let hit_mask = if hit_mask.is_null() {
            None
        } else {
            // SAFETY: a non-NULL `hit_mask` holds `n` writable bytes, disjoint from the rest.
            Some(unsafe { slice_mut(hit_mask, n, "hit_mask") }?)
        };
        // SAFETY: `stats` is NULL or a writable kvzch_batch_stats, disjoint from the rest.
        let stats = if stats.is_null() {
            None
        } else {
            Some(unsafe { required_mut(stats, "stats") }?)
        };
        let batch = cache.look_up(ids, out, hit_mask)?;
        if let Some(stats) = stats {
            *stats = batch.into();
        }
        // Only now, with the lookup's borrows of the host's buffers over: a
        // sink may hand the same buffers to a lookup of its own.
        cache.notify_sinks(&batch);
        Ok(())
    })
}

/// Removes `n` ids; `*out_removed` (optional) gets how many were stored. At
/// most `UINT32_MAX` ids a call, and `ids` and `out_removed` must not overlap
/// (`KVZCH_STATUS_INVALID_ARGUMENT`, changing nothing). When memory cannot be
/// allocated: `KVZCH_STATUS_OUT_OF_MEMORY`, and nothing is removed.
#[no_mangle]
pub extern "C" fn kvzch_cache_batch_remove(
    cache: *mut kvzch_cache,
    ids: *const i64,
    n: usize,
    out_removed: *mut u64,
) -> kvzch_status {
    boundary("kvzch_cache_batch_remove", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        // SAFETY: the ABI: `ids` holds `n` ids.
        let ids = unsafe { slice(ids, n, "ids") }?;
        // Checked before the mutable reference to `out_removed` exists.
        if overlap(
            ids.as_ptr(),
            ids.len(),
            out_removed,
            usize::from(!out_removed.is_null()),
        ) {
            return Err(FfiError::invalid("ids and out_removed overlap".to_string()));
        }
        let out_removed = optional_out(out_removed, "out_removed")?;
        let removed = cache.batch_remove(ids)?;
        if let Some(out) = out_removed {
            *out = removed;
        }
        Ok(())
    })
}

/// Removes every row whose timestamp is `< threshold` (publish a snapshot at T,
/// then evict older than T); `*out_evicted` (optional) gets how many. Readers
/// keep going and see each row present or absent, never torn.
#[no_mangle]
pub extern "C" fn kvzch_cache_evict_older_than(
    cache: *mut kvzch_cache,
    threshold: u32,
    out_evicted: *mut u64,
) -> kvzch_status {
    boundary("kvzch_cache_evict_older_than", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        let out_evicted = optional_out(out_evicted, "out_evicted")?;
        let evicted = cache.evict_older_than(threshold);
        if let Some(out) = out_evicted {
            *out = evicted;
        }
        Ok(())
    })
}

/// An optional out-param: NULL is fine, a misaligned pointer is not.
fn optional_out<'a, T>(ptr: *mut T, what: &str) -> Result<Option<&'a mut T>, FfiError> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: a non-NULL optional out-param is writable by the ABI.
    unsafe { required_mut(ptr, what) }.map(Some)
}

/// 1.1: returns free memory to the operating system: packs each shard's rows
/// into an arena no larger than they need and rebuilds its index for the rows
/// it holds. Readers of a shard wait while that shard is packed.
/// `KVZCH_STATUS_OUT_OF_MEMORY` when a shard's packed copy cannot be
/// allocated: every row stays, and the shards packed before it stay packed.
#[no_mangle]
pub extern "C" fn kvzch_cache_compact(cache: *mut kvzch_cache) -> kvzch_status {
    boundary("kvzch_cache_compact", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        cache.compact()?;
        Ok(())
    })
}

/// 1.2: makes room in the index for `additional_rows` rows beyond those
/// stored, so that publishing them rebuilds nothing: call it before loading a
/// table whose size is known. A fill without it rebuilds each shard's index
/// every time the shard grows by 50% (26% under `max_memory_bytes`). Row
/// memory is still allocated as rows arrive. The room counts in `memory_bytes`
/// from now on; `kvzch_cache_compact` gives back what is unused.
/// `KVZCH_STATUS_CAPACITY_EXCEEDED`, changing nothing, when the rows would pass
/// `max_rows` or their room would take `memory_bytes` past `max_memory_bytes`,
/// whatever the eviction policy: reserving never evicts. Under a policy a
/// shard's room stops at its share of the capacity.
/// `KVZCH_STATUS_INVALID_ARGUMENT` for more rows than the cache's shards can
/// address (`additional_rows` alone; with the rows stored they pass it:
/// `KVZCH_STATUS_CAPACITY_EXCEEDED`); `KVZCH_STATUS_OUT_OF_MEMORY` when the room cannot be allocated
/// (shards grown before the failure keep their room).
/// 0 rows: nothing to do.
#[no_mangle]
pub extern "C" fn kvzch_cache_reserve(
    cache: *mut kvzch_cache,
    additional_rows: u64,
) -> kvzch_status {
    boundary("kvzch_cache_reserve", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        cache.reserve(additional_rows)?;
        Ok(())
    })
}

/// Fills `*out` with what the cache holds now. The host sets `out->struct_size`
/// (at least the 1.0 size, 32); the library fills at most that many bytes and
/// sets `struct_size` to the number it filled. The counts are one snapshot,
/// taken between two of a writer's changes to them, never amid one: without
/// a capacity policy, `rows == inserts - removals - expirations` in every
/// one, also while other threads publish, remove and evict.
#[no_mangle]
pub extern "C" fn kvzch_cache_get_info(
    cache: *const kvzch_cache,
    out: *mut kvzch_cache_info,
) -> kvzch_status {
    boundary("kvzch_cache_get_info", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        sized_struct(out, "out")?;
        // SAFETY: `out` points to at least the 1.0 struct (checked non-NULL and
        // aligned), whose first field is `struct_size`.
        let host_size = unsafe { out.cast::<u32>().read() } as usize;
        if host_size < CACHE_INFO_V1_0_SIZE {
            return Err(FfiError::invalid(format!(
                "out->struct_size {host_size} < {CACHE_INFO_V1_0_SIZE}, the size of the 1.0 kvzch_cache_info"
            )));
        }
        let filled = host_size.min(size_of::<kvzch_cache_info>());
        let info = cache.info();
        let info = kvzch_cache_info {
            struct_size: filled as u32,
            row_bytes: info.row_bytes as u32,
            num_shards: info.num_shards as u32,
            reserved: 0,
            rows: info.rows,
            memory_bytes: info.memory_bytes,
            inserts: info.inserts,
            updates: info.updates,
            removals: info.removals,
            expirations: info.expirations,
            capacity_evictions: info.capacity_evictions,
        };
        // SAFETY: the host's struct holds `host_size >= filled` bytes, and `info`
        // is a kvzch_cache_info of at least `filled` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping((&raw const info).cast::<u8>(), out.cast::<u8>(), filled);
        }
        Ok(())
    })
}

/// Writes the hits and misses since the previous call on this cache (or since
/// creation) and starts a new window. Every batch is counted in exactly one
/// window, wholly: a snapshot never splits a batch.
#[no_mangle]
pub extern "C" fn kvzch_cache_get_read_hit_rate_stats(
    cache: *mut kvzch_cache,
    out: *mut kvzch_read_stats,
) -> kvzch_status {
    boundary("kvzch_cache_get_read_hit_rate_stats", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        // SAFETY: `out` is NULL or a writable kvzch_read_stats.
        let out = unsafe { required_mut(out, "out") }?;
        *out = cache.take_read_hit_rate_stats().into();
        Ok(())
    })
}

/// Writes the hits and misses since creation; resets nothing, so any number of
/// pollers can read it. A consistent snapshot: each batch wholly or not at all.
#[no_mangle]
pub extern "C" fn kvzch_cache_get_cumulative_read_stats(
    cache: *const kvzch_cache,
    out: *mut kvzch_read_stats,
) -> kvzch_status {
    boundary("kvzch_cache_get_cumulative_read_stats", || {
        // SAFETY: the contract: NULL or a live handle.
        let cache = unsafe { live_cache(cache) }?;
        // SAFETY: `out` is NULL or a writable kvzch_read_stats.
        let out = unsafe { required_mut(out, "out") }?;
        *out = cache.cumulative_read_stats().into();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::guard::copy_last_error;
    use crate::ffi::stats::{kvzch_cache_register_stat_sink, kvzch_cache_unregister_stat_sink};

    /// A 1.0 host's struct is read for its fields alone. On 32-bit ARM it is
    /// 40 bytes whose last 4 are padding, where 1.1 put `eviction_policy`
    /// (at 36, the 1.1 struct 48 bytes): that padding must not be read as a
    /// policy. On this target, the 1.0 size is C's size of the 1.0 fields.
    #[test]
    fn a_1_0_struct_s_tail_padding_is_not_read_as_a_later_field() {
        let (arm32_fields, arm32_v1_0, arm32_v1_1) = (36, 36usize.next_multiple_of(8), 48);
        assert_eq!(arm32_v1_0, 40);
        assert_eq!(
            known_option_bytes(arm32_v1_0, arm32_fields, arm32_v1_0, arm32_v1_1),
            36
        );
        assert_eq!(
            known_option_bytes(arm32_v1_1, arm32_fields, arm32_v1_0, arm32_v1_1),
            48
        );
        assert_eq!(
            known_option_bytes(64, arm32_fields, arm32_v1_0, arm32_v1_1),
            48
        );

        #[repr(C)]
        struct OptionsV1_0 {
            struct_size: u32,
            row_bytes: u32,
            num_shards: u32,
            miss_policy: u32,
            max_rows: u64,
            max_memory_bytes: u64,
            name: *const std::ffi::c_char,
        }
        assert_eq!(OPTIONS_V1_0_SIZE, size_of::<OptionsV1_0>());
    }

    /// The default options, as a host compiled against this header gets
    /// them, for rows of 8 bytes.
    fn options_of_8_byte_rows() -> kvzch_options {
        let mut opts = std::mem::MaybeUninit::<kvzch_options>::uninit();
        let size = size_of::<kvzch_options>();
        assert_eq!(
            kvzch_options_init_sized(opts.as_mut_ptr(), size),
            kvzch_status::KVZCH_STATUS_OK
        );
        // SAFETY: `kvzch_options_init_sized` wrote every field of a struct of
        // its own size.
        let mut opts = unsafe { opts.assume_init() };
        opts.row_bytes = 8;
        opts
    }

    /// Options of up to a page are read, their tail checked; one byte more
    /// is refused before any of it is read.
    #[test]
    fn options_up_to_a_page_are_read_and_past_it_refused() {
        // A page of zeros, options at its start, 8-aligned.
        let mut page = vec![0u64; MAX_HOST_STRUCT_SIZE / 8];
        let opts = options_of_8_byte_rows();
        let create = |page: &mut Vec<u64>, struct_size: u32| {
            let sized = kvzch_options {
                struct_size,
                ..opts
            };
            // SAFETY: the page holds 4096 bytes, more than a `kvzch_options`,
            // and is 8-aligned, as the struct is.
            unsafe { page.as_mut_ptr().cast::<kvzch_options>().write(sized) };
            let mut cache = std::ptr::null_mut();
            let status = kvzch_cache_create(page.as_ptr().cast(), &mut cache);
            kvzch_cache_destroy(cache);
            status
        };
        assert_eq!(create(&mut page, 4096), kvzch_status::KVZCH_STATUS_OK);
        *page.last_mut().unwrap() = 1;
        assert_eq!(
            create(&mut page, 4096),
            kvzch_status::KVZCH_STATUS_UNSUPPORTED
        );
        assert_eq!(
            create(&mut page, 4097),
            kvzch_status::KVZCH_STATUS_INVALID_ARGUMENT
        );
        let mut message = [0u8; 256];
        let len = copy_last_error(&mut message);
        assert_eq!(
            std::str::from_utf8(&message[..len]).unwrap(),
            "kvzch_cache_create: opts->struct_size 4097 > 4096, more than any kvzch_options holds: was it set (kvzch_options_init)?"
        );
    }

    /// The row the tests below store under id 7.
    const ROW_OF_7: [u8; 8] = [0x5a; 8];

    fn store_7(cache: *mut kvzch_cache) {
        assert_eq!(
            kvzch_cache_batch_set(cache, &7, 1, ROW_OF_7.as_ptr().cast(), 8, 1),
            kvzch_status::KVZCH_STATUS_OK
        );
    }

    /// A cache of 8-byte rows holding `ROW_OF_7` under id 7.
    fn cache_holding_7() -> *mut kvzch_cache {
        let opts = options_of_8_byte_rows();
        let mut cache = std::ptr::null_mut();
        assert_eq!(
            kvzch_cache_create(&opts, &mut cache),
            kvzch_status::KVZCH_STATUS_OK
        );
        store_7(cache);
        cache
    }

    /// What `look_up_again` needs: the host's buffers, as raw pointers a C
    /// host would hold, and what its nested lookup answered.
    struct Reentry {
        cache: *mut kvzch_cache,
        ids: *const i64,
        out: *mut u8,
        hit_mask: *mut u8,
        stats: *mut kvzch_batch_stats,
        /// Calls of the sink: the first one's lookup calls it again.
        calls: u32,
        nested: Option<kvzch_status>,
    }

    /// A sink that looks the batch up again, once, into the same buffers.
    /// It holds no reference to the `Reentry` across that lookup, whose own
    /// call of the sink reaches the `Reentry` too.
    unsafe extern "C" fn look_up_again(user_data: *mut c_void, _event: *const kvzch_batch_event) {
        let reentry = user_data.cast::<Reentry>();
        // SAFETY: `user_data` is the test's `Reentry`, which outlives the
        // registration, and only this thread touches it while the sink runs;
        // the block names its fields as places and makes no reference.
        let calls = unsafe {
            (*reentry).calls += 1;
            (*reentry).calls
        };
        if calls == 1 {
            // SAFETY: as above; the reference is last used to copy the
            // fields, before the lookup reaches the `Reentry` again.
            let fields = unsafe { &*reentry };
            let Reentry {
                cache,
                ids,
                out,
                hit_mask,
                stats,
                ..
            } = *fields;
            let status = kvzch_cache_batch_get(cache, ids, 2, out.cast(), 16, hit_mask, stats);
            // SAFETY: as above, a place written after the lookup returned.
            unsafe { (*reentry).nested = Some(status) };
        }
    }

    /// Once a batch's sinks run, its buffers are the host's again: a sink may
    /// hand them to a lookup of its own, as a host that keeps one set of
    /// buffers per thread does. Under Miri, a lookup that still borrowed them
    /// while its sinks ran is undefined behaviour.
    #[test]
    fn a_sink_may_look_up_into_the_buffers_of_its_batch() {
        let cache = cache_holding_7();
        let ids = [7i64, 8];
        let mut out = [0xffu8; 16];
        let mut hit_mask = [9u8; 2];
        let mut stats = kvzch_batch_stats::default();
        let mut reentry = Reentry {
            cache,
            ids: ids.as_ptr(),
            out: out.as_mut_ptr(),
            hit_mask: hit_mask.as_mut_ptr(),
            stats: &raw mut stats,
            calls: 0,
            nested: None,
        };
        let mut id = 0;
        assert_eq!(
            kvzch_cache_register_stat_sink(
                cache,
                Some(look_up_again),
                (&raw mut reentry).cast(),
                &mut id
            ),
            kvzch_status::KVZCH_STATUS_OK
        );
        let status = kvzch_cache_batch_get(
            reentry.cache,
            reentry.ids,
            2,
            reentry.out.cast(),
            16,
            reentry.hit_mask,
            reentry.stats,
        );
        assert_eq!(status, kvzch_status::KVZCH_STATUS_OK);
        assert_eq!(reentry.nested, Some(kvzch_status::KVZCH_STATUS_OK));
        assert_eq!(reentry.calls, 2, "the nested batch's sinks ran too");
        assert_eq!(
            kvzch_cache_unregister_stat_sink(cache, id),
            kvzch_status::KVZCH_STATUS_OK
        );
        kvzch_cache_destroy(cache);
        assert_eq!(&out[..8], &ROW_OF_7);
        assert_eq!(&out[8..], &[0; 8], "a miss is zero-filled");
        assert_eq!(hit_mask, [1, 0]);
        assert_eq!((stats.hits, stats.misses, stats.total), (1, 1, 2));
    }

    /// A cache whose memory cannot be had is `OUT_OF_MEMORY`, and the message
    /// names what could not be allocated, not an option.
    #[test]
    fn a_create_that_cannot_allocate_is_out_of_memory() {
        let mut opts = options_of_8_byte_rows();
        opts.num_shards = 8;
        let mut cache = std::ptr::null_mut();
        // The shards' array and two shards' first buckets, then a failure.
        let armed = crate::allocation_failure::arm(3);
        let status = kvzch_cache_create(&opts, &mut cache);
        drop(armed);
        assert_eq!(status, kvzch_status::KVZCH_STATUS_OUT_OF_MEMORY);
        assert!(cache.is_null());
        let mut message = [0u8; 256];
        let len = copy_last_error(&mut message);
        let message = std::str::from_utf8(&message[..len]).unwrap();
        assert!(
            message.starts_with("kvzch_cache_create: could not allocate"),
            "{message}"
        );

        assert_eq!(
            kvzch_cache_create(&opts, &mut cache),
            kvzch_status::KVZCH_STATUS_OK
        );
        kvzch_cache_destroy(cache);
    }

    /// Buffers that only touch share no byte: a host that carves a batch's
    /// buffers back to back out of one allocation, in either order, is served.
    #[test]
    fn buffers_back_to_back_in_one_allocation_do_not_overlap() {
        let cache = cache_holding_7();
        let stats_words = size_of::<kvzch_batch_stats>() / 8;
        // Word offsets of ids, out and stats, and the byte offset of the
        // 2-byte hit mask: each buffer starts where the one before it ends.
        // The removals below count into the word right after the ids, then
        // into the one right before them.
        let ids_out_stats_mask = (1, 3, 5, (5 + stats_words) * 8);
        let mask_stats_out_ids = (3 + stats_words, 1 + stats_words, 1, 6);
        for (ids_at, out_at, stats_at, mask_byte) in [ids_out_stats_mask, mask_stats_out_ids] {
            let mut arena = vec![0u64; 6 + stats_words];
            arena[ids_at] = 7;
            arena[ids_at + 1] = 8;
            // From here on `arena` is only read, and written only through
            // these pointers, so they stay valid.
            let words = arena.as_mut_ptr();
            // SAFETY: every offset lies inside `arena`, which outlives the calls.
            let (ids, out, stats, hit_mask) = unsafe {
                (
                    words.add(ids_at).cast::<i64>(),
                    words.add(out_at).cast::<c_void>(),
                    words.add(stats_at).cast::<kvzch_batch_stats>(),
                    words.cast::<u8>().add(mask_byte),
                )
            };
            assert_eq!(
                kvzch_cache_batch_get(cache, ids, 2, out, 16, hit_mask, stats),
                kvzch_status::KVZCH_STATUS_OK
            );
            assert_eq!(arena[out_at].to_ne_bytes(), ROW_OF_7);
            assert_eq!(arena[out_at + 1], 0, "a miss is zero-filled");
            let bytes = arena
                .iter()
                .flat_map(|word| word.to_ne_bytes())
                .collect::<Vec<_>>();
            assert_eq!(bytes[mask_byte..mask_byte + 2], [1, 0]);
            assert_eq!(arena[stats_at..stats_at + 3], [1, 1, 2]);
            // Sentinels first: one of these words is `out`'s, already read.
            let removed_after_and_before = [ids_at + 2, ids_at - 1];
            for removed_at in removed_after_and_before {
                // SAFETY: inside `arena`, as above; no call is running.
                unsafe { words.add(removed_at).write(u64::MAX) };
            }
            for removed_at in removed_after_and_before {
                // SAFETY: as above.
                let out_removed = unsafe { words.add(removed_at) };
                assert_eq!(
                    kvzch_cache_batch_remove(cache, ids, 2, out_removed),
                    kvzch_status::KVZCH_STATUS_OK
                );
            }
            assert_eq!(arena[ids_at + 2], 1, "7 was stored");
            assert_eq!(arena[ids_at - 1], 0, "the first removal took it");
            store_7(cache);
        }
        kvzch_cache_destroy(cache);
    }
}
