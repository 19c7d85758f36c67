//! Configuration as separate items, for keyed sources (etcd): each object is validated on its
//! own, as APISIX does, because many writers share the store and one bad write must not stop
//! every other change.
//!
//! [`Items`] holds, per object (kind + id), the newest value the source gave and the last
//! value that was applied. [`Items::build`] compiles all of them with the same code as a
//! resources file ([`compile_with`]); an item whose newest value does not parse or compile is
//! put back to its previous applied value, or left out when it has none (or that one fails
//! too, say because what it refers to was deleted), and the build is tried again without it.
//! Every other item applies. Each skipped item is reported with the problems found, at paths
//! relative to the object (`upstream_id: no upstream with id "u"`).
//!
//! A route or service whose `upstream_id` names no upstream still applies and answers 503
//! (APISIX's behaviour); one whose `service_id` names no service is left out, so its requests
//! answer 404 (APISIX answers 404 too).

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::compile::{compile_with, Compiled, Options};
use super::kind::Kind;
use super::model::{self, Resources};
use super::Problem;

/// An item's identity: its kind and id.
pub type Key = (Kind, String);

/// A value parsed into the model, kept beside it so a rebuild does not parse it again
/// (`None`: not parsed yet).
type Parsed = Option<Result<Typed, Problem>>;

#[derive(Debug, Clone)]
struct Entry {
    /// The newest value the source holds.
    value: Value,
    /// `value` parsed.
    parsed: Parsed,
    /// What serves now (or was last applied).
    good: Good,
}

/// The applied value of an item.
#[derive(Debug, Clone)]
enum Good {
    /// Never applied.
    Never,
    /// The newest value.
    Same,
    /// An older value (the newest one did not apply, or has not been built yet), parsed.
    Older(Box<(Value, Parsed)>),
}

impl Entry {
    fn new(value: Value, good: Good) -> Entry {
        Entry {
            value,
            parsed: None,
            good,
        }
    }

    /// Replaces the newest value; returns false when it is the same. The applied value is
    /// kept (moved, not copied) for fallback.
    fn replace(&mut self, value: Value) -> bool {
        if self.value == value {
            return false;
        }
        let old = std::mem::replace(&mut self.value, value);
        let parsed = self.parsed.take();
        if matches!(self.good, Good::Same) {
            self.good = Good::Older(Box::new((old, parsed)));
        }
        true
    }

    fn applied(&self) -> Option<&Value> {
        match &self.good {
            Good::Never => None,
            Good::Same => Some(&self.value),
            Good::Older(older) => Some(&older.0),
        }
    }
}

/// An item that could not be applied as the source holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// Its kind.
    pub kind: Kind,
    /// Its id.
    pub id: String,
    /// What is wrong, at paths relative to the object.
    pub problems: Vec<Problem>,
    /// Whether its previous value keeps serving (otherwise it is not served at all).
    pub serving_previous: bool,
}

/// The outcome of [`Items::build`].
pub struct Built {
    /// The compiled configuration of every item that applied.
    pub compiled: Compiled,
    /// Items left out or held at their previous value.
    pub skipped: Vec<Skipped>,
}

/// Turns a stored value into what the model reads (e.g. decrypts private keys). Errors name
/// the field.
pub type Prepare<'a> = &'a dyn Fn(Kind, &mut Value) -> Result<(), Problem>;

/// Every item of a keyed source; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct Items {
    entries: BTreeMap<Key, Entry>,
}

/// One object parsed into the model.
#[derive(Debug, Clone)]
enum Typed {
    Route(model::Route),
    Service(model::Service),
    Upstream(Box<model::Upstream>),
    Ssl(model::Ssl),
    Ca(model::CaCertificate),
    Consumer(model::Consumer),
    PluginConfig(model::PluginConfig),
    GlobalRule(model::GlobalRule),
}

fn typed<T: DeserializeOwned>(v: &Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Problem::new(path, e.into_inner().to_string())
    })
}

