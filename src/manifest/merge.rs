//! Runs of small fragments read as one. A paced push makes fragments of
//! one to three entries, and verifying each costs about a kilobyte;
//! consecutive small fragments of a series that were acknowledged once
//! and continue one time grid are read as one, and split again where
//! anything else shares their time.

use super::{Edges, Fragment, Status};

/// Small acknowledged fragments of a series read as one: what each was,
/// so the run can be split again (about 40 bytes a part, against a
/// kilobyte for a fragment being verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub parts: Vec<Part>,
}

/// One fragment of a merged run (status ok, acknowledged once). Its
/// times follow from the run's: parts continue one grid, in order. Its
/// `checksum12` counts when the run has one, and its edges are kept only
/// when they are not its checksum (more than one entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub id: u64,
    pub count: u32,
    pub checksum: u64,
    pub checksum12: u64,
    pub edges: Option<Box<Edges>>,
}

impl Part {
    fn of(f: &Fragment) -> Part {
        Part {
            id: f.id,
            // Mergeable fragments hold at most MERGE_FRAGMENTS_UP_TO.
            count: f.count as u32,
            checksum: f.checksum,
            checksum12: f.checksum12.unwrap_or(0),
            edges: f.edges.clone().filter(|_| f.count > 1),
        }
    }
}

/// Fragments of at most this many entries are merged on loading...
pub const MERGE_FRAGMENTS_UP_TO: u64 = 16;
/// ...into runs of at most this many: a default fragment's size, so a
/// finding about a run is no coarser than one about a default push.
pub const MERGED_UP_TO: u64 = 500;

impl Fragment {
    /// The fragments of the manifest this one stands for.
    pub fn parts(&self) -> u64 {
        self.merged.as_ref().map_or(1, |m| m.parts.len() as u64)
    }

    /// (last id, parts) of a merged run.
    pub fn merged_ids(&self) -> Option<(u64, u64)> {
        let m = self.merged.as_ref()?;
        Some((m.parts.last()?.id, m.parts.len() as u64))
    }

    /// A merged run as the fragments it was read from (value sums, which
    /// only stores that round values use, are not kept); else itself.
    pub fn split(self) -> Vec<Fragment> {
        let Some(m) = self.merged else {
            return vec![self];
        };
        // A merged run always has a step: the gap between its parts.
        let step = self.step.unwrap_or(0);
        let mut first_ts = self.first_ts;
        m.parts
            .into_iter()
            .map(|p| {
                let count = u64::from(p.count);
                let last_ts = first_ts + step * (count as i64 - 1);
                let f = Fragment {
                    run: self.run.clone(),
                    id: p.id,
                    status: Status::Ok,
                    count,
                    first_ts,
                    last_ts,
                    step: (count > 1).then_some(step),
                    checksum: p.checksum,
                    checksum12: self.checksum12.map(|_| p.checksum12),
                    nan: None,
                    values: None,
                    edges: match (&self.edges, p.edges) {
                        (None, _) => None,
                        (Some(_), Some(e)) => Some(e),
                        (Some(_), None) => Some(Box::new(Edges {
                            first: vec![p.checksum],
                            last: vec![p.checksum],
                        })),
                    },
                    maybe_duplicated: false,
                    attempts: 1,
                    reason: None,
                    merged: None,
                };
                first_ts = last_ts + step;
                f
            })
            .collect()
    }

    /// Whether the fragment may be merged with its neighbours: small,
    /// acknowledged once, and on an exact time grid (its entries `step`
    /// apart, or a single one).
    pub(super) fn mergeable(&self) -> bool {
        self.count <= MERGE_FRAGMENTS_UP_TO && self.mergeable_run()
    }

