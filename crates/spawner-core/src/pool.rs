//! Warm pools: backends started ahead of demand from one template, handed out by a claim.
//! The shapes of the pool API and its pure rules: how many backends a pool starts or stops,
//! what a claimed backend's spec becomes, and when a pooled backend may be swept. Both modes
//! apply these; their I/O lives elsewhere.

use crate::lifecycle::Timing;
use crate::spec::{validate_label, BackendSpec, ValidationError};
use crate::state::State;
use crate::time::Millis;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The most backends one pool may hold (ready, starting and claimed together).
pub const MAX_POOL_SIZE: u32 = 10_000;

/// `POST /v1/pools`: a pool, its template and its sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// 1–63 lowercase letters, digits and '-', starting with a letter and not ending with
    /// '-' (a DNS label: the same names work in Kubernetes).
    #[schema(min_length = 1, max_length = 63)]
    pub name: String,
    pub template: PoolTemplate,
    /// How many unclaimed backends the pool keeps Ready (or starting).
    #[schema(maximum = 10000)]
    pub min_ready: u32,
    /// The most backends of the pool at once, claimed ones included.
    #[schema(minimum = 1, maximum = 10000)]
    pub max: u32,
}

/// `PUT /v1/pools/{name}`: new sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSize {
    #[schema(maximum = 10000)]
    pub min_ready: u32,
    #[schema(minimum = 1, maximum = 10000)]
    pub max: u32,
}

/// A spawn body without `key` (a pooled backend gets its key when claimed), plus
/// `claim_path`: where Spawner POSTs `{"key", "labels"}` to the backend before a claim
/// answers; a backend that does not answer 2xx is replaced, not handed out.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolTemplate {
    pub spec: BackendSpec,
    pub claim_path: Option<String>,
}

impl utoipa::PartialSchema for PoolTemplate {
    /// The spawn body's schema without `key`, with `claim_path`.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        use utoipa::openapi::RefOr;
        let mut schema = BackendSpec::schema();
        if let RefOr::T(Schema::Object(obj)) = &mut schema {
            obj.properties.shift_remove("key");
            obj.properties.insert(
                "claim_path".into(),
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(
                        "Where Spawner POSTs `{\"key\", \"labels\"}` to the backend before a claim answers; a backend that does not answer 2xx is replaced, not handed out.",
                    ))
                    .into(),
            );
            obj.description = Some("A spawn body without `key`, plus `claim_path`.".into());
        }
        schema
    }
}

impl ToSchema for PoolTemplate {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <BackendSpec as ToSchema>::schemas(schemas);
    }
}

impl Serialize for PoolTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = serde_json::to_value(&self.spec).map_err(serde::ser::Error::custom)?;
        if let (Some(map), Some(path)) = (v.as_object_mut(), &self.claim_path) {
            map.insert("claim_path".into(), path.clone().into());
        }
        v.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PoolTemplate {
    /// The spawn body's own rules (unknown fields refused) apply to everything but
    /// `claim_path`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let claim_path = match map.remove("claim_path") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(p)) => Some(p),
            Some(_) => {
                return Err(D::Error::custom(
                    "claim_path must be a path string such as \"/claim\"",
                ))
            }
        };
        let spec =
            BackendSpec::deserialize(serde_json::Value::Object(map)).map_err(D::Error::custom)?;
        Ok(PoolTemplate { spec, claim_path })
    }
}

impl PoolSize {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.max == 0 || self.max > MAX_POOL_SIZE {
            return Err(ValidationError::new(
                "max",
                format!("must be between 1 and {MAX_POOL_SIZE}"),
            ));
        }
        if self.min_ready > self.max {
            return Err(ValidationError::new(
                "min_ready",
                format!(
                    "must be at most max ({}): raise max or lower min_ready",
                    self.max
                ),
            ));
        }
        Ok(())
    }
}

impl PoolSpec {
    pub fn size(&self) -> PoolSize {
        PoolSize {
            min_ready: self.min_ready,
            max: self.max,
        }
    }

