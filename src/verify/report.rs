//! The verification report: JSON for `--report`, text for stderr.
//!
//! Timestamps are written as decimal strings, as in manifests, because
//! nanosecond timestamps do not fit a JSON reader's double.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use crate::labels::LabelSet;
use crate::record::Mode;
use crate::timefmt::format_rfc3339_ns;

use super::check::{Finding, Kind, SeriesPlan, SeriesResult};

#[derive(Debug, Serialize)]
pub struct Report {
    /// `ok` or `discrepancies`.
    pub verdict: &'static str,
    pub mode: &'static str,
    pub target: String,
    pub series_checked: u64,
    pub fragments_checked: u64,
    /// Acknowledged entries (identical fragments counted once).
    pub entries_expected: u64,
    /// Entries read back in the checked ranges, repeats and unexpected ones included.
    pub entries_found: u64,
    pub findings: Vec<FindingJson>,
    pub duration_s: f64,
    pub entries_per_second: f64,
    pub notes: Vec<String>,
    #[serde(skip)]
    ns_per_unit: i64,
}

#[derive(Debug, Serialize)]
pub struct FragmentRef {
    pub run: String,
    pub id: u64,
    /// A run of small fragments read as one: `id` is the first, this the
    /// last, `parts` how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct FindingJson {
    pub kind: &'static str,
    /// Whether the finding fails the verification (informational otherwise).
    pub discrepancy: bool,
    pub series: LabelSet,
    /// The first fragment concerned; `fragments` lists all of them.
    pub run: Option<String>,
    pub fragment: Option<u64>,
    pub fragments: Vec<FragmentRef>,
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    pub expected: Option<u64>,
    pub found: Option<u64>,
    /// `[first_ts, last_ts, count]`, timestamps as strings.
    pub ranges: Vec<(String, String, u64)>,
    pub detail: String,
}

impl FindingJson {
    fn from(f: &Finding, ns_per_unit: i64) -> FindingJson {
        let time = |ts: Option<i64>| ts.map(|t| format_rfc3339_ns(t.saturating_mul(ns_per_unit)));
        FindingJson {
            kind: f.kind.as_str(),
            discrepancy: f.discrepancy,
            series: f.series.clone(),
            run: f.fragments.first().map(|r| r.0.to_string()),
            fragment: f.fragments.first().map(|r| r.1),
            fragments: f
                .fragments
                .iter()
                .map(|(run, id, merged)| FragmentRef {
                    run: run.to_string(),
                    id: *id,
                    last_id: merged.map(|m| m.0),
                    parts: merged.map(|m| m.1),
                })
                .collect(),
            first_ts: f.first_ts.map(|t| t.to_string()),
            last_ts: f.last_ts.map(|t| t.to_string()),
            first_time: time(f.first_ts),
            last_time: time(f.last_ts),
            expected: f.expected,
            found: f.found,
            ranges: f
                .ranges
                .iter()
                .map(|r| (r.0.to_string(), r.1.to_string(), r.2))
                .collect(),
            detail: f.detail.clone(),
        }
    }
}

impl Report {
    pub fn build(
        mode: Mode,
        target: &str,
        checked: &[(&SeriesPlan, SeriesResult)],
        extra: Vec<Finding>,
        notes: Vec<String>,
        elapsed: Duration,
    ) -> Report {
        let ns_per_unit = mode.ns_per_unit();
        let mut findings: Vec<&Finding> = checked
            .iter()
            .flat_map(|(_, r)| r.findings.iter())
            .chain(extra.iter())
            .collect();
        // Discrepancies first, then by kind, series and time.
        findings.sort_by(|a, b| {
            (!a.discrepancy, a.kind, &a.series, a.first_ts).cmp(&(
                !b.discrepancy,
                b.kind,
                &b.series,
                b.first_ts,
            ))
        });
        let found: u64 = checked.iter().map(|(_, r)| r.found).sum::<u64>()
            + extra.iter().filter_map(|f| f.found).sum::<u64>();
        let secs = elapsed.as_secs_f64();
        let discrepancies = findings.iter().filter(|f| f.discrepancy).count();
        Report {
            verdict: if discrepancies > 0 {
                "discrepancies"
            } else {
                "ok"
            },
            mode: match mode {
                Mode::Logs => "logs",
                Mode::Metrics => "metrics",
            },
            target: target.to_string(),
            series_checked: checked.len() as u64,
            fragments_checked: checked.iter().map(|(p, _)| p.fragment_count() as u64).sum(),
            entries_expected: checked.iter().map(|(_, r)| r.expected).sum(),
            entries_found: found,
            findings: findings
                .iter()
                .map(|f| FindingJson::from(f, ns_per_unit))
                .collect(),
            duration_s: secs,
            entries_per_second: if secs > 0.0 { found as f64 / secs } else { 0.0 },
            notes,
            ns_per_unit,
        }
    }

    pub fn discrepancies(&self) -> usize {
        self.findings.iter().filter(|f| f.discrepancy).count()
    }

