//! Spawner's proxy: forwards HTTP requests and WebSocket (any upgrade) connections to a
//! backend, and counts them in the backend's [`Monitor`], which is all the sweeper needs
//! to know whether a backend is idle. The embedded server and the Kubernetes sidecar use
//! the same code, so both modes count activity the same way.
//!
//! The modules, from the top down; each uses only modules below it (`tests/layers.rs`
//! checks this):
//!
//! ```text
//! accepting, placing   sidecar · gate (per-user access on a request: every proxy's)
//!                      listen · workers · route
//! the two paths        forward (hyper's stack, for what the relay does not take)
//!                      relay (the proxy's own HTTP/1.1, nearly every request) · body
//! framing              head · chunked · framing   (the security model: relay's docs)
//! shared ground        tunnel · ws_frames · splice · prefixed · pool · trusted · target · forwarded
//!                      access (per-user tokens, cookies, grants: both modes' proxies)
//!                      slice · busy_poll · monitor
//!                      readiness (when a backend listens: the sidecar and the server)
//!                      claim_hook (a warm pool's claim told to its backend: the server and the API)
//! ```

pub mod access;
pub mod body;
mod busy_poll;
pub mod chunked;
pub mod claim_hook;
pub mod forward;
pub mod forwarded;
pub mod framing;
pub mod gate;
pub mod head;
pub mod listen;
pub mod monitor;
mod pool;
pub mod prefixed;
pub mod readiness;
mod relay;
pub mod route;
pub mod sidecar;
mod slice;
mod splice;
pub mod target;
pub mod trusted;
mod tunnel;
mod workers;
mod ws_frames;

pub use body::ProxyBody;
pub use forward::Forwarder;
pub use forwarded::PeerTrust;
pub use head::RequestHead;
pub use monitor::{ActivityGuard, Monitor};
pub use target::{ResponsePolicy, Target};
pub use trusted::{Cidr, TrustedProxies};
