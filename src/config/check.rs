//! Turns the raw file into a [`Config`], refusing anything wrong with a message that names
//! the file, the place (route, upstream or gateway) and the field.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};

use super::raw::{RawConfig, RawGateway, RawRollout, RawRoute, RawSticky, RawUpstream};
use super::{
    Config, ConfigError, GatewayConfig, HealthConfig, PassiveConfig, PinConfig, PinSource,
    RolloutConfig, RouteConfig, StickyConfig, Timeouts, TlsConfig, UpstreamConfig, parse_duration,
};

/// Total buckets of a split: one bucket is 0.01 %.
pub const BUCKETS: u32 = 10_000;

struct Ctx<'a> {
    file: &'a str,
    place: String,
}

impl Ctx<'_> {
    fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            place: self.place.clone(),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        field: &str,
        value: &Option<String>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let text = value.as_deref().unwrap_or(default);
        let d = parse_duration(text).map_err(|e| self.err(format!("{field}: {e}")))?;
        if d.is_zero() {
            return Err(self.err(format!("{field}: must be greater than zero")));
        }
        Ok(d)
    }
}

/// Most routes one file may hold.
pub const MAX_ROUTES: usize = 10_000;

/// Largest HPACK decoding table a client connection may be given: each connection may fill
/// its own.
pub const MAX_HTTP2_HEADER_TABLE: u32 = 65_536;

/// Validates a parsed file; `file` is the name used in messages.
pub fn from_raw(file: &str, mut raw: RawConfig) -> Result<Config, ConfigError> {
    let services = super::services::from_raw(file, &raw.services)?;
    // A mounted generated API is one more upstream and route, made from its section.
    for (name, upstream, route) in super::services::mount_routes(&services) {
        if raw.upstreams.contains_key(&name) || raw.routes.iter().any(|r| r.name == name) {
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                place: format!("service {:?}: ", &name["apigen.".len()..]),
                message: format!("mount: the upstream or route name {name:?} is taken"),
            });
        }
        raw.upstreams.insert(name, upstream);
        raw.routes.push(route);
    }
    let gateway = gateway(
        &Ctx {
            file,
            place: "gateway: ".into(),
        },
        &raw.gateway,
    )?;
    let mut upstreams = Vec::with_capacity(raw.upstreams.len());
    for (name, u) in &raw.upstreams {
        let ctx = Ctx {
            file,
            place: format!("upstream {name:?}: "),
        };
        upstreams.push(upstream(&ctx, name, u)?);
    }
    if raw.routes.len() > MAX_ROUTES {
        return Err(ConfigError::Invalid {
            file: file.to_string(),
            place: String::new(),
            message: format!(
                "the file has {} [[routes]]; at most {MAX_ROUTES} are supported (each route keeps its own metric series, bucket map and rollout state)",
                raw.routes.len()
            ),
        });
    }
    let names: HashSet<&str> = raw.upstreams.keys().map(String::as_str).collect();
    let mut seen = HashSet::new();
    let mut routes = Vec::with_capacity(raw.routes.len());
    for r in &raw.routes {
        let ctx = Ctx {
            file,
            place: format!("route {:?}: ", r.name),
        };
        if r.name.is_empty() {
            return Err(ctx.err("name: must not be empty"));
        }
        if !seen.insert(r.name.as_str()) {
            return Err(ctx.err("name: duplicate route name"));
        }
        routes.push(route(&ctx, r, &names)?);
    }
    let sync = super::sync::from_raw(
        file,
        raw.sides.as_ref(),
        raw.sync.as_ref(),
        raw.entities.as_deref(),
    )?;
    if routes.is_empty() && sync.entities.is_empty() && services.is_empty() {
        return Err(ConfigError::Invalid {
            file: file.to_string(),
            place: String::new(),
            message: "the file has no [[routes]], no [[entities]] and no [services]: nothing to route, sync or serve"
                .into(),
        });
    }
    if !sync.entities.is_empty() {
        for r in &routes {
            if let Some(e) = &r.entity
                && !sync.entities.iter().any(|x| &x.name == e)
            {
                return Err(ConfigError::Invalid {
                    file: file.to_string(),
                    place: format!("route {:?}: ", r.name),
                    message: format!("entity: {e:?} is not an [[entities]] name"),
                });
            }
        }
    }
    Ok(Config {
        sync,
        services,
        file: PathBuf::from(file),
        fingerprint: 0,
        gateway,
        upstreams,
        routes,
    })
}

