//! Token-endpoint failures through flotilla's ARM client (client-secret
//! credential), against the simulator's token-endpoint faults: transient
//! answers are retryable `CredentialUnavailable` (and retried inline when the
//! wait is short), refusals are terminal `CredentialRefused`, a slow endpoint
//! is cut off, and no message carries the client secret.

use std::time::{Duration, Instant};

use flotilla_azure::models::api;
use flotilla_azure::{ArmClient, AzureConfig, AzureError, ResourceId, Retry};
use flotilla_sim::FaultRule;
use flotilla_tests::{config_for, Harness};

const RG: &str = "rg-tokens";

fn token_fault(status: u16, code: &str) -> FaultRule {
    FaultRule {
        method: None,
        resource_type: Some("token".into()),
        name_pattern: None,
        status,
        code: code.into(),
        message: None,
        times: None,
        probability: None,
        latency_ms: None,
        asynchronous: false,
        principal: None,
    }
}

/// Token requests the simulator answered, by status.
fn token_statuses(h: &Harness) -> Vec<u16> {
    h.sim
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
        .map(|r| r.status)
        .collect()
}

async fn get_rg(
    h: &Harness,
    config: &AzureConfig,
) -> Result<Option<serde_json::Value>, AzureError> {
    // A fresh client has no cached token, so this GET asks the token endpoint.
    let arm = ArmClient::new(config).expect("client builds");
    arm.get(&ResourceId::resource_group(h.sub(), RG), api::RESOURCES)
        .await
}

fn assert_no_secret(h: &Harness, err: &AzureError) {
    let secret = &h.server.info.client_secret;
    assert!(!err.message.contains(secret.as_str()), "secret in {err}");
    assert!(
        !format!("{err:?}").contains(secret.as_str()),
        "secret in {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_token_503s_are_retried_inline_after_retry_after_and_the_get_succeeds() {
    let h = Harness::start(None).await;
    h.resource_group(RG).await;
    let before = token_statuses(&h).len();
    let mut rule = token_fault(503, "temporarily_unavailable");
    rule.times = Some(2);
    h.sim.add_fault(rule);

    let started = Instant::now();
    let rg = get_rg(&h, &h.config)
        .await
        .expect("succeeds on the third token request");
    assert!(rg.is_some());
    assert_eq!(token_statuses(&h)[before..], [503, 503, 200]);
    // The simulator sends `Retry-After: 1` with each 503; the client waited it out.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_503_is_a_retryable_credential_unavailable_with_its_retry_after() {
    let h = Harness::start(None).await;
    let mut config = h.config.clone();
    config.retry.max_inline_retries = 0;
    let mut rule = token_fault(503, "temporarily_unavailable");
    rule.times = Some(2);
    h.sim.add_fault(rule);

    let err = get_rg(&h, &config)
        .await
        .expect_err("the token endpoint is down");
    assert_eq!(err.code, "CredentialUnavailable", "{err:?}");
    assert_eq!(err.retry, Retry::Retryable);
    assert_eq!(err.retry_after, Some(Duration::from_secs(1)));
    assert_eq!(
        err.status, None,
        "the token endpoint's status is not the resource's"
    );
    assert!(
        err.message
            .starts_with("token endpoint answered 503 temporarily_unavailable; will retry"),
        "{err}"
    );
    assert_no_secret(&h, &err);

    // The same 503 without an OAuth error field: the status decides.
    h.sim.clear_faults();
    let mut rule = token_fault(500, "Whatever");
    rule.times = Some(1);
    h.sim.add_fault(rule);
    let err = get_rg(&h, &config).await.expect_err("500");
    assert_eq!(err.code, "CredentialUnavailable", "{err:?}");
    assert!(err.is_retryable());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_client_is_a_terminal_credential_refused_asked_once() {
    let h = Harness::start(None).await;
    h.sim.add_fault(FaultRule {
        message: Some("AADSTS7000215: Invalid client secret provided.".into()),
        ..token_fault(400, "invalid_client")
    });
    let err = get_rg(&h, &h.config).await.expect_err("refused");
    assert_eq!(err.code, "CredentialRefused", "{err:?}");
    assert_eq!(err.retry, Retry::Terminal);
    assert_eq!(
        err.message,
        "token endpoint refused the client: invalid_client (HTTP 400): \
         AADSTS7000215: Invalid client secret provided."
    );
    assert_eq!(token_statuses(&h), [400], "a refusal is not retried inline");
    assert_no_secret(&h, &err);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_without_echoing_either_secret() {
    let h = Harness::start(None).await;
    let wrong = "wrong-secret-0123456789";
    let config = config_for(&h.sim, &h.server, Some(wrong));
    let err = get_rg(&h, &config).await.expect_err("refused");
    assert_eq!(err.code, "CredentialRefused", "{err:?}");
    assert!(err.message.contains("invalid_client"), "{err}");
    assert!(err.message.contains("(HTTP 401)"), "{err}");
    assert!(!format!("{err:?}").contains(wrong), "{err:?}");
    assert_no_secret(&h, &err);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_token_endpoint_is_cut_off_and_then_fails_fast() {
    let h = Harness::start(None).await;
    let mut config = h.config.clone();
    config.retry.token_timeout = Duration::from_millis(300);
    config.retry.max_inline_wait = Duration::from_millis(100);
    h.sim.add_fault(FaultRule {
        latency_ms: Some(5_000),
        ..token_fault(503, "temporarily_unavailable")
    });
    let arm = ArmClient::new(&config).expect("client builds");
    let id = ResourceId::resource_group(h.sub(), RG);

    let started = Instant::now();
    let err = arm.get(&id, api::RESOURCES).await.expect_err("too slow");
    let first = started.elapsed();
    assert_eq!(err.code, "CredentialUnavailable", "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after, Some(Duration::from_millis(300)));
    assert_eq!(
        err.message,
        "token endpoint did not answer within 300 ms; will retry"
    );
    assert!(
        first >= Duration::from_millis(300) && first < Duration::from_secs(2),
        "cut off at the token timeout, handed back without inline retries: {first:?}"
    );

    // Within the next token_timeout, callers do not queue behind the slow endpoint.
    let started = Instant::now();
    let again = arm
        .get(&id, api::RESOURCES)
        .await
        .expect_err("still failing");
    assert_eq!(again.code, "CredentialUnavailable");
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    h.shutdown().await;
}
