//! Loki-compatible test server.
//!
//! No real Loki can run where the tests run, so this server reproduces the
//! parts of Loki 3.x's HTTP API that looker depends on, with the same status
//! codes, limits, error texts, partial acceptance, deduplication and query
//! semantics (end-exclusive ranges, `limit` across all streams, structured
//! metadata merged into stream labels unless `categorize-labels` is asked
//! for). Where this server differs from Loki, the difference is noted at the
//! place it happens.
//!
//! The server runs on its own tokio runtime in a background thread, so both
//! synchronous and asynchronous tests can use it; dropping the handle stops
//! it.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::io::Read as _;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use looker::labels::push_go_quoted;
use looker::proto::{EntryAdapter, LabelPair, PushRequest, StreamAdapter, Timestamp};
use looker::timefmt::{format_rfc3339_ns, now_ns, parse_rfc3339_ns};
use prost::Message as _;

/// The tenant Loki uses for everything when `auth_enabled` is false.
pub const NO_AUTH_TENANT: &str = "fake";

/// Limits and features, named after Loki's `limits_config` keys. The
/// defaults are Loki 3.x's.
#[derive(Debug, Clone)]
pub struct LokiConfig {
    /// When true, every request needs `X-Scope-OrgID`; when false, all data
    /// belongs to the tenant `fake`.
    pub auth_enabled: bool,
    /// `max_entries_limit_per_query`.
    pub max_entries_limit: usize,
    pub reject_old_samples_max_age: Duration,
    pub creation_grace_period: Duration,
    /// Bytes; 0 disables the check.
    pub max_line_size: usize,
    /// Burst of the per-tenant ingestion rate limiter: a single push whose
    /// validated bytes exceed it always gets 429.
    pub ingestion_burst_bytes: usize,
    /// Sustained per-tenant rate. `None` checks only the burst, which keeps
    /// benchmarks from being throttled by wall-clock time.
    pub ingestion_rate_bytes_per_sec: Option<u64>,
    pub max_label_names_per_series: usize,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    /// Half of the ingester's `max_chunk_age`: per stream, entries older
    /// than the stream's highest timestamp minus this are "too far behind".
    pub unordered_window: Duration,
    /// Adds `service_name` to streams that lack it (Loki 3.x default).
    pub discover_service_name: bool,
    /// Adds the structured metadata `detected_level` to entries (Loki 3.x).
    pub detected_level: bool,
    /// `max_query_length`: longer query ranges get 400.
    pub max_query_length: Duration,
    /// `shard_streams.desired_rate` in bytes per second, when
    /// `shard_streams.enabled` (the Loki 3.x default: on, 1536KB): a stream
    /// pushed faster is split into streams labelled `__stream_shard__`.
    pub shard_streams_desired_rate: Option<u64>,
    /// The gRPC message cap between Loki's querier and query frontend
    /// (`grpc_server_max_recv_msg_size`, 4MB by default): a `query_range`
    /// page larger than this (its lines plus some bytes per entry) fails
    /// with a 500 whatever its `limit`.
    pub max_query_response_bytes: Option<usize>,
}

impl Default for LokiConfig {
    fn default() -> Self {
        LokiConfig {
            auth_enabled: false,
            max_entries_limit: 5000,
            reject_old_samples_max_age: Duration::from_secs(7 * 24 * 3600),
            creation_grace_period: Duration::from_secs(600),
            max_line_size: 256 * 1024,
            ingestion_burst_bytes: 6 * 1024 * 1024,
            ingestion_rate_bytes_per_sec: None,
            max_label_names_per_series: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            unordered_window: Duration::from_secs(3600),
            discover_service_name: true,
            detected_level: true,
            max_query_length: Duration::from_secs(721 * 3600),
            shard_streams_desired_rate: Some(1536 * 1024),
            max_query_response_bytes: Some(4 << 20),
        }
    }
}

/// Loki 3.0's `discover_service_name` default list, in priority order.
const SERVICE_NAME_SOURCES: &[&str] = &[
    "service",
    "app",
    "application",
    "name",
    "app_kubernetes_io_name",
    "container",
    "container_name",
    "component",
    "workload",
    "job",
];

/// Labels sorted by name (byte order), empty values removed.
type Labels = Vec<(String, String)>;
/// Structured metadata of one entry; shared per tenant because the same
/// set (typically just `detected_level`) repeats on most entries.
type Meta = Arc<[(Arc<str>, Arc<str>)]>;
/// Structured metadata as pushed, before interning.
type MetaPairs = Vec<(String, String)>;
/// An entry's key in its stream: (ts, line).
type EntryKey = (i64, Box<str>);

#[derive(Default)]
struct Stream {
    /// Keyed by (ts, line): this is the (ts, line) dedup Loki applies in its
    /// head block and query merge, and it orders same-ts entries by line.
    entries: BTreeMap<EntryKey, Meta>,
    /// The ingester's `highestTs`, for the "too far behind" check.
    highest_ts: Option<i64>,
    /// The ingester's `lastLine`: an exact repeat of it is dropped before
    /// any other check.
    last_line: Option<EntryKey>,
}

#[derive(Default)]
struct Tenant {
    streams: HashMap<Labels, Stream>,
    interned: HashSet<Arc<str>>,
    metas: HashMap<MetaPairs, Meta>,
    bucket: Option<(f64, Instant)>,
    /// Per stream (as pushed, before sharding): the distributor's rate store.
    rates: HashMap<Labels, StreamRate>,
}

/// What Loki's rate store knows of a stream: its byte rate over the last
/// full second (unknown until one has passed, so a new stream's first
/// pushes are never sharded), and the shard the next push starts at.
struct StreamRate {
    window_start: Instant,
    bytes: u64,
    rate: Option<f64>,
    next_shard: usize,
}

impl Tenant {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        if self.interned.len() < 65536 {
            self.interned.insert(a.clone());
        }
        a
    }

    fn make_meta(&mut self, pairs: &[(String, String)]) -> Meta {
        if let Some(m) = self.metas.get(pairs) {
            return m.clone();
        }
        let m: Meta = pairs
            .iter()
            .map(|(k, v)| (self.intern(k), self.intern(v)))
            .collect();
        // Sharing pays off for repeated sets like {detected_level="info"};
        // per-entry values such as trace ids would only grow the table.
        if self.metas.len() < 4096 {
            self.metas.insert(pairs.to_vec(), m.clone());
        }
        m
    }

    /// golang.org/x/time/rate `AllowN` with burst `burst` and rate `rate`.
    fn allow(&mut self, n: usize, rate: Option<u64>, burst: usize) -> bool {
        if n > burst {
            return false;
        }
        let Some(rate) = rate else { return true };
        let now = Instant::now();
        let (tokens, last) = self.bucket.unwrap_or((burst as f64, now));
        let tokens =
            (tokens + now.duration_since(last).as_secs_f64() * rate as f64).min(burst as f64);
        if tokens >= n as f64 {
            self.bucket = Some((tokens - n as f64, now));
            true
        } else {
            self.bucket = Some((tokens, now));
            false
        }
    }
}

