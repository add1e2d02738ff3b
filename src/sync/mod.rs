//! The bi-directional sync engine: capture on both sides, map, resolve conflicts, apply
//! exactly once in effect, checkpoint.

pub mod broker;
pub mod conflict;
pub mod engine;
mod error;
mod link;
pub mod mapping;
mod shared;
pub mod status;
pub mod touched;

pub use conflict::rules_known;
pub use engine::{SyncEngine, SyncWaker};
pub use error::SyncError;
