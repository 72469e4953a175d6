//! The generator proper: per-series state, interleaved round-robin.

use std::time::Duration;

use super::clock::{Clock, Lag, Timeline, Verdict};
use super::logs::{LineGen, SeriesInfo};
use super::metrics::MetricState;
use super::rng::Rng;
use super::Config;
use crate::labels::LabelSet;
use crate::record::series::write_series_line;
use crate::record::{write_log_record, Mode};

/// What one call to [`Generator::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Appended one entry (several records for a histogram), or with
    /// --entries-per-line one line per series.
    Emitted,
    /// Every remaining series is too close to now: sleep this long, then
    /// step again. Callers should hand buffered output on first.
    Wait(Duration),
    Done,
}

enum Kind {
    Log(SeriesInfo),
    Metric(MetricState),
}

struct Unit {
    rng: Rng,
    time: Timeline,
    emitted: u64,
    cycle: u64,
    /// Label pairs of each sample series, without `cycle`.
    base: Vec<Vec<(String, String)>>,
    /// Labels JSON of each sample series, formatted once per identity.
    labels: Vec<Vec<u8>>,
    /// `{"labels":<labels[0]>,"ts":"`: the constant start of a log record.
    log_prefix: Vec<u8>,
    kind: Kind,
}

impl Unit {
    fn relabel(&mut self, churn: bool) -> Result<(), String> {
        self.labels.clear();
        for pairs in &self.base {
            let mut pairs = pairs.clone();
            if churn {
                pairs.push(("cycle".into(), self.cycle.to_string()));
            }
            let set = LabelSet::new(pairs).map_err(|e| e.to_string())?;
            let mut json = Vec::with_capacity(128);
            set.write_json(&mut json);
            // Kept for the unit's life: a million series are a million of
            // these.
            json.shrink_to_fit();
            self.labels.push(json);
        }
        if matches!(self.kind, Kind::Log(_)) {
            self.log_prefix.clear();
            self.log_prefix.extend_from_slice(b"{\"labels\":");
            self.log_prefix.extend_from_slice(&self.labels[0]);
            self.log_prefix.extend_from_slice(b",\"ts\":\"");
            self.log_prefix.shrink_to_fit();
        }
        Ok(())
    }
}

pub struct Generator<C: Clock> {
    clock: C,
    units: Vec<Unit>,
    cursor: usize,
    count: u64,
    churn_every: u64,
    ns_per_unit: i64,
    lag: Option<Lag>,
    /// Cached wall time in units; refreshed when a decision depends on it.
    now: i64,
    since_refresh: u32,
    skipped: usize,
    min_wait: i64,
    linegen: LineGen,
    line: Vec<u8>,
    /// Timestamp of the last entry, in units.
    last_ts: Option<i64>,
    /// Entries per series or stream line; 1 writes records.
    per_line: u32,
    /// Per sample series of the current unit: its samples for one line.
    columns: Vec<Vec<(i64, f64)>>,
}

/// Appends the same bytes as [`write_log_record`], but copies lines that
/// need no escaping (the common case) without the per-byte escape loop.
/// `prefix` is `{"labels":<labels JSON>,"ts":"`; `escape_free` says the
/// caller knows the line needs no escaping, which skips even the scan.
pub fn put_log_record(
    out: &mut Vec<u8>,
    prefix: &[u8],
    ts_ns: i64,
    line: &[u8],
    escape_free: bool,
) {
    debug_assert!(!escape_free || needs_no_escape(line));
    let plain = escape_free || needs_no_escape(line);
    let labels_json = &prefix[10..prefix.len() - 7];
    if !plain {
        // Lines are built from &str and char only; lossy never replaces.
        write_log_record(out, labels_json, ts_ns, &String::from_utf8_lossy(line));
        return;
    }
    out.extend_from_slice(prefix);
    put_ts(out, ts_ns);
    out.extend_from_slice(b"\",\"line\":\"");
    out.extend_from_slice(line);
    out.extend_from_slice(b"\"}\n");
}

/// Whether `l` goes into a JSON string as it is. A branch-free fold so
/// the scan vectorises.
fn needs_no_escape(l: &[u8]) -> bool {
    l.iter()
        .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'))
}

