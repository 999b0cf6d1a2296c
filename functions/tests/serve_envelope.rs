//! `flotilla serve` as the Functions host sees it: the recorded host
//! envelopes (object, quoted string and base64 variants), Event Grid's
//! validation handshake, problem details for bad HTTP requests (the server
//! keeps serving), and the jobs queue.

mod serve_common;

use base64::Engine as _;
use serde_json::{json, Value};
use serve_common::{example_spec, fixture, fixture_json, function_folders, Server};

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The three encodings a trigger value can arrive in.
fn variants(value: &Value) -> Vec<Value> {
    let text = value.to_string();
    vec![value.clone(), json!(text), json!(b64(&text))]
}

#[test]
fn recorded_envelopes_and_the_validation_handshake() {
    let server = Server::start();

    // The readiness answer lists exactly the function folders on disk.
    let ready = server.ready();
    let mut listed: Vec<String> = ready["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, function_folders());

    // The recorded HTTP trigger envelope: its body is not a cluster spec, so
    // the answer is a 400 problem naming the field, in Outputs.res.
    let http = fixture_json("customhandler_request_httpTrigger_nonforwarding.json");
    for req in variants(&http["Data"]["req"]) {
        let mut env = http.clone();
        env["Data"]["req"] = req;
        let (status, reply) = server.invoke("submit", &env);
        assert_eq!(status, 200, "{reply}");
        let ans = serve_common::HttpAnswer::of(&reply);
        ans.assert_problem(400);
        assert_eq!(ans.body["field"], "id", "{ans:?}");
        assert!(
            ans.body["detail"]
                .as_str()
                .unwrap()
                .contains("unknown field `id`"),
            "{ans:?}"
        );
    }

    // The recorded queue envelope (binding named differently, a text value):
    // not a spec, so it is completed (200) with a log line saying why.
    let (status, reply) = server.invoke(
        "submit-queue",
        &fixture_json("customhandler_request_queueTrigger.json"),
    );
    assert_eq!(status, 200, "{reply}");
    let logs = reply["Logs"].to_string();
    assert!(logs.contains("invalid spec"), "{logs}");

    // Event Grid validation, in every encoding, wrapped as the host does.
    let events = fixture_json("eventgrid_SubscriptionValidationEvent.json");
    let expected = fixture_json("eventgrid_SubscriptionValidationResponse.json");
    for ev in variants(&events[0]).into_iter().chain(variants(&events)) {
        let (status, reply) = server.invoke(
            "events",
            &json!({"Data": {"eventGridEvent": ev}, "Metadata": {}}),
        );
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["ReturnValue"], expected, "{reply}");
    }
    // ... and as Event Grid itself delivers it (a bare array).
    let (status, _, body) = server.request(
        "POST",
        "/events",
        Some("application/json"),
        fixture("eventgrid_SubscriptionValidationEvent.json").as_bytes(),
    );
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), expected);

    // A ResourceDeleteSuccess for a resource no job recorded is ignored.
    let del = fixture_json("eventgrid_ResourceDeleteSuccess.eventgridschema.json");
    let (status, reply) = server.invoke(
        "events",
        &json!({"Data": {"eventGridEvent": del[0]}, "Metadata": {}}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["ReturnValue"], Value::Null);

    // A poison message on a subscription: refused (so Service Bus dead-letters it), with a log line.
    for junk in [
        json!("definitely not an event"),
        json!({"specversion": "0.3"}),
    ] {
        let (status, reply) = server.invoke("compensate", &json!({"Data": {"message": junk}, "Metadata": {"MessageId": "abc", "DeliveryCount": 3}}));
        assert_eq!(status, 500, "{reply}");
        assert!(
            reply["Logs"].to_string().contains("poison message abc"),
            "{reply}"
        );
    }
    // An event for a job nobody knows is settled too (nothing to do).
    let stray = json!({
        "specversion": "1.0", "id": "ghost-abc123/stage/succeeded", "source": "/flotilla/jobs/ghost-abc123",
        "type": "io.flotilla.step.succeeded", "subject": "prereqs", "time": "2024-01-01T00:00:00Z",
        "datacontenttype": "application/json", "data": {"job": "ghost-abc123", "step": "stage"}
    });
    for v in variants(&stray) {
        let (status, reply) = server.invoke(
            "prereqs",
            &json!({"Data": {"message": v}, "Metadata": {"DeliveryCount": 1}}),
        );
        assert_eq!(status, 200, "{reply}");
        assert!(reply["Logs"].to_string().contains("handled"), "{reply}");
    }

    // Not an invocation at all / an unknown function: transport-level problems.
    let (status, _, _) = server.request("POST", "/submit", Some("application/json"), b"{oops");
    assert_eq!(status, 400);
    let (status, _, _) =
        server.request("POST", "/no-such-function", Some("application/json"), b"{}");
    assert_eq!(status, 404);
    server.ready();
}

#[test]
fn bad_http_requests_get_problem_details_and_the_server_keeps_serving() {
    let server = Server::start();
    let spec = example_spec();
    let none = json!({});
    let id = |job: &str| json!({"id": job});

    // Malformed JSON.
    server
        .http(
            "submit",
            "POST",
            none.clone(),
            Some("application/json"),
            "{\"name\": ",
        )
        .assert_problem(400);
    server.ready();
    // Wrong content type.
    server
        .http("submit", "POST", none.clone(), Some("text/plain"), &spec)
        .assert_problem(415);
    server
        .http("submit", "POST", none.clone(), None, &spec)
        .assert_problem(415);
    server.ready();
    // Too large.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));
    server
        .http(
            "submit",
            "POST",
            none.clone(),
            Some("application/json"),
            &big,
        )
        .assert_problem(413);
    server.ready();
    // Invalid spec: the problem names the field.
    let bad = spec.replace(
        "\"location\": \"westeurope\"",
        "\"location\": \"West Europe!\"",
    );
    assert_ne!(bad, spec, "the example spec has a location");
    let ans = server.http(
        "submit",
        "POST",
        none.clone(),
        Some("application/json; charset=utf-8"),
        &bad,
    );
    ans.assert_problem(400);
    assert_eq!(ans.body["field"], "location", "{ans:?}");
    server.ready();
    // Unknown and malformed job ids.
    for job in ["nosuch-abc123", "../../etc", "UPPER", ""] {
        server
            .http("status", "GET", id(job), None, "")
            .assert_problem(404);
        server
            .http("delete", "DELETE", id(job), None, "")
            .assert_problem(404);
        server
            .http(
                "scale",
                "PATCH",
                json!({"id": job, "pool": "general"}),
                Some("application/json"),
                "{\"count\": 2}",
            )
            .assert_problem(404);
    }
    server
        .http("status", "GET", none.clone(), None, "")
        .assert_problem(404);
    // Scale bodies.
    server
        .http(
            "scale",
            "PATCH",
            json!({"id": "nosuch-abc123", "pool": "general"}),
            Some("application/json"),
            "{\"count\": -1}",
        )
        .assert_problem(400);
    server
        .http(
            "scale",
            "PATCH",
            json!({"id": "nosuch-abc123", "pool": "general"}),
            Some("application/json"),
            "[1",
        )
        .assert_problem(400);
    // Wrong method for a function.
    server
        .http("status", "POST", id("nosuch-abc123"), None, "")
        .assert_problem(405);
    server.ready();
}
