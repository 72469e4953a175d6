//! Attribution of read-back entries to manifest fragments, and verdicts.
//!
//! Pure logic: readers feed a [`SeriesChecker`] one entry at a time
//! (timestamp, exact hash, 12-digit hash, value) in time order, and it keeps only
//! per-group accumulators, so memory does not grow with the data read.
//!
//! Fragments of a series whose time ranges overlap are checked together as
//! one group (their expected counts and checksums add up): entries cannot be
//! attributed to one of several overlapping fragments by timestamp alone.
//! Fragments with identical contents (same range, count and checksum, e.g.
//! the same input pushed by two runs) count once, because stores deduplicate
//! identical entries and the checker does too.

use std::sync::Arc;

use crate::checksum::{self, Digest, ValueSums};
use crate::labels::LabelSet;
use crate::manifest::{overlap_groups, Edges, Fragment, Status};

/// Largest step grid tracked per group, in entries. A fragment is one push
/// batch, far smaller than this; beyond it the checker falls back to counts.
const MAX_GRID_BITS: u64 = 1 << 27;

/// How many non-acknowledged contents of one group are tried in every
/// combination when explaining what was found (2^N sums).
const MAX_SUBSET_UNITS: usize = 12;

/// One entry as a store returned it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub ts: i64,
    /// The exact hash (`checksum::log_entry` or `checksum::metric_sample`).
    pub hash: u64,
    /// The hash with the value rounded to 12 significant digits (metrics),
    /// or `hash` again (logs).
    pub hash12: u64,
    /// Metrics: the value.
    pub value: Option<f64>,
}

impl Seen {
    pub fn log(ts: i64, line: &[u8]) -> Seen {
        let hash = checksum::log_entry(ts, line);
        Seen {
            ts,
            hash,
            hash12: hash,
            value: None,
        }
    }

    pub fn sample(ts: i64, value: f64) -> Seen {
        Seen {
            ts,
            hash: checksum::metric_sample(ts, value),
            hash12: checksum::metric_sample_12(ts, value),
            value: Some(value),
        }
    }
}

/// How exactly a store keeps metric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Bit for bit (Prometheus, the file sink): only exact matches pass.
    #[default]
    Exact,
    /// As decimals (VictoriaMetrics): values rounded to 12 significant
    /// digits, or to an exponent shared with larger values of the series,
    /// pass with a note.
    Decimal,
}

/// Adds an entry's value to value sums (logs have none).
fn add_value(sums: &mut Option<ValueSums>, e: &Seen) {
    match (sums.as_mut(), e.value) {
        (Some(s), Some(v)) => s.add(e.ts, v),
        _ => *sums = None,
    }
}

/// What a finding says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Missing,
    Altered,
    Unexpected,
    Duplicated,
    Present,
    Absent,
    Partial,
    Note,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Altered => "altered",
            Kind::Unexpected => "unexpected",
            Kind::Duplicated => "duplicated",
            Kind::Present => "present",
            Kind::Absent => "absent",
            Kind::Partial => "partial",
            Kind::Note => "note",
        }
    }
}

/// A fragment a finding is about: (run, id, and for a run of merged
/// fragments its last id and how many it holds).
pub type FragRef = (Arc<str>, u64, Option<(u64, u64)>);

/// One observation about a series, a fragment or a group of fragments.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: Kind,
    /// False for informational findings, which never fail a verification.
    pub discrepancy: bool,
    pub series: LabelSet,
    /// (run, fragment id) of every fragment the finding is about.
    pub fragments: Vec<FragRef>,
    /// In the manifest's native unit (ns for logs, ms for metrics).
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub expected: Option<u64>,
    pub found: Option<u64>,
    /// Exact sub-ranges `[a, b]` (inclusive) with the number of entries.
    pub ranges: Vec<(i64, i64, u64)>,
    pub detail: String,
}

impl Finding {
    fn new(kind: Kind, discrepancy: bool, series: &LabelSet) -> Finding {
        Finding {
            kind,
            discrepancy,
            series: series.clone(),
            fragments: Vec::new(),
            first_ts: None,
            last_ts: None,
            expected: None,
            found: None,
            ranges: Vec::new(),
            detail: String::new(),
        }
    }
}

/// Fragments of identical content: expected once, whatever their number.
#[derive(Debug, Clone)]
struct Unit {
    count: u64,
    checksum: u64,
    checksum12: Option<u64>,
    values: Option<Box<ValueSums>>,
    /// The time range of its fragments (identical fragments share it).
    first_ts: i64,
    last_ts: i64,
    /// Logs: the checksums of its entries at `first_ts` and `last_ts`.
    edges: Option<Box<Edges>>,
    ok: bool,
    /// Indices into the group's fragments.
    frags: Vec<usize>,
}

impl Unit {
    fn digest(&self) -> Digest {
        Digest {
            count: self.count,
            sum: self.checksum,
        }
    }
}

/// Fragments of one series whose ranges overlap, checked as one.
#[derive(Debug, Clone)]
pub struct Group {
    pub first_ts: i64,
    pub last_ts: i64,
    pub fragments: Vec<Fragment>,
    units: Vec<Unit>,
    /// Set when the group is one content whose entries are exactly `step`
    /// apart: then every expected timestamp is known.
    grid: Option<Grid>,
    /// Ranges where a store that keeps duplicates may legitimately hold an
    /// entry more than once: fragments that may have been sent twice, were
    /// not acknowledged (and maybe retried), or were pushed by several runs.
    repeat_ranges: Vec<(i64, i64)>,
    /// Several acknowledged contents that all have edge checksums: their
    /// first and last timestamps, sorted, at which the checker keeps the
    /// checksums of what it finds (see [`judge_overlap_by_edges`]).
    edge_ts: Vec<i64>,
    /// Units by first timestamp, for finding those whose range holds an
    /// entry without trying each (a long stream pushed twice makes one
    /// group of thousands).
    by_first: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Grid {
    step: i64,
    len: u64,
}

impl Group {
    fn from_fragments(mut fragments: Vec<Fragment>) -> Group {
        // Most groups hold one fragment (a paced run makes hundreds of
        // thousands); a Vec grown by push would reserve four.
        fragments.shrink_to_fit();
        let first_ts = fragments.iter().map(|f| f.first_ts).min().unwrap_or(0);
        let last_ts = fragments.iter().map(|f| f.last_ts).max().unwrap_or(0);
        let mut units: Vec<Unit> = Vec::new();
        for (i, f) in fragments.iter().enumerate() {
            let same = units.iter_mut().find(|u| {
                let g = &fragments[u.frags[0]];
                g.first_ts == f.first_ts
                    && g.last_ts == f.last_ts
                    && u.count == f.count
                    && u.checksum == f.checksum
            });
            match same {
                Some(u) => {
                    u.frags.push(i);
                    u.ok |= f.status == Status::Ok;
                    if u.checksum12.is_none() {
                        u.checksum12 = f.checksum12;
                    }
                    if u.values.is_none() {
                        u.values.clone_from(&f.values);
                    }
                    if u.edges.is_none() {
                        u.edges.clone_from(&f.edges);
                    }
                }
                None => units.push(Unit {
                    count: f.count,
                    checksum: f.checksum,
                    checksum12: f.checksum12,
                    values: f.values.clone(),
                    first_ts: f.first_ts,
                    last_ts: f.last_ts,
                    edges: f.edges.clone(),
                    ok: f.status == Status::Ok,
                    frags: vec![i],
                }),
            }
        }
        units.shrink_to_fit();
        let grid = match (units.as_slice(), fragments.first()) {
            ([u], Some(f)) => f.step.and_then(|step| {
                // Trust the step only if it is consistent with the range and
                // count; otherwise the grid would name wrong timestamps.
                let span = f.last_ts.checked_sub(f.first_ts)?;
                if step <= 0 || span % step != 0 {
                    return None;
                }
                let len = (span / step) as u64 + 1;
                (len == u.count && len <= MAX_GRID_BITS).then_some(Grid { step, len })
            }),
            _ => None,
        };
        let mut repeat_ranges = Vec::new();
        let overlapping = units.len() > 1;
        for u in &units {
            for &i in &u.frags {
                let f = &fragments[i];
                if f.maybe_duplicated || f.status != Status::Ok || u.frags.len() > 1 || overlapping
                {
                    repeat_ranges.push((f.first_ts, f.last_ts));
                }
            }
        }
        let acked = || units.iter().filter(|u| u.ok);
        let edge_ts = if acked().count() > 1 && acked().all(|u| u.edges.is_some()) {
            let mut ts: Vec<i64> = acked().flat_map(|u| [u.first_ts, u.last_ts]).collect();
            ts.sort_unstable();
            ts.dedup();
            ts
        } else {
            Vec::new()
        };
        let mut by_first: Vec<usize> = (0..units.len()).collect();
        by_first.sort_by_key(|&u| units[u].first_ts);
        Group {
            first_ts,
            last_ts,
            fragments,
            units,
            grid,
            repeat_ranges,
            edge_ts,
            by_first,
        }
    }

    fn frag_ids(&self, units: &[usize]) -> Vec<FragRef> {
        let mut ids = Vec::new();
        for &u in units {
            for &i in &self.units[u].frags {
                let f = &self.fragments[i];
                ids.push((f.run.clone(), f.id, f.merged_ids()));
            }
        }
        ids
    }

