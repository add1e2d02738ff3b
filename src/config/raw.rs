//! The configuration file's shape exactly as written, before validation.
//!
//! Durations and addresses stay strings here so that validation can report a bad one with
//! the route and field it belongs to.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file as parsed from TOML.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[gateway]`: listeners, timeouts, limits, control database.
    #[serde(default)]
    pub gateway: RawGateway,
    /// `[upstreams.NAME]`: the backends routes send traffic to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// `[[routes]]`: request matching and percentage splits.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// `[sides.NAME]`: databases of the sync engine (checked in `config::sync`).
    #[serde(default)]
    pub sides: Option<toml::Table>,
    /// `[[entities]]`: entity mappings of the sync engine.
    #[serde(default)]
    pub entities: Option<Vec<toml::Table>>,
    /// `[sync]`: sync engine settings.
    #[serde(default)]
    pub sync: Option<toml::Table>,
    /// `[services.NAME]`: generated REST APIs.
    #[serde(default)]
    pub services: BTreeMap<String, super::services::RawService>,
}

/// `[gateway]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// Data-plane listen address.
    pub listen: Option<String>,
    /// Admin API listen address.
    pub admin_listen: Option<String>,
    /// Bearer token for the admin API; required off loopback.
    pub admin_token: Option<String>,
    /// Whether responses carry `x-strangler-target`.
    pub target_header: Option<bool>,
    /// Control database URL (`sqlite://FILE` or `postgres://…`).
    pub control: Option<String>,
    /// How often to look for route table versions published by other gateways.
    pub control_poll: Option<String>,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_grace: Option<String>,
    /// Capacity of the write-tap channel.
    pub tap_capacity: Option<usize>,
    /// How many route table versions to keep in memory and report.
    pub history: Option<usize>,
    /// Data-plane I/O threads; the number of CPUs by default.
    pub threads: Option<usize>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// Limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// TLS for the data plane.
    pub tls: Option<RawTls>,
}

/// `[gateway.timeouts]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect to an upstream.
    pub connect: Option<String>,
    /// Reading a request head, counted from when the connection goes idle.
    pub header_read: Option<String>,
    /// Waiting for an upstream's response head.
    pub upstream_response: Option<String>,
    /// Idle pooled upstream connections are closed after this.
    pub idle: Option<String>,
    /// An idle client connection drops its HTTP state after this much quiet.
    pub park: Option<String>,
}

/// `[gateway.limits]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest accepted request head, in bytes.
    pub max_header_bytes: Option<usize>,
    /// Most client connections open at once.
    pub max_connections: Option<usize>,
    /// Most idle pooled connections kept per upstream.
    pub pool_max_idle_per_host: Option<usize>,
}

/// `[gateway.tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain file.
    pub cert: String,
    /// PEM private key file.
    pub key: String,
    /// HPACK decoding table for HTTP/2 requests, in bytes.
    pub http2_header_table: Option<u32>,
}

/// `[upstreams.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Base URL, `http://host:port`.
    pub url: String,
    /// Active health probe.
    pub health: Option<RawHealth>,
    /// Passive ejection on failures.
    pub passive: Option<RawPassive>,
    /// Send the upstream's own authority as `Host` instead of the client's.
    pub rewrite_host: Option<bool>,
}

/// Active health probe as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Probe path.
    pub path: String,
    /// Time between probes.
    pub interval: Option<String>,
    /// Time a probe may take.
    pub timeout: Option<String>,
    /// Consecutive successes that mark an upstream healthy.
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures that mark an upstream unhealthy.
    pub unhealthy_threshold: Option<u32>,
}

/// Passive ejection as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    /// Consecutive connect errors or 5xx responses that eject; 0 disables.
    pub consecutive_failures: Option<u32>,
    /// First ejection period; doubles on each repeat.
    pub base_ejection: Option<String>,
    /// Longest ejection period.
    pub max_ejection: Option<String>,
}

/// `[[routes]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique route name.
    pub name: String,
    /// Host to match (port ignored, case-insensitive).
    pub host: Option<String>,
    /// Path prefix to match on segment boundaries.
    pub path_prefix: Option<String>,
    /// Methods to match; all when absent.
    pub methods: Option<Vec<String>>,
    /// Headers that must be present with exactly these values.
    pub headers: Option<BTreeMap<String, String>>,
    /// Upstream name to percentage.
    pub split: BTreeMap<String, f64>,
    /// Where the sticky key comes from.
    pub sticky: Option<RawSticky>,
    /// Upstream that takes the share of ejected upstreams and rollbacks.
    pub fallback: Option<String>,
    /// Salt of the bucket hash; the route name by default.
    pub salt: Option<String>,
    /// Header or cookie values that pin a request to an upstream.
    #[serde(default)]
    pub pins: Vec<RawPin>,
    /// Entity whose writes this route carries (feeds the write tap).
    pub entity: Option<String>,
    /// Gradual rollout plan.
    pub rollout: Option<RawRollout>,
}

/// Sticky key source as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    /// Cookie name.
    pub cookie: Option<String>,
    /// Header name.
    pub header: Option<String>,
    /// JWT claim in the bearer token.
    pub jwt_claim: Option<String>,
    /// Client address.
    pub client_ip: Option<bool>,
}

/// Pin rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPin {
    /// Header to look at.
    pub header: Option<String>,
    /// Cookie to look at.
    pub cookie: Option<String>,
    /// Value that pins.
    pub value: String,
    /// Upstream pinned to.
    pub upstream: String,
}

/// Rollout plan as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// Upstream being rolled out.
    pub target: String,
    /// Percentages to step through.
    pub steps: Vec<f64>,
    /// Time at each step before the gates may pass it.
    pub hold: Option<String>,
    /// Sliding window the gates look at.
    pub window: Option<String>,
    /// Requests each side needs in the window before the gates judge.
    pub min_requests: Option<u64>,
    /// Largest allowed error-rate excess of the target over the fallback (0.01 = 1 point).
    pub max_error_rate_increase: Option<f64>,
    /// Largest allowed p99 latency ratio target/fallback.
    pub max_p99_ratio: Option<f64>,
    /// Start stepping as soon as the gateway starts.
    pub auto_start: Option<bool>,
}
