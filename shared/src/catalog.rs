//! Catalog: products and an immutable, versioned snapshot indexed for the edge's read paths.
//!
//! A snapshot is built once (at the origin, or from the demo generator) and then only read, so
//! every index — by id, slug and SKU, by category prefix and tag, one precomputed order per sort
//! key, and a token index for prefix search — is computed up front. Listing a page is then a walk
//! over a precomputed order (or a small candidate set) instead of a sort per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::cart::Promotion;
use crate::money::{Currency, Money};

/// Largest page a listing returns.
pub const MAX_PAGE_SIZE: usize = 100;
/// Page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: usize = 24;
/// Longest search query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// A product image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Absolute or site-relative URL.
    pub url: String,
    /// Alternative text.
    #[serde(default)]
    pub alt: String,
}

/// A product as the catalog holds it; prices are per currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Stable identifier, e.g. `p-000042`.
    pub id: String,
    /// Stock-keeping unit; carts refer to products by SKU.
    pub sku: String,
    /// URL slug, unique in a snapshot.
    pub slug: String,
    /// Display title.
    pub title: String,
    /// Plain-text description.
    #[serde(default)]
    pub description: String,
    /// Category path from the root, e.g. `["apparel", "t-shirts"]`.
    pub category: Vec<String>,
    /// Free tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// One price per currency the product is sold in.
    pub prices: Vec<Money>,
    /// Images, first is the primary one.
    #[serde(default)]
    pub images: Vec<Image>,
    /// Attributes such as colour or material.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Inactive products are not listed or sold.
    pub active: bool,
    /// Creation time, unix seconds; drives the `newest` sort.
    pub created_at: i64,
    /// Popularity score from the origin's rollups; drives the `popularity` sort.
    #[serde(default)]
    pub popularity: u64,
    /// Units available to sell, as last published by the origin.
    #[serde(default)]
    pub stock: u32,
}

impl Product {
    /// Every prefix of the category path, shortest first (`apparel`, `apparel/hoodies`), each
    /// once: a path with empty segments (`["", ""]`) would otherwise name one twice.
    pub fn category_prefixes(&self) -> Vec<String> {
        let mut prefixes: Vec<String> = Vec::with_capacity(self.category.len());
        let mut prefix = String::new();
        for part in &self.category {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if prefixes.last() != Some(&prefix) {
                prefixes.push(prefix.clone());
            }
        }
        prefixes
    }

    /// The price in `currency`, if the product is sold in it.
    pub fn price(&self, currency: Currency) -> Option<Money> {
        self.prices
            .iter()
            .find(|m| m.currency() == currency)
            .copied()
    }

    /// Whether any unit can be sold.
    pub fn in_stock(&self) -> bool {
        self.stock > 0
    }

    /// The category path joined with `/`.
    pub fn category_path(&self) -> String {
        self.category.join("/")
    }
}

/// The public JSON shape of a product, priced in one currency.
#[derive(Debug, Clone, Serialize)]
pub struct ProductView<'a> {
    /// Identifier.
    pub id: &'a str,
    /// SKU.
    pub sku: &'a str,
    /// Slug.
    pub slug: &'a str,
    /// Title.
    pub title: &'a str,
    /// Description.
    pub description: &'a str,
    /// Category path joined with `/`.
    pub category: String,
    /// Tags.
    pub tags: &'a [String],
    /// Price in the requested currency.
    pub price: Money,
    /// Images.
    pub images: &'a [Image],
    /// Attributes.
    pub attributes: &'a BTreeMap<String, String>,
    /// Whether it can be bought now.
    pub in_stock: bool,
}

/// Why a snapshot could not be built or a query could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Two products share an id, slug or SKU.
    #[error("duplicate {field} `{value}`")]
    Duplicate {
        /// Which key.
        field: &'static str,
        /// The repeated value.
        value: String,
    },
    /// A product breaks a rule (empty id, no price, …).
    #[error("product `{id}`: {reason}")]
    InvalidProduct {
        /// The product.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The pagination cursor is not one this catalog issued for this query.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A query parameter is out of range.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

/// Listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Best match first (search), otherwise most popular first.
    #[default]
    Relevance,
    /// Cheapest first.
    PriceAsc,
    /// Most expensive first.
    PriceDesc,
    /// Most recently created first.
    Newest,
    /// Most popular first.
    Popularity,
}

impl Sort {
    /// Parses the `sort` query parameter.
    pub fn parse(s: &str) -> Result<Self, CatalogError> {
        Ok(match s {
            "relevance" => Sort::Relevance,
            "price_asc" | "price" => Sort::PriceAsc,
            "price_desc" | "-price" => Sort::PriceDesc,
            "newest" => Sort::Newest,
            "popularity" | "popular" => Sort::Popularity,
            other => {
                return Err(CatalogError::InvalidQuery(format!(
                    "sort `{}` is not one of relevance, price_asc, price_desc, newest, popularity",
                    other.chars().take(32).collect::<String>()
                )));
            }
        })
    }

    fn code(self) -> u8 {
        match self {
            Sort::Relevance => 0,
            Sort::PriceAsc => 1,
            Sort::PriceDesc => 2,
            Sort::Newest => 3,
            Sort::Popularity => 4,
        }
    }
}

