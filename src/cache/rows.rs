//! The per-shard row arena: fixed-width rows in chunks, each row with its
//! publish timestamp.
//!
//! Chunks never move, so growing the arena copies no rows and a reader's view
//! of a row is stable while it holds the shard's read lock. The first chunks are
//! small and double (a small table stays small); past `LARGE_CHUNK_BYTES` every
//! chunk has the same size, so the unused tail is bounded by one chunk. Large
//! chunks live on transparent huge pages as far as they span whole ones (see
//! `huge_pages`), which removes most TLB misses from random row reads. A chunk
//! holds a power of two of rows, so a large one holds at least a huge page's
//! worth: for a width that does not divide 2 MiB it spans one or more whole
//! huge pages and a tail on small pages.
//!
//! Freed slots form a linked list threaded through their timestamp words, so the
//! free list costs no memory of its own.

use super::fallible::reserve_to;
use super::index::SLOT_LIMIT;
use super::Error;
use crate::huge_pages::HugePageArray;
use crate::prefetch::prefetch;

const FIRST_CHUNK_BYTES: usize = 4 << 10;
const LARGE_CHUNK_BYTES: usize = 2 << 20;
const NO_FREE_SLOT: u32 = u32::MAX;

struct Chunk {
    rows: HugePageArray<u8>,
    stamps: Box<[u32]>,
}

/// Chunks 0 and 1 hold `first` rows, chunk `k` up to `small` (`large` over
/// `first`, a power of two) `first << (k - 1)`, and every later chunk `large`,
/// all powers of two: the small chunks together hold `large` rows, so a table
/// stays small while it is, and the slots number the rows of all chunks
/// densely, in order. Dense slots stay below the most rows the shard ever held
/// at once (the arena hands out freed slots first), which the index's entries
/// count on; and as every large chunk starts at a multiple of `large`, locating
/// a row in one is a shift and a mask.
#[derive(Clone, Copy)]
struct ChunkPlan {
    first_shift: u32,
    large_shift: u32,
}

impl ChunkPlan {
    fn for_row_bytes(row_bytes: usize) -> ChunkPlan {
        ChunkPlan {
            first_shift: (FIRST_CHUNK_BYTES / row_bytes).max(1).ilog2(),
            // The fewest rows, a power of two, that span a whole huge page: with
            // fewer, a width that does not divide 2 MiB (384 bytes, say) would get
            // chunks smaller than a huge page, and its rows would all stay on
            // small pages (measured: lookups of 384-byte rows 1.21-1.23x faster
            // with chunks that span one).
            large_shift: LARGE_CHUNK_BYTES
                .div_ceil(row_bytes)
                .next_power_of_two()
                .ilog2(),
        }
    }

    fn rows_in_chunk(self, chunk: usize) -> usize {
        let shift =
            (self.first_shift as usize + chunk.saturating_sub(1)).min(self.large_shift as usize);
        1 << shift
    }

    /// The last small chunk: `large` over `first` (a power of two) chunks
    /// after chunk 0.
    fn small_chunks(self) -> usize {
        (self.large_shift - self.first_shift) as usize
    }

    /// The first slot of `chunk`.
    fn start(self, chunk: usize) -> usize {
        match chunk {
            0 => 0,
            _ if chunk <= self.small_chunks() + 1 => 1 << (self.first_shift as usize + chunk - 1),
            _ => (chunk - self.small_chunks()) << self.large_shift,
        }
    }

    /// Chunks whose every slot stays below `SLOT_LIMIT`.
    fn max_chunks(self) -> usize {
        self.small_chunks() + (SLOT_LIMIT as usize >> self.large_shift)
    }

    fn slot(self, chunk: usize, offset: usize) -> u32 {
        (self.start(chunk) + offset) as u32
    }

    /// Chunk and offset of `slot`. In a large chunk, where all but a small
    /// table's rows are, a shift, an addition and a mask: a lookup's row
    /// prefetch waits on it. (Small chunks numbered from `first` on, so that
    /// a large chunk's slots began past a multiple of `large` and a locate
    /// subtracted before its shift, ran `uniform_hit` at 0.85x-0.96x of a
    /// build without small chunks, whose locate was a shift and a mask, in
    /// six runs alternating with it. This numbering ran at 0.91x-1.00x of
    /// it in three.)
    #[inline]
    fn locate(self, slot: u32) -> (usize, usize) {
        let slot = slot as usize;
        if slot >> self.large_shift != 0 {
            return (
                self.small_chunks() + (slot >> self.large_shift),
                slot & ((1 << self.large_shift) - 1),
            );
        }
        locate_small(self.first_shift, slot)
    }
}

