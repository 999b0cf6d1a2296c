//! `flotilla package --out DIR`: lays out a deployable function app (host.json,
//! one `<function>/function.json` per function of `serve::FUNCTIONS`, and
//! this executable as `flotilla`) and zips it to `DIR.zip` for zip deploy
//! (the executable's entry keeps mode 0755, so the host can start it).
//!
//! It also reads the executable's ELF program headers and dynamic section:
//! whether it asks for a dynamic loader (PT_INTERP), the shared libraries it
//! needs and the newest glibc symbol version it uses. All are reported, with
//! its linkage (`static`: no loader and no shared library, so nothing from the
//! host's /lib is needed). With `--require-static` a dynamically linked binary
//! is refused; with `--max-glibc` a binary that would not start on a host with
//! that glibc (the Functions Linux images) or that needs a library beyond
//! glibc's own is refused.

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

/// What an ELF executable needs from the machine that runs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfNeeds {
    /// PT_INTERP: the dynamic loader the kernel starts first (None: a static
    /// executable, static-pie included, which the kernel starts itself).
    pub interpreter: Option<String>,
    /// DT_NEEDED entries, in file order (empty for a static executable).
    pub libraries: Vec<String>,
    /// Newest `GLIBC_x.y[.z]` symbol version it references (None: no glibc symbols).
    pub glibc: Option<Vec<u32>>,
}

impl ElfNeeds {
    /// No loader and no shared library: runs on a machine with no /lib at all.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.libraries.is_empty()
    }

    /// `static` or `dynamic` (the report's `linkage`).
    pub fn linkage(&self) -> &'static str {
        if self.is_static() {
            "static"
        } else {
            "dynamic"
        }
    }

    /// Problems that keep the executable from being deployed: with
    /// `require_static`, any dynamic linkage; with `max_glibc`, see [`Self::problems`].
    pub fn check(&self, max_glibc: Option<&[u32]>, require_static: bool) -> Vec<String> {
        let mut out = vec![];
        if require_static && !self.is_static() {
            let mut what = vec![];
            if let Some(interp) = &self.interpreter {
                what.push(format!("loader {interp}"));
            }
            if !self.libraries.is_empty() {
                what.push(format!("libraries {}", self.libraries.join(", ")));
            }
            out.push(format!(
                "the executable is dynamically linked ({}) but --require-static wants a static one: \
                 build it with infra/hooks/package.sh (musl, statically linked)",
                what.join("; ")
            ));
        }
        if let Some(max) = max_glibc {
            out.extend(self.problems(max));
        }
        out
    }

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
                    "the executable needs glibc {} but the target has {}: build it statically \
                     (infra/hooks/package.sh) or against an older glibc (cargo-zigbuild's \
                     x86_64-unknown-linux-gnu.2.31)",
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

