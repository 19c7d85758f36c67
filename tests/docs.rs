//! The documentation cannot drift: every ```yaml block in README.md and docs/*.md passes
//! `pylon check` (or is marked as a fragment or as not a Pylon file), every relative link
//! points at a file that exists and at a heading of it, and every docs page is linked from
//! README.md. How blocks are classified and checked: docs/development.md, "The
//! documentation test".

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tls::{server_cert, write_pair, KeyKind};
use common::{pylon_bin, Pki};
use pylon::config::model::ConfigProvider;
use pylon::config::StaticFile;

/// Top-level keys of a resources file.
const RESOURCE_KEYS: &[&str] = &[
    "routes",
    "services",
    "upstreams",
    "ssls",
    "ca_certificates",
    "consumers",
    "plugin_configs",
    "global_rules",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files in `dir`, in name order.
fn md_files(dir: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs
}

/// The folders under docs/ (docs/plugins/ …): their pages are linked from the page of the
/// same name (docs/plugins.md), not from README.md.
fn doc_subdirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// README.md, then docs/*.md in name order, then the pages of docs' folders.
fn doc_files() -> Vec<PathBuf> {
    let mut docs = md_files(&repo().join("docs"));
    for dir in doc_subdirs() {
        docs.extend(md_files(&dir));
    }
    let mut files = vec![repo().join("README.md")];
    files.extend(docs);
    files
}

fn display(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What the line before a fence says about its block.
#[derive(Debug, Clone, PartialEq)]
enum Marker {
    /// `<!-- fragment: KIND -->`: part of a file, completed as KIND says.
    Fragment(String),
    /// `<!-- not-checked: REASON -->`: not a Pylon file.
    NotChecked(String),
}

fn marker(line: &str) -> Option<Marker> {
    let inner = line
        .trim()
        .strip_prefix("<!--")?
        .strip_suffix("-->")?
        .trim();
    if let Some(kind) = inner.strip_prefix("fragment:") {
        return Some(Marker::Fragment(kind.trim().to_string()));
    }
    if let Some(reason) = inner.strip_prefix("not-checked:") {
        return Some(Marker::NotChecked(reason.trim().to_string()));
    }
    None
}

/// One fenced code block.
struct Block {
    /// The file, relative to the repository.
    file: String,
    /// 1-based line of the opening fence.
    line: usize,
    /// The info string's first word (`yaml`, `sh`, … or "").
    lang: String,
    /// The marker on the line before the fence, if any.
    marker: Option<Marker>,
    /// The content, with the fence's indentation removed.
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// The fenced blocks of a markdown file, and the lines outside them (1-based number, text).
fn parse_markdown(file: &str, text: &str) -> (Vec<Block>, Vec<(usize, String)>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            prose.push((i + 1, line.to_string()));
            i += 1;
            continue;
        };
        let indent = line.len() - trimmed.len();
        let lang = info.split_whitespace().next().unwrap_or("").to_string();
        let mut body = Vec::new();
        let mut j = i + 1;
        while j < lines.len() && lines[j].trim() != "```" {
            let l = lines[j];
            let cut = l.len() - l.trim_start().len();
            body.push(&l[cut.min(indent)..]);
            j += 1;
        }
        assert!(j < lines.len(), "{file}:{}: code fence never closed", i + 1);
        blocks.push(Block {
            file: file.to_string(),
            line: i + 1,
            lang,
            marker: i.checked_sub(1).and_then(|p| marker(lines[p])),
            text: body.join("\n") + "\n",
        });
        i = j + 1;
    }
    (blocks, prose)
}

/// Certificate files named by the examples, made on demand from one test PKI.
struct Certs {
    dir: PathBuf,
    pki: Pki,
}

impl Certs {
    /// The PKI `pylon certs init` makes, in `dir` (`ca.*`, `server.*`, `client.*`).
    fn new(dir: &Path) -> Certs {
        Certs {
            dir: dir.to_path_buf(),
            pki: Pki::new(dir, "test.com"),
        }
    }

    /// Makes every file under `../certs/` that `yaml` names and that does not exist yet. By
    /// the file's name: `ca` as a word is the CA; `client` a client pair; `ecdsa` an ECDSA
    /// server pair; anything else an RSA server pair (the PKI's `server.*`).
    fn provide(&self, yaml: &str) {
        for rel in yaml.split("../certs/").skip(1).map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "._/-".contains(c)))
                .unwrap_or(rest.len());
            &rest[..end]
        }) {
            let target = self.dir.join(rel);
            let ext = target.extension().and_then(|e| e.to_str()).unwrap_or("");
            if target.exists() || !["crt", "key", "pem"].contains(&ext) {
                continue;
            }
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            let stem = target.file_stem().unwrap().to_string_lossy().to_lowercase();
            let words: Vec<&str> = stem.split(['-', '_', '.']).collect();
            let part = if ext == "key" { "key" } else { "crt" };
            if words.contains(&"ecdsa") {
                let issued =
                    server_cert(&self.pki.ca, "test.com", &["test.com"], KeyKind::Ecdsa, 365);
                let dir = target.parent().unwrap();
                write_pair(
                    dir,
                    target.file_stem().unwrap().to_str().unwrap(),
                    &issued,
                    &[],
                );
                continue;
            }
            let source = if words.contains(&"ca") {
                format!("ca.{part}")
            } else if words.contains(&"client") {
                format!("client.{part}")
            } else {
                format!("server.{part}")
            };
            std::fs::copy(self.dir.join(source), &target).unwrap();
        }
    }
}

