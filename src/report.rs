//! Run statistics: counters, a latency histogram (HdrHistogram, so
//! percentiles are real, not averaged), the progress line, the JSON
//! report and the per-interval CSV.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters shared by all senders.
pub struct Stats {
    start: Instant,
    pub entries_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub entries_acked: AtomicU64,
    pub bytes_acked: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub entries_rejected: AtomicU64,
    pub entries_failed: AtomicU64,
    pub entries_unknown: AtomicU64,
    pub skipped_lines: AtomicU64,
    /// Entries identical to one already pushed at the same timestamp.
    pub duplicates_skipped: AtomicU64,
    /// Log entries older than their series' remembered entries: not
    /// checked for repeats (`series::Repeat::Unknown`).
    pub late_unchecked: AtomicU64,
    pub in_flight: AtomicI64,
    /// Target rate in milli-units per second (0 = unlimited).
    pub target_rate_milli: AtomicU64,
    /// Wall time minus the timestamp of the last entry read, in ms.
    pub lag_ms: AtomicI64,
    inner: Mutex<Inner>,
    pub metrics: Option<crate::metrics::PushMetrics>,
}

struct Inner {
    /// Microseconds, 1 µs to 1 h, 3 significant digits.
    latency: Histogram<u64>,
    interval_latency: Histogram<u64>,
    status: BTreeMap<String, u64>,
    /// By `reason_key`: the first reason seen exactly, how many, and
    /// whether others that differ only in numbers were counted with it.
    rejected_reasons: BTreeMap<String, (String, u64, bool)>,
}

fn new_hist() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(None)
    }
}

impl Stats {
    pub fn new(metrics: Option<crate::metrics::PushMetrics>) -> Stats {
        Stats {
            start: Instant::now(),
            entries_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            entries_acked: AtomicU64::new(0),
            bytes_acked: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            entries_rejected: AtomicU64::new(0),
            entries_failed: AtomicU64::new(0),
            entries_unknown: AtomicU64::new(0),
            skipped_lines: AtomicU64::new(0),
            duplicates_skipped: AtomicU64::new(0),
            late_unchecked: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            target_rate_milli: AtomicU64::new(0),
            lag_ms: AtomicI64::new(0),
            inner: Mutex::new(Inner {
                latency: new_hist(),
                interval_latency: new_hist(),
                status: BTreeMap::new(),
                rejected_reasons: BTreeMap::new(),
            }),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        if let Some(m) = &self.metrics {
            m.in_flight.inc();
        }
    }

    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
        if let Some(m) = &self.metrics {
            m.in_flight.dec();
        }
    }

    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
        if let Some(m) = &self.metrics {
            m.retries.inc();
        }
    }

    /// One answered (or failed) attempt; `code` None = transport error.
    pub fn record_response(&self, code: Option<u16>, latency: Duration, entries: u64, bytes: u64) {
        let label = code.map_or_else(|| "transport".to_string(), |c| c.to_string());
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        {
            let mut g = self.lock();
            let _ = g.latency.record(us);
            let _ = g.interval_latency.record(us);
            *g.status.entry(label.clone()).or_default() += 1;
        }
        self.entries_acked.fetch_add(entries, Relaxed);
        self.bytes_acked.fetch_add(bytes, Relaxed);
        if let Some(m) = &self.metrics {
            m.requests.with_label_values(&[&label]).inc();
            m.latency.observe(latency.as_secs_f64());
            m.entries.with_label_values(&["acked"]).inc_by(entries);
            m.bytes.inc_by(bytes);
        }
    }

    pub fn record_outcome(
        &self,
        status: crate::manifest::Status,
        entries: u64,
        reason: Option<&str>,
    ) {
        use crate::manifest::Status;
        let (counter, label) = match status {
            Status::Ok | Status::Pending => return,
            Status::Rejected => (&self.entries_rejected, "rejected"),
            Status::Failed => (&self.entries_failed, "failed"),
            Status::Unknown => (&self.entries_unknown, "unknown"),
        };
        counter.fetch_add(entries, Relaxed);
        if let Some(m) = &self.metrics {
            m.entries.with_label_values(&[label]).inc_by(entries);
        }
        if status == Status::Rejected {
            let key = reason_key(reason.unwrap_or(""));
            let mut g = self.lock();
            // A summary, not a log: reasons that differ only in numbers
            // (timestamps, counts) share a key, and the number of keys is
            // bounded whatever the server writes.
            let reason = reason.unwrap_or("");
            let (key, reason) = if g.rejected_reasons.len() >= MAX_REASONS
                && !g.rejected_reasons.contains_key(&key)
            {
                ("(other reasons)".to_string(), "(other reasons)")
            } else {
                (key, reason)
            };
            let r = g
                .rejected_reasons
                .entry(key)
                .or_insert_with(|| (reason.chars().take(200).collect(), 0, false));
            r.1 += 1;
            r.2 |= !reason.starts_with(&r.0);
        }
    }

    pub fn percentiles(&self) -> Latency {
        let g = self.lock();
        latency_of(&g.latency)
    }

    /// Takes the interval histogram for a progress line or CSV row.
    fn take_interval(&self) -> Latency {
        let mut g = self.lock();
        let l = latency_of(&g.interval_latency);
        g.interval_latency.reset();
        l
    }

    pub fn status_counts(&self) -> BTreeMap<String, u64> {
        self.lock().status.clone()
    }

    /// Rejection reasons as the store wrote them (the first of each kind),
    /// with how many rejections each stands for.
    pub fn rejected_reasons(&self) -> BTreeMap<String, u64> {
        self.lock()
            .rejected_reasons
            .values()
            .map(|(example, n, varied)| {
                let text = if *varied {
                    format!("{example} (and the like, differing in numbers)")
                } else {
                    example.clone()
                };
                (text, *n)
            })
            .collect()
    }
}

