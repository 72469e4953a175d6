//! looker-push end to end: into the file sink, the Loki-compatible test
//! server, a real Prometheus and a real VictoriaMetrics; bad input; retries.

use crate::support::faultproxy::{Fault, FaultPlan, FaultProxy};
use crate::support::loki::{LokiConfig, LokiServer};
use crate::support::servers::{http_get, Prometheus, VictoriaMetrics};
use crate::util::*;

#[test]
fn file_sink_holds_exactly_the_input_and_the_manifest_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = gen(&[
        "--seed",
        "7",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--n-series",
        "7",
        "--count",
        "1300",
    ]);
    let (out, man) = (dir.path().join("out.ndjson"), dir.path().join("m.ndjson"));
    push_ok(
        &[
            "--file",
            out.to_str().unwrap(),
            "--manifest",
            man.to_str().unwrap(),
            "--fragment-size",
            "100",
            "-q",
        ],
        &input,
    );
    // The file sink writes the record format, so the stored records are the
    // input records, line for line.
    assert_eq!(
        lines_sorted(&std::fs::read(&out).unwrap()),
        lines_sorted(&input)
    );
    let t = trailer(&man);
    assert_eq!(t["entries"]["ok"], 7 * 1300);
    assert_eq!(t["fragments"]["ok"], 7 * 13);
    assert_eq!(t["interrupted"], false);
}

#[test]
fn loki_protobuf_and_json_pushes_land_once() {
    for enc in [
        &["--encoding", "protobuf"][..],
        &["--encoding", "json", "--gzip"][..],
    ] {
        let loki = LokiServer::start(LokiConfig::default());
        let start = recent_start();
        let input = gen(&[
            "--seed",
            "1",
            "--start-time",
            &start,
            "--n-series",
            "5",
            "--count",
            "2000",
        ]);
        let dir = tempfile::tempdir().unwrap();
        let man = dir.path().join("m.ndjson");
        let url = loki.url();
        let mut args = vec!["--loki", &url, "--manifest", man.to_str().unwrap(), "-q"];
        args.extend_from_slice(enc);
        let o = push(&args, &input);
        assert!(o.status.success(), "{enc:?}: {}", stderr(&o));
        assert_eq!(loki.entry_count(), 10_000, "{enc:?}");
        assert_eq!(loki.streams().len(), 5);
        assert_eq!(trailer(&man)["entries"]["ok"], 10_000);
    }
}

#[test]
fn prometheus_holds_every_acknowledged_sample() {
    let prom = Prometheus::start();
    let start = recent_start();
    let input = gen(&[
        "--metrics",
        "--seed",
        "3",
        "--start-time",
        &start,
        "--n-series",
        "4",
        "--n-metrics",
        "2",
        "--count",
        "300",
        "--time-increment",
        "1s",
        "--invocation-id",
        "promtest",
    ]);
    let n_input = input.iter().filter(|&&b| b == b'\n').count();
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("m.ndjson");
    let url = format!("{}/api/v1/write", prom.url());
    push_ok(
        &[
            "--remote-write",
            &url,
            "--manifest",
            man.to_str().unwrap(),
            "-q",
            "--fragment-size",
            "50",
        ],
        &input,
    );
    assert_eq!(trailer(&man)["entries"]["ok"], n_input as u64);
    let q = "{invocation=\"promtest\"}[1h]";
    let (code, body) = http_get(
        &prom.url(),
        &format!("/api/v1/query?query={}", urlencode(q)),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stored: usize = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["values"].as_array().unwrap().len())
        .sum();
    assert_eq!(stored, n_input, "{body}");
}

