//! After hand-over, bytes flow between client and backend. With `domains: shared`
//! nothing is parsed: `splice` when both legs are plain TCP (small chunks through a
//! pooled buffer, bursts zero-copy through pooled pipes), `copy` when a leg is TLS
//! (pooled buffers, held only while data is in flight). With `domains: masked`, `masked` runs both directions through the framer
//! and rewrites JIDs. All handle half-close, count bytes per direction as they go, and
//! end the session when either leg fails.

pub mod copy;
pub mod masked;
pub mod splice;

use bytes::BytesMut;
use prometheus::IntCounter;
use tokio::io::AsyncWriteExt;

use crate::metrics::{Cause, Metrics, RelayDirection, RelayKind, Side};
use crate::net::Conn;

/// Byte counters for one relay kind, per direction.
#[derive(Clone)]
pub struct Counters {
    pub client_to_backend: IntCounter,
    pub backend_to_client: IntCounter,
    /// Bytes moved by splice(2) itself (the splice relay's bursts).
    pub spliced: IntCounter,
}

impl Counters {
    pub fn new(m: &Metrics, kind: RelayKind) -> Counters {
        Counters {
            client_to_backend: m.relay_bytes(kind, RelayDirection::ClientToBackend),
            backend_to_client: m.relay_bytes(kind, RelayDirection::BackendToClient),
            spliced: m.relay_spliced_bytes.clone(),
        }
    }
}

/// How a relay ended in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
    /// The side that closed first (the other followed).
    pub closed_by: Side,
}

/// How a relay ended otherwise: which side's connection failed or sent what it must
/// not (or dealer, which closed it), and why.
#[derive(Debug, thiserror::Error)]
#[error("{side}: {error}")]
pub struct RelayError {
    pub side: Side,
    pub cause: Cause,
    #[source]
    pub error: std::io::Error,
}

impl RelayError {
    /// The connection of `side` failed.
    pub fn gone(side: Side, error: std::io::Error) -> RelayError {
        RelayError {
            side,
            cause: Cause::Gone,
            error,
        }
    }

    /// dealer ended the session (shutdown, re-deal).
    pub fn stopped() -> RelayError {
        RelayError {
            side: Side::Dealer,
            cause: Cause::Shutdown,
            error: std::io::Error::other("closed by dealer"),
        }
    }
}

/// Which side closed first, between two directions ending on different tasks or
/// polls: 0 none yet, 1 the client, 2 the backend.
#[derive(Default)]
struct FirstClose(std::sync::atomic::AtomicU8);

impl FirstClose {
    /// Note that `side` finished sending; true when it is the first to.
    fn note(&self, side: Side) -> bool {
        let v = if side == Side::Client { 1 } else { 2 };
        self.0
            .compare_exchange(
                0,
                v,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            )
            .is_ok()
    }

    fn side(&self) -> Side {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            2 => Side::Backend,
            _ => Side::Client,
        }
    }
}

/// Relay until both directions end or one fails. `*_pending` are bytes already read
/// from one leg (during authentication) that the other leg has not seen yet.
///
/// An idle relayed session is mostly this future, so it is built to hold each thing
/// once: a plain session's future holds two `TcpStream`s and the splice relay, not
/// the `Conn`s they came in (an `async fn` keeps its arguments for its whole life),
/// and bytes pending at hand-over, which are rare, are boxed.
pub fn run(
    client: Conn,
    client_pending: BytesMut,
    backend: Conn,
    backend_pending: BytesMut,
    metrics: std::sync::Arc<Metrics>,
) -> impl std::future::Future<Output = Result<Totals, RelayError>> + Send + 'static {
    let plain = client.is_plain_tcp() && backend.is_plain_tcp();
    let counters = Counters::new(
        &metrics,
        if plain {
            RelayKind::Splice
        } else {
            RelayKind::Copy
        },
    );
    let pending = (!client_pending.is_empty() || !backend_pending.is_empty())
        .then(|| Box::new((client_pending, backend_pending)));
    match (client, backend) {
        (Conn::Plain(c), Conn::Plain(b)) => {
            futures_util::future::Either::Left(plain_legs(c, b, pending, counters))
        }
        (c, b) => futures_util::future::Either::Right(other_legs(c, b, pending, counters)),
    }
}

/// Bytes read from one leg during authentication, for the other.
type Pending = Option<Box<(BytesMut, BytesMut)>>;

async fn plain_legs(
    mut c: tokio::net::TcpStream,
    mut b: tokio::net::TcpStream,
    pending: Pending,
    counters: Counters,
) -> Result<Totals, RelayError> {
    if let Some(p) = pending {
        send_pending(&mut c, &mut b, *p, &counters).await?;
    }
    splice::relay(&c, &b, &counters).await
}

async fn other_legs(
    mut c: Conn,
    mut b: Conn,
    pending: Pending,
    counters: Counters,
) -> Result<Totals, RelayError> {
    if let Some(p) = pending {
        send_pending(&mut c, &mut b, *p, &counters).await?;
    }
    copy::relay(c, b, &counters).await
}

/// Write what each leg sent early to the other.
async fn send_pending<C, B>(
    client: &mut C,
    backend: &mut B,
    (client_pending, backend_pending): (BytesMut, BytesMut),
    counters: &Counters,
) -> Result<(), RelayError>
where
    C: tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncWrite + Unpin,
{
    if !client_pending.is_empty() {
        backend
            .write_all(&client_pending)
            .await
            .map_err(|e| RelayError::gone(Side::Backend, e))?;
        counters
            .client_to_backend
            .inc_by(client_pending.len() as u64);
    }
    if !backend_pending.is_empty() {
        client
            .write_all(&backend_pending)
            .await
            .map_err(|e| RelayError::gone(Side::Client, e))?;
        counters
            .backend_to_client
            .inc_by(backend_pending.len() as u64);
    }
    Ok(())
}
