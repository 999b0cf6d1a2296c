//! The staging container: the cluster spec and node init script as block
//! blobs, through the official `azure_storage_blob` client with an Entra token
//! (Azure, the simulator) or a SAS (Azurite).

use crate::{AzureConfig, AzureError, Listed};
use azure_core::credentials::TokenCredential;
use azure_core::http::RequestContent;
use azure_storage_blob::models::{
    BlobClientUploadOptions, BlobContainerClientListBlobsOptions, ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobClient, BlobClientOptions, BlobContainerClient};
use futures::TryStreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use url::Url;

/// How many block uploads one large blob upload keeps in flight: the SDK's
/// own default (the CPU count, within 8..=96), worked out once. Left to the
/// SDK, every upload asks the OS for the CPU count, which reads the cgroup
/// files: 2.3 % of the CPU of a 1,000-job `flotilla bench`.
static UPLOAD_PARALLELISM: std::sync::LazyLock<std::num::NonZeroUsize> =
    std::sync::LazyLock::new(|| {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        std::num::NonZeroUsize::new(cpus.clamp(8, 96)).unwrap_or(std::num::NonZeroUsize::MIN)
    });

/// The resource type of blob calls (retry metric).
const BLOBS: &str = "Microsoft.Storage/storageAccounts/blobServices";

/// How staging requests are authorised.
#[derive(Clone)]
pub enum StagingAuth {
    /// Entra token from the configured credential (storage audience).
    Token,
    /// A SAS query string (without `?`) appended to every blob URL.
    Sas(String),
    /// An account SAS signed here from a shared key, renewed for each request.
    /// Meant for Azurite, whose development account key is public; on Azure
    /// use `Token`.
    SharedKey { account: String, key: String },
}

/// The public key of Azurite's (and the storage emulator's) development account.
pub const DEV_STORAGE_ACCOUNT: &str = "devstoreaccount1";
/// The documented, public development-account key (not a secret).
pub const DEV_STORAGE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An account SAS for the blob service (containers and objects: read, write,
/// delete, list, add, create), valid for an hour, signed with `key`.
pub fn account_sas(
    account: &str,
    key: &str,
    now: time::OffsetDateTime,
) -> Result<String, AzureError> {
    use time::format_description::well_known::Rfc3339;
    let fmt = |t: time::OffsetDateTime| {
        t.replace_nanosecond(0)
            .unwrap_or(t)
            .format(&Rfc3339)
            .unwrap_or_default()
    };
    let start = fmt(now - time::Duration::minutes(5));
    let expiry = fmt(now + time::Duration::hours(1));
    let (perms, services, types, proto, version) =
        ("rwdlac", "b", "co", "https,http", "2021-08-06");
    let to_sign = format!(
        "{account}\n{perms}\n{services}\n{types}\n{start}\n{expiry}\n\n{proto}\n{version}\n\n"
    );
    let sig = azure_core::hmac::hmac_sha256(
        &to_sign,
        &azure_core::credentials::Secret::new(key.to_string()),
    )
    .map_err(|e| AzureError::terminal("InvalidStorageKey", e.to_string()))?;
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("sv", version)
        .append_pair("ss", services)
        .append_pair("srt", types)
        .append_pair("sp", perms)
        .append_pair("st", &start)
        .append_pair("se", &expiry)
        .append_pair("spr", proto)
        .append_pair("sig", &sig);
    Ok(q.finish())
}

/// One staging container.
#[derive(Clone)]
pub struct Staging {
    container_url: Url,
    auth: StagingAuth,
    credential: Option<Arc<dyn TokenCredential>>,
    options: BlobClientOptions,
    retry: crate::RetryPolicy,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("container_url", &self.container_url.as_str())
            .finish()
    }
}

impl Staging {
    /// `endpoint` is the account's blob endpoint (`https://<account>.blob.core.windows.net`).
    pub fn new(
        config: &AzureConfig,
        endpoint: &str,
        container: &str,
        auth: StagingAuth,
    ) -> Result<Self, AzureError> {
        let container_url = Url::parse(&format!(
            "{}/{}/",
            endpoint.trim_end_matches('/'),
            container
        ))
        .map_err(|e| AzureError::terminal("InvalidStagingEndpoint", e.to_string()))?;
        let credential = match auth {
            StagingAuth::Token => Some(config.token_credential()?),
            StagingAuth::Sas(_) | StagingAuth::SharedKey { .. } => None,
        };
        let options = BlobClientOptions {
            client_options: config.client_options(),
            ..Default::default()
        };
        Ok(Staging {
            container_url,
            auth,
            credential,
            options,
            retry: config.retry,
        })
    }

