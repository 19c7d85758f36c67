//! Secrets at rest in etcd, encrypted as Apache APISIX does (`data_encryption.keyring`):
//! AES-128-CBC with PKCS#7 padding, the key and the IV both the keyring entry's 16 bytes, the
//! result base64 encoded. Reading tries every entry in turn, so a keyring can be rotated by
//! putting the new entry first. The same stored value can be read by APISIX and by Pylon when
//! both have the same keyring.
//!
//! Two families of fields, with APISIX's rules for each:
//!
//! - **Private keys** (`apisix/ssl.lua`): ssls `key` and `keys[]`; upstream `tls.client_key`
//!   (named upstreams and the inline ones of routes and services). Only PEM text
//!   (`-----BEGIN …`) is encrypted. On read, PEM text and paths are used as they are; a value
//!   that looks encrypted and that no entry decrypts is an error for the item.
//! - **Plugin secrets** (`apisix/plugin.lua` `encrypt_conf` / `decrypt_conf`): the
//!   `encrypt_fields` of each plugin in the `plugins` of routes, services, plugin configs,
//!   global rules and consumers ([`crate::config::secrets`]: key-auth `key`, basic-auth
//!   `password`, jwt-auth `secret`, limit-count `redis_password`, …). Any text is encrypted.
//!   Both directions happen only with `enable_encrypt_fields` on (APISIX's gate); on read, a
//!   value that no entry decrypts is kept as stored (APISIX does the same), so credentials
//!   written in clear keep working.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use openssl::symm::{decrypt, encrypt, Cipher};
use serde_json::Value;

use crate::config::kind::Kind;
use crate::config::model::DataEncryption;
use crate::config::secrets::{self, Use};
use crate::config::Problem;

/// APISIX's default keyring entry (`conf/config-default.yaml`), for the hint given when a key
/// looks encrypted and no keyring is configured.
pub const APISIX_DEFAULT_KEYRING: &str = "qeddd145sfvddff3";

/// The keyring of `gateway.data_encryption`.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<[u8; 16]>,
    encrypt: bool,
}

/// Checks `gateway.data_encryption.keyring`: every entry exactly 16 bytes.
pub fn check_static(d: &DataEncryption) -> Vec<Problem> {
    d.keyring
        .iter()
        .enumerate()
        .filter(|(_, k)| k.len() != 16)
        .map(|(i, k)| {
            Problem::new(
                format!("gateway.data_encryption.keyring[{i}]"),
                format!("must be 16 bytes (AES-128), not {}", k.len()),
            )
        })
        .collect()
}

