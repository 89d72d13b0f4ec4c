//! The pre-authentication stream, which dealer speaks itself: PROXY header and Direct
//! TLS (`preamble`), then stream headers, features, STARTTLS, and the client's first
//! authentication element (`run`). dealer answers what it can answer alone — the
//! XEP-0078 `get`, the XEP-0077 form, an empty SASL challenge — and stops at the
//! first element that names the user.

use std::sync::Arc;

use tracing::debug;
use zeroize::Zeroizing;

use super::Context;
use super::peek::{PeekError, decode_sasl, sasl_username, username_by_name};
use super::{Client, Login, LoginKind, Phase, SessionError};
use crate::config::{Mechanism, StartTls};
use crate::listener::{Kind, SourceSlot};
use crate::metrics::{Cause, DropReason, Peek, Side};
use crate::proxy_protocol::ProxyInfo;
use crate::snapshot::Snapshot;
use crate::xml::element::{Element, Scope};
use crate::xml::escape::{attr as esc_attr, text as esc_text};
use crate::xml::{
    Frame, NS_CLIENT, NS_IQ_AUTH, NS_IQ_REGISTER, NS_SASL, NS_SASL2, NS_TLS, StreamError,
};

/// PROXY header, Direct TLS, and the per-source connection limit.
pub async fn preamble(c: &mut Client, ctx: &Arc<Context>) -> Result<SourceSlot, SessionError> {
    if c.listener.proxy_protocol {
        match read_proxy_header(&mut c.stream).await? {
            ProxyInfo::Tcp {
                source,
                destination,
            } => {
                c.peer = source;
                c.local = destination;
                tracing::Span::current().record("client.addr", tracing::field::display(source));
            }
            ProxyInfo::Local => {
                tracing::Span::current().record("client.addr", tracing::field::display(c.peer));
            }
        }
    }
    // Counted before any TLS work, so one source cannot make dealer do handshakes
    // past its limit.
    let max = ctx.snapshot.load().config.limits.max_connections_per_source;
    let slot = ctx.conn_limits.admit(c.peer.ip(), max);
    if c.kind == Kind::C2sTls {
        if slot.is_none() {
            // A stream error could only be read through TLS: a refusal would cost a
            // handshake. Close instead.
            ctx.metrics
                .limit(crate::metrics::Limit::ConnectionsPerSource);
            return Err(SessionError::Dropped(
                DropReason::ConnectionsPerSource,
                format!("too many connections from {}", c.peer.ip()),
            ));
        }
        c.stream
            .tls_server_direct(ctx.server_tls.direct_client.clone())
            .await?;
    }
    match slot {
        Some(slot) => Ok(slot),
        None => {
            ctx.metrics
                .limit(crate::metrics::Limit::ConnectionsPerSource);
            Err(SessionError::stream(
                StreamError::PolicyViolation,
                "too many connections from your address",
            ))
        }
    }
}

async fn read_proxy_header(s: &mut crate::stream::XmlStream) -> Result<ProxyInfo, SessionError> {
    match s.read_proxy_header().await? {
        Ok(info) => Ok(info),
        Err(e) => Err(SessionError::stream(
            StreamError::NotWellFormed,
            format!("expected a PROXY protocol header: {e}"),
        )),
    }
}

/// What the element loop ended with.
enum Step {
    /// TLS is up: the client starts a new stream.
    Restart,
    Login(Login),
}

/// How the pre-auth stream ended.
pub enum Entry {
    /// The client's first authentication element, peeked on dealer's own stream.
    Login(Login),
    /// The client named itself in its stream header (`from`, after TLS): its
    /// localpart, to route on at once (`early`). dealer has not answered the header.
    Early(String),
}

/// Speak the pre-auth stream until the client's first authentication element, or
/// until a stream header that names the client.
pub async fn run(c: &mut Client, ctx: &Arc<Context>) -> Result<Entry, SessionError> {
    loop {
        if c.phase == Phase::AwaitingHeader
            && let Some(user) = open_stream(c, ctx).await?
        {
            return Ok(Entry::Early(user));
        }
        match elements(c, ctx).await? {
            Step::Restart => c.phase = Phase::AwaitingHeader,
            Step::Login(l) => return Ok(Entry::Login(l)),
        }
    }
}

