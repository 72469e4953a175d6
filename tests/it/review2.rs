//! Second adversarial review: looker-push and looker-gen against their
//! contract (status codes, wire format, memory, pacing, shutdown, secrets).
//!
//! Tests marked `#[ignore = "bug: ..."]` fail on the current code and show
//! a real bug; run them with `cargo test --test it review2 -- --ignored`.
//! The others pin down subtle behaviour that is right today.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use prost::Message;

use crate::support::faultproxy::{Fault, FaultPlan, FaultProxy};
use crate::support::loki::{LokiConfig, LokiServer};
use crate::util::*;

/// What a bounded run of a binary produced.
struct Run {
    status: Option<ExitStatus>,
    stderr: String,
    elapsed: Duration,
    /// Highest VmRSS seen while it ran, in KiB.
    peak_rss_kb: u64,
}

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Waits for `child` at most `limit` (killing it then), sampling its RSS.
/// `on_tick` runs every poll with the elapsed time (to send signals).
fn supervise(mut child: Child, limit: Duration, mut on_tick: impl FnMut(Duration, u32)) -> Run {
    let started = Instant::now();
    let pid = child.id();
    let mut err = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut peak = 0;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        peak = peak.max(vm_rss_kb(pid));
        let e = started.elapsed();
        if e > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        on_tick(e, pid);
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        status,
        stderr: reader.join().unwrap_or_default(),
        elapsed: started.elapsed(),
        peak_rss_kb: peak,
    }
}

