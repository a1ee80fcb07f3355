//! Event ingest at the core, per event: validate (`parse_track_owned`), enrich, and update the
//! sketches (`analytics::record`). The JSON text parse and each stage are measured separately.
//! Run: `cargo bench -p edgefront-shared --bench ingest`

use std::collections::BTreeMap;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgefront_shared::analytics;
use edgefront_shared::events::{self, Enrichment};
use edgefront_shared::sketch::CounterSet;
use serde_json::Value;

fn ingest(c: &mut Criterion) {
    let batch: Vec<Value> = (0..100).map(events::demo_event).collect();
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
        trace_id: None,
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
                        analytics::record(&mut set, &enriched, |_| true);
                    }
                }
                set
            },
            BatchSize::SmallInput,
        )
    });
    // The stages on their own, so the end-to-end number above can be attributed.
    let parsed: Vec<_> = batch
        .iter()
        .map(|v| events::parse_track(v).expect("demo events are valid"))
        .collect();
    let enriched: Vec<_> = parsed
        .iter()
        .map(|ev| events::enrich(ev.clone(), &enrichment))
        .collect();
    group.bench_function("stage_validate_per_event", |b| {
        b.iter(|| {
            for v in &batch {
                std::hint::black_box(events::parse_track(v).expect("valid"));
            }
        })
    });
    group.bench_function("stage_enrich_per_event", |b| {
        b.iter_batched(
            || parsed.clone(),
            |evs| {
                evs.into_iter()
                    .map(|ev| events::enrich(ev, &enrichment))
                    .collect::<Vec<_>>()
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("stage_sketch_updates_per_event", |b| {
        b.iter_batched(
            CounterSet::new,
            |mut set| {
                for ev in &enriched {
                    analytics::record(&mut set, ev, |_| true);
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
