//! The ports the saga engine talks through: a saga store, an event bus, the
//! three Azure planes a step touches (ARM, Key Vault secrets, staging blobs),
//! the cluster's Kubernetes API (for `join`) and a clock.
//!
//! The store and the bus have one adapter per backend (SQLite and the
//! in-process bus for `flotilla up`; Cosmos DB and Service Bus in production)
//! and one conformance suite ([`crate::conformance`]) that every adapter must
//! pass. They know nothing about sagas: the store keeps JSON documents under
//! an id with an ETag, the bus carries opaque bodies with Service Bus broker
//! semantics. The Azure ports are implemented by the `flotilla_azure` clients
//! ([`crate::adapters`]) and, for the engine's own tests, by an in-memory
//! cloud ([`crate::testing`]).

use async_trait::async_trait;
use flotilla_azure::arm::{DeleteStart, PollOutcome};
pub use flotilla_azure::models::{Permission, ResourceSku, Usage};
use flotilla_azure::{AzureError, PollState, ResourceId};
pub use flotilla_azure::{Listed, Purge};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

/// Opaque version tag of a stored document (Cosmos `_etag`, a counter in SQLite).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ETag(pub String);

impl std::fmt::Display for ETag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A document as stored, with the ETag to send back on the next replace.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDoc {
    pub id: String,
    pub etag: ETag,
    pub doc: Value,
}

/// What a sweep needs to know of a document, given with each write so that a
/// store can keep it beside the document and list for the sweeper
/// ([`SagaStore::list_sweepable_after`]) without reading every document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepHint {
    /// The job is settled and the document holds no events: no sweep acts on it.
    Settled,
    /// The document holds events (`outbox`): every sweep looks at it.
    Holding,
    /// A job under way, last saved (`updatedAt`) at this time: no sweep acts
    /// on it before its quiet period has passed.
    SavedAt(OffsetDateTime),
    /// Nothing readable: only the document itself can tell.
    Unknown,
}

impl SweepHint {
    /// The hint for a document given as a value, read as a sweep reads it:
    /// an `outbox` member holds events; a terminal `status` with a null
    /// `pending` is settled; otherwise its `updatedAt`, if readable.
    pub fn of_doc(doc: &Value) -> SweepHint {
        if doc.get("outbox").is_some() {
            return SweepHint::Holding;
        }
        let terminal = doc
            .get("status")
            .and_then(|s| crate::saga::JobStatus::deserialize(s).ok())
            .is_some_and(|s| s.is_terminal());
        if terminal && doc.get("pending").is_some_and(Value::is_null) {
            return SweepHint::Settled;
        }
        doc.get("updatedAt")
            .and_then(Value::as_str)
            .and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or(SweepHint::Unknown, SweepHint::SavedAt)
    }
}

/// Why a store operation failed. Only `Unavailable` is worth retrying as is;
/// `PreconditionFailed` means "re-read and decide again".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("document {0} already exists")]
    Conflict(String),
    #[error("document {0} not found")]
    NotFound(String),
    #[error("document {0} was changed by another writer (ETag mismatch)")]
    PreconditionFailed(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored document is unreadable: {0}")]
    Corrupt(String),
}

/// A message to put on the bus: one structured CloudEvent (JSON) with the
/// broker properties flotilla uses.
#[derive(Clone, Debug, PartialEq)]
pub struct OutMessage {
    /// Service Bus `MessageId`; equal to the CloudEvent id, so the broker's
    /// duplicate detection drops a second send of the same transition.
    pub id: String,
    /// The CloudEvent `type`, copied out so a router need not parse the body.
    pub event_type: String,
    /// The structured CloudEvent, `application/cloudevents+json`.
    pub body: Vec<u8>,
    /// `ScheduledEnqueueTimeUtc`: not visible before this instant.
    pub not_before: Option<OffsetDateTime>,
}

