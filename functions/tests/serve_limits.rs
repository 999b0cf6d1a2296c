//! `flotilla serve` against slow and greedy clients (raw sockets, short
//! limits set through the FLOTILLA_SERVE_* settings), and specs Azure would
//! refuse answered 400 with the field named.

mod serve_common;

use serde_json::{json, Value};
use serve_common::Server;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the server closes the connection; (bytes read, time taken).
fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut out = vec![];
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the server kept the connection open ({e}) after {:?}",
                started.elapsed()
            ),
        }
    }
    (out, started.elapsed())
}

#[test]
fn slow_clients_are_cut_off() {
    let server = Server::start_with(&[
        ("FLOTILLA_SERVE_HEADER_TIMEOUT", "1"),
        ("FLOTILLA_SERVE_BODY_TIMEOUT", "1"),
    ]);

    // Slowloris: half a request line and half the headers, then nothing.
    let mut s = connect(&server);
    s.write_all(b"POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        .unwrap();
    let (answer, took) = read_until_closed(&mut s);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        took < Duration::from_secs(5),
        "closed after {took:?}, the header timeout is 1 s"
    );

    // A connection that never sends a byte is closed the same way.
    let mut s = connect(&server);
    let (_, took) = read_until_closed(&mut s);
    assert!(took < Duration::from_secs(5), "idle for {took:?}");

    // Headers in full, then a stalled body: 408 problem details, then closed.
    let mut s = connect(&server);
    s.write_all(
        b"POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"Data\":",
    )
    .unwrap();
    let (answer, took) = read_until_closed(&mut s);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(
        text.contains("urn:flotilla:problem:request-timeout"),
        "{text}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    // The server is still there for well-behaved clients.
    server.ready();
}

#[test]
fn extra_connections_wait_for_a_free_slot() {
    let server = Server::start_with(&[
        ("FLOTILLA_SERVE_MAX_CONNECTIONS", "1"),
        ("FLOTILLA_SERVE_HEADER_TIMEOUT", "60"),
    ]);
    // The one slot: a connection that says nothing (yet).
    let holder = connect(&server);
    std::thread::sleep(Duration::from_millis(300));
    let mut waiting = connect(&server);
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 64];
    match waiting.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => {
            panic!("the second connection was served while the first held the slot: {other:?}")
        }
    }
    // Once the slot is free, the waiting request is served.
    drop(holder);
    waiting
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (answer, _) = read_until_closed(&mut waiting);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn a_bad_limit_setting_stops_serve_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("serve")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("FLOTILLA_DATA_DIR", dir.path())
        .env("FLOTILLA_SERVE_BODY_TIMEOUT", "forever")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FLOTILLA_SERVE_BODY_TIMEOUT"), "{err}");
}

/// A spec Azure would refuse is a 400 problem naming the field, for type
/// errors as much as for limits, and nothing is accepted.
#[test]
fn specs_azure_would_refuse_are_400_naming_the_field() {
    let server = Server::start();
    let example: Value = serde_json::from_str(&serve_common::example_spec()).unwrap();
    let rsa_1024 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCk3U7db2yHBt0n1j+10fEi6+WWvB0whz+ZkKqqc8xlbG4C8t7x3XNFLmEHSKpyKaV4V+4NK5jiN/pHVdyVcAHYU+8ekYMu4iPSn6j9dLANHAyIq7+8Jn7zYPWlVZr4ebxMl+mXK4yGg/EtgwV3DaYugLJ0V1yziGxBr10U/oxLuQ== rsa1024";
    let many_tags: serde_json::Map<String, Value> =
        (0..10_000).map(|i| (format!("t{i}"), json!("v"))).collect();
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, &str, Change)> = vec![
        ("name", "invalid type", Box::new(|v| v["name"] = json!(123))),
        (
            "workerPools[0].min",
            "invalid type",
            Box::new(|v| v["workerPools"][0]["min"] = json!("2")),
        ),
        (
            "sshPublicKey",
            "RSA key is 1024 bits; Azure needs at least 2048",
            Box::new(move |v| v["sshPublicKey"] = json!(rsa_1024)),
        ),
        (
            "tags",
            "at most 13",
            Box::new(move |v| v["tags"] = Value::Object(many_tags.clone())),
        ),
        (
            "location",
            "region",
            Box::new(|v| v["location"] = json!("x".repeat(100_000))),
        ),
        (
            "tags.azure-owner",
            "reserved",
            Box::new(|v| v["tags"]["azure-owner"] = json!("me")),
        ),
        (
            "workerPools[0].max",
            "1-100",
            Box::new(|v| v["workerPools"][0]["max"] = json!(1000)),
        ),
    ];
    for (field, says, change) in cases {
        let mut spec = example.clone();
        change(&mut spec);
        let ans = server.http(
            "submit",
            "POST",
            json!({}),
            Some("application/json"),
            &spec.to_string(),
        );
        ans.assert_problem(400);
        assert_eq!(ans.body["type"], "urn:flotilla:problem:invalid-spec");
        assert_eq!(ans.body["field"], field, "{ans:?}");
        let detail = ans.body["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{field}: {detail}");
        assert!(
            detail.len() < 1000,
            "the detail echoes the input: {}",
            detail.len()
        );
    }
    let (status, _, body) = server.request("GET", "/", None, b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// A request larger than the listener reads is refused from its
/// Content-Length, before any of the body is read, with problem details.
#[test]
fn an_oversized_request_is_413_problem_details() {
    let server = Server::start();
    let mut s = connect(&server);
    let head = format!(
        "POST /submit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        8 * 256 * 1024 + 1
    );
    s.write_all(head.as_bytes()).unwrap();
    let (answer, _) = read_until_closed(&mut s);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(
        text.contains("urn:flotilla:problem:payload-too-large"),
        "{text}"
    );
}
