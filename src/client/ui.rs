//! The user's commands: `login` (device code, with a spinner), `logout`, `status` (human or
//! `--json`), `setup` (git configuration, and `--undo`), `stop`.

use super::{GET_DEADLINE, NAME, SHORT_DEADLINE, call, call_if_running};
use crate::daemon_protocol::{AppLogin, Request, Response, StatusView};
use crate::git_credential::Credential;
use crate::policy::{self, Decision, Target};
use std::io::{IsTerminal, Write};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

fn fail(err: &mut impl Write, msg: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(err, "{NAME}: {msg}");
    ExitCode::FAILURE
}

/// A spinner on stderr while `done` is false; silent when stderr is not a terminal.
fn spinner(
    label: String,
    expires_in: u64,
    done: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(std::thread::spawn(move || {
        let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let start = Instant::now();
        let mut i = 0;
        while !done.load(Ordering::Relaxed) {
            let left = expires_in.saturating_sub(start.elapsed().as_secs());
            eprint!(
                "\r\x1b[2K{} {label} ({}:{:02} left)",
                frames[i % frames.len()],
                left / 60,
                left % 60
            );
            i += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        eprint!("\r\x1b[2K");
    }))
}

/// How a person signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A browser when one can open here, else a device code.
    Auto,
    Browser,
    DeviceCode,
}

/// The command that opens a URL in a browser here, if any: `$BROWSER`, else the platform's
/// opener where there is a display. None on SSH sessions and headless machines.
fn browser_command() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(b) = var("BROWSER") {
        return b.split(':').next().map(str::to_string);
    }
    // Over SSH a local opener would open a browser on the wrong machine.
    if var("SSH_CONNECTION").is_some() || var("SSH_TTY").is_some() {
        return None;
    }
    if cfg!(target_os = "macos") {
        return Some("open".into());
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    if var("WSL_DISTRO_NAME").is_some() && on_path("wslview") {
        return Some("wslview".into());
    }
    let display = var("DISPLAY").is_some() || var("WAYLAND_DISPLAY").is_some();
    (display && on_path("xdg-open")).then(|| "xdg-open".into())
}

/// Runs a sign-in through the daemon, talking to the person on `err`.
pub fn sign_in(
    target: &Target,
    tenant: Option<String>,
    wwwauth: Vec<String>,
    method: Method,
    timeout: Option<u64>,
    err: &mut impl Write,
) -> Result<(), ExitCode> {
    let opener = match method {
        Method::DeviceCode => None,
        Method::Browser => match browser_command() {
            Some(b) => Some(b),
            None => {
                return Err(fail(
                    err,
                    "no browser can be opened here (set $BROWSER, or use --device-code)",
                ));
            }
        },
        Method::Auto => browser_command(),
    };
    let start = Request::LoginStart {
        org: target.org.clone(),
        host: target.host.clone(),
        tenant,
        wwwauth,
        browser: opener.is_some(),
        timeout_secs: timeout,
        app: None,
    };
    let (flow, expires_in, label) = match call(&start, GET_DEADLINE) {
        Ok(Response::DeviceCode {
            flow,
            verification_uri,
            user_code,
            expires_in,
            ..
        }) => {
            let _ = writeln!(
                err,
                "To connect Azure DevOps organization '{}', open {verification_uri} and enter the code {user_code}",
                target.org
            );
            (flow, expires_in, "Waiting for you to sign in…")
        }
        Ok(Response::BrowserSignIn {
            flow,
            url,
            expires_in,
        }) => {
            let opener = opener.unwrap_or_default();
            let _ = writeln!(
                err,
                "Opening a browser to connect Azure DevOps organization '{}'. If it does not open, visit:\n  {url}",
                target.org
            );
            let opened = Command::new(&opener)
                .arg(&url)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            if let Err(e) = opened {
                let _ = writeln!(
                    err,
                    "{NAME}: could not run {opener}: {e}; open the address above yourself"
                );
            }
            (flow, expires_in, "Waiting for the browser sign-in…")
        }
        Ok(Response::Error { message, .. }) => {
            return Err(fail(err, format!("cannot start sign-in: {message}")));
        }
        Ok(other) => return Err(fail(err, format!("unexpected answer: {}", kind_of(&other)))),
        Err(e) => return Err(fail(err, e)),
    };
    wait_for_sign_in(flow, expires_in, label, err)
}

