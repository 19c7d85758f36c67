//! Config load cost (criterion): parsing and compiling a resources file of 10,000 routes, the
//! work a reload (or an admin API change) does before the atomic swap.
//! Run: `cargo bench --bench compile`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use pylon::config::{compile, parse_yaml, Resources};

/// 10,000 routes (exact, prefix and host-qualified) over 100 upstreams of 2 IP nodes each.
fn resources_yaml() -> String {
    let mut s = String::from("routes:\n");
    for i in 0..10_000 {
        let (uri, hosts) = match i % 3 {
            0 => (format!("/svc{i}/items"), String::new()),
            1 => (format!("/svc{i}/api/*"), String::new()),
            _ => (
                format!("/svc{i}/host"),
                format!(", hosts: [api{i}.example.com]"),
            ),
        };
        s.push_str(&format!(
            "  - {{id: r{i}, uri: \"{uri}\", methods: [GET, POST]{hosts}, upstream_id: u{}}}\n",
            i % 100
        ));
    }
    s.push_str("upstreams:\n");
    for u in 0..100 {
        s.push_str(&format!(
            "  - {{id: u{u}, nodes: {{\"10.0.{u}.1:8080\": 3, \"10.0.{u}.2:8080\": 1}}}}\n"
        ));
    }
    s.push_str("#END\n");
    s
}

fn compile_10k(c: &mut Criterion) {
    let text = resources_yaml();
    let file = Path::new("bench-resources.yaml");
    let parsed: Resources = parse_yaml(file, &text).expect("valid YAML");
    let mut g = c.benchmark_group("config_10k_routes");
    g.sample_size(10);
    g.bench_function("parse", |b| {
        b.iter(|| parse_yaml::<Resources>(file, &text).expect("valid YAML"))
    });
    g.bench_function("compile", |b| {
        b.iter(|| {
            compile(&parsed, Path::new("."))
                .map(|c| c.counts)
                .expect("valid config")
        })
    });
    g.bench_function("parse_and_compile", |b| {
        b.iter(|| {
            let r: Resources = parse_yaml(file, &text).expect("valid YAML");
            compile(&r, Path::new("."))
                .map(|c| c.counts)
                .expect("valid config")
        })
    });
    g.finish();
}

criterion_group!(benches, compile_10k);
criterion_main!(benches);