fn addr(
    ctx: &Ctx,
    field: &str,
    value: &Option<String>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.as_deref().unwrap_or(default);
    text.parse()
        .map_err(|_| ctx.err(format!("{field}: {text:?} is not an IP:port address")))
}

fn gateway(ctx: &Ctx, g: &RawGateway) -> Result<GatewayConfig, ConfigError> {
    let admin_listen = addr(ctx, "admin_listen", &g.admin_listen, "127.0.0.1:9090")?;
    let admin_token = g.admin_token.clone().filter(|t| !t.is_empty());
    if !admin_listen.ip().is_loopback() && admin_token.is_none() {
        return Err(ctx.err(format!(
            "admin_listen: {admin_listen} is not a loopback address, so admin_token must be set"
        )));
    }
    let control = g
        .control
        .clone()
        .unwrap_or_else(|| "sqlite://strangler-control.db".into());
    if !(control.starts_with("sqlite://")
        || control.starts_with("postgres://")
        || control.starts_with("postgresql://"))
    {
        return Err(ctx.err(format!(
            "control: {control:?} must be sqlite://FILE, sqlite://:memory: or postgres://…"
        )));
    }
    let max_header_bytes = g.limits.max_header_bytes.unwrap_or(64 * 1024);
    if max_header_bytes < 8192 {
        return Err(ctx.err("limits.max_header_bytes: must be at least 8192"));
    }
    let max_connections = g.limits.max_connections.unwrap_or(25_000);
    if max_connections == 0 {
        return Err(ctx.err("limits.max_connections: must be at least 1"));
    }
    let tap_capacity = g.tap_capacity.unwrap_or(4096);
    if tap_capacity == 0 {
        return Err(ctx.err("tap_capacity: must be at least 1"));
    }
    let http2_header_table = g.tls.as_ref().and_then(|t| t.http2_header_table);
    if http2_header_table.is_some_and(|n| n > MAX_HTTP2_HEADER_TABLE) {
        return Err(ctx.err(format!(
            "tls.http2_header_table: must be at most {MAX_HTTP2_HEADER_TABLE} bytes"
        )));
    }
    let history = g.history.unwrap_or(50).max(2);
    let threads = match g.threads {
        Some(0) => return Err(ctx.err("threads: must be at least 1")),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok(GatewayConfig {
        listen: addr(ctx, "listen", &g.listen, "127.0.0.1:8080")?,
        admin_listen,
        admin_token,
        target_header: g.target_header.unwrap_or(true),
        control,
        control_poll: ctx.duration("control_poll", &g.control_poll, "250ms")?,
        drain_grace: ctx.duration("drain_grace", &g.drain_grace, "30s")?,
        tap_capacity,
        history,
        threads,
        timeouts: Timeouts {
            connect: ctx.duration("timeouts.connect", &g.timeouts.connect, "2s")?,
            header_read: ctx.duration("timeouts.header_read", &g.timeouts.header_read, "60s")?,
            upstream_response: ctx.duration(
                "timeouts.upstream_response",
                &g.timeouts.upstream_response,
                "30s",
            )?,
            idle: ctx.duration("timeouts.idle", &g.timeouts.idle, "30s")?,
            park: ctx.duration("timeouts.park", &g.timeouts.park, "250ms")?,
        },
        max_header_bytes,
        max_connections,
        pool_max_idle_per_host: g.limits.pool_max_idle_per_host.unwrap_or(512),
        tls: g.tls.as_ref().map(|t| TlsConfig {
            cert: PathBuf::from(&t.cert),
            key: PathBuf::from(&t.key),
            http2_header_table: http2_header_table.unwrap_or(0),
        }),
    })
}

fn upstream(ctx: &Ctx, name: &str, u: &RawUpstream) -> Result<UpstreamConfig, ConfigError> {
    let uri: Uri = u
        .url
        .parse()
        .map_err(|_| ctx.err(format!("url: {:?} is not a URL", u.url)))?;
    if uri.scheme_str() != Some("http") {
        return Err(ctx.err(format!("url: {:?} must start with http://", u.url)));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| ctx.err(format!("url: {:?} has no host", u.url)))?;
    let base_path = uri.path().trim_end_matches('/').to_string();
    let health = match &u.health {
        None => None,
        Some(h) => {
            if !h.path.starts_with('/') {
                return Err(ctx.err(format!("health.path: {:?} must start with /", h.path)));
            }
            Some(HealthConfig {
                path: h.path.clone(),
                interval: ctx.duration("health.interval", &h.interval, "1s")?,
                timeout: ctx.duration("health.timeout", &h.timeout, "1s")?,
                healthy_threshold: h.healthy_threshold.unwrap_or(2).max(1),
                unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3).max(1),
            })
        }
    };
    let p = u.passive.as_ref();
    let passive = PassiveConfig {
        consecutive_failures: p.and_then(|p| p.consecutive_failures).unwrap_or(5),
        base_ejection: ctx.duration(
            "passive.base_ejection",
            &p.and_then(|p| p.base_ejection.clone()),
            "1s",
        )?,
        max_ejection: ctx.duration(
            "passive.max_ejection",
            &p.and_then(|p| p.max_ejection.clone()),
            "60s",
        )?,
    };
    Ok(UpstreamConfig {
        name: name.to_string(),
        authority,
        base_path,
        health,
        passive,
        rewrite_host: u.rewrite_host.unwrap_or(false),
    })
}

