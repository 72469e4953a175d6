//! Batching: records become per-series fragments, fragments become push
//! messages.
//!
//! A fragment holds up to `fragment_size` consecutive entries of one
//! series; a message holds fragments of different series for one lane.
//! Each series is bound to one lane (by id), and each lane sends one
//! message at a time, so two fragments of a series are never in flight at
//! once and per-series order is kept (Prometheus rejects out-of-order
//! samples).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checksum::{self, Digest, ValueSums};
use crate::manifest::{Edges, FragmentMeta, NanInfo, SeriesKey};
use crate::record::Mode;

/// A series known to the pusher.
#[derive(Debug)]
pub struct Series {
    pub key: Arc<SeriesKey>,
    /// The Loki `labels` string, computed on first use (metrics never
    /// need it, and with many series it cost 4% of push CPU).
    selector: std::sync::OnceLock<String>,
    pub lane: usize,
    /// The remote-write `Label` fields, encoded on first use: one read
    /// instead of one per label string, for every fragment of a series.
    remote_write_labels: std::sync::OnceLock<Box<[u8]>>,
}

impl Series {
    pub fn new(key: SeriesKey, lane: usize) -> Series {
        Series {
            selector: std::sync::OnceLock::new(),
            key: Arc::new(key),
            lane,
            remote_write_labels: std::sync::OnceLock::new(),
        }
    }

    /// The remote-write `Label` fields of this series.
    pub fn remote_write_labels(&self) -> &[u8] {
        self.remote_write_labels
            .get_or_init(|| crate::encode::remote_write_labels(&self.key.labels))
    }

    /// The Loki `labels` string, `{name="value", ...}`.
    pub fn selector(&self) -> &str {
        self.selector.get_or_init(|| self.key.labels.to_selector())
    }
}

/// Entries of one fragment, stored without per-entry allocation.
#[derive(Debug)]
pub enum Entries {
    /// Log lines concatenated in `data`; line i is `data[ends[i-1]..ends[i]]`.
    Lines {
        data: Vec<u8>,
        ends: Vec<u32>,
    },
    Values(Vec<f64>),
}

/// Up to `fragment_size` consecutive entries of one series.
#[derive(Debug)]
pub struct Fragment {
    pub series: Arc<Series>,
    pub ts: Vec<i64>,
    pub entries: Entries,
    pub digest: Digest,
    digest12: Digest,
    /// NaN samples: their count and the digests of the fragment without
    /// them (VictoriaMetrics drops NaN values on ingest).
    nan: NanInfo,
    /// Extra bytes the entries take once escaped for a JSON body.
    escaped_extra: usize,
    step: Option<i64>,
    steady: bool,
    /// Earliest and latest timestamp: input may be out of order (Loki
    /// takes it so), and the range must hold every entry.
    min_ts: i64,
    max_ts: i64,
    /// Logs: hashes of the entries at `min_ts` and at `max_ts`, so a
    /// verifier can tell which entries of a timestamp a fragment holds
    /// when another cut of the same input splits that timestamp
    /// elsewhere. None once more than EDGE_CAP share one of them.
    edges: Option<Edges>,
    pub opened: Instant,
}

/// Edge timestamps with more entries than this are not recorded; the
/// verifier then judges without them.
pub const EDGE_CAP: usize = 64;

