//! The upstream-design peer, written after FBGEMM's `DramKVInferenceEmbedding`
//! (`InferenceSynchronizedShardedMap`): per shard one reader-writer lock around
//! a Swiss-table map from id to a heap block holding a small header (the
//! timestamp) and the row; a batch is split into per-shard index lists
//! (allocated per call, like upstream's `shard_input`), each shard is read under
//! its read lock, and the hits and misses go to two separate atomic counters.
//!
//! Per CPU-second it is kinder to itself than upstream in two ways: the shards
//! of a batch are read on the calling thread (no executor hop per shard), and
//! there are no clock reads per id. The hop is also how upstream spreads one
//! caller's batch over idle CPUs, which the peer does not (see BENCHMARKS.md).
//! Upstream updates existing rows in place under the read lock (the torn-row
//! bug); safe Rust can't, so the peer takes the write lock for that.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use hashbrown::hash_map::Entry;
use hashbrown::HashMap;
use parking_lot::RwLock;

use crate::contender::Contender;

/// The block header: the publish timestamp, padded to keep the row 8-aligned.
pub const HEADER: usize = 8;

type Map = HashMap<i64, Box<[u8]>, ahash::RandomState>;

pub struct UpstreamPeer {
    row_bytes: usize,
    shard_hasher: ahash::RandomState,
    shard_mask: u64,
    shards: Box<[CachePadded<RwLock<Map>>]>,
    read_hit_count: AtomicU64,
    read_miss_count: AtomicU64,
}

pub fn timestamp_of(block: &[u8]) -> u32 {
    u32::from_le_bytes(block[..4].try_into().expect("a block has a header"))
}

/// A block written once: the header (timestamp, then padding) and the row.
/// Every byte is written here, so clearing it first would be work the design
/// does not need.
pub fn new_block(row: &[u8], timestamp: u32) -> Box<[u8]> {
    let mut block = Vec::with_capacity(HEADER + row.len());
    block.extend_from_slice(&timestamp.to_le_bytes());
    block.resize(HEADER, 0);
    block.extend_from_slice(row);
    block.into_boxed_slice()
}

impl UpstreamPeer {
    pub fn new(row_bytes: usize, shards: usize) -> UpstreamPeer {
        let shards = shards.next_power_of_two();
        UpstreamPeer {
            row_bytes,
            shard_hasher: ahash::RandomState::new(),
            shard_mask: shards as u64 - 1,
            shards: (0..shards)
                .map(|_| CachePadded::new(RwLock::new(Map::default())))
                .collect(),
            read_hit_count: AtomicU64::new(0),
            read_miss_count: AtomicU64::new(0),
        }
    }

    fn shard_input(&self, ids: &[i64]) -> Vec<Vec<u32>> {
        let mut groups = vec![Vec::new(); self.shards.len()];
        for (position, &id) in ids.iter().enumerate() {
            let shard = (self.shard_hasher.hash_one(id) & self.shard_mask) as usize;
            groups[shard].push(position as u32);
        }
        groups
    }
}

impl Contender for UpstreamPeer {
    fn name(&self) -> &'static str {
        "upstream_peer"
    }

    fn reserve(&mut self, rows: usize) {
        let share = rows.div_ceil(self.shards.len());
        for shard in self.shards.iter_mut() {
            shard.get_mut().reserve(share);
        }
    }

    fn publish(&self, ids: &[i64], rows: &[u8], timestamp: u32) {
        let row_bytes = self.row_bytes;
        for (shard, positions) in self.shard_input(ids).iter().enumerate() {
            if positions.is_empty() {
                continue;
            }
            let mut map = self.shards[shard].write();
            for &position in positions {
                let p = position as usize;
                let row = &rows[p * row_bytes..][..row_bytes];
                // One probe per id, found or not.
                match map.entry(ids[p]) {
                    Entry::Occupied(mut stored) => {
                        let block = stored.get_mut();
                        block[..4].copy_from_slice(&timestamp.to_le_bytes());
                        block[HEADER..].copy_from_slice(row);
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(new_block(row, timestamp));
                    }
                }
            }
        }
    }

    /// As upstream's eviction loop: finds a shard's victims with readers let
    /// in (upstream walks its block pool under the pool's mutex, which lookups
    /// do not take), then write-locks the shard only to erase them.
    fn evict_older_than(&self, threshold: u32) -> u64 {
        let mut evicted = 0;
        for shard in self.shards.iter() {
            let victims: Vec<i64> = shard
                .read()
                .iter()
                .filter(|(_, block)| timestamp_of(block) < threshold)
                .map(|(&id, _)| id)
                .collect();
            let mut map = shard.write();
            for id in &victims {
                map.remove(id);
            }
            evicted += victims.len() as u64;
        }
        evicted
    }

    fn read_counters(&self) -> Option<(u64, u64)> {
        Some((
            self.read_hit_count.load(Ordering::Relaxed),
            self.read_miss_count.load(Ordering::Relaxed),
        ))
    }

    fn get(&self, ids: &[i64], _slots: &[u32], out: &mut [u8]) -> u64 {
        let row_bytes = self.row_bytes;
        let (mut hits, mut misses) = (0, 0);
        for (shard, positions) in self.shard_input(ids).iter().enumerate() {
            if positions.is_empty() {
                continue;
            }
            let map = self.shards[shard].read();
            for &position in positions {
                let p = position as usize;
                let target = &mut out[p * row_bytes..][..row_bytes];
                match map.get(&ids[p]) {
                    Some(block) => {
                        target.copy_from_slice(&block[HEADER..]);
                        hits += 1;
                    }
                    None => {
                        target.fill(0);
                        misses += 1;
                    }
                }
            }
        }
        self.read_hit_count.fetch_add(hits, Ordering::Relaxed);
        self.read_miss_count.fetch_add(misses, Ordering::Relaxed);
        hits
    }
}
