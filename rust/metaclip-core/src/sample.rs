//! Deterministic balanced sampling (spec §6).
//!
//! Every coin is a pure function of (seed, sample key, entry id, epoch):
//!
//! ```text
//! h    = xxh3_64(key bytes, seed)
//! coin = splitmix64(h + splitmix64(epoch << 32 | entry))      (wrapping add)
//! u    = (coin >> 11) * 2^-53                                  in [0, 1)
//! ```
//!
//! An entry passes iff `u < p[entry]`; a pair is kept iff any matched entry passes, so
//! P(keep) = 1 − Π(1 − p). For an image with several texts, one matched text is picked
//! with the same coin at the reserved entry id `u32::MAX` (never a real id):
//! `index = (coin × n_matched) >> 64`.

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::{Error, Result};
use crate::pool;

/// The entry id whose coin picks a text for image-level sampling.
pub const PICK_ID: u32 = u32::MAX;

/// The splitmix64 finaliser: a bijective mix of 64 bits.
#[inline]
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a sample key under a seed.
#[inline]
pub fn key_hash(seed: u64, key: &[u8]) -> u64 {
    xxh3_64_with_seed(key, seed)
}

/// The coin of (key hash, entry, epoch) as 64 random bits (see the module docs).
#[inline]
pub fn coin64(key_hash: u64, entry: u32, epoch: u32) -> u64 {
    let x = ((epoch as u64) << 32) | entry as u64;
    splitmix64(key_hash.wrapping_add(splitmix64(x)))
}

