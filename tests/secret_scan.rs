//! The secret scan every `World` runs when dropped (tests/common/secrets.rs and
//! `World::scan_for_secrets`) can fail: secrets planted in each place it covers (the daemon's
//! log, a command's stderr and stdout, the daemon's process title) are found, whole or cut
//! short, named by kind and place without being shown, and make the world's drop panic.
//! What it allows (an access token as a credential answer, a JWT's public header, secrets
//! too short to look for) is not reported.

mod common;

use common::harness::{World, run_with_input, wait_until};
use common::secrets::{Finding, SecretKind};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// The first secret of `kind` the mock Entra issued.
fn issued(w: &World, kind: SecretKind) -> String {
    let found = w.entra.secrets().into_iter().find(|s| s.kind == kind);
    found
        .unwrap_or_else(|| panic!("the mock issued no {kind}"))
        .value
}

/// Runs `script` in `sh` through the world (so its output is recorded) with `$LEAK` = `leak`.
fn sh(w: &World, script: &str, leak: &str) {
    let out = run_with_input(w.command("sh").args(["-c", script]).env("LEAK", leak), b"");
    assert!(out.status.success());
}

/// Drops the world and returns the message of the panic that must follow.
fn drop_panics(w: World) -> String {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(w)));
    let payload = r.expect_err("dropping the world panics on a leak");
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default()
}

/// Nothing of `secret` beyond its first four characters is shown.
fn shows_no_secret(text: &str, secret: &str) {
    assert!(!text.contains(&secret[..8]), "the secret is shown: {text}");
}

fn only(found: &[Finding]) -> &Finding {
    assert_eq!(found.len(), 1, "{found:#?}");
    &found[0]
}

