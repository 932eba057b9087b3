//! Arrays that, once large, live in anonymous mappings of their own, on
//! transparent huge pages as far as they span whole ones: fixed-length ones
//! for the index's tables (`HugePageArray`), growable ones for a shard's rows
//! and their stamps (`HugePageVec`).
//!
//! A lookup reads one random index bucket and one random row per id, so on
//! 4 KiB pages nearly every read also misses the TLB, and under a hypervisor
//! each such miss is a two-level page walk. A 2 MiB page covers 512 times as
//! much, which takes most of those walks away. The heap cannot be trusted with
//! this: glibc serves large blocks from memory that earlier blocks already
//! faulted in as small pages, and it keeps freed blocks resident, so an index
//! that grows by rebuilds leaves its old tables behind in the process's RSS.
//! A large array therefore gets a mapping of its own, unmapped when it is
//! dropped (`map_aligned`). A mapping that spans a huge page starts on one
//! and is advised for THP; its tail, less than a whole huge page, stays on
//! small pages, so an array costs its own length in memory and no more.
//!
//! Kept apart from the engine, like `prefetch`, so that `cache/` can forbid
//! `unsafe` outright.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The transparent huge page size on x86_64 and on aarch64 with 4 KiB pages.
pub(crate) const HUGE_PAGE_BYTES: usize = 2 << 20;
/// Arrays of at least this many bytes get a mapping of their own: big enough
/// that rounding to whole small pages wastes little.
const MAPPED_BYTES: usize = 64 << 10;
/// Mappings are aligned to (small) pages, which bounds the alignment a type
/// stored in one may ask for.
const MAPPING_ALIGN: usize = 4 << 10;

/// Owns its elements like a `Box<[T]>`; `deref` reads the pointer and length
/// it keeps, without asking which kind of memory holds them, since a lookup
/// derefs an index table per id before its probe.
pub(crate) struct HugePageArray<T> {
    first: NonNull<T>,
    len: usize,
    /// The bytes of the mapping at `first` holding the elements; `None` for a
    /// small array, whose elements are a `Box<[T]>` released into `first` and
    /// taken back on drop.
    mapping: Option<usize>,
    _owns: PhantomData<T>,
}

// SAFETY: the array owns its elements exclusively, like a `Box<[T]>`: moving it
// to another thread moves them, and shared access only hands out `&T`.
unsafe impl<T: Send> Send for HugePageArray<T> {}
// SAFETY: as above; `&HugePageArray<T>` gives only `&[T]`.
unsafe impl<T: Sync> Sync for HugePageArray<T> {}

/// Types whose every byte may be zero: an array of them can start as a fresh
/// mapping, which reads as zeros already.
///
/// # Safety
///
/// All-zero bytes must be a valid value of the type.
pub(crate) unsafe trait Zeroable: Sized {
    /// The value of all-zero bytes.
    fn zero() -> Self {
        // SAFETY: the implementor vouches that all-zero bytes are a valid value.
        unsafe { std::mem::zeroed() }
    }
}

// SAFETY: zero is a `u8`.
unsafe impl Zeroable for u8 {}

// SAFETY: zero is a `u32`.
unsafe impl Zeroable for u32 {}

// SAFETY: a bucket's fields are `[u64; 7]` and an `AtomicU64`, each valid as
// zero bytes. Zero bytes are also the empty bucket (no position's taken bit is
// set), which the index's tests read from zeroed tables. The impl lives
// here because `cache/` forbids `unsafe`.
unsafe impl Zeroable for crate::cache::index::Bucket {}

