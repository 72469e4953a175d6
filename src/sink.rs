//! Delivering encoded messages: HTTP targets with retries, the local file
//! sink, or nowhere.
//!
//! Retry policy (as promtail and the remote-write spec): transport errors,
//! 5xx and 429 are retried with exponential backoff and jitter, honouring
//! `Retry-After`; any other 4xx is final and recorded as rejected with the
//! server's reason. Each outcome also says whether an attempt may have
//! reached the store, which decides between `failed` and `unknown`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::encode::Encoding;
use crate::manifest::Status;
use crate::report::Stats;

/// Where messages go.
#[derive(Debug, Clone)]
pub enum Target {
    Loki { url: String },
    RemoteWrite { url: String },
    File { path: PathBuf },
    Null,
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Loki { .. } => "loki",
            Target::RemoteWrite { .. } => "remote-write",
            Target::File { .. } => "file",
            Target::Null => "null",
        }
    }

    pub fn display_url(&self) -> String {
        match self {
            Target::Loki { url } | Target::RemoteWrite { url } => crate::http::redact_url(url),
            Target::File { path } => path.display().to_string(),
            Target::Null => "null".into(),
        }
    }
}

/// Appends `/loki/api/v1/push` to a base URL unless the path is already there.
pub fn loki_push_url(base: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(mut u) => {
            let path = u.path().trim_end_matches('/').to_string();
            if !path.ends_with("/loki/api/v1/push") {
                u.set_path(&format!("{path}/loki/api/v1/push"));
            }
            u.to_string()
        }
        // Left as given: the caller reports the invalid URL.
        Err(_) => base.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Give up when the next attempt would start later than this after the first.
    pub deadline: Duration,
}

/// The outcome of one attempt.
#[derive(Debug)]
enum Attempt {
    Acked(u16),
    Rejected {
        code: u16,
        reason: String,
    },
    Retry {
        code: Option<u16>,
        reason: String,
        /// The store may have written some or all of the message.
        ambiguous: bool,
        retry_after: Option<Duration>,
    },
}

/// The final word on a message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub status: Status,
    /// Every attempt got an answer, and every answer was an error (5xx or
    /// 429): the store is up but refuses everything.
    pub only_error_answers: bool,
    pub attempts: u32,
    /// Acknowledged, but an earlier attempt may also have been written.
    pub maybe_duplicated: bool,
    pub reason: Option<String>,
    /// Rejected as a request the store will not take from us at all
    /// (401, 403, 404, 405): credentials, tenant or URL, not the data.
    pub access_refused: bool,
}

