//! Running the real binaries from tests.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn bin(name: &str) -> Command {
    Command::new(assert_cmd::cargo::cargo_bin(name))
}

/// Runs looker-gen and returns its stdout; panics on failure.
pub fn gen(args: &[&str]) -> Vec<u8> {
    let out = bin("looker-gen")
        .args(args)
        .output()
        .expect("run looker-gen");
    assert!(
        out.status.success(),
        "looker-gen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs a binary with `stdin` as input.
pub fn run_with_input(name: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = bin(name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut sin = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

pub fn push(args: &[&str], stdin: &[u8]) -> Output {
    run_with_input("looker-push", args, stdin)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Start time 5 minutes ago in RFC3339, so stores accept the data and
/// output stays deterministic for a seed.
pub fn recent_start() -> String {
    looker::timefmt::format_rfc3339_ns(looker::timefmt::now_ns() - 300_000_000_000)
}

/// The trailer of a manifest, as JSON.
pub fn trailer(manifest: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(manifest).expect("read manifest");
    let last = text.lines().last().expect("manifest has lines");
    let v: serde_json::Value = serde_json::from_str(last).expect("trailer is JSON");
    assert_eq!(
        v["kind"], "trailer",
        "last manifest line is the trailer: {last}"
    );
    v
}

/// Each fragment of a manifest as its last word describes it: its
/// fragment line with `status`, `attempts`, `maybe_duplicated` and
/// `reason` from a later `outcome` line, and `labels` from its run's
/// `series` line.
pub fn manifest_fragments(manifest: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let mut series = std::collections::HashMap::new();
    let mut frags: Vec<serde_json::Value> = Vec::new();
    let mut at = std::collections::HashMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("manifest line");
        let run = v["run"].as_str().unwrap_or_default().to_string();
        match v["kind"].as_str() {
            Some("series") => {
                series.insert((run, v["sid"].as_u64().unwrap()), v["labels"].clone());
            }
            Some("fragment") => {
                let mut f = v.clone();
                if let Some(sid) = v["sid"].as_u64() {
                    f["labels"] = series[&(run.clone(), sid)].clone();
                }
                let key = (run, v["id"].as_u64().unwrap());
                match at.get(&key) {
                    Some(&i) => frags[i] = f,
                    None => {
                        at.insert(key, frags.len());
                        frags.push(f);
                    }
                }
            }
            Some("outcome") => {
                for id in v["ids"].as_array().unwrap() {
                    let f = &mut frags[at[&(run.clone(), id.as_u64().unwrap())]];
                    for k in ["status", "attempts", "maybe_duplicated", "reason"] {
                        if !v[k].is_null() {
                            f[k] = v[k].clone();
                        }
                    }
                }
            }
            _ => {}
        }
    }
    frags
}

/// The final status of each fragment, by the value of one of its labels.
pub fn statuses_by(manifest: &Path, label: &str) -> std::collections::BTreeMap<String, String> {
    manifest_fragments(manifest)
        .iter()
        .map(|f| {
            (
                f["labels"][label].as_str().unwrap_or_default().to_string(),
                f["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `[(k, v), ..]` as the map `statuses_by` returns.
pub fn string_map<const N: usize>(
    pairs: [(&str, &str); N],
) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `looker-gen --metrics` output: `n_series` series of `count` samples 1 s
/// apart from five minutes ago (Prometheus takes them), plus `extra` flags.
pub fn recent_metrics(seed: u64, n_series: usize, count: usize, extra: &[&str]) -> Vec<u8> {
    let (seed, n, c, start) = (
        seed.to_string(),
        n_series.to_string(),
        count.to_string(),
        recent_start(),
    );
    let mut args = vec![
        "--metrics",
        "--seed",
        &seed,
        "--start-time",
        &start,
        "--n-series",
        &n,
        "--count",
        &c,
        "--time-increment",
        "1s",
    ];
    args.extend_from_slice(extra);
    gen(&args)
}

/// `looker-push` that must succeed.
pub fn push_ok(args: &[&str], stdin: &[u8]) -> Output {
    let o = push(args, stdin);
    assert!(o.status.success(), "looker-push {args:?}: {}", stderr(&o));
    o
}

pub fn lines_sorted(bytes: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// A bare HTTP/1.1 POST with an empty body (admin APIs); returns status and body.
pub fn http_post(base: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut sock = std::net::TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    write!(
        sock,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    sock.read_to_string(&mut resp).expect("read");
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A path as the &str a command line wants.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs looker-verify and returns its output.
pub fn verify(args: &[&str]) -> Output {
    bin("looker-verify")
        .args(args)
        .output()
        .expect("run looker-verify")
}

/// Runs looker-verify with `args` and a report, requires the verdict ok
/// (exit 0), and returns the report.
pub fn verify_ok(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let rep = dir.path().join("report.json");
    let mut all = args.to_vec();
    all.extend(["--report", rep.to_str().expect("UTF-8 temp path")]);
    let o = verify(&all);
    assert_eq!(code(&o), 0, "looker-verify {args:?}: {}", stderr(&o));
    report(&rep)
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A JSON report written by a tool.
pub fn report(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("report written")).expect("report is JSON")
}

pub fn now_ms() -> i64 {
    looker::timefmt::now_ns() / 1_000_000
}

/// One log record in the record format.
pub fn log_rec(labels: &str, ts: i64, line: &str) -> String {
    format!(
        "{{\"labels\":{labels},\"ts\":\"{ts}\",\"line\":{}}}\n",
        serde_json::to_string(line).unwrap()
    )
}

/// One metric record in the record format.
pub fn metric_rec(labels: &str, ts: i64, value: &str) -> String {
    format!("{{\"labels\":{labels},\"ts\":{ts},\"value\":{value}}}\n")
}
