//! Series lines: many samples of one metric series on one line, in
//! VictoriaMetrics' JSON line format, which its `/api/v1/export` writes and
//! its `/api/v1/import` reads:
//!
//! `{"metric":{"__name__":"m","k":"v"},"values":[1,2.5],"timestamps":[1700000000000,1700000001000]}`
//!
//! Two reasons to take them: data exported from a VictoriaMetrics replays
//! into any store as it was exported, and a sample record repeats its
//! labels on every line, so reading one line per sample is most of what the
//! pusher spends on metrics. Timestamps are Unix milliseconds.
//!
//! VictoriaMetrics writes NaN and the infinities as the bare tokens `NaN`,
//! `+Inf` and `-Inf`, which are not JSON; they are accepted here in its own
//! layout, as are the quoted forms of sample records.
//!
//! Stream lines are the same for logs, in the form of a Loki stream (what
//! its push API takes and `query_range` answers in `data.result`), so what
//! one Loki returns replays into another:
//!
//! `{"stream":{"app":"api"},"values":[["1700000000000000000","GET /a 200"],["1700000000000000001","GET /b 404"]]}`

use serde_json::value::RawValue;

use super::{
    json_number, parse_digits, parse_line_field, parse_ts, parse_value, Mode, RecordError, Wire,
};

/// The entries of a series or stream line, reused from line to line.
#[derive(Debug, Default)]
pub struct Buffers {
    pub samples: Vec<(i64, f64)>,
    pub entries: Entries,
}

/// Log entries of a stream line: timestamps, and the lines' decoded text
/// one after another.
#[derive(Debug, Default)]
pub struct Entries {
    ts: Vec<i64>,
    text: String,
    ends: Vec<usize>,
}

impl Entries {
    pub fn clear(&mut self) {
        self.ts.clear();
        self.text.clear();
        self.ends.clear();
    }

    pub fn push(&mut self, ts: i64, line: &str) {
        self.ts.push(ts);
        self.text.push_str(line);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Entry `i`: (ts in ns, line).
    pub fn get(&self, i: usize) -> (i64, &str) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (self.ts[i], &self.text[start..self.ends[i]])
    }
}

const VALUES: &[u8] = b"},\"values\":[";

/// Where the labels object opening at byte 10 (after `{"metric":` or
/// `{"stream":`) ends, when `"values"` follows it.
fn labels_end(b: &[u8]) -> Option<usize> {
    // As for sample records: without a backslash or a nested object in
    // the labels, the first `},"values":[` ends them.
    let close = memchr::memchr_iter(b'}', b).find(|&i| b[i..].starts_with(VALUES))?;
    if memchr::memchr2(b'\\', b'{', &b[11..close]).is_none() {
        return Some(close);
    }
    // A brace or an escape in a label value ("/users/{id}"): find the
    // object's end reading its strings. The general parser cannot stand
    // in for metrics, as it refuses VictoriaMetrics' bare NaN.
    let close = object_end(b, 10)?;
    b[close..].starts_with(VALUES).then_some(close)
}

/// Parses a stream line laid out exactly as Loki writes one (keys in
/// order, no whitespace), putting its entries in `out`; returns its labels
/// object, only delimited. None for anything else, including every
/// invalid line: the general parser then takes it or says what is wrong.
pub fn parse_canonical_stream<'a>(line: &'a str, out: &mut Entries) -> Option<&'a str> {
    let b = line.as_bytes();
    b.strip_prefix(b"{\"stream\":{")?;
    let close = labels_end(b)?;
    let labels_json = &line[10..close + 1];
    let mut i = close + VALUES.len();
    out.clear();
    loop {
        // ["<ns>","<line>"]
        let rest = b[i..].strip_prefix(b"[\"")?;
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        let ts = parse_digits(&rest[..digits])?;
        let rest = rest[digits..].strip_prefix(b"\",\"")?;
        let start = b.len() - rest.len();
        // The string ends at the first quote not escaped.
        let (mut j, mut escaped) = (start, false);
        let end = loop {
            let q = j + memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
            if b[q] == b'"' {
                break q;
            }
            escaped = true;
            j = q + 2;
        };
        if escaped {
            // Rare: decoded (and checked) by serde.
            let text: String = serde_json::from_str(&line[start - 1..=end]).ok()?;
            out.push(ts, &text);
        } else {
            // JSON strings hold no raw control characters.
            if b[start..end].iter().any(|&c| c < 0x20) {
                return None;
            }
            out.push(ts, &line[start..end]);
        }
        match b.get(end + 1..end + 3)? {
            b"]," => i = end + 3,
            b"]]" => return (&b[end + 3..] == b"}").then_some(labels_json),
            _ => return None,
        }
    }
}

