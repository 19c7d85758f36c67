//! The admin API: routes, services, upstreams, SSL objects, CA certificates, consumers,
//! plugin configs and global rules changed at run time, in the style of Apache APISIX's
//! Admin API v3, persisted to the resources file, or, with `gateway.config_provider: etcd`,
//! written to etcd ([`etcd_api`]).
//!
//! Served on `gateway.admin.listen` (its own Pingora service, one thread) when
//! `gateway.admin` is set. Every request must carry `X-API-KEY: <gateway.admin.api_key>`
//! (compared in constant time); otherwise 401. Endpoints, under `/apisix/admin/`, for each
//! `<kind>` of `routes`, `services`, `upstreams`, `ssls`, `ca_certificates`, `consumers`,
//! `plugin_configs`, `global_rules` (`<id>` is a consumer's `username`):
//!
//! | request | answer |
//! |---|---|
//! | `GET <kind>` | 200 `{"total": N, "list": [{"key": "/apisix/<kind>/<id>", "value": {…}}]}` |
//! | `GET <kind>/<id>` | 200 `{"key", "value"}`; 404 |
//! | `PUT <kind>/<id>` (or `PUT <kind>` with `id`, or `username`, in the body) | 201 created / 200 replaced, `{"key", "value"}` |
//! | `POST <kind>` | 201, generated id; 405 for consumers, plugin configs, global rules (as APISIX) |
//! | `PATCH <kind>/<id>` | 200; JSON merge patch (RFC 7396), or RFC 6902 JSON Patch with `Content-Type: application/json-patch+json` |
//! | `PATCH <kind>/<id>/<path>` | 200; the body replaces the value at `<path>` (APISIX's sub-path patch) |
//! | `DELETE <kind>/<id>` | 200 `{"deleted": "1", "key": …}`; 400 while something refers to it |
//! | `GET openapi.json` | the OpenAPI 3 description (`docs/admin-openapi.json`) |
//! | `GET upstreams/<id>/probe` | Pylon extension: 200, the `pylon probe` report of that upstream ([`crate::diagnose`]); 404 |
//! | `GET status` | Pylon extension: version, provider, certificate expiry, node health ([`status`]) |
//! | `POST certificates/inspect` | Pylon extension: what a PEM certificate and key are ([`crate::tls::inspect`]) |
//!
//! The same listener serves the dashboard at `/ui/` ([`ui`]), without the key.
//!
//! Bodies use the resources file's fields; `create_time` and `update_time` (Unix seconds) are
//! set by the API. Errors are `{"error_msg": "…"}`: 400 names the field (relative to the
//! body, or `services[0] (id x).field` for another object the change breaks), 404 unknown
//! object, 409 the file was edited by hand and does not load, 500 the file cannot be written.
//! Private keys and their passphrases (`ssls` `key`/`keys`/`key_passphrase`, upstream
//! `tls.client_key`/`tls.client_key_passphrase`) and plugin secrets (APISIX's
//! `encrypt_fields`: a consumer's key-auth `key`, basic-auth `password`, jwt-auth `secret`,
//! limit-count's `redis_password`, …) are never returned: they are left out of every answer
//! ([`store::redact`]). See [`api`] for how a change is validated, persisted and applied.

pub mod api;
pub mod etcd_api;
pub mod persist;
pub mod status;
pub mod store;
pub mod transfer;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use log::info;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use pingora_http::ResponseHeader;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::config::{model, Problem};
use crate::ops::Source;
use api::{AdminError, Api, Op, PatchKind};
use etcd_api::EtcdApi;
use store::Kind;

/// The OpenAPI 3 description served at `/apisix/admin/openapi.json`.
pub const OPENAPI: &str = include_str!("../../docs/admin-openapi.json");

/// Largest request body accepted, in bytes (APISIX's default `client_max_body_size` for the
/// admin API is larger, but certificates and routes fit easily).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Why the admin listener cannot start.
#[derive(Debug, Error)]
pub enum AdminStartError {
    /// `gateway.admin.listen` is not an address.
    #[error("gateway.admin.listen: {0}")]
    Listen(String),
}

fn listen_addr(admin: &model::Admin) -> Result<SocketAddr, String> {
    crate::ops::metrics::listen_addr(&admin.listen)
}

/// Shortest `gateway.admin.api_key` accepted, in characters (APISIX generates 32).
pub const MIN_API_KEY_LEN: usize = 16;

