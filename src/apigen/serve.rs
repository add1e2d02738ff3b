//! Serving a generated service on its own listener.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::service::{Body, Service};

/// Largest request body a generated API reads.
pub const MAX_BODY: usize = 1024 * 1024;

/// Answers one request of `service`: reads the body (up to [`MAX_BODY`]) and hands it over.
pub async fn answer(service: &Service, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("the body is larger than {MAX_BODY} bytes or broken: {e}"));
    service
        .handle(
            &parts.method,
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
            &parts.headers,
            body.as_deref().map_err(Clone::clone),
        )
        .await
}

/// Serves `service` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, service: Arc<Service>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(answer(&service, req).await) }
            });
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30));
            crate::conn::drive(b.serve_connection(TokioIo::new(stream), svc), &shutdown).await;
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait()).await;
}
