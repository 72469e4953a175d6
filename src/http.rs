//! HTTP client settings shared by `looker-push` and `looker-verify`:
//! tenancy, auth, extra headers and TLS. Secrets are read from files and
//! never printed: `Debug` and `describe()` redact them.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

#[derive(Debug, thiserror::Error)]
pub enum HttpConfigError {
    #[error("{flag} {path}: {source}")]
    ReadFile {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {path}: file is empty")]
    EmptyFile { flag: &'static str, path: PathBuf },
    #[error("--header {0:?}: expected Name:Value with a valid header name and value")]
    BadHeader(String),
    #[error("--basic-auth-user needs --basic-auth-password-file")]
    MissingPassword,
    #[error("--tenant {0:?}: invalid tenant ID: Loki, Mimir and Cortex take at most 150 of the characters a-z A-Z 0-9 ! - _ . * ' ( ), and not \".\" or \"..\"")]
    BadTenant(String),
    #[error("--ca-file {path}: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("building the HTTP client: {0}")]
    Client(String),
}

/// Client settings as given on the command line.
#[derive(Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// Tenant ID, sent as X-Scope-OrgID (Loki, Cortex, Mimir).
    #[arg(long, value_name = "ID")]
    pub tenant: Option<String>,
    /// File holding a bearer token (sent as Authorization: Bearer ...).
    #[arg(long, value_name = "FILE")]
    pub bearer_token_file: Option<PathBuf>,
    /// User for HTTP basic auth; the password comes from --basic-auth-password-file.
    #[arg(long, value_name = "USER")]
    pub basic_auth_user: Option<String>,
    /// File holding the basic-auth password.
    #[arg(long, value_name = "FILE")]
    pub basic_auth_password_file: Option<PathBuf>,
    /// Extra request header, Name:Value (repeatable).
    #[arg(long = "header", value_name = "K:V")]
    pub headers: Vec<String>,
    /// PEM file with CA certificates to trust for https URLs.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify the server's TLS certificate.
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Timeout of one HTTP request.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_dur)]
    pub timeout: Duration,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::timefmt::parse_duration(s).map_err(|e| e.to_string())
}

impl std::fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientArgs")
            .field("tenant", &self.tenant)
            .field("bearer_token_file", &self.bearer_token_file)
            .field("basic_auth_user", &self.basic_auth_user)
            .field("headers", &self.headers.len())
            .field("ca_file", &self.ca_file)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

fn read_secret(flag: &'static str, path: &PathBuf) -> Result<String, HttpConfigError> {
    let s = std::fs::read_to_string(path).map_err(|source| HttpConfigError::ReadFile {
        flag,
        path: path.clone(),
        source,
    })?;
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(HttpConfigError::EmptyFile {
            flag,
            path: path.clone(),
        });
    }
    Ok(s)
}

/// Builds a client that sends the configured headers on every request.
pub fn build_client(
    args: &ClientArgs,
    user_agent: &str,
) -> Result<reqwest::Client, HttpConfigError> {
    let mut headers = HeaderMap::new();
    if let Some(t) = &args.tenant {
        // The tenant ID rules Loki, Mimir and Cortex share (dskit's
        // `tenant.ValidTenantID`): anything else is refused by the store
        // on every request.
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b);
        if t.is_empty() || t.len() > 150 || t == "." || t == ".." || !t.bytes().all(allowed) {
            return Err(HttpConfigError::BadTenant(t.clone()));
        }
        let v = HeaderValue::from_str(t).map_err(|_| HttpConfigError::BadTenant(t.clone()))?;
        headers.insert(HeaderName::from_static("x-scope-orgid"), v);
    }
    if let Some(p) = &args.bearer_token_file {
        let token = read_secret("--bearer-token-file", p)?;
        let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            HttpConfigError::BadHeader(
                "--bearer-token-file content is not a valid header value".into(),
            )
        })?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    match (&args.basic_auth_user, &args.basic_auth_password_file) {
        (Some(user), Some(pfile)) => {
            let pass = read_secret("--basic-auth-password-file", pfile)?;
            let mut v = HeaderValue::from_str(&format!(
                "Basic {}",
                base64_encode(format!("{user}:{pass}").as_bytes())
            ))
            .map_err(|_| HttpConfigError::BadHeader("basic auth".into()))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        (Some(_), None) => return Err(HttpConfigError::MissingPassword),
        _ => {}
    }
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| HttpConfigError::BadHeader(h.clone()))?;
        let name = HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| HttpConfigError::BadHeader(h.clone()))?;
        let value =
            HeaderValue::from_str(v.trim()).map_err(|_| HttpConfigError::BadHeader(h.clone()))?;
        headers.append(name, value);
    }
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .default_headers(headers)
        .timeout(args.timeout)
        .connect_timeout(args.timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(64)
        // Never follow redirects: a POST re-sent as a GET drops its body,
        // and the target's answer must come from the URL given.
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(args.insecure_skip_verify);
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).map_err(|source| HttpConfigError::ReadFile {
            flag: "--ca-file",
            path: path.clone(),
            source,
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| HttpConfigError::BadCa {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(HttpConfigError::BadCa {
                path: path.clone(),
                reason: "no PEM certificates found".into(),
            });
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| HttpConfigError::Client(e.to_string()))
}

/// A URL safe to print or record: user info and query string removed.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(i.as_bytes()), o);
        }
    }

    #[test]
    fn redaction_drops_credentials() {
        let r = redact_url("http://user:secret@host:3100/loki/api/v1/push?token=abc");
        assert!(
            !r.contains("secret") && !r.contains("abc") && !r.contains("user"),
            "{r}"
        );
    }

    #[test]
    fn tenant_ids_follow_the_stores_rules() {
        let with = |t: &str| ClientArgs {
            tenant: Some(t.into()),
            ..Default::default()
        };
        for ok in ["team-a", "Team_1.prod", "a!b*c'(d)", &"x".repeat(150)] {
            assert!(build_client(&with(ok), "t").is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a|b",
            "a/b",
            "a:b",
            "été",
            &"x".repeat(151),
        ] {
            let err = build_client(&with(bad), "t").unwrap_err().to_string();
            assert!(err.contains("invalid tenant ID"), "{bad}: {err}");
        }
    }

    #[test]
    fn missing_token_file_names_flag_and_path() {
        let args = ClientArgs {
            bearer_token_file: Some("/nonexistent/token".into()),
            ..Default::default()
        };
        let err = build_client(&args, "t").unwrap_err().to_string();
        assert!(
            err.contains("--bearer-token-file /nonexistent/token"),
            "{err}"
        );
    }
}
