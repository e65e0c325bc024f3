//! The paired comparison of two runs on the same tokens (base against fine-tuned, checkpoint a
//! against b): per-token differences `x - y` summarised in one pass, mergeable across batches and
//! machines, and the standard paired t-test on them.
//!
//! The paper's code reports `mean(x - y) / std(x - y)` with the population standard deviation and
//! takes a p-value from that number as if it were a t statistic; that is Cohen's `d_z` (up to
//! `sqrt((n - 1) / n)`), an effect size that does not grow with `n`. The t statistic is
//! `d_z * sqrt(n)` with the sample deviation: [`PairedTest::paper_score`] keeps the paper's number
//! beside the standard ones.

/// Running moments of the differences (Welford's update, Chan's merge: no cancellation when the
/// mean difference is large against its spread).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PairedMoments {
    /// Pairs seen.
    pub n: u64,
    /// Mean difference.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl PairedMoments {
    /// Adds one pair; pairs where either value is not finite are skipped (an undefined LID says
    /// nothing about the difference).
    pub fn push(&mut self, x: f64, y: f64) {
        if !(x.is_finite() && y.is_finite()) {
            return;
        }
        let d = x - y;
        self.n += 1;
        let delta = d - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (d - self.mean);
    }

    /// The moments of both sets of pairs together.
    pub fn merge(&self, other: &PairedMoments) -> PairedMoments {
        if self.n == 0 {
            return *other;
        }
        if other.n == 0 {
            return *self;
        }
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        let mean = self.mean + delta * other.n as f64 / n as f64;
        let m2 = self.m2 + other.m2 + delta * delta * self.n as f64 * other.n as f64 / n as f64;
        PairedMoments { n, mean, m2 }
    }

    /// The paired t-test on the differences.
    pub fn test(&self) -> PairedTest {
        let n = self.n as f64;
        let std = if self.n > 1 { (self.m2 / (n - 1.0)).sqrt() } else { f64::NAN };
        let d_z = self.mean / std;
        let t = d_z * n.sqrt();
        let p = if self.n > 1 && t.is_finite() { students_t_two_sided(t, n - 1.0) } else { f64::NAN };
        let paper_score = self.mean / (self.m2 / n).sqrt();
        PairedTest { n: self.n, mean_diff: if self.n > 0 { self.mean } else { f64::NAN }, std_diff: std, d_z, t, p, paper_score }
    }
}

/// The paired comparison's figures. NaN where undefined (fewer than 2 pairs, no spread).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairedTest {
    /// Pairs with both values finite.
    pub n: u64,
    /// Mean of `x - y`.
    pub mean_diff: f64,
    /// Sample standard deviation of `x - y` (n - 1).
    pub std_diff: f64,
    /// Cohen's d_z: `mean_diff / std_diff`.
    pub d_z: f64,
    /// The paired t statistic, `d_z * sqrt(n)`, with `n - 1` degrees of freedom.
    pub t: f64,
    /// Its two-sided p-value.
    pub p: f64,
    /// The paper's number: `mean(x - y) / std(x - y)` with the population deviation.
    pub paper_score: f64,
}

/// `P(|T| >= |t|)` for Student's t with `df` degrees of freedom: `I_{df/(df+t^2)}(df/2, 1/2)`.
pub fn students_t_two_sided(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    regularized_beta(df / (df + t * t), df / 2.0, 0.5)
}

/// The regularised incomplete beta function `I_x(a, b)`, by Lentz's continued fraction (as in
/// Numerical Recipes' `betai`), accurate to about 1e-14 relative.
fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms: about 1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(π x).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed forms: df = 1 is Cauchy (p = 1 - 2 atan(t) / π), df = 2 has
    /// p = 1 - t / sqrt(2 + t²); large df tends to the normal.
    #[test]
    fn p_values_match_closed_forms() {
        for t in [0.0, 0.5, 1.0, 3.0, 12.0] {
            let cauchy = 1.0 - 2.0 * f64::atan(t) / std::f64::consts::PI;
            assert!((students_t_two_sided(t, 1.0) - cauchy).abs() < 1e-13, "t = {t}, df = 1");
            let two = 1.0 - t / (2.0 + t * t).sqrt();
            assert!((students_t_two_sided(t, 2.0) - two).abs() < 1e-13, "t = {t}, df = 2");
            assert_eq!(students_t_two_sided(-t, 2.0), students_t_two_sided(t, 2.0));
        }
        // The normal's 1.959963985 gives 0.05.
        assert!((students_t_two_sided(1.959_963_984_540_054, 1e9) - 0.05).abs() < 1e-7);
        assert_eq!(students_t_two_sided(f64::INFINITY, 5.0), 0.0);
        // ln Γ at integers and at 1/2.
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
    }

    #[test]
    fn moments_merge_as_one_pass_and_give_the_textbook_test() {
        let x: Vec<f64> = (0..1000).map(|i| 10.0 + ((i * 37) % 101) as f64 / 50.0).collect();
        let y: Vec<f64> = (0..1000).map(|i| 9.9 + ((i * 53) % 97) as f64 / 60.0).collect();
        let mut all = PairedMoments::default();
        let (mut a, mut b) = (PairedMoments::default(), PairedMoments::default());
        for i in 0..1000 {
            all.push(x[i], y[i]);
            if i < 300 { a.push(x[i], y[i]) } else { b.push(x[i], y[i]) }
        }
        all.push(f64::NAN, 1.0);
        let merged = a.merge(&b);
        assert_eq!(merged.n, 1000);
        assert!((merged.mean - all.mean).abs() < 1e-12 && (merged.m2 - all.m2).abs() < 1e-9 * all.m2);
        // Two-pass textbook figures.
        let d: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
        let mean = d.iter().sum::<f64>() / 1000.0;
        let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 999.0;
        let t = all.test();
        assert_eq!(t.n, 1000);
        assert!((t.mean_diff - mean).abs() < 1e-12);
        assert!((t.std_diff - var.sqrt()).abs() < 1e-12);
        assert!((t.t - mean / var.sqrt() * 1000f64.sqrt()).abs() < 1e-9);
        assert!((t.paper_score - mean / (var * 999.0 / 1000.0).sqrt()).abs() < 1e-12);
        assert!(t.p > 0.0 && t.p < 1.0);
        assert!(PairedMoments::default().test().p.is_nan());
    }
}
