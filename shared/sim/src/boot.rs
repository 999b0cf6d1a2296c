//! Scale set instances that boot: once a scale set's operation finished and
//! its instances' boot time passed, each new instance runs its init
//! extension. A background task (started with the simulator's first request)
//! watches the scale sets and, per new instance:
//!
//! - **scripted boot** (a served simulator, bash and curl present, a
//!   flotilla init script in this simulator's blob store): downloads the
//!   script with the extension's protected settings and runs it through
//!   [`crate::node::Harness`], with the VM's metadata endpoint, the token
//!   endpoint, Key Vault and Blob all pointing at this simulator, and the node
//!   stubs registering the node with the cluster's simulated API server
//!   ([`crate::kube`]). The script's exit code and output become the
//!   instance's extension status, as the CustomScript extension reports them;
//! - **quick boot** (an in-process simulator, a machine without bash/curl,
//!   `SimConfig::node_scripts` off, or
//!   a script the simulator cannot read, e.g. staged in Azurite): the node is
//!   registered directly, and instance 0 of a master scale set publishes the
//!   join token, CA hash, certificate key and admin kubeconfig to Key Vault
//!   as the first master would;
//! - anything that is not a flotilla node (no `flotilla-job` tag) just reports
//!   its extension as succeeded.
//!
//! Instances removed by a scale-in or a delete leave their cluster and have
//! their running script stopped.

use crate::doc::Doc;
use crate::kube::{self, Instance, Phase};
use crate::node::Harness;
use crate::state::{Secret, SecretVersion};
use crate::util::{now_ms, random_hex32};
use crate::{lock, Inner, Sim};
use base64::Engine as _;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::arm::VMSS_TYPE;
/// Scripts running at once (each mostly waits on HTTP and the stubs).
const PARALLEL: usize = 4;
/// The longest the agent waits between two looks at the scale sets (for
/// boot times coming due; a changed scale set wakes it at once).
const TICK: Duration = Duration::from_millis(100);

/// The background task's state.
#[derive(Default)]
pub(crate) struct Agent {
    started: AtomicBool,
    /// Set by `Sim::serve`: the base URL nodes reach the simulator at.
    served: Mutex<Option<String>>,
    /// The base URL of the first request (in-process use).
    seen: Mutex<Option<String>>,
    /// Running scripts, by (scale set key, instance).
    tasks: Mutex<HashMap<(String, usize), tokio::task::AbortHandle>>,
    /// Where node roots live when the simulator has no data directory.
    temp: Mutex<Option<tempfile::TempDir>>,
    /// VMs (`{scaleSet}_{instance}`, lowercase) a scale-in or a delete removed.
    removed: Mutex<std::collections::HashSet<String>>,
    /// Scale sets (lowercase ids) a tick has to look at: changed since they
    /// were last settled, or waiting for their boot time. A tick costs what
    /// changed, not the number of scale sets.
    pending: Mutex<BTreeSet<String>>,
    /// Whether the first tick looked at every scale set and every
    /// instance record (what was there before the agent started).
    scanned: AtomicBool,
    /// Wakes the agent before its next tick is due (a scale set changed).
    woken: Arc<tokio::sync::Notify>,
}

impl Agent {
    /// Has the agent tick now rather than when its period is up.
    pub(crate) fn wake(&self) {
        self.woken.notify_one();
    }
}

/// Whether VM `{scaleSet}_{instance}` booted here once and has been removed
/// since (or is about to be: its scale set is gone but the agent has not
/// stopped it yet).
pub(crate) fn was_removed(sim: &Sim, vm: &str) -> bool {
    let vm = vm.to_ascii_lowercase();
    let Some((set, _)) = vm.rsplit_once('_') else {
        return false;
    };
    // The instance list first: the agent records a VM as removed before it
    // takes it off that list, so one of the two always knows it.
    let suffix = format!("/{set}");
    let listed = lock(&sim.inner.kube.data)
        .instances
        .keys()
        .any(|k| k.ends_with(&suffix));
    listed || lock(&sim.inner.boot.removed).contains(&vm)
}

