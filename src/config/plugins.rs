//! Compiles plugins: consumers, plugin configs, global rules, and each route's merged
//! plugin map (APISIX's merge: for the same plugin name the route's configuration wins over
//! its plugin config's, which wins over its service's).
//!
//! Problems are reported where the plugin is written: a service's bad plugin once, at
//! `services[0].plugins.<name>`, not again for each of its routes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::compile::Ctx;
use super::model::{Id, Resources};
use crate::plugin::registry::{self, compile_map, Env, PluginError};
use crate::plugin::{Chain, Consumer};

/// A plugin map by the id of what holds it (`plugin_configs` or `services`).
pub(super) type Maps<'a> = HashMap<String, &'a BTreeMap<String, Value>>;

/// The plugin side of a configuration: consumers and shared plugin maps.
pub(super) struct PluginParts<'a> {
    pub consumers: Vec<(Arc<Consumer>, BTreeMap<String, Value>)>,
    pub plugin_configs: Maps<'a>,
    pub services: Maps<'a>,
}

fn report(cx: &mut Ctx, at: &str, problems: Vec<PluginError>, warnings: Vec<PluginError>) {
    for p in problems {
        cx.problem(format!("{at}.{}", p.path), p.message);
    }
    for w in warnings {
        cx.warn(format!("{at}.{}", w.path), w.message);
    }
}

/// The credential field that identifies a consumer, per authentication plugin.
const IDENTITY_FIELDS: &[(&str, &str)] = &[
    ("key-auth", "key"),
    ("basic-auth", "username"),
    ("jwt-auth", "key"),
];

fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks consumers, plugin configs and services' plugin maps; returns what routes need.
pub(super) fn prepare<'a>(cx: &mut Ctx, res: &'a Resources) -> PluginParts<'a> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    // (plugin, credential) → the consumer that has it first.
    let mut identities: HashMap<(&str, &str), usize> = HashMap::new();
    let mut consumers = Vec::new();
    for (i, c) in res.consumers.iter().enumerate() {
        let path = format!("consumers[{i}]");
        if !valid_username(&c.username) {
            cx.problem(
                format!("{path}.username"),
                "must be 1–100 characters of [a-zA-Z0-9_-] (APISIX's consumer schema)",
            );
        }
        if let Some(first) = seen.insert(c.username.as_str(), i) {
            cx.problem(
                format!("{path}.username"),
                format!(
                    "duplicate username {:?} (also consumers[{first}])",
                    c.username
                ),
            );
        }
        if c.group_id.is_some() {
            cx.problem(
                format!("{path}.group_id"),
                "consumer groups are not supported by Pylon",
            );
        }
        let problems = registry::check_credentials(&c.plugins);
        report(cx, &format!("{path}.plugins"), problems, Vec::new());
        // APISIX refuses two consumers with one credential (`check_duplicate_key`): the
        // request would belong to whichever is found first. The value is not printed.
        for (plugin, field) in IDENTITY_FIELDS {
            let Some(v) = c.plugins.get(*plugin).and_then(|p| p.get(*field)) else {
                continue;
            };
            let Some(v) = v.as_str() else { continue };
            if let Some(first) = identities.insert((plugin, v), i) {
                cx.problem(
                    format!("{path}.plugins.{plugin}.{field}"),
                    format!(
                        "consumers[{first}] has the same {plugin} {field}: each must be unique"
                    ),
                );
            }
        }
        consumers.push((Arc::new(Consumer::new(&c.username)), c.plugins.clone()));
    }
    let ignore = registry::unknown_plugins_ignored();
    let mut parts = PluginParts {
        consumers,
        plugin_configs: HashMap::new(),
        services: HashMap::new(),
    };
    let env = Env::new(&parts.consumers);
    let mut checked = Vec::new();
    for (i, pc) in res.plugin_configs.iter().enumerate() {
        let c = compile_map(&pc.plugins, &env, ignore);
        checked.push((format!("plugin_configs[{i}].plugins"), c));
        if let Some(id) = &pc.id {
            parts.plugin_configs.insert(id.to_string(), &pc.plugins);
        }
    }
    for (i, s) in res.services.iter().enumerate() {
        let Some(map) = &s.plugins else { continue };
        let c = compile_map(map, &env, ignore);
        checked.push((format!("services[{i}].plugins"), c));
        if let Some(id) = &s.id {
            parts.services.insert(id.to_string(), map);
        }
    }
    drop(env);
    for (at, c) in checked {
        report(cx, &at, c.problems, c.warnings);
    }
    parts
}

/// The global rules' plugins, as one chain.
pub(super) fn global_chain(cx: &mut Ctx, res: &Resources, base: &Env) -> Chain {
    let ignore = registry::unknown_plugins_ignored();
    let mut entries = Vec::new();
    for (i, g) in res.global_rules.iter().enumerate() {
        let id = g.id.as_ref().map_or_else(|| i.to_string(), Id::to_string);
        let env = base.for_owner(format!("global_rule/{id}"));
        let c = compile_map(&g.plugins, &env, ignore);
        entries.extend(c.entries);
        report(
            cx,
            &format!("global_rules[{i}].plugins"),
            c.problems,
            c.warnings,
        );
    }
    Chain::new(entries)
}

/// A route's chain: its service's plugins, overridden by its plugin config's, overridden by
/// its own. Problems in the route's own map are reported at `path.plugins`; a missing
/// `plugin_config_id` at `path.plugin_config_id`.
pub(super) fn route_chain(
    cx: &mut Ctx,
    path: &str,
    route_id: &str,
    r: &super::model::Route,
    parts: &PluginParts,
    base: &Env,
) -> Chain {
    let mut merged: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(map) = r
        .service_id
        .as_ref()
        .and_then(|s| parts.services.get(&s.to_string()))
    {
        merged.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(id) = &r.plugin_config_id {
        match parts.plugin_configs.get(&id.to_string()) {
            Some(map) => merged.extend(map.iter().map(|(k, v)| (k.clone(), v.clone()))),
            None => cx.problem(
                format!("{path}.plugin_config_id"),
                format!("no plugin config with id {:?}", id.to_string()),
            ),
        }
    }
    let own = r.plugins.as_ref();
    if let Some(map) = own {
        merged.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if merged.is_empty() {
        return Chain::default();
    }
    let env = base.for_owner(format!("route/{route_id}"));
    let c = compile_map(&merged, &env, registry::unknown_plugins_ignored());
    // Report only what the route wrote itself; the rest was reported at its own path.
    let mine = |e: &PluginError| {
        let name = e.path.split('.').next().unwrap_or("");
        own.is_some_and(|m| m.contains_key(name))
    };
    let problems = c.problems.into_iter().filter(mine).collect();
    let warnings = c.warnings.into_iter().filter(mine).collect();
    report(cx, &format!("{path}.plugins"), problems, warnings);
    Chain::new(c.entries)
}
