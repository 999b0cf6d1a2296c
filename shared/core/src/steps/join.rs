//! `join`: takes `step.succeeded{workers}`; re-checks, on a schedule, until
//! every expected node (the master size plus each pool's count) is
//! registered with the cluster's API server and `Ready`.
//!
//! Each check reads the admin kubeconfig the first master published
//! (`{job}-kubeconfig`) and asks that API server, through the load balancer's
//! name, for its nodes. Nodes are counted by the labels the init scripts give
//! them (`flotilla.io/role`, `flotilla.io/pool`). When every expected node is
//! Ready the check reads nothing else; otherwise it reads every scale set's
//! instance view, and a node whose init extension failed fails the step at
//! once (`NodeInitFailed`, naming the node and quoting its extension's
//! message).
//! Running out of checks fails the step (`JoinTimeout`) naming every node
//! that never registered (or never became Ready) with its extension's message.
//! Once every node is Ready, writes the job's outputs as one Key Vault secret
//! (`{job}-outputs`, [`outputs`]): its intent is recorded first like any
//! secret, and undo deletes it. Emits `step.succeeded{join}` and
//! `job.succeeded` (carrying the outputs secret's id, never its value).

use super::{rg_id, Env, Op, SecretSource};
use crate::names;
use crate::ports::{Arm, KubeApi, KubeNode, Secrets};
use crate::saga::Saga;
use base64::Engine as _;
use flotilla_azure::models::{api, InstanceView};
use flotilla_azure::{AzureError, ResourceId};
use serde_json::Value;

pub fn plan(saga: &Saga, env: &Env) -> Vec<Op> {
    let vmss = |name: String| {
        rg_id(
            saga,
            env,
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            &name,
        )
    };
    let mut sets = vec![(vmss(names::master_vmss(&saga.id)), saga.spec.master.size)];
    for p in &saga.spec.worker_pools {
        let count = saga.pools.get(&p.name).copied().unwrap_or(p.min);
        sets.push((vmss(names::pool_vmss(&saga.id, &p.name)), count));
    }
    vec![
        Op::AwaitNodes { scale_sets: sets },
        Op::Secret {
            name: names::outputs_secret(&saga.id),
            source: SecretSource::Outputs,
        },
    ]
}

/// The job's outputs, the value of `{job}-outputs`: what a client (or an
/// operator handing the cluster to an application) needs, and no secret —
/// the admin kubeconfig is referenced by its secret id.
///
/// `{job, apiServer: "https://{fqdn}:6443", apiServerAddress (the load
/// balancer's public IP, when Azure has assigned it), kubeconfigSecretId,
/// identity: {mode, scaleSets: [{id, principalId}]} in managed-identity
/// mode or {mode, clientId, tenantId} in service-principal mode, resources:
/// [every ARM id the job created]}`.
pub async fn outputs(saga: &Saga, env: &Env, ports: &Ports<'_>) -> Result<Value, AzureError> {
    let job = &saga.id;
    let pip = rg_id(
        saga,
        env,
        "Microsoft.Network",
        "publicIPAddresses",
        &names::public_ip(job),
    );
    let address = ports
        .arm
        .get(&pip, None, api::NETWORK)
        .await?
        .and_then(|v| v.pointer("/properties/ipAddress").cloned())
        .unwrap_or(Value::Null);
    let identity = match saga.spec.identity {
        crate::spec::IdentityMode::ManagedIdentity => {
            let mut sets = vec![];
            let vmss = |name: String| {
                rg_id(
                    saga,
                    env,
                    "Microsoft.Compute",
                    "virtualMachineScaleSets",
                    &name,
                )
            };
            let ids = std::iter::once(vmss(names::master_vmss(job))).chain(
                saga.spec
                    .worker_pools
                    .iter()
                    .map(|p| vmss(names::pool_vmss(job, &p.name))),
            );
            for id in ids {
                // Recorded from the create's answer; read when it was not.
                let principal = match saga.principals.get(id.name()) {
                    Some(p) => Value::from(p.as_str()),
                    None => ports
                        .arm
                        .get(&id, None, api::COMPUTE)
                        .await?
                        .and_then(|v| v.pointer("/identity/principalId").cloned())
                        .unwrap_or(Value::Null),
                };
                sets.push(serde_json::json!({"id": id.to_string(), "principalId": principal}));
            }
            serde_json::json!({"mode": "managed-identity", "scaleSets": sets})
        }
        crate::spec::IdentityMode::ServicePrincipal => serde_json::json!({
            "mode": "service-principal",
            "clientId": env.sp_client_id,
            "tenantId": env.tenant_id,
        }),
    };
    let resources: Vec<&str> = saga
        .resources
        .iter()
        .filter(|r| {
            r.state == crate::saga::ResourceState::Created
                && matches!(r.kind, crate::saga::ResourceKind::Arm { .. })
        })
        .map(|r| r.id.as_str())
        .collect();
    Ok(serde_json::json!({
        "job": job,
        "apiServer": format!("https://{}:{}", names::api_fqdn(job, &saga.spec.location), names::API_PORT),
        "apiServerAddress": address,
        "kubeconfigSecretId": ports.secrets.secret_id(&names::kubeconfig_secret(job)),
        "identity": identity,
        "resources": resources,
    }))
}

