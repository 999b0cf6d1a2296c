//! `flotilla package --out DIR`: lays out a deployable function app (host.json,
//! one `<function>/function.json` per function of `serve::FUNCTIONS`, and
//! this executable as `flotilla`) and zips it to `DIR.zip` for zip deploy
//! (the executable's entry keeps mode 0755, so the host can start it).
//!
//! It also reads the executable's ELF dynamic section: the shared libraries it
//! needs and the newest glibc symbol version it uses. Both are reported, and
//! with `--max-glibc` a binary that would not start on a host with that glibc
//! (the Functions Linux images) or that needs a library beyond glibc's own is
//! refused.

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
    /// What the executable needs from the machine that runs it.
    pub needs: ElfNeeds,
}

/// Shared libraries glibc itself provides (and the GCC unwinder every glibc
/// system has); a package that needs any other library would depend on what
/// happens to be installed on the build machine.
pub const BASE_LIBRARIES: &[&str] = &[
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
];

/// What a dynamically linked ELF executable needs at run time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfNeeds {
    /// DT_NEEDED entries, in file order (empty for a static executable).
    pub libraries: Vec<String>,
    /// Newest `GLIBC_x.y[.z]` symbol version it references (None: no glibc symbols).
    pub glibc: Option<Vec<u32>>,
}

impl ElfNeeds {
    /// `2.34` style text of the glibc it needs, or `none`.
    pub fn glibc_text(&self) -> String {
        match &self.glibc {
            Some(v) => v
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join("."),
            None => "none".into(),
        }
    }

    /// Problems that keep the executable from starting on a host whose glibc is `max`.
    pub fn problems(&self, max: &[u32]) -> Vec<String> {
        let mut out = vec![];
        if let Some(v) = &self.glibc {
            if v.as_slice() > max {
                out.push(format!(
                    "the executable needs glibc {} but the target has {}: build it against an older glibc \
                     (infra/hooks/package.sh uses cargo-zigbuild with x86_64-unknown-linux-gnu.2.31)",
                    self.glibc_text(),
                    version_text(max)
                ));
            }
        }
        for lib in &self.libraries {
            if !BASE_LIBRARIES.contains(&lib.as_str()) {
                out.push(format!(
                    "the executable needs the shared library {lib}, which the target may not have (link it statically)"
                ));
            }
        }
        out
    }
}

