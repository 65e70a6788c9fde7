//! `spawner api` as a [`ControlPlane`]: each operation of the contract, carried out on
//! SessionLivedBackend and SessionLivedBackendPool objects ([`crate::api`], [`crate::api::pools`],
//! [`crate::api::access`], [`crate::api::list_watch`]).

use crate::api::{self, ApiState};
use async_trait::async_trait;
use axum::body::Body;
use futures_util::stream::BoxStream;
use spawner_api::bodies::BackendList;
use spawner_api::page::PageRequest;
use spawner_api::parse::ListFilter;
use spawner_api::{ApiError, ControlPlane, ListWatch, SpawnRoute, Spawned, StatusItem};
use spawner_core::access::{AccessList, ConnectAsk, ConnectResponse};
use spawner_core::pool::{ClaimRequest, PoolDrained, PoolList, PoolSize, PoolSpec, PoolStatus};
use spawner_core::time::Millis;
use spawner_core::{BackendId, BackendRecord, BackendSpec, Event, State};
use std::sync::Arc;

/// The Kubernetes control plane, as `spawner api` serves it.
pub struct KubePlane(pub Arc<ApiState>);

#[async_trait]
impl ControlPlane for KubePlane {
    async fn spawn(&self, spec: BackendSpec, route: SpawnRoute) -> Result<Spawned, ApiError> {
        Ok(api::spawn(&self.0, spec, route).await?)
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Spawned, ApiError> {
        Ok(crate::api::pools::claim(&self.0, req).await?)
    }

    async fn get(&self, id: &BackendId) -> Result<BackendRecord, ApiError> {
        Ok(api::get_one(&self.0, id).await?)
    }

    async fn list(&self, filter: &ListFilter) -> Result<BackendList, ApiError> {
        Ok(api::list(&self.0, filter).await?)
    }

    async fn watch_list(&self, filter: &ListFilter) -> Result<ListWatch, ApiError> {
        Ok(crate::api::list_watch::watch(&self.0, filter).await?)
    }

    async fn terminate(&self, id: &BackendId, hard: bool) -> Result<State, ApiError> {
        Ok(api::terminate(&self.0, id, hard).await?)
    }

    async fn wake(&self, id: &BackendId) -> Result<State, ApiError> {
        Ok(api::wake(&self.0, id).await?)
    }

    async fn keepalive_token_matches(&self, id: &BackendId, token: &str) -> Result<bool, ApiError> {
        Ok(api::keepalive_token_matches(&self.0, id, token).await?)
    }

    async fn keepalive(&self, id: &BackendId, until: Millis) -> Result<(), ApiError> {
        Ok(api::keepalive(&self.0, id, until).await?)
    }

    async fn logs(&self, id: &BackendId, follow: bool) -> Result<Body, ApiError> {
        Ok(api::logs(&self.0, id, follow).await?)
    }

    async fn status(&self, id: &BackendId) -> Result<Event, ApiError> {
        Ok(api::status(&self.0, id).await?)
    }

    async fn state(&self, id: &BackendId) -> Result<State, ApiError> {
        Ok(api::current_state(&self.0, id).await?)
    }

    async fn status_stream(
        &self,
        id: &BackendId,
        after: u64,
    ) -> Result<BoxStream<'static, StatusItem>, ApiError> {
        Ok(api::stream(&self.0, id, after).await?)
    }

    async fn connect(&self, id: &BackendId, ask: ConnectAsk) -> Result<ConnectResponse, ApiError> {
        Ok(crate::api::access::mint(&self.0, id.as_str(), &ask).await?)
    }

    async fn access_list(&self, id: &BackendId) -> Result<AccessList, ApiError> {
        Ok(crate::api::access::list(&self.0, id).await?)
    }

    async fn revoke(&self, id: &BackendId, user: &str) -> Result<bool, ApiError> {
        Ok(crate::api::access::revoke(&self.0, id, user).await?)
    }

    async fn create_pool(&self, spec: PoolSpec) -> Result<PoolStatus, ApiError> {
        Ok(crate::api::pools::create_pool(&self.0, spec).await?)
    }

    async fn list_pools(&self, page: &PageRequest) -> Result<PoolList, ApiError> {
        Ok(crate::api::pools::list_pools(&self.0, page).await?)
    }

    async fn get_pool(&self, name: &str) -> Result<PoolStatus, ApiError> {
        Ok(crate::api::pools::get_pool(&self.0, name).await?)
    }

    async fn resize_pool(&self, name: &str, size: PoolSize) -> Result<PoolStatus, ApiError> {
        Ok(crate::api::pools::resize_pool(&self.0, name, size).await?)
    }

    async fn drain_pool(&self, name: &str) -> Result<PoolDrained, ApiError> {
        Ok(crate::api::pools::drain_pool(&self.0, name).await?)
    }

    /// The API holds no store of its own: the Kubernetes API is asked per request.
    async fn healthy(&self) -> Result<(), ApiError> {
        Ok(())
    }

    fn api_base(&self) -> String {
        self.0.config.api_base.trim_end_matches('/').to_string()
    }

    fn backend_url(&self, id: &str) -> String {
        self.0.config.urls.backend_url(id)
    }
}
