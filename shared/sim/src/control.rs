//! Unauthenticated control endpoints under `/_sim/`: inventory, fault rules, request log.

use crate::util::{empty, json_response, tags_match, tags_of, Ctx};
use crate::{lock, FaultRule, InventoryItem, Sim};
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::json;

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let mut r = json_response(
        status,
        &json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail}),
    );
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// Handles a `/_sim/...` request.
pub(crate) fn handle(sim: &Sim, ctx: &Ctx) -> Response {
    let what = ctx.seg_lc(1);
    match (ctx.method.clone(), what.as_str(), ctx.segs.len()) {
        (Method::GET, "inventory", 2) => {
            let name = ctx.q("tagName");
            let value = ctx.q("tagValue");
            let items = match name {
                Some(n) => inventory_filtered(sim, n, value),
                None => inventory(sim, None),
            };
            json_response(StatusCode::OK, &json!({"resources": items}))
        }
        (Method::POST, "faults", 2) => match serde_json::from_slice::<FaultRule>(&ctx.body) {
            Ok(rule) => {
                if let Some(p) = rule.probability {
                    if !(0.0..=1.0).contains(&p) {
                        return problem(
                            StatusCode::BAD_REQUEST,
                            "Invalid fault rule",
                            "probability must be between 0 and 1",
                        );
                    }
                }
                if !(100..=599).contains(&rule.status) {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        "Invalid fault rule",
                        "status must be an HTTP status code (100-599)",
                    );
                }
                sim.add_fault(rule.clone());
                json_response(StatusCode::CREATED, &json!(rule))
            }
            Err(e) => problem(
                StatusCode::BAD_REQUEST,
                "Invalid fault rule",
                &e.to_string(),
            ),
        },
        (Method::GET, "faults", 2) => {
            let rules = lock(&sim.inner.faults).clone();
            let fired = sim.faults_fired();
            let servicebus = sim.servicebus_faults_fired();
            json_response(
                StatusCode::OK,
                &json!({"faults": rules, "fired": fired, "servicebus": servicebus}),
            )
        }
        (Method::DELETE, "faults", 2) => {
            sim.clear_faults();
            empty(StatusCode::NO_CONTENT)
        }
        (Method::GET, "requests", 2) => {
            json_response(StatusCode::OK, &json!({"requests": sim.requests()}))
        }
        (Method::DELETE, "requests", 2) => {
            lock(&sim.inner.requests).clear();
            empty(StatusCode::NO_CONTENT)
        }
        _ => problem(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("No control endpoint {} {}", ctx.method, ctx.path),
        ),
    }
}

fn inventory_filtered(sim: &Sim, name: &str, value: Option<&str>) -> Vec<InventoryItem> {
    inventory(sim, None)
        .into_iter()
        .filter(|i| tags_match(&i.tags, name, value))
        .collect()
}

/// Everything that exists, optionally filtered by one tag (name case-insensitive).
pub(crate) fn inventory(sim: &Sim, tag: Option<(&str, &str)>) -> Vec<InventoryItem> {
    let changed = {
        let mut st = lock(&sim.inner.state);
        crate::arm::settle(&mut st, sim.lro_ms() as i64)
    };
    if changed {
        sim.persist_now();
    }
    let st = lock(&sim.inner.state);
    let mut out = Vec::new();
    for r in st.resources.values() {
        out.push(InventoryItem {
            id: r.id.clone(),
            resource_type: r.rtype.clone(),
            name: r.name.clone(),
            tags: tags_of(&r.body),
            provisioning_state: Some(r.state.clone()),
        });
    }
    for s in st.secrets.values().filter(|s| s.deleted.is_none()) {
        out.push(InventoryItem {
            id: format!("{}/secrets/{}", s.vault, s.name),
            resource_type: "Microsoft.KeyVault/vaults/secrets".into(),
            name: s.name.clone(),
            tags: s
                .versions
                .last()
                .map(|v| v.tags.clone())
                .unwrap_or_default(),
            provisioning_state: None,
        });
    }
    for (ckey, c) in st.containers.iter() {
        let account = ckey.split('/').next().unwrap_or("");
        for b in c.blobs.values() {
            out.push(InventoryItem {
                id: format!("{}/blob/{account}/{}/{}", b.base, c.name, b.name),
                resource_type: "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
                    .into(),
                name: b.name.clone(),
                // Metadata names cannot hold '-': expose `a_b` as tag `a-b` too.
                tags: b
                    .metadata
                    .iter()
                    .flat_map(|(k, v)| [(k.clone(), v.clone()), (k.replace('_', "-"), v.clone())])
                    .collect(),
                provisioning_state: None,
            });
        }
    }
    if let Some((n, v)) = tag {
        out.retain(|i| tags_match(&i.tags, n, Some(v)));
    }
    out
}
