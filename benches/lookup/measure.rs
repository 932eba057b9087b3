//! Timing: reader threads cycling through a pool while the main thread sleeps
//! or publishes, per-batch latencies, and the process's resident memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::contender::Contender;
pub use crate::figures::{percentile, resident_bytes};
use crate::workload::Pool;

/// Batches each reader (and each thread of [`calls`]) runs before the clock
/// starts: first-touch of its output buffer and of the contender's per-thread
/// scratch.
const WARMUP_BATCHES: usize = 4;

/// What the readers did during one measurement.
pub struct Readers {
    pub ids: u64,
    /// Ids looked up before the clock started.
    pub warmup_ids: u64,
    /// Hits returned over every batch, warm-up included.
    pub hits: u64,
    pub seconds: f64,
    /// Every timed batch's latency, sorted.
    pub latencies_ns: Vec<u64>,
    /// The latencies of the timed batches during which the reader's thread
    /// kept its CPU (no involuntary context switch), sorted: with more
    /// runnable threads than cores, a batch may wait for the CPU, not for the
    /// contender.
    pub kept_cpu_latencies_ns: Vec<u64>,
    /// The CPU each reader ran its last batch on, in thread order (for
    /// measurements combined, the last one's); `None` where the kernel did not
    /// say.
    pub cpus: Vec<Option<usize>>,
}

impl Readers {
    pub fn ids_per_second(&self) -> f64 {
        self.ids as f64 / self.seconds
    }

    pub fn percentile_ns(&self, p: f64) -> f64 {
        percentile(&self.latencies_ns, p)
    }

    /// Measurements of the same thing taken one after another, as one.
    pub fn combined(parts: Vec<Readers>) -> Readers {
        let mut all = Readers {
            ids: 0,
            warmup_ids: 0,
            hits: 0,
            seconds: 0.0,
            latencies_ns: Vec::new(),
            kept_cpu_latencies_ns: Vec::new(),
            cpus: Vec::new(),
        };
        for part in parts {
            all.cpus = part.cpus;
            all.ids += part.ids;
            all.warmup_ids += part.warmup_ids;
            all.hits += part.hits;
            all.seconds += part.seconds;
            all.latencies_ns.extend(part.latencies_ns);
            all.kept_cpu_latencies_ns.extend(part.kept_cpu_latencies_ns);
        }
        all.latencies_ns.sort_unstable();
        all.kept_cpu_latencies_ns.sort_unstable();
        all
    }

    /// The share of timed batches during which the reader was preempted.
    pub fn preempted_share(&self) -> f64 {
        1.0 - self.kept_cpu_latencies_ns.len() as f64 / self.latencies_ns.len() as f64
    }
}

/// Runs `threads` readers over `pool` on `contender`, from when they are all
/// warmed up until `control` (run on the calling thread) returns. `first_batch`
/// staggers where runs start in the pool. Every batch's hit count is checked
/// against the pool's; a mismatch is an error, since the contender would then
/// not be doing the work the others do.
pub fn readers(
    contender: &dyn Contender,
    pool: &Pool,
    threads: usize,
    first_batch: usize,
    control: impl FnOnce(),
) -> Result<Readers, String> {
    let stop = AtomicBool::new(false);
    let start = Barrier::new(threads + 1);
    let row_bytes = pool.row_bytes;
    let batches = pool.batches();
    let (outcomes, started) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, start) = (&stop, &start);
                scope.spawn(move || {
                    let mut out = vec![0u8; pool.batch * row_bytes];
                    let mut b = (first_batch + t * batches / threads) % batches;
                    let mut hits_returned = 0u64;
                    let mut run_batch = |b: usize| -> Result<(Duration, bool), String> {
                        let (ids, slots, expected) = pool.batch(b);
                        let switches = involuntary_context_switches();
                        let started = Instant::now();
                        let hits = contender.get(ids, slots, &mut out);
                        let elapsed = started.elapsed();
                        let kept_cpu = involuntary_context_switches() == switches;
                        std::hint::black_box(&mut out);
                        hits_returned += hits;
                        if hits != expected {
                            return Err(format!(
                                "{}: batch {b} of {} returned {hits} hits, expected {expected}",
                                contender.name(),
                                pool.name
                            ));
                        }
                        Ok((elapsed, kept_cpu))
                    };
                    let mut warmup = Ok(());
                    for k in 0..WARMUP_BATCHES {
                        if let Err(e) = run_batch((b + k) % batches) {
                            warmup = Err(e);
                        }
                    }
                    start.wait();
                    warmup?;
                    let mut latencies = Vec::with_capacity(1 << 14);
                    let mut kept_cpu_latencies = Vec::with_capacity(1 << 14);
                    let mut ids = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let (elapsed, kept_cpu) = run_batch(b)?;
                        latencies.push(elapsed.as_nanos() as u64);
                        if kept_cpu {
                            kept_cpu_latencies.push(elapsed.as_nanos() as u64);
                        }
                        ids += pool.batch as u64;
                        b = (b + 1) % batches;
                    }
                    let finished = Instant::now();
                    let cpu = current_cpu();
                    Ok::<_, String>((
                        ids,
                        latencies,
                        kept_cpu_latencies,
                        finished,
                        hits_returned,
                        cpu,
                    ))
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        control();
        stop.store(true, Ordering::Relaxed);
        let outcomes: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().expect("reader thread panicked"))
            .collect();
        (outcomes, started)
    });
    let mut result = Readers {
        ids: 0,
        warmup_ids: (threads * WARMUP_BATCHES * pool.batch) as u64,
        hits: 0,
        seconds: 0.0,
        latencies_ns: Vec::new(),
        kept_cpu_latencies_ns: Vec::new(),
        cpus: Vec::new(),
    };
    for outcome in outcomes {
        let (ids, latencies, kept_cpu_latencies, finished, hits, cpu) = outcome?;
        result.cpus.push(cpu);
        result.ids += ids;
        result.hits += hits;
        result.latencies_ns.extend(latencies);
        result.kept_cpu_latencies_ns.extend(kept_cpu_latencies);
        result.seconds = result
            .seconds
            .max(finished.duration_since(started).as_secs_f64());
    }
    result.latencies_ns.sort_unstable();
    result.kept_cpu_latencies_ns.sort_unstable();
    Ok(result)
}

