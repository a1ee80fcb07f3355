//! Experiment analysis: per-variant conversion, a two-proportion z-test against the control arm,
//! a sample-ratio-mismatch check, and a "not enough data yet" state.
//!
//! The test is fixed-horizon: the required sample per arm comes from the plan (baseline rate,
//! smallest lift worth detecting, α, power), and no verdict is given before every arm reaches it.
//! A dashboard that refreshes every few seconds would otherwise "peek" its way to false
//! positives. Arm sizes are HyperLogLog estimates, so each count's sketch error (its
//! `error_bound`, one standard error) is added to the test's variance: with exact counts the
//! test is the textbook one, with sketched counts it is slightly conservative, never liberal.

use std::collections::BTreeMap;

use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

use crate::sketch::Estimate;

/// How experiments are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Two-sided false-positive rate per comparison (Bonferroni-split across several
    /// treatment arms). Default 0.05.
    pub alpha: f64,
    /// Chance of detecting a true lift of `min_detectable_lift`. Default 0.8.
    pub power: f64,
    /// Expected control conversion rate, for the sample-size calculation. Default 0.05.
    pub baseline_rate: f64,
    /// Smallest relative lift worth detecting (0.2 = +20%). Default 0.2.
    pub min_detectable_lift: f64,
    /// p-value under which arm sizes are flagged as a sample-ratio mismatch. Default 0.001, the
    /// usual threshold: the check runs on every refresh, so it must rarely fire by chance.
    pub srm_alpha: f64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            alpha: 0.05,
            power: 0.8,
            baseline_rate: 0.05,
            min_detectable_lift: 0.2,
            srm_alpha: 0.001,
        }
    }
}

/// Why a plan is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A probability outside its open interval.
    #[error("`{0}` must be strictly between 0 and 1")]
    OutOfRange(&'static str),
    /// `baseline_rate × (1 + min_detectable_lift)` is not a rate.
    #[error("baseline_rate × (1 + min_detectable_lift) must stay below 1")]
    LiftTooLarge,
}

impl Plan {
    /// Checks every field; a plan that passes gives finite sample sizes.
    pub fn validate(&self) -> Result<(), PlanError> {
        for (name, v) in [
            ("alpha", self.alpha),
            ("power", self.power),
            ("baseline_rate", self.baseline_rate),
            ("srm_alpha", self.srm_alpha),
        ] {
            if !(v > 0.0 && v < 1.0) {
                return Err(PlanError::OutOfRange(name));
            }
        }
        // NaN fails both comparisons, so it is refused too.
        if self.min_detectable_lift.is_nan() || self.min_detectable_lift <= 0.0 {
            return Err(PlanError::OutOfRange("min_detectable_lift"));
        }
        if self.baseline_rate * (1.0 + self.min_detectable_lift) >= 1.0 {
            return Err(PlanError::LiftTooLarge);
        }
        Ok(())
    }

    /// Visitors each arm needs before a verdict, for `comparisons` treatment-vs-control tests
    /// (the standard two-proportion formula with pooled variance under H0).
    pub fn required_per_arm(&self, comparisons: usize) -> u64 {
        let alpha = self.alpha / comparisons.max(1) as f64;
        let p1 = self.baseline_rate;
        let p2 = p1 * (1.0 + self.min_detectable_lift);
        let pbar = (p1 + p2) / 2.0;
        let za = z_quantile(1.0 - alpha / 2.0);
        let zb = z_quantile(self.power);
        let n = (za * (2.0 * pbar * (1.0 - pbar)).sqrt()
            + zb * (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt())
        .powi(2)
            / (p2 - p1).powi(2);
        n.ceil() as u64
    }
}

fn standard_normal() -> Normal {
    Normal::standard()
}

fn z_quantile(p: f64) -> f64 {
    standard_normal().inverse_cdf(p)
}

/// Two-sided p-value of a standard normal statistic.
fn two_sided_p(z: f64) -> f64 {
    2.0 * standard_normal().sf(z.abs())
}

/// One arm's counts: visitors exposed and visitors who converted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ArmCounts {
    /// Visitors exposed.
    pub visitors: Estimate,
    /// Visitors who converted.
    pub converted: Estimate,
}

