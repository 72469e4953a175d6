//! The series a push has seen: interning of label sets, per-series order
//! bookkeeping, and eviction of idle series so that series churn (label
//! values that keep changing, as `looker-gen --churn-every` makes) does not
//! grow memory without bound.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::batch::Series;
use crate::labels::LabelSet;
use crate::manifest::SeriesKey;
use crate::record::{self, Mode, RecordError};

/// The latest timestamp of a series and the hashes of its entries there;
/// for logs, also the entries taken before it, as far back as memory
/// allows.
#[derive(Debug)]
pub struct Latest {
    pub max_ts: i64,
    /// Usually one entry; a set once many share the timestamp, so the
    /// check stays linear in the input.
    at_max: Vec<u64>,
    many: Option<std::collections::HashSet<u64>>,
    /// Logs: (ts, hash) of entries taken below `max_ts`, sorted by
    /// timestamp. Loki keeps an entry repeated anywhere in its stream once,
    /// so an entry that arrives late (replayed files that overlap, a log
    /// concatenated twice) must be told from a repeat of one already
    /// taken. Only the latest are kept: every entry taken with a timestamp
    /// from `covered_from` to `max_ts` is here.
    behind: VecDeque<(i64, u64)>,
    covered_from: i64,
    /// Taken with a `behind` allowance (logs): worth remembering when the
    /// series is forgotten.
    logs: bool,
}

/// Whether an entry repeats one already taken in its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    No,
    Yes,
    /// Older than what the series remembers: it may repeat an entry taken
    /// long ago.
    Unknown,
}

/// Log entries remembered below the latest timestamp, over all series
/// (16 bytes each): each series keeps its share, at least
/// `MIN_BEHIND_PER_SERIES`.
pub const BEHIND_BUDGET: usize = 1 << 19;
const MIN_BEHIND_PER_SERIES: usize = 64;

impl Latest {
    fn new() -> Latest {
        Latest {
            max_ts: i64::MIN,
            at_max: Vec::new(),
            many: None,
            behind: VecDeque::new(),
            covered_from: i64::MIN,
            logs: false,
        }
    }

    /// Whether an entry with this hash was taken at `max_ts`.
    pub fn has(&self, hash: u64) -> bool {
        match &self.many {
            Some(set) => set.contains(&hash),
            None => self.at_max.contains(&hash),
        }
    }

    /// Whether an entry (its timestamp and hash) repeats one taken before.
    /// Below `max_ts`, only what `take` kept with a `behind` allowance
    /// (logs) is known.
    pub fn repeats(&self, ts: i64, hash: u64) -> Repeat {
        // Checked first: a series forgotten and seen again starts above
        // what its earlier life took (see `SeriesTable::gone`).
        if ts < self.covered_from {
            return Repeat::Unknown;
        }
        if ts > self.max_ts {
            return Repeat::No;
        }
        if ts == self.max_ts {
            return if self.has(hash) {
                Repeat::Yes
            } else {
                Repeat::No
            };
        }
        let from = self.behind.partition_point(|e| e.0 < ts);
        let found = self
            .behind
            .range(from..)
            .take_while(|e| e.0 == ts)
            .any(|e| e.1 == hash);
        if found {
            Repeat::Yes
        } else {
            Repeat::No
        }
    }

    /// Records an entry taken at `ts`. Entries below the latest timestamp
    /// are kept (up to `behind` of them) only when `behind` is not 0.
    pub fn take(&mut self, ts: i64, hash: u64, behind: usize) {
        self.logs |= behind > 0;
        if ts > self.max_ts {
            if behind > 0 && self.max_ts != i64::MIN {
                let old = self.max_ts;
                match self.many.take() {
                    Some(set) => set.into_iter().for_each(|h| self.keep(old, h, behind)),
                    None => {
                        for i in 0..self.at_max.len() {
                            let h = self.at_max[i];
                            self.keep(old, h, behind);
                        }
                    }
                }
            }
            self.max_ts = ts;
            self.at_max.clear();
            self.many = None;
        }
        if ts != self.max_ts {
            if behind > 0 {
                self.keep(ts, hash, behind);
            }
            return;
        }
        match &mut self.many {
            Some(set) => {
                set.insert(hash);
            }
            None if self.at_max.len() >= 32 => {
                let mut set: std::collections::HashSet<u64> = self.at_max.drain(..).collect();
                set.insert(hash);
                self.many = Some(set);
            }
            None => self.at_max.push(hash),
        }
    }

