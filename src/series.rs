//! The series a push has seen: interning of label sets, per-series order
//! bookkeeping, and eviction of idle series so that series churn (label
//! values that keep changing, as `looker-gen --churn-every` makes) does not
//! grow memory without bound.

use std::collections::HashMap;
use std::sync::Arc;

use std::hash::{BuildHasherDefault, Hasher};

use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::batch::Series;
use crate::labels::LabelSet;
use crate::manifest::SeriesKey;
use crate::record::{self, Mode, RecordError};

/// The latest timestamp of a series and the hashes of its entries there.
#[derive(Debug)]
pub struct Latest {
    pub max_ts: i64,
    /// Usually one entry; a set once many share the timestamp, so the
    /// check stays linear in the input.
    at_max: Vec<u64>,
    many: Option<std::collections::HashSet<u64>>,
}

impl Latest {
    fn new() -> Latest {
        Latest {
            max_ts: i64::MIN,
            at_max: Vec::new(),
            many: None,
        }
    }

    /// Whether an entry with this hash was taken at `max_ts`.
    pub fn has(&self, hash: u64) -> bool {
        match &self.many {
            Some(set) => set.contains(&hash),
            None => self.at_max.contains(&hash),
        }
    }

    /// Records an entry taken at `ts` (older timestamps are not tracked).
    pub fn take(&mut self, ts: i64, hash: u64) {
        if ts > self.max_ts {
            self.max_ts = ts;
            self.at_max.clear();
            self.many = None;
        }
        if ts != self.max_ts {
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
}

/// Series by id; ids of evicted series are reused.
pub struct SeriesTable {
    /// Keyed by the 128-bit xxh3 of the labels object as written. This
    /// lookup runs once per entry; with 100k series, keeping the strings
    /// as keys cost two cache misses per entry (a fifth of the pusher's
    /// CPU). A 128-bit hash collides with odds of about 1 in 10^25 for a
    /// million series, far below any hardware fault rate.
    by_json: HashMap<u128, u32, BuildHasherDefault<PreHashed>>,
    /// Keyed by the xxh3 of the canonical labels JSON; the series' own
    /// labels settle a collision, so label sets are not stored twice.
    by_labels: HashMap<u64, Vec<u32>>,
    series: Vec<Option<Arc<Series>>>,
    /// Per series, to refuse input that stores would drop or reorder.
    pub last: Vec<Latest>,
    /// Per series, the eviction pass (see [`SeriesTable::evict`]) current
    /// when it was last used.
    last_used: Vec<u32>,
    free: Vec<u32>,
    lanes: usize,
    /// Eviction passes so far.
    clock: u32,
    /// Lookups since the last pass: one per entry.
    since_pass: u64,
    /// Series known after the last pass.
    live_at_pass: u64,
}

/// Above this many live series, idle ones are evicted.
pub const MAX_LIVE: usize = 10_000;

impl SeriesTable {
    pub fn new(lanes: usize) -> SeriesTable {
        SeriesTable {
            by_json: HashMap::default(),
            by_labels: HashMap::new(),
            series: Vec::new(),
            last: Vec::new(),
            last_used: Vec::new(),
            free: Vec::new(),
            lanes: lanes.max(1),
            clock: 0,
            since_pass: 0,
            live_at_pass: 0,
        }
    }

    /// The id of the series whose labels object is `labels_json`.
    pub fn intern(&mut self, labels_json: &str, mode: Mode) -> Result<u32, RecordError> {
        let key = xxh3_128(labels_json.as_bytes());
        if let Some(&id) = self.by_json.get(&key) {
            self.last_used[id as usize] = self.clock;
            self.since_pass += 1;
            return Ok(id);
        }
        let labels = record::parse_labels(labels_json, mode)?;
        let id = self.intern_set(labels);
        self.by_json.insert(key, id);
        Ok(id)
    }

    fn find(&self, hash: u64, labels: &LabelSet) -> Option<u32> {
        self.by_labels
            .get(&hash)?
            .iter()
            .copied()
            .find(|&id| self.get(id).is_some_and(|s| &s.key.labels == labels))
    }

    pub fn intern_set(&mut self, labels: LabelSet) -> u32 {
        self.since_pass += 1;
        let key = SeriesKey::new(labels);
        let hash = xxh3_64(key.labels_json.as_bytes());
        if let Some(id) = self.find(hash, &key.labels) {
            self.last_used[id as usize] = self.clock;
            return id;
        }
        let labels = key.labels.clone();
        // The lane follows from the labels, not the id: a series evicted
        // and seen again goes to the lane its earlier fragments went to, so
        // they are still sent in order.
        let lane = (hash % self.lanes as u64) as usize;
        let series = Arc::new(Series {
            selector: labels.to_selector(),
            key: Arc::new(key),
            lane,
        });
        let id = match self.free.pop() {
            Some(id) => {
                self.series[id as usize] = Some(series);
                self.last[id as usize] = Latest::new();
                self.last_used[id as usize] = self.clock;
                id
            }
            None => {
                self.series.push(Some(series));
                self.last.push(Latest::new());
                self.last_used.push(self.clock);
                (self.series.len() - 1) as u32
            }
        };
        self.by_labels.entry(hash).or_default().push(id);
        id
    }

    pub fn get(&self, id: u32) -> Option<&Arc<Series>> {
        self.series.get(id as usize).and_then(Option::as_ref)
    }

    pub fn live(&self) -> usize {
        self.series.len() - self.free.len()
    }

    /// When more than [`MAX_LIVE`] series are known, runs a pass that
    /// forgets every series not used since the previous pass, except those
    /// `busy` says still have entries waiting. A pass runs once at least as
    /// many entries as there are series were looked up since the last one,
    /// or once the known series doubled. So a series in use comes back
    /// between two passes (a round over 100k active series takes 100k
    /// entries) and is kept, while churned series, used once and never
    /// again, go: memory stays within a few times the series in use.
    /// (Evicting the least recently used whenever more than MAX_LIVE were
    /// known made every round over many active series parse their labels
    /// again and forgot their order checks.)
    ///
    /// Forgetting is safe for what gets recorded: a series seen again gets
    /// its lane back (the lane follows from its labels), and only its input
    /// checks (metric order, repeats at the latest timestamp) start afresh;
    /// a store then judges such entries and the manifest records its answer.
    pub fn evict(&mut self, busy: impl Fn(u32) -> bool) -> usize {
        let live = self.live() as u64;
        if live <= MAX_LIVE as u64 || (self.since_pass < live && live < 2 * self.live_at_pass) {
            return 0;
        }
        let pass = self.clock;
        self.clock += 1;
        self.since_pass = 0;
        let idle: Vec<u32> = (0..self.series.len() as u32)
            .filter(|&id| {
                self.series[id as usize].is_some()
                    && self.last_used[id as usize] < pass
                    && !busy(id)
            })
            .collect();
        let mut gone = vec![false; self.series.len()];
        let mut n = 0;
        for &id in &idle {
            self.series[id as usize] = None;
            self.last[id as usize] = Latest::new();
            self.free.push(id);
            gone[id as usize] = true;
            n += 1;
        }
        if n > 0 {
            self.by_json.retain(|_, id| !gone[*id as usize]);
            self.by_labels.retain(|_, ids| {
                ids.retain(|id| !gone[*id as usize]);
                !ids.is_empty()
            });
        }
        self.live_at_pass = self.live() as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(i: usize) -> LabelSet {
        LabelSet::new(vec![("s".into(), format!("v{i}"))]).unwrap()
    }

    #[test]
    fn repeats_at_the_latest_timestamp_are_recognised_however_many() {
        let mut l = Latest::new();
        for h in 0..1000u64 {
            assert!(!l.has(h));
            l.take(5, h);
        }
        assert!((0..1000).all(|h| l.has(h)));
        l.take(4, 5000); // older: not tracked
        assert!(!l.has(5000));
        l.take(6, 1);
        assert!(l.has(1) && !l.has(2), "a newer timestamp starts afresh");
    }

    #[test]
    fn the_same_labels_get_the_same_id_and_lane() {
        let mut t = SeriesTable::new(7);
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

    #[test]
    fn above_the_limit_unused_series_go_and_come_back_on_their_lane() {
        let mut t = SeriesTable::new(5);
        for i in 0..MAX_LIVE {
            t.intern_set(labels(i));
        }
        assert_eq!(t.evict(|_| false), 0, "at the limit nothing goes");
        let first = id_of(&t, labels(0));
        let lane_of_first = t.get(first).unwrap().lane;
        t.intern_set(labels(MAX_LIVE)); // one over the limit
                                        // The first pass only starts the clock: everything was used
                                        // before it, so everything is unused since the previous one.
        assert_eq!(t.evict(|_| false), 0, "{}", t.live());
        let busy = id_of(&t, labels(1)); // not used since, but entries wait
        for _ in 0..2 {
            for i in MAX_LIVE / 2..MAX_LIVE + 1 {
                t.intern_set(labels(i));
            }
        }
        let evicted = t.evict(|id| id == busy);
        assert_eq!(
            evicted,
            MAX_LIVE / 2 - 1,
            "those not used since the last pass"
        );
        assert!(t.get(busy).is_some(), "a busy series stays");
        assert!(
            t.get(id_of(&t, labels(MAX_LIVE / 2))).is_some(),
            "used ones stay"
        );
        let back = t.intern_set(labels(0));
        assert_eq!(
            t.get(back).unwrap().lane,
            lane_of_first,
            "an evicted series returns to its lane"
        );
        assert!(t.series.len() <= MAX_LIVE + 1, "ids are reused");
    }

    /// Many series all in use (rounds over 20k active series): none is
    /// forgotten, so their order checks hold; churned series (each used
    /// once) are, so memory stays bounded.
    #[test]
    fn active_series_stay_and_churned_ones_go() {
        let mut t = SeriesTable::new(3);
        let n = MAX_LIVE * 2;
        for _round in 0..5 {
            for i in 0..n {
                t.intern_set(labels(i));
                if i % 4096 == 0 {
                    assert_eq!(t.evict(|_| false), 0);
                }
            }
        }
        assert_eq!(t.live(), n);
        let mut peak = 0;
        for i in n..n * 20 {
            t.intern_set(labels(i));
            if i % 4096 == 0 {
                t.evict(|_| false);
                peak = peak.max(t.live());
            }
        }
        // Bounded by a few times the series in use, not by the 380k
        // churned through.
        assert!(peak <= 3 * n, "{peak}");
    }
}
