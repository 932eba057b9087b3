//! What one random read costs against the span of memory the reads hop over:
//! the part of a lookup's cost that is address translation, not the memory.
//!
//! The same number of cache lines (262,144, 16 MiB) is read in random order,
//! each read independent of the others as a lookup pipeline's are, from one
//! 1 GiB mapping on transparent huge pages. Only where the lines lie changes:
//! packed into 16 MiB, or one per slot of a span of 32 MiB to 1 GiB, or the
//! 1 GiB span read one 2 MiB page at a time, or as 4096 whole 4 KiB pages
//! over the gigabyte. The cache holds as many lines in every case; where the
//! time per read grows with the span, it goes to finding the pages.
//! BENCHMARKS.md ("What the design leaves") says what this machine measured
//! and what it means for the lookup suite's limit.
//!
//! `cargo bench --bench translation` (a few seconds; maps 1 GiB).

#[path = "lookup/huge_map.rs"]
mod huge_map;

use std::time::Instant;

use huge_map::{HugeMap, HUGE_PAGE};

const SPAN_BYTES: usize = 1 << 30;
const LINE: usize = 64;
const SMALL_PAGE: usize = 4096;
/// Lines read per pass: 16 MiB of them.
const LINES: usize = 1 << 18;
const PASSES: usize = 9;

/// SplitMix64's finalizer: the same pseudo-random value for the same input,
/// so every run reads the same lines in the same order.
fn scatter(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A line of the `bytes` starting at `start`, picked by `seed`.
fn line_in(start: usize, bytes: usize, seed: usize) -> usize {
    start + (scatter(seed as u64) % (bytes / LINE) as u64) as usize * LINE
}

/// Puts `words` in a pseudo-random order of its own.
fn shuffle(words: &mut [usize], salt: u64) {
    words.sort_unstable_by_key(|&w| scatter(w as u64 ^ salt));
}

/// Numbers the mapping's 8-byte words (word `i` holds `i`), so a pass's sum
/// says it read the words it was given.
fn number_words(map: &mut HugeMap) {
    for (i, word) in map.bytes_mut().chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&(i as u64).to_ne_bytes());
    }
}

fn word(memory: &[u8], index: usize) -> u64 {
    u64::from_ne_bytes(memory[index * 8..][..8].try_into().expect("8 bytes"))
}

/// One line's first word in each `stride` bytes from the span's start, the
/// line picked at random within the stride, in random order.
fn spread(stride: usize) -> Vec<usize> {
    let mut words: Vec<usize> = (0..LINES)
        .map(|k| line_in(k * stride, stride, k) / 8)
        .collect();
    shuffle(&mut words, stride as u64);
    words
}

/// The 1 GiB spread (a line per 4 KiB page), read a 2 MiB page at a time: the
/// pages in random order, each page's lines in random order.
fn by_huge_page() -> Vec<usize> {
    let pages = SPAN_BYTES / HUGE_PAGE;
    let per_page = LINES / pages;
    let mut order: Vec<usize> = (0..pages).collect();
    shuffle(&mut order, 1);
    let mut words = Vec::with_capacity(LINES);
    for page in order {
        let start = words.len();
        words.extend((0..per_page).map(|k| {
            let small_page = page * HUGE_PAGE + k * SMALL_PAGE;
            line_in(small_page, SMALL_PAGE, small_page) / 8
        }));
        shuffle(&mut words[start..], 2);
    }
    words
}

/// Whole 4 KiB pages, evenly over the span, every line of each, in random
/// order.
fn whole_small_pages() -> Vec<usize> {
    let lines_per_page = SMALL_PAGE / LINE;
    let stride = SPAN_BYTES / (LINES / lines_per_page);
    let mut words: Vec<usize> = (0..LINES)
        .map(|k| ((k / lines_per_page) * stride + (k % lines_per_page) * LINE) / 8)
        .collect();
    shuffle(&mut words, 3);
    words
}

/// Median nanoseconds per read over the passes (the first pass warms up).
fn time_reads(memory: &[u8], words: &[usize]) -> f64 {
    let expected: u64 = words.iter().map(|&w| w as u64).sum();
    let mut per_read = Vec::with_capacity(PASSES);
    for pass in 0..=PASSES {
        let started = Instant::now();
        let sum: u64 = words.iter().map(|&w| word(memory, w)).sum();
        let elapsed = started.elapsed();
        assert_eq!(sum, expected, "a pass read other words than it was given");
        if pass > 0 {
            per_read.push(elapsed.as_nanos() as f64 / words.len() as f64);
        }
    }
    per_read.sort_by(f64::total_cmp);
    per_read[PASSES / 2]
}

/// The process's `AnonHugePages` line of `/proc/self/smaps_rollup`, in kB.
fn anon_huge_pages() -> String {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|smaps| {
            smaps
                .lines()
                .find(|line| line.starts_with("AnonHugePages:"))
                .map(|line| line["AnonHugePages:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn main() {
    let mut map = HugeMap::new(SPAN_BYTES);
    number_words(&mut map);
    let memory = map.bytes();
    let mut cases: Vec<(String, Vec<usize>)> = Vec::new();
    let mut span = LINES * LINE;
    while span <= SPAN_BYTES {
        let name = format!("one line in each {} B of {} MiB", span / LINES, span >> 20);
        cases.push((name, spread(span / LINES)));
        span *= 2;
    }
    cases.push((
        "1 GiB as above, a 2 MiB page at a time".to_string(),
        by_huge_page(),
    ));
    cases.push((
        "4096 whole 4 KiB pages over 1 GiB".to_string(),
        whole_small_pages(),
    ));

    println!("### {LINES} random reads of 64-byte lines (16 MiB), median of {PASSES} passes\n");
    println!("| where the lines lie | ns per read | vs packed |");
    println!("|---|---:|---:|");
    let mut packed = None;
    for (name, words) in &cases {
        let ns = time_reads(memory, words);
        let packed_ns = *packed.get_or_insert(ns);
        println!("| {name} | {ns:.2} | {:.2}x |", ns / packed_ns);
    }
    println!(
        "\nThe process's memory on huge pages: {} (the mapping is {} kB).",
        anon_huge_pages(),
        SPAN_BYTES >> 10
    );
}