/// Parses a series line laid out exactly as VictoriaMetrics writes it
/// (keys in order, no whitespace), putting its samples in `out`; returns
/// its labels object, only delimited (the caller validates it the first
/// time it sees those bytes). None for anything else, including every
/// invalid line: the general parser then takes it or says what is wrong.
pub fn parse_canonical<'a>(line: &'a str, out: &mut Vec<(i64, f64)>) -> Option<&'a str> {
    let b = line.as_bytes();
    b.strip_prefix(b"{\"metric\":{")?;
    let close = labels_end(b)?;
    let labels_json = &line[10..close + 1];
    let rest = &b[close + VALUES.len()..];
    let values_end = memchr::memchr(b']', rest)?;
    let stamps = rest[values_end..].strip_prefix(b"],\"timestamps\":[")?;
    let stamps = stamps.strip_suffix(b"]}")?;
    out.clear();
    for tok in rest[..values_end].split(|&c| c == b',') {
        out.push((0, token_value(tok)?));
    }
    let mut n = 0;
    for tok in stamps.split(|&c| c == b',') {
        // JSON numbers have no leading zeros.
        if !tok.iter().all(u8::is_ascii_digit) || (tok.len() > 1 && tok[0] == b'0') {
            return None;
        }
        out.get_mut(n)?.0 = parse_digits(tok)?;
        n += 1;
    }
    (n == out.len()).then_some(labels_json)
}

/// The index of the `}` closing the object that opens at `b[start]`,
/// reading strings and their escapes; None if it is not closed there.
fn object_end(b: &[u8], start: usize) -> Option<usize> {
    if b.get(start) != Some(&b'{') {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &c) in b.iter().enumerate().skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return (c == b'}').then_some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// One value of a series line: a JSON number, NaN or an infinity as a
/// bare token (VictoriaMetrics) or a string (sample records).
fn token_value(tok: &[u8]) -> Option<f64> {
    let bare = tok
        .strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
        .unwrap_or(tok);
    match bare {
        b"NaN" => Some(f64::NAN),
        b"+Inf" | b"Inf" => Some(f64::INFINITY),
        b"-Inf" => Some(f64::NEG_INFINITY),
        // Quoted numbers are rare: the general parser takes them.
        _ if bare.len() == tok.len() => json_number(tok),
        _ => None,
    }
}

/// A series line in any JSON layout (whitespace, keys in any order,
/// quoted or RFC3339 timestamps), or the reason it is not one.
pub(super) fn from_wire<'a>(
    w: Wire<'a>,
    out: &mut Vec<(i64, f64)>,
) -> Result<&'a str, RecordError> {
    if w.labels.is_some() || w.ts.is_some() || w.line.is_some() || w.value.is_some() {
        return Err(RecordError::Json(
            "a series line has \"metric\", \"values\" and \"timestamps\", and none of \"labels\", \"ts\", \"line\", \"value\"".into(),
        ));
    }
    let missing = |f: &str| RecordError::Shape(format!("no \"{f}\" in a series line"));
    let labels = w.metric.ok_or_else(|| missing("metric"))?.get();
    if !labels.starts_with('{') {
        return Err(RecordError::Labels(crate::labels::LabelError::Malformed(
            "\"metric\" must be an object of strings".into(),
        )));
    }
    let array = |raw: Option<&'a RawValue>, f: &str| -> Result<Vec<&'a RawValue>, RecordError> {
        serde_json::from_str(raw.ok_or_else(|| missing(f))?.get())
            .map_err(|_| RecordError::Json(format!("\"{f}\" must be an array")))
    };
    let values = array(w.values, "values")?;
    let stamps = array(w.timestamps, "timestamps")?;
    if values.len() != stamps.len() {
        return Err(RecordError::Json(format!(
            "{} values but {} timestamps",
            values.len(),
            stamps.len()
        )));
    }
    if values.is_empty() {
        return Err(RecordError::Json("no samples".into()));
    }
    out.clear();
    for (i, (v, t)) in values.iter().zip(&stamps).enumerate() {
        let at = |e: RecordError| RecordError::Json(format!("sample {}: {e}", i + 1));
        let value = parse_value(v.get()).map_err(at)?;
        let ts = parse_ts(t.get(), Mode::Metrics).map_err(at)?;
        out.push((ts, value));
    }
    Ok(labels)
}

