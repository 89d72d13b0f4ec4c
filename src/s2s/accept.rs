//! Streams other servers open to dealer.
//!
//! On `listen.s2s` (the federation): dealer is the public domain. It offers STARTTLS
//! and dialback; a `<db:result/>` is checked with the originating domain's
//! authoritative server before the stream may carry stanzas from it, and a
//! `<db:verify/>` about a link dealer opened is answered from the shared secret.
//! Stanzas go to the owner of their addressee.
//!
//! On `listen.s2s_internal` (the backends, and only from `s2s.internal_allow`):
//! dealer is whatever foreign domain the backend wants to reach. A `<db:result/>` is
//! accepted at once (the allow-list is the authentication), a `<db:verify/>` about a
//! link dealer opened to the backend is answered from the secret, and stanzas are
//! re-originated to their real destination.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Context;
use super::stanza::Stanza;
use super::{dialback, dispatch, link::LinkError, open_stream};
use crate::config::StartTls;
use crate::jid::{Jid, domain_key};
use crate::listener::{Accepted, Kind};
use crate::metrics::{Cause, DropReason, Limit, S2sStreams, Side, StanzaDirection, StanzaResult};
use crate::net::Conn;
use crate::stream::{StreamIoError, XmlStream};
use crate::xml::element::{Element, Scope};
use crate::xml::escape::attr as esc;
use crate::xml::{
    Frame, FrameLimits, NS_DIALBACK, NS_SERVER, NS_TLS, StreamError, StreamHeader, XmlError,
};

/// How long dealer waits for an authoritative server to answer a `<db:verify/>`.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
enum S2sError {
    #[error("{0}")]
    Xml(#[from] XmlError),
    #[error("peer gone: {0}")]
    Gone(String),
    #[error("{0}: {1}")]
    Stream(StreamError, String),
    #[error("done")]
    Done,
    #[error("dropped ({reason}): {why}", reason = .0.label(), why = .1)]
    Dropped(DropReason, String),
}

impl From<StreamIoError> for S2sError {
    fn from(e: StreamIoError) -> Self {
        match e {
            StreamIoError::Xml(x) => S2sError::Xml(x),
            e => S2sError::Gone(e.to_string()),
        }
    }
}

impl S2sError {
    /// Who ended the stream (`Client` is the peer that opened it), and how.
    fn attribution(&self) -> (Side, Cause) {
        match self {
            S2sError::Xml(_) => (Side::Client, Cause::Protocol),
            S2sError::Gone(_) => (Side::Client, Cause::Gone),
            S2sError::Stream(StreamError::SystemShutdown, _) => (Side::Dealer, Cause::Shutdown),
            S2sError::Stream(StreamError::ConnectionTimeout, _) => (Side::Client, Cause::Timeout),
            S2sError::Stream(StreamError::PolicyViolation, _) => (Side::Dealer, Cause::Refused),
            S2sError::Stream(..) => (Side::Client, Cause::Protocol),
            S2sError::Done => (Side::Client, Cause::Closed),
            S2sError::Dropped(DropReason::StarttlsPipelined, _) => (Side::Client, Cause::Protocol),
            S2sError::Dropped(DropReason::TlsHandshake, _) => (Side::Client, Cause::Tls),
            S2sError::Dropped(..) => (Side::Dealer, Cause::Refused),
        }
    }
}

impl From<crate::stream::StartTlsError> for S2sError {
    fn from(e: crate::stream::StartTlsError) -> Self {
        use crate::stream::StartTlsError as E;
        match e {
            E::Pipelined => S2sError::Dropped(DropReason::StarttlsPipelined, e.to_string()),
            E::Handshake(e) => S2sError::Dropped(DropReason::TlsHandshake, e.to_string()),
            E::Stream(e) => e.into(),
            e => S2sError::Gone(e.to_string()),
        }
    }
}

impl From<std::io::Error> for S2sError {
    fn from(e: std::io::Error) -> Self {
        S2sError::Gone(e.to_string())
    }
}

fn err(cond: StreamError, text: impl Into<String>) -> S2sError {
    S2sError::Stream(cond, text.into())
}

/// Where a peer's current stream stands (a new one starts after STARTTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The peer's header is awaited; dealer has sent nothing on this stream.
    AwaitingHeader,
    /// dealer answered with its header (and features): dialback and stanzas flow.
    Open,
}

