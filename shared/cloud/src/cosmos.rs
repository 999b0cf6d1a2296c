//! The Cosmos DB saga store: [`SagaStore`] on an Azure Cosmos DB (NoSQL)
//! container, through `azure_data_cosmos` 1.0.
//!
//! # Layout
//! One item per saga: the saga JSON itself, whose `id` is the job id and also
//! the partition key (the container is partitioned on `/id`). The store's
//! [`ETag`] is the item's `_etag`. Documents handed back by [`get`] and
//! [`list`] have the Cosmos system properties (`_rid`, `_self`, `_etag`,
//! `_attachments`, `_ts`) removed, so they compare equal to what was written.
//! A document must be a JSON object; if it has no `id` the store adds the job
//! id, and one whose `id` names another job is refused.
//!
//! # Outbox
//! Cosmos DB cannot commit a Service Bus send with an item write, so
//! [`SagaStore::delivers_outbox`] is false: the engine stores the events in
//! the saga document itself (one If-Match replace) and sends them after the
//! write; they leave the document with the next step's own write, once its
//! load knows they reached the bus (see `flotilla_core::engine::txn`).
//!
//! # Errors
//! 409 → [`StoreError::Conflict`], 412 → [`StoreError::PreconditionFailed`],
//! 404 on replace → [`StoreError::NotFound`], everything else (429 and 503
//! after the SDK's own retries, timeouts, transport failures, 401/403) →
//! [`StoreError::Unavailable`].
//!
//! # A missing item that answers 500
//! The local emulator (`@vercel/cosmosdb-server`) answers a point read of a
//! missing item with 500 instead of 404 (its handler dereferences the missing
//! document). A 500 from a point read is therefore never taken at face value
//! and never guessed from the error text: [`get`] confirms with a
//! single-partition query (`SELECT * FROM c WHERE c.id = @id`, scoped to the
//! item's partition key). No row means the item does not exist (`Ok(None)`); a
//! row is returned as the document; a failing query is `Unavailable`. Against
//! Azure a 500 is rare, and the extra query costs one request.
//!
//! # TLS
//! Production endpoints (`https://<account>.documents.azure.com/`) use the
//! SDK's default transport with full certificate validation. The SDK 1.0 does
//! not let a caller supply the HTTP transport or extra trust anchors (its
//! `HttpClientFactory` is internal), so for a *loopback* endpoint only
//! (`127.0.0.1`, `localhost`, `[::1]` — the local emulator, which serves a
//! certificate generated at test time) the store builds its own runtime with
//! the SDK's documented emulator option
//! [`ServerCertificateValidation::RequiredUnlessEmulator`]: certificates are
//! not validated for those emulator hosts and are validated for every other
//! host. That runtime also speaks HTTP/1.1 only and disables the gateway v2
//! (thin client) path, which the emulator lacks.
//!
//! # Encoding
//! The SDK's binary JSON encoding is switched off: items travel as text JSON,
//! which the emulator understands, so production runs the tested code path.
//!
//! # Routing
//! The store uses `RoutingStrategy::PreferredRegions(vec![])`, i.e. the
//! account's own region order. The emulator's account metadata advertises a
//! single location, the address it listens on, so the client stays on
//! `127.0.0.1` (the emulator must listen on the address used in the endpoint).
//!
//! # Provisioning
//! [`CosmosSagaStore::connect`] opens the container and, only if it is
//! missing, creates the database and the container (partition key `/id`).
//! On Azure the Bicep template creates both and the app's identity holds only
//! data-plane rights: the existing container is found by the first read and
//! no creation is attempted (a 403 on creating the database is tolerated, in
//! case only the container is missing; a 403 on creating the container is
//! reported as `Unavailable`, naming the missing container).
//!
//! # Emulator gaps
//! `scripts/emulators/cosmos.js` patches two `cosmosdb-server` gaps in front
//! of its handlers: partition key range ids are sent as strings (the SDK's
//! topology cache refuses numbers), and a query addressed to a partition key
//! range is treated as cross-partition (the emulator has a single range).
//!
//! Keys are never logged: [`CosmosAuth`]'s `Debug` hides them.
//!
//! [`get`]: SagaStore::get
//! [`list`]: SagaStore::list