#[test]
fn victoriametrics_holds_every_acknowledged_sample() {
    let vm = VictoriaMetrics::start();
    let start = recent_start();
    let input = gen(&[
        "--metrics",
        "--metric-type",
        "histogram",
        "--seed",
        "4",
        "--start-time",
        &start,
        "--n-series",
        "3",
        "--count",
        "200",
        "--time-increment",
        "1s",
        "--invocation-id",
        "vmtest",
    ]);
    let n_input = input.iter().filter(|&&b| b == b'\n').count();
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("m.ndjson");
    let url = format!("{}/api/v1/write", vm.url());
    push_ok(
        &[
            "--remote-write",
            &url,
            "--manifest",
            man.to_str().unwrap(),
            "-q",
        ],
        &input,
    );
    vm.force_flush();
    let (code, body) = http_get(
        &vm.url(),
        &format!(
            "/api/v1/export?match[]={}",
            urlencode("{invocation=\"vmtest\"}")
        ),
    )
    .unwrap();
    assert_eq!(code, 200);
    let stored: usize = body
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["timestamps"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(stored, n_input);
    assert_eq!(trailer(&man)["entries"]["ok"], n_input as u64);
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Ten good records, then the bad line, then more good records.
fn with_bad_line_11(bad: &[u8]) -> Vec<u8> {
    let good = gen(&[
        "--seed",
        "9",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--n-series",
        "1",
        "--count",
        "20",
    ]);
    let lines: Vec<&[u8]> = good.split_inclusive(|&b| b == b'\n').collect();
    let mut input = lines[..10].concat();
    input.extend_from_slice(bad);
    input.push(b'\n');
    input.extend(lines[10..].concat());
    input
}

#[test]
fn malformed_input_names_file_line_and_reason_and_keeps_what_was_accepted() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            br#"{"labels":{"a":"1"},"ts":"1","li"#.to_vec(),
            "invalid JSON",
        ),
        ("not json", b"hello world".to_vec(), "invalid JSON"),
        (
            "bad utf8",
            b"{\"labels\":{\"a\":\"1\"},\"ts\":\"1\",\"line\":\"\xff\xfe\"}".to_vec(),
            "invalid UTF-8",
        ),
        (
            "missing ts",
            br#"{"labels":{"a":"1"},"line":"x"}"#.to_vec(),
            "no \"ts\"",
        ),
        (
            "wrong type",
            br#"{"labels":{"a":"1"},"ts":"1","line":42}"#.to_vec(),
            "\"line\" must be a string",
        ),
        (
            "bad label",
            br#"{"labels":{"a-b":"1"},"ts":"1","line":"x"}"#.to_vec(),
            "invalid label name",
        ),
        (
            "huge line",
            {
                let mut v = br#"{"labels":{"a":"1"},"ts":"1","line":""#.to_vec();
                v.extend(std::iter::repeat_n(b'x', 10 << 20));
                v.extend_from_slice(b"\"}");
                v
            },
            "over the limit",
        ),
    ];
    for (name, bad, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("input.ndjson");
        std::fs::write(&src, with_bad_line_11(&bad)).unwrap();
        let (out, man) = (dir.path().join("out.ndjson"), dir.path().join("m.ndjson"));
        let o = bin("looker-push")
            .args([
                src.to_str().unwrap(),
                "--file",
                out.to_str().unwrap(),
                "--manifest",
                man.to_str().unwrap(),
                "-q",
            ])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
        let err = stderr(&o);
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains("input.ndjson:11: ") && first.contains(reason),
            "{name}: {err}"
        );
        // The ten lines before the bad one were pushed and acknowledged.
        let t = trailer(&man);
        assert_eq!(t["entries"]["ok"], 10, "{name}");
        assert!(
            t["input_error"].as_str().unwrap().contains(":11:"),
            "{name}"
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().lines().count(),
            10,
            "{name}"
        );
    }
}

#[test]
fn skip_mode_counts_and_reports_invalid_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (out, man, rep) = (
        dir.path().join("o"),
        dir.path().join("m"),
        dir.path().join("r.json"),
    );
    push_ok(
        &[
            "--file",
            out.to_str().unwrap(),
            "--manifest",
            man.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
            "--on-invalid",
            "skip",
            "-q",
        ],
        &with_bad_line_11(b"garbage"),
    );
    assert_eq!(trailer(&man)["entries"]["ok"], 20);
    assert_eq!(trailer(&man)["skipped_lines"], 1);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert!(
        r["skipped"][0]
            .as_str()
            .unwrap()
            .starts_with("<stdin>:11: invalid JSON"),
        "{r}"
    );
}

