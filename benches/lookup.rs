//! Side-by-side lookup benchmarks: kvzch (Rust API and C ABI) against the
//! dense-array limit, an upstream-design peer and concurrent maps from
//! crates.io, on the same id streams in the same process.
//!
//! `cargo bench --bench lookup -- --help` lists the flags; BENCHMARKS.md has the
//! commands and the results. The modules live in `benches/lookup/`, out of
//! the way of cargo's bench-target discovery.

#[path = "lookup/contender.rs"]
mod contender;
#[path = "lookup/crates.rs"]
mod crates;
#[path = "common/figures.rs"]
mod figures;
#[path = "lookup/huge_map.rs"]
mod huge_map;
#[path = "lookup/indexed_limit.rs"]
mod indexed_limit;
#[path = "lookup/json.rs"]
mod json;
// Linear probing (`KeyBuckets`) is for the layout study; the suite takes the
// bucket and table types `two_choice` shares with it.
#[allow(dead_code)]
#[path = "lookup/key_buckets.rs"]
mod key_buckets;
#[path = "lookup/kvzch_rows.rs"]
mod kvzch_rows;
#[path = "lookup/limit.rs"]
mod limit;
#[path = "lookup/measure.rs"]
mod measure;
#[path = "lookup/peer.rs"]
mod peer;
#[path = "lookup/prefetch.rs"]
mod prefetch;
#[path = "lookup/report.rs"]
mod report;
#[path = "lookup/two_choice.rs"]
mod two_choice;
#[path = "lookup/workload.rs"]
mod workload;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use contender::Contender;
use workload::{Pool, Universe};

pub const CONTENDERS: [&str; 7] = [
    "limit",
    "indexed_limit",
    "upstream_peer",
    "dashmap",
    "quick_cache",
    "kvzch",
    "kvzch_c",
];
const WORKLOADS: [&str; 4] = ["uniform_hit", "zipf_miss", "publish", "stats_overhead"];
/// The series of the fill that builds each contender, the process's first.
pub const FIRST_FILL: &str = "fill_first";
const ZIPF_EXPONENT: f64 = 1.05;
/// Batches verified row by row (contents, zero-filled misses) per pool and
/// contender before any timing.
const VERIFIED_BATCHES: usize = 64;
/// A workload's pool of batches holds at most this many ids, and at least 64
/// batches, which bounds `--batch`.
const POOL_IDS: usize = 4 << 20;
const MAX_BATCH: usize = POOL_IDS / 64;

pub struct Config {
    pub rows: usize,
    pub row_bytes: usize,
    pub batch: usize,
    pub threads: Vec<usize>,
    pub workloads: Vec<&'static str>,
    pub contenders: Vec<&'static str>,
    pub runs: usize,
    pub seconds: f64,
    pub json: Option<String>,
    pub quick: bool,
    /// The nice value of the thread that republishes under readers.
    pub publisher_nice: i32,
}

const USAGE: &str = "\
usage: cargo bench --bench lookup -- [flags]

  --quick               small table (100k rows), 3 runs of 0.1 s: a smoke test
  --rows N              stored rows (default 4000000)
  --row-bytes N         bytes per row, >= 16 (default 256)
  --batch N             ids per lookup and per publish batch, 1..=65536 (default 4096)
  --threads LIST        reader thread counts, e.g. 1,2 (default 1,2)
  --workloads LIST      of uniform_hit,zipf_miss,publish,stats_overhead (default all)
  --contenders LIST     of limit,indexed_limit,upstream_peer,dashmap,quick_cache,
                        kvzch,kvzch_c
                        (default all; the limit and the peer are always kept for ratios)
  --runs N              repetitions of every measurement; medians are reported (default 5)
  --seconds S           length of one measurement (default 2)
  --json PATH           also write the results as JSON
  --publisher-nice N    run the publish workload's writer at nice N, 1..=19: a host
                        that gives its readers priority over a republish (default 0)";

fn parse_number(flag: &str, value: Option<String>) -> Result<f64, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .replace('_', "")
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
        .ok_or_else(|| format!("{flag}: '{value}' is not a positive number"))
}