    /// The human summary: a totals line, one line per finding (at most
    /// `max_lines`), notes, and the verdict.
    pub fn write_text(&self, w: &mut dyn Write, max_lines: usize) -> std::io::Result<()> {
        writeln!(
            w,
            "checked {} series ({} fragments) in {}: {} entries acknowledged, {} found, {:.1}s ({:.0} entries/s)",
            self.series_checked,
            self.fragments_checked,
            self.target,
            self.entries_expected,
            self.entries_found,
            self.duration_s,
            self.entries_per_second
        )?;
        for f in self.findings.iter().take(max_lines) {
            writeln!(w, "{}", self.finding_line(f))?;
        }
        if self.findings.len() > max_lines {
            writeln!(
                w,
                "... and {} more findings (all are in --report)",
                self.findings.len() - max_lines
            )?;
        }
        for n in &self.notes {
            writeln!(w, "note: {n}")?;
        }
        let mut counts: Vec<(Kind, usize)> = Vec::new();
        for f in self.findings.iter().filter(|f| f.discrepancy) {
            let k = kind_of(f.kind);
            match counts.iter_mut().find(|c| c.0 == k) {
                Some(c) => c.1 += 1,
                None => counts.push((k, 1)),
            }
        }
        counts.sort();
        if counts.is_empty() {
            writeln!(w, "verdict: ok")
        } else {
            let parts: Vec<String> = counts
                .iter()
                .map(|(k, n)| format!("{n} {}", k.as_str()))
                .collect();
            writeln!(w, "verdict: DISCREPANCIES ({})", parts.join(", "))
        }
    }

    fn finding_line(&self, f: &FindingJson) -> String {
        let mut s = format!(
            "{}{} {}",
            f.kind.to_uppercase(),
            if f.discrepancy { "" } else { " (info)" },
            f.series
        );
        match f.fragments.as_slice() {
            [] => {}
            [FragmentRef {
                run,
                id,
                last_id: Some(last),
                parts: Some(n),
            }] => s.push_str(&format!(" fragments {run}/{id}..{last} ({n}, read as one)")),
            [one] => s.push_str(&format!(" fragment {}/{}", one.run, one.id)),
            [one, rest @ ..] => s.push_str(&format!(
                " fragments {}/{} and {} more",
                one.run,
                one.id,
                rest.len()
            )),
        }
        if let (Some(a), Some(b), Some(ta), Some(tb)) =
            (&f.first_ts, &f.last_ts, &f.first_time, &f.last_time)
        {
            s.push_str(&format!(" {ta}..{tb} ({a}..{b})"));
        }
        match (f.expected, f.found) {
            (Some(e), Some(n)) => s.push_str(&format!(" expected {e} found {n}")),
            (None, Some(n)) => s.push_str(&format!(" found {n}")),
            _ => {}
        }
        if !f.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&f.detail);
        }
        if f.kind == "missing" && !f.ranges.is_empty() {
            let shown: Vec<String> = f
                .ranges
                .iter()
                .take(10)
                .map(|(a, b, n)| self.range_text(a, b, *n))
                .collect();
            s.push_str("; at ");
            s.push_str(&shown.join(", "));
            if f.ranges.len() > 10 {
                s.push_str(&format!(" and {} more ranges", f.ranges.len() - 10));
            }
        }
        s
    }

    fn range_text(&self, a: &str, b: &str, n: u64) -> String {
        let time = |t: &str| {
            t.parse::<i64>()
                .map(|v| format_rfc3339_ns(v.saturating_mul(self.ns_per_unit)))
                .unwrap_or_default()
        };
        if a == b {
            format!("{} ({a}) x{n}", time(a))
        } else {
            format!("{}..{} ({a}..{b}) x{n}", time(a), time(b))
        }
    }
}

fn kind_of(s: &str) -> Kind {
    match s {
        "missing" => Kind::Missing,
        "altered" => Kind::Altered,
        "unexpected" => Kind::Unexpected,
        "duplicated" => Kind::Duplicated,
        "present" => Kind::Present,
        "absent" => Kind::Absent,
        "partial" => Kind::Partial,
        _ => Kind::Note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn report_lists_findings_with_exact_timestamps_and_verdict() {
        let labels = LabelSet::new(vec![("app".into(), "x".into())]).unwrap();
        let plan = SeriesPlan::new(labels.clone(), &[]);
        let missing = Finding {
            kind: Kind::Missing,
            discrepancy: true,
            series: labels.clone(),
            fragments: vec![(Arc::from("r1"), 7, None)],
            first_ts: Some(1_700_000_000_000_000_001),
            last_ts: Some(1_700_000_000_000_000_009),
            expected: Some(9),
            found: Some(8),
            ranges: vec![(1_700_000_000_000_000_005, 1_700_000_000_000_000_005, 1)],
            detail: "1 entries missing".into(),
        };
        let result = SeriesResult {
            findings: vec![missing],
            expected: 9,
            found: 8,
        };
        let r = Report::build(
            Mode::Logs,
            "loki x",
            &[(&plan, result)],
            vec![],
            vec![],
            Duration::from_secs(2),
        );
        assert_eq!(r.verdict, "discrepancies");
        assert_eq!(r.discrepancies(), 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["findings"][0]["kind"], "missing");
        assert_eq!(json["findings"][0]["series"]["app"], "x");
        assert_eq!(json["findings"][0]["run"], "r1");
        assert_eq!(json["findings"][0]["fragment"], 7);
        assert_eq!(json["findings"][0]["first_ts"], "1700000000000000001");
        assert_eq!(json["findings"][0]["ranges"][0][0], "1700000000000000005");
        assert_eq!(json["entries_per_second"], 4.0);
        let mut text = Vec::new();
        r.write_text(&mut text, 100).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("MISSING {app=\"x\"} fragment r1/7"), "{text}");
        assert!(
            text.contains("2023-11-14T22:13:20.000000005Z (1700000000000000005) x1"),
            "{text}"
        );
        assert!(
            text.ends_with("verdict: DISCREPANCIES (1 missing)\n"),
            "{text}"
        );
    }
}