/// Appends one entry of a stream line, `["<ns>","<line>"]`.
fn put_stream_entry(out: &mut Vec<u8>, ts_ns: i64, line: &[u8], escape_free: bool) {
    out.extend_from_slice(b"[\"");
    put_ts(out, ts_ns);
    out.extend_from_slice(b"\",");
    if escape_free || needs_no_escape(line) {
        out.push(b'"');
        out.extend_from_slice(line);
        out.push(b'"');
    } else {
        // Lines are built from &str and char only; lossy never replaces.
        crate::record::write_json_str(out, &String::from_utf8_lossy(line));
    }
    out.push(b']');
}

const PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// Unix ns from 2001 to 2262 have exactly 19 digits: formatting them at a
/// fixed width lets the copy compile to plain stores.
#[inline]
fn put_ts(out: &mut Vec<u8>, ts_ns: i64) {
    if ts_ns >= 1_000_000_000_000_000_000 {
        let mut buf = [0u8; 19];
        let mut v = ts_ns as u64;
        let mut i = 19;
        while i > 1 {
            i -= 2;
            buf[i..i + 2].copy_from_slice(&PAIRS[(v % 100) as usize]);
            v /= 100;
        }
        buf[0] = b'0' + v as u8;
        out.extend_from_slice(&buf);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(ts_ns).as_bytes());
    }
}

/// The width of series numbers, so `series` values sort like the indexes.
fn series_width(n: u64) -> usize {
    n.saturating_sub(1).max(1).to_string().len().max(4)
}

impl<C: Clock> Generator<C> {
    pub fn new(cfg: &Config, mut clock: C) -> Result<Generator<C>, String> {
        let unit = cfg.mode.ns_per_unit();
        let lag = match cfg.start_ns {
            Some(_) => None,
            None => Some(Lag {
                min: cfg.min_lag_ns / unit,
                max: (cfg.max_lag_ns / unit).max(cfg.min_lag_ns / unit + 1),
            }),
        };
        let now = clock.now_ns().div_euclid(unit);
        let increment = (cfg.increment_ns / unit).max(1);
        let jitter = cfg.jitter_ns / unit;
        let duration = cfg.duration_ns.map(|d| d / unit);
        let width = series_width(cfg.n_series);
        let churn = cfg.churn_every > 0;
        let mut units = Vec::new();
        let mut i = cfg.shard.index;
        while i < cfg.n_series {
            let series = format!("s{i:0width$}");
            let per_series = match cfg.mode {
                Mode::Logs => 1,
                Mode::Metrics => cfg.n_metrics,
            };
            for m in 0..per_series {
                let mut rng = Rng::new(cfg.seed, i, u64::from(m));
                let mut common = cfg.labels.clone();
                common.push(("invocation".into(), cfg.invocation.clone()));
                common.push(("series".into(), series.clone()));
                let (base, kind) = match cfg.mode {
                    Mode::Logs => (
                        vec![common],
                        Kind::Log(SeriesInfo::new(i, series.clone(), &mut rng)),
                    ),
                    Mode::Metrics => {
                        let base = cfg
                            .metric_type
                            .series_names(m)
                            .into_iter()
                            .map(|(name, le)| {
                                let mut p = common.clone();
                                p.push(("__name__".into(), name));
                                if let Some(le) = le {
                                    p.push(("le".into(), le.into()));
                                }
                                p
                            })
                            .collect();
                        (
                            base,
                            Kind::Metric(MetricState::new(cfg.metric_type, &mut rng)),
                        )
                    }
                };
                let first = match (cfg.start_ns, lag) {
                    (Some(s), _) => s.div_euclid(unit),
                    (None, Some(lag)) => lag.place(now, &mut rng),
                    (None, None) => now,
                };
                let mut u = Unit {
                    rng,
                    time: Timeline::new(first, increment, jitter, duration),
                    emitted: 0,
                    cycle: 0,
                    base,
                    labels: Vec::new(),
                    log_prefix: Vec::new(),
                    kind,
                };
                u.relabel(churn)?;
                if !churn {
                    // Only a churn relabel reads the pairs again.
                    u.base = Vec::new();
                }
                units.push(u);
            }
            i += cfg.shard.of;
        }
        Ok(Generator {
            clock,
            units,
            cursor: 0,
            count: cfg.count,
            churn_every: cfg.churn_every,
            ns_per_unit: unit,
            lag,
            now,
            since_refresh: 0,
            skipped: 0,
            min_wait: i64::MAX,
            linegen: LineGen::new(cfg.line),
            line: Vec::with_capacity(cfg.line.line_bytes + 512),
            last_ts: None,
            per_line: cfg.entries_per_line.max(1),
            columns: Vec::new(),
        })
    }

