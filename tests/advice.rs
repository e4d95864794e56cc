//! What a new user is told, following the docs: each place where the product said the wrong
//! thing, nothing, or a fix that does not work, with the message it gives now.

mod common;

use common::MockEntra;
use common::harness::{CLIENT, World, doctor_check, run_with_input, step_get, text};

const APP: &str = "3f6b8a10-2c4d-4e5f-8a9b-0c1d2e3f4a5b";

const SP_VARS: [(&str, &str); 3] = [
    ("AZURE_TENANT_ID", MockEntra::HOME_TENANT),
    ("AZURE_CLIENT_ID", APP),
    ("AZURE_CLIENT_SECRET", "s3cret-value"),
];

/// A build agent with a service principal's variables and no identity in the configuration
/// was told to sign in interactively ("Sign in with: git-credential-azdo login --org …").
/// Now it is told which variables were seen and the configuration that uses them.
#[test]
fn a_job_with_identity_variables_and_no_identity_is_given_the_configuration() {
    let w = World::new();
    w.entra.add_app(APP, Some("s3cret-value"));
    let out = step_get(&w, &SP_VARS);
    assert!(out.stdout.is_empty());
    let line = text(&out.stderr);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID are set"),
        "{line}"
    );
    assert!(
        line.contains("identity = \"ci\", then [identities.ci] with kind = \"service-principal\""),
        "{line}"
    );
    assert!(!line.contains("login --org"), "{line}");
    // The configuration it names works.
    w.configure_identity("kind = \"service-principal\"");
    let _ = w.client(&["stop"], "");
    assert!(common::harness::token(&step_get(&w, &SP_VARS)).is_some());
}

/// With `[identities.ci]` defined but not chosen, the fix is the one missing line.
#[test]
fn a_defined_identity_that_is_not_chosen_is_named() {
    let w = World::new();
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        format!("{cfg}\n[identities.ci]\nkind = \"service-principal\"\n"),
    )
    .unwrap();
    let line = text(&step_get(&w, &SP_VARS).stderr);
    assert!(
        line.contains(
            "no identity is chosen for organization 'contoso': add identity = \"ci\" at the top of"
        ),
        "{line}"
    );
}

/// `doctor` was all green on such an agent; now its machine-identity check fails with the fix.
#[test]
fn doctor_fails_when_identity_variables_go_unused() {
    let w = World::new();
    let mut c = w.command(CLIENT);
    for (k, v) in SP_VARS {
        c.env(k, v);
    }
    c.args(["doctor", "--json"]);
    let out = run_with_input(&mut c, b"");
    assert!(!out.status.success());
    let check = doctor_check(&out, "machine identity");
    assert_eq!(check["ok"], false, "{check}");
    assert!(
        check["fix"].as_str().unwrap().contains("[identities.ci]"),
        "{check}"
    );
    // Without the variables, nothing to say.
    let out = w.client(&["doctor", "--json"], "");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !all.to_string().contains("machine identity"),
        "{}",
        text(&out.stdout)
    );
}

const OTHER_TENANT: &str = "0f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";

/// A service principal of one tenant against an organization of another: git printed only
/// "fatal: Authentication failed", and nothing from the helper. Now the helper's `erase` says
/// whose token was refused, and that the organization is in the other tenant.
#[test]
fn a_token_refused_for_another_tenant_is_explained_at_erase() {
    let w = World::new();
    w.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    let url = w.ado.create_repo("fabrikam", "p", "r");
    w.entra.add_app(APP, Some("s3cret-value"));
    w.configure_identity("kind = \"service-principal\"");
    let mut git = w.command("git");
    for (k, v) in SP_VARS {
        git.env(k, v);
    }
    git.args(["clone", &url, "f"]).current_dir(w.path(""));
    let out = run_with_input(&mut git, b"");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("git-credential-azdo:"))
        .collect();
    assert!(!ours.is_empty(), "nothing from the helper: {err}");
    let line = ours[0];
    assert!(line.contains("Azure DevOps refused the token of"), "{line}");
    assert!(line.contains(APP), "{line}");
    assert!(
        line.contains(&format!(
            "The organization is in tenant {OTHER_TENANT}, the token is from tenant {}",
            MockEntra::HOME_TENANT
        )),
        "{line}"
    );
    assert!(line.contains("AZURE_TENANT_ID"), "{line}");
    // `status` no longer says the last refresh was ok.
    let mut c = w.command(CLIENT);
    for (k, v) in SP_VARS {
        c.env(k, v);
    }
    c.arg("status");
    let status = text(&run_with_input(&mut c, b"").stdout);
    assert!(
        status.contains("token refused by Azure DevOps for organization 'fabrikam'"),
        "{status}"
    );
}

