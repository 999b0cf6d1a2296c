//! Who is calling, and whether they may touch a job.
//!
//! Behind App Service Authentication (Easy Auth, which `infra/` turns on with
//! Entra ID) the platform authenticates every request and forwards the
//! caller in request headers, which the Functions host passes on inside
//! `Data.req.Headers`; App Service strips these headers from what a client
//! sends, so behind it they can be trusted:
//! - `X-MS-CLIENT-PRINCIPAL-ID`: the caller's principal (object) id;
//! - `X-MS-CLIENT-PRINCIPAL-NAME`, `X-MS-CLIENT-PRINCIPAL-IDP`: its name and
//!   identity provider;
//! - `X-MS-CLIENT-PRINCIPAL`: base64 JSON `{auth_typ, claims: [{typ, val}],
//!   name_typ, role_typ}`; the claims whose `typ` is `role_typ` (or `roles`)
//!   are the caller's app roles.
//!
//! The rule ([`may_access`]): a job belongs to the principal that submitted
//! it (`saga.owner`); only its owner, or a caller holding the admin app role
//! ([`AuthPolicy::admin_role`], default `Flotilla.Admin`), may read, scale or
//! delete it. Anyone else is told the job does not exist (404).
//!
//! `FLOTILLA_AUTH` says what a request without a caller is: `required` (set
//! by `infra/`) refuses it with 401; `off` (the default: `flotilla up`, Core
//! Tools, tests) treats it as the local operator, who may do anything, like
//! the CLI. The headers can be set by hand in either mode, and a request
//! that carries them is held to the rule.

use super::envelope::HttpRequest;
use super::problem::{Kind, Problem};
use base64::Engine as _;
use flotilla_core::saga::Saga;
use serde_json::Value;

/// The caller's principal (object) id.
pub const PRINCIPAL_ID: &str = "X-MS-CLIENT-PRINCIPAL-ID";
/// The caller's human-readable name (UPN, e-mail, app name).
pub const PRINCIPAL_NAME: &str = "X-MS-CLIENT-PRINCIPAL-NAME";
/// The identity provider (`aad`).
pub const PRINCIPAL_IDP: &str = "X-MS-CLIENT-PRINCIPAL-IDP";
/// Base64 JSON of the caller's claims.
pub const PRINCIPAL: &str = "X-MS-CLIENT-PRINCIPAL";
/// The app role that may touch every job, unless FLOTILLA_ADMIN_ROLE names another.
pub const DEFAULT_ADMIN_ROLE: &str = "Flotilla.Admin";

/// Claim types Entra uses for the object id and for app roles (after App
/// Service's claim mapping, and as in a v2 token).
const OID_CLAIMS: [&str; 2] = [
    "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "oid",
];
const ROLE_CLAIMS: [&str; 2] = [
    "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
    "roles",
];
/// Longest header value read (a principal with many group claims is a few KiB).
const MAX_PRINCIPAL: usize = 64 * 1024;

/// Whether a request must name its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// No authentication in front (local runs, tests): a request without a
    /// caller is the local operator.
    Off,
    /// App Service Authentication in front: a request without a caller is 401.
    Required,
}

/// The access settings (`FLOTILLA_AUTH`, `FLOTILLA_ADMIN_ROLE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthPolicy {
    pub mode: AuthMode,
    /// The app role whose holders may touch every job.
    pub admin_role: String,
}

impl Default for AuthPolicy {
    fn default() -> AuthPolicy {
        AuthPolicy {
            mode: AuthMode::Off,
            admin_role: DEFAULT_ADMIN_ROLE.into(),
        }
    }
}

impl AuthPolicy {
    /// `FLOTILLA_AUTH` (`off` default, or `required`) and `FLOTILLA_ADMIN_ROLE`;
    /// a malformed value is an error naming the setting.
    pub fn from_settings() -> Result<AuthPolicy, crate::error::Error> {
        let mode = match flotilla_core::settings::get("FLOTILLA_AUTH") {
            None => AuthMode::Off,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "off" => AuthMode::Off,
                "required" => AuthMode::Required,
                _ => {
                    return Err(crate::error::Error::Setting {
                        name: "FLOTILLA_AUTH".into(),
                        why: format!(
                            "must be `off` or `required` (got '{}')",
                            super::truncate(&v, 40)
                        ),
                    })
                }
            },
        };
        let admin_role = match flotilla_core::settings::get("FLOTILLA_ADMIN_ROLE") {
            None => DEFAULT_ADMIN_ROLE.to_string(),
            Some(v) if is_role_name(v.trim()) => v.trim().to_string(),
            Some(v) => {
                return Err(crate::error::Error::Setting {
                    name: "FLOTILLA_ADMIN_ROLE".into(),
                    why: format!(
                        "must be an app role value: 1-120 visible ASCII characters without spaces (got '{}')",
                        super::truncate(&v, 40)
                    ),
                })
            }
        };
        Ok(AuthPolicy { mode, admin_role })
    }
}

