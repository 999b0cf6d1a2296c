//! A job through `flotilla serve` on the zero-config backends (embedded store
//! and bus, built-in simulator): submit → Succeeded, conflicts, an Azure
//! delete event for a resource ARM still has (ignored), scale, delete.

mod serve_common;

use serde_json::{json, Value};
use serve_common::{example_spec, Server};
use std::time::{Duration, Instant};

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

#[test]
fn submit_runs_to_succeeded_then_scale_a_stale_delete_event_and_delete() {
    let server = Server::start();
    let ans = server.http(
        "submit",
        "POST",
        json!({}),
        Some("application/json"),
        &example_spec(),
    );
    assert_eq!(ans.status, 202, "{ans:?}");
    let job = ans.body["job"].as_str().unwrap().to_string();
    let url = format!("/api/clusters/{job}");
    assert_eq!(ans.body["statusUrl"], url.as_str());
    assert_eq!(ans.body["status"], "Running");
    assert_eq!(ans.headers["Location"], url.as_str());

    // Still running: delete is a conflict.
    server
        .http("delete", "DELETE", json!({"id": job}), None, "")
        .assert_problem(409);

    let saga = wait_for(&server, &job, "Succeeded", |s| s["status"] != "Running");
    assert_eq!(saga["status"], "Succeeded", "{saga:#}\n{}", server.log());

    // Scale: out of range is a 400 naming count; an unknown pool names pool.
    let params = json!({"id": job, "pool": "general"});
    let ans = server.http(
        "scale",
        "PATCH",
        params.clone(),
        Some("application/json"),
        "{\"count\": 99}",
    );
    ans.assert_problem(400);
    assert_eq!(ans.body["field"], "count");
    let ans = server.http(
        "scale",
        "PATCH",
        json!({"id": job, "pool": "nope"}),
        Some("application/json"),
        "{\"count\": 3}",
    );
    ans.assert_problem(400);
    assert_eq!(ans.body["field"], "pool");
    let ans = server.http(
        "scale",
        "PATCH",
        params.clone(),
        Some("application/json"),
        "{\"count\": 3}",
    );
    assert_eq!(ans.status, 202, "{ans:?}");
    let saga = wait_for(&server, &job, "scaled", |s| {
        s["pools"]["general"] == 3 && s["pending"].is_null()
    });
    assert_eq!(saga["status"], "Succeeded");

    // Event Grid says a scale set was deleted, but ARM still has it: the
    // event changes nothing (serve::auth_tests shows a real deletion
    // degrading the job).
    let vmss = saga["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .find(|id| id.contains("/virtualMachineScaleSets/"))
        .expect("a scale set is recorded");
    let event = json!({
        "subject": vmss, "eventType": "Microsoft.Resources.ResourceDeleteSuccess",
        "eventTime": "2024-07-19T19:24:12.763881Z", "id": "19a69642-1aad-4a96-a5ab-8d05494513ce",
        "data": {"resourceUri": vmss, "operationName": "Microsoft.Compute/virtualMachineScaleSets/delete", "status": "Succeeded"},
        "dataVersion": "2", "metadataVersion": "1", "topic": "/subscriptions/x/resourceGroups/flotilla-demo"
    });
    let (code, reply) = server.invoke(
        "events",
        &json!({"Data": {"eventGridEvent": event}, "Metadata": {}}),
    );
    assert_eq!(code, 200, "{reply}");
    assert!(
        reply["Logs"].to_string().contains("still exists"),
        "{reply}"
    );
    let saga = status(&server, &job);
    assert_eq!(saga["status"], "Succeeded", "{saga:#}");
    assert_eq!(saga["missing"], json!([]));

    // Delete: accepted once, then a conflict while it runs; ends Deleted.
    let ans = server.http("delete", "DELETE", json!({"id": job}), None, "");
    assert_eq!(ans.status, 202, "{ans:?}");
    assert_eq!(ans.headers["Location"], url.as_str());
    let again = server.http("delete", "DELETE", json!({"id": job}), None, "");
    let s = status(&server, &job);
    if s["status"] == "Deleting" {
        again.assert_problem(409);
    }
    let saga = wait_for(&server, &job, "Deleted", |s| s["status"] != "Deleting");
    assert_eq!(saga["status"], "Deleted", "{saga:#}");
    // Deleted: scale and delete are conflicts now.
    server
        .http(
            "scale",
            "PATCH",
            params,
            Some("application/json"),
            "{\"count\": 2}",
        )
        .assert_problem(409);
    server
        .http("delete", "DELETE", json!({"id": job}), None, "")
        .assert_problem(409);
}

#[test]
fn a_spec_on_the_jobs_queue_starts_a_job() {
    let server = Server::start();
    let spec: Value = serde_json::from_str(&example_spec()).unwrap();
    let (code, reply) = server.invoke(
        "submit-queue",
        &json!({"Data": {"message": spec}, "Metadata": {"MessageId": "q-1", "DeliveryCount": 1}}),
    );
    assert_eq!(code, 200, "{reply}");
    let logs = reply["Logs"].to_string();
    let job = logs
        .split("started job ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
        })
        .unwrap_or_else(|| panic!("no job in {logs}"))
        .to_string();
    let saga = wait_for(&server, &job, "finished", |s| s["status"] != "Running");
    assert_eq!(saga["status"], "Succeeded");
}