impl<T: Zeroable> HugePageArray<T> {
    /// `len` elements of zero bytes, or `None` when the memory cannot be had.
    /// A fresh mapping's pages are touched, and paid for, only when first
    /// written. Zero bytes are the only elements an array starts with, so no
    /// caller's code runs between the mapping and the array that owns it.
    pub(crate) fn zeroed(len: usize) -> Option<HugePageArray<T>> {
        const { assert!(std::mem::align_of::<T>() <= MAPPING_ALIGN) };
        #[cfg(test)]
        if crate::allocation_failure::take() {
            return None;
        }
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let (first, mapping) = if bytes < MAPPED_BYTES {
            let mut elements = Vec::new();
            elements.try_reserve_exact(len).ok()?;
            elements.resize_with(len, T::zero);
            let elements = Box::into_raw(elements.into_boxed_slice());
            (
                NonNull::new(elements.cast::<T>()).expect("a box is not null"),
                None,
            )
        } else {
            (map_aligned(bytes)?.cast::<T>(), Some(bytes))
        };
        Some(HugePageArray {
            first,
            len,
            mapping,
            _owns: PhantomData,
        })
    }

    #[cfg(test)]
    fn is_mapped(&self) -> bool {
        self.mapping.is_some()
    }
}

impl<T> Deref for HugePageArray<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `first` points at `len` initialised elements (zero bytes,
        // written or freshly mapped, valid as `T: Zeroable`, or values written
        // since through `&mut self`), owned by `self` and only reached through
        // it, so a shared borrow of `self` makes a shared slice of them sound;
        // for `len` 0 it is the empty box's dangling but aligned pointer.
        unsafe { std::slice::from_raw_parts(self.first.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for HugePageArray<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and the exclusive borrow of `self` makes the
        // slice the only access to the elements while it lives.
        unsafe { std::slice::from_raw_parts_mut(self.first.as_ptr(), self.len) }
    }
}

impl<T> Drop for HugePageArray<T> {
    fn drop(&mut self) {
        let elements = std::ptr::slice_from_raw_parts_mut(self.first.as_ptr(), self.len);
        if let Some(bytes) = self.mapping {
            // SAFETY: the `len` elements are initialised and are dropped once,
            // here, before their mapping, exactly the one `map_aligned` made
            // for them, is unmapped once.
            unsafe {
                std::ptr::drop_in_place(elements);
                libc::munmap(self.first.as_ptr().cast(), bytes);
            }
        } else {
            // SAFETY: `first` and `len` came from `Box::into_raw` of a boxed
            // slice in `zeroed`, and the box is taken back once, here.
            drop(unsafe { Box::from_raw(elements) });
        }
    }
}

/// A growable array of plain values in an anonymous mapping of its own, on
/// transparent huge pages as far as it spans whole ones: a shard's rows, found
/// at one multiply from the array's start. (Rows in chunks of a huge page each
/// took a load of their chunk's address after the index's answer and before
/// the row's prefetch; at 4M rows of 256 bytes, lookups ran 1.10x-1.13x faster
/// with the rows in one array, the first rows on huge pages included, and
/// 1.18x with 10% misses.)
///
/// Growing keeps the elements and zeroes the new ones, but may move them, so it
/// takes `&mut self`: a reader never holds an element across it. A mapping of
/// less than a huge page grows by copying into a fresh one, twice as large or
/// more, so that a vector growing in small steps copies a logarithmic number of
/// times and its elements come to lie on huge pages once it spans one (pages
/// first written as small pages would stay small); the pages past its length,
/// never written, cost address space, not memory. A larger mapping, on Linux,
/// grows to the length asked for by moving its pages (`mremap`), which copies
/// nothing.
pub(crate) struct HugePageVec<T: Zeroable + Copy> {
    first: NonNull<T>,
    len: usize,
    /// Bytes of the mapping at `first`, at least `len` elements' worth (more
    /// only after a doubling from below a huge page, which may end past
    /// one); none before the first growth.
    mapped: usize,
}

// SAFETY: the vector owns its elements exclusively, like a `Vec<T>`: moving it
// to another thread moves them, and shared access only hands out `&T`.
unsafe impl<T: Zeroable + Copy + Send> Send for HugePageVec<T> {}
// SAFETY: as above; `&HugePageVec<T>` gives only `&[T]`.
unsafe impl<T: Zeroable + Copy + Sync> Sync for HugePageVec<T> {}

impl<T: Zeroable + Copy> HugePageVec<T> {
    pub(crate) fn new() -> HugePageVec<T> {
        const { assert!(std::mem::align_of::<T>() <= MAPPING_ALIGN) };
        HugePageVec {
            first: NonNull::dangling(),
            len: 0,
            mapped: 0,
        }
    }

    /// Grows the vector to `len` elements, the new ones zero; `None`, with the
    /// vector unchanged, when the memory cannot be had.
    pub(crate) fn grow_to(&mut self, len: usize) -> Option<()> {
        assert!(len >= self.len, "a HugePageVec only grows");
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        if bytes <= self.mapped {
            // Never written since it was mapped: zero.
            self.len = len;
            return Some(());
        }
        #[cfg(test)]
        if crate::allocation_failure::take() {
            return None;
        }
        // Doubling below a huge page (the doubled mapping may pass one, by
        // less than a huge page); past it, a move costs a few page table
        // entries, not a copy, and slack would count against a host that
        // commits its memory strictly (`vm.overcommit_memory = 2`).
        let (moved, mapped) = if self.mapped < HUGE_PAGE_BYTES {
            let mapped = bytes.max(self.mapped.saturating_mul(2));
            (self.copied_to(mapped)?, mapped)
        } else {
            (self.moved_to(bytes)?, bytes)
        };
        self.first = moved.cast();
        self.len = len;
        self.mapped = mapped;
        Some(())
    }

    /// A fresh mapping of `bytes` holding the elements; unmaps the old one.
    fn copied_to(&self, bytes: usize) -> Option<NonNull<u8>> {
        let fresh = map_aligned(bytes)?;
        if self.mapped > 0 {
            // SAFETY: the old mapping holds the `len` initialised elements at
            // `first`, the fresh one room for more (`bytes` exceeds `mapped`),
            // and the two are distinct mappings. The old mapping is unmapped
            // once, here, and `first` is replaced by the caller before anything
            // reads through it again.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.first.as_ptr().cast::<u8>(),
                    fresh.as_ptr(),
                    std::mem::size_of_val(&**self),
                );
                libc::munmap(self.first.as_ptr().cast(), self.mapped);
            }
        }
        Some(fresh)
    }

    /// The elements' pages moved, not copied, to a mapping of `bytes` that
    /// starts on a huge page, so that the huge pages stay whole.
    #[cfg(target_os = "linux")]
    fn moved_to(&self, bytes: usize) -> Option<NonNull<u8>> {
        let target = map_aligned(bytes)?;
        // SAFETY: `first..first + mapped` is this vector's own mapping, and
        // `target..target + bytes` a mapping just made for this call, which
        // MREMAP_FIXED replaces. On success the old range is unmapped by the
        // kernel and the caller replaces `first`; on failure the old mapping
        // is untouched. The target is left alone on failure: the kernel may
        // have unmapped it already (it clears the target before the checks
        // that fail for want of memory) and another thread may have mapped
        // something there since, which an munmap here would destroy. When it
        // failed before that (a map-count limit), the untouched target stays
        // mapped: address space only, on a path that is out of memory anyway.
        unsafe {
            let moved = libc::mremap(
                self.first.as_ptr().cast(),
                self.mapped,
                bytes,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target.as_ptr().cast::<libc::c_void>(),
            );
            if moved == libc::MAP_FAILED {
                return None;
            }
        }
        // The move keeps the old mapping's advice; the pages it adds get it too.
        advise_huge_pages(target, bytes);
        Some(target)
    }

    /// Without `mremap`, a copy.
    #[cfg(not(target_os = "linux"))]
    fn moved_to(&self, bytes: usize) -> Option<NonNull<u8>> {
        self.copied_to(bytes)
    }
}

