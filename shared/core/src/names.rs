//! Deterministic names derived from the job id: running a step twice names
//! the same resources, so a repeat is an update, never a second resource.

use crate::spec::ClusterSpec;
use std::collections::BTreeMap;

/// Tag carrying the job id on every resource flotilla creates.
pub const TAG_JOB: &str = "flotilla-job";
/// Tag marking ownership, for sweeping leftovers.
pub const TAG_MANAGED_BY: &str = "managed-by";
/// Tag naming a scale set's role (`master` or the pool); scale sets only.
pub const TAG_ROLE: &str = "flotilla-role";
/// The tags [`tags`] adds to the user's on every resource, secret and blob.
pub const OWN_TAGS: [&str; 2] = [TAG_JOB, TAG_MANAGED_BY];
/// The most tags flotilla adds to one resource: [`OWN_TAGS`], plus [`TAG_ROLE`] on scale sets.
pub const MAX_OWN_TAGS_PER_RESOURCE: usize = OWN_TAGS.len() + 1;

/// The name of the init-script extension on every scale set; `join` reads its status.
pub const INIT_EXTENSION: &str = "flotilla-init";

/// A new job id: the cluster name plus 6 random lowercase alphanumerics.
pub fn new_job_id(spec: &ClusterSpec) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}-{suffix}", spec.name)
}

