//! Prometheus metrics: an owned registry per dealer instance (several can run in one
//! test process), every name from `names`, every label value from `labels` (enums, so
//! a typo cannot create a series), and the series whose label values are known in
//! advance exported at zero from the start so that rates and alerts work from the
//! first scrape. Callers count through typed methods; the vectors stay private.

pub mod http;
pub mod labels;
pub mod names;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use std::collections::HashMap;

use crate::config::Config;
use crate::xml::StreamError;
pub use labels::{
    AuthResult, Cause, CheckResult, ConnState, DropReason, Limit, Listener, Outcome, Peek,
    RelayDirection, RelayKind, ReloadResult, RoutingSource, S2sStreams, ServiceDirection, Side,
    StanzaDirection, StanzaResult, WarmOutcome,
};

/// Stream error conditions dealer sends (`condition`).
const CONDITIONS: [StreamError; 18] = [
    StreamError::BadFormat,
    StreamError::ConnectionTimeout,
    StreamError::HostUnknown,
    StreamError::ImproperAddressing,
    StreamError::InternalServerError,
    StreamError::InvalidFrom,
    StreamError::InvalidNamespace,
    StreamError::NotAuthorized,
    StreamError::NotWellFormed,
    StreamError::PolicyViolation,
    StreamError::RemoteConnectionFailed,
    StreamError::ResourceConstraint,
    StreamError::RestrictedXml,
    StreamError::SeeOtherHost,
    StreamError::SystemShutdown,
    StreamError::UnsupportedEncoding,
    StreamError::UnsupportedStanzaType,
    StreamError::UnsupportedVersion,
];

/// Lines a second that `Metrics::dropped` logs at most; the rest are counted only,
/// and the next line says how many were left out (a slowloris must not flood the log).
const DROP_LOG_PER_SECOND: u32 = 10;

pub struct Metrics {
    registry: Registry,
    /// `(window start, lines logged in it, lines left out since the last one logged)`.
    drop_log: std::sync::Mutex<(std::time::Instant, u32, u64)>,
    /// Generation of the live config snapshot: 1 at start, +1 per successful reload.
    pub config_generation: IntGauge,
    /// Bytes of stanzas waiting in s2s link queues (bounded by `s2s.queue_bytes`).
    pub s2s_queued_bytes: IntGauge,
    /// Sessions closed by a re-deal because their user moved to another backend.
    pub redeal_closed: IntCounter,
    /// Of the `splice` relay's bytes, those moved by splice(2) (bursts) rather than
    /// through its small copy buffer (interactive traffic).
    pub relay_spliced_bytes: IntCounter,
    session_drops: IntCounterVec,
    session_ends: IntCounterVec,
    routing_sources: IntCounterVec,
    service_stanzas: IntCounterVec,
    /// Backend name → the public domain it serves and its per-login series
    /// (`init_backends`).
    backend_series: std::sync::RwLock<HashMap<String, std::sync::Arc<BackendSeries>>>,
    config_reloads: IntCounterVec,
    connections_accepted: IntCounterVec,
    connections: IntGaugeVec,
    handshake_duration: HistogramVec,
    auth_peeks: IntCounterVec,
    routing_decisions: IntCounterVec,
    limit_hits: IntCounterVec,
    stream_errors: IntCounterVec,
    backend_up: IntGaugeVec,
    health_checks: IntCounterVec,
    auth_results: IntCounterVec,
    warm_streams: IntCounterVec,
    backend_connect_duration: HistogramVec,
    relay_bytes: IntCounterVec,
    s2s_streams: IntGaugeVec,
    s2s_stanzas: IntCounterVec,
    /// The series every connection touches, looked up once here rather than by
    /// label (a hash and a lock) for each connection: by `Listener`, by
    /// `Listener` × `ConnState`, by `Listener` × `Side` × `Cause`, by `RelayKind` ×
    /// `RelayDirection`, each the product of the enums' `index`es.
    accepted_by: Vec<IntCounter>,
    connections_by: std::sync::Arc<Vec<IntGauge>>,
    session_ends_by: Vec<IntCounter>,
    relay_bytes_by: Vec<IntCounter>,
}

/// One backend's series that logins touch, by the enum's `index`.
struct BackendSeries {
    domain: std::sync::Arc<str>,
    routing: Vec<IntCounter>,
    auth: Vec<IntCounter>,
    warm: Vec<IntCounter>,
    connect: Histogram,
}

