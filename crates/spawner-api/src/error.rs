//! Errors as the contract writes them: `{"error": code, "message": text}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use spawner_core::ValidationError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// One of the codes of the contract's table: typed, so that no code is spelled by hand.
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no backend with id {id:?}"),
        )
    }

    /// The answer for a path no route serves.
    pub fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such route; see docs/api.md (backends are under /p/{id}/)",
        )
    }

    /// The answer for a route asked with a method it does not serve; axum adds `Allow`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "this route does not serve that method: the Allow header lists those it does; see docs/api.md",
        )
    }

    /// The disk under Spawner's data is full (or its store cannot be written): nothing was
    /// changed, and retrying once space is freed succeeds.
    pub fn storage_full(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "the store cannot be written");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StorageFull,
            format!("Spawner cannot write its data ({e}); free space on the disk of its data directory, then retry"),
        )
    }

    /// A failure of Spawner itself: logged in full, reported briefly.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            e.to_string(),
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::bad_request(ErrorCode::InvalidField, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code.as_str(), "message": self.message})),
        )
            .into_response()
    }
}

/// The body of every error answer (for the OpenAPI document; [`ApiError`] writes it).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// What is wrong and how to fix it; a field's path comes first.
    pub message: String,
}

/// Every `error` code an API server answers with (docs/api.md, "Errors").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidBody,
    InvalidField,
    InvalidQuery,
    InvalidHeader,
    Unauthorized,
    NotFound,
    NotReady,
    Gone,
    RuntimeUnavailable,
    StorageFull,
    Internal,
    /// Kubernetes mode: the API's service account lacks a permission.
    Forbidden,
    /// Kubernetes mode: the Kubernetes API failed.
    KubernetesUnavailable,
    /// Kubernetes mode: a key's backend kept changing while it was created, or another
    /// spawn or claim of the key held its Lease for too long.
    Busy,
    /// Kubernetes mode: a key's object name belongs to another key.
    NameTaken,
    /// A pool with this name exists.
    PoolExists,
    /// A claim found no Ready backend in its pool within `wait_seconds`.
    PoolExhausted,
    /// The request's `Host` is not one of the server's names (a DNS-rebinding page).
    HostNotAllowed,
    /// A browser sent the request from another site's page.
    CrossOrigin,
    /// A request body that is not declared `application/json`.
    UnsupportedMediaType,
    /// A dashboard login link that is unknown, used or expired.
    InvalidLoginCode,
    /// The request body is over the size the API reads (docs/api.md, "Limits").
    BodyTooLarge,
    /// A route that exists, asked with a method it does not serve (`Allow` lists those).
    MethodNotAllowed,
    /// A connect URL asked of an open backend (its URL admits whoever has it).
    OpenAccess,
    /// Kubernetes mode: a token-mode spawn or claim, and the API has no access key.
    AccessNotConfigured,
    /// A request to a token-mode backend without a valid cookie or connect token (the
    /// proxy's answer, not the API's).
    AccessRequired,
}

impl ErrorCode {
    /// The code as the `error` field spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidHeader => "invalid_header",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Gone => "gone",
            ErrorCode::RuntimeUnavailable => "runtime_unavailable",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::Internal => "internal",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::KubernetesUnavailable => "kubernetes_unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::PoolExists => "pool_exists",
            ErrorCode::PoolExhausted => "pool_exhausted",
            ErrorCode::HostNotAllowed => "host_not_allowed",
            ErrorCode::CrossOrigin => "cross_origin",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidLoginCode => "invalid_login_code",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::OpenAccess => "open_access",
            ErrorCode::AccessNotConfigured => "access_not_configured",
            ErrorCode::AccessRequired => "access_required",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// `as_str` spells every code as the document's schema does.
    #[test]
    fn codes_are_spelled_as_serialized() {
        let doc = crate::openapi::document();
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("enum");
        for code in codes {
            let code: ErrorCode = serde_json::from_value(code.clone()).expect("a code");
            assert_eq!(serde_json::to_value(code).expect("json"), code.as_str());
        }
    }

    /// Every code a server can answer with is in docs/api.md's table of errors.
    #[test]
    fn every_code_is_in_the_documented_table() {
        let page = include_str!("../../../docs/api.md");
        let doc = crate::openapi::document();
        let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("enum");
        for code in codes {
            let code: ErrorCode = serde_json::from_value(code.clone()).expect("a code");
            let spelled = format!("`{}`", code.as_str());
            let in_table = page
                .lines()
                .filter(|l| l.starts_with("| 4") || l.starts_with("| 5"))
                .any(|l| l.contains(&spelled));
            assert!(
                in_table,
                "{spelled} is not in docs/api.md's table of errors"
            );
        }
    }
}
