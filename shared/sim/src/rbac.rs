//! Role-based access for the identities the simulator issues VM tokens to
//! (IMDS, see [`crate::imds::VmCaller`]): a request of such a token is
//! allowed only when a role assignment of the identity it was issued for (its
//! scale set's system-assigned identity, or the attached user-assigned
//! identity it named), at the request's resource or above, grants the
//! request's action — ARM actions (refused with 403 `AuthorizationFailed`),
//! and the data actions of Key Vault secrets and of blob reads (refused in
//! each service's words). The simulator's own client (flotilla's deployment
//! identity) is not restricted here; its permissions are
//! `SimConfig::permissions`.

use crate::arm::{RA_TYPE, RD_TYPE};
use crate::doc::Doc;
use crate::state::State;
use crate::util::{arm_error, glob_match, Ctx};
use crate::{lock, Sim};
use axum::response::Response;
use http::{Method, StatusCode};

/// A built-in role the simulator knows: its GUID, actions and not-actions.
pub(crate) struct BuiltInRole {
    pub id: &'static str,
    pub actions: &'static [&'static str],
    pub not_actions: &'static [&'static str],
    pub data_actions: &'static [&'static str],
}

/// The built-in roles the simulator knows (their control-plane actions as Azure lists them,
/// limited to the providers the simulator serves).
pub(crate) const BUILT_IN_ROLES: &[BuiltInRole] = &[
    // Owner
    BuiltInRole {
        id: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
    },
    // Contributor
    BuiltInRole {
        id: "b24988ac-6180-42a0-ab88-20f7382dd24c",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
        data_actions: &[],
    },
    // Reader
    BuiltInRole {
        id: "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
    },
    // Virtual Machine Contributor
    BuiltInRole {
        id: "9980e02c-c2be-4d73-94e8-173b1dc7cf3c",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Compute/availabilitySets/*",
            "Microsoft.Compute/locations/*",
            "Microsoft.Compute/virtualMachines/*",
            "Microsoft.Compute/virtualMachineScaleSets/*",
            "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
            "Microsoft.Network/loadBalancers/read",
            "Microsoft.Network/networkInterfaces/*",
            "Microsoft.Network/networkSecurityGroups/join/action",
            "Microsoft.Network/networkSecurityGroups/read",
            "Microsoft.Network/publicIPAddresses/join/action",
            "Microsoft.Network/publicIPAddresses/read",
            "Microsoft.Network/virtualNetworks/read",
            "Microsoft.Network/virtualNetworks/subnets/join/action",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ],
        not_actions: &[],
        data_actions: &[],
    },
    // Key Vault Secrets User
    BuiltInRole {
        id: "4633458b-17de-408a-b874-0445c86b69e6",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
        ],
    },
    // Key Vault Secrets Officer
    BuiltInRole {
        id: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.KeyVault/checkNameAvailability/read",
            "Microsoft.KeyVault/deletedVaults/read",
            "Microsoft.KeyVault/locations/*/read",
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/operations/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.KeyVault/vaults/secrets/*"],
    },
    // Storage Blob Data Reader
    BuiltInRole {
        id: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        actions: &[
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        not_actions: &[],
        data_actions: &["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"],
    },
];

/// The built-in role a role definition id (`…/roleDefinitions/{guid}`) names.
pub(crate) fn built_in(role_definition_id: &str) -> Option<&'static BuiltInRole> {
    let guid = role_definition_id.rsplit('/').next()?;
    BUILT_IN_ROLES
        .iter()
        .find(|r| r.id.eq_ignore_ascii_case(guid))
}

/// The authorization action of an ARM request: `{namespace}/{types…}/read|write|delete`,
/// `…/{sub}/read` for a GET of a sub-path (`instanceView`), `…/{action}/action` for a POST.
pub(crate) fn action_of(method: &Method, path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (ty, sub) = match segs
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))
        .filter(|&i| i + 1 < segs.len())
    {
        Some(i) => {
            let rest = &segs[i + 2..];
            let mut ty = segs[i + 1].to_string();
            for pair in rest.chunks(2) {
                ty.push('/');
                ty.push_str(pair[0]);
            }
            // An odd count ends with a sub-path or action name (`instanceView`, `listKeys`).
            let sub = (rest.len() % 2 == 1).then(|| {
                ty.truncate(ty.rfind('/').unwrap_or(ty.len()));
                rest[rest.len() - 1].to_string()
            });
            (ty, sub)
        }
        None if segs.len() >= 4 => (
            "Microsoft.Resources/subscriptions/resourceGroups".into(),
            None,
        ),
        None => ("Microsoft.Resources/subscriptions".into(), None),
    };
    match (method, sub) {
        (&Method::POST, Some(action)) => format!("{ty}/{action}/action"),
        (&Method::GET, Some(sub)) => format!("{ty}/{sub}/read"),
        (&Method::GET, None) => format!("{ty}/read"),
        (&Method::DELETE, _) => format!("{ty}/delete"),
        _ => format!("{ty}/write"),
    }
}

/// The actions and not-actions of a role definition id: a built-in role, or
/// a custom role defined in the simulator (by its GUID, at any scope).
pub(crate) fn role_permissions(
    st: &State,
    role_definition_id: &str,
) -> Option<(Vec<String>, Vec<String>)> {
    if let Some(r) = built_in(role_definition_id) {
        let own = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        return Some((own(r.actions), own(r.not_actions)));
    }
    let guid = role_definition_id.rsplit('/').next()?;
    let custom = st
        .of_type(RD_TYPE)
        .find(|r| r.name.eq_ignore_ascii_case(guid))?;
    let list = |field: &str| -> Vec<String> {
        custom
            .body
            .pointer("/properties/permissions")
            .and_then(Doc::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get(field).and_then(Doc::as_array))
            .flatten()
            .filter_map(Doc::as_str)
            .map(str::to_string)
            .collect()
    };
    Some((list("actions"), list("notActions")))
}

/// Whether the role `role_definition_id` (built-in, or a custom role in the
/// subscription) grants data action `action`.
fn grants_data_action(st: &State, role_definition_id: &str, action: &str) -> bool {
    if let Some(r) = built_in(role_definition_id) {
        return r.data_actions.iter().any(|a| glob_match(a, action));
    }
    let Some(guid) = role_definition_id.rsplit('/').next() else {
        return false;
    };
    st.of_type(RD_TYPE)
        .find(|r| r.name.eq_ignore_ascii_case(guid))
        .into_iter()
        .filter_map(|r| r.body.pointer("/properties/permissions"))
        .filter_map(Doc::as_array)
        .flatten()
        .filter_map(|p| p.get("dataActions").and_then(Doc::as_array))
        .flatten()
        .filter_map(Doc::as_str)
        .any(|a| glob_match(a, action))
}

/// The blob read action, as role definitions and conditions name it.
pub(crate) const BLOB_READ: &str =
    "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
const BLOB_PATH_ATTRIBUTE: &str =
    "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path]";

/// What an ABAC condition allows, in the one form the simulator evaluates:
/// `((!(ActionMatches{'<blob read>'})) OR (@Resource[…blobs:path]
/// StringStartsWith '<prefix>'))` — a blob read only under `<prefix>`. Any
/// other condition is not understood (`None`), and grants nothing.
pub(crate) fn blob_read_prefix(condition: &str) -> Option<String> {
    let squeezed: String = condition.split_whitespace().collect::<Vec<_>>().join(" ");
    let rest = squeezed.strip_prefix(&format!(
        "((!(ActionMatches{{'{BLOB_READ}'}})) OR ({BLOB_PATH_ATTRIBUTE} StringStartsWith '"
    ))?;
    let prefix = rest.strip_suffix("'))")?;
    (!prefix.contains('\'')).then(|| prefix.to_string())
}

/// Whether `principal` may read blob `blob` of `container` in storage
/// account `account_id` (an ARM id): a role assignment of it whose scope is
/// the container or above grants the blob read data action, and its
/// condition, if any, is one the simulator understands and allows the
/// blob's path. Returns why not, in Azure Storage's words.
pub(crate) fn may_read_blob(
    st: &State,
    principal: &str,
    account_id: &str,
    container: &str,
    blob: &str,
) -> Result<(), String> {
    let path = format!("{account_id}/blobServices/default/containers/{container}/blobs/{blob}");
    let allowed = holds_data_action(st, principal, &path, BLOB_READ, |condition| {
        blob_read_prefix(condition).is_some_and(|prefix| blob.starts_with(&prefix))
    });
    if allowed {
        Ok(())
    } else {
        Err("403 AuthorizationPermissionMismatch (This request is not authorized to perform this operation using this permission.)".into())
    }
}

/// Whether `principal` holds a role assignment at `path` or above whose role
/// grants data action `action` and whose condition, if it has one, is a
/// version 2.0 condition that `condition_allows`.
pub(crate) fn holds_data_action(
    st: &State,
    principal: &str,
    path: &str,
    action: &str,
    condition_allows: impl Fn(&str) -> bool,
) -> bool {
    // The principal's index entry already matched its id (any casing).
    assignments_covering(st, principal, path).any(|r| {
        let properties = r.body.get("properties");
        let p = |k: &str| properties.and_then(|p| p.get(k)).and_then(Doc::as_str);
        p("roleDefinitionId").is_some_and(|d| grants_data_action(st, d, action))
            && match p("condition") {
                None => true,
                Some(c) => p("conditionVersion") == Some("2.0") && condition_allows(c),
            }
    })
}

/// The principal id a VM's token stands for: the user-assigned identity it
/// was issued for, or its scale set's system-assigned identity.
pub(crate) fn principal_of(st: &State, caller: &crate::imds::VmCaller<'_>) -> Option<String> {
    match caller.identity {
        Some(id) => Some(id.to_string()),
        None => crate::arm::compute::principal_of_scale_set(st, caller.scale_set()),
    }
}

/// Whether `scope` (lowercase, without a trailing `/`; `""` is the root)
/// is `path` or one of its ancestors.
fn covers(scope: &str, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path.len() >= scope.len()
        && path.as_bytes()[..scope.len()].eq_ignore_ascii_case(scope.as_bytes())
        && (path.len() == scope.len() || path.as_bytes()[scope.len()] == b'/')
}

/// The role assignments made to `principal` (any casing), each with its
/// scope (lowercase: the part of its key before the assignment's own
/// segments), found by the principal's index entry rather than by scope,
/// where every job's assignment on a shared container would be.
pub(crate) fn assignments_to<'a>(
    st: &'a State,
    principal: &str,
) -> impl Iterator<Item = (&'a str, &'a crate::state::Resource)> + 'a {
    let marker = format!("/providers/{}/", RA_TYPE.to_ascii_lowercase());
    st.resources
        .indexed(&crate::state::assignee_index(principal))
        .filter_map(move |(key, r)| Some((&key[..key.rfind(&marker)?], r)))
}

/// The role assignments made to `principal` at `path` or above.
fn assignments_covering<'a>(
    st: &'a State,
    principal: &str,
    path: &'a str,
) -> impl Iterator<Item = &'a crate::state::Resource> + 'a {
    assignments_to(st, principal)
        .filter(move |(scope, _)| covers(scope, path))
        .map(|(_, r)| r)
}

/// Whether a role assignment's role grants `action`.
fn grants(st: &State, role_definition_id: &str, action: &str) -> bool {
    role_permissions(st, role_definition_id).is_some_and(|(actions, not_actions)| {
        actions.iter().any(|a| glob_match(a, action))
            && !not_actions.iter().any(|a| glob_match(a, action))
    })
}

/// Reading the status of a long-running operation is allowed to whoever
/// started it; ARM does not check a role for it.
fn is_operation_status(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("/operations/") || lower.contains("/operationresults/")
}

/// Checks an ARM request of a VM's identity against its role assignments.
#[allow(clippy::result_large_err)]
pub(crate) fn authorize(
    sim: &Sim,
    ctx: &Ctx,
    caller: &crate::imds::VmCaller<'_>,
) -> Result<(), Response> {
    if is_operation_status(&ctx.path) {
        return Ok(());
    }
    let action = action_of(&ctx.method, &ctx.path);
    let st = lock(&sim.inner.state);
    let principal = principal_of(&st, caller);
    let allowed = principal.as_deref().is_some_and(|principal| {
        assignments_covering(&st, principal, &ctx.path).any(|r| {
            r.body
                .pointer("/properties/principalId")
                .and_then(Doc::as_str)
                == Some(principal)
                && r.body
                    .pointer("/properties/roleDefinitionId")
                    .and_then(Doc::as_str)
                    .is_some_and(|d| grants(&st, d, &action))
        })
    });
    if allowed {
        return Ok(());
    }
    let who = principal.unwrap_or_else(|| caller.vm.to_string());
    Err(arm_error(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        &format!(
            "The client '{who}' with object id '{who}' does not have authorization to perform action '{action}' over scope '{}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            ctx.path
        ),
    ))
}

/// Whether `principal_id` is a service principal the simulator knows: its
/// own client, the App Service identity, a scale set's system-assigned
/// identity or a user-assigned identity.
pub(crate) fn principal_exists(sim: &Sim, principal_id: &str) -> bool {
    let st = lock(&sim.inner.state);
    principal_id.eq_ignore_ascii_case(&st.creds.client_id)
        || principal_id.eq_ignore_ascii_case(&st.creds.msi_client_id)
        || st
            .resources
            .indexed(&crate::state::principal_index(principal_id))
            .next()
            .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMSS: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/w";

    #[test]
    fn actions_are_named_as_arm_names_them() {
        assert_eq!(
            action_of(&Method::PATCH, VMSS),
            "Microsoft.Compute/virtualMachineScaleSets/write"
        );
        assert_eq!(
            action_of(&Method::GET, &format!("{VMSS}/instanceView")),
            "Microsoft.Compute/virtualMachineScaleSets/instanceView/read"
        );
        assert_eq!(
            action_of(&Method::GET, &format!("{VMSS}/virtualMachines/0")),
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read"
        );
        assert_eq!(
            action_of(&Method::DELETE, VMSS),
            "Microsoft.Compute/virtualMachineScaleSets/delete"
        );
        assert_eq!(
            action_of(
                &Method::PUT,
                &format!("{VMSS}/providers/Microsoft.Authorization/roleAssignments/g")
            ),
            "Microsoft.Authorization/roleAssignments/write"
        );
        assert_eq!(
            action_of(&Method::GET, "/subscriptions/s/resourceGroups/rg"),
            "Microsoft.Resources/subscriptions/resourceGroups/read"
        );
    }

    #[test]
    fn a_scope_covers_itself_and_what_is_below_only() {
        assert!(covers(VMSS, VMSS));
        assert!(covers(VMSS, &format!("{VMSS}/instanceView")));
        assert!(!covers(VMSS, &format!("{VMSS}2")));
        assert!(covers("/subscriptions/s/resourceGroups/rg", VMSS));
        assert!(covers(
            "/subscriptions/s/resourcegroups/rg",
            &format!("{VMSS}/")
        ));
        assert!(!covers("/subscriptions/s/resourcegroups/r", VMSS));
        assert!(covers("", VMSS), "the root scope covers everything");
    }

    const ACCOUNT: &str =
        "/subscriptions/s/resourceGroups/st/providers/Microsoft.Storage/storageAccounts/acct";
    const READER: &str = "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";

    /// The condition flotilla's `keys` gives a job's node identity.
    fn job_condition(prefix: &str) -> String {
        format!("((!(ActionMatches{{'{BLOB_READ}'}})) OR (@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path] StringStartsWith '{prefix}'))")
    }

    fn assign(
        st: &mut State,
        name: &str,
        principal: &str,
        scope: &str,
        role: &str,
        condition: Option<(&str, &str)>,
    ) {
        let mut props = serde_json::json!({
            "principalId": principal, "scope": scope, "roleDefinitionId": role,
        });
        if let Some((version, c)) = condition {
            props["condition"] = serde_json::json!(c);
            props["conditionVersion"] = serde_json::json!(version);
        }
        let id = format!("{scope}/providers/{RA_TYPE}/{name}");
        st.resources.insert(
            id.to_ascii_lowercase(),
            crate::state::Resource::settled(
                &id,
                RA_TYPE,
                serde_json::json!({ "properties": props }),
            ),
        );
    }

    #[test]
    fn a_principals_assignments_are_found_at_any_scope_above_until_removed() {
        let mut st = State::fresh();
        assign(&mut st, "a", "P-A", ACCOUNT, READER, None);
        let scopes: Vec<&str> = assignments_to(&st, "p-A").map(|(s, _)| s).collect();
        assert_eq!(scopes, [ACCOUNT.to_ascii_lowercase()]);
        assert!(
            may_read_blob(&st, "p-a", ACCOUNT, "any", "x/init.sh").is_ok(),
            "the account's scope covers its containers, whatever the principal's casing"
        );
        st.resources
            .remove(&format!("{ACCOUNT}/providers/{RA_TYPE}/a").to_ascii_lowercase());
        assert!(assignments_to(&st, "p-a").next().is_none());
        assert!(may_read_blob(&st, "p-a", ACCOUNT, "any", "x/init.sh").is_err());
    }

    #[test]
    fn another_jobs_identity_cannot_read_this_jobs_blobs() {
        let mut st = State::fresh();
        let container = format!("{ACCOUNT}/blobServices/default/containers/staging");
        assign(
            &mut st,
            "a",
            "p-a",
            &container,
            READER,
            Some(("2.0", &job_condition("job-a/"))),
        );
        assign(
            &mut st,
            "b",
            "p-b",
            &container,
            READER,
            Some(("2.0", &job_condition("job-b/"))),
        );
        let read = |p: &str, blob: &str| may_read_blob(&st, p, ACCOUNT, "staging", blob);
        assert!(read("p-a", "job-a/init.sh").is_ok());
        assert!(read("p-a", "job-a/init-general.sh").is_ok());
        assert!(read("p-b", "job-b/init.sh").is_ok());
        // Each job's identity reads its own prefix only.
        let refused = read("p-b", "job-a/init.sh").unwrap_err();
        assert!(
            refused.contains("AuthorizationPermissionMismatch"),
            "{refused}"
        );
        assert!(read("p-a", "job-b/init.sh").is_err());
        assert!(
            read("p-a", "job-a2/init.sh").is_err(),
            "a prefix ends at its slash"
        );
        assert!(read("p-a", "other/job-a/init.sh").is_err());
        // Not in another container or account, nor for an unknown principal.
        assert!(may_read_blob(&st, "p-a", ACCOUNT, "other", "job-a/init.sh").is_err());
        let elsewhere = ACCOUNT.replace("/acct", "/acct2");
        assert!(may_read_blob(&st, "p-a", &elsewhere, "staging", "job-a/init.sh").is_err());
        assert!(read("p-c", "job-a/init.sh").is_err());
    }

    #[test]
    fn only_the_understood_condition_on_a_data_role_grants_a_read() {
        let container = format!("{ACCOUNT}/blobServices/default/containers/staging");
        let read = |role: &str, scope: &str, condition: Option<(&str, &str)>| {
            let mut st = State::fresh();
            assign(&mut st, "x", "p", scope, role, condition);
            may_read_blob(&st, "p", ACCOUNT, "staging", "job-a/init.sh").is_ok()
        };
        let c = job_condition("job-a/");
        assert!(
            read(READER, &container, None),
            "no condition: the whole container"
        );
        assert!(
            read(READER, ACCOUNT, Some(("2.0", &c))),
            "a scope above the container"
        );
        assert!(
            !read(READER, ACCOUNT, Some(("1.0", &c))),
            "an unknown condition version"
        );
        let like = c.replace("StringStartsWith", "StringLike");
        assert!(
            !read(READER, &container, Some(("2.0", &like))),
            "another operator"
        );
        let spaced = c.replace(" OR ", "\n   OR\n   ");
        assert!(
            read(READER, &container, Some(("2.0", &spaced))),
            "whitespace is free"
        );
        let reader = "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7";
        assert!(!read(reader, &container, None), "Reader has no data action");
        assert_eq!(blob_read_prefix(&c).as_deref(), Some("job-a/"));
        assert_eq!(blob_read_prefix("true"), None);
    }

    #[test]
    fn roles_grant_their_actions_and_not_others() {
        let st = State::fresh();
        let grants = |d: &str, a: &str| grants(&st, d, a);
        let vmc = "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/9980e02c-c2be-4d73-94e8-173b1dc7cf3c";
        assert!(grants(
            vmc,
            "Microsoft.Compute/virtualMachineScaleSets/write"
        ));
        assert!(!grants(vmc, "Microsoft.Network/virtualNetworks/write"));
        let contributor = "/providers/Microsoft.Authorization/roleDefinitions/b24988ac-6180-42a0-ab88-20f7382dd24c";
        assert!(grants(
            contributor,
            "Microsoft.Network/virtualNetworks/write"
        ));
        assert!(!grants(
            contributor,
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(!grants(
            ".../roleDefinitions/unknown",
            "Microsoft.Compute/virtualMachineScaleSets/read"
        ));
    }
}
