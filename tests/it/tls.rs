//! TLS options against an https endpoint on loopback: a CA made for the
//! test signs the server's certificate; the endpoint (Python's ssl module,
//! answering 204 to every POST) only has to complete handshakes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::util::*;

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=looker test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

const SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.timeout = 60
s.serve_forever()
"#;

struct Https(Child, u16);

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn https_server(dir: &Path) -> Https {
    let mut child = Command::new("python3")
        .args([
            "-c",
            SERVER,
            s(&dir.join("srv.pem")),
            s(&dir.join("srv.key")),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is installed");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().expect("the server prints its port");
    Https(child, port)
}

#[test]
fn https_targets_need_the_ca_file_or_an_explicit_skip() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let srv = https_server(dir.path());
    let url = format!("https://127.0.0.1:{}", srv.1);
    let input = gen(&[
        "--seed",
        "1",
        "--start-time",
        "2024-01-01T00:00:00Z",
        "--n-series",
        "2",
        "--count",
        "100",
    ]);
    let ca = dir.path().join("ca.pem");
    let ok = push(&["--loki", &url, "--ca-file", s(&ca), "-q"], &input);
    assert!(
        ok.status.success(),
        "trusted through --ca-file: {}",
        stderr(&ok)
    );
    let untrusted = push(&["--loki", &url, "--retry-deadline", "200ms", "-q"], &input);
    assert_eq!(
        untrusted.status.code(),
        Some(2),
        "an unknown CA is refused: {}",
        stderr(&untrusted)
    );
    let skipped = push(&["--loki", &url, "--insecure-skip-verify", "-q"], &input);
    assert!(skipped.status.success(), "{}", stderr(&skipped));
}
