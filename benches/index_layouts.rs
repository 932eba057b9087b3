//! What finding a row costs, index layout by index layout: the lookup suite's
//! limit (rows gathered by precomputed row numbers) against the same rows
//! found through
//! - one line per id: each id's row number alone in a table as large as
//!   kvzch's index, at a word picked by its row number, as the limit's rows
//!   are. Not a map, a bound: what one dependent random line per id costs;
//! - linear probing (`key_buckets`: five ids and row numbers per 64-byte
//!   bucket), kvzch's layout until it took two-choice buckets, read one
//!   bucket deep: a bound again, what lookups would cost if every id sat in
//!   its home bucket. The ids beyond their home bucket are missed in one,
//!   and found by their precomputed row number in the other, which fetches
//!   every row as the maps do;
//! - linear probing at 60% to 90% fill;
//! - two choices (`two_choice`: the same buckets, each id in one of two,
//!   both read by every lookup; kvzch's layout until it took hash remainders)
//!   at 80% and 90% fill, the lookup suite's `indexed_limit` at 80%;
//! - ten 16-bit tags and row numbers per 64-byte bucket, linear probing, with
//!   each id kept in an array beside the rows: a lookup asks for the id's
//!   word with its row and checks it before the copy;
//! - eight 8-byte entries per 64-byte bucket, each a 42-bit remainder of the
//!   id's hash over a row number, linear probing, at 50% and 67% fill: one
//!   line for 96-99% of the lookups, within kvzch's memory. Its eight
//!   remainders compared one by one, as the compiler writes the loop, and two
//!   to an SSE2 compare. The study's map takes a remainder match for the id;
//!   kvzch's index (`src/cache/index.rs`) keeps exact remainders, seven to a
//!   line with two choices;
//! - kvzch itself, through its Rust API, with rows of its own: the engine,
//!   its index, shards, locks and row arena, against the layouts' bounds.
//!
//! Every layout runs the lookup suite's pipeline over the same uniform batches
//! (`indexed_limit`) and finds rows held twice, the limit's and one copy of
//! them (`over`): a copy per layout held 17 GiB at 4M rows. The rows each
//! returns for the first batches are checked against the limit's. Layouts take
//! turns within each round, always in the same order, each over the copy of
//! the rows its predecessor did not read. A turn over the rows the turn before
//! it read ran faster here than one after a turn over other rows (1.30x and
//! 1.12x for the same layout in two runs), which favoured the layouts, all
//! over the limit's rows, over kvzch, whose rows are its own. Each reports
//! its rate over the limit's in the same round: the median and quartiles over
//! rounds. BENCHMARKS.md ("What the design leaves") has what this machine
//! measured.
//!
//! `cargo bench --bench index_layouts` (20 to 40 s here; maps about 4 GiB),
//! or `-- --quick` for a small table.

// The lookup suite's contender trait: this study fills and reads its layouts
// through it and leaves its publishing and counting methods unused.
#[allow(dead_code)]
#[path = "lookup/contender.rs"]
mod contender;
#[path = "lookup/flags.rs"]
mod flags;
#[path = "lookup/huge_map.rs"]
mod huge_map;
#[path = "lookup/indexed_limit.rs"]
mod indexed_limit;
#[path = "lookup/key_buckets.rs"]
mod key_buckets;
// The lookup suite's kvzch contenders: this study reads kvzch through its Rust
// API and leaves the C ABI's contender unused.
#[allow(dead_code)]
#[path = "lookup/kvzch_rows.rs"]
mod kvzch_rows;
#[path = "lookup/limit.rs"]
mod limit;
#[path = "lookup/prefetch.rs"]
mod prefetch;
#[path = "lookup/two_choice.rs"]
mod two_choice;
// The lookup suite's ids, rows and pools; this study takes the uniform pool
// and leaves the rest.
#[allow(dead_code)]
#[path = "lookup/workload.rs"]
mod workload;

use std::time::Instant;

