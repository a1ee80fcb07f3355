//! Catalog import: a Shopify product CSV export or a JSON product list in, catalog products and
//! stock levels out, with one error per rejected row. Pure: bytes in, values out, no clock.
//!
//! Key design choice: **one Shopify variant becomes one edgefront [`Product`]**. The catalog
//! model has a single `sku` and one price per currency on a product, and carts refer to products
//! by SKU, so a variant (its own SKU, price and stock) is the unit that maps onto it. Each
//! variant product gets
//! - `id`: `p-` and 16 hex digits of [`stable_hash`] over handle and SKU (deterministic, so a
//!   re-import of the same export keeps ids, and path-safe whatever the SKU contains);
//! - `slug`: the handle plus the option values, e.g. `classic-hoodie-black-m`;
//! - `title`: `Title — Black / M`; `attributes`: option name (lower-cased) → value, plus
//!   `vendor`;
//! - every image of its handle, its own `Variant Image` first.
//!
//! Shopify's placeholder option (`Title` = `Default Title`, a product without options) adds
//! nothing, so a single-variant product keeps its plain handle as slug and its plain title.
//! Grouping variants back into one page is left to the storefront (same handle prefix); the
//! catalog has no parent/variant link and this module does not add one.
//!
//! Other choices the caller should know:
//! - Rows are processed in file order and never abort the import: a bad row is skipped with a
//!   [`RowError`]. A handle's product fields (Title, Body, Vendor, Type, Tags, Published,
//!   Status) come from its first row and are kept even when that row's variant is rejected, so
//!   one bad price does not cascade into errors on the handle's other rows.
//! - Duplicate SKUs, ids or slugs are errors on the later row, so the products returned always
//!   build a [`crate::catalog::CatalogSnapshot`] together.
//! - Prices are parsed exactly (no floats) and refused when negative or finer than the
//!   currency's minor units rather than silently rounded.
//! - `stock` lists only SKUs whose quantity the input states. A Shopify export without a
//!   `Variant Inventory Qty` column (or a JSON item without `stock`) yields no stock entry, so
//!   the caller does not overwrite known stock with zeros; an empty cell means 0.
//! - `Variant Compare At Price` is ignored: the catalog model has no compare-at price.
//! - Progress is a `&mut dyn FnMut(usize)` argument called with the number of data rows (JSON:
//!   items) done after each one; the total is not known before the end (CSV rows are not lines),
//!   so a CLI draws a counter, or a bar over bytes with its own estimate.
//! - Row numbers: CSV rows are 1-based physical line numbers where the record starts (the
//!   header is row 1); JSON rows are the item's 1-based position in `products`, and row 0 is
//!   the document itself (not JSON, no `products` array).
//! - More data rows than [`ImportOptions::max_rows`] refuses the whole input: no products, the
//!   errors found so far and one saying so. Memory is bounded by the input and that limit.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::cart::MAX_SKU_BYTES;
use crate::catalog::{Image, Product, stable_hash, tokenize};
use crate::money::{Currency, Money};

/// Longest id and slug the catalog accepts (see `catalog::validate_product`).
const MAX_KEY_BYTES: usize = 128;
/// How much of an offending value an error message quotes.
const SHOWN_CHARS: usize = 40;

/// The result of an import: what was accepted and why the rest was not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Import {
    /// Accepted products, in input order (Shopify: by handle, then variant row).
    pub products: Vec<Product>,
    /// Stock per SKU, for the SKUs whose quantity the input states.
    pub stock: Vec<(String, u32)>,
    /// Rejected rows, in input order.
    pub errors: Vec<RowError>,
}

/// One rejected row (or, at row 0 of a JSON import, the whole document).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {row}: {error}")]
pub struct RowError {
    /// CSV: 1-based line where the record starts, header = 1. JSON: 1-based item position, 0 for
    /// the document.
    pub row: usize,
    /// What is wrong, quoting at most a short prefix of the offending value.
    pub error: String,
}

/// Limits and defaults the input does not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    /// Most data rows (CSV records after the header, JSON items); more refuses the input.
    pub max_rows: usize,
    /// `created_at` (unix seconds) for products that carry none: all of a Shopify export, whose
    /// product CSV has no creation date. Passed in because this module reads no clock.
    pub created_at: i64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            max_rows: 100_000,
            created_at: 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shopify CSV

/// Imports a Shopify product CSV export, pricing every variant in `currency` (the export has no
/// currency column). `progress` is called with the number of data rows done after each row.
pub fn shopify_csv(
    bytes: &[u8],
    currency: Currency,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(usize),
) -> Import {
    // Excel and Shopify may write a UTF-8 byte order mark; it would hide the `Handle` header.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut records = Records::new(bytes);
    let mut import = Import::default();
    let (columns, width) = match records.next_record() {
        Some((row, Ok(header))) => match Columns::find(&header) {
            Ok(columns) => (columns, header.len()),
            Err(error) => {
                import.errors.push(RowError { row, error });
                return import;
            }
        },
        Some((row, Err(error))) => {
            import.errors.push(RowError {
                row,
                error: format!("header row: {error}"),
            });
            return import;
        }
        None => {
            import.errors.push(RowError {
                row: 1,
                error: format!("no header row; required columns: {}", REQUIRED.join(", ")),
            });
            return import;
        }
    };

    let mut state = ShopifyState::new(currency, columns.inventory.is_some());
    let mut done = 0usize;
    while let Some((row, record)) = records.next_record() {
        done += 1;
        if done > opts.max_rows {
            return refused(import.errors, row, opts.max_rows);
        }
        let result = record.and_then(|record| {
            if record.iter().all(|f| f.trim_ascii().is_empty()) {
                // Spreadsheet editors leave trailing `,,,,` lines; they carry nothing.
                return Ok(());
            }
            if record.len() != width {
                return Err(format!(
                    "expected {width} fields like the header, found {}",
                    record.len()
                ));
            }
            let fields = Fields::read(&record, &columns)?;
            state.row(row, &fields)
        });
        if let Err(error) = result {
            import.errors.push(RowError { row, error });
        }
        progress(done);
    }
    state.finish(opts, &mut import);
    import
}

/// Required header columns; without any of them nothing can be imported.
const REQUIRED: [&str; 4] = ["Handle", "Title", "Variant SKU", "Variant Price"];

/// Where each column the import reads sits in a record.
#[derive(Debug, Default)]
struct Columns {
    handle: usize,
    title: usize,
    sku: usize,
    price: usize,
    body: Option<usize>,
    vendor: Option<usize>,
    kind: Option<usize>,
    tags: Option<usize>,
    published: Option<usize>,
    status: Option<usize>,
    option_names: [Option<usize>; 3],
    option_values: [Option<usize>; 3],
    inventory: Option<usize>,
    image_src: Option<usize>,
    image_position: Option<usize>,
    image_alt: Option<usize>,
    variant_image: Option<usize>,
}

impl Columns {
    fn find(header: &csv::ByteRecord) -> Result<Self, String> {
        let names: Vec<String> = header
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_owned())
            .collect();
        // The first of repeated columns wins, as in a spreadsheet lookup.
        let at = |name: &str| names.iter().position(|n| n == name);
        let missing: Vec<&str> = REQUIRED.into_iter().filter(|n| at(n).is_none()).collect();
        let (Some(handle), Some(title), Some(sku), Some(price)) = (
            at("Handle"),
            at("Title"),
            at("Variant SKU"),
            at("Variant Price"),
        ) else {
            return Err(format!(
                "missing required column(s): {} (a Shopify product export has them)",
                missing.join(", ")
            ));
        };
        Ok(Columns {
            handle,
            title,
            sku,
            price,
            body: at("Body (HTML)"),
            vendor: at("Vendor"),
            kind: at("Type"),
            tags: at("Tags"),
            published: at("Published"),
            status: at("Status"),
            option_names: [at("Option1 Name"), at("Option2 Name"), at("Option3 Name")],
            option_values: [
                at("Option1 Value"),
                at("Option2 Value"),
                at("Option3 Value"),
            ],
            inventory: at("Variant Inventory Qty"),
            image_src: at("Image Src"),
            image_position: at("Image Position"),
            image_alt: at("Image Alt Text"),
            variant_image: at("Variant Image"),
        })
    }
}

