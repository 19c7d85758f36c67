//! The admin API's operations when the configuration lives in etcd
//! (`gateway.config_provider: etcd`).
//!
//! Reads answer from etcd. A change reads every object (one range read), works it out with
//! the same [`plan`] as the file-backed API, validates the whole configuration with the
//! change in it ([`Items::build`], per item as the watch does) and refuses it (400) when the
//! changed object, or any other object, would be skipped because of it. It then writes with a
//! transaction that compares the key's `mod_revision` with the one read: a concurrent writer
//! on any gateway makes the comparison fail, and the change is worked out again on the new
//! value (up to [`TRIES`] times, then 409), so no update is lost. POST ids are created only
//! if absent. The write is in etcd before the answer; the answer waits (up to
//! [`APPLY_WAIT`]) until this gateway serves it too. When etcd does not answer: 503, nothing
//! changed. Private keys and plugin secrets (a consumer's key-auth `key`, …) are encrypted
//! with the keyring before they are stored ([`Keyring::encrypt_fields`]; plugin secrets only
//! with `enable_encrypt_fields`, as APISIX) and never returned. Changes are worked out on
//! decrypted values, so a `PATCH` that leaves a credential alone keeps it.
//!
//! Consumers are keyed by username (`/apisix/consumers/<username>`). APISIX's consumer
//! credentials (`/apisix/consumers/<username>/credentials/<id>`) are not Pylon objects:
//! they are left out of lists.
//!
//! [`Keyring::encrypt_fields`]: crate::etcd::crypt::Keyring::encrypt_fields

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use log::info;
use serde_json::{json, Value};

use super::api::{check_kind_shape, not_found, plan, AdminError, Op, Planned, Reply};
use super::store::{redact, with_id, Doc, Kind};
use crate::config::items::{Items, Key, Skipped};
use crate::config::Problem;
use crate::etcd::{self, EtcdError};
use crate::ops::etcd_sync::EtcdSync;

/// Attempts of one change when other writers keep changing the same object.
pub const TRIES: usize = 20;
/// Longest wait for this gateway to apply an acknowledged write before answering.
pub const APPLY_WAIT: Duration = Duration::from_secs(3);

/// The admin API over etcd.
pub struct EtcdApi {
    sync: Arc<EtcdSync>,
    client: tokio::sync::Mutex<Option<Client>>,
    /// Changes through this gateway go one at a time (other gateways are kept apart by the
    /// revision comparison).
    writing: tokio::sync::Mutex<()>,
}

fn unavailable(e: EtcdError) -> AdminError {
    AdminError::Unavailable(format!("{e}: nothing was changed; retry when etcd answers"))
}

fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl EtcdApi {
    /// The API writing to the etcd `sync` watches.
    pub fn new(sync: Arc<EtcdSync>) -> EtcdApi {
        EtcdApi {
            sync,
            client: tokio::sync::Mutex::new(None),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// The etcd watcher this API writes through.
    pub fn sync(&self) -> &Arc<EtcdSync> {
        &self.sync
    }

    async fn client(&self) -> Result<Client, AdminError> {
        let mut c = self.client.lock().await;
        if let Some(client) = c.as_ref() {
            return Ok(client.clone());
        }
        let client = self.sync.settings().connect().await.map_err(unavailable)?;
        *c = Some(client.clone());
        Ok(client)
    }

    /// Runs `op` on `kind`; `what` names it in logs. Errors: see [`AdminError`].
    pub async fn run(&self, kind: Kind, op: Op, what: &str) -> Result<Reply, AdminError> {
        let result = self.run_inner(kind, op, what).await;
        if matches!(result, Err(AdminError::Unavailable(_))) {
            // A fresh connection next time: the client's own reconnection backs off for
            // minutes after a long outage.
            *self.client.lock().await = None;
        }
        result
    }

    async fn run_inner(&self, kind: Kind, op: Op, what: &str) -> Result<Reply, AdminError> {
        let s = self.sync.settings();
        let mut client = self.client().await?;
        match op {
            Op::List => {
                let opts = GetOptions::new().with_prefix();
                let prefix = format!("{}/{}/", s.prefix, kind.segment());
                let resp = s
                    .limit(client.get(prefix, Some(opts)))
                    .await
                    .map_err(unavailable)?;
                let list: Vec<Value> = resp
                    .kvs()
                    .iter()
                    .filter(|kv| {
                        let key = String::from_utf8_lossy(kv.key());
                        matches!(s.classify(&key), etcd::KeyClass::Item(k, _) if k == kind)
                    })
                    .map(|kv| {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        json!({"key": key, "value": redact(kind, &etcd::parse_value(kv.value()))})
                    })
                    .collect();
                Ok((200, json!({"total": list.len(), "list": list})))
            }
            Op::Get(id) => {
                let key = s.key(kind, &id);
                let resp = s
                    .limit(client.get(key.clone(), None))
                    .await
                    .map_err(unavailable)?;
                let kv = resp.kvs().first().ok_or_else(|| not_found(kind, &id))?;
                let value = with_id(kind, etcd::parse_value(kv.value()), &id);
                Ok((200, json!({"key": key, "value": redact(kind, &value)})))
            }
            op => {
                let _one_at_a_time = self.writing.lock().await;
                for attempt in 0..TRIES {
                    match self.try_change(&mut client, kind, op.clone()).await {
                        Ok(Some(reply)) => return Ok(reply),
                        Ok(None) => {
                            // Another gateway wrote the object meanwhile: let it finish.
                            let ms = rand::random_range(1..=10 * (attempt as u64 + 1));
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        Err(e) => {
                            info!("admin API: {what} refused ({}): {e}", e.status());
                            return Err(e);
                        }
                    }
                }
                Err(AdminError::Conflict(format!(
                    "{what}: the object kept changing under {TRIES} attempts; retry"
                )))
            }
        }
    }

    /// One attempt; `Ok(None)` when another writer changed the object meanwhile.
    async fn try_change(
        &self,
        client: &mut Client,
        kind: Kind,
        op: Op,
    ) -> Result<Option<Reply>, AdminError> {
        let s = self.sync.settings();
        let snap = s.read_all(client).await.map_err(unavailable)?;
        let keyring = self.sync.keyring();
        let mut doc = Doc::default();
        let mut items = Items::default();
        let mut revisions: HashMap<Key, i64> = HashMap::new();
        for it in snap.items {
            revisions.insert((it.kind, it.id.clone()), it.mod_revision);
            items.set(it.kind, &it.id, it.value.clone());
            // Plugin secrets in clear, so that a patch re-encrypts them once. Private keys
            // stay as stored: only PEM text is encrypted, so they are not encrypted twice.
            let mut v = with_id(it.kind, it.value, &it.id);
            keyring.decrypt_plugin_secrets(it.kind, &mut v);
            doc.push(it.kind, v);
        }
        let Planned { id, status, value } = plan(&doc, kind, op)?;
        if let Some(v) = &value {
            check_kind_shape(kind, v)?;
            check_upstream_exists(&doc, kind, v)?;
        }
        // What will be stored, validated as the watch will read it.
        let stored = value.as_ref().map(|v| {
            let mut stored = v.clone();
            keyring.encrypt_fields(kind, &mut stored);
            stored
        });
        let before = skipped_keys(&self.build(&mut items.clone())?);
        match &stored {
            Some(v) => items.set(kind, &id, v.clone()),
            None => items.remove(kind, &id),
        };
        let after = self.build(&mut items)?;
        refuse_breakage(s, &after, &before, kind, &id)?;

        let key = s.key(kind, &id);
        let seen = revisions.get(&(kind, id.clone())).copied().unwrap_or(0);
        let write = match stored {
            Some(v) => TxnOp::put(key.clone(), v.to_string(), None),
            None => TxnOp::delete(key.clone(), None),
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, seen)])
            .and_then([write]);
        let resp = s.limit(client.txn(txn)).await.map_err(unavailable)?;
        if !resp.succeeded() {
            return Ok(None);
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        self.wait_applied(revision).await;
        let body = match value {
            Some(v) => json!({"key": key, "value": redact(kind, &v)}),
            None => json!({"deleted": "1", "key": key}),
        };
        Ok(Some((status, body)))
    }

    fn build(&self, items: &mut Items) -> Result<Vec<Skipped>, AdminError> {
        let keyring = self.sync.keyring();
        let prepare = |kind: Kind, v: &mut Value| keyring.decrypt_fields(kind, v);
        items
            .build(self.sync.base(), &prepare)
            .map(|b| b.skipped)
            .map_err(|p| AdminError::Internal(problems_text(&p)))
    }

    /// Waits until this gateway serves etcd's `revision` (or [`APPLY_WAIT`] passed).
    async fn wait_applied(&self, revision: i64) {
        let mut rx = self.sync.applied_revision();
        let _ = tokio::time::timeout(APPLY_WAIT, rx.wait_for(|r| *r >= revision)).await;
    }
}

fn skipped_keys(skipped: &[Skipped]) -> BTreeSet<Key> {
    skipped.iter().map(|s| (s.kind, s.id.clone())).collect()
}

/// A route or service naming an upstream that does not exist is refused here (the watch
/// would serve it with 503s, which is right for concurrent writers, not for one request).
fn check_upstream_exists(doc: &Doc, kind: Kind, v: &Value) -> Result<(), AdminError> {
    if !matches!(kind, Kind::Routes | Kind::Services) {
        return Ok(());
    }
    let id = match v.get("upstream_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Ok(()),
    };
    if doc.get(Kind::Upstreams, &id).is_none() {
        return Err(AdminError::BadRequest(format!(
            "upstream_id: no upstream with id {id:?}"
        )));
    }
    Ok(())
}

/// Refuses a change that leaves its own object, or another one that was fine, skipped.
fn refuse_breakage(
    s: &etcd::Settings,
    after: &[Skipped],
    before: &BTreeSet<Key>,
    kind: Kind,
    id: &str,
) -> Result<(), AdminError> {
    let mut msgs = Vec::new();
    for sk in after {
        if sk.kind == kind && sk.id == id {
            msgs.insert(0, problems_text(&sk.problems));
        } else if !before.contains(&(sk.kind, sk.id.clone())) {
            msgs.push(format!(
                "{}: {}",
                s.key(sk.kind, &sk.id),
                problems_text(&sk.problems)
            ));
        }
    }
    if msgs.is_empty() {
        Ok(())
    } else {
        Err(AdminError::BadRequest(msgs.join("; ")))
    }
}
