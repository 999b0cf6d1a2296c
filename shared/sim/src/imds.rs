//! The Azure instance metadata service a VM sees at `169.254.169.254`, served
//! per VM under `/imds/{vm}` (on Azure the link-local address itself tells
//! which VM asks; here the path does). `{vm}` is the VM's name, for a scale
//! set instance `{scaleSet}_{instanceId}`.
//!
//! - `GET /imds/{vm}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…`
//!   with `Metadata: true`: a managed-identity token. Without `client_id`,
//!   `object_id` or `msi_res_id` it is for the scale set's system-assigned
//!   identity, or its only user-assigned one; with one of them, for that
//!   user-assigned identity, which must be attached to the scale set (400
//!   `invalid_request` "Identity not found" otherwise, as for a scale set
//!   without identity). A VM whose scale set the simulator does not know (as
//!   node tests address them) may name any identity that exists;
//! - `GET /imds/{vm}/metadata/instance/compute/name?api-version=…&format=text`:
//!   the VM's name.

use crate::doc::Doc;
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

/// Who a VM token was issued to: principal `vm:{vm}` is the VM's scale set's
/// system-assigned identity, `vm:{vm}#{principalId}` a user-assigned identity
/// attached to it.
pub(crate) struct VmCaller<'a> {
    /// `{scaleSet}_{instanceId}`.
    pub vm: &'a str,
    /// The principal id of the user-assigned identity, if the token is for one.
    pub identity: Option<&'a str>,
}

impl VmCaller<'_> {
    /// The caller of a token principal, if it is a VM's.
    pub(crate) fn of(principal: &str) -> Option<VmCaller<'_>> {
        let rest = principal.strip_prefix("vm:")?;
        Some(match rest.split_once('#') {
            Some((vm, id)) => VmCaller {
                vm,
                identity: Some(id),
            },
            None => VmCaller {
                vm: rest,
                identity: None,
            },
        })
    }

    /// The VM's scale set name.
    pub(crate) fn scale_set(&self) -> &str {
        self.vm.rsplit_once('_').map(|(s, _)| s).unwrap_or(self.vm)
    }
}

/// The identity of VM `vm` a token request names (by `client_id`,
/// `object_id` or `msi_res_id`/`mi_res_id`): `Ok(None)` its scale set's
/// system-assigned identity, `Ok(Some(principal id))` a user-assigned one,
/// `Err` when the VM has no such identity (IMDS's "Identity not found").
fn requested_identity(sim: &Sim, vm: &str, ctx: &Ctx) -> Result<Option<String>, &'static str> {
    let wanted = ["client_id", "object_id", "msi_res_id", "mi_res_id"]
        .iter()
        .find_map(|k| {
            ctx.q(k)
                .map(|v| v.trim_end_matches('/').to_ascii_lowercase())
        });
    let st = lock(&sim.inner.state);
    let set = vm.rsplit_once('_').and_then(|(vmss, _)| st.scale_set(vmss));
    let Some(set) = set else {
        // A VM the simulator never created: any existing identity it names.
        return match wanted {
            None => Ok(None),
            Some(w) => crate::arm::identity::find(&st, &w)
                .or_else(|| crate::arm::identity::by_principal_or_client(&st, &w))
                .and_then(|r| r.body.pointer("/properties/principalId"))
                .and_then(Doc::as_str)
                .map(|p| Some(p.to_string()))
                .ok_or("Identity not found"),
        };
    };
    let kind = set
        .body
        .pointer("/identity/type")
        .and_then(Doc::as_str)
        .unwrap_or("");
    let attached: Vec<(String, &Doc)> = set
        .body
        .pointer("/identity/userAssignedIdentities")
        .and_then(Doc::as_object)
        .into_iter()
        .flatten()
        .map(|(id, v)| (id.to_ascii_lowercase(), v))
        .collect();
    let principal = |v: &Doc| {
        v.get("principalId")
            .and_then(Doc::as_str)
            .map(str::to_string)
    };
    match wanted {
        Some(w) => attached
            .iter()
            .find(|(id, v)| {
                *id == w
                    || [v.get("clientId"), v.get("principalId")]
                        .into_iter()
                        .flatten()
                        .filter_map(Doc::as_str)
                        .any(|x| x.eq_ignore_ascii_case(&w))
            })
            .and_then(|(_, v)| principal(v))
            .map(Some)
            .ok_or("Identity not found"),
        None if kind.contains("SystemAssigned") => Ok(None),
        None if attached.len() == 1 => principal(attached[0].1)
            .map(Some)
            .ok_or("Identity not found"),
        None if attached.is_empty() => Err("Identity not found"),
        None => Err("Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request"),
    }
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
            let principal = match requested_identity(sim, &vm, ctx) {
                Ok(None) => format!("vm:{vm}"),
                Ok(Some(id)) => format!("vm:{vm}#{id}"),
                Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_request", why),
            };
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
