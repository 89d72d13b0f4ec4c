//! `health` (checks and fallback) and `shutdown`.

use std::time::Duration;

use super::Check;
use super::limits::{MAX_GRACE, MAX_HEALTH_INTERVAL, MAX_TIMEOUT};
use crate::config::file::RawConfig;
use crate::config::*;

pub(super) fn section(
    v: &mut Check,
    raw: &RawConfig,
    routing: &Routing,
    domains: Domains,
) -> (Health, Shutdown) {
    let fallback_default = routing.strategy == Strategy::Hash && domains == Domains::Shared;
    if raw.health.fallback == Some(true) && !fallback_default {
        v.err(
            "health.fallback",
            "only `strategy: hash` with `domains: shared` can move a user to another backend: \
             with ranges or masked domains the user's data lives on its owner",
        );
    }
    let health = Health {
        interval: v.duration(
            "health.interval",
            &raw.health.interval,
            Duration::from_secs(5),
            MAX_HEALTH_INTERVAL,
        ),
        timeout: v.duration(
            "health.timeout",
            &raw.health.timeout,
            Duration::from_secs(2),
            MAX_TIMEOUT,
        ),
        rise: positive(v, "health.rise", raw.health.rise, 2),
        fall: positive(v, "health.fall", raw.health.fall, 3),
        fallback: raw.health.fallback.unwrap_or(fallback_default),
    };
    if health.timeout > health.interval {
        v.err("health.timeout", "must not be longer than health.interval");
    }
    let shutdown = Shutdown {
        grace: v.duration(
            "shutdown.grace",
            &raw.shutdown.grace,
            Duration::from_secs(30),
            MAX_GRACE,
        ),
    };

    (health, shutdown)
}

fn positive(v: &mut Check, key: &str, value: Option<u32>, default: u32) -> u32 {
    match value {
        Some(0) => {
            v.err(key, "must be at least 1");
            default
        }
        Some(x) => x,
        None => default,
    }
}
