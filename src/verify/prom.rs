//! Reading raw samples back from Prometheus: instant range-vector queries
//! on `/api/v1/query`, or remote read on `/api/v1/read`.
//!
//! A series is read in windows that tile its manifest range exactly, sized
//! from the manifest so no answer holds much more than [`WINDOW_SAMPLES`]
//! samples of the series.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use prost::Message as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::labels::LabelSet;
use crate::proto;

use super::check::{Seen, SeriesPlan};
use super::{BatchSink, Sink};

/// Target number of expected samples per read.
pub const WINDOW_SAMPLES: u64 = 10_000;

/// The NaN Prometheus writes to mark a series stale; not a sample.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Splits `[first of spans, last of spans]` into inclusive windows
/// `[a_k, b_k]` with `a_{k+1} = b_k + 1`, each holding at most about `max`
/// expected entries. `spans` are (first, last, count), sorted and disjoint;
/// a span with more than `max` entries is cut into equal time slices.
pub fn tile(spans: &[(i64, i64, u64)], max: u64) -> Vec<(i64, i64)> {
    let max = max.max(1);
    let (Some(first), Some(last)) = (spans.first(), spans.iter().map(|s| s.1).max()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut start = first.0;
    let mut acc = 0u64;
    for &(a, b, n) in spans {
        if n > max {
            if acc > 0 {
                out.push((start, a - 1));
                start = a;
            }
            let pieces = n.div_ceil(max) as i128;
            let len = (b - a) as i128 + 1;
            for i in 1..=pieces {
                let end = (a as i128 + len * i / pieces - 1) as i64;
                if end >= start {
                    out.push((start, end));
                    start = end + 1;
                }
            }
            acc = 0;
        } else if acc > 0 && acc + n > max {
            out.push((start, a - 1));
            start = a;
            acc = n;
        } else {
            acc += n;
        }
    }
    if start <= last {
        out.push((start, last));
    }
    out
}

/// Parses a Prometheus JSON timestamp (seconds, e.g. `1435781451.781`)
/// into exact milliseconds, from its text.
pub fn parse_ts_ms(text: &str) -> anyhow::Result<i64> {
    let bad = || anyhow!("invalid sample timestamp {text:?}");
    let t = text.trim();
    if t.contains(['e', 'E']) {
        // Not what Prometheus writes, but valid JSON: go through a double,
        // rounded to the millisecond.
        let secs: f64 = t.parse().map_err(|_| bad())?;
        let ms = (secs * 1000.0).round();
        if !ms.is_finite() || ms.abs() > 9.0e15 {
            return Err(bad());
        }
        return Ok(ms as i64);
    }
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    if t.ends_with('.') {
        return Err(bad());
    }
    // Digits past the millisecond must be zero: samples are whole ms.
    let (ms_digits, rest) = frac.split_at(frac.len().min(3));
    if rest.bytes().any(|b| b != b'0') {
        return Err(anyhow!(
            "sample timestamp {text:?} is not a whole millisecond"
        ));
    }
    let secs: i64 = int.parse().map_err(|_| bad())?;
    let mut ms: i64 = 0;
    for i in 0..3 {
        ms = ms * 10 + ms_digits.as_bytes().get(i).map_or(0, |b| (b - b'0') as i64);
    }
    let v = secs
        .checked_mul(1000)
        .and_then(|s| s.checked_add(ms))
        .ok_or_else(bad)?;
    Ok(if neg { -v } else { v })
}

/// Parses a sample value as Prometheus writes it (a string).
pub fn parse_value(text: &str) -> anyhow::Result<f64> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" | "Infinity" | "+Infinity" => Ok(f64::INFINITY),
        "-Inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
        t => t
            .parse::<f64>()
            .map_err(|_| anyhow!("invalid sample value {t:?}")),
    }
}

/// `T` in seconds with exactly three decimals, from integer milliseconds.
pub fn secs3(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let a = ms.unsigned_abs();
    format!("{sign}{}.{:03}", a / 1000, a % 1000)
}

fn labels_equal(map: &BTreeMap<String, String>, labels: &LabelSet) -> bool {
    map.len() == labels.len()
        && labels
            .pairs()
            .iter()
            .all(|(k, v)| map.get(k).is_some_and(|s| s == v))
}

#[derive(Deserialize)]
struct Response<'a> {
    status: String,
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(borrow)]
    result: Vec<Series<'a>>,
}

