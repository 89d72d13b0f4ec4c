//! Client-to-server sessions. A session is a sequence of phases, each an `async fn`
//! that takes the client's stream and hands it on, so bytes already read move with it:
//!
//! 1. `preamble`: PROXY header (when the listener expects one), per-source limit,
//!    Direct TLS.
//! 2. `preauth`: stream header, features, STARTTLS, and the auth peek, answering
//!    everything dealer itself can answer, until the client's first authentication
//!    element says who it is (a [`Login`]).
//! 3. routing: the live snapshot names the owner; `redirect` answers with
//!    see-other-host (or the iq error 302), `forward` opens the backend leg and
//!    watches authentication through, then hands the connection to a `relay`.
//!
//! Phases 1–3 run under one deadline (`limits.handshake_timeout`). While dealer
//! still parses the stream, every failure is answered with a stream error.

pub mod early;
pub mod forward;
pub mod peek;
pub mod preauth;
pub mod redirect;
pub mod relayed;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span};
use zeroize::Zeroizing;

use crate::config::{BackendId, C2sMode, Mechanism, Transport};
use crate::listener::{Accepted, Kind};
use crate::metrics::{
    Cause, ConnGauge, ConnState, DropReason, Limit, Outcome, RoutingSource, Side,
};
use crate::net::Conn;
use crate::routing::RouteError;
use crate::snapshot::Snapshot;
use crate::stream::{StreamIoError, XmlStream};
use crate::xml::{FrameLimits, StreamError, StreamHeader, XmlError};

/// What client sessions use of the running dealer: the live snapshot (routing,
/// limits, TLS key), metrics, connection limits, TLS configs, and the registry of
/// relayed sessions.
pub struct Context {
    pub snapshot: crate::snapshot::Live,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub conn_limits: Arc<crate::listener::ConnLimits>,
    /// Server TLS configs; their certificate follows the live snapshot.
    pub server_tls: crate::tls::ServerTls,
    pub backend_tls: Arc<rustls::ClientConfig>,
    /// Relayed sessions, for shutdown and re-dealing.
    pub sessions: Arc<crate::sessions::Sessions>,
    pub lifecycle: Arc<crate::shutdown::Lifecycle>,
}

/// How a session ended before hand-over, which side ended it, and so what (if
/// anything) the client is told. Every end is counted by side and cause.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client's bytes broke XML or a limit.
    #[error("{0}")]
    Xml(#[from] XmlError),
    /// The client hung up or its connection failed: nobody to tell.
    #[error("client connection: {0}")]
    Gone(String),
    /// A condition to send as a stream error, with optional text; `side` is who
    /// caused it.
    #[error("{cond}: {text}")]
    Stream {
        side: Side,
        cause: Cause,
        cond: StreamError,
        text: String,
    },
    /// The TLS handshake failed: no stream to report on.
    #[error("tls handshake: {0}")]
    Tls(std::io::Error),
    /// dealer closes the connection without a word (counted and logged by reason).
    #[error("dropped ({reason}): {why}", reason = .0.label(), why = .1)]
    Dropped(DropReason, String),
    /// The session ended the way it should: closed by `Side`, or redirected.
    #[error("done ({0}, {1})")]
    Done(Side, Cause),
}

impl SessionError {
    /// A stream error; who is to blame follows from the condition: the backend for
    /// `<remote-connection-failed/>`, dealer for limits and shutdown, else the client.
    pub fn stream(cond: StreamError, text: impl Into<String>) -> SessionError {
        let (side, cause) = match cond {
            StreamError::RemoteConnectionFailed => (Side::Backend, Cause::Unavailable),
            StreamError::PolicyViolation | StreamError::ResourceConstraint => {
                (Side::Dealer, Cause::Refused)
            }
            StreamError::SystemShutdown => (Side::Dealer, Cause::Shutdown),
            StreamError::InternalServerError => (Side::Dealer, Cause::Unavailable),
            StreamError::ConnectionTimeout => (Side::Client, Cause::Timeout),
            _ => (Side::Client, Cause::Protocol),
        };
        SessionError::Stream {
            side,
            cause,
            cond,
            text: text.into(),
        }
    }

