//! The TwoNN estimators on a set of nearest-neighbour distance ratios.
//!
//! For each point $p$ of a set of $N$ points, $\mu_p = r_2(p) / r_1(p)$, the ratio of its second to
//! its first nearest-neighbour distance inside the set. Sorted ascending, the first
//! $n = \lfloor N (1 - f) \rfloor$ are kept ($f$ = discard fraction). With
//! $x_i = \ln \mu_{(i)}$ and $y_i = -\ln(1 - i / N)$ for $i = 0, \dots, n - 1$:
//!
//! - least squares through the origin (scikit-dimension's `TwoNN`):
//!   $\hat d = \sum_i x_i y_i \,/\, \sum_i x_i^2$;
//! - maximum likelihood with the discarded ratios treated as censored at $\mu_{(n-1)}$:
//!   $\hat d = (n - 1) \,/\, \big(\sum_{i<n} x_i + (N - n)\, x_{n-1}\big)$.
//!
//! A point with $r_1 = 0$ (a duplicate) has $\mu = \infty$ and sorts last, as in numpy.

use crate::error::{KernelError, Result};

/// Which local estimator turns a neighbourhood into a dimension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Estimator {
    /// TwoNN, least squares through the origin (the paper's and the reference implementation's).
    #[default]
    TwoNN,
    /// TwoNN maximum likelihood with censoring beyond the kept fraction.
    TwoNNMle,
}

impl Estimator {
    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Estimator::TwoNN => "twonn",
            Estimator::TwoNNMle => "twonn-mle",
        }
    }
}

impl std::str::FromStr for Estimator {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "twonn" => Ok(Estimator::TwoNN),
            "twonn-mle" => Ok(Estimator::TwoNNMle),
            other => Err(KernelError::Parameter(format!("unknown estimator {other:?} (expected twonn or twonn-mle)"))),
        }
    }
}

/// Number of ratios kept out of `total` for a discard fraction: `floor(total * (1 - f))`, computed
/// in float64 exactly as numpy's `int(N * (1 - f))`.
pub fn kept_ratios(total: usize, discard_fraction: f64) -> usize {
    (total as f64 * (1.0 - discard_fraction)).floor() as usize
}

/// Checks a (set size, discard fraction) pair before any work is done.
///
/// # Errors
/// [`KernelError::Parameter`] when the fraction is outside `[0, 1)` or fewer than two ratios would
/// be kept (the fit would divide by zero).
pub fn check_discard(total: usize, discard_fraction: f64) -> Result<()> {
    if !(0.0..1.0).contains(&discard_fraction) {
        return Err(KernelError::Parameter(format!("discard fraction {discard_fraction} is outside [0, 1)")));
    }
    let n = kept_ratios(total, discard_fraction);
    if n < 2 {
        return Err(KernelError::Parameter(format!(
            "discard fraction {discard_fraction} keeps {n} of {total} ratios; at least 2 are needed"
        )));
    }
    Ok(())
}

/// Fits `estimator` to the ratios `mu` (reordered in place).
///
/// `mu.len()` is the set size `N`. Callers validate `(N, discard_fraction)` with
/// [`check_discard`]; with fewer than two kept ratios the result is NaN.
pub fn fit_ratios(mu: &mut [f64], discard_fraction: f64, estimator: Estimator) -> f64 {
    let total = mu.len();
    let n = kept_ratios(total, discard_fraction).min(total);
    if n < 2 {
        return f64::NAN;
    }
    mu.sort_unstable_by(f64::total_cmp);
    match estimator {
        Estimator::TwoNN => {
            let (mut sxy, mut sxx) = (0.0f64, 0.0f64);
            for (i, m) in mu[..n].iter().enumerate() {
                let x = m.ln();
                let y = -(1.0 - i as f64 / total as f64).ln();
                sxy += x * y;
                sxx += x * x;
            }
            sxy / sxx
        }
        Estimator::TwoNNMle => {
            let sum: f64 = mu[..n].iter().map(|m| m.ln()).sum();
            (n as f64 - 1.0) / (sum + (total - n) as f64 * mu[n - 1].ln())
        }
    }
}

/// TwoNN of a set from each point's first and second nearest-neighbour distances inside it.
///
/// # Panics
/// When `r1` and `r2` differ in length.
#[track_caller]
pub fn twonn_from_distances(r1: &[f64], r2: &[f64], discard_fraction: f64, estimator: Estimator) -> f64 {
    assert_eq!(r1.len(), r2.len(), "r1 and r2 must pair up");
    let mut mu: Vec<f64> = r1.iter().zip(r2).map(|(a, b)| b / a).collect();
    fit_ratios(&mut mu, discard_fraction, estimator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_matches_numpy_int() {
        assert_eq!(kept_ratios(128, 0.1), 115);
        assert_eq!(kept_ratios(16, 0.1), 14);
        assert_eq!(kept_ratios(64, 0.1), 57);
        assert_eq!(kept_ratios(10, 0.0), 10);
    }

    #[test]
    fn exact_pareto_quantiles_give_the_dimension() {
        // mu = (1 - F)^(-1/d) at F = i/N puts every point on the fitted line: slope d exactly.
        let d = 7.0;
        let total = 200;
        let mut mu: Vec<f64> = (0..total).map(|i| (1.0 - i as f64 / total as f64).powf(-1.0 / d)).collect();
        mu.reverse();
        let est = fit_ratios(&mut mu, 0.1, Estimator::TwoNN);
        assert!((est - d).abs() < 1e-9, "{est}");
    }

    #[test]
    fn mle_formula() {
        let mut mu = vec![1.5, 1.1, 1.2, 2.0, 1.3];
        // N = 5, f = 0.2: n = 4 kept (1.1, 1.2, 1.3, 1.5), one censored at ln 1.5.
        let want = 3.0 / (1.1f64.ln() + 1.2f64.ln() + 1.3f64.ln() + 1.5f64.ln() + 1.5f64.ln());
        assert!((fit_ratios(&mut mu, 0.2, Estimator::TwoNNMle) - want).abs() < 1e-12);
    }

    #[test]
    fn discard_is_validated() {
        assert!(check_discard(128, 0.1).is_ok());
        assert!(check_discard(3, 0.5).is_err());
        assert!(check_discard(128, 1.0).is_err());
        assert!(check_discard(128, -0.1).is_err());
    }
}
