//! Adversarial review: scenarios that lead to a wrong verdict, or a
//! manifest that says something other than what the store holds.
//!
//! Tests marked `#[ignore = "bug: ..."]` fail on the current code and show
//! a real bug; run them with `cargo test --test it review -- --ignored`.
//! The others pin down subtle behaviour that is right today.

use std::path::Path;

use crate::support::loki::{LokiConfig, LokiServer};
use crate::support::servers::VictoriaMetrics;
use crate::util::*;

/// Every finding as (kind, discrepancy).
fn kinds(r: &serde_json::Value) -> Vec<(String, bool)> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_string(),
                f["discrepancy"].as_bool().unwrap_or(true),
            )
        })
        .collect()
}

/// An entry repeated in the input, but not right after itself, is accepted
/// by looker-push and counted twice in the manifest; Loki keeps one copy
/// (it deduplicates identical (stream, ts, line)), so looker-verify reports
/// an acknowledged entry as missing although nothing was lost.
#[test]
fn loki_non_adjacent_repeat_of_an_entry_is_not_a_loss() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let t = looker::timefmt::now_ns() - 60_000_000_000;
    let l = r#"{"app":"dup"}"#;
    // Replaying a log twice (e.g. overlapping rotated files) gives this.
    let input = [
        log_rec(l, t, "GET /a"),
        log_rec(l, t, "GET /b"),
        log_rec(l, t, "GET /a"),
    ]
    .concat();
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &["--loki", &loki.url(), "--manifest", s(&man), "-q"],
        input.as_bytes(),
    );
    assert_eq!(loki.entry_count(), 2, "Loki keeps (ts, line) once");
    let o = verify(&[
        "--manifest",
        s(&man),
        "--loki",
        &loki.url(),
        "--report",
        s(&rep),
    ]);
    // Either the pusher refuses the repeat (the manifest then counts 2), or
    // the verifier accepts one copy: nothing acknowledged is gone.
    assert_eq!(code(&o), 0, "{}\n{:#}", stderr(&o), report(&rep));
}

/// Loki 3 adds `service_name` to a stream pushed without it. Another
/// stream pushed WITH its own `service_name` and otherwise the same labels
/// is a different series, but the reader takes it for the first one.
#[test]
fn loki_service_name_of_another_series_is_not_taken_for_the_discovered_one() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let t = looker::timefmt::now_ns() - 60_000_000_000;
    let mut input = String::new();
    for i in 0..10 {
        input += &log_rec(r#"{"app":"api"}"#, t + i * 1000, &format!("plain {i}"));
        input += &log_rec(
            r#"{"app":"api","service_name":"billing"}"#,
            t + i * 1000 + 500,
            &format!("billing {i}"),
        );
    }
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &["--loki", &loki.url(), "--manifest", s(&man), "-q"],
        input.as_bytes(),
    );
    let o = verify(&[
        "--manifest",
        s(&man),
        "--loki",
        &loki.url(),
        "--report",
        s(&rep),
    ]);
    assert_eq!(code(&o), 0, "{}\n{:#}", stderr(&o), report(&rep));
}

/// VictoriaMetrics does not keep "about 12 significant digits" per value:
/// the values of a block share one decimal exponent, so a small value next
/// to a large one in the same series loses digits (here 3.14159265358979
/// is stored as 3.1415926). Both values are present with their timestamps;
/// the store only lowered their precision: a note, not `altered`.
#[test]
fn victoriametrics_rounding_of_long_values_is_not_altered() {
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms() - 120_000;
    let l = r#"{"__name__":"precise","k":"v"}"#;
    let values = ["98765432101.2789", "3.14159265358979"];
    let mut input = String::new();
    for (i, v) in values.iter().enumerate() {
        input += &metric_rec(l, t + i as i64 * 1000, v);
    }
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &[
            "--remote-write",
            &format!("{}/api/v1/write", vm.url()),
            "--manifest",
            s(&man),
            "-q",
        ],
        input.as_bytes(),
    );
    vm.force_flush();
    let o = verify(&[
        "--manifest",
        s(&man),
        "--victoriametrics",
        &vm.url(),
        "--report",
        s(&rep),
        "--wait",
        "5s",
    ]);
    let r = report(&rep);
    assert_eq!(code(&o), 0, "{}\n{r:#}", stderr(&o));
    assert_eq!(r["entries_found"], values.len(), "{r:#}");
    assert_eq!(kinds(&r), vec![("note".to_string(), false)], "{r:#}");
}