/// Starts the agent once, on its own thread; `served` says `base` is the
/// simulator's own HTTPS base URL (it listens on a socket).
pub(crate) fn start(sim: &Sim, base: &str, served: bool) {
    let agent = &sim.inner.boot;
    if served {
        *lock(&agent.served) = Some(base.to_string());
    } else if lock(&agent.seen).is_none() {
        *lock(&agent.seen) = Some(base.to_string());
    }
    if agent.started.swap(true, Ordering::SeqCst) {
        return;
    }
    // Its own thread and runtime: a busy engine on the caller's runtime must
    // not keep the instances from booting.
    let weak = Arc::downgrade(&sim.inner);
    let spawned = std::thread::Builder::new()
        .name("sim-boot".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(weak)),
                Err(e) => tracing::error!(error = %e, "the simulator cannot boot instances"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the simulator cannot boot instances");
        agent.started.store(false, Ordering::SeqCst);
    }
}

async fn run(weak: Weak<Inner>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let woken = inner.boot.woken.clone();
        tick(&Sim { inner }, &permits);
        // Only the wake-up is held while waiting: a simulator dropped
        // meanwhile is gone by the next tick.
        let _ = tokio::time::timeout(TICK, woken.notified()).await;
    }
}

/// A scale set whose instances have booted, as the agent needs it.
struct SetInfo {
    key: String,
    name: String,
    job: Option<String>,
    role: String,
    location: String,
    prefix: String,
    target: usize,
    extension: String,
    settings: Value,
    /// The scale set's `identity` block (which identities its VMs have).
    identity: Value,
}

/// The scale sets a tick has to act on, each with its instance target
/// (`None` for a set that is gone or whose boot time has not come: it has no
/// instances), and the details of those with fewer instances than their
/// target. A set leaves the pending list once a tick settles it; one whose
/// boot time has not come stays on it.
fn sets(sim: &Sim) -> (BTreeMap<String, Option<usize>>, Vec<SetInfo>) {
    let now = now_ms();
    let agent = &sim.inner.boot;
    let mut pending = lock(&agent.pending);
    // The first tick looks at everything that was there before it.
    let first = !agent.scanned.swap(true, Ordering::SeqCst);
    {
        let mut st = lock(&sim.inner.state);
        pending.extend(st.resources.take_watched());
        if first {
            let index = crate::state::type_index(VMSS_TYPE);
            pending.extend(st.resources.indexed(&index).map(|(k, _)| k.clone()));
        }
    }
    let have: BTreeMap<String, usize> = {
        let data = lock(&sim.inner.kube.data);
        if first {
            // Instances of sets gone while the agent was not running leave too.
            pending.extend(data.instances.keys().cloned());
        }
        pending
            .iter()
            .filter_map(|k| data.instances.get(k).map(|l| (k.clone(), l.len())))
            .collect()
    };
    let mut targets = BTreeMap::new();
    let mut out = vec![];
    let st = lock(&sim.inner.state);
    pending.retain(|key| {
        let boot = st
            .resources
            .get(key)
            .and_then(|r| Some((r, r.boot.as_ref()?)));
        let waiting = boot.is_some_and(|(_, b)| now < b.ready_at_ms);
        let target = boot.filter(|_| !waiting).map(|(_, b)| b.target as usize);
        targets.insert(key.clone(), target);
        if let (Some((r, _)), Some(target)) = (boot, target) {
            if have.get(key).copied().unwrap_or(0) < target {
                out.push(set_info(key, r, target));
            }
        }
        waiting
    });
    // Masters first, so a first master never waits behind its workers.
    out.sort_by_key(|s| s.role != "master");
    (targets, out)
}

/// What booting the instances of scale set `r` takes.
fn set_info(key: &str, r: &crate::state::Resource, target: usize) -> SetInfo {
    let text = |pointer: &str| r.body.pointer(pointer).and_then(Doc::as_str);
    let ext = r
        .body
        .pointer("/properties/virtualMachineProfile/extensionProfile/extensions/0")
        .unwrap_or(&Doc::Null);
    SetInfo {
        key: key.to_string(),
        name: r.name.clone(),
        job: text("/tags/flotilla-job").map(str::to_string),
        role: text("/tags/flotilla-role").unwrap_or("").to_string(),
        location: text("/location").unwrap_or("").to_string(),
        prefix: text("/properties/virtualMachineProfile/osProfile/computerNamePrefix")
            .unwrap_or("vm")
            .to_string(),
        target,
        extension: ext
            .get("name")
            .and_then(Doc::as_str)
            .unwrap_or("extension")
            .to_string(),
        settings: ext
            .pointer("/properties/protectedSettings")
            .map(Doc::to_value)
            .unwrap_or_default(),
        identity: r
            .body
            .get("identity")
            .map(Doc::to_value)
            .unwrap_or_default(),
    }
}

