//! `c2s`: mode, mechanisms, legacy auth, registration, the anonymous backend, warm
//! backend streams.

use std::time::Duration;

use super::{Check, Names};
use crate::config::file::RawConfig;
use crate::config::*;

pub(super) fn section(
    v: &mut Check,
    raw: &RawConfig,
    names: &Names<'_>,
    c2s_mode: C2sMode,
    default_starttls: StartTls,
) -> C2s {
    let mechanisms = mechanisms(v, raw.c2s.mechanisms.as_deref(), c2s_mode);
    let anonymous_backend = raw
        .c2s
        .anonymous_backend
        .as_deref()
        .and_then(|s| names.find(v, "c2s.anonymous_backend", s));
    if mechanisms.contains(&Mechanism::Anonymous) && raw.c2s.anonymous_backend.is_none() {
        v.err(
            "c2s.anonymous_backend",
            "required when c2s.mechanisms lists ANONYMOUS",
        );
    }
    C2s {
        mode: c2s_mode,
        starttls: default_starttls,
        mechanisms,
        legacy_auth: raw.c2s.legacy_auth.unwrap_or(false),
        registration: raw.c2s.registration.unwrap_or(false),
        anonymous_backend,
        warm: warm(v, raw),
    }
}

/// `c2s.warm_streams` (the most a pool keeps, default 8; 0 turns warm streams off) and
/// `c2s.warm_max_age` (default 15 s: under the unauthenticated-stream timeouts of common
/// servers, with room to spare: ejabberd's `negotiation_timeout` is 30 s, Prosody's
/// `c2s_timeout` 300 s).
fn warm(v: &mut Check, raw: &RawConfig) -> Warm {
    let streams = match raw.c2s.warm_streams {
        None => DEFAULT_WARM_STREAMS,
        Some(n) if n > MAX_WARM_STREAMS => {
            v.err(
                "c2s.warm_streams",
                format!("{n} is more than the most allowed ({MAX_WARM_STREAMS})"),
            );
            DEFAULT_WARM_STREAMS
        }
        Some(n) => n as usize,
    };
    let max_age = v.duration(
        "c2s.warm_max_age",
        &raw.c2s.warm_max_age,
        Duration::from_secs(15),
        Duration::from_secs(3600),
    );
    if max_age.is_zero() {
        v.err("c2s.warm_max_age", "must be longer than zero");
    }
    Warm { streams, max_age }
}

const DEFAULT_WARM_STREAMS: usize = 8;
const MAX_WARM_STREAMS: u64 = 64;

fn mechanisms(v: &mut Check, raw: Option<&[String]>, mode: C2sMode) -> Vec<Mechanism> {
    let Some(raw) = raw else {
        return vec![Mechanism::ScramSha1, Mechanism::Plain];
    };
    let mut out = Vec::new();
    for (i, name) in raw.iter().enumerate() {
        let key = format!("c2s.mechanisms[{i}]");
        let upper = name.to_ascii_uppercase();
        match Mechanism::from_name(&upper) {
            Some(m) if out.contains(&m) => v.err(key, format!("`{name}` is listed twice")),
            Some(m) => out.push(m),
            None if upper.ends_with("-PLUS") => v.err(
                key,
                format!("`{name}`: channel binding cannot work, TLS ends at dealer, not at the backend"),
            ),
            None if upper == "EXTERNAL" || upper == "DIGEST-MD5" => v.err(
                key,
                format!(
                    "`{name}` cannot be routed: dealer must read the username from the client's first message{}",
                    if mode == C2sMode::Forward { " and pass it on unchanged" } else { "" }
                ),
            ),
            None => v.err(
                key,
                format!("unknown mechanism `{name}` (expected SCRAM-SHA-256, SCRAM-SHA-1, PLAIN or ANONYMOUS)"),
            ),
        }
    }
    if raw.is_empty() {
        v.err("c2s.mechanisms", "at least one mechanism is required");
    }
    out
}