    /// Checks every field; the first problem found is returned, its path in the body first.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.name)?;
        if self.template.spec.key.is_some() {
            return Err(ValidationError::new(
                "template.key",
                "a pooled backend gets its key when it is claimed: give \"key\" in the claim (POST /v1/backends with \"pool\")",
            ));
        }
        self.template
            .spec
            .validate()
            .map_err(|e| ValidationError::new(format!("template.{}", e.field), e.message))?;
        if let Some(access) = &self.template.spec.access {
            access.validate_template()?;
        }
        if let Some(path) = &self.template.claim_path {
            if !path.starts_with('/')
                || path.len() > 1024
                || path.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(ValidationError::new(
                    "template.claim_path",
                    "must be an absolute path without spaces, e.g. \"/claim\"",
                ));
            }
        }
        self.size().validate()
    }
}

/// Pool names are DNS labels, so that one name works in both modes.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "name",
            "must be 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-', e.g. \"notebooks\"",
        ))
    }
}

/// What a pool has in `GET /v1/pools/{name}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolCounts {
    /// Unclaimed and Ready: what a claim takes at once.
    pub ready: u32,
    /// Unclaimed, not Ready yet.
    pub starting: u32,
    /// Claimed and not ended.
    pub claimed: u32,
}

/// One pool's figures for `/metrics`: the counts of its members, and the claims counters
/// of whoever answers claims (the embedded server, or one `spawner api` process).
#[derive(Debug, Clone, Default)]
pub struct PoolMetrics {
    pub name: String,
    pub counts: PoolCounts,
    pub claims: u64,
    pub cold_claims: u64,
    pub refused: u64,
}

/// The pools' series in the Prometheus text format, named alike in both modes;
/// `counters_scope` is appended to the counters' help (e.g. " (this API process)").
pub fn render_metrics(pools: &[PoolMetrics], counters_scope: &str) -> String {
    type Value = fn(&PoolMetrics) -> u64;
    let series: [(&str, &str, &str, &str, Value); 6] = [
        (
            "spawner_pool_ready",
            "gauge",
            "Unclaimed Ready backends of a pool",
            "",
            |p| p.counts.ready.into(),
        ),
        (
            "spawner_pool_starting",
            "gauge",
            "Unclaimed backends of a pool not Ready yet",
            "",
            |p| p.counts.starting.into(),
        ),
        (
            "spawner_pool_claimed",
            "gauge",
            "Claimed live backends of a pool",
            "",
            |p| p.counts.claimed.into(),
        ),
        (
            "spawner_pool_claims_total",
            "counter",
            "Claims answered by a pool",
            counters_scope,
            |p| p.claims,
        ),
        (
            "spawner_pool_cold_claims_total",
            "counter",
            "Claims that found no Ready backend and waited for one",
            counters_scope,
            |p| p.cold_claims,
        ),
        (
            "spawner_pool_claims_refused_total",
            "counter",
            "Backends replaced because their claim hook refused",
            counters_scope,
            |p| p.refused,
        ),
    ];
    let mut out = String::new();
    for (metric, kind, help, scope, value) in series {
        out.push_str(&format!(
            "# HELP {metric} {help}{scope}\n# TYPE {metric} {kind}\n"
        ));
        for p in pools {
            out.push_str(&format!("{metric}{{pool=\"{}\"}} {}\n", p.name, value(p)));
        }
    }
    out
}

impl PoolCounts {
    pub fn total(&self) -> u32 {
        self.ready + self.starting + self.claimed
    }
}

/// A pool as `GET /v1/pools/{name}` answers it: its spec and what it holds now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolStatus {
    pub name: String,
    pub template: PoolTemplate,
    pub min_ready: u32,
    pub max: u32,
    /// Unclaimed and Ready: what a claim takes at once.
    pub ready: u32,
    /// Unclaimed, not Ready yet.
    pub starting: u32,
    /// Claimed and not ended.
    pub claimed: u32,
    /// Claims answered since this server started.
    pub claims: u64,
    /// Of those, claims that found no Ready backend and waited for one.
    pub cold_claims: u64,
}