/// Whether the stream with header `c.header` is routed on its `from` (DESIGN.md §3.6):
/// XMPP 1.0, on TLS or a listener without STARTTLS, naming a user of the public
/// domain whom routing can place, on a backend whose offer dealer can relay as it
/// stands (no channel-bound mechanism on a TLS leg). Anything else takes the peek path.
fn early_user(c: &Client, snap: &Snapshot, legacy: bool) -> Option<String> {
    if legacy || !(c.tls() || c.listener.starttls == StartTls::Off) {
        return None;
    }
    let from = crate::jid::Jid::parse(c.header.from.as_deref()?)?;
    let local = from.local?;
    if !from.domain_is(&snap.config.domain) {
        return None;
    }
    let owner = snap.route(local).ok()?.backend;
    let b = &snap.config.backends[owner];
    let binds = snap.health[owner]
        .offer()
        .is_some_and(|o| o.binds_channel());
    if b.tls && binds {
        return None;
    }
    Some(local.to_owned())
}

/// Read and check the client's stream header; answer with ours and the features, or
/// (`Some(user)`) leave the answer to the owner when the header names the client.
async fn open_stream(c: &mut Client, ctx: &Arc<Context>) -> Result<Option<String>, SessionError> {
    c.stream.restart();
    let header = match c.stream.next_frame().await? {
        Frame::Header { len, header } => {
            c.stream.consume(len);
            header
        }
        // The framer yields nothing but a header (or an error) before one.
        _ => {
            return Err(SessionError::stream(
                StreamError::NotWellFormed,
                "expected a stream header",
            ));
        }
    };
    c.header = header;
    c.stream_id = crate::stream::new_id();
    if !c.header.is_stream() {
        return Err(SessionError::stream(
            StreamError::InvalidNamespace,
            "not an XMPP stream",
        ));
    }
    if c.header.default_ns.as_deref() != Some(NS_CLIENT) {
        return Err(SessionError::stream(
            StreamError::InvalidNamespace,
            "expected jabber:client",
        ));
    }
    let to = c
        .header
        .to
        .as_deref()
        .map(|t| t.trim_end_matches('.').to_lowercase());
    // The header's `to` picks the public domain, and with it the backends.
    let live = ctx.snapshot.load_full();
    let snap = match &to {
        None => live,
        Some(t) => live.select(t).ok_or_else(|| {
            SessionError::stream(StreamError::HostUnknown, format!("{t} is not served here"))
        })?,
    };
    c.domain = Some(snap.config.domain.clone());
    let legacy = match c.header.version {
        Some((1, _)) => false,
        Some(_) => {
            return Err(SessionError::stream(
                StreamError::UnsupportedVersion,
                "XMPP 1.0 only",
            ));
        }
        None if snap.config.c2s.legacy_auth => true,
        None => {
            return Err(SessionError::stream(
                StreamError::UnsupportedVersion,
                "a stream without version='1.0' needs jabber:iq:auth, which is off",
            ));
        }
    };
    if legacy && starttls_required(c) {
        return Err(SessionError::stream(
            StreamError::UnsupportedVersion,
            "TLS is required: use version='1.0' with STARTTLS, or Direct TLS",
        ));
    }
    if let Some(user) = early_user(c, &snap, legacy) {
        return Ok(Some(user));
    }
    let mut out = crate::xml::stream_header::write(
        NS_CLIENT,
        &snap.config.domain,
        c.header.from.as_deref(),
        &c.stream_id,
        !legacy,
    );
    if !legacy {
        features(&mut out, c, &snap);
    }
    c.stream.send(out.as_bytes()).await?;
    c.phase = Phase::Open;
    Ok(None)
}

fn starttls_required(c: &Client) -> bool {
    !c.tls() && c.listener.starttls == StartTls::Required
}

