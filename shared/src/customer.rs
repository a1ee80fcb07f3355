//! The shopper's contact details, validated once where they enter (zero2prod's `parse`
//! newtypes): code holding an [`Email`] never re-checks it.

use std::fmt;

/// Why an email address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("email must be an address such as name@example.com")]
pub struct InvalidEmail;

/// A plausible email address: one `@`, a non-empty local part, a dotted domain, no spaces or
/// control characters, at most 254 bytes. Deliverability is the mail system's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Checks `text` (trimmed) and wraps it.
    pub fn parse(text: &str) -> Result<Email, InvalidEmail> {
        let text = text.trim();
        let (local, domain) = text.split_once('@').ok_or(InvalidEmail)?;
        let ok = text.len() <= 254
            && !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && !text.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(Email(text.to_owned()))
        } else {
            Err(InvalidEmail)
        }
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_addresses_parse_and_are_trimmed() {
        assert_eq!(
            Email::parse(" a.b+c@shop.example ").unwrap().as_str(),
            "a.b+c@shop.example"
        );
    }

    #[test]
    fn implausible_addresses_are_refused() {
        let long = format!("{}@example.com", "a".repeat(250));
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@b",
            "a@.example",
            "a@example.",
            "a@b@example.com",
            "a b@example.com",
            "a@exa\u{7}mple.com",
            &long,
        ] {
            assert_eq!(Email::parse(bad), Err(InvalidEmail), "{bad:?}");
        }
    }
}