/// A listing request, already parsed from the query string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Category path prefix, e.g. `apparel` or `apparel/t-shirts`.
    pub category: Option<String>,
    /// Exact tag.
    pub tag: Option<String>,
    /// Free-text search.
    pub search: Option<String>,
    /// Order.
    pub sort: Sort,
    /// Page size, 1..=MAX_PAGE_SIZE.
    pub limit: usize,
    /// Only products with stock.
    pub in_stock_only: bool,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page<'a> {
    /// Products on this page.
    pub items: Vec<&'a Product>,
    /// The same products as pre-serialized [`ProductView`] JSON in the requested currency.
    pub json: Vec<&'a RawValue>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// Keyset cursor: the sort, the query it belongs to, and the last item's sort key and product
/// id. Ties break on the product id, not on a position in one snapshot, so the cursor survives
/// catalog updates: a new version does not make the shopper's "next page" skip or repeat items.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    sort: u8,
    query_hash: u64,
    /// The last item's sort key.
    key: i128,
    /// The last item's product id (tie-break).
    tie: String,
}

/// Fixed part of an encoded cursor: sort, query hash, key.
const CURSOR_HEAD: usize = 1 + 8 + 16;

impl Cursor {
    fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(CURSOR_HEAD + self.tie.len());
        buf.push(self.sort);
        buf.extend_from_slice(&self.query_hash.to_le_bytes());
        buf.extend_from_slice(&self.key.to_le_bytes());
        buf.extend_from_slice(self.tie.as_bytes());
        URL_SAFE_NO_PAD.encode(buf)
    }

    fn decode(s: &str) -> Result<Self, CatalogError> {
        // Ids are at most 128 bytes; base64 grows by 4/3.
        if s.len() > 4 * (CURSOR_HEAD + 128) / 3 + 4 {
            return Err(CatalogError::InvalidCursor);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| CatalogError::InvalidCursor)?;
        if raw.len() <= CURSOR_HEAD {
            return Err(CatalogError::InvalidCursor);
        }
        let (head, tie) = raw.split_at(CURSOR_HEAD);
        let mut hash = [0u8; 8];
        hash.copy_from_slice(&head[1..9]);
        let mut key = [0u8; 16];
        key.copy_from_slice(&head[9..25]);
        Ok(Cursor {
            sort: head[0],
            query_hash: u64::from_le_bytes(hash),
            key: i128::from_le_bytes(key),
            tie: String::from_utf8(tie.to_vec()).map_err(|_| CatalogError::InvalidCursor)?,
        })
    }

    /// Whether the item (key, id) comes after this cursor.
    fn is_before(&self, key: i128, id: &str) -> bool {
        (key, id) > (self.key, self.tie.as_str())
    }
}

/// Lower-cases, strips accents (NFKD minus combining marks) and splits on anything that is
/// not alphanumeric, so `Crème Brûlée` and `creme brulee` produce the same tokens.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in text.nfkd().filter(|c| !is_combining_mark(*c)) {
        if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

/// An immutable catalog version with its read indexes.
#[derive(Debug)]
pub struct CatalogSnapshot {
    version: u64,
    products: Vec<Product>,
    /// Per product: a content hash, used as its ETag.
    /// (Hashed on first use: a snapshot built for one request hashes what it answers with.)
    revisions: Vec<OnceLock<u64>>,
    by_id: HashMap<String, u32>,
    by_slug: HashMap<String, u32>,
    by_sku: HashMap<String, u32>,
    /// Every category prefix (`apparel`, `apparel/t-shirts`) → products, in id order.
    by_category: HashMap<String, Vec<u32>>,
    by_tag: HashMap<String, Vec<u32>>,
    /// Search token → products that contain it (title, tags, category, sku), with weights.
    /// Built on the first search: most snapshots built for one request (catalog_parts) never
    /// search, and tokenizing is a large share of building one.
    tokens: OnceLock<BTreeMap<String, Vec<(u32, u8)>>>,
    newest: Vec<u32>,
    popularity: Vec<u32>,
    /// Per currency, active products that have that price, cheapest first.
    by_price: HashMap<Currency, Vec<u32>>,
    /// Per currency, dearest first (ties still in id order, so not a plain reverse).
    by_price_desc: HashMap<Currency, Vec<u32>>,
    promotions: Vec<Promotion>,
    /// Per currency and product, its [`ProductView`] JSON, serialized on first use: listings
    /// and product pages then copy bytes instead of serializing on every request, and a
    /// snapshot built for one request (catalog_parts) serializes only what it answers with.
    json: HashMap<Currency, Vec<OnceLock<Option<Box<RawValue>>>>>,
    /// Per category prefix, its active products most popular first (the order of
    /// `popularity`): a category page in the default sort and recommendations read a prefix of
    /// it instead of sorting the category on every request.
    category_popular: HashMap<String, Vec<u32>>,
}

/// The serialized form of a snapshot: what the origin publishes and the edge stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotData {
    /// Monotonic catalog version.
    pub version: u64,
    /// All products, active or not.
    pub products: Vec<Product>,
    /// Promotions in force with this version.
    #[serde(default)]
    pub promotions: Vec<Promotion>,
}

/// The catalog as the origin publishes it to edges (`GET /v1/catalog/snapshot`): products with
/// their available stock, and the promotions. Edges rebuild the indexes on load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedCatalog {
    /// Snapshot version; increases with every publish.
    pub version: u64,
    /// Every product, active or not.
    pub products: Vec<Product>,
    /// Promotions in force.
    #[serde(default)]
    pub promotions: Vec<Promotion>,
}

impl PublishedCatalog {
    /// Validates and indexes the published catalog.
    pub fn into_snapshot(self) -> Result<CatalogSnapshot, CatalogError> {
        CatalogSnapshot::build_with_promotions(self.version, self.products, self.promotions)
    }
}

