//! Metric names, their descriptions, and the Prometheus recorder. Every metric the process
//! emits is named here, once.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by route, target and status class.
pub const REQUESTS: &str = "strangler_gateway_requests_total";
/// Upstream latency to the response head.
pub const UPSTREAM_LATENCY: &str = "strangler_gateway_upstream_latency_seconds";
/// Time the gateway itself added to a request.
pub const ADDED_LATENCY: &str = "strangler_gateway_added_latency_seconds";
/// Requests failed or refused through the client's fault (never counted against an upstream).
pub const CLIENT_ERRORS: &str = "strangler_gateway_client_errors_total";
/// Requests retried on the fallback after a connect failure.
pub const RETRIES: &str = "strangler_gateway_retries_total";
/// Client connections open now.
pub const CONNECTIONS: &str = "strangler_gateway_connections";
/// Idle client connections parked without HTTP state.
pub const PARKED: &str = "strangler_gateway_connections_parked";
/// Idle client connections closed at the keep-alive limit, by protocol.
pub const IDLE_CLOSED: &str = "strangler_gateway_connections_idle_closed_total";
/// Whether an upstream may receive traffic (1) or not (0).
pub const UPSTREAM_HEALTHY: &str = "strangler_router_upstream_healthy";
/// Passive ejections by upstream.
pub const EJECTIONS: &str = "strangler_router_ejections_total";
/// Version of the route table in force.
pub const TABLE_VERSION: &str = "strangler_router_table_version";
/// Share of a route held by an upstream, in percent.
pub const ROUTE_SHARE: &str = "strangler_router_route_share_percent";
/// Current rollout step of a route, in percent.
pub const ROLLOUT_STEP: &str = "strangler_router_rollout_step_percent";
/// Automatic rollbacks by route.
pub const ROLLOUT_ROLLBACKS: &str = "strangler_router_rollout_rollbacks_total";
/// Write-tap events dropped because the channel was full.
pub const TAP_DROPPED: &str = "strangler_tap_dropped_total";
/// Write-tap events sent.
pub const TAP_SENT: &str = "strangler_tap_sent_total";
/// Failed attempts to read or write the control database.
pub const CONTROL_ERRORS: &str = "strangler_control_errors_total";

/// Sync lag per entity and direction.
pub const SYNC_LAG: &str = "strangler_sync_lag_seconds";
/// 1 when an entity's lag in a direction exceeds its tolerance.
pub const SYNC_LAG_EXCEEDED: &str = "strangler_sync_lag_exceeded";
/// Changes applied per entity and direction.
pub const SYNC_APPLIED: &str = "strangler_sync_changes_applied_total";
/// Conflicts per entity and policy.
pub const SYNC_CONFLICTS: &str = "strangler_sync_conflicts_total";
/// Retries after a failed round, per link.
pub const SYNC_RETRIES: &str = "strangler_sync_retries_total";
/// 1 when an entity is paused (schema drift, bad row).
pub const SYNC_PAUSED: &str = "strangler_sync_entity_paused";
/// Schema drift seen per entity.
pub const SYNC_DRIFT: &str = "strangler_sync_schema_drift_total";
/// Capture timestamps clamped because they ran ahead of the engine's clock.
pub const SYNC_CLOCK_CLAMPED: &str = "strangler_sync_clock_clamped_total";
/// Changes set aside (quarantined) per entity: they could not be decoded, mapped or applied.
pub const SYNC_QUARANTINED: &str = "strangler_sync_quarantined";
/// Broker mode: changes published to the stream, per side.
pub const SYNC_PUBLISHED: &str = "strangler_sync_published_total";
/// Broker mode: publishes the stream recognised as duplicates (`Nats-Msg-Id`), per side.
pub const SYNC_PUBLISH_DUPLICATES: &str = "strangler_sync_publish_duplicates_total";
/// Broker mode: 1 while this worker holds a unit's lease.
pub const SYNC_OWNED: &str = "strangler_sync_owned";
/// Broker mode: messages that could not be decoded and were terminated.
pub const SYNC_BAD_MESSAGES: &str = "strangler_sync_bad_messages_total";
/// Requests answered by a generated API, by service, operation and status class.
pub const API_REQUESTS: &str = "strangler_api_requests_total";
/// Time a generated API took to answer, by service and operation.
pub const API_LATENCY: &str = "strangler_api_request_duration_seconds";
/// Requests a generated API answered with an error, by service, operation and status.
pub const API_ERRORS: &str = "strangler_api_errors_total";