    /// Timestamp (Unix ns) of the last entry emitted.
    pub fn last_ts_ns(&self) -> Option<i64> {
        self.last_ts.map(|t| t.saturating_mul(self.ns_per_unit))
    }

    pub fn clock_mut(&mut self) -> &mut C {
        &mut self.clock
    }

    /// Re-reads the clock. Call after anything that may have blocked (an
    /// output write to a slow reader), so series that fell behind during
    /// the stall leap forward instead of sending entries older than
    /// --max-lag.
    pub fn resync(&mut self) {
        if self.lag.is_some() {
            self.now = self.clock.now_ns().div_euclid(self.ns_per_unit);
            self.since_refresh = 0;
        }
    }

    /// Appends the next entry to `out`, or says why it cannot.
    pub fn step(&mut self, out: &mut Vec<u8>) -> Result<Step, String> {
        loop {
            if self.units.is_empty() {
                return Ok(Step::Done);
            }
            if self.cursor >= self.units.len() {
                self.cursor = 0;
            }
            let count = self.count;
            let done = |u: &Unit| (count > 0 && u.emitted >= count) || u.time.finished();
            if done(&self.units[self.cursor]) {
                // Units finish together (the last round of --count or
                // --duration): take out the whole run of finished ones at
                // once. Removing them one by one moved the rest of the
                // Vec each time, quadratic in --n-series.
                let run = self.units[self.cursor..]
                    .iter()
                    .take_while(|u| done(u))
                    .count();
                self.units.drain(self.cursor..self.cursor + run);
                self.skipped = 0;
                self.min_wait = i64::MAX;
                continue;
            }
            let u = &mut self.units[self.cursor];
            if let Some(lag) = self.lag {
                let mut verdict = lag.check(u.time.next(), self.now);
                if verdict != Verdict::Ready {
                    self.now = self.clock.now_ns().div_euclid(self.ns_per_unit);
                    self.since_refresh = 0;
                    verdict = lag.check(u.time.next(), self.now);
                }
                match verdict {
                    Verdict::Ready => {}
                    Verdict::Wait(w) => {
                        // Let the other series catch up meanwhile; sleep
                        // only when none of them can go.
                        self.min_wait = self.min_wait.min(w);
                        self.skipped += 1;
                        self.cursor += 1;
                        if self.skipped >= self.units.len() {
                            let wait = self.min_wait.saturating_mul(self.ns_per_unit);
                            self.skipped = 0;
                            self.min_wait = i64::MAX;
                            return Ok(Step::Wait(Duration::from_nanos(wait.max(0) as u64)));
                        }
                        continue;
                    }
                    Verdict::Behind => {
                        u.time.leap(lag.place(self.now, &mut u.rng));
                        // The leap may have used up --duration.
                        continue;
                    }
                }
                self.since_refresh += 1;
                if self.since_refresh >= 1024 {
                    self.since_refresh = 0;
                    self.now = self.clock.now_ns().div_euclid(self.ns_per_unit);
                }
            }
            if self.churn_every > 0 && u.emitted > 0 && u.emitted % self.churn_every == 0 {
                u.cycle += 1;
                u.relabel(true)?;
                if let Kind::Metric(m) = &mut u.kind {
                    m.reset(&mut u.rng);
                }
            }
            let ts = u.time.next();
            // Whether the unit may add its next entry to the line it is on.
            let (count, churn_every, lag, now) = (self.count, self.churn_every, self.lag, self.now);
            let per_line = self.per_line as usize;
            let go_on = |emitted: u64, time: &Timeline, n: usize| {
                let counted = count > 0 && emitted >= count;
                let relabel = churn_every > 0 && emitted % churn_every == 0;
                n < per_line
                    && !counted
                    && !relabel
                    && !time.finished()
                    && lag.map_or(true, |l| l.check(time.next(), now) == Verdict::Ready)
            };
            match &mut u.kind {
                Kind::Log(info) if per_line > 1 => {
                    // Up to `per_line` entries of this stream as one stream
                    // line: the same entries as `per_line` turns would give.
                    out.extend_from_slice(b"{\"stream\":");
                    out.extend_from_slice(&u.labels[0]);
                    out.extend_from_slice(b",\"values\":[");
                    let (mut ts, mut n) = (ts, 0);
                    loop {
                        let w = self
                            .linegen
                            .write(&mut self.line, &mut u.rng, ts, u.emitted, info);
                        if n > 0 {
                            out.push(b',');
                        }
                        put_stream_entry(out, ts, &self.line, w.escape_free);
                        n += 1;
                        u.emitted += 1;
                        self.last_ts = Some(ts);
                        u.time.advance(&mut u.rng);
                        if !go_on(u.emitted, &u.time, n) {
                            break;
                        }
                        ts = u.time.next();
                    }
                    out.extend_from_slice(b"]}\n");
                    self.skipped = 0;
                    self.min_wait = i64::MAX;
                    self.cursor += 1;
                    return Ok(Step::Emitted);
                }
                Kind::Log(info) => {
                    let w = self
                        .linegen
                        .write(&mut self.line, &mut u.rng, ts, u.emitted, info);
                    put_log_record(out, &u.log_prefix, ts, &self.line, w.escape_free);
                }
                Kind::Metric(m) if per_line > 1 => {
                    // Up to `per_line` samples of this unit, while it may go
                    // on: the same samples, in the same order per series, as
                    // `per_line` turns would give it.
                    self.columns.resize_with(u.labels.len(), Vec::new);
                    self.columns.iter_mut().for_each(Vec::clear);
                    let mut ts = ts;
                    loop {
                        if u.emitted > 0 {
                            m.step(&mut u.rng);
                        }
                        let (values, n) = m.values();
                        for (col, &v) in self.columns.iter_mut().zip(&values[..n]) {
                            col.push((ts, v));
                        }
                        u.emitted += 1;
                        self.last_ts = Some(ts);
                        u.time.advance(&mut u.rng);
                        if !go_on(u.emitted, &u.time, self.columns[0].len()) {
                            break;
                        }
                        ts = u.time.next();
                    }
                    for (labels, col) in u.labels.iter().zip(&self.columns) {
                        write_series_line(out, labels, col);
                    }
                    self.skipped = 0;
                    self.min_wait = i64::MAX;
                    self.cursor += 1;
                    return Ok(Step::Emitted);
                }
                Kind::Metric(m) => {
                    if u.emitted > 0 {
                        m.step(&mut u.rng);
                    }
                    m.write(out, &u.labels, ts);
                }
            }
            u.emitted += 1;
            self.last_ts = Some(ts);
            u.time.advance(&mut u.rng);
            self.skipped = 0;
            self.min_wait = i64::MAX;
            self.cursor += 1;
            return Ok(Step::Emitted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::clock::ManualClock;
    use crate::gen::{Args, Config};
    use crate::record::{parse_any, parse_labels, parse_line, Line, Payload};
    use clap::Parser;
    use std::collections::{BTreeMap, HashMap};

    const NOW: i64 = 1_800_000_000_000_000_000;
    const SEC: i64 = 1_000_000_000;

    fn config(flags: &[&str]) -> Config {
        let mut argv = vec!["looker-gen", "--seed", "11"];
        argv.extend_from_slice(flags);
        Config::from_args(&Args::try_parse_from(argv).unwrap()).unwrap()
    }

    /// Runs to completion (or `max` entries), sleeping on the manual clock;
    /// returns (series label, ts, clock at emission) per record.
    fn drive(cfg: &Config, max: usize) -> (Vec<(String, i64, i64)>, usize) {
        let mut g = Generator::new(cfg, ManualClock { now_ns: NOW }).unwrap();
        let mut out = Vec::new();
        let mut recs = Vec::new();
        let mut waits = 0;
        while recs.len() < max {
            out.clear();
            match g.step(&mut out).unwrap() {
                Step::Done => break,
                Step::Wait(d) => {
                    waits += 1;
                    assert!(d > Duration::ZERO);
                    g.clock_mut().sleep(d);
                }
                Step::Emitted => {
                    let now = g.clock_mut().now_ns();
                    for l in std::str::from_utf8(&out).unwrap().lines() {
                        let r = parse_line(l).unwrap();
                        let labels = parse_labels(r.labels_json, cfg.mode).unwrap();
                        let ts = r.ts * cfg.mode.ns_per_unit();
                        recs.push((labels.to_json(), ts, now));
                    }
                }
            }
        }
        (recs, waits)
    }

    /// Every entry per series (labels JSON -> (ts in ns, content, clock at
    /// emission)), from records and series or stream lines alike; content
    /// is a log line, or a sample's value bits.
    #[allow(clippy::type_complexity)]
    fn entries_by_series(cfg: &Config) -> BTreeMap<String, Vec<(i64, String, i64)>> {
        let mut g = Generator::new(cfg, ManualClock { now_ns: NOW }).unwrap();
        let mut out = Vec::new();
        let mut by = BTreeMap::<String, Vec<(i64, String, i64)>>::new();
        let mut buf = crate::record::series::Buffers::default();
        let unit = cfg.mode.ns_per_unit();
        loop {
            out.clear();
            match g.step(&mut out).unwrap() {
                Step::Done => break,
                Step::Wait(d) => g.clock_mut().sleep(d),
                Step::Emitted => {
                    let now = g.clock_mut().now_ns();
                    for l in std::str::from_utf8(&out).unwrap().lines() {
                        let bits = |v: f64| format!("{:016x}", v.to_bits());
                        let (labels, entries): (&str, Vec<(i64, String)>) =
                            match parse_any(l, &mut buf).unwrap() {
                                Line::Record(r) => {
                                    let content = match r.payload {
                                        Payload::Value(v) => bits(v),
                                        Payload::Line(l) => l.into_owned(),
                                    };
                                    (r.labels_json, vec![(r.ts, content)])
                                }
                                Line::Series { labels_json } => (
                                    labels_json,
                                    buf.samples.iter().map(|&(t, v)| (t, bits(v))).collect(),
                                ),
                                Line::Stream { labels_json } => (
                                    labels_json,
                                    (0..buf.entries.len())
                                        .map(|i| {
                                            let (t, l) = buf.entries.get(i);
                                            (t, l.to_string())
                                        })
                                        .collect(),
                                ),
                            };
                        let key = parse_labels(labels, cfg.mode).unwrap().to_json();
                        let e = by.entry(key).or_default();
                        e.extend(entries.into_iter().map(|(t, c)| (t * unit, c, now)));
                    }
                }
            }
        }
        by
    }

    /// Series and stream lines carry exactly the entries records carry,
    /// per series and in order, whatever ends a line early (the count, the
    /// duration, a change of identity, wall time), and never an entry
    /// closer to wall time than --min-lag.
    #[test]
    fn series_and_stream_lines_hold_the_same_entries_as_records() {
        let start = ["--start-time", "1700000000000000000"];
        let coupled = [
            "--n-series",
            "2",
            "--count",
            "0",
            "--duration",
            "30s",
            "--min-lag",
            "10s",
            "--max-lag",
            "20s",
        ];
        let cases: [(&[&str], &[&str]); 10] = [
            (&["--metrics"], &["--n-series", "3", "--count", "10"]),
            (
                &["--metrics", "--metric-type", "histogram"],
                &["--n-series", "2", "--count", "7"],
            ),
            (
                &["--metrics", "--metric-type", "gauge"],
                &["--n-series", "2", "--count", "11", "--jitter", "7ms"],
            ),
            (
                &["--metrics"],
                &["--n-series", "2", "--count", "12", "--churn-every", "5"],
            ),
            (
                &["--metrics"],
                &["--n-series", "2", "--count", "0", "--duration", "9s"],
            ),
            (&["--metrics"], &coupled),
            (&["--format", "json"], &["--n-series", "3", "--count", "10"]),
            (
                &[
                    "--format",
                    "logfmt",
                    "--bad-data",
                    "40",
                    "--multiline",
                    "30",
                ],
                &["--n-series", "2", "--count", "13", "--jitter", "3ms"],
            ),
            (
                &["--format", "syslog"],
                &["--n-series", "2", "--count", "12", "--churn-every", "5"],
            ),
            (&["--format", "looker"], &coupled),
        ];
        for (kind, flags) in cases {
            let is_coupled = flags.contains(&"--min-lag");
            let mut base = kind.to_vec();
            base.extend_from_slice(flags);
            if !is_coupled {
                base.extend_from_slice(&start);
            }
            let one = entries_by_series(&config(&base));
            assert!(one.values().all(|v| v.len() >= 2), "{base:?}");
            for n in ["2", "4", "100"] {
                let mut f = base.clone();
                f.extend_from_slice(&["--entries-per-line", n]);
                let lines = entries_by_series(&config(&f));
                assert_eq!(
                    lines.keys().collect::<Vec<_>>(),
                    one.keys().collect::<Vec<_>>(),
                    "{f:?}"
                );
                for (k, v) in &lines {
                    let strip = |v: &[(i64, String, i64)]| -> Vec<(i64, String)> {
                        v.iter().map(|(t, x, _)| (*t, x.clone())).collect()
                    };
                    assert_eq!(strip(v), strip(&one[k]), "{f:?} {k}");
                    if is_coupled {
                        for (ts, _, now) in v {
                            assert!(*ts <= now - 10 * SEC, "{f:?}: {ts} at {now}");
                        }
                    }
                }
            }
        }
    }

    fn assert_increasing(recs: &[(String, i64, i64)]) {
        let mut last: HashMap<&str, i64> = HashMap::new();
        for (s, ts, _) in recs {
            if let Some(prev) = last.insert(s, *ts) {
                assert!(*ts > prev, "{s}: {ts} after {prev}");
            }
        }
    }

    #[test]
    fn timestamps_strictly_increase_per_series() {
        let cfg = config(&[
            "--n-series",
            "7",
            "--count",
            "300",
            "--jitter",
            "3ms",
            "--start-time",
            "1000",
        ]);
        let (recs, _) = drive(&cfg, usize::MAX);
        assert_eq!(recs.len(), 7 * 300);
        assert_increasing(&recs);
        let cfg = config(&[
            "--metrics",
            "--n-series",
            "3",
            "--count",
            "300",
            "--time-increment",
            "1ms",
            "--jitter",
            "2ms",
            "--start-time",
            "1000500000",
        ]);
        let (recs, _) = drive(&cfg, usize::MAX);
        assert_eq!(recs.len(), 900);
        assert_increasing(&recs);
    }

    #[test]
    fn series_are_interleaved_round_robin() {
        let cfg = config(&["--n-series", "4", "--count", "3", "--start-time", "0"]);
        let (recs, _) = drive(&cfg, usize::MAX);
        let order: Vec<&str> = recs
            .iter()
            .map(|(s, _, _)| &s[s.find("\"s0").unwrap() + 1..][..5])
            .collect();
        assert_eq!(
            order,
            ["s0000", "s0001", "s0002", "s0003"].repeat(3),
            "one entry of each series in turn"
        );
    }

    #[test]
    fn coupled_series_start_in_the_lag_window_and_never_pass_min_lag() {
        let cfg = config(&[
            "--n-series",
            "20",
            "--count",
            "0",
            "--time-increment",
            "100ms",
            "--min-lag",
            "1s",
            "--max-lag",
            "1m",
        ]);
        let (recs, waits) = drive(&cfg, 20_000);
        assert_eq!(recs.len(), 20_000);
        for (_, ts, now) in &recs[..20] {
            assert!((NOW - 60 * SEC..NOW - SEC).contains(ts), "first ts {ts}");
            assert_eq!(*now, NOW, "no waiting while behind");
        }
        for (s, ts, now) in &recs {
            assert!(
                *ts <= now - SEC,
                "{s}: {ts} closer to now {now} than min-lag"
            );
            assert!(
                *ts >= now - 60 * SEC,
                "{s}: {ts} further than max-lag from {now}"
            );
        }
        assert!(waits > 0, "caught-up series wait for wall time");
        // Once caught up, series advance with wall time: 10 entries/s each.
        let (_, _, end) = recs[recs.len() - 1];
        let elapsed = (end - NOW) as f64 / SEC as f64;
        let per_series = 20_000.0 / 20.0;
        assert!(elapsed > (per_series / 10.0) - 61.0, "{elapsed}s");
        assert!(elapsed < per_series / 10.0, "{elapsed}s");
        assert_increasing(&recs);
    }

    #[test]
    fn series_that_fall_behind_leap_forward() {
        let cfg = config(&[
            "--n-series",
            "5",
            "--count",
            "0",
            "--min-lag",
            "1s",
            "--max-lag",
            "10m",
        ]);
        let mut g = Generator::new(&cfg, ManualClock { now_ns: NOW }).unwrap();
        let mut out = Vec::new();
        for _ in 0..50 {
            assert_eq!(g.step(&mut out).unwrap(), Step::Emitted);
        }
        // A stalled reader: an hour passes in one output write.
        g.clock_mut().now_ns += 3600 * SEC;
        g.resync();
        let later = g.clock_mut().now_ns;
        let before = out.len();
        for _ in 0..5 {
            assert_eq!(g.step(&mut out).unwrap(), Step::Emitted);
        }
        let text = std::str::from_utf8(&out[before..]).unwrap();
        for l in text.lines() {
            let ts = parse_line(l).unwrap().ts;
            assert!(
                ts >= later - 600 * SEC && ts < later - SEC,
                "{ts} not leapt"
            );
        }
    }

    #[test]
    fn duration_counts_synthetic_time_per_series() {
        let cfg = config(&[
            "--n-series",
            "2",
            "--count",
            "0",
            "--duration",
            "1s",
            "--time-increment",
            "10ms",
            "--start-time",
            "0",
        ]);
        let (recs, _) = drive(&cfg, usize::MAX);
        assert_eq!(recs.len(), 2 * 100);
        assert!(recs.iter().all(|(_, ts, _)| *ts < SEC));
    }

    #[test]
    fn churn_rotates_series_identity() {
        let cfg = config(&[
            "--metrics",
            "--n-series",
            "1",
            "--count",
            "7",
            "--churn-every",
            "3",
            "--start-time",
            "0",
        ]);
        let (recs, _) = drive(&cfg, usize::MAX);
        let cycles: Vec<String> = recs
            .iter()
            .map(|(s, _, _)| {
                let set: crate::labels::LabelSet = serde_json::from_str(s).unwrap();
                set.get("cycle").unwrap().to_string()
            })
            .collect();
        assert_eq!(cycles, ["0", "0", "0", "1", "1", "1", "2"]);
    }

    #[test]
    fn histogram_entries_emit_every_sample_series_at_one_timestamp() {
        let cfg = config(&[
            "--metrics",
            "--metric-type",
            "histogram",
            "--n-series",
            "2",
            "--n-metrics",
            "3",
            "--count",
            "4",
            "--start-time",
            "0",
        ]);
        let (recs, _) = drive(&cfg, usize::MAX);
        assert_eq!(recs.len(), 2 * 3 * 4 * 14);
        let distinct: std::collections::HashSet<_> = recs.iter().map(|r| &r.0).collect();
        assert_eq!(distinct.len(), 2 * 3 * 14);
        for chunk in recs.chunks(14) {
            assert!(chunk.iter().all(|r| r.1 == chunk[0].1));
        }
    }

    #[test]
    fn fast_record_writer_matches_the_record_module() {
        let labels = br#"{"a":"1"}"#;
        let prefix = br#"{"labels":{"a":"1"},"ts":""#;
        for line in [
            "plain text",
            "",
            "q\"uote",
            "back\\slash",
            "tab\there",
            "ctl\u{1}",
            "é ü \u{fffd}",
        ] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            put_log_record(&mut a, prefix, 42, line.as_bytes(), false);
            write_log_record(&mut b, labels, 42, line);
            assert_eq!(a, b, "{line:?}");
        }
        for ts in [
            0,
            7,
            999_999_999_999_999_999,
            1_000_000_000_000_000_000,
            i64::MAX,
        ] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            put_log_record(&mut a, prefix, ts, b"x", true);
            write_log_record(&mut b, labels, ts, "x");
            assert_eq!(a, b, "{ts}");
        }
    }

    #[test]
    fn series_labels_width_follows_series_count() {
        assert_eq!(series_width(10), 4);
        assert_eq!(series_width(10_000), 4);
        assert_eq!(series_width(10_001), 5);
    }
}