fn tick(sim: &Sim, permits: &Arc<tokio::sync::Semaphore>) {
    let (targets, sets) = sets(sim);
    // Instances that no longer exist leave their cluster.
    let mut gone = vec![];
    {
        let mut data = lock(&sim.inner.kube.data);
        for (key, target) in &targets {
            let keep = target.unwrap_or(0);
            let Some(list) = data.instances.get_mut(key) else {
                continue;
            };
            while list.len() > keep {
                let n = list.len() - 1;
                if let Some(inst) = list.pop() {
                    // Known as removed before it leaves the instance list, so
                    // no moment finds it in neither (see `was_removed`).
                    if let Some(set) = key.rsplit('/').next() {
                        lock(&sim.inner.boot.removed)
                            .insert(format!("{set}_{n}").to_ascii_lowercase());
                    }
                    gone.push((key.clone(), n, inst));
                }
            }
            if list.is_empty() && target.is_none() {
                data.instances.remove(key);
            }
        }
        for (_, _, inst) in &gone {
            for c in data.clusters.values_mut() {
                c.nodes.remove(&inst.computer_name);
            }
        }
    }
    let dir = if gone.is_empty() {
        None
    } else {
        nodes_dir(sim)
    };
    for (key, n, inst) in &gone {
        if let Some(task) = lock(&sim.inner.boot.tasks).remove(&(key.clone(), *n)) {
            task.abort();
        }
        // The instance's disk goes with it.
        if let (Some(dir), Some(set)) = (&dir, key.rsplit('/').next()) {
            let _ = std::fs::remove_dir_all(dir.join(set).join(&inst.computer_name));
        }
    }
    // New instances boot.
    let mut started = false;
    for set in sets {
        let have = lock(&sim.inner.kube.data)
            .instances
            .get(&set.key)
            .map_or(0, Vec::len);
        if have >= set.target {
            continue;
        }
        let set = Arc::new(set);
        tracing::debug!(set = %set.name, from = have, to = set.target, "instances boot");
        for n in have..set.target {
            let computer_name =
                format!("{}{}", set.prefix, kube::base36(n as u64)).to_ascii_lowercase();
            lock(&sim.inner.kube.data)
                .instances
                .entry(set.key.clone())
                .or_default()
                .push(Instance {
                    computer_name,
                    phase: Phase::Running,
                    message: "The VM is running its init extension.".into(),
                });
            // The task holds the simulator weakly: a simulator dropped while
            // its instances wait for a turn (or run a script) is gone at once,
            // its temporary directories with it, not when the last boot ends
            // (a process that exits first would leave them behind).
            let (weak, set2, permits) = (Arc::downgrade(&sim.inner), set.clone(), permits.clone());
            let handle = tokio::spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                let Some(inner) = weak.upgrade() else { return };
                boot(Sim { inner }, &set2, n).await;
            });
            lock(&sim.inner.boot.tasks).insert((set.key.clone(), n), handle.abort_handle());
            started = true;
        }
    }
    if started || !gone.is_empty() {
        kube::persist(sim);
    }
}

/// Records how instance `n` ended.
fn finish(
    sim: &Sim,
    set: &SetInfo,
    n: usize,
    phase: Phase,
    message: String,
    short: Option<String>,
) {
    {
        let mut data = lock(&sim.inner.kube.data);
        if let Some(inst) = data.instances.get_mut(&set.key).and_then(|l| l.get_mut(n)) {
            inst.phase = phase;
            inst.message = message;
        }
    }
    lock(&sim.inner.boot.tasks).remove(&(set.key.clone(), n));
    kube::persist(sim);
    if let Some(short) = short {
        // The scale set's aggregated instance view reports the failure too.
        {
            let mut st = lock(&sim.inner.state);
            if let Some(mut r) = st.resources.edit(&set.key) {
                if let Some(boot) = r.boot.as_mut() {
                    for ext in boot.extensions.iter_mut().filter(|e| e.0 == set.extension) {
                        if ext.1.is_none() {
                            ext.1 = Some(short.clone());
                        }
                    }
                }
            };
        }
        sim.persist_now();
    }
}

