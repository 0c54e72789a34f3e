//! Per-entry counts (spec §4): a text counts once per entry it matched.

use std::ops::Range;

use crate::error::{Error, Result};

/// Count how often each id occurs in `ids` (CSR ids: already unique per text).
pub fn count_ids(ids: &[u32], n_entries: usize) -> Result<Vec<u64>> {
    let mut counts = vec![0u64; n_entries];
    add_ids(&mut counts, ids)?;
    Ok(counts)
}

/// Counts (as [`count_ids`]) of the ids in the CSR rows where `keep` (one byte per row)
/// is set.
pub fn count_rows(offsets: &[i64], ids: &[u32], keep: &[u8], n_entries: usize) -> Result<Vec<u64>> {
    let mut counts = vec![0u64; n_entries];
    for r in kept_ranges(offsets, ids, keep)? {
        add_ids(&mut counts, &ids[r])?;
    }
    Ok(counts)
}

/// The entries that occur in `ids` (all of them, or with `offsets` and `keep` (CSR offsets,
/// keep byte per row; both or neither) those of the kept rows) and their counts, ascending
/// by id: the nonzero part of [`count_ids`] / [`count_rows`].
///
/// For few ids (a small shard) against many entries: a fresh dense array over every entry
/// (500k and more) costs more than the counting. Here the dense counts and a bitmap of the
/// entries hit are scratch kept per thread and reset as they are read out. For many ids a
/// dense count and its nonzero part are faster (`metaclip.core` picks).
pub fn count_sparse(
    ids: &[u32],
    n_entries: usize,
    offsets: Option<&[i64]>,
    keep: Option<&[u8]>,
) -> Result<(Vec<u32>, Vec<u64>)> {
    let ranges: Vec<Range<usize>> = match (offsets, keep) {
        (None, None) => std::iter::once(0..ids.len()).collect(),
        (Some(offsets), Some(keep)) => kept_ranges(offsets, ids, keep)?.collect(),
        _ => return Err(Error::invalid("give both offsets and keep, or neither")),
    };
    SCRATCH.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (counts, bits) = &mut *guard;
        if counts.len() < n_entries {
            counts.resize(n_entries, 0);
            bits.resize(n_entries.div_ceil(64), 0);
        }
        let counts = &mut counts[..n_entries];
        let bits = &mut bits[..n_entries.div_ceil(64)];
        let mut bad = None;
        for r in ranges {
            for &id in &ids[r] {
                let id = id as usize;
                match counts.get_mut(id) {
                    Some(c) => {
                        *c += 1;
                        bits[id / 64] |= 1 << (id % 64);
                    }
                    None => bad = Some(id),
                }
            }
        }
        let mut out = (Vec::new(), Vec::new());
        for (w, word) in bits.iter_mut().enumerate() {
            let mut x = std::mem::take(word);
            while x != 0 {
                let id = w * 64 + x.trailing_zeros() as usize;
                out.0.push(id as u32);
                out.1.push(std::mem::take(&mut counts[id]));
                x &= x - 1;
            }
        }
        // The scratch is all zero again, whether or not an id was out of range.
        match bad {
            Some(id) => Err(Error::invalid(format!(
                "entry id {id} out of range for {n_entries} entries"
            ))),
            None => Ok(out),
        }
    })
}

thread_local! {
    /// Dense counts and touched-entry bits, all zero between calls of [`count_sparse`].
    static SCRATCH: std::cell::RefCell<(Vec<u64>, Vec<u64>)> = Default::default();
}

fn add_ids(counts: &mut [u64], ids: &[u32]) -> Result<()> {
    let n = counts.len();
    for &id in ids {
        match counts.get_mut(id as usize) {
            Some(c) => *c += 1,
            None => {
                return Err(Error::invalid(format!(
                    "entry id {id} out of range for {n} entries"
                )))
            }
        }
    }
    Ok(())
}

fn check_rows(offsets: &[i64], ids: &[u32], keep: &[u8]) -> Result<()> {
    let valid = offsets.len() == keep.len() + 1
        && offsets.first().is_some_and(|&o| o >= 0)
        && offsets.windows(2).all(|w| w[0] <= w[1])
        && offsets.last().is_some_and(|&o| o as usize <= ids.len());
    if valid {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{} offsets for {} rows (need rows + 1, non-decreasing, within {} ids)",
        offsets.len(),
        keep.len(),
        ids.len()
    )))
}

