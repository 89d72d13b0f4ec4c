//! The running proxy, assembled: each part gets only what it uses (c2s and s2s their
//! contexts, the health checks theirs, the reloader and the HTTP endpoint theirs),
//! and `run` drives them from bound listeners and a stop future. `start` is the whole
//! of `dealer --config FILE`: bind, one single-threaded runtime per CPU, run until a
//! signal. The integration tests run the binary itself, on free loopback ports.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checks::Checker;
use crate::config::Listener;
use crate::listener::{ConnLimits, Gate, Kind, accept_loop};
use crate::metrics::Metrics;
use crate::metrics::http::Endpoint;
use crate::reload::Reloader;
use crate::sessions::Sessions;
use crate::shutdown::{Lifecycle, Phase, Stop};
use crate::snapshot::{HealthRegistry, Live, Snapshot};
use crate::tls::ServerTls;

/// One dealer instance: the parts `run` starts, each holding its own share of the
/// state (nothing here is handed to sessions whole).
pub struct Dealer {
    pub snapshot: Live,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Arc<Lifecycle>,
    pub c2s: Arc<crate::c2s::Context>,
    pub s2s: Arc<crate::s2s::Context>,
    pub checker: Arc<Checker>,
    pub reloader: Arc<Reloader>,
    pub endpoint: Arc<Endpoint>,
    /// The service manager, told when dealer is ready, reloading, stopping.
    pub notifier: Arc<crate::systemd::Notifier>,
    gate: Arc<Gate>,
}

impl Dealer {
    /// Assemble an instance around `snapshot`, which must have been built with
    /// `health`; `config_path` is where SIGHUP re-reads the configuration.
    pub fn new(
        snapshot: Snapshot,
        health: HealthRegistry,
        config_path: Option<PathBuf>,
        notifier: Arc<crate::systemd::Notifier>,
    ) -> Arc<Dealer> {
        let metrics = Arc::new(Metrics::new());
        metrics.config_generation.set(snapshot.generation as i64);
        metrics.init_backends(&snapshot.config);
        let fds = crate::fdlimit::nofile().0;
        let max = crate::fdlimit::max_connections(snapshot.config.limits.max_connections, fds);
        let snapshot: Live = Arc::new(ArcSwap::from_pointee(snapshot));
        let lifecycle = Arc::new(Lifecycle::default());
        let conn_limits = ConnLimits::new(max);
        let live = snapshot.clone();
        let server_tls = ServerTls::new(Arc::new(move |sni: Option<&str>| {
            let snap = live.load();
            sni.and_then(|name| snap.serving(&crate::jid::domain_key(name)))
                .and_then(|s| s.tls_key.clone())
                .or_else(|| snap.tls_key.clone())
        }));
        let backend_tls = crate::tls::backend_client_config();
        let sessions = Arc::new(Sessions::default());
        let checker = Arc::new(Checker {
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
            backend_tls: backend_tls.clone(),
        });
        let dealer = Dealer {
            c2s: Arc::new(crate::c2s::Context {
                snapshot: snapshot.clone(),
                metrics: metrics.clone(),
                conn_limits: conn_limits.clone(),
                server_tls: server_tls.clone(),
                backend_tls,
                sessions: sessions.clone(),
                lifecycle: lifecycle.clone(),
            }),
            s2s: Arc::new(crate::s2s::Context::new(
                snapshot.clone(),
                metrics.clone(),
                conn_limits.clone(),
                server_tls,
                lifecycle.clone(),
            )),
            reloader: Arc::new(Reloader {
                path: config_path,
                snapshot: snapshot.clone(),
                health: Arc::new(health),
                metrics: metrics.clone(),
                sessions,
                checker: checker.clone(),
                notifier: notifier.clone(),
                lock: std::sync::Mutex::new(()),
            }),
            endpoint: Arc::new(Endpoint {
                metrics: metrics.clone(),
                snapshot: snapshot.clone(),
                lifecycle: lifecycle.clone(),
            }),
            gate: Arc::new(Gate {
                limits: conn_limits,
                metrics: metrics.clone(),
                snapshot: snapshot.clone(),
                tracker: lifecycle.tracker.clone(),
            }),
            checker,
            snapshot,
            metrics,
            lifecycle,
            notifier,
        };
        dealer.checker.publish();
        Arc::new(dealer)
    }