/// The script an instance downloads, when this simulator holds it.
enum Script {
    /// The download failed (the message the extension reports).
    Refused(String),
    /// Staged somewhere the simulator cannot read (Azurite).
    Elsewhere,
    /// The script's content (its runs shared with the blob store; joined
    /// into one buffer after the state's lock is given back).
    Text(crate::content::Content),
}

fn download(sim: &Sim, identity: &Value, settings: &Value) -> Script {
    let uri = settings
        .pointer("/fileUris/0")
        .and_then(Value::as_str)
        .unwrap_or("");
    let st = lock(&sim.inner.state);
    if let Err(e) = crate::blob::fetch_for_vm(&st, identity, settings, uri) {
        return Script::Refused(e);
    }
    let Ok(url) = url::Url::parse(uri) else {
        return Script::Elsewhere;
    };
    let segs: Vec<String> = url
        .path_segments()
        .map(|s| s.map(crate::util::percent_decode).collect())
        .unwrap_or_default();
    if segs.len() < 4 || segs[0] != "blob" {
        return Script::Elsewhere;
    }
    let ckey = format!("{}/{}", segs[1], segs[2]).to_ascii_lowercase();
    let Some(blob) = st
        .containers
        .get(&ckey)
        .and_then(|c| c.blobs.get(&segs[3..].join("/")))
    else {
        return Script::Elsewhere;
    };
    Script::Text(blob.data.clone())
}

/// A rendered variable of a flotilla init script (`NAME='value'`).
fn rendered(script: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}='");
    script
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.strip_suffix('\''))
        .map(str::to_string)
}

