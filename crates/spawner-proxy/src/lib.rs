//! Spawner's proxy: forwards HTTP requests and WebSocket (any upgrade) connections to a
//! backend, and counts them in the backend's [`Monitor`], which is all the sweeper needs
//! to know whether a backend is idle. The embedded server and the Kubernetes sidecar use
//! the same code, so both modes count activity the same way.

pub mod body;
mod busy_poll;
mod chunked;
pub mod forward;
pub mod head;
pub mod listen;
pub mod monitor;
mod pool;
pub mod readiness;
mod relay;
pub mod route;
pub mod sidecar;
mod slice;
mod workers;

pub use body::ProxyBody;
pub use forward::{Forwarder, Target};
pub use head::RequestHead;
pub use monitor::{ActivityGuard, Monitor};
