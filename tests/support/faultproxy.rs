//! A fault-injecting HTTP/1.1 reverse proxy on loopback.
//!
//! Sits between a client under test and a real (or fake) server and, per
//! request, either forwards it or injects a failure: an error status, a 429,
//! a dropped connection before or after the upstream saw the request, a
//! late answer, or a silent loss. It records every request so tests can
//! compare what the client sent with what the store kept.
//!
//! The server side is a small hand-written HTTP/1.1 loop rather than a
//! framework, because a "reset" must close the TCP connection without any
//! response, which frameworks do not offer. It handles keep-alive and
//! `Content-Length` or chunked request bodies, which covers every client
//! used here. Forwarding uses reqwest.
//!
//! The proxy runs on its own runtime in a background thread, so sync tests
//! can use it; dropping the handle stops it and closes its connections.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Pass the request through and relay the answer.
    Forward,
    /// Answer this status without forwarding.
    Status(u16),
    /// Answer 429 without forwarding, with a `Retry-After` header (seconds
    /// or an HTTP date, sent verbatim) when given.
    TooManyRequests { retry_after: Option<String> },
    /// Close the client connection without an answer; nothing is forwarded.
    ResetBeforeForward,
    /// Forward, wait for the upstream's answer, then close the client
    /// connection without an answer: the data landed but the client cannot
    /// know.
    ResetAfterForward,
    /// Forward, then hold the upstream's answer this long before relaying
    /// it, to outlast the client's timeout.
    DelayAfterForward(Duration),
    /// Answer 204 without forwarding: the data is silently lost.
    AckWithoutForward,
}

/// Decides the fault for each request, in arrival order.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    kind: PlanKind,
    prefix: Option<String>,
    /// Requests the plan has decided so far (only those matching `prefix`).
    decided: usize,
}

#[derive(Clone, Debug)]
enum PlanKind {
    Always(Fault),
    Sequence(Vec<Fault>),
    Random {
        rng: SplitMix64,
        faults: Vec<(f64, Fault)>,
    },
}

impl FaultPlan {
    /// Every request gets `f`.
    pub fn always(f: Fault) -> FaultPlan {
        FaultPlan::new(PlanKind::Always(f))
    }

    /// Request `i` gets `v[i]`; requests past the end are forwarded.
    pub fn sequence(v: Vec<Fault>) -> FaultPlan {
        FaultPlan::new(PlanKind::Sequence(v))
    }

    /// Each request draws one number in `[0, 1)` and gets the first fault
    /// whose cumulative probability exceeds it, else `Forward`. The same seed
    /// gives the same faults in the same request order.
    pub fn random(seed: u64, faults: Vec<(f64, Fault)>) -> FaultPlan {
        let total: f64 = faults.iter().map(|(p, _)| *p).sum();
        assert!(
            faults.iter().all(|(p, _)| *p >= 0.0) && total <= 1.0 + 1e-9,
            "fault probabilities must be >= 0 and sum to at most 1, got {total}"
        );
        FaultPlan::new(PlanKind::Random {
            rng: SplitMix64(seed),
            faults,
        })
    }

    /// Applies the plan only to requests whose path starts with `prefix`;
    /// all others are forwarded and do not advance the plan, so queries made
    /// through the proxy neither get faults nor shift a sequence.
    pub fn only_paths(mut self, prefix: &str) -> FaultPlan {
        self.prefix = Some(prefix.to_string());
        self
    }

    fn new(kind: PlanKind) -> FaultPlan {
        FaultPlan {
            kind,
            prefix: None,
            decided: 0,
        }
    }

    fn decide(&mut self, path: &str) -> Fault {
        if let Some(prefix) = &self.prefix {
            if !path.starts_with(prefix.as_str()) {
                return Fault::Forward;
            }
        }
        let i = self.decided;
        self.decided += 1;
        match &mut self.kind {
            PlanKind::Always(f) => f.clone(),
            PlanKind::Sequence(v) => v.get(i).cloned().unwrap_or(Fault::Forward),
            PlanKind::Random { rng, faults } => {
                let x = rng.next_f64();
                let mut acc = 0.0;
                for (p, f) in faults.iter() {
                    acc += p;
                    if x < acc {
                        return f.clone();
                    }
                }
                Fault::Forward
            }
        }
    }
}

