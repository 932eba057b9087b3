//! An anonymous mapping on transparent huge pages, for the benches' arrays.

use std::ptr::NonNull;

pub const HUGE_PAGE: usize = 2 << 20;

/// An anonymous mapping aligned to and advised for 2 MiB pages.
pub struct HugeMap {
    mapping: NonNull<u8>,
    mapping_len: usize,
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned exclusively, like a `Vec<u8>`; shared access only
// reads through `&self`, writes need `&mut self`.
unsafe impl Send for HugeMap {}
// SAFETY: as above.
unsafe impl Sync for HugeMap {}

impl HugeMap {
    pub fn new(len: usize) -> HugeMap {
        let len = len.max(1).next_multiple_of(HUGE_PAGE);
        let mapping_len = len + HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let mapping = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapping_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            mapping != libc::MAP_FAILED,
            "mmap of {mapping_len} bytes failed"
        );
        let offset = (mapping as usize).next_multiple_of(HUGE_PAGE) - mapping as usize;
        // SAFETY: `offset < HUGE_PAGE`, so `start..start + len` is inside the mapping.
        let start = unsafe { mapping.cast::<u8>().add(offset) };
        // SAFETY: advice on memory this mapping owns; failure only loses the hint,
        // so the result is deliberately ignored.
        unsafe { libc::madvise(start.cast(), len, libc::MADV_HUGEPAGE) };
        HugeMap {
            mapping: NonNull::new(mapping.cast()).expect("mmap returned NULL"),
            mapping_len,
            start: NonNull::new(start).expect("mapping start is not NULL"),
            len,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `start..start + len` is mapped readable for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl Drop for HugeMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created; no slice outlives `self`.
        unsafe { libc::munmap(self.mapping.as_ptr().cast(), self.mapping_len) };
    }
}
