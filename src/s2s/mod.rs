//! The federation face (DESIGN.md §4). dealer is the public domain's only s2s peer:
//!
//! - `accept`: streams remote servers open to `listen.s2s` (dialback as receiving and
//!   authoritative server), and streams the backends open to `listen.s2s_internal`
//!   (their outbound traffic, and their `<db:verify/>` checks of dealer's links).
//! - `link`: streams dealer opens — to remote servers as the public domain, and to
//!   backends as a stanza's origin domain.
//! - `dispatch`: where a stanza goes: a user of the public domain to its owner's
//!   backend (the bare domain to `s2s.domain_backend`), anything else to its domain.
//! - `dialback`: stateless keys from the shared secret; `resolve`: routes and SRV.

pub mod accept;
pub mod dialback;
pub mod link;
pub mod resolve;
pub mod stanza;

use std::sync::{Arc, Mutex};

use crate::config::Domains;
use crate::jid::{Jid, domain_key};
use crate::metrics::{ServiceDirection, StanzaDirection, StanzaResult};
use crate::snapshot::Snapshot;
use crate::stream::XmlStream;
use crate::xml::element::{Element, Scope};
use crate::xml::{NS_SERVER, StreamHeader};
use link::{Dest, LinkError, LinkKey, Links};
use resolve::{ResolveError, Resolver};
use stanza::{Condition, Stanza};

/// What s2s streams and links use of the running dealer: the live snapshot (routing,
/// dialback secret, routes), metrics, connection limits, TLS configs, the links
/// dealer opened, and the resolver for the federation.
pub struct Context {
    pub snapshot: crate::snapshot::Live,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub conn_limits: Arc<crate::listener::ConnLimits>,
    pub server_tls: crate::tls::ServerTls,
    pub s2s_tls: Arc<rustls::ClientConfig>,
    pub links: Links,
    pub lifecycle: Arc<crate::shutdown::Lifecycle>,
    /// Built on first use and again when `s2s.resolver` changes.
    resolver: Mutex<Option<Resolver>>,
}

impl Context {
    pub fn new(
        snapshot: crate::snapshot::Live,
        metrics: Arc<crate::metrics::Metrics>,
        conn_limits: Arc<crate::listener::ConnLimits>,
        server_tls: crate::tls::ServerTls,
        lifecycle: Arc<crate::shutdown::Lifecycle>,
    ) -> Context {
        Context {
            snapshot,
            metrics,
            conn_limits,
            server_tls,
            s2s_tls: crate::tls::s2s_client_config(),
            links: Links::default(),
            lifecycle,
            resolver: Mutex::new(None),
        }
    }

    pub fn resolver(&self, snap: &Snapshot) -> Result<Resolver, ResolveError> {
        let want = snap.config.s2s.resolver;
        let mut r = self.resolver.lock().unwrap_or_else(|p| p.into_inner());
        match r.as_ref() {
            Some(x) if x.server == want => Ok(x.clone()),
            _ => {
                let x = Resolver::new(want)?;
                *r = Some(x.clone());
                Ok(x)
            }
        }
    }
}

/// Send our stream header (`jabber:server`, dialback namespace declared) and read the
/// peer's header and, for an XMPP 1.0 peer, its features.
pub async fn open_stream(
    s: &mut XmlStream,
    from: &str,
    to: &str,
) -> Result<(StreamHeader, Option<Element>), LinkError> {
    let h = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='{}' to='{}' version='1.0'>",
        crate::xml::escape::attr(from),
        crate::xml::escape::attr(to)
    );
    let header = s.open(h.as_bytes(), NS_SERVER).await?;
    let features = if header.version.is_some() {
        let (e, len) = s.next_element(&header).await?;
        s.consume(len);
        Some(e)
    } else {
        None
    };
    Ok((header, features))
}

/// Send a stanza on its way: to the owner's backend when it is for a user of the
/// public domain, else to its domain's servers. Undeliverable stanzas are bounced.
/// When its link's queue is full, this waits a little for room (the stream it came
/// on stops being read meanwhile) before bouncing it: see `Links::send_or_wait`.
pub async fn dispatch(ctx: &Arc<Context>, st: Stanza) {
    let snap = ctx.snapshot.load_full();
    match target(&snap, &st) {
        Ok(key) => {
            if let Some(st) = prepare(ctx, &snap, &key, st) {
                ctx.links.send_or_wait(ctx, key, st).await;
            }
        }
        Err(cond) => bounce(ctx, &st, cond),
    }
}

