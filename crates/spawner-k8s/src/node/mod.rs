//! The programs on each node: the sweeper ([`sweeper`]). The sidecar beside each backend is
//! spawner-proxy's (`spawner_proxy::sidecar`).

pub mod sweeper;