const MAX_REASONS: usize = 20;

/// A rejection reason with digit runs replaced by `N`, at most 200 chars:
/// reasons with the same key are counted together.
fn reason_key(reason: &str) -> String {
    let mut out = String::new();
    let mut in_digits = false;
    for c in reason.chars().take(200) {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p66: f64,
    pub p75: f64,
    pub p80: f64,
    pub p90: f64,
    pub p95: f64,
    pub p98: f64,
    pub p99: f64,
    pub max: f64,
}

fn latency_of(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Latency {
        count: h.len(),
        p50: q(0.50),
        p66: q(0.66),
        p75: q(0.75),
        p80: q(0.80),
        p90: q(0.90),
        p95: q(0.95),
        p98: q(0.98),
        p99: q(0.99),
        max: h.max() as f64 / 1000.0,
    }
}

/// Periodic progress on stderr and rows of the CSV time series.
pub struct Progress {
    last: Instant,
    last_entries: u64,
    last_bytes: u64,
    last_requests: u64,
    csv: Option<std::io::BufWriter<std::fs::File>>,
    quiet: bool,
    interval: Duration,
}

impl Progress {
    pub fn new(
        csv: Option<std::fs::File>,
        quiet: bool,
        interval: Duration,
    ) -> std::io::Result<Progress> {
        let mut csv = csv.map(std::io::BufWriter::new);
        if let Some(w) = &mut csv {
            writeln!(w, "elapsed_s,entries_per_s,mb_per_s,requests_per_s,p50_ms,p90_ms,p99_ms,max_ms,errors_total,retries_total,target_rate")?;
        }
        Ok(Progress {
            last: Instant::now(),
            last_entries: 0,
            last_bytes: 0,
            last_requests: 0,
            csv,
            quiet,
            interval,
        })
    }

    /// The last interval at shutdown: emitted only if it is long enough
    /// for its rates to mean something (a few milliseconds of final
    /// acknowledgements would show as an absurd spike).
    pub fn finish(&mut self, s: &Stats) -> std::io::Result<()> {
        if self.last.elapsed() >= self.interval / 2 {
            self.tick(s)?;
        }
        Ok(())
    }

    /// Emits one interval: a stderr line (unless quiet) and a CSV row.
    pub fn tick(&mut self, s: &Stats) -> std::io::Result<()> {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64().max(1e-9);
        let entries = s.entries_acked.load(Relaxed);
        let bytes = s.bytes_acked.load(Relaxed);
        let requests = s.requests.load(Relaxed);
        let eps = (entries - self.last_entries) as f64 / dt;
        let mbps = (bytes - self.last_bytes) as f64 / dt / 1e6;
        let rps = (requests - self.last_requests) as f64 / dt;
        let lat = s.take_interval();
        let errors = s.entries_rejected.load(Relaxed)
            + s.entries_failed.load(Relaxed)
            + s.entries_unknown.load(Relaxed);
        let retries = s.retries.load(Relaxed);
        let target = s.target_rate_milli.load(Relaxed) as f64 / 1000.0;
        let target_txt = if target > 0.0 {
            format!("{target:.0}/s")
        } else {
            "unlimited".into()
        };
        if !self.quiet {
            eprintln!(
                "[{:>7.1}s] {eps:>10.0} entries/s {mbps:>7.2} MB/s {rps:>7.1} req/s  p50 {:.1}ms p99 {:.1}ms  entries not acked {errors} retries {retries} in-flight {} target {target_txt}",
                s.elapsed().as_secs_f64(),
                lat.p50,
                lat.p99,
                s.in_flight.load(Relaxed),
            );
        }
        if let Some(w) = &mut self.csv {
            writeln!(
                w,
                "{:.3},{eps:.1},{mbps:.3},{rps:.2},{:.3},{:.3},{:.3},{:.3},{errors},{retries},{target}",
                s.elapsed().as_secs_f64(),
                lat.p50,
                lat.p90,
                lat.p99,
                lat.max
            )?;
            w.flush()?;
        }
        self.last = now;
        self.last_entries = entries;
        self.last_bytes = bytes;
        self.last_requests = requests;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_recorded_latencies() {
        let s = Stats::default();
        for ms in 1..=100u64 {
            s.record_response(Some(204), Duration::from_millis(ms), 1, 10);
        }
        s.record_response(None, Duration::from_millis(5), 0, 0);
        let l = s.percentiles();
        assert_eq!(l.count, 101);
        assert!((49.0..=51.5).contains(&l.p50), "{l:?}");
        assert!((98.0..=100.5).contains(&l.p99), "{l:?}");
        assert!((99.9..=100.1).contains(&l.max), "{l:?}");
        let st = s.status_counts();
        assert_eq!(st["204"], 100);
        assert_eq!(st["transport"], 1);
        assert_eq!(s.entries_acked.load(Relaxed), 100);
    }

    #[test]
    fn rejection_reasons_are_a_bounded_summary() {
        let s = Stats::default();
        use crate::manifest::Status;
        for i in 0..100 {
            s.record_outcome(
                Status::Rejected,
                1,
                Some(&format!(
                    "HTTP 400: entry {i} too old at {}",
                    1_700_000_000 + i
                )),
            );
            s.record_outcome(
                Status::Rejected,
                1,
                Some(&format!("odd reason {}", "x".repeat(i))),
            );
        }
        let r = s.rejected_reasons();
        assert_eq!(
            r["HTTP 400: entry 0 too old at 1700000000 (and the like, differing in numbers)"], 100,
            "{r:?}"
        );
        assert!(r.len() <= MAX_REASONS + 1, "{}", r.len());
        assert_eq!(r.values().sum::<u64>(), 200);
    }

    #[test]
    fn csv_has_header_and_a_row_per_tick() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        let s = Stats::default();
        let mut pr = Progress::new(
            Some(std::fs::File::create(&p).unwrap()),
            true,
            Duration::from_secs(1),
        )
        .unwrap();
        s.record_response(Some(204), Duration::from_millis(3), 10, 100);
        pr.tick(&s).unwrap();
        pr.tick(&s).unwrap();
        pr.finish(&s).unwrap(); // too short after the last tick: no row
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("elapsed_s,entries_per_s"));
        assert_eq!(lines[1].split(',').count(), lines[0].split(',').count());
    }
}
