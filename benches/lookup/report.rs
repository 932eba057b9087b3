//! The results as Markdown tables (printed) and as JSON (`--json`), with the
//! issue's targets checked against the medians.

use std::fmt::Write;

use crate::json::Json;
use crate::measure::CpuTimes;
use crate::workload::Universe;
use crate::{median, Agreement, Config, Measure, Memory, Results, Tally, FIRST_FILL};

pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub transparent_hugepages: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(f64::NAN);
        let thp = read("/sys/kernel/mm/transparent_hugepage/enabled");
        let transparent_hugepages = thp
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
            .map_or("unknown".to_string(), |(mode, _)| mode.to_string());
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            memory_gib: memory_kib / (1 << 20) as f64,
            transparent_hugepages,
        }
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    read("/proc/loadavg")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// How busy the machine was with other work while the bench ran.
pub struct Conditions {
    pub others_cpu_seconds: f64,
    pub steal_seconds: f64,
    pub load_at_start: f64,
    pub load_at_end: f64,
}

impl Conditions {
    pub fn since(start: CpuTimes, load_at_start: f64) -> Conditions {
        let end = CpuTimes::now();
        Conditions {
            others_cpu_seconds: ((end.busy - start.busy) - (end.own - start.own)).max(0.0),
            steal_seconds: end.steal - start.steal,
            load_at_start,
            load_at_end: load_average(),
        }
    }
}

pub struct Report<'a> {
    pub config: &'a Config,
    pub machine: &'a Machine,
    pub universe: &'a Universe,
    pub results: &'a Results,
    pub memory: &'a [Memory],
    pub agreements: &'a [Agreement],
    pub counter_checks: &'a [(&'static str, Tally)],
    pub pool_batches: usize,
    pub seconds_total: f64,
    pub conditions: Conditions,
}

/// An issue target, checked against the medians.
struct Target {
    what: String,
    measured: String,
    met: bool,
}

const KVZCH: &str = "kvzch";
const PEER: &str = "upstream_peer";
const LIMIT: &str = "limit";
const INDEXED_LIMIT: &str = "indexed_limit";
const CRATES: [&str; 2] = ["dashmap", "quick_cache"];
/// The fill series and their titles: without a size hint, and after every
/// contender that can be told the table's size was told (`Contender::reserve`).
const FILLS: [(&str, &str); 2] = [
    ("fill", "fill: batch_set of the whole table"),
    (
        "fill_reserved",
        "fill with a size hint: reserve, then batch_set of the whole table",
    ),
];
/// Shown, not judged: the fills above run on memory touched and freed just
/// before, this one on whatever the process was given.
const FIRST_FILL_TITLE: &str = "first fill: batch_set of the whole table into the contender \
     the readers read, the process's first (one sample, on fresh memory; not judged)";

fn rate(x: f64) -> String {
    if x.is_nan() {
        "—".into()
    } else {
        format!("{:.2} M", x / 1e6)
    }
}

fn micros(ns: f64) -> String {
    match ns / 1e3 {
        us if us.is_nan() => "—".into(),
        us if us < 100.0 => format!("{us:.1}"),
        us => format!("{us:.0}"),
    }
}

/// The side of a bar a target's figure must be on.
#[derive(Clone, Copy)]
enum Bar {
    AtLeast(f64),
    AtMost(f64),
}

impl Bar {
    fn met_by(self, x: f64) -> bool {
        match self {
            Bar::AtLeast(bar) => x >= bar,
            Bar::AtMost(bar) => x <= bar,
        }
    }
}

/// The range of a target's figure over the repetitions and how many met it:
/// on a shared machine that range, not the median alone, says whether a
/// median near the bar means anything.
fn spread(runs: &[f64], bar: Bar) -> String {
    let (Some(low), Some(high)) = (
        runs.iter().copied().reduce(f64::min),
        runs.iter().copied().reduce(f64::max),
    ) else {
        return "no runs".into();
    };
    let met = runs.iter().filter(|&&x| bar.met_by(x)).count();
    format!(
        "runs {}-{}, {met} of {} met",
        ratio(low),
        ratio(high),
        runs.len()
    )
}