impl CatalogSnapshot {
    /// Validates the products and builds every index, without promotions.
    pub fn build(version: u64, products: Vec<Product>) -> Result<Self, CatalogError> {
        Self::build_with_promotions(version, products, Vec::new())
    }

    /// Validates the products and promotions and builds every index.
    pub fn build_with_promotions(
        version: u64,
        products: Vec<Product>,
        promotions: Vec<Promotion>,
    ) -> Result<Self, CatalogError> {
        for promo in &promotions {
            if let Some(code) = &promo.code
                && (code.is_empty()
                    || code.len() > crate::cart::MAX_CODE_BYTES
                    || *code != code.to_uppercase())
            {
                return Err(CatalogError::InvalidProduct {
                    id: promo.id.clone(),
                    reason: "promotion codes are upper case, 1 to 32 bytes".into(),
                });
            }
        }
        let mut ids: Vec<&str> = promotions.iter().map(|p| p.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(CatalogError::Duplicate {
                field: "promotion id",
                value: w[0].to_owned(),
            });
        }
        let mut by_id = HashMap::with_capacity(products.len());
        let mut by_slug = HashMap::with_capacity(products.len());
        let mut by_sku = HashMap::with_capacity(products.len());
        let mut by_category: HashMap<String, Vec<u32>> = HashMap::new();
        let mut by_tag: HashMap<String, Vec<u32>> = HashMap::new();
        let count = u32::try_from(products.len()).map_err(|_| CatalogError::InvalidProduct {
            id: String::new(),
            reason: "too many products".into(),
        })?;

        for (i, p) in products.iter().enumerate() {
            let ix = i as u32; // bounded by `count` above
            validate_product(p)?;
            insert_unique(&mut by_id, "id", &p.id, ix)?;
            insert_unique(&mut by_slug, "slug", &p.slug, ix)?;
            insert_unique(&mut by_sku, "sku", &p.sku, ix)?;
            if !p.active {
                continue;
            }
            for prefix in p.category_prefixes() {
                by_category.entry(prefix).or_default().push(ix);
            }
            for tag in &p.tags {
                by_tag.entry(tag.clone()).or_default().push(ix);
            }
        }

        let active: Vec<u32> = (0..count)
            .filter(|&i| products[i as usize].active)
            .collect();
        let mut newest = active.clone();
        newest.sort_by(|&a, &b| {
            let (pa, pb) = (&products[a as usize], &products[b as usize]);
            pb.created_at
                .cmp(&pa.created_at)
                .then_with(|| pa.id.cmp(&pb.id))
        });
        let mut popularity = active.clone();
        popularity.sort_by(|&a, &b| {
            let (pa, pb) = (&products[a as usize], &products[b as usize]);
            pb.popularity
                .cmp(&pa.popularity)
                .then_with(|| pa.id.cmp(&pb.id))
        });
        let mut by_price: HashMap<Currency, Vec<u32>> = HashMap::new();
        for &i in &active {
            for m in &products[i as usize].prices {
                by_price.entry(m.currency()).or_default().push(i);
            }
        }
        let mut category_popular: HashMap<String, Vec<u32>> = HashMap::new();
        for &i in &popularity {
            for prefix in products[i as usize].category_prefixes() {
                category_popular.entry(prefix).or_default().push(i);
            }
        }
        let mut by_price_desc = by_price.clone();
        // Keys computed once per product: a price key finds and rescales the price, too dear
        // to repeat in every comparison.
        for (currency, list) in by_price.iter_mut() {
            list.sort_by_cached_key(|&i| {
                let p = &products[i as usize];
                (price_key(p, *currency), p.id.as_str())
            });
        }
        for (currency, list) in by_price_desc.iter_mut() {
            list.sort_by_cached_key(|&i| {
                let p = &products[i as usize];
                (-price_key(p, *currency), p.id.as_str())
            });
        }

        let json = by_price
            .keys()
            .map(|c| (*c, (0..products.len()).map(|_| OnceLock::new()).collect()))
            .collect();
        Ok(CatalogSnapshot {
            json,
            version,
            revisions: (0..products.len()).map(|_| OnceLock::new()).collect(),
            products,
            by_id,
            by_slug,
            by_sku,
            by_category,
            by_tag,
            tokens: OnceLock::new(),
            newest,
            popularity,
            by_price,
            by_price_desc,
            promotions,
            category_popular,
        })
    }

    /// Builds a snapshot from its serialized form.
    pub fn from_data(data: SnapshotData) -> Result<Self, CatalogError> {
        Self::build_with_promotions(data.version, data.products, data.promotions)
    }

    /// The serialized form (products cloned).
    pub fn to_data(&self) -> SnapshotData {
        SnapshotData {
            version: self.version,
            products: self.products.clone(),
            promotions: self.promotions.clone(),
        }
    }

    /// Promotions in force.
    pub fn promotions(&self) -> &[Promotion] {
        &self.promotions
    }

    /// Catalog version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of products, active or not.
    pub fn len(&self) -> usize {
        self.products.len()
    }

    /// Whether the snapshot holds no products.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }

    /// All products.
    pub fn products(&self) -> &[Product] {
        &self.products
    }

    /// An active product by id or slug.
    pub fn get(&self, id_or_slug: &str) -> Option<&Product> {
        self.by_id
            .get(id_or_slug)
            .or_else(|| self.by_slug.get(id_or_slug))
            .map(|&i| &self.products[i as usize])
            .filter(|p| p.active)
    }

