//! The per-shard row arena: fixed-width rows in one array, each row with its
//! publish timestamp in another.
//!
//! A lookup finds a row at `slot * row_bytes` from the array's start: nothing
//! to load between the index's answer and the row's prefetch. (Rows in chunks
//! of a huge page each, as the arena had them before, took a load of the
//! chunk's address there, and the first chunks, smaller than a huge page, sat
//! on small pages: at 4M rows of 256 bytes, lookups ran 1.10x-1.13x faster with
//! one array.) The arrays grow under the shard's write lock, so a reader's
//! view of a row is stable while it holds the read lock; growing keeps the rows
//! and, past a huge page, moves their pages rather than copying them (see
//! `HugePageVec`). Capacity doubles from `FIRST_BYTES` of rows while the array
//! is smaller than a huge page, so a small table stays small, and then grows a
//! huge page's worth of rows at a time (`large_rows`, a power of two), so the
//! unused tail is bounded by that.
//!
//! Freed slots form a linked list threaded through their timestamp words, so the
//! free list costs no memory of its own.

use super::index::SLOT_LIMIT;
use super::Error;
use crate::huge_pages::{HugePageVec, HUGE_PAGE_BYTES};
use crate::prefetch::prefetch;

const FIRST_BYTES: usize = 4 << 10;
const NO_FREE_SLOT: u32 = u32::MAX;

/// How the arena's capacity grows: powers of two from `first_rows` up to
/// `large_rows`, then multiples of `large_rows`.
#[derive(Clone, Copy)]
struct CapacityPlan {
    first_rows: usize,
    /// The fewest rows, a power of two, that span a whole huge page.
    large_rows: usize,
}

impl CapacityPlan {
    fn for_row_bytes(row_bytes: usize) -> CapacityPlan {
        CapacityPlan {
            first_rows: 1 << (FIRST_BYTES / row_bytes).max(1).ilog2(),
            large_rows: HUGE_PAGE_BYTES.div_ceil(row_bytes).next_power_of_two(),
        }
    }

    /// The capacity the arena takes to hold `rows` rows.
    fn capacity_for(self, rows: usize) -> usize {
        if rows <= self.large_rows {
            rows.next_power_of_two().max(self.first_rows)
        } else {
            rows.next_multiple_of(self.large_rows)
        }
    }

    /// The most rows an arena of this width holds: every slot is below
    /// `SLOT_LIMIT`.
    fn max_rows(self) -> usize {
        SLOT_LIMIT as usize / self.large_rows * self.large_rows
    }
}

pub(crate) struct RowArena {
    row_bytes: usize,
    plan: CapacityPlan,
    /// `capacity * row_bytes` bytes.
    rows: HugePageVec<u8>,
    /// At least `capacity` stamps: a growth that failed after growing them may
    /// have left more.
    stamps: HugePageVec<u32>,
    /// Rows handed out at least once: the next fresh slot.
    fresh_used: usize,
    free_head: u32,
    free_count: usize,
}

