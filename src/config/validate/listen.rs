//! `listen`: every listener's address and options, and the `c2s.starttls` default
//! they take.

use std::collections::BTreeSet;

use super::{Check, STARTTLS_WORDS};
use crate::config::file::{RawConfig, RawListener, RawWsListener};
use crate::config::*;

/// The listeners, and the STARTTLS policy c2s listeners default to.
pub(super) fn section(v: &mut Check, raw: &RawConfig) -> (Listen, StartTls) {
    let default_starttls = v.word(
        "c2s.starttls",
        raw.c2s.starttls.as_deref(),
        StartTls::Required,
        &STARTTLS_WORDS,
    );
    let listen = Listen {
        c2s: listeners(v, "listen.c2s", &raw.listen.c2s, Some(default_starttls)),
        c2s_tls: listeners(v, "listen.c2s_tls", &raw.listen.c2s_tls, None),
        s2s: listeners(v, "listen.s2s", &raw.listen.s2s, Some(StartTls::Optional)),
        s2s_tls: listeners(v, "listen.s2s_tls", &raw.listen.s2s_tls, None),
        s2s_internal: listeners(
            v,
            "listen.s2s_internal",
            &raw.listen.s2s_internal,
            Some(StartTls::Optional),
        ),
        http: raw
            .listen
            .http
            .as_deref()
            .and_then(|s| v.socket_addr("listen.http", s)),
        websocket: websockets(v, &raw.listen.websocket),
    };
    let needs_tls = !listen.c2s_tls.is_empty()
        || !listen.s2s_tls.is_empty()
        || listen.c2s.iter().any(|l| l.starttls != StartTls::Off)
        || listen.websocket.iter().any(|w| w.tls);
    if needs_tls && raw.tls.is_none() {
        v.err(
            "tls",
            "required: a certificate and key for the public domain (listeners offer TLS)",
        );
    }
    let mut bound = BTreeSet::new();
    for (key, l) in [
        ("listen.c2s", &listen.c2s),
        ("listen.c2s_tls", &listen.c2s_tls),
        ("listen.s2s", &listen.s2s),
        ("listen.s2s_tls", &listen.s2s_tls),
        ("listen.s2s_internal", &listen.s2s_internal),
        (
            "listen.websocket",
            &listen.websocket.iter().map(|w| w.listener).collect(),
        ),
    ] {
        for x in l.iter() {
            if !bound.insert(x.addr) {
                v.err(
                    key,
                    format!("{} is bound by more than one listener", x.addr),
                );
            }
        }
    }
    if let Some(h) = listen.http
        && !bound.insert(h)
    {
        v.err("listen.http", format!("{h} is also a c2s or s2s listener"));
    }

    (listen, default_starttls)
}

fn websockets(v: &mut Check, raw: &[RawWsListener]) -> Vec<WsListener> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let k = format!("listen.websocket[{i}]");
            let addr = v.socket_addr(&k, &l.addr);
            let path = l.path.clone().unwrap_or_else(|| WEBSOCKET_PATH.to_owned());
            if !path.starts_with('/') {
                v.err(
                    format!("{k}.path"),
                    format!("`{path}` is not an absolute path"),
                );
            }
            let origins = l.origins.clone().unwrap_or_default();
            for (j, o) in origins.iter().enumerate() {
                if !(o.starts_with("https://") || o.starts_with("http://")) {
                    v.err(
                        format!("{k}.origins[{j}]"),
                        format!("`{o}` is not an origin (scheme://host[:port])"),
                    );
                }
            }
            if let Some(h) = &l.host_meta
                && !(h.starts_with("wss://") || h.starts_with("ws://"))
            {
                v.err(
                    format!("{k}.host_meta"),
                    format!("`{h}` is not a ws:// or wss:// URL"),
                );
            }
            Some(WsListener {
                listener: Listener {
                    addr: addr?,
                    starttls: StartTls::Off,
                    proxy_protocol: l.proxy_protocol.unwrap_or(false),
                },
                tls: l.tls.unwrap_or(false),
                path,
                origins,
                host_meta: l.host_meta.clone(),
            })
        })
        .collect()
}

fn listeners(
    v: &mut Check,
    key: &str,
    raw: &[RawListener],
    default_starttls: Option<StartTls>,
) -> Vec<Listener> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let k = format!("{key}[{i}]");
            let addr = v.socket_addr(&k, &l.addr);
            let starttls = match (default_starttls, &l.starttls) {
                (None, Some(_)) => {
                    v.err(
                        format!("{k}.starttls"),
                        "not for a Direct TLS listener (TLS starts at once there)",
                    );
                    StartTls::Off
                }
                (None, None) => StartTls::Off,
                (Some(d), s) => v.word(&format!("{k}.starttls"), s.as_deref(), d, &STARTTLS_WORDS),
            };
            Some(Listener {
                addr: addr?,
                starttls,
                proxy_protocol: l.proxy_protocol.unwrap_or(false),
            })
        })
        .collect()
}
