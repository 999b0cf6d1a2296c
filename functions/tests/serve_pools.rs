//! Day-2 pools over HTTP through `flotilla serve` on the zero-config
//! backends: `pool-add` and `pool-remove`, with problem details for a bad
//! pool (400 naming the field), an unknown job or pool (404) and a job in
//! the wrong state (409).

mod serve_common;

use serde_json::{json, Value};
use serve_common::{example_spec, Server};
use std::time::{Duration, Instant};

const GPU: &str = r#"{"name": "gpu", "instanceType": "Standard_D4s_v5", "min": 1, "max": 2,
  "disk": {"type": "Premium_LRS", "sizeGb": 128}}"#;

fn status(server: &Server, job: &str) -> Value {
    let ans = server.http("status", "GET", json!({"id": job}), None, "");
    assert_eq!(ans.status, 200, "{ans:?}");
    ans.body
}

fn wait_for(server: &Server, job: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let s = status(server, job);
        if done(&s) {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "job {job} not {what} in time: {s:#}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn add(server: &Server, job: &str, body: &str) -> serve_common::HttpAnswer {
    server.http(
        "pool-add",
        "POST",
        json!({"id": job}),
        Some("application/json"),
        body,
    )
}

fn remove(server: &Server, job: &str, pool: &str) -> serve_common::HttpAnswer {
    server.http(
        "pool-remove",
        "DELETE",
        json!({"id": job, "pool": pool}),
        None,
        "",
    )
}

#[test]
fn pools_are_added_and_removed_over_http() {
    let server = Server::start();
    // Unknown job.
    add(&server, "nosuch-abc123", GPU).assert_problem(404);
    remove(&server, "nosuch-abc123", "gpu").assert_problem(404);

    let ans = server.http(
        "submit",
        "POST",
        json!({}),
        Some("application/json"),
        &example_spec(),
    );
    assert_eq!(ans.status, 202, "{ans:?}");
    let job = ans.body["job"].as_str().unwrap().to_string();
    // Still running: a pool change is a conflict.
    add(&server, &job, GPU).assert_problem(409);
    let saga = wait_for(&server, &job, "Succeeded", |s| s["status"] != "Running");
    assert_eq!(saga["status"], "Succeeded", "{saga:#}\n{}", server.log());

    // Bad pools: 400 naming the field.
    for (body, field) in [
        (GPU.replace("\"max\": 2", "\"max\": 0"), "max"),
        (GPU.replace("\"min\": 1", "\"min\": 5"), "min"),
        (
            GPU.replace("\"sizeGb\": 128", "\"sizeGb\": 5"),
            "disk.sizeGb",
        ),
        (
            GPU.replace("\"instanceType\": \"Standard_D4s_v5\", ", ""),
            "instanceType",
        ),
        (GPU.replace("\"min\": 1", "\"min\": \"one\""), "min"),
        (GPU.replace("\"gpu\"", "\"general\""), "name"),
    ] {
        let ans = add(&server, &job, &body);
        ans.assert_problem(400);
        assert_eq!(ans.body["field"], field, "{body}: {ans:?}");
    }
    add(&server, &job, "[1").assert_problem(400);

    let ans = add(&server, &job, GPU);
    assert_eq!(ans.status, 202, "{ans:?}");
    assert_eq!(ans.body["pool"], "gpu");
    let url = format!("/api/clusters/{job}");
    assert_eq!(ans.headers["Location"], url.as_str());
    // The request answers before the engine takes it: wait for its outcome.
    let saga = wait_for(&server, &job, "pool added", |s| {
        s["pending"].is_null() && (!s["pools"]["gpu"].is_null() || !s["error"].is_null())
    });
    assert_eq!(saga["pools"]["gpu"], 1, "{saga:#}\n{}", server.log());
    assert!(saga["error"].is_null(), "{saga:#}");

    // Unknown pool: 404 naming it; the last pool: 409.
    let ans = remove(&server, &job, "nope");
    ans.assert_problem(404);
    assert_eq!(ans.body["field"], "pool");
    let ans = remove(&server, &job, "gpu");
    assert_eq!(ans.status, 202, "{ans:?}");
    let saga = wait_for(&server, &job, "pool removed", |s| {
        s["pending"].is_null() && (s["pools"]["gpu"].is_null() || !s["error"].is_null())
    });
    assert!(saga["error"].is_null(), "{saga:#}");
    assert!(saga["pools"].get("gpu").is_none(), "{saga:#}");
    remove(&server, &job, "general").assert_problem(409);

    // Deleted: pool changes are conflicts.
    let ans = server.http("delete", "DELETE", json!({"id": job}), None, "");
    assert_eq!(ans.status, 202, "{ans:?}");
    let saga = wait_for(&server, &job, "Deleted", |s| s["status"] != "Deleting");
    assert_eq!(saga["status"], "Deleted", "{saga:#}");
    add(&server, &job, GPU).assert_problem(409);
}
