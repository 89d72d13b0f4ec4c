//! `services`: service domains (MUC, upload, pubsub, components), each hosted by one
//! backend under its public name. Such a backend is dealt no users, and a service
//! domain is neither the public domain nor under a backend's internal one.

use super::{Check, Names};
use crate::config::file::RawConfig;
use crate::config::values::parse_domain;
use crate::config::*;

pub(super) fn section(
    v: &mut Check,
    raw: &RawConfig,
    names: &Names<'_>,
    domain: &str,
    listen: &Listen,
    backends: &[Backend],
) -> Vec<Service> {
    let mut out = Vec::new();
    for (d, s) in &raw.services {
        let key = format!("services.{d}");
        let Some(service) = v.ok(&key, parse_domain(d)) else {
            continue;
        };
        if service == domain {
            v.err(
                &key,
                "the public domain is served by the user backends, not a service",
            );
            continue;
        }
        if let Some(b) = backends.iter().find(|b| {
            b.domain
                .as_deref()
                .is_some_and(|i| service == i || service.ends_with(&format!(".{i}")))
        }) {
            v.err(
                &key,
                format!("`{service}` is under backend `{}`'s internal domain: a service has a public name", b.name),
            );
        }
        let Some(id) = names.find(v, &format!("{key}.backend"), &s.backend) else {
            continue;
        };
        if backends.get(id).is_some_and(|b| b.s2s.is_none()) {
            v.err(
                format!("backends.{}.s2s", s.backend),
                "required: stanzas to its service are delivered there",
            );
        }
        out.push(Service {
            domain: service,
            backend: id,
        });
    }
    if !out.is_empty() && listen.s2s_internal.is_empty() {
        v.err(
            "listen.s2s_internal",
            "required with `services`: the user backends reach the services through it, and the services their occupants",
        );
    }
    out.sort_by(|a, b| a.domain.cmp(&b.domain));
    out
}

/// A backend that hosts a service is dealt no users: no range row, default, bare
/// domain or anonymous login may name it.
pub(super) fn not_dealt(
    v: &mut Check,
    services: &[Service],
    routing: &Routing,
    c2s: &C2s,
    s2s: &S2s,
    backends: &[Backend],
) {
    for s in services {
        let name = &backends[s.backend].name;
        let mut names_it = |key: &str, id: Option<BackendId>| {
            if id == Some(s.backend) {
                v.err(
                    key,
                    format!(
                        "`{name}` hosts the service {}: it is dealt no users",
                        s.domain
                    ),
                );
            }
        };
        for (i, r) in routing.ranges.iter().enumerate() {
            names_it(&format!("routing.ranges[{i}].backend"), Some(r.backend));
        }
        names_it("routing.default", routing.default);
        names_it("c2s.anonymous_backend", c2s.anonymous_backend);
        names_it("s2s.domain_backend", s2s.domain_backend);
    }
    if !services.is_empty() && services.len() >= backends.len() {
        v.err(
            "services",
            "every backend hosts a service: none is left for the users",
        );
    }
}
