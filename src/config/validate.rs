//! One pass over the raw file that checks everything, collects every problem with the
//! key it concerns, and produces the typed [`Config`]. Nothing stops at the first error:
//! an operator fixing a file wants the whole list.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::file::{RawBackend, RawConfig, RawCount, RawListener};
use super::values::{HostPort, parse_domain, parse_duration};
use super::*;
use crate::routing::normalise::normalise;
use crate::routing::ranges::{row_is_empty, rows_overlap};

/// Upper bounds of the duration keys (README, Configuration).
pub const MAX_HANDSHAKE: Duration = Duration::from_secs(600);
/// `limits.backend_connect_timeout`, `health.timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
pub const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(3600);
pub const MAX_GRACE: Duration = Duration::from_secs(3600);

/// The most backends a routing table can index (entries are `u16`).
pub const MAX_BACKENDS: usize = 4096;

#[derive(Default)]
struct Check {
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
}

impl Check {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    fn ok<T>(&mut self, key: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.err(key, e)).ok()
    }

    /// A duration no longer than `max`: every duration key has an upper bound, so a
    /// typo (`30m` for `30s`) cannot hold connections or a shutdown for hours.
    fn duration(
        &mut self,
        key: &str,
        raw: &Option<String>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        match raw {
            None => default,
            Some(s) => match self.ok(key, parse_duration(s)) {
                Some(d) if d > max => {
                    self.err(
                        key,
                        format!(
                            "`{s}` is longer than the most this key allows ({})",
                            humantime::format_duration(max)
                        ),
                    );
                    default
                }
                Some(d) => d,
                None => default,
            },
        }
    }

    fn socket_addr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        let a = self.ok(
            key,
            s.parse::<SocketAddr>().map_err(|_| {
                format!("`{s}` is not an IP address with a port (e.g. 127.0.0.1:5222 or [::]:5222)")
            }),
        )?;
        if a.port() == 0 {
            self.err(
                key,
                format!("`{s}`: port 0 is not a port to listen on or connect to"),
            );
            return None;
        }
        Some(a)
    }

    fn word<T: Copy>(
        &mut self,
        key: &str,
        raw: Option<&str>,
        default: T,
        words: &[(&str, T)],
    ) -> T {
        let Some(s) = raw else { return default };
        match words.iter().find(|(w, _)| *w == s) {
            Some((_, t)) => *t,
            None => {
                let expected: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
                self.err(
                    key,
                    format!("unknown value `{s}` (expected {})", expected.join(" or ")),
                );
                default
            }
        }
    }
}

const STARTTLS_WORDS: [(&str, StartTls); 3] = [
    ("required", StartTls::Required),
    ("optional", StartTls::Optional),
    ("off", StartTls::Off),
];

pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigErrors> {
    let mut v = Check::default();

    let domain = match &raw.domain {
        None => {
            v.err("domain", "required: the public XMPP domain");
            String::new()
        }
        Some(d) => v.ok("domain", parse_domain(d)).unwrap_or_default(),
    };

    // Backends first: most other keys name one.
    for name in &raw.backends.duplicates {
        v.err(
            format!("backends.{name}"),
            "listed twice: a YAML map keeps only one of them",
        );
    }
    let names: Vec<&String> = raw.backends.keys().collect();
    if names.is_empty() {
        v.err("backends", "at least one backend is required");
    }
    if names.len() > MAX_BACKENDS {
        v.err(
            "backends",
            format!("at most {MAX_BACKENDS} backends are supported"),
        );
    }
    let find = |v: &mut Check, key: &str, name: &str| -> Option<BackendId> {
        let id = names.iter().position(|n| n.as_str() == name);
        if id.is_none() {
            v.err(key, format!("`{name}` names no backend in `backends`"));
        }
        id
    };

    let c2s_mode = v.word(
        "c2s.mode",
        raw.c2s.mode.as_deref(),
        C2sMode::Forward,
        &[
            ("forward", C2sMode::Forward),
            ("redirect", C2sMode::Redirect),
        ],
    );
    let domains = v.word(
        "domains",
        raw.domains.as_deref(),
        Domains::Shared,
        &[("shared", Domains::Shared), ("masked", Domains::Masked)],
    );
    let self_backend = raw
        .self_backend
        .as_deref()
        .and_then(|s| find(&mut v, "self", s));

    let backends: Vec<Backend> = raw
        .backends
        .iter()
        .enumerate()
        .map(|(id, (name, b))| backend(&mut v, name, b, id, self_backend, c2s_mode, domains))
        .collect();
    if domains == Domains::Masked {
        let mut seen = BTreeMap::new();
        for b in &backends {
            if let Some(d) = &b.domain {
                if *d == domain {
                    v.err(
                        format!("backends.{}.domain", b.name),
                        "must differ from the public domain when `domains: masked`",
                    );
                }
                if let Some(other) = seen.insert(d.clone(), b.name.clone()) {
                    v.err(
                        format!("backends.{}.domain", b.name),
                        format!("`{d}` is also the domain of backend `{other}`"),
                    );
                }
            }
        }
    }

    // One server at one address serves a domain once: two backends there would be
    // one backend dealt twice the users (with masked domains, one server may serve
    // two internal domains).
    let mut at: BTreeMap<(SocketAddr, Option<&str>), &str> = BTreeMap::new();
    for b in &backends {
        let serves = match domains {
            Domains::Masked => b.domain.as_deref(),
            Domains::Shared => None,
        };
        for (k, addr) in [("c2s", b.c2s), ("s2s", b.s2s)] {
            let Some(addr) = addr else { continue };
            if let Some(other) = at.insert((addr, serves), b.name.as_str())
                && other != b.name
            {
                v.err(
                    format!("backends.{}.{k}", b.name),
                    format!("{addr} is also backend `{other}`, serving the same domain"),
                );
            }
        }
    }

    // TLS material: the files must exist now, not at the first client.
    let tls = raw.tls.as_ref().and_then(|t| {
        let cert = file_key(&mut v, "tls.cert", t.cert.as_deref(), base);
        let key = file_key(&mut v, "tls.key", t.key.as_deref(), base);
        Some(TlsFiles {
            cert: cert?,
            key: key?,
        })
    });

    // Listeners.
    let default_starttls = v.word(
        "c2s.starttls",
        raw.c2s.starttls.as_deref(),
        StartTls::Required,
        &STARTTLS_WORDS,
    );
    let listen = Listen {
        c2s: listeners(
            &mut v,
            "listen.c2s",
            &raw.listen.c2s,
            Some(default_starttls),
        ),
        c2s_tls: listeners(&mut v, "listen.c2s_tls", &raw.listen.c2s_tls, None),
        s2s: listeners(
            &mut v,
            "listen.s2s",
            &raw.listen.s2s,
            Some(StartTls::Optional),
        ),
        s2s_internal: listeners(
            &mut v,
            "listen.s2s_internal",
            &raw.listen.s2s_internal,
            Some(StartTls::Optional),
        ),
        http: raw
            .listen
            .http
            .as_deref()
            .and_then(|s| v.socket_addr("listen.http", s)),
    };
    let needs_tls =
        !listen.c2s_tls.is_empty() || listen.c2s.iter().any(|l| l.starttls != StartTls::Off);
    if needs_tls && raw.tls.is_none() {
        v.err(
            "tls",
            "required: a certificate and key for the public domain (c2s listeners offer TLS)",
        );
    }
    let mut bound = BTreeSet::new();
    for (key, l) in [
        ("listen.c2s", &listen.c2s),
        ("listen.c2s_tls", &listen.c2s_tls),
        ("listen.s2s", &listen.s2s),
        ("listen.s2s_internal", &listen.s2s_internal),
    ] {
        for x in l.iter() {
            if !bound.insert(x.addr) {
                v.err(
                    key,
                    format!("{} is bound by more than one listener", x.addr),
                );
            }
        }
    }
    if let Some(h) = listen.http
        && !bound.insert(h)
    {
        v.err("listen.http", format!("{h} is also a c2s or s2s listener"));
    }

    // c2s.
    let mechanisms = mechanisms(&mut v, raw.c2s.mechanisms.as_deref(), c2s_mode);
    let anonymous_backend = raw
        .c2s
        .anonymous_backend
        .as_deref()
        .and_then(|s| find(&mut v, "c2s.anonymous_backend", s));
    if mechanisms.contains(&Mechanism::Anonymous) && raw.c2s.anonymous_backend.is_none() {
        v.err(
            "c2s.anonymous_backend",
            "required when c2s.mechanisms lists ANONYMOUS",
        );
    }
    let c2s = C2s {
        mode: c2s_mode,
        starttls: default_starttls,
        mechanisms,
        legacy_auth: raw.c2s.legacy_auth.unwrap_or(false),
        registration: raw.c2s.registration.unwrap_or(false),
        anonymous_backend,
    };

    // Routing.
    let strategy = v.word(
        "routing.strategy",
        raw.routing.strategy.as_deref(),
        Strategy::Hash,
        &[("hash", Strategy::Hash), ("ranges", Strategy::Ranges)],
    );
    let normalise_as = v.word(
        "routing.normalise",
        raw.routing.normalise.as_deref(),
        Normalise::Nodeprep,
        &[
            ("nodeprep", Normalise::Nodeprep),
            ("precis", Normalise::Precis),
        ],
    );
    let mut rows = Vec::new();
    for (i, r) in raw.routing.ranges.iter().enumerate() {
        let key = format!("routing.ranges[{i}]");
        let from = v.ok(&format!("{key}.from"), bound_value(&r.from, normalise_as));
        let to = v.ok(&format!("{key}.to"), bound_value(&r.to, normalise_as));
        let backend = find(&mut v, &format!("{key}.backend"), &r.backend);
        if let (Some(from), Some(to), Some(backend)) = (from, to, backend) {
            if row_is_empty(&from, &to) {
                v.err(
                    &key,
                    format!(
                        "empty row: `{}` sorts after every name that starts with `{}`",
                        r.from, r.to
                    ),
                );
            } else {
                rows.push((i, RangeRow { from, to, backend }));
            }
        }
    }
    rows.sort_by(|a, b| a.1.from.cmp(&b.1.from));
    for pair in rows.windows(2) {
        let ((ia, a), (ib, b)) = (&pair[0], &pair[1]);
        if rows_overlap(a, b) {
            let (ra, rb) = (&raw.routing.ranges[*ia], &raw.routing.ranges[*ib]);
            v.err(
                format!("routing.ranges[{}]", ia.max(ib)),
                format!(
                    "overlaps routing.ranges[{}]: `{}`-`{}` and `{}`-`{}` both cover names starting with `{}`",
                    ia.min(ib),
                    ra.from,
                    ra.to,
                    rb.from,
                    rb.to,
                    b.from
                ),
            );
        }
    }
    let default = raw
        .routing
        .default
        .as_deref()
        .and_then(|s| find(&mut v, "routing.default", s));
    match strategy {
        Strategy::Ranges => {
            if raw.routing.ranges.is_empty() {
                v.err("routing.ranges", "required with `strategy: ranges`");
            }
            if raw.routing.default.is_none() {
                v.err(
                    "routing.default",
                    "required with `strategy: ranges`: the backend for names outside every row",
                );
            }
        }
        Strategy::Hash => {
            if !raw.routing.ranges.is_empty() {
                v.warnings
                    .push("routing.ranges is ignored with `strategy: hash`".to_string());
            }
        }
    }
    let redeal_on_reload = raw.routing.redeal_on_reload.unwrap_or(false);
    if redeal_on_reload && (strategy != Strategy::Hash || domains != Domains::Shared) {
        v.err(
            "routing.redeal_on_reload",
            "only with `strategy: hash` and `domains: shared`, where a user's data can follow it",
        );
    }
    let routing = Routing {
        strategy,
        normalise: normalise_as,
        ranges: rows.into_iter().map(|(_, r)| r).collect(),
        default,
        redeal_on_reload,
    };

    // Health and shutdown.
    let fallback_default = strategy == Strategy::Hash && domains == Domains::Shared;
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
        rise: positive(&mut v, "health.rise", raw.health.rise, 2),
        fall: positive(&mut v, "health.fall", raw.health.fall, 3),
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

    // s2s.
    let s2s_on = !listen.s2s.is_empty() || !listen.s2s_internal.is_empty();
    let dialback_secret = raw.s2s.dialback_secret.clone();
    if s2s_on && dialback_secret.as_deref().is_none_or(str::is_empty) {
        v.err(
            "s2s.dialback_secret",
            "required when s2s listeners are configured",
        );
    }
    let domain_backend = raw
        .s2s
        .domain_backend
        .as_deref()
        .and_then(|s| find(&mut v, "s2s.domain_backend", s));
    if !listen.s2s.is_empty() {
        for b in &backends {
            if b.s2s.is_none() {
                v.err(
                    format!("backends.{}.s2s", b.name),
                    "required with listen.s2s: stanzas from the federation for this backend's users are delivered there",
                );
            }
        }
    }
    if !listen.s2s.is_empty() && raw.s2s.domain_backend.is_none() {
        v.err(
            "s2s.domain_backend",
            "required with listen.s2s: the backend that receives stanzas to the bare domain",
        );
    }
    let internal_allow = match &raw.s2s.internal_allow {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| v.ok(&format!("s2s.internal_allow[{i}]"), parse_net(s)))
            .collect(),
        None => default_internal_allow(&backends),
    };
    let resolver = raw
        .s2s
        .resolver
        .as_deref()
        .and_then(|s| v.socket_addr("s2s.resolver", s));
    let mut routes = BTreeMap::new();
    for (d, target) in &raw.s2s.routes {
        let key = format!("s2s.routes.{d}");
        let d = v.ok(&key, parse_domain(d));
        let t = v.ok(&key, HostPort::parse(target));
        if let (Some(d), Some(t)) = (d, t) {
            routes.insert(d, t);
        }
    }
    let queue_bytes = bytes_key(
        &mut v,
        "s2s.queue_bytes",
        raw.s2s.queue_bytes,
        64 << 20,
        1 << 20,
        1 << 40,
    );
    let queue_bytes_per_link = bytes_key(
        &mut v,
        "s2s.queue_bytes_per_link",
        raw.s2s.queue_bytes_per_link,
        (8 << 20).min(queue_bytes),
        64 << 10,
        1 << 40,
    );
    if queue_bytes_per_link > queue_bytes {
        v.err(
            "s2s.queue_bytes_per_link",
            "must not exceed s2s.queue_bytes (the bound on all links together)",
        );
    }
    let s2s = S2s {
        dialback_secret,
        domain_backend,
        internal_allow,
        resolver,
        routes,
        queue_bytes_per_link,
        queue_bytes,
    };

    if domains == Domains::Masked {
        if listen.s2s_internal.is_empty() {
            v.err(
                "listen.s2s_internal",
                "required with `domains: masked`: the backends send their outbound s2s there, \
                 every message between users of different backends included",
            );
        }
        for b in &backends {
            if b.s2s.is_none() {
                v.err(
                    format!("backends.{}.s2s", b.name),
                    "required with `domains: masked`: stanzas from users of the other backends \
                     and of the federation are delivered there",
                );
            }
        }
    }
    if !listen.c2s_tls.is_empty() {
        for b in &backends {
            if b.redirect.is_some() && b.redirect_tls.is_none() {
                v.warnings.push(format!(
                    "backends.{}.redirect_tls is not set: clients that came over Direct TLS \
                     are redirected to `redirect`, a STARTTLS address",
                    b.name
                ));
            }
        }
    }
    if domains == Domains::Shared && !listen.s2s.is_empty() && listen.s2s_internal.is_empty() {
        v.warnings.push(
            "listen.s2s without listen.s2s_internal: the backends' own outbound s2s does not \
             pass through dealer, so remote servers see them and not the public domain"
                .to_string(),
        );
    }

    let limits = limits(&mut v, &raw);

    if v.errors.is_empty() {
        Ok(Config {
            domain,
            self_backend,
            tls,
            listen,
            c2s,
            domains,
            routing,
            backends,
            health,
            shutdown,
            s2s,
            limits,
            warnings: v.warnings,
        })
    } else {
        Err(ConfigErrors(v.errors))
    }
}