struct Peer {
    stream: XmlStream,
    internal: bool,
    header: StreamHeader,
    /// Where the current stream stands.
    phase: Phase,
    id: String,
    /// Our side's name on this stream (the `to` of the peer's header).
    local: String,
    /// (originating, receiving) domain pairs dialback has authenticated.
    authed: Vec<(String, String)>,
    /// The peer's address (internal listener: which backend this may be).
    peer: std::net::IpAddr,
    /// The listener's STARTTLS policy.
    starttls: crate::config::StartTls,
}

/// Pairs one stream may authenticate (dialback piggybacking); beyond this, refuse.
const MAX_PAIRS: usize = 64;

pub async fn serve(a: Accepted, ctx: Arc<Context>) {
    let span = if a.listener.proxy_protocol {
        info_span!("s2s_in", proxy.addr = %a.peer, peer.addr = tracing::field::Empty, listener = a.kind.label())
    } else {
        info_span!("s2s_in", peer.addr = %a.peer, listener = a.kind.label())
    };
    session(a, ctx).instrument(span).await
}

async fn session(a: Accepted, ctx: Arc<Context>) {
    let _permit = a.permit;
    let internal = a.kind == Kind::S2sInternal;
    let snap = ctx.snapshot.load_full();
    // One deadline from accept to the first authenticated exchange, PROXY header
    // included (as on c2s).
    let deadline = Instant::now() + snap.config.limits.handshake_timeout;
    let gauge = ctx.metrics.s2s_streams(if internal {
        S2sStreams::Internal
    } else {
        S2sStreams::In
    });
    gauge.inc();
    let mut p = Peer {
        stream: XmlStream::new(
            Conn::Plain(a.tcp),
            FrameLimits::from_config(&snap.config.limits),
        ),
        internal,
        header: StreamHeader::default(),
        phase: Phase::AwaitingHeader,
        id: crate::stream::new_id(),
        local: snap.config.domain.clone(),
        authed: Vec::new(),
        peer: a.peer.ip(),
        starttls: a.listener.starttls,
    };
    if a.listener.proxy_protocol {
        // Behind an L4 balancer: the header names the real peer, which the allow-list
        // and the per-source limit must see.
        let header = tokio::time::timeout_at(deadline, p.stream.read_proxy_header()).await;
        match header {
            Ok(Ok(Ok(crate::proxy_protocol::ProxyInfo::Tcp { source, .. }))) => {
                p.peer = source.ip();
                tracing::Span::current().record("peer.addr", tracing::field::display(source));
            }
            Ok(Ok(Ok(crate::proxy_protocol::ProxyInfo::Local))) => {}
            _ => {
                stream_error(
                    &mut p,
                    &ctx,
                    StreamError::NotWellFormed,
                    "expected a PROXY protocol header",
                )
                .await;
                gauge.dec();
                return;
            }
        }
    }
    let result = if internal
        && !snap
            .config
            .s2s
            .internal_allow
            .iter()
            .any(|n| n.contains(&p.peer))
    {
        ctx.metrics.limit(crate::metrics::Limit::S2sInternalAllow);
        warn!("internal s2s connection from an address outside s2s.internal_allow");
        Err(err(
            StreamError::PolicyViolation,
            "not allowed to connect here",
        ))
    } else {
        let max = if internal {
            0
        } else {
            snap.config.limits.max_connections_per_source
        };
        drop(snap);
        match ctx.conn_limits.admit(p.peer, max) {
            Some(_slot) => {
                let stop = ctx.lifecycle.sessions_stop.clone();
                tokio::select! {
                    r = async {
                        if a.kind == Kind::S2sTls {
                            direct_tls(&mut p, &ctx, deadline).await?;
                        }
                        run(&mut p, &ctx, deadline).await
                    } => r,
                    _ = stop.cancelled() => Err(err(StreamError::SystemShutdown, "dealer is shutting down")),
                }
            }
            // A stream error could only be read through TLS: a refusal would cost a
            // handshake. Close instead.
            None if a.kind == Kind::S2sTls => {
                ctx.metrics
                    .limit(crate::metrics::Limit::ConnectionsPerSource);
                Err(S2sError::Dropped(
                    DropReason::ConnectionsPerSource,
                    format!("too many connections from {}", p.peer),
                ))
            }
            None => {
                ctx.metrics
                    .limit(crate::metrics::Limit::ConnectionsPerSource);
                Err(err(
                    StreamError::PolicyViolation,
                    "too many connections from your address",
                ))
            }
        }
    };
    let (side, cause) = match &result {
        Ok(()) => (Side::Client, Cause::Closed),
        Err(e) => e.attribution(),
    };
    ctx.metrics.session_end(a.kind, side, cause);
    match result {
        Ok(()) | Err(S2sError::Done) => {}
        Err(S2sError::Gone(why)) => debug!(%why, "s2s peer gone"),
        Err(S2sError::Dropped(reason, why)) => ctx.metrics.dropped(reason, &why),
        Err(S2sError::Xml(x)) => {
            if let Some(l) = x.limit().and_then(Limit::from_label) {
                ctx.metrics.limit(l);
            }
            let text = x.to_string();
            stream_error(&mut p, &ctx, x.condition(), &text).await;
        }
        Err(S2sError::Stream(cond, text)) => {
            info!(condition = %cond, %text, "s2s stream error");
            stream_error(&mut p, &ctx, cond, &text).await;
        }
    }
    gauge.dec();
}

