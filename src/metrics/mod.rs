//! Prometheus metrics: an owned registry per dealer instance (several can run in one
//! test process), every name from `names`, label values known in advance set to zero
//! at start so that rates and alerts work from the first scrape.

pub mod http;
pub mod names;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::{Config, Mechanism};

/// Listener kinds, the `listener` label.
pub const LISTENERS: [&str; 4] = ["c2s", "c2s_tls", "s2s", "s2s_internal"];
/// Session states, the `state` label of `dealer_connections`.
pub const STATES: [&str; 3] = ["handshake", "authenticating", "relaying"];
/// What a client authenticated with, the `mechanism` label of auth peeks.
pub const PEEK_KINDS: [&str; 6] = [
    "PLAIN",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "ANONYMOUS",
    "iq-auth",
    "register",
];
pub const OUTCOMES: [&str; 3] = ["redirect", "forward", "error"];
/// Limits of DESIGN.md §6, the `limit` label.
pub const LIMITS: [&str; 11] = [
    "header_bytes",
    "stanza_bytes",
    "depth",
    "attributes",
    "handshake_timeout",
    "connections",
    "connections_per_source",
    "logins_per_source",
    "s2s_internal_allow",
    "failed_logins",
    "s2s_queue_bytes",
];
/// Stream error conditions dealer sends.
pub const CONDITIONS: [&str; 18] = [
    "bad-format",
    "connection-timeout",
    "host-unknown",
    "improper-addressing",
    "internal-server-error",
    "invalid-from",
    "invalid-namespace",
    "not-authorized",
    "not-well-formed",
    "policy-violation",
    "remote-connection-failed",
    "resource-constraint",
    "restricted-xml",
    "see-other-host",
    "system-shutdown",
    "unsupported-encoding",
    "unsupported-stanza-type",
    "unsupported-version",
];

/// Why dealer ended a session without a stream error: the `reason` label of
/// `dealer_session_drops_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Bytes other than whitespace between `<starttls/>` and the TLS handshake.
    StarttlsPipelined,
    /// The TLS handshake failed (or took longer than the handshake deadline).
    TlsHandshake,
    /// `limits.max_connections` reached on a Direct TLS listener.
    Connections,
    /// `limits.max_connections_per_source` reached on a Direct TLS listener.
    ConnectionsPerSource,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::StarttlsPipelined,
        DropReason::TlsHandshake,
        DropReason::Connections,
        DropReason::ConnectionsPerSource,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::StarttlsPipelined => "starttls_pipelined",
            DropReason::TlsHandshake => "tls_handshake",
            DropReason::Connections => "connections",
            DropReason::ConnectionsPerSource => "connections_per_source",
        }
    }
}

/// Lines a second that `Metrics::dropped` logs at most; the rest are counted only,
/// and the next line says how many were left out (a slowloris must not flood the log).
const DROP_LOG_PER_SECOND: u32 = 10;

pub struct Metrics {
    registry: Registry,
    /// `(window start, lines logged in it, lines left out since the last one logged)`.
    drop_log: std::sync::Mutex<(std::time::Instant, u32, u64)>,
    /// Sessions dealer ended without a stream error: `reason`.
    pub session_drops: IntCounterVec,
    /// Generation of the live config snapshot: 1 at start, +1 per successful reload.
    pub config_generation: IntGauge,
    /// `result` = `ok` | `error`.
    pub config_reloads: IntCounterVec,
    /// `listener`.
    pub connections_accepted: IntCounterVec,
    /// Open connections: `listener`, `state`.
    pub connections: IntGaugeVec,
    /// From accept to the routing decision: `listener`.
    pub handshake_duration: HistogramVec,
    /// `mechanism`.
    pub auth_peeks: IntCounterVec,
    /// `backend`, `outcome` (redirect | forward | error).
    pub routing_decisions: IntCounterVec,
    /// `limit`.
    pub limit_hits: IntCounterVec,
    /// Stream errors dealer sent: `condition`.
    pub stream_errors: IntCounterVec,
    /// 1 when the backend counts as up: `backend`.
    pub backend_up: IntGaugeVec,
    /// `backend`, `result` (ok | failed).
    pub health_checks: IntCounterVec,
    /// `backend`, `result` (success | failure | unreachable).
    pub auth_results: IntCounterVec,
    /// Connect plus stream open to a backend at login: `backend`.
    pub backend_connect_duration: HistogramVec,
    /// Bytes relayed after hand-over: `kind` (splice | copy | rewrite), `direction`.
    pub relay_bytes: IntCounterVec,
    /// Open s2s streams: `direction` (in | out | internal).
    pub s2s_streams: IntGaugeVec,
    /// s2s stanzas: `direction` (in: to backends, out: to the federation), `result`
    /// (routed | masked | bounced | dropped | rejected; masked counts the stanzas whose
    /// JIDs were rewritten, which are also routed).
    pub s2s_stanzas: IntCounterVec,
    /// Bytes of stanzas waiting in s2s link queues (bounded by `s2s.queue_bytes`).
    pub s2s_queued_bytes: IntGauge,
    /// Sessions closed by a re-deal because their user moved to another backend.
    pub redeal_closed: prometheus::IntCounter,
    /// Of the `splice` relay's bytes, those moved by splice(2) (bursts) rather than
    /// through its small copy buffer (interactive traffic).
    pub relay_spliced_bytes: prometheus::IntCounter,
}

