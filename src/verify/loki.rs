//! Reading one Loki stream back with `query_range`, page by page.
//!
//! Each series is queried with its exact selector, forward, from its first
//! to its last manifest timestamp. `limit` counts entries of every stream in
//! the answer (a selector also matches streams with more labels), and many
//! entries may share a nanosecond, so paging resumes at the last timestamp
//! seen, inclusive, and skips the entries already passed on at exactly that
//! timestamp.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use anyhow::{anyhow, bail};
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::checksum;
use crate::labels::LabelSet;

use super::check::{Seen, SeriesPlan};
use super::Sink;

/// Loki's default `max_entries_limit_per_query`; a page is never grown
/// past it (or past the user's `--query-limit` if that is larger).
const SERVER_MAX_LIMIT: usize = 5000;

/// Longest time range of one query: Loki refuses ranges longer than its
/// `max_query_length` (721h by default), so longer series are read in parts.
const MAX_QUERY_SPAN_NS: i64 = 720 * 3600 * 1_000_000_000;

pub struct LokiReader {
    client: reqwest::Client,
    url: reqwest::Url,
    limit: usize,
}

impl LokiReader {
    pub fn new(client: reqwest::Client, base: &str, limit: usize) -> anyhow::Result<LokiReader> {
        if limit == 0 {
            bail!("--query-limit must be at least 1");
        }
        Ok(LokiReader {
            client,
            url: super::endpoint(base, "/loki/api/v1/query_range")?,
            limit,
        })
    }

    pub async fn read(&self, plan: &SeriesPlan, sink: &mut Sink<'_>) -> anyhow::Result<()> {
        let Some((first, last)) = plan.range() else {
            return Ok(());
        };
        let query = plan.labels.to_selector();
        let mut from = first;
        while from <= last {
            let to = last.min(from.saturating_add(MAX_QUERY_SPAN_NS - 1));
            self.read_span(&query, from, to, &plan.labels, sink).await?;
            if to == last {
                break;
            }
            from = to + 1;
        }
        Ok(())
    }

    /// Reads `[first, last]` (inclusive ns) page by page.
    async fn read_span(
        &self,
        query: &str,
        first: i64,
        last: i64,
        labels: &LabelSet,
        sink: &mut Sink<'_>,
    ) -> anyhow::Result<()> {
        let mut pager = Pager::new(first, last, self.limit, self.limit.max(SERVER_MAX_LIMIT));
        while let Some((start, limit)) = pager.next_request() {
            let (start_s, end_s, limit_s) = (ns19(start), ns19(pager.end_excl), limit.to_string());
            let body = super::send(
                || {
                    self.client
                        .get(self.url.clone())
                        .header("X-Loki-Response-Encoding-Flags", "categorize-labels")
                        .query(&[
                            ("query", query),
                            ("start", start_s.as_str()),
                            ("end", end_s.as_str()),
                            ("limit", limit_s.as_str()),
                            ("direction", "forward"),
                        ])
                },
                "loki query_range",
            )
            .await;
            let body = match body {
                // Loki fails a page over its 4MB gRPC cap (long lines): ask
                // for fewer entries at a time.
                Err(e) if e.to_string().contains("larger than max (") && pager.shrink() => continue,
                b => b?,
            };
            let page = parse_page(&body, labels)?;
            pager.accept(page, &mut |ts, hash| {
                sink(Seen {
                    ts,
                    hash,
                    hash12: hash,
                    value: None,
                })
            })?;
        }
        Ok(())
    }
}

/// Nanoseconds as at least 19 digits: Loki reads 10 digits or fewer as
/// seconds, so small timestamps must be padded.
pub fn ns19(ns: i64) -> String {
    if ns < 0 {
        format!("-{:019}", ns.unsigned_abs())
    } else {
        format!("{ns:019}")
    }
}

/// One answer of `query_range`, reduced to what paging and checking need.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    /// Entries of every stream, the ones `limit` counts.
    pub total: usize,
    pub min_ts: i64,
    pub max_ts: i64,
    /// Entries of the wanted stream, in time order: (ts, hash).
    pub entries: Vec<(i64, u64)>,
}

