//! Strangler: a gateway for moving a monolith to services without downtime or lost writes.
//!
//! The request path is `gateway` (server, forwarding) over `routing` (route table, sticky
//! split, health, rollouts, versions); `control` persists route table versions and rollout
//! progress; `admin` exposes them; `tap` carries write events to the engines; `app` wires
//! everything together.

#![forbid(unsafe_code)]

pub mod admin;
pub mod analyze;
pub mod apigen;
pub mod app;
pub mod config;
pub mod conn;
pub mod control;
pub mod demo;
pub mod engine;
pub mod family;
pub mod gateway;
pub mod metrics;
pub mod routing;
pub mod store;
pub mod sync;
pub mod tap;
pub mod validate;
