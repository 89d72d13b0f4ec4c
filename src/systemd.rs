//! The service manager's two protocols, for running under systemd (dist/): the
//! readiness notifications of sd_notify(3) — datagrams to `$NOTIFY_SOCKET` — and the
//! listening sockets of socket activation (`LISTEN_FDS`, from descriptor 3, for this
//! process when `LISTEN_PID` names it). Both are no-ops when the variables are absent.

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;

/// Sends `READY=1`, `RELOADING=1`, `STOPPING=1` to the service manager, if any.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`: a path, or `@name` for Linux's abstract namespace.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        Notifier { socket }
    }

    /// A notifier that sends nothing.
    pub fn none() -> Notifier {
        Notifier { socket: None }
    }

    fn send(&self, message: &str) {
        if let Some((s, addr)) = &self.socket
            && let Err(e) = s.send_to_addr(message.as_bytes(), addr)
        {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }

    /// Listeners bound, first health round done.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=running");
    }

    /// A reload began (systemd 252 wants the monotonic clock with it).
    pub fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// Draining: no new connections.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation: descriptor {fd}: {error}")]
    Fd { fd: usize, error: io::Error },
    #[error(
        "socket activation: the passed socket {0} matches no configured listener (systemd would hold that port unused)"
    )]
    Unmatched(SocketAddr),
}

/// The listening sockets the service manager passed to this process, with their
/// addresses; empty unless `LISTEN_PID` is this process.
pub fn passed_listeners() -> Result<Vec<(SocketAddr, std::net::TcpListener)>, ActivationError> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    if !for_us {
        return Ok(Vec::new());
    }
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for idx in 0..fds.len() {
        let l = fds
            .take_tcp_listener(idx)
            .map_err(|error| ActivationError::Fd { fd: 3 + idx, error })?;
        let Some(l) = l else { continue };
        let addr = l
            .local_addr()
            .map_err(|error| ActivationError::Fd { fd: 3 + idx, error })?;
        out.push((addr, l));
    }
    Ok(out)
}