use contender::Contender;
use flags::number;
use huge_map::HugeMap;
use indexed_limit::{IndexedLimit, Profile, RowIndex, TWO_CHOICE_FILL};
use key_buckets::{BucketTable, KeyBuckets, PlainBucket};
use kvzch_rows::KvzchRust;
use limit::Limit;
use prefetch::{prefetch, prefetch_row};
use two_choice::TwoChoiceBuckets;
use workload::Universe;

const BATCH: usize = 4096;
/// Batches checked against the limit before any is timed.
const CHECKED_BATCHES: usize = 8;
/// kvzch's index at its fill after a rebuild: the size the one-line bound's
/// table takes.
const KVZCH_BYTES_PER_ROW: f64 = 16.0;

/// Each id's row number alone, at a word picked by its slot: one line per
/// lookup, no probing and no comparison.
struct OneLine {
    words: HugeMap,
    /// `words`' count less one: a power of two less one.
    word_mask: usize,
    profile: Profile,
}

/// Odd, so multiplying by it permutes the words of any power-of-two table.
const SCATTER: usize = 0x9e37_79b9_7f4a_7c15;

impl OneLine {
    /// A table of at least kvzch's bytes per row, a power of two of words.
    fn new(rows: usize) -> OneLine {
        let words = ((rows as f64 * KVZCH_BYTES_PER_ROW) as usize / 4).next_power_of_two();
        OneLine {
            words: HugeMap::new(words * 4),
            word_mask: words - 1,
            profile: Profile::new(words * 4),
        }
    }

    /// Where `slot`'s row number is: slots below the word count get distinct
    /// words, neighbouring slots far-apart ones.
    fn word_at(&self, slot: u32) -> usize {
        (slot as usize).wrapping_mul(SCATTER) & self.word_mask
    }

    fn word(&self, slot: u32) -> &[u8] {
        &self.words.bytes()[self.word_at(slot) * 4..][..4]
    }
}

impl RowIndex for OneLine {
    const READS_SLOTS: bool = true;

    fn insert(&mut self, _id: i64, _hash: u64, slot: u32, row: u32) {
        let at = self.word_at(slot) * 4;
        self.words.bytes_mut()[at..at + 4].copy_from_slice(&(row + 1).to_ne_bytes());
        self.profile.add(1);
    }

    #[inline(always)]
    fn prefetch_first(&self, _id: i64, _hash: u64, slot: u32) {
        prefetch(&self.word(slot)[0]);
    }

    #[inline(always)]
    fn locate(&self, _id: i64, _hash: u64, slot: u32) -> Option<u32> {
        let stored = u32::from_ne_bytes(self.word(slot).try_into().expect("4 bytes"));
        stored.checked_sub(1)
    }

    fn profile(&self) -> &Profile {
        &self.profile
    }
}

/// Linear probing (kvzch's layout before two choices) read one bucket deep.
/// Not a map, a bound: what lookups would cost if every id sat in its home
/// bucket at this fill. The ids beyond their home bucket are missed
/// (`BEYOND_BY_ROW` false: their rows are not fetched) or found by their
/// precomputed row number (true: every row is fetched, as a map's lookups
/// fetch them).
struct HomeBucket<const BEYOND_BY_ROW: bool>(KeyBuckets);

impl<const BEYOND_BY_ROW: bool> RowIndex for HomeBucket<BEYOND_BY_ROW> {
    const READS_SLOTS: bool = BEYOND_BY_ROW;

    fn insert(&mut self, id: i64, hash: u64, _slot: u32, row: u32) {
        self.0.insert(id, hash, row);
    }

    #[inline(always)]
    fn prefetch_first(&self, _id: i64, hash: u64, _slot: u32) {
        prefetch(self.0.home_bucket(hash));
    }

    #[inline(always)]
    fn locate(&self, id: i64, hash: u64, slot: u32) -> Option<u32> {
        let at_home = self.0.find::<1>(id, hash);
        if BEYOND_BY_ROW {
            at_home.or(Some(slot))
        } else {
            at_home
        }
    }

    fn profile(&self) -> &Profile {
        self.0.profile()
    }
}

const TAG_WIDTH: usize = 10;
/// A position whose tag is this holds no id.
const NO_TAG: u16 = 0;

