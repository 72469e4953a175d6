//! The readers end to end against small in-process fakes of each store's
//! read API, through [`super::run`]: URLs, parameters, paging, windowing
//! and label matching as a store sees them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;

use crate::checksum::{self, Digest};
use crate::exit::Exit;
use crate::labels::LabelSet;
use crate::manifest::{FragmentMeta, Header, ManifestWriter, SeriesKey, Status, FORMAT_VERSION};
use crate::record::Mode;

use super::{run, Options, ReadApi, Target};

fn set(p: &[(&str, &str)]) -> LabelSet {
    LabelSet::new(
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
    .unwrap()
}

/// One fragment to record: labels, status, maybe_duplicated, entries (ts,
/// payload), step.
struct Frag {
    labels: LabelSet,
    status: Status,
    maybe_dup: bool,
    logs: Vec<(i64, String)>,
    metrics: Vec<(i64, f64)>,
    step: Option<i64>,
}

fn write_manifest(path: &Path, mode: Mode, frags: &[Frag]) {
    let header = Header {
        kind: "header".into(),
        version: FORMAT_VERSION,
        run: "r1".into(),
        tool: "test".into(),
        mode,
        target: "test".into(),
        url: "x".into(),
        tenant: None,
        started: "now".into(),
        hash: "xxh3-64-sum".into(),
    };
    let w = ManifestWriter::create(path, &header).unwrap();
    for (id, f) in frags.iter().enumerate() {
        let mut d = Digest::default();
        let mut d12 = 0u64;
        let ts: Vec<i64> = match mode {
            Mode::Logs => f
                .logs
                .iter()
                .map(|(t, l)| {
                    d.add(checksum::log_entry(*t, l.as_bytes()));
                    *t
                })
                .collect(),
            Mode::Metrics => f
                .metrics
                .iter()
                .map(|(t, v)| {
                    d.add(checksum::metric_sample(*t, *v));
                    d12 = d12.wrapping_add(checksum::metric_sample_12(*t, *v));
                    *t
                })
                .collect(),
        };
        let meta = FragmentMeta {
            id: id as u64 + 1,
            series: Arc::new(SeriesKey::new(f.labels.clone())),
            digest: d,
            digest12: (mode == Mode::Metrics).then_some(d12),
            nan: None,
            edges: None,
            samples: None,
            values: match mode {
                Mode::Metrics => Some(checksum::ValueSums::of(f.metrics.iter().copied())),
                Mode::Logs => None,
            },
            first_ts: ts[0],
            last_ts: *ts.last().unwrap(),
            step: f.step,
            bytes: 0,
        };
        w.record(&[meta], f.status, 1, f.maybe_dup, None).unwrap();
    }
    w.finish(0, false, None).unwrap();
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn opts(manifest: PathBuf, target: Target) -> Options {
    Options {
        manifests: vec![manifest],
        target,
        client: crate::http::ClientArgs {
            timeout: std::time::Duration::from_secs(20),
            ..Default::default()
        },
        query_limit: 7,
        max_concurrent_reads: 2,
        sample_series: None,
        seed: 1,
        wait: std::time::Duration::ZERO,
        progress: None,
        metrics_addr: None,
        exit_after: false,
    }
}

// ---- Loki ----

type LokiData = Arc<Mutex<Vec<(BTreeMap<String, String>, i64, String)>>>;

/// Answers like Loki 3 with categorize-labels: every stream whose labels
/// include the selector's (here: all streams; the selector is not parsed),
/// with a `service_name` added, entries in [start, end), at most `limit`
/// in total, forward.
async fn loki_query(
    State(data): State<LokiData>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> (StatusCode, String) {
    if headers
        .get("x-loki-response-encoding-flags")
        .map(|v| v.as_bytes())
        != Some(b"categorize-labels")
    {
        return (StatusCode::BAD_REQUEST, "missing encoding flags".into());
    }
    let start = &q["start"];
    let end = &q["end"];
    if start.len() < 19 || end.len() < 19 || q["direction"] != "forward" {
        return (StatusCode::BAD_REQUEST, format!("bad params {q:?}"));
    }
    let (start, end): (i64, i64) = (start.parse().unwrap(), end.parse().unwrap());
    let limit: usize = q["limit"].parse().unwrap();
    let data = data.lock().unwrap();
    let mut hits: Vec<&(BTreeMap<String, String>, i64, String)> =
        data.iter().filter(|e| e.1 >= start && e.1 < end).collect();
    hits.sort_by_key(|e| e.1);
    hits.truncate(limit);
    let mut streams: BTreeMap<BTreeMap<String, String>, Vec<serde_json::Value>> = BTreeMap::new();
    for (labels, ts, line) in hits {
        let mut l = labels.clone();
        l.insert("service_name".into(), labels["app"].clone());
        streams.entry(l).or_default().push(serde_json::json!([
            ts.to_string(),
            line,
            {"structuredMetadata": {"detected_level": "info"}}
        ]));
    }
    let result: Vec<serde_json::Value> = streams
        .into_iter()
        .map(|(s, v)| serde_json::json!({"stream": s, "values": v}))
        .collect();
    let body =
        serde_json::json!({"status":"success","data":{"resultType":"streams","result":result}});
    (StatusCode::OK, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_reader_pages_through_ties_and_finds_the_hole() {
    let dir = tempfile::tempdir().unwrap();
    let a = set(&[("app", "a")]);
    let base = 1_700_000_000_000_000_000i64;
    // Three entries share each timestamp so ties straddle page edges.
    let logs: Vec<(i64, String)> = (0..60)
        .map(|i| (base + (i / 3) * 1000, format!("a {i}")))
        .collect();
    let frags = vec![
        Frag {
            labels: a.clone(),
            status: Status::Ok,
            maybe_dup: false,
            logs: logs[..30].to_vec(),
            metrics: vec![],
            step: None,
        },
        Frag {
            labels: a.clone(),
            status: Status::Ok,
            maybe_dup: false,
            logs: logs[30..].to_vec(),
            metrics: vec![],
            step: None,
        },
    ];
    let man = dir.path().join("m.ndjson");
    write_manifest(&man, Mode::Logs, &frags);
    let amap: BTreeMap<String, String> = [("app".to_string(), "a".to_string())].into();
    let mut other = amap.clone();
    other.insert("env".into(), "p".into());
    let mut rows: Vec<(BTreeMap<String, String>, i64, String)> = logs
        .iter()
        .map(|(t, l)| (amap.clone(), *t, l.clone()))
        .collect();
    // A superset stream the selector also matches: takes room in pages.
    rows.extend((0..20).map(|i| (other.clone(), base + i * 1500, format!("o {i}"))));
    let data: LokiData = Arc::new(Mutex::new(rows));
    let url = serve(
        Router::new()
            .route("/loki/api/v1/query_range", get(loki_query))
            .with_state(data.clone()),
    )
    .await;

    let out = run(&opts(man.clone(), Target::Loki(url.clone())))
        .await
        .unwrap();
    assert_eq!(out.exit, Exit::Ok, "{:#?}", out.report.findings);
    assert_eq!(out.report.entries_expected, 60);
    assert_eq!(out.report.entries_found, 60);

    // Lose one of the three entries at ts base+12000.
    data.lock().unwrap().retain(|e| e.2 != "a 37");
    let out = run(&opts(man, Target::Loki(url))).await.unwrap();
    assert_eq!(out.exit, Exit::Discrepancy);
    let f = &out.report.findings[0];
    assert_eq!(
        (f.kind, f.fragment, f.expected, f.found),
        ("missing", Some(2), Some(30), Some(29))
    );
}

#[tokio::test]
async fn unreachable_store_is_an_error_not_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("m.ndjson");
    let frags = vec![Frag {
        labels: set(&[("app", "a")]),
        status: Status::Ok,
        maybe_dup: false,
        logs: vec![(5, "x".into())],
        metrics: vec![],
        step: None,
    }];
    write_manifest(&man, Mode::Logs, &frags);
    let url = serve(Router::new().route(
        "/loki/api/v1/query_range",
        get(|| async { (StatusCode::UNAUTHORIZED, "no org id") }),
    ))
    .await;
    let err = run(&opts(man.clone(), Target::Loki(url)))
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("401") && msg.contains("no org id") && msg.contains("{app=\"a\"}"),
        "{msg}"
    );
    // A metrics store for a logs manifest is refused up front.
    let err = run(&opts(
        man,
        Target::VictoriaMetrics("http://127.0.0.1:1".into()),
    ))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("logs"), "{err}");
}

// ---- Prometheus query API ----

type PromData = Arc<Vec<(BTreeMap<String, String>, i64, f64)>>;

/// Instant query `{...}[Rms]` at `time`: samples in [T-R, T] (2.x
/// semantics, so the client must drop the one at T-R), of every series.
async fn prom_query(
    State(data): State<PromData>,
    Query(q): Query<BTreeMap<String, String>>,
) -> (StatusCode, String) {
    answer_prom_query(&data, &q)
}

/// The same query POSTed as a form, as batched reads send it.
async fn prom_query_form(
    State(data): State<PromData>,
    Form(q): Form<BTreeMap<String, String>>,
) -> (StatusCode, String) {
    answer_prom_query(&data, &q)
}

fn answer_prom_query(data: &PromData, q: &BTreeMap<String, String>) -> (StatusCode, String) {
    let query = &q["query"];
    let Some(r) = query
        .rsplit_once('[')
        .and_then(|(_, r)| r.strip_suffix("ms]"))
    else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"{query}\"}}"),
        );
    };
    let r: i64 = r.parse().unwrap();
    let (s, ms) = q["time"].split_once('.').unwrap();
    assert_eq!(ms.len(), 3, "time must have 3 decimals");
    let t: i64 = s.parse::<i64>().unwrap() * 1000 + ms.parse::<i64>().unwrap();
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<serde_json::Value>> = BTreeMap::new();
    for (l, ts, v) in data.iter() {
        if *ts >= t - r && *ts <= t {
            let secs = format!("{}.{:03}", ts / 1000, ts % 1000);
            let num: serde_json::Value = serde_json::from_str(&secs).unwrap();
            series
                .entry(l.clone())
                .or_default()
                .push(serde_json::json!([num, v.to_string()]));
        }
    }
    let result: Vec<serde_json::Value> = series
        .into_iter()
        .map(|(m, v)| serde_json::json!({"metric": m, "values": v}))
        .collect();
    (
        StatusCode::OK,
        serde_json::json!({"status":"success","data":{"resultType":"matrix","result":result}})
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_query_reader_windows_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let m = set(&[("__name__", "m"), ("a", "1")]);
    let start = 1_700_000_000_000i64;
    // 25,000 samples 1ms apart: three windows, edges between samples.
    let samples: Vec<(i64, f64)> = (0..25_000)
        .map(|i| (start + i, (i % 97) as f64 * 0.5))
        .collect();
    let frags = vec![Frag {
        labels: m.clone(),
        status: Status::Ok,
        maybe_dup: false,
        logs: vec![],
        metrics: samples.clone(),
        step: Some(1),
    }];
    let man = dir.path().join("m.ndjson");
    write_manifest(&man, Mode::Metrics, &frags);
    let mmap: BTreeMap<String, String> = m.pairs().iter().cloned().collect();
    let mut sup = mmap.clone();
    sup.insert("b".into(), "2".into());
    let mut rows: Vec<(BTreeMap<String, String>, i64, f64)> = samples
        .iter()
        .map(|(t, v)| (mmap.clone(), *t, *v))
        .collect();
    rows.push((sup, start + 5, 1.0));
    rows.push((mmap.clone(), start - 1, 1.0)); // before the range: never read
    let full: PromData = Arc::new(rows.clone());
    let url = serve(
        Router::new()
            .route("/api/v1/query", get(prom_query))
            .with_state(full),
    )
    .await;
    let out = run(&opts(man.clone(), Target::Prometheus(url, ReadApi::Query)))
        .await
        .unwrap();
    assert_eq!(out.exit, Exit::Ok, "{:#?}", out.report.findings);
    assert_eq!(out.report.entries_found, 25_000);

    // Drop samples 12,000..12,009 and alter none: exact missing range.
    rows.retain(|(l, t, _)| !(l == &mmap && (start + 12_000..start + 12_010).contains(t)));
    let url = serve(
        Router::new()
            .route("/api/v1/query", get(prom_query))
            .with_state(Arc::new(rows)),
    )
    .await;
    let out = run(&opts(man, Target::Prometheus(url, ReadApi::Query)))
        .await
        .unwrap();
    assert_eq!(out.exit, Exit::Discrepancy);
    let f = &out.report.findings[0];
    assert_eq!(f.kind, "missing");
    let (a, b) = ((start + 12_000).to_string(), (start + 12_009).to_string());
    assert_eq!(f.ranges, vec![(a, b, 10)]);
}