#[derive(Deserialize)]
struct Series<'a> {
    metric: BTreeMap<String, String>,
    #[serde(default, borrow)]
    values: Vec<(&'a RawValue, &'a str)>,
}

/// Parses an instant query answer with a matrix result; returns the samples
/// of the series with exactly `labels`, as (ms, value), in time order.
pub fn parse_matrix(body: &[u8], labels: &LabelSet) -> anyhow::Result<Vec<(i64, f64)>> {
    let mut v = parse_matrix_batch(body, &[labels])?;
    Ok(v.pop().unwrap_or_default())
}

/// Parses an instant query answer with a matrix result for several
/// series: per entry of `labels`, the samples of the series with exactly
/// those labels, in time order; other series are ignored.
pub fn parse_matrix_batch(
    body: &[u8],
    labels: &[&LabelSet],
) -> anyhow::Result<Vec<Vec<(i64, f64)>>> {
    let resp: Response<'_> = serde_json::from_slice(body).map_err(|e| {
        anyhow!(
            "prometheus query: unreadable answer ({e}): {}",
            super::snippet(body)
        )
    })?;
    if resp.status != "success" {
        bail!(
            "prometheus query: {} error: {}",
            resp.error_type.as_deref().unwrap_or("unknown"),
            resp.error.as_deref().unwrap_or("(no message)")
        );
    }
    let data = resp
        .data
        .ok_or_else(|| anyhow!("prometheus query: answer has no data"))?;
    if data.result_type != "matrix" {
        bail!(
            "prometheus query: expected resultType \"matrix\", got {:?}",
            data.result_type
        );
    }
    let mut out: Vec<Vec<(i64, f64)>> = vec![Vec::new(); labels.len()];
    for s in data.result {
        let Some(k) = labels.iter().position(|l| labels_equal(&s.metric, l)) else {
            continue;
        };
        for (ts, v) in s.values {
            out[k].push((parse_ts_ms(ts.get())?, parse_value(v)?));
        }
    }
    for o in &mut out {
        o.sort_by_key(|s| s.0);
    }
    Ok(out)
}

/// The one label in which every other series of `plans` differs from the
/// first, all other labels being equal; None if there is no such label.
pub fn varying_label(plans: &[Arc<SeriesPlan>]) -> Option<String> {
    let first = &plans.first()?.labels;
    let mut label: Option<&str> = None;
    for p in &plans[1..] {
        if p.labels.len() != first.len() {
            return None;
        }
        for ((k1, v1), (k2, v2)) in first.pairs().iter().zip(p.labels.pairs()) {
            if k1 != k2 {
                return None;
            }
            if v1 != v2 {
                match label {
                    None => label = Some(k1),
                    Some(l) if l == k1 => {}
                    Some(_) => return None,
                }
            }
        }
    }
    label.map(str::to_string)
}

fn emit(samples: &[(i64, f64)], a: i64, b: i64, sink: &mut Sink<'_>) {
    for &(ts, v) in samples {
        // Prometheus 2.x includes T-R, 3.x does not; the window is [a, b].
        if ts >= a && ts <= b {
            sink(Seen::sample(ts, v));
        }
    }
}

/// Reads with instant queries `{sel}[Rms]` at `time=b`.
pub struct QueryReader {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl QueryReader {
    pub fn new(client: reqwest::Client, base: &str) -> anyhow::Result<QueryReader> {
        Ok(QueryReader {
            client,
            url: super::endpoint(base, "/api/v1/query")?,
        })
    }

