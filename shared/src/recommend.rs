//! Recommendations: rank products from the shopper's affinity, what is trending, and the page's
//! context, and assign a deterministic A/B variant per visitor.
//!
//! Scores are integers (points) so that every node, native or wasm, ranks identically. The
//! candidate set is small and bounded — trending items, the most popular items, and the most
//! popular items of a few relevant categories — so ranking stays in the tens of microseconds
//! even over large catalogs.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;

use serde::Serialize;

use crate::catalog::{CatalogSnapshot, Product};
use crate::money::Currency;

/// Most recommendations in one answer.
pub const MAX_RECOMMENDATIONS: usize = 24;
/// Candidates taken from the global popularity order.
const POPULAR_CANDIDATES: usize = 48;
/// Candidates taken per relevant category.
const CATEGORY_CANDIDATES: usize = 32;
/// Affinity categories considered (the strongest first).
const AFFINITY_CATEGORIES: usize = 4;

/// Where the recommendations are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    /// The home page.
    Home,
    /// A product page.
    Product(String),
    /// The cart page.
    Cart,
}

impl Context {
    /// Parses `home`, `cart` or `product:{id-or-slug}`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "home" => Some(Context::Home),
            "cart" => Some(Context::Cart),
            other => other
                .strip_prefix("product:")
                .filter(|id| !id.is_empty() && id.len() <= 128)
                .map(|id| Context::Product(id.to_owned())),
        }
    }
}

/// The experiment arm a visitor sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Popularity and trending only.
    Control,
    /// Also the visitor's affinity profile (with consent).
    Personalized,
}

impl Variant {
    /// The name recorded in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Control => "control",
            Variant::Personalized => "personalized",
        }
    }
}

/// Assigns a visitor to an arm of `experiment`, 50/50, the same on every node and every call.
pub fn assign_variant(experiment: &str, visitor_id: &str) -> Variant {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0x7265_6373, 0x6578_7031);
    h.write(experiment.as_bytes());
    h.write_u8(0xff);
    h.write(visitor_id.as_bytes());
    if h.finish() % 100 < 50 {
        Variant::Control
    } else {
        Variant::Personalized
    }
}

/// Why an item was recommended (its strongest signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Matches the visitor's interests.
    ForYou,
    /// Related to the product or cart on screen.
    Similar,
    /// Viewed a lot right now.
    Trending,
    /// Popular overall.
    Popular,
}

/// Inputs to a ranking.
#[derive(Debug)]
pub struct Request<'a> {
    /// Where it is shown.
    pub context: &'a Context,
    /// The visitor's affinity, only when they consented to personalization.
    pub affinity: Option<&'a BTreeMap<String, u32>>,
    /// Trending product ids with their view counts, most viewed first.
    pub trending: &'a [(String, u64)],
    /// SKUs already in the cart (never recommended).
    pub in_cart: &'a [String],
    /// The visitor's arm.
    pub variant: Variant,
    /// How many to return.
    pub limit: usize,
    /// Only products sold in this currency are recommended.
    pub currency: Currency,
}

/// One recommended product.
#[derive(Debug, Clone)]
pub struct Recommendation<'a> {
    /// The product.
    pub product: &'a Product,
    /// Its score in points.
    pub score: u64,
    /// Its strongest signal.
    pub reason: Reason,
}

#[derive(Default, Clone, Copy)]
struct Points {
    for_you: u64,
    similar: u64,
    trending: u64,
    popular: u64,
}

impl Points {
    fn total(&self) -> u64 {
        self.for_you + self.similar + self.trending + self.popular
    }

    fn reason(&self) -> Reason {
        let mut best = (self.popular, Reason::Popular);
        for (points, reason) in [
            (self.trending, Reason::Trending),
            (self.similar, Reason::Similar),
            (self.for_you, Reason::ForYou),
        ] {
            if points > best.0 {
                best = (points, reason);
            }
        }
        best.1
    }
}

