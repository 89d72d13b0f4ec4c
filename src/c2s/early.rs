//! Early routing (DESIGN.md §3.6): a client that names itself in its stream header
//! after TLS (`from='user@domain'`, RFC 6120 §4.7.1, as every SASL2 client does) is
//! routed on it at once. dealer opens the owner's stream with that header (`to` and
//! `from` in the owner's domain), answers the client with a header carrying the
//! owner's stream id and the owner's `<stream:features/>` as the owner wrote them —
//! only `<starttls/>` left out, the client being on TLS already or on a listener
//! without it — so SASL2, Bind2, FAST, inline features and XEP-0474's hashed lists
//! reach the client unchanged.
//!
//! dealer still reads every element that says who authenticates (`<auth/>` or SASL2
//! `<authenticate/>` and their first response, an iq:auth or register `set`) before
//! the owner sees it: an identity the owner does not own is refused by dealer itself,
//! and SASL2's `<authorization-identifier/>` is checked again on `<success/>`, so no
//! user is ever bound on a backend that does not own it. The exchange is watched
//! until success hands the two connections to the relay.

use std::sync::Arc;

use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::forward::{HandOver, Outcome};
use super::peek::{decode_sasl, username_by_name};
use super::preauth::{bad_request, complete_iq_auth, iq_error, payload_not_single, sasl_failure};
use super::{Client, Context, Phase, SessionError};
use crate::backend::{BackendError, BackendStream, Target};
use crate::config::{BackendId, Domains};
use crate::jid::Jid;
use crate::metrics::{AuthResult, Cause, Side};
use crate::relay::masked::{Masking, Start};
use crate::snapshot::Snapshot;
use crate::stream::StreamIoError;
use crate::xml::element::{Element, Scope, child_range};
use crate::xml::escape::text as esc_text;
use crate::xml::{
    Frame, FrameLimits, NS_CLIENT, NS_IQ_AUTH, NS_IQ_REGISTER, NS_SASL, NS_SASL2, NS_STREAMS,
    NS_TLS, StreamError,
};

/// What the element the client sent last started, so the owner's answer is read as
/// the protocol defines success for it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Sasl,
    Sasl2,
    IqAuth(String),
    Register(String),
}

/// Whose identity an authentication element carries, as dealer read it.
enum Claim {
    /// A user; `None` for SASL ANONYMOUS.
    User(Option<String>),
    /// The mechanism says nothing in its first message: its first response will.
    Later,
    /// Nothing dealer can read: refused (a mechanism like EXTERNAL).
    Unreadable(String),
}

