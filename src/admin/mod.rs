//! The admin API on its own listener: route table, splits, rollbacks, versions, rollouts,
//! health, reload, the write tap's recent events, `/metrics` and `/healthz`.

mod analysis;
mod handlers;
mod validation;

pub use analysis::analysis_side;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::routing::Router;
use crate::routing::rollout::Rollouts;
use crate::tap::WriteEvent;

/// A reload request: the reply carries the new table version or the error text.
pub type ReloadRequest = oneshot::Sender<Result<u64, String>>;

/// What the admin API works on.
pub struct AdminState {
    /// The router.
    pub router: Arc<Router>,
    /// Rollout controller.
    pub rollouts: Arc<Rollouts>,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// Required bearer token.
    pub token: Option<String>,
    /// Asks the application to reload its config file.
    pub reload: mpsc::Sender<ReloadRequest>,
    /// The write tap's most recent events.
    pub recent_writes: Arc<Mutex<VecDeque<WriteEvent>>>,
    /// The sync engine's status.
    pub sync: Arc<crate::sync::status::SyncStatus>,
    /// What the analyzer has heard of the write tap.
    pub evidence: Arc<crate::analyze::live::LiveEvidence>,
    /// The validator's latest reports and run requests.
    pub validation: Arc<crate::validate::continuous::Validations>,
}

/// An admin response body.
pub type AdminBody = Full<Bytes>;

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<AdminBody> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(crate) fn problem(status: StatusCode, detail: impl std::fmt::Display) -> Response<AdminBody> {
    let mut r = json(
        status,
        &serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": detail.to_string(),
        }),
    );
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// What an admin listener answers: the gateway's full API, or a sync worker's part of it.
pub trait Api: Send + Sync + 'static {
    /// The bearer token every call but `/healthz` needs, if any.
    fn token(&self) -> Option<&str>;
    /// Answers one call.
    fn route<'a>(
        &'a self,
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a http::HeaderMap,
        body: &'a [u8],
    ) -> impl std::future::Future<Output = Response<AdminBody>> + Send + 'a;
}

impl Api for AdminState {
    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn route<'a>(
        &'a self,
        method: &'a http::Method,
        uri: &'a http::Uri,
        headers: &'a http::HeaderMap,
        body: &'a [u8],
    ) -> impl std::future::Future<Output = Response<AdminBody>> + Send + 'a {
        handlers::route(self, method, uri, headers, body)
    }
}

/// The admin API of `strangler sync run`: health, metrics, sync status and conflicts.
pub struct SyncAdmin {
    /// Prometheus exposition.
    pub metrics: PrometheusHandle,
    /// Bearer token, required off loopback.
    pub token: Option<String>,
    /// The engine's status.
    pub sync: Arc<crate::sync::status::SyncStatus>,
    /// Where conflicts and the audit log are stored.
    pub control: Arc<crate::control::ControlStore>,
    /// The validator's latest reports and run requests.
    pub validation: Arc<crate::validate::continuous::Validations>,
}

impl Api for SyncAdmin {
    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn route<'a>(
        &'a self,
        method: &'a http::Method,
        uri: &'a http::Uri,
        _headers: &'a http::HeaderMap,
        _body: &'a [u8],
    ) -> impl std::future::Future<Output = Response<AdminBody>> + Send + 'a {
        handlers::sync_route(self, method, uri)
    }
}

fn authorized(token: Option<&str>, req: &Request<Incoming>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(given) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = given.strip_prefix("Bearer ") else {
        return false;
    };
    // Digests of equal length compared in constant time: neither the token's bytes nor its
    // length leak through timing.
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let (given, token) = (digest(given), digest(token));
    given
        .as_ref()
        .iter()
        .zip(token.as_ref())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

async fn handle<A: Api>(
    state: Arc<A>,
    req: Request<Incoming>,
) -> Result<Response<AdminBody>, Infallible> {
    if req.uri().path() != "/healthz" && !authorized(state.token(), &req) {
        let mut r = problem(
            StatusCode::UNAUTHORIZED,
            "admin calls need Authorization: Bearer <admin_token>",
        );
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return Ok(r);
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body: {e}"),
            ));
        }
    };
    Ok(state
        .route(&parts.method, &parts.uri, &parts.headers, &body)
        .await)
}

/// Serves the admin API until `shutdown`.
pub async fn serve<A: Api>(listener: TcpListener, state: Arc<A>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, _peer): (_, SocketAddr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30));
            crate::conn::drive(b.serve_connection(TokioIo::new(stream), svc), &shutdown).await;
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait()).await;
}
