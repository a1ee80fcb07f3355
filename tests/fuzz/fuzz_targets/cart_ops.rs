//! The cart: shoppers drive `add`/`set`/`remove`/`apply_code` with any SKU, quantity and
//! code they like, and every view prices the result. Whatever the sequence, the cart stays
//! within its limits, a refused change changes nothing, the cart always signs into a token the
//! keyring accepts back, and pricing adds up: exact decimal money in the cart's currency,
//! lines that sum to the subtotal, a discount between zero and the subtotal.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use edgefront_shared::cart::{
    self, Cart, MAX_CODE_BYTES, MAX_LINES, MAX_QUANTITY, Promotion, PromotionKind, Scope,
};
use edgefront_shared::catalog::{CatalogSnapshot, Product, demo_catalog};
use edgefront_shared::money::{Currency, Money};
use edgefront_shared::tokens::Keyring;
use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;

const NOW: u64 = 1_800_000_000;

/// A small demo catalog: some products sold out, some inactive, prices in EUR/USD/GBP.
static PRODUCTS: LazyLock<Vec<Product>> = LazyLock::new(|| demo_catalog(64, 7));
/// The catalog with the demo promotions, as the storefront publishes it.
static DEMO: LazyLock<CatalogSnapshot> = LazyLock::new(|| {
    CatalogSnapshot::build_with_promotions(1, PRODUCTS.clone(), cart::demo_promotions())
        .expect("the demo catalog builds")
});
static RING: LazyLock<Keyring> =
    LazyLock::new(|| Keyring::new(&[("k".into(), vec![3; 32])]).expect("valid key"));

/// Currencies the demo catalog sells in, and JPY (0 minor units), which it does not.
const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "JPY"];
const TAGS: [&str; 4] = ["sale", "new", "gift", "nonexistent"];
const CATEGORIES: [&str; 4] = ["home", "home/kitchen", "apparel", "apparel/hoodies"];

#[derive(Arbitrary, Debug)]
struct Input {
    currency: u8,
    /// Promotions of the fuzzer's own, replacing the demo ones (built per input).
    promotions: Option<Vec<PromoSpec>>,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Add(Sku, u32),
    Set(Sku, u32),
    Remove(Sku),
    ApplyCode(Option<Code>),
    Price,
    /// Round trip through a signed cart token, as every request does.
    Reload,
}

