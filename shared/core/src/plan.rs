//! `plan`: the exact, ordered list of what a job would do, or of what a
//! `delete` would remove, computed by the same step code that runs the job
//! (`steps::plan`). Nothing is sent to Azure; secrets show as `<redacted>`.

use crate::engine::Engine;
use crate::names;
use crate::saga::{ResourceKind, Saga, StepName};
use crate::spec::ClusterSpec;
use crate::steps::{self, Op, SecretSource};
use flotilla_azure::models::api;
use serde::Serialize;
use serde_json::{json, Value};

/// Shown instead of any secret value.
pub const REDACTED: &str = "<redacted>";

/// What a subnet PUT changes: its `networkSecurityGroup` (the other
/// properties are sent as read just before).
fn nsg_body(nsg: Option<&str>) -> Value {
    json!({"properties": {"networkSecurityGroup": nsg.map(|id| json!({"id": id}))}})
}

/// One operation as it would be sent.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedOp {
    /// `arm`, `secret`, `blob` or `check` (a read `join` repeats).
    pub kind: &'static str,
    /// The HTTP method.
    pub method: &'static str,
    /// ARM id (with a sub-path for actions and checks), secret id or blob URL.
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// How it is undone; `None` for reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<Box<PlannedOp>>,
}

/// A step and its operations, in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedStep {
    pub step: StepName,
    pub operations: Vec<PlannedOp>,
}

/// What `up` / `submit` would do for a spec.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// The job id the names derive from (a submission with the same
    /// idempotency key gets exactly this id; otherwise its own suffix).
    pub job: String,
    pub steps: Vec<PlannedStep>,
    /// What the job uses but neither creates nor deletes: an existing VNet
    /// and its two subnets (their NSG changes only with `attachNsgs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub existing: Vec<String>,
}

fn arm(method: &'static str, target: String, api_version: &str, body: Option<Value>) -> PlannedOp {
    PlannedOp {
        kind: "arm",
        method,
        target,
        api_version: Some(api_version.into()),
        body,
        undo: None,
    }
}

impl Engine {
    /// The plan of a job for `spec`, named as a submission with `key` would be.
    pub fn plan(&self, spec: ClusterSpec, key: Option<&str>) -> Plan {
        let job = names::job_id_for_key(&spec, key.unwrap_or("plan"));
        let saga = Saga::new(job.clone(), spec, self.clock.now());
        let steps = StepName::ALL
            .into_iter()
            .map(|step| PlannedStep {
                step,
                operations: steps::plan(step, &saga, &self.env)
                    .iter()
                    .flat_map(|op| self.planned(&saga, op))
                    .collect(),
            })
            .collect();
        let existing = steps::existing_vnet(&saga)
            .map(|(vnet, e)| {
                vec![
                    vnet.to_string(),
                    vnet.child("subnets", &e.control_plane_subnet).to_string(),
                    vnet.child("subnets", &e.worker_subnet).to_string(),
                ]
            })
            .unwrap_or_default();
        Plan {
            job,
            steps,
            existing,
        }
    }