fn is_role_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 120 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// An authenticated caller, as App Service Authentication forwarded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The principal (object) id; a job's owner is this.
    pub principal_id: String,
    pub name: Option<String>,
    pub idp: Option<String>,
    /// The app roles in its token.
    pub roles: Vec<String>,
}

impl Caller {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether this caller is the principal `id` (ids compare ignoring case: GUIDs).
    pub fn is(&self, id: &str) -> bool {
        self.principal_id.eq_ignore_ascii_case(id)
    }
}

fn bad_header(header: &str, why: impl std::fmt::Display) -> Problem {
    Problem::new(Kind::InvalidRequest, format!("{header}: {why}")).field(header)
}

/// A header value that must be 1–`max` visible characters (no control characters).
fn plain(req: &HttpRequest, header: &str, max: usize) -> Result<Option<String>, Problem> {
    let Some(v) = req.header(header) else {
        return Ok(None);
    };
    let v = v.trim();
    if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(bad_header(
            header,
            format!("must be 1-{max} characters without control characters"),
        ));
    }
    Ok(Some(v.to_string()))
}

/// The decoded `X-MS-CLIENT-PRINCIPAL`: its object id claim and its roles.
fn principal(value: &str) -> Result<(Option<String>, Vec<String>), Problem> {
    if value.len() > MAX_PRINCIPAL {
        return Err(bad_header(
            PRINCIPAL,
            format!("longer than {MAX_PRINCIPAL} bytes"),
        ));
    }
    let trimmed = value.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| bad_header(PRINCIPAL, "not base64"))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|_| bad_header(PRINCIPAL, "not base64 JSON"))?;
    let claims = v
        .get("claims")
        .and_then(Value::as_array)
        .ok_or_else(|| bad_header(PRINCIPAL, "has no `claims` array"))?;
    let role_typ = v.get("role_typ").and_then(Value::as_str);
    let mut oid = None;
    let mut roles = vec![];
    for c in claims {
        let (Some(typ), Some(val)) = (
            c.get("typ").and_then(Value::as_str),
            c.get("val").and_then(Value::as_str),
        ) else {
            return Err(bad_header(
                PRINCIPAL,
                "every claim must be {\"typ\": string, \"val\": string}",
            ));
        };
        if Some(typ) == role_typ || ROLE_CLAIMS.contains(&typ) {
            if !roles.iter().any(|r| r == val) {
                roles.push(val.to_string());
            }
        } else if OID_CLAIMS.contains(&typ) && oid.is_none() {
            oid = Some(val.to_string());
        }
    }
    Ok((oid, roles))
}

