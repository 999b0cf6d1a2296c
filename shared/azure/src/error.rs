//! One error type for every Azure call: it carries the ARM error code and says
//! whether trying again later can help.

use std::time::Duration;

/// Whether a failure is worth another attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Retry {
    /// Throttling, 5xx, timeouts, conflicts with an operation in progress.
    Retryable,
    /// Quota, SKU, invalid input, authorization: trying again gives the same answer.
    Terminal,
}

/// A failed Azure call. `message` comes from the service's error body or from
/// the transport; it never contains request headers or bodies, so no secret.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AzureError {
    /// HTTP status, when the service answered.
    pub status: Option<u16>,
    /// The ARM / Key Vault / Storage error code (`SkuNotAvailable`, `TooManyRequests`, ...).
    pub code: String,
    pub message: String,
    pub retry: Retry,
    /// The service's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

/// Error codes that stay the same however often the call is repeated.
const TERMINAL_CODES: &[&str] = &[
    "SkuNotAvailable",
    "QuotaExceeded",
    "OperationNotAllowed",
    "ResourceQuotaExceeded",
    "InvalidParameter",
    "InvalidResourceReference",
    "InvalidResourceName",
    "InvalidRequestContent",
    "AuthorizationFailed",
    "AuthorizationPermissionMismatch",
    "RequestDisallowedByPolicy",
    "ResourceGroupNotFound",
    "SubnetIsFull",
    "PublicIPCountLimitReached",
    "NodeInitFailed",
];

/// Error codes that mean "later": capacity, throttling, operations in flight.
const RETRYABLE_CODES: &[&str] = &[
    "TooManyRequests",
    "RetryableErrorDueToAnotherOperation",
    "AnotherOperationInProgress",
    "Conflict",
    "AllocationFailed",
    "InternalServerError",
    "ServiceUnavailable",
    "GatewayTimeout",
    "InUseSubnetCannotBeDeleted",
    "InUseNetworkSecurityGroupCannotBeDeleted",
    "PublicIPAddressInUse",
    "LoadBalancerInUseByVirtualMachineScaleSet",
    // A role assignment for an identity created moments ago: Entra has not
    // replicated the new principal to ARM yet.
    "PrincipalNotFound",
];

impl AzureError {
    /// Classifies a service answer by its code first, then by its status.
    pub fn from_service(
        status: u16,
        code: &str,
        message: &str,
        retry_after: Option<Duration>,
    ) -> Self {
        let retry = if TERMINAL_CODES.contains(&code) {
            Retry::Terminal
        } else if RETRYABLE_CODES.contains(&code) || status == 429 || status == 408 || status >= 500
        {
            Retry::Retryable
        } else {
            Retry::Terminal
        };
        AzureError {
            status: Some(status),
            code: code.to_string(),
            message: message.to_string(),
            retry,
            retry_after,
        }
    }

    /// A failure before any answer arrived (connection refused, timeout): retryable.
    pub fn transport(message: impl Into<String>) -> Self {
        AzureError {
            status: None,
            code: "TransportError".into(),
            message: message.into(),
            retry: Retry::Retryable,
            retry_after: None,
        }
    }

    /// A failure decided on this side (bad configuration, unparseable answer).
    pub fn terminal(code: &str, message: impl Into<String>) -> Self {
        AzureError {
            status: None,
            code: code.into(),
            message: message.into(),
            retry: Retry::Terminal,
            retry_after: None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.retry == Retry::Retryable
    }

    /// True for 404-style "it is not there" answers.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

impl From<azure_core::Error> for AzureError {
    fn from(e: azure_core::Error) -> Self {
        use azure_core::error::ErrorKind;
        // A token failure keeps its own verdict whatever the SDK wrapped it in.
        if let Some(failure) = CredentialFailure::find(&e) {
            return failure.clone().into();
        }
        match e.kind() {
            ErrorKind::HttpResponse {
                status, error_code, ..
            } => {
                let status = u16::from(*status);
                let code = error_code
                    .clone()
                    .unwrap_or_else(|| format!("Http{status}"));
                AzureError::from_service(status, &code, &e.to_string(), None)
            }
            ErrorKind::Io => AzureError::transport(e.to_string()),
            ErrorKind::Credential => CredentialFailure::classify(&e, None).into(),
            _ => AzureError::transport(e.to_string()),
        }
    }
}

/// Code of a token failure that may go away: the token endpoint answered 5xx,
/// 408 or 429, could not be reached, timed out, or answered something that is
/// not a token response.
pub const CREDENTIAL_UNAVAILABLE: &str = "CredentialUnavailable";
/// Code of a definitive refusal: the endpoint rejected the client, secret,
/// grant, scope or identity (`invalid_client`, 400/401/403, ...), or the
/// credential is misconfigured. Trying again gives the same answer.
pub const CREDENTIAL_REFUSED: &str = "CredentialRefused";

/// Which credential asked for the token (names the endpoint in messages, and
/// an Azure CLI answer is never a flaky network reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// Entra ID's client-credentials endpoint (`ClientSecretCredential`).
    ClientSecret,
    /// The App Service / IMDS managed-identity endpoint.
    ManagedIdentity,
    /// `az account get-access-token`.
    AzureCli,
}

impl TokenSource {
    fn endpoint(source: Option<TokenSource>) -> &'static str {
        match source {
            Some(TokenSource::ManagedIdentity) => "managed-identity endpoint",
            Some(TokenSource::AzureCli) => "Azure CLI",
            _ => "token endpoint",
        }
    }
}