/// Runs looker-push on `input` (a file) with a time limit.
fn push_file(args: &[&str], input: &Path, limit: Duration) -> Run {
    let child = bin("looker-push")
        .args(args)
        .stdin(Stdio::from(std::fs::File::open(input).expect("input")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn looker-push");
    supervise(child, limit, |_, _| {})
}

fn write_input(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write input");
    p
}

// ---------------------------------------------------------------------
// Status codes and retries
// ---------------------------------------------------------------------

/// A store that is down behind a gateway answers 502/503 forever (and
/// Prometheus answers 503 until its TSDB is ready). The contract: if the
/// first messages are given up on before anything was acknowledged, push
/// stops, records the rest as not sent and exits 2. Only `failed`
/// (transport) give-ups trigger that; a 5xx give-up is `unknown`, so every
/// message is retried for its whole deadline, one after another.
#[test]
fn a_store_that_only_answers_503_stops_the_push_early() {
    let proxy = FaultProxy::start("http://127.0.0.1:9", FaultPlan::always(Fault::Status(503)));
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    let mut text = String::new();
    for i in 0..400 {
        text += &metric_rec(r#"{"__name__":"m","s":"a"}"#, t0 + i, "1");
    }
    let input = write_input(dir.path(), "in.ndjson", &text);
    let manifest = dir.path().join("m.ndjson");
    let url = format!("{}/api/v1/write", proxy.url());
    let run = push_file(
        &[
            "--remote-write",
            &url,
            "--manifest",
            s(&manifest),
            "--fragment-size",
            "10",
            "--fragments-per-message",
            "1",
            "--max-concurrent-writes",
            "1",
            "--retry-min-delay",
            "10ms",
            "--retry-max-delay",
            "20ms",
            "--retry-deadline",
            "300ms",
            "-q",
        ],
        &input,
        Duration::from_secs(20),
    );
    // 40 messages x 300 ms when every message is retried to its deadline.
    assert!(
        run.elapsed < Duration::from_secs(5),
        "took {:?} against a store that never acknowledged anything; exit {:?}",
        run.elapsed,
        run.status
    );
    assert_eq!(run.status.and_then(|s| s.code()), Some(2), "{}", run.stderr);
}

/// `Retry-After` is taken verbatim as seconds; a value near u64::MAX
/// overflows `Instant`/`Duration` arithmetic in the retry loop. The lane
/// task panics, its fragment stays `pending`, nothing counts it as failed
/// or unknown, and the push can end with exit 0 ("every fragment
/// acknowledged").
#[test]
fn a_huge_retry_after_is_neither_a_panic_nor_a_success() {
    let loki = LokiServer::start(LokiConfig::default());
    let proxy = FaultProxy::start(
        &loki.url(),
        // Three 503s first, so that more than a second has passed when the
        // huge Retry-After arrives (u64::MAX s + 1 s overflows Duration).
        FaultPlan::sequence(vec![
            Fault::Status(503),
            Fault::Status(503),
            Fault::Status(503),
            Fault::TooManyRequests {
                retry_after: Some("18446744073709551615".into()),
            },
        ]),
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.ndjson");
    let t0 = looker::timefmt::now_ns() - 60_000_000_000;
    let mut text = String::new();
    for i in 0..20 {
        text += &log_rec(r#"{"app":"a"}"#, t0 + i, &format!("line {i}"));
    }
    let input = write_input(dir.path(), "in.ndjson", &text);
    let run = push_file(
        &[
            "--loki",
            &proxy.url(),
            "--manifest",
            s(&manifest),
            "--retry-min-delay",
            "500ms",
            "--retry-deadline",
            "20s",
            "-q",
        ],
        &input,
        Duration::from_secs(40),
    );
    let code = run.status.and_then(|s| s.code());
    let t = trailer(&manifest);
    let acked = t["entries"]["ok"].as_u64().unwrap_or(0);
    assert!(
        code != Some(0) || acked == 20,
        "exit 0 but only {acked} of 20 entries acknowledged; trailer {t}; stderr: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

/// A 301/302/303 answer to the push POST is followed by reqwest as a GET
/// without the body; whatever 2xx the new location returns is recorded as
/// an acknowledgement of data that was never delivered.
#[test]
fn a_redirected_push_is_not_an_acknowledgement() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = posts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(64) {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = vec![0u8; 1 << 16];
            let n = c.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let resp = if head.starts_with("POST") {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                "HTTP/1.1 302 Found\r\nLocation: /landing\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            };
            let _ = c.write_all(resp.as_bytes());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.ndjson");
    let text = log_rec(r#"{"app":"a"}"#, looker::timefmt::now_ns(), "x");
    let out = push(
        &[
            "--loki",
            &format!("http://{addr}"),
            "--manifest",
            s(&manifest),
            "--retry-deadline",
            "1s",
            "-q",
        ],
        text.as_bytes(),
    );
    assert!(posts.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!(
        trailer(&manifest)["entries"]["ok"],
        0,
        "nothing was delivered, yet the manifest says ok (exit {:?})",
        out.status.code()
    );
    assert_ne!(out.status.code(), Some(0));
}

/// Loki 400 bodies carry per-entry timestamps, so every rejected message
/// has a distinct reason; the report's `rejected_reasons` map (and the
/// stderr summary, one line per key) grows with the number of rejected
/// messages instead of staying a bounded summary.
#[test]
fn rejection_reasons_stay_a_bounded_summary() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    // 30 days old: every entry is "too old" for Loki (7 days).
    let t0 = looker::timefmt::now_ns() - 30 * 24 * 3600 * 1_000_000_000;
    let mut text = String::new();
    for i in 0..300 {
        text += &log_rec(r#"{"app":"a"}"#, t0 + i * 1_000_000_000, &format!("l{i}"));
    }
    let out = push(
        &[
            "--loki",
            &loki.url(),
            "--report",
            s(&report),
            "--fragment-size",
            "1",
            "--fragments-per-message",
            "1",
        ],
        text.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let keys = r["rejected_reasons"].as_object().unwrap().len();
    let lines = stderr(&out).matches("looker-push: rejected ").count();
    assert!(
        keys <= 20 && lines <= 20,
        "{keys} distinct reasons in the report, {lines} lines on stderr, for one kind of rejection"
    );
}

// ---------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------

/// Each open fragment preallocates `min(fragment_size, 4096) * 64` bytes
/// of line buffer plus timestamp and offset vectors, and every series has
/// an open fragment until it fills or lingers out. Many series with a few
/// entries each therefore cost ~12 KB of resident memory per series
/// (100k series x 3 entries, a 68 MB input, peaks at 1.26 GB).
#[test]
fn many_series_push_stays_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = looker::timefmt::now_ns() - 60_000_000_000;
    let mut text = String::with_capacity(20_000 * 2 * 110);
    for round in 0..2 {
        for i in 0..20_000 {
            text += &log_rec(
                &format!(r#"{{"app":"a","series":"s{i:05}"}}"#),
                t0 + round,
                "GET /index.html 200",
            );
        }
    }
    let input = write_input(dir.path(), "in.ndjson", &text);
    let run = push_file(&["--null", "-q"], &input, Duration::from_secs(120));
    assert_eq!(run.status.and_then(|s| s.code()), Some(0), "{}", run.stderr);
    assert!(
        run.peak_rss_kb < 100 * 1024,
        "peak RSS {} MB for a {} MB input of 20k series",
        run.peak_rss_kb / 1024,
        text.len() >> 20
    );
}

/// Series churn (`looker-gen --churn-every`): every per-series table of
/// the batching thread (by_json, by_labels, series, last, Batcher::open)
/// keeps every series ever seen, so memory grows with the input and an
/// endless churning run ends in OOM. Measured: 300k churned series with
/// --fragment-size 1 peak at 543 MB vs 12 MB for the same entries in one
/// series.
/// Series idle for a minute are forgotten, and above --max-series the
/// least recently used too, so churn faster than that is bounded by it.
#[test]
fn series_churn_does_not_grow_memory_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = looker::timefmt::now_ns() - 60_000_000_000;
    let n = 120_000;
    let mut text = String::with_capacity(n * 120);
    for i in 0..n {
        text += &log_rec(
            &format!(r#"{{"app":"a","cycle":"{i}","series":"s0"}}"#),
            t0 + i as i64,
            "GET /index.html 200",
        );
    }
    let input = write_input(dir.path(), "in.ndjson", &text);
    let run = push_file(
        &[
            "--null",
            "-q",
            "--fragment-size",
            "1",
            "--max-series",
            "20000",
        ],
        &input,
        Duration::from_secs(180),
    );
    assert_eq!(run.status.and_then(|s| s.code()), Some(0), "{}", run.stderr);
    assert!(
        run.peak_rss_kb < 100 * 1024,
        "peak RSS {} MB after {n} churned series of one entry each ({} MB input)",
        run.peak_rss_kb / 1024,
        text.len() >> 20
    );
}

// ---------------------------------------------------------------------
// Pacing
// ---------------------------------------------------------------------

/// Stages ramp linearly; the pacer follows a ramp in 100 ms segments and
/// rebuilds a *drained* limiter whenever the segment's rate changes, i.e.
/// every segment of a ramp. Each rebuild costs up to one full period, so
/// below 10/s nothing passes at all and at 20/s half is lost. Measured: a
/// 0 -> 40/s ramp over 6 s (120 entries due) let 66 through; 0 -> 400/s
/// (1200 due) let 1119 through.
#[test]
fn a_stages_ramp_delivers_its_area() {
    let dir = tempfile::tempdir().unwrap();
    let sched = write_input(
        dir.path(),
        "ramp.json",
        r#"{"stages":[{"duration":"6s","target":40}]}"#,
    );
    let report = dir.path().join("r.json");
    let t0 = looker::timefmt::now_ns() - 60_000_000_000;
    let mut text = String::new();
    for i in 0..2000 {
        text += &log_rec(r#"{"app":"a"}"#, t0 + i, &format!("l{i}"));
    }
    let input = write_input(dir.path(), "in.ndjson", &text);
    let run = push_file(
        &[
            "--null",
            "-q",
            "--schedule",
            s(&sched),
            "--report",
            s(&report),
        ],
        &input,
        Duration::from_secs(30),
    );
    assert_eq!(run.status.and_then(|s| s.code()), Some(0), "{}", run.stderr);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let read = r["entries_read"].as_u64().unwrap();
    // The area under the ramp is 0.5 * 6 s * 40/s = 120.
    assert!(
        (100..=140).contains(&read),
        "{read} entries went through a ramp whose area is 120"
    );
}

/// Pins: a constant-rate steps schedule is followed closely (the limiter
/// is built once per step).
#[test]
fn a_constant_steps_schedule_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let sched = write_input(
        dir.path(),
        "steps.json",
        r#"{"update_interval":1,"schedule":[50,0,50]}"#,
    );
    let report = dir.path().join("r.json");
    let t0 = looker::timefmt::now_ns() - 60_000_000_000;
    let mut text = String::new();
    for i in 0..100 {
        text += &log_rec(r#"{"app":"a"}"#, t0 + i, &format!("l{i}"));
    }
    let input = write_input(dir.path(), "in.ndjson", &text);
    let run = push_file(
        &[
            "--null",
            "-q",
            "--schedule",
            s(&sched),
            "--report",
            s(&report),
        ],
        &input,
        Duration::from_secs(30),
    );
    assert_eq!(run.status.and_then(|s| s.code()), Some(0), "{}", run.stderr);
    // 50 in the first second, none in the second, the rest in the third.
    assert!(
        run.elapsed >= Duration::from_millis(2800) && run.elapsed < Duration::from_secs(5),
        "{:?}",
        run.elapsed
    );
}

// ---------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------

/// The file sink writes -0.0 as `0` (an integer-looking value), so the
/// verifier reads +0.0 back and reports the fragment as altered.
#[test]
fn file_sink_keeps_negative_zero() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.ndjson");
    let manifest = dir.path().join("m.ndjson");
    let text = metric_rec(r#"{"__name__":"m"}"#, 1_700_000_000_000, "-0.0")
        + &metric_rec(r#"{"__name__":"m"}"#, 1_700_000_001_000, "1");
    let out = push(
        &["--file", s(&sink), "--manifest", s(&manifest), "-q"],
        text.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = bin("looker-verify")
        .args(["--manifest", s(&manifest), "--file", s(&sink)])
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(0), "{}", stderr(&v));
}

/// Pins the remote-write encoding of edge values: value 0.0 (omitted
/// field), -0.0 (kept, sign bit set), NaN, +-Inf, ts 0 (omitted field),
/// labels sorted by bytes with uppercase before `__name__`.
#[test]
fn remote_write_edge_values_decode_exactly() {
    let proxy = FaultProxy::start(
        "http://127.0.0.1:9",
        FaultPlan::always(Fault::AckWithoutForward),
    );
    let labels = r#"{"b":"x","__name__":"m","A":"é\"q"}"#;
    let text = [
        (0, "0"),
        (1, "-0.0"),
        (2, "\"NaN\""),
        (3, "\"+Inf\""),
        (4, "\"-Inf\""),
        (5, "5e-324"),
        (9_223_372_036_854, "-1.5"),
    ]
    .iter()
    .map(|(ts, v)| metric_rec(labels, *ts, v))
    .collect::<String>();
    let out = push(
        &[
            "--remote-write",
            &format!("{}/api/v1/write", proxy.url()),
            "-q",
        ],
        text.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = proxy.log();
    assert_eq!(log.len(), 1);
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&log[0].body)
        .unwrap();
    let req = looker::proto::WriteRequest::decode(raw.as_slice()).unwrap();
    let ts = &req.timeseries[0];
    let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["A", "__name__", "b"]);
    assert_eq!(ts.labels[0].value, "é\"q");
    let got: Vec<(i64, u64)> = ts
        .samples
        .iter()
        .map(|s| (s.timestamp, s.value.to_bits()))
        .collect();
    let want: Vec<(i64, u64)> = vec![
        (0, 0.0f64.to_bits()),
        (1, (-0.0f64).to_bits()),
        (2, f64::NAN.to_bits()),
        (3, f64::INFINITY.to_bits()),
        (4, f64::NEG_INFINITY.to_bits()),
        (5, 5e-324f64.to_bits()),
        (9_223_372_036_854, (-1.5f64).to_bits()),
    ];
    assert_eq!(got, want);
}

/// Pins the Loki `labels` selector string end to end: values with
/// backslashes, quotes, newlines, tabs, other control characters, DEL and
/// non-ASCII reach the (Go-syntax) parser of the test server unchanged;
/// ts 0 and an empty line survive the protobuf encoding.
#[test]
fn loki_selector_escaping_and_edge_entries_round_trip() {
    let loki = LokiServer::start(LokiConfig::default());
    let value = "a\\b\"c\nd\te\u{1}f\u{7f}g\u{2028}h😀\r";
    let labels = serde_json::json!({"app": value, "service_name": "x"}).to_string();
    let now = looker::timefmt::now_ns();
    let text = log_rec(&labels, now - 2_000_000_000, "")
        + &log_rec(&labels, now - 1_000_000_000, "\u{0}nul");
    let out = push(&["--loki", &loki.url()], text.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let streams = loki.streams();
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0].0.get("app").map(String::as_str), Some(value));
    assert_eq!(streams[0].1, 2);
}

/// `--max-message-bytes` bounds "one push message (encoded, before
/// compression)", but the batcher estimates 32 bytes of overhead per entry
/// and counts raw line bytes; with `--encoding json` a line of control
/// characters grows 6x when escaped (`\u0001`), so bodies exceed the
/// limit several times over.
#[test]
fn json_bodies_respect_max_message_bytes() {
    let proxy = FaultProxy::start(
        "http://127.0.0.1:9",
        FaultPlan::always(Fault::AckWithoutForward),
    );
    let line: String = std::iter::repeat_n('\u{1}', 1000).collect();
    let t0 = looker::timefmt::now_ns() - 60_000_000_000;
    let mut text = String::new();
    for i in 0..300 {
        text += &log_rec(r#"{"app":"a"}"#, t0 + i, &line);
    }
    let max = 100_000;
    let out = push(
        &[
            "--loki",
            &proxy.url(),
            "--encoding",
            "json",
            "--max-message-bytes",
            &max.to_string(),
            "-q",
        ],
        text.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let biggest = proxy.log().iter().map(|e| e.body.len()).max().unwrap();
    assert!(
        biggest <= max + 2_000,
        "a {biggest}-byte body with --max-message-bytes {max}"
    );
}

/// A Loki base URL with a query string gets the push path appended after
/// the query, so the request goes to `/` with a mangled query.
#[test]
fn loki_push_url_keeps_the_query_after_the_path() {
    let u = looker::sink::loki_push_url("http://h:3100/?tenant_token=abc");
    let parsed = reqwest::Url::parse(&u).unwrap();
    assert_eq!(parsed.path(), "/loki/api/v1/push", "{u}");
    assert_eq!(parsed.query(), Some("tenant_token=abc"), "{u}");
}

// ---------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------

/// "Secrets never appear: URLs lose user info and query strings." The
/// header's URL is redacted, but transport-error reasons embed reqwest's
/// error text, which contains the full URL with its query string, and
/// they go to the manifest's `reason`, the trailer and stderr.
#[test]
fn url_query_secrets_never_reach_manifest_or_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.ndjson");
    let text = metric_rec(r#"{"__name__":"m"}"#, now_ms(), "1");
    let out = push(
        &[
            "--remote-write",
            "http://alice:pw-s3cret@127.0.0.1:9/api/v1/write?api_key=k3y-s3cret",
            "--manifest",
            s(&manifest),
            "--retry-deadline",
            "200ms",
        ],
        text.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let m = std::fs::read_to_string(&manifest).unwrap();
    assert!(!m.contains("s3cret"), "manifest leaks a secret:\n{m}");
    assert!(
        !stderr(&out).contains("s3cret"),
        "stderr leaks a secret:\n{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------

/// Pins: SIGINT while the batching thread is blocked on a full lane whose
/// store keeps answering 503: after --shutdown-grace the in-flight message
/// is given up, the queued ones are recorded as not sent, no fragment is
/// left pending, the trailer says interrupted, and the exit code is 130.
#[test]
fn sigint_while_blocked_on_a_full_lane_resolves_every_fragment() {
    let proxy = FaultProxy::start("http://127.0.0.1:9", FaultPlan::always(Fault::Status(503)));
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.ndjson");
    let t0 = now_ms() - 60_000;
    let mut text = String::new();
    for i in 0..5000 {
        text += &metric_rec(r#"{"__name__":"m"}"#, t0 + i, "1");
    }
    let input = write_input(dir.path(), "in.ndjson", &text);
    let child = bin("looker-push")
        .args([
            "--remote-write",
            &format!("{}/api/v1/write", proxy.url()),
            "--manifest",
            s(&manifest),
            "--fragment-size",
            "10",
            "--fragments-per-message",
            "1",
            "--max-concurrent-writes",
            "1",
            "--retry-deadline",
            "1h",
            "--shutdown-grace",
            "1s",
            "-q",
        ])
        .stdin(Stdio::from(std::fs::File::open(&input).unwrap()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sent = false;
    let run = supervise(child, Duration::from_secs(30), |e, pid| {
        if !sent && e > Duration::from_millis(1500) {
            sent = true;
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
    });
    assert_eq!(
        run.status.and_then(|s| s.code()),
        Some(130),
        "{}",
        run.stderr
    );
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    let t = trailer(&manifest);
    assert_eq!(t["interrupted"], true);
    let mut last: std::collections::BTreeMap<u64, String> = Default::default();
    for f in manifest_fragments(&manifest) {
        last.insert(
            f["id"].as_u64().unwrap(),
            f["status"].as_str().unwrap().to_string(),
        );
    }
    assert!(!last.is_empty());
    assert!(
        last.values().all(|s| s != "pending" && s != "ok"),
        "{last:?}"
    );
    // The one in-flight message may have reached the store (5xx): unknown;
    // everything queued behind it was never sent: failed.
    assert_eq!(
        last.values().filter(|s| *s == "unknown").count(),
        1,
        "{last:?}"
    );
}