/// A message handed to a consumer under a peek-lock.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub message_id: String,
    pub event_type: String,
    pub body: Vec<u8>,
    /// 1 on the first delivery, +1 on each abandon or expired lock.
    pub delivery_count: u32,
    pub lock_token: String,
}

/// A message the bus gave up on.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub message_id: String,
    pub event_type: String,
    pub body: Vec<u8>,
    pub delivery_count: u32,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("lock {0} is not held (expired, or the message was settled already)")]
    LockLost(String),
}

/// A document's JSON text as a value, for stores that hold values.
fn from_text(id: &str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Unavailable(format!("document {id} is not JSON: {e}")))
}

/// Saga documents keyed by job id, with optimistic concurrency.
#[async_trait]
pub trait SagaStore: Send + Sync {
    /// Stores a new document; `Conflict` if the id exists. `outbox` messages are
    /// published with the write when [`SagaStore::delivers_outbox`] is true.
    async fn create(
        &self,
        id: &str,
        doc: &Value,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError>;
    /// The current document, or `None`.
    async fn get(&self, id: &str) -> Result<Option<StoredDoc>, StoreError>;
    /// Replaces the document if its ETag still equals `if_match`
    /// (`PreconditionFailed` otherwise, `NotFound` if it is gone).
    async fn replace(
        &self,
        id: &str,
        doc: &Value,
        if_match: &ETag,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError>;
    /// [`SagaStore::create`] with the document as JSON text, as the engine
    /// renders it; a store that keeps text takes it as it is.
    /// `sweep` is what the text says to a sweep (the writer knows it without
    /// reading the text again).
    async fn create_text(
        &self,
        id: &str,
        text: &str,
        sweep: SweepHint,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        let _ = sweep;
        self.create(id, &from_text(id, text)?, outbox).await
    }
    /// [`SagaStore::replace`] with the document as JSON text (`sweep` as in
    /// [`SagaStore::create_text`]).
    async fn replace_text(
        &self,
        id: &str,
        text: &str,
        sweep: SweepHint,
        if_match: &ETag,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        let _ = sweep;
        self.replace(id, &from_text(id, text)?, if_match, outbox)
            .await
    }
    /// [`SagaStore::get`] with the document as JSON text and its ETag.
    async fn get_text(&self, id: &str) -> Result<Option<(String, ETag)>, StoreError> {
        Ok(self.get(id).await?.map(|d| (d.doc.to_string(), d.etag)))
    }
    /// The current ETag of a document, or `None`: a cheap way to see whether
    /// it changed since it was read.
    async fn etag(&self, id: &str) -> Result<Option<ETag>, StoreError> {
        Ok(self.get(id).await?.map(|d| d.etag))
    }
    /// Every document, in no particular order.
    async fn list(&self) -> Result<Vec<StoredDoc>, StoreError>;
    /// A page of documents for a scan that holds one page at a time: up to
    /// about `limit` documents whose ids sort after `after` (from the first
    /// with `None`), in id order; an empty page ends the scan. A store that
    /// cannot read by id range returns every document in the first page.
    async fn list_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let _ = limit;
        match after {
            None => self.list().await,
            Some(_) => Ok(vec![]),
        }
    }
    /// A page of the documents the sweeper must look at, as [`list_after`]:
    /// at least every document but a settled job's that holds no events
    /// (status terminal, nothing `pending`, no `outbox`), and of those whose
    /// job is not settled at least the ones not saved since `quiet_before`
    /// (`updatedAt`; the sweeper acts on no job saved since). The default
    /// reads every document; a store that can filter where it keeps them
    /// leaves the settled ones out (Cosmos DB, the embedded store) and the
    /// recently saved ones too (the embedded store), so a sweep costs what
    /// may need it, not every job ever kept or in flight.
    ///
    /// [`list_after`]: SagaStore::list_after
    async fn list_sweepable_after(
        &self,
        after: Option<&str>,
        limit: usize,
        quiet_before: time::OffsetDateTime,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let _ = quiet_before;
        self.list_after(after, limit).await
    }
    /// True when `outbox` messages are committed in the same transaction as the
    /// document (the embedded store); false when the store cannot publish
    /// (Cosmos DB): the engine then keeps the messages inside the document
    /// itself and sends them after the write (see `engine::txn`).
    fn delivers_outbox(&self) -> bool;
    /// True when [`SagaStore::etag`] answers from this process's memory,
    /// without a read (the embedded store, the database's only writer): the
    /// engine then keeps the sagas it writes and checks its copy's ETag
    /// instead of reading the document again (see `engine::kept`).
    fn etag_is_local(&self) -> bool {
        false
    }
}

/// A queue with Service Bus semantics: peek-lock, delivery count, dead-letter
/// after the maximum delivery count, scheduled enqueue, duplicate detection by
/// message id.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Enqueues messages; a message whose id was seen within the duplicate
    /// detection window is dropped silently (as Service Bus does).
    async fn send(&self, messages: &[OutMessage]) -> Result<(), BusError>;
    /// Locks and returns the next visible message, waiting up to `wait`.
    async fn receive(&self, wait: Duration) -> Result<Option<Delivery>, BusError>;
    /// Removes a delivered message for good.
    async fn complete(&self, delivery: &Delivery) -> Result<(), BusError>;
    /// Completes `delivery` and, where the bus can do both in one round
    /// trip, locks the next visible message without waiting (what a worker
    /// that goes on consuming does next). `None` when nothing is visible or
    /// the bus cannot combine them; then the caller receives as usual. A
    /// lost lock is `LockLost`, and then nothing is received.
    async fn complete_then_receive(
        &self,
        delivery: &Delivery,
    ) -> Result<Option<Delivery>, BusError> {
        self.complete(delivery).await.map(|()| None)
    }
    /// Releases the lock so the message is delivered again (delivery count + 1);
    /// past the maximum delivery count it goes to the dead-letter queue.
    async fn abandon(&self, delivery: &Delivery) -> Result<(), BusError>;
    /// Moves a delivered message to the dead-letter queue with a reason.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BusError>;
    /// The dead-letter queue's content.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError>;
    /// How long the oldest message that could be received now has waited
    /// (the queue's lag); `None` where the bus cannot tell cheaply.
    async fn backlog_age(&self) -> Result<Option<Duration>, BusError> {
        Ok(None)
    }
}

