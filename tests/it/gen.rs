//! looker-gen as users run it: reproducibility, record validity, sharding,
//! pipes and flag errors.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::process::Stdio;

use assert_cmd::Command;
use looker::record::{parse_labels, parse_line, Mode, Payload};

const START: &str = "2026-01-01T00:00:00Z";

fn gen(args: &[&str]) -> Vec<u8> {
    let out = Command::cargo_bin("looker-gen")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn text(out: &[u8]) -> &str {
    std::str::from_utf8(out).expect("output is UTF-8")
}

#[test]
fn gen_same_seed_and_start_time_is_byte_identical() {
    let args = [
        "--seed",
        "7",
        "--start-time",
        START,
        "--n-series",
        "5",
        "--count",
        "200",
        "--format",
        "apache-combined",
        "--bad-data",
        "10",
        "--multiline",
        "5",
        "--jitter",
        "1ms",
    ];
    let a = gen(&args);
    let b = gen(&args);
    assert!(!a.is_empty());
    assert_eq!(a, b);
    let mut other = args.to_vec();
    other[1] = "8";
    assert_ne!(gen(&other), a, "another seed gives other data");
}

#[test]
fn gen_every_record_parses_and_labels_validate() {
    let formats = [
        "looker",
        "apache-common",
        "apache-combined",
        "json",
        "logfmt",
        "syslog",
    ];
    for f in formats {
        let out = gen(&[
            "--seed",
            "1",
            "--start-time",
            START,
            "--n-series",
            "3",
            "--count",
            "300",
            "--format",
            f,
            "--bad-data",
            "20",
            "--multiline",
            "10",
            "--line-bytes",
            "150",
            "--label",
            "env=test",
        ]);
        let mut series = HashSet::new();
        let mut lines = HashSet::new();
        for l in text(&out).lines() {
            let r = parse_line(l).unwrap_or_else(|e| panic!("{f}: {e}: {l}"));
            let labels = parse_labels(r.labels_json, Mode::Logs).unwrap();
            assert_eq!(labels.get("service_name"), Some("looker"));
            assert_eq!(labels.get("env"), Some("test"));
            assert!(labels.get("invocation").unwrap().starts_with("looker-"));
            let Payload::Line(line) = r.payload else {
                panic!("{f}: not a log record")
            };
            assert!(
                lines.insert((labels.get("series").unwrap().to_string(), line.to_string())),
                "{f}: duplicate line within a series: {line}"
            );
            series.insert(labels);
        }
        assert_eq!(lines.len(), 900, "{f}");
        assert_eq!(series.len(), 3, "{f}");
    }
    for t in ["counter", "gauge", "histogram"] {
        let out = gen(&[
            "--metrics",
            "--metric-type",
            t,
            "--seed",
            "1",
            "--start-time",
            START,
            "--n-series",
            "2",
            "--n-metrics",
            "2",
            "--count",
            "50",
            "--churn-every",
            "20",
        ]);
        let mut n = 0;
        for l in text(&out).lines() {
            let r = parse_line(l).unwrap_or_else(|e| panic!("{t}: {e}: {l}"));
            let labels = parse_labels(r.labels_json, Mode::Metrics).unwrap();
            assert!(labels.get("__name__").unwrap().starts_with("looker_"));
            assert!(labels.get("cycle").is_some());
            assert!(matches!(r.payload, Payload::Value(v) if v.is_finite()));
            n += 1;
        }
        let per_entry = if t == "histogram" { 14 } else { 1 };
        assert_eq!(n, 2 * 2 * 50 * per_entry, "{t}");
    }
}

fn line_set(out: &[u8]) -> BTreeSet<String> {
    text(out).lines().map(str::to_string).collect()
}

#[test]
fn gen_shards_are_disjoint_and_their_union_is_the_whole() {
    for extra in [
        &["--format", "json"][..],
        &["--metrics", "--metric-type", "histogram"][..],
    ] {
        let mut base = vec![
            "--seed",
            "3",
            "--start-time",
            START,
            "--n-series",
            "7",
            "--count",
            "20",
        ];
        base.extend_from_slice(extra);
        let whole = line_set(&gen(&base));
        let mut union = BTreeSet::new();
        let mut total = 0;
        for shard in ["0/3", "1/3", "2/3"] {
            let mut args = base.clone();
            args.extend_from_slice(&["--shard", shard]);
            let part = line_set(&gen(&args));
            assert!(!part.is_empty(), "{shard}");
            total += part.len();
            union.extend(part);
        }
        assert_eq!(total, union.len(), "shards overlap ({extra:?})");
        assert_eq!(union, whole, "{extra:?}");
    }
}

#[test]
fn gen_endless_output_ends_cleanly_when_the_reader_goes_away() {
    let bin = assert_cmd::cargo::cargo_bin("looker-gen");
    for coupling in [&["--start-time", START][..], &[][..]] {
        let mut child = std::process::Command::new(&bin)
            .args(["--count", "0", "--n-series", "50"])
            .args(coupling)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        stdout.read_exact(&mut buf).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{:?}", out.status);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn gen_without_start_time_stays_between_min_and_max_lag() {
    let before = looker::timefmt::now_ns();
    let out = gen(&[
        "--n-series",
        "20",
        "--count",
        "50",
        "--min-lag",
        "2s",
        "--max-lag",
        "5m",
    ]);
    let after = looker::timefmt::now_ns();
    let mut n = 0;
    for l in text(&out).lines() {
        let ts = parse_line(l).unwrap().ts;
        assert!(ts >= before - 300_000_000_000, "older than --max-lag: {ts}");
        assert!(ts <= after - 2_000_000_000, "newer than --min-lag: {ts}");
        n += 1;
    }
    assert_eq!(n, 1000);
}

#[test]
fn gen_invocation_comes_from_the_seed_or_the_flag() {
    let label = |args: &[&str]| {
        let out = gen(args);
        let first = text(&out).lines().next().unwrap().to_string();
        let r = parse_line(&first).unwrap();
        let labels = parse_labels(r.labels_json, Mode::Logs).unwrap();
        labels.get("invocation").unwrap().to_string()
    };
    let a = label(&["--seed", "5", "--count", "1"]);
    assert_eq!(a, label(&["--seed", "5", "--count", "1"]));
    assert_ne!(a, label(&["--seed", "6", "--count", "1"]));
    assert_eq!(
        label(&["--count", "1", "--invocation-id", "run-42"]),
        "run-42"
    );
}

#[test]
fn gen_gzip_output_file_holds_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.ndjson.gz");
    let args = ["--seed", "2", "--start-time", START, "--count", "500"];
    let plain = gen(&args);
    let mut with_file = args.to_vec();
    let p = path.to_str().unwrap();
    with_file.extend_from_slice(&["--output", p]);
    assert!(gen(&with_file).is_empty());
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut unpacked)
        .unwrap();
    assert_eq!(unpacked, plain);
}

#[test]
fn gen_bad_flags_exit_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--format", "xml"], "--format"),
        (&["--compressibility", "lots"], "--compressibility"),
        (&["--metrics", "--metric-type", "summary"], "--metric-type"),
        (
            &["--metrics", "--time-increment", "500us"],
            "--time-increment",
        ),
        (&["--metrics", "--jitter", "10us"], "--jitter"),
        (&["--time-increment", "0"], "--time-increment"),
        (&["--shard", "3/3"], "--shard"),
        (&["--bad-data", "150"], "--bad-data"),
        (&["--label", "bad-name=x"], "--label"),
        (&["--label", "invocation=x"], "--invocation-id"),
        (&["--start-time", "yesterday"], "--start-time"),
        (&["--min-lag", "10m", "--max-lag", "1m"], "--max-lag"),
        (&["--n-series", "0"], "--n-series"),
        (&["--metrics", "--format", "json"], "--format"),
    ];
    for (args, flag) in cases {
        let out = Command::cargo_bin("looker-gen")
            .unwrap()
            .args(*args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