struct Shared {
    config: LokiConfig,
    tenants: Mutex<HashMap<String, Tenant>>,
    push_requests: AtomicUsize,
    fail_next: Mutex<(usize, u16)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Tenant>> {
        // A panicking handler must not take the whole server down with it.
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored label set for pushed labels: sorted, empties dropped,
    /// plus the discovered `service_name`.
    fn stored_labels(&self, pushed: &BTreeMap<String, String>) -> Labels {
        let labels: Labels = pushed
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.with_service_name(labels)
    }

    fn with_service_name(&self, mut labels: Labels) -> Labels {
        if !self.config.discover_service_name || get_label(&labels, "service_name").is_some() {
            return labels;
        }
        let value = SERVICE_NAME_SOURCES
            .iter()
            .find_map(|src| get_label(&labels, src))
            .unwrap_or("unknown_service")
            .to_string();
        labels.push(("service_name".to_string(), value));
        labels.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        labels
    }

    /// Metadata for an accepted entry: what was pushed, plus `detected_level`.
    fn entry_meta(
        &self,
        labels: &Labels,
        line: &str,
        pushed: &[LabelPair],
    ) -> Vec<(String, String)> {
        let mut meta: Vec<(String, String)> = pushed
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect();
        if self.config.detected_level && !meta.iter().any(|(k, _)| k == "detected_level") {
            let level = [
                "level", "LEVEL", "Level", "severity", "SEVERITY", "lvl", "LVL",
            ]
            .iter()
            .find_map(|n| {
                get_label(labels, n)
                    .or_else(|| meta.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()))
            })
            .map(str::to_string)
            .unwrap_or_else(|| detect_level(line).to_string());
            meta.push(("detected_level".to_string(), level));
        }
        meta
    }
}

/// Loki 3.0's `detectLogLevelFromLogLine`, with its "info" fallback.
fn detect_level(line: &str) -> &'static str {
    let has = |a: &[&str]| a.iter().any(|s| line.contains(s));
    if has(&["info:", "INFO:", "info", "INFO"]) {
        "info"
    } else if has(&["err:", "ERR:", "error", "ERROR"]) {
        "error"
    } else if has(&["warn:", "WARN:", "warning", "WARNING"]) {
        "warn"
    } else if has(&["CRITICAL:", "critical:"]) {
        "critical"
    } else if has(&["debug", "DEBUG"]) {
        "debug"
    } else {
        "info"
    }
}

fn get_label<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    labels
        .binary_search_by(|(k, _)| k.as_bytes().cmp(name.as_bytes()))
        .ok()
        .map(|i| labels[i].1.as_str())
}

/// A running server; dropping it stops the server.
pub struct LokiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LokiServer {
    /// Starts on an ephemeral loopback port.
    pub fn start(config: LokiConfig) -> LokiServer {
        LokiServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .expect("bind an ephemeral loopback port")
    }

