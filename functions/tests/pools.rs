//! Day-2 pools from the command line on the embedded backend: `up`, then
//! `pool add` and `pool remove`, with the simulator's inventory checked after
//! each; bad pool documents and refused removals exit with their reason.

mod cli_common;

use cli_common::{flotilla, json_of};
use serde_json::Value;
use std::path::Path;

const GPU: &str = r#"{
  "name": "gpu",
  "instanceType": "Standard_D4s_v5",
  "min": 1,
  "max": 3,
  "disk": { "type": "Premium_LRS", "sizeGb": 128 }
}"#;

fn scale_sets(out: &Value) -> Vec<String> {
    let mut sets: Vec<String> = out["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no resources: {out:#}"))
        .iter()
        .filter_map(|r| r.as_str())
        .filter(|r| r.contains("/virtualMachineScaleSets/"))
        .map(|r| r.rsplit('/').next().unwrap().to_string())
        .collect();
    sets.sort();
    sets
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--output", "json", "--lro-seconds", "0.2"]);
    flotilla(dir, &all)
}

#[test]
fn up_then_pool_add_and_pool_remove() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["up"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = json_of(&out);
    let job = out["job"].as_str().unwrap().to_string();
    let master = format!("{job}-master");
    let general = format!("{job}-pool-general");
    let gpu = format!("{job}-pool-gpu");
    assert_eq!(scale_sets(&out), vec![master.clone(), general.clone()]);

    // A pool document with a bad field: exit 2, the field named.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, GPU.replace("\"max\": 3", "\"max\": 0")).unwrap();
    let out = run(
        dir.path(),
        &["pool", "add", &job, "--spec", bad.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("max:"), "{}", stderr(&out));
    std::fs::write(
        &bad,
        GPU.replace("\"min\": 1,", "\"min\": 1, \"colour\": 1,"),
    )
    .unwrap();
    let out = run(
        dir.path(),
        &["pool", "add", &job, "--spec", bad.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));

    let spec = dir.path().join("gpu.json");
    std::fs::write(&spec, GPU).unwrap();
    let out = run(
        dir.path(),
        &["pool", "add", &job, "--spec", spec.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = json_of(&out);
    assert_eq!(out["status"], "Succeeded");
    assert_eq!(
        scale_sets(&out),
        vec![master.clone(), general.clone(), gpu.clone()]
    );
    let status = json_of(&flotilla(dir.path(), &["status", &job, "--output", "json"]));
    assert_eq!(status["pools"]["gpu"], 1, "{status:#}");

    // The same name again is refused.
    let out = run(
        dir.path(),
        &["pool", "add", &job, "--spec", spec.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("duplicate pool name"),
        "{}",
        stderr(&out)
    );

    let out = run(dir.path(), &["pool", "remove", &job, "gpu"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = json_of(&out);
    assert_eq!(scale_sets(&out), vec![master.clone(), general.clone()]);
    let status = json_of(&flotilla(dir.path(), &["status", &job, "--output", "json"]));
    assert!(status["pools"].get("gpu").is_none(), "{status:#}");

    // An unknown pool, and the last pool (the masters take no workloads).
    let out = run(dir.path(), &["pool", "remove", &job, "gpu"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    let out = run(dir.path(), &["pool", "remove", &job, "general"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("allowWorkloads"), "{}", stderr(&out));

    let out = run(dir.path(), &["delete", &job]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(scale_sets(&json_of(&out)).is_empty());
}
