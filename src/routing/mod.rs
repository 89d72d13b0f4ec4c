//! Who owns a user: normalise the username, then ask the strategy (hash or ranges).
//! Pure and without I/O; a [`Router`] is built once per config snapshot and shared.

pub mod hash;
pub mod health;
pub mod normalise;
pub mod ranges;

use std::fmt::Write as _;

use hash::HashRing;
use normalise::NormaliseError;
use ranges::{RangeMatch, RangeTable};

/// Index of a backend in the configuration's backend list (sorted by name, so stable
/// for a file).
pub type BackendId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Hash,
    Ranges,
}

/// How usernames are compared (the way the backends compare localparts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalise {
    Nodeprep,
    Precis,
}

/// A row of the range table: names from `from` to everything that starts with `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRow {
    pub from: String,
    pub to: String,
    pub backend: BackendId,
}

/// What a routing table is built from (the configuration's routing and backends).
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub strategy: Strategy,
    pub normalise: Normalise,
    /// Bounds already normalised; sorted by `from`, validated not to overlap.
    pub ranges: &'a [RangeRow],
    pub default: Option<BackendId>,
    /// `(name, weight)` in `BackendId` order.
    pub backends: Vec<(&'a str, u32)>,
    /// A down backend's users may move to the next hash choice.
    pub fallback: bool,
    /// Backends dealt no users (they host services).
    pub not_dealt: Vec<BackendId>,
}

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
    pub fn new(spec: &Spec<'_>) -> Router {
        Self::new_reusing(spec, None)
    }

    /// Build for `spec`, reusing `previous`'s hash table when the backends and their
    /// weights did not change (building one for 1,000 backends takes about a second).
    pub fn new_reusing(spec: &Spec<'_>, previous: Option<&Router>) -> Router {
        let prev_ring = match previous.map(|p| &p.table) {
            Some(Table::Hash(r)) => Some(r),
            _ => None,
        };
        let table = match spec.strategy {
            Strategy::Hash => Table::Hash(HashRing::new_reusing(
                spec.backends
                    .iter()
                    .enumerate()
                    .filter(|(id, _)| !spec.not_dealt.contains(id))
                    .map(|(id, &(name, weight))| (id, name, weight)),
                prev_ring,
            )),
            // Validation guarantees `default` with ranges; 0 keeps this total anyway.
            Strategy::Ranges => Table::Ranges(RangeTable::new(
                spec.ranges.to_vec(),
                spec.default.unwrap_or(0),
            )),
        };
        Router {
            normalise: spec.normalise,
            table,
            names: spec.backends.iter().map(|(n, _)| n.to_string()).collect(),
            fallback: spec.fallback,
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
