//! `limits`, and the bounds every duration and size key has.

use std::time::Duration;

use super::Check;
use crate::config::file::{RawConfig, RawCount};
use crate::config::*;

/// Upper bounds of the duration keys (README, Configuration).
pub const MAX_HANDSHAKE: Duration = Duration::from_secs(600);
/// `limits.backend_connect_timeout`, `health.timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
pub const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(3600);
pub const MAX_GRACE: Duration = Duration::from_secs(3600);

pub(super) fn section(v: &mut Check, raw: &RawConfig) -> Limits {
    let l = &raw.limits;
    let mut bounded = |key: &str, value: Option<u64>, default: u64, min: u64, max: u64| -> usize {
        match value {
            None => default as usize,
            Some(x) if x < min || x > max => {
                v.err(key, format!("must be between {min} and {max}"));
                default as usize
            }
            Some(x) => x as usize,
        }
    };
    let max_header_bytes = bounded(
        "limits.max_header_bytes",
        l.max_header_bytes,
        4096,
        512,
        1 << 20,
    );
    let max_stanza_bytes = bounded(
        "limits.max_stanza_bytes",
        l.max_stanza_bytes,
        262_144,
        1024,
        64 << 20,
    );
    let max_depth = bounded("limits.max_depth", l.max_depth, 32, 4, 1024);
    let max_attributes = bounded("limits.max_attributes", l.max_attributes, 64, 8, 4096);
    let max_failed_logins =
        bounded("limits.max_failed_logins", l.max_failed_logins, 5, 0, 1000) as u32;
    let max_connections = match &l.max_connections {
        None => MaxConnections::Auto,
        Some(RawCount::Word(w)) if w == "auto" => MaxConnections::Auto,
        Some(RawCount::Number(n)) if *n > 0 => MaxConnections::Fixed(*n),
        Some(_) => {
            v.err(
                "limits.max_connections",
                "must be `auto` or a number above zero",
            );
            MaxConnections::Auto
        }
    };
    Limits {
        handshake_timeout: v.duration(
            "limits.handshake_timeout",
            &l.handshake_timeout,
            Duration::from_secs(30),
            MAX_HANDSHAKE,
        ),
        backend_connect_timeout: v.duration(
            "limits.backend_connect_timeout",
            &l.backend_connect_timeout,
            Duration::from_secs(10),
            MAX_TIMEOUT,
        ),
        max_header_bytes,
        max_stanza_bytes,
        max_depth,
        max_attributes,
        max_connections,
        max_connections_per_source: l.max_connections_per_source.unwrap_or(1000),
        logins_per_source_per_second: l.logins_per_source_per_second.unwrap_or(50),
        max_failed_logins,
    }
}

/// A size in bytes between `min` and `max`.
pub(super) fn bytes_key(
    v: &mut Check,
    key: &str,
    value: Option<u64>,
    default: usize,
    min: u64,
    max: u64,
) -> usize {
    match value {
        None => default,
        Some(x) if x < min || x > max => {
            v.err(key, format!("must be between {min} and {max} bytes"));
            default
        }
        Some(x) => usize::try_from(x).unwrap_or(usize::MAX),
    }
}
