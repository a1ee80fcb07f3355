//! Criterion benchmarks of the sketch counters: the per-event hot paths (`uniques_insert`,
//! `trending_add`), the aggregation path (`uniques_merge_two_dense_p14`, goal ≤ 50 µs) and the
//! flush path (`counterset_encode_decode`).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use edgefront_shared::sketch::{CounterSet, Trending, Uniques};

fn uniques_of(prefix: &str, n: u64) -> Uniques {
    let mut sketch = Uniques::new();
    for i in 0..n {
        sketch.insert(&format!("{prefix}{i}"));
    }
    sketch
}

/// Product keys with Zipf-like frequencies (∝ 1/rank^1.2 over 2000 products), interleaved.
fn zipf_keys(events: usize) -> Vec<String> {
    let weights: Vec<usize> = (1..=2000u32)
        .map(|rank| (200.0 / f64::from(rank).powf(1.2)).ceil() as usize)
        .collect();
    let rounds = weights.iter().copied().max().unwrap_or(1);
    let mut keys = Vec::with_capacity(events);
    while keys.len() < events {
        for round in 0..rounds {
            for (rank, &weight) in weights.iter().enumerate() {
                if weight > round {
                    keys.push(format!("product-{rank:05}"));
                }
            }
        }
    }
    keys.truncate(events);
    keys
}

fn uniques_insert(c: &mut Criterion) {
    let ids: Vec<String> = (0..10_000).map(|i| format!("visitor-{i:08}")).collect();
    let mut sketch = uniques_of("base-", 100_000);
    let mut next = 0;
    c.bench_function("uniques_insert", |b| {
        b.iter(|| {
            sketch.insert(black_box(&ids[next % ids.len()]));
            next += 1;
        })
    });
}

fn uniques_merge_two_dense_p14(c: &mut Criterion) {
    let a = uniques_of("node-a-", 1_000_000);
    let b = uniques_of("node-b-", 1_000_000);
    c.bench_function("uniques_merge_two_dense_p14", |bench| {
        bench.iter_batched(
            || a.clone(),
            |mut merged| {
                merged.merge(black_box(&b)).expect("same precision");
                merged
            },
            BatchSize::SmallInput,
        )
    });
}

fn trending_add(c: &mut Criterion) {
    let keys = zipf_keys(100_000);
    let mut sketch = Trending::new();
    for key in &keys {
        sketch.add(key, 1);
    }
    let mut next = 0;
    c.bench_function("trending_add", |b| {
        b.iter(|| {
            sketch.add(black_box(&keys[next % keys.len()]), 1);
            next += 1;
        })
    });
}

fn counterset_encode_decode(c: &mut Criterion) {
    let mut set = CounterSet::new();
    set.add_count("page_views", 123_456);
    set.add_count("orders", 321);
    for i in 0..100_000 {
        set.add_unique("visitors", &format!("visitor-{i}"));
    }
    for i in 0..500 {
        set.add_unique("buyers", &format!("buyer-{i}"));
    }
    for key in zipf_keys(50_000) {
        set.add_trending("products", &key, 1);
    }
    eprintln!(
        "counterset_encode_decode: one dense + one sparse uniques, one dense trending: {} bytes",
        set.encode().len()
    );
    c.bench_function("counterset_encode_decode", |b| {
        b.iter(|| CounterSet::decode(&black_box(&set).encode()).expect("valid encoding"))
    });
}

criterion_group!(
    benches,
    uniques_insert,
    uniques_merge_two_dense_p14,
    trending_add,
    counterset_encode_decode
);
criterion_main!(benches);
