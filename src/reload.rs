//! SIGHUP: re-read the file, validate it, build a complete snapshot, then publish it
//! with one `ArcSwap::store`. A file that fails anywhere leaves the running snapshot in
//! place, is logged with every problem, and counts as `result="error"`; a reload never
//! panics the process. Sessions that loaded the old snapshot keep it until they finish.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::checks::Checker;
use crate::config::ConfigErrors;
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::snapshot::{HealthRegistry, Live, Snapshot};

/// What a reload touches: the file, the live snapshot, the health state it shares
/// with its successor, metrics, and the relayed sessions (for re-dealing).
pub struct Reloader {
    /// Where SIGHUP re-reads the configuration from.
    pub path: Option<std::path::PathBuf>,
    pub snapshot: Live,
    pub health: Arc<HealthRegistry>,
    pub metrics: Arc<Metrics>,
    pub sessions: Arc<Sessions>,
    pub checker: Arc<Checker>,
    pub notifier: Arc<crate::systemd::Notifier>,
    /// Reloads run one at a time, so generations are handed out in order.
    pub lock: std::sync::Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration file to reload from")]
    NoFile,
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
    #[error("reload task failed: {0}")]
    Task(String),
}

/// Reload synchronously (the routing table build is CPU work; call from a blocking
/// thread). Returns the new generation.
pub fn reload_now(r: &Reloader) -> Result<u64, ReloadError> {
    let Some(path) = r.path.as_deref() else {
        return Err(ReloadError::NoFile);
    };
    // A poisoned lock only means an earlier reload panicked; the data it guards is ().
    let _one_at_a_time = r.lock.lock().unwrap_or_else(|p| p.into_inner());
    let old = r.snapshot.load_full();
    let result = Snapshot::reload(path, &old, &r.health);
    match result {
        Ok(new) => {
            if new.config.listen.c2s != old.config.listen.c2s
                || new.config.listen.c2s_tls != old.config.listen.c2s_tls
                || new.config.listen.s2s != old.config.listen.s2s
                || new.config.listen.s2s_tls != old.config.listen.s2s_tls
                || new.config.listen.s2s_internal != old.config.listen.s2s_internal
                || new.config.listen.http != old.config.listen.http
                || new.config.listen.websocket.len() != old.config.listen.websocket.len()
                || new
                    .config
                    .listen
                    .websocket
                    .iter()
                    .zip(&old.config.listen.websocket)
                    .any(|(a, b)| a.listener != b.listener || a.tls != b.tls)
            {
                warn!("listen.* changed: listeners are bound at start; restart dealer to apply");
            }
            for w in &new.config.warnings {
                warn!(warning = %w, "configuration");
            }
            let generation = new.generation;
            r.snapshot.store(Arc::new(new));
            r.metrics.config_generation.set(generation as i64);
            r.metrics.init_backends(&r.snapshot.load().config);
            r.checker.publish();
            r.metrics.reloaded(crate::metrics::ReloadResult::Ok);
            info!(config.generation = generation, "configuration reloaded");
            let live = r.snapshot.load_full();
            if live.all().any(|s| s.config.routing.redeal_on_reload) {
                let n = r.sessions.redeal(&live);
                r.metrics.redeal_closed.inc_by(n as u64);
                info!(sessions = n, "re-deal: closed sessions whose user moved");
            }
            Ok(generation)
        }
        Err(e) => {
            r.metrics.reloaded(crate::metrics::ReloadResult::Error);
            for problem in &e.0 {
                error!(problem = %problem, "reload rejected; keeping the running configuration");
            }
            Err(e.into())
        }
    }
}

/// Reload off the async threads.
pub async fn reload(r: Arc<Reloader>) -> Result<u64, ReloadError> {
    let counter = r.clone();
    match tokio::task::spawn_blocking(move || reload_now(&r)).await {
        Ok(r) => r,
        Err(e) => {
            counter
                .metrics
                .reloaded(crate::metrics::ReloadResult::Error);
            error!(error = %e, "reload task failed; keeping the running configuration");
            Err(ReloadError::Task(e.to_string()))
        }
    }
}

/// Reload on every SIGHUP until `stop`.
pub async fn on_sighup(r: Arc<Reloader>, stop: CancellationToken) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGHUP; reload is unavailable");
            return;
        }
    };
    loop {
        tokio::select! {
            r = hup.recv() => if r.is_none() { return },
            _ = stop.cancelled() => return,
        }
        info!("SIGHUP: reloading configuration");
        r.notifier.reloading();
        let _ = reload(r.clone()).await;
        // Ready again, on the new configuration or (a bad file) the old one.
        r.notifier.ready();
    }
}