/// What [`calls`] measured.
pub struct Calls {
    /// Nanoseconds per timed call, averaged over the threads.
    pub ns_per_call: f64,
    /// Hits returned over every call, warm-up included.
    pub hits: u64,
    /// Ids looked up over every call, warm-up included.
    pub ids: u64,
}

/// Times `threads` threads calling `get` of `ids` `count` times each at once,
/// after `WARMUP_BATCHES` calls each. With a handful of ids, this is the fixed
/// cost of a batch, which a throughput measurement of full batches cannot
/// resolve.
pub fn calls(
    contender: &dyn Contender,
    ids: &[i64],
    slots: &[u32],
    row_bytes: usize,
    threads: usize,
    count: usize,
) -> Calls {
    let start = Barrier::new(threads);
    let per_thread: Vec<(f64, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let start = &start;
                scope.spawn(move || {
                    let mut out = vec![0u8; ids.len() * row_bytes];
                    let mut hits = 0;
                    for _ in 0..WARMUP_BATCHES {
                        hits += contender.get(ids, slots, &mut out);
                    }
                    start.wait();
                    let started = Instant::now();
                    for _ in 0..count {
                        hits += contender.get(ids, slots, &mut out);
                        std::hint::black_box(&mut out);
                    }
                    let ns_per_call = started.elapsed().as_nanos() as f64 / count as f64;
                    (ns_per_call, hits)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("caller thread panicked"))
            .collect()
    });
    Calls {
        ns_per_call: per_thread.iter().map(|&(ns, _)| ns).sum::<f64>() / threads as f64,
        hits: per_thread.iter().map(|&(_, hits)| hits).sum(),
        ids: (threads * (WARMUP_BATCHES + count) * ids.len()) as u64,
    }
}

/// Sets the calling thread's nice value, which on Linux is the thread's own,
/// not its process's; raising it needs no privilege. Panics if it did not
/// take.
pub fn set_own_nice(nice: i32) {
    if nice != 0 {
        // SAFETY: `setpriority` changes a scheduling attribute of the calling
        // thread (`who` 0) and touches no memory of ours.
        let set = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        assert_eq!(set, 0, "setpriority({nice}) failed");
        // SAFETY: as above; `getpriority` only reads.
        let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(
            now, nice,
            "the thread's nice value after setpriority({nice})"
        );
    }
}

