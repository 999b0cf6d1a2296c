//! End-to-end tests of the `flotilla` binary on the embedded backends and the
//! built-in simulator: the happy path, a failure at every step, duplicate
//! delivery, a crash in the middle of `master`, bad specs, delete and scale.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod cli_common;
use cli_common::{entries, flotilla, json_of, stop_with_sigterm};

const STEPS: [&str; 6] = ["stage", "prereqs", "keys", "master", "workers", "join"];

/// The profile the binary under test was built with: this test's own.
const BUILD: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

fn up(dir: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["up", "--output", "json", "--lro-seconds", "0.2"];
    args.extend_from_slice(extra);
    let out = flotilla(dir, &args);
    (out.status.code().unwrap_or(-1), json_of(&out))
}

/// `flotilla bench ARGS --output json`, which must exit 0; its report.
fn bench(args: &[&str]) -> Value {
    bench_with_stderr(args).0
}

/// `flotilla bench ARGS --output json`, which must succeed: its report and
/// what it said on stderr.
fn bench_with_stderr(args: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("bench")
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (json_of(&out), stderr)
}

/// The built-in example spec, as `flotilla spec` prints it.
fn example_spec() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("spec")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

fn count_type(resources: &Value, ty: &str) -> usize {
    resources
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.as_str().unwrap().contains(&format!("/{ty}/")))
        .count()
}

#[test]
fn up_provisions_every_step_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = up(dir.path(), &[]);
    assert_eq!(code, 0, "{out:#}");
    assert_eq!(out["status"], "Succeeded");
    let steps: Vec<_> = out["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        STEPS.iter().map(|s| (*s, "Succeeded")).collect::<Vec<_>>()
    );
    let r = &out["resources"];
    assert_eq!(count_type(r, "virtualNetworks"), 1, "{r:#}");
    assert_eq!(count_type(r, "networkSecurityGroups"), 2);
    assert_eq!(count_type(r, "publicIPAddresses"), 1);
    assert_eq!(count_type(r, "loadBalancers"), 1);
    assert_eq!(
        count_type(r, "userAssignedIdentities"),
        1,
        "the job's node identity: {r:#}"
    );
    assert_eq!(
        count_type(r, "virtualMachineScaleSets"),
        2,
        "master + one worker pool"
    );
    assert!(r
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x.as_str().unwrap().ends_with("-master")));
    assert!(out["leftovers"].as_array().unwrap().is_empty());
    // The job's outputs secret, by id.
    let job = out["job"].as_str().unwrap();
    assert!(
        out["outputs"]
            .as_str()
            .is_some_and(|id| id.ends_with(&format!("/secrets/{job}-outputs"))),
        "{out:#}"
    );
}

#[test]
fn a_failure_at_any_step_compensates_everything_before_it() {
    for (i, step) in STEPS.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let (code, out) = up(dir.path(), &["--fail-at", step]);
        assert_eq!(code, 1, "--fail-at {step}: {out:#}");
        assert_eq!(out["status"], "Compensated", "--fail-at {step}: {out:#}");
        let steps = out["steps"].as_array().unwrap();
        for (j, s) in steps.iter().enumerate() {
            let want = match j.cmp(&i) {
                std::cmp::Ordering::Less => "Compensated",
                std::cmp::Ordering::Equal => "Failed",
                std::cmp::Ordering::Greater => "Pending",
            };
            assert_eq!(
                s["status"], want,
                "--fail-at {step}: step {} in {out:#}",
                s["name"]
            );
        }
        assert!(
            out["leftovers"].as_array().unwrap().is_empty(),
            "--fail-at {step}: {out:#}"
        );
        assert!(out["error"]["code"].is_string());
    }
}

