//! gRPC through Pylon with a real gRPC server and client (tonic's codec over hyper's HTTP/2,
//! see tests/common/grpc.rs): the server requires a client certificate from the founding
//! PKI, clients reach Pylon over HTTPS (ALPN h2) or cleartext HTTP/2 (h2c).

mod common;

use std::time::{Duration, Instant};

use common::grpc::{
    h2c_client, raw_call, tls_client, Client, EchoRequest, GrpcServer, BIDI, HEALTH_CHECK, UNARY,
};
use common::tls::{wait_for_log, TlsGateway};
use common::{free_port, Gateway, Origin, Pki};
use tonic::{Code, Request};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn setup() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    (dir, pki)
}

/// A resources file: `routes` and `upstreams` (list items, indented by 2), the client
/// certificate `upstream-ssl`, the CA `upstream-ca` and the listener certificate for
/// test.com, all from `pki`.
fn resources(pki: &Pki, routes: &str, upstreams: &str) -> String {
    format!(
        "routes:\n{routes}\nupstreams:\n{upstreams}\nssls:\n  - id: upstream-ssl\n    type: client\n    cert: {}\n    key: {}\n  - id: listener\n    sni: test.com\n    cert: {}\n    key: {}\nca_certificates:\n  - id: upstream-ca\n    cert: {}\n",
        pki.path("client.crt"),
        pki.path("client.key"),
        pki.path("server.crt"),
        pki.path("server.key"),
        pki.path("ca.crt"),
    )
}

/// An upstream `id` with `scheme` over `ports`; `tls` (lines indented by 6) under `tls:`
/// when not empty; `extra` lines (indented by 4).
fn upstream(id: &str, scheme: &str, ports: &[u16], tls: &str, extra: &str) -> String {
    let mut s = format!("  - id: {id}\n    scheme: {scheme}\n    nodes:\n");
    for p in ports {
        s += &format!("      - {{ host: 127.0.0.1, port: {p}, weight: 1 }}\n");
    }
    if !tls.is_empty() {
        s += &format!("    tls:\n{tls}\n");
    }
    s + extra
}

/// The founding scenario's upstream TLS settings: client certificate, CA, SNI test.com.
const MTLS: &str =
    "      client_cert_id: upstream-ssl\n      ca_certificate_id: upstream-ca\n      sni: test.com";

/// One route to `upstream` for the Echo service and the health service.
fn echo_route(upstream: &str) -> String {
    format!("  - {{ id: echo, uris: [/pylon.test.Echo/*, /grpc.health.v1.Health/*], upstream_id: {upstream} }}")
}

