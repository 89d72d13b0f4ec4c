//! Links: s2s streams dealer originates, one per (from domain, to domain, destination)
//! — to a remote server as the public domain, or to a backend as a stanza's origin
//! domain. A link is a task that connects (routes/SRV for remotes), does STARTTLS
//! when offered, proves its `from` domain with dialback (keys from the shared secret,
//! so the peer's `<db:verify/>` can land on any dealer instance), then writes the
//! stanzas queued for it, batching what has piled up. Stanzas queue while the link
//! comes up; if it cannot, they are bounced to their senders. Idle links close.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Context;
use super::stanza::{Condition, Stanza};
use super::{dialback, open_stream};
use crate::metrics::{S2sStreams, StanzaDirection, StanzaResult};
use crate::net::Conn;
use crate::stream::{StreamIoError, XmlStream};
use crate::xml::element::{Element, Scope};
use crate::xml::{Frame, FrameLimits, NS_DIALBACK, NS_STREAMS, NS_TLS, StreamError};

/// A link with nothing to send for this long closes.
pub const IDLE: Duration = Duration::from_secs(300);
/// Connecting, TLS and dialback together.
pub const SETUP: Duration = Duration::from_secs(30);
const CONNECT: Duration = Duration::from_secs(5);
/// Bytes gathered from the queue before one write.
const BATCH: usize = 64 * 1024;
/// Stanzas a link may hold while it comes up or while its peer is slow to read;
/// beyond that (or beyond the bounds in bytes, `s2s.queue_bytes_per_link` and
/// `s2s.queue_bytes`), new ones are bounced with `resource-constraint`.
pub const QUEUE: usize = 10_000;
/// A peer that takes longer than this to take a batch is dropped.
const WRITE: Duration = Duration::from_secs(60);
/// How long an inbound stream waits for room in a full link queue before the
/// stanza is bounced (`Links::send_or_wait`).
pub const FULL_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    /// The `to` domain's own servers.
    Remote,
    /// One of dealer's backends, at its s2s address.
    Backend { name: String, addr: SocketAddr },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinkKey {
    pub from: String,
    pub to: String,
    pub dest: Dest,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no server found: {0}")]
    NotFound(String),
    #[error("connect: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("stream: {0}")]
    Stream(#[from] StreamIoError),
    #[error("peer sent {0}")]
    Protocol(String),
    #[error("dialback refused")]
    Refused,
    #[error("the destination is dealer itself")]
    Loop,
    #[error("starttls: {0}")]
    Tls(#[from] crate::stream::StartTlsError),
}

impl From<crate::stream::OpenError> for LinkError {
    fn from(e: crate::stream::OpenError) -> Self {
        match e {
            crate::stream::OpenError::Io(e) => LinkError::Stream(e),
            crate::stream::OpenError::Protocol(p) => LinkError::Protocol(p),
        }
    }
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        LinkError::Stream(StreamIoError::Io(e))
    }
}

impl LinkError {
    /// The condition a stanza that could not be delivered is bounced with.
    /// RFC 6120 §8.3.3: a link that could not be set up is `remote-server-not-found`
    /// ("communication cannot be established"), one that ran out of time
    /// `remote-server-timeout`.
    pub fn condition(&self) -> Condition {
        match self {
            LinkError::Timeout => Condition::RemoteServerTimeout,
            _ => Condition::RemoteServerNotFound,
        }
    }
}

/// The queues of the live links, and what they hold in bytes.
#[derive(Default)]
pub struct Links {
    map: Mutex<HashMap<LinkKey, Queue>>,
    /// Bytes queued on every link together (`s2s.queue_bytes`).
    queued: Arc<AtomicUsize>,
    /// Told whenever a link has written a batch: room may have been made.
    progress: Notify,
}

/// One link's queue: its channel, the bytes in it (`s2s.queue_bytes_per_link`), and
/// whether a sender gave up waiting for room in it since it last wrote.
#[derive(Clone)]
struct Queue {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<AtomicUsize>,
    stalled: Arc<AtomicBool>,
}

/// A stanza `offer` could not queue, handed back with its key (boxed: it is the
/// rare way out, and the common one stays small).
struct Full {
    key: LinkKey,
    st: Stanza,
    stalled: Arc<AtomicBool>,
}

/// A stanza in a link's queue. Its bytes count against both bounds until it leaves
/// the queue's hands — written, bounced or dropped — whichever way that happens.
pub struct Queued {
    st: Stanza,
    charge: usize,
    link: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    gauge: prometheus::IntGauge,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.link.fetch_sub(self.charge, Ordering::AcqRel);
        let left = self.total.fetch_sub(self.charge, Ordering::AcqRel) - self.charge;
        self.gauge.set(left as i64);
    }
}

