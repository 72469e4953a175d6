//! looker-verify end to end: the file sink, the Loki-compatible test
//! server, a real Prometheus (query API and remote read) and a real
//! VictoriaMetrics; usage and access errors.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::faultproxy::{Fault, FaultPlan, FaultProxy};
use crate::support::loki::{LokiConfig, LokiServer};
use crate::support::servers::{Prometheus, VictoriaMetrics};
use crate::util::*;

#[test]
fn file_sink_ok_then_a_deleted_line_is_missing_at_its_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let input = gen(&[
        "--seed",
        "3",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--n-series",
        "4",
        "--count",
        "500",
    ]);
    let (out, man, rep) = (
        dir.path().join("out.ndjson"),
        dir.path().join("m.ndjson"),
        dir.path().join("r.json"),
    );
    let o = push(&["--file", s(&out), "--manifest", s(&man), "-q"], &input);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = verify(&[
        "--manifest",
        s(&man),
        "--file",
        s(&out),
        "--report",
        s(&rep),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).contains("verdict: ok"), "{}", stderr(&o));
    let r = report(&rep);
    assert_eq!(r["verdict"], "ok");
    assert_eq!(r["entries_expected"], 2000);
    assert_eq!(r["entries_found"], 2000);

    // Delete the 123rd record of the file and remember its timestamp.
    let text = std::fs::read_to_string(&out).unwrap();
    let gone = text.lines().nth(122).unwrap().to_string();
    let ts = serde_json::from_str::<serde_json::Value>(&gone).unwrap()["ts"]
        .as_str()
        .unwrap()
        .to_string();
    let kept: String = text
        .lines()
        .filter(|l| *l != gone)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&out, kept).unwrap();
    let o = verify(&[
        "--manifest",
        s(&man),
        "--file",
        s(&out),
        "--report",
        s(&rep),
        "--quiet",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "--quiet: {}", stderr(&o));
    let r = report(&rep);
    assert_eq!(r["verdict"], "discrepancies");
    let f = &r["findings"][0];
    assert_eq!(f["kind"], "missing");
    assert_eq!(f["ranges"], serde_json::json!([[ts, ts, 1]]));
}

/// The same input pushed twice into one file sink, by two runs with their
/// own manifests: the sink holds two copies, each acknowledged, which
/// verify as such (one run's lines follow the other's, so the copies are
/// not side by side).
#[test]
fn file_sink_pushed_twice_holds_two_acknowledged_copies() {
    let dir = tempfile::tempdir().unwrap();
    let input = gen(&[
        "--seed",
        "6",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--n-series",
        "3",
        "--count",
        "700",
    ]);
    let out = dir.path().join("out.ndjson");
    let (ma, mb) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
    for m in [&ma, &mb] {
        push_ok(&["--file", s(&out), "--manifest", s(m), "-q"], &input);
    }
    let r = verify_ok(&[
        "--manifest",
        s(&ma),
        "--manifest",
        s(&mb),
        "--file",
        s(&out),
    ]);
    assert_eq!(r["entries_found"], 4200, "{r:#}");
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["kind"] == "duplicated" && f["discrepancy"] == false),
        "{r:#}"
    );
}