/// Route the client to `id` on its header's `from`, and watch its authentication
/// there through to the hand-over.
pub async fn run(
    c: &mut Client,
    ctx: &Arc<Context>,
    snap: &Snapshot,
    id: BackendId,
) -> Result<Outcome, SessionError> {
    let cfg = &snap.config;
    let b = &cfg.backends[id];
    let Some(addr) = b.c2s else {
        return Err(SessionError::stream(
            StreamError::InternalServerError,
            "backend has no c2s address",
        ));
    };
    let internal = match (cfg.domains, &b.domain) {
        (Domains::Masked, Some(d)) => Some(d.clone()),
        _ => None,
    };
    let backend_domain = internal.clone().unwrap_or_else(|| cfg.domain.clone());
    // The client's `from`, in the owner's domain.
    let from = c.header.from.as_deref().and_then(Jid::parse).map(|j| {
        let mut s = j.local.map(|l| format!("{l}@")).unwrap_or_default();
        s.push_str(&backend_domain);
        if let Some(r) = j.resource {
            s.push('/');
            s.push_str(r);
        }
        s
    });
    let target = Target {
        addr,
        domain: backend_domain.clone(),
        tls: b.tls,
        proxy: b.proxy_protocol.then_some((c.peer, c.local)),
        from,
    };
    let result_metric = |r: AuthResult| ctx.metrics.auth_result(&b.name, r);
    let limits = FrameLimits::from_config(&cfg.limits);
    let mut bs = super::forward::open_owner(
        ctx,
        &b.name,
        &target,
        limits,
        cfg.limits.backend_connect_timeout,
    )
    .await?;
    // The owner's stream id, so a client that binds anything to it binds the owner's.
    let stream_id = bs.header.id.clone().unwrap_or_else(crate::stream::new_id);
    c.stream_id.clone_from(&stream_id);
    let mut out = crate::xml::stream_header::write(
        NS_CLIENT,
        &cfg.domain,
        c.header.from.as_deref(),
        &stream_id,
        true,
    )
    .into_bytes();
    let features = &bs.features_raw;
    match child_range(features, NS_TLS, "starttls") {
        Ok(Some(r)) => {
            out.extend_from_slice(&features[..r.start]);
            out.extend_from_slice(&features[r.end..]);
        }
        _ => out.extend_from_slice(features),
    }
    c.stream.send(&out).await?;
    c.phase = Phase::Open;
    debug!(backend.name = %b.name, "routed on the stream header");

    let user = c
        .header
        .from
        .as_deref()
        .and_then(Jid::parse)
        .and_then(|j| j.local)
        .and_then(|l| snap.router.normalise(l).ok())
        .map(|l| l.into_owned())
        .unwrap_or_default();
    let masking = internal.as_ref().map(|internal| Masking {
        public: cfg.domain.clone(),
        internal: internal.clone(),
        own_local: user.clone(),
        normalise: cfg.routing.normalise,
        services: cfg.services.clone(),
    });
    let client_scope = Scope::from_header(&c.header).into_owned();
    let backend_scope = Scope::from_header(&bs.header);
    let mut pending: Option<Pending> = None;
    // A mechanism whose first message named nobody: its first response will.
    let mut await_response: Option<(String, Pending)> = None;
    let mut client_restarting = false;
    loop {
        tokio::select! {
            // Both branches are cancel-safe: frames stay in the streams' buffers.
            r = bs.stream.next_frame() => {
                let frame = r.map_err(|e| backend_failed(BackendError::Stream(e)))?;
                let len = frame.len();
                let Frame::Element { .. } = frame else {
                    bs.stream.consume(len);
                    if let Frame::Close { .. } = frame {
                        return Err(SessionError::stream(StreamError::RemoteConnectionFailed, "the server closed the stream"));
                    }
                    continue;
                };
                let e = Element::parse(&bs.stream.buffered()[..len], &backend_scope)
                    .map_err(|x| backend_failed(BackendError::Stream(StreamIoError::Xml(x))))?;
                let verdict = verdict(pending.as_ref(), &e);
                if verdict == Verdict::Success
                    && pending == Some(Pending::Sasl2)
                    && !authorized_here(snap, id, &backend_domain, &e)
                {
                    // The owner authenticated someone it does not own: never relay it.
                    result_metric(AuthResult::Failure);
                    warn!(backend.name = %b.name, "SASL2 success for an identity this backend does not own");
                    bs.stream.consume(len);
                    close_backend(&mut bs).await;
                    return Err(SessionError::stream(StreamError::NotAuthorized, "the server authenticated another account"));
                }
                // Counted before the client hears it: a client that has its answer
                // finds it in the metrics.
                match verdict {
                    Verdict::Success => result_metric(AuthResult::Success),
                    Verdict::Failure | Verdict::StreamError => result_metric(AuthResult::Failure),
                    _ => {}
                }
                let masked = masking.as_ref().and_then(|m| mask(m, &bs.stream.buffered()[..len]));
                c.stream.send(masked.as_deref().unwrap_or(&bs.stream.buffered()[..len])).await?;
                bs.stream.consume(len);
                match verdict {
                    Verdict::Continue => {}
                    Verdict::Failure => {
                        pending = None;
                        c.failed_login(ctx)?;
                    }
                    Verdict::Done => pending = None,
                    Verdict::StreamError => {
                        c.close_with(b"</stream:stream>").await;
                        return Err(SessionError::Done(Side::Backend, Cause::Closed));
                    }
                    Verdict::Success => {
                        debug!("authenticated on the owner; handing over");
                        let start = match pending {
                            Some(Pending::Sasl) => Start::NewStreams,
                            // SASL2 and XEP-0078 go on in the same streams.
                            _ => Start::InStream {
                                client: c.header.qname.clone(),
                                backend: bs.header.qname.clone(),
                            },
                        };
                        return Ok(Outcome::HandOver(Box::new(HandOver {
                            backend: bs,
                            backend_name: b.name.clone(),
                            masking,
                            start,
                            limits,
                            user,
                        })));
                    }
                }
            }
            r = c.stream.next_frame_before_restart(&c.header.qname), if !client_restarting => {
                let Some(frame) = r? else {
                    // A restart pipelined behind SASL: it waits for the verdict.
                    client_restarting = true;
                    continue;
                };
                let len = frame.len();
                match frame {
                    Frame::Element { .. } => {}
                    Frame::Close { .. } => {
                        c.stream.consume(len);
                        close_backend(&mut bs).await;
                        c.close_with(b"</stream:stream>").await;
                        return Err(SessionError::Done(Side::Client, Cause::Closed));
                    }
                    _ => {
                        c.stream.consume(len);
                        continue;
                    }
                }
                let e = Element::parse(&c.stream.buffered()[..len], &client_scope)?;
                if e.is("iq", NS_CLIENT) && payload_not_single(&e) {
                    // The owner dispatches on the first child; `claim` must read the
                    // same one, so an iq with more than one never reaches it.
                    c.stream.consume_zeroed(len);
                    bad_request(c, e.attr("id").unwrap_or_default()).await?;
                    continue;
                }
                let (claim, starts) = match claim(&e, &mut await_response) {
                    Some(x) => x,
                    None if e.is("starttls", NS_TLS) => {
                        // Not offered: the client is on TLS, or the listener has none.
                        c.stream.consume(len);
                        close_backend(&mut bs).await;
                        c.close_with(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>").await;
                        return Err(SessionError::Done(Side::Client, Cause::Protocol));
                    }
                    None => {
                        // Carries no identity: the owner's to answer.
                        let raw = &c.stream.buffered()[..len];
                        let declared = crate::xml::element::with_header_prefixes(raw, &c.header.prefixes);
                        let sent = bs.stream.send(declared.as_deref().map_or(raw, |d| d)).await;
                        c.stream.consume_zeroed(len);
                        sent.map_err(|e| backend_failed(e.into()))?;
                        continue;
                    }
                };
                let refused = match &claim {
                    Claim::Later => None,
                    Claim::Unreadable(why) => Some(why.clone()),
                    Claim::User(u) => (!owns(snap, id, u.as_deref())).then(|| {
                        format!(
                            "{} does not belong on this stream",
                            u.as_deref().unwrap_or("an anonymous login")
                        )
                    }),
                };
                if let Some(why) = refused {
                    info!(backend.name = %b.name, %why, "login refused on an early-routed stream");
                    let kind = starts.clone();
                    c.stream.consume_zeroed(len);
                    refuse(c, &kind, &why).await?;
                    await_response = None;
                    c.failed_login(ctx)?;
                    continue;
                }
                if let Claim::Later = claim {
                    await_response = Some((e.attr("mechanism").unwrap_or_default().to_owned(), starts.clone()));
                }
                pending = Some(starts);
                // Credentials: the copy on the way out is the only one kept.
                let raw = &c.stream.buffered()[..len];
                let element = crate::xml::element::with_header_prefixes(raw, &c.header.prefixes)
                    .unwrap_or_else(|| Zeroizing::new(raw.to_vec()));
                c.stream.consume_zeroed(len);
                bs.stream.send(&element).await.map_err(|e| backend_failed(e.into()))?;
            }
        }
    }
}

/// Who an element claims to be, and what it starts; `None` for an element that says
/// nothing about who authenticates. `await_response` holds a mechanism whose first
/// response names the user.
fn claim(e: &Element, await_response: &mut Option<(String, Pending)>) -> Option<(Claim, Pending)> {
    let first = |mech: &str, text: Option<Zeroizing<String>>| -> Claim {
        let text = text.unwrap_or_default();
        match decode_sasl(&text) {
            Err(e) => Claim::Unreadable(e.to_string()),
            Ok(None) if mech.eq_ignore_ascii_case("ANONYMOUS") => Claim::User(None),
            Ok(None) => Claim::Later,
            Ok(Some(data)) => match username_by_name(mech, &data) {
                Ok(u) => Claim::User(u),
                Err(e) => Claim::Unreadable(e.to_string()),
            },
        }
    };
    match (e.ns.as_str(), e.name.as_str()) {
        (NS_SASL, "auth") => {
            let mech = e.attr("mechanism").unwrap_or_default();
            Some((first(mech, Some(e.text())), Pending::Sasl))
        }
        (NS_SASL2, "authenticate") => {
            let mech = e.attr("mechanism").unwrap_or_default();
            let ir = e.child("initial-response", NS_SASL2).map(|r| r.text());
            Some((first(mech, ir), Pending::Sasl2))
        }
        (NS_SASL, "response") | (NS_SASL2, "response") => {
            let (mech, starts) = await_response.take()?;
            match first(&mech, Some(e.text())) {
                Claim::Later => Some((Claim::Unreadable("an empty response".into()), starts)),
                c => Some((c, starts)),
            }
        }
        (NS_CLIENT, "iq") if e.attr("type") == Some("set") => {
            let id = e.attr("id").unwrap_or_default().to_owned();
            if let Some(q) = e.child("query", NS_IQ_AUTH) {
                let user = q
                    .child("username", NS_IQ_AUTH)
                    .map(|u| u.text().trim().to_owned());
                let claim = match user.filter(|_| complete_iq_auth(q)) {
                    Some(u) => Claim::User(Some(u)),
                    None => Claim::Unreadable("an incomplete jabber:iq:auth set".into()),
                };
                Some((claim, Pending::IqAuth(id)))
            } else if let Some(q) = e.child("query", NS_IQ_REGISTER) {
                let user = q
                    .child("username", NS_IQ_REGISTER)
                    .map(|u| u.text().trim().to_owned())
                    .filter(|u| !u.is_empty());
                let claim = match user {
                    Some(u) => Claim::User(Some(u)),
                    // A set without a username (removal, a form): nobody to route.
                    None => Claim::Unreadable("a registration without a username".into()),
                };
                Some((claim, Pending::Register(id)))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Whether `id` owns `user` (routing now), or, for ANONYMOUS, is the anonymous backend.
fn owns(snap: &Snapshot, id: BackendId, user: Option<&str>) -> bool {
    match user {
        Some(u) => snap.route(u).is_ok_and(|d| d.backend == id),
        None => snap.config.c2s.anonymous_backend == Some(id),
    }
}

/// SASL2's `<success/>` names whom it authorized: a user of `backend_domain` that `id`
/// owns (or none, leaving the authentication identity, which dealer checked).
pub(super) fn authorized_here(
    snap: &Snapshot,
    id: BackendId,
    backend_domain: &str,
    success: &Element,
) -> bool {
    let Some(a) = success.child("authorization-identifier", NS_SASL2) else {
        return true;
    };
    let text = a.text();
    let Some(jid) = Jid::parse(text.trim()) else {
        return false;
    };
    jid.domain_is(backend_domain) && owns(snap, id, jid.local)
}

/// An element from the owner as the client must see it with masked domains (the
/// authorization identifier, a bound JID); `None` when nothing in it changes.
pub(super) fn mask(m: &Masking, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let rule = crate::masking::Rule::Mask {
        internal: &m.internal,
        public: &m.public,
        services: &m.services,
    };
    matches!(crate::masking::rewrite(bytes, rule, &mut out), Ok(true)).then_some(out)
}

/// Answer a refused login in the form its element expects; the stream goes on.
async fn refuse(c: &mut Client, kind: &Pending, why: &str) -> Result<(), SessionError> {
    match kind {
        Pending::Sasl => sasl_failure(c, "not-authorized", why).await,
        Pending::Sasl2 => {
            let s = format!(
                "<failure xmlns='urn:xmpp:sasl:2'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/><text>{}</text></failure>",
                esc_text(why)
            );
            c.stream.send(s.as_bytes()).await?;
            Ok(())
        }
        Pending::IqAuth(id) => iq_error(c, id, "auth", "not-authorized", "401", NS_IQ_AUTH).await,
        Pending::Register(id) => {
            iq_error(c, id, "cancel", "not-allowed", "405", NS_IQ_REGISTER).await
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Continue,
    Success,
    Failure,
    /// A registration was answered: nothing pending any more.
    Done,
    StreamError,
}

/// What the owner's element means for what is pending (DESIGN.md §3.6: success is
/// only what the protocol defines as success for the request).
fn verdict(pending: Option<&Pending>, e: &Element) -> Verdict {
    if e.is("error", NS_STREAMS) {
        return Verdict::StreamError;
    }
    match pending {
        Some(Pending::Sasl) if e.is("success", NS_SASL) => Verdict::Success,
        Some(Pending::Sasl) if e.is("failure", NS_SASL) => Verdict::Failure,
        Some(Pending::Sasl2) if e.is("success", NS_SASL2) => Verdict::Success,
        Some(Pending::Sasl2) if e.is("failure", NS_SASL2) => Verdict::Failure,
        Some(Pending::IqAuth(id)) if e.is("iq", NS_CLIENT) && e.attr("id") == Some(id) => {
            match e.attr("type") {
                Some("result") if e.elements().next().is_none() => Verdict::Success,
                _ => Verdict::Failure,
            }
        }
        Some(Pending::Register(id)) if e.is("iq", NS_CLIENT) && e.attr("id") == Some(id) => {
            Verdict::Done
        }
        _ => Verdict::Continue,
    }
}

fn backend_failed(e: BackendError) -> SessionError {
    warn!(error = %e, "backend leg failed during authentication");
    SessionError::stream(
        StreamError::RemoteConnectionFailed,
        "the server that holds this account failed",
    )
}

async fn close_backend(bs: &mut BackendStream) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        bs.stream.send(b"</stream:stream>"),
    )
    .await;
}