/// Parses `value` as an object of `kind` with id `id` (the key's id wins: a different `id`
/// field is a problem; a missing one is filled in).
fn parse(kind: Kind, id: &str, value: &Value, prepare: Prepare) -> Result<Typed, Problem> {
    let mut v = value.clone();
    let Value::Object(m) = &mut v else {
        return Err(Problem::new("", "not a JSON object"));
    };
    let field = kind.id_field();
    match m.get(field) {
        None | Some(Value::Null) => {
            m.insert(field.into(), Value::String(id.to_string()));
        }
        Some(Value::String(s)) if s == id => {}
        Some(Value::Number(n)) if n.to_string() == id => {}
        Some(other) => {
            return Err(Problem::new(
                field,
                format!("{other} does not match the {field} in the key ({id:?})"),
            ))
        }
    }
    prepare(kind, &mut v)?;
    Ok(match kind {
        Kind::Routes => Typed::Route(typed(&v)?),
        Kind::Services => Typed::Service(typed(&v)?),
        Kind::Upstreams => Typed::Upstream(Box::new(typed(&v)?)),
        Kind::Ssls => Typed::Ssl(typed(&v)?),
        Kind::CaCertificates => Typed::Ca(typed(&v)?),
        Kind::Consumers => Typed::Consumer(typed(&v)?),
        Kind::PluginConfigs => Typed::PluginConfig(typed(&v)?),
        Kind::GlobalRules => Typed::GlobalRule(typed(&v)?),
    })
}

/// Splits a compile problem's path `services[0].upstream.tls` into (services, 0,
/// `upstream.tls`).
pub fn split_path(path: &str) -> Option<(Kind, usize, &str)> {
    let (seg, rest) = path.split_once('[')?;
    let (idx, rest) = rest.split_once(']')?;
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    Some((Kind::from_segment(seg)?, idx.parse().ok()?, rest))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    New,
    Old,
    Out,
}

impl Items {
    /// Items serving `values` already (a snapshot): each is both newest and applied.
    pub fn applied(values: impl IntoIterator<Item = (Kind, String, Value)>) -> Items {
        let entries = values
            .into_iter()
            .map(|(k, id, v)| ((k, id), Entry::new(v, Good::Same)))
            .collect();
        Items { entries }
    }

    /// Sets the newest value of an item. Returns false when it was already that value.
    pub fn set(&mut self, kind: Kind, id: &str, value: Value) -> bool {
        match self.entries.get_mut(&(kind, id.to_string())) {
            Some(e) => e.replace(value),
            None => {
                let e = Entry::new(value, Good::Never);
                self.entries.insert((kind, id.to_string()), e);
                true
            }
        }
    }

    /// Removes an item. Returns false when there was none.
    pub fn remove(&mut self, kind: Kind, id: &str) -> bool {
        self.entries.remove(&(kind, id.to_string())).is_some()
    }

    /// Replaces every item with `all` (a full read of the source): items absent from it are
    /// removed; those present keep their applied value for fallback (and, when unchanged,
    /// their parsed form). Returns whether anything changed.
    pub fn resync(&mut self, all: impl IntoIterator<Item = (Kind, String, Value)>) -> bool {
        let mut next: BTreeMap<Key, Entry> = BTreeMap::new();
        let mut changed = false;
        for (kind, id, value) in all {
            let key = (kind, id);
            let entry = match self.entries.remove(&key) {
                Some(mut e) => {
                    changed |= e.replace(value);
                    e
                }
                None => {
                    changed = true;
                    Entry::new(value, Good::Never)
                }
            };
            next.insert(key, entry);
        }
        changed |= !self.entries.is_empty();
        self.entries = next;
        changed
    }

    /// How many items there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest value of one item.
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Value> {
        self.entries.get(&(kind, id.to_string())).map(|e| &e.value)
    }

    /// Every item's newest value, by kind then id.
    pub fn newest(&self) -> impl Iterator<Item = (Kind, &str, &Value)> {
        self.entries
            .iter()
            .map(|((k, id), e)| (*k, id.as_str(), &e.value))
    }

    /// Every applied value (what serves after the last [`Items::build`]), by kind then id.
    pub fn applied_values(&self) -> impl Iterator<Item = (Kind, &str, &Value)> {
        self.entries
            .iter()
            .filter_map(|((k, id), e)| e.applied().map(|g| (*k, id.as_str(), g)))
    }