    /// Takes `next` (mergeable, of the same series) into this run of
    /// fragments if it continues it: same run, the next entries of the
    /// same time grid, and sums that add up. A paced push makes fragments
    /// of one to three entries; read one by one they cost the verifier
    /// about a kilobyte each. The merged fragment is checked as one: its
    /// checksums are the sums of the parts', and its step still names
    /// every missing timestamp.
    pub(super) fn absorb(&mut self, next: &Fragment) -> bool {
        if !next.mergeable()
            || !self.mergeable_run()
            || self.run != next.run
            || self.count + next.count > MERGED_UP_TO
        {
            return false;
        }
        let gap = next.first_ts.checked_sub(self.last_ts);
        let step = match (gap, self.step, next.step) {
            (Some(g), a, b)
                if g > 0 && a.map_or(true, |a| a == g) && b.map_or(true, |b| b == g) =>
            {
                g
            }
            _ => return false,
        };
        let checksum12 = match (self.checksum12, next.checksum12) {
            (Some(a), Some(b)) => Some(a.wrapping_add(b)),
            (None, None) => None,
            _ => return false,
        };
        // Value sums of different scales do not add up; they only serve
        // stores that round values, for which nothing is merged.
        let values = match (&self.values, &next.values) {
            (Some(a), Some(b)) => a.merged(b).map(Box::new),
            _ => None,
        };
        let edges = match (&self.edges, &next.edges) {
            (Some(a), Some(b)) => Some(Box::new(Edges {
                first: a.first.clone(),
                last: b.last.clone(),
            })),
            (None, None) => None,
            _ => return false,
        };
        let first = Part::of(self);
        self.merged
            .get_or_insert_with(|| Box::new(Merged { parts: vec![first] }))
            .parts
            .push(Part::of(next));
        self.count += next.count;
        self.last_ts = next.last_ts;
        self.step = Some(step);
        self.checksum = self.checksum.wrapping_add(next.checksum);
        self.checksum12 = checksum12;
        self.values = values;
        self.edges = edges;
        true
    }

    /// `mergeable`, whatever the size (a run merged so far).
    fn mergeable_run(&self) -> bool {
        self.status == Status::Ok
            && !self.maybe_duplicated
            && self.nan.is_none()
            && self.reason.is_none()
            && match (self.count, self.step) {
                (1, _) => self.first_ts == self.last_ts,
                (n, Some(step)) => {
                    step > 0
                        && self.last_ts.checked_sub(self.first_ts) == Some(step * (n as i64 - 1))
                }
                _ => false,
            }
    }
}

/// A run that takes no more parts: its list of parts at its size.
pub(super) fn closed(mut run: Fragment) -> Fragment {
    if let Some(m) = run.merged.as_mut() {
        m.parts.shrink_to_fit();
    }
    run
}

/// Splits every merged run that shares time with another fragment of its
/// series (a re-push, input out of order, a refused fragment reaching
/// into it): where fragments overlap, the verifier judges the fragments
/// as pushed, and a run would make it compare different contents.
pub(super) fn split_shared_runs(frags: Vec<Fragment>) -> Vec<Fragment> {
    if frags.iter().all(|f| f.merged.is_none()) {
        return frags;
    }
    overlap_groups(frags)
        .into_iter()
        .flat_map(|g| {
            if g.len() > 1 {
                g.into_iter().flat_map(Fragment::split).collect()
            } else {
                g
            }
        })
        .collect()
}

/// Fragments of one series in groups that share time: sorted by range,
/// a group ends where the next fragment starts after every range in it
/// (ranges inclusive; a reversed range counts as the range it spans).
/// The verifier judges each group on its own.
pub fn overlap_groups(mut frags: Vec<Fragment>) -> Vec<Vec<Fragment>> {
    let span = |f: &Fragment| (f.first_ts.min(f.last_ts), f.first_ts.max(f.last_ts));
    frags.sort_by_key(span);
    let mut groups = Vec::new();
    let mut cur: Vec<Fragment> = Vec::new();
    let mut end = i64::MIN;
    for f in frags {
        let (a, b) = span(&f);
        if !cur.is_empty() && a > end {
            groups.push(std::mem::take(&mut cur));
        }
        end = if cur.is_empty() { b } else { end.max(b) };
        cur.push(f);
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}
