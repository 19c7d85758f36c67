//! HTTPS listeners: the handshake side of downstream TLS.
//!
//! Each `gateway.tls_listen` address gets Pingora [`TlsSettings`] built by [`tls_settings`]:
//! Mozilla's intermediate profile, ALPN `h2` then `http/1.1`, and a ClientHello callback that
//! picks the `ssls` entry for the client's SNI from the current [`Table`] (see
//! [`CertStore::lookup`](super::store::CertStore::lookup)), or for `gateway.fallback_sni`
//! when the client sent none, and configures the connection from it:
//!
//! - every certificate/key pair of the entry (OpenSSL serves the one the client supports,
//!   e.g. ECDSA or RSA) with its intermediates;
//! - the entry's TLS versions (`ssl_protocols`);
//! - with `client` set, a request for a client certificate, verified against the entry's CAs
//!   and depth. A missing or invalid certificate does not fail the handshake: the result is
//!   recorded and the request is answered 400 (see [`super::client_cert`]), as APISIX and
//!   nginx (`ssl_verify_client on`) do;
//! - a session-resumption context derived from the verification settings, so a session
//!   verified against one CA set is never resumed under another.
//!
//! The selection happens in the ClientHello callback rather than in Pingora's
//! `TlsAccept::certificate_callback` because the TLS version is negotiated between the two:
//! only the ClientHello callback can still restrict it per SNI (as APISIX does with
//! `ssl_client_hello_by_lua`). Nothing is parsed there: the stored certificates and keys are
//! handed to OpenSSL as they are. Pingora's `handshake_complete_callback` then records the
//! chosen entry and the client-certificate result in the connection's `SslDigest`.

use std::any::Any;
use std::os::raw::{c_int, c_uchar, c_uint};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use foreign_types::ForeignTypeRef;
use log::warn;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{ClientHelloResponse, Ssl, SslAlert, SslRef, SslVerifyMode};
use openssl::stack::Stack;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::tls::{ext, ssl_sys};
use thiserror::Error;

use super::client_cert::DownstreamTls;
use super::store::{ServerSsl, SniPattern};
use crate::table::Table;