/// Waits for the daemon to finish a sign-in, with a spinner, and says how it ended.
fn wait_for_sign_in(
    flow: String,
    expires_in: u64,
    label: &str,
    err: &mut impl Write,
) -> Result<(), ExitCode> {
    let _ = err.flush();
    let done = Arc::new(AtomicBool::new(false));
    let spin = spinner(label.into(), expires_in, done.clone());
    let result = call(
        &Request::LoginWait { flow },
        Duration::from_secs(expires_in + 30),
    );
    done.store(true, Ordering::Relaxed);
    if let Some(h) = spin {
        let _ = h.join();
    }
    report_login(result, err)
}

/// Tells the person how a sign-in ended.
fn report_login(
    result: Result<Response, super::ConnectError>,
    err: &mut impl Write,
) -> Result<(), ExitCode> {
    match result {
        Ok(Response::LoggedIn {
            org,
            account,
            store,
        }) => {
            let who = match (&account.name, &account.upn) {
                (Some(n), Some(u)) => format!("{n} <{u}>"),
                (None, Some(u)) => u.clone(),
                (Some(n), None) => n.clone(),
                (None, None) => "your account".into(),
            };
            let _ = if account.tenant.is_empty() {
                writeln!(
                    err,
                    "✓ Connected organization '{org}' as {who}. Refresh token and client secret kept in: {store}"
                )
            } else {
                writeln!(
                    err,
                    "✓ Connected organization '{org}' as {who} (tenant {}). Refresh token kept in: {store}",
                    account.tenant
                )
            };
            Ok(())
        }
        Ok(Response::Error { message, .. }) => Err(fail(err, format!("sign-in failed: {message}"))),
        Ok(other) => Err(fail(err, format!("unexpected answer: {}", kind_of(&other)))),
        Err(e) => Err(fail(err, e)),
    }
}

/// Where a legacy app's client secret comes from.
pub enum SecretSource {
    Value(String),
    Stdin,
    File(std::path::PathBuf),
}

/// `login --app-id`: a legacy Azure DevOps OAuth app.
pub struct AppArgs {
    pub app_id: String,
    pub secret: SecretSource,
    pub callback: Option<String>,
    pub scope: Option<String>,
    pub paste: bool,
}

fn read_secret(source: SecretSource) -> Result<crate::secret::Secret, String> {
    use std::io::Read;
    let text = match source {
        SecretSource::Value(v) => v,
        SecretSource::File(p) => std::fs::read_to_string(&p)
            .map_err(|e| format!("cannot read the client secret from {}: {e}", p.display()))?,
        SecretSource::Stdin => {
            let mut t = String::new();
            std::io::stdin()
                .lock()
                .take(64 * 1024)
                .read_to_string(&mut t)
                .map_err(|e| format!("cannot read the client secret from stdin: {e}"))?;
            t
        }
    };
    let secret = text.trim().to_string();
    if secret.is_empty() || secret.contains(char::is_whitespace) {
        return Err(
            "the client secret is empty or not one word: copy the app's Client Secret (not the App Secret) from https://app.vsaex.visualstudio.com/me".into(),
        );
    }
    Ok(crate::secret::Secret::new(secret))
}

/// Reads the redirected address the person pastes: from stdin, or from the terminal when
/// stdin carried the client secret.
fn paste_reader(stdin_used: bool) -> Result<Box<dyn std::io::BufRead>, String> {
    if !stdin_used {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    std::fs::File::open("/dev/tty")
        .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn std::io::BufRead>)
        .map_err(|e| format!("no terminal to paste the address in ({e}); give the client secret with --client-secret-file instead of stdin"))
}

