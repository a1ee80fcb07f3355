//! The experiment test's error rates, by simulation: a variant that truly converts better is
//! found significant at the plan's power once the planned sample is reached, and an A/A test is
//! found significant no more often than α.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use edgefront_shared::experiment::{Analysis, ArmCounts, Plan, Status, analyze};
use edgefront_shared::sketch::Estimate;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

fn draw(rng: &mut Pcg64, n: u64, p: f64) -> ArmCounts {
    let converted = (0..n).filter(|_| rng.random_bool(p)).count() as u64;
    ArmCounts {
        visitors: Estimate::exact(n),
        converted: Estimate::exact(converted),
    }
}

fn run(rng: &mut Pcg64, plan: &Plan, n: u64, treatment_rate: f64) -> Analysis {
    let mut arms = BTreeMap::new();
    arms.insert("control".to_owned(), draw(rng, n, plan.baseline_rate));
    arms.insert("personalized".to_owned(), draw(rng, n, treatment_rate));
    analyze(&arms, plan)
}

fn plan() -> Plan {
    Plan {
        baseline_rate: 0.10,
        min_detectable_lift: 0.3,
        ..Plan::default()
    }
}

#[test]
fn a_better_variant_is_found_at_the_planned_power_with_the_planned_sample() {
    let plan = plan();
    let n = plan.required_per_arm(1);
    let mut rng = Pcg64::seed_from_u64(7);
    let runs = 600;
    let truth = plan.baseline_rate * (1.0 + plan.min_detectable_lift);
    let found = (0..runs)
        .filter(|_| run(&mut rng, &plan, n, truth).status == Status::Significant)
        .count();
    let power = found as f64 / runs as f64;
    eprintln!("power {power} over {runs} runs at n = {n} per arm");
    // Planned power 0.8; 600 runs give a standard error of 0.016.
    assert!((0.74..=0.86).contains(&power), "power {power} at n = {n}");

    // With half the sample there is no verdict at all.
    let early = run(&mut rng, &plan, n / 2, truth);
    assert_eq!(early.status, Status::NotEnoughData);
}

#[test]
fn an_a_a_test_is_significant_no_more_often_than_alpha() {
    let plan = plan();
    let n = plan.required_per_arm(1);
    let mut rng = Pcg64::seed_from_u64(11);
    let runs = 1500;
    let mut significant = 0;
    for _ in 0..runs {
        let a = run(&mut rng, &plan, n, plan.baseline_rate);
        assert_ne!(a.status, Status::NotEnoughData);
        if a.status == Status::Significant {
            significant += 1;
        }
    }
    let rate = f64::from(significant) / f64::from(runs);
    eprintln!("A/A false-positive rate {rate} over {runs} runs at n = {n} per arm");
    // Stated rate: α = 0.05; 1500 runs give a standard error of 0.0056.
    assert!((0.03..=0.07).contains(&rate), "false-positive rate {rate}");
}
