//! The admin API's operations on the resources file, independent of HTTP.
//!
//! Reads answer from the text the running version was built from. A change runs under the
//! reload lock ([`Reloader::hold`], which first reloads a file edited by hand): apply the
//! change to the objects, render the whole file, parse and compile it with the same code as
//! `pylon check`, write it atomically ([`super::persist`]), then swap the compiled table in
//! ([`Hold::commit`](crate::ops::hold::Hold::commit)) — all before the response, so an
//! acknowledged change is both serving and on disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use log::info;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use thiserror::Error;

use super::persist;
use super::store::{id_text, redact, valid_id, Doc, Kind};
use crate::config::items::split_path;
use crate::config::{self, model, ConfigError, Problem, Resources};
use crate::ops::hold::HoldError;
use crate::ops::reload::Reloader;

/// Why an admin request failed; each maps to an HTTP status and the body
/// `{"error_msg": "<message>"}` (APISIX's error shape).
#[derive(Debug, Error)]
pub enum AdminError {
    /// 400: the body or the change is invalid; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such object or endpoint.
    #[error("{0}")]
    NotFound(String),
    /// 405: the method does not apply to this path.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the resources file was changed by hand and is invalid or still being written.
    #[error("{0}")]
    Held(#[from] HoldError),
    /// 409: other writers kept changing the object (etcd).
    #[error("{0}")]
    Conflict(String),
    /// 500: the file could not be written, or another unexpected failure.
    #[error("{0}")]
    Internal(String),
    /// 503: the configuration store (etcd) cannot be reached; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
}

impl AdminError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            AdminError::BadRequest(_) => 400,
            AdminError::NotFound(_) => 404,
            AdminError::MethodNotAllowed(_) => 405,
            AdminError::Held(_) | AdminError::Conflict(_) => 409,
            AdminError::Internal(_) => 500,
            AdminError::Unavailable(_) => 503,
        }
    }
}

/// How a `PATCH` body is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchKind {
    /// RFC 7396 JSON merge patch (`null` removes a field); APISIX's plain `PATCH`.
    Merge,
    /// RFC 6902 JSON Patch (`Content-Type: application/json-patch+json`).
    JsonPatch,
    /// APISIX's sub-path `PATCH /apisix/admin/<kind>/<id>/<path>`: the body replaces the
    /// value at this JSON pointer (`/upstream/nodes`).
    SubPath(String),
}

/// One admin operation on one kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `GET /apisix/admin/<kind>`
    List,
    /// `GET /apisix/admin/<kind>/<id>`
    Get(String),
    /// `PUT /apisix/admin/<kind>/<id>` (or with the id in the body)
    Put(Option<String>, Value),
    /// `POST /apisix/admin/<kind>`: the id is generated.
    Post(Value),
    /// `PATCH /apisix/admin/<kind>/<id>[/<path>]`
    Patch(String, PatchKind, Value),
    /// `DELETE /apisix/admin/<kind>/<id>`
    Delete(String),
}

/// A successful answer: status and JSON body.
pub type Reply = (u16, Value);

/// The admin API over one gateway's resources file.
pub struct Api {
    reloader: Arc<Reloader>,
    path: PathBuf,
    /// The running version's objects, parsed once per version (reads of a large file must not
    /// parse it again each time).
    parsed: Mutex<(u64, Arc<Doc>)>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn key(kind: Kind, id: &str) -> String {
    format!("/apisix/{}/{id}", kind.segment())
}

pub(super) fn item(kind: Kind, id: &str, value: &Value) -> Value {
    json!({"key": key(kind, id), "value": redact(kind, value)})
}

/// A new id for `POST`: 20 digits from the clock in microseconds, always increasing (like
/// APISIX's generated ids: digits, sortable by creation).
fn new_id(doc: &Doc, kind: Kind) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut n = LAST
        .fetch_max(micros, Ordering::SeqCst)
        .max(micros)
        .saturating_add(1);
    loop {
        let id = format!("{n:020}");
        if doc.position(kind, &id).is_none() {
            LAST.fetch_max(n, Ordering::SeqCst);
            return id;
        }
        n = n.saturating_add(1);
    }
}

