//! End to end with the `flotilla` binary: orphans made on purpose — a run
//! killed with SIGKILL in the middle of `master` whose saga is then lost, a
//! compensated job whose undo "missed" a resource, resources planted in the
//! simulator with flotilla's tags outside any saga — are listed by `sweep`
//! and removed by `sweep --delete`, exactly them and nothing of a live job;
//! `delete` fails and names what is still tagged with the job; a vault with
//! purge protection keeps deleted secrets and `status` says until when.
//!
//! The simulator's state lives in the data dir, so the test opens it
//! in-process (while no flotilla runs) to plant resources and to look.

use flotilla_azure::blob::{Staging, StagingAuth};
use flotilla_azure::models::api;
use flotilla_azure::transport::RouterTransport;
use flotilla_azure::vault::Vault;
use flotilla_azure::{ArmClient, AzureConfig, Purge, ResourceId};
use flotilla_sim::{Sim, SimConfig};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod cli_common;
use cli_common::{flotilla, json_of};

/// The example spec's resource group, and the local world's staging container.
const RG: &str = "flotilla-demo";
const STAGING: &str = "flotillastaging";
const CONTAINER: &str = "staging";
const GHOST: &str = "ghost-000000";

fn run_json(dir: &Path, args: &[&str]) -> (i32, Value) {
    let out = flotilla(dir, args);
    (out.status.code().unwrap_or(-1), json_of(&out))
}

/// `up` of the example spec with the `n`-th small address space (pre-flight
/// refuses a VNet overlapping another one in the group, such as the
/// default spec's of the killed run).
fn up(dir: &Path, n: u32, extra: &[&str]) -> (i32, Value) {
    let mut spec = flotilla_core::spec::ClusterSpec::example();
    spec.network = flotilla_core::spec::NetworkSpec::numbered(n);
    let file = dir.join(format!("spec-{n}.json"));
    std::fs::write(&file, serde_json::to_string(&spec).unwrap()).unwrap();
    let file = file.to_string_lossy().into_owned();
    let mut args = vec![
        "up",
        "--output",
        "json",
        "--lro-seconds",
        "0.2",
        "--spec",
        &file,
    ];
    args.extend_from_slice(extra);
    run_json(dir, &args)
}

/// An id without scheme and host: the simulator's host differs between the
/// binary (a loopback port) and the in-process copy, the path does not.
fn path_of(id: &str) -> String {
    let p = match id.strip_prefix("https://") {
        Some(rest) => rest.find('/').map_or("", |i| &rest[i..]),
        None => id,
    };
    p.to_ascii_lowercase()
}

fn paths<'a>(ids: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    ids.into_iter().map(path_of).collect()
}

fn orphan_ids(report: &Value) -> BTreeSet<String> {
    paths(
        report["orphans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap()),
    )
}

fn tags(job: Option<&str>, managed: bool) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    if let Some(j) = job {
        t.insert("flotilla-job".to_string(), j.to_string());
    }
    if managed {
        t.insert("managed-by".to_string(), "flotilla".to_string());
    }
    t
}

/// The data dir's simulator, opened in-process, with clients on it.
struct Cloud {
    sim: Sim,
    config: AzureConfig,
    rt: tokio::runtime::Runtime,
}

impl Cloud {
    fn open(dir: &Path) -> Cloud {
        let sim = Sim::new(SimConfig {
            data_dir: Some(dir.join("sim")),
            lro: Duration::ZERO,
            throttle: None,
            ..SimConfig::default()
        })
        .expect("the data dir's simulator opens");
        let info = sim.info("https://sim.local");
        let config =
            flotilla::emulators::sim_client_config(&info, RouterTransport::new(sim.router()), None)
                .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Cloud { sim, config, rt }
    }

    fn nsg(&self, name: &str) -> ResourceId {
        ResourceId::new(
            &self.config.subscription_id,
            RG,
            "Microsoft.Network",
            "networkSecurityGroups",
            name,
        )
    }

    /// Creates an NSG the way someone outside flotilla would.
    fn plant_nsg(&self, name: &str, tags: &BTreeMap<String, String>) -> String {
        let id = self.nsg(name);
        let arm = ArmClient::for_environment_setup(&self.config).unwrap();
        self.rt.block_on(async {
            let body = json!({"location": "westeurope", "tags": tags, "properties": {}});
            let started = arm.put(&id, api::NETWORK, &body).await.expect("NSG PUT");
            if let Some(poll) = started.poll {
                arm.wait(&poll, Duration::from_secs(10)).await.unwrap();
            }
        });
        id.to_string()
    }

    fn vault(&self) -> Vault {
        Vault::new(&self.config).unwrap()
    }

    fn plant_secret(&self, name: &str, tags: &BTreeMap<String, String>) -> String {
        let vault = self.vault();
        self.rt
            .block_on(vault.set(name, "planted", tags))
            .expect("secret set")
    }

