//! An in-memory world for the engine's own tests: a clock you move by hand, a
//! saga store without a transactional outbox (as Cosmos DB), a bus whose
//! scheduled messages follow that clock and whose sends can be refused or
//! lost, and a cloud (ARM, secrets, blobs) whose calls can be made to fail.
//! Everything is deterministic: no sockets, no sleeps.
//!
//! [`World::pump`] plays the consumer: it settles every visible message the
//! way `run_worker` does, until none is left.

use crate::decide::Policy;
use crate::engine::{settle, Azure, Delivered, Engine, Settlement};
use crate::ports::{
    Arm, Blobs, BusError, Clock, DeadLetter, Delivery, ETag, EventBus, KubeApi, KubeNode, Listed,
    OutMessage, Permission, Purge, ResourceSku, SagaStore, Secrets, StoreError, StoredDoc, Usage,
};
use crate::steps::Env;
use async_trait::async_trait;
use base64::Engine as _;
use flotilla_azure::arm::{DeleteStart, PollOutcome, PollVia};
use flotilla_azure::{AzureError, PollState, ResourceId};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use time::OffsetDateTime;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(
            OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid instant"),
        )))
    }

    pub fn advance(&self, d: Duration) {
        *lock(&self.0) += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *lock(&self.0)
    }
}

/// A saga store that cannot publish with its writes (`delivers_outbox` is
/// false, as on Cosmos DB), with ETags and a switch that fails writes.
#[derive(Default)]
pub struct MemoryStore {
    docs: Mutex<HashMap<String, (u64, Value)>>,
    version: AtomicU64,
    /// Replaces left to refuse with `Unavailable` (a store outage).
    pub fail_replaces: AtomicU64,
    /// How many times every document was listed.
    pub lists: AtomicU64,
}

impl MemoryStore {
    /// Removes a document (a saga lost from the store).
    pub fn remove(&self, id: &str) {
        lock(&self.docs).remove(id);
    }

    /// Overwrites a document with anything (to corrupt it).
    pub fn overwrite(&self, id: &str, doc: Value) {
        let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        lock(&self.docs).insert(id.into(), (v, doc));
    }
}

#[async_trait]
impl SagaStore for MemoryStore {
    async fn create(&self, id: &str, doc: &Value, _: &[OutMessage]) -> Result<ETag, StoreError> {
        let mut docs = lock(&self.docs);
        if docs.contains_key(id) {
            return Err(StoreError::Conflict(id.into()));
        }
        let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        docs.insert(id.into(), (v, doc.clone()));
        Ok(ETag(v.to_string()))
    }

    async fn get(&self, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        Ok(lock(&self.docs).get(id).map(|(v, d)| StoredDoc {
            id: id.into(),
            etag: ETag(v.to_string()),
            doc: d.clone(),
        }))
    }

    async fn replace(
        &self,
        id: &str,
        doc: &Value,
        if_match: &ETag,
        _: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        if self
            .fail_replaces
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable("injected store outage".into()));
        }
        let mut docs = lock(&self.docs);
        let Some((v, _)) = docs.get(id) else {
            return Err(StoreError::NotFound(id.into()));
        };
        if v.to_string() != if_match.0 {
            return Err(StoreError::PreconditionFailed(id.into()));
        }
        let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        docs.insert(id.into(), (v, doc.clone()));
        Ok(ETag(v.to_string()))
    }

    async fn list(&self) -> Result<Vec<StoredDoc>, StoreError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        Ok(lock(&self.docs)
            .iter()
            .map(|(id, (v, d))| StoredDoc {
                id: id.clone(),
                etag: ETag(v.to_string()),
                doc: d.clone(),
            })
            .collect())
    }

    async fn etag(&self, id: &str) -> Result<Option<ETag>, StoreError> {
        Ok(lock(&self.docs).get(id).map(|(v, _)| ETag(v.to_string())))
    }

    fn delivers_outbox(&self) -> bool {
        false
    }

    /// Versions are in this process's memory, so the engine keeps its
    /// sagas (`engine::kept`) in every test on this store.
    fn etag_is_local(&self) -> bool {
        true
    }
}

struct Queued {
    msg: OutMessage,
    deliveries: u32,
    locked: bool,
    /// When it was enqueued (the clock's time).
    enqueued: OffsetDateTime,
}

/// A bus with Service Bus semantics on the manual clock: scheduled messages
/// become visible when the clock reaches them; duplicate ids are dropped.
pub struct MemoryBus {
    clock: Arc<ManualClock>,
    queue: Mutex<Vec<Queued>>,
    seen: Mutex<HashSet<String>>,
    dead: Mutex<Vec<DeadLetter>>,
    /// Sends left to refuse with `Unavailable` (nothing enqueued).
    pub refuse_sends: AtomicU64,
    /// Sends left to accept and silently drop (a lost message).
    pub lose_sends: AtomicU64,
    /// Messages accepted (after duplicate detection).
    pub sent: AtomicU64,
    /// The bodies of the messages accepted, in order.
    accepted: Mutex<Vec<Vec<u8>>>,
    pub max_delivery_count: u32,
}