/// The fields of one record the import reads, trimmed (missing columns read as empty).
#[derive(Debug)]
struct Fields<'r> {
    handle: &'r str,
    title: &'r str,
    body: &'r str,
    vendor: &'r str,
    kind: &'r str,
    tags: &'r str,
    published: &'r str,
    status: &'r str,
    option_names: [&'r str; 3],
    option_values: [&'r str; 3],
    sku: &'r str,
    price: &'r str,
    inventory: &'r str,
    image_src: &'r str,
    image_position: &'r str,
    image_alt: &'r str,
    variant_image: &'r str,
}

impl<'r> Fields<'r> {
    fn read(record: &'r csv::ByteRecord, c: &Columns) -> Result<Self, String> {
        let get = |col: Option<usize>, name: &str| -> Result<&'r str, String> {
            match col.and_then(|i| record.get(i)) {
                None => Ok(""),
                Some(raw) => std::str::from_utf8(raw)
                    .map(str::trim)
                    .map_err(|_| format!("{name} is not valid UTF-8")),
            }
        };
        let [n1, n2, n3] = c.option_names;
        let [v1, v2, v3] = c.option_values;
        Ok(Fields {
            handle: get(Some(c.handle), "Handle")?,
            title: get(Some(c.title), "Title")?,
            body: get(c.body, "Body (HTML)")?,
            vendor: get(c.vendor, "Vendor")?,
            kind: get(c.kind, "Type")?,
            tags: get(c.tags, "Tags")?,
            published: get(c.published, "Published")?,
            status: get(c.status, "Status")?,
            option_names: [
                get(n1, "Option1 Name")?,
                get(n2, "Option2 Name")?,
                get(n3, "Option3 Name")?,
            ],
            option_values: [
                get(v1, "Option1 Value")?,
                get(v2, "Option2 Value")?,
                get(v3, "Option3 Value")?,
            ],
            sku: get(Some(c.sku), "Variant SKU")?,
            price: get(Some(c.price), "Variant Price")?,
            inventory: get(c.inventory, "Variant Inventory Qty")?,
            image_src: get(c.image_src, "Image Src")?,
            image_position: get(c.image_position, "Image Position")?,
            image_alt: get(c.image_alt, "Image Alt Text")?,
            variant_image: get(c.variant_image, "Variant Image")?,
        })
    }

    /// Whether the row describes a variant; rows with only image columns are image rows.
    fn has_variant(&self) -> bool {
        !self.sku.is_empty()
            || !self.price.is_empty()
            || self.option_values.iter().any(|v| !v.is_empty())
    }
}

/// Everything known about one handle while its rows are read.
#[derive(Debug)]
struct Handle {
    name: String,
    first_row: usize,
    title: String,
    description: String,
    category: Vec<String>,
    tags: Vec<String>,
    vendor: String,
    active: bool,
    option_names: [String; 3],
    variants: Vec<Variant>,
    /// (position, url, alt) in row order; sorted by position when the handle is finished.
    images: Vec<(Option<u32>, String, String)>,
    variant_rows: usize,
}

#[derive(Debug)]
struct Variant {
    id: String,
    sku: String,
    slug: String,
    options: Vec<(String, String)>,
    price: Money,
    stock: Option<u32>,
    image: Option<String>,
}

#[derive(Debug)]
struct ShopifyState {
    currency: Currency,
    has_inventory: bool,
    handles: Vec<Handle>,
    by_name: HashMap<String, usize>,
    claims: Claims,
}

impl ShopifyState {
    fn new(currency: Currency, has_inventory: bool) -> Self {
        ShopifyState {
            currency,
            has_inventory,
            handles: Vec::new(),
            by_name: HashMap::new(),
            claims: Claims::default(),
        }
    }

    fn row(&mut self, row: usize, f: &Fields<'_>) -> Result<(), String> {
        if f.handle.is_empty() {
            return Err("Handle is empty".into());
        }
        let (ix, first) = match self.by_name.get(f.handle) {
            Some(&ix) => (ix, false),
            None => (self.start_handle(row, f)?, true),
        };
        if f.has_variant() {
            self.handles[ix].variant_rows += 1;
        }
        let handle = &self.handles[ix];

        // Validate the variant and image parts fully before keeping either, so a rejected row
        // leaves nothing behind but its handle's product fields.
        let variant = if f.has_variant() {
            Some(self.variant(handle, f)?)
        } else {
            None
        };
        let image = if f.image_src.is_empty() {
            None
        } else {
            let position =
                match f.image_position {
                    "" => None,
                    p => Some(p.parse::<u32>().map_err(|_| {
                        format!("Image Position `{}` is not a whole number", shown(p))
                    })?),
                };
            Some((position, image_url(f.image_src, "Image Src")?, f.image_alt))
        };
        if variant.is_none() && image.is_none() && !first {
            return Err(format!(
                "row of handle `{}` has neither a variant (SKU, price, options) nor an image",
                shown(f.handle)
            ));
        }
        if let Some(v) = &variant {
            self.claims.claim(row, &v.sku, &v.id, &v.slug)?;
        }
        let handle = &mut self.handles[ix];
        if let Some(v) = variant {
            handle.variants.push(v);
        }
        if let Some((position, url, alt)) = image {
            handle.images.push((position, url, alt.to_owned()));
        }
        Ok(())
    }

    /// Registers a handle from its first row, which must carry the product fields.
    fn start_handle(&mut self, row: usize, f: &Fields<'_>) -> Result<usize, String> {
        if f.title.is_empty() {
            return Err(format!(
                "Title is empty on the first row of handle `{}`, which carries the product fields",
                shown(f.handle)
            ));
        }
        let status_active = match f.status.to_ascii_lowercase().as_str() {
            "" | "active" => true,
            "draft" | "archived" => false,
            _ => {
                return Err(format!(
                    "Status `{}` is not active, draft or archived",
                    shown(f.status)
                ));
            }
        };
        let published = match f.published.to_ascii_lowercase().as_str() {
            "" | "true" => true,
            "false" => false,
            _ => {
                return Err(format!(
                    "Published `{}` is not true or false",
                    shown(f.published)
                ));
            }
        };
        let ix = self.handles.len();
        self.handles.push(Handle {
            name: f.handle.to_owned(),
            first_row: row,
            title: f.title.to_owned(),
            description: html_to_text(f.body),
            category: category_path(f.kind),
            tags: normalize_tags(f.tags.split(',')),
            vendor: f.vendor.to_owned(),
            active: status_active && published,
            option_names: f.option_names.map(str::to_owned),
            variants: Vec::new(),
            images: Vec::new(),
            variant_rows: 0,
        });
        self.by_name.insert(f.handle.to_owned(), ix);
        Ok(ix)
    }

    fn variant(&self, handle: &Handle, f: &Fields<'_>) -> Result<Variant, String> {
        if f.sku.is_empty() {
            return Err("Variant SKU is empty; edgefront sells by SKU".into());
        }
        let price =
            parse_price(f.price, self.currency).map_err(|e| format!("Variant Price {e}"))?;
        let stock = if self.has_inventory {
            Some(parse_quantity(f.inventory)?)
        } else {
            None
        };
        let image = match f.variant_image {
            "" => None,
            url => Some(image_url(url, "Variant Image")?),
        };
        let mut options = Vec::new();
        for (i, value) in f.option_values.iter().enumerate() {
            if value.is_empty() {
                continue;
            }
            // Option names sit on a handle's first row only; later rows leave them empty.
            let name = match handle.option_names[i].as_str() {
                "" => f.option_names[i],
                name => name,
            };
            // Shopify's placeholder for a product without options.
            if name == "Title" && *value == "Default Title" {
                continue;
            }
            let key = match name {
                "" => format!("option{}", i + 1),
                name => name.to_lowercase(),
            };
            options.push((key, (*value).to_owned()));
        }
        let mut slug_text = handle.name.clone();
        for (_, value) in &options {
            slug_text.push(' ');
            slug_text.push_str(value);
        }
        Ok(Variant {
            id: derived_id(&handle.name, f.sku),
            sku: f.sku.to_owned(),
            slug: slugify(&slug_text),
            options,
            price,
            stock,
            image,
        })
    }

    fn finish(self, opts: &ImportOptions, import: &mut Import) {
        for mut handle in self.handles {
            if handle.variants.is_empty() {
                if handle.variant_rows == 0 {
                    import.errors.push(RowError {
                        row: handle.first_row,
                        error: format!("handle `{}` has no variant row", shown(&handle.name)),
                    });
                }
                continue;
            }
            // Position order, rows without a position after those with one, then file order.
            handle
                .images
                .sort_by_key(|(position, _, _)| position.unwrap_or(u32::MAX));
            let mut images: Vec<Image> = Vec::with_capacity(handle.images.len());
            for (_, url, alt) in handle.images {
                push_image(&mut images, url, alt);
            }
            for v in handle.variants {
                let mut own = Vec::with_capacity(images.len() + 1);
                if let Some(url) = v.image {
                    push_image(&mut own, url, String::new());
                }
                for image in &images {
                    push_image(&mut own, image.url.clone(), image.alt.clone());
                }
                let mut title = handle.title.clone();
                let mut attributes = BTreeMap::new();
                if !handle.vendor.is_empty() {
                    attributes.insert("vendor".to_owned(), handle.vendor.clone());
                }
                for (i, (key, value)) in v.options.into_iter().enumerate() {
                    title.push_str(if i == 0 { " — " } else { " / " });
                    title.push_str(&value);
                    attributes.insert(key, value);
                }
                if let Some(n) = v.stock {
                    import.stock.push((v.sku.clone(), n));
                }
                import.products.push(Product {
                    id: v.id,
                    sku: v.sku,
                    slug: v.slug,
                    title,
                    description: handle.description.clone(),
                    category: handle.category.clone(),
                    tags: handle.tags.clone(),
                    prices: vec![v.price],
                    images: own,
                    attributes,
                    active: handle.active,
                    created_at: opts.created_at,
                    popularity: 0,
                    stock: v.stock.unwrap_or(0),
                });
            }
        }
        import.errors.sort_by_key(|e| e.row);
    }
}