    /// Who ended the session, and how.
    pub fn attribution(&self) -> (Side, Cause) {
        match self {
            SessionError::Xml(_) => (Side::Client, Cause::Protocol),
            SessionError::Gone(_) => (Side::Client, Cause::Gone),
            SessionError::Stream { side, cause, .. } => (*side, *cause),
            SessionError::Tls(_) => (Side::Client, Cause::Tls),
            SessionError::Dropped(DropReason::StarttlsPipelined, _) => {
                (Side::Client, Cause::Protocol)
            }
            SessionError::Dropped(DropReason::TlsHandshake, _) => (Side::Client, Cause::Tls),
            SessionError::Dropped(_, _) => (Side::Dealer, Cause::Refused),
            SessionError::Done(side, cause) => (*side, *cause),
        }
    }
}

impl From<StreamIoError> for SessionError {
    fn from(e: StreamIoError) -> Self {
        match e {
            StreamIoError::Xml(x) => SessionError::Xml(x),
            StreamIoError::Eof => SessionError::Gone("closed".into()),
            StreamIoError::Io(e) => SessionError::Gone(e.to_string()),
        }
    }
}

impl From<crate::stream::StartTlsError> for SessionError {
    fn from(e: crate::stream::StartTlsError) -> Self {
        use crate::stream::StartTlsError as E;
        match e {
            E::Pipelined => SessionError::Dropped(DropReason::StarttlsPipelined, e.to_string()),
            E::Handshake(e) => SessionError::Tls(e),
            E::Stream(e) => e.into(),
            e => SessionError::Gone(e.to_string()),
        }
    }
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::Gone(e.to_string())
    }
}

/// Where a client's current stream stands while dealer parses it. A new stream
/// (after STARTTLS, or a failed login's retry on the same stream) starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The client's stream header is awaited; dealer has sent nothing on this stream.
    AwaitingHeader,
    /// dealer answered with its header and features: pre-auth elements flow.
    Open,
}

/// The client side of a session while dealer still parses it.
pub struct Client {
    pub stream: XmlStream,
    /// The client's address (from the PROXY header when there is one).
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    pub kind: Kind,
    pub listener: crate::config::Listener,
    /// The client's latest stream header.
    pub header: StreamHeader,
    /// Where the current stream stands.
    pub phase: Phase,
    pub stream_id: String,
    /// The span's user and backend fields are set (on the first routed login).
    pub span_recorded: bool,
    /// Logins refused on this stream so far (`limits.max_failed_logins`).
    pub failed_logins: u32,
    /// The public domain the client's header named (`None` until then, and for a
    /// header without `to`: the first domain).
    pub domain: Option<String>,
}

impl Client {
    pub fn tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// The live snapshot of the client's public domain. A reload that no longer
    /// serves it ends the session before anything is routed there.
    pub fn snapshot(&self, ctx: &Context) -> Result<Arc<Snapshot>, SessionError> {
        let live = ctx.snapshot.load_full();
        match &self.domain {
            None => Ok(live),
            Some(d) => live.select(d).ok_or_else(|| {
                SessionError::stream(StreamError::HostUnknown, format!("{d} is no longer served"))
            }),
        }
    }

    /// The public domain this stream speaks for.
    pub fn domain_name(&self, ctx: &Context) -> String {
        self.domain
            .clone()
            .unwrap_or_else(|| ctx.snapshot.load().config.domain.clone())
    }

    /// How the client came, for redirect targets.
    pub fn transport(&self) -> Transport {
        match self.kind {
            Kind::C2sTls => Transport::DirectTls,
            Kind::Websocket => Transport::Websocket,
            _ => Transport::Stream,
        }
    }

    /// Send a stream error (with our header first if the stream has none yet) and
    /// close, bounded so a client that does not read cannot hold the session.
    pub async fn stream_error(&mut self, ctx: &Context, cond: StreamError, text: Option<&str>) {
        self.stream_error_with(ctx, cond, None, text).await
    }

    /// A stream error whose condition element carries `content` (see-other-host).
    pub async fn stream_error_with(
        &mut self,
        ctx: &Context,
        cond: StreamError,
        content: Option<&str>,
        text: Option<&str>,
    ) {
        let header = (self.phase == Phase::AwaitingHeader).then(|| {
            if self.stream_id.is_empty() {
                self.stream_id = crate::stream::new_id();
            }
            let domain = self.domain_name(ctx);
            crate::xml::stream_header::write(
                crate::xml::NS_CLIENT,
                &domain,
                None,
                &self.stream_id,
                true,
            )
        });
        self.phase = Phase::Open;
        self.stream
            .stream_error(&ctx.metrics, header, cond, content, text)
            .await;
    }

