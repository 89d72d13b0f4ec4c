//! Lifecycle: the phases a dealer process goes through, and the signals that move it.
//! SIGTERM drains (stop accepting, let sessions finish up to `shutdown.grace`); SIGINT
//! stops at once. SIGHUP is not here: it reloads (see `reload`).

use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    Draining,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Drain up to the grace period.
    Graceful,
    /// Close everything now.
    Immediate,
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signals() -> std::io::Result<Stop> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => Stop::Graceful,
        _ = int.recv() => Stop::Immediate,
    })
}

/// Where one dealer instance is in its life, and the tokens that end its parts: every
/// session task is tracked so shutdown can wait for it.
pub struct Lifecycle {
    /// Every session task, so shutdown can wait for them.
    pub tracker: tokio_util::task::TaskTracker,
    /// Cancelled when shutdown begins: every accept loop, on every thread, stops.
    pub accept_stop: tokio_util::sync::CancellationToken,
    /// Cancelled when sessions must end now (grace period over, or SIGINT).
    pub sessions_stop: tokio_util::sync::CancellationToken,
    phase: tokio::sync::watch::Sender<Phase>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            tracker: tokio_util::task::TaskTracker::new(),
            accept_stop: tokio_util::sync::CancellationToken::new(),
            sessions_stop: tokio_util::sync::CancellationToken::new(),
            phase: tokio::sync::watch::Sender::new(Phase::Running),
        }
    }
}

impl Lifecycle {
    /// Watch the phase (tests and `/readyz` read it).
    pub fn phase(&self) -> tokio::sync::watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn set(&self, p: Phase) {
        self.phase.send_replace(p);
    }

    pub fn current(&self) -> Phase {
        *self.phase.borrow()
    }
}