/// On a Direct TLS listener (XEP-0368), the handshake before any XML, within the
/// session's handshake deadline: ALPN `xmpp-server`, the certificate chosen by SNI as
/// for STARTTLS.
async fn direct_tls(p: &mut Peer, ctx: &Context, deadline: Instant) -> Result<(), S2sError> {
    let tls = p
        .stream
        .tls_server_direct(ctx.server_tls.direct_server.clone());
    match tokio::time::timeout_at(deadline, tls).await {
        Ok(r) => Ok(r?),
        Err(_) => {
            ctx.metrics.limit(crate::metrics::Limit::HandshakeTimeout);
            Err(S2sError::Dropped(
                DropReason::TlsHandshake,
                "TLS handshake not done in time".into(),
            ))
        }
    }
}

async fn stream_error(p: &mut Peer, ctx: &Context, cond: StreamError, text: &str) {
    let header = (p.phase == Phase::AwaitingHeader)
        .then(|| crate::xml::stream_header::write(NS_SERVER, &p.local, None, &p.id, true));
    let text = (!text.is_empty()).then_some(text);
    p.stream
        .stream_error(&ctx.metrics, header, cond, None, text)
        .await;
}

async fn run(p: &mut Peer, ctx: &Arc<Context>, deadline: Instant) -> Result<(), S2sError> {
    loop {
        // The deadline covers getting to the first authenticated exchange.
        let opened = if p.authed.is_empty() && p.phase == Phase::AwaitingHeader {
            tokio::time::timeout_at(deadline, open(p, ctx))
                .await
                .map_err(|_| {
                    ctx.metrics.limit(crate::metrics::Limit::HandshakeTimeout);
                    err(StreamError::ConnectionTimeout, "stream not opened in time")
                })?
        } else if p.phase == Phase::AwaitingHeader {
            open(p, ctx).await
        } else {
            Ok(())
        };
        opened?;
        match elements(p, ctx, deadline).await? {
            Next::Restart => p.phase = Phase::AwaitingHeader,
            Next::Closed => return Ok(()),
        }
    }
}

enum Next {
    Restart,
    Closed,
}

async fn open(p: &mut Peer, ctx: &Arc<Context>) -> Result<(), S2sError> {
    p.stream.restart();
    let header = match p.stream.next_frame().await? {
        Frame::Header { len, header } => {
            p.stream.consume(len);
            header
        }
        _ => return Err(err(StreamError::NotWellFormed, "expected a stream header")),
    };
    let snap = ctx.snapshot.load_full();
    p.id = crate::stream::new_id();
    if !header.is_stream() || header.default_ns.as_deref() != Some(NS_SERVER) {
        return Err(err(StreamError::InvalidNamespace, "expected jabber:server"));
    }
    let to = header.to.as_deref().map(domain_key).unwrap_or_default();
    if p.internal {
        // dealer stands in for every foreign domain the backends reach.
        if !to.is_empty() {
            p.local = to;
        }
    } else if to.is_empty() {
        p.local = snap.config.domain.clone();
    } else if snap.answering(&to).is_some() {
        // A public domain, or a service domain dealer speaks for.
        p.local = to;
    } else {
        return Err(err(
            StreamError::HostUnknown,
            format!("this server is {}", snap.config.domain),
        ));
    }
    let version = header.version.is_some();
    p.header = header;
    let mut out = crate::xml::stream_header::write(
        NS_SERVER,
        &p.local,
        p.header.from.as_deref(),
        &p.id,
        version,
    );
    if version {
        out.push_str("<stream:features>");
        if !p.stream.is_tls() && snap.tls_key.is_some() && p.starttls != StartTls::Off {
            out.push_str(if p.starttls == StartTls::Required {
                "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
            } else {
                "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
            });
        }
        out.push_str(
            "<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>",
        );
    }
    p.stream.send(out.as_bytes()).await?;
    p.phase = Phase::Open;
    Ok(())
}