    /// Adds an entry below `max_ts` to `behind`, in timestamp order,
    /// forgetting the oldest beyond `cap`.
    fn keep(&mut self, ts: i64, hash: u64, cap: usize) {
        if ts < self.covered_from {
            return;
        }
        while self.behind.len() >= cap {
            match self.behind.pop_front() {
                Some((t, _)) => self.covered_from = self.covered_from.max(t.saturating_add(1)),
                None => break,
            }
        }
        // The allowance shrinks as series are added: give back what an
        // early series grew to.
        if self.behind.capacity() > 2 * cap.max(MIN_BEHIND_PER_SERIES) {
            self.behind.shrink_to(cap);
        }
        if ts < self.covered_from {
            return;
        }
        // In-order input appends; a late entry goes to its place.
        match self.behind.back() {
            Some(&(t, _)) if t > ts => {
                let at = self.behind.partition_point(|e| e.0 <= ts);
                self.behind.insert(at, (ts, hash));
            }
            _ => self.behind.push_back((ts, hash)),
        }
    }
}

/// A hasher for keys that already are hashes: uses their low 64 bits.
#[derive(Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys are hashed with this; fold anything else.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The series sharing one labels hash: almost always one, kept without an
/// allocation of its own (one per series was a few percent of push CPU
/// with many series).
#[derive(Debug)]
pub(crate) enum Ids {
    One(u32),
    Many(Vec<u32>),
}

impl Ids {
    pub(crate) fn as_slice(&self) -> &[u32] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(v) => v,
        }
    }

    pub(crate) fn push(&mut self, id: u32) {
        match self {
            Ids::One(first) => *self = Ids::Many(vec![*first, id]),
            Ids::Many(v) => v.push(id),
        }
    }

    /// Keeps the ids `keep` says to; false when none is left.
    fn retain(&mut self, keep: impl Fn(u32) -> bool) -> bool {
        match self {
            Ids::One(id) => keep(*id),
            Ids::Many(v) => {
                v.retain(|&id| keep(id));
                !v.is_empty()
            }
        }
    }
}

/// Series by id; ids of evicted series are reused.
pub struct SeriesTable {
    /// Keyed by the 128-bit xxh3 of the labels object as written. This
    /// lookup runs once per entry; with 100k series, keeping the strings
    /// as keys cost two cache misses per entry (a fifth of the pusher's
    /// CPU). A 128-bit hash collides with odds of about 1 in 10^25 for a
    /// million series, far below any hardware fault rate.
    by_json: HashMap<u128, u32, BuildHasherDefault<PreHashed>>,
    /// Per series, a key of `by_json` that maps to it (0: none), and the
    /// series looked up after it last time (`NONE`: none). Input usually
    /// repeats one order of series (a generator's or a scrape's round), so
    /// the series after the previous one is checked first: that reads two
    /// arrays in the order of the ids, which the CPU prefetches, where the
    /// map costs a cache miss per entry once the series outgrow the cache
    /// (a third of the pusher's CPU with 100k series).
    json_key: Vec<u128>,
    next: Vec<u32>,
    /// The series of the previous lookup, or `NONE`.
    prev: u32,
    /// Keyed by the xxh3 of the canonical labels JSON; the series' own
    /// labels settle a collision, so label sets are not stored twice.
    by_labels: HashMap<u64, Ids, BuildHasherDefault<PreHashed>>,
    series: Vec<Option<Arc<Series>>>,
    /// Per series, to refuse input that stores would drop or reorder.
    pub last: Vec<Latest>,
    /// Per series, the clock (see [`SeriesTable::tick`]) when it was last
    /// used.
    last_used: Vec<u32>,
    /// Per series, the lookup count (see `lookups`) when it was last used.
    last_lookup: Vec<u64>,
    /// Lookups so far: one per entry.
    lookups: u64,
    /// Series forgotten by the --max-series limit while still in use
    /// (used within IDLE_TICKS).
    pub forced_out: u64,
    free: Vec<u32>,
    lanes: usize,
    /// Seconds since the push started, in the pusher.
    clock: u32,
    /// The clock at the last eviction, which runs at most once per tick.
    evicted_at: Option<u32>,
    /// Above this many known series the least recently used go, idle or
    /// not.
    max_series: usize,
    /// Series forgotten, by the hash of their labels: the latest timestamp
    /// they had taken. One seen again cannot know whether an entry at or
    /// below it repeats one it took before, and says so
    /// (`Repeat::Unknown`). The oldest are dropped beyond `GONE_CAP`.
    gone: HashMap<u64, (i64, u64), BuildHasherDefault<PreHashed>>,
    /// (hash, record number) in the order recorded.
    gone_order: VecDeque<(u64, u64)>,
    gone_seq: u64,
    /// See `behind_allowance`.
    behind_budget: usize,
}