    /// Compiles every item; see the module documentation. `base` resolves relative
    /// certificate paths; `prepare` runs on each value before it is read. Each value is
    /// parsed once and kept parsed until it changes.
    ///
    /// Errors: problems that belong to no item (not expected), in which case nothing
    /// changes.
    pub fn build(&mut self, base: &Path, prepare: Prepare) -> Result<Built, Vec<Problem>> {
        let mut list: Vec<(&Key, &mut Entry)> = self.entries.iter_mut().collect();
        let n = list.len();
        let mut uses = vec![Use::New; n];
        let mut why: Vec<Vec<Problem>> = vec![Vec::new(); n];
        let opts = Options {
            missing_upstream_answers_503: true,
        };
        let demote = |e: &Entry, u: Use| match u {
            Use::New if matches!(e.good, Good::Older(..)) => Use::Old,
            _ => Use::Out,
        };
        let compiled = loop {
            let mut res = Resources::default();
            let mut index: [Vec<usize>; Kind::COUNT] = Default::default();
            let mut refused = false;
            for (i, (key, e)) in list.iter_mut().enumerate() {
                let (kind, id) = (key.0, key.1.as_str());
                let parsed = match (uses[i], &mut **e) {
                    (Use::New, Entry { value, parsed, .. }) => {
                        parsed.get_or_insert_with(|| parse(kind, id, value, prepare))
                    }
                    (
                        Use::Old,
                        Entry {
                            good: Good::Older(older),
                            ..
                        },
                    ) => {
                        let (v, p) = &mut **older;
                        p.get_or_insert_with(|| parse(kind, id, v, prepare))
                    }
                    _ => continue,
                };
                match parsed {
                    Ok(t) => {
                        index[kind.index()].push(i);
                        match t.clone() {
                            Typed::Route(r) => res.routes.push(r),
                            Typed::Service(s) => res.services.push(s),
                            Typed::Upstream(u) => res.upstreams.push(*u),
                            Typed::Ssl(s) => res.ssls.push(s),
                            Typed::Ca(c) => res.ca_certificates.push(c),
                            Typed::Consumer(c) => res.consumers.push(c),
                            Typed::PluginConfig(p) => res.plugin_configs.push(p),
                            Typed::GlobalRule(g) => res.global_rules.push(g),
                        }
                    }
                    Err(p) => {
                        if why[i].is_empty() {
                            why[i].push(p.clone());
                        }
                        uses[i] = demote(e, uses[i]);
                        refused = true;
                    }
                }
            }
            if refused {
                continue;
            }
            match compile_with(&res, base, opts) {
                Ok(mut c) => {
                    // Name warnings by item (`routes/7.upstream_id`), not by position.
                    for w in &mut c.warnings {
                        if let Some((kind, idx, rest)) = split_path(&w.path) {
                            if let Some(&i) = index[kind.index()].get(idx) {
                                let sep = if rest.is_empty() { "" } else { "." };
                                w.path = format!("{}/{}{sep}{rest}", kind.segment(), list[i].0 .1);
                            }
                        }
                    }
                    break c;
                }
                Err(problems) => {
                    let mut bad = Vec::new();
                    for p in &problems {
                        let Some((kind, idx, rest)) = split_path(&p.path) else {
                            return Err(problems);
                        };
                        let Some(&i) = index[kind.index()].get(idx) else {
                            return Err(problems);
                        };
                        if !bad.contains(&i) {
                            bad.push(i);
                        }
                        // Report what is wrong with the newest value.
                        if uses[i] == Use::New {
                            why[i].push(Problem::new(rest, p.message.clone()));
                        }
                    }
                    for i in bad {
                        uses[i] = demote(list[i].1, uses[i]);
                    }
                }
            }
        };
        let mut skipped = Vec::new();
        for (i, (key, e)) in list.into_iter().enumerate() {
            match uses[i] {
                Use::New => e.good = Good::Same,
                u => skipped.push(Skipped {
                    kind: key.0,
                    id: key.1.clone(),
                    problems: std::mem::take(&mut why[i]),
                    serving_previous: u == Use::Old,
                }),
            }
        }
        Ok(Built { compiled, skipped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn none(_: Kind, _: &mut Value) -> Result<(), Problem> {
        Ok(())
    }

    fn build(items: &mut Items) -> Built {
        items.build(Path::new("."), &none).unwrap()
    }

    fn upstream() -> Value {
        json!({"nodes": {"127.0.0.1:1980": 1}, "type": "roundrobin"})
    }

    #[test]
    fn a_bad_item_is_skipped_and_the_rest_applies() {
        let mut items = Items::default();
        items.set(Kind::Upstreams, "u", upstream());
        items.set(Kind::Routes, "1", json!({"uri": "/a", "upstream_id": "u"}));
        items.set(
            Kind::Routes,
            "2",
            json!({"uri": "/b", "upstream_id": "u", "bogus": 1}),
        );
        items.set(
            Kind::Routes,
            "3",
            json!({"uri": "/c", "service_id": "nope"}),
        );
        let b = build(&mut items);
        assert_eq!(b.compiled.counts.routes, 1);
        assert_eq!(b.skipped.len(), 2);
        assert_eq!(b.skipped[0].id, "2");
        assert_eq!(b.skipped[0].problems[0].path, "bogus");
        assert_eq!(b.skipped[1].problems[0].path, "service_id");
        assert!(!b.skipped[0].serving_previous);
    }

    #[test]
    fn a_changed_to_invalid_item_keeps_its_previous_value() {
        let mut items = Items::default();
        items.set(Kind::Upstreams, "u", upstream());
        items.set(Kind::Routes, "1", json!({"uri": "/a", "upstream_id": "u"}));
        assert!(build(&mut items).skipped.is_empty());
        items.set(
            Kind::Routes,
            "1",
            json!({"uri": "no-slash", "upstream_id": "u"}),
        );
        let b = build(&mut items);
        assert_eq!(b.compiled.counts.routes, 1);
        assert!(b.skipped[0].serving_previous);
        assert_eq!(b.skipped[0].problems[0].path, "uri");
        let served: Vec<_> = items
            .applied_values()
            .map(|(_, _, v)| v["uri"].clone())
            .collect();
        assert!(served.contains(&json!("/a")), "{served:?}");
    }

    #[test]
    fn a_missing_upstream_compiles_to_503_and_a_bad_upstream_falls_back() {
        let mut items = Items::default();
        items.set(Kind::Routes, "1", json!({"uri": "/a", "upstream_id": "u"}));
        let b = build(&mut items);
        assert!(b.skipped.is_empty());
        assert!(b
            .compiled
            .warnings
            .iter()
            .any(|w| w.message.contains("503")));
        items.set(Kind::Upstreams, "u", upstream());
        assert!(build(&mut items).skipped.is_empty());
        items.set(Kind::Upstreams, "u", json!({"nodes": {"127.0.0.1:1": 0}}));
        let b = build(&mut items);
        assert_eq!(b.skipped.len(), 1);
        assert!(b.skipped[0].serving_previous);
        assert_eq!(b.skipped[0].problems[0].path, "nodes");
    }

    #[test]
    fn ids_come_from_the_key() {
        let mut items = Items::default();
        items.set(Kind::Upstreams, "u", json!({"id": "other", "nodes": {}}));
        let b = build(&mut items);
        assert_eq!(b.skipped[0].problems[0].path, "id");
        items.set(
            Kind::Upstreams,
            "7",
            json!({"id": 7, "nodes": {"127.0.0.1:1": 1}}),
        );
        items.remove(Kind::Upstreams, "u");
        assert!(build(&mut items).skipped.is_empty());
    }

    #[test]
    fn resync_removes_what_is_gone() {
        let mut items = Items::default();
        items.set(Kind::Upstreams, "u", upstream());
        items.set(Kind::Upstreams, "v", upstream());
        build(&mut items);
        assert!(items.resync(vec![(Kind::Upstreams, "u".into(), upstream())]));
        assert_eq!(items.len(), 1);
        assert!(!items.resync(vec![(Kind::Upstreams, "u".into(), upstream())]));
    }

    #[test]
    fn paths_split() {
        assert_eq!(
            split_path("services[12].upstream.tls"),
            Some((Kind::Services, 12, "upstream.tls"))
        );
        assert_eq!(split_path("routes[0]"), Some((Kind::Routes, 0, "")));
        assert_eq!(split_path("gateway.listen"), None);
    }
}