/// Recorded metrics with long decimals of every magnitude (1e-6 to 1e12)
/// in the same series, so VictoriaMetrics shares exponents across wildly
/// different values: every sample is still there at its precision, so the
/// verdict is 0, while the same samples with one value changed in its
/// third digit (pushed as another series' input) are caught.
#[test]
fn victoriametrics_mixed_magnitudes_verify_clean_and_a_changed_value_does_not() {
    use rand::{Rng, SeedableRng};
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms() - 600_000;
    let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
    let mut input = String::new();
    for series in 0..4 {
        let l = format!(r#"{{"__name__":"mixed","s":"{series}"}}"#);
        for i in 0..300 {
            let v: f64 = rng.random_range(1.0..10.0) * 10f64.powi(rng.random_range(-6..=12));
            let v = if rng.random_bool(0.2) { -v } else { v };
            input += &metric_rec(&l, t + i * 1000, &format!("{v:e}"));
        }
    }
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    let url = format!("{}/api/v1/write", vm.url());
    push_ok(
        &[
            "--remote-write",
            &url,
            "--manifest",
            s(&man),
            "-q",
            "--fragment-size",
            "50",
        ],
        input.as_bytes(),
    );
    vm.force_flush();
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
    let o = verify(&args);
    let r = report(&rep);
    assert_eq!(code(&o), 0, "{}\n{r:#}", stderr(&o));
    assert_eq!(r["entries_found"], 1200, "{r:#}");

    // The manifest of a run whose sample of series 0 with the largest
    // magnitude (the one the store keeps most precisely) differed in its
    // third digit: the store does not hold what that manifest says.
    let (line, rec) = input
        .lines()
        .map(|l| (l, serde_json::from_str::<serde_json::Value>(l).unwrap()))
        .filter(|(_, r)| r["labels"]["s"] == "0")
        .max_by(|a, b| {
            a.1["value"]
                .as_f64()
                .unwrap()
                .abs()
                .total_cmp(&b.1["value"].as_f64().unwrap().abs())
        })
        .unwrap();
    let v = rec["value"].as_f64().unwrap();
    let ts = rec["ts"].as_i64().unwrap();
    let altered = metric_rec(
        r#"{"__name__":"mixed","s":"0"}"#,
        ts,
        &format!("{:e}", v * 1.001),
    );
    let changed = input.replacen(line, altered.trim_end(), 1);
    let man2 = dir.path().join("m2.ndjson");
    push_ok(
        &[
            "--null",
            "--manifest",
            s(&man2),
            "-q",
            "--fragment-size",
            "50",
        ],
        changed.as_bytes(),
    );
    let args = [
        "--manifest",
        s(&man2),
        "--victoriametrics",
        &vm.url(),
        "--report",
        s(&rep),
    ];
    let o = verify(&args);
    let r = report(&rep);
    assert_eq!(code(&o), 1, "{}\n{r:#}", stderr(&o));
    let failing: Vec<_> = kinds(&r).into_iter().filter(|k| k.1).collect();
    assert_eq!(failing, vec![("altered".to_string(), true)], "{r:#}");
}

/// Log entries `(ms offset from a minute ago, line)` of one stream.
fn log_input(app: &str, entries: impl Iterator<Item = (i64, String)>) -> String {
    let t = looker::timefmt::now_ns() - 60_000_000_000;
    let labels = format!(r#"{{"app":"{app}"}}"#);
    entries
        .map(|(off, line)| log_rec(&labels, t + off * 1_000_000, &line))
        .collect()
}

/// Pushes `input` into a fresh Loki test server once per fragment size,
/// all into one manifest, then verifies it: (entries Loki holds, verify's
/// exit code, verify's stderr and report for failure messages).
fn push_per_size_then_verify(input: &str, sizes: &[&str]) -> (usize, i32, String) {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    for size in sizes {
        let o = push(
            &[
                "--loki",
                &loki.url(),
                "--manifest",
                s(&man),
                "--fragment-size",
                size,
                "-q",
            ],
            input.as_bytes(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = verify(&[
        "--manifest",
        s(&man),
        "--loki",
        &loki.url(),
        "--report",
        s(&rep),
    ]);
    let why = format!("{}\n{:#}", stderr(&o), report(&rep));
    (loki.entry_count(), code(&o), why)
}

/// The same input pushed twice (a restarted job, a re-run after a timeout)
/// lands once in Loki, which deduplicates identical entries. The two runs
/// cut different fragments (fragment size, linger), so their fragments
/// overlap without being identical, and the verifier adds both to the
/// expected count.
#[test]
fn loki_same_input_pushed_twice_with_different_fragments_is_not_a_loss() {
    let input = log_input("rerun", (0..12).map(|i| (i, format!("seq {i}"))));
    let (stored, code, why) = push_per_size_then_verify(&input, &["3", "4"]);
    assert_eq!(stored, 12);
    assert_eq!(code, 0, "{why}");
}

/// The same re-push where entries share timestamps (log shippers stamp
/// bursts with one time): the two runs cut the runs of equal timestamps at
/// different places, and Loki keeps each (timestamp, line) once.
#[test]
fn loki_same_input_pushed_twice_cutting_equal_timestamps_differently_is_not_a_loss() {
    let input = log_input("burst", (0..24).map(|i| (i / 5, format!("seq {i}"))));
    let (stored, code, why) = push_per_size_then_verify(&input, &["3", "4", "7"]);
    assert_eq!(stored, 24);
    assert_eq!(code, 0, "{why}");
}

/// Log input out of time order inside one fragment (merged shipper
/// output; Loki takes it): the fragment's range spans its earliest to its
/// latest entry, not its first to its last, so nothing reads as missing
/// or unexpected. Losing the latest entry, which came second, is a loss.
#[test]
fn out_of_order_log_entries_in_one_fragment_verify_clean() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let offsets = [0, 4, 2, 3, 1].into_iter().enumerate();
    let input = log_input("ooo", offsets.map(|(i, off)| (off, format!("seq {i}"))));
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    let sink = dir.path().join("sink.ndjson");
    for target in [["--loki", &loki.url()], ["--file", s(&sink)]] {
        let _ = std::fs::remove_file(&man);
        let o = push(
            &[target[0], target[1], "--manifest", s(&man), "-q"],
            input.as_bytes(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let o = verify(&[
            "--manifest",
            s(&man),
            target[0],
            target[1],
            "--report",
            s(&rep),
        ]);
        assert_eq!(code(&o), 0, "{}\n{:#}", stderr(&o), report(&rep));
    }
    let kept: String = std::fs::read_to_string(&sink)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("seq 1"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&sink, kept).unwrap();
    let o = verify(&[
        "--manifest",
        s(&man),
        "--file",
        s(&sink),
        "--report",
        s(&rep),
    ]);
    let r = report(&rep);
    assert_eq!(code(&o), 1, "{}\n{r:#}", stderr(&o));
    assert_eq!(kinds(&r), vec![("missing".to_string(), true)], "{r:#}");
}

/// Pinned: when both runs cut the same fragments, the identical contents
/// count once and a re-push is clean.
#[test]
fn loki_same_input_pushed_twice_with_same_fragments_is_clean() {
    let input = log_input("rerun", (0..12).map(|i| (i, format!("seq {i}"))));
    let (_, code, why) = push_per_size_then_verify(&input, &["4", "4"]);
    assert_eq!(code, 0, "{why}");
}

/// A manifest that cannot be written (here the header write fails with
/// ENOSPC) stops the push before anything is sent: data in the store that
/// no manifest records would later read as unexpected.
#[test]
fn push_with_an_unwritable_manifest_sends_nothing_and_fails() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink.ndjson");
    let mut input = String::new();
    for i in 0..5 {
        input += &log_rec(
            r#"{"app":"x"}"#,
            1_700_000_000_000_000_000 + i,
            &format!("l{i}"),
        );
    }
    let o = push(
        &["--file", s(&sink), "--manifest", "/dev/full", "-q"],
        input.as_bytes(),
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("manifest") && stderr(&o).contains("/dev/full"),
        "{}",
        stderr(&o)
    );
    let sent = std::fs::read_to_string(&sink)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(sent, 0, "nothing reached the store unrecorded");
}

/// Loki answers 260 (a 2xx) while `block_ingestion_until` is set, and
/// writes nothing. looker-push takes any 2xx as acknowledged, so the
/// manifest claims entries the store refused, and the verifier then
/// reports an acknowledged loss.
#[test]
fn loki_260_ingestion_blocked_is_not_acknowledged() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let t = looker::timefmt::now_ns() - 60_000_000_000;
    let input = log_rec(r#"{"app":"blocked"}"#, t, "one");
    let man = dir.path().join("m.ndjson");
    loki.set_fail_next(1, 260);
    let o = push(
        &["--loki", &loki.url(), "--manifest", s(&man), "-q"],
        input.as_bytes(),
    );
    assert_eq!(loki.entry_count(), 0, "nothing was written");
    let tr = trailer(&man);
    assert_eq!(
        tr["entries"]["ok"],
        0,
        "the manifest acknowledges an entry the store did not write (exit {}): {tr}",
        code(&o)
    );
}

/// VictoriaMetrics drops NaN samples (other than staleness markers) on
/// ingest with a 204. A NaN that looker-push accepted and the store
/// acknowledged is then reported as a lost sample.
#[test]
fn victoriametrics_nan_samples_are_not_reported_as_lost() {
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms() - 120_000;
    let l = r#"{"__name__":"with_nan"}"#;
    let input = [
        metric_rec(l, t, "1"),
        metric_rec(l, t + 1000, "\"NaN\""),
        metric_rec(l, t + 2000, "3"),
    ]
    .concat();
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &[
            "--remote-write",
            &format!("{}/api/v1/write", vm.url()),
            "--manifest",
            s(&man),
            "-q",
        ],
        input.as_bytes(),
    );
    vm.force_flush();
    let o = verify(&[
        "--manifest",
        s(&man),
        "--victoriametrics",
        &vm.url(),
        "--report",
        s(&rep),
        "--wait",
        "3s",
    ]);
    let r = report(&rep);
    // Either refused at push time (VM cannot store it) or not counted as
    // acknowledged loss: a present, documented store behaviour.
    assert_eq!(code(&o), 0, "{}\n{:?}\n{r:#}", stderr(&o), kinds(&r));
}

/// A fragment holding a NaN (which VictoriaMetrics drops) and values it
/// keeps to fewer digits than sent: 989742.1882665245 is cut to
/// 989742.188266 (not rounded to ...267), and a small value next to a large
/// one loses digits to the shared exponent. Neither is an alteration.
#[test]
fn victoriametrics_nan_fragment_with_rounded_values_verifies_clean() {
    let vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms() - 120_000;
    let l = r#"{"__name__":"nan_and_decimals"}"#;
    let values = [
        "989742.1882665245",
        "\"NaN\"",
        "98765432101.2789",
        "3.14159265358979",
        "\"+Inf\"",
        "0",
    ];
    let input: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| metric_rec(l, t + i as i64 * 1000, v))
        .collect();
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    let url = format!("{}/api/v1/write", vm.url());
    push_ok(
        &["--remote-write", &url, "--manifest", s(&man), "-q"],
        input.as_bytes(),
    );
    vm.force_flush();
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
    let o = verify(&args);
    let r = report(&rep);
    assert_eq!(code(&o), 0, "{}\n{r:#}", stderr(&o));
    assert_eq!(r["entries_found"], values.len() - 1, "{r:#}");
}

/// Pinned: many entries of two streams share one nanosecond, and the
/// selector of the first also matches the second (more labels). Paging with
/// a tiny limit must neither lose nor repeat an entry at the tie.
#[test]
fn loki_ties_at_a_page_boundary_across_matching_streams_are_exact() {
    let loki = LokiServer::start(LokiConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let t = looker::timefmt::now_ns() - 60_000_000_000;
    let mut input = String::new();
    for i in 0..7 {
        input += &log_rec(r#"{"app":"tie"}"#, t, &format!("a{i}"));
        input += &log_rec(r#"{"app":"tie","env":"x"}"#, t, &format!("b{i}"));
    }
    input += &log_rec(r#"{"app":"tie"}"#, t + 1, "after");
    let (man, rep) = (dir.path().join("m.ndjson"), dir.path().join("r.json"));
    push_ok(
        &["--loki", &loki.url(), "--manifest", s(&man), "-q"],
        input.as_bytes(),
    );
    let o = verify(&[
        "--manifest",
        s(&man),
        "--loki",
        &loki.url(),
        "--report",
        s(&rep),
        "--query-limit",
        "3",
    ]);
    let r = report(&rep);
    assert_eq!(code(&o), 0, "{}\n{r:#}", stderr(&o));
    assert_eq!(r["entries_found"], 15, "{r:#}");
}
