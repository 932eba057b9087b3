//! Fixed-length arrays that, once large, live in anonymous mappings of their
//! own, on transparent huge pages as far as they span whole ones.
//!
//! A lookup reads one random index bucket and one random row per id, so on
//! 4 KiB pages nearly every read also misses the TLB, and under a hypervisor
//! each such miss is a two-level page walk. A 2 MiB page covers 512 times as
//! much, which takes most of those walks away. The heap cannot be trusted with
//! this: glibc serves large blocks from memory that earlier blocks already
//! faulted in as small pages, and it keeps freed blocks resident, so an index
//! that grows by rebuilds leaves its old tables behind in the process's RSS.
//! A large array therefore gets a mapping of its own, unmapped when it is
//! dropped. The mapping's length is rounded up to whole huge pages, which
//! recent Linux kernels align to a huge page (on older ones, only the huge pages
//! that happen to be aligned are used). The array's whole huge pages are advised
//! for THP and its tail stays on small pages, of which only those the array
//! covers are ever touched, so the array costs its own length in memory and no
//! more.
//! Kept apart from the engine, like `prefetch`, so that `cache/` can forbid
//! `unsafe` outright.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use memmap2::{Advice, MmapMut};

/// The transparent huge page size on x86_64 and on aarch64 with 4 KiB pages.
const HUGE_PAGE_BYTES: usize = 2 << 20;
/// Arrays of at least this many bytes get a mapping of their own: big enough
/// that rounding to whole small pages wastes little.
const MAPPED_BYTES: usize = 64 << 10;
/// Mappings are aligned to (small) pages, which bounds the alignment a type
/// stored in one may ask for.
const MAPPING_ALIGN: usize = 4 << 10;

/// Owns its elements like a `Box<[T]>`; `deref` reads the pointer and length
/// it keeps, without asking which kind of memory holds them, since a lookup
/// derefs a row chunk per id between its index probe and its row prefetch.
pub(crate) struct HugePageArray<T> {
    first: NonNull<T>,
    len: usize,
    /// The mapping holding the elements; `None` for a small array, whose
    /// elements are a `Box<[T]>` released into `first` and taken back on drop.
    mapping: Option<MmapMut>,
    _owns: PhantomData<T>,
}

// SAFETY: the array owns its elements exclusively, like a `Box<[T]>`: moving it
// to another thread moves them, and shared access only hands out `&T`.
unsafe impl<T: Send> Send for HugePageArray<T> {}
// SAFETY: as above; `&HugePageArray<T>` gives only `&[T]`.
unsafe impl<T: Sync> Sync for HugePageArray<T> {}

impl<T> HugePageArray<T> {
    /// An array of `len` elements made by `init`, or `None` when the memory
    /// cannot be had.
    pub(crate) fn new(len: usize, mut init: impl FnMut() -> T) -> Option<HugePageArray<T>> {
        const { assert!(std::mem::align_of::<T>() <= MAPPING_ALIGN) };
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        if bytes < MAPPED_BYTES {
            let mut elements = Vec::new();
            elements.try_reserve_exact(len).ok()?;
            elements.resize_with(len, init);
            let elements = Box::into_raw(elements.into_boxed_slice());
            return Some(HugePageArray {
                first: NonNull::new(elements.cast::<T>()).expect("a box is not null"),
                len,
                mapping: None,
                _owns: PhantomData,
            });
        }
        let mut map = map_for(bytes)?;
        let first = map.as_mut_ptr().cast::<T>();
        for i in 0..len {
            // SAFETY: the mapping holds `bytes = len * size_of::<T>()` bytes and
            // starts on a page boundary, which satisfies `T`'s alignment (checked
            // above), so element `i < len` lies inside it, aligned; `write` does
            // not read or drop the uninitialised (zero) bytes it replaces.
            unsafe { first.add(i).write(init()) };
        }
        Some(HugePageArray::mapped(map, len))
    }

