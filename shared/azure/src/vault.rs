//! Key Vault secrets through the official `SecretClient`: the only place a
//! secret value crosses flotilla's code. Callers keep the returned secret id.

use crate::{AzureConfig, AzureError, Listed, Purge};
use azure_core::http::RequestContent;
use azure_security_keyvault_secrets::models::SetSecretParameters;
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use std::collections::{BTreeMap, HashMap};

/// The resource type of Key Vault secret calls (retry metric).
const SECRETS: &str = "Microsoft.KeyVault/vaults/secrets";

/// A Key Vault client for one vault. Each call is retried inline as ARM's
/// are ([`crate::RetryPolicy::inline`]): a poll that reads a secret should not
/// spend the step's retry budget on one transient 503.
pub struct Vault {
    client: SecretClient,
    url: String,
    retry: crate::RetryPolicy,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("url", &self.url).finish()
    }
}

impl Vault {
    pub fn new(config: &AzureConfig) -> Result<Self, AzureError> {
        let verify = url::Url::parse(&config.keyvault_url)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.ends_with(".vault.azure.net")))
            .unwrap_or(false);
        let options = SecretClientOptions {
            // The version the reference examples and the simulator speak.
            api_version: "7.5".into(),
            client_options: config.client_options(),
            // The simulator's host is not *.vault.azure.net.
            verify_challenge_resource: Some(verify),
        };
        let client = SecretClient::new(
            &config.keyvault_url,
            config.token_credential()?,
            Some(options),
        )
        .map_err(|e| AzureError::terminal("InvalidKeyVaultUrl", e.to_string()))?;
        Ok(Vault {
            client,
            url: config.keyvault_url.trim_end_matches('/').to_string(),
            retry: config.retry,
        })
    }

    /// The secret's id without version: what saga state and events may carry.
    pub fn secret_id(&self, name: &str) -> String {
        format!("{}/secrets/{name}", self.url)
    }

    /// Sets (a new version of) a secret and returns its id without version.
    pub async fn set(
        &self,
        name: &str,
        value: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, AzureError> {
        self.retry
            .inline(SECRETS, || self.set_once(name, value, tags))
            .await
    }

    async fn set_once(
        &self,
        name: &str,
        value: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, AzureError> {
        let params = SetSecretParameters {
            value: Some(value.to_string()),
            tags: Some(
                tags.iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        let content: RequestContent<SetSecretParameters> =
            params.try_into().map_err(|e: azure_core::Error| {
                AzureError::terminal("InvalidRequestContent", e.to_string())
            })?;
        self.client.set_secret(name, content, None).await?;
        Ok(self.secret_id(name))
    }

    /// Creates a secret with `value` unless it exists, whatever its value
    /// (a placeholder that must never replace what someone wrote since).
    /// Every attempt, retries included, reads first: a retry that comes
    /// after another writer finds its value and leaves it.
    pub async fn create_if_absent(
        &self,
        name: &str,
        value: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AzureError> {
        self.retry
            .inline(SECRETS, || async {
                if self.get_once(name).await?.is_none() {
                    self.set_once(name, value, tags).await?;
                }
                Ok(())
            })
            .await
    }

    /// Reads a secret's current value; `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<String>, AzureError> {
        self.retry.inline(SECRETS, || self.get_once(name)).await
    }

    async fn get_once(&self, name: &str) -> Result<Option<String>, AzureError> {
        match self.client.get_secret(name, None).await {
            Ok(resp) => {
                let secret = resp.into_model().map_err(AzureError::from)?;
                Ok(secret.value)
            }
            Err(e) => {
                let e = AzureError::from(e);
                if e.is_not_found() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes a secret; a missing secret is success.
    pub async fn delete(&self, name: &str) -> Result<(), AzureError> {
        self.retry.inline(SECRETS, || self.delete_once(name)).await
    }

    async fn delete_once(&self, name: &str) -> Result<(), AzureError> {
        match self.client.delete_secret(name, None).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = AzureError::from(e);
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Purges a deleted secret where the vault allows it. Reads the deleted
    /// secret first: a vault whose recovery level is not `…Purgeable` (purge
    /// protection) keeps it until its scheduled purge date, and so does one
    /// that refuses the purge (403: no right to purge). Nothing deleted under
    /// that name is [`Purge::Gone`].
    ///
    /// Caveat: Key Vault deletes asynchronously; a purge read in the moment
    /// between a delete and the deleted secret's appearance finds nothing.
    pub async fn purge(&self, name: &str) -> Result<Purge, AzureError> {
        self.retry.inline(SECRETS, || self.purge_once(name)).await
    }

    async fn purge_once(&self, name: &str) -> Result<Purge, AzureError> {
        let not_found = |e: azure_core::Error| {
            let e = AzureError::from(e);
            if e.is_not_found() {
                Ok(Purge::Gone)
            } else {
                Err(e)
            }
        };
        let deleted = match self.client.get_deleted_secret(name, None).await {
            Ok(resp) => resp.into_model().map_err(AzureError::from)?,
            Err(e) => return not_found(e),
        };
        let until = deleted.scheduled_purge_date;
        let purgeable = deleted
            .attributes
            .as_ref()
            .and_then(|a| a.recovery_level.as_ref())
            .is_some_and(|l| <&str>::from(l).contains("Purgeable"));
        if !purgeable {
            return Ok(Purge::Retained { until });
        }
        match self.client.purge_deleted_secret(name, None).await {
            Ok(_) => Ok(Purge::Gone),
            Err(e) => {
                let e = AzureError::from(e);
                if e.status == Some(403) {
                    Ok(Purge::Retained { until })
                } else if e.is_not_found() {
                    Ok(Purge::Gone)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Every secret of the vault (never a value) with its tags and creation time.
    pub async fn list(&self) -> Result<Vec<Listed>, AzureError> {
        self.retry.inline(SECRETS, || self.list_once()).await
    }

    async fn list_once(&self) -> Result<Vec<Listed>, AzureError> {
        let mut pages = self.client.list_secret_properties(None)?.into_pages();
        let mut out = Vec::new();
        while let Some(page) = pages.try_next().await? {
            let page = page.into_model().map_err(AzureError::from)?;
            for item in page.value {
                let Ok(rid) = item.resource_id() else {
                    continue;
                };
                out.push(Listed {
                    id: self.secret_id(&rid.name),
                    name: rid.name,
                    resource_type: None,
                    tags: item.tags.unwrap_or_default().into_iter().collect(),
                    created: item.attributes.and_then(|a| a.created),
                });
            }
        }
        Ok(out)
    }
}