/// OAuth `error` values (RFC 6749 §5.2, Entra ID) that refuse the request for good.
const REFUSING_OAUTH_ERRORS: &[&str] = &[
    "invalid_client",
    "unauthorized_client",
    "invalid_grant",
    "invalid_request",
    "invalid_scope",
    "invalid_resource",
    "unsupported_grant_type",
    "access_denied",
    "consent_required",
    "interaction_required",
];

/// OAuth `error` values that mean "later".
const TRANSIENT_OAUTH_ERRORS: &[&str] = &["temporarily_unavailable", "server_error"];

/// Longest part of a service's error description that goes into a message.
const MAX_DESCRIPTION: usize = 200;

/// Why a credential produced no token, decided once from the structured parts
/// of the SDK's error (HTTP status, error kind, the OAuth body's `error`
/// field, `Retry-After`), never from its wording. The message says which way
/// it was classified and why; it holds no secret: request headers, form
/// bodies and tokens are never read, and of a response body only the
/// `error`, `error_codes` and the first line of `error_description`/`message`
/// are kept.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct CredentialFailure {
    /// The token endpoint's HTTP status, when it answered.
    pub status: Option<u16>,
    /// The OAuth `error` field of its answer (`invalid_client`, ...).
    pub oauth_error: Option<String>,
    pub retry: Retry,
    /// The endpoint's `Retry-After`, or for a timeout the time already waited.
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl CredentialFailure {
    /// The failure carried somewhere in `e`'s source chain, if a
    /// [`crate::config`] credential produced it.
    pub fn find(e: &azure_core::Error) -> Option<&CredentialFailure> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = next {
            if let Some(f) = err.downcast_ref::<CredentialFailure>() {
                return Some(f);
            }
            next = err.source();
        }
        None
    }

    /// Classifies an `azure_identity` error. `azure_identity` 1.0 wraps every
    /// `get_token` failure in an `ErrorKind::Credential` error whose source is
    /// what happened: an `HttpResponse` error with the status and the raw
    /// response (client secret: Entra's OAuth error body; managed identity:
    /// `{statusCode, message}` or an OAuth body), an `Io`/`Connection` error
    /// from the transport, a `DataConversion` error when the answer was not
    /// JSON (Entra's error path parses the body before it looks at the
    /// status, so a gateway's HTML 503 arrives this way, without its status),
    /// or a plain `Credential` message for configuration problems (missing
    /// setting, bad tenant id, `az` not logged in).
    pub fn classify(e: &azure_core::Error, source: Option<TokenSource>) -> CredentialFailure {
        use azure_core::error::ErrorKind;
        let endpoint = TokenSource::endpoint(source);
        let chain = sdk_chain(e);
        if let Some((status, raw)) = chain.iter().find_map(|err| match err.kind() {
            ErrorKind::HttpResponse {
                status,
                raw_response,
                ..
            } => Some((u16::from(*status), raw_response.as_deref())),
            _ => None,
        }) {
            return Self::from_answer(endpoint, status, raw);
        }
        if let Some(err) = chain
            .iter()
            .find(|err| matches!(err.kind(), ErrorKind::Io | ErrorKind::Connection))
        {
            return Self::unavailable(
                None,
                None,
                None,
                format!(
                    "{endpoint} could not be reached ({}); will retry",
                    cause_chain(err)
                ),
            );
        }
        let innermost = chain.last().copied().unwrap_or(e);
        if source != Some(TokenSource::AzureCli)
            && chain
                .iter()
                .any(|err| matches!(err.kind(), ErrorKind::DataConversion))
        {
            return Self::unavailable(
                None,
                None,
                None,
                format!(
                    "{endpoint} answered something that is not a token response ({}); will retry",
                    first_line(&innermost.to_string())
                ),
            );
        }
        Self::refused(
            None,
            None,
            format!(
                "the credential cannot get a token: {}",
                first_line(&innermost.to_string())
            ),
        )
    }

    /// `get_token` did not finish within `after` (see `RetryPolicy::token_timeout`).
    /// Retryable, with `after` as its `Retry-After`: an endpoint this slow is
    /// not asked again inside the same invocation.
    pub fn timed_out(source: Option<TokenSource>, after: Duration) -> CredentialFailure {
        Self::unavailable(
            None,
            None,
            Some(after),
            format!(
                "{} did not answer within {} ms; will retry",
                TokenSource::endpoint(source),
                after.as_millis()
            ),
        )
    }

    /// A non-2xx answer: the OAuth `error` decides when it is a known one,
    /// otherwise the status (408, 429 and 5xx are transient).
    fn from_answer(
        endpoint: &str,
        status: u16,
        raw: Option<&azure_core::http::RawResponse>,
    ) -> CredentialFailure {
        let body: serde_json::Value = raw
            .and_then(|r| serde_json::from_slice(r.body().as_ref()).ok())
            .unwrap_or(serde_json::Value::Null);
        let oauth_error = body
            .get("error")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        let description = body
            .get("error_description")
            .or_else(|| body.get("message"))
            .and_then(serde_json::Value::as_str)
            .map(first_line)
            .filter(|d| !d.is_empty());
        let retry_after = raw.and_then(|r| retry_after(r.headers()));
        let detail = description.map(|d| format!(": {d}")).unwrap_or_default();
        match oauth_error.as_deref() {
            Some(err) if REFUSING_OAUTH_ERRORS.contains(&err) => Self::refused(
                Some(status),
                oauth_error.clone(),
                format!("{endpoint} refused the client: {err} (HTTP {status}){detail}"),
            ),
            Some(err) if TRANSIENT_OAUTH_ERRORS.contains(&err) => Self::unavailable(
                Some(status),
                oauth_error.clone(),
                retry_after,
                format!("{endpoint} answered {status} {err}; will retry{detail}"),
            ),
            _ if status == 408 || status == 429 || status >= 500 => Self::unavailable(
                Some(status),
                oauth_error.clone(),
                retry_after,
                format!("{endpoint} answered {status}; will retry{detail}"),
            ),
            _ => Self::refused(
                Some(status),
                oauth_error.clone(),
                format!(
                    "{endpoint} refused the request: HTTP {status}{}{detail}",
                    oauth_error
                        .as_deref()
                        .map(|e| format!(" {e}"))
                        .unwrap_or_default()
                ),
            ),
        }
    }

    fn unavailable(
        status: Option<u16>,
        oauth_error: Option<String>,
        retry_after: Option<Duration>,
        message: String,
    ) -> CredentialFailure {
        CredentialFailure {
            status,
            oauth_error,
            retry: Retry::Retryable,
            retry_after,
            message,
        }
    }

    fn refused(status: Option<u16>, oauth_error: Option<String>, message: String) -> Self {
        CredentialFailure {
            status,
            oauth_error,
            retry: Retry::Terminal,
            retry_after: None,
            message,
        }
    }

    /// `CredentialUnavailable` or `CredentialRefused`.
    pub fn code(&self) -> &'static str {
        match self.retry {
            Retry::Retryable => CREDENTIAL_UNAVAILABLE,
            Retry::Terminal => CREDENTIAL_REFUSED,
        }
    }
}