/// Forgotten log series remembered by their latest timestamp (about 50
/// bytes each).
const GONE_CAP: usize = 1 << 18;

/// Above this many known series, idle ones are forgotten.
pub const MAX_LIVE: usize = 10_000;

/// A series unused for this many clock ticks (seconds), and for twice as
/// many entries as there are series, is idle: longer than any usual scrape
/// or log interval, so series in use stay known (and keep their order
/// checks) however many there are, even when a round over them is slow.
pub const IDLE_TICKS: u32 = 60;

/// A series unused for this many ticks is idle whatever the entries since:
/// churned series (used a few times, then never) go after ten minutes.
pub const FORGOTTEN_TICKS: u32 = 600;

/// Default hard limit on known series (`--max-series`): memory stays below
/// about 2 KB times this even when series churn faster than they go idle,
/// plus up to 1 KB per log series for entries remembered below its latest
/// timestamp (`BEHIND_BUDGET`, at least `MIN_BEHIND_PER_SERIES` each).
pub const DEFAULT_MAX_SERIES: usize = 250_000;

/// No series (in `SeriesTable::next` and `prev`).
const NONE: u32 = u32::MAX;

impl SeriesTable {
    /// A table that forgets the least recently used series above
    /// `max_series`.
    pub fn new(lanes: usize, max_series: usize) -> SeriesTable {
        SeriesTable {
            by_json: HashMap::default(),
            json_key: Vec::new(),
            next: Vec::new(),
            prev: NONE,
            by_labels: HashMap::default(),
            series: Vec::new(),
            last: Vec::new(),
            last_used: Vec::new(),
            last_lookup: Vec::new(),
            lookups: 0,
            forced_out: 0,
            free: Vec::new(),
            lanes: lanes.max(1),
            clock: 0,
            evicted_at: None,
            max_series: max_series.max(MAX_LIVE),
            gone: HashMap::default(),
            gone_order: VecDeque::new(),
            gone_seq: 0,
            behind_budget: BEHIND_BUDGET,
        }
    }

    /// The id of the series whose labels object is `labels_json`.
    pub fn intern(&mut self, labels_json: &str, mode: Mode) -> Result<u32, RecordError> {
        let key = xxh3_128(labels_json.as_bytes());
        // Invariant: json_key[id] == key != 0 only while by_json maps key
        // to id, so the guess gives the map's answer.
        if let Some(&guess) = self.next.get(self.prev as usize) {
            if key != 0 && self.json_key.get(guess as usize) == Some(&key) {
                self.touch(guess);
                self.prev = guess;
                return Ok(guess);
            }
        }
        let id = match self.by_json.get(&key) {
            Some(&id) => {
                self.touch(id);
                id
            }
            None => {
                let labels = record::parse_labels(labels_json, mode)?;
                let id = self.intern_set(labels);
                self.by_json.insert(key, id);
                id
            }
        };
        self.json_key[id as usize] = key;
        if let Some(n) = self.next.get_mut(self.prev as usize) {
            *n = id;
        }
        self.prev = id;
        Ok(id)
    }

