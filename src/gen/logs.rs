//! Log line formats. A line is built into a reused buffer; nothing here
//! allocates once the buffers have grown to their working size.

use super::rng::{Rng, Weighted};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `<rfc3339 ns> <series> seq=<n> level=.. client=.. status=.. <message>`
    Looker,
    /// Apache/NCSA common log format.
    ApacheCommon,
    /// Apache combined: common plus referer and user agent.
    ApacheCombined,
    /// One JSON object per line, as structured loggers write.
    Json,
    /// `key=value` pairs.
    Logfmt,
    /// RFC 5424 syslog.
    Syslog,
}

/// How well the padding (`--line-bytes`) compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compressibility {
    /// Random printable characters: gzip gains little.
    Min,
    /// Words drawn at random from a vocabulary, like prose.
    Medium,
    /// The same text every time.
    Max,
}

#[derive(Debug, Clone, Copy)]
pub struct LineSpec {
    pub format: Format,
    /// Target line length in bytes; 0 keeps the natural length.
    pub line_bytes: usize,
    pub compressibility: Compressibility,
    /// Probability (0..=1) that an entry carries corrupted content.
    pub bad_data: f64,
    /// Probability (0..=1) that an entry is a multi-line stack trace.
    pub multiline: f64,
}

/// Per-series constants a line may mention.
#[derive(Debug, Clone)]
pub struct SeriesInfo {
    /// The `series` label value, e.g. `s0003`.
    pub name: String,
    pub host: String,
    pub app: &'static str,
    pub procid: u32,
    seconds: SecondCache,
}

impl SeriesInfo {
    pub fn new(index: u64, name: String, rng: &mut Rng) -> SeriesInfo {
        SeriesInfo {
            host: format!("host-{:02}", index % 64),
            app: rng.pick(APPS),
            procid: 1000 + rng.below(60_000) as u32,
            name,
            seconds: SecondCache::default(),
        }
    }
}

/// What [`LineGen::write`] produced besides the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The corruption the line carries, if any.
    pub bad: Option<Bad>,
    /// The line holds nothing a JSON string must escape.
    pub escape_free: bool,
}

/// The kinds of corruption `--bad-data` injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// An IP address with an octet above 255.
    Ip,
    /// An HTTP status no server sends.
    Status,
    /// Control characters, U+FFFD and invisible code points.
    Junk,
    /// A field of several KiB.
    Overlong,
}

pub const ABSURD_STATUS: &[u16] = &[999, 0, 1000, 601, 42];
pub const OVERLONG_MIN: usize = 4096;