/// Where an experiment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Some arm has fewer visitors than the plan needs; no verdict yet.
    NotEnoughData,
    /// Arm sizes do not match the assignment split: the assignment or the tracking is broken,
    /// so no comparison can be trusted.
    SampleRatioMismatch,
    /// Some treatment arm differs from control at the plan's α.
    Significant,
    /// No treatment arm differs from control at the plan's α.
    NotSignificant,
    /// Fewer than two arms, or no control arm.
    NotAnExperiment,
}

/// The sample-ratio-mismatch check (Pearson's χ² goodness of fit against an equal split).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SampleRatio {
    /// The χ² statistic.
    pub chi_square: f64,
    /// Its p-value (k − 1 degrees of freedom).
    pub p_value: f64,
    /// `p_value < srm_alpha`.
    pub mismatch: bool,
}

/// One treatment arm against control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The treatment arm.
    pub variant: String,
    /// Its conversion rate.
    pub rate: f64,
    /// Relative lift over control (`rate / control_rate − 1`; none when control has none).
    pub lift: Option<f64>,
    /// Absolute difference of rates with its two-sided (1 − α) confidence interval.
    pub difference: f64,
    /// Lower end of the interval.
    pub difference_low: f64,
    /// Upper end of the interval.
    pub difference_high: f64,
    /// The z statistic.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// `p_value` below the (Bonferroni-split) α, and the plan's sample reached.
    pub significant: bool,
}

/// The analysis of one experiment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// The verdict.
    pub status: Status,
    /// The arm every other is compared with.
    pub control: Option<String>,
    /// Control's conversion rate.
    pub control_rate: Option<f64>,
    /// Visitors each arm needs before a verdict.
    pub required_per_arm: u64,
    /// Visitors in the smallest arm.
    pub smallest_arm: f64,
    /// α per comparison after the Bonferroni split.
    pub alpha_per_comparison: f64,
    /// The sample-ratio check (none with fewer than two arms).
    pub sample_ratio: Option<SampleRatio>,
    /// Each treatment arm against control.
    pub comparisons: Vec<Comparison>,
}

/// The arm named `control`, else the first by name.
fn control_arm(arms: &BTreeMap<String, ArmCounts>) -> Option<&str> {
    if arms.contains_key("control") {
        Some("control")
    } else {
        arms.keys().next().map(String::as_str)
    }
}

/// Pearson's χ² of the visitor counts against an equal split.
fn sample_ratio(arms: &BTreeMap<String, ArmCounts>, plan: &Plan) -> Option<SampleRatio> {
    let k = arms.len();
    if k < 2 {
        return None;
    }
    let total: f64 = arms.values().map(|a| a.visitors.estimate).sum();
    if total <= 0.0 {
        return None;
    }
    let expected = total / k as f64;
    // Sketch error widens each cell's variance beyond the multinomial one; dividing by the sum
    // keeps the check from flagging the sketch's own noise as a mismatch at large counts.
    let chi_square: f64 = arms
        .values()
        .map(|a| {
            (a.visitors.estimate - expected).powi(2) / (expected + a.visitors.error_bound.powi(2))
        })
        .sum();
    let dist = ChiSquared::new((k - 1) as f64).ok()?;
    let p_value = dist.sf(chi_square);
    Some(SampleRatio {
        chi_square,
        p_value,
        mismatch: p_value < plan.srm_alpha,
    })
}