/// A tiny deterministic generator: the plan must not change when a
/// dependency's RNG algorithm does.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct ProxyEvent {
    /// Arrival order among all requests, starting at 0.
    pub seq: usize,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: Option<String>,
    /// Request headers as received, names lowercased.
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// The request body as received (still compressed, if it was).
    pub body: Bytes,
    pub fault: Fault,
    /// The upstream's status, if the request was forwarded and answered.
    pub upstream_status: Option<u16>,
    /// Why forwarding failed (the client then gets 502).
    pub upstream_error: Option<String>,
}

impl ProxyEvent {
    /// Whether the upstream received this request.
    pub fn forwarded(&self) -> bool {
        self.upstream_status.is_some()
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running proxy; dropping it stops the proxy.
pub struct FaultProxy {
    url: String,
    log: Arc<Mutex<Vec<ProxyEvent>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`
    /// (a base URL such as `http://127.0.0.1:9090`; request paths are
    /// appended). The port is listening when this returns.
    pub fn start(upstream: &str, plan: FaultPlan) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("local_addr"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            plan: Mutex::new((plan, 0)),
            log: log.clone(),
            client: reqwest::Client::builder()
                // Bounds a forward to a hung upstream; tests use loopback
                // servers that answer in milliseconds.
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build reqwest client"),
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        _ = rx => {}
                        _ = accept_loop(listener, shared) => {}
                    }
                });
                // Dropping the runtime cancels every connection task and so
                // closes every client connection, including delayed ones.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn proxy thread");
        FaultProxy {
            url,
            log,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Base URL of the proxy, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every request handled so far, in arrival order. A forwarded request
    /// appears once the upstream has answered it.
    pub fn log(&self) -> Vec<ProxyEvent> {
        let mut log = self.log.lock().unwrap().clone();
        log.sort_by_key(|e| e.seq);
        log
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Shared {
    upstream: String,
    /// The plan and the arrival counter, decided together so `seq` and the
    /// plan's order agree.
    plan: Mutex<(FaultPlan, usize)>,
    log: Arc<Mutex<Vec<ProxyEvent>>>,
    client: reqwest::Client,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_connection(stream, shared).await;
        });
    }
}

/// A parsed request.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    keep_alive: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Largest request head accepted; far above anything the clients send.
const MAX_HEAD: usize = 64 * 1024;

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    loop {
        let Some(req) = read_request(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let (path, query) = match req.target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (req.target.clone(), None),
        };
        let (seq, fault) = {
            let mut guard = shared.plan.lock().unwrap();
            let (plan, count) = &mut *guard;
            let seq = *count;
            *count += 1;
            (seq, plan.decide(&path))
        };
        let mut event = ProxyEvent {
            seq,
            method: req.method.clone(),
            path,
            query,
            headers: req.headers.clone(),
            content_type: req.header("content-type").map(str::to_string),
            content_encoding: req.header("content-encoding").map(str::to_string),
            body: req.body.clone(),
            fault: fault.clone(),
            upstream_status: None,
            upstream_error: None,
        };

        let response = match &fault {
            Fault::ResetBeforeForward => None,
            Fault::Forward | Fault::ResetAfterForward | Fault::DelayAfterForward(_) => {
                Some(match forward(&shared, &req).await {
                    Ok(resp) => {
                        event.upstream_status = Some(resp.status);
                        resp
                    }
                    Err(e) => {
                        event.upstream_error = Some(e.to_string());
                        Response::text(502, &format!("fault proxy: upstream error: {e}"))
                    }
                })
            }
            Fault::Status(code) => Some(Response::text(
                *code,
                &format!("fault proxy: status {code}"),
            )),
            Fault::TooManyRequests { retry_after } => {
                let mut r = Response::text(429, "fault proxy: too many requests");
                if let Some(v) = retry_after {
                    r.headers.push(("retry-after".into(), v.clone()));
                }
                Some(r)
            }
            Fault::AckWithoutForward => Some(Response {
                status: 204,
                headers: Vec::new(),
                body: Bytes::new(),
            }),
        };
        shared.log.lock().unwrap().push(event);

        let response = match (fault, response) {
            (Fault::ResetAfterForward, _) | (_, None) => {
                // Zero linger turns the close into a TCP RST, as a crashed
                // or restarted server would produce.
                let _ = stream.set_zero_linger();
                return Ok(());
            }
            (Fault::DelayAfterForward(d), Some(r)) => {
                tokio::time::sleep(d).await;
                r
            }
            (_, Some(r)) => r,
        };
        write_response(&mut stream, &response, req.method == "HEAD", req.keep_alive).await?;
        if !req.keep_alive {
            return Ok(());
        }
    }
}