fn backend(
    v: &mut Check,
    name: &str,
    b: &RawBackend,
    id: BackendId,
    self_backend: Option<BackendId>,
    mode: C2sMode,
    domains: Domains,
) -> Backend {
    let key = |k: &str| format!("backends.{name}.{k}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        v.err(
            format!("backends.{name}"),
            "a backend name is letters, digits, `-`, `_` and `.`",
        );
    }
    let c2s = b.c2s.as_deref().and_then(|s| v.socket_addr(&key("c2s"), s));
    let s2s = b.s2s.as_deref().and_then(|s| v.socket_addr(&key("s2s"), s));
    let domain = b
        .domain
        .as_deref()
        .and_then(|s| v.ok(&key("domain"), parse_domain(s)));
    let redirect = b
        .redirect
        .as_deref()
        .and_then(|s| v.ok(&key("redirect"), HostPort::parse(s)));
    let redirect_tls = b
        .redirect_tls
        .as_deref()
        .and_then(|s| v.ok(&key("redirect_tls"), HostPort::parse(s)));
    let weight = b.weight.unwrap_or(1);
    if weight == 0 || weight > 1_000_000 {
        v.err(key("weight"), "must be between 1 and 1000000");
    }
    let is_self = self_backend == Some(id);
    // Who is forwarded here: everyone in forward mode, only its own users in a guard.
    let forwarded = mode == C2sMode::Forward || is_self;
    let redirected = mode == C2sMode::Redirect || (self_backend.is_some() && !is_self);
    if forwarded && b.c2s.is_none() {
        v.err(
            key("c2s"),
            "required: clients are forwarded to this backend",
        );
    }
    if redirected && b.redirect.is_none() {
        v.err(
            key("redirect"),
            "required: clients are redirected to this backend (the host:port see-other-host sends)",
        );
    }
    if domains == Domains::Masked && b.domain.is_none() {
        v.err(
            key("domain"),
            "required with `domains: masked`: the backend's internal domain",
        );
    }
    if domains == Domains::Masked
        && redirected
        && let (Some(r), Some(c)) = (&redirect, c2s)
        && r.port == c.port()
        && r.host.parse::<IpAddr>().ok() == Some(c.ip())
    {
        v.err(
            key("redirect"),
            "with `domains: masked` clients must be redirected to the backend's guard (a dealer with `self:`), not to the backend itself",
        );
    }
    Backend {
        name: name.to_owned(),
        c2s,
        s2s,
        domain,
        redirect,
        redirect_tls,
        weight,
        tls: b.tls.unwrap_or(false),
        proxy_protocol: b.proxy_protocol.unwrap_or(false),
    }
}