fn rate(arm: &ArmCounts) -> f64 {
    if arm.visitors.estimate > 0.0 {
        (arm.converted.estimate / arm.visitors.estimate).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Variance a rate gains from the sketch errors of its two counts (delta method).
fn sketch_variance(arm: &ArmCounts) -> f64 {
    let n = arm.visitors.estimate;
    if n <= 0.0 {
        return 0.0;
    }
    let p = rate(arm);
    (arm.converted.error_bound / n).powi(2) + (p * arm.visitors.error_bound / n).powi(2)
}

fn compare(
    variant: &str,
    arm: &ArmCounts,
    control: &ArmCounts,
    alpha: f64,
    sample_reached: bool,
) -> Comparison {
    let (n1, n2) = (control.visitors.estimate, arm.visitors.estimate);
    let (p1, p2) = (rate(control), rate(arm));
    let pooled = if n1 + n2 > 0.0 {
        ((p1 * n1 + p2 * n2) / (n1 + n2)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let extra = sketch_variance(control) + sketch_variance(arm);
    let inv = |n: f64| if n > 0.0 { 1.0 / n } else { 0.0 };
    let se_h0 = (pooled * (1.0 - pooled) * (inv(n1) + inv(n2)) + extra).sqrt();
    let se = (p1 * (1.0 - p1) * inv(n1) + p2 * (1.0 - p2) * inv(n2) + extra).sqrt();
    let difference = p2 - p1;
    let (z, p_value) = if se_h0 > 0.0 {
        let z = difference / se_h0;
        (z, two_sided_p(z))
    } else {
        (0.0, 1.0)
    };
    let half = z_quantile(1.0 - alpha / 2.0) * se;
    Comparison {
        variant: variant.to_owned(),
        rate: p2,
        lift: (p1 > 0.0).then(|| p2 / p1 - 1.0),
        difference,
        difference_low: difference - half,
        difference_high: difference + half,
        z,
        p_value,
        significant: sample_reached && p_value < alpha,
    }
}

/// Analyses one experiment's arms under `plan`.
pub fn analyze(arms: &BTreeMap<String, ArmCounts>, plan: &Plan) -> Analysis {
    let comparisons_n = arms.len().saturating_sub(1).max(1);
    let alpha = plan.alpha / comparisons_n as f64;
    let required_per_arm = plan.required_per_arm(comparisons_n);
    let smallest_arm = arms
        .values()
        .map(|a| a.visitors.estimate)
        .fold(f64::INFINITY, f64::min);
    let smallest_arm = if smallest_arm.is_finite() {
        smallest_arm
    } else {
        0.0
    };
    let sample_ratio = sample_ratio(arms, plan);
    let control_name = control_arm(arms);
    let (Some(control_name), true) = (control_name, arms.len() >= 2) else {
        return Analysis {
            status: Status::NotAnExperiment,
            control: control_name.map(str::to_owned),
            control_rate: None,
            required_per_arm,
            smallest_arm,
            alpha_per_comparison: alpha,
            sample_ratio,
            comparisons: Vec::new(),
        };
    };
    let control = &arms[control_name];
    let sample_reached = smallest_arm >= required_per_arm as f64;
    let comparisons: Vec<Comparison> = arms
        .iter()
        .filter(|(name, _)| name.as_str() != control_name)
        .map(|(name, arm)| compare(name, arm, control, alpha, sample_reached))
        .collect();
    let status = if sample_ratio.is_some_and(|s| s.mismatch) {
        Status::SampleRatioMismatch
    } else if !sample_reached {
        Status::NotEnoughData
    } else if comparisons.iter().any(|c| c.significant) {
        Status::Significant
    } else {
        Status::NotSignificant
    };
    Analysis {
        status,
        control: Some(control_name.to_owned()),
        control_rate: Some(rate(control)),
        required_per_arm,
        smallest_arm,
        alpha_per_comparison: alpha,
        sample_ratio,
        comparisons,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn exact(visitors: u64, converted: u64) -> ArmCounts {
        ArmCounts {
            visitors: Estimate::exact(visitors),
            converted: Estimate::exact(converted),
        }
    }

    fn arms(list: &[(&str, ArmCounts)]) -> BTreeMap<String, ArmCounts> {
        list.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn required_sample_matches_the_textbook_value() {
        // 5% → 6% at α = 0.05 two-sided, power 0.8: 8,158 per arm (the standard formula; online
        // calculators that use it give 8,155–8,160).
        let plan = Plan {
            baseline_rate: 0.05,
            min_detectable_lift: 0.2,
            ..Plan::default()
        };
        let n = plan.required_per_arm(1);
        assert!((8_140..=8_170).contains(&n), "{n}");
        // A Bonferroni split over two comparisons needs more.
        assert!(plan.required_per_arm(2) > n);
    }

    #[test]
    fn z_test_matches_a_worked_example() {
        // 200/1000 vs 250/1000: pooled p = 0.225, se = sqrt(.225·.775·.002) = 0.018675,
        // z = 0.05 / 0.018675 = 2.677, two-sided p = 0.00742.
        let plan = Plan {
            baseline_rate: 0.2,
            min_detectable_lift: 0.5,
            ..Plan::default()
        };
        let a = analyze(
            &arms(&[("control", exact(1000, 200)), ("b", exact(1000, 250))]),
            &plan,
        );
        let c = &a.comparisons[0];
        assert!((c.z - 2.677).abs() < 0.01, "{}", c.z);
        assert!((c.p_value - 0.00742).abs() < 0.0005, "{}", c.p_value);
        assert_eq!(a.status, Status::Significant);
        assert!(c.difference_low > 0.0 && c.difference_high > c.difference);
    }

    #[test]
    fn says_not_enough_data_before_the_planned_sample() {
        let a = analyze(
            &arms(&[
                ("control", exact(500, 10)),
                ("personalized", exact(500, 40)),
            ]),
            &Plan::default(),
        );
        assert_eq!(a.status, Status::NotEnoughData);
        assert!(!a.comparisons[0].significant);
        // The p-value is still shown, for the curious.
        assert!(a.comparisons[0].p_value < 0.001);
    }

    #[test]
    fn flags_a_sample_ratio_mismatch() {
        let a = analyze(
            &arms(&[("control", exact(10_000, 500)), ("b", exact(10_600, 530))]),
            &Plan::default(),
        );
        assert_eq!(a.status, Status::SampleRatioMismatch);
        let fine = analyze(
            &arms(&[("control", exact(10_000, 500)), ("b", exact(10_080, 530))]),
            &Plan::default(),
        );
        assert!(!fine.sample_ratio.unwrap().mismatch);
    }

    #[test]
    fn sketch_error_does_not_look_like_a_mismatch_at_large_counts() {
        // Two true-equal arms of a million, estimated 0.8% apart: the sketch's own error.
        let sketched = |n: f64| ArmCounts {
            visitors: Estimate {
                estimate: n,
                error_bound: n * crate::sketch::UNIQUES_RELATIVE_ERROR,
            },
            converted: Estimate {
                estimate: n * 0.05,
                error_bound: n * 0.05 * crate::sketch::UNIQUES_RELATIVE_ERROR,
            },
        };
        let a = analyze(
            &arms(&[
                ("control", sketched(1_000_000.0)),
                ("b", sketched(1_008_000.0)),
            ]),
            &Plan::default(),
        );
        assert!(!a.sample_ratio.unwrap().mismatch);
    }

    #[test]
    fn one_arm_is_not_an_experiment() {
        let a = analyze(&arms(&[("control", exact(100, 1))]), &Plan::default());
        assert_eq!(a.status, Status::NotAnExperiment);
        assert!(a.comparisons.is_empty());
    }

    #[test]
    fn rejects_unusable_plans() {
        for plan in [
            Plan {
                alpha: 0.0,
                ..Plan::default()
            },
            Plan {
                power: 1.0,
                ..Plan::default()
            },
            Plan {
                min_detectable_lift: f64::NAN,
                ..Plan::default()
            },
            Plan {
                baseline_rate: 0.9,
                min_detectable_lift: 0.2,
                ..Plan::default()
            },
        ] {
            assert!(plan.validate().is_err(), "{plan:?}");
        }
        Plan::default().validate().unwrap();
    }
}