    pub fn start_on(addr: SocketAddr, config: LokiConfig) -> std::io::Result<LokiServer> {
        // Bind synchronously so a busy port is reported to the caller.
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            tenants: Mutex::new(HashMap::new()),
            push_requests: AtomicUsize::new(0),
            fail_next: Mutex::new((0, 500)),
        });
        let app = router(shared.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("loki-test-server")
            .enable_all()
            .build()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("loki-test-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => {
                            let _ = ready_tx.send(Ok(()));
                            l
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    // Not a graceful shutdown: clients holding keep-alive
                    // connections must not keep a dropped server alive.
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop_rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })?;
        ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("server thread exited during start"))??;
        Ok(LokiServer {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config(&self) -> &LokiConfig {
        &self.shared.config
    }

    /// Stored entries over all tenants (after dedup).
    pub fn entry_count(&self) -> usize {
        self.shared
            .lock()
            .values()
            .flat_map(|t| t.streams.values())
            .map(|s| s.entries.len())
            .sum()
    }

    pub fn entry_count_in(&self, tenant: &str) -> usize {
        self.shared
            .lock()
            .get(tenant)
            .map(|t| t.streams.values().map(|s| s.entries.len()).sum())
            .unwrap_or(0)
    }

    /// Non-empty streams over all tenants: stored labels (including the
    /// discovered `service_name`) and entry counts, sorted by labels.
    pub fn streams(&self) -> Vec<(BTreeMap<String, String>, usize)> {
        let g = self.shared.lock();
        let mut out: Vec<_> = g
            .values()
            .flat_map(|t| t.streams.iter())
            .filter(|(_, s)| !s.entries.is_empty())
            .map(|(l, s)| (l.iter().cloned().collect(), s.entries.len()))
            .collect();
        out.sort();
        out
    }

    pub fn streams_in(&self, tenant: &str) -> Vec<(BTreeMap<String, String>, usize)> {
        let g = self.shared.lock();
        let mut out: Vec<_> = g
            .get(tenant)
            .into_iter()
            .flat_map(|t| t.streams.iter())
            .filter(|(_, s)| !s.entries.is_empty())
            .map(|(l, s)| (l.iter().cloned().collect(), s.entries.len()))
            .collect();
        out.sort();
        out
    }

    /// Removes entries with `start_ns <= ts < end_ns` from the stream with
    /// these pushed labels (tenant `fake`); returns how many were removed.
    pub fn delete_range(
        &self,
        labels: &BTreeMap<String, String>,
        start_ns: i64,
        end_ns: i64,
    ) -> usize {
        self.delete_range_in(NO_AUTH_TENANT, labels, start_ns, end_ns)
    }

    pub fn delete_range_in(
        &self,
        tenant: &str,
        labels: &BTreeMap<String, String>,
        start_ns: i64,
        end_ns: i64,
    ) -> usize {
        let key = self.shared.stored_labels(labels);
        let mut g = self.shared.lock();
        let Some(stream) = g.get_mut(tenant).and_then(|t| t.streams.get_mut(&key)) else {
            return 0;
        };
        if start_ns >= end_ns {
            return 0;
        }
        let doomed: Vec<EntryKey> = stream
            .entries
            .range(ts_range(start_ns, end_ns))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &doomed {
            stream.entries.remove(k);
        }
        doomed.len()
    }

    /// Replaces the line of the (first by line order) entry at `ts_ns`;
    /// false when the stream has no entry at that timestamp.
    pub fn alter_line(
        &self,
        labels: &BTreeMap<String, String>,
        ts_ns: i64,
        new_line: &str,
    ) -> bool {
        self.alter_line_in(NO_AUTH_TENANT, labels, ts_ns, new_line)
    }

    pub fn alter_line_in(
        &self,
        tenant: &str,
        labels: &BTreeMap<String, String>,
        ts_ns: i64,
        new_line: &str,
    ) -> bool {
        let key = self.shared.stored_labels(labels);
        let mut g = self.shared.lock();
        let Some(stream) = g.get_mut(tenant).and_then(|t| t.streams.get_mut(&key)) else {
            return false;
        };
        let Some(old) = stream
            .entries
            .range(ts_range(ts_ns, ts_ns.saturating_add(1)))
            .map(|(k, _)| k.clone())
            .next()
        else {
            return false;
        };
        let meta = stream.entries.remove(&old).unwrap_or_default();
        stream.entries.insert((ts_ns, new_line.into()), meta);
        true
    }

    /// Stores an entry that was never pushed (tenant `fake`), bypassing
    /// validation; it gets the same discovered labels and metadata a push
    /// would give it.
    pub fn insert(&self, labels: &BTreeMap<String, String>, ts_ns: i64, line: &str) {
        self.insert_in(NO_AUTH_TENANT, labels, ts_ns, line)
    }

    pub fn insert_in(
        &self,
        tenant: &str,
        labels: &BTreeMap<String, String>,
        ts_ns: i64,
        line: &str,
    ) {
        let key = self.shared.stored_labels(labels);
        let meta = self.shared.entry_meta(&key, line, &[]);
        let mut g = self.shared.lock();
        let t = g.entry(tenant.to_string()).or_default();
        let meta = t.make_meta(&meta);
        t.streams
            .entry(key)
            .or_default()
            .entries
            .entry((ts_ns, line.into()))
            .or_insert(meta);
    }

    /// Push requests received, including rejected and failed ones.
    pub fn push_requests(&self) -> usize {
        self.shared.push_requests.load(Ordering::SeqCst)
    }

    /// The next `n` push requests get `status` (e.g. 500, 503, 429) and
    /// store nothing.
    pub fn set_fail_next(&self, n: usize, status: u16) {
        *self
            .shared
            .fail_next
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = (n, status);
    }
}

impl Drop for LokiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keys of entries with `start <= ts < end`: the empty string is the
/// smallest line, so `(end, "")` excludes every entry at `end`.
fn ts_range(start: i64, end: i64) -> (Bound<EntryKey>, Bound<EntryKey>) {
    (
        Bound::Included((start, Box::from(""))),
        Bound::Excluded((end, Box::from(""))),
    )
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/loki/api/v1/push", post(push))
        .route(
            "/loki/api/v1/query_range",
            get(query_range).post(query_range),
        )
        .route("/loki/api/v1/query", get(instant_query).post(instant_query))
        .route("/loki/api/v1/labels", get(labels).post(labels))
        .route(
            "/loki/api/v1/label/{name}/values",
            get(label_values).post(label_values),
        )
        .route("/loki/api/v1/series", get(series).post(series))
        .route("/ready", get(|| async { (StatusCode::OK, "ready\n") }))
        .route("/flush", get(flush).post(flush))
        // Loki's HTTP push path has no small body limit; the burst limit
        // is what rejects big pushes.
        .layer(DefaultBodyLimit::max(256 * 1024 * 1024))
        .with_state(shared)
}

async fn flush() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// Go's `http.Error`: plain text with a trailing newline.
fn text_error(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut body = msg.into();
    body.push('\n');
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn bad_request(msg: impl Into<String>) -> Response {
    text_error(StatusCode::BAD_REQUEST, msg)
}

fn json_response(v: serde_json::Value) -> Response {
    let mut resp = (StatusCode::OK, v.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    resp
}

/// An error response, boxed because it is large and rarely built.
type Rejection = Box<Response>;

/// The tenant of a request, or the error response Loki gives.
fn tenant_of(shared: &Shared, headers: &HeaderMap) -> Result<String, Rejection> {
    if !shared.config.auth_enabled {
        return Ok(NO_AUTH_TENANT.to_string());
    }
    let Some(v) = headers.get("x-scope-orgid") else {
        return Err(Box::new(text_error(StatusCode::UNAUTHORIZED, "no org id")));
    };
    let v = v
        .to_str()
        .map_err(|_| Box::new(bad_request("tenant ID contains unsupported characters")))?;
    if v.is_empty() {
        return Err(Box::new(text_error(StatusCode::UNAUTHORIZED, "no org id")));
    }
    if v.contains('|') {
        return Err(Box::new(bad_request("multiple org IDs present")));
    }
    if v.len() > 150 {
        return Err(Box::new(bad_request(
            "tenant ID is too long: max 150 characters",
        )));
    }
    if v == "." || v == ".." {
        return Err(Box::new(bad_request("tenant ID is '.' or '..'")));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
    {
        return Err(Box::new(bad_request(format!(
            "tenant ID '{v}' contains unsupported character '{c}'"
        ))));
    }
    Ok(v.to_string())
}

// ---------------------------------------------------------------- push

/// One stream of a push after validation, ready for the ingester step.
struct Accepted {
    labels: Labels,
    labels_text: String,
    /// (ts, line, metadata) in request order.
    entries: Vec<(i64, String, MetaPairs)>,
}

async fn push(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.push_requests.fetch_add(1, Ordering::SeqCst);
    {
        let mut f = shared.fail_next.lock().unwrap_or_else(|e| e.into_inner());
        if f.0 > 0 {
            f.0 -= 1;
            let status = StatusCode::from_u16(f.1).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return text_error(status, "injected failure");
        }
    }
    let tenant = match tenant_of(&shared, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let req = match decode_push(&headers, &body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    // Decoding and validation happen outside the lock; only storing needs it.
    tokio::task::block_in_place(|| handle_push(&shared, &tenant, req))
}

/// `ParseLokiRequest`: Content-Encoding first (for any body type), then
/// Content-Type picks JSON or snappy-block protobuf.
fn decode_push(headers: &HeaderMap, body: &[u8]) -> Result<PushRequest, String> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").to_string())
        .unwrap_or_default();
    let decoded: Vec<u8>;
    let body: &[u8] = match encoding.as_str() {
        // Protobuf bodies are always snappy-decoded, so the header is moot.
        "" | "snappy" => body,
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| format!("gzip: {e}"))?;
            decoded = out;
            &decoded
        }
        "deflate" => {
            // Go's compress/flate: raw DEFLATE, no zlib header.
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| format!("flate: {e}"))?;
            decoded = out;
            &decoded
        }
        other => return Err(format!("Content-Encoding {other:?} not supported")),
    };
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media.is_empty() {
        return Err("mime: no media type".to_string());
    }
    if media == "application/json" {
        return decode_json_push(body);
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: corrupt input: {e}"))?;
    PushRequest::decode(raw.as_slice()).map_err(|e| format!("proto: {e}"))
}

/// The JSON push format; streams are turned into the same form as
/// protobuf ones, with the label map rendered as a selector the way Loki
/// does (`labels.String()`), so both paths share label validation.
fn decode_json_push(body: &[u8]) -> Result<PushRequest, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut req = PushRequest::default();
    let Some(obj) = v.as_object() else {
        return Err("push request must be a JSON object".into());
    };
    let streams = match obj.get("streams") {
        None | Some(serde_json::Value::Null) => return Ok(req),
        Some(serde_json::Value::Array(a)) => a,
        Some(_) => return Err("streams must be an array".into()),
    };
    for s in streams {
        let mut labels = String::from("{");
        if let Some(m) = s.get("stream").filter(|m| !m.is_null()) {
            let m = m.as_object().ok_or("stream must be an object")?;
            let mut pairs: Vec<(&String, &str)> = Vec::with_capacity(m.len());
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("label {k:?}: value must be a string"))?;
                pairs.push((k, v));
            }
            pairs.sort();
            for (i, (k, v)) in pairs.into_iter().enumerate() {
                if i > 0 {
                    labels.push_str(", ");
                }
                labels.push_str(k);
                labels.push('=');
                push_go_quoted(&mut labels, v);
            }
        }
        labels.push('}');
        let mut entries = Vec::new();
        let values = match s.get("values") {
            None | Some(serde_json::Value::Null) => &[][..],
            Some(serde_json::Value::Array(a)) => a.as_slice(),
            Some(_) => return Err("values must be an array".into()),
        };
        for val in values {
            let arr = val.as_array().ok_or("each value must be an array")?;
            if arr.len() < 2 || arr.len() > 3 {
                return Err(format!(
                    "each value must have 2 or 3 elements, got {}",
                    arr.len()
                ));
            }
            // Loki reads the timestamp as a string only; a number is an error.
            let ts_s = arr[0]
                .as_str()
                .ok_or("timestamp must be a string of Unix nanoseconds")?;
            let ts: i64 = ts_s
                .parse()
                .map_err(|_| format!("invalid timestamp {ts_s:?}: expected Unix nanoseconds"))?;
            let line = arr[1]
                .as_str()
                .ok_or("log line must be a string")?
                .to_string();
            let mut structured_metadata = Vec::new();
            if let Some(m) = arr.get(2) {
                let m = m
                    .as_object()
                    .ok_or("structured metadata must be an object")?;
                for (k, v) in m {
                    let v = v.as_str().ok_or_else(|| {
                        format!("structured metadata {k:?}: value must be a string")
                    })?;
                    structured_metadata.push(LabelPair {
                        name: k.clone(),
                        value: v.to_string(),
                    });
                }
            }
            entries.push(EntryAdapter {
                timestamp: Some(Timestamp::from_ns(ts)),
                line,
                structured_metadata,
            });
        }
        req.streams.push(StreamAdapter {
            labels,
            entries,
            hash: 0,
        });
    }
    Ok(req)
}