/// `GET /v1/pools`: one page of the pools, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PoolList {
    pub pools: Vec<PoolStatus>,
    /// The cursor of the next page (pass it as `?after=`); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `DELETE /v1/pools/{name}`: the pool is gone; its unclaimed backends are being stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolDrained {
    pub name: String,
    /// Unclaimed backends being stopped.
    pub stopping: u32,
}

/// What the pool's reconciler does next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// Backends to start.
    pub start: u32,
    /// Unclaimed backends to stop (starting ones first, then the newest Ready).
    pub stop: u32,
}

/// How many backends a pool starts or stops: enough unclaimed ones for `min_ready` plus
/// the claims waiting for one (`waiting`), never more than `max` in all; over `max` (after a
/// resize), unclaimed ones are stopped. Claimed backends are the users' and never stopped.
pub fn plan(size: PoolSize, counts: PoolCounts, waiting: u32) -> Plan {
    let total = counts.total();
    if total > size.max {
        let unclaimed = counts.ready + counts.starting;
        return Plan {
            start: 0,
            stop: (total - size.max).min(unclaimed),
        };
    }
    let want = size.min_ready.saturating_add(waiting);
    let have = counts.ready + counts.starting;
    let room = size.max - total;
    Plan {
        start: want.saturating_sub(have).min(room),
        stop: 0,
    }
}

/// `POST /v1/backends` with `pool`: claims a Ready backend of the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The pool to claim from.
    pub pool: String,
    /// Get-or-create: the live backend with this key if there is one, else a claimed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 253)]
    pub key: Option<String>,
    /// Added to the template's labels (a claim's value wins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(default = json!({}))]
    pub labels: BTreeMap<String, String>,
    /// The template's if absent; counted from the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub grace_period_seconds: Option<u64>,
    /// The template's if absent; counted from the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub lifetime_limit_seconds: Option<u64>,
    /// With no Ready backend in the pool: `start` one more (within `max`) and take the first
    /// to be Ready, or `wait` for the refill alone.
    #[serde(default)]
    #[schema(default = "start")]
    pub if_none_ready: IfNoneReady,
    /// How long a claim waits for a Ready backend before it answers 503 `pool_exhausted`.
    #[serde(default = "default_wait")]
    #[schema(default = 60, minimum = 1, maximum = 3600)]
    pub wait_seconds: u64,
    /// Who the connect URL in the answer is for, when the pool's template has
    /// `"access": {"mode": "token"}` (required then); the mode is the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<crate::access::Access>,
    /// The template's if absent: `sweep` or `sleep` once idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_action: Option<crate::spec::IdleAction>,
    /// The template's if absent (with `idle_action: "sleep"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub max_sleep_seconds: Option<u64>,
}

fn default_wait() -> u64 {
    60
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IfNoneReady {
    #[default]
    Start,
    Wait,
}

impl ClaimRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.pool).map_err(|e| ValidationError::new("pool", e.message))?;
        // The spawn body's rules for what a claim shares with it.
        let mut probe = BackendSpec::from_command(vec!["claim".into()]);
        probe.key = self.key.clone();
        probe.labels = self.labels.clone();
        if let Some(g) = self.grace_period_seconds {
            probe.grace_period_seconds = g;
        }
        probe.lifetime_limit_seconds = self.lifetime_limit_seconds;
        if let Some(a) = self.idle_action {
            probe.idle_action = a;
        }
        if let Some(m) = self.max_sleep_seconds {
            // Checked for its range here; whether it applies is the claimed spec's matter.
            probe.idle_action = crate::spec::IdleAction::Sleep;
            probe.max_sleep_seconds = m;
        }
        probe.validate()?;
        for (k, v) in &self.labels {
            validate_label(k, v)?;
        }
        if let Some(access) = &self.access {
            access.validate()?;
        }
        if self.wait_seconds == 0 || self.wait_seconds > 3600 {
            return Err(ValidationError::new(
                "wait_seconds",
                "must be between 1 and 3600",
            ));
        }
        Ok(())
    }

    /// The spec of a backend of `template` once this claim has it: the claim's key, the
    /// template's labels with the claim's over them, the claim's timings where given.
    pub fn claimed_spec(&self, template: &BackendSpec) -> BackendSpec {
        let mut spec = template.clone();
        spec.key = self.key.clone();
        spec.labels.extend(self.labels.clone());
        if let Some(g) = self.grace_period_seconds {
            spec.grace_period_seconds = g;
        }
        if let Some(l) = self.lifetime_limit_seconds {
            spec.lifetime_limit_seconds = Some(l);
        }
        if let Some(a) = self.idle_action {
            spec.idle_action = a;
        }
        if let Some(m) = self.max_sleep_seconds {
            spec.max_sleep_seconds = m;
        }
        spec
    }
}

