//! The embedded server as a [`ControlPlane`]: each operation of the contract, carried out
//! on the store, the registry of live backends and the pools.

use super::{access, backends, logs, pools, status, watch, ApiError};
use crate::app::App;
use async_trait::async_trait;
use axum::body::Body;
use futures_util::stream::BoxStream;
use spawner_api::bodies::BackendList;
use spawner_api::page::PageRequest;
use spawner_api::parse::ListFilter;
use spawner_api::{ControlPlane, ListWatch, SpawnRoute, Spawned, StatusItem};
use spawner_core::access::{AccessList, ConnectAsk, ConnectResponse};
use spawner_core::pool::{ClaimRequest, PoolDrained, PoolList, PoolSize, PoolSpec, PoolStatus};
use spawner_core::time::Millis;
use spawner_core::{BackendId, BackendRecord, BackendSpec, Event, State};
use std::sync::Arc;

/// `spawner serve`'s control plane.
pub struct Embedded(pub Arc<App>);

#[async_trait]
impl ControlPlane for Embedded {
    async fn spawn(&self, spec: BackendSpec, route: SpawnRoute) -> Result<Spawned, ApiError> {
        backends::spawn(&self.0, spec, route).await
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Spawned, ApiError> {
        pools::claim(&self.0, req).await
    }

    async fn get(&self, id: &BackendId) -> Result<BackendRecord, ApiError> {
        backends::get(&self.0, id)
    }

    async fn list(&self, filter: &ListFilter) -> Result<BackendList, ApiError> {
        backends::page(&self.0, filter)
    }

    async fn watch_list(&self, filter: &ListFilter) -> Result<ListWatch, ApiError> {
        watch::watch(&self.0, filter).await
    }

    async fn terminate(&self, id: &BackendId, hard: bool) -> Result<State, ApiError> {
        backends::terminate(&self.0, id, hard).await
    }

    async fn wake(&self, id: &BackendId) -> Result<State, ApiError> {
        backends::wake(&self.0, id).await
    }

    async fn keepalive_token_matches(&self, id: &BackendId, token: &str) -> Result<bool, ApiError> {
        backends::keepalive_token_matches(&self.0, id, token)
    }

    async fn keepalive(&self, id: &BackendId, until: Millis) -> Result<(), ApiError> {
        backends::keepalive(&self.0, id, until).await
    }

    async fn logs(&self, id: &BackendId, follow: bool) -> Result<Body, ApiError> {
        logs::logs(&self.0, id, follow).await
    }

    async fn status(&self, id: &BackendId) -> Result<Event, ApiError> {
        status::status(&self.0, id)
    }

    async fn state(&self, id: &BackendId) -> Result<State, ApiError> {
        status::state(&self.0, id)
    }

    async fn status_stream(
        &self,
        id: &BackendId,
        after: u64,
    ) -> Result<BoxStream<'static, StatusItem>, ApiError> {
        status::stream(&self.0, id, after)
    }

    async fn connect(&self, id: &BackendId, ask: ConnectAsk) -> Result<ConnectResponse, ApiError> {
        access::connect(&self.0, id, &ask).await
    }

    async fn access_list(&self, id: &BackendId) -> Result<AccessList, ApiError> {
        access::list(&self.0, id)
    }

    async fn revoke(&self, id: &BackendId, user: &str) -> Result<bool, ApiError> {
        access::revoke(&self.0, id, user).await
    }

    async fn create_pool(&self, spec: PoolSpec) -> Result<PoolStatus, ApiError> {
        pools::create(&self.0, spec)
    }

    async fn list_pools(&self, page: &PageRequest) -> Result<PoolList, ApiError> {
        Ok(pools::list(&self.0, page))
    }

    async fn get_pool(&self, name: &str) -> Result<PoolStatus, ApiError> {
        pools::get(&self.0, name)
    }

    async fn resize_pool(&self, name: &str, size: PoolSize) -> Result<PoolStatus, ApiError> {
        pools::resize(&self.0, name, size)
    }

    async fn drain_pool(&self, name: &str) -> Result<PoolDrained, ApiError> {
        pools::drain(&self.0, name).await
    }

    async fn healthy(&self) -> Result<(), ApiError> {
        self.0.store.ping().map_err(ApiError::internal)
    }

    fn api_base(&self) -> String {
        self.0.urls.base().trim_end_matches('/').to_string()
    }

    fn backend_url(&self, id: &str) -> String {
        self.0.urls.backend(id)
    }
}
