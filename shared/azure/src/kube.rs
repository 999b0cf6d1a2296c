//! A minimal Kubernetes API client for `join`: reads the node list from the
//! API server a kubeconfig names, trusting only the kubeconfig's cluster CA
//! and presenting its credential (client certificate or bearer token).
//!
//! The kubeconfig is the JSON form kubectl writes (`kubectl config view --raw
//! --flatten -o json`), which is what the first master publishes.

use crate::AzureError;
use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A node as the API server lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    pub labels: BTreeMap<String, String>,
}

/// Reads nodes from the API server of a kubeconfig.
#[derive(Clone, Default)]
pub struct KubeClient {
    /// Sends through this transport instead of connecting (an in-process
    /// simulator); the kubeconfig's TLS material is then not used.
    transport: Option<Arc<dyn azure_core::http::HttpClient>>,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("in_process", &self.transport.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: User,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority-data", default)]
    ca_data: Option<String>,
}

#[derive(Deserialize, Default)]
struct User {
    #[serde(rename = "client-certificate-data", default)]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data", default)]
    key_data: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: String,
}

#[derive(Deserialize)]
struct NodeList {
    #[serde(default)]
    items: Vec<NodeItem>,
}

#[derive(Deserialize)]
struct NodeItem {
    metadata: Metadata,
    #[serde(default)]
    status: NodeStatus,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct NodeStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
}

fn invalid(what: impl std::fmt::Display) -> AzureError {
    AzureError::terminal("KubeconfigInvalid", format!("the kubeconfig {what}"))
}

/// Not answering (yet): retryable, the API server may still be starting.
fn unreachable(message: String) -> AzureError {
    AzureError {
        code: "KubeApiUnreachable".into(),
        ..AzureError::transport(message)
    }
}

fn decode(field: &str, data: &str) -> Result<Vec<u8>, AzureError> {
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| invalid(format!("has a {field} that is not base64")))
}

/// What a kubeconfig says about reaching its current cluster.
struct Target {
    server: url::Url,
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
    token: Option<String>,
}

/// The entry called `name` (the only one when `name` is empty).
fn one<'a, T>(
    list: &'a [T],
    name_of: impl Fn(&T) -> &str,
    name: &str,
    kind: &str,
) -> Result<&'a T, AzureError> {
    list.iter()
        .find(|n| name_of(n) == name || (name.is_empty() && list.len() == 1))
        .ok_or_else(|| invalid(format!("has no {kind} '{name}'")))
}

fn target(kubeconfig: &str) -> Result<Target, AzureError> {
    let kc: Kubeconfig =
        serde_json::from_str(kubeconfig).map_err(|e| invalid(format!("is not JSON: {e}")))?;
    let ctx = &one(&kc.contexts, |c| &c.name, &kc.current_context, "context")?.context;
    let cluster = &one(&kc.clusters, |c| &c.name, &ctx.cluster, "cluster")?.cluster;
    let user = if ctx.user.is_empty() {
        None
    } else {
        Some(&one(&kc.users, |u| &u.name, &ctx.user, "user")?.user)
    };
    let server = url::Url::parse(&cluster.server)
        .map_err(|e| invalid(format!("has a bad server URL: {e}")))?;
    if server.scheme() != "https" {
        return Err(invalid("names a server that is not https"));
    }
    let ca_pem = cluster
        .ca_data
        .as_deref()
        .map(|d| decode("certificate-authority-data", d))
        .transpose()?;
    let identity_pem = match user {
        Some(User {
            cert_data: Some(c),
            key_data: Some(k),
            ..
        }) => {
            let mut pem = decode("client-certificate-data", c)?;
            pem.push(b'\n');
            pem.extend(decode("client-key-data", k)?);
            Some(pem)
        }
        _ => None,
    };
    let token = user.and_then(|u| u.token.clone());
    if identity_pem.is_none() && token.is_none() {
        return Err(invalid("has no client certificate or token for its user"));
    }
    Ok(Target {
        server,
        ca_pem,
        identity_pem,
        token,
    })
}

impl KubeClient {
    /// A client for real API servers: only the kubeconfig's CA is trusted.
    pub fn new() -> KubeClient {
        KubeClient::default()
    }

    /// A client that hands every request to `transport` (the in-process
    /// simulator of the benchmark); the URL's path still selects the cluster.
    pub fn with_transport(transport: Arc<dyn azure_core::http::HttpClient>) -> KubeClient {
        KubeClient {
            transport: Some(transport),
        }
    }

