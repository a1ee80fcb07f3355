//! `POST /v1/events`: one Segment-style call or `{"batch": [...]}` of up to 500.
//!
//! Valid events are enriched (edge node, country, device, campaign, experiment variants) and
//! counted in this node's sketches. What reaches the origin's warehouse depends on consent
//! (`edgefront_shared::privacy`): with analytics consent in the shopper's session token, the
//! event is queued with pseudonymous visitor ids; without it, only its id, minute and name are
//! (so the origin counts it once). Invalid events are answered per index with reasons, not counted, and queued
//! for the origin's quarantine with their reasons and a scrubbed payload.

use std::collections::BTreeMap;

use bytes::Bytes;
use edgefront_shared::analytics;
use edgefront_shared::catalog_parts::CatalogNeed;
use edgefront_shared::events::{self, EnrichedEvent, Enrichment, Properties};
use edgefront_shared::privacy::{self, AnonymousEvent, DeliveryPart, QuarantinedEvent};
use edgefront_shared::recommend;
use edgefront_shared::sketch::CounterSet;
use edgefront_shared::trace::TraceContext;
use http::{Request, Response, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

use crate::App;
use crate::flush::outbox_key;
use crate::ports::Platform;
use crate::problem::ApiError;
use crate::request::{self, SESSION_COOKIE, SESSION_TOKEN_HEADER};
use crate::routes::now_secs;

#[derive(Serialize)]
struct Rejected {
    index: usize,
    errors: Vec<String>,
}

#[derive(Serialize)]
struct Answer {
    accepted: usize,
    rejected: Vec<Rejected>,
}

/// What the outbox holds and the origin's ingest endpoint receives.
#[derive(Serialize)]
struct OutboxBatch<'a> {
    batch_id: &'a str,
    edge_node: &'a str,
    events: &'a [EnrichedEvent],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    parts: &'a [DeliveryPart],
}

