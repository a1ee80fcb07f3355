//! Event ingest at the core, per event: validate (`parse_track_owned`), enrich, and update the
//! sketches (`analytics::record`). The JSON text parse is measured separately.
//! Run: `cargo bench -p edgefront-shared --bench ingest`

use std::collections::BTreeMap;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgefront_shared::analytics;
use edgefront_shared::events::{self, Enrichment};
use edgefront_shared::sketch::CounterSet;
use serde_json::{Value, json};

fn sample_events(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "type": "track", "event": if i % 5 == 0 { "Product Added" } else { "Product Viewed" },
                "anonymousId": format!("visitor-{}", i % 37),
                "messageId": format!("msg-{i}"),
                "timestamp": "2026-11-27T00:00:00.000Z",
                "context": {"userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
                            "page": {"url": "https://shop.example/p?utm_source=news&utm_medium=email"}},
                "properties": {"product_id": format!("p-{:06}", i * 7), "price": 19.99,
                               "quantity": 1, "currency": "EUR", "category": "apparel/hoodies"}
            })
        })
        .collect()
}

fn ingest(c: &mut Criterion) {
    let batch = sample_events(100);
    let text: Vec<Vec<u8>> = batch
        .iter()
        .map(|v| serde_json::to_vec(v).expect("json"))
        .collect();
    let enrichment = Enrichment {
        received_at: time::OffsetDateTime::from_unix_timestamp(1_795_737_600).expect("time"),
        edge_node: "bench".into(),
        country: Some("DE".into()),
        user_agent: None,
        experiments: BTreeMap::from([("recs".to_owned(), "control".to_owned())]),
    };
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("validate_enrich_count_per_event", |b| {
        b.iter_batched(
            || (batch.clone(), CounterSet::new()),
            |(events, mut set)| {
                for v in events {
                    if let Ok(ev) = events::parse_track_owned(v) {
                        let enriched = events::enrich(ev, &enrichment);
                        analytics::record(&mut set, &enriched);
                    }
                }
                set
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("json_text_parse_per_event", |b| {
        b.iter(|| {
            for t in &text {
                std::hint::black_box(serde_json::from_slice::<Value>(t).expect("json"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
