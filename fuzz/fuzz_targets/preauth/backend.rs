//! The fake backend of the `preauth` target and its oracle. Two of them (node1 owns
//! users a–m, node2 n–z) run on dealer's own runtime. Each answers a stream header with
//! a header and features (SASL PLAIN and SCRAM-SHA-1, SASL2 with Bind2 and FAST,
//! iq-auth, register), then answers every element it receives with the next step of the
//! iteration's backend script (shared by all connections of one iteration).
//!
//! The oracle reads what reaches the backend as a server would — its own XML reading
//! (quick-xml, not dealer's), an iq dispatched on its FIRST child element, SASL data
//! read both as the whole text and as the first text node — and records a violation
//! when dealer passes on something it must not:
//!
//! - before the backend sent a success the protocol defines as one (SASL `<success/>`
//!   while an `<auth/>` is pending, SASL2 `<success/>` while an `<authenticate/>` is
//!   pending and naming no one or one of this backend's users, an empty iq `result`
//!   to a pending complete iq:auth `set` with the same id), on a stream dealer
//!   forwards (peek path): anything after the first authentication element but that
//!   exchange's `<response/>`, `<abort/>` (SASL2 also `<next/>`), and no restart;
//! - on a stream routed on its header (`from`), before such a success: no restart, no
//!   `<starttls/>`; the header's user is this backend's;
//! - everywhere: an iq:auth `set` lacking username, password or resource or carrying
//!   `<digest/>`; an identity (SASL authcid or SCRAM user, in the first message or in
//!   the first response after an empty one; an iq:auth or register username) that
//!   this backend does not own, or that cannot be read at all; an ANONYMOUS login.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use dealer::xml::{Frame, FrameLimits, Framer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const DOMAIN: &str = "example.com";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_SASL2: &str = "urn:xmpp:sasl:2";
const NS_CLIENT: &str = "jabber:client";
const NS_IQ_AUTH: &str = "jabber:iq:auth";
const NS_IQ_REGISTER: &str = "jabber:iq:register";
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_STREAMS: &str = "http://etherx.jabber.org/streams";

/// The backends' names, by index; `OWN_USER[i]` is a plain user node `i` owns.
pub const NAMES: [&str; 2] = ["node1", "node2"];
const OWN_USER: [&str; 2] = ["alice", "nora"];

/// One iteration's state, shared by the fuzz thread and the backend tasks.
#[derive(Default)]
struct Iteration {
    id: u64,
    script: Vec<u8>,
    cursor: usize,
    /// Backend connections accepted during this iteration and still open.
    open: usize,
    violations: Vec<String>,
    log: Vec<String>,
}

pub struct Shared {
    now: Mutex<Iteration>,
    /// The current iteration: a connection of an earlier one closes when it changes.
    kill: tokio::sync::watch::Sender<u64>,
    /// Who owns a name: dealer's live routing (the definition of owner).
    pub snapshot: OnceLock<dealer::snapshot::Live>,
    conns: AtomicU64,
}

/// What one iteration saw at the backends.
pub struct Report {
    pub violations: Vec<String>,
    pub log: Vec<String>,
    pub still_open: usize,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            now: Mutex::new(Iteration::default()),
            kill: tokio::sync::watch::channel(0).0,
            snapshot: OnceLock::new(),
            conns: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Iteration> {
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start an iteration with `script`; connections of earlier ones are closed.
    pub fn begin(&self, script: &[u8]) -> u64 {
        let mut it = self.lock();
        let id = it.id + 1;
        *it = Iteration {
            id,
            script: script.to_vec(),
            ..Iteration::default()
        };
        drop(it);
        self.kill.send_replace(id);
        id
    }

    /// Backend connections of the current iteration still open.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    pub fn report(&self) -> Report {
        let it = self.lock();
        Report {
            violations: it.violations.clone(),
            log: it.log.clone(),
            still_open: it.open,
        }
    }

    fn note(&self, iter: u64, line: String) {
        let mut it = self.lock();
        if it.id == iter && it.log.len() < 200 {
            it.log.push(line);
        }
    }