/// What a queued stanza costs: its bytes, its addressing, and a little for the queue.
fn charge(st: &Stanza) -> usize {
    st.bytes.len() + st.from.len() + st.to.len() + st.id.as_ref().map_or(0, String::len) + 64
}

/// Add `n` to `counter` unless that passes `max`.
fn reserve(counter: &AtomicUsize, n: usize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            c.checked_add(n).filter(|&x| x <= max)
        })
        .is_ok()
}

impl Links {
    /// Queue `st` on the link for `key`, starting the link if there is none. A stanza
    /// that would take the link's queue, or all queues together, past their bounds
    /// in bytes (or a queue past `QUEUE` stanzas) is bounced with
    /// `resource-constraint`. For a stanza that must not hold up its sender: bounces.
    pub fn send(&self, ctx: &Arc<Context>, key: LinkKey, st: Stanza) {
        if let Err(full) = self.offer(ctx, key, st) {
            self.refuse(ctx, &full.st);
        }
    }

    /// Queue `st` as `send` does, but when the queue is full wait for room, up to
    /// `FULL_WAIT`, before bouncing it. The caller (an inbound stream) stops reading
    /// meanwhile, so a sender faster than the backend it writes to is slowed by TCP
    /// instead of losing stanzas to a burst. A link that made no room within
    /// `FULL_WAIT` is marked stalled, and until it writes again the stanzas for it
    /// are bounced at once: one dead peer holds up the streams that feed it once, for
    /// `FULL_WAIT`, not once per stanza, and blocks no other link.
    pub async fn send_or_wait(&self, ctx: &Arc<Context>, key: LinkKey, st: Stanza) {
        let mut full = match self.offer(ctx, key, st) {
            Ok(()) => return,
            Err(full) => full,
        };
        let deadline = Instant::now() + FULL_WAIT;
        loop {
            if full.stalled.load(Ordering::Acquire) {
                return self.refuse(ctx, &full.st);
            }
            // Registered before the next attempt, so room made in between is not
            // missed (and only here: registering costs a lock).
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            full = match self.offer(ctx, full.key, full.st) {
                Ok(()) => return,
                Err(full) => full,
            };
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                full.stalled.store(true, Ordering::Release);
                return self.refuse(ctx, &full.st);
            }
        }
    }

    /// Queue `st`, or hand it back when a bound would be passed.
    fn offer(&self, ctx: &Arc<Context>, key: LinkKey, st: Stanza) -> Result<(), Box<Full>> {
        let (per_link, total) = {
            let snap = ctx.snapshot.load();
            (
                snap.config.s2s.queue_bytes_per_link,
                snap.config.s2s.queue_bytes,
            )
        };
        let n = charge(&st);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let existing = map.get(&key).filter(|q| !q.tx.is_closed()).cloned();
        let (link_bytes, stalled) = existing
            .as_ref()
            .map(|q| (q.bytes.clone(), q.stalled.clone()))
            .unwrap_or_default();
        if !reserve(&self.queued, n, total) {
            return Err(Box::new(Full { key, st, stalled }));
        }
        if !reserve(&link_bytes, n, per_link) {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(Box::new(Full { key, st, stalled }));
        }
        let gauge = ctx.metrics.s2s_queued_bytes.clone();
        gauge.set(self.queued.load(Ordering::Acquire) as i64);
        let item = Queued {
            st,
            charge: n,
            link: link_bytes.clone(),
            total: self.queued.clone(),
            gauge,
        };
        if let Some(q) = existing {
            return match q.tx.try_send(item) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(item)) => {
                    let st = item.st.clone();
                    drop(item);
                    Err(Box::new(Full { key, st, stalled }))
                }
                // Closed between the check and the send: its task is ending and will
                // not read this; the stanza goes on a new link.
                Err(mpsc::error::TrySendError::Closed(item)) => {
                    drop(map);
                    let st = item.st.clone();
                    drop(item);
                    self.offer(ctx, key, st)
                }
            };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        // A new channel has room, so this send cannot fail.
        let _ = tx.try_send(item);
        map.insert(
            key.clone(),
            Queue {
                tx: tx.clone(),
                bytes: link_bytes,
                stalled: stalled.clone(),
            },
        );
        drop(map);
        let ctx = ctx.clone();
        let span =
            info_span!("s2s_link", link.from = %key.from, link.to = %key.to, link.dest = ?key.dest);
        tokio::spawn(run(ctx, key, tx, rx, stalled).instrument(span));
        Ok(())
    }

    fn refuse(&self, ctx: &Arc<Context>, st: &Stanza) {
        ctx.metrics.limit(crate::metrics::Limit::S2sQueueBytes);
        super::bounce(ctx, st, Condition::ResourceConstraint);
    }

    /// Forget `key` if it still maps to `tx` (a newer link may have replaced it).
    fn remove(&self, key: &LinkKey, tx: &mpsc::Sender<Queued>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|q| q.tx.same_channel(tx)) {
            map.remove(key);
        }
    }

    /// Bytes queued on all links now.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

