//! Configuration: `file` (the YAML as written) → `validate` (every error, each naming
//! its key) → [`Config`], an immutable, typed value. `Config` holds no derived state
//! (routing tables, TLS keys); those are built from it by the snapshot.

pub mod file;
pub mod validate;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

pub use values::{HostPort, Secret};

pub use crate::routing::{BackendId, Normalise, RangeRow, Strategy};

#[derive(Debug, Clone)]
pub struct Config {
    /// The public XMPP domain, nameprepped and lower-cased.
    pub domain: String,
    /// Guard role: the backend this instance sits in front of.
    pub self_backend: Option<BackendId>,
    pub tls: Option<TlsFiles>,
    pub listen: Listen,
    pub c2s: C2s,
    pub domains: Domains,
    pub routing: Routing,
    /// Sorted by name; a [`BackendId`] indexes this.
    pub backends: Vec<Backend>,
    pub health: Health,
    pub shutdown: Shutdown,
    pub s2s: S2s,
    pub limits: Limits,
    /// Service domains (MUC, upload, pubsub, components), each hosted by one backend
    /// under its public name; sorted by domain.
    pub services: Vec<Service>,
    /// More public domains (`hosts:`), each a whole config that shares this one's
    /// listeners, c2s, limits, health and shutdown settings; sorted by domain. Empty
    /// in a host's own config.
    pub hosts: Vec<Config>,
    /// Things that are legal but probably not meant; `dealer check` prints them.
    pub warnings: Vec<String>,
}

impl Config {
    /// Read, parse and validate a file. Relative paths inside it (certificates) are
    /// taken relative to the file's own directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, base)
    }

    /// Parse and validate YAML text; `base` anchors relative paths.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let raw = file::parse(text).map_err(|e| ConfigErrors::one(String::new(), e))?;
        // Read again as a tree only when there are hosts: the tree refuses a key
        // written twice, which `backends` reports itself, naming the backend.
        let hosts = if raw.hosts.is_empty() {
            Vec::new()
        } else {
            file::hosts(text).map_err(|e| ConfigErrors::one(String::new(), e))?
        };
        let primary = validate::validate(raw, base);
        validate::hosts::attach(primary, hosts, base)
    }

    /// This config and its hosts: every public domain dealer serves.
    pub fn all(&self) -> impl Iterator<Item = &Config> {
        std::iter::once(self).chain(self.hosts.iter())
    }

    pub fn backend_id(&self, name: &str) -> Option<BackendId> {
        self.backends.iter().position(|b| b.name == name)
    }

    /// The service at `domain` (already lower-case, no trailing dot), if it is one.
    pub fn service(&self, domain: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| crate::jid::same_domain(domain, &s.domain))
    }

    /// Whether `id` hosts a service (and so is dealt no users).
    pub fn hosts_service(&self, id: BackendId) -> bool {
        self.services.iter().any(|s| s.backend == id)
    }

    /// What the routing table is built from.
    pub fn routing_spec(&self) -> crate::routing::Spec<'_> {
        crate::routing::Spec {
            strategy: self.routing.strategy,
            normalise: self.routing.normalise,
            ranges: &self.routing.ranges,
            default: self.routing.default,
            backends: self
                .backends
                .iter()
                .map(|b| (b.name.as_str(), b.weight))
                .collect(),
            fallback: self.health.fallback,
            not_dealt: self.services.iter().map(|s| s.backend).collect(),
        }
    }
}

/// A service domain and the backend that hosts it under that very name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub domain: String,
    pub backend: BackendId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct Listen {
    pub c2s: Vec<Listener>,
    pub c2s_tls: Vec<Listener>,
    pub s2s: Vec<Listener>,
    /// Direct TLS federation listeners (XEP-0368, `_xmpps-server._tcp`).
    pub s2s_tls: Vec<Listener>,
    pub s2s_internal: Vec<Listener>,
    pub http: Option<SocketAddr>,
    /// RFC 7395 listeners (`starttls: off`: TLS, if any, comes with the HTTP upgrade).
    pub websocket: Vec<WsListener>,
}

/// A WebSocket listener: HTTP/1.1 upgrades on `path`, on plain TCP (behind a TLS
/// terminator) or TLS with the public domain's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsListener {
    pub listener: Listener,
    pub tls: bool,
    /// The upgrade path (`/xmpp-websocket` by default).
    pub path: String,
    /// `Origin` headers allowed (exactly as sent, e.g. `https://chat.example.com`);
    /// empty: any origin (XMPP authenticates inside the stream; no cookie rides on it).
    pub origins: Vec<String>,
    /// The WebSocket URL `/.well-known/host-meta` publishes (XEP-0156); `None`: 404.
    pub host_meta: Option<String>,
}