impl Fragment {
    fn new(series: Arc<Series>, mode: Mode, cap: usize) -> Fragment {
        // Start empty and grow: with many slow series, reserving a full
        // fragment for each open one would cost memory per series.
        let _ = cap;
        let entries = match mode {
            Mode::Logs => Entries::Lines {
                data: Vec::new(),
                ends: Vec::new(),
            },
            Mode::Metrics => Entries::Values(Vec::new()),
        };
        Fragment {
            series,
            ts: Vec::new(),
            entries,
            digest: Digest::default(),
            digest12: Digest::default(),
            nan: NanInfo::default(),
            escaped_extra: 0,
            step: None,
            steady: true,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            edges: (mode == Mode::Logs).then(Edges::default),
            opened: Instant::now(),
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Payload bytes (line bytes, or 16 per sample).
    pub fn bytes(&self) -> usize {
        match &self.entries {
            Entries::Lines { data, .. } => data.len(),
            Entries::Values(v) => v.len() * 16,
        }
    }

    fn note_ts(&mut self, ts: i64) {
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        if let Some(&prev) = self.ts.last() {
            let d = ts - prev;
            match self.step {
                None => self.step = Some(d),
                Some(s) if s != d => self.steady = false,
                _ => {}
            }
        }
        self.ts.push(ts);
    }

    /// `hash` is `checksum::log_entry(ts, line)`, which the caller has.
    fn push_line(&mut self, ts: i64, line: &str, hash: u64, json: bool) {
        if json {
            // Bytes JSON escaping adds (6 for a control character, as
            // \u00XX, is the most), so message size limits hold.
            self.escaped_extra += line
                .bytes()
                .map(|b| match b {
                    b'"' | b'\\' => 1,
                    0..=0x1f => 5,
                    _ => 0,
                })
                .sum::<usize>();
        }
        let (min, max) = (self.min_ts, self.max_ts);
        self.note_ts(ts);
        debug_assert_eq!(hash, checksum::log_entry(ts, line.as_bytes()));
        self.digest.add(hash);
        if let Some(e) = &mut self.edges {
            if ts < min {
                e.first.clear();
            }
            if ts <= min {
                e.first.push(hash);
            }
            if ts > max {
                e.last.clear();
            }
            if ts >= max {
                e.last.push(hash);
            }
            if e.first.len() > EDGE_CAP || e.last.len() > EDGE_CAP {
                self.edges = None;
            }
        }
        if let Entries::Lines { data, ends } = &mut self.entries {
            data.extend_from_slice(line.as_bytes());
            ends.push(data.len() as u32);
        }
    }

    /// `h` is `checksum::metric_sample(ts, value)`, which the caller has.
    fn push_value(&mut self, ts: i64, value: f64, h: u64) {
        self.note_ts(ts);
        debug_assert_eq!(h, checksum::metric_sample(ts, value));
        // Most values (integers: counters, buckets) are their own
        // rounding, and then their hash is `h`: no second hash.
        let r = checksum::round_12(value);
        let h12 = if r.to_bits() == value.to_bits() {
            h
        } else {
            checksum::metric_sample(ts, r)
        };
        self.digest.add(h);
        self.digest12.add(h12);
        if value.is_nan() {
            self.nan.count += 1;
        } else {
            self.nan.checksum = self.nan.checksum.wrapping_add(h);
            self.nan.checksum12 = self.nan.checksum12.wrapping_add(h12);
        }
        if let Entries::Values(v) = &mut self.entries {
            v.push(value);
        }
    }

    /// Iterates (ts, line) of a log fragment.
    pub fn lines(&self) -> impl Iterator<Item = (i64, &str)> {
        let (data, ends): (&[u8], &[u32]) = match &self.entries {
            Entries::Lines { data, ends } => (data, ends),
            Entries::Values(_) => (&[], &[]),
        };
        let mut start = 0usize;
        self.ts.iter().zip(ends.iter()).map(move |(&ts, &end)| {
            let s = &data[start..end as usize];
            start = end as usize;
            // Lines were pushed as &str, so every slice is valid UTF-8.
            (ts, std::str::from_utf8(s).unwrap_or_default())
        })
    }

    /// Iterates (ts, value) of a metric fragment.
    pub fn samples(&self) -> impl Iterator<Item = (i64, f64)> + Clone + '_ {
        let vals: &[f64] = match &self.entries {
            Entries::Values(v) => v,
            Entries::Lines { .. } => &[],
        };
        self.ts.iter().copied().zip(vals.iter().copied())
    }

    pub fn meta(&self, id: u64, mode: Mode) -> FragmentMeta {
        // A small fragment's samples are recorded instead of their sums,
        // which the manifest reader computes from them: in a paced run
        // most fragments are that small.
        let samples: Option<Vec<(i64, f64)>> = (mode == Mode::Metrics
            && self.ts.len() <= crate::manifest::INLINE_SAMPLES
            && self.samples().all(|(_, v)| v.is_finite()))
        .then(|| self.samples().collect());
        FragmentMeta {
            id,
            series: self.series.key.clone(),
            digest: self.digest,
            digest12: (mode == Mode::Metrics).then_some(self.digest12.sum),
            nan: (self.nan.count > 0).then_some(self.nan),
            // Computed once the fragment is complete: the curve's scale
            // depends on its largest value.
            values: (mode == Mode::Metrics && samples.is_none())
                .then(|| ValueSums::of(self.samples())),
            first_ts: if self.ts.is_empty() { 0 } else { self.min_ts },
            last_ts: if self.ts.is_empty() { 0 } else { self.max_ts },
            edges: self.edges.clone(),
            samples,
            step: if self.steady && self.ts.len() > 1 {
                self.step
            } else {
                None
            },
            bytes: self.bytes() as u64,
        }
    }
}

/// A full message ready to encode: fragments of one lane.
#[derive(Debug)]
pub struct Batch {
    pub lane: usize,
    pub fragments: Vec<Fragment>,
    pub metas: Vec<FragmentMeta>,
    pub entries: usize,
    pub bytes: usize,
}

/// Limits that close fragments and messages.
/// Fragments per message unless set: a Loki push of 20 streams; a remote
/// write of up to 500 series, as a Prometheus server sends (with one or
/// two samples per series in a paced run, 20 would make tiny requests
/// whose overhead costs the pusher and the store more than the samples).
pub fn default_fragments_per_message(mode: Mode) -> usize {
    match mode {
        Mode::Logs => 20,
        Mode::Metrics => 500,
    }
}

#[derive(Debug, Clone)]
pub struct BatchLimits {
    pub fragment_size: usize,
    /// None: `DEFAULT_FRAGMENTS_PER_MESSAGE` for the mode.
    pub fragments_per_message: Option<usize>,
    pub max_message_bytes: usize,
    pub linger: Duration,
}

struct LaneBuilder {
    fragments: Vec<Fragment>,
    metas: Vec<FragmentMeta>,
    entries: usize,
    bytes: usize,
    opened: Instant,
}

/// Groups entries into fragments and fragments into per-lane messages.
pub struct Batcher {
    mode: Mode,
    limits: BatchLimits,
    /// Fragments per message, resolved for the mode.
    per_message: usize,
    open: Vec<Option<Fragment>>,
    lanes: Vec<LaneBuilder>,
    next_id: u64,
    /// Bytes of protobuf/JSON overhead counted per entry, so the message
    /// byte limit holds for the encoded request, not just the payload.
    per_entry_overhead: usize,
    last_sweep: Instant,
    json: bool,
}

impl Batcher {
    pub fn new(mode: Mode, limits: BatchLimits, lanes: usize) -> Batcher {
        Batcher {
            mode,
            per_entry_overhead: match mode {
                Mode::Logs => 32,
                Mode::Metrics => 24,
            },
            per_message: limits
                .fragments_per_message
                .unwrap_or_else(|| default_fragments_per_message(mode)),
            limits,
            open: Vec::new(),
            lanes: (0..lanes.max(1))
                .map(|_| LaneBuilder {
                    fragments: Vec::new(),
                    metas: Vec::new(),
                    entries: 0,
                    bytes: 0,
                    opened: Instant::now(),
                })
                .collect(),
            next_id: 1,
            last_sweep: Instant::now(),
            json: false,
        }
    }

    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Adds a log line; `out` receives any batch that became full.
    /// Adds a log entry whose hash is `hash` (see `checksum::log_entry`).
    #[allow(clippy::too_many_arguments)]
    pub fn push_line(
        &mut self,
        series: &Arc<Series>,
        id: u32,
        ts: i64,
        line: &str,
        hash: u64,
        out: &mut Vec<Batch>,
    ) {
        let json = self.json;
        let frag = self.fragment_for(series, id);
        frag.push_line(ts, line, hash, json);
        self.after_push(id, out);
    }