fn push_image(images: &mut Vec<Image>, url: String, alt: String) {
    if !images.iter().any(|i| i.url == url) {
        images.push(Image { url, alt });
    }
}

/// The whole input refused for having too many rows: no products, the errors so far plus one.
fn refused(mut errors: Vec<RowError>, row: usize, max_rows: usize) -> Import {
    errors.push(RowError {
        row,
        error: format!("more than {max_rows} rows; the input is refused and nothing imported"),
    });
    Import {
        products: Vec::new(),
        stock: Vec::new(),
        errors,
    }
}

/// CSV records with their line numbers, turning malformed quoting into an error for the row
/// where it starts and resuming on the next line.
///
/// The `csv` crate is lenient: an unclosed quote silently swallows the following lines into one
/// field, up to the next quote anywhere. So each record's raw text is checked against RFC 4180
/// quoting ([`well_quoted`]); when it fails, the lines it swallowed are re-read from its second
/// line, so one bad quote costs one row, not the rest of the file.
struct Records<'a> {
    bytes: &'a [u8],
    /// Over a `Cursor` so that skipping a bad line is a seek, not a new reader (whose parser
    /// tables cost more to build than many rows cost to read).
    reader: csv::Reader<std::io::Cursor<&'a [u8]>>,
    /// Line number at `line_offset`, advanced as records are read (offsets only grow).
    line: usize,
    line_offset: usize,
    done: bool,
}

impl<'a> Records<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Records {
            bytes,
            // Field counts are checked against the header by the caller, to say which row is
            // off; csv's own line numbers are not used (see `line_at`).
            reader: csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(std::io::Cursor::new(bytes)),
            line: 1,
            line_offset: 0,
            done: false,
        }
    }

    fn line_at(&mut self, offset: usize) -> usize {
        if let Some(skipped) = self.bytes.get(self.line_offset..offset) {
            self.line += skipped.iter().filter(|&&b| b == b'\n').count();
            self.line_offset = offset;
        }
        self.line
    }

    fn next_record(&mut self) -> Option<(usize, Result<csv::ByteRecord, String>)> {
        if self.done {
            return None;
        }
        let mut record = csv::ByteRecord::new();
        let read = self.reader.read_byte_record(&mut record);
        let len = self.bytes.len();
        let offset = |p: Option<&csv::Position>| {
            p.and_then(|p| usize::try_from(p.byte()).ok())
                .map_or(len, |b| b.min(len))
        };
        let mut start = offset(record.position());
        // The reader skips blank lines before a record; its row is where its text starts.
        while start < len && matches!(self.bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        let row = self.line_at(start);
        match read {
            Ok(true) => {}
            Ok(false) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                // Reading a slice has no I/O errors and flexible byte records no others;
                // stop rather than loop on an error that repeats.
                self.done = true;
                return Some((row, Err(format!("unreadable CSV: {e}"))));
            }
        }
        let end = offset(Some(self.reader.position())).max(start);
        if well_quoted(&self.bytes[start..end]) {
            return Some((row, Ok(record)));
        }
        let next = match self.bytes[start..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            Some(i) => {
                let at = start + i;
                if self.bytes[at] == b'\r' && self.bytes.get(at + 1) == Some(&b'\n') {
                    at + 2
                } else {
                    at + 1
                }
            }
            None => len,
        };
        let mut resume = csv::Position::new();
        resume.set_byte(next as u64);
        if self.reader.seek(resume).is_err() {
            self.done = true;
        }
        Some((
            row,
            Err(
                "malformed quoting: a `\"` must open a field, be doubled inside it, or close it \
                 before `,` or the line end"
                    .into(),
            ),
        ))
    }
}

/// Whether one record's raw text (its line terminator may follow) is quoted as RFC 4180 says:
/// a `"` opens a field, is doubled inside a quoted field, or closes it right before `,` or the
/// line end; a quoted field is closed; and no line end outside quotes comes before the last.
fn well_quoted(raw: &[u8]) -> bool {
    #[derive(Clone, Copy)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        /// A `"` inside a quoted field: doubled or closing, the next byte tells.
        QuoteInQuoted,
        /// Past the record's line end: only more line-end bytes may follow.
        Ended,
    }
    let mut state = State::FieldStart;
    for &b in raw {
        state = match (state, b) {
            (State::Quoted, b'"') => State::QuoteInQuoted,
            (State::Quoted, _) => State::Quoted,
            (State::QuoteInQuoted, b'"') => State::Quoted,
            (_, b'\r' | b'\n') => State::Ended,
            (State::Ended, _) => return false,
            (_, b',') => State::FieldStart,
            (State::FieldStart, b'"') => State::Quoted,
            (State::Unquoted, b'"') | (State::QuoteInQuoted, _) => return false,
            (State::FieldStart | State::Unquoted, _) => State::Unquoted,
        };
    }
    !matches!(state, State::Quoted)
}

// ---------------------------------------------------------------------------------------------
// JSON

/// Imports `{"products": [...]}`, each item shaped like [`Product`]'s JSON with these
/// relaxations: `id` (derived from the SKU), `slug` (from title and SKU), `active` (true),
/// `created_at` (from `opts`), `popularity` and `stock` may be left out; `price` (one
/// [`Money`]) may stand for `prices`; `category` may be a path string like `Apparel > Hoodies`.
/// A serialized [`crate::catalog::SnapshotData`] is therefore valid input. Unlike a Shopify body,
/// `description` is taken as plain text. `progress` is called with the number of items done
/// after each item.
pub fn json(bytes: &[u8], opts: &ImportOptions, progress: &mut dyn FnMut(usize)) -> Import {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // The products stay unparsed text here, so a large list costs no allocation per item yet;
    // this pass also proves the whole document well-formed before any item is taken.
    let document: Document<'_> = match serde_json::from_slice(bytes) {
        Ok(d) => d,
        Err(e) => {
            return Import {
                errors: vec![RowError {
                    row: 0,
                    error: format!("not a JSON product list: {e}"),
                }],
                ..Import::default()
            };
        }
    };
    let mut state = JsonState {
        opts,
        progress,
        done: 0,
        refused: false,
        import: Import::default(),
        claims: Claims::default(),
    };
    let mut items = serde_json::Deserializer::from_str(document.products.get());
    let walked = items.deserialize_seq(ItemsVisitor(&mut state));
    if state.refused {
        return refused(state.import.errors, opts.max_rows + 1, opts.max_rows);
    }
    if let Err(e) = walked {
        state.import.errors.insert(
            0,
            RowError {
                row: 0,
                error: format!("`products` {}", without_position(&e)),
            },
        );
    }
    state.import
}

#[derive(Deserialize)]
struct Document<'a> {
    #[serde(borrow)]
    products: &'a RawValue,
}

struct JsonState<'o, 'p> {
    opts: &'o ImportOptions,
    progress: &'p mut dyn FnMut(usize),
    done: usize,
    refused: bool,
    import: Import,
    claims: Claims,
}

impl JsonState<'_, '_> {
    /// Takes one item; false once the row limit is passed.
    fn item(&mut self, raw: &RawValue) -> bool {
        self.done += 1;
        if self.done > self.opts.max_rows {
            self.refused = true;
            return false;
        }
        let row = self.done;
        match self.product(row, raw) {
            Ok((product, stock)) => {
                if let Some(n) = stock {
                    self.import.stock.push((product.sku.clone(), n));
                }
                self.import.products.push(product);
            }
            Err(error) => self.import.errors.push(RowError { row, error }),
        }
        (self.progress)(self.done);
        true
    }

