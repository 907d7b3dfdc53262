//! The crate's error type and its one mapping to HTTP responses.
//!
//! Every refusal answers in the Confluent error shape, `{"error_code": 40301, "message":
//! "..."}`, so registry clients print something useful. The message says what was refused,
//! never why a token failed or what the upstream said: those details go to the audit record
//! and the log, where an operator can see them and an attacker cannot.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

/// Why a request was not forwarded, or failed on the way.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Client: the request is malformed or ambiguous (path, query, headers, body).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Client: no bearer token, or one that does not validate. The detail is for the audit log.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Client: authenticated, but no rule permits the operation. The message is what the
    /// client sees; it names the operation and subject, as Confluent's own ACL errors do.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Client: the path is not in the endpoint map. Never forwarded; answered as a registry
    /// without the endpoint answers (404), so clients probing optional APIs fall back.
    #[error("unknown endpoint: {0}")]
    UnknownEndpoint(String),
    /// Client: the path is in the endpoint map, the method is not (405, as Jersey answers).
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// Client: the body exceeds the configured limit.
    #[error("request body over {0} bytes")]
    BodyTooLarge(usize),
    /// Client: the body did not arrive within the configured time.
    #[error("request body not received within {0} ms")]
    BodyTimeout(u64),
    /// Client: the request target (path and query) exceeds the configured limit.
    #[error("request target over {0} bytes")]
    UriTooLong(usize),
    /// Client: too many tokens from this address needed a signature check. The detail is
    /// for the audit log.
    #[error("token verification rate limit: {0}")]
    RateLimited(String),
    /// Internal: audit records cannot be written, and the proxy fails closed.
    #[error("{0}; request refused")]
    AuditUnavailable(#[from] crate::audit::AuditUnavailable),
    /// Upstream: the registry's answer is larger than the configured limit.
    #[error("upstream response over {0} bytes")]
    UpstreamTooLarge(usize),
    /// Upstream: the registry could not be reached or answered something unusable.
    #[error("upstream: {0}")]
    Upstream(String),
    /// Identity provider: discovery or JWKS could not be fetched.
    #[error("identity provider: {0}")]
    Oidc(String),
    /// Internal: configuration that does not validate; every problem is listed.
    #[error("configuration:\n{}", .0.join("\n"))]
    Config(Vec<String>),
    /// Internal: a listener or file failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Internal: the shared crate refused policy or TLS material.
    #[error(transparent)]
    Shared(#[from] shared::Error),
}

impl Error {
    /// HTTP status and Confluent error code.
    pub fn status(&self) -> (StatusCode, u32) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, 40001),
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, 40101),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, 40301),
            Self::UnknownEndpoint(_) => (StatusCode::NOT_FOUND, 404),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, 405),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, 41301),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, 40801),
            Self::UriTooLong(_) => (StatusCode::URI_TOO_LONG, 41401),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, 42901),
            Self::AuditUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, 50301),
            Self::Upstream(_) | Self::Oidc(_) => (StatusCode::BAD_GATEWAY, 50201),
            Self::UpstreamTooLarge(_) => (StatusCode::BAD_GATEWAY, 50202),
            Self::Config(_) | Self::Io(_) | Self::Shared(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, 50001)
            }
        }
    }

    /// The message a client sees.
    pub fn public_message(&self) -> String {
        match self {
            Self::BadRequest(why) => format!("Bad request: {why}"),
            Self::Unauthenticated(_) => "Unauthorized: a valid bearer token is required".into(),
            Self::Forbidden(what) => what.clone(),
            // Confluent's (Jersey's) own wording for a path or method it has no resource for.
            Self::UnknownEndpoint(_) => "HTTP 404 Not Found".into(),
            Self::MethodNotAllowed(_) => "HTTP 405 Method Not Allowed".into(),
            Self::BodyTooLarge(limit) => format!("Request body larger than {limit} bytes"),
            Self::BodyTimeout(_) => "Request body not received in time".into(),
            Self::UriTooLong(limit) => format!("Request target longer than {limit} bytes"),
            Self::RateLimited(_) => {
                "Too many new tokens from this client: retry with a token already in use, or later"
                    .into()
            }
            Self::AuditUnavailable(_) => {
                "Service unavailable: the audit log cannot be written".into()
            }
            Self::Upstream(_) => "Schema registry unavailable".into(),
            Self::UpstreamTooLarge(_) => "Schema registry answer too large".into(),
            Self::Oidc(_) => "Identity provider unavailable".into(),
            Self::Config(_) | Self::Io(_) | Self::Shared(_) => "Internal error".into(),
        }
    }

    /// A short word for metrics and audit records.
    pub fn decision(&self) -> &'static str {
        match self {
            Self::BadRequest(_)
            | Self::UnknownEndpoint(_)
            | Self::MethodNotAllowed(_)
            | Self::BodyTooLarge(_)
            | Self::BodyTimeout(_)
            | Self::UriTooLong(_) => "refused",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::RateLimited(_) => "rate_limited",
            Self::Forbidden(_) => "deny",
            _ => "error",
        }
    }
}

/// A Confluent-shaped error body.
pub fn confluent_error(status: StatusCode, code: u32, message: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"error_code": code, "message": message})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let mut response = confluent_error(status, code, &self.public_message());
        if matches!(self, Self::RateLimited(_) | Self::AuditUnavailable(_)) {
            // The limiter refills, and a failing audit sink is retried, within about a second.
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