/// Labels Loki adds to a stream on its own, beside `service_name`:
/// automatic stream sharding (`shard_streams`, on by default in 3.x) splits
/// a stream pushed faster than its `desired_rate` into streams labelled
/// `__stream_shard__="N"`, and time sharding labels very old entries
/// `__time_shard__`. Each such stream holds part of the series' entries.
const LOKI_SHARD_LABELS: [&str; 2] = ["__stream_shard__", "__time_shard__"];

/// Whether a returned stream is (part of) the series: the same labels,
/// plus any Loki added itself (the `service_name` Loki 3 derives when the
/// series has none, and the shard labels).
pub fn stream_matches(stream: &BTreeMap<String, String>, labels: &LabelSet) -> bool {
    let mut matched = 0;
    for (k, v) in stream {
        match labels.get(k) {
            Some(want) if want == v => matched += 1,
            Some(_) => return false,
            None if LOKI_SHARD_LABELS.contains(&k.as_str()) => {}
            None if k == "service_name" => {
                if !could_be_discovered_service_name(labels, v) {
                    return false;
                }
            }
            None => return false,
        }
    }
    matched == labels.len()
}

/// Whether `value` can be the `service_name` Loki 3 derived for a stream
/// that had none (`discover_service_name`): Loki copies it from one of the
/// stream's labels (service, app, job, ... in an order that has grown
/// between versions) or writes `unknown_service`. Any other value means
/// another stream, one pushed with its own `service_name`.
pub(crate) fn could_be_discovered_service_name(labels: &LabelSet, value: &str) -> bool {
    value == "unknown_service" || labels.pairs().iter().any(|(_, v)| v == value)
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Stream>,
}

#[derive(Deserialize)]
struct Stream {
    stream: BTreeMap<String, String>,
    values: Vec<Value>,
}