#[test]
fn a_refresh_token_in_the_daemon_log_is_found_and_fails_the_test() {
    let w = World::new();
    w.login("contoso");
    let rt = issued(&w, SecretKind::RefreshToken);
    assert_eq!(
        w.scan_for_secrets().len(),
        0,
        "a sign-in at trace level is clean"
    );
    let log = w.path("state/git-credential-azdo/daemon.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "TRACE oops: refresh_token={rt}").unwrap();
    let found = w.scan_for_secrets();
    let f = only(&found);
    assert_eq!(f.kind, SecretKind::RefreshToken);
    assert_eq!((f.matched, f.len, f.source), (rt.len(), rt.len(), "entra"));
    assert!(f.place.contains("daemon.log, line "), "{}", f.place);
    assert!(f.context.contains("refresh_token=<refresh token>"), "{f}");
    assert_eq!(f.head, rt[..4]);
    shows_no_secret(&f.to_string(), &rt);
    let message = drop_panics(w);
    assert!(message.contains("secret scan: 1 leak(s)"), "{message}");
    assert!(
        message.contains("refresh token from entra (length "),
        "{message}"
    );
    assert!(message.contains("daemon.log"), "{message}");
    shows_no_secret(&message, &rt);
}

#[test]
fn a_cut_short_token_on_a_commands_stderr_is_found() {
    let w = World::new();
    w.login("contoso");
    let rt = issued(&w, SecretKind::RefreshToken);
    sh(
        &w,
        r#"printf 'refreshing with %.30s...\n' "$LEAK" >&2"#,
        &rt,
    );
    let found = w.scan_for_secrets();
    let f = only(&found);
    assert_eq!((f.kind, f.matched), (SecretKind::RefreshToken, 30));
    assert!(f.place.starts_with("stderr of command #"), "{}", f.place);
    assert!(f.place.contains("`sh -c printf"), "{}", f.place);
    assert!(f.to_string().contains("its first 30 characters"), "{f}");
    shows_no_secret(&f.to_string(), &rt);
    // Under the anchor length a fragment is not looked for.
    let w2 = World::new();
    w2.secret(SecretKind::ClientSecret, &rt);
    sh(&w2, r#"printf '%.23s\n' "$LEAK" >&2"#, &rt);
    assert_eq!(w2.scan_for_secrets().len(), 0);
    shows_no_secret(&drop_panics(w), &rt);
}

#[test]
fn on_stdout_an_access_token_may_only_be_the_credential_answer() {
    let w = World::new();
    w.login("contoso");
    let out = w.get("contoso", true);
    let at = common::harness::token(&out).expect("a token");
    let basic = w.get("contoso", false);
    assert_eq!(common::harness::field(&basic, "password"), Some(at.clone()));
    let status = w.client(&["status", "--json"], "");
    assert!(status.status.success());
    assert_eq!(
        w.scan_for_secrets().len(),
        0,
        "answers and status are clean"
    );
    // The same token anywhere else on stdout, and a refresh token even as an answer, are not.
    sh(&w, r#"printf 'token is %s\n' "$LEAK""#, &at);
    let rt = issued(&w, SecretKind::RefreshToken);
    sh(&w, r#"printf 'password=%s\n' "$LEAK""#, &rt);
    let found = w.scan_for_secrets();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(found[0].kind, SecretKind::AccessToken);
    assert!(
        found[0].place.starts_with("stdout of command"),
        "{found:#?}"
    );
    assert_eq!(found[1].kind, SecretKind::RefreshToken);
    assert!(found[1].context.starts_with("password=<refresh token>"));
    let message = drop_panics(w);
    shows_no_secret(&message, &at);
    shows_no_secret(&message, &rt);
}

#[test]
fn the_daemons_process_title_is_scanned() {
    let w = World::new();
    let secret = "a-client-secret-given-on-a-command-line";
    w.secret(SecretKind::ClientSecret, secret);
    // A stand-in daemon whose command line carries the secret (no real daemon runs yet).
    assert_eq!(w.daemon_pid(), None);
    let mut fake = std::process::Command::new("sleep")
        .arg0(format!(
            "git-credential-azdo-daemon --client-secret={secret}"
        ))
        .arg("30")
        .spawn()
        .unwrap();
    // (Its command line is empty until its exec is done.)
    let title = format!("/proc/{}/cmdline", fake.id());
    let exec_done = || std::fs::read(&title).is_ok_and(|t| t.ends_with(b"30\0"));
    assert!(wait_until(Duration::from_secs(5), exec_done));
    let pid_file = w.runtime_dir().join("daemon.pid");
    std::fs::create_dir_all(w.runtime_dir()).unwrap();
    std::fs::write(&pid_file, fake.id().to_string()).unwrap();
    let found = w.scan_for_secrets();
    fake.kill().unwrap();
    fake.wait().unwrap();
    std::fs::remove_file(&pid_file).unwrap();
    let f = only(&found);
    assert_eq!((f.kind, f.source), (SecretKind::ClientSecret, "world"));
    assert!(f.place.contains("process title"), "{}", f.place);
    assert!(
        f.context.contains("--client-secret=<client secret> 30"),
        "{f}"
    );
    // Noted once, it stays reported after the process is gone.
    shows_no_secret(&drop_panics(w), secret);
}

#[test]
fn public_jwt_headers_short_secrets_and_encoded_forms() {
    let w = World::new();
    w.login("contoso");
    let at = issued(&w, SecretKind::AccessToken);
    let header = at.split('.').next().unwrap();
    // The header segment every mock token shares, with its dot, is public.
    sh(&w, r#"printf '%s\n' "$LEAK" >&2"#, &format!("{header}."));
    w.secret(SecretKind::ClientSecret, "short-value");
    sh(&w, "echo short-value >&2", "");
    assert_eq!(w.scan_for_secrets().len(), 0);
    // A secret is found as it would be sent in a form or a query too.
    w.secret(SecretKind::ClientSecret, "a+secret/with=specials");
    sh(
        &w,
        "echo client_secret=a%2Bsecret%2Fwith%3Dspecials >&2",
        "",
    );
    let found = w.scan_for_secrets();
    assert_eq!(only(&found).kind, SecretKind::ClientSecret);
    assert!(found[0].context.contains("client_secret=<client secret>"));
    drop_panics(w);
}

#[test]
fn every_mock_records_into_its_worlds_ledger() {
    let mut w = World::new();
    let vssps = common::MockVssps::start(&w.ca);
    let app_secret = vssps.add_app("app", "https://localhost:1/cb", &["vso.code"]);
    let imds = common::MockImds::start(&w.entra);
    w.entra.add_app("sp", Some("an-sp-client-secret"));
    w.set_env("SYSTEM_ACCESSTOKEN", "a-ci-job-access-token");
    let (vs, is, es) = (vssps.secrets(), imds.secrets(), w.entra.secrets());
    assert_eq!(
        (vs[0].kind, vs[0].value.as_str()),
        (SecretKind::ClientSecret, &*app_secret)
    );
    assert_eq!(is[0].kind, SecretKind::IdentityHeader);
    assert_eq!(is[0].value, imds.header_secret());
    assert_eq!(es[0].value, "an-sp-client-secret");
    let all: Vec<String> = w.secrets().into_iter().map(|s| s.value).collect();
    for v in [
        app_secret.as_str(),
        is[0].value.as_str(),
        "an-sp-client-secret",
        "a-ci-job-access-token",
    ] {
        assert!(all.iter().any(|a| a == v), "{all:?}");
    }
}