/// Append the pre-auth `<stream:features/>` to `f` (the header just written), in
/// place: this runs for every login.
fn features(f: &mut String, c: &Client, snap: &Snapshot) {
    f.reserve(512);
    f.push_str("<stream:features>");
    if !c.tls() && c.listener.starttls != StartTls::Off {
        f.push_str("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>");
        if c.listener.starttls == StartTls::Required {
            f.push_str("<required/></starttls></stream:features>");
            return;
        }
        f.push_str("</starttls>");
    }
    let mechs = snap.mechanisms();
    if !mechs.is_empty() {
        f.push_str("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>");
        for m in mechs {
            f.push_str("<mechanism>");
            f.push_str(m.name());
            f.push_str("</mechanism>");
        }
        f.push_str("</mechanisms>");
    }
    if let Some(sasl2) = snap.sasl2() {
        f.push_str("<authentication xmlns='urn:xmpp:sasl:2'>");
        for m in &sasl2.mechanisms {
            f.push_str("<mechanism>");
            f.push_str(&esc_text(m));
            f.push_str("</mechanism>");
        }
        if sasl2.bind2 || !sasl2.fast.is_empty() {
            f.push_str("<inline>");
            if sasl2.bind2 {
                f.push_str("<bind xmlns='urn:xmpp:bind:0'/>");
            }
            if !sasl2.fast.is_empty() {
                f.push_str("<fast xmlns='urn:xmpp:fast:0'>");
                for m in &sasl2.fast {
                    f.push_str("<mechanism>");
                    f.push_str(&esc_text(m));
                    f.push_str("</mechanism>");
                }
                f.push_str("</fast>");
            }
            f.push_str("</inline>");
        }
        f.push_str("</authentication>");
    }
    if snap.config.c2s.legacy_auth {
        f.push_str("<auth xmlns='http://jabber.org/features/iq-auth'/>");
    }
    if snap.config.c2s.registration {
        f.push_str("<register xmlns='http://jabber.org/features/iq-register'/>");
    }
    f.push_str("</stream:features>");
}

/// One pre-auth element, parsed, with its length in the buffer.
async fn next_element(c: &mut Client) -> Result<(Element, usize), SessionError> {
    let len = next_element_len(c).await?;
    let e = Element::parse(&c.stream.buffered()[..len], &Scope::from_header(&c.header))?;
    Ok((e, len))
}

/// The length of the next pre-auth element, whole at the front of the buffer.
async fn next_element_len(c: &mut Client) -> Result<usize, SessionError> {
    loop {
        match c.stream.next_frame().await? {
            Frame::Whitespace { len } => c.stream.consume(len),
            Frame::Element { len } => return Ok(len),
            Frame::Close { len } => {
                c.stream.consume(len);
                c.close_with(b"</stream:stream>").await;
                return Err(SessionError::Done(Side::Client, Cause::Closed));
            }
            Frame::Header { .. } => {
                return Err(SessionError::stream(
                    StreamError::NotWellFormed,
                    "a second stream header",
                ));
            }
        }
    }
}