    /// The blob's URL without any SAS: what saga state, events and node configuration carry.
    pub fn blob_url(&self, name: &str) -> String {
        format!("{}{}", self.container_url, name)
    }

    /// The query string that authorises a request, if the auth is a SAS.
    fn sas(&self) -> Result<Option<String>, AzureError> {
        match &self.auth {
            StagingAuth::Token => Ok(None),
            StagingAuth::Sas(sas) => Ok(Some(sas.clone())),
            StagingAuth::SharedKey { account, key } => {
                account_sas(account, key, time::OffsetDateTime::now_utc()).map(Some)
            }
        }
    }

    fn client(&self, name: &str) -> Result<BlobClient, AzureError> {
        let mut url = Url::parse(&self.blob_url(name))
            .map_err(|e| AzureError::terminal("InvalidBlobName", e.to_string()))?;
        if let Some(sas) = self.sas()? {
            url.set_query(Some(&sas));
        }
        BlobClient::new(url, self.credential.clone(), Some(self.options.clone()))
            .map_err(|e| AzureError::terminal("InvalidBlobName", e.to_string()))
    }

    fn container(&self) -> Result<BlobContainerClient, AzureError> {
        let mut url = self.container_url.clone();
        if let Some(sas) = self.sas()? {
            url.set_query(Some(&sas));
        }
        let options = azure_storage_blob::BlobContainerClientOptions {
            client_options: self.options.client_options.clone(),
            ..Default::default()
        };
        BlobContainerClient::new(url, self.credential.clone(), Some(options))
            .map_err(|e| AzureError::terminal("InvalidStagingEndpoint", e.to_string()))
    }

    /// Every blob of the container whose name starts with `prefix`, with its
    /// metadata and creation time (its last change where the service does
    /// not say when it was created). A container that does not exist holds nothing: an empty list.
    pub async fn list(&self, prefix: Option<&str>) -> Result<Vec<Listed>, AzureError> {
        match self.retry.inline(BLOBS, || self.list_once(prefix)).await {
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            listed => listed,
        }
    }

    async fn list_once(&self, prefix: Option<&str>) -> Result<Vec<Listed>, AzureError> {
        let options = BlobContainerClientListBlobsOptions {
            include: Some(vec![ListBlobsIncludeItem::Metadata]),
            prefix: prefix.map(str::to_string),
            ..Default::default()
        };
        let mut pages = self.container()?.list_blobs(Some(options))?.into_pages();
        let mut out = Vec::new();
        while let Some(page) = pages.try_next().await? {
            let page = page.into_model().map_err(AzureError::from)?;
            for item in page.blob_items {
                let Some(name) = item.name else { continue };
                let props = item.properties.unwrap_or_default();
                out.push(Listed {
                    id: self.blob_url(&name),
                    name,
                    resource_type: None,
                    tags: item
                        .metadata
                        .and_then(|m| m.values)
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    created: props.creation_time.or(props.last_modified),
                });
            }
        }
        Ok(out)
    }

    /// Creates the container if it does not exist (for local setups; on Azure
    /// the deployment creates it).
    pub async fn ensure_container(&self) -> Result<(), AzureError> {
        self.retry
            .inline(BLOBS, || self.ensure_container_once())
            .await
    }

    async fn ensure_container_once(&self) -> Result<(), AzureError> {
        let client = self.container()?;
        match client.create(None).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = AzureError::from(e);
                if e.status == Some(409) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Uploads (overwrites) a blob with metadata; returns its URL.
    pub async fn put(
        &self,
        name: &str,
        content: Vec<u8>,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, AzureError> {
        self.retry
            .inline(BLOBS, || {
                self.put_once(name, content.clone(), content_type, metadata)
            })
            .await
    }

    async fn put_once(
        &self,
        name: &str,
        content: Vec<u8>,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String, AzureError> {
        let options = BlobClientUploadOptions {
            blob_content_type: Some(content_type.to_string()),
            metadata: Some(
                metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            ),
            parallel: Some(*UPLOAD_PARALLELISM),
            ..Default::default()
        };
        let body: RequestContent<bytes::Bytes, azure_core::http::NoFormat> =
            bytes::Bytes::from(content).into();
        self.client(name)?.upload(body, Some(options)).await?;
        Ok(self.blob_url(name))
    }

    /// Deletes a blob; a missing blob is success.
    pub async fn delete(&self, name: &str) -> Result<(), AzureError> {
        self.retry.inline(BLOBS, || self.delete_once(name)).await
    }

    async fn delete_once(&self, name: &str) -> Result<(), AzureError> {
        match self.client(name)?.delete(None).await {
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
}
