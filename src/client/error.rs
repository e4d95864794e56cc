//! The client's errors, and the one place that prints them (ripgrep's model): every command
//! returns `Result<ExitCode, Error>`, and [`report`] writes an error as one line starting with
//! the helper's name and chooses the exit code.

use super::ConnectError;
use super::NAME;
use crate::config::ConfigError;
use crate::git_credential::ProtocolError;
use crate::policy::PolicyError;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon could not be reached, started or understood.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// git's credential input was malformed, or an answer could not be written.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A `get` the daemon could not serve: the line git shows, with what happens next or what
    /// to do ([`super::credential::explain`]). git then goes on without this helper.
    #[error("{0}")]
    Refused(String),
    /// A `get` for an Azure DevOps host whose organization the URL does not name.
    #[error(
        "cannot tell the Azure DevOps organization for https://{host}/: run `{NAME} setup` (it sets credential.useHttpPath), or use a URL like https://ORG@{host}/ORG/PROJECT/_git/REPO"
    )]
    NoOrganization { host: String },
    /// The daemon refused a command; `context` says which step, `fix` what to do.
    #[error(
        "{}{}",
        context.map(|c| format!("{c}: ")).unwrap_or_default(),
        with_fix(message, fix.as_deref())
    )]
    Daemon {
        context: Option<&'static str>,
        message: String,
        fix: Option<String>,
    },
    #[error("unexpected answer from the daemon: {0}")]
    Unexpected(&'static str),
    #[error("cannot run git: {0}")]
    Git(std::io::Error),
    /// The command line or what the person typed cannot work; the message says what would.
    #[error("{0}")]
    Usage(String),
}

/// A message and the fix that follows it, as one sentence each.
fn with_fix(message: &str, fix: Option<&str>) -> String {
    match fix {
        Some(fix) => super::then(message, &format!(". {fix}")),
        None => message.to_string(),
    }
}

impl Error {
    pub(super) fn daemon(context: &'static str, message: String, fix: Option<String>) -> Error {
        Error::Daemon {
            context: Some(context),
            message,
            fix,
        }
    }

    /// Failures exit 1. A `get` the helper cannot serve exits 0, as git's credential protocol
    /// asks of a helper with nothing to give: git goes on to its other helpers or a prompt.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Refused(_) | Error::NoOrganization { .. } => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        }
    }
}

/// The one place a command's outcome becomes an exit code, and an error a line on `err`.
pub fn report(result: Result<ExitCode, Error>, err: &mut impl Write) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "{NAME}: {e}");
            e.exit_code()
        }
    }
}