async fn elements(p: &mut Peer, ctx: &Arc<Context>, deadline: Instant) -> Result<Next, S2sError> {
    loop {
        let frame = if p.authed.is_empty() {
            tokio::time::timeout_at(deadline, p.stream.next_frame())
                .await
                .map_err(|_| {
                    ctx.metrics.limit(crate::metrics::Limit::HandshakeTimeout);
                    err(StreamError::ConnectionTimeout, "no dialback in time")
                })??
        } else {
            p.stream.next_frame().await?
        };
        let len = match frame {
            Frame::Whitespace { len } => {
                p.stream.consume(len);
                continue;
            }
            Frame::Close { len } => {
                p.stream.consume(len);
                let _ = p.stream.send(b"</stream:stream>").await;
                return Ok(Next::Closed);
            }
            Frame::Header { .. } => return Err(err(StreamError::NotWellFormed, "a second header")),
            Frame::Element { len } => len,
        };
        let scope = Scope::from_header(&p.header);
        if let Some(st) = Stanza::parse(&p.stream.buffered()[..len], &scope)? {
            p.stream.consume(len);
            let st = stanza(p, ctx, st)?;
            dispatch(ctx, st).await;
            continue;
        }
        let e = Element::parse(&p.stream.buffered()[..len], &scope)?;
        p.stream.consume(len);
        match (e.ns.as_str(), e.name.as_str()) {
            (NS_TLS, "starttls") => {
                let snap = ctx.snapshot.load_full();
                if p.stream.is_tls() || snap.tls_key.is_none() || p.starttls == StartTls::Off {
                    return Err(err(StreamError::PolicyViolation, "STARTTLS is not offered"));
                }
                // The handshake, too, runs against a clock.
                tokio::time::timeout(
                    snap.config.limits.handshake_timeout,
                    p.stream.starttls_server(ctx.server_tls.starttls.clone()),
                )
                .await
                .map_err(|_| {
                    S2sError::Dropped(DropReason::TlsHandshake, "handshake timed out".into())
                })??;
                return Ok(Next::Restart);
            }
            (NS_DIALBACK, _) if p.starttls == StartTls::Required && !p.stream.is_tls() => {
                return Err(err(StreamError::PolicyViolation, "STARTTLS first"));
            }
            (NS_DIALBACK, "result") if e.attr("type").is_none() => db_result(p, ctx, &e).await?,
            (NS_DIALBACK, "verify") if e.attr("type").is_none() => db_verify(p, ctx, &e).await?,
            _ => {
                return Err(err(
                    StreamError::UnsupportedStanzaType,
                    format!("<{}/> is not handled here", e.name),
                ));
            }
        }
    }
}

/// A dialback request: may the stream carry stanzas from `from` to `to`?
async fn db_result(p: &mut Peer, ctx: &Arc<Context>, e: &Element) -> Result<(), S2sError> {
    let (Some(from), Some(to)) = (e.attr("from"), e.attr("to")) else {
        return Err(err(
            StreamError::ImproperAddressing,
            "db:result needs from and to",
        ));
    };
    let (from, to) = (domain_key(from), domain_key(to));
    let snap = ctx.snapshot.load_full();
    let answer = |kind: &str| {
        format!(
            "<db:result from='{}' to='{}' type='{kind}'/>",
            esc(&to),
            esc(&from)
        )
    };
    if p.authed.iter().any(|(f, t)| *f == from && *t == to) {
        // Already authenticated: say so again, do not store it twice.
        p.stream.send(answer("valid").as_bytes()).await?;
        return Ok(());
    }
    if p.authed.len() >= MAX_PAIRS {
        return Err(err(
            StreamError::PolicyViolation,
            "too many domains on one stream",
        ));
    }
    if p.internal && !internal_may_originate(&snap, p.peer, &from) {
        warn!(s2s.from = %from, "a backend claimed a domain that is not its own");
        return Err(err(
            StreamError::InvalidFrom,
            format!("{from} is not yours"),
        ));
    }
    if !p.internal && snap.answering(&to).is_none() {
        let reply = format!(
            "<db:result from='{}' to='{}' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>",
            esc(&to),
            esc(&from)
        );
        p.stream.send(reply.as_bytes()).await?;
        return Ok(());
    }
    if snap
        .dialback_secrets()
        .any(|secret| dialback::verify(secret, &to, &from, &p.id, &e.text()))
    {
        // A key from dealer's own secret: dealer (or another instance) is talking to
        // itself through a domain that resolves back to it. Refuse, or it loops.
        warn!(s2s.from = %from, s2s.to = %to, "dialback from dealer itself: refusing a routing loop");
        return Err(err(
            StreamError::PolicyViolation,
            "routing loop: this is dealer",
        ));
    }
    let valid = if p.internal {
        // The allow-list vouched for the backend.
        true
    } else {
        let key = e.text();
        // Only the originating domain's own server can vouch for it; a domain of
        // ours cannot originate from outside.
        snap.answering(&from).is_none() && ask_authority(ctx, &from, &to, &p.id, key.trim()).await
    };
    if valid {
        p.authed.push((from.clone(), to.clone()));
        p.stream.send(answer("valid").as_bytes()).await?;
        info!(s2s.from = %from, s2s.to = %to, "dialback: valid");
        Ok(())
    } else {
        p.stream.send(answer("invalid").as_bytes()).await?;
        info!(s2s.from = %from, s2s.to = %to, "dialback: invalid");
        p.stream.close_with(b"</stream:stream>").await;
        Err(S2sError::Done)
    }
}

