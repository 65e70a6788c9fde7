//! Spawner on Kubernetes: the `SessionLivedBackend` custom resource and the programs that
//! serve it. The lifecycle rules are spawner-core's: this crate maps them onto Kubernetes
//! objects.
//!
//! One folder per program, over a shared model of the resources; a program uses the model
//! and its own folder, never another program's (`tests/layers.rs` checks this):
//!
//! ```text
//! programs   controller   `spawner controller`: what to do, pure (plan), carried out by
//!                         reconcile (mod.rs), Pods and Services (pod), warm pools
//!                         (pools), leader election (leader), goaway, sleepers'
//!                         volumes (volume)
//!            api          `spawner api`: the contract as a ControlPlane (control_plane),
//!                         list stream (list_watch), access, metrics, pools and their
//!                         watch (pool_cache), keys' Leases (key_lease)
//!            node         `spawner sweeper` on each node (sweeper)
//!            router       `spawner proxy --kubernetes`
//! model                   crd · pool_crd · status · naming · read · write · pool_members
//!                         access · router_key
//! ```

pub mod api;
pub mod controller;
pub mod model;
pub mod node;
pub mod router;

/// The kube-rs this crate is built with, for the binary's Kubernetes clients.
pub use kube;

pub use model::crd::{SessionLivedBackend, SessionLivedBackendSpec};
pub use model::status::SessionLivedBackendStatus;