    /// Watch the lifecycle (tests assert on it).
    pub fn phase(&self) -> tokio::sync::watch::Receiver<Phase> {
        self.lifecycle.phase()
    }
}

/// Sockets bound before `run`, by `main` from the config or by a test on port 0.
#[derive(Default)]
pub struct Listeners {
    pub c2s: Vec<(TcpListener, Listener)>,
    pub c2s_tls: Vec<(TcpListener, Listener)>,
    pub s2s: Vec<(TcpListener, Listener)>,
    pub s2s_tls: Vec<(TcpListener, Listener)>,
    pub s2s_internal: Vec<(TcpListener, Listener)>,
    pub websocket: Vec<(TcpListener, Listener)>,
    pub http: Option<TcpListener>,
}

/// Sockets the service manager passed (socket activation), by address, until taken.
type Passed = Vec<(std::net::SocketAddr, std::net::TcpListener)>;

/// The passed socket for `addr`, ready for this runtime, if there is one.
fn take_passed(
    passed: &mut Passed,
    addr: std::net::SocketAddr,
) -> std::io::Result<Option<TcpListener>> {
    let Some(i) = passed.iter().position(|(a, _)| *a == addr) else {
        return Ok(None);
    };
    let (_, l) = passed.swap_remove(i);
    crate::net::tune_socket(&socket2::SockRef::from(&l));
    l.set_nonblocking(true)?;
    Ok(Some(TcpListener::from_std(l)?))
}

async fn bind(
    key: &str,
    l: &Listener,
    passed: &mut Passed,
) -> std::io::Result<(TcpListener, Listener)> {
    if let Some(t) = take_passed(passed, l.addr)? {
        return Ok((t, *l));
    }
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
        Self::bind_with(snap, &mut Vec::new()).await
    }

    /// Bind every listener the config names, using a socket the service manager
    /// passed where its address equals a listener's (socket activation); what is left
    /// in `passed` matched no listener.
    pub async fn bind_with(snap: &Snapshot, passed: &mut Passed) -> std::io::Result<Listeners> {
        let mut out = Self::bind_sessions(snap, passed).await?;
        if let Some(addr) = snap.config.listen.http {
            out.http = Some(match take_passed(passed, addr)? {
                Some(l) => l,
                None => TcpListener::bind(addr).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("listen.http {addr}: {e}"))
                })?,
            });
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
            s2s_tls: dup(&self.s2s_tls)?,
            s2s_internal: dup(&self.s2s_internal)?,
            websocket: dup(&self.websocket)?,
        })
    }

    /// The c2s and s2s listeners only.
    async fn bind_sessions(snap: &Snapshot, passed: &mut Passed) -> std::io::Result<Listeners> {
        let l = &snap.config.listen;
        let mut out = Listeners::default();
        for x in &l.c2s {
            out.c2s.push(bind("listen.c2s", x, passed).await?);
        }
        for x in &l.c2s_tls {
            out.c2s_tls.push(bind("listen.c2s_tls", x, passed).await?);
        }
        for x in &l.s2s {
            out.s2s.push(bind("listen.s2s", x, passed).await?);
        }
        for x in &l.s2s_tls {
            out.s2s_tls.push(bind("listen.s2s_tls", x, passed).await?);
        }
        for x in &l.s2s_internal {
            out.s2s_internal
                .push(bind("listen.s2s_internal", x, passed).await?);
        }
        for x in &l.websocket {
            out.websocket
                .push(bind("listen.websocket", &x.listener, passed).await?);
        }
        Ok(out)
    }
}

