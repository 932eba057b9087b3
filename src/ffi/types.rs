//! The ABI's types and constants, laid out exactly as the C declarations.

use std::ffi::{c_char, c_void};

/// The ABI major version of this header. A library with another major is not
/// compatible (its SONAME differs too).
pub const KVZCH_ABI_MAJOR: u32 = 1;
/// The ABI minor version of this header. Minor versions only append.
pub const KVZCH_ABI_MINOR: u32 = 3;

/// `kvzch_options.miss_policy`: a missed id's row is zero-filled (the default).
pub const KVZCH_MISS_ZERO_FILL: u32 = 0;
/// `kvzch_options.miss_policy`: a missed id's row is left as the caller's buffer had it.
pub const KVZCH_MISS_LEAVE_UNTOUCHED: u32 = 1;

/// `kvzch_options.eviction_policy` (1.1): a publish that does not fit fails
/// with `KVZCH_STATUS_CAPACITY_EXCEEDED` and stores nothing (the default).
pub const KVZCH_EVICT_NONE: u32 = 0;
/// `kvzch_options.eviction_policy` (1.1): rows with the oldest publish
/// timestamps make room first.
pub const KVZCH_EVICT_OLDEST_TIMESTAMP: u32 = 1;
/// `kvzch_options.eviction_policy` (1.1): rows not read recently make room
/// first (CLOCK over a per-row referenced bit set by lookups).
pub const KVZCH_EVICT_LRU_APPROX: u32 = 2;

/// `kvzch_stat_name` number of "kvzch.inference.read_hit_count".
pub const KVZCH_STAT_READ_HIT_COUNT: u32 = 0;
/// `kvzch_stat_name` number of "kvzch.inference.read_miss_count".
pub const KVZCH_STAT_READ_MISS_COUNT: u32 = 1;
/// `kvzch_stat_name` number of "kvzch.inference.read_total_count".
pub const KVZCH_STAT_READ_TOTAL_COUNT: u32 = 2;

/// A cache of fixed-width rows keyed by `int64_t` ids. Opaque; create it with
/// `kvzch_cache_create`, destroy it with `kvzch_cache_destroy`.
pub struct kvzch_cache {
    /// `LIVE_CACHE` while the handle is valid; catches a destroyed or foreign
    /// pointer passed by a buggy host before it is used.
    pub(crate) magic: u64,
    pub(crate) cache: crate::Cache,
}

pub(crate) const LIVE_CACHE: u64 = 0x6b76_7a63_685f_6f6b;

/// What every fallible function returns. On any status but `KVZCH_STATUS_OK`
/// nothing was changed, no out-param was written, and
/// `kvzch_last_error_message` says why.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum kvzch_status {
    KVZCH_STATUS_OK = 0,
    /// A required pointer was NULL.
    KVZCH_STATUS_NULL_ARGUMENT = 1,
    /// A value out of range, a short buffer, an overflow.
    KVZCH_STATUS_INVALID_ARGUMENT = 2,
    /// An allocation failed.
    KVZCH_STATUS_OUT_OF_MEMORY = 3,
    /// `max_rows` / `max_memory_bytes` reached and nothing may be evicted.
    KVZCH_STATUS_CAPACITY_EXCEEDED = 4,
    /// E.g. an unknown sink id.
    KVZCH_STATUS_NOT_FOUND = 5,
    /// An option or ABI major this build does not have.
    KVZCH_STATUS_UNSUPPORTED = 6,
    /// An unregister made from inside a sink would wait forever: for a sink
    /// whose running call waits, through other sinks' unregisters, for this
    /// thread (two sinks unregistering each other from inside themselves on
    /// two threads), or for a call of that sink which this thread runs under
    /// (sink B, called by a lookup that sink A made, unregistering A). The
    /// call changes nothing (the sink stays registered unless another
    /// unregister had removed it already).
    KVZCH_STATUS_WOULD_DEADLOCK = 7,
    /// A bug caught at the boundary (a panic); the message says where.
    KVZCH_STATUS_INTERNAL = 8,
}

/// A `kvzch_status` as received from C, where any value may arrive; declared as
/// `kvzch_status` in the header.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct StatusCode(pub u32);