    fn violation(&self, iter: u64, line: String) {
        let mut it = self.lock();
        if it.id == iter {
            it.log.push(format!("VIOLATION: {line}"));
            it.violations.push(line);
        }
    }

    /// The next script step of iteration `iter` (silence once it is used up).
    fn step(&self, iter: u64) -> u8 {
        let mut it = self.lock();
        if it.id != iter {
            return b'.';
        }
        let s = it.script.get(it.cursor).copied().unwrap_or(b'.');
        it.cursor += 1;
        s
    }

    fn owner(&self, name: &str) -> Option<usize> {
        let snap = self.snapshot.get()?.load();
        let d = snap.route(name).ok()?;
        let n = &snap.config.backends[d.backend].name;
        NAMES.iter().position(|x| x == n)
    }
}

/// Accept forever on `l` as backend `index`.
pub async fn serve(l: TcpListener, index: usize, shared: Arc<Shared>) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let shared = shared.clone();
        let iter = {
            let mut it = shared.lock();
            it.open += 1;
            it.id
        };
        let n = shared.conns.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let tag = format!("{}#{n}", NAMES[index]);
            let mut kill = shared.kill.subscribe();
            let mut conn = Conn::new(index, iter, tag, shared.clone(), s);
            tokio::select! {
                _ = conn.run() => {}
                _ = async {
                    while *kill.borrow_and_update() == iter {
                        if kill.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                } => {}
            }
            let mut it = shared.lock();
            if it.id == iter {
                it.open -= 1;
            }
        });
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Sasl,
    Sasl2,
    IqAuth(String),
    Register(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sasl,
    Sasl2,
    IqAuth,
    Register,
}

/// One backend connection: the stream as the backend reads it, and the oracle.
struct Conn {
    index: usize,
    iter: u64,
    tag: String,
    shared: Arc<Shared>,
    sock: TcpStream,
    buf: Vec<u8>,
    framer: Framer,
    /// Stream headers seen (the first, then restarts).
    headers: u32,
    /// Routed on its header: the header's `from`.
    early: bool,
    authenticated: bool,
    /// Peek path: the kind of the first authentication element.
    started: Option<Kind>,
    pending: Option<Pending>,
    /// An authentication element without initial response: its mechanism, whose first
    /// response names the user.
    await_identity: Option<String>,
    closed: bool,
}

impl Conn {
    fn new(index: usize, iter: u64, tag: String, shared: Arc<Shared>, sock: TcpStream) -> Conn {
        Conn {
            index,
            iter,
            tag,
            shared,
            sock,
            buf: Vec::new(),
            framer: Framer::new(FrameLimits::default()),
            headers: 0,
            early: false,
            authenticated: false,
            started: None,
            pending: None,
            await_identity: None,
            closed: false,
        }
    }

    fn note(&self, what: &str, bytes: &[u8]) {
        let s = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
        self.shared
            .note(self.iter, format!("{} {what} {s}", self.tag));
    }

    fn violation(&self, why: String) {
        self.shared
            .violation(self.iter, format!("{}: {why}", self.tag));
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.note(">>", bytes);
        if self.sock.write_all(bytes).await.is_err() {
            self.closed = true;
        }
    }

    async fn run(&mut self) {
        let mut chunk = [0u8; 4096];
        while !self.closed {
            let n = match self.sock.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.buf.extend_from_slice(&chunk[..n]);
            self.frames().await;
        }
    }

    /// Whether the unread input starts a new stream (what dealer's own reader takes
    /// for a restart, plus anything that begins with `<stream:stream`).
    fn restart_ahead(&self) -> bool {
        let rest = &self.buf[self
            .buf
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count()..];
        if self.headers == 0 {
            return false;
        }
        if rest.starts_with(b"<?xml") {
            return true;
        }
        // `<stream` or `<prefix:stream`, then the end of the name.
        let Some(tag) = rest.strip_prefix(b"<") else {
            return false;
        };
        let end = tag
            .iter()
            .position(|b| b.is_ascii_whitespace() || matches!(b, b'>' | b'/'));
        match end {
            Some(n) => tag[..n] == *b"stream" || tag[..n].ends_with(b":stream"),
            None => false,
        }
    }