/// Which domains a peer of the internal listener may speak for: a service domain, from
/// the backend that hosts it; with shared domains the public one; with masked domains
/// the internal domain of a backend. When the peer's address is a configured backend
/// address, only that backend's (or backends', when several share the address).
fn internal_may_originate(
    snap: &crate::snapshot::Snapshot,
    peer: std::net::IpAddr,
    from: &str,
) -> bool {
    // Over every public domain: a backend address of one domain speaks only for that
    // backend, never for another domain's.
    let at = |b: &crate::config::Backend| [b.c2s, b.s2s].iter().flatten().any(|a| a.ip() == peer);
    let known = snap.all().any(|s| s.config.backends.iter().any(at));
    snap.all().any(|s| {
        let c = &s.config;
        let may = |id: usize| !known || at(&c.backends[id]);
        if let Some(svc) = c.service(from) {
            return may(svc.backend);
        }
        match c.domains {
            crate::config::Domains::Shared => {
                from == c.domain && (0..c.backends.len()).any(|id| may(id) && !c.hosts_service(id))
            }
            crate::config::Domains::Masked => (0..c.backends.len())
                .any(|id| may(id) && c.backends[id].domain.as_deref() == Some(from)),
        }
    })
}

/// An authoritative check of a key dealer issued for one of its links.
async fn db_verify(p: &mut Peer, ctx: &Arc<Context>, e: &Element) -> Result<(), S2sError> {
    let (Some(from), Some(to), Some(id)) = (e.attr("from"), e.attr("to"), e.attr("id")) else {
        return Err(err(
            StreamError::ImproperAddressing,
            "db:verify needs from, to and id",
        ));
    };
    let snap = ctx.snapshot.load_full();
    // `from` is the receiving server that got our key, `to` the domain we claimed; on
    // the federation listener dealer vouches only for its public and service domains.
    let ours = p.internal || snap.answering(&domain_key(to)).is_some();
    let ok = ours
        && snap.dialback_secrets().any(|secret| {
            dialback::verify(secret, &domain_key(from), &domain_key(to), id, &e.text())
        });
    let reply = format!(
        "<db:verify from='{}' to='{}' id='{}' type='{}'/>",
        esc(to),
        esc(from),
        esc(id),
        if ok { "valid" } else { "invalid" }
    );
    info!(s2s.from = %from, s2s.to = %to, valid = ok, "db:verify answered");
    p.stream.send(reply.as_bytes()).await?;
    Ok(())
}

