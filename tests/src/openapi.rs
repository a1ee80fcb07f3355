//! OpenAPI 3.1 documents held to the services that serve them.
//!
//! The edge (`functions/openapi.json`) and the origin (`origin/openapi.json`) each serve a
//! hand-written document at `/v1/openapi.json`. Their tests check it three ways with these
//! helpers, so a route, a field or a status the code gained or lost fails a test:
//! - [`Document::problems`]: the document's own rules (OpenAPI 3.1; every operation with an
//!   `operationId`, a summary, the `traceparent` parameter, request examples and a 2xx example;
//!   every `$ref` resolves) and every example — parameter, request and response — valid against
//!   its schema;
//! - [`routes_in_axum_source`] and [`routes_in_match_arms`]: the routes as the source registers
//!   them, since neither an axum `Router` nor the edge's `match` can list its routes at run time;
//!   [`Document::undocumented`] names the ones the document lacks;
//! - [`Document::example_requests`] and [`Document::check_answer`]: each operation called with
//!   its documented examples, and the answer held to the documented statuses, media types,
//!   required headers and schemas.
//!
//! Schemas are JSON Schema 2020-12 and refer to each other inside the document
//! (`#/components/schemas/…`), so the whole document is registered as one resource under
//! [`BASE_URI`] and a schema is applied through a `{"$ref": "<BASE_URI>#<pointer>"}` wrapper — the
//! jsonschema crate's documented way to validate against one definition of a larger document.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{Context as _, anyhow, bail, ensure};
use base64::Engine as _;
use serde_json::Value;

/// The URI the document is registered under while validating; nothing is fetched from it.
pub const BASE_URI: &str = "https://edgefront.dev/openapi.json";

/// Operation extension naming the hosts that serve it, when not every host does: `["local"]` is
/// the native local host only (e.g. its Prometheus `/metrics`).
pub const HOSTS_EXTENSION: &str = "x-edgefront-hosts";

/// Example extension: `"base64"` when the example's `value` is the base64 of binary bytes to send
/// (an `application/octet-stream` body cannot be written in JSON otherwise).
pub const ENCODING_EXTENSION: &str = "x-edgefront-encoding";

/// The reusable `traceparent` parameter every operation must reference.
pub const TRACEPARENT_REF: &str = "#/components/parameters/traceparent";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A parsed document, registered for schema validation.
pub struct Document {
    value: Value,
    registry: jsonschema::Registry<'static>,
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("title", &self.value["info"]["title"])
            .finish_non_exhaustive()
    }
}

/// One operation (path + method) of a document.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Upper case, e.g. `GET`.
    pub method: String,
    /// The path template, e.g. `/v1/orders/{id}`.
    pub path: String,
    /// Its `operationId` (empty when missing, which [`Document::problems`] reports).
    pub id: String,
    pointer: String,
    value: Value,
    /// Path-level and operation-level parameters, resolved: (pointer, parameter object).
    parameters: Vec<(String, Value)>,
}

impl Operation {
    /// The hosts named by [`HOSTS_EXTENSION`], if the operation is limited to some.
    pub fn hosts(&self) -> Option<Vec<&str>> {
        self.value[HOSTS_EXTENSION]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
    }

    /// Whether every host serves it (no [`HOSTS_EXTENSION`]).
    pub fn on_every_host(&self) -> bool {
        self.hosts().is_none()
    }

    /// `METHOD path`.
    pub fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What a test supplies for an example request, beyond the document's own examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// A parameter's value, replacing its documented example (a real order id, say).
    Parameter {
        /// `path`, `query`, `header` or `cookie`.
        location: &'a str,
        /// The parameter's name as documented.
        name: &'a str,
    },
    /// A credential for a security scheme, e.g. a staff token for `staffToken` with the roles
    /// `["admin"]`.
    Credential {
        /// The scheme's name in `components.securitySchemes`.
        scheme: &'a str,
        /// The roles the requirement lists.
        roles: &'a [String],
    },
}

/// A request built from an operation's examples, transport-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleRequest {
    /// `operationId` and the request example's name, for messages.
    pub label: String,
    /// Upper case.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Header name and value pairs.
    pub headers: Vec<(String, String)>,
    /// The body (empty when there is none).
    pub body: Vec<u8>,
}