/// Keys found different by the latest validation of an entity, by kind.
pub const VALIDATE_DISCREPANCIES: &str = "strangler_validate_discrepancies";
/// Validation runs, by entity and result (`consistent`, `different`, `error`).
pub const VALIDATE_RUNS: &str = "strangler_validate_runs_total";
/// Rows a validation read, by entity and side.
pub const VALIDATE_ROWS: &str = "strangler_validate_rows_total";

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Time spent in the gateway itself: fine steps below a millisecond, where it should stay.
const ADDED_LATENCY_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_015, 0.000_02, 0.000_03, 0.000_04, 0.000_05, 0.000_075, 0.000_1,
    0.000_15, 0.000_2, 0.000_3, 0.000_5, 0.001, 0.002_5, 0.01, 0.1, 1.0,
];

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    // A full-name matcher takes precedence over the suffix.
                    b.set_buckets_for_metric(
                        Matcher::Full(ADDED_LATENCY.into()),
                        ADDED_LATENCY_BUCKETS,
                    )
                })
                .map(PrometheusBuilder::build_recorder);
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    // Histogram samples queue up until drained: drain them on a timer so
                    // memory stays bounded whether or not anyone scrapes.
                    let upkeep = handle.clone();
                    let _ = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(std::time::Duration::from_secs(1));
                                upkeep.run_upkeep();
                            }
                        });
                    // Another recorder may already be installed (embedding); ours still renders.
                    let _ = metrics::set_global_recorder(recorder);
                    describe();
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

fn describe() {
    describe_counter!(REQUESTS, "Requests by route, target and status class.");
    describe_histogram!(
        UPSTREAM_LATENCY,
        Unit::Seconds,
        "Upstream time to response head."
    );
    describe_histogram!(
        ADDED_LATENCY,
        Unit::Seconds,
        "Time the gateway added to a request."
    );
    describe_gauge!(
        SYNC_QUARANTINED,
        "Changes set aside per entity because they could not be decoded, mapped or applied; they wait in their changelog for POST /admin/sync/quarantine/{id}/retry."
    );
    describe_counter!(
        CLIENT_ERRORS,
        "Requests failed or refused through the client's fault (broken or stalled body, bad head), by route and reason."
    );
    describe_counter!(
        RETRIES,
        "Idempotent requests retried on the fallback after a connect failure."
    );
    describe_gauge!(CONNECTIONS, "Client connections open now.");
    describe_gauge!(
        PARKED,
        "Idle client connections holding no HTTP state until the client sends again."
    );
    describe_counter!(
        IDLE_CLOSED,
        "Client connections closed after `timeouts.header_read` without a request."
    );
    describe_gauge!(
        UPSTREAM_HEALTHY,
        "1 when the upstream may receive traffic, 0 when not."
    );
    describe_counter!(EJECTIONS, "Passive ejections of an upstream.");
    describe_gauge!(TABLE_VERSION, "Version of the route table in force.");
    describe_gauge!(
        ROUTE_SHARE,
        "Share of a route's buckets held by an upstream, in percent."
    );
    describe_gauge!(ROLLOUT_STEP, "Current rollout step of a route, in percent.");
    describe_counter!(
        ROLLOUT_ROLLBACKS,
        "Automatic rollbacks after a gate breach."
    );
    describe_counter!(
        TAP_DROPPED,
        "Write-tap events dropped because the channel was full."
    );
    describe_counter!(TAP_SENT, "Write-tap events handed to the engines.");
    describe_counter!(
        CONTROL_ERRORS,
        "Failed reads or writes of the control database."
    );
    describe_gauge!(
        SYNC_LAG,
        Unit::Seconds,
        "Sync lag per entity and direction."
    );
    describe_gauge!(
        SYNC_LAG_EXCEEDED,
        "1 when an entity's lag in a direction exceeds its lag tolerance."
    );
    describe_counter!(SYNC_APPLIED, "Changes applied per entity and direction.");
    describe_counter!(SYNC_CONFLICTS, "Conflicts settled per entity and policy.");
    describe_counter!(
        SYNC_RETRIES,
        "Sync rounds retried after a failure, per link."
    );
    describe_gauge!(
        SYNC_PAUSED,
        "1 when an entity is paused by schema drift or a bad row."
    );
    describe_counter!(SYNC_DRIFT, "Schema drift detected per entity.");
    describe_counter!(
        SYNC_CLOCK_CLAMPED,
        "Capture timestamps clamped because they ran ahead of the engine's clock."
    );
    describe_counter!(
        SYNC_PUBLISHED,
        "Changes published to the broker stream, per side."
    );
    describe_counter!(
        SYNC_PUBLISH_DUPLICATES,
        "Publishes the broker stream recognised as duplicates, per side."
    );
    describe_gauge!(
        SYNC_OWNED,
        "1 while this worker holds the lease of a broker unit."
    );
    describe_counter!(
        SYNC_BAD_MESSAGES,
        "Broker messages that could not be decoded and were terminated."
    );
    describe_counter!(
        API_REQUESTS,
        "Requests answered by a generated API, by service, operation and status class."
    );
    describe_histogram!(
        API_LATENCY,
        Unit::Seconds,
        "Time a generated API took to answer, by service and operation."
    );
    describe_gauge!(
        VALIDATE_DISCREPANCIES,
        "Keys found different by the latest validation of an entity, by kind."
    );
    describe_counter!(
        VALIDATE_RUNS,
        "Validation runs, by entity and result (consistent, different, error)."
    );
    describe_counter!(VALIDATE_ROWS, "Rows a validation read, by entity and side.");
    describe_counter!(
        API_ERRORS,
        "Requests a generated API answered with a 4xx or 5xx, by service, operation and status."
    );
}
