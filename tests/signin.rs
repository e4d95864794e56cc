//! Device-code sign-in through the daemon against the mock Entra ID: tenant discovery per
//! organization, declined and abandoned sign-ins, and a revoked refresh token.

mod common;

use common::MockEntra;
use common::harness::{World, ok, text, token, wait_until};
use git_credential_azdo::daemon::clock::Clock;
use std::time::{Duration, Instant};

const OTHER_TENANT: &str = "0f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";

#[test]
fn tenant_is_discovered_per_organization_and_cached() {
    let w = World::new();
    w.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    let fab = w.ado.create_repo("fabrikam", "p", "r");
    let con = w.ado.create_repo("contoso", "p", "r");
    let login = w.login("fabrikam");
    assert_eq!(w.entra.stats().last_tenant.as_deref(), Some(OTHER_TENANT));
    assert!(text(&login.stderr).contains(OTHER_TENANT));
    w.login("contoso");
    assert_eq!(
        w.entra.stats().last_tenant.as_deref(),
        Some(MockEntra::HOME_TENANT)
    );
    // Each organization gets a token of its own tenant, which its Azure DevOps accepts.
    let t = token(&w.get("fabrikam", true)).unwrap();
    assert_eq!(w.entra.validate(&t).unwrap().tid, OTHER_TENANT);
    ok(&w, &w.git(&["clone", &fab, "f"], None), "clone fabrikam");
    ok(&w, &w.git(&["clone", &con, "c"], None), "clone contoso");
    // Discovery asked Azure DevOps once per organization, unauthenticated; a second sign-in
    // uses the cached tenant.
    let probes = |org: &str| {
        w.ado
            .requests()
            .iter()
            .filter(|r| r.path == format!("/{org}") && r.method == "HEAD")
            .count()
    };
    assert_eq!(probes("fabrikam"), 1);
    w.login("fabrikam");
    assert_eq!(probes("fabrikam"), 1);
    assert_eq!(w.entra.stats().last_tenant.as_deref(), Some(OTHER_TENANT));
}

#[test]
fn a_declined_sign_in_fails_with_a_clear_message() {
    let w = World::new();
    w.entra
        .set_auto_approve_after_polls(MockEntra::MANUAL_APPROVAL);
    std::thread::scope(|s| {
        let login =
            s.spawn(|| w.client(&["login", "--org", "contoso", "--host", &w.ado.host()], ""));
        let deadline = Instant::now() + Duration::from_secs(20);
        let code = loop {
            if let Some(c) = w.entra.stats().last_user_code {
                break c;
            }
            assert!(Instant::now() < deadline, "no device code requested");
            std::thread::sleep(Duration::from_millis(50));
        };
        // Declined once the daemon is polling (not before it asked).
        let polled = wait_until(Duration::from_secs(20), || {
            w.entra.stats().device_code_polls >= 1
        });
        assert!(polled, "the daemon never polled");
        assert!(w.entra.decline(&code));
        let out = login.join().unwrap();
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains(&code), "the code was shown: {err}");
        assert!(err.contains("authorization_declined"), "{err}");
    });
    let out = w.get("contoso", true);
    assert!(out.stdout.is_empty());
}

