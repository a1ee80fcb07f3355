use edgefront_shared::catalog::*;
use edgefront_shared::money::Currency;
fn main() {
    let s = CatalogSnapshot::build(1, demo_catalog(10_000, 42)).unwrap();
    let q = ListQuery {
        category: Some("apparel/hoodies".into()),
        limit: 24,
        ..Default::default()
    };
    let n = s.in_category("apparel/hoodies").count();
    s.list(&q, Currency::EUR).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(s.list(&q, Currency::EUR).unwrap());
    }
    println!("{n} in category; list: {:?}/iter", t.elapsed() / 1000);
}
