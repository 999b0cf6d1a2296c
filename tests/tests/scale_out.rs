//! Capacity and scale-out on the production adapters (Cosmos DB on
//! cosmosdb-server, Service Bus and ARM on the simulator, Blob on Azurite).
//!
//! `capacity_model_counts_one_job` runs jobs one at a time behind the stand-in
//! Functions host and counts what each costs: function executions, Service Bus
//! operations, Cosmos DB requests by kind, ARM and Key Vault requests, and the
//! saga document's size; once with long-running operations that finish at
//! once, once with 2 s ones, which gives what one poll costs. docs/scale.md is
//! built on these counts.
//!
//! `workers_share_the_load_exactly_once` runs 1, 2, then 4 `flotilla worker`
//! processes on the same subscriptions with a shared batch of jobs and checks
//! that every job finishes once with exactly the resources one job creates,
//! counting the ETag conflicts (412) the engine resolved and the throughput.
//! Submissions carry an `Idempotency-Key` and are retried on a 500, as a
//! client should: a retry finds the stored job and never starts a second one.
//!
//! Both print one `SCALE_REPORT {json}` line (run with `--nocapture`).

#[allow(dead_code)]
#[path = "../host/mod.rs"]
mod host;

use flotilla::emulators::FlotillaProcess;
use host::{flotilla_bin, settled, Handler, Pump, World};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(300);

/// cosmosdb-server with its one-line-per-request log (`METHOD URL -> STATUS`) kept.
struct LoggedCosmos {
    child: Child,
    endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LoggedCosmos {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LoggedCosmos {
    fn start() -> LoggedCosmos {
        let emulators = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/emulators");
        assert!(
            emulators
                .join("node_modules/@vercel/cosmosdb-server")
                .exists(),
            "run `npm ci --prefix scripts/emulators`"
        );
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let ok = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(ok.success());
        let log = dir.path().join("cosmos.log");
        let mut child = Command::new("node")
            .arg(emulators.join("cosmos.js"))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--port", "0", "--host", "127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("node runs cosmos.js");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(e) = line.strip_prefix("COSMOS_READY ") {
                    let _ = tx.send(e.trim().to_string());
                }
            }
        });
        let endpoint = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("cosmosdb-server ready");
        LoggedCosmos {
            child,
            endpoint,
            log,
            _dir: dir,
        }
    }

    /// Every request so far as (method, path, status).
    fn requests(&self) -> Vec<(String, String, u16)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (req, status) = l.rsplit_once(" -> ")?;
                let (method, url) = req.split_once(' ')?;
                let path = url.split('?').next().unwrap_or(url);
                Some((
                    method.to_string(),
                    path.to_string(),
                    status.trim().parse().ok()?,
                ))
            })
            .collect()
    }
}

/// Cosmos DB requests by kind: point reads, replaces, creates/queries, and the
/// answers that matter (412: an ETag conflict the engine then resolved).
fn cosmos_counts(requests: &[(String, String, u16)]) -> BTreeMap<&'static str, u64> {
    let mut c = BTreeMap::new();
    for (method, path, status) in requests {
        let on_doc = path.contains("/docs/");
        let kind = match (method.as_str(), on_doc) {
            ("GET", true) => "point_reads",
            ("PUT", true) => "replaces",
            ("DELETE", true) => "deletes",
            ("POST", false) if path.ends_with("/docs") || path.ends_with("/docs/") => {
                "creates_or_queries"
            }
            _ => "metadata",
        };
        *c.entry(kind).or_default() += 1;
        if *status == 412 {
            *c.entry("etag_conflicts_412").or_default() += 1;
        }
        if *status == 409 && kind != "metadata" {
            *c.entry("create_conflicts_409").or_default() += 1;
        }
        *c.entry("total").or_default() += 1;
    }
    c
}