/// A route for requests whose :authority is `host`.
fn host_route(id: &str, host: &str, upstream: &str) -> String {
    format!("  - {{ id: {id}, uri: /*, host: {host}, upstream_id: {upstream} }}\n")
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

#[test]
fn all_four_call_kinds_pass_over_grpcs_with_metadata_and_trailers() {
    let (dir, pki) = setup();
    let server = GrpcServer::start("a", Some(&pki));
    let ups = upstream("echo", "grpcs", &[server.port], MTLS, "");
    let gw = TlsGateway::start(dir.path(), "", &resources(&pki, &echo_route("echo"), &ups));
    block_on(async {
        let mut c = tls_client(gw.tls_port, &pki, false).await;

        // Unary, with metadata both ways; the node saw Pylon's client certificate.
        let mut req = Request::new(echo("hello"));
        req.metadata_mut().insert("x-meta", "m1".parse().unwrap());
        let resp = c.unary(req).await.unwrap();
        assert_eq!(resp.metadata().get("x-echo-meta").unwrap(), "m1");
        let reply = resp.into_inner();
        assert_eq!(
            (reply.message.as_str(), reply.server.as_str()),
            ("hello", "a")
        );
        assert_eq!(reply.client_cn, "client", "Pylon presented upstream-ssl");

        // The server's own error status, message and metadata arrive unchanged.
        let failing = EchoRequest {
            fail_code: Code::FailedPrecondition as i32,
            ..echo("x")
        };
        let err = c.unary(Request::new(failing)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert_eq!(err.message(), "Unary failed on purpose");
        assert_eq!(err.metadata().get("x-detail").unwrap(), "from-the-server");

        // Server streaming: five messages, then the status in real trailers.
        let req = EchoRequest {
            count: 5,
            fail_code: Code::ResourceExhausted as i32,
            ..echo("s")
        };
        let mut stream = c.server_stream(req).await.unwrap().into_inner();
        let mut got = Vec::new();
        let status = loop {
            match stream.message().await {
                Ok(Some(m)) => got.push(m.message),
                Ok(None) => panic!("the stream ended without the server's status"),
                Err(status) => break status,
            }
        };
        assert_eq!(got, ["s 0", "s 1", "s 2", "s 3", "s 4"]);
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(status.message(), "ServerStream failed on purpose");
        assert_eq!(
            status.metadata().get("x-detail").unwrap(),
            "from-the-server"
        );
        // A stream that ends well: grpc-status 0 in the trailers.
        let req = EchoRequest {
            count: 3,
            ..echo("t")
        };
        let mut stream = c.server_stream(req).await.unwrap().into_inner();
        let mut n = 0;
        while stream.message().await.unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
        let trailers = stream.trailers().await.unwrap().unwrap();
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");

        // Client streaming.
        let reqs = ["a", "b", "c"].map(|m| EchoRequest {
            payload: vec![7; 10],
            ..echo(m)
        });
        let reply = c.client_stream(reqs.to_vec()).await.unwrap();
        assert_eq!((reply.message.as_str(), reply.index), ("a,b,c", 30));

        // Bidirectional: each reply arrives before the next request is sent.
        let (tx, mut replies) = c.bidi().await.unwrap();
        for i in 0..3u64 {
            tx.send(echo(&format!("b{i}"))).await.unwrap();
            let m = replies.message().await.unwrap().unwrap();
            assert_eq!((m.message, m.index), (format!("b{i}"), i));
        }
        drop(tx);
        assert!(replies.message().await.unwrap().is_none());
        assert_eq!(c.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    });
    let seen = server.seen();
    let unary = seen.iter().find(|c| c.path == UNARY).unwrap();
    assert_eq!(unary.header("te"), Some("trailers"));
    assert_eq!(unary.header("x-meta"), Some("m1"));
    assert_eq!(unary.header("content-type"), Some("application/grpc"));
    assert!(seen.iter().any(|c| c.path == BIDI));
}

#[test]
fn messages_of_4_mib_and_more_pass_both_ways() {
    let (dir, pki) = setup();
    let server = GrpcServer::start("a", Some(&pki));
    let ups = upstream("echo", "grpcs", &[server.port], MTLS, "");
    let gw = TlsGateway::start(dir.path(), "", &resources(&pki, &echo_route("echo"), &ups));
    block_on(async {
        let mut c = tls_client(gw.tls_port, &pki, false).await;
        let payload: Vec<u8> = (0..(5 << 20) + 17).map(|i| (i % 251) as u8).collect();
        let req = EchoRequest {
            payload: payload.clone(),
            ..echo("big")
        };
        let reply = c.unary(Request::new(req)).await.unwrap().into_inner();
        assert!(
            reply.payload == payload,
            "the 5 MiB payload came back changed"
        );
        let reqs = vec![
            EchoRequest {
                payload: vec![1; 4 << 20],
                ..echo("x")
            },
            EchoRequest {
                payload: vec![2; 4 << 20],
                ..echo("y")
            },
        ];
        let reply = c.client_stream(reqs).await.unwrap();
        assert_eq!(reply.index, 8 << 20);
    });
}

#[test]
fn a_hundred_concurrent_streams_share_pooled_upstream_connections() {
    let (dir, pki) = setup();
    let server = GrpcServer::start("a", Some(&pki));
    let ups = upstream("echo", "grpcs", &[server.port], MTLS, "");
    let gw = TlsGateway::start(dir.path(), "", &resources(&pki, &echo_route("echo"), &ups));
    block_on(async {
        let c = tls_client(gw.tls_port, &pki, false).await;
        for round in 0..2 {
            // Each call holds its stream 300 ms, so the 100 are in flight together.
            let calls = (0..100).map(|i| {
                let mut c = c.clone();
                async move {
                    let req = EchoRequest {
                        sleep_ms: 300,
                        ..echo(&format!("{round}-{i}"))
                    };
                    c.unary(Request::new(req)).await
                }
            });
            for r in futures_util::future::join_all(calls).await {
                r.unwrap();
            }
        }
        assert_eq!(c.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    });
    assert_eq!(server.calls(UNARY), 200);
    // A cold start does not open one connection per call, and the second round reuses.
    let upstream_conns = server.connections();
    assert!(
        upstream_conns <= 2,
        "{upstream_conns} upstream connections for 2 × 100 concurrent calls"
    );
}

#[test]
fn gateway_failures_answer_grpc_status_and_message() {
    let (dir, pki) = setup();
    let server = GrpcServer::start("a", Some(&pki));
    let refused = free_port();
    let ca_only = "      ca_certificate_id: upstream-ca\n      sni: test.com";
    let wrong_name = "      client_cert_id: upstream-ssl\n      ca_certificate_id: upstream-ca\n      sni: other.com";
    let ups = [
        upstream("refused", "grpc", &[refused], "", ""),
        upstream("no-cert", "grpcs", &[server.port], ca_only, ""),
        upstream("wrong-name", "grpcs", &[server.port], wrong_name, ""),
        upstream(
            "slow",
            "grpcs",
            &[server.port],
            MTLS,
            "    timeout: { read: 0.5 }\n",
        ),
    ]
    .concat();
    let routes = [
        host_route("r1", "refused.test", "refused"),
        host_route("r2", "no-cert.test", "no-cert"),
        host_route("r3", "wrong-name.test", "wrong-name"),
        host_route("r4", "slow.test", "slow"),
    ]
    .concat();
    let gw = Gateway::start(dir.path(), &resources(&pki, routes.trim_end(), &ups));
    let failure = |host: &'static str, req: EchoRequest| async move {
        let mut c = h2c_client(gw.port, host).await;
        c.unary(Request::new(req)).await.unwrap_err()
    };
    block_on(async {
        let mut c = h2c_client(gw.port, "nothing.test").await;
        let err = c.call("/nothing.Here/Call", echo("x")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
        assert_eq!(err.message(), "pylon: no route matches /nothing.Here/Call");

        let err = failure("refused.test", echo("x")).await;
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert_eq!(err.message(), "pylon: the upstream refused the connection");

        let err = failure("no-cert.test", echo("x")).await;
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            err.message().contains("client certificate"),
            "{err:?} {}",
            gw.log()
        );

        let err = failure("wrong-name.test", echo("x")).await;
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("certificate"), "{err:?}");

        let slow = EchoRequest {
            sleep_ms: 3000,
            ..echo("x")
        };
        let err = failure("slow.test", slow).await;
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        assert_eq!(err.message(), "pylon: the upstream did not answer in time");
    });
    let log = gw.log();
    assert!(
        log.contains("route r1 upstream refused"),
        "one error line: {log}"
    );
}

#[test]
fn a_node_lost_in_the_middle_of_a_stream_ends_the_call_with_unavailable() {
    let (dir, pki) = setup();
    let server = GrpcServer::start("a", Some(&pki));
    let ups = upstream("echo", "grpcs", &[server.port], MTLS, "");
    let gw = TlsGateway::start(dir.path(), "", &resources(&pki, &echo_route("echo"), &ups));
    block_on(async {
        let mut c = tls_client(gw.tls_port, &pki, false).await;
        let req = EchoRequest {
            count: 1000,
            interval_ms: 20,
            ..echo("s")
        };
        let mut stream = c.server_stream(req).await.unwrap().into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap().message, "s 0");
        assert_eq!(stream.message().await.unwrap().unwrap().message, "s 1");
        server.stop();
        let status = loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended as if complete"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().starts_with("pylon: "), "{status:?}");
    });
}

#[test]
fn grpc_timeout_bounds_the_upstream_call() {
    let (dir, pki) = setup();
    let server = GrpcServer::start("a", Some(&pki));
    let ups = upstream("echo", "grpcs", &[server.port], MTLS, "");
    let gw = Gateway::start(dir.path(), &resources(&pki, &echo_route("echo"), &ups));
    block_on(async {
        // The server ignores grpc-timeout and sleeps 10 s; the upstream read timeout is
        // 60 s: only the client's deadline, applied by Pylon, can end this call early (the
        // call is sent by hand: tonic's client would enforce its deadline itself).
        let slow = EchoRequest {
            sleep_ms: 10_000,
            ..echo("late")
        };
        let start = Instant::now();
        let timeout = [("grpc-timeout", "400m")];
        let answer = raw_call(gw.port, "test.com", UNARY, &timeout, &slow).await;
        let took = start.elapsed();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.grpc("grpc-status").as_deref(),
            Some("4"),
            "{answer:?}"
        );
        let message = answer.grpc("grpc-message").unwrap();
        assert_eq!(
            message,
            "pylon: the upstream did not answer in time (grpc-timeout 400ms)"
        );
        assert!(took >= Duration::from_millis(350), "{took:?}");
        assert!(
            took < Duration::from_secs(5),
            "ended by the deadline: {took:?}"
        );

        // A deadline the call meets changes nothing (tonic's client this time).
        let mut c = h2c_client(gw.port, "test.com").await;
        let mut req = Request::new(EchoRequest {
            sleep_ms: 50,
            ..echo("in time")
        });
        req.set_timeout(Duration::from_secs(10));
        assert_eq!(c.unary(req).await.unwrap().into_inner().message, "in time");

        // A malformed grpc-timeout is refused as grpc-go refuses it.
        let bad = [("grpc-timeout", "soon")];
        let answer = raw_call(gw.port, "test.com", UNARY, &bad, &echo("x")).await;
        assert_eq!(
            answer.grpc("grpc-status").as_deref(),
            Some("13"),
            "{answer:?}"
        );
        assert_eq!(
            answer.grpc("grpc-message").as_deref(),
            Some("pylon: malformed grpc-timeout")
        );
    });
    let seen = server.seen();
    let late = seen.iter().find(|c| c.path == UNARY).unwrap();
    assert!(late.header("grpc-timeout").is_some(), "forwarded: {late:?}");
}