/// ARM as a step sees it: create-or-update, patch, delete, poll, read.
#[async_trait]
pub trait Arm: Send + Sync {
    /// Create-or-update: the resource as the PUT answered it, and `Some(poll)`
    /// while Azure is still working on it.
    async fn put(
        &self,
        id: &ResourceId,
        api_version: &str,
        body: &Value,
    ) -> Result<flotilla_azure::PutStart, AzureError>;
    /// Partial update; `Some(poll)` while Azure is still working on it.
    async fn patch(
        &self,
        id: &ResourceId,
        api_version: &str,
        body: &Value,
    ) -> Result<Option<PollState>, AzureError>;
    /// Starts a delete; a missing resource is [`DeleteStart::Gone`].
    async fn delete(&self, id: &ResourceId, api_version: &str) -> Result<DeleteStart, AzureError>;
    /// Checks a running operation once.
    async fn poll(&self, poll: &PollState) -> Result<PollOutcome, AzureError>;
    /// Reads a resource or a sub-path of it (`instanceView`); `None` when missing.
    async fn get(
        &self,
        id: &ResourceId,
        sub_path: Option<&str>,
        api_version: &str,
    ) -> Result<Option<Value>, AzureError>;
    /// A POST action such as `listKeys`.
    async fn action(
        &self,
        id: &ResourceId,
        action: &str,
        api_version: &str,
    ) -> Result<Value, AzureError>;
    /// The resources of one resource group, or only those carrying tag
    /// `name = value` (whose tags the answer then leaves out), with type,
    /// tags and creation time. A missing resource group holds nothing.
    async fn list_resources(
        &self,
        resource_group: &str,
        tag: Option<(&str, &str)>,
    ) -> Result<Vec<Listed>, AzureError>;
    /// The resources of a resource group whose name contains `fragment`, as
    /// [`Arm::list_resources`] lists them (ARM filters them itself).
    async fn list_named(
        &self,
        resource_group: &str,
        fragment: &str,
    ) -> Result<Vec<Listed>, AzureError> {
        let all = self.list_resources(resource_group, None).await?;
        Ok(all
            .into_iter()
            .filter(|l| {
                l.name
                    .to_ascii_lowercase()
                    .contains(&fragment.to_ascii_lowercase())
            })
            .collect())
    }
    /// Pre-flight: the VNets of a resource group, each as its id and address
    /// prefixes; a missing group holds none.
    async fn list_vnets(
        &self,
        resource_group: &str,
    ) -> Result<Vec<flotilla_azure::VnetPrefixes>, AzureError>;
    /// Pre-flight: the VM sizes offered to the subscription in `location`,
    /// with their zones, vCPUs, quota family and restrictions.
    async fn resource_skus(&self, location: &str) -> Result<Vec<ResourceSku>, AzureError>;
    /// Pre-flight: Compute usages and limits in `location` (`cores` and
    /// one entry per VM family).
    async fn compute_usages(&self, location: &str) -> Result<Vec<Usage>, AzureError>;
    /// Pre-flight: what the caller may do on a resource group; `None` when
    /// the group does not exist.
    async fn permissions(
        &self,
        resource_group: &str,
    ) -> Result<Option<Vec<Permission>>, AzureError>;
}

