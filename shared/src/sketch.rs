//! Mergeable sketch counters for real-time storefront metrics.
//!
//! Every edge node (x86_64 natively, wasm32 under Workers or Spin) counts locally per minute and
//! ships compact deltas; sketches built by different nodes and targets merge into the same answer.
//!
//! - [`Uniques`]: distinct counts — HyperLogLog++ at precision 14 (≈0.81 % standard error).
//! - [`Trending`]: heavy hitters — a count-min sketch plus a bounded top-k candidate set.
//! - exact counts: plain `u64`s.
//!
//! [`CounterSet`] groups named metrics of those three kinds for one time bucket and [`Windows`]
//! keeps per-minute buckets under a retention. All four encode to compact binary (postcard behind a
//! 4-byte header: magic `EF`, a kind byte and [`FORMAT_VERSION`]). Decoding validates every field
//! before accepting, so arbitrary, truncated or hostile bytes yield a [`SketchError`] and never a
//! panic — neither while decoding nor later when the decoded sketch is estimated, merged or grown.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::marker::PhantomData;

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use siphasher::sip::SipHasher13;

/// HyperLogLog++ precision of [`Uniques`]: 2^14 registers, ≈12 KiB dense, ≈0.81 % standard error.
/// Fixed so that every node's sketches can be merged.
pub const UNIQUES_PRECISION: u8 = 14;

/// Relative standard error of a [`Uniques`] estimate: 1.04/√m with m = 2^14, i.e. 1.04/128 ≈ 0.81 %.
/// This is *one* standard error: roughly 68 % of estimates fall within it, 99.7 % within three.
pub const UNIQUES_RELATIVE_ERROR: f64 = 1.04 / 128.0;

/// Version byte written after the magic and kind bytes; bump it when any wire layout changes
/// (including an upgrade of `hyperloglogplus` that changes its serde layout).
pub const FORMAT_VERSION: u8 = 1;

/// Default count-min width: ε = e/2048 ≈ 0.13 % of the stream total.
pub const TRENDING_WIDTH: u32 = 2048;
/// Default count-min depth: the ε bound fails with probability δ = e^-4 ≈ 1.8 %.
pub const TRENDING_DEPTH: u32 = 4;
/// Default number of top-k candidate keys a [`Trending`] keeps.
pub const TRENDING_CAPACITY: u32 = 64;

/// Upper bounds on trending dimensions, so a decoded sketch can never demand a huge allocation.
const TRENDING_MAX_WIDTH: u32 = 1 << 16;
const TRENDING_MAX_DEPTH: u32 = 16;
const TRENDING_MAX_CELLS: u64 = 1 << 18;
const TRENDING_MAX_CAPACITY: u32 = 1024;

// Keys of the two fixed SipHash-1-3 hashers. They are part of the wire format: sketches built with
// other keys cannot be merged, so changing them requires a new FORMAT_VERSION.
const UNIQUES_KEY0: u64 = 0x6564_6765_6672_6f6e; // "edgefron"
const UNIQUES_KEY1: u64 = 0x742d_756e_6971_7565; // "t-unique"
const TRENDING_KEY0: u64 = 0x6564_6765_6672_6f6e; // "edgefron"
const TRENDING_KEY1: u64 = 0x742d_7472_656e_6421; // "t-trend!"

// Header: magic, kind, version.
const MAGIC: [u8; 2] = *b"EF";
const HEADER_LEN: usize = 4;

// Internals of hyperloglogplus 0.4.1 at precision 14, mirrored for validation (see `HllWire`).
const UNIQUES_REGISTERS: usize = 1 << UNIQUES_PRECISION;
const HLL_PRIME_PRECISION: u8 = 25;
const HLL_SPARSE_REGISTERS: usize = 1 << (HLL_PRIME_PRECISION - 1);
const HLL_REGISTERS_PER_WORD: usize = 5;
const HLL_REGISTER_BITS: usize = 6;
const HLL_REGISTER_WORDS: usize = UNIQUES_REGISTERS.div_ceil(HLL_REGISTERS_PER_WORD);
/// `counts.2`: the sparse buffer turns dense once it exceeds the dense size in bytes.
const HLL_SPARSE_MAX_BYTES: usize = 4 * UNIQUES_REGISTERS / HLL_REGISTERS_PER_WORD;
/// Pending codes are flushed once `len * 100 > HLL_SPARSE_MAX_BYTES`.
const HLL_TMPSET_MAX: usize = HLL_SPARSE_MAX_BYTES / 100;
/// Largest register value insertion can produce: 1 + leading zeros of a 50-bit remainder.
const HLL_MAX_REGISTER: u32 = 64 - UNIQUES_PRECISION as u32 + 1;

const _: () = assert!(UNIQUES_PRECISION >= 4 && UNIQUES_PRECISION <= 18);

/// Why a sketch could not be decoded or merged.
#[derive(Debug, thiserror::Error)]
pub enum SketchError {
    /// The input cannot even hold the 4-byte header.
    #[error("encoded sketch is {len} bytes, shorter than its {HEADER_LEN}-byte header")]
    TooShort {
        /// Length of the rejected input.
        len: usize,
    },
    /// The input does not start with the `EF` magic.
    #[error("not an edgefront sketch encoding (bad magic bytes)")]
    BadMagic,
    /// The header names another kind of sketch.
    #[error("encoding holds a {found} but a {expected} was expected")]
    WrongKind {
        /// Kind the caller asked for.
        expected: &'static str,
        /// Kind named by the header.
        found: &'static str,
    },
    /// The header names a format version this build cannot read.
    #[error("unsupported sketch format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version in the header.
        found: u8,
        /// Version this build reads and writes.
        supported: u8,
    },
    /// The postcard body is truncated or malformed.
    #[error("malformed sketch encoding: {0}")]
    Malformed(#[from] postcard::Error),
    /// Bytes follow a complete encoded value.
    #[error("{0} trailing bytes after the encoded sketch")]
    TrailingBytes(usize),
    /// A uniques sketch was built with other hash keys, so its registers cannot be merged.
    #[error("uniques sketch was built with a different hasher and cannot be merged")]
    ForeignHasher,
    /// A uniques sketch has another precision than [`UNIQUES_PRECISION`].
    #[error("HyperLogLog precision {found} is not supported (expected {UNIQUES_PRECISION})")]
    UnsupportedPrecision {
        /// Precision found in the encoding.
        found: u8,
    },
    /// Trending dimensions are zero or above the caps.
    #[error(
        "invalid trending dimensions: width {width}, depth {depth}, capacity {capacity} \
         (allowed: width 1..={TRENDING_MAX_WIDTH}, depth 1..={TRENDING_MAX_DEPTH}, \
         width × depth ≤ {TRENDING_MAX_CELLS}, capacity 1..={TRENDING_MAX_CAPACITY})"
    )]
    InvalidDimensions {
        /// Requested count-min width.
        width: u32,
        /// Requested count-min depth.
        depth: u32,
        /// Requested candidate capacity.
        capacity: u32,
    },
    /// Two trending sketches of different dimensions cannot be merged.
    #[error("cannot merge trending sketches of different dimensions: {ours:?} vs {theirs:?}")]
    DimensionMismatch {
        /// Dimensions of the sketch merged into.
        ours: TrendingDimensions,
        /// Dimensions of the sketch merged from.
        theirs: TrendingDimensions,
    },
    /// The encoding parses but its contents are inconsistent (and could misbehave if accepted).
    #[error("invalid sketch contents: {0}")]
    Invalid(&'static str),
}

/// A point estimate with its error bound, so callers can show "≈ x ± y".
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimated value.
    pub estimate: f64,
    /// Uniques: one standard error (estimate × [`UNIQUES_RELATIVE_ERROR`]). Exact counts: 0.
    /// Trending: ε·N (ε = e/width, N = stream total), an upper bound on the overcount that holds
    /// with probability 1 − δ (δ = e^−depth); count-min never undercounts.
    pub error_bound: f64,
}

impl Estimate {
    /// An exact count, with a zero error bound.
    pub fn exact(n: u64) -> Self {
        Self {
            estimate: n as f64,
            error_bound: 0.0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------------

/// The one hasher of [`Uniques`]: SipHash-1-3 with fixed keys, so every node, process and target
/// hashes an id to the same value (std's `RandomState` would not) and the builder can be
/// serialized inside the sketch (`BuildHasherDefault<SipHasher13>` cannot).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedHasher {
    k0: u64,
    k1: u64,
}

impl FixedHasher {
    /// The fixed-key hasher; the keys are part of the wire format.
    pub const fn new() -> Self {
        Self {
            k0: UNIQUES_KEY0,
            k1: UNIQUES_KEY1,
        }
    }
}

impl Default for FixedHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for FixedHasher {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// Canonical form of an id for hashing: its bytes followed by `0xff`, fed as raw bytes.
///
/// Why not `Hash for [u8]` or `Hash for str`: `[u8]` writes a `usize` length prefix, 4 bytes on
/// wasm32 and 8 on x86_64, so the same id would land in different registers and merged sketches
/// would double count. `str` currently hashes as bytes + `0xff`, which is platform independent,
/// but std does not promise that across Rust releases. Writing the bytes ourselves pins the exact
/// byte stream (identical to today's `str` hashing) on every target and toolchain; the golden
/// tests catch any change.
struct CanonicalBytes<'a>(&'a [u8]);

impl Hash for CanonicalBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
        state.write(&[0xff]);
    }
}

fn canonical_hash(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(k0, k1);
    CanonicalBytes(bytes).hash(&mut hasher);
    hasher.finish()
}

// ---------------------------------------------------------------------------------------------
// Uniques
// ---------------------------------------------------------------------------------------------

type Hll = HyperLogLogPlus<u64, FixedHasher>;

/// Distinct-count sketch: HyperLogLog++ at [`UNIQUES_PRECISION`] with the [`FixedHasher`].
///
/// Small sets stay in the sparse representation (near-exact, a few bytes per id); past ≈13 KB it
/// turns dense (16384 six-bit registers). Merging is lossless: the merge of two sketches equals the
/// sketch of the union.
#[derive(Clone, Deserialize)]
#[serde(try_from = "HllWire")]
pub struct Uniques {
    hll: Hll,
    empty: bool,
}

impl Uniques {
    /// An empty sketch.
    pub fn new() -> Self {
        // Precision 14 is a compile-time constant inside 4..=18 (asserted above), so the
        // constructor's only error cannot occur.
        #[allow(clippy::expect_used)]
        let hll = HyperLogLogPlus::new(UNIQUES_PRECISION, FixedHasher::new())
            .expect("precision 14 is within hyperloglogplus' 4..=18");
        Self { hll, empty: true }
    }

    /// Counts `id` (hashed as its UTF-8 bytes, see [`FixedHasher`]).
    pub fn insert(&mut self, id: &str) {
        self.insert_bytes(id.as_bytes());
    }

    /// Counts a binary id; `insert_bytes(s.as_bytes())` is the same as `insert(s)`.
    pub fn insert_bytes(&mut self, id: &[u8]) {
        self.hll.insert_any(&CanonicalBytes(id));
        self.empty = false;
    }

