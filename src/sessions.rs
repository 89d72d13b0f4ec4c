//! The relayed sessions alive now, each with the user it belongs to, the backend it
//! runs on, and a token that ends it. Shutdown ends them all after the grace period;
//! a reload with `routing.redeal_on_reload` ends those whose user the new routing
//! table gives to another backend, so their clients reconnect through dealer and
//! land on the new owner.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::snapshot::Snapshot;

struct Live {
    user: String,
    backend: String,
    token: CancellationToken,
}

#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Live>>,
}

/// A session's place in the registry; leaves it when dropped.
pub struct Registered {
    sessions: Arc<Sessions>,
    id: u64,
    pub token: CancellationToken,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sessions
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Sessions {
    /// Register a relayed session of `user` (normalised) on `backend`, ended by
    /// cancelling `token` (a child of the shutdown token, so shutting down ends it too).
    pub fn register(
        self: &Arc<Self>,
        user: &str,
        backend: &str,
        token: CancellationToken,
    ) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            Live {
                user: user.to_owned(),
                backend: backend.to_owned(),
                token: token.clone(),
            },
        );
        Registered {
            sessions: self.clone(),
            id,
            token,
        }
    }

    /// End the sessions whose user `snap` routes to another backend; returns how many.
    pub fn redeal(&self, snap: &Snapshot) -> usize {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for live in map.values() {
            if live.user.is_empty() {
                continue;
            }
            // The user's public domain is the one whose backend it is on; a backend
            // no domain names any more counts as the first domain's.
            let snap = snap.with_backend(&live.backend).unwrap_or(snap);
            if !snap.config.routing.redeal_on_reload {
                continue;
            }
            let owner = snap
                .router
                .route_normalised(&live.user, |id| snap.is_up(id))
                .map(|d| snap.router.backend_name(d.backend).to_owned());
            if owner.as_deref().is_ok_and(|o| o != live.backend) {
                live.token.cancel();
                n += 1;
            }
        }
        n
    }
}
