//! Segment e-commerce v2 analytics events: validation, enrichment and de-duplication ids.
//!
//! Storefront pages and apps send `track` and `page` calls shaped the way analytics.js,
//! analytics-node and Segment's mobile SDKs produce them. The edge checks each call against the
//! e-commerce v2 spec with [`parse_track`] (or [`parse_track_owned`], which moves strings out of
//! the JSON instead of copying them), collecting *every* problem as a [`FieldError`] with a
//! dotted path so a client sees them all at once, then adds what only the edge knows with
//! [`enrich`] before forwarding the [`EnrichedEvent`] as JSON to the origin. [`event_id`] gives
//! the de-duplication key: the client's `messageId`, else a hash of the event's content.
//!
//! Key choices:
//! - money is read exactly from the JSON literal into [`Decimal`] (serde_json's
//!   `arbitrary_precision` keeps the number's text), never through `f64`, and is written back
//!   as a string so no consumer can round it;
//! - `context.ip` is accepted but never stored anywhere (privacy), and neither are other
//!   personal fields such as `context.traits` or share recipients;
//! - unknown keys are ignored because real clients add many, but sizes are capped so the work
//!   per event stays bounded;
//! - nothing here reads a clock or does I/O: the receive time comes in through [`Enrichment`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

pub use crate::money::Currency;

/// Longest identifier (`anonymousId`, `userId`, `messageId`, `product_id`, …) in characters;
/// longer ones are almost always a client bug and would bloat de-duplication keys.
pub const MAX_ID_CHARS: usize = 128;
/// Longest free-text string in characters, bounding memory per event.
pub const MAX_STRING_CHARS: usize = 1024;
/// Most keys accepted in one `properties` object (and in one product), bounding work per event.
pub const MAX_PROPERTY_KEYS: usize = 64;
/// Most items accepted in a `products` (or `filters`/`sorts`) array.
pub const MAX_PRODUCTS: usize = 100;
/// Largest accepted `quantity`; anything above is treated as a client bug.
pub const MAX_QUANTITY: u32 = 10_000;
/// Largest accepted money amount (10^15), far above any real order even in small-unit
/// currencies, so absurd values are refused instead of poisoning revenue reports.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0xA4C6_8000, 0x0003_8D7E, 0, false, 0);
/// How far in the future an event timestamp may be before it is treated as a bad client clock.
pub const FUTURE_TOLERANCE: Duration = Duration::minutes(5);

const MSG_ID: &str = "must be a non-empty string of at most 128 characters";
const MSG_TEXT: &str = "must be a string of at most 1024 characters";
const MSG_OBJECT: &str = "must be an object";
const MSG_MONEY: &str = "must be a non-negative decimal";
const MSG_MONEY_RANGE: &str = "must be a non-negative decimal no larger than 1000000000000000";
const MSG_MONEY_PRECISION: &str = "must be a non-negative decimal with at most 28 decimal places";
const MSG_QUANTITY: &str = "must be an integer from 1 to 10000";
const MSG_POSITION: &str = "must be an integer from 0 to 1000000";
const MSG_STEP: &str = "must be an integer from 1 to 1000";
const MSG_CURRENCY: &str = "must be an ISO 4217 currency code, upper case";
const MSG_TIMESTAMP: &str = "must be an RFC 3339 timestamp";
const MSG_ARRAY: &str = "must be an array of at most 100 items";
const MSG_KEYS: &str = "must have at most 64 keys";
const MSG_EVENT: &str = "is not a Segment e-commerce v2 event";
const MSG_TYPE: &str = "must be \"track\" or \"page\"";
const MSG_REQUIRED: &str = "is required";

// ---------------------------------------------------------------------------------------------
// Event names
// ---------------------------------------------------------------------------------------------

/// The Segment e-commerce v2 events a storefront emits, plus [`EventName::PageViewed`] for
/// `page` calls; a closed set so downstream code can match exhaustively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventName {
    /// "Products Searched".
    ProductsSearched,
    /// "Product List Viewed".
    ProductListViewed,
    /// "Product List Filtered".
    ProductListFiltered,
    /// "Promotion Viewed".
    PromotionViewed,
    /// "Promotion Clicked".
    PromotionClicked,
    /// "Product Clicked".
    ProductClicked,
    /// "Product Viewed".
    ProductViewed,
    /// "Product Added".
    ProductAdded,
    /// "Product Removed".
    ProductRemoved,
    /// "Cart Viewed".
    CartViewed,
    /// "Checkout Started".
    CheckoutStarted,
    /// "Checkout Step Viewed".
    CheckoutStepViewed,
    /// "Checkout Step Completed".
    CheckoutStepCompleted,
    /// "Payment Info Entered".
    PaymentInfoEntered,
    /// "Order Updated".
    OrderUpdated,
    /// "Order Completed".
    OrderCompleted,
    /// "Order Refunded".
    OrderRefunded,
    /// "Order Cancelled".
    OrderCancelled,
    /// "Coupon Entered".
    CouponEntered,
    /// "Coupon Applied".
    CouponApplied,
    /// "Coupon Denied".
    CouponDenied,
    /// "Coupon Removed".
    CouponRemoved,
    /// "Product Added to Wishlist".
    ProductAddedToWishlist,
    /// "Product Removed from Wishlist".
    ProductRemovedFromWishlist,
    /// "Wishlist Product Added to Cart".
    WishlistProductAddedToCart,
    /// "Product Shared".
    ProductShared,
    /// "Cart Shared".
    CartShared,
    /// "Product Reviewed".
    ProductReviewed,
    /// "Page Viewed": produced only from `type: "page"` calls, never accepted as a `track`
    /// event name, because it is not part of the e-commerce v2 spec.
    PageViewed,
}

/// Which typed property set an event carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Search,
    ProductList,
    Promotion,
    Product,
    Cart,
    Order,
    CheckoutStep,
    Coupon,
    Page,
}

impl EventName {
    /// Every e-commerce v2 event name, in spec order (excludes [`EventName::PageViewed`]).
    pub const ECOMMERCE: [EventName; 28] = [
        EventName::ProductsSearched,
        EventName::ProductListViewed,
        EventName::ProductListFiltered,
        EventName::PromotionViewed,
        EventName::PromotionClicked,
        EventName::ProductClicked,
        EventName::ProductViewed,
        EventName::ProductAdded,
        EventName::ProductRemoved,
        EventName::CartViewed,
        EventName::CheckoutStarted,
        EventName::CheckoutStepViewed,
        EventName::CheckoutStepCompleted,
        EventName::PaymentInfoEntered,
        EventName::OrderUpdated,
        EventName::OrderCompleted,
        EventName::OrderRefunded,
        EventName::OrderCancelled,
        EventName::CouponEntered,
        EventName::CouponApplied,
        EventName::CouponDenied,
        EventName::CouponRemoved,
        EventName::ProductAddedToWishlist,
        EventName::ProductRemovedFromWishlist,
        EventName::WishlistProductAddedToCart,
        EventName::ProductShared,
        EventName::CartShared,
        EventName::ProductReviewed,
    ];

    /// The exact spec name, as clients send it in `event` and as the origin expects it.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventName::ProductsSearched => "Products Searched",
            EventName::ProductListViewed => "Product List Viewed",
            EventName::ProductListFiltered => "Product List Filtered",
            EventName::PromotionViewed => "Promotion Viewed",
            EventName::PromotionClicked => "Promotion Clicked",
            EventName::ProductClicked => "Product Clicked",
            EventName::ProductViewed => "Product Viewed",
            EventName::ProductAdded => "Product Added",
            EventName::ProductRemoved => "Product Removed",
            EventName::CartViewed => "Cart Viewed",
            EventName::CheckoutStarted => "Checkout Started",
            EventName::CheckoutStepViewed => "Checkout Step Viewed",
            EventName::CheckoutStepCompleted => "Checkout Step Completed",
            EventName::PaymentInfoEntered => "Payment Info Entered",
            EventName::OrderUpdated => "Order Updated",
            EventName::OrderCompleted => "Order Completed",
            EventName::OrderRefunded => "Order Refunded",
            EventName::OrderCancelled => "Order Cancelled",
            EventName::CouponEntered => "Coupon Entered",
            EventName::CouponApplied => "Coupon Applied",
            EventName::CouponDenied => "Coupon Denied",
            EventName::CouponRemoved => "Coupon Removed",
            EventName::ProductAddedToWishlist => "Product Added to Wishlist",
            EventName::ProductRemovedFromWishlist => "Product Removed from Wishlist",
            EventName::WishlistProductAddedToCart => "Wishlist Product Added to Cart",
            EventName::ProductShared => "Product Shared",
            EventName::CartShared => "Cart Shared",
            EventName::ProductReviewed => "Product Reviewed",
            EventName::PageViewed => "Page Viewed",
        }
    }

    /// Parses an exact e-commerce v2 spec name (case-sensitive, as the spec and SDKs spell
    /// them); `None` for anything else, including "Page Viewed", which is not a `track` event.
    pub fn from_spec_name(name: &str) -> Option<EventName> {
        let parsed = match name {
            "Products Searched" => EventName::ProductsSearched,
            "Product List Viewed" => EventName::ProductListViewed,
            "Product List Filtered" => EventName::ProductListFiltered,
            "Promotion Viewed" => EventName::PromotionViewed,
            "Promotion Clicked" => EventName::PromotionClicked,
            "Product Clicked" => EventName::ProductClicked,
            "Product Viewed" => EventName::ProductViewed,
            "Product Added" => EventName::ProductAdded,
            "Product Removed" => EventName::ProductRemoved,
            "Cart Viewed" => EventName::CartViewed,
            "Checkout Started" => EventName::CheckoutStarted,
            "Checkout Step Viewed" => EventName::CheckoutStepViewed,
            "Checkout Step Completed" => EventName::CheckoutStepCompleted,
            "Payment Info Entered" => EventName::PaymentInfoEntered,
            "Order Updated" => EventName::OrderUpdated,
            "Order Completed" => EventName::OrderCompleted,
            "Order Refunded" => EventName::OrderRefunded,
            "Order Cancelled" => EventName::OrderCancelled,
            "Coupon Entered" => EventName::CouponEntered,
            "Coupon Applied" => EventName::CouponApplied,
            "Coupon Denied" => EventName::CouponDenied,
            "Coupon Removed" => EventName::CouponRemoved,
            "Product Added to Wishlist" => EventName::ProductAddedToWishlist,
            "Product Removed from Wishlist" => EventName::ProductRemovedFromWishlist,
            "Wishlist Product Added to Cart" => EventName::WishlistProductAddedToCart,
            "Product Shared" => EventName::ProductShared,
            "Cart Shared" => EventName::CartShared,
            "Product Reviewed" => EventName::ProductReviewed,
            _ => return None,
        };
        Some(parsed)
    }

    const fn family(self) -> Family {
        match self {
            EventName::ProductsSearched => Family::Search,
            EventName::ProductListViewed | EventName::ProductListFiltered => Family::ProductList,
            EventName::PromotionViewed | EventName::PromotionClicked => Family::Promotion,
            EventName::ProductClicked
            | EventName::ProductViewed
            | EventName::ProductAdded
            | EventName::ProductRemoved
            | EventName::ProductAddedToWishlist
            | EventName::ProductRemovedFromWishlist
            | EventName::WishlistProductAddedToCart
            | EventName::ProductShared
            | EventName::ProductReviewed => Family::Product,
            EventName::CartViewed | EventName::CartShared => Family::Cart,
            EventName::CheckoutStarted
            | EventName::OrderUpdated
            | EventName::OrderCompleted
            | EventName::OrderRefunded
            | EventName::OrderCancelled => Family::Order,
            EventName::CheckoutStepViewed
            | EventName::CheckoutStepCompleted
            | EventName::PaymentInfoEntered => Family::CheckoutStep,
            EventName::CouponEntered
            | EventName::CouponApplied
            | EventName::CouponDenied
            | EventName::CouponRemoved => Family::Coupon,
            EventName::PageViewed => Family::Page,
        }
    }

    /// Events the spec ties to one product, so they need `product_id` or `sku`.
    const fn needs_product_ref(self) -> bool {
        matches!(
            self,
            EventName::ProductViewed
                | EventName::ProductClicked
                | EventName::ProductAdded
                | EventName::ProductRemoved
        )
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is neither an e-commerce v2 event nor "Page Viewed"; it deliberately does not
/// echo the input, which may be arbitrary client text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a Segment e-commerce v2 event")]
pub struct UnknownEventName;

impl FromStr for EventName {
    type Err = UnknownEventName;

    /// Accepts every [`EventName::as_str`] output, including "Page Viewed", so serialized
    /// [`EnrichedEvent`]s read back; use [`EventName::from_spec_name`] for client input.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == EventName::PageViewed.as_str() {
            return Ok(EventName::PageViewed);
        }
        EventName::from_spec_name(s).ok_or(UnknownEventName)
    }
}

impl Serialize for EventName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Currency and exact decimals
// ---------------------------------------------------------------------------------------------

/// Why a numeric literal could not be read exactly into a [`Decimal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExactDecimalError {
    /// Not a plain decimal literal (`NaN`, `Infinity`, `1,5`, `""`, …).
    #[error("not a decimal number")]
    Syntax,
    /// More fractional digits than a `Decimal` holds (28), and rounding would change the value.
    #[error("more than 28 significant decimal places")]
    TooPrecise,
    /// Magnitude beyond what a `Decimal` holds.
    #[error("number out of range")]
    OutOfRange,
}