async fn run(
    ctx: Arc<Context>,
    key: LinkKey,
    tx: mpsc::Sender<Queued>,
    mut rx: mpsc::Receiver<Queued>,
    stalled: Arc<AtomicBool>,
) {
    let gauge = ctx.metrics.s2s_streams(S2sStreams::Out);
    gauge.inc();
    let setup = tokio::time::timeout(SETUP, establish(&ctx, &key)).await;
    let mut s = match setup {
        Ok(Ok(s)) => s,
        failed => {
            let e = match failed {
                Ok(Err(e)) => e,
                _ => LinkError::Timeout,
            };
            warn!(error = %e, "s2s link failed");
            ctx.links.remove(&key, &tx);
            drop(tx);
            rx.close();
            let cond = e.condition();
            while let Ok(q) = rx.try_recv() {
                super::bounce(&ctx, &q.st, cond);
            }
            ctx.links.progress.notify_waiters();
            gauge.dec();
            return;
        }
    };
    info!("s2s link up");
    let mut bytes = Vec::with_capacity(4096);
    // The stanzas of the batch being written, so a failed write can bounce each one.
    let mut batch: Vec<Queued> = Vec::new();
    let mut idle_until = Instant::now() + IDLE;
    loop {
        tokio::select! {
            st = rx.recv() => {
                let Some(st) = st else { break };
                bytes.clear();
                batch.clear();
                bytes.extend_from_slice(&st.st.bytes);
                batch.push(st);
                while bytes.len() < BATCH {
                    match rx.try_recv() {
                        Ok(more) => {
                            bytes.extend_from_slice(&more.st.bytes);
                            batch.push(more);
                        }
                        Err(_) => break,
                    }
                }
                let written = tokio::time::timeout(WRITE, async {
                    s.write_flushed(&bytes).await
                })
                .await;
                if !matches!(written, Ok(Ok(()))) {
                    debug!("s2s link write failed or timed out");
                    // These may or may not have arrived: tell their senders.
                    for q in batch.drain(..) {
                        super::bounce(&ctx, &q.st, Condition::RemoteServerTimeout);
                    }
                    break;
                }
                ctx.metrics.s2s_stanzas(out_label(&key), StanzaResult::Routed).inc_by(batch.len() as u64);
                // Written: their bytes leave the queue's account, and senders waiting
                // for room may go on.
                batch.clear();
                stalled.store(false, Ordering::Release);
                ctx.links.progress.notify_waiters();
                if bytes.capacity() > 4 * BATCH {
                    bytes = Vec::with_capacity(4096);
                }
                idle_until = Instant::now() + IDLE;
            }
            f = s.next_frame() => {
                match f {
                    Ok(Frame::Element { len }) => {
                        let is_error = Element::parse(&s.buffered()[..len], &Scope::default())
                            .map(|e| e.is("error", NS_STREAMS))
                            .unwrap_or(true);
                        s.consume(len);
                        if is_error {
                            break;
                        }
                    }
                    Ok(Frame::Whitespace { len }) => s.consume(len),
                    _ => break,
                }
            }
            _ = tokio::time::sleep_until(idle_until) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), s.send(b"</stream:stream>")).await;
                break;
            }
            // dealer is stopping: the inbound streams that fed this link are closing
            // too; close the stream politely instead of having the process exit cut it.
            _ = ctx.lifecycle.sessions_stop.cancelled() => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    s.send(StreamError::SystemShutdown.to_xml(None, None).as_bytes()),
                )
                .await;
                break;
            }
        }
    }
    debug!("s2s link down");
    ctx.links.remove(&key, &tx);
    drop(tx);
    rx.close();
    if ctx.lifecycle.sessions_stop.is_cancelled() {
        // Nowhere left to send them, nor their bounces.
        let mut dropped = 0;
        while rx.try_recv().is_ok() {
            dropped += 1;
        }
        ctx.metrics
            .s2s_stanzas(out_label(&key), StanzaResult::Dropped)
            .inc_by(dropped);
    } else {
        // Anything still queued goes out on a fresh link (which bounces it if it fails).
        while let Ok(q) = rx.try_recv() {
            let st = q.st.clone();
            drop(q);
            ctx.links.send(&ctx, key.clone(), st);
        }
    }
    ctx.links.progress.notify_waiters();
    gauge.dec();
}