/// Reads PT_INTERP, DT_NEEDED and the GLIBC_* version needs of a 64-bit
/// little-endian ELF file.
pub fn inspect_elf(bytes: &[u8]) -> Result<ElfNeeds, crate::error::Error> {
    const PT_INTERP: u32 = 3;
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
    if bytes.get(4..6) != Some([2u8, 1].as_slice()) {
        return Err(bad("not ELF64 little-endian"));
    }
    let mut needs = ElfNeeds::default();
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    if phnum > 0 && phentsize < 56 {
        return Err(bad("program header size"));
    }
    for i in 0..phnum {
        let h = phoff + i * phentsize;
        if u32_at(h)? == PT_INTERP {
            let start = u64_at(h + 8)? as usize;
            let size = u64_at(h + 32)? as usize;
            let path = bytes
                .get(start..start.saturating_add(size))
                .ok_or_else(|| bad("interpreter"))?;
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            needs.interpreter = Some(String::from_utf8_lossy(&path[..end]).into_owned());
        }
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    if shnum > 0 && shentsize < 64 {
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
/// writing anything) an executable that would not start on such a host, and
/// with `require_static` one that is dynamically linked.
pub fn run(
    out: &Path,
    max_glibc: Option<&[u32]>,
    require_static: bool,
) -> Result<Packaged, crate::error::Error> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let binary = std::fs::read(&exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
    let needs = inspect_elf(&binary).map_err(|e| format!("{}: {e}", exe.display()))?;
    let problems = needs.check(max_glibc, require_static);
    if !problems.is_empty() {
        return Err(problems.join("; ").into());
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
        assert_eq!(needs.linkage(), "dynamic");
        assert!(needs.interpreter.is_some(), "{needs:?}");
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
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
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

    /// A minimal ELF64 executable: an optional PT_INTERP program header and,
    /// when `dynamic`, a .dynstr/.dynamic pair listing `needed` (a static-pie
    /// has a dynamic section without DT_NEEDED and no PT_INTERP).
    fn synthetic_elf(interp: Option<&str>, dynamic: bool, needed: &[&str]) -> Vec<u8> {
        let mut data = vec![];
        let interp_at = 64 + 56 * 2;
        data.resize(interp_at, 0);
        if let Some(i) = interp {
            data.extend_from_slice(i.as_bytes());
            data.push(0);
        }
        let interp_size = data.len() - interp_at;
        // .dynstr: a leading NUL, then the library names.
        let dynstr_at = data.len();
        data.push(0);
        let mut name_offsets = vec![];
        for n in needed {
            name_offsets.push((data.len() - dynstr_at) as u64);
            data.extend_from_slice(n.as_bytes());
            data.push(0);
        }
        let dynstr_size = data.len() - dynstr_at;
        while data.len() % 8 != 0 {
            data.push(0);
        }
        let dynamic_at = data.len();
        for off in &name_offsets {
            data.extend_from_slice(&1u64.to_le_bytes()); // DT_NEEDED
            data.extend_from_slice(&off.to_le_bytes());
        }
        data.extend_from_slice(&[0; 16]); // DT_NULL
        let dynamic_size = data.len() - dynamic_at;
        let shoff = data.len();
        let section = |kind: u32, off: usize, size: usize, link: u32| {
            let mut h = vec![0u8; 64];
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            h[40..44].copy_from_slice(&link.to_le_bytes());
            h
        };
        let mut sections = vec![section(0, 0, 0, 0)];
        if dynamic {
            sections.push(section(3, dynstr_at, dynstr_size, 0)); // SHT_STRTAB
            sections.push(section(6, dynamic_at, dynamic_size, 1)); // SHT_DYNAMIC -> .dynstr
        }
        for h in &sections {
            data.extend_from_slice(h);
        }
        // ELF header.
        data[0..4].copy_from_slice(b"\x7fELF");
        data[4] = 2; // ELFCLASS64
        data[5] = 1; // little-endian
        data[6] = 1;
        data[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        data[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        data[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        data[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        data[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
        data[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        // Program headers: PT_LOAD, then PT_INTERP when there is a loader.
        let mut ph = 64;
        data[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        ph += 56;
        let mut phnum = 1u16;
        if interp.is_some() {
            data[ph..ph + 4].copy_from_slice(&3u32.to_le_bytes());
            data[ph + 8..ph + 16].copy_from_slice(&(interp_at as u64).to_le_bytes());
            data[ph + 32..ph + 40].copy_from_slice(&(interp_size as u64).to_le_bytes());
            phnum += 1;
        }
        data[0x38..0x3a].copy_from_slice(&phnum.to_le_bytes());
        data[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        data[0x3c..0x3e].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        data
    }

    #[test]
    fn tells_static_from_dynamic_executables() {
        let dynamic = inspect_elf(&synthetic_elf(
            Some("/lib64/ld-linux-x86-64.so.2"),
            true,
            &["libc.so.6", "libm.so.6"],
        ))
        .unwrap();
        assert_eq!(
            dynamic,
            ElfNeeds {
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                libraries: vec!["libc.so.6".into(), "libm.so.6".into()],
                glibc: None,
            }
        );
        assert_eq!(dynamic.linkage(), "dynamic");
        let p = dynamic.check(None, true);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("dynamically linked (loader /lib64/ld-linux-x86-64.so.2; libraries libc.so.6, libm.so.6)"),
            "{p:?}"
        );
        assert!(dynamic.check(None, false).is_empty());
        assert!(dynamic.check(Some(&[2, 31]), false).is_empty());

        // Static (musl, or glibc -static): no loader, no dynamic section.
        let plain = inspect_elf(&synthetic_elf(None, false, &[])).unwrap();
        // Static-pie: a dynamic section (for its own relocations) but no DT_NEEDED, no loader.
        let pie = inspect_elf(&synthetic_elf(None, true, &[])).unwrap();
        for s in [&plain, &pie] {
            assert_eq!(s, &ElfNeeds::default());
            assert_eq!(s.linkage(), "static");
            assert!(s.check(Some(&[2, 17]), true).is_empty(), "{s:?}");
        }
        // A loader alone, or a library alone, is dynamic.
        let loader_only =
            inspect_elf(&synthetic_elf(Some("/lib/ld-musl-x86_64.so.1"), false, &[])).unwrap();
        assert_eq!(loader_only.linkage(), "dynamic");
        assert_eq!(loader_only.check(None, true).len(), 1);
        let library_only = inspect_elf(&synthetic_elf(None, true, &["libssl.so.3"])).unwrap();
        assert_eq!(library_only.linkage(), "dynamic");
        let p = library_only.check(Some(&[2, 31]), true);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("(libraries libssl.so.3)"), "{p:?}");
        assert!(p[1].contains("libssl.so.3"), "{p:?}");
    }

    /// The same on real executables: the C compiler every Rust build on Linux
    /// links with, and glibc's static libc.a (libc6-dev, which that linking
    /// needs anyway) for the static ones.
    #[test]
    fn reads_real_static_and_dynamic_executables() {
        let tmp = tempfile::tempdir().unwrap();
        let c = tmp.path().join("main.c");
        std::fs::write(&c, "int main(void) { return 0; }\n").unwrap();
        let build = |name: &str, flag: Option<&str>| -> ElfNeeds {
            let exe = tmp.path().join(name);
            let mut cc = std::process::Command::new("cc");
            cc.arg("-o").arg(&exe).arg(&c);
            if let Some(f) = flag {
                cc.arg(f);
            }
            let out = cc.output().expect("a C compiler (cc)");
            assert!(
                out.status.success(),
                "cc {flag:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            inspect_elf(&std::fs::read(&exe).unwrap()).unwrap()
        };
        let dynamic = build("dynamic", None);
        assert_eq!(dynamic.linkage(), "dynamic", "{dynamic:?}");
        assert!(
            dynamic
                .interpreter
                .as_deref()
                .is_some_and(|i| i.contains("ld-")),
            "{dynamic:?}"
        );
        assert!(
            dynamic.libraries.iter().any(|l| l == "libc.so.6"),
            "{dynamic:?}"
        );
        assert_eq!(dynamic.check(None, true).len(), 1);
        for flag in ["-static", "-static-pie"] {
            let s = build(&format!("static{flag}"), Some(flag));
            assert_eq!(s.linkage(), "static", "{flag}: {s:?}");
            assert_eq!(s, ElfNeeds::default(), "{flag}");
            assert!(s.check(Some(&[2, 31]), true).is_empty());
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(inspect_elf(b"").is_err());
        assert!(inspect_elf(b"#!/bin/sh\necho hi\n").is_err());
        assert!(inspect_elf(b"\x7fELF").is_err());
        assert!(inspect_elf(b"\x7fELF\x02").is_err());
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
