//! Spawner on Kubernetes: the `SessionLivedBackend` custom resource ([`crd`], [`status`]),
//! the controller that runs each one as a Pod and a Service ([`controller`], [`pod`]), and
//! the HTTP API of the embedded server backed by the Kubernetes API ([`api`], a
//! [`spawner_api::ControlPlane`]: [`control_plane`], its list stream [`list_watch`]), and warm
//! pools ([`pool_crd`], [`pool_members`], [`pools`] and its watch [`pool_cache`] for the API,
//! [`pool_controller`]), and
//! per-user access: the key and the grants objects carry ([`access`]).
//!
//! The lifecycle rules are spawner-core's: this crate maps them onto Kubernetes objects.

pub mod access;
pub mod api;
pub mod api_access;
pub mod api_metrics;
pub mod control_plane;
pub mod controller;
pub mod crd;
pub mod goaway;
pub mod leader;
pub mod list_watch;
pub mod naming;
pub mod pod;
pub mod pool_cache;
pub mod pool_controller;
pub mod pool_crd;
pub mod pool_members;
pub mod pools;
pub mod router;
pub mod router_key;
pub mod status;
pub mod sweeper;
pub mod write;

/// The kube-rs this crate is built with, for the binary's Kubernetes clients.
pub use kube;

pub use crd::{SessionLivedBackend, SessionLivedBackendSpec};
pub use status::SessionLivedBackendStatus;
