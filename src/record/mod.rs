//! The NDJSON record format shared by all three tools.
//!
//! Log entry:     `{"labels":{"app":"x"},"ts":"1700000000000000000","line":"..."}`
//! Metric sample: `{"labels":{"__name__":"m","k":"v"},"ts":1700000000000,"value":1.5}`
//! Metric series: `{"metric":{"__name__":"m"},"values":[1,2],"timestamps":[1700000000000,1700000001000]}`
//! (many samples of one series, see [`series`])
//!
//! Log timestamps are Unix nanoseconds, metric timestamps Unix
//! milliseconds; either may be given as an integer, a decimal string, or an
//! RFC3339 string. Internally a record keeps its timestamp in the native
//! unit of its kind (ns for logs, ms for metrics) so nothing is rounded.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::labels::{LabelError, LabelSet};
use crate::timefmt;

pub mod series;

/// Whether a stream of records carries log lines or metric samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Logs,
    Metrics,
}

impl Mode {
    /// Nanoseconds per timestamp unit of this mode.
    pub fn ns_per_unit(self) -> i64 {
        match self {
            Mode::Logs => 1,
            Mode::Metrics => 1_000_000,
        }
    }
}

/// Why one NDJSON line is not a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Valid JSON, but not a record or line of the forms taken.
    #[error("{0}")]
    Shape(String),
    #[error("invalid UTF-8")]
    Utf8,
    #[error("{0}")]
    Labels(#[from] LabelError),
    #[error("invalid ts: {0}")]
    Ts(String),
    #[error("record has both \"line\" and \"value\"")]
    Both,
    #[error("record has neither \"line\" nor \"value\"")]
    Neither,
    #[error("invalid value: {0}")]
    Value(String),
    #[error("expected a {expected:?} record, got a {got:?} record")]
    WrongMode { expected: Mode, got: Mode },
    #[error("{unit} {sample} of {of}: {reason} ({})", in_series_note(*.sample, *.refused, *.rest_dropped))]
    InSeries {
        /// "sample" or "entry".
        unit: &'static str,
        sample: usize,
        of: usize,
        /// Samples of the line refused (counting this one).
        refused: usize,
        /// Whether the samples after this one were left unread.
        rest_dropped: bool,
        reason: Box<RecordError>,
    },
}

/// What happened to the rest of a series line with a refused sample.
fn in_series_note(sample: usize, refused: usize, rest_dropped: bool) -> String {
    let before = sample - 1;
    if rest_dropped {
        format!("the {before} before it were taken, the rest of the line not")
    } else if refused == 1 {
        "the others were taken".into()
    } else {
        format!("{refused} samples of the line refused, the others taken")
    }
}

/// The payload of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload<'a> {
    Line(Cow<'a, str>),
    Value(f64),
}

impl Payload<'_> {
    pub fn mode(&self) -> Mode {
        match self {
            Payload::Line(_) => Mode::Logs,
            Payload::Value(_) => Mode::Metrics,
        }
    }
}

/// A record parsed from one line, borrowing from it where it can.
#[derive(Debug)]
pub struct RawRecord<'a> {
    /// The labels object exactly as written; used as a cache key so a
    /// series' labels are validated once, not once per entry.
    pub labels_json: &'a str,
    /// In the mode's native unit: ns for logs, ms for metrics.
    pub ts: i64,
    pub payload: Payload<'a>,
}

/// The members of a record or a series line, any of them possibly absent.
#[derive(Deserialize)]
pub(crate) struct Wire<'a> {
    #[serde(borrow)]
    labels: Option<&'a RawValue>,
    /// `timestamp` is what `logcli query --output jsonl` writes (an
    /// RFC3339 string), so Loki query output replays as it is.
    #[serde(borrow, alias = "timestamp")]
    ts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    line: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metric: Option<&'a RawValue>,
    #[serde(borrow, default)]
    values: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamps: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
}

/// What one input line holds.
#[derive(Debug)]
pub enum Line<'a> {
    Record(RawRecord<'a>),
    /// A series line ([`series`]); its samples are in `Buffers::samples`.
    Series {
        labels_json: &'a str,
    },
    /// A stream line ([`series`]); its entries are in `Buffers::entries`.
    Stream {
        labels_json: &'a str,
    },
}