/// Prometheus `labels.String()`.
fn labels_string(labels: &Labels) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push('=');
        push_go_quoted(&mut s, v);
    }
    s.push('}');
    s
}

/// Go `time.Format(time.RFC3339)` in UTC.
fn rfc3339_s(ns: i64) -> String {
    let full = format_rfc3339_ns(ns);
    format!("{}Z", &full[..19])
}

/// Go `time.Time.String()` in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`.
fn go_time_string(ns: i64) -> String {
    let full = format_rfc3339_ns(ns);
    let frac = full[20..29].trim_end_matches('0');
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    format!("{} {}{frac} +0000 UTC", &full[..10], &full[11..19])
}

/// `ValidateLabels` for one pushed stream; returns the parsed labels.
fn validate_labels(cfg: &LokiConfig, raw: &str) -> Result<Labels, String> {
    let pairs =
        parse_metric(raw).map_err(|e| format!("Error parsing labels '{raw}' with error: {e}"))?;
    // ParseLabels sorts and drops empty values before validation.
    let mut labels: Labels = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    labels.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if labels.is_empty() {
        return Err("error at least one label pair is required per stream".into());
    }
    if labels.len() > cfg.max_label_names_per_series {
        return Err(format!(
            "entry for stream '{raw}' has {} label names; limit {}",
            labels.len(),
            cfg.max_label_names_per_series
        ));
    }
    let text = labels_string(&labels);
    let mut prev: Option<&str> = None;
    for (k, v) in &labels {
        if k.len() > cfg.max_label_name_length {
            return Err(format!(
                "entry for stream '{text}' has label name too long: '{k}'"
            ));
        }
        if v.len() > cfg.max_label_value_length {
            return Err(format!(
                "entry for stream '{text}' has label value too long: '{v}'"
            ));
        }
        if prev == Some(k.as_str()) {
            return Err(format!("stream '{text}' has duplicate label name: '{k}'"));
        }
        prev = Some(k);
    }
    Ok(labels)
}