/// Make `st` ready for its link, or bounce it (and return `None`). With masked
/// domains, a stanza for a backend has its `to` rewritten to the backend's internal
/// domain; only the bytes change, so the stanza's fields (used for bounces) keep the
/// public addresses.
fn prepare(ctx: &Arc<Context>, live: &Snapshot, key: &LinkKey, mut st: Stanza) -> Option<Stanza> {
    // The domain whose backend the stanza goes to (its masking), else the first.
    let snap = match &key.dest {
        _ if live.hosts.is_empty() => live,
        Dest::Backend { name, .. } => live.with_backend(name).unwrap_or(live),
        Dest::Remote => live.answering(&key.from).unwrap_or(live),
    };
    // A service domain is never rewritten: its backend hosts it under that name.
    // Without services (the usual case) nothing here looks at the stanza.
    let has_services = live.all().any(|h| !h.config.services.is_empty());
    let service = snap.config.service(&key.to).filter(|_| has_services);
    if let Some(s) = service {
        ctx.metrics.service_stanza(&s.domain, ServiceDirection::To);
    }
    if has_services
        && let Some(from) = Jid::parse(&st.from)
        && let Some(s) = live.all().find_map(|h| h.config.service(from.domain))
    {
        ctx.metrics
            .service_stanza(&s.domain, ServiceDirection::From);
    }
    if snap.config.domains == Domains::Masked
        && matches!(key.dest, Dest::Backend { .. })
        && service.is_none()
    {
        let mut out = Vec::with_capacity(st.bytes.len() + 16);
        let rule = crate::masking::Rule::To {
            public: &snap.config.domain,
            internal: &key.to,
        };
        match crate::masking::rewrite(&st.bytes, rule, &mut out) {
            Ok(true) => {
                st.bytes = stanza::hold(&out);
                ctx.metrics
                    .s2s_stanzas(StanzaDirection::In, StanzaResult::Masked)
                    .inc();
            }
            Ok(false) => {}
            Err(_) => {
                bounce(ctx, &st, Condition::ServiceUnavailable);
                return None;
            }
        }
    }
    Some(st)
}

/// A stanza a backend sent out, with masked domains: every JID at the backend's
/// internal domain becomes the public domain, in the bytes and in the fields.
pub fn mask(
    snap: &Snapshot,
    internal: &str,
    mut st: Stanza,
) -> Result<Stanza, crate::xml::XmlError> {
    let rule = crate::masking::Rule::Mask {
        internal,
        public: &snap.config.domain,
        services: &snap.config.services,
    };
    let mut out = Vec::with_capacity(st.bytes.len());
    if crate::masking::rewrite(&st.bytes, rule, &mut out)? {
        let scope = Scope {
            default_ns: Some(NS_SERVER.into()),
            prefixes: Default::default(),
        };
        st = Stanza::parse(&out, &scope)?.unwrap_or(st);
    }
    Ok(st)
}

/// Where `st` goes, as a link key: to the backends of the public domain (or service
/// domain) it is addressed to, else out to the federation.
pub fn target(live: &Snapshot, st: &Stanza) -> Result<LinkKey, Condition> {
    let to = Jid::parse(&st.to).ok_or(Condition::ItemNotFound)?;
    let from = Jid::parse(&st.from).ok_or(Condition::ItemNotFound)?;
    let snap = match live.hosts.is_empty() {
        true => live,
        false => live.answering(to.domain).unwrap_or(live),
    };
    let c = &snap.config;
    if to.domain_is(&c.domain) {
        let id = match to.local {
            Some(local) => snap.route(local).map_err(|e| match e {
                crate::routing::RouteError::Name(_) => Condition::ItemNotFound,
                _ => Condition::ServiceUnavailable,
            })?,
            None => {
                let b = c.s2s.domain_backend.ok_or(Condition::ServiceUnavailable)?;
                if !snap.is_up(b) {
                    return Err(Condition::ServiceUnavailable);
                }
                crate::routing::Decision {
                    backend: b,
                    reason: crate::routing::Reason::Default,
                }
            }
        }
        .backend;
        let b = &c.backends[id];
        let addr = b.s2s.ok_or(Condition::ServiceUnavailable)?;
        let to_domain = match (c.domains, &b.domain) {
            (Domains::Masked, Some(d)) => d.clone(),
            _ => c.domain.clone(),
        };
        Ok(LinkKey {
            from: domain_key(from.domain),
            to: to_domain,
            dest: Dest::Backend {
                name: b.name.clone(),
                addr,
            },
        })
    } else if let Some(s) = c.service(to.domain) {
        // A service domain: to the backend that hosts it, under its own name.
        let b = &c.backends[s.backend];
        let addr = b.s2s.ok_or(Condition::ServiceUnavailable)?;
        Ok(LinkKey {
            from: domain_key(from.domain),
            to: s.domain.clone(),
            dest: Dest::Backend {
                name: b.name.clone(),
                addr,
            },
        })
    } else {
        // dealer originates to the federation only as the public domain or one of
        // its service domains.
        let origin = domain_key(from.domain);
        if live.answering(&origin).is_none() {
            return Err(Condition::ServiceUnavailable);
        }
        Ok(LinkKey {
            from: origin,
            to: domain_key(to.domain),
            dest: Dest::Remote,
        })
    }
}

/// Return an undeliverable stanza to its sender with `cond` (never for errors).
pub fn bounce(ctx: &Arc<Context>, st: &Stanza, cond: Condition) {
    let snap = ctx.snapshot.load_full();
    let inbound = Jid::parse(&st.to).is_some_and(|j| snap.answering(j.domain).is_some());
    let dir = if inbound {
        StanzaDirection::In
    } else {
        StanzaDirection::Out
    };
    if let Some(b) = st.bounce(cond) {
        ctx.metrics.s2s_stanzas(dir, StanzaResult::Bounced).inc();
        // A bounce that cannot be delivered either is dropped, not bounced again.
        // A bounce never waits for room (its sender's stream is not the one to slow).
        if let Ok(key) = target(&snap, &b)
            && let Some(b) = prepare(ctx, &snap, &key, b)
        {
            ctx.links.send(ctx, key, b);
        }
    } else {
        ctx.metrics.s2s_stanzas(dir, StanzaResult::Dropped).inc();
    }
}
