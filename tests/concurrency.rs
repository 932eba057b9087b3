//! Every call concurrently with every other: no torn rows, and counters whose
//! snapshots never split a batch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use kvzch::{Cache, CacheConfig, ErrorKind};

const ROW_BYTES: usize = 64;

/// Every 8 bytes of the row hold `id << 16 | version`, so a row mixing two
/// versions, or another id's row, is caught.
fn encoded_row(id: i64, version: u64) -> [u8; ROW_BYTES] {
    let word = ((id as u64) << 16 | version).to_le_bytes();
    let mut row = [0; ROW_BYTES];
    for chunk in row.chunks_mut(8) {
        chunk.copy_from_slice(&word);
    }
    row
}

fn cache_of_shards(num_shards: usize) -> Arc<Cache> {
    let config = CacheConfig {
        num_shards,
        ..CacheConfig::new(ROW_BYTES)
    };
    Arc::new(Cache::new(config).unwrap())
}

/// A reader's batch: 512 ids drawn uniformly from `0..below`.
fn random_ids(state: &mut u64, below: i64) -> Vec<i64> {
    (0..512)
        .map(|_| {
            *state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*state >> 33) as i64 % below
        })
        .collect()
}

#[test]
fn readers_never_see_a_torn_or_foreign_row_while_rows_change() {
    let cache = cache_of_shards(4);
    let ids: Vec<i64> = (0..20_000).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));

    let publisher = {
        let (cache, ids, stop) = (Arc::clone(&cache), ids.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let (mut version, mut evicted) = (1u64, 0);
            while !stop.load(Ordering::Relaxed) {
                // Each round leaves one chunk out, whose rows the eviction
                // then removes.
                let left_out = version as usize % 20;
                for (number, chunk) in ids.chunks(1000).enumerate() {
                    if number == left_out {
                        continue;
                    }
                    let rows: Vec<u8> = chunk
                        .iter()
                        .flat_map(|&id| encoded_row(id, version))
                        .collect();
                    cache.batch_set(chunk, &rows, version as u32).unwrap();
                }
                // Republish-then-evict, as a predictor does, plus some removals.
                evicted += cache.evict_older_than(version as u32);
                cache
                    .batch_remove(&ids[(version as usize * 97) % 19_000..][..50])
                    .unwrap();
                version += 1;
            }
            (version - 1, evicted)
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|seed| {
            let (cache, stop, checked) =
                (Arc::clone(&cache), Arc::clone(&stop), Arc::clone(&checked));
            thread::spawn(move || {
                let (mut oldest_seen, mut newest_seen) = (u64::MAX, 0);
                let mut state = seed + 1u64;
                let mut out = vec![0u8; 512 * ROW_BYTES];
                let mut mask = vec![0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let batch = random_ids(&mut state, 21_000);
                    cache.batch_get(&batch, &mut out, Some(&mut mask)).unwrap();
                    for (i, &id) in batch.iter().enumerate() {
                        let row = &out[i * ROW_BYTES..][..ROW_BYTES];
                        if mask[i] == 0 {
                            assert!(
                                row.iter().all(|&b| b == 0),
                                "a miss of id {id} was not zero-filled"
                            );
                            continue;
                        }
                        let word = u64::from_le_bytes(row[..8].try_into().unwrap());
                        assert_eq!(word >> 16, id as u64, "id {id} returned another id's row");
                        let version = word & 0xFFFF;
                        assert_eq!(row, encoded_row(id, version), "torn row for id {id}");
                        oldest_seen = oldest_seen.min(version);
                        newest_seen = newest_seen.max(version);
                    }
                    checked.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                (oldest_seen, newest_seen)
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (rounds, evicted) = publisher.join().unwrap();
    // The calls overlapped: the readers saw rows change, and rows went.
    for reader in readers {
        let (oldest, newest) = reader.join().unwrap();
        assert!(
            oldest < newest,
            "a reader saw versions {oldest}..={newest} of {rounds}"
        );
    }
    assert!(checked.load(Ordering::Relaxed) > 10_000);
    assert!(
        rounds >= 2 && evicted > 0,
        "{rounds} rounds, {evicted} rows evicted"
    );
}

/// ABI.md: a row that no writer touches is found by every lookup. Readers
/// look up ids published once, while a writer grows the index with new ids
/// (rebuilds move every entry), removes and expires them again, and compacts
/// (which repacks rows and tables): never a miss, never another row.
#[test]
fn rows_no_writer_touches_are_found_while_the_index_grows_shrinks_and_compacts() {
    const STABLE_STAMP: u32 = 1_000_000;
    let cache = cache_of_shards(8);
    let stable = 20_000;
    let ids: Vec<i64> = (0..stable).collect();
    let rows: Vec<u8> = ids.iter().flat_map(|&id| encoded_row(id, 1)).collect();
    cache.batch_set(&ids, &rows, STABLE_STAMP).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cache, stop) = (Arc::clone(&cache), Arc::clone(&stop));
        thread::spawn(move || {
            let (mut rounds, mut compactions) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) || rounds < 3 {
                rounds += 1;
                // 60,000 new ids, three times the stable ones: the index
                // grows through several rebuilds.
                let churn: Vec<i64> = (0..60_000)
                    .map(|k| 1_000_000 + k * 7 + i64::from(rounds))
                    .collect();
                for chunk in churn.chunks(4096) {
                    let rows: Vec<u8> = chunk.iter().flat_map(|&id| encoded_row(id, 2)).collect();
                    cache.batch_set(chunk, &rows, rounds).unwrap();
                }
                cache.batch_remove(&churn[..20_000]).unwrap();
                assert_eq!(cache.evict_older_than(rounds + 1), 40_000);
                let before = cache.info().memory_bytes;
                cache.compact().unwrap();
                compactions.push((before, cache.info().memory_bytes));
            }
            (rounds, compactions)
        })
    };
    let readers: Vec<_> = (0..2u64)
        .map(|seed| {
            let (cache, stop) = (Arc::clone(&cache), Arc::clone(&stop));
            thread::spawn(move || {
                let mut state = seed + 1;
                let mut out = vec![0u8; 512 * ROW_BYTES];
                let mut mask = vec![0u8; 512];
                let mut checked = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let batch = random_ids(&mut state, stable);
                    cache.batch_get(&batch, &mut out, Some(&mut mask)).unwrap();
                    for (i, &id) in batch.iter().enumerate() {
                        assert_eq!(mask[i], 1, "id {id}, never touched by a writer, missed");
                        let row = &out[i * ROW_BYTES..][..ROW_BYTES];
                        assert_eq!(row, encoded_row(id, 1), "id {id} returned another row");
                    }
                    checked += batch.len() as u64;
                }
                checked
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (rounds, compactions) = writer.join().unwrap();
    for reader in readers {
        assert!(reader.join().unwrap() > 100_000);
    }
    // The writer ran whole rounds beside the readers, and each compaction
    // gave memory back: tables and rows were rebuilt while they read.
    assert!(rounds >= 3, "{rounds} rounds");
    assert!(
        compactions.iter().all(|&(before, after)| after < before),
        "{compactions:?}"
    );
}

/// A publish that holds an id twice: a reader finds the id's old row or the
/// last occurrence's, never the earlier occurrence's, though the publish lets
/// readers into the shard between stretches of a few hundred rows. The
/// batch holds the watched id first with a decoy row and last with the real
/// one, a thousand ids apart in the one shard. Readers look up id 1 (written
/// in the publish's first stretch) with it: one that finds id 1 newer than
/// the watched id read in the middle of a publish, and the republishes go on
/// until some have.
#[test]
fn readers_never_see_the_row_of_an_earlier_duplicate() {
    const WATCHED: i64 = 0;
    const DECOY: u64 = 0xFFFF;
    const MIN_ROUNDS: u64 = 400;
    const MAX_ROUNDS: u64 = 50_000;
    let cache = cache_of_shards(1);
    let mut batch = vec![WATCHED];
    batch.extend(1..1024);
    batch.push(WATCHED);
    let rows_of = |version: u64| -> Vec<u8> {
        let decoy = encoded_row(WATCHED, DECOY);
        let real = batch
            .iter()
            .skip(1)
            .flat_map(|&id| encoded_row(id, version));
        decoy.into_iter().chain(real).collect()
    };
    cache.batch_set(&batch, &rows_of(1), 1).unwrap();
    assert_eq!(cache.info().rows, 1024);
    let stop = Arc::new(AtomicBool::new(false));
    let reading = Arc::new(AtomicU64::new(0));
    let mid_publish = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, stop) = (Arc::clone(&cache), Arc::clone(&stop));
            let (reading, mid_publish) = (Arc::clone(&reading), Arc::clone(&mid_publish));
            thread::spawn(move || {
                let mut out = [0u8; 2 * ROW_BYTES];
                reading.fetch_add(1, Ordering::Relaxed);
                while !stop.load(Ordering::Relaxed) {
                    let stats = cache.batch_get(&[1, WATCHED], &mut out, None).unwrap();
                    assert_eq!(stats.hits, 2);
                    let (first, watched) = out.split_at(ROW_BYTES);
                    let version_of =
                        |row: &[u8]| u64::from_le_bytes(row[..8].try_into().unwrap()) & 0xFFFF;
                    let version = version_of(watched);
                    assert_ne!(version, DECOY, "a reader found the earlier duplicate's row");
                    assert_eq!(watched, encoded_row(WATCHED, version), "torn row");
                    assert_eq!(first, encoded_row(1, version_of(first)), "torn row");
                    if version_of(first) > version {
                        mid_publish.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Both readers are in their loops before the republishes start.
    while reading.load(Ordering::Relaxed) < 2 {
        thread::yield_now();
    }
    // A reader that failed ends the republishes, so its failure shows at once.
    let mut rounds = 1;
    while rounds < MAX_ROUNDS
        && (rounds < MIN_ROUNDS || mid_publish.load(Ordering::Relaxed) == 0)
        && !readers.iter().any(thread::JoinHandle::is_finished)
    {
        rounds += 1;
        cache
            .batch_set(&batch, &rows_of(rounds), rounds as u32)
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    assert!(
        mid_publish.load(Ordering::Relaxed) > 0,
        "no reader got in between a publish's stretches in {rounds} publishes: the test proved \
         nothing"
    );
    let mut out = [0u8; ROW_BYTES];
    cache.batch_get(&[WATCHED], &mut out, None).unwrap();
    assert_eq!(
        out,
        encoded_row(WATCHED, rounds),
        "the last occurrence wins"
    );
    let info = cache.info();
    assert_eq!((info.rows, info.inserts), (1024, 1024));
    assert_eq!(
        info.updates,
        1 + (rounds - 1) * 1025,
        "every occurrence but the first publish's inserts counts as an update"
    );
}

/// Batches of four ids, three stored and one not: every batch is 3:1, so every
/// snapshot that holds whole batches is 3:1 too. Two counters reset one after
/// the other (upstream's design) break this within a few thousand polls. Two
/// pollers take windows at once: together their windows count every batch
/// exactly once. The lookups run until the pollers have taken
/// `WINDOWS_DURING` windows that held batches, so the snapshots do race the
/// lookups and each other.
#[test]
fn every_snapshot_holds_whole_batches_and_windows_count_each_batch_once() {
    let cache = Arc::new(Cache::new(CacheConfig::new(8)).unwrap());
    cache.batch_set(&[1, 2, 3], &[0; 24], 0).unwrap();
    const WINDOWS_DURING: u64 = 2000;
    let stop = Arc::new(AtomicBool::new(false));
    let lookups: Vec<_> = (0..2)
        .map(|_| {
            let (cache, stop) = (Arc::clone(&cache), Arc::clone(&stop));
            thread::spawn(move || {
                let mut out = [0u8; 32];
                let mut batches = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let stats = cache.batch_get(&[1, 2, 3, 4], &mut out, None).unwrap();
                    assert_eq!((stats.hits, stats.misses), (3, 1));
                    batches += 1;
                }
                batches
            })
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let windows_during = Arc::new(AtomicU64::new(0));
    let pollers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, done, stop) = (Arc::clone(&cache), Arc::clone(&done), Arc::clone(&stop));
            let windows_during = Arc::clone(&windows_during);
            thread::spawn(move || {
                // A failed assertion stops the lookups too, or joining them hangs.
                let _stop_on_exit = StopOnDrop(Arc::clone(&stop));
                let mut counted = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let window = cache.take_read_hit_rate_stats();
                    assert_eq!(
                        window.hits,
                        3 * window.misses,
                        "a window split a batch: {window:?}"
                    );
                    assert_eq!(window.total, window.hits + window.misses);
                    let cumulative = cache.cumulative_read_stats();
                    assert_eq!(cumulative.hits, 3 * cumulative.misses, "{cumulative:?}");
                    counted += window.total;
                    if finished {
                        return counted;
                    }
                    if window.total > 0
                        && !stop.load(Ordering::Relaxed)
                        && windows_during.fetch_add(1, Ordering::Relaxed) + 1 == WINDOWS_DURING
                    {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let batches: u64 = lookups.into_iter().map(|l| l.join().unwrap()).sum();
    done.store(true, Ordering::Release);
    let counted: u64 = pollers.into_iter().map(|p| p.join().unwrap()).sum();
    assert_eq!(
        counted,
        batches * 4,
        "across {} windows during",
        windows_during.load(Ordering::Relaxed)
    );
    assert_eq!(cache.cumulative_read_stats().total, batches * 4);
}

/// Sets its flag when dropped, also by a panic's unwinding.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `info()` is one snapshot of the counts: in every one, the rows stored are
/// the inserts less the removals and the expirations, while a writer
/// publishes, removes and evicts rows one at a time. Counts kept as separate
/// atomics broke this within a few thousand calls.
#[test]
fn every_info_snapshot_counts_the_rows_its_counters_add_up_to() {
    let cache = Arc::new(Cache::new(CacheConfig::new(8)).unwrap());
    const ROUNDS: u32 = 50_000;
    let writer = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            for round in 1..=ROUNDS {
                // Each round stores the ids of one parity (inserting those
                // the last round of that parity did not leave), removes a
                // few of them, and expires the other parity's.
                let ids: Vec<i64> = (0..32).map(|k| 2 * k + i64::from(round % 2)).collect();
                for id in &ids {
                    cache.batch_set(&[*id], &[0; 8], round).unwrap();
                }
                for id in &ids[..4] {
                    cache.batch_remove(&[*id]).unwrap();
                }
                cache.evict_older_than(round);
            }
        })
    };
    let (mut polls, mut polls_during) = (0u64, 0u64);
    loop {
        let finished = writer.is_finished();
        let info = cache.info();
        assert_eq!(
            info.rows,
            info.inserts - info.removals - info.expirations,
            "after {polls} polls: {info:?}"
        );
        polls += 1;
        if finished {
            break;
        }
        // Taken while the writer still ran, and after it had changed something.
        if info.inserts > 0 {
            polls_during += 1;
        }
    }
    writer.join().unwrap();
    // The writer's 50,000 rounds take far longer than 100 snapshots.
    assert!(
        polls_during >= 100,
        "{polls_during} snapshots during the writes"
    );
    let info = cache.info();
    assert_eq!((info.rows, info.removals), (28, 4 * u64::from(ROUNDS)));
}

/// Writers racing for the last rows of `max_rows`: each publish is stored
/// whole or refused whole, and the cache ends holding exactly the stored
/// ones, as many whole publishes as fit. (Publishes take turns today, so this
/// guards the rule against a change that would let them overlap.)
#[test]
fn racing_publishes_under_max_rows_are_each_stored_whole_or_refused_whole() {
    const MAX_ROWS: u64 = 1000;
    const BATCH: i64 = 7;
    let cache = Arc::new(
        Cache::new(CacheConfig {
            num_shards: 4,
            max_rows: Some(MAX_ROWS),
            ..CacheConfig::new(ROW_BYTES)
        })
        .unwrap(),
    );
    let writers: Vec<_> = (0..4i64)
        .map(|writer| {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                let mut stored = Vec::new();
                for first in (writer << 32..).step_by(BATCH as usize) {
                    let ids: Vec<i64> = (first..first + BATCH).collect();
                    let rows: Vec<u8> = ids.iter().flat_map(|&id| encoded_row(id, 1)).collect();
                    match cache.batch_set(&ids, &rows, 1) {
                        Ok(()) => stored.extend(ids),
                        // Rows only grow, so every later publish is refused too.
                        Err(error) => {
                            assert_eq!(error.kind(), ErrorKind::CapacityExceeded, "{error}");
                            return (stored, ids);
                        }
                    }
                }
                unreachable!("the ids ran out before max_rows did")
            })
        })
        .collect();
    let (mut stored, mut refused) = (Vec::new(), Vec::new());
    for writer in writers {
        let (its_stored, its_refused) = writer.join().unwrap();
        stored.extend(its_stored);
        refused.extend(its_refused);
    }
    let rows = cache.info().rows;
    assert_eq!(rows, stored.len() as u64);
    assert_eq!(rows, MAX_ROWS / BATCH as u64 * BATCH as u64);
    let mut out = vec![0; stored.len() * ROW_BYTES];
    let stats = cache.batch_get(&stored, &mut out, None).unwrap();
    assert_eq!(stats.hits, stored.len() as u64, "a stored row went missing");
    let expected: Vec<u8> = stored.iter().flat_map(|&id| encoded_row(id, 1)).collect();
    assert!(out == expected, "a stored row came back wrong");
    let mut out = vec![0; refused.len() * ROW_BYTES];
    let stats = cache.batch_get(&refused, &mut out, None).unwrap();
    assert_eq!(stats.hits, 0, "a refused publish stored rows");
}
