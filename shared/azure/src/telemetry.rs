//! A span per Azure request and the Azure metrics.
//!
//! Every client (ARM, Key Vault, Blob, Service Bus, the token credentials)
//! sends through [`TracedHttpClient`], which wraps the transport: each request
//! inside a job's work is a client span with the OpenTelemetry HTTP
//! semantic-convention attributes (`http.request.method`, `url.full` without
//! its query, so no SAS signature or token ever lands in an attribute,
//! `server.address`, `http.response.status_code`) plus the resource type and
//! the service's request id (`x-ms-request-id`). Requests outside any span
//! (a worker's idle receive loop) are not traced.

use async_trait::async_trait;
use azure_core::http::{AsyncRawResponse, HttpClient, Request};
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use std::sync::{Arc, LazyLock};
use tracing::Instrument;

/// The Azure instruments (global meter provider; no-ops until one is installed).
pub struct AzureMetrics {
    /// `flotilla.azure.retries`: inline retries, by `flotilla.azure.resource_type`.
    pub retries: Counter<u64>,
    /// `flotilla.azure.throttles`: HTTP 429 answers, by `flotilla.azure.resource_type`.
    pub throttles: Counter<u64>,
}

/// The instruments, created on first use.
pub fn metrics() -> &'static AzureMetrics {
    static METRICS: LazyLock<AzureMetrics> = LazyLock::new(|| {
        let meter = opentelemetry::global::meter("flotilla");
        AzureMetrics {
            retries: meter
                .u64_counter("flotilla.azure.retries")
                .with_unit("{retry}")
                .with_description("Azure calls retried inline after a retryable answer")
                .build(),
            throttles: meter
                .u64_counter("flotilla.azure.throttles")
                .with_unit("{response}")
                .with_description("Azure answers that throttled (HTTP 429)")
                .build(),
        }
    });
    &METRICS
}

/// The kind of thing a request addresses, from its path: the ARM resource
/// type (`Microsoft.Compute/virtualMachineScaleSets`), or the data plane
/// (Key Vault secrets, Service Bus messages, a token endpoint, blobs).
pub fn resource_type(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(i) = segments
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))
    {
        if let Some(namespace) = segments.get(i + 1) {
            let mut out = namespace.to_string();
            for ty in segments[i + 2..].iter().step_by(2) {
                out.push('/');
                out.push_str(ty);
            }
            return out;
        }
    }
    let first = segments.first().copied().unwrap_or("");
    let has = |name: &str| segments.iter().any(|s| s.eq_ignore_ascii_case(name));
    if first.eq_ignore_ascii_case("subscriptions") {
        if has("resourceGroups") {
            "Microsoft.Resources/resourceGroups".into()
        } else {
            "Microsoft.Resources/subscriptions".into()
        }
    } else if first == "secrets" || first == "deletedsecrets" {
        "Microsoft.KeyVault/vaults/secrets".into()
    } else if has("token") || has("oauth2") {
        "Microsoft.Entra/token".into()
    } else if has("messages") {
        "Microsoft.ServiceBus/namespaces/messages".into()
    } else {
        "Microsoft.Storage/storageAccounts/blobServices".into()
    }
}

/// Counts one inline retry of a call to `resource_type`.
pub fn count_retry(resource_type: &str) {
    let attrs = [KeyValue::new(
        "flotilla.azure.resource_type",
        resource_type.to_string(),
    )];
    metrics().retries.add(1, &attrs);
}

/// The transport wrapper (see the module doc).
#[derive(Debug)]
pub struct TracedHttpClient {
    inner: Arc<dyn HttpClient>,
}

impl TracedHttpClient {
    pub fn new(inner: Arc<dyn HttpClient>) -> Arc<TracedHttpClient> {
        Arc::new(TracedHttpClient { inner })
    }
}

#[async_trait]
impl HttpClient for TracedHttpClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        if tracing::Span::current().is_none() {
            return self.inner.execute_request(request).await;
        }
        let url = request.url();
        let host = url.host_str().unwrap_or("");
        let resource_type = resource_type(url.path());
        let span = tracing::info_span!(
            "azure.request",
            otel.name = request.method().as_str(),
            otel.kind = "client",
            http.request.method = request.method().as_str(),
            url.full = %format_args!("{}://{}{}", url.scheme(), url.authority(), url.path()),
            server.address = host,
            server.port = url.port_or_known_default(),
            flotilla.azure.resource_type = %resource_type,
            http.response.status_code = tracing::field::Empty,
            az.service_request_id = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let result = self
            .inner
            .execute_request(request)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(resp) => {
                let status = u16::from(resp.status());
                span.record("http.response.status_code", status);
                if let Some(id) = resp.headers().get_optional_str(
                    &azure_core::http::headers::HeaderName::from_static("x-ms-request-id"),
                ) {
                    span.record("az.service_request_id", id);
                }
                if status >= 400 {
                    span.record("error.type", status);
                    span.record("otel.status_code", "ERROR");
                }
                if status == 429 {
                    metrics().throttles.add(
                        1,
                        &[KeyValue::new("flotilla.azure.resource_type", resource_type)],
                    );
                }
            }
            Err(e) => {
                span.record("error.type", tracing::field::display(e.kind()));
                span.record("otel.status_code", "ERROR");
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::resource_type;

    #[test]
    fn resource_types_come_from_the_path() {
        let rg = "/subscriptions/s/resourceGroups/rg";
        assert_eq!(
            resource_type(&format!(
                "{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/vmss"
            )),
            "Microsoft.Compute/virtualMachineScaleSets"
        );
        assert_eq!(
            resource_type(&format!(
                "{rg}/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
            )),
            "Microsoft.Network/virtualNetworks/subnets"
        );
        assert_eq!(resource_type(rg), "Microsoft.Resources/resourceGroups");
        assert_eq!(
            resource_type("/secrets/job-key"),
            "Microsoft.KeyVault/vaults/secrets"
        );
        assert_eq!(
            resource_type("/tenant/oauth2/v2.0/token"),
            "Microsoft.Entra/token"
        );
        assert_eq!(
            resource_type("/jobs/messages"),
            "Microsoft.ServiceBus/namespaces/messages"
        );
        assert_eq!(
            resource_type("/staging/job/node.sh"),
            "Microsoft.Storage/storageAccounts/blobServices"
        );
    }
}