/// Converts a percentage to buckets, refusing shares finer than 0.01 % or out of range.
fn buckets(ctx: &Ctx, field: &str, pct: f64) -> Result<u32, ConfigError> {
    if !(0.0..=100.0).contains(&pct) {
        return Err(ctx.err(format!("{field}: {pct} is not between 0 and 100")));
    }
    let scaled = pct * 100.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return Err(ctx.err(format!(
            "{field}: {pct} is finer than the 0.01 % granularity"
        )));
    }
    Ok(rounded as u32)
}

/// Formats buckets back as a percentage without trailing zeros.
pub fn percent(buckets: u32) -> String {
    let whole = buckets / 100;
    let frac = buckets % 100;
    match frac {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

fn header_name(ctx: &Ctx, field: &str, name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| ctx.err(format!("{field}: {name:?} is not a valid header name")))
}

fn route(ctx: &Ctx, r: &RawRoute, upstreams: &HashSet<&str>) -> Result<RouteConfig, ConfigError> {
    let known = |field: &str, name: &str| -> Result<(), ConfigError> {
        if upstreams.contains(name) {
            Ok(())
        } else {
            Err(ctx.err(format!("{field}: unknown upstream {name:?}")))
        }
    };
    if r.split.is_empty() {
        return Err(ctx.err("split: must name at least one upstream"));
    }
    let mut split = Vec::with_capacity(r.split.len());
    for (name, pct) in &r.split {
        known("split", name)?;
        split.push((name.clone(), buckets(ctx, &format!("split.{name}"), *pct)?));
    }
    let total: u32 = split.iter().map(|(_, b)| b).sum();
    if total != BUCKETS {
        return Err(ctx.err(format!("split sums to {}, must be 100", percent(total))));
    }
    let fallback = match &r.fallback {
        Some(f) => {
            known("fallback", f)?;
            f.clone()
        }
        None if split.len() == 1 => split[0].0.clone(),
        None => return Err(ctx.err("fallback: required when the split names several upstreams")),
    };
    let path_prefix = r.path_prefix.clone().unwrap_or_else(|| "/".into());
    if !path_prefix.starts_with('/') {
        return Err(ctx.err(format!("path_prefix: {path_prefix:?} must start with /")));
    }
    let mut methods = Vec::new();
    for m in r.methods.iter().flatten() {
        let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| ctx.err(format!("methods: {m:?} is not an HTTP method")))?;
        methods.push(method);
    }
    let mut headers = Vec::new();
    for (k, v) in r.headers.iter().flatten() {
        let name = header_name(ctx, "headers", k)?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| ctx.err(format!("headers.{k}: {v:?} is not a valid header value")))?;
        headers.push((name, value));
    }
    let sticky = sticky(ctx, r.sticky.as_ref())?;
    let mut pins = Vec::new();
    for (i, p) in r.pins.iter().enumerate() {
        let field = format!("pins[{i}]");
        known(&format!("{field}.upstream"), &p.upstream)?;
        let source = match (&p.header, &p.cookie) {
            (Some(h), None) => PinSource::Header(header_name(ctx, &field, h)?),
            (None, Some(c)) => PinSource::Cookie(c.clone()),
            _ => return Err(ctx.err(format!("{field}: set exactly one of header or cookie"))),
        };
        pins.push(PinConfig {
            source,
            value: p.value.clone(),
            upstream: p.upstream.clone(),
        });
    }
    let rollout = match &r.rollout {
        None => None,
        Some(ro) => Some(rollout(ctx, ro, &fallback, &known)?),
    };
    Ok(RouteConfig {
        name: r.name.clone(),
        host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
        path_prefix,
        methods,
        headers,
        split,
        sticky,
        fallback,
        salt: r.salt.clone().unwrap_or_else(|| r.name.clone()),
        pins,
        entity: r.entity.clone(),
        rollout,
    })
}