/// All zeros is the empty bucket, as a fresh mapping is.
#[repr(C, align(64))]
struct TagBucket {
    tags: [u16; TAG_WIDTH],
    rows: [u32; TAG_WIDTH],
    _spare: u32,
}

impl TagBucket {
    /// Bit `i` set where position `i` holds `tag`.
    #[inline(always)]
    fn matches(&self, tag: u16) -> u32 {
        let mut matches = 0;
        for (i, &t) in self.tags.iter().enumerate() {
            matches |= u32::from(t == tag) << i;
        }
        matches
    }
}

/// Ten (16-bit tag, row number) pairs per bucket, the ids in an array indexed
/// by row: 6.4 bytes per row at 100% fill, plus 8 for the id.
struct TagBuckets {
    table: BucketTable<TagBucket>,
    ids: HugeMap,
    profile: Profile,
}

// SAFETY: `TagBucket` is `#[repr(C, align(64))]` and holds integers only.
unsafe impl PlainBucket for TagBucket {}

/// The low bits of the hash (the bucket comes from the high bits), never
/// `NO_TAG`.
fn tag_of(hash: u64) -> u16 {
    (hash as u16).max(1)
}

impl TagBuckets {
    fn new(rows: usize, fill: f64) -> TagBuckets {
        let table = BucketTable::new(rows, TAG_WIDTH, fill);
        let profile = Profile::new(table.bytes() + rows * 8);
        TagBuckets {
            table,
            ids: HugeMap::new(rows * 8),
            profile,
        }
    }

    fn id_word(&self, row: u32) -> &[u8] {
        &self.ids.bytes()[row as usize * 8..][..8]
    }

    fn id_at(&self, row: u32) -> i64 {
        i64::from_ne_bytes(self.id_word(row).try_into().expect("8 bytes"))
    }

    /// The row of `id`, every tag match checked against the ids: what a
    /// lookup falls back to when its first match was another id's.
    fn find_checked(&self, id: i64, hash: u64) -> Option<u32> {
        let tag = tag_of(hash);
        let mut at = self.table.home(hash);
        loop {
            let bucket = &self.table.buckets()[at];
            let mut matches = bucket.matches(tag);
            while matches != 0 {
                let row = bucket.rows[matches.trailing_zeros() as usize];
                if self.id_at(row) == id {
                    return Some(row);
                }
                matches &= matches - 1;
            }
            if bucket.matches(NO_TAG) != 0 {
                return None;
            }
            at = self.table.next(at);
        }
    }
}

impl RowIndex for TagBuckets {
    fn insert(&mut self, id: i64, hash: u64, _slot: u32, row: u32) {
        if let Some(old) = self.find_checked(id, hash) {
            assert_eq!(old, row, "the limit's ids keep their rows");
            return;
        }
        let at = row as usize * 8;
        self.ids.bytes_mut()[at..at + 8].copy_from_slice(&id.to_ne_bytes());
        let lines = self.table.place_from_home(hash, |bucket| {
            let free = bucket.matches(NO_TAG);
            if free == 0 {
                return false;
            }
            let i = free.trailing_zeros() as usize;
            bucket.tags[i] = tag_of(hash);
            bucket.rows[i] = row;
            true
        });
        self.profile.add(lines);
    }

    #[inline(always)]
    fn prefetch_first(&self, _id: i64, hash: u64, _slot: u32) {
        prefetch(self.table.home_bucket(hash));
    }

    /// The row of the first position holding the id's tag, whose id word it
    /// asks for along with the row.
    #[inline(always)]
    fn locate(&self, _id: i64, hash: u64, _slot: u32) -> Option<u32> {
        let tag = tag_of(hash);
        let mut at = self.table.home(hash);
        loop {
            let bucket = &self.table.buckets()[at];
            let matches = bucket.matches(tag);
            if matches != 0 {
                let row = bucket.rows[matches.trailing_zeros() as usize];
                prefetch_row(self.id_word(row));
                return Some(row);
            }
            if bucket.matches(NO_TAG) != 0 {
                return None;
            }
            at = self.table.next(at);
        }
    }

