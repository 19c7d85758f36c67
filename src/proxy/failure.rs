//! How a failed try is classified: the status it maps to, whether it was a timeout, what
//! passive health hears, and whether the upstream's retry budget allows another try.

use pingora_core::{Error, ErrorSource, ErrorType};

use super::RequestCtx;
use crate::upstream::balancer::Balancer;
use crate::upstream::health::Outcome;

/// Added to the error line when a fresh TLS connection dies before any response. With TLS
/// 1.3 the server checks the client certificate after the client's handshake has finished,
/// so a rejection arrives as an alert that often loses the race with the request write and
/// shows only as a closed connection.
pub(super) const CLOSED_AFTER_HANDSHAKE: &str =
    "the upstream closed the connection right after the TLS \
     handshake, before responding: with TLS 1.3 this is how a rejected or missing client \
     certificate shows (check tls.client_cert_id and the CA the upstream trusts)";

pub(super) fn node_label(ctx: &RequestCtx) -> &str {
    match (&ctx.route, ctx.node) {
        (Some(r), Some(i)) => &r.upstream.nodes[i].label,
        _ => "-",
    }
}

pub(super) fn is_timeout(e: &Error) -> bool {
    use ErrorType::*;
    matches!(
        e.etype(),
        ConnectTimedout | TLSHandshakeTimedout | ReadTimedout | WriteTimedout
    )
}

/// Status for a proxy error: explicit HTTP statuses as given; upstream timeouts 504; other
/// upstream failures 502; downstream failures 400 (0 when the client is gone); internal 500.
pub(super) fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        _ if is_timeout(e) && e.esource() == &ErrorSource::Upstream => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

impl RequestCtx {
    /// Records a failure of the current try: for passive health checks, and as a slow sample
    /// for `ewma` (so a failing node stops looking like the fastest one).
    pub(super) fn report_failure(&self, e: &Error) {
        if let (Some(route), Some(i)) = (&self.route, self.node) {
            if let (Balancer::Ewma { .. }, Some(start)) = (&route.upstream.balancer, self.try_start)
            {
                let penalty = route.upstream.timeouts.connect.max(start.elapsed());
                route.upstream.nodes[i].load.observe(penalty);
            }
            let outcome = if is_timeout(e) {
                Outcome::Timeout
            } else {
                Outcome::TcpFailure
            };
            route.upstream.report_passive(i, outcome);
        }
    }

    /// Whether the upstream's retry budget allows another try on an untried node.
    pub(super) fn may_retry(&self) -> bool {
        let Some(route) = &self.route else {
            return false;
        };
        let up = &route.upstream;
        let in_time = match (up.retry_timeout, self.first_try) {
            (Some(limit), Some(start)) => start.elapsed() < limit,
            _ => true,
        };
        self.tries <= up.retries && in_time && up.has_untried(&self.tried)
    }
}