    /// Folds `other` into `self`, so `self` estimates the union of both sets.
    pub fn merge(&mut self, other: &Uniques) -> Result<(), SketchError> {
        self.hll
            .merge(&other.hll)
            .map_err(|_| SketchError::Invalid("HyperLogLog precisions differ"))?;
        self.empty &= other.empty;
        Ok(())
    }

    /// Estimated number of distinct ids, with one standard error as the bound. Takes `&mut` because
    /// the sketch flushes pending sparse entries first.
    pub fn estimate(&mut self) -> Estimate {
        let estimate = self.hll.count();
        Estimate {
            estimate,
            error_bound: estimate * UNIQUES_RELATIVE_ERROR,
        }
    }

    /// True when nothing was ever inserted (or merged in).
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Compact binary encoding (header + postcard): ~13 KB dense, a few bytes per id when sparse.
    /// Serialization into memory cannot fail for this type; were postcard ever to report an error
    /// the result would be empty, which [`Uniques::decode`] rejects.
    pub fn encode(&self) -> Vec<u8> {
        encode_with_header(Kind::Uniques, self)
    }

    /// Decodes and validates an encoding from [`Uniques::encode`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, SketchError> {
        decode_with_header::<HllWire, Self>(Kind::Uniques, bytes)
    }

    /// The sketch in its wire layout, with pending codes sorted so the encoding is deterministic.
    fn to_wire(&self) -> Result<HllWire, SketchError> {
        let bytes = postcard::to_allocvec(&self.hll)?;
        let (mut wire, rest) = postcard::take_from_bytes::<HllWire>(&bytes)?;
        if !rest.is_empty() {
            return Err(SketchError::Invalid(
                "hyperloglogplus serialized layout differs from the expected one",
            ));
        }
        wire.tmpset.sort_unstable();
        Ok(wire)
    }
}

impl Default for Uniques {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Uniques {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uniques")
            .field("precision", &UNIQUES_PRECISION)
            .field("empty", &self.empty)
            .finish_non_exhaustive()
    }
}

impl Serialize for Uniques {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_wire()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl TryFrom<HllWire> for Uniques {
    type Error = SketchError;

    fn try_from(wire: HllWire) -> Result<Self, SketchError> {
        let empty = wire.validate()?;
        // hyperloglogplus keeps its fields private; its own Deserialize reads the same layout.
        let bytes = postcard::to_allocvec(&wire)?;
        let hll = postcard::from_bytes::<Hll>(&bytes)?;
        Ok(Self { hll, empty })
    }
}

/// Field-for-field mirror of `hyperloglogplus::HyperLogLogPlus<_, FixedHasher>`'s serde layout
/// (0.4.1). The crate's internals are private and its methods index, subtract and shift without
/// checks, so a decoded sketch goes through this mirror first and is accepted only if it is one
/// the crate itself could have produced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct HllWire {
    builder: FixedHasher,
    precision: u8,
    /// (registers, sparse registers, sparse byte limit).
    counts: (usize, usize, usize),
    /// Pending sparse hash codes (a `HashSet<u32>` upstream).
    tmpset: Vec<u32>,
    sparse: SparseWire,
    registers: Option<RegistersWire>,
    phantom: PhantomData<u64>,
}

/// Mirror of hyperloglogplus' `DifIntVec`: sorted hash codes, delta + varint encoded.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct SparseWire {
    count: usize,
    last: u32,
    buf: Vec<u8>,
}

/// Mirror of hyperloglogplus' `RegistersPlus`: five 6-bit registers per `u32`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct RegistersWire {
    buf: Vec<u32>,
    count: usize,
    zeros: usize,
}

impl HllWire {
    /// Checks everything hyperloglogplus relies on; returns whether the sketch is empty.
    fn validate(&self) -> Result<bool, SketchError> {
        if self.builder != FixedHasher::new() {
            return Err(SketchError::ForeignHasher);
        }
        if self.precision != UNIQUES_PRECISION {
            return Err(SketchError::UnsupportedPrecision {
                found: self.precision,
            });
        }
        if self.counts
            != (
                UNIQUES_REGISTERS,
                HLL_SPARSE_REGISTERS,
                HLL_SPARSE_MAX_BYTES,
            )
        {
            return Err(SketchError::Invalid(
                "register counts do not match precision 14",
            ));
        }
        if self.tmpset.len() > HLL_TMPSET_MAX {
            return Err(SketchError::Invalid("too many pending sparse hash codes"));
        }
        if !self.tmpset.windows(2).all(|w| matches!(w, [a, b] if a < b)) {
            return Err(SketchError::Invalid(
                "pending sparse hash codes are not sorted and unique",
            ));
        }
        if !self.tmpset.iter().all(|&code| valid_sparse_code(code)) {
            return Err(SketchError::Invalid("invalid pending sparse hash code"));
        }
        if self.sparse.buf.len() > HLL_SPARSE_MAX_BYTES {
            return Err(SketchError::Invalid("sparse buffer exceeds its limit"));
        }
        let (count, last) = scan_sparse(&self.sparse.buf)?;
        if count != self.sparse.count || last != self.sparse.last {
            return Err(SketchError::Invalid(
                "sparse count or last code disagrees with the buffer",
            ));
        }
        let Some(registers) = &self.registers else {
            return Ok(self.tmpset.is_empty() && count == 0);
        };
        if !self.tmpset.is_empty() || count != 0 || last != 0 {
            return Err(SketchError::Invalid(
                "dense sketch still holds sparse codes",
            ));
        }
        if registers.count != UNIQUES_REGISTERS || registers.buf.len() != HLL_REGISTER_WORDS {
            return Err(SketchError::Invalid(
                "dense register buffer has the wrong size",
            ));
        }
        let mut zeros = 0usize;
        for (word_index, &word) in registers.buf.iter().enumerate() {
            let used = UNIQUES_REGISTERS
                .saturating_sub(word_index * HLL_REGISTERS_PER_WORD)
                .min(HLL_REGISTERS_PER_WORD);
            if u64::from(word) >> (used * HLL_REGISTER_BITS) != 0 {
                return Err(SketchError::Invalid("register padding bits are set"));
            }
            for slot in 0..used {
                let value = (word >> (slot * HLL_REGISTER_BITS)) & 0x3f;
                if value > HLL_MAX_REGISTER {
                    return Err(SketchError::Invalid("register value out of range"));
                }
                zeros += usize::from(value == 0);
            }
        }
        if zeros != registers.zeros {
            return Err(SketchError::Invalid(
                "register zero count disagrees with the registers",
            ));
        }
        Ok(zeros == UNIQUES_REGISTERS)
    }
}

/// Whether `code` is a sparse hash code hyperloglogplus could have produced at precision 14
/// (which also keeps every decoded register index and value in range).
fn valid_sparse_code(code: u32) -> bool {
    if code & 1 == 1 {
        // index(25 bits) << 7 | zeros << 1 | 1, emitted only when the index's low 11 bits are 0;
        // zeros = 1 + leading zeros of a 39-bit remainder.
        let zeros = (code >> 1) & 0x3f;
        let dif = (code >> 7) & 0x7ff;
        (1..=40).contains(&zeros) && dif == 0
    } else {
        // index(25 bits) << 1, emitted only when the index's low 11 bits are not all 0.
        code >> 26 == 0 && (code >> 1) & 0x7ff != 0
    }
}

/// Decodes the sparse buffer without trusting it: varints must be terminated, fit in `u32`, and
/// add up to strictly increasing valid codes. Returns (count, last code).
fn scan_sparse(buf: &[u8]) -> Result<(usize, u32), SketchError> {
    let mut bytes = buf.iter();
    let (mut count, mut last) = (0usize, 0u32);
    while let Some(&first) = bytes.next() {
        let (mut delta, mut byte, mut shift) = (0u32, first, 0u32);
        loop {
            if shift == 28 && byte > 0x0f {
                return Err(SketchError::Invalid("sparse varint overflows u32"));
            }
            delta |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            byte = *bytes
                .next()
                .ok_or(SketchError::Invalid("truncated varint in sparse buffer"))?;
        }
        if delta == 0 {
            return Err(SketchError::Invalid(
                "sparse codes are not strictly increasing",
            ));
        }
        last = last
            .checked_add(delta)
            .ok_or(SketchError::Invalid("sparse codes overflow u32"))?;
        if !valid_sparse_code(last) {
            return Err(SketchError::Invalid("invalid sparse hash code"));
        }
        count += 1;
    }
    Ok((count, last))
}

// ---------------------------------------------------------------------------------------------
// Trending
// ---------------------------------------------------------------------------------------------

/// Shape of a [`Trending`] sketch; only equal shapes merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrendingDimensions {
    /// Counters per row (ε = e/width).
    pub width: u32,
    /// Rows, one hash each (δ = e^−depth).
    pub depth: u32,
    /// Top-k candidate keys kept.
    pub capacity: u32,
}

/// Heavy hitters ("trending products"): a count-min sketch plus a bounded candidate set ranked by
/// the sketch's estimates.
///
/// Implemented here rather than taken from a crate because none fits: `count-min-sketch` keys its
/// hashers randomly per process and has no merge; `pdatastructs` has no serde and private tables;
/// `probabilistic-collections` has no merge; `streaming_algorithms` pulls `getrandom` and fails on
/// wasm32-unknown-unknown. Mergeability across nodes needs fixed-key hashing (SipHash-1-3, double
/// hashing `h1 + i·h2` per row) and a serializable table.
///
/// Estimates never undercount and overcount by at most ε·N (ε = e/width, N = [`Trending::total`])
/// with probability 1 − δ (δ = e^−depth). The table is stored sparse while few cells are set, so a
/// quiet minute costs bytes rather than `width × depth × 8`. Merging adds tables cell by cell (so a
/// merged sketch equals the sketch of the combined stream) and re-ranks the union of candidates.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "TrendingWire")]
pub struct Trending {
    width: u32,
    depth: u32,
    capacity: u32,
    total: u64,
    cells: Cells,
    /// Candidate key → its estimate when last updated (a lower bound of the current one).
    #[serde(serialize_with = "serialize_candidate_keys")]
    candidates: BTreeMap<String, u64>,
    /// Lower bound of the smallest candidate estimate once full (0 before): cheap rejection.
    #[serde(skip)]
    floor: u64,
}

/// Count-min table, row-major (`row * width + column`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
enum Cells {
    /// Non-zero cells as (position, count), strictly increasing positions, at most
    /// `sparse_limit(width × depth)` entries.
    Sparse(Vec<(u32, u64)>),
    /// All `width × depth` cells.
    Dense(Vec<u64>),
}

/// Sparse storage stays smaller and fast enough up to 1/16 of the cells.
fn sparse_limit(cell_count: usize) -> usize {
    cell_count / 16
}

