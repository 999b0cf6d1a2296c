//! The Key Vault secrets data plane (api-version 7.4 / 7.5).

use crate::state::{Secret, SecretVersion};
use crate::util::{arm_error, json_response, now_ms, random_hex32, Ctx};
use crate::{lock, Sim};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The recovery level of a vault without purge protection, and with it.
const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
const PROTECTED_RECOVERY_LEVEL: &str = "Recoverable";
/// Soft-deleted secrets are kept this long before their scheduled purge.
const RETENTION_S: i64 = 90 * 24 * 3600;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn not_found(name: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!("A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"),
    )
}

fn bad_param(message: &str) -> Response {
    arm_error(StatusCode::BAD_REQUEST, "BadParameter", message)
}

fn bundle(vault: &str, s: &Secret, v: &SecretVersion, with_value: bool, protected: bool) -> Value {
    let level = if protected {
        PROTECTED_RECOVERY_LEVEL
    } else {
        RECOVERY_LEVEL
    };
    let mut out = json!({
        "id": format!("{vault}/secrets/{}/{}", s.name, v.version),
        "attributes": {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": level,
            "recoverableDays": 90,
        },
        "tags": v.tags,
    });
    if with_value {
        out["value"] = json!(v.value);
    }
    if let Some(ct) = &v.content_type {
        out["contentType"] = json!(ct);
    }
    out
}

fn deleted_bundle(
    vault: &str,
    s: &Secret,
    v: &SecretVersion,
    deleted: i64,
    protected: bool,
) -> Value {
    let mut out = bundle(vault, s, v, false, protected);
    out["recoveryId"] = json!(format!("{vault}/deletedsecrets/{}", s.name));
    out["deletedDate"] = json!(deleted);
    out["scheduledPurgeDate"] = json!(deleted + RETENTION_S);
    out
}

/// The resource group and name of the simulator's one vault, as ARM names
/// it: the scope of Key Vault role assignments (the data plane is served at
/// the simulator's base URL, whatever the name).
pub(crate) const VAULT_RESOURCE_GROUP: &str = "flotilla-sim";
pub(crate) const VAULT_NAME: &str = "flotilla-sim-kv";

/// The ARM id of the simulator's vault.
pub fn keyvault_id() -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{VAULT_RESOURCE_GROUP}/providers/Microsoft.KeyVault/vaults/{VAULT_NAME}",
        crate::SUBSCRIPTION_ID
    )
}

/// Whether `scope` is the simulator's vault or below it (a secret).
pub(crate) fn is_vault_scope(scope: &str) -> bool {
    let vault = keyvault_id().to_ascii_lowercase();
    let scope = scope.trim_end_matches('/').to_ascii_lowercase();
    scope == vault || scope.starts_with(&format!("{vault}/"))
}

/// Whether the vault holds secret `name` (not deleted).
pub(crate) fn secret_exists(st: &crate::state::State, name: &str) -> bool {
    st.secrets
        .get(&name.to_ascii_lowercase())
        .is_some_and(|s| s.deleted.is_none())
}

