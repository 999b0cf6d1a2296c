//! What a node runs at boot: the bootstrap template (`node/bootstrap.sh`),
//! rendered by `stage` once per job and role, and the init extension's
//! command that starts it.
//!
//! The rendering is a block of shell variables put in front of the template:
//! the job, the role, where Key Vault and staging are, the API server's name,
//! the pinned Kubernetes minor version, the pod and service ranges and the
//! names of the secrets the first master publishes. It never holds a secret
//! value; in service-principal mode the principal's secret reaches the node
//! through the extension's protected settings ([`seal`]).

use super::Env;
use crate::names;
use crate::saga::Saga;
use crate::spec::{IdentityMode, StagingAccess};
use serde_json::Value;

/// The bootstrap template; see its header for the phases and exit codes.
pub const TEMPLATE: &str = include_str!("node/bootstrap.sh");
/// The one Kubernetes minor version nodes install (pkgs.k8s.io carries one
/// minor per repository, so every node gets a patch release of this minor).
pub const KUBERNETES_MINOR: &str = "v1.34";
/// The CNI the first master installs (Flannel, pinned release manifest).
pub const CNI_MANIFEST_URL: &str =
    "https://github.com/flannel-io/flannel/releases/download/v0.27.2/kube-flannel.yml";
/// The environment variable the init command sets in service-principal mode.
pub const SP_SECRET_ENV: &str = "FLOTILLA_SP_SECRET";

/// Which script a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role<'a> {
    /// Every control-plane node; instance 0 of the scale set initialises the
    /// cluster, the others join it as control-plane nodes.
    Master,
    /// A worker pool's nodes.
    Pool(&'a str),
}

impl Role<'_> {
    /// The staged blob holding this role's script.
    pub fn blob(&self, job: &str) -> String {
        match self {
            Role::Master => names::init_blob(job),
            Role::Pool(pool) => names::pool_init_blob(job, pool),
        }
    }
}

/// Every role of the job: the masters, then each pool in spec order.
pub fn roles(saga: &Saga) -> Vec<Role<'_>> {
    std::iter::once(Role::Master)
        .chain(saga.spec.worker_pools.iter().map(|p| Role::Pool(&p.name)))
        .collect()
}

/// Single-quotes `s` for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Parses an IPv4 CIDR (the spec validated it) into (network, prefix length).
fn cidr(s: &str) -> Option<(u32, u32)> {
    let (addr, len) = s.split_once('/')?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let octets: Vec<u8> = addr
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d] = octets[..] else {
        return None;
    };
    Some((u32::from_be_bytes([a, b, c, d]), len))
}

fn overlaps(x: &str, y: &str) -> bool {
    match (cidr(x), cidr(y)) {
        (Some((a, la)), Some((b, lb))) => {
            let len = la.min(lb);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            a & mask == b & mask
        }
        _ => true,
    }
}

/// The pod and service ranges: the first candidates that overlap neither the
/// VNet nor each other (kubeadm's defaults when the VNet leaves them free).
pub fn cluster_ranges(vnet_cidr: &str) -> (&'static str, &'static str) {
    const PODS: &[&str] = &[
        "10.244.0.0/16",
        "172.20.0.0/16",
        "192.168.0.0/16",
        "100.64.0.0/16",
    ];
    const SERVICES: &[&str] = &["10.96.0.0/12", "172.21.0.0/16", "100.65.0.0/16"];
    let pods = PODS
        .iter()
        .find(|p| !overlaps(p, vnet_cidr))
        .unwrap_or(&PODS[0]);
    let services = SERVICES
        .iter()
        .find(|s| !overlaps(s, vnet_cidr) && !overlaps(s, pods))
        .unwrap_or(&SERVICES[0]);
    (pods, services)
}

/// The script a node of `role` runs: the rendered variables, then the template.
pub fn render(saga: &Saga, env: &Env, role: Role<'_>) -> String {
    let job = &saga.id;
    let spec = &saga.spec;
    let (pods, services) = cluster_ranges(&spec.network.vnet_cidr);
    let (role_name, pool) = match role {
        Role::Master => ("master", ""),
        Role::Pool(p) => ("worker", p),
    };
    let identity = match spec.identity {
        IdentityMode::ManagedIdentity => "managed-identity",
        IdentityMode::ServicePrincipal => "service-principal",
    };
    let vars: Vec<(&str, String)> = vec![
        ("FLOTILLA_JOB", job.clone()),
        ("FLOTILLA_ROLE", role_name.into()),
        ("FLOTILLA_POOL", pool.into()),
        ("IDENTITY_MODE", identity.into()),
        // What the node asks the metadata endpoint for tokens of: the job's
        // node identity (empty: the scale set's system-assigned identity).
        (
            "NODE_IDENTITY_ID",
            if spec.identity == IdentityMode::ManagedIdentity {
                super::keys::node_identity_id(saga, env).to_string()
            } else {
                String::new()
            },
        ),
        (
            "STAGING_ACCESS",
            match spec.staging.access {
                StagingAccess::Identity => "identity",
                StagingAccess::AccountKey => "account-key",
            }
            .into(),
        ),
        ("SP_CLIENT_ID", env.sp_client_id.clone().unwrap_or_default()),
        ("TENANT_ID", env.tenant_id.clone().unwrap_or_default()),
        ("SUBSCRIPTION_ID", env.subscription_id.clone()),
        ("RESOURCE_GROUP", spec.resource_group.clone()),
        ("LOCATION", spec.location.clone()),
        (
            "KEYVAULT_URL",
            env.keyvault_url.trim_end_matches('/').into(),
        ),
        ("STAGING_URL", env.staging_url.clone()),
        ("SPEC_BLOB", names::spec_blob(job)),
        ("API_ENDPOINT", names::api_fqdn(job, &spec.location)),
        ("API_PORT", names::API_PORT.to_string()),
        ("K8S_MINOR", KUBERNETES_MINOR.into()),
        ("POD_CIDR", pods.into()),
        ("SERVICE_CIDR", services.into()),
        (
            "SCHEDULE_ON_MASTERS",
            spec.master.allow_workloads.to_string(),
        ),
        ("CNI_MANIFEST_URL", CNI_MANIFEST_URL.into()),
        ("SECRET_JOIN_TOKEN", names::join_token_secret(job)),
        ("SECRET_CA_HASH", names::ca_hash_secret(job)),
        ("SECRET_CERT_KEY", names::cert_key_secret(job)),
        ("SECRET_KUBECONFIG", names::kubeconfig_secret(job)),
        ("PENDING_SECRET", names::PENDING_SECRET.into()),
    ];
    let mut out = format!(
        "#!/usr/bin/env bash\n# flotilla node bootstrap, rendered for job {job}, role {}.\n",
        match role {
            Role::Master => "master".to_string(),
            Role::Pool(p) => format!("pool {p}"),
        }
    );
    for (name, value) in vars {
        out.push_str(&format!("{name}={}\n", quote(&value)));
    }
    out.push('\n');
    out.push_str(TEMPLATE);
    out
}

