//! `backends` (each backend's addresses, domain, redirect targets, weight) and `tls`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::{Check, MAX_BACKENDS, Names};
use crate::config::file::{RawBackend, RawConfig};
use crate::config::values::{HostPort, parse_domain};
use crate::config::*;

/// Every backend name, in order; a name written twice is an error.
pub(super) fn names<'a>(v: &mut Check, raw: &'a RawConfig) -> Names<'a> {
    for name in &raw.backends.duplicates {
        v.err(
            format!("backends.{name}"),
            "listed twice: a YAML map keeps only one of them",
        );
    }
    let names: Vec<&str> = raw.backends.keys().map(String::as_str).collect();
    if names.is_empty() {
        v.err("backends", "at least one backend is required");
    }
    if names.len() > MAX_BACKENDS {
        v.err(
            "backends",
            format!("at most {MAX_BACKENDS} backends are supported"),
        );
    }
    Names(names)
}

/// `backends`: each backend, then what holds across them.
pub(super) fn section(
    v: &mut Check,
    raw: &RawConfig,
    domain: &str,
    self_backend: Option<BackendId>,
    c2s_mode: C2sMode,
    domains: Domains,
) -> Vec<Backend> {
    let backends: Vec<Backend> = raw
        .backends
        .iter()
        .enumerate()
        .map(|(id, (name, b))| {
            // A backend that hosts a service is dealt no users: no c2s, no redirect,
            // no internal domain needed.
            let serves = raw.services.values().any(|s| s.backend == *name);
            backend(v, name, b, id, self_backend, c2s_mode, domains, serves)
        })
        .collect();
    if domains == Domains::Masked {
        let mut seen = BTreeMap::new();
        for b in &backends {
            if let Some(d) = &b.domain {
                if d == domain {
                    v.err(
                        format!("backends.{}.domain", b.name),
                        "must differ from the public domain when `domains: masked`",
                    );
                }
                if let Some(other) = seen.insert(d.clone(), b.name.clone()) {
                    v.err(
                        format!("backends.{}.domain", b.name),
                        format!("`{d}` is also the domain of backend `{other}`"),
                    );
                }
            }
        }
    }

    // One server at one address serves a domain once: two backends there would be
    // one backend dealt twice the users (with masked domains, one server may serve
    // two internal domains).
    let mut at: BTreeMap<(SocketAddr, Option<&str>), &str> = BTreeMap::new();
    for b in &backends {
        let serves = match domains {
            Domains::Masked => b.domain.as_deref(),
            Domains::Shared => None,
        };
        for (k, addr) in [("c2s", b.c2s), ("s2s", b.s2s)] {
            let Some(addr) = addr else { continue };
            if let Some(other) = at.insert((addr, serves), b.name.as_str())
                && other != b.name
            {
                v.err(
                    format!("backends.{}.{k}", b.name),
                    format!("{addr} is also backend `{other}`, serving the same domain"),
                );
            }
        }
    }

    backends
}

/// `tls`: the files must exist now, not at the first client.
pub(super) fn tls(v: &mut Check, raw: &RawConfig, base: &Path) -> Option<TlsFiles> {
    raw.tls.as_ref().and_then(|t| {
        let cert = file_key(v, "tls.cert", t.cert.as_deref(), base);
        let key = file_key(v, "tls.key", t.key.as_deref(), base);
        Some(TlsFiles {
            cert: cert?,
            key: key?,
        })
    })
}

#[allow(clippy::too_many_arguments)]
fn backend(
    v: &mut Check,
    name: &str,
    b: &RawBackend,
    id: BackendId,
    self_backend: Option<BackendId>,
    mode: C2sMode,
    domains: Domains,
    hosts_service: bool,
) -> Backend {
    let key = |k: &str| format!("backends.{name}.{k}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        v.err(
            format!("backends.{name}"),
            "a backend name is letters, digits, `-`, `_` and `.`",
        );
    }
    let c2s = b
        .c2s
        .as_deref()
        .and_then(|s| v.backend_addr(&key("c2s"), s));
    let s2s = b
        .s2s
        .as_deref()
        .and_then(|s| v.backend_addr(&key("s2s"), s));
    let domain = b
        .domain
        .as_deref()
        .and_then(|s| v.ok(&key("domain"), parse_domain(s)));
    let redirect = b
        .redirect
        .as_deref()
        .and_then(|s| v.ok(&key("redirect"), HostPort::parse(s)));
    let redirect_tls = b
        .redirect_tls
        .as_deref()
        .and_then(|s| v.ok(&key("redirect_tls"), HostPort::parse(s)));
    let redirect_websocket = b.redirect_websocket.clone();
    if let Some(u) = &redirect_websocket
        && !(u.starts_with("wss://") || u.starts_with("ws://"))
    {
        v.err(
            key("redirect_websocket"),
            format!("`{u}` is not a ws:// or wss:// URL"),
        );
    }
    let weight = b.weight.unwrap_or(1);
    if weight == 0 || weight > 1_000_000 {
        v.err(key("weight"), "must be between 1 and 1000000");
    }
    let is_self = self_backend == Some(id);
    // Who is forwarded here: everyone in forward mode, only its own users in a guard.
    let forwarded = !hosts_service && (mode == C2sMode::Forward || is_self);
    let redirected =
        !hosts_service && (mode == C2sMode::Redirect || (self_backend.is_some() && !is_self));
    if forwarded && b.c2s.is_none() {
        v.err(
            key("c2s"),
            "required: clients are forwarded to this backend",
        );
    }
    if redirected && b.redirect.is_none() {
        v.err(
            key("redirect"),
            "required: clients are redirected to this backend (the host:port see-other-host sends)",
        );
    }
    if domains == Domains::Masked && b.domain.is_none() && !hosts_service {
        v.err(
            key("domain"),
            "required with `domains: masked`: the backend's internal domain",
        );
    }
    if domains == Domains::Masked
        && redirected
        && let (Some(r), Some(c)) = (&redirect, c2s)
        && r.port == c.port()
        && r.host.parse::<IpAddr>().ok() == Some(c.ip())
    {
        v.err(
            key("redirect"),
            "with `domains: masked` clients must be redirected to the backend's guard (a dealer with `self:`), not to the backend itself",
        );
    }
    Backend {
        name: name.to_owned(),
        c2s,
        s2s,
        domain,
        redirect,
        redirect_tls,
        redirect_websocket,
        weight,
        tls: b.tls.unwrap_or(false),
        proxy_protocol: b.proxy_protocol.unwrap_or(false),
    }
}

fn file_key(v: &mut Check, key: &str, value: Option<&str>, base: &Path) -> Option<PathBuf> {
    let Some(value) = value else {
        v.err(key, "required");
        return None;
    };
    let path = base.join(value);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Some(path),
        Ok(_) => {
            v.err(key, format!("{} is not a file", path.display()));
            None
        }
        Err(e) => {
            v.err(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}