use async_trait::async_trait;
use azure_core::credentials::{Secret, TokenCredential};
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::models::ContainerProperties;
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, ItemWriteOptions, Precondition,
    ServerCertificateValidation,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosError, CosmosRuntime, FeedScope, Query,
    RoutingStrategy,
};
use flotilla_core::ports::{ETag, OutMessage, SagaStore, StoreError, StoredDoc};
use flotilla_core::saga::JobStatus;
use futures::TryStreamExt;
use serde_json::{Map, Value};
use std::sync::Arc;

/// The Cosmos system properties removed from documents before they are
/// handed back.
pub const SYSTEM_PROPERTIES: [&str; 5] = ["_rid", "_self", "_etag", "_attachments", "_ts"];

/// The partition key path of the saga container.
pub const PARTITION_KEY_PATH: &str = "/id";

/// How the store authenticates to the account.
#[derive(Clone)]
pub enum CosmosAuth {
    /// An account key (the local emulator, tests).
    Key(String),
    /// An Entra ID token credential (production: the managed identity).
    Token(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for CosmosAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CosmosAuth::Key(_) => f.write_str("Key(<redacted>)"),
            CosmosAuth::Token(_) => f.write_str("Token(..)"),
        }
    }
}

/// Where the saga container lives and how to reach it.
#[derive(Clone, Debug)]
pub struct CosmosOptions {
    /// The account endpoint, e.g. `https://<account>.documents.azure.com:443/`
    /// or `https://127.0.0.1:<port>/` for the emulator.
    pub endpoint: String,
    /// The database id.
    pub database: String,
    /// The container id (partitioned on `/id`).
    pub container: String,
    pub auth: CosmosAuth,
}

/// [`SagaStore`] on a Cosmos DB container. See the module documentation.
#[derive(Clone)]
pub struct CosmosSagaStore {
    container: ContainerClient,
}

impl std::fmt::Debug for CosmosSagaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CosmosSagaStore")
    }
}

impl CosmosSagaStore {
    /// Connects to the account, and opens (creating it and its database if
    /// missing) the saga container.
    pub async fn connect(options: CosmosOptions) -> Result<Self, StoreError> {
        let url = url::Url::parse(&options.endpoint).map_err(|e| {
            StoreError::Unavailable(format!(
                "bad Cosmos DB endpoint {:?}: {e}",
                options.endpoint
            ))
        })?;
        let endpoint: AccountEndpoint = options
            .endpoint
            .parse()
            .map_err(|e: CosmosError| unavailable("bad Cosmos DB endpoint", &e))?;
        let account = match options.auth {
            CosmosAuth::Key(key) => {
                AccountReference::with_authentication_key(endpoint, Secret::new(key))
            }
            CosmosAuth::Token(credential) => {
                AccountReference::with_credential(endpoint, credential)
            }
        };

        // Text JSON on the wire everywhere: the encoding the emulator speaks,
        // so production runs the code path the tests exercise.
        let mut builder = CosmosClient::builder()
            .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false));
        if is_loopback(&url) {
            let pool = ConnectionPoolOptions::builder()
                .with_server_certificate_validation(
                    ServerCertificateValidation::RequiredUnlessEmulator,
                )
                .with_is_http2_allowed(false)
                .with_gateway_v2_disabled(true)
                .build()
                .map_err(|e| unavailable("cannot configure the Cosmos DB connection pool", &e))?;
            let runtime = CosmosRuntime::builder()
                .with_connection_pool(pool)
                .build()
                .await
                .map_err(|e| unavailable("cannot build the Cosmos DB runtime", &e))?;
            builder = builder.with_runtime(runtime);
        }
        let client = builder
            .build(account, RoutingStrategy::PreferredRegions(Vec::new()))
            .await
            .map_err(|e| unavailable("cannot reach the Cosmos DB account", &e))?;

        let container = open_or_create(&client, &options.database, &options.container).await?;
        tracing::debug!(
            database = %options.database,
            container = %options.container,
            "Cosmos DB saga store ready"
        );
        Ok(CosmosSagaStore { container })
    }

    /// Every document a cross-partition query returns.
    async fn query_all(&self, query: &str, what: &str) -> Result<Vec<StoredDoc>, StoreError> {
        let rows: Vec<Value> = self
            .container
            .query_items::<Value>(Query::from(query), FeedScope::full_container(), None)
            .await
            .map_err(|e| unavailable(what, &e))?
            .try_collect()
            .await
            .map_err(|e| unavailable(what, &e))?;
        rows.into_iter().map(stored).collect()
    }

    /// The confirmation query behind [`SagaStore::get`] when a point read
    /// answered 500: the item with this id in its own partition, if any.
    async fn query_one(&self, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        let query = Query::from("SELECT * FROM c WHERE c.id = @id")
            .with_parameter("@id", id)
            .map_err(|e| unavailable("cannot build the query", &e))?;
        let rows: Vec<Value> = self
            .container
            .query_items::<Value>(query, FeedScope::partition(id.to_string()), None)
            .await
            .map_err(|e| unavailable(&format!("query for {id}"), &e))?
            .try_collect()
            .await
            .map_err(|e| unavailable(&format!("query for {id}"), &e))?;
        match rows.into_iter().next() {
            None => Ok(None),
            Some(row) => stored(row).map(Some),
        }
    }
}