/// Checks the object's shape against the resources model alone, for messages whose paths are
/// relative to the body (`upstream.nodes[0].port: …`).
fn check_shape<T: DeserializeOwned>(value: &Value) -> Result<(), AdminError> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(|_| ())
        .map_err(|e| {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            AdminError::BadRequest(if path == "." {
                msg
            } else {
                format!("{path}: {msg}")
            })
        })
}

pub(super) fn check_kind_shape(kind: Kind, value: &Value) -> Result<(), AdminError> {
    match kind {
        Kind::Routes => check_shape::<model::Route>(value),
        Kind::Services => check_shape::<model::Service>(value),
        Kind::Upstreams => check_shape::<model::Upstream>(value),
        Kind::Ssls => check_shape::<model::Ssl>(value),
        Kind::CaCertificates => check_shape::<model::CaCertificate>(value),
        Kind::Consumers => check_shape::<model::Consumer>(value),
        Kind::PluginConfigs => check_shape::<model::PluginConfig>(value),
        Kind::GlobalRules => check_shape::<model::GlobalRule>(value),
    }
}

/// A problem found in the rendered file, worded for the API: relative to the body when it is
/// in the object being changed (`own`), else naming the other object by position and id.
fn describe(p: &Problem, doc: &Doc, own: Option<(Kind, usize)>) -> String {
    let Some((kind, i, rest)) = split_path(&p.path) else {
        return p.to_string();
    };
    if own == Some((kind, i)) {
        return if rest.is_empty() {
            p.message.clone()
        } else {
            format!("{rest}: {}", p.message)
        };
    }
    let id = doc
        .list(kind)
        .get(i)
        .and_then(|v| id_text(kind, v))
        .unwrap_or_default();
    let sep = if rest.is_empty() { "" } else { "." };
    format!(
        "{}[{i}] ({} {id}){sep}{rest}: {}",
        kind.segment(),
        kind.id_field(),
        p.message
    )
}

/// The body as a JSON object, without the fields the API sets itself.
fn object(body: Value) -> Result<Map<String, Value>, AdminError> {
    match body {
        Value::Object(mut m) => {
            m.shift_remove("create_time");
            m.shift_remove("update_time");
            Ok(m)
        }
        _ => Err(AdminError::BadRequest(
            "the request body must be a JSON object".into(),
        )),
    }
}

/// `m` with its name field first (`id`; `username` for consumers), then its other fields,
/// then the times.
fn stamped(kind: Kind, id: Value, mut m: Map<String, Value>, created: Value) -> Value {
    let mut out = Map::new();
    let field = kind.id_field();
    for k in [field, "create_time", "update_time"] {
        m.shift_remove(k);
    }
    out.insert(field.into(), id);
    out.extend(m);
    out.insert("create_time".into(), created);
    out.insert("update_time".into(), json!(now()));
    Value::Object(out)
}

impl Api {
    /// The API for the resources file `reloader` serves.
    pub fn new(reloader: Arc<Reloader>) -> Api {
        let path = reloader.resources_path().to_path_buf();
        Api {
            reloader,
            path,
            parsed: Mutex::new((0, Arc::new(Doc::default()))),
        }
    }

