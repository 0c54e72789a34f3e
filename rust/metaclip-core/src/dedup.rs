//! Sort and deduplicate one text's matched entry ids, in place.
//!
//! Most texts match at most 64 entries. For those, with AVX2 or AVX-512, each id's place is
//! its rank: the number of ids smaller than it, counted with lane compares. Equal ids get
//! the same place, so duplicates vanish without a pass of their own. About 2.5× faster than
//! `sort_unstable` plus a dedup pass on the bench workload (15 ids per text on average);
//! AVX-512 halves the compares again and needs no copy of the ids.

/// Ids are below this (entry ids are 31-bit, see `matcher::MAX_ENTRIES`): it pads lanes and
/// marks empty places.
const PAD: u32 = i32::MAX as u32;

/// Longest id list the SIMD paths rank (Thai or Han texts match ~30–50 substring entries).
const MAX_RANKED: usize = 64;

/// Which rank path this CPU can run (checked once, by the caller, with [`Simd::detect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// `sort_unstable` and a dedup pass.
    Scalar,
    /// Ranks with 8-lane compares.
    Avx2,
    /// Ranks with 16-lane compares, masked loads and stores.
    Avx512,
}

impl Simd {
    /// The widest path this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("popcnt") {
                return Simd::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
                return Simd::Avx2;
            }
        }
        Simd::Scalar
    }

    /// Every path this CPU runs (for tests; the variants are in order of width).
    pub fn available() -> Vec<Self> {
        let best = Self::detect();
        [Simd::Scalar, Simd::Avx2, Simd::Avx512]
            .into_iter()
            .filter(|&s| s as u8 <= best as u8)
            .collect()
    }
}