fn take_one(n: &AtomicU64) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl MemoryBus {
    pub fn new(clock: Arc<ManualClock>) -> MemoryBus {
        MemoryBus {
            clock,
            queue: Mutex::new(vec![]),
            seen: Mutex::new(HashSet::new()),
            dead: Mutex::new(vec![]),
            refuse_sends: AtomicU64::new(0),
            lose_sends: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            accepted: Mutex::new(vec![]),
            max_delivery_count: 10,
        }
    }

    /// Messages waiting (visible or scheduled).
    pub fn pending(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Every event accepted so far, in order.
    pub fn sent_events(&self) -> Vec<crate::events::CloudEvent> {
        lock(&self.accepted)
            .iter()
            .map(|b| crate::events::CloudEvent::from_json(b).expect("flotilla sends events"))
            .collect()
    }

    /// Puts a message on the bus as if someone else had sent it.
    pub fn inject(&self, msg: OutMessage) {
        lock(&self.queue).push(Queued {
            msg,
            deliveries: 0,
            locked: false,
            enqueued: self.clock.now(),
        });
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn send(&self, messages: &[OutMessage]) -> Result<(), BusError> {
        if take_one(&self.refuse_sends) {
            return Err(BusError::Unavailable("injected: send refused".into()));
        }
        if take_one(&self.lose_sends) {
            return Ok(());
        }
        let mut seen = lock(&self.seen);
        for m in messages {
            if seen.insert(m.id.clone()) {
                self.sent.fetch_add(1, Ordering::SeqCst);
                lock(&self.accepted).push(m.body.clone());
                self.inject(m.clone());
            }
        }
        Ok(())
    }

    async fn backlog_age(&self) -> Result<Option<Duration>, BusError> {
        let now = self.clock.now();
        let oldest = lock(&self.queue)
            .iter()
            .filter(|e| !e.locked)
            .map(|e| e.msg.not_before.map_or(e.enqueued, |t| t.max(e.enqueued)))
            .filter(|&t| t <= now)
            .min();
        Ok(Some(oldest.map_or(Duration::ZERO, |t| {
            (now - t).try_into().unwrap_or_default()
        })))
    }

    async fn receive(&self, _wait: Duration) -> Result<Option<Delivery>, BusError> {
        let now = self.clock.now();
        let mut q = lock(&self.queue);
        let next = q
            .iter_mut()
            .filter(|e| !e.locked && e.msg.not_before.is_none_or(|t| t <= now))
            .min_by_key(|e| e.msg.not_before);
        Ok(next.map(|e| {
            e.locked = true;
            e.deliveries += 1;
            Delivery {
                message_id: e.msg.id.clone(),
                event_type: e.msg.event_type.clone(),
                body: e.msg.body.clone(),
                delivery_count: e.deliveries,
                lock_token: e.msg.id.clone(),
            }
        }))
    }

    async fn complete(&self, d: &Delivery) -> Result<(), BusError> {
        lock(&self.queue).retain(|e| !(e.locked && e.msg.id == d.lock_token));
        Ok(())
    }

    async fn abandon(&self, d: &Delivery) -> Result<(), BusError> {
        let mut q = lock(&self.queue);
        if let Some(i) = q.iter().position(|e| e.locked && e.msg.id == d.lock_token) {
            if q[i].deliveries >= self.max_delivery_count {
                let e = q.remove(i);
                lock(&self.dead).push(DeadLetter {
                    message_id: e.msg.id,
                    event_type: e.msg.event_type,
                    body: e.msg.body,
                    delivery_count: e.deliveries,
                    reason: "MaxDeliveryCountExceeded".into(),
                });
            } else {
                q[i].locked = false;
            }
        }
        Ok(())
    }

    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<(), BusError> {
        let mut q = lock(&self.queue);
        if let Some(i) = q.iter().position(|e| e.locked && e.msg.id == d.lock_token) {
            let e = q.remove(i);
            lock(&self.dead).push(DeadLetter {
                message_id: e.msg.id,
                event_type: e.msg.event_type,
                body: e.msg.body,
                delivery_count: e.deliveries,
                reason: reason.into(),
            });
        }
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BusError> {
        Ok(lock(&self.dead).clone())
    }
}

/// A call the cloud will fail: matched by operation and a substring of the
/// resource id (or secret / blob name).
#[derive(Clone, Debug)]
pub struct Fault {
    /// `put`, `patch`, `delete`, `poll`, `get`, `action`, `list` (target:
    /// the resource group), `secret.set`, `secret.get`, `secret.delete`,
    /// `secret.purge`, `secret.list`, `blob.put`, `blob.delete`, `blob.list`.
    pub op: &'static str,
    pub target: String,
    pub error: AzureError,
    /// Calls left to fail.
    pub times: u32,
}

/// A secret or a blob in the fake cloud: its content, tags (blob metadata) and birth.
#[derive(Clone)]
struct Item {
    content: Vec<u8>,
    tags: BTreeMap<String, String>,
    created: OffsetDateTime,
}

/// Hashes the fake cloud's keys (resource ids that share their first hundred
/// bytes, and runs of four bytes) faster than the standard hasher, without
/// its resistance to keys crafted to collide, which a fake does not need.
type Fast = foldhash::fast::RandomState;

/// The fake cloud's ARM resources (lower-cased id → (id, body)), with the
/// indexes that keep a bench of thousands of jobs linear: the usage each
/// VM size family has, each job's scale sets, and the names that hold each
/// run of four bytes. Read through the map (in no particular order: what
/// lists them sorts by key); written only through [`Resources::insert`] and
/// [`Resources::remove`].
#[derive(Default)]
struct Resources {
    by_key: HashMap<String, (String, Value), Fast>,
    /// Every key ever created, once per create: what `grams` points into.
    created: Vec<Arc<str>>,
    /// For each run of four bytes, the creates (places in `created`) whose
    /// (lower-cased) name holds it at an offset that is a multiple of
    /// [`GRAM_STRIDE`]. A key removed since may still be listed
    /// (and is then checked against `by_key`), which keeps an insert a push.
    grams: HashMap<[u8; 4], Vec<u32>, Fast>,
    /// vCPUs in use per usage name (lower case): each family, and `cores`.
    used: BTreeMap<String, i64>,
    /// The scale sets (keys) each job (its `flotilla-job` tag) has.
    sets_of_job: BTreeMap<String, BTreeSet<String>>,
}

/// The length of the runs [`Resources`] indexes names by.
const GRAM: usize = 4;
/// Every how many bytes of a name a run starts that is indexed: a quarter
/// of the runs to push per create, for fragments of at least
/// `GRAM + GRAM_STRIDE - 1` bytes (job ids are longer); shorter ones read
/// every name.
const GRAM_STRIDE: usize = 4;

/// A resource id's last segment: its name.
fn name_of(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl std::ops::Deref for Resources {
    type Target = HashMap<String, (String, Value), Fast>;
    fn deref(&self) -> &Self::Target {
        &self.by_key
    }
}

impl Resources {
    fn insert(&mut self, key: String, entry: (String, Value)) -> Option<(String, Value)> {
        let old = self.by_key.remove(&key);
        match &old {
            Some((_, body)) => self.count(&key, body, -1),
            // A key's name never changes: its runs are indexed once per create.
            None => {
                let place = u32::try_from(self.created.len()).unwrap_or(u32::MAX);
                for w in name_of(&key).as_bytes().windows(GRAM).step_by(GRAM_STRIDE) {
                    let gram = [w[0], w[1], w[2], w[3]];
                    self.grams.entry(gram).or_default().push(place);
                }
                self.created.push(Arc::from(key.as_str()));
            }
        }
        self.count(&key, &entry.1, 1);
        self.by_key.insert(key, entry);
        old
    }

    /// Every (key, (id, body)), in key order.
    fn sorted(&self) -> Vec<(&String, &(String, Value))> {
        let mut all: Vec<_> = self.by_key.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all
    }

    fn remove(&mut self, key: &str) -> Option<(String, Value)> {
        let old = self.by_key.remove(key);
        if let Some((_, body)) = &old {
            self.count(key, body, -1);
        }
        old
    }

    /// The keys whose name contains `fragment` (lower case), as ARM's
    /// `substringof` matches them, in key order: read from the rarest run
    /// of the fragment's, so a listing reads a few names instead of all.
    fn named_like(&self, fragment: &str) -> Vec<&str> {
        let holds = |key: &&str| self.by_key.contains_key(*key) && name_of(key).contains(fragment);
        let postings = |w: &[u8]| {
            let gram = [w[0], w[1], w[2], w[3]];
            self.grams.get(&gram).map_or(&[][..], Vec::as_slice)
        };
        let mut keys: Vec<&str> = if fragment.len() >= GRAM + GRAM_STRIDE - 1 {
            // Wherever the fragment sits in a name, for one of the strides'
            // offsets its runs at that offset, every stride apart, are runs
            // the name was indexed under: the rarest of each offset's runs
            // holds every name with the fragment at that offset.
            let runs: Vec<&[u8]> = fragment.as_bytes().windows(GRAM).collect();
            (0..GRAM_STRIDE)
                .filter_map(|offset| {
                    runs.iter()
                        .skip(offset)
                        .step_by(GRAM_STRIDE)
                        .map(|w| postings(w))
                        .min_by_key(|places| places.len())
                })
                .flatten()
                .filter_map(|&p| self.created.get(p as usize))
                .map(|k| &**k)
                .filter(holds)
                .collect()
        } else {
            self.by_key
                .keys()
                .map(String::as_str)
                .filter(holds)
                .collect()
        };
        // A key created again is listed once per create.
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Adds (`sign` 1) or takes away (-1) what `body` at `key` counts for:
    /// its vCPUs, and its place among its job's scale sets.
    fn count(&mut self, key: &str, body: &Value, sign: i64) {
        let sku = body
            .pointer("/sku/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let n = body
            .pointer("/sku/capacity")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if let Some((_, vcpus, family)) = FAKE_SIZES
            .iter()
            .find(|(s, ..)| s.eq_ignore_ascii_case(sku))
        {
            let cores = sign * n * i64::from(*vcpus);
            *self.used.entry(family.to_ascii_lowercase()).or_default() += cores;
            *self.used.entry("cores".into()).or_default() += cores;
        }
        if !key.contains("/virtualmachinescalesets/") {
            return;
        }
        let Some(job) = body.pointer("/tags/flotilla-job").and_then(Value::as_str) else {
            return;
        };
        if sign > 0 {
            self.sets_of_job
                .entry(job.to_string())
                .or_default()
                .insert(key.to_string());
        } else if let Some(sets) = self.sets_of_job.get_mut(job) {
            sets.remove(key);
            if sets.is_empty() {
                self.sets_of_job.remove(job);
            }
        }
    }
}

#[derive(Default)]
struct CloudState {
    /// ARM resources: lower-cased id → (id, body).
    resources: Resources,
    /// When each ARM resource (lower-cased id) was first created.
    born: HashMap<String, OffsetDateTime, Fast>,
    /// Operations in flight: poll URL → (polls left, resource id, is delete).
    operations: HashMap<String, (u32, String, bool)>,
    secrets: BTreeMap<String, Item>,
    /// Soft-deleted secrets: name → when Azure would purge them.
    deleted_secrets: BTreeMap<String, OffsetDateTime>,
    blobs: BTreeMap<String, Item>,
    faults: Vec<Fault>,
    /// Creates per resource id (PUTs of a resource that did not exist).
    creates: HashMap<String, u32, Fast>,
    /// Every delete that reached the cloud, in order (ARM ids, secret and blob names).
    deletes: Vec<String>,
    calls: u64,
    /// Secrets written back once right after their purge (a stale handler's
    /// late write), with their tags.
    comebacks: BTreeMap<String, BTreeMap<String, String>>,
    /// ARM ids (lowercase suffixes) put back once right after their delete.
    arm_comebacks: Vec<String>,
    /// Per scale set name: the last N instances never register with the API
    /// server, and their init extension's message.
    unregistered: BTreeMap<String, (u32, String)>,
    /// Per scale set name: the last N instances' init extension failed, with this message.
    init_failures: BTreeMap<String, (u32, String)>,
    /// Per scale set name: how many more of its writes leave it `Failed`.
    failing_writes: BTreeMap<String, u32>,
    /// Scale sets (names) that are `Failed` now: no node registers until a write succeeds.
    failed_sets: BTreeSet<String>,
    /// Writes that reached the cloud: ARM PUTs and PATCHes, secret sets, blob uploads.
    writes: u64,
    /// VM sizes (lower case) not offered anywhere.
    withheld_sizes: HashSet<String>,
    /// (size, zone) pairs (lower case) not offered.
    withheld_zones: HashSet<(String, String)>,
    /// Quota limits per usage name (lower case); others are [`DEFAULT_QUOTA`].
    quotas: BTreeMap<String, i64>,
    /// Actions the caller's permissions exclude (`notActions`).
    denied_actions: Vec<String>,
    /// Resource groups (lower case) that do not exist; every other one does.
    missing_groups: HashSet<String>,
}

/// The VM sizes the fake cloud offers: (name, vCPUs, quota family). Every
/// location and zones 1–3, unless withheld.
pub const FAKE_SIZES: &[(&str, u32, &str)] = &[
    ("Standard_B2s", 2, "standardBSFamily"),
    ("Standard_D1_v2", 1, "standardDv2Family"),
    ("Standard_D2_v2", 2, "standardDv2Family"),
    ("Standard_D2s_v5", 2, "standardDSv5Family"),
    ("Standard_D4s_v5", 4, "standardDSv5Family"),
    ("Standard_D8s_v5", 8, "standardDSv5Family"),
    ("Standard_D16s_v5", 16, "standardDSv5Family"),
    ("Standard_E4s_v5", 4, "standardESv5Family"),
];

/// The fake cloud's limit of every usage without its own quota.
pub const DEFAULT_QUOTA: i64 = 100_000;

/// ARM, Key Vault, Blob and the cluster's API server in memory. Scale sets
/// take `lro_polls` polls to create or delete; their instance view reports
/// every init extension succeeded; creating the master scale set publishes
/// the job's kubeconfig (as the first master would), and the API server
/// lists every instance as a Ready node with the labels the init scripts
/// give. [`FakeCloud::never_register`] and [`FakeCloud::fail_init`] change that.
/// Deleted secrets are soft-deleted; a purge removes them unless
/// `purge_protection` is on, which keeps them for 90 days as a protected vault does.
pub struct FakeCloud {
    state: Mutex<CloudState>,
    /// Polls a scale set's create or delete takes (changeable while running).
    pub lro_polls: std::sync::atomic::AtomicU32,
    /// PUT answers leave out the principal ids ARM gives identities, so the
    /// engine has to read them back (changeable while running).
    pub omit_principals: std::sync::atomic::AtomicBool,
    pub purge_protection: bool,
    /// Creation times come from this clock (the world's, once in a [`World`]).
    clock: Arc<dyn Clock>,
}

impl Default for FakeCloud {
    fn default() -> Self {
        FakeCloud {
            state: Mutex::default(),
            lro_polls: std::sync::atomic::AtomicU32::new(1),
            omit_principals: std::sync::atomic::AtomicBool::new(false),
            purge_protection: false,
            clock: Arc::new(crate::ports::SystemClock),
        }
    }
}

/// How long a protected vault keeps a deleted secret.
pub const SOFT_DELETE_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Whether `id` lies in resource group `rg` (any subscription).
fn in_group(id: &str, rg: &str) -> bool {
    ResourceId::parse(id).is_ok_and(|r| {
        r.is_provider_resource() && r.group().is_some_and(|g| g.eq_ignore_ascii_case(rg))
    })
}

fn tags_of(body: &Value) -> BTreeMap<String, String> {
    body.get("tags")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A resource as a listing gives it.
fn listed(
    id: &str,
    tags: BTreeMap<String, String>,
    created: Option<OffsetDateTime>,
) -> Option<Listed> {
    let rid = ResourceId::parse(id).ok()?;
    Some(Listed {
        id: id.to_string(),
        name: rid.name().to_string(),
        resource_type: Some(rid.resource_type()),
        tags,
        created,
    })
}

fn has_tag(tags: &BTreeMap<String, String>, name: &str, value: &str) -> bool {
    tags.iter()
        .any(|(k, v)| k.eq_ignore_ascii_case(name) && v == value)
}

impl FakeCloud {
    /// A cloud whose vault has purge protection.
    pub fn with_purge_protection(self) -> FakeCloud {
        FakeCloud {
            purge_protection: true,
            ..self
        }
    }

    /// Makes the next `times` matching calls fail with `error`.
    pub fn fail(&self, op: &'static str, target: &str, error: AzureError, times: u32) {
        lock(&self.state).faults.push(Fault {
            op,
            target: target.to_ascii_lowercase(),
            error,
            times,
        });
    }

    fn check(&self, op: &str, target: &str) -> Result<(), AzureError> {
        let mut s = lock(&self.state);
        s.calls += 1;
        if s.faults.iter().all(|f| f.times == 0) {
            return Ok(());
        }
        let target = target.to_ascii_lowercase();
        if let Some(f) = s
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.op == op && target.contains(&f.target))
        {
            f.times -= 1;
            return Err(f.error.clone());
        }
        Ok(())
    }

    /// ARM ids that exist now, in the order of their lower-cased forms.
    pub fn resources(&self) -> Vec<String> {
        lock(&self.state)
            .resources
            .sorted()
            .into_iter()
            .map(|(_, (id, _))| id.clone())
            .collect()
    }

    /// The stored body of the ARM resource `id`, if it exists.
    pub fn body(&self, id: &str) -> Option<Value> {
        lock(&self.state)
            .resources
            .get(&id.to_ascii_lowercase())
            .map(|(_, b)| b.clone())
    }

    pub fn secrets(&self) -> Vec<String> {
        lock(&self.state).secrets.keys().cloned().collect()
    }

    /// Secrets deleted but not purged, with when Azure would purge them.
    pub fn soft_deleted(&self) -> Vec<(String, OffsetDateTime)> {
        lock(&self.state)
            .deleted_secrets
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    pub fn blobs(&self) -> Vec<String> {
        lock(&self.state).blobs.keys().cloned().collect()
    }

    /// Creates an ARM resource directly (as someone outside flotilla would),
    /// born now.
    pub fn insert_resource(&self, id: &str, tags: &BTreeMap<String, String>) {
        let now = self.clock.now();
        let mut s = lock(&self.state);
        let key = id.to_ascii_lowercase();
        s.born.insert(key.clone(), now);
        s.resources.insert(
            key,
            (
                id.to_string(),
                json!({"location": "westeurope", "tags": tags}),
            ),
        );
    }

    /// Creates an ARM resource with this body directly (say, an existing
    /// network a job uses), born now.
    pub fn insert_body(&self, id: &str, body: Value) {
        let now = self.clock.now();
        let mut s = lock(&self.state);
        let key = id.to_ascii_lowercase();
        s.born.insert(key.clone(), now);
        s.resources.insert(key, (id.to_string(), body));
    }

    /// Creates a secret directly, born now.
    pub fn insert_secret(&self, name: &str, tags: &BTreeMap<String, String>) {
        let item = Item {
            content: b"planted".to_vec(),
            tags: tags.clone(),
            created: self.clock.now(),
        };
        lock(&self.state).secrets.insert(name.into(), item);
    }

    /// The resource whose id ends with `suffix` comes back once, as it was,
    /// right after its delete: what a stale handler's late PUT does.
    pub fn comes_back_after_delete(&self, suffix: &str) {
        lock(&self.state)
            .arm_comebacks
            .push(suffix.to_ascii_lowercase());
    }

    /// Secret `name` comes back once, with `tags`, right after its purge: what
    /// a stale handler's late write does behind an undo.
    pub fn comes_back_after_purge(&self, name: &str, tags: &BTreeMap<String, String>) {
        lock(&self.state)
            .comebacks
            .insert(name.into(), tags.clone());
    }

    /// Creates a blob directly with this metadata, born now.
    pub fn insert_blob(&self, name: &str, metadata: &BTreeMap<String, String>) {
        let item = Item {
            content: b"planted".to_vec(),
            tags: metadata.clone(),
            created: self.clock.now(),
        };
        lock(&self.state).blobs.insert(name.into(), item);
    }

    /// Stops offering VM size `size` (a `Location` restriction in the SKU list).
    pub fn withhold_size(&self, size: &str) {
        lock(&self.state)
            .withheld_sizes
            .insert(size.to_ascii_lowercase());
    }

    /// Stops offering VM size `size` in zone `zone` (a `Zone` restriction).
    pub fn withhold_zone(&self, size: &str, zone: &str) {
        lock(&self.state)
            .withheld_zones
            .insert((size.to_ascii_lowercase(), zone.to_ascii_lowercase()));
    }

    /// Sets the limit of usage `name` (`cores` or a family such as `standardDSv5Family`).
    pub fn set_quota(&self, name: &str, limit: i64) {
        lock(&self.state)
            .quotas
            .insert(name.to_ascii_lowercase(), limit);
    }

    /// Excludes `action` from the caller's permissions (as a `notActions` entry).
    pub fn deny_action(&self, action: &str) {
        lock(&self.state).denied_actions.push(action.to_string());
    }

    /// Gives back every action [`FakeCloud::deny_action`] took away.
    pub fn allow_every_action(&self) {
        lock(&self.state).denied_actions.clear();
    }

    /// Makes resource group `rg` not exist (every other group exists).
    pub fn drop_group(&self, rg: &str) {
        lock(&self.state)
            .missing_groups
            .insert(rg.to_ascii_lowercase());
    }

    /// Makes resource group `rg` exist again after [`FakeCloud::drop_group`].
    pub fn restore_group(&self, rg: &str) {
        lock(&self.state)
            .missing_groups
            .remove(&rg.to_ascii_lowercase());
    }

    /// Writes that reached the cloud: ARM PUTs and PATCHes, secret sets, blob uploads.
    pub fn writes(&self) -> u64 {
        lock(&self.state).writes
    }

    /// The most times any one resource was created (1 when nothing was created twice).
    pub fn max_creates(&self) -> u32 {
        lock(&self.state)
            .creates
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Every delete that got past the fault rules, in order (ARM ids, secret and blob names).
    pub fn deletes(&self) -> Vec<String> {
        lock(&self.state).deletes.clone()
    }

    /// Every call made so far.
    pub fn calls(&self) -> u64 {
        lock(&self.state).calls
    }

    /// The last `n` instances of scale set `vmss` never register with the API
    /// server; their init extension reports `message`.
    pub fn never_register(&self, vmss: &str, n: u32, message: &str) {
        lock(&self.state)
            .unregistered
            .insert(vmss.to_ascii_lowercase(), (n, message.into()));
    }

    /// The last `n` instances of scale set `vmss` fail their init script with `message`.
    pub fn fail_init(&self, vmss: &str, n: u32, message: &str) {
        lock(&self.state)
            .init_failures
            .insert(vmss.to_ascii_lowercase(), (n, message.into()));
    }

    /// The next `times` writes of scale set `vmss` are accepted but leave it
    /// `Failed` with no node registering, as an update that failed after its
    /// create does; the write after them repairs it.
    pub fn fail_after_writes(&self, vmss: &str, times: u32) {
        lock(&self.state)
            .failing_writes
            .insert(vmss.to_ascii_lowercase(), times);
    }

    /// Removes a resource behind flotilla's back.
    pub fn remove(&self, id: &str) {
        lock(&self.state).resources.remove(&id.to_ascii_lowercase());
    }

    /// Whether the resource at `key` (a lower-cased id) is a scale set, whose
    /// writes and deletes are long-running.
    fn is_lro(key: &str) -> bool {
        key.contains("/virtualmachinescalesets/")
    }

    /// Starts the operation a write or delete of `id` (whose lower-cased
    /// form is `key`) is, if it is long-running; what polls it.
    fn start(&self, id: &ResourceId, key: &str, delete: bool) -> Option<PollState> {
        let polls = self.lro_polls.load(Ordering::SeqCst);
        if polls == 0 || !Self::is_lro(key) {
            return None;
        }
        let mut s = lock(&self.state);
        let url = format!("https://fake/operations/{}", s.operations.len() + 1);
        s.operations
            .insert(url.clone(), (polls, id.to_string(), delete));
        Some(PollState {
            url,
            via: PollVia::AsyncOperation,
            retry_after_s: 1,
        })
    }

    /// Stores a PUT or PATCH of `id`; what polls it (a scale set's), and the
    /// principal id of the identity the stored resource has, if any.
    fn write(
        &self,
        op: &str,
        id: &ResourceId,
        body: &Value,
    ) -> Result<(Option<PollState>, Option<String>), AzureError> {
        let id_text = id.to_string();
        self.check(op, &id_text)?;
        let key = id_text.to_ascii_lowercase();
        let lro = Self::is_lro(&key);
        let principal = {
            let mut s = lock(&self.state);
            s.writes += 1;
            if !s.resources.contains_key(&key) {
                *s.creates.entry(key.clone()).or_default() += 1;
                s.born.insert(key.clone(), self.clock.now());
            }
            let merged = match s.resources.get(&key) {
                Some((_, old)) if op == "patch" => {
                    let mut m = old.clone();
                    if let (Some(m), Some(b)) = (m.as_object_mut(), body.as_object()) {
                        for (k, v) in b {
                            m.insert(k.clone(), v.clone());
                        }
                    }
                    m
                }
                _ => body.clone(),
            };
            // A system-assigned identity gets its principal id on create and keeps it.
            let mut merged = merged;
            if merged
                .pointer("/identity/type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.contains("SystemAssigned"))
            {
                let kept = s
                    .resources
                    .get(&key)
                    .and_then(|(_, old)| old.pointer("/identity/principalId").cloned());
                merged["identity"]["principalId"] =
                    kept.unwrap_or_else(|| json!(Self::principal_of(&key)));
            }
            // A user-assigned identity gets its principal and client ids.
            if key.contains("/microsoft.managedidentity/userassignedidentities/") {
                merged["properties"]["principalId"] = json!(Self::principal_of(&key));
                merged["properties"]["clientId"] =
                    json!(Self::principal_of(&format!("{key}#client")));
            }
            if lro && merged.pointer("/tags/flotilla-role") == Some(&json!("master")) {
                // The first master publishes the admin kubeconfig.
                if let Some(job) = merged.pointer("/tags/flotilla-job").and_then(Value::as_str) {
                    let kubeconfig = json!({
                        "current-context": "admin",
                        "clusters": [{"name": job, "cluster": {"server": format!("https://{}:6443", crate::names::api_fqdn(job, "fake"))}}],
                        "users": [{"name": "admin", "user": {"token": "fake-admin-token"}}],
                        "contexts": [{"name": "admin", "context": {"cluster": job, "user": "admin"}}],
                    });
                    let tags = BTreeMap::from([
                        ("flotilla-job".to_string(), job.to_string()),
                        ("managed-by".to_string(), "flotilla".to_string()),
                    ]);
                    let item = Item {
                        content: base64::engine::general_purpose::STANDARD
                            .encode(kubeconfig.to_string())
                            .into_bytes(),
                        tags,
                        created: self.clock.now(),
                    };
                    s.secrets.insert(crate::names::kubeconfig_secret(job), item);
                }
            }
            if lro {
                let name = id.name().to_ascii_lowercase();
                match s.failing_writes.get_mut(&name) {
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        s.failed_sets.insert(name);
                    }
                    _ => {
                        s.failed_sets.remove(&name);
                    }
                }
            }
            let principal = flotilla_azure::arm::principal_in(id, &merged);
            s.resources.insert(key.clone(), (id_text, merged));
            principal
        };
        Ok((self.start(id, &key, false), principal))
    }

    /// The principal id FakeCloud gives the system-assigned identity of the resource at `key`.
    pub fn principal_of(key: &str) -> String {
        let digest = sha2::Sha256::digest(key.to_ascii_lowercase().as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// The instances of a scale set body: (computer name, instance id).
    fn instances(body: &Value) -> Vec<(String, String)> {
        let n = body
            .pointer("/sku/capacity")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let prefix = body
            .pointer("/properties/virtualMachineProfile/osProfile/computerNamePrefix")
            .and_then(Value::as_str)
            .unwrap_or("vm");
        (0..n)
            .map(|i| (format!("{prefix}{}", base36(i)), i.to_string()))
            .collect()
    }

    /// How many of the scale set's last instances are held back by `table`.
    fn held(table: &BTreeMap<String, (u32, String)>, vmss: &str) -> (u64, String) {
        table
            .get(&vmss.to_ascii_lowercase())
            .map(|(n, m)| (u64::from(*n), m.clone()))
            .unwrap_or((0, String::new()))
    }
}

/// A scale set instance's hostname suffix: the instance id in base 36, 6 digits.
fn base36(mut i: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(i % 36) as usize];
        i /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait]
impl Arm for FakeCloud {
    async fn put(
        &self,
        id: &ResourceId,
        _api: &str,
        body: &Value,
    ) -> Result<flotilla_azure::PutStart, AzureError> {
        // The answer carries the principal id the write gave an identity,
        // as ARM's does; or only what was sent, when told to omit it.
        let (poll, principal_id) = self.write("put", id, body)?;
        let principal_id = if self.omit_principals.load(Ordering::SeqCst) {
            flotilla_azure::arm::principal_in(id, body)
        } else {
            principal_id
        };
        Ok(flotilla_azure::PutStart { principal_id, poll })
    }

    async fn patch(
        &self,
        id: &ResourceId,
        _api: &str,
        body: &Value,
    ) -> Result<Option<PollState>, AzureError> {
        Ok(self.write("patch", id, body)?.0)
    }

    async fn delete(&self, id: &ResourceId, _api: &str) -> Result<DeleteStart, AzureError> {
        self.check("delete", &id.to_string())?;
        lock(&self.state).deletes.push(id.to_string());
        let key = id.to_string().to_ascii_lowercase();
        if !lock(&self.state).resources.contains_key(&key) {
            return Ok(DeleteStart::Gone);
        }
        match self.start(id, &key, true) {
            Some(poll) => Ok(DeleteStart::Pending(poll)),
            None => {
                let mut s = lock(&self.state);
                let removed = s.resources.remove(&key);
                if let Some(i) = s
                    .arm_comebacks
                    .iter()
                    .position(|c| key.ends_with(c.as_str()))
                {
                    s.arm_comebacks.remove(i);
                    if let Some(r) = removed {
                        s.resources.insert(key, r);
                    }
                }
                Ok(DeleteStart::Gone)
            }
        }
    }

    async fn poll(&self, poll: &PollState) -> Result<PollOutcome, AzureError> {
        self.check("poll", &poll.url)?;
        let mut s = lock(&self.state);
        let Some((left, id, delete)) = s.operations.get_mut(&poll.url) else {
            return Err(AzureError::from_service(
                404,
                "OperationNotFound",
                "no such operation",
                None,
            ));
        };
        *left = left.saturating_sub(1);
        if *left > 0 {
            return Ok(PollOutcome::Pending {
                retry_after: Duration::from_secs(1),
            });
        }
        let (id, delete) = (id.to_ascii_lowercase(), *delete);
        s.operations.remove(&poll.url);
        if delete {
            s.resources.remove(&id);
        }
        Ok(PollOutcome::Succeeded)
    }

    async fn get(
        &self,
        id: &ResourceId,
        sub_path: Option<&str>,
        _api: &str,
    ) -> Result<Option<Value>, AzureError> {
        // A sub-resource read's target is its path under the resource, so a
        // fault can single out, say, instance views.
        let target = match sub_path {
            Some(sub) => format!("{id}/{sub}"),
            None => id.to_string(),
        };
        self.check("get", &target)?;
        let s = lock(&self.state);
        if !id.is_provider_resource() {
            // A resource group: every one exists unless dropped.
            let rg = id.group().unwrap_or_default().to_string();
            return Ok((!s.missing_groups.contains(&rg.to_ascii_lowercase()))
                .then(|| json!({"name": rg, "location": "westeurope"})));
        }
        let key = id.to_string().to_ascii_lowercase();
        // A scale set instance: `{scaleSet}/virtualMachines/{instanceId}`.
        if let Some((set, instance)) = key.rsplit_once("/virtualmachines/") {
            let Some((_, body)) = s.resources.get(set) else {
                return Ok(None);
            };
            let vmss = set.rsplit('/').next().unwrap_or_default();
            let all = Self::instances(body);
            let Some(pos) = all.iter().position(|(_, i)| i == instance) else {
                return Ok(None);
            };
            let from_end = (all.len() - pos) as u64;
            let (failed, failure) = Self::held(&s.init_failures, vmss);
            let (silent, silence) = Self::held(&s.unregistered, vmss);
            let status = if from_end <= failed {
                json!({"code": "ProvisioningState/failed/1", "level": "Error", "displayStatus": "Provisioning failed", "message": failure})
            } else if from_end <= silent {
                json!({"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "message": silence})
            } else {
                json!({"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "message": "Enable succeeded"})
            };
            return Ok(Some(json!({
                "computerName": all[pos].0,
                "extensions": [{"name": crate::names::INIT_EXTENSION, "statuses": [status]}]
            })));
        }
        let Some((_, body)) = s.resources.get(&key) else {
            return Ok(None);
        };
        let vmss = id.name();
        match sub_path {
            Some("instanceView") => {
                let nodes = Self::instances(body).len() as u64;
                let (failed, _) = Self::held(&s.init_failures, vmss);
                let failed = failed.min(nodes);
                let mut summary =
                    vec![json!({"code": "ProvisioningState/succeeded", "count": nodes - failed})];
                if failed > 0 {
                    summary.push(json!({"code": "ProvisioningState/failed", "count": failed}));
                }
                Ok(Some(json!({"extensions": [{
                    "name": crate::names::INIT_EXTENSION,
                    "statusesSummary": summary
                }]})))
            }
            Some("virtualMachines") => {
                let value: Vec<Value> = Self::instances(body)
                    .into_iter()
                    .map(|(computer, i)| {
                        json!({
                            "instanceId": i,
                            "name": format!("{}_{i}", id.name()),
                            "properties": {"osProfile": {"computerName": computer}},
                        })
                    })
                    .collect();
                Ok(Some(json!({ "value": value })))
            }
            None if s.failed_sets.contains(&id.name().to_ascii_lowercase()) => {
                let mut body = body.clone();
                body["properties"]["provisioningState"] = json!("Failed");
                Ok(Some(body))
            }
            _ => Ok(Some(body.clone())),
        }
    }

    async fn action(&self, id: &ResourceId, action: &str, _api: &str) -> Result<Value, AzureError> {
        self.check("action", &format!("{id}/{action}"))?;
        Ok(
            json!({"keys": [{"keyName": "key1", "value": "fake-storage-key", "permissions": "FULL"}]}),
        )
    }

    async fn list_resources(
        &self,
        resource_group: &str,
        tag: Option<(&str, &str)>,
    ) -> Result<Vec<Listed>, AzureError> {
        self.check("list", resource_group)?;
        let s = lock(&self.state);
        Ok(s.resources
            .sorted()
            .into_iter()
            .filter(|(_, (id, _))| in_group(id, resource_group))
            .filter_map(|(key, (id, body))| {
                let tags = tags_of(body);
                if let Some((n, v)) = tag {
                    if !has_tag(&tags, n, v) {
                        return None;
                    }
                }
                // As ARM: an answer filtered by tag carries no tags.
                let tags = if tag.is_some() { BTreeMap::new() } else { tags };
                listed(id, tags, s.born.get(key).copied())
            })
            .collect())
    }

    async fn list_named(
        &self,
        resource_group: &str,
        fragment: &str,
    ) -> Result<Vec<Listed>, AzureError> {
        self.check("list", resource_group)?;
        let s = lock(&self.state);
        let fragment = fragment.to_ascii_lowercase();
        Ok(s.resources
            .named_like(&fragment)
            .into_iter()
            .filter_map(|key| {
                let (id, body) = s.resources.get(key)?;
                if !in_group(id, resource_group) {
                    return None;
                }
                listed(id, tags_of(body), s.born.get(key).copied())
            })
            .collect())
    }

    async fn list_vnets(
        &self,
        resource_group: &str,
    ) -> Result<Vec<flotilla_azure::VnetPrefixes>, AzureError> {
        self.check("list", resource_group)?;
        let s = lock(&self.state);
        s.resources
            .sorted()
            .into_iter()
            .map(|(_, entry)| entry)
            .filter(|(id, _)| in_group(id, resource_group))
            .filter(|(id, _)| {
                ResourceId::parse(id).is_ok_and(|r| {
                    r.resource_type()
                        .eq_ignore_ascii_case("Microsoft.Network/virtualNetworks")
                })
            })
            // Read as the ARM client reads a listed VNet.
            .map(|(id, body)| {
                let mut item = body.clone();
                item["id"] = json!(id);
                serde_json::from_value(item)
                    .map_err(|e| AzureError::terminal("UnexpectedResponse", e.to_string()))
            })
            .collect()
    }

    async fn resource_skus(&self, location: &str) -> Result<Vec<ResourceSku>, AzureError> {
        self.check("skus", location)?;
        let s = lock(&self.state);
        let loc = location.to_ascii_lowercase();
        Ok(FAKE_SIZES
            .iter()
            .map(|(name, vcpus, family)| {
                let lname = name.to_ascii_lowercase();
                let mut restrictions = vec![];
                if s.withheld_sizes.contains(&lname) {
                    restrictions.push(json!({"type": "Location", "values": [loc],
                        "restrictionInfo": {"locations": [loc]}, "reasonCode": "NotAvailableForSubscription"}));
                }
                let missing: Vec<&str> = ["1", "2", "3"]
                    .into_iter()
                    .filter(|z| s.withheld_zones.contains(&(lname.clone(), z.to_string())))
                    .collect();
                if !missing.is_empty() {
                    restrictions.push(json!({"type": "Zone", "values": [loc],
                        "restrictionInfo": {"locations": [loc], "zones": missing}, "reasonCode": "NotAvailableForSubscription"}));
                }
                serde_json::from_value(json!({
                    "resourceType": "virtualMachines",
                    "name": name,
                    "family": family,
                    "locations": [loc],
                    "locationInfo": [{"location": loc, "zones": ["1", "2", "3"]}],
                    "capabilities": [{"name": "vCPUs", "value": vcpus.to_string()}],
                    "restrictions": restrictions,
                }))
                .expect("a fake SKU deserialises")
            })
            .collect())
    }

    async fn compute_usages(&self, location: &str) -> Result<Vec<Usage>, AzureError> {
        self.check("usages", location)?;
        let s = lock(&self.state);
        let used = &s.resources.used;
        let mut names: Vec<&str> = FAKE_SIZES.iter().map(|(_, _, f)| *f).collect();
        names.sort_unstable();
        names.dedup();
        names.insert(0, "cores");
        Ok(names
            .into_iter()
            .map(|n| {
                let key = n.to_ascii_lowercase();
                serde_json::from_value(json!({
                    "unit": "Count",
                    "currentValue": used.get(&key).copied().unwrap_or(0),
                    "limit": s.quotas.get(&key).copied().unwrap_or(DEFAULT_QUOTA),
                    "name": {"value": n, "localizedValue": n},
                }))
                .expect("a fake usage deserialises")
            })
            .collect())
    }

    async fn permissions(
        &self,
        resource_group: &str,
    ) -> Result<Option<Vec<Permission>>, AzureError> {
        self.check("permissions", resource_group)?;
        let s = lock(&self.state);
        if s.missing_groups
            .contains(&resource_group.to_ascii_lowercase())
        {
            return Ok(None);
        }
        Ok(Some(vec![Permission {
            actions: vec!["*".into()],
            not_actions: s.denied_actions.clone(),
        }]))
    }
}

#[async_trait]
impl KubeApi for FakeCloud {
    /// Every instance of the cluster's scale sets (those tagged with the
    /// job the kubeconfig's cluster is named after), as a Ready node, except those held
    /// back by [`FakeCloud::never_register`] or [`FakeCloud::fail_init`].
    async fn nodes(&self, kubeconfig: &str) -> Result<Vec<KubeNode>, AzureError> {
        self.check("kube.nodes", "")?;
        let kc: Value = serde_json::from_str(kubeconfig)
            .map_err(|e| AzureError::terminal("KubeconfigInvalid", format!("not JSON: {e}")))?;
        // The cluster is named after its job (see the master's create).
        let Some(job) = kc.pointer("/clusters/0/name").and_then(Value::as_str) else {
            return Err(AzureError::terminal("KubeconfigInvalid", "no clusters"));
        };
        let s = lock(&self.state);
        let mut out = vec![];
        let sets = s.resources.sets_of_job.get(job).into_iter().flatten();
        for (id, body) in sets.filter_map(|key| s.resources.get(key)) {
            let vmss = id.rsplit('/').next().unwrap_or_default();
            if s.failed_sets.contains(&vmss.to_ascii_lowercase()) {
                continue;
            }
            let role = body
                .pointer("/tags/flotilla-role")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut labels = BTreeMap::new();
            if role == "master" {
                labels.insert(
                    crate::names::NODE_ROLE_LABEL.to_string(),
                    "control-plane".to_string(),
                );
            } else {
                labels.insert(
                    crate::names::NODE_ROLE_LABEL.to_string(),
                    "worker".to_string(),
                );
                labels.insert(crate::names::NODE_POOL_LABEL.to_string(), role.to_string());
            }
            let all = Self::instances(body);
            let held = Self::held(&s.unregistered, vmss).0 + Self::held(&s.init_failures, vmss).0;
            let keep = (all.len() as u64).saturating_sub(held) as usize;
            for (name, _) in all.into_iter().take(keep) {
                out.push(KubeNode {
                    name,
                    ready: true,
                    labels: labels.clone(),
                });
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Secrets for FakeCloud {
    fn secret_id(&self, name: &str) -> String {
        format!("https://fake.vault/secrets/{name}")
    }

    async fn get(&self, name: &str) -> Result<Option<String>, AzureError> {
        self.check("secret.get", name)?;
        Ok(lock(&self.state)
            .secrets
            .get(name)
            .map(|i| String::from_utf8_lossy(&i.content).into_owned()))
    }

    async fn set(
        &self,
        name: &str,
        value: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AzureError> {
        self.check("secret.set", name)?;
        lock(&self.state).writes += 1;
        let now = self.clock.now();
        let mut s = lock(&self.state);
        if s.deleted_secrets.contains_key(name) {
            return Err(AzureError::from_service(
                409,
                "Conflict",
                "the secret is deleted but recoverable; its name cannot be reused",
                None,
            ));
        }
        let created = s.secrets.get(name).map_or(now, |i| i.created);
        s.secrets.insert(
            name.into(),
            Item {
                content: value.as_bytes().to_vec(),
                tags: tags.clone(),
                created,
            },
        );
        Ok(())
    }

    async fn create_if_absent(
        &self,
        name: &str,
        value: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), AzureError> {
        if Secrets::get(self, name).await?.is_none() {
            Secrets::set(self, name, value, tags).await?;
        }
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), AzureError> {
        self.check("secret.delete", name)?;
        let now = self.clock.now();
        let mut s = lock(&self.state);
        s.deletes.push(name.to_string());
        if s.secrets.remove(name).is_some() {
            s.deleted_secrets
                .insert(name.into(), now + SOFT_DELETE_RETENTION);
        }
        Ok(())
    }

    async fn purge(&self, name: &str) -> Result<Purge, AzureError> {
        self.check("secret.purge", name)?;
        let mut s = lock(&self.state);
        match s.deleted_secrets.get(name) {
            None => Ok(Purge::Gone),
            Some(until) if self.purge_protection => Ok(Purge::Retained {
                until: Some(*until),
            }),
            Some(_) => {
                s.deleted_secrets.remove(name);
                if let Some(tags) = s.comebacks.remove(name) {
                    let item = Item {
                        content: b"late write".to_vec(),
                        tags,
                        created: self.clock.now(),
                    };
                    s.secrets.insert(name.into(), item);
                }
                Ok(Purge::Gone)
            }
        }
    }

    async fn list(&self) -> Result<Vec<Listed>, AzureError> {
        self.check("secret.list", "")?;
        Ok(lock(&self.state)
            .secrets
            .iter()
            .map(|(name, i)| Listed {
                id: self.secret_id(name),
                name: name.clone(),
                resource_type: None,
                tags: i.tags.clone(),
                created: Some(i.created),
            })
            .collect())
    }
}

#[async_trait]
impl Blobs for FakeCloud {
    fn blob_url(&self, name: &str) -> String {
        format!("https://fake.blob/staging/{name}")
    }

    async fn put(
        &self,
        name: &str,
        content: Vec<u8>,
        _: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), AzureError> {
        self.check("blob.put", name)?;
        lock(&self.state).writes += 1;
        let item = Item {
            content,
            tags: metadata.clone(),
            created: self.clock.now(),
        };
        lock(&self.state).blobs.insert(name.into(), item);
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), AzureError> {
        self.check("blob.delete", name)?;
        let mut s = lock(&self.state);
        s.deletes.push(name.to_string());
        s.blobs.remove(name);
        Ok(())
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<Listed>, AzureError> {
        self.check("blob.list", prefix.unwrap_or(""))?;
        Ok(lock(&self.state)
            .blobs
            .iter()
            .filter(|(name, _)| name.starts_with(prefix.unwrap_or("")))
            .map(|(name, i)| Listed {
                id: self.blob_url(name),
                name: name.clone(),
                resource_type: None,
                tags: i.tags.clone(),
                created: Some(i.created),
            })
            .collect())
    }
}

/// The environment the fake cloud stands in: its subscription, staging
/// account and vault, and the cluster's service principal.
pub fn fake_env() -> Env {
    let sub = "00000000-0000-0000-0000-000000000000";
    Env {
        subscription_id: sub.into(),
        staging_account_id: ResourceId::new(
            sub,
            "staging-rg",
            "Microsoft.Storage",
            "storageAccounts",
            "staging",
        ),
        staging_url: "https://fake.blob/staging/".into(),
        keyvault_url: "https://fake.vault".into(),
        keyvault_id: ResourceId::new(sub, "staging-rg", "Microsoft.KeyVault", "vaults", "fake"),
        sp_client_id: Some("cluster-sp".into()),
        tenant_id: Some("cluster-tenant".into()),
        sp_object_id: Some("cluster-sp-object".into()),
        scaler_role: crate::steps::rbac::VIRTUAL_MACHINE_CONTRIBUTOR.into(),
    }
}

/// The fake cloud's ports, as the engine takes them.
pub fn fake_azure(cloud: &Arc<FakeCloud>) -> Azure {
    Azure {
        arm: cloud.clone(),
        secrets: cloud.clone(),
        blobs: cloud.clone(),
        kube: cloud.clone(),
        sp_client_secret: Some("cluster-sp-secret-value".into()),
    }
}

/// An engine on the in-memory ports, and a way to drive it.
pub struct World {
    pub clock: Arc<ManualClock>,
    pub store: Arc<MemoryStore>,
    pub bus: Arc<MemoryBus>,
    pub cloud: Arc<FakeCloud>,
    pub engine: Arc<Engine>,
}

impl World {
    pub fn new() -> World {
        Self::with_cloud(FakeCloud::default())
    }

    pub fn with_cloud(cloud: FakeCloud) -> World {
        let clock = ManualClock::new();
        let store = Arc::new(MemoryStore::default());
        let bus = Arc::new(MemoryBus::new(clock.clone()));
        let cloud = Arc::new(FakeCloud {
            clock: clock.clone(),
            ..cloud
        });
        let env = fake_env();
        let azure = fake_azure(&cloud);
        let policy = Policy {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(8),
            join_interval: Duration::from_secs(1),
            ..Policy::default()
        };
        let engine = Arc::new(
            Engine::new(store.clone(), bus.clone(), azure, env, policy).with_clock(clock.clone()),
        );
        World {
            clock,
            store,
            bus,
            cloud,
            engine,
        }
    }

    /// Settles every message visible now, as a consumer would; returns how
    /// many deliveries were made.
    pub async fn pump(&self) -> usize {
        let mut n = 0;
        while self.deliver_one().await {
            n += 1;
            assert!(n < 100_000, "the bus never drains");
        }
        n
    }

    /// Settles the next visible message, as a consumer would; false when
    /// none is visible.
    pub async fn deliver_one(&self) -> bool {
        let Ok(Some(d)) = self.bus.receive(Duration::ZERO).await else {
            return false;
        };
        let verdict = settle(
            &self.engine,
            Delivered::from_bus(&d, self.bus.max_delivery_count),
        )
        .await;
        let _ = match verdict {
            Settlement::Complete => self.bus.complete(&d).await,
            Settlement::Abandon { .. } => self.bus.abandon(&d).await,
            Settlement::DeadLetter { reason } | Settlement::Poison { reason } => {
                self.bus.dead_letter(&d, &reason).await
            }
        };
        true
    }

    /// Pumps, moving the clock one second at a time, until the job is
    /// terminal with nothing pending or `limit` seconds passed; returns the saga.
    pub async fn run(&self, job: &str, limit: u32) -> crate::saga::Saga {
        for _ in 0..limit {
            self.pump().await;
            let saga = self.engine.status(job).await.expect("status").expect("job");
            if saga.is_settled() && self.bus.pending() == 0 {
                return saga;
            }
            self.clock.advance(Duration::from_secs(1));
        }
        self.engine.status(job).await.expect("status").expect("job")
    }
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> String {
        format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/publicIPAddresses/{name}")
    }

    #[tokio::test]
    async fn a_name_listing_finds_what_holds_the_fragment_and_nothing_removed() {
        let cloud = FakeCloud::default();
        let tags = BTreeMap::new();
        for name in [
            "demo-abc123-pip",
            "demo-abc124-pip",
            "Demo-ABC123-lb",
            "other",
        ] {
            cloud.insert_resource(&id(name), &tags);
        }
        cloud.insert_resource(
            "/subscriptions/s/resourceGroups/elsewhere/providers/Microsoft.Network/publicIPAddresses/demo-abc123-x",
            &tags,
        );
        let names =
            |listed: Vec<Listed>| -> Vec<String> { listed.into_iter().map(|l| l.name).collect() };
        // Case folded as ARM folds it, in the group only, in key order.
        let found = cloud.list_named("rg", "ABC123").await.unwrap();
        assert_eq!(names(found), ["Demo-ABC123-lb", "demo-abc123-pip"]);
        // Fragments shorter than the index's runs are found too.
        let found = cloud.list_named("rg", "th").await.unwrap();
        assert_eq!(names(found), ["other"]);
        // A removed resource is gone from the listing; created again, it is
        // listed once.
        cloud.remove(&id("demo-abc123-pip"));
        let found = cloud.list_named("rg", "abc123").await.unwrap();
        assert_eq!(names(found), ["Demo-ABC123-lb"]);
        cloud.insert_resource(&id("demo-abc123-pip"), &tags);
        let found = cloud.list_named("rg", "abc123").await.unwrap();
        assert_eq!(names(found), ["Demo-ABC123-lb", "demo-abc123-pip"]);
        // The same answer as the full listing filtered by name.
        let all = cloud.list_resources("rg", None).await.unwrap();
        let filtered: Vec<String> = names(all)
            .into_iter()
            .filter(|n| n.to_ascii_lowercase().contains("abc12"))
            .collect();
        let found = cloud.list_named("rg", "abc12").await.unwrap();
        assert_eq!(names(found), filtered);
    }

    #[tokio::test]
    async fn a_long_fragment_is_found_at_every_offset_of_the_index_stride() {
        let cloud = FakeCloud::default();
        let tags = BTreeMap::new();
        let names = [
            "demo-abc123-pip",
            "x-demo-abc123",
            "xx-Demo-Abc123-lb",
            "xxx-demo-abc123-nsg",
            "xxxx-demo-abc123",
            "demo-abc124-pip",
            "demo-abc12",
        ];
        for name in names {
            cloud.insert_resource(&id(name), &tags);
        }
        let fragment = "demo-abc123";
        assert!(
            fragment.len() >= GRAM + GRAM_STRIDE - 1,
            "the index is read"
        );
        let found: Vec<String> = cloud
            .list_named("rg", fragment)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        let mut expected: Vec<&str> = names
            .into_iter()
            .filter(|n| n.to_ascii_lowercase().contains(fragment))
            .collect();
        expected.sort_by_key(|n| n.to_ascii_lowercase());
        assert_eq!(found, expected);
        assert_eq!(found.len(), 5);
    }
}
