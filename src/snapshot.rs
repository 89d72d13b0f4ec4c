//! A snapshot is everything a session needs to make decisions, built completely before
//! it is published: the validated config, its routing table, its TLS key, and the
//! health state of its backends. Sessions load the live snapshot once, at routing
//! time; a reload builds a new one beside it and swaps it in with one atomic store.

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::{Backend, BackendId, Config, ConfigErrors, Mechanism};
use crate::routing::health::BackendHealth;
use crate::routing::{Decision, RouteError, Router};

/// Health state of every backend any live snapshot names.
#[derive(Debug, Default)]
pub struct HealthRegistry {
    map: Mutex<HashMap<String, Arc<BackendHealth>>>,
}

impl HealthRegistry {
    fn key(b: &Backend) -> String {
        format!("{}@{:?}", b.name, b.c2s)
    }

    /// The state for each of `config`'s backends, indexed by `BackendId`.
    pub fn for_config(&self, config: &Config) -> Vec<Arc<BackendHealth>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let v: Vec<Arc<BackendHealth>> = config
            .backends
            .iter()
            .map(|b| map.entry(Self::key(b)).or_default().clone())
            .collect();
        // Forget backends no snapshot can name any more (only this one is kept).
        map.retain(|_, h| Arc::strong_count(h) > 1);
        v
    }
}

/// The live snapshot: loaded by sessions, replaced whole by a reload.
pub type Live = Arc<arc_swap::ArcSwap<Snapshot>>;

#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    /// The public domain's certificate, when `tls` is configured.
    pub tls_key: Option<Arc<CertifiedKey>>,
    /// Indexed by `BackendId`; shared with other snapshots naming the same backend.
    pub health: Vec<Arc<BackendHealth>>,
    /// 1 for the config read at start, +1 for each successful reload.
    pub generation: u64,
}

impl Snapshot {
    /// Build from a validated config; `previous` lets unchanged parts (the hash table)
    /// be shared instead of rebuilt.
    pub fn build(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
        health: &HealthRegistry,
    ) -> Result<Snapshot, ConfigErrors> {
        let tls_key = match &config.tls {
            Some(files) => {
                Some(crate::tls::load_key(files).map_err(|e| ConfigErrors::one("tls", e))?)
            }
            None => None,
        };
        let router = Router::new_reusing(&config.routing_spec(), previous.map(|p| &p.router));
        let health = health.for_config(&config);
        Ok(Snapshot {
            config,
            router,
            tls_key,
            health,
            generation,
        })
    }

    /// Read, validate and build; the whole of `dealer check`.
    pub fn load(
        path: &Path,
        generation: u64,
        health: &HealthRegistry,
    ) -> Result<Snapshot, ConfigErrors> {
        Snapshot::build(Config::load(path)?, generation, None, health)
    }

    /// Load the next generation after `previous`, sharing what did not change.
    pub fn reload(
        path: &Path,
        previous: &Snapshot,
        health: &HealthRegistry,
    ) -> Result<Snapshot, ConfigErrors> {
        Snapshot::build(
            Config::load(path)?,
            previous.generation + 1,
            Some(previous),
            health,
        )
    }

    #[inline]
    pub fn is_up(&self, id: BackendId) -> bool {
        self.health[id].is_up()
    }

    /// Route a username with the backends' current health.
    pub fn route(&self, name: &str) -> Result<Decision, RouteError> {
        self.router.route_with(name, |id| self.is_up(id))
    }

    /// The SASL mechanisms to offer: those configured that every backend whose
    /// mechanisms are known also offers (DESIGN.md §3.2).
    pub fn mechanisms(&self) -> Vec<Mechanism> {
        self.config
            .c2s
            .mechanisms
            .iter()
            .copied()
            .filter(|m| {
                let offers = |h: &Arc<BackendHealth>| {
                    h.offer()
                        .is_none_or(|offered| offered.mechanisms.iter().any(|o| o == m.name()))
                };
                match (m, self.config.c2s.anonymous_backend) {
                    // Only the anonymous backend ever sees ANONYMOUS logins.
                    (Mechanism::Anonymous, Some(a)) => offers(&self.health[a]),
                    _ => self.health.iter().all(offers),
                }
            })
            .collect()
    }

    /// `NAME<TAB>BACKEND` (plus `<TAB>why` when `explain`), as `dealer route` prints it
    /// and `/route` answers; `Err` carries `NAME<TAB>-<TAB>error` for a name that cannot
    /// be routed.
    pub fn route_line(&self, name: &str, explain: bool) -> Result<String, String> {
        match self.route(name) {
            Ok(d) => {
                let backend = self.router.backend_name(d.backend);
                if explain {
                    Ok(format!(
                        "{name}\t{backend}\t{}\n",
                        self.router.explain(name, &d)
                    ))
                } else {
                    Ok(format!("{name}\t{backend}\n"))
                }
            }
            Err(e) => Err(format!("{name}\t-\t{e}\n")),
        }
    }
}
