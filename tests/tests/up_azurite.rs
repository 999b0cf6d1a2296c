//! Staging to Azurite: `flotilla up --staging azurite` writes the spec and
//! init script through the production Blob adapter (account SAS from the
//! development key) and the job succeeds; the blobs are really in Azurite.

#[path = "../host/mod.rs"]
#[allow(dead_code)]
mod host;

use std::process::Command;

#[test]
fn up_stages_to_azurite_and_succeeds() {
    let azurite = host::start_azurite();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(host::flotilla_bin())
        .args([
            "up",
            "--output",
            "json",
            "--lro-seconds",
            "0.2",
            "--staging",
            "azurite",
            "--azurite-blob-endpoint",
            &azurite.endpoint,
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "Succeeded");
    let job = v["job"].as_str().unwrap();

    // The init script is in Azurite (read with a SAS from the development key).
    let sas = flotilla_azure::blob::account_sas(
        flotilla_azure::blob::DEV_STORAGE_ACCOUNT,
        flotilla_azure::blob::DEV_STORAGE_KEY,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let url = format!("{}/staging/{job}/init.sh?{sas}", azurite.endpoint);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(async {
        let r = reqwest::get(&url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 200);
    assert!(body.contains(job), "the init script names its job");
    // Without the SAS the blob is not readable (the container is private).
    let anon = rt.block_on(async {
        reqwest::get(format!("{}/staging/{job}/init.sh", azurite.endpoint))
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert!(
        anon == 401 || anon == 403 || anon == 404,
        "anonymous read got {anon}"
    );

    // A failed job removes what it staged from Azurite too.
    let dir2 = tempfile::tempdir().unwrap();
    let out = Command::new(host::flotilla_bin())
        .args([
            "up",
            "--output",
            "json",
            "--lro-seconds",
            "0.2",
            "--staging",
            "azurite",
            "--fail-at",
            "keys",
            "--azurite-blob-endpoint",
            &azurite.endpoint,
            "--data-dir",
        ])
        .arg(dir2.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "Compensated");
    let job = v["job"].as_str().unwrap();
    let url = format!("{}/staging/{job}/init.sh?{sas}", azurite.endpoint);
    let status = rt.block_on(async { reqwest::get(&url).await.unwrap().status().as_u16() });
    assert_eq!(status, 404, "compensation deletes the staged blob");
}