/// The coin as a float in [0, 1).
#[inline]
pub fn coin(key_hash: u64, entry: u32, epoch: u32) -> f64 {
    (coin64(key_hash, entry, epoch) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Keep decision for one unit with matched `ids`.
#[inline]
pub fn keep(key_hash: u64, ids: &[u32], probs: &[f64], epoch: u32) -> bool {
    ids.iter()
        .any(|&e| coin(key_hash, e, epoch) < probs.get(e as usize).copied().unwrap_or(0.0))
}

/// Uniform pick in `0..n` (n > 0) for image-level sampling.
#[inline]
pub fn pick(key_hash: u64, n: usize, epoch: u32) -> usize {
    ((coin64(key_hash, PICK_ID, epoch) as u128 * n as u128) >> 64) as usize
}

fn check_csr(offsets: &[i64], ids_len: usize) -> Result<()> {
    if offsets.is_empty() || offsets[0] != 0 || offsets[offsets.len() - 1] as usize != ids_len {
        return Err(Error::invalid(
            "offsets must start at 0 and end at len(ids)",
        ));
    }
    if offsets.windows(2).any(|w| w[1] < w[0]) {
        return Err(Error::invalid("offsets must be non-decreasing"));
    }
    Ok(())
}

/// MC1: keep flag per pair. `key_hashes[i]` is the hash of pair i's key; its matched ids
/// are `ids[offsets[i]..offsets[i+1]]`.
pub fn sample_pairs(
    key_hashes: &[u64],
    offsets: &[i64],
    ids: &[u32],
    probs: &[f64],
    epoch: u32,
    threads: usize,
) -> Result<Vec<bool>> {
    check_csr(offsets, ids.len())?;
    if key_hashes.len() + 1 != offsets.len() {
        return Err(Error::invalid("need one key per text (len(offsets) - 1)"));
    }
    let one = |i: usize| {
        let row = &ids[offsets[i] as usize..offsets[i + 1] as usize];
        keep(key_hashes[i], row, probs, epoch)
    };
    Ok(pool::install(threads, || {
        (0..key_hashes.len())
            .into_par_iter()
            .with_min_len(4096)
            .map(one)
            .collect()
    }))
}

/// P(keep) = `1 − Π(1 − p[e])` per row of a CSR (0 for a row without ids). The product runs
/// over the row's ids in order, so a row's value never depends on other rows.
pub fn keep_probability(
    offsets: &[i64],
    ids: &[u32],
    probs: &[f64],
    threads: usize,
) -> Result<Vec<f64>> {
    check_csr(offsets, ids.len())?;
    if let Some(&bad) = ids.iter().find(|&&e| e as usize >= probs.len()) {
        return Err(Error::invalid(format!(
            "entry id {bad} out of range for {} probabilities",
            probs.len()
        )));
    }
    let one = |i: usize| {
        let row = &ids[offsets[i] as usize..offsets[i + 1] as usize];
        if row.is_empty() {
            return 0.0;
        }
        1.0 - row.iter().fold(1.0, |q, &e| q * (1.0 - probs[e as usize]))
    };
    Ok(pool::install(threads, || {
        (0..offsets.len() - 1)
            .into_par_iter()
            .with_min_len(4096)
            .map(one)
            .collect()
    }))
}

/// MC2: per image, pick one matched text uniformly, then keep it with the MC1 rule.
/// Image j owns text rows `image_offsets[j]..image_offsets[j+1]`. Returns the keep flag
/// and the picked text row (-1 when the image has no matched text).
pub fn sample_images(
    key_hashes: &[u64],
    image_offsets: &[i64],
    offsets: &[i64],
    ids: &[u32],
    probs: &[f64],
    epoch: u32,
    threads: usize,
) -> Result<(Vec<bool>, Vec<i64>)> {
    check_csr(offsets, ids.len())?;
    check_csr(image_offsets, offsets.len() - 1)?;
    if key_hashes.len() + 1 != image_offsets.len() {
        return Err(Error::invalid("need one key per image"));
    }
    let one = |j: usize| {
        let rows = image_offsets[j] as usize..image_offsets[j + 1] as usize;
        let matched: Vec<usize> = rows.filter(|&r| offsets[r + 1] > offsets[r]).collect();
        if matched.is_empty() {
            return (false, -1);
        }
        let r = matched[pick(key_hashes[j], matched.len(), epoch)];
        let row = &ids[offsets[r] as usize..offsets[r + 1] as usize];
        (keep(key_hashes[j], row, probs, epoch), r as i64)
    };
    Ok(pool::install(threads, || {
        (0..key_hashes.len())
            .into_par_iter()
            .with_min_len(4096)
            .map(one)
            .unzip()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coins_are_uniform_and_stable() {
        let h = key_hash(7, b"sample-1");
        assert_eq!(coin(h, 3, 0), coin(key_hash(7, b"sample-1"), 3, 0));
        assert_ne!(coin(h, 3, 0), coin(h, 3, 1));
        let n = 100_000;
        let mean: f64 = (0..n).map(|e| coin(h, e, 0)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }

    #[test]
    fn keep_rule_matches_product_formula() {
        let probs = [0.3, 0.5];
        let n = 200_000u64;
        let kept = (0..n)
            .filter(|i| keep(key_hash(1, &i.to_le_bytes()), &[0, 1], &probs, 0))
            .count();
        let expect = 1.0 - 0.7 * 0.5;
        let got = kept as f64 / n as f64;
        // 5 standard errors.
        let se = (expect * (1.0 - expect) / n as f64).sqrt();
        assert!((got - expect).abs() < 5.0 * se, "{got} vs {expect}");
    }

    #[test]
    fn keep_probability_is_one_minus_product() {
        let p = keep_probability(&[0, 2, 2, 3], &[0, 1, 1], &[0.5, 0.25], 1).unwrap();
        assert_eq!(p, vec![1.0 - 0.5 * 0.75, 0.0, 0.25]);
        assert!(keep_probability(&[0, 1], &[5], &[0.5], 1).is_err());
    }

    #[test]
    fn thread_count_does_not_change_samples() {
        let n = 20_000usize;
        let hashes: Vec<u64> = (0..n).map(|i| key_hash(3, &i.to_le_bytes())).collect();
        let offsets: Vec<i64> = (0..=n as i64).collect();
        let ids: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
        let probs = vec![0.25; 10];
        let a = sample_pairs(&hashes, &offsets, &ids, &probs, 0, 1).unwrap();
        let b = sample_pairs(&hashes, &offsets, &ids, &probs, 0, 3).unwrap();
        assert_eq!(a, b);
    }
}