    /// Count a refused login (SASL, SASL2 or iq:auth, refused by dealer or by the
    /// backend; the client has had its answer). Past `limits.max_failed_logins` the
    /// stream ends: without this, a client could try passwords for as long as the
    /// handshake deadline lasts.
    pub fn failed_login(&mut self, ctx: &Context) -> Result<(), SessionError> {
        self.failed_logins += 1;
        let max = ctx.snapshot.load().config.limits.max_failed_logins;
        if max > 0 && self.failed_logins >= max {
            ctx.metrics.limit(crate::metrics::Limit::FailedLogins);
            return Err(SessionError::stream(
                StreamError::PolicyViolation,
                format!("{} failed logins on this stream", self.failed_logins),
            ));
        }
        Ok(())
    }

    /// Write `bytes` and close the connection, within a second.
    pub async fn close_with(&mut self, bytes: &[u8]) {
        self.stream.close_with(bytes).await;
    }
}

/// What the client's first authentication element said.
pub struct Login {
    /// As the client wrote it (not normalised); `None` for SASL ANONYMOUS.
    pub username: Option<String>,
    pub kind: LoginKind,
    /// What starts authentication at the backend: the client's element, or for an
    /// `<auth/>` without initial response, one rebuilt around the client's response.
    /// Carries credentials: wiped when dropped.
    pub first: Zeroizing<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginKind {
    Sasl(Mechanism),
    /// XEP-0388 `<authenticate/>`, with the mechanism as the client named it.
    Sasl2(String),
    /// XEP-0078 `set`, with the iq's id.
    IqAuth {
        id: String,
    },
    /// XEP-0077 `set`, with the iq's id.
    Register {
        id: String,
    },
}

/// Where a login goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// With the target as the client's transport writes it (`host:port`, a URL).
    Redirect(BackendId, String),
    Forward(BackendId),
}

/// The routing decision for `login` against the live snapshot; a redirect names the
/// owner's address for the transport the client came over (`direct_tls`).
pub fn decide(snap: &Snapshot, login: &Login, transport: Transport) -> Result<Action, RouteError> {
    let anonymous = matches!(login.kind, LoginKind::Sasl(Mechanism::Anonymous));
    let user = login.username.as_deref().filter(|_| !anonymous);
    decide_user(snap, user, transport)
}

/// The routing decision for `user` (`None`: an anonymous login).
pub fn decide_user(
    snap: &Snapshot,
    user: Option<&str>,
    transport: Transport,
) -> Result<Action, RouteError> {
    let c = &snap.config;
    let backend = match user {
        None => {
            // Validation guarantees an anonymous backend when ANONYMOUS is offered.
            let b = c.c2s.anonymous_backend.ok_or(RouteError::NoneUp)?;
            if !snap.is_up(b) {
                return Err(RouteError::OwnerDown(c.backends[b].name.clone()));
            }
            b
        }
        Some(name) => snap.route(name)?.backend,
    };
    let redirect = |b: BackendId| {
        // Validation requires `redirect` for every backend clients are sent to.
        let to = c.backends[b]
            .redirect_for(transport)
            .ok_or(RouteError::NoneUp)?;
        Ok(Action::Redirect(b, to))
    };
    match (c.self_backend, c.c2s.mode) {
        (Some(me), _) if me == backend => Ok(Action::Forward(backend)),
        (Some(_), _) | (None, C2sMode::Redirect) => redirect(backend),
        (None, C2sMode::Forward) => Ok(Action::Forward(backend)),
    }
}

/// Run one client connection to its end.
pub async fn serve(a: Accepted, ctx: Arc<Context>) {
    // Behind a PROXY-speaking balancer the socket's peer is the balancer: it is logged
    // as `proxy.addr`, and `client.addr` waits for the header (a span field recorded
    // twice would be printed twice).
    let span = if a.listener.proxy_protocol {
        info_span!("c2s", proxy.addr = %a.peer, client.addr = tracing::field::Empty, listener = a.kind.label(), user = tracing::field::Empty, backend.name = tracing::field::Empty)
    } else {
        info_span!("c2s", client.addr = %a.peer, listener = a.kind.label(), user = tracing::field::Empty, backend.name = tracing::field::Empty)
    };
    session(a, ctx).instrument(span).await
}

