//! The Azure simulator: a loopback HTTPS server that behaves like the slice of Azure
//! flotilla touches.
//!
//! It serves, under one base URL:
//! - Entra ID client-credentials tokens (`POST /{tenant}/oauth2/v2.0/token`) and the
//!   App Service managed-identity endpoint (`GET /msi/token`);
//! - ARM (`/subscriptions/...`): resource groups, VNets, NSGs, public IPs, load balancers,
//!   scale sets (whose instances "boot" by fetching their init script from the blob store),
//!   storage accounts (`listKeys`), role assignments, AKS user credentials, tag queries,
//!   with long-running operations, throttling and ARM error bodies;
//! - the Key Vault secrets data plane (`/secrets/...`, `/deletedsecrets/...`);
//! - a minimal Blob service (`/blob/{account}/{container}/{blob}`);
//! - the Service Bus data plane over REST (`/servicebus/{entity}/messages/...`);
//! - unauthenticated control endpoints under `/_sim/` (inventory, fault rules, request log).
//!
//! See `docs/simulator.md` for the URL layout and the fault rule format.

mod arm;
mod auth;
mod blob;
mod boot;
mod content;
mod control;
mod dispatch;
mod doc;
mod imds;
mod kube;
mod kv;
mod model;
pub mod node;
mod rbac;
mod servicebus;
mod state;
mod tls;
mod util;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use servicebus::{ServiceBusFaults, ServiceBusFaultsFired};
use state::State;

/// Fixed tenant id the simulator issues tokens for.
pub const TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// Fixed subscription id the simulator serves; ARM paths with another subscription get 404.
pub const SUBSCRIPTION_ID: &str = "00000000-0000-4000-8000-00000000f107";

/// How many request records `/_sim/requests` keeps (oldest dropped first).
const REQUEST_LOG_CAPACITY: usize = 10_000;

/// How the simulator behaves: where it keeps state, how long operations take, throttling.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Persist state (JSON) and the TLS CA/server certificate here. `None` keeps state in
    /// memory only and writes the certificates to a temporary directory that lives as long
    /// as the [`Sim`].
    pub data_dir: Option<PathBuf>,
    /// How long every long-running operation takes (and how long VMSS instances take to boot
    /// after their operation completes). Zero is allowed.
    pub lro: Duration,
    /// Token-bucket throttling of ARM requests per principal; `None` disables it.
    pub throttle: Option<ThrottleConfig>,
    /// Quota limits per usage name (`cores`, a VM family such as `standardDSv5Family`,
    /// `virtualMachines`, `virtualMachineScaleSets`), per region; names not listed get
    /// `default_quota`.
    pub quotas: BTreeMap<String, u64>,
    /// The limit of every usage not in `quotas`.
    pub default_quota: u64,
    /// What `Microsoft.Authorization/permissions` answers for the caller.
    pub permissions: Permissions,
    /// Whether booting flotilla nodes run their init script through the node
    /// harness (scripted boot) when they can; `false` registers them directly
    /// (quick boot), for runs that test the engine rather than the bootstrap
    /// and cannot spend a bash script per node.
    pub node_scripts: bool,
}

/// The actions the caller may do, as `Microsoft.Authorization/permissions` reports them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Permissions {
    /// Allowed actions, e.g. `*` or `Microsoft.Network/*/write`.
    pub actions: Vec<String>,
    /// Actions excluded from `actions`.
    pub not_actions: Vec<String>,
}

impl Default for Permissions {
    /// Everything (`*`), as for an Owner.
    fn default() -> Self {
        Permissions {
            actions: vec!["*".into()],
            not_actions: vec![],
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            data_dir: None,
            lro: Duration::from_secs(1),
            throttle: Some(ThrottleConfig::default()),
            quotas: BTreeMap::new(),
            default_quota: 100_000,
            permissions: Permissions::default(),
            node_scripts: true,
        }
    }
}

/// ARM's per-principal token buckets: writes (PUT/PATCH/DELETE/POST) and reads (GET/HEAD).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ThrottleConfig {
    /// Bucket size for writes.
    pub write_burst: u32,
    /// Write tokens added per second.
    pub write_refill_per_s: f64,
    /// Bucket size for reads.
    pub read_burst: u32,
    /// Read tokens added per second.
    pub read_refill_per_s: f64,
}

