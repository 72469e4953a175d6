//! looker-push: batch, pace and push NDJSON records (or raw log lines) to
//! Loki, a Prometheus remote-write receiver, a local file, or nowhere, and
//! record what the store acknowledged in a manifest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{ArgGroup, Parser, ValueEnum};

use looker::batch::BatchLimits;
use looker::encode::Encoding;
use looker::exit::Exit;
use looker::http::ClientArgs;
use looker::input::Source;
use looker::labels::LabelSet;
use looker::push::{self, InputFormat, OnInvalid, PushConfig};
use looker::schedule::{RateSpec, Schedule};
use looker::sink::{self, RetryPolicy, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LokiEncoding {
    Protobuf,
    Json,
}

fn dur(s: &str) -> Result<Duration, String> {
    looker::timefmt::parse_duration(s).map_err(|e| e.to_string())
}

/// Push NDJSON records or raw log lines into Loki, a Prometheus
/// remote-write receiver, a local file, or nowhere; record a manifest of
/// exactly what the store acknowledged.
#[derive(Debug, Parser)]
#[command(
    name = "looker-push",
    version,
    after_help = "Exit status: 0 every fragment acknowledged; 1 some fragments rejected, failed or unknown;\n2 bad flags, bad input (--on-invalid fail), unreachable store or unwritable manifest;\n130 interrupted (SIGINT/SIGTERM) after finishing or recording in-flight work."
)]
#[command(group(ArgGroup::new("target").required(true).args(["loki", "remote_write", "file", "null"])))]
#[command(group(ArgGroup::new("pace").args(["rate", "rate_bytes", "schedule"])))]
struct Cli {
    /// Input files (plain or gzip, detected by content); `-` or none reads stdin.
    inputs: Vec<String>,

    /// Input format.
    #[arg(long, value_enum, default_value = "ndjson")]
    format: InputFormat,
    /// Label added to raw input lines (repeatable), k=v.
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// What to do with a malformed input line.
    #[arg(long, value_enum, default_value = "fail")]
    on_invalid: OnInvalid,
    /// Longest input line accepted, in bytes; longer lines are invalid.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    max_line_bytes: usize,
    /// Series kept in memory (about 2 KB each) for order and repeat
    /// checks, at least 10000. Idle series (unused for a minute and for
    /// twice as many entries as there are series) are forgotten first;
    /// above this many, the least recently used too.
    #[arg(long, default_value_t = looker::series::DEFAULT_MAX_SERIES, value_name = "N")]
    max_series: usize,
    /// Log entries remembered below their series' latest timestamp, over
    /// all series (16 bytes each), so that an entry repeating an earlier
    /// one is pushed once, as Loki keeps it; an entry from further back is
    /// pushed unchecked and counted (late_unchecked). Raise it to replay
    /// files that overlap by more.
    #[arg(long, default_value_t = looker::series::BEHIND_BUDGET, value_name = "N")]
    remember_entries: usize,
    /// Shift all timestamps so the run starts now, keeping spacing and order.
    #[arg(long)]
    retime: bool,
    /// Replay at X times the pace recorded in the records' timestamps.
    #[arg(long, value_name = "X")]
    speed: Option<f64>,

    /// Loki base URL (the push path /loki/api/v1/push is appended).
    #[arg(long, value_name = "URL")]
    loki: Option<String>,
    /// Prometheus remote-write URL, e.g. http://host:9090/api/v1/write
    /// (Cortex/Mimir: /api/v1/push; VictoriaMetrics: /api/v1/write).
    #[arg(long, value_name = "URL")]
    remote_write: Option<String>,
    /// Built-in local sink: append accepted records to this NDJSON file.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Discard everything (measures the pipeline itself; still encodes).
    #[arg(long)]
    null: bool,
    /// Loki body encoding.
    #[arg(long, value_enum, default_value = "protobuf")]
    encoding: LokiEncoding,
    /// Gzip JSON bodies (Loki, --encoding json).
    #[arg(long)]
    gzip: bool,

