//! The test infrastructure itself: the real servers accept and return
//! remote-write data as the protocol notes say, and every proxy fault does
//! what the tests that rely on it assume.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use looker::proto::{LabelPair, Sample, TimeSeries, WriteRequest};
use prost::Message;

use crate::support::faultproxy::{Fault, FaultPlan, FaultProxy};
use crate::support::servers::{free_port, http_get, Prometheus, VictoriaMetrics};

// ---------------------------------------------------------------- helpers

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A snappy-compressed remote-write 1.0 body for one series.
fn write_body(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Vec<u8> {
    let mut labels: Vec<LabelPair> = labels
        .iter()
        .map(|(n, v)| LabelPair {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels,
            samples: samples
                .iter()
                .map(|&(timestamp, value)| Sample { value, timestamp })
                .collect(),
        }],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder().timeout(timeout).build().unwrap()
}

async fn remote_write(
    client: &reqwest::Client,
    base: &str,
    body: Vec<u8>,
) -> reqwest::Result<(u16, String)> {
    let resp = client
        .post(format!("{base}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("User-Agent", "looker-it/0")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// Raw samples of `selector` in the hour before `at_ms`, via an instant
/// range query, as exact (ms, value) pairs.
async fn prometheus_raw(
    client: &reqwest::Client,
    base: &str,
    selector: &str,
    at_ms: i64,
) -> Vec<(i64, f64)> {
    let text = client
        .get(format!("{base}/api/v1/query"))
        .query(&[
            ("query", format!("{selector}[1h]")),
            ("time", format!("{}.{:03}", at_ms / 1000, at_ms % 1000)),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resp: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(resp["status"], "success", "{resp}");
    let result = resp["data"]["result"].as_array().unwrap();
    assert!(result.len() <= 1, "more than one series: {resp}");
    let Some(series) = result.first() else {
        return Vec::new();
    };
    series["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            let ts = (pair[0].as_f64().unwrap() * 1000.0).round() as i64;
            let value: f64 = pair[1].as_str().unwrap().parse().unwrap();
            (ts, value)
        })
        .collect()
}

// ------------------------------------------------------------ real servers

#[tokio::test]
async fn prometheus_accepts_remote_write_and_returns_exact_samples() {
    let started = Instant::now();
    let prom = Prometheus::start();
    eprintln!("prometheus ready in {:?}", started.elapsed());
    let base = prom.url();
    let http = client(Duration::from_secs(10));

    let t = now_ms() - 60_000;
    let samples = [(t, 0.1), (t + 1_001, -42.0), (t + 30_017, 1e300)];
    let labels = [
        ("__name__", "looker_it_rw"),
        ("job", "infra"),
        ("case", "a"),
    ];
    let (status, body) = remote_write(&http, &base, write_body(&labels, &samples))
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");

    let got = prometheus_raw(&http, &base, r#"looker_it_rw{case="a"}"#, now_ms() + 1000).await;
    assert_eq!(got, samples, "{}", prom.log_tail());

    // The handle owns the process: once dropped, nothing listens there.
    drop(prom);
    assert!(http_get(&base, "/-/ready").is_err(), "prometheus still up");
}

/// The pusher treats 400 as permanent; Prometheus 2.42 must answer 400 (not
/// 500, which would be retried forever) for a sample older than the series'
/// last one sent in an earlier request.
#[tokio::test]
async fn prometheus_rejects_out_of_order_sample_with_400() {
    let prom = Prometheus::start();
    let http = client(Duration::from_secs(10));
    let labels = [("__name__", "looker_it_ooo"), ("job", "infra")];
    let t = now_ms() - 10_000;

    let (status, body) = remote_write(&http, &prom.url(), write_body(&labels, &[(t, 1.0)]))
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    let (status, body) = remote_write(&http, &prom.url(), write_body(&labels, &[(t - 1_000, 2.0)]))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("out of order"), "{body}");

    // The rejected sample is not stored.
    let got = prometheus_raw(&http, &prom.url(), "looker_it_ooo", now_ms() + 1000).await;
    assert_eq!(got, [(t, 1.0)]);
}

#[tokio::test]
async fn victoria_metrics_accepts_remote_write_and_exports_exact_samples() {
    let started = Instant::now();
    let vm = VictoriaMetrics::start();
    eprintln!("victoria-metrics ready in {:?}", started.elapsed());
    let base = vm.url();
    let http = client(Duration::from_secs(10));

    // Integer and short decimal values: VictoriaMetrics stores decimals with
    // about 12 significant digits.
    let t = now_ms() - 60_000;
    let samples = [(t, 0.5), (t + 1_001, -42.0), (t + 30_017, 123456789.0)];
    let labels = [("__name__", "looker_it_vm"), ("job", "infra")];
    let (status, body) = remote_write(&http, &base, write_body(&labels, &samples))
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    vm.force_flush();

    let text = http
        .get(format!("{base}/api/v1/export"))
        .query(&[
            ("match[]", "looker_it_vm{job=\"infra\"}".to_string()),
            ("start", (t / 1000 - 1).to_string()),
            ("end", (now_ms() / 1000 + 1).to_string()),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}\n{}", vm.log_tail());
    assert_eq!(lines[0]["metric"]["__name__"], "looker_it_vm");
    let ts: Vec<i64> = lines[0]["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let values: Vec<f64> = lines[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let got: Vec<(i64, f64)> = ts.into_iter().zip(values).collect();
    assert_eq!(got, samples);

    drop(vm);
    assert!(
        http_get(&base, "/health").is_err(),
        "victoria-metrics still up"
    );
}

#[test]
fn free_port_is_bindable() {
    let port = free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}

// ------------------------------------------------------------- fault proxy

/// What the fake upstream received.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

type SeenLog = Arc<Mutex<Vec<Seen>>>;

/// An upstream that records each request and answers 202 with the body
/// echoed and a marker header.
async fn echo_upstream() -> (String, SeenLog) {
    async fn handle(
        State(seen): State<SeenLog>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, [(&'static str, &'static str); 1], Bytes) {
        seen.lock().unwrap().push(Seen {
            method,
            uri,
            headers,
            body: body.clone(),
        });
        (StatusCode::ACCEPTED, [("x-upstream", "echo")], body)
    }
    let seen = SeenLog::default();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &'static str,
) -> reqwest::Result<reqwest::Response> {
    http.post(url).body(body).send().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_forwards_request_and_response_and_logs_them() {
    let (upstream, seen) = echo_upstream().await;
    let proxy = FaultProxy::start(&upstream, FaultPlan::always(Fault::Forward));
    let http = client(Duration::from_secs(10));

    let resp = http
        .post(format!("{}/loki/api/v1/push?x=1&y=%20", proxy.url()))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Scope-OrgID", "tenant-a")
        .body(vec![0u8, 1, 2, 255])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-upstream"], "echo");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &[0u8, 1, 2, 255]);

    // A second request on the same keep-alive connection.
    let resp = http
        .get(format!("{}/ready", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].uri.to_string(), "/loki/api/v1/push?x=1&y=%20");
    assert_eq!(seen[0].headers["x-scope-orgid"], "tenant-a");
    assert_eq!(seen[0].headers["content-encoding"], "snappy");
    assert_eq!(seen[0].body.as_ref(), &[0u8, 1, 2, 255]);
    assert_eq!(seen[1].method, Method::GET);

    let log = proxy.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].seq, 0);
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/loki/api/v1/push");
    assert_eq!(log[0].query.as_deref(), Some("x=1&y=%20"));
    assert_eq!(
        log[0].content_type.as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(log[0].content_encoding.as_deref(), Some("snappy"));
    assert_eq!(log[0].header("X-Scope-OrgID"), Some("tenant-a"));
    assert_eq!(log[0].body.as_ref(), &[0u8, 1, 2, 255]);
    assert_eq!(log[0].fault, Fault::Forward);
    assert_eq!(log[0].upstream_status, Some(202));
    assert!(log[0].forwarded());
    assert_eq!((log[1].seq, log[1].path.as_str()), (1, "/ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_accepts_chunked_request_bodies() {
    let (upstream, seen) = echo_upstream().await;
    let proxy = FaultProxy::start(&upstream, FaultPlan::always(Fault::Forward));
    let addr = proxy.url().trim_start_matches("http://").to_string();
    let response = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 202 "), "{response}");
    assert!(response.ends_with("\r\n\r\nhello world"), "{response}");
    assert_eq!(seen.lock().unwrap()[0].body.as_ref(), b"hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_fault_answers_without_forwarding() {
    let (upstream, seen) = echo_upstream().await;
    let proxy = FaultProxy::start(&upstream, FaultPlan::always(Fault::Status(503)));
    let http = client(Duration::from_secs(10));
    let resp = post(&http, &proxy.url(), "x").await.unwrap();
    assert_eq!(resp.status(), 503);
    // The connection stays usable after an injected status.
    let resp = post(&http, &proxy.url(), "y").await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(seen.lock().unwrap().is_empty());
    let log = proxy.log();
    assert_eq!(log.len(), 2);
    assert!(log
        .iter()
        .all(|e| e.fault == Fault::Status(503) && !e.forwarded()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_429_carries_retry_after_only_when_asked() {
    let (upstream, seen) = echo_upstream().await;
    let plan = FaultPlan::sequence(vec![
        Fault::TooManyRequests {
            retry_after: Some("7".into()),
        },
        Fault::TooManyRequests {
            retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
        },
        Fault::TooManyRequests { retry_after: None },
    ]);
    let proxy = FaultProxy::start(&upstream, plan);
    let http = client(Duration::from_secs(10));
    let mut retry_after = Vec::new();
    for _ in 0..3 {
        let resp = post(&http, &proxy.url(), "x").await.unwrap();
        assert_eq!(resp.status(), 429);
        retry_after.push(
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string()),
        );
    }
    assert_eq!(
        retry_after,
        [
            Some("7".to_string()),
            Some("Wed, 21 Oct 2015 07:28:00 GMT".to_string()),
            None
        ]
    );
    assert!(seen.lock().unwrap().is_empty());
    // The sequence is exhausted: forwarded from now on.
    assert_eq!(post(&http, &proxy.url(), "x").await.unwrap().status(), 202);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reset_before_forward_fails_the_client_and_forwards_nothing() {
    let (upstream, seen) = echo_upstream().await;
    let proxy = FaultProxy::start(&upstream, FaultPlan::always(Fault::ResetBeforeForward));
    let http = client(Duration::from_secs(10));
    let started = Instant::now();
    let err = post(&http, &proxy.url(), "x").await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(seen.lock().unwrap().is_empty());
    let log = proxy.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].fault, Fault::ResetBeforeForward);
    assert!(!log[0].forwarded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reset_after_forward_fails_the_client_but_upstream_got_it() {
    let (upstream, seen) = echo_upstream().await;
    let proxy = FaultProxy::start(&upstream, FaultPlan::always(Fault::ResetAfterForward));
    let http = client(Duration::from_secs(10));
    let err = post(&http, &proxy.url(), "payload").await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_ref(), b"payload");
    assert_eq!(proxy.log()[0].upstream_status, Some(202));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_delay_after_forward_outlasts_client_timeout_and_stops_on_drop() {
    let (upstream, seen) = echo_upstream().await;
    let plan = FaultPlan::always(Fault::DelayAfterForward(Duration::from_secs(30)));
    let proxy = FaultProxy::start(&upstream, plan);
    let http = client(Duration::from_millis(300));
    let err = post(&http, &proxy.url(), "x").await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // On a loaded machine the forward itself may outlast the client's
    // timeout; it still happens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.log().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(proxy.log()[0].upstream_status, Some(202));

    // A held answer must not keep the proxy alive.
    let url = proxy.url();
    let started = Instant::now();
    drop(proxy);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let again = client(Duration::from_secs(2));
    assert!(post(&again, &url, "x").await.unwrap_err().is_connect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_ack_without_forward_loses_data_silently() {
    let (upstream, seen) = echo_upstream().await;
    let proxy = FaultProxy::start(&upstream, FaultPlan::always(Fault::AckWithoutForward));
    let http = client(Duration::from_secs(10));
    let resp = post(&http, &proxy.url(), "x").await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(proxy.log()[0].body.as_ref(), b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_only_paths_leaves_other_requests_alone() {
    let (upstream, seen) = echo_upstream().await;
    let plan = FaultPlan::sequence(vec![Fault::Status(500), Fault::ResetBeforeForward])
        .only_paths("/api/v1/write");
    let proxy = FaultProxy::start(&upstream, plan);
    let http = client(Duration::from_secs(10));
    let url = |p: &str| format!("{}{p}", proxy.url());

    // Queries neither get faults nor use up the sequence.
    let q = http
        .get(url("/api/v1/query?query=up"))
        .send()
        .await
        .unwrap();
    assert_eq!(q.status(), 202);
    assert_eq!(
        post(&http, &url("/api/v1/write"), "1")
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        post(&http, &url("/api/v1/other"), "2")
            .await
            .unwrap()
            .status(),
        202
    );
    assert!(post(&http, &url("/api/v1/write"), "3").await.is_err());
    assert_eq!(
        post(&http, &url("/api/v1/write"), "4")
            .await
            .unwrap()
            .status(),
        202
    );

    let bodies: Vec<Bytes> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(bodies, ["", "2", "4"]);
    let faults: Vec<Fault> = proxy.log().into_iter().map(|e| e.fault).collect();
    assert_eq!(
        faults,
        [
            Fault::Forward,
            Fault::Status(500),
            Fault::Forward,
            Fault::ResetBeforeForward,
            Fault::Forward
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_random_plan_is_deterministic_per_seed() {
    let (upstream, _seen) = echo_upstream().await;
    let faults = || vec![(0.25, Fault::Status(500)), (0.25, Fault::AckWithoutForward)];
    let run = |seed: u64| {
        let upstream = upstream.clone();
        async move {
            let proxy = FaultProxy::start(&upstream, FaultPlan::random(seed, faults()));
            let http = client(Duration::from_secs(10));
            let mut statuses = Vec::new();
            for _ in 0..60 {
                statuses.push(
                    post(&http, &proxy.url(), "x")
                        .await
                        .unwrap()
                        .status()
                        .as_u16(),
                );
            }
            let logged: Vec<u16> = proxy
                .log()
                .iter()
                .map(|e| match e.fault {
                    Fault::Status(s) => s,
                    Fault::AckWithoutForward => 204,
                    _ => 202,
                })
                .collect();
            assert_eq!(statuses, logged);
            statuses
        }
    };
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    assert_ne!(a, run(8).await);
    for code in [500, 204, 202] {
        let n = a.iter().filter(|&&s| s == code).count();
        assert!((5..=45).contains(&n), "{code} x{n} in {a:?}");
    }
}

/// The ambiguous failure the pusher must handle: the store kept the data
/// although the client saw an error. Queries through the proxy pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_reset_after_forward_in_front_of_prometheus_keeps_the_data() {
    let prom = Prometheus::start();
    let proxy = FaultProxy::start(
        &prom.url(),
        FaultPlan::always(Fault::ResetAfterForward).only_paths("/api/v1/write"),
    );
    let http = client(Duration::from_secs(10));
    let t = now_ms() - 5_000;
    let body = write_body(&[("__name__", "looker_it_proxy")], &[(t, 3.0)]);
    assert!(remote_write(&http, &proxy.url(), body).await.is_err());
    let got = prometheus_raw(&http, &proxy.url(), "looker_it_proxy", now_ms() + 1000).await;
    assert_eq!(got, [(t, 3.0)]);
    let log = proxy.log();
    assert_eq!(log[0].upstream_status, Some(204));
    assert_eq!(log[0].content_encoding.as_deref(), Some("snappy"));
    assert_eq!(log[1].fault, Fault::Forward);
}