    /// An active product by id or slug with its JSON in `currency` (`None` for the JSON when
    /// it is not sold in that currency).
    pub fn get_json(
        &self,
        id_or_slug: &str,
        currency: Currency,
    ) -> Option<(&Product, Option<&RawValue>)> {
        let i = *self
            .by_id
            .get(id_or_slug)
            .or_else(|| self.by_slug.get(id_or_slug))?;
        let p = &self.products[i as usize];
        p.active.then(|| (p, self.json_at(i, currency)))
    }

    fn json_at(&self, i: u32, currency: Currency) -> Option<&RawValue> {
        let slot = self.json.get(&currency)?.get(i as usize)?;
        slot.get_or_init(|| {
            ProductView::new(&self.products[i as usize], currency)
                .and_then(|v| serde_json::value::to_raw_value(&v).ok())
        })
        .as_deref()
    }

    /// Search token → active products that contain it (title, tags, category, SKU), with
    /// the weight of the best field it occurs in.
    fn tokens(&self) -> &BTreeMap<String, Vec<(u32, u8)>> {
        self.tokens.get_or_init(|| {
            let mut tokens: BTreeMap<String, Vec<(u32, u8)>> = BTreeMap::new();
            for (ix, p) in (0u32..).zip(&self.products) {
                if !p.active {
                    continue;
                }
                let mut weights: HashMap<String, u8> = HashMap::new();
                let fields: [(&str, u8); 4] = [
                    (&p.title, 3),
                    (&p.sku, 3),
                    (&p.category_path(), 1),
                    (&p.tags.join(" "), 2),
                ];
                for (text, weight) in fields {
                    for t in tokenize(text) {
                        let w = weights.entry(t).or_insert(0);
                        *w = (*w).max(weight);
                    }
                }
                for (t, w) in weights {
                    tokens.entry(t).or_default().push((ix, w));
                }
            }
            tokens
        })
    }

    /// An active product by SKU.
    pub fn by_sku(&self, sku: &str) -> Option<&Product> {
        self.by_sku
            .get(sku)
            .map(|&i| &self.products[i as usize])
            .filter(|p| p.active)
    }

    /// A content hash of the product (and its stock) for ETags.
    pub fn revision(&self, product: &Product) -> u64 {
        self.by_id
            .get(&product.id)
            .map(|&i| {
                let i = i as usize;
                *self.revisions[i].get_or_init(|| content_hash(&self.products[i]))
            })
            .unwrap_or(0)
    }

    /// Active products in popularity order (for recommendations).
    pub fn popular(&self) -> impl Iterator<Item = &Product> {
        self.popularity.iter().map(|&i| &self.products[i as usize])
    }

    /// The `n` most popular active products of a category (prefix).
    pub fn popular_in_category(&self, category: &str, n: usize) -> impl Iterator<Item = &Product> {
        self.category_popular
            .get(category)
            .into_iter()
            .flatten()
            .take(n)
            .map(|&i| &self.products[i as usize])
    }

    /// Active products in a category (prefix), in id order.
    pub fn in_category(&self, category: &str) -> impl Iterator<Item = &Product> {
        self.by_category
            .get(category)
            .into_iter()
            .flatten()
            .map(|&i| &self.products[i as usize])
    }

