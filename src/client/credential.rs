//! git's operations (`get`, `store`, `erase`): the host policy, the request to the daemon, and
//! the one line a refused `get` prints.

use super::*;

/// One of git's credential operations, with its I/O passed in; an error is one line on
/// `err` ([`report`]). Exit code 0 unless the input was malformed or the daemon failed; stdout
/// only ever carries protocol lines.
pub fn credential_op(
    action: Action,
    input: impl BufRead,
    mut out: impl Write,
    mut err: impl Write,
) -> ExitCode {
    let result = run(action, input, &mut out, &mut err);
    report(result, &mut err)
}

fn run(
    action: Action,
    input: impl BufRead,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<ExitCode, Error> {
    let cred = Credential::read_from(input)?;
    let decision = policy::decide(&cred, || {
        // A configuration that cannot be read is worth a warning, not a failed `get`: the
        // built-in hosts still work.
        Config::hosts_default().unwrap_or_else(|e| {
            let _ = writeln!(err, "{NAME}: {e}");
            Vec::new()
        })
    })?;
    let target = match decision {
        Decision::NotOurs => return Ok(ExitCode::SUCCESS),
        Decision::NoOrganization { host } if action == Action::Get => {
            return Err(Error::NoOrganization { host });
        }
        Decision::NoOrganization { .. } => return Ok(ExitCode::SUCCESS),
        Decision::Serve(t) => t,
    };
    match action {
        Action::Get => get(&cred, &target, out, err),
        Action::Erase => {
            let token = cred.credential.clone().or_else(|| cred.password.clone());
            let req = Request::Erase {
                org: target.org.clone(),
                host: target.host.clone(),
                token,
                wwwauth: cred.wwwauth,
            };
            // No daemon, no cached token: nothing to erase. A token refused for good is told.
            match call_if_running(&req, SHORT_DEADLINE)? {
                Some(Response::Error {
                    error,
                    message,
                    retry_in,
                    fix,
                }) => Err(Error::Refused(explain(
                    error,
                    &message,
                    retry_in,
                    fix.as_deref(),
                    &target,
                ))),
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        // Tokens come from the daemon; what git would store is ours already.
        Action::Store => Ok(ExitCode::SUCCESS),
    }
}

pub(super) fn get(
    cred: &Credential,
    target: &Target,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<ExitCode, Error> {
    let authtype = cred.has_capability("authtype");
    let req = Request::Get {
        org: target.org.clone(),
        env: crate::launch::identity_variables(),
        authtype,
        // Which git asks matters only to one that can take Bearer.
        git: authtype.then(GitInstall::of_caller).flatten(),
    };
    let mut resp = call(&req, GET_DEADLINE);
    // No account yet, and a person at the terminal: sign in, then ask again. Otherwise the
    // refusal is explained below like any other.
    if let Ok(Response::Error {
        error: ErrorKind::NeedsLogin,
        message,
        ..
    }) = &resp
        && interactive()
    {
        let _ = writeln!(err, "{NAME}: {message}; signing in now.");
        sign_in(target, None, cred.wwwauth.clone(), Method::Auto, None, err)?;
        resp = call(&req, GET_DEADLINE);
    }
    match resp {
        Ok(Response::Token {
            token,
            expires_at,
            scheme,
        }) => {
            cred.answer(&token, expires_at, scheme)
                .write_to(&mut *out)?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(Response::Error {
            error,
            message,
            retry_in,
            fix,
        }) => {
            let line = explain(error, &message, retry_in, fix.as_deref(), target);
            Err(Error::Refused(line))
        }
        Ok(other) => Err(Error::Unexpected(kind_of(&other))),
        Err(e) => Err(e.into()),
    }
}

/// The line a refused `get` prints: the daemon's message, then what happens next or what to
/// do, decided from the error's kind, `retry_in` and `fix` (never from the message's words).
pub(super) fn explain(
    error: ErrorKind,
    message: &str,
    retry_in: Option<u64>,
    fix: Option<&str>,
    target: &Target,
) -> String {
    let then = match (error, retry_in, fix) {
        (_, _, Some(fix)) => format!(". {fix}"),
        (_, Some(secs), None) => format!("; the daemon tries again by itself in {secs} s"),
        (ErrorKind::NeedsLogin, None, None) => {
            format!(". Sign in with: {NAME} login --org {}", target.org)
        }
        (ErrorKind::Unavailable, None, None) => {
            ". Cached tokens are used while they last; try again shortly".into()
        }
        _ => return message.to_string(),
    };
    // Entra's sentences end with a full stop; what follows brings its own.
    super::then(message, &then)
}

/// May we wait for a person? Not with `GIT_TERMINAL_PROMPT=0`, `credential.interactive=false`,
/// or without a terminal.
pub(super) fn interactive() -> bool {
    // Cheapest checks first: most non-interactive runs stop before starting a git process.
    if std::env::var_os("GIT_TERMINAL_PROMPT").is_some_and(|v| v == "0")
        || !std::io::stderr().is_terminal()
        || std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .is_err()
    {
        return false;
    }
    let configured = std::process::Command::new("git")
        .args(["config", "--get", "credential.interactive"])
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    !matches!(configured.as_str(), "false" | "no" | "off" | "0" | "never")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(error: ErrorKind, message: &str, retry_in: Option<u64>, fix: Option<&str>) -> String {
        let target = Target {
            org: "contoso".into(),
            host: "dev.azure.com".into(),
        };
        explain(error, message, retry_in, fix, &target)
    }

    /// What follows the daemon's message comes from the error's fields: the same message
    /// (even one that mentions a command or "by itself") gets the same ending for the same fields.
    #[test]
    fn the_line_is_decided_by_kind_retry_and_fix_never_by_the_words() {
        let m = "Entra ID answered 503 (run login --org x by itself).";
        assert_eq!(
            line(ErrorKind::Unavailable, m, Some(7), None),
            "Entra ID answered 503 (run login --org x by itself); the daemon tries again by itself in 7 s"
        );
        assert_eq!(
            line(ErrorKind::Unavailable, m, None, None),
            "Entra ID answered 503 (run login --org x by itself). Cached tokens are used while they last; try again shortly"
        );
        assert_eq!(
            line(ErrorKind::NeedsLogin, m, None, None),
            "Entra ID answered 503 (run login --org x by itself). Sign in with: git-credential-azdo login --org contoso"
        );
        assert_eq!(
            line(
                ErrorKind::NeedsLogin,
                "refused.",
                None,
                Some("Connect it again with: X")
            ),
            "refused. Connect it again with: X"
        );
        assert_eq!(line(ErrorKind::Denied, m, None, None), m);
        // One full stop between the message and what follows, whatever the message ends with.
        assert_eq!(
            line(
                ErrorKind::NeedsLogin,
                "issued on '2026-09-05T03:27:11Z'. \r\n",
                None,
                None
            ),
            "issued on '2026-09-05T03:27:11Z'. Sign in with: git-credential-azdo login --org contoso"
        );
        assert_eq!(line(ErrorKind::BadRequest, "bad", None, None), "bad");
    }
}
