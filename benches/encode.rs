//! What a remote-write request costs to build, without reading any input:
//! the floor under looker-push's CPU per sample. `bench/prometheus.sh`
//! sets these figures against the store's CPU per sample.
//!
//!   cargo bench --bench encode -- [SERIES] [PER_SERIES] [RUN]
//!
//! Samples go through the same path as in looker-push, with its default
//! limits (10 lanes, 500-sample fragments, 500 fragments per message), in
//! the order looker-gen writes them: RUN consecutive samples of a series
//! (default 1, as sample records; `--samples-per-line RUN` writes series
//! lines of that many), then the next series. Two figures, CPU seconds per
//! million samples:
//!
//! - `encode`: protobuf and snappy of the finished messages only, which
//!   any remote-write client pays;
//! - `batch+encode`: also grouping samples into per-series fragments and
//!   messages, with the digests the manifest records.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it runs one
//! small round to show it still works.

use std::sync::Arc;
use std::time::Duration;

use looker::batch::{Batch, BatchLimits, Batcher, Series};
use looker::checksum;
use looker::encode::{Encoder, Encoding};
use looker::labels::LabelSet;
use looker::manifest::SeriesKey;
use looker::record::Mode;

const LANES: usize = 10;

fn series(n: usize) -> Vec<Arc<Series>> {
    (0..n)
        .map(|i| {
            let labels = LabelSet::new(vec![
                ("__name__".into(), "looker_counter_0000_total".into()),
                ("invocation".into(), "looker-79039317".into()),
                ("series".into(), format!("s{i:04}")),
            ])
            .expect("valid labels");
            Arc::new(Series::new(SeriesKey::new(labels), i % LANES))
        })
        .collect()
}

/// Batches the samples as looker-push would; returns the messages.
fn batch(series: &[Arc<Series>], per: usize, run: usize) -> Vec<Batch> {
    let mut b = Batcher::new(
        Mode::Metrics,
        BatchLimits {
            fragment_size: 500,
            fragments_per_message: None,
            max_message_bytes: 1 << 20,
            linger: Duration::from_secs(3600),
        },
        LANES,
    );
    let mut out = Vec::new();
    let t0: i64 = 1_795_561_188_000;
    let mut counters: Vec<u64> = (0..series.len() as u64).map(|i| i * 7919 % 1000).collect();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    for first in (0..per).step_by(run) {
        for (id, s) in series.iter().enumerate() {
            for step in first..(first + run).min(per) {
                let ts = t0 + step as i64 * 1000;
                // Counters grow by a small random amount each scrape, mostly
                // 1 or 2 and now and then 50, as looker-gen's do.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let inc = [0, 1, 1, 1, 1, 2, 2, 5, 10, 50][(rng % 10) as usize];
                counters[id] += inc + (rng >> 32) % (inc + 1);
                let v = counters[id] as f64;
                b.push_value(
                    s,
                    id as u32,
                    ts,
                    v,
                    checksum::metric_sample(ts, v),
                    &mut out,
                );
            }
        }
    }
    b.flush(&mut out);
    out
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Best of `rounds` of `f`, in CPU seconds.
fn best<T>(rounds: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..rounds {
        let c0 = cpu_seconds();
        let r = f();
        best = best.min(cpu_seconds() - c0);
        last = Some(r);
    }
    (best, last.expect("at least one round"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (n_series, per, run) = match (bench, nums.as_slice()) {
        (false, _) => (20, 50, 7),
        (true, [s, p, r, ..]) => (*s, *p, (*r).max(1)),
        (true, [s, p]) => (*s, *p, 1),
        (true, [s]) => (*s, 1000, 1),
        (true, []) => (2000, 1000, 1),
    };
    let rounds = if bench { 3 } else { 1 };
    let series = series(n_series);
    let samples = (n_series * per) as f64;

    let (batch_cpu, batches) = best(rounds, || batch(&series, per, run));
    let mut enc = Encoder::new(Encoding::RemoteWrite);
    let (encode_cpu, body_bytes) = best(rounds, || {
        batches.iter().map(|b| enc.encode(b).len()).sum::<usize>()
    });
    let per_million = |cpu: f64| cpu * 1e6 / samples;
    println!(
        "{n_series} series x {per}, {run} in a row: {} messages, {:.1} compressed bytes per sample",
        batches.len(),
        body_bytes as f64 / samples
    );
    println!(
        "encode        {:.3} cpu-s per million samples",
        per_million(encode_cpu)
    );
    println!(
        "batch+encode  {:.3} cpu-s per million samples",
        per_million(batch_cpu + encode_cpu)
    );
    assert_eq!(
        batches.iter().map(|b| b.entries).sum::<usize>(),
        n_series * per,
        "every sample is in one message"
    );
}