/// Connects an organization through a legacy Azure DevOps OAuth app.
pub fn app_sign_in(
    target: &Target,
    args: AppArgs,
    timeout: Option<u64>,
    err: &mut impl Write,
) -> Result<(), ExitCode> {
    let stdin_used = matches!(args.secret, SecretSource::Stdin);
    let secret = read_secret(args.secret).map_err(|e| fail(err, e))?;
    let callback = args
        .callback
        .unwrap_or_else(|| crate::config::DEFAULT_APP_CALLBACK.to_string());
    let start = Request::LoginStart {
        org: target.org.clone(),
        host: target.host.clone(),
        tenant: None,
        wwwauth: Vec::new(),
        browser: true,
        timeout_secs: timeout,
        app: Some(AppLogin {
            app_id: args.app_id.clone(),
            client_secret: secret,
            callback,
            scope: args
                .scope
                .unwrap_or_else(|| crate::config::DEFAULT_APP_SCOPE.to_string()),
            paste: args.paste,
        }),
    };
    let (flow, url, callback, listening, certificate, expires_in) = match call(&start, GET_DEADLINE)
    {
        Ok(Response::AppSignIn {
            flow,
            url,
            callback,
            listening,
            certificate,
            expires_in,
        }) => (flow, url, callback, listening, certificate, expires_in),
        Ok(Response::Error { message, .. }) => {
            return Err(fail(err, format!("cannot start sign-in: {message}")));
        }
        Ok(other) => return Err(fail(err, format!("unexpected answer: {}", kind_of(&other)))),
        Err(e) => return Err(fail(err, e)),
    };
    let _ = writeln!(
        err,
        "Connecting Azure DevOps organization '{}' through legacy OAuth app {} (Microsoft retires these apps in 2026; see docs/legacy-oauth-apps.md).
         The app's Authorization callback URL must be exactly: {callback}
         Authorize the app at:
  {url}",
        target.org, args.app_id
    );
    if let Some(opener) = browser_command() {
        let _ = Command::new(&opener)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    if listening {
        if let Some(cert) = certificate {
            let _ = writeln!(
                err,
                "The callback is served here over https with a certificate this machine generated ({cert}); if the browser warns about it, trust it or continue."
            );
        }
        return wait_for_sign_in(
            flow,
            expires_in,
            "Waiting for you to authorize the app…",
            err,
        );
    }
    let mut input = paste_reader(stdin_used).map_err(|e| fail(err, e))?;
    for _attempt in 0..3 {
        let _ = write!(
            err,
            "After authorizing, paste the address the browser was sent to (it starts with {callback}):
> "
        );
        let _ = err.flush();
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => {
                return Err(fail(err, "no address was pasted; run login again"));
            }
            Ok(_) => {}
        }
        let pasted = crate::secret::Secret::new(line.trim().to_string());
        if pasted.expose().is_empty() {
            continue;
        }
        let result = call(
            &Request::LoginRedirect {
                flow: flow.clone(),
                url: pasted,
            },
            Duration::from_secs(expires_in + 30),
        );
        match result {
            Ok(Response::Error {
                error: crate::daemon_protocol::ErrorKind::BadRequest,
                message,
                ..
            }) => {
                let _ = writeln!(err, "{NAME}: {message}");
            }
            other => return report_login(other, err),
        }
    }
    Err(fail(err, "no usable address was pasted; run login again"))
}

/// The organization of the current repository's `origin`, when it is an Azure DevOps URL.
fn org_from_origin() -> Option<Target> {
    let out = Command::new("git")
        .args(["config", "--get", "remote.origin.url"])
        .output()
        .ok()?;
    let url = String::from_utf8(out.stdout).ok()?;
    let rest = url.trim().strip_prefix("https://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.split(':').next().unwrap_or(u).to_string()), h),
        None => (None, authority),
    };
    let cred = Credential {
        protocol: Some("https".into()),
        host: Some(host.to_string()),
        path: Some(path.to_string()),
        username: user,
        ..Default::default()
    };
    let hosts = crate::config::Config::hosts_default().unwrap_or_default();
    match policy::decide(&cred, || hosts) {
        Ok(Decision::Serve(t)) => Some(t),
        _ => None,
    }
}