    /// The requests one step operation makes, with its undo.
    fn planned(&self, saga: &Saga, op: &Op) -> Vec<PlannedOp> {
        match op {
            Op::Arm {
                id,
                api_version,
                body,
            } => vec![PlannedOp {
                undo: Some(Box::new(arm("DELETE", id.to_string(), api_version, None))),
                ..arm("PUT", id.to_string(), api_version, Some(body.clone()))
            }],
            Op::ScaleSet { id, body } => {
                let mut body = body.clone();
                let sp = (saga.spec.identity == crate::spec::IdentityMode::ServicePrincipal)
                    .then_some(REDACTED);
                let node = names::node_identity(&saga.id);
                let object_id = saga
                    .principals
                    .get(&node)
                    .cloned()
                    .unwrap_or_else(|| format!("<properties.principalId of {node}>"));
                let credential = match saga.spec.staging.access {
                    crate::spec::StagingAccess::AccountKey => {
                        steps::node::StagingCredential::AccountKey(REDACTED)
                    }
                    crate::spec::StagingAccess::Identity => {
                        steps::node::StagingCredential::NodeIdentity {
                            object_id: &object_id,
                        }
                    }
                };
                steps::node::seal(&mut body, credential, sp);
                vec![PlannedOp {
                    undo: Some(Box::new(arm("DELETE", id.to_string(), api::COMPUTE, None))),
                    ..arm("PUT", id.to_string(), api::COMPUTE, Some(body))
                }]
            }
            Op::RoleAssignment {
                id,
                role,
                principal,
                condition,
            } => {
                let principal_id = match principal {
                    steps::rbac::Principal::ServicePrincipal(oid) => oid.clone(),
                    steps::rbac::Principal::ScaleSet(vmss) => saga
                        .principals
                        .get(&principal.key())
                        .cloned()
                        .unwrap_or_else(|| format!("<identity.principalId of {}>", vmss.name())),
                    steps::rbac::Principal::UserAssigned(uai) => saga
                        .principals
                        .get(&principal.key())
                        .cloned()
                        .unwrap_or_else(|| format!("<properties.principalId of {}>", uai.name())),
                };
                let body = steps::rbac::body(
                    &self.env.subscription_id,
                    role,
                    &principal_id,
                    condition.as_deref(),
                );
                vec![PlannedOp {
                    undo: Some(Box::new(arm(
                        "DELETE",
                        id.to_string(),
                        api::AUTHORIZATION,
                        None,
                    ))),
                    ..arm("PUT", id.to_string(), api::AUTHORIZATION, Some(body))
                }]
            }
            Op::Secret { name, source } => {
                let target = self.azure.secrets.secret_id(name);
                let secret = PlannedOp {
                    kind: "secret",
                    method: "PUT",
                    target: target.clone(),
                    api_version: None,
                    body: Some(json!({
                        "value": REDACTED,
                        "tags": names::tags(&saga.id, &saga.spec),
                    })),
                    undo: Some(Box::new(PlannedOp {
                        kind: "secret",
                        method: "DELETE",
                        target,
                        api_version: None,
                        body: None,
                        undo: None,
                    })),
                };
                match source {
                    SecretSource::StorageKey => vec![
                        arm(
                            "POST",
                            format!("{}/listKeys", self.env.staging_account_id),
                            api::STORAGE,
                            None,
                        ),
                        secret,
                    ],
                    SecretSource::ServicePrincipal | SecretSource::Outputs => vec![secret],
                    // A placeholder the first master overwrites, written
                    // only where the read finds no secret.
                    SecretSource::Node => vec![
                        PlannedOp {
                            kind: "secret",
                            method: "GET",
                            target: secret.target.clone(),
                            api_version: None,
                            body: None,
                            undo: None,
                        },
                        PlannedOp {
                            body: Some(serde_json::json!({
                                "value": names::PENDING_SECRET,
                                "tags": names::tags(&saga.id, &saga.spec),
                            })),
                            ..secret
                        },
                    ],
                }
            }
            Op::Blob {
                name,
                content,
                content_type,
            } => {
                let target = self.azure.blobs.blob_url(name);
                let text = String::from_utf8(content.clone())
                    .unwrap_or_else(|_| format!("<{} bytes>", content.len()));
                vec![PlannedOp {
                    kind: "blob",
                    method: "PUT",
                    target: target.clone(),
                    api_version: None,
                    body: Some(json!({"contentType": content_type, "content": text})),
                    undo: Some(Box::new(PlannedOp {
                        kind: "blob",
                        method: "DELETE",
                        target,
                        api_version: None,
                        body: None,
                        undo: None,
                    })),
                }]
            }
            Op::AttachNsg { subnet, nsg } => vec![
                PlannedOp {
                    kind: "check",
                    ..arm("GET", subnet.to_string(), api::NETWORK, None)
                },
                PlannedOp {
                    undo: Some(Box::new(arm(
                        "PUT",
                        subnet.to_string(),
                        api::NETWORK,
                        Some(nsg_body(Some("<the NSG it had, or none>"))),
                    ))),
                    ..arm(
                        "PUT",
                        subnet.to_string(),
                        api::NETWORK,
                        Some(nsg_body(Some(&nsg.to_string()))),
                    )
                },
            ],
            // The kubeconfig and the API server's nodes; the instance views
            // only while a node is not Ready.
            Op::AwaitNodes { scale_sets } => [
                PlannedOp {
                    kind: "check",
                    method: "GET",
                    target: self
                        .azure
                        .secrets
                        .secret_id(&names::kubeconfig_secret(&saga.id)),
                    api_version: None,
                    body: None,
                    undo: None,
                },
                PlannedOp {
                    kind: "check",
                    method: "GET",
                    target: format!(
                        "https://{}:{}/api/v1/nodes",
                        names::api_fqdn(&saga.id, &saga.spec.location),
                        names::API_PORT
                    ),
                    api_version: None,
                    body: None,
                    undo: None,
                },
            ]
            .into_iter()
            .chain(scale_sets.iter().map(|(id, _)| PlannedOp {
                kind: "check",
                ..arm("GET", format!("{id}/instanceView"), api::COMPUTE, None)
            }))
            .collect(),
        }
    }
}

/// What `delete` would remove now: every resource that may exist, in
/// the order the undo chain deletes them (newest first).
pub fn removal(saga: &Saga) -> Vec<PlannedOp> {
    saga.live_resources()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|r| match &r.kind {
            ResourceKind::Arm { api_version } => arm("DELETE", r.id.clone(), api_version, None),
            ResourceKind::Secret { .. } => PlannedOp {
                kind: "secret",
                method: "DELETE",
                target: r.id.clone(),
                api_version: None,
                body: None,
                undo: None,
            },
            ResourceKind::Blob { .. } => PlannedOp {
                kind: "blob",
                method: "DELETE",
                target: r.id.clone(),
                api_version: None,
                body: None,
                undo: None,
            },
            ResourceKind::SubnetNsg { previous } => arm(
                "PUT",
                r.id.clone(),
                api::NETWORK,
                Some(nsg_body(previous.as_deref())),
            ),
        })
        .collect()
}
