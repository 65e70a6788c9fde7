//! An adversarial HTTP/1 suite for Spawner's proxy (and, to compare, for nginx and HAProxy
//! as reverse proxies): a corpus of crafted client inputs and backend responses
//! ([`corpus`]), a backend that records exactly the bytes it receives and splits them into
//! requests with a strict RFC 9112 parser ([`backend`], [`wire`]), and the verdict on each
//! case ([`run`]): either the client is refused (4xx) and the backend sees nothing, or the
//! backend receives exactly the requests the client sent, each with the proxy's
//! `X-Forwarded-*` headers; and after every case a second client, on the same pooled
//! backend connection, gets its own answer.

pub mod backend;
pub mod corpus;
pub mod proxies;
pub mod run;
pub mod wire;

pub use backend::Backend;
pub use corpus::{cases, Case};
pub use run::{run_case, verdict, Class};