    /// The reloader of the resources file this API changes.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Runs `op` on `kind`; `what` (e.g. `PUT /apisix/admin/routes/1`) names it in logs.
    ///
    /// Errors: see [`AdminError`].
    pub fn run(&self, kind: Kind, op: Op, what: &str) -> Result<Reply, AdminError> {
        match op {
            Op::List => {
                let doc = self.running()?;
                let list: Vec<Value> = doc
                    .list(kind)
                    .iter()
                    .map(|v| item(kind, &id_text(kind, v).unwrap_or_default(), v))
                    .collect();
                Ok((200, json!({"total": list.len(), "list": list})))
            }
            Op::Get(id) => {
                let doc = self.running()?;
                let v = doc.get(kind, &id).ok_or_else(|| not_found(kind, &id))?;
                Ok((200, item(kind, &id, v)))
            }
            op => {
                let result = self.change(kind, op, what);
                if let Err(e) = &result {
                    info!("admin API: {what} refused ({}): {e}", e.status());
                }
                result
            }
        }
    }

    fn running(&self) -> Result<Arc<Doc>, AdminError> {
        let mut cache = self
            .parsed
            .lock()
            .map_err(|_| AdminError::Internal("admin cache poisoned".into()))?;
        if let Some((version, text)) = self.reloader.running_if_newer(cache.0) {
            let doc = Doc::parse(&text)
                .map_err(|e| AdminError::Internal(format!("the running resources file: {e}")))?;
            *cache = (version, Arc::new(doc));
        }
        Ok(cache.1.clone())
    }

    fn change(&self, kind: Kind, op: Op, what: &str) -> Result<Reply, AdminError> {
        let hold = self.reloader.hold()?;
        let mut doc = Doc::parse(hold.text())
            .map_err(|e| AdminError::Internal(format!("the resources file: {e}")))?;
        let Planned { id, status, value } = plan(&doc, kind, op)?;
        match value {
            Some(v) => {
                doc.put(kind, &id, v);
            }
            None => {
                doc.remove(kind, &id);
            }
        }
        let own = doc.position(kind, &id).map(|i| (kind, i));
        if let Some(v) = doc.get(kind, &id) {
            check_kind_shape(kind, v)?;
        }
        let text = doc.render().map_err(AdminError::Internal)?;
        let compiled = self.compile(&text, &doc, own)?;
        hold.still_current()?;
        persist::replace_file(&self.path, text.as_bytes()).map_err(|e| {
            AdminError::Internal(format!("cannot write {}: {e}", self.path.display()))
        })?;
        let version = hold.commit(text.into_bytes(), compiled, &format!("admin API: {what}"));
        log::debug!("admin API: {what} serving as config version {version}");
        let body = match doc.get(kind, &id) {
            Some(v) => item(kind, &id, v),
            None => json!({"deleted": "1", "key": key(kind, &id)}),
        };
        Ok((status, body))
    }

    /// Parses and compiles `text` exactly as `pylon check` would read the file.
    fn compile(
        &self,
        text: &str,
        doc: &Doc,
        own: Option<(Kind, usize)>,
    ) -> Result<config::Compiled, AdminError> {
        let bad = |problems: &[Problem]| {
            let msgs: Vec<String> = problems.iter().map(|p| describe(p, doc, own)).collect();
            AdminError::BadRequest(msgs.join("; "))
        };
        let res = match config::parse_yaml::<Resources>(&self.path, text) {
            Ok(r) => r,
            Err(ConfigError::Parse { problem, .. }) => return Err(bad(&[problem])),
            Err(e) => return Err(AdminError::Internal(e.to_string())),
        };
        config::compile(&res, &config::base_dir(&self.path)).map_err(|p| bad(&p))
    }
}

/// What a change does to one object: its id, the status to answer (201 created, 200
/// otherwise) and its new value (`None`: deleted).
pub struct Planned {
    /// The object's id.
    pub id: String,
    /// 201 for a new object, else 200.
    pub status: u16,
    /// The new value, or `None` when the change deletes it.
    pub value: Option<Value>,
}

