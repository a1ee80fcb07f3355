//! Analytics: which counters an event feeds, and the marketers' report over a window.
//!
//! Counts that can be exact (events, views) are exact per node and merge by addition; visitor
//! counts are HyperLogLog sketches so that any window, on any set of nodes, is answered by
//! merging rather than summing (summing uniques double-counts returning visitors).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::events::{DeviceClass, EnrichedEvent, EventName, Properties};
use crate::sketch::{CounterSet, Estimate};

/// Unique visitors (anonymousId, else userId).
pub const VISITORS: &str = "visitors";
/// Every accepted event.
pub const EVENTS: &str = "events";
/// Product Viewed events.
pub const PRODUCT_VIEWS: &str = "product_views";
/// Product Added events.
pub const ADD_TO_CART: &str = "add_to_cart";
/// Checkout Started events.
pub const CHECKOUTS_STARTED: &str = "checkouts_started";
/// Order Completed events.
pub const ORDERS_COMPLETED: &str = "orders_completed";
/// Products Searched events.
pub const SEARCHES: &str = "searches";
/// Trending sketch of product views, keyed by product id (the edge resolves SKU-only events).
pub const TRENDING_PRODUCTS: &str = "trending_products";
/// Heavy hitters of events by campaign source (`utm_source`, else [`DIRECT`]). A top-k sketch,
/// not a count per source: sources are client-chosen text, so exact counts would let a client
/// grow the counter set without bound.
pub const TRENDING_SOURCES: &str = "trending_sources";
/// The source of events without a `utm_source`.
pub const DIRECT: &str = "(direct)";

/// Funnel steps in order: (step name, its unique-visitors metric, the event that reaches it).
pub const FUNNEL: [(&str, &str, EventName); 4] = [
    (
        "viewed_product",
        "funnel:viewed_product",
        EventName::ProductViewed,
    ),
    (
        "added_to_cart",
        "funnel:added_to_cart",
        EventName::ProductAdded,
    ),
    (
        "started_checkout",
        "funnel:started_checkout",
        EventName::CheckoutStarted,
    ),
    (
        "completed_order",
        "funnel:completed_order",
        EventName::OrderCompleted,
    ),
];

/// Writes `exp:{name}:{variant}:{what}` into `buf`, reusing its allocation.
fn experiment_metric<'b>(buf: &'b mut String, name: &str, variant: &str, what: &str) -> &'b str {
    buf.clear();
    for part in ["exp:", name, ":", variant, ":", what] {
        buf.push_str(part);
    }
    buf
}

/// Feeds one accepted event into a counter set. `is_product` says whether a product id exists in
/// the catalog: only real products enter the trending sketch, so a client cannot plant
/// arbitrary strings in the marketers' top products.
pub fn record(set: &mut CounterSet, ev: &EnrichedEvent, is_product: impl Fn(&str) -> bool) {
    set.add_count(EVENTS, 1);
    let visitor = ev.anonymous_id.as_deref().or(ev.user_id.as_deref());
    if let Some(v) = visitor {
        set.add_unique(VISITORS, v);
    }
    let count_name = match ev.name {
        EventName::ProductViewed => Some(PRODUCT_VIEWS),
        EventName::ProductAdded => Some(ADD_TO_CART),
        EventName::CheckoutStarted => Some(CHECKOUTS_STARTED),
        EventName::OrderCompleted => Some(ORDERS_COMPLETED),
        EventName::ProductsSearched => Some(SEARCHES),
        _ => None,
    };
    if let Some(name) = count_name {
        set.add_count(name, 1);
    }
    if ev.name == EventName::ProductViewed
        && let Properties::Product(p) = &ev.properties
        && let Some(id) = p.product.product_id.as_deref()
        && is_product(id)
    {
        set.add_trending(TRENDING_PRODUCTS, id, 1);
    }
    if let Some(v) = visitor {
        if let Some((_, metric, _)) = FUNNEL.iter().find(|(_, _, name)| *name == ev.name) {
            set.add_unique(metric, v);
        }
        let mut buf = String::new();
        for (experiment, variant) in &ev.experiments {
            set.add_unique(
                experiment_metric(&mut buf, experiment, variant, "visitors"),
                v,
            );
            if ev.name == EventName::OrderCompleted {
                set.add_unique(
                    experiment_metric(&mut buf, experiment, variant, "converted"),
                    v,
                );
            }
        }
    }
    set.add_trending(
        TRENDING_SOURCES,
        ev.campaign.source.as_deref().unwrap_or(DIRECT),
        1,
    );
    let device = match ev.device_class {
        DeviceClass::Desktop => "device:desktop",
        DeviceClass::Mobile => "device:mobile",
        DeviceClass::Tablet => "device:tablet",
        DeviceClass::Bot => "device:bot",
        DeviceClass::Unknown => "device:unknown",
    };
    set.add_count(device, 1);
}

