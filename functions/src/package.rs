//! `flotilla package --out DIR`: lays out a deployable function app (host.json,
//! one `<function>/function.json` per function of `serve::FUNCTIONS`, and
//! this executable as `flotilla`) and zips it to `DIR.zip` for zip deploy.

use crate::serve::{FUNCTIONS, HOST_JSON, LOCAL_SETTINGS_EXAMPLE};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The executable's name inside the package (host.json `defaultExecutablePath`).
pub const EXECUTABLE: &str = "flotilla";

/// What `package` wrote.
pub struct Packaged {
    pub dir: PathBuf,
    pub zip: PathBuf,
    /// Relative paths of the zip's entries.
    pub entries: Vec<String>,
}

/// The zip path for a package folder: `DIR.zip` beside it.
pub fn zip_path(dir: &Path) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "functionapp".into());
    name.push(".zip");
    dir.with_file_name(name)
}

/// The app's files as (relative path, contents, unix mode).
fn files(executable: Vec<u8>) -> Vec<(String, Vec<u8>, u32)> {
    let mut out = vec![(
        "host.json".to_string(),
        HOST_JSON.as_bytes().to_vec(),
        0o644,
    )];
    for f in FUNCTIONS {
        out.push((
            format!("{}/function.json", f.name),
            f.function_json.as_bytes().to_vec(),
            0o644,
        ));
    }
    out.push((EXECUTABLE.to_string(), executable, 0o755));
    out
}

pub fn run(out: &Path) -> Result<Packaged, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let binary = std::fs::read(&exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let files = files(binary);
    for (rel, bytes, mode) in &files {
        let path = out.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        set_mode(&path, *mode)?;
    }
    // For `func start` in the folder (not part of the deployment zip).
    let example = out.join("local.settings.example.json");
    std::fs::write(&example, LOCAL_SETTINGS_EXAMPLE)
        .map_err(|e| format!("cannot write {}: {e}", example.display()))?;

    let zip = zip_path(out);
    write_zip(&zip, &files)?;
    Ok(Packaged {
        dir: out.to_path_buf(),
        zip,
        entries: files.into_iter().map(|(rel, _, _)| rel).collect(),
    })
}

fn write_zip(path: &Path, files: &[(String, Vec<u8>, u32)]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let file = std::fs::File::create(path).map_err(|e| err(&e))?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    for (rel, bytes, mode) in files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode)
            .large_file(bytes.len() >= u32::MAX as usize);
        zip.start_file(rel.as_str(), options).map_err(|e| err(&e))?;
        zip.write_all(bytes).map_err(|e| err(&e))?;
    }
    let mut inner = zip.finish().map_err(|e| err(&e))?;
    inner.flush().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), String> {
    Ok(())
}