    #[inline(always)]
    fn confirm(&self, id: i64, hash: u64, located: u32) -> Option<u32> {
        if self.id_at(located) == id {
            Some(located)
        } else {
            self.find_checked(id, hash)
        }
    }

    fn profile(&self) -> &Profile {
        &self.profile
    }
}

/// Bits of an id's hash a remainder entry keeps.
const REMAINDER_BITS: u32 = 42;
/// Bits of a remainder entry for its row number + 1 (0: the entry is empty).
const ENTRY_ROW_BITS: u32 = 64 - REMAINDER_BITS;
const ENTRY_ROW_MASK: u64 = (1 << ENTRY_ROW_BITS) - 1;
const REMAINDER_WIDTH: usize = 8;

/// Eight entries of a 42-bit hash remainder over a 22-bit row number + 1; all
/// zeros is the empty bucket, as a fresh mapping is.
#[repr(C, align(64))]
struct RemainderBucket {
    entries: [u64; REMAINDER_WIDTH],
}

// SAFETY: `RemainderBucket` is `#[repr(C, align(64))]` and holds integers only.
unsafe impl PlainBucket for RemainderBucket {}

/// The entry bits an id of hash `hash` matches: its remainder, over the row.
fn remainder_bits(hash: u64) -> u64 {
    (hash & ((1 << REMAINDER_BITS) - 1)) << ENTRY_ROW_BITS
}

impl RemainderBucket {
    /// Bit `i` set where entry `i` holds `remainder` (from `remainder_bits`),
    /// or is empty when `remainder` is 0: the caller checks the row it takes.
    /// `VECTOR` compares two entries to an SSE2 instruction, where the compiler
    /// compares them one by one.
    #[inline(always)]
    fn matches<const VECTOR: bool>(&self, remainder: u64) -> u32 {
        #[cfg(target_arch = "x86_64")]
        if VECTOR {
            use std::arch::x86_64::*;
            // SAFETY: SSE2 is part of x86_64; the bucket is 64-byte aligned, so
            // each 16-byte load is aligned and within it.
            return unsafe {
                let want = _mm_set1_epi64x(remainder as i64);
                let remainder_mask = _mm_set1_epi64x(!ENTRY_ROW_MASK as i64);
                let pairs = self.entries.as_ptr().cast::<__m128i>();
                let mut matches = 0;
                for pair in 0..REMAINDER_WIDTH / 2 {
                    let held = _mm_and_si128(_mm_load_si128(pairs.add(pair)), remainder_mask);
                    // SSE2 compares 32-bit lanes: an entry matches where both halves do.
                    let halves = _mm_cmpeq_epi32(held, want);
                    let both = _mm_and_si128(halves, _mm_shuffle_epi32::<0b10_11_00_01>(halves));
                    matches |= (_mm_movemask_pd(_mm_castsi128_pd(both)) as u32) << (2 * pair);
                }
                matches
            };
        }
        let mut matches = 0;
        for (i, &entry) in self.entries.iter().enumerate() {
            matches |= u32::from(entry & !ENTRY_ROW_MASK == remainder) << i;
        }
        matches
    }

    /// The row of the first entry `matches` names that is not empty.
    #[inline(always)]
    fn row(&self, mut matches: u32) -> Option<u32> {
        while matches != 0 {
            let stored = self.entries[matches.trailing_zeros() as usize] & ENTRY_ROW_MASK;
            if stored != 0 {
                return Some(stored as u32 - 1);
            }
            matches &= matches - 1;
        }
        None
    }

    fn has_room(&self) -> bool {
        self.entries.contains(&0)
    }
}

/// Linear probing over buckets of hash remainders: 8 B an entry, no id kept.
/// A map for this study only: it takes a 42-bit remainder match for the id,
/// where an engine would keep the id recoverable (an invertible hash, and the
/// bucket and remainder together naming it).
struct RemainderBuckets<const VECTOR: bool> {
    table: BucketTable<RemainderBucket>,
    profile: Profile,
}

