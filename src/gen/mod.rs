//! `looker-gen`: synthetic log entries or metric samples as NDJSON records.
//!
//! Every series draws from its own random stream seeded by (seed, series
//! index), so output is reproducible with `--seed` and `--start-time`, and
//! shards of one run are disjoint slices of the unsharded run.

pub mod clock;
pub mod engine;
pub mod logs;
pub mod metrics;
pub mod rng;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{Generator, Step};
pub use logs::{Compressibility, Format, LineSpec};
pub use metrics::MetricType;

use crate::exit::Exit;
use crate::labels::LabelSet;
use crate::metrics::GenMetrics;
use crate::record::Mode;

const AFTER_HELP: &str = "\
Time:
  With --start-time, every series starts at that instant and timestamps are
  fully determined by the flags and --seed (byte-identical output).
  Without it, synthetic time is loosely coupled to wall time: each series
  starts at a random point in [now - max-lag, now - min-lag), runs ahead at
  full speed, never gets closer to now than --min-lag (the generator sleeps
  instead), and leaps forward if it falls more than --max-lag behind (e.g.
  when the reader is slow). The defaults (1s, 10m) suit Loki and Prometheus,
  which rejects samples more than about 1h older than its newest.

  --duration is synthetic time per series: a series stops once its next
  timestamp would be --duration after its first. With wall-time coupling
  that is also about how long a caught-up series runs. Whichever of --count
  and --duration is reached first ends a series.

Series:
  Every series carries `invocation` and `series` (s0000, s0001, ...) labels,
  log series also `service_name` (default looker, set it with --label) so
  Loki 3 does not invent one. Metrics: --n-metrics names per series;
  histograms add _bucket (with le, up to +Inf), _sum and _count series and
  --count counts scrapes. --churn-every N adds a `cycle` label that changes
  every N entries, so series identities rotate.

Output ends quietly with exit 0 when the reader closes the pipe. Exit 2 on
bad flags or I/O errors.";

/// Generates synthetic log entries or metric samples as NDJSON records.
#[derive(Debug, Clone, Parser)]
#[command(name = "looker-gen", version, after_long_help = AFTER_HELP)]
pub struct Args {
    /// Number of series (log streams, or metric label sets per metric name).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub n_series: u64,

    /// Entries per series; 0 = endless (until --duration or the reader
    /// closes the pipe).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub count: u64,

    /// Synthetic time per series after which it stops (e.g. 10m).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Seed for all randomness; same flags, seed and --start-time give
    /// byte-identical output. Random when unset.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// First timestamp of every series (RFC3339 or Unix ns). Unset:
    /// coupled to wall time, see below.
    #[arg(long, value_name = "T", value_parser = parse_timestamp)]
    pub start_time: Option<i64>,

    /// Entries never get closer to now than this (wall-time coupling only).
    #[arg(long, default_value = "1s", value_name = "D", value_parser = parse_duration)]
    pub min_lag: Duration,

    /// Series further behind now than this leap forward (wall-time
    /// coupling only).
    #[arg(long, default_value = "10m", value_name = "D", value_parser = parse_duration)]
    pub max_lag: Duration,

    /// Time between adjacent entries of a series [default: 1ms for logs,
    /// 1s for metrics].
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub time_increment: Option<Duration>,

    /// Random extra time in [0, D) added to each increment.
    #[arg(long, default_value = "0", value_name = "D", value_parser = parse_duration)]
    pub jitter: Duration,

