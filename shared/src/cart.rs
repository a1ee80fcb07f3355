//! Cart: lines with limits, priced against a catalog snapshot, with promotions.
//!
//! The cart the shopper holds carries only SKUs and quantities; every price comes from the
//! snapshot at pricing time, so a client can never set its own price. Promotions apply in a
//! fixed order — buy-X-get-Y, then percentages, then fixed amounts, each group by promotion id —
//! so the same cart and catalog always give the same total, on any node.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::catalog::CatalogSnapshot;
use crate::money::{Currency, Money, MoneyError};
use crate::tokens::CartClaims;

/// Most distinct lines in a cart.
pub const MAX_LINES: usize = 50;
/// Most units of one SKU in a cart.
pub const MAX_QUANTITY: u32 = 99;
/// Longest SKU a cart (and its token) carries.
pub const MAX_SKU_BYTES: usize = 64;
/// Longest promotion code.
pub const MAX_CODE_BYTES: usize = 32;

/// Why a cart change or pricing was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    /// The SKU is not in the catalog (or not active).
    #[error("unknown sku `{0}`")]
    UnknownSku(String),
    /// Quantity outside 1..=MAX_QUANTITY (0 is allowed only to remove a line).
    #[error("quantity must be between 1 and {MAX_QUANTITY}")]
    QuantityOutOfRange,
    /// Adding a new line would exceed MAX_LINES.
    #[error("a cart holds at most {MAX_LINES} lines")]
    TooManyLines,
    /// The product has no stock.
    #[error("sku `{0}` is out of stock")]
    OutOfStock(String),
    /// More units than the published stock.
    #[error("only {available} of sku `{sku}` available")]
    InsufficientStock {
        /// SKU.
        sku: String,
        /// Units published as available.
        available: u32,
    },
    /// The product is not sold in the cart's currency.
    #[error("sku `{0}` is not sold in this currency")]
    NotSoldInCurrency(String),
    /// The line to change is not in the cart.
    #[error("sku `{0}` is not in the cart")]
    NotInCart(String),
    /// The promotion code matches no active promotion.
    #[error("promotion code is not valid")]
    UnknownCode,
    /// Arithmetic failure.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// One line: a SKU and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    /// SKU.
    pub sku: String,
    /// Units, 1..=MAX_QUANTITY.
    pub quantity: u32,
}

/// The cart's contents, as carried in the cart token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    /// Cart id.
    pub id: String,
    /// Lines in the order they were added.
    pub lines: Vec<CartLine>,
    /// Promotion code.
    pub code: Option<String>,
    /// Currency.
    pub currency: Currency,
}

impl Cart {
    /// An empty cart.
    pub fn new(id: String, currency: Currency) -> Self {
        Cart {
            id,
            lines: Vec::new(),
            code: None,
            currency,
        }
    }

    /// The cart held in verified token claims.
    pub fn from_claims(c: CartClaims) -> Self {
        Cart {
            id: c.id,
            lines: c
                .lines
                .into_iter()
                .map(|(sku, quantity)| CartLine { sku, quantity })
                .collect(),
            code: c.code,
            currency: c.currency,
        }
    }

    /// The claims to sign, stamped with the catalog version it was priced against.
    pub fn to_claims(&self, catalog_version: u64) -> CartClaims {
        CartClaims {
            id: self.id.clone(),
            lines: self
                .lines
                .iter()
                .map(|l| (l.sku.clone(), l.quantity))
                .collect(),
            code: self.code.clone(),
            currency: self.currency,
            catalog_version,
        }
    }

