//! `hosts`: more public domains in one dealer. Each host is validated as a whole
//! config (the top level with the host's own keys in place of the first domain's);
//! its errors are reported under `hosts.<domain>.`, and what the domains share
//! (listeners, c2s, limits, health) is reported once, at the top level. Across
//! domains: no public or service domain twice, and backend names unique, so a metric's
//! `backend` label and a health record name one backend.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::file::{HOST_KEYS, RawConfig};
use crate::config::{Config, ConfigError, ConfigErrors};

pub(crate) fn attach(
    primary: Result<Config, ConfigErrors>,
    hosts: Vec<(String, RawConfig)>,
    base: &Path,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut configs = Vec::new();
    let shared: Vec<(String, String)> = match &primary {
        Err(ConfigErrors(es)) => es
            .iter()
            .map(|e| (e.key.clone(), e.message.clone()))
            .collect(),
        Ok(_) => Vec::new(),
    };
    for (name, raw) in hosts {
        let own = |key: &str| {
            key == "domain"
                || HOST_KEYS.iter().any(|k| {
                    key == *k
                        || key.starts_with(&format!("{k}."))
                        || key.starts_with(&format!("{k}["))
                })
        };
        match super::validate(raw, base) {
            Ok(c) => configs.push((name, c)),
            Err(ConfigErrors(es)) => {
                for e in es {
                    if own(&e.key) {
                        errors.push(ConfigError {
                            key: format!("hosts.{name}.{}", e.key),
                            message: e.message,
                        });
                    } else if !shared.contains(&(e.key.clone(), e.message.clone())) {
                        // A shared setting this host needs (a masked host needs
                        // listen.s2s_internal): said once, naming the host.
                        errors.push(ConfigError {
                            key: format!("hosts.{name}"),
                            message: format!("{}: {}", e.key, e.message),
                        });
                    }
                }
            }
        }
    }
    let mut primary = match primary {
        Ok(c) if errors.is_empty() => c,
        Ok(_) => return Err(ConfigErrors(errors)),
        Err(ConfigErrors(mut es)) => {
            es.extend(errors);
            return Err(ConfigErrors(es));
        }
    };
    // Every public and service domain once; every backend name once.
    let mut domains: BTreeMap<String, String> = BTreeMap::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let all = std::iter::once((String::new(), &primary))
        .chain(configs.iter().map(|(n, c)| (n.clone(), c)));
    for (name, c) in all {
        let at = |k: &str| {
            if name.is_empty() {
                k.to_owned()
            } else {
                format!("hosts.{name}.{k}")
            }
        };
        let owner = if name.is_empty() {
            c.domain.clone()
        } else {
            name.clone()
        };
        let served = std::iter::once((at("domain"), c.domain.clone())).chain(
            c.services
                .iter()
                .map(|s| (at(&format!("services.{}", s.domain)), s.domain.clone())),
        );
        for (key, d) in served {
            if let Some(first) = domains.insert(d.clone(), owner.clone()) {
                errors.push(ConfigError {
                    key,
                    message: format!("{d} is served twice (also by {first})"),
                });
            }
        }
        for b in &c.backends {
            if let Some(first) = names.insert(b.name.clone(), owner.clone()) {
                errors.push(ConfigError {
                    key: at(&format!("backends.{}", b.name)),
                    message: format!(
                        "the name is taken by a backend of {first}: names are unique across domains"
                    ),
                });
            }
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    for (name, c) in &mut configs {
        for w in std::mem::take(&mut c.warnings) {
            if !primary.warnings.contains(&w) {
                primary.warnings.push(format!("hosts.{name}: {w}"));
            }
        }
    }
    primary.hosts = configs.into_iter().map(|(_, c)| c).collect();
    Ok(primary)
}