const APPS: &[&str] = &["api", "web", "auth", "billing", "search", "gateway"];
static METHODS: Weighted<&str> = Weighted::new(&[
    ("GET", 700),
    ("POST", 150),
    ("PUT", 50),
    ("HEAD", 40),
    ("DELETE", 30),
    ("PATCH", 20),
    ("OPTIONS", 10),
]);
pub static STATUSES: Weighted<u16> = Weighted::new(&[
    (200, 740),
    (201, 30),
    (204, 20),
    (301, 20),
    (302, 30),
    (304, 50),
    (400, 20),
    (401, 15),
    (403, 10),
    (404, 40),
    (429, 5),
    (500, 10),
    (502, 5),
    (503, 5),
]);
/// (prefix, id placeholder?, suffix)
static PATHS: Weighted<(&str, bool, &str)> = Weighted::new(&[
    (("/api/v1/users/", true, ""), 120),
    (("/api/v1/orders/", true, "/items"), 80),
    (("/api/v1/products", false, "?page=2&sort=price"), 60),
    (("/api/v1/search", false, "?q=blue+shoes"), 50),
    (("/", false, ""), 60),
    (("/login", false, ""), 40),
    (("/health", false, ""), 50),
    (("/static/js/app.", true, ".js"), 90),
    (("/static/css/main.css", false, ""), 70),
    (("/images/", true, ".png"), 80),
    (("/favicon.ico", false, ""), 30),
    (("/wp-login.php", false, ""), 5),
]);
static AGENTS: Weighted<&str> = Weighted::new(&[
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", 40),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15", 20),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", 10),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148", 15),
    ("curl/8.5.0", 5),
    ("Go-http-client/1.1", 5),
    ("python-requests/2.31.0", 3),
    ("Googlebot/2.1 (+http://www.google.com/bot.html)", 2),
]);
static REFERERS: Weighted<&str> = Weighted::new(&[
    ("-", 50),
    ("https://www.google.com/", 20),
    ("https://example.com/", 15),
    ("https://example.com/products", 10),
    ("https://news.ycombinator.com/", 5),
]);
static USERS: Weighted<&str> = Weighted::new(&[
    ("-", 80),
    ("alice", 8),
    ("bob", 6),
    ("carol", 4),
    ("svc-batch", 2),
]);
const MESSAGES: &[&str] = &[
    "request completed",
    "served from cache",
    "upstream responded",
    "session refreshed",
    "query executed",
];
const WARN_MESSAGES: &[&str] = &["client error", "rate limited", "invalid token", "not found"];
const ERROR_MESSAGES: &[&str] = &[
    "upstream timeout",
    "connection reset by peer",
    "internal error",
];
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "at",
    "by",
    "from",
    "that",
    "request",
    "response",
    "user",
    "order",
    "cache",
    "queue",
    "worker",
    "shard",
    "replica",
    "token",
    "session",
    "batch",
    "stream",
    "index",
    "query",
    "table",
    "row",
    "column",
    "page",
    "retry",
    "timeout",
    "latency",
    "bytes",
    "payload",
    "header",
    "cookie",
    "backend",
    "frontend",
    "service",
    "cluster",
    "node",
    "pod",
    "container",
    "volume",
    "disk",
    "memory",
    "cpu",
    "thread",
    "lock",
    "mutex",
    "channel",
    "socket",
    "connection",
    "pool",
    "client",
    "server",
    "handler",
    "router",
    "middleware",
    "auth",
    "login",
    "logout",
    "account",
    "billing",
    "invoice",
    "payment",
    "refund",
    "cart",
    "checkout",
    "product",
    "catalog",
    "search",
    "filter",
    "sort",
    "limit",
    "offset",
    "cursor",
    "commit",
    "rollback",
    "transaction",
    "snapshot",
    "compaction",
    "flush",
    "segment",
    "chunk",
    "block",
    "label",
    "metric",
    "sample",
    "histogram",
    "counter",
    "gauge",
    "alert",
    "rule",
    "silence",
    "dashboard",
    "panel",
    "tenant",
    "quota",
    "usage",
    "limit",
    "burst",
    "rate",
    "window",
    "interval",
    "started",
    "stopped",
    "failed",
    "succeeded",
    "skipped",
    "accepted",
    "rejected",
    "dropped",
    "created",
    "updated",
    "deleted",
    "loaded",
    "saved",
    "sent",
    "received",
    "opened",
    "closed",
    "expired",
    "renewed",
    "scheduled",
    "cancelled",
    "paused",
    "resumed",
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lambda",
    "sigma",
    "north",
    "south",
    "east",
    "west",
    "primary",
    "secondary",
    "fallback",
    "default",
    "custom",
];
const MAX_TEXT: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ";
const MAX_TEXT_QUERY: &str = "Lorem+ipsum+dolor+sit+amet+consectetur+adipiscing+elit+sed+do+eiusmod+tempor+incididunt+ut+labore+et+dolore+magna+aliqua+";
/// No quote, backslash or space, so padding never needs escaping or
/// breaks a token, whatever field it lands in.
const RANDOM_CHARS: &[u8] =
    b"!#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~";
/// Safe in a URL query value.
const QUERY_CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_";
const JUNK: &[char] = &[
    '\u{1}', '\u{7}', '\u{8}', '\u{1b}', '\u{7f}', '\u{fffd}', '\u{200b}', '\u{feff}', '\u{202e}',
    '\u{0301}', '\u{ffff}', '\u{85}',
];
const EXCEPTIONS: &[&str] = &[
    "java.lang.IllegalStateException: connection pool exhausted",
    "java.lang.NullPointerException: Cannot invoke \"String.length()\" because \"name\" is null",
    "java.util.concurrent.TimeoutException: upstream did not answer within 5000 ms",
    "java.io.IOException: Broken pipe",
];
const FRAMES: &[&str] = &[
    "com.example.api.OrderController.create(OrderController.java:",
    "com.example.service.OrderService.place(OrderService.java:",
    "com.example.db.Pool.acquire(Pool.java:",
    "org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:",
    "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:",
    "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:",
    "java.base/java.lang.Thread.run(Thread.java:",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Where the padding goes and which characters it may use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pad {
    Text,
    Query,
}

/// One entry's randomly drawn fields.
struct Fields {
    ip: [u16; 4],
    method: &'static str,
    path: (&'static str, bool, &'static str),
    path_id: u64,
    status: u16,
    bytes: u64,
    duration_ms: u64,
    bad: Option<Bad>,
}

impl Fields {
    fn level(&self) -> &'static str {
        match self.status {
            500..=599 => "error",
            400..=499 => "warn",
            _ => "info",
        }
    }

    fn message(&self, rng: &mut Rng) -> &'static str {
        match self.level() {
            "error" => rng.pick(ERROR_MESSAGES),
            "warn" => rng.pick(WARN_MESSAGES),
            _ => rng.pick(MESSAGES),
        }
    }
}

/// Builds log lines; owns the scratch space reused between entries.
pub struct LineGen {
    spec: LineSpec,
    pad: Vec<u8>,
}