/// The Key Vault secrets of the cluster.
#[async_trait]
pub trait Secrets: Send + Sync {
    /// The secret's id (URL without version), recorded in the undo log.
    fn secret_id(&self, name: &str) -> String;
    async fn get(&self, name: &str) -> Result<Option<String>, AzureError>;
    async fn set(
        &self,
        name: &str,
        value: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AzureError>;
    /// Creates a secret with `value` unless it exists, whatever its value:
    /// for placeholders, which must never replace what a node wrote since
    /// (a late retry of a handler whose claim another one took).
    async fn create_if_absent(
        &self,
        name: &str,
        value: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AzureError>;
    /// Deletes a secret; a missing one is success.
    async fn delete(&self, name: &str) -> Result<(), AzureError>;
    /// Purges the deleted secret `name` where the vault allows it; says what
    /// is left (see [`Purge`]).
    async fn purge(&self, name: &str) -> Result<Purge, AzureError>;
    /// Every secret (never a value) with its tags and creation time.
    async fn list(&self) -> Result<Vec<Listed>, AzureError>;
}

/// The staging blob container.
#[async_trait]
pub trait Blobs: Send + Sync {
    /// The blob's URL, recorded in the undo log.
    fn blob_url(&self, name: &str) -> String;
    async fn put(
        &self,
        name: &str,
        content: Vec<u8>,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), AzureError>;
    /// Deletes a blob; a missing one is success.
    async fn delete(&self, name: &str) -> Result<(), AzureError>;
    /// The blobs whose name starts with `prefix`, with metadata and creation time.
    async fn list(&self, prefix: Option<&str>) -> Result<Vec<Listed>, AzureError>;
}

/// A node as the cluster's API server lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeNode {
    pub name: String,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
    pub labels: BTreeMap<String, String>,
}

/// The cluster's Kubernetes API server, as `join` sees it: reached with the
/// admin kubeconfig the first master published (through the load balancer).
#[async_trait]
pub trait KubeApi: Send + Sync {
    /// Every registered node. `kubeconfig` is the kubeconfig document (JSON);
    /// an API server that does not answer yet is a retryable error.
    async fn nodes(&self, kubeconfig: &str) -> Result<Vec<KubeNode>, AzureError>;
}

/// What time it is (the engine's only source of "now", so tests can move it).
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
