//! Consumers (APISIX `consumer`): who a request comes from, once an authentication plugin
//! (`key-auth`, `basic-auth`, `jwt-auth`) has matched its credential.

use std::sync::Arc;

use http::HeaderValue;
use pingora_http::RequestHeader;

use super::{Flow, PluginCtx, Reply};

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

/// What an authentication plugin's rewrite step answers when the request's credential
/// matched no consumer (`why` says how, APISIX's message): the `anonymous` consumer when
/// one is configured (APISIX `anonymous_consumer`), else 401 with APISIX's
/// `{"message": why}` body and the `WWW-Authenticate` `challenge`. Logged at debug level
/// without the credential.
pub fn refuse(
    plugin: &str,
    why: &str,
    anonymous: Option<&Arc<Consumer>>,
    challenge: &HeaderValue,
    cx: &mut PluginCtx,
) -> Flow {
    if let Some(anonymous) = anonymous {
        cx.consumer = Some(anonymous.clone());
        return Flow::Continue;
    }
    log::debug!("{plugin}: 401 ({why})");
    let mut r = Reply::message(401, why);
    r.headers
        .push((http::header::WWW_AUTHENTICATE, challenge.clone()));
    Flow::Reply(r)
}
