//! Sketch deltas from the wire: the origin decodes whatever an edge POSTs to
//! `/v1/ingest/sketches` (`Windows::decode`) and merges it into stored `CounterSet`s; the KV
//! and Durable Object hosts decode their own stored sketches. Decoding must never panic, what
//! decodes must re-encode canonically and decode again, and merging and reading what decoded
//! must neither panic nor leave a sketch that no longer decodes.
//!
//! Inputs starting with the `EF` magic are decoded as every kind; anything else drives a
//! small recorder (counts, uniques — sparse and dense — and trending keys over minutes) whose
//! encodings are round-tripped, merged, then edited byte-wise and decoded again, so mutation
//! also starts from valid deep structures.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use edgefront_shared::sketch::{CounterSet, Trending, Uniques, Windows};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = ["views", "carts", "visitors", "trending:product"];
/// Minutes near a realistic "now", so retention decisions are exercised.
const BASE_MINUTE: i64 = 29_000_000;

#[derive(Arbitrary, Debug)]
struct Recording {
    retention: u8,
    a: Vec<Record>,
    b: Vec<Record>,
    /// (position, new byte) edits applied to `a`'s encoding.
    edits: Vec<(u16, u8)>,
}

#[derive(Arbitrary, Debug)]
enum Record {
    Count {
        minute: i8,
        name: u8,
        n: u64,
    },
    Unique {
        minute: i8,
        name: u8,
        id: String,
    },
    /// Many distinct ids at once, enough to turn a uniques sketch dense.
    Uniques {
        minute: i8,
        name: u8,
        from: u32,
        count: u16,
    },
    Trending {
        minute: i8,
        name: u8,
        key: u8,
        n: u64,
    },
}

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"EF") {
        decode_all(data);
        return;
    }
    let Ok(recording) = Recording::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    recorded(&recording);
});

fn decode_all(bytes: &[u8]) {
    if let Ok(sketch) = Uniques::decode(bytes) {
        check_uniques(&sketch);
    }
    if let Ok(sketch) = Trending::decode(bytes) {
        check_trending(&sketch);
    }
    if let Ok(set) = CounterSet::decode(bytes) {
        check_counter_set(&set);
    }
    if let Ok(windows) = Windows::decode(bytes) {
        check_windows(&windows);
    }
}

fn recorded(recording: &Recording) {
    let retention = i64::from(recording.retention.max(1));
    let a = record(&recording.a, retention);
    let b = record(&recording.b, retention);
    // What a node records encodes into something that decodes, canonically.
    let encoded = a.encode();
    assert_eq!(
        Windows::decode(&encoded)
            .expect("a recorded sketch decodes")
            .encode(),
        encoded
    );
    check_windows(&a);
    check_windows(&b);
    let mut merged = a.clone();
    merged
        .merge(&b)
        .expect("sketches with default dimensions merge");
    check_windows(&merged);

    let mut edited = encoded;
    for &(at, byte) in &recording.edits {
        if !edited.is_empty() {
            let at = usize::from(at) % edited.len();
            edited[at] = byte;
        }
    }
    decode_all(&edited);
}

fn record(records: &[Record], retention: i64) -> Windows {
    let mut windows = Windows::new(retention);
    let name = |i: u8| NAMES[usize::from(i) % NAMES.len()];
    for record in records {
        match record {
            Record::Count {
                minute,
                name: n,
                n: count,
            } => windows
                .bucket_mut(BASE_MINUTE + i64::from(*minute))
                .add_count(name(*n), *count),
            Record::Unique {
                minute,
                name: n,
                id,
            } => windows
                .bucket_mut(BASE_MINUTE + i64::from(*minute))
                .add_unique(name(*n), id),
            Record::Uniques {
                minute,
                name: n,
                from,
                count,
            } => {
                let set = windows.bucket_mut(BASE_MINUTE + i64::from(*minute));
                for i in 0..u32::from(*count % 8192) {
                    set.add_unique(name(*n), &format!("visitor-{}", from.wrapping_add(i)));
                }
            }
            Record::Trending {
                minute,
                name: n,
                key,
                n: count,
            } => windows
                .bucket_mut(BASE_MINUTE + i64::from(*minute))
                .add_trending(name(*n), &format!("p-{key}"), *count),
        }
    }
    windows
}

