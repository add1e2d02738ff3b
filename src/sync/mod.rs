//! The bi-directional sync engine: capture on both sides, map, resolve conflicts, apply
//! exactly once in effect, checkpoint.

pub mod broker;
pub mod conflict;
pub mod engine;
pub mod mapping;
pub mod status;

pub use engine::{SyncEngine, SyncError, SyncWaker, rules_known};
