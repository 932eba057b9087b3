//! What the first write to fresh memory costs, by page size: the part of a
//! fill that is the memory's, not the cache's.
//!
//! Each measurement maps `--mib` MiB (1 GiB by default) of anonymous memory,
//! advised for transparent huge pages or kept on 4 KiB pages, writes one byte
//! per 4 KiB, and times it; then unmaps it, maps as much again and times the
//! same writes at once, on memory just freed. Before each pair it waits
//! `--rest` seconds, so that a virtual machine whose balloon driver reports
//! free memory to the hypervisor has reported the memory freed before.
//!
//! The lookup suite's contenders meet both kinds: kvzch's rows and index and
//! the limit's rows are on huge pages, the upstream-design peer's boxed rows
//! and the crates' maps on the heap's 4 KiB pages. BENCHMARKS.md ("Limits of
//! the harness") says what this machine measured and what it means for the
//! fills.
//!
//! `cargo bench --bench first_touch` (about a minute; maps 1 GiB at a time),
//! or `-- --quick` (64 MiB, no rest).

#[path = "lookup/flags.rs"]
mod flags;
#[path = "lookup/huge_map.rs"]
mod huge_map;

use std::time::{Duration, Instant};

use flags::number;
use huge_map::HugeMap;
use memmap2::{Advice, MmapMut};

const SMALL_PAGE: usize = 4096;

struct Config {
    mib: usize,
    rest: Duration,
    rounds: usize,
}

fn parse_args() -> Config {
    let mut config = Config {
        mib: 1024,
        rest: Duration::from_secs(8),
        rounds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                config.mib = 64;
                config.rest = Duration::ZERO;
                config.rounds = 1;
            }
            "--mib" => config.mib = number("--mib", args.next()),
            "--rest" => config.rest = Duration::from_secs(number("--rest", args.next())),
            "--rounds" => config.rounds = number("--rounds", args.next()),
            // cargo bench passes this to every bench target.
            "--bench" => {}
            other => {
                panic!("unknown flag {other}; flags: --quick, --mib N, --rest SECONDS, --rounds N")
            }
        }
    }
    config
}

#[derive(Clone, Copy, PartialEq)]
enum Pages {
    Huge,
    Small,
}

impl Pages {
    fn name(self) -> &'static str {
        match self {
            Pages::Huge => "2 MiB (transparent huge pages)",
            Pages::Small => "4 KiB",
        }
    }
}

/// Fresh memory of `bytes` on `pages`, which the caller writes through.
enum Fresh {
    Huge(HugeMap),
    Small(MmapMut),
}

impl Fresh {
    fn map(pages: Pages, bytes: usize) -> Fresh {
        match pages {
            Pages::Huge => Fresh::Huge(HugeMap::new(bytes)),
            Pages::Small => {
                let map = MmapMut::map_anon(bytes).expect("anonymous mapping");
                // Where THP is on for every mapping, this keeps these on 4 KiB
                // pages; failure leaves the system's default.
                let _ = map.advise(Advice::NoHugePage);
                Fresh::Small(map)
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Fresh::Huge(map) => map.bytes(),
            Fresh::Small(map) => map,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Fresh::Huge(map) => map.bytes_mut(),
            Fresh::Small(map) => map,
        }
    }
}

/// The process's resident anonymous memory on huge pages, in bytes.
fn anon_huge_bytes() -> usize {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("AnonHugePages:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<usize>().ok())
        .map_or(0, |kib| kib << 10)
}

/// Seconds to write one byte in each 4 KiB of fresh memory, and the share of
/// it that was on huge pages once written.
fn touch(pages: Pages, bytes: usize) -> (f64, f64) {
    let mut fresh = Fresh::map(pages, bytes);
    let huge_before = anon_huge_bytes();
    let started = Instant::now();
    for page in fresh.bytes_mut().chunks_mut(SMALL_PAGE) {
        page[0] = 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let on_huge = anon_huge_bytes().saturating_sub(huge_before) as f64 / bytes as f64;
    assert!(fresh
        .bytes()
        .iter()
        .step_by(SMALL_PAGE)
        .all(|&byte| byte == 1));
    (seconds, on_huge.min(1.0))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let config = parse_args();
    let bytes = config.mib << 20;
    let gib = bytes as f64 / f64::from(1 << 30);
    let order = [Pages::Huge, Pages::Small];
    // Per kind of page: first writes after a rest, and writes right after.
    let mut first = [Vec::new(), Vec::new()];
    let mut again = [Vec::new(), Vec::new()];
    let mut on_huge = [Vec::new(), Vec::new()];
    for round in 0..config.rounds {
        for turn in 0..order.len() {
            // Alternate which kind goes first, so neither always follows the other.
            let k = (round + turn) % order.len();
            std::thread::sleep(config.rest);
            let (seconds, huge) = touch(order[k], bytes);
            first[k].push(seconds / gib);
            on_huge[k].push(huge);
            let (seconds, _) = touch(order[k], bytes);
            again[k].push(seconds / gib);
        }
    }

    println!(
        "## First writes to fresh memory: {} MiB, one byte per 4 KiB, {} rounds, {} s of rest before each\n",
        config.mib,
        config.rounds,
        config.rest.as_secs()
    );
    println!("| pages | on huge pages | first, s/GiB (median, range) | right after freeing, s/GiB (median, range) | first / right after |");
    println!("|---|---:|---:|---:|---:|");
    for (k, pages) in order.iter().enumerate() {
        let range = |values: &[f64]| {
            let (low, high) = values
                .iter()
                .fold((f64::MAX, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
            format!("{low:.3}-{high:.3}")
        };
        let (first_range, again_range) = (range(&first[k]), range(&again[k]));
        let (first_median, again_median) = (median(&mut first[k]), median(&mut again[k]));
        println!(
            "| {} | {:.0}% | {first_median:.3} ({first_range}) | {again_median:.3} ({again_range}) | {:.1}x |",
            pages.name(),
            100.0 * median(&mut on_huge[k]),
            first_median / again_median
        );
    }
    let reporting = std::path::Path::new("/sys/module/page_reporting").exists();
    println!(
        "\nFree page reporting (the page_reporting module): {}.",
        if reporting { "loaded" } else { "not loaded" }
    );
}
