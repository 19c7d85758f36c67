//! Host + method + path → route. Pure: no I/O, no allocation per lookup.
//!
//! Precedence (shared/design/config-model.md, "Routing rules"): an exact `uri` beats a prefix
//! (`/api/*`) match; a longer prefix beats a shorter one; among routes on the same path, the
//! higher `priority` wins, then routes that name `hosts` before those that don't, then file
//! order. A route's `hosts` and `methods` must match for it to be taken; when they don't, the
//! next candidate (possibly a shorter prefix) is tried. The query string never takes part.
//!
//! Lookup cost: one hash lookup for exact paths plus one per distinct prefix length that fits
//! the path, whatever the number of routes.

use std::collections::HashMap;

/// HTTP methods a route can name, as bits of a mask.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

/// The bit of a method name (upper case), or `None` for a method routes cannot name.
pub fn method_bit(method: &str) -> Option<u16> {
    METHODS.iter().position(|m| *m == method).map(|i| 1u16 << i)
}

/// A host pattern: `api.example.com` (exact) or `*.example.com` (any name ending in
/// `.example.com`, as APISIX matches it). Compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// The whole name, lower case.
    Exact(String),
    /// The suffix after `*`, lower case, starting with `.`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `api.example.com` or `*.example.com`. Errors with a message for other uses of `*`
    /// or an empty name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        if lower.is_empty() {
            return Err("empty host".into());
        }
        if let Some(suffix) = lower.strip_prefix('*') {
            if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') {
                return Ok(HostPattern::Wildcard(suffix.to_string()));
            }
        } else if !lower.contains('*') {
            return Ok(HostPattern::Exact(lower));
        }
        Err(format!(
            "invalid host {text:?}: a wildcard is only allowed as a leading \"*.\""
        ))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name.eq_ignore_ascii_case(host),
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

/// What a route matches on, besides its paths.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    /// Host patterns; empty = any host.
    pub hosts: Vec<HostPattern>,
    /// Method bits (see [`method_bit`]); 0 = any method.
    pub methods: u16,
    /// Higher wins among routes on the same path.
    pub priority: i64,
}

impl Matcher {
    fn matches(&self, host: &str, method: &str) -> bool {
        let method_ok =
            self.methods == 0 || method_bit(method).is_some_and(|bit| self.methods & bit != 0);
        method_ok && (self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host)))
    }
}

/// A path pattern from `uri`/`uris`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// Matches this path only.
    Exact(String),
    /// Matches every path starting with this text (the pattern without its trailing `*`).
    Prefix(String),
}

impl PathPattern {
    /// `/hello` → exact, `/api/*` → prefix `/api/`. Errors unless the path starts with `/`.
    pub fn parse(uri: &str) -> Result<Self, String> {
        if !uri.starts_with('/') {
            return Err(format!("uri {uri:?} must start with \"/\""));
        }
        match uri.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => Ok(PathPattern::Prefix(prefix.to_string())),
            None if !uri.contains('*') => Ok(PathPattern::Exact(uri.to_string())),
            _ => Err(format!(
                "uri {uri:?}: \"*\" is only allowed at the end (prefix match)"
            )),
        }
    }
}

/// An immutable route table mapping requests to values of type `T` (route handles).
#[derive(Debug)]
pub struct Router<T> {
    entries: Vec<(Matcher, T)>,
    exact: HashMap<String, Vec<usize>>,
    prefixes: HashMap<String, Vec<usize>>,
    /// Distinct prefix lengths, longest first.
    prefix_lens: Vec<usize>,
}

/// Collects routes, then [`RouterBuilder::build`]s the table.
pub struct RouterBuilder<T> {
    routes: Vec<(Vec<PathPattern>, Matcher, T)>,
}

impl<T> Default for RouterBuilder<T> {
    fn default() -> Self {
        RouterBuilder { routes: Vec::new() }
    }
}

impl<T> RouterBuilder<T> {
    /// Adds a route with its paths; file order breaks ties.
    pub fn add(&mut self, paths: Vec<PathPattern>, matcher: Matcher, value: T) {
        self.routes.push((paths, matcher, value));
    }

