//! Checking the file `looker-push --file` wrote: records in the NDJSON
//! record format, read once from start to end and dispatched to the checker
//! of their series. Within a series the records are in push order, which is
//! time order for ordered input.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::hash::BuildHasherDefault;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use xxhash_rust::xxh3::xxh3_128;

use crate::labels::LabelSet;
use crate::record::{self, Mode, Payload};
use crate::series::PreHashed;

use super::check::{Finding, Kind, Seen, SeriesChecker, SeriesPlan, SeriesResult, Span};

/// What one pass over the file found.
#[derive(Debug, Default)]
pub struct FileOutcome {
    /// Results of the series checked, by index into the plans.
    pub results: Vec<(usize, SeriesResult)>,
    /// Series in the file that no manifest mentions.
    pub unexpected_series: Vec<Finding>,
    /// Lines that are not records of the manifests' mode.
    pub bad_lines: u64,
    /// The first of them: its line number and why.
    pub first_bad: Option<(u64, String)>,
}

/// Where the records of one labels object go.
#[derive(Clone, Copy)]
enum Route {
    Check(usize),
    /// A manifest series not being checked in this pass.
    Skip,
    Stranger(usize),
    Bad,
}

/// Reads `path` once and checks the series `only` (indices into `plans`).
pub fn check_file(
    path: &Path,
    mode: Mode,
    plans: &[Arc<SeriesPlan>],
    only: &BTreeSet<usize>,
) -> anyhow::Result<FileOutcome> {
    let file = File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let index: HashMap<&LabelSet, usize> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| (&p.labels, i))
        .collect();
    // By plan index: a lookup per line.
    let mut checkers: Vec<Option<SeriesChecker>> = (0..plans.len()).map(|_| None).collect();
    for &i in only.iter().filter(|&&i| i < plans.len()) {
        checkers[i] = Some(SeriesChecker::new(plans[i].clone()));
    }
    // By the 128-bit xxh3 of the labels object as written (as the pusher
    // keys series), and the last one: a sink holds each fragment's
    // records together, so most lines repeat the previous line's labels.
    let mut routes: HashMap<u128, Route, BuildHasherDefault<PreHashed>> = HashMap::default();
    let mut last: Option<(Vec<u8>, Route)> = None;
    let mut strangers: Vec<(LabelSet, Span)> = Vec::new();
    let mut stranger_index: HashMap<LabelSet, usize> = HashMap::new();
    let mut out = FileOutcome::default();
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    let bad = |out: &mut FileOutcome, line_no: u64, why: &dyn Fn() -> String| {
        out.bad_lines += 1;
        if out.first_bad.is_none() {
            out.first_bad = Some((line_no, why()));
        }
    };
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            bad(&mut out, line_no, &|| "invalid UTF-8".into());
            continue;
        };
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let rec = match record::parse(text) {
            Ok(r) => r,
            Err(e) => {
                bad(&mut out, line_no, &|| e.to_string());
                continue;
            }
        };
        if rec.payload.mode() != mode {
            bad(&mut out, line_no, &|| {
                format!("a {:?} record", rec.payload.mode())
            });
            continue;
        }
        let key = rec.labels_json.as_bytes();
        let cached = last.as_ref().filter(|(k, _)| k.as_slice() == key);
        let route = match cached
            .map(|(_, r)| *r)
            .or_else(|| routes.get(&xxh3_128(key)).copied())
        {
            Some(r) => r,
            None => {
                let r = match record::parse_labels(rec.labels_json, mode) {
                    Err(_) => Route::Bad,
                    Ok(labels) => match index.get(&labels) {
                        Some(&i) if checkers[i].is_some() => Route::Check(i),
                        Some(_) => Route::Skip,
                        // One finding per stranger series, however its
                        // labels are spelled (order, escaping).
                        None => match stranger_index.get(&labels) {
                            Some(&k) => Route::Stranger(k),
                            None => {
                                stranger_index.insert(labels.clone(), strangers.len());
                                strangers.push((labels, Span::default()));
                                Route::Stranger(strangers.len() - 1)
                            }
                        },
                    },
                };
                routes.insert(xxh3_128(key), r);
                r
            }
        };
        if cached.is_none() {
            let (k, r) = last.get_or_insert_with(|| (Vec::new(), route));
            k.clear();
            k.extend_from_slice(key);
            *r = route;
        }
        match route {
            Route::Check(i) => {
                let seen = match &rec.payload {
                    Payload::Line(l) => Seen::log(rec.ts, l.as_bytes()),
                    Payload::Value(v) => Seen::sample(rec.ts, *v),
                };
                if let Some(c) = checkers[i].as_mut() {
                    c.observe(seen);
                }
            }
            Route::Stranger(k) => strangers[k].1.add(rec.ts),
            Route::Skip => {}
            Route::Bad => bad(&mut out, line_no, &|| "malformed labels".into()),
        }
    }
    out.results = checkers
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| Some((i, c?.finish())))
        .collect();
    out.unexpected_series = strangers
        .into_iter()
        .map(|(labels, span)| Finding {
            kind: Kind::Unexpected,
            discrepancy: true,
            series: labels,
            fragments: Vec::new(),
            first_ts: Some(span.min),
            last_ts: Some(span.max),
            expected: Some(0),
            found: Some(span.count),
            ranges: vec![(span.min, span.max, span.count)],
            detail: format!("{} entries of a series no manifest mentions", span.count),
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{
        load, FragmentMeta, Header, ManifestWriter, SeriesKey, Status, FORMAT_VERSION,
    };

    fn set(p: &[(&str, &str)]) -> LabelSet {
        LabelSet::new(
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
        .unwrap()
    }

    /// Writes `series` (labels, first ts, count, step) as records and a
    /// manifest with one acknowledged fragment per series.
    fn write_fixture(
        dir: &Path,
        series: &[(LabelSet, i64, u64)],
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let data = dir.join("data.ndjson");
        let man = dir.join("m.ndjson");
        let header = Header {
            kind: "header".into(),
            version: FORMAT_VERSION,
            run: "r1".into(),
            tool: "test".into(),
            mode: Mode::Logs,
            target: "file".into(),
            url: data.display().to_string(),
            tenant: None,
            started: "now".into(),
            hash: "xxh3-64-sum".into(),
        };
        let w = ManifestWriter::create(&man, &header).unwrap();
        let mut buf = Vec::new();
        for (id, (labels, first, n)) in series.iter().enumerate() {
            let mut lj = Vec::new();
            labels.write_json(&mut lj);
            let mut digest = crate::checksum::Digest::default();
            for k in 0..*n as i64 {
                let ts = first + k * 10;
                let line = format!("line {k} of {labels}");
                record::write_log_record(&mut buf, &lj, ts, &line);
                digest.add(crate::checksum::log_entry(ts, line.as_bytes()));
            }
            let meta = FragmentMeta {
                id: id as u64,
                series: Arc::new(SeriesKey::new(labels.clone())),
                digest,
                digest12: None,
                nan: None,
                edges: None,
                samples: None,
                values: None,
                first_ts: *first,
                last_ts: first + (*n as i64 - 1) * 10,
                step: Some(10),
                bytes: 0,
            };
            w.record(&[meta], Status::Ok, 1, false, None).unwrap();
        }
        w.finish(0, false, None).unwrap();
        std::fs::write(&data, buf).unwrap();
        (man, data)
    }

    fn check(man: &Path, data: &Path) -> FileOutcome {
        check_merging(man, data, true)
    }

    /// As `verify::run` does: failing series read with merged runs are
    /// read again with their fragments as pushed.
    fn check_refined(man: &Path, data: &Path) -> FileOutcome {
        let loaded = load(&[man.to_path_buf()], true).unwrap();
        let mode = loaded.mode.unwrap_or(Mode::Logs);
        let mut plans: Vec<Arc<SeriesPlan>> = loaded
            .series
            .iter()
            .map(|(l, f)| Arc::new(SeriesPlan::new(l.clone(), f)))
            .collect();
        let all = (0..plans.len()).collect();
        let mut out = check_file(data, mode, &plans, &all).unwrap();
        let again: BTreeSet<usize> = out
            .results
            .iter()
            .filter(|(i, r)| r.has_discrepancy() && plans[*i].has_merged())
            .map(|(i, _)| *i)
            .collect();
        for &i in &again {
            plans[i] = Arc::new(plans[i].unmerged());
        }
        let redo = check_file(data, mode, &plans, &again).unwrap();
        for (i, r) in redo.results {
            if let Some(slot) = out.results.iter_mut().find(|(j, _)| *j == i) {
                slot.1 = r;
            }
        }
        out
    }

    fn check_merging(man: &Path, data: &Path, merge: bool) -> FileOutcome {
        let loaded = load(&[man.to_path_buf()], merge).unwrap();
        let mode = loaded.mode.unwrap_or(Mode::Logs);
        let plans: Vec<Arc<SeriesPlan>> = loaded
            .series
            .iter()
            .map(|(l, f)| Arc::new(SeriesPlan::new(l.clone(), f)))
            .collect();
        let all = (0..plans.len()).collect();
        check_file(data, mode, &plans, &all).unwrap()
    }

    #[test]
    fn intact_file_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        let (man, data) = write_fixture(
            dir.path(),
            &[
                (set(&[("app", "a")]), 1000, 50),
                (set(&[("app", "b")]), 2000, 5),
            ],
        );
        let out = check(&man, &data);
        assert_eq!(out.results.len(), 2);
        for (_, r) in &out.results {
            assert!(r.findings.is_empty(), "{:?}", r.findings);
        }
        assert_eq!(out.results.iter().map(|r| r.1.found).sum::<u64>(), 55);
        assert!(out.unexpected_series.is_empty());
        assert_eq!(out.bad_lines, 0);
    }

    #[test]
    fn deleted_line_is_missing_with_its_exact_range() {
        let dir = tempfile::tempdir().unwrap();
        let (man, data) = write_fixture(dir.path(), &[(set(&[("app", "a")]), 1000, 50)]);
        let text = std::fs::read_to_string(&data).unwrap();
        // Drop the entry at ts 1000 + 17*10.
        let kept: String = text
            .lines()
            .filter(|l| !l.contains("\"ts\":\"1170\""))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(kept.lines().count(), 49);
        std::fs::write(&data, kept).unwrap();
        let out = check(&man, &data);
        let f = &out.results[0].1.findings;
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, Kind::Missing);
        assert_eq!(f[0].ranges, vec![(1170, 1170, 1)]);
        assert_eq!((f[0].expected, f[0].found), (Some(50), Some(49)));
    }

    #[test]
    fn series_not_in_the_manifest_and_bad_lines_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (man, data) = write_fixture(dir.path(), &[(set(&[("app", "a")]), 1000, 3)]);
        let mut text = std::fs::read_to_string(&data).unwrap();
        text.push_str("{\"labels\":{\"app\":\"zz\"},\"ts\":\"5\",\"line\":\"x\"}\n");
        // The same series spelled otherwise: one finding still.
        text.push_str("{\"labels\":{\"app\":\"\\u007az\"},\"ts\":\"9\",\"line\":\"y\"}\n");
        text.push_str("not json\n");
        std::fs::write(&data, text).unwrap();
        let out = check(&man, &data);
        assert!(out.results[0].1.findings.is_empty());
        assert_eq!(out.bad_lines, 1);
        let lines = std::fs::read_to_string(&data).unwrap().lines().count() as u64;
        let (at, why) = out.first_bad.clone().unwrap();
        assert_eq!(at, lines, "the bad line is the last");
        assert!(why.contains("invalid JSON"), "{why}");
        assert_eq!(out.unexpected_series.len(), 1);
        let u = &out.unexpected_series[0];
        assert_eq!(u.series, set(&[("app", "zz")]));
        assert_eq!(u.ranges, vec![(5, 9, 2)]);
    }

    /// (fails, kinds of discrepancy, every missing or unexpected
    /// (series, kind, timestamp)).
    type Verdict = (
        bool,
        BTreeSet<&'static str>,
        BTreeSet<(usize, &'static str, i64)>,
    );

    /// What a verdict says, independent of how fragments were grouped:
    /// whether it fails, the kinds of discrepancy, and per series every
    /// missing and unexpected timestamp.
    fn verdict(out: &FileOutcome) -> Verdict {
        let mut kinds = BTreeSet::new();
        let mut at = BTreeSet::new();
        let mut fails = !out.unexpected_series.is_empty();
        for (i, r) in &out.results {
            for f in r.findings.iter().filter(|f| f.discrepancy) {
                fails = true;
                kinds.insert(f.kind.as_str());
                if matches!(f.kind, Kind::Missing | Kind::Unexpected) {
                    for &(a, b, n) in &f.ranges {
                        let step = if n > 1 { (b - a) / (n as i64 - 1) } else { 1 };
                        for k in 0..n as i64 {
                            at.insert((*i, f.kind.as_str(), a + k * step));
                        }
                    }
                }
            }
        }
        (fails, kinds, at)
    }

    /// Merging small fragments on loading changes no verdict. Each case
    /// pushes series in fragments of one to three entries (some refused,
    /// unknown or sent twice), sometimes twice by two runs with their own
    /// cuts (a re-push, which the store keeps twice), into a file that
    /// then loses, alters, repeats or gains up to three entries. Read with
    /// merged runs it passes or fails as read fragment by fragment, and
    /// with failing series read again unmerged (as `verify::run` does),
    /// down to the kinds and every missing and unexpected timestamp.
    #[test]
    fn merging_small_fragments_changes_no_verdict() {
        use crate::batch::{BatchLimits, Batcher, Series};
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let (man, data) = (dir.path().join("m.ndjson"), dir.path().join("d.ndjson"));
        let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
        let (mut failed_cases, mut merged_runs, mut split_runs) = (0, 0, 0);
        for case in 0..400 {
            let _ = std::fs::remove_file(&man);
            let mode = if case % 2 == 0 {
                Mode::Logs
            } else {
                Mode::Metrics
            };
            // Per series, its entries (ts, line): mostly on a grid.
            let timelines: Vec<Vec<(i64, String)>> = (0..rng.random_range(1..4))
                .map(|_| {
                    let step = 10 * rng.random_range(1..3i64);
                    let mut ts = 1000;
                    (0..rng.random_range(1..30))
                        .map(|_| {
                            ts += if rng.random_bool(0.05) {
                                step / 2
                            } else {
                                step
                            };
                            (ts, format!("{}", ts as f64 / 7.0))
                        })
                        .collect()
                })
                .collect();
            // The store's copy: what each run's fragments left there.
            let mut lines: Vec<(usize, i64, String)> = Vec::new();
            let runs = if rng.random_bool(0.3) { 2 } else { 1 };
            for run in 0..runs {
                let header = Header {
                    kind: "header".into(),
                    version: FORMAT_VERSION,
                    run: format!("r{case}-{run}"),
                    tool: "test".into(),
                    mode,
                    target: "file".into(),
                    url: "x".into(),
                    tenant: None,
                    started: "now".into(),
                    hash: "xxh3-64-sum".into(),
                };
                let w = ManifestWriter::create(&man, &header).unwrap();
                let mut next_id = 0u64;
                for (si, timeline) in timelines.iter().enumerate() {
                    let labels = set(&[("s", &format!("{si}"))]);
                    let series = Arc::new(Series::new(SeriesKey::new(labels), 0));
                    let mut b = Batcher::new(
                        mode,
                        BatchLimits {
                            fragment_size: 1 << 20,
                            fragments_per_message: Some(1),
                            max_message_bytes: 1 << 30,
                            linger: std::time::Duration::from_secs(3600),
                        },
                        1,
                    );
                    // A second run re-pushes all or the start of the series.
                    let n = if run == 0 {
                        timeline.len()
                    } else {
                        rng.random_range(1..=timeline.len())
                    };
                    let mut at = 0;
                    while at < n {
                        let size = rng.random_range(1..4).min(n - at);
                        let mut out = Vec::new();
                        for (ts, line) in &timeline[at..at + size] {
                            if mode == Mode::Logs {
                                let h = crate::checksum::log_entry(*ts, line.as_bytes());
                                b.push_line(&series, 0, *ts, line, h, &mut out);
                            } else {
                                let v: f64 = line.parse().unwrap();
                                let h = crate::checksum::metric_sample(*ts, v);
                                b.push_value(&series, 0, *ts, v, h, &mut out);
                            }
                        }
                        b.flush(&mut out);
                        let mut meta = out.remove(0).metas.remove(0);
                        meta.id = next_id;
                        next_id += 1;
                        let (status, maybe_dup, kept) = match rng.random_range(0..20) {
                            0 => (Status::Rejected, false, rng.random_bool(0.5)),
                            1 => (Status::Unknown, false, rng.random_bool(0.5)),
                            2 => (Status::Ok, true, true),
                            _ => (Status::Ok, false, true),
                        };
                        w.record(&[meta.clone()], Status::Pending, 0, false, None)
                            .unwrap();
                        w.record_outcome(&[meta], status, 1, maybe_dup, None)
                            .unwrap();
                        if kept {
                            lines.extend(
                                timeline[at..at + size]
                                    .iter()
                                    .map(|(t, l)| (si, *t, l.clone())),
                            );
                        }
                        at += size;
                    }
                }
                w.finish(0, false, None).unwrap();
            }
            // Then up to three things happen to the store's copy.
            for _ in 0..rng.random_range(1..4) {
                if lines.is_empty() {
                    break;
                }
                let i = rng.random_range(0..lines.len());
                match rng.random_range(0..5) {
                    0 => {
                        lines.remove(i);
                    }
                    1 => lines[i].2.push('1'),
                    2 => lines.insert(i, lines[i].clone()),
                    3 => {
                        let (s, t, _) = lines[i].clone();
                        lines.insert(i + 1, (s, t + 1, "5".into()));
                    }
                    _ => {}
                }
            }
            let mut buf = Vec::new();
            for (si, ts, line) in &lines {
                let mut lj = Vec::new();
                set(&[("s", &format!("{si}"))]).write_json(&mut lj);
                match mode {
                    Mode::Logs => record::write_log_record(&mut buf, &lj, *ts, line),
                    Mode::Metrics => {
                        record::write_metric_record(&mut buf, &lj, *ts, line.parse().unwrap())
                    }
                }
            }
            std::fs::write(&data, buf).unwrap();
            let loaded = load(std::slice::from_ref(&man), true).unwrap();
            let merged_here = loaded
                .series
                .values()
                .flatten()
                .filter(|f| f.parts() > 1)
                .count();
            merged_runs += merged_here;
            if runs == 2 && merged_here == 0 {
                split_runs += 1;
            }
            let merged = check_merging(&man, &data, true);
            let single = check_merging(&man, &data, false);
            // Merged runs alone already pass or fail alike...
            assert_eq!(verdict(&merged).0, verdict(&single).0, "case {case}");
            // ...and a failing series, read again unmerged, says the same.
            let refined = check_refined(&man, &data);
            assert_eq!(verdict(&refined), verdict(&single), "case {case}");
            failed_cases += usize::from(verdict(&single).0);
        }
        // The mutations are seen: many cases fail, not all; runs are
        // merged, and split where two runs share a series' time.
        assert!(
            (100..395).contains(&failed_cases),
            "{failed_cases} of 400 fail"
        );
        assert!(merged_runs > 200, "only {merged_runs} merged runs");
        assert!(split_runs > 20, "only {split_runs} re-pushes split");
    }
}