fn parse_list(
    flag: &str,
    value: Option<String>,
    known: &[&'static str],
) -> Result<Vec<&'static str>, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .split(',')
        .map(|name| {
            known
                .iter()
                .copied()
                .find(|k| *k == name.trim())
                .ok_or_else(|| format!("{flag}: unknown '{name}', expected one of {known:?}"))
        })
        .collect()
}

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        rows: 4_000_000,
        row_bytes: 256,
        batch: 4096,
        threads: vec![1, 2],
        workloads: WORKLOADS.to_vec(),
        contenders: CONTENDERS.to_vec(),
        runs: 5,
        seconds: 2.0,
        json: None,
        quick: false,
        publisher_nice: 0,
    };
    let (mut rows, mut runs, mut seconds) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--help" | "-h" => return Err(String::new()),
            "--quick" => config.quick = true,
            "--rows" => rows = Some(parse_number(&arg, args.next())? as usize),
            "--row-bytes" => config.row_bytes = parse_number(&arg, args.next())? as usize,
            "--batch" => config.batch = parse_number(&arg, args.next())? as usize,
            "--runs" => runs = Some(parse_number(&arg, args.next())? as usize),
            "--seconds" => seconds = Some(parse_number(&arg, args.next())?),
            "--json" => config.json = Some(args.next().ok_or("--json needs a path")?),
            "--publisher-nice" => {
                let nice = parse_number(&arg, args.next())?;
                if nice > 19.0 || nice.fract() != 0.0 {
                    return Err(format!(
                        "--publisher-nice: {nice} is not a nice value in 1..=19"
                    ));
                }
                config.publisher_nice = nice as i32;
            }
            "--workloads" => config.workloads = parse_list(&arg, args.next(), &WORKLOADS)?,
            "--contenders" => config.contenders = parse_list(&arg, args.next(), &CONTENDERS)?,
            "--threads" => {
                let value = args.next().ok_or("--threads needs a value")?;
                config.threads = value
                    .split(',')
                    .map(|t| t.trim().parse().ok().filter(|&t| t > 0))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("--threads: '{value}' is not a list of counts"))?;
            }
            other => return Err(format!("unknown flag '{other}'")),
        }
    }
    config.rows = rows.unwrap_or(if config.quick { 100_000 } else { 4_000_000 });
    config.runs = runs.unwrap_or(if config.quick { 3 } else { 5 });
    config.seconds = seconds.unwrap_or(if config.quick { 0.1 } else { 2.0 });
    if config.row_bytes < workload::MIN_ROW_BYTES || config.row_bytes > kvzch::cache::MAX_ROW_BYTES
    {
        return Err(format!(
            "--row-bytes must be in {}..={}",
            workload::MIN_ROW_BYTES,
            kvzch::cache::MAX_ROW_BYTES
        ));
    }
    if config.rows >= u32::MAX as usize / 2 {
        return Err("--rows must be below 2^31".into());
    }
    if !(1..=MAX_BATCH).contains(&config.batch) {
        return Err(format!("--batch must be in 1..={MAX_BATCH}"));
    }
    // Ratios need the limit and the peer in every run.
    for needed in ["limit", "upstream_peer"] {
        if !config.contenders.contains(&needed) {
            config.contenders.push(needed);
        }
    }
    config
        .contenders
        .sort_by_key(|c| CONTENDERS.iter().position(|k| k == c));
    config.contenders.dedup();
    Ok(config)
}

/// One repetition's figures for one (series, contender, threads).
#[derive(Clone, Debug, Default)]
pub struct Measure {
    pub rows_per_s: f64,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub extra: Vec<(&'static str, f64)>,
}

impl Measure {
    /// The extra figure called `name`, if this measurement has one.
    pub fn extra(&self, name: &str) -> Option<f64> {
        self.extra.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
    }
}

/// Every repetition, keyed by (series, contender, threads).
#[derive(Default)]
pub struct Results {
    pub series: HashMap<(&'static str, &'static str, usize), Vec<Measure>>,
}

impl Results {
    fn push(&mut self, series: &'static str, contender: &'static str, threads: usize, m: Measure) {
        self.series
            .entry((series, contender, threads))
            .or_default()
            .push(m);
    }

    /// Every repetition of one (series, contender, threads), in the order run.
    pub fn runs(&self, series: &str, contender: &str, threads: usize) -> Option<&[Measure]> {
        self.series
            .iter()
            .find(|((s, c, t), _)| *s == series && *c == contender && *t == threads)
            .map(|(_, runs)| runs.as_slice())
    }

