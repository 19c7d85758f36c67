//! Consumers (APISIX `consumer`): who a request comes from, once an authentication plugin
//! (`key-auth`, `basic-auth`, `jwt-auth`) has matched its credential.

use http::HeaderValue;
use pingora_http::RequestHeader;

/// A consumer as requests see it: its name only. Credentials stay in the configuration
/// and in each authentication plugin's lookup table; they are never logged or returned.
#[derive(Debug)]
pub struct Consumer {
    /// APISIX `username`.
    pub username: String,
    /// `username` as a header value (for `X-Consumer-Username`), built once.
    header: Option<HeaderValue>,
}

/// The header APISIX sets on the upstream request naming the authenticated consumer.
pub const USERNAME_HEADER: &str = "x-consumer-username";

impl Consumer {
    /// The consumer `username`.
    pub fn new(username: &str) -> Consumer {
        Consumer {
            username: username.to_string(),
            header: HeaderValue::from_str(username).ok(),
        }
    }

    /// Sets `X-Consumer-Username` on the upstream request, as APISIX does after
    /// authentication (replacing one the client sent).
    ///
    /// Errors: from Pingora, for a header it cannot store.
    pub fn tag(&self, req: &mut RequestHeader) -> pingora_core::Result<()> {
        match &self.header {
            Some(v) => req.insert_header(USERNAME_HEADER, v.clone()).map(|_| ()),
            None => {
                req.remove_header(USERNAME_HEADER);
                Ok(())
            }
        }
    }
}

/// Removes `X-Consumer-Username` a client sent, so an upstream never trusts a forged one.
pub fn strip_forged(req: &mut RequestHeader) {
    req.remove_header(USERNAME_HEADER);
}