/// Reads one request from `stream`, keeping bytes past its end in `buf` for
/// the next one. `None` on a clean close between requests.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        if read_more(stream, buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(bad("connection closed mid-request"));
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("bad request line"));
    };
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let connection = get("connection").unwrap_or_default();
    let keep_alive = if version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let length = match get("content-length") {
        Some(v) => v.parse::<usize>().map_err(|_| bad("bad content-length"))?,
        None => 0,
    };
    let (method, target) = (method.to_string(), target.to_string());
    buf.drain(..head_end + 4);
    // curl holds large bodies back until told to go on (or a 1 s timeout).
    if get("expect").is_some_and(|v| v == "100-continue") {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }

    let body = if chunked {
        read_chunked(stream, buf).await?
    } else {
        while buf.len() < length {
            if read_more(stream, buf).await? == 0 {
                return Err(bad("connection closed mid-body"));
            }
        }
        buf.drain(..length).collect()
    };
    Ok(Some(Request {
        method,
        target,
        headers,
        body: Bytes::from(body),
        keep_alive,
    }))
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if read_more(stream, buf).await? == 0 {
                return Err(bad("connection closed mid-chunk"));
            }
        };
        let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| bad("bad chunk size"))?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Skip trailers up to the empty line.
            loop {
                let end = loop {
                    if let Some(i) = find(buf, b"\r\n") {
                        break i;
                    }
                    if read_more(stream, buf).await? == 0 {
                        return Err(bad("connection closed in trailers"));
                    }
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(body);
                }
            }
        }
        while buf.len() < size + 2 {
            if read_more(stream, buf).await? == 0 {
                return Err(bad("connection closed mid-chunk"));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: Bytes::from(format!("{body}\n")),
        }
    }
}

/// Headers that describe one connection rather than the message, plus the
/// ones the proxy recomputes itself.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "expect"
            | "host"
            | "content-length"
    )
}

async fn forward(shared: &Shared, req: &Request) -> Result<Response, reqwest::Error> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut builder = shared
        .client
        .request(method, format!("{}{}", shared.upstream, req.target))
        .body(req.body.clone());
    for (name, value) in &req.headers {
        if !is_hop_by_hop(name) {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    let resp = builder.send().await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter(|(n, _)| !is_hop_by_hop(n.as_str()))
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.bytes().await?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

async fn write_response(
    stream: &mut TcpStream,
    resp: &Response,
    head_only: bool,
    keep_alive: bool,
) -> std::io::Result<()> {
    let reason = reqwest::StatusCode::from_u16(resp.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", resp.status);
    for (name, value) in &resp.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    // 1xx, 204 and 304 carry no body and must not announce one.
    let bodiless = resp.status < 200 || resp.status == 204 || resp.status == 304;
    if !bodiless {
        out.push_str(&format!("content-length: {}\r\n", resp.body.len()));
    }
    if !keep_alive {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !bodiless && !head_only {
        bytes.extend_from_slice(&resp.body);
    }
    stream.write_all(&bytes).await?;
    stream.flush().await
}