    /// The median of every field over the repetitions.
    pub fn median(&self, series: &str, contender: &str, threads: usize) -> Option<Measure> {
        let runs = self.runs(series, contender, threads)?;
        let field = |f: &dyn Fn(&Measure) -> f64| median(runs.iter().map(f).collect());
        let extra = runs[0]
            .extra
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (*name, field(&|m: &Measure| m.extra[i].1)))
            .collect();
        Some(Measure {
            rows_per_s: field(&|m| m.rows_per_s),
            p50_ns: field(&|m| m.p50_ns),
            p99_ns: field(&|m| m.p99_ns),
            extra,
        })
    }
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// What building a contender held, beyond the payload.
pub struct Memory {
    pub contender: &'static str,
    pub rss_delta: u64,
    /// Growth of the anonymous memory on transparent huge pages meanwhile,
    /// where the kernel reports it.
    pub huge_page_delta: Option<u64>,
    pub accounted: Option<u64>,
}

impl Memory {
    /// The share of the growth that the kernel backed with huge pages.
    pub fn huge_page_share(&self) -> Option<f64> {
        self.huge_page_delta
            .filter(|_| self.rss_delta > 0)
            .map(|huge| huge as f64 / self.rss_delta as f64)
    }
}

/// Hits each contender returned over the verified batches of a pool, and what
/// its own read counters (where it has them) counted meanwhile.
pub struct Agreement {
    pub pool: &'static str,
    pub ids: u64,
    pub expected_hits: u64,
    pub miss_fraction: f64,
    pub returned: Vec<Returned>,
}

pub struct Returned {
    pub contender: &'static str,
    pub hits: u64,
    /// What the contender's own (hits, misses) counters counted meanwhile.
    pub counted: Option<(u64, u64)>,
}

fn make(name: &str, universe: &Universe, shards: usize) -> Box<dyn Contender> {
    match name {
        "limit" => Box::new(limit::Limit::new(universe.rows, universe.row_bytes)),
        "indexed_limit" => Box::new(indexed_limit::IndexedLimit::with_index(
            universe.rows,
            universe.row_bytes,
            two_choice::TwoChoiceBuckets::new(universe.rows, indexed_limit::TWO_CHOICE_FILL),
        )),
        "upstream_peer" => Box::new(peer::UpstreamPeer::new(universe.row_bytes, shards)),
        "dashmap" => Box::new(crates::DashMapRows::new(universe.row_bytes)),
        // Room for the stale rows of a republish and for uneven shards, so the
        // cache never has to evict.
        "quick_cache" => Box::new(crates::QuickCacheRows::new(
            universe.row_bytes,
            universe.rows + universe.rows / 2 + 4096,
        )),
        "kvzch" => Box::new(kvzch_rows::KvzchRust::new(universe.row_bytes)),
        "kvzch_c" => Box::new(kvzch_rows::KvzchC::new(universe.row_bytes)),
        other => unreachable!("unknown contender {other}"),
    }
}

/// Row buffers for publishing, reused across batches.
struct Publisher {
    ids: Vec<i64>,
    slots: Vec<u32>,
    rows: Vec<u8>,
}

impl Publisher {
    /// Staging room for batches of `batch` rows, its memory already resident:
    /// the memory measured while a contender is filled must be the
    /// contender's (at 100,000 rows of 256 B, a staging buffer of 4,096
    /// rows paged in meanwhile would add about 11 B/row).
    fn new(batch: usize, row_bytes: usize) -> Publisher {
        let mut publisher = Publisher {
            ids: Vec::with_capacity(batch),
            slots: Vec::with_capacity(batch),
            rows: vec![0; batch * row_bytes],
        };
        // Written, not only allocated: zeroed memory from the allocator may
        // be pages the kernel maps at the first write.
        std::hint::black_box(&mut publisher.rows).fill(0x5a);
        publisher.ids.resize(batch, 0);
        publisher.slots.resize(batch, 0);
        publisher
    }

    /// Stages the rows of key indexes `range`, published at `version`.
    fn stage(
        &mut self,
        universe: &Universe,
        range: std::ops::Range<u64>,
        version: u32,
        stale: bool,
    ) {
        self.ids.clear();
        self.slots.clear();
        let row_bytes = universe.row_bytes;
        for (k, index) in range.enumerate() {
            let id = if stale {
                universe.stale_id(index)
            } else {
                universe.id(index)
            };
            self.ids.push(id);
            self.slots.push(index as u32);
            universe.write_row(id, version, &mut self.rows[k * row_bytes..][..row_bytes]);
        }
    }