fn handle_push(shared: &Shared, tenant: &str, req: PushRequest) -> Response {
    let cfg = &shared.config;
    let now = now_ns();
    let oldest = now.saturating_sub(cfg.reject_old_samples_max_age.as_nanos() as i64);
    let newest = now.saturating_add(cfg.creation_grace_period.as_nanos() as i64);

    // Distributor: per-stream label validation and per-entry validation.
    let mut validation_errors: Vec<String> = Vec::new();
    let mut accepted: Vec<Accepted> = Vec::new();
    let (mut valid_bytes, mut valid_lines) = (0usize, 0usize);
    for stream in req.streams {
        if stream.entries.is_empty() {
            continue;
        }
        let labels = match validate_labels(cfg, &stream.labels) {
            Ok(l) => shared.with_service_name(l),
            Err(e) => {
                validation_errors.push(e);
                continue;
            }
        };
        let text = labels_string(&labels);
        let mut entries = Vec::with_capacity(stream.entries.len());
        for e in stream.entries {
            let ts = e.timestamp.map(|t| t.to_ns()).unwrap_or(0);
            if ts < oldest {
                validation_errors.push(format!(
                    "entry for stream '{text}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
                    rfc3339_s(ts),
                    rfc3339_s(oldest)
                ));
                continue;
            }
            if ts > newest {
                validation_errors.push(format!(
                    "entry for stream '{text}' has timestamp too new: {}",
                    rfc3339_s(ts)
                ));
                continue;
            }
            if cfg.max_line_size != 0 && e.line.len() > cfg.max_line_size {
                validation_errors.push(format!(
                    "Max entry size '{}' bytes exceeded for stream '{text}' while adding an entry with length '{}' bytes",
                    cfg.max_line_size,
                    e.line.len()
                ));
                continue;
            }
            valid_bytes += e.line.len()
                + e.structured_metadata
                    .iter()
                    .map(|p| p.name.len() + p.value.len())
                    .sum::<usize>();
            valid_lines += 1;
            let meta = shared.entry_meta(&labels, &e.line, &e.structured_metadata);
            entries.push((ts, e.line, meta));
        }
        if !entries.is_empty() {
            accepted.push(Accepted {
                labels,
                labels_text: text,
                entries,
            });
        }
    }
    let validation_err = || bad_request(validation_errors.join("\n"));
    if accepted.is_empty() {
        if validation_errors.is_empty() {
            return StatusCode::NO_CONTENT.into_response();
        }
        return validation_err();
    }

    let mut g = shared.lock();
    let t = g.entry(tenant.to_string()).or_default();
    // The rate limiter sees the whole request's validated bytes at once.
    if !t.allow(
        valid_bytes,
        cfg.ingestion_rate_bytes_per_sec,
        cfg.ingestion_burst_bytes,
    ) {
        return text_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Ingestion rate limit exceeded for user {tenant} (limit: {} bytes/sec) while attempting to ingest '{valid_lines}' lines totaling '{valid_bytes}' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased",
                cfg.ingestion_rate_bytes_per_sec.unwrap_or(4 * 1024 * 1024)
            ),
        );
    }

    let accepted = match cfg.shard_streams_desired_rate {
        Some(rate) if rate > 0 => accepted
            .into_iter()
            .flat_map(|acc| shard_stream(t, acc, rate as f64))
            .collect(),
        _ => accepted,
    };

    // Ingester: lastLine dedup, unordered-window check, (ts, line) dedup.
    let window = cfg.unordered_window.as_nanos() as i64;
    let mut ingester_error: Option<String> = None;
    for acc in accepted {
        let total = acc.entries.len();
        let metas: Vec<Meta> = acc.entries.iter().map(|(_, _, m)| t.make_meta(m)).collect();
        let stream = t.streams.entry(acc.labels).or_default();
        let mut failed: Vec<(i64, String)> = Vec::new();
        let mut last: Option<usize> = None;
        for (i, ((ts, line, _), meta)) in acc.entries.iter().zip(metas).enumerate() {
            let last_line = match last {
                Some(j) => Some((acc.entries[j].0, acc.entries[j].1.as_str())),
                None => stream.last_line.as_ref().map(|(t, l)| (*t, &**l)),
            };
            if last_line == Some((*ts, line.as_str())) {
                continue;
            }
            if let Some(h) = stream.highest_ts {
                let cutoff = h.saturating_sub(window);
                if *ts < cutoff {
                    failed.push((
                        *ts,
                        format!(
                            "entry too far behind, oldest acceptable timestamp is: {}",
                            rfc3339_s(cutoff)
                        ),
                    ));
                    continue;
                }
            }
            last = Some(i);
            if stream.highest_ts.map_or(true, |h| h < *ts) {
                stream.highest_ts = Some(*ts);
            }
            stream
                .entries
                .entry((*ts, line.as_str().into()))
                .or_insert(meta);
        }
        if let Some(j) = last {
            stream.last_line = Some((acc.entries[j].0, acc.entries[j].1.as_str().into()));
        }
        // Loki's ingester answers with the outcome of the request's last
        // stream (`instance.Push` overwrites its error stream by stream):
        // entries refused in an earlier stream are dropped silently when
        // the last one is taken.
        ingester_error = None;
        if !failed.is_empty() {
            let mut msg = String::new();
            for (ts, err) in failed.iter().take(10) {
                msg.push_str(&format!(
                    "entry with timestamp {} ignored, reason: '{err}',\n",
                    go_time_string(*ts)
                ));
            }
            msg.push_str(&format!(
                "user '{tenant}', total ignored: {} out of {total} for stream: {}",
                failed.len(),
                acc.labels_text
            ));
            ingester_error = Some(msg);
        }
    }
    drop(g);
    // An ingester error wins over the distributor's validation errors,
    // as in Loki's push tracker.
    if let Some(e) = ingester_error {
        return bad_request(e);
    }
    if !validation_errors.is_empty() {
        return validation_err();
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The distributor's automatic stream sharding (`shard_streams`, on by
/// default in Loki 3.x): once a stream's rate plus this push exceeds
/// `desired` bytes per second, its entries are dealt round-robin into
/// `ceil((rate + push) / desired)` streams that carry the extra label
/// `__stream_shard__="N"`, continuing from the shard the last push ended at
/// (`pkg/distributor/distributor.go`, `shardStream`).
fn shard_stream(t: &mut Tenant, acc: Accepted, desired: f64) -> Vec<Accepted> {
    let push: u64 = acc.entries.iter().map(|(_, l, _)| l.len() as u64).sum();
    let now = Instant::now();
    let r = t.rates.entry(acc.labels.clone()).or_insert(StreamRate {
        window_start: now,
        bytes: 0,
        rate: None,
        next_shard: 0,
    });
    let elapsed = now.duration_since(r.window_start).as_secs_f64();
    if elapsed >= 1.0 {
        r.rate = Some(r.bytes as f64 / elapsed);
        r.window_start = now;
        r.bytes = 0;
    }
    r.bytes += push;
    let shards = match r.rate {
        Some(rate) => ((rate + push as f64) / desired).ceil() as usize,
        None => 1,
    };
    if shards <= 1 {
        return vec![acc];
    }
    let n = shards.min(acc.entries.len());
    let start = r.next_shard;
    r.next_shard = start + n;
    let mut out: Vec<Accepted> = (0..n)
        .map(|i| {
            let mut labels = acc.labels.clone();
            labels.push((
                "__stream_shard__".into(),
                ((start + i) % shards).to_string(),
            ));
            labels.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            Accepted {
                labels_text: labels_string(&labels),
                labels,
                entries: Vec::new(),
            }
        })
        .collect();
    for (i, e) in acc.entries.into_iter().enumerate() {
        out[i % n].entries.push(e);
    }
    out
}

// ------------------------------------------------------- selector parsing

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Lexer { s, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    fn peek(&mut self) -> Option<char> {
        self.ws();
        self.rest().chars().next()
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn err(&self, what: &str) -> String {
        format!("parse error at char {}: {what}", self.pos + 1)
    }

    fn ident(&mut self) -> Option<&'a str> {
        self.ws();
        let r = self.rest();
        let mut end = 0;
        for (i, c) in r.char_indices() {
            let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
            if !ok {
                break;
            }
            end = i + 1;
        }
        if end == 0 {
            return None;
        }
        self.pos += end;
        Some(&r[..end])
    }

    /// A PromQL string literal: Go-escaped `"..."` or `'...'`, or raw `` `...` ``.
    fn string(&mut self) -> Result<String, String> {
        self.ws();
        let r = self.rest();
        let Some(q) = r.chars().next().filter(|c| matches!(c, '"' | '\'' | '`')) else {
            return Err(self.err("expected a quoted string"));
        };
        if q == '`' {
            let Some(end) = r[1..].find('`') else {
                return Err(self.err("unterminated raw string"));
            };
            self.pos += end + 2;
            return Ok(r[1..1 + end].to_string());
        }
        let b = r.as_bytes();
        let mut out: Vec<u8> = Vec::new();
        let mut i = 1;
        let hex = |s: &[u8]| -> Option<u32> {
            std::str::from_utf8(s)
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        };
        loop {
            let Some(&c) = b.get(i) else {
                return Err(self.err("unterminated quoted string"));
            };
            if c == q as u8 {
                i += 1;
                break;
            }
            if c == b'\n' {
                return Err(self.err("newline in string"));
            }
            if c != b'\\' {
                out.push(c);
                i += 1;
                continue;
            }
            let Some(&e) = b.get(i + 1) else {
                return Err(self.err("unterminated escape"));
            };
            i += 2;
            let simple = match e {
                b'a' => Some(0x07),
                b'b' => Some(0x08),
                b'f' => Some(0x0c),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                b'v' => Some(0x0b),
                b'\\' => Some(b'\\'),
                b'"' if q == '"' => Some(b'"'),
                b'\'' if q == '\'' => Some(b'\''),
                _ => None,
            };
            if let Some(s) = simple {
                out.push(s);
                continue;
            }
            match e {
                b'x' => {
                    let v = b
                        .get(i..i + 2)
                        .and_then(hex)
                        .ok_or_else(|| self.err("bad \\x escape"))?;
                    out.push(v as u8);
                    i += 2;
                }
                b'0'..=b'7' => {
                    let d = b
                        .get(i - 1..i + 2)
                        .ok_or_else(|| self.err("bad octal escape"))?;
                    if !d.iter().all(|c| (b'0'..=b'7').contains(c)) {
                        return Err(self.err("bad octal escape"));
                    }
                    let v = d.iter().fold(0u32, |a, c| a * 8 + (c - b'0') as u32);
                    if v > 255 {
                        return Err(self.err("octal escape out of range"));
                    }
                    out.push(v as u8);
                    i += 2;
                }
                b'u' | b'U' => {
                    let n = if e == b'u' { 4 } else { 8 };
                    let v = b
                        .get(i..i + n)
                        .and_then(hex)
                        .ok_or_else(|| self.err("bad unicode escape"))?;
                    let ch =
                        char::from_u32(v).ok_or_else(|| self.err("invalid unicode code point"))?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    i += n;
                }
                _ => return Err(self.err("unknown escape sequence")),
            }
        }
        self.pos += i;
        String::from_utf8(out).map_err(|_| self.err("invalid UTF-8 in string"))
    }
}

/// `promql_parser.ParseMetric`: `name{a="1", b="2"}` or `{a="1"}`. Only
/// `=` is allowed; the metric name becomes `__name__`.
fn parse_metric(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut lx = Lexer::new(s);
    let mut out = Vec::new();
    if let Some(name) = lx.ident() {
        out.push(("__name__".to_string(), name.to_string()));
    }
    if !lx.eat("{") {
        if out.is_empty() || lx.peek().is_some() {
            return Err(lx.err("expected '{'"));
        }
        return Ok(out);
    }
    loop {
        if lx.eat("}") {
            break;
        }
        let name = lx.ident().ok_or_else(|| lx.err("expected a label name"))?;
        if !lx.eat("=") || lx.rest().starts_with('~') {
            return Err(lx.err("expected '='"));
        }
        let value = lx.string()?;
        out.push((name.to_string(), value));
        if lx.eat(",") {
            continue;
        }
        if lx.eat("}") {
            break;
        }
        return Err(lx.err("expected ',' or '}'"));
    }
    if lx.peek().is_some() {
        return Err(lx.err("unexpected characters after '}'"));
    }
    Ok(out)
}

enum MatchOp {
    Eq,
    Neq,
    Re(regex::Regex),
    Nre(regex::Regex),
}

struct Matcher {
    name: String,
    value: String,
    op: MatchOp,
}

impl Matcher {
    fn matches(&self, v: &str) -> bool {
        match &self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Neq => v != self.value,
            MatchOp::Re(r) => r.is_match(v),
            MatchOp::Nre(r) => !r.is_match(v),
        }
    }
}

