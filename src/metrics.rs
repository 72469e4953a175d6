//! Live Prometheus metrics of a push, served on `--metrics-addr`.

use std::net::SocketAddr;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The metrics a push exposes. Owned by the run, not global.
#[derive(Clone)]
pub struct PushMetrics {
    pub registry: Registry,
    pub entries: IntCounterVec,
    pub bytes: IntCounter,
    pub requests: IntCounterVec,
    pub retries: IntCounter,
    pub in_flight: IntGauge,
    pub latency: Histogram,
    pub target_rate: prometheus::Gauge,
    pub lag_seconds: prometheus::Gauge,
}

impl PushMetrics {
    pub fn new(target: &str) -> Result<PushMetrics, prometheus::Error> {
        let registry = Registry::new_custom(
            Some("looker_push".into()),
            Some([("target".to_string(), target.to_string())].into()),
        )?;
        let entries = IntCounterVec::new(
            Opts::new(
                "entries_total",
                "Entries by outcome (acked, rejected, failed, unknown).",
            ),
            &["outcome"],
        )?;
        let bytes = IntCounter::new("bytes_total", "Request body bytes acknowledged.")?;
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests by HTTP status code (or transport).",
            ),
            &["code"],
        )?;
        let retries = IntCounter::new("retries_total", "Retried attempts.")?;
        let in_flight = IntGauge::new("requests_in_flight", "Requests in flight.")?;
        let latency = Histogram::with_opts(
            HistogramOpts::new("request_duration_seconds", "Request latency.")
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16)?),
        )?;
        let target_rate = prometheus::Gauge::new(
            "target_rate",
            "Current target rate (entries or bytes per second; 0 = unlimited).",
        )?;
        let lag_seconds = prometheus::Gauge::new(
            "entry_lag_seconds",
            "Wall time minus the timestamp of the last entry read.",
        )?;
        for c in [
            Box::new(entries.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(bytes.clone()),
            Box::new(requests.clone()),
            Box::new(retries.clone()),
            Box::new(in_flight.clone()),
            Box::new(latency.clone()),
            Box::new(target_rate.clone()),
            Box::new(lag_seconds.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(PushMetrics {
            registry,
            entries,
            bytes,
            requests,
            retries,
            in_flight,
            latency,
            target_rate,
            lag_seconds,
        })
    }
}

/// Serves `GET /metrics` in the text format until the task is dropped.
/// A minimal HTTP/1.1 responder: scrapers need nothing more.
pub async fn serve(listener: tokio::net::TcpListener, registry: Registry) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = match sock.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics") {
                let mut out = Vec::new();
                let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out);
                ("200 OK", out)
            } else {
                ("404 Not Found", b"not found\n".to_vec())
            };
            let hdr = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(hdr.as_bytes()).await;
            let _ = sock.write_all(&body).await;
        });
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