/// Index of a series in a table by two or three labels, each an enum's `index`.
fn at2(a: usize, b: usize, b_len: usize) -> usize {
    a * b_len + b
}

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
        let single = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let single_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            r.register(Box::new(g.clone()))
                .expect("metric names are unique");
            g
        };
        let mut m = Metrics {
            accepted_by: Vec::new(),
            connections_by: Default::default(),
            session_ends_by: Vec::new(),
            relay_bytes_by: Vec::new(),
            drop_log: std::sync::Mutex::new((std::time::Instant::now(), 0, 0)),
            config_generation: single_gauge(
                names::CONFIG_GENERATION,
                "Generation of the running configuration (1 at start, +1 per successful reload).",
            ),
            s2s_queued_bytes: single_gauge(
                names::S2S_QUEUED_BYTES,
                "Bytes of stanzas waiting in s2s link queues (never above s2s.queue_bytes).",
            ),
            redeal_closed: single(
                names::REDEAL_CLOSED,
                "Relayed sessions closed by a reload's re-deal because their user now belongs to another backend.",
            ),
            relay_spliced_bytes: single(
                names::RELAY_SPLICED_BYTES,
                "Bytes of the plain-leg relay moved by splice(2), zero copy (bursts); the rest of kind=splice went through a small buffer.",
            ),
            session_drops: counter(
                &r,
                names::SESSION_DROPS,
                "Sessions dealer closed without a stream error, by reason.",
                &["reason"],
            ),
            session_ends: counter(
                &r,
                names::SESSION_ENDS,
                "Sessions ended, by the side that ended them and the cause.",
                &["listener", "side", "cause"],
            ),
            routing_sources: counter(
                &r,
                names::ROUTING_SOURCES,
                "Logins routed, by how dealer learned the user (stream-from, sasl, sasl2, iq-auth, register).",
                &["source"],
            ),
            service_stanzas: counter(
                &r,
                names::SERVICE_STANZAS,
                "s2s stanzas to a service domain and from it, by service.",
                &["service", "direction"],
            ),
            backend_series: Default::default(),
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
                &["domain", "backend", "outcome"],
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
                &["domain", "backend"],
            ),
            health_checks: counter(
                &r,
                names::HEALTH_CHECKS,
                "Backend health checks by result (ok, failed).",
                &["domain", "backend", "result"],
            ),
            auth_results: counter(
                &r,
                names::AUTH_RESULTS,
                "Authentications watched through to a backend, by result (success, failure, unreachable).",
                &["domain", "backend", "result"],
            ),
            warm_streams: counter(
                &r,
                names::WARM_STREAMS,
                "Forwarded logins by what they found among their backend's warm streams: hit (one was taken), miss (none was ready), expired or closed (one was dropped, too old or closed by the backend).",
                &["domain", "backend", "outcome"],
            ),
            backend_connect_duration: histogram(
                &r,
                names::BACKEND_CONNECT_DURATION,
                "Time to connect to a backend and open its stream at login.",
                &["domain", "backend"],
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
            registry: r,
        };
        for s in RoutingSource::ALL {
            m.routing_sources.with_label_values(&[s.label()]);
        }
        for d in DropReason::ALL {
            m.session_drops.with_label_values(&[d.label()]);
        }
        for d in S2sStreams::ALL {
            m.s2s_streams.with_label_values(&[d.label()]);
        }
        for d in StanzaDirection::ALL {
            for r in StanzaResult::ALL {
                m.s2s_stanzas.with_label_values(&[d.label(), r.label()]);
            }
        }
        for k in RelayKind::ALL {
            for d in RelayDirection::ALL {
                let c = m.relay_bytes.with_label_values(&[k.label(), d.label()]);
                m.relay_bytes_by.push(c);
            }
        }
        for v in ReloadResult::ALL {
            m.config_reloads.with_label_values(&[v.label()]);
        }
        let mut connections_by = Vec::new();
        for l in Listener::ALL {
            let c = m.connections_accepted.with_label_values(&[l.label()]);
            m.accepted_by.push(c);
            m.handshake_duration.with_label_values(&[l.label()]);
            for s in ConnState::ALL {
                connections_by.push(m.connections.with_label_values(&[l.label(), s.label()]));
            }
            for side in Side::ALL {
                for cause in Cause::ALL {
                    let c =
                        m.session_ends
                            .with_label_values(&[l.label(), side.label(), cause.label()]);
                    m.session_ends_by.push(c);
                }
            }
        }
        m.connections_by = std::sync::Arc::new(connections_by);
        for k in Peek::ALL {
            m.auth_peeks.with_label_values(&[k.label()]);
        }
        for l in Limit::ALL {
            m.limit_hits.with_label_values(&[l.label()]);
        }
        for c in CONDITIONS {
            m.stream_errors.with_label_values(&[c.name()]);
        }
        m
    }

    /// Zero the series labelled by backend for `config`'s backends (at start and on
    /// every reload, so a new backend shows up before its first event).
    /// Export every backend's series (at zero) and learn which public domain each
    /// backend serves (its series' `domain` label), for `config` and its hosts.
    pub fn init_backends(&self, config: &Config) {
        let mut domains = HashMap::new();
        for c in config.all() {
            let d = c.domain.as_str();
            let shared: std::sync::Arc<str> = d.into();
            for b in &c.backends {
                let n = b.name.as_str();
                for r in CheckResult::ALL {
                    self.health_checks.with_label_values(&[d, n, r.label()]);
                }
                self.backend_up.with_label_values(&[d, n]);
                let series = BackendSeries {
                    domain: shared.clone(),
                    routing: Outcome::ALL
                        .iter()
                        .map(|o| self.routing_decisions.with_label_values(&[d, n, o.label()]))
                        .collect(),
                    auth: AuthResult::ALL
                        .iter()
                        .map(|r| self.auth_results.with_label_values(&[d, n, r.label()]))
                        .collect(),
                    warm: WarmOutcome::ALL
                        .iter()
                        .map(|o| self.warm_streams.with_label_values(&[d, n, o.label()]))
                        .collect(),
                    connect: self.backend_connect_duration.with_label_values(&[d, n]),
                };
                domains.insert(b.name.clone(), std::sync::Arc::new(series));
            }
            for s in &c.services {
                for dir in ServiceDirection::ALL {
                    self.service_stanzas
                        .with_label_values(&[&s.domain, dir.label()]);
                }
            }
        }
        *self
            .backend_series
            .write()
            .unwrap_or_else(|p| p.into_inner()) = domains;
    }

    /// The public domain `backend` serves (names are unique across domains); shared,
    /// so a login's several metric updates allocate nothing for it.
    fn domain_of(&self, backend: &str) -> std::sync::Arc<str> {
        self.series_of(backend)
            .map(|s| s.domain.clone())
            .unwrap_or_else(|| "".into())
    }

    /// A configured backend's series (`None` for a name no config has, like the
    /// `none` of a routing error).
    fn series_of(&self, backend: &str) -> Option<std::sync::Arc<BackendSeries>> {
        self.backend_series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(backend)
            .cloned()
    }

    pub fn peek(&self, p: Peek) {
        self.auth_peeks.with_label_values(&[p.label()]).inc();
    }

    pub fn limit(&self, limit: Limit) {
        self.limit_hits.with_label_values(&[limit.label()]).inc();
    }

    pub fn stream_error(&self, cond: StreamError) {
        self.stream_errors.with_label_values(&[cond.name()]).inc();
    }

    /// `backend` is `None` for a decision that named no backend (an error).
    pub fn routing(&self, backend: Option<&str>, outcome: Outcome) {
        let backend = backend.unwrap_or("none");
        let (i, label) = (outcome.index(), outcome.label());
        self.count_backend(backend, &self.routing_decisions, |s| &s.routing, i, label);
    }

    pub fn service_stanza(&self, service: &str, d: ServiceDirection) {
        self.service_stanzas
            .with_label_values(&[service, d.label()])
            .inc();
    }

    pub fn routing_source(&self, s: RoutingSource) {
        self.routing_sources.with_label_values(&[s.label()]).inc();
    }

    pub fn auth_result(&self, backend: &str, r: AuthResult) {
        self.count_backend(
            backend,
            &self.auth_results,
            |s| &s.auth,
            r.index(),
            r.label(),
        );
    }

    pub fn warm_stream(&self, backend: &str, o: WarmOutcome) {
        self.count_backend(
            backend,
            &self.warm_streams,
            |s| &s.warm,
            o.index(),
            o.label(),
        );
    }

    /// Count on series `i` of `backend`'s `table`, or for a backend no config names,
    /// on `vec` by label (no domain).
    fn count_backend(
        &self,
        backend: &str,
        vec: &IntCounterVec,
        table: fn(&BackendSeries) -> &Vec<IntCounter>,
        i: usize,
        label: &str,
    ) {
        match self.series_of(backend) {
            Some(s) => table(&s)[i].inc(),
            None => vec.with_label_values(&["", backend, label]).inc(),
        }
    }

    pub fn health_check(&self, backend: &str, r: CheckResult) {
        self.health_checks
            .with_label_values(&[&self.domain_of(backend), backend, r.label()])
            .inc();
    }

    pub fn backend_up(&self, backend: &str, up: bool) {
        self.backend_up
            .with_label_values(&[&self.domain_of(backend), backend])
            .set(i64::from(up));
    }

    pub fn reloaded(&self, r: ReloadResult) {
        self.config_reloads.with_label_values(&[r.label()]).inc();
    }

    pub fn accepted(&self, l: Listener) {
        self.accepted_by[l.index()].inc();
    }

    pub fn handshake_duration(&self, l: Listener) -> Histogram {
        self.handshake_duration.with_label_values(&[l.label()])
    }

    pub fn backend_connect_duration(&self, backend: &str) -> Histogram {
        match self.series_of(backend) {
            Some(s) => s.connect.clone(),
            None => self
                .backend_connect_duration
                .with_label_values(&["", backend]),
        }
    }

    pub fn relay_bytes(&self, kind: RelayKind, dir: RelayDirection) -> IntCounter {
        self.relay_bytes_by[at2(kind.index(), dir.index(), RelayDirection::ALL.len())].clone()
    }

    pub fn s2s_streams(&self, d: S2sStreams) -> IntGauge {
        self.s2s_streams.with_label_values(&[d.label()])
    }

    pub fn s2s_stanzas(&self, d: StanzaDirection, r: StanzaResult) -> IntCounter {
        self.s2s_stanzas.with_label_values(&[d.label(), r.label()])
    }

    /// A session ended: which side ended it, and why.
    pub fn session_end(&self, l: Listener, side: Side, cause: Cause) {
        let (sides, causes) = (Side::ALL.len(), Cause::ALL.len());
        let i = at2(at2(l.index(), side.index(), sides), cause.index(), causes);
        self.session_ends_by[i].inc();
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
    gauges: std::sync::Arc<Vec<IntGauge>>,
    listener: Listener,
    state: ConnState,
}