/// Parses one NDJSON line: a record, a series line or a stream line, whose
/// entries go to `buf` (cleared first), in the order written.
pub fn parse_any<'a>(line: &'a str, buf: &mut series::Buffers) -> Result<Line<'a>, RecordError> {
    if let Some(r) = parse_canonical(line) {
        return Ok(Line::Record(r));
    }
    if let Some(labels_json) = series::parse_canonical(line, &mut buf.samples) {
        return Ok(Line::Series { labels_json });
    }
    if let Some(labels_json) = series::parse_canonical_stream(line, &mut buf.entries) {
        return Ok(Line::Stream { labels_json });
    }
    not_an_object(line)?;
    let w: Wire<'_> = serde_json::from_str(line).map_err(|e| json_error(line, e))?;
    if w.stream.is_some() {
        let labels_json = series::stream_from_wire(w, &mut buf.entries)?;
        return Ok(Line::Stream { labels_json });
    }
    if w.metric.is_some() || w.values.is_some() || w.timestamps.is_some() {
        let labels_json = series::from_wire(w, &mut buf.samples)?;
        return Ok(Line::Series { labels_json });
    }
    from_wire(w).map(Line::Record)
}

/// What a line may be, for messages about one that is none of them.
const RECORD_FORMS: &str = "a record is {\"labels\":{..},\"ts\":\"..\",\"line\":\"..\"} (\"value\" for a metric sample), or a line of many: {\"stream\":{..},\"values\":[..]} or {\"metric\":{..},\"values\":[..],\"timestamps\":[..]}";

/// serde's reason, with the position as a column: the caller names the
/// file and line, and serde's own \"line 1\" would contradict it.
pub(crate) fn serde_reason(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) if e.line() == 1 => format!("{} (at column {})", &s[..i], e.column()),
        _ => s,
    }
}

/// Refuses JSON that is not an object: serde would read an array into a
/// record field by field and report a confusing field error.
fn not_an_object(line: &str) -> Result<(), RecordError> {
    if line.trim_start().starts_with('{') {
        return Ok(());
    }
    match serde_json::from_str::<serde::de::IgnoredAny>(line) {
        Ok(_) => Err(RecordError::Shape(format!(
            "not a JSON object; {RECORD_FORMS}"
        ))),
        Err(e) => Err(RecordError::Json(serde_reason(&e))),
    }
}

/// serde's reason, plus a hint for the one non-JSON form we take.
fn json_error(line: &str, e: serde_json::Error) -> RecordError {
    let mut msg = serde_reason(&e);
    if line.contains("\"metric\"") && (line.contains("NaN") || line.contains("Inf")) {
        msg.push_str(" (bare NaN and Inf are taken only in VictoriaMetrics' own layout: {\"metric\":{..},\"values\":[..],\"timestamps\":[..]}, keys in that order, no spaces)");
    }
    RecordError::Json(msg)
}

/// Parses one NDJSON record line (without its newline).
pub fn parse_line(line: &str) -> Result<RawRecord<'_>, RecordError> {
    not_an_object(line)?;
    let w: Wire<'_> = serde_json::from_str(line).map_err(|e| json_error(line, e))?;
    from_wire(w)
}

fn from_wire(w: Wire<'_>) -> Result<RawRecord<'_>, RecordError> {
    let missing = |f: &str| RecordError::Shape(format!("no \"{f}\"; {RECORD_FORMS}"));
    let labels = w.labels.ok_or_else(|| missing("labels"))?;
    let ts_raw = w.ts.ok_or_else(|| missing("ts"))?;
    let labels_json = labels.get();
    if !labels_json.starts_with('{') {
        return Err(RecordError::Labels(LabelError::Malformed(
            "\"labels\" must be an object of strings".into(),
        )));
    }
    let payload = match (w.line, w.value) {
        (Some(_), Some(_)) => return Err(RecordError::Both),
        (None, None) => return Err(RecordError::Neither),
        (Some(l), None) => Payload::Line(parse_line_field(l.get())?),
        (None, Some(v)) => Payload::Value(parse_value(v.get())?),
    };
    let ts = parse_ts(ts_raw.get(), payload.mode())?;
    Ok(RawRecord {
        labels_json,
        ts,
        payload,
    })
}

/// Parses one NDJSON line: the fast path for the layout the tools write,
/// the general parser for anything else.
pub fn parse(line: &str) -> Result<RawRecord<'_>, RecordError> {
    match parse_canonical(line) {
        Some(r) => Ok(r),
        None => parse_line(line),
    }
}

