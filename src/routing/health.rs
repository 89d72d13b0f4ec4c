//! Backend health as routing sees it: up or down, decided from check results with
//! HAProxy's rise/fall rule (a down backend needs `rise` successes in a row to come
//! back, an up one `fall` failures in a row to go), plus the SASL mechanisms its last
//! successful check saw. Shared by every snapshot that names the backend, so a reload
//! keeps what the checks learned. Pure state; the checks themselves live in `health`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;

#[derive(Debug)]
pub struct BackendHealth {
    up: AtomicBool,
    /// Mechanisms the backend offered at its last successful check; `None` until one.
    mechanisms: ArcSwapOption<Vec<String>>,
    streak: Mutex<Streak>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Streak {
    ok: u32,
    failed: u32,
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
            mechanisms: ArcSwapOption::empty(),
            streak: Mutex::new(Streak::default()),
        }
    }

    #[inline]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn mechanisms(&self) -> Option<std::sync::Arc<Vec<String>>> {
        self.mechanisms.load_full()
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

    pub fn set_mechanisms(&self, m: Vec<String>) {
        self.mechanisms.store(Some(std::sync::Arc::new(m)));
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
