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
            ErrorKind::Credential => {
                AzureError::from_service(401, "CredentialUnavailable", &e.to_string(), None)
            }
            _ => AzureError::transport(e.to_string()),
        }
    }
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
}