impl Cells {
    fn get(&self, pos: u32) -> u64 {
        match self {
            Cells::Sparse(entries) => entries
                .binary_search_by_key(&pos, |&(p, _)| p)
                .ok()
                .and_then(|i| entries.get(i))
                .map_or(0, |&(_, count)| count),
            Cells::Dense(cells) => cells.get(pos as usize).copied().unwrap_or(0),
        }
    }

    /// Adds `n` at `pos`; returns the cell's new value.
    fn add(&mut self, pos: u32, n: u64) -> u64 {
        match self {
            Cells::Sparse(entries) => match entries.binary_search_by_key(&pos, |&(p, _)| p) {
                Ok(i) => entries.get_mut(i).map_or(0, |entry| {
                    entry.1 = entry.1.saturating_add(n);
                    entry.1
                }),
                Err(i) => {
                    entries.insert(i, (pos, n));
                    n
                }
            },
            Cells::Dense(cells) => cells.get_mut(pos as usize).map_or(0, |cell| {
                *cell = cell.saturating_add(n);
                *cell
            }),
        }
    }

    fn enforce_limit(&mut self, cell_count: usize) {
        if matches!(self, Cells::Sparse(entries) if entries.len() > sparse_limit(cell_count)) {
            self.densify(cell_count);
        }
    }

    fn densify(&mut self, cell_count: usize) {
        if let Cells::Sparse(entries) = self {
            let mut cells = vec![0u64; cell_count];
            for &(pos, count) in entries.iter() {
                if let Some(cell) = cells.get_mut(pos as usize) {
                    *cell = count;
                }
            }
            *self = Cells::Dense(cells);
        }
    }

    fn merge(&mut self, other: &Cells, cell_count: usize) {
        if let (Cells::Sparse(ours), Cells::Sparse(theirs)) = (&mut *self, other) {
            *ours = merge_sparse_cells(ours, theirs);
            self.enforce_limit(cell_count);
            return;
        }
        self.densify(cell_count);
        if let Cells::Dense(cells) = self {
            match other {
                Cells::Sparse(entries) => {
                    for &(pos, count) in entries {
                        if let Some(cell) = cells.get_mut(pos as usize) {
                            *cell = cell.saturating_add(count);
                        }
                    }
                }
                Cells::Dense(theirs) => {
                    for (cell, &count) in cells.iter_mut().zip(theirs) {
                        *cell = cell.saturating_add(count);
                    }
                }
            }
        }
    }

    /// Non-zero cells as (position, count).
    fn non_zero(&self) -> Box<dyn Iterator<Item = (u32, u64)> + '_> {
        match self {
            Cells::Sparse(entries) => Box::new(entries.iter().copied()),
            Cells::Dense(cells) => Box::new(
                cells
                    .iter()
                    .zip(0u32..)
                    .filter(|&(&count, _)| count != 0)
                    .map(|(&count, pos)| (pos, count)),
            ),
        }
    }
}

fn merge_sparse_cells(ours: &[(u32, u64)], theirs: &[(u32, u64)]) -> Vec<(u32, u64)> {
    let mut merged = Vec::with_capacity(ours.len() + theirs.len());
    let (mut a, mut b) = (ours.iter().peekable(), theirs.iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(&&(pa, ca)), Some(&&(pb, cb))) => match pa.cmp(&pb) {
                Ordering::Less => {
                    a.next();
                    (pa, ca)
                }
                Ordering::Greater => {
                    b.next();
                    (pb, cb)
                }
                Ordering::Equal => {
                    a.next();
                    b.next();
                    (pa, ca.saturating_add(cb))
                }
            },
            (Some(&&entry), None) => {
                a.next();
                entry
            }
            (None, Some(&&entry)) => {
                b.next();
                entry
            }
            (None, None) => break,
        };
        merged.push(next);
    }
    merged
}

fn serialize_candidate_keys<S: Serializer>(
    candidates: &BTreeMap<String, u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(candidates.keys())
}

/// Ranking order of candidates: higher estimate first, then smaller key (deterministic).
fn rank(a: (&str, u64), b: (&str, u64)) -> Ordering {
    b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0))
}

impl Trending {
    /// Default shape: width 2048, depth 4, 64 candidates (64 KiB table when dense).
    pub fn new() -> Self {
        Self::empty(TRENDING_WIDTH, TRENDING_DEPTH, TRENDING_CAPACITY)
    }

    /// A custom shape, checked against the caps that decoding enforces too.
    pub fn with_dimensions(width: u32, depth: u32, capacity: u32) -> Result<Self, SketchError> {
        let valid = (1..=TRENDING_MAX_WIDTH).contains(&width)
            && (1..=TRENDING_MAX_DEPTH).contains(&depth)
            && u64::from(width) * u64::from(depth) <= TRENDING_MAX_CELLS
            && (1..=TRENDING_MAX_CAPACITY).contains(&capacity);
        if valid {
            Ok(Self::empty(width, depth, capacity))
        } else {
            Err(SketchError::InvalidDimensions {
                width,
                depth,
                capacity,
            })
        }
    }

    fn empty(width: u32, depth: u32, capacity: u32) -> Self {
        Self {
            width,
            depth,
            capacity,
            total: 0,
            cells: Cells::Sparse(Vec::new()),
            candidates: BTreeMap::new(),
            floor: 0,
        }
    }

    /// This sketch's shape.
    pub fn dimensions(&self) -> TrendingDimensions {
        TrendingDimensions {
            width: self.width,
            depth: self.depth,
            capacity: self.capacity,
        }
    }

    fn cell_count(&self) -> usize {
        // Both factors are capped (width × depth ≤ 2^18), so this cannot overflow.
        self.width as usize * self.depth as usize
    }

    /// Cell positions of `key`, one per row (double hashing on a fixed-key SipHash-1-3).
    fn positions(&self, key: &str) -> impl Iterator<Item = u32> + use<> {
        let hash = canonical_hash(TRENDING_KEY0, TRENDING_KEY1, key.as_bytes());
        let (h1, h2) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        let width = u64::from(self.width);
        (0..u64::from(self.depth)).map(move |row| {
            let column = h1.wrapping_add(row.wrapping_mul(h2)) % width;
            // row < 16 and column < width ≤ 2^16: the position fits in u32.
            (row * width + column) as u32
        })
    }

    /// Records `n` occurrences of `key` (a no-op for `n == 0`).
    pub fn add(&mut self, key: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.total = self.total.saturating_add(n);
        let mut estimate = u64::MAX;
        for pos in self.positions(key) {
            estimate = estimate.min(self.cells.add(pos, n));
        }
        let cell_count = self.cell_count();
        self.cells.enforce_limit(cell_count);
        self.offer(key, estimate);
    }

    /// Lets `key` (with its current estimate) into the candidate set if it ranks high enough.
    fn offer(&mut self, key: &str, estimate: u64) {
        if let Some(stored) = self.candidates.get_mut(key) {
            *stored = (*stored).max(estimate);
            return;
        }
        if self.candidates.len() < self.capacity as usize {
            self.candidates.insert(key.to_owned(), estimate);
            self.refresh_floor();
            return;
        }
        if estimate < self.floor {
            return;
        }
        // Only clone the weakest key when it is actually replaced.
        let replaced = self
            .candidates
            .iter()
            .max_by(|a, b| rank((a.0, *a.1), (b.0, *b.1)))
            .filter(|&(worst, &worst_estimate)| {
                rank((key, estimate), (worst, worst_estimate)) == Ordering::Less
            })
            .map(|(worst, _)| worst.clone());
        if let Some(worst) = replaced {
            self.candidates.remove(&worst);
            self.candidates.insert(key.to_owned(), estimate);
        }
        self.refresh_floor();
    }

    fn refresh_floor(&mut self) {
        self.floor = if self.candidates.len() < self.capacity as usize {
            0
        } else {
            self.candidates.values().copied().min().unwrap_or(0)
        };
    }

    /// Estimated occurrences of `key`: never below the true count, above it by at most
    /// [`Trending::error_bound`] with probability 1 − δ.
    pub fn estimate(&self, key: &str) -> u64 {
        self.positions(key)
            .map(|pos| self.cells.get(pos))
            .min()
            .unwrap_or(0)
    }

    /// ε·N: the overcount bound of every estimate (ε = e/width, N = total).
    pub fn error_bound(&self) -> f64 {
        std::f64::consts::E / f64::from(self.width) * self.total as f64
    }

    /// Probability δ = e^−depth that an estimate exceeds the true count by more than ε·N.
    pub fn failure_probability(&self) -> f64 {
        (-f64::from(self.depth)).exp()
    }

    /// Up to `n` candidates, by estimate descending then key ascending, each with ε·N as bound.
    pub fn top(&self, n: usize) -> Vec<(String, Estimate)> {
        let mut ranked: Vec<(&str, u64)> = self
            .candidates
            .keys()
            .map(|key| (key.as_str(), self.estimate(key)))
            .collect();
        ranked.sort_by(|a, b| rank(*a, *b));
        let error_bound = self.error_bound();
        ranked
            .into_iter()
            .take(n)
            .map(|(key, count)| {
                (
                    key.to_owned(),
                    Estimate {
                        estimate: count as f64,
                        error_bound,
                    },
                )
            })
            .collect()
    }

    /// Sum of all added `n` (saturating), the N in ε·N.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn check_compatible(&self, other: &Trending) -> Result<(), SketchError> {
        if self.dimensions() == other.dimensions() {
            Ok(())
        } else {
            Err(SketchError::DimensionMismatch {
                ours: self.dimensions(),
                theirs: other.dimensions(),
            })
        }
    }

    /// Adds `other`'s table to ours and re-ranks the union of both candidate sets by the merged
    /// table. Rejects (leaving `self` untouched) a sketch of other dimensions.
    pub fn merge(&mut self, other: &Trending) -> Result<(), SketchError> {
        self.check_compatible(other)?;
        let cell_count = self.cell_count();
        self.cells.merge(&other.cells, cell_count);
        self.total = self.total.saturating_add(other.total);
        let mut keys: Vec<String> = std::mem::take(&mut self.candidates).into_keys().collect();
        keys.extend(other.candidates.keys().cloned());
        keys.sort_unstable();
        keys.dedup();
        let mut ranked: Vec<(String, u64)> = keys
            .into_iter()
            .map(|key| {
                let estimate = self.estimate(&key);
                (key, estimate)
            })
            .collect();
        ranked.sort_by(|a, b| rank((&a.0, a.1), (&b.0, b.1)));
        ranked.truncate(self.capacity as usize);
        self.candidates = ranked.into_iter().collect();
        self.refresh_floor();
        Ok(())
    }

    /// Compact binary encoding (header + postcard); a sparse table costs a few bytes per cell.
    pub fn encode(&self) -> Vec<u8> {
        encode_with_header(Kind::Trending, self)
    }

    /// Decodes and validates an encoding from [`Trending::encode`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, SketchError> {
        decode_with_header::<TrendingWire, Self>(Kind::Trending, bytes)
    }
}

