//! Health checks: every `health.interval`, each backend with a c2s address gets the
//! same stream open a login would do (TCP connect, stream header, features, STARTTLS
//! when configured), bounded by `health.timeout`. Results feed the rise/fall state in
//! `routing::health` and the mechanisms list that c2s features are built from.
//! Backends are keyed by name and address, so a reload keeps what checks learned
//! about a backend it did not change.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backend::{Target, probe};
use crate::config::{Backend, Config, Domains};
use crate::metrics::{CheckResult, Metrics};
use crate::routing::health::{Offer, Transition};
use crate::snapshot::Live;

/// What the checks use: the live snapshot (its backends and their health state),
/// metrics, and the TLS config of the leg to backends.
pub struct Checker {
    pub snapshot: Live,
    pub metrics: Arc<Metrics>,
    pub backend_tls: Arc<rustls::ClientConfig>,
}

impl Checker {
    /// Set `dealer_backend_up` for the live snapshot's backends.
    pub fn publish(&self) {
        let live = self.snapshot.load();
        for snap in live.all() {
            for (id, b) in snap.config.backends.iter().enumerate() {
                self.metrics.backend_up(&b.name, snap.is_up(id));
            }
        }
    }
}

/// The check target for a backend, or `None` when it has no c2s address to check.
pub fn target(config: &Config, b: &Backend) -> Option<Target> {
    let addr = b.c2s?;
    let domain = match (config.domains, &b.domain) {
        (Domains::Masked, Some(d)) => d.clone(),
        _ => config.domain.clone(),
    };
    Some(Target {
        addr,
        domain,
        tls: b.tls,
        proxy: b.proxy_protocol.then(|| {
            // A check has no client to announce: name dealer itself.
            let local: std::net::SocketAddr = match addr {
                std::net::SocketAddr::V4(_) => ([127, 0, 0, 1], 0).into(),
                std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
            };
            (local, addr)
        }),
        from: None,
    })
}

/// One round: check every backend of the live snapshot (every public domain's)
/// concurrently.
pub async fn check_all(checker: &Checker) {
    let live = checker.snapshot.load_full();
    let mut set = tokio::task::JoinSet::new();
    for (host, snap) in live.all().enumerate() {
        let cfg = &snap.config;
        for (id, b) in cfg.backends.iter().enumerate() {
            let Some(t) = target(cfg, b) else { continue };
            let tls = checker.backend_tls.clone();
            let timeout = cfg.health.timeout;
            set.spawn(async move { (host, id, probe(&t, &tls, timeout).await) });
        }
    }
    while let Some(r) = set.join_next().await {
        let Ok((host, id, result)) = r else { continue };
        let Some(snap) = live.all().nth(host) else {
            continue;
        };
        let cfg = &snap.config;
        let b = &cfg.backends[id];
        let h = &snap.health[id];
        let ok = result.is_ok();
        match &result {
            Ok(f) => {
                debug!(backend.name = %b.name, mechanisms = ?f.mechanisms, sasl2 = ?f.sasl2, "health check ok");
                let offer = f.offer();
                let before = h.offer();
                if before.as_deref() != Some(&offer) {
                    report_offer(b, cfg, &offer, before.as_deref());
                    h.set_offer(offer);
                }
            }
            Err(e) => debug!(backend.name = %b.name, error = %e, "health check failed"),
        }
        checker.metrics.health_check(
            &b.name,
            if ok {
                CheckResult::Ok
            } else {
                CheckResult::Failed
            },
        );
        match h.observe(ok, cfg.health.rise, cfg.health.fall) {
            Some(Transition::WentDown) => {
                warn!(backend.name = %b.name, error = %result.err().map(|e| e.to_string()).unwrap_or_default(), "backend down")
            }
            Some(Transition::WentUp) => info!(backend.name = %b.name, "backend up"),
            None => {}
        }
        checker.metrics.backend_up(&b.name, h.is_up());
    }
}

/// Log what changed in what a backend offers, once per change: a configured mechanism
/// it lacks, SASL2 appearing or going (dealer offers SASL2 on its own stream only while
/// every backend does), channel-bound mechanisms on a TLS leg (that backend's clients
/// cannot be routed on their stream header; see README, Modern clients).
fn report_offer(b: &Backend, cfg: &Config, offer: &Offer, before: Option<&Offer>) {
    for m in &cfg.c2s.mechanisms {
        if !offer.mechanisms.iter().any(|x| x == m.name()) {
            warn!(
                backend.name = %b.name,
                mechanism = %m,
                offered = ?offer.mechanisms,
                "c2s.mechanisms lists a mechanism this backend does not offer; dealer will not offer it"
            );
        }
    }
    let had_sasl2 = before.is_some_and(|o| o.sasl2.is_some());
    match (had_sasl2, &offer.sasl2) {
        (false, Some(m)) => {
            info!(backend.name = %b.name, mechanisms = ?m, bind2 = offer.bind2, fast = ?offer.fast, "backend offers SASL2")
        }
        (true, None) => {
            warn!(backend.name = %b.name, "backend no longer offers SASL2")
        }
        _ => {}
    }
    if b.tls && offer.binds_channel() {
        warn!(
            backend.name = %b.name,
            "backend offers -PLUS mechanisms on a TLS leg: its clients are not routed on their stream header (dealer would have to edit the mechanism list); give it a plaintext leg on a trusted network, or turn channel binding off there"
        );
    }
}

/// Check forever, every `health.interval` of the live snapshot, until `stop`.
pub async fn run(checker: Arc<Checker>, stop: CancellationToken) {
    loop {
        check_all(&checker).await;
        let interval = checker.snapshot.load().config.health.interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    }
}
