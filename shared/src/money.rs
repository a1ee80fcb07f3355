//! Money: exact decimal amounts in an ISO 4217 currency.
//!
//! Amounts are `rust_decimal::Decimal` end to end; there is no float anywhere money flows. Each
//! currency rounds to its own minor units (JPY 0, EUR 2, KWD 3) with banker's rounding avoided in
//! favour of half-away-from-zero, which is what shoppers and tax authorities expect on receipts.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a currency code or an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not an ISO 4217 code that has minor units (funds and metals such as XAU are refused).
    #[error("`{0}` is not a supported ISO 4217 currency code")]
    UnknownCurrency(String),
    /// Two amounts in different currencies were combined.
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
    /// The amount text is not a decimal number.
    #[error("`{0}` is not a decimal amount")]
    InvalidAmount(String),
    /// A percentage outside 0..=100.
    #[error("percentage {0} is outside 0..=100")]
    InvalidPercentage(Decimal),
    /// The arithmetic left the range `Decimal` can represent.
    #[error("amount overflow")]
    Overflow,
}

/// An ISO 4217 currency with minor units, e.g. EUR (2), JPY (0), KWD (3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Euro, the default currency of the demo catalog.
    pub const EUR: Currency = Currency(iso_currency::Currency::EUR);
    /// US dollar, the default of Segment events without a currency.
    pub const USD: Currency = Currency(iso_currency::Currency::USD);

    /// Parses an upper-case ISO 4217 code; only currencies with defined minor units are accepted.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        iso_currency::Currency::from_code(code)
            .filter(|c| c.exponent().is_some())
            .map(Currency)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.chars().take(8).collect()))
    }

    /// The three-letter code.
    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// Number of minor-unit digits (2 for EUR, 0 for JPY).
    pub fn minor_units(&self) -> u32 {
        // `parse` only admits currencies with an exponent, so the fallback is unreachable.
        u32::from(self.0.exponent().unwrap_or(2))
    }
}

/// USD: the Segment e-commerce spec's currency for events that name none.
impl Default for Currency {
    fn default() -> Self {
        Currency::USD
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount in a currency. JSON shape: `{"amount": "12.50", "currency": "EUR"}`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "MoneyWire")]
pub struct Money {
    /// Always serialized as a decimal string, never a JSON number.
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: Currency,
}

/// The JSON shape, read first so that every deserialized amount goes through [`Money::new`]
/// (rounded and scaled to the currency's minor units, like every other amount).
#[derive(Deserialize)]
struct MoneyWire {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: Currency,
}

impl From<MoneyWire> for Money {
    fn from(w: MoneyWire) -> Self {
        Money::new(w.amount, w.currency)
    }
}