    /// Label added to every series (repeatable).
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Value of the `invocation` label [default: looker-<hex from the seed>].
    #[arg(long, value_name = "ID")]
    pub invocation_id: Option<String>,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = Format::Looker, conflicts_with = "metrics")]
    pub format: Format,

    /// Percentage of entries that are multi-line stack traces.
    #[arg(long, default_value_t = 0.0, value_name = "PCT", value_parser = parse_pct, conflicts_with = "metrics")]
    pub multiline: f64,

    /// Approximate line length: the message part is padded to reach it;
    /// lines whose fields alone are longer are not cut (0 = natural length).
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        conflicts_with = "metrics"
    )]
    pub line_bytes: usize,

    /// How well the padding from --line-bytes compresses (gzip of the
    /// output with --line-bytes 1000: min < 1.6x, medium 2-6x, max > 10x).
    #[arg(long, value_enum, default_value_t = Compressibility::Medium, conflicts_with = "metrics")]
    pub compressibility: Compressibility,

    /// Percentage of entries with corrupted content (invalid IPs, absurd
    /// status codes, control characters, overlong fields); records stay
    /// valid.
    #[arg(long, default_value_t = 0.0, value_name = "PCT", value_parser = parse_pct, conflicts_with = "metrics")]
    pub bad_data: f64,

    /// Generate metric samples instead of log entries.
    #[arg(long)]
    pub metrics: bool,

    /// Kind of metric.
    #[arg(long, value_enum, default_value_t = MetricType::Counter, requires = "metrics")]
    pub metric_type: MetricType,

    /// Number of metric names; each has --n-series series.
    #[arg(long, default_value_t = 1, value_name = "N", requires = "metrics")]
    pub n_metrics: u32,

    /// Write up to N consecutive entries of a series on one line: a
    /// metric series in VictoriaMetrics' JSON line format
    /// ({"metric":{..},"values":[..],"timestamps":[..]}), a log stream as a
    /// Loki stream ({"stream":{..},"values":[["ns","line"],..]}).
    /// looker-push reads them with a fraction of the work, and
    /// VictoriaMetrics' /api/v1/import and Loki's push API take them as
    /// they are. A line holds fewer when the series ends or reaches wall
    /// time; 1 writes a record per line.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        alias = "samples-per-line"
    )]
    pub entries_per_line: u32,

    /// Change every series' identity (its `cycle` label) every N entries;
    /// 0 = never.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub churn_every: u64,

    /// Generate only shard I of N (series i belongs to shard i % N).
    #[arg(long, default_value = "0/1", value_name = "I/N", value_parser = parse_shard)]
    pub shard: Shard,

    /// Write to FILE instead of stdout; gzip-compressed if it ends in .gz.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,

    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9101) at /metrics:
    /// records and bytes written, time waiting for wall time, time blocked
    /// on the reader, and the entry lag.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub of: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::timefmt::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_timestamp(s: &str) -> Result<i64, String> {
    crate::timefmt::parse_timestamp_ns(s).map_err(|e| e.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    LabelSet::parse_pair(s).map_err(|e| e.to_string())
}

fn parse_pct(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage between 0 and 100")),
    }
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let bad = || format!("{s:?} is not I/N with 0 <= I < N (e.g. 0/4)");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let index = i.trim().parse::<u64>().map_err(|_| bad())?;
    let of = n.trim().parse::<u64>().map_err(|_| bad())?;
    if of == 0 || index >= of {
        return Err(bad());
    }
    Ok(Shard { index, of })
}

/// Validated settings; everything [`Generator`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub n_series: u64,
    pub count: u64,
    pub duration_ns: Option<i64>,
    pub seed: u64,
    pub start_ns: Option<i64>,
    pub min_lag_ns: i64,
    pub max_lag_ns: i64,
    pub increment_ns: i64,
    pub jitter_ns: i64,
    /// User labels (and `service_name` for logs), without the generated ones.
    pub labels: Vec<(String, String)>,
    pub invocation: String,
    pub line: LineSpec,
    pub metric_type: MetricType,
    pub n_metrics: u32,
    pub churn_every: u64,
    pub shard: Shard,
    /// Entries per series or stream line; 1 writes records.
    pub entries_per_line: u32,
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn random_seed() -> u64 {
    use rand::{RngCore, SeedableRng};
    match rand_pcg::Pcg64Mcg::try_from_os_rng() {
        Ok(mut r) => r.next_u64(),
        // No OS entropy: time and pid still differ between runs.
        Err(_) => rng::mix(crate::timefmt::now_ns() as u64 ^ (u64::from(std::process::id()) << 32)),
    }
}