/// A fresh read-write mapping of `bytes`, starting on a huge page and advised
/// for THP when it spans one.
fn map_aligned(bytes: usize) -> Option<NonNull<u8>> {
    let slack = if bytes >= HUGE_PAGE_BYTES {
        HUGE_PAGE_BYTES
    } else {
        0
    };
    let length = bytes.checked_add(slack)?;
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let mapping = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mapping == libc::MAP_FAILED {
        return None;
    }
    let start = mapping.addr();
    let aligned = start.next_multiple_of(slack.max(1));
    // The kernel maps whole small pages.
    let end = (aligned + bytes).next_multiple_of(small_page_bytes());
    // Addresses in the mapping, as pointers that keep its provenance.
    let at = |address: usize| mapping.cast::<u8>().wrapping_add(address - start);
    // SAFETY: both ranges lie inside the mapping just made and outside
    // `aligned..end`, which is kept: the head is `start..aligned`, less than
    // `slack` long, and the tail runs from `end` to the mapping's end (the
    // kernel rounds `start + length` up to a small page), unmapped only when
    // `end` lies before it.
    unsafe {
        if aligned > start {
            libc::munmap(mapping, aligned - start);
        }
        if start + length > end {
            libc::munmap(at(end).cast(), start + length - end);
        }
    }
    let fresh = NonNull::new(at(aligned))?;
    // Before anything is written: pages written first stay small.
    advise_huge_pages(fresh, bytes);
    Some(fresh)
}