enum LineFilter {
    Contains(String),
    NotContains(String),
    Re(regex::Regex),
    NotRe(regex::Regex),
}

impl LineFilter {
    fn keep(&self, line: &str) -> bool {
        match self {
            LineFilter::Contains(s) => line.contains(s.as_str()),
            LineFilter::NotContains(s) => !line.contains(s.as_str()),
            LineFilter::Re(r) => r.is_match(line),
            LineFilter::NotRe(r) => !r.is_match(line),
        }
    }
}

/// A LogQL log query this server supports: a stream selector and optional
/// line filters.
struct Selector {
    matchers: Vec<Matcher>,
    filters: Vec<LineFilter>,
}

impl Selector {
    fn matches_stream(&self, labels: &Labels) -> bool {
        // A missing label matches like an empty value, as in Prometheus.
        self.matchers
            .iter()
            .all(|m| m.matches(get_label(labels, &m.name).unwrap_or("")))
    }

    fn keep_line(&self, line: &str) -> bool {
        self.filters.iter().all(|f| f.keep(line))
    }
}

fn anchored(re: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?s:{re})$"))
        .map_err(|e| format!("parse error : invalid regex {re:?}: {e}"))
}

fn parse_matchers(lx: &mut Lexer<'_>) -> Result<Vec<Matcher>, String> {
    if !lx.eat("{") {
        return Err(lx.err("expected a stream selector '{...}'"));
    }
    let mut matchers = Vec::new();
    loop {
        if lx.eat("}") {
            break;
        }
        let name = lx
            .ident()
            .ok_or_else(|| lx.err("expected a label name"))?
            .to_string();
        let op = if lx.eat("=~") {
            "=~"
        } else if lx.eat("!~") {
            "!~"
        } else if lx.eat("!=") {
            "!="
        } else if lx.eat("=") {
            "="
        } else {
            return Err(lx.err("expected a match operator"));
        };
        let value = lx.string()?;
        let op = match op {
            "=" => MatchOp::Eq,
            "!=" => MatchOp::Neq,
            "=~" => MatchOp::Re(anchored(&value)?),
            _ => MatchOp::Nre(anchored(&value)?),
        };
        matchers.push(Matcher { name, value, op });
        if lx.eat(",") {
            continue;
        }
        if lx.eat("}") {
            break;
        }
        return Err(lx.err("expected ',' or '}'"));
    }
    let usable = matchers.iter().any(|m| match &m.op {
        MatchOp::Eq => !m.value.is_empty(),
        MatchOp::Re(r) => !r.is_match(""),
        _ => false,
    });
    if !usable {
        return Err("parse error : queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will".into());
    }
    Ok(matchers)
}

fn parse_line_filters(lx: &mut Lexer<'_>) -> Result<Vec<LineFilter>, String> {
    let mut filters = Vec::new();
    loop {
        let f = if lx.eat("|=") {
            LineFilter::Contains(lx.string()?)
        } else if lx.eat("!=") {
            LineFilter::NotContains(lx.string()?)
        } else if lx.eat("|~") {
            LineFilter::Re(
                regex::Regex::new(&lx.string()?).map_err(|e| format!("parse error : {e}"))?,
            )
        } else if lx.eat("!~") {
            LineFilter::NotRe(
                regex::Regex::new(&lx.string()?).map_err(|e| format!("parse error : {e}"))?,
            )
        } else {
            break;
        };
        filters.push(f);
    }
    Ok(filters)
}

fn parse_log_query(q: &str) -> Result<Selector, String> {
    let mut lx = Lexer::new(q);
    let matchers = parse_matchers(&mut lx)?;
    let filters = parse_line_filters(&mut lx)?;
    if lx.peek().is_some() {
        return Err(format!(
            "parse error : query {q:?}: only stream selectors and line filters are supported by the test server"
        ));
    }
    Ok(Selector { matchers, filters })
}

/// The metric queries this server answers: `count_over_time(SEL [R])`,
/// optionally wrapped in `sum(...)`.
struct CountQuery {
    sel: Selector,
    range_ns: i64,
    sum: bool,
}

fn parse_count_query(q: &str) -> Option<Result<CountQuery, String>> {
    let mut lx = Lexer::new(q);
    let sum = lx.eat("sum");
    if sum && !lx.eat("(") {
        return None;
    }
    if !lx.eat("count_over_time") || !lx.eat("(") {
        return None;
    }
    Some((|| {
        let matchers = parse_matchers(&mut lx)?;
        let filters = parse_line_filters(&mut lx)?;
        if !lx.eat("[") {
            return Err(lx.err("expected '['"));
        }
        let Some(end) = lx.rest().find(']') else {
            return Err(lx.err("expected ']'"));
        };
        let dur = lx.rest()[..end].trim().to_string();
        lx.pos += end + 1;
        let range = parse_duration(&dur)
            .ok_or_else(|| format!("parse error : invalid duration {dur:?}"))?;
        if !lx.eat(")") || (sum && !lx.eat(")")) || lx.peek().is_some() {
            return Err(format!(
                "parse error : query {q:?} is not supported by the test server"
            ));
        }
        Ok(CountQuery {
            sel: Selector { matchers, filters },
            range_ns: range,
            sum,
        })
    })())
}

