//! In-process tests of the listener's per-request limits ([`guarded`]) and of
//! reading them from settings; the socket-level ones (header timeout, body
//! timeout, connection limit) are in `functions/tests/serve_limits.rs`.

use super::*;
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_millis(200),
        max_connections: 4,
    }
}

fn test_app() -> Router {
    Router::new()
        .route(
            "/fast",
            axum::routing::post(|body: Bytes| async move { body }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
}

async fn problem_of(res: Response) -> (StatusCode, String, Value) {
    let status = res.status();
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        ct,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_handler_past_the_request_timeout_is_answered_503() {
    let started = std::time::Instant::now();
    let res = guarded(test_app(), limits())
        .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, ct, p) = problem_of(res).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ct, "application/problem+json");
    assert_eq!(p["type"], "urn:flotilla:problem:handler-timeout");
    assert_eq!(p["status"], 503);
}

#[tokio::test]
async fn the_body_passes_through_and_a_huge_one_is_413() {
    let res = guarded(test_app(), limits())
        .oneshot(Request::post("/fast").body(Body::from("hello")).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = axum::body::to_bytes(res.into_body(), 100).await.unwrap();
    assert_eq!(&body[..], b"hello");

    let big = vec![b'x'; MAX_REQUEST + 1];
    let res = guarded(test_app(), limits())
        .oneshot(Request::post("/fast").body(Body::from(big)).unwrap())
        .await
        .unwrap();
    assert_eq!(
        res.headers().get(header::CONNECTION).unwrap(),
        "close",
        "the unread rest of the body ends the connection"
    );
    let (status, ct, p) = problem_of(res).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(ct, "application/problem+json");
    assert_eq!(p["type"], "urn:flotilla:problem:payload-too-large");
}

#[test]
fn limits_come_from_settings_and_bad_values_name_the_setting() {
    // One test touches these variables, so no other test races on them.
    let names = [
        "FLOTILLA_SERVE_HEADER_TIMEOUT",
        "FLOTILLA_SERVE_BODY_TIMEOUT",
        "FLOTILLA_SERVE_REQUEST_TIMEOUT",
        "FLOTILLA_SERVE_MAX_CONNECTIONS",
    ];
    let clear = || {
        for n in names {
            std::env::remove_var(n);
        }
    };
    let set = |n: &str, v: &str| std::env::set_var(n, v);
    clear();
    assert_eq!(Limits::from_settings().unwrap(), Limits::default());
    set("FLOTILLA_SERVE_HEADER_TIMEOUT", "1.5");
    set("FLOTILLA_SERVE_BODY_TIMEOUT", "2");
    set("FLOTILLA_SERVE_REQUEST_TIMEOUT", "60");
    set("FLOTILLA_SERVE_MAX_CONNECTIONS", "8");
    assert_eq!(
        Limits::from_settings().unwrap(),
        Limits {
            header_timeout: Duration::from_millis(1500),
            body_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(60),
            max_connections: 8,
        }
    );
    for (name, bad) in [
        ("FLOTILLA_SERVE_HEADER_TIMEOUT", "0"),
        ("FLOTILLA_SERVE_BODY_TIMEOUT", "soon"),
        ("FLOTILLA_SERVE_REQUEST_TIMEOUT", "-1"),
        ("FLOTILLA_SERVE_REQUEST_TIMEOUT", "NaN"),
        ("FLOTILLA_SERVE_MAX_CONNECTIONS", "0"),
        ("FLOTILLA_SERVE_MAX_CONNECTIONS", "1.5"),
    ] {
        clear();
        set(name, bad);
        let e = Limits::from_settings().unwrap_err();
        assert_eq!(e.exit_code(), 2, "a setting's error is the user's: {e}");
        let e = e.to_string();
        assert!(e.contains(name) && e.contains(bad), "{e}");
    }
    clear();
}
