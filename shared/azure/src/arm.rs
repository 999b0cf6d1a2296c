//! The ARM client: create-or-update, read, patch, delete, POST actions and
//! tag queries on resource ids, with one long-running-operation poller and one
//! inline retry loop. It never waits for a long-running operation itself:
//! `put`/`patch`/`delete` return a [`PollState`] that the caller saves and
//! checks later with [`ArmClient::poll`].

use crate::actions::ARM_ACTIONS;
use crate::config::{AzureConfig, RetryPolicy};
use crate::models::api;
use crate::{AzureError, Listed, ResourceId};
use azure_core::credentials::TokenCredential;
use azure_core::http::headers::Headers;
use azure_core::http::policies::{auth::BearerTokenAuthorizationPolicy, Policy};
use azure_core::http::{Context, Method, Pipeline, RawResponse, Request};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// ARM's documented default wait when an operation sends no `Retry-After`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// How to check an operation that is still running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PollState {
    /// The `Azure-AsyncOperation` or `Location` URL.
    pub url: String,
    pub via: PollVia,
    /// Seconds to wait before the next check.
    pub retry_after_s: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PollVia {
    AsyncOperation,
    Location,
}

impl PollState {
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(self.retry_after_s)
    }
}

/// What a create-or-update (or patch) answered.
#[derive(Clone, Debug)]
pub struct PutStart {
    /// The principal the resource answered with: a user-assigned identity's
    /// own (`properties.principalId`), or the system-assigned identity's of
    /// any other resource (`identity.principalId`).
    pub principal_id: Option<String>,
    /// `None` when the resource is already in a terminal, successful state.
    pub poll: Option<PollState>,
}

/// The few fields of a write's answer that [`ArmClient::write`] reads; the
/// rest of the resource is skipped, not built (a scale set answers with its
/// whole model).
#[derive(Default, Deserialize)]
struct WriteAnswer {
    #[serde(default, deserialize_with = "null_as_default")]
    properties: AnswerFields,
    #[serde(default, deserialize_with = "null_as_default")]
    identity: AnswerFields,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerFields {
    #[serde(default, deserialize_with = "text_or_none")]
    provisioning_state: Option<String>,
    #[serde(default, deserialize_with = "text_or_none")]
    principal_id: Option<String>,
}

/// A field that may be `null`, read as its default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A field read as text when it is a string, and as absent otherwise (as a
/// JSON pointer lookup followed by `as_str` would).
fn text_or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

fn is_user_assigned_identity(id: &ResourceId) -> bool {
    id.resource_type()
        .eq_ignore_ascii_case("Microsoft.ManagedIdentity/userAssignedIdentities")
}

/// The principal `resource` (resource `id`'s model) has, as
/// [`PutStart::principal_id`] reads it from a write's answer.
pub fn principal_in(id: &ResourceId, resource: &Value) -> Option<String> {
    let pointer = if is_user_assigned_identity(id) {
        "/properties/principalId"
    } else {
        "/identity/principalId"
    };
    resource
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(String::from)
}

impl WriteAnswer {
    /// The answer of `resp`, read from the whole document when its shape is
    /// not the usual one (e.g. `properties` an array).
    fn of(resp: &RawResponse) -> Result<WriteAnswer, AzureError> {
        let bytes = resp.body().as_ref();
        if bytes.is_empty() {
            return Ok(WriteAnswer::default());
        }
        if let Ok(answer) = serde_json::from_slice(bytes) {
            return Ok(answer);
        }
        let body = parse_json(resp)?;
        let text = |pointer: &str| {
            body.pointer(pointer)
                .and_then(Value::as_str)
                .map(String::from)
        };
        Ok(WriteAnswer {
            properties: AnswerFields {
                provisioning_state: text("/properties/provisioningState"),
                principal_id: text("/properties/principalId"),
            },
            identity: AnswerFields {
                provisioning_state: None,
                principal_id: text("/identity/principalId"),
            },
        })
    }
}

/// What a delete answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteStart {
    /// The resource does not exist (any more): nothing to wait for.
    Gone,
    /// Deletion accepted and running.
    Pending(PollState),
}

