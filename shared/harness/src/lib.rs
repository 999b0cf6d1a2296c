//! Everything flotilla runs next to itself on loopback when it proves itself:
//! the npm emulators (cosmosdb-server for Cosmos DB, Azurite for Blob), the
//! built-in Azure simulator served over HTTPS with a client configuration for
//! it, the app settings that point flotilla at them, and `flotilla` child
//! processes (started, killed with SIGKILL, restarted).
//!
//! `flotilla chaos` uses it (as `flotilla::emulators`), and so do the tests of
//! every crate (the Functions-host harness in `tests/`, the `serve_*` tests,
//! the engine's and the cloud adapters' tests), so that starting an emulator
//! or wiring the simulator is written once.

use flotilla_azure::blob::{Staging, StagingAuth};
use flotilla_azure::models::api;
use flotilla_azure::transport::https_client;
use flotilla_azure::{ArmClient, AzureConfig, CredentialConfig, ResourceId, RetryPolicy};
use flotilla_sim::{Sim, SimConfig, SimInfo, SimServer, ThrottleConfig};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why an emulator, the simulator or a child process could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A file, socket or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Something that must be installed is not.
    #[error("{0}")]
    Missing(String),
    /// A process started but never became ready.
    #[error("{what} did not become ready: {detail}")]
    NotReady { what: String, detail: String },
    /// The simulator could not start or serve.
    #[error("simulator: {0}")]
    Sim(String),
    /// Preparing the simulated Azure environment failed.
    #[error("Azure environment: {0}")]
    Azure(String),
    /// A request to a flotilla child process failed.
    #[error("HTTP: {0}")]
    Http(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmulatorError {
    let what = what.into();
    move |source| EmulatorError::Io { what, source }
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> Result<u16, EmulatorError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io("bind 127.0.0.1:0"))?;
    Ok(l.local_addr().map_err(io("local address"))?.port())
}

/// `scripts/emulators` with its npm packages installed: `explicit` when given,
/// else found from the working directory, the executable's location, or this
/// source tree.
pub fn emulators_dir(explicit: Option<&Path>) -> Result<PathBuf, EmulatorError> {
    let installed = |d: &Path| d.join("node_modules").is_dir();
    if let Some(d) = explicit {
        return if installed(d) {
            Ok(d.to_path_buf())
        } else {
            Err(EmulatorError::Missing(format!(
                "{} has no node_modules: run `npm ci --prefix {}`",
                d.display(),
                d.display()
            )))
        };
    }
    let mut candidates = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(|a| a.join("scripts/emulators")));
    }
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().map(|a| a.join("scripts/emulators")));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/emulators"));
    candidates.into_iter().find(|d| installed(d)).ok_or_else(|| {
        EmulatorError::Missing(
            "the npm emulators are not installed: run `npm ci --prefix scripts/emulators` in the flotilla checkout"
                .into(),
        )
    })
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct ChildProcess {
    child: Child,
}

impl ChildProcess {
    /// Takes ownership of a spawned child.
    pub fn new(child: Child) -> ChildProcess {
        ChildProcess { child }
    }