/// Parses a record laid out exactly as [`write_log_record`] and
/// [`write_metric_record`] write them (keys in that order, no whitespace,
/// a decimal `ts`, a line without escapes, a plain JSON number), without a
/// general JSON parser: parsing was most of the pusher's CPU. Returns None
/// for anything else, including every invalid line; [`parse_line`] then
/// parses it, or says what is wrong. The labels object is only delimited
/// here: the caller validates it ([`parse_labels`]) the first time it sees
/// those exact bytes, as with [`parse_line`].
pub fn parse_canonical(line: &str) -> Option<RawRecord<'_>> {
    let b = line.as_bytes();
    b.strip_prefix(b"{\"labels\":{")?;
    // Without a backslash in the labels no string there can hold a quote,
    // so the first `},"ts":` ends the object, unless another member with an
    // object value comes between (`"labels":{..},"meta":{..},"ts":`): a
    // `{` inside sends the line to the general parser.
    let close = memchr::memchr_iter(b'}', b).find(|&i| b[i..].starts_with(b"},\"ts\":"))?;
    if memchr::memchr2(b'\\', b'{', &b[11..close]).is_some() {
        return None;
    }
    let labels_json = &line[10..close + 1];
    let rest = &b[close + 7..];
    if let Some(rest) = rest.strip_prefix(b"\"") {
        // A log entry: "ts":"<digits>","line":"<no escapes>"}
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        let ts = parse_digits(&rest[..digits])?;
        let text = rest[digits..].strip_prefix(b"\",\"line\":\"")?;
        let text = text.strip_suffix(b"\"}")?;
        let plain = text
            .iter()
            .fold(true, |ok, &c| ok & (c >= 0x20) & (c != b'"') & (c != b'\\'));
        if !plain {
            return None;
        }
        let start = line.len() - 2 - text.len();
        return Some(RawRecord {
            labels_json,
            ts,
            payload: Payload::Line(Cow::Borrowed(&line[start..line.len() - 2])),
        });
    }
    // A metric sample: "ts":<digits>,"value":<number>}
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits > 1 && rest[0] == b'0' {
        return None; // JSON numbers have no leading zeros
    }
    let ts = parse_digits(&rest[..digits])?;
    let num = rest[digits..]
        .strip_prefix(b",\"value\":")?
        .strip_suffix(b"}")?;
    let value = json_number(num)?;
    Some(RawRecord {
        labels_json,
        ts,
        payload: Payload::Value(value),
    })
}

/// A non-empty run of ASCII digits as an i64 (as [`parse_ts`] takes it).
fn parse_digits(d: &[u8]) -> Option<i64> {
    if d.is_empty() || d.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in d {
        v = v.checked_mul(10)?.checked_add((c - b'0') as i64)?;
    }
    Some(v)
}

/// The value of a JSON number, None if `b` is not one. Numbers of at most
/// 15 digits without an exponent (what generators and exporters write) are
/// computed directly, as the general parser's own fast path does with more
/// checks around it: the digits as an integer (below 2^53) and a power of
/// ten up to 10^15 are exact doubles, so one division rounds correctly, to
/// the value `str::parse` gives.
pub(crate) fn json_number(b: &[u8]) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (neg, body) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    // One pass over -?(0|[1-9][0-9]*)(\.[0-9]+)? ; anything longer or
    // with an exponent goes to the full grammar check and parser.
    let mut m = 0u64;
    let mut i = 0;
    let digit = |i: usize| body.get(i).filter(|c| c.is_ascii_digit());
    match body.first() {
        Some(b'0') => i = 1,
        Some(b'1'..=b'9') => {
            while let Some(&c) = digit(i) {
                m = m.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                i += 1;
            }
        }
        _ => return None,
    }
    let mut k = 0;
    if body.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&c) = digit(i) {
            m = m.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            i += 1;
            k += 1;
        }
        if k == 0 {
            return None;
        }
    }
    if i == body.len() && i - usize::from(k > 0) <= 15 {
        let v = m as f64 / POW10[k];
        return Some(if neg { -v } else { v });
    }
    if !is_json_number(b) {
        return None;
    }
    // ASCII digits, signs, '.', 'e': valid UTF-8.
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// JSON's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
fn is_json_number(b: &[u8]) -> bool {
    let digits = |b: &[u8], i: usize| b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = usize::from(b.first() == Some(&b'-'));
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(b, i),
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        let n = digits(b, i + 1);
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(b, i);
        if n == 0 {
            return false;
        }
        i += n;
    }
    i == b.len()
}

