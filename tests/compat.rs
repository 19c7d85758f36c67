//! APISIX-shaped resources files load unchanged and answer as APISIX does: objects without
//! ids, `upstream_id` winning over an inline upstream, nodes without a port, fields Pylon
//! does not use, `status: 0`, the 404 body, and WebSocket upgrades (also over an upstream
//! that requires a client certificate).

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use common::ops::*;
use common::origins::HttpOrigin;
use common::*;

/// A file as an APISIX user writes it (APISIX schema fields, no ids where nothing refers).
fn apisix_file(a: u16, b: u16) -> String {
    format!(
        r#"routes:
  - uri: /anon
    upstream:
      nodes: {{"127.0.0.1:{a}": 1}}
  - id: both
    uri: /both
    name: both
    desc: upstream_id wins over the inline upstream
    labels: {{ team: edge }}
    priority: 3
    status: 1
    enable_websocket: true
    timeout: {{ connect: 3, send: 3, read: 3 }}
    service_id: svc
  - id: off
    uri: /off
    status: 0
    upstream_id: ua
  - id: default-ports
    uri: /default-ports
    upstream:
      nodes: {{"127.0.0.1": 1}}
services:
  - id: svc
    upstream_id: ua
    upstream:
      type: roundrobin
      nodes:
        - host: 127.0.0.1
          port: {b}
          weight: 1
  - name: unreferenced service without id
    upstream_id: ua
upstreams:
  - id: ua
    type: roundrobin
    nodes: {{"127.0.0.1:{a}": 1}}
    retries: 0
    keepalive_pool: {{ size: 10, idle_timeout: 60, requests: 100 }}
    pass_host: pass
    timeout: {{ connect: 2, send: 2, read: 2 }}
  - name: an upstream nothing refers to, without id or port
    scheme: https
    nodes:
      - host: 127.0.0.1
        weight: 1
    tls: {{ verify: false }}
#END
"#
    )
}

#[test]
fn apisix_shaped_file_loads_and_answers_as_apisix() {
    let dir = tempfile::tempdir().unwrap();
    let a = HttpOrigin::start("a");
    let b = HttpOrigin::start("b");
    let out = check(dir.path(), &apisix_file(a.port, b.port));
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("services[0].upstream: ignored: upstream_id is set too, and wins"),
        "{}",
        out.stderr
    );

    let mport = free_port();
    let gw = Pylon::start(
        dir.path(),
        &format!("  metrics_listen: \"{mport}\"\n"),
        &apisix_file(a.port, b.port),
    );
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", gw.port);
    assert_eq!(get(&url("/anon")), (200, "a".to_string()));
    assert_eq!(get(&url("/both")).1, "a", "upstream_id wins, as in APISIX");
    let (status, body) = get(&url("/off"));
    assert_eq!(status, 404, "status: 0 disables the route");
    assert_eq!(
        body, "{\"error_msg\":\"404 Route Not Found\"}\n",
        "APISIX's body"
    );

    assert!(wait_until(Duration::from_secs(10), || listening(mport)));
    let m = scrape(mport);
    // A route without id is named by its position; nodes without a port take the scheme's.
    assert!(
        m.contains(r#"pylon_http_requests_total{route="routes[0]",status="200"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"node="127.0.0.1:80""#), "{m}");
    assert!(m.contains(r#"node="127.0.0.1:443""#), "{m}");
}

#[test]
fn apisix_parameter_paths_get_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(
        dir.path(),
        "routes:\n  - uris: [/a, /user/:id]\n    upstream:\n      nodes: {\"127.0.0.1:1\": 1}\n",
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("routes[0].uris[1]: \"/user/:id\" holds a :parameter segment"),
        "{}",
        out.stderr
    );
}

#[test]
fn referenced_objects_still_need_ids() {
    let dir = tempfile::tempdir().unwrap();
    let out = check(
        dir.path(),
        "routes:\n  - uri: /a\n    service_id: s\nservices:\n  - upstream_id: u\nupstreams:\n  - nodes: {\"127.0.0.1:1\": 1}\n",
    );
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("routes[0].service_id: no service with id \"s\""),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("services[0].upstream_id: no upstream with id \"u\""),
        "{}",
        out.stderr
    );
}

/// A WebSocket echo server on a free port: plain, or TLS requiring a client certificate
/// from `pki`'s CA. Returns (runtime, port).
fn ws_echo(pki: Option<&Pki>) -> (tokio::runtime::Runtime, u16) {
    let (rt, listener, port) = loopback_listener();
    let acceptor = pki.map(|pki| Arc::new(server_acceptor(pki, true)));
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    None => {
                        if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                            echo(ws).await;
                        }
                    }
                    Some(acc) => {
                        let ssl = openssl::ssl::Ssl::new(acc.context()).unwrap();
                        let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                        if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                            return;
                        }
                        if let Ok(ws) = tokio_tungstenite::accept_async(tls).await {
                            echo(ws).await;
                        }
                    }
                }
            });
        }
    });
    (rt, port)
}

async fn echo<S>(mut ws: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

/// Opens `ws://127.0.0.1:port/path`, sends three messages and returns the echoes.
fn ws_round_trip(port: u16, path: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (mut ws, resp) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(resp.status(), 101);
        let mut got = Vec::new();
        for i in 0..3 {
            ws.send(Message::text(format!("m{i}"))).await.unwrap();
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            got.push(m.into_text().unwrap().to_string());
        }
        ws.close(None).await.unwrap();
        got
    })
}

#[test]
fn websocket_upgrades_pass_through_plain_and_mtls_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let (_plain_rt, plain) = ws_echo(None);
    let (_tls_rt, tls) = ws_echo(Some(&pki));
    let resources = format!(
        r#"routes:
  - id: ws
    uri: /ws
    enable_websocket: true
    upstream:
      nodes: {{"127.0.0.1:{plain}": 1}}
  - id: wss
    uri: /wss
    service_id: ws-service
  - id: no-ws
    uri: /no-ws
    upstream:
      nodes: {{"127.0.0.1:{plain}": 1}}
services:
  - id: ws-service
    enable_websocket: true
    upstream_id: mtls
upstreams:
  - id: mtls
    scheme: https
    nodes: {{"127.0.0.1:{tls}": 1}}
    tls:
      client_cert: {crt}
      client_key: {key}
      ca_certs: [{ca}]
      sni: test.com
"#,
        crt = pki.path("client.crt"),
        key = pki.path("client.key"),
        ca = pki.path("ca.crt"),
    );
    let gw = Pylon::start(dir.path(), "", &resources);
    assert_eq!(ws_round_trip(gw.port, "/ws"), ["m0", "m1", "m2"]);
    // enable_websocket from the route's service.
    assert_eq!(ws_round_trip(gw.port, "/wss"), ["m0", "m1", "m2"]);
    // Without enable_websocket the upgrade headers are dropped, as in APISIX: no 101.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("ws://127.0.0.1:{}/no-ws", gw.port);
    let refused = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .unwrap()
    });
    assert!(refused.is_err(), "upgraded without enable_websocket");
}