#[test]
fn an_abandoned_sign_in_times_out() {
    let w = World::new();
    w.entra
        .set_auto_approve_after_polls(MockEntra::MANUAL_APPROVAL);
    w.entra.set_device_code_lifetime(Duration::from_secs(3));
    let t = Instant::now();
    let out = w.client(&["login", "--org", "contoso", "--host", &w.ado.host()], "");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("expired"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_revoked_refresh_token_asks_to_sign_in_again() {
    let w = World::new();
    w.login("contoso");
    w.kill_daemon(libc::SIGKILL);
    w.entra.revoke_all_refresh_tokens();
    let out = w.get("contoso", true);
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("AADSTS50173"), "{err}");
    assert!(
        err.contains("git-credential-azdo login --org contoso"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let status = text(&w.client(&["status"], "").stdout);
    assert!(status.contains("sign-in required"), "{status}");
    // Signing in again repairs it.
    w.login("contoso");
    assert!(token(&w.get("contoso", true)).is_some());
}

#[test]
fn signing_an_organization_in_with_another_account_forgets_the_old_one() {
    let w = World::new();
    w.login("contoso");
    w.entra.set_user("Bob Builder", "bob@contoso.example");
    let again = w.login("contoso");
    assert!(text(&again.stderr).contains("bob@contoso.example"));
    let records: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.path("data/git-credential-azdo/accounts.json")).unwrap(),
    )
    .unwrap();
    let accounts = records["accounts"].as_object().unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert!(accounts.values().all(|a| a["upn"] == "bob@contoso.example"));
    let store: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.path("data/git-credential-azdo/refresh-tokens.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        store.as_object().unwrap().len(),
        1,
        "the old refresh token is gone"
    );
    let t = token(&w.get("contoso", true)).unwrap();
    assert_eq!(w.entra.validate(&t).unwrap().upn, "bob@contoso.example");
    let status = text(&w.client(&["status"], "").stdout);
    assert!(
        status.contains("bob@contoso.example") && !status.contains("ada@"),
        "{status}"
    );
}

#[test]
fn two_organizations_in_two_tenants_are_served_in_one_git_command() {
    let w = World::new();
    w.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    let fab = w.ado.create_repo("fabrikam", "p", "r");
    let con = w.ado.create_repo("contoso", "p", "r");
    w.login("contoso");
    w.login("fabrikam");
    let repo = w.workdir("both");
    ok(&w, &w.git(&["init", "-q"], Some(&repo)), "init");
    ok(
        &w,
        &w.git(&["remote", "add", "con", &con], Some(&repo)),
        "remote",
    );
    ok(
        &w,
        &w.git(&["remote", "add", "fab", &fab], Some(&repo)),
        "remote",
    );
    // One git process asks the helper for both organizations.
    ok(
        &w,
        &w.git(&["fetch", "--multiple", "con", "fab"], Some(&repo)),
        "fetch both",
    );
    for org in ["/contoso/", "/fabrikam/"] {
        assert!(
            w.ado
                .requests()
                .iter()
                .any(|r| r.accepted && r.path.starts_with(org)),
            "{org} reached with a token"
        );
    }
}

#[test]
fn status_shows_account_tenant_expiry_refresh_and_store() {
    let w = World::new();
    w.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    w.login("fabrikam");
    let human = text(&w.client(&["status"], "").stdout);
    for want in [
        "fabrikam",
        "Ada Lovelace <ada@contoso.example>",
        OTHER_TENANT,
        "identity   user",
        " GMT (",
        "ago) by ada@contoso.example",
        "expires in",
        "refreshed",
        "refresh-tokens.json (mode 0600",
    ] {
        assert!(human.contains(want), "{want} in:\n{human}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&w.client(&["status", "--json"], "").stdout).unwrap();
    let org = &json["orgs"][0];
    assert_eq!(org["org"], "fabrikam");
    assert_eq!(org["account"]["upn"], "ada@contoso.example");
    assert_eq!(org["account"]["tenant"], OTHER_TENANT);
    assert_eq!(org["identity"], "user");
    assert_eq!(org["connected_by"], "ada@contoso.example");
    assert!(
        org["access_token_expires_at"].as_u64().unwrap() > org["connected_at"].as_u64().unwrap()
    );
    assert!(
        org["refresh_token_store"]
            .as_str()
            .unwrap()
            .contains("0600")
    );
}

#[test]
fn a_claims_challenge_is_sent_with_the_next_token_request() {
    use base64::Engine;
    let w = World::new();
    w.login("contoso");
    let t1 = token(&w.get("contoso", true)).unwrap();
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}"#;
    let challenge = format!(
        "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"{}\"",
        base64::engine::general_purpose::STANDARD.encode(claims)
    );
    let input = format!(
        "capability[]=authtype\nprotocol=https\nhost={}\npath=contoso/p/_git/r\nauthtype=Bearer\ncredential={t1}\nwwwauth[]={challenge}\n",
        w.ado.host()
    );
    ok(&w, &w.client(&["erase"], &input), "erase");
    let t2 = token(&w.get("contoso", true)).expect("a new token, no sign-in");
    assert_ne!(t1, t2);
    assert_eq!(w.entra.stats().last_claims.as_deref(), Some(claims));
    assert_eq!(w.entra.stats().devicecode_requests, 1);
}

#[test]
fn the_tenant_can_be_overridden_on_the_command_line_and_in_the_configuration() {
    let w = World::new();
    let host = w.ado.host();
    let out = w.client(
        &[
            "login",
            "--org",
            "contoso",
            "--host",
            &host,
            "--tenant",
            OTHER_TENANT,
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(w.entra.stats().last_tenant.as_deref(), Some(OTHER_TENANT));
    // No discovery was needed.
    assert!(!w.ado.requests().iter().any(|r| r.method == "HEAD"));
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        format!("{cfg}\n[org.fabrikam]\ntenant = \"{OTHER_TENANT}\"\n"),
    )
    .unwrap();
    ok(
        &w,
        &w.client(&["stop"], ""),
        "stop (config is read at start)",
    );
    w.login("fabrikam");
    assert_eq!(w.entra.stats().last_tenant.as_deref(), Some(OTHER_TENANT));
    assert!(!w.ado.requests().iter().any(|r| r.method == "HEAD"));
}

/// How many refresh tokens the world's file store holds.
fn stored_refresh_tokens(w: &World) -> usize {
    let s =
        std::fs::read_to_string(w.path("data/git-credential-azdo/refresh-tokens.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&s)
        .unwrap()
        .as_object()
        .unwrap()
        .len()
}

#[test]
fn logout_one_organization_then_all() {
    let w = World::new();
    w.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    w.login("contoso");
    w.login("fabrikam");
    let rts = || stored_refresh_tokens(&w);
    assert_eq!(rts(), 2, "one account per tenant");
    ok(
        &w,
        &w.client(&["logout", "--org", "contoso"], ""),
        "logout contoso",
    );
    assert!(w.get("contoso", true).stdout.is_empty());
    assert!(token(&w.get("fabrikam", true)).is_some());
    assert_eq!(rts(), 1);
    let out = w.client(&["logout"], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--all"));
    ok(&w, &w.client(&["logout", "--all"], ""), "logout --all");
    assert!(w.get("fabrikam", true).stdout.is_empty());
    assert_eq!(rts(), 0);
    let status = text(&w.client(&["status"], "").stdout);
    assert!(status.contains("no organization connected"), "{status}");
}

/// Disconnecting retires the account's slot: its refresher stops, and nothing it refreshes
/// reaches the store again, so a disconnected account's refresh token never comes back. The
/// daemon runs in this process on a manual clock, moved past every token's renewal after the
/// logout; the account still connected (another tenant) is renewed, the disconnected one not.
#[test]
fn a_disconnected_account_is_never_refreshed_or_stored_again() {
    let w = World::new();
    w.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    let daemon = w.daemon_in_process(Clock::manual(), tracing::Level::TRACE);
    w.login("contoso");
    w.login("fabrikam");
    let rts = || stored_refresh_tokens(&w);
    ok(
        &w,
        &w.client(&["logout", "--org", "contoso"], ""),
        "logout contoso",
    );
    assert_eq!(rts(), 1);
    let before = w.entra.stats().refresh_ok;
    daemon.clock.advance(Duration::from_secs(3 * 3600));
    assert!(
        wait_until(Duration::from_secs(10), || w.entra.stats().refresh_ok
            > before),
        "the connected account was not renewed"
    );
    // Both refreshers woke together; give a disconnected one time to be seen.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.entra.stats().refresh_ok, before + 1, "{}", w.log());
    assert_eq!(rts(), 1, "a disconnected account's refresh token came back");
    assert!(w.get("contoso", true).stdout.is_empty());
    assert!(token(&w.get("fabrikam", true)).is_some());
}

/// An account of another tenant is refreshed at that tenant after a restart: Entra redeems a
/// refresh token only in the tenant that issued it.
#[test]
fn after_a_restart_an_account_of_another_tenant_refreshes_in_its_tenant() {
    let w = World::new();
    w.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    let url = w.ado.create_repo("fabrikam", "p", "r");
    w.login("fabrikam");
    w.kill_daemon(libc::SIGKILL);
    // No access token survives the restart: the fetch needs a refresh.
    let before = w.entra.stats().refresh_ok;
    ok(
        &w,
        &w.git(&["clone", &url, "f"], None),
        "clone after the restart",
    );
    let stats = w.entra.stats();
    assert_eq!(stats.refresh_ok, before + 1, "{}", w.log());
    assert_eq!(stats.refresh_refused, 0, "{}", w.log());
    let refresh = stats
        .token_requests
        .iter()
        .rfind(|r| r.grant_type == "refresh_token");
    assert_eq!(refresh.unwrap().tenant, OTHER_TENANT);
    let t = token(&w.get("fabrikam", true)).unwrap();
    assert_eq!(w.entra.validate(&t).unwrap().tid, OTHER_TENANT);
}

/// Entra's `slow_down` while the person signs in: the daemon waits 5 s longer between polls
/// (RFC 8628 3.5) and the sign-in still completes.
#[test]
fn a_slow_down_answer_adds_five_seconds_between_polls() {
    let w = World::new();
    w.entra.slow_down_next_polls(1);
    // A daemon that polls too soon is told to slow down again and again: let the code expire
    // soon, so that fails in seconds rather than in the default 15 minutes.
    w.entra.set_device_code_lifetime(Duration::from_secs(30));
    w.login("contoso");
    let stats = w.entra.stats();
    assert_eq!(stats.slow_downs, 1, "only the poll the test asked for");
    let times = &stats.device_code_poll_times;
    assert!(times.len() >= 2, "{times:?}");
    // Time is what is tested here: the advertised interval (1 s) plus 5 s.
    let gap = times[1] - times[0];
    assert!(gap >= Duration::from_secs(6), "polled again after {gap:?}");
    assert!(token(&w.get("contoso", true)).is_some());
}
