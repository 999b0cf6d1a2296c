//! Token issuance (client credentials, App Service managed identity) and bearer-token
//! checks for ARM, Key Vault and Blob.

use crate::dispatch::{
    Area, ARM_AUDIENCE, MONITOR_AUDIENCE, SERVICEBUS_AUDIENCE, STORAGE_AUDIENCE, VAULT_AUDIENCE,
};
use crate::state::TokenInfo;
use crate::util::{arm_error, json_response, now_ms, random_token, set_header, Ctx};
use crate::{lock, Sim, TENANT_ID};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::json;

/// Lifetime of issued tokens, seconds.
const TOKEN_LIFETIME_S: i64 = 3599;

/// Maps a scope (`…/.default`) or resource URI to a known audience.
pub(crate) fn audience_of(scope_or_resource: &str) -> Option<&'static str> {
    let s = scope_or_resource.trim();
    let s = s.strip_suffix("/.default").unwrap_or(s);
    let s = s.trim_end_matches('/');
    [
        ARM_AUDIENCE,
        VAULT_AUDIENCE,
        STORAGE_AUDIENCE,
        SERVICEBUS_AUDIENCE,
        MONITOR_AUDIENCE,
    ]
    .into_iter()
    .find(|a| a.eq_ignore_ascii_case(s))
}

pub(crate) fn issue(sim: &Sim, audience: &str, principal: &str) -> (String, i64) {
    let token = random_token(32);
    let expires = now_ms() / 1000 + TOKEN_LIFETIME_S;
    {
        let mut st = lock(&sim.inner.state);
        if st.tokens.len() > 50_000 {
            let now_s = now_ms() / 1000;
            st.tokens.retain(|_, t| t.expires > now_s);
        }
        st.tokens.insert(
            token.clone(),
            TokenInfo {
                audience: audience.to_string(),
                principal: principal.to_string(),
                expires,
            },
        );
    }
    sim.persist_now();
    (token, expires)
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let mut r = json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": crate::util::rfc3339(now_ms()),
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        }),
    );
    set_header(&mut r, "cache-control", "no-store");
    r
}

/// An injected fault on the client-credentials endpoint: Entra's OAuth error
/// body with the rule's code as `error` (`invalid_client`,
/// `temporarily_unavailable`, ...) and its message as `error_description`.
pub(crate) fn token_fault(status: StatusCode, error: &str, message: &str) -> Response {
    let mut r = json_response(
        status,
        &json!({
            "error": error,
            "error_description": message,
            "error_codes": [],
            "timestamp": crate::util::rfc3339(now_ms()),
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        }),
    );
    set_header(&mut r, "cache-control", "no-store");
    r
}

/// An injected fault on the managed-identity endpoint, in App Service's
/// `{statusCode, message}` shape (which has no place for an error code).
pub(crate) fn msi_fault(status: StatusCode, message: &str) -> Response {
    msi_error(status, message)
}

/// `POST /{tenant}/oauth2/v2.0/token` with a client-credentials form.
pub(crate) fn token_endpoint(sim: &Sim, ctx: &Ctx) -> Response {
    if ctx.method != Method::POST {
        return arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The token endpoint only accepts POST.",
        );
    }
    let tenant = ctx.segs.first().cloned().unwrap_or_default();
    if !tenant.eq_ignore_ascii_case(TENANT_ID) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&ctx.body)
        .into_owned()
        .collect();
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    if field("grant_type") != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type; only client_credentials is supported.",
        );
    }
    let creds = lock(&sim.inner.state).creds.clone();
    if field("client_id") != creds.client_id {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
        );
    }
    if field("client_secret") != creds.client_secret {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    let scope = field("scope");
    let Some(audience) = audience_of(scope) else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            &format!("The provided value for the input parameter 'scope' is not valid: '{scope}'."),
        );
    };
    let (token, _) = issue(sim, audience, &creds.client_id);
    json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_S,
            "ext_expires_in": TOKEN_LIFETIME_S,
            "access_token": token,
        }),
    )
}

fn msi_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"statusCode": status.as_u16(), "message": message}),
    )
}

/// `GET /msi/token?resource=…&api-version=2019-08-01` with `X-IDENTITY-HEADER`.
pub(crate) fn msi_endpoint(sim: &Sim, ctx: &Ctx) -> Response {
    if ctx.method != Method::GET {
        return msi_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "The managed identity endpoint only accepts GET.",
        );
    }
    let creds = lock(&sim.inner.state).creds.clone();
    if ctx.header("x-identity-header") != Some(creds.identity_header.as_str()) {
        return msi_error(
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
        );
    }
    if ctx.q("api-version") != Some("2019-08-01") {
        return msi_error(StatusCode::BAD_REQUEST, "api-version must be 2019-08-01.");
    }
    let resource = ctx.q("resource").unwrap_or("").to_string();
    let Some(audience) = audience_of(&resource) else {
        return msi_error(
            StatusCode::BAD_REQUEST,
            &format!("Unsupported or missing resource '{resource}'."),
        );
    };
    let client_id = ctx
        .q("client_id")
        .map(str::to_string)
        .unwrap_or(creds.msi_client_id);
    let (token, expires) = issue(sim, audience, &client_id);
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "expires_on": expires.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }),
    )
}