    /// The OS process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The underlying child (e.g. to take its stdout).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// cosmosdb-server over HTTPS on loopback with a throwaway certificate.
pub struct Cosmos {
    /// `https://127.0.0.1:{port}/`.
    pub endpoint: String,
    _proc: ChildProcess,
    _dir: tempfile::TempDir,
}

impl Cosmos {
    /// The emulator's own certificate (PEM), for a client that trusts exactly it.
    pub fn certificate_pem(&self) -> Vec<u8> {
        std::fs::read(self._dir.path().join("cert.pem")).unwrap_or_default()
    }
}

/// Starts cosmosdb-server (`scripts/emulators/cosmos.js`) on a free port.
/// Needs `node` on PATH and the npm packages in `emulators`.
pub fn start_cosmos(emulators: &Path) -> Result<Cosmos, EmulatorError> {
    if !emulators
        .join("node_modules/@vercel/cosmosdb-server")
        .is_dir()
    {
        return Err(EmulatorError::Missing(format!(
            "cosmosdb-server is not installed: run `npm ci --prefix {}`",
            emulators.display()
        )));
    }
    let dir = tempfile::tempdir().map_err(io("temporary directory"))?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let tls_err = |e: rcgen::Error| EmulatorError::Sim(format!("Cosmos certificate: {e}"));
    let key_pair = rcgen::KeyPair::generate().map_err(tls_err)?;
    let generated = rcgen::CertificateParams::new(names)
        .and_then(|p| p.self_signed(&key_pair))
        .map_err(tls_err)?;
    std::fs::write(&cert, generated.pem()).map_err(io("write the Cosmos certificate"))?;
    std::fs::write(&key, key_pair.serialize_pem()).map_err(io("write the Cosmos key"))?;
    let child = Command::new("node")
        .arg(emulators.join("cosmos.js"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["--port", "0", "--host", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("start node (cosmos.js)"))?;
    let mut proc = ChildProcess::new(child);
    let stdout = proc
        .child_mut()
        .stdout
        .take()
        .ok_or_else(|| EmulatorError::Sim("cosmos.js has no stdout".into()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(e) = line.strip_prefix("COSMOS_READY ") {
                let _ = tx.send(e.trim().to_string());
            }
        }
    });
    let endpoint =
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| EmulatorError::NotReady {
                what: "cosmosdb-server".into(),
                detail: "no COSMOS_READY line within 30 s".into(),
            })?;
    Ok(Cosmos {
        endpoint,
        _proc: proc,
        _dir: dir,
    })
}

/// Azurite's blob service on loopback, in memory.
pub struct Azurite {
    /// `http://127.0.0.1:{port}/devstoreaccount1`.
    pub endpoint: String,
    _proc: ChildProcess,
    _dir: tempfile::TempDir,
}

/// Starts Azurite's blob service on a free port.
pub fn start_azurite(emulators: &Path) -> Result<Azurite, EmulatorError> {
    let main = emulators.join("node_modules/azurite/dist/src/blob/main.js");
    if !main.is_file() {
        return Err(EmulatorError::Missing(format!(
            "Azurite is not installed: run `npm ci --prefix {}`",
            emulators.display()
        )));
    }
    let dir = tempfile::tempdir().map_err(io("temporary directory"))?;
    let port = free_port()?;
    let child = Command::new("node")
        .arg(&main)
        .args([
            "--silent",
            "--inMemoryPersistence",
            "--extentMemoryLimit",
            "64",
            "--blobHost",
            "127.0.0.1",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ])
        .args(["--blobPort", &port.to_string()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("start node (Azurite)"))?;
    let proc = ChildProcess::new(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(EmulatorError::NotReady {
                what: "Azurite".into(),
                detail: format!("port {port} not listening within 30 s"),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Azurite {
        endpoint: format!("http://127.0.0.1:{port}/devstoreaccount1"),
        _proc: proc,
        _dir: dir,
    })
}

/// A client configuration for a simulator reached at `info`'s endpoints
/// through `http`: its client-credentials principal (or `secret` instead of
/// its own secret, to test refusals).
pub fn sim_client_config(
    info: &SimInfo,
    http: Arc<dyn azure_core::http::HttpClient>,
    secret: Option<&str>,
) -> Result<AzureConfig, EmulatorError> {
    Ok(AzureConfig {
        arm_endpoint: url::Url::parse(&info.arm_endpoint)
            .map_err(|e| EmulatorError::Sim(format!("ARM endpoint: {e}")))?,
        subscription_id: info.subscription_id.clone(),
        keyvault_url: info.keyvault_url.clone(),
        credential: CredentialConfig::ClientSecret {
            tenant_id: info.tenant_id.clone(),
            client_id: info.client_id.clone(),
            secret: secret.unwrap_or(&info.client_secret).to_string(),
            authority_host: Some(info.authority_host.clone()),
        },
        retry: RetryPolicy::default(),
        http,
    })
}

/// An HTTPS client that trusts exactly the simulator's CA (and the platform roots).
pub fn sim_https(sim: &Sim) -> Result<Arc<dyn azure_core::http::HttpClient>, EmulatorError> {
    https_client(Some(sim.ca_cert_pem().as_bytes())).map_err(EmulatorError::Sim)
}

/// App settings (environment variables) for a flotilla process, in order;
/// setting a name again replaces its value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppSettings(Vec<(String, String)>);

impl AppSettings {
    /// Sets `name` (replacing an earlier value).
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
        self
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.0.retain(|(n, _)| n != name);
        self
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// How to start the simulator for a run next to flotilla processes.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// How long every long-running operation takes.
    pub lro: Duration,
    /// ARM throttling; `None` turns it off.
    pub throttle: Option<ThrottleConfig>,
    /// The Service Bus peek-lock duration (how soon a killed consumer's messages come back).
    pub servicebus_lock: Duration,
    /// Booting nodes run their init scripts (see `SimConfig::node_scripts`);
    /// off by default: these worlds measure the engine.
    pub node_scripts: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            lro: Duration::ZERO,
            throttle: None,
            servicebus_lock: Duration::from_secs(5),
            node_scripts: false,
        }
    }
}

/// The built-in simulator served over HTTPS in this process, with a client
/// configuration for environment setup (its client-credentials principal).
pub struct SimEnvironment {
    pub sim: Sim,
    pub server: SimServer,
    /// For setup calls: the simulator's client-credentials principal.
    pub config: AzureConfig,
}

/// The PATH of flotilla child processes (they run nothing from it themselves).
const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl SimEnvironment {
    /// Starts a memory-only simulator on a free loopback port.
    pub async fn start(options: SimOptions) -> Result<SimEnvironment, EmulatorError> {
        let sim = Sim::new(SimConfig {
            data_dir: None,
            lro: options.lro,
            throttle: options.throttle,
            node_scripts: options.node_scripts,
            ..SimConfig::default()
        })
        .map_err(|e| EmulatorError::Sim(e.to_string()))?;
        sim.set_servicebus_lock_duration(options.servicebus_lock);
        let server = sim
            .serve(0)
            .await
            .map_err(|e| EmulatorError::Sim(e.to_string()))?;
        let config = sim_client_config(&server.info, sim_https(&sim)?, None)?;
        Ok(SimEnvironment {
            sim,
            server,
            config,
        })
    }

    /// Endpoints and credentials of the served simulator.
    pub fn info(&self) -> &SimInfo {
        &self.server.info
    }

    /// Creates a resource group (if missing).
    pub async fn resource_group(
        &self,
        name: &str,
        location: &str,
    ) -> Result<ResourceId, EmulatorError> {
        let id = ResourceId::resource_group(&self.config.subscription_id, name);
        put_and_wait(
            &self.config,
            &id,
            api::RESOURCES,
            json!({"location": location}),
        )
        .await?;
        Ok(id)
    }

    /// Creates a storage account (and its resource group) whose keys `keys` lists.
    pub async fn storage_account(
        &self,
        resource_group: &str,
        name: &str,
    ) -> Result<ResourceId, EmulatorError> {
        self.resource_group(resource_group, "westeurope").await?;
        let id = ResourceId::new(
            &self.config.subscription_id,
            resource_group,
            "Microsoft.Storage",
            "storageAccounts",
            name,
        );
        let body = json!({
            "location": "westeurope",
            "kind": "StorageV2",
            "sku": {"name": "Standard_LRS"},
            "properties": {"minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": false}
        });
        put_and_wait(&self.config, &id, api::STORAGE, body).await?;
        Ok(id)
    }

    /// The simulator's blob endpoint for `account`.
    pub fn blob_endpoint(&self, account: &str) -> String {
        format!(
            "{}/{account}",
            self.info().blob_endpoint.trim_end_matches('/')
        )
    }

    /// Creates a blob container in the simulator's blob service.
    pub async fn blob_container(
        &self,
        account: &str,
        container: &str,
    ) -> Result<(), EmulatorError> {
        Staging::new(
            &self.config,
            &self.blob_endpoint(account),
            container,
            StagingAuth::Token,
        )
        .map_err(|e| EmulatorError::Azure(e.to_string()))?
        .ensure_container()
        .await
        .map_err(|e| EmulatorError::Azure(format!("container {container}: {e}")))
    }

    /// [`sim_app_settings`] for this simulator.
    pub fn azure_settings(&self) -> AppSettings {
        sim_app_settings(self.info())
    }

    /// Stops serving.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// The app settings that point flotilla's Azure clients at a simulator:
/// ARM, Key Vault, Service Bus, the managed-identity endpoint and the CA.
/// Store, bus and staging settings are the caller's.
pub fn sim_app_settings(info: &SimInfo) -> AppSettings {
    let mut s = AppSettings::default();
    s.set("ARM_ENDPOINT", &info.arm_endpoint)
        .set("AZURE_SUBSCRIPTION_ID", &info.subscription_id)
        .set("AZURE_TENANT_ID", &info.tenant_id)
        .set("KEYVAULT_URL", &info.keyvault_url)
        .set("KEYVAULT_ID", &info.keyvault_id)
        .set("AZURE_CREDENTIAL", "managed-identity")
        .set("IDENTITY_ENDPOINT", &info.managed_identity_endpoint)
        .set("IDENTITY_HEADER", &info.identity_header)
        .set("AZURE_CA_CERT", &info.ca_cert)
        .set("SERVICEBUS_ENDPOINT", &info.servicebus_endpoint);
    s
}

/// PUTs a resource with the setup principal and waits for its operation.
pub async fn put_and_wait(
    config: &AzureConfig,
    id: &ResourceId,
    api_version: &str,
    body: Value,
) -> Result<(), EmulatorError> {
    let arm = ArmClient::for_environment_setup(config)
        .map_err(|e| EmulatorError::Azure(e.to_string()))?;
    let start = arm
        .put(id, api_version, &body)
        .await
        .map_err(|e| EmulatorError::Azure(format!("{id}: {e}")))?;
    if let Some(poll) = start.poll {
        arm.wait(&poll, Duration::from_secs(120))
            .await
            .map_err(|e| EmulatorError::Azure(format!("{id}: {e}")))?;
    }
    Ok(())
}

/// A `flotilla` child process (`serve`, `worker`, …) with its app settings,
/// its output appended to a log file, and kill -9 / restart.
pub struct FlotillaProcess {
    bin: PathBuf,
    args: Vec<String>,
    settings: AppSettings,
    log: PathBuf,
    /// Its TMPDIR (beside its log): whatever a child killed with -9 leaves
    /// there (a throwaway simulator's TLS keys, say) is removed once it is
    /// reaped, so nothing of it outlives the process in the machine's /tmp.
    scratch: PathBuf,
    proc: Option<ChildProcess>,
    /// The port it serves HTTP on, for `serve`.
    pub port: Option<u16>,
}

impl Drop for FlotillaProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl FlotillaProcess {
    /// Describes the process; nothing starts until [`FlotillaProcess::spawn`].
    /// With `port`, FUNCTIONS_CUSTOMHANDLER_PORT is set to it (as the Functions host does).
    pub fn new(
        bin: &Path,
        args: &[&str],
        mut settings: AppSettings,
        log: &Path,
        port: Option<u16>,
    ) -> FlotillaProcess {
        if let Some(p) = port {
            settings.set("FUNCTIONS_CUSTOMHANDLER_PORT", p.to_string());
        }
        FlotillaProcess {
            bin: bin.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            settings,
            log: log.to_path_buf(),
            scratch: {
                let mut s = log.as_os_str().to_owned();
                s.push(".tmp");
                PathBuf::from(s)
            },
            proc: None,
            port,
        }
    }

    /// Starts it with exactly its app settings: no app setting of this
    /// process (any name in flotilla's settings registry) leaks in.
    pub fn spawn(&mut self) -> Result<(), EmulatorError> {
        let what = || format!("log file {}", self.log.display());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io(what()))?;
        let err = log.try_clone().map_err(io(what()))?;
        std::fs::create_dir_all(&self.scratch)
            .map_err(io(format!("TMPDIR {}", self.scratch.display())))?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .env_clear()
            // A fixed PATH: the children get only their app settings, never
            // this process's environment.
            .env("PATH", CHILD_PATH)
            .env("TMPDIR", &self.scratch)
            .envs(self.settings.iter())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(io(format!("start {}", self.bin.display())))?;
        self.proc = Some(ChildProcess::new(child));
        Ok(())
    }

    /// `kill -9` (no chance to clean up), then reap and empty its TMPDIR.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }

    /// The OS process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(ChildProcess::id)
    }

    /// The exit status if it was started and has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.as_mut().and_then(ChildProcess::exited)
    }

