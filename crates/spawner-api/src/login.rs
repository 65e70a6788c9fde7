//! How a browser tab gets the control token without anyone typing it: one-time login links.
//!
//! The server (or `spawner dashboard`, with the token) issues a code and prints the link
//! `{base}/#login={code}`. The code sits in the fragment, which browsers never send to a
//! server nor put in `Referer`; the dashboard posts it to `POST /v1/login` and keeps the
//! token it gets in the tab's sessionStorage. A code works once and for
//! [`LOGIN_CODE_TTL`]; a link seen later (a scrolled-back terminal, a shared screen) opens
//! nothing.

use crate::error::ErrorCode;
use crate::{parse, ApiError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a login link works.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(15 * 60);

/// Codes not redeemed yet; more than this and the oldest are forgotten.
const MAX_CODES: usize = 64;

/// A fresh control token: 256 bits from the operating system, as 64 hex digits.
pub fn generate_token() -> Result<String, getrandom::Error> {
    random_hex::<32>()
}

fn random_hex<const N: usize>() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The login codes of one server, and the token they open.
#[derive(Debug)]
pub struct LoginCodes {
    token: String,
    /// The dashboard's URL, without the fragment (`http://127.0.0.1:8080/`).
    dashboard: String,
    codes: Mutex<HashMap<String, Instant>>,
}

/// A login link, as `POST /v1/login-links` answers it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginLink {
    /// The dashboard's URL with the one-time code in its fragment.
    pub url: String,
    pub expires_in_seconds: u64,
}

/// `POST /v1/login`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The code of a login link (after `#login=`).
    pub code: String,
}

/// The answer to a redeemed code.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// The control token, for `Authorization: Bearer`.
    pub token: String,
}

impl LoginCodes {
    /// Codes opening `token`, for links to the dashboard at `base` (a server's URL).
    pub fn new(token: &str, base: &str) -> Self {
        LoginCodes {
            token: token.to_string(),
            dashboard: format!("{}/", base.trim_end_matches('/')),
            codes: Mutex::default(),
        }
    }

    /// A new one-time link.
    pub fn issue(&self) -> Result<LoginLink, getrandom::Error> {
        let code = random_hex::<16>()?;
        let now = Instant::now();
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, issued| now.duration_since(*issued) < LOGIN_CODE_TTL);
        if codes.len() >= MAX_CODES {
            if let Some(oldest) = codes
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(c, _)| c.clone())
            {
                codes.remove(&oldest);
            }
        }
        codes.insert(code.clone(), now);
        Ok(LoginLink {
            url: format!("{}#login={code}", self.dashboard),
            expires_in_seconds: LOGIN_CODE_TTL.as_secs(),
        })
    }

    /// The token, if `code` is a live code; the code is spent either way.
    pub fn redeem(&self, code: &str) -> Option<&str> {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        let issued = codes.remove(code)?;
        (issued.elapsed() < LOGIN_CODE_TTL).then_some(self.token.as_str())
    }
}

/// `POST /v1/login`: open (the code is the credential), for any router state.
pub fn open_routes<S: Clone + Send + Sync + 'static>(codes: Option<Arc<LoginCodes>>) -> Router<S> {
    Router::new()
        .route("/v1/login", post(redeem))
        .route_layer(axum::middleware::from_fn(crate::body_limit::limit_body))
        .with_state(codes)
}

/// `POST /v1/login-links`: a control route (behind the token), for any router state.
pub fn control_routes<S: Clone + Send + Sync + 'static>(
    codes: Option<Arc<LoginCodes>>,
) -> Router<S> {
    Router::new()
        .route("/v1/login-links", post(issue))
        .with_state(codes)
}

async fn redeem(
    State(codes): State<Option<Arc<LoginCodes>>>,
    body: Bytes,
) -> Result<Json<LoginResponse>, ApiError> {
    let req: LoginRequest = parse::json(&body)?;
    let token = codes.as_deref().and_then(|c| c.redeem(req.code.trim()));
    match token {
        Some(token) => Ok(Json(LoginResponse {
            token: token.to_string(),
        })),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidLoginCode,
            "this login link is unknown, used or expired: run `spawner dashboard` for a new one, \
             or enter the token (`spawner token` prints it)",
        )),
    }
}

async fn issue(State(codes): State<Option<Arc<LoginCodes>>>) -> Result<Json<LoginLink>, ApiError> {
    let codes = codes.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "this server has no token, so there is nothing to log in to",
        )
    })?;
    codes.issue().map(Json).map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_opens_the_token_once() {
        let codes = LoginCodes::new("t0ken", "http://127.0.0.1:8080");
        let link = codes.issue().expect("link");
        let code = link.url.split("#login=").nth(1).expect("code").to_string();
        assert!(link.url.starts_with("http://127.0.0.1:8080/#login="));
        assert_eq!(code.len(), 32);
        assert_eq!(codes.redeem("nope"), None);
        assert_eq!(codes.redeem(&code), Some("t0ken"));
        assert_eq!(codes.redeem(&code), None, "spent");
    }

    #[test]
    fn codes_are_bounded() {
        let codes = LoginCodes::new("t", "http://h");
        let first = codes.issue().expect("link").url;
        for _ in 0..MAX_CODES {
            codes.issue().expect("link");
        }
        let code = first.split("#login=").nth(1).expect("code");
        assert_eq!(codes.redeem(code), None, "the oldest was forgotten");
        assert!(generate_token().expect("token").len() == 64);
    }
}
