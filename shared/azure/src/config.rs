//! Where Azure is and who flotilla is there: endpoints, the credential, the
//! transport and the retry policy, shared by every client.

use crate::AzureError;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, HttpClient, RetryOptions, Transport};
use azure_identity::{
    AzureCliCredential, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};
use std::sync::Arc;
use std::time::Duration;

/// How flotilla authenticates. There is deliberately no "try everything"
/// chain: the credential is chosen by configuration (`AZURE_CREDENTIAL`).
#[derive(Clone)]
pub enum CredentialConfig {
    /// App Service / Functions managed identity (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
    ManagedIdentity { client_id: Option<String> },
    /// An app registration's client secret against an authority host.
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: String,
        /// `None` means `https://login.microsoftonline.com`.
        authority_host: Option<String>,
    },
    /// The developer's `az login`.
    AzureCli,
}

impl std::fmt::Debug for CredentialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialConfig::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
            CredentialConfig::ClientSecret {
                tenant_id,
                client_id,
                authority_host,
                ..
            } => f
                .debug_struct("ClientSecret")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("secret", &"<redacted>")
                .field("authority_host", authority_host)
                .finish(),
            CredentialConfig::AzureCli => f.write_str("AzureCli"),
        }
    }
}

/// How long a call may wait inside one invocation before giving the problem
/// back to the caller as a retryable error (the saga engine then schedules a
/// retry message instead of blocking).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Extra attempts after a retryable answer, within one call.
    pub max_inline_retries: u32,
    /// Longest single wait (a longer `Retry-After` is handed back to the caller).
    pub max_inline_wait: Duration,
    /// First backoff when the service gives no `Retry-After`; doubles per attempt.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_inline_retries: 3,
            max_inline_wait: Duration::from_secs(2),
            base_delay: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The wait before inline attempt `attempt` (0-based): `Retry-After` when
    /// given, otherwise capped exponential backoff.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or_else(|| self.base_delay.saturating_mul(1u32 << attempt.min(16)))
    }
}

/// Everything a client needs to reach Azure (or the simulator).
#[derive(Clone)]
pub struct AzureConfig {
    /// `https://management.azure.com` or the simulator's ARM endpoint.
    pub arm_endpoint: url::Url,
    pub subscription_id: String,
    /// `https://<vault>.vault.azure.net`.
    pub keyvault_url: String,
    pub credential: CredentialConfig,
    pub retry: RetryPolicy,
    /// The HTTP client every pipeline uses (TLS roots, or an in-process router).
    pub http: Arc<dyn HttpClient>,
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field("arm_endpoint", &self.arm_endpoint.as_str())
            .field("subscription_id", &self.subscription_id)
            .field("keyvault_url", &self.keyvault_url)
            .field("credential", &self.credential)
            .finish()
    }
}

impl AzureConfig {
    /// Client options with flotilla's transport and azure_core's own retries
    /// switched off (retries are flotilla's decision, see [`RetryPolicy`]).
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(self.http.clone())),
            retry: RetryOptions::none(),
            ..Default::default()
        }
    }

    /// Builds the configured credential on flotilla's transport.
    pub fn token_credential(&self) -> Result<Arc<dyn TokenCredential>, AzureError> {
        let bad = |e: azure_core::Error| {
            AzureError::terminal("InvalidCredentialConfiguration", e.to_string())
        };
        Ok(match &self.credential {
            CredentialConfig::ManagedIdentity { client_id } => {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options: self.client_options(),
                };
                ManagedIdentityCredential::new(Some(options)).map_err(bad)?
            }
            CredentialConfig::ClientSecret {
                tenant_id,
                client_id,
                secret,
                authority_host,
            } => {
                let mut client_options = self.client_options();
                if let Some(host) = authority_host {
                    let mut custom = CustomConfiguration::default();
                    custom.authority_host = host.clone();
                    client_options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
                }
                let options = ClientSecretCredentialOptions { client_options };
                ClientSecretCredential::new(
                    tenant_id,
                    client_id.clone(),
                    Secret::new(secret.clone()),
                    Some(options),
                )
                .map_err(bad)?
            }
            CredentialConfig::AzureCli => AzureCliCredential::new(None).map_err(bad)?,
        })
    }
}