/// A stream line in any JSON layout, or the reason it is not one.
pub(super) fn stream_from_wire<'a>(w: Wire<'a>, out: &mut Entries) -> Result<&'a str, RecordError> {
    if w.labels.is_some()
        || w.ts.is_some()
        || w.line.is_some()
        || w.value.is_some()
        || w.metric.is_some()
        || w.timestamps.is_some()
    {
        return Err(RecordError::Json(
            "a stream line has \"stream\" and \"values\" only".into(),
        ));
    }
    let labels = w.stream.map(RawValue::get).unwrap_or_default();
    if !labels.starts_with('{') {
        return Err(RecordError::Labels(crate::labels::LabelError::Malformed(
            "\"stream\" must be an object of strings".into(),
        )));
    }
    let values = w
        .values
        .ok_or_else(|| RecordError::Shape("no \"values\" in a stream line".into()))?;
    let entries: Vec<Vec<&RawValue>> = serde_json::from_str(values.get())
        .map_err(|_| RecordError::Json("\"values\" must be an array of [ts, line] pairs".into()))?;
    if entries.is_empty() {
        return Err(RecordError::Json("no entries".into()));
    }
    out.clear();
    for (i, e) in entries.iter().enumerate() {
        let at = |why: String| RecordError::Json(format!("entry {}: {why}", i + 1));
        match e.len() {
            2 => {}
            3 => loki_derived_metadata_only(e[2].get()).map_err(at)?,
            n => return Err(at(format!("expected [ts, line], got {n} elements"))),
        }
        let ts = parse_ts(e[0].get(), Mode::Logs).map_err(|e| at(e.to_string()))?;
        let text = parse_line_field(e[1].get()).map_err(|e| at(e.to_string()))?;
        out.push(ts, &text);
    }
    Ok(labels)
}

/// Checks an entry's third element, its structured metadata: flat, as
/// pushed, or `{"structuredMetadata":{..},"parsed":{..}}` as Loki answers
/// a query sent with `X-Loki-Response-Encoding-Flags: categorize-labels`.
/// The pusher does not push structured metadata, so only what Loki derives
/// again on ingest (`detected_level`) may be left out; labels parsed at
/// query time are not stored data. Anything else is refused rather than
/// dropped unseen.
fn loki_derived_metadata_only(raw: &str) -> Result<(), String> {
    type Map = std::collections::BTreeMap<String, serde_json::Value>;
    let obj: Map = serde_json::from_str(raw)
        .map_err(|_| "the third element (structured metadata) must be an object".to_string())?;
    let categorized = !obj.is_empty()
        && obj
            .iter()
            .all(|(k, v)| (k == "structuredMetadata" || k == "parsed") && v.is_object());
    let metadata: Vec<&String> = if categorized {
        obj.get("structuredMetadata")
            .and_then(|m| m.as_object())
            .map(|m| m.keys().collect())
            .unwrap_or_default()
    } else {
        obj.keys().collect()
    };
    let kept: Vec<&str> = metadata
        .into_iter()
        .map(String::as_str)
        .filter(|k| *k != "detected_level")
        .collect();
    if kept.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "structured metadata ({}) cannot be pushed by looker-push",
            kept.join(", ")
        ))
    }
}