    /// Lists one page. Products without a price in `currency` are not listed in it.
    pub fn list(&self, q: &ListQuery, currency: Currency) -> Result<Page<'_>, CatalogError> {
        let limit = q.limit;
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(CatalogError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        let query_hash = query_hash(q, currency);
        let sort = match (q.sort, q.search.is_some()) {
            // Without a search, "relevance" means "most popular first".
            (Sort::Relevance, false) => Sort::Popularity,
            (s, _) => s,
        };
        let cursor = q
            .cursor
            .as_deref()
            .map(Cursor::decode)
            .transpose()?
            .map(|c| {
                if c.sort == sort.code() && c.query_hash == query_hash {
                    Ok(c)
                } else {
                    Err(CatalogError::InvalidCursor)
                }
            })
            .transpose()?;

        // Search scores, when searching: product index → relevance.
        let scores = match q.search.as_deref() {
            Some(text) => Some(self.search_scores(text)?),
            None => None,
        };

        let category_key = q.category.as_deref().map(|c| c.trim_matches('/'));
        let category = category_key.map(|c| self.by_category.get(c).map(Vec::as_slice));
        let tag = q
            .tag
            .as_deref()
            .map(|t| self.by_tag.get(t).map(Vec::as_slice));
        // An unknown category or tag lists nothing.
        if matches!(category, Some(None)) || matches!(tag, Some(None)) {
            return Ok(Page {
                json: Vec::new(),
                items: Vec::new(),
                next_cursor: None,
            });
        }
        let category = category.flatten();
        let tag = tag.flatten();

        let keep = |i: u32| -> bool {
            let p = &self.products[i as usize];
            p.active
                && p.price(currency).is_some()
                && (!q.in_stock_only || p.in_stock())
                && category.is_none_or(|c| c.binary_search(&i).is_ok())
                && tag.is_none_or(|t| t.binary_search(&i).is_ok())
                && scores.as_ref().is_none_or(|s| s.contains_key(&i))
        };
        let key = |i: u32| -> i128 { self.sort_key(i, sort, currency, scores.as_ref()) };

        // Strategy: walking a precomputed order costs about (limit / density) product checks;
        // sorting a candidate list costs one check per candidate plus the sort. Walk when the
        // filter is dense enough, sort the smallest list otherwise. Searches always sort.
        let n = self.products.len().max(1);
        let dense = |len: usize| (limit + 1) * n < 2 * len * len;
        let smallest: Option<&[u32]> = match (category, tag) {
            (Some(c), Some(t)) => Some(if c.len() <= t.len() { c } else { t }),
            (Some(c), None) => Some(c),
            (None, Some(t)) => Some(t),
            (None, None) => None,
        };
        // A category in the default sort, the storefront's usual page, has its own precomputed
        // order: walking it costs about `limit` checks however sparse the category is.
        let category_order = match (sort, category_key, tag, &scores) {
            (Sort::Popularity, Some(c), None, None) => self.category_popular.get(c),
            _ => None,
        };
        let candidates: Option<Vec<u32>> = match (&scores, smallest) {
            (Some(s), _) => Some(s.keys().copied().collect()),
            (None, Some(list)) if category_order.is_none() && !dense(list.len()) => {
                Some(list.to_vec())
            }
            _ => None,
        };

        let mut items = Vec::with_capacity(limit + 1);
        match candidates {
            Some(candidates) => {
                // Compute each key once: products are large and scattered, so a key per
                // comparison would mean a cache miss per comparison.
                let mut keyed: Vec<(i128, &str, u32)> = candidates
                    .into_iter()
                    .filter(|&i| keep(i))
                    .map(|i| (key(i), self.products[i as usize].id.as_str(), i))
                    .filter(|&(k, id, _)| cursor.as_ref().is_none_or(|c| c.is_before(k, id)))
                    .collect();
                let take = (limit + 1).min(keyed.len());
                if take > 0 && take < keyed.len() {
                    keyed.select_nth_unstable(take - 1);
                    keyed.truncate(take);
                }
                keyed.sort_unstable();
                items.extend(keyed.into_iter().map(|(_, _, i)| i));
            }
            None => {
                let order =
                    category_order.map_or_else(|| self.order(sort, currency), Vec::as_slice);
                let start = match &cursor {
                    Some(c) => order
                        .partition_point(|&i| !c.is_before(key(i), &self.products[i as usize].id)),
                    None => 0,
                };
                items.extend(
                    order[start..]
                        .iter()
                        .copied()
                        .filter(|&i| keep(i))
                        .take(limit + 1),
                );
            }
        }

        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|&i| {
                Cursor {
                    sort: sort.code(),
                    query_hash,
                    key: key(i),
                    tie: self.products[i as usize].id.clone(),
                }
                .encode()
            })
        } else {
            None
        };
        Ok(Page {
            json: items
                .iter()
                .filter_map(|&i| self.json_at(i, currency))
                .collect(),
            items: items
                .into_iter()
                .map(|i| &self.products[i as usize])
                .collect(),
            next_cursor,
        })
    }

    /// The precomputed order for a sort; ascending by `sort_key`.
    fn order(&self, sort: Sort, currency: Currency) -> &[u32] {
        match sort {
            Sort::PriceAsc => self.by_price.get(&currency).map_or(&[], Vec::as_slice),
            Sort::PriceDesc => self.by_price_desc.get(&currency).map_or(&[], Vec::as_slice),
            Sort::Newest => &self.newest,
            // Relevance without a search is popularity (see `list`); with one, the candidate
            // path sorts by score and never walks an order.
            Sort::Popularity | Sort::Relevance => &self.popularity,
        }
    }

    /// A key that sorts ascending in the wanted order.
    fn sort_key(
        &self,
        i: u32,
        sort: Sort,
        currency: Currency,
        scores: Option<&HashMap<u32, u32>>,
    ) -> i128 {
        let p = &self.products[i as usize];
        match sort {
            Sort::PriceAsc => price_key(p, currency),
            Sort::PriceDesc => -price_key(p, currency),
            Sort::Newest => -i128::from(p.created_at),
            Sort::Popularity => -i128::from(p.popularity),
            Sort::Relevance => {
                let score = scores.and_then(|s| s.get(&i)).copied().unwrap_or(0);
                // Best score first, then popularity.
                -((i128::from(score) << 64) + i128::from(p.popularity))
            }
        }
    }

    /// Every query token must prefix-match some product token; the score sums the weights.
    fn search_scores(&self, text: &str) -> Result<HashMap<u32, u32>, CatalogError> {
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(CatalogError::InvalidQuery(format!(
                "search is longer than {MAX_QUERY_CHARS} characters"
            )));
        }
        let words = tokenize(text);
        let mut result: Option<HashMap<u32, u32>> = None;
        for word in words.iter().take(8) {
            let mut matched: HashMap<u32, u32> = HashMap::new();
            for (token, postings) in self.tokens().range(word.clone()..) {
                if !token.starts_with(word.as_str()) {
                    break;
                }
                // An exact token match counts more than a prefix match.
                let bonus = if token == word { 2 } else { 1 };
                for &(ix, w) in postings {
                    let s = matched.entry(ix).or_insert(0);
                    *s = (*s).max(u32::from(w) * bonus);
                }
            }
            result = Some(match result {
                None => matched,
                Some(prev) => prev
                    .into_iter()
                    .filter_map(|(ix, s)| matched.get(&ix).map(|m| (ix, s + m)))
                    .collect(),
            });
        }
        Ok(result.unwrap_or_default())
    }
}