#[test]
fn the_grpc_health_check_takes_a_node_out_and_back() {
    let (dir, pki) = setup();
    let a = GrpcServer::start("a", Some(&pki));
    let b = GrpcServer::start("b", Some(&pki));
    let checks = "    checks:\n      active:\n        type: grpc\n        timeout: 1\n        healthy: { interval: 0.1, successes: 1 }\n        unhealthy: { interval: 0.1, http_failures: 1 }\n";
    let ups = upstream("echo", "grpcs", &[a.port, b.port], MTLS, checks);
    let gw = TlsGateway::start(dir.path(), "", &resources(&pki, &echo_route("echo"), &ups));
    let servers = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            let mut names = Vec::new();
            for _ in 0..10 {
                names.push(c.say("who").await.unwrap().server);
            }
            names
        }
    };
    block_on(async {
        let mut c = tls_client(gw.tls_port, &pki, false).await;
        assert!(servers(&mut c).await.contains(&"a".to_string()));

        a.set_serving(false);
        wait_for_log(
            &gw.gw,
            &format!("node 127.0.0.1:{} is now unhealthy", a.port),
        );
        assert!(servers(&mut c).await.iter().all(|s| s == "b"));

        a.set_serving(true);
        wait_for_log(&gw.gw, &format!("node 127.0.0.1:{} is now healthy", a.port));
        assert!(servers(&mut c).await.contains(&"a".to_string()));
    });
    // The probes were gRPC calls over mTLS with Pylon's client certificate.
    let probe = a
        .seen()
        .into_iter()
        .find(|c| c.path == HEALTH_CHECK)
        .unwrap();
    assert_eq!(probe.client_cn, "client");
    assert_eq!(probe.header("content-type"), Some("application/grpc"));
}

