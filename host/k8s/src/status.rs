//! Kubernetes `Status` errors: the body kubectl and client libraries read.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An API error answered as a `Status` object with the same HTTP code.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub code: u16,
    /// The machine-readable reason (`NotFound`, `AlreadyExists`, `Invalid`, ...).
    pub reason: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// `details` (name, kind, causes, ...).
    pub details: Value,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: Value::Null,
        }
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 404 `NotFound` for an event.
    pub fn not_found(name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("events \"{name}\" not found"));
        e.details = json!({"name": name, "kind": "events"});
        e
    }

    /// 409 `AlreadyExists`.
    pub fn already_exists(name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("events \"{name}\" already exists"),
        );
        e.details = json!({"name": name, "kind": "events"});
        e
    }

    /// 409 `Conflict`.
    pub fn conflict(message: String, name: &str) -> Self {
        let mut e = Self::new(409, "Conflict", message);
        e.details = json!({"name": name, "kind": "events"});
        e
    }

    /// 422 `Invalid`, naming the field.
    pub fn invalid(name: &str, field: &str, message: &str) -> Self {
        Self::invalid_kind("Event", name, field, message)
    }

    /// 422 `Invalid` for an object of `kind`, naming the field.
    pub fn invalid_kind(kind: &str, name: &str, field: &str, message: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field}: {message}"),
        );
        e.details = json!({
            "name": name, "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
        });
        e
    }

    /// 410 `Expired`: a resourceVersion older than the watch history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 415 `UnsupportedMediaType`.
    pub fn unsupported_media(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type})"),
        )
    }

    /// 401 `Unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "Unauthorized", message.into())
    }

    /// 403 `Forbidden` for a request (not about one event).
    pub fn forbidden_request(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message.into())
    }

    /// 403 `Forbidden` for an event.
    pub fn forbidden(name: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(403, "Forbidden", message.into());
        e.details = json!({"name": name, "kind": "events"});
        e
    }

    /// 503 `ServiceUnavailable`, with the seconds after which to retry.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(503, "ServiceUnavailable", message.into());
        e.details = json!({"retryAfterSeconds": retry_after_secs});
        e
    }

    /// 429 `TooManyRequests`, with the seconds after which to retry.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message.into());
        e.details = json!({"retryAfterSeconds": retry_after_secs});
        e
    }

    /// 422 `Invalid`: a filter refused the write.
    pub fn rejected(name: &str, stage: &str, reason: &str) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!("Event \"{name}\" is invalid: rejected by filter `{stage}`: {reason}"),
        );
        e.details = json!({
            "name": name, "kind": "Event",
            "causes": [{"reason": "FilterRejected", "message": reason, "field": stage}],
        });
        e
    }

    /// 504 `Timeout`.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message.into())
    }

    /// 500 `InternalError`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into())
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }
}

/// A request body as a JSON object, or the 400 the API answers otherwise.
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "couldn't decode the request body: {e}"
        ))),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            self.status().to_string(),
        )
            .into_response();
        if let Some(secs) = self
            .details
            .get("retryAfterSeconds")
            .and_then(Value::as_u64)
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

impl From<super::store::StoreError> for ApiError {
    fn from(e: super::store::StoreError) -> Self {
        use super::store::StoreError;
        match &e {
            StoreError::AlreadyExists(name) => Self::already_exists(name),
            StoreError::NotFound(name) => Self::not_found(name),
            StoreError::Conflict(name) => Self::conflict(e.to_string(), name),
            StoreError::Storage(_) => Self::internal(e.to_string()),
        }
    }
}
