//! Typed configuration: loading the TOML file, validating it with errors that name the file,
//! the route and the field, and the defaults a production gateway starts from.

mod check;
mod raw;
pub mod services;
pub mod sync;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

pub use check::{BUCKETS, MAX_ROUTES, from_raw, percent};
pub use raw::RawConfig;

/// A configuration error, formatted as `FILE: route "NAME": field: problem`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is well-formed but wrong.
    #[error("{file}: {place}{message}")]
    Invalid {
        /// The file.
        file: String,
        /// `route "users": ` or `upstream "x": ` or `gateway: `.
        place: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (for messages and reloads).
    pub file: PathBuf,
    /// XXH3 of the file text: tells a restarted gateway whether the file changed.
    pub fingerprint: u64,
    /// The gateway section.
    pub gateway: GatewayConfig,
    /// Upstreams, sorted by name.
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes in file order.
    pub routes: Vec<RouteConfig>,
    /// Sides, entities and settings of the sync engine.
    pub sync: sync::SyncConfig,
    /// Services with a generated API, by name.
    pub services: Vec<services::ServiceConfig>,
}

/// The validated `[gateway]` section.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Data-plane address.
    pub listen: SocketAddr,
    /// Admin API address.
    pub admin_listen: SocketAddr,
    /// Bearer token for the admin API.
    pub admin_token: Option<String>,
    /// Whether responses carry `x-strangler-target`.
    pub target_header: bool,
    /// Control database URL.
    pub control: String,
    /// Poll period for versions published by other gateways.
    pub control_poll: Duration,
    /// SIGTERM drain deadline.
    pub drain_grace: Duration,
    /// Write-tap channel capacity.
    pub tap_capacity: usize,
    /// Route table versions kept.
    pub history: usize,
    /// Data-plane I/O threads, each with its own listener and upstream pool.
    pub threads: usize,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Most client connections at once.
    pub max_connections: usize,
    /// Most idle pooled connections per upstream.
    pub pool_max_idle_per_host: usize,
    /// TLS certificate and key, when the data plane serves HTTPS.
    pub tls: Option<TlsConfig>,
}

/// Timeouts of the data plane.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect to an upstream.
    pub connect: Duration,
    /// Request head read; also bounds keep-alive idleness of client connections.
    pub header_read: Duration,
    /// Upstream response head.
    pub upstream_response: Duration,
    /// Idle pooled upstream connections.
    pub idle: Duration,
    /// Quiet time after which an idle client connection drops its HTTP state.
    pub park: Duration,
}

/// PEM files of the data plane's certificate.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// HPACK decoding table for HTTP/2 requests, in bytes; HTTP/2 connections park only
    /// with 0.
    pub http2_header_table: u32,
}

/// A validated upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Name used by routes.
    pub name: String,
    /// `host:port` to connect to.
    pub authority: http::uri::Authority,
    /// Path prefix of the base URL (without trailing slash), prepended to request paths.
    pub base_path: String,
    /// Active probe.
    pub health: Option<HealthConfig>,
    /// Passive ejection.
    pub passive: PassiveConfig,
    /// Send the upstream's authority as `Host`.
    pub rewrite_host: bool,
}

/// Active health probe settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Probe path.
    pub path: String,
    /// Between probes.
    pub interval: Duration,
    /// Per probe.
    pub timeout: Duration,
    /// Successes to turn healthy.
    pub healthy_threshold: u32,
    /// Failures to turn unhealthy.
    pub unhealthy_threshold: u32,
}

/// Passive ejection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PassiveConfig {
    /// Consecutive failures that eject; 0 disables.
    pub consecutive_failures: u32,
    /// First ejection period.
    pub base_ejection: Duration,
    /// Longest ejection period.
    pub max_ejection: Duration,
}

/// Where a route's sticky key comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum StickyConfig {
    /// No key: each request draws a random bucket.
    None,
    /// A cookie, issued by the gateway when absent.
    Cookie(String),
    /// A request header.
    Header(HeaderName),
    /// A claim of the bearer JWT (read, not verified: bucketing only).
    JwtClaim(String),
    /// The client's IP address.
    ClientIp,
}

/// A rule that pins matching requests to one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct PinConfig {
    /// What is looked at.
    pub source: PinSource,
    /// Value that pins.
    pub value: String,
    /// Upstream pinned to.
    pub upstream: String,
}

/// Where a pin reads its value.
#[derive(Debug, Clone, PartialEq)]
pub enum PinSource {
    /// A header.
    Header(HeaderName),
    /// A cookie.
    Cookie(String),
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique name.
    pub name: String,
    /// Lower-case host to match.
    pub host: Option<String>,
    /// Path prefix, always starting with `/`.
    pub path_prefix: String,
    /// Methods matched; empty means all.
    pub methods: Vec<Method>,
    /// Exact header matches.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Upstream name and share in buckets of 0.01 %, sorted by name.
    pub split: Vec<(String, u32)>,
    /// Sticky key source.
    pub sticky: StickyConfig,
    /// Fallback upstream.
    pub fallback: String,
    /// Hash salt.
    pub salt: String,
    /// Pin rules, first match wins.
    pub pins: Vec<PinConfig>,
    /// Entity bound to this route's writes.
    pub entity: Option<String>,
    /// Rollout plan.
    pub rollout: Option<RolloutConfig>,
}

/// A validated rollout plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// Upstream rolled out.
    pub target: String,
    /// Steps in buckets (0.01 %), ascending, last is 10,000.
    pub steps: Vec<u32>,
    /// Minimum time per step.
    pub hold: Duration,
    /// Gate window.
    pub window: Duration,
    /// Requests per side needed to judge.
    pub min_requests: u64,
    /// Allowed error-rate excess.
    pub max_error_rate_increase: f64,
    /// Allowed p99 ratio.
    pub max_p99_ratio: f64,
    /// Start at boot.
    pub auto_start: bool,
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates configuration text that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.clone(),
            message: match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: {}", e.message().trim_end())
                }
                None => e.message().trim_end().to_string(),
            },
        })?;
        let mut cfg = from_raw(&file, raw)?;
        cfg.file = path.to_path_buf();
        cfg.fingerprint = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        Ok(cfg)
    }

    /// Looks up an upstream by name.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// Looks up a route by name.
    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// Parses a duration such as `250ms`, `2s`, `5m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); use e.g. \"500ms\", \"2s\", \"5m\""))
}