/// A run killed mid-write leaves the file sink ending in a cut line; the
/// next run's first record must not be glued onto it.
#[test]
fn a_file_sink_ending_in_a_cut_line_takes_the_next_run_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    std::fs::write(&out, "{\"labels\":{\"app\":\"a\"},\"ts\":\"17").unwrap();
    let input = gen(&[
        "--seed",
        "2",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--n-series",
        "2",
        "--count",
        "50",
    ]);
    let man = dir.path().join("m.ndjson");
    push_ok(&["--file", s(&out), "--manifest", s(&man), "-q"], &input);
    let o = verify(&["--manifest", s(&man), "--file", s(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 lines of"),
        "the cut line is noted: {}",
        stderr(&o)
    );
}

#[test]
fn usage_and_unreadable_manifests_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = verify(&["--manifest", "x.ndjson"]);
    assert_eq!(code(&o), 2, "no target: {}", stderr(&o));
    let o = verify(&["--manifest", "x", "--loki", "http://a", "--file", "f"]);
    assert_eq!(code(&o), 2, "two targets: {}", stderr(&o));
    let missing = dir.path().join("nope.ndjson");
    let o = verify(&["--manifest", s(&missing), "--file", s(&missing)]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).starts_with("looker-verify: ") && stderr(&o).contains("nope.ndjson"),
        "{}",
        stderr(&o)
    );
    let junk = dir.path().join("junk.ndjson");
    std::fs::write(&junk, "{\"kind\":\"header\"}\n").unwrap();
    let o = verify(&["--manifest", s(&junk), "--file", s(&junk)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

fn stream_labels(input: &[u8]) -> BTreeMap<String, String> {
    let first = input.split(|&b| b == b'\n').next().unwrap();
    let v: serde_json::Value = serde_json::from_slice(first).unwrap();
    serde_json::from_value(v["labels"].clone()).unwrap()
}

#[test]
fn loki_ok_then_deleted_altered_and_inserted_entries_are_found() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let start = recent_start();
    let input = gen(&[
        "--seed",
        "5",
        "--start-time",
        &start,
        "--n-series",
        "3",
        "--count",
        "3000",
    ]);
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &["--loki", &loki.url(), "--manifest", s(&man), "-q"],
        &input,
    );

    let args = [
        "--manifest",
        s(&man),
        "--loki",
        &loki.url(),
        "--report",
        s(&rep),
        "--query-limit",
        "1000",
    ];
    let o = verify(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(report(&rep)["entries_found"], 9000);

    let labels = stream_labels(&input);
    let t0 = looker::timefmt::parse_rfc3339_ns(&start).unwrap();
    // gen's default increment for logs is 1ms: entries 100..=104 go.
    assert_eq!(
        loki.delete_range(&labels, t0 + 100_000_000, t0 + 105_000_000),
        5
    );
    assert!(loki.alter_line(&labels, t0 + 2_000_000_000, "tampered"));
    loki.insert(&labels, t0 + 1, "never pushed");
    let o = verify(&args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let r = report(&rep);
    let kinds: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["missing", "altered", "unexpected"], "{r:#}");
    let (a, b) = (
        (t0 + 100_000_000).to_string(),
        (t0 + 104_000_000).to_string(),
    );
    assert_eq!(r["findings"][0]["ranges"], serde_json::json!([[a, b, 5]]));
}

/// Loki 3.x shards a stream pushed faster than `shard_streams.desired_rate`
/// (1536KB/s by default) into streams with an extra `__stream_shard__`
/// label; the series' entries are then spread over them. Here the rate is
/// set low so a paced push of two series is sharded.
#[test]
fn loki_sharded_streams_are_read_as_their_series() {
    let loki = LokiServer::start(LokiConfig {
        shard_streams_desired_rate: Some(4096),
        ..LokiConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let start = recent_start();
    let input = gen(&[
        "--seed",
        "9",
        "--start-time",
        &start,
        "--n-series",
        "2",
        "--count",
        "1500",
    ]);
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &[
            "--loki",
            &loki.url(),
            "--manifest",
            s(&man),
            "-q",
            "--rate",
            "1500",
            "--linger",
            "100ms",
        ],
        &input,
    );
    let shards: Vec<_> = loki
        .streams()
        .into_iter()
        .filter(|(l, _)| l.contains_key("__stream_shard__"))
        .collect();
    assert!(
        shards.len() > 2,
        "the push was not sharded: {:?}",
        loki.streams()
    );

    let args = [
        "--manifest",
        s(&man),
        "--loki",
        &loki.url(),
        "--report",
        s(&rep),
        "--query-limit",
        "400",
    ];
    let o = verify(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(report(&rep)["entries_found"], 3000);

    // What one shard held is missing from its series.
    let (labels, n) = &shards[0];
    assert_eq!(loki.delete_range(labels, 0, i64::MAX), *n);
    let o = verify(&args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let r = report(&rep);
    assert_eq!(r["entries_found"], 3000 - *n as u64, "{r:#}");
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["kind"] == "missing"),
        "{r:#}"
    );
}

/// Loki fails a `query_range` page larger than its 4MB gRPC message cap
/// with a 500, whatever its `limit`; long lines hit it at the default
/// limit. The reader then asks for fewer entries at a time. (The cap is
/// 64KB here, so 1KB lines hit it at pages of about 60.)
#[test]
fn loki_pages_over_the_grpc_cap_are_read_in_smaller_pages() {
    let loki = LokiServer::start(LokiConfig {
        max_query_response_bytes: Some(64 * 1024),
        ..LokiConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let input = gen(&[
        "--seed",
        "2",
        "--start-time",
        &recent_start(),
        "--n-series",
        "2",
        "--count",
        "400",
        "--line-bytes",
        "1000",
    ]);
    let man = dir.path().join("m.ndjson");
    push_ok(
        &["--loki", &loki.url(), "--manifest", s(&man), "-q"],
        &input,
    );
    let r = verify_ok(&["--manifest", s(&man), "--loki", &loki.url()]);
    assert_eq!(r["entries_found"], 800);
}

/// The usual recovery from timeouts: a run whose answers were lost (its
/// fragments `unknown`) is pushed again to completion with other fragment
/// sizes, and both manifests are verified together against the store,
/// which keeps each entry once.
#[test]
fn a_run_with_unknown_fragments_pushed_again_with_other_cuts_verifies_ok() {
    let loki = LokiServer::start(LokiConfig::default());
    let proxy = FaultProxy::start(
        &loki.url(),
        FaultPlan::random(5, vec![(0.3, Fault::ResetAfterForward)]).only_paths("/loki/api/v1/push"),
    );
    let dir = tempfile::tempdir().unwrap();
    let input = gen(&[
        "--seed",
        "61",
        "--start-time",
        &recent_start(),
        "--n-series",
        "4",
        "--count",
        "500",
    ]);
    let (a, b) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
    let o = push(
        &[
            "--loki",
            &proxy.url(),
            "--manifest",
            s(&a),
            "-q",
            "--fragment-size",
            "13",
            "--fragments-per-message",
            "2",
            "--retry-deadline",
            "1ms",
        ],
        &input,
    );
    assert_eq!(code(&o), 1, "some fragments unknown: {}", stderr(&o));
    assert!(
        trailer(&a)["fragments"]["unknown"].as_u64().unwrap() > 0,
        "{}",
        trailer(&a)
    );
    push_ok(
        &[
            "--loki",
            &loki.url(),
            "--manifest",
            s(&b),
            "-q",
            "--fragment-size",
            "17",
        ],
        &input,
    );
    let r = verify_ok(&[
        "--manifest",
        s(&a),
        "--manifest",
        s(&b),
        "--loki",
        &loki.url(),
    ]);
    assert_eq!(r["entries_found"], 2000);
}

/// A series pushed without `service_name` and the same labels pushed with
/// the value Loki derives for it (recorded records mixed with a logcli
/// replay) are one stream in Loki, and verify as one.
#[test]
fn loki_series_with_and_without_the_derived_service_name_verify_as_one_stream() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let t0 = looker::timefmt::now_ns() - 60_000_000_000;
    let mut input = String::new();
    for i in 0..100i64 {
        input.push_str(&format!(
            "{{\"labels\":{{\"job\":\"sy3\"}},\"ts\":\"{}\",\"line\":\"plain {i}\"}}\n",
            t0 + i * 1_000_000
        ));
        input.push_str(&format!(
            "{{\"labels\":{{\"job\":\"sy3\",\"service_name\":\"sy3\"}},\"ts\":\"{}\",\"line\":\"named {i}\"}}\n",
            t0 + i * 1_000_000 + 1
        ));
    }
    let man = dir.path().join("m.ndjson");
    push_ok(
        &["--loki", &loki.url(), "--manifest", s(&man), "-q"],
        input.as_bytes(),
    );
    assert_eq!(
        loki.streams().len(),
        1,
        "one stream in Loki: {:?}",
        loki.streams()
    );
    let r = verify_ok(&["--manifest", s(&man), "--loki", &loki.url()]);
    assert_eq!(r["entries_found"], 200);
}

/// A log concatenated twice repeats every entry from further back than
/// the pusher remembers with a small --remember-entries: those are pushed
/// unchecked and counted; remembering enough, they are pushed once and the
/// run verifies against Loki.
#[test]
fn remember_entries_bounds_how_far_back_repeats_are_recognised() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let once = gen(&[
        "--seed",
        "12",
        "--start-time",
        &recent_start(),
        "--n-series",
        "100",
        "--count",
        "100",
    ]);
    let twice = [once.clone(), once].concat();
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &[
            "--null",
            "--report",
            s(&rep),
            "-q",
            "--remember-entries",
            "6400",
        ],
        &twice,
    );
    assert!(
        report(&rep)["late_unchecked"].as_u64().unwrap() > 0,
        "{}",
        report(&rep)
    );
    push_ok(
        &[
            "--loki",
            &loki.url(),
            "--manifest",
            s(&man),
            "--report",
            s(&rep),
            "-q",
            "--remember-entries",
            "20000",
        ],
        &twice,
    );
    let r = report(&rep);
    assert_eq!(
        (
            r["late_unchecked"].as_u64(),
            r["duplicates_skipped"].as_u64()
        ),
        (Some(0), Some(10000)),
        "{r}"
    );
    let o = verify(&["--manifest", s(&man), "--loki", &loki.url()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// Two recorded files that overlap in time, replayed one after the other:
/// the second repeats entries of the first below the stream's latest
/// timestamp. Loki keeps each (ts, line) of a stream once, so the pusher
/// pushes a repeat once and the manifest expects what Loki can hold.
#[test]
fn loki_overlapping_replays_verify_as_loki_keeps_them() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let input = gen(&[
        "--seed",
        "4",
        "--start-time",
        &recent_start(),
        "--n-series",
        "2",
        "--count",
        "1000",
    ]);
    let lines: Vec<&[u8]> = input.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 2000);
    let (a, b) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
    std::fs::write(&a, lines[..1200].concat()).unwrap();
    std::fs::write(&b, lines[800..].concat()).unwrap();
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    for fragment_size in ["1000", "7"] {
        let _ = std::fs::remove_file(&man);
        let o = push_ok(
            &[
                s(&a),
                s(&b),
                "--loki",
                &loki.url(),
                "--manifest",
                s(&man),
                "--report",
                s(&rep),
                "--fragment-size",
                fragment_size,
            ],
            b"",
        );
        let r = report(&rep);
        assert_eq!(r["duplicates_skipped"], 400, "{}", stderr(&o));
        assert_eq!(r["entries_acked"], 2000);
        assert_eq!(r["late_unchecked"], 0);
        let r = verify_ok(&["--manifest", s(&man), "--loki", &loki.url()]);
        assert_eq!(r["entries_found"], 2000, "fragments of {fragment_size}");
    }
}

#[test]
fn prometheus_query_and_remote_read_agree_and_see_a_gap() {
    let prom = Prometheus::start();
    let dir = tempfile::tempdir().unwrap();
    let input = recent_metrics(2, 3, 250, &[]);
    let man = dir.path().join("m.ndjson");
    push_ok(
        &[
            "--remote-write",
            &format!("{}/api/v1/write", prom.url()),
            "--manifest",
            s(&man),
            "-q",
        ],
        &input,
    );
    for api in ["query", "remote-read"] {
        let o = verify(&[
            "--manifest",
            s(&man),
            "--prometheus",
            &prom.url(),
            "--read-api",
            api,
        ]);
        assert_eq!(code(&o), 0, "{api}: {}\n{}", stderr(&o), prom.log_tail());
    }
    // A manifest claiming one more sample than was pushed: that one is missing.
    let text = std::fs::read_to_string(&man).unwrap();
    let mut forged = String::new();
    let mut done = false;
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        // The first fragment (acknowledged: the push verified clean).
        if !done && v["kind"] == "fragment" {
            let last: i64 = v["last_ts"].as_str().unwrap().parse().unwrap();
            let step: i64 = v["step"].as_str().unwrap().parse().unwrap();
            v["last_ts"] = (last + step).to_string().into();
            v["count"] = (v["count"].as_u64().unwrap() + 1).into();
            done = true;
        }
        forged.push_str(&v.to_string());
        forged.push('\n');
    }
    let man2 = dir.path().join("m2.ndjson");
    std::fs::write(&man2, forged).unwrap();
    let rep = dir.path().join("r.json");
    for api in ["query", "remote-read"] {
        let o = verify(&[
            "--manifest",
            s(&man2),
            "--prometheus",
            &prom.url(),
            "--read-api",
            api,
            "--report",
            s(&rep),
        ]);
        assert_eq!(code(&o), 1, "{api}: {}", stderr(&o));
        let r = report(&rep);
        assert_eq!(r["findings"][0]["kind"], "missing", "{api}: {r:#}");
        assert_eq!(r["findings"][0]["ranges"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn victoriametrics_ok() {
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let input = recent_metrics(4, 3, 200, &[]);
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &[
            "--remote-write",
            &format!("{}/api/v1/write", vm.url()),
            "--manifest",
            s(&man),
            "-q",
        ],
        &input,
    );
    let o = verify(&[
        "--manifest",
        s(&man),
        "--victoriametrics",
        &vm.url(),
        "--report",
        s(&rep),
        "--wait",
        "10s",
    ]);
    assert_eq!(code(&o), 0, "{}\n{}", stderr(&o), vm.log_tail());
    let r = report(&rep);
    assert_eq!(r["entries_expected"], r["entries_found"], "{r:#}");
}

fn missing_findings(r: &serde_json::Value) -> Vec<&serde_json::Value> {
    r["findings"].as_array().unwrap().iter().collect()
}

#[test]
fn prometheus_samples_deleted_by_the_admin_api_are_named_exactly() {
    let prom = Prometheus::start();
    let dir = tempfile::tempdir().unwrap();
    let start = recent_start();
    let t0_ms = looker::timefmt::parse_rfc3339_ns(&start).unwrap() / 1_000_000;
    let input = gen(&[
        "--metrics",
        "--seed",
        "12",
        "--start-time",
        &start,
        "--n-series",
        "4",
        "--count",
        "200",
        "--time-increment",
        "1s",
        "--invocation-id",
        "promdel",
    ]);
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &[
            "--remote-write",
            &format!("{}/api/v1/write", prom.url()),
            "--manifest",
            s(&man),
            "--fragment-size",
            "50",
            "-q",
        ],
        &input,
    );
    let args = [
        "--manifest",
        s(&man),
        "--prometheus",
        &prom.url(),
        "--report",
        s(&rep),
    ];
    assert_eq!(code(&verify(&args)), 0);

    // Delete samples 60..=89 (30 s) of series s0002, across a fragment boundary.
    let (a, b) = (t0_ms + 60_000, t0_ms + 89_000);
    let sel = crate::push::urlencode("{invocation=\"promdel\",series=\"s0002\"}");
    let q = format!(
        "/api/v1/admin/tsdb/delete_series?match[]={sel}&start={}.{:03}&end={}.{:03}",
        a / 1000,
        a % 1000,
        b / 1000,
        b % 1000
    );
    let (c, body) = http_post(&prom.url(), &q);
    assert_eq!(c, 204, "{body}");
    let o = verify(&args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let r = report(&rep);
    let f = missing_findings(&r);
    assert!(
        f.iter()
            .all(|f| f["kind"] == "missing" && f["series"]["series"] == "s0002"),
        "only s0002 is damaged: {r:#}"
    );
    let mut ranges: Vec<(i64, i64, u64)> = f
        .iter()
        .flat_map(|f| f["ranges"].as_array().unwrap().iter())
        .map(|r| {
            (
                r[0].as_str().unwrap().parse().unwrap(),
                r[1].as_str().unwrap().parse().unwrap(),
                r[2].as_u64().unwrap(),
            )
        })
        .collect();
    ranges.sort();
    // Fragments hold 50 samples, so the hole lies inside the second one,
    // and the report names exactly the deleted timestamps.
    assert_eq!(ranges, vec![(a, b, 30)], "{r:#}");
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0]["expected"].as_u64(), f[0]["found"].as_u64()),
        (Some(50), Some(20))
    );
}

#[test]
fn victoriametrics_deleted_series_is_named_exactly() {
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let input = recent_metrics(13, 3, 120, &["--invocation-id", "vmdel"]);
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &[
            "--remote-write",
            &format!("{}/api/v1/write", vm.url()),
            "--manifest",
            s(&man),
            "--fragment-size",
            "50",
            "-q",
        ],
        &input,
    );
    let args = [
        "--manifest",
        s(&man),
        "--victoriametrics",
        &vm.url(),
        "--report",
        s(&rep),
        "--wait",
        "5s",
    ];
    assert_eq!(code(&verify(&args)), 0);
    let sel = crate::push::urlencode("{invocation=\"vmdel\",series=\"s0001\"}");
    let (c, body) = http_post(
        &vm.url(),
        &format!("/api/v1/admin/tsdb/delete_series?match[]={sel}"),
    );
    assert_eq!(c, 204, "{body}");
    let args = [
        "--manifest",
        s(&man),
        "--victoriametrics",
        &vm.url(),
        "--report",
        s(&rep),
    ];
    let o = verify(&args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let r = report(&rep);
    let f = missing_findings(&r);
    // 120 samples in fragments of 50, 50 and 20, all gone.
    assert_eq!(f.len(), 3, "{r:#}");
    assert!(
        f.iter()
            .all(|f| f["kind"] == "missing" && f["series"]["series"] == "s0001" && f["found"] == 0),
        "{r:#}"
    );
    let lost: u64 = f.iter().map(|f| f["expected"].as_u64().unwrap()).sum();
    assert_eq!(lost, 120);
}

#[test]
fn sample_series_checks_a_seeded_subset() {
    let dir = tempfile::tempdir().unwrap();
    let input = gen(&[
        "--seed",
        "21",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--n-series",
        "10",
        "--count",
        "100",
    ]);
    let (out, man) = (dir.path().join("out.ndjson"), dir.path().join("m.ndjson"));
    let o = push(&["--file", s(&out), "--manifest", s(&man), "-q"], &input);
    assert!(o.status.success(), "{}", stderr(&o));
    // Damage every series: each loses its first entry.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut seen = std::collections::HashSet::new();
    let kept: String = text
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            !seen.insert(v["labels"]["series"].as_str().unwrap().to_string())
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&out, kept).unwrap();
    let run = |seed: &str| {
        let rep = dir.path().join(format!("r{seed}.json"));
        let o = verify(&[
            "--manifest",
            s(&man),
            "--file",
            s(&out),
            "--sample-series",
            "4",
            "--seed",
            seed,
            "--report",
            s(&rep),
            "--quiet",
        ]);
        assert_eq!(code(&o), 1);
        let r = report(&rep);
        assert_eq!(r["series_checked"], 4);
        let mut names: Vec<String> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["series"]["series"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let a = run("1");
    assert_eq!(a.len(), 4, "one finding series per sampled series: {a:?}");
    assert_eq!(a, run("1"), "the same seed picks the same series");
    assert_ne!(a, run("2"), "another seed picks others");
}

/// Series read together in one request (VictoriaMetrics export, remote
/// read): one series' labels a subset of another's, different time
/// ranges. Each gets exactly its own samples; after deleting one series'
/// samples, only that series is named.
#[test]
fn series_read_in_batches_get_exactly_their_own_samples() {
    let (prom, prom2, vm) = (
        Prometheus::start(),
        Prometheus::start(),
        VictoriaMetrics::start(),
    );
    let t0 = now_ms() - 600_000;
    let series = [
        (r#"{"__name__":"batched","a":"1"}"#, 0, 60),
        (r#"{"__name__":"batched","a":"1","b":"2"}"#, 30, 60),
        (r#"{"__name__":"batched","a":"2"}"#, 100, 20),
        // Values a regular expression would misread unless escaped.
        (r#"{"__name__":"batched","a":"x(y|z"}"#, 10, 5),
        (r#"{"__name__":"batched","a":"p.q \"r\\"}"#, 20, 5),
    ];
    let mut input = String::new();
    for (labels, start_s, n) in series {
        for i in 0..n {
            input += &metric_rec(labels, t0 + (start_s + i) * 1000, &format!("{}.5", i * 3));
        }
    }
    let total = 150;
    let dir = tempfile::tempdir().unwrap();
    for (name, write, read_flags) in [
        (
            "query",
            format!("{}/api/v1/write", prom2.url()),
            vec!["--prometheus".to_string(), prom2.url()],
        ),
        (
            "prom",
            format!("{}/api/v1/write", prom.url()),
            vec![
                "--prometheus".to_string(),
                prom.url(),
                "--read-api".into(),
                "remote-read".into(),
            ],
        ),
        (
            "vm",
            format!("{}/api/v1/write", vm.url()),
            vec![
                "--victoriametrics".to_string(),
                vm.url(),
                "--wait".into(),
                "5s".into(),
            ],
        ),
    ] {
        let (man, rep) = (
            dir.path().join(format!("{name}.m")),
            dir.path().join(format!("{name}.r")),
        );
        let o = push(
            &[
                "--remote-write",
                &write,
                "--manifest",
                s(&man),
                "-q",
                "--fragment-size",
                "25",
            ],
            input.as_bytes(),
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        if name == "vm" {
            vm.force_flush();
        }
        let mut args = vec![
            "--manifest".to_string(),
            s(&man).to_string(),
            "--report".into(),
            s(&rep).to_string(),
        ];
        args.extend(read_flags.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = verify(&args);
        let r = report(&rep);
        assert_eq!(code(&o), 0, "{name}: {}\n{r:#}", stderr(&o));
        assert_eq!(r["entries_found"], total, "{name}: {r:#}");

        // Delete the series whose labels are a superset of another's.
        let sel = crate::push::urlencode(r#"{__name__="batched",b="2"}"#);
        let (c, body) = http_post(
            &match name {
                "vm" => vm.url(),
                "query" => prom2.url(),
                _ => prom.url(),
            },
            &format!("/api/v1/admin/tsdb/delete_series?match[]={sel}"),
        );
        assert_eq!(c, 204, "{name}: {body}");
        let o = verify(&args);
        let r = report(&rep);
        assert_eq!(code(&o), 1, "{name}: {}\n{r:#}", stderr(&o));
        let damaged: Vec<_> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["discrepancy"] == true)
            .collect();
        assert!(!damaged.is_empty(), "{name}: {r:#}");
        for f in &damaged {
            assert_eq!(f["kind"], "missing", "{name}: {r:#}");
            assert_eq!(
                f["series"]["b"], "2",
                "{name}: only the deleted series: {r:#}"
            );
        }
        assert_eq!(r["entries_found"], total - 60, "{name}: {r:#}");
    }
}

/// Paced runs send fragments of one or two samples, which the manifest
/// records by listing them. Both stores verify such a run clean, values
/// VictoriaMetrics rounds included, and a sample the store does not hold
/// is named exactly.
#[test]
fn small_metric_fragments_verify_exactly_in_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 600_000;
    // Values with 16 significant digits, integers beyond 2^53, tiny ones.
    let value = |s: usize, i: usize| match s {
        0 => format!("{}", 0.123_456_789_012_345_6 * (i + 1) as f64),
        1 => format!("{}", 9_007_199_254_740_993u64 + i as u64),
        2 => format!("{:e}", 1.234_567_890_123e-9 * (i + 1) as f64),
        _ => format!("{}", i as f64 - 4.5),
    };
    let records = |skip: Option<(usize, usize)>| {
        let mut text = String::new();
        for i in 0..9 {
            for s in 0..4 {
                if skip != Some((s, i)) {
                    let labels = format!(r#"{{"__name__":"small_frag","series":"s{s}"}}"#);
                    text += &metric_rec(&labels, t0 + i as i64 * 1000, &value(s, i));
                }
            }
        }
        text
    };
    let flags = ["--fragment-size", "2", "-q"];
    // What a store that lost sample 5 of s2 was told it holds.
    let full = dir.path().join("full.ndjson");
    push_ok(
        &[&["--null", "--manifest", s(&full)], &flags[..]].concat(),
        records(None).as_bytes(),
    );
    assert!(
        std::fs::read_to_string(&full)
            .unwrap()
            .contains("\"samples\":"),
        "fragments of two samples are listed"
    );
    let prom = Prometheus::start();
    let vm = VictoriaMetrics::start();
    for (name, url, flag) in [
        ("prometheus", prom.url(), "--prometheus"),
        ("victoriametrics", vm.url(), "--victoriametrics"),
    ] {
        let man = dir.path().join(format!("{name}.ndjson"));
        let o = push(
            &[
                &["--remote-write", &format!("{url}/api/v1/write")],
                &["--manifest", s(&man)][..],
                &flags[..],
            ]
            .concat(),
            records(Some((2, 5))).as_bytes(),
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let rep = dir.path().join(format!("{name}.json"));
        // The clean run waits for the store to make samples searchable;
        // by the second, they are.
        let args = |m: &Path, wait: &str| {
            vec![
                "--manifest".to_string(),
                s(m).to_string(),
                flag.to_string(),
                url.clone(),
                "--report".to_string(),
                s(&rep).to_string(),
                "--wait".to_string(),
                wait.to_string(),
            ]
        };
        let run =
            |m: &Path, wait| verify(&args(m, wait).iter().map(String::as_str).collect::<Vec<_>>());
        let o = run(&man, "10s");
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert_eq!(report(&rep)["entries_found"], 35, "{name}");
        let o = run(&full, "1s");
        assert_eq!(code(&o), 1, "{name}: {}", stderr(&o));
        let r = report(&rep);
        // VictoriaMetrics' rounding shows as notes, not discrepancies.
        let f: Vec<_> = missing_findings(&r)
            .into_iter()
            .filter(|f| f["discrepancy"] == true)
            .collect();
        assert_eq!(f.len(), 1, "{name}: {r:#}");
        assert_eq!(f[0]["kind"], "missing", "{name}: {r:#}");
        assert_eq!(f[0]["series"]["series"], "s2", "{name}: {r:#}");
        let lost = (t0 + 5000).to_string();
        assert_eq!(f[0]["ranges"][0][0], lost.as_str(), "{name}: {r:#}");
        assert_eq!(f[0]["ranges"][0][1], lost.as_str(), "{name}: {r:#}");
    }
}

/// A paced push's small fragments, read as merged runs, against the Loki
/// test server: clean; then an entry deleted and its neighbour altered
/// (in one run) are both reported, each naming its own fragment, as the
/// failing series is read again fragment by fragment.
#[test]
fn loki_small_fragments_are_verified_as_runs_and_losses_named_exactly() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let start = recent_start();
    let input = gen(&[
        "--seed",
        "21",
        "--start-time",
        &start,
        "--n-series",
        "2",
        "--count",
        "200",
    ]);
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &[
            "--loki",
            &loki.url(),
            "--manifest",
            s(&man),
            "--fragment-size",
            "2",
            "-q",
        ],
        &input,
    );
    let args = [
        "--manifest",
        s(&man),
        "--loki",
        &loki.url(),
        "--report",
        s(&rep),
    ];
    let o = verify(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = report(&rep);
    assert_eq!(r["entries_found"], 400);
    assert_eq!(r["fragments_checked"], 200, "every fragment counts: {r:#}");
    let labels = stream_labels(&input);
    let t0 = looker::timefmt::parse_rfc3339_ns(&start).unwrap();
    // gen's default increment for logs is 1ms: entry 77 goes, 80 changes.
    assert_eq!(
        loki.delete_range(&labels, t0 + 77_000_000, t0 + 77_000_001),
        1
    );
    assert!(loki.alter_line(&labels, t0 + 80_000_000, "tampered"));
    let o = verify(&args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let r = report(&rep);
    let f = r["findings"].as_array().unwrap();
    let kinds: Vec<&str> = f.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["missing", "altered"], "{r:#}");
    let lost = (t0 + 77_000_000).to_string();
    assert_eq!(f[0]["ranges"], serde_json::json!([[lost, lost, 1]]));
    let changed = (t0 + 80_000_000).to_string();
    assert_eq!(f[1]["first_ts"], changed.as_str(), "{r:#}");
    for f in f {
        assert!(
            f["fragments"][0]["parts"].is_null(),
            "one fragment each: {f:#}"
        );
    }
}