/// --max-line-bytes holds every line to the limit, however the input is
/// cut into reads (a file, a pipe), and skipped lines beyond the 20 shown
/// are counted on stderr.
#[test]
fn every_line_over_max_line_bytes_is_refused_wherever_it_falls() {
    let dir = tempfile::tempdir().unwrap();
    let record = |i: usize, len: usize| {
        let line = "x".repeat(len);
        format!(
            "{{\"labels\":{{\"app\":\"a\"}},\"ts\":\"{}\",\"line\":\"{line}\"}}\n",
            1_700_000_000_000_000_000u64 + i as u64
        )
    };
    // Lines 2, 4, ..., 50 are about 1500 bytes, the others about 500.
    let input: String = (1..=50)
        .map(|i| record(i, if i % 2 == 0 { 1450 } else { 450 }))
        .collect();
    let path = dir.path().join("in.ndjson");
    std::fs::write(&path, &input).unwrap();
    for from_file in [true, false] {
        let out = dir.path().join("o");
        let _ = std::fs::remove_file(&out);
        let mut args = vec![
            "--file",
            s(&out),
            "--max-line-bytes",
            "1000",
            "--on-invalid",
            "skip",
        ];
        if from_file {
            args.insert(0, s(&path));
        }
        let o = push(&args, if from_file { b"" } else { input.as_bytes() });
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(":2: line is "), "{err}");
        assert!(err.contains(":40: line is "), "{err}");
        assert!(!err.contains(":42: line is "), "only 20 are shown: {err}");
        assert!(
            err.contains("skipped 5 more invalid lines, not shown (25 in all)"),
            "{err}"
        );
        let kept = std::fs::read_to_string(&out).unwrap();
        assert_eq!(kept.lines().count(), 25, "from a file: {from_file}");
    }
}

