//! The rate-limit port on the local host: `governor`'s keyed GCRA limiters in memory, one per
//! quota size. GCRA spreads a quota over its minute (a burst of the whole quota, then one
//! request per `60 s / quota`), so there is no burst at every minute's start as with fixed
//! windows; a refused request takes nothing from the quota.

use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use edgefront_functions::ports::{Decision, PortError, RateKey, RateLimiter};
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};

type Keyed = Arc<DefaultKeyedRateLimiter<String>>;

/// Keyed GCRA limiters, one per distinct quota (the functions ask for at most six).
#[derive(Debug, Default)]
pub struct GcraLimiter {
    by_quota: RwLock<Vec<(u32, Keyed)>>,
}

impl GcraLimiter {
    /// No request counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn limiter(&self, per_minute: NonZeroU32) -> Keyed {
        let found = self
            .by_quota
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(q, _)| *q == per_minute.get())
            .map(|(_, l)| Arc::clone(l));
        if let Some(limiter) = found {
            return limiter;
        }
        let mut all = self
            .by_quota
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, l)) = all.iter().find(|(q, _)| *q == per_minute.get()) {
            return Arc::clone(l);
        }
        let limiter = Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_minute(
            per_minute,
        )));
        all.push((per_minute.get(), Arc::clone(&limiter)));
        limiter
    }

    /// Forgets keys whose quota is full again, so memory follows the active clients only; the
    /// host calls it on its flush timer.
    pub fn retain_recent(&self) {
        for (_, limiter) in self
            .by_quota
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys tracked (for tests).
    pub fn len(&self) -> usize {
        self.by_quota
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, l)| l.len())
            .sum()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl RateLimiter for GcraLimiter {
    async fn check(&self, key: &RateKey<'_>, _now_ms: i64) -> Result<Decision, PortError> {
        let Some(per_minute) = NonZeroU32::new(key.per_minute) else {
            return Ok(Decision::ALLOWED);
        };
        let limiter = self.limiter(per_minute);
        match limiter.check_key(&key.key()) {
            Ok(()) => Ok(Decision::ALLOWED),
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                // Whole seconds, rounded up: a client that waits that long is let through.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Ok(Decision::refused(secs))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use edgefront_functions::ports::{RouteClass, Scope};

    use super::*;

    #[tokio::test]
    async fn a_key_gets_its_quota_then_a_wait_and_other_keys_are_unaffected() {
        let limiter = GcraLimiter::new();
        let key = |subject| RateKey {
            scope: Scope::Ip,
            class: RouteClass::Write,
            subject,
            per_minute: 3,
        };
        for _ in 0..3 {
            assert!(limiter.check(&key("1.2.3.4"), 0).await.unwrap().allowed);
        }
        let refused = limiter.check(&key("1.2.3.4"), 0).await.unwrap();
        assert!(!refused.allowed);
        // One request comes back every 20 s.
        assert!((1..=20).contains(&refused.retry_after_secs), "{refused:?}");
        assert!(limiter.check(&key("5.6.7.8"), 0).await.unwrap().allowed);
        assert_eq!(limiter.len(), 2);
    }
}
