//! Where Azure is and who flotilla is there: endpoints, the credential, the
//! transport and the retry policy, shared by every client.

use crate::error::{CredentialFailure, TokenSource};
use crate::AzureError;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientOptions, HttpClient, RetryOptions, Transport};
use azure_identity::{
    AzureCliCredential, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

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
    /// Longest one token request may take (the credential's own retries
    /// included); a slower one fails as a retryable `CredentialUnavailable`.
    pub token_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_inline_retries: 3,
            max_inline_wait: Duration::from_secs(2),
            base_delay: Duration::from_millis(200),
            token_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before inline attempt `attempt` (0-based): `Retry-After` when
    /// given, otherwise capped exponential backoff.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or_else(|| self.base_delay.saturating_mul(1u32 << attempt.min(16)))
    }

    /// Runs one Azure call, and again while it fails retryably with a short
    /// wait (at most `max_inline_retries` more times); any other outcome, and
    /// a wait longer than `max_inline_wait`, goes back to the caller, whose
    /// retry is the engine's scheduled one.
    /// `resource_type` labels the retry metric and the wait's span.
    pub async fn inline<T, Fut>(
        &self,
        resource_type: &str,
        mut call: impl FnMut() -> Fut,
    ) -> Result<T, AzureError>
    where
        Fut: std::future::Future<Output = Result<T, AzureError>>,
    {
        let mut attempt = 0;
        loop {
            let err = match call().await {
                Err(err) => err,
                done => return done,
            };
            let delay = self.delay(attempt, err.retry_after);
            if !err.is_retryable()
                || attempt >= self.max_inline_retries
                || delay > self.max_inline_wait
            {
                return Err(err);
            }
            tracing::debug!(code = %err.code, attempt, ?delay, "retrying Azure call");
            crate::telemetry::count_retry(resource_type);
            let wait = tracing::info_span!(
                "azure.retry_wait",
                flotilla.azure.resource_type = resource_type,
                flotilla.wait.seconds = delay.as_secs_f64(),
                flotilla.throttled = err.status == Some(429),
                error.type = %err.code,
            );
            tokio::time::sleep(delay).instrument(wait).await;
            attempt += 1;
        }
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
        client_options(&self.http)
    }

    /// Builds the configured credential on flotilla's transport
    /// ([`CredentialConfig::token_credential`]).
    pub fn token_credential(&self) -> Result<Arc<dyn TokenCredential>, AzureError> {
        self.credential
            .token_credential(&self.http, self.retry.token_timeout)
    }
}

/// Client options that send through `http` (each request inside a job's work
/// traced) with azure_core's own retries switched off.
pub fn client_options(http: &Arc<dyn HttpClient>) -> ClientOptions {
    ClientOptions {
        transport: Some(Transport::new(crate::telemetry::TracedHttpClient::new(
            http.clone(),
        ))),
        retry: RetryOptions::none(),
        ..Default::default()
    }
}

impl CredentialConfig {
    /// Builds this credential on the transport `http`.
    ///
    /// Its failures are classified once ([`CredentialFailure`]: retryable
    /// `CredentialUnavailable` vs terminal `CredentialRefused`), and it never
    /// holds a caller for long:
    /// - its pipeline has no retry policy ([`client_options`]), so the client
    ///   secret and App Service managed-identity credentials send one request
    ///   per token; the IMDS credential (no `IDENTITY_ENDPOINT`) keeps
    ///   azure_identity's own retries (up to 72 s), which cannot be switched off;
    /// - every `get_token` is cut off after `token_timeout` (10 s by default,
    ///   [`RetryPolicy::token_timeout`]). The timeout carries itself as
    ///   `Retry-After`, which is longer than the client's inline wait, so the
    ///   call is handed back at once and the step retries through a scheduled
    ///   message;
    /// - for `token_timeout` after a timeout, other callers get that failure at
    ///   once instead of queueing behind the same slow endpoint one by one.
    pub fn token_credential(
        &self,
        http: &Arc<dyn HttpClient>,
        token_timeout: Duration,
    ) -> Result<Arc<dyn TokenCredential>, AzureError> {
        let bad = |e: azure_core::Error| {
            AzureError::terminal("InvalidCredentialConfiguration", e.to_string())
        };
        let (inner, source): (Arc<dyn TokenCredential>, TokenSource) = match self {
            CredentialConfig::ManagedIdentity { client_id } => {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options: client_options(http),
                };
                (
                    ManagedIdentityCredential::new(Some(options)).map_err(bad)?,
                    TokenSource::ManagedIdentity,
                )
            }
            CredentialConfig::ClientSecret {
                tenant_id,
                client_id,
                secret,
                authority_host,
            } => {
                let mut client_options = client_options(http);
                if let Some(host) = authority_host {
                    let mut custom = CustomConfiguration::default();
                    custom.authority_host = host.clone();
                    client_options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
                }
                let options = ClientSecretCredentialOptions { client_options };
                let credential = ClientSecretCredential::new(
                    tenant_id,
                    client_id.clone(),
                    Secret::new(secret.clone()),
                    Some(options),
                )
                .map_err(bad)?;
                (credential, TokenSource::ClientSecret)
            }
            CredentialConfig::AzureCli => (
                AzureCliCredential::new(None).map_err(bad)?,
                TokenSource::AzureCli,
            ),
        };
        Ok(Arc::new(ClassifiedCredential::new(
            inner,
            source,
            token_timeout,
        )))
    }
}

