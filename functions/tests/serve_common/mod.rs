//! Shared helpers of the `serve_*` tests: start `flotilla serve` the way the
//! Functions host does (a port, then `GET /` until it answers) and talk to it
//! over plain HTTP/1.1.
#![allow(dead_code)]

use flotilla::emulators::{self, AppSettings, FlotillaProcess};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// Folders under functions/ holding a function.json.
pub fn function_folders() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env!("CARGO_MANIFEST_DIR"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("function.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A raw answer: status, headers (lower-cased names), body.
pub type Raw = (u16, Vec<(String, String)>, Vec<u8>);

pub struct Server {
    pub port: u16,
    proc: FlotillaProcess,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts `flotilla serve` on a free port with FUNCTIONS_CUSTOMHANDLER_PORT
    /// (as the host does) and waits for `GET /` to answer.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// [`Server::start`] with extra environment variables (settings).
    pub fn start_with(envs: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = emulators::free_port().unwrap();
        let mut settings = AppSettings::default();
        settings
            .set(
                "FLOTILLA_DATA_DIR",
                dir.path().join("data").display().to_string(),
            )
            .set("RUST_LOG", "warn");
        for (k, v) in envs {
            settings.set(k, *v);
        }
        let mut proc = FlotillaProcess::new(
            Path::new(env!("CARGO_BIN_EXE_flotilla")),
            &["serve"],
            settings,
            &dir.path().join("serve.log"),
            Some(port),
        );
        proc.spawn().expect("flotilla serve starts");
        if let Err(e) = proc.wait_ready_blocking(Duration::from_secs(60)) {
            panic!("{e}");
        }
        Server { port, proc, dir }
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> std::io::Result<Raw> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let body = body.unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nUser-Agent: Azure-Functions-Host/4.0\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = vec![];
        s.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no header end"))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok((status, headers, raw[split + 4..].to_vec()))
    }

    /// A raw request; panics if the server does not answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Raw {
        self.try_request(method, path, content_type, Some(body))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    /// POSTs an invocation envelope to `/{function}`; (transport status, reply JSON).
    pub fn invoke(&self, function: &str, envelope: &Value) -> (u16, Value) {
        let (status, _, body) = self.request(
            "POST",
            &format!("/{function}"),
            Some("application/json"),
            envelope.to_string().as_bytes(),
        );
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Invokes an HTTP-triggered function as the host would; returns
    /// (res status, res headers, res body parsed) from `Outputs.res`.
    pub fn http(
        &self,
        function: &str,
        method: &str,
        params: Value,
        content_type: Option<&str>,
        body: &str,
    ) -> HttpAnswer {
        let mut headers = serde_json::Map::new();
        if let Some(ct) = content_type {
            headers.insert("Content-Type".into(), json!([ct]));
        }
        let env = json!({
            "Data": {"req": {
                "Url": format!("http://localhost:7071/api/{function}"),
                "Method": method,
                "Query": {},
                "Headers": headers,
                "Params": params,
                "Identities": [],
                "Body": body,
            }},
            "Metadata": {},
        });
        let (status, reply) = self.invoke(function, &env);
        assert_eq!(status, 200, "the invocation itself succeeds: {reply}");
        HttpAnswer::of(&reply)
    }

    pub fn ready(&self) -> Value {
        let (status, _, body) = self.request("GET", "/", None, b"");
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    }
}

#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Value,
    pub body: Value,
    pub logs: Value,
}

impl HttpAnswer {
    pub fn of(reply: &Value) -> HttpAnswer {
        let res = &reply["Outputs"]["res"];
        let body = res["Body"].as_str().unwrap_or("");
        HttpAnswer {
            status: res["StatusCode"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            headers: res["Headers"].clone(),
            body: serde_json::from_str(body).unwrap_or(Value::Null),
            logs: reply["Logs"].clone(),
        }
    }

    /// Asserts an RFC 9457 problem with this status.
    pub fn assert_problem(&self, status: u16) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.headers["Content-Type"], "application/problem+json",
            "{self:?}"
        );
        for k in ["type", "title", "detail"] {
            assert!(self.body[k].is_string(), "{k} missing: {self:?}");
        }
        assert_eq!(self.body["status"], status);
    }
}

/// The built-in example spec (`flotilla spec`).
pub fn example_spec() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("spec")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}