    fn staged_rows(&self, row_bytes: usize) -> &[u8] {
        &self.rows[..self.ids.len() * row_bytes]
    }
}

/// Batches of `batch` over `0..n`.
fn batch_ranges(n: u64, batch: usize) -> impl Iterator<Item = std::ops::Range<u64>> {
    (0..n)
        .step_by(batch)
        .map(move |start| start..(start + batch as u64).min(n))
}

/// How a fill starts: as a host that does not say how many rows are coming,
/// or as one that reserves room for them first.
#[derive(Clone, Copy, PartialEq)]
enum SizeHint {
    None,
    Reserve,
}

impl SizeHint {
    fn series(self) -> &'static str {
        match self {
            SizeHint::None => "fill",
            SizeHint::Reserve => "fill_reserved",
        }
    }
}

/// Memory a fill takes per row beyond the payload, generously: every
/// contender's own (the peer and the crates hold 50-85 B/row) rounded up.
const FILL_BYTES_PER_ROW_BEYOND_PAYLOAD: usize = 96;

/// Publishes the whole table at timestamp 1 into a new contender, before any
/// reader: the fill. Only the `batch_set` calls are timed, and the `reserve`
/// call that precedes them under `SizeHint::Reserve`.
fn fill(
    contender: &mut dyn Contender,
    universe: &Universe,
    publisher: &mut Publisher,
    hint: SizeHint,
) -> Measure {
    let batch = publisher.rows.len() / universe.row_bytes;
    let mut latencies = Vec::new();
    let mut reserve_ns = 0;
    if hint == SizeHint::Reserve {
        let started = Instant::now();
        contender.reserve(universe.rows);
        reserve_ns = started.elapsed().as_nanos() as u64;
    }
    for range in batch_ranges(universe.rows as u64, batch) {
        publisher.stage(universe, range, 1, false);
        let started = Instant::now();
        contender.fill(
            &publisher.ids,
            &publisher.slots,
            publisher.staged_rows(universe.row_bytes),
            1,
        );
        latencies.push(started.elapsed().as_nanos() as u64);
    }
    let seconds = (reserve_ns + latencies.iter().sum::<u64>()) as f64 / 1e9;
    latencies.sort_unstable();
    Measure {
        rows_per_s: universe.rows as f64 / seconds,
        p50_ns: measure::percentile(&latencies, 0.50),
        p99_ns: measure::percentile(&latencies, 0.99),
        extra: vec![("seconds", seconds)],
    }
}

/// Hits returned and ids looked up over every `get` a contender served.
#[derive(Clone, Copy, Default)]
pub struct Tally {
    pub hits: u64,
    pub ids: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.hits += other.hits;
        self.ids += other.ids;
    }
}

impl From<&measure::Readers> for Tally {
    fn from(r: &measure::Readers) -> Tally {
        Tally {
            hits: r.hits,
            ids: r.ids + r.warmup_ids,
        }
    }
}

/// Runs every pool's first batches through `contender`, checking each row
/// (the right id's row on a hit, zeros on a miss) and the hit counts.
fn verify(
    contender: &dyn Contender,
    universe: &Universe,
    pools: &[&Pool],
    agreements: &mut Vec<Agreement>,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let name = contender.name();
    for pool in pools {
        let batches = pool.batches().min(VERIFIED_BATCHES);
        let mut out = vec![0xeeu8; pool.batch * universe.row_bytes];
        let counters_before = contender.read_counters();
        let (mut returned, mut expected) = (0, 0);
        for b in 0..batches {
            let (ids, slots, expected_hits) = pool.batch(b);
            out.fill(0xee);
            returned += contender.get(ids, slots, &mut out);
            expected += expected_hits;
            for ((&id, &slot), row) in ids
                .iter()
                .zip(slots)
                .zip(out.chunks_exact(universe.row_bytes))
            {
                let ok = if slot == workload::MISS {
                    row.iter().all(|&b| b == 0)
                } else {
                    universe.row_is_of(id, row)
                };
                if !ok {
                    return Err(format!(
                        "{name}: wrong row for id {id} in {} batch {b} (stored: {})",
                        pool.name,
                        slot != workload::MISS
                    ));
                }
            }
        }
        let counted = contender
            .read_counters()
            .zip(counters_before)
            .map(|(after, before)| (after.0 - before.0, after.1 - before.1));
        let ids = (batches * pool.batch) as u64;
        if returned != expected || counted.is_some_and(|c| c != (expected, ids - expected)) {
            return Err(format!(
                "{name}: {} returned {returned} hits and counted {counted:?}, expected {expected} of {ids}",
                pool.name
            ));
        }
        let agreement = match agreements.iter_mut().find(|a| a.pool == pool.name) {
            Some(a) => a,
            None => {
                agreements.push(Agreement {
                    pool: pool.name,
                    ids,
                    expected_hits: expected,
                    miss_fraction: pool.miss_fraction(),
                    returned: Vec::new(),
                });
                agreements.last_mut().expect("just pushed")
            }
        };
        agreement.returned.push(Returned {
            contender: name,
            hits: returned,
            counted,
        });
        tally.hits += returned;
        tally.ids += ids;
    }
    Ok(tally)
}