/// [`ChunkPlan::locate`] in the small chunks, where chunk `k > 0` holds the
/// slots from `first << (k - 1)` to twice that.
#[cold]
fn locate_small(first_shift: u32, slot: usize) -> (usize, usize) {
    if slot >> first_shift == 0 {
        return (0, slot);
    }
    let top = slot.ilog2();
    ((top - first_shift) as usize + 1, slot - (1 << top))
}

pub(crate) struct RowArena {
    row_bytes: usize,
    plan: ChunkPlan,
    chunks: Vec<Chunk>,
    /// Rows in all chunks.
    capacity: usize,
    /// Rows handed out at least once; they fill the chunks in order, and the
    /// next one is at `fresh_offset` of chunk `fresh_chunk`.
    fresh_used: usize,
    fresh_chunk: usize,
    fresh_offset: usize,
    free_head: u32,
    free_count: usize,
    memory_bytes: usize,
}

impl RowArena {
    pub(crate) fn new(row_bytes: usize) -> RowArena {
        RowArena {
            row_bytes,
            plan: ChunkPlan::for_row_bytes(row_bytes),
            chunks: Vec::new(),
            capacity: 0,
            fresh_used: 0,
            fresh_chunk: 0,
            fresh_offset: 0,
            free_head: NO_FREE_SLOT,
            free_count: 0,
            memory_bytes: 0,
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes + self.chunks.capacity() * std::mem::size_of::<Chunk>()
    }

    fn chunk_bytes(&self, chunk: usize) -> usize {
        self.plan.rows_in_chunk(chunk) * (self.row_bytes + std::mem::size_of::<u32>())
    }

    /// Whether `additional` rows can be allocated without a new chunk.
    pub(crate) fn has_room_for(&self, additional: usize) -> bool {
        self.spare_slots() >= additional
    }

    fn spare_slots(&self) -> usize {
        self.free_count + (self.capacity - self.fresh_used)
    }

    /// Chunks to add so that `additional` rows can be allocated.
    fn chunks_needed(&self, additional: usize) -> Range {
        let mut spare = self.spare_slots();
        let mut end = self.chunks.len();
        while spare < additional {
            spare += self.plan.rows_in_chunk(end);
            end += 1;
        }
        Range {
            start: self.chunks.len(),
            end,
        }
    }

    pub(crate) fn memory_bytes_after_reserve(&self, additional: usize) -> usize {
        let added = self.chunks_needed(additional);
        let new_bytes: usize = (added.start..added.end).map(|c| self.chunk_bytes(c)).sum();
        let table = added.end.max(self.chunks.capacity()) * std::mem::size_of::<Chunk>();
        self.memory_bytes + new_bytes + table
    }

    /// Fails, as `reserve` would, when `additional` more rows would pass what
    /// the arena can address.
    pub(crate) fn check_addressable(&self, additional: usize) -> Result<(), Error> {
        self.addressable_chunks_for(additional).map(drop)
    }

    /// The chunks to add for `additional` rows, when their slots stay
    /// addressable.
    fn addressable_chunks_for(&self, additional: usize) -> Result<Range, Error> {
        let added = self.chunks_needed(additional);
        if added.end > self.plan.max_chunks() {
            return Err(Error::capacity_exceeded(format!(
                "a shard holds at most {} rows of this width",
                self.plan.max_chunks() << self.plan.large_shift
            )));
        }
        Ok(added)
    }

    /// Makes room so that `additional` rows can be allocated without allocating
    /// memory; on failure the arena holds the same rows.
    pub(crate) fn reserve(&mut self, additional: usize) -> Result<(), Error> {
        let added = self.addressable_chunks_for(additional)?;
        reserve_to(&mut self.chunks, added.end, || "chunk table".to_string())?;
        for chunk in added.start..added.end {
            let rows = self.plan.rows_in_chunk(chunk);
            let mut stamps = Vec::new();
            reserve_to(&mut stamps, rows, || format!("timestamps of {rows} rows"))?;
            stamps.resize(rows, 0);
            self.chunks.push(Chunk {
                rows: HugePageArray::zeroed(rows * self.row_bytes)
                    .ok_or_else(|| Error::out_of_memory(format!("row chunk of {rows} rows")))?,
                stamps: stamps.into_boxed_slice(),
            });
            self.capacity += rows;
            self.memory_bytes += self.chunk_bytes(chunk);
        }
        Ok(())
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
            self.fresh_used < self.capacity,
            "row allocation without a reservation"
        );
        let slot = self.plan.slot(self.fresh_chunk, self.fresh_offset);
        self.fresh_used += 1;
        self.fresh_offset += 1;
        if self.fresh_offset == self.plan.rows_in_chunk(self.fresh_chunk) {
            self.fresh_chunk += 1;
            self.fresh_offset = 0;
        }
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
        let (chunk, offset) = self.plan.locate(slot);
        let start = offset * self.row_bytes;
        &self.chunks[chunk].rows[start..start + self.row_bytes]
    }

