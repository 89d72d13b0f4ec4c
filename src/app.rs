//! The running proxy: state every task shares, and `run`, which takes bound listeners,
//! the shared state and a stop future, so tests start dealer in-process on port 0.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Listener;
use crate::health::HealthRegistry;
use crate::listener::{ConnLimits, Kind, accept_loop};
use crate::metrics::Metrics;
use crate::shutdown::{Phase, Stop};
use crate::snapshot::Snapshot;
use crate::tls::ServerTls;

/// State shared by every task of one dealer instance.
pub struct Shared {
    /// The live configuration; replaced whole by a reload, never edited.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Metrics,
    /// Where SIGHUP re-reads the configuration from.
    pub config_path: Option<PathBuf>,
    /// Backend health, shared by every snapshot.
    pub health: HealthRegistry,
    /// Server TLS configs; their certificate follows the live snapshot.
    pub server_tls: ServerTls,
    pub backend_tls: Arc<rustls::ClientConfig>,
    pub s2s_tls: Arc<rustls::ClientConfig>,
    pub s2s: crate::s2s::S2s,
    pub conn_limits: Arc<ConnLimits>,
    /// Every session task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when shutdown begins: every accept loop, on every thread, stops.
    pub accept_stop: CancellationToken,
    /// Cancelled when sessions must end now (grace period over, or SIGINT).
    pub sessions_stop: CancellationToken,
    /// Relayed sessions, for shutdown and re-dealing.
    pub sessions: crate::sessions::Sessions,
    /// Reloads run one at a time, so generations are handed out in order.
    pub(crate) reload_lock: Mutex<()>,
    phase: tokio::sync::watch::Sender<Phase>,
}

impl Shared {
    /// `snapshot` must have been built with `health`.
    pub fn new(
        snapshot: Snapshot,
        health: HealthRegistry,
        config_path: Option<PathBuf>,
    ) -> Arc<Shared> {
        let metrics = Metrics::new();
        metrics.config_generation.set(snapshot.generation as i64);
        metrics.init_backends(&snapshot.config);
        let fds = crate::limits::nofile().0;
        let max = crate::limits::max_connections(snapshot.config.limits.max_connections, fds);
        let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        let shared = Arc::new(Shared {
            server_tls: ServerTls::new(snapshot.clone()),
            backend_tls: crate::tls::backend_client_config(),
            s2s_tls: crate::tls::s2s_client_config(),
            s2s: crate::s2s::S2s::default(),
            snapshot,
            metrics,
            config_path,
            health,
            conn_limits: ConnLimits::new(max),
            tracker: TaskTracker::new(),
            accept_stop: CancellationToken::new(),
            sessions_stop: CancellationToken::new(),
            sessions: crate::sessions::Sessions::default(),
            reload_lock: Mutex::new(()),
            phase: tokio::sync::watch::Sender::new(Phase::Running),
        });
        shared.publish_health();
        shared
    }

    /// Set `dealer_backend_up` for the live snapshot's backends.
    pub fn publish_health(&self) {
        let snap = self.snapshot.load();
        for (id, b) in snap.config.backends.iter().enumerate() {
            self.metrics
                .backend_up
                .with_label_values(&[&b.name])
                .set(i64::from(snap.is_up(id)));
        }
    }

