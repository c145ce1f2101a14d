//! A total order on floats for sorting scores, importances and costs.
//!
//! `a.partial_cmp(b).unwrap_or(Equal)` is not a total order once a NaN appears (NaN "equals"
//! everything, so `1 < 2` but `1 = NaN = 2`), and the standard library's sort may then panic
//! ("user-provided comparison function does not correctly implement a total order"). Damaged
//! or diverged models produce NaN scores, so every float sort in this crate goes through
//! [`fcmp`].

use std::cmp::Ordering;

/// The usual order on non-NaN values (so −0 = +0, exactly as `partial_cmp`), with a NaN placed
/// where `f64::total_cmp` puts it: a positive NaN above +∞, a negative one below −∞. Total and
/// transitive, so no sort can panic on it.
pub fn fcmp(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or_else(|| a.total_cmp(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sorting with NaN present neither panics nor disturbs the order of the finite values.
    #[test]
    fn nan_sorts_to_the_ends_and_finite_order_is_kept() {
        let mut v: Vec<f64> = (0..200)
            .map(|i| match i % 7 {
                0 => f64::NAN,
                1 => -f64::NAN,
                2 => f64::INFINITY,
                3 => -0.0,
                _ => ((i * 37) % 101) as f64 - 50.0,
            })
            .collect();
        v.sort_by(|a, b| fcmp(*a, *b));
        let n_neg_nan = v.iter().take_while(|x| x.is_nan()).count();
        let n_pos_nan = v.iter().rev().take_while(|x| x.is_nan()).count();
        assert_eq!(
            n_neg_nan + n_pos_nan,
            v.iter().filter(|x| x.is_nan()).count()
        );
        assert!(n_neg_nan > 0 && n_pos_nan > 0);
        let finite = &v[n_neg_nan..v.len() - n_pos_nan];
        assert!(finite.windows(2).all(|w| w[0] <= w[1]), "{finite:?}");
        assert_eq!(fcmp(-0.0, 0.0), Ordering::Equal);
    }
}
