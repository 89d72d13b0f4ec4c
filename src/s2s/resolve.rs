//! Where a remote domain's servers are: `s2s.routes` first (static, for tests and
//! private peers), then DNS SRV `_xmpp-server._tcp.DOMAIN` (RFC 6120 §3.2.1: lowest
//! priority first, weighted within a priority), then the domain's own A/AAAA records
//! on port 5269 (§3.2.2). DNS goes to `s2s.resolver` when set, else the system's.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::config::HostPort;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot set up the resolver: {0}")]
    Setup(String),
    #[error("no server found for {0}")]
    NotFound(String),
}

/// A DNS client for s2s lookups, built once per resolver address.
#[derive(Clone)]
pub struct Resolver {
    dns: Arc<TokioResolver>,
    pub server: Option<SocketAddr>,
}

impl Resolver {
    pub fn new(server: Option<SocketAddr>) -> Result<Resolver, ResolveError> {
        let builder = match server {
            Some(addr) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => {
                TokioResolver::builder_tokio().map_err(|e| ResolveError::Setup(e.to_string()))?
            }
        };
        let dns = builder
            .build()
            .map_err(|e| ResolveError::Setup(e.to_string()))?;
        Ok(Resolver {
            dns: Arc::new(dns),
            server,
        })
    }

    /// Candidate addresses for `domain`, in the order to try them.
    pub async fn lookup(
        &self,
        domain: &str,
        route: Option<&HostPort>,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Some(r) = route {
            return self.host(&r.host, r.port).await;
        }
        let fqdn = format!("_xmpp-server._tcp.{domain}.");
        let mut targets: Vec<(u16, u16, String, u16)> = Vec::new();
        let mut refused = false;
        if let Ok(l) = self.dns.lookup(fqdn.as_str(), RecordType::SRV).await {
            for rec in l.answers() {
                if let RData::SRV(srv) = &rec.data {
                    let target = srv.target.to_ascii();
                    // "." means "no service here" (RFC 2782, RFC 6120 §3.2.1).
                    if target == "." {
                        refused = true;
                    } else {
                        targets.push((srv.priority, srv.weight, target, srv.port));
                    }
                }
            }
        }
        if targets.is_empty() {
            if refused {
                return Err(ResolveError::NotFound(format!(
                    "{domain} offers no XMPP server service"
                )));
            }
            // No SRV records at all: the domain itself, on the default port.
            return self.host(domain, 5269).await;
        }
        // Lowest priority first; within one, heavier weights first (a deterministic
        // stand-in for RFC 2782's weighted random order).
        targets.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out = Vec::new();
        for (_, _, host, port) in targets {
            if let Ok(mut addrs) = self.host(host.trim_end_matches('.'), port).await {
                out.append(&mut addrs);
            }
        }
        if out.is_empty() {
            return Err(ResolveError::NotFound(domain.to_owned()));
        }
        Ok(out)
    }

    async fn host(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let name = format!("{}.", host.trim_end_matches('.'));
        let ips = self
            .dns
            .lookup_ip(name.as_str())
            .await
            .map_err(|_| ResolveError::NotFound(host.to_owned()))?;
        let out: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if out.is_empty() {
            Err(ResolveError::NotFound(host.to_owned()))
        } else {
            Ok(out)
        }
    }
}