    fn touch(&mut self, id: u32) {
        self.lookups += 1;
        self.last_used[id as usize] = self.clock;
        self.last_lookup[id as usize] = self.lookups;
    }

    fn find(&self, hash: u64, labels: &LabelSet) -> Option<u32> {
        self.by_labels
            .get(&hash)?
            .as_slice()
            .iter()
            .copied()
            .find(|&id| self.get(id).is_some_and(|s| &s.key.labels == labels))
    }

    pub fn intern_set(&mut self, labels: LabelSet) -> u32 {
        let key = SeriesKey::new(labels);
        let hash = xxh3_64(key.labels_json.as_bytes());
        if let Some(id) = self.find(hash, &key.labels) {
            self.touch(id);
            return id;
        }
        // The lane follows from the labels, not the id: a series evicted
        // and seen again goes to the lane its earlier fragments went to, so
        // they are still sent in order.
        let lane = (hash % self.lanes as u64) as usize;
        let series = Arc::new(Series::new(key, lane));
        let id = match self.free.pop() {
            Some(id) => {
                self.series[id as usize] = Some(series);
                self.last[id as usize] = Latest::new();
                self.next[id as usize] = NONE;
                self.touch(id);
                id
            }
            None => {
                self.series.push(Some(series));
                self.last.push(Latest::new());
                self.last_used.push(0);
                self.last_lookup.push(0);
                self.json_key.push(0);
                self.next.push(NONE);
                let id = (self.series.len() - 1) as u32;
                self.touch(id);
                id
            }
        };
        if let Some((before, _)) = self.gone.remove(&hash) {
            // Returning: an entry up to its earlier latest timestamp may
            // repeat one it took then.
            self.last[id as usize].covered_from = before.saturating_add(1);
        }
        match self.by_labels.entry(hash) {
            Entry::Occupied(mut e) => e.get_mut().push(id),
            Entry::Vacant(e) => {
                e.insert(Ids::One(id));
            }
        }
        id
    }

    pub fn get(&self, id: u32) -> Option<&Arc<Series>> {
        self.series.get(id as usize).and_then(Option::as_ref)
    }

    /// How many log entries below its latest timestamp each series keeps
    /// (see `Latest::take`): an equal share of `BEHIND_BUDGET`.
    pub fn behind_allowance(&self) -> usize {
        let budget = self.behind_budget.max(MIN_BEHIND_PER_SERIES);
        (budget / self.live().max(1)).clamp(MIN_BEHIND_PER_SERIES, budget)
    }

    /// Sets how many log entries below their latest timestamp all series
    /// remember together (`BEHIND_BUDGET` unless set).
    pub fn remembering(mut self, entries: usize) -> SeriesTable {
        self.behind_budget = entries;
        self
    }

    pub fn live(&self) -> usize {
        self.series.len() - self.free.len()
    }

    /// Advances the clock idleness is measured in (seconds, in the pusher).
    pub fn tick(&mut self, now: u32) {
        self.clock = now;
    }

