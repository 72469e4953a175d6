//! Real Prometheus and VictoriaMetrics servers on loopback, one per test.
//!
//! Each server gets a fresh port and data directory so tests never share
//! state (a sample pushed by one test would make another's samples out of
//! order on Prometheus). The processes die with their handle.
//!
//! The binaries come from the Debian packages `prometheus` and
//! `victoria-metrics` (`tests/servers/install.sh`); `LOOKER_PROMETHEUS_BIN`
//! and `LOOKER_VM_BIN` point the harness at other builds.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to become ready. Both start in well under a
/// second on an idle machine; the margin is for a CI box busy compiling.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Attempts at a fresh port when another process grabbed ours between
/// `free_port` and the server binding it.
const BIND_ATTEMPTS: usize = 5;

/// A port that was free a moment ago. Another process may still take it
/// before the caller binds it, so servers started on it retry on a new one.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A Prometheus server with the remote-write receiver and admin API enabled.
pub struct Prometheus {
    server: Server,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port and waits until `/-/ready`.
    /// Panics if the binary is missing or the server does not come up.
    pub fn start() -> Prometheus {
        let bin = find_binary("LOOKER_PROMETHEUS_BIN", &["prometheus"], "prometheus");
        let server = Server::start("prometheus", &bin, |dir, port| {
            // No scrape jobs: the only data in the TSDB is what a test pushes.
            let config = dir.join("prometheus.yml");
            std::fs::write(&config, "global:\n  scrape_interval: 1m\n")
                .expect("write prometheus.yml");
            let mut cmd = Command::new(&bin);
            cmd.arg("--config.file")
                .arg(&config)
                .arg("--storage.tsdb.path")
                .arg(dir.join("data"))
                // Blocks older than the default 15d would be deleted under
                // tests that push old timestamps.
                .arg("--storage.tsdb.retention.time=100y")
                .arg("--web.listen-address")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver")
                .arg("--web.enable-admin-api");
            cmd
        });
        Prometheus { server }
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The last lines the server logged, for assertion messages.
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }
}

/// A single-node VictoriaMetrics server.
pub struct VictoriaMetrics {
    server: Server,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics on a free loopback port and waits until
    /// `/health`. Panics if the binary is missing or the server does not
    /// come up.
    pub fn start() -> VictoriaMetrics {
        // `victoria-metrics-prod` is the name in upstream release tarballs.
        let bin = find_binary(
            "LOOKER_VM_BIN",
            &["victoria-metrics", "victoria-metrics-prod"],
            "victoria-metrics",
        );
        let server = Server::start("victoria-metrics", &bin, |dir, port| {
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!("-storageDataPath={}", dir.join("data").display()))
                // The default 1 month silently drops older samples.
                .arg("-retentionPeriod=100y")
                // Queries must see data pushed a moment ago, and repeated
                // queries must not be answered from a stale cache.
                .arg("-search.disableCache")
                .arg("-search.latencyOffset=0s");
            cmd
        });
        VictoriaMetrics { server }
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Makes everything ingested so far visible to queries and export.
    pub fn force_flush(&self) {
        let (status, body) = http_get(&self.url(), "/internal/force_flush")
            .unwrap_or_else(|e| panic!("force_flush: {e}\n{}", self.log_tail()));
        assert_eq!(status, 200, "force_flush: {body}");
    }

    /// The last lines the server logged, for assertion messages.
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }
}

/// A child process with its own temp dir; killed and removed on drop.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    // Dropped after `Drop::drop` has killed the child, so the process never
    // writes into a directory that is being removed.
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(name: &str, bin: &Path, command: impl Fn(&Path, u16) -> Command) -> Server {
        let mut last_log = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix(&format!("looker-{name}-"))
                .tempdir()
                .expect("create temp dir");
            let port = free_port();
            let log = dir.path().join("server.log");
            let out = File::create(&log).expect("create server log");
            let err = out.try_clone().expect("clone log handle");
            let child = command(dir.path(), port)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut server = Server {
                child,
                port,
                log,
                _dir: dir,
            };
            match server.wait_ready(name) {
                Ok(()) => return server,
                Err(Retry) => last_log = server.log_tail(),
            }
        }
        panic!(
            "{name}: could not bind a free port in {BIND_ATTEMPTS} attempts; last log:\n{last_log}"
        );
    }

    /// Polls until the server answers its readiness check. Returns `Retry`
    /// when the port turned out to be taken; panics on any other failure.
    fn wait_ready(&mut self, name: &str) -> Result<(), Retry> {
        let deadline = Instant::now() + READY_DEADLINE;
        let url = self.url();
        let (ready_path, identity_path) = match name {
            "prometheus" => ("/-/ready", "/api/v1/status/flags"),
            _ => ("/health", "/metrics"),
        };
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let tail = self.log_tail();
                if tail.contains("address already in use") {
                    return Err(Retry);
                }
                panic!("{name} exited with {status} before it was ready:\n{tail}");
            }
            if let Ok((200, _)) = http_get(&url, ready_path) {
                // Another process may own this port (we lost the race and
                // our server is about to exit): only accept the server that
                // reports our own data directory.
                let data = self._dir.path().join("data");
                let ours = http_get(&url, identity_path)
                    .map(|(_, body)| body.contains(&*data.to_string_lossy()))
                    .unwrap_or(false);
                if ours {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{name} not ready at {url} after {READY_DEADLINE:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL: the data is thrown away, a clean shutdown only costs time.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Retry;

/// The binary from `env_var` if set, else the first of `names` on `PATH`.
fn find_binary(env_var: &str, names: &[&str], what: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env_var}={} does not exist",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .collect();
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("{what} not found: run tests/servers/install.sh (or set {env_var})");
}

/// A blocking `GET base+path` for readiness polls and simple queries:
/// returns the status code and body. `base` is `http://host:port`.
pub fn http_get(base: &str, path: &str) -> std::io::Result<(u16, String)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs"))?
        .trim_end_matches('/');
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)?
        .next()
        .ok_or_else(|| invalid("no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    // HTTP/1.0 so the answer is neither chunked nor kept alive: read to EOF.
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: */*\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("truncated response"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    Ok((status, body.to_string()))
}
