//! A session after hand-over: the relay runs as a task of its own until either side
//! closes, the session is ended (shutdown, re-dealing), or a leg fails; its end is
//! counted and logged once.
//!
//! An idle relayed session is mostly this task's memory, so the task is a hand-written
//! future that holds each thing once: the relay's future is built before the task and
//! moved in whole (an `async` block would keep the captured connections beside the
//! relay that owns them, and a `select!` would keep a second copy of whatever it is
//! given), and the timer a WebSocket's orderly close needs is only made when one
//! closes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::info;

use super::Client;
use super::Context;
use super::forward::HandOver;
use crate::listener::Kind;
use crate::metrics::{Cause, RelayKind};
use crate::relay::{RelayError, Totals};
use crate::sessions::Registered;

/// What a relayed session keeps holding: its connection slot, its per-source slot,
/// its place in the connections gauge.
pub struct Held {
    pub permit: tokio::sync::OwnedSemaphorePermit,
    pub slot: crate::listener::SourceSlot,
    pub gauge: crate::metrics::ConnGauge,
}

/// Start the relay of an authenticated session as a task of its own.
pub fn spawn_relay(client: Client, h: Box<HandOver>, ctx: Arc<Context>, held: Held) {
    let HandOver {
        backend,
        backend_name,
        masking,
        start,
        limits,
        user,
    } = *h;
    let peer = client.peer;
    let kind = client.kind;
    let mut client = client.stream.into_parts();
    let backend = backend.stream.into_parts();
    let live = ctx.sessions.register(
        &user,
        &backend_name,
        ctx.lifecycle.sessions_stop.child_token(),
    );
    // The relay runs without the connection's span: entering a span on every wake-up
    // costs more than the relay's own work on a busy session. Its last line names
    // the session instead.
    let end = Ending {
        ctx: ctx.clone(),
        kind,
        peer,
        user,
        backend_name,
        started: Instant::now(),
        _held: held,
    };
    let tracker = ctx.lifecycle.tracker.clone();
    // Two different futures: a plain session never carries the rewriting relay's state.
    match masking {
        None => {
            // A WebSocket client is told with `<close/>` (its stream ends in order,
            // the relay with it); a TCP one sees its connection closed. Unparsed bytes
            // leave no other way to end a relay than to close the sockets.
            let ws = if let crate::net::Conn::Ws(w) = &mut client.0 {
                w.close_on(live.token.clone());
                true
            } else {
                false
            };
            let stop = live.token.clone().cancelled_owned();
            let relay = crate::relay::run(
                client.0,
                client.1,
                backend.0,
                backend.1,
                ctx.metrics.clone(),
            );
            tracker.spawn(RelayTask {
                relay,
                stop: Some(stop),
                grace: ws.then(|| Duration::from_secs(2)),
                timer: None,
                live,
                end,
            });
        }
        // The rewriting relay watches the token itself (it can close the client's
        // stream in order).
        Some(m) => {
            let relay = crate::relay::masked::relay(
                client,
                backend,
                m,
                start,
                limits,
                crate::relay::Counters::new(&ctx.metrics, RelayKind::Rewrite),
                live.token.clone(),
            );
            tracker.spawn(RelayTask {
                relay,
                stop: None,
                grace: None,
                timer: None,
                live,
                end,
            });
        }
    }
}

/// What the session's last line and counters need.
struct Ending {
    ctx: Arc<Context>,
    kind: Kind,
    peer: SocketAddr,
    user: String,
    backend_name: String,
    started: Instant,
    /// Released when the task is dropped, after its sockets are closed.
    _held: Held,
}

pin_project_lite::pin_project! {
    /// A relayed session: its relay, and what ends it from outside.
    struct RelayTask<F> {
        #[pin]
        relay: F,
        // Cancelled when the session is ended from outside; `None` when the relay
        // watches its token itself.
        #[pin]
        stop: Option<WaitForCancellationFutureOwned>,
        // How long the relay may go on after `stop` (a WebSocket closing in order).
        grace: Option<Duration>,
        timer: Option<Pin<Box<Sleep>>>,
        // The session's place in the registry, left when the task ends. Fields drop in
        // order: the relay's sockets close before the connection's slots are released.
        live: Registered,
        end: Ending,
    }
}

impl<F: Future<Output = Result<Totals, RelayError>>> Future for RelayTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let mut this = self.project();
        let r = match this.relay.poll(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => {
                if this.timer.is_none() {
                    let stopped = this
                        .stop
                        .as_mut()
                        .as_pin_mut()
                        .is_some_and(|s| s.poll(cx).is_ready());
                    if !stopped {
                        return Poll::Pending;
                    }
                    if let Some(grace) = *this.grace {
                        *this.timer = Some(Box::pin(tokio::time::sleep(grace)));
                    }
                }
                if let Some(t) = this.timer.as_mut()
                    && t.as_mut().poll(cx).is_pending()
                {
                    return Poll::Pending;
                }
                Err(RelayError::stopped())
            }
        };
        log_end(this.end, r);
        Poll::Ready(())
    }
}

fn log_end(e: &Ending, r: Result<Totals, RelayError>) {
    let (side, cause) = match &r {
        Ok(t) => (t.closed_by, Cause::Closed),
        Err(x) => (x.side, x.cause),
    };
    e.ctx.metrics.session_end(e.kind, side, cause);
    match r {
        Ok(t) => info!(
            client.addr = %e.peer,
            user = %e.user,
            backend.name = %e.backend_name,
            bytes.up = t.client_to_backend,
            bytes.down = t.backend_to_client,
            secs = e.started.elapsed().as_secs(),
            "session ended"
        ),
        Err(x) => info!(
            client.addr = %e.peer,
            user = %e.user,
            backend.name = %e.backend_name,
            error = %x,
            secs = e.started.elapsed().as_secs(),
            "session ended by an error"
        ),
    }
}