/// Listening sockets duplicated for another runtime (`Listeners::duplicate`).
pub struct Duplicates {
    c2s: Vec<(std::net::TcpListener, Listener)>,
    c2s_tls: Vec<(std::net::TcpListener, Listener)>,
    s2s: Vec<(std::net::TcpListener, Listener)>,
    s2s_tls: Vec<(std::net::TcpListener, Listener)>,
    s2s_internal: Vec<(std::net::TcpListener, Listener)>,
    websocket: Vec<(std::net::TcpListener, Listener)>,
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
            s2s_tls: adopt(self.s2s_tls)?,
            s2s_internal: adopt(self.s2s_internal)?,
            websocket: adopt(self.websocket)?,
            http: None,
        })
    }
}

/// Run until `stop` resolves, then drain and return.
pub async fn run(mut listeners: Listeners, dealer: Arc<Dealer>, stop: impl Future<Output = Stop>) {
    let background_stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(l) = listeners.http.take() {
        if let Ok(addr) = l.local_addr() {
            info!(listen.addr = %addr, "http endpoint up");
        }
        tasks.spawn(crate::metrics::http::serve(
            l,
            dealer.endpoint.clone(),
            background_stop.clone(),
        ));
    }
    spawn_accept_loops(listeners, &dealer, &mut tasks, true);
    tokio::spawn(timer_heartbeat());
    tasks.spawn(crate::reload::on_sighup(
        dealer.reloader.clone(),
        background_stop.clone(),
    ));
    tasks.spawn(crate::checks::run(
        dealer.checker.clone(),
        background_stop.clone(),
    ));

    let how = stop.await;
    info!(?how, "stopping: no new connections");
    let life = &dealer.lifecycle;
    dealer.notifier.stopping();
    life.set(Phase::Draining);
    life.accept_stop.cancel();
    life.tracker.close();
    let grace = dealer.snapshot.load().config.shutdown.grace;
    if how == Stop::Graceful && !life.tracker.is_empty() {
        info!(sessions = life.tracker.len(), grace = ?grace, "draining sessions");
        // A second SIGTERM or a SIGINT during the drain ends it at once.
        let again = async {
            match crate::shutdown::signals().await {
                Ok(_) => {}
                Err(_) => std::future::pending().await,
            }
        };
        let drained = tokio::select! {
            r = tokio::time::timeout(grace, life.tracker.wait()) => r.is_ok(),
            _ = again => {
                info!("second signal: closing the rest now");
                true
            }
        };
        if !drained {
            warn!(
                sessions = life.tracker.len(),
                "grace period over: closing the rest"
            );
        }
    }
    life.sessions_stop.cancel();
    // Sessions watch `sessions_stop`; give them a moment to close their sockets.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), life.tracker.wait()).await;
    life.set(Phase::Stopped);
    background_stop.cancel();
    while tasks.join_next().await.is_some() {}
}

/// Start an accept loop for every c2s and s2s listener in `listeners` on the current
/// runtime; they stop with the lifecycle's `accept_stop`. Every worker thread accepts
/// on the same sockets: only the main thread (`report`) says where dealer listens, once.
fn spawn_accept_loops(
    listeners: Listeners,
    dealer: &Arc<Dealer>,
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
        (Kind::S2sTls, listeners.s2s_tls),
        (Kind::S2sInternal, listeners.s2s_internal),
        (Kind::Websocket, listeners.websocket),
    ] {
        for (l, cfg) in list {
            log(kind, &l);
            let (gate, stop) = (dealer.gate.clone(), dealer.lifecycle.accept_stop.clone());
            match kind {
                Kind::C2s | Kind::C2sTls | Kind::Websocket => {
                    let ctx = dealer.c2s.clone();
                    tasks.spawn(accept_loop(l, kind, cfg, gate, stop, move |a| {
                        crate::c2s::serve(a, ctx.clone())
                    }))
                }
                Kind::S2s | Kind::S2sTls | Kind::S2sInternal => {
                    let ctx = dealer.s2s.clone();
                    tasks.spawn(accept_loop(l, kind, cfg, gate, stop, move |a| {
                        crate::s2s::accept::serve(a, ctx.clone())
                    }))
                }
            };
        }
    }
}

