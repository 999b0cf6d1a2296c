//! HTTP transports for the Azure clients: a real one that trusts an extra CA
//! (the simulator's) and an in-process one that hands requests to an axum
//! `Router` without a socket (tests and the benchmark).

use async_trait::async_trait;
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::{AsyncRawResponse, HttpClient, Request, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;

/// Makes ring the process's TLS crypto provider; later calls change nothing.
///
/// reqwest would otherwise pick aws-lc-rs, whose random-number generator
/// seeds itself from CPU timing jitter on first use: 35–55 ms of CPU before
/// a process's first TLS handshake, most of `flotilla serve`'s start-up.
/// ring takes its entropy from the OS. Both providers are compiled in
/// (reqwest enables aws-lc-rs), so a TLS config built without an explicit
/// provider needs this process default.
pub fn use_ring_for_tls() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: that one is ring too.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A reqwest client for Azure calls. `extra_ca_pem`, when given, is trusted in
/// addition to the platform roots; certificate checks are never switched off.
pub fn https_client(extra_ca_pem: Option<&[u8]>) -> Result<Arc<dyn HttpClient>, String> {
    build_https(extra_ca_pem, false)
}

/// A reqwest client that trusts only the CA certificates in `ca_pem`: for a
/// world whose every HTTPS endpoint is the simulator. It skips reading the
/// platform's roots (hundreds of files, a third of a warm `serve` start).
pub fn https_client_trusting_only(ca_pem: &[u8]) -> Result<Arc<dyn HttpClient>, String> {
    build_https(Some(ca_pem), true)
}

fn build_https(ca_pem: Option<&[u8]>, only: bool) -> Result<Arc<dyn HttpClient>, String> {
    use_ring_for_tls();
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60));
    if let Some(pem) = ca_pem {
        // One or more PEM certificates (e.g. the simulator's CA and an emulator's cert).
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("bad CA certificate: {e}"))?;
        if certs.is_empty() {
            return Err("the CA file holds no PEM certificate".into());
        }
        builder = if only {
            builder.tls_certs_only(certs)
        } else {
            builder.tls_certs_merge(certs)
        };
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build HTTPS client: {e}"))?;
    Ok(Arc::new(client))
}

/// Sends each request to an axum `Router` in this process. The URL's host is
/// ignored, so clients can keep their `https://` endpoints (the bearer-token
/// policy insists on https).
#[derive(Clone)]
pub struct RouterTransport {
    router: axum::Router,
}

impl RouterTransport {
    pub fn new(router: axum::Router) -> Arc<Self> {
        Arc::new(RouterTransport { router })
    }
}

impl std::fmt::Debug for RouterTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouterTransport")
    }
}

#[async_trait]
impl HttpClient for RouterTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let url = request.url();
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{}", url.path(), q),
            None => url.path().to_string(),
        };
        let mut builder = http::Request::builder()
            .method(request.method().as_str())
            .uri(path_and_query);
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body: bytes::Bytes = match request.body() {
            azure_core::http::Body::Bytes(b) => b.clone(),
            #[allow(unreachable_patterns)]
            _ => {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Other,
                    "RouterTransport supports buffered bodies only",
                ))
            }
        };
        let req = builder.body(axum::body::Body::from(body)).map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Other, e.to_string())
        })?;
        let resp = self.router.clone().oneshot(req).await.map_err(|e| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Io, e.to_string())
        })?;
        let status = StatusCode::from(resp.status().as_u16());
        let mut headers = HashMap::with_capacity(resp.headers().len());
        for (name, value) in resp.headers() {
            if let Ok(v) = value.to_str() {
                headers.insert(header_name(name), HeaderValue::from(v.to_string()));
            }
        }
        let headers = Headers::from(headers);
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
            .await
            .map_err(|e| {
                azure_core::Error::with_message(azure_core::error::ErrorKind::Io, e.to_string())
            })?;
        Ok(AsyncRawResponse::from_bytes(status, headers, bytes))
    }
}

