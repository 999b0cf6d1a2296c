//! What the simulated scale set instances became: one record per instance
//! (its hostname and its init extension's state and message), and, per
//! cluster, a minimal Kubernetes API server that the nodes register with.
//!
//! Served under the simulator's base URL:
//! - `GET /kube/{apiHost}/api/v1/nodes` (bearer token of the cluster's admin
//!   kubeconfig): a `NodeList` with each node's labels and `Ready` condition;
//!   `POST` the same path with a `Node` registers one (what a kubelet does;
//!   the node stubs call it from `kubeadm init`/`join`). `{apiHost}` is the
//!   load balancer's DNS name, so `/kube/{apiHost}` stands for
//!   `https://{apiHost}:6443`;
//! - the init extension's status and message in each scale set instance's
//!   instance view (`…/virtualMachines/{instanceId}/instanceView`).
//!
//! The records are kept in `kube.json` beside the simulator's state when it
//! has a data directory, so a restarted simulator still knows its clusters.

use crate::util::{json_response, now_ms, random_token, Ctx};
use crate::{lock, Sim};
use axum::response::Response;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

const FILE: &str = "kube.json";

/// Where an instance's init extension is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    Succeeded,
    Failed,
}

/// One scale set instance.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Instance {
    pub computer_name: String,
    pub phase: Phase,
    /// The extension's status message (CustomScript style, with the output's tail).
    pub message: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Node {
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    pub created_ms: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Cluster {
    /// The admin kubeconfig's bearer token (a secret: never logged).
    pub token: String,
    pub nodes: BTreeMap<String, Node>,
}

#[derive(Serialize, Deserialize, Default, Debug)]
pub(crate) struct Data {
    /// Key: API host, lowercase.
    pub clusters: BTreeMap<String, Cluster>,
    /// Key: scale set id, lowercase; index = instance id.
    pub instances: BTreeMap<String, Vec<Instance>>,
}

/// The records, behind one lock.
#[derive(Default)]
pub(crate) struct Registry {
    pub data: Mutex<Data>,
}

impl Registry {
    /// Loads `kube.json` from the simulator's data directory, if any.
    pub fn load(dir: Option<&std::path::Path>) -> Registry {
        let data = dir
            .and_then(|d| std::fs::read(d.join(FILE)).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Registry {
            data: Mutex::new(data),
        }
    }
}

/// Writes the records next to the simulator's state (when it has a data dir).
pub(crate) fn persist(sim: &Sim) {
    let Some(dir) = sim.data_dir() else { return };
    let json = match serde_json::to_vec(&*lock(&sim.inner.kube.data)) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise the simulated clusters");
            return;
        }
    };
    let tmp = dir.join(format!("{FILE}.tmp"));
    if let Err(e) = std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, dir.join(FILE))) {
        tracing::error!(error = %e, "cannot write the simulated clusters");
    }
}

/// The cluster behind `host`, created with a fresh admin token if new; returns the token.
pub(crate) fn ensure_cluster(sim: &Sim, host: &str) -> String {
    let token = {
        let mut data = lock(&sim.inner.kube.data);
        data.clusters
            .entry(host.to_ascii_lowercase())
            .or_insert_with(|| Cluster {
                token: random_token(40),
                nodes: BTreeMap::new(),
            })
            .token
            .clone()
    };
    persist(sim);
    token
}

/// Registers (or re-registers) a Ready node.
pub(crate) fn register(sim: &Sim, host: &str, name: &str, labels: BTreeMap<String, String>) {
    {
        let mut data = lock(&sim.inner.kube.data);
        if let Some(c) = data.clusters.get_mut(&host.to_ascii_lowercase()) {
            c.nodes.insert(
                name.to_ascii_lowercase(),
                Node {
                    labels,
                    ready: true,
                    created_ms: now_ms(),
                },
            );
        }
    }
    persist(sim);
}

fn kube_status(status: StatusCode, reason: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": message, "reason": reason, "code": status.as_u16()}),
    )
}

/// Handles `/kube/{host}/api/v1/nodes`.
pub(crate) fn handle(sim: &Sim, ctx: &Ctx) -> Response {
    let host = ctx.seg_lc(1);
    let rest: Vec<String> = ctx.segs.iter().skip(2).cloned().collect();
    if rest != ["api", "v1", "nodes"] {
        return kube_status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "the server could not find the requested resource ({})",
                ctx.path
            ),
        );
    }
    let token = ctx
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    let mut data = lock(&sim.inner.kube.data);
    let Some(cluster) = data.clusters.get_mut(&host) else {
        // No such API server: what a client sees is no answer at all.
        return kube_status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            &format!("no API server answers at {host}"),
        );
    };
    if token.is_empty() || token != cluster.token {
        return kube_status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    match ctx.method {
        Method::GET => {
            let items: Vec<Value> = cluster
                .nodes
                .iter()
                .map(|(name, n)| {
                    json!({
                        "metadata": {"name": name, "labels": n.labels,
                                     "creationTimestamp": crate::util::rfc3339(n.created_ms)},
                        "status": {"conditions": [{"type": "Ready",
                            "status": if n.ready { "True" } else { "False" },
                            "reason": if n.ready { "KubeletReady" } else { "KubeletNotReady" }}]}
                    })
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": "NodeList", "apiVersion": "v1", "items": items}),
            )
        }
        Method::POST => {
            let body: Value = serde_json::from_slice(&ctx.body).unwrap_or_default();
            let Some(name) = body.pointer("/metadata/name").and_then(Value::as_str) else {
                return kube_status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "metadata.name is required",
                );
            };
            let labels: BTreeMap<String, String> = body
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            cluster.nodes.insert(
                name.to_ascii_lowercase(),
                Node {
                    labels,
                    ready: true,
                    created_ms: now_ms(),
                },
            );
            drop(data);
            persist(sim);
            json_response(StatusCode::CREATED, &body)
        }
        _ => kube_status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only GET and POST are served",
        ),
    }
}

/// Puts what instance `index` of the scale set `key` reported (its init
/// extension's status and message, once it ran) into its instance view.
pub(crate) fn overlay_instance_view(sim: &Sim, key: &str, index: u64, view: &mut Value) {
    let Some(record) = lock(&sim.inner.kube.data)
        .instances
        .get(key)
        .and_then(|l| l.get(index as usize))
        .cloned()
    else {
        return;
    };
    let status = match record.phase {
        Phase::Running => json!({"code": "ProvisioningState/creating", "level": "Info",
            "displayStatus": "Provisioning in progress", "message": record.message}),
        Phase::Succeeded => json!({"code": "ProvisioningState/succeeded", "level": "Info",
            "displayStatus": "Provisioning succeeded", "message": record.message}),
        Phase::Failed => json!({"code": "ProvisioningState/failed/1", "level": "Error",
            "displayStatus": "Provisioning failed", "message": record.message}),
    };
    if let Some(first) = view
        .get_mut("extensions")
        .and_then(Value::as_array_mut)
        .and_then(|a| a.first_mut())
    {
        first["statuses"] = json!([status]);
    }
    view["computerName"] = json!(record.computer_name);
}

/// A scale set instance's hostname suffix: the instance id in base 36, 6 digits.
pub(crate) fn base36(mut i: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(i % 36) as usize];
        i /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}
