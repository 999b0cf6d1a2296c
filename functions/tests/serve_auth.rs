//! `flotilla serve` with the access settings, as `infra/` sets them:
//! `FLOTILLA_AUTH=required` refuses a request without a caller (401), the
//! caller's headers as App Service Authentication forwards them select its
//! jobs, `FLOTILLA_EVENTGRID_TOPIC` refuses a delivery from another topic,
//! and a malformed setting stops `serve` naming it.

mod serve_common;

use serde_json::{json, Value};
use serve_common::{example_spec, HttpAnswer, Server};

const TOPIC: &str =
    "/subscriptions/00000000-0000-4000-8000-00000000f107/resourceGroups/flotilla-demo";

/// An HTTP invocation with these request headers.
fn call(
    server: &Server,
    function: &str,
    method: &str,
    params: Value,
    headers: Value,
    body: &str,
) -> HttpAnswer {
    let env = json!({
        "Data": {"req": {
            "Url": format!("http://localhost:7071/api/{function}"),
            "Method": method,
            "Query": {},
            "Headers": headers,
            "Params": params,
            "Body": body,
        }},
        "Metadata": {},
    });
    let (status, reply) = server.invoke(function, &env);
    assert_eq!(status, 200, "the invocation itself succeeds: {reply}");
    HttpAnswer::of(&reply)
}

#[test]
fn required_auth_and_the_event_topic_are_enforced_by_serve() {
    let server = Server::start_with(&[
        ("FLOTILLA_AUTH", "required"),
        ("FLOTILLA_EVENTGRID_TOPIC", TOPIC),
    ]);
    let alice =
        json!({"X-MS-CLIENT-PRINCIPAL-ID": ["alice"], "Content-Type": ["application/json"]});
    let bob = json!({"X-MS-CLIENT-PRINCIPAL-ID": ["bob"]});

    // No caller: 401, nothing stored.
    call(&server, "list", "GET", json!({}), json!({}), "").assert_problem(401);
    call(
        &server,
        "submit",
        "POST",
        json!({}),
        json!({"Content-Type": ["application/json"]}),
        &example_spec(),
    )
    .assert_problem(401);

    // Alice submits; the job is hers, Bob sees nothing of it.
    let ans = call(
        &server,
        "submit",
        "POST",
        json!({}),
        alice.clone(),
        &example_spec(),
    );
    assert_eq!(ans.status, 202, "{ans:?}");
    let job = ans.body["job"].as_str().unwrap().to_string();
    let mine = call(
        &server,
        "status",
        "GET",
        json!({"id": job}),
        alice.clone(),
        "",
    );
    assert_eq!(mine.status, 200, "{mine:?}");
    assert_eq!(mine.body["owner"], "alice");
    call(
        &server,
        "status",
        "GET",
        json!({"id": job}),
        bob.clone(),
        "",
    )
    .assert_problem(404);
    let listed = call(&server, "list", "GET", json!({}), bob, "");
    assert_eq!(listed.body["jobs"], json!([]), "{listed:?}");
    let listed = call(&server, "list", "GET", json!({}), alice, "");
    assert_eq!(listed.body["jobs"][0]["job"], job.as_str(), "{listed:?}");

    // An Event Grid delivery about another topic is refused, not applied.
    let event = json!({
        "id": "e-1", "topic": "/subscriptions/x/resourceGroups/elsewhere", "subject": "/subscriptions/x",
        "eventType": "Microsoft.Resources.ResourceDeleteSuccess", "eventTime": "2026-12-01T00:00:00Z",
        "data": {}, "dataVersion": "2", "metadataVersion": "1",
    });
    let (code, reply) = server.invoke(
        "events",
        &json!({"Data": {"eventGridEvent": event}, "Metadata": {}}),
    );
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["ReturnValue"]["status"], 400, "{reply}");
    assert_eq!(reply["ReturnValue"]["field"], "topic", "{reply}");
}

#[test]
fn a_malformed_access_setting_stops_serve_naming_it() {
    for (name, value) in [
        ("FLOTILLA_AUTH", "maybe"),
        ("FLOTILLA_ADMIN_ROLE", "two words"),
        ("FLOTILLA_EVENTGRID_TOPIC", "elsewhere"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["serve", "--port", "0"])
            .env("FLOTILLA_DATA_DIR", dir.path().join("data"))
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name), "{name}: {err}");
    }
}
