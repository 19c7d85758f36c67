//! Plugin answers and the plugins' response steps: the headers they queued, their
//! response-header and response-body steps, global rules' before the route's.

use bytes::Bytes;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::RequestCtx;
use crate::plugin::Reply;

/// Sends a plugin's answer, with the response headers queued by plugins and their response
/// header and body steps (as APISIX runs its header and body filters for plugin exits too:
/// `response-rewrite` can replace a 401). Content-Length is set from the final body.
pub(super) async fn send_reply(
    session: &mut Session,
    ctx: &mut RequestCtx,
    reply: Reply,
) -> Result<()> {
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 4))?;
    for (name, value) in reply.headers {
        resp.append_header(name, value)?;
    }
    finish_response_header(&mut resp, ctx)?;
    let mut body = Some(reply.body);
    run_body_steps(ctx, &mut body, true);
    let body = body.unwrap_or_default();
    resp.remove_header(&http::header::TRANSFER_ENCODING);
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Runs the plugins' response-body steps (global rules', then the route's) on a piece of
/// the body.
pub(super) fn run_body_steps(ctx: &mut RequestCtx, body: &mut Option<Bytes>, end: bool) {
    let global = ctx.global.clone();
    let route = ctx.route.clone();
    let chains = global.as_deref().map(|t| &t.global);
    for chain in chains
        .into_iter()
        .chain(route.as_deref().map(|r| &r.plugins))
    {
        if chain.touches_body() {
            chain.response_body(body, end, &mut ctx.plugins);
        }
    }
}

/// Adds the headers plugins queued and runs their response-header steps.
pub(super) fn finish_response_header(
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    for (name, value) in std::mem::take(&mut ctx.plugins.response_headers) {
        resp.insert_header(name, value)?;
    }
    let global = ctx.global.clone();
    if let Some(t) = &global {
        t.global.response_header(resp, &mut ctx.plugins)?;
    }
    if let Some(route) = ctx.route.clone() {
        route.plugins.response_header(resp, &mut ctx.plugins)?;
    }
    Ok(())
}
