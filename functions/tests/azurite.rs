//! Staging to Azurite: `flotilla up --staging azurite` writes the spec and
//! init script through the production Blob adapter (account SAS from the
//! development key) and the job succeeds; the blobs are really in Azurite.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Azurite {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_azurite() -> Azurite {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/emulators");
    let main = root.join("node_modules/azurite/dist/src/blob/main.js");
    assert!(
        main.exists(),
        "Azurite is not installed: run `npm ci --prefix scripts/emulators` (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new("node")
        .arg(&main)
        .args([
            "--silent",
            "--inMemoryPersistence",
            "--extentMemoryLimit",
            "64",
            "--blobHost",
            "127.0.0.1",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--blobPort",
            &port.to_string(),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs Azurite");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Azurite did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Azurite {
        child,
        endpoint: format!("http://127.0.0.1:{port}/devstoreaccount1"),
        _dir: dir,
    }
}

#[test]
fn up_stages_to_azurite_and_succeeds() {
    let azurite = start_azurite();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
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
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
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
