//! Fault rules on the token endpoints: `resource_type: "token"` matches both
//! the client-credentials and the managed-identity endpoint, each answers in
//! its own error shape, and `times`/`probability` work as for ARM.

mod common;

use common::{start_lro, Harness};
use flotilla_sim::FaultRule;
use reqwest::StatusCode;
use serde_json::Value;

fn token_rule(resource_type: &str, status: u16, code: &str) -> FaultRule {
    FaultRule {
        method: None,
        resource_type: Some(resource_type.into()),
        name_pattern: None,
        status,
        code: code.into(),
        message: Some("Injected: the token service is busy.".into()),
        times: None,
        probability: None,
        latency_ms: None,
        asynchronous: false,
        principal: None,
    }
}

async fn client_credentials(h: &Harness) -> reqwest::Response {
    let info = &h.server.info;
    h.client
        .post(&info.token_endpoint)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", info.client_id.as_str()),
            ("client_secret", info.client_secret.as_str()),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await
        .expect("token request")
}

async fn managed_identity(h: &Harness) -> reqwest::Response {
    let info = &h.server.info;
    h.client
        .get(format!(
            "{}?resource=https://management.azure.com/&api-version=2019-08-01",
            info.managed_identity_endpoint
        ))
        .header("X-IDENTITY-HEADER", &info.identity_header)
        .send()
        .await
        .expect("managed identity request")
}

#[tokio::test]
async fn token_rule_fails_both_endpoints_in_their_own_shapes() {
    let h = start_lro(0).await;
    let mut rule = token_rule("token", 503, "temporarily_unavailable");
    rule.times = Some(2);
    h.sim.add_fault(rule);

    let r = client_credentials(&h).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert_eq!(
        body["error_description"],
        "Injected: the token service is busy."
    );
    assert!(body["error_codes"].is_array(), "{body}");

    let r = managed_identity(&h).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["statusCode"], 503, "{body}");
    assert_eq!(body["message"], "Injected: the token service is busy.");

    // Two uses, then the rule is gone.
    assert_eq!(client_credentials(&h).await.status(), StatusCode::OK);
    assert_eq!(managed_identity(&h).await.status(), StatusCode::OK);
    h.server.shutdown().await;
}

#[tokio::test]
async fn token_rule_leaves_arm_alone_and_specific_types_pick_one_endpoint() {
    let h = start_lro(0).await;
    h.sim.add_fault(token_rule(
        "Microsoft.AAD/oauth2/token",
        400,
        "invalid_client",
    ));
    let r = client_credentials(&h).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("retry-after").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(managed_identity(&h).await.status(), StatusCode::OK);

    h.sim.clear_faults();
    h.sim.add_fault(token_rule("token", 500, "server_error"));
    let url = format!(
        "{}/subscriptions/{}/resourcegroups?api-version=2021-04-01",
        h.server.info.arm_endpoint, h.server.info.subscription_id
    );
    let r = h
        .client
        .get(&url)
        .bearer_auth(&h.arm_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "ARM is not a token endpoint");
    assert_eq!(
        managed_identity(&h).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    h.server.shutdown().await;
}

#[tokio::test]
async fn token_rule_probability_faults_about_that_share() {
    let h = start_lro(0).await;
    let mut rule = token_rule("token", 503, "temporarily_unavailable");
    rule.probability = Some(0.5);
    h.sim.add_fault(rule);
    let mut failed = 0;
    for _ in 0..100 {
        let status = client_credentials(&h).await.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            failed += 1;
        }
    }
    // Binomial(100, 0.5): outside 20..=80 has a probability below 1e-9.
    assert!((20..=80).contains(&failed), "{failed} of 100 faulted");
    h.server.shutdown().await;
}
