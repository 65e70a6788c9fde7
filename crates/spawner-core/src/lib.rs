//! The model every part of Spawner shares: what a backend is asked to be ([`spec`]), the
//! states it goes through and the rules between them ([`state`], [`lifecycle`]), its
//! events ([`event`]), its id ([`id`]), and how large a spec may be ([`limits`]). Plain data and pure functions: no I/O here, so
//! the rules are unit-tested on their own and both modes (embedded, Kubernetes) obey them.

pub mod access;
pub mod env;
pub mod event;
pub mod id;
pub mod lifecycle;
pub mod limits;
pub mod pool;
pub mod record;
pub mod spec;
pub mod state;
pub mod time;

pub use event::{Event, Expiring};
pub use id::BackendId;
pub use record::{BackendRecord, SpawnResponse};
pub use spec::{BackendSpec, Executable, IdleAction, PullPolicy, Resources, ValidationError};
pub use state::State;