async fn session(a: Accepted, ctx: Arc<Context>) {
    let started = Instant::now();
    let snap = ctx.snapshot.load_full();
    let limits = FrameLimits::from_config(&snap.config.limits);
    let deadline = started + snap.config.limits.handshake_timeout;
    drop(snap);
    let permit = a.permit;
    let mut gauge = ConnGauge::new(&ctx.metrics, a.kind);
    let mut client = Client {
        stream: XmlStream::new(Conn::Plain(a.tcp), limits),
        peer: a.peer,
        local: a.local,
        kind: a.kind,
        listener: a.listener,
        header: StreamHeader::default(),
        phase: Phase::AwaitingHeader,
        // Made when the client's header arrives (or for an error before it).
        stream_id: String::new(),
        span_recorded: false,
        failed_logins: 0,
        domain: None,
    };
    let handshake = async {
        // Each phase's state machine is boxed: the session task itself stays small, so
        // spawning it and switching phases moves a few pointers, not kilobytes.
        let _slot = if client.kind == Kind::Websocket {
            Box::pin(crate::websocket::preamble(&mut client, &ctx)).await?
        } else {
            Box::pin(preauth::preamble(&mut client, &ctx)).await?
        };
        loop {
            let outcome = match Box::pin(preauth::run(&mut client, &ctx)).await? {
                preauth::Entry::Login(login) => {
                    Box::pin(route(&mut client, &ctx, login, started, &mut gauge)).await?
                }
                preauth::Entry::Early(user) => {
                    Box::pin(route_early(&mut client, &ctx, user, started, &mut gauge)).await?
                }
            };
            match outcome {
                forward::Outcome::Retry => continue,
                forward::Outcome::HandOver(h) => return Ok((h, _slot)),
            }
        }
    };
    let result = tokio::select! {
        r = tokio::time::timeout_at(deadline, handshake) => Some(r),
        // dealer still parses this stream: it can say why it ends.
        _ = ctx.lifecycle.sessions_stop.cancelled() => None,
    };
    match result {
        None => {
            ctx.metrics
                .session_end(client.kind, Side::Dealer, Cause::Shutdown);
            client
                .stream_error(
                    &ctx,
                    StreamError::SystemShutdown,
                    Some("dealer is shutting down"),
                )
                .await;
        }
        Some(Ok(Ok((handover, slot)))) => {
            gauge.set(ConnState::Relaying);
            // The relay gets a task of its own holding only what it needs, so that an
            // idle session costs the relay's few hundred bytes, not this handshake's
            // whole state machine.
            let held = relayed::Held {
                permit,
                slot,
                gauge,
            };
            relayed::spawn_relay(client, handover, ctx.clone(), held);
        }
        Some(Ok(Err(e))) => report(&mut client, &ctx, e).await,
        Some(Err(_)) => {
            ctx.metrics.limit(Limit::HandshakeTimeout);
            ctx.metrics
                .session_end(client.kind, Side::Client, Cause::Timeout);
            debug!("handshake deadline passed");
            client
                .stream_error(
                    &ctx,
                    StreamError::ConnectionTimeout,
                    Some("login took too long"),
                )
                .await;
        }
    }
}

/// Answer a failure while dealer still parses the stream, and count the end.
async fn report(client: &mut Client, ctx: &Context, e: SessionError) {
    let (side, cause) = e.attribution();
    ctx.metrics.session_end(client.kind, side, cause);
    match e {
        SessionError::Xml(x) => {
            if let Some(limit) = x.limit().and_then(Limit::from_label) {
                ctx.metrics.limit(limit);
            }
            info!(error = %x, "client stream rejected");
            let text = x.to_string();
            client.stream_error(ctx, x.condition(), Some(&text)).await;
        }
        SessionError::Stream { cond, text, .. } => {
            info!(condition = %cond, %text, "stream error");
            let text = (!text.is_empty()).then_some(text);
            client.stream_error(ctx, cond, text.as_deref()).await;
        }
        SessionError::Gone(why) => debug!(%why, "client gone"),
        SessionError::Tls(e) => ctx.metrics.dropped(DropReason::TlsHandshake, &e),
        SessionError::Dropped(reason, why) => ctx.metrics.dropped(reason, &why),
        SessionError::Done(..) => {}
    }
}