impl<const VECTOR: bool> RemainderBuckets<VECTOR> {
    fn new(rows: usize, fill: f64) -> Self {
        assert!(
            (rows as u64) < ENTRY_ROW_MASK,
            "remainder entries hold row numbers below 2^{ENTRY_ROW_BITS} - 1"
        );
        let table = BucketTable::new(rows, REMAINDER_WIDTH, fill);
        let profile = Profile::new(table.bytes());
        RemainderBuckets { table, profile }
    }

    /// The probe past a full home bucket, out of the lookup's way: at 50% to
    /// 67% fill, 1% to 4% of the ids come here.
    #[cold]
    #[inline(never)]
    fn find_past(&self, hash: u64, home: usize) -> Option<u32> {
        let remainder = remainder_bits(hash);
        let mut at = home;
        loop {
            at = self.table.next(at);
            let bucket = &self.table.buckets()[at];
            if let Some(row) = bucket.row(bucket.matches::<VECTOR>(remainder)) {
                return Some(row);
            }
            if bucket.has_room() {
                return None;
            }
        }
    }
}

impl<const VECTOR: bool> RowIndex for RemainderBuckets<VECTOR> {
    fn insert(&mut self, _id: i64, hash: u64, _slot: u32, row: u32) {
        let entry = remainder_bits(hash) | u64::from(row + 1);
        let lines = self.table.place_from_home(hash, |bucket| {
            let free = bucket.entries.iter_mut().find(|held| **held == 0);
            free.map(|free| *free = entry).is_some()
        });
        self.profile.add(lines);
    }

    #[inline(always)]
    fn prefetch_first(&self, _id: i64, hash: u64, _slot: u32) {
        prefetch(self.table.home_bucket(hash));
    }

    #[inline(always)]
    fn locate(&self, _id: i64, hash: u64, _slot: u32) -> Option<u32> {
        let home = self.table.home(hash);
        let bucket = &self.table.buckets()[home];
        let found = bucket.row(bucket.matches::<VECTOR>(remainder_bits(hash)));
        if found.is_some() || bucket.has_room() {
            return found;
        }
        self.find_past(hash, home)
    }

    fn profile(&self) -> &Profile {
        &self.profile
    }
}

struct Config {
    rows: usize,
    row_bytes: usize,
    rounds: usize,
    batches_per_round: usize,
}

fn parse_args() -> Config {
    let mut config = Config {
        rows: 4_000_000,
        row_bytes: 256,
        rounds: 10,
        batches_per_round: 200,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                config.rows = 100_000;
                config.rounds = 5;
                config.batches_per_round = 4;
            }
            "--rows" => config.rows = number("--rows", args.next()),
            "--row-bytes" => config.row_bytes = number("--row-bytes", args.next()),
            "--rounds" => config.rounds = number("--rounds", args.next()),
            "--round-batches" => {
                config.batches_per_round = number("--round-batches", args.next())
            }
            // cargo bench passes this to every bench target.
            "--bench" => {}
            other => panic!(
                "unknown flag {other}; flags: --quick, --rows N, --row-bytes N, --rounds N, --round-batches N"
            ),
        }
    }
    assert!(
        config.row_bytes >= workload::MIN_ROW_BYTES,
        "--row-bytes must be >= {}",
        workload::MIN_ROW_BYTES
    );
    config
}

struct Layout {
    name: String,
    contender: Box<dyn Contender>,
    /// Whether the layout finds every stored id; a bound that does not (the
    /// home bucket alone) must return the limit's row for those it finds.
    finds_all: bool,
    /// Ids found in the checked batches.
    found: u64,
    /// Rate over the limit's, per round.
    ratios: Vec<f64>,
    rates: Vec<f64>,
}

impl Layout {
    /// The rows of `limit` found through `index` by the suite's pipeline.
    fn through<I: RowIndex + 'static>(
        name: String,
        limit: &Limit,
        index: I,
        finds_all: bool,
    ) -> Layout {
        Layout::new(name, Box::new(IndexedLimit::over(limit, index)), finds_all)
    }

    fn new(name: String, contender: Box<dyn Contender>, finds_all: bool) -> Layout {
        Layout {
            name,
            contender,
            finds_all,
            found: 0,
            ratios: Vec::new(),
            rates: Vec::new(),
        }
    }
}