#[test]
fn h2c_clients_reach_grpc_and_grpcs_upstreams() {
    let (dir, pki) = setup();
    let clear = GrpcServer::start("clear", None);
    let tls = GrpcServer::start("tls", Some(&pki));
    let ups = [
        upstream("clear", "grpc", &[clear.port], "", ""),
        upstream("tls", "grpcs", &[tls.port], MTLS, ""),
    ]
    .concat();
    let routes = [
        host_route("c", "clear.test", "clear"),
        host_route("t", "tls.test", "tls"),
    ]
    .concat();
    let gw = Gateway::start(dir.path(), &resources(&pki, routes.trim_end(), &ups));
    block_on(async {
        for (host, name) in [("clear.test", "clear"), ("tls.test", "tls")] {
            let mut c = h2c_client(gw.port, host).await;
            let reply = c.say("hi").await.unwrap();
            assert_eq!(reply.server, name);
            let (tx, mut replies) = c.bidi().await.unwrap();
            tx.send(echo("ping")).await.unwrap();
            assert_eq!(replies.message().await.unwrap().unwrap().message, "ping");
        }
    });
    // Plain HTTP/1.1 still works on the same listener, and so does an HTTP/1.0 request
    // shorter than the 24-byte HTTP/2 preface (HAProxy's default health check).
    let (status, _) = gw.get("/pylon.test.Echo/Unary", Some("nothing.test"));
    assert_eq!(status, 404);
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut tcp, b"OPTIONS / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut tcp, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");
}

