//! Export to Application Insights: `APPLICATIONINSIGHTS_CONNECTION_STRING`
//! names the resource (instrumentation key, ingestion endpoint), and
//! `APPLICATIONINSIGHTS_AUTHENTICATION_STRING` (`ClientId=<id>;Authorization=AAD`,
//! the setting the Functions host reads too) asks for Entra-authenticated
//! ingestion, which a resource with local authentication off requires.
//!
//! The `opentelemetry-application-insights` exporter turns spans and metrics
//! into Application Insights envelopes (a span of kind server or consumer is a
//! request, any other a dependency; the trace id is the operation id) and
//! POSTs them, gzipped, to `{IngestionEndpoint}/v2/track`. It brings no HTTP
//! client: [`IngestionClient`] sends its uploads over flotilla's Azure
//! transport (the platform roots plus `AZURE_CA_CERT`) and, for Entra
//! ingestion, adds a bearer token of the managed identity for Azure Monitor
//! and sends to the `v2.1/track` API, which takes such tokens. The token is
//! never logged: errors name the failure, not the request.

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{HttpClient as AzureHttpClient, Method, Request};
use bytes::Bytes;
use flotilla_azure::{CredentialConfig, RetryPolicy};
use opentelemetry_application_insights::{Exporter, HttpClient};
use std::sync::Arc;

/// The token scope of Azure Monitor ingestion (the double slash is its own spelling).
const INGESTION_SCOPE: &str = "https://monitor.azure.com//.default";

/// The exporter's error type (`opentelemetry_http::HttpError`).
type HttpError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How uploads authenticate, from `APPLICATIONINSIGHTS_AUTHENTICATION_STRING`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No authentication string: the instrumentation key alone (local auth on).
    Key,
    /// An Entra token of the managed identity: user-assigned with `ClientId`,
    /// system-assigned without.
    Entra { client_id: Option<String> },
}

impl Auth {
    /// Parses the authentication string (`None`: the setting is unset).
    /// Keys are case-insensitive; `Authorization` must be `AAD`.
    pub fn parse(setting: Option<&str>) -> Result<Auth, String> {
        let Some(text) = setting else {
            return Ok(Auth::Key);
        };
        let mut authorization = None;
        let mut client_id = None;
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!(
                    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING: '{part}' is not key=value"
                ));
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(value.trim().to_string()),
                "clientid" => client_id = Some(value.trim().to_string()).filter(|v| !v.is_empty()),
                _ => {}
            }
        }
        match authorization {
            Some(a) if a.eq_ignore_ascii_case("aad") => Ok(Auth::Entra { client_id }),
            Some(other) => Err(format!(
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING: Authorization must be AAD (got '{other}')"
            )),
            None => Err(
                "APPLICATIONINSIGHTS_AUTHENTICATION_STRING: Authorization=AAD is missing".into(),
            ),
        }
    }
}

/// The exporter for `connection_string`, uploading as `auth` says over `http`;
/// the uploads run on `runtime` (the SDK calls exporters from its own threads).
pub fn exporter(
    connection_string: &str,
    auth: &Auth,
    http: Arc<dyn AzureHttpClient>,
    runtime: tokio::runtime::Handle,
) -> Result<Exporter<IngestionClient>, String> {
    let token = match auth {
        Auth::Key => None,
        Auth::Entra { client_id } => Some(
            CredentialConfig::ManagedIdentity {
                client_id: client_id.clone(),
            }
            .token_credential(&http, RetryPolicy::default().token_timeout)
            .map_err(|e| format!("the managed identity for Application Insights: {e}"))?,
        ),
    };
    let client = IngestionClient {
        inner: Arc::new(Uploader {
            http,
            token,
            runtime,
        }),
    };
    Exporter::new_from_connection_string(connection_string, client)
        .map_err(|e| format!("APPLICATIONINSIGHTS_CONNECTION_STRING: {e}"))
}

/// The exporter's HTTP client (see the module doc).
#[derive(Clone)]
pub struct IngestionClient {
    inner: Arc<Uploader>,
}