/// The id ranges of the CSR rows (`offsets` into `ids`) where `keep` (one byte per row,
/// 0 = drop) is set, in row order; the arguments are checked first.
pub fn kept_ranges<'a>(
    offsets: &'a [i64],
    ids: &[u32],
    keep: &'a [u8],
) -> Result<impl Iterator<Item = Range<usize>> + Clone + 'a> {
    check_rows(offsets, ids, keep)?;
    Ok(keep
        .iter()
        .enumerate()
        .filter(|&(_, &k)| k != 0)
        .map(|(row, _)| offsets[row] as usize..offsets[row + 1] as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of a CSR list (`offsets`, `ids`) where `keep` (one byte per row, 0 = drop) is
    /// set, as a new CSR list.
    fn select_rows(offsets: &[i64], ids: &[u32], keep: &[u8]) -> Result<(Vec<i64>, Vec<u32>)> {
        let kept = kept_ranges(offsets, ids, keep)?;
        let mut out_offsets = vec![0i64];
        let mut out_ids = Vec::with_capacity(kept.clone().map(|r| r.len()).sum());
        for r in kept {
            out_ids.extend_from_slice(&ids[r]);
            out_offsets.push(out_ids.len() as i64);
        }
        Ok((out_offsets, out_ids))
    }

    #[test]
    fn counts_ids() {
        assert_eq!(count_ids(&[0, 2, 2], 3).unwrap(), vec![1, 0, 2]);
        assert!(count_ids(&[3], 3).is_err());
    }

    #[test]
    fn selects_rows() {
        // Rows: [5, 6], [], [7], [8, 9, 10]; offsets may start past 0 (a slice).
        let ids = [1, 5, 6, 7, 8, 9, 10];
        let offsets = [1, 3, 3, 4, 7];
        let (o, i) = select_rows(&offsets, &ids, &[1, 1, 0, 1]).unwrap();
        assert_eq!((o, i), (vec![0, 2, 2, 5], vec![5, 6, 8, 9, 10]));
        let (o, i) = select_rows(&offsets, &ids, &[0, 0, 0, 0]).unwrap();
        assert_eq!((o, i), (vec![0], vec![]));
        assert!(select_rows(&offsets, &ids, &[1, 1, 1]).is_err());
        assert!(select_rows(&[0, 2, 1], &ids, &[1, 1]).is_err());
        assert!(select_rows(&[0, 8], &ids, &[1]).is_err());
        let counts = count_rows(&offsets, &ids, &[1, 1, 0, 1], 11).unwrap();
        assert_eq!(counts, vec![0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1]);
        assert!(count_rows(&offsets, &ids, &[1, 1, 0, 1], 10).is_err());
        assert!(count_rows(&offsets, &ids, &[1, 1, 0], 11).is_err());
    }

    #[test]
    fn sparse_counts_are_the_nonzero_dense_ones() {
        let dense_to_sparse = |c: Vec<u64>| -> (Vec<u32>, Vec<u64>) {
            c.iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(i, &n)| (i as u32, n))
                .unzip()
        };
        let ids: Vec<u32> = (0..5000u32).map(|i| (i * 7919) % 1300).collect();
        let offsets: Vec<i64> = (0..=50).map(|r| r * 100).collect();
        let keep: Vec<u8> = (0..50).map(|r| (r % 3 == 0) as u8).collect();
        for n in [1300, 70_000, 1300, 100_000] {
            // A larger call in between leaves the scratch bigger (and zero) for the next.
            let got = count_sparse(&ids, n, None, None).unwrap();
            assert_eq!(got, dense_to_sparse(count_ids(&ids, n).unwrap()));
            let got = count_sparse(&ids, n, Some(&offsets), Some(&keep)).unwrap();
            assert_eq!(
                got,
                dense_to_sparse(count_rows(&offsets, &ids, &keep, n).unwrap())
            );
        }
        assert!(count_sparse(&[1, 5], 3, None, None).is_err());
        // The failed call counted nothing.
        assert_eq!(
            count_sparse(&[1, 1], 3, None, None).unwrap(),
            (vec![1], vec![2])
        );
        assert_eq!(count_sparse(&[], 3, None, None).unwrap(), (vec![], vec![]));
        assert!(count_sparse(&ids, 1300, Some(&offsets), None).is_err());
        assert!(count_sparse(&ids, 1300, None, Some(&keep)).is_err());
    }
}
