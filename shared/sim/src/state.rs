//! Everything the simulator remembers, and how it is saved to and loaded from disk.

use crate::util::{now_ms, random_token};
use crate::SimError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

const STATE_FILE: &str = "state.json";

/// Credentials generated once per data directory.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Creds {
    pub client_id: String,
    pub client_secret: String,
    pub identity_header: String,
    /// Client id of the system-assigned managed identity.
    pub msi_client_id: String,
}

/// An issued access token.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct TokenInfo {
    /// Audience without trailing slash, e.g. `https://management.azure.com`.
    pub audience: String,
    pub principal: String,
    /// Expiry, epoch seconds.
    pub expires: i64,
}

/// Where a VMSS's instances are in their boot.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub(crate) struct Boot {
    /// Instances that finished booting before the current round started.
    pub booted: u32,
    /// Instance count of the current model.
    pub target: u32,
    /// When the current round of instances finishes booting (epoch ms).
    pub ready_at_ms: i64,
    /// Per extension: (name, error message when the script fetch failed).
    pub extensions: Vec<(String, Option<String>)>,
}

/// An ARM resource (or resource group / role assignment).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Resource {
    /// Canonical id (casing of the first PUT).
    pub id: String,
    /// Full ARM type, e.g. `Microsoft.Network/virtualNetworks`.
    pub rtype: String,
    pub name: String,
    /// Resource group name (lowercase) or empty for subscription-level things.
    pub rg: String,
    /// The stored model as PUT, plus server-computed fields (secrets included; stripped on output).
    pub body: Value,
    /// `Creating`, `Updating`, `Deleting`, `Succeeded`, `Failed`.
    pub state: String,
    /// The operation that currently drives `state`.
    pub op: Option<String>,
    pub etag: String,
    /// Storage account keys (key1, key2).
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub boot: Option<Boot>,
    /// When it was first created (epoch ms; ARM's `createdTime`).
    #[serde(default)]
    pub created_ms: i64,
}

/// What an asynchronous operation does when it finishes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Put,
    Patch,
    Delete,
}

/// A long-running operation, timed by wall clock.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Operation {
    pub id: String,
    pub kind: OpKind,
    /// Lowercase key of the resource it acts on.
    pub resource_key: String,
    pub start_ms: i64,
    pub duration_ms: i64,
    /// (http status, code, message) when the operation is to fail.
    pub fail: Option<(u16, String, String)>,
    /// Whether its effect on the resource has been applied.
    pub applied: bool,
}

impl Operation {
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.duration_ms
    }
    pub fn done(&self, now: i64) -> bool {
        now >= self.end_ms()
    }
}

/// One version of a Key Vault secret.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct SecretVersion {
    pub version: String,
    pub value: String,
    pub content_type: Option<String>,
    pub enabled: bool,
    pub created: i64,
    pub updated: i64,
    pub tags: BTreeMap<String, String>,
}

/// A Key Vault secret with its versions, possibly soft-deleted.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Secret {
    pub name: String,
    /// Vault URL the secret was created through (for ids in the inventory).
    pub vault: String,
    pub versions: Vec<SecretVersion>,
    /// Epoch seconds of the soft delete.
    pub deleted: Option<i64>,
}

/// A block blob.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Blob {
    pub name: String,
    /// Base64 of the content.
    pub data: String,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub etag: String,
    pub modified_ms: i64,
    /// Base URL the blob was written through (for ids in the inventory).
    pub base: String,
}

/// A blob container.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Container {
    pub name: String,
    pub etag: String,
    pub modified_ms: i64,
    pub blobs: BTreeMap<String, Blob>,
}

/// The simulator's whole persisted state.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct State {
    pub creds: Creds,
    /// Key: lowercase resource id.
    pub resources: BTreeMap<String, Resource>,
    pub ops: HashMap<String, Operation>,
    /// Key: lowercase secret name.
    pub secrets: BTreeMap<String, Secret>,
    /// Key: `{account}/{container}`, lowercase.
    pub containers: BTreeMap<String, Container>,
    pub tokens: HashMap<String, TokenInfo>,
    /// Bumped on every save; lets concurrent saves skip stale snapshots.
    #[serde(default)]
    pub generation: u64,
    /// The vault has purge protection: deleted secrets stay recoverable
    /// until their scheduled purge date and a purge is refused.
    #[serde(default)]
    pub purge_protection: bool,
    /// Unapplied operations by (end time, id); rebuilt on load.
    #[serde(skip)]
    pub pending: BTreeSet<(i64, String)>,
}

impl State {
    /// A new, empty state with freshly generated credentials.
    pub fn fresh() -> State {
        State {
            creds: Creds {
                client_id: uuid::Uuid::new_v4().to_string(),
                client_secret: random_token(32),
                identity_header: random_token(24),
                msi_client_id: uuid::Uuid::new_v4().to_string(),
            },
            resources: BTreeMap::new(),
            ops: HashMap::new(),
            secrets: BTreeMap::new(),
            containers: BTreeMap::new(),
            tokens: HashMap::new(),
            generation: 0,
            purge_protection: false,
            pending: BTreeSet::new(),
        }
    }

    /// Loads `state.json` from `dir`, if it exists.
    pub fn load(dir: &Path) -> Result<Option<State>, SimError> {
        let path = dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut st: State = serde_json::from_slice(&bytes).map_err(|e| SimError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        st.pending = st
            .ops
            .values()
            .filter(|o| !o.applied)
            .map(|o| (o.end_ms(), o.id.clone()))
            .collect();
        let now_s = now_ms() / 1000;
        st.tokens.retain(|_, t| t.expires > now_s);
        Ok(Some(st))
    }
}

/// Writes `state.json` atomically (temporary file + rename).
pub(crate) fn write_atomic(dir: &Path, json: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    std::fs::write(&tmp, json)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, dir.join(STATE_FILE))
}