    async fn frames(&mut self) {
        while !self.closed {
            if self.restart_ahead() {
                self.framer = Framer::new(FrameLimits::default());
            }
            let frame = match self.framer.parse(&self.buf) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    if !self.authenticated {
                        self.violation(format!(
                            "unframeable bytes before authentication ({e}): {}",
                            String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
                        ));
                    }
                    self.note("<< (unframeable)", &self.buf.clone());
                    self.closed = true;
                    return;
                }
            };
            let len = frame.len();
            let bytes: Vec<u8> = self.buf.drain(..len).collect();
            match frame {
                Frame::Header { header, .. } => self.header(&bytes, header).await,
                Frame::Element { .. } => self.element(&bytes).await,
                Frame::Whitespace { .. } => {}
                Frame::Close { .. } => {
                    self.note("<<", &bytes);
                    self.send(b"</stream:stream>").await;
                    self.closed = true;
                }
            }
        }
    }

    async fn header(&mut self, bytes: &[u8], h: dealer::xml::StreamHeader) {
        self.note("<<", bytes);
        self.headers += 1;
        if self.headers == 1 {
            if let Some(from) = h.from.as_deref() {
                self.early = true;
                // As written: dealer routes on the `from` it passes on (it once routed
                // on the trimmed value and passed the untrimmed one, see
                // artifacts-found/early-from-whitespace).
                match from.split_once('@') {
                    Some((local, _)) if self.owns(local) => {}
                    _ => self.violation(format!(
                        "stream routed on from='{from}', which this backend does not own"
                    )),
                }
            }
        } else if !self.authenticated {
            self.violation("a new stream header before the backend reported success".into());
        }
        let id = format!("b{}", self.shared.conns.load(Ordering::Relaxed));
        let mut out = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}' from='{DOMAIN}' id='{id}' version='1.0' xml:lang='en'>"
        );
        if self.authenticated {
            out.push_str("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>");
        } else {
            out.push_str(FEATURES);
        }
        self.send(out.as_bytes()).await;
    }

    fn owns(&self, name: &str) -> bool {
        self.shared.owner(name) == Some(self.index)
    }

    async fn element(&mut self, bytes: &[u8]) {
        self.note("<<", bytes);
        let el = match El::parse(bytes) {
            Ok(el) => el,
            Err(why) => {
                // A server ends the stream on XML it cannot read: what follows
                // cannot reach it.
                self.note("(unreadable element, closing:", why.as_bytes());
                self.send(b"<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>").await;
                self.closed = true;
                return;
            }
        };
        if !self.authenticated {
            self.check(&el);
        }
        if self.authenticated {
            // Handed over on a success: the session is the backend's own now.
            return;
        }
        let step = self.shared.step(self.iter);
        self.respond(step, &el).await;
    }

    /// The oracle, for an element that reached the backend before a success.
    fn check(&mut self, el: &El) {
        let class = classify(el);
        // Identities and iq:auth completeness, on every stream.
        match &class {
            Class::Auth {
                mech,
                readings,
                kind,
            } => {
                if readings.iter().all(|r| r.trim().is_empty()) {
                    if mech.eq_ignore_ascii_case("ANONYMOUS") {
                        self.violation("an ANONYMOUS login (there is no anonymous backend)".into());
                    } else {
                        self.await_identity = Some(mech.clone());
                    }
                } else {
                    self.await_identity = None;
                    self.identity(mech, readings, "initial response");
                }
                self.pending = Some(if *kind == Kind::Sasl {
                    Pending::Sasl
                } else {
                    Pending::Sasl2
                });
            }
            Class::Exchange { name, readings, .. } if name == "response" => {
                if let Some(mech) = self.await_identity.take() {
                    self.identity(&mech, readings, "first response");
                }
            }
            Class::IqAuth {
                id,
                complete,
                username,
            } => {
                if !complete {
                    self.violation("an incomplete jabber:iq:auth set (username, password, resource, no digest) reached the backend".into());
                }
                if !self.owns(username) {
                    self.violation(format!("iq:auth for '{username}', not this backend's user"));
                }
                self.pending = Some(Pending::IqAuth(id.clone()));
            }
            Class::Register { id, username } => {
                if username.is_empty() || !self.owns(username) {
                    self.violation(format!(
                        "registration of '{username}', not this backend's user"
                    ));
                }
                self.pending = Some(Pending::Register(id.clone()));
            }
            _ => {}
        }
        if self.early {
            if matches!(class, Class::StartTls) {
                self.violation(
                    "<starttls/> reached the backend of a stream routed on its header".into(),
                );
            }
            return;
        }
        // Peek path: the first element starts authentication, then only that
        // exchange's own steps.
        match (self.started, &class) {
            (None, c) => match c.kind() {
                Some(k) => self.started = Some(k),
                None => self.violation(format!(
                    "<{}/> ({}) as the first element, not an authentication element",
                    el.name, el.ns
                )),
            },
            (Some(k), Class::Exchange { kind, .. }) if *kind == k => {}
            (Some(k), _) => self.violation(format!(
                "<{} xmlns='{}'/> reached the backend during {k:?} authentication, before any success",
                el.name, el.ns
            )),
        }
    }

    /// Check the identities a SASL message names, read every way a server might.
    fn identity(&self, mech: &str, readings: &[String], which: &str) {
        let mut users = Vec::new();
        for r in readings {
            let Some(data) = lenient_b64(r) else { continue };
            match dealer::c2s::peek::username_by_name(mech, &data) {
                Ok(Some(u)) => users.push(u),
                Ok(None) => self.violation(format!("{mech} {which} names nobody (ANONYMOUS)")),
                Err(_) => {}
            }
        }
        if users.is_empty() {
            self.violation(format!(
                "{mech} {which} that names no readable user reached the backend"
            ));
        }
        for u in users {
            if !self.owns(&u) {
                self.violation(format!("{mech} {which} for '{u}', not this backend's user"));
            }
        }
    }

    async fn respond(&mut self, step: u8, el: &El) {
        let id = if el.is("iq", NS_CLIENT) {
            el.attr("id").unwrap_or("").to_owned()
        } else {
            "x".to_owned()
        };
        let id_esc = esc(&id);
        let step = decode_step(step);
        let sasl_success = |c: &mut Conn| {
            if c.pending == Some(Pending::Sasl) {
                c.authenticated = true;
            }
            c.pending = None;
        };
        let sasl2_success = |c: &mut Conn, valid: bool| {
            if c.pending == Some(Pending::Sasl2) && valid {
                c.authenticated = true;
            }
            if c.pending == Some(Pending::Sasl2) {
                c.pending = None;
            }
        };
        let iq_verdict = |c: &mut Conn, empty_result: bool| match &c.pending {
            Some(Pending::IqAuth(p)) if *p == id => {
                c.authenticated = empty_result;
                c.pending = None;
            }
            Some(Pending::Register(p)) if *p == id => c.pending = None,
            _ => {}
        };
        let out: Vec<u8> = match step {
            b's' => {
                sasl_success(self);
                format!("<success xmlns='{NS_SASL}'/>").into()
            }
            b't' => {
                sasl_success(self);
                format!("<success xmlns='{NS_SASL}'>dj1ybjNMb1l4c2xPQ2RCOWhUVVZGMjFVPT0=</success>").into()
            }
            b'o' => {
                sasl_success(self);
                format!("<sasl:success xmlns:sasl='{NS_SASL}'/>").into()
            }
            b'p' => {
                let mut v = format!("<challenge xmlns='{NS_SASL}'>cj1meWtvK2QybGJiRmdPTlJ2OXFreGRhd0wzcmZjTkhZSlkxWlZ2V1ZzN2oscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5Ng==</challenge>").into_bytes();
                sasl_success(self);
                v.extend_from_slice(format!("<success xmlns='{NS_SASL}'/>").as_bytes());
                v
            }
            b'u' => {
                // A success in two writes.
                self.send(b"<succ").await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                sasl_success(self);
                format!("ess xmlns='{NS_SASL}'/>").into()
            }
            b'f' => {
                if self.pending == Some(Pending::Sasl) {
                    self.pending = None;
                }
                format!("<failure xmlns='{NS_SASL}'><not-authorized/></failure>").into()
            }
            b'c' => format!("<challenge xmlns='{NS_SASL}'>cj1meWtvK2QybGJiRmdPTlJ2OXFreGRhd0wzcmZjTkhZSlkxWlZ2V1ZzN2oscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5Ng==</challenge>").into(),
            b'n' => format!("<success xmlns='urn:xmpp:sasl:1'/>").into(),
            b'S' => {
                sasl2_success(self, true);
                format!("<success xmlns='{NS_SASL2}'><additional-data>dj1ybjNMb1l4c2xPQ2RCOWhUVVZGMjFVPT0=</additional-data></success>").into()
            }
            b'A' => {
                sasl2_success(self, true);
                let u = OWN_USER[self.index];
                format!("<success xmlns='{NS_SASL2}'><authorization-identifier>{u}@{DOMAIN}/phone</authorization-identifier></success>").into()
            }
            b'X' => {
                sasl2_success(self, false);
                format!("<success xmlns='{NS_SASL2}'><authorization-identifier>mallory@other.example/x</authorization-identifier></success>").into()
            }
            b'Y' => {
                sasl2_success(self, false);
                let u = OWN_USER[1 - self.index];
                format!("<success xmlns='{NS_SASL2}'><authorization-identifier>{u}@{DOMAIN}</authorization-identifier></success>").into()
            }
            b'P' => {
                sasl2_success(self, true);
                format!("<s2:success xmlns:s2='{NS_SASL2}'/>").into()
            }
            b'F' => {
                if self.pending == Some(Pending::Sasl2) {
                    self.pending = None;
                }
                format!("<failure xmlns='{NS_SASL2}'><not-authorized xmlns='{NS_SASL}'/></failure>").into()
            }
            b'C' => format!("<continue xmlns='{NS_SASL2}'><additional-data>SSdtIGJvcmVkIG5vdy4=</additional-data><tasks><task>HOTP-EXAMPLE</task></tasks></continue>").into(),
            b'h' => format!("<challenge xmlns='{NS_SASL2}'>cj1meWtvK2QybGJiRmdPTlJ2OXFreGRhd0wz</challenge>").into(),
            b'r' => {
                iq_verdict(self, true);
                format!("<iq type='result' id='{id_esc}'/>").into()
            }
            b'R' => {
                iq_verdict(self, true);
                format!("<iq id=\"{id_esc}\" type=\"result\">  </iq>").into()
            }
            b'q' => {
                iq_verdict(self, false);
                format!("<iq type='result' id='{id_esc}'><query xmlns='{NS_IQ_AUTH}'><username/><password/><resource/></query></iq>").into()
            }
            b'z' => {
                iq_verdict(self, false);
                format!("<iq type='result' id='{id_esc}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@{DOMAIN}/r</jid></bind></iq>").into()
            }
            b'w' => format!("<iq type='result' id='other-{id_esc}'/>").into(),
            b'e' => {
                iq_verdict(self, false);
                format!("<iq type='error' id='{id_esc}'><error type='auth'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>").into()
            }
            b'm' => format!("<message from='bob@{DOMAIN}' to='alice@{DOMAIN}'><body>hi</body></message>").into(),
            b'E' => {
                self.send(b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>").await;
                self.closed = true;
                return;
            }
            b'g' => b"<<garbage&;>".to_vec(),
            b'k' => {
                self.note(">> (close)", b"");
                let _ = self.sock.shutdown().await;
                self.closed = true;
                return;
            }
            _ => return, // b'.': silence
        };
        self.send(&out).await;
    }
}