/// The caller the request names, `None` when it names none.
///
/// # Errors
/// 400 naming the header when a header is malformed (`X-MS-CLIENT-PRINCIPAL`
/// not base64 JSON with a `claims` array; an id, name or provider that is
/// empty, too long or holds control characters), or when a name, provider or
/// claims header comes without a principal id.
pub fn caller(req: &HttpRequest) -> Result<Option<Caller>, Problem> {
    let id = plain(req, PRINCIPAL_ID, 128)?;
    let name = plain(req, PRINCIPAL_NAME, 256)?;
    let idp = plain(req, PRINCIPAL_IDP, 64)?;
    let (oid, roles) = match req.header(PRINCIPAL) {
        Some(v) => principal(v)?,
        None => (None, vec![]),
    };
    let principal_id = match (id, oid) {
        (Some(id), _) => id,
        (None, Some(oid)) => oid,
        (None, None) if name.is_some() || idp.is_some() || req.header(PRINCIPAL).is_some() => {
            return Err(bad_header(
                PRINCIPAL_ID,
                "missing: the caller has a name, provider or claims but no principal id",
            ))
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(Caller {
        principal_id,
        name,
        idp,
        roles,
    }))
}

/// The caller of a request under `policy`: `None` is the local operator
/// (only with `FLOTILLA_AUTH=off`).
///
/// # Errors
/// 400 for a malformed header (see [`caller`]); 401 when authentication is
/// required and the request names no caller.
pub fn authenticate(policy: &AuthPolicy, req: &HttpRequest) -> Result<Option<Caller>, Problem> {
    let found = caller(req)?;
    if found.is_none() && policy.mode == AuthMode::Required {
        return Err(Problem::new(
            Kind::Unauthorized,
            format!(
                "this app requires an authenticated caller ({PRINCIPAL_ID}); sign in with Entra ID"
            ),
        ));
    }
    Ok(found)
}

/// Whether `caller` may read, scale or delete the job of `saga`: the local
/// operator (no caller; only reachable with `FLOTILLA_AUTH=off`), the job's
/// owner, or a holder of the admin app role.
pub fn may_access(policy: &AuthPolicy, caller: Option<&Caller>, saga: &Saga) -> bool {
    let Some(caller) = caller else {
        return policy.mode == AuthMode::Off;
    };
    if caller.has_role(&policy.admin_role) {
        return true;
    }
    if saga.owner.as_deref().is_some_and(|owner| caller.is(owner)) {
        return true;
    }
    false
}

/// What a request does with a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `status` and the pages.
    Read,
    /// `scale`: also allowed to the job's own cluster identity (the
    /// master's identity scaling its own pools), for that job only.
    Scale,
    /// `delete`, `pool-add`, `pool-remove`.
    Manage,
}

/// Whether `caller` may do `action` with the job of `saga`: what
/// [`may_access`] allows, and `scale` for the job's own cluster identity.
pub fn may(policy: &AuthPolicy, caller: Option<&Caller>, saga: &Saga, action: Action) -> bool {
    may_access(policy, caller, saga)
        || (action == Action::Scale
            && caller.is_some_and(|c| saga.is_cluster_identity(&c.principal_id)))
}