fn looks_encrypted(s: &str) -> bool {
    let s = s.trim();
    s.len() >= 24
        && s.len().is_multiple_of(4)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

impl Keyring {
    /// The keyring of `d` (entries of another length than 16 are left out; `pylon check`
    /// reports them).
    pub fn new(d: &DataEncryption) -> Keyring {
        let keys = d
            .keyring
            .iter()
            .filter_map(|k| <[u8; 16]>::try_from(k.as_bytes()).ok())
            .collect();
        Keyring {
            keys,
            encrypt: d.enable_encrypt_fields,
        }
    }

    /// `pem` encrypted with the first entry, or unchanged when encryption is off, the keyring
    /// is empty or `pem` is not PEM text (already encrypted, or a path).
    pub fn encrypt(&self, pem: &str) -> String {
        let Some(k) = self.keys.first().filter(|_| self.encrypt) else {
            return pem.to_string();
        };
        if !pem.starts_with("---") {
            return pem.to_string();
        }
        match encrypt(Cipher::aes_128_cbc(), k, Some(k), pem.as_bytes()) {
            Ok(bytes) => STANDARD.encode(bytes),
            Err(_) => pem.to_string(),
        }
    }

    /// The PEM text of a stored value: PEM text and paths as they are; base64 decrypted with
    /// the first entry that works.
    ///
    /// Errors: a value that looks encrypted but no entry decrypts (or there is no keyring).
    pub fn decrypt(&self, stored: &str) -> Result<String, String> {
        if stored.starts_with("---") || !looks_encrypted(stored) {
            return Ok(stored.to_string());
        }
        if self.keys.is_empty() {
            return Err(format!(
                "looks encrypted, and gateway.data_encryption.keyring is empty (APISIX's \
                 default keyring is [{APISIX_DEFAULT_KEYRING}])"
            ));
        }
        let bytes = STANDARD
            .decode(stored.trim())
            .map_err(|e| format!("not PEM and not base64: {e}"))?;
        self.keys
            .iter()
            .filter_map(|k| decrypt(Cipher::aes_128_cbc(), k, Some(k), &bytes).ok())
            .find_map(|plain| String::from_utf8(plain).ok())
            .ok_or_else(|| {
                "cannot be decrypted with any gateway.data_encryption.keyring entry".into()
            })
    }

    /// The first entry, when plugin secrets are to be encrypted and decrypted
    /// (`enable_encrypt_fields` on and a keyring).
    fn secrets_key(&self) -> Option<&[u8; 16]> {
        self.keys.first().filter(|_| self.encrypt)
    }

    /// `text` (a plugin secret, any text) encrypted with the first entry, or unchanged when
    /// encryption is off or the keyring is empty (APISIX's `data_encryption.encrypt`).
    pub fn encrypt_secret(&self, text: &str) -> String {
        let Some(k) = self.secrets_key() else {
            return text.to_string();
        };
        match encrypt(Cipher::aes_128_cbc(), k, Some(k), text.as_bytes()) {
            Ok(bytes) => STANDARD.encode(bytes),
            Err(_) => text.to_string(),
        }
    }

    /// The plain text of a stored plugin secret: decrypted with the first entry that yields
    /// UTF-8 text, else `None` (not base64 of whole AES blocks, or no entry fits: APISIX then
    /// keeps the value as stored). `None` as well when encryption is off or the keyring is
    /// empty.
    pub fn decrypt_secret(&self, stored: &str) -> Option<String> {
        self.secrets_key()?;
        let bytes = STANDARD.decode(stored).ok()?;
        if bytes.is_empty() || !bytes.len().is_multiple_of(16) {
            return None;
        }
        self.keys
            .iter()
            .filter_map(|k| decrypt(Cipher::aes_128_cbc(), k, Some(k), &bytes).ok())
            .find_map(|plain| String::from_utf8(plain).ok())
    }

    /// Encrypts the secret fields of an object of `kind` in place: private keys (PEM text
    /// only) and plugin secrets (see the module documentation). The value must hold them in
    /// clear: an encrypted value would be encrypted again.
    pub fn encrypt_fields(&self, kind: Kind, value: &mut Value) {
        for_each_key(kind, value, &mut |_, s| {
            *s = self.encrypt(s);
            Ok(())
        })
        .unwrap_or(());
        if self.secrets_key().is_some() {
            let _ = secrets::for_each::<()>(kind, value, Use::Encrypt, &mut |_, s| {
                *s = self.encrypt_secret(s);
                Ok(())
            });
        }
    }

    /// Decrypts the secret fields of an object of `kind` in place: private keys, and plugin
    /// secrets (kept as stored when they do not decrypt).
    ///
    /// Errors: the private-key field that cannot be decrypted.
    pub fn decrypt_fields(&self, kind: Kind, value: &mut Value) -> Result<(), Problem> {
        for_each_key(kind, value, &mut |path, s| {
            *s = self.decrypt(s).map_err(|m| Problem::new(path, m))?;
            Ok(())
        })?;
        self.decrypt_plugin_secrets(kind, value);
        Ok(())
    }

    /// Decrypts the plugin secrets of an object of `kind` in place; those that do not
    /// decrypt are kept as stored.
    pub fn decrypt_plugin_secrets(&self, kind: Kind, value: &mut Value) {
        if self.secrets_key().is_some() {
            let _ = secrets::for_each::<()>(kind, value, Use::Read, &mut |_, s| {
                if let Some(plain) = self.decrypt_secret(s) {
                    *s = plain;
                }
                Ok(())
            });
        }
    }
}

type Visit<'a> = dyn FnMut(String, &mut String) -> Result<(), Problem> + 'a;

/// Calls `f` with the path and text of every private-key field of an object of `kind`.
fn for_each_key(kind: Kind, value: &mut Value, f: &mut Visit) -> Result<(), Problem> {
    let upstream_tls = |up: Option<&mut Value>, prefix: &str, f: &mut Visit| {
        if let Some(Value::String(s)) = up
            .and_then(|u| u.get_mut("tls"))
            .and_then(|t| t.get_mut("client_key"))
        {
            f(format!("{prefix}tls.client_key"), s)?;
        }
        Ok(())
    };
    match kind {
        Kind::Ssls => {
            if let Some(Value::String(s)) = value.get_mut("key") {
                f("key".into(), s)?;
            }
            if let Some(Value::Array(keys)) = value.get_mut("keys") {
                for (i, k) in keys.iter_mut().enumerate() {
                    if let Value::String(s) = k {
                        f(format!("keys[{i}]"), s)?;
                    }
                }
            }
            Ok(())
        }
        Kind::Upstreams => upstream_tls(Some(value), "", f),
        Kind::Routes | Kind::Services => upstream_tls(value.get_mut("upstream"), "upstream.", f),
        Kind::CaCertificates | Kind::Consumers | Kind::PluginConfigs | Kind::GlobalRules => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ring(keys: &[&str]) -> Keyring {
        Keyring::new(&DataEncryption {
            enable_encrypt_fields: true,
            keyring: keys.iter().map(|k| k.to_string()).collect(),
        })
    }

    /// Key-like text (built at run time: no PEM key block stands in the source).
    fn pem() -> String {
        let kind = "PRIVATE KEY";
        format!("-----BEGIN {kind}-----\nMIIB\n-----END {kind}-----\n")
    }

    #[test]
    fn matches_openssl_enc() {
        // Known answer from `openssl enc -aes-128-cbc -K <hex of the entry> -iv <same> -a -A`,
        // which is what APISIX's resty.aes produces for this keyring entry.
        let r = ring(&[APISIX_DEFAULT_KEYRING]);
        let enc = r.encrypt(&pem());
        assert_eq!(
            enc,
            "VMF7ACvwvQk6t8kvorP2IMA8qQc0uIj+MjJ7e5iQXYx9M2MdNA/QE7BiiU0AinQmHxLCNs7WBktBgpFQdHtI5w=="
        );
        assert_eq!(r.decrypt(&enc).unwrap(), pem());
        assert_eq!(r.encrypt("hello"), "hello", "only PEM text is encrypted");
    }

    #[test]
    fn plugin_secrets_match_openssl_enc() {
        // Known answer: `printf auth-one | openssl enc -aes-128-cbc -K <hex> -iv <hex> -a -A`
        // with APISIX's default keyring entry, which is what APISIX stores for a key-auth key.
        let r = ring(&[APISIX_DEFAULT_KEYRING]);
        assert_eq!(r.encrypt_secret("auth-one"), "4y+JvURBE6ZwRbbgaryrhg==");
        assert_eq!(
            r.decrypt_secret("4y+JvURBE6ZwRbbgaryrhg==").as_deref(),
            Some("auth-one")
        );
        // Not encrypted, or with another keyring: None (kept as stored by the caller).
        assert_eq!(r.decrypt_secret("auth-one"), None);
        assert_eq!(r.decrypt_secret("edd1c9f034335f136f87ad84b625c8f1"), None);
        assert_eq!(
            ring(&["0123456789abcdef"]).decrypt_secret("4y+JvURBE6ZwRbbgaryrhg=="),
            None
        );
        // Off: neither direction.
        let off = Keyring::new(&DataEncryption {
            enable_encrypt_fields: false,
            keyring: vec![APISIX_DEFAULT_KEYRING.into()],
        });
        assert_eq!(off.encrypt_secret("auth-one"), "auth-one");
        assert_eq!(off.decrypt_secret("4y+JvURBE6ZwRbbgaryrhg=="), None);
    }

    #[test]
    fn plugin_secret_fields() {
        let r = ring(&["0123456789abcdef"]);
        let mut c = json!({"username": "jack", "plugins": {
            "key-auth": {"key": "auth-one"},
            "basic-auth": {"username": "jack", "password": "pw"},
            "limit-count": {"count": 2, "time_window": 60, "redis_password": "rp"}}});
        let clear = c.clone();
        r.encrypt_fields(Kind::Consumers, &mut c);
        // `printf auth-one | openssl enc -aes-128-cbc -K 3031…6566 -iv 3031…6566 -a -A`
        assert_eq!(c["plugins"]["key-auth"]["key"], "vXsdHx8Wcc8WHw9xMPtmYQ==");
        assert_ne!(c["plugins"]["basic-auth"]["password"], "pw");
        assert_eq!(c["plugins"]["basic-auth"]["username"], "jack");
        assert_ne!(c["plugins"]["limit-count"]["redis_password"], "rp");
        r.decrypt_fields(Kind::Consumers, &mut c).unwrap();
        assert_eq!(c, clear);
        // A credential stored in clear stays as it is.
        let mut plain = clear.clone();
        r.decrypt_fields(Kind::Consumers, &mut plain).unwrap();
        assert_eq!(plain, clear);
        // On a route the key-auth map holds no credential; limit-count's password is one.
        let mut route = json!({"plugins": {"limit-count": {"redis_password": "rp"}}});
        r.encrypt_fields(Kind::Routes, &mut route);
        assert_ne!(route["plugins"]["limit-count"]["redis_password"], "rp");
    }

    #[test]
    fn rotation_and_failures() {
        let old = ring(&["0123456789abcdef"]);
        let enc = old.encrypt(&pem());
        let rotated = ring(&["fedcba9876543210", "0123456789abcdef"]);
        assert_eq!(rotated.decrypt(&enc).unwrap(), pem());
        assert!(ring(&["fedcba9876543210"]).decrypt(&enc).is_err());
        let e = ring(&[]).decrypt(&enc).unwrap_err();
        assert!(e.contains(APISIX_DEFAULT_KEYRING), "{e}");
        assert_eq!(
            ring(&[]).decrypt("../certs/client.key").unwrap(),
            "../certs/client.key"
        );
    }

    #[test]
    fn fields() {
        let r = ring(&["0123456789abcdef"]);
        let mut ssl = json!({"cert": "c", "key": pem(), "keys": [pem()]});
        r.encrypt_fields(Kind::Ssls, &mut ssl);
        assert!(!ssl.to_string().contains("PRIVATE"));
        r.decrypt_fields(Kind::Ssls, &mut ssl).unwrap();
        assert_eq!(ssl["keys"][0], pem());
        let mut route = json!({"upstream": {"tls": {"client_key": pem()}}});
        r.encrypt_fields(Kind::Routes, &mut route);
        assert!(!route.to_string().contains("PRIVATE"));
        let mut bad = json!({"key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"});
        let p = r.decrypt_fields(Kind::Ssls, &mut bad).unwrap_err();
        assert_eq!(p.path, "key");
        let d = DataEncryption {
            enable_encrypt_fields: true,
            keyring: vec!["short".into()],
        };
        assert_eq!(
            check_static(&d)[0].path,
            "gateway.data_encryption.keyring[0]"
        );
    }
}