/// A stanza on an authenticated stream: check its addressing (and mask it, from a
/// backend) before it is sent on.
fn stanza(p: &mut Peer, ctx: &Arc<Context>, st: Stanza) -> Result<Stanza, S2sError> {
    let dir = if p.internal {
        StanzaDirection::Out
    } else {
        StanzaDirection::In
    };
    let reject = |cond: StreamError, text: &str| {
        ctx.metrics.s2s_stanzas(dir, StanzaResult::Rejected).inc();
        err(cond, text)
    };
    if p.authed.is_empty() {
        return Err(reject(StreamError::NotAuthorized, "dialback first"));
    }
    let (Some(from), Some(to)) = (Jid::parse(&st.from), Jid::parse(&st.to)) else {
        return Err(reject(
            StreamError::ImproperAddressing,
            "a stanza needs from and to",
        ));
    };
    let (fd, td) = (domain_key(from.domain), domain_key(to.domain));
    if !p.authed.iter().any(|(f, _)| *f == fd) {
        return Err(reject(
            StreamError::InvalidFrom,
            "from a domain this stream has not authenticated",
        ));
    }
    if !p.authed.iter().any(|(f, t)| *f == fd && *t == td) {
        let cond = if p.internal {
            StreamError::ImproperAddressing
        } else {
            StreamError::HostUnknown
        };
        return Err(reject(cond, "to a domain this stream is not for"));
    }
    let snap = ctx.snapshot.load_full();
    // On the internal listener: the public domain whose backend (or service) sent it.
    let host = if p.internal { snap.serving(&fd) } else { None };
    let host = host.unwrap_or(&snap);
    let service = host.config.service(&fd).is_some();
    // A service speaks under its public name: nothing to check against users or mask.
    let st = if p.internal && host.config.domains == crate::config::Domains::Masked && !service {
        let snap = host;
        // The backend whose internal domain authenticated this stream speaks for it.
        if !snap
            .config
            .backends
            .iter()
            .any(|b| b.domain.as_deref() == Some(fd.as_str()))
        {
            return Err(reject(StreamError::InvalidFrom, "not a backend's domain"));
        }
        // A user speaks only from the backend that owns it.
        if let Some(local) = from.local {
            let owner = snap
                .router
                .route(local)
                .ok()
                .map(|d| &snap.config.backends[d.backend]);
            if owner.and_then(|b| b.domain.as_deref()) != Some(fd.as_str()) {
                return Err(reject(
                    StreamError::InvalidFrom,
                    "a user of another backend",
                ));
            }
        }
        ctx.metrics
            .s2s_stanzas(StanzaDirection::Out, StanzaResult::Masked)
            .inc();
        super::mask(snap, &fd, st)?
    } else {
        st
    };
    Ok(st)
}

/// Ask `originating`'s authoritative server whether `key` is its key for the stream
/// `id` it opened to `receiving`.
async fn ask_authority(
    ctx: &Arc<Context>,
    originating: &str,
    receiving: &str,
    id: &str,
    key: &str,
) -> bool {
    match tokio::time::timeout(
        VERIFY_TIMEOUT,
        verify_with(ctx, originating, receiving, id, key),
    )
    .await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            warn!(s2s.from = %originating, error = %e, "dialback: authoritative server unreachable");
            false
        }
        Err(_) => {
            warn!(s2s.from = %originating, "dialback: authoritative server timed out");
            false
        }
    }
}

async fn verify_with(
    ctx: &Arc<Context>,
    originating: &str,
    receiving: &str,
    id: &str,
    key: &str,
) -> Result<bool, LinkError> {
    let snap = ctx.snapshot.load_full();
    let addrs = ctx
        .resolver(&snap)
        .map_err(|e| LinkError::NotFound(e.to_string()))?
        .lookup(originating, snap.config.s2s.routes.get(originating))
        .await
        .map_err(|e| LinkError::NotFound(e.to_string()))?;
    let mut tcp = None;
    for a in addrs {
        if let Ok(Ok(t)) =
            tokio::time::timeout(Duration::from_secs(5), crate::net::connect(a)).await
        {
            tcp = Some(t);
            break;
        }
    }
    let tcp = tcp.ok_or_else(|| LinkError::Connect(originating.to_owned()))?;
    let mut s = XmlStream::new(
        Conn::Plain(tcp),
        FrameLimits::from_config(&snap.config.limits),
    );
    let (header, _) = open_stream(&mut s, receiving, originating).await?;
    let req = format!(
        "<db:verify from='{}' to='{}' id='{}'>{}</db:verify>",
        esc(receiving),
        esc(originating),
        esc(id),
        crate::xml::escape::text(key)
    );
    s.send(req.as_bytes()).await?;
    loop {
        let (e, len) = s.next_element(&header).await?;
        s.consume(len);
        if e.is("verify", NS_DIALBACK) && e.attr("id") == Some(id) {
            let _ = s.send(b"</stream:stream>").await;
            return Ok(e.attr("type") == Some("valid"));
        }
    }
}
