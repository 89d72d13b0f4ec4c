//! What only the combination of sections decides: masked domains need the internal
//! listener and every backend's s2s address; Direct TLS clients need a Direct TLS
//! redirect target; a federation listener without the internal one lets the backends
//! federate around dealer.

use super::Check;
use crate::config::*;

pub(super) fn check(
    v: &mut Check,
    domains: Domains,
    mode: C2sMode,
    self_backend: Option<BackendId>,
    listen: &Listen,
    backends: &[Backend],
) {
    // A browser can only be sent to another WebSocket URL (`<close see-other-uri/>`).
    if !listen.websocket.is_empty() {
        for (id, b) in backends.iter().enumerate() {
            let redirected = mode == C2sMode::Redirect || self_backend.is_some_and(|me| me != id);
            if redirected && b.redirect_websocket.is_none() {
                v.err(
                    format!("backends.{}.redirect_websocket", b.name),
                    "required with listen.websocket: WebSocket clients are redirected to this backend (the URL see-other-uri sends)",
                );
            }
        }
    }
    if domains == Domains::Masked {
        if listen.s2s_internal.is_empty() {
            v.err(
                "listen.s2s_internal",
                "required with `domains: masked`: the backends send their outbound s2s there, \
                 every message between users of different backends included",
            );
        }
        for b in backends {
            if b.s2s.is_none() {
                v.err(
                    format!("backends.{}.s2s", b.name),
                    "required with `domains: masked`: stanzas from users of the other backends \
                     and of the federation are delivered there",
                );
            }
        }
    }
    if !listen.c2s_tls.is_empty() {
        for b in backends {
            if b.redirect.is_some() && b.redirect_tls.is_none() {
                v.warnings.push(format!(
                    "backends.{}.redirect_tls is not set: clients that came over Direct TLS \
                     are redirected to `redirect`, a STARTTLS address",
                    b.name
                ));
            }
        }
    }
    if domains == Domains::Shared && !listen.s2s.is_empty() && listen.s2s_internal.is_empty() {
        v.warnings.push(
            "listen.s2s without listen.s2s_internal: the backends' own outbound s2s does not \
             pass through dealer, so remote servers see them and not the public domain"
                .to_string(),
        );
    }
}