/// A republish under readers: stale rows at `timestamp` (ids no reader asks
/// for), then every stored row at `timestamp + 1`, then
/// `evict_older_than(timestamp + 1)`, which must remove exactly the stale rows.
struct Writer {
    published_rows: u64,
    publish_seconds: f64,
    evict_seconds: Vec<f64>,
    cycles: u64,
    error: Option<String>,
}

fn republish_cycles(
    contender: &dyn Contender,
    universe: &Universe,
    batch: usize,
    timestamp: &mut u32,
    at_least: Duration,
) -> Writer {
    let mut writer = Writer {
        published_rows: 0,
        publish_seconds: 0.0,
        evict_seconds: Vec::new(),
        cycles: 0,
        error: None,
    };
    let mut publisher = Publisher::new(batch, universe.row_bytes);
    let stale = (universe.rows as u64 / 100).max(1);
    let started = Instant::now();
    while writer.cycles == 0 || started.elapsed() < at_least {
        let old = *timestamp;
        let new = old + 1;
        for range in batch_ranges(stale, batch) {
            publisher.stage(universe, range, old, true);
            contender.publish(
                &publisher.ids,
                publisher.staged_rows(universe.row_bytes),
                old,
            );
        }
        for range in batch_ranges(universe.rows as u64, batch) {
            publisher.stage(universe, range, new, false);
            let t = Instant::now();
            contender.publish(
                &publisher.ids,
                publisher.staged_rows(universe.row_bytes),
                new,
            );
            writer.publish_seconds += t.elapsed().as_secs_f64();
            writer.published_rows += publisher.ids.len() as u64;
        }
        let t = Instant::now();
        let evicted = contender.evict_older_than(new);
        writer.evict_seconds.push(t.elapsed().as_secs_f64());
        *timestamp = new;
        writer.cycles += 1;
        if evicted != stale {
            writer.error = Some(format!(
                "{}: evict_older_than({new}) removed {evicted} rows, expected the {stale} stale ones",
                contender.name()
            ));
            break;
        }
    }
    writer
}

fn readers_measure(r: &measure::Readers) -> Measure {
    Measure {
        rows_per_s: r.ids_per_second(),
        p50_ns: r.percentile_ns(0.50),
        p99_ns: r.percentile_ns(0.99),
        extra: Vec::new(),
    }
}

/// Which slices of a sink measurement run with the sink: A-B-B-A-B-A-A-B, so
/// that both variants see the same drift of a noisy machine down to an eighth
/// of the measurement (with halves, A-B-B-A, single runs differed by up to 15%
/// with a sink whose cost is one call per batch). Runs alternate which
/// variant goes first.
const SINK_ORDER: [bool; 8] = [false, true, true, false, true, false, false, true];
/// Batches each thread runs in one slice of the per-batch sink measurement:
/// a few milliseconds of 1-id batches.
const SINK_CALLS: usize = 20_000;

/// Runs `measure` with a sink registered that counts the ids of every batch
/// when `with_sink`, and fails the bench unless that sink saw every id the
/// measurement looked up (`ids_of` its result).
fn with_counting_sink<R>(
    contender: &dyn Contender,
    with_sink: bool,
    measure: impl FnOnce() -> R,
    ids_of: impl Fn(&R) -> u64,
) -> R {
    let counter = Arc::new(AtomicU64::new(0));
    if with_sink {
        contender.set_counting_sink(Some(Arc::clone(&counter)));
    }
    let result = measure();
    contender.set_counting_sink(None);
    let seen = counter.load(std::sync::atomic::Ordering::Relaxed);
    if with_sink && seen != ids_of(&result) {
        fail(format!(
            "{}: the sink saw {seen} ids, {} were looked up",
            contender.name(),
            ids_of(&result)
        ));
    }
    result
}

/// The fixed cost of a batch, measured on batches of one id.
struct OneIdBatches {
    /// The median time of a 1-id batch without a sink.
    ns_without_sink: f64,
    /// What one registered sink adds to each batch.
    sink_ns: f64,
}

