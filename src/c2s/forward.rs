//! Forward mode: open the leg to the owner, send it the client's first authentication
//! element, and relay the authentication exchange while still parsing both sides
//! (DESIGN.md §3.4–3.5). `<failure/>` drops the backend leg and returns the client to
//! pre-auth on the same stream (it may retry, perhaps as another user); `<success/>`
//! or the iq:auth result hands the two connections to the relay.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Context;
use super::{Client, Login, LoginKind, SessionError};
use crate::backend::{self, BackendError, BackendStream, Target};
use crate::config::{BackendId, Domains};
use crate::metrics::{AuthResult, Cause, Side};
use crate::snapshot::Snapshot;
use crate::stream::StreamIoError;
use crate::xml::element::{Element, Scope};
use crate::xml::start_tag::Head;
use crate::xml::{Frame, FrameLimits, NS_CLIENT, NS_SASL, NS_SASL2, NS_STREAMS, StreamError};

pub enum Outcome {
    /// Authentication failed or registration finished: the client stays in
    /// pre-auth on its current stream.
    Retry,
    HandOver(Box<HandOver>),
}

/// Both legs, authenticated, ready for the relay.
pub struct HandOver {
    pub backend: BackendStream,
    pub backend_name: String,
    /// Set with `domains: masked`: who the user is on each side.
    pub masking: Option<crate::relay::masked::Masking>,
    /// Whether both sides restart their streams (SASL) or go on (XEP-0078).
    pub start: crate::relay::masked::Start,
    /// The user's normalised name ("" for ANONYMOUS), for re-dealing.
    pub user: String,
    pub limits: FrameLimits,
}