/// Checks `gateway.admin`: an address, and an `api_key` of at least [`MIN_API_KEY_LEN`]
/// characters, always: on loopback too, any local user could otherwise change the
/// configuration.
pub fn check_static(admin: &model::Admin) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(e) = listen_addr(admin) {
        problems.push(Problem::new("gateway.admin.listen", e));
    }
    match admin.api_key.as_deref().map(str::trim) {
        None => problems.push(Problem::new(
            "gateway.admin.api_key",
            format!(
                "required: every admin request must carry it in X-API-KEY (at least \
                 {MIN_API_KEY_LEN} characters; e.g. openssl rand -hex 16)"
            ),
        )),
        Some(k) if k.chars().count() < MIN_API_KEY_LEN => problems.push(Problem::new(
            "gateway.admin.api_key",
            format!("too short: at least {MIN_API_KEY_LEN} characters (e.g. openssl rand -hex 16)"),
        )),
        Some(_) => {}
    }
    problems
}

/// The admin service on `gateway.admin.listen`, one thread, changing the configuration of
/// `source` (the resources file, or etcd).
///
/// Errors: [`AdminStartError::Listen`] when the address does not parse.
pub fn service(
    admin: &model::Admin,
    source: Source,
    table: Arc<arc_swap::ArcSwap<crate::table::Table>>,
) -> Result<Service<AdminApp>, AdminStartError> {
    let addr = listen_addr(admin).map_err(AdminStartError::Listen)?;
    let backend = match source {
        Source::File(reloader) => Backend::File(Arc::new(Api::new(reloader))),
        Source::Etcd(sync) => Backend::Etcd(Arc::new(EtcdApi::new(sync))),
    };
    let app = AdminApp {
        key: admin.api_key.clone().map(String::into_bytes),
        backend,
        table,
    };
    let mut service = Service::new("Pylon admin API".into(), app);
    service.add_tcp(&addr.to_string());
    service.threads = Some(1);
    info!("admin API on http://{addr}/apisix/admin/");
    Ok(service)
}

/// Where the admin API reads and writes.
enum Backend {
    /// The resources file.
    File(Arc<Api>),
    /// etcd.
    Etcd(Arc<EtcdApi>),
}

/// The admin HTTP application; see the module documentation.
pub struct AdminApp {
    key: Option<Vec<u8>>,
    backend: Backend,
    /// The table the proxy serves from, for `upstreams/<id>/probe` and `status`.
    table: Arc<arc_swap::ArcSwap<crate::table::Table>>,
}

/// Whether the request's `X-API-KEY` value `given` is the configured `key` (constant time in
/// the key's content). Without a configured key every request passes.
fn authorized(key: Option<&[u8]>, given: Option<&[u8]>) -> bool {
    match (key, given) {
        (None, _) => true,
        (Some(k), Some(g)) => bool::from(k.ct_eq(g)),
        (Some(_), None) => false,
    }
}

/// What an admin request asks for.
#[derive(Debug, PartialEq)]
enum Target {
    OpenApi,
    Object(Kind, Op),
    /// `GET status` (Pylon extension, [`status`]).
    Status,
    /// `POST certificates/inspect` (Pylon extension, [`status`]).
    Inspect(Value),
    /// `GET upstreams/<id>/probe`.
    Probe(String),
}

/// Maps a request to an operation. `json_patch` is true for
/// `Content-Type: application/json-patch+json`.
fn route(method: &Method, path: &str, body: Value, json_patch: bool) -> Result<Target, AdminError> {
    let rest = path
        .strip_prefix("/apisix/admin/")
        .ok_or_else(|| AdminError::NotFound(format!("{path}: not an admin API path")))?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["openapi.json"]) => return Ok(Target::OpenApi),
        ("GET", ["status"]) => return Ok(Target::Status),
        ("POST", ["certificates", "inspect"]) => return Ok(Target::Inspect(body)),
        _ => {}
    }
    let kind = parts
        .first()
        .and_then(|s| Kind::from_segment(s))
        .ok_or_else(|| AdminError::NotFound(format!("{path}: unknown resource kind")))?;
    let id = parts.get(1).map(|s| s.to_string());
    if let (Kind::Upstreams, Some(id), [_, _, "probe"]) = (kind, &id, parts.as_slice()) {
        if method == Method::GET {
            return Ok(Target::Probe(id.clone()));
        }
    }
    let sub = parts
        .get(2..)
        .filter(|p| !p.is_empty())
        .map(|p| p.join("/"));
    let unsupported =
        || AdminError::MethodNotAllowed(format!("{method} is not supported on {path}"));
    let op = match (method.as_str(), id, sub) {
        ("GET", None, None) => Op::List,
        ("GET", Some(id), None) => Op::Get(id),
        ("PUT", id, None) => Op::Put(id, body),
        ("POST", None, None) => Op::Post(body),
        ("PATCH", Some(id), None) if json_patch => Op::Patch(id, PatchKind::JsonPatch, body),
        ("PATCH", Some(id), None) => Op::Patch(id, PatchKind::Merge, body),
        ("PATCH", Some(id), Some(sub)) => {
            Op::Patch(id, PatchKind::SubPath(format!("/{sub}")), body)
        }
        ("DELETE", Some(id), None) => Op::Delete(id),
        _ => return Err(unsupported()),
    };
    Ok(Target::Object(kind, op))
}