/// `points × value / max` without overflow (values come from the origin and from sketches).
fn scale(points: u64, value: u64, max: u64) -> u64 {
    let scaled = u128::from(points) * u128::from(value) / u128::from(max.max(1));
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Ranks products for the request. Out-of-stock products, products in the cart and the product
/// on screen are never returned; ties break on product id so the order is deterministic.
pub fn recommend<'a>(catalog: &'a CatalogSnapshot, req: &Request<'_>) -> Vec<Recommendation<'a>> {
    let limit = req.limit.clamp(1, MAX_RECOMMENDATIONS);
    let mut scores: HashMap<&'a str, (&'a Product, Points)> = HashMap::with_capacity(256);
    let mut add = |p: &'a Product, f: &dyn Fn(&mut Points)| {
        let entry = scores
            .entry(p.id.as_str())
            .or_insert((p, Points::default()));
        f(&mut entry.1);
    };

    let max_popularity = catalog.popular().next().map_or(1, |p| p.popularity.max(1));
    for p in catalog.popular().take(POPULAR_CANDIDATES) {
        let pts = scale(300, p.popularity, max_popularity);
        add(p, &|s| s.popular = pts);
    }

    let max_trending = req.trending.first().map_or(1, |(_, c)| (*c).max(1));
    for (id, count) in req.trending {
        if let Some(p) = catalog.get(id) {
            let pts = scale(1000, *count, max_trending);
            add(p, &|s| s.trending = pts);
        }
    }

    // Categories related to what is on screen.
    let mut related: Vec<String> = Vec::new();
    let mut on_screen: Option<&str> = None;
    match req.context {
        Context::Home => {}
        Context::Product(id) => {
            if let Some(p) = catalog.get(id) {
                on_screen = Some(p.id.as_str());
                related.push(p.category_path());
            }
        }
        Context::Cart => {
            for sku in req.in_cart {
                if let Some(p) = catalog.by_sku(sku) {
                    let path = p.category_path();
                    if !related.contains(&path) {
                        related.push(path);
                    }
                }
            }
        }
    }
    for path in related.iter().take(AFFINITY_CATEGORIES) {
        for p in catalog.popular_in_category(path, CATEGORY_CANDIDATES) {
            add(p, &|s| s.similar = 600);
        }
    }

    if let (Variant::Personalized, Some(affinity)) = (req.variant, req.affinity) {
        let mut strongest: Vec<(&String, &u32)> = affinity.iter().collect();
        strongest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let max_weight = strongest.first().map_or(1, |(_, w)| u64::from(**w).max(1));
        for (path, weight) in strongest.into_iter().take(AFFINITY_CATEGORIES) {
            let pts = scale(800, u64::from(*weight), max_weight);
            for p in catalog.popular_in_category(path, CATEGORY_CANDIDATES) {
                add(p, &|s| s.for_you = s.for_you.max(pts));
            }
        }
    }

    let mut ranked: Vec<Recommendation<'a>> = scores
        .into_values()
        .filter(|(p, _)| {
            p.in_stock()
                && p.price(req.currency).is_some()
                && Some(p.id.as_str()) != on_screen
                && !req.in_cart.contains(&p.sku)
        })
        .map(|(product, pts)| Recommendation {
            product,
            score: pts.total(),
            reason: pts.reason(),
        })
        .collect();
    ranked.sort_unstable_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then_with(|| a.product.id.cmp(&b.product.id))
    });
    ranked.truncate(limit);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::demo_catalog;

    fn catalog() -> CatalogSnapshot {
        CatalogSnapshot::build(1, demo_catalog(2000, 9)).unwrap()
    }

    fn request<'a>(context: &'a Context, trending: &'a [(String, u64)]) -> Request<'a> {
        Request {
            context,
            affinity: None,
            trending,
            in_cart: &[],
            variant: Variant::Control,
            limit: 8,
            currency: Currency::EUR,
        }
    }

    #[test]
    fn contexts_parse() {
        assert_eq!(Context::parse("home"), Some(Context::Home));
        assert_eq!(
            Context::parse("product:p-1"),
            Some(Context::Product("p-1".into()))
        );
        assert_eq!(Context::parse("product:"), None);
        assert_eq!(Context::parse("elsewhere"), None);
    }

    #[test]
    fn variants_are_deterministic_and_roughly_balanced() {
        assert_eq!(assign_variant("recs", "v-1"), assign_variant("recs", "v-1"));
        let personalized = (0..10_000)
            .filter(|i| assign_variant("recs", &format!("v-{i}")) == Variant::Personalized)
            .count();
        assert!((4_700..5_300).contains(&personalized), "{personalized}");
    }

    #[test]
    fn trending_items_rank_first_on_the_home_page() {
        let c = catalog();
        let hot: Vec<&Product> = c
            .products()
            .iter()
            .filter(|p| p.active && p.in_stock())
            .rev()
            .take(3)
            .collect();
        let trending: Vec<(String, u64)> = hot
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), 100 - i as u64))
            .collect();
        let recs = recommend(&c, &request(&Context::Home, &trending));
        let ids: Vec<&str> = recs.iter().take(3).map(|r| r.product.id.as_str()).collect();
        assert_eq!(ids, hot.iter().map(|p| p.id.as_str()).collect::<Vec<_>>());
        assert_eq!(recs[0].reason, Reason::Trending);
    }

    #[test]
    fn out_of_stock_in_cart_and_on_screen_products_are_excluded() {
        let c = catalog();
        let sold_out = c
            .products()
            .iter()
            .find(|p| p.active && !p.in_stock())
            .unwrap();
        let on_screen = c
            .products()
            .iter()
            .find(|p| p.active && p.in_stock())
            .unwrap();
        let in_cart = c.popular().find(|p| p.in_stock()).unwrap();
        let trending = vec![(sold_out.id.clone(), 50), (on_screen.id.clone(), 40)];
        let context = Context::Product(on_screen.id.clone());
        let cart = vec![in_cart.sku.clone()];
        let mut req = request(&context, &trending);
        req.in_cart = &cart;
        req.limit = MAX_RECOMMENDATIONS;
        let recs = recommend(&c, &req);
        assert!(!recs.is_empty());
        for r in &recs {
            assert!(r.product.in_stock());
            assert_ne!(r.product.id, on_screen.id);
            assert_ne!(r.product.sku, in_cart.sku);
        }
    }

    #[test]
    fn product_pages_favour_the_same_category() {
        let c = catalog();
        let p = c.products().iter().find(|p| p.active).unwrap();
        let context = Context::Product(p.id.clone());
        let recs = recommend(&c, &request(&context, &[]));
        assert!(
            recs.iter()
                .take(4)
                .all(|r| r.product.category == p.category)
        );
        assert_eq!(recs[0].reason, Reason::Similar);
    }

    #[test]
    fn affinity_is_used_only_in_the_personalized_arm() {
        let c = catalog();
        let affinity = BTreeMap::from([("outdoor/cycling".to_owned(), 10)]);
        let mut req = request(&Context::Home, &[]);
        req.affinity = Some(&affinity);
        req.variant = Variant::Personalized;
        let recs = recommend(&c, &req);
        assert!(
            recs.iter()
                .take(4)
                .all(|r| r.product.category_path() == "outdoor/cycling")
        );
        assert_eq!(recs[0].reason, Reason::ForYou);
        req.variant = Variant::Control;
        let control = recommend(&c, &req);
        assert!(control.iter().all(|r| r.reason != Reason::ForYou));
    }

    #[test]
    fn ranking_is_deterministic() {
        let c = catalog();
        let ids =
            |r: Vec<Recommendation<'_>>| r.iter().map(|r| r.product.id.clone()).collect::<Vec<_>>();
        let a = ids(recommend(&c, &request(&Context::Home, &[])));
        let b = ids(recommend(&c, &request(&Context::Home, &[])));
        assert_eq!(a, b);
        assert_eq!(a.len(), 8);
    }
}
