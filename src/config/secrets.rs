//! Plugin fields that hold secrets: APISIX's `encrypt_fields`, per plugin and schema.
//!
//! APISIX marks the secret fields of each plugin schema with `encrypt_fields` (a list of
//! dotted paths). With `apisix.data_encryption.enable_encrypt_fields` on and etcd as the
//! configuration store, the Admin API encrypts them before storing (`apisix/admin/plugins.lua`
//! `encrypt_conf`) and the gateway decrypts them when it loads an object (`apisix/plugin.lua`
//! `plugin_checker` → `decrypt_conf`), for the `plugins` of routes, services, plugin configs,
//! global rules and consumers. On a consumer the plugin's `consumer_schema` decides (falling
//! back to its `schema` when it has none); elsewhere its `schema`.
//!
//! Pylon uses the same lists for three things: encrypting what it writes to etcd and
//! decrypting what it reads ([`crate::etcd::crypt`]), and leaving these fields out of every
//! admin API answer (`crate::admin::store::redact`).
//!
//! Paths follow APISIX's `process_encrypt_field`: `a.b.c` walks objects, an array met on the
//! way is walked element by element, and the leaf may be a string, an array of strings or a
//! map of strings (each string is one secret).

use serde_json::{Map, Value};

use super::kind::Kind;

/// One plugin's secret fields.
struct Fields {
    /// APISIX's plugin name.
    plugin: &'static str,
    /// `encrypt_fields` of the plugin's `schema` (routes, services, plugin configs, global
    /// rules; consumers too when `consumer` is `None`).
    schema: &'static [&'static str],
    /// `encrypt_fields` of the plugin's `consumer_schema`, for plugins that have one.
    consumer: Option<&'static [&'static str]>,
    /// Consumer fields that older APISIX releases encrypted and that are secret: decrypted
    /// when read and never returned, but not encrypted on write (current APISIX reads them as
    /// stored). jwt-auth's `private_key` (encrypted before APISIX 3.11, #11597).
    legacy: &'static [&'static str],
}

