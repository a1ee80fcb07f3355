//! The published catalog cut into parts, for hosts that start fresh on every request.
//!
//! Spin instantiates the component per request, so it cannot keep a parsed snapshot in memory
//! and parsing all of it per request costs far more than the request. Each request names what
//! it reads ([`CatalogNeed`]); the host loads only the parts that answer it and builds a small
//! snapshot from them. A part is a [`PublishedCatalog`] of its own — same version, same
//! promotions, the products in the whole catalog's order — so the same rules give the same
//! answers on it as on the whole catalog for that need:
//!
//! - `product/{key}`: every product whose id, slug or SKU is `key` (lookups by id or slug and
//!   cart lines by SKU resolve exactly as on the whole catalog);
//! - `category/{path}`: every product in that category or below it (a category page, its
//!   filters, sorts and cursors);
//! - `meta`: no products, only the version and promotions (read with product parts, so a need
//!   for no product at all, such as a new cart, still knows them);
//! - `whole`: everything.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{Product, PublishedCatalog};

/// What one request reads of the catalog. Hosts that hold the whole snapshot ignore it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogNeed {
    /// Everything: searches, unfiltered lists, recommendations, health.
    Whole,
    /// Products by id, slug or SKU (product pages, cart lines, events about products).
    Products(Vec<String>),
    /// One category path (without leading or trailing `/`) and everything below it.
    Category(String),
}

/// The part holding everything.
pub const WHOLE: &str = "whole";
/// The part holding the version and promotions only.
pub const META: &str = "meta";

impl CatalogNeed {
    /// The parts that answer this need, by part name (see the module docs).
    pub fn part_names(&self) -> Vec<String> {
        match self {
            CatalogNeed::Whole => vec![WHOLE.to_owned()],
            CatalogNeed::Products(keys) => {
                let keys: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
                std::iter::once(META.to_owned())
                    .chain(keys.into_iter().map(product_part))
                    .collect()
            }
            CatalogNeed::Category(path) => vec![category_part(path.trim_matches('/'))],
        }
    }
}

fn product_part(key: &str) -> String {
    format!("product/{key}")
}

fn category_part(path: &str) -> String {
    format!("category/{path}")
}

