//! The ARM surface, by concern:
//! - [`path`] parses a request path into an endpoint; [`request`] reads the api-version and
//!   the body (media type, size, JSON) and makes error answers;
//! - [`rules`] holds ARM-wide rules (tags, locations, zones) and [`regions`] the known
//!   regions; [`refs`] the reference rules;
//! - one module per provider holds that provider's rules and computed fields:
//!   [`network`], [`compute`], [`storage`], [`containerservice`];
//! - [`resources`] serves PUT/GET/PATCH/DELETE of a resource, [`children`] child resources
//!   and actions, [`groups`] resource groups, [`roles`] role assignments and permissions,
//!   [`query`] listings, SKUs and usages, [`lro`] long-running operations.
//!
//! Handlers return `Result<Response, Response>`: the error is the finished ARM error
//! response, produced once per request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod children;
pub(crate) mod compute;
pub(crate) mod containerservice;
mod groups;
pub(crate) mod identity;
mod lro;
pub(crate) use crate::model;
pub(crate) mod network;
mod path;
mod query;
pub(crate) mod refs;
pub(crate) mod regions;
mod request;
mod resources;
mod roles;
pub(crate) mod rules;
pub(crate) mod storage;

pub(crate) use lro::settle;
pub(crate) use path::classify;

use crate::util::{arm_error, json_response, Ctx};
use crate::{lock, Sim, SUBSCRIPTION_ID};
use axum::response::Response;
use http::StatusCode;
use path::ArmPath;
use request::check_version;
use serde_json::json;

pub(crate) const RG_TYPE: &str = "Microsoft.Resources/resourceGroups";
pub(crate) const RA_TYPE: &str = "Microsoft.Authorization/roleAssignments";
/// Virtual machine scale sets.
pub(crate) const VMSS_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets";
pub(crate) const NSG_TYPE: &str = "Microsoft.Network/networkSecurityGroups";
pub(crate) const RD_TYPE: &str = "Microsoft.Authorization/roleDefinitions";

/// Lowercase state key of a resource group.
pub(crate) fn rg_key(rg: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION_ID}/resourcegroups/{rg}").to_ascii_lowercase()
}

/// Canonical id of a resource group.
pub(crate) fn rg_id(rg: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{rg}")
}

/// 404 `ResourceGroupNotFound`.
pub(crate) fn rg_not_found(rg: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceGroupNotFound",
        &format!("Resource group '{rg}' could not be found."),
    )
}

/// 404 `ResourceNotFound` for a resource of `spec`.
pub(crate) fn resource_not_found(spec: &model::TypeSpec, name: &str, rg: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource '{}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            spec.full()
        ),
    )
}

/// 405 for a method the endpoint does not serve.
pub(crate) fn method_not_allowed(ctx: &Ctx) -> Response {
    arm_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!(
            "The method '{}' is not allowed for '{}'.",
            ctx.method, ctx.path
        ),
    )
}

/// Settles due operations and persists what changed.
fn settle_and_persist(sim: &Sim) {
    let changed = {
        let mut st = lock(&sim.inner.state);
        settle(&mut st, sim.lro_ms() as i64)
    };
    if changed {
        sim.persist_now();
    }
}

/// The body's `location`, if the body is JSON (for api-version error messages).
fn body_location(ctx: &Ctx) -> Option<String> {
    /// Only the member this needs: the rest of a body is skipped, not built.
    #[derive(serde::Deserialize)]
    struct Located<'a> {
        #[serde(borrow)]
        location: Option<std::borrow::Cow<'a, str>>,
    }
    if ctx.body.is_empty() {
        return None;
    }
    serde_json::from_slice::<Located<'_>>(&ctx.body)
        .ok()?
        .location
        .map(|l| l.into_owned())
}