/// Open the backend leg and watch authentication through.
pub async fn authenticate(
    c: &mut Client,
    ctx: &Arc<Context>,
    snap: &Snapshot,
    id: BackendId,
    login: Login,
) -> Result<Outcome, SessionError> {
    let cfg = &snap.config;
    let b = &cfg.backends[id];
    let Some(addr) = b.c2s else {
        // Validation requires c2s for every backend clients are forwarded to.
        return Err(SessionError::stream(
            StreamError::InternalServerError,
            "backend has no c2s address",
        ));
    };
    let target = Target {
        addr,
        domain: match (cfg.domains, &b.domain) {
            (Domains::Masked, Some(d)) => d.clone(),
            _ => cfg.domain.clone(),
        },
        tls: b.tls,
        proxy: b.proxy_protocol.then_some((c.peer, c.local)),
        from: None,
    };
    let result_metric = |r: AuthResult| ctx.metrics.auth_result(&b.name, r);
    let limits = FrameLimits::from_config(&cfg.limits);
    let warm = cfg.c2s.warm;
    let mut bs = match backend::warm::take(&target, &b.name, warm, &ctx.metrics) {
        Some(bs) => bs,
        None => {
            open_owner(
                ctx,
                &b.name,
                &target,
                limits,
                cfg.limits.backend_connect_timeout,
            )
            .await?
        }
    };
    // The next login to this backend finds a stream waiting.
    backend::warm::refill(
        &target,
        &b.name,
        warm,
        backend::warm::Opener {
            limits,
            tls: &ctx.backend_tls,
            connect_timeout: cfg.limits.backend_connect_timeout,
        },
        &ctx.metrics,
    );
    if let LoginKind::Sasl(m) = login.kind
        && !bs.features.mechanisms.iter().any(|x| x == m.name())
    {
        result_metric(AuthResult::Failure);
        info!(mechanism = %m, offered = ?bs.features.mechanisms, "backend lacks the client's mechanism");
        c.stream
            .send(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/></failure>")
            .await?;
        close_backend(&mut bs).await;
        c.failed_login(ctx)?;
        return Ok(Outcome::Retry);
    }
    if let LoginKind::Sasl2(m) = &login.kind
        && !bs
            .features
            .sasl2
            .iter()
            .flatten()
            .chain(&bs.features.fast)
            .any(|x| x == m)
    {
        result_metric(AuthResult::Failure);
        info!(mechanism = %m, offered = ?bs.features.sasl2, "backend lacks the client's SASL2 mechanism");
        super::preauth::sasl2_failure(c, "temporary-auth-failure", "").await?;
        close_backend(&mut bs).await;
        c.failed_login(ctx)?;
        return Ok(Outcome::Retry);
    }
    let backend_domain = b
        .domain
        .clone()
        .filter(|_| cfg.domains == Domains::Masked)
        .unwrap_or_else(|| cfg.domain.clone());
    let user = login
        .username
        .as_deref()
        .and_then(|u| snap.router.normalise(u).ok())
        .map(|u| u.into_owned())
        .unwrap_or_default();
    let masking = match (cfg.domains, &b.domain) {
        (Domains::Masked, Some(internal)) => Some(crate::relay::masked::Masking {
            public: cfg.domain.clone(),
            internal: internal.clone(),
            own_local: user.clone(),
            normalise: cfg.routing.normalise,
            services: cfg.services.clone(),
        }),
        _ => None,
    };
    // Prefixes the client declared on its header are not declared on ours.
    let first = crate::xml::element::with_header_prefixes(&login.first, &c.header.prefixes);
    if let Err(e) = bs
        .stream
        .send(first.as_deref().unwrap_or(&login.first))
        .await
    {
        result_metric(AuthResult::Unreachable);
        return Err(backend_failed(e.into()));
    }
    drop(login.first);
    let scope = Scope::from_header(&bs.header);
    // Set when the client pipelined its stream restart behind its authentication
    // (XEP-0305 style): those bytes wait for the verdict, unread.
    let mut client_restarting = false;
    loop {
        tokio::select! {
            // Both branches are cancel-safe: `next_frame` keeps partial input in the
            // stream's buffer and the framer's state.
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
                let bad = |x| backend_failed(BackendError::Stream(StreamIoError::Xml(x)));
                // Whether a success names someone the backend does not own (SASL2).
                let (verdict, foreign) = if let LoginKind::Sasl(_) = login.kind {
                    // SASL's answers are told apart by name alone: no tree to build.
                    let h = Head::parse(&bs.stream.buffered()[..len], &scope).map_err(bad)?;
                    (sasl_verdict(h.name, &h.ns), false)
                } else {
                    let e = Element::parse(&bs.stream.buffered()[..len], &scope).map_err(bad)?;
                    let v = verdict(&login.kind, &e);
                    let foreign = v == Verdict::Success
                        && matches!(login.kind, LoginKind::Sasl2(_))
                        && !super::early::authorized_here(snap, id, &backend_domain, &e);
                    (v, foreign)
                };
                if foreign {
                    // The owner authorized someone it does not own: never relay it.
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
                // Pass the backend's answer on, masked where the domains are.
                let masked = masking.as_ref().and_then(|m| super::early::mask(m, &bs.stream.buffered()[..len]));
                c.stream.send(masked.as_deref().unwrap_or(&bs.stream.buffered()[..len])).await?;
                bs.stream.consume(len);
                match verdict {
                    Verdict::Continue => {}
                    Verdict::Success => {
                        debug!("authenticated; handing over");
                        // SASL restarts both streams; SASL2 and XEP-0078 go on in them.
                        let start = match login.kind {
                            LoginKind::IqAuth { .. } | LoginKind::Sasl2(_) => crate::relay::masked::Start::InStream {
                                client: c.header.qname.clone(),
                                backend: bs.header.qname.clone(),
                            },
                            _ => crate::relay::masked::Start::NewStreams,
                        };
                        return Ok(Outcome::HandOver(Box::new(HandOver {
                            backend: bs,
                            backend_name: b.name.clone(),
                            masking: masking.clone(),
                            start,
                            limits,
                            user: user.clone(),
                        })));
                    }
                    Verdict::Failure => {
                        close_backend(&mut bs).await;
                        c.failed_login(ctx)?;
                        return Ok(Outcome::Retry);
                    }
                    Verdict::Registered => {
                        debug!("registration answered; back to pre-auth");
                        close_backend(&mut bs).await;
                        return Ok(Outcome::Retry);
                    }
                    Verdict::StreamError => {
                        c.close_with(b"</stream:stream>").await;
                        return Err(SessionError::Done(Side::Backend, Cause::Closed));
                    }
                }
            }
            r = c.stream.next_frame_before_restart(&c.header.qname), if !client_restarting => {
                let Some(frame) = r? else {
                    if !matches!(login.kind, LoginKind::Sasl(_)) {
                        // Only SASL restarts the stream after success.
                        return Err(SessionError::stream(
                            StreamError::NotWellFormed,
                            "a new stream before the outcome of authentication",
                        ));
                    }
                    client_restarting = true;
                    continue;
                };
                let len = frame.len();
                match frame {
                    Frame::Element { .. } => {
                        // Only the next step of this exchange goes to the backend: an
                        // element that starts another (a second <auth/>, another iq)
                        // would authenticate someone dealer did not route.
                        if !expected_from_client(&login.kind, &c.stream.buffered()[..len], &c.header) {
                            c.stream.consume_zeroed(len);
                            close_backend(&mut bs).await;
                            return Err(SessionError::stream(
                                StreamError::PolicyViolation,
                                "wait for the outcome of authentication",
                            ));
                        }
                        // SASL responses carry proofs: wipe them once passed on.
                        let raw = &c.stream.buffered()[..len];
                        let declared = crate::xml::element::with_header_prefixes(raw, &c.header.prefixes);
                        let sent = bs.stream.send(declared.as_deref().map_or(raw, |d| d)).await;
                        c.stream.consume_zeroed(len);
                        sent.map_err(|e| backend_failed(e.into()))?;
                    }
                    Frame::Close { .. } => {
                        c.stream.consume(len);
                        close_backend(&mut bs).await;
                        c.close_with(b"</stream:stream>").await;
                        return Err(SessionError::Done(Side::Client, Cause::Closed));
                    }
                    _ => c.stream.consume(len),
                }
            }
        }
    }
}

/// Whether a client's element during forwarded authentication belongs to it: a SASL
/// `<response/>` or `<abort/>`; in SASL2 also `<next/>` (a task). The iq flows
/// (XEP-0078, XEP-0077) are one request and one answer, so nothing else belongs to
/// them.
fn expected_from_client(kind: &LoginKind, bytes: &[u8], header: &crate::xml::StreamHeader) -> bool {
    let Ok(h) = crate::xml::start_tag::Head::parse(bytes, &Scope::from_header(header)) else {
        return false;
    };
    match kind {
        LoginKind::Sasl(_) => h.ns == NS_SASL && matches!(h.name, "response" | "abort"),
        LoginKind::Sasl2(_) => h.ns == NS_SASL2 && matches!(h.name, "response" | "abort" | "next"),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Continue,
    Success,
    Failure,
    Registered,
    StreamError,
}

/// The verdict on a SASL (RFC 6120) login from the name of the backend's element.
fn sasl_verdict(name: &str, ns: &str) -> Verdict {
    match (ns, name) {
        (NS_STREAMS, "error") => Verdict::StreamError,
        (NS_SASL, "success") => Verdict::Success,
        (NS_SASL, "failure") => Verdict::Failure,
        _ => Verdict::Continue,
    }
}

fn verdict(kind: &LoginKind, e: &Element) -> Verdict {
    if let LoginKind::Sasl(_) = kind {
        return sasl_verdict(&e.name, &e.ns);
    }
    if e.is("error", NS_STREAMS) {
        return Verdict::StreamError;
    }
    match kind {
        LoginKind::Sasl2(_) if e.is("success", NS_SASL2) => Verdict::Success,
        LoginKind::Sasl2(_) if e.is("failure", NS_SASL2) => Verdict::Failure,
        LoginKind::Sasl2(_) => Verdict::Continue,
        LoginKind::IqAuth { id } | LoginKind::Register { id }
            if e.is("iq", NS_CLIENT) && e.attr("id") == Some(id.as_str()) =>
        {
            match (kind, e.attr("type")) {
                // XEP-0078 §3: success is an empty result. A result with content (the
                // fields form Prosody sends for an incomplete request) is no login.
                (LoginKind::IqAuth { .. }, Some("result")) if e.elements().next().is_none() => {
                    Verdict::Success
                }
                (LoginKind::IqAuth { .. }, _) => Verdict::Failure,
                _ => Verdict::Registered,
            }
        }
        _ => Verdict::Continue,
    }
}

/// Open the leg to the owner (`backend`) for one login, timing it, or the error the
/// client gets when it cannot be reached.
pub(super) async fn open_owner(
    ctx: &Context,
    backend: &str,
    target: &Target,
    limits: FrameLimits,
    connect_timeout: Duration,
) -> Result<BackendStream, SessionError> {
    let started = Instant::now();
    match backend::open(target, limits, &ctx.backend_tls, started + connect_timeout).await {
        Ok(bs) => {
            ctx.metrics
                .backend_connect_duration(backend)
                .observe(started.elapsed().as_secs_f64());
            Ok(bs)
        }
        Err(e) => {
            ctx.metrics.auth_result(backend, AuthResult::Unreachable);
            warn!(backend.name = %backend, error = %e, "backend unreachable");
            Err(SessionError::stream(
                StreamError::RemoteConnectionFailed,
                "the server that holds this account cannot be reached",
            ))
        }
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
        Duration::from_millis(500),
        bs.stream.send(b"</stream:stream>"),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict read from the start tag alone is the one the tree gives, whatever
    /// way the backend writes its namespaces.
    #[test]
    fn sasl_verdicts_from_the_start_tag_match_the_tree() {
        let scope = Scope {
            default_ns: Some(NS_CLIENT.into()),
            prefixes: vec![("stream".into(), NS_STREAMS.into())].into(),
        };
        let cases: [(&[u8], Verdict); 6] = [
            (b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", Verdict::Success),
            (
                b"<sasl:success xmlns:sasl='urn:ietf:params:xml:ns:xmpp-sasl'>dA==</sasl:success>",
                Verdict::Success,
            ),
            (
                b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>",
                Verdict::Failure,
            ),
            (
                b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1h</challenge>",
                Verdict::Continue,
            ),
            (
                b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                Verdict::StreamError,
            ),
            (b"<success xmlns='urn:example:not-sasl'/>", Verdict::Continue),
        ];
        for (bytes, want) in cases {
            let h = Head::parse(bytes, &scope).unwrap();
            let e = Element::parse(bytes, &scope).unwrap();
            let name = String::from_utf8_lossy(bytes);
            assert_eq!(sasl_verdict(h.name, &h.ns), want, "{name}");
            assert_eq!(sasl_verdict(&e.name, &e.ns), want, "{name}");
        }
    }
}