impl LineGen {
    pub fn new(spec: LineSpec) -> LineGen {
        LineGen {
            spec,
            pad: Vec::with_capacity(spec.line_bytes + 64),
        }
    }

    pub fn spec(&self) -> &LineSpec {
        &self.spec
    }

    /// Replaces `line` with the entry for (`ts_ns`, `seq`).
    pub fn write(
        &mut self,
        line: &mut Vec<u8>,
        rng: &mut Rng,
        ts_ns: i64,
        seq: u64,
        series: &mut SeriesInfo,
    ) -> Written {
        line.clear();
        let f = self.fields(rng);
        let (pad_at, pad_kind) = match self.spec.format {
            Format::Looker => write_looker(line, rng, ts_ns, seq, series, &f),
            Format::ApacheCommon => write_apache(line, rng, ts_ns, seq, &f, false),
            Format::ApacheCombined => write_apache(line, rng, ts_ns, seq, &f, true),
            Format::Json => write_json(line, rng, &mut series.seconds, ts_ns, seq, &f),
            Format::Logfmt => write_logfmt(line, rng, &mut series.seconds, ts_ns, seq, &f),
            Format::Syslog => write_syslog(line, rng, ts_ns, seq, series, &f),
        };
        if self.spec.line_bytes > line.len() {
            let want = self.spec.line_bytes - line.len();
            self.pad.clear();
            fill(
                &mut self.pad,
                rng,
                want,
                self.spec.compressibility,
                pad_kind,
            );
            line.extend_from_slice(&self.pad);
            line[pad_at..].rotate_right(self.pad.len());
        }
        let multiline = rng.chance(self.spec.multiline);
        if multiline {
            self.pad.clear();
            stack_trace(&mut self.pad, rng);
            if self.spec.format == Format::Json {
                // The line is a JSON document: the trace goes in a field,
                // escaped, as JSON loggers write it.
                line.pop();
                line.put(",\"stack\":");
                let trace = std::str::from_utf8(&self.pad).unwrap_or_default();
                crate::record::write_json_str(line, trace);
                line.push(b'}');
            } else {
                line.extend_from_slice(&self.pad);
            }
        }
        Written {
            bad: f.bad,
            // Looker lines are built from timestamps, digits, fixed words and
            // padding without quotes or backslashes; only junk and stack
            // traces (tabs, newlines) bring in what JSON must escape.
            escape_free: self.spec.format == Format::Looker
                && f.bad != Some(Bad::Junk)
                && !multiline,
        }
    }

    fn fields(&self, rng: &mut Rng) -> Fields {
        let r = rng.u64();
        let ip = [
            1 + ((r & 0xffff) % 223) as u16,
            ((r >> 16) & 0xff) as u16,
            ((r >> 24) & 0xff) as u16,
            1 + ((r >> 32) % 254) as u16,
        ];
        let mut f = Fields {
            ip,
            method: "GET",
            path: PATHS.items[0].0,
            path_id: 0,
            status: rng.weighted(&STATUSES),
            bytes: 0,
            duration_ms: 0,
            bad: None,
        };
        // The looker format shows none of the request details; not drawing
        // them is a good part of its speed.
        if self.spec.format != Format::Looker {
            f.method = rng.weighted(&METHODS);
            f.path = rng.weighted(&PATHS);
            let r = rng.u64();
            f.path_id = (r & 0xffff_ffff) % 100_000;
            let size_exp = 6 + (r >> 32) % 14;
            if !matches!(f.status, 204 | 304) {
                f.bytes = (1u64 << size_exp) + rng.below(1u64 << size_exp);
            }
            let dur_exp = (r >> 48) % 11;
            f.duration_ms = (1u64 << dur_exp) + rng.below(1u64 << dur_exp);
        }
        if rng.chance(self.spec.bad_data) {
            let bad = rng.pick(&[Bad::Ip, Bad::Status, Bad::Junk, Bad::Overlong]);
            match bad {
                Bad::Ip => f.ip[rng.below(4) as usize] = 256 + rng.below(744) as u16,
                Bad::Status => f.status = rng.pick(ABSURD_STATUS),
                Bad::Junk | Bad::Overlong => {}
            }
            f.bad = Some(bad);
        }
        f
    }
}

/// Whether `status` is one the generator draws for good entries.
pub fn is_plausible_status(status: u16) -> bool {
    STATUSES.items.iter().any(|(s, _)| *s == status)
}

/// Appending text to a line under construction. Lines are bytes rather
/// than `String` so the hot path appends without per-char UTF-8 encoding;
/// only `&str` and `char` go in, so a line is always valid UTF-8.
trait Put {
    fn put(&mut self, s: &str);
    fn put_char(&mut self, c: char);
}

impl Put for Vec<u8> {
    #[inline]
    fn put(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }

