//! Reading what a client sends: JSON bodies, ids, list filters, `Last-Event-ID`.

use crate::page::PageRequest;
use crate::ApiError;
use crate::ErrorCode;
use axum::http::HeaderMap;
use spawner_core::spec::validate_label;
use spawner_core::{BackendId, State};

/// Parses a JSON body; the message names the field path and what was expected.
pub fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        if e.inner().is_syntax() || e.inner().is_eof() {
            // Not JSON at all: where it broke is a line and column, not a field.
            return ApiError::bad_request(
                ErrorCode::InvalidBody,
                format!("the request body is not JSON: {}", e.into_inner()),
            );
        }
        let at = field_path(e.path());
        ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!(
                "the request body is not valid: {at}{}; see docs/api.md for the fields",
                e.into_inner()
            ),
        )
    })
}

/// `path: ` for a message, from the fields whose names are known: serde names a field it
/// had not yet identified `?`, which tells a client nothing.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let known: Vec<String> = path
        .iter()
        .take_while(|s| !matches!(s, serde_path_to_error::Segment::Unknown))
        .map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => format!("[{index}]"),
            other => format!(".{other}"),
        })
        .collect();
    let joined = known.concat();
    match joined.trim_start_matches('.') {
        "" => String::new(),
        path => format!("{path}: "),
    }
}

/// Like [`json`], but an empty body is the type's default.
pub fn json_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json(body)
    }
}

/// Whether a spawn body names a pool (then it is a claim of a warm pool's backend).
pub fn names_pool(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        pool: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|p| p.pool.is_some())
}

/// A path id; a malformed id is an unknown id.
pub fn id(id: &str) -> Result<BackendId, ApiError> {
    BackendId::parse(id).map_err(|_| ApiError::not_found(id))
}

/// The filters of `GET /v1/backends`, and the page asked for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ListFilter {
    pub state: Option<State>,
    pub key: Option<String>,
    /// `(name, Some(value))` for `label=name=value`; `(name, None)` for `label=name`: a
    /// backend with that label, whatever its value.
    pub labels: Vec<(String, Option<String>)>,
    pub page: PageRequest,
}

impl ListFilter {
    /// Reads `state`, `key`, (repeatable) `label=name=value` or `label=name`, `limit` and
    /// `after` query pairs.
    pub fn from_query(params: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut filter = ListFilter::default();
        for (name, value) in params {
            if filter.page.read(&name, &value)? {
                continue;
            }
            match name.as_str() {
                "state" => {
                    filter.state = Some(value.parse().map_err(|e| {
                        ApiError::bad_request(ErrorCode::InvalidQuery, format!("state: {e}"))
                    })?)
                }
                "key" => filter.key = Some(value),
                "label" => {
                    let (k, v) = match value.split_once('=') {
                        Some((k, v)) => (k, Some(v)),
                        None => (value.as_str(), None),
                    };
                    validate_label(k, v.unwrap_or_default()).map_err(|e| {
                        ApiError::bad_request(
                            ErrorCode::InvalidQuery,
                            format!("label: {e} (label=name=value, or label=name for any value)"),
                        )
                    })?;
                    filter.labels.push((k.to_string(), v.map(str::to_string)));
                }
                other => {
                    return Err(ApiError::bad_request(
                        ErrorCode::InvalidQuery,
                        format!(
                            "unknown filter {other:?}: use state, label or key (and limit, after)"
                        ),
                    ))
                }
            }
        }
        Ok(filter)
    }

    /// Whether a backend's labels carry every label of the filter (a bare name: with any
    /// value).
    pub fn labels_match(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| match v {
            Some(v) => labels.get(k) == Some(v),
            None => labels.contains_key(k),
        })
    }

    /// The filter's labels as a Kubernetes label selector (`owner=u-7,team`).
    pub fn label_selector(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The sequence number a status stream resumes after (0: from the start).
pub fn last_event_id(headers: &HeaderMap) -> Result<u64, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(0),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidHeader,
                    "Last-Event-ID must be the number of an event of this stream",
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn filters() {
        let f = ListFilter::from_query(q(&[
            ("state", "Ready"),
            ("label", "owner=u-7"),
            ("key", "k"),
        ]))
        .unwrap();
        assert_eq!(f.state, Some(State::Ready));
        assert_eq!(
            f.labels,
            vec![("owner".to_string(), Some("u-7".to_string()))]
        );
        assert!(ListFilter::from_query(q(&[("state", "ready")])).is_err());
        let any = ListFilter::from_query(q(&[("label", "owner"), ("label", "team=a")])).unwrap();
        assert_eq!(any.label_selector(), "owner,team=a");
        let labels = [("owner".to_string(), "x".to_string())].into();
        assert!(!any.labels_match(&labels));
        assert!(ListFilter::from_query(q(&[("label", "-bad")])).is_err());
        assert!(ListFilter::from_query(q(&[("colour", "x")])).is_err());
    }

    #[test]
    fn body_errors_name_the_path() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            inner: Inner,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            port: u16,
        }
        let e = json::<Outer>(br#"{"inner":{"port":70000}}"#).unwrap_err();
        assert!(e.message.contains("inner.port"), "{}", e.message);
    }
}
