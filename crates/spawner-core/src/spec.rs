//! What a client asks for: the body of `POST /v1/backends`, and its validation.

use crate::access::{Access, AccessMode};
use crate::limits;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_GRACE_SECONDS: u64 = 300;
pub const DEFAULT_STARTUP_TIMEOUT_SECONDS: u64 = 300;
/// A week: longer idle grace periods or lifetimes are almost certainly unit mistakes.
pub const MAX_SECONDS: u64 = 7 * 24 * 3600;
pub const DEFAULT_LIFETIME_WARNING_SECONDS: u64 = 60;
/// A day: how long a sleeping backend is kept before it is swept for good.
pub const DEFAULT_MAX_SLEEP_SECONDS: u64 = 24 * 3600;

/// A spawn request. Unknown fields are refused so that a typo (`grace_period` for
/// `grace_period_seconds`) is an error instead of a silently ignored setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Get-or-create: at most one non-terminal backend per key (1–253 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 253)]
    pub key: Option<String>,
    pub executable: Executable,
    /// Seconds without connections or requests after which it is swept; counted from Ready.
    #[serde(default = "default_grace")]
    #[schema(default = 300, minimum = 1, maximum = 604800)]
    pub grace_period_seconds: u64,
    /// Seconds from Submitted after which it is stopped whatever it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub lifetime_limit_seconds: Option<u64>,
    /// Seconds from Submitted within which it must become Ready, or it is stopped (Failed).
    #[serde(default = "default_startup_timeout")]
    #[schema(default = 300, minimum = 1, maximum = 604800)]
    pub startup_timeout_seconds: u64,
    /// Kubernetes label syntax: keys with an optional DNS prefix, values of at most 63
    /// characters; at most 64 labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(default = json!({}))]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// `false` forwards `/p/{id}/…` to the backend unchanged.
    #[serde(default = "default_true")]
    #[schema(default = true)]
    pub strip_prefix: bool,
    /// Seconds without anything from its clients (no request, no WebSocket data frame) after
    /// which it is swept even while connections stay open; none: only `grace_period_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub idle_timeout_seconds: Option<u64>,
    /// Seconds before the lifetime limit (or a pending idle timeout) at which the status
    /// stream announces it with an `expiring` event; 0: no announcement.
    #[serde(default = "default_lifetime_warning")]
    #[schema(default = 60, minimum = 0, maximum = 604800)]
    pub lifetime_warning_seconds: u64,
    /// Who may reach it through the proxy: `{"mode": "open"}` (whoever has its URL) or
    /// `{"mode": "token", "user": …}` (a connect URL per user; docs/api.md, "Access"). A
    /// stored spec keeps the mode alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// What idleness does to it: `sweep` ends it (Swept); `sleep` stops its process but
    /// keeps the backend (Sleeping: same id, URL and files), and its next request wakes it.
    #[serde(default, skip_serializing_if = "IdleAction::is_sweep")]
    #[schema(default = "sweep")]
    pub idle_action: IdleAction,
    /// With `idle_action: "sleep"`: seconds asleep after which it is swept for good.
    #[serde(
        default = "default_max_sleep",
        skip_serializing_if = "is_default_max_sleep"
    )]
    #[schema(default = 86400, minimum = 1, maximum = 604800)]
    pub max_sleep_seconds: u64,
}

/// What the sweeper does with a backend idle for its grace period (or idle timeout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdleAction {
    /// End it: Swept.
    #[default]
    Sweep,
    /// Stop its process and keep it, Sleeping, until a request wakes it.
    Sleep,
}

impl IdleAction {
    pub fn is_sweep(&self) -> bool {
        *self == IdleAction::Sweep
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IdleAction::Sweep => "sweep",
            IdleAction::Sleep => "sleep",
        }
    }

    /// `sweep` or `sleep`, as the API spells them.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sweep" => Some(IdleAction::Sweep),
            "sleep" => Some(IdleAction::Sleep),
            _ => None,
        }
    }
}

/// What runs: `command` (a local process) or `image` (a container), or both.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Executable {
    /// Argument list; `$(VAR)` is expanded from the backend's environment, `$$` is a `$`.
    /// At most 1024 arguments and 64 KiB in all, expanded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 1024)]
    pub command: Option<Vec<String>>,
    /// Container image (Docker runtime, Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1024)]
    pub image: Option<String>,
    /// Names `[A-Za-z_][A-Za-z0-9_]*`; `PORT` and `SPAWNER_*` are set by Spawner. At most
    /// 256 variables, 32 KiB per value, 64 KiB of `NAME=value` in all.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(default = json!({}))]
    pub env: BTreeMap<String, String>,
    /// `None` lets the process runtime pick a free port; other runtimes use [`DEFAULT_PORT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// Must exist; default: Spawner's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4096)]
    pub working_dir: Option<String>,
    /// Containers only; default `IfNotPresent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// Containers only: the name of registry credentials (docs/docker.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Limits of a container backend.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1048576)]
    pub memory_mb: Option<u64>,
    /// CPU quota; 1000 is one CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1024000)]
    pub cpu_millis: Option<u64>,
}