/// Checks a request of a VM's identity (see [`crate::rbac`]) against the
/// Key Vault data actions its role assignments grant on the vault or on the
/// secret: refused with 403 `Forbidden` (`ForbiddenByRbac`), as a vault with
/// Azure RBAC refuses it.
#[allow(clippy::result_large_err)]
pub(crate) fn authorize(
    sim: &Sim,
    ctx: &Ctx,
    caller: &crate::imds::VmCaller<'_>,
) -> Result<(), Response> {
    const SECRETS: &str = "Microsoft.KeyVault/vaults/secrets";
    let vault = keyvault_id();
    let deleted = ctx.seg_is(0, "deletedsecrets");
    let (action, resource) = match ctx.segs.get(1) {
        None => (format!("{SECRETS}/readMetadata/action"), vault.clone()),
        Some(name) => {
            let versions = ctx.seg_is(2, "versions");
            let verb = match (&ctx.method, deleted) {
                (&Method::GET, true) => "readMetadata/action",
                (&Method::DELETE, true) => "purge/action",
                (&Method::GET, false) if versions => "readMetadata/action",
                (&Method::GET, false) => "getSecret/action",
                (&Method::PUT, false) => "setSecret/action",
                (&Method::DELETE, false) => "delete",
                _ => "update/action",
            };
            (
                format!("{SECRETS}/{verb}"),
                format!("{vault}/secrets/{name}"),
            )
        }
    };
    let st = lock(&sim.inner.state);
    let principal = crate::rbac::principal_of(&st, caller).unwrap_or_default();
    if crate::rbac::holds_data_action(&st, &principal, &resource, &action, |_| false) {
        return Ok(());
    }
    Err(arm_error(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!("Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: oid={principal}\r\nAction: '{action}'\r\nResource: '{}'\r\nAssignment: (not found)\r\nVault: {VAULT_NAME};location=westeurope\r\n", resource.to_ascii_lowercase()),
    ))
}

/// Handles `/secrets/...` and `/deletedsecrets/...`.
pub(crate) fn handle(sim: &Sim, ctx: &Ctx) -> Response {
    match ctx.q("api-version") {
        Some("7.4" | "7.5" | "7.6" | "2025-07-01") => {}
        Some(v) => return bad_param(&format!("The specified version ({v}) is not recognized. Consider using the latest supported version (7.5).")),
        None => return bad_param("The api-version query parameter is missing."),
    }
    let deleted_area = ctx.seg_is(0, "deletedsecrets");
    let name = ctx.segs.get(1).cloned().unwrap_or_default();
    let version = ctx.segs.get(2).cloned();
    if ctx.segs.len() > 3 || (deleted_area && ctx.segs.len() > 2) {
        return arm_error(StatusCode::NOT_FOUND, "NotFound", "No such Key Vault path.");
    }
    if ctx.segs.len() == 1 {
        return list(sim, ctx, deleted_area);
    }
    if !valid_name(&name) {
        return bad_param(&format!("The request URI contains an invalid name: {name}. Secret names may only contain alphanumeric characters and dashes."));
    }
    let key = name.to_ascii_lowercase();
    let vault = ctx.base.clone();
    match (deleted_area, ctx.method.clone(), version) {
        (false, Method::PUT, None) => set(sim, ctx, &name, &key, &vault),
        (false, Method::GET, v) => {
            let st = lock(&sim.inner.state);
            let Some(s) = st.secrets.get(&key).filter(|s| s.deleted.is_none()) else {
                return not_found(&name);
            };
            let found = match v.as_deref() {
                None | Some("") => s.versions.last(),
                Some(ver) => s
                    .versions
                    .iter()
                    .find(|x| x.version.eq_ignore_ascii_case(ver)),
            };
            match found {
                Some(ver) if ver.enabled => json_response(
                    StatusCode::OK,
                    &bundle(&vault, s, ver, true, st.purge_protection),
                ),
                Some(_) => arm_error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                ),
                None => not_found(&name),
            }
        }
        (false, Method::DELETE, None) => {
            let out = {
                let mut st = lock(&sim.inner.state);
                let protected = st.purge_protection;
                let Some(s) = st.secrets.get_mut(&key).filter(|s| s.deleted.is_none()) else {
                    return not_found(&name);
                };
                let now = now_ms() / 1000;
                s.deleted = Some(now);
                let Some(latest) = s.versions.last() else {
                    return not_found(&name);
                };
                deleted_bundle(&vault, s, latest, now, protected)
            };
            sim.persist_now();
            json_response(StatusCode::OK, &out)
        }
        (true, Method::GET, None) => {
            let st = lock(&sim.inner.state);
            match st.secrets.get(&key) {
                Some(s) => match (s.deleted, s.versions.last()) {
                    (Some(d), Some(v)) => json_response(
                        StatusCode::OK,
                        &deleted_bundle(&vault, s, v, d, st.purge_protection),
                    ),
                    _ => deleted_not_found(&name),
                },
                None => deleted_not_found(&name),
            }
        }
        (true, Method::DELETE, None) => {
            let removed = {
                let mut st = lock(&sim.inner.state);
                if st.purge_protection && st.secrets.get(&key).is_some_and(|s| s.deleted.is_some())
                {
                    return arm_error(
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                        "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.",
                    );
                }
                match st.secrets.get(&key) {
                    Some(s) if s.deleted.is_some() => st.secrets.remove(&key).is_some(),
                    _ => false,
                }
            };
            if removed {
                sim.persist_now();
                crate::util::empty(StatusCode::NO_CONTENT)
            } else {
                deleted_not_found(&name)
            }
        }
        _ => arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{} is not supported on {}.", ctx.method, ctx.path),
        ),
    }
}