impl Default for ThrottleConfig {
    /// ARM's 2024 model: writes 200 with 10/s refill, reads 250 with 25/s refill.
    fn default() -> Self {
        ThrottleConfig {
            write_burst: 200,
            write_refill_per_s: 10.0,
            read_burst: 250,
            read_refill_per_s: 25.0,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Reading or writing the data directory or binding the port failed.
    #[error("simulator I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Generating or loading the TLS certificates failed.
    #[error("simulator certificate error: {0}")]
    Tls(String),
    /// The persisted state file could not be parsed.
    #[error("simulator state file {path} is not valid: {message}")]
    State {
        /// The file that failed to parse.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
}

/// Endpoints and credentials a client needs to talk to one simulator at one base URL.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SimInfo {
    /// ARM base URL (the simulator's base URL).
    pub arm_endpoint: String,
    /// Client-credentials token URL: `{base}/{tenant}/oauth2/v2.0/token`.
    pub token_endpoint: String,
    /// Authority host for `ClientSecretCredential` (the base URL).
    pub authority_host: String,
    /// Tenant the tokens are issued for.
    pub tenant_id: String,
    /// Service principal client id accepted by the token endpoint.
    pub client_id: String,
    /// Service principal secret accepted by the token endpoint (a secret: never log it).
    pub client_secret: String,
    /// Subscription the ARM surface serves.
    pub subscription_id: String,
    /// Key Vault URL (the base URL; paths `/secrets/...`).
    pub keyvault_url: String,
    /// The vault's ARM id: the scope of Key Vault role assignments.
    #[serde(default = "kv::keyvault_id")]
    pub keyvault_id: String,
    /// Blob service endpoint prefix: `{base}/blob` — an account is `{base}/blob/{account}`.
    pub blob_endpoint: String,
    /// App Service managed identity endpoint (`IDENTITY_ENDPOINT`): `{base}/msi/token`.
    pub managed_identity_endpoint: String,
    /// Service Bus namespace endpoint: `{base}/servicebus` (stands for
    /// `https://{ns}.servicebus.windows.net`).
    #[serde(default)]
    pub servicebus_endpoint: String,
    /// Value of `IDENTITY_HEADER` (a secret: never log it).
    pub identity_header: String,
    /// Path of the CA certificate (PEM) clients must trust.
    pub ca_cert: String,
}

/// A fault injection rule: requests matching it are answered with an error.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// HTTP method to match (case-insensitive); `None` matches any.
    #[serde(default)]
    pub method: Option<String>,
    /// Resource type to match, e.g. `Microsoft.Compute/virtualMachineScaleSets`
    /// (a case-insensitive glob, so `Microsoft.Network/*` matches a namespace);
    /// `None` matches any.
    #[serde(default)]
    pub resource_type: Option<String>,
    /// Glob (`*` wildcard, case-insensitive) matched against the resource name.
    #[serde(default)]
    pub name_pattern: Option<String>,
    /// HTTP status to answer.
    pub status: u16,
    /// ARM error code to answer.
    pub code: String,
    /// Error message; a default is generated when absent.
    #[serde(default)]
    pub message: Option<String>,
    /// How many times the rule fires before it disappears; `None` = forever.
    #[serde(default)]
    pub times: Option<u32>,
    /// Chance (0..=1) that a matching request is faulted; default 1.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Delay before answering (also applied to asynchronous faults).
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Accept the PUT/PATCH/DELETE, then let its asynchronous operation end `Failed` with
    /// this code and message.
    #[serde(default)]
    pub asynchronous: bool,
    /// Glob matched against the caller's token principal (a VM's is
    /// `vm:{scaleSet}_{instance}`, see the IMDS); `None` matches any caller.
    #[serde(default)]
    pub principal: Option<String>,
}

/// One injected fault: which rule fired on which request (see [`Sim::fired_faults`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FiredFault {
    /// Request method.
    pub method: String,
    /// The request's resource type (as fault rules match it).
    pub resource_type: String,
    /// The request's resource name (as fault rules match it).
    pub name: String,
    /// The rule's status and code.
    pub status: u16,
    pub code: String,
    /// The rule let the operation start and failed it asynchronously.
    pub asynchronous: bool,
}

/// How many fired faults [`Sim::fired_faults`] keeps (the count keeps rising past it).
const FIRED_LOG_CAPACITY: usize = 100_000;

/// Every fault injected so far: a count and the most recent records.
#[derive(Default)]
pub(crate) struct FiredLog {
    pub count: u64,
    pub records: VecDeque<FiredFault>,
}

impl FiredLog {
    pub(crate) fn push(&mut self, f: FiredFault) {
        self.count += 1;
        if self.records.len() >= FIRED_LOG_CAPACITY {
            self.records.pop_front();
        }
        self.records.push_back(f);
    }
}