/// Times 1-id batches with and without one registered sink, over two rounds of
/// `SINK_ORDER`; what the sink adds is the difference of the medians. A sink
/// costs one call per batch whatever the batch holds, and a 1-id batch takes a
/// few hundred ns, so this resolves what the throughput ratio of full batches
/// (hundreds of µs each) leaves in its noise. Every thread looks up the same
/// id, so with several they share a shard's lock and the sink's counter: the
/// worst case. The lookups made are checked and added to `tally`.
fn one_id_batches(
    contender: &dyn Contender,
    pool: &Pool,
    threads: usize,
    run: usize,
    tally: &mut Tally,
) -> OneIdBatches {
    let (ids, slots, _) = pool.batch(run % pool.batches());
    let (ids, slots) = (&ids[..1], &slots[..1]);
    let mut per_batch: [Vec<f64>; 2] = Default::default();
    for with_sink in SINK_ORDER.repeat(2) {
        let with_sink = with_sink ^ (run % 2 == 1);
        let calls = with_counting_sink(
            contender,
            with_sink,
            || measure::calls(contender, ids, slots, pool.row_bytes, threads, SINK_CALLS),
            |calls| calls.ids,
        );
        *tally += Tally {
            hits: calls.hits,
            ids: calls.ids,
        };
        let expected_hits = u64::from(slots[0] != workload::MISS) * calls.ids;
        if calls.hits != expected_hits {
            fail(format!(
                "{}: 1-id batches returned {} hits, expected {expected_hits}",
                contender.name(),
                calls.hits
            ));
        }
        per_batch[usize::from(with_sink)].push(calls.ns_per_call);
    }
    let [without, with] = per_batch.map(median);
    OneIdBatches {
        ns_without_sink: without,
        sink_ns: with - without,
    }
}

fn fail(message: String) -> ! {
    eprintln!("lookup bench: {message}");
    std::process::exit(1);
}

