//! The Azure instance metadata service a VM sees at `169.254.169.254`, served
//! per VM under `/imds/{vm}` (on Azure the link-local address itself tells
//! which VM asks; here the path does). `{vm}` is the VM's name, for a scale
//! set instance `{scaleSet}_{instanceId}`.
//!
//! - `GET /imds/{vm}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`
//!   with `Metadata: true`: a managed-identity token for the VM's
//!   system-assigned identity (400 `invalid_request` "Identity not found" when
//!   its scale set has none);
//! - `GET /imds/{vm}/metadata/instance/compute/name?api-version=…&format=text`:
//!   the VM's name.

use crate::util::{json_response, Ctx};
use crate::{lock, Sim};
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use serde_json::json;

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// Whether the scale set of `vm` (if the simulator knows it) has no identity.
fn identity_missing(sim: &Sim, vm: &str) -> bool {
    let Some((vmss, _)) = vm.rsplit_once('_') else {
        return false;
    };
    let st = lock(&sim.inner.state);
    st.scale_set(vmss).is_some_and(|r| {
        r.body
            .pointer("/identity/type")
            .and_then(|t| t.as_str())
            .is_none_or(|t| !t.contains("SystemAssigned"))
    })
}

/// Whether VM `{scaleSet}_{instanceId}` is gone: a scale-in or a delete
/// removed it, or its scale set is being deleted. (A VM this simulator never
/// booted, as node tests address them, is not gone.)
pub(crate) fn vm_gone(sim: &Sim, vm: &str) -> bool {
    let Some((vmss, n)) = vm.rsplit_once('_') else {
        return false;
    };
    let (live, deleted) = {
        let st = lock(&sim.inner.state);
        let deleted = st.deleted_scale_sets.contains(&vmss.to_ascii_lowercase());
        let live = st.scale_set(vmss).map(|r| {
            let capacity = r.body.pointer("/sku/capacity").and_then(|c| c.as_u64());
            (r.state == "Deleting", capacity)
        });
        (live, deleted)
    };
    match live {
        Some((true, _)) => true,
        Some((false, capacity)) => match (n.parse::<u64>(), capacity) {
            (Ok(n), Some(c)) => n >= c,
            _ => false,
        },
        None => deleted || crate::boot::was_removed(sim, vm),
    }
}

/// Handles `/imds/{vm}/metadata/...`.
pub(crate) fn handle(sim: &Sim, ctx: &Ctx) -> Response {
    if ctx.method != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "The instance metadata service only answers GET.",
        );
    }
    if ctx.header("metadata") != Some("true") {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let vm = ctx.segs.get(1).cloned().unwrap_or_default();
    let rest: Vec<String> = ctx
        .segs
        .iter()
        .skip(2)
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    if ctx.q("api-version").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    match rest.as_slice() {
        ["metadata", "identity", "oauth2", "token"] => {
            let resource = ctx.q("resource").unwrap_or("").to_string();
            let Some(audience) = crate::auth::audience_of(&resource) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_resource",
                    &format!(
                        "AADSTS500011: The resource principal named {resource} was not found."
                    ),
                );
            };
            if identity_missing(sim, &vm) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Identity not found",
                );
            }
            let principal = format!("vm:{vm}");
            let (token, expires) = crate::auth::issue(sim, audience, &principal);
            json_response(
                StatusCode::OK,
                &json!({
                    "access_token": token,
                    "expires_in": "3599",
                    "expires_on": expires.to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                    "client_id": principal,
                }),
            )
        }
        ["metadata", "instance", "compute", "name"] => (StatusCode::OK, vm).into_response(),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("No instance metadata at {}", ctx.path),
        ),
    }
}
