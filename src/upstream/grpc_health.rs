//! Active gRPC health checks (`checks.active.type: grpc`): one call of the standard
//! `grpc.health.v1.Health/Check` method per probe
//! ([gRPC health checking protocol](https://github.com/grpc/grpc/blob/master/doc/health-checking.md)),
//! over HTTP/2 in cleartext or over TLS with the upstream's client certificate, CA, SNI and
//! verify settings.
//!
//! The two messages are tiny and stable, so they are encoded by hand (protobuf wire format):
//! `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }` (`SERVING` = 1).

use bytes::Bytes;
use log::debug;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;

use super::health::Outcome;

/// The method's path.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: u64 = 1;
/// Largest response body read from a probe, in bytes.
const MAX_BODY: usize = 64 * 1024;

/// `HealthCheckRequest { service }` as one gRPC length-prefixed message: a zero compression
/// flag, the length (4 bytes, big-endian), then the protobuf bytes.
pub fn request_message(service: &str) -> Vec<u8> {
    let mut pb = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        pb.push(0x0a); // field 1, wire type 2 (length-delimited)
        put_varint(&mut pb, service.len() as u64);
        pb.extend_from_slice(service.as_bytes());
    }
    let mut out = Vec::with_capacity(pb.len() + 5);
    out.push(0);
    out.extend_from_slice(&(pb.len() as u32).to_be_bytes());
    out.extend_from_slice(&pb);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// `HealthCheckResponse.status` from a gRPC response body (one length-prefixed message).
/// A missing field is 0 (`UNKNOWN`), as protobuf defaults it.
///
/// Errors: a compressed or truncated message, or bytes that are not protobuf.
pub fn response_status(body: &[u8]) -> std::result::Result<u64, &'static str> {
    let (&flag, rest) = body.split_first().ok_or("empty response")?;
    if flag != 0 {
        return Err("compressed response (the probe asks for none)");
    }
    let len = rest
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("truncated message prefix")?;
    let mut pb = rest.get(4..4 + len).ok_or("truncated message")?;
    let mut status = 0;
    while !pb.is_empty() {
        let key = varint(&mut pb).ok_or("bad field key")?;
        match key & 7 {
            0 => {
                let v = varint(&mut pb).ok_or("bad varint")?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => pb = pb.get(8..).ok_or("truncated fixed64")?,
            2 => {
                let n = varint(&mut pb).ok_or("bad length")? as usize;
                pb = pb.get(n..).ok_or("truncated field")?;
            }
            5 => pb = pb.get(4..).ok_or("truncated fixed32")?,
            _ => return Err("unknown wire type"),
        }
    }
    Ok(status)
}

/// One `Health/Check` call to `peer` (already set for HTTP/2, TLS and timeouts), with
/// `:authority` `host` and the extra metadata `headers`: [`Outcome::Serving`] when the
/// answer is grpc-status 0 with `SERVING`, [`Outcome::NotServing`] for any other answer
/// (another status, a gRPC error, a node that does not speak HTTP/2).
///
/// Errors: connection, TLS and HTTP/2 failures, as Pingora reports them.
pub async fn check(
    connector: &Connector,
    peer: &HttpPeer,
    host: &str,
    service: &str,
    headers: &[(String, String)],
) -> Result<Outcome> {
    let (session, _) = connector.get_http_session(peer).await?;
    let HttpSession::H2(mut h2) = session else {
        debug!("gRPC health check of {peer}: the node did not select HTTP/2");
        return Ok(Outcome::NotServing);
    };
    let scheme = if peer.tls() { "https" } else { "http" };
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(host)
        .path_and_query(CHECK_PATH)
        .build()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "health check URI", e))?;
    let mut req = RequestHeader::build("POST", CHECK_PATH.as_bytes(), None)?;
    req.set_uri(uri);
    req.insert_header("content-type", "application/grpc")?;
    req.insert_header("te", "trailers")?;
    req.insert_header("user-agent", "pylon-health-check")?;
    for (name, value) in headers {
        req.append_header(name.clone(), value.as_str())?;
    }
    h2.write_request_header(Box::new(req), false)?;
    h2.write_request_body(Bytes::from(request_message(service)), true)
        .await?;
    h2.read_response_header().await?;
    let head = h2.response_header().cloned();
    let mut body = Vec::new();
    while let Some(chunk) = h2.read_response_body().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Ok(Outcome::NotServing);
        }
        body.extend_from_slice(&chunk);
    }
    let trailers = h2.read_trailers().await?;
    let Some(head) = head else {
        return Ok(Outcome::NotServing);
    };
    // A Trailers-Only answer carries grpc-status in the header block.
    let grpc_status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| head.headers.get("grpc-status"))
        .map(|v| v.as_bytes().to_vec());
    if head.status.as_u16() != 200 || grpc_status.as_deref() != Some(b"0") {
        debug!(
            "gRPC health check of {peer}: HTTP {} grpc-status {:?}",
            head.status,
            grpc_status.map(|s| String::from_utf8_lossy(&s).into_owned())
        );
        return Ok(Outcome::NotServing);
    }
    match response_status(&body) {
        Ok(SERVING) => Ok(Outcome::Serving),
        Ok(other) => {
            debug!("gRPC health check of {peer}: status {other} (not SERVING)");
            Ok(Outcome::NotServing)
        }
        Err(why) => {
            debug!("gRPC health check of {peer}: unreadable answer: {why}");
            Ok(Outcome::NotServing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encodes_the_service_field() {
        assert_eq!(request_message(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            request_message("echo"),
            vec![0, 0, 0, 0, 6, 0x0a, 4, b'e', b'c', b'h', b'o']
        );
        let long = "s".repeat(200);
        let m = request_message(&long);
        assert_eq!(&m[5..8], &[0x0a, 0xc8, 0x01], "varint length 200");
        assert_eq!(m.len(), 5 + 3 + 200);
    }

    #[test]
    fn response_status_reads_field_one_and_skips_others() {
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(1));
        assert_eq!(response_status(&[0, 0, 0, 0, 2, 0x08, 2]), Ok(2));
        assert_eq!(response_status(&[0, 0, 0, 0, 0]), Ok(0), "default UNKNOWN");
        // An unknown string field 2 before the status.
        let body = [0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 1];
        assert_eq!(response_status(&body), Ok(1));
        assert!(response_status(&[1, 0, 0, 0, 2, 0x08, 1]).is_err());
        assert!(response_status(&[0, 0, 0, 0, 9, 0x08, 1]).is_err());
        assert!(response_status(&[0, 0, 0, 0, 2, 0x12, 5]).is_err());
        assert!(response_status(&[]).is_err());
    }
}