    pub(crate) fn row_mut(&mut self, slot: u32) -> &mut [u8] {
        let (chunk, offset) = self.plan.locate(slot);
        let start = offset * self.row_bytes;
        &mut self.chunks[chunk].rows[start..start + self.row_bytes]
    }

    pub(crate) fn stamp(&self, slot: u32) -> u32 {
        let (chunk, offset) = self.plan.locate(slot);
        self.chunks[chunk].stamps[offset]
    }

    /// Asks for the line of `slot`'s stamp.
    pub(crate) fn prefetch_stamp(&self, slot: u32) {
        let (chunk, offset) = self.plan.locate(slot);
        prefetch(&self.chunks[chunk].stamps[offset]);
    }

    pub(crate) fn stamp_mut(&mut self, slot: u32) -> &mut u32 {
        let (chunk, offset) = self.plan.locate(slot);
        &mut self.chunks[chunk].stamps[offset]
    }
}

struct Range {
    start: usize,
    end: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_chunks_are_the_fewest_rows_that_span_a_huge_page() {
        for row_bytes in [1, 3, 64, 200, 256, 384, 1000, 4096, 65536] {
            let plan = ChunkPlan::for_row_bytes(row_bytes);
            let rows = plan.rows_in_chunk(40);
            assert!(
                rows * row_bytes >= LARGE_CHUNK_BYTES,
                "row_bytes {row_bytes}"
            );
            assert!(
                rows / 2 * row_bytes < LARGE_CHUNK_BYTES,
                "row_bytes {row_bytes}"
            );
        }
    }

    #[test]
    fn chunk_plan_locates_every_slot_it_hands_out() {
        for row_bytes in [1, 3, 64, 256, 1000, 65536] {
            let plan = ChunkPlan::for_row_bytes(row_bytes);
            assert!(plan.rows_in_chunk(0) <= plan.rows_in_chunk(1));
            assert_eq!(plan.rows_in_chunk(40), 1 << plan.large_shift);
            for chunk in [0, 1, 2, 7, 30, plan.max_chunks() - 1] {
                for offset in [0, plan.rows_in_chunk(chunk) - 1] {
                    let slot = plan.slot(chunk, offset);
                    assert!(slot < SLOT_LIMIT, "row_bytes {row_bytes} chunk {chunk}");
                    assert_eq!(plan.locate(slot), (chunk, offset));
                }
            }
            // Dense: each chunk's first slot follows the last one's last.
            let mut next = 0;
            for chunk in (0..40).chain(plan.max_chunks() - 3..plan.max_chunks()) {
                if chunk > 40 {
                    next = plan.slot(chunk, 0);
                }
                assert_eq!(
                    plan.slot(chunk, 0),
                    next,
                    "row_bytes {row_bytes} chunk {chunk}"
                );
                next = plan.slot(chunk, plan.rows_in_chunk(chunk) - 1) + 1;
            }
            let last = plan.max_chunks() - 1;
            assert!(plan.slot(last, plan.rows_in_chunk(last) - 1) < SLOT_LIMIT);
            assert!(plan.start(last + 1) + plan.rows_in_chunk(last + 1) > SLOT_LIMIT as usize);
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
}
