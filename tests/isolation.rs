//! One request's identity never serves, leaks to, or outlives another, and the daemon's clock
//! and memory stay bounded: regression tests for the security review of the daemon (issue 14),
//! each one written against the behaviour the review reproduced.

mod common;

use common::MockEntra;
use common::harness::{
    CLIENT, World, field, ok, run_with_input, step_get, text, token, wait_until,
};
use git_credential_azdo::daemon::clock::Clock;

const APP: &str = "6a1e3b52-2f0c-4d3e-9a7b-1c2d3e4f5a6b";

/// Every distinct `identity:ci:…` slot id in the daemon's log.
fn slot_ids(log: &str) -> Vec<String> {
    let mut ids: Vec<String> = log
        .match_indices("identity:ci:")
        .map(|(i, p)| {
            log[i + p.len()..]
                .chars()
                .take_while(char::is_ascii_hexdigit)
                .collect()
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The daemon logs a machine identity's slot id at info level. It used to be an unkeyed hash
/// of the caller's variables, so the same client secret gave the same id in every daemon: a
/// stable fingerprint of the secret in a log file. Now each daemon keys it with a random key.
#[test]
fn a_slot_id_in_the_log_is_no_fingerprint_of_the_secret() {
    let mut w = World::new();
    w.entra.add_app(APP, Some("s3cret-value"));
    w.configure_identity("kind = \"service-principal\"");
    w.set_env("AZURE_TENANT_ID", MockEntra::HOME_TENANT);
    w.set_env("AZURE_CLIENT_ID", APP);
    w.set_env("AZURE_CLIENT_SECRET", "s3cret-value");
    w.set_env("GIT_CREDENTIAL_AZDO_LOG", "info");
    assert!(token(&w.get("contoso", true)).is_some());
    assert_eq!(slot_ids(&w.log()).len(), 1, "{}", w.log());
    ok(&w, &w.client(&["stop"], ""), "stop");
    assert!(token(&w.get("contoso", true)).is_some());
    let ids = slot_ids(&w.log());
    assert_eq!(
        ids.len(),
        2,
        "the same secret, the same id in the next daemon: {ids:?}"
    );
}

/// The XDG specification says to ignore relative values. The client resolves them against
/// git's working directory and the daemon against `/`, so each looked for the other in a
/// different place: the socket the daemon bound was not the one the client dialled.
#[test]
fn relative_xdg_directories_are_ignored_by_the_client_and_the_daemon_alike() {
    let w = World::new();
    let repo = w.workdir("repo");
    let host = w.ado.host();
    let relative = |c: &mut std::process::Command| {
        c.current_dir(&repo)
            .env("XDG_RUNTIME_DIR", "relative-run")
            .env("XDG_DATA_HOME", "relative-data");
    };
    let mut login = w.command(CLIENT);
    relative(&mut login);
    login.args(["login", "--org", "contoso", "--host", &host]);
    let out = run_with_input(&mut login, b"");
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), w.log());
    // Both used the fallbacks: the socket under $XDG_CACHE_HOME, the records under ~/.local.
    assert!(w.path("cache/git-credential-azdo/run/daemon.sock").exists());
    assert!(
        w.path("home/.local/share/git-credential-azdo/accounts.json")
            .exists()
    );
    for dir in [repo.join("relative-run"), "/relative-run".into()] {
        assert!(!std::path::Path::new(&dir).exists(), "{}", dir.display());
    }
    let mut get = w.command(CLIENT);
    relative(&mut get);
    get.arg("get");
    let input = format!("protocol=https\nhost={host}\npath=contoso/p/_git/r\n\n");
    let out = run_with_input(&mut get, input.as_bytes());
    assert!(field(&out, "password").is_some(), "{}", text(&out.stderr));
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A machine whose clock is ahead of Entra's by more than a token's life (a resumed VM, an RTC
/// in local time) sees every `exp` in the past. The token was due at once, each success reset
/// the back-off, and the refresher spun (about 290 requests a second, each rotating and
/// writing the refresh token). Expiry now comes from `expires_in` against the local receive
/// time: the token is served, with an expiry in the future, and not refreshed again.
#[test]
fn a_token_whose_exp_is_past_by_the_local_clock_is_served_without_a_refresh_loop() {
    let w = World::new();
    w.entra.set_claims_clock_offset(-3 * 3600);
    w.login("contoso");
    let out = w.get("contoso", true);
    assert!(token(&out).is_some(), "{}", text(&out.stderr));
    let expiry: u64 = field(&out, "password_expiry_utc").unwrap().parse().unwrap();
    assert!(
        expiry > unix_now() + 3000,
        "expiry {expiry} from expires_in"
    );
    let before = w.entra.stats().token_requests.len();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let during = w.entra.stats().token_requests.len() - before;
    assert!(during <= 1, "{during} token requests in 3 s");
}

/// A token whose `expires_in` is tiny is useless on arrival: a failure, with the back-off of
/// any failure, and never handed to git with an expiry in the past.
#[test]
fn a_token_that_expires_on_arrival_is_a_failure_with_back_off() {
    let w = World::new();
    w.login("contoso");
    w.entra
        .set_token_lifetime(std::time::Duration::from_secs(1));
    // A new daemon redeems the stored refresh token at once.
    ok(&w, &w.client(&["stop"], ""), "stop");
    let before = w.entra.stats().token_requests.len();
    let out = w.get("contoso", true);
    if let Some(expiry) = field(&out, "password_expiry_utc") {
        let expiry: u64 = expiry.parse().unwrap();
        assert!(expiry > unix_now(), "handed out with an expiry in the past");
    }
    assert!(token(&out).is_none(), "a token of 1 s was served");
    assert!(
        text(&out.stderr).contains("tries again by itself"),
        "{}",
        text(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_secs(5));
    let during = w.entra.stats().token_requests.len() - before;
    assert!(during <= 4, "{during} token requests in about 5 s");
}

/// Sends one request straight to the daemon's socket, as any process of the user can, and
/// returns its answer.
fn raw(
    w: &World,
    request: git_credential_azdo::daemon_protocol::Request,
) -> git_credential_azdo::daemon_protocol::Response {
    use git_credential_azdo::daemon_protocol::{self, RequestEnvelope};
    let env = RequestEnvelope {
        protocol: daemon_protocol::PROTOCOL,
        version: daemon_protocol::PACKAGE_VERSION.into(),
        request,
    };
    let s = std::os::unix::net::UnixStream::connect(w.runtime_dir().join("daemon.sock")).unwrap();
    daemon_protocol::write_message(&s, &env).unwrap();
    daemon_protocol::read_message(std::io::BufReader::new(&s)).unwrap()
}

/// A `get` for `org` with these identity variables, straight to the socket.
fn raw_get(
    w: &World,
    org: &str,
    vars: &[(&str, &str)],
) -> git_credential_azdo::daemon_protocol::Response {
    let env = vars
        .iter()
        .map(|(k, v)| (k.to_string(), git_credential_azdo::secret::Secret::new(*v)))
        .collect();
    raw(
        w,
        git_credential_azdo::daemon_protocol::Request::Get {
            org: org.into(),
            env,
            authtype: false,
            git: None,
        },
    )
}

fn is_token(r: &git_credential_azdo::daemon_protocol::Response) -> bool {
    matches!(
        r,
        git_credential_azdo::daemon_protocol::Response::Token { .. }
    )
}

fn status_json(w: &World) -> serde_json::Value {
    let out = w.client(&["status", "--json"], "");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out.stderr)))
}

/// A world whose default identity is a service principal, with the daemon running.
fn service_principal_world() -> World {
    let w = World::new();
    w.entra.add_app(APP, Some("s3cret-value"));
    w.configure_identity("kind = \"service-principal\"");
    ok(&w, &w.client(&["status"], ""), "status");
    w
}

const SP_VARS: [(&str, &str); 3] = [
    ("AZURE_TENANT_ID", MockEntra::HOME_TENANT),
    ("AZURE_CLIENT_ID", APP),
    ("AZURE_CLIENT_SECRET", "s3cret-value"),
];

/// The daemon checks the organization a request names as the client's policy does; it
/// accepted anything, newlines included, and served it with the default identity.
#[test]
fn an_organization_name_the_client_would_refuse_is_refused_by_the_daemon_too() {
    let w = service_principal_world();
    assert!(is_token(&raw_get(&w, "contoso", &SP_VARS)));
    for bad in ["con\ntoso", "", "-contoso", "a/b", &"x".repeat(51)] {
        match raw_get(&w, bad, &SP_VARS) {
            git_credential_azdo::daemon_protocol::Response::Error { error, message, .. } => {
                assert_eq!(
                    error,
                    git_credential_azdo::daemon_protocol::ErrorKind::BadRequest,
                    "{bad:?}"
                );
                assert!(
                    message.contains("not an Azure DevOps organization name"),
                    "{message}"
                );
            }
            other => panic!("{bad:?} was answered: {:?}", std::mem::discriminant(&other)),
        }
    }
}

/// With a default identity, every organization name a caller invents was remembered for the
/// daemon's life (50,000 of them: 6 MiB to 36 MiB, and a 20 MB `status`). The daemon now keeps
/// the most recently served few hundred.
#[test]
fn organizations_served_by_a_default_identity_are_remembered_in_a_bounded_number() {
    let w = service_principal_world();
    for i in 0..3000 {
        assert!(
            is_token(&raw_get(&w, &format!("org-{i}"), &SP_VARS)),
            "org-{i}"
        );
    }
    let status = status_json(&w);
    let orgs = status["orgs"].as_array().unwrap();
    assert!(orgs.len() <= 256, "{} organizations in status", orgs.len());
    assert!(
        orgs.iter().any(|o| o["org"] == "org-2999"),
        "the latest is remembered"
    );
}

/// Each build job brings its own secret, so each gets a slot of its own. Those slots lived, and
/// renewed their tokens with the job's secret, for the daemon's life. Now a slot nobody used
/// for 30 minutes is dropped, with no renewal after its job is gone: a thousand jobs leave
/// nothing behind. The daemon runs in this process on a manual clock, so that the test moves
/// time past the idle time (and past the tokens' renewal) instead of waiting for it.
#[test]
fn a_thousand_jobs_with_their_own_secrets_leave_nothing_behind() {
    let w = World::new();
    // Two-hour tokens: renewed at about 1 h 45 min, long after a slot's 30 idle minutes.
    w.entra
        .set_token_lifetime(std::time::Duration::from_secs(2 * 3600));
    w.configure_identity("kind = \"service-principal\"");
    let daemon = w.daemon_in_process(Clock::manual(), tracing::Level::INFO);
    ok(&w, &w.client(&["status"], ""), "status");
    let jobs = 1000;
    let mut rss_at_200 = 0;
    for i in 0..jobs {
        let app = format!("6a1e3b52-2f0c-4d3e-9a7b-{i:012x}");
        let secret = format!("job-secret-{i:04}-{}", "s".repeat(24));
        w.entra.add_app(&app, Some(&secret));
        let vars = [
            ("AZURE_TENANT_ID", MockEntra::HOME_TENANT),
            ("AZURE_CLIENT_ID", app.as_str()),
            ("AZURE_CLIENT_SECRET", secret.as_str()),
        ];
        assert!(is_token(&raw_get(&w, "contoso", &vars)), "job {i}");
        if i == 200 {
            rss_at_200 = own_rss_kib();
        }
    }
    assert_eq!(
        w.entra.stats().client_credentials_ok,
        jobs,
        "one token a job"
    );
    // Past the tokens' renewal time: nothing was renewed for jobs that are gone, and, past the
    // idle time, every job's slot is gone.
    daemon
        .clock
        .advance(std::time::Duration::from_secs(140 * 60));
    let emptied = wait_until(std::time::Duration::from_secs(10), || {
        status_json(&w)["machine_identities"] == 0
    });
    assert_eq!(
        w.entra.stats().client_credentials_ok,
        jobs,
        "renewed after the jobs"
    );
    assert!(emptied, "{}", status_json(&w)["machine_identities"]);
    // The test process holds the mocks too: their records of 800 more jobs count against it.
    let growth = own_rss_kib().saturating_sub(rss_at_200);
    assert!(
        growth < 4096,
        "the daemon grew by {growth} KiB over 800 jobs"
    );
}

/// This process's resident memory (the daemon runs in it).
fn own_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A listener that records whatever connects to it (a step's "OIDC endpoint" over plain http).
struct Trap {
    listener: std::net::TcpListener,
}

impl Trap {
    fn new() -> Trap {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Trap { listener }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listener.local_addr().unwrap())
    }

    /// What the first connection sent, if anything connected.
    fn caught(&self) -> Option<String> {
        use std::io::Read;
        let (mut s, _) = self.listener.accept().ok()?;
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = vec![0; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// Three steps of one build agent share the daemon the first one started. A variable a
/// request does not carry used to fall back to the daemon's environment, which the client had
/// started with the first step's whole environment: step B, with no identity variables, was
/// served as step A, and step C, naming only its own OIDC URL, received step A's job token
/// there over plain http. Now each request is resolved from its own variables alone, the
/// client starts the daemon without any, and OIDC request URLs must be https.
#[test]
fn a_build_step_is_served_with_its_own_variables_only() {
    let w = World::new();
    let sub = "sc://contoso/web/agent-connection";
    w.entra.add_federated_app(APP, sub);
    let (oidc, seen) = common::oidc::oidc_provider(&w, "job-token-of-step-a", sub, |jwt| {
        format!(r#"{{"oidcToken":"{jwt}"}}"#)
    });
    w.configure_identity("kind = \"workload-identity\"\nservice_connection_id = \"c0ffee00-0000-4000-8000-000000000001\"",
    );
    let oidc_url = format!(
        "https://{}/contoso/_apis/distributedtask/hubs/build/plans/p/jobs/j/oidctoken",
        oidc.addr()
    );
    let a = [
        ("AZURE_TENANT_ID", MockEntra::HOME_TENANT),
        ("AZURE_CLIENT_ID", APP),
        ("SYSTEM_OIDCREQUESTURI", oidc_url.as_str()),
        ("SYSTEM_ACCESSTOKEN", "job-token-of-step-a"),
    ];
    // Step A starts the daemon and is served.
    assert_eq!(w.daemon_pid(), None);
    let out = step_get(&w, &a);
    assert!(
        field(&out, "password").is_some(),
        "{}\n{}",
        text(&out.stderr),
        w.log()
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    // The daemon it started holds none of step A's variables.
    let pid = w.daemon_pid().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    for (k, _) in &a {
        assert!(
            !environ.contains(&format!("{k}=")),
            "the daemon was started with {k}"
        );
    }
    // Step B brings no identity variables: no token, one line saying what is missing.
    let out = step_get(&w, &[]);
    assert!(
        out.stdout.is_empty(),
        "step B was served with step A's identity"
    );
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("AZURE_TENANT_ID"), "{err}");
    // Step C names only its own OIDC URL, over plain http: nothing reaches it.
    let trap = Trap::new();
    let out = step_get(&w, &[("SYSTEM_OIDCREQUESTURI", &trap.url("/steal"))]);
    assert!(out.stdout.is_empty());
    assert_eq!(trap.caught(), None, "step C's URL was sent a request");
    // Even with all of its own variables, an http OIDC URL gets nothing: one clear line.
    let mut c = a;
    let steal = trap.url("/steal");
    c[2] = ("SYSTEM_OIDCREQUESTURI", steal.as_str());
    c[3] = ("SYSTEM_ACCESSTOKEN", "job-token-of-step-c");
    w.secret(common::SecretKind::CiJobToken, "job-token-of-step-c");
    let out = step_get(&w, &c);
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("SYSTEM_OIDCREQUESTURI must be an https URL"),
        "{err}"
    );
    assert!(err.contains("nothing was sent"), "{err}");
    assert_eq!(trap.caught(), None, "a job token went to an http URL");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only step A asked the OIDC provider"
    );
}

/// The same for a managed identity's endpoint: https, or Azure's own http endpoints on the
/// machine (loopback, IMDS's address), never http elsewhere.
#[test]
fn an_identity_endpoint_off_the_machine_over_http_gets_nothing() {
    let w = World::new();
    w.configure_identity("kind = \"managed-identity\"");
    let out = step_get(
        &w,
        &[
            ("IDENTITY_ENDPOINT", "http://10.0.0.1/msi/token"),
            ("IDENTITY_HEADER", "header-secret-value-123"),
        ],
    );
    w.secret(
        common::SecretKind::IdentityHeader,
        "header-secret-value-123",
    );
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("IDENTITY_ENDPOINT must be an https URL"),
        "{err}"
    );
}

/// A person's sign-in is refreshed where it was made. The daemon used to redeem stored
/// refresh tokens at whatever authority its starter's environment named: `status` from a shell
/// with `AZURE_AUTHORITY_HOST=http://127.0.0.1:PORT` posted the refresh token in clear text to
/// that port and stored what came back, destroying the sign-in. Neither that variable nor a
/// later change of the configuration moves an account; an authority that is not https is
/// refused.
#[test]
fn a_sign_in_is_refreshed_only_at_the_authority_it_was_made_at() {
    let w = World::new();
    w.login("contoso");
    ok(&w, &w.client(&["stop"], ""), "stop");
    let refreshed = w.entra.stats().refresh_ok;
    // A shell with another authority (and proxy, and trust roots) starts the next daemon.
    let trap = Trap::new();
    let mut status = w.command(CLIENT);
    status
        .env("AZURE_AUTHORITY_HOST", trap.url(""))
        .env("HTTPS_PROXY", trap.url(""))
        .env("SSL_CERT_FILE", "/dev/null")
        .arg("status");
    let out = run_with_input(&mut status, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Refreshed at its own authority, and the rotated refresh token stored (stopping the
    // daemon before that would lose it: the mock, unlike Entra, spends a redeemed one).
    assert!(
        common::harness::wait_until(std::time::Duration::from_secs(10), || {
            w.entra.stats().refresh_ok > refreshed
                && common::harness::last_refresh_outcome(&w, "contoso") == "ok"
        }),
        "the account was not refreshed at its own authority\n{}",
        w.log()
    );
    assert_eq!(
        trap.caught(),
        None,
        "the refresh token went to the shell's authority"
    );
    // The configuration names another authority now: the account stays with its own.
    let other = common::MockEntra::start(&w.ca);
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    let cfg = cfg.replace(&w.entra.url(), &other.url());
    std::fs::write(w.config_path(), cfg).unwrap();
    ok(&w, &w.client(&["stop"], ""), "stop");
    let refreshed = w.entra.stats().refresh_ok;
    assert!(token(&w.get("contoso", true)).is_some(), "{}", w.log());
    assert!(w.entra.stats().refresh_ok > refreshed);
    assert!(
        other.stats().token_requests.is_empty(),
        "asked the newly configured authority"
    );
    // An authority that is not https: the daemon refuses to start with it.
    let cfg = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(w.config_path(), cfg.replace(&other.url(), &trap.url(""))).unwrap();
    ok(&w, &w.client(&["stop"], ""), "stop");
    let out = w.client(&["status"], "");
    assert!(!out.status.success());
    assert!(w.log().contains("must be an https URL"), "{}", w.log());
    assert_eq!(trap.caught(), None);
}
