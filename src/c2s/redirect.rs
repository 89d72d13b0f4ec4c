//! Redirect mode: send the client to its owner. SASL clients get the stream error
//! `<see-other-host>host:port</see-other-host>` (RFC 6120 §4.9.3.19; IPv6 in
//! brackets). XEP-0078 clients get the seed's "error 302 with the new address in the
//! same packet": an iq error with code 302 and `<redirect/>` carrying `host:port`
//! (plain `host:port`, since an `xmpp:` URI cannot carry a port). Either way the
//! stream is closed afterwards; the client reconnects to the target, which must hold
//! a certificate for the public domain.

use tracing::info;

use super::Context;
use super::{Client, Login, LoginKind, Phase};
use crate::listener::Kind;
use crate::xml::StreamError;
use crate::xml::escape::{attr as esc_attr, text as esc_text};

pub async fn send(c: &mut Client, ctx: &Context, login: &Login, target: &str) {
    info!(redirect.to = %target, "redirecting");
    match &login.kind {
        LoginKind::IqAuth { id } => {
            let s = format!(
                "<iq type='error' id='{}'><error code='302' type='modify'><redirect xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>{}</redirect></error></iq></stream:stream>",
                esc_attr(id),
                esc_text(target)
            );
            c.close_with(s.as_bytes()).await;
        }
        LoginKind::Sasl(_) | LoginKind::Sasl2(_) | LoginKind::Register { .. } => {
            see_other(c, ctx, target).await;
        }
    }
}

/// Send the client elsewhere and close: `<see-other-host/>`, or on a WebSocket RFC
/// 7395's `<close see-other-uri='…'/>` (a browser can only follow a URL).
pub async fn see_other(c: &mut Client, ctx: &Context, target: &str) {
    if c.kind != Kind::Websocket {
        c.stream_error_with(ctx, StreamError::SeeOtherHost, Some(target), None)
            .await;
        return;
    }
    let mut out = String::new();
    if c.phase == Phase::AwaitingHeader {
        let domain = c.domain_name(ctx);
        out = crate::xml::stream_header::write(
            crate::xml::NS_CLIENT,
            &domain,
            None,
            &c.stream_id,
            true,
        );
        c.phase = Phase::Open;
    }
    out.push_str(&format!(
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing' see-other-uri='{}'/>",
        esc_attr(target)
    ));
    ctx.metrics.stream_error(StreamError::SeeOtherHost);
    c.close_with(out.as_bytes()).await;
}