    fn product(&mut self, row: usize, raw: &RawValue) -> Result<(Product, Option<u32>), String> {
        let item: Item = serde_json::from_str(raw.get()).map_err(|e| without_position(&e))?;
        let sku = item.sku.trim().to_owned();
        if sku.is_empty() {
            return Err("sku is empty".into());
        }
        let title = item.title.trim().to_owned();
        if title.is_empty() {
            return Err("title is empty".into());
        }
        let prices = match (item.price, item.prices) {
            (Some(_), Some(_)) => return Err("give `price` or `prices`, not both".into()),
            (None, None) => return Err("`price` or `prices` is required".into()),
            (Some(p), None) => vec![p],
            (None, Some(ps)) => ps,
        };
        if prices.is_empty() {
            return Err("`prices` is empty".into());
        }
        let mut money: Vec<Money> = Vec::with_capacity(prices.len());
        for p in &prices {
            let m = parse_price(&p.amount, p.currency)
                .map_err(|e| format!("price in {} {e}", p.currency))?;
            if money.iter().any(|other| other.currency() == m.currency()) {
                return Err(format!("two prices in {}", p.currency));
            }
            money.push(m);
        }
        let images = item
            .images
            .into_iter()
            .map(|i| image_url(&i.url, "image url").map(|url| Image { url, alt: i.alt }))
            .collect::<Result<Vec<_>, _>>()?;
        let id = match item.id {
            Some(id) => id,
            None => derived_id("", &sku),
        };
        let slug = match item.slug {
            Some(slug) => slug,
            None => slugify(&format!("{title} {sku}")),
        };
        self.claims.claim(row, &sku, &id, &slug)?;
        Ok((
            Product {
                id,
                sku,
                slug,
                title,
                description: item.description,
                category: item.category,
                tags: normalize_tags(item.tags.iter().map(String::as_str)),
                prices: money,
                images,
                attributes: item.attributes,
                active: item.active.unwrap_or(true),
                created_at: item.created_at.unwrap_or(self.opts.created_at),
                popularity: item.popularity,
                stock: item.stock.unwrap_or(0),
            },
            item.stock,
        ))
    }
}

struct ItemsVisitor<'s, 'o, 'p>(&'s mut JsonState<'o, 'p>);

impl<'de> Visitor<'de> for ItemsVisitor<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of products")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if !self.0.item(raw) {
                break;
            }
        }
        Ok(())
    }
}

/// One JSON item: [`Product`]'s serde shape, with the relaxations [`json`] lists.
#[derive(Deserialize)]
struct Item {
    id: Option<String>,
    sku: String,
    slug: Option<String>,
    title: String,
    #[serde(default)]
    description: String,
    #[serde(deserialize_with = "category_wire")]
    category: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    price: Option<PriceWire>,
    prices: Option<Vec<PriceWire>>,
    #[serde(default)]
    images: Vec<Image>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    active: Option<bool>,
    created_at: Option<i64>,
    #[serde(default)]
    popularity: u64,
    stock: Option<u32>,
}

/// [`Money`]'s JSON shape, read as text so the amount goes through the same strict parse as a
/// CSV price (Money's own Deserialize rounds silently).
#[derive(Deserialize)]
struct PriceWire {
    amount: String,
    currency: Currency,
}

/// `category`: a list of segments as [`Product`] serializes it, or a path string.
fn category_wire<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Category;
    impl<'de> Visitor<'de> for Category {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a category path: a string like \"Apparel > Hoodies\" or a list")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(category_path(v))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut path = Vec::new();
            while let Some(segment) = seq.next_element::<String>()? {
                let segment = slugify(&segment);
                if !segment.is_empty() {
                    path.push(segment);
                }
            }
            Ok(path)
        }
    }
    d.deserialize_any(Category)
}

/// A serde_json message without its ` at line L column C`, which would point into the item's
/// own text rather than the file.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

// ---------------------------------------------------------------------------------------------
// Shared rules

/// SKUs, ids and slugs taken so far, with the row that took each.
#[derive(Debug, Default)]
struct Claims {
    skus: HashMap<String, usize>,
    ids: HashMap<String, usize>,
    slugs: HashMap<String, usize>,
}

impl Claims {
    /// Checks the catalog's key rules and uniqueness, then takes all three keys (or none).
    fn claim(&mut self, row: usize, sku: &str, id: &str, slug: &str) -> Result<(), String> {
        if sku.len() > MAX_SKU_BYTES {
            return Err(format!(
                "SKU `{}` is longer than {MAX_SKU_BYTES} bytes",
                shown(sku)
            ));
        }
        for (what, key) in [("id", id), ("slug", slug)] {
            if key.is_empty() || key.len() > MAX_KEY_BYTES {
                return Err(format!(
                    "{what} `{}` must be 1 to {MAX_KEY_BYTES} bytes",
                    shown(key)
                ));
            }
            // Ids and slugs travel as one URL path segment (`/v1/products/{id-or-slug}`).
            let path_safe = key
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'));
            if !path_safe || key.chars().all(|c| c == '.') {
                return Err(format!(
                    "{what} `{}` may hold only letters, digits, `-`, `_`, `.` and `~`",
                    shown(key)
                ));
            }
        }
        for (what, map, key) in [
            ("SKU", &self.skus, sku),
            ("id", &self.ids, id),
            ("slug", &self.slugs, slug),
        ] {
            if let Some(first) = map.get(key) {
                return Err(format!(
                    "duplicate {what} `{}` (first on row {first})",
                    shown(key)
                ));
            }
        }
        self.skus.insert(sku.to_owned(), row);
        self.ids.insert(id.to_owned(), row);
        self.slugs.insert(slug.to_owned(), row);
        Ok(())
    }
}

/// `p-` and 16 hex digits: stable across runs and targets, path-safe whatever the SKU holds.
fn derived_id(scope: &str, sku: &str) -> String {
    let mut key = Vec::with_capacity(scope.len() + 1 + sku.len());
    key.extend_from_slice(scope.as_bytes());
    key.push(0);
    key.extend_from_slice(sku.as_bytes());
    format!("p-{:016x}", stable_hash(&key))
}

/// Lower-case, accent-free words joined by `-` (the catalog's own tokenizer), cut to the
/// catalog's slug limit at a word boundary where possible.
fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for token in tokenize(text) {
        let extra = token.len() + usize::from(!slug.is_empty());
        if slug.len() + extra > MAX_KEY_BYTES {
            if slug.is_empty() {
                // One huge word: cut it at a character boundary.
                for c in token.chars() {
                    if slug.len() + c.len_utf8() > MAX_KEY_BYTES {
                        break;
                    }
                    slug.push(c);
                }
            }
            break;
        }
        if !slug.is_empty() {
            slug.push('-');
        }
        slug.push_str(&token);
    }
    slug
}

/// `Apparel > Hoodies` or `Apparel/Hoodies` → `["apparel", "hoodies"]`, the catalog's format.
fn category_path(text: &str) -> Vec<String> {
    text.split(['>', '/'])
        .map(slugify)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Trimmed, lower-cased, de-duplicated and sorted (the order the demo catalog uses).
fn normalize_tags<'t>(tags: impl Iterator<Item = &'t str>) -> Vec<String> {
    let mut out: Vec<String> = tags
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// An exact, non-negative amount in `currency`; the error completes "Variant Price …".
fn parse_price(text: &str, currency: Currency) -> Result<Money, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".into());
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    // Digits with an optional fraction, nothing else: `Decimal`'s parser would also accept
    // `1_000` and similar, which no export writes.
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) {
        return Err(format!("`{}` is not a decimal amount", shown(text)));
    }
    let amount = Decimal::from_str_exact(unsigned)
        .map_err(|_| format!("`{}` is out of range", shown(text)))?;
    if negative && !amount.is_zero() {
        return Err(format!("`{}` is negative", shown(text)));
    }
    let money = Money::new(amount, currency);
    if money.amount() != amount {
        return Err(format!(
            "`{}` has more decimals than {currency} allows ({})",
            shown(text),
            currency.minor_units()
        ));
    }
    Ok(money)
}

/// A whole number of units, empty meaning 0.
fn parse_quantity(text: &str) -> Result<u32, String> {
    if text.is_empty() {
        return Ok(0);
    }
    if let Ok(n) = text.parse::<u32>() {
        return Ok(n);
    }
    let negative = text
        .strip_prefix('-')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    Err(if negative {
        format!("Variant Inventory Qty `{}` is negative", shown(text))
    } else {
        format!(
            "Variant Inventory Qty `{}` is not a whole number up to {}",
            shown(text),
            u32::MAX
        )
    })
}

/// Absolute http(s) or site-relative, as [`Image::url`] promises; anything else (`javascript:`,
/// `data:`, a bare file name) would break or endanger the storefront that renders it.
fn image_url(url: &str, column: &str) -> Result<String, String> {
    let url = url.trim();
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") || url.starts_with('/') {
        Ok(url.to_owned())
    } else {
        Err(format!(
            "{column} `{}` is not an http(s) or site-relative URL",
            shown(url)
        ))
    }
}

/// At most `SHOWN_CHARS` characters of a value, for error messages.
fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// HTML to text

