//! Warm backend streams: in forward mode each worker thread keeps a few c2s streams per
//! backend open ahead of need (connected, STARTTLS done where configured, header sent,
//! features read), so a login costs its backend one round trip instead of a connect and
//! a stream set-up. Each login takes at most one and starts opening its replacement.
//!
//! How many a pool keeps follows demand, up to `c2s.warm_streams`: a login that finds
//! none ready raises the pool's target by one, a stream that ages out unused lowers it
//! by one (never below one). A burst of logins thus grows the pool to what the login
//! rate needs while streams open, and an idle spell shrinks it again, so the backend
//! does not hold the most allowed for a dealer that sees a login now and then.
//!
//! What the backend sees stays an ordinary client stream: one stream per login, its own
//! stream id, nothing sent on it before the login's first authentication element. A
//! stream is never handed out once it is older than `c2s.warm_max_age` or once the
//! backend has closed it or sent anything unasked. Streams that carry a PROXY header
//! (written at connect, naming the client) or a client's own stream header (early
//! routing) are never pooled. The pools are per thread: a session's sockets stay with
//! the runtime that polls them, and taking a stream needs no lock.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::{BackendStream, Target};
use crate::config::Warm;
use crate::metrics::{Metrics, WarmOutcome};
use crate::xml::FrameLimits;

/// One backend's warm streams on this thread, for one way of reaching it.
struct Pool {
    addr: std::net::SocketAddr,
    domain: String,
    tls: bool,
    ready: VecDeque<(Instant, BackendStream)>,
    /// Opens under way, so a burst of logins does not open more than `target`.
    opening: usize,
    /// How many streams the pool keeps ready or opening: 1 to `warm.streams`.
    target: usize,
    /// Whether a task is waiting to drop this pool's streams as they reach their age
    /// (one per pool, not one per stream: a busy backend takes thousands a second).
    sweeping: bool,
}

impl Pool {
    fn serves(&self, t: &Target) -> bool {
        self.addr == t.addr && self.tls == t.tls && self.domain == t.domain
    }

    /// A login found nothing ready: keep one more, up to `most`.
    fn grow(&mut self, most: usize) {
        self.target = (self.target + 1).min(most.max(1));
    }

    /// `n` streams aged out unused: keep that many fewer, at least one.
    fn shrink(&mut self, n: usize) {
        self.target = self.target.saturating_sub(n).max(1);
    }
}

thread_local! {
    static POOLS: RefCell<Vec<Pool>> = const { RefCell::new(Vec::new()) };
}

/// Whether streams to `target` may be pooled at all.
fn poolable(target: &Target, warm: Warm) -> bool {
    warm.streams > 0 && target.proxy.is_none() && target.from.is_none()
}

fn find<'a>(pools: &'a mut [Pool], t: &Target) -> Option<&'a mut Pool> {
    pools.iter_mut().find(|p| p.serves(t))
}

fn find_or_add<'a>(pools: &'a mut Vec<Pool>, t: &Target) -> &'a mut Pool {
    let i = match pools.iter().position(|p| p.serves(t)) {
        Some(i) => i,
        None => {
            pools.push(Pool {
                addr: t.addr,
                domain: t.domain.clone(),
                tls: t.tls,
                ready: VecDeque::new(),
                opening: 0,
                target: 1,
                sweeping: false,
            });
            pools.len() - 1
        }
    };
    &mut pools[i]
}

/// A warm stream to `target` if one is ready, fresh and untouched; counts what it
/// found under `backend`'s name.
pub fn take(
    target: &Target,
    backend: &str,
    warm: Warm,
    metrics: &Metrics,
) -> Option<BackendStream> {
    if !poolable(target, warm) {
        return None;
    }
    POOLS.with_borrow_mut(|pools| {
        let pool = find_or_add(pools, target);
        // Oldest first: under steady load every stream is used long before it ages.
        while let Some((since, mut bs)) = pool.ready.pop_front() {
            if since.elapsed() >= warm.max_age {
                metrics.warm_stream(backend, WarmOutcome::Expired);
                close(bs);
                pool.shrink(1);
                continue;
            }
            if !untouched(&mut bs) {
                metrics.warm_stream(backend, WarmOutcome::Closed);
                continue;
            }
            metrics.warm_stream(backend, WarmOutcome::Hit);
            return Some(bs);
        }
        metrics.warm_stream(backend, WarmOutcome::Miss);
        pool.grow(warm.streams);
        None
    })
}