const fn route(plugin: &'static str, schema: &'static [&'static str]) -> Fields {
    Fields {
        plugin,
        schema,
        consumer: None,
        legacy: &[],
    }
}

const fn auth(plugin: &'static str, consumer: &'static [&'static str]) -> Fields {
    Fields {
        plugin,
        schema: &[],
        consumer: Some(consumer),
        legacy: &[],
    }
}

/// APISIX's `encrypt_fields` (apisix/plugins/*.lua as of commit f519a0f), for every plugin that
/// has any, including those Pylon does not run: their secrets are still never returned.
static TABLE: &[Fields] = &[
    // Authentication plugins: the credential is on the consumer.
    auth("key-auth", &["key"]),
    auth("basic-auth", &["password"]),
    Fields {
        plugin: "jwt-auth",
        schema: &[],
        consumer: Some(&["secret"]),
        legacy: &["private_key"],
    },
    auth("hmac-auth", &["secret_key"]),
    auth("jwe-decrypt", &["key", "secret"]),
    Fields {
        plugin: "ldap-auth-advanced",
        schema: &["ldap_password"],
        consumer: Some(&[]),
        legacy: &[],
    },
    // Traffic plugins with a shared store.
    route("limit-count", &["redis_password", "sentinel_password"]),
    route("limit-req", &["redis_password"]),
    route("limit-conn", &["redis_password"]),
    route("ai-rate-limiting", &["redis_password", "sentinel_password"]),
    route(
        "graphql-limit-count",
        &[
            "redis_password",
            "sentinel_password",
            "introspection_headers",
        ],
    ),
    // Everything else APISIX encrypts.
    route("ai-aliyun-content-moderation", &["access_key_secret"]),
    route(
        "ai-aws-content-moderation",
        &["comprehend.secret_access_key"],
    ),
    route(
        "ai-cache",
        &[
            "redis_password",
            "semantic.embedding.openai.api_key",
            "semantic.embedding.azure_openai.api_key",
        ],
    ),
    route("ai-lakera-guard", &["api_key"]),
    route(
        "ai-proxy",
        &[
            "auth.header",
            "auth.query",
            "auth.gcp.service_account_json",
            "auth.aws.secret_access_key",
            "auth.aws.session_token",
        ],
    ),
    route(
        "ai-proxy-multi",
        &[
            "instances.auth.header",
            "instances.auth.query",
            "instances.auth.gcp.service_account_json",
            "instances.auth.aws.secret_access_key",
            "instances.auth.aws.session_token",
            "semantic_opts.embeddings.auth.header",
            "semantic_opts.embeddings.auth.query",
        ],
    ),
    route(
        "ai-rag",
        &[
            "embeddings_provider.azure_openai.api_key",
            "vector_search_provider.azure_ai_search.api_key",
        ],
    ),
    route("authz-casdoor", &["client_secret"]),
    route("authz-keycloak", &["client_secret"]),
    route(
        "aws-lambda",
        &[
            "authorization.apikey",
            "authorization.iam.accesskey",
            "authorization.iam.secretkey",
        ],
    ),
    route("azure-functions", &["authorization.apikey"]),
    route("cas-auth", &["cookie.secret"]),
    route("clickhouse-logger", &["password"]),
    route("csrf", &["key"]),
    route(
        "dingtalk-auth",
        &["app_secret", "secret", "secret_fallbacks"],
    ),
    route("elasticsearch-logger", &["auth.password", "headers"]),
    route("feishu-auth", &["app_secret", "secret", "secret_fallbacks"]),
    route("google-cloud-logging", &["auth_config.private_key"]),
    route("http-logger", &["auth_header"]),
    route("kafka-logger", &["brokers.sasl_config.password"]),
    route("kafka-proxy", &["sasl.password"]),
    route("lago", &["token"]),
    route("loggly", &["customer_token"]),
    route("loki-logger", &["headers"]),
    route("openfunction", &["authorization.service_token"]),
    route(
        "openid-connect",
        &[
            "client_secret",
            "client_rsa_private_key",
            "dpop.private_key",
            "session.secret",
            "session.redis.password",
        ],
    ),
    route("openwhisk", &["service_token"]),
    route("rocketmq-logger", &["secret_key"]),
    route(
        "saml-auth",
        &["sp_private_key", "secret", "secret_fallbacks"],
    ),
    route("sls-logger", &["access_key_secret"]),
    route("splunk-hec-logging", &["endpoint.token"]),
    route("tencent-cloud-cls", &["secret_key"]),
];

/// Which fields of a plugin are wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// What APISIX encrypts on write.
    Encrypt,
    /// What is decrypted on read and never returned: [`Use::Encrypt`]'s fields plus secret
    /// fields older APISIX releases encrypted.
    Read,
}

/// The secret fields of `plugin` as configured on an object of `kind` (consumers read the
/// plugin's consumer schema). Empty for plugins with none.
pub fn fields(plugin: &str, kind: Kind, what: Use) -> Vec<&'static str> {
    let Some(f) = TABLE.iter().find(|f| f.plugin == plugin) else {
        return Vec::new();
    };
    let on_consumer = kind == Kind::Consumers;
    let mut out: Vec<&'static str> = match f.consumer {
        Some(c) if on_consumer => c.to_vec(),
        _ => f.schema.to_vec(),
    };
    if on_consumer && what == Use::Read {
        out.extend_from_slice(f.legacy);
    }
    out
}

/// Whether objects of `kind` carry a `plugins` map.
pub fn has_plugins(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Routes | Kind::Services | Kind::Consumers | Kind::PluginConfigs | Kind::GlobalRules
    )
}

/// Calls `f` with `(path, text)` for each secret string in the `plugins` of `value` (an
/// object of `kind`); `path` is relative to the object (`plugins.key-auth.key`,
/// `plugins.http-logger.headers.Authorization`). `f` may change the text.
pub fn for_each<E>(
    kind: Kind,
    value: &mut Value,
    what: Use,
    f: &mut dyn FnMut(&str, &mut String) -> Result<(), E>,
) -> Result<(), E> {
    if !has_plugins(kind) {
        return Ok(());
    }
    let Some(Value::Object(plugins)) = value.get_mut("plugins") else {
        return Ok(());
    };
    for (name, conf) in plugins.iter_mut() {
        for path in fields(name, kind, what) {
            let at = format!("plugins.{name}.{path}");
            visit(conf, path, &at, f)?;
        }
    }
    Ok(())
}

fn visit<E>(
    conf: &mut Value,
    path: &str,
    at: &str,
    f: &mut dyn FnMut(&str, &mut String) -> Result<(), E>,
) -> Result<(), E> {
    let Value::Object(m) = conf else {
        return Ok(());
    };
    match path.split_once('.') {
        None => match m.get_mut(path) {
            Some(Value::String(s)) => f(at, s)?,
            Some(Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::String(s) = item {
                        f(&format!("{at}[{i}]"), s)?;
                    }
                }
            }
            Some(Value::Object(map)) => {
                for (k, v) in map.iter_mut() {
                    if let Value::String(s) = v {
                        f(&format!("{at}.{k}"), s)?;
                    }
                }
            }
            _ => {}
        },
        Some((segment, rest)) => match m.get_mut(segment) {
            Some(Value::Array(items)) => {
                for item in items.iter_mut() {
                    visit(item, rest, at, f)?;
                }
            }
            Some(v @ Value::Object(_)) => visit(v, rest, at, f)?,
            _ => {}
        },
    }
    Ok(())
}

