//! Legacy Azure DevOps OAuth apps (`login --app-id`): the Assertion flow against the mock
//! app.vssps.visualstudio.com, through the daemon's https localhost callback (a `$BROWSER` that
//! trusts only the certificate the daemon generated) and through a pasted address; then real
//! git through the app's tokens, rotation across a SIGKILL, and each misconfiguration's line.

mod common;

use common::requires::{Piece, require};

use common::MockVssps;
use common::SecretKind;
use common::harness::{World, ok, text, token, wait_until};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const APP_ID: &str = "5c7a1d2e-3f40-4b5c-8d6e-7f8091a2b3c4";
const EMAIL: &str = "grace@fabrikam.example";

struct Legacy {
    w: World,
    vssps: MockVssps,
    secret: String,
    secret_file: String,
    callback: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A world whose daemon talks to a mock legacy OAuth service with one registered app.
fn legacy(callback: Option<&str>) -> Legacy {
    let w = World::new();
    let vssps = MockVssps::start(&w.ca);
    w.ado.accept_legacy(vssps.validator());
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        format!("legacy_oauth_url = \"{}\"\n{cfg}", vssps.url()),
    )
    .unwrap();
    let callback = callback
        .map(str::to_string)
        .unwrap_or_else(|| format!("https://localhost:{}/callback", free_port()));
    let secret = vssps.add_app(APP_ID, &callback, &["vso.code_write"]);
    let secret_file = w.path("app-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    Legacy {
        w,
        vssps,
        secret,
        secret_file: secret_file.display().to_string(),
        callback,
    }
}

