//! Helpers for protocol tests: a simulator served over real HTTPS and a reqwest client
//! that trusts exactly its CA.
#![allow(dead_code)]

use flotilla_sim::{Sim, SimConfig, SimInfo, SimServer, ThrottleConfig};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub const NET: &str = "2024-05-01";
pub const COMPUTE: &str = "2024-11-01";
pub const RES: &str = "2021-04-01";
pub const STORAGE: &str = "2023-05-01";

/// A served simulator plus a client and an ARM token.
pub struct Harness {
    pub sim: Sim,
    pub server: SimServer,
    pub client: Client,
    pub arm_token: String,
}

pub fn config(lro_ms: u64) -> SimConfig {
    SimConfig {
        data_dir: None,
        lro: Duration::from_millis(lro_ms),
        throttle: None,
        ..SimConfig::default()
    }
}

pub fn client_for(sim: &Sim) -> Client {
    let ca = reqwest::Certificate::from_pem(sim.ca_cert_pem().as_bytes()).expect("CA PEM parses");
    Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("client builds")
}

pub async fn start(config: SimConfig) -> Harness {
    let sim = Sim::new(config).expect("sim starts");
    let server = sim.serve(0).await.expect("sim serves");
    let client = client_for(&sim);
    let arm_token = token(
        &client,
        &server.info,
        "https://management.azure.com/.default",
    )
    .await;
    Harness {
        sim,
        server,
        client,
        arm_token,
    }
}

pub async fn start_lro(lro_ms: u64) -> Harness {
    start(config(lro_ms)).await
}

pub fn small_throttle() -> ThrottleConfig {
    ThrottleConfig {
        write_burst: 3,
        write_refill_per_s: 0.5,
        read_burst: 3,
        read_refill_per_s: 0.5,
    }
}

/// Client-credentials token for `scope`.
pub async fn token(client: &Client, info: &SimInfo, scope: &str) -> String {
    let resp = client
        .post(&info.token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            ("client_secret", info.client_secret.as_str()),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.expect("token json");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub async fn send(
    client: &Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

impl Harness {
    pub fn base(&self) -> &str {
        &self.server.base_url
    }
    pub fn sub(&self) -> &str {
        &self.server.info.subscription_id
    }
    pub fn rg_path(&self, rg: &str) -> String {
        format!("/subscriptions/{}/resourceGroups/{rg}", self.sub())
    }
    pub fn id(&self, rg: &str, ty: &str, name: &str) -> String {
        format!("{}/providers/{ty}/{name}", self.rg_path(rg))
    }
    /// ARM request to `path` (which gets `?api-version=` appended when `version` is given).
    pub async fn arm(
        &self,
        method: Method,
        path: &str,
        version: &str,
        body: Option<&Value>,
    ) -> Reply {
        let url = if version.is_empty() {
            format!("{}{path}", self.base())
        } else if path.contains('?') {
            format!("{}{path}&api-version={version}", self.base())
        } else {
            format!("{}{path}?api-version={version}", self.base())
        };
        send(&self.client, method, &url, Some(&self.arm_token), body).await
    }
    pub async fn put_rg(&self, rg: &str) {
        let r = self
            .arm(
                Method::PUT,
                &self.rg_path(rg),
                RES,
                Some(&json!({"location": "westeurope"})),
            )
            .await;
        assert!(r.status.is_success(), "RG PUT: {} {}", r.status, r.text);
    }
    /// PUT and wait for the operation to finish; returns the final GET body.
    pub async fn put_and_wait(&self, id: &str, version: &str, body: &Value) -> Value {
        let r = self.arm(Method::PUT, id, version, Some(body)).await;
        assert!(r.status.is_success(), "PUT {id}: {} {}", r.status, r.text);
        match (r.header("azure-asyncoperation"), r.header("location")) {
            (Some(url), _) => {
                let status = self.poll_async(&url).await;
                assert_eq!(status["status"], "Succeeded", "{status}");
            }
            // Storage: 202 with only a Location.
            (None, Some(url)) => {
                let done = self.poll_location(&url).await;
                assert_eq!(done.status, StatusCode::OK, "{}", done.text);
            }
            (None, None) => assert_eq!(r.status, StatusCode::OK, "synchronous PUT"),
        }
        let g = self.arm(Method::GET, id, version, None).await;
        assert_eq!(g.status, StatusCode::OK);
        g.body
    }
    /// Polls an Azure-AsyncOperation URL until it is terminal.
    pub async fn poll_async(&self, url: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = send(&self.client, Method::GET, url, Some(&self.arm_token), None).await;
            assert_eq!(r.status, StatusCode::OK, "status URL: {}", r.text);
            let s = r.body["status"].as_str().unwrap_or("").to_string();
            if matches!(s.as_str(), "Succeeded" | "Failed" | "Canceled") {
                return r.body;
            }
            assert!(Instant::now() < deadline, "operation never finished");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    /// Polls a Location URL until it stops answering 202; returns the final reply.
    pub async fn poll_location(&self, url: &str) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = send(&self.client, Method::GET, url, Some(&self.arm_token), None).await;
            if r.status != StatusCode::ACCEPTED {
                return r;
            }
            assert!(Instant::now() < deadline, "operation never finished");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    /// DELETE and wait through the Location header.
    pub async fn delete_and_wait(&self, id: &str, version: &str) {
        let r = self.arm(Method::DELETE, id, version, None).await;
        if r.status == StatusCode::NO_CONTENT {
            return;
        }
        assert_eq!(r.status, StatusCode::ACCEPTED, "DELETE {id}: {}", r.text);
        let loc = r.header("location").expect("Location");
        let done = self.poll_location(&loc).await;
        assert!(done.status.is_success(), "delete result {}", done.text);
    }
    pub async fn vnet(&self, rg: &str, name: &str, subnet_nsg: Option<&str>) -> String {
        let id = self.id(rg, "Microsoft.Network/virtualNetworks", name);
        let mut subnet = json!({"name": "default", "properties": {"addressPrefix": "10.0.1.0/24"}});
        if let Some(nsg) = subnet_nsg {
            subnet["properties"]["networkSecurityGroup"] = json!({"id": nsg});
        }
        let body = json!({
            "location": "westeurope",
            "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}, "subnets": [subnet]}
        });
        self.put_and_wait(&id, NET, &body).await;
        id
    }
}

/// Fixture JSON by file name.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture parses")
}

/// Asserts every key present in `expected` (recursively, arrays index by index) is
/// present in `actual`. Returns the missing paths.
pub fn missing_keys(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                match a.get(k) {
                    Some(av) => missing_keys(v, av, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Object(_), _) => out.push(format!("{path} (not an object)")),
        (Value::Array(e), Value::Array(a)) => {
            if a.len() < e.len() {
                out.push(format!(
                    "{path} (array has {} < {} items)",
                    a.len(),
                    e.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a.iter()).enumerate() {
                missing_keys(ev, av, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Array(_), _) => out.push(format!("{path} (not an array)")),
        _ => {}
    }
}

pub fn assert_superset(expected: &Value, actual: &Value, what: &str) {
    let mut missing = Vec::new();
    missing_keys(expected, actual, "", &mut missing);
    assert!(
        missing.is_empty(),
        "{what}: missing {missing:?}\nactual: {actual}"
    );
}

/// Replaces every occurrence of `from` with `to` in all strings of `v`.
pub fn replace_all(v: &Value, pairs: &[(&str, &str)]) -> Value {
    let mut s = serde_json::to_string(v).expect("serialises");
    for (from, to) in pairs {
        s = s.replace(from, to);
    }
    serde_json::from_str(&s).expect("still JSON")
}