/// How a block was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Resources,
    Static,
    EtcdStatic,
    NotChecked,
}

/// The YAML of a block as a file: the block itself, or a fragment completed.
fn complete(block: &Block) -> Result<String, String> {
    let Some(Marker::Fragment(kind)) = &block.marker else {
        return Ok(block.text.clone());
    };
    let value: serde_yaml::Value =
        serde_yaml::from_str(&block.text).map_err(|e| format!("fragment is not YAML: {e}"))?;
    let key = match kind.as_str() {
        "gateway" => "gateway",
        "upstream" => "upstreams",
        other => {
            return Err(format!(
                "unknown fragment kind {other:?} (use gateway or upstream)"
            ))
        }
    };
    let wrapped = if key == "upstreams" {
        serde_yaml::Value::Sequence(vec![value])
    } else {
        value
    };
    let mut map = serde_yaml::Mapping::new();
    map.insert(key.into(), wrapped);
    Ok(serde_yaml::to_string(&map).unwrap())
}

/// Runs `pylon check -c static_file`; `Err` with its output when it fails.
fn pylon_check(static_file: &Path) -> Result<(), String> {
    let out = Command::new(pylon_bin())
        .args(["check", "-c"])
        .arg(static_file)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "pylon check failed:\n{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Checks one ```yaml block in a fresh `root/conf/` beside `root/certs/`.
fn check_block(block: &Block, root: &Path, certs: &Certs) -> Result<Kind, String> {
    if let Some(Marker::NotChecked(reason)) = &block.marker {
        if reason.is_empty() {
            return Err("<!-- not-checked: … --> needs a reason".into());
        }
        return Ok(Kind::NotChecked);
    }
    let yaml = complete(block)?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&yaml).map_err(|e| format!("not YAML: {e}"))?;
    let keys: Vec<String> = match &value {
        serde_yaml::Value::Mapping(m) => m
            .keys()
            .map(|k| k.as_str().unwrap_or("?").to_string())
            .collect(),
        _ => vec![],
    };
    let conf = root.join("conf");
    if conf.exists() {
        std::fs::remove_dir_all(&conf).unwrap();
    }
    std::fs::create_dir_all(&conf).unwrap();
    certs.provide(&yaml);
    let static_path = conf.join("pylon.yaml");
    if keys.iter().any(|k| k == "gateway") {
        let parsed = pylon::config::parse_yaml::<StaticFile>(Path::new(&block.file), &yaml);
        if let Ok(s) = &parsed {
            if s.gateway.config_provider == ConfigProvider::Etcd {
                // No etcd here: the shape and the static checks only.
                let problems = pylon::config::static_checks::check_static(s);
                if problems.is_empty() {
                    return Ok(Kind::EtcdStatic);
                }
                let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                return Err(format!("static checks failed:\n{}", lines.join("\n")));
            }
            if Path::new(&s.resources).is_absolute() {
                return Err("an absolute `resources:` path cannot be checked here".into());
            }
            let resources = conf.join(&s.resources);
            if !resources.exists() {
                std::fs::create_dir_all(resources.parent().unwrap()).unwrap();
                std::fs::write(&resources, "#END\n").unwrap();
            }
        }
        std::fs::write(&static_path, &yaml).unwrap();
        // A parse error is reported by `pylon check` itself, with its path.
        pylon_check(&static_path).map(|()| Kind::Static)
    } else if !keys.is_empty() && keys.iter().all(|k| RESOURCE_KEYS.contains(&k.as_str())) {
        std::fs::write(
            &static_path,
            "gateway:\n  listen: [\"127.0.0.1:9080\"]\nresources: resources.yaml\n",
        )
        .unwrap();
        std::fs::write(conf.join("resources.yaml"), &yaml).unwrap();
        pylon_check(&static_path).map(|()| Kind::Resources)
    } else {
        Err(format!(
            "neither a resources file (top-level keys among {RESOURCE_KEYS:?}) nor a static \
             file (top-level `gateway:`); top-level keys: {keys:?}. Complete it, or put \
             <!-- fragment: gateway|upstream --> or <!-- not-checked: REASON --> on the line \
             before the fence"
        ))
    }
}