impl ConnGauge {
    pub fn new(m: &Metrics, listener: Listener) -> ConnGauge {
        let g = ConnGauge {
            gauges: m.connections_by.clone(),
            listener,
            state: ConnState::Handshake,
        };
        g.gauge(g.state).inc();
        g
    }

    fn gauge(&self, state: ConnState) -> &IntGauge {
        let states = ConnState::ALL.len();
        &self.gauges[at2(self.listener.index(), state.index(), states)]
    }

    pub fn set(&mut self, state: ConnState) {
        if state != self.state {
            self.gauge(self.state).dec();
            self.gauge(state).inc();
            self.state = state;
        }
    }
}

impl Drop for ConnGauge {
    fn drop(&mut self) {
        self.gauge(self.state).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the one series of `name` carrying every pair of `labels`.
    fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = m.render();
        let found: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in\n{text}");
        found[0]
    }

    /// The tables of series looked up once must each count under their own labels: a
    /// distinct count per combination shows that no two share a slot.
    #[test]
    fn tabled_series_count_under_their_own_labels() {
        let m = Metrics::new();
        let mut n = 0;
        for l in Listener::ALL {
            for s in Side::ALL {
                for c in Cause::ALL {
                    n += 1;
                    for _ in 0..n {
                        m.session_end(*l, *s, *c);
                    }
                }
            }
        }
        let mut n = 0;
        for l in Listener::ALL {
            for s in Side::ALL {
                for c in Cause::ALL {
                    n += 1;
                    let labels = [
                        ("listener", l.label()),
                        ("side", s.label()),
                        ("cause", c.label()),
                    ];
                    assert_eq!(value(&m, names::SESSION_ENDS, &labels), f64::from(n));
                }
            }
        }
        for (i, l) in Listener::ALL.iter().enumerate() {
            for _ in 0..=i {
                m.accepted(*l);
            }
            let mut g = ConnGauge::new(&m, *l);
            let at = |s: ConnState| {
                value(
                    &m,
                    names::CONNECTIONS,
                    &[("listener", l.label()), ("state", s.label())],
                )
            };
            assert_eq!(at(ConnState::Handshake), 1.0);
            g.set(ConnState::Relaying);
            assert_eq!(
                (at(ConnState::Handshake), at(ConnState::Relaying)),
                (0.0, 1.0)
            );
            drop(g);
            assert_eq!(at(ConnState::Relaying), 0.0);
        }
        for (i, l) in Listener::ALL.iter().enumerate() {
            let v = value(&m, names::CONNECTIONS_ACCEPTED, &[("listener", l.label())]);
            assert_eq!(v, (i + 1) as f64);
        }
        let mut n = 0;
        for k in RelayKind::ALL {
            for d in RelayDirection::ALL {
                n += 1;
                m.relay_bytes(*k, *d).inc_by(n);
            }
        }
        let mut n = 0;
        for k in RelayKind::ALL {
            for d in RelayDirection::ALL {
                n += 1;
                let labels = [("kind", k.label()), ("direction", d.label())];
                assert_eq!(value(&m, names::RELAY_BYTES, &labels), n as f64);
            }
        }
    }
}
