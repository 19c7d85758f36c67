//! `request-id` (APISIX, priority 12015, rewrite phase): gives each request an id in the
//! `header_name` header (default `X-Request-Id`). An id the client sent (non-empty) is kept;
//! otherwise one is generated and set on the request to the upstream. With
//! `include_in_response` (default true) the id is also sent in the response, unless the
//! upstream's response already carries that header.
//!
//! `algorithm`: `uuid` (random UUID v4, the default), `uuidv7` (time-ordered UUID v7),
//! `nanoid` (21 characters of `-_0-9a-zA-Z`), `range_id` (`range_id.length` characters,
//! default 16, drawn from `range_id.char_set`) or `ksuid` (27 base-62 characters: a
//! timestamp and 128 random bits), as APISIX generates them.

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use rand::{Rng, RngCore};
use serde::Deserialize;
use serde_json::Value;

use super::registry::{parse, Env, PluginError, Spec};
use super::{stash_key, Flow, Phases, Plugin, PluginCtx};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "request-id",
    priority: 12015,
    compile,
    credential: None,
};

/// APISIX's default `range_id.char_set` (with its `IGK` as written there).
pub const DEFAULT_CHAR_SET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIGKLMNOPQRSTUVWXYZ0123456789";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "default_header")]
    header_name: String,
    #[serde(default = "yes")]
    include_in_response: bool,
    #[serde(default)]
    algorithm: Algorithm,
    #[serde(default)]
    range_id: RangeConf,
}

fn default_header() -> String {
    "X-Request-Id".into()
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Algorithm {
    #[default]
    Uuid,
    Uuidv7,
    Nanoid,
    RangeId,
    Ksuid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeConf {
    #[serde(default = "default_length")]
    length: usize,
    #[serde(default = "default_char_set")]
    char_set: String,
}

impl Default for RangeConf {
    fn default() -> Self {
        RangeConf {
            length: default_length(),
            char_set: default_char_set(),
        }
    }
}

fn default_length() -> usize {
    16
}

fn default_char_set() -> String {
    DEFAULT_CHAR_SET.into()
}

#[derive(Debug)]
struct RequestId {
    header: HeaderName,
    include_in_response: bool,
    algorithm: Algorithm,
    range_length: usize,
    range_chars: Vec<u8>,
}

/// The id of one request, kept from rewrite to the later phases.
struct Id {
    value: HeaderValue,
    generated: bool,
}

fn compile(v: &Value, _env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    let c: Conf = parse(v)?;
    let header = HeaderName::from_bytes(c.header_name.as_bytes()).map_err(|_| {
        PluginError::new(
            "header_name",
            format!("{:?} is not a valid header name", c.header_name),
        )
    })?;
    if c.range_id.length < 6 {
        return Err(PluginError::new("range_id.length", "must be >= 6"));
    }
    if c.range_id.char_set.len() < 6 {
        return Err(PluginError::new(
            "range_id.char_set",
            "must be at least 6 characters",
        ));
    }
    if !c.range_id.char_set.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PluginError::new(
            "range_id.char_set",
            "must be printable ASCII characters (they go into a header)",
        ));
    }
    Ok(Arc::new(RequestId {
        header,
        include_in_response: c.include_in_response,
        algorithm: c.algorithm,
        range_length: c.range_id.length,
        range_chars: c.range_id.char_set.into_bytes(),
    }))
}

/// nanoid's alphabet: 64 characters, so 6 random bits pick one without bias.
const NANOID_ALPHABET: &[u8; 64] =
    b"-_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// KSUID's epoch (2014-05-13T16:53:20Z) in Unix seconds.
const KSUID_EPOCH: u64 = 1_400_000_000;

/// A KSUID: 4 bytes of seconds since [`KSUID_EPOCH`] and 16 random bytes, as 27 base-62
/// digits (segmentio/ksuid's format).
fn ksuid(unix_secs: u64, random: [u8; 16]) -> String {
    let mut n = [0u8; 20];
    let ts = u32::try_from(unix_secs.saturating_sub(KSUID_EPOCH)).unwrap_or(u32::MAX);
    n[..4].copy_from_slice(&ts.to_be_bytes());
    n[4..].copy_from_slice(&random);
    let mut digits = [b'0'; 27];
    for d in digits.iter_mut().rev() {
        // n /= 62, keeping the remainder: long division over the big-endian bytes.
        let mut rem = 0u32;
        for byte in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*byte);
            *byte = (cur / 62) as u8;
            rem = cur % 62;
        }
        *d = BASE62[rem as usize];
    }
    String::from_utf8_lossy(&digits).into_owned()
}

impl RequestId {
    fn generate(&self) -> String {
        let mut rng = rand::rng();
        match self.algorithm {
            Algorithm::Uuid => uuid::Uuid::new_v4().to_string(),
            Algorithm::Uuidv7 => uuid::Uuid::now_v7().to_string(),
            Algorithm::Nanoid => {
                let mut bytes = [0u8; 21];
                rng.fill_bytes(&mut bytes);
                bytes
                    .iter()
                    .map(|b| char::from(NANOID_ALPHABET[usize::from(b & 63)]))
                    .collect()
            }
            Algorithm::RangeId => (0..self.range_length)
                .map(|_| char::from(self.range_chars[rng.random_range(0..self.range_chars.len())]))
                .collect(),
            Algorithm::Ksuid => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut random = [0u8; 16];
                rng.fill_bytes(&mut random);
                ksuid(secs, random)
            }
        }
    }
}

