//! Managed-identity token failures through flotilla's ARM client, against the
//! simulator's App Service managed-identity endpoint. azure_identity reads
//! `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` from the process environment, so
//! this file holds a single test that sets them before any other thread runs.

use std::time::Duration;

use flotilla_azure::models::api;
use flotilla_azure::{ArmClient, AzureConfig, AzureError, CredentialConfig, ResourceId, Retry};
use flotilla_sim::{FaultRule, Sim, SimConfig, SimInfo};

const RG: &str = "rg-msi";

fn token_fault(status: u16, code: &str, times: Option<u32>) -> FaultRule {
    FaultRule {
        method: None,
        resource_type: Some("token".into()),
        name_pattern: None,
        status,
        code: code.into(),
        message: Some(format!("Injected {status} from the identity endpoint.")),
        times,
        probability: None,
        latency_ms: None,
        asynchronous: false,
        principal: None,
    }
}

fn msi_statuses(sim: &Sim) -> Vec<u16> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path == "/msi/token")
        .map(|r| r.status)
        .collect()
}

fn assert_no_secret(info: &SimInfo, err: &AzureError) {
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains(&info.identity_header),
        "IDENTITY_HEADER in {text}"
    );
    assert!(
        !text.contains(&info.client_secret),
        "client secret in {text}"
    );
}

#[test]
fn managed_identity_token_failures_are_classified_and_never_show_the_identity_header() {
    let sim = Sim::new(SimConfig {
        data_dir: None,
        lro: Duration::from_millis(50),
        throttle: None,
        ..SimConfig::default()
    })
    .expect("simulator starts");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let info = sim.info(&format!("https://127.0.0.1:{port}"));
    // Only this thread runs yet: no other reader of the environment.
    std::env::set_var("IDENTITY_ENDPOINT", &info.managed_identity_endpoint);
    std::env::set_var("IDENTITY_HEADER", &info.identity_header);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = sim.serve(port).await.expect("simulator serves");
        let config = AzureConfig {
            arm_endpoint: url::Url::parse(&info.arm_endpoint).unwrap(),
            subscription_id: info.subscription_id.clone(),
            keyvault_url: info.keyvault_url.clone(),
            credential: CredentialConfig::ManagedIdentity { client_id: None },
            retry: Default::default(),
            http: flotilla_azure::transport::https_client(Some(sim.ca_cert_pem().as_bytes()))
                .expect("https client"),
        };
        let rg = ResourceId::resource_group(&info.subscription_id, RG);
        ArmClient::for_environment_setup(&config)
            .expect("client")
            .put(&rg, api::RESOURCES, &serde_json::json!({"location": "westeurope"}))
            .await
            .expect("the managed identity gets a token and creates the group");

        // Two 503s: the client waits out each Retry-After and the GET succeeds.
        sim.add_fault(token_fault(503, "temporarily_unavailable", Some(2)));
        let before = msi_statuses(&sim).len();
        let got = ArmClient::new(&config)
            .expect("client")
            .get(&rg, api::RESOURCES)
            .await
            .expect("retried inline");
        assert!(got.is_some());
        assert_eq!(msi_statuses(&sim)[before..], [503, 503, 200]);

        // Without inline retries the 503 surfaces as retryable.
        let mut once = config.clone();
        once.retry.max_inline_retries = 0;
        sim.add_fault(token_fault(503, "temporarily_unavailable", Some(1)));
        let err = ArmClient::new(&once)
            .expect("client")
            .get(&rg, api::RESOURCES)
            .await
            .expect_err("503");
        assert_eq!(err.code, "CredentialUnavailable", "{err:?}");
        assert_eq!(err.retry, Retry::Retryable);
        assert_eq!(err.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(
            err.message,
            "managed-identity endpoint answered 503; will retry: Injected 503 from the identity endpoint."
        );
        assert_no_secret(&info, &err);

        // A 400 (identity not assigned) is a refusal, asked once.
        sim.add_fault(token_fault(400, "BadRequest", None));
        let before = msi_statuses(&sim).len();
        let err = ArmClient::new(&config)
            .expect("client")
            .get(&rg, api::RESOURCES)
            .await
            .expect_err("400");
        assert_eq!(err.code, "CredentialRefused", "{err:?}");
        assert_eq!(err.retry, Retry::Terminal);
        assert_eq!(
            err.message,
            "managed-identity endpoint refused the request: HTTP 400: Injected 400 from the identity endpoint."
        );
        assert_eq!(msi_statuses(&sim)[before..], [400]);
        assert_no_secret(&info, &err);

        // 401 and 403 are refusals as well.
        for status in [401, 403] {
            sim.clear_faults();
            sim.add_fault(token_fault(status, "Unauthorized", None));
            let err = ArmClient::new(&config)
                .expect("client")
                .get(&rg, api::RESOURCES)
                .await
                .expect_err("refused");
            assert_eq!(err.code, "CredentialRefused", "{err:?}");
            assert!(err.message.contains(&format!("HTTP {status}")), "{err}");
            assert_no_secret(&info, &err);
        }
        server.shutdown().await;
    });
}
