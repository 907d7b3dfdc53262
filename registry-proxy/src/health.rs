//! Readiness: ready while the proxy serves and, with `audit_on_failure: refuse`, while audit
//! records can be written.
//!
//! The admin endpoint reads one flag (`shared::telemetry::Readiness`); this module derives it
//! from the conditions that each have their own owner (the listener, the audit writer), so
//! neither can mark the proxy ready while the other says it is not.

use std::sync::Mutex;

use shared::telemetry::Readiness;

/// The conditions for readiness, and the flag the admin endpoint reads.
#[derive(Debug, Default)]
pub struct Health {
    readiness: Readiness,
    conditions: Mutex<Conditions>,
}

#[derive(Debug)]
struct Conditions {
    serving: bool,
    audit_writable: bool,
}

impl Default for Conditions {
    fn default() -> Self {
        Self {
            serving: false,
            audit_writable: true,
        }
    }
}

impl Health {
    /// The flag to hand to the admin endpoint.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// The listener serves (after startup), or no longer does (shutting down).
    pub fn set_serving(&self, serving: bool) {
        self.update(|c| c.serving = serving);
    }

    /// Audit records can be written, or cannot (sink failing, queue full).
    pub fn set_audit_writable(&self, writable: bool) {
        self.update(|c| c.audit_writable = writable);
    }

    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    fn update(&self, change: impl FnOnce(&mut Conditions)) {
        // Under the lock, so two owners changing their condition at once cannot leave the
        // flag computed from a stale view of the other.
        let mut conditions = self.conditions.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut conditions);
        self.readiness
            .set(conditions.serving && conditions.audit_writable);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_serving_and_auditing() {
        let health = Health::default();
        assert!(!health.is_ready(), "not before the listener serves");
        health.set_serving(true);
        assert!(health.is_ready());
        health.set_audit_writable(false);
        assert!(!health.is_ready());
        health.set_serving(false);
        health.set_audit_writable(true);
        assert!(
            !health.is_ready(),
            "audit recovering does not undo shutting down"
        );
    }
}