    #[inline]
    fn put_char(&mut self, c: char) {
        self.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
}

fn push_u64(s: &mut Vec<u8>, v: u64) {
    s.put(itoa::Buffer::new().format(v));
}

fn push_2(s: &mut Vec<u8>, v: u32) {
    s.extend_from_slice(&[b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8]);
}

/// Decimal forms of 0..=255 (3 digit bytes, then the length).
const OCTETS: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut i = 0;
    while i < 256 {
        let (h, te, o) = ((i / 100) as u8, (i / 10 % 10) as u8, (i % 10) as u8);
        t[i] = if i >= 100 {
            [b'0' + h, b'0' + te, b'0' + o, 3]
        } else if i >= 10 {
            [b'0' + te, b'0' + o, 0, 2]
        } else {
            [b'0' + o, 0, 0, 1]
        };
        i += 1;
    }
    t
};

/// Broken-down UTC time: (year, month 1-12, day, hour, minute, second, ns).
fn civil(ts_ns: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let nanos = ts_ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod / 60 % 60, sod % 60, nanos)
}

fn push_year(s: &mut Vec<u8>, y: i64) {
    let y = y.clamp(0, 9999) as u32;
    push_2(s, y / 100);
    push_2(s, y % 100);
}

/// `YYYY-MM-DDTHH:MM:SS` of the last second formatted: adjacent entries of
/// a series almost always share it, and the calendar arithmetic is the
/// costliest part of a timestamp.
#[derive(Debug, Clone, Default)]
pub struct SecondCache {
    sec: Option<i64>,
    text: [u8; 19],
}

impl SecondCache {
    fn get(&mut self, ts_ns: i64) -> &[u8; 19] {
        let sec = ts_ns.div_euclid(1_000_000_000);
        if self.sec != Some(sec) {
            let (y, mo, d, h, mi, se, _) = civil(ts_ns);
            let y = y.clamp(0, 9999) as u32;
            let two = |v: u32| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
            let t = &mut self.text;
            t[0..2].copy_from_slice(&two(y / 100));
            t[2..4].copy_from_slice(&two(y % 100));
            t[4] = b'-';
            t[5..7].copy_from_slice(&two(mo));
            t[7] = b'-';
            t[8..10].copy_from_slice(&two(d));
            t[10] = b'T';
            t[11..13].copy_from_slice(&two(h));
            t[13] = b':';
            t[14..16].copy_from_slice(&two(mi));
            t[16] = b':';
            t[17..19].copy_from_slice(&two(se));
            self.sec = Some(sec);
        }
        &self.text
    }
}

/// RFC 3339 UTC with `digits` fractional digits (0 for none).
pub fn push_rfc3339(s: &mut Vec<u8>, ts_ns: i64, digits: u32) {
    let mut cache = SecondCache::default();
    match digits {
        0 => push_rfc3339_cached::<0>(s, &mut cache, ts_ns),
        3 => push_rfc3339_cached::<3>(s, &mut cache, ts_ns),
        6 => push_rfc3339_cached::<6>(s, &mut cache, ts_ns),
        _ => push_rfc3339_cached::<9>(s, &mut cache, ts_ns),
    }
}

/// `D` fractional digits, a constant so each copy has a fixed length and
/// compiles to plain stores rather than a memcpy call.
fn push_rfc3339_cached<const D: usize>(s: &mut Vec<u8>, cache: &mut SecondCache, ts_ns: i64) {
    s.extend_from_slice(cache.get(ts_ns));
    let mut ns = ts_ns.rem_euclid(1_000_000_000) as u32;
    if D > 0 {
        let mut buf = [b'.'; 10];
        ns /= 10u32.pow((9 - D) as u32);
        for i in (1..=D).rev() {
            buf[i] = b'0' + (ns % 10) as u8;
            ns /= 10;
        }
        s.extend_from_slice(&buf[..D + 1]);
    }
    s.push(b'Z');
}

/// `10/Oct/2000:13:55:36 +0000`
fn push_apache_time(s: &mut Vec<u8>, ts_ns: i64) {
    let (y, mo, d, h, mi, se, _) = civil(ts_ns);
    push_2(s, d);
    s.push(b'/');
    s.put(MONTHS[(mo - 1) as usize]);
    s.push(b'/');
    push_year(s, y);
    s.push(b':');
    push_2(s, h);
    s.push(b':');
    push_2(s, mi);
    s.push(b':');
    push_2(s, se);
    s.put(" +0000");
}

fn push_ip(s: &mut Vec<u8>, ip: [u16; 4]) {
    for (i, &o) in ip.iter().enumerate() {
        if i > 0 {
            s.push(b'.');
        }
        match OCTETS.get(o as usize) {
            Some(t) => {
                // Fixed-size copy, then drop the unused tail.
                let len = s.len() + t[3] as usize;
                s.extend_from_slice(&t[..3]);
                s.truncate(len);
            }
            None => push_u64(s, u64::from(o)),
        }
    }
}