/// `["<ns>", "<line>", {...}]`, kept as (ts, hash of the entry).
struct Value(i64, u64);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("[timestamp, line, ...]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let ts: Text<'de> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let line: Text<'de> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                // Structured metadata and parsed labels are not part of the
                // entry the pusher hashed.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                let ts: i64 =
                    ts.0.parse()
                        .map_err(|_| de::Error::custom(format!("invalid timestamp {:?}", ts.0)))?;
                Ok(Value(ts, checksum::log_entry(ts, line.0.as_bytes())))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A string that borrows from the input unless it had escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses a `query_range` answer for the series `labels`.
pub fn parse_page(body: &[u8], labels: &LabelSet) -> anyhow::Result<Page> {
    let resp: Response = serde_json::from_slice(body).map_err(|e| {
        anyhow!(
            "loki query_range: unreadable answer ({e}): {}",
            super::snippet(body)
        )
    })?;
    if resp.status != "success" {
        bail!(
            "loki query_range: status {:?}: {}",
            resp.status,
            resp.error.unwrap_or_default()
        );
    }
    let data = resp
        .data
        .ok_or_else(|| anyhow!("loki query_range: answer has no data"))?;
    if data.result_type != "streams" {
        bail!(
            "loki query_range: expected resultType \"streams\", got {:?}",
            data.result_type
        );
    }
    let mut page = Page {
        min_ts: i64::MAX,
        max_ts: i64::MIN,
        ..Page::default()
    };
    for s in data.result {
        page.total += s.values.len();
        for v in &s.values {
            page.min_ts = page.min_ts.min(v.0);
            page.max_ts = page.max_ts.max(v.0);
        }
        if stream_matches(&s.stream, labels) {
            page.entries.extend(s.values.iter().map(|v| (v.0, v.1)));
        }
    }
    // Two matching streams (with and without service_name) interleave.
    page.entries.sort_by_key(|e| e.0);
    Ok(page)
}

/// The paging state for one series over `[start, end_excl)`.
#[derive(Debug)]
pub struct Pager {
    start: i64,
    pub end_excl: i64,
    limit: usize,
    max_limit: usize,
    /// The timestamp the current page starts at, and the hashes of the
    /// wanted entries already passed on at it.
    seen_ts: Option<i64>,
    seen: Vec<u64>,
    done: bool,
    /// Pages were made smaller because the store refused one as too large.
    shrunk: bool,
}

impl Pager {
    /// Pages over `[first, last]` (inclusive), `limit` entries at a time.
    pub fn new(first: i64, last: i64, limit: usize, max_limit: usize) -> Pager {
        Pager {
            start: first,
            end_excl: last.saturating_add(1),
            limit: limit.max(1),
            max_limit: max_limit.max(limit),
            seen_ts: None,
            seen: Vec::new(),
            done: first > last,
            shrunk: false,
        }
    }

    /// The next query to send: (start, limit), or `None` when done.
    pub fn next_request(&self) -> Option<(i64, usize)> {
        (!self.done).then_some((self.start, self.limit))
    }

    /// Halves the page size (and the most it may grow to); false when it
    /// is already 1.
    pub fn shrink(&mut self) -> bool {
        if self.limit <= 1 {
            return false;
        }
        self.limit /= 2;
        self.max_limit = self.limit;
        self.shrunk = true;
        true
    }

    /// Takes the answer to the last request and passes on new entries.
    pub fn accept(&mut self, page: Page, emit: &mut dyn FnMut(i64, u64)) -> anyhow::Result<()> {
        let full = page.total >= self.limit;
        if full && page.max_ts <= self.start {
            // Every entry of a full page is at the start timestamp: paging by
            // timestamp cannot move on, and some entries at it may be unseen.
            if self.limit < self.max_limit {
                self.limit = (self.limit * 2).min(self.max_limit);
                return Ok(());
            }
            let how = if self.shrunk {
                "the store refuses larger answers (its gRPC message size limit, grpc_server_max_recv_msg_size/max_send_msg_size); raise it"
            } else {
                "raise --query-limit and the server's max_entries_limit_per_query"
            };
            bail!(
                "more than {} entries at timestamp {} ({}); cannot page past them: {how}",
                self.limit,
                self.start,
                crate::timefmt::format_rfc3339_ns(self.start)
            );
        }
        for &(ts, h) in &page.entries {
            if Some(ts) == self.seen_ts && self.seen.contains(&h) {
                continue;
            }
            emit(ts, h);
        }
        if !full || page.max_ts >= self.end_excl {
            self.done = true;
            return Ok(());
        }
        let next = page.max_ts;
        self.seen.clear();
        self.seen
            .extend(page.entries.iter().filter(|e| e.0 == next).map(|e| e.1));
        self.seen_ts = Some(next);
        self.start = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> LabelSet {
        LabelSet::new(vec![("app".into(), "x".into())]).unwrap()
    }

    /// A fake store: the wanted stream plus another stream the selector also
    /// matches. Answers like Loki: entries with ts in [start, end), forward,
    /// at most `limit` in total, cut in global time order.
    struct Fake {
        wanted: Vec<(i64, String)>,
        other: Vec<(i64, String)>,
        requests: usize,
    }

    impl Fake {
        fn answer(&mut self, start: i64, end: i64, limit: usize) -> Page {
            self.requests += 1;
            let mut all: Vec<(i64, bool, &str)> = self
                .wanted
                .iter()
                .map(|(t, l)| (*t, true, l.as_str()))
                .chain(self.other.iter().map(|(t, l)| (*t, false, l.as_str())))
                .filter(|e| e.0 >= start && e.0 < end)
                .collect();
            all.sort_by_key(|e| e.0);
            all.truncate(limit);
            let mut page = Page {
                total: all.len(),
                min_ts: all.iter().map(|e| e.0).min().unwrap_or(i64::MAX),
                max_ts: all.iter().map(|e| e.0).max().unwrap_or(i64::MIN),
                entries: Vec::new(),
            };
            page.entries = all
                .iter()
                .filter(|e| e.1)
                .map(|e| (e.0, checksum::log_entry(e.0, e.2.as_bytes())))
                .collect();
            page
        }
    }

    fn drain(
        fake: &mut Fake,
        first: i64,
        last: i64,
        limit: usize,
        max: usize,
    ) -> anyhow::Result<Vec<(i64, u64)>> {
        let mut pager = Pager::new(first, last, limit, max);
        let mut got = Vec::new();
        let mut guard = 0;
        while let Some((start, lim)) = pager.next_request() {
            guard += 1;
            assert!(guard < 1000, "pager does not terminate");
            let page = fake.answer(start, pager.end_excl, lim);
            pager.accept(page, &mut |t, h| got.push((t, h)))?;
        }
        Ok(got)
    }

    fn expect(entries: &[(i64, String)]) -> Vec<(i64, u64)> {
        let mut v: Vec<_> = entries
            .iter()
            .map(|(t, l)| (*t, checksum::log_entry(*t, l.as_bytes())))
            .collect();
        v.sort();
        v
    }

    fn sorted(mut v: Vec<(i64, u64)>) -> Vec<(i64, u64)> {
        v.sort();
        v
    }

    fn lines(ts: &[i64]) -> Vec<(i64, String)> {
        ts.iter()
            .enumerate()
            .map(|(i, t)| (*t, format!("line {i}")))
            .collect()
    }

    #[test]
    fn ties_at_a_page_boundary_are_neither_lost_nor_repeated() {
        // Three different lines at ts 13 straddle the 5-entry page edge.
        let wanted = lines(&[10, 11, 12, 13, 13, 13, 14, 15]);
        let mut fake = Fake {
            wanted: wanted.clone(),
            other: vec![],
            requests: 0,
        };
        let got = drain(&mut fake, 10, 15, 5, 5).unwrap();
        assert_eq!(got.len(), wanted.len(), "{got:?}");
        assert_eq!(sorted(got), expect(&wanted));
    }

    #[test]
    fn a_page_with_exactly_limit_entries_asks_again() {
        let wanted = lines(&[1, 2, 3, 4]);
        let mut fake = Fake {
            wanted: wanted.clone(),
            other: vec![],
            requests: 0,
        };
        let got = drain(&mut fake, 1, 4, 4, 4).unwrap();
        assert_eq!(sorted(got), expect(&wanted));
        // Full first page, then a second one from ts 4 holding only the seen entry.
        assert_eq!(fake.requests, 2);
    }

    #[test]
    fn entries_of_other_streams_count_towards_the_limit() {
        let wanted = lines(&[1, 5, 9]);
        let other = lines(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let mut fake = Fake {
            wanted: wanted.clone(),
            other,
            requests: 0,
        };
        let got = drain(&mut fake, 1, 9, 3, 3).unwrap();
        assert_eq!(sorted(got), expect(&wanted));
    }

    #[test]
    fn a_page_all_at_one_timestamp_grows_the_limit() {
        let wanted = lines(&[7, 7, 7, 7, 7, 7, 8]);
        let mut fake = Fake {
            wanted: wanted.clone(),
            other: vec![],
            requests: 0,
        };
        let got = drain(&mut fake, 7, 8, 2, 16).unwrap();
        assert_eq!(sorted(got), expect(&wanted));
    }

    #[test]
    fn a_page_stuck_at_one_timestamp_fails_clearly() {
        let wanted = lines(&[7, 7, 7, 7, 7]);
        let mut fake = Fake {
            wanted,
            other: vec![],
            requests: 0,
        };
        let err = drain(&mut fake, 7, 8, 2, 4).unwrap_err().to_string();
        assert!(err.contains("more than 4 entries at timestamp 7"), "{err}");
    }

    #[test]
    fn stuck_after_progress_also_grows() {
        // Page 1 ends inside a run of equal timestamps that fills page 2.
        let wanted = lines(&[1, 2, 3, 3, 3, 3, 3, 3, 4]);
        let mut fake = Fake {
            wanted: wanted.clone(),
            other: vec![],
            requests: 0,
        };
        let got = drain(&mut fake, 1, 4, 3, 12).unwrap();
        assert_eq!(sorted(got), expect(&wanted));
    }

    #[test]
    fn parses_categorized_answers_and_picks_the_stream() {
        let body = br#"{"status":"success","data":{"resultType":"streams","result":[
            {"stream":{"app":"x","env":"p"},"values":[["1000000000000000005","other"]]},
            {"stream":{"app":"x","service_name":"x"},"values":[
                ["1000000000000000001","a \"q\"",{"structuredMetadata":{"detected_level":"info"}}],
                ["1000000000000000003","b"]]}
        ]},"stats":{}}"#;
        let page = parse_page(body, &labels()).unwrap();
        assert_eq!(page.total, 3);
        assert_eq!(
            (page.min_ts, page.max_ts),
            (1000000000000000001, 1000000000000000005)
        );
        assert_eq!(
            page.entries,
            vec![
                (
                    1000000000000000001,
                    checksum::log_entry(1000000000000000001, b"a \"q\"")
                ),
                (
                    1000000000000000003,
                    checksum::log_entry(1000000000000000003, b"b")
                ),
            ]
        );
    }

    #[test]
    fn stream_matching_is_exact_except_what_loki_adds() {
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert!(stream_matches(&m(&[("app", "x")]), &labels()));
        assert!(stream_matches(
            &m(&[("app", "x"), ("service_name", "x")]),
            &labels()
        ));
        assert!(!stream_matches(
            &m(&[("app", "x"), ("env", "p")]),
            &labels()
        ));
        assert!(!stream_matches(&m(&[("app", "y")]), &labels()));
        let with_sn = LabelSet::new(vec![
            ("app".into(), "x".into()),
            ("service_name".into(), "s".into()),
        ])
        .unwrap();
        assert!(!stream_matches(
            &m(&[("app", "x"), ("service_name", "t")]),
            &with_sn
        ));
        // A sharded stream (Loki 3.x shards fast streams by default).
        for shard in [
            m(&[("app", "x"), ("__stream_shard__", "2")]),
            m(&[
                ("app", "x"),
                ("__stream_shard__", "0"),
                ("service_name", "x"),
            ]),
            m(&[("app", "x"), ("__time_shard__", "1700000000_1700003600")]),
        ] {
            assert!(stream_matches(&shard, &labels()), "{shard:?}");
        }
        assert!(!stream_matches(
            &m(&[("app", "y"), ("__stream_shard__", "2")]),
            &labels()
        ));
        assert!(!stream_matches(
            &m(&[("__stream_shard__", "2"), ("service_name", "x")]),
            &labels()
        ));
        assert!(!stream_matches(
            &m(&[("app", "x"), ("__stream_shard__", "1"), ("env", "p")]),
            &labels()
        ));
        let shard_label = LabelSet::new(vec![
            ("app".into(), "x".into()),
            ("__stream_shard__".into(), "1".into()),
        ])
        .unwrap();
        assert!(!stream_matches(
            &m(&[("app", "x"), ("__stream_shard__", "2")]),
            &shard_label
        ));
    }

    #[test]
    fn errors_and_bad_timestamps_are_reported() {
        let e = parse_page(br#"{"status":"error","error":"boom"}"#, &labels()).unwrap_err();
        assert!(e.to_string().contains("boom"), "{e}");
        let e = parse_page(
            br#"{"status":"success","data":{"resultType":"streams","result":[{"stream":{"app":"x"},"values":[["12.5","x"]]}]}}"#,
            &labels(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid timestamp"), "{e}");
    }

    #[test]
    fn timestamps_are_sent_as_19_digits() {
        assert_eq!(ns19(100), "0000000000000000100");
        assert_eq!(ns19(1_700_000_000_000_000_000), "1700000000000000000");
    }
}