/// One funnel step of the report.
#[derive(Debug, Clone, Serialize)]
pub struct FunnelStep {
    /// Step name.
    pub step: &'static str,
    /// Visitors who reached it.
    pub visitors: Estimate,
    /// Share of the previous step's visitors (none for the first step or an empty previous).
    pub conversion_from_previous: Option<f64>,
}

/// One trending product.
#[derive(Debug, Clone, Serialize)]
pub struct TopProduct {
    /// Product id.
    pub product_id: String,
    /// Views in the window.
    pub views: Estimate,
}

/// One campaign source.
#[derive(Debug, Clone, Serialize)]
pub struct TopSource {
    /// `utm_source`, or [`DIRECT`].
    pub source: String,
    /// Events in the window (count-min estimate, error bound ε·N).
    pub events: Estimate,
}

/// One arm of an experiment.
#[derive(Debug, Clone, Serialize)]
pub struct Arm {
    /// Visitors exposed.
    pub visitors: Estimate,
    /// Visitors who completed an order.
    pub converted: Estimate,
}

/// The counters report: metric name → estimate with its error bound.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Unique visitors (HyperLogLog, ±error_bound is one standard error).
    pub unique_visitors: Estimate,
    /// Accepted events.
    pub events: Estimate,
    /// Product views.
    pub product_views: Estimate,
    /// Add-to-cart events.
    pub add_to_cart: Estimate,
    /// Checkouts started.
    pub checkouts_started: Estimate,
    /// Orders completed.
    pub orders_completed: Estimate,
    /// Searches.
    pub searches: Estimate,
    /// Most viewed products (count-min estimates, error bound ε·N).
    pub top_products: Vec<TopProduct>,
    /// The conversion funnel, in visitors.
    pub funnel: Vec<FunnelStep>,
    /// Experiment → variant → arm.
    pub experiments: BTreeMap<String, BTreeMap<String, Arm>>,
    /// Device class → events.
    pub devices: BTreeMap<String, Estimate>,
    /// Campaign sources with the most events.
    pub sources: Vec<TopSource>,
}

/// Builds the report from a (merged) counter set.
pub fn report(set: &mut CounterSet, top: usize) -> Report {
    let mut funnel = Vec::with_capacity(FUNNEL.len());
    let mut previous: Option<f64> = None;
    for (step, metric, _) in FUNNEL {
        let visitors = set.uniques(metric);
        let conversion_from_previous = previous
            .filter(|p| *p > 0.0)
            .map(|p| (visitors.estimate / p).min(1.0));
        previous = Some(visitors.estimate);
        funnel.push(FunnelStep {
            step,
            visitors,
            conversion_from_previous,
        });
    }

    let mut experiments: BTreeMap<String, BTreeMap<String, Arm>> = BTreeMap::new();
    let arms: Vec<(String, String)> = set
        .unique_sketches()
        .keys()
        .filter_map(|k| {
            let rest = k.strip_prefix("exp:")?.strip_suffix(":visitors")?;
            let (name, variant) = rest.split_once(':')?;
            Some((name.to_owned(), variant.to_owned()))
        })
        .collect();
    let mut buf = String::new();
    for (name, variant) in arms {
        let arm = Arm {
            visitors: set.uniques(experiment_metric(&mut buf, &name, &variant, "visitors")),
            converted: set.uniques(experiment_metric(&mut buf, &name, &variant, "converted")),
        };
        experiments.entry(name).or_default().insert(variant, arm);
    }

    let devices = set
        .counts()
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("device:")
                .map(|d| (d.to_owned(), Estimate::exact(*v)))
        })
        .collect();

    Report {
        unique_visitors: set.uniques(VISITORS),
        events: set.count_estimate(EVENTS),
        product_views: set.count_estimate(PRODUCT_VIEWS),
        add_to_cart: set.count_estimate(ADD_TO_CART),
        checkouts_started: set.count_estimate(CHECKOUTS_STARTED),
        orders_completed: set.count_estimate(ORDERS_COMPLETED),
        searches: set.count_estimate(SEARCHES),
        top_products: set
            .top(TRENDING_PRODUCTS, top)
            .into_iter()
            .map(|(product_id, views)| TopProduct { product_id, views })
            .collect(),
        funnel,
        experiments,
        devices,
        sources: set
            .top(TRENDING_SOURCES, top)
            .into_iter()
            .map(|(source, events)| TopSource { source, events })
            .collect(),
    }
}