/// Sends bodies to one target.
pub struct Sender {
    target: Target,
    encoding: Encoding,
    client: Option<reqwest::Client>,
    file: Option<Mutex<std::fs::File>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct SinkOpenError {
    path: String,
    source: std::io::Error,
}

impl Sender {
    pub fn new(
        target: Target,
        encoding: Encoding,
        client: Option<reqwest::Client>,
    ) -> Result<Sender, SinkOpenError> {
        let file = match &target {
            Target::File { path } => {
                let err = |source| SinkOpenError {
                    path: path.display().to_string(),
                    source,
                };
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(path)
                    .map_err(err)?;
                // A run killed mid-write left a cut last line: end it, so
                // this run's first record is a line of its own (the cut
                // one then reads as what it is, not as part of the next).
                let len = f.metadata().map_err(err)?.len();
                if len > 0 {
                    let mut last = [0u8];
                    std::os::unix::fs::FileExt::read_exact_at(&f, &mut last, len - 1)
                        .map_err(err)?;
                    if last[0] != b'\n' {
                        std::io::Write::write_all(&mut f, b"\n").map_err(err)?;
                    }
                }
                Some(Mutex::new(f))
            }
            _ => None,
        };
        Ok(Sender {
            target,
            encoding,
            client,
            file,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    async fn attempt(&self, body: &bytes::Bytes) -> Attempt {
        let url = match &self.target {
            Target::Null => return Attempt::Acked(204),
            Target::File { .. } => return self.write_file(body),
            Target::Loki { url } | Target::RemoteWrite { url } => url,
        };
        let Some(client) = &self.client else {
            return Attempt::Rejected {
                code: 0,
                reason: "no HTTP client".into(),
            };
        };
        let mut req = client
            .post(url)
            .header("content-type", self.encoding.content_type())
            .body(body.clone());
        if let Some(ce) = self.encoding.content_encoding() {
            req = req.header("content-encoding", ce);
        }
        if matches!(self.target, Target::RemoteWrite { .. }) {
            req = req.header("x-prometheus-remote-write-version", "0.1.0");
        }
        match req.send().await {
            Ok(resp) => {
                let code = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                // Loki answers 260 when ingestion is blocked
                // (block_ingestion_until): a 2xx that wrote nothing.
                if code == 260 && matches!(self.target, Target::Loki { .. }) {
                    return Attempt::Rejected {
                        code,
                        reason: "HTTP 260: Loki ingestion is blocked; nothing was written".into(),
                    };
                }
                if resp.status().is_success() {
                    return Attempt::Acked(code);
                }
                // Redirects are not followed (a POST re-sent as a GET would
                // "succeed" without its body): the URL is wrong.
                if resp.status().is_redirection() {
                    let to = resp
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .map(crate::http::redact_url)
                        .unwrap_or_default();
                    return Attempt::Rejected {
                        code,
                        reason: format!("HTTP {code}: redirected to {to}; give the final URL"),
                    };
                }
                let text = resp.text().await.unwrap_or_default();
                let reason = format!("HTTP {code}: {}", summarize(&text));
                if code == 429 || code >= 500 {
                    Attempt::Retry {
                        code: Some(code),
                        reason,
                        // A 5xx may follow a partial write, and so may a
                        // 429 other than a rate limit in front of the
                        // store: Loki's ingester answers for the last
                        // stream of a push, so its stream limits can
                        // refuse one stream after others were written.
                        ambiguous: code != 429 || !whole_request_refused(&text),
                        retry_after,
                    }
                } else {
                    Attempt::Rejected { code, reason }
                }
            }
            Err(e) => {
                // Only a failed connect proves nothing was sent.
                let ambiguous = !e.is_connect();
                // reqwest puts the URL in its messages; its query string may
                // hold a secret, so name the redacted URL instead.
                let e = e.without_url();
                Attempt::Retry {
                    code: None,
                    reason: format!(
                        "{}: {}",
                        if e.is_timeout() {
                            "timeout"
                        } else {
                            "transport error"
                        },
                        crate::exit::describe(&e)
                    ) + &format!(" ({})", self.target.display_url()),
                    ambiguous,
                    retry_after: None,
                }
            }
        }
    }

    fn write_file(&self, body: &[u8]) -> Attempt {
        let Some(file) = &self.file else {
            return Attempt::Rejected {
                code: 0,
                reason: "file sink not open".into(),
            };
        };
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        // Local appends are short; doing them inline keeps the sink simple.
        match f.write_all(body) {
            Ok(()) => Attempt::Acked(200),
            Err(e) => Attempt::Retry {
                code: None,
                reason: format!("writing {}: {e}", self.target.display_url()),
                ambiguous: true,
                retry_after: None,
            },
        }
    }

    /// Sends one body until it is acknowledged, rejected, out of retry
    /// budget, or abandoned at shutdown.
    pub async fn deliver(
        &self,
        body: bytes::Bytes,
        entries: u64,
        policy: &RetryPolicy,
        abandon: &CancellationToken,
        stats: &Stats,
    ) -> Delivery {
        let first = Instant::now();
        let mut attempts = 0u32;
        let mut ambiguous_before = false;
        let mut only_error_answers = true;
        let mut delay = policy.min_delay;
        loop {
            attempts += 1;
            let started = Instant::now();
            stats.request_started();
            let outcome = tokio::select! {
                biased;
                _ = abandon.cancelled() => None,
                a = self.attempt(&body) => Some(a),
            };
            stats.request_finished();
            let Some(outcome) = outcome else {
                return Delivery {
                    status: Status::Unknown,
                    only_error_answers: false,
                    attempts,
                    maybe_duplicated: false,
                    reason: Some("abandoned in flight at shutdown".into()),
                    access_refused: false,
                };
            };
            let elapsed = started.elapsed();
            match outcome {
                Attempt::Acked(code) => {
                    stats.record_response(Some(code), elapsed, entries, body.len() as u64);
                    return Delivery {
                        status: Status::Ok,
                        only_error_answers: false,
                        attempts,
                        maybe_duplicated: ambiguous_before,
                        reason: None,
                        access_refused: false,
                    };
                }
                Attempt::Rejected { code, reason } => {
                    stats.record_response(Some(code), elapsed, 0, 0);
                    return Delivery {
                        status: Status::Rejected,
                        only_error_answers: false,
                        attempts,
                        maybe_duplicated: false,
                        reason: Some(reason),
                        access_refused: matches!(code, 401 | 403 | 404 | 405),
                    };
                }
                Attempt::Retry {
                    code,
                    reason,
                    ambiguous,
                    retry_after,
                } => {
                    stats.record_response(code, elapsed, 0, 0);
                    ambiguous_before |= ambiguous;
                    only_error_answers &= code.is_some();
                    let jittered = jitter(delay);
                    let wait = retry_after.map_or(jittered, |ra| ra.max(jittered));
                    delay = (delay * 2).min(policy.max_delay);
                    let give_up = |why: String| Delivery {
                        status: if ambiguous_before {
                            Status::Unknown
                        } else {
                            Status::Failed
                        },
                        only_error_answers,
                        attempts,
                        maybe_duplicated: false,
                        reason: Some(why),
                        access_refused: false,
                    };
                    // A Retry-After past the deadline (or absurdly large)
                    // means giving up now, not overflowing.
                    if first.elapsed().saturating_add(wait) > policy.deadline {
                        return give_up(format!("gave up after {attempts} attempts: {reason}"));
                    }
                    stats.record_retry();
                    tokio::select! {
                        _ = abandon.cancelled() => {
                            return give_up(format!("interrupted while retrying after {attempts} attempts: {reason}"));
                        }
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// Full jitter in [d/2, d]: spreads retries of many lanes apart.
fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.5..=1.0);
    d.mul_f64(f)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The first line of a response body, bounded, for reasons in manifests.
fn summarize(text: &str) -> String {
    let t = text.trim();
    let mut s: String = t.chars().take(300).collect();
    if t.chars().count() > 300 {
        s.push('…');
    }
    s.replace('\n', " | ")
}

/// Whether a 429's body names a rate limit that refuses a request before
/// any of it is written: the distributor's ingestion or request rate
/// limit (Loki: "Ingestion rate limit exceeded"; Mimir and Cortex:
/// "ingestion rate limit", "request rate limit").
fn whole_request_refused(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    b.contains("ingestion rate limit") || b.contains("request rate limit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rate_limits_in_front_of_the_store_refuse_a_whole_request() {
        for body in [
            "Ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to ingest '10' lines totaling '1000' bytes",
            "the request has been rejected because the tenant exceeded the ingestion rate limit, set to 10000 items/s (err-mimir-tenant-max-ingestion-rate)",
            "the request has been rejected because the tenant exceeded the request rate limit, set to 100 requests/s (err-mimir-tenant-max-request-rate)",
        ] {
            assert!(whole_request_refused(body), "{body}");
        }
        for body in [
            "Maximum active stream limit exceeded when trying to create stream {app=\"x\"}, reduce the number of active streams",
            "Per stream rate limit exceeded (limit: 3MB/sec) while attempting to ingest for stream '{app=\"x\"}' totaling 5MB",
            "",
        ] {
            assert!(!whole_request_refused(body), "{body}");
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let future = std::time::SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(future)).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn loki_url_gets_the_push_path_once() {
        assert_eq!(
            loki_push_url("http://h:3100"),
            "http://h:3100/loki/api/v1/push"
        );
        assert_eq!(
            loki_push_url("http://h:3100/"),
            "http://h:3100/loki/api/v1/push"
        );
        assert_eq!(
            loki_push_url("http://h:3100/loki/api/v1/push"),
            "http://h:3100/loki/api/v1/push"
        );
        assert_eq!(
            loki_push_url("http://h:3100/gw/?x=1"),
            "http://h:3100/gw/loki/api/v1/push?x=1"
        );
    }

    #[test]
    fn jitter_stays_within_half_to_full() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100));
        }
    }
}