fn main() {
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let bench_started = Instant::now();
    let cpu_at_start = measure::CpuTimes::now();
    let load_at_start = report::load_average();
    let universe = Universe::new(config.rows, config.row_bytes);
    let batch = config.batch;
    let seconds = Duration::from_secs_f64(config.seconds);
    let has = |w: &str| config.workloads.contains(&w);
    let machine = report::Machine::probe();
    eprintln!(
        "lookup bench: {} rows x {} B, batch {batch}, threads {:?}, {} runs x {} s, workloads {:?}",
        config.rows,
        config.row_bytes,
        config.threads,
        config.runs,
        config.seconds,
        config.workloads
    );

    // About one id per stored row (at least 64 batches), so a pool's rows are
    // spread over the whole table; capped at 4M ids (48 MB of ids and row
    // numbers) per pool.
    let pool_batches = (config.rows.div_ceil(batch)).clamp(64, POOL_IDS / batch);
    let uniform = workload::uniform(&universe, batch, pool_batches, 0x756e_6966);
    let zipf = workload::zipf(&universe, batch, pool_batches, ZIPF_EXPONENT, 0x7a69_7066);
    eprintln!(
        "pools: {} batches each; zipf_miss misses {:.2}% of ids",
        pool_batches,
        zipf.miss_fraction() * 100.0
    );

    let shards = kvzch_rows::KvzchRust::new(config.row_bytes).shards();
    let mut results = Results::default();
    let mut memory = Vec::new();
    let mut agreements = Vec::new();
    let mut contenders: Vec<Box<dyn Contender>> = Vec::new();
    let mut tallies: Vec<Tally> = Vec::new();
    let mut publisher = Publisher::new(batch, universe.row_bytes);
    for &name in &config.contenders {
        let before = measure::resident_bytes();
        let huge_before = measure::huge_page_bytes();
        let mut contender = make(name, &universe, shards);
        let filled = fill(
            contender.as_mut(),
            &universe,
            &mut publisher,
            SizeHint::None,
        );
        let rss_delta = measure::resident_bytes().saturating_sub(before);
        let huge_page_delta = huge_before
            .zip(measure::huge_page_bytes())
            .map(|(before, after)| after.saturating_sub(before));
        eprintln!(
            "built {name}: fill {:.2} M rows/s, RSS +{:.1} MiB{}",
            filled.rows_per_s / 1e6,
            rss_delta as f64 / (1 << 20) as f64,
            contender
                .index_profile()
                .map(|profile| format!("; index: {profile}"))
                .unwrap_or_default()
        );
        // Not a sample of the fill series: every fill of those runs on memory
        // touched and freed just before, this one on whatever the process got.
        results.push(FIRST_FILL, name, 1, filled);
        memory.push(Memory {
            contender: name,
            rss_delta,
            huge_page_delta,
            accounted: contender.accounted_bytes(),
        });
        tallies.push(
            verify(
                contender.as_ref(),
                &universe,
                &[&uniform, &zipf],
                &mut agreements,
            )
            .unwrap_or_else(|e| fail(e)),
        );
        contenders.push(contender);
    }

    let progress = |what: &str, run: usize| {
        eprintln!(
            "{what} {}/{} ({:.0} s in)",
            run + 1,
            config.runs,
            bench_started.elapsed().as_secs_f64()
        );
    };
    let mut timestamps = vec![1u32; contenders.len()];
    for run in 0..config.runs {
        progress("run", run);
        let first_batch = run * 131 % pool_batches;
        // Each run starts with another contender and, every other run, with
        // the other thread count, so that none always takes the same place
        // in a run.
        let mut order: Vec<usize> = (0..contenders.len()).collect();
        order.rotate_left(run % contenders.len());
        let mut thread_counts = config.threads.clone();
        if run % 2 == 1 {
            thread_counts.reverse();
        }
        // A workload's thread counts one after the other, so that a run's
        // measurements of a contender on 1 and on 2 threads are taken seconds
        // apart, as its measurement and the limit's are: the shared machine's
        // pace drifts over minutes, and a run's scaling ratio should not.
        for (series, pool) in [("uniform_hit", &uniform), ("zipf_miss", &zipf)] {
            if !has(series) {
                continue;
            }
            for &threads in &thread_counts {
                for &at in &order {
                    let (contender, tally) = (&contenders[at], &mut tallies[at]);
                    let r =
                        measure::readers(contender.as_ref(), pool, threads, first_batch, || {
                            std::thread::sleep(seconds)
                        })
                        .unwrap_or_else(|e| fail(e));
                    *tally += Tally::from(&r);
                    let mut m = readers_measure(&r);
                    if threads > 1 {
                        // Where the host had put the readers' CPUs, measured
                        // right after them (NaN when they ended on one CPU or
                        // could not be placed).
                        let handoff = match r.cpus[..] {
                            [Some(a), Some(b), ..] => measure::cpu_handoff_ns(a, b),
                            _ => None,
                        };
                        m.extra
                            .push(("cpu_handoff_ns", handoff.unwrap_or(f64::NAN)));
                    }
                    results.push(series, contender.name(), threads, m);
                }
            }
        }
        for &threads in &thread_counts {
            if has("stats_overhead") {
                for &at in &order {
                    let (contender, tally) = (&contenders[at], &mut tallies[at]);
                    if !contender.set_counting_sink(None) {
                        continue;
                    }
                    // Throughput of full batches, in eighths of the run.
                    let order = SINK_ORDER.map(|with_sink| with_sink ^ (run % 2 == 1));
                    let mut halves: [Vec<measure::Readers>; 2] = Default::default();
                    for with_sink in order {
                        let r = with_counting_sink(
                            contender.as_ref(),
                            with_sink,
                            || {
                                measure::readers(
                                    contender.as_ref(),
                                    &zipf,
                                    threads,
                                    first_batch,
                                    || std::thread::sleep(seconds / order.len() as u32),
                                )
                                .unwrap_or_else(|e| fail(e))
                            },
                            |r| r.ids + r.warmup_ids,
                        );
                        *tally += Tally::from(&r);
                        halves[usize::from(with_sink)].push(r);
                    }
                    let [without, with] = halves.map(measure::Readers::combined);
                    let one_id = one_id_batches(contender.as_ref(), &zipf, threads, run, tally);
                    results.push(
                        "zipf_no_sink",
                        contender.name(),
                        threads,
                        readers_measure(&without),
                    );
                    results.push(
                        "zipf_one_sink",
                        contender.name(),
                        threads,
                        Measure {
                            extra: vec![
                                ("one_id_batch_ns", one_id.ns_without_sink),
                                ("sink_ns_per_batch", one_id.sink_ns),
                            ],
                            ..readers_measure(&with)
                        },
                    );
                }
            }
            if has("publish") {
                for &at in &order {
                    let (contender, timestamp, tally) =
                        (&contenders[at], &mut timestamps[at], &mut tallies[at]);
                    if !contender.live_publish() {
                        continue;
                    }
                    let idle = measure::readers(
                        contender.as_ref(),
                        &uniform,
                        threads,
                        first_batch,
                        || std::thread::sleep(seconds),
                    )
                    .unwrap_or_else(|e| fail(e));
                    let mut writer = None;
                    let during = measure::readers(
                        contender.as_ref(),
                        &uniform,
                        threads,
                        first_batch,
                        || {
                            // A thread of its own, so that its nice value is
                            // its own.
                            writer = Some(std::thread::scope(|scope| {
                                scope
                                    .spawn(|| {
                                        measure::set_own_nice(config.publisher_nice);
                                        republish_cycles(
                                            contender.as_ref(),
                                            &universe,
                                            batch,
                                            timestamp,
                                            seconds,
                                        )
                                    })
                                    .join()
                                    .expect("the writer thread panicked")
                            }));
                        },
                    )
                    .unwrap_or_else(|e| fail(e));
                    *tally += Tally::from(&idle);
                    *tally += Tally::from(&during);
                    let writer = writer.expect("the writer ran");
                    if let Some(e) = writer.error {
                        fail(e);
                    }
                    let name = contender.name();
                    results.push("publish_idle", name, threads, readers_measure(&idle));
                    let mut m = readers_measure(&during);
                    m.extra = vec![
                        ("p99_vs_idle", m.p99_ns / idle.percentile_ns(0.99)),
                        (
                            "writer_rows_per_s",
                            writer.published_rows as f64 / writer.publish_seconds,
                        ),
                        ("evict_ms", median(writer.evict_seconds) * 1e3),
                        ("preempted_share", during.preempted_share()),
                        (
                            "kept_cpu_p99_vs_idle",
                            measure::percentile(&during.kept_cpu_latencies_ns, 0.99)
                                / idle.percentile_ns(0.99),
                        ),
                        ("cycles", writer.cycles as f64),
                    ];
                    results.push("publish_during", name, threads, m);
                }
            }
        }
    }
    // The fills last, every run's after every reader workload: each allocates
    // and frees a table's worth of memory per contender, and readers measured
    // right after them ran slower than the same measurement a minute later
    // (BENCHMARKS.md, "What is measured").
    if has("publish") {
        for run in 0..config.runs {
            progress("fills", run);
            // Each fill into a contender of its own, dropped before the next.
            for hint in [SizeHint::None, SizeHint::Reserve] {
                // Every other run in reverse, so that no contender always
                // follows the same one.
                let mut order = config.contenders.clone();
                if run % 2 == 1 {
                    order.reverse();
                }
                for name in order {
                    measure::provision_memory(
                        universe.rows * (universe.row_bytes + FILL_BYTES_PER_ROW_BEYOND_PAYLOAD),
                    );
                    let mut fresh = make(name, &universe, shards);
                    let filled = fill(fresh.as_mut(), &universe, &mut publisher, hint);
                    results.push(hint.series(), name, 1, filled);
                    drop(fresh);
                    measure::return_freed_heap_memory();
                }
            }
        }
    }

    // Rows still right after the republishes, and the read counters of every
    // contender that keeps them counted exactly the hits and misses of every
    // batch it served, from every thread, over the whole run.
    let mut recheck = Vec::new();
    let mut counter_checks = Vec::new();
    for (contender, tally) in contenders.iter().zip(&mut tallies) {
        *tally += verify(
            contender.as_ref(),
            &universe,
            &[&uniform, &zipf],
            &mut recheck,
        )
        .unwrap_or_else(|e| fail(e));
        if let Some(counted) = contender.read_counters() {
            if counted != (tally.hits, tally.ids - tally.hits) {
                fail(format!(
                    "{}: its read counters say {counted:?} (hits, misses), its batches returned ({}, {})",
                    contender.name(),
                    tally.hits,
                    tally.ids - tally.hits
                ));
            }
            counter_checks.push((contender.name(), *tally));
        }
    }

    let report = report::Report {
        config: &config,
        machine: &machine,
        universe: &universe,
        results: &results,
        memory: &memory,
        agreements: &agreements,
        counter_checks: &counter_checks,
        pool_batches,
        seconds_total: bench_started.elapsed().as_secs_f64(),
        conditions: report::Conditions::since(cpu_at_start, load_at_start),
    };
    println!("{}", report.markdown());
    if let Some(path) = &config.json {
        std::fs::write(path, format!("{}\n", report.json()))
            .unwrap_or_else(|e| fail(format!("writing {path}: {e}")));
        eprintln!("wrote {path}");
    }
}