fn push_path(s: &mut Vec<u8>, rng: &mut Rng, f: &Fields) {
    let (pre, id, post) = f.path;
    s.put(pre);
    if id {
        push_u64(s, f.path_id);
    }
    if f.bad == Some(Bad::Overlong) {
        overlong(s, rng);
    }
    s.put(post);
}

fn overlong(s: &mut Vec<u8>, rng: &mut Rng) {
    let n = OVERLONG_MIN + rng.below(OVERLONG_MIN as u64) as usize;
    let unit = rng.pick(&["A", "../", "%2e", "x"]);
    while s.len() < n {
        s.put(unit);
    }
}

/// `json`: escape what a JSON string may not hold raw, so a JSON line
/// stays a valid document.
fn junk(s: &mut Vec<u8>, rng: &mut Rng, json: bool) {
    for _ in 0..3 + rng.below(8) {
        let c = rng.pick(JUNK);
        if json && c < ' ' {
            s.put("\\u00");
            s.put_char(char::from_digit(c as u32 / 16, 16).unwrap_or('0'));
            s.put_char(char::from_digit(c as u32 % 16, 16).unwrap_or('0'));
        } else {
            s.put_char(c);
        }
    }
}

/// The free-text part: a short message plus corruption that targets it.
fn push_message(s: &mut Vec<u8>, rng: &mut Rng, f: &Fields) {
    s.put(f.message(rng));
    match f.bad {
        Some(Bad::Junk) => {
            s.push(b' ');
            junk(s, rng, false);
        }
        Some(Bad::Overlong) => {
            s.push(b' ');
            overlong(s, rng);
        }
        _ => {}
    }
}

fn write_looker(
    s: &mut Vec<u8>,
    rng: &mut Rng,
    ts_ns: i64,
    seq: u64,
    series: &mut SeriesInfo,
    f: &Fields,
) -> (usize, Pad) {
    push_rfc3339_cached::<9>(s, &mut series.seconds, ts_ns);
    s.push(b' ');
    s.put(&series.name);
    s.put(" seq=");
    push_u64(s, seq);
    s.put(" level=");
    s.put(f.level());
    s.put(" client=");
    push_ip(s, f.ip);
    s.put(" status=");
    push_u64(s, u64::from(f.status));
    s.push(b' ');
    push_message(s, rng, f);
    (s.len(), Pad::Text)
}

fn write_apache(
    s: &mut Vec<u8>,
    rng: &mut Rng,
    ts_ns: i64,
    seq: u64,
    f: &Fields,
    combined: bool,
) -> (usize, Pad) {
    push_ip(s, f.ip);
    s.put(" - ");
    s.put(rng.weighted(&USERS));
    s.put(" [");
    push_apache_time(s, ts_ns);
    s.put("] \"");
    s.put(f.method);
    s.push(b' ');
    push_path(s, rng, f);
    s.push(if f.path.2.contains('?') { b'&' } else { b'?' });
    s.put("seq=");
    push_u64(s, seq);
    if f.bad == Some(Bad::Junk) {
        // Junk where a scanner hit it: inside the request line.
        junk(s, rng, false);
    }
    let pad_at = s.len();
    s.put(" HTTP/1.1\" ");
    push_u64(s, u64::from(f.status));
    s.push(b' ');
    push_u64(s, f.bytes);
    if combined {
        s.put(" \"");
        s.put(rng.weighted(&REFERERS));
        s.put("\" \"");
        s.put(rng.weighted(&AGENTS));
        s.push(b'"');
    }
    (pad_at, Pad::Query)
}

fn write_json(
    s: &mut Vec<u8>,
    rng: &mut Rng,
    seconds: &mut SecondCache,
    ts_ns: i64,
    seq: u64,
    f: &Fields,
) -> (usize, Pad) {
    s.put("{\"time\":\"");
    push_rfc3339_cached::<3>(s, seconds, ts_ns);
    s.put("\",\"level\":\"");
    s.put(f.level());
    s.put("\",\"seq\":");
    push_u64(s, seq);
    s.put(",\"client\":\"");
    push_ip(s, f.ip);
    s.put("\",\"method\":\"");
    s.put(f.method);
    s.put("\",\"path\":\"");
    push_path(s, rng, f);
    s.put("\",\"status\":");
    push_u64(s, u64::from(f.status));
    s.put(",\"bytes\":");
    push_u64(s, f.bytes);
    s.put(",\"duration_ms\":");
    push_u64(s, f.duration_ms);
    s.put(",\"user_agent\":\"");
    s.put(rng.weighted(&AGENTS));
    s.put("\",\"msg\":\"");
    s.put(f.message(rng));
    if f.bad == Some(Bad::Junk) {
        s.push(b' ');
        junk(s, rng, true);
    }
    let pad_at = s.len();
    s.put("\"}");
    (pad_at, Pad::Text)
}

