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
