//! Sliding-window request statistics of a rollout's target and fallback, for the gates.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use hdrhistogram::Histogram;

/// Counts and latency of one side within one slice of the window.
#[derive(Clone)]
struct Side {
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

impl Side {
    fn new() -> Side {
        Side {
            requests: 0,
            errors: 0,
            // 1 µs .. 60 s at 2 significant digits: a few KB per slice.
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 2)
                .expect("constant bounds are valid"),
        }
    }
}

struct Slice {
    started: Instant,
    target: Side,
    fallback: Side,
}

/// What the gates see of one side over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SideSummary {
    /// Requests.
    pub requests: u64,
    /// Errors (5xx and gateway errors).
    pub errors: u64,
    /// p99 latency in seconds.
    pub p99_seconds: f64,
}

impl SideSummary {
    /// Errors over requests (0 when there were none).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Sliding-window statistics of a route's rollout target against its fallback.
pub struct GateStats {
    /// Upstream being rolled out.
    pub target: String,
    /// The route's fallback.
    pub fallback: String,
    window: Duration,
    slices: Mutex<VecDeque<Slice>>,
}

impl std::fmt::Debug for GateStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateStats")
            .field("target", &self.target)
            .field("fallback", &self.fallback)
            .finish()
    }
}

const SLICES: u32 = 6;

impl GateStats {
    /// Empty statistics over `window`.
    pub fn new(target: &str, fallback: &str, window: Duration) -> GateStats {
        GateStats {
            target: target.into(),
            fallback: fallback.into(),
            window,
            slices: Mutex::new(VecDeque::new()),
        }
    }

    /// Records one finished request to `upstream`.
    pub fn record(&self, upstream: &str, error: bool, latency: Duration) {
        let is_target = upstream == self.target;
        if !is_target && upstream != self.fallback {
            return;
        }
        let now = Instant::now();
        let Ok(mut slices) = self.slices.lock() else {
            return;
        };
        let slice_len = self.window / SLICES;
        if slices
            .back()
            .is_none_or(|s| now.duration_since(s.started) >= slice_len)
        {
            slices.push_back(Slice {
                started: now,
                target: Side::new(),
                fallback: Side::new(),
            });
            while slices
                .front()
                .is_some_and(|s| now.duration_since(s.started) > self.window)
            {
                slices.pop_front();
            }
        }
        let Some(slice) = slices.back_mut() else {
            return;
        };
        let side = if is_target {
            &mut slice.target
        } else {
            &mut slice.fallback
        };
        side.requests += 1;
        side.errors += u64::from(error);
        let _ = side
            .latency_us
            .record((latency.as_micros() as u64).clamp(1, 60_000_000));
    }

    /// Target and fallback summaries over the window ending now.
    pub fn summary(&self) -> (SideSummary, SideSummary) {
        let now = Instant::now();
        let mut t = Side::new();
        let mut f = Side::new();
        if let Ok(slices) = self.slices.lock() {
            for s in slices
                .iter()
                .filter(|s| now.duration_since(s.started) <= self.window)
            {
                for (acc, add) in [(&mut t, &s.target), (&mut f, &s.fallback)] {
                    acc.requests += add.requests;
                    acc.errors += add.errors;
                    let _ = acc.latency_us.add(&add.latency_us);
                }
            }
        }
        let sum = |s: &Side| SideSummary {
            requests: s.requests,
            errors: s.errors,
            p99_seconds: s.latency_us.value_at_quantile(0.99) as f64 / 1e6,
        };
        (sum(&t), sum(&f))
    }

    /// Forgets everything (a new step starts with a clean window).
    pub fn reset(&self) {
        if let Ok(mut s) = self.slices.lock() {
            s.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_both_sides_and_ignores_others() {
        let g = GateStats::new("svc", "mono", Duration::from_secs(60));
        for i in 0..100 {
            g.record("svc", i % 10 == 0, Duration::from_millis(i));
            g.record("mono", false, Duration::from_millis(1));
            g.record("other", true, Duration::from_millis(1));
        }
        let (t, f) = g.summary();
        assert_eq!((t.requests, t.errors), (100, 10));
        assert_eq!((f.requests, f.errors), (100, 0));
        assert!((t.error_rate() - 0.1).abs() < 1e-9);
        assert!(
            t.p99_seconds > 0.09 && t.p99_seconds < 0.1,
            "{}",
            t.p99_seconds
        );
        g.reset();
        assert_eq!(g.summary().0.requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides_past_old_requests() {
        let g = GateStats::new("svc", "mono", Duration::from_secs(60));
        g.record("svc", true, Duration::from_millis(5));
        tokio::time::advance(Duration::from_secs(30)).await;
        g.record("svc", false, Duration::from_millis(5));
        g.record("mono", false, Duration::from_millis(5));
        let (t, f) = g.summary();
        assert_eq!((t.requests, t.errors, f.requests), (2, 1, 1));
        // The first request leaves the window; the later ones stay until theirs ends.
        tokio::time::advance(Duration::from_secs(31)).await;
        let (t, f) = g.summary();
        assert_eq!((t.requests, t.errors, f.requests), (1, 0, 1));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(g.summary().0.requests, 0);
    }
}