impl RowArena {
    pub(crate) fn new(row_bytes: usize) -> RowArena {
        RowArena {
            row_bytes,
            plan: CapacityPlan::for_row_bytes(row_bytes),
            rows: HugePageVec::new(),
            stamps: HugePageVec::new(),
            fresh_used: 0,
            free_head: NO_FREE_SLOT,
            free_count: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.rows.len() / self.row_bytes
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.rows.len() + std::mem::size_of_val(&*self.stamps)
    }

    /// Whether `additional` rows can be allocated without growing.
    pub(crate) fn has_room_for(&self, additional: usize) -> bool {
        self.spare_slots() >= additional
    }

    fn spare_slots(&self) -> usize {
        self.free_count + (self.capacity() - self.fresh_used)
    }

    /// The capacity that holds `additional` more rows.
    fn capacity_after(&self, additional: usize) -> usize {
        match additional.checked_sub(self.spare_slots()) {
            Some(missing) if missing > 0 => self.plan.capacity_for(self.capacity() + missing),
            _ => self.capacity(),
        }
    }

    pub(crate) fn memory_bytes_after_reserve(&self, additional: usize) -> usize {
        let capacity = self.capacity_after(additional);
        capacity * self.row_bytes + capacity.max(self.stamps.len()) * std::mem::size_of::<u32>()
    }

    /// The most rows the arena can address.
    pub(crate) fn max_rows(&self) -> usize {
        self.plan.max_rows()
    }

    /// Fails, as `reserve` would, when `additional` more rows would pass what
    /// the arena can address.
    pub(crate) fn check_addressable(&self, additional: usize) -> Result<(), Error> {
        self.addressable_capacity_after(additional).map(drop)
    }

    /// The capacity that holds `additional` more rows, when its slots stay
    /// addressable.
    fn addressable_capacity_after(&self, additional: usize) -> Result<usize, Error> {
        let capacity = self.capacity_after(additional);
        if capacity > self.plan.max_rows() {
            return Err(Error::capacity_exceeded(format!(
                "a shard holds at most {} rows of this width",
                self.plan.max_rows()
            )));
        }
        Ok(capacity)
    }

    /// Makes room so that `additional` rows can be allocated without allocating
    /// memory; on failure the arena holds the same rows.
    pub(crate) fn reserve(&mut self, additional: usize) -> Result<(), Error> {
        let capacity = self.addressable_capacity_after(additional)?;
        if capacity == self.capacity() {
            return Ok(());
        }
        let failed = || Error::out_of_memory(format!("memory for {capacity} rows"));
        if self.stamps.len() < capacity {
            self.stamps.grow_to(capacity).ok_or_else(failed)?;
        }
        self.rows
            .grow_to(capacity * self.row_bytes)
            .ok_or_else(failed)
    }

    /// Takes a free slot; the caller has reserved room.
    pub(crate) fn allocate(&mut self) -> u32 {
        if self.free_head != NO_FREE_SLOT {
            let slot = self.free_head;
            self.free_head = *self.stamp_mut(slot);
            self.free_count -= 1;
            return slot;
        }
        assert!(
            self.fresh_used < self.capacity(),
            "row allocation without a reservation"
        );
        let slot = self.fresh_used as u32;
        self.fresh_used += 1;
        slot
    }

    pub(crate) fn release(&mut self, slot: u32) {
        let head = self.free_head;
        *self.stamp_mut(slot) = head;
        self.free_head = slot;
        self.free_count += 1;
    }

    #[inline]
    pub(crate) fn row(&self, slot: u32) -> &[u8] {
        &self.rows[slot as usize * self.row_bytes..][..self.row_bytes]
    }

    pub(crate) fn row_mut(&mut self, slot: u32) -> &mut [u8] {
        &mut self.rows[slot as usize * self.row_bytes..][..self.row_bytes]
    }

    pub(crate) fn stamp(&self, slot: u32) -> u32 {
        self.stamps[slot as usize]
    }

    /// Asks for the line of `slot`'s stamp.
    pub(crate) fn prefetch_stamp(&self, slot: u32) {
        prefetch(&self.stamps[slot as usize]);
    }

    pub(crate) fn stamp_mut(&mut self, slot: u32) -> &mut u32 {
        &mut self.stamps[slot as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn large_steps_are_the_fewest_rows_that_span_a_huge_page() {
        for row_bytes in [1, 3, 64, 200, 256, 384, 1000, 4096, 65536] {
            let plan = CapacityPlan::for_row_bytes(row_bytes);
            let rows = plan.large_rows;
            assert!(rows * row_bytes >= HUGE_PAGE_BYTES, "row_bytes {row_bytes}");
            assert!(
                rows / 2 * row_bytes < HUGE_PAGE_BYTES,
                "row_bytes {row_bytes}"
            );
        }
    }

    #[test]
    fn capacity_doubles_to_a_huge_page_then_grows_by_huge_pages() {
        for row_bytes in [1, 3, 64, 256, 1000, 65536] {
            let plan = CapacityPlan::for_row_bytes(row_bytes);
            assert_eq!(plan.capacity_for(1), plan.first_rows);
            assert!(plan.first_rows * row_bytes <= FIRST_BYTES.max(row_bytes));
            let mut capacity = plan.first_rows;
            while capacity < plan.large_rows {
                assert_eq!(plan.capacity_for(capacity + 1), 2 * capacity);
                capacity *= 2;
            }
            assert_eq!(capacity, plan.large_rows);
            for steps in [1, 2, 7] {
                let rows = steps * plan.large_rows;
                assert_eq!(plan.capacity_for(rows), rows, "row_bytes {row_bytes}");
                assert_eq!(plan.capacity_for(rows + 1), rows + plan.large_rows);
            }
            assert!(plan.max_rows() <= SLOT_LIMIT as usize);
            assert!(plan.max_rows() + plan.large_rows > SLOT_LIMIT as usize);
        }
    }

    #[test]
    fn an_arena_addresses_up_to_its_max_rows_and_no_further() {
        // The last capacity step ends on `max_rows` exactly: a publish that
        // needs it must be let through, one more row refused.
        for row_bytes in [1, 256, 65536] {
            let arena = RowArena::new(row_bytes);
            assert!(arena.check_addressable(arena.max_rows()).is_ok());
            let refused = arena.check_addressable(arena.max_rows() + 1);
            assert_eq!(
                refused.map_err(|error| error.kind()),
                Err(ErrorKind::CapacityExceeded),
                "row_bytes {row_bytes}"
            );
        }
    }

    #[test]
    fn rows_and_stamps_round_trip_and_slots_are_reused() {
        let mut arena = RowArena::new(3);
        arena.reserve(5000).unwrap();
        let before = arena.memory_bytes();
        let slots: Vec<u32> = (0..5000).map(|_| arena.allocate()).collect();
        for &slot in &slots {
            arena
                .row_mut(slot)
                .copy_from_slice(&[slot as u8, (slot >> 8) as u8, 7]);
            *arena.stamp_mut(slot) = slot * 2;
        }
        for &slot in &slots {
            assert_eq!(arena.row(slot), [slot as u8, (slot >> 8) as u8, 7]);
            assert_eq!(arena.stamp(slot), slot * 2);
        }
        for &slot in &slots[..100] {
            arena.release(slot);
        }
        arena.reserve(100).unwrap();
        let mut again: Vec<u32> = (0..100).map(|_| arena.allocate()).collect();
        again.sort_unstable();
        let mut released = slots[..100].to_vec();
        released.sort_unstable();
        assert_eq!(again, released);
        assert_eq!(arena.memory_bytes(), before);
    }

    /// Rows and stamps written in small steps survive every growth: the
    /// copies below a huge page and the moves past it.
    #[test]
    fn growing_keeps_every_row_and_stamp() {
        let row_bytes = 256;
        let mut arena = RowArena::new(row_bytes);
        let rows = 5 * arena.plan.large_rows + 3;
        for slot in 0..rows as u32 {
            arena.reserve(1).unwrap();
            assert_eq!(arena.allocate(), slot);
            arena.row_mut(slot).fill(slot as u8 ^ 0x5a);
            arena.row_mut(slot)[..4].copy_from_slice(&slot.to_le_bytes());
            *arena.stamp_mut(slot) = !slot;
        }
        assert_eq!(arena.capacity(), 6 * arena.plan.large_rows);
        for slot in 0..rows as u32 {
            let row = arena.row(slot);
            assert_eq!(row[..4], slot.to_le_bytes());
            assert!(row[4..].iter().all(|&byte| byte == slot as u8 ^ 0x5a));
            assert_eq!(arena.stamp(slot), !slot);
        }
    }

    #[test]
    fn projected_memory_matches_reserved_memory() {
        let mut arena = RowArena::new(256);
        for additional in [1, 15, 16, 17, 5000, 100_000] {
            let projected = arena.memory_bytes_after_reserve(additional);
            arena.reserve(additional).unwrap();
            assert_eq!(arena.memory_bytes(), projected);
            for _ in 0..additional {
                arena.allocate();
            }
        }
    }

    #[test]
    fn a_growth_that_cannot_allocate_keeps_every_row() {
        let mut arena = RowArena::new(64);
        arena.reserve(arena.plan.large_rows).unwrap();
        for slot in 0..arena.plan.large_rows as u32 {
            assert_eq!(arena.allocate(), slot);
            arena.row_mut(slot)[..4].copy_from_slice(&slot.to_le_bytes());
        }
        let memory = arena.memory_bytes();
        // The stamps' growth fails, then the rows' after the stamps' succeeded:
        // both need a larger mapping.
        for successes in [0, 1] {
            let _armed = crate::allocation_failure::arm(successes);
            let error = arena.reserve(1).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::OutOfMemory);
            assert!(!arena.has_room_for(1));
        }
        assert!(arena.memory_bytes() >= memory);
        for slot in 0..arena.plan.large_rows as u32 {
            assert_eq!(arena.row(slot)[..4], slot.to_le_bytes());
        }
        arena.reserve(1).unwrap();
        assert_eq!(arena.allocate(), arena.plan.large_rows as u32);
    }
}
