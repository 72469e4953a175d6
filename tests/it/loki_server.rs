//! The Loki-compatible test server against the facts of the real Loki API
//! (status codes, limits, partial acceptance, dedup, query semantics), so
//! tests that use it in place of Loki exercise the real behaviour.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;

use looker::proto::{EntryAdapter, LabelPair, PushRequest, StreamAdapter, Timestamp};
use looker::timefmt::now_ns;
use prost::Message as _;
use serde_json::{json, Value};

use crate::support::loki::{LokiConfig, LokiServer};

const SEC: i64 = 1_000_000_000;

fn lbl(p: &[(&str, &str)]) -> BTreeMap<String, String> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A timestamp a few minutes in the past, aligned to a whole second so
/// second-granularity parameters can address it exactly.
fn base_ts() -> i64 {
    (now_ns() / SEC - 300) * SEC
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn proto_body(streams: &[(&str, Vec<(i64, &str)>)]) -> Vec<u8> {
    let req = PushRequest {
        streams: streams
            .iter()
            .map(|(labels, entries)| StreamAdapter {
                labels: labels.to_string(),
                entries: entries
                    .iter()
                    .map(|(ts, line)| EntryAdapter {
                        timestamp: Some(Timestamp::from_ns(*ts)),
                        line: line.to_string(),
                        structured_metadata: vec![],
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut rb = client().post(format!("{url}/loki/api/v1/push")).body(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, resp.text().await.unwrap(), h)
}

async fn push_proto(url: &str, streams: &[(&str, Vec<(i64, &str)>)]) -> (u16, String) {
    let (s, b, _) = post(
        url,
        &[("Content-Type", "application/x-protobuf")],
        proto_body(streams),
    )
    .await;
    (s, b)
}

async fn push_json(url: &str, body: &Value) -> (u16, String) {
    let (s, b, _) = post(
        url,
        &[("Content-Type", "application/json")],
        body.to_string().into_bytes(),
    )
    .await;
    (s, b)
}

async fn get(
    url: &str,
    path: &str,
    params: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut u = reqwest::Url::parse(&format!("{url}{path}")).unwrap();
    for (k, v) in params {
        u.query_pairs_mut().append_pair(k, v);
    }
    let mut rb = client().get(u);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// `query_range`; returns the parsed body on 200 and panics otherwise.
pub(crate) async fn query(url: &str, params: &[(&str, &str)], headers: &[(&str, &str)]) -> Value {
    let (status, body) = get(url, "/loki/api/v1/query_range", params, headers).await;
    assert_eq!(status, 200, "query failed: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "streams");
    v
}

/// (stream labels, ts, line) in response order.
fn flatten(v: &Value) -> Vec<(BTreeMap<String, String>, i64, String)> {
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let labels: BTreeMap<String, String> = serde_json::from_value(s["stream"].clone()).unwrap();
        for val in s["values"].as_array().unwrap() {
            out.push((
                labels.clone(),
                val[0].as_str().unwrap().parse().unwrap(),
                val[1].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

fn lines(v: &Value) -> Vec<String> {
    flatten(v).into_iter().map(|(_, _, l)| l).collect()
}

fn range_params<'a>(start: &'a str, end: &'a str, q: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("query", q), ("start", start), ("end", end)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_push_is_204_and_reads_back_with_discovered_labels() {
    let srv = LokiServer::start(LokiConfig::default());
    let t = base_ts();
    let (status, body) = push_proto(
        &srv.url(),
        &[(
            r#"{job="varlogs", app="a\"b"}"#,
            vec![(t, "one"), (t + 1, "two"), (t + 2, "three")],
        )],
    )
    .await;
    assert_eq!((status, body.as_str()), (204, ""));
    assert_eq!(srv.entry_count(), 3);
    assert_eq!(srv.push_requests(), 1);
    assert_eq!(
        srv.streams(),
        vec![(
            lbl(&[
                ("app", "a\"b"),
                ("job", "varlogs"),
                ("service_name", "a\"b")
            ]),
            3
        )]
    );
    let (s, e) = ((t - SEC).to_string(), (t + SEC).to_string());
    let v = query(
        &srv.url(),
        &[
            range_params(&s, &e, r#"{job="varlogs"}"#),
            vec![("direction", "forward")],
        ]
        .concat(),
        &[],
    )
    .await;
    let got = flatten(&v);
    assert_eq!(
        got.iter()
            .map(|(_, ts, l)| (*ts, l.as_str()))
            .collect::<Vec<_>>(),
        vec![(t, "one"), (t + 1, "two"), (t + 2, "three")]
    );
    // Metadata is merged into the stream labels without categorize-labels.
    assert_eq!(got[0].0["detected_level"], "info");
    assert_eq!(got[0].0["service_name"], "a\"b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_push_plain_gzip_and_deflate() {
    let srv = LokiServer::start(LokiConfig::default());
    let t = base_ts();
    let body = |line: &str, ts: i64| json!({"streams":[{"stream":{"app":"j"},"values":[[ts.to_string(), line, {"trace_id":"abc"}]]}]});
    assert_eq!(push_json(&srv.url(), &body("plain", t)).await.0, 204);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body("gzipped", t + 1).to_string().as_bytes())
        .unwrap();
    let (s, b, _) = post(
        &srv.url(),
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        gz.finish().unwrap(),
    )
    .await;
    assert_eq!((s, b.as_str()), (204, ""));

    let mut df = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    df.write_all(body("deflated", t + 2).to_string().as_bytes())
        .unwrap();
    let (s, _, _) = post(
        &srv.url(),
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "deflate"),
        ],
        df.finish().unwrap(),
    )
    .await;
    assert_eq!(s, 204);

    let (s, b, _) = post(
        &srv.url(),
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "br"),
        ],
        body("br", t + 3).to_string().into_bytes(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(b.contains(r#"Content-Encoding "br" not supported"#), "{b}");

    assert_eq!(srv.entry_count(), 3);
    let (st, en) = ((t - SEC).to_string(), (t + SEC).to_string());
    let v = query(
        &srv.url(),
        &[
            range_params(&st, &en, r#"{app="j"}"#),
            vec![("direction", "forward")],
        ]
        .concat(),
        &[],
    )
    .await;
    assert_eq!(lines(&v), ["plain", "gzipped", "deflated"]);
    assert_eq!(flatten(&v)[0].0["trace_id"], "abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pushes_are_400() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    // JSON timestamps must be strings.
    let (s, _) = push_json(
        &url,
        &json!({"streams":[{"stream":{"a":"1"},"values":[[t, "x"]]}]}),
    )
    .await;
    assert_eq!(s, 400);
    // No Content-Type at all.
    let (s, _, _) = post(&url, &[], proto_body(&[(r#"{a="1"}"#, vec![(t, "x")])])).await;
    assert_eq!(s, 400);
    // Framed or garbage bodies are not snappy block.
    let (s, _, _) = post(
        &url,
        &[("Content-Type", "application/x-protobuf")],
        b"\xff\xff\xffnot snappy".to_vec(),
    )
    .await;
    assert_eq!(s, 400);
    // Empty label set.
    let (s, b) = push_proto(&url, &[("{}", vec![(t, "x")])]).await;
    assert_eq!(s, 400);
    assert!(
        b.contains("error at least one label pair is required per stream"),
        "{b}"
    );
    let (s, b) = push_json(
        &url,
        &json!({"streams":[{"stream":{},"values":[[t.to_string(), "x"]]}]}),
    )
    .await;
    assert_eq!(s, 400);
    assert!(b.contains("at least one label pair"), "{b}");
    // Duplicate and invalid label names.
    let (s, b) = push_proto(&url, &[(r#"{a="1", a="2"}"#, vec![(t, "x")])]).await;
    assert_eq!(s, 400);
    assert!(b.contains("has duplicate label name: 'a'"), "{b}");
    let (s, _) = push_proto(&url, &[(r#"{1a="1"}"#, vec![(t, "x")])]).await;
    assert_eq!(s, 400);
    let (s, _) = push_json(
        &url,
        &json!({"streams":[{"stream":{"a-b":"1"},"values":[[t.to_string(), "x"]]}]}),
    )
    .await;
    assert_eq!(s, 400);
    // Go-style escapes are accepted; empty values are dropped.
    let (s, b) = push_proto(&url, &[(r#"{a="x\ty\x41\u00e9", e=""}"#, vec![(t, "ok")])]).await;
    assert_eq!((s, b.as_str()), (204, ""));
    assert_eq!(
        srv.streams(),
        vec![(
            lbl(&[("a", "x\tyAé"), ("service_name", "unknown_service")]),
            1
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_need_org_id_and_are_isolated() {
    let srv = LokiServer::start(LokiConfig {
        auth_enabled: true,
        ..LokiConfig::default()
    });
    let url = srv.url();
    let t = base_ts();
    let body = || proto_body(&[(r#"{app="x"}"#, vec![(t, "line")])]);
    let (s, b, _) = post(&url, &[("Content-Type", "application/x-protobuf")], body()).await;
    assert_eq!(s, 401);
    assert_eq!(b.trim(), "no org id");
    let (s, _, _) = post(
        &url,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("X-Scope-OrgID", "a|b"),
        ],
        body(),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _, _) = post(
        &url,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("X-Scope-OrgID", "team-a"),
        ],
        body(),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(srv.entry_count_in("team-a"), 1);
    assert_eq!(srv.entry_count_in("fake"), 0);

    let (st, en) = ((t - SEC).to_string(), (t + SEC).to_string());
    let params = range_params(&st, &en, r#"{app="x"}"#);
    let (s, _) = get(&url, "/loki/api/v1/query_range", &params, &[]).await;
    assert_eq!(s, 401);
    let v = query(&url, &params, &[("X-Scope-OrgID", "team-b")]).await;
    assert!(lines(&v).is_empty());
    let v = query(&url, &params, &[("X-Scope-OrgID", "team-a")]).await;
    assert_eq!(lines(&v), ["line"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_entries_are_dropped_and_valid_ones_kept() {
    let srv = LokiServer::start(LokiConfig {
        max_line_size: 10,
        ..LokiConfig::default()
    });
    let url = srv.url();
    let now = now_ns();
    let too_old = now - 8 * 24 * 3600 * SEC;
    let too_new = now + 3600 * SEC;
    let t = base_ts();
    let (s, b) = push_proto(
        &url,
        &[(
            r#"{app="p"}"#,
            vec![
                (too_old, "old"),
                (t, "ok 1"),
                (too_new, "new"),
                (t + 1, "this line is too long"),
                (t + 2, "ok 2"),
            ],
        )],
    )
    .await;
    assert_eq!(s, 400, "partial acceptance still answers 400");
    assert!(b.contains("has timestamp too old: "), "{b}");
    assert!(b.contains("oldest acceptable timestamp is: "), "{b}");
    assert!(b.contains("has timestamp too new: "), "{b}");
    assert!(
        b.contains("Max entry size '10' bytes exceeded for stream '{app=\"p\", service_name=\"p\"}' while adding an entry with length '21' bytes"),
        "{b}"
    );
    assert_eq!(
        srv.entry_count(),
        2,
        "the valid entries of the request are stored"
    );

    // Too many labels rejects the stream, other streams still land.
    let many: String = (0..16)
        .map(|i| format!("l{i}=\"v\""))
        .collect::<Vec<_>>()
        .join(", ");
    let (s, b) = push_proto(
        &url,
        &[
            (&format!("{{{many}}}"), vec![(t, "x")]),
            (r#"{app="q"}"#, vec![(t, "y")]),
        ],
    )
    .await;
    assert_eq!(s, 400);
    assert!(b.contains("has 16 label names; limit 15"), "{b}");
    assert_eq!(srv.entry_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_too_far_behind_the_stream_head_are_rejected() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    assert_eq!(
        push_proto(&url, &[(r#"{app="w"}"#, vec![(t, "head")])])
            .await
            .0,
        204
    );
    // 59 minutes behind is inside the window; out of order is fine.
    assert_eq!(
        push_proto(&url, &[(r#"{app="w"}"#, vec![(t - 59 * 60 * SEC, "late")])])
            .await
            .0,
        204
    );
    let (s, b) = push_proto(
        &url,
        &[(
            r#"{app="w"}"#,
            vec![(t - 2 * 3600 * SEC, "too late"), (t + 1, "fresh")],
        )],
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        b.contains("entry too far behind, oldest acceptable timestamp is: "),
        "{b}"
    );
    assert!(
        b.contains("total ignored: 1 out of 2 for stream: {app=\"w\", service_name=\"w\"}"),
        "{b}"
    );
    assert_eq!(srv.entry_count(), 3);
    // Another stream has its own head.
    assert_eq!(
        push_proto(
            &url,
            &[(r#"{app="v"}"#, vec![(t - 2 * 3600 * SEC, "old but ok")])]
        )
        .await
        .0,
        204
    );
    // Loki's ingester answers a push with its last stream's outcome: a
    // stream's refused entries are dropped silently when a later stream
    // of the same push is taken, and reported when it is the last.
    let late = (t - 2 * 3600 * SEC, "too late again");
    for (streams, want) in [
        (
            [
                (r#"{app="w"}"#, vec![late]),
                (r#"{app="u"}"#, vec![(t, "fine")]),
            ],
            204,
        ),
        (
            [
                (r#"{app="u"}"#, vec![(t + 1, "fine too")]),
                (r#"{app="w"}"#, vec![late]),
            ],
            400,
        ),
    ] {
        let (s, b) = push_proto(&url, &streams).await;
        assert_eq!(s, want, "{b}");
    }
    assert_eq!(
        srv.entry_count(),
        6,
        "the late entry was stored neither time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_over_the_burst_get_429_and_store_nothing() {
    let srv = LokiServer::start(LokiConfig {
        ingestion_burst_bytes: 1000,
        ..LokiConfig::default()
    });
    let t = base_ts();
    let line = "x".repeat(600);
    let (s, b, h) = post(
        &srv.url(),
        &[("Content-Type", "application/x-protobuf")],
        proto_body(&[(r#"{app="r"}"#, vec![(t, &line), (t + 1, &line)])]),
    )
    .await;
    assert_eq!(s, 429);
    assert!(
        b.starts_with("Ingestion rate limit exceeded for user fake"),
        "{b}"
    );
    assert!(
        b.contains("while attempting to ingest '2' lines totaling '1200' bytes"),
        "{b}"
    );
    assert!(h.get("retry-after").is_none());
    assert_eq!(srv.entry_count(), 0);
    assert_eq!(
        push_proto(&srv.url(), &[(r#"{app="r"}"#, vec![(t, &line)])])
            .await
            .0,
        204
    );
    assert_eq!(srv.entry_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_entries_are_deduplicated_same_ts_different_lines_kept() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    let batch = vec![(t, "a"), (t, "b"), (t + 1, "c")];
    assert_eq!(
        push_proto(&url, &[(r#"{app="d"}"#, batch.clone())]).await.0,
        204
    );
    assert_eq!(push_proto(&url, &[(r#"{app="d"}"#, batch)]).await.0, 204);
    // The same entry in another stream is a different entry.
    assert_eq!(
        push_proto(&url, &[(r#"{app="e"}"#, vec![(t, "a")])])
            .await
            .0,
        204
    );
    assert_eq!(srv.entry_count(), 4);
    let (st, en) = ((t - SEC).to_string(), (t + SEC).to_string());
    let v = query(&url, &range_params(&st, &en, r#"{app="d"}"#), &[]).await;
    let mut got = lines(&v);
    got.sort();
    assert_eq!(got, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_is_inclusive_end_exclusive_and_short_integers_are_seconds() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    let half = t + SEC / 2;
    push_proto(
        &url,
        &[(
            r#"{app="b"}"#,
            vec![(t, "t0"), (t + 1, "t1"), (t + 2, "t2"), (half, "half")],
        )],
    )
    .await;
    let q = r#"{app="b"}"#;
    let fwd = ("direction", "forward");
    let (s1, s2) = ((t + 1).to_string(), (t + 2).to_string());
    let v = query(&url, &[range_params(&s1, &s2, q), vec![fwd]].concat(), &[]).await;
    assert_eq!(lines(&v), ["t1"]);

    // Ten digits are seconds: start = t/1e9 + 1 s excludes everything;
    // read as nanoseconds it would include everything.
    let secs = (t / SEC + 1).to_string();
    assert_eq!(secs.len(), 10);
    let end = (t + 10 * SEC).to_string();
    let v = query(
        &url,
        &[range_params(&secs, &end, q), vec![fwd]].concat(),
        &[],
    )
    .await;
    assert!(lines(&v).is_empty(), "{v}");
    // Float seconds (ms precision) and RFC3339 also work.
    let float = format!("{}.500", t / SEC);
    let v = query(
        &url,
        &[range_params(&float, &end, q), vec![fwd]].concat(),
        &[],
    )
    .await;
    assert_eq!(lines(&v), ["half"]);
    let rfc = looker::timefmt::format_rfc3339_ns(t + 2);
    let v = query(
        &url,
        &[range_params(&rfc, &end, q), vec![fwd]].concat(),
        &[],
    )
    .await;
    assert_eq!(lines(&v), ["t2", "half"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameter_errors() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    let (st, en) = ((t - SEC).to_string(), (t + SEC).to_string());
    let base = range_params(&st, &en, r#"{app="x"}"#);
    let (s, b) = get(
        &url,
        "/loki/api/v1/query_range",
        &[base.clone(), vec![("limit", "5001")]].concat(),
        &[],
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        b.trim(),
        "max entries limit per query exceeded, limit > max_entries_limit (5001 > 5000)"
    );
    let (s, _) = get(
        &url,
        "/loki/api/v1/query_range",
        &[base.clone(), vec![("limit", "5000")]].concat(),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = get(
        &url,
        "/loki/api/v1/query_range",
        &range_params(&st, &en, r#"{app=~".*"}"#),
        &[],
    )
    .await;
    assert_eq!(s, 400, "empty-compatible matchers only");
    let (s, _) = get(
        &url,
        "/loki/api/v1/query_range",
        &range_params(&st, &en, r#"{app="x"} | json"#),
        &[],
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = get(
        &url,
        "/loki/api/v1/query",
        &[("query", r#"{app="x"}"#)],
        &[],
    )
    .await;
    assert_eq!(s, 400, "log queries are not instant queries");
    let (s, _) = get(
        &url,
        "/loki/api/v1/query_range",
        &range_params(&en, &st, r#"{app="x"}"#),
        &[],
    )
    .await;
    assert_eq!(s, 400, "end before start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directions_and_limit_across_streams() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    push_proto(
        &url,
        &[
            (
                r#"{app="m", n="1"}"#,
                vec![(t, "a0"), (t + 2, "a2"), (t + 4, "a4"), (t + 6, "a6")],
            ),
            (
                r#"{app="m", n="2"}"#,
                vec![(t + 1, "b1"), (t + 3, "b3"), (t + 5, "b5"), (t + 7, "b7")],
            ),
        ],
    )
    .await;
    let (st, en) = ((t - SEC).to_string(), (t + SEC).to_string());
    let q = r#"{app="m"}"#;
    let p = range_params(&st, &en, q);
    let ts_sorted = |v: &Value| {
        let mut f = flatten(v);
        f.sort_by_key(|x| x.1);
        f.into_iter().map(|x| x.2).collect::<Vec<_>>()
    };

    let v = query(
        &url,
        &[p.clone(), vec![("direction", "forward"), ("limit", "5")]].concat(),
        &[],
    )
    .await;
    assert_eq!(
        ts_sorted(&v),
        ["a0", "b1", "a2", "b3", "a4"],
        "limit counts all streams together"
    );
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2);
    for s in v["data"]["result"].as_array().unwrap() {
        let ts: Vec<i64> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[0].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "forward values ascend: {ts:?}"
        );
    }

    // Default direction is backward: the newest entries, descending.
    let v = query(&url, &[p.clone(), vec![("limit", "3")]].concat(), &[]).await;
    assert_eq!(
        ts_sorted(&v),
        ["b5", "a6", "b7"],
        "backward picks the newest entries"
    );
    for s in v["data"]["result"].as_array().unwrap() {
        let ts: Vec<i64> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[0].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(
            ts.windows(2).all(|w| w[0] > w[1]),
            "backward values descend: {ts:?}"
        );
    }
    let v = query(
        &url,
        &[p.clone(), vec![("direction", "backward"), ("limit", "100")]].concat(),
        &[],
    )
    .await;
    assert_eq!(flatten(&v).len(), 8);
}

/// logcli's forward paging: next start = last ts, skip what was seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_by_last_timestamp_with_shared_timestamps() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    let mut want = BTreeSet::new();
    let mut entries = Vec::new();
    for i in 0..60i64 {
        // Groups of 7 entries share one timestamp, so page boundaries fall
        // inside groups.
        let ts = t + i / 7;
        let line = format!("line {i:03}");
        want.insert((ts, line.clone()));
        entries.push((ts, line));
    }
    let e: Vec<(i64, &str)> = entries.iter().map(|(t, l)| (*t, l.as_str())).collect();
    push_proto(&url, &[(r#"{app="pg"}"#, e)]).await;

    let end = (t + SEC).to_string();
    let mut start = (t - SEC).to_string();
    let mut seen = BTreeSet::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 50, "paging does not progress");
        let v = query(
            &url,
            &[
                range_params(&start, &end, r#"{app="pg"}"#),
                vec![("direction", "forward"), ("limit", "10")],
            ]
            .concat(),
            &[],
        )
        .await;
        let page = flatten(&v);
        let n = page.len();
        let before = seen.len();
        for (_, ts, line) in &page {
            seen.insert((*ts, line.clone()));
        }
        if n < 10 {
            break;
        }
        assert!(seen.len() > before);
        start = page.iter().map(|x| x.1).max().unwrap().to_string();
    }
    assert_eq!(seen, want);
    assert!(pages > 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_metadata_merged_or_categorized() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    push_proto(
        &url,
        &[(
            r#"{app="c"}"#,
            vec![
                (t, "all good"),
                (t + 1, "an error happened"),
                (t + 2, "fine"),
            ],
        )],
    )
    .await;
    let (st, en) = ((t - SEC).to_string(), (t + SEC).to_string());
    let p = [
        range_params(&st, &en, r#"{app="c"}"#),
        vec![("direction", "forward")],
    ]
    .concat();

    let v = query(&url, &p, &[]).await;
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(
        result.len(),
        2,
        "one pushed stream comes back split by detected_level: {v}"
    );
    let levels: BTreeSet<&str> = result
        .iter()
        .map(|s| s["stream"]["detected_level"].as_str().unwrap())
        .collect();
    assert_eq!(levels, BTreeSet::from(["error", "info"]));
    assert!(v["data"].get("encodingFlags").is_none());

    let v = query(
        &url,
        &p,
        &[("X-Loki-Response-Encoding-Flags", "categorize-labels")],
    )
    .await;
    assert_eq!(v["data"]["encodingFlags"], json!(["categorize-labels"]));
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1);
    assert_eq!(
        result[0]["stream"],
        json!({"app": "c", "service_name": "c"})
    );
    let values = result[0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 3);
    assert_eq!(values[1][0], (t + 1).to_string());
    assert_eq!(
        values[1][2],
        json!({"structuredMetadata": {"detected_level": "error"}})
    );
    assert_eq!(values[0][2]["structuredMetadata"]["detected_level"], "info");

    // Without detected_level and without metadata there is no third element.
    let srv2 = LokiServer::start(LokiConfig {
        detected_level: false,
        discover_service_name: false,
        ..LokiConfig::default()
    });
    push_proto(&srv2.url(), &[(r#"{app="c"}"#, vec![(t, "x")])]).await;
    let v = query(
        &srv2.url(),
        &p,
        &[("X-Loki-Response-Encoding-Flags", "categorize-labels")],
    )
    .await;
    assert_eq!(v["data"]["result"][0]["stream"], json!({"app": "c"}));
    assert_eq!(
        v["data"]["result"][0]["values"][0]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Pushed structured metadata survives both ways.
    let req = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{app="sm"}"#.into(),
            entries: vec![EntryAdapter {
                timestamp: Some(Timestamp::from_ns(t)),
                line: "with meta".into(),
                structured_metadata: vec![LabelPair {
                    name: "trace_id".into(),
                    value: "t1".into(),
                }],
            }],
            hash: 0,
        }],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let (s, _, _) = post(&url, &[("Content-Type", "application/x-protobuf")], body).await;
    assert_eq!(s, 204);
    let p = range_params(&st, &en, r#"{app="sm"}"#);
    let v = query(&url, &p, &[]).await;
    assert_eq!(v["data"]["result"][0]["stream"]["trace_id"], "t1");
    let v = query(
        &url,
        &p,
        &[("X-Loki-Response-Encoding-Flags", "categorize-labels")],
    )
    .await;
    assert_eq!(
        v["data"]["result"][0]["values"][0][2]["structuredMetadata"]["trace_id"],
        "t1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_and_misbehaviour_hooks() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    let pushed = lbl(&[("app", "h")]);
    push_proto(
        &url,
        &[(r#"{app="h"}"#, (0..10).map(|i| (t + i, "l")).collect())],
    )
    .await;
    assert_eq!(srv.entry_count(), 10);

    assert_eq!(srv.delete_range(&pushed, t + 2, t + 5), 3);
    assert_eq!(srv.entry_count(), 7);
    assert_eq!(srv.delete_range(&lbl(&[("app", "nope")]), t, t + 10), 0);

    assert!(srv.alter_line(&pushed, t + 6, "changed"));
    assert!(!srv.alter_line(&pushed, t + 3, "deleted before"));
    srv.insert(&pushed, t + 100, "intruder");
    assert_eq!(srv.entry_count(), 8);

    let (st, en) = ((t - SEC).to_string(), (t + SEC).to_string());
    let v = query(
        &url,
        &[
            range_params(&st, &en, r#"{app="h"}"#),
            vec![("direction", "forward")],
        ]
        .concat(),
        &[],
    )
    .await;
    let got: Vec<(i64, String)> = flatten(&v)
        .into_iter()
        .map(|(_, ts, l)| (ts - t, l))
        .collect();
    let want: Vec<(i64, String)> = [
        (0, "l"),
        (1, "l"),
        (5, "l"),
        (6, "changed"),
        (7, "l"),
        (8, "l"),
        (9, "l"),
        (100, "intruder"),
    ]
    .into_iter()
    .map(|(o, l)| (o, l.to_string()))
    .collect();
    assert_eq!(got, want);

    srv.set_fail_next(2, 503);
    let body = [(r#"{app="h"}"#, vec![(t + 200, "after failures")])];
    assert_eq!(push_proto(&url, &body).await.0, 503);
    assert_eq!(push_proto(&url, &body).await.0, 503);
    assert_eq!(srv.entry_count(), 8);
    assert_eq!(push_proto(&url, &body).await.0, 204);
    assert_eq!(srv.entry_count(), 9);
    assert_eq!(srv.push_requests(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auxiliary_endpoints() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    push_proto(
        &url,
        &[
            (
                r#"{app="aux", env="p"}"#,
                vec![(t, "x"), (t + 1, "y error")],
            ),
            (r#"{job="j"}"#, vec![(t, "z")]),
        ],
    )
    .await;
    assert_eq!(
        get(&url, "/ready", &[], &[]).await,
        (200, "ready\n".to_string())
    );
    let r = client().post(format!("{url}/flush")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);

    let (st, en) = ((t - SEC).to_string(), (t + SEC).to_string());
    let (s, b) = get(
        &url,
        "/loki/api/v1/labels",
        &[("start", &st), ("end", &en)],
        &[],
    )
    .await;
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["data"], json!(["app", "env", "job", "service_name"]));
    let (_, b) = get(
        &url,
        "/loki/api/v1/label/service_name/values",
        &[("start", &st), ("end", &en)],
        &[],
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["data"],
        json!(["aux", "j"])
    );
    let (_, b) = get(
        &url,
        "/loki/api/v1/series",
        &[("match[]", r#"{app="aux"}"#), ("start", &st), ("end", &en)],
        &[],
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["data"],
        json!([{"app": "aux", "env": "p", "service_name": "aux"}])
    );

    let time = (t + SEC).to_string();
    let (s, b) = get(
        &url,
        "/loki/api/v1/query",
        &[
            ("query", r#"sum(count_over_time({app="aux"}[1h]))"#),
            ("time", &time),
        ],
        &[],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(v["data"]["result"][0]["value"][1], "2");

    // Regex matchers and line filters.
    let v = query(
        &url,
        &range_params(&st, &en, r#"{app=~"a.x", env!="q"} |= "error""#),
        &[],
    )
    .await;
    assert_eq!(lines(&v), ["y error"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingester_errors_list_at_most_ten_entries() {
    let srv = LokiServer::start(LokiConfig::default());
    let url = srv.url();
    let t = base_ts();
    assert_eq!(
        push_proto(&url, &[(r#"{app="ten"}"#, vec![(t, "head")])])
            .await
            .0,
        204
    );
    let late: Vec<String> = (0..12).map(|i| format!("late {i}")).collect();
    let entries: Vec<(i64, &str)> = late
        .iter()
        .enumerate()
        .map(|(i, l)| (t - 2 * 3600 * SEC + i as i64, l.as_str()))
        .collect();
    let (s, b) = push_proto(&url, &[(r#"{app="ten"}"#, entries)]).await;
    assert_eq!(s, 400);
    assert_eq!(
        b.matches("ignored, reason: 'entry too far behind").count(),
        10,
        "{b}"
    );
    assert!(
        b.contains("user 'fake', total ignored: 12 out of 12 for stream: "),
        "{b}"
    );
    assert_eq!(srv.entry_count(), 1);
}

#[test]
fn start_on_a_busy_port_fails_and_drop_frees_the_port() {
    let srv = LokiServer::start(LokiConfig::default());
    let addr = srv.addr();
    assert!(LokiServer::start_on(addr, LokiConfig::default()).is_err());
    drop(srv);
    let again = LokiServer::start_on(addr, LokiConfig::default()).expect("port is free after drop");
    assert_eq!(again.url(), format!("http://{addr}"));
}