    fn plant_blob(&self, name: &str, metadata: &BTreeMap<String, String>) -> String {
        let endpoint = format!(
            "{}/{STAGING}",
            self.sim.info("https://sim.local").blob_endpoint
        );
        let staging = Staging::new(&self.config, &endpoint, CONTAINER, StagingAuth::Token).unwrap();
        self.rt
            .block_on(staging.put(name, b"planted".to_vec(), "text/plain", metadata))
            .expect("blob put")
    }

    /// Ids (as paths) of everything carrying `flotilla-job = job`.
    fn tagged(&self, job: &str) -> BTreeSet<String> {
        let items = self.sim.inventory(Some(("flotilla-job", job)));
        paths(items.iter().map(|i| i.id.as_str()))
    }

    fn all(&self) -> BTreeSet<String> {
        let items = self.sim.inventory(None);
        paths(items.iter().map(|i| i.id.as_str()))
    }
}

/// Starts `up`, waits until `master` runs, then kills it with SIGKILL.
fn up_killed_during_master(dir: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["up", "--lro-seconds", "2", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut saw_master = false;
    for line in BufReader::new(stderr).lines() {
        if line.unwrap().contains("step master Running") {
            saw_master = true;
            break;
        }
        assert!(Instant::now() < deadline, "master never started");
    }
    assert!(saw_master, "progress never showed master running");
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sweep_removes_exactly_the_orphans_and_delete_names_what_is_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // 1. A run killed mid-create, whose saga store is then lost (as if
    //    restored from an older backup): its resources belong to nobody.
    up_killed_during_master(dir);
    let lost = {
        let cloud = Cloud::open(dir);
        let jobs: BTreeSet<String> = cloud
            .sim
            .inventory(None)
            .iter()
            .filter_map(|i| i.tags.get("flotilla-job").cloned())
            .collect();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        let job = jobs.into_iter().next().unwrap();
        let ids = cloud.tagged(&job);
        assert!(ids.len() >= 6, "stage, prereqs and keys ran: {ids:#?}");
        job
    };
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("flotilla.db"))
        {
            std::fs::remove_file(path).unwrap();
        }
    }

    // 2. A live job and a compensated one on the new store.
    let (code, out) = up(dir, 1, &[]);
    assert_eq!(code, 0, "{out:#}");
    let live = out["job"].as_str().unwrap().to_string();
    let (code, out) = up(dir, 2, &["--fail-at", "workers"]);
    assert_eq!(code, 1, "{out:#}");
    assert_eq!(out["status"], "Compensated", "{out:#}");
    let compensated = out["job"].as_str().unwrap().to_string();

    // 3. Planted: orphans outside any saga, a resource the compensation
    //    "missed", and things that are not orphans.
    let (expected, untouched, live_extra) = {
        let c = Cloud::open(dir);
        // Read now, not at the kill: the lost job's master scale set finished
        // creating in the simulator afterwards, and its booted nodes published
        // the join secrets and the kubeconfig, tagged with that job.
        let mut expected = c.tagged(&lost);
        expected.insert(path_of(&c.plant_nsg("ghost-nsg", &tags(Some(GHOST), true))));
        expected.insert(path_of(&c.plant_nsg("no-job", &tags(None, true))));
        expected.insert(path_of(&c.plant_nsg(
            &format!("{compensated}-missed"),
            &tags(Some(&compensated), true),
        )));
        expected.insert(path_of(&c.plant_secret(
            &format!("{GHOST}-storage-key"),
            &tags(Some(GHOST), true),
        )));
        let meta: BTreeMap<String, String> = [("flotilla_job", GHOST), ("managed_by", "flotilla")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        expected.insert(path_of(&c.plant_blob(&format!("{GHOST}/init.sh"), &meta)));
        c.plant_nsg("someone-elses", &tags(Some(GHOST), false));
        let live_extra =
            path_of(&c.plant_nsg(&format!("{live}-autoscaled"), &tags(Some(&live), true)));
        let untouched: BTreeSet<String> = c.all().difference(&expected).cloned().collect();
        assert!(untouched.contains(&live_extra));
        assert!(
            c.tagged(&live).len() >= 8,
            "the live cluster and its extra NSG"
        );
        (expected, untouched, live_extra)
    };

    // 4. `sweep` lists exactly the orphans, with why; younger ones are held back.
    let (code, report) = run_json(dir, &["sweep", "--output", "json", "--lro-seconds", "0.2"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(orphan_ids(&report), expected, "{report:#}");
    assert_eq!(report["resourceGroups"], json!([RG]));
    for o in report["orphans"].as_array().unwrap() {
        let why = o["why"].as_str().unwrap();
        let want = match o["job"].as_str() {
            None => "no flotilla-job tag",
            Some(j) if j == compensated => "ended Compensated",
            Some(_) => "unknown to the saga store",
        };
        assert!(why.contains(want), "{o:#}");
        assert!(o["ageSeconds"].as_u64().is_some(), "{o:#}");
    }
    let (_, young) = run_json(
        dir,
        &[
            "sweep",
            "--older-than",
            "1h",
            "--output",
            "json",
            "--lro-seconds",
            "0.2",
        ],
    );
    assert_eq!(young["orphans"], json!([]), "{young:#}");
    assert_eq!(young["younger"].as_u64(), Some(expected.len() as u64));
    let text = flotilla(dir, &["sweep", "--lro-seconds", "0.2"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("`flotilla sweep --delete` removes them"),
        "{text}"
    );
    assert!(text.contains(GHOST), "{text}");

    // 5. `sweep --delete` removes exactly them; the live job is untouched.
    let (code, report) = run_json(
        dir,
        &[
            "sweep",
            "--delete",
            "--output",
            "json",
            "--lro-seconds",
            "0.2",
        ],
    );
    assert_eq!(code, 0, "{report:#}");
    let removal = &report["removal"];
    assert_eq!(removal["notRemoved"], json!([]), "{report:#}");
    let removed = paths(
        removal["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap()),
    );
    assert_eq!(removed, expected);
    {
        let c = Cloud::open(dir);
        assert_eq!(c.all(), untouched, "exactly the orphans are gone");
        let purge =
            c.rt.block_on(c.vault().purge(&format!("{GHOST}-storage-key")))
                .unwrap();
        assert_eq!(purge, Purge::Gone, "the deleted secret was purged too");
    }
    let (_, status) = run_json(dir, &["status", &live, "--output", "json"]);
    assert_eq!(status["status"], "Succeeded");
    let (code, again) = run_json(dir, &["sweep", "--output", "json", "--lro-seconds", "0.2"]);
    assert_eq!((code, &again["orphans"]), (0, &json!([])), "{again:#}");

    // 6. `delete` undoes the live job, then finds the NSG it never recorded:
    //    it exits non-zero, the job is Failed and names it.
    let (code, out) = run_json(
        dir,
        &["delete", &live, "--output", "json", "--lro-seconds", "0.2"],
    );
    assert_eq!(code, 1, "{out:#}");
    assert_eq!(out["status"], "Failed");
    assert_eq!(out["error"]["code"], "LeftoversFound");
    let (_, status) = run_json(dir, &["status", &live, "--output", "json"]);
    let leftovers = paths(
        status["leftovers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap()),
    );
    assert_eq!(leftovers, BTreeSet::from([live_extra.clone()]));
    let text = flotilla(dir, &["status", &live]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("left over"));

    // 7. What a delete left over is an orphan; once swept, a delete ends Deleted.
    let (_, report) = run_json(dir, &["sweep", "--output", "json", "--lro-seconds", "0.2"]);
    assert_eq!(orphan_ids(&report), BTreeSet::from([live_extra]));
    let (code, report) = run_json(
        dir,
        &[
            "sweep",
            "--delete",
            "--output",
            "json",
            "--lro-seconds",
            "0.2",
        ],
    );
    assert_eq!(code, 0, "{report:#}");
    let (code, out) = run_json(
        dir,
        &["delete", &live, "--output", "json", "--lro-seconds", "0.2"],
    );
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["status"], "Deleted");
}

#[test]
fn a_vault_with_purge_protection_keeps_deleted_secrets_and_status_says_until_when() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let c = Cloud::open(dir);
        c.sim.set_purge_protection(true);
    }
    let (code, out) = up(dir, 3, &[]);
    assert_eq!(code, 0, "{out:#}");
    let job = out["job"].as_str().unwrap().to_string();
    let (code, out) = run_json(
        dir,
        &["delete", &job, "--output", "json", "--lro-seconds", "0.2"],
    );
    assert_eq!(code, 0, "kept secrets are not leftovers: {out:#}");
    assert_eq!(out["status"], "Deleted");
    let (_, status) = run_json(dir, &["status", &job, "--output", "json"]);
    let kept = status["softDeleted"].as_array().unwrap();
    assert!(
        kept.iter().any(|s| s["id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/secrets/{job}-outputs"))),
        "{status:#}"
    );
    for s in kept {
        let until = time::OffsetDateTime::parse(
            s["until"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(until > time::OffsetDateTime::now_utc() + time::Duration::days(89));
    }
    let text = flotilla(dir, &["status", &job]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("soft-deleted"), "{text}");
    assert!(text.contains("recoverable until"), "{text}");
    // And the vault really keeps it.
    let c = Cloud::open(dir);
    let purge =
        c.rt.block_on(c.vault().purge(&format!("{job}-outputs")))
            .unwrap();
    assert!(
        matches!(purge, Purge::Retained { until: Some(_) }),
        "{purge:?}"
    );
}