/// An answer as a test received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Header name and value pairs.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// An answer from its status, headers (values that are not text read as empty) and body.
    pub fn new(status: u16, headers: &reqwest::header::HeaderMap, body: Vec<u8>) -> Answer {
        Answer {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body,
        }
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `code` of a problem+json body.
    pub fn problem_code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v["code"].as_str().map(str::to_owned)
    }

    /// Whether the answer says the route or the method does not exist (404 `route_not_found`,
    /// 405 `method_not_allowed`) rather than answering the request.
    pub fn is_routing_error(&self) -> bool {
        self.status == 405
            || (self.status == 404 && self.problem_code().as_deref() == Some("route_not_found"))
    }

    /// The first 300 characters of the body, for messages.
    pub fn excerpt(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(300)
            .collect()
    }
}

/// Sends an example request to the service at `base_url` and collects the answer.
pub async fn send(
    client: &reqwest::Client,
    base_url: &str,
    example: &ExampleRequest,
) -> anyhow::Result<Answer> {
    let method = reqwest::Method::from_bytes(example.method.as_bytes())?;
    let mut req = client.request(method, format!("{base_url}{}", example.uri));
    for (name, value) in &example.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let resp = req.body(example.body.clone()).send().await?;
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    Ok(Answer::new(status, &headers, resp.bytes().await?.to_vec()))
}

/// `~` and `/` escaped for a JSON pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// `text` with every byte percent-encoded but ASCII letters, digits and `keep`.
fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON pointer written as a URI fragment (`{`, `}` and other characters percent-encoded).
fn fragment(pointer: &str) -> String {
    percent_encode(pointer, b"/~-._!$&'()*+,;=:@")
}

/// A value percent-encoded for a path segment or a query component.
fn path_segment(value: &str) -> String {
    percent_encode(value, b"-._~")
}

/// One example: its name, where it is, its value and its [`ENCODING_EXTENSION`].
#[derive(Debug)]
struct Example {
    name: String,
    at: String,
    value: Value,
    encoding: Option<String>,
}

/// The media type's essence: lower case, without parameters.
fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json(media_type: &str) -> bool {
    let e = essence(media_type);
    e == "application/json" || e.ends_with("+json")
}

