//! A node without a VM: runs a node's init script under bash, in a directory
//! that stands for the node's root file system (`FLOTILLA_ROOT`), with every
//! system command the script may call (`apt-get`, `systemctl`, `modprobe`,
//! `sysctl`, `kubeadm`, `kubectl`, ...) replaced by one recorder stub
//! (`node/stub.sh`). The script's HTTP calls use the real `curl`: the
//! instance metadata, token, Key Vault and Blob calls go wherever the
//! environment points them (the simulator); only the package repository key
//! and the CNI manifest come from fixtures, so nothing reaches the internet.
//!
//! `PATH` holds only the stubs and a short list of harmless real tools
//! (coreutils, sed, grep, openssl, flock, curl), so a command the stubs do not
//! cover fails instead of touching the machine.
//!
//! The simulator's booting scale set instances run their script through this
//! harness, and so do the bootstrap tests.

use std::io;
use std::path::{Path, PathBuf};

/// The recorder stub, linked under every simulated command's name.
pub const STUB: &str = include_str!("node/stub.sh");
/// The cluster CA certificate the stub `kubeadm init` installs.
pub const FIXTURE_CA_PEM: &str = include_str!("node/ca.crt");
/// `sha256:` + SHA-256 of [`FIXTURE_CA_PEM`]'s public key (SubjectPublicKeyInfo),
/// computed independently of the stubs: what kubeadm discovery must be given.
pub const FIXTURE_CA_HASH: &str =
    "sha256:fb820f7e446746d49232d431fdaddf5a64f902714acde43d8a543f9c461b4100";

/// Commands the stub stands in for.
pub const SIMULATED: &[&str] = &[
    "apt-get",
    "apt-mark",
    "dpkg-query",
    "systemctl",
    "modprobe",
    "sysctl",
    "swapoff",
    "gpg",
    "containerd",
    "kubeadm",
    "kubectl",
    "curl",
];

/// Real tools the script (and the stub) may run: they only read and write
/// files under the paths they are given.
const REAL_TOOLS: &[&str] = &[
    "bash", "cat", "sed", "grep", "head", "tail", "tr", "cmp", "mkdir", "chmod", "mv", "rm", "cp",
    "touch", "dirname", "basename", "base64", "openssl", "flock", "sleep", "cut", "wc",
];

/// One command the script ran (a stubbed one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub program: String,
    pub args: Vec<String>,
}

impl Call {
    /// The command line, space-separated (for assertions and messages).
    pub fn line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Stdout then stderr: what the init extension reports.
    pub fn log(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The last non-empty line of stderr (the failure line), or of stdout.
    pub fn last_line(&self) -> String {
        let pick = |s: &str| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        };
        pick(&self.stderr)
            .or_else(|| pick(&self.stdout))
            .unwrap_or_default()
    }
}

/// One simulated node: its root, its stubs and their records.
#[derive(Clone, Debug)]
pub struct Harness {
    dir: PathBuf,
    cluster: PathBuf,
}

/// The system's own copy of a tool (the standard directories, not `PATH`:
/// a node runs with what the OS provides).
fn find_tool(name: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Whether this machine can run node scripts (bash, curl and the real tools exist).
pub fn available() -> bool {
    REAL_TOOLS
        .iter()
        .chain(["curl"].iter())
        .all(|t| find_tool(t).is_some())
}

impl Harness {
    /// Lays out a node in `dir` (created if missing): `root/` (the node's
    /// files), `bin/` (stubs and tools), `calls.log`. `cluster` is shared by
    /// the nodes of one cluster (bootstrap tokens, certificate key).
    pub fn create(dir: &Path, cluster: &Path) -> io::Result<Harness> {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::create_dir_all(dir.join("root"))?;
        std::fs::create_dir_all(dir.join("state"))?;
        std::fs::create_dir_all(dir.join("fail"))?;
        std::fs::create_dir_all(cluster)?;
        let stub = dir.join("stub.sh");
        std::fs::write(&stub, STUB)?;
        std::fs::write(dir.join("ca.crt"), FIXTURE_CA_PEM)?;
        set_mode(&stub, 0o755)?;
        for name in SIMULATED {
            relink(&stub, &bin.join(name))?;
        }
        for tool in REAL_TOOLS {
            let real = find_tool(tool).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{tool} is not installed"))
            })?;
            relink(&real, &bin.join(tool))?;
        }
        let curl = find_tool("curl")
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "curl is not installed"))?;
        relink(&curl, &bin.join("curl.real"))?;
        std::fs::write(dir.join("calls.log"), "")?;
        Ok(Harness {
            dir: dir.to_path_buf(),
            cluster: cluster.to_path_buf(),
        })
    }

    /// The node's root file system (`FLOTILLA_ROOT`).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// A file under the node's root, e.g. `etc/kubernetes/azure.json`.
    pub fn file(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    /// Makes the stub `program` fail with `message` (on stderr, exit 1) when
    /// its arguments contain `args_containing`.
    pub fn fail(&self, program: &str, args_containing: &str, message: &str) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("fail").join(program))?;
        writeln!(f, "{args_containing}\t{message}")
    }

    /// Removes every failure rule.
    pub fn clear_failures(&self) -> io::Result<()> {
        let fail = self.dir.join("fail");
        std::fs::remove_dir_all(&fail)?;
        std::fs::create_dir_all(&fail)
    }

    /// Marks packages as installed (as if a package's files were already there).
    pub fn mark_installed(&self, packages: &[&str]) -> io::Result<()> {
        let dir = self.dir.join("state/pkgs");
        std::fs::create_dir_all(&dir)?;
        for p in packages {
            std::fs::write(dir.join(p), "")?;
        }
        Ok(())
    }

    /// Every stubbed command run so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        let log = std::fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default();
        log.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut parts = l.split('\x1f').map(str::to_string);
                Call {
                    program: parts.next().unwrap_or_default(),
                    args: parts.collect(),
                }
            })
            .collect()
    }

    /// Forgets the recorded calls (to look at a second run alone).
    pub fn clear_calls(&self) -> io::Result<()> {
        std::fs::write(self.dir.join("calls.log"), "")
    }

    /// Runs `script` as the init extension would (`bash init.sh ARGS` in its
    /// download directory), with a clean environment plus `env`.
    pub async fn run(
        &self,
        script: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> io::Result<Outcome> {
        let download = self.root().join("var/lib/waagent/custom-script/download/0");
        std::fs::create_dir_all(&download)?;
        std::fs::write(download.join("init.sh"), script)?;
        let mut cmd = tokio::process::Command::new(self.dir.join("bin/bash"));
        cmd.arg("init.sh")
            .args(args)
            .current_dir(&download)
            .env_clear()
            .env("PATH", self.dir.join("bin"))
            .env("HOME", self.root())
            .env("LANG", "C")
            .env("FLOTILLA_ROOT", self.root())
            .env("FLOTILLA_HARNESS", &self.dir)
            .env("FLOTILLA_STUB_CLUSTER", &self.cluster)
            .env("FLOTILLA_STUB_CA", self.dir.join("ca.crt"))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().await?;
        Ok(Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn relink(target: &Path, link: &Path) -> io::Result<()> {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link)
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