/// The CPU the calling thread runs on, or `None` when the kernel cannot say:
/// it only places a measurement, so it never fails one.
fn current_cpu() -> Option<usize> {
    // SAFETY: `sched_getcpu` takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// Turns each of [`cpu_handoff_ns`]'s two threads takes in a burst, and the
/// bursts it times.
const HANDOFFS_PER_BURST: u64 = 20_000;
const HANDOFF_BURSTS: usize = 5;

/// How long a cache line takes to pass between CPUs `a` and `b`, one way:
/// two threads pinned to them take turns to write one atomic, in bursts, and
/// the median burst's mean is returned. `None` when `a` is `b` or a thread
/// cannot be pinned. On a guest this tells where the host has put the two
/// virtual CPUs, which the guest cannot otherwise see: on the reference
/// machine about 30 ns apart on two cores that share an L3 cache and 100 ns
/// or more on two that do not (and, timed with plain loads and stores in a
/// scratch program, about 14 ns on two hardware threads of one core, which
/// share that core's memory parallelism).
pub fn cpu_handoff_ns(a: usize, b: usize) -> Option<f64> {
    if a == b {
        return None;
    }
    let turn = AtomicU64::new(0);
    let bursts: Option<Vec<f64>> = std::thread::scope(|scope| {
        let players = [(a, 0), (b, 1)].map(|(cpu, first_turn)| {
            let turn = &turn;
            scope.spawn(move || {
                if !pin_to(cpu) {
                    turn.store(u64::MAX, Ordering::Release);
                    return None;
                }
                let mut bursts = Vec::with_capacity(HANDOFF_BURSTS);
                let mut mine = first_turn;
                for _ in 0..HANDOFF_BURSTS {
                    let started = Instant::now();
                    for _ in 0..HANDOFFS_PER_BURST {
                        // Takes its turn when the other has passed it;
                        // stops when the other gave up instead.
                        while let Err(now) = turn.compare_exchange_weak(
                            mine,
                            mine + 1,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            if now == u64::MAX {
                                return None;
                            }
                            std::hint::spin_loop();
                        }
                        mine += 2;
                    }
                    let handoffs = 2 * HANDOFFS_PER_BURST;
                    bursts.push(started.elapsed().as_nanos() as f64 / handoffs as f64);
                }
                Some(bursts)
            })
        });
        let [first, second] = players.map(|p| p.join().expect("handoff thread panicked"));
        first.filter(|_| second.is_some())
    });
    bursts.map(crate::median)
}

/// Pins the calling thread to `cpu`; false when the kernel refuses.
fn pin_to(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: `cpu_set_t` is a plain bit set, valid as all zeros; `CPU_SET`
    // writes within it (`cpu` is below `CPU_SETSIZE`), and `sched_setaffinity`
    // only reads the set it is given, of the size it is told.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// How often the kernel has taken the CPU from the calling thread. Panics when
/// the kernel cannot tell: every batch would then count as having kept its CPU.
fn involuntary_context_switches() -> i64 {
    // SAFETY: `getrusage` only writes the `rusage` it is given, which is a
    // plain struct for which all zero bytes are a valid value.
    let (status, usage) = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let status = libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        (status, usage)
    };
    assert_eq!(status, 0, "getrusage(RUSAGE_THREAD) failed");
    usage.ru_nivcsw
}

/// The process's anonymous memory on transparent huge pages, in bytes, from
/// `/proc/self/smaps_rollup` (Linux 4.14 and later); `None` where it is not
/// reported.
pub fn huge_page_bytes() -> Option<u64> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let kib: u64 = rollup
        .lines()
        .find_map(|line| line.strip_prefix("AnonHugePages:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// CPU time of the whole machine and of this process, to tell how much of the
/// machine other work took during the bench.
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    /// Busy time of all CPUs, seconds.
    pub busy: f64,
    /// Time the hypervisor ran something else on our virtual CPUs, seconds.
    pub steal: f64,
    /// This process's user + system time, seconds.
    pub own: f64,
}

impl CpuTimes {
    pub fn now() -> CpuTimes {
        // SAFETY: sysconf has no preconditions.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<f64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        let field = |i: usize| cpu.get(i).copied().unwrap_or(0.0) / tick;
        // user nice system idle iowait irq softirq steal
        let busy = field(0) + field(1) + field(2) + field(5) + field(6);
        let own_stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let own_fields: Vec<f64> = own_stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        // Fields 14 and 15 of stat(5) (utime, stime), counted from the state, field 3.
        let own = (own_fields.get(11).copied().unwrap_or(0.0)
            + own_fields.get(12).copied().unwrap_or(0.0))
            / tick;
        CpuTimes {
            busy,
            steal: field(7),
            own,
        }
    }
}

/// Touches `bytes` of new memory and frees it, right before a fill. This
/// machine reports the memory its guest frees in large blocks back to the
/// hypervisor (virtio-balloon free page reporting), which takes the pages
/// away: the next touch of such a page faults in the hypervisor as well, at a
/// cost that varies from run to run and falls on whichever contender comes
/// next. Pages freed just now are not reported yet, so the fill that follows
/// pays what a fill pays on bare metal: the kernel's fault and zeroing.
pub fn provision_memory(bytes: usize) {
    let mut memory = crate::huge_map::HugeMap::new(bytes);
    for page in memory.bytes_mut().chunks_mut(4096) {
        page[0] = 1;
    }
}

/// Hands the heap memory freed so far back to the kernel. glibc keeps what a
/// dropped contender freed for its next allocations, while kvzch and the limit
/// unmap theirs: without this, a heap-based contender's fill reused pages the
/// one before it had faulted in, and a mapping-based one's paid for fresh
/// pages, so fills measured the order of the contenders more than the
/// contenders. After it, every fill starts from pages the kernel hands out.
pub fn return_freed_heap_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free heap pages; it touches no live
    // allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