impl Config {
    pub fn from_args(a: &Args) -> Result<Config, String> {
        let mode = if a.metrics { Mode::Metrics } else { Mode::Logs };
        if a.n_series == 0 {
            return Err("--n-series must be at least 1".into());
        }
        if a.n_metrics == 0 {
            return Err("--n-metrics must be at least 1".into());
        }
        if a.entries_per_line == 0 {
            return Err("--entries-per-line must be at least 1".into());
        }
        let increment = a.time_increment.unwrap_or(match mode {
            Mode::Logs => Duration::from_millis(1),
            Mode::Metrics => Duration::from_secs(1),
        });
        if increment.is_zero() {
            return Err("--time-increment must be greater than 0 (timestamps strictly increase within a series)".into());
        }
        if mode == Mode::Metrics {
            let ms = Duration::from_millis(1);
            if increment < ms {
                return Err(format!(
                    "--time-increment {} is below 1ms, the resolution of metric timestamps; use 1ms or more with --metrics",
                    humantime::format_duration(increment)
                ));
            }
            if !a.jitter.is_zero() && a.jitter < ms {
                return Err(format!(
                    "--jitter {} is below 1ms, the resolution of metric timestamps; use 0 or 1ms or more with --metrics",
                    humantime::format_duration(a.jitter)
                ));
            }
        }
        if a.start_time.is_none() && a.max_lag <= a.min_lag {
            return Err(format!(
                "--max-lag ({}) must be greater than --min-lag ({})",
                humantime::format_duration(a.max_lag),
                humantime::format_duration(a.min_lag)
            ));
        }
        let mut reserved = vec!["invocation", "series"];
        if a.churn_every > 0 {
            reserved.push("cycle");
        }
        if mode == Mode::Metrics {
            reserved.extend(["__name__", "le"]);
        }
        let mut labels: Vec<(String, String)> = Vec::new();
        for (k, v) in &a.labels {
            if reserved.contains(&k.as_str()) {
                let hint = if k == "invocation" {
                    " (use --invocation-id)"
                } else {
                    ""
                };
                return Err(format!("--label {k}={v}: {k:?} is set by looker-gen{hint}"));
            }
            if labels.iter().any(|(n, _)| n == k) {
                return Err(format!("--label {k}: given more than once"));
            }
            labels.push((k.clone(), v.clone()));
        }
        if mode == Mode::Logs && !labels.iter().any(|(n, _)| n == "service_name") {
            labels.push(("service_name".into(), "looker".into()));
        }
        let seed = a.seed.unwrap_or_else(random_seed);
        let invocation = match &a.invocation_id {
            Some(id) if id.is_empty() => return Err("--invocation-id must not be empty".into()),
            Some(id) => id.clone(),
            None => format!("looker-{:08x}", rng::mix(seed ^ 0x1f0c_0a7e) as u32),
        };
        let min_lag_ns = ns(a.min_lag);
        let max_lag_ns = ns(a.max_lag);
        Ok(Config {
            mode,
            n_series: a.n_series,
            count: a.count,
            duration_ns: a.duration.map(ns),
            seed,
            start_ns: a.start_time,
            min_lag_ns,
            max_lag_ns,
            increment_ns: ns(increment),
            jitter_ns: ns(a.jitter),
            labels,
            invocation,
            line: LineSpec {
                format: a.format,
                line_bytes: a.line_bytes,
                compressibility: a.compressibility,
                bad_data: a.bad_data / 100.0,
                multiline: a.multiline / 100.0,
            },
            metric_type: a.metric_type,
            n_metrics: a.n_metrics,
            churn_every: a.churn_every,
            shard: a.shard,
            entries_per_line: a.entries_per_line,
        })
    }
}

/// Output is handed on in chunks of about this size: one write per chunk,
/// never one per line.
pub const CHUNK: usize = 256 * 1024;

/// The pipe capacity asked for: several chunks, so a write rarely has to
/// wait for the reader (each wait costs two context switches). 1 MiB is
/// the default /proc/sys/fs/pipe-max-size for unprivileged processes.
const PIPE_SIZE: usize = 1024 * 1024;

/// Best effort: not a pipe, or over the limit, leaves it as it was.
#[cfg(target_os = "linux")]
fn grow_pipe(fd: std::os::fd::RawFd) {
    // SAFETY: fcntl on a descriptor we own, with an integer argument; it
    // touches no memory of ours.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int);
    }
}

#[cfg(not(target_os = "linux"))]
fn grow_pipe(_fd: std::os::fd::RawFd) {}

enum Sink {
    Plain(std::fs::File),
    Gzip(flate2::write::GzEncoder<std::fs::File>),
}