/// The ports a check uses.
pub struct Ports<'a> {
    pub arm: &'a dyn Arm,
    pub secrets: &'a dyn Secrets,
    pub kube: &'a dyn KubeApi,
}

/// What one check found.
#[derive(Debug)]
pub enum Verdict {
    /// Every expected node is registered and Ready.
    Joined,
    /// Not yet; why (for the log).
    Waiting(String),
    /// The step fails with this error (the engine classifies it).
    Failed(AzureError),
    /// This scale set is `Failed` although its create was recorded (an update
    /// sent after it, e.g. by a stale duplicate handler, failed): it gives no
    /// more nodes until its create is sent again.
    Repair(ResourceId),
}

/// Every how many checks (and on the last) a short scale set's own state is read.
const STATE_CHECK_EVERY: u32 = 3;

/// One scale set and the nodes it should give the cluster.
struct Group<'a> {
    id: &'a ResourceId,
    expected: u32,
    /// `the masters` or `pool NAME`.
    what: String,
    label: (&'static str, String),
}

fn groups<'a>(saga: &Saga, sets: &'a [(ResourceId, u32)]) -> Vec<Group<'a>> {
    let pool_prefix = names::pool_vmss(&saga.id, "");
    sets.iter()
        .map(
            |(id, expected)| match id.name().strip_prefix(&pool_prefix) {
                Some(pool) if id.name() != names::master_vmss(&saga.id) => Group {
                    id,
                    expected: *expected,
                    what: format!("pool {pool}"),
                    label: (names::NODE_POOL_LABEL, pool.to_string()),
                },
                _ => Group {
                    id,
                    expected: *expected,
                    what: "the masters".into(),
                    label: (names::NODE_ROLE_LABEL, "control-plane".into()),
                },
            },
        )
        .collect()
}

/// A scale set instance, from the scale set's VM list.
struct Vm {
    /// `{scaleSet}_{instanceId}`.
    name: String,
    /// The hostname, which is the Kubernetes node name.
    computer_name: String,
    instance_id: String,
}

/// The init extension's state on one instance: whether it failed, and its
/// message shortened to the script's failure line when there is one.
async fn extension_status(arm: &dyn Arm, scale_set: &ResourceId, vm: &Vm) -> (bool, String) {
    let id = scale_set.child("virtualMachines", &vm.instance_id);
    let view = match arm.get(&id, Some("instanceView"), api::COMPUTE).await {
        Ok(Some(v)) => v,
        Ok(None) => return (false, "the instance is gone".into()),
        Err(e) => {
            return (
                false,
                format!("its instance view is unreadable ({})", e.code),
            )
        }
    };
    let statuses = view
        .get("extensions")
        .and_then(Value::as_array)
        .and_then(|exts| {
            exts.iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(names::INIT_EXTENSION))
        })
        .and_then(|e| e.get("statuses"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(status) = statuses.first() else {
        return (
            false,
            format!("{} has not reported yet", names::INIT_EXTENSION),
        );
    };
    let failed = status
        .get("code")
        .and_then(Value::as_str)
        .is_some_and(|c| c.to_ascii_lowercase().contains("/failed"));
    let message = status
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| status.get("displayStatus").and_then(Value::as_str))
        .unwrap_or("no message");
    (failed, shorten(message))
}

