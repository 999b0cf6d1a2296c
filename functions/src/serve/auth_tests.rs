//! Handler tests (custom-handler envelopes through the router, in memory) for
//! who may touch a job and what the `events` function accepts.

use super::caller::{AuthMode, AuthPolicy, PRINCIPAL, PRINCIPAL_ID};
use super::*;
use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use flotilla_core::ports::SagaStore;
use flotilla_core::saga::JobStatus;
use flotilla_core::testing::World;
use tower::ServiceExt;

const ALICE: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
const BOB: &str = "bbbbbbbb-0000-0000-0000-00000000000b";
const CAROL: &str = "cccccccc-0000-0000-0000-00000000000c";

/// Who sends a request: nobody (no headers), a plain principal, or one with app roles.
#[derive(Clone, Copy)]
enum As<'a> {
    Anonymous,
    User(&'a str),
    WithRoles(&'a str, &'a [&'a str]),
}

fn headers(who: As<'_>, extra: &[(&str, &str)]) -> Value {
    let mut h = json!({});
    match who {
        As::Anonymous => {}
        As::User(id) => h[PRINCIPAL_ID] = json!([id]),
        As::WithRoles(id, roles) => {
            let mut claims = vec![
                json!({"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": id}),
            ];
            claims.extend(roles.iter().map(|r| json!({"typ": "roles", "val": r})));
            let p = json!({"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"});
            h[PRINCIPAL_ID] = json!([id]);
            h[PRINCIPAL] = json!([base64::engine::general_purpose::STANDARD.encode(p.to_string())]);
        }
    }
    for (k, v) in extra {
        h[*k] = json!([v]);
    }
    h
}

/// One HTTP function invocation; returns (status code, body) of `Outputs.res`.
async fn call(
    state: &AppState,
    function: &str,
    method: &str,
    params: Value,
    hdrs: Value,
    body: &str,
) -> (u16, Value) {
    let env = json!({"Data": {"req": {
        "Url": "http://localhost:7071/api/clusters",
        "Method": method,
        "Query": {},
        "Headers": hdrs,
        "Params": params,
        "Body": body,
    }}, "Metadata": {}});
    let req = Request::post(format!("/{function}"))
        .header("content-type", "application/json")
        .body(Body::from(env.to_string()))
        .unwrap();
    let res = app(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the invocation itself succeeds"
    );
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&bytes).unwrap();
    let status = reply["Outputs"]["res"]["StatusCode"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = serde_json::from_str(reply["Outputs"]["res"]["Body"].as_str().unwrap_or("null"))
        .unwrap_or(Value::Null);
    (status, body)
}

fn required(w: &World) -> AppState {
    AppState {
        auth: AuthPolicy {
            mode: AuthMode::Required,
            ..AuthPolicy::default()
        },
        ..AppState::new(w.engine.clone())
    }
}

async fn submit_as(state: &AppState, who: As<'_>, n: u32) -> (u16, Value) {
    let mut spec = flotilla_core::spec::ClusterSpec::example();
    spec.network = flotilla_core::spec::NetworkSpec::numbered(n);
    let text = serde_json::to_string(&spec).unwrap();
    call(
        state,
        "submit",
        "POST",
        json!({}),
        headers(who, &[("Content-Type", "application/json")]),
        &text,
    )
    .await
}

fn id(job: &str) -> Value {
    json!({ "id": job })
}

#[tokio::test]
async fn only_the_owner_or_an_admin_may_read_list_scale_or_delete_a_job() {
    let w = World::new();
    let state = required(&w);
    let admin = As::WithRoles(CAROL, &["Flotilla.Admin"]);
    let (code, body) = submit_as(&state, As::User(ALICE), 0).await;
    assert_eq!(code, 202, "{body}");
    let job = body["job"].as_str().unwrap().to_string();
    let saga = w.run(&job, 600).await;
    assert_eq!(saga.status, JobStatus::Succeeded);
    assert_eq!(
        saga.owner.as_deref(),
        Some(ALICE),
        "the submitter owns the job"
    );
    // A job of Bob's, to see that lists are filtered per caller.
    let (_, bob_job) = submit_as(&state, As::User(BOB), 1).await;
    let bob_job = bob_job["job"].as_str().unwrap().to_string();

    // status: the owner and an admin see it; anyone else gets the same 404
    // as for a job that does not exist.
    let (code, body) = call(
        &state,
        "status",
        "GET",
        id(&job),
        headers(As::User(ALICE), &[]),
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["owner"], ALICE);
    // The job's outputs secret, by id.
    assert_eq!(
        body["outputs"],
        format!("https://fake.vault/secrets/{job}-outputs"),
        "{body}"
    );
    let (code, body) = call(&state, "status", "GET", id(&job), headers(admin, &[]), "").await;
    assert_eq!(code, 200, "{body}");
    let (code, hidden) = call(
        &state,
        "status",
        "GET",
        id(&job),
        headers(As::User(BOB), &[]),
        "",
    )
    .await;
    assert_eq!(code, 404, "{hidden}");
    let (_, unknown) = call(
        &state,
        "status",
        "GET",
        id("demo-zzzzzz"),
        headers(As::User(BOB), &[]),
        "",
    )
    .await;
    assert_eq!(hidden["type"], unknown["type"]);
    assert_eq!(hidden["title"], unknown["title"]);
    assert!(!hidden.to_string().contains(ALICE), "{hidden}");
    // A role that is not the admin role gives nothing.
    let (code, _) = call(
        &state,
        "status",
        "GET",
        id(&job),
        headers(As::WithRoles(BOB, &["Reader"]), &[]),
        "",
    )
    .await;
    assert_eq!(code, 404);

    // list: each caller sees its own jobs; an admin every job.
    let listed = |body: &Value| -> Vec<String> {
        body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].as_str().unwrap().to_string())
            .collect()
    };
    let (code, body) = call(
        &state,
        "list",
        "GET",
        json!({}),
        headers(As::User(ALICE), &[]),
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(listed(&body), vec![job.clone()]);
    let (_, body) = call(
        &state,
        "list",
        "GET",
        json!({}),
        headers(As::User(BOB), &[]),
        "",
    )
    .await;
    assert_eq!(listed(&body), vec![bob_job.clone()]);
    let (_, body) = call(
        &state,
        "list",
        "GET",
        json!({}),
        headers(As::User(CAROL), &[]),
        "",
    )
    .await;
    assert!(listed(&body).is_empty());
    let (_, body) = call(&state, "list", "GET", json!({}), headers(admin, &[]), "").await;
    assert_eq!(listed(&body).len(), 2, "{body}");

    // scale: refused (404) for another caller, nothing started; the owner may.
    let scale = |who| {
        call(
            &state,
            "scale",
            "PATCH",
            json!({"id": job, "pool": "general"}),
            headers(who, &[("Content-Type", "application/json")]),
            r#"{"count": 3}"#,
        )
    };
    let before = w.engine.status(&job).await.unwrap().unwrap();
    let (code, body) = scale(As::User(BOB)).await;
    assert_eq!(code, 404, "{body}");
    let after = w.engine.status(&job).await.unwrap().unwrap();
    assert_eq!(after.pending, before.pending);
    assert_eq!(after.seq, before.seq, "no scale was started");
    let (code, body) = scale(As::User(ALICE)).await;
    assert_eq!(code, 202, "{body}");
    let saga = w.run(&job, 600).await;
    assert_eq!(saga.pools["general"], 3);

    // delete: refused for another caller; an admin may delete anyone's job.
    let (code, _) = call(
        &state,
        "delete",
        "DELETE",
        id(&job),
        headers(As::User(BOB), &[]),
        "",
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(
        w.engine.status(&job).await.unwrap().unwrap().status,
        JobStatus::Succeeded
    );
    let (code, body) = call(
        &state,
        "delete",
        "DELETE",
        id(&job),
        headers(admin, &[]),
        "",
    )
    .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(w.run(&job, 600).await.status, JobStatus::Deleted);
}

#[tokio::test]
async fn required_auth_refuses_a_request_without_a_caller_and_bad_headers_are_400() {
    let w = World::new();
    let state = required(&w);
    let job = w
        .engine
        .submit(flotilla_core::spec::ClusterSpec::example())
        .await
        .unwrap();
    for (function, method, params) in [
        ("status", "GET", id(&job)),
        ("delete", "DELETE", id(&job)),
        ("list", "GET", json!({})),
    ] {
        let (code, body) = call(
            &state,
            function,
            method,
            params,
            headers(As::Anonymous, &[]),
            "",
        )
        .await;
        assert_eq!(code, 401, "{function}: {body}");
        assert_eq!(body["type"], "urn:flotilla:problem:unauthorized");
    }
    let (code, _) = submit_as(&state, As::Anonymous, 1).await;
    assert_eq!(code, 401);
    assert_eq!(
        w.store.list().await.unwrap().len(),
        1,
        "nothing was submitted"
    );
    // A job submitted without a caller (no owner) is an admin's only.
    let (code, _) = call(
        &state,
        "status",
        "GET",
        id(&job),
        headers(As::User(ALICE), &[]),
        "",
    )
    .await;
    assert_eq!(code, 404);
    // A malformed principal header is a 400 naming it.
    let (code, body) = call(
        &state,
        "status",
        "GET",
        id(&job),
        json!({ PRINCIPAL: ["not base64!"] }),
        "",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["field"], PRINCIPAL);
}

#[tokio::test]
async fn without_auth_the_local_operator_touches_every_job_and_named_callers_only_theirs() {
    let w = World::new();
    let state = AppState::new(w.engine.clone());
    let (code, body) = submit_as(&state, As::Anonymous, 0).await;
    assert_eq!(code, 202, "{body}");
    let job = body["job"].as_str().unwrap().to_string();
    assert_eq!(w.engine.status(&job).await.unwrap().unwrap().owner, None);
    let (code, body) = call(
        &state,
        "status",
        "GET",
        id(&job),
        headers(As::Anonymous, &[]),
        "",
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body["owner"], Value::Null, "no owner without auth");
    // Headers set by hand are honoured locally too.
    let (code, _) = call(
        &state,
        "status",
        "GET",
        id(&job),
        headers(As::User(BOB), &[]),
        "",
    )
    .await;
    assert_eq!(code, 404);
    let (code, body) = submit_as(&state, As::User(BOB), 1).await;
    assert_eq!(code, 202);
    let bob_job = body["job"].as_str().unwrap();
    let (_, body) = call(
        &state,
        "list",
        "GET",
        json!({}),
        headers(As::Anonymous, &[]),
        "",
    )
    .await;
    assert_eq!(body["jobs"].as_array().unwrap().len(), 2);
    let (_, body) = call(
        &state,
        "list",
        "GET",
        json!({}),
        headers(As::User(BOB), &[]),
        "",
    )
    .await;
    assert_eq!(body["jobs"][0]["job"], bob_job);
    assert_eq!(body["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_same_idempotency_key_of_two_callers_names_two_jobs() {
    let w = World::new();
    let state = required(&w);
    let spec = flotilla_core::spec::EXAMPLE_SPEC;
    let send = |who| {
        call(
            &state,
            "submit",
            "POST",
            json!({}),
            headers(
                who,
                &[
                    ("Content-Type", "application/json"),
                    ("Idempotency-Key", "k-1"),
                ],
            ),
            spec,
        )
    };
    let (a, first) = send(As::User(ALICE)).await;
    let (b, again) = send(As::User(ALICE)).await;
    assert_eq!((a, b), (202, 200), "{first} {again}");
    assert_eq!(first["job"], again["job"]);
    // Bob's key is his own: it cannot find (or collide with) Alice's job.
    let (_, bobs) = send(As::User(BOB)).await;
    assert_ne!(bobs["job"], first["job"], "{bobs}");
}

// ---------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------

async fn succeeded_job(w: &World) -> (String, String) {
    let job = w
        .engine
        .submit(flotilla_core::spec::ClusterSpec::example())
        .await
        .unwrap();
    assert_eq!(w.run(&job, 600).await.status, JobStatus::Succeeded);
    let vmss = w
        .cloud
        .resources()
        .into_iter()
        .find(|r| r.ends_with("-master"))
        .unwrap();
    (job, vmss)
}

/// The resource group id an ARM id lies in (the resource group system topic's source).
fn group_of(id: &str) -> String {
    let lower = id.to_ascii_lowercase();
    id[..lower.find("/providers/").unwrap()].to_string()
}

fn deleted(resource: &str, topic: &str) -> Value {
    json!({
        "id": "e-1",
        "topic": topic,
        "subject": resource,
        "eventType": events::DELETE_SUCCESS,
        "eventTime": "2026-12-01T00:00:00Z",
        "data": {"resourceUri": resource, "operationName": "Microsoft.Compute/virtualMachineScaleSets/delete", "status": "Succeeded"},
        "dataVersion": "2",
        "metadataVersion": "1",
    })
}

async fn deliver(state: &AppState, event: &Value) -> Value {
    let env = json!({"Data": {"eventGridEvent": event}, "Metadata": {}});
    let req = Request::post("/events")
        .header("content-type", "application/json")
        .body(Body::from(env.to_string()))
        .unwrap();
    let res = app(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn raw(state: &AppState, events: &Value) -> (StatusCode, Value) {
    let req = Request::post("/events")
        .header("content-type", "application/json")
        .body(Body::from(events.to_string()))
        .unwrap();
    let res = app(state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_delivery_from_another_topic_is_refused_and_not_applied() {
    let w = World::new();
    let (job, vmss) = succeeded_job(&w).await;
    let topic = group_of(&vmss);
    let state = AppState {
        event_topic: Some(topic.clone()),
        ..AppState::new(w.engine.clone())
    };
    w.cloud.remove(&vmss);
    let foreign = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/elsewhere";
    // Through the Functions host: answered (no redelivery), refused, logged.
    let reply = deliver(&state, &deleted(&vmss, foreign)).await;
    assert_eq!(reply["ReturnValue"]["status"], 400, "{reply}");
    assert_eq!(reply["ReturnValue"]["field"], "topic");
    assert!(reply["Logs"].to_string().contains("refused"), "{reply}");
    // As a bare webhook delivery: 400 problem details; one foreign event
    // in a batch refuses the whole batch.
    let (status, body) = raw(
        &state,
        &json!([deleted(&vmss, &topic), deleted(&vmss, foreign)]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["type"], "urn:flotilla:problem:invalid-request");
    // A validation handshake from elsewhere is refused too.
    let mut validation: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/eventgrid_SubscriptionValidationEvent.json"
    ))
    .unwrap();
    let (status, _) = raw(&state, &validation).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the fixture's topic is not ours"
    );
    assert_eq!(
        w.engine.status(&job).await.unwrap().unwrap().status,
        JobStatus::Succeeded
    );
    // From the configured topic the handshake is answered and the event applied.
    validation[0]["topic"] = json!(topic.to_ascii_uppercase());
    let (status, body) = raw(&state, &validation).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["validationResponse"],
        validation[0]["data"]["validationCode"]
    );
    let (status, _) = raw(&state, &json!([deleted(&vmss, &topic)])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        w.engine.status(&job).await.unwrap().unwrap().status,
        JobStatus::Degraded
    );
}

#[tokio::test]
async fn a_delete_event_is_checked_against_arm_before_a_job_is_degraded() {
    let w = World::new();
    let (job, vmss) = succeeded_job(&w).await;
    let topic = group_of(&vmss);
    let state = AppState {
        event_topic: Some(topic.clone()),
        ..AppState::new(w.engine.clone())
    };
    // The scale set still exists: the event is ignored and logged.
    let reply = deliver(&state, &deleted(&vmss, &topic)).await;
    assert!(
        reply["Logs"].to_string().contains("still exists"),
        "{reply}"
    );
    let saga = w.engine.status(&job).await.unwrap().unwrap();
    assert_eq!(saga.status, JobStatus::Succeeded);
    assert!(saga.missing.is_empty());
    // Gone from ARM: the job is Degraded with the scale set listed.
    w.cloud.remove(&vmss);
    let reply = deliver(&state, &deleted(&vmss, &topic)).await;
    assert!(reply["Logs"].to_string().contains("is Degraded"), "{reply}");
    let saga = w.engine.status(&job).await.unwrap().unwrap();
    assert_eq!(saga.status, JobStatus::Degraded);
    assert_eq!(saga.missing, vec![vmss]);
}

#[tokio::test]
async fn the_cluster_identity_may_scale_its_own_job_and_nothing_else() {
    let w = World::new();
    let state = required(&w);
    let mut jobs = vec![];
    for n in [1, 2] {
        let (code, body) = submit_as(&state, As::User(ALICE), n).await;
        assert_eq!(code, 202, "{body}");
        let job = body["job"].as_str().unwrap().to_string();
        assert_eq!(w.run(&job, 600).await.status, JobStatus::Succeeded);
        jobs.push(job);
    }
    let saga = w.engine.status(&jobs[0]).await.unwrap().unwrap();
    let master = saga
        .principals
        .get(&flotilla_core::names::master_vmss(&jobs[0]))
        .cloned()
        .expect("the master's identity is recorded");
    let scale = |job: &str| {
        call(
            &state,
            "scale",
            "PATCH",
            json!({"id": job, "pool": "general"}),
            headers(As::User(&master), &[("Content-Type", "application/json")]),
            r#"{"count": 3}"#,
        )
    };
    let (code, body) = scale(&jobs[1]).await;
    assert_eq!(code, 404, "another job's pools: {body}");
    let (code, body) = call(
        &state,
        "status",
        "GET",
        id(&jobs[0]),
        headers(As::User(&master), &[]),
        "",
    )
    .await;
    assert_eq!(
        code, 404,
        "the cluster identity may scale, not read: {body}"
    );
    let (code, body) = scale(&jobs[0]).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(w.run(&jobs[0], 600).await.pools["general"], 3);
}