/// Prometheus-style durations (`1h`, `5m30s`, `1d`, `500ms`) in ns.
fn parse_duration(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            "w" => 7.0 * 86400e9,
            "y" => 365.0 * 86400e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add((n * unit) as i64)?;
    }
    Some(total)
}

// --------------------------------------------------------------- queries

/// `application/x-www-form-urlencoded` pairs, from the URL and (for POST)
/// the body.
fn form_pairs(raw_query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    match std::str::from_utf8(&b[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    let mut out = Vec::new();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body_s = if is_form {
        std::str::from_utf8(body).ok()
    } else {
        None
    };
    for src in [raw_query, body_s].into_iter().flatten() {
        for part in src.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            out.push((decode(k), decode(v)));
        }
    }
    out
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Loki's `parseTimestamp`: float seconds (rounded to ms) when there is a
/// '.', an integer of at most 10 digits as seconds, longer integers as
/// nanoseconds, else RFC3339Nano.
fn parse_loki_ts(v: &str) -> Result<i64, String> {
    if v.contains('.') {
        if let Ok(f) = v.parse::<f64>() {
            let secs = f.trunc();
            let frac = ((f - secs) * 1000.0).round() / 1000.0;
            return Ok(secs as i64 * 1_000_000_000 + (frac * 1e9) as i64);
        }
    }
    match v.parse::<i64>() {
        Ok(n) if v.len() <= 10 => Ok(n.saturating_mul(1_000_000_000)),
        Ok(n) => Ok(n),
        Err(_) => {
            parse_rfc3339_ns(v).map_err(|_| format!("cannot parse \"{v}\" to a valid timestamp"))
        }
    }
}

/// Go's `time.Duration.String()` for whole seconds and up.
fn go_duration(ns: i64) -> String {
    let s = ns / 1_000_000_000;
    format!("{}h{}m{}s", s / 3600, (s / 60) % 60, s % 60)
}

/// `start`, `end` (ns) from `start`/`end`/`since`, as in `loghttp` bounds.
fn time_bounds(
    pairs: &[(String, String)],
    max_len: Option<Duration>,
) -> Result<(i64, i64), String> {
    let end = match param(pairs, "end") {
        Some(v) => parse_loki_ts(v)?,
        None => now_ns(),
    };
    let since = match param(pairs, "since") {
        Some(v) => {
            parse_duration(v).ok_or_else(|| format!("cannot parse \"{v}\" to a valid duration"))?
        }
        None => 3600 * 1_000_000_000,
    };
    let start = match param(pairs, "start") {
        Some(v) => parse_loki_ts(v)?,
        None => end.saturating_sub(since),
    };
    if end < start {
        return Err("end timestamp must not be before or equal to start time".into());
    }
    if let Some(max) = max_len {
        let max = max.as_nanos() as i64;
        if max > 0 && end.saturating_sub(start) > max {
            return Err(format!(
                "the query time range exceeds the limit (query length: {}, limit: {})",
                go_duration(end.saturating_sub(start)),
                go_duration(max)
            ));
        }
    }
    Ok((start, end))
}

type Hit<'a> = (usize, i64, &'a str, &'a Meta);

/// The first `limit` entries in `[start, end)` over all matching streams,
/// in the requested order. Ties on ts go to the stream listed first, then
/// to line order within a stream, so repeated queries agree.
fn select<'a>(
    streams: &'a [(&'a Labels, &'a Stream)],
    sel: &'a Selector,
    start: i64,
    end: i64,
    limit: usize,
    forward: bool,
) -> Vec<Hit<'a>> {
    type It<'a> = Box<dyn Iterator<Item = (i64, &'a str, &'a Meta)> + 'a>;
    let mut iters: Vec<It<'a>> = Vec::with_capacity(streams.len());
    let mut heap: BinaryHeap<(i128, std::cmp::Reverse<usize>)> = BinaryHeap::new();
    let mut heads: Vec<Option<(i64, &'a str, &'a Meta)>> = Vec::with_capacity(streams.len());
    let key = |ts: i64| if forward { -(ts as i128) } else { ts as i128 };
    for (i, (_, s)) in streams.iter().enumerate() {
        let range = s
            .entries
            .range(ts_range(start, end))
            .map(|((ts, line), m)| (*ts, &**line, m))
            .filter(move |(_, line, _)| sel.keep_line(line));
        let mut it: It<'a> = if forward {
            Box::new(range)
        } else {
            Box::new(range.rev())
        };
        let head = it.next();
        if let Some((ts, _, _)) = head {
            heap.push((key(ts), std::cmp::Reverse(i)));
        }
        heads.push(head);
        iters.push(it);
    }
    let mut out = Vec::with_capacity(limit.min(4096));
    while out.len() < limit {
        let Some((_, std::cmp::Reverse(i))) = heap.pop() else {
            break;
        };
        let Some((ts, line, meta)) = heads[i].take() else {
            continue;
        };
        out.push((i, ts, line, meta));
        heads[i] = iters[i].next();
        if let Some((ts, _, _)) = heads[i] {
            heap.push((key(ts), std::cmp::Reverse(i)));
        }
    }
    out
}

fn wants_categorized(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-loki-response-encoding-flags")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == "categorize-labels")
}

