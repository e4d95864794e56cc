//! The client: what git runs (`get`, `store`, `erase`) and the user's command line (`login`,
//! `logout`, `status`, `setup`, `doctor`, `stop`), one file per command. Synchronous,
//! std-only, quick to start; all network work happens in the daemon. This file holds what the
//! commands share: the deadlines and the name every line starts with; `error.rs` prints a
//! command's error.

mod connect;
mod credential;
mod doctor;
mod error;
mod login;
mod process;
mod setup;
mod status;

pub use connect::{ConnectError, call, call_if_running};
pub use credential::credential_op;
pub use doctor::doctor_command;
pub use error::{Error, report};
pub use login::{AppArgs, Method, SecretSource, login_command, logout_command};
pub use setup::setup_command;
pub use status::{status_command, stop_command};

use login::*;
use setup::*;

use crate::answer::GitInstall;
use crate::config::Config;
use crate::daemon_protocol::{AppLogin, ErrorKind, Request, Response, StatusView};
use crate::git_credential::{Action, Credential};
use crate::policy::{self, Decision, Target};
use std::io::{BufRead, IsTerminal, Write};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Deadline for a `get`: a refresh on the daemon's side is bounded well below this.
const GET_DEADLINE: Duration = Duration::from_secs(45);
const SHORT_DEADLINE: Duration = Duration::from_secs(10);

/// Prefix of every line the client writes to stderr.
pub const NAME: &str = "git-credential-azdo";

/// `message` followed by `rest` (". Sign in with: …", "; the daemon tries again …"), with
/// the message's own closing full stop (and trailing space) dropped: one full stop between.
pub(crate) fn then(message: &str, rest: &str) -> String {
    format!("{}{rest}", message.trim_end().trim_end_matches('.'))
}

/// The name of a response's kind, for "unexpected answer" messages.
pub fn kind_of(r: &Response) -> &'static str {
    match r {
        Response::Token { .. } => "token",
        Response::DeviceCode { .. } => "device_code",
        Response::BrowserSignIn { .. } => "browser_sign_in",
        Response::AppSignIn { .. } => "app_sign_in",
        Response::LoggedIn { .. } => "logged_in",
        Response::Status(_) => "status",
        Response::Doctor { .. } => "doctor",
        Response::Pong { .. } => "pong",
        Response::Done => "done",
        Response::VersionMismatch { .. } => "version_mismatch",
        Response::Error { .. } => "error",
    }
}
