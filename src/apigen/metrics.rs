//! The generated APIs' Prometheus metrics: requests, latency and errors per operation.

use std::time::Duration;

use http::StatusCode;

use crate::metrics as m;

/// Records one answered request of `service`'s `operation`.
pub fn record(service: &str, operation: &str, status: StatusCode, took: Duration) {
    let labels = [
        ("service", service.to_string()),
        ("operation", operation.to_string()),
    ];
    metrics::histogram!(m::API_LATENCY, &labels).record(took.as_secs_f64());
    let class = format!("{}xx", status.as_u16() / 100);
    metrics::counter!(m::API_REQUESTS, "service" => service.to_string(),
        "operation" => operation.to_string(), "status" => class)
    .increment(1);
    if status.is_client_error() || status.is_server_error() {
        metrics::counter!(m::API_ERRORS, "service" => service.to_string(),
            "operation" => operation.to_string(), "status" => status.as_u16().to_string())
        .increment(1);
    }
}