    /// Builds the lookup table.
    pub fn build(self) -> Router<T> {
        let mut entries = Vec::with_capacity(self.routes.len());
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut prefixes: HashMap<String, Vec<usize>> = HashMap::new();
        for (paths, matcher, value) in self.routes {
            let index = entries.len();
            for path in paths {
                let list = match path {
                    PathPattern::Exact(p) => exact.entry(p).or_default(),
                    PathPattern::Prefix(p) => prefixes.entry(p).or_default(),
                };
                if !list.contains(&index) {
                    list.push(index);
                }
            }
            entries.push((matcher, value));
        }
        let order = |list: &mut Vec<usize>| {
            // Stable: file order stays the last tie-breaker.
            list.sort_by_key(|&i| {
                let m: &Matcher = &entries[i].0;
                (std::cmp::Reverse(m.priority), m.hosts.is_empty())
            });
        };
        exact.values_mut().for_each(order);
        prefixes.values_mut().for_each(order);
        let mut prefix_lens: Vec<usize> = prefixes.keys().map(String::len).collect();
        prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
        prefix_lens.dedup();
        Router {
            entries,
            exact,
            prefixes,
            prefix_lens,
        }
    }
}

impl<T> Router<T> {
    /// The route for a request. `host` is the request's host name without port (any case),
    /// `method` upper case, `path` without the query string.
    pub fn find(&self, host: &str, method: &str, path: &str) -> Option<&T> {
        let pick = |list: &Vec<usize>| {
            list.iter()
                .map(|&i| &self.entries[i])
                .find(|(m, _)| m.matches(host, method))
                .map(|(_, v)| v)
        };
        if let Some(found) = self.exact.get(path).and_then(pick) {
            return Some(found);
        }
        for &len in &self.prefix_lens {
            if len > path.len() || !path.is_char_boundary(len) {
                continue;
            }
            if let Some(found) = self.prefixes.get(&path[..len]).and_then(pick) {
                return Some(found);
            }
        }
        None
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The path routes (and other path rules) are matched against, as nginx's `$uri`, which
/// Why a request path is read differently by some upstreams than by Pylon's
/// [`normalize_path`], or `None`. `raw` is the path as received, `normalized` its normal
/// form. Refused forms (`gateway.reject_ambiguous_paths`):
/// - a backslash, raw or `%5c` (Windows and IIS servers take it as `/`: `/pub/..\admin`);
/// - `%25` encoding a `.`, `/` or `\` (`%252e`: decoded twice by some applications);
/// - a dot segment with a path parameter (`/..;/`, `/.;/`: Tomcat drops the parameter and
///   steps up).
pub fn ambiguous_path(raw: &str, normalized: &str) -> Option<&'static str> {
    if normalized.contains('\\') || raw.contains('\\') {
        return Some("a backslash in the path");
    }
    let double = raw.as_bytes().windows(5).any(|w| {
        w[..3].eq_ignore_ascii_case(b"%25")
            && [b"2e", b"2f", b"5c"]
                .iter()
                .any(|x| w[3..].eq_ignore_ascii_case(&x[..]))
    });
    if double {
        return Some("a double percent-encoded ., / or \\ in the path");
    }
    if normalized
        .split('/')
        .any(|seg| seg.starts_with(".;") || seg.starts_with("..;"))
    {
        return Some("a path parameter on a dot segment (/..;/)");
    }
    None
}

/// APISIX matches on: percent-escapes decoded, `.` and `..` segments resolved (RFC 3986
/// §5.2.4), repeated slashes merged. `/pub/../admin` and `/pub/%2e%2e/admin` both give
/// `/admin`, so a path cannot step out of the route (or `skip_mtls_uri_regex`) it seems to
/// match. The request still goes upstream with its original path. Borrowed (no allocation)
/// for ordinary paths; `..` above the root stays at the root.
pub fn normalize_path(path: &str) -> std::borrow::Cow<'_, str> {
    let b = path.as_bytes();
    let plain = !b.contains(&b'%')
        && !path.contains("//")
        && !path.contains("/./")
        && !path.contains("/../")
        && !path.ends_with("/.")
        && !path.ends_with("/..");
    if plain {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                decoded.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        decoded.push(b[i]);
        i += 1;
    }
    let text = String::from_utf8_lossy(&decoded);
    let mut out: Vec<&str> = Vec::new();
    for seg in text.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = text.ends_with('/') || text.ends_with("/.") || text.ends_with("/..");
    let mut result = String::with_capacity(text.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if trailing || result.is_empty() {
        result.push('/');
    }
    std::borrow::Cow::Owned(result)
}

/// The host name of a `Host` header value: port removed, IPv6 brackets kept off
/// (`[::1]:80` → `::1`, `Example.com:8080` → `Example.com`).
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(hosts: &[&str], methods: &[&str], priority: i64) -> Matcher {
        Matcher {
            hosts: hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            methods: methods
                .iter()
                .map(|m| method_bit(m).unwrap())
                .fold(0, |a, b| a | b),
            priority,
        }
    }

    fn router(routes: &[(&str, Matcher)]) -> Router<usize> {
        let mut b = RouterBuilder::default();
        for (i, (uri, m)) in routes.iter().enumerate() {
            b.add(vec![PathPattern::parse(uri).unwrap()], m.clone(), i);
        }
        b.build()
    }

