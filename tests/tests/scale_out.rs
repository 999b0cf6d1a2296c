//! Capacity and scale-out on the production adapters (Cosmos DB on
//! cosmosdb-server, Service Bus and ARM on the simulator, Blob on Azurite).
//!
//! `capacity_model_counts_one_job` runs jobs one at a time behind the stand-in
//! Functions host and counts what each costs: function executions, Service Bus
//! operations, Cosmos DB requests by kind, ARM and Key Vault requests, and the
//! saga document's size. docs/scale.md is built on these counts.
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

async fn submit(h: &Handler) -> String {
    let spec = flotilla_core::spec::EXAMPLE_SPEC;
    let (code, body) = h.http("submit", "POST", json!({}), spec).await;
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
            "Params": {}, "Identities": [], "Body": flotilla_core::spec::EXAMPLE_SPEC,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_model_counts_one_job() {
    const JOBS: u64 = 3;
    let world = World::start().await;
    let cosmos = LoggedCosmos::start();
    let handler = Handler::start_with(&world, &[("COSMOS_ENDPOINT", &cosmos.endpoint)]).await;
    let mut pump = Pump::new(&world);

    let sim_before = world.sim.requests().len();
    let cosmos_before = cosmos.requests().len();
    let mut status_calls = 0u64;
    let mut sizes = vec![];
    let mut jobs = vec![];
    let started = Instant::now();
    for _ in 0..JOBS {
        let job = submit(&handler).await;
        let deadline = Instant::now() + LIMIT;
        let mut idle = 0;
        let status = loop {
            if pump.round(&handler).await > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle >= 2 {
                let s = handler.status(&job).await;
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
        jobs.push(job);
    }
    let seconds = started.elapsed().as_secs_f64();
    let sim_requests = world.sim.requests()[sim_before..].to_vec();
    let cosmos_requests = cosmos.requests()[cosmos_before..].to_vec();

    // What one `status` call costs, to take the test's own polling out.
    let (c0, s0) = (cosmos.requests().len(), world.sim.requests().len());
    handler.status(&jobs[0]).await;
    let status_cosmos = (cosmos.requests().len() - c0) as u64;
    let status_sim = (world.sim.requests().len() - s0) as u64;

    let mut cosmos_c = cosmos_counts(&cosmos_requests);
    *cosmos_c.get_mut("point_reads").unwrap() -= status_calls * status_cosmos;
    *cosmos_c.get_mut("total").unwrap() -= status_calls * status_cosmos;
    let sim_c = sim_counts(&sim_requests);
    assert_eq!(status_sim, 0, "status reads only the saga store");

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
        writes >= JOBS * 7,
        "at least one saga write per step and the submission: {cosmos_c:?}"
    );
    assert!(sim_c.get("arm_writes").copied().unwrap_or(0) >= JOBS * 6);

    let executions = JOBS + pump.delivered; // submit + one per delivered message
    let report = json!({
        "test": "capacity_model_counts_one_job",
        "jobs": JOBS,
        "seconds": (seconds * 10.0).round() / 10.0,
        "per_job": {
            "function_executions": executions as f64 / JOBS as f64,
            "service_bus": per_job(&sim_c.iter().filter(|(k, _)| k.starts_with("sb_")).map(|(k, v)| (*k, *v)).collect(), JOBS),
            "cosmos": per_job(&cosmos_c, JOBS),
            "arm_and_keyvault": per_job(&sim_c.iter().filter(|(k, _)| !k.starts_with("sb_")).map(|(k, v)| (*k, *v)).collect(), JOBS),
        },
        "saga_document_bytes": {"min": sizes.iter().min(), "max": sizes.iter().max()},
        "status_call_cosmos_requests": status_cosmos,
    });
    eprintln!("SCALE_REPORT {report}");
}

/// A `flotilla worker` process, killed when dropped.
struct Worker(Child);
impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(world: &World, cosmos: &str, log: &Path) -> Worker {
    let mut settings = world.app_settings(0);
    settings.retain(|(k, _)| k != "COSMOS_ENDPOINT" && k != "FUNCTIONS_CUSTOMHANDLER_PORT");
    settings.push(("COSMOS_ENDPOINT".into(), cosmos.into()));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(flotilla_bin())
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(settings)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Worker(child)
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
        let workers: Vec<Worker> = (0..processes)
            .map(|_| start_worker(&world, &cosmos.endpoint, &log))
            .collect();
        // Let every worker open its receivers before the load arrives.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cosmos_before = cosmos.requests().len();
        let sim_before = world.sim.requests().len();
        let started = Instant::now();
        let mut jobs = vec![];
        let mut submit_retries = 0;
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
                let s = handler.status(&job).await;
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
