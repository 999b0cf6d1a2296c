//! The real Azure SDK clients (azure_identity, azure_security_keyvault_secrets,
//! azure_storage_blob) against the simulator over HTTPS: proof that the simulator answers
//! exactly what they send and parse.

mod common;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, RequestContent, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_secrets::models::SetSecretParameters;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use azure_storage_blob::{BlobClient, BlobClientOptions, BlobContainerClient};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Client options whose transport trusts exactly the simulator's CA.
fn client_options(h: &Harness) -> ClientOptions {
    let http = client_for(&h.sim);
    let mut custom = CustomConfiguration::default();
    custom.authority_host = h.server.info.authority_host.clone();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
        ..Default::default()
    }
}

fn credential(h: &Harness) -> Arc<dyn TokenCredential> {
    let info = &h.server.info;
    ClientSecretCredential::new(
        &info.tenant_id,
        info.client_id.clone(),
        Secret::new(info.client_secret.clone()),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(h),
        }),
    )
    .expect("credential builds")
}

#[tokio::test]
async fn sdk_clients_work_against_the_simulator() {
    let h = start_lro(0).await;
    let cred = credential(&h);

    // ClientSecretCredential parses the token response.
    let t = cred
        .get_token(&["https://management.azure.com/.default"], None)
        .await
        .expect("token");
    assert!(!t.token.secret().is_empty());

    // SecretClient: challenge, then set / get / delete / purge.
    let secrets = SecretClient::new(
        &h.server.info.keyvault_url,
        cred.clone(),
        Some(SecretClientOptions {
            client_options: client_options(&h),
            verify_challenge_resource: Some(false),
            ..Default::default()
        }),
    )
    .expect("secret client");
    let params = SetSecretParameters {
        value: Some("s3cr3t".into()),
        tags: Some(HashMap::from([(
            "flotilla-job".to_string(),
            "j1".to_string(),
        )])),
        ..Default::default()
    };
    let body: RequestContent<SetSecretParameters> = params.try_into().expect("body");
    let set = secrets
        .set_secret("storage-key", body, None)
        .await
        .expect("set_secret")
        .into_model()
        .expect("secret model");
    assert!(set
        .id
        .as_deref()
        .unwrap_or("")
        .contains("/secrets/storage-key/"));
    let got = secrets
        .get_secret("storage-key", None)
        .await
        .expect("get_secret")
        .into_model()
        .expect("secret model");
    assert_eq!(got.value.as_deref(), Some("s3cr3t"));
    let missing = secrets.get_secret("nope", None).await;
    let err = missing.expect_err("404 is an error");
    assert_eq!(
        err.http_status(),
        Some(azure_core::http::StatusCode::NotFound)
    );
    secrets
        .delete_secret("storage-key", None)
        .await
        .expect("delete_secret")
        .into_model()
        .expect("deleted model");
    secrets
        .purge_deleted_secret("storage-key", None)
        .await
        .expect("purge");

    // Blob: the account must exist in ARM first.
    h.put_rg("rg").await;
    let sa = h.id("rg", "Microsoft.Storage/storageAccounts", "stage1");
    h.put_and_wait(
        &sa,
        STORAGE,
        &json!({"location": "westeurope", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}),
    )
    .await;
    let r = h.arm(Method::GET, &sa, STORAGE, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let account = format!("{}/stage1", h.server.info.blob_endpoint);
    let container = BlobContainerClient::new(
        format!("{account}/staging").parse().expect("url"),
        Some(cred.clone()),
        Some(azure_storage_blob::BlobContainerClientOptions {
            client_options: client_options(&h),
            ..Default::default()
        }),
    )
    .expect("container client");
    container.create(None).await.expect("create container");
    let blob = BlobClient::new(
        format!("{account}/staging/job-1/spec.json")
            .parse()
            .expect("url"),
        Some(cred.clone()),
        Some(BlobClientOptions {
            client_options: client_options(&h),
            ..Default::default()
        }),
    )
    .expect("blob client");
    let content = bytes::Bytes::from_static(b"{\"workers\":3}");
    blob.upload(RequestContent::from(content.to_vec()), None)
        .await
        .expect("upload");
    let props = blob.get_properties(None).await.expect("properties");
    assert_eq!(props.status(), azure_core::http::StatusCode::Ok);
    let down = blob.download(None).await.expect("download");
    let bytes = down.body.collect().await.expect("body");
    assert_eq!(&bytes[..], &content[..]);
    assert!(blob.exists().await.expect("exists"));
    blob.delete(None).await.expect("delete");
    assert!(!blob.exists().await.expect("exists after delete"));
    h.server.shutdown().await;
}
