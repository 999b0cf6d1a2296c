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
