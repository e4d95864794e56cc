//! `doctor`: the client's own checks (git, its configuration, the socket directory), then the
//! daemon's.

use super::*;

/// The configuration file as the daemon will read it, and whether this environment's identity
/// variables would be used (a build agent with `AZURE_*` set and no identity configured gets
/// no token, and no person is there to sign in).
fn configuration_checks() -> Vec<crate::daemon_protocol::Check> {
    use crate::daemon_protocol::Check;
    let path = crate::paths::config_path();
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                "configuration",
                e.to_string(),
                format!(
                    "correct {} (docs/configuration.md lists every setting)",
                    path.display()
                ),
            )];
        }
    };
    let mut checks = vec![Check::pass(
        "configuration",
        match path.exists() {
            true => format!("{} is valid", path.display()),
            false => format!("no {} (the defaults)", path.display()),
        },
    )];
    let vars = crate::launch::identity_variables();
    let set: Vec<&str> = vars.keys().map(String::as_str).collect();
    let org = org_from_origin().map(|t| t.org).unwrap_or_default();
    if let Some(fix) = config.identity_fix(&org, &set) {
        checks.push(Check::fail(
            "machine identity",
            "identity variables are set, but nothing uses them",
            fix,
        ));
    }
    checks
}

/// The client's half of `doctor` (git, configuration, socket directory, daemon version),
/// then the daemon's (secret store, reachability, each organization's token).
pub fn doctor_command(json: bool, out: &mut impl Write) -> Result<ExitCode, Error> {
    use crate::daemon_protocol::Check;
    let mut checks = Vec::new();
    let git = Command::new("git").arg("--version").output();
    checks.push(match git {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            // Which answer it gets is the daemon's to say ("answer to git").
            Check::pass("git", v)
        }
        _ => Check::fail("git", "git is not on PATH", "install git"),
    });
    let exec_path = Command::new("git")
        .arg("--exec-path")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let helpers = Command::new("git")
        .args([
            "config",
            "--get-all",
            "credential.https://dev.azure.com.helper",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let use_path = Command::new("git")
        .args([
            "config",
            "--get",
            "credential.https://dev.azure.com.useHttpPath",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let ours = helpers.lines().any(is_ours);
    checks.push(if ours && use_path == "true" {
        Check::pass(
            "git configuration",
            "helper and useHttpPath set for https://dev.azure.com",
        )
    } else {
        Check::fail(
            "git configuration",
            "git is not set up to use this helper for https://dev.azure.com",
            format!("{NAME} setup"),
        )
    });
    checks.push(socket_dir_check());
    checks.extend(configuration_checks());
    match call(&Request::Ping, SHORT_DEADLINE) {
        Ok(Response::Pong { version, pid, .. })
            if version == crate::daemon_protocol::PACKAGE_VERSION =>
        {
            checks.push(Check::pass(
                "daemon",
                format!("version {version}, pid {pid}"),
            ));
            match call(
                &Request::Doctor {
                    env: crate::launch::identity_variables(),
                    git: crate::answer::GitInstall::at(&exec_path),
                },
                Duration::from_secs(120),
            ) {
                Ok(Response::Doctor { checks: theirs }) => checks.extend(theirs),
                Ok(other) => checks.push(Check::fail(
                    "daemon checks",
                    format!("unexpected answer: {}", kind_of(&other)),
                    format!("{NAME} stop, then run doctor again"),
                )),
                Err(e) => checks.push(Check::fail(
                    "daemon checks",
                    e.to_string(),
                    "see the daemon log",
                )),
            }
        }
        Ok(other) => checks.push(Check::fail(
            "daemon",
            format!("unexpected answer: {}", kind_of(&other)),
            format!("{NAME} stop"),
        )),
        Err(e) => checks.push(Check::fail(
            "daemon",
            e.to_string(),
            format!("read {}", crate::paths::log_path().display()),
        )),
    }
    let all_ok = checks.iter().all(|c| c.ok);
    if json {
        let _ = serde_json::to_writer_pretty(&mut *out, &checks);
        let _ = writeln!(out);
    } else {
        for c in &checks {
            let mark = if c.ok { "✓" } else { "✗" };
            let _ = writeln!(out, "{mark} {}: {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "    fix: {fix}");
            }
        }
    }
    if all_ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Error::Usage("some checks failed".into()))
    }
}

/// The socket directory is ours and private (when it exists yet).
pub(super) fn socket_dir_check() -> crate::daemon_protocol::Check {
    use crate::daemon_protocol::Check;
    use crate::paths::NotPrivate;
    let dir = crate::paths::runtime_dir();
    match crate::paths::check_private_dir(&dir) {
        Err(_) => Check::pass(
            "socket directory",
            format!("{} (created on first use)", dir.display()),
        ),
        Ok(Err(NotPrivate::NotOurs)) => Check::fail(
            "socket directory",
            format!("{} is not a directory owned by you", dir.display()),
            format!("remove {} and run again", dir.display()),
        ),
        Ok(Err(NotPrivate::OpenToOthers(mode))) => Check::fail(
            "socket directory",
            format!("{} has mode {mode:o}", dir.display()),
            format!("chmod 700 {}", dir.display()),
        ),
        Ok(Ok(())) => Check::pass(
            "socket directory",
            format!("{} (0700, yours)", dir.display()),
        ),
    }
}