/// The reason of the event a claim adds to the claimed backend's timeline (in its state,
/// Ready): `claimed`, or `claimed with key K`.
pub fn claimed_reason(key: Option<&str>) -> String {
    match key {
        Some(k) => format!("claimed with key {k}"),
        None => "claimed".to_string(),
    }
}

/// The message of a claim's `503 pool_exhausted` after `wait_seconds`: with a refusal of
/// the claim hook since it last took a claim, that the hook refused, quoting its last
/// answer (not a matter of size); else that no backend was Ready in time.
pub fn exhausted_message(
    pool: &str,
    wait_seconds: u64,
    claim_path: Option<&str>,
    last_refusal: Option<&str>,
) -> String {
    match last_refusal {
        Some(why) => format!(
            "pool {pool:?} had no backend whose claim hook ({}) took the claim within wait_seconds ({wait_seconds}): the hook refused, the last time with {why}; fix the backends' hook, or create the pool without claim_path",
            claim_path.unwrap_or_default()
        ),
        None => format!(
            "pool {pool:?} had no Ready backend within wait_seconds ({wait_seconds}): raise its max or min_ready (PUT /v1/pools/{pool}), or wait longer"
        ),
    }
}

/// What the claim hook receives: who claimed the backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClaimNotice {
    pub key: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A pooled backend's claim: when, and the timings it has from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub at: Millis,
    pub timing: Timing,
}

