//! Live Prometheus metrics of the three tools, served on `--metrics-addr`.

use std::net::SocketAddr;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

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
        register(
            &registry,
            [
                Box::new(entries.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(bytes.clone()),
                Box::new(requests.clone()),
                Box::new(retries.clone()),
                Box::new(in_flight.clone()),
                Box::new(latency.clone()),
                Box::new(target_rate.clone()),
                Box::new(lag_seconds.clone()),
            ],
        )?;
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

/// The metrics of a generator: whether it, or its reader, sets the pace.
#[derive(Clone)]
pub struct GenMetrics {
    pub registry: Registry,
    pub records: IntCounter,
    pub bytes: IntCounter,
    /// Seconds spent waiting for wall time (--min-lag).
    pub wait_seconds: prometheus::Counter,
    /// Seconds spent blocked writing: the reader is slower than the
    /// generator.
    pub blocked_seconds: prometheus::Counter,
    /// 1 while a write is in progress: a reader that stopped reading shows
    /// here before the blocked time (counted when a write returns) does.
    pub writing: IntGauge,
    pub lag_seconds: prometheus::Gauge,
}

impl GenMetrics {
    pub fn new() -> Result<GenMetrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("looker_gen".into()), None)?;
        let records = IntCounter::new(
            "records_total",
            "Lines written: records, or series and stream lines with --entries-per-line.",
        )?;
        let bytes = IntCounter::new("bytes_total", "Bytes written.")?;
        let wait_seconds = prometheus::Counter::new(
            "wait_seconds_total",
            "Time spent waiting for wall time to pass (--min-lag).",
        )?;
        let blocked_seconds = prometheus::Counter::new(
            "write_blocked_seconds_total",
            "Time spent writing output: high when the reader (looker-push) sets the pace.",
        )?;
        let writing = IntGauge::new("writing", "1 while a write to the output is in progress.")?;
        let lag_seconds = prometheus::Gauge::new(
            "entry_lag_seconds",
            "Wall time minus the timestamp of the last entry written.",
        )?;
        register(
            &registry,
            [
                Box::new(records.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(writing.clone()),
                Box::new(bytes.clone()),
                Box::new(wait_seconds.clone()),
                Box::new(blocked_seconds.clone()),
                Box::new(lag_seconds.clone()),
            ],
        )?;
        Ok(GenMetrics {
            registry,
            records,
            bytes,
            wait_seconds,
            blocked_seconds,
            writing,
            lag_seconds,
        })
    }
}

/// The metrics of a verification in progress.
#[derive(Clone)]
pub struct VerifyMetrics {
    pub registry: Registry,
    pub series_planned: IntGauge,
    pub series_read: IntCounter,
    pub entries_read: IntCounter,
    /// Series whose latest check found a discrepancy.
    pub series_failing: IntGauge,
    pub read_duration: Histogram,
}

impl VerifyMetrics {
    pub fn new(target: &str) -> Result<VerifyMetrics, prometheus::Error> {
        let registry = Registry::new_custom(
            Some("looker_verify".into()),
            Some([("target".to_string(), target.to_string())].into()),
        )?;
        let series_planned = IntGauge::new("series", "Series to check.")?;
        let series_read = IntCounter::new(
            "series_read_total",
            "Series read back (again for each --wait pass).",
        )?;
        let entries_read = IntCounter::new("entries_read_total", "Entries read back.")?;
        let series_failing = IntGauge::new(
            "series_with_discrepancies",
            "Series whose latest check found a discrepancy.",
        )?;
        let read_duration = Histogram::with_opts(
            HistogramOpts::new(
                "series_read_duration_seconds",
                "Time to read one series back (all its queries; series read together share the time).",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
        )?;
        register(
            &registry,
            [
                Box::new(series_planned.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(series_read.clone()),
                Box::new(entries_read.clone()),
                Box::new(series_failing.clone()),
                Box::new(read_duration.clone()),
            ],
        )?;
        Ok(VerifyMetrics {
            registry,
            series_planned,
            series_read,
            entries_read,
            series_failing,
            read_duration,
        })
    }
}

fn register<const N: usize>(
    registry: &Registry,
    collectors: [Box<dyn prometheus::core::Collector>; N],
) -> Result<(), prometheus::Error> {
    for c in collectors {
        registry.register(c)?;
    }
    Ok(())
}

/// Binds `addr` and serves `GET /metrics` in the text format from a thread
/// of its own until the process ends. A minimal HTTP/1.1 responder:
/// scrapers need nothing more, and a thread works for the synchronous
/// generator as for the asynchronous tools. Returns the bound address.
pub fn serve_in_thread(addr: SocketAddr, registry: Registry) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || loop {
            match listener.accept() {
                Ok((sock, _)) => answer(sock, &registry),
                // Out of file descriptors, say: try again later rather
                // than spin.
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        })?;
    Ok(bound)
}

fn answer(mut sock: std::net::TcpStream, registry: &Registry) {
    use std::io::{Read, Write};
    // A scraper that says nothing, or trickles, must not stall the next:
    // the whole request gets 2 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let _ = sock.set_write_timeout(Some(std::time::Duration::from_secs(2)));
    // Read the whole request head (it may arrive in pieces), up to 8 KiB.
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let path = head
        .split(|&b| b == b' ')
        .nth(1)
        .map(|p| p.split(|&b| b == b'?').next().unwrap_or(p));
    let (status, body) = if head.starts_with(b"GET ") && path == Some(b"/metrics") {
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
    let _ = sock.write_all(hdr.as_bytes());
    let _ = sock.write_all(&body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn ask(addr: SocketAddr, pieces: &[&[u8]]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        for p in pieces {
            s.write_all(p).unwrap();
            s.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_exactly_get_metrics_even_when_the_request_comes_in_pieces() {
        let m = GenMetrics::new().unwrap();
        m.records.inc_by(42);
        let addr = serve_in_thread("127.0.0.1:0".parse().unwrap(), m.registry.clone()).unwrap();
        let r = ask(
            addr,
            &[b"GET /met", b"rics HTTP/1.1\r\nHost: x\r\n", b"\r\n"],
        );
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("looker_gen_records_total 42"), "{r}");
        let r = ask(addr, &[b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"]);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        for wrong in [
            &b"GET /metricsX HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\n\r\n",
        ] {
            let r = ask(addr, &[wrong]);
            assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        }
    }
}
