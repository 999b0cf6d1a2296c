//! The progress pages: `GET api/clusters/{id}/view` (function `view`), a
//! job as a timeline, and `GET api/view` (function `view-list`), the jobs.
//!
//! Both are one self-contained HTML file ([`PAGE`]: no build step, no CDN)
//! with the data it starts from embedded as JSON. The job page then polls
//! the job's `status` URL (`api/clusters/{id}`) while the job runs and stops
//! when it ended. Every job a page shows was read through
//! [`super::http::status`], the `status` function itself: a job `status`
//! refuses is neither shown nor listed.

use super::envelope::{HttpRequest, HttpResponse};
use super::problem::{Kind, Problem};
use super::AppState;
use serde_json::{json, Value};

/// The page (HTML, CSS and script in one file).
const PAGE: &str = include_str!("progress.html");
/// Where [`PAGE`] takes its data.
const DATA_SLOT: &str = "/*DATA*/null";

/// `view`: one job as a timeline; whatever `status` answers otherwise
/// (404 for an unknown job) it answers too.
pub async fn job(state: &AppState, req: &HttpRequest) -> Result<HttpResponse, Problem> {
    let status = super::http::status(state, req).await?;
    let saga: Value = serde_json::from_str(&status.body)
        .map_err(|_| Problem::new(Kind::Internal, "status answered no JSON"))?;
    Ok(HttpResponse::html(
        200,
        page(&json!({"kind": "job", "job": saga})),
    ))
}

/// `view-list`: every job `status` shows to this caller (as `status`
/// answers it), newest first.
pub async fn list(state: &AppState, req: &HttpRequest) -> Result<HttpResponse, Problem> {
    let docs = state.engine.store.list().await.map_err(|e| {
        tracing::error!(error = %e, "listing the jobs failed");
        Problem::new(Kind::Internal, "the job store failed; try again")
    })?;
    let mut jobs = Vec::with_capacity(docs.len());
    for doc in docs {
        let one = HttpRequest {
            method: "GET".into(),
            headers: req.headers.clone(),
            params: serde_json::Map::from_iter([("id".to_string(), json!(doc.id))]),
            body: None,
        };
        match super::http::status(state, &one).await {
            Ok(res) => {
                if let Ok(saga) = serde_json::from_str::<Value>(&res.body) {
                    jobs.push(saga);
                }
            }
            // Not this caller's to see (or not a job): not listed.
            Err(p) if p.kind.status() < 500 => {}
            Err(p) => return Err(p),
        }
    }
    let created = |j: &Value| {
        j["createdAt"].as_str().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    jobs.sort_by(|a, b| {
        created(b)
            .cmp(&created(a))
            .then_with(|| a["id"].as_str().cmp(&b["id"].as_str()))
    });
    Ok(HttpResponse::html(
        200,
        page(&json!({"kind": "list", "jobs": jobs})),
    ))
}

/// [`PAGE`] with `data` in its slot. The JSON is made safe inside a
/// `<script>` element: `<`, `>` and `&` are written as `\u` escapes (they
/// only occur inside JSON strings, where the escapes mean the same).
fn page(data: &Value) -> String {
    let json = data
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    PAGE.replacen(DATA_SLOT, &json, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_one_data_slot_and_loads_nothing_from_elsewhere() {
        assert_eq!(PAGE.matches(DATA_SLOT).count(), 1);
        for outside in ["http://", "https://", "<script src", "<link", "@import"] {
            assert!(!PAGE.contains(outside), "{outside}");
        }
    }

    #[test]
    fn embedded_data_cannot_close_the_script() {
        let html = page(&json!({"x": "</script><script>alert(1)</script>&"}));
        assert!(!html.contains("</script><script>alert(1)"));
        assert!(html.contains("\\u003c/script\\u003e"));
        let start = html.find("const DATA = ").unwrap() + "const DATA = ".len();
        let end = start + html[start..].find(";\n").unwrap();
        let back: Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(back["x"], "</script><script>alert(1)</script>&");
    }
}