    fn check_available(
        &self,
        catalog: &CatalogSnapshot,
        sku: &str,
        quantity: u32,
    ) -> Result<(), CartError> {
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(CartError::QuantityOutOfRange);
        }
        let p = catalog
            .by_sku(sku)
            .ok_or_else(|| CartError::UnknownSku(truncate(sku)))?;
        if p.price(self.currency).is_none() {
            return Err(CartError::NotSoldInCurrency(sku.to_owned()));
        }
        if p.stock == 0 {
            return Err(CartError::OutOfStock(sku.to_owned()));
        }
        if quantity > p.stock {
            return Err(CartError::InsufficientStock {
                sku: sku.to_owned(),
                available: p.stock,
            });
        }
        Ok(())
    }

    /// Adds units of a SKU (merging with an existing line). Nothing changes on error.
    pub fn add(
        &mut self,
        catalog: &CatalogSnapshot,
        sku: &str,
        quantity: u32,
    ) -> Result<(), CartError> {
        if quantity == 0 {
            return Err(CartError::QuantityOutOfRange);
        }
        match self.lines.iter().position(|l| l.sku == sku) {
            Some(i) => {
                let total = self.lines[i].quantity.saturating_add(quantity);
                self.check_available(catalog, sku, total)?;
                self.lines[i].quantity = total;
            }
            None => {
                if self.lines.len() >= MAX_LINES {
                    return Err(CartError::TooManyLines);
                }
                self.check_available(catalog, sku, quantity)?;
                self.lines.push(CartLine {
                    sku: sku.to_owned(),
                    quantity,
                });
            }
        }
        Ok(())
    }

    /// Sets a line's quantity; 0 removes it.
    pub fn set(
        &mut self,
        catalog: &CatalogSnapshot,
        sku: &str,
        quantity: u32,
    ) -> Result<(), CartError> {
        let i = self
            .lines
            .iter()
            .position(|l| l.sku == sku)
            .ok_or_else(|| CartError::NotInCart(truncate(sku)))?;
        if quantity == 0 {
            self.lines.remove(i);
            return Ok(());
        }
        self.check_available(catalog, sku, quantity)?;
        self.lines[i].quantity = quantity;
        Ok(())
    }

    /// Removes a line.
    pub fn remove(&mut self, sku: &str) -> Result<(), CartError> {
        let before = self.lines.len();
        self.lines.retain(|l| l.sku != sku);
        if self.lines.len() == before {
            return Err(CartError::NotInCart(truncate(sku)));
        }
        Ok(())
    }

    /// Sets or clears the promotion code; an unknown code is refused.
    pub fn apply_code(
        &mut self,
        catalog: &CatalogSnapshot,
        code: Option<&str>,
    ) -> Result<(), CartError> {
        match code {
            None => self.code = None,
            Some(c) => {
                let normalized = c.trim().to_uppercase();
                if !catalog
                    .promotions()
                    .iter()
                    .any(|p| p.code.as_deref() == Some(normalized.as_str()))
                {
                    return Err(CartError::UnknownCode);
                }
                self.code = Some(normalized);
            }
        }
        Ok(())
    }

    /// Total units across lines.
    pub fn units(&self) -> u32 {
        self.lines.iter().map(|l| l.quantity).sum()
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Which lines a promotion covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Scope {
    /// Every line.
    All,
    /// Lines whose product is in a category (path prefix).
    Category {
        /// Category path prefix, e.g. `home/kitchen`.
        path: String,
    },
    /// Lines whose product has a tag.
    Tag {
        /// The tag.
        tag: String,
    },
    /// One SKU.
    Sku {
        /// The SKU.
        sku: String,
    },
}

/// What a promotion gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PromotionKind {
    /// `percent`% off the covered lines.
    Percentage {
        /// 0..=100.
        #[serde(with = "rust_decimal::serde::str")]
        percent: Decimal,
    },
    /// A fixed amount off the cart, per currency, if the covered subtotal reaches a minimum.
    FixedAmount {
        /// Discount per currency; a currency not listed gets none.
        amounts: Vec<Money>,
        /// Minimum covered subtotal per currency.
        #[serde(default)]
        min_subtotal: Vec<Money>,
    },
    /// For every `buy + get` covered units, the `get` cheapest are free.
    BuyXGetY {
        /// Units to pay for.
        buy: u32,
        /// Units free.
        get: u32,
    },
}

/// A promotion published with the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// Stable id; also the tie-breaker for the application order.
    pub id: String,
    /// Shown to the shopper.
    pub description: String,
    /// What it gives.
    pub kind: PromotionKind,
    /// Which lines it covers.
    pub scope: Scope,
    /// Upper-case code the shopper must enter; `None` applies automatically.
    #[serde(default)]
    pub code: Option<String>,
}

