//! Metric sample values. Every value is an integer or a multiple of 0.001
//! built as `k as f64 / 1000.0`, so it prints as a short decimal and
//! survives stores that round to 12 significant digits (VictoriaMetrics).

use super::rng::{Rng, Weighted};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricType {
    Counter,
    Gauge,
    /// Classic Prometheus histogram: `_bucket` (with `le`), `_sum`, `_count`.
    Histogram,
}

/// Bucket bounds in milliseconds and their `le` label values in seconds.
pub const BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000];
pub const BUCKET_LE: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

/// Gauges wander within ±this many thousandths.
const GAUGE_BOUND: i64 = 1_000_000_000;

impl MetricType {
    /// The `__name__` of each sample series of metric number `m`, in the
    /// order [`MetricState::write`] emits them, with the `le` value if any.
    pub fn series_names(self, m: u32) -> Vec<(String, Option<&'static str>)> {
        match self {
            MetricType::Counter => vec![(format!("looker_counter_{m:04}_total"), None)],
            MetricType::Gauge => vec![(format!("looker_gauge_{m:04}"), None)],
            MetricType::Histogram => {
                let base = format!("looker_histogram_{m:04}_seconds");
                let mut v: Vec<_> = BUCKET_LE
                    .iter()
                    .map(|le| (format!("{base}_bucket"), Some(*le)))
                    .collect();
                v.push((format!("{base}_sum"), None));
                v.push((format!("{base}_count"), None));
                v
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricState {
    Counter(u64),
    /// Thousandths.
    Gauge(i64),
    Histogram {
        /// Cumulative: `cum[i]` counts observations <= bucket i; the last is +Inf.
        cum: [u64; 12],
        sum_ms: u64,
    },
}

impl MetricState {
    pub fn new(t: MetricType, rng: &mut Rng) -> MetricState {
        match t {
            MetricType::Counter => MetricState::Counter(rng.below(1000)),
            MetricType::Gauge => MetricState::Gauge(rng.below(200_000) as i64 - 100_000),
            MetricType::Histogram => MetricState::Histogram {
                cum: [0; 12],
                sum_ms: 0,
            },
        }
    }

    /// Resets to a fresh start, as a restarted process (or a new series
    /// identity under churn) would.
    pub fn reset(&mut self, rng: &mut Rng) {
        match self {
            MetricState::Counter(v) => *v = rng.below(10),
            MetricState::Gauge(_) => {}
            MetricState::Histogram { cum, sum_ms } => {
                *cum = [0; 12];
                *sum_ms = 0;
            }
        }
    }

    /// Moves to the next scrape.
    pub fn step(&mut self, rng: &mut Rng) {
        match self {
            MetricState::Counter(v) => {
                static INC: Weighted<u64> =
                    Weighted::new(&[(0, 10), (1, 40), (2, 20), (5, 15), (10, 10), (50, 5)]);
                let inc = rng.weighted(&INC);
                *v += inc + rng.below(inc + 1);
            }
            MetricState::Gauge(k) => {
                let next = *k + rng.below(2001) as i64 - 1000;
                *k = if next.abs() > GAUGE_BOUND {
                    *k - (next - *k)
                } else {
                    next
                };
            }
            MetricState::Histogram { cum, sum_ms } => {
                for _ in 0..rng.below(20) {
                    // Log-uniform latencies from 1 ms to ~16 s.
                    let e = rng.below(14);
                    let ms = (1u64 << e) + rng.below(1u64 << e);
                    let first = BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(11);
                    for c in &mut cum[first..] {
                        *c += 1;
                    }
                    *sum_ms += ms;
                }
            }
        }
    }

    /// The current value of each sample series, in the order of
    /// [`MetricType::series_names`]: the first `n` of the array.
    pub fn values(&self) -> ([f64; 14], usize) {
        let mut v = [0.0; 14];
        let n = match self {
            MetricState::Counter(c) => {
                v[0] = *c as f64;
                1
            }
            MetricState::Gauge(k) => {
                v[0] = *k as f64 / 1000.0;
                1
            }
            MetricState::Histogram { cum, sum_ms } => {
                for (x, &c) in v.iter_mut().zip(cum.iter()) {
                    *x = c as f64;
                }
                v[12] = *sum_ms as f64 / 1000.0;
                v[13] = cum[11] as f64;
                14
            }
        };
        (v, n)
    }

    /// Appends one record per sample series; `labels[i]` is the labels
    /// JSON of the i-th name from [`MetricType::series_names`].
    pub fn write(&self, out: &mut Vec<u8>, labels: &[Vec<u8>], ts_ms: i64) {
        let (values, n) = self.values();
        for (l, &v) in labels.iter().zip(&values[..n]) {
            crate::record::write_metric_record(out, l, ts_ms, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_monotonic_and_consistent() {
        let mut rng = Rng::new(5, 0, 0);
        let mut h = MetricState::new(MetricType::Histogram, &mut rng);
        let mut prev = [0u64; 12];
        let mut prev_sum = 0;
        for _ in 0..2000 {
            h.step(&mut rng);
            let MetricState::Histogram { cum, sum_ms } = &h else {
                panic!()
            };
            assert!(cum.windows(2).all(|w| w[0] <= w[1]), "{cum:?}");
            assert!(cum.iter().zip(prev.iter()).all(|(c, p)| c >= p));
            assert!(*sum_ms >= prev_sum);
            prev = *cum;
            prev_sum = *sum_ms;
        }
        assert!(
            prev[0] > 0 && prev[10] < prev[11],
            "spread over buckets: {prev:?}"
        );
    }

    #[test]
    fn histogram_records_match_names() {
        let names = MetricType::Histogram.series_names(3);
        assert_eq!(names.len(), 14);
        assert_eq!(
            names[11],
            ("looker_histogram_0003_seconds_bucket".into(), Some("+Inf"))
        );
        let labels: Vec<Vec<u8>> = (0..14)
            .map(|i| format!("{{\"i\":\"{i}\"}}").into())
            .collect();
        let mut rng = Rng::new(1, 0, 0);
        let mut h = MetricState::new(MetricType::Histogram, &mut rng);
        h.step(&mut rng);
        h.step(&mut rng);
        let mut out = Vec::new();
        h.write(&mut out, &labels, 1000);
        let text = String::from_utf8(out).unwrap();
        let vals: Vec<f64> = text
            .lines()
            .map(|l| match crate::record::parse_line(l).unwrap().payload {
                crate::record::Payload::Value(v) => v,
                _ => panic!(),
            })
            .collect();
        assert_eq!(vals.len(), 14);
        assert_eq!(vals[11], vals[13], "+Inf bucket equals _count");
    }

    #[test]
    fn values_print_as_short_decimals() {
        let mut rng = Rng::new(8, 0, 0);
        for t in [
            MetricType::Counter,
            MetricType::Gauge,
            MetricType::Histogram,
        ] {
            let mut m = MetricState::new(t, &mut rng);
            let labels = vec![b"{}".to_vec(); 14];
            for _ in 0..5000 {
                m.step(&mut rng);
                let mut out = Vec::new();
                m.write(&mut out, &labels, 1);
                for l in String::from_utf8(out).unwrap().lines() {
                    let v = l.rsplit_once("\"value\":").unwrap().1.trim_end_matches('}');
                    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
                    assert!(frac.len() <= 3, "{v}");
                    let digits = int.trim_start_matches('-').len() + frac.len();
                    assert!(digits <= 12, "{v}");
                    if t == MetricType::Counter {
                        assert!(frac.is_empty());
                    }
                }
            }
        }
    }

    #[test]
    fn counters_never_decrease() {
        let mut rng = Rng::new(2, 0, 0);
        let mut c = MetricState::new(MetricType::Counter, &mut rng);
        let mut prev = 0;
        for _ in 0..1000 {
            c.step(&mut rng);
            let MetricState::Counter(v) = c else { panic!() };
            assert!(v >= prev);
            prev = v;
        }
    }
}
