//! Configuration: read the static file and the resources file, then compile them into the
//! immutable runtime [`Table`](crate::table::Table) the proxy serves from.
//!
//! Flow: file → [`load_static`] / [`load_resources`] (YAML → [`model`] types; shape errors
//! carry the field path) → [`compile::compile`] (references, certificates, addresses; every
//! problem collected with its path) → `Table`. `pylon check`, `pylon run` and (later) reloads
//! all go through [`load_all`], so they report the same messages.

mod checks;
pub mod compile;
pub mod fleet;
pub mod inventory;
pub mod items;
pub mod kind;
pub mod model;
mod plugins;
pub mod secrets;
pub mod ssl;
pub mod static_checks;
mod upstream;

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use compile::{compile, Compiled};
pub use model::{Resources, StaticFile};

/// One problem (or warning) found in a config file, at a field path such as
/// `upstreams[0].tls.client_cert_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path with `[index]` for list items; empty for the whole file.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration could not be loaded. Display gives one line per problem, each
/// starting with the file.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", .file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not parse or does not fit the model (unknown field, wrong type).
    #[error("{}: {problem}", .file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// Where and what.
        problem: Problem,
    },
    /// The file parsed but its content is invalid; every problem found is listed.
    #[error("{}", join_problems(.file, .problems))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// All problems, in file order.
        problems: Vec<Problem>,
    },
}

fn join_problems(file: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {p}", file.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses YAML text into `T`, reporting the failing field's path
/// (`upstreams[0].tls: unknown field `foo``). An empty document (or one holding only
/// comments such as APISIX's `#END`) is `T::default()`.
pub fn parse_yaml<T>(file: &Path, text: &str) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned + Default,
{
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Ok(T::default());
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        // serde_yaml prefixes its message with the enclosing object's path, which `path`
        // already gives (more precisely): keep one.
        let message = match message.split_once(": ") {
            Some((head, rest)) if !head.contains(' ') && path.starts_with(head) => rest.to_string(),
            _ => message,
        };
        ConfigError::Parse {
            file: file.to_path_buf(),
            problem: Problem::new(path, message),
        }
    })
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// Reads the static file (`conf/pylon.yaml`).
///
/// Errors: [`ConfigError::Read`], [`ConfigError::Parse`], and [`ConfigError::Invalid`] for
/// settings that parse but cannot be served (e.g. no listener).
pub fn load_static(file: &Path) -> Result<StaticFile, ConfigError> {
    let parsed: StaticFile = parse_yaml(file, &read(file)?)?;
    let problems = static_checks::check_static(&parsed);
    if problems.is_empty() {
        // A process-wide setting: every later compile (file, admin API, etcd) reads it.
        crate::plugin::registry::set_unknown_plugins_ignored(parsed.gateway.ignore_unknown_plugins);
        crate::plugin::redirect::set_https_port(redirect_https_port(&parsed.gateway));
        Ok(parsed)
    } else {
        Err(ConfigError::Invalid {
            file: file.to_path_buf(),
            problems,
        })
    }
}

/// The port `redirect`'s `http_to_https` sends clients to: `plugin_attr.redirect.https_port`,
/// else the port of the first `tls_listen` address (APISIX takes one of `apisix.ssl.listen`),
/// else `None` (443).
fn redirect_https_port(g: &model::Gateway) -> Option<u16> {
    if let Some(r) = &g.plugin_attr.redirect {
        return Some(r.https_port);
    }
    g.tls_listen
        .first()
        .and_then(|l| l.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
}

/// Reads the resources file (APISIX standalone format).
///
/// Errors: [`ConfigError::Read`], [`ConfigError::Parse`].
pub fn load_resources(file: &Path) -> Result<Resources, ConfigError> {
    parse_yaml(file, &read(file)?)
}

impl Default for StaticFile {
    fn default() -> Self {
        StaticFile {
            gateway: Default::default(),
            resources: "resources.yaml".into(),
        }
    }
}

/// Everything `pylon run` and `pylon check` need, loaded and compiled.
pub struct Loaded {
    /// The static file as parsed.
    pub static_file: StaticFile,
    /// Where the resources file is (resolved against the static file's folder).
    pub resources_path: PathBuf,
    /// The compiled resources, with warnings.
    pub compiled: Compiled,
}

/// The folder of `file`, for resolving relative paths it names.
pub fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Loads the static file at `static_path`, then the resources file it names, and compiles
/// them. Errors are those of [`load_static`], [`load_resources`] and [`compile()`].
pub fn load_all(static_path: &Path) -> Result<Loaded, ConfigError> {
    let static_file = load_static(static_path)?;
    let resources_path = base_dir(static_path).join(&static_file.resources);
    let resources = load_resources(&resources_path)?;
    let mut compiled = compile(&resources, &base_dir(&resources_path)).map_err(|problems| {
        ConfigError::Invalid {
            file: resources_path.clone(),
            problems,
        }
    })?;
    let listener = ssl::listener_warnings(&static_file.gateway, &compiled.table.tls);
    compiled.warnings.extend(listener);
    Ok(Loaded {
        static_file,
        resources_path,
        compiled,
    })
}