/// Works out `op` on the objects of `doc` (the current configuration), without changing
/// them: ids checked or generated, times stamped, patches applied, deletes of objects still
/// referred to refused. Consumers are named by `username` ([`Kind::id_field`]): in the URL
/// (`PUT consumers/jack`) or the body (`PUT consumers` with `{"username": "jack"}`), never
/// generated.
///
/// Errors: [`AdminError::BadRequest`], [`AdminError::NotFound`], and
/// [`AdminError::MethodNotAllowed`] for `POST` on kinds APISIX names only with `PUT`.
pub fn plan(doc: &Doc, kind: Kind, op: Op) -> Result<Planned, AdminError> {
    let field = kind.id_field();
    let (id, status, value) = match op {
        Op::List | Op::Get(_) => return Err(AdminError::Internal("not a change".into())),
        Op::Put(url_id, body) => {
            let m = object(body)?;
            let body_id = map_id(kind, &m);
            let id = match (url_id, body_id) {
                (Some(u), Some(b)) if u != b => {
                    return Err(AdminError::BadRequest(format!(
                        "{field}: {b:?} does not match the {field} in the URL ({u:?})"
                    )))
                }
                (Some(u), _) => u,
                (None, Some(b)) => b,
                (None, None) => {
                    return Err(AdminError::BadRequest(format!(
                        "{field}: required (in the URL or the body)"
                    )))
                }
            };
            check_id(kind, &id)?;
            let old = doc.get(kind, &id);
            let created = old
                .and_then(|o| o.get("create_time").cloned())
                .unwrap_or_else(|| json!(now()));
            let id_value = m.get(field).cloned().unwrap_or_else(|| json!(id));
            let status = if old.is_some() { 200 } else { 201 };
            (id, status, Some(stamped(kind, id_value, m, created)))
        }
        Op::Post(body) => {
            if !kind.generated_ids() {
                return Err(AdminError::MethodNotAllowed(format!(
                    "POST is not supported for {}: use PUT /apisix/admin/{}/<{field}> \
                     (as in APISIX)",
                    kind.segment(),
                    kind.segment()
                )));
            }
            let m = object(body)?;
            if m.contains_key("id") {
                return Err(AdminError::BadRequest(format!(
                    "id: not allowed with POST, which generates it; use PUT \
                     /apisix/admin/{}/<id>",
                    kind.segment()
                )));
            }
            let id = new_id(doc, kind);
            let v = stamped(kind, json!(id), m, json!(now()));
            (id, 201, Some(v))
        }
        Op::Patch(id, how, body) => {
            let old = doc.get(kind, &id).ok_or_else(|| not_found(kind, &id))?;
            let mut v = old.clone();
            patch(&mut v, how, body)?;
            let Value::Object(m) = v else {
                return Err(AdminError::BadRequest(
                    "the patched object is not a JSON object".into(),
                ));
            };
            if map_id(kind, &m).as_deref() != Some(id.as_str()) {
                return Err(AdminError::BadRequest(format!(
                    "{field}: cannot be changed"
                )));
            }
            let created = old.get("create_time").cloned().unwrap_or(json!(now()));
            let id_value = m.get(field).cloned().unwrap_or_else(|| json!(id));
            (id, 200, Some(stamped(kind, id_value, m, created)))
        }
        Op::Delete(id) => {
            doc.get(kind, &id).ok_or_else(|| not_found(kind, &id))?;
            let users = doc.referrers(kind, &id);
            if !users.is_empty() {
                return Err(AdminError::BadRequest(format!(
                    "{} {id:?} is still used by {}",
                    kind.singular(),
                    users.join(", ")
                )));
            }
            (id, 200, None)
        }
    };
    Ok(Planned { id, status, value })
}

