//! Thresholds and probabilities (spec §5).

use crate::error::{Error, Result};

/// MC1 keep probability per entry: `min(1, t / count)`; an entry with count 0 gets 0.
/// `t` must be a positive number.
pub fn probabilities(counts: &[u64], t: f64) -> Result<Vec<f64>> {
    if !(t.is_finite() && t > 0.0) {
        return Err(Error::invalid(format!(
            "t must be a positive number, got {t}"
        )));
    }
    Ok(counts
        .iter()
        .map(|&c| if c == 0 { 0.0 } else { (t / c as f64).min(1.0) })
        .collect())
}

/// Share of all matches that falls on entries with `count < t` (0 when there are none).
pub fn tail_mass(counts: &[u64], t: f64) -> f64 {
    let total: u128 = counts.iter().map(|&c| c as u128).sum();
    if total == 0 {
        return 0.0;
    }
    let tail: u128 = counts
        .iter()
        .filter(|&&c| (c as f64) < t)
        .map(|&c| c as u128)
        .sum();
    tail as f64 / total as f64
}

/// MC2: the count value whose ascending cumulative share is closest to `tail`
/// (first such position, as `numpy.argmin` picks), never below 1. `tail` must be in [0, 1].
pub fn threshold_for_tail(counts: &[u64], tail: f64) -> Result<u64> {
    if !(0.0..=1.0).contains(&tail) {
        return Err(Error::invalid(format!(
            "tail must be in [0, 1], got {tail}"
        )));
    }
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    let total: u128 = sorted.iter().map(|&c| c as u128).sum();
    if total == 0 {
        return Ok(1);
    }
    let mut best = (f64::INFINITY, 1u64);
    let mut cum: u128 = 0;
    for &c in &sorted {
        cum += c as u128;
        let d = (cum as f64 / total as f64 - tail).abs();
        if d < best.0 {
            best = (d, c);
        }
    }
    Ok(best.1.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mc1_probabilities() {
        assert_eq!(
            probabilities(&[0, 1, 10, 40], 20.0).unwrap(),
            vec![0.0, 1.0, 1.0, 0.5]
        );
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(probabilities(&[1], t).is_err(), "{t}");
        }
    }

    #[test]
    fn tail_and_threshold_by_hand() {
        // English: counts below t=10 are 1+2+3 = 6 of 6+10+20 = 36.
        let en = [1, 2, 3, 10, 20];
        let tail = tail_mass(&en, 10.0);
        assert!((tail - 6.0 / 36.0).abs() < 1e-15);
        // Other: sorted [1,1,2,4,8], total 16, cumulative shares .0625 .125 .25 .5 1.
        // Closest to 1/6 ≈ .1667 is .125 (d=.042) vs .25 (d=.083) → count 1.
        assert_eq!(threshold_for_tail(&[8, 1, 4, 2, 1], tail).unwrap(), 1);
        assert_eq!(threshold_for_tail(&[8, 1, 4, 2, 1], 0.5).unwrap(), 4);
        assert_eq!(threshold_for_tail(&[0, 0], 0.5).unwrap(), 1);
        assert_eq!(threshold_for_tail(&[], 0.5).unwrap(), 1);
        for tail in [-0.1, 1.5, f64::NAN] {
            assert!(threshold_for_tail(&[1], tail).is_err(), "{tail}");
        }
    }
}
