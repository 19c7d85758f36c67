//! A real gRPC server and client for the gRPC tests and benchmark: tonic's gRPC codec and
//! call handling (`tonic::server::Grpc`, `tonic::client::Grpc`) with hand-written prost
//! messages, over hyper's HTTP/2, in cleartext or over OpenSSL with a required client
//! certificate. The server counts the TCP connections it accepts and records every call.
//!
//! The service, `pylon.test.Echo`:
//! - `Unary`: echoes `message` and `payload`; response header `x-echo-meta` repeats the
//!   request's `x-meta`; sleeps `sleep_ms` first (ignoring `grpc-timeout`, so that only
//!   the gateway enforces it); `fail_code` answers that status with metadata `x-detail`.
//! - `ServerStream`: `count` replies, `interval_ms` apart, then `fail_code` (if set) in the
//!   trailers.
//! - `ClientStream`: one reply: the messages joined by `,`, `index` = total payload bytes.
//! - `Bidi`: one reply per request, as each arrives.
//!
//! and `grpc.health.v1.Health/Check`, answering what [`GrpcServer::set_serving`] says. A
//! request with metadata `x-reset: 1` gets its stream reset (RST_STREAM) instead.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::ssl::{AlpnError, SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::{loopback_listener, Pki};

/// The service's request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    /// ServerStream: replies to send.
    #[prost(uint32, tag = "3")]
    pub count: u32,
    /// Unary: milliseconds to sleep before answering.
    #[prost(uint64, tag = "4")]
    pub sleep_ms: u64,
    /// Unary, ServerStream: gRPC status to end with (0 = OK).
    #[prost(int32, tag = "5")]
    pub fail_code: i32,
    /// ServerStream: milliseconds between replies.
    #[prost(uint64, tag = "6")]
    pub interval_ms: u64,
}

