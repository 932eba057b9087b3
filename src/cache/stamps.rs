//! A shard's count of rows by timestamp, kept under `OldestTimestamp`: which
//! stamp is the oldest, and which follows it.
//!
//! A ring sorted by stamp, not a map, so that a publish reserves the room
//! its stamp may need before it writes, as it reserves every other
//! allocation (see `fallible`): a `BTreeMap` has no fallible insert, and a
//! node it could not allocate amid a write would abort the host. Publishes
//! stamp in rising order and eviction empties the oldest stamps first, so
//! stamps nearly always come in at the back and leave at the front, where a
//! ring adds and removes them without moving the others. One that comes or
//! goes in the middle moves those on its shorter side.

use std::collections::VecDeque;

use super::fallible::reserve_to;
use super::Error;

#[derive(Default)]
pub(crate) struct StampCounts {
    /// `(stamp, rows)` by rising stamp, no count zero.
    counts: VecDeque<(u32, usize)>,
}

impl StampCounts {
    /// Makes room for one stamp more, so that the `add`s of one publish,
    /// which all carry its stamp, allocate nothing.
    pub(crate) fn reserve_one(&mut self) -> Result<(), Error> {
        let stamps = self.counts.len() + 1;
        reserve_to(&mut self.counts, stamps, || {
            "a shard's count of rows by timestamp".to_string()
        })
    }

    /// Where `stamp` is counted, or where it would go.
    fn find(&self, stamp: u32) -> Result<usize, usize> {
        match self.counts.back() {
            // A publish counts each of its rows under the newest stamp.
            Some(&(newest, _)) if newest == stamp => Ok(self.counts.len() - 1),
            Some(&(newest, _)) if newest < stamp => Err(self.counts.len()),
            _ => self.counts.binary_search_by_key(&stamp, |&(s, _)| s),
        }
    }

    /// Counts a row stamped `stamp`. Room for a stamp not counted yet was
    /// reserved (`reserve_one`).
    pub(crate) fn add(&mut self, stamp: u32) {
        match self.find(stamp) {
            Ok(at) => self.counts[at].1 += 1,
            Err(at) => {
                debug_assert!(
                    self.counts.len() < self.counts.capacity(),
                    "no room reserved for stamp {stamp}"
                );
                self.counts.insert(at, (stamp, 1));
            }
        }
    }

    /// Uncounts a row stamped `stamp`.
    pub(crate) fn remove(&mut self, stamp: u32) {
        if let Ok(at) = self.find(stamp) {
            self.counts[at].1 -= 1;
            if self.counts[at].1 == 0 {
                self.counts.remove(at);
            }
        }
    }

    pub(crate) fn oldest(&self) -> Option<u32> {
        self.counts.front().map(|&(stamp, _)| stamp)
    }

    /// The newest stamp whose rows, with all older ones, number at most
    /// `rows`: every one of them is needed to make room for `rows`. Else the
    /// oldest, when its rows alone are more. None when no row is counted.
    pub(crate) fn newest_wholly_needed(&self, rows: usize) -> Option<u32> {
        let mut counted = 0;
        let mut newest = self.oldest();
        for &(stamp, count) in &self.counts {
            counted += count;
            if counted > rows {
                break;
            }
            newest = Some(stamp);
        }
        newest
    }

    /// Forgets the stamps before `threshold`, whose rows are gone.
    pub(crate) fn forget_before(&mut self, threshold: u32) {
        let gone = self.counts.partition_point(|&(s, _)| s < threshold);
        self.counts.drain(..gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn counted(stamps: &[u32]) -> StampCounts {
        let mut counts = StampCounts::default();
        for &stamp in stamps {
            counts.reserve_one().unwrap();
            counts.add(stamp);
        }
        counts
    }

    #[test]
    fn stamps_are_counted_in_order_whatever_order_they_come_in() {
        let mut counts = counted(&[7, 3, 7, 9, 3, 3, 5]);
        assert_eq!(counts.counts, [(3, 3), (5, 1), (7, 2), (9, 1)]);
        assert_eq!(counts.oldest(), Some(3));
        // Rows 3, 3, 3 | 5 | 7, 7 | 9: the stamps wholly needed for so many.
        let wholly_needed: Vec<_> = (0..=8)
            .map(|rows| counts.newest_wholly_needed(rows))
            .collect();
        let expected = [3, 3, 3, 3, 5, 5, 7, 9, 9].map(Some);
        assert_eq!(wholly_needed, expected);
        assert_eq!(StampCounts::default().newest_wholly_needed(1), None);
        counts.remove(5);
        counts.remove(3);
        // A stamp never counted is no row of the shard's.
        counts.remove(4);
        assert_eq!(counts.counts, [(3, 2), (7, 2), (9, 1)]);
        counts.forget_before(8);
        assert_eq!(counts.counts, [(9, 1)]);
        counts.remove(9);
        assert_eq!(counts.oldest(), None);
    }

    #[test]
    fn a_publish_counts_its_stamp_in_the_room_it_reserved() {
        // A ring with no room to spare, so that only `reserve_one` makes it.
        let mut counts = StampCounts::default();
        let mut newest = 0;
        while counts.counts.len() < counts.counts.capacity() || newest == 0 {
            newest += 1;
            counts.reserve_one().unwrap();
            counts.add(newest);
        }
        counts.reserve_one().unwrap();
        let room = counts.counts.capacity();
        for _ in 0..1000 {
            counts.add(newest + 1);
        }
        counts.add(newest);
        assert_eq!(counts.counts.capacity(), room);
        assert_eq!(counts.counts.back(), Some(&(newest + 1, 1000)));
        assert_eq!(counts.counts[counts.counts.len() - 2], (newest, 2));
    }

    #[test]
    fn room_that_cannot_be_had_is_out_of_memory_and_changes_nothing() {
        let mut counts = counted(&[1, 2]);
        let _armed = crate::allocation_failure::arm(0);
        let error = counts.reserve_one().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::OutOfMemory);
        assert_eq!(
            error.message(),
            "could not allocate a shard's count of rows by timestamp"
        );
        assert_eq!(counts.counts, [(1, 1), (2, 1)]);
    }
}
