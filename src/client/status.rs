//! `status` (human or `--json`) and `stop`.

use super::*;

pub(super) fn when(unix: u64) -> String {
    let now = crate::clock::unix_secs();
    if unix > now {
        format!("in {}", human(unix - now))
    } else {
        format!("{} ago", human(now - unix))
    }
}

/// `Mon, 23 Nov 2026 09:41:00 GMT`.
pub(super) fn utc_date(unix: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(unix))
}

pub(super) fn human(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn status_command(json: bool, out: &mut impl Write) -> Result<ExitCode, Error> {
    let view: StatusView = match call(&Request::Status, SHORT_DEADLINE) {
        Ok(Response::Status(v)) => v,
        Ok(Response::Error { message, fix, .. }) => {
            return Err(Error::Daemon {
                context: None,
                message,
                fix,
            });
        }
        Ok(other) => return Err(Error::Unexpected(kind_of(&other))),
        Err(e) => return Err(e.into()),
    };
    if json {
        let _ = serde_json::to_writer_pretty(&mut *out, &view);
        let _ = writeln!(out);
        return Ok(ExitCode::SUCCESS);
    }
    let _ = writeln!(
        out,
        "daemon {} (pid {}); refresh tokens: {}",
        view.daemon_version, view.pid, view.store
    );
    if view.machine_identities > 0 {
        let _ = writeln!(
            out,
            "machine identities in memory: {} (each dropped after 30 minutes unused)",
            view.machine_identities
        );
    }
    if view.orgs.is_empty() {
        let _ = writeln!(
            out,
            "no organization connected; run: {NAME} login --org ORG"
        );
    }
    for o in &view.orgs {
        let a = &o.account;
        let _ = writeln!(out, "\n{}", o.org);
        let who = match (&a.name, &a.upn) {
            (Some(n), Some(u)) => format!("{n} <{u}>"),
            (Some(n), None) => n.clone(),
            (None, Some(u)) => format!("<{u}>"),
            (None, None) => String::new(),
        };
        if !who.is_empty() {
            let _ = writeln!(out, "  account    {who}");
        }
        if !a.tenant.is_empty() {
            let _ = writeln!(out, "  tenant     {}", a.tenant);
        }
        let _ = writeln!(out, "  identity   {}", o.identity);
        // A machine identity is not connected by anyone: it serves as long as it is configured.
        if o.connected_at > 0 {
            let _ = writeln!(
                out,
                "  connected  {} ({}){}",
                utc_date(o.connected_at),
                when(o.connected_at),
                o.connected_by
                    .as_ref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "  token      {}",
            o.access_token_expires_at
                .map(|e| format!("expires {}", when(e)))
                .unwrap_or_else(|| "none cached".into())
        );
        if let Some(last) = o.last_refresh_at {
            let _ = writeln!(
                out,
                "  refreshed  {}: {}",
                when(last),
                o.last_refresh_outcome.clone().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops the daemon: asks it, or, when it does not answer (stopped, or hung), ends the
/// process the pid file names once it is checked to be this user's daemon.
pub fn stop_command(err: &mut impl Write) -> Result<ExitCode, Error> {
    match call_if_running(&Request::Shutdown, STOP_DEADLINE) {
        Ok(None) => {
            let _ = writeln!(err, "no daemon is running");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Some(_)) => {
            let _ = writeln!(err, "daemon stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (ConnectError::Stopped { .. } | ConnectError::Timeout(_))) => {
            match super::process::running() {
                Some(pid) if super::process::end(pid) => {
                    let _ = writeln!(err, "the daemon (pid {pid}) was not answering; ended it");
                    Ok(ExitCode::SUCCESS)
                }
                _ => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// How long `stop` waits for the daemon to answer before ending it.
const STOP_DEADLINE: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(utc_date(1_795_430_460), "Mon, 23 Nov 2026 10:41:00 GMT");
    }
}