/// Simulator requests by service and operation (ARM, Key Vault, Service Bus, tokens).
fn sim_counts(requests: &[flotilla_sim::RequestRecord]) -> BTreeMap<&'static str, u64> {
    let mut c = BTreeMap::new();
    for r in requests {
        let p = r.path.to_ascii_lowercase();
        let kind = if p.starts_with("/servicebus/") {
            let tail: Vec<&str> = p.trim_end_matches('/').rsplit('/').take(3).collect();
            match (r.method.as_str(), tail.as_slice()) {
                ("POST", ["messages", ..]) => "sb_sends",
                ("POST", ["head", ..]) | ("DELETE", ["head", ..]) if r.status == 204 => {
                    "sb_empty_receives"
                }
                ("POST", ["head", ..]) | ("DELETE", ["head", ..]) => "sb_receives",
                ("DELETE", _) => "sb_completes",
                ("PUT", _) => "sb_abandons",
                ("POST", ["$deadletter", ..]) => "sb_dead_letters",
                _ => "sb_other",
            }
        } else if p.starts_with("/subscriptions/") {
            match r.method.as_str() {
                "GET" => "arm_reads",
                "DELETE" => "arm_deletes",
                _ => "arm_writes",
            }
        } else if p.starts_with("/secrets/") || p.starts_with("/deletedsecrets/") {
            "keyvault"
        } else if p.starts_with("/blob/") {
            "sim_blob"
        } else if p.contains("token") {
            "tokens"
        } else {
            "other"
        };
        *c.entry(kind).or_default() += 1;
        if r.status == 429 {
            *c.entry("throttled_429").or_default() += 1;
        }
    }
    c
}

fn per_job(counts: &BTreeMap<&'static str, u64>, jobs: u64) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in counts {
        m.insert(
            k.to_string(),
            json!((*v as f64 / jobs as f64 * 10.0).round() / 10.0),
        );
    }
    Value::Object(m)
}

/// The example spec with an address space of its own: pre-flight refuses a
/// VNet that overlaps another job's in the same resource group.
fn spec() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut spec = flotilla_core::spec::ClusterSpec::example();
    spec.network = flotilla_core::spec::NetworkSpec::numbered(
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    );
    serde_json::to_string(&spec).unwrap()
}

async fn submit(h: &Handler) -> String {
    let spec = spec();
    let (code, body) = h.http("submit", "POST", json!({}), &spec).await;
    assert_eq!(code, 202, "{body}\nhandler log:\n{}", h.log());
    body["job"].as_str().unwrap().to_string()
}