pub const S2S_DIRECTIONS: [&str; 3] = ["in", "out", "internal"];
pub const S2S_RESULTS: [&str; 5] = ["routed", "masked", "bounced", "dropped", "rejected"];

/// Relay kinds and directions, the labels of `dealer_relay_bytes_total`.
pub const RELAY_KINDS: [&str; 3] = ["splice", "copy", "rewrite"];
pub const DIRECTIONS: [&str; 2] = ["client_to_backend", "backend_to_client"];
pub const AUTH_RESULTS: [&str; 3] = ["success", "failure", "unreachable"];

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("static metric definition");
    r.register(Box::new(h.clone()))
        .expect("metric names are unique");
    h
}

/// Latency buckets from 1 ms to 30 s.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let config_generation = IntGauge::new(
            names::CONFIG_GENERATION,
            "Generation of the running configuration (1 at start, +1 per successful reload).",
        )
        .expect("static metric definition");
        r.register(Box::new(config_generation.clone()))
            .expect("metric names are unique");
        let m = Metrics {
            config_generation,
            config_reloads: counter(
                &r,
                names::CONFIG_RELOADS,
                "Configuration reloads by result.",
                &["result"],
            ),
            connections_accepted: counter(
                &r,
                names::CONNECTIONS_ACCEPTED,
                "Connections accepted, by listener kind.",
                &["listener"],
            ),
            connections: gauge(
                &r,
                names::CONNECTIONS,
                "Open connections by listener kind and session state.",
                &["listener", "state"],
            ),
            handshake_duration: histogram(
                &r,
                names::HANDSHAKE_DURATION,
                "Time from accepting a connection to its routing decision (TLS, stream, auth peek).",
                &["listener"],
                latency_buckets(),
            ),
            auth_peeks: counter(
                &r,
                names::AUTH_PEEKS,
                "First authentication elements read, by mechanism (or iq-auth, register).",
                &["mechanism"],
            ),
            routing_decisions: counter(
                &r,
                names::ROUTING_DECISIONS,
                "Routing decisions by backend and outcome (redirect, forward, error).",
                &["backend", "outcome"],
            ),
            limit_hits: counter(
                &r,
                names::LIMIT_HITS,
                "Times a limit fired, by limit.",
                &["limit"],
            ),
            stream_errors: counter(
                &r,
                names::STREAM_ERRORS,
                "Stream errors dealer sent, by condition.",
                &["condition"],
            ),
            backend_up: gauge(
                &r,
                names::BACKEND_UP,
                "1 when the backend counts as up.",
                &["backend"],
            ),
            health_checks: counter(
                &r,
                names::HEALTH_CHECKS,
                "Backend health checks by result (ok, failed).",
                &["backend", "result"],
            ),
            auth_results: counter(
                &r,
                names::AUTH_RESULTS,
                "Authentications watched through to a backend, by result (success, failure, unreachable).",
                &["backend", "result"],
            ),
            backend_connect_duration: histogram(
                &r,
                names::BACKEND_CONNECT_DURATION,
                "Time to connect to a backend and open its stream at login.",
                &["backend"],
                latency_buckets(),
            ),
            relay_bytes: counter(
                &r,
                names::RELAY_BYTES,
                "Bytes relayed after hand-over, by relay kind and direction.",
                &["kind", "direction"],
            ),
            s2s_streams: gauge(
                &r,
                names::S2S_STREAMS,
                "Open s2s streams: in (from the federation), out (links dealer opened), internal (from backends).",
                &["direction"],
            ),
            s2s_stanzas: counter(
                &r,
                names::S2S_STANZAS,
                "s2s stanzas by direction (in: to backends, out: to the federation) and result.",
                &["direction", "result"],
            ),
            redeal_closed: {
                let c = prometheus::IntCounter::new(
                    names::REDEAL_CLOSED,
                    "Relayed sessions closed by a reload's re-deal because their user now belongs to another backend.",
                )
                .expect("static metric definition");
                r.register(Box::new(c.clone()))
                    .expect("metric names are unique");
                c
            },
            relay_spliced_bytes: {
                let c = prometheus::IntCounter::new(
                    names::RELAY_SPLICED_BYTES,
                    "Bytes of the plain-leg relay moved by splice(2), zero copy (bursts); the rest of kind=splice went through a small buffer.",
                )
                .expect("static metric definition");
                r.register(Box::new(c.clone()))
                    .expect("metric names are unique");
                c
            },
            s2s_queued_bytes: {
                let g = IntGauge::new(
                    names::S2S_QUEUED_BYTES,
                    "Bytes of stanzas waiting in s2s link queues (never above s2s.queue_bytes).",
                )
                .expect("static metric definition");
                r.register(Box::new(g.clone()))
                    .expect("metric names are unique");
                g
            },
            session_drops: counter(
                &r,
                names::SESSION_DROPS,
                "Sessions dealer closed without a stream error, by reason.",
                &["reason"],
            ),
            drop_log: std::sync::Mutex::new((std::time::Instant::now(), 0, 0)),
            registry: r,
        };
        for d in DropReason::ALL {
            m.session_drops.with_label_values(&[d.label()]);
        }
        for d in S2S_DIRECTIONS {
            m.s2s_streams.with_label_values(&[d]);
        }
        for d in ["in", "out"] {
            for r in S2S_RESULTS {
                m.s2s_stanzas.with_label_values(&[d, r]);
            }
        }
        for k in RELAY_KINDS {
            for d in DIRECTIONS {
                m.relay_bytes.with_label_values(&[k, d]);
            }
        }
        for v in ["ok", "error"] {
            m.config_reloads.with_label_values(&[v]);
        }
        for l in LISTENERS {
            m.connections_accepted.with_label_values(&[l]);
            m.handshake_duration.with_label_values(&[l]);
            for s in STATES {
                m.connections.with_label_values(&[l, s]);
            }
        }
        for k in PEEK_KINDS {
            m.auth_peeks.with_label_values(&[k]);
        }
        for l in LIMITS {
            m.limit_hits.with_label_values(&[l]);
        }
        for c in CONDITIONS {
            m.stream_errors.with_label_values(&[c]);
        }
        m
    }

    /// Zero the series labelled by backend for `config`'s backends (at start and on
    /// every reload, so a new backend shows up before its first event).
    pub fn init_backends(&self, config: &Config) {
        for b in &config.backends {
            for o in OUTCOMES {
                self.routing_decisions.with_label_values(&[&b.name, o]);
            }
            for r in ["ok", "failed"] {
                self.health_checks.with_label_values(&[&b.name, r]);
            }
            self.backend_up.with_label_values(&[&b.name]);
            for r in AUTH_RESULTS {
                self.auth_results.with_label_values(&[&b.name, r]);
            }
            self.backend_connect_duration.with_label_values(&[&b.name]);
        }
    }

    pub fn peek(&self, m: Mechanism) {
        self.auth_peeks.with_label_values(&[m.name()]).inc();
    }

    /// Count a session dealer closes without a word, and log why at `info`, at most
    /// `DROP_LOG_PER_SECOND` lines a second.
    pub fn dropped(&self, reason: DropReason, detail: &dyn std::fmt::Display) {
        self.session_drops
            .with_label_values(&[reason.label()])
            .inc();
        let now = std::time::Instant::now();
        let left_out = {
            let mut g = self.drop_log.lock().unwrap_or_else(|p| p.into_inner());
            if now.duration_since(g.0) >= std::time::Duration::from_secs(1) {
                g.0 = now;
                g.1 = 0;
            }
            if g.1 >= DROP_LOG_PER_SECOND {
                g.2 += 1;
                return;
            }
            g.1 += 1;
            std::mem::take(&mut g.2)
        };
        if left_out > 0 {
            tracing::info!(reason = reason.label(), %detail, left_out, "session dropped (and others not logged)");
        } else {
            tracing::info!(reason = reason.label(), %detail, "session dropped");
        }
    }

    pub fn limit(&self, limit: &str) {
        self.limit_hits.with_label_values(&[limit]).inc();
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Holds one `dealer_connections{listener,state}` slot and moves it between states;
/// the slot is released when dropped, however the session ends.
pub struct ConnGauge {
    gauge: IntGaugeVec,
    listener: &'static str,
    state: &'static str,
}

impl ConnGauge {
    pub fn new(m: &Metrics, listener: &'static str) -> ConnGauge {
        m.connections
            .with_label_values(&[listener, STATES[0]])
            .inc();
        ConnGauge {
            gauge: m.connections.clone(),
            listener,
            state: STATES[0],
        }
    }

    pub fn set(&mut self, state: &'static str) {
        if state != self.state {
            self.gauge
                .with_label_values(&[self.listener, self.state])
                .dec();
            self.gauge.with_label_values(&[self.listener, state]).inc();
            self.state = state;
        }
    }
}

impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.gauge
            .with_label_values(&[self.listener, self.state])
            .dec();
    }
}