    /// Every registered node of the kubeconfig's current cluster.
    ///
    /// Errors: `KubeconfigInvalid` (terminal) for a kubeconfig that cannot be
    /// used; `KubeApiUnreachable` (retryable) while the API server does not
    /// answer; `KubeApiUnauthorized` (terminal) for 401/403; other statuses
    /// are classified like any service answer.
    pub async fn nodes(&self, kubeconfig: &str) -> Result<Vec<Node>, AzureError> {
        let t = target(kubeconfig)?;
        let host = t.server.host_str().unwrap_or("").to_string();
        let url = format!("{}/api/v1/nodes", t.server.as_str().trim_end_matches('/'));
        let (status, body) = match &self.transport {
            Some(transport) => {
                Self::send_in_process(transport, &url, t.token.as_deref(), &host).await?
            }
            None => Self::send(&t, &url, &host).await?,
        };
        if status == 401 || status == 403 {
            return Err(AzureError::terminal(
                "KubeApiUnauthorized",
                format!(
                    "the API server {host} refused the kubeconfig's credential (HTTP {status})"
                ),
            ));
        }
        if !(200..300).contains(&status) {
            return Err(AzureError::from_service(
                status,
                "KubeApiError",
                &format!("GET /api/v1/nodes on {host} answered HTTP {status}"),
                None,
            ));
        }
        let list: NodeList = serde_json::from_slice(&body)
            .map_err(|e| unreachable(format!("the node list from {host} is unreadable: {e}")))?;
        Ok(list
            .items
            .into_iter()
            .map(|n| Node {
                ready: n
                    .status
                    .conditions
                    .iter()
                    .any(|c| c.kind == "Ready" && c.status == "True"),
                name: n.metadata.name,
                labels: n.metadata.labels,
            })
            .collect())
    }

    async fn send_in_process(
        transport: &Arc<dyn azure_core::http::HttpClient>,
        url: &str,
        token: Option<&str>,
        host: &str,
    ) -> Result<(u16, Vec<u8>), AzureError> {
        let url =
            url::Url::parse(url).map_err(|e| invalid(format!("has a bad server URL: {e}")))?;
        let mut req = azure_core::http::Request::new(url, azure_core::http::Method::Get);
        req.insert_header("accept", "application/json");
        if let Some(token) = token {
            req.insert_header("authorization", format!("Bearer {token}"));
        }
        let resp = transport
            .execute_request(&req)
            .await
            .map_err(|e| unreachable(format!("the API server {host} does not answer: {e}")))?;
        let status = u16::from(resp.status());
        let raw = resp
            .try_into_raw_response()
            .await
            .map_err(|e| unreachable(format!("the API server {host} does not answer: {e}")))?;
        Ok((status, raw.body().to_vec()))
    }

    /// One GET over TLS, trusting only the kubeconfig's CA.
    async fn send(t: &Target, url: &str, host: &str) -> Result<(u16, Vec<u8>), AzureError> {
        crate::transport::use_ring_for_tls();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15));
        let mut roots = vec![];
        if let Some(pem) = &t.ca_pem {
            roots.extend(
                reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|_| invalid("has a certificate-authority-data that is not PEM"))?,
            );
        }
        if !roots.is_empty() {
            builder = builder.tls_certs_only(roots);
        }
        if let Some(pem) = &t.identity_pem {
            let id = reqwest::Identity::from_pem(pem)
                .map_err(|_| invalid("has a client certificate or key that is not PEM"))?;
            builder = builder.identity(id);
        }
        let client = builder
            .build()
            .map_err(|e| AzureError::terminal("KubeClient", e.to_string()))?;
        let mut req = client.get(url).header("accept", "application/json");
        if let Some(token) = &t.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| {
            unreachable(format!(
                "the API server {host} does not answer: {}",
                root_cause(&e)
            ))
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| unreachable(format!("the API server {host} does not answer: {e}")))?;
        Ok((status, body.to_vec()))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn reads_the_current_context() {
        let kc = serde_json::json!({
            "current-context": "admin@c",
            "clusters": [{"name": "other", "cluster": {"server": "https://other:6443"}},
                         {"name": "c", "cluster": {"server": "https://c.example:6443", "certificate-authority-data": b64("ca")}}],
            "users": [{"name": "admin", "user": {"token": "t0k"}}],
            "contexts": [{"name": "admin@c", "context": {"cluster": "c", "user": "admin"}}]
        });
        let t = target(&kc.to_string()).unwrap();
        assert_eq!(t.server.as_str(), "https://c.example:6443/");
        assert_eq!(t.ca_pem.as_deref(), Some(&b"ca"[..]));
        assert_eq!(t.token.as_deref(), Some("t0k"));
    }

    #[test]
    fn a_bad_kubeconfig_says_why_without_echoing_it() {
        for (kc, why) in [
            ("not json", "is not JSON"),
            (
                r#"{"current-context":"x","clusters":[],"users":[],"contexts":[]}"#,
                "has no context 'x'",
            ),
            (
                r#"{"current-context":"x","clusters":[{"name":"c","cluster":{"server":"http://c"}}],"users":[{"name":"u","user":{"token":"secret-token"}}],"contexts":[{"name":"x","context":{"cluster":"c","user":"u"}}]}"#,
                "not https",
            ),
        ] {
            let e = target(kc).err().expect("refused");
            assert_eq!(e.code, "KubeconfigInvalid");
            assert!(e.message.contains(why), "{}", e.message);
            assert!(!e.message.contains("secret-token"));
        }
    }
}