/// How to open a stream to a backend, for `refill`.
pub struct Opener<'a> {
    pub limits: FrameLimits,
    pub tls: &'a Arc<rustls::ClientConfig>,
    pub connect_timeout: Duration,
}

/// Start opening streams to `target` until this thread has the pool's target (at most
/// `warm.streams`) ready or on the way. Each one that opens is dropped at
/// `warm.max_age` if no login took it (counted as expired under `backend`).
pub fn refill(target: &Target, backend: &str, warm: Warm, how: Opener<'_>, metrics: &Arc<Metrics>) {
    if !poolable(target, warm) {
        return;
    }
    let want = POOLS.with_borrow_mut(|pools| {
        let p = find_or_add(pools, target);
        // A reload may have lowered the most allowed below what the pool grew to.
        p.target = p.target.min(warm.streams);
        let n = p.target.saturating_sub(p.ready.len() + p.opening);
        p.opening += n;
        n
    });
    for _ in 0..want {
        let (t, tls, name, metrics) = (
            target.clone(),
            how.tls.clone(),
            backend.to_owned(),
            metrics.clone(),
        );
        let (limits, connect_timeout) = (how.limits, how.connect_timeout);
        tokio::spawn(async move {
            let r = super::open(&t, limits, &tls, Instant::now() + connect_timeout).await;
            let start_sweeper = POOLS.with_borrow_mut(|pools| {
                // On a multi-threaded runtime this task may finish on another thread
                // than it started: counts there stay bounded, never negative.
                let p = find_or_add(pools, &t);
                p.opening = p.opening.saturating_sub(1);
                match r {
                    Ok(bs) if p.ready.len() < p.target => {
                        p.ready.push_back((Instant::now(), bs));
                        !std::mem::replace(&mut p.sweeping, true)
                    }
                    Ok(bs) => {
                        close(bs);
                        false
                    }
                    // The login that needs this backend reports it unreachable.
                    Err(_) => false,
                }
            });
            if start_sweeper {
                sweeper(t, warm.max_age, name, metrics).await;
            }
        });
    }
}

/// Drop the pool's streams as they reach `max_age`, until it has none left.
async fn sweeper(target: Target, max_age: Duration, backend: String, metrics: Arc<Metrics>) {
    loop {
        let (dropped, next) = POOLS.with_borrow_mut(|pools| {
            let Some(p) = find(pools, &target) else {
                return (0, None);
            };
            let mut n = 0;
            while p.ready.front().is_some_and(|(t, _)| t.elapsed() >= max_age) {
                if let Some((_, bs)) = p.ready.pop_front() {
                    close(bs);
                    n += 1;
                }
            }
            p.shrink(n);
            let next = p.ready.front().map(|(t, _)| *t + max_age);
            p.sweeping = next.is_some();
            (n, next)
        });
        for _ in 0..dropped {
            metrics.warm_stream(&backend, WarmOutcome::Expired);
        }
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return,
        }
    }
}

/// True when the backend has neither closed the stream nor sent anything on it since
/// its features: one read attempt that must find nothing to read (without waiting).
fn untouched(bs: &mut BackendStream) -> bool {
    if !bs.stream.buffered().is_empty() {
        return false;
    }
    let mut cx = Context::from_waker(Waker::noop());
    let read = std::pin::pin!(bs.stream.fill());
    matches!(read.poll(&mut cx), Poll::Pending)
}

/// End an unused stream politely where that costs no waiting: a plaintext leg gets
/// its closing tag if the socket takes it at once; either way the connection closes.
fn close(bs: BackendStream) {
    let (conn, _) = bs.stream.into_parts();
    if let crate::net::Conn::Plain(tcp) = &conn {
        let _ = tcp.try_write(b"</stream:stream>");
    }
}