/// Reads a JSON-number-shaped literal (`19.99`, `-3`, `1e2`, `2.5E-3`, leading zeros allowed)
/// exactly into a [`Decimal`], never through `f64`, so `19.99` is 19.99 and `1e2` is 100.
/// Trailing zeros are kept as scale where they fit (`19.90` stays 19.90) and dropped only when
/// needed to fit; digits that would have to be rounded away are an error instead.
pub fn parse_exact_decimal(literal: &str) -> Result<Decimal, ExactDecimalError> {
    // Largest mantissa we keep accumulating into before only zeros may follow.
    const ACC_LIMIT: u128 = 10u128.pow(37);
    const MAX_MANTISSA: u128 = (1u128 << 96) - 1;
    const MAX_SCALE: i64 = 28;

    let bytes = literal.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };

    let mut mantissa: u128 = 0;
    // value = mantissa * 10^exp10
    let mut exp10: i64 = 0;
    let mut saw_digit = false;
    let mut in_fraction = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'0'..=b'9' => {
                saw_digit = true;
                let digit = u128::from(b - b'0');
                if mantissa < ACC_LIMIT {
                    mantissa = mantissa * 10 + digit;
                    if in_fraction {
                        exp10 = exp10.saturating_sub(1);
                    }
                } else if digit != 0 {
                    // A significant digit beyond 37: a Decimal (29 digits) cannot hold it.
                    return Err(if in_fraction {
                        ExactDecimalError::TooPrecise
                    } else {
                        ExactDecimalError::OutOfRange
                    });
                } else if !in_fraction {
                    // A zero we cannot accumulate in the integer part still scales the value.
                    exp10 = exp10.saturating_add(1);
                }
                // A surplus trailing zero in the fraction changes nothing: drop it.
            }
            b'.' if !in_fraction && saw_digit => {
                in_fraction = true;
                // A digit must follow the point, as in JSON.
                if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    return Err(ExactDecimalError::Syntax);
                }
            }
            b'e' | b'E' if saw_digit => break,
            _ => return Err(ExactDecimalError::Syntax),
        }
        i += 1;
    }
    if !saw_digit {
        return Err(ExactDecimalError::Syntax);
    }
    if bytes.get(i).is_some_and(|b| matches!(b, b'e' | b'E')) {
        i += 1;
        let exp_negative = match bytes.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let mut exponent: i64 = 0;
        let mut saw_exp_digit = false;
        while let Some(&b) = bytes.get(i) {
            if !b.is_ascii_digit() {
                return Err(ExactDecimalError::Syntax);
            }
            saw_exp_digit = true;
            // Saturate: anything this large is out of range or all-zero anyway.
            exponent = (exponent * 10 + i64::from(b - b'0')).min(1_000_000_000);
            i += 1;
        }
        if !saw_exp_digit {
            return Err(ExactDecimalError::Syntax);
        }
        exp10 = if exp_negative {
            exp10.saturating_sub(exponent)
        } else {
            exp10.saturating_add(exponent)
        };
    }

    if mantissa == 0 {
        let scale = exp10.clamp(-MAX_SCALE, 0).unsigned_abs();
        return Decimal::try_from_i128_with_scale(0, scale as u32)
            .map_err(|_| ExactDecimalError::OutOfRange);
    }
    // Too many fractional digits: drop trailing zeros, which does not change the value.
    while exp10 < -MAX_SCALE && mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exp10 += 1;
    }
    if exp10 < -MAX_SCALE {
        return Err(ExactDecimalError::TooPrecise);
    }
    while exp10 > 0 {
        mantissa = mantissa
            .checked_mul(10)
            .filter(|m| *m <= MAX_MANTISSA)
            .ok_or(ExactDecimalError::OutOfRange)?;
        exp10 -= 1;
    }
    let mut scale = exp10.unsigned_abs();
    while mantissa > MAX_MANTISSA && scale > 0 && mantissa.is_multiple_of(10) {
        mantissa /= 10;
        scale -= 1;
    }
    if mantissa > MAX_MANTISSA {
        return Err(if scale > 0 {
            ExactDecimalError::TooPrecise
        } else {
            ExactDecimalError::OutOfRange
        });
    }
    // Both casts are in range: mantissa < 2^96 and scale <= 28.
    let signed = if negative {
        -(mantissa as i128)
    } else {
        mantissa as i128
    };
    Decimal::try_from_i128_with_scale(signed, scale as u32)
        .map_err(|_| ExactDecimalError::OutOfRange)
}

// ---------------------------------------------------------------------------------------------
// Typed properties
// ---------------------------------------------------------------------------------------------

/// One product as the spec describes it, inside product events or `products` arrays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Product {
    /// Database id of the product.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// Stock keeping unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// Product category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Product name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Brand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Variant (size, colour, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Unit price, exact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    /// Units, 1..=[`MAX_QUANTITY`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    /// Coupon applied to this product.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
    /// Position in the list the product was shown in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// Product page URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Product image URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

/// Properties of the single-product events (viewed, clicked, added, removed, wishlist, shared,
/// reviewed); the product is nested rather than flattened so numbers survive serde.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProductEventProperties {
    /// The product the event is about.
    pub product: Product,
    /// Currency of `price`; "USD" when the event names none.
    pub currency: Currency,
    /// Cart the product went into or left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cart_id: Option<String>,
    /// Wishlist id for the wishlist events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wishlist_id: Option<String>,
    /// Wishlist name for the wishlist events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wishlist_name: Option<String>,
    /// Channel for "Product Shared" (the recipient and message are personal and not kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_via: Option<String>,
    /// Review id for "Product Reviewed" (the review text is not kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_id: Option<String>,
    /// Star rating for "Product Reviewed".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rating: Option<Decimal>,
}

/// A `filters`/`sorts` entry of "Product List Filtered".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListFacet {
    /// What is filtered or sorted on (JSON `type`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The filter value or sort direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Properties of "Product List Viewed" and "Product List Filtered".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProductListProperties {
    /// Id of the list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_id: Option<String>,
    /// Category the list shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Products shown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<Product>,
    /// Filters applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<ListFacet>,
    /// Sorts applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sorts: Vec<ListFacet>,
    /// Currency of the product prices.
    pub currency: Currency,
}

/// Properties of "Products Searched".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchProperties {
    /// The search text (required by the spec).
    pub query: String,
}

/// Properties of "Promotion Viewed" and "Promotion Clicked".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromotionProperties {
    /// Promotion id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion_id: Option<String>,
    /// Creative shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creative: Option<String>,
    /// Promotion name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Slot the promotion was shown in (text in the spec, e.g. "home_banner_top").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

/// Properties of "Cart Viewed" and "Cart Shared".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CartProperties {
    /// Cart id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cart_id: Option<String>,
    /// Products in the cart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<Product>,
    /// Currency of the product prices.
    pub currency: Currency,
    /// Channel for "Cart Shared" (recipients are personal and not kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_via: Option<String>,
}

/// Properties of checkout and order events (started, updated, completed, refunded, cancelled).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderProperties {
    /// Order id (required for "Order Completed").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Checkout id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<String>,
    /// Store or affiliation the order came through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affiliation: Option<String>,
    /// Total after discounts, with shipping and tax.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<Decimal>,
    /// Total after discounts, before shipping and tax.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtotal: Option<Decimal>,
    /// Revenue attributed to the order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue: Option<Decimal>,
    /// Shipping cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping: Option<Decimal>,
    /// Tax.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax: Option<Decimal>,
    /// Discount amount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount: Option<Decimal>,
    /// Coupon code used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
    /// Currency of every amount; "USD" when the event names none.
    pub currency: Currency,
    /// Products in the order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<Product>,
}

/// Properties of "Checkout Step Viewed", "Checkout Step Completed" and "Payment Info Entered".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckoutStepProperties {
    /// Checkout id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<String>,
    /// Order id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Step number, 1-based.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// Chosen shipping method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping_method: Option<String>,
    /// Chosen payment method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<String>,
}

/// Properties of the coupon events (entered, applied, denied, removed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CouponProperties {
    /// Order id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Cart id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cart_id: Option<String>,
    /// Coupon id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon_id: Option<String>,
    /// Coupon name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon_name: Option<String>,
    /// Discount granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount: Option<Decimal>,
    /// Why a coupon was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Currency of `discount`.
    pub currency: Currency,
}

/// Properties of a `page` call (as analytics.js fills them), turned into "Page Viewed".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PageProperties {
    /// Page name: the call's top-level `name`, else `properties.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Full URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Path part of the URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Referrer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// Query string, with its leading `?`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// Document title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// The typed properties of an event, one variant per event family; externally tagged
/// (`{"order": {...}}`) because serde's buffered enum forms break exact JSON numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Properties {
    /// "Products Searched".
    Search(SearchProperties),
    /// "Product List Viewed" / "Product List Filtered".
    ProductList(ProductListProperties),
    /// "Promotion Viewed" / "Promotion Clicked".
    Promotion(PromotionProperties),
    /// Single-product events.
    Product(ProductEventProperties),
    /// "Cart Viewed" / "Cart Shared".
    Cart(CartProperties),
    /// Checkout and order events.
    Order(OrderProperties),
    /// Checkout steps and "Payment Info Entered".
    CheckoutStep(CheckoutStepProperties),
    /// Coupon events.
    Coupon(CouponProperties),
    /// "Page Viewed" from a `page` call.
    Page(PageProperties),
}

// ---------------------------------------------------------------------------------------------
// Envelope
// ---------------------------------------------------------------------------------------------

/// `context.page` as analytics.js fills it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageContext {
    /// Full URL.
    pub url: Option<String>,
    /// Path part of the URL.
    pub path: Option<String>,
    /// Referrer.
    pub referrer: Option<String>,
    /// Query string, with its leading `?`.
    pub search: Option<String>,
    /// Document title.
    pub title: Option<String>,
}

/// Marketing campaign attribution (the `utm_*` parameters), from `context.campaign` or the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Campaign {
    /// `utm_source`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `utm_medium`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// `utm_campaign`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `utm_term`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    /// `utm_content`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl Campaign {
    /// True when no attribution is present, so a fallback source should be tried.
    pub fn is_empty(&self) -> bool {
        self.source.is_none()
            && self.medium.is_none()
            && self.name.is_none()
            && self.term.is_none()
            && self.content.is_none()
    }
}

/// The parts of `context` the storefront uses. There is deliberately no `ip` field: the client
/// IP is accepted on input but dropped during parsing, so it cannot leak further.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// `context.userAgent`.
    pub user_agent: Option<String>,
    /// `context.locale`, e.g. "en-US".
    pub locale: Option<String>,
    /// `context.page`.
    pub page: Option<PageContext>,
    /// `context.campaign`.
    pub campaign: Option<Campaign>,
}

/// A validated `track` (or `page`) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackEvent {
    /// Which event this is.
    pub name: EventName,
    /// `anonymousId`; at least one of it and `user_id` is present.
    pub anonymous_id: Option<String>,
    /// `userId`.
    pub user_id: Option<String>,
    /// `messageId`, the client's de-duplication key when it sends one.
    pub message_id: Option<String>,
    /// `timestamp`: when the event happened by the client's clock.
    pub timestamp: Option<OffsetDateTime>,
    /// `originalTimestamp`, used with `sent_at` to correct client clock skew.
    pub original_timestamp: Option<OffsetDateTime>,
    /// `sentAt`: when the client sent the batch.
    pub sent_at: Option<OffsetDateTime>,
    /// Selected `context` fields.
    pub context: Context,
    /// Typed properties for the event's family.
    pub properties: Properties,
}

/// One validation problem, addressed by a dotted path such as
/// `properties.products[2].price`, so clients can fix every problem in one round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the offending field (`$` for the whole value).
    pub field: String,
    /// What is wrong, phrased to follow the path.
    pub message: String,
}

impl FieldError {
    /// Builds an error; mostly for callers reporting problems around events (e.g. the batch).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// A dotted path built on the stack and rendered only when an error needs it.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }

