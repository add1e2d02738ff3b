//! Rollout plans: step a route's target share up through the plan, judged by gates that
//! compare the target with the fallback. Pass → next step after the hold time; breach →
//! automatic rollback; too little traffic → hold (never abort).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::router::{Router, RouterError, now_ms};
use super::split::BUCKETS;
use super::stats::SideSummary;
use crate::config::{RolloutConfig, percent};
use crate::metrics as m;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not started.
    Idle,
    /// Stepping.
    Running,
    /// Stopped by an operator at the current step.
    Paused,
    /// At 100 %.
    Completed,
    /// A gate breached; the route went back to its fallback.
    RolledBack,
    /// Stopped by an operator; the route went back to its fallback.
    Aborted,
}

/// Persisted progress of a route's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// Status.
    pub status: Status,
    /// Index of the current step in the plan.
    pub step: usize,
    /// When the current step began, Unix ms.
    pub step_started_ms: u64,
    /// Last verdict or reason, for operators.
    pub message: String,
}

impl RolloutState {
    fn idle() -> RolloutState {
        RolloutState {
            status: Status::Idle,
            step: 0,
            step_started_ms: 0,
            message: String::new(),
        }
    }
}

/// What the gates say about the current window.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough requests on one side to judge.
    Hold(String),
    /// Every gate passes.
    Pass,
    /// A gate failed.
    Breach(String),
}

/// Latencies below this are treated as equal to it, so sub-millisecond noise cannot breach.
const LATENCY_FLOOR: f64 = 0.001;

/// Judges a window of target and fallback statistics against the plan's gates.
pub fn judge(cfg: &RolloutConfig, target: &SideSummary, fallback: &SideSummary) -> Verdict {
    if target.requests < cfg.min_requests || fallback.requests < cfg.min_requests {
        return Verdict::Hold(format!(
            "too little traffic to judge: target {} and fallback {} requests, need {} each",
            target.requests, fallback.requests, cfg.min_requests
        ));
    }
    let excess = target.error_rate() - fallback.error_rate();
    if excess > cfg.max_error_rate_increase {
        return Verdict::Breach(format!(
            "error rate {:.2} % vs fallback {:.2} % exceeds the allowed +{:.2} points",
            target.error_rate() * 100.0,
            fallback.error_rate() * 100.0,
            cfg.max_error_rate_increase * 100.0
        ));
    }
    let ratio = target.p99_seconds.max(LATENCY_FLOOR) / fallback.p99_seconds.max(LATENCY_FLOOR);
    if ratio > cfg.max_p99_ratio {
        return Verdict::Breach(format!(
            "p99 latency {:.1} ms is {ratio:.2}x the fallback's {:.1} ms (limit {:.2}x)",
            target.p99_seconds * 1e3,
            fallback.p99_seconds * 1e3,
            cfg.max_p99_ratio
        ));
    }
    Verdict::Pass
}

/// Operator actions on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Begin at the first step (or restart after a rollback or abort).
    Start,
    /// Hold at the current step.
    Pause,
    /// Continue from the current step.
    Resume,
    /// Go straight to 100 %.
    Promote,
    /// Send everything back to the fallback.
    Abort,
}

/// Runs every route's rollout plan and takes operator actions.
pub struct Rollouts {
    router: Arc<Router>,
    lock: tokio::sync::Mutex<()>,
}