    /// Whether dealer can take clients now (for `/readyz`).
    pub fn ready(&self) -> Result<(), &'static str> {
        match *self.phase.borrow() {
            Phase::Running => {}
            Phase::Draining | Phase::Stopped => return Err("shutting down"),
        }
        let snap = self.snapshot.load();
        if (0..snap.config.backends.len()).any(|id| snap.is_up(id)) {
            Ok(())
        } else {
            Err("no backend is up")
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
    pub c2s: Vec<(TcpListener, Listener)>,
    pub c2s_tls: Vec<(TcpListener, Listener)>,
    pub s2s: Vec<(TcpListener, Listener)>,
    pub s2s_internal: Vec<(TcpListener, Listener)>,
    pub http: Option<TcpListener>,
}

async fn bind(key: &str, l: &Listener) -> std::io::Result<(TcpListener, Listener)> {
    let sock = match l.addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    // Accepted sockets inherit these on Linux: set once here, not per connection.
    crate::net::tune_socket(&socket2::SockRef::from(&sock));
    sock.bind(l.addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{key} {}: {e}", l.addr)))?;
    Ok((sock.listen(1024)?, *l))
}

impl Listeners {
    /// Bind every listener the snapshot's config names.
    pub async fn bind(snap: &Snapshot) -> std::io::Result<Listeners> {
        let mut out = Self::bind_sessions(snap).await?;
        if let Some(addr) = snap.config.listen.http {
            out.http =
                Some(TcpListener::bind(addr).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("listen.http {addr}: {e}"))
                })?);
        }
        Ok(out)
    }

    /// Duplicates of the c2s and s2s listening sockets (not `http`), for another
    /// worker thread's runtime to adopt: every thread accepts on the same sockets, so
    /// no second process can bind beside dealer and take a share of its clients (as
    /// `SO_REUSEPORT` would allow).
    pub fn duplicate(&self) -> std::io::Result<Duplicates> {
        let dup = |list: &Vec<(TcpListener, Listener)>| -> std::io::Result<Vec<(std::net::TcpListener, Listener)>> {
            list.iter()
                .map(|(l, cfg)| Ok((socket2::SockRef::from(l).try_clone()?.into(), *cfg)))
                .collect()
        };
        Ok(Duplicates {
            c2s: dup(&self.c2s)?,
            c2s_tls: dup(&self.c2s_tls)?,
            s2s: dup(&self.s2s)?,
            s2s_internal: dup(&self.s2s_internal)?,
        })
    }

    /// The c2s and s2s listeners only.
    async fn bind_sessions(snap: &Snapshot) -> std::io::Result<Listeners> {
        let l = &snap.config.listen;
        let mut out = Listeners::default();
        for x in &l.c2s {
            out.c2s.push(bind("listen.c2s", x).await?);
        }
        for x in &l.c2s_tls {
            out.c2s_tls.push(bind("listen.c2s_tls", x).await?);
        }
        for x in &l.s2s {
            out.s2s.push(bind("listen.s2s", x).await?);
        }
        for x in &l.s2s_internal {
            out.s2s_internal.push(bind("listen.s2s_internal", x).await?);
        }
        Ok(out)
    }
}

/// Listening sockets duplicated for another runtime (`Listeners::duplicate`).
pub struct Duplicates {
    c2s: Vec<(std::net::TcpListener, Listener)>,
    c2s_tls: Vec<(std::net::TcpListener, Listener)>,
    s2s: Vec<(std::net::TcpListener, Listener)>,
    s2s_internal: Vec<(std::net::TcpListener, Listener)>,
}

impl Duplicates {
    /// Register the sockets with the current runtime.
    fn adopt(self) -> std::io::Result<Listeners> {
        let adopt = |list: Vec<(std::net::TcpListener, Listener)>| -> std::io::Result<Vec<(TcpListener, Listener)>> {
            list.into_iter()
                .map(|(l, cfg)| {
                    l.set_nonblocking(true)?;
                    Ok((TcpListener::from_std(l)?, cfg))
                })
                .collect()
        };
        Ok(Listeners {
            c2s: adopt(self.c2s)?,
            c2s_tls: adopt(self.c2s_tls)?,
            s2s: adopt(self.s2s)?,
            s2s_internal: adopt(self.s2s_internal)?,
            http: None,
        })
    }
}