impl Money {
    /// An amount rounded to the currency's minor units.
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Money { amount, currency }.rounded()
    }

    /// Zero in the given currency.
    pub fn zero(currency: Currency) -> Self {
        Money::new(Decimal::ZERO, currency)
    }

    /// Parses an amount string such as `"12.50"`, exactly.
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        let amount = Decimal::from_str_exact(amount.trim())
            .map_err(|_| MoneyError::InvalidAmount(amount.chars().take(32).collect()))?;
        Ok(Money::new(amount, currency))
    }

    /// The amount.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }

    /// Rounds half away from zero to the currency's minor units and fixes the scale, so that
    /// `12.5 EUR` prints as `12.50`.
    pub fn rounded(self) -> Self {
        let dp = self.currency.minor_units();
        let mut amount = self
            .amount
            .round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
        amount.rescale(dp);
        Money {
            amount,
            currency: self.currency,
        }
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.currency, other.currency))
        }
    }

    /// Exact sum; refuses to mix currencies.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// Exact difference; refuses to mix currencies.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// The amount times a whole quantity.
    pub fn checked_mul(&self, quantity: u32) -> Result<Money, MoneyError> {
        let amount = self
            .amount
            .checked_mul(Decimal::from(quantity))
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// `percent`% of this amount, rounded to minor units (used for percentage discounts).
    pub fn percentage(&self, percent: Decimal) -> Result<Money, MoneyError> {
        if percent < Decimal::ZERO || percent > Decimal::ONE_HUNDRED {
            return Err(MoneyError::InvalidPercentage(percent));
        }
        let amount = self
            .amount
            .checked_mul(percent)
            .and_then(|v| v.checked_div(Decimal::ONE_HUNDRED))
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency))
    }

    /// The smaller of two amounts in the same currency.
    pub fn min(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        Ok(if other.amount < self.amount {
            other
        } else {
            self
        })
    }

    /// The amount as a whole number of minor units (cents for EUR), for storage as an integer
    /// column that databases sum exactly.
    pub fn to_minor_units(&self) -> Result<i64, MoneyError> {
        let scaled = self
            .amount
            .checked_mul(Decimal::from(10i64.pow(self.currency.minor_units())))
            .ok_or(MoneyError::Overflow)?;
        i64::try_from(scaled.trunc()).map_err(|_| MoneyError::Overflow)
    }

    /// The amount `minor` minor units represent, e.g. 1250 EUR cents → `12.50`.
    pub fn from_minor_units(minor: i64, currency: Currency) -> Self {
        Money::new(Decimal::new(minor, currency.minor_units()), currency)
    }

    /// Sums amounts exactly; an empty sum is zero in `currency`.
    pub fn sum<'a>(
        currency: Currency,
        items: impl IntoIterator<Item = &'a Money>,
    ) -> Result<Money, MoneyError> {
        items
            .into_iter()
            .try_fold(Money::zero(currency), |acc, m| acc.checked_add(m))
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn eur(s: &str) -> Money {
        Money::parse(s, Currency::EUR).unwrap()
    }

    #[test]
    fn amounts_round_to_the_currency_minor_units() {
        assert_eq!(eur("12.345").amount(), dec!(12.35));
        assert_eq!(eur("12.344").amount(), dec!(12.34));
        let yen = Money::parse("199.5", Currency::parse("JPY").unwrap()).unwrap();
        assert_eq!(yen.amount(), dec!(200));
        let dinar = Money::parse("1.2345", Currency::parse("KWD").unwrap()).unwrap();
        assert_eq!(dinar.amount(), dec!(1.235));
    }

    #[test]
    fn negative_midpoints_round_away_from_zero() {
        assert_eq!(eur("-0.005").amount(), dec!(-0.01));
    }

    #[test]
    fn amounts_serialize_as_decimal_strings_with_fixed_scale() {
        let json = serde_json::to_string(&eur("12.5")).unwrap();
        assert_eq!(json, r#"{"amount":"12.50","currency":"EUR"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, eur("12.50"));
    }

    #[test]
    fn sums_are_exact_where_floats_are_not() {
        let tenth = eur("0.10");
        let parts = vec![tenth; 3];
        assert_eq!(Money::sum(Currency::EUR, &parts).unwrap(), eur("0.30"));
        // The same sum in f64 is 0.30000000000000004; Decimal has no such drift.
    }

    #[test]
    fn mixing_currencies_is_refused() {
        let usd = Money::parse("1", Currency::USD).unwrap();
        assert_eq!(
            eur("1").checked_add(&usd),
            Err(MoneyError::CurrencyMismatch(Currency::EUR, Currency::USD))
        );
    }

    #[test]
    fn percentage_discounts_round_per_currency() {
        assert_eq!(eur("19.99").percentage(dec!(15)).unwrap(), eur("3.00"));
        assert_eq!(eur("0.05").percentage(dec!(10)).unwrap(), eur("0.01"));
        assert!(eur("1").percentage(dec!(101)).is_err());
        assert!(eur("1").percentage(dec!(-1)).is_err());
    }

    #[test]
    fn unknown_and_unit_less_currencies_are_refused() {
        assert!(Currency::parse("EUR").is_ok());
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("XAU").is_err());
        assert!(Currency::parse("ZZZ").is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1","currency":"ZZZ"}"#).is_err());
    }

    #[test]
    fn deserialized_amounts_are_rounded_and_scaled_like_any_other() {
        let m: Money = serde_json::from_str(r#"{"amount":"12.5","currency":"EUR"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"amount":"12.50","currency":"EUR"}"#
        );
        let m: Money = serde_json::from_str(r#"{"amount":"9.999","currency":"EUR"}"#).unwrap();
        assert_eq!(m.amount(), dec!(10.00));
        assert_eq!(m.amount().scale(), 2);
    }

    #[test]
    fn float_amounts_in_json_are_refused() {
        assert!(serde_json::from_str::<Money>(r#"{"amount":1.5,"currency":"EUR"}"#).is_err());
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let big = Money::new(Decimal::MAX, Currency::JPY_FOR_TEST);
        assert_eq!(big.checked_mul(2), Err(MoneyError::Overflow));
    }

    impl Currency {
        const JPY_FOR_TEST: Currency = Currency(iso_currency::Currency::JPY);
    }

    #[test]
    fn minor_units_round_trip_for_two_zero_and_three_decimal_currencies() {
        for (code, text, minor) in [
            ("EUR", "12.50", 1250),
            ("JPY", "1250", 1250),
            ("KWD", "1.250", 1250),
        ] {
            let c = Currency::parse(code).unwrap();
            let m = Money::parse(text, c).unwrap();
            assert_eq!(m.to_minor_units().unwrap(), minor, "{code}");
            assert_eq!(Money::from_minor_units(minor, c), m, "{code}");
        }
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(
            Money::from_minor_units(-5, eur).amount().to_string(),
            "-0.05"
        );
    }
}
