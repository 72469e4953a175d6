//! Recorded inputs from `fixtures/`: every timestamp form of the record
//! format, metric specials, schedule files and a plain access log.

use std::path::PathBuf;

use crate::support::loki::{LokiConfig, LokiServer};
use crate::support::servers::Prometheus;
use crate::util::*;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

#[test]
fn recorded_logs_in_every_timestamp_form_push_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (out, man) = (dir.path().join("out.ndjson"), dir.path().join("m.ndjson"));
    let input = fixture("records/logs.ndjson");
    let o = bin("looker-push")
        .args([s(&input), "--file", s(&out), "--manifest", s(&man), "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let sink = std::fs::read_to_string(&out).unwrap();
    let mut ts: Vec<String> = sink
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ts.sort();
    // Integer, string, RFC3339 and RFC3339 with an offset: all exact ns.
    assert_eq!(
        ts,
        [
            "1700000000000000000",
            "1700000000000000001",
            "1700000000000000002",
            "1700000000000000003",
            "1700000000500000000",
            "1700000000500000001"
        ]
    );
    // Label order does not make a series: two series, not three.
    let series: std::collections::BTreeSet<String> = sink
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["labels"].to_string())
        .collect();
    assert_eq!(series.len(), 2, "{series:?}");
    let o = verify(&["--manifest", s(&man), "--file", s(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// `logcli query --output jsonl --forward` output replays as recorded:
/// its `timestamp` (RFC3339, offsets too) is the entry's exact time.
#[test]
fn logcli_jsonl_output_replays_with_exact_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let (out, man) = (dir.path().join("out.ndjson"), dir.path().join("m.ndjson"));
    let input = fixture("records/logcli.jsonl");
    let o = bin("looker-push")
        .args([s(&input), "--file", s(&out), "--manifest", s(&man), "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let sink: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(String, String)> = sink
        .iter()
        .map(|v| {
            (
                v["ts"].as_str().unwrap().into(),
                v["line"].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("1700000000000000000", "GET /cart 200 12ms"),
        ("1700000000000000001", "POST /cart/items 201 31ms <ok>"),
        (
            "1700000000500000000",
            "level=error msg=\"payment declined\" code=51",
        ),
        ("1700000001123456789", "{\"q\":\"shoes\",\"hits\":42}"),
    ];
    assert_eq!(got, want.map(|(t, l)| (t.to_string(), l.to_string())));
    let o = verify(&["--manifest", s(&man), "--file", s(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn recorded_metrics_with_nan_and_infinity_verify_in_the_file_sink_and_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("records/metrics.ndjson");
    let (out, man) = (dir.path().join("out.ndjson"), dir.path().join("m.ndjson"));
    let o = bin("looker-push")
        .args([s(&input), "--file", s(&out), "--manifest", s(&man), "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        code(&verify(&["--manifest", s(&man), "--file", s(&out)])),
        0
    );

    let prom = Prometheus::start();
    let man2 = dir.path().join("m2.ndjson");
    let url = format!("{}/api/v1/write", prom.url());
    let o = bin("looker-push")
        .args([
            s(&input),
            "--remote-write",
            &url,
            "--retime",
            "--manifest",
            s(&man2),
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(trailer(&man2)["entries"]["ok"], 6);
    let o = verify(&["--manifest", s(&man2), "--prometheus", &prom.url()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn schedule_files_in_both_formats_load() {
    use looker::schedule::Schedule;
    use std::time::Duration;
    let steps = Schedule::load(&fixture("schedules/steps.json")).unwrap();
    assert_eq!(steps.rate_at(Duration::from_secs(4)), Some(20.0));
    let ramp = Schedule::load(&fixture("schedules/ramp.json")).unwrap();
    assert_eq!(ramp.rate_at(Duration::from_secs(15)), Some(500.0));
    assert_eq!(
        ramp.area(Duration::from_secs(120)),
        Some(15_000.0 + 60_000.0 + 15_000.0)
    );
    assert_eq!(ramp.rate_at(Duration::from_secs(121)), None);
}

#[test]
fn a_recorded_access_log_replays_as_raw_lines_and_verifies() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("m.ndjson");
    let log = fixture("raw/access.log");
    let o = bin("looker-push")
        .args([
            s(&log),
            "--format",
            "raw",
            "--label",
            "job=nginx",
            "--label",
            "host=web1",
            "--loki",
            &loki.url(),
            "--manifest",
            s(&man),
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = std::fs::read_to_string(&log).unwrap().lines().count();
    assert_eq!(loki.entry_count(), lines);
    let o = verify(&["--manifest", s(&man), "--loki", &loki.url()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}
