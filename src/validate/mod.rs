//! The consistency validator: compares the two sides of each entity through its column map
//! and transforms, classifies every discrepancy, repairs through the sync engine's apply path
//! and keeps a tamper-evident audit log of all of it.

pub mod audit;
pub mod backfill;
pub mod canon;
pub mod checksum;
pub mod command;
pub mod compare;
pub mod continuous;
mod copy;
pub mod drift;
mod error;
pub mod plan;
pub mod repair;
pub mod report;
pub mod scan;
mod sql;

pub use error::ValidateError;