/// Splits the extension's command into the service-principal secret (when
/// the command sets it) and the script's arguments.
fn parse_command(command: &str) -> (Option<String>, Vec<String>) {
    let mut rest = command.trim();
    let mut secret = None;
    if let Some(after) = rest.strip_prefix("FLOTILLA_SP_SECRET='") {
        // A single-quoted shell word, with '\'' for a quote.
        let mut value = String::new();
        let mut tail = after;
        while let Some(i) = tail.find('\'') {
            value.push_str(&tail[..i]);
            tail = &tail[i + 1..];
            if let Some(t) = tail.strip_prefix("\\''") {
                value.push('\'');
                tail = t;
            } else {
                break;
            }
        }
        secret = Some(value);
        rest = tail.trim();
    }
    let words: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
    let args = words
        .iter()
        .position(|w| w.ends_with(".sh"))
        .map(|i| words[i + 1..].to_vec())
        .unwrap_or_default();
    (secret, args)
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn nodes_dir(sim: &Sim) -> Option<PathBuf> {
    if let Some(dir) = sim.data_dir() {
        return Some(dir.join("nodes"));
    }
    let mut temp = lock(&sim.inner.boot.temp);
    if temp.is_none() {
        *temp = tempfile::Builder::new()
            .prefix("flotilla-nodes")
            .tempdir()
            .ok();
    }
    temp.as_ref().map(|t| t.path().to_path_buf())
}

async fn boot(owned: Sim, set: &SetInfo, n: usize) {
    let sim = &owned;
    let computer = format!("{}{}", set.prefix, kube::base36(n as u64)).to_ascii_lowercase();
    let script = download(sim, &set.identity, &set.settings);
    let script = match script {
        Script::Refused(e) => return finish(sim, set, n, Phase::Failed, e.clone(), Some(e)),
        s => s,
    };
    let Some(job) = set.job.clone() else {
        return finish(
            sim,
            set,
            n,
            Phase::Succeeded,
            "Enable succeeded".into(),
            None,
        );
    };
    let content = match &script {
        Script::Text(content) => Some(content),
        _ => None,
    };
    let read = read_script(content);
    let host = read.endpoint.unwrap_or_else(|| {
        format!(
            "{job}.{}.cloudapp.azure.com",
            set.location.to_ascii_lowercase()
        )
    });
    let (flotilla_script, bytes) = (read.flotilla, read.joined);
    let token = kube::ensure_cluster(sim, &host);
    let served = lock(&sim.inner.boot.served).clone();
    match (served, nodes_dir(sim)) {
        (Some(base), Some(dir))
            if flotilla_script && sim.inner.config.node_scripts && crate::node::available() =>
        {
            let bytes = bytes.unwrap_or_else(|| whole_script(content));
            let text = script_text(&bytes);
            scripted(owned, set, n, &computer, &base, &host, &token, &text, &dir).await
        }
        _ => quick(sim, set, n, &computer, &job, &host, &token),
    }
}

/// How a flotilla script renders its endpoint: a line of its own, after
/// the shebang.
const RENDERED_ENDPOINT: &str = "\nAPI_ENDPOINT='";

/// The whole script, its runs joined (empty when there is none).
fn whole_script(content: Option<&crate::content::Content>) -> bytes::Bytes {
    content.map(|c| c.to_bytes()).unwrap_or_default()
}

/// What the boot agent reads from an init script.
struct ReadScript {
    /// Its rendered `API_ENDPOINT`.
    endpoint: Option<String>,
    /// Whether it is a flotilla script (one that renders `API_ENDPOINT`).
    flotilla: bool,
    /// The whole script, when reading it needed the runs joined.
    joined: Option<bytes::Bytes>,
}

/// Reads `content`'s rendered endpoint. A flotilla script's rendered
/// variables lead it, so they are read from its first run: the runs are
/// joined (a copy of the whole script, for every instance) only when the
/// variables are not there.
fn read_script(content: Option<&crate::content::Content>) -> ReadScript {
    let head = content.map_or("", |c| complete_lines(c.first_run()));
    if let Some(endpoint) =
        rendered(head, "API_ENDPOINT").filter(|_| head.contains(RENDERED_ENDPOINT))
    {
        return ReadScript {
            endpoint: Some(endpoint),
            flotilla: true,
            joined: None,
        };
    }
    let bytes = whole_script(content);
    let text = script_text(&bytes);
    ReadScript {
        endpoint: rendered(&text, "API_ENDPOINT"),
        flotilla: text.contains(RENDERED_ENDPOINT),
        joined: Some(bytes.clone()),
    }
}

/// A script as text. Checked whole first: `from_utf8_lossy` walks a valid
/// script chunk by chunk, a cost paid again for every instance.
fn script_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The whole lines at the start of `bytes` ("" unless they are UTF-8).
fn complete_lines(bytes: &[u8]) -> &str {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    std::str::from_utf8(&bytes[..end]).unwrap_or("")
}

#[allow(clippy::too_many_arguments)]
async fn scripted(
    owned: Sim,
    set: &SetInfo,
    n: usize,
    computer: &str,
    base: &str,
    host: &str,
    token: &str,
    script: &str,
    dir: &std::path::Path,
) {
    let sim = &owned;
    let harness = match Harness::create(
        &dir.join(set.name.to_ascii_lowercase()).join(computer),
        &dir.join(host).join("cluster"),
    ) {
        Ok(h) => h,
        Err(e) => {
            let m = format!("the simulator cannot lay out node {computer}: {e}");
            return finish(sim, set, n, Phase::Failed, m.clone(), Some(m));
        }
    };
    let auth = dir
        .join(set.name.to_ascii_lowercase())
        .join(computer)
        .join("kube-auth.h");
    if let Err(e) = std::fs::write(&auth, format!("Authorization: Bearer {token}\n")) {
        let m = format!("the simulator cannot lay out node {computer}: {e}");
        return finish(sim, set, n, Phase::Failed, m.clone(), Some(m));
    }
    let command = set
        .settings
        .get("commandToExecute")
        .and_then(Value::as_str)
        .unwrap_or("bash init.sh");
    let (secret, args) = parse_command(command);
    let ca = sim.ca_cert_path().display().to_string();
    let mut env: Vec<(String, String)> = vec![
        (
            "FLOTILLA_IMDS_URL".into(),
            format!("{base}/imds/{}_{n}", set.name),
        ),
        ("FLOTILLA_AUTHORITY_HOST".into(), base.into()),
        ("CURL_CA_BUNDLE".into(), ca.clone()),
        ("FLOTILLA_WAIT_SECONDS".into(), "1".into()),
        ("FLOTILLA_WAIT_TRIES".into(), "300".into()),
        ("FLOTILLA_STUB_NODE_NAME".into(), computer.into()),
        (
            "FLOTILLA_STUB_KUBE_API".into(),
            format!("{base}/kube/{host}"),
        ),
        (
            "FLOTILLA_STUB_KUBE_SERVER".into(),
            format!("{base}/kube/{host}"),
        ),
        ("FLOTILLA_STUB_KUBE_CA".into(), ca),
        ("FLOTILLA_STUB_KUBE_AUTH".into(), auth.display().to_string()),
        ("FLOTILLA_STUB_ADMIN_TOKEN".into(), token.into()),
    ];
    if let Some(s) = secret {
        env.push(("FLOTILLA_SP_SECRET".into(), s));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Held weakly while the script runs (see `tick`); a simulator gone by
    // its end has nothing left to record it in.
    let weak = Arc::downgrade(&owned.inner);
    drop(owned);
    let ran = harness.run(script, &args, &env).await;
    let Some(inner) = weak.upgrade() else { return };
    let sim = &Sim { inner };
    match ran {
        Ok(out) if out.code == Some(0) => {
            let m = format!(
                "Enable succeeded: \n[stdout]\n{}\n\n[stderr]\n{}\n",
                tail(&out.stdout, 20),
                tail(&out.stderr, 20)
            );
            finish(sim, set, n, Phase::Succeeded, m, None)
        }
        Ok(out) => {
            let m = format!(
                "Enable failed: failed to execute command: command terminated with exit status={}\n[stdout]\n{}\n\n[stderr]\n{}\n",
                out.code.unwrap_or(-1),
                tail(&out.stdout, 20),
                tail(&out.stderr, 20)
            );
            let short = out.last_line();
            finish(sim, set, n, Phase::Failed, m, Some(short))
        }
        Err(e) => {
            let m = format!("the simulator could not run the init script of {computer}: {e}");
            finish(sim, set, n, Phase::Failed, m.clone(), Some(m))
        }
    }
}

/// Registers the node without running anything; instance 0 of the masters
/// publishes the admin kubeconfig.
fn quick(sim: &Sim, set: &SetInfo, n: usize, computer: &str, job: &str, host: &str, token: &str) {
    let mut labels = BTreeMap::new();
    if set.role == "master" {
        labels.insert("flotilla.io/role".to_string(), "control-plane".to_string());
    } else {
        labels.insert("flotilla.io/role".to_string(), "worker".to_string());
        labels.insert("flotilla.io/pool".to_string(), set.role.clone());
    }
    let base = lock(&sim.inner.boot.served)
        .clone()
        .or_else(|| lock(&sim.inner.boot.seen).clone())
        .unwrap_or_else(|| "https://127.0.0.1".into());
    if set.role == "master" && n == 0 {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "admin",
            "clusters": [{"name": job, "cluster": {"server": format!("{base}/kube/{host}"),
                "certificate-authority-data": b64(&sim.ca_cert_pem())}}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "admin", "context": {"cluster": job, "user": "admin"}}],
        });
        // What the first master publishes (bootstrap.sh `publish`): a
        // bootstrap token, the CA hash, the certificate key, the kubeconfig.
        let hex = |n: usize| -> String {
            (0..n)
                .map(|_| char::from_digit(u32::from(rand::random::<u8>() & 0xf), 16).unwrap_or('0'))
                .collect()
        };
        let published = [
            ("join-token", format!("{}.{}", &hex(6), &hex(16))),
            ("ca-hash", format!("sha256:{}", hex(64))),
            ("cert-key", hex(64)),
            ("kubeconfig", b64(&kubeconfig.to_string())),
        ];
        for (what, value) in published {
            put_secret(sim, &base, &format!("{job}-{what}"), &value, job);
        }
    }
    kube::register(sim, host, computer, labels);
    finish(
        sim,
        set,
        n,
        Phase::Succeeded,
        "Enable succeeded".into(),
        None,
    );
}