/// Three series differing in one label, read together in one query per
/// window (25,000 samples each: several windows of the batch's budget):
/// all found, and samples dropped from one series are named for it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_batched_queries_give_each_series_its_own_samples() {
    let dir = tempfile::tempdir().unwrap();
    let start = 1_700_000_000_000i64;
    let labels: Vec<LabelSet> = (0..3)
        .map(|k| set(&[("__name__", "m"), ("s", &format!("s{k}"))]))
        .collect();
    let frags: Vec<Frag> = labels
        .iter()
        .enumerate()
        .map(|(k, l)| Frag {
            labels: l.clone(),
            status: Status::Ok,
            maybe_dup: false,
            logs: vec![],
            metrics: (0..25_000)
                .map(|i| (start + i, (i * (k as i64 + 1)) as f64))
                .collect(),
            step: Some(1),
        })
        .collect();
    let man = dir.path().join("m.ndjson");
    write_manifest(&man, Mode::Metrics, &frags);
    let mut rows: Vec<(BTreeMap<String, String>, i64, f64)> = Vec::new();
    for f in &frags {
        let m: BTreeMap<String, String> = f.labels.pairs().iter().cloned().collect();
        rows.extend(f.metrics.iter().map(|&(t, v)| (m.clone(), t, v)));
    }
    let serve_rows = |rows: Vec<(BTreeMap<String, String>, i64, f64)>| {
        serve(
            Router::new()
                .route("/api/v1/query", get(prom_query).post(prom_query_form))
                .with_state(Arc::new(rows)),
        )
    };
    let url = serve_rows(rows.clone()).await;
    let out = run(&opts(man.clone(), Target::Prometheus(url, ReadApi::Query)))
        .await
        .unwrap();
    assert_eq!(out.exit, Exit::Ok, "{:#?}", out.report.findings);
    assert_eq!(out.report.entries_found, 75_000);

    let s1: BTreeMap<String, String> = labels[1].pairs().iter().cloned().collect();
    rows.retain(|(l, t, _)| !(l == &s1 && (start + 9_990..start + 10_010).contains(t)));
    let url = serve_rows(rows).await;
    let out = run(&opts(man, Target::Prometheus(url, ReadApi::Query)))
        .await
        .unwrap();
    assert_eq!(out.exit, Exit::Discrepancy);
    assert_eq!(out.report.findings.len(), 1, "{:#?}", out.report.findings);
    let f = &out.report.findings[0];
    assert_eq!(f.kind, "missing");
    assert_eq!(f.series, labels[1]);
    let (a, b) = ((start + 9_990).to_string(), (start + 10_009).to_string());
    assert_eq!(f.ranges, vec![(a, b, 20)]);
}