/// Why HTTPS listener settings could not be built.
#[derive(Debug, Error)]
pub enum ListenerError {
    /// Pingora refused to create the acceptor.
    #[error("cannot create the TLS acceptor: {0}")]
    Acceptor(#[from] Box<pingora_core::Error>),
    /// OpenSSL refused a setting.
    #[error("openssl: {0}")]
    Openssl(#[from] ErrorStack),
    /// `gateway.fallback_sni` is not a plain host name.
    #[error("gateway.fallback_sni: {0}")]
    FallbackSni(String),
}

/// Where the ClientHello callback leaves the chosen entry for the end of the handshake.
static CHOSEN: OnceLock<Index<Ssl, Arc<ServerSsl>>> = OnceLock::new();

fn chosen_index() -> Result<Index<Ssl, Arc<ServerSsl>>, ErrorStack> {
    if let Some(index) = CHOSEN.get() {
        return Ok(*index);
    }
    let index = Ssl::new_ex_index()?;
    Ok(*CHOSEN.get_or_init(|| index))
}

/// Builds the settings of one HTTPS listener serving certificates from the table `table`
/// points to at each handshake (so a reload applies to new connections). `fallback_sni` is
/// `gateway.fallback_sni`.
///
/// Errors: [`ListenerError`] when the acceptor cannot be created or `fallback_sni` is not a
/// host name (`pylon check` reports that first).
pub fn tls_settings(
    table: Arc<ArcSwap<Table>>,
    fallback_sni: Option<&str>,
) -> Result<TlsSettings, ListenerError> {
    let fallback = match fallback_sni.map(SniPattern::parse) {
        None => None,
        Some(Ok(SniPattern::Exact(name))) => Some(name),
        Some(Ok(SniPattern::Wildcard(_))) => {
            return Err(ListenerError::FallbackSni(
                "must be a host name, not a wildcard".into(),
            ))
        }
        Some(Err(e)) => return Err(ListenerError::FallbackSni(e)),
    };
    chosen_index()?;
    let mut settings = TlsSettings::with_callbacks(Box::new(HandshakeDone))?;
    settings.enable_h2();
    // Client certificates are requested per connection (`SSL_set_verify`); this callback,
    // inherited by every connection, lets the handshake finish whatever the verification
    // result, which `SSL_get_verify_result` keeps for the request check (nginx's
    // `ssl_verify_client on` works the same way).
    settings.set_verify_callback(SslVerifyMode::NONE, |_preverified, _store| true);
    // Replaced per connection; set so that OpenSSL never sees an empty context.
    settings.set_session_id_context(b"pylon")?;
    let selector = Selector { table, fallback };
    settings.set_client_hello_callback(move |ssl, alert| selector.client_hello(ssl, alert));
    Ok(settings)
}

struct Selector {
    table: Arc<ArcSwap<Table>>,
    fallback: Option<String>,
}

impl Selector {
    fn client_hello(
        &self,
        ssl: &mut SslRef,
        alert: &mut SslAlert,
    ) -> Result<ClientHelloResponse, ErrorStack> {
        let index = chosen_index()?;
        if ssl.ex_data(index).is_some() {
            // The second ClientHello after a HelloRetryRequest: already configured.
            return Ok(ClientHelloResponse::SUCCESS);
        }
        let table = self.table.load();
        let store = &table.tls;
        let found = match client_hello_sni(ssl) {
            Some(raw) => store.lookup_raw(raw).ok_or_else(|| {
                format!(
                    "no ssl serves the SNI {:?}",
                    String::from_utf8_lossy(raw).as_ref()
                )
            }),
            None => match &self.fallback {
                None => Err("the client sent no SNI and gateway.fallback_sni is not set".into()),
                Some(name) => store.lookup(name).ok_or_else(|| {
                    format!(
                        "the client sent no SNI and no ssl serves gateway.fallback_sni {name:?}"
                    )
                }),
            },
        };
        let entry = match found {
            Ok(entry) => entry,
            Err(why) => {
                warn!("TLS handshake refused: {why}");
                *alert = SslAlert::UNRECOGNIZED_NAME;
                return Err(ErrorStack::get());
            }
        };
        if let Err(e) = configure(ssl, entry) {
            warn!(
                "TLS handshake refused: ssl {:?} could not be applied: {e}",
                entry.id
            );
            *alert = SslAlert::INTERNAL_ERROR;
            return Err(e);
        }
        ssl.set_ex_data(index, entry.clone());
        Ok(ClientHelloResponse::SUCCESS)
    }
}

/// Applies `entry` to one connection. Only hands over stored values (reference counts).
fn configure(ssl: &mut SslRef, entry: &ServerSsl) -> Result<(), ErrorStack> {
    ssl.set_min_proto_version(Some(entry.min_version))?;
    ssl.set_max_proto_version(Some(entry.max_version))?;
    for pair in &entry.certs {
        // OpenSSL keeps one certificate per key type; the chain goes with the last one set.
        ssl.set_certificate(pair.leaf())?;
        ssl.set_private_key(pair.key())?;
        for chain in pair.intermediates() {
            ssl.add_chain_cert(chain.clone())?;
        }
    }
    set_session_id_context(ssl, &entry.session_context)?;
    if let Some(auth) = &entry.client {
        ext::ssl_set_verify_cert_store(ssl, &auth.store)?;
        ssl.param_mut()
            .set_depth(c_int::try_from(auth.depth).unwrap_or(c_int::MAX));
        let mut names = Stack::new()?;
        for name in &auth.ca_names {
            names.push(openssl::x509::X509NameRef::to_owned(name)?)?;
        }
        ssl.set_client_ca_list(names);
        ssl.set_verify(SslVerifyMode::PEER);
    }
    Ok(())
}

/// Records the chosen entry and the client-certificate result for the requests of this
/// connection.
struct HandshakeDone;

#[async_trait]
impl TlsAccept for HandshakeDone {
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let chosen = ssl.ex_data(*CHOSEN.get()?)?.clone();
        Some(Arc::new(DownstreamTls::from_handshake(chosen, ssl)))
    }
}

/// The host name of the ClientHello's server_name extension, if any.
fn client_hello_sni(ssl: &SslRef) -> Option<&[u8]> {
    const SERVER_NAME: c_uint = 0;
    let mut data: *const c_uchar = std::ptr::null();
    let mut len: usize = 0;
    // SAFETY: only called from the ClientHello callback, where OpenSSL holds the parsed
    // ClientHello; the extension bytes live as long as it, which outlives this borrow of
    // `ssl`.
    let found = unsafe {
        ssl_sys::SSL_client_hello_get0_ext(ssl.as_ptr(), SERVER_NAME, &mut data, &mut len)
    };
    if found != 1 || data.is_null() {
        return None;
    }
    // SAFETY: OpenSSL returned `len` readable bytes at `data` (see above).
    let ext = unsafe { std::slice::from_raw_parts(data, len) };
    parse_server_name(ext)
}

/// The first `host_name` of a server_name extension body (RFC 6066 §3: a 16-bit list
/// length, then entries of a 1-byte type, a 16-bit length and the name). `None` when absent,
/// empty or malformed.
pub fn parse_server_name(ext: &[u8]) -> Option<&[u8]> {
    let (len, rest) = ext.split_first_chunk::<2>()?;
    let mut list = rest.get(..usize::from(u16::from_be_bytes(*len)))?;
    while let Some((&kind, rest)) = list.split_first() {
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let name = rest.get(..len)?;
        if kind == 0 {
            return (!name.is_empty()).then_some(name);
        }
        list = &rest[len..];
    }
    None
}

extern "C" {
    fn SSL_set_session_id_context(
        ssl: *mut ssl_sys::SSL,
        sid_ctx: *const c_uchar,
        sid_ctx_len: c_uint,
    ) -> c_int;
}

fn set_session_id_context(ssl: &mut SslRef, context: &[u8; 32]) -> Result<(), ErrorStack> {
    // SAFETY: `ssl` is a live SSL we hold mutably; OpenSSL copies at most 32 bytes
    // (SSL_MAX_SID_CTX_LENGTH), which is what we pass.
    let ok = unsafe { SSL_set_session_id_context(ssl.as_ptr(), context.as_ptr(), 32) };
    if ok == 1 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_server_name;

    fn ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in entries {
            list.push(*kind);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut out = (list.len() as u16).to_be_bytes().to_vec();
        out.extend(list);
        out
    }

    #[test]
    fn server_name_extension_is_parsed() {
        assert_eq!(
            parse_server_name(&ext(&[(0, b"a.example.com")])),
            Some(&b"a.example.com"[..])
        );
        // An unknown type before the host name is skipped.
        assert_eq!(
            parse_server_name(&ext(&[(7, b"xx"), (0, b"b.test")])),
            Some(&b"b.test"[..])
        );
        assert_eq!(parse_server_name(&ext(&[(0, b"")])), None);
        assert_eq!(parse_server_name(&ext(&[])), None);
        assert_eq!(parse_server_name(&[]), None);
        // Truncated: the name is shorter than its length says.
        let mut bad = ext(&[(0, b"abc")]);
        bad.pop();
        assert_eq!(parse_server_name(&bad), None);
    }
}