/// The name field ([`Kind::id_field`]) of an object's fields, as text.
fn map_id(kind: Kind, m: &Map<String, Value>) -> Option<String> {
    match m.get(kind.id_field())? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn not_found(kind: Kind, id: &str) -> AdminError {
    AdminError::NotFound(format!("{} {id:?} not found", kind.singular()))
}

fn check_id(kind: Kind, id: &str) -> Result<(), AdminError> {
    if valid_id(kind, id) {
        Ok(())
    } else if kind == Kind::Consumers {
        Err(AdminError::BadRequest(format!(
            "username: {id:?} is not valid: use 1 to 100 of a-z A-Z 0-9 - _"
        )))
    } else {
        Err(AdminError::BadRequest(format!(
            "id: {id:?} is not valid: use 1 to 64 of a-z A-Z 0-9 - _ ."
        )))
    }
}

/// Applies a `PATCH` body to `v`.
fn patch(v: &mut Value, how: PatchKind, body: Value) -> Result<(), AdminError> {
    let ops: json_patch::Patch = match how {
        PatchKind::Merge => {
            if !body.is_object() {
                return Err(AdminError::BadRequest(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            json_patch::merge(v, &body);
            return Ok(());
        }
        PatchKind::JsonPatch => serde_json::from_value(body)
            .map_err(|e| AdminError::BadRequest(format!("not an RFC 6902 JSON Patch: {e}")))?,
        PatchKind::SubPath(pointer) => {
            serde_json::from_value(json!([{"op": "add", "path": pointer, "value": body}]))
                .map_err(|e| AdminError::BadRequest(format!("{pointer}: {e}")))?
        }
    };
    json_patch::patch(v, &ops).map_err(|e| AdminError::BadRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_paths_are_relative_to_the_body() {
        let doc = Doc::parse(
            b"services:\n  - id: a\n    upstream_id: u\n  - id: b\n    upstream_id: v\n",
        )
        .unwrap();
        let p = Problem::new("services[1].upstream_id", "no upstream with id \"v\"");
        let own = Some((Kind::Services, 1));
        assert_eq!(
            describe(&p, &doc, own),
            "upstream_id: no upstream with id \"v\""
        );
        assert_eq!(
            describe(&p, &doc, Some((Kind::Services, 0))),
            "services[1] (id b).upstream_id: no upstream with id \"v\""
        );
        assert_eq!(
            describe(&Problem::new("", "whole"), &doc, own),
            "whole".to_string()
        );
    }

    #[test]
    fn patches() {
        let mut v = json!({"id": "s", "upstream": {"nodes": {"a:1": 1}}});
        let add = json!([{"op": "add", "path": "/upstream/tls", "value": {"client_cert_id": "c"}}]);
        patch(&mut v, PatchKind::JsonPatch, add).unwrap();
        assert_eq!(v["upstream"]["tls"]["client_cert_id"], "c");
        patch(&mut v, PatchKind::Merge, json!({"upstream": {"tls": null}})).unwrap();
        assert!(v["upstream"].get("tls").is_none());
        patch(
            &mut v,
            PatchKind::SubPath("/upstream/nodes".into()),
            json!({"b:2": 1}),
        )
        .unwrap();
        assert_eq!(v["upstream"]["nodes"], json!({"b:2": 1}));
        let bad = json!([{"op": "remove", "path": "/nope"}]);
        assert!(patch(&mut v, PatchKind::JsonPatch, bad).is_err());
        assert!(patch(&mut v, PatchKind::Merge, json!([1])).is_err());
    }

    #[test]
    fn shape_errors_name_the_field() {
        let e = check_kind_shape(
            Kind::Routes,
            &json!({"id": "1", "uri": "/a", "priority": "x"}),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("priority: invalid type"), "{e}");
        let e = check_kind_shape(
            Kind::Upstreams,
            &json!({"id": "u", "nodes": [{"host": "a", "weight": 1, "bogus": 1}]}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("nodes[0].bogus: unknown field `bogus`"),
            "{e}"
        );
    }

    #[test]
    fn generated_ids_increase() {
        let doc = Doc::default();
        let a = new_id(&doc, Kind::Routes);
        let b = new_id(&doc, Kind::Routes);
        assert_eq!(a.len(), 20);
        assert!(b > a, "{a} {b}");
        assert!(valid_id(Kind::Routes, &a));
    }
}