/// The path a WebSocket listener upgrades on unless told otherwise.
pub const WEBSOCKET_PATH: &str = "/xmpp-websocket";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// For STARTTLS listeners; Direct TLS listeners carry `Off` (TLS is already up).
    pub starttls: StartTls,
    /// Expect a PROXY protocol v1/v2 header before anything else.
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    Required,
    Optional,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum C2sMode {
    Forward,
    Redirect,
}

/// SASL mechanisms dealer can peek: the client speaks first, and nothing binds the
/// exchange to the TLS session that ends at dealer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mechanism {
    ScramSha256,
    ScramSha1,
    Plain,
    Anonymous,
}

impl Mechanism {
    pub const ALL: [Mechanism; 4] = [
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
        Mechanism::Anonymous,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
            Mechanism::Anonymous => "ANONYMOUS",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
pub struct C2s {
    pub mode: C2sMode,
    pub starttls: StartTls,
    /// In the operator's order of preference, without duplicates.
    pub mechanisms: Vec<Mechanism>,
    pub legacy_auth: bool,
    pub registration: bool,
    pub anonymous_backend: Option<BackendId>,
    pub warm: Warm,
}

/// Warm backend streams (forward mode): how many each worker thread keeps open per
/// backend, and how long one may wait before it is closed unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warm {
    pub streams: usize,
    pub max_age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domains {
    Shared,
    Masked,
}

#[derive(Debug, Clone)]
pub struct Routing {
    pub strategy: Strategy,
    pub normalise: Normalise,
    /// Bounds already normalised; sorted by `from`, validated not to overlap.
    pub ranges: Vec<RangeRow>,
    pub default: Option<BackendId>,
    /// On a reload that moves users, close their relayed sessions so their clients
    /// reconnect to the new owner (hash strategy, shared domains only).
    pub redeal_on_reload: bool,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub c2s: Option<SocketAddr>,
    pub s2s: Option<SocketAddr>,
    pub domain: Option<String>,
    /// What see-other-host names for clients that came over STARTTLS (or plaintext).
    pub redirect: Option<HostPort>,
    /// The same for clients that came over Direct TLS; `redirect` when unset.
    pub redirect_tls: Option<HostPort>,
    /// The `see-other-uri` (`ws://` or `wss://`) for WebSocket clients.
    pub redirect_websocket: Option<String>,
    pub weight: u32,
    pub tls: bool,
    pub proxy_protocol: bool,
}

impl Backend {
    /// The redirect target for a client that arrived over `transport`: each transport
    /// is sent to the owner's address for the same transport (`host:port`, or for
    /// WebSocket a URL).
    pub fn redirect_for(&self, transport: Transport) -> Option<String> {
        match transport {
            Transport::DirectTls => self
                .redirect_tls
                .as_ref()
                .or(self.redirect.as_ref())
                .map(HostPort::to_string),
            Transport::Websocket => self.redirect_websocket.clone(),
            Transport::Stream => self.redirect.as_ref().map(HostPort::to_string),
        }
    }
}

/// How a client reached dealer, for the redirect target of the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP with STARTTLS or plaintext.
    Stream,
    DirectTls,
    Websocket,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Whether a down backend's users go to the next hash choice (hash + shared only).
    pub fallback: bool,
}

#[derive(Debug, Clone)]
pub struct Shutdown {
    pub grace: Duration,
}

#[derive(Debug, Clone)]
pub struct S2s {
    pub dialback_secret: Option<Secret>,
    pub domain_backend: Option<BackendId>,
    pub internal_allow: Vec<IpNet>,
    pub resolver: Option<SocketAddr>,
    pub routes: BTreeMap<String, HostPort>,
    /// Bytes of stanzas one link may hold while it comes up or its peer is slow.
    pub queue_bytes_per_link: usize,
    /// Bytes of stanzas all links together may hold.
    pub queue_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxConnections {
    /// Derived at start from the descriptor limit (two descriptors a session).
    Auto,
    Fixed(u64),
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub handshake_timeout: Duration,
    /// For a backend to accept a forwarded client's connection and open its stream.
    pub backend_connect_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_stanza_bytes: usize,
    pub max_depth: usize,
    pub max_attributes: usize,
    pub max_connections: MaxConnections,
    /// 0 = unlimited.
    pub max_connections_per_source: u64,
    /// 0 = unlimited.
    pub logins_per_source_per_second: u64,
    /// Refused logins one stream may have before it is closed; 0 = unlimited.
    pub max_failed_logins: u32,
}

/// One problem in a configuration, with the key it concerns (`routing.ranges[1].to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every problem found in one file, in the order found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            key: key.into(),
            message: message.into(),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