    /// Its app settings.
    pub fn settings(&self) -> &AppSettings {
        &self.settings
    }

    /// What it wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn not_ready(&self, detail: String) -> EmulatorError {
        let log = self.log();
        let tail: String = log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        EmulatorError::NotReady {
            what: format!("flotilla {}", self.args.join(" ")),
            detail: format!("{detail}; log tail:\n{tail}"),
        }
    }

    /// Waits until `GET /` on its port gets any HTTP answer (the Functions
    /// host's readiness ping); fails early if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), EmulatorError> {
        let port = self
            .port
            .ok_or_else(|| self.not_ready("it has no port".into()))?;
        let deadline = Instant::now() + timeout;
        loop {
            if http_answers_async(port).await {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(self.not_ready(format!("it exited with {status}")));
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(format!("no answer within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`FlotillaProcess::wait_ready`] for synchronous callers.
    pub fn wait_ready_blocking(&mut self, timeout: Duration) -> Result<(), EmulatorError> {
        let port = self
            .port
            .ok_or_else(|| self.not_ready("it has no port".into()))?;
        let deadline = Instant::now() + timeout;
        loop {
            if http_answers(port) {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(self.not_ready(format!("it exited with {status}")));
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(format!("no answer within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const READY_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/// Whether something on the port answers `GET /` with an HTTP status line.
fn http_answers(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 5];
    s.write_all(READY_REQUEST).is_ok() && s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

async fn http_answers_async(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(READY_REQUEST).await.ok()?;
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

/// What an HTTP-triggered function answered (`Outputs.res`).
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionAnswer {
    pub status: u16,
    pub headers: Value,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// The invocation's `Logs`.
    pub logs: Value,
}

impl FunctionAnswer {
    /// Reads `Outputs.res` of a custom-handler reply.
    pub fn of(reply: &Value) -> FunctionAnswer {
        let res = &reply["Outputs"]["res"];
        let status = res["StatusCode"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| {
                res["StatusCode"]
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
            })
            .unwrap_or(0);
        FunctionAnswer {
            status,
            headers: res["Headers"].clone(),
            body: serde_json::from_str(res["Body"].as_str().unwrap_or("null"))
                .unwrap_or(Value::Null),
            logs: reply["Logs"].clone(),
        }
    }
}

/// The invocation envelope the Functions host POSTs for an HTTP trigger
/// (`Data.req`); `headers` are (name, value) pairs.
pub fn http_envelope(
    function: &str,
    method: &str,
    params: Value,
    headers: &[(&str, &str)],
    body: &str,
) -> Value {
    let mut h = serde_json::Map::new();
    for (k, v) in headers {
        h.insert((*k).to_string(), json!([v]));
    }
    json!({
        "Data": {"req": {
            "Url": format!("https://app.example/api/{function}"),
            "Method": method,
            "Query": {},
            "Headers": h,
            "Params": params,
            "Identities": [],
            "Body": body,
        }},
        "Metadata": {},
    })
}

/// POSTs an envelope to `/{function}` of the custom handler on `port`;
/// (transport status, reply JSON or `Null`).
pub async fn invoke(
    client: &reqwest::Client,
    port: u16,
    function: &str,
    envelope: &Value,
) -> Result<(u16, Value), EmulatorError> {
    let r = client
        .post(format!("http://127.0.0.1:{port}/{function}"))
        .json(envelope)
        .send()
        .await
        .map_err(|e| EmulatorError::Http(format!("{function}: {e}")))?;
    let status = r.status().as_u16();
    let body = r
        .bytes()
        .await
        .map_err(|e| EmulatorError::Http(format!("{function}: {e}")))?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// Invokes an HTTP-triggered function as the Functions host would; a transport
/// status other than 200 (a failed invocation) is an error.
pub async fn invoke_http(
    client: &reqwest::Client,
    port: u16,
    function: &str,
    method: &str,
    params: Value,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<FunctionAnswer, EmulatorError> {
    let envelope = http_envelope(function, method, params, headers, body);
    let (status, reply) = invoke(client, port, function, &envelope).await?;
    if status != 200 {
        return Err(EmulatorError::Http(format!(
            "{function}: the invocation failed with {status}: {reply}"
        )));
    }
    Ok(FunctionAnswer::of(&reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/bin/sh` child that writes a file in its TMPDIR and waits; the
    /// file's path once it is there.
    fn child_that_leaves_a_key(dir: &Path) -> (FlotillaProcess, PathBuf) {
        let script = "mkdir \"$TMPDIR/flotilla-sim1\" && echo key > \"$TMPDIR/flotilla-sim1/ca-key.pem\" && sleep 60";
        let mut p = FlotillaProcess::new(
            Path::new("/bin/sh"),
            &["-c", script],
            AppSettings::default(),
            &dir.join("serve.log"),
            None,
        );
        p.spawn().expect("spawn");
        let key = dir.join("serve.log.tmp/flotilla-sim1/ca-key.pem");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !key.exists() {
            assert!(Instant::now() < deadline, "the child never wrote {key:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        (p, key)
    }

    #[test]
    fn what_a_killed_child_left_in_its_tmpdir_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut p, key) = child_that_leaves_a_key(dir.path());
        p.kill9();
        assert!(!key.exists() && !dir.path().join("serve.log.tmp").exists());
        // Restarted, it gets a fresh TMPDIR.
        p.spawn().expect("respawn");
        assert!(dir.path().join("serve.log.tmp").is_dir());
    }

    #[test]
    fn what_a_dropped_child_left_in_its_tmpdir_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = child_that_leaves_a_key(dir.path());
        drop(p);
        assert!(!key.exists() && !dir.path().join("serve.log.tmp").exists());
    }
}
