//! A small chaos campaign on each backend set, through the built binary: 30
//! jobs, 20 % of Azure calls faulted, terminal faults on a share of the jobs,
//! duplicate deliveries, lost sends (Service Bus) and two kill -9 + restarts.
//! Every job must settle as planned with nothing orphaned or duplicated.

use serde_json::Value;
use std::process::Command;

/// Runs `flotilla chaos` and returns (exit code, report).
fn campaign(args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("chaos")
        .args(args)
        .args(["--output", "json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("flotilla chaos runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the report is not JSON ({e}):\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// The report's invariants for a campaign that must pass.
fn assert_campaign_passed(code: i32, r: &Value, stderr: &str) {
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing: {r:#}"))
    };
    let problems = r["problems"].as_array().cloned().unwrap_or_default();
    let summary: Vec<String> = problems
        .iter()
        .take(10)
        .map(|p| {
            format!(
                "{} {}: {} (status {}, error {}, why {})\n  pending: {}\n  steps: {}\n  log:\n    {}",
                p["cluster"],
                p["job"],
                p["problem"],
                p["status"],
                p["error"],
                p["why"],
                p["pending"],
                p["steps"],
                p["log"]
                    .as_array()
                    .map(|l| l
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n    "))
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        code,
        0,
        "the campaign failed: jobs {} succeeded {} compensated {} failed {} stalled {} orphans {} duplicates {}\n{}\nwork dir: {}\nstderr tail:\n{}",
        r["jobs"],
        r["succeeded"],
        r["compensated"],
        r["failed"],
        r["stalled"],
        r["orphans"],
        r["duplicates"],
        summary.join("\n"),
        r["work_dir"],
        stderr.lines().rev().take(10).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(r["verdict"], "pass");
    assert_eq!(n("jobs"), 30);
    assert!(problems.is_empty(), "{problems:#?}");
    for zero in ["stalled", "orphans", "duplicates", "failed"] {
        assert_eq!(n(zero), 0, "{zero}: {r:#}");
    }
    // Every job ended as planned: terminal fault -> Compensated, else Succeeded.
    assert_eq!(n("succeeded") + n("compensated"), 30, "{r:#}");
    assert_eq!(n("compensated"), n("terminal_jobs"), "{r:#}");
    assert!(
        n("terminal_jobs") >= 1,
        "the seed gives some jobs a terminal fault"
    );
    assert!(n("faults_injected") >= 30, "{r:#}");
    assert_eq!(n("kills"), 2, "{r:#}");
    assert!(r["seconds"].as_f64().is_some_and(|s| s > 0.0));
}

/// The children log what the engine decided (debug), so that a failure's
/// report shows the last lines naming each job with a problem.
const SMALL: [&str; 12] = [
    "--child-log",
    "info,flotilla_core=debug",
    "--jobs",
    "30",
    "--fault-rate",
    "0.2",
    "--kills",
    "2",
    "--seed",
    "20261",
    "--lro-seconds",
    "0.1",
];

#[test]
fn an_embedded_campaign_settles_every_job_cleanly() {
    let (code, r, stderr) = campaign(&[&SMALL[..], &["--backend", "embedded"]].concat());
    assert_eq!(r["backend"], "embedded");
    assert_eq!(r["faults"]["deliver_twice"], true, "{r:#}");
    assert_campaign_passed(code, &r, &stderr);
}

#[test]
fn an_emulators_campaign_settles_every_job_cleanly() {
    let (code, r, stderr) = campaign(&[&SMALL[..], &["--backend", "emulators"]].concat());
    assert_eq!(r["backend"], "emulators");
    let sb = &r["faults"]["servicebus"];
    assert!(
        sb["duplicated"].as_u64() > Some(0) && sb["reordered"].as_u64() > Some(0),
        "{r:#}"
    );
    assert_campaign_passed(code, &r, &stderr);
}

#[test]
fn bad_arguments_exit_2_naming_the_flag() {
    for (flag, value) in [("--jobs", "0"), ("--fault-rate", "2"), ("--workers", "0")] {
        let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["chaos", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{err}");
        assert!(out.stdout.is_empty());
    }
}
