//! The server's error: every failure a request can meet, mapped to one HTTP status and a JSON
//! body `{"error": {"code": "...", "message": "..."}}`. Internal details are logged, not sent.

use axum::{
    Json,
    body::Body,
    extract::{
        Request,
        rejection::{FormRejection, JsonRejection, PathRejection, QueryRejection},
    },
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `malformed_id`, `invalid`, `illegal_transition`, `conflict`, `not_found`,
    /// `unauthorized`, `forbidden`, `too_many_requests`, `unavailable`, `payload_too_large`,
    /// `unsupported_media_type`, `internal`.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] batchwatch_core::Error),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("too many {what}: try again in {retry_after} s")]
    TooMany { what: &'static str, retry_after: u64 },
    #[error("{0}")]
    MalformedPath(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("request body is larger than the limit of {} MiB", crate::api::BODY_LIMIT >> 20)]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration error")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("no randomness: {0}")]
    Random(#[from] getrandom::Error),
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    /// A failure of the server's own making (a task that died).
    #[error("{0}")]
    Internal(&'static str),
}

impl Error {
    pub fn status_code(&self) -> StatusCode {
        use batchwatch_core::Error as Core;
        match self {
            Self::Core(Core::MalformedId { .. }) | Self::MalformedPath(_) => StatusCode::BAD_REQUEST,
            Self::Core(Core::Invalid(_) | Core::Unknown { .. }) | Self::Unprocessable(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Core(Core::IllegalTransition { .. }) | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Redis(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Database(_) | Self::Migrate(_) | Self::Random(_) | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The code and message a caller sees; a server failure is logged here, never shown.
    pub fn detail(&self) -> ErrorDetail {
        let message = if self.status_code().is_server_error() {
            tracing::error!(error = ?self, "request failed");
            "internal server error".to_owned()
        } else {
            self.to_string()
        };
        ErrorDetail { code: self.code(), message }
    }

    fn code(&self) -> &'static str {
        use batchwatch_core::Error as Core;
        match self {
            Self::Core(Core::MalformedId { .. }) | Self::MalformedPath(_) => "malformed_id",
            Self::Core(Core::Invalid(_) | Core::Unknown { .. }) | Self::Unprocessable(_) => "invalid",
            Self::Core(Core::IllegalTransition { .. }) => "illegal_transition",
            Self::Conflict(_) => "conflict",
            Self::NotFound(_) => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::TooMany { .. } => "too_many_requests",
            Self::Redis(_) => "unavailable",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Database(_) | Self::Migrate(_) | Self::Random(_) | Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = ErrorBody { error: self.detail() };
        let mut response = (status, Json(body)).into_response();
        match self {
            Self::Unauthorized(_) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooMany { retry_after, .. } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        response
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMediaType("expected a request with `Content-Type: application/json`".into())
            }
            r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            r => Self::Unprocessable(r.body_text()),
        }
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Self::MalformedPath(rejection.body_text())
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Self::Unprocessable(rejection.body_text())
    }
}

impl From<FormRejection> for Error {
    fn from(rejection: FormRejection) -> Self {
        match rejection {
            FormRejection::InvalidFormContentType(_) => Self::UnsupportedMediaType(
                "expected a request with `Content-Type: application/x-www-form-urlencoded`".into(),
            ),
            r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            r => Self::Unprocessable(r.body_text()),
        }
    }
}

/// Leptos answers a server function's undecodable arguments with a 500 and a plain-text body
/// `Args|<reason>`: the caller's mistake, reported as the server's. Those become the 422 (or
/// 405) every other route gives; the server's own failures stay 500.
pub async fn server_fn_rejections(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR
        || !response.headers().contains_key("serverfnerror")
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    // The error text is short; a body too big to be one is passed on as it was.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response();
    };
    let text = String::from_utf8_lossy(&bytes);
    let (kind, reason) = text.split_once('|').unwrap_or(("", &text));
    match kind {
        "Args" | "MissingArg" | "Deserialization" => Error::Unprocessable(reason.to_owned()).into_response(),
        "UnsupportedRequestMethod" => {
            let mut response = Error::Unprocessable(reason.to_owned()).into_response();
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
        }
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}