/// A parameter value or example as text (strings as they are, numbers and booleans printed).
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Document {
    /// Parses a document and registers it for validation.
    pub fn parse(text: &str) -> anyhow::Result<Document> {
        let value: Value = serde_json::from_str(text).context("the document is not JSON")?;
        let registry = jsonschema::Registry::new()
            .add(BASE_URI, value.clone())
            .map_err(|e| anyhow!("registering the document: {e}"))?
            .prepare()
            .map_err(|e| anyhow!("registering the document: {e}"))?;
        Ok(Document { value, registry })
    }

    /// The document.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The `openapi` version string.
    pub fn version(&self) -> &str {
        self.value["openapi"].as_str().unwrap_or("")
    }

    /// The value at `pointer` (`#`-less), following a `$ref` there, with its own pointer.
    fn resolve(&self, pointer: &str) -> anyhow::Result<(String, &Value)> {
        let mut pointer = pointer.to_owned();
        for _ in 0..8 {
            let value = self
                .value
                .pointer(&pointer)
                .with_context(|| format!("nothing at #{pointer}"))?;
            match value.get("$ref").and_then(Value::as_str) {
                Some(target) => {
                    pointer = target
                        .strip_prefix('#')
                        .with_context(|| format!("#{pointer}: only local $refs ({target})"))?
                        .to_owned();
                }
                None => return Ok((pointer, value)),
            }
        }
        bail!("#{pointer}: $ref chain too long")
    }

    /// Every operation, in path order.
    pub fn operations(&self) -> Vec<Operation> {
        let mut out = Vec::new();
        let Some(paths) = self.value["paths"].as_object() else {
            return out;
        };
        for (path, item) in paths {
            let item_pointer = format!("/paths/{}", escape(path));
            let shared = item["parameters"].as_array().map_or(0, Vec::len);
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let pointer = format!("{item_pointer}/{method}");
                let own = op["parameters"].as_array().map_or(0, Vec::len);
                let mut parameters: Vec<(String, Value)> = Vec::new();
                let listed = (0..shared)
                    .map(|i| format!("{item_pointer}/parameters/{i}"))
                    .chain((0..own).map(|i| format!("{pointer}/parameters/{i}")));
                for p in listed {
                    if let Ok((at, param)) = self.resolve(&p) {
                        // An operation's parameter overrides the path item's of the same name.
                        parameters
                            .retain(|(_, q)| q["name"] != param["name"] || q["in"] != param["in"]);
                        parameters.push((at, param.clone()));
                    }
                }
                out.push(Operation {
                    method: method.to_ascii_uppercase(),
                    path: path.clone(),
                    id: op["operationId"].as_str().unwrap_or("").to_owned(),
                    pointer,
                    value: op.clone(),
                    parameters,
                });
            }
        }
        out
    }

    /// Validates `instance` against the schema at `pointer`.
    pub fn validate(&self, pointer: &str, instance: &Value) -> Result<(), String> {
        let wrapper = serde_json::json!({ "$ref": format!("{BASE_URI}#{}", fragment(pointer)) });
        let validator = jsonschema::options()
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .build(&wrapper)
            .map_err(|e| format!("the schema at #{pointer} does not compile: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{} at `{}`", e, e.instance_path()))
            .take(5)
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The examples of the media type or parameter at `pointer`: its `example`, then each of its
    /// `examples` (by name).
    fn examples(&self, pointer: &str) -> Vec<Example> {
        let Some(holder) = self.value.pointer(pointer) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some(value) = holder.get("example") {
            out.push(Example {
                name: "example".to_owned(),
                at: format!("{pointer}/example"),
                value: value.clone(),
                encoding: None,
            });
        }
        for name in holder["examples"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
        {
            let at = format!("{pointer}/examples/{}", escape(name));
            if let Ok((at, example)) = self.resolve(&at)
                && let Some(value) = example.get("value")
            {
                out.push(Example {
                    name: name.clone(),
                    at,
                    value: value.clone(),
                    encoding: example[ENCODING_EXTENSION].as_str().map(str::to_owned),
                });
            }
        }
        out
    }

    /// Everything wrong with the document by its own rules; empty when it is sound.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.version().starts_with("3.1") {
            problems.push(format!("openapi is `{}`, not 3.1", self.version()));
        }
        self.check_refs(&self.value, "", &mut problems);
        if let Some(schemas) = self.value["components"]["schemas"].as_object() {
            for name in schemas.keys() {
                let at = format!("/components/schemas/{}", escape(name));
                if let Err(e) = self.validate(&at, &Value::Null)
                    && e.contains("does not compile")
                {
                    problems.push(e);
                }
            }
        }
        let mut ids = BTreeSet::new();
        for op in self.operations() {
            let name = op.name();
            let mut problem = |what: String| problems.push(format!("{name}: {what}"));
            if op.id.is_empty() {
                problem("no operationId".into());
            } else if !ids.insert(op.id.clone()) {
                problem(format!("operationId `{}` is used twice", op.id));
            }
            if op.value["summary"].as_str().is_none_or(str::is_empty) {
                problem("no summary".into());
            }
            let refs_traceparent = op.value["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["$ref"] == TRACEPARENT_REF));
            if !refs_traceparent {
                problem(format!("does not reference {TRACEPARENT_REF}"));
            }
            for segment in op.path.split('/') {
                if let Some(param) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    let declared = op
                        .parameters
                        .iter()
                        .any(|(_, p)| p["in"] == "path" && p["name"] == param);
                    if !declared {
                        problem(format!("path parameter `{param}` is not declared"));
                    }
                }
            }
            for (at, param) in &op.parameters {
                let schema = format!("{at}/schema");
                for example in self.examples(at) {
                    if let Err(e) = self.validate(&schema, &example.value) {
                        problem(format!("parameter example #{}: {e}", example.at));
                    }
                }
                if param["in"] == "path" && param["required"] != true {
                    problem(format!(
                        "path parameter `{}` is not required",
                        param["name"]
                    ));
                }
            }
            if op.value.get("requestBody").is_some() {
                match self.resolve(&format!("{}/requestBody", op.pointer)) {
                    Ok((at, body)) => {
                        let media = body["content"].as_object().map(|m| m.keys().cloned());
                        for media_type in media.into_iter().flatten() {
                            let mt = format!("{at}/content/{}", escape(&media_type));
                            let examples = self.examples(&mt);
                            if examples.is_empty() {
                                problem(format!("request body {media_type} has no example"));
                            }
                            self.check_examples(&mt, &media_type, &examples, &mut problem);
                        }
                    }
                    Err(e) => problem(e.to_string()),
                }
            }
            let mut success_example = false;
            let statuses = op.value["responses"].as_object().map(|m| m.keys().cloned());
            let statuses: Vec<String> = statuses.into_iter().flatten().collect();
            if statuses.is_empty() {
                problem("no responses".into());
            }
            for status in statuses {
                let at = format!("{}/responses/{status}", op.pointer);
                let (at, response) = match self.resolve(&at) {
                    Ok(found) => found,
                    Err(e) => {
                        problem(e.to_string());
                        continue;
                    }
                };
                if response["description"].as_str().is_none() {
                    problem(format!("response {status} has no description"));
                }
                let media = response["content"].as_object().map(|m| m.keys().cloned());
                for media_type in media.into_iter().flatten() {
                    let mt = format!("{at}/content/{}", escape(&media_type));
                    let examples = self.examples(&mt);
                    if status.starts_with('2') && !examples.is_empty() {
                        success_example = true;
                    }
                    self.check_examples(&mt, &media_type, &examples, &mut problem);
                }
                if status.starts_with('2') && response.get("content").is_none() {
                    // A success without a body (204) needs no example.
                    success_example = true;
                }
            }
            if !success_example {
                problem("no 2xx response has an example".into());
            }
        }
        problems
    }

    /// Each example of the media type at `mt` validated against its schema.
    fn check_examples(
        &self,
        mt: &str,
        media_type: &str,
        examples: &[Example],
        problem: &mut impl FnMut(String),
    ) {
        let schema = format!("{mt}/schema");
        if self.value.pointer(&schema).is_none() {
            if is_json(media_type) {
                problem(format!("{media_type} at #{mt} has no schema"));
            }
            return;
        }
        for example in examples {
            if let Err(e) = self.validate(&schema, &example.value) {
                let (at, name) = (&example.at, &example.name);
                problem(format!(
                    "example #{at} ({name}) does not match its schema: {e}"
                ));
            }
        }
    }

    /// Every local `$ref` below `value` must point at something.
    fn check_refs(&self, value: &Value, at: &str, problems: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(target) = map.get("$ref").and_then(Value::as_str) {
                    match target.strip_prefix('#') {
                        Some(pointer) if self.value.pointer(pointer).is_some() => {}
                        _ => problems.push(format!("#{at}: $ref `{target}` resolves to nothing")),
                    }
                }
                for (k, v) in map {
                    self.check_refs(v, &format!("{at}/{}", escape(k)), problems);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.check_refs(v, &format!("{at}/{i}"), problems);
                }
            }
            _ => {}
        }
    }

    /// The routes (`METHOD`, path) the document lacks.
    pub fn undocumented(&self, routes: &[(String, String)]) -> Vec<String> {
        routes
            .iter()
            .filter(|(method, path)| {
                self.value["paths"][path.as_str()]
                    .get(method.to_ascii_lowercase())
                    .is_none()
            })
            .map(|(method, path)| format!("{method} {path}"))
            .collect()
    }

    /// The requests an operation's examples make: one per request-body example (one without a
    /// body when the operation takes none). Parameters take their documented example unless
    /// `supply` gives a value; credentials come from `supply` only, for the first security
    /// alternative it can satisfy (none when an empty alternative comes first, or none can be).
    pub fn example_requests(
        &self,
        op: &Operation,
        supply: &dyn Fn(Need<'_>) -> Option<String>,
    ) -> anyhow::Result<Vec<ExampleRequest>> {
        let mut path = op.path.clone();
        let mut query: Vec<(String, String)> = Vec::new();
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut cookies: Vec<String> = Vec::new();
        for (at, param) in &op.parameters {
            let location = param["in"].as_str().unwrap_or("");
            let name = param["name"].as_str().unwrap_or("");
            let value = supply(Need::Parameter { location, name })
                .or_else(|| self.examples(at).first().map(|e| text(&e.value)));
            let Some(value) = value else {
                ensure!(
                    param["required"] != true,
                    "{}: required parameter `{name}` has no example",
                    op.name()
                );
                continue;
            };
            match location {
                "path" => path = path.replace(&format!("{{{name}}}"), &path_segment(&value)),
                "query" => query.push((name.to_owned(), value)),
                "header" => headers.push((name.to_owned(), value)),
                "cookie" => cookies.push(format!("{name}={value}")),
                other => bail!("{}: parameter `{name}` in `{other}`", op.name()),
            }
        }
        self.add_credentials(op, supply, &mut headers, &mut cookies)?;
        if !cookies.is_empty() {
            headers.push(("cookie".to_owned(), cookies.join("; ")));
        }
        let uri = if query.is_empty() {
            path
        } else {
            let encoded: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{}={}", path_segment(k), path_segment(v)))
                .collect();
            format!("{path}?{}", encoded.join("&"))
        };
        let request =
            |label: String, headers: Vec<(String, String)>, body: Vec<u8>| ExampleRequest {
                label,
                method: op.method.clone(),
                uri: uri.clone(),
                headers,
                body,
            };
        if op.value.get("requestBody").is_none() {
            return Ok(vec![request(op.id.clone(), headers, Vec::new())]);
        }
        let (at, body) = self.resolve(&format!("{}/requestBody", op.pointer))?;
        let mut out = Vec::new();
        for media_type in body["content"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
        {
            let mt = format!("{at}/content/{}", escape(media_type));
            for example in self.examples(&mt) {
                let bytes = match (&example.value, example.encoding.as_deref()) {
                    (Value::String(s), Some("base64")) => base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .with_context(|| format!("#{}: not base64", example.at))?,
                    (Value::String(s), _) if !is_json(media_type) => s.clone().into_bytes(),
                    (other, _) => serde_json::to_vec(other)?,
                };
                let mut headers = headers.clone();
                headers.push(("content-type".to_owned(), media_type.clone()));
                let label = format!("{} ({media_type} {})", op.id, example.name);
                out.push(request(label, headers, bytes));
            }
        }
        ensure!(
            !out.is_empty(),
            "{}: the request body has no example",
            op.name()
        );
        Ok(out)
    }

    fn add_credentials(
        &self,
        op: &Operation,
        supply: &dyn Fn(Need<'_>) -> Option<String>,
        headers: &mut Vec<(String, String)>,
        cookies: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let requirements = op
            .value
            .get("security")
            .or_else(|| self.value.get("security"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for alternative in requirements {
            let Some(schemes) = alternative.as_object() else {
                continue;
            };
            let mut found = Vec::new();
            for (scheme, roles) in schemes {
                let roles: Vec<String> = roles
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect();
                match supply(Need::Credential {
                    scheme,
                    roles: &roles,
                }) {
                    Some(value) => found.push((scheme.clone(), value)),
                    None => break,
                }
            }
            if found.len() < schemes.len() {
                continue;
            }
            for (scheme, value) in found {
                let (_, definition) =
                    self.resolve(&format!("/components/securitySchemes/{}", escape(&scheme)))?;
                let name = definition["name"].as_str().unwrap_or("").to_owned();
                match (definition["type"].as_str(), definition["in"].as_str()) {
                    (Some("http"), _) => {
                        headers.push(("authorization".to_owned(), format!("Bearer {value}")));
                    }
                    (Some("apiKey"), Some("header")) => headers.push((name, value)),
                    (Some("apiKey"), Some("cookie")) => cookies.push(format!("{name}={value}")),
                    other => bail!("security scheme `{scheme}`: {other:?} is not supported"),
                }
            }
            return Ok(());
        }
        Ok(())
    }

    /// Holds an answer to the operation's documentation: its status is documented, its media
    /// type is one documented for that status, its body matches that schema, and the headers
    /// documented as required are there.
    pub fn check_answer(&self, op: &Operation, answer: &Answer) -> anyhow::Result<()> {
        let name = op.name();
        let status = answer.status.to_string();
        let range = format!("{}XX", answer.status / 100);
        let key = [status.as_str(), range.as_str(), "default"]
            .into_iter()
            .find(|k| op.value["responses"].get(*k).is_some())
            .with_context(|| {
                format!(
                    "{name}: status {status} is not documented: {}",
                    answer.excerpt()
                )
            })?;
        let (at, response) = self.resolve(&format!("{}/responses/{key}", op.pointer))?;
        for header in response["headers"]
            .as_object()
            .into_iter()
            .flat_map(|h| h.keys())
        {
            let (_, definition) = self.resolve(&format!("{at}/headers/{}", escape(header)))?;
            if definition["required"] == true {
                ensure!(
                    answer.header(header).is_some(),
                    "{name}: {status} without the required header {header}"
                );
            }
        }
        let content = response["content"].as_object();
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            ensure!(
                answer.body.is_empty(),
                "{name}: {status} is documented without a body, but has one: {}",
                answer.excerpt()
            );
            return Ok(());
        };
        let got = essence(answer.header("content-type").unwrap_or(""));
        let media_type = content
            .keys()
            .find(|m| essence(m) == got)
            .with_context(|| {
                format!(
                    "{name}: {status} answered `{got}`, documented {:?}",
                    content.keys().collect::<Vec<_>>()
                )
            })?;
        let schema = format!("{at}/content/{}/schema", escape(media_type));
        if self.value.pointer(&schema).is_none() {
            return Ok(());
        }
        let instance = if is_json(media_type) {
            serde_json::from_slice(&answer.body)
                .with_context(|| format!("{name}: {status} body is not JSON"))?
        } else {
            Value::String(
                String::from_utf8(answer.body.clone())
                    .with_context(|| format!("{name}: {status} body is not text"))?,
            )
        };
        self.validate(&schema, &instance).map_err(|e| {
            anyhow!(
                "{name}: the {status} answer does not match #{schema}: {e}\n{}",
                answer.excerpt()
            )
        })
    }
}

/// The source with its comment lines blanked, so commented-out routes do not count.
fn code_only(source: &str) -> String {
    source
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A Rust string literal at the start of `s` (after whitespace): its value and the rest.
fn string_literal(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start().strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

/// The text up to the parenthesis that closes one already open, and the rest after it.
fn until_close(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth > 0 => depth -= 1,
            ')' => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

/// The routes an axum source file registers with `.route("<path>", <method router>)`, as
/// (`METHOD`, path): each `get(…)`, `.post(…)`, … of the method router (paths qualified or not,
/// `_service` variants too). A registration this cannot read (`any`, `on`, `route_service`,
/// `nest`, a path that is not a literal) is an error, so a route is never skipped silently.
pub fn routes_in_axum_source(source: &str) -> anyhow::Result<Vec<(String, String)>> {
    let code = code_only(source);
    for unreadable in [".route_service(", ".nest(", ".nest_service("] {
        ensure!(
            !code.contains(unreadable),
            "`{unreadable}` is not read by routes_in_axum_source; extend it"
        );
    }
    let mut routes = Vec::new();
    for (start, _) in code.match_indices(".route(") {
        let after = &code[start + ".route(".len()..];
        let (path, rest) = string_literal(after)
            .with_context(|| format!("a route whose path is not a literal: {after:.60}"))?;
        let rest = rest
            .trim_start()
            .strip_prefix(',')
            .with_context(|| format!("route {path}: no method router"))?;
        let (router, _) = until_close(rest).with_context(|| format!("route {path}: unclosed"))?;
        let methods = method_calls(router);
        ensure!(!methods.is_empty(), "route {path}: no method in `{router}`");
        for method in methods {
            let method = method.trim_end_matches("_service");
            ensure!(
                METHODS.contains(&method),
                "route {path}: `{method}` is not a method routing function"
            );
            routes.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    Ok(routes)
}

/// The names of the calls at the top level of a method-router expression
/// (`get(a).put(b)` → `get`, `put`; `axum::routing::get(a)` → `get`).
fn method_calls(expression: &str) -> Vec<&str> {
    let mut calls = Vec::new();
    let mut rest = expression;
    loop {
        let trimmed = rest.trim_start();
        let ident_len = trimmed
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(trimmed.len());
        let (ident, after) = trimmed.split_at(ident_len);
        let Some(args) = after.trim_start().strip_prefix('(') else {
            return calls;
        };
        calls.push(ident.rsplit("::").next().unwrap_or(ident));
        let Some((_, after_call)) = until_close(args) else {
            return calls;
        };
        match after_call.trim_start().strip_prefix('.') {
            Some(next) => rest = next,
            None => return calls,
        }
    }
}

/// The routes of a `match (segments, method)` router such as the edge's `App::route`, as
/// (`METHOD`, path): each arm `(["cart", "lines", sku], Method::PUT | Method::PATCH) =>` becomes
/// `PUT`/`PATCH` `{prefix}cart/lines/{sku}` (a binding names its parameter). Arms whose method
/// is `_` (the 405 answers) are not routes. Only the text from `fn_marker` on is read.
pub fn routes_in_match_arms(
    source: &str,
    fn_marker: &str,
    prefix: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let code = code_only(source);
    let start = code
        .find(fn_marker)
        .with_context(|| format!("`{fn_marker}` is not in the source"))?;
    let mut routes = Vec::new();
    let mut rest = &code[start..];
    while let Some(open) = rest.find('(') {
        rest = &rest[open + 1..];
        let Some(slices) = rest.trim_start().strip_prefix('[') else {
            continue;
        };
        let Some((pattern, after)) = slice_patterns(slices) else {
            continue;
        };
        let Some((method, after_arm)) = after.trim_start().strip_prefix(',').and_then(|m| {
            let close = m.find(')')?;
            Some((
                m[..close].trim().trim_end_matches(',').trim(),
                &m[close + 1..],
            ))
        }) else {
            continue;
        };
        if !after_arm.trim_start().starts_with("=>") {
            continue;
        }
        if method == "_" {
            continue;
        }
        ensure!(
            pattern.len() == 1,
            "an arm with several path patterns and method {method}: not read"
        );
        for m in method.split('|') {
            let m = m
                .trim()
                .strip_prefix("Method::")
                .with_context(|| format!("method pattern `{method}` is not Method::…"))?;
            routes.push((m.to_owned(), format!("{prefix}{}", pattern[0])));
        }
        rest = after_arm;
    }
    Ok(routes)
}

/// `"cart", "lines", sku] | [...]` → the paths (`cart/lines/{sku}`), and the text after the
/// last `]`; `None` when this is not a slice pattern of literals and bindings.
fn slice_patterns(s: &str) -> Option<(Vec<String>, &str)> {
    let mut paths = Vec::new();
    let mut rest = s;
    loop {
        let close = rest.find(']')?;
        let mut segments = Vec::new();
        for element in rest[..close].split(',') {
            let element = element.trim();
            if element.is_empty() {
                continue;
            }
            if let Some((literal, tail)) = string_literal(element) {
                if !tail.trim().is_empty() {
                    return None;
                }
                segments.push(literal);
            } else if element == "_" {
                segments.push("{_}".to_owned());
            } else if element
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                segments.push(format!("{{{element}}}"));
            } else {
                return None;
            }
        }
        paths.push(segments.join("/"));
        rest = &rest[close + 1..];
        match rest.trim_start().strip_prefix('|') {
            Some(next) => rest = next.trim_start().strip_prefix('[')?,
            None => return Some((paths, rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(routes: &[(String, String)]) -> Vec<(&str, &str)> {
        routes
            .iter()
            .map(|(m, p)| (m.as_str(), p.as_str()))
            .collect()
    }

    #[test]
    fn axum_registrations_are_read_with_every_method() {
        let source = r#"
            Router::new()
                // .route("/v1/commented", get(old))
                .route("/v1/inventory/{sku}", get(read).put(set))
                .route(
                    "/v1/checkout",
                    axum::routing::post(|s: State<AppState>| async move { checkout(s).await }),
                )
                .route("/v1/files", get_service(ServeDir::new("x")))
        "#;
        let routes = routes_in_axum_source(source).unwrap();
        assert_eq!(
            pairs(&routes),
            [
                ("GET", "/v1/inventory/{sku}"),
                ("PUT", "/v1/inventory/{sku}"),
                ("POST", "/v1/checkout"),
                ("GET", "/v1/files"),
            ]
        );
        assert!(routes_in_axum_source(r#".route("/x", any(h))"#).is_err());
        assert!(routes_in_axum_source(r#".route(PATH, get(h))"#).is_err());
        assert!(routes_in_axum_source(r#".nest("/x", other())"#).is_err());
    }

    #[test]
    fn match_arms_become_routes_and_405_arms_do_not() {
        let source = r#"
            fn unrelated() { match (["x"], Method::GET) { _ => {} } }
            async fn route(&self) {
                match (segments.as_slice(), method) {
                    (["health"], Method::GET) => routes::health(self).await,
                    (["cart", "lines", sku], Method::PUT | Method::PATCH) => {
                        routes::cart::set_line(self, &req, sku).await
                    }
                    (
                        ["health"] | ["products", _],
                        _,
                    ) => Err(ApiError::MethodNotAllowed("GET")),
                    (["cart", "lines", _], _) => Err(ApiError::MethodNotAllowed("PUT")),
                    _ => Err(ApiError::RouteNotFound),
                }
            }
        "#;
        let routes = routes_in_match_arms(source, "async fn route(", "/v1/").unwrap();
        assert_eq!(
            pairs(&routes),
            [
                ("GET", "/v1/health"),
                ("PUT", "/v1/cart/lines/{sku}"),
                ("PATCH", "/v1/cart/lines/{sku}"),
            ]
        );
    }

    fn sample() -> Document {
        Document::parse(
            r##"{
              "openapi": "3.1.0",
              "info": {"title": "t", "version": "1"},
              "paths": {
                "/v1/things/{id}": {
                  "put": {
                    "operationId": "putThing", "summary": "Put a thing",
                    "parameters": [
                      {"$ref": "#/components/parameters/traceparent"},
                      {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "example": "a b"},
                      {"name": "dry", "in": "query", "schema": {"type": "boolean"}, "example": true}
                    ],
                    "security": [{"staff": ["admin"]}, {}],
                    "requestBody": {"content": {"application/json": {
                      "schema": {"$ref": "#/components/schemas/Thing"},
                      "examples": {"one": {"value": {"n": 1}}, "two": {"value": {"n": 2}}}
                    }}},
                    "responses": {
                      "200": {"description": "ok", "headers": {"ETag": {"required": true, "schema": {"type": "string"}}},
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}, "example": {"n": 1}}}},
                      "4XX": {"description": "problem", "content": {"application/problem+json": {"schema": {"type": "object", "required": ["code"]}}}}
                    }
                  }
                }
              },
              "components": {
                "parameters": {"traceparent": {"name": "traceparent", "in": "header", "schema": {"type": "string"}}},
                "securitySchemes": {"staff": {"type": "http", "scheme": "bearer"}},
                "schemas": {"Thing": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 1}}, "additionalProperties": false}}
              }
            }"##,
        )
        .unwrap()
    }

    #[test]
    fn a_sound_document_has_no_problems_and_a_wrong_example_is_one() {
        let doc = sample();
        assert_eq!(doc.problems(), Vec::<String>::new());
        let mut broken = doc.value().clone();
        broken["paths"]["/v1/things/{id}"]["put"]["requestBody"]["content"]["application/json"]["examples"]
            ["two"]["value"]["n"] = serde_json::json!(0);
        let broken = Document::parse(&broken.to_string()).unwrap();
        let problems = broken.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("(two)"), "{problems:?}");
    }

    #[test]
    fn example_requests_fill_parameters_bodies_and_credentials() {
        let doc = sample();
        let op = &doc.operations()[0];
        let with_token = |need: Need<'_>| match need {
            Need::Credential {
                scheme: "staff",
                roles,
            } if roles == ["admin"] => Some("tok".to_owned()),
            _ => None,
        };
        let requests = doc.example_requests(op, &with_token).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].uri, "/v1/things/a%20b?dry=true");
        assert_eq!(requests[1].body, br#"{"n":2}"#);
        assert!(
            requests[0]
                .headers
                .contains(&("authorization".to_owned(), "Bearer tok".to_owned()))
        );
        let anonymous = doc.example_requests(op, &|_| None).unwrap();
        assert!(
            anonymous[0]
                .headers
                .iter()
                .all(|(n, _)| n != "authorization")
        );
    }

    #[test]
    fn answers_are_held_to_status_media_type_headers_and_schema() {
        let doc = sample();
        let op = &doc.operations()[0];
        let answer = |status: u16, ct: &str, headers: &[(&str, &str)], body: &str| Answer {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .chain([("Content-Type".to_owned(), ct.to_owned())])
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        let etag = [("etag", "\"1\"")];
        let ok = answer(200, "application/json", &etag, r#"{"n": 3}"#);
        doc.check_answer(op, &ok).unwrap();
        let problem = answer(409, "application/problem+json", &[], r#"{"code": "x"}"#);
        doc.check_answer(op, &problem).unwrap();
        for wrong in [
            answer(200, "application/json", &etag, r#"{"n": 0}"#),
            answer(200, "application/json", &[], r#"{"n": 3}"#),
            answer(200, "text/plain", &etag, "3"),
            answer(500, "application/problem+json", &[], r#"{"code": "x"}"#),
        ] {
            assert!(doc.check_answer(op, &wrong).is_err(), "{wrong:?}");
        }
    }
}
