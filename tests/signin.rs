//! Device-code sign-in through the daemon against the mock Entra ID: tenant discovery per
//! organization, declined and abandoned sign-ins, and a revoked refresh token.

mod common;

use common::MockEntra;
use common::harness::{World, field, ok, text};
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
    let t = field(&w.get("fabrikam", true), "credential").unwrap();
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
        std::thread::sleep(Duration::from_millis(1500)); // let it poll at least once
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
    assert!(field(&w.get("contoso", true), "credential").is_some());
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
    let t = field(&w.get("contoso", true), "credential").unwrap();
    assert_eq!(w.entra.validate(&t).unwrap().upn, "bob@contoso.example");
    let status = text(&w.client(&["status"], "").stdout);
    assert!(
        status.contains("bob@contoso.example") && !status.contains("ada@"),
        "{status}"
    );
}
