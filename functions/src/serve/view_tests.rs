//! In-process tests of the progress pages (`view`, `view-list`) and of the
//! browser front door (`GET /api/...`), on the in-memory world.

use super::*;
use axum::body::Body;
use axum::http::Request;
use flotilla_azure::AzureError;
use flotilla_core::saga::{JobStatus, StepName, StepStatus};
use flotilla_core::spec::ClusterSpec;
use flotilla_core::testing::World;
use tower::ServiceExt;

/// The world with a compensated job (master refused) and a running one.
async fn world() -> (World, AppState, String, String) {
    let w = World::new();
    w.cloud.fail(
        "put",
        "-master",
        AzureError::from_service(409, "SkuNotAvailable", "no such size here", None),
        1,
    );
    let failed = w.engine.submit(ClusterSpec::example()).await.unwrap();
    let saga = w.run(&failed, 600).await;
    assert_eq!(saga.status, JobStatus::Compensated, "{saga:#?}");
    w.clock.advance(std::time::Duration::from_secs(60));
    let mut spec = ClusterSpec::example();
    spec.name = "second".into();
    let running = w.engine.submit(spec).await.unwrap();
    w.pump().await;
    let state = AppState::new(w.engine.clone());
    (w, state, failed, running)
}

/// An HTTP function invoked as the host does: (status, headers, body text).
async fn call(state: &AppState, function: &str, params: Value) -> (u16, Value, String) {
    let env = json!({"Data": {"req": {
        "Url": "http://localhost:7071/api/x",
        "Method": "GET",
        "Query": {},
        "Headers": {},
        "Params": params,
        "Body": "",
    }}, "Metadata": {}});
    let req = Request::post(format!("/{function}"))
        .header("content-type", "application/json")
        .body(Body::from(env.to_string()))
        .unwrap();
    let res = app(state.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&bytes).unwrap();
    let res = &reply["Outputs"]["res"];
    (
        res["StatusCode"].as_str().unwrap().parse().unwrap(),
        res["Headers"].clone(),
        res["Body"].as_str().unwrap_or_default().to_string(),
    )
}

/// The JSON a page embeds.
fn embedded(html: &str) -> Value {
    let start = html.find("const DATA = ").expect("data slot") + "const DATA = ".len();
    let end = start + html[start..].find(";\n").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

#[tokio::test]
async fn the_job_page_is_html_with_what_status_answers() {
    let (_w, state, failed, _) = world().await;
    let (code, headers, html) = call(&state, "view", json!({"id": failed})).await;
    assert_eq!(code, 200);
    assert_eq!(headers["Content-Type"], "text/html; charset=utf-8");
    assert!(headers["Content-Security-Policy"]
        .as_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert!(html.starts_with("<!doctype html>"));
    // Self-contained: nothing loaded from elsewhere.
    assert!(!html.contains("<script src") && !html.contains("<link"));
    let data = embedded(&html);
    assert_eq!(data["kind"], "job");
    let (code, _, status) = call(&state, "status", json!({"id": failed})).await;
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(data["job"], status, "the page starts from status's answer");
    // What the timeline needs: undo times per step, in RFC 3339.
    let master = &data["job"]["steps"][StepName::Master.index()];
    assert_eq!(master["status"], json!(StepStatus::Failed));
    assert_eq!(master["lastError"]["code"], "SkuNotAvailable");
    let prereqs = &data["job"]["steps"][StepName::Prereqs.index()];
    for field in ["startedAt", "finishedAt", "undoStartedAt", "undoFinishedAt"] {
        let t = prereqs[field].as_str().unwrap_or_else(|| panic!("{field}"));
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{field} {t}: {e}"));
    }
    assert!(prereqs["undoStartedAt"].as_str() >= prereqs["finishedAt"].as_str());
}

#[tokio::test]
async fn a_running_job_shows_what_it_waits_for() {
    let (_w, state, _, running) = world().await;
    let (code, _, html) = call(&state, "view", json!({"id": running})).await;
    assert_eq!(code, 200);
    let job = &embedded(&html)["job"];
    assert_eq!(job["status"], "Running");
    let why = job["wait"]["why"].as_str().expect("a wait");
    assert!(why.contains("waits for"), "{why}");
    time::OffsetDateTime::parse(
        job["wait"]["since"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
}

#[tokio::test]
async fn an_unknown_or_malformed_job_is_answered_as_status_answers_it() {
    let (_w, state, _, _) = world().await;
    for id in ["j-0000000000000000000000", "not a job", ""] {
        let (code, headers, body) = call(&state, "view", json!({"id": id})).await;
        let (s_code, _, s_body) = call(&state, "status", json!({"id": id})).await;
        assert_eq!(code, 404, "{id}: {body}");
        assert_eq!((code, &body), (s_code, &s_body), "{id}");
        assert_eq!(headers["Content-Type"], "application/problem+json");
    }
}

#[tokio::test]
async fn the_list_shows_every_job_status_shows() {
    let (_w, state, failed, running) = world().await;
    let (code, headers, html) = call(&state, "view-list", json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(headers["Content-Type"], "text/html; charset=utf-8");
    let data = embedded(&html);
    assert_eq!(data["kind"], "list");
    let jobs = data["jobs"].as_array().unwrap();
    let row = |id: &str| jobs.iter().find(|j| j["id"] == id).cloned().unwrap();
    assert_eq!(jobs.len(), 2);
    for job in [&failed, &running] {
        let (code, _, status) = call(&state, "status", json!({"id": job})).await;
        assert_eq!(code, 200);
        let status: Value = serde_json::from_str(&status).unwrap();
        assert_eq!(row(job), status, "listed as status answers it");
    }
    assert_eq!(row(&failed)["status"], "Compensated");
    assert!(row(&running)["wait"]["why"].as_str().is_some());
    assert_eq!(jobs[0]["id"], running.as_str(), "newest first: {jobs:#?}");
}

async fn get(state: &AppState, path: &str) -> (StatusCode, String, String) {
    let res = app(state.clone())
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, ct, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn browsers_get_the_pages_and_status_through_the_front_door() {
    let (_w, state, failed, _) = world().await;
    let (code, ct, html) = get(&state, &format!("/api/clusters/{failed}/view")).await;
    assert_eq!(
        (code, ct.as_str()),
        (StatusCode::OK, "text/html; charset=utf-8")
    );
    assert_eq!(embedded(&html)["job"]["id"], failed.as_str());
    let (code, ct, body) = get(&state, &format!("/api/clusters/{failed}")).await;
    assert_eq!((code, ct.as_str()), (StatusCode::OK, "application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["id"],
        failed.as_str()
    );
    let (code, ct, _) = get(&state, "/api/view").await;
    assert_eq!(
        (code, ct.as_str()),
        (StatusCode::OK, "text/html; charset=utf-8")
    );
    for path in [
        "/api/clusters/j-0000000000000000000000/view".to_string(),
        "/api/nothing/here".into(),
        format!("/api/clusters/{failed}/pools/general"),
    ] {
        let (code, ct, _) = get(&state, &path).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(ct, "application/problem+json", "{path}");
    }
}