/// A mistake in the configuration file surfaced only as "cannot start the daemon … its log is
/// …". Now the client shows the daemon's own reason, and `doctor` has a configuration check.
#[test]
fn a_configuration_mistake_is_shown_where_the_user_looks() {
    for (line, said) in [
        ("stroe = \"file\"", "unknown field `stroe`"),
        ("store = \"files\"", "unknown variant `files`"),
    ] {
        let w = World::new();
        let cfg = std::fs::read_to_string(w.config_path()).unwrap();
        let cfg = cfg.replace("store = \"file\"", line);
        std::fs::write(w.config_path(), cfg).unwrap();
        let out = w.client(&["status"], "");
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("the daemon cannot start"), "{err}");
        assert!(err.contains("config.toml is not valid"), "{err}");
        assert!(err.contains(said), "{err}");
        let doctor = w.client(&["doctor", "--json"], "");
        let check = doctor_check(&doctor, "configuration");
        assert_eq!(check["ok"], false, "{check}");
        assert!(check["detail"].as_str().unwrap().contains(said), "{check}");
    }
}

/// `login --org contoso-dve` (a typo) issued a device code and printed "✓ Connected
/// organization 'contoso-dve'". Azure DevOps answers 404 for an organization that does not
/// exist, to the request that discovers its tenant; now nobody is asked to sign in for it.
#[test]
fn a_misspelt_organization_is_refused_before_sign_in() {
    let w = World::new();
    w.ado.set_org_missing("contoso-dve");
    {
        let host = w.ado.host();
        let args = ["login", "--org", "contoso-dve", "--host", &host];
        let out = w.client(&args, "");
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(
            err.contains("Azure DevOps has no organization 'contoso-dve'"),
            "{err}"
        );
        assert!(err.contains("Check the name"), "{err}");
        assert!(!err.contains("Connected"), "{err}");
    }
    assert_eq!(w.entra.stats().devicecode_requests, 0);
}

/// `status` for a machine identity said "connected Thu, 01 Jan 1970", repeated the identity as
/// the account, and nested parentheses in the refresh line.
#[test]
fn status_shows_a_machine_identity_as_it_is() {
    let w = World::new();
    w.entra.add_app(APP, Some("s3cret-value"));
    w.configure_identity("kind = \"service-principal\"");
    assert!(common::harness::token(&step_get(&w, &SP_VARS)).is_some());
    let mut c = w.command(CLIENT);
    for (k, v) in SP_VARS {
        c.env(k, v);
    }
    c.arg("status");
    let out = run_with_input(&mut c, b"");
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        shown.contains(&format!("service principal {APP}")),
        "{shown}"
    );
    assert!(!shown.contains("1970"), "{shown}");
    assert!(!shown.contains("connected"), "{shown}");
    assert!(!shown.contains("account    service principal"), "{shown}");
    assert!(
        shown.contains(&format!("tenant     {}", MockEntra::HOME_TENANT)),
        "{shown}"
    );
    assert!(
        shown.contains("refreshed  ") && shown.contains(": ok"),
        "{shown}"
    );
}

/// `doctor` passed "memory only" and recommended `store = "file"` to a build agent, which keeps
/// no refresh token; and the memory store's reason quoted the keyring crate's internal error.
/// Now memory passes where nothing needs keeping, and fails once a person has signed in.
#[test]
fn doctor_judges_memory_only_by_what_it_would_lose() {
    let w = World::with_store("auto");
    w.entra.add_app(APP, Some("s3cret-value"));
    w.configure_identity("kind = \"service-principal\"");
    assert!(common::harness::token(&step_get(&w, &SP_VARS)).is_some());
    let doctor = |w: &World| {
        let mut c = w.command(CLIENT);
        for (k, v) in SP_VARS {
            c.env(k, v);
        }
        c.args(["doctor", "--json"]);
        doctor_check(&run_with_input(&mut c, b""), "secret store")
    };
    let agent = doctor(&w);
    assert_eq!(agent["ok"], true, "{agent}");
    let detail = agent["detail"].as_str().unwrap();
    assert!(detail.contains("no OS keyring answered"), "{agent}");
    assert!(detail.contains("nothing to keep"), "{agent}");
    assert!(!detail.contains("store = \"file\""), "{agent}");
    // The keyring crate's words (its D-Bus errors) stay in the log.
    assert!(!detail.to_ascii_lowercase().contains("dbus"), "{agent}");
    w.login("contoso");
    let person = doctor(&w);
    assert_eq!(person["ok"], false, "{person}");
    assert!(
        person["detail"]
            .as_str()
            .unwrap()
            .contains("lost when the daemon stops"),
        "{person}"
    );
    assert!(
        person["fix"].as_str().unwrap().contains("store = \"file\""),
        "{person}"
    );
}

