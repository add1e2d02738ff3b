//! Routing: the route table and how a target is picked (split, stickiness, pins), upstream
//! health, rollout plans, and the router that publishes versions and rolls back.

pub mod health;
pub mod matching;
pub mod probe;
pub mod rollout;
pub mod router;
pub mod split;
pub mod stats;
pub mod sticky;
pub mod table;

pub use router::{Router, RouterError};
pub use table::{Pick, PickReason, Route, RouteTable, TableSpec, Upstream};
