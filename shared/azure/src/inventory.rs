//! What listing a plane returns — an ARM resource group's resources, the
//! vault's secrets, the staging container's blobs — with the tags (or blob
//! metadata) and creation time that tell whose it is and how old; and what
//! purging a deleted secret did.

use std::collections::BTreeMap;
use time::OffsetDateTime;

/// One resource, secret or blob found by listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// ARM id, secret id (URL without version) or blob URL.
    pub id: String,
    /// The resource's, secret's or blob's name.
    pub name: String,
    /// The ARM resource type (`Microsoft.Network/virtualNetworks`); `None`
    /// for secrets and blobs.
    pub resource_type: Option<String>,
    /// Tags (ARM, Key Vault) or metadata (blobs). ARM leaves them out of an
    /// answer filtered by tag, so they may be empty there.
    pub tags: BTreeMap<String, String>,
    /// When it was created, when the plane says.
    pub created: Option<OffsetDateTime>,
}

impl Listed {
    /// The value of tag (or metadata) `name`; names compare case-insensitively, as Azure's do.
    pub fn tag(&self, name: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What is left of a secret after its delete and the purge that follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purge {
    /// Nothing: purged now, or it was never there (or already purged).
    Gone,
    /// The vault keeps the deleted secret (purge protection, or no right to
    /// purge); Azure purges it at `until`, and it can be recovered until then.
    Retained { until: Option<OffsetDateTime> },
}