/// Small things a new user met: `--org` given as the organization's address; `logout` inside a
/// clone (as `login` infers the organization from `origin`, so does `logout`); a `~/` path in
/// the configuration; the Azure Pipelines message naming a configuration key that does not
/// exist for the job's access token.
#[test]
fn small_things_work_as_a_user_would_expect() {
    let w = World::new();
    let url = w.ado.create_repo("contoso", "p", "r");
    // --org as an address.
    let org_url = format!("https://{}/contoso/p/_git/r", w.ado.host());
    let out = w.client(&["login", "--org", &org_url], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Connected organization 'contoso'"),
        "{}",
        text(&out.stderr)
    );
    // logout in a clone.
    common::harness::ok(&w, &w.git(&["clone", &url, "a"], None), "clone");
    let mut c = w.command(CLIENT);
    c.arg("logout").current_dir(w.path("a"));
    let out = run_with_input(&mut c, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Disconnected organization 'contoso'"),
        "{}",
        text(&out.stderr)
    );
    // ~/ in client_secret_file.
    std::fs::write(w.path("home/sp-secret"), "s3cret-value\n").unwrap();
    w.entra.add_app(APP, Some("s3cret-value"));
    w.configure_identity(&format!(
        "kind = \"service-principal\"\ntenant = \"{}\"\nclient_id = \"{APP}\"\nclient_secret_file = \"~/sp-secret\"",
        MockEntra::HOME_TENANT
    ));
    let _ = w.client(&["stop"], "");
    let out = step_get(&w, &[]);
    assert!(
        common::harness::token(&out).is_some(),
        "{}",
        text(&out.stderr)
    );
}

/// The Azure Pipelines message told the user to put the job's access token under
/// [identities.…], a key that does not exist (and a secret in a file).
#[test]
fn the_pipelines_message_names_only_the_variable() {
    let w = World::new();
    w.configure_identity(&format!(
        "kind = \"workload-identity\"\ntenant = \"{}\"\nclient_id = \"{APP}\"\ntoken_source = \"azure-pipelines\"\nservice_connection_id = \"sc\"",
        MockEntra::HOME_TENANT
    ));
    let out = step_get(
        &w,
        &[("SYSTEM_OIDCREQUESTURI", "https://example.invalid/oidc")],
    );
    let line = text(&out.stderr);
    assert!(
        line.contains("set SYSTEM_ACCESSTOKEN in the job's environment"),
        "{line}"
    );
    assert!(!line.contains("under [identities"), "{line}");
}

/// Switching `store` after signing in silently dropped the sign-in ("no refresh token is stored
/// for this account (store: …)"). Now the daemon moves the sign-ins to the new store when it
/// next starts.
#[test]
fn changing_the_store_moves_the_sign_ins() {
    let w = World::new();
    let url = w.ado.create_repo("contoso", "p", "r");
    w.login("contoso");
    let file = w.path("data/git-credential-azdo/refresh-tokens.json");
    let held = |w: &World| -> usize {
        let s = std::fs::read_to_string(&file).unwrap_or_else(|_| "{}".into());
        let _ = w;
        serde_json::from_str::<serde_json::Value>(&s)
            .unwrap()
            .as_object()
            .map_or(0, |m| m.len())
    };
    assert_eq!(held(&w), 1);
    common::harness::ok(&w, &w.client(&["stop"], ""), "stop");
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        cfg.replace("store = \"file\"", "store = \"memory\""),
    )
    .unwrap();
    common::harness::ok(
        &w,
        &w.git(&["clone", &url, "a"], None),
        "clone after the switch",
    );
    assert_eq!(held(&w), 0, "the refresh token is left in the old store");
    assert_eq!(w.entra.stats().devicecode_requests, 1, "signed in again");
}

/// A managed identity silently used a leftover `AZURE_CLIENT_ID`, and IMDS's refusal did not
/// say which identity was asked for. Now the line names the client id and where it came from.
#[test]
fn a_managed_identity_refusal_names_the_identity_asked_for() {
    let w = World::new();
    let imds = common::imds::MockImds::start(&w.entra);
    w.configure_identity("kind = \"managed-identity\"");
    let leftover = "9a8b7c6d-0000-4000-8000-00000000beef";
    let out = step_get(
        &w,
        &[
            ("AZURE_CLIENT_ID", leftover),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds.url()),
        ],
    );
    let line = text(&out.stderr);
    assert!(
        line.contains(&format!(
            "for the user-assigned identity with client_id {leftover} (client_id in the configuration, else AZURE_CLIENT_ID)"
        )),
        "{line}"
    );
}

/// A person signed in with the wrong `--tenant`: git showed only "fatal: Authentication
/// failed". Now the helper's erase names both tenants and the command that fixes it.
#[test]
fn a_sign_in_to_the_wrong_tenant_is_explained_at_erase() {
    let w = World::new();
    w.ado.set_org_tenant("fabrikam", OTHER_TENANT);
    let url = w.ado.create_repo("fabrikam", "p", "r");
    let host = w.ado.host();
    let login = w.client(
        &[
            "login",
            "--org",
            "fabrikam",
            "--host",
            &host,
            "--tenant",
            MockEntra::HOME_TENANT,
        ],
        "",
    );
    let said = text(&login.stderr);
    let out = w.git(&["clone", &url, "f"], None);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("git-credential-azdo:"))
        .unwrap_or_else(|| panic!("nothing from the helper (login said: {said}): {err}"));
    assert!(
        line.contains(&format!(
            "sign in with: git-credential-azdo login --org fabrikam --tenant {OTHER_TENANT}"
        )),
        "{line}"
    );
}
