//! Request quotas: which keys a request counts against and how many requests per minute each
//! may make, decided here once for every host; the hosts only count ([`RateLimiter`]).
//!
//! Key design choice: two scopes, each with a quota per route class. Per client IP, generous,
//! because many shoppers can share one address (offices, mobile carriers' NAT); per visitor (the
//! visitor id of a verified session token, else the id of a verified cart token), stricter,
//! because one browser never needs more. Writes and events are stricter than reads. Only
//! verified tokens name a visitor: a forged one cannot spend someone else's quota.
//!
//! Also here: [`FixedWindow`], the per-minute counter of the limiters that keep their state in a
//! key-value store or plain memory (Spin, tests), and [`KvRateLimiter`] over an
//! [`AtomicKeyValue`].

use http::{Method, Request};

use crate::ports::{
    AtomicKeyValue, Decision, MaybeSync, PortError, RateKey, RateLimiter, RouteClass, Scope,
};
use crate::request::{
    CART_COOKIE, CART_TOKEN_HEADER, SESSION_COOKIE, SESSION_TOKEN_HEADER, token_from,
};

/// Requests per minute for each route class; 0 turns that quota off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// GET, HEAD and OPTIONS.
    pub reads: u32,
    /// Cart and session changes.
    pub writes: u32,
    /// `POST /v1/events`.
    pub events: u32,
}

impl Quotas {
    /// Every quota off.
    pub const OFF: Quotas = Quotas {
        reads: 0,
        writes: 0,
        events: 0,
    };

    /// The quota of `class`.
    pub fn of(&self, class: RouteClass) -> u32 {
        match class {
            RouteClass::Read => self.reads,
            RouteClass::Write => self.writes,
            RouteClass::Events => self.events,
        }
    }
}

/// The quotas per client IP and per visitor (requests per minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Per client IP, as the platform reports it.
    pub per_ip: Quotas,
    /// Per visitor (verified session visitor id, else verified cart id).
    pub per_visitor: Quotas,
}

impl RateLimits {
    /// No quota at all (benchmarks, load tests).
    pub const OFF: RateLimits = RateLimits {
        per_ip: Quotas::OFF,
        per_visitor: Quotas::OFF,
    };
}

impl Default for RateLimits {
    /// Production defaults. Per IP: 1,200 reads (20/s), 300 writes and 600 event posts a
    /// minute — room for a shared address, a stop for one flooding source. Per visitor: 600
    /// reads, 60 writes and 120 event posts a minute — far above what one shopper clicks.
    /// `wrangler.toml`'s `[[ratelimits]]` repeat these numbers (a test holds them equal).
    fn default() -> Self {
        RateLimits {
            per_ip: Quotas {
                reads: 1_200,
                writes: 300,
                events: 600,
            },
            per_visitor: Quotas {
                reads: 600,
                writes: 60,
                events: 120,
            },
        }
    }
}

/// The client's IP address, as the platform reports it (Cloudflare's `cf-connecting-ip`, the
/// local host's socket peer, Spin's `spin-client-addr`). Adapters put it in the request's
/// extensions, where a client cannot forge it; without it no per-IP quota applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp(pub String);

/// The route class of a request.
pub fn class_of(method: &Method, path: &str) -> RouteClass {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => RouteClass::Read,
        Method::POST if path == "/v1/events" => RouteClass::Events,
        _ => RouteClass::Write,
    }
}

/// The visitor a request's verified session token (else cart token) names.
fn visitor_of<B>(
    req: &Request<B>,
    keys: &edgefront_shared::tokens::Keyring,
    now: u64,
) -> Option<String> {
    let headers = req.headers();
    if let Some(token) = token_from(headers, SESSION_TOKEN_HEADER, SESSION_COOKIE)
        && let Ok(session) = keys.verify_session(&token, now)
    {
        return Some(format!("s:{}", session.visitor_id));
    }
    token_from(headers, CART_TOKEN_HEADER, CART_COOKIE)
        .and_then(|token| keys.verify_cart(&token, now).ok())
        .map(|cart| format!("c:{}", cart.id))
}