/// The sweeper's query: documents that hold events (`outbox` is left out of
/// a document when empty), and those whose job is not settled (a terminal
/// status and nothing `pending`) or that do not say their status at all.
fn unsettled_query() -> String {
    format!(
        "SELECT * FROM c WHERE IS_DEFINED(c.outbox) OR NOT (IS_STRING(c.status) \
         AND c.status IN ({}) AND IS_NULL(c.pending))",
        JobStatus::terminal_in_list()
    )
}

/// Opens the container; if it (or its database) does not exist, creates it.
async fn open_or_create(
    client: &CosmosClient,
    database: &str,
    container: &str,
) -> Result<ContainerClient, StoreError> {
    let db = client.database_client(database);
    match db.container_client(container, None).await {
        Ok(c) => return Ok(c),
        Err(e) if status(&e) == 404 => {}
        Err(e) => {
            return Err(unavailable(
                &format!("cannot open container {database}/{container}"),
                &e,
            ))
        }
    }
    match client.create_database(database, None).await {
        Ok(_) => tracing::info!(%database, "created Cosmos DB database"),
        Err(e) if status(&e) == 409 => {}
        // No right to create databases: it may exist all the same (only the
        // container was missing); creating the container will tell.
        Err(e) if status(&e) == 403 => {
            tracing::warn!(%database, "not allowed to create the database; assuming it exists")
        }
        Err(e) => {
            return Err(unavailable(
                &format!("database {database} is missing and cannot be created"),
                &e,
            ))
        }
    }
    let properties = ContainerProperties::new(container.to_string(), PARTITION_KEY_PATH.into());
    match db.create_container(properties, None).await {
        Ok(_) => tracing::info!(%database, %container, "created Cosmos DB container"),
        Err(e) if status(&e) == 409 => {}
        Err(e) => {
            return Err(unavailable(
                &format!("container {database}/{container} is missing and cannot be created"),
                &e,
            ))
        }
    }
    db.container_client(container, None)
        .await
        .map_err(|e| unavailable(&format!("cannot open container {database}/{container}"), &e))
}

/// True for the hosts the SDK treats as the local emulator.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn status(e: &CosmosError) -> u16 {
    u16::from(e.status().status_code())
}

fn unavailable(what: &str, e: &CosmosError) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// The body to write: `doc` with `id` set to the job id.
fn body_for(id: &str, doc: &Value) -> Result<Value, StoreError> {
    let Value::Object(map) = doc else {
        return Err(StoreError::Corrupt(format!(
            "document {id} is not a JSON object"
        )));
    };
    match map.get("id") {
        None => {
            let mut map = map.clone();
            map.insert("id".to_string(), Value::String(id.to_string()));
            Ok(Value::Object(map))
        }
        Some(Value::String(s)) if s == id => Ok(doc.clone()),
        Some(other) => Err(StoreError::Corrupt(format!(
            "document stored under {id} carries id {other}"
        ))),
    }
}

/// A stored item → [`StoredDoc`]: id and `_etag` read out, system fields removed.
fn stored(item: Value) -> Result<StoredDoc, StoreError> {
    let Value::Object(mut map) = item else {
        return Err(StoreError::Corrupt(
            "Cosmos DB returned an item that is not a JSON object".into(),
        ));
    };
    let etag = match map.get("_etag") {
        Some(Value::String(s)) => ETag(s.clone()),
        _ => return Err(StoreError::Corrupt("item without _etag".into())),
    };
    let id = match map.get("id") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(StoreError::Corrupt("item without a string id".into())),
    };
    strip_system(&mut map);
    Ok(StoredDoc {
        id,
        etag,
        doc: Value::Object(map),
    })
}