/// Whether `a` is one of dealer's s2s listeners (a wildcard listener matches any
/// loopback or its own port on any address dealer may hold).
fn is_own_listener(c: &crate::config::Config, a: SocketAddr) -> bool {
    let s2s = c.listen.s2s.iter().chain(&c.listen.s2s_tls);
    s2s.chain(&c.listen.s2s_internal).any(|l| {
        l.addr.port() == a.port()
            && (l.addr.ip() == a.ip()
                || (l.addr.ip().is_unspecified()
                    && (a.ip().is_loopback() || a.ip().is_unspecified())))
    })
}

fn out_label(key: &LinkKey) -> StanzaDirection {
    match key.dest {
        Dest::Remote => StanzaDirection::Out,
        Dest::Backend { .. } => StanzaDirection::In,
    }
}

/// Connect, open, STARTTLS when offered, and pass dialback as `key.from`.
async fn establish(ctx: &Arc<Context>, key: &LinkKey) -> Result<XmlStream, LinkError> {
    let live = ctx.snapshot.load_full();
    // The settings of the domain the link serves: the backend's, or the origin's.
    let snap = match &key.dest {
        Dest::Backend { name, .. } => live.with_backend(name),
        Dest::Remote => live.answering(&key.from),
    }
    .unwrap_or(&live);
    let secret = snap
        .config
        .s2s
        .dialback_secret
        .as_ref()
        .map(|s| s.expose().to_owned())
        .unwrap_or_default();
    let limits = FrameLimits::from_config(&snap.config.limits);
    let addrs = match &key.dest {
        Dest::Backend { addr, .. } => vec![*addr],
        Dest::Remote => {
            let route = snap.config.s2s.routes.get(&key.to);
            ctx.resolver(snap)
                .map_err(|e| LinkError::NotFound(e.to_string()))?
                .lookup(&key.to, route)
                .await
                .map_err(|e| LinkError::NotFound(e.to_string()))?
        }
    };
    // A remote domain that resolves to one of dealer's own s2s listeners would make
    // dealer deliver to itself, round and round.
    let addrs: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| !is_own_listener(&snap.config, *a))
        .collect();
    if addrs.is_empty() {
        return Err(LinkError::Loop);
    }
    let mut last = String::from("no address");
    let mut tcp = None;
    for a in &addrs {
        match tokio::time::timeout(CONNECT, crate::net::connect(*a)).await {
            Ok(Ok(t)) => {
                tcp = Some(t);
                break;
            }
            Ok(Err(e)) => last = format!("{a}: {e}"),
            Err(_) => last = format!("{a}: timed out"),
        }
    }
    let tcp = tcp.ok_or(LinkError::Connect(last))?;
    let mut s = XmlStream::new(Conn::Plain(tcp), limits);
    let (mut header, mut features) = open_stream(&mut s, &key.from, &key.to).await?;
    let want_tls = match &key.dest {
        Dest::Remote => true,
        Dest::Backend { name, .. } => snap
            .config
            .backends
            .iter()
            .any(|b| &b.name == name && b.tls),
    };
    if want_tls
        && features
            .as_ref()
            .is_some_and(|f| f.child("starttls", NS_TLS).is_some())
    {
        let name = rustls::pki_types::ServerName::try_from(key.to.clone())
            .map_err(|_| LinkError::Protocol("domain is not a DNS name".into()))?;
        s.starttls_client(&header, ctx.s2s_tls.clone(), name)
            .await?;
        (header, features) = open_stream(&mut s, &key.from, &key.to).await?;
    }
    let _ = features;
    let id = header
        .id
        .clone()
        .ok_or_else(|| LinkError::Protocol("a stream header without id".into()))?;
    let k = dialback::key(&secret, &key.to, &key.from, &id);
    let req = format!(
        "<db:result from='{}' to='{}'>{k}</db:result>",
        crate::xml::escape::attr(&key.from),
        crate::xml::escape::attr(&key.to)
    );
    s.send(req.as_bytes()).await?;
    loop {
        let (e, len) = s.next_element(&header).await?;
        s.consume(len);
        if e.is("result", NS_DIALBACK) {
            return match e.attr("type") {
                Some("valid") => Ok(s),
                _ => Err(LinkError::Refused),
            };
        }
        if e.is("error", NS_STREAMS) {
            return Err(LinkError::Protocol(format!(
                "stream error <{}/>",
                crate::stream::stream_error_condition(&e)
            )));
        }
        // Anything else before the verdict (a db:verify piggybacked by the peer is
        // answered on dealer's listeners, not here) is ignored.
    }
}