/// The turns of a round, in order: the limit's, then each layout's over the
/// copy of the rows the turn before did not read.
struct Turns<'a> {
    /// The limit's rows and a copy of them, both filled.
    rows: [&'a Limit; 2],
    layouts: Vec<Layout>,
}

impl Turns<'_> {
    /// Adds a layout that finds its rows through `index`.
    fn through<I: RowIndex + 'static>(&mut self, name: String, index: I, finds_all: bool) {
        let rows = self.rows[self.layouts.len() % 2];
        let layout = Layout::through(name, rows, index, finds_all);
        self.layouts.push(layout);
    }
}

/// The limit, every layout over its rows or their copy (both filled), and
/// kvzch, last: the limit's turn follows kvzch's, over rows of kvzch's own.
fn layouts(limit: &Limit, copy: &Limit, rows: usize) -> Vec<Layout> {
    let percent = |fill: f64| fill * 100.0;
    let mut turns = Turns {
        rows: [limit, copy],
        layouts: vec![Layout::new("limit".into(), Box::new(limit.share()), true)],
    };
    turns.through(
        "one line per id (a bound, not a map)".into(),
        OneLine::new(rows),
        true,
    );
    turns.through(
        format!(
            "linear probing, home bucket only, {:.0}% full, the rest missed (a bound, not a map)",
            percent(TWO_CHOICE_FILL)
        ),
        HomeBucket::<false>(KeyBuckets::new(rows, TWO_CHOICE_FILL)),
        false,
    );
    turns.through(
        format!(
            "linear probing, home bucket only, {:.0}% full, the rest by row number (a bound, not a map)",
            percent(TWO_CHOICE_FILL)
        ),
        HomeBucket::<true>(KeyBuckets::new(rows, TWO_CHOICE_FILL)),
        true,
    );
    for fill in [0.6, 0.7, TWO_CHOICE_FILL, 0.9] {
        let name = format!("linear probing: 5 ids per line, {:.0}% full", percent(fill));
        turns.through(name, KeyBuckets::new(rows, fill), true);
    }
    for fill in [TWO_CHOICE_FILL, 0.9] {
        let name = format!(
            "two choices (kvzch's until 598b97e): 5 ids per line, {:.0}% full",
            percent(fill)
        );
        turns.through(name, TwoChoiceBuckets::new(rows, fill), true);
    }
    for fill in [TWO_CHOICE_FILL, 0.9] {
        let name = format!("10 tags per line + ids by row, {:.0}% full", percent(fill));
        turns.through(name, TagBuckets::new(rows, fill), true);
    }
    for fill in [0.5, 0.67] {
        let name = |compare: &str| {
            format!(
                "8 hash remainders per line (no ids), {:.0}% full, {compare}",
                percent(fill)
            )
        };
        turns.through(
            name("compared one by one"),
            RemainderBuckets::<false>::new(rows, fill),
            true,
        );
        turns.through(
            name("two to an SSE2 compare"),
            RemainderBuckets::<true>::new(rows, fill),
            true,
        );
    }
    let kvzch = KvzchRust::new(limit.row_bytes());
    let mut layouts = turns.layouts;
    layouts.push(Layout::new(
        "kvzch itself (its Rust API, rows of its own)".into(),
        Box::new(kvzch),
        true,
    ));
    layouts
}

/// Stores every row of `universe` in `contender`, batch by batch.
fn fill(contender: &mut dyn Contender, universe: &Universe) {
    let mut rows = vec![0; BATCH * universe.row_bytes];
    for first in (0..universe.rows).step_by(BATCH) {
        let slots: Vec<u32> = (first..(first + BATCH).min(universe.rows))
            .map(|slot| slot as u32)
            .collect();
        let ids: Vec<i64> = slots.iter().map(|&s| universe.id(u64::from(s))).collect();
        for (&id, row) in ids.iter().zip(rows.chunks_exact_mut(universe.row_bytes)) {
            universe.write_row(id, 0, row);
        }
        contender.fill(&ids, &slots, &rows[..ids.len() * universe.row_bytes], 0);
    }
}

