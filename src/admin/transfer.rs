//! Moving a configuration between a resources file and etcd, and checking what etcd holds:
//! `pylon config push`, `pylon config dump` and `pylon check` with `config_provider: etcd`.

use std::path::Path;

use etcd_client::{Txn, TxnOp};
use serde_json::Value;

use super::store::{Doc, Kind};
use crate::config::items::{Items, Skipped};
use crate::config::{self, model, Compiled, ConfigError, Problem};
use crate::etcd::crypt::Keyring;
use crate::etcd::{EtcdError, Settings, Snapshot};

/// etcd's default `--max-txn-ops`: the most operations one transaction may hold.
pub const MAX_TXN_OPS: usize = 128;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The resources file does not load (every problem, one per line).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// etcd failed.
    #[error("{0}")]
    Etcd(#[from] EtcdError),
    /// Something else, in words.
    #[error("{0}")]
    Other(String),
}

fn settings(static_file: &model::StaticFile, static_path: &Path) -> Result<Settings, EtcdError> {
    let e = static_file.gateway.etcd.clone().unwrap_or_default();
    Settings::new(&e, &config::base_dir(static_path))
}

/// What `pylon check` found in etcd.
pub struct EtcdCheck {
    /// The compiled configuration of the items that apply.
    pub compiled: Compiled,
    /// Items that do not apply.
    pub skipped: Vec<Skipped>,
    /// The keys of the skipped items, in the same order.
    pub keys: Vec<String>,
    /// Revision read.
    pub revision: i64,
}

/// Reads etcd and validates every item, as a gateway would.
///
/// Errors: etcd unreachable, or items that cannot be compiled at all.
pub fn check(
    static_file: &model::StaticFile,
    static_path: &Path,
) -> Result<EtcdCheck, TransferError> {
    let s = settings(static_file, static_path)?;
    let snap = s.read_once()?;
    let keyring = Keyring::new(&static_file.gateway.data_encryption);
    let mut items = Items::default();
    items.resync(snap.items.into_iter().map(|i| (i.kind, i.id, i.value)));
    let prepare = |kind: Kind, v: &mut Value| keyring.decrypt_fields(kind, v);
    let built = items
        .build(&config::base_dir(static_path), &prepare)
        .map_err(|p| TransferError::Other(problems_text(&p)))?;
    let keys = built.skipped.iter().map(|k| s.key(k.kind, &k.id)).collect();
    Ok(EtcdCheck {
        compiled: built.compiled,
        skipped: built.skipped,
        keys,
        revision: snap.revision,
    })
}

fn problems_text(p: &[Problem]) -> String {
    p.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// PEM-valued fields of an object of `kind` that may hold a path: `(field, is_list)`, with
/// upstream `tls` fields reached through `upstream` for routes and services.
fn pem_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Ssls => &["/cert", "/key", "/certs", "/keys", "/client/ca"],
        Kind::CaCertificates => &["/cert"],
        Kind::Upstreams => &["/tls/client_cert", "/tls/client_key", "/tls/ca_certs"],
        Kind::Routes | Kind::Services => &[
            "/upstream/tls/client_cert",
            "/upstream/tls/client_key",
            "/upstream/tls/ca_certs",
        ],
        Kind::Consumers | Kind::PluginConfigs | Kind::GlobalRules => &[],
    }
}

/// Replaces every PEM path in `v` with the file's text (etcd is read from other machines).
fn inline_pems(kind: Kind, v: &mut Value, base: &Path, at: &str) -> Result<(), TransferError> {
    for pointer in pem_fields(kind) {
        let Some(field) = v.pointer_mut(pointer) else {
            continue;
        };
        let mut one = |s: &mut Value| -> Result<(), TransferError> {
            if let Value::String(text) = s {
                let pem = crate::tls::read_pem_field(text, base)
                    .map_err(|e| TransferError::Other(format!("{at}{pointer}: {e}")))?;
                *text = String::from_utf8_lossy(&pem.text).into_owned();
            }
            Ok(())
        };
        match field {
            Value::Array(list) => list.iter_mut().try_for_each(&mut one)?,
            other => one(other)?,
        }
    }
    Ok(())
}

/// Writes every object of the resources file `file` into etcd, after validating the file as
/// `pylon check` does. PEM paths are replaced with their content; private keys and plugin
/// secrets (consumer credentials, …) are encrypted with the keyring (see
/// [`Keyring::encrypt_fields`]). Consumers go to `consumers/<username>`. One transaction when it fits etcd's limit of [`MAX_TXN_OPS`] operations,
/// else consecutive ones. Returns (objects written, transactions, last revision).
///
/// Errors: the file does not load; etcd refuses or does not answer.
pub fn push(
    static_file: &model::StaticFile,
    static_path: &Path,
    file: &Path,
) -> Result<(usize, usize, i64), TransferError> {
    let s = settings(static_file, static_path)?;
    let res = config::load_resources(file)?;
    let base = config::base_dir(file);
    config::compile(&res, &base).map_err(|problems| ConfigError::Invalid {
        file: file.to_path_buf(),
        problems,
    })?;
    let text = std::fs::read(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let doc = Doc::parse(&text).map_err(TransferError::Other)?;
    let keyring = Keyring::new(&static_file.gateway.data_encryption);
    let mut ops = Vec::new();
    for kind in Kind::ALL {
        for (i, v) in doc.list(kind).iter().enumerate() {
            let at = format!("{}[{i}]", kind.segment());
            let id = super::store::id_text(kind, v).ok_or_else(|| {
                TransferError::Other(format!("{at}.{}: required in etcd", kind.id_field()))
            })?;
            let mut v = v.clone();
            inline_pems(kind, &mut v, &base, &at)?;
            keyring.encrypt_fields(kind, &mut v);
            ops.push(TxnOp::put(s.key(kind, &id), v.to_string(), None));
        }
    }
    let count = ops.len();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TransferError::Other(e.to_string()))?;
    rt.block_on(async {
        let mut client = s.connect().await?;
        let mut txns = 0;
        let mut revision = 0;
        for chunk in ops.chunks(MAX_TXN_OPS) {
            let resp = s
                .limit(client.txn(Txn::new().and_then(chunk.to_vec())))
                .await?;
            revision = resp.header().map_or(revision, |h| h.revision());
            txns += 1;
        }
        Ok((count, txns, revision))
    })
}

/// What etcd holds, as resources-file text. Private keys and plugin secrets (consumer
/// credentials, Redis passwords) are decrypted and kept, so that the dump is a backup that
/// `push` (or a gateway on the file) can load: treat it as a secret (`pylon config dump -o`
/// writes it with mode 0600).
///
/// Errors: etcd unreachable; a key that cannot be decrypted.
pub fn dump(
    static_file: &model::StaticFile,
    static_path: &Path,
) -> Result<(String, Snapshot), TransferError> {
    let s = settings(static_file, static_path)?;
    let snap = s.read_once()?;
    let keyring = Keyring::new(&static_file.gateway.data_encryption);
    let mut doc = Doc::default();
    for it in &snap.items {
        let mut v = super::store::with_id(it.kind, it.value.clone(), &it.id);
        keyring
            .decrypt_fields(it.kind, &mut v)
            .map_err(|p| TransferError::Other(format!("{}: {p}", s.key(it.kind, &it.id))))?;
        doc.push(it.kind, v);
    }
    let text = doc.render().map_err(TransferError::Other)?;
    Ok((text, snap))
}
