//! One shard: an index and the rows it points to, guarded together by the
//! shard's lock in `Cache`.

use super::index::Index;
use super::rows::RowArena;
use super::Error;

pub(crate) struct Shard {
    index: Index,
    rows: RowArena,
}

/// What a publish of some new rows would make a shard hold.
pub(crate) struct Growth {
    pub(crate) added_bytes: usize,
}

impl Shard {
    pub(crate) fn new(row_bytes: usize) -> Shard {
        Shard {
            index: Index::new(),
            rows: RowArena::new(row_bytes),
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.index.memory_bytes() + self.rows.memory_bytes()
    }

    #[inline]
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    #[inline]
    pub(crate) fn rows(&self) -> &RowArena {
        &self.rows
    }

    pub(crate) fn contains(&self, key: i64, hash: u64) -> bool {
        self.index.get(key, hash).is_some()
    }

    pub(crate) fn growth_for(&self, new_rows: usize) -> Growth {
        let after = self.index.memory_bytes_after_reserve(new_rows)
            + self.rows.memory_bytes_after_reserve(new_rows);
        Growth {
            added_bytes: after - self.memory_bytes(),
        }
    }

    /// Allocates what `new_rows` insertions need, so that `upsert` cannot fail.
    pub(crate) fn reserve(
        &mut self,
        new_rows: usize,
        hash_of: impl Fn(i64) -> u64,
    ) -> Result<(), Error> {
        self.rows.reserve(new_rows)?;
        self.index.reserve(new_rows, hash_of)
    }

    /// Stores `row` for `key`; true when the key is new. Room was reserved.
    pub(crate) fn upsert(&mut self, key: i64, hash: u64, row: &[u8], timestamp: u32) -> bool {
        let rows = &mut self.rows;
        let (slot, inserted) = self.index.get_or_insert(key, hash, || rows.allocate());
        self.rows.row_mut(slot).copy_from_slice(row);
        *self.rows.stamp_mut(slot) = timestamp;
        inserted
    }

    pub(crate) fn remove(&mut self, key: i64, hash: u64) -> bool {
        match self.index.remove(key, hash) {
            Some(slot) => {
                self.rows.release(slot);
                true
            }
            None => false,
        }
    }

    pub(crate) fn bucket_count(&self) -> usize {
        self.index.bucket_count()
    }

    /// Removes the rows stamped before `threshold` among the index buckets `from..to`.
    pub(crate) fn evict_older_than(
        &mut self,
        threshold: u32,
        buckets: std::ops::Range<usize>,
    ) -> usize {
        let Shard { index, rows } = self;
        index.remove_where(buckets, |slot| {
            let expired = rows.stamp(slot) < threshold;
            if expired {
                rows.release(slot);
            }
            expired
        })
    }
}
