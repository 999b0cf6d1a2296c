//! A front door for browsers: `GET /api/{route}` answered directly, as the
//! Functions host would answer it, for the read-only HTTP functions
//! (`list`, `status`, `view`, `view-list`).
//!
//! On Azure the host never sends these (it POSTs every invocation to
//! `/{function}`, and `flotilla serve` listens on 127.0.0.1 only); they are
//! what lets a browser open the progress page of a local `flotilla serve`,
//! `status --web` or `up --open`. The request becomes the same invocation
//! the host would send (method, headers, route parameters), so it runs the
//! same function code, authorization included.

use super::envelope::Invocation;
use super::problem::{Kind, Problem};
use super::{AppState, Function, Trigger, FUNCTIONS};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// `GET /api/{route}`: the GET function whose route matches, or 404.
pub async fn get(
    State(state): State<AppState>,
    Path(route): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((f, params)) = route_match(&route) else {
        return answer(
            &Problem::new(
                Kind::NotFound,
                format!("no page at /api/{}", super::truncate(&route, 80)),
            )
            .response()
            .to_value(),
        );
    };
    let mut names: Map<String, Value> = Map::new();
    for (name, value) in &headers {
        if let Ok(v) = value.to_str() {
            let entry = names
                .entry(name.as_str().to_string())
                .or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.push(json!(v));
            }
        }
    }
    let inv = Invocation {
        data: Map::from_iter([(
            "req".to_string(),
            json!({
                "Url": format!("http://127.0.0.1/api/{route}"),
                "Method": "GET",
                "Query": {},
                "Headers": names,
                "Params": params,
                "Body": null,
            }),
        )]),
        metadata: json!({}),
    };
    let reply = super::http::invoke(&state, f, &inv).await;
    answer(reply.outputs.get("res").unwrap_or(&Value::Null))
}

/// The GET function whose route template matches `route`, and its
/// parameters (`{name}` matches one non-empty segment).
fn route_match(route: &str) -> Option<(&'static Function, Map<String, Value>)> {
    let segments: Vec<&str> = route.trim_end_matches('/').split('/').collect();
    FUNCTIONS.iter().find_map(|f| {
        let Trigger::Http {
            method: "GET",
            route: template,
        } = f.trigger
        else {
            return None;
        };
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            return None;
        }
        let mut params = Map::new();
        for (part, seg) in parts.iter().zip(&segments) {
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if !seg.is_empty() => {
                    params.insert(name.to_string(), json!(seg));
                }
                None if part == seg => {}
                _ => return None,
            }
        }
        Some((f, params))
    })
}

/// An HTTP answer from the `res` output (`StatusCode`, `Headers`, `Body`).
fn answer(res: &Value) -> Response {
    let status = res["StatusCode"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| {
            res["StatusCode"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
        })
        .and_then(|n| StatusCode::from_u16(n).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = res["Body"].as_str().unwrap_or_default().to_string();
    let mut out = (status, body).into_response();
    if let Some(headers) = res["Headers"].as_object() {
        for (name, value) in headers {
            if let (Ok(n), Some(Ok(v))) = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                out.headers_mut().insert(n, v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_get_functions_only() {
        let (f, p) = route_match("clusters/j-1/view").unwrap();
        assert_eq!((f.name, p["id"].as_str()), ("view", Some("j-1")));
        let (f, p) = route_match("clusters/j-1").unwrap();
        assert_eq!((f.name, p["id"].as_str()), ("status", Some("j-1")));
        assert_eq!(route_match("view").unwrap().0.name, "view-list");
        // `plan` is a POST; `pools/{pool}` a PATCH: never through here.
        assert_eq!(route_match("clusters/plan").unwrap().0.name, "status");
        assert!(route_match("clusters/j-1/pools/general").is_none());
        // `GET api/clusters` is `list` (`submit` is its POST).
        assert_eq!(route_match("clusters").unwrap().0.name, "list");
        assert!(route_match("clusters//view").is_none());
    }
}
