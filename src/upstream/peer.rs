//! Builds the [`HttpPeer`] of each node once, at config load.
//!
//! The peer carries the resolved socket address, the client certificate (`Arc<CertKey>`,
//! shared, never re-parsed), the CA bundle, the verify flags, the SNI when it is known at load,
//! and a `group_key`. Pingora's connection-pool key hashes address, scheme, SNI, client
//! certificate serials and verify flags but not the CA bundle, so `group_key` is a digest of
//! the client certificate's and the CA certificates' SHA-256 fingerprints and the verify
//! setting: a pooled connection is only reused by requests that would have made the same
//! handshake.
//!
//! HTTP/2 peers offer `h2` by ALPN (or, in cleartext, speak it with prior knowledge) and carry
//! up to [`H2_STREAMS`] concurrent streams per connection (receive windows: Pingora's 8 MiB
//! per stream and per connection).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use openssl::x509::X509;
use pingora_core::upstreams::peer::{HttpPeer, ALPN};
use pingora_core::utils::tls::CertKey;

use super::{HttpVersion, Timeouts};
use crate::tls::fingerprint;

/// TLS settings shared by every node of an upstream.
#[derive(Clone, Default)]
pub struct PeerTls {
    /// Client certificate chain and key, presented in full.
    pub client_cert: Option<Arc<CertKey>>,
    /// Trusted CAs; `None` = the system store.
    pub ca: Option<Arc<Box<[X509]>>>,
    /// Verify the certificate chain and host name.
    pub verify: bool,
}

impl PeerTls {
    /// The pool-isolation key: fingerprints of the client certificate chain and CA bundle,
    /// and the verify flag.
    pub fn group_key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.verify.hash(&mut h);
        if let Some(ck) = &self.client_cert {
            fingerprint(ck.leaf()).hash(&mut h);
            for c in ck.intermediates() {
                fingerprint(c).hash(&mut h);
            }
        }
        match &self.ca {
            Some(ca) => ca.iter().for_each(|c| fingerprint(c).hash(&mut h)),
            None => "system".hash(&mut h),
        }
        h.finish()
    }
}

/// Concurrent streams Pylon opens on one upstream HTTP/2 connection before it opens another
/// (the node's own `SETTINGS_MAX_CONCURRENT_STREAMS` applies too). 100 is the minimum
/// RFC 9113 §6.5.2 recommends servers allow.
pub const H2_STREAMS: usize = 100;

/// Builds a node's peer. `tls` is `None` for cleartext; `sni` may be empty (then the request
/// path fills it in, or refuses to connect when verification is on); `http` picks the ALPN
/// offer (and, in cleartext, HTTP/2 with prior knowledge for [`HttpVersion::H2`]).
pub fn build(
    addr: SocketAddr,
    tls: Option<&PeerTls>,
    sni: &str,
    timeouts: &Timeouts,
    http: HttpVersion,
) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, tls.is_some(), sni.to_string());
    set_http_version(&mut peer, http);
    if let Some(tls) = tls {
        peer.client_cert_key = tls.client_cert.clone();
        peer.options.ca = tls.ca.clone();
        peer.options.verify_cert = tls.verify;
        peer.options.verify_hostname = tls.verify;
        peer.group_key = tls.group_key();
    }
    apply_timeouts(&mut peer, timeouts);
    peer
}

/// Sets the ALPN offer and the HTTP/2 settings for `http`. Pingora speaks HTTP/2 to a
/// cleartext peer whose lowest allowed version is 2 (prior knowledge), and over TLS when the
/// peer selects `h2`.
pub fn set_http_version(peer: &mut HttpPeer, http: HttpVersion) {
    let (alpn, streams) = match http {
        HttpVersion::H1 => (ALPN::H1, 1),
        HttpVersion::H2OrH1 => (ALPN::H2H1, H2_STREAMS),
        HttpVersion::H2 => (ALPN::H2, H2_STREAMS),
    };
    peer.options.alpn = alpn;
    peer.options.max_h2_streams = streams;
}

/// Sets connect (TCP + TLS), send and read timeouts on a peer.
pub fn apply_timeouts(peer: &mut HttpPeer, t: &Timeouts) {
    peer.options.connection_timeout = Some(t.connect);
    peer.options.total_connection_timeout = Some(t.connect);
    peer.options.write_timeout = Some(t.send);
    peer.options.read_timeout = Some(t.read);
}