    pub async fn read(&self, plan: &SeriesPlan, sink: &mut Sink<'_>) -> anyhow::Result<()> {
        let sel = plan.labels.to_selector();
        for (a, b) in tile(&plan.spans(), WINDOW_SAMPLES) {
            let query = format!("{sel}[{}ms]", b - a + 1);
            let time = secs3(b);
            let body = super::send(
                || {
                    self.client
                        .get(self.url.clone())
                        .query(&[("query", query.as_str()), ("time", time.as_str())])
                },
                "prometheus query",
            )
            .await?;
            let samples = parse_matrix(&body, &plan.labels)?;
            emit(&samples, a, b, sink);
        }
        Ok(())
    }
}

impl QueryReader {
    /// Reads series that differ in one label only with one query per
    /// window, matching that label with a regular expression; others one
    /// by one.
    pub async fn read_batch(
        &self,
        plans: &[Arc<SeriesPlan>],
        sink: &mut BatchSink<'_>,
    ) -> anyhow::Result<()> {
        let label = match plans {
            [_, _, ..] => varying_label(plans),
            _ => None,
        };
        let Some(label) = label else {
            for (k, plan) in plans.iter().enumerate() {
                self.read(plan, &mut |e| sink(k, e)).await?;
            }
            return Ok(());
        };
        let values: Vec<&str> = plans.iter().filter_map(|p| p.labels.get(&label)).collect();
        let sel = plans[0].labels.to_selector_matching(&label, &values);
        let labels: Vec<&LabelSet> = plans.iter().map(|p| &p.labels).collect();
        for (a, b) in super::batch_windows(plans) {
            let query = format!("{sel}[{}ms]", b - a + 1);
            let time = secs3(b);
            let body = super::send(
                || {
                    // A form body: the selector can be long.
                    self.client
                        .post(self.url.clone())
                        .form(&[("query", query.as_str()), ("time", time.as_str())])
                },
                "prometheus query",
            )
            .await?;
            let per_series = parse_matrix_batch(&body, &labels)?;
            super::emit_batch(per_series, plans, (a, b), sink);
        }
        Ok(())
    }
}

/// Reads with Prometheus remote read (raw samples, protobuf).
pub struct RemoteReader {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl RemoteReader {
    pub fn new(client: reqwest::Client, base: &str) -> anyhow::Result<RemoteReader> {
        Ok(RemoteReader {
            client,
            url: super::endpoint(base, "/api/v1/read")?,
        })
    }