/// The script's own failure line (`[flotilla] … failed (exit N): …`) when the
/// message holds one, otherwise the message's last 300 characters.
fn shorten(message: &str) -> String {
    if let Some(line) = message
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("[flotilla] "))
    {
        return line.trim().to_string();
    }
    let m = message.trim();
    match m.char_indices().rev().nth(299) {
        Some((i, _)) => format!("…{}", &m[i..]),
        None => m.to_string(),
    }
}

async fn vms(arm: &dyn Arm, scale_set: &ResourceId) -> Result<Vec<Vm>, AzureError> {
    let list = arm
        .get(scale_set, Some("virtualMachines"), api::COMPUTE)
        .await?
        .unwrap_or_default();
    Ok(list
        .get("value")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|v| Vm {
                    name: v.get("name").and_then(Value::as_str).unwrap_or("").into(),
                    computer_name: v
                        .pointer("/properties/osProfile/computerName")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_ascii_lowercase(),
                    instance_id: v
                        .get("instanceId")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Names the instances of `g` that `pick` selects (and, with `only_failed`,
/// whose init extension failed), at most `max`, with their extension's message.
async fn describe(
    arm: &dyn Arm,
    g: &Group<'_>,
    pick: impl Fn(&Vm) -> bool,
    only_failed: bool,
    max: usize,
) -> Vec<String> {
    let list = match vms(arm, g.id).await {
        Ok(list) => list,
        Err(e) => {
            return vec![format!(
                "(the VMs of {} are unreadable: {})",
                g.id.name(),
                e.code
            )]
        }
    };
    let mut out = vec![];
    for vm in list.iter().filter(|v| pick(v)) {
        if out.len() >= max {
            break;
        }
        let (failed, message) = extension_status(arm, g.id, vm).await;
        if only_failed && !failed {
            continue;
        }
        out.push(format!(
            "node {} ({}): {message}",
            vm.computer_name, vm.name
        ));
    }
    out
}

fn matches(node: &KubeNode, g: &Group<'_>) -> bool {
    node.labels.get(g.label.0) == Some(&g.label.1)
}

/// One check of the expected nodes; `last` is the final one allowed (a
/// shortfall then fails the step instead of waiting).
pub async fn check(
    saga: &Saga,
    sets: &[(ResourceId, u32)],
    ports: &Ports<'_>,
    last: bool,
    checks: u32,
) -> Verdict {
    let groups = groups(saga, sets);
    // 1. The cluster's own view, with the kubeconfig the first master published.
    // When every expected node is Ready, that is all a check reads.
    let secret = names::kubeconfig_secret(&saga.id);
    // `keys` created it with a placeholder the first master overwrites.
    let published = ports
        .secrets
        .get(&secret)
        .await
        .map(|v| v.filter(|v| v != names::PENDING_SECRET));
    let nodes = match published {
        Err(e) => return Verdict::Failed(e),
        Ok(None) => Err(format!(
            "the first master has not published {secret} (the admin kubeconfig) yet"
        )),
        Ok(Some(encoded)) => {
            let Some(kubeconfig) = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            else {
                return Verdict::Failed(AzureError::terminal(
                    "KubeconfigInvalid",
                    format!("{secret} is not a base64-encoded kubeconfig"),
                ));
            };
            match ports.kube.nodes(&kubeconfig).await {
                Ok(nodes) => Ok(nodes),
                Err(e) if e.is_retryable() => Err(e.message),
                Err(e) => return Verdict::Failed(e),
            }
        }
    };
    let (nodes, why_none) = match nodes {
        Ok(n) => (n, None),
        Err(why) => (vec![], Some(why)),
    };
    let mut summary = vec![];
    let mut short = vec![];
    for g in &groups {
        let ready = nodes.iter().filter(|n| matches(n, g) && n.ready).count() as u32;
        summary.push(format!("{} {ready}/{} Ready", g.what, g.expected));
        if ready < g.expected {
            short.push(g);
        }
    }
    if short.is_empty() {
        return Verdict::Joined;
    }
    // 2. Some are not: a node whose init script failed fails the step now.
    for g in &groups {
        let view = match ports
            .arm
            .get(g.id, Some("instanceView"), api::COMPUTE)
            .await
        {
            Ok(Some(v)) => serde_json::from_value::<InstanceView>(v).unwrap_or_default(),
            Ok(None) => {
                return Verdict::Failed(AzureError::terminal(
                    "ScaleSetMissing",
                    format!("{} does not exist", g.id),
                ))
            }
            Err(e) => return Verdict::Failed(e),
        };
        let (_, failed) = view.extension_counts(names::INIT_EXTENSION);
        if failed > 0 {
            let failing = describe(ports.arm, g, |_| true, true, 3).await;
            let detail = if failing.is_empty() {
                format!(
                    "{failed} node(s) of {} failed to run the init script",
                    g.id.name()
                )
            } else {
                format!(
                    "the init script failed on {}: {}",
                    g.what,
                    failing.join("; ")
                )
            };
            return Verdict::Failed(AzureError::terminal("NodeInitFailed", detail));
        }
    }

    let mut progress = summary.join(", ");
    if let Some(why) = &why_none {
        progress = format!("{progress} ({why})");
    }
    // 3. A scale set left `Failed` will not give its nodes: repair it.
    if last || checks % STATE_CHECK_EVERY == STATE_CHECK_EVERY - 1 {
        for g in &short {
            if let Ok(Some(set)) = ports.arm.get(g.id, None, api::COMPUTE).await {
                let state = set.pointer("/properties/provisioningState");
                if state.and_then(Value::as_str) == Some("Failed") {
                    return Verdict::Repair(g.id.clone());
                }
            }
        }
    }
    if !last {
        return Verdict::Waiting(progress);
    }

    // 4. Out of checks: name the nodes that never registered or never got Ready.
    let mut missing = vec![];
    for g in short {
        let registered: Vec<&KubeNode> = nodes.iter().filter(|n| matches(n, g)).collect();
        let described = describe(
            ports.arm,
            g,
            |vm| {
                !registered
                    .iter()
                    .any(|n| n.ready && n.name.eq_ignore_ascii_case(&vm.computer_name))
            },
            false,
            5,
        )
        .await;
        if described.is_empty() {
            missing.push(format!(
                "{}: fewer instances than the {} expected",
                g.what, g.expected
            ));
        }
        for d in described {
            let state = if registered
                .iter()
                .any(|n| d.starts_with(&format!("node {} ", n.name.to_ascii_lowercase())))
            {
                "registered but not Ready"
            } else {
                "never registered"
            };
            missing.push(format!("{} {state}; {}", g.what, d));
        }
    }
    Verdict::Failed(AzureError::terminal(
        "JoinTimeout",
        format!(
            "nodes did not join after {checks} checks ({progress}): {}",
            missing.join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_keeps_the_scripts_failure_line() {
        let m = "Enable failed: failed to execute command: command terminated with exit status=21\n[stdout]\n[flotilla] job x: run\n\n[stderr]\n[flotilla] identity failed (exit 21): no Key Vault token\n";
        assert_eq!(
            shorten(m),
            "[flotilla] identity failed (exit 21): no Key Vault token"
        );
        let long = "x".repeat(1000);
        assert_eq!(shorten(&long).chars().count(), 301);
        assert_eq!(shorten("short"), "short");
    }
}