fn listeners(
    v: &mut Check,
    key: &str,
    raw: &[RawListener],
    default_starttls: Option<StartTls>,
) -> Vec<Listener> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let k = format!("{key}[{i}]");
            let addr = v.socket_addr(&k, &l.addr);
            let starttls = match (default_starttls, &l.starttls) {
                (None, Some(_)) => {
                    v.err(
                        format!("{k}.starttls"),
                        "not for a Direct TLS listener (TLS starts at once there)",
                    );
                    StartTls::Off
                }
                (None, None) => StartTls::Off,
                (Some(d), s) => v.word(&format!("{k}.starttls"), s.as_deref(), d, &STARTTLS_WORDS),
            };
            Some(Listener {
                addr: addr?,
                starttls,
                proxy_protocol: l.proxy_protocol.unwrap_or(false),
            })
        })
        .collect()
}

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

fn limits(v: &mut Check, raw: &RawConfig) -> Limits {
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
fn bytes_key(
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

fn file_key(v: &mut Check, key: &str, value: Option<&str>, base: &Path) -> Option<PathBuf> {
    let Some(value) = value else {
        v.err(key, "required");
        return None;
    };
    let path = base.join(value);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Some(path),
        Ok(_) => {
            v.err(key, format!("{} is not a file", path.display()));
            None
        }
        Err(e) => {
            v.err(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// A range bound is normalised like the names it is compared with.
fn bound_value(s: &str, how: Normalise) -> Result<String, String> {
    normalise(how, s)
        .map(|c| c.into_owned())
        .map_err(|e| format!("`{s}` is not a valid username bound ({e})"))
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or network (e.g. 10.0.0.0/24)"))
}

fn default_internal_allow(backends: &[Backend]) -> Vec<IpNet> {
    let mut ips: Vec<IpNet> = backends
        .iter()
        .flat_map(|b| [b.c2s, b.s2s])
        .flatten()
        .map(|a| IpNet::from(a.ip()))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}
