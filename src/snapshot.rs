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

/// SASL2 as dealer offers it on its own stream (`Snapshot::sasl2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl2Offer {
    pub mechanisms: Vec<String>,
    pub bind2: bool,
    pub fast: Vec<String>,
}

impl Sasl2Offer {
    /// Whether a client may start with `mechanism` (a FAST one among them).
    pub fn allows(&self, mechanism: &str) -> bool {
        self.mechanisms
            .iter()
            .chain(&self.fast)
            .any(|m| m == mechanism)
    }
}

/// The live snapshot: loaded by sessions, replaced whole by a reload.
pub type Live = Arc<arc_swap::ArcSwap<Snapshot>>;

#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    /// This public domain's certificate, when `tls` is configured.
    pub tls_key: Option<Arc<CertifiedKey>>,
    /// Indexed by `BackendId`; shared with other snapshots naming the same backend.
    pub health: Vec<Arc<BackendHealth>>,
    /// 1 for the config read at start, +1 for each successful reload.
    pub generation: u64,
    /// One snapshot per further public domain (`config.hosts`, same order), built and
    /// published with this one: a reload swaps every domain at once or none.
    pub hosts: Vec<Arc<Snapshot>>,
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
        let mut config = config;
        if let Some(key) = &tls_key {
            // Federated servers check the certificate for each service domain dealer
            // speaks for; the backends behind it are never asked.
            for d in crate::tls::not_covered(key, config.services.iter().map(|s| s.domain.as_str()))
            {
                let w = format!(
                    "the certificate does not cover the service domain {d} (SAN or wildcard): federated servers that check it will refuse it"
                );
                config.warnings.push(w);
            }
        }
        let router = Router::new_reusing(&config.routing_spec(), previous.map(|p| &p.router));
        let health_now = health.for_config(&config);
        let hosts = config
            .hosts
            .iter()
            .map(|h| {
                let before = previous.and_then(|p| p.host(&h.domain));
                Snapshot::build(h.clone(), generation, before, health)
                    .map(Arc::new)
                    .map_err(|ConfigErrors(es)| {
                        ConfigErrors(
                            es.into_iter()
                                .map(|e| crate::config::ConfigError {
                                    key: format!("hosts.{}.{}", h.domain, e.key),
                                    message: e.message,
                                })
                                .collect(),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Its hosts' warnings (the certificate check) are the whole config's.
        for h in &hosts {
            for w in &h.config.warnings {
                let w = format!("hosts.{}: {w}", h.config.domain);
                if !config.warnings.contains(&w) {
                    config.warnings.push(w);
                }
            }
        }
        Ok(Snapshot {
            config,
            router,
            tls_key,
            health: health_now,
            generation,
            hosts,
        })
    }

    /// The snapshot of the public domain `domain` (lower-case, no trailing dot): this
    /// one or one of its hosts.
    pub fn host(&self, domain: &str) -> Option<&Snapshot> {
        self.all()
            .find(|s| crate::jid::same_domain(domain, &s.config.domain))
    }

    /// `host`, as an owned handle a session can keep.
    pub fn select(self: &Arc<Self>, domain: &str) -> Option<Arc<Snapshot>> {
        if crate::jid::same_domain(domain, &self.config.domain) {
            return Some(self.clone());
        }
        self.hosts
            .iter()
            .find(|h| crate::jid::same_domain(domain, &h.config.domain))
            .cloned()
    }

    /// The snapshot serving `domain` as its public domain, one of its service domains
    /// or (masked) one of its backends' internal domains.
    pub fn serving(&self, domain: &str) -> Option<&Snapshot> {
        self.all().find(|s| {
            let c = &s.config;
            crate::jid::same_domain(domain, &c.domain)
                || c.service(domain).is_some()
                || c.backends.iter().any(|b| {
                    b.domain
                        .as_deref()
                        .is_some_and(|d| crate::jid::same_domain(domain, d))
                })
        })
    }

    /// The snapshot that answers for `domain` to the federation: its public domain
    /// or one of its service domains.
    pub fn answering(&self, domain: &str) -> Option<&Snapshot> {
        self.all().find(|s| {
            crate::jid::same_domain(domain, &s.config.domain) || s.config.service(domain).is_some()
        })
    }

    /// The snapshot whose backends include one named `name` (names are unique across
    /// domains).
    pub fn with_backend(&self, name: &str) -> Option<&Snapshot> {
        self.all().find(|s| s.config.backend_id(name).is_some())
    }

    /// Every domain's dialback secret (keys from any of them are dealer's own).
    pub fn dialback_secrets(&self) -> impl Iterator<Item = &str> {
        self.all()
            .filter_map(|s| s.config.s2s.dialback_secret.as_ref().map(|x| x.expose()))
    }

    /// This snapshot and its hosts'.
    pub fn all(&self) -> impl Iterator<Item = &Snapshot> {
        std::iter::once(self).chain(self.hosts.iter().map(|h| h.as_ref()))
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

    /// What dealer offers of SASL2 (XEP-0388) on its own stream: only when every
    /// backend's last check saw SASL2, the mechanisms of `c2s.mechanisms` that every
    /// backend offers there (never ANONYMOUS), Bind2 when every backend has it, and
    /// the FAST mechanisms every backend has. `None` while any backend lacks SASL2 or
    /// has not been checked yet.
    pub fn sasl2(&self) -> Option<Sasl2Offer> {
        // The backends clients log in on (not those that only host services).
        let offers: Vec<Arc<crate::routing::health::Offer>> = self
            .health
            .iter()
            .enumerate()
            .filter(|(id, _)| {
                self.config.backends[*id].c2s.is_some() && !self.config.hosts_service(*id)
            })
            .map(|(_, h)| h.offer())
            .collect::<Option<_>>()?;
        if offers.is_empty() {
            return None;
        }
        let lists: Vec<&Vec<String>> = offers
            .iter()
            .map(|o| o.sasl2.as_ref())
            .collect::<Option<_>>()?;
        let everywhere = |m: &str, list: fn(&crate::routing::health::Offer) -> &Vec<String>| {
            offers.iter().all(|o| list(o).iter().any(|x| x == m))
        };
        let mechanisms: Vec<String> = self
            .config
            .c2s
            .mechanisms
            .iter()
            .filter(|m| **m != Mechanism::Anonymous)
            .map(|m| m.name().to_owned())
            .filter(|m| lists.iter().all(|l| l.contains(m)))
            .collect();
        if mechanisms.is_empty() {
            return None;
        }
        let fast = offers[0]
            .fast
            .iter()
            .filter(|m| m.starts_with("HT-") && everywhere(m, |o| &o.fast))
            .cloned()
            .collect();
        Some(Sasl2Offer {
            mechanisms,
            bind2: offers.iter().all(|o| o.bind2),
            fast,
        })
    }

    /// `NAME<TAB>BACKEND` (plus `<TAB>why` when `explain`), as `dealer route` prints it
    /// and `/route` answers; `Err` carries `NAME<TAB>-<TAB>error` for a name that cannot
    /// be routed.
    pub fn route_line(&self, name: &str, explain: bool) -> Result<String, String> {
        // `NAME@DOMAIN` asks a given public domain; a bare name, the first.
        if let Some((local, domain)) = name.rsplit_once('@') {
            let Some(host) = self.host(&crate::jid::domain_key(domain)) else {
                return Err(format!("{name}\t-\t{domain} is not served here\n"));
            };
            return host.route_one(name, local, explain);
        }
        self.route_one(name, name, explain)
    }

    fn route_one(&self, name: &str, local: &str, explain: bool) -> Result<String, String> {
        match self.route(local) {
            Ok(d) => {
                let backend = self.router.backend_name(d.backend);
                if explain {
                    Ok(format!(
                        "{name}\t{backend}\t{}\n",
                        self.router.explain(local, &d)
                    ))
                } else {
                    Ok(format!("{name}\t{backend}\n"))
                }
            }
            Err(e) => Err(format!("{name}\t-\t{e}\n")),
        }
    }
}
