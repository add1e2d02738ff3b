//! The data plane: the HTTP server and forwarding to upstreams.

mod alarm;
pub mod fields;
pub mod forward;
mod h1;
mod h2;
pub mod headers;
pub mod park;
pub mod path;
pub mod pool;
pub mod refusal;
pub mod server;
pub mod shards;
pub mod stream;
pub mod tls;
pub mod upstream;

pub use forward::Gateway;
pub use server::{ServerSettings, serve};