    /// Entries per fragment (one series' run of entries).
    #[arg(long, default_value_t = 500, value_name = "N")]
    fragment_size: usize,
    /// Fragments per push message [default: 20 for logs (Loki streams), 500 for metrics (remote-write series)]
    #[arg(long, value_name = "N")]
    fragments_per_message: Option<usize>,
    /// Upper bound of one push message (encoded, before compression).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    max_message_bytes: usize,
    /// Flush partial fragments and messages after this long.
    #[arg(long, default_value = "1s", value_parser = dur, value_name = "DURATION")]
    linger: Duration,
    /// Requests in flight at most (each series always uses the same one).
    #[arg(long, default_value_t = 10, value_name = "N")]
    max_concurrent_writes: usize,

    /// Entries per second.
    #[arg(long, value_name = "N")]
    rate: Option<f64>,
    /// Log line bytes per second.
    #[arg(long, value_name = "BYTES")]
    rate_bytes: Option<f64>,
    /// Burst size of the rate limit (entries or bytes).
    #[arg(long, value_name = "N")]
    burst: Option<u32>,
    /// Rate schedule file: {"update_interval":S,"schedule":[r1,r2,..]} or {"stages":[{"duration":"30s","target":N},..]}.
    #[arg(long, value_name = "FILE")]
    schedule: Option<PathBuf>,

    /// First retry delay.
    #[arg(long, default_value = "100ms", value_parser = dur, value_name = "DURATION")]
    retry_min_delay: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "10s", value_parser = dur, value_name = "DURATION")]
    retry_max_delay: Duration,
    /// Give up on a message this long after its first attempt.
    #[arg(long, default_value = "2m", value_parser = dur, value_name = "DURATION")]
    retry_deadline: Duration,

    #[command(flatten)]
    client: ClientArgs,

    /// Append the manifest of acknowledged fragments to this file.
    #[arg(long, value_name = "PATH")]
    manifest: Option<PathBuf>,
    /// Write a JSON report here at the end.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// Write throughput and latency per progress interval as CSV.
    #[arg(long, value_name = "PATH")]
    report_csv: Option<PathBuf>,
    /// Progress (and CSV) interval.
    #[arg(long, default_value = "5s", value_parser = dur, value_name = "DURATION")]
    progress_interval: Duration,
    /// No progress lines or summary on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// After SIGINT/SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, default_value = "10s", value_parser = dur, value_name = "DURATION")]
    shutdown_grace: Duration,
}

