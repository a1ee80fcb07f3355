//! Alerts on synthetic traffic: a store with a daily and weekly rhythm, Poisson arrivals and
//! week-to-week drift. A planted incident fires its alert; a normal day with the same noise
//! fires nothing.
#![allow(clippy::unwrap_used)]

use edgefront_shared::alerts::{
    Direction, Sample, Sensitivity, State, WEEK_MINUTES, evaluate, weekly_history,
};
use rand::{Rng, SeedableRng};
use rand_distr::{Binomial, Distribution, Poisson};
use rand_pcg::Pcg64;

/// Slot length of the simulation, minutes.
const SLOT: i64 = 15;
const WEEKS: i64 = 5;
const WINDOW: i64 = 60;

/// One 15-minute slot of traffic.
#[derive(Clone, Copy, Default)]
struct Slot {
    events: f64,
    views: f64,
    orders: f64,
    attempts: f64,
    errors: f64,
}

/// An alert: its name, how a window reads, and which direction is bad.
type Metric = (&'static str, fn(&Slot) -> Sample, Direction);

/// An incident planted in `[from, to)` minutes.
#[derive(Clone, Copy)]
enum Incident {
    None,
    /// Conversion falls to this share of normal.
    Conversion(f64),
    /// Traffic multiplied.
    Traffic(f64),
    /// Checkout error rate.
    Errors(f64),
}

struct Store {
    slots: Vec<Slot>,
}

impl Store {
    fn simulate(seed: u64, incident: Incident, from: i64, to: i64) -> Store {
        let mut rng = Pcg64::seed_from_u64(seed);
        let n = (WEEKS * WEEK_MINUTES / SLOT) as usize;
        let week_level: Vec<f64> = (0..WEEKS).map(|_| rng.random_range(0.95..1.05)).collect();
        let mut slots = Vec::with_capacity(n);
        for i in 0..n {
            let minute = i as i64 * SLOT;
            let hour = (minute % 1440) as f64 / 60.0;
            let weekday = (minute / 1440) % 7;
            // Busy evenings, quiet nights, quieter weekends.
            let daily = 0.6 + 0.5 * (std::f64::consts::TAU * (hour - 14.0) / 24.0).cos();
            let weekly = if weekday >= 5 { 0.8 } else { 1.0 };
            let mut rate = 1000.0 * daily * weekly * week_level[(minute / WEEK_MINUTES) as usize];
            let mut conversion = 0.03;
            let mut error_rate = 0.02;
            if (from..to).contains(&minute) {
                match incident {
                    Incident::None => {}
                    Incident::Conversion(f) => conversion *= f,
                    Incident::Traffic(f) => rate *= f,
                    Incident::Errors(e) => error_rate = e,
                }
            }
            let views = Poisson::new(rate).unwrap().sample(&mut rng);
            let events = views + Poisson::new(rate * 0.6).unwrap().sample(&mut rng);
            let orders = Binomial::new(views as u64, conversion)
                .unwrap()
                .sample(&mut rng) as f64;
            let attempts =
                orders + Binomial::new(views as u64, 0.01).unwrap().sample(&mut rng) as f64;
            let errors = Binomial::new(attempts as u64, error_rate)
                .unwrap()
                .sample(&mut rng) as f64;
            slots.push(Slot {
                events,
                views,
                orders,
                attempts,
                errors,
            });
        }
        Store { slots }
    }

    fn window(&self, from: i64, to: i64) -> Slot {
        let mut sum = Slot::default();
        for s in &self.slots[(from / SLOT) as usize..(to / SLOT) as usize] {
            sum.events += s.events;
            sum.views += s.views;
            sum.orders += s.orders;
            sum.attempts += s.attempts;
            sum.errors += s.errors;
        }
        sum
    }

    /// The four alerts at the end of minute `to`, as the origin evaluates them.
    fn alerts(&self, to: i64) -> Vec<(&'static str, State)> {
        let s = Sensitivity::default();
        let history: Vec<Slot> = weekly_history(to, WINDOW, 4)
            .into_iter()
            .filter(|(from, _)| *from >= 0)
            .map(|(from, end)| self.window(from, end))
            .collect();
        let now = self.window(to - WINDOW, to);
        let pick = |f: fn(&Slot) -> Sample| -> (Sample, Vec<Sample>) {
            (f(&now), history.iter().map(f).collect())
        };
        let metrics: [Metric; 4] = [
            ("traffic", |w| Sample::count(w.events), Direction::Either),
            ("order_rate", |w| Sample::count(w.orders), Direction::Either),
            (
                "conversion",
                |w| Sample::ratio(w.orders, w.views),
                Direction::Drop,
            ),
            (
                "checkout_errors",
                |w| Sample::ratio(w.errors, w.attempts),
                Direction::Spike,
            ),
        ];
        metrics
            .into_iter()
            .map(|(name, f, dir)| {
                let (cur, hist) = pick(f);
                (name, evaluate(cur, &hist, dir, &s).state)
            })
            .collect()
    }
}

/// Monday 00:00 of the last simulated week.
const LAST_WEEK: i64 = (WEEKS - 1) * WEEK_MINUTES;

#[test]
fn a_normal_week_with_the_same_noise_fires_nothing() {
    // Every 15 minutes of the last week, for several seeds: 7 × 96 × 4 metrics per seed.
    let (mut judged, mut all) = (0, 0);
    for seed in 0..5 {
        let store = Store::simulate(seed, Incident::None, 0, 0);
        for to in (LAST_WEEK + WINDOW..=WEEKS * WEEK_MINUTES).step_by(SLOT as usize) {
            for (name, state) in store.alerts(to) {
                assert_ne!(state, State::Firing, "seed {seed}: {name} at minute {to}");
                all += 1;
                judged += usize::from(state == State::Ok);
            }
        }
    }
    // Night hours have too few checkouts to judge a rate; everything else is judged.
    eprintln!("{judged} of {all} evaluations judged, none fired");
    assert!(judged * 10 > all * 8, "{judged} of {all} judged");
}

#[test]
fn planted_incidents_fire_their_alert_and_only_theirs() {
    // Wednesday 15:00–17:00 of the last week.
    let from = LAST_WEEK + 2 * 1440 + 15 * 60;
    let to = from + 120;
    for (incident, expected) in [
        (Incident::Conversion(0.4), "conversion"),
        (Incident::Traffic(2.5), "traffic"),
        (Incident::Errors(0.15), "checkout_errors"),
    ] {
        for seed in 0..3 {
            let store = Store::simulate(100 + seed, incident, from, to);
            let during = store.alerts(to);
            for (name, state) in &during {
                if *name == expected {
                    assert_eq!(*state, State::Firing, "{expected} must fire (seed {seed})");
                }
            }
            // Outside the incident (its window fully past) nothing fires.
            for (name, state) in store.alerts(to + 6 * 60) {
                assert_ne!(state, State::Firing, "{name} after {expected}");
            }
            for (name, state) in store.alerts(from - 15) {
                assert_ne!(state, State::Firing, "{name} before {expected}");
            }
        }
    }
    // Traffic 2.5× also lifts the order count: the order-rate alert may fire with it, and
    // should — orders really are unusual then.
}