    fn all_ids(&self) -> Vec<FragRef> {
        self.fragments
            .iter()
            .map(|f| (f.run.clone(), f.id, f.merged_ids()))
            .collect()
    }

    /// Acknowledged entries of this group (distinct contents only).
    pub fn expected(&self) -> u64 {
        self.units.iter().filter(|u| u.ok).map(|u| u.count).sum()
    }
}

/// What to read for one series, and how found entries are attributed.
#[derive(Debug, Clone)]
pub struct SeriesPlan {
    pub labels: LabelSet,
    /// Sorted by range, non-overlapping.
    pub groups: Vec<Group>,
}

impl SeriesPlan {
    pub fn new(labels: LabelSet, fragments: &[Fragment]) -> SeriesPlan {
        SeriesPlan::from_fragments(labels, fragments.to_vec())
    }

    /// As [`SeriesPlan::new`], taking the fragments: with many series a
    /// copy of each series' fragments was a third of verify's peak memory.
    pub fn from_fragments(labels: LabelSet, mut frags: Vec<Fragment>) -> SeriesPlan {
        for f in &mut frags {
            // A reversed range cannot come from the pusher; read it as the
            // range it spans rather than as an empty one that hides entries.
            if f.first_ts > f.last_ts {
                std::mem::swap(&mut f.first_ts, &mut f.last_ts);
            }
        }
        let groups = overlap_groups(frags)
            .into_iter()
            .map(Group::from_fragments)
            .collect();
        SeriesPlan { labels, groups }
    }

    /// Whether some fragments were read as a merged run.
    pub fn has_merged(&self) -> bool {
        self.groups
            .iter()
            .flat_map(|g| &g.fragments)
            .any(|f| f.merged.is_some())
    }

    /// The plan with merged runs split into the fragments as pushed.
    pub fn unmerged(&self) -> SeriesPlan {
        let frags: Vec<Fragment> = self
            .groups
            .iter()
            .flat_map(|g| g.fragments.iter().cloned())
            .flat_map(Fragment::split)
            .collect();
        SeriesPlan::new(self.labels.clone(), &frags)
    }

    /// The inclusive range to read: from the first to the last expected entry.
    pub fn range(&self) -> Option<(i64, i64)> {
        Some((self.groups.first()?.first_ts, self.groups.last()?.last_ts))
    }

    pub fn expected(&self) -> u64 {
        self.groups.iter().map(Group::expected).sum()
    }

    /// Manifest fragments, counting each part of a merged run.
    pub fn fragment_count(&self) -> usize {
        self.groups
            .iter()
            .flat_map(|g| &g.fragments)
            .map(|f| f.parts() as usize)
            .sum()
    }

    /// (first, last, expected entries of any status) per group, for sizing reads.
    pub fn spans(&self) -> Vec<(i64, i64, u64)> {
        self.groups
            .iter()
            .map(|g| (g.first_ts, g.last_ts, g.units.iter().map(|u| u.count).sum()))
            .collect()
    }

    fn group_of(&self, ts: i64) -> Option<usize> {
        let i = self.groups.partition_point(|g| g.first_ts <= ts);
        let g = self.groups.get(i.checked_sub(1)?)?;
        (ts <= g.last_ts).then_some(i - 1)
    }
}

/// Count and extent of a set of timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub count: u64,
    pub min: i64,
    pub max: i64,
}

