//! Series lines (VictoriaMetrics' JSON line format) as push input: from
//! `looker-gen --entries-per-line` (and its alias --samples-per-line), and from a VictoriaMetrics export
//! replayed into another store; stream lines (Loki's streams) from one
//! Loki's query answer replayed into another.

use std::path::Path;

use crate::push::urlencode;
use crate::support::loki::{LokiConfig, LokiServer};
use crate::support::servers::{http_get, Prometheus, VictoriaMetrics};
use crate::util::*;

/// Each fragment line of a manifest without what differs between runs
/// (run id, fragment and series numbers), labels in their place.
fn fragments_without_run(manifest: &Path) -> Vec<String> {
    let mut v: Vec<String> = manifest_fragments(manifest)
        .into_iter()
        .map(|mut f| {
            let o = f.as_object_mut().unwrap();
            for k in ["run", "id", "sid"] {
                o.remove(k);
            }
            f.to_string()
        })
        .collect();
    v.sort();
    v
}

/// Pushes `records` and `lines` (the same entries, one per line and many
/// per line) to the file sink with `--fragment-size`, checks each push
/// acknowledged `entries` and verifies clean, and that both made the same
/// fragments.
fn same_fragments_either_way(records: &[u8], lines: &[u8], fragment_size: &str, entries: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut manifests = Vec::new();
    for (name, input) in [("records", records), ("lines", lines)] {
        let (man, sink) = (
            dir.path().join(format!("{name}.manifest")),
            dir.path().join(format!("{name}.ndjson")),
        );
        let o = push_ok(
            &["--file", s(&sink), "--manifest", s(&man)]
                .into_iter()
                .chain(["--fragment-size", fragment_size, "-q"])
                .collect::<Vec<_>>(),
            input,
        );
        assert!(stderr(&o).is_empty(), "{name}: {}", stderr(&o));
        assert_eq!(trailer(&man)["entries"]["ok"], entries, "{name}");
        let o = verify(&["--manifest", s(&man), "--file", s(&sink)]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        manifests.push(fragments_without_run(&man));
    }
    assert_eq!(manifests[0].len(), manifests[1].len());
    for (a, b) in manifests[0].iter().zip(&manifests[1]) {
        assert_eq!(a, b);
    }
}

/// The same samples as records or as series lines make the same
/// fragments, and a file sink fed series lines verifies clean.
#[test]
fn series_lines_push_what_records_push() {
    let start = recent_start();
    let flags = [
        "--metrics",
        "--metric-type",
        "histogram",
        "--seed",
        "21",
        "--start-time",
        &start,
        "--n-series",
        "3",
        "--count",
        "45",
    ];
    let records = gen(&flags);
    let lines = gen(&[&flags[..], &["--samples-per-line", "7"]].concat());
    assert!(
        lines.len() * 3 < records.len(),
        "series lines are denser: {} vs {} bytes",
        lines.len(),
        records.len()
    );
    // Every sample of 3 histograms (14 series each).
    same_fragments_either_way(&records, &lines, "10", 3 * 14 * 45);
}

/// The same log entries as records or as stream lines make the same
/// fragments, and a file sink fed stream lines verifies clean.
#[test]
fn stream_lines_push_what_records_push() {
    let start = recent_start();
    let flags = [
        "--format",
        "logfmt",
        "--multiline",
        "20",
        "--bad-data",
        "20",
        "--seed",
        "24",
        "--start-time",
        &start,
        "--n-series",
        "3",
        "--count",
        "300",
    ];
    let records = gen(&flags);
    let lines = gen(&[&flags[..], &["--entries-per-line", "50"]].concat());
    assert!(lines.starts_with(b"{\"stream\":"));
    same_fragments_either_way(&records, &lines, "40", 900);
}

/// A bad series line is named by file, line and sample; the samples
/// before it, and the lines before it, stay pushed and verify.
#[test]
fn bad_series_line_names_its_sample_and_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms() - 60_000;
    let input = format!(
        "{}{{\"metric\":{{\"__name__\":\"m\",\"k\":\"a\"}},\"values\":[1,2,3,4],\"timestamps\":[{},{},{},{}]}}\n{}",
        metric_rec(r#"{"__name__":"m","k":"a"}"#, t, "0"),
        t + 1000,
        t + 2000,
        t + 2000,
        t + 3000,
        metric_rec(r#"{"__name__":"m","k":"b"}"#, t, "7"),
    );
    let path = dir.path().join("in.ndjson");
    std::fs::write(&path, &input).unwrap();
    let (man, sink) = (dir.path().join("m.ndjson"), dir.path().join("sink.ndjson"));
    let o = bin("looker-push")
        .args([s(&path), "--file", s(&sink), "--manifest", s(&man), "-q"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}:2: sample 3 of 4", path.display())),
        "{err}"
    );
    assert!(err.contains("is not after the previous sample"), "{err}");
    assert!(err.contains("the 2 before it were taken"), "{err}");
    assert_eq!(
        trailer(&man)["entries"]["ok"],
        3,
        "line 1 and two samples of line 2"
    );
    let o = verify(&["--manifest", s(&man), "--file", s(&sink)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // Skipping instead: only the refused sample is left out.
    let (man, sink) = (
        dir.path().join("m2.ndjson"),
        dir.path().join("sink2.ndjson"),
    );
    let o = bin("looker-push")
        .args([s(&path), "--file", s(&sink), "--manifest", s(&man)])
        .args(["--on-invalid", "skip"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(":2: sample 3 of 4"), "{err}");
    assert!(err.contains("the others were taken"), "{err}");
    assert_eq!(trailer(&man)["entries"]["ok"], 5);
    let o = verify(&["--manifest", s(&man), "--file", s(&sink)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// A rate schedule that ends in the middle of a series line ends the
/// push there, as it does between records: a 0 -> 20/s ramp over 2 s
/// lets about its area (20 samples) through, not the line's 500.
#[test]
fn a_schedule_ends_within_a_series_line() {
    let dir = tempfile::tempdir().unwrap();
    let sched = dir.path().join("ramp.json");
    std::fs::write(&sched, r#"{"stages":[{"duration":"2s","target":20}]}"#).unwrap();
    let t = now_ms() - 3_600_000;
    let samples: Vec<(i64, f64)> = (0..500).map(|i| (t + i * 1000, i as f64)).collect();
    let mut line = Vec::new();
    looker::record::series::write_series_line(&mut line, br#"{"__name__":"m"}"#, &samples);
    let rep = dir.path().join("r.json");
    let o = push_ok(
        &["--null", "-q", "--schedule", s(&sched), "--report", s(&rep)],
        &line,
    );
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let read = report(&rep)["entries_read"].as_u64().unwrap();
    assert!(
        (10..=30).contains(&read),
        "{read} samples through a ramp whose area is 20"
    );
}

/// A migration check: samples pushed into VictoriaMetrics, exported from
/// it and replayed into Prometheus, are there exactly as first pushed:
/// the manifest of the first push verifies against Prometheus.
#[test]
fn victoriametrics_export_replays_into_prometheus_and_verifies() {
    let vm = VictoriaMetrics::start();
    let prom = Prometheus::start();
    let dir = tempfile::tempdir().unwrap();
    let input = recent_metrics(
        22,
        4,
        120,
        &["--metric-type", "gauge", "--invocation-id", "migrate"],
    );
    let n = input.iter().filter(|&&b| b == b'\n').count();
    let first = dir.path().join("vm.manifest");
    push_ok(
        &[
            "--remote-write",
            &format!("{}/api/v1/write", vm.url()),
            "--manifest",
            s(&first),
            "-q",
        ],
        &input,
    );
    vm.force_flush();
    let (status, export) = http_get(
        &vm.url(),
        &format!(
            "/api/v1/export?match[]={}",
            urlencode("{invocation=\"migrate\"}")
        ),
    )
    .unwrap();
    assert_eq!(status, 200, "{export}");
    assert!(export.starts_with("{\"metric\":"), "{export}");

    let replay = dir.path().join("prom.manifest");
    push_ok(
        &[
            "--remote-write",
            &format!("{}/api/v1/write", prom.url()),
            "--manifest",
            s(&replay),
            "-q",
        ],
        export.as_bytes(),
    );
    assert_eq!(trailer(&replay)["entries"]["ok"], n as u64);
    for man in [&first, &replay] {
        let rep = dir.path().join("r.json");
        let o = verify(&[
            "--manifest",
            s(man),
            "--prometheus",
            &prom.url(),
            "--report",
            s(&rep),
            "--wait",
            "10s",
        ]);
        assert_eq!(code(&o), 0, "{}: {}", man.display(), stderr(&o));
        assert_eq!(report(&rep)["entries_found"], n as u64);
    }
}

/// A Loki-to-Loki copy: the streams one Loki answers a query with, one
/// per line, replay into another, and the manifest of the first push
/// verifies against the second Loki.
#[test]
fn loki_query_answer_replays_into_another_loki_and_verifies() {
    let (a, b) = (
        LokiServer::start(LokiConfig::default()),
        LokiServer::start(LokiConfig::default()),
    );
    let dir = tempfile::tempdir().unwrap();
    let start = recent_start();
    let input = gen(&[
        "--seed",
        "23",
        "--start-time",
        &start,
        "--n-series",
        "3",
        "--count",
        "200",
        "--format",
        "json",
        "--invocation-id",
        "copy",
    ]);
    let first = dir.path().join("a.manifest");
    push_ok(&["--loki", &a.url(), "--manifest", s(&first), "-q"], &input);
    // As indexed: without the header, Loki 3 merges structured metadata
    // (its own detected_level) into the streams' labels.
    let now = looker::timefmt::now_ns();
    let (from, to) = (
        (now - 3_600_000_000_000).to_string(),
        (now + 60_000_000_000).to_string(),
    );
    let answer = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(crate::loki_server::query(
            &a.url(),
            &[
                ("query", "{invocation=\"copy\"}"),
                ("start", &from),
                ("end", &to),
                ("limit", "5000"),
                ("direction", "forward"),
            ],
            &[("X-Loki-Response-Encoding-Flags", "categorize-labels")],
        ));
    let streams = answer["data"]["result"].as_array().unwrap();
    assert_eq!(streams.len(), 3, "{answer}");
    let lines: String = streams.iter().map(|r| format!("{r}\n")).collect();
    assert!(lines.starts_with("{\"stream\":{"), "{lines}");

    let replay = dir.path().join("b.manifest");
    push_ok(
        &["--loki", &b.url(), "--manifest", s(&replay), "-q"],
        lines.as_bytes(),
    );
    assert_eq!(trailer(&replay)["entries"]["ok"], 600);
    for man in [&first, &replay] {
        let rep = dir.path().join("r.json");
        let o = verify(&[
            "--manifest",
            s(man),
            "--loki",
            &b.url(),
            "--report",
            s(&rep),
        ]);
        assert_eq!(code(&o), 0, "{}: {}", man.display(), stderr(&o));
        assert_eq!(report(&rep)["entries_found"], 600);
    }
}
