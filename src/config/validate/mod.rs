//! One pass over the raw file that checks everything, collects every problem with the
//! key it concerns, and produces the typed [`Config`]. Nothing stops at the first error:
//! an operator fixing a file wants the whole list. Each section of the file has a
//! module of its own; `cross` checks what only the combination of sections decides.

mod backends;
mod c2s;
mod cross;
mod health;
pub(super) mod hosts;
mod limits;
mod listen;
mod routing;
mod s2s;
mod services;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::file::RawConfig;
use super::values::{parse_domain, parse_duration};
use super::*;

pub use limits::{MAX_GRACE, MAX_HANDSHAKE, MAX_HEALTH_INTERVAL, MAX_TIMEOUT};

/// The most backends a routing table can index (entries are `u16`).
pub const MAX_BACKENDS: usize = 4096;

#[derive(Default)]
pub(super) struct Check {
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<String>,
}

impl Check {
    pub(super) fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn ok<T>(&mut self, key: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.err(key, e)).ok()
    }

    /// A duration no longer than `max`: every duration key has an upper bound, so a
    /// typo (`30m` for `30s`) cannot hold connections or a shutdown for hours.
    pub(super) fn duration(
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

    pub(super) fn socket_addr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
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

    /// A backend's address: an IP literal, or `host:port` looked up once here through
    /// the system resolver (`/etc/hosts`, then DNS), taking its first answer as
    /// HAProxy's `init-addr libc` does. Every load looks names up again, so a SIGHUP
    /// picks up a changed record; between loads dealer never asks DNS on a login's
    /// path.
    pub(super) fn backend_addr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        if s.parse::<SocketAddr>().is_ok() {
            return self.socket_addr(key, s);
        }
        let hp = self.ok(
            key,
            HostPort::parse(s).map_err(|e| {
                format!("{e} (an address is 127.0.0.1:5222, [::1]:5222 or host.name:5222)")
            }),
        )?;
        use std::net::ToSocketAddrs;
        match (hp.host.as_str(), hp.port).to_socket_addrs() {
            Ok(mut addrs) => {
                let first = addrs.next();
                if first.is_none() {
                    self.err(key, format!("`{s}`: `{}` resolves to no address", hp.host));
                }
                first
            }
            Err(e) => {
                self.err(key, format!("`{s}`: cannot resolve `{}`: {e}", hp.host));
                None
            }
        }
    }

    pub(super) fn word<T: Copy>(
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

pub(super) const STARTTLS_WORDS: [(&str, StartTls); 3] = [
    ("required", StartTls::Required),
    ("optional", StartTls::Optional),
    ("off", StartTls::Off),
];

/// The backends' names in `BackendId` order, for keys that name one.
pub(super) struct Names<'a>(Vec<&'a str>);

impl Names<'_> {
    /// The backend `name` names, or an error at `key`.
    pub(super) fn find(&self, v: &mut Check, key: &str, name: &str) -> Option<BackendId> {
        let id = self.0.iter().position(|n| *n == name);
        if id.is_none() {
            v.err(key, format!("`{name}` names no backend in `backends`"));
        }
        id
    }
}

pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigErrors> {
    let mut v = Check::default();
    let domain = match &raw.domain {
        None => {
            v.err("domain", "required: the public XMPP domain");
            String::new()
        }
        Some(d) => v.ok("domain", parse_domain(d)).unwrap_or_default(),
    };
    let names = backends::names(&mut v, &raw);
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
        .and_then(|s| names.find(&mut v, "self", s));
    let backends = backends::section(&mut v, &raw, &domain, self_backend, c2s_mode, domains);
    let tls = backends::tls(&mut v, &raw, base);
    let (listen, default_starttls) = listen::section(&mut v, &raw);
    let c2s = c2s::section(&mut v, &raw, &names, c2s_mode, default_starttls);
    let routing = routing::section(&mut v, &raw, &names, domains);
    let (health, shutdown) = health::section(&mut v, &raw, &routing, domains);
    let s2s = s2s::section(&mut v, &raw, &names, &listen, &backends);
    cross::check(&mut v, domains, c2s_mode, self_backend, &listen, &backends);
    let services = services::section(&mut v, &raw, &names, &domain, &listen, &backends);
    services::not_dealt(&mut v, &services, &routing, &c2s, &s2s, &backends);
    let limits = limits::section(&mut v, &raw);
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
            services,
            hosts: Vec::new(),
            warnings: v.warnings,
        })
    } else {
        Err(ConfigErrors(v.errors))
    }
}