impl PublishedCatalog {
    /// Every part of this catalog, by part name: `whole`, `meta`, one per product id, slug
    /// and SKU, one per category prefix. Products appear in several parts; that is the price of
    /// reading one small part per request.
    pub fn parts(&self) -> BTreeMap<String, PublishedCatalog> {
        let mut members: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, p) in self.products.iter().enumerate() {
            let keys: BTreeSet<&str> = [p.id.as_str(), p.slug.as_str(), p.sku.as_str()].into();
            for key in keys {
                members.entry(product_part(key)).or_default().push(i);
            }
            for prefix in p.category_prefixes() {
                members.entry(category_part(&prefix)).or_default().push(i);
            }
        }
        let mut parts: BTreeMap<String, PublishedCatalog> = members
            .into_iter()
            .map(|(name, list)| {
                let products = list.iter().map(|&i| self.products[i].clone()).collect();
                (name, self.with_products(products))
            })
            .collect();
        parts.insert(META.to_owned(), self.with_products(Vec::new()));
        parts.insert(WHOLE.to_owned(), self.clone());
        parts
    }

    /// The catalog several parts make together, each product once. Only lookups read a
    /// merge of several parts (a list reads one category part), so their order is free.
    /// `None` without parts.
    pub fn merge(parts: Vec<PublishedCatalog>) -> Option<PublishedCatalog> {
        let mut parts = parts.into_iter();
        let first = parts.next()?;
        let mut seen: BTreeSet<String> = first.products.iter().map(|p| p.id.clone()).collect();
        let mut merged = first;
        for part in parts {
            for p in part.products {
                if seen.insert(p.id.clone()) {
                    merged.products.push(p);
                }
            }
        }
        Some(merged)
    }

    fn with_products(&self, products: Vec<Product>) -> PublishedCatalog {
        PublishedCatalog {
            version: self.version,
            products,
            promotions: self.promotions.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::walk_all;
    use crate::catalog::{CatalogSnapshot, ListQuery, Sort, demo_catalog};
    use crate::money::Currency;

    fn published(n: usize) -> PublishedCatalog {
        let mut products = demo_catalog(n, 9);
        // Inactive products must resolve on a part exactly as on the whole catalog.
        for p in products.iter_mut().step_by(7) {
            p.active = false;
        }
        PublishedCatalog {
            version: 12,
            products,
            promotions: Vec::new(),
        }
    }

    fn load(parts: &BTreeMap<String, PublishedCatalog>, need: &CatalogNeed) -> CatalogSnapshot {
        let found: Vec<PublishedCatalog> = need
            .part_names()
            .iter()
            .filter_map(|name| parts.get(name).cloned())
            .collect();
        PublishedCatalog::merge(found)
            .map(|c| c.into_snapshot().unwrap())
            .unwrap_or_else(|| CatalogSnapshot::build(12, Vec::new()).unwrap())
    }

    #[test]
    fn a_product_part_answers_lookups_by_id_slug_and_sku_like_the_whole_catalog() {
        let catalog = published(300);
        let whole = catalog.clone().into_snapshot().unwrap();
        let parts = catalog.parts();
        for p in &catalog.products {
            for key in [&p.id, &p.slug] {
                let part = load(&parts, &CatalogNeed::Products(vec![key.clone()]));
                assert_eq!(
                    part.get_json(key, Currency::EUR)
                        .map(|(p, v)| (p, v.map(|v| v.get()))),
                    whole
                        .get_json(key, Currency::EUR)
                        .map(|(p, v)| (p, v.map(|v| v.get()))),
                    "{key}"
                );
                assert_eq!(part.revision(p), whole.revision(p));
            }
            let part = load(&parts, &CatalogNeed::Products(vec![p.sku.clone()]));
            assert_eq!(part.by_sku(&p.sku), whole.by_sku(&p.sku));
        }
        let unknown = load(&parts, &CatalogNeed::Products(vec!["no-such".into()]));
        assert!(unknown.get("no-such").is_none());
        assert_eq!(unknown.version(), 12);
    }

    #[test]
    fn several_products_load_together_once_each() {
        let catalog = published(50);
        let parts = catalog.parts();
        let (a, b) = (&catalog.products[1], &catalog.products[2]);
        let need = CatalogNeed::Products(vec![a.sku.clone(), b.id.clone(), a.slug.clone()]);
        let snapshot = load(&parts, &need);
        assert_eq!(snapshot.len(), 2);
        assert_eq!(snapshot.by_sku(&a.sku), Some(a));
        assert_eq!(snapshot.by_sku(&b.sku), Some(b));
    }

    #[test]
    fn a_category_part_lists_every_sort_and_filter_like_the_whole_catalog() {
        let catalog = published(400);
        let whole = catalog.clone().into_snapshot().unwrap();
        let parts = catalog.parts();
        for path in [
            "apparel",
            "apparel/hoodies",
            "outdoor",
            "/outdoor/",
            "no-such",
        ] {
            let part = load(
                &parts,
                &CatalogNeed::Category(path.trim_matches('/').into()),
            );
            for sort in [
                Sort::Popularity,
                Sort::Newest,
                Sort::PriceAsc,
                Sort::PriceDesc,
            ] {
                for (tag, in_stock_only) in [(None, false), (Some("new".to_owned()), true)] {
                    let q = ListQuery {
                        category: Some(path.to_owned()),
                        tag: tag.clone(),
                        sort,
                        in_stock_only,
                        limit: 7,
                        ..ListQuery::default()
                    };
                    let ids = walk_all(&whole, q.clone());
                    assert_eq!(walk_all(&part, q), ids, "{path} {sort:?} {tag:?}");
                    assert!(path == "no-such" || !ids.is_empty() || tag.is_some());
                }
            }
        }
    }

    #[test]
    fn a_need_for_no_product_still_knows_version_and_promotions() {
        let mut catalog = published(10);
        catalog.promotions = crate::cart::demo_promotions();
        let snapshot = load(&catalog.parts(), &CatalogNeed::Products(Vec::new()));
        assert_eq!(snapshot.version(), 12);
        assert_eq!(snapshot.len(), 0);
        assert_eq!(snapshot.promotions(), catalog.promotions.as_slice());
    }

    #[test]
    fn a_path_naming_a_prefix_twice_lists_its_product_once() {
        let mut catalog = published(5);
        // (Product 0 is inactive here.)
        catalog.products[1].category = vec![String::new(), String::new()];
        let whole = catalog.clone().into_snapshot().unwrap();
        let part = load(&catalog.parts(), &CatalogNeed::Category(String::new()));
        let q = ListQuery {
            category: Some("/".into()),
            limit: 10,
            ..ListQuery::default()
        };
        let ids = walk_all(&whole, q.clone());
        assert_eq!(ids, [catalog.products[1].id.clone()]);
        assert_eq!(walk_all(&part, q), ids);
    }

    #[test]
    fn the_whole_part_is_the_catalog() {
        let catalog = published(20);
        assert_eq!(catalog.parts()[WHOLE], catalog);
        assert_eq!(CatalogNeed::Whole.part_names(), vec![WHOLE.to_owned()]);
    }
}