fn config(cli: Cli) -> anyhow::Result<PushConfig> {
    let target = if let Some(u) = cli.loki {
        Target::Loki {
            url: sink::loki_push_url(&u),
        }
    } else if let Some(u) = cli.remote_write {
        Target::RemoteWrite { url: u }
    } else if let Some(p) = cli.file {
        Target::File { path: p }
    } else {
        Target::Null
    };
    if let Target::Loki { url } | Target::RemoteWrite { url } = &target {
        let shown = looker::http::redact_url(url);
        let parsed = reqwest::Url::parse(url).with_context(|| format!("invalid URL {shown:?}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("invalid URL {shown:?}: expected http or https");
        }
    }
    let encoding = match (&target, cli.encoding) {
        (Target::RemoteWrite { .. }, _) => Encoding::RemoteWrite,
        (Target::File { .. }, _) => Encoding::Ndjson,
        (_, LokiEncoding::Json) => Encoding::LokiJson { gzip: cli.gzip },
        (_, LokiEncoding::Protobuf) => {
            if cli.gzip {
                bail!("--gzip applies to --encoding json only (protobuf bodies are snappy-compressed)");
            }
            Encoding::LokiProtobuf
        }
    };
    if matches!(target, Target::RemoteWrite { .. }) && cli.format == InputFormat::Raw {
        bail!("--format raw makes log lines; --remote-write needs metric samples");
    }
    let raw_labels = if cli.labels.is_empty() {
        None
    } else {
        let pairs = cli
            .labels
            .iter()
            .map(|l| LabelSet::parse_pair(l).with_context(|| format!("--label {l:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Some(LabelSet::new(pairs).context("--label")?)
    };
    if raw_labels.is_some() && cli.format != InputFormat::Raw {
        bail!("--label applies to --format raw (NDJSON records carry their own labels)");
    }
    let positive = |name: &str, v: f64| -> anyhow::Result<f64> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            bail!("{name} must be a positive number, got {v}")
        }
    };
    let rate = if let Some(r) = cli.rate {
        RateSpec::Entries {
            rate: positive("--rate", r)?,
            burst: cli.burst,
        }
    } else if let Some(r) = cli.rate_bytes {
        RateSpec::Bytes {
            rate: positive("--rate-bytes", r)?,
            burst: cli.burst,
        }
    } else if let Some(p) = &cli.schedule {
        RateSpec::Schedule(Schedule::load(p).context("--schedule")?)
    } else {
        RateSpec::Unlimited
    };
    if let Some(s) = cli.speed {
        positive("--speed", s)?;
    }
    for (name, v) in [
        ("--fragment-size", cli.fragment_size),
        (
            "--fragments-per-message",
            cli.fragments_per_message.unwrap_or(1),
        ),
        ("--max-concurrent-writes", cli.max_concurrent_writes),
        ("--max-message-bytes", cli.max_message_bytes),
        ("--max-line-bytes", cli.max_line_bytes),
    ] {
        if v == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if cli.max_series < looker::series::MAX_LIVE {
        bail!("--max-series must be at least {}", looker::series::MAX_LIVE);
    }
    if cli.retry_min_delay > cli.retry_max_delay {
        bail!("--retry-min-delay must not exceed --retry-max-delay");
    }
    let inputs = if cli.inputs.is_empty() {
        vec![Source::Stdin]
    } else {
        cli.inputs.iter().map(|s| Source::from_arg(s)).collect()
    };
    Ok(PushConfig {
        inputs,
        format: cli.format,
        raw_labels,
        on_invalid: cli.on_invalid,
        retime: cli.retime,
        speed: cli.speed,
        limits: BatchLimits {
            fragment_size: cli.fragment_size,
            fragments_per_message: cli.fragments_per_message,
            max_message_bytes: cli.max_message_bytes,
            linger: cli.linger.max(Duration::from_millis(1)),
        },
        max_concurrent_writes: cli.max_concurrent_writes,
        target,
        encoding,
        client: cli.client,
        retry: RetryPolicy {
            min_delay: cli.retry_min_delay.max(Duration::from_millis(1)),
            max_delay: cli.retry_max_delay,
            deadline: cli.retry_deadline,
        },
        rate,
        manifest: cli.manifest,
        max_line_bytes: cli.max_line_bytes,
        max_series: cli.max_series,
        remember_entries: cli.remember_entries,
        report: cli.report,
        report_csv: cli.report_csv,
        progress_interval: cli.progress_interval.max(Duration::from_millis(100)),
        quiet: cli.quiet,
        metrics_addr: cli.metrics_addr,
        shutdown_grace: cli.shutdown_grace,
        exit_after: true,
    })
}

fn run() -> anyhow::Result<Exit> {
    let cli = Cli::parse();
    let quiet = cli.quiet;
    let cfg = config(cli)?;
    let report = push::run(cfg)?;
    if let Some(e) = &report.input_error {
        eprintln!("looker-push: {e}");
    }
    if !quiet {
        eprintln!(
            "looker-push: {} entries acknowledged ({} rejected, {} failed, {} unknown, {} lines skipped, {} repeated entries pushed once) in {:.2}s: {:.0} entries/s, {} requests, {} retries, p50 {:.1}ms p99 {:.1}ms",
            report.entries_acked,
            report.entries_rejected,
            report.entries_failed,
            report.entries_unknown,
            report.skipped_lines,
            report.duplicates_skipped,
            report.duration_s,
            report.entries_per_s,
            report.requests,
            report.retries,
            report.latency_ms.p50,
            report.latency_ms.p99,
        );
        for (reason, n) in &report.rejected_reasons {
            eprintln!("looker-push: rejected {n} time(s): {reason}");
        }
        if report.late_unchecked > 0 {
            eprintln!(
                "looker-push: {} log entries came further back in time than the pusher remembers their series (--remember-entries), so were not checked for repeating earlier input; Loki keeps a repeated entry once, so any that did will read as missing",
                report.late_unchecked,
            );
        }
    }
    Ok(match report.exit_code {
        0 => Exit::Ok,
        1 => Exit::Discrepancy,
        130 => Exit::Interrupted,
        _ => Exit::Error,
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(e) => e.into(),
        Err(e) => {
            eprintln!("looker-push: {}", looker::exit::describe(e.as_ref()));
            Exit::Error.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }
}