impl Sink {
    fn open(path: Option<&std::path::Path>) -> io::Result<Sink> {
        match path {
            None => {
                // A duplicate of fd 1 as a File: unbuffered, so each chunk is
                // one write(2), unlike the line-buffered io::Stdout.
                use std::os::fd::{AsFd, AsRawFd};
                let fd = io::stdout().as_fd().try_clone_to_owned()?;
                grow_pipe(fd.as_raw_fd());
                Ok(Sink::Plain(std::fs::File::from(fd)))
            }
            Some(p) if p.as_os_str() == "-" => Sink::open(None),
            Some(p) => {
                let f = std::fs::File::create(p)?;
                if p.extension().is_some_and(|e| e == "gz") {
                    Ok(Sink::Gzip(flate2::write::GzEncoder::new(
                        f,
                        flate2::Compression::fast(),
                    )))
                } else {
                    Ok(Sink::Plain(f))
                }
            }
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(f) => f.write_all(buf),
            Sink::Gzip(z) => z.write_all(buf),
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Plain(mut f) => f.flush(),
            Sink::Gzip(z) => z.finish().map(drop),
        }
    }
}

/// Why a run stopped early. A closed pipe is not among them: the reader
/// having seen enough is a normal end.
#[derive(Debug)]
enum RunError {
    Invalid(String),
    Io(String, io::Error),
}

impl RunError {
    fn io(what: &str) -> impl FnOnce(io::Error) -> RunError + '_ {
        move |e| RunError::Io(what.to_string(), e)
    }
}

/// Writes chunks to the sink, and counts them when metrics are on.
struct Out {
    sink: Sink,
    metrics: Option<GenMetrics>,
}

impl Out {
    fn write<C: Clock>(&mut self, buf: &mut Vec<u8>, gen: &Generator<C>) -> Result<(), RunError> {
        let Some(m) = &self.metrics else {
            self.sink.write_all(buf).map_err(RunError::io(W))?;
            buf.clear();
            return Ok(());
        };
        let records = memchr::memchr_iter(b'\n', buf).count();
        let t = Instant::now();
        m.writing.set(1);
        let written = self.sink.write_all(buf);
        m.writing.set(0);
        written.map_err(RunError::io(W))?;
        m.blocked_seconds.inc_by(t.elapsed().as_secs_f64());
        m.records.inc_by(records as u64);
        m.bytes.inc_by(buf.len() as u64);
        if let Some(ts) = gen.last_ts_ns() {
            m.lag_seconds
                .set((crate::timefmt::now_ns() - ts) as f64 / 1e9);
        }
        buf.clear();
        Ok(())
    }
}

const W: &str = "writing output";

/// Runs `gen` to completion into `out`.
fn pump<C: Clock>(mut gen: Generator<C>, mut out: Out) -> Result<(), RunError> {
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 64 * 1024);
    loop {
        match gen.step(&mut buf).map_err(RunError::Invalid)? {
            Step::Emitted => {
                if buf.len() >= CHUNK {
                    out.write(&mut buf, &gen)?;
                    gen.resync();
                }
            }
            Step::Wait(d) => {
                // Hand over what we have before idling, so readers see
                // entries as soon as they exist.
                if !buf.is_empty() {
                    out.write(&mut buf, &gen)?;
                }
                gen.clock_mut().sleep(d);
                if let Some(m) = &out.metrics {
                    m.wait_seconds.inc_by(d.as_secs_f64());
                }
            }
            Step::Done => break,
        }
    }
    out.write(&mut buf, &gen)?;
    out.sink.finish().map_err(RunError::io(W))
}

fn run_inner(args: &Args) -> Result<(), RunError> {
    let cfg = Config::from_args(args).map_err(RunError::Invalid)?;
    let what = match &args.output {
        Some(p) => format!("opening {}", p.display()),
        None => "opening stdout".to_string(),
    };
    let sink = Sink::open(args.output.as_deref()).map_err(RunError::io(&what))?;
    let gen = Generator::new(&cfg, SystemClock).map_err(RunError::Invalid)?;
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let m = GenMetrics::new().map_err(|e| RunError::Invalid(format!("metrics: {e}")))?;
            crate::metrics::serve_in_thread(addr, m.registry.clone())
                .map_err(RunError::io(&format!("--metrics-addr {addr}")))?;
            Some(m)
        }
        None => None,
    };
    pump(gen, Out { sink, metrics })
}

/// Runs looker-gen with `args`; the exit status is the tool's contract.
pub fn run(args: &Args) -> Exit {
    match run_inner(args) {
        Ok(()) => Exit::Ok,
        Err(RunError::Io(_, e)) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(RunError::Io(what, e)) => {
            eprintln!("looker-gen: {what}: {e}");
            Exit::Error
        }
        Err(RunError::Invalid(msg)) => {
            eprintln!("looker-gen: {msg}");
            Exit::Error
        }
    }
}

/// The `looker-gen` binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    run(&args).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Args::command().debug_assert();
    }
}