impl Rollouts {
    /// A controller over the router's routes.
    pub fn new(router: Arc<Router>) -> Arc<Rollouts> {
        Arc::new(Rollouts {
            router,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The stored state of every route's rollout, by route.
    async fn states(&self) -> Result<HashMap<String, RolloutState>, RouterError> {
        let all = self.router.control().rollouts().await?;
        Ok(all
            .into_iter()
            .filter_map(|(route, s)| Some((route, serde_json::from_str(&s).ok()?)))
            .collect())
    }

    /// The stored state of a route's rollout.
    pub async fn state(&self, route: &str) -> Result<RolloutState, RouterError> {
        Ok(self
            .states()
            .await?
            .remove(route)
            .unwrap_or_else(RolloutState::idle))
    }

    async fn save(&self, route: &str, state: &RolloutState) -> Result<(), RouterError> {
        let text = serde_json::to_string(state).map_err(|e| RouterError::Invalid(e.to_string()))?;
        self.router.control().save_rollout(route, &text).await?;
        Ok(())
    }

    fn plan(&self, route: &str) -> Result<(RolloutConfig, String), RouterError> {
        let cfg = self.router.config();
        let rc = cfg
            .route(route)
            .ok_or_else(|| RouterError::UnknownRoute(route.into()))?;
        let plan = rc
            .rollout
            .clone()
            .ok_or_else(|| RouterError::Invalid(format!("route {route:?} has no rollout plan")))?;
        Ok((plan, rc.fallback.clone()))
    }

    /// Gives `target` exactly `share` buckets, the fallback the rest of what is not held by
    /// other upstreams.
    async fn set_share(
        &self,
        route: &str,
        plan: &RolloutConfig,
        fallback: &str,
        share: u32,
        reason: String,
    ) -> Result<(), RouterError> {
        let table = self.router.current();
        let current = table
            .route(route)
            .map(|r| r.allocation.shares())
            .unwrap_or_default();
        let others: u32 = current
            .iter()
            .filter(|(n, _)| n != &plan.target && n != fallback)
            .map(|(_, b)| b)
            .sum();
        let share = share.min(BUCKETS - others);
        let mut weights: Vec<(String, u32)> = current
            .into_iter()
            .filter(|(n, _)| n != &plan.target && n != fallback)
            .collect();
        weights.push((plan.target.clone(), share));
        weights.push((fallback.to_string(), BUCKETS - others - share));
        self.router.set_split(route, weights, reason).await?;
        metrics::gauge!(m::ROLLOUT_STEP, "route" => route.to_string())
            .set(f64::from(share) / 100.0);
        if let Some(stats) = self.router.gate_stats(route).await {
            stats.reset();
        }
        Ok(())
    }

    /// Applies an operator action and returns the new state.
    pub async fn act(&self, route: &str, action: Action) -> Result<RolloutState, RouterError> {
        let _guard = self.lock.lock().await;
        let (plan, fallback) = self.plan(route)?;
        let mut st = self.state(route).await?;
        let now = now_ms();
        match action {
            Action::Start => {
                self.set_share(
                    route,
                    &plan,
                    &fallback,
                    plan.steps[0],
                    format!("rollout {route}: start at {} %", percent(plan.steps[0])),
                )
                .await?;
                st = RolloutState {
                    status: Status::Running,
                    step: 0,
                    step_started_ms: now,
                    message: "started".into(),
                };
            }
            Action::Pause if st.status == Status::Running => {
                st.status = Status::Paused;
                st.message = "paused by operator".into();
            }
            Action::Resume if st.status == Status::Paused => {
                st.status = Status::Running;
                st.step_started_ms = now;
                st.message = "resumed by operator".into();
            }
            Action::Promote => {
                self.set_share(
                    route,
                    &plan,
                    &fallback,
                    BUCKETS,
                    format!("rollout {route}: promoted to 100 %"),
                )
                .await?;
                st = RolloutState {
                    status: Status::Completed,
                    step: plan.steps.len() - 1,
                    step_started_ms: now,
                    message: "promoted by operator".into(),
                };
            }
            Action::Abort => {
                self.set_share(
                    route,
                    &plan,
                    &fallback,
                    0,
                    format!("rollout {route}: aborted"),
                )
                .await?;
                st.status = Status::Aborted;
                st.message = "aborted by operator".into();
            }
            Action::Pause | Action::Resume => {
                return Err(RouterError::Invalid(format!(
                    "rollout of {route:?} is {:?}; cannot {action:?}",
                    st.status
                )));
            }
        }
        self.save(route, &st).await?;
        Ok(st)
    }

    /// One evaluation of every running rollout.
    pub async fn tick(&self) -> Result<(), RouterError> {
        let _guard = self.lock.lock().await;
        let cfg = self.router.config();
        // No plan, nothing to judge: an idle gateway does not read the control database
        // four times a second for nothing.
        if cfg.routes.iter().all(|r| r.rollout.is_none()) {
            return Ok(());
        }
        let mut states = self.states().await?;
        for rc in cfg.routes.iter().filter(|r| r.rollout.is_some()) {
            let (plan, fallback) = self.plan(&rc.name)?;
            let mut st = states.remove(&rc.name).unwrap_or_else(RolloutState::idle);
            if st.status != Status::Running {
                continue;
            }
            let Some(stats) = self.router.gate_stats(&rc.name).await else {
                continue;
            };
            let (t, f) = stats.summary();
            // Health checks pull a failing target out of traffic, which would starve the
            // gates and hold forever: an unavailable target is a breach in itself.
            let table = self.router.current();
            let target_down = table
                .route(&rc.name)
                .and_then(|r| r.target_index(&plan.target).map(|i| &r.targets[i as usize]))
                .is_some_and(|t| !t.upstream.health.is_available());
            let verdict = if target_down {
                Verdict::Breach(format!(
                    "target {:?} was taken out of traffic by health checks",
                    plan.target
                ))
            } else {
                judge(&plan, &t, &f)
            };
            match verdict {
                Verdict::Breach(why) => {
                    tracing::error!(route = %rc.name, reason = %why, "rollout gate breached: rolling back");
                    metrics::counter!(m::ROLLOUT_ROLLBACKS, "route" => rc.name.clone())
                        .increment(1);
                    self.set_share(
                        &rc.name,
                        &plan,
                        &fallback,
                        0,
                        format!("rollout {}: gate breach: {why}", rc.name),
                    )
                    .await?;
                    st.status = Status::RolledBack;
                    st.message = why;
                }
                Verdict::Hold(why) => st.message = why,
                Verdict::Pass => {
                    let held = Duration::from_millis(now_ms().saturating_sub(st.step_started_ms));
                    if held < plan.hold {
                        st.message = "gates pass; holding".into();
                    } else if st.step + 1 < plan.steps.len() {
                        st.step += 1;
                        let share = plan.steps[st.step];
                        self.set_share(
                            &rc.name,
                            &plan,
                            &fallback,
                            share,
                            format!("rollout {}: step to {} %", rc.name, percent(share)),
                        )
                        .await?;
                        st.step_started_ms = now_ms();
                        st.message = format!("advanced to {} %", percent(share));
                    } else {
                        st.status = Status::Completed;
                        st.message = "completed".into();
                    }
                }
            }
            self.save(&rc.name, &st).await?;
        }
        Ok(())
    }

    /// Starts auto-start plans that have never run, then ticks until cancelled.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let cfg = self.router.config();
        for rc in cfg
            .routes
            .iter()
            .filter(|r| r.rollout.as_ref().is_some_and(|p| p.auto_start))
        {
            if matches!(
                self.state(&rc.name).await.map(|s| s.status),
                Ok(Status::Idle)
            ) && let Err(e) = self.act(&rc.name, Action::Start).await
            {
                tracing::error!(route = %rc.name, error = %e, "could not start rollout");
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "rollout evaluation failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> RolloutConfig {
        RolloutConfig {
            target: "svc".into(),
            steps: vec![100, 500, 10_000],
            hold: Duration::from_secs(1),
            window: Duration::from_secs(10),
            min_requests: 20,
            max_error_rate_increase: 0.01,
            max_p99_ratio: 1.5,
            auto_start: false,
        }
    }

    fn side(requests: u64, errors: u64, p99_ms: f64) -> SideSummary {
        SideSummary {
            requests,
            errors,
            p99_seconds: p99_ms / 1e3,
        }
    }

    #[test]
    fn quiet_canary_holds_instead_of_aborting() {
        assert!(matches!(
            judge(&plan(), &side(3, 3, 900.0), &side(500, 0, 5.0)),
            Verdict::Hold(_)
        ));
        assert!(matches!(
            judge(&plan(), &side(500, 0, 5.0), &side(0, 0, 0.0)),
            Verdict::Hold(_)
        ));
    }

    #[test]
    fn error_rate_gate() {
        assert_eq!(
            judge(&plan(), &side(100, 1, 5.0), &side(100, 0, 5.0)),
            Verdict::Pass
        );
        assert!(
            matches!(judge(&plan(), &side(100, 5, 5.0), &side(100, 0, 5.0)), Verdict::Breach(m) if m.contains("error rate"))
        );
    }

    #[test]
    fn latency_gate_with_floor() {
        assert!(
            matches!(judge(&plan(), &side(100, 0, 30.0), &side(100, 0, 10.0)), Verdict::Breach(m) if m.contains("p99"))
        );
        // 0.4 ms vs 0.1 ms is noise below the 1 ms floor.
        assert_eq!(
            judge(&plan(), &side(100, 0, 0.4), &side(100, 0, 0.1)),
            Verdict::Pass
        );
    }
}