/// One thing that exists in the simulator: an ARM resource, a Key Vault secret or a blob.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct InventoryItem {
    /// ARM id, secret URL without version, or blob URL.
    pub id: String,
    /// ARM type (`Microsoft.KeyVault/vaults/secrets` for secrets,
    /// `Microsoft.Storage/storageAccounts/blobServices/containers/blobs` for blobs).
    pub resource_type: String,
    /// Resource, secret or blob name.
    pub name: String,
    /// Tags (blob metadata for blobs).
    pub tags: BTreeMap<String, String>,
    /// ARM provisioning state; `None` for secrets and blobs.
    pub provisioning_state: Option<String>,
}

/// One request the simulator answered (the control endpoints are not recorded).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Time spent answering, in milliseconds.
    pub duration_ms: f64,
    /// The authenticated principal (client id), if any.
    pub principal: Option<String>,
}

/// Token-bucket state of one principal.
pub(crate) struct Buckets {
    pub reads: f64,
    pub writes: f64,
    pub last: std::time::Instant,
}

/// Shared simulator internals.
pub(crate) struct Inner {
    pub config: SimConfig,
    /// How long a long-running operation takes now, in ms (`config.lro`
    /// unless `Sim::set_lro` changed it).
    pub lro_ms: std::sync::atomic::AtomicU64,
    pub state: Mutex<State>,
    /// Raised when a scale set changes ([`state::Tracked::watch_signal`]):
    /// what a save wakes the boot agent by.
    pub sets_changed: Arc<std::sync::atomic::AtomicBool>,
    /// The tokens requests have presented, as the state holds them: an
    /// issued token never changes, so a request finds its token here
    /// without waiting for the state lock that every mutation holds.
    pub checked_tokens: std::sync::RwLock<HashMap<String, state::TokenInfo>>,
    /// Serialises saves of the state (the SQLite database of the data directory).
    pub persist: Mutex<state::Persist>,
    pub faults: Mutex<Vec<FaultRule>>,
    /// Faults injected so far.
    pub fired: Mutex<FiredLog>,
    pub requests: Mutex<VecDeque<RequestRecord>>,
    pub buckets: Mutex<HashMap<String, Buckets>>,
    pub tls: tls::TlsMaterial,
    /// Service Bus entities (memory only).
    pub servicebus: servicebus::Bus,
    /// Scale set instances and the clusters they formed.
    pub kube: kube::Registry,
    /// The task that boots scale set instances.
    pub boot: boot::Agent,
    /// Keeps the temporary certificate directory alive in memory-only mode.
    _temp: Option<tempfile::TempDir>,
}

/// The simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Sim {
    pub(crate) inner: Arc<Inner>,
}