/// Above --max-series the pusher forgets series while they are in use; a
/// paced push waits (and sweeps) between taking a record's series and
/// batching its entry, and must not forget that series meanwhile.
#[test]
fn paced_pushes_over_max_series_keep_the_series_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let input = gen(&[
        "--seed",
        "8",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--n-series",
        "12000",
        "--count",
        "2",
    ]);
    let (out, man) = (dir.path().join("o"), dir.path().join("m"));
    let o = push(
        &[
            "--file",
            s(&out),
            "--manifest",
            s(&man),
            "--max-series",
            "10000",
            "--rate",
            "24000",
            "-q",
        ],
        &input,
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(trailer(&man)["entries"]["ok"], 24000);
    let o = verify(&["--manifest", s(&man), "--file", s(&out), "--quiet"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn unreadable_and_corrupt_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("bad.gz");
    let records = gen(&[
        "--seed",
        "1",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--n-series",
        "2",
        "--count",
        "5000",
    ]);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &records).unwrap();
    let full = enc.finish().unwrap();
    // Cut short, as a copy interrupted mid-way leaves it.
    std::fs::write(&gz, &full[..full.len() / 2]).unwrap();
    let missing = dir.path().join("missing.ndjson");
    for (path, want) in [
        (gz.to_str().unwrap(), "read error"),
        (missing.to_str().unwrap(), "missing.ndjson: No such file"),
    ] {
        let o = bin("looker-push")
            .args([path, "--null", "-q"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    }
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let man = dir.path().join("m");
    let o = bin("looker-push")
        .args([
            empty.to_str().unwrap(),
            "--null",
            "-q",
            "--manifest",
            man.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "an empty file is an empty push: {}",
        stderr(&o)
    );
    assert_eq!(trailer(&man)["entries"]["ok"], 0);
}

#[test]
fn bad_flags_and_files_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let sched = dir.path().join("s.json");
    std::fs::write(&sched, r#"{"update_interval": 0, "schedule": [1]}"#).unwrap();
    let sched_arg = sched.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--null", "--rate=-5"], "--rate"),
        (vec![], "--loki"),
        (vec!["--null", "--file", "x"], "cannot be used with"),
        (vec!["--null", "--schedule", &sched_arg], "update_interval"),
        (
            vec![
                "--loki",
                "http://127.0.0.1:1",
                "--bearer-token-file",
                "/nonexistent/token",
            ],
            "--bearer-token-file /nonexistent/token",
        ),
        (vec!["--null", "--fragment-size", "0"], "--fragment-size"),
        (vec!["--null", "--format", "xml"], "--format"),
        (
            vec!["--remote-write", "ftp://127.0.0.1/x"],
            "\"ftp://127.0.0.1/x\": expected http or https",
        ),
        (vec!["--loki", "http://user:secret@[::1"], "invalid URL"),
    ];
    for (args, want) in cases {
        let o = push(&args, b"");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("secret"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn raw_lines_replay_with_labels_and_increasing_timestamps() {
    let loki = LokiServer::start(LokiConfig::default());
    let text: String = (0..500).map(|i| format!("GET /item/{i} 200\n")).collect();
    push_ok(
        &[
            "--format",
            "raw",
            "--label",
            "job=replay",
            "--label",
            "host=h1",
            "--loki",
            &loki.url(),
            "-q",
        ],
        text.as_bytes(),
    );
    let streams = loki.streams();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].0.get("job").map(String::as_str), Some("replay"));
    assert_eq!(
        streams[0].1, 500,
        "each line stored once, none deduplicated"
    );
}

#[test]
fn retime_moves_old_recordings_into_the_accepted_window() {
    let loki = LokiServer::start(LokiConfig::default());
    // A recording from 2020: Loki rejects anything older than 7 days.
    let input = gen(&[
        "--seed",
        "2",
        "--start-time",
        "2020-01-01T00:00:00Z",
        "--n-series",
        "2",
        "--count",
        "500",
    ]);
    let o = push(&["--loki", &loki.url(), "-q"], &input);
    assert_eq!(
        o.status.code(),
        Some(1),
        "old data is rejected: {}",
        stderr(&o)
    );
    assert_eq!(loki.entry_count(), 0);
    let o = push(&["--loki", &loki.url(), "--retime", "-q"], &input);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(loki.entry_count(), 1000);
}

#[test]
fn transient_failures_are_retried_until_acknowledged_once() {
    let loki = LokiServer::start(LokiConfig::default());
    let proxy = FaultProxy::start(
        &loki.url(),
        FaultPlan::sequence(vec![
            Fault::Status(500),
            Fault::Status(503),
            Fault::TooManyRequests {
                retry_after: Some("1".into()),
            },
            Fault::TooManyRequests { retry_after: None },
            Fault::ResetBeforeForward,
        ]),
    );
    let input = gen(&[
        "--seed",
        "5",
        "--start-time",
        &recent_start(),
        "--n-series",
        "3",
        "--count",
        "1000",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (man, rep) = (dir.path().join("m"), dir.path().join("r.json"));
    push_ok(
        &[
            "--loki",
            &proxy.url(),
            "--manifest",
            man.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
            "--retry-min-delay",
            "10ms",
            "-q",
            "--max-concurrent-writes",
            "1",
        ],
        &input,
    );
    assert_eq!(loki.entry_count(), 3000);
    assert_eq!(trailer(&man)["entries"]["ok"], 3000);
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(r["retries"], 5);
    assert_eq!(r["status_codes"]["429"], 2);
    // The 429 with Retry-After: 1 held the retry back a whole second.
    assert!(r["duration_s"].as_f64().unwrap() >= 1.0, "{r}");
}

#[test]
fn non_retryable_rejections_are_recorded_with_the_reason() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (man, rep) = (dir.path().join("m"), dir.path().join("r.json"));
    // A line over Loki's 256KB max_line_size: Loki answers 400.
    let mut input = gen(&[
        "--seed",
        "6",
        "--start-time",
        &recent_start(),
        "--n-series",
        "1",
        "--count",
        "3",
    ]);
    let big = format!(
        "{{\"labels\":{{\"app\":\"big\"}},\"ts\":\"{}\",\"line\":\"{}\"}}\n",
        looker::timefmt::now_ns() - 60_000_000_000,
        "y".repeat(300 * 1024)
    );
    input.extend_from_slice(big.as_bytes());
    let o = push(
        &[
            "--loki",
            &loki.url(),
            "--manifest",
            man.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
            "--retry-min-delay",
            "10ms",
        ],
        &input,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("Max entry size"), "{}", stderr(&o));
    let t = trailer(&man);
    assert_eq!(t["entries"]["rejected"], 1);
    assert_eq!(t["entries"]["ok"], 3);
    let rejected = manifest_fragments(&man)
        .into_iter()
        .find(|f| f["status"] == "rejected")
        .unwrap();
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("HTTP 400") && reason.contains("Max entry size"),
        "{rejected}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
    assert_eq!(r["retries"], 0, "a 400 is not retried");
}

#[test]
fn an_unreachable_store_ends_the_push_instead_of_retrying_every_message() {
    // Nothing listens on this port once the listener is dropped.
    let port = crate::support::servers::free_port();
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("m");
    let input = gen(&[
        "--seed",
        "1",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--n-series",
        "4",
        "--count",
        "5000",
    ]);
    let o = push(
        &[
            "--loki",
            &format!("http://127.0.0.1:{port}"),
            "--manifest",
            man.to_str().unwrap(),
            "--retry-deadline",
            "300ms",
            "--retry-min-delay",
            "10ms",
            "--fragments-per-message",
            "1",
            "-q",
        ],
        &input,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nothing was ever acknowledged")
            && stderr(&o).contains("Connection refused"),
        "{}",
        stderr(&o)
    );
    let t = trailer(&man);
    assert_eq!(t["entries"]["ok"], 0);
    assert!(t["entries"]["failed"].as_u64().unwrap() > 0);
    // Once the first message was given up on, the rest were not each
    // retried for a whole deadline.
    let text = std::fs::read_to_string(&man).unwrap();
    assert!(text.contains("not sent: the push stopped"), "{text}");
}

#[test]
fn tenant_auth_and_headers_are_sent_and_secrets_stay_out_of_every_record() {
    let loki = LokiServer::start(LokiConfig {
        auth_enabled: true,
        ..LokiConfig::default()
    });
    let proxy = FaultProxy::start(&loki.url(), FaultPlan::always(Fault::Forward));
    let dir = tempfile::tempdir().unwrap();
    let (man, rep, token) = (
        dir.path().join("m"),
        dir.path().join("r.json"),
        dir.path().join("token"),
    );
    std::fs::write(&token, "s3cr3t-t0ken\n").unwrap();
    let input = gen(&[
        "--seed",
        "3",
        "--start-time",
        &recent_start(),
        "--n-series",
        "2",
        "--count",
        "300",
    ]);
    let o = push_ok(
        &[
            "--loki",
            &proxy.url(),
            "--tenant",
            "team-a",
            "--bearer-token-file",
            token.to_str().unwrap(),
            "--header",
            "X-Test: yes",
            "--manifest",
            man.to_str().unwrap(),
            "--report",
            rep.to_str().unwrap(),
        ],
        &input,
    );
    assert_eq!(loki.entry_count_in("team-a"), 600);
    let pushes: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|e| e.path.contains("push"))
        .collect();
    assert!(!pushes.is_empty());
    for e in &pushes {
        assert_eq!(e.header("x-scope-orgid"), Some("team-a"));
        assert_eq!(e.header("authorization"), Some("Bearer s3cr3t-t0ken"));
        assert_eq!(e.header("x-test"), Some("yes"));
    }
    for text in [
        std::fs::read_to_string(&man).unwrap(),
        std::fs::read_to_string(&rep).unwrap(),
        stderr(&o),
    ] {
        assert!(!text.contains("s3cr3t"), "a secret leaked: {text}");
    }
    // The same tenant reads it back; no tenant cannot.
    let ok = bin("looker-verify")
        .args([
            "--manifest",
            man.to_str().unwrap(),
            "--loki",
            &loki.url(),
            "--tenant",
            "team-a",
        ])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let denied = bin("looker-verify")
        .args(["--manifest", man.to_str().unwrap(), "--loki", &loki.url()])
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(2), "{}", stderr(&denied));
    assert!(stderr(&denied).contains("no org id"), "{}", stderr(&denied));

    // Pushing without the tenant is refused as a whole (exit 2, at once,
    // no message split to find a culprit), and the manifest is complete.
    let man2 = dir.path().join("m2");
    let denied = push(&["--loki", &loki.url(), "--manifest", s(&man2)], &input);
    assert_eq!(denied.status.code(), Some(2), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("HTTP 401: no org id (check the URL, --tenant and credentials)"),
        "{}",
        stderr(&denied)
    );
    let t = trailer(&man2);
    assert_eq!(t["entries"]["ok"], 0, "{t}");
    assert_eq!(
        t["entries"]["rejected"].as_u64().unwrap() + t["entries"]["failed"].as_u64().unwrap(),
        600,
        "{t}"
    );
}

#[test]
fn an_unusable_ca_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let o = push(
        &[
            "--loki",
            "https://127.0.0.1:1",
            "--ca-file",
            ca.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--ca-file") && stderr(&o).contains("ca.pem"),
        "{}",
        stderr(&o)
    );
}

/// More series than the pusher keeps without eviction checks (10,000),
/// interleaved as scrapes are: every sample of every series lands once and
/// verifies clean against a real Prometheus, and none is refused as out of
/// order (a series forgotten between its samples would lose its order
/// check, not its data).
#[test]
fn prometheus_many_interleaved_series_verify_clean() {
    let prom = Prometheus::start();
    let start = recent_start();
    let input = gen(&[
        "--metrics",
        "--seed",
        "8",
        "--start-time",
        &start,
        "--n-series",
        "12000",
        "--count",
        "3",
        "--time-increment",
        "15s",
        "--invocation-id",
        "manyseries",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    let url = format!("{}/api/v1/write", prom.url());
    push_ok(
        &["--remote-write", &url, "--manifest", s(&man), "-q"],
        &input,
    );
    assert_eq!(trailer(&man)["entries"]["ok"], 36_000);
    let o = verify(&[
        "--manifest",
        s(&man),
        "--prometheus",
        &prom.url(),
        "--report",
        s(&rep),
        "--max-concurrent-reads",
        "8",
    ]);
    let r = report(&rep);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(r["entries_found"], 36_000);
}

/// Loki answers 400 to a push with one bad entry but writes the rest. The
/// pusher re-sends the message in parts to learn which fragments were
/// refused, so the others stay verifiable: a loss among them is reported.
#[test]
fn a_partly_refused_loki_push_keeps_the_accepted_fragments_verifiable() {
    // A protobuf body is re-sent in parts of itself; a JSON one is
    // encoded again from its fragments.
    for encoding in ["protobuf", "json"] {
        partly_refused_loki_push(encoding);
    }
}

fn partly_refused_loki_push(encoding: &str) {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    let t0 = now_ms() * 1_000_000 - 60_000_000_000;
    let month_ago = t0 - 30 * 24 * 3600 * 1_000_000_000;
    let mut text = String::new();
    for i in 0..5 {
        for app in ["a", "b", "c"] {
            let ts = t0 + i * 1_000_000_000;
            text += &log_rec(&format!(r#"{{"app":"{app}"}}"#), ts, &format!("{app} {i}"));
        }
    }
    // Too old for Loki (7 days): refused, the rest of the push written.
    text += &log_rec(r#"{"app":"old"}"#, month_ago, "old 0");
    let o = push(
        &[
            "--loki",
            &loki.url(),
            "--manifest",
            s(&man),
            "--report",
            s(&rep),
            // One lane: all four fragments in one message.
            "--max-concurrent-writes",
            "1",
            "--encoding",
            encoding,
            "-q",
        ],
        text.as_bytes(),
    );
    assert_eq!(code(&o), 1, "entries were refused: {}", stderr(&o));
    assert_eq!(
        statuses_by(&man, "app"),
        string_map([("a", "ok"), ("b", "ok"), ("c", "ok"), ("old", "rejected")]),
        "{encoding}"
    );
    let r = report(&rep);
    assert_eq!(
        (r["entries_acked"].as_u64(), r["entries_rejected"].as_u64()),
        (Some(15), Some(1)),
        "{r:#}"
    );
    assert_eq!(loki.entry_count(), 15);
    let verify_args = [
        "--manifest",
        s(&man),
        "--loki",
        &loki.url(),
        "--report",
        s(&rep),
    ];
    let o = verify(&verify_args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(report(&rep)["entries_expected"], 15);
    // The store loses an entry it accepted in that push: reported.
    let b = string_map([("app", "b")]);
    assert_eq!(
        loki.delete_range(&b, t0 + 2_000_000_000, t0 + 2_000_000_001),
        1
    );
    let o = verify(&verify_args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let r = report(&rep);
    let lost: Vec<_> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["discrepancy"] == true)
        .collect();
    assert_eq!(lost.len(), 1, "{r:#}");
    assert_eq!(lost[0]["kind"], "missing");
    assert_eq!(lost[0]["series"]["app"], "b");
}

/// Prometheus 2.42 refuses a whole remote write for one sample out of
/// bounds. Re-sent in parts, the good series get in and are acknowledged.
#[test]
fn a_refused_remote_write_still_delivers_its_good_series() {
    let prom = Prometheus::start();
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("m.ndjson");
    let write = format!("{}/api/v1/write", prom.url());
    let now = now_ms();
    // A recent sample sets the head's time: samples an hour older than it
    // are out of bounds.
    push_ok(
        &["--remote-write", &write, "-q"],
        metric_rec(r#"{"__name__":"clock"}"#, now, "1").as_bytes(),
    );
    let mut text = String::new();
    for i in 0..3 {
        for s in ["a", "b"] {
            text += &metric_rec(
                &format!(r#"{{"__name__":"m","s":"{s}"}}"#),
                now - 60_000 + i * 1000,
                "2",
            );
        }
    }
    text += &metric_rec(r#"{"__name__":"m","s":"old"}"#, now - 2 * 3600 * 1000, "3");
    let o = push(
        &[
            "--remote-write",
            &write,
            "--manifest",
            s(&man),
            "--max-concurrent-writes",
            "1",
            "-q",
        ],
        text.as_bytes(),
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(
        statuses_by(&man, "s"),
        string_map([("a", "ok"), ("b", "ok"), ("old", "rejected")])
    );
    let o = verify(&["--manifest", s(&man), "--prometheus", &prom.url()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}
