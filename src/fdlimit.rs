//! Process-wide limits: the file-descriptor budget that `limits.max_connections`
//! derives from. A forwarded session holds two descriptors (client and backend), and
//! a few are kept back for listeners, logs and the HTTP endpoint.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use crate::config::MaxConnections;

/// Descriptors kept back from sessions: listeners, logs, the HTTP endpoint, and the
/// splice relay's pooled pipes (two descriptors each).
pub const RESERVED_FDS: u64 = 64 + 2 * crate::relay::splice::POOL_MAX as u64;

/// Raise the soft descriptor limit to the hard one; returns the soft limit in force.
pub fn raise_nofile() -> u64 {
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
    nofile().0
}

/// (soft, hard) descriptor limits; `u64::MAX` stands for unlimited.
pub fn nofile() -> (u64, u64) {
    let lim = getrlimit(Resource::Nofile);
    (
        lim.current.unwrap_or(u64::MAX),
        lim.maximum.unwrap_or(u64::MAX),
    )
}

/// Sessions the descriptor limit `fds` allows.
pub fn sessions_for(fds: u64) -> u64 {
    fds.saturating_sub(RESERVED_FDS) / 2
}

/// The connection limit in force for `configured` with `fds` descriptors.
pub fn max_connections(configured: MaxConnections, fds: u64) -> u64 {
    match configured {
        MaxConnections::Auto => sessions_for(fds).max(1),
        MaxConnections::Fixed(n) => n,
    }
}

/// A warning when a fixed `max_connections` cannot be met even at the hard limit.
pub fn check(configured: MaxConnections, hard: u64) -> Option<String> {
    match configured {
        MaxConnections::Fixed(n) if n > sessions_for(hard) => Some(format!(
            "limits.max_connections: {n} sessions need {} descriptors, but the hard limit is {hard} \
             (at most {} sessions); raise `ulimit -Hn` or lower the limit",
            n.saturating_mul(2).saturating_add(RESERVED_FDS),
            sessions_for(hard)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget() {
        assert_eq!(max_connections(MaxConnections::Auto, 20_000), 9_904);
        assert_eq!(max_connections(MaxConnections::Auto, 10), 1);
        assert_eq!(max_connections(MaxConnections::Fixed(5), 10), 5);
        assert!(check(MaxConnections::Fixed(20_000), 20_000).is_some());
        assert!(check(MaxConnections::Fixed(9_000), 20_000).is_none());
        assert!(check(MaxConnections::Auto, 100).is_none());
    }
}
