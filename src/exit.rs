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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(Exit::Ok as u8, 0);
        assert_eq!(Exit::Discrepancy as u8, 1);
        assert_eq!(Exit::Error as u8, 2);
        assert_eq!(Exit::Interrupted as u8, 130);
    }
}
