//! The key space, the row contents and the id streams every contender is fed.
//!
//! Key index `i` (a dense number) maps to the id `id(i)` through a bijective
//! mixer, so ids are distinct and scattered over the `i64` range the way hashed
//! feature ids are. Indexes `0..rows` are stored, at row `i` of the dense limit;
//! `rows..keys` (keys = 1.1 x rows) are never stored and are the Zipf stream's
//! misses; indexes from `keys` on are the stale rows a republish evicts.
//!
//! A stream is a pool of batches generated once, with each id's dense row
//! number (`MISS` when not stored) and each batch's expected hit count, so the
//! limit gathers the same rows without a lookup and every contender's answer
//! can be checked against it.

pub const MISS: u32 = u32::MAX;
/// The smallest row that holds the self-checking header (id and version) and a
/// tag byte after it.
pub const MIN_ROW_BYTES: usize = 16;

const ID_SALT: u64 = 0x6b76_7a63_6862_656e;

/// SplitMix64's finalizer: a bijection on `u64` that scatters neighbours.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// SplitMix64: small, fast and good enough for generating workloads.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is far below 2^-32).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Universe {
    /// Stored rows.
    pub rows: usize,
    /// Stored plus never-stored keys: the Zipf stream's key space.
    pub keys: usize,
    pub row_bytes: usize,
}

impl Universe {
    pub fn new(rows: usize, row_bytes: usize) -> Universe {
        Universe {
            rows,
            keys: rows + rows / 10,
            row_bytes,
        }
    }

    pub fn id(&self, index: u64) -> i64 {
        mix(index ^ ID_SALT) as i64
    }

    /// The `k`th stale id: stored before a republish, absent from it, evicted
    /// after it, and never looked up.
    pub fn stale_id(&self, k: u64) -> i64 {
        self.id(self.keys as u64 + k)
    }

    /// Writes the row of `id` as published at `version`: the id, the version,
    /// then a tag byte derived from the id.
    pub fn write_row(&self, id: i64, version: u32, row: &mut [u8]) {
        row.fill(tag(id));
        row[..8].copy_from_slice(&id.to_le_bytes());
        row[8..12].copy_from_slice(&version.to_le_bytes());
    }

    /// Whether `row` is a whole row of `id` (of any version).
    pub fn row_is_of(&self, id: i64, row: &[u8]) -> bool {
        row[..8] == id.to_le_bytes() && row[12..].iter().all(|&b| b == tag(id))
    }
}

fn tag(id: i64) -> u8 {
    (mix(id as u64) >> 56) as u8 | 1
}

/// A pool of lookup batches, cycled through by the readers.
pub struct Pool {
    pub name: &'static str,
    pub batch: usize,
    pub row_bytes: usize,
    pub ids: Vec<i64>,
    /// Dense row number per id, `MISS` when the id is not stored.
    pub slots: Vec<u32>,
    /// Expected hits per batch.
    pub hits: Vec<u32>,
}

impl Pool {
    fn from_indexes(
        name: &'static str,
        universe: &Universe,
        batch: usize,
        indexes: impl Iterator<Item = u64>,
    ) -> Pool {
        let mut ids = Vec::new();
        let mut slots = Vec::new();
        for index in indexes {
            ids.push(universe.id(index));
            slots.push(if index < universe.rows as u64 {
                index as u32
            } else {
                MISS
            });
        }
        let hits = slots
            .chunks(batch)
            .map(|chunk| chunk.iter().filter(|&&s| s != MISS).count() as u32)
            .collect();
        Pool {
            name,
            batch,
            row_bytes: universe.row_bytes,
            ids,
            slots,
            hits,
        }
    }

    pub fn batches(&self) -> usize {
        self.hits.len()
    }

    pub fn batch(&self, b: usize) -> (&[i64], &[u32], u64) {
        let range = b * self.batch..(b + 1) * self.batch;
        (
            &self.ids[range.clone()],
            &self.slots[range],
            u64::from(self.hits[b]),
        )
    }

    pub fn miss_fraction(&self) -> f64 {
        let hits: u64 = self.hits.iter().map(|&h| u64::from(h)).sum();
        1.0 - hits as f64 / self.ids.len() as f64
    }
}

/// Ids drawn uniformly (with replacement) from the stored ones: all hits.
pub fn uniform(universe: &Universe, batch: usize, batches: usize, seed: u64) -> Pool {
    let mut rng = Rng::new(seed);
    let rows = universe.rows as u64;
    Pool::from_indexes(
        "uniform_hit",
        universe,
        batch,
        (0..batch * batches).map(|_| rng.below(rows)),
    )
}

/// Zipf(`exponent`) over the whole key space (stored and never-stored keys).
/// One popularity rank in 11 is a never-stored key (ranks 3, 14, 25, ...
/// counting from 0), so about 1/11 of the traffic misses by construction: a
/// random choice of the absent keys would make the miss rate swing between
/// about 6% and 17% with the seed, depending only on whether one of the few
/// head keys is absent. Ranks map to keys through random permutations of the
/// stored and of the absent keys, so popular keys are scattered over the
/// table and the shards.
pub fn zipf(universe: &Universe, batch: usize, batches: usize, exponent: f64, seed: u64) -> Pool {
    let (rows, keys) = (universe.rows as u32, universe.keys as u32);
    let mut rng = Rng::new(seed);
    let mut shuffled = |range: std::ops::Range<u32>| {
        let mut keys: Vec<u32> = range.collect();
        for i in (1..keys.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            keys.swap(i, j);
        }
        keys.into_iter()
    };
    let (mut stored, mut absent) = (shuffled(0..rows), shuffled(rows..keys).peekable());
    let key_of_rank: Vec<u32> = (0..keys)
        .map(|rank| match absent.peek() {
            Some(_) if rank % 11 == 3 => absent.next(),
            _ => stored.next(),
        })
        .map(|key| key.expect("ranks = stored + absent keys"))
        .collect();
    let mut cumulative = Vec::with_capacity(keys as usize);
    let mut total = 0.0f64;
    for rank in 1..=keys {
        total += f64::from(rank).powf(-exponent);
        cumulative.push(total);
    }
    Pool::from_indexes(
        "zipf_miss",
        universe,
        batch,
        (0..batch * batches).map(|_| {
            let x = rng.unit() * total;
            let rank = cumulative
                .partition_point(|&c| c <= x)
                .min(keys as usize - 1);
            u64::from(key_of_rank[rank])
        }),
    )
}