/// The timing and the start of the clocks the sweeper applies to a backend: an unclaimed
/// pooled backend that is Ready is never swept (`None`); a claimed one is judged from its
/// claim with the claim's timings; any other from its submission. An unclaimed one that is
/// not Ready yet keeps its startup timeout.
pub fn sweep_clock(
    pooled: bool,
    claimed: Option<Claimed>,
    state: State,
    timing: Timing,
    created_at: Millis,
) -> Option<(Timing, Millis)> {
    match (pooled, claimed) {
        (_, Some(c)) => Some((c.timing, c.at)),
        (true, None) if state >= State::Ready => None,
        (true, None) => Some((
            Timing {
                lifetime_limit_ms: None,
                ..timing
            },
            created_at,
        )),
        (false, None) => Some((timing, created_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(min_ready: u32, max: u32) -> PoolSize {
        PoolSize { min_ready, max }
    }
    fn counts(ready: u32, starting: u32, claimed: u32) -> PoolCounts {
        PoolCounts {
            ready,
            starting,
            claimed,
        }
    }

    #[test]
    fn a_pool_refills_to_min_ready_within_max() {
        assert_eq!(plan(size(3, 10), counts(0, 0, 0), 0).start, 3);
        assert_eq!(plan(size(3, 10), counts(1, 1, 5), 0).start, 1);
        // Starting ones count as on their way.
        assert_eq!(plan(size(3, 10), counts(0, 3, 0), 0), Plan::default());
        // Claims never make room: max bounds the whole pool.
        assert_eq!(plan(size(3, 5), counts(0, 0, 4), 0).start, 1);
        assert_eq!(plan(size(3, 5), counts(0, 0, 5), 0), Plan::default());
    }

    #[test]
    fn waiting_claims_start_more_within_max() {
        assert_eq!(plan(size(1, 10), counts(0, 1, 0), 3).start, 3);
        assert_eq!(plan(size(0, 2), counts(0, 0, 1), 5).start, 1);
    }

    #[test]
    fn a_pool_over_max_stops_unclaimed_backends_only() {
        assert_eq!(
            plan(size(1, 2), counts(2, 1, 1), 0),
            Plan { start: 0, stop: 2 }
        );
        assert_eq!(
            plan(size(0, 1), counts(1, 0, 4), 0),
            Plan { start: 0, stop: 1 }
        );
    }

    #[test]
    fn a_claim_sets_key_and_labels_over_the_template() {
        let mut template = BackendSpec::from_command(vec!["app".into()]);
        template.labels.insert("app".into(), "nb".into());
        template.labels.insert("tier".into(), "free".into());
        let claim: ClaimRequest = serde_json::from_str(
            r#"{"pool":"nb","key":"u1","labels":{"tier":"paid"},"grace_period_seconds":30}"#,
        )
        .unwrap();
        claim.validate().unwrap();
        let spec = claim.claimed_spec(&template);
        assert_eq!(spec.key.as_deref(), Some("u1"));
        assert_eq!(spec.labels["tier"], "paid");
        assert_eq!(spec.labels["app"], "nb");
        assert_eq!(spec.grace_period_seconds, 30);
        assert_eq!(claim.if_none_ready, IfNoneReady::Start);
    }

    #[test]
    fn refusals_name_the_field() {
        let pool = |json: &str| -> Result<PoolSpec, String> {
            let p: PoolSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
            p.validate().map_err(|e| e.to_string())?;
            Ok(p)
        };
        let t = r#"{"executable":{"command":["app"]}}"#;
        assert!(pool(&format!(
            r#"{{"name":"nb","template":{t},"min_ready":2,"max":4}}"#
        ))
        .is_ok());
        let cases = [
            (format!(r#"{{"name":"NB","template":{t},"min_ready":1,"max":2}}"#), "name"),
            (format!(r#"{{"name":"nb","template":{t},"min_ready":3,"max":2}}"#), "min_ready"),
            (format!(r#"{{"name":"nb","template":{t},"min_ready":0,"max":0}}"#), "max"),
            (
                r#"{"name":"nb","template":{"key":"k","executable":{"command":["a"]}},"min_ready":0,"max":1}"#.to_string(),
                "template.key",
            ),
            (
                r#"{"name":"nb","template":{"executable":{}},"min_ready":0,"max":1}"#.to_string(),
                "template.executable",
            ),
            (
                r#"{"name":"nb","template":{"executable":{"command":["a"]},"claim_path":"claim"},"min_ready":0,"max":1}"#.to_string(),
                "template.claim_path",
            ),
        ];
        for (json, field) in cases {
            let err = pool(&json).unwrap_err();
            assert!(err.starts_with(field), "{json}: {err}");
        }
        let typo = pool(
            r#"{"name":"nb","template":{"executable":{"command":["a"]},"grace":1},"min_ready":0,"max":1}"#,
        );
        assert!(typo.unwrap_err().contains("unknown field `grace`"));
    }

    #[test]
    fn the_template_keeps_claim_path_through_json() {
        let json = r#"{"executable":{"command":["app"]},"claim_path":"/claim"}"#;
        let t: PoolTemplate = serde_json::from_str(json).unwrap();
        assert_eq!(t.claim_path.as_deref(), Some("/claim"));
        let back: PoolTemplate = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn an_unclaimed_ready_backend_is_never_swept_and_a_claim_restarts_the_clocks() {
        let timing = Timing::of(&BackendSpec::from_command(vec!["a".into()]));
        assert_eq!(sweep_clock(true, None, State::Ready, timing, 5), None);
        let starting = sweep_clock(true, None, State::Running, timing, 5).unwrap();
        assert_eq!(starting.1, 5);
        let claimed = Claimed {
            at: 99,
            timing: Timing {
                grace_ms: 1000,
                ..timing
            },
        };
        assert_eq!(
            sweep_clock(true, Some(claimed), State::Ready, timing, 5),
            Some((claimed.timing, 99))
        );
        assert_eq!(
            sweep_clock(false, None, State::Ready, timing, 5),
            Some((timing, 5))
        );
    }
}
