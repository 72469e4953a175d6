//! Stores that fail, throttle, time out and lose data: push and verify
//! through the fault-injecting proxy, and signals during a push.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;

use crate::support::faultproxy::{Fault, FaultPlan, FaultProxy};
use crate::support::loki::{LokiConfig, LokiServer};
use crate::support::servers::{Prometheus, VictoriaMetrics};
use crate::util::*;

fn verify(args: &[&str]) -> (i32, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("r.json");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--report", s(&rep)]);
    let o = bin("looker-verify").args(&all).output().unwrap();
    let r = std::fs::read(&rep)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    (o.status.code().unwrap_or(-1), r, stderr(&o))
}

fn findings(r: &serde_json::Value) -> Vec<serde_json::Value> {
    r["findings"].as_array().cloned().unwrap_or_default()
}

/// One of the three stores, behind a proxy URL for pushes.
enum Store {
    Loki(LokiServer),
    Prom(Prometheus),
    Vm(VictoriaMetrics),
}

impl Store {
    fn url(&self) -> String {
        match self {
            Store::Loki(s) => s.url(),
            Store::Prom(s) => s.url(),
            Store::Vm(s) => s.url(),
        }
    }
    fn push_path(&self) -> &'static str {
        match self {
            Store::Loki(_) => "/loki/api/v1/push",
            _ => "/api/v1/write",
        }
    }
    /// The push URL through `proxy`: Loki takes a base URL, remote write
    /// the write path.
    fn push_url_via(&self, proxy: &FaultProxy) -> String {
        match self {
            Store::Loki(_) => proxy.url(),
            _ => format!("{}/api/v1/write", proxy.url()),
        }
    }
    fn push_flag(&self) -> &'static str {
        match self {
            Store::Loki(_) => "--loki",
            _ => "--remote-write",
        }
    }
    fn verify_flag(&self) -> &'static str {
        match self {
            Store::Loki(_) => "--loki",
            Store::Prom(_) => "--prometheus",
            Store::Vm(_) => "--victoriametrics",
        }
    }
    fn input(&self, seed: &str) -> Vec<u8> {
        let start = recent_start();
        match self {
            Store::Loki(_) => gen(&[
                "--seed",
                seed,
                "--start-time",
                &start,
                "--n-series",
                "6",
                "--count",
                "2000",
            ]),
            _ => gen(&[
                "--metrics",
                "--seed",
                seed,
                "--start-time",
                &start,
                "--n-series",
                "6",
                "--count",
                "250",
                "--time-increment",
                "1s",
            ]),
        }
    }
}

fn stores() -> Vec<Store> {
    vec![
        Store::Loki(LokiServer::start(LokiConfig::default())),
        Store::Prom(Prometheus::start()),
        Store::Vm(VictoriaMetrics::start()),
    ]
}