    /// Reads several series at once: one request per window holding a
    /// query per series (per-request overhead dominated reading many small
    /// series one by one).
    pub async fn read_batch(
        &self,
        plans: &[Arc<SeriesPlan>],
        sink: &mut BatchSink<'_>,
    ) -> anyhow::Result<()> {
        for (a, b) in super::batch_windows(plans) {
            // Each query asks only for its own series' part of the window,
            // so series far apart in time do not read each other's gaps.
            let mut queries: Vec<(usize, i64, i64)> = Vec::new();
            for (k, plan) in plans.iter().enumerate() {
                if let Some((first, last)) = plan.range() {
                    let (qa, qb) = (a.max(first), b.min(last));
                    if qa <= qb {
                        queries.push((k, qa, qb));
                    }
                }
            }
            if queries.is_empty() {
                continue;
            }
            let q: Vec<(&LabelSet, i64, i64)> = queries
                .iter()
                .map(|&(k, qa, qb)| (&plans[k].labels, qa, qb))
                .collect();
            let body = encode_read_request_batch(&q)?;
            let resp = super::send(
                || {
                    self.client
                        .post(self.url.clone())
                        .header("Content-Encoding", "snappy")
                        .header("Accept-Encoding", "snappy")
                        .header("Content-Type", "application/x-protobuf")
                        .header("X-Prometheus-Remote-Read-Version", "0.1.0")
                        .body(body.clone())
                },
                "prometheus remote read",
            )
            .await?;
            let labels: Vec<&LabelSet> = q.iter().map(|x| x.0).collect();
            let answers = decode_read_response_batch(&resp, &labels)?;
            // Each query asked for the window cut to its series' range,
            // which is what emit_batch cuts to.
            let mut per_series: Vec<Vec<(i64, f64)>> = vec![Vec::new(); plans.len()];
            for (&(k, _, _), samples) in queries.iter().zip(answers) {
                per_series[k] = samples;
            }
            super::emit_batch(per_series, plans, (a, b), sink);
        }
        Ok(())
    }
}

/// A snappy-compressed ReadRequest with one query per (labels, a, b), each
/// matching exactly those labels over `[a, b]` ms.
pub fn encode_read_request_batch(queries: &[(&LabelSet, i64, i64)]) -> anyhow::Result<Vec<u8>> {
    let req = proto::ReadRequest {
        queries: queries
            .iter()
            .map(|&(labels, a, b)| proto::Query {
                start_timestamp_ms: a,
                end_timestamp_ms: b,
                matchers: labels
                    .pairs()
                    .iter()
                    .map(|(k, v)| proto::LabelMatcher {
                        r#type: 0,
                        name: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            })
            .collect(),
        accepted_response_types: Vec::new(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .context("compressing the remote read request")
}

/// Decodes a remote read answer to a request with one query per entry of
/// `labels`: result i answers query i, and of it only the series with
/// exactly `labels[i]` counts (an exact matcher also matches series with
/// more labels; a store that appends external labels to every series
/// therefore matches nothing: its series are not the ones pushed). Several time series of that label set in one result are
/// joined. Stale markers are left out; samples in time order.
pub fn decode_read_response_batch(
    body: &[u8],
    labels: &[&LabelSet],
) -> anyhow::Result<Vec<Vec<(i64, f64)>>> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| {
            anyhow!(
                "prometheus remote read: answer is not snappy-compressed ({e}): {}",
                super::snippet(body)
            )
        })?;
    let resp = proto::ReadResponse::decode(raw.as_slice())
        .map_err(|e| anyhow!("prometheus remote read: undecodable answer: {e}"))?;
    if resp.results.len() != labels.len() {
        bail!(
            "prometheus remote read: {} results for {} queries",
            resp.results.len(),
            labels.len()
        );
    }
    let mut out: Vec<Vec<(i64, f64)>> = Vec::with_capacity(labels.len());
    // Pairs every returned series has beyond the labels asked for, while
    // no series matched exactly: what external labels look like.
    let mut extra_everywhere: Option<Vec<(String, String)>> = None;
    let mut any_exact = false;
    for (result, want) in resp.results.into_iter().zip(labels) {
        let mut samples = Vec::new();
        for ts in result.timeseries {
            // Only needed while no series has matched exactly.
            if !any_exact {
                let extra: Vec<(String, String)> = ts
                    .labels
                    .iter()
                    .filter(|l| want.get(&l.name) != Some(l.value.as_str()))
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                extra_everywhere = Some(match extra_everywhere.take() {
                    None => extra,
                    Some(mut common) => {
                        common.retain(|p| extra.contains(p));
                        common
                    }
                });
            }
            let mut pairs: Vec<(&str, &str)> = ts
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            pairs.sort();
            let same = pairs.len() == want.len()
                && pairs
                    .iter()
                    .zip(want.pairs())
                    .all(|(p, q)| p.0 == q.0 && p.1 == q.1);
            if same {
                any_exact = true;
                samples.extend(
                    ts.samples
                        .iter()
                        .filter(|s| s.value.to_bits() != STALE_NAN_BITS)
                        .map(|s| (s.timestamp, s.value)),
                );
            }
        }
        samples.sort_by_key(|s| s.0);
        out.push(samples);
    }
    if let (false, Some(common)) = (any_exact, extra_everywhere) {
        if !common.is_empty() {
            let mut common = common;
            common.sort();
            let shown: Vec<String> = common.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            // Reported as every series missing, this would be a false alarm.
            bail!(
                "prometheus remote read: every series came back with labels that were not pushed ({}), none with its own labels; Prometheus appends its external_labels to remote read answers. Verify with --read-api query",
                shown.join(", ")
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a remote read answer; returns the samples of the series with
    /// exactly `labels` (a store that appends external labels to every series
    /// therefore matches nothing: its series are not the ones pushed), stale
    /// markers left out, in time order.
    fn decode_read_response(body: &[u8], labels: &LabelSet) -> anyhow::Result<Vec<(i64, f64)>> {
        let mut v = decode_read_response_batch(body, &[labels])?;
        Ok(v.pop().unwrap_or_default())
    }

    /// A snappy-compressed ReadRequest for exactly `labels` over `[a, b]` ms.
    fn encode_read_request(labels: &LabelSet, a: i64, b: i64) -> anyhow::Result<Vec<u8>> {
        encode_read_request_batch(&[(labels, a, b)])
    }

    fn check_tiling(spans: &[(i64, i64, u64)], max: u64) -> Vec<(i64, i64)> {
        let w = tile(spans, max);
        assert_eq!(w.first().map(|w| w.0), spans.first().map(|s| s.0));
        assert_eq!(w.last().map(|w| w.1), spans.iter().map(|s| s.1).max());
        for x in &w {
            assert!(x.0 <= x.1, "empty window {x:?} in {w:?}");
        }
        for p in w.windows(2) {
            assert_eq!(p[1].0, p[0].1 + 1, "gap or overlap in {w:?}");
        }
        w
    }

    #[test]
    fn windows_tile_without_gaps_or_overlaps() {
        assert!(tile(&[], 10).is_empty());
        assert_eq!(check_tiling(&[(5, 5, 1)], 10), vec![(5, 5)]);
        // Small spans are packed together, gaps included.
        assert_eq!(
            check_tiling(&[(0, 9, 4), (20, 29, 4), (40, 49, 4)], 10),
            vec![(0, 39), (40, 49)]
        );
        // A big span is cut into equal slices.
        assert_eq!(
            check_tiling(&[(0, 99, 100)], 30),
            vec![(0, 24), (25, 49), (50, 74), (75, 99)]
        );
        // Mixed, with a big span after a small one.
        check_tiling(&[(0, 9, 5), (100, 1099, 1000), (2000, 2000, 1)], 300);
        // More pieces than milliseconds: no empty windows.
        check_tiling(&[(0, 2, 100)], 10);
    }

    #[test]
    fn windows_hold_at_most_max_expected_entries_when_evenly_spaced() {
        let spans: Vec<(i64, i64, u64)> =
            (0..50).map(|i| (i * 1000, i * 1000 + 999, 1000)).collect();
        let w = check_tiling(&spans, 2500);
        for (a, b) in w {
            let n: u64 = spans
                .iter()
                .map(|s| (s.1.min(b) - s.0.max(a) + 1).max(0) as u64)
                .sum();
            assert!(n <= 2500, "[{a},{b}] holds {n}");
        }
    }

    #[test]
    fn timestamps_parse_exactly() {
        assert_eq!(parse_ts_ms("1435781451.781").unwrap(), 1435781451781);
        assert_eq!(parse_ts_ms("1435781451").unwrap(), 1435781451000);
        assert_eq!(parse_ts_ms("1435781451.78").unwrap(), 1435781451780);
        assert_eq!(parse_ts_ms("1435781451.7").unwrap(), 1435781451700);
        assert_eq!(parse_ts_ms("0.001").unwrap(), 1);
        assert_eq!(parse_ts_ms("1.435781451781e9").unwrap(), 1435781451781);
        assert_eq!(parse_ts_ms("-1.5").unwrap(), -1500);
        // A double would print 1700000000.123 as ...122.99999; text does not.
        assert_eq!(parse_ts_ms("1700000000.123").unwrap(), 1700000000123);
        assert!(parse_ts_ms("1.0005").is_err());
        assert!(parse_ts_ms("1.").is_err());
        assert!(parse_ts_ms("\"1\"").is_err());
        assert!(parse_ts_ms("").is_err());
    }

    #[test]
    fn query_time_has_three_decimals() {
        assert_eq!(secs3(1435781451781), "1435781451.781");
        assert_eq!(secs3(5), "0.005");
        assert_eq!(secs3(1000), "1.000");
    }

    fn labels() -> LabelSet {
        LabelSet::new(vec![
            ("__name__".into(), "m".into()),
            ("a".into(), "1".into()),
        ])
        .unwrap()
    }

    #[test]
    fn matrix_keeps_only_the_exact_series() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"m","a":"1","b":"2"},"values":[[1.5,"9"]]},
            {"metric":{"__name__":"m","a":"1"},"values":[[1435781451.781,"1"],[1435781452,"NaN"],[1435781453,"-Inf"],[1435781454,"0.30000000000000004"]]}
        ]}}"#;
        let s = parse_matrix(body, &labels()).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0], (1435781451781, 1.0));
        assert!(s[1].1.is_nan());
        assert_eq!(s[2].1, f64::NEG_INFINITY);
        assert_eq!(s[3].1, 0.1 + 0.2);
    }

    #[test]
    fn error_answers_carry_the_reason() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        let e = parse_matrix(body, &labels()).unwrap_err().to_string();
        assert!(
            e.contains("bad_data") && e.contains("parse error at char 3"),
            "{e}"
        );
        let e = parse_matrix(b"<html>", &labels()).unwrap_err().to_string();
        assert!(e.contains("<html>"), "{e}");
    }

    #[test]
    fn remote_read_round_trip_filters_labels_and_stale_markers() {
        let req = encode_read_request(&labels(), 10, 20).unwrap();
        let dec = proto::ReadRequest::decode(
            snap::raw::Decoder::new()
                .decompress_vec(&req)
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        assert_eq!(dec.queries[0].start_timestamp_ms, 10);
        assert_eq!(dec.queries[0].end_timestamp_ms, 20);
        assert_eq!(dec.queries[0].matchers.len(), 2);

        let lp = |n: &str, v: &str| proto::LabelPair {
            name: n.into(),
            value: v.into(),
        };
        let resp = proto::ReadResponse {
            results: vec![proto::QueryResult {
                timeseries: vec![
                    proto::TimeSeries {
                        labels: vec![lp("a", "1"), lp("__name__", "m")],
                        samples: vec![
                            proto::Sample {
                                value: 2.0,
                                timestamp: 12,
                            },
                            proto::Sample {
                                value: f64::from_bits(STALE_NAN_BITS),
                                timestamp: 13,
                            },
                            proto::Sample {
                                value: 1.0,
                                timestamp: 11,
                            },
                        ],
                    },
                    proto::TimeSeries {
                        labels: vec![lp("__name__", "m"), lp("a", "1"), lp("replica", "x")],
                        samples: vec![proto::Sample {
                            value: 5.0,
                            timestamp: 12,
                        }],
                    },
                ],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&resp.encode_to_vec())
            .unwrap();
        let s = decode_read_response(&body, &labels()).unwrap();
        assert_eq!(s, vec![(11, 1.0), (12, 2.0)]);
    }

    /// A Prometheus with external labels appends them to every series of a
    /// remote read answer: that is an error naming them, not every series
    /// missing. A series with more labels next to the exact one is not.
    #[test]
    fn remote_read_answers_with_external_labels_are_an_error() {
        let a = labels();
        let lp = |n: &str, v: &str| proto::LabelPair {
            name: n.into(),
            value: v.into(),
        };
        let ts = |extra: &[(&str, &str)]| proto::TimeSeries {
            labels: a
                .pairs()
                .iter()
                .map(|(k, v)| lp(k, v))
                .chain(extra.iter().map(|(k, v)| lp(k, v)))
                .collect(),
            samples: vec![proto::Sample {
                value: 1.0,
                timestamp: 12,
            }],
        };
        let body = |series: Vec<proto::TimeSeries>| {
            let resp = proto::ReadResponse {
                results: vec![proto::QueryResult { timeseries: series }],
            };
            snap::raw::Encoder::new()
                .compress_vec(&resp.encode_to_vec())
                .unwrap()
        };
        let e = decode_read_response_batch(
            &body(vec![ts(&[("cluster", "eu"), ("replica", "1")])]),
            &[&a],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(r#"cluster="eu", replica="1""#) && e.contains("--read-api query"),
            "{e}"
        );
        let ok =
            decode_read_response_batch(&body(vec![ts(&[]), ts(&[("b", "2")])]), &[&a]).unwrap();
        assert_eq!(ok, vec![vec![(12, 1.0)]]);
        let empty = decode_read_response_batch(&body(vec![]), &[&a]).unwrap();
        assert_eq!(empty, vec![Vec::<(i64, f64)>::new()]);
    }

    /// A request with a query per series: result i answers query i, a
    /// series with more labels (matched by another query's exact matchers)
    /// is not taken for it, one series split over two time series in a
    /// result is joined, and a result count that does not match is an error.
    #[test]
    fn remote_read_batches_answer_query_by_query() {
        let a = labels();
        let b = LabelSet::new(vec![
            ("__name__".into(), "m".into()),
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
        ])
        .unwrap();
        let lp = |n: &str, v: &str| proto::LabelPair {
            name: n.into(),
            value: v.into(),
        };
        let ts = |l: &LabelSet, samples: &[(i64, f64)]| proto::TimeSeries {
            labels: l.pairs().iter().map(|(k, v)| lp(k, v)).collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| proto::Sample { value, timestamp })
                .collect(),
        };
        let req = encode_read_request_batch(&[(&a, 10, 20), (&b, 15, 30)]).unwrap();
        let dec = proto::ReadRequest::decode(
            snap::raw::Decoder::new()
                .decompress_vec(&req)
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        assert_eq!(dec.queries.len(), 2);
        assert_eq!(
            (
                dec.queries[1].start_timestamp_ms,
                dec.queries[1].end_timestamp_ms
            ),
            (15, 30)
        );
        let resp = proto::ReadResponse {
            results: vec![
                // {a} matches both series; b's samples belong to query 2.
                proto::QueryResult {
                    timeseries: vec![
                        ts(&a, &[(12, 1.0)]),
                        ts(&b, &[(16, 9.0)]),
                        ts(&a, &[(11, 0.5)]),
                    ],
                },
                proto::QueryResult {
                    timeseries: vec![ts(&b, &[(16, 9.0), (17, 9.5)])],
                },
            ],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&resp.encode_to_vec())
            .unwrap();
        let got = decode_read_response_batch(&body, &[&a, &b]).unwrap();
        assert_eq!(
            got,
            vec![vec![(11, 0.5), (12, 1.0)], vec![(16, 9.0), (17, 9.5)]]
        );
        assert!(decode_read_response_batch(&body, &[&a]).is_err());
    }
}
