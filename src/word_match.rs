//! Compares the seven 64-bit entries of an index bucket with one value at
//! once: the engine's other `unsafe` operation besides prefetching, kept apart
//! from it for the same reason (see `prefetch`).
//!
//! SSE2, which every x86_64 processor has, compares 32-bit lanes but not
//! 64-bit ones, so the compiler compares a bucket's entries one by one. Two at
//! a time instead (each pair of 32-bit lanes compared, then each lane ANDed
//! with its neighbour), lookups in the layout study ran 0.03x-0.12x of the
//! dense limit faster (BENCHMARKS.md, "Remainders compared by SSE2").

/// Entries in a bucket: seven of a cache line's eight words.
pub(crate) const WORDS: usize = 7;

/// Bit `i` set where `words[i] & mask == want`.
#[inline(always)]
pub(crate) fn matching(words: &[u64; WORDS], mask: u64, want: u64) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_castsi128_pd, _mm_cmpeq_epi32, _mm_loadu_si128,
            _mm_movemask_pd, _mm_set1_epi64x, _mm_shuffle_epi32,
        };
        // SAFETY: SSE2 is in the x86_64 baseline, so the intrinsics exist.
        // Each load reads words `2 * pair` and `2 * pair + 1`, both within
        // `words` for pairs 0 to 2, through a pointer derived from the
        // reference, with no alignment required (`loadu`); the reference keeps
        // them alive and unwritten meanwhile.
        let pairs = unsafe {
            let mask = _mm_set1_epi64x(mask as i64);
            let want = _mm_set1_epi64x(want as i64);
            let base = words.as_ptr().cast::<__m128i>();
            let mut found = 0u32;
            for pair in 0..WORDS / 2 {
                let held = _mm_and_si128(_mm_loadu_si128(base.add(pair)), mask);
                let halves = _mm_cmpeq_epi32(held, want);
                let both = _mm_and_si128(halves, _mm_shuffle_epi32::<0b10_11_00_01>(halves));
                found |= (_mm_movemask_pd(_mm_castsi128_pd(both)) as u32) << (2 * pair);
            }
            found
        };
        pairs | u32::from(words[WORDS - 1] & mask == want) << (WORDS - 1)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        one_by_one(words, mask, want)
    }
}

/// [`matching`] written plainly: the other architectures' version, and the
/// reference the SSE2 one is tested against.
#[cfg_attr(target_arch = "x86_64", cfg(test))]
fn one_by_one(words: &[u64; WORDS], mask: u64, want: u64) -> u32 {
    words.iter().enumerate().fold(0, |found, (i, &word)| {
        found | u32::from(word & mask == want) << i
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cases worked out by hand, so that `matching` is checked against more
    /// than the reference it shares a module with (on other architectures
    /// they are the same function).
    #[test]
    fn matches_worked_out_by_hand() {
        let want = 0x0123_4567_89ab_cdef_u64;
        let words = [
            want,               // 0: equal
            want ^ (1 << 40),   // 1: the high halves differ
            want ^ 1,           // 2: the low halves differ
            want | (0xf << 60), // 3: differs only above bit 59
            0,                  // 4
            want,               // 5: equal
            want ^ (1 << 63),   // 6: the top bit differs
        ];
        assert_eq!(matching(&words, u64::MAX, want), 0b010_0001);
        // The mask drops bits 60 to 63: word 3 and word 6 match too.
        let low_60 = u64::MAX >> 4;
        assert_eq!(matching(&words, low_60, want & low_60), 0b110_1001);
        // Nothing equals a value no word holds.
        assert_eq!(matching(&words, u64::MAX, 42), 0);
        // Every word equals zero under an empty mask.
        assert_eq!(matching(&words, 0, 0), 0b111_1111);
    }

    #[test]
    fn matches_as_compared_one_by_one() {
        let mut state = 0x6b76_7a63_u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (state ^ (state >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z ^ (z >> 29)
        };
        // Miri, which runs this in CI when a nightly has it, interprets each
        // round thousands of times slower.
        let rounds = if cfg!(miri) { 500 } else { 20_000 };
        for round in 0..rounds {
            let mask = u64::MAX << (round % 64);
            let want = next() & mask;
            let mut words = [0u64; WORDS];
            for word in &mut words {
                // Equal to `want` under the mask, equal in one 32-bit half
                // only, or random.
                *word = match next() % 4 {
                    0 => want | (next() & !mask),
                    1 => want ^ (1 << 40),
                    2 => want ^ 1,
                    _ => next(),
                };
            }
            assert_eq!(
                matching(&words, mask, want),
                one_by_one(&words, mask, want),
                "{words:x?} {mask:#x} {want:#x}"
            );
        }
    }
}
