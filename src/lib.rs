//! dealer: an XMPP-aware load-balancing proxy. Modules in data-flow order:
//!
//! - [`config`]: the YAML file → validated, typed `Config`.
//! - [`routing`]: who owns a user (normalise, then hash or ranges); pure.
//! - [`snapshot`]: config + routing table, built whole and swapped atomically.
//! - [`reload`]: SIGHUP → new snapshot → one `ArcSwap::store`.
//! - [`app`]: shared state and `run(listeners, shared, stop)`.
//! - [`metrics`]: metric names, the registry, the HTTP endpoint.
//! - [`limits`]: process-wide limits (descriptors).
//! - [`shutdown`]: lifecycle phases and signals.

pub mod app;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod reload;
pub mod routing;
pub mod shutdown;
pub mod snapshot;
pub mod xml;
