//! Upstream health: a lock-free board read on every request, passive ejection with
//! exponential back-off, and the state machine of active probes.
//!
//! Health is deliberately not part of the versioned route table: it changes under load many
//! times a second and must never crowd real changes out of the version history. Routing
//! reads it per request from atomics instead.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{HealthConfig, PassiveConfig};

/// Monotonic milliseconds since the first health reading, never 0 (0 means "no deadline").
/// Tokio's clock, so that a wall-clock jump neither ends nor extends an ejection, and tests
/// can run ejection periods on paused time.
fn now_ms() -> u64 {
    static BASE: OnceLock<tokio::time::Instant> = OnceLock::new();
    let base = *BASE.get_or_init(tokio::time::Instant::now);
    base.elapsed().as_millis() as u64 + 1
}

/// Health state of one upstream, shared by every route table that names it.
#[derive(Debug)]
pub struct Health {
    /// Upstream name, for metrics and logs.
    pub name: String,
    /// Result of active probing (true when there is no probe).
    probe_ok: AtomicBool,
    /// Passive ejection lasts until this millisecond of [`now_ms`].
    ejected_until: AtomicU64,
    /// Consecutive passive failures.
    failures: AtomicU32,
    /// Ejections in a row without a healthy period, for back-off.
    ejections: AtomicU32,
    /// Consecutive probe results in the current direction.
    probe_streak: AtomicU32,
    /// Passive settings.
    passive: PassiveConfig,
}

impl Health {
    /// A healthy upstream.
    pub fn new(name: &str, passive: PassiveConfig) -> Arc<Health> {
        Arc::new(Health {
            name: name.to_string(),
            probe_ok: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            probe_streak: AtomicU32::new(0),
            passive,
        })
    }

    /// Whether requests may be sent to this upstream now.
    #[inline]
    pub fn is_available(&self) -> bool {
        // The clock is read only while an ejection deadline is set.
        let until = self.ejected_until.load(Ordering::Relaxed);
        self.probe_ok.load(Ordering::Relaxed) && (until == 0 || until <= now_ms())
    }

    /// Whether passive ejection is in force.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms()
    }

    /// Whether the last active probes said healthy.
    pub fn probe_ok(&self) -> bool {
        self.probe_ok.load(Ordering::Relaxed)
    }

    /// Records a request that got a response below 500.
    #[inline]
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejected_until.load(Ordering::Relaxed) != 0 && !self.is_ejected() {
            // Served well after an ejection ended: clear the deadline and the back-off.
            self.ejected_until.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// Records a connect error or 5xx; returns the ejection period when this one ejects.
    pub fn record_failure(&self) -> Option<Duration> {
        let limit = self.passive.consecutive_failures;
        if limit == 0 {
            return None;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < limit || self.is_ejected() {
            return None;
        }
        self.failures.store(0, Ordering::Relaxed);
        let round = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let period = self
            .passive
            .base_ejection
            .saturating_mul(1u32 << round)
            .min(self.passive.max_ejection);
        self.ejected_until
            .store(now_ms() + period.as_millis() as u64, Ordering::Relaxed);
        Some(period)
    }

    /// Feeds one active probe result; returns the new state when it flipped.
    pub fn record_probe(&self, ok: bool, cfg: &HealthConfig) -> Option<bool> {
        let current = self.probe_ok.load(Ordering::Relaxed);
        if ok == current {
            self.probe_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.probe_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if ok {
            cfg.healthy_threshold
        } else {
            cfg.unhealthy_threshold
        };
        if streak < needed {
            return None;
        }
        self.probe_streak.store(0, Ordering::Relaxed);
        self.probe_ok.store(ok, Ordering::Relaxed);
        if ok {
            // A recovered upstream starts with a clean passive record.
            self.ejected_until.store(0, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
        }
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive(n: u32) -> PassiveConfig {
        PassiveConfig {
            consecutive_failures: n,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_with_backoff() {
        let h = Health::new("u", passive(3));
        assert!(h.record_failure().is_none());
        h.record_success();
        assert!(h.record_failure().is_none());
        assert!(h.record_failure().is_none());
        assert_eq!(h.record_failure(), Some(Duration::from_secs(10)));
        assert!(!h.is_available());
        // Re-admission after the period is simulated by clearing the deadline.
        h.ejected_until.store(0, Ordering::Relaxed);
        for _ in 0..2 {
            h.record_failure();
        }
        assert_eq!(h.record_failure(), Some(Duration::from_secs(20)));
        h.ejected_until.store(0, Ordering::Relaxed);
        for _ in 0..2 {
            h.record_failure();
        }
        assert_eq!(
            h.record_failure(),
            Some(Duration::from_secs(25)),
            "capped at max_ejection"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_ends_after_its_period_and_backs_off_until_healthy() {
        let h = Health::new("u", passive(2));
        assert!(h.record_failure().is_none());
        assert_eq!(h.record_failure(), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_millis(9_990)).await;
        assert!(
            h.is_ejected() && !h.is_available(),
            "still inside the period"
        );
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(h.is_available(), "re-admitted when the period ends");
        // Failing again before a request succeeds doubles the period.
        h.record_failure();
        assert_eq!(h.record_failure(), Some(Duration::from_secs(20)));
        tokio::time::advance(Duration::from_secs(21)).await;
        assert!(h.is_available());
        // A success after the ejection ended clears the back-off.
        h.record_success();
        h.record_failure();
        assert_eq!(h.record_failure(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn zero_threshold_disables_passive() {
        let h = Health::new("u", passive(0));
        for _ in 0..100 {
            assert!(h.record_failure().is_none());
        }
        assert!(h.is_available());
    }

    #[test]
    fn probes_need_thresholds_to_flip() {
        let cfg = HealthConfig {
            path: "/h".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        };
        let h = Health::new("u", passive(5));
        assert_eq!(h.record_probe(false, &cfg), None);
        assert_eq!(h.record_probe(false, &cfg), None);
        assert_eq!(h.record_probe(false, &cfg), Some(false));
        assert!(!h.is_available());
        assert_eq!(h.record_probe(true, &cfg), None);
        assert_eq!(h.record_probe(true, &cfg), Some(true));
        assert!(h.is_available());
    }
}
