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

criterion_group!(benches, routes);
criterion_main!(benches);
