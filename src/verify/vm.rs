//! Reading raw samples back from VictoriaMetrics with `/api/v1/export`.
//!
//! Export returns every stored sample, duplicates included, as JSON lines.
//! Its `start`/`end` are seconds, truncated through a double on the server,
//! so each window asks for whole seconds padded by one on both sides and the
//! samples are cut to the window here.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context as _};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::labels::LabelSet;

use std::sync::Arc;

use super::check::SeriesPlan;
use super::BatchSink;

pub struct VmReader {
    client: reqwest::Client,
    export: reqwest::Url,
    flush: reqwest::Url,
}

impl VmReader {
    pub fn new(client: reqwest::Client, base: &str) -> anyhow::Result<VmReader> {
        Ok(VmReader {
            client,
            export: super::endpoint(base, "/api/v1/export")?,
            flush: super::endpoint(base, "/internal/force_flush")?,
        })
    }

    /// Makes recently ingested samples searchable now rather than in about
    /// a second. Best effort: the route may be disabled or protected, and
    /// the data then shows up anyway a moment later.
    pub async fn force_flush(&self) {
        let _ = self.client.get(self.flush.clone()).send().await;
    }

    /// Reads several series at once: one export per window, with a
    /// `match[]` per series (per-request overhead dominated reading many
    /// small series one by one).
    pub async fn read_batch(
        &self,
        plans: &[Arc<SeriesPlan>],
        sink: &mut BatchSink<'_>,
    ) -> anyhow::Result<()> {
        let sels: Vec<String> = plans.iter().map(|p| p.labels.to_selector()).collect();
        let labels: Vec<&LabelSet> = plans.iter().map(|p| &p.labels).collect();
        for (a, b) in super::batch_windows(plans) {
            let start = (a.div_euclid(1000) - 1).to_string();
            let end = ((b + 999).div_euclid(1000) + 1).to_string();
            let body = super::send(
                || {
                    let mut q: Vec<(&str, &str)> =
                        sels.iter().map(|s| ("match[]", s.as_str())).collect();
                    q.push(("start", start.as_str()));
                    q.push(("end", end.as_str()));
                    // A form body, not a URL: 32 selectors can pass the
                    // 8 KB header limit of proxies in front of the store.
                    self.client.post(self.export.clone()).form(&q)
                },
                "victoriametrics export",
            )
            .await?;
            let per_series = parse_export_batch(&body, &labels, a, b)?;
            super::emit_batch(per_series, plans, (a, b), sink);
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Line<'a> {
    metric: BTreeMap<String, String>,
    #[serde(borrow)]
    values: Vec<&'a RawValue>,
    timestamps: Vec<i64>,
}

fn parse_number(raw: &str) -> anyhow::Result<f64> {
    let t = raw.trim();
    let t = t
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(t);
    match t {
        "null" | "NaN" => Ok(f64::NAN),
        "Inf" | "+Inf" | "Infinity" | "+Infinity" => Ok(f64::INFINITY),
        "-Inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
        // From the text, not serde_json's double: the standard parser is
        // correctly rounded, so the value's bits are the ones stored.
        t => t
            .parse::<f64>()
            .map_err(|_| anyhow!("invalid sample value {raw:?}")),
    }
}

/// VictoriaMetrics writes infinities (and NaN) in `values` as bare
/// `+Inf`, `-Inf`, `NaN`, which JSON has no words for; quotes them. Only the
/// values array is touched: it is the last `"values":[` of the line (label
/// strings come before it, and it holds no strings of its own).
fn quote_special_values(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let key = b"\"values\":[";
    let Some(start) = line.windows(key.len()).rposition(|w| w == key) else {
        return line.into();
    };
    let start = start + key.len();
    let Some(len) = line[start..].iter().position(|&c| c == b']') else {
        return line.into();
    };
    let values = &line[start..start + len];
    if !values.iter().any(|c| matches!(c, b'I' | b'N')) {
        return line.into();
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    out.extend_from_slice(&line[..start]);
    for (i, tok) in values.split(|&c| c == b',').enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let bare = tok.trim_ascii();
        if bare
            .first()
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'+')
            || (bare.first() == Some(&b'-') && bare.get(1).is_some_and(u8::is_ascii_alphabetic))
        {
            out.push(b'"');
            out.extend_from_slice(bare);
            out.push(b'"');
        } else {
            out.extend_from_slice(tok);
        }
    }
    out.extend_from_slice(&line[start + len..]);
    out.into()
}

/// Parses an export answer for several series: per entry of `labels`, the
/// samples of the series with exactly those labels in `[a, b]`, sorted by
/// time, duplicates kept; other series are ignored.
pub fn parse_export_batch(
    body: &[u8],
    labels: &[&LabelSet],
    a: i64,
    b: i64,
) -> anyhow::Result<Vec<Vec<(i64, f64)>>> {
    let mut out: Vec<Vec<(i64, f64)>> = vec![Vec::new(); labels.len()];
    for (i, line) in body.split(|&c| c == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = quote_special_values(line);
        let l: Line<'_> = serde_json::from_slice(&line).map_err(|e| {
            anyhow!(
                "victoriametrics export: line {} unreadable ({e}): {}",
                i + 1,
                super::snippet(&line)
            )
        })?;
        let Some(k) = labels.iter().position(|want| {
            l.metric.len() == want.len()
                && want
                    .pairs()
                    .iter()
                    .all(|(k, v)| l.metric.get(k).is_some_and(|s| s == v))
        }) else {
            continue;
        };
        if l.values.len() != l.timestamps.len() {
            return Err(anyhow!(
                "victoriametrics export: line {} has {} values for {} timestamps",
                i + 1,
                l.values.len(),
                l.timestamps.len()
            ));
        }
        for (v, &ts) in l.values.iter().zip(&l.timestamps) {
            if ts < a || ts > b {
                continue;
            }
            out[k].push((ts, parse_number(v.get()).context("victoriametrics export")?));
        }
    }
    for o in &mut out {
        // Stable: repeats of one timestamp keep their order.
        o.sort_by_key(|s| s.0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses an export answer: the samples of the series with exactly
    /// `labels` with timestamps in `[a, b]`, merged over all its lines and
    /// sorted by time, duplicates kept.
    fn parse_export(
        body: &[u8],
        labels: &LabelSet,
        a: i64,
        b: i64,
    ) -> anyhow::Result<Vec<(i64, f64)>> {
        let mut v = parse_export_batch(body, &[labels], a, b)?;
        Ok(v.pop().unwrap_or_default())
    }

    fn labels() -> LabelSet {
        LabelSet::new(vec![
            ("__name__".into(), "m".into()),
            ("a".into(), "1".into()),
        ])
        .unwrap()
    }

    #[test]
    fn merges_split_lines_keeps_duplicates_and_cuts_to_the_window() {
        let body = br#"{"metric":{"__name__":"m","a":"1"},"values":[3,null,0.30000000000000004],"timestamps":[2000,2500,3000]}
{"metric":{"__name__":"m","a":"1","b":"x"},"values":[9],"timestamps":[2000]}
{"metric":{"__name__":"m","a":"1"},"values":[1,2,2,4],"timestamps":[999,1000,2000,4001]}
"#;
        let s = parse_export(body, &labels(), 1000, 4000).unwrap();
        let ts: Vec<i64> = s.iter().map(|x| x.0).collect();
        assert_eq!(ts, vec![1000, 2000, 2000, 2500, 3000]);
        assert_eq!(s[0].1, 2.0);
        assert!(s[3].1.is_nan());
        assert_eq!(s[4].1, 0.1 + 0.2);
    }

    #[test]
    fn malformed_lines_are_errors() {
        let e = parse_export(b"{\"metric\":{}", &labels(), 0, 1).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let body = br#"{"metric":{"__name__":"m","a":"1"},"values":[1],"timestamps":[1,2]}"#;
        assert!(parse_export(body, &labels(), 0, 5).is_err());
    }

    #[test]
    fn bare_infinities_in_an_export_line_are_read() {
        let labels = LabelSet::new(vec![("__name__".into(), "x".into())]).unwrap();
        let body =
            br#"{"metric":{"__name__":"x"},"values":[1.5,+Inf,-Inf,0],"timestamps":[1,2,3,4]}"#;
        let got = parse_export(body, &labels, 0, 10).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[1].1, f64::INFINITY);
        assert_eq!(got[2].1, f64::NEG_INFINITY);
        assert_eq!(got[3].1, 0.0);
    }

    #[test]
    fn one_export_answer_is_split_by_exact_series() {
        let a = LabelSet::new(vec![("__name__".into(), "x".into())]).unwrap();
        let b = LabelSet::new(vec![
            ("__name__".into(), "x".into()),
            ("k".into(), "v".into()),
        ])
        .unwrap();
        let body = br#"{"metric":{"__name__":"x","k":"v"},"values":[1,2],"timestamps":[10,20]}
{"metric":{"__name__":"x"},"values":[3],"timestamps":[30]}
{"metric":{"__name__":"x","other":"y"},"values":[4],"timestamps":[15]}
{"metric":{"__name__":"x"},"values":[5,5],"timestamps":[5,5]}"#;
        let got = parse_export_batch(body, &[&a, &b], 0, 100).unwrap();
        // Lines of one series are merged in time order, duplicates kept.
        assert_eq!(got[0], vec![(5, 5.0), (5, 5.0), (30, 3.0)]);
        assert_eq!(got[1], vec![(10, 1.0), (20, 2.0)]);
    }
}
