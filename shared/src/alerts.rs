//! Statistical-baseline alerts: is the last window of a metric unusual against the same window
//! in earlier weeks (same hour of week)?
//!
//! Baseline and spread are robust: the median of the history windows and their median absolute
//! deviation (×1.4826, the normal-consistent scale), so one earlier incident in the history does
//! not move the baseline. Four weekly points estimate spread poorly, so the spread never drops
//! below the sampling noise the current window must have anyway (Poisson for counts, binomial for
//! ratios), plus a floor relative to the baseline (`relative_floor`): four weekly points can
//! happen to agree closely, and ordinary week-to-week drift must not then look like an
//! incident. The score is
//! `(observed − baseline) / spread`; an alert fires when it passes the sensitivity in the
//! metric's bad direction.

use serde::Serialize;

/// Which way of unusual is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Only a drop (conversion).
    Drop,
    /// Only a spike (error rate).
    Spike,
    /// Either way (traffic, order rate).
    Either,
}

/// What came out of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Unusual in the bad direction.
    Firing,
    /// Within the baseline's spread.
    Ok,
    /// Not enough history (or, for a ratio, too few trials now) to judge.
    Learning,
}

/// How alerts are judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sensitivity {
    /// Robust z-score beyond which an alert fires (lower = more sensitive). Default 4: with
    /// the noise floor this is about one false alarm in 30,000 independent windows.
    pub threshold: f64,
    /// History windows needed before judging. Default 3.
    pub min_history: usize,
    /// Fewest trials (the ratio's denominator) in the current window for a ratio to be judged.
    /// Default 30.
    pub min_trials: f64,
    /// Least spread as a share of the baseline. Default 0.05: at the default threshold a
    /// change under 20% never fires, whatever the history.
    pub relative_floor: f64,
}

impl Default for Sensitivity {
    fn default() -> Self {
        Sensitivity {
            threshold: 4.0,
            min_history: 3,
            min_trials: 30.0,
            relative_floor: 0.05,
        }
    }
}

/// One metric's window: a count, or a ratio `num / den` (conversion, error rate).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Count, or the ratio's numerator.
    pub num: f64,
    /// The ratio's denominator; none for a plain count.
    pub den: Option<f64>,
}

impl Sample {
    /// A plain count.
    pub fn count(n: f64) -> Self {
        Sample { num: n, den: None }
    }

    /// A ratio.
    pub fn ratio(num: f64, den: f64) -> Self {
        Sample {
            num,
            den: Some(den),
        }
    }

    /// The value compared: the count, or the ratio (none when its denominator is 0).
    pub fn value(&self) -> Option<f64> {
        match self.den {
            None => Some(self.num),
            Some(d) if d > 0.0 => Some(self.num / d),
            Some(_) => None,
        }
    }
}

