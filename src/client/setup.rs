//! `setup`: git's configuration for the helper, and `--undo`.

use super::*;

/// The helper for git: this executable's absolute path, as found on `PATH` when it is there
/// (a stable symlink such as `~/.cargo/bin/…` or `/opt/homebrew/bin/…` survives upgrades). With
/// a path, git starts the helper directly; with a bare name (`azdo`) it would start a second
/// git to find it, one process more on every request.
pub(super) fn helper_value() -> String {
    let exe = std::env::current_exe().ok();
    let real = exe.as_ref().and_then(|e| std::fs::canonicalize(e).ok());
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(NAME))
            .find(|c| real.is_some() && std::fs::canonicalize(c).ok() == real)
    });
    match on_path.or(exe) {
        Some(p) => git_quote(&p.display().to_string()),
        None => "azdo".into(),
    }
}

/// A path as git's helper string: git runs it through the shell when it holds special
/// characters, so those are single-quoted.
pub(super) fn git_quote(path: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._+-,:@".contains(c);
    if path.chars().all(plain) {
        path.to_string()
    } else {
        format!("'{}'", path.replace('\'', "'\\''"))
    }
}

/// Whether a configured helper value is this helper (by name or path).
pub(super) fn is_ours(v: &str) -> bool {
    let v = v.trim_matches('\'');
    v == "azdo" || v.ends_with(NAME)
}

/// The URLs setup configures: the built-in hosts and those listed in the configuration.
/// The second value says whether git must send the path (the organization is in it).
pub(super) fn setup_urls() -> Vec<(String, bool)> {
    let mut urls = vec![
        ("https://dev.azure.com".to_string(), true),
        ("https://*.visualstudio.com".to_string(), false),
    ];
    if let Ok(hosts) = crate::config::Config::hosts_default() {
        urls.extend(hosts.iter().map(|h| (format!("https://{h}"), true)));
    }
    urls
}

pub(super) fn git_config(scope: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("git")
        .arg("config")
        .arg(scope)
        .args(args)
        .output()
}

/// Sets git up to use this helper for Azure DevOps (idempotent), or undoes it.
pub fn setup_command(scope: &str, undo: bool, out: &mut impl Write) -> Result<ExitCode, Error> {
    let helper = helper_value();
    let mut changed = Vec::new();
    let urls = setup_urls();
    for (url, _) in &urls {
        let key = format!("credential.{url}.helper");
        let current = match git_config(scope, &["--get-all", &key]) {
            Ok(o) => String::from_utf8_lossy(&o.stdout).to_string(),
            Err(e) => return Err(Error::Git(e)),
        };
        let has = current.lines().any(is_ours);
        if undo {
            if has {
                // Remove our entry and the empty entry we put before it; leave others.
                let _ = git_config(
                    scope,
                    &["--unset-all", &key, "^(azdo|.*git-credential-azdo'?|)$"],
                );
                changed.push(format!("removed {key}"));
            }
        } else if has {
            // Set up before (by name, or from another place): point it at this executable.
            if !current.lines().any(|l| l == helper) {
                let ours = "^(azdo|.*git-credential-azdo'?)$";
                if let Err(e) = git_config(scope, &["--replace-all", &key, &helper, ours]) {
                    return Err(Error::Git(e));
                }
                changed.push(format!("{key} = {helper}"));
            }
        } else {
            // An empty value first: helpers configured for all hosts are not asked for
            // Azure DevOps (a stale PAT in `store` would otherwise win).
            for v in ["", helper.as_str()] {
                if let Err(e) = git_config(scope, &["--add", &key, v]) {
                    return Err(Error::Git(e));
                }
            }
            changed.push(format!("{key} = {helper}"));
        }
    }
    for (url, _) in urls.iter().filter(|(_, path)| *path) {
        let key = format!("credential.{url}.useHttpPath");
        let key = key.as_str();
        if undo {
            if git_config(scope, &["--get", key]).is_ok_and(|o| o.status.success()) {
                let _ = git_config(scope, &["--unset-all", key]);
                changed.push(format!("removed {key}"));
            }
        } else if !git_config(scope, &["--get", key])
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
        {
            let _ = git_config(scope, &["--replace-all", key, "true"]);
            changed.push(format!("{key} = true"));
        }
    }
    if changed.is_empty() {
        let _ = writeln!(out, "git is already set up ({scope}); nothing changed.");
    } else {
        for c in &changed {
            let _ = writeln!(out, "{scope}: {c}");
        }
    }
    if !undo {
        let _ = writeln!(
            out,
            "Next: {NAME} login --org ORG (or just git clone https://dev.azure.com/ORG/PROJECT/_git/REPO)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_paths_are_quoted_for_git_only_when_needed() {
        assert_eq!(
            git_quote("/home/u/.cargo/bin/git-credential-azdo"),
            "/home/u/.cargo/bin/git-credential-azdo"
        );
        assert_eq!(
            git_quote("/Users/A B/bin/git-credential-azdo"),
            "'/Users/A B/bin/git-credential-azdo'"
        );
        assert!(is_ours("'/Users/A B/bin/git-credential-azdo'"));
        assert!(is_ours("azdo") && !is_ours("manager"));
    }
}
