//! Standalone Loki-compatible test server, for benchmarks and manual runs.
//!
//! Prints the bound address on the first line of stdout (so `--addr
//! 127.0.0.1:0` can be used by scripts) and serves until killed.

#[path = "loki.rs"]
#[allow(dead_code)]
mod loki;

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use loki::{LokiConfig, LokiServer};

#[derive(Parser, Debug)]
#[command(
    name = "loki-test-server",
    about = "Loki-compatible test server (push, query_range, labels, series)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3100")]
    addr: SocketAddr,
    /// Require X-Scope-OrgID (401 "no org id" without it).
    #[arg(long)]
    auth_enabled: bool,
    /// max_entries_limit_per_query.
    #[arg(long, default_value_t = 5000)]
    max_entries_limit: usize,
    #[arg(long, default_value = "168h", value_parser = duration)]
    reject_old_samples_max_age: Duration,
    #[arg(long, default_value = "10m", value_parser = duration)]
    creation_grace_period: Duration,
    /// Bytes; 0 = unlimited.
    #[arg(long, default_value_t = 256 * 1024)]
    max_line_size: usize,
    #[arg(long, default_value_t = 6 * 1024 * 1024)]
    ingestion_burst_bytes: usize,
    /// Sustained per-tenant ingestion rate; unset = only the burst applies.
    #[arg(long)]
    ingestion_rate_bytes_per_sec: Option<u64>,
    #[arg(long, default_value_t = 15)]
    max_label_names_per_series: usize,
    /// Per-stream window behind the newest entry ("entry too far behind").
    #[arg(long, default_value = "1h", value_parser = duration)]
    unordered_window: Duration,
    #[arg(long, default_value = "721h", value_parser = duration)]
    max_query_length: Duration,
    /// Do not add the discovered service_name label.
    #[arg(long)]
    no_discover_service_name: bool,
    /// Do not add the detected_level structured metadata.
    #[arg(long)]
    no_detected_level: bool,
    /// shard_streams.desired_rate, bytes per second: faster streams are
    /// split into streams labelled __stream_shard__ (0 = no sharding).
    #[arg(long, default_value_t = 1536 * 1024)]
    shard_streams_desired_rate: u64,
}

fn duration(s: &str) -> Result<Duration, String> {
    looker::timefmt::parse_duration(s).map_err(|e| e.to_string())
}

fn main() {
    let a = Args::parse();
    let config = LokiConfig {
        auth_enabled: a.auth_enabled,
        max_entries_limit: a.max_entries_limit,
        reject_old_samples_max_age: a.reject_old_samples_max_age,
        creation_grace_period: a.creation_grace_period,
        max_line_size: a.max_line_size,
        ingestion_burst_bytes: a.ingestion_burst_bytes,
        ingestion_rate_bytes_per_sec: a.ingestion_rate_bytes_per_sec,
        max_label_names_per_series: a.max_label_names_per_series,
        unordered_window: a.unordered_window,
        max_query_length: a.max_query_length,
        discover_service_name: !a.no_discover_service_name,
        detected_level: !a.no_detected_level,
        shard_streams_desired_rate: Some(a.shard_streams_desired_rate).filter(|&r| r > 0),
        ..LokiConfig::default()
    };
    let server = match LokiServer::start_on(a.addr, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("loki-test-server: cannot listen on {}: {e}", a.addr);
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", server.addr());
    let _ = out.flush();
    drop(out);
    loop {
        std::thread::park();
    }
}