    #[test]
    fn exact_beats_prefix_and_longer_prefix_beats_shorter() {
        let r = router(&[
            ("/*", Matcher::default()),
            ("/api/*", Matcher::default()),
            ("/api/users", Matcher::default()),
            ("/api/users/*", Matcher::default()),
        ]);
        assert_eq!(r.find("h", "GET", "/api/users"), Some(&2));
        assert_eq!(r.find("h", "GET", "/api/users/7"), Some(&3));
        assert_eq!(r.find("h", "GET", "/api/x"), Some(&1));
        assert_eq!(r.find("h", "GET", "/other"), Some(&0));
        assert_eq!(r.find("h", "GET", "/"), Some(&0));
    }

    #[test]
    fn methods_and_hosts_must_match_then_fall_through() {
        let r = router(&[
            ("/a", matcher(&[], &["POST"], 0)),
            ("/*", matcher(&["*.example.com"], &[], 0)),
        ]);
        assert_eq!(r.find("x", "POST", "/a"), Some(&0));
        assert_eq!(r.find("x", "GET", "/a"), None);
        assert_eq!(r.find("api.Example.com", "GET", "/a"), Some(&1));
        assert_eq!(r.find("example.com", "GET", "/a"), None);
    }

    #[test]
    fn priority_then_hosts_then_file_order() {
        let r = router(&[
            ("/p", matcher(&[], &[], 0)),
            ("/p", matcher(&["a.com"], &[], 0)),
            ("/p", matcher(&[], &[], 5)),
        ]);
        assert_eq!(r.find("a.com", "GET", "/p"), Some(&2));
        let r = router(&[
            ("/p", matcher(&[], &[], 0)),
            ("/p", matcher(&["a.com"], &[], 0)),
        ]);
        assert_eq!(r.find("a.com", "GET", "/p"), Some(&1));
        assert_eq!(r.find("b.com", "GET", "/p"), Some(&0));
    }

    #[test]
    fn ambiguous_paths() {
        let check = |p: &str| ambiguous_path(p, &normalize_path(p));
        for bad in [
            "/pub/..;/admin",
            "/pub/..\\admin",
            "/pub/%5c..%5cadmin",
            "/pub/%5C..%5Cadmin",
            "/pub/%252e%252e/admin",
            "/pub/%252F",
            "/pub/.;/x",
            "/pub/%2e%2e;/admin",
        ] {
            assert!(check(bad).is_some(), "{bad}");
        }
        for good in [
            "/pub/a;b",
            "/pub/100%25",
            "/pub/%2541",
            "/pub/..a;",
            "/",
            "/a/b.c;v=1",
        ] {
            assert_eq!(check(good), None, "{good}");
        }
    }

    #[test]
    fn a_wildcard_host_stands_for_at_least_one_label() {
        let w = HostPattern::parse("*.foo.com").unwrap();
        assert!(w.matches("a.foo.com") && w.matches("A.b.FOO.com"));
        // APISIX's radixtree matches a Host of exactly ".foo.com" too; it is not a host name
        // (RFC 1123: labels are not empty), so Pylon does not (docs: compatibility).
        assert!(!w.matches(".foo.com"));
        assert!(!w.matches("foo.com"));
    }

    #[test]
    fn patterns_reject_misplaced_wildcards() {
        assert!(PathPattern::parse("hello").is_err());
        assert!(PathPattern::parse("/a*/b").is_err());
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("*").is_err());
        assert_eq!(
            PathPattern::parse("/api/*").unwrap(),
            PathPattern::Prefix("/api/".into())
        );
    }

    #[test]
    fn paths_are_normalized_like_nginx_uri() {
        assert!(matches!(
            normalize_path("/a/b"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(normalize_path("/pub/../hello"), "/hello");
        assert_eq!(normalize_path("/pub/%2e%2e/hello"), "/hello");
        assert_eq!(normalize_path("/pub/..%2fhello"), "/hello");
        assert_eq!(normalize_path("/pub/%2E%2E/%2E/hello"), "/hello");
        assert_eq!(normalize_path("/a//b/./c/"), "/a/b/c/");
        assert_eq!(normalize_path("/../../etc"), "/etc");
        assert_eq!(normalize_path("/a/.."), "/");
        assert_eq!(normalize_path("/caf%C3%A9"), "/café");
        assert_eq!(normalize_path("/100%"), "/100%");
        assert_eq!(normalize_path("/x%zz"), "/x%zz");
    }

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(host_without_port("a.com:8080"), "a.com");
        assert_eq!(host_without_port("a.com"), "a.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
        assert_eq!(host_without_port("127.0.0.1:9080"), "127.0.0.1");
    }
}