/// Checks `req` against every quota that applies, the visitor's first (the stricter one, so a
/// refusal there leaves the IP's count untouched). `Ok(())` when allowed; the refusal with its
/// wait otherwise. A limiter that fails lets the request through: the storefront stays up when
/// only its abuse counters are unavailable.
pub(crate) async fn admit<L: RateLimiter + ?Sized, B>(
    limiter: &L,
    limits: &RateLimits,
    req: &Request<B>,
    keys: &edgefront_shared::tokens::Keyring,
    now_ms: i64,
) -> Result<(), Decision> {
    let class = class_of(req.method(), req.uri().path());
    let visitor_quota = limits.per_visitor.of(class);
    let visitor = (visitor_quota > 0)
        .then(|| visitor_of(req, keys, u64::try_from(now_ms / 1000).unwrap_or(0)))
        .flatten();
    let ip_quota = limits.per_ip.of(class);
    let ip = (ip_quota > 0)
        .then(|| req.extensions().get::<ClientIp>())
        .flatten();
    let checks = [
        visitor.as_deref().map(|subject| RateKey {
            scope: Scope::Visitor,
            class,
            subject,
            per_minute: visitor_quota,
        }),
        ip.map(|ip| RateKey {
            scope: Scope::Ip,
            class,
            subject: &ip.0,
            per_minute: ip_quota,
        }),
    ];
    for key in checks.iter().flatten() {
        match limiter.check(key, now_ms).await {
            Ok(decision) if !decision.allowed => return Err(decision),
            _ => {}
        }
    }
    Ok(())
}

/// A per-minute fixed window: the minute it counts and the requests counted in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindow {
    /// Unix minute.
    pub minute: i64,
    /// Requests counted in that minute.
    pub count: u32,
}

impl FixedWindow {
    /// Counts one request at `now_ms` against `per_minute`: the window to store (none when
    /// the request is refused: nothing changes) and the decision.
    pub fn count(
        current: Option<FixedWindow>,
        now_ms: i64,
        per_minute: u32,
    ) -> (Option<FixedWindow>, Decision) {
        let minute = now_ms.div_euclid(60_000);
        let count = current
            .filter(|w| w.minute == minute)
            .map_or(0, |w| w.count);
        if count >= per_minute {
            let left_ms = (minute + 1) * 60_000 - now_ms;
            let secs = u64::try_from(left_ms.div_euclid(1000) + i64::from(left_ms % 1000 != 0))
                .unwrap_or(1);
            return (None, Decision::refused(secs));
        }
        (
            Some(FixedWindow {
                minute,
                count: count + 1,
            }),
            Decision::ALLOWED,
        )
    }

    /// 12 bytes: the minute and the count, little endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.minute.to_le_bytes().to_vec();
        out.extend_from_slice(&self.count.to_le_bytes());
        out
    }

    /// The window [`FixedWindow::encode`] wrote; anything else reads as none (a fresh window).
    pub fn decode(bytes: &[u8]) -> Option<FixedWindow> {
        let (minute, count) = bytes.split_first_chunk::<8>()?;
        let count: [u8; 4] = count.try_into().ok()?;
        Some(FixedWindow {
            minute: i64::from_le_bytes(*minute),
            count: u32::from_le_bytes(count),
        })
    }
}

/// Key prefix of the windows a [`KvRateLimiter`] keeps.
pub const RATE_LIMIT_PREFIX: &str = "ratelimit/";

/// Fixed-window quotas in an atomic key-value store, for hosts whose instances share nothing
/// but the store (Spin): one key per quota key and minute, counted by compare-and-swap, so
/// concurrent instances count every request. [`KvRateLimiter::prune`] drops past minutes.
#[derive(Debug)]
pub struct KvRateLimiter<S> {
    store: S,
}

impl<S: AtomicKeyValue + MaybeSync> KvRateLimiter<S> {
    /// Quotas kept in `store`.
    pub fn new(store: S) -> Self {
        KvRateLimiter { store }
    }