/// Borrows the line when it has no escapes (the common case), so parsing
/// does not allocate per entry.
fn parse_line_field(raw: &str) -> Result<Cow<'_, str>, RecordError> {
    if let Some(inner) = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        if !inner.contains('\\') {
            return Ok(Cow::Borrowed(inner));
        }
        return serde_json::from_str::<String>(raw)
            .map(Cow::Owned)
            .map_err(|e| RecordError::Json(serde_reason(&e)));
    }
    Err(RecordError::Json(format!(
        "\"line\" must be a string, got {}",
        raw.chars().take(40).collect::<String>()
    )))
}

fn parse_value(raw: &str) -> Result<f64, RecordError> {
    let s = raw.trim();
    let unquoted = s.strip_prefix('"').and_then(|s| s.strip_suffix('"'));
    match unquoted {
        Some("NaN") => Ok(f64::NAN),
        Some("+Inf") | Some("Inf") => Ok(f64::INFINITY),
        Some("-Inf") => Ok(f64::NEG_INFINITY),
        Some(other) => other
            .parse::<f64>()
            .map_err(|_| RecordError::Value(format!("{s} is not a number"))),
        None => s
            .parse::<f64>()
            .map_err(|_| RecordError::Value(format!("{s} is not a number"))),
    }
}

/// Parses a raw JSON `ts` value into the mode's unit.
fn parse_ts(raw: &str, mode: Mode) -> Result<i64, RecordError> {
    let bad = |why: &str| RecordError::Ts(format!("{raw}: {why}"));
    let text = match raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner,
        None => {
            if raw.starts_with('-') || !raw.bytes().all(|b| b.is_ascii_digit()) || raw.is_empty() {
                return Err(bad("expected a non-negative integer or a string"));
            }
            raw
        }
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().map_err(|_| bad("out of range"));
    }
    let ns = timefmt::parse_rfc3339_ns(text).map_err(|_| bad("not an integer or RFC3339"))?;
    if ns < 0 {
        return Err(bad("before 1970"));
    }
    Ok(ns.div_euclid(mode.ns_per_unit()))
}

/// The pairs of a JSON object in document order, duplicates kept, so a
/// repeated name is reported rather than silently resolved.
struct Pairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Pairs, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = m.next_entry::<String, String>()? {
                    v.push(kv);
                }
                Ok(Pairs(v))
            }
        }
        de.deserialize_map(V)
    }
}

/// Parses and validates a labels object (the slow path, once per series).
pub fn parse_labels(labels_json: &str, mode: Mode) -> Result<LabelSet, RecordError> {
    let Pairs(pairs) = serde_json::from_str(labels_json).map_err(|e| {
        RecordError::Labels(LabelError::Malformed(format!(
            "\"labels\" must be an object of strings ({e})"
        )))
    })?;
    let set = LabelSet::new(pairs)?;
    if mode == Mode::Metrics && set.get("__name__").is_none() {
        return Err(RecordError::Labels(LabelError::NoMetricName));
    }
    Ok(set)
}

