//! Forwarding one request: match → pick → forward → record, each step a plain function.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{CONTENT_TYPE, HOST, SET_COOKIE, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Body as _;

use super::headers::{self, Added, Peer};
use super::park::{BodyFate, ClientBody};
use super::path;
use super::pool::{Pool, PooledBody, SendError};
use crate::config::{GatewayConfig, StickyConfig};
use crate::metrics as m;
use crate::routing::router::now_ms;
use crate::routing::{Route, Router, Upstream};
use crate::tap::{Tap, WriteEvent};

/// A request body for an upstream: the client's, streamed, or a small one of our own.
pub type ProxyBody = Either<ClientBody, Full<Bytes>>;

/// A response body for a client: the upstream's, streamed, or a small one of our own.
pub type ResponseBody = Either<PooledBody, Full<Bytes>>;

static TARGET_HEADER: http::HeaderName = http::HeaderName::from_static("x-strangler-target");

/// The data plane's shared state: router, pooled client, write tap.
pub struct Gateway {
    router: Arc<Router>,
    pool: Arc<Pool>,
    tap: Tap,
    target_header: bool,
    upstream_timeout: Duration,
    tls: bool,
    /// Largest request head accepted (request line and header fields).
    max_header_bytes: usize,
}

/// A local response: RFC 9457 problem details.
pub fn problem(status: StatusCode, kind: &str, detail: &str) -> Response<ResponseBody> {
    let body = problem_body(status, kind, detail);
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

/// The RFC 9457 body of a local response.
pub fn problem_body(status: StatusCode, kind: &str, detail: &str) -> String {
    serde_json::json!({
        "type": format!("urn:strangler:problem:{kind}"),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    })
    .to_string()
}

fn is_write(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn class_index(status: StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}

/// What must be kept to send a bodiless idempotent request a second time.
struct Replay {
    method: Method,
    uri: Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Gateway {
    /// Builds the data plane with one shared upstream connection pool.
    pub fn new(router: Arc<Router>, tap: Tap, cfg: &GatewayConfig) -> Gateway {
        let pool = Pool::new(
            cfg.timeouts.connect,
            cfg.timeouts.idle,
            cfg.pool_max_idle_per_host,
        );
        Gateway {
            router,
            pool,
            tap,
            target_header: cfg.target_header,
            upstream_timeout: cfg.timeouts.upstream_response,
            tls: cfg.tls.is_some(),
            max_header_bytes: cfg.max_header_bytes,
        }
    }

    /// Serves one client request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<ClientBody>,
        client: Peer,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let start = Instant::now();
        let mut req = req;
        if let Some(refusal) = self.admit(&mut req) {
            return Ok(refusal);
        }
        let table = self.router.current();
        let host = headers::request_host(req.uri(), req.headers());
        let Some(route) = table.find(req.method(), host, req.uri().path(), req.headers()) else {
            return Ok(problem(
                StatusCode::NOT_FOUND,
                "no-route",
                "no route matches this request",
            ));
        };
        let Some(pick) = route.pick(req.headers(), client.ip()) else {
            return Ok(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-healthy-upstream",
                &format!("route {:?} has no available upstream", route.name),
            ));
        };
        let method = req.method().clone();
        let write_key = (is_write(&method) && route.entity.is_some())
            .then(|| route_key(route, req.uri().path()));
        let (parts, body) = req.into_parts();
        let fate = body.fate();
        let mut target = pick.target;
        let replay = (is_idempotent(&method) && body.is_end_stream() && target != route.fallback)
            .then(|| Replay {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                version: parts.version,
                headers: parts.headers.clone(),
            });
        let upstream = &route.targets[target as usize].upstream;
        let first = self.to_upstream(parts, Either::Left(body), upstream, &client);
        let t_up = Instant::now();
        let mut outcome = self.send(upstream, first, t_up).await;
        if let Some(fault) = client_fault(&outcome, fate.as_ref()) {
            // The client broke or stalled its own body: never the upstream's failure.
            metrics::counter!(m::CLIENT_ERRORS, "route" => route.name.clone(), "reason" => fault.reason())
                .increment(1);
            return Ok(fault.into_response());
        }
        // The first target's failure is recorded here; `failure_noted` keeps the final
        // accounting from counting it twice.
        let mut failure_noted = false;
        if let Err(Failure::Connect(_) | Failure::Upstream(_)) = &outcome {
            self.note_failure(route, target);
            failure_noted = true;
            let fallback = &route.targets[route.fallback as usize].upstream;
            if let Some(r) = replay.filter(|_| fallback.health.is_available()) {
                route.retries.increment(1);
                target = route.fallback;
                failure_noted = false;
                let mut again = Request::new(Either::Right(Full::new(Bytes::new())));
                *again.method_mut() = r.method;
                *again.uri_mut() = r.uri;
                *again.version_mut() = r.version;
                *again.headers_mut() = r.headers;
                let (parts, body) = again.into_parts();
                let again = self.to_upstream(parts, body, fallback, &client);
                outcome = self.send(fallback, again, Instant::now()).await;
            }
        }
        let upstream_time = t_up.elapsed();
        let t = &route.targets[target as usize];
        let resp = match outcome {
            Ok(resp) => {
                let status = resp.status();
                t.metrics.by_class[class_index(status)].increment(1);
                t.metrics.latency.record(upstream_time.as_secs_f64());
                if status.is_server_error() {
                    self.note_failure(route, target);
                } else {
                    t.upstream.health.record_success();
                }
                if let Some(g) = &route.gate_stats {
                    g.record(&t.upstream.name, status.is_server_error(), upstream_time);
                }
                if status.is_success()
                    && let (Some(key), Some(entity)) = (write_key, &route.entity)
                {
                    self.tap.offer(WriteEvent {
                        entity: entity.as_str().into(),
                        key,
                        side: t.upstream.name.clone(),
                        method,
                        at_ms: now_ms(),
                    });
                }
                // The pool gives the head as the client gets it (see `upstream`).
                resp.map(Either::Left)
            }
            Err(failure) => {
                if !failure_noted {
                    self.note_failure(route, target);
                }
                t.metrics.by_class[5].increment(1);
                if let Some(g) = &route.gate_stats {
                    g.record(&t.upstream.name, true, upstream_time);
                }
                failure.into_response(&t.upstream.name)
            }
        };
        let mut resp = resp;
        if self.target_header
            && let Ok(v) = HeaderValue::from_str(&t.upstream.name)
        {
            resp.headers_mut().insert(TARGET_HEADER.clone(), v);
        }
        if let (Some(id), StickyConfig::Cookie(name)) = (pick.issue_cookie, &route.sticky) {
            let secure = if self.tls { "; Secure" } else { "" };
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{name}={id}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax{secure}"
            )) {
                resp.headers_mut().append(SET_COOKIE, v);
            }
        }
        route
            .added_latency
            .record(start.elapsed().saturating_sub(upstream_time).as_secs_f64());
        Ok(resp)
    }

    /// Checks what must hold of a request before it is routed, and makes its target
    /// canonical: one `Host` (RFC 9112 §3.2), the authority of an absolute-form target in
    /// place of `Host` (§3.2.2), a head within the configured size, no transfer coding but
    /// `chunked`, and a normalised path (see `path`).
    fn admit(&self, req: &mut Request<ClientBody>) -> Option<Response<ResponseBody>> {
        let mut head = req.method().as_str().len() + req.uri().path().len() + 12;
        if let Some(q) = req.uri().query() {
            head += q.len() + 1;
        }
        let mut hosts = 0usize;
        let mut coded = false;
        for (name, value) in req.headers() {
            head += name.as_str().len() + value.len() + 4;
            if name == HOST {
                hosts += 1;
            } else if name == TRANSFER_ENCODING {
                coded |= value
                    .as_bytes()
                    .split(|b| *b == b',')
                    .any(|c| !c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        if head > self.max_header_bytes {
            return Some(refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header-too-large",
                &format!(
                    "the request head is {head} bytes, more than the limit of {}",
                    self.max_header_bytes
                ),
            ));
        }
        let h11 = req.version() == http::Version::HTTP_11;
        if hosts > 1 || (hosts == 0 && h11) {
            return Some(refuse(
                StatusCode::BAD_REQUEST,
                "bad-host",
                &format!("an HTTP/1.1 request must carry exactly one Host header, not {hosts}"),
            ));
        }
        if coded {
            return Some(refuse(
                StatusCode::NOT_IMPLEMENTED,
                "transfer-coding",
                "only the chunked transfer coding is supported",
            ));
        }
        if let Some(authority) = req.uri().authority()
            && req.version() <= http::Version::HTTP_11
        {
            // Absolute form: its authority is the request's host, for routing and upstream.
            let v = HeaderValue::from_str(authority.as_str())
                .ok()
                .filter(|_| !authority.as_str().contains('@'));
            let Some(v) = v else {
                return Some(refuse(
                    StatusCode::BAD_REQUEST,
                    "bad-host",
                    "the request target's authority may not carry user information",
                ));
            };
            req.headers_mut().insert(HOST, v);
        }
        let normal = match path::normalize(req.uri().path()) {
            Ok(std::borrow::Cow::Borrowed(_)) => return None,
            Ok(std::borrow::Cow::Owned(p)) => p,
            Err(e) => return Some(refuse(StatusCode::BAD_REQUEST, "bad-path", &e.to_string())),
        };
        let target = match req.uri().query() {
            Some(q) => format!("{normal}?{q}"),
            None => normal,
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = target.parse().ok();
        match Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return Some(refuse(StatusCode::BAD_REQUEST, "bad-path", "bad path")),
        }
        None
    }

    fn note_failure(&self, route: &Route, target: u8) {
        let up = &route.targets[target as usize].upstream;
        if let Some(period) = up.health.record_failure() {
            tracing::warn!(upstream = %up.name, seconds = period.as_secs_f64(), "upstream ejected after consecutive failures");
            metrics::counter!(m::EJECTIONS, "target" => up.name.clone()).increment(1);
            metrics::gauge!(m::UPSTREAM_HEALTHY, "target" => up.name.clone()).set(0.0);
        }
    }

    fn to_upstream(
        &self,
        mut parts: http::request::Parts,
        body: ProxyBody,
        up: &Upstream,
        client: &Peer,
    ) -> (Request<ProxyBody>, Added) {
        let original_host = parts.headers.get(HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        // Requests go out in origin form, so Host is always set.
        let host = match &original_host {
            Some(h) if !up.rewrite_host => h.clone(),
            _ => up.host_header.clone(),
        };
        let added = headers::to_upstream(
            &mut parts.headers,
            client,
            self.tls,
            host,
            original_host.as_ref(),
        );
        parts.uri = if up.base_path.is_empty() {
            match parts.uri.path_and_query() {
                Some(pq) => Uri::from(pq.clone()),
                None => Uri::from_static("/"),
            }
        } else {
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            format!("{}{pq}", up.base_path)
                .parse()
                .unwrap_or_else(|_| Uri::from_static("/"))
        };
        // Upstreams are spoken to over HTTP/1.1 whatever the client used.
        parts.version = http::Version::HTTP_11;
        (Request::from_parts(parts, body), added)
    }

    fn send<'a>(
        &'a self,
        up: &'a Upstream,
        (req, added): (Request<ProxyBody>, Added),
        now: Instant,
    ) -> impl Future<Output = Result<Response<PooledBody>, Failure>> + 'a {
        self.pool
            .send(&up.authority, req, &added, now, self.upstream_timeout)
            .map(|r| {
                r.map_err(|e| match e {
                    SendError::Connect(e) => Failure::Connect(e),
                    SendError::Upstream(e) => Failure::Upstream(e),
                    SendError::Timeout => Failure::Timeout,
                })
            })
    }
}