/// Checks the bearer token for `audience`; the error is the area's own 401 response.
#[allow(clippy::result_large_err)]
pub(crate) fn authenticate(
    sim: &Sim,
    ctx: &Ctx,
    area: Area,
    audience: &str,
) -> Result<String, Response> {
    let header = ctx.header("authorization").unwrap_or("");
    let token = header
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("bearer "))
        .map(|_| header[7..].trim());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(unauthorized(
            ctx,
            area,
            true,
            "The 'Authorization' header is missing or is not a Bearer token.",
        ));
    };
    let Some(info) = token_info(sim, token) else {
        return Err(unauthorized(
            ctx,
            area,
            false,
            "The access token is invalid.",
        ));
    };
    if info.expires <= now_ms() / 1000 {
        return Err(unauthorized(
            ctx,
            area,
            false,
            "The access token has expired.",
        ));
    }
    if info.audience != audience {
        return Err(unauthorized(
            ctx,
            area,
            false,
            &format!(
                "The access token has audience '{}' but this endpoint requires '{audience}'.",
                info.audience
            ),
        ));
    }
    Ok(info.principal)
}

/// Tokens [`token_info`] remembers at most; past that it starts afresh.
const CHECKED_TOKENS: usize = 10_000;

/// What the simulator issued `token` for (expired or not), or `None` for a
/// token it never issued.
fn token_info(sim: &Sim, token: &str) -> Option<TokenInfo> {
    let known = sim
        .inner
        .checked_tokens
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(token)
        .cloned();
    if known.is_some() {
        return known;
    }
    let info = lock(&sim.inner.state).tokens.get(token).cloned()?;
    let mut checked = sim
        .inner
        .checked_tokens
        .write()
        .unwrap_or_else(|e| e.into_inner());
    if checked.len() >= CHECKED_TOKENS {
        checked.clear();
    }
    checked.insert(token.to_string(), info.clone());
    Some(info)
}

fn unauthorized(ctx: &Ctx, area: Area, missing: bool, message: &str) -> Response {
    let authority = format!("{}/{TENANT_ID}", ctx.base);
    match area {
        Area::KeyVault => {
            let mut r = arm_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                &format!("AKV10000: {message}"),
            );
            set_header(
                &mut r,
                "www-authenticate",
                &format!("Bearer authorization=\"{authority}\", resource=\"{VAULT_AUDIENCE}\""),
            );
            r
        }
        Area::Blob => {
            let code = if missing {
                "NoAuthenticationInformation"
            } else {
                "InvalidAuthenticationInfo"
            };
            let mut r = crate::blob::xml_error(StatusCode::UNAUTHORIZED, code, message);
            set_header(
                &mut r,
                "www-authenticate",
                &format!("Bearer authorization_uri={authority}/oauth2/authorize resource_id={STORAGE_AUDIENCE}"),
            );
            r
        }
        _ => {
            let code = if missing {
                "AuthenticationFailed"
            } else {
                "InvalidAuthenticationToken"
            };
            let mut r = arm_error(StatusCode::UNAUTHORIZED, code, message);
            set_header(
                &mut r,
                "www-authenticate",
                &format!("Bearer authorization_uri=\"{authority}\", error=\"invalid_token\", error_description=\"{message}\""),
            );
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presenting(token: &str) -> Ctx {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        Ctx {
            method: Method::GET,
            path: "/subscriptions".into(),
            segs: vec!["subscriptions".into()],
            query: vec![],
            headers,
            body: Default::default(),
            base: "https://sim.local".into(),
        }
    }

    fn check(sim: &Sim, token: &str) -> Result<String, StatusCode> {
        authenticate(sim, &presenting(token), Area::Arm, ARM_AUDIENCE).map_err(|r| r.status())
    }

    #[tokio::test]
    async fn a_checked_token_is_answered_without_the_state_and_still_expires() {
        let sim = Sim::new(crate::SimConfig::default()).unwrap();
        let (token, _) = issue(&sim, ARM_AUDIENCE, "someone");
        assert_eq!(check(&sim, &token), Ok("someone".into()));
        // Gone from the state, a token already checked is still known: the
        // request did not need the state lock.
        lock(&sim.inner.state).tokens.remove(&token);
        assert_eq!(check(&sim, &token), Ok("someone".into()));
        assert_eq!(check(&sim, "never-issued"), Err(StatusCode::UNAUTHORIZED));

        // A remembered token is refused once it expires, as one read from the state is.
        let stale = "stale-token".to_string();
        let info = TokenInfo {
            audience: ARM_AUDIENCE.into(),
            principal: "someone".into(),
            expires: now_ms() / 1000 - 1,
        };
        lock(&sim.inner.state).tokens.insert(stale.clone(), info);
        assert_eq!(check(&sim, &stale), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(check(&sim, &stale), Err(StatusCode::UNAUTHORIZED));
        // And a token for another audience stays refused.
        let (vault, _) = issue(&sim, VAULT_AUDIENCE, "someone");
        assert_eq!(check(&sim, &vault), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(check(&sim, &vault), Err(StatusCode::UNAUTHORIZED));
    }
}
