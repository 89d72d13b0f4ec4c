//! Accepting connections: the accept loop (which never dies: it backs off on
//! descriptor exhaustion and logs everything else), the connection limits of
//! DESIGN.md §6 (in total, per source address, logins per source per second), and
//! the hand-off of each connection to its own task, where TLS and XMPP handshakes run.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config;
use crate::metrics::Metrics;
use crate::snapshot::Live;

/// Which kind of listener accepted a connection (the `listener` metric label).
pub use crate::metrics::Listener as Kind;

/// A connection as the accept loop hands it to its session task.
pub struct Accepted {
    pub tcp: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub kind: Kind,
    pub listener: config::Listener,
    /// Held for the connection's lifetime: one of `limits.max_connections`.
    pub permit: OwnedSemaphorePermit,
}

/// Connection and login limits shared by every listener of one dealer instance.
#[derive(Debug)]
pub struct ConnLimits {
    total: Arc<Semaphore>,
    max_total: usize,
    per_source: Mutex<HashMap<IpAddr, u32>>,
    logins: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One of a source address's connections; gives its slot back when dropped.
#[derive(Debug)]
pub struct SourceSlot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut m = self
            .limits
            .per_source
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl ConnLimits {
    pub fn new(max_total: u64) -> Arc<ConnLimits> {
        let max_total = max_total.min(Semaphore::MAX_PERMITS as u64) as usize;
        Arc::new(ConnLimits {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            per_source: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
        })
    }

    /// Take a slot for `ip`, or `None` when it already has `max` (0 = unlimited).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, max: u64) -> Option<SourceSlot> {
        let ip = source(ip);
        let mut m = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if max > 0 && u64::from(*n) >= max {
            if *n == 0 {
                m.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// A login attempt from `ip`: a token bucket of `per_second` tokens refilled at
    /// `per_second` a second (0 = unlimited).
    pub fn allow_login(&self, ip: IpAddr, per_second: u64) -> bool {
        if per_second == 0 {
            return true;
        }
        let ip = source(ip);
        let rate = per_second as f64;
        let now = Instant::now();
        let mut m = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 10_000 {
            // Full buckets carry no information: forget them.
            m.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < rate);
        }
        let b = m.entry(ip).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The source a per-source limit counts: an IPv4 address (also when it arrives
/// IPv4-mapped on a dual-stack socket), or an IPv6 /64 — one host's share, since a
/// single machine can take any address of its /64 at will.
fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// What every accept loop consults before a connection becomes a session.
pub struct Gate {
    pub limits: Arc<ConnLimits>,
    pub metrics: Arc<Metrics>,
    /// For the domain a refusal's stream header names.
    pub snapshot: Live,
    /// Every session task, so shutdown can wait for them.
    pub tracker: tokio_util::task::TaskTracker,
}

/// Accept on `listener` until `stop`, handing each connection to `handle` in a task
/// tracked by the gate's tracker (so shutdown can wait for sessions).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    kind: Kind,
    cfg: config::Listener,
    gate: Arc<Gate>,
    stop: CancellationToken,
    handle: F,
) where
    F: Fn(Accepted) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr().unwrap_or(cfg.addr);
    loop {
        let accepted = tokio::select! {
            // Cancel-safe: an unfinished accept loses nothing.
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // ENFILE (23) and EMFILE (24): wait for sessions to end and free some.
                let out_of_fds = matches!(e.raw_os_error(), Some(23 | 24));
                warn!(listener = kind.label(), error = %e, "accept failed");
                let pause = if out_of_fds { 100 } else { 5 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                continue;
            }
        };
        // The permit is taken after accept, so the limit counts connections, not
        // accept loops waiting (each listener on each thread has one).
        let Ok(permit) = gate.limits.total.clone().try_acquire_owned() else {
            gate.metrics.limit(crate::metrics::Limit::Connections);
            refuse(tcp, kind, &gate);
            continue;
        };
        // Socket options come from the listening socket (see `app::bind`).
        gate.metrics.accepted(kind);
        debug!(listener = kind.label(), client.addr = %peer, "accepted");
        let a = Accepted {
            tcp,
            peer,
            local,
            kind,
            listener: cfg,
            permit,
        };
        gate.tracker.spawn(handle(a));
    }
}

/// Refused connections being answered at once, at most: beyond this they are closed
/// without a word, so a flood cannot make dealer hold many sockets it refused.
const MAX_REFUSING: usize = 64;

/// Answer a connection over `limits.max_connections` at once rather than leave it in
/// the kernel's queue until the client gives up: a stream error
/// (`<resource-constraint/>`) on plaintext and STARTTLS listeners, a TCP close on
/// Direct TLS ones (a stream error there would cost a TLS handshake per refusal).
fn refuse(tcp: TcpStream, kind: Kind, gate: &Gate) {
    static REFUSING: Semaphore = Semaphore::const_new(MAX_REFUSING);
    let ns = match kind {
        Kind::C2s => crate::xml::NS_CLIENT,
        Kind::S2s | Kind::S2sInternal => crate::xml::NS_SERVER,
        // Direct TLS and WebSocket: no XMPP stream yet to carry an error.
        Kind::C2sTls | Kind::S2sTls | Kind::Websocket => {
            gate.metrics
                .dropped(crate::metrics::DropReason::Connections, &"connection limit");
            return;
        }
    };
    let Ok(slot) = REFUSING.try_acquire() else {
        gate.metrics
            .dropped(crate::metrics::DropReason::Connections, &"connection limit");
        return;
    };
    let domain = gate.snapshot.load().config.domain.clone();
    let metrics = gate.metrics.clone();
    let max = gate.limits.max_total;
    tokio::spawn(async move {
        let _slot = slot;
        let mut out =
            crate::xml::stream_header::write(ns, &domain, None, &crate::stream::new_id(), true);
        let cond = crate::xml::StreamError::ResourceConstraint;
        out.push_str(&cond.to_xml(
            None,
            Some(&format!(
                "dealer is at its limit of {max} connections; try again later"
            )),
        ));
        metrics.stream_error(cond);
        let mut s = crate::stream::XmlStream::new(
            crate::net::Conn::Plain(tcp),
            crate::xml::FrameLimits::default(),
        );
        s.close_with(out.as_bytes()).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_slots_come_back() {
        let l = ConnLimits::new(100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = l.admit(ip, 2).unwrap();
        let _b = l.admit(ip, 2).unwrap();
        assert!(l.admit(ip, 2).is_none());
        assert!(l.admit("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(l.admit(ip, 2).is_some());
        assert!(l.admit(ip, 0).is_some(), "0 is unlimited");
    }

    #[test]
    fn sources_are_v4_hosts_and_v6_slash_64s() {
        let l = ConnLimits::new(100);
        let _a = l.admit("192.0.2.1".parse().unwrap(), 1).unwrap();
        assert!(l.admit("::ffff:192.0.2.1".parse().unwrap(), 1).is_none());
        let _b = l.admit("2001:db8:1:2::1".parse().unwrap(), 1).unwrap();
        assert!(
            l.admit("2001:db8:1:2:ffff::9".parse().unwrap(), 1)
                .is_none()
        );
        assert!(l.admit("2001:db8:1:3::1".parse().unwrap(), 1).is_some());
    }

    #[test]
    fn login_bucket() {
        let l = ConnLimits::new(1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..5).all(|_| l.allow_login(ip, 5)));
        assert!(!l.allow_login(ip, 5));
        assert!(l.allow_login("192.0.2.9".parse().unwrap(), 5));
        assert!(l.allow_login(ip, 0));
    }
}
