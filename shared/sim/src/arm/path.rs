//! Request parsing: which ARM endpoint a path names.

use super::{model, RA_TYPE, RD_TYPE, RG_TYPE};
use crate::util::{arm_error, Ctx};
use crate::SUBSCRIPTION_ID;
use axum::response::Response;
use http::StatusCode;
use model::TypeSpec;

/// A parsed ARM path.
pub(crate) enum ArmPath {
    /// `GET [/subscriptions/{sub}][/resourceGroups/{rg}]/providers/{ns}/{type}`: every
    /// resource of a type.
    TypeList {
        rg: Option<String>,
        spec: &'static TypeSpec,
    },
    /// `GET /subscriptions/{sub}/providers/Microsoft.Compute/skus`.
    Skus,
    /// `GET /subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/usages`.
    Usages(String),
    /// `GET …/resourceGroups/{rg}/providers/Microsoft.Authorization/permissions`.
    Permissions(String),
    Subscription,
    ResourceGroups,
    ResourceGroup(String),
    Resources(Option<String>),
    Operation {
        ns: String,
        loc: String,
        id: String,
        results: bool,
    },
    RoleAssignment {
        scope: String,
        name: String,
    },
    /// A custom role definition (`…/providers/Microsoft.Authorization/roleDefinitions/{guid}`).
    RoleDefinition {
        scope: String,
        name: String,
    },
    Resource {
        rg: String,
        spec: &'static TypeSpec,
        name: String,
        /// The path below the resource: a child collection and name, an action, or a
        /// scale set's `virtualMachines[/{id}[/instanceView]]`.
        sub: Vec<String>,
    },
}

pub(crate) fn not_found_route(ctx: &Ctx) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        &format!(
            "The resource type could not be found for path '{}'.",
            ctx.path
        ),
    )
}

pub(crate) fn parse(ctx: &Ctx) -> Result<ArmPath, Response> {
    let s = &ctx.segs;
    let is = |i: usize, lowercase: &str| ctx.seg_is(i, lowercase);
    if s.len() < 2 || !is(0, "subscriptions") {
        return Err(not_found_route(ctx));
    }
    if !s[1].eq_ignore_ascii_case(SUBSCRIPTION_ID) {
        return Err(arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            &format!("The subscription '{}' could not be found.", s[1]),
        ));
    }
    // Role assignments at any scope.
    for i in 2..s.len() {
        if is(i, "providers")
            && is(i + 1, "microsoft.authorization")
            && is(i + 2, "roleassignments")
            && s.len() == i + 4
        {
            return Ok(ArmPath::RoleAssignment {
                scope: format!("/{}", s[..i].join("/")),
                name: s[i + 3].clone(),
            });
        }
        if is(i, "providers")
            && is(i + 1, "microsoft.authorization")
            && is(i + 2, "roledefinitions")
            && s.len() == i + 4
        {
            return Ok(ArmPath::RoleDefinition {
                scope: format!("/{}", s[..i].join("/")),
                name: s[i + 3].clone(),
            });
        }
    }
    match (s.len(), ctx.seg_lc(2).as_str()) {
        (2, _) => Ok(ArmPath::Subscription),
        (3, "resourcegroups") => Ok(ArmPath::ResourceGroups),
        (5, "providers") if model::spec(&s[3], &s[4]).is_some() => Ok(ArmPath::TypeList {
            rg: None,
            spec: model::spec(&s[3], &s[4]).expect("checked"),
        }),
        (7, "resourcegroups") if is(4, "providers") && model::spec(&s[5], &s[6]).is_some() => {
            Ok(ArmPath::TypeList {
                rg: Some(s[3].clone()),
                spec: model::spec(&s[5], &s[6]).expect("checked"),
            })
        }
        (5, "providers") if is(3, "microsoft.compute") && is(4, "skus") => Ok(ArmPath::Skus),
        (7, "providers") if is(3, "microsoft.compute") && is(4, "locations") && is(6, "usages") => {
            Ok(ArmPath::Usages(s[5].clone()))
        }
        (7, "resourcegroups")
            if is(4, "providers") && is(5, "microsoft.authorization") && is(6, "permissions") =>
        {
            Ok(ArmPath::Permissions(s[3].clone()))
        }
        (3, "resources") => Ok(ArmPath::Resources(None)),
        (4, "resourcegroups") => Ok(ArmPath::ResourceGroup(s[3].clone())),
        (5, "resourcegroups") if is(4, "resources") => Ok(ArmPath::Resources(Some(s[3].clone()))),
        (8, "providers")
            if is(4, "locations") && (is(6, "operations") || is(6, "operationresults")) =>
        {
            Ok(ArmPath::Operation {
                ns: s[3].clone(),
                loc: s[5].clone(),
                id: s[7].clone(),
                results: is(6, "operationresults"),
            })
        }
        (n, "resourcegroups") if (8..=11).contains(&n) && is(4, "providers") => {
            let Some(spec) = model::spec(&s[5], &s[6]) else {
                return Err(arm_error(
                    StatusCode::BAD_REQUEST,
                    "NoRegisteredProviderFound",
                    &format!(
                        "No registered resource provider found for location and resource type '{}/{}'.",
                        s[5], s[6]
                    ),
                ));
            };
            let sub = s[8..].to_vec();
            Ok(ArmPath::Resource {
                rg: s[3].clone(),
                spec,
                name: s[7].clone(),
                sub,
            })
        }
        _ => Err(not_found_route(ctx)),
    }
}

/// The (resource type, name) a request targets, for fault matching.
pub(crate) fn classify(ctx: &Ctx) -> (String, String) {
    match parse(ctx) {
        Ok(ArmPath::Subscription) => ("Microsoft.Resources/subscriptions".into(), String::new()),
        Ok(ArmPath::TypeList { spec, .. }) => (spec.full(), String::new()),
        Ok(ArmPath::Skus) => ("Microsoft.Compute/skus".into(), String::new()),
        Ok(ArmPath::Usages(loc)) => ("Microsoft.Compute/locations/usages".into(), loc),
        Ok(ArmPath::Permissions(rg)) => ("Microsoft.Authorization/permissions".into(), rg),
        Ok(ArmPath::ResourceGroups) => (RG_TYPE.into(), String::new()),
        Ok(ArmPath::ResourceGroup(rg)) => (RG_TYPE.into(), rg),
        Ok(ArmPath::Resources(_)) => ("Microsoft.Resources/resources".into(), String::new()),
        Ok(ArmPath::Operation { ns, id, .. }) => (format!("{ns}/locations/operations"), id),
        Ok(ArmPath::RoleAssignment { name, .. }) => (RA_TYPE.into(), name),
        Ok(ArmPath::RoleDefinition { name, .. }) => (RD_TYPE.into(), name),
        Ok(ArmPath::Resource {
            spec, name, sub, ..
        }) => match sub.as_slice() {
            [child, cname] => (format!("{}/{}", spec.full(), child), cname.clone()),
            [action] if action.eq_ignore_ascii_case("instanceView") => {
                (format!("{}/instanceView", spec.full()), name)
            }
            [vms, id, view] => (format!("{}/{vms}/{view}", spec.full()), id.clone()),
            _ => (spec.full(), name),
        },
        Err(_) => (String::new(), String::new()),
    }
}