fn deleted_not_found(name: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!("Deleted Secret not found: {name}"),
    )
}

fn set(sim: &Sim, ctx: &Ctx, name: &str, key: &str, vault: &str) -> Response {
    let body: Value = match serde_json::from_slice(&ctx.body) {
        Ok(v) => v,
        Err(e) => return bad_param(&format!("The request body is not valid JSON: {e}")),
    };
    let Some(value) = body.get("value").and_then(Value::as_str) else {
        return bad_param("Property 'value' is required and must be a string.");
    };
    let tags: BTreeMap<String, String> = match body.get("tags") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(o)) => {
            let mut m = BTreeMap::new();
            for (k, v) in o {
                let Some(s) = v.as_str() else {
                    return bad_param("Tag values must be strings.");
                };
                m.insert(k.clone(), s.to_string());
            }
            m
        }
        Some(_) => return bad_param("Property 'tags' must be an object."),
    };
    let enabled = body
        .pointer("/attributes/enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let content_type = body
        .get("contentType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let now = now_ms() / 1000;
    let out = {
        let mut st = lock(&sim.inner.state);
        let protected = st.purge_protection;
        if st.secrets.get(key).is_some_and(|s| s.deleted.is_some()) {
            return arm_error(
                StatusCode::CONFLICT,
                "Conflict",
                &format!("Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."),
            );
        }
        let s = st.secrets.get_or_insert_with(key.to_string(), || Secret {
            name: name.to_string(),
            vault: vault.to_string(),
            versions: vec![],
            deleted: None,
        });
        s.versions.push(SecretVersion {
            version: random_hex32(),
            value: value.to_string(),
            content_type,
            enabled,
            created: now,
            updated: now,
            tags,
        });
        match s.versions.last() {
            Some(v) => bundle(vault, s, v, true, protected),
            None => json!({}),
        }
    };
    sim.persist_now();
    json_response(StatusCode::OK, &out)
}

fn list(sim: &Sim, ctx: &Ctx, deleted: bool) -> Response {
    if ctx.method != Method::GET {
        return arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Only GET lists secrets.",
        );
    }
    let vault = &ctx.base;
    let st = lock(&sim.inner.state);
    let value: Vec<Value> = st
        .secrets
        .values()
        .filter(|s| s.deleted.is_some() == deleted)
        .filter_map(|s| {
            let v = s.versions.last()?;
            let mut item = match s.deleted {
                Some(d) => deleted_bundle(vault, s, v, d, st.purge_protection),
                None => bundle(vault, s, v, false, st.purge_protection),
            };
            item["id"] = json!(format!(
                "{vault}/{}/{}",
                if deleted { "deletedsecrets" } else { "secrets" },
                s.name
            ));
            Some(item)
        })
        .collect();
    json_response(StatusCode::OK, &json!({"value": value, "nextLink": null}))
}