#[test]
fn twenty_percent_transient_failures_end_acknowledged_once_and_verified() {
    for store in stores() {
        let plan = FaultPlan::random(
            42,
            vec![
                (0.05, Fault::Status(500)),
                (0.05, Fault::Status(503)),
                (
                    0.05,
                    Fault::TooManyRequests {
                        retry_after: Some("0".into()),
                    },
                ),
                (0.05, Fault::ResetBeforeForward),
            ],
        )
        .only_paths(store.push_path());
        let proxy = FaultProxy::start(&store.url(), plan);
        let input = store.input("21");
        let n = input.iter().filter(|&&b| b == b'\n').count() as u64;
        let dir = tempfile::tempdir().unwrap();
        let man = dir.path().join("m.ndjson");
        let push_url = store.push_url_via(&proxy);
        let o = push(
            &[
                store.push_flag(),
                &push_url,
                "--manifest",
                s(&man),
                "--fragment-size",
                "20",
                "--fragments-per-message",
                "2",
                "--retry-min-delay",
                "5ms",
                "--retry-max-delay",
                "50ms",
                "-q",
            ],
            &input,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let faults = proxy
            .log()
            .iter()
            .filter(|e| e.fault != Fault::Forward)
            .count();
        assert!(faults >= 5, "the plan injected faults ({faults})");
        let t = trailer(&man);
        assert_eq!(t["entries"]["ok"], n, "{t}");
        let (code, r, err) = verify(&[
            "--manifest",
            s(&man),
            store.verify_flag(),
            &store.url(),
            "--wait",
            "10s",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(r["entries_found"], n);
        assert!(findings(&r).is_empty(), "{r:#}");
    }
}

/// (first ts, last ts, count) of every stream or series in request bodies
/// that the proxy acknowledged without forwarding.
fn dropped_ranges(proxy: &FaultProxy) -> BTreeSet<(String, i64, i64, u64)> {
    let mut out = BTreeSet::new();
    for e in proxy
        .log()
        .iter()
        .filter(|e| e.fault == Fault::AckWithoutForward)
    {
        let raw = snap::raw::Decoder::new().decompress_vec(&e.body).unwrap();
        if e.path.contains("loki") {
            for st in looker::proto::PushRequest::decode(raw.as_slice())
                .unwrap()
                .streams
            {
                let ts: Vec<i64> = st
                    .entries
                    .iter()
                    .map(|x| x.timestamp.unwrap_or_default().to_ns())
                    .collect();
                out.insert((
                    st.labels.clone(),
                    ts[0],
                    *ts.last().unwrap(),
                    ts.len() as u64,
                ));
            }
        } else {
            for series in looker::proto::WriteRequest::decode(raw.as_slice())
                .unwrap()
                .timeseries
            {
                let ts: Vec<i64> = series.samples.iter().map(|x| x.timestamp).collect();
                let labels = looker::labels::LabelSet::new(
                    series
                        .labels
                        .into_iter()
                        .map(|l| (l.name, l.value))
                        .collect(),
                )
                .unwrap();
                out.insert((
                    labels.to_selector(),
                    ts[0],
                    *ts.last().unwrap(),
                    ts.len() as u64,
                ));
            }
        }
    }
    out
}

#[test]
fn silent_loss_is_reported_exactly() {
    for store in stores() {
        let plan = FaultPlan::sequence(vec![
            Fault::Forward,
            Fault::AckWithoutForward,
            Fault::Forward,
            Fault::Forward,
            Fault::AckWithoutForward,
        ])
        .only_paths(store.push_path());
        let proxy = FaultProxy::start(&store.url(), plan);
        let input = store.input("22");
        let dir = tempfile::tempdir().unwrap();
        let man = dir.path().join("m.ndjson");
        let push_url = store.push_url_via(&proxy);
        let o = push(
            &[
                store.push_flag(),
                &push_url,
                "--manifest",
                s(&man),
                "--fragment-size",
                "100",
                "--fragments-per-message",
                "3",
                "-q",
            ],
            &input,
        );
        assert!(
            o.status.success(),
            "the proxy acknowledged everything: {}",
            stderr(&o)
        );
        let lost = dropped_ranges(&proxy);
        assert_eq!(
            lost.len(),
            6,
            "two requests of three fragments were swallowed"
        );

        let (code, r, err) = verify(&[
            "--manifest",
            s(&man),
            store.verify_flag(),
            &store.url(),
            "--wait",
            "1s",
        ]);
        assert_eq!(code, 1, "{err}");
        let f = findings(&r);
        assert!(
            f.iter().all(|f| f["kind"] == "missing"),
            "only missing findings: {r:#}"
        );
        let reported: BTreeSet<(String, i64, i64, u64)> = f
            .iter()
            .map(|f| {
                let ts = |k: &str| f[k].as_str().unwrap().parse::<i64>().unwrap();
                let missing = f["expected"].as_u64().unwrap() - f["found"].as_u64().unwrap();
                let series: looker::labels::LabelSet =
                    serde_json::from_value(f["series"].clone()).unwrap();
                (series.to_selector(), ts("first_ts"), ts("last_ts"), missing)
            })
            .collect();
        assert_eq!(
            reported, lost,
            "exactly the swallowed fragments, no more, no fewer"
        );
    }
}

#[test]
fn timeout_after_forwarding_is_unknown_and_verified_present_not_lost() {
    for store in stores() {
        let plan = FaultPlan::sequence(vec![
            Fault::Forward,
            Fault::DelayAfterForward(Duration::from_secs(3)),
        ])
        .only_paths(store.push_path());
        let proxy = FaultProxy::start(&store.url(), plan);
        let input = store.input("23");
        let dir = tempfile::tempdir().unwrap();
        let man = dir.path().join("m.ndjson");
        let push_url = store.push_url_via(&proxy);
        // No time to retry: the timed-out message stays unknown.
        let o = push(
            &[
                store.push_flag(),
                &push_url,
                "--manifest",
                s(&man),
                "--timeout",
                "500ms",
                "--retry-deadline",
                "100ms",
                "--max-concurrent-writes",
                "1",
                "--fragment-size",
                "50",
                "--fragments-per-message",
                "2",
                "-q",
            ],
            &input,
        );
        assert_eq!(
            o.status.code(),
            Some(1),
            "unknown outcomes make push exit 1: {}",
            stderr(&o)
        );
        let t = trailer(&man);
        assert!(t["entries"]["unknown"].as_u64().unwrap() > 0, "{t}");
        assert_eq!(t["entries"]["failed"], 0);
        let (code, r, err) = verify(&[
            "--manifest",
            s(&man),
            store.verify_flag(),
            &store.url(),
            "--wait",
            "5s",
        ]);
        assert_eq!(code, 0, "data of an unknown outcome is not loss: {err}");
        let f = findings(&r);
        assert!(
            !f.is_empty()
                && f.iter()
                    .all(|f| f["kind"] == "present" && f["discrepancy"] == false),
            "{r:#}"
        );
    }
}

#[test]
fn a_retry_after_a_timeout_is_acknowledged_and_duplicates_are_explained() {
    let vm = VictoriaMetrics::start();
    let store = Store::Vm(vm);
    let plan = FaultPlan::sequence(vec![Fault::DelayAfterForward(Duration::from_secs(2))])
        .only_paths("/api/v1/write");
    let proxy = FaultProxy::start(&store.url(), plan);
    let input = store.input("24");
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("m.ndjson");
    push_ok(
        &[
            "--remote-write",
            &format!("{}/api/v1/write", proxy.url()),
            "--manifest",
            s(&man),
            "--timeout",
            "500ms",
            "--retry-min-delay",
            "10ms",
            "-q",
        ],
        &input,
    );
    assert!(std::fs::read_to_string(&man)
        .unwrap()
        .contains("\"maybe_duplicated\":true"));
    // VictoriaMetrics keeps both copies of the retried message.
    let (code, r, err) = verify(&[
        "--manifest",
        s(&man),
        "--victoriametrics",
        &store.url(),
        "--wait",
        "5s",
    ]);
    assert_eq!(code, 0, "{err}");
    let f = findings(&r);
    assert!(
        !f.is_empty()
            && f.iter()
                .all(|f| f["kind"] == "duplicated" && f["discrepancy"] == false),
        "{r:#}"
    );
}

fn wait_with_deadline(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_and_sigterm_leave_a_complete_manifest_that_verifies() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let loki = LokiServer::start(LokiConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let man = dir.path().join("m.ndjson");
        let start = recent_start();
        let mut gen = bin("looker-gen")
            .args([
                "--seed",
                "8",
                "--start-time",
                &start,
                "--n-series",
                "20",
                "--count",
                "0",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut push = bin("looker-push")
            .args([
                "--loki",
                &loki.url(),
                "--manifest",
                s(&man),
                "--rate",
                "20000",
                "--linger",
                "100ms",
                "-q",
            ])
            .stdin(Stdio::from(gen.stdout.take().unwrap()))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Under load: wait until the store has received a good share.
        let end = Instant::now() + Duration::from_secs(20);
        while loki.entry_count() < 10_000 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(loki.entry_count() >= 10_000, "push is running");
        unsafe {
            libc::kill(push.id() as i32, sig);
        }
        let st = wait_with_deadline(&mut push, Duration::from_secs(30));
        assert_eq!(st.code(), Some(130), "signal {sig}");
        // The generator sees a closed pipe and ends quietly.
        let gst = wait_with_deadline(&mut gen, Duration::from_secs(10));
        assert!(gst.success(), "looker-gen after the pipe closed: {gst:?}");
        let t = trailer(&man);
        assert_eq!(t["interrupted"], true);
        assert_eq!(
            t["entries"]["ok"].as_u64().unwrap(),
            loki.entry_count() as u64,
            "everything stored was acknowledged and recorded"
        );
        let (code, _, err) = verify(&["--manifest", s(&man), "--loki", &loki.url()]);
        assert_eq!(code, 0, "signal {sig}: {err}");
    }
}

#[test]
fn broken_pipe_ends_generation_quietly() {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' --count 0 --n-series 3 | head -c 1000 >/dev/null",
            assert_cmd::cargo::cargo_bin("looker-gen").display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "no noise: {}", stderr(&out));
}