/// Response headers the simulator sends on most answers, named without an
/// allocation (an SDK header name built from a `String` costs two: the copy
/// and its lowercase form).
const COMMON_RESPONSE_HEADERS: [&str; 12] = [
    "content-type",
    "content-length",
    "location",
    "azure-asyncoperation",
    "retry-after",
    "etag",
    "last-modified",
    "date",
    "x-ms-request-id",
    "x-ms-correlation-request-id",
    "x-ms-client-request-id",
    "x-ms-version",
];

/// The SDK's name for response header `name` (already lowercase, as `http`
/// keeps every name).
fn header_name(name: &http::HeaderName) -> HeaderName {
    let name = name.as_str();
    match COMMON_RESPONSE_HEADERS.iter().find(|known| **known == name) {
        Some(known) => HeaderName::from_static(known),
        None => HeaderName::from(name.to_string()),
    }
}

/// Sends each request over plain HTTP to `127.0.0.1:port`, keeping its path
/// and query: a simulator in another process of this machine (the
/// benchmark's `--simulator apart`). Like [`RouterTransport`], the URL's
/// scheme and host are ignored, so clients keep their `https://` endpoints.
#[derive(Debug)]
pub struct LoopbackTransport {
    client: Arc<dyn HttpClient>,
    port: u16,
}

impl LoopbackTransport {
    pub fn new(port: u16) -> Result<Arc<Self>, String> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the loopback client: {e}"))?;
        Ok(Arc::new(LoopbackTransport {
            client: Arc::new(client),
            port,
        }))
    }
}

#[async_trait]
impl HttpClient for LoopbackTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut request = request.clone();
        let url = request.url_mut();
        let rewritten = url
            .set_scheme("http")
            .and_then(|()| url.set_host(Some("127.0.0.1")).map_err(|_| ()))
            .and_then(|()| url.set_port(Some(self.port)));
        if rewritten.is_err() {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                format!("cannot send {} to the loopback simulator", request.url()),
            ));
        }
        self.client.execute_request(&request).await
    }
}

/// A response header's value, `None` when absent. (azure_core's
/// `get_optional_string` builds an error, with a backtrace when
/// `RUST_BACKTRACE` is set, for every header that is simply absent.)
pub fn header(headers: &azure_core::http::headers::Headers, name: &'static str) -> Option<String> {
    let name = azure_core::http::headers::HeaderName::from_static(name);
    headers
        .get_optional_as::<String, std::convert::Infallible>(&name)
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::{Method, Url};

    #[tokio::test]
    async fn an_in_process_answer_keeps_every_header_known_or_not() {
        let router = axum::Router::new().fallback(|| async {
            http::Response::builder()
                .status(202)
                .header("Location", "https://sim/op/1")
                .header("Retry-After", "0")
                .header("x-ms-ratelimit-remaining-subscription-writes", "1199")
                .body(axum::body::Body::from("{}"))
                .unwrap()
        });
        let transport = RouterTransport::new(router);
        let request = Request::new(
            Url::parse("https://sim/x?api-version=1").unwrap(),
            Method::Get,
        );
        let response = transport
            .execute_request(&request)
            .await
            .unwrap()
            .try_into_raw_response()
            .await
            .unwrap();
        assert_eq!(u16::from(response.status()), 202);
        let headers = response.headers();
        let get = |name: &'static str| {
            headers
                .get_optional_str(&HeaderName::from_static(name))
                .map(str::to_string)
        };
        assert_eq!(get("location").as_deref(), Some("https://sim/op/1"));
        assert_eq!(get("retry-after").as_deref(), Some("0"));
        assert_eq!(
            get("x-ms-ratelimit-remaining-subscription-writes").as_deref(),
            Some("1199")
        );
        // The router adds the body's length.
        assert_eq!(get("content-length").as_deref(), Some("2"));
        assert_eq!(headers.iter().count(), 4);
    }
}