/// A `$BROWSER` that accepts the app on the mock and follows the redirect to the daemon's
/// callback, trusting nothing but the certificate the daemon generated for it.
fn browser(l: &mut Legacy) -> std::path::PathBuf {
    let page = l.w.path("browser-page.html");
    let script = l.w.path("browser.sh");
    let ca = l.w.ca.ca_path().display().to_string();
    let cert = l.w.path("data/git-credential-azdo/callback-cert.pem");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             loc=$(curl -s --cacert {ca} -o /dev/null -w '%{{redirect_url}}' \"$1\")\n\
             [ -n \"$loc\" ] || exit 0\n\
             curl -s --cacert {cert} -o {page} \"$loc\"\n",
            cert = cert.display(),
            page = page.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    l.w.set_env("BROWSER", script.to_str().unwrap());
    page
}

/// `login --org contoso --app-id APP_ID --callback CALLBACK` plus `extra`.
fn login_args(l: &Legacy, callback: &str, extra: &[&str]) -> Vec<String> {
    let host = l.w.ado.host();
    let base = [
        "login", "--org", "contoso", "--host", &host, "--app-id", APP_ID,
    ];
    let callback = ["--callback", callback];
    base.iter()
        .chain(&callback)
        .chain(extra)
        .map(|a| a.to_string())
        .collect()
}

fn login(l: &Legacy, extra: &[&str], stdin: &str) -> std::process::Output {
    let args = login_args(l, &l.callback, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    l.w.client(&args, stdin)
}

fn assert_no_secrets(l: &Legacy, outputs: &[&str]) {
    let token = token(&l.w.get("contoso", true)).expect("a token");
    for (what, s) in outputs
        .iter()
        .map(|o| ("output", o.to_string()))
        .chain([("daemon log", l.w.log())])
    {
        assert!(!s.contains(&l.secret), "client secret in the {what}");
        assert!(!s.contains(&token), "access token in the {what}");
    }
}

#[test]
fn an_app_connects_through_the_https_callback_and_git_clones_and_pushes() {
    if !require(
        &[Piece::Curl],
        "a legacy app through the https callback (curl plays the browser)",
    ) {
        return;
    }
    let mut l = legacy(None);
    let page = browser(&mut l);
    let out = login(&l, &["--client-secret-file", &l.secret_file.clone()], "");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}\n{}", l.w.log());
    let must_register = format!(
        "The app's Authorization callback URL must be exactly: {}",
        l.callback
    );
    assert!(err.contains(&must_register), "{err}");
    assert!(err.contains("retires these apps in 2026"), "{err}");
    assert!(err.contains("Connected organization 'contoso'"), "{err}");
    assert!(err.contains(EMAIL), "{err}");

    // The browser, trusting only the daemon's certificate, saw the page say so.
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Connected"), "{html}");
    assert!(html.contains(EMAIL) && html.contains(APP_ID), "{html}");

    // The wire: the Assertion flow, exactly.
    let stats = l.vssps.stats();
    assert_eq!(stats.code_ok, 1);
    let q = stats.last_authorize.unwrap();
    assert_eq!(q["response_type"], "Assertion");
    assert_eq!(q["client_id"], APP_ID);
    assert_eq!(q["scope"], "vso.code_write");
    assert_eq!(q["redirect_uri"], l.callback);
    let form = stats.last_token_form.unwrap();
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert_eq!(form["client_assertion"], l.secret);
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    assert_eq!(form["redirect_uri"], l.callback);
    assert_eq!(l.w.entra.stats().token_requests.len(), 0, "Entra not used");

    // Real git through the app's token, push included (vso.code_write).
    let url = l.w.ado.create_repo("contoso", "web", "site");
    ok(&l.w, &l.w.git(&["clone", &url, "site"], None), "clone");
    let site = l.w.path("site");
    std::fs::write(site.join("a.txt"), "a\n").unwrap();
    ok(&l.w, &l.w.git(&["add", "."], Some(&site)), "add");
    ok(
        &l.w,
        &l.w.git(&["commit", "-qm", "a"], Some(&site)),
        "commit",
    );
    ok(
        &l.w,
        &l.w.git(&["push", "-q", "origin", "main"], Some(&site)),
        "push",
    );
    let legacy_accepted =
        l.w.ado
            .requests()
            .iter()
            .filter(|r| r.accepted && r.legacy)
            .count();
    assert!(legacy_accepted >= 3, "{:?}", l.w.ado.requests());

    // status: the app, the date and the user that connected.
    let json: serde_json::Value =
        serde_json::from_slice(&l.w.client(&["status", "--json"], "").stdout).unwrap();
    let org = &json["orgs"][0];
    assert_eq!(org["org"], "contoso");
    assert_eq!(org["app_id"], APP_ID);
    assert_eq!(org["connected_by"], EMAIL);
    assert!(org["connected_at"].as_u64().unwrap() > 1_700_000_000);
    let human = text(&l.w.client(&["status"], "").stdout);
    for want in [
        &format!("legacy Azure DevOps OAuth app {APP_ID}"),
        " GMT (",
        &format!("by {EMAIL}"),
    ] {
        assert!(human.contains(want), "{want} in:\n{human}");
    }
    assert_no_secrets(&l, &[&err, &human, &json.to_string()]);

    // Logout removes the refresh token and the client secret from the store.
    ok(
        &l.w,
        &l.w.client(&["logout", "--org", "contoso"], ""),
        "logout",
    );
    let store = std::fs::read_to_string(l.w.path("data/git-credential-azdo/refresh-tokens.json"))
        .unwrap_or_default();
    assert!(!store.contains("app."), "{store}");
}

#[test]
fn rotated_refresh_tokens_are_persisted_across_a_sigkill() {
    if !require(&[Piece::Curl], "a legacy app's rotation across a SIGKILL") {
        return;
    }
    let mut l = legacy(None);
    l.vssps.set_token_lifetime(Duration::from_secs(8));
    browser(&mut l);
    let secret_file = l.secret_file.clone();
    ok(
        &l.w,
        &login(&l, &["--client-secret-file", &secret_file], ""),
        "login",
    );
    let store = l.w.path("data/git-credential-azdo/refresh-tokens.json");
    let stored = std::fs::read_to_string(&store).unwrap();
    assert!(stored.contains(".client-secret"), "client secret kept");
    // Refreshed ahead of expiry (three quarters into 8 s), rotating each time.
    assert!(
        wait_until(Duration::from_secs(20), || l.vssps.stats().refresh_ok >= 2),
        "{}",
        l.w.log()
    );
    // Kill between refreshes, once the newest refresh token the service issued is stored (a
    // kill between the token endpoint's answer and the save is the crash tests' matter).
    let newest = || {
        let issued = l.vssps.secrets();
        let mut rts = issued.iter().filter(|r| r.kind == SecretKind::RefreshToken);
        rts.next_back().map(|r| r.value.clone()).unwrap_or_default()
    };
    let saved = wait_until(Duration::from_secs(20), || {
        let now = std::fs::read_to_string(&store).unwrap_or_default();
        now != stored && now.contains(&newest())
    });
    assert!(saved, "rotated token saved");
    let refreshed = l.vssps.stats().refresh_ok;
    l.w.kill_daemon(libc::SIGKILL);
    // The new daemon reads the latest refresh token and the secret back (strict rotation:
    // an older token would be refused).
    let url = l.w.ado.create_repo("contoso", "web", "site");
    ok(
        &l.w,
        &l.w.git(&["clone", &url, "site"], None),
        "clone after restart",
    );
    let s = l.vssps.stats();
    assert_eq!(s.refresh_refused, 0, "{:?}", s.last_error);
    assert!(
        s.refresh_ok > refreshed,
        "the new daemon redeemed the stored token"
    );
    assert_eq!(s.code_ok, 1, "no new authorization");
}

#[test]
fn a_web_callback_is_finished_by_pasting_the_address() {
    if !require(&[Piece::Curl], "a pasted legacy callback address") {
        return;
    }
    let callback = "https://tools.fabrikam.example/azdo/callback";
    let l = legacy(Some(callback));
    let args = login_args(&l, callback, &["--client-secret-file", &l.secret_file]);
    let mut child =
        l.w.command(common::harness::CLIENT)
            .args(&args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let authorize = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
        if let Some(u) = line.trim().strip_prefix("https://") {
            break format!("https://{u}");
        }
    };
    // The person's browser ends on the organization's page; they copy its address.
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(l.w.ca.ca_path())
        .args(["-o", "/dev/null", "-w", "%{redirect_url}", &authorize])
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    let landed = text(&out.stdout);
    assert!(
        landed.starts_with(callback) && landed.contains("code="),
        "{landed}"
    );
    writeln!(stdin, "I pressed Accept").unwrap();
    writeln!(stdin, "{landed}").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    seen.push_str(&rest);
    let status = child.wait().unwrap();
    assert!(status.success(), "{seen}\n{}", l.w.log());
    assert!(seen.contains("paste the address"), "{seen}");
    assert!(
        seen.contains("that is not the address the browser was sent to"),
        "{seen}"
    );
    assert!(seen.contains("Connected organization 'contoso'"), "{seen}");
    assert!(!seen.contains(&l.secret));
    let url = l.w.ado.create_repo("contoso", "web", "site");
    ok(&l.w, &l.w.git(&["clone", &url, "site"], None), "clone");
}

#[test]
fn a_wrong_secret_a_revoked_grant_and_a_wrong_callback_each_say_what_to_do() {
    if !require(&[Piece::Curl], "a legacy app's misconfigurations") {
        return;
    }
    let mut l = legacy(None);
    browser(&mut l);
    // A wrong secret, from stdin: one clear line, nothing connected.
    let out = login(&l, &["--client-secret", "-"], "eyJ0eXAi.wrong.secret\n");
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "Azure DevOps refused the client secret of app {APP_ID}"
        )),
        "{err}"
    );
    assert!(err.contains("invalid_client"), "{err}");
    assert!(!err.contains("wrong.secret"), "{err}");
    let status = text(&l.w.client(&["status"], "").stdout);
    assert!(status.contains("no organization connected"), "{status}");

    // Connected, then the grant is revoked and the access token runs out.
    l.vssps.set_token_lifetime(Duration::from_secs(3));
    let secret_file = l.secret_file.clone();
    ok(
        &l.w,
        &login(&l, &["--client-secret-file", &secret_file], ""),
        "login",
    );
    l.vssps.revoke_all_refresh_tokens();
    std::thread::sleep(Duration::from_secs(4));
    let out = l.w.get("contoso", true);
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "no longer accepts the refresh token of app {APP_ID}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("login --org contoso --app-id {APP_ID}")),
        "{err}"
    );

    // A callback that is not the registered one: Azure DevOps shows an error page and never
    // redirects; the sign-in ends at its timeout with a clear line.
    let other = format!("https://localhost:{}/elsewhere", free_port());
    let extra = ["--client-secret-file", &secret_file, "--timeout", "5"];
    let args = login_args(&l, &other, &extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = l.w.client(&args, "");
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("was not authorized within 5 seconds"), "{err}");
}

/// A browser may resolve `localhost` to ::1, so the callback's port is held on both loopback
/// addresses. When another process already holds it on ::1 (another user's listener waiting
/// for the redirect and its code), the sign-in does not start, and says so.
#[test]
fn a_callback_port_another_process_holds_on_ipv6_is_refused() {
    let l = legacy(None);
    let port: u16 = l
        .callback
        .trim_start_matches("https://localhost:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let _squatter = std::net::TcpListener::bind(("::1", port)).expect("[::1] is free");
    let secret_file = l.secret_file.clone();
    let out = login(
        &l,
        &["--client-secret-file", &secret_file, "--timeout", "5"],
        "",
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("[::1]:{port} is held by another process")),
        "{err}"
    );
    assert_eq!(l.vssps.stats().code_ok, 0);
}