fn strip_system(map: &mut Map<String, Value>) {
    for key in SYSTEM_PROPERTIES {
        map.remove(key);
    }
}

/// The ETag of a write response.
fn write_etag(
    id: &str,
    response: &azure_data_cosmos::models::ItemResponse,
) -> Result<ETag, StoreError> {
    response
        .headers()
        .etag()
        .map(|e| ETag(e.to_string()))
        .ok_or_else(|| StoreError::Corrupt(format!("write of {id} answered without an ETag")))
}

#[async_trait]
impl SagaStore for CosmosSagaStore {
    async fn create(
        &self,
        id: &str,
        doc: &Value,
        _outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        let body = body_for(id, doc)?;
        match self
            .container
            .create_item(id.to_string(), id, &body, None)
            .await
        {
            Ok(response) => write_etag(id, &response),
            Err(e) if status(&e) == 409 => Err(StoreError::Conflict(id.to_string())),
            Err(e) => Err(unavailable(&format!("create {id}"), &e)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        match self.container.read_item(id.to_string(), id, None).await {
            Ok(response) => {
                let item: Value = response
                    .into_model()
                    .map_err(|e| StoreError::Corrupt(format!("item {id}: {e}")))?;
                stored(item).map(Some)
            }
            Err(e) if status(&e) == 404 => Ok(None),
            // cosmosdb-server answers 500 for a missing item: confirm by query.
            Err(e) if status(&e) == 500 => {
                tracing::debug!(%id, "point read answered 500; confirming by query");
                self.query_one(id).await
            }
            Err(e) => Err(unavailable(&format!("read {id}"), &e)),
        }
    }

    async fn replace(
        &self,
        id: &str,
        doc: &Value,
        if_match: &ETag,
        _outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        let body = body_for(id, doc)?;
        let options = ItemWriteOptions::default()
            .with_precondition(Precondition::if_match(if_match.0.clone()));
        match self
            .container
            .replace_item(id.to_string(), id, &body, Some(options))
            .await
        {
            Ok(response) => write_etag(id, &response),
            Err(e) if status(&e) == 412 => Err(StoreError::PreconditionFailed(id.to_string())),
            Err(e) if status(&e) == 404 => Err(StoreError::NotFound(id.to_string())),
            Err(e) => Err(unavailable(&format!("replace {id}"), &e)),
        }
    }

    async fn list(&self) -> Result<Vec<StoredDoc>, StoreError> {
        self.query_all("SELECT * FROM c", "list").await
    }

    /// Every document but a settled job's that holds no events, in one
    /// pass (the query is evaluated by Cosmos DB, so a sweep reads what is
    /// in flight, not every job kept); a later page is empty. `quiet_before`
    /// is not used: the timestamps are strings of varying length here.
    async fn list_sweepable_after(
        &self,
        after: Option<&str>,
        _limit: usize,
        _quiet_before: time::OffsetDateTime,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        if after.is_some() {
            return Ok(vec![]);
        }
        self.query_all(&unsettled_query(), "list the unsettled sagas")
            .await
    }

    fn delivers_outbox(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn system_fields_are_stripped() {
        let item = json!({"id": "a", "n": 1, "_rid": "r", "_self": "s", "_etag": "\"e\"",
                          "_attachments": "att/", "_ts": 5});
        let d = stored(item).unwrap();
        assert_eq!(d.id, "a");
        assert_eq!(d.etag, ETag("\"e\"".into()));
        assert_eq!(d.doc, json!({"id": "a", "n": 1}));
    }

    #[test]
    fn body_sets_or_checks_the_id() {
        assert_eq!(
            body_for("a", &json!({"n": 1})).unwrap(),
            json!({"id": "a", "n": 1})
        );
        assert!(body_for("a", &json!({"id": "b"})).is_err());
        assert!(body_for("a", &json!([1])).is_err());
    }

    #[test]
    fn loopback_hosts() {
        for (u, want) in [
            ("https://127.0.0.1:8081/", true),
            ("https://localhost:8081/", true),
            ("https://[::1]:8081/", true),
            ("https://acct.documents.azure.com:443/", false),
        ] {
            assert_eq!(is_loopback(&url::Url::parse(u).unwrap()), want, "{u}");
        }
    }

    #[test]
    fn auth_debug_hides_the_key() {
        let s = format!("{:?}", CosmosAuth::Key("sekrit".into()));
        assert!(!s.contains("sekrit"));
    }
}