fn small_page_bytes() -> usize {
    // SAFETY: `sysconf` only reads a system constant.
    let bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(bytes).unwrap_or(4096)
}

/// Advises the mapping of `bytes` at `start` for THP when it spans a huge
/// page. All of it: THP backs only whole aligned huge pages inside a mapping,
/// so its tail stays on small pages anyway, and advice on part of a mapping
/// would split it in two, which a move (`mremap`) refuses.
fn advise_huge_pages(start: NonNull<u8>, bytes: usize) {
    if bytes >= HUGE_PAGE_BYTES {
        // SAFETY: advice on memory the caller's mapping owns; a kernel without
        // THP refuses it, which only loses the hint, so the result is ignored.
        unsafe { libc::madvise(start.as_ptr().cast(), bytes, libc::MADV_HUGEPAGE) };
    }
}

impl<T: Zeroable + Copy> Deref for HugePageVec<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `first` points at `len` initialised elements (zero bytes of
        // fresh memory, valid as `T: Zeroable`, or values written since), owned
        // by `self` and only reached through it; for `len` 0 it is dangling but
        // aligned, as an empty slice allows.
        unsafe { std::slice::from_raw_parts(self.first.as_ptr(), self.len) }
    }
}

impl<T: Zeroable + Copy> DerefMut for HugePageVec<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and the exclusive borrow of `self` makes the
        // slice the only access to the elements while it lives.
        unsafe { std::slice::from_raw_parts_mut(self.first.as_ptr(), self.len) }
    }
}