fn sticky(ctx: &Ctx, s: Option<&RawSticky>) -> Result<StickyConfig, ConfigError> {
    let Some(s) = s else {
        return Ok(StickyConfig::None);
    };
    let mut found = Vec::new();
    if let Some(c) = &s.cookie {
        found.push(StickyConfig::Cookie(c.clone()));
    }
    if let Some(h) = &s.header {
        found.push(StickyConfig::Header(header_name(ctx, "sticky.header", h)?));
    }
    if let Some(c) = &s.jwt_claim {
        found.push(StickyConfig::JwtClaim(c.clone()));
    }
    if s.client_ip == Some(true) {
        found.push(StickyConfig::ClientIp);
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        _ => Err(ctx.err("sticky: set exactly one of cookie, header, jwt_claim, client_ip")),
    }
}

fn rollout(
    ctx: &Ctx,
    ro: &RawRollout,
    fallback: &str,
    known: &dyn Fn(&str, &str) -> Result<(), ConfigError>,
) -> Result<RolloutConfig, ConfigError> {
    known("rollout.target", &ro.target)?;
    if ro.target == fallback {
        return Err(ctx.err("rollout.target: must differ from the route's fallback"));
    }
    let mut steps = Vec::new();
    for (i, s) in ro.steps.iter().enumerate() {
        let b = buckets(ctx, &format!("rollout.steps[{i}]"), *s)?;
        if b == 0 || steps.last().is_some_and(|prev| *prev >= b) {
            return Err(ctx.err("rollout.steps: must be positive and strictly ascending"));
        }
        steps.push(b);
    }
    if steps.last() != Some(&BUCKETS) {
        return Err(ctx.err("rollout.steps: must end at 100"));
    }
    let max_p99_ratio = ro.max_p99_ratio.unwrap_or(1.5);
    if max_p99_ratio.is_nan() || max_p99_ratio < 1.0 {
        return Err(ctx.err("rollout.max_p99_ratio: must be at least 1.0"));
    }
    let max_error_rate_increase = ro.max_error_rate_increase.unwrap_or(0.01);
    if !(0.0..=1.0).contains(&max_error_rate_increase) {
        return Err(ctx.err("rollout.max_error_rate_increase: must be between 0 and 1"));
    }
    Ok(RolloutConfig {
        target: ro.target.clone(),
        steps,
        hold: ctx.duration("rollout.hold", &ro.hold, "5m")?,
        window: ctx.duration("rollout.window", &ro.window, "1m")?,
        min_requests: ro.min_requests.unwrap_or(50),
        max_error_rate_increase,
        max_p99_ratio,
        auto_start: ro.auto_start.unwrap_or(false),
    })
}
