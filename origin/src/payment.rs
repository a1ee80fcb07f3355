//! Payment providers behind one interface; the built-in `test` provider approves or declines as
//! the request says, so checkout can be exercised end to end without a payment account.

use std::fmt::Debug;

use async_trait::async_trait;
use edgefront_shared::money::Money;

/// What the shopper asked the provider to do (for the test provider: the outcome to simulate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    /// Provider name, e.g. `test`.
    pub provider: String,
    /// `approve` or `decline` for the test provider.
    pub outcome: String,
}

/// A provider's answer to an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Funds are held; `reference` identifies the authorization for capture or void.
    Approved {
        /// Provider reference.
        reference: String,
    },
    /// The payment was declined.
    Declined {
        /// Why, as the provider says.
        reason: String,
    },
}

/// Why a provider call failed (not a decline: the provider could not answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The request names a provider or outcome this provider does not know.
    #[error("{0}")]
    Invalid(String),
    /// The provider is unreachable or failed.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

/// A payment provider: authorize, then capture once the order is committed, or void.
#[async_trait]
pub trait PaymentProvider: Send + Sync + Debug {
    /// Authorizes `amount` for an order.
    async fn authorize(
        &self,
        order_id: &str,
        amount: Money,
        request: &PaymentRequest,
    ) -> Result<Authorization, PaymentError>;
    /// Captures an approved authorization.
    async fn capture(&self, reference: &str) -> Result<(), PaymentError>;
    /// Releases an approved authorization that will not be captured.
    async fn void(&self, reference: &str) -> Result<(), PaymentError>;
}

/// The built-in test provider.
#[derive(Debug, Default, Clone, Copy)]
pub struct TestProvider;

#[async_trait]
impl PaymentProvider for TestProvider {
    async fn authorize(
        &self,
        order_id: &str,
        _amount: Money,
        request: &PaymentRequest,
    ) -> Result<Authorization, PaymentError> {
        if request.provider != "test" {
            return Err(PaymentError::Invalid(format!(
                "unknown payment provider `{}`",
                request.provider.chars().take(32).collect::<String>()
            )));
        }
        match request.outcome.as_str() {
            "approve" => Ok(Authorization::Approved {
                reference: format!("test_{order_id}"),
            }),
            "decline" => Ok(Authorization::Declined {
                reason: "declined by the test provider".into(),
            }),
            // An outage, for drills and the checkout-error alert's tests.
            "unavailable" => Err(PaymentError::Unavailable(
                "the test provider simulated an outage".into(),
            )),
            _ => Err(PaymentError::Invalid(
                "outcome must be `approve`, `decline` or `unavailable`".into(),
            )),
        }
    }

    async fn capture(&self, _reference: &str) -> Result<(), PaymentError> {
        Ok(())
    }

    async fn void(&self, _reference: &str) -> Result<(), PaymentError> {
        Ok(())
    }
}
