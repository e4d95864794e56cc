//! `login` (device code with a spinner, browser, or a legacy app) and `logout`; also the
//! sign-in a `get` starts in a terminal.

use super::*;

/// A spinner on stderr while `done` is false; silent when stderr is not a terminal.
pub(super) fn spinner(
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
pub(super) fn browser_command() -> Option<String> {
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

/// Opens `url` with `opener` (from [`browser_command`]), detached; when it cannot run, says so
/// (the address is already on the terminal).
fn open_in_browser(opener: &str, url: &str, err: &mut impl Write) {
    let opened = Command::new(opener)
        .arg(url)
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
}

/// Runs a sign-in through the daemon, talking to the person on `err`.
pub fn sign_in(
    target: &Target,
    tenant: Option<String>,
    wwwauth: Vec<String>,
    method: Method,
    timeout: Option<u64>,
    err: &mut impl Write,
) -> Result<(), Error> {
    let opener = match method {
        Method::DeviceCode => None,
        Method::Browser => match browser_command() {
            Some(b) => Some(b),
            None => {
                return Err(Error::Usage(
                    "no browser can be opened here (set $BROWSER, or use --device-code)".into(),
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
            open_in_browser(&opener, &url, err);
            (flow, expires_in, "Waiting for the browser sign-in…")
        }
        Ok(Response::Error { message, fix, .. }) => {
            return Err(Error::daemon("cannot start sign-in", message, fix));
        }
        Ok(other) => return Err(Error::Unexpected(kind_of(&other))),
        Err(e) => return Err(e.into()),
    };
    wait_for_sign_in(flow, expires_in, label, err)
}

/// Waits for the daemon to finish a sign-in, with a spinner, and says how it ended.
pub(super) fn wait_for_sign_in(
    flow: String,
    expires_in: u64,
    label: &str,
    err: &mut impl Write,
) -> Result<(), Error> {
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
pub(super) fn report_login(
    result: Result<Response, super::ConnectError>,
    err: &mut impl Write,
) -> Result<(), Error> {
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
        Ok(Response::Error { message, fix, .. }) => {
            Err(Error::daemon("sign-in failed", message, fix))
        }
        Ok(other) => Err(Error::Unexpected(kind_of(&other))),
        Err(e) => Err(e.into()),
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

pub(super) fn read_secret(source: SecretSource) -> Result<crate::secret::Secret, Error> {
    use std::io::Read;
    let text = match source {
        SecretSource::Value(v) => v,
        SecretSource::File(p) => std::fs::read_to_string(&p).map_err(|e| {
            Error::Usage(format!(
                "cannot read the client secret from {}: {e}",
                p.display()
            ))
        })?,
        SecretSource::Stdin => {
            let mut t = String::new();
            std::io::stdin()
                .lock()
                .take(64 * 1024)
                .read_to_string(&mut t)
                .map_err(|e| {
                    Error::Usage(format!("cannot read the client secret from stdin: {e}"))
                })?;
            t
        }
    };
    let secret = text.trim().to_string();
    if secret.is_empty() || secret.contains(char::is_whitespace) {
        return Err(Error::Usage(
            "the client secret is empty or not one word: copy the app's Client Secret (not the App Secret) from https://app.vsaex.visualstudio.com/me".into(),
        ));
    }
    Ok(crate::secret::Secret::new(secret))
}

/// Reads the redirected address the person pastes: from stdin, or from the terminal when
/// stdin carried the client secret.
pub(super) fn paste_reader(stdin_used: bool) -> Result<Box<dyn std::io::BufRead>, Error> {
    if !stdin_used {
        return Ok(Box::new(std::io::BufReader::new(std::io::stdin())));
    }
    std::fs::File::open("/dev/tty")
        .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn std::io::BufRead>)
        .map_err(|e| Error::Usage(format!("no terminal to paste the address in ({e}); give the client secret with --client-secret-file instead of stdin")))
}

/// Connects an organization through a legacy Azure DevOps OAuth app.
pub fn app_sign_in(
    target: &Target,
    args: AppArgs,
    timeout: Option<u64>,
    err: &mut impl Write,
) -> Result<(), Error> {
    let stdin_used = matches!(args.secret, SecretSource::Stdin);
    let secret = read_secret(args.secret)?;
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
        Ok(Response::Error { message, fix, .. }) => {
            return Err(Error::daemon("cannot start sign-in", message, fix));
        }
        Ok(other) => return Err(Error::Unexpected(kind_of(&other))),
        Err(e) => return Err(e.into()),
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
        open_in_browser(&opener, &url, err);
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
    let mut input = paste_reader(stdin_used)?;
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
                return Err(Error::Usage(
                    "no address was pasted; run login again".into(),
                ));
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
    Err(Error::Usage(
        "no usable address was pasted; run login again".into(),
    ))
}

/// The organization of the current repository's `origin`, when it is an Azure DevOps URL.
pub(super) fn org_from_origin() -> Option<Target> {
    let out = Command::new("git")
        .args(["config", "--get", "remote.origin.url"])
        .output()
        .ok()?;
    target_from_url(&String::from_utf8(out.stdout).ok()?)
}

/// The organization an Azure DevOps `https://` URL names, as git's requests for it would.
pub(super) fn target_from_url(url: &str) -> Option<Target> {
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
) -> Result<ExitCode, Error> {
    let target = match (org, host) {
        // `--org https://dev.azure.com/ORG/…`: the organization that URL names.
        (Some(o), None) if o.contains("://") => target_from_url(&o).ok_or_else(|| {
            Error::Usage(format!(
                "'{o}' is not the address of an Azure DevOps organization; give --org ORG (the name in https://dev.azure.com/ORG)"
            ))
        })?,
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
                    return Err(Error::Usage(format!(
                        "{host} is not an Azure DevOps host; list it under `hosts` in {}",
                        crate::paths::config_path().display()
                    )));
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "'{o}' is not a valid organization name"
                    )));
                }
            }
        }
        (None, Some(_)) => return Err(Error::Usage("--host needs --org".into())),
        (None, None) => match org_from_origin() {
            Some(t) => t,
            None => {
                return Err(Error::Usage(
                    "which organization? Give --org ORG (the name in https://dev.azure.com/ORG), or run this inside a clone of an Azure DevOps repository".into(),
                ));
            }
        },
    };
    let result = match app {
        Some(app) => app_sign_in(&target, app, timeout, err),
        None => sign_in(&target, tenant, Vec::new(), method, timeout, err),
    };
    result.map(|()| ExitCode::SUCCESS)
}

pub fn logout_command(
    org: Option<String>,
    all: bool,
    err: &mut impl Write,
) -> Result<ExitCode, Error> {
    // As `login` does: the organization of the repository here, when there is one.
    let org = match (org, all) {
        (None, false) => match org_from_origin() {
            Some(t) => Some(t.org),
            None => {
                return Err(Error::Usage(
                    "give --org ORG, or --all to disconnect every organization".into(),
                ));
            }
        },
        (org, _) => org,
    };
    match call(&Request::Logout { org: org.clone() }, SHORT_DEADLINE) {
        Ok(Response::Done) => {
            let _ = match org {
                Some(o) => writeln!(err, "Disconnected organization '{o}'."),
                None => writeln!(err, "Disconnected every organization."),
            };
            Ok(ExitCode::SUCCESS)
        }
        Ok(Response::Error { message, fix, .. }) => Err(Error::Daemon {
            context: None,
            message,
            fix,
        }),
        Ok(other) => Err(Error::Unexpected(kind_of(&other))),
        Err(e) => Err(e.into()),
    }
}