impl Default for Trending {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Trending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = match &self.cells {
            Cells::Sparse(entries) => format!("sparse({} cells)", entries.len()),
            Cells::Dense(_) => "dense".to_owned(),
        };
        f.debug_struct("Trending")
            .field("dimensions", &self.dimensions())
            .field("total", &self.total)
            .field("table", &table)
            .field("candidates", &self.candidates)
            .finish()
    }
}

/// Wire layout of [`Trending`] (candidate keys only; their estimates are recomputed).
#[derive(Serialize, Deserialize, Debug)]
struct TrendingWire {
    width: u32,
    depth: u32,
    capacity: u32,
    total: u64,
    cells: Cells,
    candidates: Vec<String>,
}

impl TryFrom<TrendingWire> for Trending {
    type Error = SketchError;

    fn try_from(wire: TrendingWire) -> Result<Self, SketchError> {
        let mut sketch = Trending::with_dimensions(wire.width, wire.depth, wire.capacity)?;
        let cell_count = sketch.cell_count();
        match &wire.cells {
            Cells::Dense(cells) if cells.len() != cell_count => {
                return Err(SketchError::Invalid(
                    "dense table length differs from width × depth",
                ));
            }
            Cells::Dense(_) => {}
            Cells::Sparse(entries) => {
                if entries.len() > sparse_limit(cell_count) {
                    return Err(SketchError::Invalid("sparse table has too many cells"));
                }
                let positions_ok = entries.windows(2).all(|w| matches!(w, [a, b] if a.0 < b.0))
                    && entries
                        .iter()
                        .all(|&(pos, count)| (pos as usize) < cell_count && count != 0);
                if !positions_ok {
                    return Err(SketchError::Invalid(
                        "sparse table cells are out of order, out of range or zero",
                    ));
                }
            }
        }
        // Every add puts `n` in each row, so each row sums (saturating) to the total.
        let mut row_sums = vec![0u64; wire.depth as usize];
        for (pos, count) in wire.cells.non_zero() {
            if let Some(sum) = row_sums.get_mut((pos / wire.width) as usize) {
                *sum = sum.saturating_add(count);
            }
        }
        if row_sums.iter().any(|&sum| sum != wire.total) {
            return Err(SketchError::Invalid("table rows do not sum to the total"));
        }
        sketch.total = wire.total;
        sketch.cells = wire.cells;
        if wire.candidates.len() > wire.capacity as usize {
            return Err(SketchError::Invalid("more candidates than the capacity"));
        }
        if !wire
            .candidates
            .windows(2)
            .all(|w| matches!(w, [a, b] if a < b))
        {
            return Err(SketchError::Invalid(
                "candidate keys are not sorted and unique",
            ));
        }
        for key in wire.candidates {
            let estimate = sketch.estimate(&key);
            if estimate == 0 {
                return Err(SketchError::Invalid("candidate key was never counted"));
            }
            sketch.candidates.insert(key, estimate);
        }
        sketch.refresh_floor();
        Ok(sketch)
    }
}

// ---------------------------------------------------------------------------------------------
// CounterSet
// ---------------------------------------------------------------------------------------------

/// The named metrics of one time bucket: exact counts, distinct counts and trending keys.
///
/// Names are independent per kind. Everything merges, so per-node sets add up to the global one.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(try_from = "CounterSetWire")]
pub struct CounterSet {
    counts: BTreeMap<String, u64>,
    uniques: BTreeMap<String, Uniques>,
    trending: BTreeMap<String, Trending>,
}

