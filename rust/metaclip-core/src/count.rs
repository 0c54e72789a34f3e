//! Per-entry counts (spec §4): a text counts once per entry it matched.

use crate::error::{Error, Result};

/// Count how often each id occurs in `ids` (CSR ids: already unique per text).
pub fn count_ids(ids: &[u32], n_entries: usize) -> Result<Vec<u64>> {
    let mut counts = vec![0u64; n_entries];
    for &id in ids {
        match counts.get_mut(id as usize) {
            Some(c) => *c += 1,
            None => {
                return Err(Error::invalid(format!(
                    "entry id {id} out of range for {n_entries} entries"
                )))
            }
        }
    }
    Ok(counts)
}

/// Add `other` into `acc` (exact, order-independent).
pub fn merge_into(acc: &mut [u64], other: &[u64]) -> Result<()> {
    if acc.len() != other.len() {
        return Err(Error::invalid(format!(
            "cannot merge counts of {} and {} entries",
            acc.len(),
            other.len()
        )));
    }
    for (a, b) in acc.iter_mut().zip(other) {
        *a = a
            .checked_add(*b)
            .ok_or_else(|| Error::invalid("count overflow"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_merges() {
        let mut a = count_ids(&[0, 2, 2], 3).unwrap();
        assert_eq!(a, vec![1, 0, 2]);
        merge_into(&mut a, &[1, 1, 1]).unwrap();
        assert_eq!(a, vec![2, 1, 3]);
        assert!(count_ids(&[3], 3).is_err());
    }
}
