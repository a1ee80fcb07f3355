//! Route benchmarks over in-memory ports: the whole handler, request in, response out.
//! Run: `cargo bench -p edgefront-functions --bench routes`

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgefront_functions::testing::{run_ready, test_app};
use http::Request;
use serde_json::json;

fn get(path: &str) -> Request<Bytes> {
    Request::get(path).body(Bytes::new()).expect("request")
}

fn routes(c: &mut Criterion) {
    let app = test_app(10_000);
    let snapshot = run_ready(edgefront_functions::ports::CatalogSource::snapshot(
        &app.ports,
    ))
    .expect("snapshot");
    let product = snapshot
        .products()
        .iter()
        .find(|p| p.active)
        .expect("a product");
    let slug_path = format!("/v1/products/{}", product.slug);
    let recs_path = format!("/v1/recommendations?context=product:{}", product.id);

    c.bench_function("product_get_by_slug", |b| {
        b.iter(|| run_ready(app.handle(get(&slug_path))))
    });
    c.bench_function("list_24_filtered_by_category_10k", |b| {
        b.iter(|| run_ready(app.handle(get("/v1/products?category=apparel/hoodies&limit=24"))))
    });
    c.bench_function("list_24_unfiltered_10k", |b| {
        b.iter(|| run_ready(app.handle(get("/v1/products?limit=24"))))
    });
    c.bench_function("recommendations_product_context", |b| {
        b.iter(|| run_ready(app.handle(get(&recs_path))))
    });

    // Events: a batch of 100 realistic events per request; throughput is per event.
    let batch: Vec<serde_json::Value> =
        (0..100).map(edgefront_shared::events::demo_event).collect();
    let body = Bytes::from(serde_json::to_vec(&json!({ "batch": batch })).expect("json"));
    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(100));
    group.bench_function("ingest_batch_of_100_via_route", |b| {
        b.iter_batched(
            || {
                // Keep the outbox from growing across iterations.
                app.ports.kv.clear();
                Request::post("/v1/events")
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .expect("request")
            },
            |req| run_ready(app.handle(req)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A host that starts fresh per request (Spin) reads the catalog in parts from its key-value
/// store on every request: the version key, the part, a JSON parse and a small snapshot, then
/// the route. This is that whole path, over an in-memory store.
fn routes_from_parts(c: &mut Criterion) {
    use edgefront_functions::memory::{MemoryCounters, MemoryKv};
    use edgefront_functions::parts::{self, PartsCatalog};
    use edgefront_functions::ports::{KeyValue, Ports};
    use edgefront_functions::testing::{ManualEnv, RecordingOrigin, TEST_NOW_MS, test_keys};
    use edgefront_functions::{App, Config};
    use edgefront_shared::catalog::{PublishedCatalog, demo_catalog};

    let catalog = PublishedCatalog {
        version: 1,
        products: demo_catalog(10_000, 42),
        promotions: edgefront_shared::cart::demo_promotions(),
    };
    let kv = MemoryKv::new();
    for (key, value) in parts::entries(&catalog).expect("entries") {
        run_ready(kv.put(&key, value)).expect("put");
    }
    let slug_path = format!("/v1/products/{}", catalog.products[0].slug);
    let config = Config::default();
    let app = App::new(
        Ports {
            catalog: PartsCatalog::new(kv),
            kv: MemoryKv::new(),
            counters: MemoryCounters::new(config.counter_retention_minutes),
            origin: RecordingOrigin::default(),
            env: ManualEnv::new(TEST_NOW_MS),
            limiter: edgefront_functions::memory::NoRateLimit,
        },
        test_keys(),
        config,
    );
    c.bench_function("parts_product_get_by_slug", |b| {
        b.iter(|| run_ready(app.handle(get(&slug_path))))
    });
    c.bench_function("parts_list_24_filtered_by_category_10k", |b| {
        b.iter(|| run_ready(app.handle(get("/v1/products?category=apparel/hoodies&limit=24"))))
    });
}

criterion_group!(benches, routes, routes_from_parts);
criterion_main!(benches);
