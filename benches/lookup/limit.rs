//! The limit: the same rows in one dense array on transparent huge pages,
//! gathered by precomputed row numbers. No key lookup, no lock, no counter:
//! what a lookup would cost if finding the row were free.

use std::sync::Arc;

use crate::contender::Contender;
use crate::huge_map::HugeMap;
use crate::prefetch::{prefetch_row, row_lines};
use crate::workload::MISS;

/// Row lines asked for ahead of the row being copied, as kvzch keeps in flight:
/// 4 to 16 rows ahead, 8 at 256 bytes (16 measured slower).
const LINES_AHEAD: usize = 32;

/// Rows a gather asks for ahead of the one it copies.
pub fn rows_ahead(row_bytes: usize) -> usize {
    (LINES_AHEAD / row_lines(row_bytes)).clamp(4, 16)
}

pub struct Limit {
    /// Shared with the limits made by `share`, which read the same rows.
    rows: Arc<HugeMap>,
    row_bytes: usize,
}

impl Limit {
    pub fn new(rows: usize, row_bytes: usize) -> Limit {
        Limit {
            rows: Arc::new(HugeMap::new(rows * row_bytes)),
            row_bytes,
        }
    }

    /// Another limit over the same rows, once they are filled: a study that
    /// finds one set of rows through many indexes holds them once.
    // The layout study's; the lookup suite's contenders hold rows of their own.
    #[allow(dead_code)]
    pub fn share(&self) -> Limit {
        Limit {
            rows: Arc::clone(&self.rows),
            row_bytes: self.row_bytes,
        }
    }

    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// The row at dense row number `slot`.
    pub fn row(&self, slot: u32) -> &[u8] {
        &self.rows.bytes()[slot as usize * self.row_bytes..][..self.row_bytes]
    }
}

impl Contender for Limit {
    fn name(&self) -> &'static str {
        "limit"
    }

    fn fill(&mut self, _ids: &[i64], slots: &[u32], rows: &[u8], _timestamp: u32) {
        let row_bytes = self.row_bytes;
        let table = Arc::get_mut(&mut self.rows)
            .expect("a limit's rows are filled before they are shared")
            .bytes_mut();
        for (&slot, row) in slots.iter().zip(rows.chunks_exact(row_bytes)) {
            table[slot as usize * row_bytes..][..row_bytes].copy_from_slice(row);
        }
    }

    fn live_publish(&self) -> bool {
        false
    }

    fn publish(&self, _ids: &[i64], _rows: &[u8], _timestamp: u32) {
        panic!("the limit is a plain array: it cannot be published to while read");
    }

    fn evict_older_than(&self, _threshold: u32) -> u64 {
        panic!("the limit is a plain array: it has no timestamps");
    }

    fn get(&self, _ids: &[i64], slots: &[u32], out: &mut [u8]) -> u64 {
        let row_bytes = self.row_bytes;
        let distance = rows_ahead(row_bytes);
        for &slot in slots.iter().take(distance) {
            if slot != MISS {
                prefetch_row(self.row(slot));
            }
        }
        let mut hits = 0;
        for (j, (&slot, target)) in slots
            .iter()
            .zip(out.chunks_exact_mut(row_bytes))
            .enumerate()
        {
            if let Some(&ahead) = slots.get(j + distance) {
                if ahead != MISS {
                    prefetch_row(self.row(ahead));
                }
            }
            if slot == MISS {
                target.fill(0);
            } else {
                target.copy_from_slice(self.row(slot));
                hits += 1;
            }
        }
        hits
    }
}