fn write_logfmt(
    s: &mut Vec<u8>,
    rng: &mut Rng,
    seconds: &mut SecondCache,
    ts_ns: i64,
    seq: u64,
    f: &Fields,
) -> (usize, Pad) {
    s.put("time=");
    push_rfc3339_cached::<3>(s, seconds, ts_ns);
    s.put(" level=");
    s.put(f.level());
    s.put(" seq=");
    push_u64(s, seq);
    s.put(" client=");
    push_ip(s, f.ip);
    s.put(" method=");
    s.put(f.method);
    s.put(" path=");
    push_path(s, rng, f);
    s.put(" status=");
    push_u64(s, u64::from(f.status));
    s.put(" bytes=");
    push_u64(s, f.bytes);
    s.put(" duration=");
    push_u64(s, f.duration_ms);
    s.put("ms msg=\"");
    s.put(f.message(rng));
    if f.bad == Some(Bad::Junk) {
        s.push(b' ');
        junk(s, rng, false);
    }
    let pad_at = s.len();
    s.push(b'"');
    (pad_at, Pad::Text)
}

fn write_syslog(
    s: &mut Vec<u8>,
    rng: &mut Rng,
    ts_ns: i64,
    seq: u64,
    series: &mut SeriesInfo,
    f: &Fields,
) -> (usize, Pad) {
    let severity = match f.level() {
        "error" => 3,
        "warn" => 4,
        _ => 6,
    };
    // Facility local0 (16).
    s.push(b'<');
    push_u64(s, 16 * 8 + severity);
    s.put(">1 ");
    push_rfc3339_cached::<6>(s, &mut series.seconds, ts_ns);
    s.push(b' ');
    s.put(&series.host);
    s.push(b' ');
    s.put(series.app);
    s.push(b' ');
    push_u64(s, u64::from(series.procid));
    s.put(" ACCESS [looker@32473 seq=\"");
    push_u64(s, seq);
    s.put("\" series=\"");
    s.put(&series.name);
    s.put("\"] ");
    push_ip(s, f.ip);
    s.push(b' ');
    s.put(f.method);
    s.push(b' ');
    push_path(s, rng, f);
    s.push(b' ');
    push_u64(s, u64::from(f.status));
    s.push(b' ');
    s.put(f.message(rng));
    if f.bad == Some(Bad::Junk) {
        s.push(b' ');
        junk(s, rng, false);
    }
    (s.len(), Pad::Text)
}

/// Appends `n` bytes of padding of the requested compressibility.
fn fill(s: &mut Vec<u8>, rng: &mut Rng, n: usize, c: Compressibility, pad: Pad) {
    let (chars, sep, max_text, prefix) = match pad {
        Pad::Text => (RANDOM_CHARS, b' ', MAX_TEXT, " "),
        // Form encoding: '+' for spaces, nothing a URL would escape.
        Pad::Query => (QUERY_CHARS, b'+', MAX_TEXT_QUERY, "&q="),
    };
    s.put(prefix);
    let n = n.saturating_sub(prefix.len());
    let start = s.len();
    match c {
        Compressibility::Min => {
            let k = chars.len() as u128;
            let mut left = n;
            while left > 0 {
                // Multiply-shift draws several characters from one u64.
                let mut r = rng.u64();
                for _ in 0..left.min(8) {
                    let x = r as u128 * k;
                    s.push(chars[(x >> 64) as usize]);
                    r = x as u64;
                }
                left = left.saturating_sub(8);
            }
        }
        Compressibility::Medium => {
            while s.len() - start < n {
                let r = rng.u64();
                for i in 0..4 {
                    let w = WORDS[((r >> (16 * i)) & 0xffff) as usize % WORDS.len()];
                    s.put(w);
                    s.push(sep);
                }
            }
        }
        Compressibility::Max => {
            while s.len() - start < n {
                s.put(max_text);
            }
        }
    }
    s.truncate(start + n);
}