pub fn login_command(
    org: Option<String>,
    tenant: Option<String>,
    host: Option<String>,
    method: Method,
    timeout: Option<u64>,
    app: Option<AppArgs>,
    err: &mut impl Write,
) -> ExitCode {
    let target = match (org, host) {
        (Some(o), host) => {
            let host = host.unwrap_or_else(|| "dev.azure.com".into());
            // The same policy git's requests go through: a served host, over https.
            let probe = Credential {
                protocol: Some("https".into()),
                host: Some(host.clone()),
                path: Some(o.clone()),
                ..Default::default()
            };
            let hosts = || crate::config::Config::hosts_default().unwrap_or_default();
            match policy::decide(&probe, hosts) {
                Ok(Decision::Serve(t)) => t,
                Ok(Decision::NotOurs) => {
                    return fail(
                        err,
                        format!(
                            "{host} is not an Azure DevOps host; list it under `hosts` in {}",
                            crate::paths::config_path().display()
                        ),
                    );
                }
                _ => return fail(err, format!("'{o}' is not a valid organization name")),
            }
        }
        (None, Some(_)) => return fail(err, "--host needs --org"),
        (None, None) => match org_from_origin() {
            Some(t) => t,
            None => {
                return fail(
                    err,
                    "which organization? Give --org ORG (the name in https://dev.azure.com/ORG), or run this inside a clone of an Azure DevOps repository",
                );
            }
        },
    };
    let result = match app {
        Some(app) => app_sign_in(&target, app, timeout, err),
        None => sign_in(&target, tenant, Vec::new(), method, timeout, err),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

pub fn logout_command(org: Option<String>, all: bool, err: &mut impl Write) -> ExitCode {
    if org.is_none() && !all {
        return fail(
            err,
            "give --org ORG, or --all to disconnect every organization",
        );
    }
    match call(&Request::Logout { org: org.clone() }, SHORT_DEADLINE) {
        Ok(Response::Done) => {
            let _ = match org {
                Some(o) => writeln!(err, "Disconnected organization '{o}'."),
                None => writeln!(err, "Disconnected every organization."),
            };
            ExitCode::SUCCESS
        }
        Ok(Response::Error { message, .. }) => fail(err, message),
        Ok(other) => fail(err, format!("unexpected answer: {}", kind_of(&other))),
        Err(e) => fail(err, e),
    }
}

fn when(unix: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if unix > now {
        format!("in {}", human(unix - now))
    } else {
        format!("{} ago", human(now - unix))
    }
}

/// `Mon, 23 Nov 2026 09:41:00 GMT`.
fn utc_date(unix: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(unix))
}

fn human(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub fn status_command(json: bool, out: &mut impl Write, err: &mut impl Write) -> ExitCode {
    let view: StatusView = match call(&Request::Status, SHORT_DEADLINE) {
        Ok(Response::Status(v)) => v,
        Ok(Response::Error { message, .. }) => return fail(err, message),
        Ok(other) => return fail(err, format!("unexpected answer: {}", kind_of(&other))),
        Err(e) => return fail(err, e),
    };
    if json {
        let _ = serde_json::to_writer_pretty(&mut *out, &view);
        let _ = writeln!(out);
        return ExitCode::SUCCESS;
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
        let _ = writeln!(
            out,
            "  account    {}{}",
            a.name.clone().unwrap_or_default(),
            a.upn
                .as_ref()
                .map(|u| format!(" <{u}>"))
                .unwrap_or_default()
        );
        if !a.tenant.is_empty() {
            let _ = writeln!(out, "  tenant     {}", a.tenant);
        }
        let _ = writeln!(out, "  identity   {}", o.identity);
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
                "  refreshed  {} ({})",
                when(last),
                o.last_refresh_outcome.clone().unwrap_or_default()
            );
        }
    }
    ExitCode::SUCCESS
}