/// The job id for a submission with an idempotency key: the cluster name
/// plus 6 lowercase alphanumerics derived from the name and the key (FNV-1a,
/// stable across versions and machines), so the same key names the same job.
pub fn job_id_for_key(spec: &ClusterSpec, key: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in spec.name.bytes().chain([0u8]).chain(key.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let suffix: String = (0..6)
        .map(|i| ALPHABET[((hash >> (i * 10)) % ALPHABET.len() as u64) as usize] as char)
        .collect();
    format!("{}-{suffix}", spec.name)
}

/// True for ids `new_job_id` could have made (used to reject junk in URLs).
pub fn is_job_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 27
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The job ids a resource id may belong to: every prefix of one of its
/// segments that looks like a job id (a name, `-`, six lowercase letters or
/// digits) and is followed by `-` or ends the segment. flotilla names each
/// resource it creates after its job (`{job}-vnet`, `{job}-pool-a`) or
/// places it under one (a subnet, a role assignment on a scale set), so an
/// event about one of them leads straight to its job without a scan.
pub fn jobs_named_in(resource_id: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for seg in resource_id.split('/') {
        let seg = seg.to_ascii_lowercase();
        let ends = seg.match_indices('-').map(|(i, _)| i).chain([seg.len()]);
        for end in ends {
            let candidate = &seg[..end];
            let Some((name, suffix)) = candidate.rsplit_once('-') else {
                continue;
            };
            let looks_like_job = !name.is_empty()
                && suffix.len() == 6
                && suffix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && is_job_id(candidate);
            if looks_like_job && !out.iter().any(|j| j == candidate) {
                out.push(candidate.to_string());
            }
        }
    }
    out
}

/// Tags for a resource of `job`: the user's tags plus flotilla's own.
pub fn tags(job: &str, spec: &ClusterSpec) -> BTreeMap<String, String> {
    let mut t = spec.tags.clone();
    t.insert(TAG_JOB.into(), job.into());
    t.insert(TAG_MANAGED_BY.into(), "flotilla".into());
    t
}

/// The blob metadata name a tag is staged under: blob metadata names are C#
/// identifiers, so every character but an ASCII letter or digit becomes `_`
/// (`flotilla-job` is staged as `flotilla_job`).
pub fn blob_metadata_name(tag: &str) -> String {
    tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
}

pub fn vnet(job: &str) -> String {
    format!("{job}-vnet")
}
pub const CONTROL_PLANE_SUBNET: &str = "control-plane";
pub const WORKER_SUBNET: &str = "workers";
pub fn control_plane_nsg(job: &str) -> String {
    format!("{job}-cp-nsg")
}
pub fn worker_nsg(job: &str) -> String {
    format!("{job}-wk-nsg")
}
pub fn public_ip(job: &str) -> String {
    format!("{job}-api-pip")
}
pub fn load_balancer(job: &str) -> String {
    format!("{job}-api-lb")
}
pub const LB_FRONTEND: &str = "api";
pub const LB_POOL: &str = "masters";
pub const LB_PROBE: &str = "apiserver";
pub fn master_vmss(job: &str) -> String {
    format!("{job}-master")
}
pub fn pool_vmss(job: &str, pool: &str) -> String {
    format!("{job}-pool-{pool}")
}
/// `computerNamePrefix` (≤ 15 characters): the job suffix and a role letter.
pub fn computer_prefix(job: &str, role: &str) -> String {
    let suffix = job.rsplit('-').next().unwrap_or(job);
    let role: String = role
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(7)
        .collect();
    format!("{suffix}{role}")
}
/// The job's node identity (user-assigned): what every node of the job reads
/// its init script with (`staging.access: identity`).
pub fn node_identity(job: &str) -> String {
    format!("{job}-nodes")
}
pub fn storage_key_secret(job: &str) -> String {
    format!("{job}-storage-key")
}
pub fn sp_secret(job: &str) -> String {
    format!("{job}-sp-secret")
}
/// The blob metadata name of a tag: metadata names are C# identifiers, so
/// `flotilla-job` becomes `flotilla_job` and `managed-by` `managed_by`.
pub fn metadata_name(tag: &str) -> String {
    tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
}
/// The name prefix of every blob staged for `job`.
pub fn blob_prefix(job: &str) -> String {
    format!("{job}/")
}
pub fn spec_blob(job: &str) -> String {
    format!("{job}/cluster.json")
}
/// The init script of the control-plane nodes (every master runs it).
pub fn init_blob(job: &str) -> String {
    format!("{job}/init.sh")
}
/// The init script of a worker pool's nodes (pool names are DNS labels and
/// `master` is reserved, so this never collides with [`init_blob`]).
pub fn pool_init_blob(job: &str, pool: &str) -> String {
    format!("{job}/init-{pool}.sh")
}
/// The file name a node's init extension downloads a blob as (its last path segment).
pub fn blob_file_name(blob: &str) -> &str {
    blob.rsplit('/').next().unwrap_or(blob)
}

/// The API server's DNS name: the public IP's `domainNameLabel` (the job id)
/// under the region's `cloudapp.azure.com` zone. Known before the IP exists,
/// so `stage` can render it into the init scripts.
pub fn api_fqdn(job: &str, location: &str) -> String {
    format!("{job}.{}.cloudapp.azure.com", location.to_ascii_lowercase())
}
/// The API server port behind the load balancer.
pub const API_PORT: u16 = 6443;

/// Secrets the first master writes with its own identity (recorded by
/// `master` before its scale set exists, so undo deletes them).
/// The current bootstrap token (short TTL, refreshed by the first master).
pub fn join_token_secret(job: &str) -> String {
    format!("{job}-join-token")
}
/// `sha256:<hex>` of the cluster CA's public key (kubeadm discovery).
pub fn ca_hash_secret(job: &str) -> String {
    format!("{job}-ca-hash")
}
/// The key that decrypts the uploaded control-plane certificates (extra masters).
pub fn cert_key_secret(job: &str) -> String {
    format!("{job}-cert-key")
}
/// The job's output: an admin kubeconfig (JSON, base64-encoded).
pub fn kubeconfig_secret(job: &str) -> String {
    format!("{job}-kubeconfig")
}
/// The job's outputs (`join` writes it once every node is Ready): how to
/// reach and manage the cluster, as JSON, no secret in it.
pub fn outputs_secret(job: &str) -> String {
    format!("{job}-outputs")
}
/// The value of a join secret before the first master has written it:
/// nodes that read it keep waiting (see `keys`).
pub const PENDING_SECRET: &str = "pending";
/// Every secret the nodes write, in the order `keys` creates them.
pub fn node_secrets(job: &str) -> Vec<String> {
    vec![
        join_token_secret(job),
        ca_hash_secret(job),
        cert_key_secret(job),
        kubeconfig_secret(job),
    ]
}

/// Node label every node registers with: `control-plane` or `worker`.
pub const NODE_ROLE_LABEL: &str = "flotilla.io/role";
/// Node label a worker registers with: its pool's name.
pub const NODE_POOL_LABEL: &str = "flotilla.io/pool";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_id_names_its_job() {
        let sub = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/flotilla-clusters/providers";
        assert_eq!(
            jobs_named_in(&format!(
                "{sub}/Microsoft.Compute/virtualMachineScaleSets/demo-abc123-pool-gpu"
            )),
            ["demo-abc123"]
        );
        assert_eq!(
            jobs_named_in(&format!(
                "{sub}/Microsoft.Network/virtualNetworks/my-lab-x1y2z3-vnet/subnets/workers"
            )),
            ["my-lab-x1y2z3"]
        );
        // A role assignment is found through the scale set it is scoped to
        // (`demo-abc123-master` could be a job id too: a candidate is only
        // a document to read, and one that is not there costs one read).
        assert_eq!(
            jobs_named_in(&format!("{sub}/Microsoft.Compute/virtualMachineScaleSets/demo-abc123-master/providers/Microsoft.Authorization/roleAssignments/6f1c2d3e-0000-4000-8000-000000000000")),
            ["demo-abc123", "demo-abc123-master"]
        );
        assert!(jobs_named_in(&format!(
            "{sub}/Microsoft.Network/virtualNetworks/corp-net/subnets/apps"
        ))
        .is_empty());
    }
}