#[test]
fn every_event_delivered_twice_gives_the_same_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = up(dir.path(), &["--deliver-twice"]);
    assert_eq!(code, 0, "{out:#}");
    let r = &out["resources"];
    assert_eq!(r.as_array().unwrap().len(), 8, "{r:#}");
    assert_eq!(
        count_type(r, "userAssignedIdentities"),
        1,
        "one node identity"
    );
    assert_eq!(count_type(r, "virtualMachineScaleSets"), 2);
    assert!(out["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "Succeeded"));
}

/// Logs that go to a pipe (a file, the Functions host's capture) are plain
/// text: no terminal colour codes around the level or the fields.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args([
            "up",
            "--output",
            "json",
            "--lro-seconds",
            "0.2",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(" INFO "), "no log lines to look at: {err}");
    assert!(!err.contains('\u{1b}'), "colour codes in piped logs: {err}");
}

#[test]
fn a_bad_spec_exits_2_names_the_field_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spec = dir.path().join("spec.json");
    let cases = [
        (r#""size": 3"#, r#""size": 2"#, "master.size"),
        (r#""min": 2"#, r#""min": 20"#, "workerPools[0].min"),
        (r#""name": "demo""#, r#""name": "Demo_Cluster""#, "name"),
    ];
    let example = example_spec();
    for (from, to, field) in cases {
        assert!(example.contains(from));
        std::fs::write(&spec, example.replacen(from, to, 1)).unwrap();
        let out = flotilla(&data, &["up", "--spec", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "error should name {field}: {err}");
        assert!(!data.exists(), "nothing may be created for a bad spec");
    }
    let out = flotilla(&data, &["up", "--fail-at", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Specs Azure would refuse (type errors, Azure's limits) exit 2 before
/// anything is created, naming the field.
#[test]
fn a_spec_azure_would_refuse_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spec = dir.path().join("spec.json");
    let example: Value = serde_json::from_str(&example_spec()).unwrap();
    let tags: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("t{i}"), Value::from("v")))
        .collect();
    let cases: Vec<(&str, &str, Value)> = vec![
        ("name", "invalid type", serde_json::json!(123)),
        ("location", "region", Value::from("x".repeat(100_000))),
        ("tags", "at most 13", Value::Object(tags)),
        (
            "sshPublicKey",
            "RSA key is 1024 bits; Azure needs at least 2048",
            Value::from("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCk3U7db2yHBt0n1j+10fEi6+WWvB0whz+ZkKqqc8xlbG4C8t7x3XNFLmEHSKpyKaV4V+4NK5jiN/pHVdyVcAHYU+8ekYMu4iPSn6j9dLANHAyIq7+8Jn7zYPWlVZr4ebxMl+mXK4yGg/EtgwV3DaYugLJ0V1yziGxBr10U/oxLuQ== rsa1024"),
        ),
        ("adminUsername", "reserved", Value::from("root")),
    ];
    for (field, says, value) in cases {
        let mut bad = example.clone();
        bad[field] = value;
        std::fs::write(&spec, bad.to_string()).unwrap();
        let out = flotilla(&data, &["up", "--spec", spec.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}: {err}");
        assert!(
            err.contains(&format!("{field}: ")),
            "error should name {field}: {err}"
        );
        assert!(err.contains(says), "{field}: {err}");
        assert!(
            err.len() < 2000,
            "the error echoes the input: {} bytes",
            err.len()
        );
        assert!(!data.exists(), "nothing may be created for a bad spec");
    }
}

#[test]
fn a_run_killed_during_master_resumes_to_one_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["up", "--output", "json", "--lro-seconds", "2", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut saw_master = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if line.contains("step master Running") {
            saw_master = true;
            break;
        }
        assert!(Instant::now() < deadline, "master never started");
    }
    assert!(saw_master, "progress never showed master running");
    // Give the scale set PUT a moment to reach the simulator, then SIGKILL.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();

    let out = flotilla(
        dir.path(),
        &["resume", "--output", "json", "--lro-seconds", "0.5"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = json_of(&out);
    assert_eq!(out["status"], "Succeeded", "{out:#}");
    let r = &out["resources"];
    let vmss: Vec<_> = r
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x.as_str().unwrap().contains("/virtualMachineScaleSets/"))
        .collect();
    assert_eq!(
        vmss.len(),
        2,
        "exactly one master and one pool scale set: {r:#}"
    );
}

#[test]
fn delete_scale_status_and_list_on_a_finished_job() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = up(dir.path(), &[]);
    assert_eq!(code, 0);
    let job = out["job"].as_str().unwrap().to_string();

    let out = flotilla(
        dir.path(),
        &[
            "scale",
            &job,
            "--pool",
            "general",
            "--count",
            "11",
            "--lro-seconds",
            "0.2",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "out of range must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("2..=10"));
    let out = flotilla(
        dir.path(),
        &[
            "scale",
            &job,
            "--pool",
            "general",
            "--count",
            "3",
            "--lro-seconds",
            "0.2",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = json_of(&flotilla(dir.path(), &["status", &job, "--output", "json"]));
    assert_eq!(status["pools"]["general"], 3);

    let list = json_of(&flotilla(dir.path(), &["list", "--output", "json"]));
    assert_eq!(list[0]["job"], job.as_str());

    let out = flotilla(
        dir.path(),
        &["delete", &job, "--output", "json", "--lro-seconds", "0.2"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = json_of(&out);
    assert_eq!(out["status"], "Deleted");
    assert!(out["resources"].as_array().unwrap().is_empty(), "{out:#}");
    let again = flotilla(dir.path(), &["delete", &job, "--lro-seconds", "0.2"]);
    assert_eq!(again.status.code(), Some(1), "a second delete conflicts");
    let missing = flotilla(dir.path(), &["status", "nope-000000"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn bench_runs_jobs_to_success_and_reports_its_figures() {
    let (report, stderr) = bench_with_stderr(&["--jobs", "20"]);
    assert_eq!(report["jobs"], 20);
    // A debug build says that its figures are not a release build's.
    assert_eq!(report["build"], BUILD);
    assert_eq!(
        stderr.contains("warning: this flotilla is a debug build"),
        BUILD == "debug",
        "{stderr}"
    );
    assert_eq!(report["succeeded"], 20);
    for k in [
        "sagas_per_s",
        "step_overhead_ms_p50",
        "step_overhead_ms_p99",
        "arm_requests_per_job",
        "store_writes_per_job",
        "peak_rss_mb",
        "cpu_ms_per_job",
    ] {
        assert!(report[k].as_f64().unwrap() > 0.0, "{k} in {report}");
    }
    // A job's writes: its creation, one per step (the write that ends it),
    // and one per re-check it waited for; nothing else.
    let writes = report["store_writes_per_job"].as_f64().unwrap();
    let waits = report["waits_per_job"].as_f64().unwrap();
    assert!((writes - waits - 7.0).abs() < 0.15, "{report}");
    // A job's messages: its request, the five steps' successes that start
    // the next step, and one per re-check; the notifications nobody takes
    // (the last step's success, `job.succeeded`) stay off the bus.
    let messages = report["bus_messages_per_job"].as_f64().unwrap();
    assert!((messages - waits - 6.0).abs() < 0.15, "{report}");
    let per_step = report["store_writes_per_step"].as_f64().unwrap();
    // Both figures are rounded (writes per job to 0.1, per step to 0.01).
    assert!((per_step - (writes - 1.0) / 6.0).abs() < 0.02, "{report}");
    // Each step's handler timed on its own: every job's event for it, at least.
    let handlers = report["handler_ms"].as_object().expect("handler_ms");
    const STEPS: [&str; 6] = ["stage", "prereqs", "keys", "master", "workers", "join"];
    for step in STEPS {
        let h = &handlers[step];
        assert!(h["events"].as_u64().unwrap() >= 20, "{step} in {report}");
        let (p50, p99) = (h["p50"].as_f64().unwrap(), h["p99"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99, "{step} in {report}");
    }
    // Nothing else ran: the submit's event starts `stage`, and a wait's
    // re-check is a `poll`; no compensation, no notification on the bus.
    for handler in handlers.keys() {
        assert!(
            STEPS.contains(&handler.as_str()) || handler == "poll",
            "{handler} in {report}"
        );
    }
    // The busy cores are CPU time over wall time: some, and no more than
    // the machine has (a little slack for the clocks' resolution).
    let busy = report["cpu_cores_busy"].as_f64().unwrap();
    let cores = report["cores"].as_f64().unwrap();
    assert!(
        cores >= 1.0 && busy > 0.0 && busy <= cores + 0.1,
        "{report}"
    );
    // A sweep after the run reads none of its documents: every job settled.
    assert_eq!(report["sweep_settled_scanned"], 0, "{report}");
    assert!(
        report["sweep_settled_ms"].as_f64().unwrap() >= 0.0,
        "{report}"
    );
    // Every saga write is one of the committed writes, and a commit holds
    // at least one write.
    let commits = report["commits_per_job"].as_f64().unwrap();
    let per_commit = report["writes_per_commit"].as_f64().unwrap();
    assert!(per_commit >= 1.0, "{report}");
    assert!(commits * per_commit >= writes - 0.3, "{report}");
}

#[test]
fn bench_with_the_simulator_apart_reports_both_processes() {
    let report = bench(&["--jobs", "20", "--simulator", "apart"]);
    assert_eq!(report["succeeded"], 20, "{report}");
    // The same calls reach the simulator over loopback as in process.
    let arm = report["arm_requests_per_job"].as_f64().unwrap();
    assert!((25.0..40.0).contains(&arm), "{report}");
    for k in [
        "peak_rss_mb",
        "simulator_peak_rss_mb",
        "cpu_ms_per_job",
        "simulator_cpu_ms_per_job",
    ] {
        assert!(report[k].as_f64().unwrap() > 0.0, "{k} in {report}");
    }
    // In process, the report has no simulator figure of its own.
    let together = bench(&["--jobs", "1"]);
    assert!(
        together.get("simulator_peak_rss_mb").is_none(),
        "{together}"
    );
    assert_eq!(report["simulator"], "apart");
    assert_eq!(together["simulator"], "in-process");
}

#[test]
fn bench_without_a_simulator_runs_the_engine_on_the_fake_cloud() {
    let report = bench(&["--jobs", "20", "--simulator", "none"]);
    assert_eq!(report["simulator"], "none", "{report}");
    assert_eq!(report["succeeded"], 20, "{report}");
    // Every resource created once, counted by the fake cloud itself.
    assert_eq!(report["max_creates_per_resource"], 1, "{report}");
    // The calls are every plane's, named as such; no ARM request was sent.
    assert!(report.get("arm_requests_per_job").is_none(), "{report}");
    let calls = report["azure_calls_per_job"].as_f64().unwrap();
    assert!(calls >= 25.0, "{report}");
    // The engine's durable work is what it is with the simulator: the
    // job's creation and one write per step, and six messages (each plus
    // the re-checks it waited for).
    let waits = report["waits_per_job"].as_f64().unwrap();
    let writes = report["store_writes_per_job"].as_f64().unwrap();
    assert!((writes - waits - 7.0).abs() < 0.15, "{report}");
    let messages = report["bus_messages_per_job"].as_f64().unwrap();
    assert!((messages - waits - 6.0).abs() < 0.15, "{report}");
}

#[test]
fn bench_in_memory_keeps_its_database_off_disk_and_says_so() {
    // By default the database is a file, as under `up` and `serve`.
    let on_disk = bench(&["--jobs", "2", "--simulator", "none"]);
    assert_eq!(on_disk["store"], "file", "{on_disk}");
    // In memory: the same jobs, the same writes, committed as before.
    for simulator in ["none", "in-process"] {
        let report = bench(&[
            "--jobs",
            "10",
            "--simulator",
            simulator,
            "--store",
            "memory",
        ]);
        assert_eq!(report["store"], "memory", "{report}");
        assert_eq!(report["simulator"], simulator, "{report}");
        assert_eq!(report["succeeded"], 10, "{report}");
        // The job's creation and one write a step, each re-check one more.
        let writes = report["store_writes_per_job"].as_f64().unwrap();
        let waits = report["waits_per_job"].as_f64().unwrap();
        assert!((writes - waits - 7.0).abs() < 0.15, "{report}");
        assert!(
            report["commits_per_job"].as_f64().unwrap() >= 6.0,
            "{report}"
        );
    }
    // `--cold-start` times `serve` and `up`, whose stores are files: it takes no `--store`.
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["bench", "--cold-start", "--store", "memory"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--store"));
}

#[test]
fn bench_text_report_lines_its_figures_up() {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["bench", "--jobs", "2", "--simulator", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // One line per figure, a handler's figures on a line of their own, and
    // every value starting in one column, the longest label's included.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("max_creates_per_resource ")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("handler_ms.stage ")),
        "{text}"
    );
    let column = |l: &str| {
        l.find("  ")
            .map(|i| i + l[i..].len() - l[i..].trim_start().len())
    };
    let first = column(lines[0]);
    assert!(first.is_some(), "{text}");
    assert!(lines.iter().all(|l| column(l) == first), "{text}");
}

#[test]
fn bench_cold_start_times_serve_and_the_first_step_of_up() {
    let report = bench(&["--cold-start", "--runs", "1"]);
    assert_eq!(report["build"], BUILD, "{report}");
    assert_eq!(report["runs"], 1);
    for k in [
        "fresh_data_dir_ms",
        "reused_data_dir_ms",
        "up_first_step_ms",
    ] {
        let median = report[k]["median"].as_f64().unwrap_or(0.0);
        assert!(median > 0.0 && median < 30_000.0, "{k} in {report}");
    }
}

#[test]
fn up_in_account_key_mode_reads_the_key_and_a_failure_at_keys_compensates() {
    let dir = tempfile::tempdir().unwrap();
    let example = example_spec();
    let from = r#""access": "identity""#;
    assert!(example.contains(from), "{example}");
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, example.replace(from, r#""access": "account-key""#)).unwrap();
    let spec = spec.to_str().unwrap();

    let (code, out) = up(&dir.path().join("ok"), &["--spec", spec]);
    assert_eq!(code, 0, "{out:#}");
    let r = &out["resources"];
    // The node identity reaches Key Vault; the key opened the scripts.
    assert_eq!(count_type(r, "userAssignedIdentities"), 1, "{r:#}");
    assert_eq!(count_type(r, "virtualMachineScaleSets"), 2, "{r:#}");
    assert!(out["leftovers"].as_array().unwrap().is_empty());

    let (code, out) = up(
        &dir.path().join("fail"),
        &["--spec", spec, "--fail-at", "keys"],
    );
    assert_eq!(code, 1, "{out:#}");
    assert_eq!(out["status"], "Compensated", "{out:#}");
    assert_eq!(
        out["error"]["code"], "Forbidden",
        "the key secret's write: {out:#}"
    );
    assert!(out["leftovers"].as_array().unwrap().is_empty(), "{out:#}");
}

/// The README's first command: `up` with its default data dir, the relative
/// `./.flotilla` in the working directory. The simulated nodes run their
/// scripts in directories of their own, where a relative path would not
/// resolve.
#[test]
fn up_with_the_default_data_dir_in_the_working_directory_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["up", "--output", "json", "--lro-seconds", "0.2"])
        .current_dir(dir.path())
        .env_remove("FLOTILLA_DATA_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["status"], "Succeeded", "{report:#}");
    assert!(dir.path().join(".flotilla").join("sim").is_dir());
}

#[cfg(unix)]
#[test]
fn a_simulator_stopped_by_sigterm_removes_its_temporary_directory() {
    // The child's temporary files go to a directory of this test's own.
    let tmp = tempfile::tempdir().unwrap();
    let mut sim = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["sim", "--lro-seconds", "0.05"])
        .env("TMPDIR", tmp.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("flotilla sim runs");
    // Its endpoints line: the simulator is up, its directory made.
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("arm_endpoint"), "{line}");
    assert!(
        !entries(tmp.path()).is_empty(),
        "the simulator keeps its CA in a temporary directory"
    );
    let status = stop_with_sigterm(&mut sim);
    assert!(status.success(), "{status:?}");
    let left = entries(tmp.path());
    assert!(left.is_empty(), "left behind: {left:?}");
}
