//! Property tests that fuzz what an outsider or an operator can feed Pylon: resources files
//! (YAML, then compile), etcd items (JSON, per-item build), admin API bodies (JSON, merge
//! patch, JSON Patch), request paths (normalization and the ambiguous-path check), PEM text
//! and encrypted keys. Inputs are random, or seeds from `tests/fuzz-corpus/` mutated at
//! random bytes. Each property must hold without a panic.
//!
//! `cargo test --test fuzz` runs 256 cases per property; `.ci/run` runs more
//! (`PROPTEST_CASES`); a long run: `PROPTEST_CASES=200000 cargo test --release --test fuzz`.
//! A failing case is shrunk and saved in `tests/fuzz.proptest-regressions` (commit it: it
//! is replayed first from then on).

use std::path::Path;

use proptest::prelude::*;
use pylon::admin::api::{plan, Op, PatchKind};
use pylon::admin::store::{Doc, Kind};
use pylon::config::items::Items;
use pylon::router::{ambiguous_path, normalize_path};
use serde_json::Value;

/// The PEM label of a private key (kept out of literal PEM blocks in the source).
const KEY: &str = "PRIVATE KEY";

fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz-corpus")
            .join(name),
    )
    .unwrap()
}

/// A seed with up to 8 bytes replaced, inserted or removed at random places.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    prop::collection::vec((0..len, any::<u8>(), 0u8..3), 0..8).prop_map(move |edits| {
        let mut s = seed.clone();
        for (at, byte, how) in edits {
            let at = at.min(s.len());
            match how {
                0 if at < s.len() => s[at] = byte,
                1 => s.insert(at, byte),
                _ if at < s.len() => {
                    s.remove(at);
                }
                _ => {}
            }
        }
        s
    })
}

/// Arbitrary JSON values, a few levels deep, with keys the model knows mixed in.
fn json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("id".to_string()),
        Just("uri".to_string()),
        Just("upstream".to_string()),
        Just("nodes".to_string()),
        Just("tls".to_string()),
        Just("upstream_id".to_string()),
        Just("service_id".to_string()),
        Just("hosts".to_string()),
        Just("cert".to_string()),
        Just("key".to_string()),
        Just("type".to_string()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[ -~]{0,24}".prop_map(Value::String),
        Just(Value::String("/api/*".into())),
        Just(Value::String("127.0.0.1:1980".into())),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(Kind::ALL.to_vec())
}

fn compile_text(text: &[u8]) {
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let file = Path::new("fuzz.yaml");
    if let Ok(res) = pylon::config::parse_yaml::<pylon::config::Resources>(file, text) {
        let _ = pylon::config::compile(&res, Path::new("."));
    }
    let _ = Doc::parse(text.as_bytes());
}

proptest! {
    #[test]
    fn resources_files_never_panic(text in mutated(corpus("resources-apisix.yaml"))) {
        compile_text(&text);
    }

    #[test]
    fn founding_file_mutations_never_panic(text in mutated(corpus("resources-founding.yaml"))) {
        compile_text(&text);
    }

    #[test]
    fn arbitrary_bytes_as_resources_never_panic(text in prop::collection::vec(any::<u8>(), 0..512)) {
        compile_text(&text);
    }

    #[test]
    fn etcd_items_never_panic(items in prop::collection::vec((kind(), "[a-z0-9]{1,4}", json()), 0..8)) {
        let mut set = Items::default();
        for (k, id, v) in &items {
            set.set(*k, id, v.clone());
        }
        let none = |_: Kind, _: &mut Value| Ok(());
        // Twice: the second build runs with applied values to fall back on.
        let _ = set.build(Path::new("."), &none);
        let _ = set.build(Path::new("."), &none);
    }

    #[test]
    fn admin_changes_never_panic(
        k in kind(),
        id in "[a-z0-9.]{1,6}",
        body in json(),
        patch in json(),
        seed in mutated(corpus("admin-put-route.json")),
        ops in mutated(corpus("admin-json-patch.json")),
    ) {
        let mut doc = Doc::default();
        if let Ok(v) = serde_json::from_slice::<Value>(&seed) {
            let mut v = v;
            if let Value::Object(m) = &mut v {
                m.insert("id".into(), Value::String(id.clone()));
            }
            doc.push(k, v);
        }
        let _ = plan(&doc, k, Op::Put(Some(id.clone()), body.clone()));
        let _ = plan(&doc, k, Op::Post(body));
        let _ = plan(&doc, k, Op::Patch(id.clone(), PatchKind::Merge, patch.clone()));
        let _ = plan(&doc, k, Op::Patch(id.clone(), PatchKind::SubPath("/upstream/nodes".into()), patch));
        if let Ok(ops) = serde_json::from_slice::<Value>(&ops) {
            let _ = plan(&doc, k, Op::Patch(id.clone(), PatchKind::JsonPatch, ops));
        }
        let _ = plan(&doc, k, Op::Delete(id));
    }

    #[test]
    fn paths_normalize_to_a_clean_fixed_point(path in prop_oneof![
        "/[a-z%./;\\\\0-9A-F]{0,40}",
        mutated(corpus("paths.txt")).prop_map(|b| format!("/{}", String::from_utf8_lossy(&b))),
    ]) {
        let once = normalize_path(&path);
        prop_assert!(once.starts_with('/'), "{path:?} -> {once:?}");
        prop_assert!(once.split('/').all(|s| s != "." && s != ".."), "{path:?} -> {once:?}");
        prop_assert!(!once.contains("//"), "{path:?} -> {once:?}");
        let _ = ambiguous_path(&path, &once);
        // Normalizing a normalized path changes nothing unless it still holds escapes.
        if !once.contains('%') {
            let twice = normalize_path(&once).into_owned();
            prop_assert_eq!(twice.as_str(), once.as_ref());
        }
    }

    #[test]
    fn pem_text_never_panics(text in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        "[ -~\n]{0,200}".prop_map(|s| format!("-----BEGIN CERTIFICATE-----\n{s}\n-----END CERTIFICATE-----\n").into_bytes()),
        "[A-Za-z0-9+/=\n]{0,300}".prop_map(|s| format!("-----BEGIN {KEY}-----\n{s}\n-----END {KEY}-----\n").into_bytes()),
    ], pass in proptest::option::of("[a-z]{0,8}")) {
        let pem = pylon::tls::PemSource { text, path: None };
        let _ = pylon::tls::parse_certs(&pem);
        let _ = pylon::tls::parse_key(&pem, pass.as_deref(), "key_passphrase");
    }

    #[test]
    fn stored_keys_never_panic(stored in "[A-Za-z0-9+/=-]{0,120}", ring in prop::collection::vec("[ -~]{16}", 0..3)) {
        let keyring = pylon::etcd::crypt::Keyring::new(&pylon::config::model::DataEncryption {
            enable_encrypt_fields: true,
            keyring: ring,
        });
        let _ = keyring.decrypt(&stored);
        let pem = format!("-----BEGIN {KEY}-----\n{stored}\n");
        if let Ok(back) = keyring.decrypt(&keyring.encrypt(&pem)) {
            prop_assert_eq!(back, pem);
        }
    }
}
