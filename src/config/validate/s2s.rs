//! `s2s`: the dialback secret, the bare domain's backend, who may use the internal
//! listener, the resolver, static routes, and the queues' bounds in bytes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::limits::bytes_key;
use super::{Check, Names};
use crate::config::file::RawConfig;
use crate::config::values::{HostPort, parse_domain};
use crate::config::*;

pub(super) fn section(
    v: &mut Check,
    raw: &RawConfig,
    names: &Names<'_>,
    listen: &Listen,
    backends: &[Backend],
) -> S2s {
    let s2s_on = !listen.s2s.is_empty() || !listen.s2s_internal.is_empty();
    let dialback_secret = raw.s2s.dialback_secret.clone();
    if s2s_on && dialback_secret.as_ref().is_none_or(Secret::is_empty) {
        v.err(
            "s2s.dialback_secret",
            "required when s2s listeners are configured",
        );
    }
    let domain_backend = raw
        .s2s
        .domain_backend
        .as_deref()
        .and_then(|s| names.find(v, "s2s.domain_backend", s));
    if !listen.s2s.is_empty() {
        for b in backends {
            if b.s2s.is_none() {
                v.err(
                    format!("backends.{}.s2s", b.name),
                    "required with listen.s2s: stanzas from the federation for this backend's users are delivered there",
                );
            }
        }
    }
    if !listen.s2s.is_empty() && raw.s2s.domain_backend.is_none() {
        v.err(
            "s2s.domain_backend",
            "required with listen.s2s: the backend that receives stanzas to the bare domain",
        );
    }
    let internal_allow = match &raw.s2s.internal_allow {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| v.ok(&format!("s2s.internal_allow[{i}]"), parse_net(s)))
            .collect(),
        None => default_internal_allow(backends),
    };
    let resolver = raw
        .s2s
        .resolver
        .as_deref()
        .and_then(|s| v.socket_addr("s2s.resolver", s));
    let mut routes = BTreeMap::new();
    for (d, target) in &raw.s2s.routes {
        let key = format!("s2s.routes.{d}");
        let d = v.ok(&key, parse_domain(d));
        let t = v.ok(&key, HostPort::parse(target));
        if let (Some(d), Some(t)) = (d, t) {
            routes.insert(d, t);
        }
    }
    let queue_bytes = bytes_key(
        v,
        "s2s.queue_bytes",
        raw.s2s.queue_bytes,
        64 << 20,
        1 << 20,
        1 << 40,
    );
    let queue_bytes_per_link = bytes_key(
        v,
        "s2s.queue_bytes_per_link",
        raw.s2s.queue_bytes_per_link,
        (8 << 20).min(queue_bytes),
        64 << 10,
        1 << 40,
    );
    if queue_bytes_per_link > queue_bytes {
        v.err(
            "s2s.queue_bytes_per_link",
            "must not exceed s2s.queue_bytes (the bound on all links together)",
        );
    }
    S2s {
        dialback_secret,
        domain_backend,
        internal_allow,
        resolver,
        routes,
        queue_bytes_per_link,
        queue_bytes,
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an address or network (e.g. 10.0.0.0/24)"))
}

fn default_internal_allow(backends: &[Backend]) -> Vec<IpNet> {
    let mut ips: Vec<IpNet> = backends
        .iter()
        .flat_map(|b| [b.c2s, b.s2s])
        .flatten()
        .map(|a| IpNet::from(a.ip()))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}