#[test]
fn every_yaml_example_passes_pylon_check() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = Certs::new(&tmp.path().join("certs"));
    let mut failures = Vec::new();
    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut fragments = 0;
    for path in doc_files() {
        let file = display(&path);
        let (blocks, prose) = parse_markdown(&file, &std::fs::read_to_string(&path).unwrap());
        for b in &blocks {
            if b.lang != "yaml" && b.lang != "yml" {
                if b.marker.is_some() {
                    failures.push(format!(
                        "{}: a fragment/not-checked marker before a ```{} block (only ```yaml \
                         blocks are checked)",
                        b.at(),
                        b.lang
                    ));
                }
                continue;
            }
            match check_block(b, tmp.path(), &certs) {
                Ok(kind) => {
                    *counts.entry(kind).or_default() += 1;
                    if matches!(b.marker, Some(Marker::Fragment(_))) {
                        fragments += 1;
                    }
                }
                Err(e) => failures.push(format!("{}: ```yaml block: {e}", b.at())),
            }
        }
        // A marker that is not right before a fence would silently mark nothing.
        let fence_lines: HashSet<usize> = blocks.iter().map(|b| b.line).collect();
        for (n, line) in &prose {
            if marker(line).is_some() && !fence_lines.contains(&(n + 1)) {
                failures.push(format!(
                    "{file}:{n}: marker not directly before a code fence"
                ));
            }
        }
    }
    let n = |k| counts.get(&k).copied().unwrap_or(0);
    println!(
        "yaml blocks: {} resources files, {} static files, {} etcd static files (shape only), \
         {fragments} of them fragments; {} not checked",
        n(Kind::Resources),
        n(Kind::Static),
        n(Kind::EtcdStatic),
        n(Kind::NotChecked)
    );
    assert!(
        failures.is_empty(),
        "{} documentation example(s) fail:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(
        n(Kind::Resources) > 0 && n(Kind::Static) > 0,
        "no examples found: is the extraction broken?"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (outside code fences), duplicates numbered.
fn anchors(path: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let (_, prose) = parse_markdown(&display(path), &text);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = HashSet::new();
    for (_, line) in prose {
        let level = line.chars().take_while(|&c| c == '#').count();
        if level == 0 || level > 6 || !line[level..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[level..]);
        let n = seen.entry(base.clone()).or_default();
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of `[text](target)` links in `line`.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn links_resolve_and_every_page_is_linked_from_the_readme() {
    let mut failures = Vec::new();
    // Link targets by the file that links (canonical paths).
    let mut links: HashMap<PathBuf, HashSet<PathBuf>> = HashMap::new();
    for path in doc_files() {
        let file = display(&path);
        let (_, prose) = parse_markdown(&file, &std::fs::read_to_string(&path).unwrap());
        let dir = path.parent().unwrap();
        for (n, line) in &prose {
            for target in link_targets(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file_part, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let resolved = if file_part.is_empty() {
                    path.clone()
                } else {
                    dir.join(file_part)
                };
                if !resolved.exists() {
                    failures.push(format!("{file}:{n}: link to {target}: no such file"));
                    continue;
                }
                if let (Ok(from), Ok(to)) = (path.canonicalize(), resolved.canonicalize()) {
                    links.entry(from).or_default().insert(to);
                }
                let is_md = resolved.extension().is_some_and(|e| e == "md");
                if !anchor.is_empty() && is_md && !anchors(&resolved).contains(anchor) {
                    failures.push(format!(
                        "{file}:{n}: link to {target}: no heading with anchor #{anchor} in {}",
                        display(&resolved)
                    ));
                }
            }
        }
    }
    let linked = |from: &Path, to: &Path| {
        links
            .get(&from.canonicalize().unwrap())
            .is_some_and(|l| l.contains(&to.canonicalize().unwrap()))
    };
    let readme = repo().join("README.md");
    for page in md_files(&repo().join("docs")) {
        if !linked(&readme, &page) {
            failures.push(format!("README.md does not link to {}", display(&page)));
        }
    }
    for dir in doc_subdirs() {
        let index = dir.with_extension("md");
        for page in md_files(&dir) {
            if !linked(&index, &page) {
                failures.push(format!(
                    "{} does not link to {}",
                    display(&index),
                    display(&page)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_block_parser_handles_markers_indentation_and_fragments() {
    let md = "text\n<!-- fragment: upstream -->\n```yaml\nid: u\nnodes: {\"127.0.0.1:1\": 1}\n```\n- item\n  ```yaml\n  routes: []\n  ```\n";
    let (blocks, prose) = parse_markdown("x.md", md);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].line, 3);
    assert_eq!(blocks[0].marker, Some(Marker::Fragment("upstream".into())));
    assert_eq!(blocks[1].text, "routes: []\n");
    assert_eq!(prose.len(), 3);
    let completed = complete(&blocks[0]).unwrap();
    assert!(
        completed.starts_with("upstreams:\n- id: u\n"),
        "{completed}"
    );
    assert_eq!(
        slug("Static file (`conf/pylon.yaml`)"),
        "static-file-confpylonyaml"
    );
    assert_eq!(
        slug("`pylon config push` / `dump`"),
        "pylon-config-push--dump"
    );
    assert_eq!(
        link_targets("see [a](b.md#c) and [d](https://e)"),
        ["b.md#c", "https://e"]
    );
}
