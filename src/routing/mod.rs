//! Who owns a user: normalise the username, then ask the strategy (hash or ranges).
//! Pure and without I/O; a [`Router`] is built once per config snapshot and shared.

pub mod hash;
pub mod health;
pub mod normalise;
pub mod ranges;

use std::fmt::Write as _;

use crate::config::{BackendId, Config, Normalise, Strategy};
use hash::HashRing;
use normalise::NormaliseError;
use ranges::{RangeMatch, RangeTable};

#[derive(Debug, Clone)]
enum Table {
    Hash(HashRing),
    Ranges(RangeTable),
}

/// The routing brain of one config snapshot.
#[derive(Debug, Clone)]
pub struct Router {
    normalise: Normalise,
    table: Table,
    names: Vec<String>,
    /// A down backend's users may move to the next hash choice.
    fallback: bool,
}

/// Why a name went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The hash's first choice for this slot.
    Hash {
        slot: u32,
    },
    /// The first choice was down; this is the best choice among those up.
    HashFallback {
        slot: u32,
        first: BackendId,
    },
    Row(usize),
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub backend: BackendId,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("invalid username: {0}")]
    Name(#[from] NormaliseError),
    #[error("backend `{0}` owns this user and is down")]
    OwnerDown(String),
    #[error("no backend is up")]
    NoneUp,
}

impl Router {
    pub fn new(config: &Config) -> Router {
        Self::new_reusing(config, None)
    }

    /// Build for `config`, reusing `previous`'s hash table when the backends and their
    /// weights did not change (building one for 1,000 backends takes about a second).
    pub fn new_reusing(config: &Config, previous: Option<&Router>) -> Router {
        let prev_ring = match previous.map(|p| &p.table) {
            Some(Table::Hash(r)) => Some(r),
            _ => None,
        };
        let table = match config.routing.strategy {
            Strategy::Hash => Table::Hash(HashRing::new_reusing(
                config
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(id, b)| (id, b.name.as_str(), b.weight)),
                prev_ring,
            )),
            // Validation guarantees `default` with ranges; 0 keeps this total anyway.
            Strategy::Ranges => Table::Ranges(RangeTable::new(
                config.routing.ranges.clone(),
                config.routing.default.unwrap_or(0),
            )),
        };
        Router {
            normalise: config.routing.normalise,
            table,
            names: config.backends.iter().map(|b| b.name.clone()).collect(),
            fallback: config.health.fallback,
        }
    }

    pub fn backend_name(&self, id: BackendId) -> &str {
        &self.names[id]
    }

    pub fn normalise<'a>(
        &self,
        name: &'a str,
    ) -> Result<std::borrow::Cow<'a, str>, NormaliseError> {
        normalise::normalise(self.normalise, name)
    }

    /// Route with every backend considered up.
    pub fn route(&self, name: &str) -> Result<Decision, RouteError> {
        self.route_with(name, |_| true)
    }

    /// Route a raw username given which backends are up.
    pub fn route_with(
        &self,
        name: &str,
        up: impl Fn(BackendId) -> bool,
    ) -> Result<Decision, RouteError> {
        let n = self.normalise(name)?;
        self.route_normalised(&n, up)
    }

    pub fn route_normalised(
        &self,
        n: &str,
        up: impl Fn(BackendId) -> bool,
    ) -> Result<Decision, RouteError> {
        let d = match &self.table {
            Table::Hash(ring) => {
                let slot = hash::slot_of(n);
                let first = ring.owner(slot);
                if up(first) {
                    Decision {
                        backend: first,
                        reason: Reason::Hash { slot },
                    }
                } else if self.fallback {
                    let backend = ring.owner_among(slot, &up).ok_or(RouteError::NoneUp)?;
                    Decision {
                        backend,
                        reason: Reason::HashFallback { slot, first },
                    }
                } else {
                    return Err(RouteError::OwnerDown(self.names[first].clone()));
                }
            }
            Table::Ranges(t) => {
                let (backend, m) = t.lookup(n);
                let reason = match m {
                    RangeMatch::Row(i) => Reason::Row(i),
                    RangeMatch::Default => Reason::Default,
                };
                if !up(backend) {
                    return Err(RouteError::OwnerDown(self.names[backend].clone()));
                }
                Decision { backend, reason }
            }
        };
        Ok(d)
    }

    /// One line saying why `name` goes where it goes (for `dealer route --explain` and
    /// `/route`).
    pub fn explain(&self, name: &str, decision: &Decision) -> String {
        let n = self
            .normalise(name)
            .map(|c| c.into_owned())
            .unwrap_or_default();
        let mut s = String::new();
        if n != name {
            let _ = write!(s, "normalised to `{n}`; ");
        }
        match (&self.table, decision.reason) {
            (Table::Hash(ring), Reason::Hash { slot } | Reason::HashFallback { slot, .. }) => {
                let _ = write!(s, "hash slot {slot} of {}: ", hash::SLOTS);
                let rank = ring.ranking(slot);
                for (i, r) in rank.iter().take(3).enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    let _ = write!(s, "{}. {} ({:.6})", i + 1, self.names[r.id], r.score);
                }
                if rank.len() > 3 {
                    s.push_str(", …");
                }
                if let Reason::HashFallback { first, .. } = decision.reason {
                    let _ = write!(s, "; {} is down, next choice up", self.names[first]);
                }
            }
            (Table::Ranges(t), Reason::Row(i)) => {
                let r = t.row(i);
                let _ = write!(s, "row `{}`-`{}`", r.from, r.to);
            }
            (Table::Ranges(_), _) => s.push_str("outside every row: default"),
            (Table::Hash(_), _) => s.push_str("hash"),
        }
        s
    }
}