fn ratio(x: f64) -> String {
    if x.is_nan() {
        "—".into()
    } else {
        format!("{x:.2}x")
    }
}

impl Report<'_> {
    fn contenders(&self) -> &[&'static str] {
        &self.config.contenders
    }

    fn median(&self, series: &str, contender: &str, threads: usize) -> Option<Measure> {
        self.results.median(series, contender, threads)
    }

    fn median_rate(&self, series: &str, contender: &str, threads: usize) -> f64 {
        self.median(series, contender, threads)
            .map_or(f64::NAN, |m| m.rows_per_s)
    }

    fn extra(&self, series: &str, contender: &str, threads: usize, name: &str) -> f64 {
        self.median(series, contender, threads)
            .and_then(|m| m.extra(name))
            .unwrap_or(f64::NAN)
    }

    /// Each repetition's throughput of `(series, contender, threads)` over
    /// that of `over`. A repetition measures every contender, on every thread
    /// count, in turn, so the two figures of a pair were taken seconds apart,
    /// where the medians of a run may come from different repetitions.
    fn paired_ratios(&self, of: (&str, &str, usize), over: (&str, &str, usize)) -> Vec<f64> {
        self.paired_ratios_of(of, over, |m| Some(m.rows_per_s))
    }

    /// [`paired_ratios`](Self::paired_ratios) of another figure of each
    /// measurement; a repetition without it is left out.
    fn paired_ratios_of(
        &self,
        (series, contender, threads): (&str, &str, usize),
        (over_series, over_contender, over_threads): (&str, &str, usize),
        value: impl Fn(&Measure) -> Option<f64>,
    ) -> Vec<f64> {
        match (
            self.results.runs(series, contender, threads),
            self.results.runs(over_series, over_contender, over_threads),
        ) {
            (Some(runs), Some(over)) => runs
                .iter()
                .zip(over)
                .filter_map(|(m, o)| Some(value(m)? / value(o)?))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Appends kvzch's `figure` over each crate's, and says whether it is
    /// ahead of every crate measured.
    fn ahead_of_crates(
        &self,
        measured: &mut String,
        kvzch: f64,
        figure: impl Fn(&str) -> f64,
    ) -> bool {
        let mut ahead = true;
        for name in CRATES {
            let other = figure(name);
            if !other.is_nan() {
                write!(measured, ", {} {name}", ratio(kvzch / other)).unwrap();
                ahead &= kvzch > other;
            }
        }
        ahead
    }

    /// The median over runs of (one sink / no sink) throughput, each run's two
    /// measurements being taken back to back.
    fn sink_ratio(&self, contender: &str, threads: usize) -> f64 {
        median(self.paired_ratios(
            ("zipf_one_sink", contender, threads),
            ("zipf_no_sink", contender, threads),
        ))
    }

    /// Each repetition's throughput of `contender` on `threads` threads over
    /// its throughput on one, in that repetition.
    fn scaling_runs(&self, series: &str, contender: &str, threads: usize) -> Vec<f64> {
        self.paired_ratios((series, contender, threads), (series, contender, 1))
    }

    /// kvzch's scaling ratio on `series` in each repetition (`scaling`, from
    /// [`scaling_runs`](Self::scaling_runs)), beside the handoff time between
    /// its two readers' CPUs measured right after them.
    fn scaling_by_placement(&self, series: &str, scaling: &[f64]) -> String {
        let Some(runs) = self.results.runs(series, KVZCH, 2) else {
            return String::new();
        };
        let placed: Vec<String> = scaling
            .iter()
            .zip(runs)
            .map(|(&x, m)| {
                let handoff = m
                    .extra("cpu_handoff_ns")
                    .filter(|ns| !ns.is_nan())
                    .map_or("—".to_string(), |ns| format!("{ns:.0} ns"));
                format!("{} at {handoff}", ratio(x))
            })
            .collect();
        placed.join(", ")
    }

    /// kvzch's per-repetition ratio to `other` on `series`, as a spread.
    fn kvzch_runs_over(&self, series: &str, other: &str, threads: usize, bar: Bar) -> String {
        spread(
            &self.paired_ratios((series, KVZCH, threads), (series, other, threads)),
            bar,
        )
    }

    /// What one sink adds to a batch (measured on 1-id batches), as a share of
    /// the median `zipf_miss` batch without a sink.
    fn sink_share_of_batch(&self, contender: &str, threads: usize) -> f64 {
        let sink_ns = self.extra("zipf_one_sink", contender, threads, "sink_ns_per_batch");
        sink_ns
            / self
                .median("zipf_no_sink", contender, threads)
                .map_or(f64::NAN, |m| m.p50_ns)
    }

    fn memory_per_row(&self, bytes: u64) -> f64 {
        let payload = (self.universe.rows * self.universe.row_bytes) as f64;
        (bytes as f64 - payload) / self.universe.rows as f64
    }

    fn reader_table(&self, out: &mut String, series: &'static str) {
        let threads = &self.config.threads;
        writeln!(
            out,
            "| contender | threads | rows/s | p50 µs | p99 µs | vs limit | vs peer | vs 1 thread |"
        )
        .unwrap();
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|").unwrap();
        for &t in threads {
            let limit = self.median_rate(series, LIMIT, t);
            let peer = self.median_rate(series, PEER, t);
            for &c in self.contenders() {
                let Some(m) = self.median(series, c, t) else {
                    continue;
                };
                let scaling = if t > 1 && threads.contains(&1) {
                    ratio(median(self.scaling_runs(series, c, t)))
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "| {c} | {t} | {} | {} | {} | {} | {} | {scaling} |",
                    rate(m.rows_per_s),
                    micros(m.p50_ns),
                    micros(m.p99_ns),
                    ratio(m.rows_per_s / limit),
                    ratio(m.rows_per_s / peer),
                )
                .unwrap();
            }
        }
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let c = self.config;
        let has = |w: &str| c.workloads.contains(&w);
        writeln!(
            out,
            "## Results: {} rows x {} B, batches of {}, {} runs x {} s, medians\n",
            c.rows, c.row_bytes, c.batch, c.runs, c.seconds
        )
        .unwrap();
        let m = self.machine;
        writeln!(
            out,
            "Machine: {} CPUs, {}, {:.1} GiB, Linux {}, transparent huge pages: {}. Pools of {} batches; the whole bench took {:.0} s.\n",
            m.cpus, m.cpu, m.memory_gib, m.kernel, m.transparent_hugepages, self.pool_batches, self.seconds_total
        )
        .unwrap();
        let k = &self.conditions;
        writeln!(
            out,
            "Other work on the machine meanwhile: {:.0} CPU-seconds ({:.0}% of one CPU on average), {:.1} s stolen by the hypervisor; load average {:.2} at the start, {:.2} at the end.\n",
            k.others_cpu_seconds,
            k.others_cpu_seconds / self.seconds_total * 100.0,
            k.steal_seconds,
            k.load_at_start,
            k.load_at_end
        )
        .unwrap();
        for series in ["uniform_hit", "zipf_miss"] {
            if has(series) {
                writeln!(out, "### {series}\n").unwrap();
                if series == "zipf_miss" {
                    if let Some(a) = self.agreements.iter().find(|a| a.pool == series) {
                        writeln!(
                            out,
                            "Zipf(1.05) over 1.1x the stored keys; {:.2}% of the pool's ids miss.\n",
                            a.miss_fraction * 100.0
                        )
                        .unwrap();
                    }
                }
                self.reader_table(&mut out, series);
                out.push('\n');
            }
        }
        for (series, title) in FILLS.into_iter().chain([(FIRST_FILL, FIRST_FILL_TITLE)]) {
            if self.median(series, PEER, 1).is_none() {
                continue;
            }
            writeln!(
                out,
                "### {title}, 1 thread\n\n| contender | rows/s | batch p50 µs | batch p99 µs | vs limit | vs peer |\n|---|---:|---:|---:|---:|---:|"
            )
            .unwrap();
            let (limit_fill, peer_fill) = (
                self.median_rate(series, LIMIT, 1),
                self.median_rate(series, PEER, 1),
            );
            for &name in self.contenders() {
                if let Some(m) = self.median(series, name, 1) {
                    writeln!(
                        out,
                        "| {name} | {} | {} | {} | {} | {} |",
                        rate(m.rows_per_s),
                        micros(m.p50_ns),
                        micros(m.p99_ns),
                        ratio(m.rows_per_s / limit_fill),
                        ratio(m.rows_per_s / peer_fill)
                    )
                    .unwrap();
                }
            }
            out.push('\n');
        }
        if has("publish") {
            let publisher = match c.publisher_nice {
                0 => String::new(),
                nice => format!(", the writer at nice {nice}"),
            };
            writeln!(
                out,
                "### publish: republish of every row + evict_older_than while readers run uniform_hit{publisher}\n\n\
                 | contender | readers | idle p50 µs | idle p99 µs | during p50 µs | during p99 µs | p99 during / idle | batches preempted | p99 of the others / idle | reader rows/s during | vs peer | writer rows/s | evict ms |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            )
            .unwrap();
            for &t in &c.threads {
                let peer = self.median_rate("publish_during", PEER, t);
                for &name in self.contenders() {
                    let (Some(idle), Some(during)) = (
                        self.median("publish_idle", name, t),
                        self.median("publish_during", name, t),
                    ) else {
                        continue;
                    };
                    let extra = |n| self.extra("publish_during", name, t, n);
                    writeln!(
                        out,
                        "| {name} | {t} | {} | {} | {} | {} | {} | {:.1}% | {} | {} | {} | {} | {:.1} |",
                        micros(idle.p50_ns),
                        micros(idle.p99_ns),
                        micros(during.p50_ns),
                        micros(during.p99_ns),
                        ratio(extra("p99_vs_idle")),
                        extra("preempted_share") * 100.0,
                        ratio(extra("kept_cpu_p99_vs_idle")),
                        rate(during.rows_per_s),
                        ratio(during.rows_per_s / peer),
                        rate(extra("writer_rows_per_s")),
                        extra("evict_ms"),
                    )
                    .unwrap();
                }
            }
            out.push('\n');
        }
        if has("stats_overhead") {
            writeln!(
                out,
                "### stats_overhead: zipf_miss with no sink vs one sink adding to an atomic\n\n\
                 | contender | threads | no sink rows/s | one sink rows/s | one sink / no sink | 1-id batch ns (no sink) | sink ns per batch (on 1-id batches) | batch p50 µs (no sink) | sink share of a batch |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            )
            .unwrap();
            for &t in &c.threads {
                for &name in self.contenders() {
                    let (Some(without), Some(with)) = (
                        self.median("zipf_no_sink", name, t),
                        self.median("zipf_one_sink", name, t),
                    ) else {
                        continue;
                    };
                    writeln!(
                        out,
                        "| {name} | {t} | {} | {} | {} | {:.1} | {:.1} | {} | {:.4}% |",
                        rate(without.rows_per_s),
                        rate(with.rows_per_s),
                        ratio(self.sink_ratio(name, t)),
                        self.extra("zipf_one_sink", name, t, "one_id_batch_ns"),
                        self.extra("zipf_one_sink", name, t, "sink_ns_per_batch"),
                        micros(without.p50_ns),
                        self.sink_share_of_batch(name, t) * 100.0,
                    )
                    .unwrap();
                }
            }
            out.push('\n');
        }
        writeln!(
            out,
            "### memory beyond the payload ({} B/row)\n\n\
             | contender | RSS growth while built | of it on huge pages | RSS B/row beyond payload | own accounting B/row beyond payload |\n|---|---:|---:|---:|---:|",
            self.universe.row_bytes
        )
        .unwrap();
        for mem in self.memory {
            writeln!(
                out,
                "| {} | {:.1} MiB | {} | {:.1} | {} |",
                mem.contender,
                mem.rss_delta as f64 / (1 << 20) as f64,
                mem.huge_page_share()
                    .map_or("—".into(), |share| format!("{:.0}%", share * 100.0)),
                self.memory_per_row(mem.rss_delta),
                mem.accounted
                    .map_or("—".into(), |b| format!("{:.1}", self.memory_per_row(b)))
            )
            .unwrap();
        }
        out.push('\n');
        writeln!(
            out,
            "### same work: hits returned on the first {} batches of each stream\n",
            self.agreements
                .first()
                .map_or(0, |a| a.ids as usize / c.batch)
        )
        .unwrap();
        for a in self.agreements {
            let all_equal = a.returned.iter().all(|r| r.hits == a.expected_hits);
            let counted: Vec<String> = a
                .returned
                .iter()
                .filter_map(|r| {
                    r.counted
                        .map(|(h, m)| format!("{} counted {h} hits + {m} misses", r.contender))
                })
                .collect();
            writeln!(
                out,
                "- {}: {} ids, {} expected hits; every contender returned {}; {}.",
                a.pool,
                a.ids,
                a.expected_hits,
                if all_equal {
                    "exactly that".to_string()
                } else {
                    let hits: Vec<_> = a.returned.iter().map(|r| (r.contender, r.hits)).collect();
                    format!("{hits:?}")
                },
                counted.join(", ")
            )
            .unwrap();
        }
        for (name, tally) in self.counter_checks {
            writeln!(
                out,
                "- {name}: its cumulative read counters equal the hits ({}) and misses ({}) its batches returned over the whole run.",
                tally.hits,
                tally.ids - tally.hits
            )
            .unwrap();
        }
        writeln!(out, "\nEvery timed batch's hit count was also checked against the stream's, and every republish's eviction removed exactly the stale rows.\n").unwrap();
        writeln!(out, "### targets (kvzch through its Rust API; medians)\n").unwrap();
        if c.quick {
            writeln!(
                out,
                "A quick run: a smoke test of the suite and of this judging. Its verdicts say nothing of the targets, which the full run (no `--quick`) judges.\n"
            )
            .unwrap();
        }
        writeln!(out, "| target | measured | met |\n|---|---|---|").unwrap();
        for t in self.targets() {
            writeln!(
                out,
                "| {} | {} | {} |",
                t.what,
                t.measured,
                if t.met { "yes" } else { "**no**" }
            )
            .unwrap();
        }
        out
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let c = self.config;
        if !c.contenders.contains(&KVZCH) {
            return targets;
        }
        let mut target = |what: String, measured: String, met: bool| {
            targets.push(Target {
                what,
                measured,
                met,
            })
        };
        let uniform_1 = self.median_rate("uniform_hit", KVZCH, 1);
        if !uniform_1.is_nan() {
            let limit = self.median_rate("uniform_hit", LIMIT, 1);
            let x = uniform_1 / limit;
            let bar = Bar::AtLeast(0.6);
            let mut measured = format!(
                "{} ({})",
                ratio(x),
                self.kvzch_runs_over("uniform_hit", LIMIT, 1, bar)
            );
            let indexed = self.median_rate("uniform_hit", INDEXED_LIMIT, 1);
            if !indexed.is_nan() {
                write!(
                    measured,
                    "; the limit behind the two-choice layout: {}; kvzch against that: {}",
                    ratio(indexed / limit),
                    ratio(uniform_1 / indexed)
                )
                .unwrap();
            }
            target(
                "uniform_hit, 1 thread: >= 0.6x the limit".into(),
                measured,
                bar.met_by(x),
            );
        }
        let mut series: Vec<(&str, usize)> = Vec::new();
        for s in ["uniform_hit", "zipf_miss", "publish_during"] {
            for &t in &c.threads {
                series.push((s, t));
            }
        }
        series.extend(FILLS.map(|(fill, _)| (fill, 1)));
        for (s, t) in series {
            let kvzch = self.median_rate(s, KVZCH, t);
            if kvzch.is_nan() {
                continue;
            }
            let vs_peer = kvzch / self.median_rate(s, PEER, t);
            let bar = Bar::AtLeast(2.0);
            let mut measured = format!(
                "{} the peer ({})",
                ratio(vs_peer),
                self.kvzch_runs_over(s, PEER, t, bar)
            );
            let ahead =
                self.ahead_of_crates(&mut measured, kvzch, |name| self.median_rate(s, name, t));
            let label = if s == "publish_during" {
                "readers during a republish"
            } else {
                s
            };
            target(
                format!("{label}, {t} thread(s): >= 2x the peer and ahead of every crate"),
                measured,
                bar.met_by(vs_peer) && ahead,
            );
        }
        // The publish workload's own rate, its writer's: the readers beside it
        // are the row above, and a writer that gives way to readers can be
        // slower than the peer's.
        for &t in &c.threads {
            let writer = |name: &str| self.extra("publish_during", name, t, "writer_rows_per_s");
            let kvzch = writer(KVZCH);
            if kvzch.is_nan() {
                continue;
            }
            let bar = Bar::AtLeast(2.0);
            let vs_peer = kvzch / writer(PEER);
            let pairs = self.paired_ratios_of(
                ("publish_during", KVZCH, t),
                ("publish_during", PEER, t),
                |m| m.extra("writer_rows_per_s"),
            );
            let mut measured = format!(
                "{} the peer ({}; {} against {} rows/s)",
                ratio(vs_peer),
                spread(&pairs, bar),
                rate(kvzch),
                rate(writer(PEER))
            );
            let ahead = self.ahead_of_crates(&mut measured, kvzch, writer);
            target(
                format!("the republish's writer beside {t} reader(s): >= 2x the peer and ahead of every crate"),
                measured,
                bar.met_by(vs_peer) && ahead,
            );
        }
        if c.threads.contains(&1) && c.threads.contains(&2) {
            let bar = Bar::AtLeast(1.8);
            for s in ["uniform_hit", "zipf_miss"] {
                let runs = self.scaling_runs(s, KVZCH, 2);
                if runs.is_empty() {
                    continue;
                }
                let x = median(runs.clone());
                target(
                    format!("{s}: 2 threads / 1 thread >= 1.8x"),
                    format!(
                        "{} ({}; limit: {}); per run, with the handoff between the readers' CPUs: {}",
                        ratio(x),
                        spread(&runs, bar),
                        ratio(median(self.scaling_runs(s, LIMIT, 2))),
                        self.scaling_by_placement(s, &runs)
                    ),
                    bar.met_by(x),
                );
            }
        }
        if let Some(mem) = self.memory.iter().find(|m| m.contender == KVZCH) {
            let rss = self.memory_per_row(mem.rss_delta);
            let accounted = mem.accounted.map_or(f64::NAN, |b| self.memory_per_row(b));
            target(
                format!(
                    "memory beyond the payload <= 24 B/row (at {} rows)",
                    self.universe.rows
                ),
                format!("{accounted:.1} B/row by its own account, {rss:.1} B/row by RSS"),
                accounted <= 24.0 && rss <= 24.0,
            );
        }
        for (series, title) in FILLS {
            let fill = self.median_rate(series, KVZCH, 1) / self.median_rate(series, PEER, 1);
            if !fill.is_nan() {
                target(
                    format!("{title}: >= 1.5x the peer"),
                    ratio(fill),
                    fill >= 1.5,
                );
            }
        }
        for &t in &c.threads {
            let x = self.extra("publish_during", KVZCH, t, "p99_vs_idle");
            if !x.is_nan() {
                let bar = Bar::AtMost(2.0);
                let runs: Vec<f64> = self
                    .results
                    .runs("publish_during", KVZCH, t)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|m| m.extra("p99_vs_idle"))
                    .collect();
                target(
                    format!("p99 batch_get during republish + evict <= 2x idle p99, {t} reader(s)"),
                    format!(
                        "{} ({} µs vs {} µs; {}); {} for the batches that kept their CPU ({:.1}% were preempted)",
                        ratio(x),
                        micros(
                            self.median("publish_during", KVZCH, t)
                                .map_or(f64::NAN, |m| m.p99_ns)
                        ),
                        micros(
                            self.median("publish_idle", KVZCH, t)
                                .map_or(f64::NAN, |m| m.p99_ns)
                        ),
                        spread(&runs, bar),
                        ratio(self.extra("publish_during", KVZCH, t, "kept_cpu_p99_vs_idle")),
                        self.extra("publish_during", KVZCH, t, "preempted_share") * 100.0,
                    ),
                    bar.met_by(x),
                );
            }
        }
        for &t in &c.threads {
            let share = self.sink_share_of_batch(KVZCH, t);
            if !share.is_nan() {
                target(
                    format!("one registered sink costs <= 2% of zipf_miss, {t} thread(s)"),
                    format!(
                        "{:.4}% of a batch ({:.1} ns per batch, resolved on 1-id batches); full-batch throughput {:+.2}%",
                        share * 100.0,
                        self.extra("zipf_one_sink", KVZCH, t, "sink_ns_per_batch"),
                        (self.sink_ratio(KVZCH, t) - 1.0) * 100.0
                    ),
                    share <= 0.02,
                );
            }
        }
        targets
    }

    pub fn json(&self) -> Json {
        let c = self.config;
        let m = self.machine;
        let mut keys: Vec<_> = self.results.series.keys().copied().collect();
        keys.sort_by_key(|&(s, name, t)| (s, t, crate::CONTENDERS.iter().position(|&k| k == name)));
        let measure = |m: &Measure| {
            let mut fields = vec![
                ("rows_per_s".to_string(), Json::num(m.rows_per_s)),
                ("p50_us".to_string(), Json::num(m.p50_ns / 1e3)),
                ("p99_us".to_string(), Json::num(m.p99_ns / 1e3)),
            ];
            fields.extend(m.extra.iter().map(|(n, v)| (n.to_string(), Json::num(*v))));
            Json::Obj(fields)
        };
        let series = keys
            .iter()
            .map(|&(s, name, t)| {
                let runs = &self.results.series[&(s, name, t)];
                let med = self.median(s, name, t).expect("series has runs");
                let vs = |other: &str| Json::num(med.rows_per_s / self.median_rate(s, other, t));
                Json::obj([
                    ("workload", Json::str(s)),
                    ("contender", Json::str(name)),
                    ("threads", Json::num(t as f64)),
                    ("median", measure(&med)),
                    ("vs_limit", vs(LIMIT)),
                    ("vs_peer", vs(PEER)),
                    ("runs", Json::Arr(runs.iter().map(measure).collect())),
                ])
            })
            .collect();
        Json::obj([
            (
                "config",
                Json::obj([
                    ("rows", Json::num(c.rows as f64)),
                    ("row_bytes", Json::num(c.row_bytes as f64)),
                    ("batch", Json::num(c.batch as f64)),
                    (
                        "threads",
                        Json::Arr(c.threads.iter().map(|&t| Json::num(t as f64)).collect()),
                    ),
                    (
                        "workloads",
                        Json::Arr(c.workloads.iter().map(|&w| Json::str(w)).collect()),
                    ),
                    (
                        "contenders",
                        Json::Arr(c.contenders.iter().map(|&w| Json::str(w)).collect()),
                    ),
                    ("runs", Json::num(c.runs as f64)),
                    ("seconds", Json::num(c.seconds)),
                    ("quick", Json::Bool(c.quick)),
                    ("publisher_nice", Json::num(f64::from(c.publisher_nice))),
                    ("pool_batches", Json::num(self.pool_batches as f64)),
                ]),
            ),
            (
                "machine",
                Json::obj([
                    ("cpu", Json::str(&m.cpu)),
                    ("cpus", Json::num(m.cpus as f64)),
                    ("kernel", Json::str(&m.kernel)),
                    ("memory_gib", Json::num(m.memory_gib)),
                    ("transparent_hugepages", Json::str(&m.transparent_hugepages)),
                ]),
            ),
            ("seconds_total", Json::num(self.seconds_total)),
            (
                "conditions",
                Json::obj([
                    (
                        "others_cpu_seconds",
                        Json::num(self.conditions.others_cpu_seconds),
                    ),
                    ("steal_seconds", Json::num(self.conditions.steal_seconds)),
                    ("load_at_start", Json::num(self.conditions.load_at_start)),
                    ("load_at_end", Json::num(self.conditions.load_at_end)),
                ]),
            ),
            ("series", Json::Arr(series)),
            (
                "sink_ratio",
                Json::Arr(
                    c.threads
                        .iter()
                        .flat_map(|&t| {
                            self.contenders().iter().filter_map(move |&name| {
                                let x = self.sink_ratio(name, t);
                                (!x.is_nan()).then(|| {
                                    Json::obj([
                                        ("contender", Json::str(name)),
                                        ("threads", Json::num(t as f64)),
                                        ("one_sink_over_no_sink", Json::num(x)),
                                        (
                                            "sink_share_of_batch",
                                            Json::num(self.sink_share_of_batch(name, t)),
                                        ),
                                    ])
                                })
                            })
                        })
                        .collect(),
                ),
            ),
            (
                "memory",
                Json::Arr(
                    self.memory
                        .iter()
                        .map(|mem| {
                            Json::obj([
                                ("contender", Json::str(mem.contender)),
                                ("rss_delta_bytes", Json::num(mem.rss_delta as f64)),
                                ("huge_page_share", Json::opt(mem.huge_page_share())),
                                (
                                    "rss_bytes_per_row_beyond_payload",
                                    Json::num(self.memory_per_row(mem.rss_delta)),
                                ),
                                (
                                    "accounted_bytes_per_row_beyond_payload",
                                    Json::opt(mem.accounted.map(|b| self.memory_per_row(b))),
                                ),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "agreement",
                Json::Arr(
                    self.agreements
                        .iter()
                        .map(|a| {
                            Json::obj([
                                ("stream", Json::str(a.pool)),
                                ("ids", Json::num(a.ids as f64)),
                                ("expected_hits", Json::num(a.expected_hits as f64)),
                                ("pool_miss_fraction", Json::num(a.miss_fraction)),
                                (
                                    "hits_returned",
                                    Json::obj(
                                        a.returned
                                            .iter()
                                            .map(|r| (r.contender, Json::num(r.hits as f64))),
                                    ),
                                ),
                            ])
                        })
                        .collect(),
                ),
            ),
            (
                "targets",
                Json::Arr(
                    self.targets()
                        .into_iter()
                        .map(|t| {
                            Json::obj([
                                ("target", Json::str(t.what)),
                                ("measured", Json::str(t.measured)),
                                ("met", Json::Bool(t.met)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ])
    }
}
