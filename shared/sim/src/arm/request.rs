//! Request parsing shared by every ARM handler: the api-version, the body (media type,
//! size, JSON) and the ARM error helpers.

use super::{model, RG_TYPE};
use crate::util::{arm_error, Ctx};
use axum::response::Response;
use http::StatusCode;
use serde_json::Value;

/// Largest ARM request body accepted (ARM's 4 MB request limit).
pub(crate) const MAX_ARM_BODY: usize = 4 * 1024 * 1024;

/// A 400 ARM error.
pub(crate) fn bad(code: &str, message: &str) -> Response {
    arm_error(StatusCode::BAD_REQUEST, code, message)
}

/// The api-version of the request, which must be one of `allowed` (newest first).
/// `location` is the location the provider would look the type up in.
pub(crate) fn check_version(
    ctx: &Ctx,
    allowed: &[&str],
    what: &str,
    location: Option<&str>,
) -> Result<String, Response> {
    let Some(v) = ctx.q("api-version") else {
        return Err(bad(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    if allowed.is_empty() || allowed.contains(&v) {
        return Ok(v.to_string());
    }
    if what == RG_TYPE || what.starts_with("Microsoft.Resources/") {
        return Err(bad(
            "InvalidApiVersionParameter",
            &format!(
                "The api-version '{v}' is invalid. The supported versions are '{}'.",
                allowed.join(",")
            ),
        ));
    }
    let ty = what.split_once('/').map(|(_, t)| t).unwrap_or(what);
    Err(bad(
        "NoRegisteredProviderFound",
        &format!(
            "No registered resource provider found for location '{}' and API version '{v}' for type '{ty}'. The supported api-versions are '{}'. The supported locations are '{}'.",
            location.unwrap_or("global"),
            allowed.join(", "),
            super::regions::all().replace(',', ", "),
        ),
    ))
}

/// The JSON object body of a write: `Content-Type` must be JSON (415), the body at most
/// [`MAX_ARM_BODY`] (413) and a JSON object (400 `InvalidRequestContent`).
pub(crate) fn parse_body(ctx: &Ctx) -> Result<Value, Response> {
    if ctx.body.len() > MAX_ARM_BODY {
        return Err(arm_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!(
                "The request content size '{}' exceeds the maximum size of '{MAX_ARM_BODY}' bytes.",
                ctx.body.len()
            ),
        ));
    }
    let media = ctx.header("content-type").map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match media.as_deref() {
        Some("application/json") | Some("text/json") => {}
        // Bodyless writes (a POST action, an empty PUT) need no media type.
        None if ctx.body.is_empty() => {}
        other => {
            return Err(arm_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!(
                    "The content media type '{}' is not supported. Only 'application/json' is supported.",
                    other.unwrap_or("<null>")
                ),
            ))
        }
    }
    let v: Value = serde_json::from_slice(&ctx.body).map_err(|e| {
        bad(
            "InvalidRequestContent",
            &format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    })?;
    if !v.is_object() {
        return Err(bad(
            "InvalidRequestContent",
            "The request content must be a JSON object.",
        ));
    }
    super::rules::check_tags(&v).map_err(|(c, m)| bad(c, &m))?;
    Ok(v)
}

/// A rejection from a validation rule: (code, message), answered as 400.
pub(crate) type Reject = model::Reject;

/// The answer to a rule's rejection: 409 for conflicts with what exists (a taken name,
/// a location change, quota and capacity), 400 otherwise.
pub(crate) fn reject((code, message): Reject) -> Response {
    let status = match code {
        "StorageAccountAlreadyTaken"
        | "InvalidResourceLocation"
        | "SkuNotAvailable"
        | "OperationNotAllowed" => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    arm_error(status, code, &message)
}
