//! Measures how long the simulator takes to answer a resource PUT when it is empty and
//! when it holds thousands of resources, with state persisted to a data directory.
//!
//! `cargo run --release -p flotilla-sim --example put_latency -- [resources] [samples]`
//! (defaults 5000 and 200). Requests go through the in-process router, so the figures are
//! the simulator's own time (no TLS, no network). Prints one JSON line.

use axum::body::Body;
use flotilla_sim::{Sim, SimConfig};
use http::Request;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const NET: &str = "2024-05-01";

async fn call(router: &axum::Router, req: Request<Body>) -> (u16, Value) {
    let resp = router.clone().oneshot(req).await.expect("router answers");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn put(router: &axum::Router, token: &str, path: &str, version: &str, body: &Value) -> u16 {
    let req = Request::put(format!("https://sim.local{path}?api-version={version}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request builds");
    call(router, req).await.0
}

/// PUTs `n` new NSGs named `{prefix}{i}` and returns each PUT's latency.
async fn timed_puts(
    router: &axum::Router,
    token: &str,
    rg: &str,
    prefix: &str,
    n: usize,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let path = format!("{rg}/providers/Microsoft.Network/networkSecurityGroups/{prefix}{i}");
        let started = Instant::now();
        let status = put(
            router,
            token,
            &path,
            NET,
            &json!({"location": "westeurope", "tags": {"bench": "1"}}),
        )
        .await;
        out.push(started.elapsed());
        assert_eq!(status, 201, "PUT {path}");
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(mut d: Vec<Duration>) -> Value {
    d.sort();
    json!({"p50_ms": percentile(&d, 0.5), "p95_ms": percentile(&d, 0.95)})
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let resources: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5000);
    let samples: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let sim = Sim::new(SimConfig {
        data_dir: Some(dir.path().to_path_buf()),
        lro: Duration::ZERO,
        throttle: None,
        ..SimConfig::default()
    })?;
    let router = sim.router();
    let info = sim.info("https://sim.local");
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
        info.client_id, info.client_secret
    );
    let req = Request::post(format!(
        "https://sim.local/{}/oauth2/v2.0/token",
        info.tenant_id
    ))
    .header("content-type", "application/x-www-form-urlencoded")
    .body(Body::from(form))?;
    let (_, tok) = call(&router, req).await;
    let token = tok["access_token"].as_str().ok_or("no token")?.to_string();
    let rg = format!(
        "/subscriptions/{}/resourceGroups/bench",
        info.subscription_id
    );
    assert_eq!(
        put(
            &router,
            &token,
            &rg,
            "2021-04-01",
            &json!({"location": "westeurope"})
        )
        .await,
        201
    );

    let empty = timed_puts(&router, &token, &rg, "empty", samples).await;
    let started = Instant::now();
    timed_puts(&router, &token, &rg, "fill", resources).await;
    let fill_s = started.elapsed().as_secs_f64();
    let full = timed_puts(&router, &token, &rg, "full", samples).await;
    let db = std::fs::metadata(dir.path().join("state.db"))?.len();
    println!(
        "{}",
        json!({
            "resources": resources + 2 * samples + 1,
            "samples": samples,
            "empty": summary(empty),
            "full": summary(full),
            "fill_seconds": fill_s,
            "state_db_bytes": db,
        })
    );
    Ok(())
}