/// The script alphabet: a byte that is not a step picks one by its value.
const STEPS: &[u8] = b"stopufcnSAXYPFChrRqzwemEgk.";

fn decode_step(b: u8) -> u8 {
    if STEPS.contains(&b) {
        b
    } else {
        STEPS[b as usize % STEPS.len()]
    }
}

const FEATURES: &str = "<stream:features>\
<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms>\
<authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism>\
<inline><bind xmlns='urn:xmpp:bind:0'/><fast xmlns='urn:xmpp:fast:0'><mechanism>HT-SHA-256-NONE</mechanism></fast></inline></authentication>\
<auth xmlns='http://jabber.org/features/iq-auth'/>\
<register xmlns='http://jabber.org/features/iq-register'/>\
</stream:features>";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Base64 as a lenient server reads it: whitespace anywhere, padding optional; `=`
/// alone is the empty message. `None` when there is nothing or it does not decode.
fn lenient_b64(text: &str) -> Option<Vec<u8>> {
    let t: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if t.is_empty() {
        return None;
    }
    if t == "=" {
        return Some(Vec::new());
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    engine.decode(t).ok()
}

/// What an element is to a server that has not authenticated the stream.
enum Class {
    /// SASL `<auth/>` or SASL2 `<authenticate/>`; `readings` of its (initial) response.
    Auth {
        kind: Kind,
        mech: String,
        readings: Vec<String>,
    },
    /// A step of a running exchange.
    Exchange {
        kind: Kind,
        name: String,
        readings: Vec<String>,
    },
    IqAuth {
        id: String,
        complete: bool,
        username: String,
    },
    Register {
        id: String,
        username: String,
    },
    StartTls,
    Other,
}

impl Class {
    fn kind(&self) -> Option<Kind> {
        match self {
            Class::Auth { kind, .. } => Some(*kind),
            Class::IqAuth { .. } => Some(Kind::IqAuth),
            Class::Register { .. } => Some(Kind::Register),
            _ => None,
        }
    }
}

fn classify(el: &El) -> Class {
    match (el.ns.as_str(), el.name.as_str()) {
        (NS_SASL, "auth") => Class::Auth {
            kind: Kind::Sasl,
            mech: el.attr("mechanism").unwrap_or("").to_owned(),
            readings: el.readings(),
        },
        (NS_SASL2, "authenticate") => Class::Auth {
            kind: Kind::Sasl2,
            mech: el.attr("mechanism").unwrap_or("").to_owned(),
            readings: el
                .child("initial-response", NS_SASL2)
                .map(|r| r.readings())
                .unwrap_or_default(),
        },
        (NS_SASL, "response" | "abort") => Class::Exchange {
            kind: Kind::Sasl,
            name: el.name.clone(),
            readings: el.readings(),
        },
        (NS_SASL2, "response" | "abort" | "next") => Class::Exchange {
            kind: Kind::Sasl2,
            name: el.name.clone(),
            readings: el.readings(),
        },
        (NS_TLS, "starttls") => Class::StartTls,
        (NS_CLIENT, "iq") if el.attr("type") == Some("set") => {
            let id = el.attr("id").unwrap_or("").to_owned();
            // Servers dispatch an iq on its first child element.
            let Some(q) = el.elements().next() else {
                return Class::Other;
            };
            let text = |name: &str| q.child(name, &q.ns).map(|c| c.text().trim().to_owned());
            match (q.ns.as_str(), q.name.as_str()) {
                (NS_IQ_AUTH, "query") => {
                    let username = text("username").unwrap_or_default();
                    let complete = !username.is_empty()
                        && q.child("password", NS_IQ_AUTH).is_some()
                        && text("resource").is_some_and(|r| !r.is_empty())
                        && q.child("digest", NS_IQ_AUTH).is_none();
                    Class::IqAuth {
                        id,
                        complete,
                        username,
                    }
                }
                (NS_IQ_REGISTER, "query") => Class::Register {
                    id,
                    username: text("username").unwrap_or_default(),
                },
                _ => Class::Other,
            }
        }
        _ => Class::Other,
    }
}

/// An element as the backend's own XML reader (quick-xml) sees it, in the scope of
/// the stream header dealer sends backends.
#[derive(Debug, Default)]
pub struct El {
    pub name: String,
    pub ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    El(El),
    Text(String),
}

impl El {
    pub fn parse(bytes: &[u8]) -> Result<El, String> {
        use quick_xml::events::Event;
        use quick_xml::name::ResolveResult;
        let body = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        let doc = format!(
            "<stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAMS}'>{body}</stream:stream>"
        );
        let mut r = quick_xml::reader::NsReader::from_str(&doc);
        r.config_mut().check_end_names = true;
        let mut stack: Vec<El> = Vec::new();
        let mut root: Option<El> = None;
        let mut depth = 0usize;
        let text = |stack: &mut Vec<El>, t: String| {
            if let Some(top) = stack.last_mut() {
                match top.children.last_mut() {
                    Some(Node::Text(s)) => s.push_str(&t),
                    _ => top.children.push(Node::Text(t)),
                }
            }
        };
        loop {
            let (res, ev) = r.read_resolved_event().map_err(|e| e.to_string())?;
            let ns = match res {
                ResolveResult::Bound(n) => <_ as AsRef<str>>::as_ref(&n).to_owned(),
                ResolveResult::Unbound => String::new(),
                ResolveResult::Unknown(p) => {
                    return Err(format!("unbound prefix {}", p));
                }
            };
            match ev {
                Event::Start(ref s) | Event::Empty(ref s) => {
                    let empty = matches!(ev, Event::Empty(_));
                    depth += 1;
                    if depth == 1 {
                        continue; // the wrapper
                    }
                    let mut el = El {
                        name: s.local_name().as_ref().to_owned(),
                        ns,
                        ..El::default()
                    };
                    for a in s.attributes().with_checks(true) {
                        let a = a.map_err(|e| e.to_string())?;
                        let key = <_ as AsRef<str>>::as_ref(&a.key).to_owned();
                        if key == "xmlns" || key.starts_with("xmlns:") {
                            continue;
                        }
                        let v = a
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .map_err(|e| e.to_string())?;
                        el.attrs.push((key, v.into_owned()));
                    }
                    if empty {
                        depth -= 1;
                        close(&mut stack, &mut root, el);
                    } else {
                        stack.push(el);
                    }
                }
                Event::End(_) => {
                    depth -= 1;
                    if depth == 0 {
                        continue;
                    }
                    let el = stack.pop().ok_or("unbalanced")?;
                    close(&mut stack, &mut root, el);
                }
                Event::Text(t) => text(&mut stack, t.xml10_content().into_owned()),
                Event::CData(t) => text(&mut stack, t.xml10_content().into_owned()),
                Event::GeneralRef(g) => {
                    let c = match g.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => c.to_string(),
                        None => match g.as_ref() {
                            "lt" => "<".into(),
                            "gt" => ">".into(),
                            "amp" => "&".into(),
                            "apos" => "'".into(),
                            "quot" => "\"".into(),
                            _ => return Err("unknown entity".into()),
                        },
                    };
                    text(&mut stack, c);
                }
                Event::Eof => break,
                Event::Comment(_) | Event::PI(_) | Event::DocType(_) | Event::Decl(_) => {
                    return Err("comment, PI, DTD or declaration".into());
                }
            }
        }
        fn close(stack: &mut [El], root: &mut Option<El>, el: El) {
            match stack.last_mut() {
                Some(parent) => parent.children.push(Node::El(el)),
                None => *root = Some(el),
            }
        }
        let root = root.ok_or("no element")?;
        Ok(root)
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn elements(&self) -> impl Iterator<Item = &El> {
        self.children.iter().filter_map(|n| match n {
            Node::El(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    fn child(&self, name: &str, ns: &str) -> Option<&El> {
        self.elements().find(|e| e.is(name, ns))
    }

    /// All the element's own text.
    fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::El(_) => None,
            })
            .collect()
    }

    /// The SASL data in the element as servers read it: all of its text (ejabberd,
    /// dealer), and its first child node when that is text (Prosody's `stanza[1]`).
    fn readings(&self) -> Vec<String> {
        let mut v = vec![self.text()];
        if let Some(Node::Text(t)) = self.children.first()
            && *t != v[0]
        {
            v.push(t.clone());
        }
        v
    }
}