/// The median and the quartiles of `values`.
fn quartiles(values: &[f64]) -> [f64; 3] {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    [at(0.25), at(0.5), at(0.75)]
}

fn main() {
    let config = parse_args();
    let universe = Universe::new(config.rows, config.row_bytes);
    let pool_batches = config.rows.div_ceil(BATCH).max(CHECKED_BATCHES);
    let pool = workload::uniform(&universe, BATCH, pool_batches, 0x1a70_75e5);
    let mut limit = Limit::new(config.rows, config.row_bytes);
    fill(&mut limit, &universe);
    let mut copy = Limit::new(config.rows, config.row_bytes);
    fill(&mut copy, &universe);
    let mut layouts = layouts(&limit, &copy, config.rows);
    for layout in &mut layouts[1..] {
        fill(layout.contender.as_mut(), &universe);
    }

    let mut expected = vec![0; BATCH * config.row_bytes];
    let mut out = vec![0; BATCH * config.row_bytes];
    let checked = CHECKED_BATCHES.min(pool.batches());
    for b in 0..checked {
        let (ids, slots, hits) = pool.batch(b);
        let (limit, others) = layouts.split_first_mut().expect("the limit comes first");
        assert_eq!(limit.contender.get(ids, slots, &mut expected), hits);
        for (&id, row) in ids.iter().zip(expected.chunks_exact(config.row_bytes)) {
            assert!(universe.row_is_of(id, row), "the limit's row of id {id}");
        }
        for layout in others {
            out.fill(0xa5);
            let found = layout.contender.get(ids, slots, &mut out);
            let rows = out.chunks_exact(config.row_bytes);
            for (row, want) in rows.zip(expected.chunks_exact(config.row_bytes)) {
                let missed = !layout.finds_all && row.iter().all(|&byte| byte == 0);
                assert!(
                    row == want || missed,
                    "{}: a row differs from the limit's",
                    layout.name
                );
            }
            assert!(
                found <= hits && (found == hits || !layout.finds_all),
                "{}",
                layout.name
            );
            layout.found += found;
        }
    }
    let checked_ids = (checked * BATCH) as f64;

    let per_round = config.batches_per_round.min(pool.batches());
    for round in 0..config.rounds {
        let first = round * per_round % pool.batches();
        // In the same order every round, so that every turn follows a turn
        // over other rows (see `Turns`).
        let rates: Vec<f64> = layouts
            .iter()
            .map(|layout| {
                let started = Instant::now();
                for b in first..first + per_round {
                    let (ids, slots, _) = pool.batch(b % pool.batches());
                    layout.contender.get(ids, slots, &mut out);
                }
                (per_round * BATCH) as f64 / started.elapsed().as_secs_f64()
            })
            .collect();
        for (layout, &rate) in layouts.iter_mut().zip(&rates) {
            layout.ratios.push(rate / rates[0]);
            layout.rates.push(rate);
        }
    }

    println!(
        "## Index layouts: {} rows x {} B, uniform batches of {BATCH} (all hits), 1 thread, {} rounds of {per_round} batches\n",
        config.rows, config.row_bytes, config.rounds
    );
    println!(
        "Every row a layout returned on the first {checked} batches was the limit's; \
         \"found\" is the share of their ids it returned.\n"
    );
    println!("| layout | index | found | M rows/s | vs limit (quartiles) |");
    println!("|---|---|---:|---:|---:|");
    for layout in &layouts[1..] {
        let [_, rate, _] = quartiles(&layout.rates);
        let [low, ratio, high] = quartiles(&layout.ratios);
        let index = layout.contender.index_profile().unwrap_or_default();
        println!(
            "| {} | {index} | {:.1}% | {:.2} | {ratio:.2}x ({low:.2}x-{high:.2}x) |",
            layout.name,
            100.0 * layout.found as f64 / checked_ids,
            rate / 1e6
        );
    }
    let [_, limit_rate, _] = quartiles(&layouts[0].rates);
    println!(
        "\nThe limit: {:.2} M rows/s (median of the rounds).",
        limit_rate / 1e6
    );
}
