//! Room in a collection reserved so that a failed allocation is an
//! `OutOfMemory` error, not an aborted process: every collection that a call
//! on a cache fills, sized by its batch, the shard count, a shard or a table,
//! is reserved so before it is filled. That includes the index's overflow
//! list, empty but for ids that defeat the hash: a publish reserves room in it
//! for each of its insertions (`Index::reserve_overflow`), a rebuild for its
//! deferred entries, and for every entry still to come once it runs out of
//! room to defer.

use std::collections::{BinaryHeap, HashSet, TryReserveError, VecDeque};
use std::hash::{BuildHasher, Hash};

use super::Error;

/// A collection that can reserve room for more elements, failing instead of
/// aborting.
pub(crate) trait Reserve {
    fn len(&self) -> usize;
    fn try_reserve_more(&mut self, additional: usize) -> Result<(), TryReserveError>;
}

impl<T> Reserve for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    /// Exactly: the arena counts its tables' capacity in `memory_bytes`.
    fn try_reserve_more(&mut self, additional: usize) -> Result<(), TryReserveError> {
        self.try_reserve_exact(additional)
    }
}

impl<T> Reserve for VecDeque<T> {
    fn len(&self) -> usize {
        VecDeque::len(self)
    }

    /// Amortized: a shard's stamp counts, the one ring, are not counted in
    /// `memory_bytes`, and grow by one stamp at a time.
    fn try_reserve_more(&mut self, additional: usize) -> Result<(), TryReserveError> {
        self.try_reserve(additional)
    }
}

impl<T: Ord> Reserve for BinaryHeap<T> {
    fn len(&self) -> usize {
        BinaryHeap::len(self)
    }

    fn try_reserve_more(&mut self, additional: usize) -> Result<(), TryReserveError> {
        self.try_reserve_exact(additional)
    }
}

impl<T: Eq + Hash, S: BuildHasher> Reserve for HashSet<T, S> {
    fn len(&self) -> usize {
        HashSet::len(self)
    }

    fn try_reserve_more(&mut self, additional: usize) -> Result<(), TryReserveError> {
        self.try_reserve(additional)
    }
}

/// Makes room in `collection` for `total` elements in all, so that filling
/// it up to that allocates nothing; fails, naming `what`, when the memory
/// cannot be had.
pub(crate) fn reserve_to(
    collection: &mut impl Reserve,
    total: usize,
    what: impl FnOnce() -> String,
) -> Result<(), Error> {
    #[cfg(test)]
    if crate::allocation_failure::take() {
        return Err(Error::out_of_memory(what()));
    }
    collection
        .try_reserve_more(total.saturating_sub(collection.len()))
        .map_err(|_| Error::out_of_memory(what()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn room_is_for_the_total_whatever_the_collection_holds() {
        let mut ids = vec![1i64, 2, 3];
        reserve_to(&mut ids, 10, String::new).unwrap();
        assert!(ids.capacity() >= 10);
        let mut set: HashSet<i64> = (0..5).collect();
        reserve_to(&mut set, 100, String::new).unwrap();
        assert!(set.capacity() >= 100);
    }

    /// The exact reservations make room for the total, not for the total on
    /// top of what the collection already holds.
    #[test]
    fn exact_room_is_the_total_and_no_more() {
        let mut ids = vec![1i64, 2, 3];
        reserve_to(&mut ids, 10, String::new).unwrap();
        assert_eq!(ids.capacity(), 10);
        let mut stamps: BinaryHeap<u32> = (0..5).collect();
        reserve_to(&mut stamps, 100, String::new).unwrap();
        assert_eq!(stamps.capacity(), 100);
    }

    #[test]
    fn memory_that_cannot_be_had_is_out_of_memory() {
        let mut rows: Vec<u64> = Vec::new();
        let error = reserve_to(&mut rows, usize::MAX / 2, || "every row".to_string()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::OutOfMemory);
        assert_eq!(error.message(), "could not allocate every row");
        assert_eq!(rows.capacity(), 0);
    }
}