fn check_uniques(sketch: &Uniques) {
    let encoded = sketch.encode();
    let mut again = Uniques::decode(&encoded).expect("a re-encoded uniques sketch decodes");
    assert_eq!(again.encode(), encoded, "uniques encoding is not canonical");
    let mut original = sketch.clone();
    let estimate = original.estimate().estimate;
    assert!(
        estimate.is_finite() && estimate >= 0.0,
        "estimate {estimate}"
    );
    assert_eq!(again.estimate().estimate.to_bits(), estimate.to_bits());
    // Estimating flushes pending codes: the flushed sketch still decodes.
    Uniques::decode(&original.encode()).expect("a flushed uniques sketch decodes");
    // Merging a set with itself or with nothing is the same set.
    let mut doubled = sketch.clone();
    doubled.merge(sketch).expect("same precision");
    let mut into_empty = Uniques::new();
    into_empty.merge(sketch).expect("same precision");
    let mut with_empty = sketch.clone();
    with_empty.merge(&Uniques::new()).expect("same precision");
    for (what, mut merged) in [
        ("self-merge", doubled),
        ("merge into empty", into_empty),
        ("merge of empty", with_empty),
    ] {
        assert_eq!(
            merged.estimate().estimate.to_bits(),
            estimate.to_bits(),
            "{what} changed the estimate"
        );
        assert_eq!(merged.is_empty(), sketch.is_empty(), "{what}");
        Uniques::decode(&merged.encode()).expect("a merged uniques sketch decodes");
    }
}

fn check_trending(sketch: &Trending) {
    let encoded = sketch.encode();
    let again = Trending::decode(&encoded).expect("a re-encoded trending sketch decodes");
    assert_eq!(
        again.encode(),
        encoded,
        "trending encoding is not canonical"
    );
    let top = sketch.top(usize::MAX);
    let dims = sketch.dimensions();
    assert!(top.len() <= dims.capacity as usize);
    for (key, estimate) in &top {
        assert!(
            estimate.estimate >= 1.0,
            "candidate {key:?} was never counted"
        );
        assert_eq!(estimate.estimate, sketch.estimate(key) as f64);
    }
    // Doubling the stream doubles every estimate (count-min adds cell by cell).
    let mut doubled = sketch.clone();
    doubled.merge(sketch).expect("same dimensions");
    assert_eq!(doubled.total(), sketch.total().saturating_mul(2));
    for (key, _) in &top {
        assert_eq!(
            doubled.estimate(key),
            sketch.estimate(key).saturating_mul(2),
            "{key:?}"
        );
    }
    Trending::decode(&doubled.encode()).expect("a self-merged trending sketch decodes");
    // Merging with an empty sketch of the same shape changes nothing, either way round.
    let empty = Trending::with_dimensions(dims.width, dims.depth, dims.capacity)
        .expect("decoded dimensions are valid");
    let mut with_empty = sketch.clone();
    with_empty.merge(&empty).expect("same dimensions");
    assert_eq!(
        with_empty.encode(),
        encoded,
        "merging an empty sketch changed it"
    );
    let mut into_empty = empty;
    into_empty.merge(sketch).expect("same dimensions");
    assert_eq!(into_empty.total(), sketch.total());
    Trending::decode(&into_empty.encode()).expect("a merged trending sketch decodes");
    // Other dimensions are refused, not merged.
    if let Ok(other) = Trending::with_dimensions(dims.width % 7 + 1, dims.depth, dims.capacity)
        && other.dimensions() != dims
    {
        assert!(sketch.clone().merge(&other).is_err());
    }
}

fn check_counter_set(set: &CounterSet) {
    let encoded = set.encode();
    let again = CounterSet::decode(&encoded).expect("a re-encoded counter set decodes");
    assert_eq!(
        again.encode(),
        encoded,
        "counter set encoding is not canonical"
    );
    for sketch in set.unique_sketches().values() {
        check_uniques(sketch);
    }
    for sketch in set.trending_sketches().values() {
        check_trending(sketch);
    }
    let mut doubled = set.clone();
    doubled.merge(set).expect("a set merges with itself");
    for (name, &n) in set.counts() {
        assert_eq!(doubled.count(name), n.saturating_mul(2), "{name:?}");
    }
    let names: Vec<String> = set.unique_sketches().keys().cloned().collect();
    for name in &names {
        let estimate = doubled.uniques(name).estimate;
        assert!(estimate.is_finite() && estimate >= 0.0);
    }
    CounterSet::decode(&doubled.encode()).expect("a merged counter set decodes");
}

fn check_windows(windows: &Windows) {
    let encoded = windows.encode();
    let again = Windows::decode(&encoded).expect("re-encoded windows decode");
    assert_eq!(again.encode(), encoded, "windows encoding is not canonical");
    for (_, set) in windows.iter() {
        check_counter_set(set);
    }
    // How the origin folds a delta in: into fresh windows, and into windows holding it already.
    let mut fresh = Windows::new(windows.retention_minutes());
    fresh.merge(windows).expect("default dimensions merge");
    let mut doubled = windows.clone();
    doubled.merge(windows).expect("a delta merges with itself");
    for merged in [&fresh, &doubled] {
        Windows::decode(&merged.encode()).expect("merged windows decode");
        let all = merged
            .merged(i64::MIN, i64::MAX)
            .expect("buckets of one stream merge");
        CounterSet::decode(&all.encode()).expect("a window's merged set decodes");
    }
    let mut drained = windows.clone();
    let taken = drained.take();
    assert!(drained.is_empty());
    assert_eq!(taken.encode(), encoded, "take changed the delta");
}