/// Route a client that named itself in its stream header, and act on it: redirect
/// on the header alone, or open the owner's stream (`early`). Counts as a login for
/// `limits.logins_per_source_per_second`.
async fn route_early(
    client: &mut Client,
    ctx: &Arc<Context>,
    user: String,
    started: Instant,
    gauge: &mut ConnGauge,
) -> Result<forward::Outcome, SessionError> {
    let snap = client.snapshot(ctx)?;
    preauth::login_allowed(client, ctx, &snap)?;
    let decision = decide_user(&snap, Some(&user), client.transport());
    ctx.metrics
        .handshake_duration(client.kind)
        .observe(started.elapsed().as_secs_f64());
    let action = match decision {
        Ok(a) => a,
        Err(e) => {
            ctx.metrics.routing(None, Outcome::Error);
            return Err(SessionError::stream(
                StreamError::RemoteConnectionFailed,
                e.to_string(),
            ));
        }
    };
    let (id, outcome) = match &action {
        Action::Redirect(id, _) => (*id, Outcome::Redirect),
        Action::Forward(id) => (*id, Outcome::Forward),
    };
    let name = &snap.config.backends[id].name;
    if !client.span_recorded {
        client.span_recorded = true;
        tracing::Span::current().record("backend.name", name.as_str());
        let n = snap
            .router
            .normalise(&user)
            .map(|c| c.into_owned())
            .unwrap_or_else(|_| user.clone());
        tracing::Span::current().record("user", n.as_str());
    }
    ctx.metrics.routing(Some(name), outcome);
    ctx.metrics.routing_source(RoutingSource::StreamFrom);
    match action {
        Action::Redirect(_, to) => {
            info!(redirect.to = %to, "redirecting on the stream header");
            redirect::see_other(client, ctx, &to).await;
            Err(SessionError::Done(Side::Dealer, Cause::Redirected))
        }
        Action::Forward(id) => {
            gauge.set(ConnState::Authenticating);
            early::run(client, ctx, &snap, id).await
        }
    }
}

/// Route a login and act on it.
async fn route(
    client: &mut Client,
    ctx: &Arc<Context>,
    login: Login,
    started: Instant,
    gauge: &mut ConnGauge,
) -> Result<forward::Outcome, SessionError> {
    let snap = client.snapshot(ctx)?;
    let decision = decide(&snap, &login, client.transport());
    ctx.metrics
        .handshake_duration(client.kind)
        .observe(started.elapsed().as_secs_f64());
    let action = match decision {
        Ok(a) => a,
        Err(RouteError::Name(e)) => {
            // The backend would refuse this name too; let the client try another.
            ctx.metrics.routing(None, Outcome::Error);
            info!(error = %e, "unroutable username");
            preauth::refuse(client, &login, "not-authorized", &e.to_string()).await?;
            client.failed_login(ctx)?;
            return Ok(forward::Outcome::Retry);
        }
        Err(e) => {
            ctx.metrics.routing(None, Outcome::Error);
            return Err(SessionError::stream(
                StreamError::RemoteConnectionFailed,
                e.to_string(),
            ));
        }
    };
    let (id, outcome) = match &action {
        Action::Redirect(id, _) => (*id, Outcome::Redirect),
        Action::Forward(id) => (*id, Outcome::Forward),
    };
    let name = &snap.config.backends[id].name;
    // A span field recorded twice is printed twice: record the first login only
    // (later attempts on the stream log their user and backend themselves).
    if !client.span_recorded {
        client.span_recorded = true;
        tracing::Span::current().record("backend.name", name.as_str());
        if let Some(u) = &login.username {
            // The normalised name: the one routing used, and the one logs should group by.
            let n = snap
                .router
                .normalise(u)
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| u.clone());
            tracing::Span::current().record("user", n.as_str());
        }
    } else {
        info!(user = login.username.as_deref().unwrap_or(""), backend.name = %name, "another login on this stream");
    }
    ctx.metrics.routing(Some(name), outcome);
    ctx.metrics.routing_source(match login.kind {
        LoginKind::Sasl(_) => RoutingSource::Sasl,
        LoginKind::Sasl2(_) => RoutingSource::Sasl2,
        LoginKind::IqAuth { .. } => RoutingSource::IqAuth,
        LoginKind::Register { .. } => RoutingSource::Register,
    });
    match action {
        Action::Redirect(_, to) => {
            redirect::send(client, ctx, &login, &to).await;
            Err(SessionError::Done(Side::Dealer, Cause::Redirected))
        }
        Action::Forward(id) => {
            gauge.set(ConnState::Authenticating);
            let r = forward::authenticate(client, ctx, &snap, id, login).await;
            if matches!(r, Ok(forward::Outcome::Retry)) {
                gauge.set(ConnState::Handshake);
            }
            r
        }
    }
}