fn non_empty<'h>(headers: &'h http::HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    headers.get(name).filter(|v| !v.is_empty())
}

#[async_trait]
impl Plugin for RequestId {
    fn name(&self) -> &'static str {
        "request-id"
    }

    fn phases(&self) -> Phases {
        Phases {
            rewrite: true,
            upstream_request: true,
            response_header: self.include_in_response,
            ..Phases::default()
        }
    }

    fn rewrite(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        let id = match non_empty(&req.headers, &self.header) {
            Some(v) => Id {
                value: v.clone(),
                generated: false,
            },
            None => match HeaderValue::from_str(&self.generate()) {
                Ok(value) => Id {
                    value,
                    generated: true,
                },
                Err(_) => return Flow::Continue,
            },
        };
        cx.stash_put(stash_key(self), id);
        Flow::Continue
    }

    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        if let Some(id) = cx.stash_get::<Id>(stash_key(self)) {
            // An id already set (by an earlier request-id, a global rule's) is kept.
            if id.generated && non_empty(&req.headers, &self.header).is_none() {
                req.insert_header(self.header.clone(), id.value.clone())?;
            }
        }
        Ok(())
    }

    fn response_header(
        &self,
        resp: &mut ResponseHeader,
        cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        if let Some(id) = cx.stash_take::<Id>(stash_key(self)) {
            if non_empty(&resp.headers, &self.header).is_none() {
                resp.insert_header(self.header.clone(), id.value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(conf: Value) -> Arc<dyn Plugin> {
        let consumers = Vec::new();
        compile(&conf, &Env::new(&consumers)).unwrap()
    }

    /// The id the upstream would see for a request with `incoming` in X-Request-Id.
    fn upstream_id(p: &Arc<dyn Plugin>, name: &str, incoming: Option<&str>) -> String {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(v) = incoming {
            req.insert_header(name.to_string(), v).unwrap();
        }
        let mut cx = PluginCtx::default();
        p.rewrite(&req, &mut cx);
        p.upstream_request(&mut req, &mut cx).unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        if p.phases().response_header {
            p.response_header(&mut resp, &mut cx).unwrap();
        }
        let up = req.headers[name].to_str().unwrap().to_string();
        if p.phases().response_header {
            assert_eq!(resp.headers[name].to_str().unwrap(), up);
        } else {
            assert!(resp.headers.get(name).is_none());
        }
        up
    }

    #[test]
    fn ids_by_algorithm() {
        let p = build(json!({}));
        let id = upstream_id(&p, "x-request-id", None);
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(id, upstream_id(&p, "x-request-id", None));
        assert_eq!(upstream_id(&p, "x-request-id", Some("mine")), "mine");
        assert_ne!(upstream_id(&p, "x-request-id", Some("")), "");

        let p = build(
            json!({"algorithm": "uuidv7", "header_name": "X-Req-Identifier", "include_in_response": false}),
        );
        let id = upstream_id(&p, "x-req-identifier", None);
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

        let p = build(json!({"algorithm": "nanoid"}));
        let id = upstream_id(&p, "x-request-id", None);
        assert_eq!(id.len(), 21);
        assert!(id.bytes().all(|b| NANOID_ALPHABET.contains(&b)));

        let p = build(
            json!({"algorithm": "range_id", "range_id": {"length": 8, "char_set": "abcdef"}}),
        );
        let id = upstream_id(&p, "x-request-id", None);
        assert_eq!(id.len(), 8);
        assert!(id.bytes().all(|b| b"abcdef".contains(&b)));

        let p = build(json!({"algorithm": "ksuid"}));
        let id = upstream_id(&p, "x-request-id", None);
        assert_eq!(id.len(), 27);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn ksuid_matches_the_reference_encoding() {
        // segmentio/ksuid: the smallest and largest KSUIDs.
        assert_eq!(ksuid(KSUID_EPOCH, [0; 16]), "000000000000000000000000000");
        assert_eq!(
            ksuid(KSUID_EPOCH + u64::from(u32::MAX), [0xff; 16]),
            "aWgEPTl1tmebfsQzFP4bxwgy80V"
        );
    }

    #[test]
    fn bad_configurations_are_named() {
        let consumers = Vec::new();
        let env = Env::new(&consumers);
        for (conf, path) in [
            (json!({"header_name": "bad header"}), "header_name"),
            (json!({"algorithm": "snowflake"}), "algorithm"),
            (json!({"range_id": {"length": 5}}), "range_id.length"),
            (
                json!({"range_id": {"char_set": "abc"}}),
                "range_id.char_set",
            ),
        ] {
            assert_eq!(compile(&conf, &env).unwrap_err().path, path, "{conf}");
        }
    }
}