fn default_grace() -> u64 {
    DEFAULT_GRACE_SECONDS
}
fn default_startup_timeout() -> u64 {
    DEFAULT_STARTUP_TIMEOUT_SECONDS
}
fn default_true() -> bool {
    true
}
fn default_lifetime_warning() -> u64 {
    DEFAULT_LIFETIME_WARNING_SECONDS
}
fn default_max_sleep() -> u64 {
    DEFAULT_MAX_SLEEP_SECONDS
}
fn is_default_max_sleep(s: &u64) -> bool {
    *s == DEFAULT_MAX_SLEEP_SECONDS
}

/// A spec that cannot be accepted: the JSON path of the offending field and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl BackendSpec {
    /// A spec running `command` with every other field at its default.
    pub fn from_command(command: Vec<String>) -> Self {
        BackendSpec {
            key: None,
            executable: Executable {
                command: Some(command),
                ..Executable::default()
            },
            grace_period_seconds: DEFAULT_GRACE_SECONDS,
            lifetime_limit_seconds: None,
            startup_timeout_seconds: DEFAULT_STARTUP_TIMEOUT_SECONDS,
            labels: BTreeMap::new(),
            resources: None,
            strip_prefix: true,
            idle_timeout_seconds: None,
            lifetime_warning_seconds: DEFAULT_LIFETIME_WARNING_SECONDS,
            access: None,
            idle_action: IdleAction::Sweep,
            max_sleep_seconds: DEFAULT_MAX_SLEEP_SECONDS,
        }
    }

    /// The access mode it was given (`open` when none: the server's default is applied to
    /// the spec before it is stored).
    pub fn access_mode(&self) -> AccessMode {
        self.access.as_ref().map_or(AccessMode::Open, |a| a.mode)
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(key) = &self.key {
            if key.is_empty()
                || key.len() > limits::MAX_KEY_BYTES
                || key.chars().any(|c| c.is_control())
            {
                return Err(ValidationError::new(
                    "key",
                    format!(
                        "must be 1 to {} bytes without control characters",
                        limits::MAX_KEY_BYTES
                    ),
                ));
            }
        }
        self.executable.validate()?;
        check_seconds("grace_period_seconds", self.grace_period_seconds)?;
        check_seconds("startup_timeout_seconds", self.startup_timeout_seconds)?;
        if let Some(limit) = self.lifetime_limit_seconds {
            check_seconds("lifetime_limit_seconds", limit)?;
        }
        if let Some(idle) = self.idle_timeout_seconds {
            check_seconds("idle_timeout_seconds", idle)?;
        }
        if self.lifetime_warning_seconds > MAX_SECONDS {
            return Err(ValidationError::new(
                "lifetime_warning_seconds",
                format!("must be between 0 and {MAX_SECONDS} seconds (0: no warning)"),
            ));
        }
        if let Some(access) = &self.access {
            access.validate()?;
        }
        check_seconds("max_sleep_seconds", self.max_sleep_seconds)?;
        if self.idle_action == IdleAction::Sweep
            && self.max_sleep_seconds != DEFAULT_MAX_SLEEP_SECONDS
        {
            return Err(ValidationError::new(
                "max_sleep_seconds",
                "applies only to backends that sleep: add \"idle_action\": \"sleep\", or leave max_sleep_seconds out",
            ));
        }
        limits::check_labels(self.labels.len())?;
        for (k, v) in &self.labels {
            validate_label(k, v)?;
        }
        if let Some(r) = &self.resources {
            if r.memory_mb == Some(0) || r.memory_mb.is_some_and(|m| m > 1 << 20) {
                return Err(ValidationError::new(
                    "resources.memory_mb",
                    "must be between 1 and 1048576 (MiB)",
                ));
            }
            if r.cpu_millis == Some(0) || r.cpu_millis.is_some_and(|m| m > 1_024_000) {
                return Err(ValidationError::new(
                    "resources.cpu_millis",
                    "must be between 1 and 1024000 (1000 = one CPU)",
                ));
            }
        }
        Ok(())
    }
}

fn check_seconds(field: &str, value: u64) -> Result<(), ValidationError> {
    if value == 0 || value > MAX_SECONDS {
        return Err(ValidationError::new(
            field,
            format!("must be between 1 and {MAX_SECONDS} seconds"),
        ));
    }
    Ok(())
}