/// Sort `ids` ascending and move the distinct values to the front; returns how many there
/// are. `simd` must come from [`Simd::detect`]. Every id must be below 2^31 − 1.
#[inline]
pub fn sort_dedup(ids: &mut [u32], simd: Simd) -> usize {
    if ids.len() < 2 {
        return ids.len();
    }
    #[cfg(target_arch = "x86_64")]
    if ids.len() <= MAX_RANKED {
        match simd {
            // SAFETY: the caller checked the features with `Simd::detect`.
            Simd::Avx512 => return unsafe { rank_avx512(ids) },
            // SAFETY: as above.
            Simd::Avx2 => return unsafe { rank_avx2(ids) },
            Simd::Scalar => {}
        }
    }
    let _ = simd;
    ids.sort_unstable();
    let mut keep = 1;
    for i in 1..ids.len() {
        if ids[i] != ids[keep - 1] {
            ids[keep] = ids[i];
            keep += 1;
        }
    }
    keep
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn rank_avx2(ids: &mut [u32]) -> usize {
    use std::arch::x86_64::*;
    let n = ids.len();
    debug_assert!((2..=MAX_RANKED).contains(&n));
    let mut lanes = [PAD; MAX_RANKED];
    lanes[..n].copy_from_slice(ids);
    let regs = n.div_ceil(8);
    let mut v = [_mm256_setzero_si256(); MAX_RANKED / 8];
    for (r, reg) in v.iter_mut().enumerate().take(regs) {
        // SAFETY: lanes holds 64 values, so 8 from 8 * r (r < 8) are in bounds.
        *reg = unsafe { _mm256_loadu_si256(lanes.as_ptr().add(8 * r) as *const __m256i) };
    }
    let mut placed = [PAD; MAX_RANKED];
    for &id in &ids[..] {
        // Signed compares are exact: every id and PAD are below 2^31.
        let x = _mm256_set1_epi32(id as i32);
        let mut rank = 0;
        for reg in &v[..regs] {
            let less = _mm256_castsi256_ps(_mm256_cmpgt_epi32(x, *reg));
            rank += (_mm256_movemask_ps(less) as u32).count_ones();
        }
        // rank < n: only the other ids can be smaller than this one.
        placed[rank as usize] = id;
    }
    let mut keep = 0;
    for &id in &placed[..n] {
        if id != PAD {
            ids[keep] = id;
            keep += 1;
        }
    }
    keep
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,popcnt")]
unsafe fn rank_avx512(ids: &mut [u32]) -> usize {
    debug_assert!((2..=MAX_RANKED).contains(&ids.len()));
    // A register count known at compile time keeps the ids in registers.
    // SAFETY (all four): the caller checked AVX-512F and POPCNT; R * 16 >= ids.len().
    match ids.len().div_ceil(16) {
        1 => unsafe { rank_regs::<1>(ids) },
        2 => unsafe { rank_regs::<2>(ids) },
        3 => unsafe { rank_regs::<3>(ids) },
        _ => unsafe { rank_regs::<4>(ids) },
    }
}

/// [`rank_avx512`] for `16 * (R - 1) < ids.len() <= 16 * R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,popcnt")]
unsafe fn rank_regs<const R: usize>(ids: &mut [u32]) -> usize {
    use std::arch::x86_64::*;
    let n = ids.len();
    let pad = _mm512_set1_epi32(PAD as i32);
    let mut v = [pad; R];
    for (r, reg) in v.iter_mut().enumerate() {
        let lanes = (n - 16 * r).min(16);
        let mask = (u32::MAX >> (32 - lanes)) as __mmask16;
        // SAFETY: a masked load reads only the lanes in `mask`, all within `ids`.
        *reg =
            unsafe { _mm512_mask_loadu_epi32(pad, mask, ids.as_ptr().add(16 * r) as *const i32) };
    }
    let mut placed = [PAD; MAX_RANKED];
    for &id in &ids[..] {
        let x = _mm512_set1_epi32(id as i32);
        let mut rank = 0;
        for reg in &v {
            rank += (_mm512_cmplt_epu32_mask(*reg, x) as u32).count_ones();
        }
        // rank < n: only the other ids can be smaller than this one.
        placed[rank as usize] = id;
    }
    let mut keep = 0;
    for r in 0..R {
        // SAFETY: `placed` holds 64 values, so 16 from 16 * r (r < 4) are in bounds.
        let p = unsafe { _mm512_loadu_si512(placed.as_ptr().add(16 * r) as *const _) };
        let used = _mm512_cmpneq_epu32_mask(p, pad);
        let k = (used as u32).count_ones() as usize;
        let packed = _mm512_maskz_compress_epi32(used, p);
        // Places at or past n stay PAD, so keep + k <= n: the store stays within `ids`.
        let low = ((1u32 << k) - 1) as __mmask16;
        // SAFETY: a masked store writes only the first k lanes, at ids[keep..keep + k].
        unsafe { _mm512_mask_storeu_epi32(ids.as_mut_ptr().add(keep) as *mut i32, low, packed) };
        keep += k;
    }
    keep
}

/// A bitmap over all ids of a matcher, for texts with more ids than the SIMD paths rank:
/// marking each id and reading the marks back in order sorts and deduplicates in time
/// linear in the ids plus one summary word per 4,096 ids, where `sort_unstable` took
/// ~12% of the time on generated Thai (~50 ids per text).
pub struct Bitmap {
    leaves: Vec<u64>,
    /// Bit `l` is set when `leaves[l]` has a mark.
    summary: Vec<u64>,
}

impl Bitmap {
    /// A bitmap for ids below `n`.
    pub fn new(n: usize) -> Self {
        let leaves = n.div_ceil(64);
        Bitmap {
            leaves: vec![0; leaves],
            summary: vec![0; leaves.div_ceil(64)],
        }
    }

    /// Like [`sort_dedup`]; every id must be below the `n` given to [`Bitmap::new`]. The
    /// bitmap is clear again afterwards.
    pub fn sort_dedup(&mut self, ids: &mut [u32]) -> usize {
        for &id in ids.iter() {
            let l = id as usize / 64;
            self.leaves[l] |= 1 << (id % 64);
            self.summary[l / 64] |= 1 << (l % 64);
        }
        let mut keep = 0;
        for (s, word) in self.summary.iter_mut().enumerate() {
            let mut w = std::mem::take(word);
            while w != 0 {
                let l = s * 64 + w.trailing_zeros() as usize;
                w &= w - 1;
                let mut x = std::mem::take(&mut self.leaves[l]);
                while x != 0 {
                    ids[keep] = (l * 64) as u32 + x.trailing_zeros();
                    keep += 1;
                    x &= x - 1;
                }
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(ids: &[u32]) -> Vec<u32> {
        let mut v = ids.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    }

    #[test]
    fn equals_sort_then_dedup() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state = crate::sample::splitmix64(state);
            state
        };
        // Reused throughout: it must be clear again after every call.
        let mut bitmap = Bitmap::new(1 << 20);
        for simd in Simd::available() {
            for n in 0..=80 {
                for round in 0..200 {
                    // Narrow ranges give many duplicates; wide ones reach the largest ids.
                    let range = [4u64, 64, 1 << 20, (PAD - 1) as u64][round % 4];
                    let mut ids: Vec<u32> = (0..n)
                        .map(|_| {
                            let v = next() % range;
                            (if round % 8 == 3 {
                                PAD as u64 - 1 - v
                            } else {
                                v
                            }) as u32
                        })
                        .collect();
                    let want = reference(&ids);
                    if range <= 1 << 20 && round % 8 != 3 {
                        let mut by_bits = ids.clone();
                        let keep = bitmap.sort_dedup(&mut by_bits);
                        assert_eq!(&by_bits[..keep], &want[..], "bitmap n {n} round {round}");
                    }
                    let keep = sort_dedup(&mut ids, simd);
                    assert_eq!(&ids[..keep], &want[..], "n {n} round {round} {simd:?}");
                }
            }
        }
    }
}
