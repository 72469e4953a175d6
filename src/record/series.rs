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

use serde_json::value::RawValue;

use super::{json_number, parse_digits, parse_ts, parse_value, Mode, RecordError, Wire};

/// Parses a series line laid out exactly as VictoriaMetrics writes it
/// (keys in order, no whitespace), putting its samples in `out`; returns
/// its labels object, only delimited (the caller validates it the first
/// time it sees those bytes). None for anything else, including every
/// invalid line: the general parser then takes it or says what is wrong.
pub fn parse_canonical<'a>(line: &'a str, out: &mut Vec<(i64, f64)>) -> Option<&'a str> {
    let b = line.as_bytes();
    b.strip_prefix(b"{\"metric\":{")?;
    // As for sample records: without a backslash or a nested object in
    // the labels, the first `},"values":[` ends them.
    let mut close =
        memchr::memchr_iter(b'}', b).find(|&i| b[i..].starts_with(b"},\"values\":["))?;
    if memchr::memchr2(b'\\', b'{', &b[11..close]).is_some() {
        // A brace or an escape in a label value ("/users/{id}"): find the
        // object's end reading its strings. The general parser cannot
        // stand in here, as it refuses VictoriaMetrics' bare NaN.
        close = object_end(b, 10)?;
        if !b[close..].starts_with(b"},\"values\":[") {
            return None;
        }
    }
    let labels_json = &line[10..close + 1];
    let rest = &b[close + 12..];
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
    let missing = |f: &str| RecordError::Json(format!("missing field \"{f}\""));
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
        let mut out = vec![(9, 9.0)];
        match parse_any(line, &mut out)? {
            Line::Series { labels_json } => Ok((labels_json.to_string(), out)),
            Line::Record(r) => panic!("read as a record: {r:?}"),
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
                "missing field \"values\"",
            ),
            (
                r#"{"values":[1],"timestamps":[1]}"#,
                "missing field \"metric\"",
            ),
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
            let w: crate::record::Wire<'_> =
                serde_json::from_str(line).map_err(|e| RecordError::Json(e.to_string()))?;
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