impl Executable {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.command.is_none() && self.image.is_none() {
            return Err(ValidationError::new(
                "executable",
                "needs \"command\" (an argument list, for a local process) or \"image\" (for a container)",
            ));
        }
        limits::check_executable(self)?;
        if let Some(cmd) = &self.command {
            if cmd.first().is_none_or(|c| c.trim().is_empty()) {
                return Err(ValidationError::new(
                    "executable.command",
                    "must be a non-empty list whose first element names the program, e.g. [\"python3\", \"-m\", \"http.server\"]",
                ));
            }
            if cmd.iter().any(|a| a.contains('\0')) {
                return Err(ValidationError::new(
                    "executable.command",
                    "arguments must not contain NUL characters",
                ));
            }
        }
        if let Some(image) = &self.image {
            if image.trim().is_empty() || image.chars().any(|c| c.is_whitespace()) {
                return Err(ValidationError::new(
                    "executable.image",
                    "must be an image reference without spaces, e.g. \"registry.example/app:1.2\"",
                ));
            }
        }
        for (name, value) in &self.env {
            let field = format!("executable.env.{name}");
            if !is_env_name(name) {
                return Err(ValidationError::new(
                    field,
                    "environment variable names are letters, digits and '_', not starting with a digit",
                ));
            }
            if name == "PORT" {
                return Err(ValidationError::new(
                    field,
                    "PORT is set by Spawner from executable.port; set \"port\" instead",
                ));
            }
            if name.starts_with("SPAWNER_") {
                return Err(ValidationError::new(
                    field,
                    "names starting with SPAWNER_ are reserved for the variables Spawner sets",
                ));
            }
            if value.contains('\0') {
                return Err(ValidationError::new(field, "values must not contain NUL"));
            }
        }
        if self.port == Some(0) {
            return Err(ValidationError::new(
                "executable.port",
                "must be between 1 and 65535 (omit it to use the default)",
            ));
        }
        if let Some(dir) = &self.working_dir {
            if dir.is_empty() || dir.contains('\0') {
                return Err(ValidationError::new(
                    "executable.working_dir",
                    "must be a non-empty path",
                ));
            }
        }
        if let Some(secret) = &self.image_pull_secret {
            if secret.is_empty() {
                return Err(ValidationError::new(
                    "executable.image_pull_secret",
                    "must name a secret, or be omitted",
                ));
            }
        }
        Ok(())
    }
}

pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Labels follow Kubernetes' rules, so that the same labels work in both modes.
pub fn validate_label(key: &str, value: &str) -> Result<(), ValidationError> {
    let field = format!("labels.{key}");
    let name = key.rsplit('/').next().unwrap_or(key);
    let prefix_ok = match key.rsplit_once('/') {
        Some((prefix, _)) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        }
        None => true,
    };
    if !prefix_ok || !is_label_value(name) || name.is_empty() {
        return Err(ValidationError::new(
            field,
            "label keys are an optional DNS prefix and '/', then 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ));
    }
    if !is_label_value(value) {
        return Err(ValidationError::new(
            field,
            "label values are at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

fn is_label_value(v: &str) -> bool {
    if v.is_empty() {
        return true;
    }
    let bytes = v.as_bytes();
    v.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<BackendSpec, String> {
        let s: BackendSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn defaults_apply() {
        let s = spec(r#"{"executable":{"command":["app"]}}"#).unwrap();
        assert_eq!(s.grace_period_seconds, 300);
        assert_eq!(s.startup_timeout_seconds, 300);
        assert_eq!(s.lifetime_warning_seconds, 60);
        assert_eq!(s.idle_timeout_seconds, None);
        assert!(s.strip_prefix);
        assert_eq!(s.executable.port, None);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (r#"{"executable":{}}"#, "executable:"),
            (r#"{"executable":{"command":[]}}"#, "executable.command"),
            (
                r#"{"executable":{"command":["a"],"env":{"1X":"v"}}}"#,
                "executable.env.1X",
            ),
            (
                r#"{"executable":{"command":["a"],"env":{"PORT":"1"}}}"#,
                "executable.env.PORT",
            ),
            (
                r#"{"executable":{"command":["a"],"port":0}}"#,
                "executable.port",
            ),
            (
                r#"{"executable":{"command":["a"]},"grace_period_seconds":0}"#,
                "grace_period_seconds",
            ),
            (
                r#"{"executable":{"command":["a"]},"labels":{"owner":"a b"}}"#,
                "labels.owner",
            ),
            (r#"{"executable":{"command":["a"]},"key":""}"#, "key"),
            (
                r#"{"executable":{"command":["a"]},"idle_timeout_seconds":0}"#,
                "idle_timeout_seconds",
            ),
            (
                r#"{"executable":{"command":["a"]},"lifetime_warning_seconds":604801}"#,
                "lifetime_warning_seconds",
            ),
            (
                r#"{"executable":{"command":["a"]},"resources":{"memory_mb":0}}"#,
                "resources.memory_mb",
            ),
        ];
        for (json, field) in cases {
            let err = spec(json).unwrap_err();
            assert!(err.starts_with(field), "{json}: {err}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_types_are_refused() {
        assert!(spec(r#"{"executable":{"command":["a"]},"grace":3}"#)
            .unwrap_err()
            .contains("unknown field `grace`"));
        assert!(spec(r#"{"executable":{"command":["a"],"port":70000}}"#).is_err());
    }

    #[test]
    fn labels_follow_kubernetes_rules() {
        assert!(validate_label("app.kubernetes.io/name", "web-1").is_ok());
        assert!(validate_label("owner", "").is_ok());
        assert!(validate_label("/x", "v").is_err());
        assert!(validate_label("x", "-v").is_err());
        assert!(validate_label(&"k".repeat(64), "v").is_err());
    }
}