pub fn stop_command(err: &mut impl Write) -> ExitCode {
    match call_if_running(&Request::Shutdown, SHORT_DEADLINE) {
        Ok(None) => {
            let _ = writeln!(err, "no daemon is running");
            ExitCode::SUCCESS
        }
        Ok(Some(_)) => {
            let _ = writeln!(err, "daemon stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(err, e),
    }
}

/// The helper for git: this executable's absolute path, as found on `PATH` when it is there
/// (a stable symlink such as `~/.cargo/bin/…` or `/opt/homebrew/bin/…` survives upgrades). With
/// a path, git starts the helper directly; with a bare name (`azdo`) it would start a second
/// git to find it, one process more on every request.
fn helper_value() -> String {
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
fn git_quote(path: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._+-,:@".contains(c);
    if path.chars().all(plain) {
        path.to_string()
    } else {
        format!("'{}'", path.replace('\'', "'\\''"))
    }
}

/// Whether a configured helper value is this helper (by name or path).
fn is_ours(v: &str) -> bool {
    let v = v.trim_matches('\'');
    v == "azdo" || v.ends_with(NAME)
}

/// The URLs setup configures: the built-in hosts and those listed in the configuration.
/// The second value says whether git must send the path (the organization is in it).
fn setup_urls() -> Vec<(String, bool)> {
    let mut urls = vec![
        ("https://dev.azure.com".to_string(), true),
        ("https://*.visualstudio.com".to_string(), false),
    ];
    if let Ok(hosts) = crate::config::Config::hosts_default() {
        urls.extend(hosts.iter().map(|h| (format!("https://{h}"), true)));
    }
    urls
}

fn git_config(scope: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("git")
        .arg("config")
        .arg(scope)
        .args(args)
        .output()
}

/// Sets git up to use this helper for Azure DevOps (idempotent), or undoes it.
pub fn setup_command(
    scope: &str,
    undo: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> ExitCode {
    let helper = helper_value();
    let mut changed = Vec::new();
    let urls = setup_urls();
    for (url, _) in &urls {
        let key = format!("credential.{url}.helper");
        let current = match git_config(scope, &["--get-all", &key]) {
            Ok(o) => String::from_utf8_lossy(&o.stdout).to_string(),
            Err(e) => return fail(err, format!("cannot run git: {e}")),
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
                    return fail(err, format!("cannot run git: {e}"));
                }
                changed.push(format!("{key} = {helper}"));
            }
        } else {
            // An empty value first: helpers configured for all hosts are not asked for
            // Azure DevOps (a stale PAT in `store` would otherwise win).
            for v in ["", helper.as_str()] {
                if let Err(e) = git_config(scope, &["--add", &key, v]) {
                    return fail(err, format!("cannot run git: {e}"));
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
    ExitCode::SUCCESS
}

/// The client's half of `doctor` (git, configuration, socket directory, daemon version),
/// then the daemon's (secret store, reachability, each organization's token).
pub fn doctor_command(json: bool, out: &mut impl Write, err: &mut impl Write) -> ExitCode {
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
        ExitCode::SUCCESS
    } else {
        let _ = writeln!(err, "{NAME}: some checks failed");
        ExitCode::FAILURE
    }
}

/// The socket directory is ours and private (when it exists yet).
fn socket_dir_check() -> crate::daemon_protocol::Check {
    use crate::daemon_protocol::Check;
    use std::os::unix::fs::MetadataExt;
    let dir = crate::paths::runtime_dir();
    match std::fs::symlink_metadata(&dir) {
        Err(_) => Check::pass(
            "socket directory",
            format!("{} (created on first use)", dir.display()),
        ),
        Ok(m) => {
            let uid = unsafe { libc::geteuid() };
            if m.uid() != uid || !m.is_dir() {
                Check::fail(
                    "socket directory",
                    format!("{} is not a directory owned by you", dir.display()),
                    format!("remove {} and run again", dir.display()),
                )
            } else if m.mode() & 0o077 != 0 {
                Check::fail(
                    "socket directory",
                    format!("{} has mode {:o}", dir.display(), m.mode() & 0o777),
                    format!("chmod 700 {}", dir.display()),
                )
            } else {
                Check::pass(
                    "socket directory",
                    format!("{} (0700, yours)", dir.display()),
                )
            }
        }
    }
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

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(utc_date(1_795_430_460), "Mon, 23 Nov 2026 10:41:00 GMT");
    }
}