fn respond(status: u16, ctype: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    crate::ops::http_response(status, ctype, body)
}

fn json_response(status: u16, body: &Value) -> Response<Vec<u8>> {
    respond(status, "application/json", body.to_string().into_bytes())
}

fn error_response(e: &AdminError) -> Response<Vec<u8>> {
    json_response(e.status(), &json!({"error_msg": e.to_string()}))
}

/// Reads the whole request body, up to [`MAX_BODY`] bytes.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(json_response(
                        413,
                        &json!({"error_msg": format!("request body over {MAX_BODY} bytes")}),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(error_response(&AdminError::BadRequest(format!(
                    "cannot read the request body: {e}"
                ))))
            }
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // Pipelined requests are answered in order (RFC 9112 §9.3.2).
        session.set_pipelining_enabled(true);
        let req = session.req_header();
        if ui::is_ui_path(req.uri.path()) {
            // The dashboard's files hold nothing secret: served without the key, which the
            // page then sends with every admin API call.
            let etag = req.headers.get(http::header::IF_NONE_MATCH);
            return ui::serve(
                &req.method,
                req.uri.path(),
                etag.and_then(|v| v.to_str().ok()),
            );
        }
        let given = req.headers.get("x-api-key").map(|v| v.as_bytes());
        if !authorized(self.key.as_deref(), given) {
            // APISIX's message for a missing or wrong key.
            return json_response(401, &json!({"error_msg": "failed to check token"}));
        }
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let header = |name| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.to_ascii_lowercase())
                .unwrap_or_default()
        };
        let json_patch =
            header(http::header::CONTENT_TYPE).starts_with("application/json-patch+json");
        if header(http::header::EXPECT) == "100-continue" {
            // curl waits for this before sending a body over 1 KiB.
            if let Ok(h) = ResponseHeader::build(100, None) {
                let _ = session.write_response_header(Box::new(h)).await;
            }
        }
        let raw = match read_body(session).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let body = if raw.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            match serde_json::from_slice(&raw) {
                Ok(v) => v,
                Err(e) => {
                    let e =
                        AdminError::BadRequest(format!("invalid JSON in the request body: {e}"));
                    return error_response(&e);
                }
            }
        };
        let (kind, op) = match route(&method, &path, body, json_patch) {
            Ok(Target::OpenApi) => {
                return respond(200, "application/json", OPENAPI.as_bytes().to_vec())
            }
            Ok(Target::Object(kind, op)) => (kind, op),
            Ok(Target::Status) => return self.status().await,
            Ok(Target::Inspect(body)) => return status::inspect_response(body),
            Ok(Target::Probe(id)) => return self.probe(&id).await,
            Err(e) => return error_response(&e),
        };
        let what = format!("{method} {path}");
        let result = match &self.backend {
            Backend::Etcd(api) => api.run(kind, op, &what).await,
            Backend::File(api) => {
                let api = api.clone();
                // Changes take the reload lock, write and fsync: off the async threads.
                match op {
                    Op::List | Op::Get(_) => api.run(kind, op, &what),
                    op => tokio::task::spawn_blocking(move || api.run(kind, op, &what))
                        .await
                        .unwrap_or_else(|e| {
                            Err(AdminError::Internal(format!("admin task failed: {e}")))
                        }),
                }
            }
        };
        match result {
            Ok((status, body)) => json_response(status, &body),
            Err(e) => error_response(&e),
        }
    }
}

