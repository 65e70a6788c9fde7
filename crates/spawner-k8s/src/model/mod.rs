//! The shared model of the resources, which every program of this crate uses and none
//! owns: the custom resources and their status ([`crd`], [`pool_crd`], [`status`]), names
//! and URLs ([`naming`]), what is read off a backend's object ([`read`]), the writes all
//! programs make by one protocol ([`write`]), a pool's members ([`pool_members`]), per-user
//! access ([`access`]) and the router's key ([`router_key`]). Pure or close to it; it
//! uses no program's module.

pub mod access;
pub mod crd;
pub mod naming;
pub mod pool_crd;
pub mod pool_members;
pub mod read;
pub mod router_key;
pub mod status;
pub mod write;