impl Span {
    pub fn add(&mut self, ts: i64) {
        if self.count == 0 {
            self.min = ts;
            self.max = ts;
        } else {
            self.min = self.min.min(ts);
            self.max = self.max.max(ts);
        }
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct GroupAcc {
    /// Entries without repeats.
    found: Digest,
    found12: u64,
    /// Value sums of the entries without repeats, at each scale one of
    /// the group's contents was recorded with (fragments differ in scale;
    /// any combination of same-scale contents can then be compared).
    found_values: Vec<Option<ValueSums>>,
    /// Every entry, repeats included (the input itself may repeat an entry).
    raw: Digest,
    raw12: u64,
    dups: Span,
    /// Repeats outside every fragment that may have been sent twice.
    dups_unexplained: u64,
    seen: Vec<u64>,
    /// Entries not on the step grid.
    off_grid: Span,
    /// A second (or later) entry on a grid point: another copy of an
    /// entry that was not read back side by side with it (the file sink
    /// holds lines in the order they were written), or an extra entry.
    again: Span,
    /// Groups of several contents only: the entries found inside each
    /// unit's own range (digest, digest12, values), and the entries inside
    /// none.
    per_unit: Vec<(Digest, u64, Option<ValueSums>)>,
    uncovered: u64,
    /// Entries inside no acknowledged unit's range.
    outside_ok: u64,
    /// The checksums of the entries found at each of the group's
    /// `edge_ts`.
    at_edge: Vec<Vec<u64>>,
    /// Units whose range has begun (`by_first[..next_unit]`) and not
    /// ended, as of `last_seen`, the latest entry fed in time order.
    active: Vec<usize>,
    next_unit: usize,
    last_seen: Option<i64>,
}

/// Accumulates what a store returned for one series.
#[derive(Debug)]
pub struct SeriesChecker {
    plan: Arc<SeriesPlan>,
    acc: Vec<GroupAcc>,
    unexpected: Span,
    cur_ts: Option<i64>,
    cur_hashes: Vec<u64>,
    total: u64,
    precision: Precision,
}

/// The verdict on one series.
#[derive(Debug, Clone, Default)]
pub struct SeriesResult {
    pub findings: Vec<Finding>,
    /// Acknowledged entries expected.
    pub expected: u64,
    /// Entries the store returned, repeats and unexpected ones included.
    pub found: u64,
}

impl SeriesResult {
    pub fn has_discrepancy(&self) -> bool {
        self.findings.iter().any(|f| f.discrepancy)
    }
}

impl SeriesChecker {
    pub fn new(plan: Arc<SeriesPlan>) -> SeriesChecker {
        let acc = plan
            .groups
            .iter()
            .map(|g| GroupAcc {
                seen: match g.grid {
                    Some(grid) => vec![0u64; grid.len.div_ceil(64) as usize],
                    None => Vec::new(),
                },
                per_unit: if g.units.len() > 1 {
                    g.units
                        .iter()
                        .map(|u| {
                            (
                                Digest::default(),
                                0,
                                u.values.as_ref().map(|v| ValueSums::with_scale(v.scale)),
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                },
                found_values: {
                    let mut scales: Vec<f64> = g
                        .units
                        .iter()
                        .filter_map(|u| u.values.as_ref().map(|v| v.scale))
                        .collect();
                    scales.sort_by(f64::total_cmp);
                    scales.dedup();
                    scales
                        .into_iter()
                        .map(|s| Some(ValueSums::with_scale(s)))
                        .collect()
                },
                at_edge: vec![Vec::new(); g.edge_ts.len()],
                ..GroupAcc::default()
            })
            .collect();
        SeriesChecker {
            plan,
            acc,
            unexpected: Span::default(),
            cur_ts: None,
            cur_hashes: Vec::new(),
            total: 0,
            precision: Precision::Exact,
        }
    }

    /// Accepts the rounding a store of this precision does.
    pub fn with_precision(mut self, precision: Precision) -> SeriesChecker {
        self.precision = precision;
        self
    }

    pub fn plan(&self) -> &SeriesPlan {
        &self.plan
    }

    /// Feeds one entry.
    pub fn observe(&mut self, e: Seen) {
        let Seen {
            ts, hash, hash12, ..
        } = e;
        self.total += 1;
        // An entry equal to one already seen at the same timestamp is a
        // repeat. Entries arrive in time order, so only the hashes at the
        // latest timestamp need keeping.
        let repeat = if self.cur_ts == Some(ts) {
            if self.cur_hashes.contains(&hash) {
                true
            } else {
                self.cur_hashes.push(hash);
                false
            }
        } else {
            self.cur_ts = Some(ts);
            self.cur_hashes.clear();
            self.cur_hashes.push(hash);
            false
        };
        let Some(gi) = self.plan.group_of(ts) else {
            self.unexpected.add(ts);
            return;
        };
        let group = &self.plan.groups[gi];
        let acc = &mut self.acc[gi];
        acc.raw.add(hash);
        acc.raw12 = acc.raw12.wrapping_add(hash12);
        if repeat {
            acc.dups.add(ts);
            let explained = group.repeat_ranges.iter().any(|&(a, b)| a <= ts && ts <= b);
            if !explained {
                acc.dups_unexplained += 1;
            }
            return;
        }
        acc.found.add(hash);
        acc.found12 = acc.found12.wrapping_add(hash12);
        for sums in &mut acc.found_values {
            add_value(sums, &e);
        }
        if !acc.per_unit.is_empty() {
            let (mut covered, mut covered_ok) = (false, false);
            let mut count = |pu: &mut (Digest, u64, Option<ValueSums>), ok: bool| {
                pu.0.add(hash);
                pu.1 = pu.1.wrapping_add(hash12);
                add_value(&mut pu.2, &e);
                covered = true;
                covered_ok |= ok;
            };
            let in_order = match acc.last_seen {
                Some(last) => ts >= last,
                None => true,
            };
            if in_order {
                // Ranges that began by now join; ended ones leave for good.
                acc.last_seen = Some(ts);
                while let Some(&u) = group.by_first.get(acc.next_unit) {
                    if group.units[u].first_ts > ts {
                        break;
                    }
                    acc.active.push(u);
                    acc.next_unit += 1;
                }
                acc.active.retain(|&u| group.units[u].last_ts >= ts);
                for &u in &acc.active {
                    count(&mut acc.per_unit[u], group.units[u].ok);
                }
            } else {
                // Readers feed entries in time order; should one not, every
                // unit is tried, as the active set only moves forward.
                for (u, pu) in group.units.iter().zip(acc.per_unit.iter_mut()) {
                    if u.first_ts <= ts && ts <= u.last_ts {
                        count(pu, u.ok);
                    }
                }
            }
            if !covered {
                acc.uncovered += 1;
            }
            if !covered_ok {
                acc.outside_ok += 1;
            }
            if let Ok(k) = group.edge_ts.binary_search(&ts) {
                acc.at_edge[k].push(hash);
            }
        }
        if let Some(grid) = group.grid {
            let off = ts - group.first_ts;
            let k = (off / grid.step) as u64;
            if off % grid.step != 0 || k >= grid.len {
                acc.off_grid.add(ts);
            } else {
                let (w, b) = ((k / 64) as usize, k % 64);
                if acc.seen[w] & (1 << b) != 0 {
                    acc.again.add(ts);
                } else {
                    acc.seen[w] |= 1 << b;
                }
            }
        }
    }

    /// Entries observed so far.
    pub fn observed(&self) -> u64 {
        self.total
    }

    pub fn finish(self) -> SeriesResult {
        let mut out = SeriesResult {
            findings: Vec::new(),
            expected: self.plan.expected(),
            found: self.total,
        };
        let labels = &self.plan.labels;
        // The largest value the series was sent bounds the exponent a store
        // may share across its values. Never what was read back: an
        // altered value would widen its own tolerance.
        let tolerance = match self.precision {
            Precision::Exact => None,
            Precision::Decimal => Some(
                self.plan
                    .groups
                    .iter()
                    .flat_map(|g| g.units.iter().filter_map(|u| u.values.as_deref()))
                    .fold(0f64, |m, v| m.max(v.max_abs)),
            ),
        };
        for (g, acc) in self.plan.groups.iter().zip(&self.acc) {
            judge_group(labels, g, acc, tolerance, &mut out.findings);
        }
        if self.unexpected.count > 0 {
            let mut f = Finding::new(Kind::Unexpected, true, labels);
            f.first_ts = Some(self.unexpected.min);
            f.last_ts = Some(self.unexpected.max);
            f.expected = Some(0);
            f.found = Some(self.unexpected.count);
            f.ranges = vec![(
                self.unexpected.min,
                self.unexpected.max,
                self.unexpected.count,
            )];
            f.detail = format!(
                "{} entries outside every fragment's time range",
                self.unexpected.count
            );
            out.findings.push(f);
        }
        out
    }
}

/// How a found digest compares with an expected one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Exact,
    /// Equal once values are rounded to 12 significant digits, or within
    /// a decimal precision shared with larger values of the series.
    Rounded,
}

/// What some contents read back as, or should.
#[derive(Debug, Clone, Copy)]
struct Sums {
    d: Digest,
    d12: Option<u64>,
    values: Option<ValueSums>,
}

/// `series_max` is None for exact stores, else the largest value the
/// series was sent.
fn compare(found: Sums, exp: Sums, series_max: Option<f64>) -> Option<Match> {
    if found.d.count != exp.d.count {
        return None;
    }
    if found.d.sum == exp.d.sum {
        return Some(Match::Exact);
    }
    let max_abs = series_max?;
    if exp.d12.is_some() && exp.d12 == found.d12 {
        return Some(Match::Rounded);
    }
    match (exp.values, found.values) {
        (Some(e), Some(f)) if e.within_precision(&f, exp.d.count, max_abs) => Some(Match::Rounded),
        _ => None,
    }
}

/// Tries the entries without repeats first (a store kept a retried entry
/// twice), then with them (the input itself held the entry twice).
fn compare_acc(acc: &GroupAcc, exp: Sums, max_abs: Option<f64>) -> Option<(Match, bool)> {
    let found = Sums {
        d: acc.found,
        d12: Some(acc.found12),
        values: exp.values.and_then(|e| {
            acc.found_values
                .iter()
                .flatten()
                .find(|f| f.scale == e.scale)
                .copied()
        }),
    };
    if let Some(m) = compare(found, exp, max_abs) {
        return Some((m, false));
    }
    if acc.dups.count > 0 {
        let raw = Sums {
            d: acc.raw,
            d12: Some(acc.raw12),
            // Repeats are exact copies; the values path is for rounding.
            values: None,
        };
        if let Some(m) = compare(raw, exp, max_abs) {
            return Some((m, true));
        }
    }
    None
}

fn sum_units<'a>(units: impl Iterator<Item = &'a Unit>) -> Sums {
    let mut s = Sums {
        d: Digest::default(),
        d12: Some(0),
        values: None,
    };
    let mut first = true;
    for u in units {
        s.d.merge(u.digest());
        s.d12 = match (s.d12, u.checksum12) {
            (Some(a), Some(b)) => Some(a.wrapping_add(b)),
            _ => None,
        };
        s.values = match (first, s.values, u.values.as_deref()) {
            (true, _, v) => v.copied(),
            (false, Some(a), Some(b)) => a.merged(b),
            _ => None,
        };
        first = false;
    }
    s
}

const ROUNDED_NOTE: &str = "values rounded by the store (to its decimal precision, or to a decimal exponent shared with larger values of the series)";

fn judge_group(
    labels: &LabelSet,
    g: &Group,
    acc: &GroupAcc,
    max_abs: Option<f64>,
    out: &mut Vec<Finding>,
) {
    let ok: Vec<usize> = (0..g.units.len()).filter(|&i| g.units[i].ok).collect();
    let others: Vec<usize> = (0..g.units.len()).filter(|&i| !g.units[i].ok).collect();
    let exp = sum_units(ok.iter().map(|&i| &g.units[i])).d;
    // Overlapping acknowledged contents (re-pushes cut differently) are
    // confirmed each within its own range. Contents that were not
    // acknowledged may overlap them too (a run that timed out, pushed
    // again to completion) as long as no entry was found outside the
    // acknowledged ranges: then every entry found is inside one, and each
    // of those was found exactly.
    if ok.len() > 1
        && (others.is_empty() || acc.outside_ok == 0)
        && (judge_overlap_by_ranges(labels, g, acc, &ok, max_abs, out)
            || judge_overlap_by_edges(labels, g, acc, &ok, out))
    {
        for &u in &others {
            let unit = &g.units[u];
            let mut f = base_finding(labels, g, Kind::Note, false, &[u]);
            f.expected = Some(unit.count);
            f.detail = format!(
                "{}; it overlaps acknowledged fragments that were all found, so whether this attempt was stored cannot be told",
                status_detail(g, unit)
            );
            out.push(f);
        }
        return;
    }
    let base = |kind: Kind, discrepancy: bool, units: &[usize]| {
        base_finding(labels, g, kind, discrepancy, units)
    };

    // Find which non-acknowledged contents, added to the acknowledged ones,
    // explain exactly what was found. With few of them every combination is
    // tried; otherwise only none and all.
    let each = others.len() <= MAX_SUBSET_UNITS;
    let subsets: Vec<u64> = if each {
        (0..1u64 << others.len()).collect()
    } else {
        vec![0, u64::MAX]
    };
    let mut explained = None;
    for mask in subsets {
        let chosen: Vec<usize> = others
            .iter()
            .enumerate()
            .filter(|(k, _)| {
                if each {
                    mask & (1 << k) != 0
                } else {
                    mask != 0
                }
            })
            .map(|(_, &u)| u)
            .collect();
        let sums = sum_units(ok.iter().chain(&chosen).map(|&i| &g.units[i]));
        if let Some(m) = compare_acc(acc, sums, max_abs) {
            explained = Some((m, chosen));
            break;
        }
    }

    if let Some(((m, with_repeats), chosen)) = explained {
        if !ok.is_empty() && m == Match::Rounded {
            let mut f = base(Kind::Note, false, &ok);
            f.expected = Some(exp.count);
            f.found = Some(acc.found.count);
            f.detail = ROUNDED_NOTE.into();
            out.push(f);
        }
        for &u in &others {
            let present = chosen.contains(&u);
            let unit = &g.units[u];
            let mut f = base(
                if present { Kind::Present } else { Kind::Absent },
                false,
                &[u],
            );
            f.expected = Some(unit.count);
            f.found = Some(if present { unit.count } else { 0 });
            f.detail = status_detail(g, unit);
            out.push(f);
        }
        if acc.dups.count > 0 && !with_repeats {
            out.push(duplicated(labels, g, acc, &ok));
        }
        return;
    }

    if ok.is_empty() {
        // Nothing acknowledged here: whatever is (or is not) in the store is
        // information about failed pushes, never a loss.
        let d = sum_units(g.units.iter()).d;
        let kind = if acc.found.count == 0 {
            Kind::Absent
        } else {
            Kind::Partial
        };
        let all: Vec<usize> = (0..g.units.len()).collect();
        let mut f = base(kind, false, &all);
        f.expected = Some(d.count);
        f.found = Some(acc.found.count);
        f.detail = status_detail(g, &g.units[0]);
        out.push(f);
        if acc.dups.count > 0 {
            out.push(duplicated(labels, g, acc, &[]));
        }
        return;
    }

    if !others.is_empty() {
        // Acknowledged and non-acknowledged fragments overlap and no
        // combination of them matches what was found, so entries cannot be
        // attributed to fragments. Fewer entries than were acknowledged
        // means at least that many acknowledged ones are gone. Otherwise the
        // surplus may be the non-acknowledged fragments partly written (as
        // Loki does with a 400), but the acknowledged entries cannot be
        // confirmed one by one: that is a discrepancy too, because calling
        // unconfirmed data present could hide a loss.
        if acc.found.count < exp.count {
            let mut f = base(Kind::Missing, true, &ok);
            f.expected = Some(exp.count);
            f.found = Some(acc.found.count);
            let n = exp.count - acc.found.count;
            f.ranges = vec![(g.first_ts, g.last_ts, n)];
            f.detail = format!(
                "at least {n} acknowledged entries missing (the range overlaps fragments that were not acknowledged, so entries cannot be attributed exactly)"
            );
            out.push(f);
        }
        let mut f = base(Kind::Partial, true, &others);
        let od = sum_units(others.iter().map(|&i| &g.units[i])).d;
        f.expected = Some(od.count);
        f.found = Some(acc.found.count.saturating_sub(exp.count));
        f.detail = format!(
            "{} entries found for {} acknowledged; the surplus is attributed to overlapping fragments that were not acknowledged; the acknowledged entries could not be confirmed one by one",
            acc.found.count, exp.count
        );
        out.push(f);
        if acc.dups.count > 0 {
            out.push(duplicated(labels, g, acc, &ok));
        }
        return;
    }

    if let Some(f) = whole_copies(labels, g, acc, &ok, exp) {
        out.push(f);
        return;
    }

    // Only acknowledged contents, and they do not match.
    if let Some(grid) = g.grid {
        let ranges = missing_ranges(&acc.seen, grid, g.first_ts);
        let missing: u64 = ranges.iter().map(|r| r.2).sum();
        if missing > 0 {
            let mut f = base(Kind::Missing, true, &ok);
            f.expected = Some(exp.count);
            f.found = Some(acc.found.count);
            f.detail = format!("{missing} entries missing");
            f.ranges = ranges;
            out.push(f);
        }
        for (span, what) in [
            (
                &acc.off_grid,
                "entries inside the fragment's range at timestamps it does not have (altered or extra)",
            ),
            (
                &acc.again,
                "more entries at timestamps that already hold the one acknowledged (a second copy of it, or another entry)",
            ),
        ] {
            if span.count > 0 {
                let mut f = base(Kind::Unexpected, true, &ok);
                f.expected = Some(exp.count);
                f.found = Some(acc.found.count);
                f.ranges = vec![(span.min, span.max, span.count)];
                f.detail = format!("{} {what}", span.count);
                out.push(f);
            }
        }
        if missing == 0 && acc.off_grid.count == 0 && acc.again.count == 0 {
            out.push(altered(base(Kind::Altered, true, &ok), exp, acc));
        }
    } else if acc.found.count < exp.count {
        let n = exp.count - acc.found.count;
        let mut f = base(Kind::Missing, true, &ok);
        f.expected = Some(exp.count);
        f.found = Some(acc.found.count);
        f.ranges = vec![(g.first_ts, g.last_ts, n)];
        f.detail = format!(
            "{n} entries missing somewhere in the range (entries are not evenly spaced, so not located exactly)"
        );
        out.push(f);
    } else if acc.found.count > exp.count {
        let n = acc.found.count - exp.count;
        let mut f = base(Kind::Unexpected, true, &ok);
        f.expected = Some(exp.count);
        f.found = Some(acc.found.count);
        f.ranges = vec![(g.first_ts, g.last_ts, n)];
        f.detail =
            format!("{n} more entries than acknowledged inside the range (altered or extra)");
        out.push(f);
    } else {
        out.push(altered(base(Kind::Altered, true, &ok), exp, acc));
    }
    if acc.dups.count > 0 {
        out.push(duplicated(labels, g, acc, &ok));
    }
}

/// A finding about the given units of a group, over the group's range.
fn base_finding(
    labels: &LabelSet,
    g: &Group,
    kind: Kind,
    discrepancy: bool,
    units: &[usize],
) -> Finding {
    let mut f = Finding::new(kind, discrepancy, labels);
    f.fragments = g.frag_ids(units);
    f.first_ts = Some(g.first_ts);
    f.last_ts = Some(g.last_ts);
    f
}

/// Overlapping acknowledged contents (the same input pushed by two runs
/// that cut it into different fragments, say) cannot be summed: a store
/// keeps the repeated entries once. Each content is confirmed on its own
/// instead: the entries found inside its range must be exactly its entries.
/// If every one is, and nothing was found outside all of them, every
/// acknowledged entry is there and nothing else is. Returns false (judge
/// by the sum) when that does not hold.
fn judge_overlap_by_ranges(
    labels: &LabelSet,
    g: &Group,
    acc: &GroupAcc,
    ok: &[usize],
    max_abs: Option<f64>,
    out: &mut Vec<Finding>,
) -> bool {
    if acc.per_unit.len() != g.units.len() || acc.uncovered > 0 {
        return false;
    }
    let mut rounded = false;
    for &u in ok {
        let unit = &g.units[u];
        let (d, d12, values) = acc.per_unit[u];
        let found = Sums {
            d,
            d12: Some(d12),
            values,
        };
        let exp = Sums {
            d: unit.digest(),
            d12: unit.checksum12,
            values: unit.values.as_deref().copied(),
        };
        match compare(found, exp, max_abs) {
            Some(Match::Exact) => {}
            Some(Match::Rounded) => rounded = true,
            None => return false,
        }
    }
    let detail = format!(
        "{} acknowledged fragments overlap in time (the same entries pushed more than once, cut differently); each was found exactly within its own range{}",
        g.fragments.len(),
        if rounded { format!("; {ROUNDED_NOTE}") } else { String::new() }
    );
    confirm_overlap(labels, g, acc, ok, detail, out);
    true
}

/// The findings of an overlap group whose contents were each confirmed:
/// a note, and any repeats no retry or re-push explains.
fn confirm_overlap(
    labels: &LabelSet,
    g: &Group,
    acc: &GroupAcc,
    ok: &[usize],
    detail: String,
    out: &mut Vec<Finding>,
) {
    let mut f = Finding::new(Kind::Note, false, labels);
    f.fragments = g.frag_ids(ok);
    f.first_ts = Some(g.first_ts);
    f.last_ts = Some(g.last_ts);
    f.expected = Some(acc.found.count);
    f.found = Some(acc.found.count);
    f.detail = detail;
    out.push(f);
    // Repeats are reported either way: as a discrepancy when nothing
    // explains them, else as information (a store keeping copies of a
    // re-push or a retry; the number of copies is not bounded then).
    if acc.dups.count > 0 {
        out.push(duplicated(labels, g, acc, ok));
    }
}

/// Like [`judge_overlap_by_ranges`], for log input where entries share
/// timestamps: two cuts of the same input (a re-push with other fragment
/// sizes) may split the entries of one timestamp at different places, so
/// a fragment's range also holds entries another fragment took at its
/// first or last timestamp. Each content is confirmed in two parts:
///
/// - every entry it had at its first and last timestamp (listed by
///   checksum in the manifest) was found there;
/// - the entries found strictly inside its range are exactly its entries
///   there (its checksum less those at the two edges).
///
/// And each entry found at an edge timestamp is one an acknowledged
/// content lists there, or lies strictly inside an acknowledged range (so
/// the second check covered it). Then every acknowledged entry is there
/// and nothing else is, with the store keeping each entry once. Exact
/// checksums only. Returns false (judge by the sum) when that does not
/// hold.
fn judge_overlap_by_edges(
    labels: &LabelSet,
    g: &Group,
    acc: &GroupAcc,
    ok: &[usize],
    out: &mut Vec<Finding>,
) -> bool {
    if g.edge_ts.is_empty() || acc.per_unit.len() != g.units.len() || acc.uncovered > 0 {
        return false;
    }
    let digest = |hs: &[u64]| {
        let mut d = Digest::default();
        hs.iter().for_each(|&h| d.add(h));
        d
    };
    let minus = |a: Digest, b: Digest| Digest {
        count: a.count.wrapping_sub(b.count),
        sum: a.sum.wrapping_sub(b.sum),
    };
    let found: Vec<Vec<u64>> = acc
        .at_edge
        .iter()
        .map(|v| {
            let mut v = v.clone();
            v.sort_unstable();
            v
        })
        .collect();
    let index = |t: i64| g.edge_ts.binary_search(&t).ok();
    // Per edge timestamp: the checksums acknowledged contents list there,
    // and whether it lies strictly inside an acknowledged range.
    let mut listed: Vec<Vec<u64>> = vec![Vec::new(); g.edge_ts.len()];
    let mut inside: Vec<i64> = vec![0; g.edge_ts.len() + 1];
    for &u in ok {
        let unit = &g.units[u];
        let (Some(e), Some(ka), Some(kb)) = (
            unit.edges.as_deref(),
            index(unit.first_ts),
            index(unit.last_ts),
        ) else {
            return false;
        };
        let all_found = |hs: &[u64], k: usize| hs.iter().all(|h| found[k].binary_search(h).is_ok());
        let (edge_exp, edge_found) = if ka == kb {
            if !all_found(&e.first, ka) {
                return false;
            }
            listed[ka].extend_from_slice(&e.first);
            (digest(&e.first), digest(&found[ka]))
        } else {
            if !all_found(&e.first, ka) || !all_found(&e.last, kb) {
                return false;
            }
            listed[ka].extend_from_slice(&e.first);
            listed[kb].extend_from_slice(&e.last);
            inside[ka + 1] += 1;
            inside[kb] -= 1;
            let mut exp = digest(&e.first);
            exp.merge(digest(&e.last));
            let mut f = digest(&found[ka]);
            f.merge(digest(&found[kb]));
            (exp, f)
        };
        if minus(acc.per_unit[u].0, edge_found) != minus(unit.digest(), edge_exp) {
            return false;
        }
    }
    let mut depth = 0;
    for (k, hs) in found.iter().enumerate() {
        depth += inside[k];
        if depth > 0 {
            continue;
        }
        let list = &mut listed[k];
        list.sort_unstable();
        if !hs.iter().all(|h| list.binary_search(h).is_ok()) {
            return false;
        }
    }
    let detail = format!(
        "{} acknowledged fragments overlap in time (the same entries pushed more than once, cut differently, also within timestamps shared by several entries); each was found exactly, entries at its first and last timestamp by their checksums",
        g.fragments.len()
    );
    confirm_overlap(labels, g, acc, ok, detail, out);
    true
}

fn altered(mut f: Finding, exp: Digest, acc: &GroupAcc) -> Finding {
    f.expected = Some(exp.count);
    f.found = Some(acc.found.count);
    f.detail = format!(
        "same number of entries but different contents (checksum {:016x}, expected {:016x})",
        acc.found.sum, exp.sum
    );
    f
}

/// The same contents acknowledged several times (the same input pushed by
/// several runs) into a store that keeps every copy (the file sink,
/// VictoriaMetrics), read back in an order that does not put the copies
/// side by side (the file sink: one run's lines after another's), so they
/// are not recognised as repeats one by one. Found is then exactly `m`
/// copies of what was acknowledged, for `m` up to the number of times each
/// content was acknowledged: information, like repeats within fragments
/// sent more than once.
fn whole_copies(
    labels: &LabelSet,
    g: &Group,
    acc: &GroupAcc,
    ok: &[usize],
    exp: Digest,
) -> Option<Finding> {
    let acked = |u: &Unit| {
        u.frags
            .iter()
            .filter(|&&i| g.fragments[i].status == Status::Ok)
            .count() as u64
    };
    let copies = ok.iter().map(|&u| acked(&g.units[u])).min()?;
    if exp.count == 0 || acc.found.count % exp.count != 0 {
        return None;
    }
    let m = acc.found.count / exp.count;
    if m < 2 || m > copies || acc.found.sum != exp.sum.wrapping_mul(m) {
        return None;
    }
    let mut f = Finding::new(Kind::Duplicated, false, labels);
    f.fragments = g.frag_ids(ok);
    f.first_ts = Some(g.first_ts);
    f.last_ts = Some(g.last_ts);
    f.expected = Some(exp.count);
    f.found = Some(acc.found.count);
    f.ranges = vec![(g.first_ts, g.last_ts, acc.found.count - exp.count)];
    f.detail = format!(
        "{m} copies of each of {} entries, which were acknowledged {copies} times (pushed by several runs); the store keeps every copy",
        exp.count
    );
    Some(f)
}

/// How many copies of its entries a fragment can have left in a store
/// that keeps every copy: one if acknowledged and never possibly sent
/// twice, else one per recorded attempt (`None`: not known, no bound).
fn copies_allowed(f: &Fragment) -> Option<u64> {
    if f.status == Status::Ok && !f.maybe_duplicated {
        return Some(1);
    }
    if f.attempts == 0 {
        return None;
    }
    // Possibly written twice means two attempts at least.
    let n = u64::from(f.attempts);
    Some(if f.maybe_duplicated { n.max(2) } else { n })
}

/// More entries read back (repeats included) than the group's fragments
/// can account for (each with `copies_allowed` copies): a copy no push
/// explains, even inside ranges where repeats are otherwise explained
/// (fragments of one run that overlap in time hold different entries; a
/// retried fragment can have left one copy per attempt, not more).
fn copies_beyond_acks(g: &Group, acc: &GroupAcc) -> bool {
    let mut allowed = 0u64;
    for f in &g.fragments {
        match copies_allowed(f) {
            Some(n) => allowed = allowed.saturating_add(f.count.saturating_mul(n)),
            None => return false,
        }
    }
    acc.raw.count > allowed
}

fn duplicated(labels: &LabelSet, g: &Group, acc: &GroupAcc, units: &[usize]) -> Finding {
    // Repeats of data nobody acknowledged are information, like the data.
    let beyond = copies_beyond_acks(g, acc);
    let discrepancy = (acc.dups_unexplained > 0 || beyond) && !units.is_empty();
    let mut f = Finding::new(Kind::Duplicated, discrepancy, labels);
    f.fragments = if units.is_empty() {
        g.all_ids()
    } else {
        g.frag_ids(units)
    };
    f.first_ts = Some(acc.dups.min);
    f.last_ts = Some(acc.dups.max);
    f.found = Some(acc.dups.count);
    f.ranges = vec![(acc.dups.min, acc.dups.max, acc.dups.count)];
    f.detail = if discrepancy && acc.dups_unexplained == 0 {
        format!(
            "{} entries stored more than once: {} read back, more than the fragments' pushes can have left ({}, one copy per attempt where an attempt may have been written twice)",
            acc.dups.count,
            acc.raw.count,
            g.fragments
                .iter()
                .map(|f| f.count * copies_allowed(f).unwrap_or(1))
                .sum::<u64>()
        )
    } else if discrepancy {
        format!(
            "{} entries stored more than once ({} outside fragments that may have been sent twice)",
            acc.dups.count, acc.dups_unexplained
        )
    } else {
        format!(
            "{} entries stored more than once, all within fragments that were, or may have been, sent more than once",
            acc.dups.count
        )
    };
    f
}

fn status_detail(g: &Group, unit: &Unit) -> String {
    let f = &g.fragments[unit.frags[0]];
    let status = f.status.as_str();
    match &f.reason {
        Some(r) => format!("push status {status}: {r}"),
        None => format!("push status {status}"),
    }
}

/// Runs of unset bits as `[first_ts, last_ts, count]`.
fn missing_ranges(seen: &[u64], grid: Grid, first_ts: i64) -> Vec<(i64, i64, u64)> {
    let mut out = Vec::new();
    let mut run: Option<u64> = None;
    let at = |k: u64| first_ts + k as i64 * grid.step;
    for k in 0..grid.len {
        let set = seen[(k / 64) as usize] & (1 << (k % 64)) != 0;
        match (set, run) {
            (false, None) => run = Some(k),
            (true, Some(s)) => {
                out.push((at(s), at(k - 1), k - s));
                run = None;
            }
            _ => {}
        }
    }
    if let Some(s) = run {
        out.push((at(s), at(grid.len - 1), grid.len - s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{log_entry, metric_sample, metric_sample_12, ValueSums};

    fn labels() -> LabelSet {
        LabelSet::new(vec![("app".into(), "x".into())]).unwrap()
    }

    /// A log fragment of `n` entries `step` apart, lines "l{ts}".
    fn frag(id: u64, status: Status, first: i64, n: u64, step: i64) -> Fragment {
        let mut d = Digest::default();
        for k in 0..n as i64 {
            let ts = first + k * step;
            d.add(log_entry(ts, format!("l{ts}").as_bytes()));
        }
        Fragment {
            run: Arc::from("r1"),
            id,
            status,
            count: n,
            first_ts: first,
            last_ts: first + (n as i64 - 1) * step,
            step: Some(step),
            checksum: d.sum,
            checksum12: None,
            nan: None,
            edges: None,
            values: None,
            maybe_duplicated: false,
            attempts: 1,
            reason: None,
            merged: None,
        }
    }

    /// A metric fragment of the given samples, as the pusher records it.
    fn metric_frag(id: u64, samples: &[(i64, f64)]) -> Fragment {
        let (mut d, mut d12) = (Digest::default(), 0u64);
        for &(t, v) in samples {
            d.add(metric_sample(t, v));
            d12 = d12.wrapping_add(metric_sample_12(t, v));
        }
        let values = Some(Box::new(ValueSums::of(samples.iter().copied())));
        Fragment {
            run: Arc::from("r1"),
            id,
            status: Status::Ok,
            count: d.count,
            first_ts: samples[0].0,
            last_ts: samples[samples.len() - 1].0,
            step: None,
            checksum: d.sum,
            checksum12: Some(d12),
            nan: None,
            values,
            edges: None,
            maybe_duplicated: false,
            attempts: 1,
            reason: None,
            merged: None,
        }
    }

    fn feed(c: &mut SeriesChecker, ts: i64) {
        c.observe(Seen::log(ts, format!("l{ts}").as_bytes()));
    }

    fn run(frags: &[Fragment], entries: &[i64]) -> SeriesResult {
        let plan = Arc::new(SeriesPlan::new(labels(), frags));
        let mut c = SeriesChecker::new(plan);
        for &ts in entries {
            feed(&mut c, ts);
        }
        c.finish()
    }

    fn kinds(r: &SeriesResult) -> Vec<(Kind, bool)> {
        r.findings.iter().map(|f| (f.kind, f.discrepancy)).collect()
    }

    fn range(a: i64, n: i64, step: i64) -> Vec<i64> {
        (0..n).map(|k| a + k * step).collect()
    }

    /// `entries` cut into fragments of `size` by run `run`, as the pusher
    /// records them: range from the earliest to the latest timestamp, and
    /// the checksums of the entries at those two.
    fn cuts(entries: &[(i64, String)], size: usize, run: &str) -> Vec<Fragment> {
        entries
            .chunks(size)
            .enumerate()
            .map(|(i, c)| {
                let mut d = Digest::default();
                c.iter()
                    .for_each(|(t, l)| d.add(log_entry(*t, l.as_bytes())));
                let first = c.iter().map(|e| e.0).min().unwrap();
                let last = c.iter().map(|e| e.0).max().unwrap();
                let at = |ts: i64| -> Vec<u64> {
                    c.iter()
                        .filter(|e| e.0 == ts)
                        .map(|(t, l)| log_entry(*t, l.as_bytes()))
                        .collect()
                };
                Fragment {
                    run: Arc::from(run),
                    id: i as u64 + 1,
                    status: Status::Ok,
                    count: c.len() as u64,
                    first_ts: first,
                    last_ts: last,
                    step: None,
                    checksum: d.sum,
                    checksum12: None,
                    nan: None,
                    values: None,
                    edges: Some(Box::new(Edges {
                        first: at(first),
                        last: at(last),
                    })),
                    maybe_duplicated: false,
                    attempts: 1,
                    reason: None,
                    merged: None,
                }
            })
            .collect()
    }

    fn check_logs(frags: &[Fragment], stored: &[(i64, String)]) -> SeriesResult {
        check_logs_fed(frags, stored, false)
    }

    /// `reversed`: fed latest first, against the readers' contract of time
    /// order; the verdict must not depend on it.
    fn check_logs_fed(
        frags: &[Fragment],
        stored: &[(i64, String)],
        reversed: bool,
    ) -> SeriesResult {
        let mut stored = stored.to_vec();
        stored.sort_by_key(|e| e.0);
        if reversed {
            stored.reverse();
        }
        let mut c = SeriesChecker::new(Arc::new(SeriesPlan::new(labels(), frags)));
        for (t, l) in &stored {
            c.observe(Seen::log(*t, l.as_bytes()));
        }
        c.finish()
    }

    /// The same input pushed three times with different fragment sizes,
    /// five entries per timestamp: the cuts split timestamps at different
    /// places. The store keeps each entry once. Whatever is lost, altered
    /// or added, at an edge timestamp or inside a range, is a discrepancy.
    #[test]
    fn re_pushes_that_split_shared_timestamps_differently_are_confirmed_entry_by_entry() {
        for shuffled in [false, true] {
            let mut input: Vec<(i64, String)> = (0..24)
                .map(|i| (1000 + i / 5, format!("seq {i}")))
                .collect();
            if shuffled {
                // Out of order within reach of a fragment, as merged logs are.
                for i in (0..input.len() - 2).step_by(3) {
                    input.swap(i, i + 2);
                }
            }
            let mut frags = Vec::new();
            for (size, run) in [(3, "r1"), (4, "r2"), (7, "r3")] {
                frags.extend(cuts(&input, size, run));
            }
            let r = check_logs(&frags, &input);
            assert!(
                !r.has_discrepancy(),
                "shuffled {shuffled}: {:?}",
                r.findings
            );
            assert_eq!(kinds(&r), vec![(Kind::Note, false)]);

            let r = check_logs_fed(&frags, &input, true);
            assert_eq!(kinds(&r), vec![(Kind::Note, false)], "fed in reverse");
            for k in 0..input.len() {
                let mut lost = input.clone();
                lost.remove(k);
                let r = check_logs(&frags, &lost);
                assert!(r.has_discrepancy(), "entry {k} lost, shuffled {shuffled}");
                let r = check_logs_fed(&frags, &lost, true);
                assert!(r.has_discrepancy(), "entry {k} lost, fed in reverse");

                let mut changed = input.clone();
                changed[k].1.push('!');
                let r = check_logs(&frags, &changed);
                assert!(
                    r.has_discrepancy(),
                    "entry {k} altered, shuffled {shuffled}"
                );

                let mut moved = input.clone();
                moved[k].0 += 1;
                let r = check_logs(&frags, &moved);
                assert!(r.has_discrepancy(), "entry {k} moved, shuffled {shuffled}");
            }
            for t in 999..1006 {
                let mut extra = input.clone();
                extra.push((t, "extra".into()));
                let r = check_logs(&frags, &extra);
                assert!(r.has_discrepancy(), "extra at {t}, shuffled {shuffled}");
            }
        }
    }

    /// One run whose fragments overlap in time (interleaved input) holds
    /// different entries in each: a store holding every entry twice has a
    /// copy no push accounts for, though repeats there would otherwise be
    /// put down to the overlap.
    #[test]
    fn copies_beyond_what_was_acknowledged_are_duplicates_even_where_fragments_overlap() {
        let e = |t: i64| (t, format!("e{t}"));
        let input: Vec<(i64, String)> = (0..10)
            .map(|i| e(100 + 2 * i))
            .chain((0..10).map(|i| e(101 + 2 * i)))
            .collect();
        let frags = cuts(&input, 10, "r1");
        let mut stored = input.clone();
        stored.sort();
        let r = check_logs(&frags, &stored);
        assert!(!r.has_discrepancy(), "{:?}", r.findings);
        let twice: Vec<(i64, String)> =
            stored.iter().flat_map(|x| [x.clone(), x.clone()]).collect();
        let r = check_logs(&frags, &twice);
        assert!(
            r.findings
                .iter()
                .any(|f| f.kind == Kind::Duplicated && f.discrepancy),
            "{:?}",
            r.findings
        );
        // One fragment maybe sent twice (two attempts): its entries may be
        // there twice, the other's not.
        let mut maybe = frags.clone();
        maybe[0].maybe_duplicated = true;
        maybe[0].attempts = 2;
        let r = check_logs(&maybe, &twice);
        assert!(r.findings.iter().any(|f| f.discrepancy), "{:?}", r.findings);
        let first_twice: Vec<(i64, String)> = stored
            .iter()
            .flat_map(|x| {
                if x.0 % 2 == 0 {
                    vec![x.clone(), x.clone()]
                } else {
                    vec![x.clone()]
                }
            })
            .collect();
        let r = check_logs(&maybe, &first_twice);
        assert!(
            !r.findings.iter().any(|f| f.discrepancy),
            "{:?}",
            r.findings
        );
        // Attempts not recorded: no bound.
        maybe[0].attempts = 0;
        let r = check_logs(&maybe, &twice);
        assert!(
            !r.findings.iter().any(|f| f.discrepancy),
            "{:?}",
            r.findings
        );
    }

    /// A run whose requests timed out (fragments `unknown`) pushed again to
    /// completion by a run with other fragment sizes: the store keeps each
    /// entry once, and every acknowledged entry is confirmed in its range.
    #[test]
    fn a_timed_out_run_pushed_again_with_other_cuts_is_confirmed() {
        let input: Vec<(i64, String)> = (0..100).map(|i| (1000 + i, format!("e{i}"))).collect();
        let mut frags = cuts(&input, 13, "r1");
        for f in frags.iter_mut().skip(1).step_by(3) {
            f.status = Status::Unknown;
        }
        frags.extend(cuts(&input, 17, "r2"));
        let r = check_logs(&frags, &input);
        assert!(!r.has_discrepancy(), "{:?}", r.findings);
        assert!(
            r.findings
                .iter()
                .any(|f| f.kind == Kind::Note && f.detail.contains("cannot be told")),
            "{:?}",
            r.findings
        );
        for k in [0, 14, 50, 99] {
            let mut lost = input.clone();
            lost.remove(k);
            assert!(
                check_logs(&frags, &lost).has_discrepancy(),
                "entry {k} lost"
            );
            let mut changed = input.clone();
            changed[k].1.push('!');
            assert!(
                check_logs(&frags, &changed).has_discrepancy(),
                "entry {k} altered"
            );
        }
        let mut extra = input.clone();
        extra.push((1050, "extra".into()));
        assert!(
            check_logs(&frags, &extra).has_discrepancy(),
            "an extra entry"
        );
        // An unacknowledged fragment reaching past every acknowledged one:
        // nothing found out there, so everything found was confirmed; an
        // entry found out there is no acknowledged content's, and the
        // general rules judge the group.
        let mut wider = frags.clone();
        let mut beyond = cuts(&input[90..], 10, "r1").remove(0);
        beyond.last_ts = 1200;
        beyond.status = Status::Unknown;
        wider.push(beyond);
        let r = check_logs(&wider, &input);
        assert!(!r.has_discrepancy(), "{:?}", r.findings);
        let mut stray = input.clone();
        stray.push((1150, "stray".into()));
        assert!(check_logs(&wider, &stray).has_discrepancy());
    }

    /// An entry sent again on its own after the pusher forgot its series
    /// (it is a repeat at the series' latest timestamp, which Loki keeps
    /// once) is no loss; losing the other entry of that timestamp is.
    #[test]
    fn an_entry_resent_alone_at_a_shared_timestamp_is_no_loss() {
        let e = |t: i64, l: &str| (t, l.to_string());
        let input = [e(1, "x"), e(2, "a"), e(2, "b")];
        let mut frags = cuts(&input, 3, "r1");
        frags.extend(cuts(&input[2..], 1, "r2"));
        let r = check_logs(&frags, &input);
        assert!(!r.has_discrepancy(), "{:?}", r.findings);
        let r = check_logs(&frags, &[e(1, "x"), e(2, "b")]);
        assert!(r.has_discrepancy(), "{:?}", r.findings);
    }

    #[test]
    fn the_same_entries_acknowledged_twice_in_different_cuts_are_checked_per_fragment() {
        // Run 1 cut entries 100..=190 into one fragment, run 2 cut 150..=240
        // into another: 150..=190 were pushed twice, a store keeps them once.
        let mut a = frag(1, Status::Ok, 100, 10, 10);
        let mut b = frag(1, Status::Ok, 150, 10, 10);
        a.run = Arc::from("r1");
        b.run = Arc::from("r2");
        let frags = [a, b];
        let stored = range(100, 15, 10);
        let r = run(&frags, &stored);
        assert_eq!(kinds(&r), vec![(Kind::Note, false)], "{:?}", r.findings);

        // One entry lost where only run 2's fragment reaches: a loss.
        let mut lost = stored.clone();
        lost.retain(|&t| t != 220);
        let r = run(&frags, &lost);
        assert!(r.has_discrepancy(), "{:?}", r.findings);
        assert_eq!(r.findings[0].kind, Kind::Missing);

        // One lost where both reach: a loss too.
        let mut lost = stored.clone();
        lost.retain(|&t| t != 170);
        assert!(run(&frags, &lost).has_discrepancy());

        // An entry nobody pushed inside one of the ranges: not hidden.
        let mut extra = stored;
        extra.push(155);
        extra.sort();
        assert!(run(&frags, &extra).has_discrepancy());
    }

    #[test]
    fn exact_match_is_ok() {
        let r = run(&[frag(1, Status::Ok, 100, 10, 10)], &range(100, 10, 10));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!((r.expected, r.found), (10, 10));
    }

    #[test]
    fn missing_entries_are_located_exactly_with_a_step() {
        let mut got = range(100, 10, 10);
        got.retain(|&t| t != 120 && t != 130 && t != 190);
        let r = run(&[frag(1, Status::Ok, 100, 10, 10)], &got);
        assert_eq!(kinds(&r), vec![(Kind::Missing, true)]);
        let f = &r.findings[0];
        assert_eq!(f.ranges, vec![(120, 130, 2), (190, 190, 1)]);
        assert_eq!((f.expected, f.found), (Some(10), Some(7)));
        assert_eq!(f.fragments, vec![(Arc::from("r1"), 1, None)]);
    }

    #[test]
    fn missing_without_step_reports_whole_range_and_difference() {
        let mut f = frag(1, Status::Ok, 100, 10, 10);
        f.step = None;
        let r = run(&[f], &range(100, 7, 10));
        assert_eq!(kinds(&r), vec![(Kind::Missing, true)]);
        assert_eq!(r.findings[0].ranges, vec![(100, 190, 3)]);
    }

    #[test]
    fn nothing_found_is_all_missing() {
        let r = run(&[frag(1, Status::Ok, 100, 5, 1)], &[]);
        assert_eq!(r.findings[0].kind, Kind::Missing);
        assert_eq!(r.findings[0].ranges, vec![(100, 104, 5)]);
    }

    #[test]
    fn same_count_different_content_is_altered() {
        let plan = Arc::new(SeriesPlan::new(labels(), &[frag(1, Status::Ok, 100, 3, 1)]));
        let mut c = SeriesChecker::new(plan);
        feed(&mut c, 100);
        c.observe(Seen::log(101, b"changed"));
        feed(&mut c, 102);
        let r = c.finish();
        assert_eq!(kinds(&r), vec![(Kind::Altered, true)]);
    }

    #[test]
    fn extra_entry_inside_range_is_unexpected() {
        let mut f = frag(1, Status::Ok, 100, 3, 10);
        let r = run(&[f.clone()], &[100, 105, 110, 120]);
        assert_eq!(kinds(&r), vec![(Kind::Unexpected, true)]);
        assert_eq!(r.findings[0].ranges, vec![(105, 105, 1)]);
        f.step = None;
        let r = run(&[f], &[100, 105, 110, 120]);
        assert_eq!(kinds(&r), vec![(Kind::Unexpected, true)]);
    }

    #[test]
    fn entries_outside_every_range_are_unexpected() {
        let r = run(
            &[
                frag(1, Status::Ok, 100, 3, 1),
                frag(2, Status::Ok, 200, 3, 1),
            ],
            &[50, 100, 101, 102, 150, 151, 200, 201, 202],
        );
        assert_eq!(kinds(&r), vec![(Kind::Unexpected, true)]);
        assert_eq!(r.findings[0].ranges, vec![(50, 151, 3)]);
        assert_eq!(r.found, 9);
    }

    #[test]
    fn repeats_are_duplicates_and_informational_only_if_maybe_duplicated() {
        let f = frag(1, Status::Ok, 100, 3, 1);
        let got = [100, 100, 101, 101, 102];
        let r = run(std::slice::from_ref(&f), &got);
        assert_eq!(kinds(&r), vec![(Kind::Duplicated, true)]);
        assert_eq!(r.findings[0].found, Some(2));
        let mut f2 = f.clone();
        f2.maybe_duplicated = true;
        let r = run(&[f2], &got);
        assert_eq!(kinds(&r), vec![(Kind::Duplicated, false)]);
    }

    #[test]
    fn repeats_that_the_input_itself_had_are_fine() {
        let mut d = Digest::default();
        for ts in [100, 100, 101] {
            d.add(log_entry(ts, format!("l{ts}").as_bytes()));
        }
        let mut f = frag(1, Status::Ok, 100, 3, 1);
        f.checksum = d.sum;
        f.step = None;
        let r = run(&[f], &[100, 100, 101]);
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn missing_and_duplicated_together() {
        // 101 lost, 100 stored twice: the count matches but it is not OK.
        let r = run(&[frag(1, Status::Ok, 100, 3, 1)], &[100, 100, 102]);
        assert_eq!(
            kinds(&r),
            vec![(Kind::Missing, true), (Kind::Duplicated, true)]
        );
        assert_eq!(r.findings[0].ranges, vec![(101, 101, 1)]);
    }

    #[test]
    fn overlapping_fragments_are_checked_together() {
        // Out-of-order input: two fragments interleave in time.
        let a = frag(1, Status::Ok, 100, 5, 2); // 100..108 even
        let b = frag(2, Status::Ok, 101, 5, 2); // 101..109 odd
        let plan = SeriesPlan::new(labels(), &[b.clone(), a.clone()]);
        assert_eq!(plan.groups.len(), 1);
        assert!(plan.groups[0].grid.is_none());
        let r = run(&[a.clone(), b.clone()], &range(100, 10, 1));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(r.expected, 10);
        let r = run(&[a, b], &range(100, 9, 1));
        assert_eq!(kinds(&r), vec![(Kind::Missing, true)]);
        assert_eq!(r.findings[0].fragments.len(), 2);
        assert_eq!(r.findings[0].ranges, vec![(100, 109, 1)]);
    }

    #[test]
    fn adjacent_fragments_stay_separate() {
        let plan = SeriesPlan::new(
            labels(),
            &[
                frag(1, Status::Ok, 100, 3, 1),
                frag(2, Status::Ok, 103, 3, 1),
            ],
        );
        assert_eq!(plan.groups.len(), 2);
        assert_eq!(plan.range(), Some((100, 105)));
    }

    /// Two runs pushed the same input into a store that keeps every copy
    /// and reads back one run's entries after the other's (the file sink).
    #[test]
    fn whole_copies_of_contents_acknowledged_twice_are_information() {
        let mut again = frag(1, Status::Ok, 100, 50, 1);
        again.run = Arc::from("r2");
        let frags = [frag(1, Status::Ok, 100, 50, 1), again];
        let twice: Vec<i64> = range(100, 50, 1)
            .into_iter()
            .chain(range(100, 50, 1))
            .collect();
        let r = run(&frags, &twice);
        assert_eq!(kinds(&r), vec![(Kind::Duplicated, false)], "{r:?}");
        // More copies than acknowledgements, or a copy short of an entry,
        // are discrepancies.
        let thrice: Vec<i64> = twice.iter().chain(&range(100, 50, 1)).copied().collect();
        assert!(run(&frags, &thrice).findings.iter().any(|f| f.discrepancy));
        assert!(run(&frags, &twice[1..])
            .findings
            .iter()
            .any(|f| f.discrepancy));
        // Acknowledged once and found twice is still a discrepancy.
        assert!(run(&frags[..1], &twice)
            .findings
            .iter()
            .any(|f| f.discrepancy));
        // One entry again, not beside its first copy: named at its
        // timestamp as a second entry there, not as an unknown timestamp.
        let mut once_more = range(100, 50, 1);
        once_more.push(120);
        let r = run(&frags[..1], &once_more);
        assert_eq!(kinds(&r), vec![(Kind::Unexpected, true)], "{r:?}");
        assert_eq!(r.findings[0].ranges, vec![(120, 120, 1)]);
        assert!(r.findings[0].detail.contains("already hold"), "{r:?}");
    }

    #[test]
    fn failed_fragments_are_never_loss() {
        for status in [Status::Rejected, Status::Failed, Status::Unknown] {
            let f = frag(1, status, 100, 4, 1);
            let r = run(std::slice::from_ref(&f), &[]);
            assert_eq!(kinds(&r), vec![(Kind::Absent, false)], "{status:?}");
            let r = run(std::slice::from_ref(&f), &range(100, 4, 1));
            assert_eq!(kinds(&r), vec![(Kind::Present, false)], "{status:?}");
            let r = run(std::slice::from_ref(&f), &[100, 102]);
            assert_eq!(kinds(&r), vec![(Kind::Partial, false)], "{status:?}");
            assert_eq!(r.expected, 0);
        }
    }

    #[test]
    fn mixed_groups_attribute_whole_fragments_when_possible() {
        let ok = frag(1, Status::Ok, 100, 5, 2); // even
        let unk = frag(2, Status::Unknown, 101, 5, 2); // odd
        let frags = [ok, unk];
        // Only the acknowledged fragment: OK, the other absent.
        let r = run(&frags, &range(100, 5, 2));
        assert_eq!(kinds(&r), vec![(Kind::Absent, false)]);
        // Both: OK, the other present.
        let r = run(&frags, &range(100, 10, 1));
        assert_eq!(kinds(&r), vec![(Kind::Present, false)]);
        // Acknowledged one short, nothing of the other: missing.
        let r = run(&frags, &range(100, 4, 2));
        assert_eq!(kinds(&r)[0], (Kind::Missing, true));
        assert_eq!(r.findings[0].ranges[0].2, 1);
        // All acknowledged plus part of the other: with overlapping ranges
        // the checksums cannot tell which acknowledged entries are there,
        // so the group is unconfirmed, which fails the run rather than risk
        // calling a loss present.
        let mut got = range(100, 5, 2);
        got.extend([101, 103]);
        got.sort();
        let r = run(&frags, &got);
        assert_eq!(kinds(&r), vec![(Kind::Partial, true)]);
        assert_eq!(r.findings[0].found, Some(2));
    }

    #[test]
    fn identical_fragments_of_two_runs_count_once() {
        let a = frag(1, Status::Ok, 100, 4, 1);
        let mut b = a.clone();
        b.run = Arc::from("r2");
        let r = run(&[a.clone(), b.clone()], &range(100, 4, 1));
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(r.expected, 4);
        // A store that keeps duplicates holds both copies: information only.
        let r = run(
            &[a.clone(), b.clone()],
            &[100, 100, 101, 101, 102, 102, 103, 103],
        );
        assert_eq!(kinds(&r), vec![(Kind::Duplicated, false)]);
        // One was unknown in its run: still expected once.
        b.status = Status::Unknown;
        let r = run(&[a, b], &range(100, 3, 1));
        assert_eq!(kinds(&r), vec![(Kind::Missing, true)]);
        assert_eq!(r.findings[0].ranges, vec![(103, 103, 1)]);
    }

    #[test]
    fn rounded_metric_values_pass_with_a_note() {
        let (ts, v) = (1000i64, 0.1 + 0.2); // 0.30000000000000004
        let stored = crate::checksum::round_12(v);
        assert_ne!(stored, v);
        let f = Fragment {
            run: Arc::from("r"),
            id: 1,
            status: Status::Ok,
            count: 1,
            first_ts: ts,
            last_ts: ts,
            step: None,
            checksum: metric_sample(ts, v),
            checksum12: Some(metric_sample_12(ts, v)),
            nan: None,
            edges: None,
            values: None,
            maybe_duplicated: false,
            attempts: 1,
            reason: None,
            merged: None,
        };
        let plan = Arc::new(SeriesPlan::new(labels(), std::slice::from_ref(&f)));
        let decimal =
            |p: &Arc<SeriesPlan>| SeriesChecker::new(p.clone()).with_precision(Precision::Decimal);
        let mut c = decimal(&plan);
        c.observe(Seen::sample(ts, stored));
        let r = c.finish();
        assert_eq!(kinds(&r), vec![(Kind::Note, false)]);
        assert!(r.findings[0].detail.contains("decimal precision"));
        // A store that keeps values exactly (Prometheus) must not round.
        let mut c = SeriesChecker::new(plan.clone());
        c.observe(Seen::sample(ts, stored));
        assert_eq!(kinds(&c.finish()), vec![(Kind::Altered, true)]);
        // A different value that rounds differently is altered.
        let mut c = decimal(&plan);
        c.observe(Seen::sample(ts, 0.31));
        assert_eq!(kinds(&c.finish()), vec![(Kind::Altered, true)]);
    }

    /// VictoriaMetrics keeps one decimal exponent per block of a series:
    /// 4.12345678901234 next to 98765432101.2789 comes back as 4.1234567.
    /// That is the store's precision, not an altered value; a value changed
    /// beyond it, or values swapped between timestamps, are altered.
    #[test]
    fn values_within_a_shared_decimal_exponent_pass_and_changes_do_not() {
        let sent = [
            (1000, 98765432101.2789),
            (2000, 4.12345678901234),
            (3000, 2.5),
        ];
        let check = |frags: &[Fragment], read: &[(i64, f64)]| {
            let plan = Arc::new(SeriesPlan::new(labels(), frags));
            let mut c = SeriesChecker::new(plan).with_precision(Precision::Decimal);
            read.iter()
                .for_each(|&(t, v)| c.observe(Seen::sample(t, v)));
            kinds(&c.finish())
        };
        let one = [metric_frag(1, &sent)];
        let stored = [(1000, 98765432101.2789), (2000, 4.1234567), (3000, 2.5)];
        assert_eq!(check(&one, &stored), vec![(Kind::Note, false)]);
        let changed = [(1000, 98765432101.2789), (2000, 4.15), (3000, 2.5)];
        assert_eq!(check(&one, &changed), vec![(Kind::Altered, true)]);
        let swapped = [
            (1000, 98765432101.2789),
            (2000, 2.5),
            (3000, 4.12345678901234),
        ];
        assert_eq!(check(&one, &swapped), vec![(Kind::Altered, true)]);
        // The large value in one fragment, the small one in another: the
        // shared exponent spans fragments, and so does the bound.
        let two = [metric_frag(1, &sent[..1]), metric_frag(2, &sent[1..])];
        assert_eq!(check(&two, &stored), vec![(Kind::Note, false)]);
        assert_eq!(check(&two, &changed), vec![(Kind::Altered, true)]);
        // Overlapping re-pushes are confirmed unit by unit, also within
        // the store's precision.
        let overlap = [metric_frag(1, &sent[..2]), metric_frag(2, &sent[1..])];
        let r = check(&overlap, &stored);
        assert_eq!(r, vec![(Kind::Note, false)]);
        // An acknowledged fragment overlapping one that failed (a
        // different largest value, so a different scale): the failed one
        // is absent, and the acknowledged one passes at its precision.
        let mut failed = metric_frag(2, &[(1500, 7.0), (2500, 8.0)]);
        failed.status = Status::Failed;
        let r = check(&[metric_frag(1, &sent), failed], &stored);
        assert_eq!(r, vec![(Kind::Note, false), (Kind::Absent, false)]);
        // A value read back far larger than anything sent does not widen
        // the tolerance it is judged by.
        let small: Vec<(i64, f64)> = (0..500)
            .map(|i| (i * 1000, 1.0 + (i % 9) as f64 / 7.0))
            .collect();
        let mut huge = small.clone();
        huge[7].1 = 1e18;
        assert_eq!(
            check(&[metric_frag(1, &small)], &huge),
            vec![(Kind::Altered, true)]
        );
        // A large value in another fragment of the series loosens the
        // others only by what the store's shared exponent can do: a small
        // value multiplied by 10 or 1000, or zeroed, is still caught, at
        // whichever timestamp.
        let frags = [metric_frag(1, &[(-1000, 1e15)]), metric_frag(2, &small)];
        let mut read = vec![(-1000, 1e15)];
        read.extend(&small);
        assert_eq!(check(&frags, &read), vec![]);
        for i in 0..small.len() {
            for changed in [small[i].1 * 1000.0, small[i].1 * 10.0, 0.0] {
                let mut r = read.clone();
                r[i + 1].1 = changed;
                assert_eq!(
                    check(&frags, &r),
                    vec![(Kind::Altered, true)],
                    "{i}: {changed}"
                );
            }
        }
    }

    #[test]
    fn inconsistent_step_is_not_trusted() {
        let mut f = frag(1, Status::Ok, 100, 3, 10);
        f.count = 4; // says 4 entries but the grid has 3 points
        let plan = SeriesPlan::new(labels(), &[f]);
        assert!(plan.groups[0].grid.is_none());
    }

    #[test]
    fn missing_ranges_cover_edges() {
        let grid = Grid { step: 5, len: 130 };
        let mut seen = vec![0u64; 3];
        for k in 1..129u64 {
            seen[(k / 64) as usize] |= 1 << (k % 64);
        }
        assert_eq!(
            missing_ranges(&seen, grid, 0),
            vec![(0, 0, 1), (645, 645, 1)]
        );
    }
}