/// The entity key of a write: the first path segment after the route prefix.
fn route_key(route: &Route, path: &str) -> Option<String> {
    let rest = path.strip_prefix(route.path_prefix()).unwrap_or("");
    rest.trim_start_matches('/')
        .split('/')
        .next()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A request refused before routing: counted as the client's error.
pub(super) fn refuse(
    status: StatusCode,
    kind: &'static str,
    detail: &str,
) -> Response<ResponseBody> {
    metrics::counter!(m::CLIENT_ERRORS, "route" => "", "reason" => kind).increment(1);
    problem(status, kind, detail)
}

/// An exchange that failed because of the client's request body.
enum ClientFault {
    /// The body broke off: aborted, malformed chunk, or a read error.
    Body,
    /// The upstream waited for a body the client did not finish sending in time.
    Stalled,
}

impl ClientFault {
    fn reason(&self) -> &'static str {
        match self {
            ClientFault::Body => "body-error",
            ClientFault::Stalled => "body-timeout",
        }
    }

    fn into_response(self) -> Response<ResponseBody> {
        match self {
            ClientFault::Body => problem(
                StatusCode::BAD_REQUEST,
                "body-error",
                "the request body ended early or was malformed",
            ),
            ClientFault::Stalled => problem(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "the request body was not sent in time",
            ),
        }
    }
}