/// A running HTTPS simulator.
pub struct SimServer {
    /// Endpoints and credentials for [`SimServer::base_url`].
    pub info: SimInfo,
    /// `https://127.0.0.1:{port}`.
    pub base_url: String,
    handle: axum_server::Handle<std::net::SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl SimServer {
    /// Stops accepting connections, waits briefly for in-flight requests, and returns.
    pub async fn shutdown(self) {
        self.handle
            .graceful_shutdown(Some(Duration::from_millis(500)));
        let _ = self.task.await;
    }
}

/// How many times [`lock`] tries a taken mutex before it sleeps on it, and
/// how often in between it lets another thread run.
const LOCK_SPINS: u32 = 2_000;
const LOCK_YIELD_EVERY: u32 = 64;

/// Takes a mutex, recovering the guard if a previous holder panicked (the
/// state stays usable). A taken mutex is retried for a while (a few tens of
/// microseconds) before the thread sleeps on it: every request takes the
/// state lock for microseconds, and a thread put to sleep behind it leaves
/// its core idle until the futex wakes it. On two cores that kept a quarter
/// of the machine idle under `flotilla bench`; spinning first took the run
/// from 455 to 506 jobs/s (eight alternating pairs).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    for i in 1..=LOCK_SPINS {
        match m.try_lock() {
            Ok(guard) => return guard,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) if i % LOCK_YIELD_EVERY == 0 => {
                std::thread::yield_now()
            }
            Err(std::sync::TryLockError::WouldBlock) => std::hint::spin_loop(),
        }
    }
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sim {
    /// Creates a simulator, loading persisted state and certificates from
    /// `config.data_dir` when present, generating them otherwise.
    pub fn new(mut config: SimConfig) -> Result<Sim, SimError> {
        // Node scripts run in their own working directory and are handed
        // paths under the data directory (their tools, the CA certificate):
        // a relative one (`up`'s default `.flotilla`) would not resolve there.
        if let Some(dir) = config.data_dir.take() {
            config.data_dir = Some(std::path::absolute(dir)?);
        }
        let (cert_dir, temp) = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("flotilla-sim").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let tls = tls::TlsMaterial::load_or_generate(&cert_dir, temp.is_none())?;
        let (persist, state) = match &config.data_dir {
            Some(dir) => state::Persist::open(dir)?,
            None => (state::Persist::default(), None),
        };
        let mut state = state.unwrap_or_else(State::fresh);
        if config.data_dir.is_none() {
            state.stop_saving();
        }
        let kube = kube::Registry::load(config.data_dir.as_deref());
        let sim = Sim {
            inner: Arc::new(Inner {
                lro_ms: (config.lro.as_millis() as u64).into(),
                config,
                sets_changed: state.resources.watch_signal(),
                state: Mutex::new(state),
                checked_tokens: Default::default(),
                persist: Mutex::new(persist),
                faults: Mutex::new(Vec::new()),
                fired: Mutex::new(FiredLog::default()),
                requests: Mutex::new(VecDeque::new()),
                buckets: Mutex::new(HashMap::new()),
                tls,
                servicebus: servicebus::Bus::default(),
                kube,
                boot: boot::Agent::default(),
                _temp: temp,
            }),
        };
        // Make sure generated credentials exist on disk before anyone sees them.
        sim.persist_now();
        Ok(sim)
    }

    /// The whole HTTP surface as an axum router (no TLS), for in-process use.
    pub fn router(&self) -> axum::Router {
        dispatch::router(self.clone())
    }

    /// Serves HTTPS on `127.0.0.1:port` (0 picks a free port) until shut down.
    pub async fn serve(&self, port: u16) -> Result<SimServer, SimError> {
        let config = axum_server::tls_rustls::RustlsConfig::from_config(server_tls(
            &self.inner.tls.server_cert_pem,
            &self.inner.tls.server_key_pem,
        )?);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let handle = axum_server::Handle::new();
        // TCP_NODELAY: a response written in two parts would otherwise wait
        // for the client's delayed ACK (40 ms) before its second part left.
        let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
            .acceptor(axum_server::accept::NoDelayAcceptor::new());
        let server = axum_server::from_tcp(listener)?
            .acceptor(acceptor)
            .handle(handle.clone());
        let app = self.router();
        let task = tokio::spawn(async move {
            if let Err(e) = server.serve(app.into_make_service()).await {
                tracing::error!(error = %e, "simulator server stopped");
            }
        });
        let base_url = format!("https://127.0.0.1:{}", addr.port());
        tracing::info!(%base_url, "Azure simulator listening");
        boot::start(self, &base_url, true);
        Ok(SimServer {
            info: self.info(&base_url),
            base_url,
            handle,
            task,
        })
    }

    /// Endpoints and credentials for clients reaching this simulator at `base_url`.
    pub fn info(&self, base_url: &str) -> SimInfo {
        let base = base_url.trim_end_matches('/');
        let creds = lock(&self.inner.state).creds.clone();
        SimInfo {
            arm_endpoint: base.to_string(),
            token_endpoint: format!("{base}/{TENANT_ID}/oauth2/v2.0/token"),
            authority_host: base.to_string(),
            tenant_id: TENANT_ID.to_string(),
            client_id: creds.client_id,
            client_secret: creds.client_secret,
            subscription_id: SUBSCRIPTION_ID.to_string(),
            keyvault_url: base.to_string(),
            keyvault_id: kv::keyvault_id(),
            blob_endpoint: format!("{base}/blob"),
            managed_identity_endpoint: format!("{base}/msi/token"),
            servicebus_endpoint: format!("{base}/servicebus"),
            identity_header: creds.identity_header,
            ca_cert: self.ca_cert_path().display().to_string(),
        }
    }

    /// Adds a fault injection rule.
    pub fn add_fault(&self, rule: FaultRule) {
        lock(&self.inner.faults).push(rule);
    }

    /// Turns the vault's purge protection on or off (off by default): with it,
    /// deleted secrets report recovery level `Recoverable` and a purge is
    /// refused with 403, as on a vault with `enablePurgeProtection`.
    pub fn set_purge_protection(&self, on: bool) {
        lock(&self.inner.state).purge_protection = on;
        self.persist_now();
    }

    /// Removes every fault injection rule.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    /// How many times fault rules have fired since the simulator started
    /// (Service Bus fault modes are counted by [`Sim::servicebus_faults_fired`]).
    pub fn faults_fired(&self) -> u64 {
        lock(&self.inner.fired).count
    }

    /// The most recent injected faults (up to 100 000), oldest first.
    pub fn fired_faults(&self) -> Vec<FiredFault> {
        lock(&self.inner.fired).records.iter().cloned().collect()
    }

    /// Everything that exists (ARM resources, secrets, blobs), optionally only items
    /// carrying tag `name = value`.
    pub fn inventory(&self, tag: Option<(&str, &str)>) -> Vec<InventoryItem> {
        control::inventory(self, tag)
    }

    /// The most recent requests (up to 10 000), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.inner.requests).iter().cloned().collect()
    }

    /// Whom the simulator issued `token` to, and for which audience
    /// (`(principal, audience)`, the audience without a trailing slash), while
    /// it is valid; `None` for a token it never issued. Lets a test stand in
    /// for a service the simulator does not serve and still check its callers'
    /// tokens.
    pub fn token_holder(&self, token: &str) -> Option<(String, String)> {
        let st = lock(&self.inner.state);
        st.tokens
            .get(token)
            .filter(|t| t.expires > util::now_ms() / 1000)
            .map(|t| (t.principal.clone(), t.audience.clone()))
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_cert_pem(&self) -> String {
        self.inner.tls.ca_cert_pem.clone()
    }

    /// Where the CA certificate (PEM) is stored.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.inner.tls.ca_cert_path.clone()
    }

    pub(crate) fn lro_ms(&self) -> u64 {
        self.inner.lro_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Leaves the resources, secrets, blobs and operations the simulator holds
    /// to the operating system instead of freeing them one by one: for a
    /// process about to exit (`flotilla bench`, where freeing a thousand
    /// jobs' worth took about 3 % of the run's CPU). The simulator holds
    /// none of them afterwards.
    pub fn abandon_state(&self) {
        let mut st = lock(&self.inner.state);
        std::mem::forget(std::mem::take(&mut st.resources));
        std::mem::forget(std::mem::take(&mut st.secrets));
        std::mem::forget(std::mem::take(&mut st.containers));
        std::mem::forget(std::mem::take(&mut st.ops));
    }

    /// Changes how long long-running operations started from now on take
    /// (and how long instances take to boot); operations already started keep
    /// their duration.
    pub fn set_lro(&self, lro: Duration) {
        self.inner
            .lro_ms
            .store(lro.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn data_dir(&self) -> Option<&Path> {
        self.inner.config.data_dir.as_deref()
    }

    /// Saves what changed since the last save, if persistence is on (used after
    /// mutations). Saves are serialised, so rows are written in the order they changed.
    /// A changed scale set also wakes the boot agent, so that its instances
    /// boot as soon as they are due rather than at the agent's next tick.
    pub(crate) fn persist_now(&self) {
        // Read without the state lock, which the caller just let go of and
        // other requests are waiting for.
        if self
            .inner
            .sets_changed
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.inner.boot.wake();
        }
        if self.data_dir().is_none() {
            return;
        }
        let mut persist = lock(&self.inner.persist);
        let changes = {
            let mut st = lock(&self.inner.state);
            st.generation += 1;
            st.take_changes()
        };
        if let Err(e) = persist.write(&changes) {
            tracing::error!(error = %e, "cannot save simulator state");
        }
    }
}

/// The simulator's TLS server settings: its certificate, HTTP/2 and 1.1, on
/// ring (named here: the process may hold no default provider, and with
/// two compiled in, rustls would not pick one).
fn server_tls(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, SimError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| SimError::Tls(format!("{what}: {e}"));
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("server certificate", &e))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad("server key", &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad("TLS versions", &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| bad("server certificate", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod lock_tests {
    use super::lock;
    use std::sync::{Arc, Barrier, Mutex};
    use std::time::{Duration, Instant};

    #[test]
    fn a_lock_held_past_the_spins_is_still_waited_for() {
        let m = Arc::new(Mutex::new(0));
        let held = Arc::new(Barrier::new(2));
        let holder = {
            let (m, held) = (m.clone(), held.clone());
            std::thread::spawn(move || {
                let mut g = m.lock().unwrap();
                held.wait();
                std::thread::sleep(Duration::from_millis(200));
                *g = 1;
            })
        };
        held.wait();
        let started = Instant::now();
        let g = lock(&m);
        assert_eq!(*g, 1, "the holder's write is seen");
        assert!(started.elapsed() >= Duration::from_millis(150));
        drop(g);
        holder.join().unwrap();
    }

    #[test]
    fn a_poisoned_lock_still_opens() {
        let m = Arc::new(Mutex::new(7));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("a holder panics");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 7);
    }
}
