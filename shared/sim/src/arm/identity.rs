//! Microsoft.ManagedIdentity: user-assigned identities. A PUT is
//! synchronous (200/201 with the resource, as the provider answers) and
//! gives the identity its `principalId`, `clientId` and `tenantId` (kept on
//! update); a DELETE is synchronous too (200, or 204 when it was not there).
//! A scale set may attach only identities that exist (ARM's
//! `FailedIdentityOperation` otherwise); the simulator's directory knows
//! their principals (role assignments to them are accepted, token requests
//! and the init extension's downloads are checked against their roles).

use super::model::{props, Prep, Reject};
use crate::doc::Doc;
use crate::state::{Resource, State};
use serde_json::{json, Value};

/// The type, as ARM names it.
pub(crate) const UAI_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";

/// api-versions of `userAssignedIdentities`, newest first.
pub(crate) const VERSIONS: &[&str] = &[
    "2024-11-30",
    "2023-01-31",
    "2018-11-30",
    "2015-08-31-preview",
];

/// The identity's computed ids: new GUIDs on create, kept on update.
pub(crate) fn prepare(p: &Prep<'_>, body: &mut Value) -> Result<(), Reject> {
    let principal = p.keep("principalId");
    let client = p.keep("clientId");
    let m = props(body);
    m.insert("principalId".into(), principal);
    m.insert("clientId".into(), client);
    m.insert("tenantId".into(), json!(crate::TENANT_ID));
    Ok(())
}

/// The user-assigned identity with ARM id `id` (case-insensitive).
pub(crate) fn find<'a>(st: &'a State, id: &str) -> Option<&'a Resource> {
    st.resources
        .get(&id.trim_end_matches('/').to_ascii_lowercase())
        .filter(|r| r.rtype.eq_ignore_ascii_case(UAI_TYPE))
}

/// The user-assigned identity whose principal (object) id or client id is `id`.
pub(crate) fn by_principal_or_client<'a>(st: &'a State, id: &str) -> Option<&'a Resource> {
    let by_principal = st.resources.indexed(&crate::state::principal_index(id));
    let by_client = st.resources.indexed(&crate::state::client_index(id));
    by_principal
        .chain(by_client)
        .map(|(_, r)| r)
        .find(|r| r.rtype.eq_ignore_ascii_case(UAI_TYPE))
}

/// A scale set's `identity.userAssignedIdentities`: every key must name an
/// existing identity (else ARM's `FailedIdentityOperation`); each value gets
/// that identity's `principalId` and `clientId`, as ARM returns them.
pub(crate) fn attach(st: &State, resource: &str, identity: &mut Value) -> Result<(), Reject> {
    let Some(map) = identity
        .get_mut("userAssignedIdentities")
        .and_then(Value::as_object_mut)
    else {
        return Ok(());
    };
    for (id, value) in map.iter_mut() {
        let Some(uai) = find(st, id) else {
            return Err((
                "FailedIdentityOperation",
                format!(
                    "Identity operation for resource '{resource}' failed with error 'Failed to perform resource identity operation. Status: 'BadRequest'. Response: '{{\"error\":{{\"code\":\"BadRequest\",\"message\":\"Resource '{id}' was not found.\"}}}}'.'."
                ),
            ));
        };
        let ids = |k: &str| {
            uai.body
                .pointer(&format!("/properties/{k}"))
                .map(Doc::to_value)
        };
        *value = json!({
            "principalId": ids("principalId").unwrap_or(Value::Null),
            "clientId": ids("clientId").unwrap_or(Value::Null),
        });
    }
    Ok(())
}
