//! Warehouse throughput: event batches merged into the warehouse (de-duplicated insert and
//! per-minute counts), and a 30-day analytics window answered from the sketch buckets. On
//! SQLite always, and on PostgreSQL when `EDGEFRONT_TEST_PG_URL` names a server
//! (`tests/pg/ensure.sh` prints one).
//! Run: `cargo bench -p edgefront-origin --bench warehouse`

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgefront_origin::store::{Store, StoredEvent};
use edgefront_shared::analytics;
use edgefront_shared::events::{self, EnrichedEvent, Enrichment};
use edgefront_shared::sketch::{CounterSet, Windows};

/// Events per ingest batch: an edge node coalesces its outbox into batches this size (the
/// origin takes up to 10,000).
const BATCH: usize = 5_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Enriched events and their JSON, as an edge delivers them: random message and visitor ids
/// and spread timestamps, so the raw events compress like real traffic, not like copies.
fn enriched(batch: usize, now: time::OffsetDateTime) -> Vec<(EnrichedEvent, String)> {
    let e = Enrichment {
        received_at: now,
        edge_node: "bench".into(),
        country: Some("DE".into()),
        user_agent: None,
        experiments: BTreeMap::new(),
        trace_id: None,
    };
    (0..BATCH)
        .map(|i| {
            let mut v = events::demo_event(batch * BATCH + i);
            v["messageId"] = format!("ajs-next-{}", uuid::Uuid::new_v4()).into();
            v["anonymousId"] = uuid::Uuid::new_v4().to_string().into();
            // Event time advances at the goal's rate, 500,000 events/s: every batch lands in
            // the same recent minutes of the key index, as it would under that load.
            let at = now + time::Duration::microseconds(2 * (batch * BATCH + i) as i64);
            v["timestamp"] = at
                .format(&time::format_description::well_known::Rfc3339)
                .expect("time")
                .into();
            v["context"]["page"]["url"] = format!(
                "https://shop.example/p/{}?utm_source=news",
                (i * 31) % 10_000
            )
            .into();
            let ev = events::enrich(events::parse_track(&v).expect("valid"), &e);
            let body = serde_json::to_string(&ev).expect("json");
            (ev, body)
        })
        .collect()
}

async fn stores(dir: &std::path::Path) -> Vec<(&'static str, Store)> {
    let mut out = Vec::new();
    let sqlite = format!("sqlite:{}", dir.join("bench.db").display());
    out.push(("sqlite", Store::connect(&sqlite, 8).await.expect("sqlite")));
    if let Some(server) = edgefront_origin::testing::postgres_server().expect("test server") {
        let url = edgefront_origin::testing::create_database(&server, "edgefront_bench")
            .await
            .expect("create bench database");
        out.push(("postgres", Store::connect(&url, 8).await.expect("pg")));
    }
    out
}

fn ingest(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tmp");
    let stores = rt.block_on(stores(dir.path()));
    let now = time::OffsetDateTime::now_utc();
    let mut group = c.benchmark_group("warehouse");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    for (name, store) in &stores {
        let mut n = 0;
        group.bench_function(format!("ingest_batch_of_{BATCH}_{name}"), |b| {
            b.iter_batched(
                || {
                    n += 1;
                    (format!("batch-{n}"), enriched(n, now))
                },
                |(id, events)| {
                    let rows: Vec<StoredEvent<'_>> = events
                        .iter()
                        .map(|(ev, body)| StoredEvent::new(ev, body))
                        .collect();
                    rt.block_on(store.ingest_events(&id, "bench", &rows, 0))
                        .expect("ingest")
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// Thirty days of buckets at every granularity, each a counter set of a busy minute.
async fn thirty_days(store: &Store, now_minute: i64) {
    let mut set = CounterSet::new();
    for i in 0..5_000 {
        let ev = events::enrich(
            events::parse_track(&events::demo_event(i)).expect("valid"),
            &Enrichment {
                received_at: time::OffsetDateTime::now_utc(),
                edge_node: "bench".into(),
                country: None,
                user_agent: None,
                experiments: BTreeMap::from([("recs".into(), "control".into())]),
                trace_id: None,
            },
        );
        analytics::record(&mut set, &ev, |_| true);
    }
    // One delta per hour holding its 60 minutes: the rollup writes minute, hour and day buckets.
    for hour in 0..(30 * 24) {
        let mut w = Windows::new(60);
        let start = now_minute - 30 * 1440 + hour * 60;
        for m in 0..60 {
            w.merge_bucket(start + m, &set).expect("merge");
        }
        store
            .ingest_sketches("bench", &format!("delta-{hour}"), &w, 0)
            .await
            .expect("sketch ingest");
    }
}

fn window(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tmp");
    let stores = rt.block_on(stores(dir.path()));
    let now_minute = time::OffsetDateTime::now_utc().unix_timestamp() / 60;
    let mut group = c.benchmark_group("warehouse");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    for (name, store) in &stores {
        rt.block_on(thirty_days(store, now_minute));
        group.bench_function(format!("summary_30d_window_{name}"), |b| {
            b.iter(|| {
                let (mut set, read) = rt
                    .block_on(store.merged_sketches(now_minute - 30 * 1440 + 1, now_minute + 1))
                    .expect("window");
                assert!(read > 30, "read {read} buckets");
                analytics::report(&mut set, 10)
            })
        });
        group.bench_function(format!("event_counts_30d_window_{name}"), |b| {
            b.iter(|| {
                rt.block_on(store.event_counts(now_minute - 30 * 1440 + 1, now_minute + 1))
                    .expect("counts")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ingest, window);
criterion_main!(benches);
