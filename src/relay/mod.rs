//! After hand-over, bytes flow between client and backend. With `domains: shared`
//! nothing is parsed: `splice` when both legs are plain TCP (small chunks through a
//! pooled buffer, bursts zero-copy through pooled pipes), `copy` when a leg is TLS
//! (pooled buffers, held only while data is in flight). With `domains: masked`, `rewrite` runs both directions through the framer
//! and rewrites JIDs. All handle half-close, count bytes per direction as they go, and
//! end the session when either leg fails.

pub mod copy;
pub mod rewrite;
pub mod splice;

use bytes::BytesMut;
use prometheus::IntCounter;
use tokio::io::AsyncWriteExt;

use crate::metrics::Metrics;
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
    pub fn new(m: &Metrics, kind: &str) -> Counters {
        Counters {
            client_to_backend: m
                .relay_bytes
                .with_label_values(&[kind, "client_to_backend"]),
            backend_to_client: m
                .relay_bytes
                .with_label_values(&[kind, "backend_to_client"]),
            spliced: m.relay_spliced_bytes.clone(),
        }
    }
}

/// How a relay ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub client_to_backend: u64,
    pub backend_to_client: u64,
}

/// Relay until both directions end or one fails. `*_pending` are bytes already read
/// from one leg (during authentication) that the other leg has not seen yet.
pub async fn run(
    mut client: Conn,
    client_pending: BytesMut,
    mut backend: Conn,
    backend_pending: BytesMut,
    metrics: &Metrics,
) -> std::io::Result<Totals> {
    let plain = !client.is_tls() && !backend.is_tls();
    let counters = Counters::new(metrics, if plain { "splice" } else { "copy" });
    if !client_pending.is_empty() {
        backend.write_all(&client_pending).await?;
        counters
            .client_to_backend
            .inc_by(client_pending.len() as u64);
    }
    if !backend_pending.is_empty() {
        client.write_all(&backend_pending).await?;
        counters
            .backend_to_client
            .inc_by(backend_pending.len() as u64);
    }
    drop((client_pending, backend_pending));
    match (client, backend) {
        (Conn::Plain(c), Conn::Plain(b)) => splice::relay(&c, &b, &counters).await,
        (c, b) => copy::relay(c, b, &counters).await,
    }
}