/// Stream labels plus structured metadata, as Loki 3.x shows them when
/// labels are not categorized: a metadata name that clashes with a stream
/// label gets the `_extracted` suffix.
fn merged_labels(labels: &Labels, meta: &Meta) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = labels.iter().cloned().collect();
    for (k, v) in meta.iter() {
        if get_label(labels, k).is_some() {
            out.insert(format!("{k}_extracted"), v.to_string());
        } else {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

fn sorted_streams<'a>(t: &'a Tenant, sel: &Selector) -> Vec<(&'a Labels, &'a Stream)> {
    let mut v: Vec<_> = t
        .streams
        .iter()
        .filter(|(l, s)| !s.entries.is_empty() && sel.matches_stream(l))
        .collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

async fn query_range(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let tenant = match tenant_of(&shared, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let pairs = form_pairs(q.as_deref(), &headers, &body);
    let cfg = &shared.config;
    let Some(query) = param(&pairs, "query") else {
        return bad_request("parse error : syntax error: unexpected $end");
    };
    let limit = match param(&pairs, "limit") {
        None => 100usize,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > 0 => n as usize,
            Ok(_) => return bad_request("limit must be a positive value"),
            Err(_) => return bad_request(format!("cannot parse \"{v}\" to a valid integer")),
        },
    };
    let forward = match param(&pairs, "direction").map(|d| d.to_ascii_lowercase()) {
        None => false,
        Some(d) if d == "forward" => true,
        Some(d) if d == "backward" => false,
        Some(d) => return bad_request(format!("invalid direction '{d}'")),
    };
    let (start, end) = match time_bounds(&pairs, Some(cfg.max_query_length)) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    if parse_count_query(query).is_some() {
        return bad_request("metric range queries are not supported by the test server");
    }
    let sel = match parse_log_query(query) {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    if limit > cfg.max_entries_limit {
        return bad_request(format!(
            "max entries limit per query exceeded, limit > max_entries_limit ({limit} > {})",
            cfg.max_entries_limit
        ));
    }
    let categorize = wants_categorized(&headers);
    let g = shared.lock();
    let empty = Tenant::default();
    let t = g.get(&tenant).unwrap_or(&empty);
    let streams = sorted_streams(t, &sel);
    let hits = select(&streams, &sel, start, end, limit, forward);
    let size: usize = hits.iter().map(|h| h.2.len() + 40).sum();
    if let Some(max) = cfg.max_query_response_bytes.filter(|&m| size > m) {
        return text_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rpc error: code = ResourceExhausted desc = grpc: received message larger than max ({size} vs. {max})"),
        );
    }

    // Group hits into result streams, keeping first-appearance order and
    // the requested direction inside each stream.
    let mut index: HashMap<BTreeMap<String, String>, usize> = HashMap::new();
    let mut result: Vec<(BTreeMap<String, String>, Vec<serde_json::Value>)> = Vec::new();
    for (i, ts, line, meta) in hits {
        let labels = streams[i].0;
        let (key, value) = if categorize {
            let key: BTreeMap<String, String> = labels.iter().cloned().collect();
            let value = if meta.is_empty() {
                serde_json::json!([ts.to_string(), line])
            } else {
                let m: serde_json::Map<String, serde_json::Value> = meta
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::from(&**v)))
                    .collect();
                serde_json::json!([ts.to_string(), line, {"structuredMetadata": m}])
            };
            (key, value)
        } else {
            (
                merged_labels(labels, meta),
                serde_json::json!([ts.to_string(), line]),
            )
        };
        let slot = *index.entry(key.clone()).or_insert_with(|| {
            result.push((key, Vec::new()));
            result.len() - 1
        });
        result[slot].1.push(value);
    }
    drop(g);
    let result: Vec<serde_json::Value> = result
        .into_iter()
        .map(|(stream, values)| serde_json::json!({"stream": stream, "values": values}))
        .collect();
    let mut data = serde_json::json!({"resultType": "streams", "result": result, "stats": {}});
    if categorize {
        data["encodingFlags"] = serde_json::json!(["categorize-labels"]);
    }
    json_response(serde_json::json!({"status": "success", "data": data}))
}

/// Instant queries: log selectors get Loki's 400; `count_over_time` and
/// `sum(count_over_time(...))` are answered over `(time - R, time]`.
async fn instant_query(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let tenant = match tenant_of(&shared, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let pairs = form_pairs(q.as_deref(), &headers, &body);
    let Some(query) = param(&pairs, "query") else {
        return bad_request("parse error : syntax error: unexpected $end");
    };
    let cq = match parse_count_query(query) {
        Some(Ok(cq)) => cq,
        Some(Err(e)) => return bad_request(e),
        None => {
            return match parse_log_query(query) {
                Ok(_) => bad_request(
                    "log queries are not supported as an instant query type, please change your query to a range query type",
                ),
                Err(e) => bad_request(e),
            }
        }
    };
    let time = match param(&pairs, "time") {
        Some(v) => match parse_loki_ts(v) {
            Ok(t) => t,
            Err(e) => return bad_request(e),
        },
        None => now_ns(),
    };
    let g = shared.lock();
    let empty = Tenant::default();
    let t = g.get(&tenant).unwrap_or(&empty);
    let mut counts: BTreeMap<BTreeMap<String, String>, u64> = BTreeMap::new();
    let (lo, hi) = (
        time.saturating_sub(cq.range_ns).saturating_add(1),
        time.saturating_add(1),
    );
    for (labels, stream) in sorted_streams(t, &cq.sel) {
        for ((_, line), meta) in stream.entries.range(ts_range(lo, hi)) {
            if cq.sel.keep_line(line) {
                let key = if cq.sum {
                    BTreeMap::new()
                } else {
                    merged_labels(labels, meta)
                };
                *counts.entry(key).or_default() += 1;
            }
        }
    }
    drop(g);
    let secs = time as f64 / 1e9;
    let result: Vec<serde_json::Value> = counts
        .into_iter()
        .map(|(metric, n)| serde_json::json!({"metric": metric, "value": [secs, n.to_string()]}))
        .collect();
    json_response(serde_json::json!({
        "status": "success",
        "data": {"resultType": "vector", "result": result, "stats": {}}
    }))
}

/// Streams of the tenant with entries in `[start, end)`, optionally
/// restricted by a selector.
fn streams_in_range<'a>(
    t: &'a Tenant,
    sel: Option<&Selector>,
    start: i64,
    end: i64,
) -> impl Iterator<Item = &'a Labels> + 'a {
    let matched: Vec<&'a Labels> = t
        .streams
        .iter()
        .filter(|(l, _)| sel.map_or(true, |s| s.matches_stream(l)))
        .filter(|(_, s)| s.entries.range(ts_range(start, end)).next().is_some())
        .map(|(l, _)| l)
        .collect();
    matched.into_iter()
}

async fn labels(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    label_query(&shared, &headers, q.as_deref(), &body, None)
}

async fn label_values(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    label_query(&shared, &headers, q.as_deref(), &body, Some(&name))
}

fn label_query(
    shared: &Shared,
    headers: &HeaderMap,
    q: Option<&str>,
    body: &[u8],
    name: Option<&str>,
) -> Response {
    let tenant = match tenant_of(shared, headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let pairs = form_pairs(q, headers, body);
    let (start, end) = match time_bounds(&pairs, None) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let sel = match param(&pairs, "query").map(parse_log_query).transpose() {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let g = shared.lock();
    let empty = Tenant::default();
    let t = g.get(&tenant).unwrap_or(&empty);
    let mut out: std::collections::BTreeSet<String> = Default::default();
    for labels in streams_in_range(t, sel.as_ref(), start, end) {
        match name {
            None => out.extend(labels.iter().map(|(k, _)| k.clone())),
            Some(n) => out.extend(get_label(labels, n).map(str::to_string)),
        }
    }
    drop(g);
    json_response(serde_json::json!({"status": "success", "data": out}))
}

async fn series(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let tenant = match tenant_of(&shared, &headers) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let pairs = form_pairs(q.as_deref(), &headers, &body);
    let (start, end) = match time_bounds(&pairs, None) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let mut sels = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "match[]" || k == "match") {
        match parse_log_query(v) {
            Ok(s) => sels.push(s),
            Err(e) => return bad_request(e),
        }
    }
    let g = shared.lock();
    let empty = Tenant::default();
    let t = g.get(&tenant).unwrap_or(&empty);
    let mut out: Vec<BTreeMap<String, String>> = streams_in_range(t, None, start, end)
        .filter(|l| sels.is_empty() || sels.iter().any(|s| s.matches_stream(l)))
        .map(|l| l.iter().cloned().collect())
        .collect();
    drop(g);
    out.sort();
    json_response(serde_json::json!({"status": "success", "data": out}))
}