/// The service's reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    /// The answering server's name.
    #[prost(string, tag = "3")]
    pub server: String,
    /// CN of the client certificate the connection presented ("" without TLS).
    #[prost(string, tag = "4")]
    pub client_cn: String,
    /// ServerStream/Bidi: the reply's position; ClientStream: total payload bytes.
    #[prost(uint64, tag = "5")]
    pub index: u64,
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse` (status 1 = SERVING, 2 = NOT_SERVING).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// Largest message either side accepts (tonic's default is 4 MiB).
pub const MAX_MESSAGE: usize = 64 << 20;

pub const UNARY: &str = "/pylon.test.Echo/Unary";
pub const SERVER_STREAM: &str = "/pylon.test.Echo/ServerStream";
pub const CLIENT_STREAM: &str = "/pylon.test.Echo/ClientStream";
pub const BIDI: &str = "/pylon.test.Echo/Bidi";
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// One call the server saw.
#[derive(Debug, Clone)]
pub struct SeenCall {
    pub path: String,
    /// Which TCP connection (from 1) carried it.
    pub conn: u64,
    pub client_cn: String,
    /// Request headers, names in lower case.
    pub headers: Vec<(String, String)>,
}

impl SeenCall {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    name: String,
    serving: AtomicBool,
    connections: AtomicU64,
    seen: Mutex<Vec<SeenCall>>,
}

/// A gRPC server on a free loopback port, stopped on drop.
pub struct GrpcServer {
    pub port: u16,
    state: Arc<State>,
    _runtime: tokio::runtime::Runtime,
}

/// A TLS acceptor with `pki`'s `server.crt` (for test.com) that requires a client
/// certificate from `pki`'s CA and selects ALPN `h2`.
pub fn h2_acceptor(pki: &Pki) -> SslAcceptor {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(pki.dir.join("server.crt"))
        .unwrap();
    b.set_private_key_file(pki.dir.join("server.key"), SslFiletype::PEM)
        .unwrap();
    b.set_ca_file(pki.dir.join("ca.crt")).unwrap();
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    b.set_alpn_select_callback(|_, offered| {
        openssl::ssl::select_next_proto(b"\x02h2", offered).ok_or(AlpnError::NOACK)
    });
    b.build()
}

impl GrpcServer {
    /// Starts server `name`: over TLS with `pki` (client certificate required), or in
    /// cleartext (h2c with prior knowledge) without.
    pub fn start(name: &str, pki: Option<&Pki>) -> GrpcServer {
        let acceptor = pki.map(|p| Arc::new(h2_acceptor(p)));
        let (runtime, listener, port) = loopback_listener();
        let state = Arc::new(State {
            name: name.to_string(),
            serving: AtomicBool::new(true),
            connections: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tcp.set_nodelay(true).unwrap();
                let conn = st.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let (st, acceptor) = (st.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(st, conn, String::new(), TokioIo::new(tcp)).await,
                        Some(acceptor) => {
                            let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
                            let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                            if Pin::new(&mut tls).accept().await.is_err() {
                                return;
                            }
                            let cn = tls
                                .ssl()
                                .peer_certificate()
                                .and_then(|c| {
                                    let name = c.subject_name();
                                    let e = name
                                        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                                        .next()?;
                                    Some(e.data().to_string().unwrap())
                                })
                                .unwrap_or_default();
                            serve(st, conn, cn, TokioIo::new(tls)).await
                        }
                    }
                });
            }
        });
        GrpcServer {
            port,
            state,
            _runtime: runtime,
        }
    }

    /// Stops the server at once: its connections are closed under their calls.
    pub fn stop(self) {
        self._runtime.shutdown_background();
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// What `Health/Check` answers from now on.
    pub fn set_serving(&self, serving: bool) {
        self.state.serving.store(serving, Ordering::SeqCst);
    }

    /// Every call seen so far.
    pub fn seen(&self) -> Vec<SeenCall> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Calls seen so far on `path`.
    pub fn calls(&self, path: &str) -> usize {
        self.seen().iter().filter(|c| c.path == path).count()
    }
}

async fn serve<I>(st: Arc<State>, conn: u64, cn: String, io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (st, cn) = (st.clone(), cn.clone());
        async move {
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            st.seen.lock().unwrap().push(SeenCall {
                path: req.uri().path().to_string(),
                conn,
                client_cn: cn.clone(),
                headers,
            });
            if req.headers().get("x-reset").is_some() {
                // hyper resets the stream when the service fails.
                return Err("reset requested");
            }
            Ok::<_, &str>(dispatch(st, cn, req).await)
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(1000)
        .serve_connection(io, svc)
        .await;
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

fn echo_codec() -> ProstCodec<EchoReply, EchoRequest> {
    ProstCodec::default()
}

fn grpc<T: tonic::codec::Codec>(codec: T) -> tonic::server::Grpc<T> {
    tonic::server::Grpc::new(codec)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn failure(code: i32, what: &str) -> Status {
    let mut md = MetadataMap::new();
    md.insert("x-detail", MetadataValue::from_static("from-the-server"));
    Status::with_metadata(Code::from(code), format!("{what} failed on purpose"), md)
}

async fn dispatch(
    st: Arc<State>,
    cn: String,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<tonic::body::Body> {
    let reply = {
        let (name, cn) = (st.name.clone(), cn.clone());
        move |message: String, payload: Vec<u8>, index: u64| EchoReply {
            message,
            payload,
            server: name.clone(),
            client_cn: cn.clone(),
            index,
        }
    };
    match req.uri().path() {
        UNARY => {
            let svc = tower::service_fn(move |r: Request<EchoRequest>| {
                let reply = reply.clone();
                async move {
                    let meta = r.metadata().get("x-meta").cloned();
                    let m = r.into_inner();
                    if m.sleep_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(m.sleep_ms)).await;
                    }
                    if m.fail_code != 0 {
                        return Err(failure(m.fail_code, "Unary"));
                    }
                    let mut resp = Response::new(reply(m.message, m.payload, 0));
                    if let Some(v) = meta {
                        resp.metadata_mut().insert("x-echo-meta", v);
                    }
                    Ok(resp)
                }
            });
            grpc(echo_codec()).unary(svc, req).await
        }
        SERVER_STREAM => {
            let svc = tower::service_fn(move |r: Request<EchoRequest>| {
                let reply = reply.clone();
                async move {
                    let m = r.into_inner();
                    let replies: Vec<_> = (0..m.count)
                        .map(|i| Ok(reply(format!("{} {i}", m.message), Vec::new(), i.into())))
                        .collect();
                    let end = (m.fail_code != 0).then(|| Err(failure(m.fail_code, "ServerStream")));
                    let interval = Duration::from_millis(m.interval_ms);
                    let paced = futures_util::stream::iter(replies.into_iter().chain(end)).then(
                        move |r| async move {
                            tokio::time::sleep(interval).await;
                            r
                        },
                    );
                    let stream: ReplyStream = Box::pin(paced);
                    Ok(Response::new(stream))
                }
            });
            grpc(echo_codec()).server_streaming(svc, req).await
        }
        CLIENT_STREAM => {
            let svc = tower::service_fn(move |r: Request<Streaming<EchoRequest>>| {
                let reply = reply.clone();
                async move {
                    let mut stream = r.into_inner();
                    let (mut messages, mut bytes) = (Vec::new(), 0u64);
                    while let Some(m) = stream.next().await {
                        let m = m?;
                        messages.push(m.message);
                        bytes += m.payload.len() as u64;
                    }
                    Ok(Response::new(reply(messages.join(","), Vec::new(), bytes)))
                }
            });
            grpc(echo_codec()).client_streaming(svc, req).await
        }
        BIDI => {
            let svc = tower::service_fn(move |r: Request<Streaming<EchoRequest>>| {
                let reply = reply.clone();
                async move {
                    let stream: ReplyStream = Box::pin(
                        r.into_inner()
                            .enumerate()
                            .map(move |(i, m)| m.map(|m| reply(m.message, m.payload, i as u64))),
                    );
                    Ok(Response::new(stream))
                }
            });
            grpc(echo_codec()).streaming(svc, req).await
        }
        HEALTH_CHECK => {
            let svc = tower::service_fn(move |_r: Request<HealthCheckRequest>| {
                let serving = st.serving.load(Ordering::SeqCst);
                let status = if serving { 1 } else { 2 };
                async move { Ok(Response::new(HealthCheckResponse { status })) }
            });
            let codec = ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default();
            grpc(codec).unary(svc, req).await
        }
        _ => Status::unimplemented("no such method").into_http(),
    }
}

/// A client connection, counting the TCP connections it opened.
#[derive(Clone)]
pub struct Client {
    grpc: tonic::client::Grpc<Channel>,
    pub connections: Arc<AtomicU64>,
}

/// A client over cleartext HTTP/2 with prior knowledge (h2c) to `127.0.0.1:port`, with
/// `:authority` `host:port`.
pub async fn h2c_client(port: u16, host: &str) -> Client {
    let connections = Arc::new(AtomicU64::new(0));
    let count = connections.clone();
    let connector = tower::service_fn(move |_: http::Uri| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, std::io::Error>(TokioIo::new(tcp))
        }
    });
    let channel = Endpoint::from_shared(format!("http://{host}:{port}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap();
    Client::new(channel, connections)
}

/// A client over TLS (ALPN `h2`, SNI `test.com`, trusting `pki`'s CA) to
/// `127.0.0.1:port`, presenting `pki`'s `client.crt` when `client_cert`.
pub async fn tls_client(port: u16, pki: &Pki, client_cert: bool) -> Client {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_ca_file(pki.dir.join("ca.crt")).unwrap();
    b.set_alpn_protos(b"\x02h2").unwrap();
    if client_cert {
        b.set_certificate_chain_file(pki.dir.join("client.crt"))
            .unwrap();
        b.set_private_key_file(pki.dir.join("client.key"), SslFiletype::PEM)
            .unwrap();
    }
    let connector = Arc::new(b.build());
    let connections = Arc::new(AtomicU64::new(0));
    let count = connections.clone();
    let connect = tower::service_fn(move |_: http::Uri| {
        count.fetch_add(1, Ordering::SeqCst);
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.set_nodelay(true)?;
            let ssl = connector
                .configure()
                .and_then(|c| c.into_ssl("test.com"))
                .map_err(std::io::Error::other)?;
            let mut tls = tokio_openssl::SslStream::new(ssl, tcp).map_err(std::io::Error::other)?;
            Pin::new(&mut tls)
                .connect()
                .await
                .map_err(std::io::Error::other)?;
            assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = Endpoint::from_shared(format!("https://test.com:{port}"))
        .unwrap()
        .connect_with_connector(connect)
        .await
        .unwrap();
    Client::new(channel, connections)
}

fn path(p: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(p)
}

fn client_codec() -> ProstCodec<EchoRequest, EchoReply> {
    ProstCodec::default()
}

impl Client {
    fn new(channel: Channel, connections: Arc<AtomicU64>) -> Client {
        let grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Client { grpc, connections }
    }

    /// `Unary` with `req` (metadata, timeout…).
    pub async fn unary(
        &mut self,
        req: Request<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        self.grpc.unary(req, path(UNARY), client_codec()).await
    }

    /// `Unary` with just a message.
    pub async fn say(&mut self, message: &str) -> Result<EchoReply, Status> {
        let req = Request::new(EchoRequest {
            message: message.into(),
            ..Default::default()
        });
        self.unary(req).await.map(Response::into_inner)
    }

    /// Any unary method with an `EchoRequest` (for unknown paths).
    pub async fn call(
        &mut self,
        method: &'static str,
        m: EchoRequest,
    ) -> Result<EchoReply, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let r = self
            .grpc
            .unary(Request::new(m), path(method), client_codec());
        r.await.map(Response::into_inner)
    }

    /// `ServerStream`: the response (metadata) and its stream.
    pub async fn server_stream(
        &mut self,
        req: EchoRequest,
    ) -> Result<Response<Streaming<EchoReply>>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let r = self
            .grpc
            .server_streaming(Request::new(req), path(SERVER_STREAM), client_codec());
        r.await
    }

    /// `ClientStream` with `reqs`.
    pub async fn client_stream(&mut self, reqs: Vec<EchoRequest>) -> Result<EchoReply, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let stream = futures_util::stream::iter(reqs);
        let r =
            self.grpc
                .client_streaming(Request::new(stream), path(CLIENT_STREAM), client_codec());
        r.await.map(Response::into_inner)
    }

    /// `Bidi`: a sender for requests and the reply stream.
    pub async fn bidi(
        &mut self,
    ) -> Result<(tokio::sync::mpsc::Sender<EchoRequest>, Streaming<EchoReply>), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let requests =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        let r = self
            .grpc
            .streaming(Request::new(requests), path(BIDI), client_codec());
        Ok((tx, r.await?.into_inner()))
    }
}

/// What a [`raw_call`] got back.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub trailers: Option<http::HeaderMap>,
    pub body: bytes::Bytes,
}

impl RawAnswer {
    /// A header from the trailers, or (Trailers-Only answer) from the headers.
    pub fn grpc(&self, name: &str) -> Option<String> {
        self.trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| self.headers.get(name))
            .map(|v| v.to_str().unwrap().to_string())
    }
}

/// One unary call sent by hand (hyper's HTTP/2 client in cleartext, no gRPC library), so
/// that the request carries exactly `headers` (tonic's client enforces `grpc-timeout`
/// itself and refuses a malformed one).
pub async fn raw_call(
    port: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    m: &EchoRequest,
) -> RawAnswer {
    use http_body_util::BodyExt;
    use prost::Message;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let pb = m.encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(pb.len() as u32).to_be_bytes());
    frame.extend_from_slice(&pb);
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{host}:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    RawAnswer {
        status: parts.status,
        headers: parts.headers,
        trailers: collected.trailers().cloned(),
        body: collected.to_bytes(),
    }
}