    /// Makes room for `n` more entries in the open fragment of series
    /// `id`, if it has one: a series or stream line says how many are
    /// coming, which spares the fragment its growth steps.
    pub fn reserve(&mut self, id: u32, n: usize) {
        if let Some(Some(f)) = self.open.get_mut(id as usize) {
            let n = n.min(self.limits.fragment_size.saturating_sub(f.len()));
            f.ts.reserve(n);
            match &mut f.entries {
                Entries::Values(v) => v.reserve(n),
                Entries::Lines { ends, .. } => ends.reserve(n),
            }
        }
    }

    /// Adds a sample whose hash is `hash` (see `checksum::metric_sample`).
    #[allow(clippy::too_many_arguments)]
    pub fn push_value(
        &mut self,
        series: &Arc<Series>,
        id: u32,
        ts: i64,
        value: f64,
        hash: u64,
        out: &mut Vec<Batch>,
    ) {
        let frag = self.fragment_for(series, id);
        frag.push_value(ts, value, hash);
        self.after_push(id, out);
    }

    fn fragment_for(&mut self, series: &Arc<Series>, id: u32) -> &mut Fragment {
        let idx = id as usize;
        if idx >= self.open.len() {
            self.open.resize_with(idx + 1, || None);
        }
        let (mode, cap) = (self.mode, self.limits.fragment_size.min(4096));
        self.open[idx].get_or_insert_with(|| Fragment::new(series.clone(), mode, cap))
    }