    /// Deletes the windows of minutes before the current one (`now_ms`); returns how many.
    /// Hosts call it now and then (Spin: with the claimed flush).
    pub async fn prune(&self, now_ms: i64) -> Result<usize, PortError> {
        let minute = now_ms.div_euclid(60_000);
        let mut dropped = 0;
        for key in self.store.list(RATE_LIMIT_PREFIX, usize::MAX).await? {
            let stale = key
                .strip_prefix(RATE_LIMIT_PREFIX)
                .and_then(|rest| rest.split('/').next())
                .and_then(|m| m.parse::<i64>().ok())
                .is_none_or(|m| m < minute);
            if stale {
                self.store.delete(&key).await?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl<S: AtomicKeyValue + MaybeSync> RateLimiter for KvRateLimiter<S> {
    async fn check(&self, key: &RateKey<'_>, now_ms: i64) -> Result<Decision, PortError> {
        // The minute in the key: a new minute starts a new key, and pruning needs no reads.
        let store_key = format!(
            "{RATE_LIMIT_PREFIX}{:012}/{}",
            now_ms.div_euclid(60_000),
            key.key()
        );
        let mut decision = Decision::ALLOWED;
        let per_minute = key.per_minute;
        self.store
            .update(&store_key, &mut |current| {
                let window = current.and_then(FixedWindow::decode);
                let (next, d) = FixedWindow::count(window, now_ms, per_minute);
                decision = d;
                // Refused: the stored window is written back unchanged.
                Ok(next.or(window).map(|w| w.encode()).unwrap_or_default())
            })
            .await?;
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_window_refuses_past_its_quota_until_the_next_minute_without_counting() {
        let start = 60_000 * 100 + 15_500;
        let mut window = None;
        for _ in 0..3 {
            let (next, d) = FixedWindow::count(window, start, 3);
            assert!(d.allowed);
            window = next;
        }
        let (next, d) = FixedWindow::count(window, start + 1_000, 3);
        assert_eq!(next, None, "a refusal stores nothing");
        // 43.5 s left in the minute: rounded up.
        assert_eq!(d, Decision::refused(44));
        let (next, d) = FixedWindow::count(window, 60_000 * 101, 3);
        assert!(d.allowed);
        assert_eq!(next.map(|w| w.count), Some(1));
        let w = FixedWindow {
            minute: -3,
            count: 7,
        };
        assert_eq!(FixedWindow::decode(&w.encode()), Some(w));
        assert_eq!(FixedWindow::decode(b"short"), None);
    }

    #[test]
    fn routes_fall_into_read_write_and_events_classes() {
        assert_eq!(class_of(&Method::GET, "/v1/products"), RouteClass::Read);
        assert_eq!(class_of(&Method::OPTIONS, "/v1/cart"), RouteClass::Read);
        assert_eq!(class_of(&Method::POST, "/v1/events"), RouteClass::Events);
        assert_eq!(class_of(&Method::POST, "/v1/cart/lines"), RouteClass::Write);
        assert_eq!(class_of(&Method::DELETE, "/v1/events"), RouteClass::Write);
    }

    #[test]
    fn kv_windows_count_per_key_and_past_minutes_are_pruned() {
        use crate::memory::MemoryKv;
        use crate::testing::run_ready;
        let limiter = KvRateLimiter::new(MemoryKv::new());
        let key = |subject| RateKey {
            scope: Scope::Ip,
            class: RouteClass::Write,
            subject,
            per_minute: 2,
        };
        let now = 60_000 * 500;
        for _ in 0..2 {
            assert!(run_ready(limiter.check(&key("a"), now)).unwrap().allowed);
        }
        assert!(!run_ready(limiter.check(&key("a"), now)).unwrap().allowed);
        assert!(run_ready(limiter.check(&key("b"), now)).unwrap().allowed);
        // The next minute: a fresh window, and the old one can go.
        assert!(
            run_ready(limiter.check(&key("a"), now + 60_000))
                .unwrap()
                .allowed
        );
        assert_eq!(run_ready(limiter.prune(now + 60_000)).unwrap(), 2);
        assert_eq!(run_ready(limiter.prune(now + 60_000)).unwrap(), 0);
    }
}
