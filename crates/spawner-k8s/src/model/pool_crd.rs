//! The `SessionLivedBackendPool` custom resource: a warm pool as the API server stores it.
//! Its members are SessionLivedBackends labelled with the pool's name; what it holds
//! (ready, starting, claimed) is read from them, so the pool object has no status.
//! Conversions to and from the API's [`PoolSpec`] keep the two modes one model.

use crate::model::crd::{SessionLivedBackend, SessionLivedBackendSpec};
use kube::core::ObjectMeta;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use spawner_core::pool::{PoolSpec, PoolTemplate};
use spawner_core::ValidationError;
use std::collections::BTreeMap;

/// On a pool's members: the pool's name.
pub const LABEL_POOL: &str = "spawner.dev/pool";
/// On a claimed member: the object name its key derives ([`crate::model::naming::name_for_key`]),
/// so that get-or-create finds it by label (keys themselves need not be label values).
pub const LABEL_KEY_ID: &str = "spawner.dev/key-id";
/// On a claimed member: when it was claimed (RFC 3339); its sweep clocks start there.
pub const ANNOTATION_CLAIMED_AT: &str = "spawner.dev/claimed-at";
/// On a claimed member: the claim's event (a status history entry, JSON), written with
/// the claim and carried into `status.history` by the next status write
/// ([`crate::model::read::status`]).
pub const ANNOTATION_CLAIM_EVENT: &str = "spawner.dev/claim-event";

/// A warm pool: SessionLivedBackends started ahead of demand from one template, handed
/// out by a claim (`POST /v1/backends` with `"pool"`).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "spawner.dev",
    version = "v1",
    kind = "SessionLivedBackendPool",
    namespaced,
    shortname = "slabpool",
    category = "spawner",
    derive = "PartialEq",
    doc = "A warm pool of session-lived backends: started ahead of demand, handed out by a claim.",
    printcolumn = r#"{"name": "MinReady", "type": "integer", "jsonPath": ".spec.minReady"}"#,
    printcolumn = r#"{"name": "Max", "type": "integer", "jsonPath": ".spec.max"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SessionLivedBackendPoolSpec {
    /// The members' spec (without `key`: a member gets its key when claimed).
    pub template: SessionLivedBackendSpec,
    /// The members' labels (a claim's labels are added over them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Where Spawner POSTs `{"key", "labels"}` to a member before a claim answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_path: Option<String>,
    /// How many unclaimed members the pool keeps Ready (or starting).
    pub min_ready: u32,
    /// The most members at once, claimed ones included.
    pub max: u32,
}

/// The pools' CustomResourceDefinition as YAML.
pub fn pool_crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&SessionLivedBackendPool::crd())
}

impl SessionLivedBackendPool {
    /// The object for a validated API spec; the template must convert (an image, ...).
    pub fn from_pool_spec(spec: &PoolSpec) -> Result<SessionLivedBackendPool, ValidationError> {
        let slab = SessionLivedBackend::from_backend_spec(&spec.name, &spec.template.spec)
            .map_err(|e| ValidationError::new(format!("template.{}", e.field), e.message))?;
        let mut obj = SessionLivedBackendPool::new(
            &spec.name,
            SessionLivedBackendPoolSpec {
                template: slab.spec,
                labels: spec.template.spec.labels.clone(),
                claim_path: spec.template.claim_path.clone(),
                min_ready: spec.min_ready,
                max: spec.max,
            },
        );
        obj.metadata = ObjectMeta {
            name: Some(spec.name.clone()),
            ..ObjectMeta::default()
        };
        Ok(obj)
    }

    /// A new member of the pool named `name`, unclaimed: the template, labelled with the pool.
    pub fn member(&self, name: &str) -> SessionLivedBackend {
        let mut obj = SessionLivedBackend::new(name, self.spec.template.clone());
        let mut labels = self.spec.labels.clone();
        labels.insert(LABEL_POOL.to_string(), self.pool_name());
        obj.metadata = ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        };
        obj
    }

    pub fn pool_name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }

    /// The API's view of the pool.
    pub fn pool_spec(&self) -> PoolSpec {
        let mut template = SessionLivedBackend::new(&self.pool_name(), self.spec.template.clone());
        template.metadata.labels = Some(self.spec.labels.clone());
        PoolSpec {
            name: self.pool_name(),
            template: PoolTemplate {
                spec: template.backend_spec(),
                claim_path: self.spec.claim_path.clone(),
            },
            min_ready: self.spec.min_ready,
            max: self.spec.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::ResourceExt;

    fn spec() -> PoolSpec {
        serde_json::from_value(serde_json::json!({
            "name": "notebooks",
            "template": {
                "executable": {"image": "registry.example/nb:1", "port": 8888},
                "labels": {"team": "a"},
                "grace_period_seconds": 60,
                "claim_path": "/claim"
            },
            "min_ready": 2,
            "max": 5
        }))
        .expect("a valid pool")
    }

    #[test]
    fn pool_spec_round_trips_through_the_object() {
        let spec = spec();
        let obj = SessionLivedBackendPool::from_pool_spec(&spec).expect("converts");
        assert_eq!(obj.pool_spec(), spec);
        let member = obj.member("abc");
        assert_eq!(
            member.labels().get(LABEL_POOL).map(String::as_str),
            Some("notebooks")
        );
        assert_eq!(member.labels().get("team").map(String::as_str), Some("a"));
        assert_eq!(member.spec.key, None);
    }

    #[test]
    fn a_template_without_image_names_the_template_field() {
        let mut spec = spec();
        spec.template.spec.executable.image = None;
        spec.template.spec.executable.command = Some(vec!["app".into()]);
        let err = SessionLivedBackendPool::from_pool_spec(&spec).unwrap_err();
        assert_eq!(err.field, "template.executable.image");
    }

    #[test]
    fn pool_crd_is_a_valid_definition() {
        let yaml = pool_crd_yaml().expect("renders");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("parses");
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("sessionlivedbackendpools.spawner.dev")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["slabpool".to_string()][..])
        );
    }
}