    /// The array of the `len` elements at the start of `map`, initialised.
    fn mapped(mut map: MmapMut, len: usize) -> HugePageArray<T> {
        HugePageArray {
            first: NonNull::new(map.as_mut_ptr().cast::<T>()).expect("a mapping is not null"),
            len,
            mapping: Some(map),
            _owns: PhantomData,
        }
    }

    #[cfg(test)]
    fn is_mapped(&self) -> bool {
        self.mapping.is_some()
    }
}

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

// SAFETY: a bucket's fields are `[i64; 5]`, `[u32; 5]` and an `AtomicU32`, each
// valid as zero bytes. Zero bytes are also the empty bucket (zero marks a free
// position), which the index's tests read from zeroed tables. The impl lives
// here because `cache/` forbids `unsafe`.
unsafe impl Zeroable for crate::cache::index::Bucket {}

impl<T: Zeroable> HugePageArray<T> {
    /// `len` elements of zero bytes. A fresh mapping's pages are touched, and
    /// paid for, only when first written.
    pub(crate) fn zeroed(len: usize) -> Option<HugePageArray<T>> {
        const { assert!(std::mem::align_of::<T>() <= MAPPING_ALIGN) };
        #[cfg(test)]
        if crate::allocation_failure::take() {
            return None;
        }
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        if bytes < MAPPED_BYTES {
            return HugePageArray::new(len, T::zero);
        }
        Some(HugePageArray::mapped(map_for(bytes)?, len))
    }
}

/// A fresh mapping for `bytes` bytes, its whole huge pages advised for THP.
fn map_for(bytes: usize) -> Option<MmapMut> {
    let map = MmapMut::map_anon(bytes.next_multiple_of(HUGE_PAGE_BYTES)).ok()?;
    let whole_huge_pages = bytes / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    if whole_huge_pages > 0 {
        // Advice is a hint: a kernel without THP still gives a working mapping.
        let _ = map.advise_range(Advice::HugePage, 0, whole_huge_pages);
    }
    Some(map)
}

impl<T> Deref for HugePageArray<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `first` points at `len` initialised elements (written by `new`,
        // or zero bytes of a fresh mapping for `zeroed`), owned by `self` and
        // only reached through it, so a shared borrow of `self` makes a shared
        // slice of them sound.
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
        if self.mapping.is_some() {
            // SAFETY: the `len` elements are initialised and are dropped once,
            // here, before the mapping is unmapped (the field drops next).
            unsafe { std::ptr::drop_in_place(elements) };
        } else {
            // SAFETY: `first` and `len` came from `Box::into_raw` of a boxed
            // slice in `new`, and the box is taken back once, here.
            drop(unsafe { Box::from_raw(elements) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn elements_are_made_kept_and_dropped_once() {
        static DROPPED: AtomicUsize = AtomicUsize::new(0);
        struct Counted(u64);
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut total = 0;
        // Small, mapped on small pages, and mapped with a huge page and a tail.
        for len in [3, MAPPED_BYTES / 8, HUGE_PAGE_BYTES / 8 + 5] {
            let mut next = 0;
            let mut array = HugePageArray::new(len, || {
                next += 1;
                Counted(next)
            })
            .expect("memory");
            assert_eq!(array.len(), len);
            array[len - 1].0 = 0;
            assert!(array
                .iter()
                .take(len - 1)
                .enumerate()
                .all(|(i, c)| c.0 == i as u64 + 1));
            assert_eq!(array.is_mapped(), len > 3);
            drop(array);
            total += len;
            assert_eq!(DROPPED.load(Ordering::Relaxed), total);
        }
    }

    #[test]
    fn zeroed_arrays_read_as_zeros_and_keep_writes() {
        for len in [5, MAPPED_BYTES, HUGE_PAGE_BYTES + 100] {
            let mut bytes = HugePageArray::zeroed(len).expect("memory");
            assert_eq!(bytes.len(), len);
            assert!(bytes.iter().all(|&b| b == 0));
            bytes[len - 1] = 7;
            assert_eq!(bytes[len - 1], 7);
        }
    }
}