/// Blames a failed exchange on the client when its body broke or never finished.
fn client_fault(
    outcome: &Result<Response<PooledBody>, Failure>,
    fate: Option<&BodyFate>,
) -> Option<ClientFault> {
    let fate = fate?;
    match outcome {
        Err(Failure::Upstream(_)) if fate.failed() => Some(ClientFault::Body),
        Err(Failure::Timeout) if fate.failed() => Some(ClientFault::Body),
        Err(Failure::Timeout) if fate.unfinished() => Some(ClientFault::Stalled),
        _ => None,
    }
}

/// Why forwarding failed.
enum Failure {
    /// TCP connect failed or was refused.
    Connect(String),
    /// The upstream broke the exchange.
    Upstream(String),
    /// No response head within the timeout.
    Timeout,
}

impl Failure {
    fn into_response(self, upstream: &str) -> Response<ResponseBody> {
        match self {
            Failure::Connect(e) => problem(
                StatusCode::BAD_GATEWAY,
                "upstream-connect",
                &format!("cannot connect to upstream {upstream:?}: {e}"),
            ),
            Failure::Upstream(e) => problem(
                StatusCode::BAD_GATEWAY,
                "upstream-error",
                &format!("upstream {upstream:?} failed: {e}"),
            ),
            Failure::Timeout => problem(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                &format!("upstream {upstream:?} sent no response in time"),
            ),
        }
    }
}
