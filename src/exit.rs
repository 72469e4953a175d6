//! Process exit codes shared by the three tools. They are part of the
//! command-line contract and listed in the README.

use std::process::ExitCode;

/// What a run ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked (push: every fragment acknowledged; verify: the
    /// store holds exactly what the manifests acknowledged).
    Ok = 0,
    /// A negative verdict: push had fragments that were rejected, failed or
    /// left unknown; verify found discrepancies.
    Discrepancy = 1,
    /// The tool could not do its job: bad flags, bad input, network or auth.
    Error = 2,
    /// Stopped by SIGINT or SIGTERM after finishing or recording in-flight work.
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// An error and its causes on one line, `a: b: c`, leaving out a cause
/// whose text the message already ends with (typed errors often include
/// their source in their own message).
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.ends_with(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Outer {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn describe_does_not_repeat_causes() {
        let e = Outer {
            path: "/x",
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(describe(&e), "reading /x: no such file");
        let wrapped = anyhow::Error::new(e).context("--manifest");
        assert_eq!(
            describe(wrapped.as_ref()),
            "--manifest: reading /x: no such file"
        );
    }

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(Exit::Ok as u8, 0);
        assert_eq!(Exit::Discrepancy as u8, 1);
        assert_eq!(Exit::Error as u8, 2);
        assert_eq!(Exit::Interrupted as u8, 130);
    }
}