#[test]
fn https_upstreams_use_http2_only_when_asked_and_offered() {
    let (dir, pki) = setup();
    let grpc = GrpcServer::start("h2", Some(&pki));
    let h1 = Origin::start(&pki, true);
    let http2 = "    http2: true\n";
    let ups = [
        upstream("h2", "https", &[grpc.port], MTLS, http2),
        upstream("h1", "https", &[h1.port], MTLS, http2),
        upstream("default", "https", &[grpc.port], MTLS, ""),
    ]
    .concat();
    let routes = [
        host_route("a", "h2.test", "h2"),
        host_route("b", "h1.test", "h1"),
        host_route("c", "default.test", "default"),
    ]
    .concat();
    let gw = Gateway::start(dir.path(), &resources(&pki, routes.trim_end(), &ups));
    block_on(async {
        let mut c = h2c_client(gw.port, "h2.test").await;
        assert_eq!(c.say("over h2").await.unwrap().server, "h2");
        // Without http2, Pylon speaks HTTP/1.1, which an HTTP/2-only node refuses.
        let mut c = h2c_client(gw.port, "default.test").await;
        assert_eq!(c.say("x").await.unwrap_err().code(), Code::Unavailable);
    });
    // A node that does not offer h2 is reached over HTTP/1.1.
    let (status, body) = gw.get("/hello", Some("h1.test"));
    assert_eq!((status, body.as_str()), (200, "Hello API7!"));
    // An HTTP/1.1 client's request goes to an h2 node as HTTP/2.
    let (status, _) = gw.get("/not/grpc", Some("h2.test"));
    assert_eq!(status, 200);
    let seen = grpc.seen();
    let plain = seen.iter().find(|c| c.path == "/not/grpc").unwrap();
    assert_eq!(plain.header("connection"), None, "{plain:?}");
}

#[test]
fn grpc_calls_are_retried_only_when_nothing_reached_the_upstream() {
    let (dir, pki) = setup();
    let a = GrpcServer::start("a", Some(&pki));
    let b = GrpcServer::start("b", Some(&pki));
    let refused = free_port();
    let ups = [
        upstream("half", "grpcs", &[refused, a.port], MTLS, ""),
        upstream("both", "grpcs", &[a.port, b.port], MTLS, ""),
    ]
    .concat();
    let routes = [
        host_route("h", "half.test", "half"),
        host_route("b", "both.test", "both"),
    ]
    .concat();
    let gw = Gateway::start(dir.path(), &resources(&pki, routes.trim_end(), &ups));
    block_on(async {
        // A refused connection sent nothing: every call lands on the live node.
        let mut c = h2c_client(gw.port, "half.test").await;
        for _ in 0..4 {
            assert_eq!(c.say("x").await.unwrap().server, "a");
        }
        // A node that took the call and reset its stream: no second try.
        let mut c = h2c_client(gw.port, "both.test").await;
        let mut req = Request::new(echo("once"));
        req.metadata_mut().insert("x-reset", "1".parse().unwrap());
        let err = c.unary(req).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().starts_with("pylon: "), "{err:?}");
    });
    let tried = |s: &GrpcServer| {
        s.seen()
            .iter()
            .filter(|c| c.header("x-reset").is_some())
            .count()
    };
    assert_eq!(tried(&a) + tried(&b), 1, "the reset call was sent once");
}