impl<T: Zeroable + Copy> Drop for HugePageVec<T> {
    fn drop(&mut self) {
        if self.mapped > 0 {
            // SAFETY: unmaps exactly the vector's mapping, once; the elements
            // are `Copy`, so nothing needs dropping first.
            unsafe { libc::munmap(self.first.as_ptr().cast(), self.mapped) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn elements_are_kept_and_dropped_once() {
        static DROPPED: AtomicUsize = AtomicUsize::new(0);
        struct Counted(u64);
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: zero bytes are a `u64`.
        unsafe impl Zeroable for Counted {}
        let mut total = 0;
        // Small, mapped on small pages, and mapped with a huge page and a tail.
        for len in [3, MAPPED_BYTES / 8, HUGE_PAGE_BYTES / 8 + 5] {
            let mut array = HugePageArray::<Counted>::zeroed(len).expect("memory");
            assert_eq!(array.len(), len);
            for (i, element) in array.iter_mut().enumerate() {
                element.0 = i as u64 + 1;
            }
            assert!(array.iter().enumerate().all(|(i, c)| c.0 == i as u64 + 1));
            assert_eq!(array.is_mapped(), len > 3);
            drop(array);
            total += len;
            assert_eq!(DROPPED.load(Ordering::Relaxed), total);
        }
    }

    #[test]
    fn zeroed_arrays_read_as_zeros_and_keep_writes() {
        for len in [5, MAPPED_BYTES, HUGE_PAGE_BYTES + 100] {
            let mut bytes = HugePageArray::<u8>::zeroed(len).expect("memory");
            assert_eq!(bytes.len(), len);
            assert!(bytes.iter().all(|&b| b == 0));
            bytes[len - 1] = 7;
            assert_eq!(bytes[len - 1], 7);
        }
    }

    #[test]
    fn a_vec_keeps_its_elements_and_zeroes_new_ones_through_copies_and_moves() {
        let mut words = HugePageVec::<u32>::new();
        assert!(words.is_empty());
        let mut len = 0;
        // Copies below a huge page, then moves past it.
        for grown in [
            1,
            1000,
            1024,
            HUGE_PAGE_BYTES / 4 + 1,
            3 * HUGE_PAGE_BYTES / 4,
        ] {
            words.grow_to(grown).expect("memory");
            assert_eq!(words.len(), grown);
            assert!(words[len..].iter().all(|&word| word == 0));
            for (i, word) in words.iter().enumerate().take(len) {
                assert_eq!(*word, i as u32 ^ 0xdead_beef, "element {i} of {grown}");
            }
            for (i, word) in words.iter_mut().enumerate().skip(len) {
                *word = i as u32 ^ 0xdead_beef;
            }
            len = grown;
            if grown * 4 >= HUGE_PAGE_BYTES {
                assert_eq!(words.as_ptr() as usize % HUGE_PAGE_BYTES, 0);
            }
        }
    }

    #[test]
    fn a_vec_that_cannot_grow_is_unchanged() {
        let mut bytes = HugePageVec::<u8>::new();
        bytes.grow_to(HUGE_PAGE_BYTES).expect("memory");
        bytes[HUGE_PAGE_BYTES - 1] = 9;
        let _armed = crate::allocation_failure::arm(0);
        assert!(bytes.grow_to(2 * HUGE_PAGE_BYTES).is_none());
        assert_eq!(bytes.len(), HUGE_PAGE_BYTES);
        assert_eq!(bytes[HUGE_PAGE_BYTES - 1], 9);
    }

    /// The range a `/proc/self/maps` or `smaps` line starts with, as
    /// `start-end` in hex.
    #[cfg(target_os = "linux")]
    fn address_range(line: &str) -> Option<std::ops::Range<usize>> {
        let (start, end) = line.split_whitespace().next()?.split_once('-')?;
        Some(usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?)
    }

    /// The address ranges of the process's mappings, from `/proc/self/maps`.
    #[cfg(target_os = "linux")]
    fn mappings() -> Vec<std::ops::Range<usize>> {
        let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
        maps.lines()
            .map(|line| address_range(line).expect("a range"))
            .collect()
    }

    /// A mapping made a huge page longer, to start on one, gives the slack
    /// past its end back; a tail left mapped would outlive the array (its
    /// drop unmaps only what the array holds), one per mapping. The advice
    /// splits the array's range from such a tail, so the check is that no
    /// mapping starts where the array's pages end. Another test's mapping
    /// could only start there by filling the freed gap exactly: the kernel
    /// places a mapping at the top of a gap, and aligns one of a huge page or
    /// more, which this end, 100 bytes past one rounded to a small page, is
    /// not.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_mapping_gives_back_the_slack_past_its_end() {
        let len = HUGE_PAGE_BYTES + 100;
        let bytes = HugePageArray::<u8>::zeroed(len).expect("memory");
        let start = bytes.as_ptr() as usize;
        assert_eq!(start % HUGE_PAGE_BYTES, 0);
        let kept_end = (start + len).next_multiple_of(small_page_bytes());
        let mappings = mappings();
        let holding = mappings.iter().find(|range| range.contains(&start));
        assert_eq!(holding.map(|range| range.end), Some(kept_end));
        assert!(
            mappings.iter().all(|range| range.start != kept_end),
            "a mapping starts where the array ends"
        );
    }

    /// And the slack before its start: a head left mapped would end where the
    /// array starts, one per mapping. Once the head is given back, a small
    /// mapping of another test's thread could end there too (the kernel
    /// places a mapping at the top of a gap), so the check runs in a process
    /// of its own: this test binary again, running only this test.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_mapping_gives_back_the_slack_before_its_start() {
        let name = "huge_pages::tests::a_mapping_gives_back_the_slack_before_its_start";
        crate::test_child::in_a_child(name, || {
            // Lengths that are not whole huge pages, which a kernel may align
            // the mapping of by itself, leaving no head.
            let arrays: Vec<HugePageArray<u8>> = (1..=8)
                .map(|pages| HugePageArray::zeroed(pages * HUGE_PAGE_BYTES + 100).expect("memory"))
                .collect();
            let mappings = mappings();
            for array in &arrays {
                let start = array.as_ptr() as usize;
                assert!(
                    mappings.iter().all(|range| range.end != start),
                    "a mapping ends where the array at {start:#x} starts"
                );
            }
        });
    }

    /// The flags of the mapping that holds `address`, from `/proc/self/smaps`
    /// (`hg`: advised for THP).
    #[cfg(target_os = "linux")]
    fn vm_flags_of(address: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        let mut holding = false;
        for line in smaps.lines() {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                if holding {
                    return flags.split_whitespace().map(str::to_string).collect();
                }
            } else if let Some(range) = address_range(line) {
                holding = range.contains(&address);
            }
        }
        panic!("no mapping holds {address:#x}")
    }