/// Handles one authenticated, unthrottled ARM request.
pub(crate) fn handle(sim: &Sim, ctx: &Ctx, fault: Option<(u16, String, String)>) -> Response {
    let path = match path::parse(ctx) {
        Ok(p) => p,
        Err(r) => return r,
    };
    settle_and_persist(sim);
    let versions = model::RESOURCES_VERSIONS;
    let result = match path {
        ArmPath::Subscription => check_version(ctx, versions, RG_TYPE, None).map(|_| {
            json_response(
                StatusCode::OK,
                &json!({
                    "id": format!("/subscriptions/{SUBSCRIPTION_ID}"),
                    "subscriptionId": SUBSCRIPTION_ID,
                    "tenantId": crate::TENANT_ID,
                    "displayName": "flotilla simulator",
                    "state": "Enabled",
                    "subscriptionPolicies": {
                        "locationPlacementId": "Public_2014-09-01",
                        "quotaId": "PayAsYouGo_2014-09-01",
                        "spendingLimit": "Off",
                    },
                    "authorizationSource": "RoleBased",
                    "managedByTenants": [],
                    "tags": {},
                }),
            )
        }),
        ArmPath::ResourceGroups => check_version(ctx, versions, RG_TYPE, None)
            .and_then(|_| query::list(sim, ctx, None, true)),
        ArmPath::Resources(rg) => check_version(ctx, versions, RG_TYPE, None)
            .and_then(|_| query::list(sim, ctx, rg, false)),
        ArmPath::ResourceGroup(rg) => check_version(ctx, versions, RG_TYPE, None)
            .and_then(|v| groups::resource_group(sim, ctx, &rg, &v, fault)),
        ArmPath::TypeList { rg, spec } => check_version(ctx, spec.versions, &spec.full(), None)
            .and_then(|_| query::list_type(sim, ctx, rg.as_deref(), spec)),
        ArmPath::Skus => check_version(ctx, model::SKUS_VERSIONS, "Microsoft.Compute/skus", None)
            .and_then(|_| query::skus(ctx)),
        ArmPath::Usages(loc) => check_version(
            ctx,
            model::COMPUTE_VERSIONS,
            "Microsoft.Compute/locations/usages",
            Some(&loc),
        )
        .and_then(|_| query::usages(sim, ctx, &loc)),
        ArmPath::Permissions(rg) => check_version(
            ctx,
            model::AUTHORIZATION_VERSIONS,
            "Microsoft.Authorization/permissions",
            None,
        )
        .and_then(|_| roles::permissions(sim, ctx, &rg)),
        ArmPath::Operation {
            ns,
            loc,
            id,
            results,
        } => check_version(ctx, &[], "operations", None)
            .and_then(|v| lro::operation(sim, ctx, &ns, &loc, &id, results, &v)),
        ArmPath::RoleAssignment { scope, name } => {
            check_version(ctx, model::AUTHORIZATION_VERSIONS, RA_TYPE, None)
                .and_then(|_| roles::role_assignment(sim, ctx, &scope, &name))
        }
        ArmPath::RoleDefinition { scope, name } => {
            check_version(ctx, model::AUTHORIZATION_VERSIONS, RD_TYPE, None)
                .and_then(|_| roles::role_definition(sim, ctx, &scope, &name))
        }
        ArmPath::Resource {
            rg,
            spec,
            name,
            sub,
        } => check_version(
            ctx,
            spec.versions,
            &spec.full(),
            body_location(ctx).as_deref(),
        )
        .and_then(|v| resources::resource(sim, ctx, &rg, spec, &name, sub, &v, fault)),
    };
    result.unwrap_or_else(|r| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_body(body: &str) -> Ctx {
        Ctx {
            method: http::Method::PUT,
            path: "/".into(),
            segs: vec![],
            query: vec![],
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            base: "https://sim.local".into(),
        }
    }

    #[test]
    fn a_body_s_location_is_read_without_the_rest() {
        let big = r#"{"properties":{"a":[1,2,{"b":"c"}]},"location":"west\u0065urope","tags":{}}"#;
        assert_eq!(
            body_location(&with_body(big)).as_deref(),
            Some("westeurope")
        );
        for none in ["", "not json", r#"{"properties":{}}"#, r#"{"location":3}"#] {
            assert_eq!(body_location(&with_body(none)), None, "{none}");
        }
    }
}