    fn write(&self, out: &mut String) {
        match *self {
            Path::Root => {}
            Path::Key(parent, key) => {
                parent.write(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Index(parent, index) => {
                parent.write(out);
                // Writing to a String cannot fail.
                let _ = write!(out, "[{index}]");
            }
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        if out.is_empty() {
            out.push('$');
        }
        out
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: &Path<'_>, message: &str) {
        self.0.push(FieldError {
            field: path.render(),
            message: message.to_owned(),
        });
    }
}

/// True when `s` has at most `max` characters; the byte length answers most cases for free.
fn fits(s: &str, max: usize) -> bool {
    s.len() <= max || (s.len() <= max * 4 && s.chars().count() <= max)
}

/// A JSON node the validator walks. Implemented for `&Value`, which copies the strings it
/// keeps, and for `Value`, which moves them out instead; one walker serves both, so the owned
/// entry point ([`parse_track_owned`]) costs no string copies.
trait Node: Sized {
    type Key: AsRef<str>;
    type Entries: ExactSizeIterator<Item = (Self::Key, Self)>;
    type Items: ExactSizeIterator<Item = Self>;

    fn value(&self) -> &Value;
    /// The string, when this node is one.
    fn into_string(self) -> Option<String>;
    /// The entries, when this node is an object.
    fn into_entries(self) -> Option<Self::Entries>;
    /// The items, when this node is an array.
    fn into_items(self) -> Option<Self::Items>;
}

impl<'a> Node for &'a Value {
    type Key = &'a String;
    type Entries = serde_json::map::Iter<'a>;
    type Items = std::slice::Iter<'a, Value>;

    fn value(&self) -> &Value {
        self
    }

    fn into_string(self) -> Option<String> {
        self.as_str().map(str::to_owned)
    }

    fn into_entries(self) -> Option<Self::Entries> {
        self.as_object().map(Map::iter)
    }

    fn into_items(self) -> Option<Self::Items> {
        self.as_array().map(|items| items.iter())
    }
}

impl Node for Value {
    type Key = String;
    type Entries = serde_json::map::IntoIter;
    type Items = std::vec::IntoIter<Value>;

    fn value(&self) -> &Value {
        self
    }

    fn into_string(self) -> Option<String> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    fn into_entries(self) -> Option<Self::Entries> {
        match self {
            Value::Object(map) => Some(map.into_iter()),
            _ => None,
        }
    }

    fn into_items(self) -> Option<Self::Items> {
        match self {
            Value::Array(items) => Some(items.into_iter()),
            _ => None,
        }
    }
}

fn read_text<N: Node>(v: N, path: &Path<'_>, errs: &mut Errors) -> Option<String> {
    match v.value() {
        Value::Null => None,
        Value::String(s) if fits(s, MAX_STRING_CHARS) => v.into_string(),
        _ => {
            errs.push(path, MSG_TEXT);
            None
        }
    }
}

/// Text that some clients send as a number (e.g. a promotion position); kept as its literal.
fn read_label<N: Node>(v: N, path: &Path<'_>, errs: &mut Errors) -> Option<String> {
    match v.value() {
        Value::Number(n) if n.as_str().len() <= MAX_STRING_CHARS => Some(n.as_str().to_owned()),
        _ => read_text(v, path, errs),
    }
}

/// Ids: non-empty strings, or numbers (many back ends send numeric ids) kept as their literal.
fn read_id<N: Node>(v: N, path: &Path<'_>, errs: &mut Errors) -> Option<String> {
    match v.value() {
        Value::Null => None,
        Value::String(s) if !s.is_empty() && fits(s, MAX_ID_CHARS) => v.into_string(),
        Value::Number(n) if n.as_str().len() <= MAX_ID_CHARS => Some(n.as_str().to_owned()),
        _ => {
            errs.push(path, MSG_ID);
            None
        }
    }
}

/// The literal text of a number given as a JSON number or a numeric string.
fn numeric_literal(v: &Value) -> Option<&str> {
    match v {
        Value::Number(n) => Some(n.as_str()),
        Value::String(s) => Some(s),
        _ => None,
    }
}

fn read_money(v: &Value, path: &Path<'_>, errs: &mut Errors) -> Option<Decimal> {
    if v.is_null() {
        return None;
    }
    let message = match numeric_literal(v).map(parse_exact_decimal) {
        Some(Ok(d)) if d.is_sign_negative() && !d.is_zero() => MSG_MONEY,
        Some(Ok(d)) if d > MAX_AMOUNT => MSG_MONEY_RANGE,
        Some(Ok(mut d)) => {
            // "-0" is zero; keep the sign canonical.
            d.set_sign_positive(true);
            return Some(d);
        }
        Some(Err(ExactDecimalError::OutOfRange)) => MSG_MONEY_RANGE,
        Some(Err(ExactDecimalError::TooPrecise)) => MSG_MONEY_PRECISION,
        Some(Err(ExactDecimalError::Syntax)) | None => MSG_MONEY,
    };
    errs.push(path, message);
    None
}

fn read_integer(
    v: &Value,
    path: &Path<'_>,
    range: (u32, u32),
    message: &str,
    errs: &mut Errors,
) -> Option<u32> {
    if v.is_null() {
        return None;
    }
    let parsed = numeric_literal(v)
        .and_then(|s| parse_exact_decimal(s).ok())
        .filter(Decimal::is_integer)
        .and_then(|d| {
            let scale = d.scale();
            let whole = if scale == 0 {
                d.mantissa()
            } else {
                d.mantissa() / 10i128.pow(scale)
            };
            u32::try_from(whole).ok()
        })
        .filter(|n| (range.0..=range.1).contains(n));
    if parsed.is_none() {
        errs.push(path, message);
    }
    parsed
}

fn read_currency(v: &Value, path: &Path<'_>, errs: &mut Errors) -> Currency {
    match v {
        Value::Null => Currency::USD,
        Value::String(s) => Currency::parse(s).unwrap_or_else(|_| {
            errs.push(path, MSG_CURRENCY);
            Currency::USD
        }),
        _ => {
            errs.push(path, MSG_CURRENCY);
            Currency::USD
        }
    }
}

fn read_timestamp(v: &Value, path: &Path<'_>, errs: &mut Errors) -> Option<OffsetDateTime> {
    match v {
        Value::Null => None,
        Value::String(s) if s.len() <= 64 => {
            let parsed = OffsetDateTime::parse(s, &Rfc3339).ok();
            if parsed.is_none() {
                errs.push(path, MSG_TIMESTAMP);
            }
            parsed
        }
        _ => {
            errs.push(path, MSG_TIMESTAMP);
            None
        }
    }
}

/// The entries of an object node; `null` is absent, anything else an error.
fn read_object<N: Node>(v: N, path: &Path<'_>, errs: &mut Errors) -> Option<N::Entries> {
    if v.value().is_null() {
        return None;
    }
    let entries = v.into_entries();
    if entries.is_none() {
        errs.push(path, MSG_OBJECT);
    }
    entries
}

/// An array of objects, each read by `item`; non-objects and oversize arrays are errors.
fn read_objects<N: Node, T: Default>(
    v: N,
    path: &Path<'_>,
    errs: &mut Errors,
    item: fn(N::Entries, &Path<'_>, &mut Errors) -> T,
) -> Vec<T> {
    if v.value().is_null() {
        return Vec::new();
    }
    let items = match v.into_items() {
        Some(items) if items.len() <= MAX_PRODUCTS => items,
        _ => {
            errs.push(path, MSG_ARRAY);
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, entry) in items.enumerate() {
        let p = path.index(i);
        out.push(match entry.into_entries() {
            Some(entries) => {
                if entries.len() > MAX_PROPERTY_KEYS {
                    errs.push(&p, MSG_KEYS);
                }
                item(entries, &p, errs)
            }
            None => {
                errs.push(&p, MSG_OBJECT);
                T::default()
            }
        });
    }
    out
}

/// Reads one product field into `p`; hands the value back when `key` is not a product field.
fn product_field<N: Node>(
    p: &mut Product,
    key: &str,
    v: N,
    path: &Path<'_>,
    errs: &mut Errors,
) -> Option<N> {
    match key {
        "product_id" => p.product_id = read_id(v, path, errs),
        "sku" => p.sku = read_id(v, path, errs),
        "category" => p.category = read_text(v, path, errs),
        "name" => p.name = read_text(v, path, errs),
        "brand" => p.brand = read_text(v, path, errs),
        "variant" => p.variant = read_text(v, path, errs),
        "price" => p.price = read_money(v.value(), path, errs),
        "quantity" => {
            p.quantity = read_integer(v.value(), path, (1, MAX_QUANTITY), MSG_QUANTITY, errs);
        }
        "coupon" => p.coupon = read_text(v, path, errs),
        "position" => {
            p.position = read_integer(v.value(), path, (0, 1_000_000), MSG_POSITION, errs);
        }
        "url" => p.url = read_text(v, path, errs),
        "image_url" => p.image_url = read_text(v, path, errs),
        _ => return Some(v),
    }
    None
}

fn parse_product<N: Node>(entries: N::Entries, path: &Path<'_>, errs: &mut Errors) -> Product {
    let mut product = Product::default();
    for (k, v) in entries {
        let k = k.as_ref();
        product_field(&mut product, k, v, &path.key(k), errs);
    }
    product
}

fn parse_facet<N: Node>(entries: N::Entries, path: &Path<'_>, errs: &mut Errors) -> ListFacet {
    let mut facet = ListFacet::default();
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        match k {
            "type" => facet.kind = read_text(v, &p, errs),
            "value" => facet.value = read_label(v, &p, errs),
            _ => {}
        }
    }
    facet
}

fn parse_product_event<N: Node>(
    name: EventName,
    entries: N::Entries,
    path: &Path<'_>,
    errs: &mut Errors,
) -> ProductEventProperties {
    let mut out = ProductEventProperties::default();
    let mut has_ref = false;
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        if matches!(k, "product_id" | "sku") && !v.value().is_null() {
            has_ref = true;
        }
        let Some(v) = product_field(&mut out.product, k, v, &p, errs) else {
            continue;
        };
        match k {
            "currency" => out.currency = read_currency(v.value(), &p, errs),
            "cart_id" => out.cart_id = read_id(v, &p, errs),
            "wishlist_id" => out.wishlist_id = read_id(v, &p, errs),
            "wishlist_name" => out.wishlist_name = read_text(v, &p, errs),
            "share_via" => out.share_via = read_text(v, &p, errs),
            "review_id" => out.review_id = read_id(v, &p, errs),
            "rating" => out.rating = read_money(v.value(), &p, errs),
            _ => {}
        }
    }
    if name.needs_product_ref() && !has_ref {
        errs.push(&path.key("product_id"), "product_id or sku is required");
    }
    out
}

fn parse_product_list<N: Node>(
    entries: N::Entries,
    path: &Path<'_>,
    errs: &mut Errors,
) -> ProductListProperties {
    let mut out = ProductListProperties::default();
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        match k {
            "list_id" => out.list_id = read_id(v, &p, errs),
            "category" => out.category = read_text(v, &p, errs),
            "products" => out.products = read_objects(v, &p, errs, parse_product::<N>),
            "filters" => out.filters = read_objects(v, &p, errs, parse_facet::<N>),
            "sorts" => out.sorts = read_objects(v, &p, errs, parse_facet::<N>),
            "currency" => out.currency = read_currency(v.value(), &p, errs),
            _ => {}
        }
    }
    out
}

fn parse_search<N: Node>(
    entries: N::Entries,
    path: &Path<'_>,
    errs: &mut Errors,
) -> SearchProperties {
    let mut query = None;
    let mut seen = false;
    for (k, v) in entries {
        if k.as_ref() == "query" {
            seen = !v.value().is_null();
            query = read_text(v, &path.key("query"), errs);
        }
    }
    if !seen {
        errs.push(&path.key("query"), MSG_REQUIRED);
    }
    SearchProperties {
        query: query.unwrap_or_default(),
    }
}

fn parse_promotion<N: Node>(
    entries: N::Entries,
    path: &Path<'_>,
    errs: &mut Errors,
) -> PromotionProperties {
    let mut out = PromotionProperties::default();
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        match k {
            "promotion_id" => out.promotion_id = read_id(v, &p, errs),
            "creative" => out.creative = read_text(v, &p, errs),
            "name" => out.name = read_text(v, &p, errs),
            "position" => out.position = read_label(v, &p, errs),
            _ => {}
        }
    }
    out
}

fn parse_cart<N: Node>(entries: N::Entries, path: &Path<'_>, errs: &mut Errors) -> CartProperties {
    let mut out = CartProperties::default();
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        match k {
            "cart_id" => out.cart_id = read_id(v, &p, errs),
            "products" => out.products = read_objects(v, &p, errs, parse_product::<N>),
            "currency" => out.currency = read_currency(v.value(), &p, errs),
            "share_via" => out.share_via = read_text(v, &p, errs),
            _ => {}
        }
    }
    out
}

fn parse_order<N: Node>(
    name: EventName,
    entries: N::Entries,
    path: &Path<'_>,
    errs: &mut Errors,
) -> OrderProperties {
    let mut out = OrderProperties::default();
    let (mut has_order_id, mut has_amount) = (false, false);
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        let present = !v.value().is_null();
        match k {
            "order_id" => {
                has_order_id = present;
                out.order_id = read_id(v, &p, errs);
            }
            "checkout_id" => out.checkout_id = read_id(v, &p, errs),
            "affiliation" => out.affiliation = read_text(v, &p, errs),
            "total" => {
                has_amount |= present;
                out.total = read_money(v.value(), &p, errs);
            }
            "subtotal" => out.subtotal = read_money(v.value(), &p, errs),
            "revenue" => {
                has_amount |= present;
                out.revenue = read_money(v.value(), &p, errs);
            }
            "shipping" => out.shipping = read_money(v.value(), &p, errs),
            "tax" => out.tax = read_money(v.value(), &p, errs),
            "discount" => out.discount = read_money(v.value(), &p, errs),
            "coupon" => out.coupon = read_text(v, &p, errs),
            "currency" => out.currency = read_currency(v.value(), &p, errs),
            "products" => out.products = read_objects(v, &p, errs, parse_product::<N>),
            _ => {}
        }
    }
    if name == EventName::OrderCompleted {
        if !has_order_id {
            errs.push(&path.key("order_id"), MSG_REQUIRED);
        }
        if !has_amount {
            errs.push(&path.key("total"), "total or revenue is required");
        }
    }
    out
}

fn parse_checkout_step<N: Node>(
    entries: N::Entries,
    path: &Path<'_>,
    errs: &mut Errors,
) -> CheckoutStepProperties {
    let mut out = CheckoutStepProperties::default();
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        match k {
            "checkout_id" => out.checkout_id = read_id(v, &p, errs),
            "order_id" => out.order_id = read_id(v, &p, errs),
            "step" => out.step = read_integer(v.value(), &p, (1, 1000), MSG_STEP, errs),
            "shipping_method" => out.shipping_method = read_text(v, &p, errs),
            "payment_method" => out.payment_method = read_text(v, &p, errs),
            _ => {}
        }
    }
    out
}

fn parse_coupon<N: Node>(
    entries: N::Entries,
    path: &Path<'_>,
    errs: &mut Errors,
) -> CouponProperties {
    let mut out = CouponProperties::default();
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        match k {
            "order_id" => out.order_id = read_id(v, &p, errs),
            "cart_id" => out.cart_id = read_id(v, &p, errs),
            "coupon_id" => out.coupon_id = read_id(v, &p, errs),
            "coupon_name" => out.coupon_name = read_text(v, &p, errs),
            "discount" => out.discount = read_money(v.value(), &p, errs),
            "reason" => out.reason = read_text(v, &p, errs),
            "currency" => out.currency = read_currency(v.value(), &p, errs),
            _ => {}
        }
    }
    out
}

/// Reads the page fields shared by `context.page` and `page` call properties; `name` is
/// collected too, for page calls that put it in `properties`.
fn parse_page_fields<N: Node>(
    entries: N::Entries,
    path: &Path<'_>,
    errs: &mut Errors,
) -> PageProperties {
    let mut out = PageProperties::default();
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        match k {
            "name" => out.name = read_text(v, &p, errs),
            "url" => out.url = read_text(v, &p, errs),
            "path" => out.path = read_text(v, &p, errs),
            "referrer" => out.referrer = read_text(v, &p, errs),
            "search" => out.search = read_text(v, &p, errs),
            "title" => out.title = read_text(v, &p, errs),
            _ => {}
        }
    }
    out
}

fn parse_campaign<N: Node>(entries: N::Entries, path: &Path<'_>, errs: &mut Errors) -> Campaign {
    let mut out = Campaign::default();
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        match k {
            "source" => out.source = read_text(v, &p, errs),
            "medium" => out.medium = read_text(v, &p, errs),
            "name" => out.name = read_text(v, &p, errs),
            "term" => out.term = read_text(v, &p, errs),
            "content" => out.content = read_text(v, &p, errs),
            _ => {}
        }
    }
    out
}

fn parse_context<N: Node>(entries: N::Entries, path: &Path<'_>, errs: &mut Errors) -> Context {
    let mut out = Context::default();
    for (k, v) in entries {
        let k = k.as_ref();
        let p = path.key(k);
        match k {
            "userAgent" => out.user_agent = read_text(v, &p, errs),
            "locale" => out.locale = read_text(v, &p, errs),
            "page" => {
                out.page = read_object(v, &p, errs).map(|entries| {
                    let page = parse_page_fields::<N>(entries, &p, errs);
                    PageContext {
                        url: page.url,
                        path: page.path,
                        referrer: page.referrer,
                        search: page.search,
                        title: page.title,
                    }
                });
            }
            "campaign" => {
                out.campaign = read_object(v, &p, errs).map(|e| parse_campaign::<N>(e, &p, errs));
            }
            // "ip" is accepted and deliberately never read or kept; other keys (library,
            // traits, screen, …) are not needed here.
            _ => {}
        }
    }
    out
}

/// Reads the family-specific properties and applies the per-event required-field rules.
fn parse_properties<N: Node>(
    name: EventName,
    entries: N::Entries,
    page_name: Option<String>,
    path: &Path<'_>,
    errs: &mut Errors,
) -> Properties {
    match name.family() {
        Family::Search => Properties::Search(parse_search::<N>(entries, path, errs)),
        Family::ProductList => {
            Properties::ProductList(parse_product_list::<N>(entries, path, errs))
        }
        Family::Promotion => Properties::Promotion(parse_promotion::<N>(entries, path, errs)),
        Family::Product => Properties::Product(parse_product_event::<N>(name, entries, path, errs)),
        Family::Cart => Properties::Cart(parse_cart::<N>(entries, path, errs)),
        Family::Order => Properties::Order(parse_order::<N>(name, entries, path, errs)),
        Family::CheckoutStep => {
            Properties::CheckoutStep(parse_checkout_step::<N>(entries, path, errs))
        }
        Family::Coupon => Properties::Coupon(parse_coupon::<N>(entries, path, errs)),
        Family::Page => {
            let mut page = parse_page_fields::<N>(entries, path, errs);
            if page_name.is_some() {
                page.name = page_name;
            }
            Properties::Page(page)
        }
    }
}