/// Keep a timer due within `HEARTBEAT` on this thread's runtime, for as long as the
/// runtime runs. Tokio wakes its driver (an eventfd write, and one more turn of the
/// poll loop) whenever a timer is set earlier than the one the driver sleeps toward;
/// without a near timer, every login's connect and handshake timeouts would be that
/// earliest one. With it, only timers shorter than the beat cost a wake-up, and the
/// runtime turns over four times a second when idle.
async fn timer_heartbeat() {
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        beat.tick().await;
    }
}

const HEARTBEAT: std::time::Duration = std::time::Duration::from_millis(250);

/// One more worker thread: its own single-threaded runtime accepting on `listeners`
/// (duplicates of the main thread's sockets: whichever thread is free takes the next
/// connection) and running the sessions it accepts, until dealer has stopped. A
/// session stays on the thread that accepted it, so its wake-ups never cross threads.
pub fn spawn_worker(
    dealer: Arc<Dealer>,
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
                spawn_accept_loops(listeners, &dealer, &mut tasks, false);
                tokio::spawn(timer_heartbeat());
                let mut phase = dealer.phase();
                while *phase.borrow_and_update() != Phase::Stopped {
                    if phase.changed().await.is_err() {
                        break;
                    }
                }
                while tasks.join_next().await.is_some() {}
            })
        })
}

/// Why `dealer --config FILE` could not run.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}: {}", .path.display(), .errors)]
    Config {
        path: PathBuf,
        errors: crate::config::ConfigErrors,
    },
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("binding listeners: {0}")]
    Bind(std::io::Error),
    #[error("starting a worker thread: {0}")]
    Worker(std::io::Error),
    #[error("{0}")]
    Activation(#[from] crate::systemd::ActivationError),
}

/// `dealer --config FILE`: load and check the file, raise the descriptor limit, bind
/// every listener, learn the backends' features, then run one single-threaded runtime
/// per CPU — this thread and one worker per further CPU, all accepting on the same
/// sockets, so a session's wake-ups stay on one thread — until SIGTERM or SIGINT.
pub fn start(path: PathBuf) -> Result<(), StartError> {
    let health = HealthRegistry::default();
    let snap = Snapshot::load(&path, 1, &health).map_err(|errors| StartError::Config {
        path: path.clone(),
        errors,
    })?;
    for w in &snap.config.warnings {
        warn!(warning = %w, "configuration");
    }
    let fds = crate::fdlimit::raise_nofile();
    info!(
        nofile = fds,
        max_connections = crate::fdlimit::max_connections(snap.config.limits.max_connections, fds),
        "descriptor budget"
    );
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let mut passed = crate::systemd::passed_listeners()?;
    let notifier = Arc::new(crate::systemd::Notifier::from_env());
    let (listeners, dealer) = rt.block_on(async {
        let listeners = Listeners::bind_with(&snap, &mut passed)
            .await
            .map_err(StartError::Bind)?;
        if let Some((addr, _)) = passed.first() {
            return Err(crate::systemd::ActivationError::Unmatched(*addr).into());
        }
        let dealer = Dealer::new(snap, health, Some(path), notifier);
        // Learn the backends' mechanisms before the first client asks for features.
        crate::checks::check_all(&dealer.checker).await;
        Ok::<_, StartError>((listeners, dealer))
    })?;
    let mut workers = Vec::new();
    for i in 1..threads {
        let dup = listeners.duplicate().map_err(StartError::Bind)?;
        workers.push(spawn_worker(dealer.clone(), i, dup).map_err(StartError::Worker)?);
    }
    rt.block_on(async move {
        let stop = async {
            match crate::shutdown::signals().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM/SIGINT");
                    std::future::pending().await
                }
            }
        };
        info!(threads, "dealer running");
        dealer.notifier.ready();
        run(listeners, dealer, stop).await;
    });
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}