async fn elements(c: &mut Client, ctx: &Arc<Context>) -> Result<Step, SessionError> {
    loop {
        let len = next_element_len(c).await?;
        let snap = c.snapshot(ctx)?;
        // The usual `<auth/>`, read without a tree: it starts nearly every login.
        if let Some(auth) = SaslAuth::read(&c.stream.buffered()[..len], &c.header) {
            if let Some(l) = sasl(c, ctx, &snap, auth, len).await? {
                return Ok(Step::Login(l));
            }
            continue;
        }
        let e = Element::parse(&c.stream.buffered()[..len], &Scope::from_header(&c.header))?;
        match (e.ns.as_str(), e.name.as_str()) {
            (NS_TLS, "starttls") => {
                c.stream.consume(len);
                if c.tls() || c.listener.starttls == StartTls::Off {
                    c.close_with(
                        b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>",
                    )
                    .await;
                    return Err(SessionError::Done(Side::Client, Cause::Protocol));
                }
                c.stream
                    .starttls_server(ctx.server_tls.starttls.clone())
                    .await?;
                debug!("tls up (STARTTLS)");
                return Ok(Step::Restart);
            }
            (NS_SASL, "auth") => {
                let auth = SaslAuth {
                    mechanism: e.attr("mechanism").and_then(Mechanism::from_name),
                    initial: decode_sasl(&e.text()),
                };
                if let Some(l) = sasl(c, ctx, &snap, auth, len).await? {
                    return Ok(Step::Login(l));
                }
            }
            (NS_SASL2, "authenticate") => {
                if let Some(l) = sasl2(c, ctx, &snap, &e, len).await? {
                    return Ok(Step::Login(l));
                }
            }
            (NS_SASL, "abort") => {
                c.stream.consume(len);
                c.stream
                    .send(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><aborted/></failure>")
                    .await?;
            }
            (NS_CLIENT, "iq") => {
                if let Some(l) = iq(c, ctx, &snap, &e, len).await? {
                    return Ok(Step::Login(l));
                }
            }
            (NS_CLIENT, "message" | "presence") => {
                return Err(SessionError::stream(
                    StreamError::NotAuthorized,
                    "authenticate first",
                ));
            }
            _ => {
                return Err(SessionError::stream(
                    StreamError::UnsupportedStanzaType,
                    format!("<{}/> before authentication", e.name),
                ));
            }
        }
    }
}

pub(super) async fn sasl_failure(
    c: &mut Client,
    condition: &str,
    text: &str,
) -> Result<(), SessionError> {
    let mut s = format!("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{condition}/>");
    if !text.is_empty() {
        s.push_str("<text xml:lang='en'>");
        s.push_str(&esc_text(text));
        s.push_str("</text>");
    }
    s.push_str("</failure>");
    c.stream.send(s.as_bytes()).await?;
    Ok(())
}

/// Too many logins from this address?
pub(super) fn login_allowed(
    c: &Client,
    ctx: &Context,
    snap: &Snapshot,
) -> Result<(), SessionError> {
    let rate = snap.config.limits.logins_per_source_per_second;
    if ctx.conn_limits.allow_login(c.peer.ip(), rate) {
        Ok(())
    } else {
        ctx.metrics.limit(crate::metrics::Limit::LoginsPerSource);
        Err(SessionError::stream(
            StreamError::PolicyViolation,
            "too many logins from your address; try again later",
        ))
    }
}

/// What a client's SASL `<auth/>` says.
struct SaslAuth {
    /// `None` for a mechanism dealer does not know, or none named.
    mechanism: Option<Mechanism>,
    /// The initial response, decoded (`None`: there is none).
    initial: Result<Option<Zeroizing<Vec<u8>>>, PeekError>,
}

impl SaslAuth {
    /// `bytes` read as an `<auth/>` whose content is plain text, from its start tag and
    /// its text in place; `None` for any other element, or for an `<auth/>` that needs
    /// reading as a tree (references, children, prefixed attributes, anything
    /// malformed: what the tree says of it then counts).
    fn read(bytes: &[u8], header: &crate::xml::StreamHeader) -> Option<SaslAuth> {
        use crate::xml::start_tag::{Head, plain_attribute, plain_text};
        let h = Head::parse(bytes, &Scope::from_header(header)).ok()?;
        if h.name != "auth" || h.ns != NS_SASL {
            return None;
        }
        let text = plain_text(bytes, &h)?;
        let name = plain_attribute(bytes, "mechanism").ok()??;
        Some(SaslAuth {
            mechanism: name.as_deref().and_then(Mechanism::from_name),
            initial: decode_sasl(text),
        })
    }
}

/// `<auth/>`: peek the username, asking for it with an empty challenge when the client
/// sent no initial response. `Ok(None)` means the client was answered and may retry.
async fn sasl(
    c: &mut Client,
    ctx: &Arc<Context>,
    snap: &Snapshot,
    auth: SaslAuth,
    len: usize,
) -> Result<Option<Login>, SessionError> {
    if starttls_required(c) {
        c.stream.consume_zeroed(len);
        sasl_failure(c, "encryption-required", "STARTTLS first").await?;
        c.failed_login(ctx)?;
        return Ok(None);
    }
    let Some(mech) = auth.mechanism.filter(|m| snap.mechanisms().contains(m)) else {
        c.stream.consume_zeroed(len);
        sasl_failure(c, "invalid-mechanism", "").await?;
        c.failed_login(ctx)?;
        return Ok(None);
    };
    login_allowed(c, ctx, snap)?;
    ctx.metrics.peek(Peek::of(mech));
    let initial = auth.initial;
    // The element carried the credentials: keep a copy for the backend, wipe the buffer.
    let first = Zeroizing::new(c.stream.buffered()[..len].to_vec());
    c.stream.consume_zeroed(len);
    let (data, first) = match initial {
        Err(_) => {
            sasl_failure(c, "incorrect-encoding", "").await?;
            c.failed_login(ctx)?;
            return Ok(None);
        }
        Ok(Some(d)) => (d, first),
        Ok(None) if mech == Mechanism::Anonymous => (Zeroizing::new(Vec::new()), first),
        Ok(None) => {
            // No initial response: ask for it, then rebuild the <auth/> around it.
            c.stream
                .send(b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
                .await?;
            let (r, rlen) = next_element(c).await?;
            let text = r.text();
            c.stream.consume_zeroed(rlen);
            if r.is("abort", NS_SASL) {
                sasl_failure(c, "aborted", "").await?;
                c.failed_login(ctx)?;
                return Ok(None);
            }
            if !r.is("response", NS_SASL) {
                sasl_failure(c, "malformed-request", "expected <response/>").await?;
                c.failed_login(ctx)?;
                return Ok(None);
            }
            let Ok(Some(d)) = decode_sasl(&text) else {
                sasl_failure(c, "incorrect-encoding", "").await?;
                c.failed_login(ctx)?;
                return Ok(None);
            };
            // Written straight into a zeroed-on-drop buffer of the final size, so no
            // other copy of the response is left behind. Base64 needs no escaping.
            const FIXED: &[u8] =
                b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism=''></auth>";
            let b64 = text.trim().as_bytes();
            let mut first = Zeroizing::new(Vec::with_capacity(
                FIXED.len() + mech.name().len() + b64.len(),
            ));
            first.extend_from_slice(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='");
            first.extend_from_slice(mech.name().as_bytes());
            first.extend_from_slice(b"'>");
            first.extend_from_slice(b64);
            first.extend_from_slice(b"</auth>");
            (d, first)
        }
    };
    let username = match mech {
        Mechanism::Anonymous => None,
        m => match sasl_username(m, &data) {
            Ok(u) => Some(u),
            Err(PeekError::ChannelBinding) => {
                sasl_failure(c, "malformed-request", "channel binding is not offered").await?;
                c.failed_login(ctx)?;
                return Ok(None);
            }
            Err(err) => {
                sasl_failure(c, "malformed-request", &err.to_string()).await?;
                c.failed_login(ctx)?;
                return Ok(None);
            }
        },
    };
    Ok(Some(Login {
        username,
        kind: LoginKind::Sasl(mech),
        first,
    }))
}

/// A SASL2 `<failure/>` (XEP-0388) with a SASL condition.
pub(super) async fn sasl2_failure(
    c: &mut Client,
    condition: &str,
    text: &str,
) -> Result<(), SessionError> {
    let mut s = format!(
        "<failure xmlns='urn:xmpp:sasl:2'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
    );
    if !text.is_empty() {
        s.push_str("<text>");
        s.push_str(&esc_text(text));
        s.push_str("</text>");
    }
    s.push_str("</failure>");
    c.stream.send(s.as_bytes()).await?;
    Ok(())
}

/// SASL2 `<authenticate/>` (XEP-0388) on dealer's own stream: the user comes from its
/// initial response, which every mechanism dealer offers carries; the element, with
/// its `<user-agent/>`, `<bind/>` and FAST children, is replayed to the owner
/// unchanged. `Ok(None)` means the client was answered and may retry.
async fn sasl2(
    c: &mut Client,
    ctx: &Arc<Context>,
    snap: &Snapshot,
    e: &Element,
    len: usize,
) -> Result<Option<Login>, SessionError> {
    if starttls_required(c) {
        c.stream.consume_zeroed(len);
        sasl2_failure(c, "encryption-required", "STARTTLS first").await?;
        c.failed_login(ctx)?;
        return Ok(None);
    }
    let mech = e.attr("mechanism").unwrap_or_default().to_owned();
    if !snap.sasl2().is_some_and(|o| o.allows(&mech)) {
        c.stream.consume_zeroed(len);
        sasl2_failure(c, "invalid-mechanism", "").await?;
        c.failed_login(ctx)?;
        return Ok(None);
    }
    login_allowed(c, ctx, snap)?;
    if let Some(m) = Mechanism::from_name(&mech) {
        ctx.metrics.peek(Peek::of(m));
    }
    let ir = e.child("initial-response", NS_SASL2).map(|r| r.text());
    let first = Zeroizing::new(c.stream.buffered()[..len].to_vec());
    c.stream.consume_zeroed(len);
    let data = match ir.as_deref().map(|t| decode_sasl(t)) {
        Some(Ok(Some(d))) => d,
        Some(Err(_)) => {
            sasl2_failure(c, "incorrect-encoding", "").await?;
            c.failed_login(ctx)?;
            return Ok(None);
        }
        None | Some(Ok(None)) => {
            sasl2_failure(
                c,
                "malformed-request",
                "an initial response is needed here: dealer routes on the user it names",
            )
            .await?;
            c.failed_login(ctx)?;
            return Ok(None);
        }
    };
    let username = match username_by_name(&mech, &data) {
        Ok(Some(u)) => u,
        Ok(None) | Err(_) => {
            sasl2_failure(c, "malformed-request", "no user in the initial response").await?;
            c.failed_login(ctx)?;
            return Ok(None);
        }
    };
    Ok(Some(Login {
        username: Some(username),
        kind: LoginKind::Sasl2(mech),
        first,
    }))
}

/// `<iq/>` before authentication: XEP-0078 and XEP-0077, when enabled.
async fn iq(
    c: &mut Client,
    ctx: &Arc<Context>,
    snap: &Snapshot,
    e: &Element,
    len: usize,
) -> Result<Option<Login>, SessionError> {
    let id = e.attr("id").unwrap_or_default().to_owned();
    let typ = e.attr("type").unwrap_or_default();
    if payload_not_single(e) {
        // A backend dispatches an unauthenticated iq on its first child (Prosody does):
        // routing on a later one would let a registration pass for a login.
        c.stream.consume_zeroed(len);
        bad_request(c, &id).await?;
        return Ok(None);
    }
    let auth = e
        .child("query", NS_IQ_AUTH)
        .filter(|_| snap.config.c2s.legacy_auth);
    let register = e
        .child("query", NS_IQ_REGISTER)
        .filter(|_| snap.config.c2s.registration);
    if (auth.is_some() || register.is_some()) && starttls_required(c) {
        c.stream.consume_zeroed(len);
        return Err(SessionError::stream(
            StreamError::PolicyViolation,
            "STARTTLS first",
        ));
    }
    match (typ, auth, register) {
        ("get", Some(q), _) => {
            c.stream.consume(len);
            // Without <digest/>: a digest would bind dealer's stream id, which the
            // backend cannot check.
            let user = q.child("username", NS_IQ_AUTH).map(|u| u.text());
            let reply = format!(
                "<iq type='result' id='{}'><query xmlns='jabber:iq:auth'><username>{}</username><password/><resource/></query></iq>",
                esc_attr(&id),
                esc_text(user.as_deref().map(|s| s.as_str()).unwrap_or(""))
            );
            c.stream.send(reply.as_bytes()).await?;
            Ok(None)
        }
        ("set", Some(q), _) => {
            if !complete_iq_auth(q) {
                // XEP-0078 §3: a `set` that lacks a field (or asks for digest, which
                // dealer never offers) is answered here and never reaches a backend —
                // which would answer it with a `result` carrying the fields form.
                c.stream.consume_zeroed(len);
                iq_error(c, &id, "modify", "not-acceptable", "406", NS_IQ_AUTH).await?;
                c.failed_login(ctx)?;
                return Ok(None);
            }
            let kind = LoginKind::IqAuth { id: id.clone() };
            iq_login(c, ctx, snap, q, len, NS_IQ_AUTH, kind, &id).await
        }
        ("get", _, Some(_)) => {
            c.stream.consume(len);
            let reply = format!(
                "<iq type='result' id='{}'><query xmlns='jabber:iq:register'><instructions>Choose a username and password.</instructions><username/><password/></query></iq>",
                esc_attr(&id)
            );
            c.stream.send(reply.as_bytes()).await?;
            Ok(None)
        }
        ("set", _, Some(q)) => {
            let kind = LoginKind::Register { id: id.clone() };
            iq_login(c, ctx, snap, q, len, NS_IQ_REGISTER, kind, &id).await
        }
        _ => {
            c.stream.consume(len);
            Err(SessionError::stream(
                StreamError::NotAuthorized,
                "authenticate first",
            ))
        }
    }
}

/// An XEP-0078 or XEP-0077 `set`: the login is named by its `<username/>`; the iq,
/// which carries the password, is kept (zeroed on drop) for the backend and wiped
/// from the read buffer.
#[allow(clippy::too_many_arguments)]
async fn iq_login(
    c: &mut Client,
    ctx: &Arc<Context>,
    snap: &Snapshot,
    query: &Element,
    len: usize,
    ns: &str,
    kind: LoginKind,
    id: &str,
) -> Result<Option<Login>, SessionError> {
    login_allowed(c, ctx, snap)?;
    ctx.metrics.peek(if ns == NS_IQ_AUTH {
        Peek::IqAuth
    } else {
        Peek::Register
    });
    let user = query
        .child("username", ns)
        .map(|u| u.text().trim().to_owned());
    let first = Zeroizing::new(c.stream.buffered()[..len].to_vec());
    c.stream.consume_zeroed(len);
    match user.filter(|u| !u.is_empty()) {
        Some(u) => Ok(Some(Login {
            username: Some(u),
            kind,
            first,
        })),
        None => {
            iq_error(c, id, "modify", "not-acceptable", "406", ns).await?;
            c.failed_login(ctx)?;
            Ok(None)
        }
    }
}

/// An XEP-0078 `set` dealer forwards: a username, a password and a resource, and
/// nothing dealer did not offer (no `<digest/>`, which binds the stream id).
pub(super) fn complete_iq_auth(q: &Element) -> bool {
    let filled = |name: &str| {
        q.child(name, NS_IQ_AUTH)
            .is_some_and(|e| !e.text().trim().is_empty())
    };
    filled("username")
        && q.child("password", NS_IQ_AUTH).is_some()
        && filled("resource")
        && q.child("digest", NS_IQ_AUTH).is_none()
}

/// RFC 6120 §8.2.3: an iq `get` or `set` carries exactly one child element.
pub(super) fn payload_not_single(iq: &Element) -> bool {
    matches!(iq.attr("type"), Some("get" | "set")) && iq.elements().take(2).count() != 1
}

/// The answer to an iq `get`/`set` that does not carry exactly one child element.
pub(super) async fn bad_request(c: &mut Client, id: &str) -> Result<(), SessionError> {
    let s = format!(
        "<iq type='error' id='{}'><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        esc_attr(id)
    );
    c.stream.send(s.as_bytes()).await?;
    Ok(())
}

pub(super) async fn iq_error(
    c: &mut Client,
    id: &str,
    typ: &str,
    condition: &str,
    code: &str,
    ns: &str,
) -> Result<(), SessionError> {
    let s = format!(
        "<iq type='error' id='{}'><query xmlns='{ns}'/><error code='{code}' type='{typ}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        esc_attr(id)
    );
    c.stream.send(s.as_bytes()).await?;
    Ok(())
}

/// Refuse a login dealer cannot route (an invalid username) in the form its kind
/// expects, leaving the stream open for another try.
pub async fn refuse(
    c: &mut Client,
    login: &Login,
    condition: &str,
    text: &str,
) -> Result<(), SessionError> {
    match &login.kind {
        LoginKind::Sasl(_) => sasl_failure(c, condition, text).await,
        LoginKind::Sasl2(_) => sasl2_failure(c, condition, text).await,
        LoginKind::IqAuth { id } => iq_error(c, id, "auth", condition, "401", NS_IQ_AUTH).await,
        LoginKind::Register { id } => {
            iq_error(c, id, "modify", "not-acceptable", "406", NS_IQ_REGISTER).await
        }
    }
}
