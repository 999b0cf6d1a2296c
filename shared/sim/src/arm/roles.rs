//! Role assignments at any scope, and the permissions the caller has on a resource group.

use super::request::{bad, parse_body};
use super::{method_not_allowed, rg_key, rg_not_found, RA_TYPE, RD_TYPE};
use crate::doc::Doc;
use crate::state::Resource;
use crate::util::{arm_error, empty, json_response, now_ms, rfc3339, Ctx};
use crate::{lock, Sim};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};

/// GET (404 from `not_found` when missing) or DELETE (200 with what was
/// removed, 204 when nothing was there) of an authorization resource.
fn read_or_remove(
    sim: &Sim,
    ctx: &Ctx,
    key: &str,
    not_found: impl FnOnce() -> Response,
) -> Result<Response, Response> {
    if ctx.method == Method::GET {
        let st = lock(&sim.inner.state);
        let r = st.resources.get(key).ok_or_else(not_found)?;
        return Ok(json_response(StatusCode::OK, &r.body));
    }
    let removed = lock(&sim.inner.state).resources.remove(key);
    match removed {
        Some(r) => {
            sim.persist_now();
            Ok(json_response(StatusCode::OK, &r.body))
        }
        None => Ok(empty(StatusCode::NO_CONTENT)),
    }
}

pub(crate) fn role_assignment(
    sim: &Sim,
    ctx: &Ctx,
    scope: &str,
    name: &str,
) -> Result<Response, Response> {
    let id = format!("{scope}/providers/{RA_TYPE}/{name}");
    let key = id.to_ascii_lowercase();
    let not_found = || {
        arm_error(
            StatusCode::NOT_FOUND,
            "RoleAssignmentNotFound",
            &format!("The role assignment '{name}' is not found."),
        )
    };
    match ctx.method {
        Method::GET | Method::DELETE => read_or_remove(sim, ctx, &key, not_found),
        Method::PUT => {
            let mut body = parse_body(ctx)?;
            if uuid::Uuid::parse_str(name).is_err() {
                return Err(bad(
                    "InvalidRoleAssignmentId",
                    &format!("The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."),
                ));
            }
            let p = body
                .get_mut("properties")
                .map_or_else(|| json!({}), Value::take);
            let role = p.get("roleDefinitionId").and_then(Value::as_str);
            let principal = p.get("principalId").and_then(Value::as_str);
            let (Some(role), Some(principal)) = (role, principal) else {
                return Err(bad(
                    "InvalidRequestContent",
                    "properties.roleDefinitionId and properties.principalId are required.",
                ));
            };
            if !role
                .to_ascii_lowercase()
                .contains("/providers/microsoft.authorization/roledefinitions/")
            {
                return Err(bad(
                    "InvalidRoleDefinitionId",
                    &format!("The role definition ID '{role}' is not valid."),
                ));
            }
            if crate::rbac::role_permissions(&lock(&sim.inner.state), role).is_none() {
                return Err(bad(
                    "RoleDefinitionDoesNotExist",
                    &format!(
                        "The specified role definition with ID '{}' does not exist.",
                        role.rsplit('/').next().unwrap_or(role)
                    ),
                ));
            }
            // The simulator's directory holds service principals only (its
            // client, the App Service identity, the scale sets' identities):
            // users and groups are taken on trust.
            let service_principal = p
                .get("principalType")
                .and_then(Value::as_str)
                .is_none_or(|t| t.eq_ignore_ascii_case("ServicePrincipal"));
            if service_principal && !crate::rbac::principal_exists(sim, principal) {
                return Err(bad(
                    "PrincipalNotFound",
                    &format!("Principal {} does not exist in the directory {}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay.", principal.replace('-', ""), crate::TENANT_ID),
                ));
            }
            let segs: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
            let mut st = lock(&sim.inner.state);
            if crate::kv::is_vault_scope(scope) {
                // The simulator's vault exists; a secret scope must name a secret.
                let secret =
                    (segs.len() == 10 && segs[8].eq_ignore_ascii_case("secrets")).then(|| segs[9]);
                let valid = segs.len() == 8
                    || secret.is_some_and(|name| crate::kv::secret_exists(&st, name));
                if !valid {
                    return Err(arm_error(
                        StatusCode::NOT_FOUND,
                        "ResourceNotFound",
                        &format!("The scope '{scope}' does not exist."),
                    ));
                }
            } else if segs.len() >= 4 && segs[2].eq_ignore_ascii_case("resourceGroups") {
                if !st.resources.contains_key(&rg_key(segs[3])) {
                    return Err(rg_not_found(segs[3]));
                }
                if segs.len() >= 8 {
                    let res_key = format!("/{}", segs[..8].join("/")).to_ascii_lowercase();
                    if !st.resources.contains_key(&res_key) {
                        return Err(arm_error(
                            StatusCode::NOT_FOUND,
                            "ResourceNotFound",
                            &format!("The scope '{scope}' does not exist."),
                        ));
                    }
                }
            }
            let role_tail = role
                .to_ascii_lowercase()
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string();
            let at = scope.trim_end_matches('/').to_ascii_lowercase();
            let duplicate = crate::rbac::assignments_to(&st, principal).any(|(scope, r)| {
                scope == at
                    && r.id.to_ascii_lowercase() != key
                    && r.body
                        .pointer("/properties/principalId")
                        .and_then(Doc::as_str)
                        == Some(principal)
                    && r.body
                        .pointer("/properties/roleDefinitionId")
                        .and_then(Doc::as_str)
                        .is_some_and(|d| d.to_ascii_lowercase().ends_with(&role_tail))
            });
            if duplicate {
                return Err(arm_error(
                    StatusCode::CONFLICT,
                    "RoleAssignmentExists",
                    "The role assignment already exists.",
                ));
            }
            let now = rfc3339(now_ms());
            let existing = st.resources.get(&key);
            let existed = existing.is_some();
            let created_on = existing
                .and_then(|e| e.body.pointer("/properties/createdOn").map(Doc::to_value))
                .unwrap_or_else(|| json!(now));
            let mut props = p;
            props["scope"] = json!(scope);
            props["createdOn"] = created_on;
            props["updatedOn"] = json!(now);
            if props.get("principalType").is_none() {
                props["principalType"] = json!("ServicePrincipal");
            }
            let out = json!({
                "id": id,
                "type": RA_TYPE,
                "name": name,
                "properties": props,
            });
            let rg = if segs.len() >= 4 && segs[2].eq_ignore_ascii_case("resourceGroups") {
                segs[3].to_ascii_lowercase()
            } else {
                String::new()
            };
            st.resources.insert(
                key,
                Resource {
                    id,
                    rtype: RA_TYPE.into(),
                    name: name.to_string(),
                    rg,
                    body: Doc::from(&out),
                    state: "Succeeded".into(),
                    op: None,
                    etag: String::new(),
                    keys: vec![],
                    boot: None,
                    created_ms: now_ms(),
                },
            );
            drop(st);
            sim.persist_now();
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(status, &out))
        }
        _ => Err(method_not_allowed(ctx)),
    }
}

