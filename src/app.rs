//! The running proxy: state every task shares, and `run`, which takes bound listeners,
//! the shared state and a stop future, so tests start dealer in-process on port 0.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::metrics::Metrics;
use crate::shutdown::{Phase, Stop};
use crate::snapshot::Snapshot;

/// State shared by every task of one dealer instance.
pub struct Shared {
    /// The live configuration; replaced whole by a reload, never edited.
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// Where SIGHUP re-reads the configuration from.
    pub config_path: Option<PathBuf>,
    /// Reloads run one at a time, so generations are handed out in order.
    pub(crate) reload_lock: Mutex<()>,
    phase: tokio::sync::watch::Sender<Phase>,
}

impl Shared {
    pub fn new(snapshot: Snapshot, config_path: Option<PathBuf>) -> Arc<Shared> {
        let metrics = Metrics::new();
        metrics.config_generation.set(snapshot.generation as i64);
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            config_path,
            reload_lock: Mutex::new(()),
            phase: tokio::sync::watch::Sender::new(Phase::Running),
        })
    }

    /// The `/route` and `dealer route` line for `name` against `snap`.
    pub fn route_line(&self, snap: &Snapshot, name: &str, explain: bool) -> Result<String, String> {
        snap.route_line(name, |_| true, explain)
    }

    /// Whether dealer can take clients now (for `/readyz`).
    pub fn ready(&self) -> Result<(), &'static str> {
        match *self.phase.borrow() {
            Phase::Running => Ok(()),
            Phase::Draining | Phase::Stopped => Err("shutting down"),
        }
    }

    /// Watch the lifecycle (tests assert on it).
    pub fn phase(&self) -> tokio::sync::watch::Receiver<Phase> {
        self.phase.subscribe()
    }
}

/// Sockets bound before `run`, by `main` from the config or by a test on port 0.
#[derive(Default)]
pub struct Listeners {
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// Bind every listener the snapshot's config names.
    pub async fn bind(snap: &Snapshot) -> std::io::Result<Listeners> {
        let http =
            match snap.config.listen.http {
                Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("listen.http {addr}: {e}"))
                })?),
                None => None,
            };
        Ok(Listeners { http })
    }
}

/// Run until `stop` resolves, then drain and return.
pub async fn run(listeners: Listeners, shared: Arc<Shared>, stop: impl Future<Output = Stop>) {
    let accept_stop = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = listeners.http {
        if let Ok(addr) = l.local_addr() {
            info!(listen.addr = %addr, "http endpoint up");
        }
        tasks.spawn(crate::metrics::http::serve(
            l,
            shared.clone(),
            http_stop.clone(),
        ));
    }
    tasks.spawn(crate::reload::on_sighup(
        shared.clone(),
        accept_stop.clone(),
    ));

    let how = stop.await;
    info!(?how, "stopping");
    shared.phase.send_replace(Phase::Draining);
    accept_stop.cancel();
    // Sessions drain here once c2s and s2s listeners exist; `how` bounds the wait.
    shared.phase.send_replace(Phase::Stopped);
    http_stop.cancel();
    while tasks.join_next().await.is_some() {}
}