impl From<CredentialFailure> for AzureError {
    /// The token endpoint's status stays in the message, not in `status`:
    /// that field describes the resource the call was about (a token
    /// endpoint's 404 must never read as "the resource is gone").
    fn from(f: CredentialFailure) -> Self {
        AzureError {
            status: None,
            code: f.code().to_string(),
            message: f.message,
            retry: f.retry,
            retry_after: f.retry_after,
        }
    }
}

/// `e` and every `azure_core::Error` it wraps, outermost first.
fn sdk_chain(e: &azure_core::Error) -> Vec<&azure_core::Error> {
    let mut out = vec![e];
    let mut current = e;
    while let Some(inner) = current.downcast_ref::<azure_core::Error>() {
        out.push(inner);
        current = inner;
    }
    out
}

/// An error and its causes on one line (transport errors say what failed in
/// their sources: "connection refused", "operation timed out").
fn cause_chain(e: &azure_core::Error) -> String {
    let mut parts = vec![first_line(&e.to_string())];
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        let text = first_line(&err.to_string());
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    truncate(&parts.join(": "), 2 * MAX_DESCRIPTION)
}

/// The first line of `text`, at most [`MAX_DESCRIPTION`] characters.
fn first_line(text: &str) -> String {
    truncate(
        text.trim().lines().next().unwrap_or("").trim(),
        MAX_DESCRIPTION,
    )
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// `Retry-After` (seconds) or `retry-after-ms` of an answer.
fn retry_after(headers: &azure_core::http::headers::Headers) -> Option<Duration> {
    let get = |name: &'static str| crate::transport::header(headers, name);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    get("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_code_before_status() {
        assert!(!AzureError::from_service(409, "SkuNotAvailable", "", None).is_retryable());
        assert!(
            AzureError::from_service(409, "AnotherOperationInProgress", "", None).is_retryable()
        );
        assert!(AzureError::from_service(429, "Whatever", "", None).is_retryable());
        assert!(AzureError::from_service(503, "Whatever", "", None).is_retryable());
        assert!(!AzureError::from_service(400, "Whatever", "", None).is_retryable());
        assert!(!AzureError::from_service(500, "QuotaExceeded", "", None).is_retryable());
    }

    use azure_core::error::ErrorKind;
    use azure_core::http::headers::Headers;
    use azure_core::http::{RawResponse, StatusCode};

    /// What azure_identity's Entra and managed-identity paths return for a
    /// non-2xx answer: a `Credential` error wrapping an `HttpResponse` error
    /// that holds the raw response.
    fn answered(status: u16, headers: &[(&'static str, &str)], body: &str) -> azure_core::Error {
        let mut h = Headers::new();
        for (k, v) in headers {
            h.insert(*k, v.to_string());
        }
        let status = StatusCode::from(status);
        let raw = RawResponse::from_bytes(status, h, body.as_bytes().to_vec());
        let inner = azure_core::Error::new(
            ErrorKind::HttpResponse {
                status,
                error_code: None,
                raw_response: Some(Box::new(raw)),
            },
            "the description azure_identity put here",
        );
        wrapped(inner)
    }

    fn wrapped(inner: azure_core::Error) -> azure_core::Error {
        azure_core::Error::with_error(
            ErrorKind::Credential,
            inner,
            "ClientSecretCredential authentication failed.",
        )
    }

    fn classify(e: &azure_core::Error) -> CredentialFailure {
        CredentialFailure::classify(e, Some(TokenSource::ClientSecret))
    }

    const SECRET_IN_BODY: &str = "s3cr3t-value-never-shown";

    #[test]
    fn transient_token_answers_are_retryable_with_their_retry_after() {
        let f = classify(&answered(503, &[("retry-after", "7")], ""));
        assert_eq!(f.retry, Retry::Retryable);
        assert_eq!(f.code(), CREDENTIAL_UNAVAILABLE);
        assert_eq!(f.status, Some(503));
        assert_eq!(f.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(f.message, "token endpoint answered 503; will retry");

        for status in [408, 429, 500, 502, 504] {
            let f = classify(&answered(status, &[], "{}"));
            assert_eq!(f.retry, Retry::Retryable, "{status}");
        }
        let f = classify(&answered(429, &[("retry-after-ms", "1500")], "{}"));
        assert_eq!(f.retry_after, Some(Duration::from_millis(1500)));

        // Entra's own "later" error code.
        let f = classify(&answered(
            503,
            &[],
            r#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: busy\r\nTrace ID: 1"}"#,
        ));
        assert_eq!(f.retry, Retry::Retryable);
        assert_eq!(f.oauth_error.as_deref(), Some("temporarily_unavailable"));
        assert_eq!(
            f.message,
            "token endpoint answered 503 temporarily_unavailable; will retry: AADSTS50196: busy"
        );
    }

    #[test]
    fn oauth_refusals_are_terminal_whatever_the_status() {
        for (status, error) in [
            (400, "invalid_client"),
            (401, "invalid_client"),
            (400, "unauthorized_client"),
            (400, "invalid_grant"),
            (400, "invalid_scope"),
            (500, "invalid_client"),
        ] {
            let body = format!(
                r#"{{"error":"{error}","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x","error_codes":[7000215],"correlation_id":"{SECRET_IN_BODY}"}}"#
            );
            let f = classify(&answered(status, &[("retry-after", "5")], &body));
            assert_eq!(f.retry, Retry::Terminal, "{status} {error}");
            assert_eq!(f.code(), CREDENTIAL_REFUSED);
            assert_eq!(f.retry_after, None);
            assert_eq!(f.oauth_error.as_deref(), Some(error));
            assert_eq!(
                f.message,
                format!(
                    "token endpoint refused the client: {error} (HTTP {status}): AADSTS7000215: Invalid client secret provided."
                )
            );
            assert!(!f.message.contains(SECRET_IN_BODY));
        }
    }

    #[test]
    fn managed_identity_answers_are_classified_by_status() {
        let mi = |e: &azure_core::Error| {
            CredentialFailure::classify(e, Some(TokenSource::ManagedIdentity))
        };
        let f = mi(&answered(
            400,
            &[],
            r#"{"statusCode":400,"message":"No managed identity found for client id x."}"#,
        ));
        assert_eq!(f.retry, Retry::Terminal);
        assert_eq!(
            f.message,
            "managed-identity endpoint refused the request: HTTP 400: No managed identity found for client id x."
        );
        let f = mi(&answered(403, &[], ""));
        assert_eq!(f.retry, Retry::Terminal);
        let f = mi(&answered(
            500,
            &[],
            r#"{"statusCode":500,"message":"boom"}"#,
        ));
        assert_eq!(f.retry, Retry::Retryable);
        assert_eq!(
            f.message,
            "managed-identity endpoint answered 500; will retry: boom"
        );
    }

    #[test]
    fn transport_failures_and_unreadable_answers_are_retryable() {
        for kind in [ErrorKind::Io, ErrorKind::Connection] {
            let io =
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
            let e = wrapped(azure_core::Error::with_error(
                kind.clone(),
                io,
                "failed to execute `reqwest` request",
            ));
            let f = classify(&e);
            assert_eq!(f.retry, Retry::Retryable, "{kind:?}");
            assert_eq!(f.status, None);
            assert_eq!(
                f.message,
                "token endpoint could not be reached (failed to execute `reqwest` request: connection refused); will retry"
            );
        }
        // Entra's error path parses the body before it looks at the status:
        // a gateway's HTML 503 arrives as a DataConversion error.
        let json = serde_json::from_str::<serde_json::Value>("<html>503</html>").unwrap_err();
        let e = wrapped(azure_core::Error::from(json));
        let f = classify(&e);
        assert_eq!(f.retry, Retry::Retryable);
        assert!(
            f.message
                .starts_with("token endpoint answered something that is not a token response ("),
            "{}",
            f.message
        );
        // The Azure CLI's output is not a flaky network answer.
        let f = CredentialFailure::classify(&e, Some(TokenSource::AzureCli));
        assert_eq!(f.retry, Retry::Terminal);
    }

    #[test]
    fn configuration_problems_are_terminal() {
        let e = azure_core::Error::with_message(ErrorKind::Credential, "no secret specified");
        let f = classify(&e);
        assert_eq!(f.retry, Retry::Terminal);
        assert_eq!(f.code(), CREDENTIAL_REFUSED);
        assert_eq!(
            f.message,
            "the credential cannot get a token: no secret specified"
        );
        let cli = azure_core::Error::with_message(
            ErrorKind::Credential,
            "AzureCliCredential authentication failed. ERROR: Please run 'az login'.
To troubleshoot…",
        );
        let f = CredentialFailure::classify(&cli, Some(TokenSource::AzureCli));
        assert_eq!(f.retry, Retry::Terminal);
        assert_eq!(
            f.message,
            "the credential cannot get a token: AzureCliCredential authentication failed. ERROR: Please run 'az login'."
        );
    }

    #[test]
    fn azure_errors_keep_the_credentials_verdict_and_never_a_resource_status() {
        // Unwrapped: `From` classifies a raw credential error itself.
        let e: AzureError = answered(503, &[("retry-after", "2")], "").into();
        assert_eq!(e.code, CREDENTIAL_UNAVAILABLE);
        assert!(e.is_retryable());
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(e.status, None);
        // A token endpoint's 404 must not read as "the resource is gone".
        let e: AzureError = answered(404, &[], "").into();
        assert_eq!(e.code, CREDENTIAL_REFUSED);
        assert!(!e.is_not_found());

        // Classified by the credential, then wrapped again by an SDK.
        let failure = CredentialFailure::timed_out(
            Some(TokenSource::ManagedIdentity),
            Duration::from_secs(10),
        );
        let e = azure_core::Error::new(ErrorKind::Credential, failure.clone())
            .with_context("while sending the request");
        let e = AzureError::from(e);
        assert_eq!(e.code, CREDENTIAL_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(Duration::from_secs(10)));
        assert_eq!(
            e.message,
            "managed-identity endpoint did not answer within 10000 ms; will retry"
        );
        assert_eq!(e.message, failure.message);
    }
}