impl AdminApp {
    /// `GET upstreams/<id>/probe`: the upstream as the API holds it (404 if none), probed
    /// off the async threads.
    async fn probe(&self, id: &str) -> Response<Vec<u8>> {
        let what = format!("GET /apisix/admin/upstreams/{id}");
        let got = match &self.backend {
            Backend::Etcd(api) => api.run(Kind::Upstreams, Op::Get(id.into()), &what).await,
            Backend::File(api) => api.run(Kind::Upstreams, Op::Get(id.into()), &what),
        };
        let item = match got {
            Ok((_, item)) => item,
            Err(e) => return error_response(&e),
        };
        let (table, id) = (self.table.load_full(), id.to_string());
        let report = tokio::task::spawn_blocking(move || {
            crate::diagnose::admin_report(&table, &id, &item["value"])
        })
        .await;
        match report {
            Ok(Ok(r)) => json_response(200, &serde_json::to_value(r).unwrap_or_default()),
            Ok(Err(e)) => error_response(&AdminError::NotFound(e.to_string())),
            Err(e) => error_response(&AdminError::Internal(format!("probe failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(listen: &str, key: Option<&str>) -> model::Admin {
        model::Admin {
            listen: listen.into(),
            api_key: key.map(Into::into),
        }
    }

    #[test]
    fn a_long_enough_key_is_always_needed() {
        let key = "edd1c9f034335f136f87ad84b625c8f1";
        assert!(check_static(&admin("127.0.0.1:9180", Some(key))).is_empty());
        assert!(check_static(&admin("0.0.0.0:9180", Some(key))).is_empty());
        let short = [
            ("127.0.0.1:9180", None),
            ("9180", Some("short")),
            ("[::1]:1", Some(" ")),
        ];
        for (listen, k) in short {
            let p = check_static(&admin(listen, k));
            assert_eq!(p[0].path, "gateway.admin.api_key", "{listen} {k:?}");
        }
        assert_eq!(
            check_static(&admin("nope", Some(key)))[0].path,
            "gateway.admin.listen"
        );
    }

    #[test]
    fn routing() {
        let r = |m: Method, p: &str, jp| route(&m, p, Value::Null, jp);
        assert_eq!(
            r(Method::GET, "/apisix/admin/routes", false).unwrap(),
            Target::Object(Kind::Routes, Op::List)
        );
        assert_eq!(
            r(Method::GET, "/apisix/admin/ca_certificates/x/", false).unwrap(),
            Target::Object(Kind::CaCertificates, Op::Get("x".into()))
        );
        assert_eq!(
            r(Method::PATCH, "/apisix/admin/services/s", true).unwrap(),
            Target::Object(
                Kind::Services,
                Op::Patch("s".into(), PatchKind::JsonPatch, Value::Null)
            )
        );
        assert_eq!(
            r(
                Method::PATCH,
                "/apisix/admin/routes/1/upstream/nodes",
                false
            )
            .unwrap(),
            Target::Object(
                Kind::Routes,
                Op::Patch(
                    "1".into(),
                    PatchKind::SubPath("/upstream/nodes".into()),
                    Value::Null
                )
            )
        );
        assert_eq!(
            r(Method::GET, "/apisix/admin/openapi.json", false).unwrap(),
            Target::OpenApi
        );
        assert_eq!(
            r(Method::DELETE, "/apisix/admin/routes", false)
                .unwrap_err()
                .status(),
            405
        );
        assert_eq!(
            r(Method::GET, "/apisix/admin/consumers", false).unwrap(),
            Target::Object(Kind::Consumers, Op::List)
        );
        assert_eq!(
            r(Method::DELETE, "/apisix/admin/consumers/jack", false).unwrap(),
            Target::Object(Kind::Consumers, Op::Delete("jack".into()))
        );
        assert_eq!(
            r(Method::PUT, "/apisix/admin/global_rules/1", false).unwrap(),
            Target::Object(Kind::GlobalRules, Op::Put(Some("1".into()), Value::Null))
        );
        assert_eq!(
            r(Method::GET, "/apisix/admin/consumer_groups", false)
                .unwrap_err()
                .status(),
            404
        );
        assert_eq!(r(Method::GET, "/metrics", false).unwrap_err().status(), 404);
        assert_eq!(
            r(Method::GET, "/apisix/admin/status", false).unwrap(),
            Target::Status
        );
        assert_eq!(
            r(Method::POST, "/apisix/admin/certificates/inspect", false).unwrap(),
            Target::Inspect(Value::Null)
        );
        assert_eq!(
            r(Method::GET, "/apisix/admin/certificates/inspect", false)
                .unwrap_err()
                .status(),
            404
        );
        assert_eq!(
            r(Method::GET, "/apisix/admin/upstreams/u1/probe", false).unwrap(),
            Target::Probe("u1".into())
        );
        assert_eq!(
            r(Method::POST, "/apisix/admin/upstreams/u1/probe", false)
                .unwrap_err()
                .status(),
            405
        );
    }

    #[test]
    fn key_check() {
        let key: Option<&[u8]> = Some(b"secret");
        assert!(authorized(key, Some(b"secret")));
        assert!(!authorized(key, Some(b"secreT")));
        assert!(!authorized(key, Some(b"")));
        assert!(!authorized(key, None));
        assert!(authorized(None, None));
    }

    #[test]
    fn openapi_is_json_and_lists_every_kind() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let text = OPENAPI;
        for kind in Kind::ALL {
            assert!(text.contains(kind.segment()), "{}", kind.segment());
        }
    }
}