    /// What the huge pages are for: a mapping of a huge page or more is
    /// advised for THP, so that the kernel backs it with them where the
    /// system leaves THP to `madvise`.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_mapping_of_a_huge_page_or_more_is_advised_for_thp() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!("skipped: this kernel has no THP, and refuses the advice");
            return;
        }
        let bytes = HugePageArray::<u8>::zeroed(HUGE_PAGE_BYTES).expect("memory");
        let flags = vm_flags_of(bytes.as_ptr() as usize);
        assert!(flags.iter().any(|flag| flag == "hg"), "{flags:?}");
    }

    /// A kernel left to place a moved mapping may grow it in place, or put it
    /// anywhere a small page allows when its length is not a whole number of
    /// huge pages: only the target the vector maps itself keeps it aligned.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_vec_that_cannot_grow_in_place_moves_onto_a_huge_page() {
        let mut bytes = HugePageVec::<u8>::new();
        bytes.grow_to(HUGE_PAGE_BYTES + 1).expect("memory");
        bytes[HUGE_PAGE_BYTES] = 7;
        let before = bytes.as_ptr() as usize;
        let blocked = (before + bytes.mapped).next_multiple_of(small_page_bytes());
        // SAFETY: maps one fresh page at `blocked`, the first address past the
        // vector's mapping, and fails rather than replace anything there.
        let blocker = unsafe {
            libc::mmap(
                blocked as *mut libc::c_void,
                small_page_bytes(),
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        // The page is ours now, or another thread's mapping took it first
        // (`EEXIST`): either way the vector cannot grow in place.
        let ours = (blocker != libc::MAP_FAILED).then_some(blocker);
        bytes
            .grow_to(HUGE_PAGE_BYTES + HUGE_PAGE_BYTES / 2 + 1)
            .expect("memory");
        assert_ne!(bytes.as_ptr() as usize, before, "moved");
        assert_eq!(bytes.as_ptr() as usize % HUGE_PAGE_BYTES, 0);
        assert_eq!(bytes[HUGE_PAGE_BYTES], 7);
        assert!(bytes[HUGE_PAGE_BYTES + 1..].iter().all(|&byte| byte == 0));
        if let Some(blocker) = ours {
            // SAFETY: unmaps the page mapped above, which nothing else uses.
            unsafe { libc::munmap(blocker, small_page_bytes()) };
        }
    }
}