/// A priced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PricedLine {
    /// SKU.
    pub sku: String,
    /// Product id.
    pub product_id: String,
    /// Product title.
    pub title: String,
    /// Units.
    pub quantity: u32,
    /// Catalog price per unit.
    pub unit_price: Money,
    /// `unit_price × quantity`.
    pub line_total: Money,
    /// Whether the published stock covers the quantity.
    pub available: bool,
}

/// A promotion that changed the total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedPromotion {
    /// Promotion id.
    pub id: String,
    /// Its description.
    pub description: String,
    /// How much it took off.
    pub amount: Money,
}

/// A cart priced against a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PricedCart {
    /// Priced lines (lines whose SKU vanished from the catalog are left out and listed below).
    pub lines: Vec<PricedLine>,
    /// Sum of line totals.
    pub subtotal: Money,
    /// Sum of applied promotions.
    pub discount: Money,
    /// `subtotal − discount`, never below zero.
    pub total: Money,
    /// Promotions that applied, in application order.
    pub promotions: Vec<AppliedPromotion>,
    /// The entered code, if any.
    pub code: Option<String>,
    /// SKUs in the cart that are no longer sold.
    pub unavailable: Vec<String>,
    /// Catalog version used.
    pub catalog_version: u64,
}

fn covers(scope: &Scope, catalog: &CatalogSnapshot, sku: &str) -> bool {
    let Some(p) = catalog.by_sku(sku) else {
        return false;
    };
    match scope {
        Scope::All => true,
        Scope::Category { path } => {
            let full = p.category_path();
            full == *path || full.starts_with(&format!("{path}/"))
        }
        Scope::Tag { tag } => p.tags.iter().any(|t| t == tag),
        Scope::Sku { sku: s } => s == sku,
    }
}

/// Prices a cart against a snapshot and its promotions, deterministically.
pub fn price(cart: &Cart, catalog: &CatalogSnapshot) -> Result<PricedCart, CartError> {
    let currency = cart.currency;
    let mut lines = Vec::with_capacity(cart.lines.len());
    let mut unavailable = Vec::new();
    for l in &cart.lines {
        match catalog
            .by_sku(&l.sku)
            .and_then(|p| p.price(currency).map(|m| (p, m)))
        {
            Some((p, unit_price)) => lines.push(PricedLine {
                sku: l.sku.clone(),
                product_id: p.id.clone(),
                title: p.title.clone(),
                quantity: l.quantity,
                unit_price,
                line_total: unit_price.checked_mul(l.quantity)?,
                available: p.stock >= l.quantity,
            }),
            None => unavailable.push(l.sku.clone()),
        }
    }
    let subtotal = Money::sum(currency, lines.iter().map(|l| &l.line_total))?;

    // Per line: what is still discountable after earlier promotions.
    let mut remaining: Vec<Money> = lines.iter().map(|l| l.line_total).collect();
    let mut applied = Vec::new();

    let mut promos: Vec<&Promotion> = catalog
        .promotions()
        .iter()
        .filter(|p| match &p.code {
            None => true,
            Some(code) => cart.code.as_deref() == Some(code.as_str()),
        })
        .collect();
    let stage = |p: &Promotion| match p.kind {
        PromotionKind::BuyXGetY { .. } => 0,
        PromotionKind::Percentage { .. } => 1,
        PromotionKind::FixedAmount { .. } => 2,
    };
    promos.sort_by(|a, b| stage(a).cmp(&stage(b)).then_with(|| a.id.cmp(&b.id)));

    for promo in promos {
        let covered: Vec<usize> = (0..lines.len())
            .filter(|&i| covers(&promo.scope, catalog, &lines[i].sku))
            .collect();
        if covered.is_empty() {
            continue;
        }
        let amount = match &promo.kind {
            PromotionKind::BuyXGetY { buy, get } => {
                buy_x_get_y(&lines, &covered, &mut remaining, *buy, *get, currency)?
            }
            PromotionKind::Percentage { percent } => {
                let mut total = Money::zero(currency);
                for &i in &covered {
                    let off = remaining[i].percentage(*percent)?;
                    remaining[i] = remaining[i].checked_sub(&off)?;
                    total = total.checked_add(&off)?;
                }
                total
            }
            PromotionKind::FixedAmount {
                amounts,
                min_subtotal,
            } => {
                let base = Money::sum(currency, covered.iter().map(|&i| &remaining[i]))?;
                let minimum = min_subtotal.iter().find(|m| m.currency() == currency);
                match amounts.iter().find(|m| m.currency() == currency) {
                    Some(off) if minimum.is_none_or(|m| base.amount() >= m.amount()) => {
                        let off = off.min(base)?;
                        // Spread over covered lines in order so later promotions see the rest.
                        let mut left = off;
                        for &i in &covered {
                            let take = left.min(remaining[i])?;
                            remaining[i] = remaining[i].checked_sub(&take)?;
                            left = left.checked_sub(&take)?;
                        }
                        off
                    }
                    _ => Money::zero(currency),
                }
            }
        };
        if !amount.is_zero() {
            applied.push(AppliedPromotion {
                id: promo.id.clone(),
                description: promo.description.clone(),
                amount,
            });
        }
    }

    let discount = Money::sum(currency, applied.iter().map(|a| &a.amount))?.min(subtotal)?;
    let total = subtotal.checked_sub(&discount)?;
    Ok(PricedCart {
        lines,
        subtotal,
        discount,
        total,
        promotions: applied,
        code: cart.code.clone(),
        unavailable,
        catalog_version: catalog.version(),
    })
}