/// How to create a cache. Set `struct_size`, or call `kvzch_options_init` first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvzch_options {
    /// `sizeof(kvzch_options)` as the host compiled it.
    pub struct_size: u32,
    /// Required: bytes per row, 1 ..= 65536.
    pub row_bytes: u32,
    /// 0 = library default: 4 per CPU the process may run on, rounded up to
    /// a power of two, 8 to 128. Else rounded up to a power of two, <= 65536.
    /// Under an eviction policy each shard evicts within its share of the
    /// capacity: the default count then leaves each share at least 16384 rows
    /// (a capacity under 32768 rows is one shard, evicting exactly), and no
    /// count leaves a share under one row.
    pub num_shards: u32,
    /// `KVZCH_MISS_ZERO_FILL` (0, default) or `KVZCH_MISS_LEAVE_UNTOUCHED` (1).
    pub miss_policy: u32,
    /// 0 = unbounded.
    pub max_rows: u64,
    /// 0 = unbounded. Else at least what an empty cache of its shard count
    /// holds (`KVZCH_STATUS_INVALID_ARGUMENT` below it, naming the floor),
    /// which grows with the default shard count: set `num_shards` too for a
    /// small cap that must hold on every machine.
    pub max_memory_bytes: u64,
    /// The table name, `[A-Za-z0-9_.-]{1,64}`, copied; NULL = "default".
    pub name: *const c_char,
    /// 1.1: `KVZCH_EVICT_NONE` (0, default), `KVZCH_EVICT_OLDEST_TIMESTAMP` (1)
    /// or `KVZCH_EVICT_LRU_APPROX` (2). With a policy, `batch_set` always makes
    /// room within `max_rows` / `max_memory_bytes` by evicting.
    pub eviction_policy: u32,
    /// 1.1: must be 0.
    pub reserved1: u32,
}

/// The counts of one `batch_get`, returned by it and passed to sinks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvzch_batch_stats {
    pub hits: u64,
    pub misses: u64,
    /// `hits + misses == total == n`.
    pub total: u64,
    /// Wall time of the lookup itself.
    pub duration_ns: u64,
}

/// Read-time hit/miss counts. `hits + misses == total`, always.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvzch_read_stats {
    pub hits: u64,
    pub misses: u64,
    pub total: u64,
}

/// What a cache holds now, from `kvzch_cache_get_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvzch_cache_info {
    /// Set by the host; the library fills at most this many bytes and sets it to
    /// the number it filled.
    pub struct_size: u32,
    pub row_bytes: u32,
    pub num_shards: u32,
    pub reserved: u32,
    /// Rows stored now.
    pub rows: u64,
    /// Bytes the cache holds: rows, metadata, index, free space.
    pub memory_bytes: u64,
    /// 1.1: new ids stored since creation.
    pub inserts: u64,
    /// 1.1: existing ids overwritten. An id given more than once in one
    /// publish counts its earlier occurrences here, as if each had been
    /// written and then overwritten by the next; unless the publish could
    /// not keep that id at all, which counts it once, in
    /// `capacity_evictions`.
    pub updates: u64,
    /// 1.1: rows removed by `batch_remove`.
    pub removals: u64,
    /// 1.1: rows removed by `evict_older_than`.
    pub expirations: u64,
    /// 1.1: rows dropped to stay within `max_rows` / `max_memory_bytes`:
    /// stored rows evicted, and new rows of a publish that its shard's share
    /// could not keep, which `inserts` does not count. So `rows == inserts -
    /// removals - expirations - capacity_evictions` only while no publish
    /// dropped rows of its own.
    pub capacity_evictions: u64,
}

/// What a sink receives once per `batch_get`. Valid only during the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvzch_batch_event {
    /// `sizeof(kvzch_batch_event)` as the library built it.
    pub struct_size: u32,
    pub reserved: u32,
    /// The cache's name, NUL-terminated.
    pub table: *const c_char,
    pub stats: kvzch_batch_stats,
}

/// A stat sink. Runs on the thread that called `batch_get`, after the lookup,
/// outside every lock of the library; it may call any `kvzch_` function. It
/// must not unwind (a C++ sink must not throw).
pub type kvzch_stat_sink_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const kvzch_batch_event)>;

/// 1.3: lets go of a sink's `user_data`, given with the registration. The
/// library calls it once, on some thread, once the sink will never be called
/// again and no call of it is running (see
/// `kvzch_cache_register_stat_sink_with_release`). It must not unwind.
pub type kvzch_sink_release_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

impl From<crate::BatchStats> for kvzch_batch_stats {
    fn from(stats: crate::BatchStats) -> kvzch_batch_stats {
        kvzch_batch_stats {
            hits: stats.hits,
            misses: stats.misses,
            total: stats.total,
            duration_ns: stats.duration_ns,
        }
    }
}

impl From<crate::ReadStats> for kvzch_read_stats {
    fn from(stats: crate::ReadStats) -> kvzch_read_stats {
        kvzch_read_stats {
            hits: stats.hits,
            misses: stats.misses,
            total: stats.total,
        }
    }
}