    /// When more than [`MAX_LIVE`] series are known, forgets those idle
    /// (unused for [`IDLE_TICKS`] and for twice as many entries as there
    /// are series, or for [`FORGOTTEN_TICKS`]); above `max_series`, also
    /// the least recently used
    /// others, down to 90% of it. Never a series `busy` says still has
    /// entries waiting. Idle series are looked for at most once per tick. Memory is so bounded by the
    /// series in use within IDLE_TICKS, and by `max_series` whatever the
    /// churn. (Evicting the least recently used whenever more than MAX_LIVE
    /// were known made every round over 100k active series parse their
    /// labels again and forgot their order checks.)
    ///
    /// Forgetting is safe for what gets recorded: a series seen again gets
    /// its lane back (the lane follows from its labels), and only its input
    /// checks (metric order, repeats at the latest timestamp) start afresh;
    /// a store then judges such entries and the manifest records its answer.
    pub fn evict(&mut self, busy: impl Fn(u32) -> bool) -> usize {
        let idle_pass = self.live() > MAX_LIVE && self.evicted_at != Some(self.clock);
        if !idle_pass && self.live() <= self.max_series {
            return 0;
        }
        self.evicted_at = Some(self.clock);
        // Idle: unused for IDLE_TICKS and for twice as many entries as
        // there are series (so neither a slow round over many series nor a
        // stalled store makes series in use look idle). Both grow with the
        // order of use, so the idle series are the least recently used.
        let window = 2 * self.live() as u64;
        let mut candidates: Vec<(u64, u32)> = (0..self.series.len() as u32)
            .filter(|&id| self.series[id as usize].is_some() && !busy(id))
            .map(|id| (self.last_lookup[id as usize], id))
            .collect();
        let is_idle = |id: u32| {
            let used = self.last_used[id as usize];
            used.saturating_add(FORGOTTEN_TICKS) <= self.clock
                || (used.saturating_add(IDLE_TICKS) <= self.clock
                    && self.lookups - self.last_lookup[id as usize] >= window)
        };
        let idle = candidates.iter().filter(|(_, id)| is_idle(*id)).count();
        let over = self.live().saturating_sub(self.max_series / 10 * 9);
        let n_go = if self.live() > self.max_series {
            idle.max(over)
        } else {
            idle
        };
        let n_go = n_go.min(candidates.len());
        if n_go == 0 {
            return 0;
        }
        candidates.select_nth_unstable(n_go - 1);
        candidates.truncate(n_go);
        self.forced_out += candidates.iter().filter(|(_, id)| !is_idle(*id)).count() as u64;
        let mut gone = vec![false; self.series.len()];
        let mut n = 0;
        for &(_, id) in &candidates {
            let Latest { max_ts, logs, .. } = self.last[id as usize];
            if let (Some(s), true) = (&self.series[id as usize], logs && max_ts != i64::MIN) {
                let h = xxh3_64(s.key.labels_json.as_bytes());
                self.gone_seq += 1;
                let seq = self.gone_seq;
                let t = self.gone.entry(h).or_insert((i64::MIN, seq));
                *t = (t.0.max(max_ts), seq);
                self.gone_order.push_back((h, seq));
                if self.gone_order.len() > GONE_CAP {
                    if let Some((old, seq)) = self.gone_order.pop_front() {
                        if self.gone.get(&old).is_some_and(|t| t.1 == seq) {
                            self.gone.remove(&old);
                        }
                    }
                }
            }
            self.series[id as usize] = None;
            self.last[id as usize] = Latest::new();
            self.json_key[id as usize] = 0;
            self.free.push(id);
            gone[id as usize] = true;
            n += 1;
        }
        if n > 0 {
            self.by_json.retain(|_, id| !gone[*id as usize]);
            self.by_labels
                .retain(|_, ids| ids.retain(|id| !gone[id as usize]));
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Series whose labels share a hash (as good as never with a 64-bit
    /// hash, so not reachable through the table) are all kept and let go.
    #[test]
    fn ids_of_one_hash_are_kept_and_let_go() {
        let mut ids = Ids::One(3);
        assert_eq!(ids.as_slice(), [3]);
        ids.push(8);
        ids.push(5);
        assert_eq!(ids.as_slice(), [3, 8, 5]);
        assert!(ids.retain(|id| id != 8));
        assert_eq!(ids.as_slice(), [3, 5]);
        assert!(!ids.retain(|_| false));
        assert!(!Ids::One(1).retain(|id| id != 1));
        assert!(Ids::One(1).retain(|id| id == 1));
    }

    fn labels(i: usize) -> LabelSet {
        LabelSet::new(vec![("s".into(), format!("v{i}"))]).unwrap()
    }

    #[test]
    fn repeats_at_the_latest_timestamp_are_recognised_however_many() {
        let mut l = Latest::new();
        for h in 0..1000u64 {
            assert!(!l.has(h));
            l.take(5, h, 0);
        }
        assert!((0..1000).all(|h| l.has(h)));
        l.take(4, 5000, 0); // older: not tracked without an allowance
        assert!(!l.has(5000));
        assert_eq!(l.repeats(4, 5000), Repeat::No);
        l.take(6, 1, 0);
        assert!(l.has(1) && !l.has(2), "a newer timestamp starts afresh");
    }

    /// Log input that goes back in time (overlapping files replayed one
    /// after the other) repeats entries below the latest timestamp; Loki
    /// keeps them once, so they must be recognised as far back as the
    /// allowance goes, and reported unknown beyond it.
    #[test]
    fn late_entries_are_told_from_repeats_as_far_back_as_remembered() {
        let cap = 100;
        let mut l = Latest::new();
        // ts 0..200, two entries each (hashes 2t and 2t+1).
        for t in 0..200i64 {
            for h in [2 * t as u64, 2 * t as u64 + 1] {
                assert_eq!(l.repeats(t, h), Repeat::No);
                l.take(t, h, cap);
            }
        }
        assert_eq!(l.repeats(199, 398), Repeat::Yes, "at the latest timestamp");
        // The last `cap` entries below 199 are remembered: ts 149..=198.
        for t in 149..199i64 {
            assert_eq!(l.repeats(t, 2 * t as u64 + 1), Repeat::Yes, "{t}");
            assert_eq!(l.repeats(t, 9999), Repeat::No, "{t}: new content");
        }
        for t in [0, 100, 148] {
            assert_eq!(l.repeats(t, 2 * t as u64), Repeat::Unknown, "{t}");
        }
        // A late new entry is remembered in its place, and a repeat of it
        // is then recognised, past newer entries at the same timestamp.
        l.take(170, 7777, cap);
        assert_eq!(l.repeats(170, 7777), Repeat::Yes);
        assert_eq!(l.repeats(170, 341), Repeat::Yes);
        // The timestamp moves on: the previous latest entries are behind.
        l.take(300, 1, cap);
        assert_eq!(l.repeats(199, 399), Repeat::Yes);
        assert_eq!(l.repeats(300, 1), Repeat::Yes);
        assert_eq!(
            l.repeats(150, 300),
            Repeat::Unknown,
            "forgotten to make room, with what is older"
        );
        // Never more than the allowance.
        assert!(l.behind.len() <= cap);
    }

    #[test]
    fn the_same_labels_get_the_same_id_and_lane() {
        let mut t = SeriesTable::new(7, DEFAULT_MAX_SERIES);
        let a = t.intern(r#"{"s":"v1"}"#, Mode::Logs).unwrap();
        let b = t.intern(r#"{ "s" : "v1" }"#, Mode::Logs).unwrap();
        assert_eq!(a, b, "differently written, same series");
        assert_ne!(a, t.intern_set(labels(2)));
    }

    fn id_of(t: &SeriesTable, l: LabelSet) -> u32 {
        t.find(
            xxh3_64(SeriesKey::new(l.clone()).labels_json.as_bytes()),
            &l,
        )
        .unwrap()
    }

    /// A log series forgotten and seen again cannot tell a repeat of what
    /// it took before: entries up to its earlier latest timestamp are
    /// unknown, later ones are new.
    #[test]
    fn a_forgotten_log_series_seen_again_knows_what_it_cannot_check() {
        let mut t = SeriesTable::new(1, DEFAULT_MAX_SERIES);
        let s = t.intern_set(labels(0));
        let m = t.intern_set(labels(1)); // a metric series: no allowance
        for ts in 0..100 {
            t.last[s as usize].take(ts, ts as u64, 64);
            t.last[m as usize].take(ts, ts as u64, 0);
        }
        for i in 2..=MAX_LIVE {
            t.intern_set(labels(i));
        }
        t.tick(FORGOTTEN_TICKS);
        for i in 2..=MAX_LIVE {
            t.intern_set(labels(i));
        }
        assert!(t.evict(|_| false) >= 2);
        assert!(t.get(s).is_none() && t.get(m).is_none(), "both forgotten");
        let s = t.intern_set(labels(0));
        let l = &t.last[s as usize];
        assert_eq!(l.repeats(50, 50), Repeat::Unknown);
        assert_eq!(l.repeats(99, 99), Repeat::Unknown);
        assert_eq!(l.repeats(100, 7), Repeat::No);
        let m = t.intern_set(labels(1));
        assert_eq!(
            t.last[m as usize].repeats(50, 50),
            Repeat::No,
            "metrics: not remembered"
        );
    }

    #[test]
    fn above_the_limit_idle_series_go_and_come_back_on_their_lane() {
        let mut t = SeriesTable::new(5, DEFAULT_MAX_SERIES);
        for i in 0..MAX_LIVE {
            t.intern_set(labels(i));
        }
        assert_eq!(t.evict(|_| false), 0, "at the limit nothing goes");
        let first = id_of(&t, labels(0));
        let lane_of_first = t.get(first).unwrap().lane;
        let busy = id_of(&t, labels(1)); // idle, but entries still wait
        t.tick(IDLE_TICKS - 1);
        for _ in 0..5 {
            for i in MAX_LIVE / 2..MAX_LIVE + 1 {
                t.intern_set(labels(i));
            }
        }
        assert_eq!(t.evict(|_| false), 0, "nobody idle for long enough yet");
        t.tick(IDLE_TICKS);
        assert_eq!(
            t.evict(|id| id == busy),
            MAX_LIVE / 2 - 1,
            "the idle ones go"
        );
        assert!(t.get(busy).is_some(), "a busy series stays");
        assert!(
            t.get(id_of(&t, labels(MAX_LIVE / 2))).is_some(),
            "used ones stay"
        );
        assert_eq!(t.evict(|_| false), 0, "once per tick");
        let back = t.intern_set(labels(0));
        assert_eq!(
            t.get(back).unwrap().lane,
            lane_of_first,
            "an evicted series returns to its lane"
        );
        assert!(t.series.len() <= MAX_LIVE + 1, "ids are reused");
    }

    /// The guess of the next series must never return another series:
    /// rounds in one order, rounds in another, random jumps, spellings of
    /// the same labels, and evictions that hand ids to new label sets.
    #[test]
    fn lookups_by_guess_always_find_the_series_of_the_labels() {
        let mut t = SeriesTable::new(3, MAX_LIVE);
        let json = |i: usize, spaced: bool| {
            if spaced {
                format!(r#"{{ "s" : "v{i}" }}"#)
            } else {
                format!(r#"{{"s":"v{i}"}}"#)
            }
        };
        let check = |t: &mut SeriesTable, i: usize, spaced: bool| {
            let id = t.intern(&json(i, spaced), Mode::Logs).unwrap();
            assert_eq!(
                t.get(id).unwrap().key.labels,
                labels(i),
                "lookup of v{i} (spaced: {spaced})"
            );
        };
        let mut x: u64 = 7;
        let mut rand = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for round in 0..30u32 {
            t.tick(round * 100);
            // Churn: the label values in use move on every few rounds, so
            // evictions reuse ids for other labels.
            let base = (round as usize / 3) * 4000;
            let n = 6000;
            for k in 0..n {
                let i = match round % 3 {
                    0 => base + k,
                    1 => base + n - 1 - k,
                    _ => base + rand(n),
                };
                check(&mut t, i, rand(10) == 0);
            }
            t.evict(|_| false);
        }
        assert!(t.series.len() <= 2 * MAX_LIVE, "ids were reused");
    }

    /// A series forgotten between two lookups of its predecessor is
    /// looked up afresh, not taken from the guess.
    #[test]
    fn a_forgotten_series_is_not_guessed() {
        let mut t = SeriesTable::new(3, MAX_LIVE);
        let json = |i: usize| format!(r#"{{"s":"v{i}"}}"#);
        let a = t.intern(&json(0), Mode::Logs).unwrap();
        let e = t.intern(&json(1), Mode::Logs).unwrap();
        for i in 2..MAX_LIVE + 2 {
            t.intern(&json(i), Mode::Logs).unwrap();
        }
        t.tick(FORGOTTEN_TICKS);
        assert_eq!(t.evict(|id| id == a), MAX_LIVE + 1);
        assert!(t.get(e).is_none());
        assert_eq!(t.intern(&json(0), Mode::Logs).unwrap(), a);
        let e2 = t.intern(&json(1), Mode::Logs).unwrap();
        assert_eq!(t.get(e2).map(|s| &s.key.labels), Some(&labels(1)));
        let x = t.intern(&json(MAX_LIVE + 5), Mode::Logs).unwrap();
        assert_eq!(t.get(x).map(|s| &s.key.labels), Some(&labels(MAX_LIVE + 5)));
    }

    /// Rounds over 100k series all in use, each every 15 s (a scrape
    /// interval): none is forgotten, so their order checks hold. Churn
    /// faster than series go idle is bounded by max_series.
    #[test]
    fn series_in_use_stay_and_churn_is_bounded() {
        let mut t = SeriesTable::new(3, 50_000);
        let mut t2 = SeriesTable::new(3, 200_000);
        let n = 100_000;
        for round in 0..5u32 {
            t2.tick(round * 15);
            for i in 0..n {
                t2.intern_set(labels(i));
            }
            assert_eq!(t2.evict(|_| false), 0);
        }
        assert_eq!(t2.live(), n);
        let mut peak = 0;
        for i in 0..n * 4 {
            t.tick((i / 50_000) as u32);
            t.intern_set(labels(i));
            if i % 4096 == 0 {
                t.evict(|_| false);
                peak = peak.max(t.live());
            }
        }
        assert!(peak <= 50_000 + 4096, "{peak}");
    }

    /// A round over 100k series that takes longer than IDLE_TICKS (a slow
    /// rate, or a store that stalls the push): the series are still in
    /// use, so none is forgotten; the --max-series limit does forget, and
    /// says so.
    #[test]
    fn slow_rounds_keep_their_series_and_the_limit_reports_what_it_forced_out() {
        let mut t = SeriesTable::new(3, 1_000_000);
        let n = 100_000;
        for round in 0..4u32 {
            for i in 0..n {
                t.tick(round * 200 + (i / 1000) as u32);
                t.intern_set(labels(i));
                if i % 4096 == 0 {
                    assert_eq!(t.evict(|_| false), 0, "round {round}, entry {i}");
                }
            }
        }
        assert_eq!(t.forced_out, 0);
        let mut small = SeriesTable::new(3, 50_000);
        for i in 0..n {
            small.intern_set(labels(i));
            if i % 4096 == 0 {
                small.evict(|_| false);
            }
        }
        assert!(small.forced_out > 0);
    }

    /// Series used once and never again (churn) are forgotten after
    /// FORGOTTEN_TICKS even though fewer entries than twice the series
    /// count followed them; series still in use stay.
    #[test]
    fn churned_series_go_after_ten_minutes() {
        let mut t = SeriesTable::new(3, DEFAULT_MAX_SERIES);
        for i in 0..50_000 {
            t.intern_set(labels(i));
        }
        t.tick(IDLE_TICKS + 1);
        t.intern_set(labels(0)); // one still in use
        assert_eq!(t.evict(|_| false), 0, "not enough entries since");
        t.tick(FORGOTTEN_TICKS);
        t.intern_set(labels(0));
        assert_eq!(t.evict(|_| false), 50_000 - 1);
        assert_eq!(t.forced_out, 0);
    }
}
