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
//! Then the same mapping, as 4M rows of 256 B, is gathered in batches of 4096
//! uniform rows, as the lookup suite's limit gathers them: in the batch's
//! order, and in the order of the rows' 2 MiB pages (each row still copied to
//! its own place). A page then takes its translation once per visit, for the
//! eight or so rows a batch holds in it, instead of once per row.
//!
//! `cargo bench --bench translation` (a few seconds; maps 1 GiB).

#[path = "lookup/huge_map.rs"]
mod huge_map;
// Only the rows' hint: the gather reads no index.
#[allow(dead_code)]
#[path = "lookup/prefetch.rs"]
mod prefetch;

use std::time::Instant;

use huge_map::{HugeMap, HUGE_PAGE};
use prefetch::prefetch_row;

const SPAN_BYTES: usize = 1 << 30;
const LINE: usize = 64;
const SMALL_PAGE: usize = 4096;
/// Lines read per pass: 16 MiB of them.
const LINES: usize = 1 << 18;
const PASSES: usize = 9;
const ROW: usize = 256;
const BATCH: usize = 4096;
/// Batches gathered per pass: a million rows, a quarter of the table.
const BATCHES: usize = 256;
/// Rows asked for ahead of the one copied, as the limit asks at 256 B.
const ROWS_AHEAD: usize = 8;

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
    median_of_passes(per_read)
}

/// The median of `PASSES` timed passes.
fn median_of_passes(mut passes: Vec<f64>) -> f64 {
    passes.sort_by(f64::total_cmp);
    passes[PASSES / 2]
}

/// The 2 MiB page that row `at` starts in.
fn page_of(at: u32) -> usize {
    at as usize * ROW / HUGE_PAGE
}

/// Copies `rows[order[k].0]` to place `order[k].1` of `out`, in `order`,
/// asking for each row `ROWS_AHEAD` rows before its copy, as the limit does.
fn gather(rows: &[u8], order: &[(u32, u32)], out: &mut [u8]) {
    let row = |at: u32| &rows[at as usize * ROW..][..ROW];
    for &(at, _) in order.iter().take(ROWS_AHEAD) {
        prefetch_row(row(at));
    }
    for (k, &(at, place)) in order.iter().enumerate() {
        if let Some(&(ahead, _)) = order.get(k + ROWS_AHEAD) {
            prefetch_row(row(ahead));
        }
        out[place as usize * ROW..][..ROW].copy_from_slice(row(at));
    }
}

/// `batch`'s rows with their places in it, in the batch's order.
fn in_batch_order(batch: &[u32], order: &mut Vec<(u32, u32)>) {
    order.clear();
    order.extend(batch.iter().zip(0..).map(|(&at, place)| (at, place)));
}

/// `batch`'s rows with their places in it, in the order of their 2 MiB pages:
/// a counting sort by page, as a lookup would have to do once it knows the
/// rows.
fn in_page_order(batch: &[u32], order: &mut Vec<(u32, u32)>, starts: &mut Vec<u32>) {
    starts.clear();
    starts.resize(SPAN_BYTES / HUGE_PAGE + 1, 0);
    for &at in batch {
        starts[page_of(at) + 1] += 1;
    }
    for page in 1..starts.len() {
        starts[page] += starts[page - 1];
    }
    order.clear();
    order.resize(batch.len(), (0, 0));
    for (&at, place) in batch.iter().zip(0..) {
        let next = &mut starts[page_of(at)];
        order[*next as usize] = (at, place);
        *next += 1;
    }
}

/// The uniform rows the gathers read: `BATCHES` batches of `BATCH`.
fn uniform_batches() -> Vec<Vec<u32>> {
    let row_count = (SPAN_BYTES / ROW) as u64;
    (0..BATCHES)
        .map(|b| {
            (0..BATCH)
                .map(|k| (scatter((b * BATCH + k) as u64 ^ 0x5eed) % row_count) as u32)
                .collect()
        })
        .collect()
}

/// How a case orders each of its batches before the gather, within the pass.
type Ordering = fn(&[u32], &mut Vec<(u32, u32)>, &mut Vec<u32>);

/// Median million rows a second over the passes of each case, the cases
/// taking turns within a pass. Each pass checks its last batch's rows against
/// their numbered words.
fn time_gathers(memory: &[u8], cases: &[(&[Vec<u32>], Ordering)]) -> Vec<f64> {
    let mut out = vec![0u8; BATCH * ROW];
    let (mut order, mut starts) = (Vec::new(), Vec::new());
    let mut rates = vec![Vec::with_capacity(PASSES); cases.len()];
    for pass in 0..=PASSES {
        for (&(batches, ordering), rate) in cases.iter().zip(&mut rates) {
            let started = Instant::now();
            for batch in batches {
                ordering(batch, &mut order, &mut starts);
                gather(memory, &order, &mut out);
            }
            let elapsed = started.elapsed();
            for (place, &at) in batches[batches.len() - 1].iter().enumerate() {
                let first_word = (at as usize * ROW / 8) as u64;
                assert_eq!(
                    word(&out, place * ROW / 8),
                    first_word,
                    "a row out of place"
                );
            }
            if pass > 0 {
                rate.push((batches.len() * BATCH) as f64 / elapsed.as_secs_f64() / 1e6);
            }
        }
    }
    rates.into_iter().map(median_of_passes).collect()
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
    let batches = uniform_batches();
    let mut sorted = batches.clone();
    for batch in &mut sorted {
        batch.sort_unstable_by_key(|&at| page_of(at));
    }
    let in_batch_order: Ordering = |batch, order, _| in_batch_order(batch, order);
    let cases: [(&str, &[Vec<u32>], Ordering); 3] = [
        ("the batch's", &batches, in_batch_order),
        ("by 2 MiB page, sorted in the pass", &batches, in_page_order),
        ("by 2 MiB page, sorted beforehand", &sorted, in_batch_order),
    ];
    let timed: Vec<_> = cases
        .iter()
        .map(|&(_, batches, ordering)| (batches, ordering))
        .collect();
    let rates = time_gathers(memory, &timed);
    println!(
        "\n### {BATCHES} batches of {BATCH} uniform rows of {ROW} B from the same 1 GiB, \
         gathered as the limit does, median of {PASSES} passes\n"
    );
    println!("| order of the gather | M rows/s | vs the batch's order |");
    println!("|---|---:|---:|");
    for ((name, _, _), rate) in cases.iter().zip(&rates) {
        println!("| {name} | {rate:.2} | {:.2}x |", rate / rates[0]);
    }
    println!(
        "\nThe process's memory on huge pages: {} (the mapping is {} kB).",
        anon_huge_pages(),
        SPAN_BYTES >> 10
    );
}