/// Result of checking a running operation.
#[derive(Clone, Debug, PartialEq)]
pub enum PollOutcome {
    Pending { retry_after: Duration },
    Succeeded,
    Failed(AzureError),
}

/// The thin typed ARM client.
pub struct ArmClient {
    pipeline: Pipeline,
    endpoint: Url,
    subscription_id: String,
    retry: RetryPolicy,
    allowed_actions: Option<&'static [&'static str]>,
    requests: AtomicU64,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.endpoint.as_str())
            .finish()
    }
}

fn header(headers: &Headers, name: &'static str) -> Option<String> {
    crate::transport::header(headers, name)
}

fn retry_after(headers: &Headers) -> Option<Duration> {
    if let Some(ms) =
        header(headers, "retry-after-ms").or_else(|| header(headers, "x-ms-retry-after-ms"))
    {
        if let Ok(ms) = ms.trim().parse::<u64>() {
            return Some(Duration::from_millis(ms));
        }
    }
    header(headers, "retry-after")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The error carried by a non-2xx ARM answer (`{"error":{"code","message"}}`).
fn error_from_response(resp: &RawResponse) -> AzureError {
    let status = u16::from(resp.status());
    let body: Value = serde_json::from_slice(resp.body().as_ref()).unwrap_or(Value::Null);
    let err = body.get("error").unwrap_or(&body);
    let code = err
        .get("code")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| header(resp.headers(), "x-ms-error-code"))
        .unwrap_or_else(|| format!("Http{status}"));
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    AzureError::from_service(status, &code, &message, retry_after(resp.headers()))
}

/// The error of an operation that ended Failed or Canceled.
fn operation_error(body: &Value, status: &str) -> AzureError {
    let err = body.get("error").cloned().unwrap_or(Value::Null);
    let code = err.get("code").and_then(Value::as_str).unwrap_or(status);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the operation did not succeed");
    let mut e = AzureError::from_service(200, code, message, None);
    e.status = None;
    e
}

fn is_terminal_state(state: &str) -> bool {
    matches!(
        state.to_ascii_lowercase().as_str(),
        "succeeded" | "failed" | "canceled"
    )
}

/// The authorization action an ARM request needs (see [`crate::actions`]).
pub fn action_for(method: &Method, id: &ResourceId, sub_path: Option<&str>) -> String {
    let ty = if !id.is_provider_resource() {
        "Microsoft.Resources/subscriptions/resourceGroups".to_string()
    } else {
        id.resource_type()
    };
    match (method, sub_path) {
        (Method::Post, Some(action)) => format!("{ty}/{}/action", action.to_ascii_lowercase()),
        (Method::Get, Some(sub)) => format!("{ty}/{sub}/read"),
        (Method::Get, None) => format!("{ty}/read"),
        (Method::Delete, _) => format!("{ty}/delete"),
        _ => format!("{ty}/write"),
    }
}

impl ArmClient {
    /// A client restricted to [`ARM_ACTIONS`], the actions flotilla's role grants.
    pub fn new(config: &AzureConfig) -> Result<Self, AzureError> {
        let credential = config.token_credential()?;
        Ok(Self::with_credential(config, credential, Some(ARM_ACTIONS)))
    }

    /// A client with no action restriction, for preparing a simulated
    /// environment (resource group, staging account) that flotilla itself never creates.
    pub fn for_environment_setup(config: &AzureConfig) -> Result<Self, AzureError> {
        let credential = config.token_credential()?;
        Ok(Self::with_credential(config, credential, None))
    }