fn version_text(v: &[u32]) -> String {
    v.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// Parses a `2.31` style version (for `--max-glibc`).
pub fn parse_version(text: &str) -> Result<Vec<u32>, crate::error::Error> {
    let parts: Result<Vec<u32>, _> = text.split('.').map(str::parse::<u32>).collect();
    match parts {
        Ok(v) if (2..=3).contains(&v.len()) => Ok(v),
        _ => Err(crate::error::Error::Usage(format!(
            "--max-glibc: expected a version like 2.31, got {text:?}"
        ))),
    }
}

/// Reads DT_NEEDED and the GLIBC_* version needs of a 64-bit little-endian ELF file.
pub fn inspect_elf(bytes: &[u8]) -> Result<ElfNeeds, crate::error::Error> {
    const SHT_DYNAMIC: u32 = 6;
    const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;
    const DT_NEEDED: u64 = 1;
    let bad = |what: &str| -> crate::error::Error {
        format!("not a readable 64-bit little-endian ELF executable ({what})").into()
    };
    let u16_at = |o: usize| -> Result<u16, crate::error::Error> {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| bad("truncated"))
    };
    let u32_at = |o: usize| -> Result<u32, crate::error::Error> {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| bad("truncated"))
    };
    let u64_at = |o: usize| -> Result<u64, crate::error::Error> {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| bad("truncated"))
    };
    if bytes.get(0..4) != Some(b"\x7fELF".as_slice()) {
        return Err(bad("no ELF magic"));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(bad("not ELF64 little-endian"));
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    if shentsize < 64 {
        return Err(bad("section header size"));
    }
    // (type, offset, size, link) of every section.
    let mut sections = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let h = shoff + i * shentsize;
        sections.push((
            u32_at(h + 4)?,
            u64_at(h + 24)? as usize,
            u64_at(h + 32)? as usize,
            u32_at(h + 40)? as usize,
        ));
    }
    let string_at = |table: usize, off: usize| -> Result<String, crate::error::Error> {
        let (_, start, size, _) = *sections.get(table).ok_or_else(|| bad("string table"))?;
        let data = bytes
            .get(start..start + size)
            .ok_or_else(|| bad("string table"))?;
        let rest = data.get(off..).ok_or_else(|| bad("string offset"))?;
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let mut needs = ElfNeeds::default();
    for &(kind, off, size, link) in &sections {
        if kind == SHT_DYNAMIC {
            for e in (off..off + size).step_by(16) {
                let tag = u64_at(e)?;
                if tag == 0 {
                    break;
                }
                if tag == DT_NEEDED {
                    needs
                        .libraries
                        .push(string_at(link, u64_at(e + 8)? as usize)?);
                }
            }
        } else if kind == SHT_GNU_VERNEED {
            let mut need = off;
            for _ in 0..1024 {
                let count = u16_at(need + 2)? as usize;
                let mut aux = need + u32_at(need + 8)? as usize;
                for _ in 0..count {
                    let name = string_at(link, u32_at(aux + 8)? as usize)?;
                    if let Some(v) = name.strip_prefix("GLIBC_") {
                        if let Ok(v) = parse_version(v) {
                            if needs.glibc.as_ref().is_none_or(|cur| &v > cur) {
                                needs.glibc = Some(v);
                            }
                        }
                    }
                    let next = u32_at(aux + 12)? as usize;
                    if next == 0 {
                        break;
                    }
                    aux += next;
                }
                let next = u32_at(need + 12)? as usize;
                if next == 0 {
                    break;
                }
                need += next;
            }
        }
    }
    Ok(needs)
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

/// Writes the package for this executable; with `max_glibc`, refuses (before
/// writing anything) an executable that would not start on such a host.
pub fn run(out: &Path, max_glibc: Option<&[u32]>) -> Result<Packaged, crate::error::Error> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let binary = std::fs::read(&exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
    let needs = inspect_elf(&binary).map_err(|e| format!("{}: {e}", exe.display()))?;
    if let Some(max) = max_glibc {
        let problems = needs.problems(max);
        if !problems.is_empty() {
            return Err(problems.join("; ").into());
        }
    }
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
        needs,
    })
}

fn write_zip(path: &Path, files: &[(String, Vec<u8>, u32)]) -> Result<(), crate::error::Error> {
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
fn set_mode(path: &Path, mode: u32) -> Result<(), crate::error::Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
        crate::error::Error::io(format!("cannot chmod {}", path.display())),
    )
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), crate::error::Error> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_test_binary() {
        let bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let needs = inspect_elf(&bytes).unwrap();
        assert!(
            needs.libraries.iter().any(|l| l == "libc.so.6"),
            "{needs:?}"
        );
        let glibc = needs
            .glibc
            .clone()
            .expect("a glibc build references GLIBC_ versions");
        assert!(glibc >= vec![2, 2] && glibc < vec![3, 0], "{glibc:?}");
        assert!(needs.problems(&glibc).is_empty());
        assert!(!needs.problems(&[2, 0]).is_empty());
    }

    #[test]
    fn refuses_foreign_libraries_and_newer_glibc() {
        let needs = ElfNeeds {
            libraries: vec!["libc.so.6".into(), "libssl.so.3".into()],
            glibc: Some(vec![2, 34]),
        };
        let p = needs.problems(&[2, 31]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("needs glibc 2.34 but the target has 2.31"),
            "{p:?}"
        );
        assert!(p[1].contains("libssl.so.3"), "{p:?}");
        assert!(needs.problems(&[2, 34]).len() == 1);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(inspect_elf(b"").is_err());
        assert!(inspect_elf(b"#!/bin/sh\necho hi\n").is_err());
        let mut truncated = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        truncated.truncate(100);
        assert!(inspect_elf(&truncated).is_err());
        assert_eq!(parse_version("2.31").unwrap(), vec![2, 31]);
        assert!(parse_version("2").is_err());
        let e = parse_version("two.31").unwrap_err();
        assert!(matches!(e, crate::error::Error::Usage(_)));
        assert!(e.to_string().contains("--max-glibc"));
    }
}