/// Validates one `track` or `page` call (one element of a `{"batch": [...]}` request, or a
/// single call) against the Segment e-commerce v2 spec.
///
/// Every problem is collected, not just the first, each with a dotted path. `type` may be
/// absent or `"track"` (then `event` must be an exact spec name) or `"page"` (becomes
/// [`EventName::PageViewed`]); other call types are refused. JSON `null` counts as absent,
/// as analytics.js sends `"userId": null` for anonymous visitors. Unknown keys are ignored.
/// Copies the strings it keeps; [`parse_track_owned`] moves them instead.
pub fn parse_track(value: &Value) -> Result<TrackEvent, Vec<FieldError>> {
    parse_node(value)
}

/// [`parse_track`] for a value the caller owns (e.g. taken out of the `batch` array): the
/// strings kept in the event are moved out of the JSON rather than copied, which saves most of
/// the allocations on the per-event hot path.
pub fn parse_track_owned(value: Value) -> Result<TrackEvent, Vec<FieldError>> {
    parse_node(value)
}

fn parse_node<N: Node>(value: N) -> Result<TrackEvent, Vec<FieldError>> {
    let root = Path::Root;
    let Some(entries) = value.into_entries() else {
        return Err(vec![FieldError::new("$", "must be a JSON object")]);
    };
    let mut errs = Errors::default();

    let mut is_page = false;
    let mut type_ok = true;
    let mut has_identity = false;
    let mut event = None;
    let mut page_name = None;
    let mut anonymous_id = None;
    let mut user_id = None;
    let mut message_id = None;
    let mut timestamp = None;
    let mut original_timestamp = None;
    let mut sent_at = None;
    let mut context = Context::default();
    let mut properties = None;
    for (k, v) in entries {
        let k = k.as_ref();
        let p = root.key(k);
        match k {
            "type" => match v.value() {
                Value::Null => {}
                Value::String(s) if s == "track" => {}
                Value::String(s) if s == "page" => is_page = true,
                _ => {
                    errs.push(&p, MSG_TYPE);
                    type_ok = false;
                }
            },
            "event" => event = Some(v),
            "name" => page_name = Some(v),
            "anonymousId" => {
                has_identity |= !v.value().is_null();
                anonymous_id = read_id(v, &p, &mut errs);
            }
            "userId" => {
                has_identity |= !v.value().is_null();
                user_id = read_id(v, &p, &mut errs);
            }
            "messageId" => message_id = read_id(v, &p, &mut errs),
            "timestamp" => timestamp = read_timestamp(v.value(), &p, &mut errs),
            "originalTimestamp" => original_timestamp = read_timestamp(v.value(), &p, &mut errs),
            "sentAt" => sent_at = read_timestamp(v.value(), &p, &mut errs),
            "context" => {
                if let Some(entries) = read_object(v, &p, &mut errs) {
                    context = parse_context::<N>(entries, &p, &mut errs);
                }
            }
            "properties" => properties = Some(v),
            _ => {}
        }
    }

    let name = if !type_ok {
        None
    } else if is_page {
        Some(EventName::PageViewed)
    } else {
        let path = root.key("event");
        match event.as_ref().map(N::value) {
            None | Some(Value::Null) => {
                errs.push(&path, MSG_REQUIRED);
                None
            }
            Some(v) => {
                let parsed = v.as_str().and_then(EventName::from_spec_name);
                if parsed.is_none() {
                    errs.push(&path, MSG_EVENT);
                }
                parsed
            }
        }
    };
    let page_name = match page_name {
        Some(v) if is_page => read_text(v, &root.key("name"), &mut errs),
        _ => None,
    };

    if !has_identity {
        errs.push(
            &root.key("anonymousId"),
            "anonymousId or userId is required",
        );
    }

    let props_path = root.key("properties");
    let props_entries = match properties {
        None => Some(None),
        Some(v) if v.value().is_null() => Some(None),
        Some(v) => match v.into_entries() {
            Some(entries) => {
                if entries.len() > MAX_PROPERTY_KEYS {
                    errs.push(&props_path, MSG_KEYS);
                }
                Some(Some(entries))
            }
            None => {
                errs.push(&props_path, MSG_OBJECT);
                None
            }
        },
    };
    let properties = match (name, props_entries) {
        (Some(name), Some(Some(entries))) => Some(parse_properties::<N>(
            name,
            entries,
            page_name,
            &props_path,
            &mut errs,
        )),
        // No properties at all: read an empty object so the required-field rules apply.
        (Some(name), Some(None)) => Some(parse_properties::<Value>(
            name,
            Map::new().into_iter(),
            page_name,
            &props_path,
            &mut errs,
        )),
        _ => None,
    };

    match (name, properties) {
        (Some(name), Some(properties)) if errs.0.is_empty() => Ok(TrackEvent {
            name,
            anonymous_id,
            user_id,
            message_id,
            timestamp,
            original_timestamp,
            sent_at,
            context,
            properties,
        }),
        _ => {
            if errs.0.is_empty() {
                // Unreachable by construction; never return an empty error list.
                errs.push(&root, "is not a valid event");
            }
            Err(errs.0)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Event ids
// ---------------------------------------------------------------------------------------------

/// Feeds a length-prefixed, order-fixed encoding of typed values into SHA-256, so the hash
/// depends on values only (not on JSON key order, spacing, number spelling or extra keys).
struct Canon(Sha256);

impl Canon {
    fn tag(&mut self, tag: u8) {
        self.0.update([tag]);
    }

    /// LEB128 length or count: one byte for the usual short values, still unambiguous.
    fn len(&mut self, mut n: usize) {
        let mut buf = [0u8; 10];
        let mut used = 0;
        for slot in &mut buf {
            used += 1;
            if n < 0x80 {
                *slot = n as u8;
                break;
            }
            *slot = (n as u8 & 0x7f) | 0x80;
            n >>= 7;
        }
        self.0.update(buf.get(..used).unwrap_or_default());
    }

    fn str(&mut self, s: Option<&str>) {
        match s {
            None => self.tag(0),
            Some(s) => {
                self.tag(1);
                self.len(s.len());
                self.0.update(s.as_bytes());
            }
        }
    }

    fn dec(&mut self, d: Option<Decimal>) {
        match d {
            None => self.tag(0),
            Some(d) => {
                self.tag(1);
                // 19.9 and 19.90 are the same amount.
                self.0.update(d.normalize().serialize());
            }
        }
    }

    fn int(&mut self, n: Option<u32>) {
        match n {
            None => self.tag(0),
            Some(n) => {
                self.tag(1);
                self.0.update(n.to_le_bytes());
            }
        }
    }

    fn currency(&mut self, c: Currency) {
        self.0.update(c.code().as_bytes());
    }

    fn product(&mut self, p: &Product) {
        self.str(p.product_id.as_deref());
        self.str(p.sku.as_deref());
        self.str(p.category.as_deref());
        self.str(p.name.as_deref());
        self.str(p.brand.as_deref());
        self.str(p.variant.as_deref());
        self.dec(p.price);
        self.int(p.quantity);
        self.str(p.coupon.as_deref());
        self.int(p.position);
        self.str(p.url.as_deref());
        self.str(p.image_url.as_deref());
    }

    fn products(&mut self, products: &[Product]) {
        self.len(products.len());
        for p in products {
            self.product(p);
        }
    }

    fn facets(&mut self, facets: &[ListFacet]) {
        self.len(facets.len());
        for f in facets {
            self.str(f.kind.as_deref());
            self.str(f.value.as_deref());
        }
    }

    fn properties(&mut self, props: &Properties) {
        match props {
            Properties::Search(p) => {
                self.tag(1);
                self.str(Some(&p.query));
            }
            Properties::ProductList(p) => {
                self.tag(2);
                self.str(p.list_id.as_deref());
                self.str(p.category.as_deref());
                self.products(&p.products);
                self.facets(&p.filters);
                self.facets(&p.sorts);
                self.currency(p.currency);
            }
            Properties::Promotion(p) => {
                self.tag(3);
                self.str(p.promotion_id.as_deref());
                self.str(p.creative.as_deref());
                self.str(p.name.as_deref());
                self.str(p.position.as_deref());
            }
            Properties::Product(p) => {
                self.tag(4);
                self.product(&p.product);
                self.currency(p.currency);
                self.str(p.cart_id.as_deref());
                self.str(p.wishlist_id.as_deref());
                self.str(p.wishlist_name.as_deref());
                self.str(p.share_via.as_deref());
                self.str(p.review_id.as_deref());
                self.dec(p.rating);
            }
            Properties::Cart(p) => {
                self.tag(5);
                self.str(p.cart_id.as_deref());
                self.products(&p.products);
                self.currency(p.currency);
                self.str(p.share_via.as_deref());
            }
            Properties::Order(p) => {
                self.tag(6);
                self.str(p.order_id.as_deref());
                self.str(p.checkout_id.as_deref());
                self.str(p.affiliation.as_deref());
                self.dec(p.total);
                self.dec(p.subtotal);
                self.dec(p.revenue);
                self.dec(p.shipping);
                self.dec(p.tax);
                self.dec(p.discount);
                self.str(p.coupon.as_deref());
                self.currency(p.currency);
                self.products(&p.products);
            }
            Properties::CheckoutStep(p) => {
                self.tag(7);
                self.str(p.checkout_id.as_deref());
                self.str(p.order_id.as_deref());
                self.int(p.step);
                self.str(p.shipping_method.as_deref());
                self.str(p.payment_method.as_deref());
            }
            Properties::Coupon(p) => {
                self.tag(8);
                self.str(p.order_id.as_deref());
                self.str(p.cart_id.as_deref());
                self.str(p.coupon_id.as_deref());
                self.str(p.coupon_name.as_deref());
                self.dec(p.discount);
                self.str(p.reason.as_deref());
                self.currency(p.currency);
            }
            Properties::Page(p) => {
                self.tag(9);
                self.str(p.name.as_deref());
                self.str(p.url.as_deref());
                self.str(p.path.as_deref());
                self.str(p.referrer.as_deref());
                self.str(p.search.as_deref());
                self.str(p.title.as_deref());
            }
        }
    }
}

/// The de-duplication id of an event: `m:<messageId>` when the client sent one (the SDKs make
/// it unique per event and keep it across retries), else `h:` plus 32 hex digits of a SHA-256
/// over anonymousId, userId, event name, client timestamp and the typed properties, so a
/// retried event without a messageId still gets the same id. The prefixes keep the two kinds
/// from ever colliding.
pub fn event_id(ev: &TrackEvent) -> String {
    if let Some(message_id) = &ev.message_id {
        let mut id = String::with_capacity(2 + message_id.len());
        id.push_str("m:");
        id.push_str(message_id);
        return id;
    }
    let mut canon = Canon(Sha256::new());
    canon.0.update(b"edgefront.events.v1\0");
    canon.str(ev.anonymous_id.as_deref());
    canon.str(ev.user_id.as_deref());
    canon.str(Some(ev.name.as_str()));
    match ev.timestamp.or(ev.original_timestamp) {
        None => canon.tag(0),
        Some(t) => {
            canon.tag(1);
            canon.0.update(t.unix_timestamp_nanos().to_le_bytes());
        }
    }
    canon.properties(&ev.properties);
    let digest = canon.0.finalize();

    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(34);
    id.push_str("h:");
    for byte in digest.iter().take(16) {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    id
}

// ---------------------------------------------------------------------------------------------
// Enrichment
// ---------------------------------------------------------------------------------------------

/// Coarse device type for reporting, from well-known user-agent substrings only (no UA
/// database at the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    /// Desktop or laptop browser.
    Desktop,
    /// Phone.
    Mobile,
    /// Tablet.
    Tablet,
    /// Crawler or other automated client.
    Bot,
    /// No user agent, or one that matches nothing known.
    Unknown,
}

/// ASCII case-insensitive test that `haystack[at..]` starts with `marker` (lowercase).
fn marker_at(haystack: &[u8], at: Option<usize>, marker: &[u8]) -> bool {
    at.and_then(|start| haystack.get(start..start + marker.len()))
        .is_some_and(|window| window.eq_ignore_ascii_case(marker))
}

/// Sets the high bit of every byte of `word` that may equal `byte` (SWAR zero-byte test; it
/// can flag extra bytes but never misses one, and every hit is verified afterwards).
const fn flag_bytes_equal(word: u64, byte: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (ONES * byte as u64);
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Device markers seen so far in a user agent.
#[derive(Default)]
struct UaMarkers {
    mobi: bool,
    phone: bool,
    tablet: bool,
    android: bool,
}

impl UaMarkers {
    /// Checks the markers anchored at byte `i`; true when it is a bot marker.
    fn visit(&mut self, ua: &[u8], i: usize) -> bool {
        match ua.get(i).map(|b| b | 0x20) {
            Some(b'b') => {
                if marker_at(ua, Some(i), b"bot") {
                    return true;
                }
                self.tablet |= marker_at(ua, i.checked_sub(2), b"tablet");
            }
            Some(b'w') => return marker_at(ua, i.checked_sub(3), b"crawler"),
            Some(b'p') => {
                if marker_at(ua, i.checked_sub(1), b"spider")
                    || marker_at(ua, i.checked_sub(4), b"slurp")
                {
                    return true;
                }
                let at = i.checked_sub(1);
                self.tablet |= marker_at(ua, at, b"ipad");
                self.phone |= marker_at(ua, at, b"iphone") || marker_at(ua, at, b"ipod");
            }
            Some(b'm') => self.mobi |= marker_at(ua, Some(i), b"mobi"),
            Some(b'd') => self.android |= marker_at(ua, i.checked_sub(2), b"android"),
            _ => {}
        }
        false
    }
}

impl DeviceClass {
    /// Classifies a user agent from well-known markers (ASCII case-insensitive): bots first
    /// ("bot", "crawler", "spider", "slurp"; they often also claim "Mobile"), then tablets
    /// ("iPad", "Tablet", or "Android" without "Mobi"), then phones ("Mobi", "iPhone", "iPod"),
    /// then desktop browsers (a `Mozilla/` or `Opera/` product token); else unknown.
    ///
    /// This runs for every event, so it scans eight bytes at a time for letters that are rare
    /// in user agents and anchor every marker (b, w, p, m, d), and only looks closer there.
    pub fn from_user_agent(user_agent: &str) -> DeviceClass {
        // Folds ASCII letters to lowercase; no other byte folds onto an anchor letter.
        const FOLD: u64 = 0x2020_2020_2020_2020;
        let ua = user_agent.trim().as_bytes();
        let mut markers = UaMarkers::default();
        for (n, chunk) in ua.chunks(8).enumerate() {
            // Zero padding folds to spaces, which match nothing.
            let mut word = [0u8; 8];
            for (w, b) in word.iter_mut().zip(chunk) {
                *w = *b;
            }
            let folded = u64::from_le_bytes(word) | FOLD;
            let mut hits = flag_bytes_equal(folded, b'b')
                | flag_bytes_equal(folded, b'w')
                | flag_bytes_equal(folded, b'p')
                | flag_bytes_equal(folded, b'm')
                | flag_bytes_equal(folded, b'd');
            while hits != 0 {
                let j = (hits.trailing_zeros() / 8) as usize;
                hits &= hits - 1;
                if markers.visit(ua, n * 8 + j) {
                    return DeviceClass::Bot;
                }
            }
        }
        if markers.tablet || (markers.android && !markers.mobi) {
            DeviceClass::Tablet
        } else if markers.mobi || markers.phone {
            DeviceClass::Mobile
        } else if ua.starts_with(b"Mozilla/") || ua.starts_with(b"Opera/") {
            DeviceClass::Desktop
        } else {
            DeviceClass::Unknown
        }
    }
}

/// What the edge knows about a request that the client cannot be trusted to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrichment {
    /// When the edge received the request (the edge's clock).
    pub received_at: OffsetDateTime,
    /// Which edge node handled it, for debugging and dedup scoping.
    pub edge_node: String,
    /// ISO 3166 alpha-2 country from the edge platform's geo lookup.
    pub country: Option<String>,
    /// The request's User-Agent header, used when the event's context has none.
    pub user_agent: Option<String>,
    /// Experiment assignments (experiment → variant) for this visitor.
    pub experiments: BTreeMap<String, String>,
    /// The W3C trace id of the request that carried the event.
    pub trace_id: Option<String>,
}

/// A validated event plus edge knowledge, ready to forward to the origin as JSON. It holds no
/// IP address, user agent string or other raw client context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichedEvent {
    /// De-duplication id, see [`event_id`].
    pub event_id: String,
    /// Which event.
    pub name: EventName,
    /// `anonymousId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// `userId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// When the event happened (UTC): the client's timestamp, else received time; never more
    /// than [`FUTURE_TOLERANCE`] after `received_at`.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// When the edge received it (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Edge node that handled it.
    pub edge_node: String,
    /// ISO 3166 alpha-2 country, uppercase, when the edge platform knew it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Coarse device type.
    pub device_class: DeviceClass,
    /// Campaign attribution.
    #[serde(default)]
    pub campaign: Campaign,
    /// Experiment assignments.
    #[serde(default)]
    pub experiments: BTreeMap<String, String>,
    /// The W3C trace id of the request that carried it, so a stored event leads back to the
    /// edge's and the origin's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Typed properties.
    pub properties: Properties,
}

/// Converts to UTC unless the result would leave RFC 3339's years 0000–9999 (possible for
/// timestamps at the very ends of that range), so the event always serializes.
fn to_utc(t: OffsetDateTime) -> OffsetDateTime {
    t.checked_to_offset(UtcOffset::UTC)
        .filter(|utc| (0..=9999).contains(&utc.year()))
        .unwrap_or(t)
}

/// The event time: `timestamp`; else `originalTimestamp` corrected by the client's clock skew
/// (`received_at - (sentAt - originalTimestamp)`, as Segment does); else `received_at`.
/// Anything beyond `received_at + FUTURE_TOLERANCE` is a bad clock and becomes `received_at`.
fn event_time(ev: &TrackEvent, received_at: OffsetDateTime) -> OffsetDateTime {
    let t = match (ev.timestamp, ev.original_timestamp, ev.sent_at) {
        (Some(t), _, _) => t,
        (None, Some(original), Some(sent)) => received_at
            .checked_sub(sent - original)
            // A skew that lands outside RFC 3339's years (found by fuzzing: a `sentAt` in
            // 9198) is no clock at all; the event could not be serialized for the origin.
            .filter(|t| (0..=9999).contains(&t.year()))
            .unwrap_or(original),
        (None, Some(original), None) => original,
        (None, None, _) => received_at,
    };
    let t = to_utc(t);
    let limit = received_at
        .checked_add(FUTURE_TOLERANCE)
        .unwrap_or(received_at);
    if t > limit { received_at } else { t }
}

/// Keeps a platform country only if it is two ASCII letters (and not the "XX" unknown marker).
fn country_code(country: Option<&str>) -> Option<String> {
    let c = country?.trim();
    let ok =
        c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) && !c.eq_ignore_ascii_case("XX");
    ok.then(|| c.to_ascii_uppercase())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Form-style percent-decoding: `%XX` → byte, `+` → space; malformed escapes stay literal and
/// invalid UTF-8 becomes U+FFFD. Borrows when there is nothing to decode.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Reads `utm_*` parameters from a query string (no leading `?`, no fragment); first wins.
fn campaign_from_query(query: &str) -> Campaign {
    let mut campaign = Campaign::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key);
        let slot = match key.as_ref() {
            "utm_source" => &mut campaign.source,
            "utm_medium" => &mut campaign.medium,
            "utm_campaign" => &mut campaign.name,
            "utm_term" => &mut campaign.term,
            "utm_content" => &mut campaign.content,
            _ => continue,
        };
        if slot.is_none() {
            let value = percent_decode(value);
            if !value.is_empty() && fits(&value, MAX_STRING_CHARS) {
                *slot = Some(value.into_owned());
            }
        }
    }
    campaign
}