    fn with_credential(
        config: &AzureConfig,
        credential: Arc<dyn TokenCredential>,
        allowed_actions: Option<&'static [&'static str]>,
    ) -> Self {
        let scope = "https://management.azure.com/.default".to_string();
        let auth: Arc<dyn Policy> =
            Arc::new(BearerTokenAuthorizationPolicy::new(credential, vec![scope]));
        let pipeline = Pipeline::new(
            option_env!("CARGO_PKG_NAME"),
            option_env!("CARGO_PKG_VERSION"),
            config.client_options(),
            Vec::new(),
            vec![auth],
            None,
        );
        ArmClient {
            pipeline,
            endpoint: config.arm_endpoint.clone(),
            subscription_id: config.subscription_id.clone(),
            retry: config.retry,
            allowed_actions,
            requests: AtomicU64::new(0),
        }
    }

    pub fn subscription_id(&self) -> &str {
        &self.subscription_id
    }

    /// Requests sent so far (including inline retries and polls).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn url(
        &self,
        id: &ResourceId,
        sub_path: Option<&str>,
        api_version: &str,
    ) -> Result<Url, AzureError> {
        let mut path = id.to_string();
        if let Some(sub) = sub_path {
            path.push('/');
            path.push_str(sub);
        }
        let mut url = self
            .endpoint
            .join(&path)
            .map_err(|e| AzureError::terminal("InvalidResourceId", format!("{path}: {e}")))?;
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    fn check_action(
        &self,
        method: &Method,
        id: &ResourceId,
        sub_path: Option<&str>,
    ) -> Result<(), AzureError> {
        if let Some(allowed) = self.allowed_actions {
            let action = action_for(method, id, sub_path);
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&action)) {
                return Err(AzureError::terminal(
                    "ActionNotGranted",
                    format!(
                        "{action} is not in flotilla's ARM_ACTIONS (shared/azure/src/actions.rs)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Sends one request, retrying retryable answers inline while the wait is
    /// short; returns any answer that is a success or a 404.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<RawResponse, AzureError> {
        let payload = match body {
            Some(b) => Some(
                serde_json::to_vec(b)
                    .map_err(|e| AzureError::terminal("InvalidRequestContent", e.to_string()))?,
            ),
            None => None,
        };
        let resource_type = crate::telemetry::resource_type(url.path());
        self.retry
            .inline(&resource_type, || async {
                let mut req = Request::new(url.clone(), method);
                req.insert_header("accept", "application/json");
                // Named here, the pipeline's request-id policy finds it set;
                // looking for it absent builds an error (and, with
                // RUST_BACKTRACE set, a backtrace) on every request.
                req.insert_header(
                    "x-ms-client-request-id",
                    azure_core::Uuid::new_v4().to_string(),
                );
                if let Some(p) = &payload {
                    req.insert_header("content-type", "application/json");
                    req.set_body(p.clone());
                }
                self.requests.fetch_add(1, Ordering::Relaxed);
                let sent = self
                    .pipeline
                    .send(
                        &Context::new(),
                        &mut req,
                        Some(azure_core::http::PipelineSendOptions {
                            skip_checks: true,
                            ..Default::default()
                        }),
                    )
                    .await;
                match sent {
                    Ok(resp) => {
                        let status = u16::from(resp.status());
                        if (200..300).contains(&status) || status == 404 {
                            Ok(resp)
                        } else {
                            Err(error_from_response(&resp))
                        }
                    }
                    Err(e) => Err(AzureError::from(e)),
                }
            })
            .await
    }

    fn not_found(resp: &RawResponse) -> AzureError {
        error_from_response(resp)
    }

    /// Reads a resource; `None` when it does not exist.
    pub async fn get(
        &self,
        id: &ResourceId,
        api_version: &str,
    ) -> Result<Option<Value>, AzureError> {
        self.get_sub(id, None, api_version).await
    }

    /// Reads a sub-path of a resource such as `instanceView`.
    pub async fn get_sub(
        &self,
        id: &ResourceId,
        sub_path: Option<&str>,
        api_version: &str,
    ) -> Result<Option<Value>, AzureError> {
        self.check_action(&Method::Get, id, sub_path)?;
        let resp = self
            .send(Method::Get, self.url(id, sub_path, api_version)?, None)
            .await?;
        if u16::from(resp.status()) == 404 {
            return Ok(None);
        }
        parse_json(&resp).map(Some)
    }

    /// Create-or-update. Returns at once; a running operation comes back as a [`PollState`].
    pub async fn put(
        &self,
        id: &ResourceId,
        api_version: &str,
        body: &Value,
    ) -> Result<PutStart, AzureError> {
        self.write(Method::Put, id, api_version, body).await
    }

    /// Partial update (e.g. `{"sku":{"capacity":N}}` on a scale set).
    pub async fn patch(
        &self,
        id: &ResourceId,
        api_version: &str,
        body: &Value,
    ) -> Result<PutStart, AzureError> {
        self.write(Method::Patch, id, api_version, body).await
    }

    async fn write(
        &self,
        method: Method,
        id: &ResourceId,
        api_version: &str,
        body: &Value,
    ) -> Result<PutStart, AzureError> {
        self.check_action(&method, id, None)?;
        let resp = self
            .send(method, self.url(id, None, api_version)?, Some(body))
            .await?;
        if u16::from(resp.status()) == 404 {
            return Err(Self::not_found(&resp));
        }
        let answer = WriteAnswer::of(&resp)?;
        let state = answer
            .properties
            .provisioning_state
            .as_deref()
            .unwrap_or("Succeeded");
        let wait = retry_after(resp.headers())
            .unwrap_or(DEFAULT_POLL_INTERVAL)
            .as_secs();
        if state.eq_ignore_ascii_case("failed") || state.eq_ignore_ascii_case("canceled") {
            return Err(operation_error(&parse_json(&resp)?, state));
        }
        let poll = if let Some(url) = header(resp.headers(), "azure-asyncoperation") {
            Some(PollState {
                url,
                via: PollVia::AsyncOperation,
                retry_after_s: wait,
            })
        } else if u16::from(resp.status()) == 202 || !is_terminal_state(state) {
            header(resp.headers(), "location").map(|url| PollState {
                url,
                via: PollVia::Location,
                retry_after_s: wait,
            })
        } else {
            None
        };
        if poll.is_none() && !is_terminal_state(state) {
            // Non-terminal state and nothing to poll: re-read the resource later.
            return Err(AzureError::terminal(
                "NoPollingUrl",
                format!("{id} is {state} but no operation URL was returned"),
            ));
        }
        let principal_id = if is_user_assigned_identity(id) {
            answer.properties.principal_id
        } else {
            answer.identity.principal_id
        };
        Ok(PutStart { principal_id, poll })
    }

    /// Deletes a resource. A missing resource is success ([`DeleteStart::Gone`]).
    pub async fn delete(
        &self,
        id: &ResourceId,
        api_version: &str,
    ) -> Result<DeleteStart, AzureError> {
        self.check_action(&Method::Delete, id, None)?;
        let resp = self
            .send(Method::Delete, self.url(id, None, api_version)?, None)
            .await?;
        let status = u16::from(resp.status());
        let wait = retry_after(resp.headers())
            .unwrap_or(DEFAULT_POLL_INTERVAL)
            .as_secs();
        if status == 202 {
            if let Some(url) = header(resp.headers(), "azure-asyncoperation") {
                return Ok(DeleteStart::Pending(PollState {
                    url,
                    via: PollVia::AsyncOperation,
                    retry_after_s: wait,
                }));
            }
            if let Some(url) = header(resp.headers(), "location") {
                return Ok(DeleteStart::Pending(PollState {
                    url,
                    via: PollVia::Location,
                    retry_after_s: wait,
                }));
            }
        }
        Ok(DeleteStart::Gone)
    }

    /// A POST action such as `listKeys`; returns its JSON answer.
    pub async fn post_action(
        &self,
        id: &ResourceId,
        action: &str,
        api_version: &str,
        body: Option<&Value>,
    ) -> Result<Value, AzureError> {
        self.check_action(&Method::Post, id, Some(action))?;
        let resp = self
            .send(Method::Post, self.url(id, Some(action), api_version)?, body)
            .await?;
        if u16::from(resp.status()) == 404 {
            return Err(Self::not_found(&resp));
        }
        parse_json(&resp)
    }

    /// Checks a running operation once.
    pub async fn poll(&self, state: &PollState) -> Result<PollOutcome, AzureError> {
        let url = Url::parse(&state.url)
            .map_err(|e| AzureError::terminal("InvalidPollingUrl", e.to_string()))?;
        let resp = self.send(Method::Get, url, None).await?;
        let status = u16::from(resp.status());
        let wait = retry_after(resp.headers()).unwrap_or(DEFAULT_POLL_INTERVAL);
        match state.via {
            PollVia::AsyncOperation => {
                if status == 404 {
                    return Err(error_from_response(&resp));
                }
                let body = parse_json(&resp)?;
                let op = body
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("InProgress");
                match op.to_ascii_lowercase().as_str() {
                    "succeeded" => Ok(PollOutcome::Succeeded),
                    "failed" | "canceled" => Ok(PollOutcome::Failed(operation_error(&body, op))),
                    _ => Ok(PollOutcome::Pending { retry_after: wait }),
                }
            }
            PollVia::Location => match status {
                202 => Ok(PollOutcome::Pending { retry_after: wait }),
                _ => Ok(PollOutcome::Succeeded),
            },
        }
    }

    /// Polls until the operation ends, sleeping `Retry-After` between checks.
    /// For tools and tests; the saga engine never blocks like this.
    pub async fn wait(&self, state: &PollState, timeout: Duration) -> Result<(), AzureError> {
        let deadline = tokio::time::Instant::now() + timeout;
        tokio::time::sleep(state.retry_after()).await;
        loop {
            match self.poll(state).await? {
                PollOutcome::Succeeded => return Ok(()),
                PollOutcome::Failed(e) => return Err(e),
                PollOutcome::Pending { retry_after } => {
                    if tokio::time::Instant::now() + retry_after > deadline {
                        return Err(AzureError::transport(format!(
                            "operation still running after {timeout:?}"
                        )));
                    }
                    tokio::time::sleep(retry_after).await;
                }
            }
        }
    }

    /// Resources in a resource group carrying tag `name = value` (ids and types).
    pub async fn list_by_tag(
        &self,
        resource_group: &str,
        name: &str,
        value: &str,
    ) -> Result<Vec<Value>, AzureError> {
        let rg = ResourceId::resource_group(&self.subscription_id, resource_group);
        self.check_action(&Method::Get, &rg, Some("resources"))?;
        let mut url = self.url(&rg, Some("resources"), "2021-04-01")?;
        url.query_pairs_mut().append_pair(
            "$filter",
            &format!("tagName eq '{name}' and tagValue eq '{value}'"),
        );
        self.list_pages(url).await
    }

    /// Every resource of a resource group, or only those carrying tag
    /// `name = value`, with its type, tags and creation time
    /// (`$expand=createdTime`). ARM leaves the tags out of an answer filtered
    /// by tag. A resource group that does not exist holds nothing.
    ///
    /// One resource group at a time, on purpose: flotilla's role is granted
    /// on the clusters' resource groups, never on the subscription.
    pub async fn list_resources(
        &self,
        resource_group: &str,
        tag: Option<(&str, &str)>,
    ) -> Result<Vec<Listed>, AzureError> {
        let rg = ResourceId::resource_group(&self.subscription_id, resource_group);
        self.check_action(&Method::Get, &rg, Some("resources"))?;
        let mut url = self.url(&rg, Some("resources"), "2021-04-01")?;
        url.query_pairs_mut().append_pair("$expand", "createdTime");
        if let Some((name, value)) = tag {
            url.query_pairs_mut().append_pair(
                "$filter",
                &format!("tagName eq '{name}' and tagValue eq '{value}'"),
            );
        }
        let items = self.list_pages(url).await?;
        Ok(items.iter().filter_map(listed).collect())
    }

    /// The resources of a resource group whose name contains `fragment`
    /// (`$filter=substringof('…', name)`, evaluated by ARM), with type, tags
    /// and creation time.
    pub async fn list_named(
        &self,
        resource_group: &str,
        fragment: &str,
    ) -> Result<Vec<Listed>, AzureError> {
        let rg = ResourceId::resource_group(&self.subscription_id, resource_group);
        self.check_action(&Method::Get, &rg, Some("resources"))?;
        let mut url = self.url(&rg, Some("resources"), "2021-04-01")?;
        url.query_pairs_mut()
            .append_pair("$expand", "createdTime")
            .append_pair("$filter", &format!("substringof('{fragment}', name)"));
        let items = self.list_pages(url).await?;
        Ok(items.iter().filter_map(listed).collect())
    }

    /// The Compute resource SKUs offered to the subscription in `location`
    /// (`$filter=location eq '…'`), each with its zones and restrictions.
    /// A subscription-scope read (`Microsoft.Compute/skus/read`).
    pub async fn resource_skus(
        &self,
        location: &str,
    ) -> Result<Vec<crate::models::ResourceSku>, AzureError> {
        self.check_action_name("Microsoft.Compute/skus/read")?;
        let mut url = self.subscription_url("providers/Microsoft.Compute/skus", api::SKUS)?;
        url.query_pairs_mut()
            .append_pair("$filter", &format!("location eq '{location}'"));
        self.list_pages(url).await
    }

    /// Compute usages and limits in `location`: `cores` and one entry per VM
    /// family (`Microsoft.Compute/locations/usages/read`, subscription scope).
    pub async fn compute_usages(
        &self,
        location: &str,
    ) -> Result<Vec<crate::models::Usage>, AzureError> {
        self.check_action_name("Microsoft.Compute/locations/usages/read")?;
        let url = self.subscription_url(
            &format!("providers/Microsoft.Compute/locations/{location}/usages"),
            api::COMPUTE,
        )?;
        self.list_pages(url).await
    }

    /// The caller's own permissions on a resource group
    /// (`Microsoft.Authorization/permissions`); `None` when the group does not exist.
    pub async fn permissions(
        &self,
        resource_group: &str,
    ) -> Result<Option<Vec<crate::models::Permission>>, AzureError> {
        self.check_action_name("Microsoft.Authorization/permissions/read")?;
        let rg = ResourceId::resource_group(&self.subscription_id, resource_group);
        let url = self.url(
            &rg,
            Some("providers/Microsoft.Authorization/permissions"),
            api::AUTHORIZATION,
        )?;
        let resp = self.send(Method::Get, url, None).await?;
        if u16::from(resp.status()) == 404 {
            return Ok(None);
        }
        Ok(Some(page_of(&resp)?.value))
    }

    /// The VNets of a resource group, each as its id and address prefixes
    /// (`GET …/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks`,
    /// read straight into these two fields: a group's listing holds every
    /// VNet's whole body). A missing group holds none.
    pub async fn list_vnets(&self, resource_group: &str) -> Result<Vec<VnetPrefixes>, AzureError> {
        self.check_action_name("Microsoft.Network/virtualNetworks/read")?;
        let rg = ResourceId::resource_group(&self.subscription_id, resource_group);
        let url = self.url(
            &rg,
            Some("providers/Microsoft.Network/virtualNetworks"),
            api::NETWORK,
        )?;
        self.list_pages(url).await
    }

    /// `{endpoint}/subscriptions/{sub}/{path}?api-version=…`.
    fn subscription_url(&self, path: &str, api_version: &str) -> Result<Url, AzureError> {
        let path = format!("/subscriptions/{}/{path}", self.subscription_id);
        let mut url = self
            .endpoint
            .join(&path)
            .map_err(|e| AzureError::terminal("InvalidResourceId", format!("{path}: {e}")))?;
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    /// Refuses an action that is not in the allow-list (for requests that
    /// are not on a resource id: subscription-scope lists).
    fn check_action_name(&self, action: &str) -> Result<(), AzureError> {
        if let Some(allowed) = self.allowed_actions {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(action)) {
                return Err(AzureError::terminal(
                    "ActionNotGranted",
                    format!(
                        "{action} is not in flotilla's ARM_ACTIONS (shared/azure/src/actions.rs)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// GETs a list and its `nextLink` pages, each item read as a `T` (see
    /// [`page_of`]); a 404 (no such resource group) is an empty list.
    async fn list_pages<T: serde::de::DeserializeOwned>(
        &self,
        url: Url,
    ) -> Result<Vec<T>, AzureError> {
        let mut out = Vec::new();
        let mut next = Some(url);
        while let Some(u) = next.take() {
            let resp = self.send(Method::Get, u, None).await?;
            if u16::from(resp.status()) == 404 {
                return Ok(out);
            }
            let page = page_of::<T>(&resp)?;
            out.extend(page.value);
            next = page.next_link.and_then(|s| Url::parse(&s).ok());
        }
        Ok(out)
    }
}

/// A VNet as pre-flight reads it: its id and address prefixes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(from = "VnetItem")]
pub struct VnetPrefixes {
    pub id: String,
    pub prefixes: Vec<String>,
}

/// The two fields of a listed VNet that [`VnetPrefixes`] keeps.
#[derive(serde::Deserialize)]
struct VnetItem {
    #[serde(default)]
    id: String,
    #[serde(default)]
    properties: VnetProperties,
}

#[derive(serde::Deserialize, Default)]
struct VnetProperties {
    #[serde(default, rename = "addressSpace")]
    address_space: AddressSpace,
}

#[derive(serde::Deserialize, Default)]
struct AddressSpace {
    #[serde(default, rename = "addressPrefixes")]
    address_prefixes: Vec<String>,
}

impl From<VnetItem> for VnetPrefixes {
    fn from(v: VnetItem) -> Self {
        VnetPrefixes {
            id: v.id,
            prefixes: v.properties.address_space.address_prefixes,
        }
    }
}

/// One page of an ARM list.
#[derive(serde::Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(default, rename = "nextLink")]
    next_link: Option<String>,
}

/// A list answer read as a page of `T`s: an answer that is not JSON is a
/// transport error (retryable); an item of another shape is an unreadable
/// answer (terminal: retrying gets the same answer).
fn page_of<T: serde::de::DeserializeOwned>(resp: &RawResponse) -> Result<Page<T>, AzureError> {
    serde_json::from_slice(resp.body().as_ref()).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            AzureError::terminal("UnexpectedResponse", e.to_string())
        } else {
            AzureError::transport(format!(
                "unreadable answer ({}): {e}",
                u16::from(resp.status())
            ))
        }
    })
}

/// One item of a resources list; `None` for an item without an id.
fn listed(item: &Value) -> Option<Listed> {
    let id = item.get("id")?.as_str()?.to_string();
    let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
    let tags = item
        .get("tags")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let created = text("createdTime").and_then(|t| {
        time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
    });
    Some(Listed {
        name: text("name").unwrap_or_else(|| id.rsplit('/').next().unwrap_or("").to_string()),
        resource_type: text("type"),
        id,
        tags,
        created,
    })
}

fn parse_json(resp: &RawResponse) -> Result<Value, AzureError> {
    serde_json::from_slice(resp.body().as_ref()).map_err(|e| {
        AzureError::transport(format!(
            "unreadable answer ({}): {e}",
            u16::from(resp.status())
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> WriteAnswer {
        let raw = RawResponse::from_bytes(
            azure_core::http::StatusCode::Ok,
            Headers::new(),
            body.as_bytes().to_vec(),
        );
        WriteAnswer::of(&raw).expect("a readable answer")
    }

    #[test]
    fn a_write_answer_is_read_for_its_state_and_principals_only() {
        let a = answer(
            r#"{"id":"x","identity":{"type":"SystemAssigned","principalId":"p-1"},
                "properties":{"provisioningState":"Creating","virtualMachineProfile":{"osProfile":{}}}}"#,
        );
        assert_eq!(a.properties.provisioning_state.as_deref(), Some("Creating"));
        assert_eq!(a.identity.principal_id.as_deref(), Some("p-1"));
        let a = answer(r#"{"properties":{"principalId":"p-2","clientId":"c"}}"#);
        assert_eq!(a.properties.principal_id.as_deref(), Some("p-2"));
        assert_eq!(a.properties.provisioning_state, None);
        // Empty, null and non-string fields read as absent, as pointer lookups did.
        let a = answer("");
        assert_eq!(a.properties.provisioning_state, None);
        let a = answer(r#"{"properties":null,"identity":null}"#);
        assert_eq!(a.identity.principal_id, None);
        let a = answer(r#"{"properties":{"provisioningState":7,"principalId":null}}"#);
        assert_eq!(
            (a.properties.provisioning_state, a.properties.principal_id),
            (None, None)
        );
        // An unusual shape falls back to reading the whole document.
        let a = answer(r#"{"properties":[1],"identity":{"principalId":"p-3"}}"#);
        assert_eq!(a.identity.principal_id.as_deref(), Some("p-3"));
        let raw = RawResponse::from_bytes(
            azure_core::http::StatusCode::Ok,
            Headers::new(),
            b"not json".to_vec(),
        );
        assert!(
            WriteAnswer::of(&raw).is_err(),
            "unreadable JSON is an error"
        );
    }

    #[test]
    fn the_principal_of_an_identity_is_its_own_and_of_anything_else_its_identitys() {
        let uai = ResourceId::parse(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/n",
        )
        .expect("id");
        let vmss = ResourceId::parse(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachineScaleSets/n",
        )
        .expect("id");
        let body = serde_json::json!({"properties": {"principalId": "own"}, "identity": {"principalId": "system"}});
        assert_eq!(principal_in(&uai, &body).as_deref(), Some("own"));
        assert_eq!(principal_in(&vmss, &body).as_deref(), Some("system"));
    }

    #[test]
    fn a_listed_vnet_keeps_its_id_and_prefixes_only() {
        let listed: Vec<VnetPrefixes> = serde_json::from_value(serde_json::json!([
            {"id": "/s/vnet1", "name": "vnet1", "location": "westeurope",
             "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16", "10.1.0.0/16"]},
                            "subnets": [{"name": "a", "properties": {"addressPrefix": "10.0.0.0/24"}}]}},
            {"id": "/s/vnet2", "properties": {"provisioningState": "Updating"}},
        ]))
        .unwrap();
        assert_eq!(
            listed,
            [
                VnetPrefixes {
                    id: "/s/vnet1".into(),
                    prefixes: vec!["10.0.0.0/16".into(), "10.1.0.0/16".into()],
                },
                VnetPrefixes {
                    id: "/s/vnet2".into(),
                    prefixes: vec![],
                },
            ]
        );
    }

    #[test]
    fn actions_for_requests_are_granted() {
        let vmss = ResourceId::new(
            "s",
            "rg",
            "Microsoft.Compute",
            "virtualMachineScaleSets",
            "m",
        );
        let sa = ResourceId::new("s", "rg", "Microsoft.Storage", "storageAccounts", "a");
        let rg = ResourceId::resource_group("s", "rg");
        for action in [
            action_for(&Method::Put, &vmss, None),
            action_for(&Method::Patch, &vmss, None),
            action_for(&Method::Delete, &vmss, None),
            action_for(&Method::Get, &vmss, Some("instanceView")),
            action_for(&Method::Post, &sa, Some("listKeys")),
            action_for(&Method::Get, &rg, Some("resources")),
            action_for(&Method::Get, &rg, None),
        ] {
            assert!(ARM_ACTIONS.contains(&action.as_str()), "{action} missing");
        }
        assert!(!ARM_ACTIONS.contains(&action_for(&Method::Put, &rg, None).as_str()));
    }
}
