//! The parts of a Spin manifest (version 2) the host honours: application variables, the one
//! HTTP-triggered component, its source, key-value stores, outbound hosts and variables.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

#[derive(Deserialize)]
struct Raw {
    spin_manifest_version: u32,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    trigger: RawTriggers,
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawVariable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
}

#[derive(Deserialize)]
struct RawTriggers {
    http: Vec<RawHttpTrigger>,
}

#[derive(Deserialize)]
struct RawHttpTrigger {
    route: String,
    component: String,
}

#[derive(Deserialize)]
struct RawComponent {
    source: String,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

/// The HTTP component the manifest routes to, with everything resolved.
#[derive(Debug)]
pub(crate) struct Component {
    /// The `.wasm` file, relative paths taken from the manifest's directory.
    pub(crate) source: PathBuf,
    /// The route: an exact path, or a prefix ending in `/...`.
    pub(crate) route: String,
    /// Hosts outbound requests may go to.
    pub(crate) allowed_outbound_hosts: Vec<AllowedHost>,
    /// Store labels the component may open.
    pub(crate) key_value_stores: BTreeSet<String>,
    /// The component's variables, templates expanded.
    pub(crate) variables: HashMap<String, String>,
}

impl Component {
    /// Whether a request path is routed to the component.
    pub(crate) fn routes(&self, path: &str) -> bool {
        match self.route.strip_suffix("/...") {
            Some(prefix) => path == prefix || path.starts_with(&format!("{prefix}/")),
            None => path == self.route,
        }
    }
}

/// Loads `path`; application variables come from `env` (Spin's `SPIN_VARIABLE_<NAME>`), else
/// their default; a required variable without a value is an error, as in Spin.
pub(crate) fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Component> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let raw: Raw = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if raw.spin_manifest_version != 2 {
        bail!("spin_manifest_version must be 2");
    }
    let mut values = HashMap::new();
    for (name, var) in &raw.variables {
        let value = match env(&format!("SPIN_VARIABLE_{}", name.to_uppercase())) {
            Some(v) => v,
            None => match (&var.default, var.required) {
                (Some(d), false) => d.clone(),
                (None, true) => bail!("variable {name} is required and has no value"),
                _ => bail!("variable {name} must have a default or be required"),
            },
        };
        values.insert(name.clone(), value);
    }
    let trigger = raw
        .trigger
        .http
        .first()
        .context("the manifest has no [[trigger.http]]")?;
    let component = raw
        .component
        .get(&trigger.component)
        .with_context(|| format!("no component {}", trigger.component))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let allowed_outbound_hosts = component
        .allowed_outbound_hosts
        .iter()
        .map(|h| expand(h, &values))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        // An entry templated from an empty variable (no origin) allows nothing.
        .filter(|h| !h.is_empty())
        .map(|h| AllowedHost::parse(&h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let variables = component
        .variables
        .iter()
        .map(|(k, v)| Ok((k.clone(), expand(v, &values)?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(Component {
        source: dir.join(&component.source),
        route: trigger.route.clone(),
        allowed_outbound_hosts,
        key_value_stores: component.key_value_stores.iter().cloned().collect(),
        variables,
    })
}

/// Expands `{{ name }}` from the application variables.
fn expand(template: &str, values: &HashMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .with_context(|| format!("unclosed template in {template:?}"))?;
        let name = rest[start + 2..start + end].trim();
        out.push_str(
            values
                .get(name)
                .with_context(|| format!("unknown variable {name} in {template:?}"))?,
        );
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, where scheme, host and port may
/// be `*` and a host may start with `*.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedHost {
    scheme: String,
    host: String,
    port: Option<String>,
}

impl AllowedHost {
    fn parse(entry: &str) -> anyhow::Result<AllowedHost> {
        let (scheme, rest) = entry
            .split_once("://")
            .with_context(|| format!("allowed_outbound_hosts entry {entry:?} has no scheme"))?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            bail!("allowed_outbound_hosts entry {entry:?} has a path");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.to_owned())),
            None => (rest, None),
        };
        Ok(AllowedHost {
            scheme: scheme.to_owned(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry.
    pub(crate) fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let scheme_ok = self.scheme == "*" || self.scheme == scheme;
        let host_ok = self.host == "*"
            || self.host == host
            || self
                .host
                .strip_prefix("*.")
                .is_some_and(|d| host.ends_with(&format!(".{d}")));
        let default_port = match scheme {
            "https" => 443,
            _ => 80,
        };
        let port_ok = match &self.port {
            Some(p) if p == "*" => true,
            Some(p) => p.parse() == Ok(port),
            None => port == default_port,
        };
        scheme_ok && host_ok && port_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbound_entry_allows_only_its_scheme_host_and_port() {
        let exact = AllowedHost::parse("http://127.0.0.1:8788").unwrap_or_else(|e| panic!("{e}"));
        assert!(exact.allows("http", "127.0.0.1", 8788));
        assert!(!exact.allows("http", "127.0.0.1", 8789));
        assert!(!exact.allows("https", "127.0.0.1", 8788));
        assert!(!exact.allows("http", "127.0.0.2", 8788));
        let wild = AllowedHost::parse("https://*.example.com").unwrap_or_else(|e| panic!("{e}"));
        assert!(wild.allows("https", "api.example.com", 443));
        assert!(!wild.allows("https", "example.org", 443));
        assert!(!wild.allows("https", "api.example.com", 8443));
    }

    #[test]
    fn templates_expand_from_variables_and_unknown_names_fail() {
        let values = HashMap::from([("origin_url".to_owned(), "http://o:1".to_owned())]);
        assert_eq!(
            expand("{{ origin_url }}", &values).unwrap_or_default(),
            "http://o:1"
        );
        assert!(expand("{{ nope }}", &values).is_err());
    }
}
