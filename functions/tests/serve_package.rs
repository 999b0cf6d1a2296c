//! `flotilla package --out DIR`: host.json, one folder per function (the
//! same as functions/<name>/function.json), the executable, and DIR.zip.

mod serve_common;

use serve_common::function_folders;
use std::io::Read;
use std::path::Path;
use std::process::Command;

#[test]
fn package_lays_out_the_function_app_and_zips_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("functionapp");
    let run = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["package", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let zip_path = tmp.path().join("functionapp.zip");
    assert_eq!(report["zip"], zip_path.display().to_string());

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = root.parent().unwrap();
    assert_eq!(
        std::fs::read(out.join("host.json")).unwrap(),
        std::fs::read(repo.join("host.json")).unwrap()
    );
    let mut packaged: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    packaged.sort();
    assert_eq!(
        packaged,
        function_folders(),
        "package and functions/ drifted apart"
    );
    for name in &packaged {
        assert_eq!(
            std::fs::read(out.join(name).join("function.json")).unwrap(),
            std::fs::read(root.join(name).join("function.json")).unwrap(),
            "{name}"
        );
    }
    let exe = std::fs::read(out.join("flotilla")).unwrap();
    assert_eq!(exe, std::fs::read(env!("CARGO_BIN_EXE_flotilla")).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("flotilla"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "the executable is executable");
    }
    assert!(out.join("local.settings.example.json").is_file());

    // The zip holds the same app (not the local settings example).
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut names: Vec<String> = (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().name().unwrap().to_string())
        .collect();
    names.sort();
    let mut expected: Vec<String> = packaged
        .iter()
        .map(|n| format!("{n}/function.json"))
        .collect();
    expected.push("host.json".into());
    expected.push("flotilla".into());
    expected.sort();
    assert_eq!(names, expected);
    let mut entry = zip.by_name("flotilla").unwrap();
    assert_eq!(entry.unix_mode().map(|m| m & 0o755), Some(0o755));
    let mut bytes = vec![];
    entry.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, exe);
}

/// The zip, unpacked elsewhere as the Functions host does, starts with an empty
/// environment (no PATH, no LD_LIBRARY_PATH, no build tree), and the report says
/// what it needs from the host: glibc's own libraries and a glibc version.
#[test]
fn packaged_binary_runs_from_the_zip_and_reports_what_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("functionapp");
    let run = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["package", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    // The test build is an ordinary (dynamic) glibc one; the deployed package is
    // static (infra/hooks/package.sh, `--require-static`).
    assert_eq!(report["linkage"], "dynamic", "{report}");
    assert!(
        report["interpreter"]
            .as_str()
            .is_some_and(|i| i.contains("ld-linux")),
        "{report}"
    );
    let glibc = report["glibc"].as_str().unwrap();
    assert!(glibc.starts_with("2."), "{report}");
    let libraries: Vec<&str> = report["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(libraries.contains(&"libc.so.6"), "{report}");
    for lib in &libraries {
        assert!(
            [
                "ld-linux-x86-64.so.2",
                "ld-linux-aarch64.so.1",
                "libc.so.6",
                "libm.so.6",
                "libgcc_s.so.1",
                "libpthread.so.0",
                "libdl.so.2",
                "librt.so.1"
            ]
            .contains(lib),
            "the binary needs {lib}, which a Functions host need not have"
        );
    }

    // Unpack like the platform does (modes from the zip), far from the build tree.
    let site = tmp.path().join("site").join("wwwroot");
    std::fs::create_dir_all(&site).unwrap();
    let mut zip =
        zip::ZipArchive::new(std::fs::File::open(tmp.path().join("functionapp.zip")).unwrap())
            .unwrap();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let path = site.join(entry.enclosed_name().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = vec![];
        entry.read_to_end(&mut bytes).unwrap();
        std::fs::write(&path, bytes).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.unix_mode().unwrap_or(0o644);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    let started = Command::new(site.join("flotilla"))
        .arg("spec")
        .current_dir(tmp.path())
        .env_clear()
        .output()
        .expect("the unpacked binary starts (execute bit kept)");
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let spec: serde_json::Value = serde_json::from_slice(&started.stdout).unwrap();
    assert!(spec["workerPools"].is_array(), "{spec}");

    // A host whose glibc is older than the binary needs is refused, nothing written.
    let refused_dir = tmp.path().join("refused");
    let refused = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["package", "--max-glibc", "2.0", "--out"])
        .arg(&refused_dir)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("needs glibc {glibc} but the target has 2.0")),
        "{err}"
    );
    assert!(!refused_dir.exists() && !tmp.path().join("refused.zip").exists());
    // The binary's own glibc is accepted.
    let accepted = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["package", "--max-glibc", glibc, "--out"])
        .arg(tmp.path().join("accepted"))
        .output()
        .unwrap();
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    // `--require-static` refuses this dynamically linked binary, nothing written.
    let dynamic_dir = tmp.path().join("dynamic");
    let refused = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["package", "--require-static", "--out"])
        .arg(&dynamic_dir)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("dynamically linked") && err.contains("--require-static"),
        "{err}"
    );
    assert!(!dynamic_dir.exists() && !tmp.path().join("dynamic.zip").exists());
    // A malformed version is a usage error naming the flag.
    let bad = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["package", "--max-glibc", "two", "--out"])
        .arg(tmp.path().join("bad"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--max-glibc"));
}