    fn after_push(&mut self, id: u32, out: &mut Vec<Batch>) {
        let idx = id as usize;
        let full = match &self.open[idx] {
            Some(f) => {
                f.len() >= self.limits.fragment_size
                    || self.encoded_estimate(f) >= self.limits.max_message_bytes / 2
            }
            None => false,
        };
        if full {
            if let Some(f) = self.open[idx].take() {
                self.seal_fragment(f, out);
            }
        }
    }

    fn encoded_estimate(&self, f: &Fragment) -> usize {
        f.bytes()
            + f.escaped_extra
            + f.len() * self.per_entry_overhead
            + match self.mode {
                Mode::Logs => f.series.selector().len(),
                // About a remote-write label set's size, without building
                // the Loki selector a metric series never needs.
                Mode::Metrics => f.series.key.labels_json.len(),
            }
            + 16
    }

    /// Whether series `id` has an open fragment (entries not yet batched).
    pub fn has_open(&self, id: u32) -> bool {
        self.open.get(id as usize).is_some_and(Option::is_some)
    }

    /// Counts the bytes JSON escaping adds to lines (for `--encoding json`).
    pub fn count_json_escapes(&mut self) {
        self.json = true;
    }

    fn seal_fragment(&mut self, f: Fragment, out: &mut Vec<Batch>) {
        let lane = f.series.lane % self.lanes.len();
        let size = self.encoded_estimate(&f);
        let over_bytes = {
            let b = &self.lanes[lane];
            !b.fragments.is_empty() && b.bytes + size > self.limits.max_message_bytes
        };
        if over_bytes {
            self.seal_lane(lane, out);
        }
        let id = self.next_id;
        self.next_id += 1;
        let meta = f.meta(id, self.mode);
        let b = &mut self.lanes[lane];
        // A message lingers from its oldest entry, not from when its first
        // fragment was closed: an entry waits at most one linger in all,
        // not one for its fragment and another for its message.
        if b.fragments.is_empty() || f.opened < b.opened {
            b.opened = f.opened;
        }
        b.entries += f.len();
        b.bytes += size;
        b.fragments.push(f);
        b.metas.push(meta);
        if b.fragments.len() >= self.per_message {
            self.seal_lane(lane, out);
        }
    }

    fn seal_lane(&mut self, lane: usize, out: &mut Vec<Batch>) {
        let b = &mut self.lanes[lane];
        if b.fragments.is_empty() {
            return;
        }
        out.push(Batch {
            lane,
            fragments: std::mem::take(&mut b.fragments),
            metas: std::mem::take(&mut b.metas),
            entries: std::mem::take(&mut b.entries),
            bytes: std::mem::take(&mut b.bytes),
        });
    }

    /// Closes fragments and messages older than the linger time, so slow
    /// streams still go out. Cheap to call often: it scans at most every
    /// quarter linger.
    pub fn sweep(&mut self, now: Instant, out: &mut Vec<Batch>) {
        let linger = self.limits.linger;
        if now.duration_since(self.last_sweep) < linger / 4 {
            return;
        }
        self.last_sweep = now;
        for idx in 0..self.open.len() {
            let old = matches!(&self.open[idx], Some(f) if now.duration_since(f.opened) >= linger);
            if old {
                if let Some(f) = self.open[idx].take() {
                    self.seal_fragment(f, out);
                }
            }
        }
        for lane in 0..self.lanes.len() {
            let b = &self.lanes[lane];
            if !b.fragments.is_empty() && now.duration_since(b.opened) >= linger {
                self.seal_lane(lane, out);
            }
        }
    }