/// The verdict on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation {
    /// Firing, ok or learning.
    pub state: State,
    /// The current window's value (count or ratio).
    pub observed: Option<f64>,
    /// The baseline (median of the history windows).
    pub baseline: Option<f64>,
    /// The spread the score divides by.
    pub spread: Option<f64>,
    /// `(observed − baseline) / spread`.
    pub score: Option<f64>,
    /// History windows with a value.
    pub history: usize,
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Judges `current` against `history` (the same window in earlier weeks; windows with no data
/// left out by the caller).
pub fn evaluate(
    current: Sample,
    history: &[Sample],
    direction: Direction,
    sensitivity: &Sensitivity,
) -> Evaluation {
    let values = sorted(history.iter().filter_map(Sample::value).collect());
    let observed = current.value();
    let learning = Evaluation {
        state: State::Learning,
        observed,
        baseline: None,
        spread: None,
        score: None,
        history: values.len(),
    };
    let Some(observed) = observed else {
        return learning;
    };
    if values.len() < sensitivity.min_history.max(1)
        || current.den.is_some_and(|d| d < sensitivity.min_trials)
    {
        return learning;
    }
    // Scores are taken on the variance-stabilized scale (√ for Poisson counts, arcsine-√ for
    // binomial ratios), where sampling noise is near normal with a known scale even for a
    // handful of events: on the raw scale a rare event's skew (4 errors where 0.7 are usual)
    // looks like a 4σ spike.
    let (scale, noise): (fn(f64) -> f64, f64) = match current.den {
        None => (|x| x.max(0.0).sqrt(), 0.5),
        Some(den) => (|r| r.clamp(0.0, 1.0).sqrt().asin(), 0.5 / den.sqrt()),
    };
    let scaled = sorted(values.iter().map(|v| scale(*v)).collect());
    let median_scaled = median(&scaled);
    let mad = 1.4826
        * median(&sorted(
            scaled.iter().map(|v| (v - median_scaled).abs()).collect(),
        ));
    let (baseline, center, history_noise) = match current.den {
        // A count's baseline is the median window (the median commutes with √).
        None => (median(&values), median_scaled, 0.5),
        // A rate is pooled over the history windows that are not outliers: with a few events
        // per window (2% of 70 checkouts) the median window has none, and a rate of 0 would
        // make the first ordinary error an incident. The half event of prior keeps it above 0.
        Some(_) => {
            let (mut num, mut den, mut kept) = (0.5, 1.0, 0.0);
            for w in history {
                if let (Some(v), Some(d)) = (w.value(), w.den) {
                    let own_noise = 0.5 / d.max(1.0).sqrt();
                    if (scale(v) - median_scaled).abs() <= 3.0 * mad.max(own_noise) {
                        num += w.num;
                        den += d;
                        kept += 1.0;
                    }
                }
            }
            let rate = num / den;
            let mean_den = (den - 1.0) / f64::max(kept, 1.0);
            (rate, scale(rate), 0.5 / mean_den.max(1.0).sqrt())
        }
    };
    // The history's spread beyond its own sampling noise: week-to-week drift.
    let drift = (mad * mad - history_noise * history_noise).max(0.0);
    // `relative_floor` of the baseline, carried to the stabilized scale (its derivative).
    let floor = sensitivity.relative_floor
        * match current.den {
            None => baseline.max(0.0).sqrt() / 2.0,
            Some(_) => {
                let r = baseline.clamp(0.0, 0.999_999);
                0.5 * (r / (1.0 - r)).sqrt()
            }
        };
    // The baseline is itself an estimate from a few windows: a median of n has about π/2n of
    // one window's variance, which the current window's distance from it carries too.
    let baseline_variance =
        (drift + history_noise * history_noise) * std::f64::consts::FRAC_PI_2 / values.len() as f64;
    let spread = (drift + noise * noise + baseline_variance + floor * floor).sqrt();
    let score = (scale(observed) - center) / spread;
    let bad = match direction {
        Direction::Drop => -score,
        Direction::Spike => score,
        Direction::Either => score.abs(),
    };
    Evaluation {
        state: if bad > sensitivity.threshold {
            State::Firing
        } else {
            State::Ok
        },
        observed: Some(observed),
        baseline: Some(baseline),
        spread: Some(spread),
        score: Some(score),
        history: values.len(),
    }
}

/// Minutes in a week.
pub const WEEK_MINUTES: i64 = 7 * 24 * 60;

/// The history windows of the window `[to − len, to)`: the same minutes of the week, one to
/// `weeks` weeks earlier, newest first.
pub fn weekly_history(to_minute: i64, len_minutes: i64, weeks: u32) -> Vec<(i64, i64)> {
    (1..=i64::from(weeks))
        .map(|k| {
            let end = to_minute - k * WEEK_MINUTES;
            (end - len_minutes, end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[f64]) -> Vec<Sample> {
        v.iter().copied().map(Sample::count).collect()
    }

    #[test]
    fn a_count_far_above_its_history_fires_and_a_usual_one_does_not() {
        let history = counts(&[1000.0, 1040.0, 980.0, 1010.0]);
        let s = Sensitivity::default();
        let spike = evaluate(Sample::count(2000.0), &history, Direction::Either, &s);
        assert_eq!(spike.state, State::Firing);
        assert_eq!(spike.baseline, Some(1005.0));
        let usual = evaluate(Sample::count(1030.0), &history, Direction::Either, &s);
        assert_eq!(usual.state, State::Ok);
    }

    #[test]
    fn only_the_bad_direction_fires() {
        let history: Vec<Sample> = (0..4).map(|_| Sample::ratio(50.0, 1000.0)).collect();
        let s = Sensitivity::default();
        let drop = Sample::ratio(5.0, 1000.0);
        let rise = Sample::ratio(150.0, 1000.0);
        assert_eq!(
            evaluate(drop, &history, Direction::Drop, &s).state,
            State::Firing
        );
        assert_eq!(
            evaluate(rise, &history, Direction::Drop, &s).state,
            State::Ok
        );
        assert_eq!(
            evaluate(rise, &history, Direction::Spike, &s).state,
            State::Firing
        );
    }

    #[test]
    fn one_incident_in_the_history_does_not_move_the_baseline() {
        let history = counts(&[1000.0, 1020.0, 990.0, 9000.0]);
        let e = evaluate(
            Sample::count(2000.0),
            &history,
            Direction::Either,
            &Sensitivity::default(),
        );
        assert_eq!(e.state, State::Firing);
    }

    #[test]
    fn learns_until_history_and_trials_suffice() {
        let s = Sensitivity::default();
        let two = counts(&[10.0, 12.0]);
        assert_eq!(
            evaluate(Sample::count(500.0), &two, Direction::Either, &s).state,
            State::Learning
        );
        let history: Vec<Sample> = (0..4).map(|_| Sample::ratio(5.0, 100.0)).collect();
        assert_eq!(
            evaluate(Sample::ratio(0.0, 10.0), &history, Direction::Drop, &s).state,
            State::Learning
        );
        assert_eq!(
            evaluate(Sample::ratio(1.0, 0.0), &history, Direction::Drop, &s).state,
            State::Learning
        );
    }

    #[test]
    fn sensitivity_moves_the_line() {
        let history = counts(&[100.0, 100.0, 100.0, 100.0]);
        // √ scale: (√130 − 10) / √(0.5² + 0.5²·π/8 + 0.25²) = 1.402 / 0.663 = 2.11
        let strict = Sensitivity {
            threshold: 2.0,
            ..Sensitivity::default()
        };
        let e = evaluate(Sample::count(130.0), &history, Direction::Spike, &strict);
        assert_eq!(e.state, State::Firing);
        assert_eq!(
            evaluate(
                Sample::count(130.0),
                &history,
                Direction::Spike,
                &Sensitivity::default()
            )
            .state,
            State::Ok
        );
    }
}