/// Plain text of an HTML fragment: tags and comments dropped, `script`/`style` contents
/// dropped, block elements and `<br>` as line breaks, runs of whitespace as one space, and the
/// entities `&amp; &lt; &gt; &quot; &apos; &nbsp;` and numeric ones decoded (once: `&amp;lt;`
/// is `&lt;`). Not a full HTML parser; enough for product descriptions.
fn html_to_text(html: &str) -> String {
    let bytes = html.as_bytes();
    let mut raw = String::with_capacity(html.len());
    let mut text_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        let Some(end) = markup_end(bytes, i) else {
            i += 1;
            continue;
        };
        push_text(&mut raw, &html[text_start..i]);
        let (name, closing) = tag_name(&html[i..end]);
        match name.as_str() {
            "script" | "style" if !closing && !html[..end].ends_with("/>") => {
                // Their content is code, not text: skip to the matching close tag.
                let close = format!("</{name}");
                let after = find_ascii_ci(bytes, end, close.as_bytes()).unwrap_or(bytes.len());
                i = markup_end(bytes, after).unwrap_or(bytes.len());
            }
            "br" | "p" | "div" | "li" | "ul" | "ol" | "dl" | "dt" | "dd" | "h1" | "h2" | "h3"
            | "h4" | "h5" | "h6" | "tr" | "table" | "section" | "article" | "header" | "footer"
            | "blockquote" | "pre" | "hr" | "figure" | "figcaption" => {
                raw.push('\n');
                i = end;
            }
            "td" | "th" | "img" => {
                raw.push(' ');
                i = end;
            }
            _ => i = end,
        }
        text_start = i;
    }
    push_text(&mut raw, &html[text_start.min(html.len())..]);

    let mut out = String::with_capacity(raw.len());
    for line in raw.split('\n') {
        let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
        if words.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&words.join(" "));
    }
    out
}

/// The end (exclusive) of the tag, comment or declaration starting with `<` at `start`, or
/// `None` when that `<` is just text (`a < b`, `<3`). An unterminated tag runs to the end.
fn markup_end(bytes: &[u8], start: usize) -> Option<usize> {
    let next = *bytes.get(start + 1)?;
    if bytes[start..].starts_with(b"<!--") {
        let end = find_ascii_ci(bytes, start + 4, b"-->").map_or(bytes.len(), |i| i + 3);
        return Some(end);
    }
    if !(next.is_ascii_alphabetic() || matches!(next, b'/' | b'!' | b'?')) {
        return None;
    }
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'>' => return Some(i + 1),
            b'=' => {
                // A quoted attribute value may contain `>`.
                let mut j = i + 1;
                while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                    j += 1;
                }
                match bytes.get(j) {
                    Some(&q) if q == b'"' || q == b'\'' => {
                        i = bytes[j + 1..]
                            .iter()
                            .position(|&b| b == q)
                            .map_or(bytes.len(), |k| j + 1 + k + 1);
                    }
                    _ => i = j,
                }
            }
            _ => i += 1,
        }
    }
    Some(bytes.len())
}

/// Lower-cased element name of a tag's text, and whether it is a closing tag.
fn tag_name(tag: &str) -> (String, bool) {
    let inner = tag.strip_prefix('<').unwrap_or(tag);
    let (closing, inner) = match inner.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, inner),
    };
    let name = inner
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    (name, closing)
}

/// First position at or after `from` where `needle` (ASCII, lower case) occurs, ignoring case.
fn find_ascii_ci(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= bytes.len() {
        return None;
    }
    bytes[from..]
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|i| from + i)
}

/// Appends a text run: entities decoded, every whitespace character as a space (HTML collapses
/// source line breaks; block tags make the real ones).
fn push_text(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        push_spaced(out, &rest[..amp]);
        let after = &rest[amp + 1..];
        // Entities are short; a `;` further away means this `&` is literal.
        let decoded = after.as_bytes()[..after.len().min(12)]
            .iter()
            .position(|&b| b == b';')
            .and_then(|semi| decode_entity(&after[..semi]).map(|c| (c, semi)));
        match decoded {
            Some((c, semi)) => {
                out.push(if c.is_whitespace() { ' ' } else { c });
                rest = &after[semi + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    push_spaced(out, rest);
}

fn push_spaced(out: &mut String, text: &str) {
    out.extend(
        text.chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c }),
    );
}

fn decode_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        // A plain space: the description is plain text, where a no-break space only surprises.
        "nbsp" => ' ',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse::<u32>().ok()?,
            };
            char::from_u32(code).filter(|c| *c != '\0')?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogSnapshot, SnapshotData, demo_catalog};
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    /// A Shopify export as the admin writes it (a subset of its columns, two unknown to us):
    /// a hoodie with three variants over two options and two image-only rows, a draft mug with
    /// Shopify's placeholder option, a cap whose first variant has a negative price, a tote that
    /// reuses the hoodie's SKU, and an unpublished parka. The hoodie's body spans two lines.
    const EXPORT: &str = r#"Handle,Title,Body (HTML),Vendor,Type,Tags,Published,Option1 Name,Option1 Value,Option2 Name,Option2 Value,Option3 Name,Option3 Value,Variant SKU,Variant Grams,Variant Inventory Qty,Variant Price,Variant Compare At Price,Image Src,Image Position,Image Alt Text,Gift Card,Variant Image,Status