fn validate_product(p: &Product) -> Result<(), CatalogError> {
    let fail = |reason: &str| {
        Err(CatalogError::InvalidProduct {
            id: p.id.chars().take(64).collect(),
            reason: reason.into(),
        })
    };
    if p.id.is_empty() || p.sku.is_empty() || p.slug.is_empty() {
        return fail("id, sku and slug are required");
    }
    // Carts carry SKUs in signed tokens that refuse longer ones, and ids travel in paths.
    if p.sku.len() > crate::cart::MAX_SKU_BYTES || p.id.len() > 128 || p.slug.len() > 128 {
        return fail("sku is at most 64 bytes, id and slug at most 128");
    }
    if p.title.trim().is_empty() {
        return fail("title is required");
    }
    if p.prices.is_empty() {
        return fail("at least one price is required");
    }
    if p.prices.iter().any(|m| m.amount() < Decimal::ZERO) {
        return fail("prices cannot be negative");
    }
    let mut currencies: Vec<Currency> = p.prices.iter().map(Money::currency).collect();
    currencies.sort();
    currencies.dedup();
    if currencies.len() != p.prices.len() {
        return fail("one price per currency");
    }
    Ok(())
}

fn insert_unique(
    map: &mut HashMap<String, u32>,
    field: &'static str,
    value: &str,
    ix: u32,
) -> Result<(), CatalogError> {
    if map.insert(value.to_owned(), ix).is_some() {
        return Err(CatalogError::Duplicate {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Price in minor units; products lacking the currency sort last.
fn price_key(p: &Product, currency: Currency) -> i128 {
    p.price(currency)
        .map(|m| {
            // Money is kept at the currency's scale; rescaling again makes the key independent
            // of how the amount was built.
            let mut amount = m.amount();
            amount.rescale(currency.minor_units());
            amount.mantissa()
        })
        .unwrap_or(i128::MAX / 2)
}

/// A hash that is the same on every node, target and build (SipHash-1-3, fixed keys), for
/// validators such as ETags. Not for anything secret.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0x6564_6765, 0x6672_6f6e);
    h.write(bytes);
    h.finish()
}

fn content_hash(p: &Product) -> u64 {
    // serde_json of a Product cannot fail: all map keys are strings.
    serde_json::to_vec(p).map_or(0, |bytes| stable_hash(&bytes))
}

fn query_hash(q: &ListQuery, currency: Currency) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new_with_keys(1, 2);
    for part in [q.category.as_deref(), q.tag.as_deref(), q.search.as_deref()] {
        h.write(part.unwrap_or("\u{0}").as_bytes());
        h.write_u8(0xff);
    }
    h.write(currency.code().as_bytes());
    h.write_u8(u8::from(q.in_stock_only));
    h.finish()
}

/// Word lists for the demo catalog; a few accented words exercise accent-insensitive search.
const ADJECTIVES: &[&str] = &[
    "Classic", "Urban", "Vintage", "Alpine", "Coastal", "Nordic", "Café", "Crème", "Élan",
    "Midnight", "Solar", "Feather", "Rugged", "Everyday", "Heritage", "Studio", "Trail", "Breeze",
];
const MATERIALS: &[&str] = &[
    "Cotton", "Linen", "Wool", "Leather", "Canvas", "Bamboo", "Denim", "Ceramic", "Oak", "Steel",
];
const CATEGORIES: &[(&str, &str, &[&str])] = &[
    ("apparel", "t-shirts", &["Tee", "T-Shirt", "Crewneck"]),
    ("apparel", "hoodies", &["Hoodie", "Sweatshirt"]),
    ("apparel", "jackets", &["Jacket", "Parka", "Windbreaker"]),
    ("footwear", "sneakers", &["Sneaker", "Trainer"]),
    ("footwear", "boots", &["Boot", "Chelsea Boot"]),
    ("home", "kitchen", &["Mug", "Bowl", "Kettle"]),
    ("home", "decor", &["Vase", "Lamp", "Cushion"]),
    ("outdoor", "camping", &["Tent", "Lantern", "Sleeping Bag"]),
    ("outdoor", "cycling", &["Bottle", "Saddle Bag", "Helmet"]),
    ("accessories", "bags", &["Backpack", "Tote", "Duffel"]),
    ("accessories", "hats", &["Beanie", "Cap"]),
];
const TAGS: &[&str] = &[
    "new",
    "sale",
    "eco",
    "bestseller",
    "limited",
    "gift",
    "unisex",
    "waterproof",
];
const COLOURS: &[&str] = &["black", "white", "navy", "olive", "sand", "red", "grey"];

/// A deterministic demo catalog of `n` products (same `n` and `seed` → same catalog), for the
/// local run, tests and benchmarks. Prices in EUR, USD and GBP.
pub fn demo_catalog(n: usize, seed: u64) -> Vec<Product> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    let eur = Currency::EUR;
    let usd = Currency::USD;
    let gbp = Currency::parse("GBP").unwrap_or(Currency::EUR);
    (0..n)
        .map(|i| {
            let (top, sub, nouns) = CATEGORIES[rng.random_range(0..CATEGORIES.len())];
            let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
            let material = MATERIALS[rng.random_range(0..MATERIALS.len())];
            let noun = nouns[rng.random_range(0..nouns.len())];
            let colour = COLOURS[rng.random_range(0..COLOURS.len())];
            let title = format!("{adjective} {material} {noun}");
            let slug = format!("{}-{i:06}", tokenize(&title).join("-"));
            let cents: i64 = rng.random_range(499..=29_999);
            let eur_price = Decimal::new(cents, 2);
            let mut tags: Vec<String> = TAGS
                .iter()
                .filter(|_| rng.random_ratio(1, 5))
                .map(|t| (*t).to_owned())
                .collect();
            tags.sort();
            let mut attributes = BTreeMap::new();
            attributes.insert("colour".to_owned(), colour.to_owned());
            attributes.insert("material".to_owned(), material.to_lowercase());
            Product {
                id: format!("p-{i:06}"),
                sku: format!("SKU-{i:06}"),
                slug,
                description: format!(
                    "A {} {} {} in {colour}, made to last.",
                    adjective.to_lowercase(),
                    material.to_lowercase(),
                    noun.to_lowercase()
                ),
                title,
                category: vec![top.to_owned(), sub.to_owned()],
                tags,
                prices: vec![
                    Money::new(eur_price, eur),
                    Money::new(eur_price * Decimal::new(108, 2), usd),
                    Money::new(eur_price * Decimal::new(86, 2), gbp),
                ],
                images: vec![Image {
                    url: format!("/images/p-{i:06}.jpg"),
                    alt: String::new(),
                }],
                attributes,
                // Roughly one in fifty is discontinued, one in twelve sold out.
                active: !rng.random_ratio(1, 50),
                created_at: 1_700_000_000 + rng.random_range(0..31_536_000),
                popularity: rng.random_range(0..10_000),
                stock: if rng.random_ratio(1, 12) {
                    0
                } else {
                    rng.random_range(1..500)
                },
            }
        })
        .collect()
}

impl<'a> ProductView<'a> {
    /// The product priced in `currency`; `None` when it is not sold in that currency.
    pub fn new(p: &'a Product, currency: Currency) -> Option<Self> {
        Some(ProductView {
            id: &p.id,
            sku: &p.sku,
            slug: &p.slug,
            title: &p.title,
            description: &p.description,
            category: p.category_path(),
            tags: &p.tags,
            price: p.price(currency)?,
            images: &p.images,
            attributes: &p.attributes,
            in_stock: p.in_stock(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn snapshot(n: usize) -> CatalogSnapshot {
        CatalogSnapshot::build(7, demo_catalog(n, 42)).unwrap()
    }

    fn query() -> ListQuery {
        ListQuery {
            limit: 24,
            ..ListQuery::default()
        }
    }

    #[test]
    fn demo_catalog_is_deterministic() {
        assert_eq!(demo_catalog(50, 1), demo_catalog(50, 1));
        assert_ne!(demo_catalog(50, 1), demo_catalog(50, 2));
    }

    #[test]
    fn products_are_found_by_id_slug_and_sku() {
        let s = snapshot(200);
        let p = s.products().iter().find(|p| p.active).unwrap();
        assert_eq!(s.get(&p.id).unwrap().id, p.id);
        assert_eq!(s.get(&p.slug).unwrap().id, p.id);
        assert_eq!(s.by_sku(&p.sku).unwrap().id, p.id);
        assert!(s.get("nope").is_none());
    }

    #[test]
    fn inactive_products_are_hidden() {
        let s = snapshot(500);
        let p = s.products().iter().find(|p| !p.active).unwrap();
        assert!(s.get(&p.id).is_none());
        assert!(s.by_sku(&p.sku).is_none());
    }

    #[test]
    fn duplicate_slugs_are_refused() {
        let mut products = demo_catalog(3, 1);
        products[1].slug = products[0].slug.clone();
        assert!(matches!(
            CatalogSnapshot::build(1, products),
            Err(CatalogError::Duplicate { field: "slug", .. })
        ));
    }

    #[test]
    fn tokenizer_folds_case_and_accents() {
        assert_eq!(tokenize("Crème Brûlée, CAFÉ!"), ["creme", "brulee", "cafe"]);
    }

    #[test]
    fn search_is_accent_insensitive_and_matches_prefixes() {
        let s = snapshot(2000);
        let mut q = query();
        q.search = Some("creme".into());
        let plain = s.list(&q, Currency::EUR).unwrap();
        assert!(!plain.items.is_empty());
        assert!(plain.items.iter().all(|p| p.title.starts_with("Crème")));
        q.search = Some("CRÈM".into());
        let prefix = s.list(&q, Currency::EUR).unwrap();
        assert_eq!(
            plain.items.iter().map(|p| &p.id).collect::<Vec<_>>(),
            prefix.items.iter().map(|p| &p.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_search_word_must_match() {
        let s = snapshot(2000);
        let mut q = query();
        q.search = Some("wool hood".into());
        let page = s.list(&q, Currency::EUR).unwrap();
        assert!(!page.items.is_empty());
        for p in page.items {
            let t = format!("{} {}", p.title, p.category_path()).to_lowercase();
            assert!(t.contains("wool") && t.contains("hood"), "{t}");
        }
    }

    #[test]
    fn category_filter_matches_path_prefixes() {
        let s = snapshot(1000);
        let mut q = query();
        q.category = Some("apparel".into());
        q.limit = 100;
        let page = s.list(&q, Currency::EUR).unwrap();
        assert_eq!(page.items.len(), 100);
        assert!(page.items.iter().all(|p| p.category[0] == "apparel"));
        q.category = Some("apparel/hoodies".into());
        let page = s.list(&q, Currency::EUR).unwrap();
        assert!(
            page.items
                .iter()
                .all(|p| p.category_path() == "apparel/hoodies")
        );
        q.category = Some("nothing".into());
        assert!(s.list(&q, Currency::EUR).unwrap().items.is_empty());
    }

    #[test]
    fn price_sort_orders_by_the_requested_currency() {
        let s = snapshot(500);
        let mut q = query();
        q.sort = Sort::PriceAsc;
        q.limit = 100;
        let page = s.list(&q, Currency::USD).unwrap();
        let prices: Vec<_> = page
            .items
            .iter()
            .map(|p| p.price(Currency::USD).unwrap().amount())
            .collect();
        assert!(prices.windows(2).all(|w| w[0] <= w[1]));
        q.sort = Sort::PriceDesc;
        q.category = Some("home".into());
        let page = s.list(&q, Currency::USD).unwrap();
        let prices: Vec<_> = page
            .items
            .iter()
            .map(|p| p.price(Currency::USD).unwrap().amount())
            .collect();
        assert!(prices.windows(2).all(|w| w[0] >= w[1]));
    }

    /// Every id a query lists in euros, following the cursors to the end.
    pub(crate) fn walk_all(s: &CatalogSnapshot, mut q: ListQuery) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let page = s.list(&q, Currency::EUR).unwrap();
            seen.extend(page.items.iter().map(|p| p.id.clone()));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => return seen,
            }
        }
    }

    #[test]
    fn cursor_pagination_visits_every_match_once_in_order() {
        let s = snapshot(777);
        for sort in [
            Sort::Popularity,
            Sort::Newest,
            Sort::PriceAsc,
            Sort::PriceDesc,
        ] {
            // A whole department and a sparse leaf: the default sort walks each one's own order.
            for category in [
                None,
                Some("outdoor".to_owned()),
                Some("apparel/hoodies".to_owned()),
            ] {
                let mut q = query();
                q.sort = sort;
                q.limit = 10;
                q.category = category.clone();
                let ids = walk_all(&s, q.clone());
                let mut expected: Vec<&Product> = s
                    .products()
                    .iter()
                    .filter(|p| p.active)
                    .filter(|p| {
                        category.as_ref().is_none_or(|c| {
                            let path = p.category_path();
                            path == *c || path.starts_with(&format!("{c}/"))
                        })
                    })
                    .collect();
                expected.sort_by_key(|p| {
                    let i = s.by_id[&p.id];
                    (s.sort_key(i, sort, Currency::EUR, None), i)
                });
                let expected: Vec<String> = expected.iter().map(|p| p.id.clone()).collect();
                assert_eq!(ids, expected, "{sort:?} {category:?}");
            }
        }
    }

    #[test]
    fn a_cursor_survives_a_catalog_update_without_skipping_or_repeating() {
        let mut products = demo_catalog(300, 3);
        for p in &mut products {
            // Many ties, so the tie-break decides the order.
            p.popularity %= 5;
        }
        let old = CatalogSnapshot::build(1, products.clone()).unwrap();
        let mut q = query();
        q.limit = 20;
        let first = old.list(&q, Currency::EUR).unwrap();
        let seen: Vec<String> = first.items.iter().map(|p| p.id.clone()).collect();
        // The new version adds a product at the front and drops one already shown.
        let mut extra = products[0].clone();
        extra.id = "a-new".into();
        extra.sku = "SKU-NEW".into();
        extra.slug = "a-new".into();
        products.insert(0, extra);
        products.retain(|p| p.id != seen[3]);
        let new = CatalogSnapshot::build(2, products).unwrap();
        q.cursor = first.next_cursor;
        let mut rest = Vec::new();
        loop {
            let page = new.list(&q, Currency::EUR).unwrap();
            rest.extend(page.items.iter().map(|p| p.id.clone()));
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        for id in &seen {
            assert!(!rest.contains(id), "{id} repeated");
        }
        let mut all: Vec<String> = seen.iter().chain(rest.iter()).cloned().collect();
        all.retain(|id| id != "a-new");
        let mut expected: Vec<String> = old
            .products()
            .iter()
            .filter(|p| p.active)
            .map(|p| p.id.clone())
            .filter(|id| *id != seen[3] || seen.contains(id))
            .collect();
        expected.sort();
        all.sort();
        assert_eq!(
            all, expected,
            "every product of the old listing is visited once"
        );
    }

    #[test]
    fn cursor_from_another_query_is_refused() {
        let s = snapshot(100);
        let mut q = query();
        q.limit = 5;
        let next = s.list(&q, Currency::EUR).unwrap().next_cursor.unwrap();
        q.category = Some("home".into());
        q.cursor = Some(next);
        assert_eq!(
            s.list(&q, Currency::EUR).unwrap_err(),
            CatalogError::InvalidCursor
        );
        q.cursor = Some("garbage!!".into());
        assert_eq!(
            s.list(&q, Currency::EUR).unwrap_err(),
            CatalogError::InvalidCursor
        );
    }

    #[test]
    fn in_stock_filter_hides_sold_out_products() {
        let s = snapshot(600);
        let mut q = query();
        q.in_stock_only = true;
        q.limit = 100;
        let page = s.list(&q, Currency::EUR).unwrap();
        assert!(page.items.iter().all(|p| p.in_stock()));
    }

    #[test]
    fn limits_outside_range_are_refused() {
        let s = snapshot(10);
        let mut q = query();
        q.limit = 0;
        assert!(s.list(&q, Currency::EUR).is_err());
        q.limit = MAX_PAGE_SIZE + 1;
        assert!(s.list(&q, Currency::EUR).is_err());
    }

    #[test]
    fn revisions_change_with_content() {
        let mut products = demo_catalog(2, 1);
        let a = CatalogSnapshot::build(1, products.clone()).unwrap();
        products[0].stock += 1;
        let b = CatalogSnapshot::build(2, products).unwrap();
        assert_ne!(a.revision(&a.products()[0]), b.revision(&b.products()[0]));
        assert_eq!(a.revision(&a.products()[1]), b.revision(&b.products()[1]));
    }
}