struct Uploader {
    http: Arc<dyn AzureHttpClient>,
    /// The Entra credential; `None` sends with the instrumentation key alone.
    token: Option<Arc<dyn TokenCredential>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for IngestionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestionClient")
            .field("entra", &self.inner.token.is_some())
            .finish()
    }
}

#[async_trait]
impl HttpClient for IngestionClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let uploader = self.inner.clone();
        self.inner
            .runtime
            .spawn(async move { uploader.send(request).await })
            .await
            .map_err(|e| format!("Application Insights upload: {e}"))?
    }
}

/// The track API that takes Entra tokens: `…/v2/track` becomes `…/v2.1/track`.
fn entra_track_path(url: &mut url::Url) {
    if let Some(base) = url.path().strip_suffix("/v2/track") {
        let path = format!("{base}/v2.1/track");
        url.set_path(&path);
    }
}

impl Uploader {
    async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        if parts.method != http::Method::POST {
            return Err(format!("unexpected upload method {}", parts.method).into());
        }
        let mut url = url::Url::parse(&parts.uri.to_string())?;
        if self.token.is_some() {
            entra_track_path(&mut url);
        }
        let mut out = Request::new(url, Method::Post);
        for (name, value) in &parts.headers {
            out.insert_header(name.as_str().to_string(), value.to_str()?.to_string());
        }
        if let Some(credential) = &self.token {
            let token = credential
                .get_token(&[INGESTION_SCOPE], None)
                .await
                .map_err(|e| format!("no Entra token for Application Insights: {e}"))?;
            out.insert_header("authorization", format!("Bearer {}", token.token.secret()));
        }
        out.set_body(body);
        let (status, headers, body) = self.http.execute_request(&out).await?.deconstruct();
        let body = body.collect().await?;
        let mut response = http::Response::builder().status(u16::from(status));
        for (name, value) in headers.iter() {
            response = response.header(name.as_str(), value.as_str());
        }
        Ok(response.body(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authentication_string_asks_for_entra_with_or_without_a_client_id() {
        assert_eq!(Auth::parse(None), Ok(Auth::Key));
        assert_eq!(
            Auth::parse(Some("ClientId=abc;Authorization=AAD")),
            Ok(Auth::Entra {
                client_id: Some("abc".into())
            })
        );
        assert_eq!(
            Auth::parse(Some(" authorization = aad ;")),
            Ok(Auth::Entra { client_id: None })
        );
        let err = Auth::parse(Some("ClientId=abc")).unwrap_err();
        assert!(err.contains("Authorization=AAD is missing"), "{err}");
        let err = Auth::parse(Some("Authorization=ikey")).unwrap_err();
        assert!(err.contains("must be AAD"), "{err}");
        let err = Auth::parse(Some("Authorization")).unwrap_err();
        assert!(err.contains("not key=value"), "{err}");
    }

    #[test]
    fn entra_uploads_go_to_the_v2_1_track_api() {
        let mut url = url::Url::parse("https://in.example/v2/track").unwrap();
        entra_track_path(&mut url);
        assert_eq!(url.as_str(), "https://in.example/v2.1/track");
        let mut url = url::Url::parse("https://in.example/prefix/v2/track").unwrap();
        entra_track_path(&mut url);
        assert_eq!(url.as_str(), "https://in.example/prefix/v2.1/track");
        let mut other = url::Url::parse("https://in.example/v2.1/track").unwrap();
        entra_track_path(&mut other);
        assert_eq!(other.as_str(), "https://in.example/v2.1/track");
    }

    #[test]
    fn the_exporter_refuses_a_bad_connection_string() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let http = flotilla_azure::transport::https_client(None).unwrap();
        let err = exporter("no-key-here", &Auth::Key, http, runtime.handle().clone())
            .expect_err("refused");
        assert!(
            err.starts_with("APPLICATIONINSIGHTS_CONNECTION_STRING"),
            "{err}"
        );
    }
}