classic-hoodie,Classic Hoodie,"<p class=""intro"">Heavyweight <strong>organic</strong> cotton &amp; recycled polyester.</p>
<ul><li>Relaxed fit, dropped shoulders</li><li>Kangaroo pocket</li></ul>",Northwind,Apparel > Hoodies,"Organic, Bestseller, organic , Winter",TRUE,Color,Black,Size,M,,,HD-BLK-M,680,12,59.00,69.00,https://cdn.shopify.com/s/files/1/hoodie-front.jpg,1,Classic Hoodie front,FALSE,,active
classic-hoodie,,,,,,,,Black,,L,,,HD-BLK-L,690,3,59.00,69.00,,,,,,
classic-hoodie,,,,,,,,Navy,,M,,,HD-NVY-M,680,7,62.50,,,,,,https://cdn.shopify.com/s/files/1/hoodie-navy.jpg,
classic-hoodie,,,,,,,,,,,,,,,,,,https://cdn.shopify.com/s/files/1/hoodie-back.jpg,3,Back,,,
classic-hoodie,,,,,,,,,,,,,,,,,,https://cdn.shopify.com/s/files/1/hoodie-detail.jpg,2,,,,
enamel-mug,Enamel Mug,"<p>Camp&nbsp;mug &lt;3<br>Dishwasher safe</p><script>track(""mug"")</script>",Fieldware,Home/Kitchen,"camping, gift",TRUE,Title,Default Title,,,,,MUG-ENM-01,300,,14.5,,https://cdn.shopify.com/s/files/1/mug.jpg,1,,FALSE,,draft
trail-cap,"Trail Cap, ""Ultralight""",<p>Packs flat.</p>,Northwind,Accessories > Hats,,TRUE,Size,Adult,,,,,CAP-TRL-A,60,20,-5.00,,,,,FALSE,,active
trail-cap,,,,,,,,Kids,,,,,CAP-TRL-K,50,4,19.00,,,,,,,
canvas-tote,Canvas Tote,Sturdy tote.,Fieldware,Accessories/Bags,eco,TRUE,Color,Natural,,,,,TOTE-NAT,400,9,24.00,,,,,FALSE,,active
canvas-tote,,,,,,,,Black,,,,,HD-BLK-M,400,2,24.00,,,,,,,
winter-parka,Winter Parka,,Northwind,Apparel > Jackets,,FALSE,Title,Default Title,,,,,PARKA-01,1500,5,249.00,,,,,FALSE,,active
"#;

    const T0: i64 = 1_750_000_000;

    fn opts() -> ImportOptions {
        ImportOptions {
            created_at: T0,
            ..ImportOptions::default()
        }
    }

    fn eur(s: &str) -> Money {
        Money::parse(s, Currency::EUR).unwrap()
    }

    fn csv_import(text: &str) -> Import {
        shopify_csv(text.as_bytes(), Currency::EUR, &opts(), &mut |_| {})
    }

    fn json_import(text: &str) -> Import {
        json(text.as_bytes(), &opts(), &mut |_| {})
    }

    fn by_sku<'a>(import: &'a Import, sku: &str) -> &'a Product {
        import
            .products
            .iter()
            .find(|p| p.sku == sku)
            .unwrap_or_else(|| panic!("{sku} not imported: {:?}", import.errors))
    }

    fn rows(import: &Import) -> Vec<usize> {
        import.errors.iter().map(|e| e.row).collect()
    }

    const HEADER: &str =
        "Handle,Title,Option1 Name,Option1 Value,Variant SKU,Variant Price,Variant Inventory Qty";

    #[test]
    fn variant_rows_become_skus_of_one_handle() {
        let import = csv_import(EXPORT);
        let hoodies: Vec<&Product> = import
            .products
            .iter()
            .filter(|p| p.slug.starts_with("classic-hoodie"))
            .collect();
        let skus: Vec<&str> = hoodies.iter().map(|p| p.sku.as_str()).collect();
        assert_eq!(skus, ["HD-BLK-M", "HD-BLK-L", "HD-NVY-M"]);
        let slugs: Vec<&str> = hoodies.iter().map(|p| p.slug.as_str()).collect();
        assert_eq!(
            slugs,
            [
                "classic-hoodie-black-m",
                "classic-hoodie-black-l",
                "classic-hoodie-navy-m"
            ]
        );
        let navy = by_sku(&import, "HD-NVY-M");
        assert_eq!(navy.title, "Classic Hoodie — Navy / M");
        assert_eq!(navy.prices, [eur("62.50")]);
        assert_eq!(navy.attributes["color"], "Navy");
        assert_eq!(navy.attributes["size"], "M");
        assert_eq!(navy.attributes["vendor"], "Northwind");
        // Product fields come from the handle's first row, for every variant.
        for p in &hoodies {
            assert_eq!(p.category, ["apparel", "hoodies"]);
            assert_eq!(p.tags, ["bestseller", "organic", "winter"]);
            assert_eq!(p.description, navy.description);
            assert!(p.active);
            assert_eq!(p.created_at, T0);
        }
    }

    #[test]
    fn the_whole_export_imports_all_but_its_two_bad_rows() {
        let import = csv_import(EXPORT);
        let skus: Vec<&str> = import.products.iter().map(|p| p.sku.as_str()).collect();
        assert_eq!(
            skus,
            [
                "HD-BLK-M",
                "HD-BLK-L",
                "HD-NVY-M",
                "MUG-ENM-01",
                "CAP-TRL-K",
                "TOTE-NAT",
                "PARKA-01"
            ]
        );
        assert_eq!(rows(&import), [9, 12], "{:?}", import.errors);
        assert_eq!(
            import.stock,
            [
                ("HD-BLK-M".to_owned(), 12),
                ("HD-BLK-L".to_owned(), 3),
                ("HD-NVY-M".to_owned(), 7),
                ("MUG-ENM-01".to_owned(), 0),
                ("CAP-TRL-K".to_owned(), 4),
                ("TOTE-NAT".to_owned(), 9),
                ("PARKA-01".to_owned(), 5),
            ]
        );
        assert_eq!(by_sku(&import, "HD-BLK-L").stock, 3);
    }

    #[test]
    fn imported_products_build_a_catalog_snapshot() {
        let import = csv_import(EXPORT);
        let snapshot = CatalogSnapshot::build(1, import.products).unwrap();
        assert!(snapshot.get("classic-hoodie-navy-m").is_some());
        assert_eq!(snapshot.in_category("apparel/hoodies").count(), 3);
        // The draft mug is imported, but inactive products are not served.
        assert!(snapshot.by_sku("MUG-ENM-01").is_none());
    }

    #[test]
    fn image_only_rows_add_images_in_position_order_with_the_variant_image_first() {
        let import = csv_import(EXPORT);
        let urls = |sku: &str| -> Vec<String> {
            by_sku(&import, sku)
                .images
                .iter()
                .map(|i| i.url.rsplit('/').next().unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(
            urls("HD-BLK-M"),
            ["hoodie-front.jpg", "hoodie-detail.jpg", "hoodie-back.jpg"]
        );
        assert_eq!(
            urls("HD-NVY-M"),
            [
                "hoodie-navy.jpg",
                "hoodie-front.jpg",
                "hoodie-detail.jpg",
                "hoodie-back.jpg"
            ]
        );
        assert_eq!(
            by_sku(&import, "HD-BLK-M").images[0].alt,
            "Classic Hoodie front"
        );
    }

    #[test]
    fn html_body_becomes_plain_text_with_entities_decoded() {
        let import = csv_import(EXPORT);
        assert_eq!(
            by_sku(&import, "HD-BLK-M").description,
            "Heavyweight organic cotton & recycled polyester.\nRelaxed fit, dropped shoulders\nKangaroo pocket"
        );
        // `&nbsp;` is a plain space, `&lt;` a literal `<`, and script code is not text.
        assert_eq!(
            by_sku(&import, "MUG-ENM-01").description,
            "Camp mug <3\nDishwasher safe"
        );
    }

    #[test]
    fn draft_status_and_unpublished_products_are_inactive() {
        let import = csv_import(EXPORT);
        assert!(!by_sku(&import, "MUG-ENM-01").active, "Status draft");
        assert!(!by_sku(&import, "PARKA-01").active, "Published FALSE");
        assert!(by_sku(&import, "TOTE-NAT").active);
        let archived =
            format!("{HEADER},Status\nold,Old,Title,Default Title,OLD-1,1.00,1,Archived\n");
        assert!(!csv_import(&archived).products[0].active);
    }

    #[test]
    fn shopify_placeholder_option_keeps_the_plain_handle_and_title() {
        let import = csv_import(EXPORT);
        let mug = by_sku(&import, "MUG-ENM-01");
        assert_eq!(mug.slug, "enamel-mug");
        assert_eq!(mug.title, "Enamel Mug");
        assert_eq!(mug.category, ["home", "kitchen"]);
        assert_eq!(mug.prices, [eur("14.50")]);
        assert!(!mug.attributes.contains_key("title"));
    }

    #[test]
    fn quoted_fields_keep_their_commas_quotes_and_newlines() {
        let import = csv_import(EXPORT);
        assert_eq!(
            by_sku(&import, "CAP-TRL-K").title,
            "Trail Cap, \"Ultralight\" — Kids"
        );
        let text = "Handle,Title,Body (HTML),Variant SKU,Variant Price\n\
                    note,\"Note, \"\"lined\"\"\",\"one\ntwo, three\",N-1,2.00\n";
        let note = &csv_import(text).products[0];
        assert_eq!(note.title, "Note, \"lined\"");
        assert_eq!(note.description, "one two, three");
    }

    #[test]
    fn negative_price_is_a_row_error_and_the_rest_imports() {
        let import = csv_import(EXPORT);
        let error = &import.errors[0];
        assert_eq!(error.row, 9);
        assert!(
            error.error.contains("Variant Price `-5.00` is negative"),
            "{error}"
        );
        assert!(import.products.iter().all(|p| p.sku != "CAP-TRL-A"));
        // The rejected row still gave its handle the product fields the next row needs.
        let kids = by_sku(&import, "CAP-TRL-K");
        assert_eq!(kids.description, "Packs flat.");
        assert_eq!(kids.category, ["accessories", "hats"]);
    }

    #[test]
    fn empty_and_unparsable_prices_are_row_errors() {
        let text = format!(
            "{HEADER}\na,A,,,A-1,,1\nb,B,,,B-1,12.99 EUR,1\nc,C,,,C-1,\"1,50\",1\nd,D,,,D-1,1.999,1\ne,E,,,E-1,1_000,1\nf,F,,,F-1,3.10,1\n"
        );
        let import = csv_import(&text);
        assert_eq!(rows(&import), [2, 3, 4, 5, 6]);
        assert!(import.errors[0].error.contains("is empty"));
        assert!(
            import.errors[3]
                .error
                .contains("more decimals than EUR allows")
        );
        assert_eq!(import.products.len(), 1);
        assert_eq!(import.products[0].prices, [eur("3.10")]);
    }

    #[test]
    fn prices_parse_exactly_in_the_callers_currency() {
        let yen = Currency::parse("JPY").unwrap();
        assert_eq!(parse_price("1200.00", yen).unwrap().amount(), dec!(1200));
        assert!(parse_price("1200.50", yen).is_err());
        let dinar = Currency::parse("KWD").unwrap();
        assert_eq!(parse_price("1.234", dinar).unwrap().amount(), dec!(1.234));
        assert_eq!(parse_price("0.1", Currency::EUR).unwrap(), eur("0.10"));
        assert_eq!(parse_price("-0.00", Currency::EUR).unwrap(), eur("0"));
        for junk in [
            "1e3",
            ".5",
            "5.",
            "+5",
            "--1",
            "NaN",
            "0x10",
            "1 000",
            "99999999999999999999999999999999",
        ] {
            assert!(parse_price(junk, Currency::EUR).is_err(), "{junk}");
        }
    }

    #[test]
    fn duplicate_sku_across_handles_is_an_error_on_the_later_row() {
        let import = csv_import(EXPORT);
        let error = &import.errors[1];
        assert_eq!(error.row, 12);
        assert!(
            error
                .error
                .contains("duplicate SKU `HD-BLK-M` (first on row 2)"),
            "{error}"
        );
        assert_eq!(
            by_sku(&import, "HD-BLK-M").title,
            "Classic Hoodie — Black / M"
        );
        assert_eq!(
            import.stock.iter().filter(|(s, _)| s == "HD-BLK-M").count(),
            1
        );
    }

    #[test]
    fn colliding_slugs_are_an_error_on_the_later_row() {
        let text = format!(
            "{HEADER}\ntee,Tee,Size,XL,T-1,1.00,1\ntee-xl,Tee XL,Title,Default Title,T-2,1.00,1\n"
        );
        let import = csv_import(&text);
        assert_eq!(import.products.len(), 1);
        assert_eq!(rows(&import), [3]);
        assert!(import.errors[0].error.contains("duplicate slug `tee-xl`"));
    }

    #[test]
    fn missing_required_headers_give_one_error_for_row_one_and_no_products() {
        let import = csv_import("Handle,Title,SKU,Price\na,A,A-1,1.00\n");
        assert!(import.products.is_empty());
        assert_eq!(rows(&import), [1]);
        assert!(
            import.errors[0]
                .error
                .contains("Variant SKU, Variant Price"),
            "{}",
            import.errors[0]
        );
        assert_eq!(rows(&csv_import("")), [1]);
    }

    #[test]
    fn columns_are_found_by_name_in_any_order_and_unknown_ones_ignored() {
        let text = "Variant Price,Gift Card,Variant SKU,Title,Handle\n4.00,FALSE,S-1,Socks,socks\n";
        let import = csv_import(text);
        assert_eq!(import.errors, []);
        assert_eq!(import.products[0].slug, "socks");
        assert_eq!(import.products[0].prices, [eur("4.00")]);
    }

    #[test]
    fn malformed_quoting_is_a_row_error_and_later_rows_still_import() {
        // Row 3 opens a quote it never closes: the csv crate alone would read every later line
        // into that one field. Row 5 has a stray quote inside an unquoted field.
        let text = format!(
            "{HEADER}\na,A,,,A-1,1.00,1\nb,\"B,,,B-1,1.00,1\nc,C,,,C-1,1.00,1\nd,D 12\" vinyl,,,D-1,1.00,1\ne,E,,,E-1,1.00,1\n"
        );
        let import = csv_import(&text);
        let skus: Vec<&str> = import.products.iter().map(|p| p.sku.as_str()).collect();
        assert_eq!(skus, ["A-1", "C-1", "E-1"]);
        assert_eq!(rows(&import), [3, 5]);
        assert!(import.errors[0].error.contains("malformed quoting"));
    }

    #[test]
    fn wrong_field_count_is_a_row_error() {
        let text = format!("{HEADER}\na,A,,,A-1,1.00\nb,B,,,B-1,1.00,1,extra\nc,C,,,C-1,1.00,1\n");
        let import = csv_import(&text);
        assert_eq!(rows(&import), [2, 3]);
        assert!(
            import.errors[0]
                .error
                .contains("expected 7 fields like the header, found 6")
        );
        assert_eq!(import.products.len(), 1);
    }

    #[test]
    fn rows_are_file_lines_counting_the_header_as_one() {
        // A quoted newline makes the record after it start two lines down; blank lines count.
        let text = "Handle,Title,Body (HTML),Variant SKU,Variant Price\n\
                    a,A,\"x\ny\",A-1,1.00\n\nb,B,,B-1,-1\r\nc,C,,C-1,oops\n";
        assert_eq!(rows(&csv_import(text)), [5, 6]);
    }

    #[test]
    fn byte_order_mark_and_crlf_line_endings_are_accepted() {
        let text =
            "\u{feff}Handle,Title,Variant SKU,Variant Price\r\na,A,A-1,1.00\r\nb,B,B-1,2.00\r\n";
        let import = csv_import(text);
        assert_eq!(import.errors, []);
        assert_eq!(import.products.len(), 2);
    }

    #[test]
    fn blank_lines_and_all_empty_rows_are_skipped_silently() {
        let text = format!("{HEADER}\n\na,A,,,A-1,1.00,1\n,,,,,,\n\n");
        let import = csv_import(&text);
        assert_eq!(import.errors, []);
        assert_eq!(import.products.len(), 1);
    }

    #[test]
    fn a_handle_whose_first_row_has_no_title_is_refused_row_by_row() {
        let text = format!(
            "{HEADER}\na,,,,A-1,1.00,1\na,,,,A-2,1.00,1\na,A,,,A-3,1.00,1\n,X,,,X-1,1.00,1\n"
        );
        let import = csv_import(&text);
        assert_eq!(rows(&import), [2, 3, 5]);
        assert!(import.errors[0].error.contains("Title is empty"));
        assert!(import.errors[2].error.contains("Handle is empty"));
        assert_eq!(import.products[0].sku, "A-3");
    }

    #[test]
    fn variant_without_sku_and_handle_without_variants_are_errors() {
        let text = format!("{HEADER}\na,A,Size,S,,1.00,1\nb,B,,,,,\n");
        let import = csv_import(&text);
        assert_eq!(rows(&import), [2, 3]);
        assert!(import.errors[0].error.contains("Variant SKU is empty"));
        assert!(import.errors[1].error.contains("has no variant row"));
        assert!(import.products.is_empty());
    }

    #[test]
    fn inventory_must_be_a_whole_non_negative_number() {
        let text = format!(
            "{HEADER}\na,A,,,A-1,1.00,-2\nb,B,,,B-1,1.00,2.5\nc,C,,,C-1,1.00,\nd,D,,,D-1,1.00,4000000000\n"
        );
        let import = csv_import(&text);
        assert_eq!(rows(&import), [2, 3]);
        assert!(import.errors[0].error.contains("is negative"));
        assert_eq!(
            import.stock,
            [("C-1".to_owned(), 0), ("D-1".to_owned(), 4_000_000_000)]
        );
    }

    #[test]
    fn without_an_inventory_column_no_stock_is_reported() {
        let import = csv_import("Handle,Title,Variant SKU,Variant Price\na,A,A-1,1.00\n");
        assert_eq!(import.stock, []);
        assert_eq!(import.products[0].stock, 0);
    }

    #[test]
    fn image_urls_must_be_http_or_site_relative() {
        let text = "Handle,Title,Variant SKU,Variant Price,Image Src,Image Position\n\
                    a,A,A-1,1.00,/img/a.jpg,1\na,,,,javascript:alert(1),2\na,,,,HTTPS://cdn.example/a2.jpg,x\na,,,,http://cdn.example/a3.jpg,\n";
        let import = csv_import(text);
        assert_eq!(rows(&import), [3, 4]);
        let urls: Vec<&str> = import.products[0]
            .images
            .iter()
            .map(|i| i.url.as_str())
            .collect();
        assert_eq!(urls, ["/img/a.jpg", "http://cdn.example/a3.jpg"]);
    }

    #[test]
    fn ids_are_deterministic_path_safe_and_scoped_by_handle() {
        let a = csv_import(EXPORT);
        let b = csv_import(EXPORT);
        assert_eq!(a, b);
        let id = &by_sku(&a, "HD-BLK-M").id;
        assert!(id.starts_with("p-") && id.len() == 18, "{id}");
        assert_eq!(*id, derived_id("classic-hoodie", "HD-BLK-M"));
        assert_ne!(derived_id("a", "b/c"), derived_id("a/b", "c"));
    }

    #[test]
    fn tags_and_types_are_normalized_to_the_catalog_format() {
        assert_eq!(
            normalize_tags(" Sale, NEW ,sale,,Summer Sale ".split(',')),
            ["new", "sale", "summer sale"]
        );
        assert_eq!(category_path("Apparel > Hoodies"), ["apparel", "hoodies"]);
        assert_eq!(category_path("Apparel/T-Shirts"), ["apparel", "t-shirts"]);
        assert_eq!(
            category_path(" Home & Garden >  Crème "),
            ["home-garden", "creme"]
        );
        assert_eq!(category_path(""), Vec::<String>::new());
    }

    #[test]
    fn long_handles_give_slugs_within_the_catalog_limit() {
        let handle = "word-".repeat(40);
        let text = format!("{HEADER}\n{handle},Long,Size,XL,L-1,1.00,1\n");
        let import = csv_import(&text);
        let slug = &import.products[0].slug;
        assert!(slug.len() <= 128 && !slug.ends_with('-'), "{slug}");
        assert!(CatalogSnapshot::build(1, import.products).is_ok());
    }

    #[test]
    fn more_rows_than_the_limit_refuses_the_input() {
        let text = format!("{HEADER}\na,A,,,A-1,1.00,1\nb,B,,,B-1,x,1\nc,C,,,C-1,1.00,1\n");
        let small = ImportOptions {
            max_rows: 2,
            ..opts()
        };
        let import = shopify_csv(text.as_bytes(), Currency::EUR, &small, &mut |_| {});
        assert!(import.products.is_empty() && import.stock.is_empty());
        assert_eq!(rows(&import), [3, 4]);
        assert!(import.errors[1].error.contains("more than 2 rows"));
    }

    #[test]
    fn progress_counts_data_rows_including_rejected_ones() {
        let mut seen = Vec::new();
        shopify_csv(EXPORT.as_bytes(), Currency::EUR, &opts(), &mut |n| {
            seen.push(n)
        });
        assert_eq!(seen, (1..=11).collect::<Vec<_>>());
        let mut seen = Vec::new();
        json(br#"{"products": [{}, {}]}"#, &opts(), &mut |n| seen.push(n));
        assert_eq!(seen, [1, 2]);
    }

    #[test]
    fn html_to_text_handles_attributes_comments_code_and_literal_brackets() {
        assert_eq!(
            html_to_text(r#"<a title="a > b" href='x'>link</a> text"#),
            "link text"
        );
        assert_eq!(html_to_text("one<!-- <p>hidden</p> -->two"), "onetwo");
        assert_eq!(
            html_to_text("<STYLE>p{}</STYLE><p>a</p><SCRIPT type=x>if (a<b) {}</script >b"),
            "a\nb"
        );
        assert_eq!(html_to_text("a < b, 1<2 & <3"), "a < b, 1<2 & <3");
        assert_eq!(
            html_to_text("&amp;lt; &#39;x&#x27; &quot;q&quot; &bogus; &#0;"),
            "&lt; 'x' \"q\" &bogus; &#0;"
        );
        assert_eq!(
            html_to_text("<p>  spaced \n\t out  </p>\n\n<p></p><br/>end"),
            "spaced out\nend"
        );
        assert_eq!(html_to_text("<td>a</td><td>b</td>"), "a b");
        assert_eq!(html_to_text("cut <b unterminated"), "cut");
        assert_eq!(html_to_text("é&amp;ü"), "é&ü");
    }

    #[test]
    fn only_rfc_4180_quoting_is_well_quoted() {
        for good in [
            "a,b,c\n",
            "\"a,b\",\"say \"\"hi\"\"\",\"\"\r\n",
            "\"two\nlines\",x",
            ",,\n\n",
        ] {
            assert!(well_quoted(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a,\"open\n",
            "a,12\" vinyl\n",
            "\"closed\"then,b\n",
            "a,\"b\nc,d\n",
            "a\nb,c\n",
        ] {
            assert!(!well_quoted(bad.as_bytes()), "{bad:?}");
        }
    }

    const JSON_LIST: &str = r#"{"products": [
        {"sku": "MUG-1", "title": "Mug", "category": "Home > Kitchen",
         "price": {"amount": "12.5", "currency": "EUR"}, "tags": ["Gift", "gift "], "stock": 8},
        {"id": "p-tee", "sku": "TEE-1", "slug": "tee", "title": "Tee", "description": "Soft.",
         "category": ["apparel", "t-shirts"], "active": false, "created_at": 5, "popularity": 9,
         "prices": [{"amount": "20.00", "currency": "EUR"}, {"amount": "22", "currency": "USD"}],
         "images": [{"url": "/img/tee.jpg"}], "attributes": {"colour": "red"}}
    ]}"#;

    #[test]
    fn json_list_imports_with_defaults_for_what_it_leaves_out() {
        let import = json_import(JSON_LIST);
        assert_eq!(import.errors, []);
        let mug = by_sku(&import, "MUG-1");
        assert_eq!(mug.id, derived_id("", "MUG-1"));
        assert_eq!(mug.slug, "mug-mug-1");
        assert_eq!(mug.category, ["home", "kitchen"]);
        assert_eq!(mug.prices, [eur("12.50")]);
        assert_eq!(mug.tags, ["gift"]);
        assert!(mug.active);
        assert_eq!((mug.created_at, mug.stock), (T0, 8));
        let tee = by_sku(&import, "TEE-1");
        assert_eq!((tee.id.as_str(), tee.slug.as_str()), ("p-tee", "tee"));
        assert_eq!(tee.prices[1], Money::parse("22.00", Currency::USD).unwrap());
        assert_eq!((tee.active, tee.created_at, tee.popularity), (false, 5, 9));
        assert_eq!(tee.images[0].url, "/img/tee.jpg");
        // Only stated stock is reported.
        assert_eq!(import.stock, [("MUG-1".to_owned(), 8)]);
        assert!(CatalogSnapshot::build(1, import.products).is_ok());
    }

    #[test]
    fn json_items_with_errors_are_skipped_by_position_and_the_rest_imports() {
        let text = r#"{"products": [
            {"sku": "A", "title": "A", "category": "x", "price": {"amount": "1.00", "currency": "EUR"}},
            {"title": "no sku", "category": "x", "price": {"amount": "1.00", "currency": "EUR"}},
            {"sku": "C", "title": "C", "category": "x", "price": {"amount": 1.5, "currency": "EUR"}},
            {"sku": "D", "title": "D", "category": "x", "price": {"amount": "-1.00", "currency": "EUR"}},
            {"sku": "A", "title": "dup", "category": "x", "price": {"amount": "1.00", "currency": "EUR"}},
            {"sku": "F", "title": "F", "category": "x", "price": {"amount": "1.00", "currency": "ZZZ"}},
            {"sku": "G", "title": "G", "category": "x", "price": {"amount": "1.00", "currency": "EUR"},
             "prices": [{"amount": "1.00", "currency": "EUR"}]},
            {"sku": "H", "title": "H", "category": "x", "id": "a/b", "price": {"amount": "1.00", "currency": "EUR"}},
            {"sku": "I", "title": "I", "category": "x", "stock": -1, "price": {"amount": "1.00", "currency": "EUR"}},
            "not an object",
            {"sku": "K", "title": "K", "category": "x", "price": {"amount": "2.00", "currency": "EUR"}}
        ]}"#;
        let import = json_import(text);
        let skus: Vec<&str> = import.products.iter().map(|p| p.sku.as_str()).collect();
        assert_eq!(skus, ["A", "K"]);
        assert_eq!(rows(&import), [2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let errors: Vec<&str> = import.errors.iter().map(|e| e.error.as_str()).collect();
        assert_eq!(errors[0], "missing field `sku`");
        assert!(errors[2].contains("is negative"), "{}", errors[2]);
        assert!(errors[3].contains("duplicate SKU `A` (first on row 1)"));
        assert!(errors[5].contains("not both"));
    }

    #[test]
    fn json_that_is_not_a_product_list_is_one_error_for_row_zero() {
        for text in [
            "",
            "[]",
            "{\"items\": []}",
            "{\"products\": {}}",
            "{\"products\": [{]}",
        ] {
            let import = json_import(text);
            assert!(import.products.is_empty(), "{text}");
            assert_eq!(rows(&import), [0], "{text}: {:?}", import.errors);
        }
    }

    #[test]
    fn a_serialized_snapshot_imports_back_unchanged() {
        let products = demo_catalog(60, 7);
        let data = SnapshotData {
            version: 3,
            products: products.clone(),
            promotions: Vec::new(),
        };
        let import = json_import(&serde_json::to_string(&data).unwrap());
        assert_eq!(import.errors, []);
        assert_eq!(import.products, products);
        assert_eq!(import.stock.len(), products.len());
    }

    #[test]
    fn json_with_more_items_than_the_limit_refuses_the_input() {
        let small = ImportOptions {
            max_rows: 1,
            ..opts()
        };
        let import = json(JSON_LIST.as_bytes(), &small, &mut |_| {});
        assert!(import.products.is_empty());
        assert_eq!(rows(&import), [2]);
    }

    fn cell() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-zA-Z0-9 ,\"<>&;#\n-]{0,12}",
            "-?[0-9]{1,4}(\\.[0-9]{0,3})?",
            Just("Default Title".to_owned()),
        ]
    }

    fn quote(s: &str) -> String {
        format!("\"{}\"", s.replace('"', "\"\""))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let tiny = ImportOptions { max_rows: 5, created_at: 0 };
            let a = shopify_csv(&bytes, Currency::EUR, &opts(), &mut |_| {});
            let b = json(&bytes, &opts(), &mut |_| {});
            let c = shopify_csv(&bytes, Currency::EUR, &tiny, &mut |_| {});
            prop_assert!(a.products.len() + b.products.len() + c.products.len() < 400);
        }

        #[test]
        fn arbitrary_cells_never_panic_and_what_imports_builds_a_snapshot(
            rows in proptest::collection::vec(
                (0..4usize, proptest::collection::vec(cell(), 12), any::<bool>()),
                0..12,
            ),
        ) {
            let mut text = String::from(
                "Handle,Title,Body (HTML),Type,Tags,Option1 Name,Option1 Value,Variant SKU,\
                 Variant Price,Variant Inventory Qty,Image Src,Status\n",
            );
            for (handle, cells, raw) in &rows {
                let mut fields = vec![format!("h{handle}")];
                // Raw cells may break the quoting; quoted ones never do.
                fields.extend(cells.iter().skip(1).map(|c| if *raw { c.clone() } else { quote(c) }));
                text.push_str(&fields.join(","));
                text.push('\n');
            }
            let import = csv_import(&text);
            prop_assert!(import.errors.iter().all(|e| e.row >= 2));
            prop_assert!(CatalogSnapshot::build(1, import.products).is_ok());
        }

        #[test]
        fn html_to_text_never_panics(s in any::<String>()) {
            let text = html_to_text(&s);
            prop_assert!(!text.starts_with(' ') && !text.contains("  "));
        }
    }
}