/// An azure_identity credential, bounded in time, whose errors carry a
/// [`CredentialFailure`] (found again by `AzureError::from`).
pub struct ClassifiedCredential {
    inner: Arc<dyn TokenCredential>,
    source: TokenSource,
    timeout: Duration,
    /// The last timeout and when it happened.
    timed_out: Mutex<Option<(Instant, CredentialFailure)>>,
}

impl ClassifiedCredential {
    /// Wraps `inner`; `timeout` bounds each `get_token`.
    pub fn new(
        inner: Arc<dyn TokenCredential>,
        source: TokenSource,
        timeout: Duration,
    ) -> ClassifiedCredential {
        ClassifiedCredential {
            inner,
            source,
            timeout,
            timed_out: Mutex::new(None),
        }
    }

    fn failed(failure: CredentialFailure) -> azure_core::Error {
        azure_core::Error::new(azure_core::error::ErrorKind::Credential, failure)
    }
}

impl std::fmt::Debug for ClassifiedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifiedCredential")
            .field("source", &self.source)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for ClassifiedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        {
            let recent = self.timed_out.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, failure)) = recent.as_ref() {
                if at.elapsed() < self.timeout {
                    return Err(Self::failed(failure.clone()));
                }
            }
        }
        match tokio::time::timeout(self.timeout, self.inner.get_token(scopes, options)).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(e)) => {
                let failure = CredentialFailure::classify(&e, Some(self.source));
                tracing::debug!(code = failure.code(), message = %failure.message, "no token");
                Err(Self::failed(failure))
            }
            Err(_) => {
                let failure = CredentialFailure::timed_out(Some(self.source), self.timeout);
                *self.timed_out.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), failure.clone()));
                Err(Self::failed(failure))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A credential whose token endpoint never answers.
    #[derive(Debug, Default)]
    struct Hanging {
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl TokenCredential for Hanging {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_hanging_endpoint_costs_one_timeout_then_fails_fast_until_the_window_ends() {
        let inner = Arc::new(Hanging::default());
        let timeout = Duration::from_millis(200);
        let credential =
            ClassifiedCredential::new(inner.clone(), TokenSource::ClientSecret, timeout);
        let scopes = &["https://management.azure.com/.default"];

        let started = Instant::now();
        let err = credential
            .get_token(scopes, None)
            .await
            .expect_err("times out");
        assert!(started.elapsed() >= timeout);
        let failure = CredentialFailure::find(&err).expect("classified");
        assert!(failure.retry == crate::Retry::Retryable);
        assert_eq!(failure.retry_after, Some(timeout));

        let started = Instant::now();
        let again = credential
            .get_token(scopes, None)
            .await
            .expect_err("fails fast");
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(CredentialFailure::find(&again), Some(failure));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1, "not asked again");

        tokio::time::sleep(timeout).await;
        let _ = credential.get_token(scopes, None).await;
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            2,
            "asked again after the window"
        );
    }
}