/// Submits with an `Idempotency-Key`, retrying while the answer is 500 ("try
/// again"), as a client should. Returns the job and how many retries it took.
/// A retry must find the job the failed attempt stored, never start another.
async fn submit_with_retries(h: &Handler, key: &str) -> (String, u32) {
    let env = json!({
        "Data": {"req": {
            "Url": "https://app.example/api/clusters", "Method": "POST", "Query": {},
            "Headers": {"Content-Type": ["application/json"], "Idempotency-Key": [key]},
            "Params": {}, "Identities": [], "Body": spec(),
        }},
        "Metadata": {},
    });
    let mut job: Option<String> = None;
    for retry in 0..5u32 {
        let (status, reply) = h.invoke("submit", &env).await;
        assert_eq!(status, 200, "{reply}");
        let res = &reply["Outputs"]["res"];
        let code = res["StatusCode"]
            .as_str()
            .and_then(|c| c.parse::<u16>().ok())
            .or_else(|| res["StatusCode"].as_u64().map(|c| c as u16))
            .unwrap_or(0);
        let body: Value = serde_json::from_str(res["Body"].as_str().unwrap_or("null")).unwrap();
        match code {
            202 | 200 => {
                let id = body["job"].as_str().unwrap().to_string();
                // 202 = stored now; 200 = the key's job already existed.
                assert!(
                    code == 202 || retry > 0,
                    "first submission of {key} found a job: {body}"
                );
                if let Some(first) = &job {
                    assert_eq!(first, &id, "the same key gave two jobs");
                }
                return (id, retry);
            }
            500 => {
                job = job.or_else(|| body["job"].as_str().map(str::to_string));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => panic!("submit {key}: {code} {body}\n{}", h.log()),
        }
    }
    panic!("submit {key} kept failing\n{}", h.log());
}

/// The job's ARM resources: scale sets, network, by type (no duplicates possible
/// by name, so a count per type shows extra or missing ones).
fn resource_types(world: &World, job: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for id in world.tagged(job) {
        if let Some(i) = id.find("/providers/") {
            let rest: Vec<&str> = id[i + 11..].split('/').collect();
            if rest.len() >= 2 {
                *m.entry(format!("{}/{}", rest[0], rest[1])).or_default() += 1;
            }
        }
    }
    m
}

/// The job's saga as `status` returns it. A 500 ("try again": the store
/// failed this once) is retried, as a client would, and counted in `failures`.
async fn status(h: &Handler, job: &str, failures: &mut u32) -> Value {
    for _ in 0..10 {
        let (code, body) = h.http("status", "GET", json!({"id": job}), "").await;
        match code {
            200 => return body,
            500 => {
                *failures += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => panic!("status {job}: {code} {body}"),
        }
    }
    panic!("status {job} kept failing\n{}", h.log());
}

/// What `jobs` jobs, run one at a time through the stand-in host, cost.
struct Measured {
    jobs: u64,
    executions: u64,
    deliveries: u64,
    sim: BTreeMap<&'static str, u64>,
    cosmos: BTreeMap<&'static str, u64>,
    sizes: Vec<usize>,
    seconds: f64,
}

impl Measured {
    fn get(&self, key: &str) -> u64 {
        self.sim
            .get(key)
            .or_else(|| self.cosmos.get(key))
            .copied()
            .unwrap_or(0)
    }

    fn report(&self) -> Value {
        let sb = self
            .sim
            .iter()
            .filter(|(k, _)| k.starts_with("sb_"))
            .map(|(k, v)| (*k, *v))
            .collect();
        let other = self
            .sim
            .iter()
            .filter(|(k, _)| !k.starts_with("sb_"))
            .map(|(k, v)| (*k, *v))
            .collect();
        json!({
            "jobs": self.jobs,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "per_job": {
                "function_executions": self.executions as f64 / self.jobs as f64,
                "service_bus": per_job(&sb, self.jobs),
                "cosmos": per_job(&self.cosmos, self.jobs),
                "arm_and_keyvault": per_job(&other, self.jobs),
            },
            "saga_document_bytes": {"min": self.sizes.iter().min(), "max": self.sizes.iter().max()},
        })
    }
}

async fn measure(world: &World, jobs: u64) -> Measured {
    let cosmos = LoggedCosmos::start();
    let handler = Handler::start_with(world, &[("COSMOS_ENDPOINT", &cosmos.endpoint)]).await;
    let mut pump = Pump::new(world);

    let sim_before = world.sim.requests().len();
    let cosmos_before = cosmos.requests().len();
    let mut status_calls = 0u64;
    let mut status_failures = 0u32;
    let mut sizes = vec![];
    let mut ids = vec![];
    let started = Instant::now();
    for _ in 0..jobs {
        let job = submit(&handler).await;
        let deadline = Instant::now() + LIMIT;
        let mut idle = 0u32;
        let status = loop {
            if pump.round(&handler).await > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            // Look at the job now and then (each look is a Cosmos read, taken out below).
            if idle % 10 == 2 {
                let s = status(&handler, &job, &mut status_failures).await;
                status_calls += 1;
                if settled(&s) {
                    break s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "job {job} did not finish\n{}",
                handler.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status["status"], "Succeeded", "{status:#}");
        sizes.push(status.to_string().len());
        ids.push(job);
    }
    let seconds = started.elapsed().as_secs_f64();
    let sim_requests = world.sim.requests()[sim_before..].to_vec();
    let cosmos_requests = cosmos.requests()[cosmos_before..].to_vec();

    // What one `status` call costs, to take the test's own looking out.
    let (c0, s0) = (cosmos.requests().len(), world.sim.requests().len());
    for _ in 0..5 {
        status(&handler, &ids[0], &mut status_failures).await;
    }
    let status_cosmos = (cosmos.requests().len() - c0) as f64 / 5.0;
    assert_eq!(
        world.sim.requests().len(),
        s0,
        "status reads only the saga store"
    );
    let mut cosmos_c = cosmos_counts(&cosmos_requests);
    for key in ["point_reads", "total"] {
        let v = cosmos_c.entry(key).or_default();
        *v = v.saturating_sub((status_calls as f64 * status_cosmos).round() as u64);
    }
    let sim_c = sim_counts(&sim_requests);

    // Every message was delivered once and completed; nothing abandoned.
    let sends = sim_c.get("sb_sends").copied().unwrap_or(0);
    let receives = sim_c.get("sb_receives").copied().unwrap_or(0);
    let completes = sim_c.get("sb_completes").copied().unwrap_or(0);
    assert_eq!(receives, pump.received);
    assert_eq!(completes, receives, "{sim_c:?}");
    assert_eq!(sim_c.get("sb_abandons"), None, "{sim_c:?}");
    assert!(
        sends >= receives,
        "every delivery was sent first: {sim_c:?}"
    );
    // One handler, one message at a time: no ETag conflict to resolve.
    assert_eq!(cosmos_c.get("etag_conflicts_412"), None, "{cosmos_c:?}");
    let writes = cosmos_c.get("replaces").copied().unwrap_or(0)
        + cosmos_c.get("creates_or_queries").copied().unwrap_or(0);
    assert!(
        writes >= jobs * 7,
        "at least one saga write per step and the submission: {cosmos_c:?}"
    );
    // One replace per handled message (a step, or a wait) and one per job
    // removing its settled last event: sent events leave the document with
    // the next step's own write, not with one of their own.
    let replaces = cosmos_c.get("replaces").copied().unwrap_or(0);
    assert!(
        replaces <= receives + jobs,
        "{replaces} replaces for {receives} deliveries of {jobs} jobs: {cosmos_c:?}"
    );
    assert!(sim_c.get("arm_writes").copied().unwrap_or(0) >= jobs * 6);
    eprintln!(
        "measure: {status_calls} status calls at {status_cosmos} Cosmos requests each, {status_failures} answered 500"
    );
    Measured {
        jobs,
        executions: jobs + pump.delivered, // submit + one per delivered message
        deliveries: pump.delivered,
        sim: sim_c,
        cosmos: cosmos_c,
        sizes,
        seconds,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_model_counts_one_job() {
    // Long-running operations done at once: the flow itself.
    let instant = measure(&World::start().await, 3).await;
    // Long-running operations of 2 s: the same flow plus its polls.
    let slow = measure(&World::start_with_lro(Duration::from_secs(2)).await, 2).await;

    let polls =
        slow.deliveries as f64 / slow.jobs as f64 - instant.deliveries as f64 / instant.jobs as f64;
    assert!(polls >= 1.0, "long-running operations were polled: {polls}");
    // What one poll costs: the difference per job, divided by the polls per job.
    let per_poll = |key: &str| {
        let d =
            slow.get(key) as f64 / slow.jobs as f64 - instant.get(key) as f64 / instant.jobs as f64;
        (d / polls * 10.0).round() / 10.0
    };
    let report = json!({
        "test": "capacity_model_counts_one_job",
        "instant_lro": instant.report(),
        "lro_2s": slow.report(),
        "polls_per_job_at_2s": polls,
        "per_poll": {
            "sb_sends": per_poll("sb_sends"),
            "sb_receives": per_poll("sb_receives"),
            "sb_completes": per_poll("sb_completes"),
            "cosmos_point_reads": per_poll("point_reads"),
            "cosmos_replaces": per_poll("replaces"),
            "arm_reads": per_poll("arm_reads"),
            "arm_writes": per_poll("arm_writes"),
        },
    });
    eprintln!("SCALE_REPORT {report}");
}

/// A `flotilla worker` process on the world's settings and this Cosmos DB;
/// killed when dropped.
fn start_worker(world: &World, cosmos: &str, log: &Path) -> FlotillaProcess {
    let mut settings = world.app_settings();
    settings.set("COSMOS_ENDPOINT", cosmos);
    let mut worker = FlotillaProcess::new(&flotilla_bin(), &["worker"], settings, log, None);
    worker.spawn().expect("flotilla worker starts");
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_load_exactly_once() {
    const JOBS: usize = 16;
    let world = World::start().await;
    let cosmos = LoggedCosmos::start();
    // The HTTP side (submit, status) of the app; the workers do every step.
    let handler = Handler::start_with(&world, &[("COSMOS_ENDPOINT", &cosmos.endpoint)]).await;
    let mut rounds = vec![];
    let mut expected: Option<BTreeMap<String, usize>> = None;
    for processes in [1usize, 2, 4] {
        let log = world.dir.path().join(format!("workers-{processes}.log"));
        let workers: Vec<FlotillaProcess> = (0..processes)
            .map(|_| start_worker(&world, &cosmos.endpoint, &log))
            .collect();
        // Let every worker open its receivers before the load arrives.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cosmos_before = cosmos.requests().len();
        let sim_before = world.sim.requests().len();
        let started = Instant::now();
        let mut jobs = vec![];
        let mut submit_retries = 0;
        let mut status_failures = 0u32;
        for n in 0..JOBS {
            let (job, retries) =
                submit_with_retries(&handler, &format!("round-{processes}-job-{n}")).await;
            submit_retries += retries;
            jobs.push(job);
        }
        let deadline = Instant::now() + LIMIT;
        let mut pending = jobs.clone();
        let mut statuses = BTreeMap::new();
        while !pending.is_empty() {
            let mut still = vec![];
            for job in pending {
                let s = status(&handler, &job, &mut status_failures).await;
                if settled(&s) {
                    statuses.insert(job, s);
                } else {
                    still.push(job);
                }
            }
            pending = still;
            assert!(
                Instant::now() < deadline,
                "{} jobs did not finish with {processes} workers\n{}",
                pending.len(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        drop(workers);
        let distinct: std::collections::BTreeSet<&String> = jobs.iter().collect();
        assert_eq!(distinct.len(), JOBS, "one job per submission key");

        let cosmos_c = cosmos_counts(&cosmos.requests()[cosmos_before..]);
        let sim_c = sim_counts(&world.sim.requests()[sim_before..]);
        for (job, s) in &statuses {
            assert_eq!(s["status"], "Succeeded", "{job}: {s:#}");
            for step in s["steps"].as_array().unwrap() {
                assert_eq!(step["status"], "Succeeded", "{job}: {s:#}");
            }
            // Exactly the resources one job creates: no duplicate, none missing.
            let types = resource_types(&world, job);
            let want = expected.get_or_insert_with(|| types.clone());
            assert_eq!(&types, want, "{job} has other resources than the first job");
        }
        assert_eq!(sim_c.get("sb_dead_letters"), None, "{sim_c:?}");
        rounds.push(json!({
            "processes": processes,
            "jobs": JOBS,
            "seconds": (seconds * 10.0).round() / 10.0,
            "jobs_per_s": (JOBS as f64 / seconds * 100.0).round() / 100.0,
            "etag_conflicts_412": cosmos_c.get("etag_conflicts_412").copied().unwrap_or(0),
            "submit_retries_after_500": submit_retries,
            "status_retries_after_500": status_failures,
            "cosmos_requests": cosmos_c.get("total").copied().unwrap_or(0),
            "sb_receives": sim_c.get("sb_receives").copied().unwrap_or(0),
            "sb_abandons": sim_c.get("sb_abandons").copied().unwrap_or(0),
            "arm_writes": sim_c.get("arm_writes").copied().unwrap_or(0),
        }));
    }
    let want = expected.unwrap();
    assert!(
        want.get("Microsoft.Compute/virtualMachineScaleSets") == Some(&2),
        "{want:?}"
    );
    eprintln!(
        "SCALE_REPORT {}",
        json!({"test": "workers_share_the_load_exactly_once", "resources_per_job": want, "rounds": rounds})
    );
}
