//! Microsoft.ContainerService: AKS clusters (computed FQDN, versions, node resource group)
//! and `listClusterUserCredential`.

use super::model::{props, set_default, Prep, Reject};
use crate::doc::Doc;
use serde_json::{json, Value};

/// AKS cluster: FQDN, versions, node resource group.
pub(crate) fn prepare_cluster(p: &Prep<'_>, body: &mut Value) -> Result<(), Reject> {
    let (id, name) = (p.id, p.name);
    let location = body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let rg = id.split('/').nth(4).unwrap_or("").to_string();
    let suffix = p.keep("fqdn");
    let p = props(body);
    set_default(p, "kubernetesVersion", json!("1.30.0"));
    let ver = p
        .get("kubernetesVersion")
        .cloned()
        .unwrap_or(json!("1.30.0"));
    p.insert("currentKubernetesVersion".into(), ver);
    let prefix = p
        .get("dnsPrefix")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string();
    let fqdn = match suffix.as_str() {
        Some(s) if s.contains(".azmk8s.io") => json!(s),
        _ => json!(format!(
            "{prefix}-{}.hcp.{location}.azmk8s.io",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )),
    };
    p.insert("fqdn".into(), fqdn);
    p.insert("powerState".into(), json!({"code": "Running"}));
    set_default(
        p,
        "nodeResourceGroup",
        json!(format!("MC_{rg}_{name}_{location}")),
    );
    Ok(())
}

/// `POST …/managedClusters/{name}/listClusterUserCredential`: a kubeconfig for the cluster.
pub(crate) fn user_credential(r: &crate::state::Resource, rg: &str) -> Value {
    use base64::Engine;
    let fqdn = r
        .body
        .pointer("/properties/fqdn")
        .and_then(Doc::as_str)
        .unwrap_or("cluster.local");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://{fqdn}:443\n  name: {n}\ncontexts:\n- context:\n    cluster: {n}\n    user: clusterUser_{rg}_{n}\n  name: {n}\ncurrent-context: {n}\nusers:\n- name: clusterUser_{rg}_{n}\n  user:\n    token: {t}\n",
        n = r.name,
        t = crate::util::random_token(24),
    );
    let value = base64::engine::general_purpose::STANDARD.encode(kubeconfig);
    json!({"kubeconfigs": [{"name": "clusterUser", "value": value}]})
}