fn stack_trace(s: &mut Vec<u8>, rng: &mut Rng) {
    s.push(b'\n');
    s.put(rng.pick(EXCEPTIONS));
    for _ in 0..3 + rng.below(10) {
        s.put("\n\tat ");
        s.put(rng.pick(FRAMES));
        push_u64(s, 20 + rng.below(900));
        s.push(b')');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn spec(format: Format) -> LineSpec {
        LineSpec {
            format,
            line_bytes: 0,
            compressibility: Compressibility::Medium,
            bad_data: 0.0,
            multiline: 0.0,
        }
    }

    fn lines(spec: LineSpec, n: u64) -> Vec<(String, Option<Bad>)> {
        let mut rng = Rng::new(42, 1, 0);
        let mut series = SeriesInfo::new(1, "s0001".into(), &mut rng);
        let mut g = LineGen::new(spec);
        let mut line = Vec::new();
        (0..n)
            .map(|seq| {
                let w = g.write(
                    &mut line,
                    &mut rng,
                    1_700_000_000_123_456_789 + seq as i64 * 1000,
                    seq,
                    &mut series,
                );
                let text = String::from_utf8(line.clone()).expect("lines are UTF-8");
                if w.escape_free {
                    let mut escaped = Vec::new();
                    crate::record::write_json_str(&mut escaped, &text);
                    assert_eq!(escaped.len(), text.len() + 2, "needs escaping: {text}");
                }
                (text, w.bad)
            })
            .collect()
    }

    /// Splits a combined-format line into its fields without a regex:
    /// ip, ident, user, [time], "request", status, bytes, "referer", "ua".
    fn parse_combined(l: &str) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut rest = l;
        for _ in 0..3 {
            let (tok, r) = rest.split_once(' ')?;
            out.push(tok.to_string());
            rest = r;
        }
        let r = rest.strip_prefix('[')?;
        let (time, r) = r.split_once("] ")?;
        out.push(time.to_string());
        let r = r.strip_prefix('"')?;
        let (req, r) = r.split_once("\" ")?;
        out.push(req.to_string());
        let (status, r) = r.split_once(' ')?;
        out.push(status.to_string());
        let (bytes, r) = r.split_once(' ')?;
        out.push(bytes.to_string());
        let r = r.strip_prefix('"')?;
        let (referer, r) = r.split_once("\" \"")?;
        out.push(referer.to_string());
        out.push(r.strip_suffix('"')?.to_string());
        Some(out)
    }

    #[test]
    fn apache_combined_lines_have_the_nine_fields() {
        for (l, _) in lines(spec(Format::ApacheCombined), 2000) {
            let f = parse_combined(&l).unwrap_or_else(|| panic!("unparsable: {l}"));
            let octets: Vec<u16> = f[0].split('.').map(|o| o.parse().unwrap()).collect();
            assert_eq!(octets.len(), 4, "{l}");
            assert!(octets.iter().all(|o| *o <= 255), "{l}");
            assert_eq!(f[1], "-");
            assert_eq!(f[3].len(), "14/Nov/2023:22:13:20 +0000".len(), "{l}");
            assert!(f[3].contains("/Nov/2023:22:13:20 +0000"), "{l}");
            let req: Vec<&str> = f[4].split(' ').collect();
            assert_eq!(req.len(), 3, "{l}");
            assert!(METHODS.items.iter().any(|(m, _)| *m == req[0]), "{l}");
            assert!(req[1].starts_with('/') && req[1].contains("seq="), "{l}");
            assert_eq!(req[2], "HTTP/1.1");
            assert!(is_plausible_status(f[5].parse().unwrap()), "{l}");
            f[6].parse::<u64>().unwrap();
            assert!(!f[8].is_empty());
        }
    }

    #[test]
    fn status_codes_are_mostly_200() {
        let all = lines(spec(Format::ApacheCommon), 5000);
        let ok = all.iter().filter(|(l, _)| l.contains("\" 200 ")).count();
        let frac = ok as f64 / all.len() as f64;
        assert!((0.68..0.80).contains(&frac), "{frac}");
    }

    #[test]
    fn every_format_is_unique_per_seq_and_mentions_it() {
        for format in [
            Format::Looker,
            Format::ApacheCommon,
            Format::ApacheCombined,
            Format::Json,
            Format::Logfmt,
            Format::Syslog,
        ] {
            let mut s = spec(format);
            s.compressibility = Compressibility::Max;
            s.line_bytes = 300;
            let all = lines(s, 500);
            let set: std::collections::HashSet<_> = all.iter().map(|(l, _)| l.clone()).collect();
            assert_eq!(set.len(), all.len(), "{format:?} repeats lines");
            for (seq, (l, _)) in all.iter().enumerate() {
                let needle = format!(
                    "seq{}{seq}",
                    if format == Format::Json { "\":" } else { "=" }
                );
                let needle = if format == Format::Syslog {
                    format!("seq=\"{seq}\"")
                } else {
                    needle
                };
                assert!(l.contains(&needle), "{format:?}: {l}");
                assert!(!l.contains('\n'), "{format:?}: {l}");
            }
        }
    }

    #[test]
    fn json_lines_are_json_even_when_corrupted_or_multiline() {
        let mut s = spec(Format::Json);
        s.bad_data = 0.5;
        s.multiline = 0.5;
        s.line_bytes = 200;
        for (l, _) in lines(s, 2000) {
            let v: serde_json::Value =
                serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(v["seq"].is_u64());
        }
    }

    #[test]
    fn syslog_follows_rfc5424_header() {
        for (l, _) in lines(spec(Format::Syslog), 200) {
            let (pri, rest) = l.split_once(">1 ").unwrap();
            let pri: u32 = pri.strip_prefix('<').unwrap().parse().unwrap();
            assert!((128..=135).contains(&pri));
            let parts: Vec<&str> = rest.splitn(6, ' ').collect();
            assert!(parts[0].ends_with('Z') && parts[0].contains('T'));
            assert_eq!(parts[4], "ACCESS");
            assert!(parts[5].starts_with("[looker@32473 seq=\""));
        }
    }

    #[test]
    fn timestamps_render_like_timefmt() {
        let ns = 1_709_251_199_123_456_789;
        let mut s = Vec::new();
        push_rfc3339(&mut s, ns, 9);
        assert_eq!(s, crate::timefmt::format_rfc3339_ns(ns).as_bytes());
        s.clear();
        push_apache_time(&mut s, ns);
        assert_eq!(s, b"29/Feb/2024:23:59:59 +0000");
        // The per-second cache must follow the time across seconds and days.
        let mut cache = SecondCache::default();
        for i in 0..5000i64 {
            let t = ns + i * 37_777_777_777;
            s.clear();
            push_rfc3339_cached::<9>(&mut s, &mut cache, t);
            assert_eq!(s, crate::timefmt::format_rfc3339_ns(t).as_bytes());
        }
    }

    #[test]
    fn line_bytes_sets_the_length() {
        for format in [
            Format::Looker,
            Format::ApacheCommon,
            Format::Json,
            Format::Syslog,
        ] {
            for c in [
                Compressibility::Min,
                Compressibility::Medium,
                Compressibility::Max,
            ] {
                let mut s = spec(format);
                s.line_bytes = 500;
                s.compressibility = c;
                for (l, _) in lines(s, 200) {
                    // Padding fills exactly; the query form adds "&q=".
                    assert!(
                        (500..=503).contains(&l.len()),
                        "{format:?} {c:?} {}",
                        l.len()
                    );
                }
            }
        }
    }

    fn gzip_ratio(c: Compressibility) -> f64 {
        let mut s = spec(Format::Looker);
        s.line_bytes = 1000;
        s.compressibility = c;
        let mut raw = Vec::new();
        for (l, _) in lines(s, 2000) {
            raw.extend_from_slice(l.as_bytes());
            raw.push(b'\n');
        }
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).unwrap();
        let packed = z.finish().unwrap();
        raw.len() as f64 / packed.len() as f64
    }

    #[test]
    fn compressibility_levels_give_distinct_gzip_ratios() {
        let (min, med, max) = (
            gzip_ratio(Compressibility::Min),
            gzip_ratio(Compressibility::Medium),
            gzip_ratio(Compressibility::Max),
        );
        assert!(min < 1.6, "min {min}");
        assert!(med > 1.6 && med < 10.0, "medium {med}");
        assert!(max > 10.0, "max {max}");
    }

    /// What a reader of the line can see, independently of the generator's
    /// own bookkeeping.
    fn looks_bad(l: &str) -> bool {
        let ip_bad = l
            .split([' ', '=', '"'])
            .filter(|t| t.split('.').count() == 4 && t.split('.').all(|o| o.parse::<u32>().is_ok()))
            .any(|t| t.split('.').any(|o| o.parse::<u32>().unwrap_or(0) > 255));
        let status_bad = l
            .split_once("status=")
            .and_then(|(_, r)| r.split(' ').next())
            .and_then(|s| s.parse::<u16>().ok())
            .is_some_and(|s| !is_plausible_status(s));
        let junk = l.chars().any(|c| JUNK.contains(&c));
        ip_bad || status_bad || junk || l.len() > OVERLONG_MIN
    }

    #[test]
    fn bad_data_proportion_is_roughly_right_and_visible() {
        for pct in [0.0, 0.05, 0.3] {
            let mut s = spec(Format::Looker);
            s.bad_data = pct;
            let all = lines(s, 10_000);
            let flagged = all.iter().filter(|(_, b)| b.is_some()).count();
            let visible = all.iter().filter(|(l, _)| looks_bad(l)).count();
            assert_eq!(
                flagged, visible,
                "every corruption shows, nothing else does"
            );
            let frac = visible as f64 / all.len() as f64;
            assert!((frac - pct).abs() < 0.02, "{pct}: {frac}");
        }
    }

    #[test]
    fn multiline_entries_look_like_stack_traces() {
        let mut s = spec(Format::Logfmt);
        s.multiline = 0.2;
        let all = lines(s, 5000);
        let multi: Vec<_> = all.iter().filter(|(l, _)| l.contains('\n')).collect();
        let frac = multi.len() as f64 / all.len() as f64;
        assert!((0.17..0.23).contains(&frac), "{frac}");
        for (l, _) in multi {
            assert!(l.lines().count() >= 5, "{l}");
            assert!(l.lines().skip(2).all(|f| f.starts_with("\tat ")), "{l}");
        }
    }
}