/// The init extension's command for `role`, without any secret.
pub fn command(role: Role<'_>, job: &str) -> String {
    format!("bash {}", names::blob_file_name(&role.blob(job)))
}

/// What the init extension downloads the script with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StagingCredential<'a> {
    /// The staging account's key (`staging.access: account-key`).
    AccountKey(&'a str),
    /// The object (principal) id of the job's node identity, attached to
    /// the scale set (`staging.access: identity`): the CustomScript
    /// extension's `managedIdentity` setting.
    NodeIdentity { object_id: &'a str },
}

/// Completes a scale set body just before its PUT: the staging credential
/// the init extension downloads the script with and, in service-principal
/// mode, the principal's secret in front of the command. Both go only into
/// `protectedSettings` (encrypted by Azure, never returned by a GET).
pub fn seal(body: &mut Value, credential: StagingCredential<'_>, sp_secret: Option<&str>) {
    let Some(Value::Array(extensions)) =
        body.pointer_mut("/properties/virtualMachineProfile/extensionProfile/extensions")
    else {
        return;
    };
    for ext in extensions.iter_mut() {
        if ext.get("name").and_then(Value::as_str) != Some(names::INIT_EXTENSION) {
            continue;
        }
        let Some(settings) = ext.pointer_mut("/properties/protectedSettings") else {
            continue;
        };
        match credential {
            StagingCredential::AccountKey(key) => {
                settings["storageAccountKey"] = Value::String(key.to_string());
            }
            StagingCredential::NodeIdentity { object_id } => {
                settings["managedIdentity"] = serde_json::json!({ "objectId": object_id });
            }
        }
        if let (Some(secret), Some(cmd)) = (
            sp_secret,
            settings.get("commandToExecute").and_then(Value::as_str),
        ) {
            let cmd = format!("{SP_SECRET_ENV}={} {cmd}", quote(secret));
            settings["commandToExecute"] = Value::String(cmd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ClusterSpec;

    #[test]
    fn ranges_avoid_the_vnet() {
        assert_eq!(
            cluster_ranges("10.42.0.0/16"),
            ("10.244.0.0/16", "10.96.0.0/12")
        );
        assert_eq!(
            cluster_ranges("10.0.0.0/8"),
            ("172.20.0.0/16", "172.21.0.0/16")
        );
        let (p, s) = cluster_ranges("10.244.0.0/14");
        assert!(!overlaps(p, "10.244.0.0/14") && !overlaps(s, "10.244.0.0/14"));
        assert!(!overlaps(p, s));
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn seal_puts_secrets_only_in_protected_settings() {
        let spec = ClusterSpec::example();
        let saga = Saga::new("demo-abc123".into(), spec, time::OffsetDateTime::UNIX_EPOCH);
        let mut body = serde_json::json!({"properties": {"virtualMachineProfile": {"extensionProfile": {"extensions": [
            {"name": names::INIT_EXTENSION, "properties": {"protectedSettings": {"commandToExecute": command(Role::Master, &saga.id)}}}
        ]}}}});
        seal(
            &mut body,
            StagingCredential::AccountKey("the-key"),
            Some("it's-secret"),
        );
        let p = &body["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"][0]
            ["properties"]["protectedSettings"];
        assert_eq!(p["storageAccountKey"], "the-key");
        assert_eq!(
            p["commandToExecute"],
            r"FLOTILLA_SP_SECRET='it'\''s-secret' bash init.sh"
        );
        seal(
            &mut body,
            StagingCredential::NodeIdentity { object_id: "oid-1" },
            None,
        );
        let p = &body["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"][0]
            ["properties"]["protectedSettings"];
        assert_eq!(
            p["managedIdentity"],
            serde_json::json!({"objectId": "oid-1"})
        );
    }
}
