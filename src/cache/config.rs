//! What a cache is created with, checked once at creation.

use std::ffi::{CStr, CString};
use std::fmt;

use super::Error;

/// Largest row width a cache accepts.
pub const MAX_ROW_BYTES: usize = 65536;
/// Largest shard count a cache accepts.
pub const MAX_SHARDS: usize = 65536;
const MAX_NAME_LEN: usize = 64;

/// What `batch_get` writes for an id that is not stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissPolicy {
    /// The row is zero-filled, so a miss never shows stale bytes.
    #[default]
    ZeroFill,
    /// The row is left as the caller's buffer had it (the host pre-filled a default).
    LeaveUntouched,
}

/// What a publish into a full cache does (full: `max_rows` or
/// `max_memory_bytes` reached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// The publish fails with `CapacityExceeded` and stores nothing.
    #[default]
    None,
    /// Rows with the oldest publish timestamps make room first.
    OldestTimestamp,
    /// Rows not read recently make room first (CLOCK: one "referenced" bit per
    /// row, set by lookups, cleared by a sweeping hand).
    LruApprox,
}

/// A table name: `[A-Za-z0-9_.-]{1,64}`. Kept NUL-terminated so that C hosts
/// can be handed a pointer to it without a copy per event.
#[derive(Clone, PartialEq, Eq)]
pub struct TableName(CString);

impl TableName {
    pub fn new(name: &str) -> Result<TableName, Error> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(valid_char) {
            return Err(Error::invalid_argument(format!(
                "name {name:?} is not 1 to {MAX_NAME_LEN} characters of [A-Za-z0-9_.-]"
            )));
        }
        let name = CString::new(name).expect("validated names hold no NUL");
        Ok(TableName(name))
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("validated names are ASCII")
    }

    pub fn as_c_str(&self) -> &CStr {
        &self.0
    }
}

impl Default for TableName {
    fn default() -> TableName {
        TableName(c"default".to_owned())
    }
}

impl fmt::Debug for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to build a [`Cache`](super::Cache).
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub row_bytes: usize,
    /// 0 picks a default sized for the machine; other values are rounded up to a
    /// power of two.
    pub num_shards: usize,
    pub miss_policy: MissPolicy,
    pub max_rows: Option<u64>,
    pub max_memory_bytes: Option<u64>,
    pub eviction_policy: EvictionPolicy,
    pub name: TableName,
}

impl CacheConfig {
    pub fn new(row_bytes: usize) -> CacheConfig {
        CacheConfig {
            row_bytes,
            num_shards: 0,
            miss_policy: MissPolicy::default(),
            max_rows: None,
            max_memory_bytes: None,
            eviction_policy: EvictionPolicy::default(),
            name: TableName::default(),
        }
    }

    pub(crate) fn validated_shard_count(&self) -> Result<usize, Error> {
        if self.row_bytes == 0 || self.row_bytes > MAX_ROW_BYTES {
            return Err(Error::invalid_argument(format!(
                "row_bytes {} is not in 1..={MAX_ROW_BYTES}",
                self.row_bytes
            )));
        }
        match self.num_shards {
            0 => Ok(default_shard_count()),
            n if n > MAX_SHARDS => Err(Error::invalid_argument(format!(
                "num_shards {n} > {MAX_SHARDS}"
            ))),
            n => Ok(n.next_power_of_two()),
        }
    }
}

/// Enough shards that writers rarely block readers of the same shard and that
/// a shard's eviction pass is short, few enough that a batch's per-shard
/// grouping and each shard's partly filled last huge page of rows stay cheap.
/// That page is half empty on average over row counts: 2 bytes per row at
/// 8 shards of 256-byte rows around 4M rows, 4 at 16 (at exactly 4M, 8
/// shards hold 61.03 pages of rows each, so their last pages are nearly
/// empty, 4.05 bytes per row). 16 and 8 shards ran lookups, and lookups
/// during a republish, as fast (measured on 2 cores).
fn default_shard_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 4).next_power_of_two().clamp(8, 128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "user_emb.v2-final", &"x".repeat(64)] {
            assert_eq!(TableName::new(good).unwrap().as_str(), good);
        }
        for bad in ["", "a b", "é", "a/b", &"x".repeat(65), "nul\0"] {
            let error = TableName::new(bad).unwrap_err();
            assert!(error.message().contains("name"), "{error}");
        }
    }

    #[test]
    fn shard_counts_round_up_and_are_bounded() {
        let with = |n| CacheConfig {
            num_shards: n,
            ..CacheConfig::new(8)
        };
        assert_eq!(with(3).validated_shard_count().unwrap(), 4);
        assert_eq!(with(65536).validated_shard_count().unwrap(), 65536);
        assert!(with(65537).validated_shard_count().is_err());
        assert!(with(0).validated_shard_count().unwrap().is_power_of_two());
        assert!(CacheConfig::new(0).validated_shard_count().is_err());
        assert!(CacheConfig::new(65537).validated_shard_count().is_err());
    }
}
