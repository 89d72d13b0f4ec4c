//! dealer: an XMPP-aware load-balancing proxy. Modules in data-flow order:
//!
//! - [`config`]: the YAML file → validated, typed `Config`.
//! - [`routing`]: who owns a user (normalise, then hash or ranges); health state; pure.
//! - [`snapshot`]: config + routing table + TLS key + backend health, built whole and
//!   swapped atomically.
//! - [`reload`]: SIGHUP → new snapshot → one `ArcSwap::store`.
//! - [`app`]: the instance assembled (each part gets its own context), `run`, and
//!   `start` (the whole of `dealer --config FILE`, one runtime per CPU).
//! - [`listener`]: accept loops and connection limits.
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers, parsed and encoded; sans-IO.
//! - [`tls`]: rustls configs; the certificate follows the live snapshot.
//! - [`net`], [`stream`]: a plain-or-TLS connection, and an XML stream over it (with
//!   its TLS upgrades: Direct TLS, and the one STARTTLS, server and client side).
//! - [`xml`]: the one incremental framer, stream headers, stream errors.
//! - [`c2s`]: client sessions: pre-auth, auth peek, early routing, redirect, forward.
//! - [`websocket`]: the RFC 7395 front: HTTP upgrade, and a WebSocket read and
//!   written as an XML stream.
//! - [`backend`]: the leg to a backend: connect, stream open, STARTTLS, features.
//! - [`relay`]: splice (plain legs), copy (TLS legs) and masked (JIDs rewritten).
//! - [`masking`]: JID rewriting rules for masked domains, by byte range, without a DOM.
//! - [`checks`]: backend health checks (their rise/fall state is `routing::health`).
//! - [`sessions`]: live relayed sessions, for shutdown and re-dealing.
//! - [`s2s`]: the federation face: inbound, internal, links out, dialback.
//! - [`jid`]: JID splitting for routing.
//! - [`metrics`]: metric names, the registry, the HTTP endpoint.
//! - [`fdlimit`]: the descriptor budget `limits.max_connections` derives from.
//! - [`shutdown`]: lifecycle phases and signals.
//! - [`systemd`]: readiness notifications and socket activation.
//! - [`logging`]: text or JSON log lines on stderr.

#![forbid(unsafe_code)]

pub mod app;
pub mod backend;
pub mod c2s;
pub mod checks;
pub mod config;
pub mod fdlimit;
pub mod jid;
pub mod listener;
pub mod logging;
pub mod masking;
pub mod metrics;
pub mod net;
pub mod proxy_protocol;
pub mod relay;
pub mod reload;
pub mod routing;
pub mod s2s;
pub mod sessions;
pub mod shutdown;
pub mod snapshot;
pub mod stream;
pub mod systemd;
pub mod tls;
pub mod websocket;
pub mod xml;