#[derive(Arbitrary, Debug)]
enum Sku {
    /// A SKU of the catalog (by index, so the fuzzer hits real ones).
    Catalog(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Code {
    Welcome,
    FiveOff,
    /// A known code as a shopper might type it.
    Sloppy,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct PromoSpec {
    kind: KindSpec,
    scope: ScopeSpec,
    code: bool,
}

#[derive(Arbitrary, Debug)]
enum KindSpec {
    /// Hundredths of a percent.
    Percentage(i32),
    /// Minor units, per currency of the catalog, and a minimum subtotal.
    Fixed(i64, i64),
    BuyXGetY(u32, u32),
}

#[derive(Arbitrary, Debug)]
enum ScopeSpec {
    All,
    Category(u8),
    Tag(u8),
    Sku(u8),
}

fuzz_target!(|input: Input| {
    let currency = Currency::parse(CURRENCIES[usize::from(input.currency) % CURRENCIES.len()])
        .expect("known currency");
    let (custom, sane) = match &input.promotions {
        Some(specs) => match custom_catalog(specs) {
            // The catalog refuses some promotions (e.g. duplicate ids): nothing to run.
            None => return,
            Some(catalog) => (Some(catalog), specs.iter().all(is_sane)),
        },
        None => (None, true),
    };
    let demo: &CatalogSnapshot = &DEMO;
    let catalog = custom.as_ref().unwrap_or(demo);
    let mut cart = Cart::new("fuzz-cart".into(), currency);
    for op in &input.ops {
        let before = cart.clone();
        let result = match op {
            Op::Add(sku, quantity) => cart.add(catalog, &sku_text(sku), *quantity),
            Op::Set(sku, quantity) => cart.set(catalog, &sku_text(sku), *quantity),
            Op::Remove(sku) => cart.remove(&sku_text(sku)),
            Op::ApplyCode(code) => {
                cart.apply_code(catalog, code.as_ref().map(code_text).as_deref())
            }
            Op::Price => {
                check_pricing(&cart, catalog, sane);
                Ok(())
            }
            Op::Reload => {
                reload(&cart, catalog);
                Ok(())
            }
        };
        if result.is_err() {
            assert_eq!(cart, before, "a refused {op:?} changed the cart");
        }
        check_limits(&cart, catalog);
    }
    check_pricing(&cart, catalog, sane);
    reload(&cart, catalog);
});

fn sku_text(sku: &Sku) -> String {
    match sku {
        Sku::Catalog(i) => PRODUCTS[usize::from(*i) % PRODUCTS.len()].sku.clone(),
        Sku::Raw(raw) => raw.clone(),
    }
}

fn code_text(code: &Code) -> String {
    match code {
        Code::Welcome => "WELCOME10".into(),
        Code::FiveOff => "FIVEOFF".into(),
        Code::Sloppy => "  welcome10 ".into(),
        Code::Raw(raw) => raw.clone(),
    }
}

fn check_limits(cart: &Cart, catalog: &CatalogSnapshot) {
    assert!(cart.lines.len() <= MAX_LINES, "{} lines", cart.lines.len());
    for (i, line) in cart.lines.iter().enumerate() {
        assert!((1..=MAX_QUANTITY).contains(&line.quantity), "{line:?}");
        assert!(
            cart.lines[..i].iter().all(|l| l.sku != line.sku),
            "duplicate line {line:?}"
        );
        // Lines only ever come from the catalog, in stock, in this currency.
        let product = catalog
            .by_sku(&line.sku)
            .expect("a line's SKU is in the catalog");
        assert!(
            line.quantity <= product.stock,
            "{line:?} over stock {}",
            product.stock
        );
        assert!(product.price(cart.currency).is_some(), "{line:?}");
    }
    if let Some(code) = &cart.code {
        assert!(code.len() <= MAX_CODE_BYTES, "{code:?}");
        assert!(
            catalog
                .promotions()
                .iter()
                .any(|p| p.code.as_ref() == Some(code)),
            "code {code:?} matches no promotion"
        );
    }
}

/// The cart signs into a token the keyring accepts, which loads back as the same cart.
fn reload(cart: &Cart, catalog: &CatalogSnapshot) {
    let token = RING
        .sign_cart(&cart.to_claims(catalog.version()), NOW, 3600)
        .expect("a cart signs");
    let claims = RING
        .verify_cart(&token, NOW)
        .unwrap_or_else(|e| panic!("the cart's own token is refused ({e}): {cart:?}"));
    assert_eq!(Cart::from_claims(claims), *cart);
}

fn check_pricing(cart: &Cart, catalog: &CatalogSnapshot, sane: bool) {
    let priced = match cart::price(cart, catalog) {
        Ok(priced) => priced,
        // Only promotions the catalog should not hold (percent out of range) may fail pricing.
        Err(e) => return assert!(!sane, "pricing failed: {e} for {cart:?}"),
    };
    let currency = cart.currency;
    let scale = currency.minor_units();
    let money = |m: &Money, what: &str| {
        assert_eq!(m.currency(), currency, "{what} in another currency");
        assert_eq!(m.amount().scale(), scale, "{what} {m:?} not in minor units");
    };
    let mut subtotal = Decimal::ZERO;
    for line in &priced.lines {
        money(&line.unit_price, "unit price");
        money(&line.line_total, "line total");
        assert!(line.unit_price.amount() >= Decimal::ZERO, "{line:?}");
        assert_eq!(
            line.line_total.amount(),
            line.unit_price.amount() * Decimal::from(line.quantity),
            "{line:?}"
        );
        subtotal += line.line_total.amount();
    }
    assert_eq!(
        priced.lines.len() + priced.unavailable.len(),
        cart.lines.len()
    );
    for (what, m) in [
        ("subtotal", &priced.subtotal),
        ("discount", &priced.discount),
        ("total", &priced.total),
    ] {
        money(m, what);
    }
    for applied in &priced.promotions {
        money(&applied.amount, "promotion");
    }
    assert_eq!(priced.subtotal.amount(), subtotal);
    assert_eq!(
        priced.total.amount(),
        priced.subtotal.amount() - priced.discount.amount()
    );
    if sane {
        assert!(priced.discount.amount() >= Decimal::ZERO, "{priced:?}");
        assert!(
            priced.discount.amount() <= priced.subtotal.amount(),
            "{priced:?}"
        );
        assert!(priced.total.amount() >= Decimal::ZERO, "{priced:?}");
        for applied in &priced.promotions {
            assert!(applied.amount.amount() > Decimal::ZERO, "{applied:?}");
        }
    }
}

/// Promotions the catalog ought to hold: percentages within 0–100, amounts not negative.
fn is_sane(spec: &PromoSpec) -> bool {
    match spec.kind {
        KindSpec::Percentage(p) => (0..=10_000).contains(&p),
        KindSpec::Fixed(off, min) => off >= 0 && min >= 0,
        KindSpec::BuyXGetY(..) => true,
    }
}

fn custom_catalog(specs: &[PromoSpec]) -> Option<CatalogSnapshot> {
    let currencies: Vec<Currency> = CURRENCIES
        .iter()
        .map(|c| Currency::parse(c).expect("known currency"))
        .collect();
    let promotions = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| Promotion {
            id: format!("promo-{i}"),
            description: format!("{spec:?}"),
            kind: match spec.kind {
                KindSpec::Percentage(p) => PromotionKind::Percentage {
                    percent: Decimal::new(i64::from(p), 2),
                },
                KindSpec::Fixed(off, min) => PromotionKind::FixedAmount {
                    amounts: currencies
                        .iter()
                        .map(|&c| Money::from_minor_units(off, c))
                        .collect(),
                    min_subtotal: currencies
                        .iter()
                        .map(|&c| Money::from_minor_units(min, c))
                        .collect(),
                },
                KindSpec::BuyXGetY(buy, get) => PromotionKind::BuyXGetY { buy, get },
            },
            scope: match spec.scope {
                ScopeSpec::All => Scope::All,
                ScopeSpec::Category(i) => Scope::Category {
                    path: CATEGORIES[usize::from(i) % CATEGORIES.len()].into(),
                },
                ScopeSpec::Tag(i) => Scope::Tag {
                    tag: TAGS[usize::from(i) % TAGS.len()].into(),
                },
                ScopeSpec::Sku(i) => Scope::Sku {
                    sku: PRODUCTS[usize::from(i) % PRODUCTS.len()].sku.clone(),
                },
            },
            code: spec
                .code
                .then(|| ["WELCOME10", "FIVEOFF"][i % 2].to_owned()),
        })
        .collect();
    CatalogSnapshot::build_with_promotions(2, PRODUCTS.clone(), promotions).ok()
}
