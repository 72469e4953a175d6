//! looker-verify: reads data back from a store and checks it against the
//! manifests `looker-push` wrote.
//!
//! Exit codes: 0 the store holds exactly what was acknowledged, 1
//! discrepancies, 2 the check could not be carried out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser};

use looker::exit::Exit;
use looker::http::ClientArgs;
use looker::verify::{self, Options, ReadApi, Target};

/// Finding lines printed on stderr; the report file has all of them.
const MAX_FINDING_LINES: usize = 200;

#[derive(Parser, Debug)]
#[command(
    name = "looker-verify",
    version,
    about = "Check that a store holds exactly what looker-push's manifests say it acknowledged.",
    after_help = "Exit status: 0 everything acknowledged is there, exactly, and nothing unexpected;\n1 discrepancies (missing, altered, unexpected or duplicated entries);\n2 could not verify (usage, network, auth, unreadable manifest)."
)]
#[command(group(ArgGroup::new("target").required(true).multiple(false)))]
struct Args {
    /// Manifest written by looker-push (repeatable; runs are merged).
    #[arg(long = "manifest", value_name = "FILE", required = true)]
    manifests: Vec<PathBuf>,
    /// Loki base URL, e.g. http://localhost:3100.
    #[arg(long, value_name = "URL", group = "target")]
    loki: Option<String>,
    /// Prometheus (or Cortex/Mimir) base URL, e.g. http://localhost:9090.
    #[arg(long, value_name = "URL", group = "target")]
    prometheus: Option<String>,
    /// VictoriaMetrics base URL, e.g. http://localhost:8428.
    #[arg(long, value_name = "URL", group = "target")]
    victoriametrics: Option<String>,
    /// File written by looker-push --file.
    #[arg(long, value_name = "PATH", group = "target")]
    file: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
    /// Entries per Loki query (at most the server's max_entries_limit_per_query).
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    query_limit: u64,
    /// How to read Prometheus.
    #[arg(long, value_enum, default_value = "query")]
    read_api: ReadApi,
    /// Series read at the same time.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    max_concurrent_reads: u64,
    /// Check a random sample of N series instead of all.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    sample_series: Option<u64>,
    /// Seed of the --sample-series choice.
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
    /// Re-check series with discrepancies until they pass or this elapses
    /// (for data still arriving), polling about every second.
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_dur)]
    wait: Duration,
    /// Write every finding as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
    /// Progress line interval while reading a store.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_dur)]
    progress_interval: Duration,
    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9102) at /metrics:
    /// series and entries read, per-series read time, series failing.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    looker::timefmt::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // Help and version go to stdout with success; usage errors exit 2.
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Error.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    match run(args) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("looker-verify: {}", looker::exit::describe(e.as_ref()));
            Exit::Error.into()
        }
    }
}

fn run(args: Args) -> anyhow::Result<Exit> {
    let target = match (args.loki, args.prometheus, args.victoriametrics, args.file) {
        (Some(u), _, _, _) => Target::Loki(u),
        (_, Some(u), _, _) => Target::Prometheus(u, args.read_api),
        (_, _, Some(u), _) => Target::VictoriaMetrics(u),
        (_, _, _, Some(p)) => Target::File(p),
        _ => anyhow::bail!("one of --loki, --prometheus, --victoriametrics or --file is required"),
    };
    let opts = Options {
        manifests: args.manifests,
        target,
        client: args.client,
        query_limit: usize::try_from(args.query_limit).unwrap_or(usize::MAX),
        max_concurrent_reads: usize::try_from(args.max_concurrent_reads).unwrap_or(usize::MAX),
        sample_series: args
            .sample_series
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        seed: args.seed,
        wait: args.wait,
        progress: (!args.quiet).then_some(args.progress_interval),
        metrics_addr: args.metrics_addr,
        exit_after: true,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the runtime: {e}"))?;
    let outcome = rt.block_on(verify::run(&opts))?;
    if let Some(path) = &args.report {
        let write = || -> std::io::Result<()> {
            let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
            serde_json::to_writer_pretty(&mut f, &outcome.report)?;
            std::io::Write::write_all(&mut f, b"\n")?;
            std::io::Write::flush(&mut f)
        };
        write().map_err(|e| anyhow::anyhow!("--report {}: {e}", path.display()))?;
    }
    if !args.quiet {
        let stderr = std::io::stderr();
        let mut w = stderr.lock();
        // A closed stderr must not turn a verdict into a crash.
        let _ = outcome.report.write_text(&mut w, MAX_FINDING_LINES);
    }
    Ok(outcome.exit)
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