/// Appends one series line (with its newline) as VictoriaMetrics writes
/// it: finite values in their shortest round-trip form, NaN and the
/// infinities as bare tokens, which its import takes and JSON does not.
pub fn write_series_line(buf: &mut Vec<u8>, labels_json: &[u8], samples: &[(i64, f64)]) {
    buf.extend_from_slice(b"{\"metric\":");
    buf.extend_from_slice(labels_json);
    buf.extend_from_slice(b",\"values\":[");
    for (i, &(_, v)) in samples.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        if v.is_nan() {
            buf.extend_from_slice(b"NaN");
        } else if v.is_infinite() {
            buf.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
        } else {
            super::write_json_value(buf, v);
        }
    }
    buf.extend_from_slice(b"],\"timestamps\":[");
    let mut itoa = itoa::Buffer::new();
    for (i, &(ts, _)) in samples.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(itoa.format(ts).as_bytes());
    }
    buf.extend_from_slice(b"]}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{parse_any, Line};

    fn series(line: &str) -> Result<(String, Vec<(i64, f64)>), RecordError> {
        let mut buf = Buffers::default();
        buf.samples.push((9, 9.0));
        match parse_any(line, &mut buf)? {
            Line::Series { labels_json } => Ok((labels_json.to_string(), buf.samples)),
            other => panic!("not read as a series line: {other:?}"),
        }
    }

    fn stream(line: &str) -> Result<(String, Vec<(i64, String)>), RecordError> {
        let mut buf = Buffers::default();
        buf.entries.push(9, "stale");
        match parse_any(line, &mut buf)? {
            Line::Stream { labels_json } => Ok((
                labels_json.to_string(),
                (0..buf.entries.len())
                    .map(|i| {
                        let (t, l) = buf.entries.get(i);
                        (t, l.to_string())
                    })
                    .collect(),
            )),
            other => panic!("not read as a stream line: {other:?}"),
        }
    }

    fn bits(v: &[(i64, f64)]) -> Vec<(i64, u64)> {
        v.iter().map(|&(t, x)| (t, x.to_bits())).collect()
    }

    #[test]
    fn reads_victoriametrics_export_lines() {
        // As VictoriaMetrics 1.79 exported them, infinities included.
        let (labels, s) = series(r#"{"metric":{"__name__":"n","a":"b"},"values":[+Inf,-Inf,1.5,NaN,0,-2e-7],"timestamps":[1795578837000,1795578838000,1795578839000,1795578840000,1795578841000,1795578842000]}"#).unwrap();
        assert_eq!(labels, r#"{"__name__":"n","a":"b"}"#);
        assert_eq!(s.len(), 6);
        assert_eq!(s[0], (1795578837000, f64::INFINITY));
        assert_eq!(s[1].1, f64::NEG_INFINITY);
        assert_eq!(s[2].1, 1.5);
        assert!(s[3].1.is_nan());
        assert_eq!(s[5], (1795578842000, -2e-7));
    }

    /// Label values with braces and escapes, next to VictoriaMetrics' bare
    /// NaN (which only the fast path reads), are read exactly.
    #[test]
    fn reads_export_lines_with_braces_and_escapes_in_labels() {
        for (labels, want) in [
            (r#"{"__name__":"m","uri":"/users/{id}"}"#, "/users/{id}"),
            (
                r#"{"__name__":"m","uri":"a\"},\"values\":[1]"}"#,
                "a\"},\"values\":[1]",
            ),
            (r#"{"__name__":"m","uri":"back\\"}"#, "back\\"),
            (r#"{"__name__":"m","uri":"}{"}"#, "}{"),
        ] {
            let line =
                format!(r#"{{"metric":{labels},"values":[NaN,2],"timestamps":[1000,2000]}}"#);
            let (l, s) = series(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(l, labels);
            let set = crate::record::parse_labels(&l, Mode::Metrics).unwrap();
            assert_eq!(set.get("uri"), Some(want), "{line}");
            assert!(s[0].1.is_nan() && s[1] == (2000, 2.0), "{line}");
        }
        // Not an object of strings: refused when the labels are checked.
        let line = r#"{"metric":{"__name__":"m","x":{"y":"z"}},"values":[NaN],"timestamps":[1]}"#;
        let (l, _) = series(line).unwrap();
        assert!(crate::record::parse_labels(&l, Mode::Metrics).is_err());
        // An object that does not close where "values" starts: refused.
        for bad in [
            r#"{"metric":{"__name__":"m","u":"{"},"x":{},"values":[NaN],"timestamps":[1]}"#,
            r#"{"metric":{"__name__":"m","u":"\"},"values":[NaN],"timestamps":[1]}"#,
        ] {
            assert!(series(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_loki_stream_lines() {
        let (labels, e) = stream(
            r#"{"stream":{"app":"api","uri":"/u/{id}"},"values":[["1700000000000000000","GET /a 200"],["1700000000000000001",""],["1700000000000000002","{\"k\":\"v\\n\"} \u00e9 \t"],["1700000000000000003","plain é"]]}"#,
        )
        .unwrap();
        assert_eq!(labels, r#"{"app":"api","uri":"/u/{id}"}"#);
        assert_eq!(
            e,
            [
                (1_700_000_000_000_000_000, "GET /a 200".to_string()),
                (1_700_000_000_000_000_001, String::new()),
                (
                    1_700_000_000_000_000_002,
                    "{\"k\":\"v\\n\"} é \t".to_string()
                ),
                (1_700_000_000_000_000_003, "plain é".to_string()),
            ]
        );
        // The same in other layouts: spaces, keys swapped, RFC3339 and
        // integer timestamps.
        for other in [
            r#"{ "stream": {"uri":"/u/{id}", "app":"api"}, "values": [ ["1700000000000000000", "GET /a 200"], [1700000000000000001, ""], ["2023-11-14T22:13:20.000000002Z", "{\"k\":\"v\\n\"} \u00e9 \t"], ["1700000000000000003","plain é"] ] }"#,
            r#"{"values":[["1700000000000000000","GET /a 200"],["1700000000000000001",""],["1700000000000000002","{\"k\":\"v\\n\"} é \t"],["1700000000000000003","plain é"]],"stream":{"app":"api","uri":"/u/{id}"}}"#,
        ] {
            let (_, got) = stream(other).unwrap_or_else(|err| panic!("{other}: {err}"));
            assert_eq!(got, e, "{other}");
        }
    }

    /// What Loki derives on ingest or at query time is not stored data of
    /// the entry: a query answer with it replays as the entries alone.
    #[test]
    fn loki_derived_metadata_is_left_out() {
        let want = stream(r#"{"stream":{"a":"b"},"values":[["1","x"],["2","y"]]}"#).unwrap();
        for line in [
            r#"{"stream":{"a":"b"},"values":[["1","x",{"structuredMetadata":{"detected_level":"info"},"parsed":{"k":"v"}}],["2","y",{}]]}"#,
            r#"{"stream":{"a":"b"},"values":[["1","x",{"detected_level":"warn"}],["2","y",{"parsed":{}}]]}"#,
        ] {
            assert_eq!(stream(line).unwrap(), want, "{line}");
        }
    }

    #[test]
    fn refuses_bad_stream_lines_with_reasons() {
        let cases = [
            (r#"{"stream":{"a":"b"},"values":[]}"#, "no entries"),
            (
                r#"{"stream":{"a":"b"},"values":[["1","x",{"trace":"t"}]]}"#,
                "entry 1: structured metadata (trace) cannot be pushed",
            ),
            (
                r#"{"stream":{"a":"b"},"values":[["1","x",{"structuredMetadata":{"detected_level":"info","trace":"t"}}]]}"#,
                "entry 1: structured metadata (trace)",
            ),
            (
                r#"{"stream":{"a":"b"},"values":[["1","x",[1]]]}"#,
                "entry 1: the third element (structured metadata) must be an object",
            ),
            (
                r#"{"stream":{"a":"b"},"values":[["1","x"],["2"]]}"#,
                "entry 2: expected [ts, line]",
            ),
            (
                r#"{"stream":{"a":"b"},"values":[["1","x"],["-2","y"]]}"#,
                "entry 2: invalid ts",
            ),
            (
                r#"{"stream":{"a":"b"},"values":[["1",5]]}"#,
                "entry 1: invalid JSON: \"line\" must be a string",
            ),
            (
                r#"{"stream":{"a":"b"},"values":"x"}"#,
                "must be an array of [ts, line] pairs",
            ),
            (r#"{"stream":{"a":"b"}}"#, "no \"values\""),
            (
                r#"{"stream":["a"],"values":[["1","x"]]}"#,
                "must be an object",
            ),
            (
                r#"{"stream":{"a":"b"},"values":[["1","x"]],"ts":"1"}"#,
                "\"stream\" and \"values\" only",
            ),
        ];
        for (line, want) in cases {
            let err = stream(line)
                .err()
                .unwrap_or_else(|| panic!("accepted {line}"));
            assert!(err.to_string().contains(want), "{line}: {err}");
        }
    }

    /// The stream fast path agrees with the general parser on every line
    /// it takes, and leaves every line it does not recognise to it.
    #[test]
    fn stream_fast_path_agrees_with_the_general_parser() {
        let lines = [
            r#"{"stream":{"app":"api"},"values":[["1700000000000000000","GET /a 200"],["1700000000000000001","x"]]}"#,
            r#"{"stream":{"uri":"/u/{id}","q":"say \"hi\""},"values":[["17","a \"b\" \\ c"]]}"#,
            r#"{"stream":{"app":"x"},"values":[["1",""],["2","{\"json\":[1,2]}"],["3","é ü 日本"]]}"#,
        ];
        let general = |line: &str| -> Result<(String, Vec<(i64, String)>), RecordError> {
            let w: crate::record::Wire<'_> = serde_json::from_str(line)
                .map_err(|e| RecordError::Json(crate::record::serde_reason(&e)))?;
            let mut out = Entries::default();
            let labels = stream_from_wire(w, &mut out)?;
            let e = (0..out.len()).map(|i| (out.get(i).0, out.get(i).1.to_string()));
            Ok((labels.to_string(), e.collect()))
        };
        let check = |line: &str| {
            let mut out = Entries::default();
            let Some(labels) = parse_canonical_stream(line, &mut out) else {
                return;
            };
            match general(line) {
                Ok((l, e)) => {
                    assert_eq!(l, labels, "{line}");
                    let fast: Vec<(i64, String)> = (0..out.len())
                        .map(|i| (out.get(i).0, out.get(i).1.to_string()))
                        .collect();
                    assert_eq!(e, fast, "{line}");
                }
                Err(e) => assert!(
                    crate::record::parse_labels(labels, Mode::Logs).is_err(),
                    "fast path took a line the parser refuses ({e}): {line}"
                ),
            }
        };
        let mut rng = crate::gen::rng::Rng::new(13, 0, 0);
        for l in lines {
            let mut taken = Entries::default();
            assert!(parse_canonical_stream(l, &mut taken).is_some(), "{l}");
            check(l);
            for t in crate::record::tests::corruptions(l, &mut rng, b"\"{}[]:,\\ 0u-") {
                check(&t);
            }
        }
    }

    #[test]
    fn other_layouts_read_the_same() {
        let canonical =
            r#"{"metric":{"__name__":"m"},"values":[1,"NaN",2.5],"timestamps":[1000,2000,3000]}"#;
        let (l0, s0) = series(canonical).unwrap();
        for other in [
            r#"{ "metric": {"__name__":"m"}, "values": [1, "NaN", 2.5], "timestamps": [1000, 2000, 3000] }"#,
            r#"{"timestamps":[1000,"2000","1970-01-01T00:00:03Z"],"values":["1","NaN",2.5],"metric":{"__name__":"m"}}"#,
        ] {
            let (l, s) = series(other).unwrap();
            assert_eq!(
                crate::record::parse_labels(&l, Mode::Metrics).unwrap(),
                crate::record::parse_labels(&l0, Mode::Metrics).unwrap()
            );
            assert_eq!(bits(&s), bits(&s0), "{other}");
        }
    }

    #[test]
    fn written_lines_read_back_exactly() {
        let samples = [
            (1, 0.1),
            (2, -3.0),
            (3, 1e300),
            (4, f64::NAN),
            (5, f64::INFINITY),
            (6, f64::NEG_INFINITY),
            (7, -0.0),
            (1_700_000_000_000, 12.345),
        ];
        let mut buf = Vec::new();
        write_series_line(&mut buf, br#"{"__name__":"m","k":"v"}"#, &samples);
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(text.ends_with("]}\n"), "{text}");
        let mut out = Vec::new();
        // The layout VictoriaMetrics writes: the fast path takes it.
        let labels = parse_canonical(text.trim_end(), &mut out).expect("fast path");
        assert_eq!(labels, r#"{"__name__":"m","k":"v"}"#);
        assert_eq!(bits(&out), bits(&samples));
    }

    #[test]
    fn refuses_bad_series_lines_with_reasons() {
        let cases = [
            (
                r#"{"metric":{"__name__":"m"},"values":[1,2],"timestamps":[1]}"#,
                "2 values but 1 timestamps",
            ),
            (
                r#"{"metric":{"__name__":"m"},"values":[],"timestamps":[]}"#,
                "no samples",
            ),
            (
                r#"{"metric":{"__name__":"m"},"timestamps":[1]}"#,
                "no \"values\"",
            ),
            (r#"{"values":[1],"timestamps":[1]}"#, "no \"metric\""),
            (
                r#"{"metric":{"__name__":"m"},"values":[1,"x"],"timestamps":[1,2]}"#,
                "sample 2: invalid value",
            ),
            (
                r#"{"metric":{"__name__":"m"},"values":[1,2],"timestamps":[1,-2]}"#,
                "sample 2: invalid ts",
            ),
            (
                r#"{"metric":{"__name__":"m"},"values":[1],"timestamps":[1],"ts":1}"#,
                "none of \"labels\"",
            ),
            (
                r#"{"metric":["m"],"values":[1],"timestamps":[1]}"#,
                "must be an object",
            ),
            (
                r#"{"metric":{"__name__":"m"},"values":1,"timestamps":[1]}"#,
                "\"values\" must be an array",
            ),
            (
                r#"{"metric":{"__name__":"m"}, "values":[NaN],"timestamps":[1]}"#,
                "only in VictoriaMetrics' own layout",
            ),
        ];
        for (line, want) in cases {
            let err = series(line)
                .err()
                .unwrap_or_else(|| panic!("accepted {line}"));
            assert!(err.to_string().contains(want), "{line}: {err}");
        }
    }

    /// The fast path agrees with the general parser on every line it
    /// takes, and leaves every line it does not recognise to it: checked
    /// on corruptions of written lines at every byte.
    #[test]
    fn fast_path_agrees_with_the_general_parser() {
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        let mut rng = crate::gen::rng::Rng::new(12, 0, 0);
        for n in 1..6 {
            let samples: Vec<(i64, f64)> = (0..n)
                .map(|i| {
                    let v = match rng.below(4) {
                        0 => rng.below(1000) as f64,
                        1 => rng.below(100_000) as f64 / 1000.0 - 50.0,
                        2 => f64::from_bits(rng.u64() >> 2),
                        _ => 0.0,
                    };
                    (1_700_000_000_000 + i * 15_000, v)
                })
                .collect();
            buf.clear();
            let labels: &[u8] = match n % 3 {
                0 => br#"{"__name__":"m","job":"a"}"#,
                1 => br#"{"__name__":"m","uri":"/u/{id}"}"#,
                _ => br#"{"__name__":"m","q":"say \"hi\" \\"}"#,
            };
            write_series_line(&mut buf, labels, &samples);
            lines.push(
                String::from_utf8(buf.clone())
                    .unwrap()
                    .trim_end()
                    .to_string(),
            );
        }
        let general = |line: &str| -> Result<(String, Vec<(i64, u64)>), RecordError> {
            let w: crate::record::Wire<'_> = serde_json::from_str(line)
                .map_err(|e| RecordError::Json(crate::record::serde_reason(&e)))?;
            let mut out = Vec::new();
            let labels = from_wire(w, &mut out)?;
            Ok((labels.to_string(), bits(&out)))
        };
        let check = |line: &str| {
            let mut out = Vec::new();
            let Some(labels) = parse_canonical(line, &mut out) else {
                return;
            };
            // Bare NaN and Inf are not JSON: the general parser cannot
            // read such a line, and only the fast path takes them.
            if line.contains("NaN") || line.contains("Inf") {
                return;
            }
            match general(line) {
                Ok((l, s)) => {
                    assert_eq!(l, labels, "{line}");
                    assert_eq!(s, bits(&out), "{line}");
                }
                Err(e) => assert!(
                    crate::record::parse_labels(labels, Mode::Metrics).is_err(),
                    "fast path took a line the parser refuses ({e}): {line}"
                ),
            }
        };
        for l in &lines {
            check(l);
            for t in crate::record::tests::corruptions(l, &mut rng, b"\"{}[]:,\\ 0e-.") {
                check(&t);
            }
        }
    }
}