/// Appends `s` as a JSON string literal.
pub fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                buf.extend_from_slice(&bytes[start..i]);
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(b >> 4) as usize]);
                buf.push(HEX[(b & 0xf) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(esc);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

/// Appends one log record line (with its newline). `labels_json` is the
/// series' labels object, formatted once per series by [`LabelSet::write_json`].
pub fn write_log_record(buf: &mut Vec<u8>, labels_json: &[u8], ts_ns: i64, line: &str) {
    buf.extend_from_slice(b"{\"labels\":");
    buf.extend_from_slice(labels_json);
    buf.extend_from_slice(b",\"ts\":\"");
    buf.extend_from_slice(itoa::Buffer::new().format(ts_ns).as_bytes());
    buf.extend_from_slice(b"\",\"line\":");
    write_json_str(buf, line);
    buf.extend_from_slice(b"}\n");
}

/// Appends one metric record line (with its newline).
pub fn write_metric_record(buf: &mut Vec<u8>, labels_json: &[u8], ts_ms: i64, value: f64) {
    buf.extend_from_slice(b"{\"labels\":");
    buf.extend_from_slice(labels_json);
    buf.extend_from_slice(b",\"ts\":");
    buf.extend_from_slice(itoa::Buffer::new().format(ts_ms).as_bytes());
    buf.extend_from_slice(b",\"value\":");
    write_json_value(buf, value);
    buf.extend_from_slice(b"}\n");
}

/// Finite values as JSON numbers (shortest round-trip form); NaN and the
/// infinities as the strings Prometheus uses, since JSON has no such numbers.
pub fn write_json_value(buf: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        buf.extend_from_slice(b"\"NaN\"");
    } else if value.is_infinite() {
        buf.extend_from_slice(if value > 0.0 {
            b"\"+Inf\""
        } else {
            b"\"-Inf\""
        });
    } else if value == value.trunc()
        && value.abs() < 1e15
        && !(value == 0.0 && value.is_sign_negative())
    {
        buf.extend_from_slice(itoa::Buffer::new().format(value as i64).as_bytes());
    } else {
        buf.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_record_borrowing_line() {
        let r = parse_line(r#"{"labels":{"a":"1"},"ts":"1700000000000000001","line":"hello"}"#)
            .unwrap();
        assert_eq!(r.labels_json, r#"{"a":"1"}"#);
        assert_eq!(r.ts, 1_700_000_000_000_000_001);
        assert!(matches!(r.payload, Payload::Line(Cow::Borrowed("hello"))));
    }

    #[test]
    fn accepts_integer_and_rfc3339_ts() {
        let r = parse_line(r#"{"labels":{"a":"1"},"ts":1700000000000000001,"line":"x"}"#).unwrap();
        assert_eq!(r.ts, 1_700_000_000_000_000_001);
        let r =
            parse_line(r#"{"labels":{"a":"1"},"ts":"2023-11-14T22:13:20.5Z","line":"x"}"#).unwrap();
        assert_eq!(r.ts, 1_700_000_000_500_000_000);
        let m =
            parse_line(r#"{"labels":{"__name__":"m"},"ts":"2023-11-14T22:13:20.5009Z","value":2}"#)
                .unwrap();
        assert_eq!(m.ts, 1_700_000_000_500);
        assert_eq!(m.payload, Payload::Value(2.0));
    }

    #[test]
    fn rejects_malformed_records_with_reasons() {
        let cases = [
            (r#"{"labels":{"a":"1"},"ts":"1","line":"x""#, "invalid JSON"),
            (r#"{"ts":"1","line":"x"}"#, "no \"labels\""),
            ("[1,2,3]", "not a JSON object"),
            (r#"{"labels":{"a":"1"},"line":"x"}"#, "no \"ts\""),
            (r#"{"labels":{"a":"1"},"ts":-5,"line":"x"}"#, "invalid ts"),
            (r#"{"labels":{"a":"1"},"ts":1.5,"line":"x"}"#, "invalid ts"),
            (
                r#"{"labels":{"a":"1"},"ts":"soon","line":"x"}"#,
                "invalid ts",
            ),
            (
                r#"{"labels":{"a":"1"},"ts":1,"line":5}"#,
                "must be a string",
            ),
            (r#"{"labels":{"a":"1"},"ts":1}"#, "neither"),
            (
                r#"{"labels":{"a":"1"},"ts":1,"line":"x","value":1}"#,
                "both",
            ),
            (r#"{"labels":[1],"ts":1,"line":"x"}"#, "must be an object"),
            (
                r#"{"labels":{"__name__":"m"},"ts":1,"value":"abc"}"#,
                "not a number",
            ),
        ];
        for (line, want) in cases {
            let err = parse_line(line)
                .err()
                .unwrap_or_else(|| panic!("accepted {line}"));
            assert!(err.to_string().contains(want), "{line}: {err}");
        }
    }

    /// The direct computation of short decimals gives exactly what
    /// `str::parse` gives, and refuses what JSON refuses.
    #[test]
    fn json_numbers_parse_as_the_standard_parser_does() {
        let mut rng = crate::gen::rng::Rng::new(6, 0, 0);
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.000",
            "1",
            "12.5",
            "0.1",
            "0.3",
            "123456789012345",
            "1234567890123456",
            "99999999999999.9",
            "0.000000000000001",
            "1e5",
            "1.5E-3",
            "9007199254740993",
            "-12.345",
            "2.2250738585072014e-308",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..300_000 {
            let int = rng.u64() >> rng.below(64);
            let frac = rng.below(18) as usize;
            let s = int.to_string();
            let s = if frac > 0 && frac < s.len() {
                format!("{}.{}", &s[..s.len() - frac], &s[s.len() - frac..])
            } else if frac > 0 {
                format!("0.{}{s}", "0".repeat(frac - s.len().min(frac)))
            } else {
                s
            };
            cases.push(if rng.chance(0.5) { format!("-{s}") } else { s });
        }
        for c in &cases {
            let want: f64 = c.parse().unwrap();
            let got = json_number(c.as_bytes()).unwrap_or_else(|| panic!("refused {c}"));
            assert_eq!(got.to_bits(), want.to_bits(), "{c}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "+1", "1e", "0x1", "1.2.3", "--1", "NaN", "1 ",
        ] {
            assert_eq!(json_number(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn label_validation_happens_on_the_slow_path() {
        assert!(parse_labels(r#"{"a-b":"1"}"#, Mode::Logs).is_err());
        assert!(parse_labels(r#"{"a":1}"#, Mode::Logs).is_err());
        assert!(parse_labels(r#"{"a":"1"}"#, Mode::Metrics).is_err());
        assert!(parse_labels(r#"{"__name__":"m","a":"1"}"#, Mode::Metrics).is_ok());
        let dup = parse_labels(r#"{"a":"1","a":"2"}"#, Mode::Logs).unwrap_err();
        assert!(dup.to_string().contains("duplicate label name"), "{dup}");
    }

    #[test]
    fn written_records_parse_back() {
        let labels = crate::labels::LabelSet::new(vec![("a".into(), "x\"y".into())]).unwrap();
        let mut lj = Vec::new();
        labels.write_json(&mut lj);
        let mut buf = Vec::new();
        write_log_record(&mut buf, &lj, 42, "tab\there \u{1} \"q\" é");
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(text.ends_with('\n'));
        let r = parse_line(text.trim_end()).unwrap();
        assert_eq!(r.ts, 42);
        assert_eq!(r.payload, Payload::Line("tab\there \u{1} \"q\" é".into()));
        assert_eq!(parse_labels(r.labels_json, Mode::Logs).unwrap(), labels);

        for v in [
            0.1,
            -3.0,
            1e300,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            12.345,
        ] {
            let mut buf = Vec::new();
            write_metric_record(&mut buf, br#"{"__name__":"m"}"#, 7, v);
            let r = parse_line(std::str::from_utf8(&buf).unwrap().trim_end()).unwrap();
            match r.payload {
                Payload::Value(got) => assert!(got == v || (got.is_nan() && v.is_nan())),
                _ => panic!(),
            }
        }
    }

    /// The fast path agrees with the general parser on every line it
    /// takes, and leaves every line it does not recognise (including each
    /// invalid one) to it. Checked on generated lines of every format, the
    /// fixtures, hand-written edge cases, and many corruptions of each.
    #[test]
    fn canonical_fast_path_agrees_with_the_general_parser() {
        use crate::gen::{Args, Config};
        use clap::Parser;
        let mut lines: Vec<String> = Vec::new();
        for flags in [
            &["--format", "looker"][..],
            &["--format", "json"],
            &["--format", "logfmt", "--bad-data", "30"],
            &["--format", "syslog", "--multiline", "20"],
            &["--format", "apache-combined", "--compressibility", "min"],
            &["--metrics", "--metric-type", "gauge"],
            &["--metrics", "--metric-type", "histogram"],
        ] {
            let mut argv = vec![
                "looker-gen",
                "--seed",
                "3",
                "--n-series",
                "3",
                "--count",
                "40",
                "--start-time",
                "1700000000000000000",
            ];
            argv.extend_from_slice(flags);
            let cfg = Config::from_args(&Args::try_parse_from(argv).unwrap()).unwrap();
            let clock = crate::gen::clock::ManualClock {
                now_ns: 1_700_000_000_000_000_000,
            };
            let mut g = crate::gen::engine::Generator::new(&cfg, clock).unwrap();
            let mut out = Vec::new();
            while g.step(&mut out).unwrap() == crate::gen::engine::Step::Emitted {}
            lines.extend(String::from_utf8(out).unwrap().lines().map(str::to_string));
        }
        let root = env!("CARGO_MANIFEST_DIR");
        for f in [
            "fixtures/records/logs.ndjson",
            "fixtures/records/metrics.ndjson",
        ] {
            let text = std::fs::read_to_string(format!("{root}/{f}")).unwrap();
            lines.extend(text.lines().map(str::to_string));
        }
        lines.extend(
            [
                r#"{"labels":{},"ts":1,"value":0}"#,
                r#"{"labels":{"a":"}"},"ts":"5","line":"x"}"#,
                r#"{"labels":{"a":"q\"}"},"ts":"5","line":"x"}"#,
                r#"{"labels":{"a\\":"b"},"ts":"5","line":""}"#,
                r#"{"labels":{"a":"b"},"ts":"5","line":"has \" quote"}"#,
                r#"{"labels":{"a":"b"},"ts":12,"value":-0}"#,
                r#"{"labels":{"a":"b"},"ts":12,"value":1.5e-7}"#,
                r#"{"labels":{"a":"b"},"ts":12,"value":01}"#,
                r#"{"labels":{"a":"b"},"ts":12,"value":.5}"#,
                r#"{"labels":{"a":"b"},"ts":12,"value":1.}"#,
                r#"{"labels":{"a":"b"},"ts":12,"value":+1}"#,
                r#"{"labels":{"a":"b"},"ts":12,"value":inf}"#,
                r#"{"labels":{"a":"b"},"ts":12,"value":1e}"#,
                r#"{"labels":{"a":"b"},"ts":12,"value":"NaN"}"#,
                r#"{"labels":{"a":"b"},"ts":99999999999999999999,"value":1}"#,
                r#"{"labels":{"a":"b"},"ts":0012,"value":1}"#,
                r#"{"labels":{"a":"b"},"ts":12,"value":1,"value":2}"#,
                r#"{"labels":{"a" "b"},"ts":12,"value":1}"#,
                r#"{"labels":{"a":"b"},"ts":"12","line":"x","line":"y"}"#,
                r#"{"labels":{"a":"b"},"ts":"12","line":"tab	inside"}"#,
                r#"{"labels":{"a":"b"},"ts":-12,"value":1}"#,
                r#"{"labels":{"a":"b"} ,"ts":12,"value":1}"#,
                r#"{"labels":{"app":"x"},"meta":{"k":"v"},"ts":"1700000000000000000","line":"hi"}"#,
                r#"{"labels":{"app":"x"},"meta":{},"ts":12,"value":1}"#,
                r#"{"labels":{"a":"{b}"},"ts":"5","line":"x"}"#,
            ]
            .map(str::to_string),
        );
        let check = |line: &str| {
            let Some(fast) = parse_canonical(line) else {
                return false;
            };
            match parse_line(line) {
                Ok(slow) => {
                    assert_eq!(fast.labels_json, slow.labels_json, "{line}");
                    assert_eq!(fast.ts, slow.ts, "{line}");
                    match (&fast.payload, &slow.payload) {
                        (Payload::Value(a), Payload::Value(b)) => {
                            assert_eq!(a.to_bits(), b.to_bits(), "{line}")
                        }
                        (a, b) => assert_eq!(a, b, "{line}"),
                    }
                }
                // Taken by the fast path, refused by the general one: only
                // allowed when the labels object itself is what is wrong,
                // which the caller finds when it validates the labels.
                Err(e) => assert!(
                    parse_labels(fast.labels_json, fast.payload.mode()).is_err(),
                    "fast path took a line the parser refuses ({e}): {line}"
                ),
            }
            true
        };
        let mut taken = 0;
        for l in &lines {
            taken += usize::from(check(l));
        }
        // Most generated lines take the fast path.
        assert!(taken * 10 > lines.len() * 7, "{taken} of {}", lines.len());
        let mut rng = crate::gen::rng::Rng::new(9, 0, 0);
        for l in lines.iter().step_by(7) {
            for t in corruptions(l, &mut rng, b"\"{}:,\\ 0e-.") {
                check(&t);
            }
        }
    }

    /// Corruptions of `line`: at every byte position, one of a deletion, a
    /// doubling, a replacement by one of `structural`, or a cut (those
    /// that are still UTF-8).
    pub(super) fn corruptions(
        line: &str,
        rng: &mut crate::gen::rng::Rng,
        structural: &[u8],
    ) -> Vec<String> {
        let b = line.as_bytes();
        (0..b.len())
            .filter_map(|i| {
                let mut v = b.to_vec();
                match rng.below(4) {
                    0 => {
                        v.remove(i);
                    }
                    1 => v.insert(i, b[i]),
                    2 => v[i] = structural[rng.below(structural.len() as u64) as usize],
                    _ => v.truncate(i),
                }
                String::from_utf8(v).ok()
            })
            .collect()
    }
}