/// The idempotency key as the job id is derived from it: a caller's key is
/// scoped to its principal, so two callers' keys never name the same job.
pub fn scoped_key(caller: Option<&Caller>, key: Option<&str>) -> Option<String> {
    let key = key?;
    Some(match caller {
        Some(c) => format!("{}/{key}", c.principal_id.to_ascii_lowercase()),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::spec::ClusterSpec;
    use serde_json::json;

    fn req(headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::STANDARD.encode(v.to_string())
    }

    /// An `X-MS-CLIENT-PRINCIPAL` as App Service writes it for an Entra caller.
    fn entra_principal(oid: &str, roles: &[&str]) -> String {
        let mut claims = vec![
            json!({"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid}),
            json!({"typ": "name", "val": "Ada"}),
        ];
        for r in roles {
            claims.push(json!({"typ": "roles", "val": r}));
        }
        b64(&json!({
            "auth_typ": "aad",
            "claims": claims,
            "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
            "role_typ": "roles",
        }))
    }

    #[test]
    fn the_forwarded_headers_give_the_caller_with_its_roles() {
        let p = entra_principal("OID-1", &["Flotilla.Admin", "Reader", "Reader"]);
        let c = caller(&req(&[
            (PRINCIPAL_ID, "11111111-aaaa-bbbb-cccc-000000000001"),
            (PRINCIPAL_NAME, "ada@contoso.com"),
            (PRINCIPAL_IDP, "aad"),
            (PRINCIPAL, &p),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.principal_id, "11111111-aaaa-bbbb-cccc-000000000001");
        assert_eq!(c.name.as_deref(), Some("ada@contoso.com"));
        assert_eq!(c.idp.as_deref(), Some("aad"));
        assert_eq!(c.roles, vec!["Flotilla.Admin", "Reader"]);
        // Without the id header, the object id claim names the principal.
        let c = caller(&req(&[(PRINCIPAL, &p)])).unwrap().unwrap();
        assert_eq!(c.principal_id, "OID-1");
        // The role claim type the principal itself names counts too.
        let custom = b64(&json!({"claims": [{"typ": "r", "val": "X"}], "role_typ": "r"}));
        let c = caller(&req(&[(PRINCIPAL_ID, "p"), (PRINCIPAL, &custom)]))
            .unwrap()
            .unwrap();
        assert_eq!(c.roles, vec!["X"]);
        // No headers at all: no caller.
        assert_eq!(caller(&req(&[])).unwrap(), None);
    }

    #[test]
    fn a_malformed_header_is_a_400_naming_it() {
        let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
            (vec![(PRINCIPAL, "!!not base64!!".into())], PRINCIPAL),
            (vec![(PRINCIPAL, b64(&json!("just a string")))], PRINCIPAL),
            (
                vec![(PRINCIPAL, b64(&json!({"claims": [{"typ": 1}]})))],
                PRINCIPAL,
            ),
            (
                vec![(
                    PRINCIPAL,
                    base64::engine::general_purpose::STANDARD.encode("{"),
                )],
                PRINCIPAL,
            ),
            (vec![(PRINCIPAL_ID, "".into())], PRINCIPAL_ID),
            (vec![(PRINCIPAL_ID, "x".repeat(129))], PRINCIPAL_ID),
            (vec![(PRINCIPAL_ID, "a\u{7}b".into())], PRINCIPAL_ID),
            (vec![(PRINCIPAL_NAME, "ada".into())], PRINCIPAL_ID),
            (vec![(PRINCIPAL, b64(&json!({"claims": []})))], PRINCIPAL_ID),
        ];
        for (headers, field) in cases {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let p = caller(&req(&h)).expect_err(&format!("{headers:?}"));
            assert_eq!(p.kind.status(), 400, "{headers:?}");
            assert_eq!(p.field.as_deref(), Some(field), "{headers:?}");
            assert!(p.detail.starts_with(field), "{}", p.detail);
        }
    }

    #[test]
    fn required_auth_refuses_a_request_without_a_caller() {
        let required = AuthPolicy {
            mode: AuthMode::Required,
            ..AuthPolicy::default()
        };
        let p = authenticate(&required, &req(&[])).unwrap_err();
        assert_eq!(p.kind.status(), 401);
        assert!(authenticate(&AuthPolicy::default(), &req(&[]))
            .unwrap()
            .is_none());
        assert!(authenticate(&required, &req(&[(PRINCIPAL_ID, "p")]))
            .unwrap()
            .is_some());
    }

    fn who(id: &str, roles: &[&str]) -> Caller {
        Caller {
            principal_id: id.into(),
            name: None,
            idp: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn only_the_owner_or_an_admin_may_touch_a_job() {
        let off = AuthPolicy::default();
        let required = AuthPolicy {
            mode: AuthMode::Required,
            ..AuthPolicy::default()
        };
        let mut saga = Saga::new(
            "demo-abc123".into(),
            ClusterSpec::example(),
            time::OffsetDateTime::UNIX_EPOCH,
        );
        saga.owner = Some("AAAA-1".into());
        for policy in [&off, &required] {
            assert!(
                may_access(policy, Some(&who("aaaa-1", &[])), &saga),
                "owner, any case"
            );
            assert!(
                !may_access(policy, Some(&who("bbbb-2", &[])), &saga),
                "someone else"
            );
            assert!(!may_access(
                policy,
                Some(&who("bbbb-2", &["Reader"])),
                &saga
            ));
            assert!(may_access(
                policy,
                Some(&who("bbbb-2", &["Flotilla.Admin"])),
                &saga
            ));
        }
        // The local operator only where authentication is off.
        assert!(may_access(&off, None, &saga));
        assert!(!may_access(&required, None, &saga));
        // A job nobody owns (submitted without auth, or from the queue): admins only.
        saga.owner = None;
        assert!(!may_access(&required, Some(&who("aaaa-1", &[])), &saga));
        assert!(may_access(
            &required,
            Some(&who("x", &["Flotilla.Admin"])),
            &saga
        ));
        // Another admin role name.
        let custom = AuthPolicy {
            admin_role: "Ops".into(),
            ..required.clone()
        };
        assert!(!may_access(
            &custom,
            Some(&who("x", &["Flotilla.Admin"])),
            &saga
        ));
        assert!(may_access(&custom, Some(&who("x", &["Ops"])), &saga));
    }

    #[test]
    fn idempotency_keys_are_scoped_to_the_caller() {
        let a = who("AAAA", &[]);
        let b = who("bbbb", &[]);
        assert_eq!(scoped_key(Some(&a), Some("k")).as_deref(), Some("aaaa/k"));
        assert_ne!(
            scoped_key(Some(&a), Some("k")),
            scoped_key(Some(&b), Some("k"))
        );
        assert_eq!(scoped_key(None, Some("k")).as_deref(), Some("k"));
        assert_eq!(scoped_key(Some(&a), None), None);
    }
}
