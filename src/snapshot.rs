//! A snapshot is everything a session needs to make decisions, built completely before
//! it is published: the validated config, its routing table and (later) its TLS
//! material. Sessions load the live snapshot once, at routing time; a reload builds a
//! new one beside it and swaps it in with one atomic store.

use std::path::Path;

use crate::config::{Config, ConfigErrors};
use crate::routing::Router;

#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub router: Router,
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
    ) -> Result<Snapshot, ConfigErrors> {
        let router = Router::new_reusing(&config, previous.map(|p| &p.router));
        Ok(Snapshot {
            config,
            router,
            generation,
        })
    }

    /// Read, validate and build; the whole of `dealer check`.
    pub fn load(path: &Path, generation: u64) -> Result<Snapshot, ConfigErrors> {
        Snapshot::build(Config::load(path)?, generation, None)
    }

    /// Load the next generation after `previous`, sharing what did not change.
    pub fn reload(path: &Path, previous: &Snapshot) -> Result<Snapshot, ConfigErrors> {
        Snapshot::build(Config::load(path)?, previous.generation + 1, Some(previous))
    }
}

impl Snapshot {
    /// `NAME<TAB>BACKEND` (plus `<TAB>why` when `explain`), as `dealer route` prints it
    /// and `/route` answers; `Err` carries `NAME<TAB>-<TAB>error` for a name that cannot
    /// be routed.
    pub fn route_line(
        &self,
        name: &str,
        up: impl Fn(crate::config::BackendId) -> bool,
        explain: bool,
    ) -> Result<String, String> {
        match self.router.route_with(name, up) {
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