    /// Closes everything (end of input).
    pub fn flush(&mut self, out: &mut Vec<Batch>) {
        for idx in 0..self.open.len() {
            if let Some(f) = self.open[idx].take() {
                self.seal_fragment(f, out);
            }
        }
        for lane in 0..self.lanes.len() {
            self.seal_lane(lane, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::LabelSet;

    fn series(name: &str, lane: usize) -> Arc<Series> {
        let labels = LabelSet::new(vec![("s".into(), name.into())]).unwrap();
        Arc::new(Series::new(SeriesKey::new(labels), lane))
    }

    fn limits(fragment_size: usize, per_msg: usize) -> BatchLimits {
        BatchLimits {
            fragment_size,
            fragments_per_message: Some(per_msg),
            max_message_bytes: 1 << 20,
            linger: Duration::from_millis(100),
        }
    }

    #[test]
    fn fragments_fill_then_messages_fill() {
        let mut b = Batcher::new(Mode::Logs, limits(3, 2), 1);
        let (a, c) = (series("a", 0), series("c", 0));
        let mut out = Vec::new();
        for i in 0..6 {
            b.push_line(
                &a,
                0,
                i,
                "x",
                crate::checksum::log_entry(i, "x".as_bytes()),
                &mut out,
            );
            b.push_line(
                &c,
                1,
                i,
                "y",
                crate::checksum::log_entry(i, "y".as_bytes()),
                &mut out,
            );
        }
        // 4 fragments of 3, 2 per message.
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|m| m.fragments.len() == 2 && m.entries == 6));
        let ids: Vec<u64> = out
            .iter()
            .flat_map(|m| m.metas.iter().map(|f| f.id))
            .collect();
        assert_eq!(ids, vec![1, 2, 3, 4]);
    }

    #[test]
    fn meta_has_range_step_and_digest_of_exact_entries() {
        let mut b = Batcher::new(Mode::Logs, limits(4, 1), 1);
        let a = series("a", 0);
        let mut out = Vec::new();
        for i in 0..4 {
            b.push_line(
                &a,
                0,
                100 + 10 * i,
                &format!("l{i}"),
                crate::checksum::log_entry(100 + 10 * i, format!("l{i}").as_bytes()),
                &mut out,
            );
        }
        let m = &out[0].metas[0];
        assert_eq!((m.first_ts, m.last_ts, m.step), (100, 130, Some(10)));
        let mut d = Digest::default();
        for i in 0..4 {
            d.add(checksum::log_entry(
                100 + 10 * i,
                format!("l{i}").as_bytes(),
            ));
        }
        assert_eq!(m.digest, d);
        let lines: Vec<_> = out[0].fragments[0]
            .lines()
            .map(|(t, l)| (t, l.to_string()))
            .collect();
        assert_eq!(lines[3], (130, "l3".to_string()));
    }

    #[test]
    fn uneven_spacing_has_no_step() {
        let mut b = Batcher::new(Mode::Metrics, limits(3, 1), 1);
        let a = series("a", 0);
        let mut out = Vec::new();
        for ts in [1, 2, 4] {
            b.push_value(
                &a,
                0,
                ts,
                1.0,
                crate::checksum::metric_sample(ts, 1.0),
                &mut out,
            );
        }
        assert_eq!(out[0].metas[0].step, None);
        assert!(out[0].metas[0].digest12.is_some());
    }

    #[test]
    fn linger_flushes_partial_batches_and_flush_empties_all() {
        let mut b = Batcher::new(Mode::Logs, limits(100, 10), 2);
        let (a, c) = (series("a", 0), series("c", 1));
        let mut out = Vec::new();
        b.push_line(
            &a,
            0,
            1,
            "x",
            crate::checksum::log_entry(1, "x".as_bytes()),
            &mut out,
        );
        b.sweep(Instant::now() + Duration::from_millis(150), &mut out);
        assert_eq!(out.len(), 1);
        b.push_line(
            &c,
            1,
            1,
            "y",
            crate::checksum::log_entry(1, "y".as_bytes()),
            &mut out,
        );
        b.flush(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].lane, 1);
    }

    /// The sweep that closes a lingering fragment also sends its message:
    /// the message lingers from the fragment's first entry, so an entry
    /// waits one linger in all, not two.
    #[test]
    fn an_entry_waits_one_linger_in_all() {
        let mut b = Batcher::new(Mode::Logs, limits(100, 10), 1);
        let a = series("a", 0);
        let mut out = Vec::new();
        let hash = crate::checksum::log_entry(1, "x".as_bytes());
        b.push_line(&a, 0, 1, "x", hash, &mut out);
        // Real time must pass: the message's clock is read when the
        // fragment joins it.
        std::thread::sleep(Duration::from_millis(110));
        b.sweep(Instant::now(), &mut out);
        assert_eq!(
            out.len(),
            1,
            "the fragment's message went out in the same sweep"
        );
    }

    #[test]
    fn message_byte_limit_splits_messages() {
        let mut l = limits(10, 100);
        l.max_message_bytes = 2000;
        let mut b = Batcher::new(Mode::Logs, l, 1);
        let line = "z".repeat(90);
        let mut out = Vec::new();
        for s in 0..10u32 {
            let sr = series(&format!("s{s}"), 0);
            for i in 0..10 {
                b.push_line(
                    &sr,
                    s,
                    i,
                    &line,
                    crate::checksum::log_entry(i, line.as_bytes()),
                    &mut out,
                );
            }
        }
        b.flush(&mut out);
        assert!(out.len() > 1);
        assert!(
            out.iter().all(|m| m.bytes <= 2000),
            "{:?}",
            out.iter().map(|m| m.bytes).collect::<Vec<_>>()
        );
        assert_eq!(out.iter().map(|m| m.entries).sum::<usize>(), 100);
    }
}