/// A custom role definition at `scope`: PUT (GUID name, `roleName` and at
/// least one permission required), GET, DELETE. Role assignments may name it.
pub(crate) fn role_definition(
    sim: &Sim,
    ctx: &Ctx,
    scope: &str,
    name: &str,
) -> Result<Response, Response> {
    let id = format!("{scope}/providers/{RD_TYPE}/{name}");
    let key = id.to_ascii_lowercase();
    let not_found = || {
        arm_error(
            StatusCode::NOT_FOUND,
            "RoleDefinitionDoesNotExist",
            &format!("The specified role definition with ID '{name}' does not exist."),
        )
    };
    match ctx.method {
        Method::GET | Method::DELETE => read_or_remove(sim, ctx, &key, not_found),
        Method::PUT => {
            let body = parse_body(ctx)?;
            if uuid::Uuid::parse_str(name).is_err() {
                return Err(bad(
                    "InvalidRoleDefinitionId",
                    &format!("The role definition ID '{name}' is not valid. The role definition ID must be a GUID."),
                ));
            }
            let p = body.get("properties").cloned().unwrap_or(json!({}));
            let named = p
                .get("roleName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let permitted = p
                .get("permissions")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if !named || !permitted {
                return Err(bad(
                    "InvalidRoleDefinition",
                    "properties.roleName and properties.permissions are required.",
                ));
            }
            let mut props = p.clone();
            props["type"] = json!("CustomRole");
            if props.get("assignableScopes").is_none() {
                props["assignableScopes"] = json!([scope]);
            }
            let out = json!({"id": id, "type": RD_TYPE, "name": name, "properties": props});
            let existed = {
                let mut st = lock(&sim.inner.state);
                st.resources
                    .insert(
                        key,
                        Resource {
                            id,
                            rtype: RD_TYPE.into(),
                            name: name.to_string(),
                            rg: String::new(),
                            body: out.clone().into(),
                            state: "Succeeded".into(),
                            op: None,
                            etag: String::new(),
                            keys: vec![],
                            boot: None,
                            created_ms: now_ms(),
                        },
                    )
                    .is_some()
            };
            sim.persist_now();
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(status, &out))
        }
        _ => Err(method_not_allowed(ctx)),
    }
}

/// `GET …/resourceGroups/{rg}/providers/Microsoft.Authorization/permissions`: the actions
/// the caller may do there (`SimConfig::permissions`, default `*`), in the shape of the
/// official `GetPermissions` example.
pub(crate) fn permissions(sim: &Sim, ctx: &Ctx, rg: &str) -> Result<Response, Response> {
    if ctx.method != Method::GET {
        return Err(method_not_allowed(ctx));
    }
    if !lock(&sim.inner.state).resources.contains_key(&rg_key(rg)) {
        return Err(rg_not_found(rg));
    }
    let cfg = &sim.inner.config.permissions;
    Ok(json_response(
        StatusCode::OK,
        &json!({"value": [{
            "actions": cfg.actions,
            "notActions": cfg.not_actions,
            "dataActions": [],
            "notDataActions": [],
        }]}),
    ))
}