/// Run until `stop` resolves, then drain and return.
pub async fn run(mut listeners: Listeners, shared: Arc<Shared>, stop: impl Future<Output = Stop>) {
    let background_stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = listeners.http.take() {
        if let Ok(addr) = l.local_addr() {
            info!(listen.addr = %addr, "http endpoint up");
        }
        tasks.spawn(crate::metrics::http::serve(
            l,
            shared.clone(),
            background_stop.clone(),
        ));
    }
    spawn_accept_loops(listeners, &shared, &mut tasks, true);
    tasks.spawn(crate::reload::on_sighup(
        shared.clone(),
        background_stop.clone(),
    ));
    tasks.spawn(crate::health::run(shared.clone(), background_stop.clone()));

    let how = stop.await;
    info!(?how, "stopping: no new connections");
    shared.phase.send_replace(Phase::Draining);
    shared.accept_stop.cancel();
    shared.tracker.close();
    let grace = shared.snapshot.load().config.shutdown.grace;
    if how == Stop::Graceful && !shared.tracker.is_empty() {
        info!(sessions = shared.tracker.len(), grace = ?grace, "draining sessions");
        // A second SIGTERM or a SIGINT during the drain ends it at once.
        let again = async {
            match crate::shutdown::signals().await {
                Ok(_) => {}
                Err(_) => std::future::pending().await,
            }
        };
        let drained = tokio::select! {
            r = tokio::time::timeout(grace, shared.tracker.wait()) => r.is_ok(),
            _ = again => {
                info!("second signal: closing the rest now");
                true
            }
        };
        if !drained {
            warn!(
                sessions = shared.tracker.len(),
                "grace period over: closing the rest"
            );
        }
    }
    shared.sessions_stop.cancel();
    // Sessions watch `sessions_stop`; give them a moment to close their sockets.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), shared.tracker.wait()).await;
    shared.phase.send_replace(Phase::Stopped);
    background_stop.cancel();
    while tasks.join_next().await.is_some() {}
}

/// Start an accept loop for every c2s and s2s listener in `listeners` on the current
/// runtime; they stop with `shared.accept_stop`. Every worker thread accepts on the
/// same sockets: only the main thread (`report`) says where dealer listens, once.
fn spawn_accept_loops(
    listeners: Listeners,
    shared: &Arc<Shared>,
    tasks: &mut tokio::task::JoinSet<()>,
    report: bool,
) {
    let log = |kind: Kind, l: &TcpListener| {
        if !report {
            return;
        }
        if let Ok(addr) = l.local_addr() {
            info!(listener = kind.label(), listen.addr = %addr, "listening");
        }
    };
    for (kind, list) in [
        (Kind::C2s, listeners.c2s),
        (Kind::C2sTls, listeners.c2s_tls),
        (Kind::S2s, listeners.s2s),
        (Kind::S2sInternal, listeners.s2s_internal),
    ] {
        for (l, cfg) in list {
            log(kind, &l);
            let (shared, stop) = (shared.clone(), shared.accept_stop.clone());
            match kind {
                Kind::C2s | Kind::C2sTls => {
                    tasks.spawn(accept_loop(l, kind, cfg, shared, stop, crate::c2s::serve))
                }
                Kind::S2s | Kind::S2sInternal => tasks.spawn(accept_loop(
                    l,
                    kind,
                    cfg,
                    shared,
                    stop,
                    crate::s2s::accept::serve,
                )),
            };
        }
    }
}

/// One more worker thread: its own single-threaded runtime accepting on `listeners`
/// (duplicates of the main thread's sockets: whichever thread is free takes the next
/// connection) and running the sessions it accepts, until dealer has stopped. A
/// session stays on the thread that accepted it, so its wake-ups never cross threads.
pub fn spawn_worker(
    shared: Arc<Shared>,
    index: usize,
    listeners: Duplicates,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listeners = {
        let _in_runtime = rt.enter();
        listeners.adopt()?
    };
    std::thread::Builder::new()
        .name(format!("dealer-worker-{index}"))
        .spawn(move || {
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                spawn_accept_loops(listeners, &shared, &mut tasks, false);
                let mut phase = shared.phase();
                while *phase.borrow_and_update() != Phase::Stopped {
                    if phase.changed().await.is_err() {
                        break;
                    }
                }
                while tasks.join_next().await.is_some() {}
            })
        })
}
