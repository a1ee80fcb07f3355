//! Catalog import: an admin uploads a Shopify product CSV export or a JSON product list, often
//! hand-edited in a spreadsheet. Any bytes must give an `Import` (never a panic), and what it
//! accepts must be publishable as it stands — the module promises the products always build a
//! `CatalogSnapshot` together — with stock only for accepted SKUs, once each.
//!
//! The first byte picks the format (even: Shopify CSV, odd: JSON) and the CSV currency; the
//! rest is the document.
#![no_main]

use std::collections::HashSet;

use edgefront_shared::catalog::CatalogSnapshot;
use edgefront_shared::import::{self, ImportOptions};
use edgefront_shared::money::Currency;
use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;

/// A small row limit, so the "too many rows" refusal is reachable too.
const OPTIONS: ImportOptions = ImportOptions {
    max_rows: 64,
    created_at: 1_700_000_000,
};
/// Two and zero minor units: prices finer than the currency must be refused, not rounded.
const CURRENCIES: [&str; 4] = ["EUR", "JPY", "USD", "KWD"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, document)) = data.split_first() else {
        return;
    };
    let mut calls = Vec::new();
    let mut progress = |done: usize| calls.push(done);
    let import = if selector % 2 == 0 {
        let code = CURRENCIES[usize::from(selector / 2) % CURRENCIES.len()];
        let currency = Currency::parse(code).expect("known currency");
        import::shopify_csv(document, currency, &OPTIONS, &mut progress)
    } else {
        import::json(document, &OPTIONS, &mut progress)
    };

    // Progress counts rows one by one, never past the limit.
    assert!(
        calls.iter().copied().eq(1..=calls.len()),
        "progress {calls:?}"
    );
    assert!(calls.len() <= OPTIONS.max_rows);

    let skus: HashSet<&str> = import.products.iter().map(|p| p.sku.as_str()).collect();
    let mut stocked = HashSet::new();
    for (sku, _) in &import.stock {
        assert!(
            skus.contains(sku.as_str()),
            "stock for unaccepted SKU {sku:?}"
        );
        assert!(stocked.insert(sku.as_str()), "stock for {sku:?} twice");
    }
    for product in &import.products {
        assert!(
            product.prices.iter().all(|p| p.amount() >= Decimal::ZERO),
            "negative price accepted: {product:?}"
        );
    }
    if let Err(e) = CatalogSnapshot::build(1, import.products.clone()) {
        panic!(
            "accepted products do not build a catalog: {e}\n{:?}",
            import.products
        );
    }
});
