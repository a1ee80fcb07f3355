//! Sales tax by shipping country: tax-exclusive catalog prices, one rate per country, rounded
//! to the currency's minor units once per order (not per line), so the tax on an order equals
//! the rate applied to what the shopper pays.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::money::{Money, MoneyError};

/// Why tax could not be computed or rates not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaxError {
    /// The country is not a two-letter ISO 3166 code.
    #[error("`{0}` is not a two-letter country code")]
    InvalidCountry(String),
    /// No rate is configured for the country and there is no fallback: the shop does not ship
    /// there.
    #[error("orders cannot be shipped to {0}")]
    UnsupportedCountry(String),
    /// A rate in the configuration is not a percentage between 0 and 100.
    #[error("invalid tax rate `{0}`")]
    InvalidRate(String),
    /// Arithmetic failure.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Percentage rates per country, with an optional rate for every other country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxRates {
    rates: BTreeMap<String, Decimal>,
    fallback: Option<Decimal>,
}

impl Default for TaxRates {
    /// Standard VAT rates of a few EU countries and the UK; elsewhere unsupported.
    fn default() -> Self {
        let table = [
            ("DE", 19),
            ("AT", 20),
            ("FR", 20),
            ("NL", 21),
            ("BE", 21),
            ("ES", 21),
            ("IT", 22),
            ("IE", 23),
            ("GB", 20),
        ];
        TaxRates {
            rates: table
                .into_iter()
                .map(|(c, r)| (c.to_owned(), Decimal::from(r)))
                .collect(),
            fallback: None,
        }
    }
}

fn valid_country(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

fn parse_rate(text: &str) -> Result<Decimal, TaxError> {
    let rate = Decimal::from_str(text.trim()).map_err(|_| TaxError::InvalidRate(text.into()))?;
    if rate < Decimal::ZERO || rate > Decimal::ONE_HUNDRED {
        return Err(TaxError::InvalidRate(text.into()));
    }
    Ok(rate)
}

impl TaxRates {
    /// Parses `DE=19,FR=20,*=0`: country codes (upper case) or `*` for every other country,
    /// each with a percentage.
    pub fn parse(spec: &str) -> Result<Self, TaxError> {
        let mut rates = BTreeMap::new();
        let mut fallback = None;
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (country, rate) = item
                .split_once('=')
                .ok_or_else(|| TaxError::InvalidRate(item.into()))?;
            let rate = parse_rate(rate)?;
            let country = country.trim();
            if country == "*" {
                fallback = Some(rate);
            } else if valid_country(country) {
                rates.insert(country.to_owned(), rate);
            } else {
                return Err(TaxError::InvalidCountry(country.into()));
            }
        }
        Ok(TaxRates { rates, fallback })
    }

    /// The percentage for a country.
    pub fn rate(&self, country: &str) -> Result<Decimal, TaxError> {
        if !valid_country(country) {
            return Err(TaxError::InvalidCountry(country.chars().take(8).collect()));
        }
        self.rates
            .get(country)
            .copied()
            .or(self.fallback)
            .ok_or_else(|| TaxError::UnsupportedCountry(country.into()))
    }

    /// Tax on a (discounted) order total shipped to `country`.
    pub fn tax(&self, total: &Money, country: &str) -> Result<Money, TaxError> {
        Ok(total.percentage(self.rate(country)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn eur(text: &str) -> Money {
        Money::parse(text, Currency::parse("EUR").unwrap()).unwrap()
    }

    #[test]
    fn default_rates_parse_and_cover_germany() {
        let rates = TaxRates::default();
        assert_eq!(rates.rate("DE").unwrap(), Decimal::from(19));
        assert_eq!(
            rates.rate("US"),
            Err(TaxError::UnsupportedCountry("US".into()))
        );
    }

    #[test]
    fn tax_is_rounded_half_away_from_zero_to_minor_units() {
        let rates = TaxRates::parse("DE=19").unwrap();
        // 19 % of 10.05 = 1.9095 → 1.91
        assert_eq!(rates.tax(&eur("10.05"), "DE").unwrap(), eur("1.91"));
        // 19 % of 0.50 = 0.095 → 0.10
        assert_eq!(rates.tax(&eur("0.50"), "DE").unwrap(), eur("0.10"));
    }

    #[test]
    fn fallback_rate_applies_to_unlisted_countries() {
        let rates = TaxRates::parse("DE=19, *=0").unwrap();
        assert_eq!(rates.tax(&eur("100"), "US").unwrap(), eur("0"));
    }

    #[test]
    fn bad_specs_and_countries_are_refused() {
        assert!(matches!(
            TaxRates::parse("DE=120"),
            Err(TaxError::InvalidRate(_))
        ));
        assert!(matches!(
            TaxRates::parse("DE=-1"),
            Err(TaxError::InvalidRate(_))
        ));
        assert!(matches!(
            TaxRates::parse("DE"),
            Err(TaxError::InvalidRate(_))
        ));
        assert!(matches!(
            TaxRates::parse("de=19"),
            Err(TaxError::InvalidCountry(_))
        ));
        let rates = TaxRates::default();
        assert!(matches!(
            rates.rate("deu"),
            Err(TaxError::InvalidCountry(_))
        ));
        assert!(matches!(rates.rate(""), Err(TaxError::InvalidCountry(_))));
    }
}
