//! Reading manifests back: every fragment with its final status, grouped
//! by series, small ones merged into runs (see `merge`).

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::merge::{closed, split_shared_runs, Merged};
use super::{
    Edges, FragmentLine, Header, ManifestError, NanInfo, OutcomeLine, SeriesLine, Status, Trailer,
    FORMAT_VERSION,
};
use crate::checksum::{Digest, ValueSums};
use crate::labels::LabelSet;
use crate::record::Mode;
use crate::series::{Ids, PreHashed};

/// A fragment as read back from manifests, with its final status.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub run: Arc<str>,
    pub id: u64,
    pub status: Status,
    pub count: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    pub step: Option<i64>,
    pub checksum: u64,
    pub checksum12: Option<u64>,
    pub nan: Option<NanInfo>,
    /// Boxed: log fragments, which have none, are kept by the hundred
    /// thousand while verifying.
    pub values: Option<Box<ValueSums>>,
    /// Boxed for the same reason.
    pub edges: Option<Box<Edges>>,
    pub maybe_duplicated: bool,
    /// Attempts at sending it, as recorded (0 when not known: left
    /// pending, or written by a version that did not record them).
    pub attempts: u32,
    pub reason: Option<String>,
    /// Set when consecutive small fragments were read as one (see
    /// `Fragment::absorb`).
    pub merged: Option<Box<Merged>>,
}

impl Fragment {
    /// The fragment as a store that drops NaN values holds it: without its
    /// NaN samples, and with no step (its timestamps are no longer evenly
    /// spaced). Unchanged when it has none.
    pub fn without_nan(mut self) -> Fragment {
        if let Some(n) = self.nan.take() {
            self.count -= n.count.min(self.count);
            self.checksum = n.checksum;
            self.checksum12 = Some(n.checksum12);
            self.step = None;
        }
        self
    }
}

/// Every fragment of a set of manifests, grouped by series.
#[derive(Debug, Default)]
pub struct Loaded {
    pub mode: Option<Mode>,
    pub headers: Vec<Header>,
    /// Runs that have a header but no trailer: the pusher did not finish.
    pub unfinished_runs: Vec<String>,
    /// Runs whose trailer counts late log entries not checked for repeats.
    pub late_unchecked: Vec<(String, u64)>,
    /// Fragments per series, sorted by first timestamp.
    pub series: BTreeMap<LabelSet, Vec<Fragment>>,
}

impl Loaded {
    pub fn fragment_count(&self) -> usize {
        self.series.values().map(Vec::len).sum()
    }

    pub fn entries_with_status(&self, status: Status) -> u64 {
        self.series
            .values()
            .flatten()
            .filter(|f| f.status == status)
            .map(|f| f.count)
            .sum()
    }
}

#[derive(Deserialize)]
struct AnyLine {
    kind: String,
}

