//! Browser sign-in (authorization code + PKCE, loopback redirect served by the daemon) driven
//! by a `$BROWSER` script that follows Entra's redirect with curl, and `doctor`.

mod common;

use common::requires::{Piece, require};

use common::entra::AuthorizeOutcome;
use common::harness::{World, doctor_check, ok, text, token};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// A `$BROWSER` that follows the sign-in like a person's browser would, saving the final page.
/// With `tamper`, it rewrites the `state` of the redirect first.
fn browser(w: &mut World, tamper: bool) -> std::path::PathBuf {
    let page = w.path("browser-page.html");
    let script = w.path("browser.sh");
    let ca = w.ca.ca_path().display().to_string();
    let body = if tamper {
        format!(
            "loc=$(curl -s --cacert {ca} -o /dev/null -w '%{{redirect_url}}' \"$1\")\n\
             loc=$(printf '%s' \"$loc\" | sed 's/state=[^&]*/state=forged/')\n\
             curl -s -o {page} \"$loc\"\n",
            page = page.display()
        )
    } else {
        format!(
            "curl -s -L --max-redirs 3 --cacert {ca} -o {page} \"$1\"\n",
            page = page.display()
        )
    };
    std::fs::write(&script, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.set_env("BROWSER", script.to_str().unwrap());
    page
}

fn login(w: &World, extra: &[&str]) -> std::process::Output {
    let host = w.ado.host();
    let mut args = vec!["login", "--org", "contoso", "--host", &host];
    args.extend_from_slice(extra);
    w.client(&args, "")
}

fn wait_for_file(p: &std::path::Path) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok(s) = std::fs::read_to_string(p)
            && !s.is_empty()
        {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    String::new()
}

#[test]
fn browser_sign_in_connects_and_shows_who_on_the_page() {
    if !require(
        &[Piece::Curl],
        "the browser sign-in (curl plays the browser)",
    ) {
        return;
    }
    let mut w = World::new();
    let page = browser(&mut w, false);
    let url = w.ado.create_repo("contoso", "web", "site");
    let out = login(&w, &[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}\n{}", w.log());
    assert!(err.contains("Opening a browser"), "{err}");
    assert!(err.contains("Connected organization 'contoso'"), "{err}");
    let html = wait_for_file(&page);
    assert!(html.contains("<h1"), "{html}");
    assert!(html.contains("Connected"), "{html}");
    let who = "ada@contoso.example is now connected to Azure DevOps organization 'contoso'";
    assert!(html.contains(who), "{html}");
    let stats = w.entra.stats();
    assert_eq!(stats.auth_code_ok, 1);
    assert_eq!(stats.devicecode_requests, 0);
    let q = stats.last_authorize.unwrap();
    assert_eq!(
        q.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert!(q["redirect_uri"].starts_with("http://localhost:"), "{q:?}");
    assert!(q["scope"].contains("offline_access"));
    ok(
        &w,
        &w.git(&["clone", &url, "a"], None),
        "clone after browser sign-in",
    );
}

#[test]
fn a_denied_browser_sign_in_says_so_in_the_terminal_and_the_page() {
    if !require(
        &[Piece::Curl],
        "a declined browser sign-in (curl plays the browser)",
    ) {
        return;
    }
    let mut w = World::new();
    let page = browser(&mut w, false);
    w.entra.set_authorize_outcome(AuthorizeOutcome::Deny);
    let out = login(&w, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("access_denied"),
        "{}",
        text(&out.stderr)
    );
    let html = wait_for_file(&page);
    assert!(
        html.contains("Sign-in failed") && html.contains("AADSTS65004"),
        "{html}"
    );
    assert!(w.get("contoso", true).stdout.is_empty());
}

#[test]
fn a_forged_state_is_refused_and_the_sign_in_keeps_waiting() {
    if !require(
        &[Piece::Curl],
        "a forged state on the redirect (curl plays the browser)",
    ) {
        return;
    }
    let mut w = World::new();
    let page = browser(&mut w, true);
    let out = login(&w, &["--timeout", "5"]);
    assert!(!out.status.success());
    assert!(wait_for_file(&page).contains("state mismatch"));
    // The forged answer did not end the sign-in: it ran to its timeout.
    assert!(
        text(&out.stderr).contains("not completed within 5 seconds"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        w.entra.stats().auth_code_ok,
        0,
        "the code was never redeemed"
    );
}

#[test]
fn an_abandoned_browser_sign_in_times_out_cleanly() {
    if !require(&[Piece::Curl], "an abandoned browser sign-in") {
        return;
    }
    let mut w = World::new();
    browser(&mut w, false);
    w.entra.set_authorize_outcome(AuthorizeOutcome::Ignore);
    let t = Instant::now();
    let out = login(&w, &["--timeout", "5"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("not completed within 5 seconds"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20));
    // The daemon is fine afterwards: a device-code sign-in works.
    let out = login(&w, &["--device-code"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(token(&w.get("contoso", true)).is_some());
}

#[test]
fn device_code_is_used_when_asked_or_when_no_browser_can_open() {
    if !require(&[Piece::Curl], "device code instead of a browser") {
        return;
    }
    let mut w = World::new();
    browser(&mut w, false);
    let out = login(&w, &["--device-code"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("enter the code"));
    assert_eq!(w.entra.stats().authorize_requests, 0);
    // Without $BROWSER or a display (an SSH session): device code, and --browser fails.
    let w = World::new();
    let out = login(&w, &["--browser"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no browser can be opened"));
    let out = login(&w, &[]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("enter the code"));
}

/// A desktop's opener: an `xdg-open` first on PATH that leaves a marker and follows the sign-in
/// like [`browser`], and a display, so that the client would use it. Returns the marker.
fn desktop(w: &mut World) -> std::path::PathBuf {
    let dir = w.workdir("desktop-bin");
    let marker = w.path("xdg-open-ran");
    let page = w.path("browser-page.html");
    let ca = w.ca.ca_path().display().to_string();
    let script = dir.join("xdg-open");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh
touch {marker}
curl -s -L --max-redirs 3 --cacert {ca} -o {page} \"$1\"\n",
            marker = marker.display(),
            page = page.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin_dir = std::path::Path::new(common::harness::CLIENT)
        .parent()
        .unwrap();
    w.set_env(
        "PATH",
        &format!(
            "{}:{}:/usr/local/bin:/usr/bin:/bin",
            dir.display(),
            bin_dir.display()
        ),
    );
    w.set_env("DISPLAY", ":0");
    marker
}

/// Over SSH a desktop's opener would open a browser on the wrong machine (the one with the
/// display, not the person's): with `SSH_CONNECTION` or `SSH_TTY` set, the sign-in is a device
/// code even where `xdg-open` and a display are at hand; without them, the browser opens.
#[test]
fn ssh_sessions_sign_in_with_a_device_code_even_with_a_display() {
    if !require(
        &[Piece::Curl],
        "device code over SSH, the desktop's opener otherwise (curl plays the browser)",
    ) {
        return;
    }
    for (k, v) in [
        ("SSH_CONNECTION", "10.0.0.1 50000 10.0.0.2 22"),
        ("SSH_TTY", "/dev/pts/3"),
    ] {
        let mut w = World::new();
        let marker = desktop(&mut w);
        w.set_env(k, v);
        let out = login(&w, &[]);
        let err = text(&out.stderr);
        assert!(out.status.success(), "{k}: {err}\n{}", w.log());
        assert!(err.contains("enter the code"), "{k}: {err}");
        assert_eq!(w.entra.stats().authorize_requests, 0, "{k}");
        assert!(!marker.exists(), "{k}: xdg-open ran");
    }
    // Neither: the desktop's opener.
    let mut w = World::new();
    let marker = desktop(&mut w);
    let out = login(&w, &["--timeout", "30"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}\n{}", w.log());
    assert!(err.contains("Opening a browser"), "{err}");
    assert!(!err.contains("enter the code"), "{err}");
    assert!(w.entra.stats().authorize_requests >= 1);
    assert_eq!(w.entra.stats().auth_code_ok, 1);
    assert!(marker.exists(), "xdg-open never ran");
    assert!(wait_for_file(&w.path("browser-page.html")).contains("Connected"));
}

#[test]
fn doctor_passes_when_all_is_well_and_names_the_fix_when_not() {
    let w = World::new();
    w.login("contoso");
    let out = w.client(&["doctor"], "");
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
    for want in [
        "✓ git",
        "✓ git configuration",
        "✓ socket directory",
        "✓ daemon",
        "✓ secret store",
        "✓ Entra ID",
        "✓ organization contoso: Azure DevOps accepts the token (as Ada Lovelace)",
    ] {
        assert!(report.contains(want), "{want} in:\n{report}");
    }
    // Access removed: the organization check fails and says what to do.
    w.ado.reject_all(true);
    let out = w.client(&["doctor", "--json"], "");
    assert!(!out.status.success());
    let org = doctor_check(&out, "organization contoso");
    assert_eq!(org["ok"], false);
    assert!(org["detail"].as_str().unwrap().contains("401"));
    assert!(org["fix"].as_str().unwrap().contains("login --org contoso"));
    // Git not set up: the fix is setup.
    w.client(&["setup", "--undo"], "");
    let report = text(&w.client(&["doctor"], "").stdout);
    assert!(report.contains("✗ git configuration"), "{report}");
    assert!(
        report.contains("fix: git-credential-azdo setup"),
        "{report}"
    );
}

/// First run on a laptop: `git clone` in a terminal with no account opens the browser, and the
/// clone goes on once the sign-in is done, saying which organization is now connected.
#[test]
fn first_clone_in_a_terminal_opens_the_browser_and_says_connected() {
    if !require(
        &[Piece::Curl, Piece::Script],
        "the first clone in a terminal signing in in a browser",
    ) {
        return;
    }
    let mut w = World::new();
    let page = browser(&mut w, false);
    w.set_env("GIT_TERMINAL_PROMPT", "1");
    let url = w.ado.create_repo("contoso", "web", "site");
    // script(1) gives git and the helper a real terminal.
    let out = common::harness::run_with_input(
        w.command("script")
            .args(["-qec", &format!("git clone {url} first"), "/dev/null"])
            .current_dir(w.path("")),
        b"",
    );
    let screen = text(&out.stdout);
    ok(&w, &out, "clone in a terminal");
    assert!(
        screen.contains("Connected organization 'contoso'"),
        "{screen}"
    );
    assert!(
        !screen.contains("enter the code"),
        "no device code: {screen}"
    );
    assert!(w.path("first/.git").exists());
    assert_eq!(w.entra.stats().devicecode_requests, 0);
    assert_eq!(w.entra.stats().auth_code_ok, 1);
    assert!(
        wait_for_file(&page).contains("contoso"),
        "the browser's page"
    );
}

/// A browser may resolve `localhost` to ::1: the daemon holds the redirect's port on ::1 as
/// well as 127.0.0.1, so no other process can bind it there and take the code, and a redirect
/// that arrives over ::1 finishes the sign-in.
#[test]
fn the_redirect_port_is_held_on_both_loopback_addresses() {
    if !require(
        &[Piece::Curl, Piece::Python3],
        "the redirect port held on 127.0.0.1 and ::1",
    ) {
        return;
    }
    let mut w = World::new();
    let page = w.path("browser-page.html");
    let taken = w.path("ipv6-bind");
    let script = w.path("browser.sh");
    let ca = w.ca.ca_path().display().to_string();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             loc=$(curl -s --cacert {ca} -o /dev/null -w '%{{redirect_url}}' \"$1\")\n\
             port=$(printf '%s' \"$loc\" | sed -E 's#^http://localhost:([0-9]+)/.*#\\1#')\n\
             python3 -c 'import socket,sys; socket.socket(socket.AF_INET6).bind((\"::1\", int(sys.argv[1])))' \"$port\" \
               2>/dev/null && echo bound > {taken} || echo refused > {taken}\n\
             curl -s -6 --max-time 10 -o {page} \"$loc\"\n",
            taken = taken.display(),
            page = page.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.set_env("BROWSER", script.to_str().unwrap());
    let out = login(&w, &["--timeout", "20"]);
    let err = text(&out.stderr);
    assert_eq!(
        std::fs::read_to_string(&taken).unwrap_or_default().trim(),
        "refused",
        "another process could bind [::1] on the redirect's port"
    );
    assert!(out.status.success(), "{err}\n{}", w.log());
    assert!(wait_for_file(&page).contains("Connected"));
}