/// Removes every secret field ([`Use::Read`]) from the `plugins` of `value`, an object of
/// `kind` (the whole field: a string, or a list or map of them).
pub fn strip(kind: Kind, value: &mut Value) {
    if !has_plugins(kind) {
        return;
    }
    let Some(Value::Object(plugins)) = value.get_mut("plugins") else {
        return;
    };
    for (name, conf) in plugins.iter_mut() {
        for path in fields(name, kind, Use::Read) {
            if let Value::Object(m) = conf {
                remove(m, path);
            }
        }
    }
}

fn remove(m: &mut Map<String, Value>, path: &str) {
    match path.split_once('.') {
        None => {
            m.shift_remove(path);
        }
        Some((segment, rest)) => match m.get_mut(segment) {
            Some(Value::Array(items)) => {
                for item in items.iter_mut() {
                    if let Value::Object(inner) = item {
                        remove(inner, rest);
                    }
                }
            }
            Some(Value::Object(inner)) => remove(inner, rest),
            _ => {}
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(kind: Kind, mut v: Value, what: Use) -> Vec<String> {
        let mut out = Vec::new();
        for_each::<()>(kind, &mut v, what, &mut |p, s| {
            out.push(format!("{p}={s}"));
            Ok(())
        })
        .unwrap();
        out.sort();
        out
    }

    #[test]
    fn consumer_schema_on_consumers_schema_elsewhere() {
        let c = json!({"username": "jack", "plugins": {
            "key-auth": {"key": "k"},
            "jwt-auth": {"key": "user-key", "secret": "s", "private_key": "p"},
            "limit-count": {"count": 1, "time_window": 1, "redis_password": "r"},
            "ldap-auth-advanced": {"user_dn": "x", "ldap_password": "l"},
        }});
        assert_eq!(
            paths(Kind::Consumers, c.clone(), Use::Encrypt),
            [
                "plugins.jwt-auth.secret=s",
                "plugins.key-auth.key=k",
                "plugins.limit-count.redis_password=r"
            ]
        );
        assert!(paths(Kind::Consumers, c.clone(), Use::Read)
            .contains(&"plugins.jwt-auth.private_key=p".to_string()));
        // On a route, key-auth has no secret (the key is the consumer's) and ldap's is.
        let r = json!({"plugins": {"key-auth": {"key": "not-a-credential-here"},
                                   "ldap-auth-advanced": {"ldap_password": "l"}}});
        assert_eq!(
            paths(Kind::Routes, r, Use::Read),
            ["plugins.ldap-auth-advanced.ldap_password=l"]
        );
        assert!(paths(Kind::Ssls, c, Use::Read).is_empty());
    }

    #[test]
    fn dotted_paths_arrays_and_maps() {
        let v = json!({"plugins": {
            "kafka-logger": {"brokers": [
                {"host": "a", "sasl_config": {"password": "p1"}},
                {"host": "b"},
                {"host": "c", "sasl_config": {"password": "p3"}}]},
            "loki-logger": {"headers": {"Authorization": "Bearer x", "X-N": 1}},
            "dingtalk-auth": {"secret_fallbacks": ["old1", "old2"]},
        }});
        assert_eq!(
            paths(Kind::GlobalRules, v.clone(), Use::Encrypt),
            [
                "plugins.dingtalk-auth.secret_fallbacks[0]=old1",
                "plugins.dingtalk-auth.secret_fallbacks[1]=old2",
                "plugins.kafka-logger.brokers.sasl_config.password=p1",
                "plugins.kafka-logger.brokers.sasl_config.password=p3",
                "plugins.loki-logger.headers.Authorization=Bearer x",
            ]
        );
        let mut stripped = v;
        strip(Kind::GlobalRules, &mut stripped);
        let text = stripped.to_string();
        for secret in ["p1", "p3", "Bearer", "old1"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(
            stripped["plugins"]["kafka-logger"]["brokers"][1]["host"],
            "b"
        );
    }

    #[test]
    fn strip_leaves_the_rest() {
        let mut c = json!({"username": "jack", "desc": "d", "plugins": {
            "key-auth": {"key": "secret-key"}, "basic-auth": {"username": "u", "password": "pw"}}});
        strip(Kind::Consumers, &mut c);
        assert_eq!(
            c,
            json!({"username": "jack", "desc": "d", "plugins": {
                "key-auth": {}, "basic-auth": {"username": "u"}}})
        );
    }
}