/// Frees the `get` cheapest units of every `buy + get` covered units (most expensive first).
fn buy_x_get_y(
    lines: &[PricedLine],
    covered: &[usize],
    remaining: &mut [Money],
    buy: u32,
    get: u32,
    currency: Currency,
) -> Result<Money, CartError> {
    let group = buy.saturating_add(get);
    if get == 0 || group == 0 {
        return Ok(Money::zero(currency));
    }
    // (unit price, line index), one entry per unit; bounded by MAX_LINES × MAX_QUANTITY.
    let mut units: Vec<(Money, usize)> = covered
        .iter()
        .flat_map(|&i| std::iter::repeat_n((lines[i].unit_price, i), lines[i].quantity as usize))
        .collect();
    units.sort_by(|a, b| b.0.amount().cmp(&a.0.amount()).then(a.1.cmp(&b.1)));
    let mut total = Money::zero(currency);
    for chunk in units.chunks(group as usize) {
        if chunk.len() < group as usize {
            break;
        }
        for &(price, i) in &chunk[buy as usize..] {
            let take = price.min(remaining[i])?;
            remaining[i] = remaining[i].checked_sub(&take)?;
            total = total.checked_add(&take)?;
        }
    }
    Ok(total)
}

/// The promotions of the demo catalog.
pub fn demo_promotions() -> Vec<Promotion> {
    let eur = Currency::EUR;
    let usd = Currency::USD;
    vec![
        Promotion {
            id: "kitchen-3-for-2".into(),
            description: "Kitchen: buy 2, get 1 free".into(),
            kind: PromotionKind::BuyXGetY { buy: 2, get: 1 },
            scope: Scope::Category {
                path: "home/kitchen".into(),
            },
            code: None,
        },
        Promotion {
            id: "sale-tag-20".into(),
            description: "20% off everything tagged sale".into(),
            kind: PromotionKind::Percentage {
                percent: Decimal::new(20, 0),
            },
            scope: Scope::Tag { tag: "sale".into() },
            code: None,
        },
        Promotion {
            id: "welcome-10".into(),
            description: "10% off with WELCOME10".into(),
            kind: PromotionKind::Percentage {
                percent: Decimal::new(10, 0),
            },
            scope: Scope::All,
            code: Some("WELCOME10".into()),
        },
        Promotion {
            id: "five-off-50".into(),
            description: "5 off orders over 50 with FIVEOFF".into(),
            kind: PromotionKind::FixedAmount {
                amounts: vec![
                    Money::new(Decimal::new(5, 0), eur),
                    Money::new(Decimal::new(5, 0), usd),
                ],
                min_subtotal: vec![
                    Money::new(Decimal::new(50, 0), eur),
                    Money::new(Decimal::new(50, 0), usd),
                ],
            },
            scope: Scope::All,
            code: Some("FIVEOFF".into()),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Product, demo_catalog};
    use rust_decimal_macros::dec;

    fn product(i: usize, eur: Decimal, category: &str, tags: &[&str], stock: u32) -> Product {
        let mut p = demo_catalog(1, i as u64).remove(0);
        p.id = format!("p{i}");
        p.sku = format!("S{i}");
        p.slug = format!("p{i}");
        p.prices = vec![Money::new(eur, Currency::EUR)];
        p.category = category.split('/').map(str::to_owned).collect();
        p.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        p.active = true;
        p.stock = stock;
        p
    }

    fn catalog(promotions: Vec<Promotion>) -> CatalogSnapshot {
        CatalogSnapshot::build_with_promotions(
            1,
            vec![
                product(1, dec!(10.00), "home/kitchen", &[], 100),
                product(2, dec!(4.00), "home/kitchen", &[], 100),
                product(3, dec!(19.99), "apparel/t-shirts", &["sale"], 100),
                product(4, dec!(100.00), "outdoor/camping", &[], 2),
                product(5, dec!(5.00), "outdoor/camping", &[], 0),
            ],
            promotions,
        )
        .unwrap()
    }

    fn cart_with(c: &CatalogSnapshot, lines: &[(&str, u32)]) -> Cart {
        let mut cart = Cart::new("c".into(), Currency::EUR);
        for (sku, q) in lines {
            cart.add(c, sku, *q).unwrap();
        }
        cart
    }

    #[test]
    fn totals_come_from_catalog_prices() {
        let c = catalog(vec![]);
        let p = price(&cart_with(&c, &[("S1", 2), ("S3", 1)]), &c).unwrap();
        assert_eq!(p.subtotal.amount(), dec!(39.99));
        assert_eq!(p.total.amount(), dec!(39.99));
        assert!(p.discount.is_zero());
    }

    #[test]
    fn adding_the_same_sku_merges_lines() {
        let c = catalog(vec![]);
        let cart = cart_with(&c, &[("S1", 2), ("S1", 3)]);
        assert_eq!(cart.lines.len(), 1);
        assert_eq!(cart.lines[0].quantity, 5);
    }

    #[test]
    fn quantity_and_line_limits_hold() {
        let c = catalog(vec![]);
        let mut cart = cart_with(&c, &[("S1", MAX_QUANTITY)]);
        assert_eq!(cart.add(&c, "S1", 1), Err(CartError::QuantityOutOfRange));
        assert_eq!(cart.add(&c, "S2", 0), Err(CartError::QuantityOutOfRange));
        assert_eq!(cart.lines[0].quantity, MAX_QUANTITY);
        let many: Vec<Product> = (0..=MAX_LINES)
            .map(|i| product(100 + i, dec!(1), "home/decor", &[], 10))
            .collect();
        let big = CatalogSnapshot::build(1, many).unwrap();
        let mut cart = Cart::new("c".into(), Currency::EUR);
        for i in 0..MAX_LINES {
            cart.add(&big, &format!("S{}", 100 + i), 1).unwrap();
        }
        assert_eq!(
            cart.add(&big, &format!("S{}", 100 + MAX_LINES), 1),
            Err(CartError::TooManyLines)
        );
    }

    #[test]
    fn stock_and_unknown_skus_are_checked() {
        let c = catalog(vec![]);
        let mut cart = Cart::new("c".into(), Currency::EUR);
        assert_eq!(
            cart.add(&c, "S5", 1),
            Err(CartError::OutOfStock("S5".into()))
        );
        assert!(matches!(
            cart.add(&c, "S4", 3),
            Err(CartError::InsufficientStock { available: 2, .. })
        ));
        assert_eq!(
            cart.add(&c, "nope", 1),
            Err(CartError::UnknownSku("nope".into()))
        );
        assert!(cart.lines.is_empty());
    }

    #[test]
    fn set_and_remove_change_lines() {
        let c = catalog(vec![]);
        let mut cart = cart_with(&c, &[("S1", 2), ("S2", 1)]);
        cart.set(&c, "S1", 4).unwrap();
        assert_eq!(cart.lines[0].quantity, 4);
        cart.set(&c, "S1", 0).unwrap();
        assert_eq!(cart.lines.len(), 1);
        cart.remove("S2").unwrap();
        assert!(cart.lines.is_empty());
        assert_eq!(cart.remove("S2"), Err(CartError::NotInCart("S2".into())));
    }

    #[test]
    fn buy_two_get_one_frees_the_cheapest_unit() {
        let c = catalog(demo_promotions());
        // 2 × 10.00 + 1 × 4.00 in kitchen: the 4.00 unit is free.
        let p = price(&cart_with(&c, &[("S1", 2), ("S2", 1)]), &c).unwrap();
        assert_eq!(p.discount.amount(), dec!(4.00));
        assert_eq!(p.total.amount(), dec!(20.00));
        // Two units only: no free unit.
        let p = price(&cart_with(&c, &[("S1", 2)]), &c).unwrap();
        assert!(p.discount.is_zero());
    }

    #[test]
    fn percentage_promotions_cover_their_scope_only() {
        let c = catalog(demo_promotions());
        let p = price(&cart_with(&c, &[("S3", 1), ("S4", 1)]), &c).unwrap();
        // 20% of 19.99 = 3.998 → 4.00
        assert_eq!(p.discount.amount(), dec!(4.00));
        assert_eq!(p.promotions.len(), 1);
        assert_eq!(p.promotions[0].id, "sale-tag-20");
    }

    #[test]
    fn codes_unlock_their_promotions_and_stack_in_a_fixed_order() {
        let c = catalog(demo_promotions());
        let mut cart = cart_with(&c, &[("S3", 1), ("S4", 1)]);
        cart.apply_code(&c, Some(" welcome10 ")).unwrap();
        let p = price(&cart, &c).unwrap();
        // sale 20% on 19.99 → 4.00 off, leaving 15.99; then 10% on 15.99 + 100.00 → 1.60 + 10.00.
        assert_eq!(
            p.promotions
                .iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>(),
            ["sale-tag-20", "welcome-10"]
        );
        assert_eq!(p.discount.amount(), dec!(15.60));
        assert_eq!(p.total.amount(), dec!(104.39));
        assert_eq!(
            cart.apply_code(&c, Some("BOGUS")),
            Err(CartError::UnknownCode)
        );
        assert_eq!(cart.code.as_deref(), Some("WELCOME10"));
    }

    #[test]
    fn fixed_amounts_need_their_minimum_and_never_exceed_the_subtotal() {
        let c = catalog(demo_promotions());
        let mut cart = cart_with(&c, &[("S2", 1)]);
        cart.apply_code(&c, Some("FIVEOFF")).unwrap();
        assert!(price(&cart, &c).unwrap().discount.is_zero());
        cart.add(&c, "S4", 1).unwrap();
        let p = price(&cart, &c).unwrap();
        assert_eq!(p.discount.amount(), dec!(5.00));
        assert_eq!(p.total.amount(), dec!(99.00));
    }

    #[test]
    fn pricing_is_deterministic_whatever_the_promotion_order() {
        let mut promos = demo_promotions();
        let c1 = catalog(promos.clone());
        promos.reverse();
        let c2 = catalog(promos);
        let mut cart = cart_with(&c1, &[("S1", 3), ("S2", 2), ("S3", 2)]);
        cart.apply_code(&c1, Some("WELCOME10")).unwrap();
        assert_eq!(price(&cart, &c1).unwrap(), price(&cart, &c2).unwrap());
    }

    #[test]
    fn vanished_skus_are_reported_not_priced() {
        let c = catalog(vec![]);
        let mut cart = cart_with(&c, &[("S1", 1)]);
        cart.lines.push(CartLine {
            sku: "GONE".into(),
            quantity: 1,
        });
        let p = price(&cart, &c).unwrap();
        assert_eq!(p.unavailable, ["GONE"]);
        assert_eq!(p.total.amount(), dec!(10.00));
    }

    #[test]
    fn claims_round_trip_keeps_lines_and_code() {
        let c = catalog(demo_promotions());
        let mut cart = cart_with(&c, &[("S1", 1), ("S3", 2)]);
        cart.apply_code(&c, Some("WELCOME10")).unwrap();
        assert_eq!(Cart::from_claims(cart.to_claims(9)), cart);
    }
}