fn country(req: &Request<Bytes>) -> Option<String> {
    crate::GEO_HEADERS
        .iter()
        .filter_map(|h| req.headers().get(*h))
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .find(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .map(str::to_ascii_uppercase)
}

pub(crate) async fn ingest<P: Platform>(
    app: &App<P>,
    req: &Request<Bytes>,
) -> Result<Response<Bytes>, ApiError> {
    let body = request::checked_body(req, app.config().max_events_body_bytes, true)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidJson(request::short_json_error(&e)))?;
    let items: Vec<Value> = match value {
        Value::Object(mut map) if map.contains_key("batch") => match map.remove("batch") {
            Some(Value::Array(items)) => items,
            _ => return Err(ApiError::InvalidJson("`batch` must be an array".to_owned())),
        },
        single @ Value::Object(_) => vec![single],
        _ => {
            return Err(ApiError::InvalidJson(
                "expected an event object or {\"batch\": [...]}".to_owned(),
            ));
        }
    };
    if items.len() > app.config().max_batch {
        return Err(ApiError::BatchTooLarge(app.config().max_batch));
    }

    let now_ms = app.ports.now_ms();
    let received_at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    let country = country(req);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let experiment = &app.config().experiment;
    // Consent is the session token's to say. An absent, expired or refused token is no
    // consent, not an error: a beacon cannot act on one, and the events still count,
    // anonymously.
    let consent = request::token_from(req.headers(), SESSION_TOKEN_HEADER, SESSION_COOKIE)
        .and_then(|t| app.keys().verify_session(&t, now_secs(app)).ok())
        .is_some_and(|s| s.consent.analytics);
    let salt = app.keys().visitor_salt();
    // Parsed first, so the catalog read names only the products the events are about
    // (catalog_parts): the ids and SKUs of single-product events, all `analytics` looks up.
    let parsed: Vec<_> = items.into_iter().map(events::parse_track_owned).collect();
    let products = parsed
        .iter()
        .filter_map(|ev| match ev {
            Ok(ev) => match &ev.properties {
                Properties::Product(props) => Some(&props.product),
                _ => None,
            },
            Err(_) => None,
        })
        .flat_map(|p| [p.product_id.clone(), p.sku.clone()])
        .flatten()
        .collect();
    let snapshot = app
        .ports
        .snapshot_for(&CatalogNeed::Products(products))
        .await?;

    // One enrichment for the whole request; the experiment arm is per visitor, added below.
    let enrichment = Enrichment {
        received_at,
        edge_node: app.ports.edge_node().to_owned(),
        country,
        user_agent,
        experiments: BTreeMap::new(),
        trace_id: req
            .extensions()
            .get::<TraceContext>()
            .map(|t| t.trace_id.clone()),
    };
    let mut accepted: Vec<EnrichedEvent> = Vec::with_capacity(parsed.len());
    let mut anonymous = Vec::new();
    let mut rejected = Vec::new();
    let mut delta = CounterSet::new();
    let mut valid = 0;
    let mut seen_ids = std::collections::HashSet::with_capacity(parsed.len());
    for (index, parsed) in parsed.into_iter().enumerate() {
        match parsed {
            Ok(ev) => {
                let mut enriched = events::enrich(ev, &enrichment);
                if consent {
                    // The same deterministic arm the recommendations route showed this
                    // visitor, from the client's id, before it becomes a pseudonym.
                    let visitor = enriched
                        .anonymous_id
                        .as_deref()
                        .or(enriched.user_id.as_deref());
                    if let Some(visitor) = visitor {
                        let arm = recommend::assign_variant(experiment, visitor).as_str();
                        enriched
                            .experiments
                            .insert(experiment.clone(), arm.to_owned());
                    }
                    privacy::pseudonymize(&mut enriched, salt);
                } else {
                    privacy::anonymize(&mut enriched);
                }
                // Counters are keyed by product id: resolve an event that names only its SKU.
                if let Properties::Product(props) = &mut enriched.properties
                    && props.product.product_id.is_none()
                    && let Some(p) = props
                        .product
                        .sku
                        .as_deref()
                        .and_then(|s| snapshot.by_sku(s))
                {
                    props.product.product_id = Some(p.id.clone());
                }
                // A client retrying inside one batch must not count twice; across batches the
                // origin de-duplicates by event id.
                valid += 1;
                if !seen_ids.insert(enriched.event_id.clone()) {
                    continue;
                }
                analytics::record(&mut delta, &enriched, |id| snapshot.get(id).is_some());
                if consent {
                    accepted.push(enriched);
                } else {
                    anonymous.push(AnonymousEvent::of(&enriched));
                }
            }
            Err(errors) => rejected.push(Rejected {
                index,
                errors: errors.iter().map(ToString::to_string).collect(),
            }),
        }
    }

    let quarantined = quarantine(body, &rejected);
    let mut parts = Vec::new();
    if !anonymous.is_empty() || !quarantined.is_empty() {
        parts.push(DeliveryPart {
            batch_id: String::new(),
            anonymous,
            quarantined,
        });
    }
    // Queue first, count second: if queuing fails nothing was counted and the client retries.
    // A standalone edge (no origin) only counts: there is nobody to deliver a queue to.
    if app.ports.configured() && !(accepted.is_empty() && parts.is_empty()) {
        queue(app, now_ms, &accepted, &mut parts).await?;
    }
    if valid == 0 {
        let answer = serde_json::to_value(Answer {
            accepted: 0,
            rejected,
        })
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        return Err(ApiError::InvalidEvents(answer));
    }
    app.ports.record(now_ms.div_euclid(60_000), delta).await?;

    request::json(
        StatusCode::OK,
        &Answer {
            accepted: valid,
            rejected,
        },
    )
}

/// Quarantine records of the refused items. The items were consumed by parsing, so the body
/// is read again, only when something was refused.
fn quarantine(body: &[u8], rejected: &[Rejected]) -> Vec<QuarantinedEvent> {
    if rejected.is_empty() {
        return Vec::new();
    }
    let items = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut map)) if map.contains_key("batch") => map.remove("batch"),
        Ok(single) => Some(Value::Array(vec![single])),
        Err(_) => None,
    };
    let items = match items {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    rejected
        .iter()
        .map(|r| {
            let raw = items.get(r.index).unwrap_or(&Value::Null);
            privacy::quarantine(r.index, raw, r.errors.clone())
        })
        .collect()
}

async fn queue<P: Platform>(
    app: &App<P>,
    now_ms: i64,
    accepted: &[EnrichedEvent],
    parts: &mut [DeliveryPart],
) -> Result<(), ApiError> {
    let batch_id = app.ports.random_id();
    for part in parts.iter_mut() {
        part.batch_id.clone_from(&batch_id);
    }
    let batch = serde_json::to_vec(&OutboxBatch {
        batch_id: &batch_id,
        edge_node: app.ports.edge_node(),
        events: accepted,
        parts,
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    app.ports.put(&outbox_key(now_ms, &batch_id), batch).await?;
    Ok(())
}