fn strip_fragment(s: &str) -> &str {
    s.split_once('#').map_or(s, |(before, _)| before)
}

fn query_of_search(search: &str) -> &str {
    let s = strip_fragment(search);
    s.strip_prefix('?').unwrap_or(s)
}

fn query_of_url(url: &str) -> Option<&str> {
    strip_fragment(url).split_once('?').map(|(_, q)| q)
}

/// `context.campaign` when it says anything, else `utm_*` from the page's search string or URL.
fn resolve_campaign(
    from_context: Option<Campaign>,
    page: Option<&PageContext>,
    properties: &Properties,
) -> Campaign {
    if let Some(c) = from_context
        && !c.is_empty()
    {
        return c;
    }
    let page_props = match properties {
        Properties::Page(p) => Some(p),
        _ => None,
    };
    let candidates = [
        page.and_then(|p| p.search.as_deref()).map(query_of_search),
        page.and_then(|p| p.url.as_deref()).and_then(query_of_url),
        page_props
            .and_then(|p| p.search.as_deref())
            .map(query_of_search),
        page_props
            .and_then(|p| p.url.as_deref())
            .and_then(query_of_url),
    ];
    for query in candidates.into_iter().flatten() {
        if query.contains("utm_") || query.contains('%') {
            let c = campaign_from_query(query);
            if !c.is_empty() {
                return c;
            }
        }
    }
    Campaign::default()
}

/// Adds edge knowledge to a validated event: the de-duplication id, a trustworthy timestamp,
/// received time, edge node, country, device class, campaign attribution and experiments.
/// Consumes the event so its strings move instead of being copied.
pub fn enrich(ev: TrackEvent, e: &Enrichment) -> EnrichedEvent {
    let event_id = event_id(&ev);
    let received_at = to_utc(e.received_at);
    let timestamp = event_time(&ev, received_at);
    let user_agent = ev
        .context
        .user_agent
        .as_deref()
        .or(e.user_agent.as_deref())
        .unwrap_or("");
    let device_class = DeviceClass::from_user_agent(user_agent);
    let TrackEvent {
        name,
        anonymous_id,
        user_id,
        context,
        properties,
        ..
    } = ev;
    let campaign = resolve_campaign(context.campaign, context.page.as_ref(), &properties);
    EnrichedEvent {
        event_id,
        name,
        anonymous_id,
        user_id,
        timestamp,
        received_at,
        edge_node: e.edge_node.clone(),
        country: country_code(e.country.as_deref()),
        device_class,
        campaign,
        experiments: e.experiments.clone(),
        trace_id: e.trace_id.clone(),
        properties,
    }
}

