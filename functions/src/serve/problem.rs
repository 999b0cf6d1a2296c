//! RFC 9457 problem details (`application/problem+json`) for HTTP answers.

use super::envelope::HttpResponse;
use serde_json::{json, Value};

/// One kind of problem: its status, a stable type URI and a title.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    MalformedJson,
    UnsupportedMediaType,
    TooLarge,
    InvalidSpec,
    /// Pre-flight found problems with the spec against Azure (every one listed).
    PreflightFailed,
    /// A pre-flight read failed for now; the client should try again.
    AzureUnavailable,
    InvalidRequest,
    /// Authentication is required and the request names no caller.
    Unauthorized,
    NotFound,
    Conflict,
    MethodNotAllowed,
    /// The client did not send its request body in time.
    RequestTimeout,
    Internal,
    /// The handler did not finish within the per-request time limit.
    HandlerTimeout,
}

impl Kind {
    pub fn status(self) -> u16 {
        match self {
            Kind::MalformedJson
            | Kind::InvalidSpec
            | Kind::PreflightFailed
            | Kind::InvalidRequest => 400,
            Kind::Unauthorized => 401,
            Kind::NotFound => 404,
            Kind::MethodNotAllowed => 405,
            Kind::RequestTimeout => 408,
            Kind::Conflict => 409,
            Kind::TooLarge => 413,
            Kind::UnsupportedMediaType => 415,
            Kind::Internal => 500,
            Kind::HandlerTimeout | Kind::AzureUnavailable => 503,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Kind::MalformedJson => "malformed-json",
            Kind::UnsupportedMediaType => "unsupported-media-type",
            Kind::TooLarge => "payload-too-large",
            Kind::InvalidSpec => "invalid-spec",
            Kind::PreflightFailed => "preflight-failed",
            Kind::AzureUnavailable => "azure-unavailable",
            Kind::InvalidRequest => "invalid-request",
            Kind::Unauthorized => "unauthorized",
            Kind::NotFound => "not-found",
            Kind::Conflict => "conflict",
            Kind::MethodNotAllowed => "method-not-allowed",
            Kind::RequestTimeout => "request-timeout",
            Kind::Internal => "internal",
            Kind::HandlerTimeout => "handler-timeout",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::MalformedJson => "The request body is not valid JSON",
            Kind::UnsupportedMediaType => "Unsupported content type",
            Kind::TooLarge => "The request body is too large",
            Kind::InvalidSpec => "The cluster spec is invalid",
            Kind::PreflightFailed => "Pre-flight found problems; nothing was created",
            Kind::AzureUnavailable => "Azure could not be read now; try again",
            Kind::InvalidRequest => "The request is invalid",
            Kind::Unauthorized => "Authentication required",
            Kind::NotFound => "No such job",
            Kind::Conflict => "The job is not in a state that allows this",
            Kind::MethodNotAllowed => "Method not allowed",
            Kind::RequestTimeout => "The request body did not arrive in time",
            Kind::Internal => "Internal error",
            Kind::HandlerTimeout => "The request did not finish in time",
        }
    }
}

/// A problem-details document.
#[derive(Clone, Debug)]
pub struct Problem {
    pub kind: Kind,
    pub detail: String,
    /// The offending field (spec errors and bad parameters).
    pub field: Option<String>,
    /// Extension members (`problems`, `warnings` of a pre-flight refusal).
    pub extra: serde_json::Map<String, Value>,
}

impl Problem {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            detail: detail.into(),
            field: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, name: &str, value: Value) -> Problem {
        self.extra.insert(name.into(), value);
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }

    pub fn to_value(&self) -> Value {
        let mut v = json!({
            "type": format!("urn:flotilla:problem:{}", self.kind.slug()),
            "title": self.kind.title(),
            "status": self.kind.status(),
            "detail": self.detail,
        });
        if let Some(f) = &self.field {
            v["field"] = Value::String(f.clone());
        }
        for (k, x) in &self.extra {
            v[k] = x.clone();
        }
        v
    }

    /// The problem as the `res` HTTP output.
    pub fn response(&self) -> HttpResponse {
        HttpResponse {
            status: self.kind.status(),
            headers: vec![("Content-Type".into(), "application/problem+json".into())],
            body: self.to_value().to_string(),
        }
    }
}
