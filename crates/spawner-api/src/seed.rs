//! The seed's spawn route, kept so that its clients keep working.

use serde::{Deserialize, Serialize};
use spawner_core::spec::{DEFAULT_GRACE_SECONDS, DEFAULT_STARTUP_TIMEOUT_SECONDS};
use spawner_core::{BackendSpec, Executable};
use std::collections::BTreeMap;

/// The seed's camelCase request (`POST /spawn`), plus `command`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeedSpawn {
    image: Option<String>,
    command: Option<Vec<String>>,
    port: Option<u16>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[schema(default = 300)]
    grace_period_seconds: Option<u64>,
}

/// The seed's answer; `name` is the backend id.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedResponse {
    pub url: String,
    pub name: String,
    pub ready_url: String,
    pub status_url: String,
}

impl SeedSpawn {
    pub fn into_spec(self) -> BackendSpec {
        BackendSpec {
            key: None,
            executable: Executable {
                command: self.command,
                image: self.image,
                env: self.env,
                port: self.port,
                ..Executable::default()
            },
            grace_period_seconds: self.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS),
            lifetime_limit_seconds: None,
            startup_timeout_seconds: DEFAULT_STARTUP_TIMEOUT_SECONDS,
            labels: BTreeMap::new(),
            resources: None,
            strip_prefix: true,
            idle_timeout_seconds: None,
            lifetime_warning_seconds: spawner_core::spec::DEFAULT_LIFETIME_WARNING_SECONDS,
            access: None,
            idle_action: spawner_core::IdleAction::Sweep,
            max_sleep_seconds: spawner_core::spec::DEFAULT_MAX_SLEEP_SECONDS,
        }
    }
}

/// The seed's answer: `{"url", "name", "readyUrl", "statusUrl"}`; `api_base` has no
/// trailing slash.
pub fn response(api_base: &str, id: &str, url: &str) -> SeedResponse {
    SeedResponse {
        url: url.to_string(),
        name: id.to_string(),
        ready_url: format!("{api_base}/backend/{id}/ready"),
        status_url: format!("{api_base}/backend/{id}/status"),
    }
}