/// Where a whole header line starts inside a malformed line, if one does
/// (the last such place: a label `kind="header"` can look like one).
fn glued_header(line: &str) -> Option<(usize, AnyLine)> {
    line.rmatch_indices(r#"{"kind":"header""#)
        .map(|(at, _)| at)
        .filter(|&at| at > 0)
        .find(|&at| serde_json::from_str::<Header>(&line[at..]).is_ok())
        .map(|at| {
            let kind = AnyLine {
                kind: "header".into(),
            };
            (at, kind)
        })
}

fn intern_run(run_ids: &mut HashMap<String, Arc<str>>, run: &str) -> Arc<str> {
    if let Some(r) = run_ids.get(run) {
        return r.clone();
    }
    let r: Arc<str> = Arc::from(run);
    run_ids.insert(run.to_string(), r.clone());
    r
}

/// The sums of a fragment's inline samples, once they are shown to be
/// the fragment's entries (their checksum is the fragment's).
fn inline_sums(samples: &[[String; 2]], count: u64, checksum: u64) -> Result<ValueSums, String> {
    let mut parsed = Vec::with_capacity(samples.len());
    let mut digest = Digest::default();
    for [t, v] in samples {
        let t = parse_ts_field(t)?;
        let v: f64 = v
            .parse()
            .map_err(|_| format!("invalid sample value {v:?}"))?;
        digest.add(crate::checksum::metric_sample(t, v));
        parsed.push((t, v));
    }
    if digest.count != count || digest.sum != checksum {
        return Err("\"samples\" do not match the fragment's count and checksum".into());
    }
    // As from a `values` line, which does not record `abs`.
    Ok(ValueSums {
        abs: 0.0,
        ..ValueSums::of(parsed.into_iter())
    })
}

fn parse_ts_field(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .map_err(|_| format!("invalid timestamp {s:?}"))
}

/// Label sets by number: a version 1 manifest repeats them on every line,
/// and a copy per fragment dominated memory.
#[derive(Default)]
struct SeriesIndex {
    /// Series numbers by a hash of their labels; the label sets live in
    /// `list` only (a second copy as map keys was a tenth of verify's
    /// memory with many series).
    ids: HashMap<u64, Ids, BuildHasherDefault<PreHashed>>,
    list: Vec<LabelSet>,
}

impl SeriesIndex {
    fn intern(&mut self, labels: LabelSet) -> u32 {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(&labels);
        let id = self.list.len() as u32;
        match self.ids.entry(hash) {
            Entry::Vacant(e) => {
                e.insert(Ids::One(id));
            }
            Entry::Occupied(mut e) => {
                let list = &self.list;
                if let Some(&known) = e
                    .get()
                    .as_slice()
                    .iter()
                    .find(|&&i| list[i as usize] == labels)
                {
                    return known;
                }
                e.get_mut().push(id);
            }
        }
        self.list.push(labels);
        id
    }
}

/// Which fragments of a run have their final status, by id.
#[derive(Default)]
struct Settled {
    bits: Vec<u64>,
    /// Ids too large for `bits` (not made by looker-push).
    big: std::collections::HashSet<u64>,
}

impl Settled {
    fn contains(&self, id: u64) -> bool {
        match usize::try_from(id / 64) {
            Ok(w) if id < 1 << 32 => self.bits.get(w).is_some_and(|b| b >> (id % 64) & 1 == 1),
            _ => self.big.contains(&id),
        }
    }

    fn insert(&mut self, id: u64) {
        if id < 1 << 32 {
            let w = (id / 64) as usize;
            if self.bits.len() <= w {
                self.bits.resize(w + 1, 0);
            }
            self.bits[w] |= 1 << (id % 64);
        } else {
            self.big.insert(id);
        }
    }
}

/// Fragments with their final status, per series, as they are read.
struct Finals {
    done: Vec<Vec<Fragment>>,
    /// Per series, the run of small fragments being merged.
    open: Vec<Option<Fragment>>,
    merge_small: bool,
}

/// Appends to a series' fragments, the first one without the three spare
/// slots a Vec's first growth reserves: with many series of one fragment
/// each (100k series of 20 samples) those were half of verify's memory.
fn push_fragment(v: &mut Vec<Fragment>, f: Fragment) {
    if v.capacity() == 0 {
        v.reserve_exact(1);
    }
    v.push(f);
}

impl Finals {
    fn settle(&mut self, series: u32, frag: Fragment) {
        let i = series as usize;
        if self.done.len() <= i {
            self.done.resize_with(i + 1, Vec::new);
            self.open.resize_with(i + 1, || None);
        }
        if self.merge_small && frag.mergeable() {
            if let Some(run) = self.open[i].as_mut() {
                if run.absorb(&frag) {
                    return;
                }
            }
            if let Some(run) = self.open[i].replace(frag) {
                push_fragment(&mut self.done[i], closed(run));
            }
        } else {
            // Anything else of the series ends its run: a merged run never
            // spans a fragment that is not in it.
            if let Some(run) = self.open[i].take() {
                push_fragment(&mut self.done[i], closed(run));
            }
            push_fragment(&mut self.done[i], frag);
        }
    }
}

/// Reads and merges manifests. A fragment's final status (its outcome, or
/// a line with a final status) is its last word: lines about it after
/// that are ignored, so a manifest concatenated twice counts once. A
/// fragment still `pending` at the end becomes `unknown`.
///
/// With `merge_small`, consecutive small acknowledged fragments of a
/// series on one time grid are read as one (`Fragment::absorb`), as they
/// are read, so memory follows the merged runs, not the fragments. Only
/// for stores that keep values exactly: a merged run's checksums are
/// exact, but its value sums are kept only while its parts share a scale,
/// and the tolerance of a store that rounds values (VictoriaMetrics)
/// would grow with the run.
pub fn load(paths: &[PathBuf], merge_small: bool) -> Result<Loaded, ManifestError> {
    let mut out = Loaded::default();
    let mut finals = Finals {
        done: Vec::new(),
        open: Vec::new(),
        merge_small,
    };
    let mut settled: HashMap<Arc<str>, Settled> = HashMap::new();
    // (run, id) -> (series, fragment) of fragments without a final status.
    let mut frags: HashMap<(Arc<str>, u64), (u32, Fragment)> = HashMap::new();
    let mut series = SeriesIndex::default();
    let mut runs: HashMap<String, bool> = HashMap::new();
    let mut run_ids: HashMap<String, Arc<str>> = HashMap::new();
    let mut versions: HashMap<String, u32> = HashMap::new();
    // (run, series number) -> series, from `series` lines (version 2).
    let mut by_sid: HashMap<(Arc<str>, u64), u32> = HashMap::new();
    for path in paths {
        let file = File::open(path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })?;
        let mut saw_header = false;
        let mut reader = BufReader::new(file);
        let mut raw = Vec::new();
        let mut lineno = 0u64;
        // A malformed line, forgiven if a header or the end follows.
        let mut cut: Option<ManifestError> = None;
        loop {
            raw.clear();
            let n = reader
                .read_until(b'\n', &mut raw)
                .map_err(|source| ManifestError::Io {
                    path: path.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            lineno += 1;
            let perr = |reason: String| ManifestError::Parse {
                path: path.clone(),
                line: lineno,
                reason,
            };
            let ended = raw.last() == Some(&b'\n');
            if ended {
                raw.pop();
            }
            let line = match std::str::from_utf8(&raw) {
                Ok(l) => l,
                // Cut inside a multi-byte character by a crash (the JSON
                // is then cut short too).
                Err(e) if e.error_len().is_none() => continue,
                Err(e) => return Err(perr(format!("not UTF-8: {e}"))),
            };
            if line.trim().is_empty() {
                continue;
            }
            let mut line = line;
            let kind: AnyLine = match serde_json::from_str(line) {
                Ok(k) => k,
                Err(e) => match glued_header(line) {
                    // A killed run's manifest and another concatenated
                    // (`cat a b`): its cut last line runs into b's header.
                    Some((at, k)) => {
                        line = &line[at..];
                        k
                    }
                    // A line cut short by a crash is expected: the file's
                    // last one, or one a later run appended after (its
                    // header comes next). Cut inside a number, it is
                    // "invalid", not "EOF".
                    None if e.is_eof() || !ended => continue,
                    None if !saw_header => {
                        return Err(ManifestError::NoHeader { path: path.clone() })
                    }
                    // Two malformed lines in a row are no crash's doing:
                    // the first is the error.
                    None => match cut.take() {
                        Some(first) => return Err(first),
                        None => {
                            cut = Some(perr(crate::record::serde_reason(&e)));
                            continue;
                        }
                    },
                },
            };

            if let Some(e) = cut.take() {
                if kind.kind != "header" {
                    return Err(e);
                }
            }
            match kind.kind.as_str() {
                "header" => {
                    let h: Header = serde_json::from_str(line)
                        .map_err(|e| perr(crate::record::serde_reason(&e)))?;
                    if h.version > FORMAT_VERSION {
                        return Err(perr(format!(
                            "manifest format version {} is newer than this tool's {}",
                            h.version, FORMAT_VERSION
                        )));
                    }
                    match out.mode {
                        None => out.mode = Some(h.mode),
                        Some(m) if m != h.mode => return Err(ManifestError::MixedModes),
                        _ => {}
                    }
                    runs.entry(h.run.clone()).or_insert(false);
                    versions.insert(h.run.clone(), h.version);
                    saw_header = true;
                    out.headers.push(h);
                }
                "trailer" => {
                    let t: Trailer = serde_json::from_str(line)
                        .map_err(|e| perr(crate::record::serde_reason(&e)))?;
                    if t.late_unchecked > 0 {
                        out.late_unchecked.push((t.run.clone(), t.late_unchecked));
                    }
                    runs.insert(t.run, true);
                }
                "series" => {
                    if !saw_header {
                        return Err(ManifestError::NoHeader { path: path.clone() });
                    }
                    let l: SeriesLine = serde_json::from_str(line)
                        .map_err(|e| perr(crate::record::serde_reason(&e)))?;
                    let run = intern_run(&mut run_ids, &l.run);
                    by_sid.insert((run, l.sid), series.intern(l.labels));
                }
                "fragment" => {
                    if !saw_header {
                        return Err(ManifestError::NoHeader { path: path.clone() });
                    }
                    let f: FragmentLine = serde_json::from_str(line)
                        .map_err(|e| perr(crate::record::serde_reason(&e)))?;
                    let run = intern_run(&mut run_ids, &f.run);
                    // Only version 2 refers to series by number.
                    let v2 = f.sid.is_some() || versions.get(&f.run).is_some_and(|&v| v >= 2);
                    let metrics = out.mode == Some(Mode::Metrics);
                    let idx = match (f.labels, f.sid) {
                        (Some(labels), _) => series.intern(labels),
                        (None, Some(sid)) => {
                            *by_sid.get(&(run.clone(), sid)).ok_or_else(|| {
                                perr(format!("series {sid} of run {} is not defined by an earlier \"series\" line", f.run))
                            })?
                        }
                        (None, None) => return Err(perr("fragment without \"labels\" or \"sid\"".into())),
                    };
                    let hex =
                        |c: &Option<String>, what: &str| -> Result<Option<u64>, ManifestError> {
                            match c {
                                Some(c) => Digest::parse_hex(c)
                                    .map(Some)
                                    .ok_or_else(|| perr(format!("invalid {what} {c:?}"))),
                                None => Ok(None),
                            }
                        };
                    let checksum = Digest::parse_hex(&f.checksum)
                        .ok_or_else(|| perr(format!("invalid checksum {:?}", f.checksum)))?;
                    // Version 2 leaves out a checksum12 equal to the checksum.
                    let checksum12 = match hex(&f.checksum12, "checksum12")? {
                        None if v2 && metrics => Some(checksum),
                        c => c,
                    };
                    let nan = match (
                        f.nan,
                        hex(&f.checksum_without_nan, "checksum_without_nan")?,
                        hex(&f.checksum12_without_nan, "checksum12_without_nan")?,
                    ) {
                        (Some(count), Some(checksum), Some(checksum12)) if count > 0 => {
                            Some(NanInfo {
                                count,
                                checksum,
                                checksum12,
                            })
                        }
                        (Some(count), Some(checksum), None) if count > 0 && v2 => Some(NanInfo {
                            count,
                            checksum,
                            checksum12: checksum,
                        }),
                        (Some(count), _, _) if count > 0 => {
                            return Err(perr("\"nan\" without its checksums".into()))
                        }
                        _ => None,
                    };
                    let first_ts = parse_ts_field(&f.first_ts).map_err(perr)?;
                    let last_ts = match &f.last_ts {
                        Some(t) => parse_ts_field(t).map_err(perr)?,
                        None => first_ts,
                    };
                    let values = match (&f.samples, &f.values) {
                        (Some(samples), _) => Some(Box::new(
                            inline_sums(samples, f.count, checksum).map_err(perr)?,
                        )),
                        (None, Some(v)) => Some(Box::new(v.sums(f.count).ok_or_else(|| {
                            perr(format!("invalid \"values\" {:?} {:?}", v.ts, v.sum))
                        })?)),
                        (None, None) => None,
                    };
                    let edges = match &f.edges {
                        Some(e) => Some(Box::new(e.edges().ok_or_else(|| {
                            perr(format!("invalid \"edges\" {:?} {:?}", e.first, e.last))
                        })?)),
                        // Version 2 leaves out the edges of a one-entry
                        // log fragment: that entry, whose hash is the checksum.
                        None if v2 && !metrics && f.count == 1 => Some(Box::new(Edges {
                            first: vec![checksum],
                            last: vec![checksum],
                        })),
                        None => None,
                    };
                    let frag = Fragment {
                        run: run.clone(),
                        id: f.id,
                        status: f.status,
                        count: f.count,
                        first_ts,
                        last_ts,
                        step: match &f.step {
                            Some(s) => Some(parse_ts_field(s).map_err(perr)?),
                            None => None,
                        },
                        checksum,
                        checksum12,
                        nan,
                        values,
                        edges,
                        maybe_duplicated: f.maybe_duplicated,
                        attempts: f.attempts,
                        reason: f.reason,
                        merged: None,
                    };
                    if settled.get(&run).is_some_and(|s| s.contains(f.id)) {
                        continue;
                    }
                    if frag.status == Status::Pending {
                        frags.insert((run, f.id), (idx, frag));
                    } else {
                        frags.remove(&(run.clone(), f.id));
                        settled.entry(run).or_default().insert(f.id);
                        finals.settle(idx, frag);
                    }
                }
                "outcome" => {
                    let o: OutcomeLine = serde_json::from_str(line)
                        .map_err(|e| perr(crate::record::serde_reason(&e)))?;
                    let run = intern_run(&mut run_ids, &o.run);
                    if o.status == Status::Pending {
                        continue;
                    }
                    for id in o.ids {
                        // A fragment not described (a manifest filtered by
                        // hand): the outcome claims nothing about others.
                        let Some((idx, mut frag)) = frags.remove(&(run.clone(), id)) else {
                            continue;
                        };
                        frag.status = o.status;
                        frag.maybe_duplicated = o.maybe_duplicated;
                        frag.attempts = o.attempts;
                        frag.reason.clone_from(&o.reason);
                        settled.entry(run.clone()).or_default().insert(id);
                        finals.settle(idx, frag);
                    }
                }
                other => return Err(perr(format!("unknown line kind {other:?}"))),
            }
        }
        if let Some(e) = cut {
            return Err(e);
        }
        if !saw_header {
            return Err(ManifestError::NoHeader { path: path.clone() });
        }
    }
    // The index is no longer needed, only the label sets.
    let series_list = series.list;
    for (_, (sid, mut frag)) in frags {
        frag.status = Status::Unknown;
        frag.reason
            .get_or_insert_with(|| "no outcome recorded (the push did not finish)".into());
        finals.settle(sid, frag);
    }
    let Finals { mut done, open, .. } = finals;
    done.resize_with(series_list.len(), Vec::new);
    for (i, run) in open.into_iter().enumerate() {
        if let Some(run) = run {
            push_fragment(&mut done[i], closed(run));
        }
    }
    for (labels, frags) in series_list.into_iter().zip(done) {
        if !frags.is_empty() {
            out.series.insert(labels, split_shared_runs(frags));
        }
    }
    for v in out.series.values_mut() {
        v.sort_by_key(|f| (f.first_ts, f.last_ts));
    }
    let mut unfinished: Vec<String> = runs
        .into_iter()
        .filter(|(_, done)| !done)
        .map(|(r, _)| r)
        .collect();
    unfinished.sort();
    out.unfinished_runs = unfinished;
    Ok(out)
}