// ---- VictoriaMetrics export ----

type VmData = Arc<Vec<String>>;

/// Export as VictoriaMetrics answers it; the verifier posts its
/// parameters as a form.
async fn vm_export(
    State(lines): State<VmData>,
    Form(q): Form<Vec<(String, String)>>,
) -> (StatusCode, String) {
    let has = |k: &str| q.iter().any(|(n, _)| n == k);
    if !(has("match[]") && has("start") && has("end")) {
        return (StatusCode::BAD_REQUEST, format!("{q:?}"));
    }
    for (k, v) in &q {
        if (k == "start" || k == "end") && v.parse::<i64>().is_err() {
            return (
                StatusCode::BAD_REQUEST,
                format!("{k}={v} must be whole seconds"),
            );
        }
    }
    (StatusCode::OK, lines.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoriametrics_rounding_and_retried_duplicates_are_not_discrepancies() {
    let dir = tempfile::tempdir().unwrap();
    let m = set(&[("__name__", "m")]);
    let samples = vec![(1000, 0.1 + 0.2), (2000, 1.0), (3000, 2.0)];
    let frags = vec![Frag {
        labels: m.clone(),
        status: Status::Ok,
        maybe_dup: true,
        logs: vec![],
        metrics: samples,
        step: Some(1000),
    }];
    let man = dir.path().join("m.ndjson");
    write_manifest(&man, Mode::Metrics, &frags);
    // Rounded value, a split series, and the 2000 sample stored twice.
    let lines: VmData = Arc::new(vec![
        r#"{"metric":{"__name__":"m"},"values":[0.3,1],"timestamps":[1000,2000]}"#.into(),
        r#"{"metric":{"__name__":"m"},"values":[1,2],"timestamps":[2000,3000]}"#.into(),
    ]);
    let app = Router::new()
        .route("/api/v1/export", post(vm_export))
        .route("/internal/force_flush", get(|| async { "" }))
        .with_state(lines);
    let url = serve(app).await;
    let out = run(&opts(man.clone(), Target::VictoriaMetrics(url)))
        .await
        .unwrap();
    assert_eq!(out.exit, Exit::Ok, "{:#?}", out.report.findings);
    let kinds: Vec<&str> = out.report.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec!["duplicated", "note"]);
    assert!(out.report.findings[1].detail.contains("decimal precision"));

    // The same answer without the retry flag: the duplicate is a discrepancy.
    let frags2 = vec![Frag {
        maybe_dup: false,
        ..frags.into_iter().next().unwrap()
    }];
    write_manifest(&dir.path().join("m2.ndjson"), Mode::Metrics, &frags2);
    let lines: VmData = Arc::new(vec![
        r#"{"metric":{"__name__":"m"},"values":[0.3,1,1,2],"timestamps":[1000,2000,2000,3000]}"#
            .into(),
    ]);
    let url = serve(
        Router::new()
            .route("/api/v1/export", post(vm_export))
            .with_state(lines),
    )
    .await;
    let out = run(&opts(
        dir.path().join("m2.ndjson"),
        Target::VictoriaMetrics(url),
    ))
    .await
    .unwrap();
    assert_eq!(out.exit, Exit::Discrepancy);
    assert_eq!(out.report.findings[0].kind, "duplicated");
}