impl CounterSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` to the exact count `name` (saturating; a no-op for `n == 0`).
    pub fn add_count(&mut self, name: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.counts.get_mut(name) {
            Some(count) => *count = count.saturating_add(n),
            None => {
                self.counts.insert(name.to_owned(), n);
            }
        }
    }

    /// Counts `id` in the distinct count `name`.
    pub fn add_unique(&mut self, name: &str, id: &str) {
        match self.uniques.get_mut(name) {
            Some(sketch) => sketch.insert(id),
            None => {
                let mut sketch = Uniques::new();
                sketch.insert(id);
                self.uniques.insert(name.to_owned(), sketch);
            }
        }
    }

    /// Records `n` occurrences of `key` in the trending metric `name` (default dimensions).
    pub fn add_trending(&mut self, name: &str, key: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.trending.get_mut(name) {
            Some(sketch) => sketch.add(key, n),
            None => {
                let mut sketch = Trending::new();
                sketch.add(key, n);
                self.trending.insert(name.to_owned(), sketch);
            }
        }
    }

    /// The exact count `name` (0 when absent).
    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// The exact count `name` as an [`Estimate`] with a zero error bound.
    pub fn count_estimate(&self, name: &str) -> Estimate {
        Estimate::exact(self.count(name))
    }

    /// The distinct count `name` with one standard error (zero when absent).
    pub fn uniques(&mut self, name: &str) -> Estimate {
        self.uniques
            .get_mut(name)
            .map_or(Estimate::exact(0), Uniques::estimate)
    }

    /// Top `n` keys of the trending metric `name` (empty when absent).
    pub fn top(&self, name: &str, n: usize) -> Vec<(String, Estimate)> {
        self.trending
            .get(name)
            .map_or_else(Vec::new, |sketch| sketch.top(n))
    }

    /// All exact counts by name.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// All distinct-count sketches by name.
    pub fn unique_sketches(&self) -> &BTreeMap<String, Uniques> {
        &self.uniques
    }

    /// All trending sketches by name.
    pub fn trending_sketches(&self) -> &BTreeMap<String, Trending> {
        &self.trending
    }

    /// True when no metric holds anything.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.uniques.is_empty() && self.trending.is_empty()
    }

    fn check_mergeable(&self, other: &CounterSet) -> Result<(), SketchError> {
        for (name, theirs) in &other.trending {
            if let Some(ours) = self.trending.get(name) {
                ours.check_compatible(theirs)?;
            }
        }
        Ok(())
    }

    /// Adds `other`'s metrics into `self`. Checks trending dimensions first, so a mismatch leaves
    /// `self` untouched.
    pub fn merge(&mut self, other: &CounterSet) -> Result<(), SketchError> {
        self.check_mergeable(other)?;
        for (name, &n) in &other.counts {
            self.add_count(name, n);
        }
        for (name, theirs) in &other.uniques {
            match self.uniques.get_mut(name) {
                Some(ours) => ours.merge(theirs)?,
                None => {
                    self.uniques.insert(name.clone(), theirs.clone());
                }
            }
        }
        for (name, theirs) in &other.trending {
            match self.trending.get_mut(name) {
                Some(ours) => ours.merge(theirs)?,
                None => {
                    self.trending.insert(name.clone(), theirs.clone());
                }
            }
        }
        Ok(())
    }

    /// Compact binary encoding (header + postcard).
    pub fn encode(&self) -> Vec<u8> {
        encode_with_header(Kind::CounterSet, self)
    }

    /// Decodes and validates an encoding from [`CounterSet::encode`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, SketchError> {
        decode_with_header::<CounterSetWire, Self>(Kind::CounterSet, bytes)
    }
}

/// Wire layout of [`CounterSet`]: maps as sorted (name, value) sequences.
#[derive(Deserialize, Debug)]
struct CounterSetWire {
    counts: Vec<(String, u64)>,
    uniques: Vec<(String, HllWire)>,
    trending: Vec<(String, TrendingWire)>,
}

fn sorted_unique_keys<K: Ord, V>(entries: &[(K, V)]) -> bool {
    entries.windows(2).all(|w| matches!(w, [a, b] if a.0 < b.0))
}

impl TryFrom<CounterSetWire> for CounterSet {
    type Error = SketchError;

    fn try_from(wire: CounterSetWire) -> Result<Self, SketchError> {
        if !sorted_unique_keys(&wire.counts)
            || !sorted_unique_keys(&wire.uniques)
            || !sorted_unique_keys(&wire.trending)
        {
            return Err(SketchError::Invalid(
                "metric names are not sorted and unique",
            ));
        }
        let uniques = wire
            .uniques
            .into_iter()
            .map(|(name, sketch)| Ok((name, Uniques::try_from(sketch)?)))
            .collect::<Result<_, SketchError>>()?;
        let trending = wire
            .trending
            .into_iter()
            .map(|(name, sketch)| Ok((name, Trending::try_from(sketch)?)))
            .collect::<Result<_, SketchError>>()?;
        Ok(Self {
            counts: wire.counts.into_iter().collect(),
            uniques,
            trending,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Windows
// ---------------------------------------------------------------------------------------------

/// Per-minute [`CounterSet`]s keyed by unix minute, keeping only the last `retention_minutes`
/// minutes up to the newest minute seen. Nodes fill buckets, [`Windows::take`] the delta to flush,
/// and the receiver folds deltas in with [`Windows::merge`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "WindowsWire")]
pub struct Windows {
    retention_minutes: i64,
    newest_minute: Option<i64>,
    buckets: BTreeMap<i64, CounterSet>,
}

impl Windows {
    /// Empty windows keeping `retention_minutes` minutes (at least 1).
    pub fn new(retention_minutes: i64) -> Self {
        Self {
            retention_minutes: retention_minutes.max(1),
            newest_minute: None,
            buckets: BTreeMap::new(),
        }
    }

    /// How many minutes, up to and including the newest, are kept.
    pub fn retention_minutes(&self) -> i64 {
        self.retention_minutes
    }

    /// The newest minute seen so far (kept across [`Windows::take`]).
    pub fn newest_minute(&self) -> Option<i64> {
        self.newest_minute
    }

    /// Whether `minute` is inside the retention relative to the newest minute seen.
    pub fn is_within_retention(&self, minute: i64) -> bool {
        self.newest_minute
            .is_none_or(|newest| minute > newest.saturating_sub(self.retention_minutes))
    }

    /// Advances the newest minute and drops buckets that fell out of the retention.
    fn observe(&mut self, minute: i64) {
        if self.newest_minute.is_some_and(|newest| newest >= minute) {
            return;
        }
        self.newest_minute = Some(minute);
        let first_kept = minute
            .saturating_sub(self.retention_minutes)
            .saturating_add(1);
        self.buckets = self.buckets.split_off(&first_kept);
    }

    /// The bucket of `minute`, created if needed, after dropping buckets older than the retention.
    /// A `minute` already outside the retention still gets a bucket (so callers need no branch),
    /// but that bucket is dropped as soon as a newer minute is seen; check
    /// [`Windows::is_within_retention`] first to skip late data.
    pub fn bucket_mut(&mut self, minute: i64) -> &mut CounterSet {
        self.observe(minute);
        self.buckets.entry(minute).or_default()
    }

    /// The bucket of `minute`, if any.
    pub fn bucket(&self, minute: i64) -> Option<&CounterSet> {
        self.buckets.get(&minute)
    }

    /// Merges `set` into the bucket of `minute`; a minute outside the retention is ignored.
    pub fn merge_bucket(&mut self, minute: i64, set: &CounterSet) -> Result<(), SketchError> {
        self.observe(minute);
        if !self.is_within_retention(minute) || set.is_empty() {
            return Ok(());
        }
        match self.buckets.get_mut(&minute) {
            Some(bucket) => bucket.merge(set),
            None => {
                self.buckets.insert(minute, set.clone());
                Ok(())
            }
        }
    }

    /// Merges every bucket of `other` (e.g. a node's flushed delta). Checks all buckets first, so
    /// a dimension mismatch leaves `self` untouched.
    pub fn merge(&mut self, other: &Windows) -> Result<(), SketchError> {
        for (minute, theirs) in &other.buckets {
            if let Some(ours) = self.buckets.get(minute) {
                ours.check_mergeable(theirs)?;
            }
        }
        for (&minute, theirs) in &other.buckets {
            self.merge_bucket(minute, theirs)?;
        }
        Ok(())
    }

    /// All buckets from `from_minute` to `to_minute` (both inclusive) merged into one set; empty
    /// when the range is empty or reversed.
    pub fn merged(&self, from_minute: i64, to_minute: i64) -> Result<CounterSet, SketchError> {
        let mut merged = CounterSet::new();
        if from_minute > to_minute {
            return Ok(merged);
        }
        for set in self
            .buckets
            .range(from_minute..=to_minute)
            .map(|(_, set)| set)
        {
            merged.merge(set)?;
        }
        Ok(merged)
    }

    /// Drains all buckets into a new `Windows` (same retention and newest minute), e.g. to flush
    /// the delta accumulated since the last flush.
    pub fn take(&mut self) -> Windows {
        Windows {
            retention_minutes: self.retention_minutes,
            newest_minute: self.newest_minute,
            buckets: std::mem::take(&mut self.buckets),
        }
    }

    /// Buckets in ascending minute order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &CounterSet)> + '_ {
        self.buckets.iter().map(|(&minute, set)| (minute, set))
    }

    /// Number of buckets held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Compact binary encoding (header + postcard).
    pub fn encode(&self) -> Vec<u8> {
        encode_with_header(Kind::Windows, self)
    }

    /// Decodes and validates an encoding from [`Windows::encode`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, SketchError> {
        decode_with_header::<WindowsWire, Self>(Kind::Windows, bytes)
    }
}

/// Wire layout of [`Windows`].
#[derive(Deserialize, Debug)]
struct WindowsWire {
    retention_minutes: i64,
    newest_minute: Option<i64>,
    buckets: Vec<(i64, CounterSetWire)>,
}

impl TryFrom<WindowsWire> for Windows {
    type Error = SketchError;

    fn try_from(wire: WindowsWire) -> Result<Self, SketchError> {
        if wire.retention_minutes < 1 {
            return Err(SketchError::Invalid(
                "retention must be at least one minute",
            ));
        }
        if !sorted_unique_keys(&wire.buckets) {
            return Err(SketchError::Invalid(
                "bucket minutes are not sorted and unique",
            ));
        }
        if let Some((last, _)) = wire.buckets.last()
            && wire.newest_minute.is_none_or(|newest| newest < *last)
        {
            return Err(SketchError::Invalid(
                "a bucket is newer than the newest minute",
            ));
        }
        let buckets = wire
            .buckets
            .into_iter()
            .map(|(minute, set)| Ok((minute, CounterSet::try_from(set)?)))
            .collect::<Result<_, SketchError>>()?;
        Ok(Self {
            retention_minutes: wire.retention_minutes,
            newest_minute: wire.newest_minute,
            buckets,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uniques,
    Trending,
    CounterSet,
    Windows,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Uniques,
        Kind::Trending,
        Kind::CounterSet,
        Kind::Windows,
    ];

    fn byte(self) -> u8 {
        match self {
            Kind::Uniques => b'U',
            Kind::Trending => b'T',
            Kind::CounterSet => b'C',
            Kind::Windows => b'W',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Uniques => "Uniques",
            Kind::Trending => "Trending",
            Kind::CounterSet => "CounterSet",
            Kind::Windows => "Windows",
        }
    }
}

fn encode_with_header<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    let header = vec![MAGIC[0], MAGIC[1], kind.byte(), FORMAT_VERSION];
    postcard::to_extend(value, header).unwrap_or_default()
}

fn decode_with_header<W, T>(kind: Kind, bytes: &[u8]) -> Result<T, SketchError>
where
    W: DeserializeOwned,
    T: TryFrom<W, Error = SketchError>,
{
    let Some((&[m0, m1, kind_byte, version], body)) = bytes.split_first_chunk::<HEADER_LEN>()
    else {
        return Err(SketchError::TooShort { len: bytes.len() });
    };
    if [m0, m1] != MAGIC {
        return Err(SketchError::BadMagic);
    }
    if kind_byte != kind.byte() {
        let found = Kind::ALL
            .iter()
            .find(|k| k.byte() == kind_byte)
            .map_or("unknown kind", |k| k.name());
        return Err(SketchError::WrongKind {
            expected: kind.name(),
            found,
        });
    }
    if version != FORMAT_VERSION {
        return Err(SketchError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let (wire, rest) = postcard::take_from_bytes::<W>(body)?;
    if !rest.is_empty() {
        return Err(SketchError::TrailingBytes(rest.len()));
    }
    T::try_from(wire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fmt::Write as _;
    use std::ops::Range;
    use std::sync::OnceLock;

    // ----- helpers ---------------------------------------------------------------------------

    fn uniques_of(prefix: &str, ids: Range<u64>) -> Uniques {
        let mut sketch = Uniques::new();
        let mut id = String::with_capacity(32);
        for i in ids {
            id.clear();
            write!(id, "{prefix}{i}").expect("writing to a String cannot fail");
            sketch.insert(&id);
        }
        sketch
    }

    fn relative_error(estimate: f64, truth: u64) -> f64 {
        (estimate - truth as f64) / truth as f64
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Deterministic xorshift64* so streams are the same on every run and target.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A Zipf-like stream (count ∝ 1/rank^1.2 over 2000 products), shuffled deterministically.
    /// Returns the keys, the event sequence as key indices, and the true count per key.
    fn zipf_stream(seed: u64) -> (Vec<String>, Vec<usize>, Vec<u64>) {
        let keys: Vec<String> = (1..=2000)
            .map(|rank| format!("product-{rank:05}"))
            .collect();
        let counts: Vec<u64> = (1..=2000u32)
            .map(|rank| (30_000.0 / f64::from(rank).powf(1.2)).ceil() as u64)
            .collect();
        let mut events: Vec<usize> = counts
            .iter()
            .enumerate()
            .flat_map(|(key, &count)| std::iter::repeat_n(key, count as usize))
            .collect();
        let mut rng = Rng(seed);
        for i in (1..events.len()).rev() {
            events.swap(i, rng.below(i + 1));
        }
        (keys, events, counts)
    }

    fn trending_of(keys: &[String], events: &[usize]) -> Trending {
        let mut sketch = Trending::new();
        for &key in events {
            sketch.add(&keys[key], 1);
        }
        sketch
    }

    fn with_header(kind: Kind, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![MAGIC[0], MAGIC[1], kind.byte(), FORMAT_VERSION];
        bytes.extend_from_slice(body);
        bytes
    }

    fn dense_reference() -> &'static Uniques {
        static DENSE: OnceLock<Uniques> = OnceLock::new();
        DENSE.get_or_init(|| uniques_of("reference-", 0..20_000))
    }

    fn wire_of(sketch: &Uniques) -> HllWire {
        sketch
            .to_wire()
            .expect("a live sketch converts to its wire layout")
    }

    // ----- hashing ---------------------------------------------------------------------------

    #[test]
    fn fixed_hashers_pin_the_hash_of_a_known_id() {
        // Changing either value breaks merging with sketches already stored or sent by other
        // nodes: bump FORMAT_VERSION instead of updating these.
        assert_eq!(
            canonical_hash(UNIQUES_KEY0, UNIQUES_KEY1, b"user-42"),
            12_781_821_075_443_647_768
        );
        assert_eq!(
            FixedHasher::new().hash_one(CanonicalBytes(b"user-42")),
            canonical_hash(UNIQUES_KEY0, UNIQUES_KEY1, b"user-42")
        );
        assert_eq!(
            canonical_hash(TRENDING_KEY0, TRENDING_KEY1, b"product-00001"),
            1_522_798_943_031_511_114
        );
    }

    #[test]
    fn a_one_id_sketch_encodes_to_pinned_bytes() {
        let mut sketch = Uniques::new();
        sketch.insert("user-42");
        assert_eq!(
            hex(&sketch.encode()),
            "45465501eedec9b3d6ec99b265e5eac5cbe6addd96740e80800180808008b366019a91961600000000"
        );
    }

    #[test]
    fn inserting_a_str_equals_inserting_its_bytes() {
        let mut by_str = Uniques::new();
        let mut by_bytes = Uniques::new();
        for i in 0..500 {
            let id = format!("id-{i}");
            by_str.insert(&id);
            by_bytes.insert_bytes(id.as_bytes());
        }
        assert_eq!(by_str.encode(), by_bytes.encode());
    }

    // ----- uniques ---------------------------------------------------------------------------

    #[test]
    fn relative_error_constant_is_one_standard_error_at_precision_14() {
        let expected = 1.04 / f64::from(1u32 << UNIQUES_PRECISION).sqrt();
        assert!((UNIQUES_RELATIVE_ERROR - expected).abs() < 1e-15);
    }

    #[test]
    fn an_empty_sketch_estimates_zero_and_reports_empty() {
        let mut sketch = Uniques::new();
        assert!(sketch.is_empty());
        assert_eq!(sketch.estimate(), Estimate::exact(0));
        sketch.insert("a");
        assert!(!sketch.is_empty());
    }

    #[test]
    fn small_sets_are_counted_almost_exactly() {
        for n in [1u64, 10, 100, 1_000, 5_000] {
            let estimate = uniques_of("small-", 0..n).estimate().estimate;
            assert!(
                (estimate - n as f64).abs() <= 1.0 + n as f64 * 0.001,
                "{n}: {estimate}"
            );
        }
    }

    #[test]
    fn duplicate_ids_do_not_change_the_estimate() {
        let mut once = uniques_of("dup-", 0..3_000);
        let mut thrice = uniques_of("dup-", 0..3_000);
        for _ in 0..2 {
            thrice
                .merge(&uniques_of("dup-", 0..3_000))
                .expect("same precision");
        }
        assert_eq!(once.estimate(), thrice.estimate());
    }

    /// 30 trials with distinct ids over cardinalities 10k–120k. Measured over 200 trials per
    /// cardinality, the RMS relative error is ≈0.57 % at 10k–20k and ≈0.66–0.79 % at 40k–200k, so
    /// the pooled RMS (≈0.67 % expected) sits below the 0.81 % standard error with room for the
    /// sampling noise of 30 trials (≈13 % of the RMS). Ids are 12 canonical bytes (trial, index)
    /// rather than formatted strings to keep the test under 2 s in debug builds; `insert(&str)`
    /// is `insert_bytes` of the string's bytes.
    #[test]
    fn rms_relative_error_stays_within_one_standard_error() {
        let cardinalities = [10_000u64, 20_000, 40_000, 80_000, 120_000];
        let trials = 30u32;
        let squares: f64 = (0..trials)
            .map(|trial| {
                let n = cardinalities[trial as usize % cardinalities.len()];
                let mut sketch = Uniques::new();
                let mut id = [0u8; 12];
                id[..4].copy_from_slice(&trial.to_le_bytes());
                for i in 0..n {
                    id[4..].copy_from_slice(&i.to_le_bytes());
                    sketch.insert_bytes(&id);
                }
                relative_error(sketch.estimate().estimate, n).powi(2)
            })
            .sum();
        let rms = (squares / f64::from(trials)).sqrt();
        assert!(
            rms <= UNIQUES_RELATIVE_ERROR,
            "RMS relative error {rms} exceeds {UNIQUES_RELATIVE_ERROR}"
        );
    }

    #[test]
    fn merged_sketch_estimates_the_union() {
        // a = 0..60k, b = 40k..100k: overlap 20k, union 100k.
        let a = uniques_of("union-", 0..60_000);
        let b = uniques_of("union-", 40_000..100_000);
        let mut merged = a.clone();
        merged.merge(&b).expect("same precision");
        let estimate = merged.estimate();
        // One standard error is the bound; a single fixed sample is held to three of them.
        assert!(
            (estimate.estimate - 100_000.0).abs() <= 3.0 * estimate.error_bound,
            "{estimate:?}"
        );
        // Merging is lossless: it equals the sketch built directly over the union.
        let mut direct = uniques_of("union-", 0..100_000);
        assert_eq!(estimate, direct.estimate());
    }

    #[test]
    fn merge_is_commutative_in_estimate() {
        for (n_a, n_b) in [(300, 200), (5_000, 40_000), (30_000, 30_000)] {
            let a = uniques_of("comm-", 0..n_a);
            let b = uniques_of("comm-", n_a / 2..n_a / 2 + n_b);
            let mut ab = a.clone();
            ab.merge(&b).expect("same precision");
            let mut ba = b.clone();
            ba.merge(&a).expect("same precision");
            assert_eq!(ab.estimate(), ba.estimate(), "{n_a} + {n_b}");
        }
    }

    #[test]
    fn merging_an_empty_sketch_changes_nothing() {
        let mut sketch = uniques_of("m-", 0..2_000);
        let before = sketch.estimate();
        sketch.merge(&Uniques::new()).expect("same precision");
        assert_eq!(sketch.estimate(), before);
        assert!(!sketch.is_empty());
        let mut empty = Uniques::new();
        empty.merge(&Uniques::new()).expect("same precision");
        assert!(empty.is_empty());
    }

    #[test]
    fn encoded_uniques_round_trip_and_merge_like_the_originals() {
        let cases = [
            (0..0, 0..0),
            (0..50, 25..80),
            (0..3_000, 1_000..9_000),
            (0..40_000, 0..90),
        ];
        for (range_a, range_b) in cases {
            let a = uniques_of("rt-", range_a);
            let b = uniques_of("rt-", range_b);
            let mut decoded_a = Uniques::decode(&a.encode()).expect("valid encoding");
            let decoded_b = Uniques::decode(&b.encode()).expect("valid encoding");
            assert_eq!(decoded_a.is_empty(), a.is_empty());
            assert_eq!(decoded_a.clone().estimate(), a.clone().estimate());
            let mut merged = a.clone();
            merged.merge(&b).expect("same precision");
            decoded_a.merge(&decoded_b).expect("same precision");
            assert_eq!(decoded_a.estimate(), merged.estimate());
        }
    }

    #[test]
    fn dense_sketch_encodes_to_about_13_kb_and_a_sparse_one_much_smaller() {
        let dense = uniques_of("size-", 0..200_000).encode();
        assert!(
            (12_000..=14_000).contains(&dense.len()),
            "dense: {} bytes",
            dense.len()
        );
        let sparse = uniques_of("size-", 0..100).encode();
        assert!(sparse.len() <= 600, "100 ids: {} bytes", sparse.len());
        let empty = Uniques::new().encode();
        assert!(empty.len() <= 40, "empty: {} bytes", empty.len());
    }

    #[test]
    fn reencoding_a_decoded_sketch_gives_the_same_bytes() {
        for n in [0u64, 7, 131, 132, 2_000, 30_000] {
            let bytes = uniques_of("det-", 0..n).encode();
            assert_eq!(bytes, uniques_of("det-", 0..n).encode(), "{n}");
            let decoded = Uniques::decode(&bytes).expect("valid encoding");
            assert_eq!(decoded.encode(), bytes, "{n}");
        }
    }

    /// The mirror must read exactly what hyperloglogplus writes, or decoding would reject (or
    /// misread) real sketches — this fails if an upgrade of the crate changes its layout.
    #[test]
    fn wire_mirror_matches_the_hyperloglogplus_layout() {
        for n in [0u64, 1, 100, 5_000, 20_000] {
            let sketch = uniques_of("layout-", 0..n);
            let upstream = postcard::to_allocvec(&sketch.hll).expect("serializes");
            let mirror: HllWire = postcard::from_bytes(&upstream).expect("mirror reads it");
            let mut sorted = mirror.clone();
            sorted.tmpset.sort_unstable();
            assert_eq!(
                sorted.validate().map(|empty| empty == (n == 0)).ok(),
                Some(true)
            );
            assert_eq!(sorted, wire_of(&sketch));
            if mirror.tmpset.len() <= 1 {
                assert_eq!(
                    postcard::to_allocvec(&mirror).expect("serializes"),
                    upstream
                );
            }
        }
    }

    #[test]
    fn decoding_rejects_a_bad_header_kind_version_or_trailing_bytes() {
        let bytes = uniques_of("hdr-", 0..10).encode();
        assert!(matches!(
            Uniques::decode(&[]),
            Err(SketchError::TooShort { len: 0 })
        ));
        assert!(matches!(
            Uniques::decode(&bytes[..3]),
            Err(SketchError::TooShort { len: 3 })
        ));
        let mut bad_magic = bytes.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            Uniques::decode(&bad_magic),
            Err(SketchError::BadMagic)
        ));
        assert!(matches!(
            Trending::decode(&bytes),
            Err(SketchError::WrongKind {
                expected: "Trending",
                found: "Uniques"
            })
        ));
        let mut future = bytes.clone();
        future[3] = FORMAT_VERSION + 1;
        assert!(matches!(
            Uniques::decode(&future),
            Err(SketchError::UnsupportedVersion { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Uniques::decode(&trailing),
            Err(SketchError::TrailingBytes(1))
        ));
        assert!(matches!(
            Uniques::decode(&bytes[..bytes.len() - 1]),
            Err(SketchError::Malformed(_))
        ));
    }

    #[test]
    fn decoding_rejects_a_foreign_hasher_or_precision() {
        let mut foreign = wire_of(&uniques_of("f-", 0..10));
        foreign.builder = FixedHasher { k0: 1, k1: 2 };
        let bytes = encode_with_header(Kind::Uniques, &foreign);
        assert!(matches!(
            Uniques::decode(&bytes),
            Err(SketchError::ForeignHasher)
        ));

        let mut precision = wire_of(&uniques_of("f-", 0..10));
        precision.precision = 16;
        let bytes = encode_with_header(Kind::Uniques, &precision);
        assert!(matches!(
            Uniques::decode(&bytes),
            Err(SketchError::UnsupportedPrecision { found: 16 })
        ));
    }

    /// Each of these states would make hyperloglogplus index out of bounds, underflow, overflow a
    /// shift or an add when the sketch is later estimated, merged or grown.
    #[test]
    fn decoding_rejects_states_that_would_panic_later() {
        let sparse = wire_of(&uniques_of("p-", 0..2_000));
        let dense = wire_of(dense_reference());
        assert!(dense.registers.is_some() && !sparse.sparse.buf.is_empty());
        let rejected = |wire: HllWire, why: &str| {
            let bytes = encode_with_header(Kind::Uniques, &wire);
            assert!(Uniques::decode(&bytes).is_err(), "accepted: {why}");
        };

        let mut w = dense.clone();
        if let Some(r) = w.registers.as_mut() {
            r.zeros += 1;
        }
        rejected(w, "zero count that underflows on the next new register");
        let mut w = dense.clone();
        if let Some(r) = w.registers.as_mut() {
            r.buf.pop();
        }
        rejected(w, "register buffer too short to index");
        let mut w = dense.clone();
        if let Some(r) = w.registers.as_mut() {
            r.count = 1 << 20;
        }
        rejected(w, "register count beyond the buffer");
        let mut w = dense.clone();
        if let Some(r) = w.registers.as_mut() {
            r.buf[0] |= 0x3f;
            r.zeros = r.buf.len(); // whatever, the value check comes first
        }
        rejected(w, "register value 63 above the maximum of 51");
        let mut w = dense.clone();
        if let Some(r) = w.registers.as_mut() {
            r.buf[0] |= 1 << 31;
        }
        rejected(w, "padding bits set");
        let mut w = dense.clone();
        w.tmpset.push(2);
        rejected(w, "dense sketch with pending codes");

        let mut w = sparse.clone();
        w.counts.1 = 10;
        rejected(
            w,
            "sparse register count smaller than the sparse count (underflow)",
        );
        let mut w = sparse.clone();
        if let Some(last) = w.sparse.buf.last_mut() {
            *last |= 0x80;
        }
        rejected(w, "truncated varint (reads past the buffer)");
        let mut w = sparse.clone();
        w.sparse
            .buf
            .extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        w.sparse.count += 1;
        rejected(w, "six-byte varint (shift overflow)");
        let mut w = sparse.clone();
        w.sparse.buf.insert(0, 0x7e);
        w.sparse.count += 1;
        rejected(
            w,
            "codes that are not increasing (subtract overflow on merge)",
        );
        let mut w = sparse.clone();
        w.sparse.count += 1;
        rejected(w, "count that disagrees with the buffer");
        let mut w = sparse.clone();
        w.sparse.last ^= 2;
        rejected(w, "last code that disagrees with the buffer");
        let mut w = sparse.clone();
        w.tmpset = (1..=200).map(|i| i << 12).collect();
        rejected(w, "more pending codes than a flush allows");
        let mut w = sparse.clone();
        w.tmpset = vec![1 << 13, 1 << 12];
        rejected(w, "unsorted pending codes");
        let mut w = sparse.clone();
        w.tmpset = vec![0];
        rejected(w, "pending code that cannot be produced");
        let mut w = sparse;
        w.sparse.buf = vec![0x80; HLL_SPARSE_MAX_BYTES + 1];
        rejected(w, "oversized sparse buffer");
    }

    // ----- trending --------------------------------------------------------------------------

    #[test]
    fn trending_finds_the_true_top_10_of_a_skewed_stream() {
        let (keys, events, _) = zipf_stream(7);
        let sketch = trending_of(&keys, &events);
        let top: Vec<String> = sketch.top(10).into_iter().map(|(key, _)| key).collect();
        // Counts fall with rank, so the true top 10 are the first 10 products.
        assert_eq!(top, keys[..10].to_vec());
    }

    #[test]
    fn trending_estimates_never_undercount_and_stay_within_epsilon_n() {
        let (keys, events, counts) = zipf_stream(11);
        let sketch = trending_of(&keys, &events);
        assert_eq!(sketch.total(), events.len() as u64);
        let bound = sketch.error_bound();
        assert!((bound - std::f64::consts::E / 2048.0 * events.len() as f64).abs() < 1e-6);
        for (key, &truth) in keys.iter().zip(&counts) {
            let estimate = sketch.estimate(key);
            assert!(estimate >= truth, "{key}: {estimate} < {truth}");
            assert!(
                (estimate - truth) as f64 <= bound,
                "{key}: {estimate} > {truth} + {bound}"
            );
        }
        for (key, estimate) in sketch.top(10) {
            assert!((estimate.error_bound - bound).abs() < 1e-9, "{key}");
        }
        assert_eq!(sketch.estimate("never-seen"), 0);
    }

    #[test]
    fn merged_trending_matches_trending_over_the_combined_stream() {
        let (keys, events, _) = zipf_stream(23);
        let (first, second) = events.split_at(events.len() / 3);
        let combined = trending_of(&keys, &events);
        let mut node_a = trending_of(&keys, first);
        let node_b = trending_of(&keys, second);
        node_a.merge(&node_b).expect("same dimensions");
        assert_eq!(node_a.total(), combined.total());
        assert_eq!(node_a.top(10), combined.top(10));
        assert_eq!(node_a.cells, combined.cells);
        let mut node_b_then_a = node_b.clone();
        node_b_then_a
            .merge(&trending_of(&keys, first))
            .expect("same dimensions");
        assert_eq!(node_b_then_a.top(10), combined.top(10));
    }

    #[test]
    fn trending_top_is_sorted_by_estimate_then_key() {
        let mut sketch = Trending::new();
        for (key, n) in [("c", 5), ("a", 5), ("b", 9), ("d", 1), ("e", 5)] {
            sketch.add(key, n);
        }
        let top: Vec<(String, f64)> = sketch
            .top(4)
            .into_iter()
            .map(|(key, e)| (key, e.estimate))
            .collect();
        let expected = [("b", 9.0), ("a", 5.0), ("c", 5.0), ("e", 5.0)];
        assert_eq!(top.len(), expected.len());
        for ((key, estimate), (want_key, want)) in top.iter().zip(expected) {
            assert_eq!(
                (key.as_str(), estimate.to_bits()),
                (want_key, f64::to_bits(want))
            );
        }
        assert_eq!(sketch.top(100).len(), 5);
        assert!(sketch.top(0).is_empty());
    }

    #[test]
    fn full_candidate_sets_admit_keys_that_outgrow_the_weakest() {
        let mut sketch = Trending::with_dimensions(256, 4, 3).expect("valid dimensions");
        for key in ["a", "b", "c"] {
            sketch.add(key, 10);
        }
        sketch.add("late", 5);
        assert!(!sketch.top(3).iter().any(|(key, _)| key == "late"));
        sketch.add("late", 20);
        let keys: Vec<String> = sketch.top(3).into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["late", "a", "b"]);
    }

    #[test]
    fn trending_merge_rejects_mismatched_dimensions() {
        let mut ours = Trending::new();
        ours.add("x", 3);
        let theirs = Trending::with_dimensions(1024, 4, 64).expect("valid dimensions");
        assert!(matches!(
            ours.merge(&theirs),
            Err(SketchError::DimensionMismatch { .. })
        ));
        assert_eq!(ours.total(), 3);
        let other_capacity = Trending::with_dimensions(2048, 4, 8).expect("valid dimensions");
        assert!(ours.merge(&other_capacity).is_err());
    }

    #[test]
    fn trending_dimensions_outside_the_caps_are_rejected() {
        for (width, depth, capacity) in [
            (0, 4, 64),
            (2048, 0, 64),
            (2048, 4, 0),
            (1 << 17, 1, 1),
            (1 << 15, 17, 1),
            (1 << 16, 8, 1),
            (8, 2, 5_000),
        ] {
            assert!(
                matches!(
                    Trending::with_dimensions(width, depth, capacity),
                    Err(SketchError::InvalidDimensions { .. })
                ),
                "{width} {depth} {capacity}"
            );
        }
        assert!(Trending::with_dimensions(1, 1, 1).is_ok());
    }

    #[test]
    fn quiet_trending_stays_sparse_and_encodes_small() {
        let mut sketch = Trending::new();
        for i in 0..20 {
            sketch.add(&format!("quiet-{i}"), 1 + i);
        }
        assert!(matches!(sketch.cells, Cells::Sparse(_)));
        let bytes = sketch.encode();
        assert!(bytes.len() < 800, "{} bytes", bytes.len());
        let (keys, events, _) = zipf_stream(3);
        let busy = trending_of(&keys, &events[..20_000]);
        assert!(matches!(busy.cells, Cells::Dense(_)));
    }

    #[test]
    fn sparse_and_dense_tables_give_the_same_estimates() {
        let mut sparse = Trending::new();
        for i in 0..50u64 {
            sparse.add(&format!("k{i}"), i + 1);
        }
        let mut dense = sparse.clone();
        dense.cells.densify(dense.cell_count());
        for i in 0..60 {
            let key = format!("k{i}");
            assert_eq!(sparse.estimate(&key), dense.estimate(&key), "{key}");
        }
        assert_eq!(sparse.top(64), dense.top(64));
        let mut merged_dense = dense.clone();
        merged_dense.merge(&sparse).expect("same dimensions");
        let mut merged_sparse = sparse.clone();
        merged_sparse.merge(&sparse).expect("same dimensions");
        assert_eq!(merged_dense.top(64), merged_sparse.top(64));
        assert_eq!(
            Trending::decode(&dense.encode()).map(|t| t.top(64)).ok(),
            Some(dense.top(64))
        );
    }

    #[test]
    fn trending_round_trips_through_encoding() {
        let (keys, events, _) = zipf_stream(5);
        for sketch in [
            Trending::new(),
            trending_of(&keys, &events[..40]),
            trending_of(&keys, &events),
        ] {
            let bytes = sketch.encode();
            let decoded = Trending::decode(&bytes).expect("valid encoding");
            assert_eq!(decoded.total(), sketch.total());
            assert_eq!(decoded.top(64), sketch.top(64));
            assert_eq!(decoded.cells, sketch.cells);
            assert_eq!(decoded.encode(), bytes);
            let wire: TrendingWire = postcard::from_bytes(&bytes[HEADER_LEN..]).expect("layout");
            assert_eq!(encode_with_header(Kind::Trending, &wire), bytes);
        }
    }

    #[test]
    fn trending_decoding_rejects_inconsistent_tables() {
        let mut sketch = Trending::new();
        sketch.add("a", 4);
        sketch.add("b", 2);
        let good = || -> TrendingWire {
            postcard::from_bytes(&sketch.encode()[HEADER_LEN..]).expect("layout")
        };
        let rejected = |wire: TrendingWire, why: &str| {
            let bytes = encode_with_header(Kind::Trending, &wire);
            assert!(Trending::decode(&bytes).is_err(), "accepted: {why}");
        };
        let mut w = good();
        w.total += 1;
        rejected(w, "rows that do not sum to the total");
        let mut w = good();
        w.candidates.push("never-added".to_owned());
        rejected(w, "a candidate that was never counted");
        let mut w = good();
        w.candidates.reverse();
        rejected(w, "unsorted candidates");
        let mut w = good();
        w.capacity = 1;
        rejected(w, "more candidates than the capacity");
        let mut w = good();
        w.width = 0;
        rejected(w, "zero width");
        let mut w = good();
        w.cells = Cells::Dense(vec![0; 10]);
        rejected(w, "a dense table of the wrong length");
        let mut w = good();
        w.cells = Cells::Sparse(vec![(9_000, 6), (1, 6), (3_000, 6), (7_000, 6)]);
        rejected(w, "unsorted sparse cells");
        let mut w = good();
        w.cells = Cells::Sparse(vec![(u32::MAX, 6)]);
        w.depth = 1;
        rejected(w, "a sparse cell out of range");
        let mut w = good();
        w.cells = Cells::Sparse((0..600).map(|i| (i, 1)).collect());
        rejected(w, "a sparse table above its limit");
    }

    // ----- counter sets ----------------------------------------------------------------------

    #[test]
    fn counter_set_merges_counts_uniques_and_trending() {
        let mut node_a = CounterSet::new();
        let mut node_b = CounterSet::new();
        for i in 0..1_000 {
            let node = if i % 2 == 0 { &mut node_a } else { &mut node_b };
            node.add_count("page_views", 1);
            node.add_unique("visitors", &format!("visitor-{}", i % 300));
            node.add_trending("products", &format!("p{}", i % 7), 1 + (i % 7));
        }
        node_b.add_count("orders", 5);
        let mut merged = node_a.clone();
        merged.merge(&node_b).expect("same dimensions");
        assert_eq!(merged.count("page_views"), 1_000);
        assert_eq!(merged.count("orders"), 5);
        assert_eq!(merged.count_estimate("orders"), Estimate::exact(5));
        let visitors = merged.uniques("visitors");
        assert!((visitors.estimate - 300.0).abs() <= 1.0, "{visitors:?}");
        let top = merged.top("products", 2);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].0, "p6");
        assert!(!merged.is_empty());
    }

    #[test]
    fn counter_set_merge_leaves_self_untouched_on_dimension_mismatch() {
        let mut ours = CounterSet::new();
        ours.add_count("views", 2);
        ours.add_trending("products", "p1", 1);
        let mut theirs = CounterSet::new();
        theirs.add_count("views", 40);
        let mut narrow = Trending::with_dimensions(16, 2, 4).expect("valid dimensions");
        narrow.add("p1", 1);
        theirs.trending.insert("products".to_owned(), narrow);
        assert!(matches!(
            ours.merge(&theirs),
            Err(SketchError::DimensionMismatch { .. })
        ));
        assert_eq!(ours.count("views"), 2);
    }

    #[test]
    fn missing_metrics_read_as_zero_or_empty() {
        let mut set = CounterSet::new();
        assert!(set.is_empty());
        assert_eq!(set.count("nope"), 0);
        assert_eq!(set.uniques("nope"), Estimate::exact(0));
        assert!(set.top("nope", 5).is_empty());
        set.add_count("zero", 0);
        set.add_trending("zero", "k", 0);
        assert!(set.is_empty());
    }

    #[test]
    fn counter_set_round_trips_through_encoding() {
        let mut set = CounterSet::new();
        set.add_count("views", 12);
        set.add_count("orders", 3);
        for i in 0..500 {
            set.add_unique("visitors", &format!("v{i}"));
            set.add_trending("products", &format!("p{}", i % 13), 1);
        }
        let bytes = set.encode();
        let mut decoded = CounterSet::decode(&bytes).expect("valid encoding");
        assert_eq!(decoded.encode(), bytes);
        assert_eq!(decoded.counts(), set.counts());
        assert_eq!(decoded.uniques("visitors"), set.clone().uniques("visitors"));
        assert_eq!(decoded.top("products", 5), set.top("products", 5));
        assert_eq!(
            CounterSet::decode(&CounterSet::new().encode())
                .map(|s| s.is_empty())
                .ok(),
            Some(true)
        );
    }

    // ----- windows ---------------------------------------------------------------------------

    #[test]
    fn buckets_outside_retention_are_dropped() {
        let mut windows = Windows::new(5);
        for minute in 100..=106 {
            windows.bucket_mut(minute).add_count("views", 1);
        }
        let minutes: Vec<i64> = windows.iter().map(|(minute, _)| minute).collect();
        assert_eq!(minutes, [102, 103, 104, 105, 106]);
        assert!(windows.is_within_retention(102) && !windows.is_within_retention(101));
        // Late data for an expired minute gets a bucket that the next newer minute drops.
        windows.bucket_mut(90).add_count("views", 1);
        windows.bucket_mut(107).add_count("views", 1);
        let minutes: Vec<i64> = windows.iter().map(|(minute, _)| minute).collect();
        assert_eq!(minutes, [103, 104, 105, 106, 107]);
        assert_eq!(windows.len(), 5);
    }

    #[test]
    fn merged_merges_only_the_requested_minutes() {
        let mut windows = Windows::new(60);
        for minute in 0..10 {
            let bucket = windows.bucket_mut(minute);
            bucket.add_count("views", 1 << minute);
            bucket.add_unique("visitors", &format!("v{minute}"));
        }
        let mut window = windows.merged(3, 5).expect("same dimensions");
        assert_eq!(window.count("views"), 8 + 16 + 32);
        assert!((window.uniques("visitors").estimate - 3.0).abs() < 0.5);
        assert_eq!(windows.merged(-100, 100).expect("ok").count("views"), 1023);
    }

    #[test]
    fn merged_with_a_reversed_range_is_empty() {
        let mut windows = Windows::new(60);
        windows.bucket_mut(5).add_count("views", 1);
        assert!(windows.merged(6, 4).expect("empty").is_empty());
        assert!(
            windows
                .merged(i64::MAX, i64::MIN)
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn take_drains_buckets_but_keeps_retention_and_newest_minute() {
        let mut windows = Windows::new(10);
        windows.bucket_mut(42).add_count("views", 1);
        let delta = windows.take();
        assert!(windows.is_empty());
        assert_eq!(windows.newest_minute(), Some(42));
        assert_eq!(delta.len(), 1);
        assert_eq!(delta.retention_minutes(), 10);
        assert_eq!(delta.bucket(42).map(|set| set.count("views")), Some(1));
    }

    #[test]
    fn merge_bucket_ignores_minutes_outside_retention() {
        let mut windows = Windows::new(3);
        let mut set = CounterSet::new();
        set.add_count("views", 1);
        windows.merge_bucket(50, &set).expect("ok");
        windows.merge_bucket(50, &set).expect("ok");
        windows.merge_bucket(47, &set).expect("ok");
        windows.merge_bucket(48, &set).expect("ok");
        assert_eq!(windows.bucket(50).map(|s| s.count("views")), Some(2));
        assert!(windows.bucket(47).is_none());
        assert!(windows.bucket(48).is_some());
    }

    #[test]
    fn flushed_deltas_from_two_nodes_merge_into_the_global_totals() {
        let mut aggregate = Windows::new(60);
        let mut nodes = [Windows::new(60), Windows::new(60)];
        for event in 0..600u32 {
            let node = &mut nodes[(event % 2) as usize];
            let bucket = node.bucket_mut(1_000 + i64::from(event / 100));
            bucket.add_count("views", 1);
            bucket.add_unique("visitors", &format!("v{}", event % 150));
            if event % 100 == 99 {
                let delta = Windows::decode(&node.take().encode()).expect("valid encoding");
                aggregate.merge(&delta).expect("same dimensions");
            }
        }
        for node in &mut nodes {
            let delta = Windows::decode(&node.take().encode()).expect("valid encoding");
            aggregate.merge(&delta).expect("same dimensions");
        }
        let mut total = aggregate.merged(1_000, 1_005).expect("same dimensions");
        assert_eq!(total.count("views"), 600);
        assert!((total.uniques("visitors").estimate - 150.0).abs() <= 1.0);
    }

    #[test]
    fn windows_round_trip_through_encoding() {
        let mut windows = Windows::new(30);
        for minute in [7, 8, 12] {
            let bucket = windows.bucket_mut(minute);
            bucket.add_count("views", 3);
            bucket.add_trending("products", "p", 2);
            bucket.add_unique("visitors", "v");
        }
        let bytes = windows.encode();
        let decoded = Windows::decode(&bytes).expect("valid encoding");
        assert_eq!(decoded.encode(), bytes);
        assert_eq!(decoded.newest_minute(), Some(12));
        assert_eq!(decoded.retention_minutes(), 30);
        let minutes: Vec<i64> = decoded.iter().map(|(minute, _)| minute).collect();
        assert_eq!(minutes, [7, 8, 12]);
    }

    #[test]
    fn extreme_minutes_and_retentions_do_not_overflow() {
        for retention in [i64::MIN, -1, 0, 1, i64::MAX] {
            let mut windows = Windows::new(retention);
            windows.bucket_mut(i64::MIN).add_count("a", 1);
            windows.bucket_mut(i64::MAX).add_count("a", 1);
            windows.bucket_mut(0).add_count("a", 1);
            let _ = windows.merged(i64::MIN, i64::MAX).expect("ok");
            assert!(windows.is_within_retention(i64::MAX));
        }
    }

    // ----- hostile bytes ---------------------------------------------------------------------

    /// Valid encodings of every kind and representation, to mutate.
    fn samples() -> &'static [Vec<u8>] {
        static SAMPLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        SAMPLES.get_or_init(|| {
            let (keys, events, _) = zipf_stream(9);
            let mut set = CounterSet::new();
            set.add_count("views", 300);
            for i in 0..40 {
                set.add_unique("visitors", &format!("v{i}"));
                set.add_trending("products", &format!("p{}", i % 5), 1);
            }
            let mut windows = Windows::new(10);
            windows.merge_bucket(3, &set).expect("ok");
            windows.bucket_mut(4).add_count("views", 1);
            vec![
                uniques_of("s-", 0..40).encode(),
                uniques_of("s-", 0..1_500).encode(),
                dense_reference().encode(),
                trending_of(&keys, &events[..30]).encode(),
                trending_of(&keys, &events[..5_000]).encode(),
                set.encode(),
                windows.encode(),
            ]
        })
    }

    /// Uses whatever decodes the way production would: estimate, merge both ways (with itself, an
    /// empty and a dense sketch), grow it, and re-encode — which must decode again.
    fn exercise(bytes: &[u8]) {
        if let Ok(mut sketch) = Uniques::decode(bytes) {
            let _ = sketch.estimate();
            let mut dense = dense_reference().clone();
            dense.merge(&sketch).expect("same precision");
            let _ = dense.estimate();
            let mut empty = Uniques::new();
            empty.merge(&sketch).expect("same precision");
            let _ = empty.estimate();
            sketch.merge(&sketch.clone()).expect("same precision");
            sketch.merge(dense_reference()).expect("same precision");
            for i in 0..200 {
                sketch.insert(&format!("grow-{i}"));
            }
            let _ = sketch.estimate();
            Uniques::decode(&sketch.encode()).expect("a used sketch re-encodes validly");
            Uniques::decode(&empty.encode()).expect("a used sketch re-encodes validly");
        }
        if let Ok(mut sketch) = Trending::decode(bytes) {
            let _ = (sketch.top(100), sketch.estimate("p1"), sketch.error_bound());
            let copy = sketch.clone();
            if sketch.merge(&copy).is_ok() {
                let _ = sketch.top(5);
            }
            for i in 0..100 {
                sketch.add(&format!("grow-{}", i % 7), 1);
            }
            Trending::decode(&sketch.encode()).expect("a used sketch re-encodes validly");
        }
        if let Ok(mut set) = CounterSet::decode(bytes) {
            let names: Vec<String> = set.unique_sketches().keys().cloned().collect();
            for name in &names {
                let _ = set.uniques(name);
            }
            let trending: Vec<String> = set.trending_sketches().keys().cloned().collect();
            for name in &trending {
                let _ = set.top(name, 10);
            }
            let copy = set.clone();
            let _ = set.merge(&copy);
            set.add_unique("visitors", "x");
            set.add_trending("products", "x", 1);
            CounterSet::decode(&set.encode()).expect("a used set re-encodes validly");
        }
        if let Ok(mut windows) = Windows::decode(bytes) {
            let _ = windows.merged(i64::MIN, i64::MAX);
            let copy = windows.clone();
            let _ = windows.merge(&copy);
            let minute = windows.newest_minute().unwrap_or(0);
            windows.bucket_mut(minute).add_unique("visitors", "x");
            let _ = windows.take();
            Windows::decode(&windows.encode()).expect("a used window re-encodes validly");
        }
    }

    #[test]
    fn valid_samples_decode_and_survive_use() {
        for sample in samples() {
            exercise(sample);
        }
        assert!(Uniques::decode(&samples()[2]).is_ok());
        assert!(Windows::decode(&samples()[6]).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn decoding_random_bytes_never_panics_even_when_used(
            kind in 0usize..4,
            body in proptest::collection::vec(any::<u8>(), 0..300),
            raw in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            exercise(&raw);
            exercise(&with_header(Kind::ALL[kind], &body));
        }

        #[test]
        fn decoding_truncated_or_bit_flipped_encodings_never_panics_even_when_used(
            sample in any::<proptest::sample::Index>(),
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..8), 0..4),
            cut in proptest::option::of(any::<proptest::sample::Index>()),
        ) {
            let mut bytes = sample.get(samples()).clone();
            for (position, bit) in flips {
                let i = position.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            exercise(&bytes);
        }

        #[test]
        fn any_id_set_round_trips_and_merges_like_the_original(
            a in proptest::collection::vec(any::<u32>(), 0..400),
            b in proptest::collection::vec(any::<u64>(), 0..400),
        ) {
            let mut x = Uniques::new();
            a.iter().for_each(|id| x.insert(&id.to_string()));
            let mut y = Uniques::new();
            b.iter().for_each(|id| y.insert_bytes(&id.to_le_bytes()));
            let mut merged = x.clone();
            merged.merge(&y).expect("same precision");
            let mut decoded = Uniques::decode(&x.encode()).expect("valid encoding");
            decoded.merge(&Uniques::decode(&y.encode()).expect("valid encoding")).expect("same precision");
            prop_assert_eq!(decoded.estimate(), merged.estimate());
            prop_assert_eq!(decoded.encode(), merged.encode());
        }
    }
}