/// Writes a Key Vault secret as the first master would (tagged with the job).
fn put_secret(sim: &Sim, vault: &str, name: &str, value: &str, job: &str) {
    let now = now_ms() / 1000;
    {
        let mut st = lock(&sim.inner.state);
        let s = st
            .secrets
            .get_or_insert_with(name.to_ascii_lowercase(), || Secret {
                name: name.to_string(),
                vault: vault.to_string(),
                versions: vec![],
                deleted: None,
            });
        if s.deleted.is_some() {
            return;
        }
        s.versions.push(SecretVersion {
            version: random_hex32(),
            value: value.to_string(),
            content_type: Some("text/plain".into()),
            enabled: true,
            created: now,
            updated: now,
            tags: [
                ("flotilla-job".to_string(), job.to_string()),
                ("managed-by".to_string(), "flotilla".to_string()),
            ]
            .into(),
        });
    }
    sim.persist_now();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Content;
    use crate::state::{Boot, Resource};

    #[test]
    fn a_script_s_endpoint_is_read_from_its_first_run_or_else_from_the_whole() {
        let leading = "#!/bin/bash\nFLOTILLA_JOB='j'\nAPI_ENDPOINT='j.example'\nrest\n";
        let read = read_script(Some(&Content::new(leading.as_bytes())));
        assert_eq!(read.endpoint.as_deref(), Some("j.example"));
        assert!(read.flotilla && read.joined.is_none());
        // Variables far past the first run: the same answer, from the whole.
        let mut late = String::from("#!/bin/bash\n");
        let mut i = 0u64;
        while late.len() < 400 * 1024 {
            late.push_str(&format!(
                "# filler line {i} {}\n",
                i.wrapping_mul(2654435761)
            ));
            i += 1;
        }
        late.push_str("API_ENDPOINT='late.example'\n");
        let content = Content::new(late.as_bytes());
        assert!(
            content.first_run().len() < late.len(),
            "one run: the test needs several"
        );
        let read = read_script(Some(&content));
        assert_eq!(read.endpoint.as_deref(), Some("late.example"));
        assert!(read.flotilla);
        assert_eq!(read.joined.as_deref(), Some(late.as_bytes()));
        // Not a flotilla script (the variable on its first line, or absent).
        for other in [
            "API_ENDPOINT='first.example'\nx\n",
            "#!/bin/sh\necho hi\n",
            "",
        ] {
            let read = read_script(Some(&Content::new(other.as_bytes())));
            assert!(!read.flotilla, "{other:?}");
        }
        let first = read_script(Some(&Content::new(b"API_ENDPOINT='first.example'\n")));
        assert_eq!(first.endpoint.as_deref(), Some("first.example"));
        assert!(read_script(None).endpoint.is_none());
    }

    #[test]
    fn complete_lines_stop_at_the_last_newline() {
        assert_eq!(complete_lines(b"a\nb\ncut"), "a\nb\n");
        assert_eq!(complete_lines(b"no newline"), "");
        assert_eq!(complete_lines(b"ok\n\xff\n"), "");
    }

    fn scale_set(name: &str, target: u32, ready_at_ms: i64) -> Resource {
        let id = format!("/subscriptions/s/resourceGroups/rg/providers/{VMSS_TYPE}/{name}");
        let mut r = Resource::settled(
            &id,
            VMSS_TYPE,
            serde_json::json!({"location": "westeurope"}),
        );
        r.boot = Some(Boot {
            target,
            ready_at_ms,
            ..Boot::default()
        });
        r
    }

    fn instances(sim: &Sim) -> BTreeMap<String, usize> {
        lock(&sim.inner.kube.data)
            .instances
            .iter()
            .map(|(k, l)| (k.rsplit('/').next().unwrap_or("").to_string(), l.len()))
            .collect()
    }

    #[tokio::test]
    async fn a_simulator_dropped_while_instances_wait_to_boot_leaves_no_directory() {
        let sim = Sim::new(crate::SimConfig::default()).unwrap();
        let certs = sim.ca_cert_path().parent().unwrap().to_path_buf();
        assert!(certs.exists());
        lock(&sim.inner.state)
            .resources
            .insert("a".into(), scale_set("a", 3, 0));
        // No turn ever comes: the instances' boots wait for good.
        let turns = Arc::new(tokio::sync::Semaphore::new(0));
        tick(&sim, &turns);
        assert_eq!(lock(&sim.inner.boot.tasks).len(), 3, "three boots wait");
        drop(sim);
        assert!(
            !certs.exists(),
            "the last handle's drop removes the temporary directory at once"
        );
    }

    #[tokio::test]
    async fn ticks_boot_what_changed_and_remove_what_went() {
        let sim = Sim::new(crate::SimConfig::default()).unwrap();
        let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let put = |r: Resource| {
            let key = r.id.to_ascii_lowercase();
            lock(&sim.inner.state).resources.insert(key.clone(), r);
            key
        };
        let a = put(scale_set("a", 2, 0));
        let later = put(scale_set("later", 1, now_ms() + 60_000));
        tick(&sim, &permits);
        let expect = |pairs: &[(&str, usize)]| {
            pairs
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            instances(&sim),
            expect(&[("a", 2)]),
            "`later` has not booted yet"
        );
        assert!(
            lock(&sim.inner.boot.pending).contains(&later),
            "and is looked at again"
        );
        assert!(
            !lock(&sim.inner.boot.pending).contains(&a),
            "`a` is settled"
        );

        // Its boot time comes; `a` scales in to one instance.
        lock(&sim.inner.state)
            .resources
            .edit(&later)
            .unwrap()
            .boot
            .as_mut()
            .unwrap()
            .ready_at_ms = 0;
        lock(&sim.inner.state)
            .resources
            .edit(&a)
            .unwrap()
            .boot
            .as_mut()
            .unwrap()
            .target = 1;
        tick(&sim, &permits);
        assert_eq!(instances(&sim), expect(&[("a", 1), ("later", 1)]));
        assert!(
            lock(&sim.inner.boot.removed).contains("a_1"),
            "the instance that left is known as removed"
        );

        // Deleted, `a`'s instances leave; `later`, untouched, keeps its own.
        lock(&sim.inner.state).resources.remove(&a);
        tick(&sim, &permits);
        assert_eq!(instances(&sim), expect(&[("later", 1)]));
        assert!(lock(&sim.inner.boot.pending).is_empty());
    }

    #[tokio::test]
    async fn a_changed_scale_set_wakes_the_agent_and_nothing_else_does() {
        // Polled once: a stored wake-up answers at once, none times out.
        let at_once = |w: Arc<tokio::sync::Notify>| async move {
            tokio::time::timeout(Duration::ZERO, w.notified())
                .await
                .is_ok()
        };
        let sim = Sim::new(crate::SimConfig::default()).unwrap();
        let woken = sim.inner.boot.woken.clone();
        let vnet = Resource::settled(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v",
            "Microsoft.Network/virtualNetworks",
            serde_json::json!({"location": "westeurope"}),
        );
        lock(&sim.inner.state)
            .resources
            .insert(vnet.id.to_ascii_lowercase(), vnet);
        sim.persist_now();
        assert!(
            !at_once(woken.clone()).await,
            "a network is nothing to boot"
        );
        let set = scale_set("a", 1, 0);
        lock(&sim.inner.state)
            .resources
            .insert(set.id.to_ascii_lowercase(), set);
        sim.persist_now();
        assert!(
            at_once(woken.clone()).await,
            "a scale set is looked at without waiting for the next tick"
        );
    }

    #[test]
    fn the_command_gives_the_secret_and_the_arguments() {
        assert_eq!(parse_command("bash init.sh"), (None, vec![]));
        assert_eq!(
            parse_command(r"FLOTILLA_SP_SECRET='a'\''b c' bash init-general.sh publish"),
            (Some("a'b c".to_string()), vec!["publish".to_string()])
        );
    }

    #[test]
    fn rendered_variables_are_read_back() {
        let s = "#!/usr/bin/env bash\nAPI_ENDPOINT='x.westeurope.cloudapp.azure.com'\n";
        assert_eq!(
            rendered(s, "API_ENDPOINT").as_deref(),
            Some("x.westeurope.cloudapp.azure.com")
        );
        assert_eq!(rendered(s, "NOPE"), None);
    }
}
