//! Backend health as routing sees it: up or down, decided from check results with
//! HAProxy's rise/fall rule (a down backend needs `rise` successes in a row to come
//! back, an up one `fall` failures in a row to go), plus what its last successful check
//! saw it offer before authentication. Shared by every snapshot that names the
//! backend, so a reload keeps what the checks learned. Pure state; the checks
//! themselves live in `checks`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;

#[derive(Debug)]
pub struct BackendHealth {
    up: AtomicBool,
    /// What the backend offered at its last successful check; `None` until one.
    offer: ArcSwapOption<Offer>,
    streak: Mutex<Streak>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Streak {
    ok: u32,
    failed: u32,
}

/// What a backend offers a client before authentication, as a health check saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// SASL mechanisms (RFC 6120).
    pub mechanisms: Vec<String>,
    /// XEP-0388: SASL2's mechanisms, when the backend offers SASL2.
    pub sasl2: Option<Vec<String>>,
    /// XEP-0386: Bind2, inline in SASL2.
    pub bind2: bool,
    /// XEP-0484: FAST mechanisms, inline in SASL2.
    pub fast: Vec<String>,
    /// XEP-0440: the channel-binding types it advertises.
    pub channel_binding: Vec<String>,
}

impl Offer {
    /// A mechanism bound to the TLS channel (`-PLUS`): it cannot work through dealer,
    /// which ends TLS, and dealer will not edit the list a client may hash (XEP-0474).
    pub fn binds_channel(&self) -> bool {
        self.mechanisms
            .iter()
            .chain(self.sasl2.iter().flatten())
            .any(|m| m.ends_with("-PLUS"))
    }
}

/// A change of state worth logging and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentUp,
    WentDown,
}

impl Default for BackendHealth {
    fn default() -> Self {
        BackendHealth::new()
    }
}

impl BackendHealth {
    /// A backend starts up (as in HAProxy): dealer serves at once, and the first
    /// `fall` failed checks take a dead backend out.
    pub fn new() -> BackendHealth {
        BackendHealth {
            up: AtomicBool::new(true),
            offer: ArcSwapOption::empty(),
            streak: Mutex::new(Streak::default()),
        }
    }

    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// What the last successful check saw offered.
    pub fn offer(&self) -> Option<std::sync::Arc<Offer>> {
        self.offer.load_full()
    }

    /// Record a check result.
    pub fn observe(&self, ok: bool, rise: u32, fall: u32) -> Option<Transition> {
        // The lock guards two counters; a poisoned one still holds valid numbers.
        let mut s = self.streak.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            s.ok = s.ok.saturating_add(1);
            s.failed = 0;
        } else {
            s.failed = s.failed.saturating_add(1);
            s.ok = 0;
        }
        let up = self.is_up();
        if !up && ok && s.ok >= rise {
            self.up.store(true, Ordering::Relaxed);
            Some(Transition::WentUp)
        } else if up && !ok && s.failed >= fall {
            self.up.store(false, Ordering::Relaxed);
            Some(Transition::WentDown)
        } else {
            None
        }
    }

    pub fn set_offer(&self, o: Offer) {
        self.offer.store(Some(std::sync::Arc::new(o)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let h = BackendHealth::new();
        assert!(h.is_up());
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(true, 2, 3), None); // the streak resets
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), Some(Transition::WentDown));
        assert!(!h.is_up());
        assert_eq!(h.observe(true, 2, 3), None);
        assert_eq!(h.observe(true, 2, 3), Some(Transition::WentUp));
        assert_eq!(h.observe(true, 2, 3), None);
        assert!(h.is_up());
    }
}
