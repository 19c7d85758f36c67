//! Route lookup and node selection costs (criterion). Run: `cargo bench --bench router`
//! (add `-- node_selection` or `-- route_lookup` to run one group).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use pylon::router::{HostPattern, Matcher, PathPattern, Router, RouterBuilder};
use pylon::upstream::balancer::{Balancer, BalancerKind, RoundRobin};

/// `n` routes: a third exact (`/svc{i}/items`), a third prefix (`/svc{i}/api/*`), a third
/// host-qualified exact (`api{i}.example.com` + `/svc{i}/host`).
fn table(n: usize) -> Router<usize> {
    let mut b = RouterBuilder::default();
    for i in 0..n {
        let (uri, hosts) = match i % 3 {
            0 => (format!("/svc{i}/items"), vec![]),
            1 => (format!("/svc{i}/api/*"), vec![]),
            _ => (
                format!("/svc{i}/host"),
                vec![HostPattern::Exact(format!("api{i}.example.com"))],
            ),
        };
        let matcher = Matcher {
            hosts,
            methods: 0,
            priority: 0,
        };
        let path = PathPattern::parse(&uri).expect("valid uri");
        b.add(vec![path], matcher, i);
    }
    b.build()
}

fn route_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [10usize, 1_000, 10_000] {
        let r = table(n);
        let last = n - 1 - (n - 1) % 3;
        let exact = format!("/svc{last}/items");
        let prefix = format!("/svc{}/api/v1/users/42", last + 1);
        let host_path = format!("/svc{}/host", last + 2);
        let host = format!("api{}.example.com", last + 2);
        g.bench_with_input(BenchmarkId::new("exact", n), &n, |b, _| {
            b.iter(|| r.find(black_box("x.com"), "GET", black_box(&exact)))
        });
        g.bench_with_input(BenchmarkId::new("prefix", n), &n, |b, _| {
            b.iter(|| r.find(black_box("x.com"), "GET", black_box(&prefix)))
        });
        g.bench_with_input(BenchmarkId::new("host", n), &n, |b, _| {
            b.iter(|| r.find(black_box(&host), "GET", black_box(&host_path)))
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &n, |b, _| {
            b.iter(|| r.find(black_box("x.com"), "GET", black_box("/nothing/here")))
        });
    }
    g.finish();
}

/// Node selection per balancer type over 10 nodes (weights 1..=10), every node usable.
fn node_selection(c: &mut Criterion) {
    let ids: Vec<String> = (0..10).map(|i| format!("10.0.0.{i}:80")).collect();
    let weights: Vec<u32> = (1..=10).collect();
    let inflight: Vec<usize> = (0..10).map(|i| i % 3).collect();
    let ewma: Vec<f64> = (0..10).map(|i| 1e6 + f64::from(i) * 1e5).collect();
    let mut g = c.benchmark_group("node_selection");
    for (name, kind) in [
        ("roundrobin", BalancerKind::RoundRobin),
        ("chash", BalancerKind::Chash),
        ("least_conn", BalancerKind::LeastConn),
        ("ewma", BalancerKind::Ewma),
    ] {
        let b = Balancer::new(kind, &ids, &weights).expect("non-zero weights");
        g.bench_function(name, |bench| {
            bench.iter(|| {
                b.select(
                    black_box(b"203.0.113.7"),
                    |_| true,
                    |i| inflight[i],
                    |i| ewma[i],
                )
            })
        });
    }
    let rr = RoundRobin::new(&[5, 1, 1, 1, 1]).expect("non-zero weights");
    g.bench_function("roundrobin_next_unchecked", |b| {
        b.iter(|| black_box(rr.next()))
    });
    g.finish();
}

criterion_group!(benches, route_lookup, node_selection);
criterion_main!(benches);