/// The `i`-th event of a deterministic stream shaped like analytics.js traffic (views, with an
/// add-to-cart every fifth event, 37 visitors, UTM-tagged page URLs), for benchmarks and demos.
pub fn demo_event(i: usize) -> Value {
    serde_json::json!({
        "type": "track",
        "event": if i % 5 == 4 { "Product Added" } else { "Product Viewed" },
        "anonymousId": format!("visitor-{}", i % 37),
        "messageId": format!("msg-{i}"),
        "timestamp": "2026-11-27T00:00:00.000Z",
        "context": {
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0",
            "page": {"url": "https://shop.example/p?utm_source=news&utm_medium=email"}
        },
        "properties": {
            "product_id": format!("p-{:06}", (i * 7) % 10_000), "price": 19.99, "quantity": 1,
            "currency": "EUR", "category": "apparel/hoodies"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;
    use serde_json::json;
    use time::macros::datetime;

    /// Runs both entry points and insists they agree, so every test covers both.
    fn parse_both(value: &Value) -> Result<TrackEvent, Vec<FieldError>> {
        let borrowed = parse_track(value);
        let owned = parse_track_owned(value.clone());
        assert_eq!(borrowed, owned, "borrowed and owned parsing disagree");
        borrowed
    }

    fn parse_text(text: &str) -> Result<TrackEvent, Vec<FieldError>> {
        let value: Value = serde_json::from_str(text).expect("test JSON is valid");
        parse_both(&value)
    }

    fn ok(value: Value) -> TrackEvent {
        match parse_both(&value) {
            Ok(ev) => ev,
            Err(errs) => panic!("expected valid event, got {errs:?}"),
        }
    }

    fn errors(value: Value) -> Vec<FieldError> {
        match parse_both(&value) {
            Ok(ev) => panic!("expected errors, got {ev:?}"),
            Err(errs) => errs,
        }
    }

    fn has_error(errs: &[FieldError], field: &str, message_part: &str) -> bool {
        errs.iter()
            .any(|e| e.field == field && e.message.contains(message_part))
    }

    fn enrichment() -> Enrichment {
        Enrichment {
            received_at: datetime!(2024-05-01 12:00:00 UTC),
            edge_node: "fra-03".to_owned(),
            country: Some("DE".to_owned()),
            user_agent: None,
            experiments: BTreeMap::from([("checkout_v2".to_owned(), "b".to_owned())]),
            trace_id: None,
        }
    }

    fn product_price(ev: &TrackEvent) -> Option<Decimal> {
        match &ev.properties {
            Properties::Product(p) => p.product.price,
            other => panic!("not a product event: {other:?}"),
        }
    }

    fn order(ev: &TrackEvent) -> &OrderProperties {
        match &ev.properties {
            Properties::Order(o) => o,
            other => panic!("not an order event: {other:?}"),
        }
    }

    fn viewed_with_price(price_json: &str) -> Result<TrackEvent, Vec<FieldError>> {
        parse_text(&format!(
            r#"{{"event":"Product Viewed","anonymousId":"a1","properties":{{"product_id":"p1","price":{price_json}}}}}"#
        ))
    }

    const ANALYTICS_JS_ORDER_COMPLETED: &str = r#"{
      "anonymousId": "4f1c2b7e-9d3a-4e51-8a0b-2f6d7c8e9a10",
      "context": {
        "ip": "203.0.113.42",
        "library": {"name": "analytics.js", "version": "npm:next-1.70.0"},
        "locale": "en-US",
        "page": {
          "path": "/checkout/complete",
          "referrer": "https://shop.example.com/checkout",
          "search": "?utm_source=newsletter&utm_medium=email",
          "title": "Thank you for your order",
          "url": "https://shop.example.com/checkout/complete?utm_source=newsletter&utm_medium=email"
        },
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "userAgentData": {"brands": [{"brand": "Chromium", "version": "124"}], "mobile": false, "platform": "macOS"},
        "traits": {"email": "someone@example.com"},
        "campaign": {"name": "spring_sale", "source": "newsletter", "medium": "email"}
      },
      "event": "Order Completed",
      "integrations": {},
      "messageId": "ajs-next-1714564797456-4f1c2b7e-9d3a-4e51-8a0b-2f6d7c8e9a10",
      "properties": {
        "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
        "order_id": "50314b8e9bcf000000000000",
        "affiliation": "Google Store",
        "total": 27.50,
        "subtotal": 22.50,
        "revenue": 25.00,
        "shipping": 3,
        "tax": 2,
        "discount": 2.5,
        "coupon": "hasbros",
        "currency": "USD",
        "products": [
          {
            "product_id": "507f1f77bcf86cd799439011",
            "sku": "45790-32",
            "name": "Monopoly: 3rd Edition",
            "price": 19,
            "quantity": 1,
            "category": "Games",
            "url": "https://www.example.com/product/path",
            "image_url": "https://www.example.com/product/path.jpg"
          },
          {
            "product_id": "505bd76785ebb509fc183733",
            "sku": "46493-32",
            "name": "Uno Card Game",
            "price": 3,
            "quantity": 2,
            "category": "Games"
          }
        ]
      },
      "sentAt": "2024-05-01T11:59:58.123Z",
      "timestamp": "2024-05-01T11:59:57.456Z",
      "type": "track",
      "userId": null,
      "writeKey": "wk_0123456789",
      "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}
    }"#;

    // ----- names and call types -----

    #[test]
    fn every_ecommerce_event_name_round_trips_through_its_exact_spec_name() {
        for name in EventName::ECOMMERCE {
            assert_eq!(EventName::from_spec_name(name.as_str()), Some(name));
            assert_eq!(name.as_str().parse::<EventName>(), Ok(name));
            assert_eq!(name.to_string(), name.as_str());
        }
        assert_eq!(EventName::ECOMMERCE.len(), 28);
    }

    #[test]
    fn page_viewed_is_not_accepted_as_a_track_event_name() {
        assert_eq!(EventName::from_spec_name("Page Viewed"), None);
        assert_eq!(
            "Page Viewed".parse::<EventName>(),
            Ok(EventName::PageViewed)
        );
        let errs = errors(json!({"event": "Page Viewed", "anonymousId": "a"}));
        assert!(has_error(
            &errs,
            "event",
            "not a Segment e-commerce v2 event"
        ));
    }

    #[test]
    fn unknown_event_name_is_refused_with_a_field_error_on_event() {
        for name in [
            json!("Order Complete"),
            json!("order completed"),
            json!(""),
            json!(7),
        ] {
            let errs = errors(json!({"event": name, "anonymousId": "a"}));
            assert_eq!(
                errs,
                vec![FieldError::new(
                    "event",
                    "is not a Segment e-commerce v2 event"
                )]
            );
        }
    }

    #[test]
    fn missing_event_name_on_a_track_call_is_refused() {
        let errs = errors(json!({"type": "track", "anonymousId": "a"}));
        assert_eq!(errs, vec![FieldError::new("event", "is required")]);
    }

    #[test]
    fn unsupported_call_types_are_refused_with_a_field_error_on_type() {
        for kind in ["identify", "group", "alias", "screen", "Track", ""] {
            let errs = errors(json!({"type": kind, "event": "Cart Viewed", "anonymousId": "a"}));
            assert_eq!(errs, vec![FieldError::new("type", MSG_TYPE)], "type {kind}");
        }
        let errs = errors(json!({"type": 1, "anonymousId": "a"}));
        assert!(has_error(&errs, "type", "\"track\" or \"page\""));
    }

    #[test]
    fn absent_or_null_type_means_track() {
        let ev = ok(json!({"event": "Cart Viewed", "anonymousId": "a"}));
        assert_eq!(ev.name, EventName::CartViewed);
        let ev = ok(json!({"type": null, "event": "Cart Viewed", "anonymousId": "a"}));
        assert_eq!(ev.name, EventName::CartViewed);
    }

    #[test]
    fn page_call_becomes_a_page_viewed_event_named_after_the_page() {
        let ev = ok(json!({
            "type": "page",
            "name": "Home",
            "anonymousId": "a",
            "properties": {"url": "https://shop.example.com/", "path": "/", "title": "Shop", "name": "ignored"}
        }));
        assert_eq!(ev.name, EventName::PageViewed);
        let Properties::Page(page) = &ev.properties else {
            panic!("expected page properties");
        };
        assert_eq!(page.name.as_deref(), Some("Home"));
        assert_eq!(page.path.as_deref(), Some("/"));
        assert_eq!(page.title.as_deref(), Some("Shop"));

        let ev = ok(json!({"type": "page", "anonymousId": "a", "properties": {"name": "Cart"}}));
        let Properties::Page(page) = &ev.properties else {
            panic!("expected page properties");
        };
        assert_eq!(page.name.as_deref(), Some("Cart"));
    }

    #[test]
    fn non_object_input_is_refused() {
        for v in [json!(null), json!([]), json!("track"), json!(1)] {
            assert_eq!(
                errors(v),
                vec![FieldError::new("$", "must be a JSON object")]
            );
        }
    }

    // ----- envelope -----

    #[test]
    fn anonymous_id_or_user_id_is_required() {
        let errs = errors(json!({"event": "Cart Viewed"}));
        assert_eq!(
            errs,
            vec![FieldError::new(
                "anonymousId",
                "anonymousId or userId is required"
            )]
        );
        let ev = ok(json!({"event": "Cart Viewed", "userId": "u1"}));
        assert_eq!(ev.user_id.as_deref(), Some("u1"));
        assert_eq!(ev.anonymous_id, None);
    }

    #[test]
    fn null_user_id_from_analytics_js_counts_as_absent() {
        let ev = ok(json!({"event": "Cart Viewed", "anonymousId": "a", "userId": null}));
        assert_eq!(ev.user_id, None);
        let errs = errors(json!({"event": "Cart Viewed", "anonymousId": null, "userId": null}));
        assert!(has_error(
            &errs,
            "anonymousId",
            "anonymousId or userId is required"
        ));
    }

    #[test]
    fn numeric_user_ids_are_kept_as_their_literal_text() {
        let ev =
            parse_text(r#"{"event":"Cart Viewed","userId":12345678901234567890}"#).expect("valid");
        assert_eq!(ev.user_id.as_deref(), Some("12345678901234567890"));
    }

    #[test]
    fn ids_must_be_non_empty_and_at_most_128_characters() {
        let long = "x".repeat(129);
        let errs = errors(json!({
            "event": "Cart Viewed",
            "anonymousId": long,
            "userId": "",
            "messageId": ["m"],
        }));
        assert!(has_error(&errs, "anonymousId", MSG_ID));
        assert!(has_error(&errs, "userId", MSG_ID));
        assert!(has_error(&errs, "messageId", MSG_ID));
        assert!(!has_error(&errs, "anonymousId", "is required"));
        let ok_id = "é".repeat(128);
        let ev = ok(json!({"event": "Cart Viewed", "anonymousId": ok_id}));
        assert_eq!(ev.anonymous_id.as_deref(), Some(ok_id.as_str()));
    }

    #[test]
    fn timestamps_must_be_rfc3339() {
        let ev = ok(json!({
            "event": "Cart Viewed",
            "anonymousId": "a",
            "timestamp": "2024-05-01T13:59:57.456+02:00",
            "originalTimestamp": "2024-05-01T11:59:57Z",
            "sentAt": "2024-05-01T11:59:58.123456789Z",
        }));
        assert_eq!(ev.timestamp, Some(datetime!(2024-05-01 11:59:57.456 UTC)));
        assert_eq!(
            ev.sent_at,
            Some(datetime!(2024-05-01 11:59:58.123456789 UTC))
        );
        for bad in [
            json!("2024-05-01 12:00:00"),
            json!("yesterday"),
            json!(1714564800),
            json!(""),
        ] {
            let errs = errors(json!({"event": "Cart Viewed", "anonymousId": "a", "sentAt": bad}));
            assert_eq!(errs, vec![FieldError::new("sentAt", MSG_TIMESTAMP)]);
        }
    }

    #[test]
    fn context_and_properties_must_be_objects() {
        let errs = errors(json!({
            "event": "Cart Viewed",
            "anonymousId": "a",
            "context": "web",
            "properties": [1],
        }));
        assert!(has_error(&errs, "context", MSG_OBJECT));
        assert!(has_error(&errs, "properties", MSG_OBJECT));
        let errs = errors(json!({
            "event": "Cart Viewed",
            "anonymousId": "a",
            "context": {"page": 1, "campaign": "x", "userAgent": 5},
        }));
        assert!(has_error(&errs, "context.page", MSG_OBJECT));
        assert!(has_error(&errs, "context.campaign", MSG_OBJECT));
        assert!(has_error(&errs, "context.userAgent", MSG_TEXT));
    }

    // ----- required fields per event -----

    #[test]
    fn product_viewed_clicked_added_and_removed_require_product_id_or_sku() {
        for name in [
            "Product Viewed",
            "Product Clicked",
            "Product Added",
            "Product Removed",
        ] {
            let errs =
                errors(json!({"event": name, "anonymousId": "a", "properties": {"name": "Hat"}}));
            assert_eq!(
                errs,
                vec![FieldError::new(
                    "properties.product_id",
                    "product_id or sku is required"
                )],
                "{name}"
            );
            ok(json!({"event": name, "anonymousId": "a", "properties": {"product_id": "p1"}}));
            ok(json!({"event": name, "anonymousId": "a", "properties": {"sku": "S-1"}}));
        }
        // Other product events do not need a product reference.
        ok(json!({"event": "Product Shared", "anonymousId": "a"}));
    }

    #[test]
    fn an_invalid_product_id_is_reported_once_not_also_as_missing() {
        let errs = errors(
            json!({"event": "Product Added", "anonymousId": "a", "properties": {"product_id": ""}}),
        );
        assert_eq!(errs, vec![FieldError::new("properties.product_id", MSG_ID)]);
    }

    #[test]
    fn products_searched_requires_query() {
        let errs = errors(json!({"event": "Products Searched", "anonymousId": "a"}));
        assert_eq!(
            errs,
            vec![FieldError::new("properties.query", "is required")]
        );
        let ev = ok(
            json!({"event": "Products Searched", "anonymousId": "a", "properties": {"query": "blue hotpants"}}),
        );
        assert_eq!(
            ev.properties,
            Properties::Search(SearchProperties {
                query: "blue hotpants".to_owned()
            })
        );
    }

    #[test]
    fn order_completed_requires_order_id_and_total_or_revenue() {
        let errs =
            errors(json!({"event": "Order Completed", "anonymousId": "a", "properties": {}}));
        assert_eq!(
            errs,
            vec![
                FieldError::new("properties.order_id", "is required"),
                FieldError::new("properties.total", "total or revenue is required"),
            ]
        );
        let ev = ok(
            json!({"event": "Order Completed", "anonymousId": "a", "properties": {"order_id": "o1", "revenue": "25.00"}}),
        );
        assert_eq!(order(&ev).revenue, Some(dec!(25.00)));
        ok(
            json!({"event": "Order Completed", "anonymousId": "a", "properties": {"order_id": 501, "total": 1}}),
        );
        // Other order events do not require them.
        ok(json!({"event": "Order Updated", "anonymousId": "a"}));
    }

    #[test]
    fn quantity_must_be_an_integer_from_1_to_10000() {
        for (q, expected) in [
            ("1", 1),
            ("10000", 10000),
            ("\"2\"", 2),
            ("2.0", 2),
            ("1e1", 10),
        ] {
            let ev = parse_text(&format!(
                r#"{{"event":"Product Added","anonymousId":"a","properties":{{"sku":"s","quantity":{q}}}}}"#
            ))
            .unwrap_or_else(|e| panic!("quantity {q}: {e:?}"));
            let Properties::Product(p) = ev.properties else {
                panic!("product event");
            };
            assert_eq!(p.product.quantity, Some(expected), "quantity {q}");
        }
        for q in ["0", "10001", "1.5", "-1", "\"abc\"", "true", "1e100"] {
            let errs = parse_text(&format!(
                r#"{{"event":"Product Added","anonymousId":"a","properties":{{"sku":"s","quantity":{q}}}}}"#
            ))
            .expect_err(q);
            assert_eq!(
                errs,
                vec![FieldError::new("properties.quantity", MSG_QUANTITY)],
                "{q}"
            );
        }
    }

    #[test]
    fn currency_must_be_three_uppercase_letters_and_defaults_to_usd_only_when_absent() {
        let ev = ok(json!({"event": "Order Updated", "anonymousId": "a"}));
        assert_eq!(order(&ev).currency, Currency::USD);
        let ev = ok(
            json!({"event": "Order Updated", "anonymousId": "a", "properties": {"currency": null}}),
        );
        assert_eq!(order(&ev).currency, Currency::USD);
        let ev = ok(
            json!({"event": "Order Updated", "anonymousId": "a", "properties": {"currency": "EUR"}}),
        );
        assert_eq!(order(&ev).currency.code(), "EUR");
        for bad in [
            json!("eur"),
            json!("EURO"),
            json!("E1R"),
            json!(""),
            json!(978),
        ] {
            let errs = errors(
                json!({"event": "Order Updated", "anonymousId": "a", "properties": {"currency": bad}}),
            );
            assert_eq!(
                errs,
                vec![FieldError::new("properties.currency", MSG_CURRENCY)]
            );
        }
    }

    #[test]
    fn money_fields_must_be_non_negative() {
        for field in [
            "total", "subtotal", "revenue", "shipping", "tax", "discount",
        ] {
            let errs = errors(
                json!({"event": "Order Updated", "anonymousId": "a", "properties": {field: -0.01}}),
            );
            assert_eq!(
                errs,
                vec![FieldError::new(format!("properties.{field}"), MSG_MONEY)]
            );
        }
        let ev = viewed_with_price("-0").expect("negative zero is zero");
        assert_eq!(product_price(&ev), Some(Decimal::ZERO));
        assert!(!product_price(&ev).expect("price").is_sign_negative());
    }

    // ----- exact decimals -----

    #[test]
    fn price_given_as_json_number_is_read_exactly() {
        let ev = viewed_with_price("19.99").expect("valid");
        assert_eq!(product_price(&ev), Some(dec!(19.99)));
        let ev = viewed_with_price("0.1").expect("valid");
        assert_eq!(
            product_price(&ev).map(|d| d.to_string()),
            Some("0.1".to_owned())
        );
        // An f64 round trip would turn this into 1234567890.1234567.
        let ev = viewed_with_price("1234567890.123456789").expect("valid");
        assert_eq!(product_price(&ev), Some(dec!(1234567890.123456789)));
        let ev = viewed_with_price("19.90").expect("valid");
        assert_eq!(
            product_price(&ev).map(|d| d.to_string()),
            Some("19.90".to_owned())
        );
    }

    #[test]
    fn price_given_as_numeric_string_is_read_exactly() {
        let ev = viewed_with_price(r#""19.99""#).expect("valid");
        assert_eq!(product_price(&ev), Some(dec!(19.99)));
        let ev = viewed_with_price(r#""0.30""#).expect("valid");
        assert_eq!(
            product_price(&ev).map(|d| d.to_string()),
            Some("0.30".to_owned())
        );
    }

    #[test]
    fn exponent_forms_are_read_exactly() {
        for (literal, expected) in [
            ("1e2", dec!(100)),
            ("1E+2", dec!(100)),
            ("\"1e2\"", dec!(100)),
            ("2.5e-3", dec!(0.0025)),
            ("1999e-2", dec!(19.99)),
            ("0.01999E3", dec!(19.99)),
            ("0e10", dec!(0)),
        ] {
            let ev = viewed_with_price(literal).unwrap_or_else(|e| panic!("{literal}: {e:?}"));
            assert_eq!(product_price(&ev), Some(expected), "{literal}");
        }
    }

    #[test]
    fn negative_huge_and_nan_like_prices_are_refused() {
        for (literal, message) in [
            ("-19.99", MSG_MONEY),
            ("\"-1\"", MSG_MONEY),
            ("\"NaN\"", MSG_MONEY),
            ("\"Infinity\"", MSG_MONEY),
            ("\"-Infinity\"", MSG_MONEY),
            ("\"\"", MSG_MONEY),
            ("\"$19.99\"", MSG_MONEY),
            ("\"19,99\"", MSG_MONEY),
            ("\" 19.99\"", MSG_MONEY),
            ("true", MSG_MONEY),
            ("{}", MSG_MONEY),
            ("1e16", MSG_MONEY_RANGE),
            ("1000000000000000.01", MSG_MONEY_RANGE),
            ("1e400", MSG_MONEY_RANGE),
            (
                "123456789012345678901234567890123456789012345",
                MSG_MONEY_RANGE,
            ),
            ("1e-400", MSG_MONEY_PRECISION),
            ("0.12345678901234567890123456789", MSG_MONEY_PRECISION),
        ] {
            let errs = viewed_with_price(literal).expect_err(literal);
            assert_eq!(
                errs,
                vec![FieldError::new("properties.price", message)],
                "{literal}"
            );
        }
        let ev = viewed_with_price("1000000000000000").expect("the cap itself is allowed");
        assert_eq!(product_price(&ev), Some(MAX_AMOUNT));
    }

    #[test]
    fn max_amount_is_ten_to_the_fifteenth() {
        assert_eq!(MAX_AMOUNT, dec!(1000000000000000));
    }

    #[test]
    fn parse_exact_decimal_handles_the_edge_cases() {
        let exact = |s: &str| parse_exact_decimal(s).map(|d| d.to_string());
        assert_eq!(exact("0"), Ok("0".to_owned()));
        assert_eq!(exact("0.000"), Ok("0.000".to_owned()));
        assert_eq!(exact("007.50"), Ok("7.50".to_owned()));
        assert_eq!(exact("-2.5E1"), Ok("-25".to_owned()));
        assert_eq!(exact("+1"), Ok("1".to_owned()));
        assert_eq!(
            exact("79228162514264337593543950335"),
            Ok("79228162514264337593543950335".to_owned())
        );
        assert_eq!(
            exact("79228162514264337593543950336"),
            Err(ExactDecimalError::OutOfRange)
        );
        assert_eq!(
            exact("0.0000000000000000000000000001"),
            Ok("0.0000000000000000000000000001".to_owned())
        );
        assert_eq!(
            exact("0.00000000000000000000000000001"),
            Err(ExactDecimalError::TooPrecise)
        );
        // Surplus trailing zeros are dropped only as far as needed to fit.
        let long_zeros = format!("19.99{}", "0".repeat(60));
        assert_eq!(parse_exact_decimal(&long_zeros), Ok(dec!(19.99)));
        let long_int = format!("1{}e-50", "0".repeat(50));
        assert_eq!(parse_exact_decimal(&long_int), Ok(dec!(1)));
        assert_eq!(
            exact("1e999999999999999999999"),
            Err(ExactDecimalError::OutOfRange)
        );
        assert_eq!(exact("0e999999999999999999999"), Ok("0".to_owned()));
        for bad in [
            "", "-", "+", ".5", "1.", "1.e5", "1e", "1e+", "e5", "0x10", "1_000", "NaN", "inf",
            "1e5.0", "1..2", "١٢",
        ] {
            assert_eq!(
                parse_exact_decimal(bad),
                Err(ExactDecimalError::Syntax),
                "{bad:?}"
            );
        }
    }

    // ----- error collection and caps -----

    #[test]
    fn all_errors_are_collected_with_dotted_paths() {
        let errs = parse_text(
            r#"{
              "event": "Order Completed",
              "anonymousId": "a",
              "timestamp": "soon",
              "context": {"page": {"url": 5}},
              "properties": {
                "total": "-1",
                "currency": "usd",
                "products": [
                  {"price": "x", "quantity": 0},
                  {"sku": "ok"},
                  {"price": 1e400, "product_id": ""},
                  "not a product"
                ]
              }
            }"#,
        )
        .expect_err("invalid");
        let expected = [
            ("timestamp", MSG_TIMESTAMP),
            ("context.page.url", MSG_TEXT),
            ("properties.total", MSG_MONEY),
            ("properties.currency", MSG_CURRENCY),
            ("properties.products[0].price", MSG_MONEY),
            ("properties.products[0].quantity", MSG_QUANTITY),
            ("properties.products[2].price", MSG_MONEY_RANGE),
            ("properties.products[2].product_id", MSG_ID),
            ("properties.products[3]", MSG_OBJECT),
            ("properties.order_id", MSG_REQUIRED),
        ];
        for (field, message) in expected {
            assert!(
                has_error(&errs, field, message),
                "missing {field}: {message} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    }

    #[test]
    fn field_error_displays_as_path_colon_message() {
        let e = FieldError::new("properties.price", "must be a non-negative decimal");
        assert_eq!(
            e.to_string(),
            "properties.price: must be a non-negative decimal"
        );
    }

    #[test]
    fn properties_with_more_than_64_keys_are_refused() {
        let mut props: Map<String, Value> = (0..64).map(|i| (format!("k{i}"), json!(i))).collect();
        props.insert("sku".to_owned(), json!("s"));
        let errs =
            errors(json!({"event": "Product Added", "anonymousId": "a", "properties": props}));
        assert_eq!(errs, vec![FieldError::new("properties", MSG_KEYS)]);
        props.remove("k0");
        ok(json!({"event": "Product Added", "anonymousId": "a", "properties": props}));
    }

    #[test]
    fn more_than_100_products_are_refused() {
        let products: Vec<Value> = (0..101).map(|i| json!({"product_id": i})).collect();
        let errs = errors(
            json!({"event": "Cart Viewed", "anonymousId": "a", "properties": {"products": products}}),
        );
        assert_eq!(
            errs,
            vec![FieldError::new("properties.products", MSG_ARRAY)]
        );
        let ev = ok(
            json!({"event": "Cart Viewed", "anonymousId": "a", "properties": {"products": &products[..100]}}),
        );
        let Properties::Cart(cart) = ev.properties else {
            panic!("cart event");
        };
        assert_eq!(cart.products.len(), 100);
        assert_eq!(cart.products[99].product_id.as_deref(), Some("99"));
    }

    #[test]
    fn strings_longer_than_1024_characters_are_refused() {
        let errs = errors(
            json!({"event": "Product Added", "anonymousId": "a", "properties": {"sku": "s", "name": "n".repeat(1025)}}),
        );
        assert_eq!(errs, vec![FieldError::new("properties.name", MSG_TEXT)]);
        let multibyte = "é".repeat(1024);
        let ev = ok(
            json!({"event": "Product Added", "anonymousId": "a", "properties": {"sku": "s", "name": multibyte}}),
        );
        let Properties::Product(p) = ev.properties else {
            panic!("product event");
        };
        assert_eq!(p.product.name.map(|n| n.chars().count()), Some(1024));
    }

    #[test]
    fn unknown_extra_properties_and_envelope_keys_are_ignored() {
        let ev = ok(json!({
            "event": "Product Viewed",
            "anonymousId": "a",
            "integrations": {"All": true},
            "writeKey": "wk",
            "properties": {"product_id": "p1", "colour": "red", "nested": {"deep": [1, 2.5, null]}, "price": "9.5"}
        }));
        assert_eq!(product_price(&ev), Some(dec!(9.5)));
    }

    #[test]
    fn list_promotion_checkout_and_coupon_events_read_their_typed_fields() {
        let ev = ok(
            json!({"event": "Product List Filtered", "anonymousId": "a", "properties": {
                "list_id": "todays_deals", "category": "Deals",
                "filters": [{"type": "department", "value": "beauty"}, {"type": "price", "value": 25}],
                "sorts": [{"type": "price", "value": "desc"}],
                "products": [{"product_id": "p1", "position": 1, "price": "4.99"}]
            }}),
        );
        let Properties::ProductList(list) = ev.properties else {
            panic!("list event");
        };
        assert_eq!(list.filters[1].value.as_deref(), Some("25"));
        assert_eq!(list.sorts[0].kind.as_deref(), Some("price"));
        assert_eq!(list.products[0].position, Some(1));

        let ev = ok(
            json!({"event": "Promotion Clicked", "anonymousId": "a", "properties": {"promotion_id": "promo_1", "creative": "top_banner_2", "name": "75% store-wide shoe sale", "position": "home_banner_top"}}),
        );
        assert!(
            matches!(ev.properties, Properties::Promotion(ref p) if p.position.as_deref() == Some("home_banner_top"))
        );

        let ev = ok(
            json!({"event": "Checkout Step Completed", "anonymousId": "a", "properties": {"checkout_id": "c1", "step": 2, "shipping_method": "Fedex", "payment_method": "Visa"}}),
        );
        assert!(matches!(ev.properties, Properties::CheckoutStep(ref p) if p.step == Some(2)));
        let errs = errors(
            json!({"event": "Payment Info Entered", "anonymousId": "a", "properties": {"step": 0}}),
        );
        assert_eq!(errs, vec![FieldError::new("properties.step", MSG_STEP)]);

        let ev = ok(
            json!({"event": "Coupon Denied", "anonymousId": "a", "properties": {"order_id": "o1", "coupon_id": "c1", "coupon_name": "Summer", "discount": "5", "reason": "Coupon expired"}}),
        );
        assert!(matches!(ev.properties, Properties::Coupon(ref p) if p.discount == Some(dec!(5))));
    }

    // ----- enrichment -----

    #[test]
    fn ip_is_accepted_but_never_retained() {
        let ip = "203.0.113.42";
        let ev = ok(json!({
            "event": "Product Viewed",
            "anonymousId": "a",
            "context": {"ip": ip, "page": {"url": "https://shop.example.com/p/1"}},
            "properties": {"product_id": "p1", "ip": ip}
        }));
        assert!(!format!("{ev:?}").contains(ip));
        let enriched = enrich(ev, &enrichment());
        let json = serde_json::to_string(&enriched).expect("serializes");
        assert!(!json.contains(ip), "{json}");
        assert!(!json.contains("\"ip\""), "{json}");
        assert!(!format!("{enriched:?}").contains(ip));

        let analytics_js: Value =
            serde_json::from_str(ANALYTICS_JS_ORDER_COMPLETED).expect("valid JSON");
        let enriched = enrich(parse_track(&analytics_js).expect("valid"), &enrichment());
        let json = serde_json::to_string(&enriched).expect("serializes");
        assert!(
            !json.contains(ip) && !json.contains("someone@example.com"),
            "{json}"
        );
    }

    #[test]
    fn campaign_comes_from_context_campaign_when_present() {
        let ev = ok(json!({
            "event": "Cart Viewed",
            "anonymousId": "a",
            "context": {
                "campaign": {"name": "spring_sale", "source": "newsletter", "medium": "email", "term": "shoes", "content": "hero"},
                "page": {"url": "https://shop.example.com/?utm_source=ignored"}
            }
        }));
        let enriched = enrich(ev, &enrichment());
        assert_eq!(
            enriched.campaign,
            Campaign {
                source: Some("newsletter".to_owned()),
                medium: Some("email".to_owned()),
                name: Some("spring_sale".to_owned()),
                term: Some("shoes".to_owned()),
                content: Some("hero".to_owned()),
            }
        );
    }

    #[test]
    fn campaign_falls_back_to_utm_params_in_the_page_url_with_percent_decoding() {
        let ev = ok(json!({
            "event": "Cart Viewed",
            "anonymousId": "a",
            "context": {
                "campaign": {},
                "page": {"url": "https://shop.example.com/sale?ref=x&utm_source=news%20letter&utm_medium=e-mail&utm_campaign=spring+sale%21&utm_term=caf%C3%A9&utm_content=hero&utm_source=second#utm_medium=frag"}
            }
        }));
        let campaign = enrich(ev, &enrichment()).campaign;
        assert_eq!(
            campaign,
            Campaign {
                source: Some("news letter".to_owned()),
                medium: Some("e-mail".to_owned()),
                name: Some("spring sale!".to_owned()),
                term: Some("café".to_owned()),
                content: Some("hero".to_owned()),
            }
        );
    }

    #[test]
    fn campaign_falls_back_to_utm_params_in_the_page_search() {
        let ev = ok(json!({
            "event": "Cart Viewed",
            "anonymousId": "a",
            "context": {"page": {"search": "?utm_source=google&utm_campaign=brand%2Bterms", "url": "https://shop.example.com/"}}
        }));
        let campaign = enrich(ev, &enrichment()).campaign;
        assert_eq!(campaign.source.as_deref(), Some("google"));
        assert_eq!(campaign.name.as_deref(), Some("brand+terms"));
        assert_eq!(campaign.medium, None);

        let page = ok(
            json!({"type": "page", "anonymousId": "a", "properties": {"url": "https://s.example/?utm_medium=cpc"}}),
        );
        assert_eq!(
            enrich(page, &enrichment()).campaign.medium.as_deref(),
            Some("cpc")
        );

        let none = ok(
            json!({"event": "Cart Viewed", "anonymousId": "a", "context": {"page": {"url": "https://s.example/?q=1"}}}),
        );
        assert!(enrich(none, &enrichment()).campaign.is_empty());
    }

    #[test]
    fn percent_decoding_handles_plus_bad_escapes_and_utf8() {
        assert_eq!(percent_decode("plain"), "plain");
        assert!(matches!(percent_decode("plain"), Cow::Borrowed(_)));
        assert_eq!(percent_decode("a+b%20c"), "a b c");
        assert_eq!(percent_decode("%41%4a%4A"), "AJJ");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%E2%82%AC"), "€");
        assert_eq!(percent_decode("%E9t%C3%A9"), "\u{FFFD}té");
        assert_eq!(percent_decode("%2B"), "+");
        let c = campaign_from_query("utm%5Fsource=encoded+key&=&&utm_medium=&utm_term");
        assert_eq!(c.source.as_deref(), Some("encoded key"));
        assert_eq!(c.medium, None);
        assert_eq!(c.term, None);
    }

    #[test]
    fn device_class_is_derived_from_well_known_user_agent_substrings() {
        let cases = [
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                DeviceClass::Bot,
            ),
            (
                "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 (compatible; Googlebot/2.1)",
                DeviceClass::Bot,
            ),
            (
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                DeviceClass::Bot,
            ),
            (
                "Mozilla/5.0 (compatible; Baiduspider/2.0)",
                DeviceClass::Bot,
            ),
            ("SomeCrawler/1.0", DeviceClass::Bot),
            ("Mozilla/5.0 (compatible; Yahoo! Slurp)", DeviceClass::Bot),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
                DeviceClass::Mobile,
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
                DeviceClass::Mobile,
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
                DeviceClass::Tablet,
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
                DeviceClass::Tablet,
            ),
            (
                "Mozilla/5.0 (Android 14; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0",
                DeviceClass::Tablet,
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
                DeviceClass::Desktop,
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0",
                DeviceClass::Desktop,
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
                DeviceClass::Desktop,
            ),
            ("curl/8.5.0", DeviceClass::Unknown),
            ("analytics-node-next/latest", DeviceClass::Unknown),
            ("", DeviceClass::Unknown),
            ("   ", DeviceClass::Unknown),
        ];
        for (ua, expected) in cases {
            assert_eq!(DeviceClass::from_user_agent(ua), expected, "{ua}");
        }
    }

    #[test]
    fn context_user_agent_is_preferred_over_the_request_user_agent() {
        let mut e = enrichment();
        e.user_agent = Some("analytics-node/2.0".to_owned());
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148";
        let ev = ok(
            json!({"event": "Cart Viewed", "anonymousId": "a", "context": {"userAgent": iphone}}),
        );
        assert_eq!(enrich(ev, &e).device_class, DeviceClass::Mobile);
        e.user_agent = Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64)".to_owned());
        let ev = ok(json!({"event": "Cart Viewed", "anonymousId": "a"}));
        assert_eq!(enrich(ev, &e).device_class, DeviceClass::Desktop);
    }

    #[test]
    fn country_is_kept_only_when_it_is_an_alpha2_code() {
        assert_eq!(country_code(Some("DE")), Some("DE".to_owned()));
        assert_eq!(country_code(Some("us")), Some("US".to_owned()));
        for bad in ["XX", "T1", "USA", "", "D"] {
            assert_eq!(country_code(Some(bad)), None, "{bad}");
        }
        assert_eq!(country_code(None), None);
    }

    #[test]
    fn event_id_uses_the_message_id_with_a_prefix() {
        let ev = ok(json!({"event": "Cart Viewed", "anonymousId": "a", "messageId": "ajs-123"}));
        assert_eq!(event_id(&ev), "m:ajs-123");
        // A messageId that looks like a derived id still cannot collide with one.
        let ev = ok(json!({"event": "Cart Viewed", "anonymousId": "a", "messageId": "h:0123"}));
        assert_eq!(enrich(ev, &enrichment()).event_id, "m:h:0123");
    }

    #[test]
    fn derived_event_id_is_stable_and_ignores_key_order_number_spelling_and_unknown_keys() {
        let a = parse_text(
            r#"{"event":"Product Added","anonymousId":"a","timestamp":"2024-05-01T11:00:00Z",
                "properties":{"sku":"s1","price":19.9,"quantity":2}}"#,
        )
        .expect("valid");
        let b = parse_text(
            r#"{"properties":{"quantity":"2","extra":true,"price":"19.90","sku":"s1"},
                "timestamp":"2024-05-01T13:00:00+02:00","anonymousId":"a","event":"Product Added","userId":null}"#,
        )
        .expect("valid");
        let id = event_id(&a);
        assert!(id.starts_with("h:"), "{id}");
        assert_eq!(id.len(), 34);
        assert!(
            id[2..]
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(id, event_id(&a));
        assert_eq!(id, event_id(&b));
        // Sent twice (e.g. a retry), enriched at different times: same id.
        let mut later = enrichment();
        later.received_at += Duration::seconds(30);
        assert_eq!(
            enrich(a.clone(), &enrichment()).event_id,
            enrich(a, &later).event_id
        );
    }

    #[test]
    fn derived_event_id_changes_when_the_event_changes() {
        let base = json!({"event": "Product Added", "anonymousId": "a", "timestamp": "2024-05-01T11:00:00Z", "properties": {"sku": "s1", "price": "19.90"}});
        let id = event_id(&ok(base.clone()));
        let variants = [
            ("anonymousId", json!("b")),
            ("userId", json!("a")),
            ("event", json!("Product Removed")),
            ("timestamp", json!("2024-05-01T11:00:00.001Z")),
            ("properties", json!({"sku": "s1", "price": "19.91"})),
            (
                "properties",
                json!({"sku": "s1", "price": "19.90", "currency": "EUR"}),
            ),
            ("properties", json!({"product_id": "s1", "price": "19.90"})),
        ];
        for (key, value) in variants {
            let mut changed = base.clone();
            changed[key] = value;
            assert_ne!(event_id(&ok(changed)), id, "changing {key}");
        }
        // Length-prefixed encoding: moving characters between fields changes the id.
        let split_a = ok(json!({"event": "Cart Viewed", "anonymousId": "ab", "userId": "c"}));
        let split_b = ok(json!({"event": "Cart Viewed", "anonymousId": "a", "userId": "bc"}));
        assert_ne!(event_id(&split_a), event_id(&split_b));
    }

    #[test]
    fn future_timestamps_are_clamped_to_received_at() {
        let e = enrichment();
        let far = ok(
            json!({"event": "Cart Viewed", "anonymousId": "a", "timestamp": "2024-05-01T12:10:00Z"}),
        );
        assert_eq!(enrich(far, &e).timestamp, e.received_at);
        let near = ok(
            json!({"event": "Cart Viewed", "anonymousId": "a", "timestamp": "2024-05-01T12:04:59Z"}),
        );
        assert_eq!(
            enrich(near, &e).timestamp,
            datetime!(2024-05-01 12:04:59 UTC)
        );
        let past = ok(
            json!({"event": "Cart Viewed", "anonymousId": "a", "timestamp": "2024-04-30T09:00:00-03:00"}),
        );
        let ts = enrich(past, &e).timestamp;
        assert_eq!(ts, datetime!(2024-04-30 12:00:00 UTC));
        assert_eq!(ts.offset(), UtcOffset::UTC);
    }

    #[test]
    fn timestamps_at_the_ends_of_the_rfc3339_range_still_serialize() {
        let e = enrichment();
        let ev = ok(
            json!({"event": "Cart Viewed", "anonymousId": "a", "timestamp": "0000-01-01T00:30:00+01:00"}),
        );
        let enriched = enrich(ev, &e);
        assert_eq!(enriched.timestamp.year(), 0);
        let text = serde_json::to_string(&enriched).expect("serializes");
        let back: EnrichedEvent = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, enriched);
        let ev = ok(
            json!({"event": "Cart Viewed", "anonymousId": "a", "timestamp": "9999-12-31T23:30:00-01:00"}),
        );
        assert_eq!(enrich(ev, &e).timestamp, e.received_at);
    }

    #[test]
    fn missing_timestamp_falls_back_to_received_at() {
        let e = enrichment();
        let ev = ok(json!({"event": "Cart Viewed", "anonymousId": "a"}));
        assert_eq!(enrich(ev, &e).timestamp, e.received_at);
    }

    #[test]
    fn original_timestamp_is_corrected_for_client_clock_skew() {
        let e = enrichment();
        let ev = ok(json!({
            "event": "Cart Viewed",
            "anonymousId": "a",
            "originalTimestamp": "2024-05-01T11:00:00Z",
            "sentAt": "2024-05-01T11:00:10Z"
        }));
        assert_eq!(enrich(ev, &e).timestamp, datetime!(2024-05-01 11:59:50 UTC));
        let ev = ok(
            json!({"event": "Cart Viewed", "anonymousId": "a", "originalTimestamp": "2024-05-01T11:00:00Z"}),
        );
        assert_eq!(enrich(ev, &e).timestamp, datetime!(2024-05-01 11:00:00 UTC));
    }

    #[test]
    fn realistic_analytics_js_order_completed_payload_is_accepted() {
        let value: Value = serde_json::from_str(ANALYTICS_JS_ORDER_COMPLETED).expect("valid JSON");
        let ev = parse_track(&value).expect("valid event");
        assert_eq!(ev.name, EventName::OrderCompleted);
        assert_eq!(ev.user_id, None);
        assert_eq!(ev.context.locale.as_deref(), Some("en-US"));
        let o = order(&ev);
        assert_eq!(o.order_id.as_deref(), Some("50314b8e9bcf000000000000"));
        assert_eq!(o.total, Some(dec!(27.50)));
        assert_eq!(o.total.map(|d| d.to_string()), Some("27.50".to_owned()));
        assert_eq!(o.subtotal, Some(dec!(22.50)));
        assert_eq!(o.revenue, Some(dec!(25.00)));
        assert_eq!(o.shipping, Some(dec!(3)));
        assert_eq!(o.tax, Some(dec!(2)));
        assert_eq!(o.discount, Some(dec!(2.5)));
        assert_eq!(o.currency, Currency::USD);
        assert_eq!(o.products.len(), 2);
        assert_eq!(o.products[1].quantity, Some(2));
        assert_eq!(o.products[1].price, Some(dec!(3)));

        let e = enrichment();
        let enriched = enrich(ev, &e);
        assert_eq!(
            enriched.event_id,
            "m:ajs-next-1714564797456-4f1c2b7e-9d3a-4e51-8a0b-2f6d7c8e9a10"
        );
        assert_eq!(enriched.timestamp, datetime!(2024-05-01 11:59:57.456 UTC));
        assert_eq!(enriched.device_class, DeviceClass::Desktop);
        assert_eq!(enriched.campaign.name.as_deref(), Some("spring_sale"));
        assert_eq!(enriched.country.as_deref(), Some("DE"));
        assert_eq!(enriched.edge_node, "fra-03");
        assert_eq!(
            enriched.experiments.get("checkout_v2").map(String::as_str),
            Some("b")
        );
    }

    #[test]
    fn owned_parsing_moves_strings_and_agrees_with_borrowed_parsing() {
        let value: Value = serde_json::from_str(ANALYTICS_JS_ORDER_COMPLETED).expect("valid JSON");
        let borrowed = parse_track(&value).expect("valid");
        let owned = parse_track_owned(value).expect("valid");
        assert_eq!(owned, borrowed);
        let e = enrichment();
        assert_eq!(enrich(owned, &e), enrich(borrowed, &e));
    }

    #[test]
    fn decimals_serialize_as_strings() {
        let ev = viewed_with_price("19.90").expect("valid");
        let json = serde_json::to_value(enrich(ev, &enrichment())).expect("serializes");
        assert_eq!(
            json["properties"]["product"]["product"]["price"],
            json!("19.90")
        );
        assert_eq!(json["properties"]["product"]["currency"], json!("USD"));
        assert_eq!(json["name"], json!("Product Viewed"));
        assert_eq!(json["device_class"], json!("unknown"));
    }

    #[test]
    fn enriched_event_json_round_trip_is_lossless() {
        let value: Value = serde_json::from_str(ANALYTICS_JS_ORDER_COMPLETED).expect("valid JSON");
        let mut e = enrichment();
        e.received_at = datetime!(2024-05-01 12:00:00.123456789 UTC);
        let samples = vec![
            enrich(parse_track(&value).expect("valid"), &e),
            enrich(viewed_with_price("1e-28").expect("valid"), &e),
            enrich(
                ok(
                    json!({"type": "page", "name": "Home", "userId": "u", "properties": {"search": "?utm_term=x"}}),
                ),
                &e,
            ),
            enrich(
                ok(
                    json!({"event": "Product List Filtered", "anonymousId": "a", "properties": {"filters": [{"type": "t", "value": 1.50}]}}),
                ),
                &e,
            ),
        ];
        for enriched in samples {
            let text = serde_json::to_string(&enriched).expect("serializes");
            let back: EnrichedEvent = serde_json::from_str(&text).expect("deserializes");
            assert_eq!(back, enriched);
            assert_eq!(serde_json::to_string(&back).expect("serializes"), text);
            // Through a Value too, as a forwarding layer might do.
            let via_value: EnrichedEvent =
                serde_json::from_value(serde_json::to_value(&enriched).expect("to value"))
                    .expect("from value");
            assert_eq!(via_value, enriched);
        }
    }

    // ----- robustness -----

    fn arb_number() -> impl Strategy<Value = Value> {
        "-?[0-9]{1,3}|-?[0-9]{1,40}(\\.[0-9]{1,40})?([eE][+-]?[0-9]{1,6})?"
            .prop_map(|s| serde_json::from_str::<Value>(&s).unwrap_or(Value::Null))
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,12}",
            Just("Order Completed".to_owned()),
            Just("Product Viewed".to_owned()),
            Just("Products Searched".to_owned()),
            Just("page".to_owned()),
            Just("track".to_owned()),
            Just("USD".to_owned()),
            Just("2024-05-01T11:59:57.456Z".to_owned()),
            Just("0000-01-01T00:00:00+01:00".to_owned()),
            Just("9999-12-31T23:59:59-23:59".to_owned()),
            Just("2024-05-01T23:59:60Z".to_owned()),
            Just("?utm_source=a%2&utm_medium=%E9+x".to_owned()),
            "-?[0-9]{1,20}(\\.[0-9]{0,20})?(e[0-9]{1,3})?",
            "[a-z%+=&?#]{0,40}",
        ]
    }

    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec![
                "type", "event", "name", "anonymousId", "userId", "messageId", "timestamp",
                "originalTimestamp", "sentAt", "context", "properties", "products", "product_id",
                "sku", "price", "quantity", "total", "revenue", "order_id", "query", "currency",
                "position", "step", "filters", "sorts", "value", "page", "campaign", "url",
                "search", "userAgent", "ip", "discount", "rating",
            ])
            .prop_map(str::to_owned),
            1 => "[a-zA-Z_]{0,10}",
        ]
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            arb_number(),
            arb_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 96, 10, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..10).prop_map(Value::Array),
                prop::collection::vec((arb_key(), inner), 0..12)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn arb_event_like() -> impl Strategy<Value = Value> {
        let name = prop_oneof![
            4 => prop::sample::select(EventName::ECOMMERCE.to_vec())
                .prop_map(|n| Value::String(n.as_str().to_owned())),
            1 => arb_json(),
        ];
        let kind = prop::sample::select(vec![
            json!("track"),
            json!("track"),
            json!("page"),
            json!(null),
            json!("identify"),
        ]);
        let context = prop_oneof![
            3 => (arb_string(), arb_string(), arb_string(), prop::option::of(arb_string()))
                .prop_map(|(url, search, ua, source)| {
                    json!({
                        "ip": "198.51.100.7",
                        "userAgent": ua,
                        "page": {"url": format!("https://s.example/?{url}"), "search": search},
                        "campaign": {"source": source},
                    })
                }),
            1 => arb_json(),
        ];
        let message_id = prop::option::of(prop_oneof![
            3 => "[a-z0-9-]{1,20}".prop_map(Value::String),
            1 => arb_json(),
        ]);
        let anonymous_id = prop_oneof![6 => Just(json!("anon-1")), 1 => arb_json()];
        let product = prop::collection::btree_map(
            prop::sample::select(vec![
                "product_id",
                "sku",
                "price",
                "quantity",
                "position",
                "name",
                "url",
                "currency",
                "order_id",
                "total",
                "revenue",
                "query",
                "step",
                "discount",
                "filters",
            ])
            .prop_map(str::to_owned),
            prop_oneof![
                arb_number(),
                arb_string().prop_map(Value::String),
                arb_json()
            ],
            0..8,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()));
        let products = prop::collection::vec(product.clone(), 0..4).prop_map(Value::Array);
        let properties = prop_oneof![
            2 => (product, products).prop_map(|(mut p, products)| {
                p["products"] = products;
                p
            }),
            1 => arb_json(),
        ];
        let timestamp = prop_oneof![arb_string().prop_map(Value::String), arb_json()];
        (
            kind,
            name,
            anonymous_id,
            context,
            properties,
            message_id,
            timestamp,
        )
            .prop_map(
                |(kind, name, anonymous_id, context, properties, message_id, timestamp)| {
                    let mut obj = json!({
                        "type": kind,
                        "event": name,
                        "anonymousId": anonymous_id,
                        "context": context,
                        "properties": properties,
                        "timestamp": timestamp,
                    });
                    if let Some(m) = message_id {
                        obj["messageId"] = m;
                    }
                    obj
                },
            )
    }

    fn check_never_panics(value: &Value) {
        match parse_both(value) {
            Ok(ev) => {
                let enriched = enrich(ev, &enrichment());
                let text = serde_json::to_string(&enriched).expect("serializes");
                let back: EnrichedEvent = serde_json::from_str(&text).expect("deserializes");
                assert_eq!(back, enriched);
            }
            Err(errs) => {
                assert!(!errs.is_empty());
                for e in errs {
                    assert!(!e.field.is_empty() && !e.message.is_empty());
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_json_values_never_panic_the_validator(value in arb_json()) {
            check_never_panics(&value);
        }

        #[test]
        fn arbitrary_event_shaped_values_never_panic_and_valid_ones_round_trip(value in arb_event_like()) {
            check_never_panics(&value);
        }

        #[test]
        fn arbitrary_strings_never_panic_the_decimal_parser(s in "\\PC{0,60}|[-+0-9.eE]{0,60}") {
            let _ = parse_exact_decimal(&s);
        }

        #[test]
        fn decimal_literals_within_range_read_back_exactly(
            int in 0u64..1_000_000_000_000,
            frac in prop::option::of("[0-9]{1,12}"),
        ) {
            let literal = match &frac {
                Some(f) => format!("{int}.{f}"),
                None => int.to_string(),
            };
            let parsed = parse_exact_decimal(&literal).expect("in range");
            prop_assert_eq!(parsed.to_string(), literal.clone());
            prop_assert_eq!(Some(parsed), Decimal::from_str_exact(&literal).ok());
        }
    }
}
